//! The `fs` capability: named directory handles with separate rights.
//!
//! A handle holds a directory opened once, when the grant is authorized, as a
//! `cap_std::fs::Dir`; every operation resolves relative to it and cap-std
//! refuses any resolution (through `..` or a symlink) that leaves it. Host path
//! strings are never re-resolved during a call.

pub mod check;
mod host;
pub(crate) mod manifest;

pub use manifest::FsCeiling;
pub mod path;
pub(crate) mod resolve;
mod tree;

use crate::diag::GrantError;
use crate::policy::gate::Gate;
use crate::rights::Rights;
use cap_std::ambient_authority;
use cap_std::fs::Dir;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmtime::component::{HasData, Linker, ResourceTable};

/// One directory handle of a grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsGrant {
    pub path: PathBuf,
    pub rights: Rights,
}

/// A directory handle of an authorized grant.
#[derive(Debug)]
pub struct GrantedHandle {
    pub name: String,
    pub rights: Rights,
    /// The canonical host path, for messages only; never re-opened.
    pub path: PathBuf,
    /// Rights whose use waits for an approver.
    pub approval: Rights,
    /// The ceiling's sensitivity labels, for runtime policy.
    pub labels: Vec<String>,
    pub(crate) dir: Dir,
}

/// The open `dir` resource a guest holds.
pub struct OpenDir {
    pub(crate) handle: Arc<GrantedHandle>,
}

/// The fs handles of one invocation.
#[derive(Default, Clone)]
pub struct FsCtx {
    pub(crate) handles: BTreeMap<String, Arc<GrantedHandle>>,
}

/// What the fs host impl sees of the store: its handles, the resource
/// table and the gate.
pub(crate) struct FsView<'a> {
    pub(crate) ctx: &'a FsCtx,
    pub(crate) table: &'a mut ResourceTable,
    pub(crate) gate: &'a Gate,
}

/// A store that can give the fs host impl its view.
pub(crate) trait FsStore: Send + 'static {
    fn fs(&mut self) -> FsView<'_>;
}

struct Fs;

impl HasData for Fs {
    type Data<'a> = FsView<'a>;
}

pub(crate) fn add_to_linker<T: FsStore>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    crate::bindings::warden::tool::fs::add_to_linker::<T, Fs>(linker, T::fs)
}

/// The ceiling directories of a tool, opened once when the tool is loaded.
pub(crate) struct Ceilings {
    dirs: BTreeMap<String, Arc<Dir>>,
}

impl Ceilings {
    /// Opens each `within` directory of a tool's fs ceilings.
    ///
    /// # Ambient Authority
    ///
    /// This is where the manifest's directories, chosen by security, are
    /// opened from the host's file system.
    pub(crate) fn open(ceilings: &[FsCeiling]) -> std::io::Result<Ceilings> {
        let mut dirs = BTreeMap::new();
        for c in ceilings {
            let dir = Dir::open_ambient_dir(&c.within, ambient_authority()).map_err(|e| {
                std::io::Error::new(e.kind(), format!("{}: {e}", c.within.display()))
            })?;
            dirs.insert(c.handle.clone(), Arc::new(dir));
        }
        Ok(Ceilings { dirs })
    }
}

/// The fs part of a task's grant that a tool's ceiling allows: handles the
/// tool lists, rights intersected with the ceiling, directories clipped to
/// `within`. Handles that keep no rights or no directory are left out.
pub(crate) fn narrow(
    ceilings: &[FsCeiling],
    granted: &BTreeMap<String, FsGrant>,
) -> BTreeMap<String, FsGrant> {
    let mut out = BTreeMap::new();
    for (name, g) in granted {
        let Some(ceiling) = ceilings.iter().find(|c| c.handle == *name) else {
            continue;
        };
        let rights = g.rights.intersection(ceiling.rights);
        if rights.is_empty() {
            continue;
        }
        // An unresolvable path is kept as is, so authorizing it reports why.
        let path = match g.path.canonicalize() {
            Ok(p) if p.starts_with(&ceiling.within) => p,
            Ok(p) if ceiling.within.starts_with(&p) => ceiling.within.clone(),
            Ok(_) => continue,
            Err(_) => g.path.clone(),
        };
        out.insert(name.clone(), FsGrant { path, rights });
    }
    out
}

/// Opens `relative` (a canonical path: no link, no `..`) in `within`
/// following no link, so the directory opened is the one at the path the
/// handle records: a link swapped in for any of its parts since it was
/// made canonical fails the open, rather than opening elsewhere in the
/// ceiling under the recorded path (where path rules would miss it).
fn open_exactly(within: &cap_std::fs::Dir, relative: &Path) -> std::io::Result<cap_std::fs::Dir> {
    let mut dir = within.try_clone()?;
    for part in relative.components() {
        let std::path::Component::Normal(name) = part else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("'{}' is not a canonical path", relative.display()),
            ));
        };
        dir = resolve::open_dir_nofollow(&dir, name)?;
    }
    Ok(dir)
}

/// Checks a grant against the tool's ceiling and opens its directories.
///
/// Refuses, naming the handle, any grant that would have to be narrowed: a
/// handle the manifest does not list, a directory outside `within`, or rights
/// beyond the ceiling. The granted directory is opened through the ceiling's
/// already-open directory, so even a symlink swapped in after the check
/// cannot lead outside it.
pub(crate) fn authorize(
    tool: &str,
    ceilings: &[FsCeiling],
    open: &Ceilings,
    granted: &BTreeMap<String, FsGrant>,
) -> Result<FsCtx, GrantError> {
    let mut handles = BTreeMap::new();
    for (name, g) in granted {
        let ceiling = ceilings.iter().find(|c| c.handle == *name);
        let (Some(ceiling), Some(within_dir)) = (ceiling, open.dirs.get(name)) else {
            let known: Vec<_> = ceilings.iter().map(|c| c.handle.as_str()).collect();
            return Err(GrantError::UnknownHandle {
                tool: tool.to_owned(),
                handle: name.clone(),
                known: if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                },
            });
        };
        let excess = g.rights.excess_over(ceiling.rights);
        if !excess.is_empty() {
            return Err(GrantError::RightsExceedCeiling {
                handle: name.clone(),
                excess,
                ceiling: ceiling.rights,
            });
        }
        if g.rights.is_empty() {
            return Err(GrantError::Syntax {
                spec: format!("fs:{name}"),
                reason: "no rights".into(),
            });
        }
        let open_err = |source| GrantError::Open {
            handle: name.clone(),
            path: g.path.clone(),
            source,
        };
        let canonical = g.path.canonicalize().map_err(open_err)?;
        let Ok(relative) = canonical.strip_prefix(&ceiling.within) else {
            return Err(GrantError::OutsideCeiling {
                handle: name.clone(),
                path: canonical,
                within: ceiling.within.clone(),
            });
        };
        let dir = open_exactly(within_dir, relative).map_err(open_err)?;
        handles.insert(
            name.clone(),
            Arc::new(GrantedHandle {
                name: name.clone(),
                rights: g.rights,
                path: canonical,
                approval: ceiling.approval,
                labels: ceiling.labels.clone(),
                dir,
            }),
        );
    }
    Ok(FsCtx { handles })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A grant's directory is opened at the canonical path it records, or
    /// not at all: a link swapped in for one of its parts fails the open.
    #[test]
    fn a_granted_directory_is_opened_exactly_where_its_path_says() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("proj/sub")).unwrap();
        std::fs::create_dir_all(tmp.path().join(".github")).unwrap();
        std::fs::write(tmp.path().join("proj/sub/here"), "").unwrap();
        let within = Dir::open_ambient_dir(tmp.path(), ambient_authority()).unwrap();
        let sub = open_exactly(&within, Path::new("proj/sub")).unwrap();
        assert!(sub.exists("here"));
        assert!(open_exactly(&within, Path::new("")).unwrap().exists("proj"));

        // The directory swapped for a link to another one in the ceiling.
        std::fs::rename(tmp.path().join("proj/sub"), tmp.path().join("proj/old")).unwrap();
        std::os::unix::fs::symlink("../.github", tmp.path().join("proj/sub")).unwrap();
        assert!(open_exactly(&within, Path::new("proj/sub")).is_err());
        // A part above it swapped.
        std::fs::rename(tmp.path().join("proj"), tmp.path().join("moved")).unwrap();
        std::os::unix::fs::symlink("moved", tmp.path().join("proj")).unwrap();
        assert!(open_exactly(&within, Path::new("proj/old")).is_err());
        assert!(open_exactly(&within, Path::new("moved/old")).is_ok());
        let e = open_exactly(&within, Path::new("moved/../moved")).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    }
}
