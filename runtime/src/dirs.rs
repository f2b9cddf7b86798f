//! Private directories: the compile cache and the blob cache keep what
//! they store where no other user can write.

use std::path::Path;

/// Creates `dir` and its parents, mode 0700.
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Creates `dir` (mode 0700) if missing, and refuses it if other users
/// can write it or another user owns it. `what` names it in errors
/// ("compile cache directory").
pub(crate) fn create_private_dir(dir: &Path, what: &str) -> Result<(), String> {
    private_dir(dir).map_err(|e| format!("cannot create {what} {}: {e}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if meta.mode() & 0o022 != 0 {
            return Err(format!(
                "{what} {} is writable by other users (expected mode 0700)",
                dir.display()
            ));
        }
        if meta.uid() != rustix::process::geteuid().as_raw() {
            return Err(format!("{what} {} is owned by another user", dir.display()));
        }
    }
    Ok(())
}

/// The bytes of `path` if it is a regular file this user owns and no other
/// user can write (not followed through a symlink, not waited on as a
/// FIFO); `None` if there is no such file; an error naming what is wrong
/// with one that is there.
#[cfg(unix)]
pub(crate) fn read_own(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read as _;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    let mut file = match opts.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    let wrong = if !meta.is_file() {
        "not a regular file"
    } else if meta.uid() != rustix::process::geteuid().as_raw() {
        "owned by another user"
    } else if meta.mode() & 0o022 != 0 {
        "writable by other users"
    } else {
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.read_to_end(&mut bytes)?;
        return Ok(Some(bytes));
    };
    Err(std::io::Error::other(wrong))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A compile cache entry is native code: only a file this user wrote is
    /// read back (`engine::CompileCache::load` ignores anything else and
    /// compiles again).
    #[test]
    fn only_a_file_of_ones_own_that_no_one_else_can_write_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let entry = dir.path().join("e.cwasm");
        assert!(read_own(&entry).unwrap().is_none());
        std::fs::write(&entry, b"code").unwrap();
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read_own(&entry).unwrap().as_deref(), Some(&b"code"[..]));
        for mode in [0o666, 0o620] {
            std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = read_own(&entry).unwrap_err();
            assert_eq!(e.to_string(), "writable by other users", "{mode:o}");
        }
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("l.cwasm");
        std::os::unix::fs::symlink(&entry, &link).unwrap();
        assert_eq!(
            read_own(&link).unwrap_err().raw_os_error(),
            Some(libc::ELOOP)
        );
        let fifo = dir.path().join("f.cwasm");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
        )
        .unwrap();
        assert_eq!(
            read_own(&fifo).unwrap_err().to_string(),
            "not a regular file"
        );
        // Another user's file (CI runs as root, which can make one).
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(&entry, Some(65534), None).unwrap();
            assert_eq!(
                read_own(&entry).unwrap_err().to_string(),
                "owned by another user"
            );
        }
    }
}
