//! Whole trees below a directory: every path in one, asked of the runtime
//! policy; the links a rename carries to a new place; removing one. Each
//! walk follows no symlink, holds about as many directories open as the
//! tree is deep, and stops at the invocation's deadline.

use super::resolve::{
    MAX_DEPTH, MAX_SUBTREE, MAX_SUBTREE_BYTES, Resolved, open_dir_nofollow, refuse, too_deep,
};
use cap_std::fs::{Dir, FileType};
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// Most entries the walk for the links a rename carries visits: it keeps
/// only the links, but waits to open each directory it finds.
const MAX_CARRIED: usize = 200_000;

/// Most bytes of paths that walk goes through: what waits to be opened
/// keeps its path, and a tree 127 levels deep of long names held
/// gigabytes.
const MAX_CARRIED_BYTES: usize = 32 << 20;

/// Calls `visit(path, its directory, its name, its type)` for every entry
/// below `dir` (named `base` inside the handle, `.` for none), not
/// following symlinks; `too_much()` past `most` entries or `deadline`,
/// and refused past [`MAX_DEPTH`] levels. A name that is not UTF-8 is
/// refused when `strict`, else shown lossily in its path. A directory is
/// opened when its turn comes, not when it is found: what waits holds
/// only its parent open.
fn each_below(
    dir: Dir,
    base: &str,
    strict: bool,
    most: usize,
    deadline: Instant,
    too_much: &dyn Fn() -> io::Error,
    mut visit: impl FnMut(&str, &Dir, &std::ffi::OsStr, FileType) -> io::Result<()>,
) -> io::Result<()> {
    let mut seen = 0usize;
    // (its path, its parent or itself, its name in the parent, its depth)
    type Waiting = (String, Arc<Dir>, Option<std::ffi::OsString>, usize);
    let mut todo: Vec<Waiting> = vec![(base.to_owned(), Arc::new(dir), None, 0)];
    while let Some((prefix, parent, name, depth)) = todo.pop() {
        let d = match name {
            None => parent,
            Some(name) => match open_dir_nofollow(&parent, &name) {
                Ok(d) => Arc::new(d),
                // Gone since it was found: nothing below it.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            },
        };
        for e in d.entries()? {
            let e = e?;
            let name = e.file_name();
            let shown = match (name.to_str(), strict) {
                (Some(s), _) => std::borrow::Cow::Borrowed(s),
                (None, false) => name.to_string_lossy(),
                (None, true) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("a name under '{prefix}' is not UTF-8"),
                    ));
                }
            };
            let path = if prefix == "." {
                shown.into_owned()
            } else {
                format!("{prefix}/{shown}")
            };
            seen += 1;
            if seen > most || Instant::now() >= deadline {
                return Err(too_much());
            }
            let ft = entry_type(&d, &e)?;
            if ft.is_dir() {
                if depth + 1 >= MAX_DEPTH {
                    return Err(too_deep(&path));
                }
                todo.push((path.clone(), d.clone(), Some(name.clone()), depth + 1));
            }
            visit(&path, &d, &name, ft)?;
        }
    }
    Ok(())
}

/// Every path below directory `dir` (named `base` inside the handle);
/// refused past [`MAX_SUBTREE`] entries, [`MAX_SUBTREE_BYTES`] of paths
/// (at their new place `to` too, for a rename) or `deadline`.
pub(crate) fn subtree(
    dir: Dir,
    base: &str,
    to: Option<&str>,
    deadline: Instant,
) -> io::Result<Vec<String>> {
    let too_much = || {
        refuse(
            "fs.subtree",
            format!(
                "'{base}' holds more than can be checked against the runtime policy (at most {MAX_SUBTREE} entries and {} MiB of paths, within the deadline)",
                MAX_SUBTREE_BYTES >> 20
            ),
        )
    };
    let mut out = Vec::new();
    let mut bytes = 0usize;
    each_below(
        dir,
        base,
        true,
        MAX_SUBTREE,
        deadline,
        &too_much,
        |path, _, _, _| {
            // At its new place: `to` and the path below `base`.
            let moved = to.map_or(0, |to| to.len() + path.len().saturating_sub(base.len()));
            bytes = bytes.saturating_add(path.len() + moved);
            if bytes > MAX_SUBTREE_BYTES {
                return Err(too_much());
            }
            out.push(path.to_owned());
            Ok(())
        },
    )?;
    Ok(out)
}

/// Refuses a rename that moves a symlink that does not only lead down (a
/// target holding `..`, an absolute one, or `.`): the link itself, or one
/// anywhere below a directory moved. Where such a link leads depends on
/// where it is and on every link its way passes through, and the move
/// changes both — for it, and for links elsewhere whose way passes through
/// its new name — so no look at the tree before the move tells where it
/// leads after; Warden never follows it outside, but whatever else reads
/// the tree (a build, `git`) would. A link that only leads down leads
/// below itself wherever it is moved, and through it nothing climbs
/// further than its text says; but put in place of another link, it
/// changes the way of every link passing there, so that is refused too.
pub(crate) fn links_stay_inside(
    root: &Dir,
    from: &Resolved,
    to: &Resolved,
    deadline: Instant,
) -> io::Result<()> {
    let Some(name) = from.name() else {
        return Ok(());
    };
    // What is there now, not when decided (an approval may have waited).
    let kind = match from.dir(root).symlink_metadata(name) {
        Ok(m) => m.file_type(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    // Absolute (Warden's own walk refuses it as an escape), climbing, or
    // naming its own directory (`.`): each, put where another link's way
    // passes, leads that one elsewhere.
    let not_down = |target: &Path| {
        use std::path::Component as C;
        target.is_absolute()
            || target.components().any(|c| c == C::ParentDir)
            || !target.components().any(|c| matches!(c, C::Normal(_)))
    };
    let refused = |below: &str| {
        let (was, will) = match below {
            "" => (from.path.clone(), to.path.clone()),
            below => (
                format!("{}/{below}", from.path),
                format!("{}/{below}", to.path),
            ),
        };
        refuse(
            "fs.sandbox",
            format!(
                "the link '{was}' does not only lead down: moved to '{will}', it or a link through it could lead outside the handle"
            ),
        )
    };
    if kind.is_symlink() {
        if not_down(&from.dir(root).read_link_contents(name)?) {
            return Err(refused(""));
        }
        // A link put in place of another (the only thing a link may
        // replace) changes the way of every link that passes through that
        // name: one leading down less deep there lets another's `..` climb
        // out. Refused, whatever either holds.
        let replaced = to.name().map(|n| to.dir(root).symlink_metadata(n));
        return match replaced {
            Some(Ok(m)) if m.file_type().is_symlink() => Err(refuse(
                "fs.sandbox",
                format!(
                    "'{}' is a link: a link put in its place could lead links whose way passes through it outside the handle",
                    to.path
                ),
            )),
            _ => Ok(()),
        };
    }
    if !kind.is_dir() {
        return Ok(());
    }
    let too_much = || {
        refuse(
            "fs.subtree",
            format!(
                "'{}' holds more than can be checked for links before it moves (at most {MAX_CARRIED} entries and {} MiB of paths, within the deadline)",
                from.path,
                MAX_CARRIED_BYTES >> 20
            ),
        )
    };
    let mut bytes = 0usize;
    each_below(
        from.open_dir(root)?,
        ".",
        false,
        MAX_CARRIED,
        deadline,
        &too_much,
        |path, dir, name, ft| {
            bytes = bytes.saturating_add(path.len());
            if bytes > MAX_CARRIED_BYTES {
                return Err(too_much());
            }
            match ft.is_symlink() && not_down(&dir.read_link_contents(name)?) {
                true => Err(refused(path)),
                false => Ok(()),
            }
        },
    )
}

/// Removes the directory `name` in `parent` (`shown` inside the handle)
/// and everything in it, not following symlinks (a symlink named is
/// removed itself), holding about as many directories open as it is deep:
/// refused past [`MAX_DEPTH`] levels or at `deadline`, with what it
/// removed so far gone. (cap-std's `remove_dir_all` recurses, one
/// descriptor and one stack frame per level, on the tool's fiber: a tree
/// made deep by renames ran the process out of both; and a tree of a
/// million entries held the host past the invocation's deadline.)
pub(crate) fn remove_tree(
    parent: &Dir,
    name: &str,
    shown: &str,
    deadline: Instant,
) -> io::Result<()> {
    if parent.symlink_metadata(name)?.file_type().is_symlink() {
        return parent.remove_file(name);
    }
    let late = || {
        refuse(
            "fs.subtree",
            format!(
                "the deadline came while removing '{shown}': the call stopped there, after what it had removed before it"
            ),
        )
    };
    let top = open_dir_nofollow(parent, name)?;
    let entries = top.entries()?;
    // Each directory being emptied: itself, its listing, its name.
    let mut stack = vec![(top, entries, std::ffi::OsString::from(name))];
    while let Some((dir, entries, _)) = stack.last_mut() {
        let mut below = None;
        for e in entries.by_ref() {
            if Instant::now() >= deadline {
                return Err(late());
            }
            let e = e?;
            if entry_type(dir, &e)?.is_dir() {
                below = Some(e.file_name());
                break;
            }
            dir.remove_file(e.file_name())?;
        }
        match below {
            Some(child) => {
                let opened = open_dir_nofollow(dir, &child)?;
                if stack.len() >= MAX_DEPTH {
                    return Err(too_deep(shown));
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

/// The type of `e`, an entry of `dir`. When the directory gives none
/// (`DT_UNKNOWN`: XFS without ftype, some NFS and FUSE mounts; cap-std then
/// says "unknown" rather than look), it is asked of the entry itself, not
/// followed: a subdirectory taken for a file made a recursive remove stop
/// half done.
pub(super) fn entry_type(dir: &Dir, e: &cap_std::fs::DirEntry) -> io::Result<FileType> {
    match e.file_type()? {
        ft if ft.is_dir() || ft.is_file() || ft.is_symlink() => Ok(ft),
        _ => Ok(dir.symlink_metadata(e.file_name())?.file_type()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::resolve::tests::nested;
    use super::*;
    use cap_std::ambient_authority;
    use std::time::Duration;

    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").unwrap().count()
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    /// `from` and `to` resolved in `root`, and whether the move is let go.
    fn moving(root: &Dir, from: &str, to: &str) -> Result<(), String> {
        let from = super::super::resolve::resolve(root, from, false, false).unwrap();
        let to = super::super::resolve::resolve(root, to, false, false).unwrap();
        links_stay_inside(root, &from, &to, later()).map_err(|e| e.to_string())
    }

    #[test]
    fn a_move_carrying_a_link_that_climbs_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let link = |target: &str, at: &str| std::os::unix::fs::symlink(target, t.join(at)).unwrap();
        // A pnpm tree: `.bin/tsc` leads three levels up, to `w`.
        std::fs::create_dir_all(t.join("w/a/node_modules/.bin")).unwrap();
        std::fs::create_dir_all(t.join("w/node_modules/.pnpm/ts/bin")).unwrap();
        link(
            "../../../node_modules/.pnpm/ts/bin/tsc",
            "w/a/node_modules/.bin/tsc",
        );
        // `S/L`'s text stays inside `S`, but its way goes through
        // `S/b/up -> ..`, and, moved, up and out.
        std::fs::create_dir_all(t.join("x/y/S/b")).unwrap();
        link("..", "x/y/S/b/up");
        link("b/up/../../z", "x/y/S/L");
        // `K -> ../..` renamed to `m` beside `L2 -> m/../../q`: `L2` then
        // leads out, though `K` moves nowhere else.
        std::fs::create_dir_all(t.join("p/q")).unwrap();
        link("../..", "p/q/K");
        // An absolute target, or `.`, put where another link's way passes,
        // leads that one elsewhere; a descending one leads below itself.
        std::fs::create_dir_all(t.join("v/lib")).unwrap();
        link("/usr/bin/python3", "v/python");
        link("lib", "v/lib64");
        link(".", "v/here");
        let root = Dir::open_ambient_dir(t, ambient_authority()).unwrap();
        let refused = |link: &str, to: &str| {
            Err(format!(
                "the link '{link}' does not only lead down: moved to '{to}', it or a link through it could lead outside the handle"
            ))
        };
        assert_eq!(
            moving(&root, "w/a/node_modules/.bin", ".bin"),
            refused("w/a/node_modules/.bin/tsc", ".bin/tsc")
        );
        assert_eq!(
            moving(&root, "w/a/node_modules/.bin/tsc", "tsc"),
            refused("w/a/node_modules/.bin/tsc", "tsc")
        );
        assert_eq!(
            moving(&root, "w/a/node_modules", "w/b"),
            refused("w/a/node_modules/.bin/tsc", "w/b/.bin/tsc")
        );
        assert_eq!(moving(&root, "x/y/S", "S2"), refused("x/y/S/L", "S2/L"));
        assert_eq!(
            moving(&root, "x/y/S", "x/y/T"),
            refused("x/y/S/L", "x/y/T/L")
        );
        assert_eq!(moving(&root, "p/q/K", "p/q/m"), refused("p/q/K", "p/q/m"));
        assert_eq!(moving(&root, "v/python", "py"), refused("v/python", "py"));
        assert_eq!(moving(&root, "v/here", "h"), refused("v/here", "h"));
        // Moves carrying only links that lead down go.
        assert_eq!(moving(&root, "v/lib64", "lib64"), Ok(()));
        assert_eq!(moving(&root, "w/node_modules", "nm"), Ok(()));
        // Nothing moved.
        assert!(t.join("x/y/S/L").symlink_metadata().is_ok());
    }

    #[test]
    fn a_tree_is_removed_no_later_than_the_deadline() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("t/a")).unwrap();
        std::fs::write(tmp.path().join("t/a/f"), "x").unwrap();
        let root = Dir::open_ambient_dir(tmp.path(), ambient_authority()).unwrap();
        let e = remove_tree(&root, "t", "t", Instant::now()).unwrap_err();
        let r = super::super::resolve::Refusal::of(&e).expect("a refusal");
        assert_eq!(r.rule, "fs.subtree");
        assert_eq!(
            r.reason,
            "the deadline came while removing 't': the call stopped there, after what it had removed before it"
        );
        assert!(tmp.path().join("t/a/f").exists());
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
        remove_tree(&root, "t", "t", later()).unwrap();
        assert!(!t.exists());
        assert!(
            outside.join("keep/file").exists(),
            "a link's target is not removed"
        );
        // A symlink named is removed itself.
        std::os::unix::fs::symlink(&outside, tmp.path().join("l")).unwrap();
        remove_tree(&root, "l", "l", later()).unwrap();
        assert!(outside.join("keep/file").exists());

        let (tmp, root) = nested(MAX_DEPTH + 1);
        let e = remove_tree(&root, "d", "d", later()).unwrap_err();
        assert!(e.to_string().ends_with("directories deep"), "{e}");
        assert!(tmp.path().join("d").exists());
    }
}
