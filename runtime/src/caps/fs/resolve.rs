//! Resolving a checked path to the object it names, once, before the call is
//! decided — so the decision is about the object the operation then acts on.
//!
//! The walk opens each directory component itself, relative to the handle,
//! without following symlinks; a symlink found on the way is read and its
//! target spliced into the walk (inside the handle only), so the resolved
//! path it records is where the object really is. The operation then acts
//! on the directory handle the walk opened and the object's name in it,
//! opened without following symlinks: a symlink swapped in after the
//! decision cannot redirect it (the open fails instead).

use cap_primitives::fs::FollowSymlinks;
use cap_std::fs::{Dir, File, FileType, FileTypeExt, OpenOptions, OpenOptionsExt};
use std::collections::VecDeque;
use std::fmt;
use std::io;

use super::GrantedHandle;
use super::check::Call;
use super::path::{CheckedPath, PathError};
use crate::policy::Decision;

/// Most symlinks followed while resolving one path (as Linux's `ELOOP`).
const MAX_LINKS: usize = 40;

/// Most entries a subtree walk visits before it gives up.
pub(crate) const MAX_SUBTREE: usize = 10_000;

/// Most bytes of paths a subtree walk collects: each is asked of the
/// runtime policy (twice for a rename) and copied for it, and a tree of
/// 10,000 entries under directories with long names held gigabytes (a
/// real tree's 10,000 paths are a megabyte or two).
pub(crate) const MAX_SUBTREE_BYTES: usize = 4 << 20;

/// Most directories a path goes down, and a subtree walk: a walk holds
/// each level open, and the process's file descriptors are every
/// invocation's (a path 1,000 levels deep took 1,000 of them).
pub(crate) const MAX_DEPTH: usize = 128;

pub(super) fn too_deep(path: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "'{}' goes more than {MAX_DEPTH} directories deep",
            crate::policy::gate::cut(path, 256)
        ),
    )
}

/// Why the sandbox refused to resolve or open a path: a decision of its own
/// (`rule`, `reason`), carried inside an `io::Error`.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) rule: &'static str,
    pub(crate) reason: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Refusal {}

impl Refusal {
    pub(crate) fn of(e: &io::Error) -> Option<&Refusal> {
        e.get_ref().and_then(|e| e.downcast_ref::<Refusal>())
    }
}

pub(super) fn refuse(rule: &'static str, reason: impl Into<String>) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        Refusal {
            rule,
            reason: reason.into(),
        },
    )
}

/// The refusal of a symlink that leads outside the handle.
pub(crate) fn escape() -> io::Error {
    refuse(
        "fs.sandbox",
        "path leads outside the handle (through a symlink)",
    )
}

/// `e`, or when it says `r` (in `root`) exists, the refusal saying it came
/// since the call was decided on as making it: replacing it was not
/// asked. (A symlink put there is refused as one followed would be.)
pub(crate) fn since(e: io::Error, r: &Resolved, root: &Dir) -> io::Error {
    if e.kind() != io::ErrorKind::AlreadyExists {
        return e;
    }
    let there = r.name().and_then(|n| r.dir(root).symlink_metadata(n).ok());
    if there.is_some_and(|m| m.file_type().is_symlink()) {
        return io::Error::from_raw_os_error(libc::ELOOP);
    }
    refuse(
        "fs.changed",
        format!(
            "'{}' came to exist after the call was decided on as making it: nothing was done",
            r.path
        ),
    )
}

/// What a file type is, for a person; `None` for a regular file or a
/// directory. (cap-std's own type; [`crate::files::special`] is std's.)
pub(crate) fn special(ft: FileType) -> Option<&'static str> {
    if ft.is_file() || ft.is_dir() {
        None
    } else if ft.is_fifo() {
        Some("a named pipe")
    } else if ft.is_socket() {
        Some("a socket")
    } else if ft.is_char_device() {
        Some("a character device")
    } else if ft.is_block_device() {
        Some("a block device")
    } else if ft.is_symlink() {
        Some("a symlink")
    } else {
        Some("not a file or directory")
    }
}

/// The refusal of an object that is not a regular file where one is meant.
pub(crate) fn not_regular(path: &str, what: &str, action: &str) -> io::Error {
    refuse(
        "fs.kind",
        format!("'{path}' is {what}, not a regular file ({action} needs a regular file)"),
    )
}

/// A checked path resolved inside its handle.
#[derive(Debug)]
pub(crate) struct Resolved {
    /// The deepest existing directory the walk opened (no symlink followed);
    /// `None` for the handle's own directory.
    dir: Option<Dir>,
    /// Names below that directory: the object's name; several when
    /// resolving for creation and some components do not exist yet; none
    /// for the handle's root.
    pub(crate) names: Vec<String>,
    /// The path inside the handle with symlinks resolved, as the runtime
    /// policy sees it (`.` for the root).
    pub(crate) path: String,
    /// What the object is (not following a final symlink), `None` when it
    /// does not exist.
    pub(crate) kind: Option<FileType>,
}

impl Resolved {
    /// The directory holding the object.
    pub(crate) fn dir<'a>(&'a self, root: &'a Dir) -> &'a Dir {
        self.dir.as_ref().unwrap_or(root)
    }

    /// The object's name in [`Resolved::dir`], `None` for the handle's
    /// root. (Only resolving for creation leaves more than one name.)
    pub(crate) fn name(&self) -> Option<&str> {
        self.names.last().map(String::as_str)
    }

    /// The object as a directory: opened without following symlinks.
    pub(crate) fn open_dir(&self, root: &Dir) -> io::Result<Dir> {
        match self.name() {
            None => root.try_clone(),
            Some(name) => open_dir_nofollow(self.dir(root), name),
        }
    }

    /// Opens the object as a regular file, never following a symlink and
    /// never blocking (a named pipe opens at once, or fails), and refuses
    /// it unless it is a regular file.
    pub(crate) fn open_file(&self, root: &Dir, options: &mut OpenOptions) -> io::Result<File> {
        let Some(name) = self.name() else {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                "the handle's root is a directory",
            ));
        };
        // A terminal in the tree never becomes the server's controlling
        // terminal, for the moment it is open before its type is checked.
        options
            ._cap_fs_ext_follow(FollowSymlinks::No)
            ._cap_fs_ext_nonblock(true)
            .custom_flags(libc::O_NOCTTY);
        let file = self.dir(root).open_with(name, options)?;
        let ft = file.metadata()?.file_type();
        if ft.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("'{}' is a directory", self.path),
            ));
        }
        if let Some(what) = special(ft) {
            return Err(not_regular(&self.path, what, "this call"));
        }
        Ok(file)
    }
}

/// Opens directory `name` in `dir` without following a symlink and without
/// blocking, and checks that it is one.
pub(crate) fn open_dir_nofollow(dir: &Dir, name: impl AsRef<std::path::Path>) -> io::Result<Dir> {
    let name = name.as_ref();
    let file = dir.open_with(
        name,
        OpenOptions::new()
            .read(true)
            ._cap_fs_ext_maybe_dir(true)
            ._cap_fs_ext_follow(FollowSymlinks::No)
            ._cap_fs_ext_nonblock(true)
            .custom_flags(libc::O_NOCTTY),
    )?;
    if !file.metadata()?.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("'{}' is not a directory", name.display()),
        ));
    }
    Ok(Dir::from_std_file(file.into_std()))
}

fn components(path: &str) -> impl DoubleEndedIterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty() && *c != ".")
}

/// Resolves `path` (already checked) inside `root`. Symlinks in directory
/// components are followed inside the handle; a final symlink only when
/// `follow_last`. With `create`, missing components are kept as names to
/// create; otherwise a missing directory component is an error.
pub(crate) fn resolve(
    root: &Dir,
    path: &str,
    follow_last: bool,
    create: bool,
) -> io::Result<Resolved> {
    let mut todo: VecDeque<String> = components(path).map(str::to_owned).collect();
    let mut stack: Vec<(String, Dir)> = Vec::new();
    let mut names = Vec::new();
    let mut links = 0;
    while let Some(name) = todo.pop_front() {
        if name == ".." {
            if stack.pop().is_none() {
                return Err(escape());
            }
            continue;
        }
        let cur = stack.last().map_or(root, |(_, d)| d);
        let last = todo.is_empty();
        let meta = match cur.symlink_metadata(&name) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        match meta {
            Some(m) if m.file_type().is_symlink() && (follow_last || !last) => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("too many levels of symbolic links in '{path}'"),
                    ));
                }
                let target = match cur.read_link_contents(&name) {
                    Ok(t) => t,
                    // The link was replaced (by a directory or a file: EINVAL)
                    // or removed since it was examined: examine the name
                    // again. Each retry counts as a link, so a swapper cannot
                    // keep the walk going for ever.
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::InvalidInput | io::ErrorKind::NotFound
                        ) =>
                    {
                        todo.push_front(name);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                if target.is_absolute() {
                    return Err(escape());
                }
                let target = target.to_str().ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "symlink target is not UTF-8")
                })?;
                for c in components(target).rev() {
                    todo.push_front(c.to_owned());
                }
            }
            _ if last => names.push(name),
            Some(m) if m.is_dir() => {
                if stack.len() >= MAX_DEPTH {
                    return Err(too_deep(path));
                }
                let d = open_dir_nofollow(cur, &name)?;
                stack.push((name, d));
            }
            Some(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("'{name}' in '{path}' is not a directory"),
                ));
            }
            None if create && !todo.iter().any(|c| c == "..") => {
                // What would be created counts as deep as what is walked:
                // one call could otherwise make a tree thousands of
                // levels deep that no recursive remove can take down.
                if stack.len() + 1 + todo.len() > MAX_DEPTH {
                    return Err(too_deep(path));
                }
                names.push(name);
                names.extend(todo.drain(..));
            }
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no directory '{name}' on the way to '{path}'"),
                ));
            }
        }
    }
    // A walk that ended on a directory (`a/..`, a link to `sub/.`) names it.
    if names.is_empty()
        && let Some((name, _)) = stack.pop()
    {
        names.push(name);
    }
    let kind = match names.as_slice() {
        [name] => {
            let cur = stack.last().map_or(root, |(_, d)| d);
            match cur.symlink_metadata(name) {
                Ok(m) => Some(m.file_type()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            }
        }
        [] => Some(root.dir_metadata()?.file_type()),
        _ => None,
    };
    let mut parts: Vec<&str> = stack.iter().map(|(n, _)| n.as_str()).collect();
    parts.extend(names.iter().map(String::as_str));
    let path = if parts.is_empty() {
        ".".to_owned()
    } else {
        parts.join("/")
    };
    Ok(Resolved {
        dir: stack.pop().map(|(_, d)| d),
        names,
        path,
        kind,
    })
}

/// The paths of one call, resolved for its decision.
impl super::FsView<'_> {
    /// Resolves each path of an allowed call to the object it names, and
    /// decides on what was found: a path that cannot be resolved, or that
    /// names something other than a regular file where one is meant, is
    /// refused here, before the runtime policy is asked. Also returns the
    /// paths the runtime policy is asked about: each resolved path, and
    /// with a policy loaded, every path beneath a directory the call
    /// changes as a whole (both sides of a rename).
    pub(super) fn resolve_all(
        &self,
        handle: &GrantedHandle,
        call: &Call<'_>,
        checked: &[Result<CheckedPath<'_>, PathError>],
    ) -> Result<(Vec<Resolved>, Vec<String>), (Decision, io::Error)> {
        let refused = |e: io::Error| match Refusal::of(&e) {
            Some(r) => (Decision::deny(r.rule, r.reason.clone()), e),
            None => (
                Decision::deny("fs.resolve", format!("cannot resolve the path: {e}")),
                e,
            ),
        };
        let mut resolved = Vec::new();
        for p in checked.iter().flatten() {
            let r = resolve(
                &handle.dir,
                p.as_str(),
                call.follows_last(),
                call.action == "create-dir",
            )
            .map_err(refused)?;
            if call.needs_regular()
                && let Some(what) = r.kind.and_then(special)
            {
                return Err(refused(not_regular(&r.path, what, call.action)));
            }
            resolved.push(r);
        }
        let mut asked: Vec<String> = resolved.iter().map(|r| r.path.clone()).collect();
        // `create-dir bin/x` makes `bin` too: each directory it would make
        // is asked about, not the deepest alone.
        if call.action == "create-dir"
            && let Some(r) = resolved.first()
        {
            let mut p = r.path.as_str();
            for _ in 1..r.names.len() {
                p = p.rsplit_once('/').map_or(p, |(head, _)| head);
                asked.push(p.to_owned());
            }
        }
        if call.subtree
            && self.gate.has_policy()
            && let Some(from) = resolved.first()
            && from.kind.is_some_and(|k| k.is_dir())
        {
            // A rename moves each of them to the same place under its new
            // name: both sides change.
            let to = resolved.get(1).map(|r| r.path.as_str());
            let below = from
                .open_dir(&handle.dir)
                .and_then(|d| super::tree::subtree(d, &from.path, to, self.gate.deadline()))
                .map_err(refused)?;
            for p in below {
                if let Some(to) = to {
                    let rest = p.strip_prefix(&from.path).unwrap_or(&p);
                    asked.push(format!("{to}{rest}"));
                }
                asked.push(p);
            }
        }
        Ok((resolved, asked))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use cap_std::ambient_authority;

    /// `n` nested directories `d/d/…` under a fresh root, and the root.
    pub(in crate::caps::fs) fn nested(n: usize) -> (tempfile::TempDir, Dir) {
        let tmp = tempfile::tempdir().unwrap();
        let path = std::iter::repeat_n("d", n).collect::<Vec<_>>().join("/");
        std::fs::create_dir_all(tmp.path().join(path)).unwrap();
        let root = Dir::open_ambient_dir(tmp.path(), ambient_authority()).unwrap();
        (tmp, root)
    }

    #[test]
    fn a_path_deeper_than_the_limit_is_refused_not_walked() {
        let (_tmp, root) = nested(MAX_DEPTH + 2);
        let deep = |n: usize| std::iter::repeat_n("d", n).collect::<Vec<_>>().join("/");
        // MAX_DEPTH directories down, then a name in the last: the most.
        let r = resolve(&root, &format!("{}/x", deep(MAX_DEPTH)), false, true).unwrap();
        assert_eq!(r.names, ["x"]);
        let e = resolve(&root, &format!("{}/x", deep(MAX_DEPTH + 1)), false, true)
            .err()
            .unwrap();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(
            e.to_string()
                .ends_with(&format!("goes more than {MAX_DEPTH} directories deep")),
            "{e}"
        );
    }

    #[test]
    fn what_a_call_would_create_counts_toward_the_depth_limit() {
        // Two directories exist; `create-dir` of thousands more is refused
        // before anything is made, as deep as the walk allows is not.
        let (tmp, root) = nested(2);
        let deep = |n: usize| std::iter::repeat_n("d", n).collect::<Vec<_>>().join("/");
        let e = resolve(&root, &deep(4000), false, true).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().ends_with("directories deep"), "{e}");
        let e = resolve(&root, &deep(MAX_DEPTH + 1), false, true)
            .err()
            .unwrap();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let r = resolve(&root, &deep(MAX_DEPTH), false, true).unwrap();
        assert_eq!(r.names.len(), MAX_DEPTH - 2);
        assert!(!tmp.path().join("d/d/d").exists(), "nothing is created");
    }
}
