//! Reading a deployment's artifact: a regular file, resolved as the fs
//! capability resolves paths, never blocked on.

use crate::bindings::warden::tool::deploy::ErrorCode;
use crate::caps::fs::resolve;
use std::io::Read;

/// Reads the regular file `path` in `dir`, resolved as the fs capability
/// resolves it (links followed inside the handle only, the final open not
/// following one), at most `limit` bytes; refuses anything else (FIFO,
/// socket, device, directory) without blocking on it. Returns the bytes and
/// the resolved path.
pub(super) fn read_regular(
    dir: &cap_std::fs::Dir,
    path: &str,
    artifact: &str,
    limit: usize,
) -> Result<(Vec<u8>, String), (ErrorCode, String)> {
    let unreadable = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => (ErrorCode::NotFound, format!("no artifact {artifact}")),
        _ => match resolve::Refusal::of(&e) {
            Some(r) => (ErrorCode::Denied, r.reason.clone()),
            None => (ErrorCode::Denied, format!("cannot read {artifact}: {e}")),
        },
    };
    let resolved = resolve::resolve(dir, path, true, false).map_err(unreadable)?;
    let mut options = cap_std::fs::OpenOptions::new();
    // Nor made the server's controlling terminal, a terminal in the tree,
    // for the moment it is open before its type is checked.
    options
        .read(true)
        ._cap_fs_ext_follow(cap_primitives::fs::FollowSymlinks::No)
        ._cap_fs_ext_nonblock(true);
    cap_std::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NOCTTY);
    let file = match resolved.name() {
        Some(name) => resolved.dir(dir).open_with(name, &options),
        None => dir.open_with(".", &options),
    }
    .map_err(unreadable)?;
    let kind = file
        .metadata()
        .map_err(|e| (ErrorCode::Failed, format!("cannot read {artifact}: {e}")))?
        .file_type();
    if !kind.is_file() {
        return Err((
            ErrorCode::Denied,
            format!(
                "{artifact} is not a regular file (it is {}); only a regular file can be deployed",
                file_kind(kind)
            ),
        ));
    }
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| (ErrorCode::Failed, format!("cannot read {artifact}: {e}")))?;
    if bytes.len() > limit {
        return Err((
            ErrorCode::Failed,
            format!("{artifact} is larger than the host call limit"),
        ));
    }
    Ok((bytes, resolved.path))
}

/// What a file that is not a regular file is, for a refusal.
fn file_kind(kind: cap_std::fs::FileType) -> &'static str {
    use cap_std::fs::FileTypeExt as _;
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a named pipe"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else {
        "of another kind"
    }
}
