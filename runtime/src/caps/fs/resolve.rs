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
use cap_std::fs::{Dir, File, FileType, FileTypeExt, OpenOptions};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::time::Instant;

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

fn too_deep(path: &str) -> io::Error {
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

fn refuse(rule: &'static str, reason: impl Into<String>) -> io::Error {
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

/// Refuses to move the link `from` (its target `target`) to `to`, both
/// paths inside the handle, when its relative target would then name a
/// place outside the handle: Warden never follows it there, but whatever
/// else reads the tree (a build, `git`) would.
pub(crate) fn link_moved_inside(from: &str, to: &str, target: &std::path::Path) -> io::Result<()> {
    let mut at: Vec<&str> = components(to).collect();
    at.pop();
    let inside = target.to_str().is_some_and(|t| {
        !target.is_absolute()
            && t.split('/').all(|c| match c {
                "" | "." => true,
                ".." => at.pop().is_some(),
                c => {
                    at.push(c);
                    true
                }
            })
    });
    match inside {
        true => Ok(()),
        false => Err(refuse(
            "fs.sandbox",
            format!("the link '{from}' would lead outside the handle from '{to}'"),
        )),
    }
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
        options
            ._cap_fs_ext_follow(FollowSymlinks::No)
            ._cap_fs_ext_nonblock(true);
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
            ._cap_fs_ext_nonblock(true),
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

/// Every path below directory `dir` (named `base` inside the handle), not
/// following symlinks; refused past [`MAX_SUBTREE`] entries,
/// [`MAX_SUBTREE_BYTES`] of paths (at their new place `to` too, for a
/// rename) or `deadline`. A directory is opened when its turn comes, not
/// when it is found: what waits holds only its parent open, so the walk
/// holds about as many directories open as it is deep.
pub(crate) fn subtree(
    dir: Dir,
    base: &str,
    to: Option<&str>,
    deadline: Instant,
) -> io::Result<Vec<String>> {
    use std::sync::Arc;
    let mut out = Vec::new();
    let mut bytes = 0usize;
    // (its path, its parent or itself, its name in the parent, its depth)
    let mut todo: Vec<(String, Arc<Dir>, Option<String>, usize)> =
        vec![(base.to_owned(), Arc::new(dir), None, 0)];
    while let Some((prefix, parent, name, depth)) = todo.pop() {
        let d = match name {
            None => parent,
            Some(name) => match open_dir_nofollow(&parent, &name) {
                Ok(d) => Arc::new(d),
                // Gone since it was found: nothing below it to decide on.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            },
        };
        for e in d.entries()? {
            let e = e?;
            let name = e.file_name();
            let name = name.to_str().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("a name under '{prefix}' is not UTF-8"),
                )
            })?;
            let path = if prefix == "." {
                name.to_owned()
            } else {
                format!("{prefix}/{name}")
            };
            // At its new place: `to` and the path below `base`.
            let moved = to.map_or(0, |to| to.len() + path.len().saturating_sub(base.len()));
            bytes = bytes.saturating_add(path.len() + moved);
            if out.len() >= MAX_SUBTREE || bytes > MAX_SUBTREE_BYTES || Instant::now() >= deadline {
                return Err(refuse(
                    "fs.subtree",
                    format!(
                        "'{base}' holds more than can be checked against the runtime policy (at most {MAX_SUBTREE} entries and {} MiB of paths, within the deadline)",
                        MAX_SUBTREE_BYTES >> 20
                    ),
                ));
            }
            if e.file_type()?.is_dir() {
                if depth + 1 >= MAX_DEPTH {
                    return Err(too_deep(&path));
                }
                todo.push((path.clone(), d.clone(), Some(name.to_owned()), depth + 1));
            }
            out.push(path);
        }
    }
    Ok(out)
}

/// Removes the directory `name` in `parent` and everything in it, not
/// following symlinks (a symlink named is removed itself), holding about
/// as many directories open as it is deep: refused past [`MAX_DEPTH`]
/// levels, with what it removed so far gone. (cap-std's `remove_dir_all`
/// recurses, one descriptor and one stack frame per level, on the tool's
/// fiber: a tree made deep by renames ran the process out of both.)
pub(crate) fn remove_tree(parent: &Dir, name: &str) -> io::Result<()> {
    if parent.symlink_metadata(name)?.file_type().is_symlink() {
        return parent.remove_file(name);
    }
    let top = open_dir_nofollow(parent, name)?;
    let entries = top.entries()?;
    // Each directory being emptied: itself, its listing, its name.
    let mut stack = vec![(top, entries, std::ffi::OsString::from(name))];
    while let Some((dir, entries, _)) = stack.last_mut() {
        let mut below = None;
        for e in entries.by_ref() {
            let e = e?;
            if e.file_type()?.is_dir() {
                below = Some(e.file_name());
                break;
            }
            dir.remove_file(e.file_name())?;
        }
        match below {
            Some(child) => {
                let opened = open_dir_nofollow(dir, &child)?;
                if stack.len() >= MAX_DEPTH {
                    return Err(too_deep(name));
                }
                let entries = opened.entries()?;
                stack.push((opened, entries, child));
            }
            None => {
                let (_, _, emptied) = stack.pop().expect("the last one is there");
                match stack.last() {
                    Some((up, _, _)) => up.remove_dir(&emptied)?,
                    None => parent.remove_dir(name)?,
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cap_std::ambient_authority;
    use std::time::Duration;

    /// `n` nested directories `d/d/…` under a fresh root, and the root.
    fn nested(n: usize) -> (tempfile::TempDir, Dir) {
        let tmp = tempfile::tempdir().unwrap();
        let path = std::iter::repeat_n("d", n).collect::<Vec<_>>().join("/");
        std::fs::create_dir_all(tmp.path().join(path)).unwrap();
        let root = Dir::open_ambient_dir(tmp.path(), ambient_authority()).unwrap();
        (tmp, root)
    }

    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").unwrap().count()
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

    #[test]
    fn a_subtree_walk_holds_about_its_depth_open_and_stops_at_the_limit() {
        // 600 subdirectories side by side: found together, opened in turn
        // (the count is the whole process's: other tests open files too).
        let tmp = tempfile::tempdir().unwrap();
        for i in 0..600 {
            std::fs::create_dir_all(tmp.path().join(format!("w/{i}/inner"))).unwrap();
        }
        let root = Dir::open_ambient_dir(tmp.path(), ambient_authority()).unwrap();
        let before = open_fds();
        let deadline = Instant::now() + Duration::from_secs(30);
        let w = root.open_dir("w").unwrap();
        // The walk runs on this thread; a watcher samples the descriptors.
        let most = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let (most, stop) = (most.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    most.fetch_max(open_fds(), std::sync::atomic::Ordering::Relaxed);
                }
            })
        };
        let all = subtree(w, "w", None, deadline).unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        watcher.join().unwrap();
        assert_eq!(all.len(), 1200);
        let most = most.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            most < before + 300,
            "{before} open before, {most} at most during the walk"
        );

        let (_tmp, root) = nested(MAX_DEPTH + 1);
        let e = subtree(root.open_dir("d").unwrap(), "d", None, deadline)
            .err()
            .unwrap();
        assert!(e.to_string().contains("directories deep"), "{e}");
    }

    #[test]
    fn a_tree_is_removed_whole_without_following_links_and_not_past_the_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(outside.join("keep")).unwrap();
        std::fs::write(outside.join("keep/file"), "x").unwrap();
        let t = tmp.path().join("t");
        for d in ["a/b/c", "a/d", "e"] {
            std::fs::create_dir_all(t.join(d)).unwrap();
        }
        for f in ["a/b/c/f", "a/f", "g"] {
            std::fs::write(t.join(f), "x").unwrap();
        }
        std::os::unix::fs::symlink(&outside, t.join("a/link")).unwrap();
        let root = Dir::open_ambient_dir(tmp.path(), ambient_authority()).unwrap();
        remove_tree(&root, "t").unwrap();
        assert!(!t.exists());
        assert!(
            outside.join("keep/file").exists(),
            "a link's target is not removed"
        );
        // A symlink named is removed itself.
        std::os::unix::fs::symlink(&outside, tmp.path().join("l")).unwrap();
        remove_tree(&root, "l").unwrap();
        assert!(outside.join("keep/file").exists());

        let (tmp, root) = nested(MAX_DEPTH + 1);
        let e = remove_tree(&root, "d").unwrap_err();
        assert!(e.to_string().ends_with("directories deep"), "{e}");
        assert!(tmp.path().join("d").exists());
    }
}
