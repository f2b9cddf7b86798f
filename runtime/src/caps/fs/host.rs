//! Host side of `warden:tool/fs`: each operation's path check, rights and size go
//! to the gate as its built-in decision; what passes runs through the handle's `Dir`.

use super::check::{self, Call, FsRequest, simple};
use super::path::{self, CheckedPath, PathError};
use super::resolve::{self, Resolved};
use super::tree;
use super::{FsView, GrantedHandle, OpenDir};
use crate::bindings::warden::tool::fs::{
    self as wit, DirEntry, EntryKind, ErrorCode, HandleInfo, Host, HostDir, Metadata,
};
use crate::policy::cedar::Resource as Subject;
use crate::policy::gate::{Approval, Ask, HostCall, MAX_RESOURCE};
use crate::policy::{Decision, Did};
use crate::rights::{Right, Rights};
use cap_std::fs::{Dir, OpenOptions};
use std::io::{self, Read};
use std::sync::Arc;
use wasmtime::component::Resource;

type FsResult<T> = wasmtime::Result<Result<T, wit::Error>>;

fn error(code: ErrorCode, message: impl Into<String>) -> wit::Error {
    wit::Error {
        code,
        message: message.into(),
    }
}

fn wit_rights(r: Rights) -> wit::Rights {
    let mut out = wit::Rights::empty();
    if r.contains(Rights::READ) {
        out |= wit::Rights::READ;
    }
    if r.contains(Rights::WRITE) {
        out |= wit::Rights::WRITE;
    }
    if r.contains(Rights::DELETE) {
        out |= wit::Rights::DELETE;
    }
    out
}

/// cap-std's error for a resolution that would leave the directory.
fn is_escape(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::PermissionDenied
        && e.to_string().contains("outside of the filesystem")
}

fn io_error(e: &io::Error) -> wit::Error {
    use io::ErrorKind as K;
    let code = match e.kind() {
        K::NotFound => ErrorCode::NotFound,
        K::AlreadyExists => ErrorCode::AlreadyExists,
        K::PermissionDenied => ErrorCode::Denied,
        K::NotADirectory => ErrorCode::NotADirectory,
        K::IsADirectory => ErrorCode::IsADirectory,
        K::DirectoryNotEmpty => ErrorCode::DirectoryNotEmpty,
        K::InvalidInput | K::InvalidFilename => ErrorCode::InvalidPath,
        K::FileTooLarge => ErrorCode::TooLarge,
        _ => ErrorCode::Io,
    };
    if is_escape(e) {
        return error(ErrorCode::Denied, "path leads outside the handle");
    }
    error(code, e.to_string())
}

fn kind_of(ft: cap_std::fs::FileType) -> EntryKind {
    if ft.is_dir() {
        EntryKind::Directory
    } else if ft.is_file() {
        EntryKind::File
    } else if ft.is_symlink() {
        EntryKind::Symlink
    } else {
        EntryKind::Other
    }
}

/// What an fs operation needs, sealed into its host call: the handle, the
/// call's checked paths, and the objects they resolved to (what was
/// decided on, and what the operation acts on).
struct Target<'p> {
    handle: Arc<GrantedHandle>,
    paths: Vec<Result<CheckedPath<'p>, PathError>>,
    resolved: Vec<Resolved>,
}

impl FsView<'_> {
    fn handle(&self, dir: &Resource<OpenDir>) -> wasmtime::Result<Arc<GrantedHandle>> {
        Ok(self.table.get(dir)?.handle.clone())
    }

    /// Runs one operation through the gate: the call is decided on the
    /// objects its paths resolve to, and the operation acts on those same
    /// objects (the directories the resolution opened), never on the path
    /// strings again.
    async fn run<T>(
        &mut self,
        dir: Resource<OpenDir>,
        call: Call<'_>,
        op: impl FnOnce(&Dir, &[Resolved], usize) -> io::Result<T>,
    ) -> FsResult<T> {
        let Call {
            action,
            needs,
            bytes,
            subtree,
            ..
        } = call;
        let paths = call.paths.as_slice();
        let handle = self.handle(&dir)?;
        let limit = self.gate.hostcall_limit();
        let checked: Vec<_> = paths.iter().map(|p| path::check(p)).collect();
        let mut check = check::decide(&FsRequest {
            handle: &handle.name,
            action,
            paths: &checked,
            held: handle.rights,
            needs,
            bytes,
            limit,
        });
        let bad_path = checked.iter().find_map(|p| p.err());
        let mut resolved = Vec::new();
        let mut asked = Vec::new();
        let mut resolve_error = None;
        // A path over the gate's limit is refused there (`limits.resource`)
        // unresolved: resolving it first would cost the host a string per
        // component of up to the host call limit; and by its length, each
        // path cut before it is quoted (six bytes a control character).
        let named = handle.name.len() + 1 + check::joined_len(paths);
        let over = named > MAX_RESOURCE;
        let resource = match over {
            false => format!("{}:{}", handle.name, check::joined(paths)),
            true => format!("{}:{}", handle.name, check::joined_cut(paths, MAX_RESOURCE)),
        };
        if check.allow && !over {
            match self.resolve_all(&handle, &call, &checked) {
                Ok((r, a)) => (resolved, asked) = (r, a),
                Err((d, e)) => {
                    check = d;
                    resolve_error = Some(e);
                }
            }
        }
        // Runtime policy sees each path as resolved inside the handle, so a
        // link cannot dodge a path rule.
        let host_paths: Vec<(String, String)> = if check.allow && self.gate.has_policy() {
            asked
                .iter()
                .map(|p| {
                    let host = if p == "." {
                        handle.path.clone()
                    } else {
                        handle.path.join(p)
                    };
                    (p.clone(), host.to_string_lossy().into_owned())
                })
                .collect()
        } else {
            Vec::new()
        };
        let asks = host_paths
            .iter()
            .flat_map(|(path, host_path)| {
                let handle = &handle;
                needs.iter().map(move |right| Ask {
                    action: format!("fs::{right}"),
                    detail: action,
                    resource: Subject::Path {
                        handle: &handle.name,
                        path,
                        host_path,
                        labels: &handle.labels,
                    },
                })
            })
            .collect();
        let approval_action = format!("fs.{action}");
        // Where a link among the paths leads: shown to the person and bound
        // by the digest, not only the name the tool gave.
        let leads = resolved.iter().map(|r| r.path.as_str());
        let moved = !resolved.is_empty()
            && (checked.iter().flatten().map(|p| p.as_str())).ne(leads.clone());
        let leads: Option<Vec<String>> = moved.then(|| leads.map(str::to_owned).collect());
        // Whether it makes a file or replaces one: the person is told, the
        // digest binds it, and the operation holds to it.
        let said = match (check::fate(action, &resolved), call.args.is_empty()) {
            (Some(fate), true) => fate,
            (Some(fate), false) => format!("{}; {fate}", call.args),
            (None, _) => call.args.clone(),
        };
        let args: std::borrow::Cow<'_, str> = match &leads {
            Some(to) => format!("{said}; resolves to {}", check::joined(to)).into(),
            None => said.as_str().into(),
        };
        // The trail names the files acted on, not only the tool's aliases.
        let resource = match &leads {
            Some(to) => check::with_leads(&resource, to, self.gate.redactor()),
            None => resource,
        };
        let shown = super::check::Shown {
            action,
            paths,
            leads: leads.as_deref(),
            handle: &handle.name,
            bytes,
            args: &said,
            preview: call.preview,
        };
        let summary = || shown.summary(self.gate.redactor());
        let call = HostCall {
            capability: "fs",
            action,
            resource: &resource,
            whole: over.then_some(named),
            check,
            asks,
            approval: Approval {
                required: !handle.approval.intersection(needs).is_empty(),
                action: &approval_action,
                resource: &resource,
                args: &args,
                summary: &summary,
            },
            address: None,
            sealed: Target {
                handle: handle.clone(),
                paths: checked,
                resolved,
            },
        };
        let pass = match self.gate.pass(call).await? {
            Ok(pass) => pass,
            Err(d) => {
                let code = match (d.rule, bad_path, &resolve_error) {
                    ("fs.size", _, _) => ErrorCode::TooLarge,
                    ("fs.path", Some(e), _) if !e.is_escape() => ErrorCode::InvalidPath,
                    ("fs.resolve", _, Some(e)) => io_error(e).code,
                    _ => ErrorCode::Denied,
                };
                return Ok(Err(error(code, d.reason)));
            }
        };
        let target = pass.sealed();
        // The gate passes a call only when every path passed the check and
        // resolved; a call that got here otherwise is a host bug, which
        // traps.
        if target.resolved.len() != target.paths.len() {
            return Err(wasmtime::Error::msg(
                "fs: an unresolved path passed the gate",
            ));
        }
        match op(&target.handle.dir, &target.resolved, limit) {
            Ok(v) => {
                // Where the writes went, as the policy was asked about them:
                // each path resolved (a link's alias does not dodge a
                // history rule) and, with a policy, each path beneath a
                // directory renamed.
                let remember = |t: &Target<'_>, did: &mut Did| {
                    if needs.has(Right::Write) {
                        for p in &asked {
                            did.wrote(format!("{}:{p}", t.handle.name));
                        }
                    }
                };
                self.gate.done(pass, remember)?;
                Ok(Ok(v))
            }
            Err(e)
                if is_escape(&e)
                    || resolve::Refusal::of(&e).is_some()
                    || e.raw_os_error() == Some(libc::ELOOP) =>
            {
                let d = match resolve::Refusal::of(&e) {
                    Some(r) => Decision::deny(r.rule, r.reason.clone()),
                    // The final open follows no link; the path resolved to
                    // no link when decided: one was swapped in since.
                    None if !is_escape(&e) => Decision::deny(
                        "fs.sandbox",
                        if subtree {
                            // A tree is removed or walked a part at a time.
                            "a symlink was put in a path's place after the call was decided: the call stopped there, after what it had done before it"
                        } else {
                            "a symlink was put in the path's place after the call was decided: nothing was done"
                        }
                        .into(),
                    ),
                    None => Decision::deny(
                        "fs.sandbox",
                        "path leads outside the handle (through a symlink)".into(),
                    ),
                };
                self.gate.refused(pass, &d)?;
                Ok(Err(error(ErrorCode::Denied, d.reason)))
            }
            Err(e) => {
                let err = io_error(&e);
                // A change that failed may have been half made (a file
                // truncated, part of a tree removed): the trail says so.
                let changes = needs.has(Right::Write) || needs.has(Right::Delete);
                self.gate.failed(pass, &err.message, changes)?;
                Ok(Err(err))
            }
        }
    }
}

fn digest(contents: &[u8]) -> String {
    let hash = <sha2::Sha256 as sha2::Digest>::digest(contents);
    format!("sha256 {}", hex::encode(hash))
}

/// A call on one path with no arguments beyond it.
fn too_large(limit: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::FileTooLarge,
        format!("more than the host call limit of {limit} bytes"),
    )
}

impl Host for FsView<'_> {
    async fn open(&mut self, name: String) -> FsResult<Resource<OpenDir>> {
        // Opening a granted handle is not itself an action on anything;
        // each operation through it passes the gate. An unknown name is a
        // denied call.
        if let Some(handle) = self.ctx.handles.get(&name).cloned() {
            return Ok(Ok(self.table.push(OpenDir { handle })?));
        }
        let d = self
            .gate
            .refuse("fs", "open", &name, check::decide_open(&name, false))
            .await?;
        Ok(Err(error(ErrorCode::Denied, d.reason)))
    }

    async fn handles(&mut self) -> wasmtime::Result<Vec<HandleInfo>> {
        Ok(self
            .ctx
            .handles
            .values()
            .map(|h| HandleInfo {
                name: h.name.clone(),
                rights: wit_rights(h.rights),
            })
            .collect())
    }
}

impl HostDir for FsView<'_> {
    async fn rights(&mut self, dir: Resource<OpenDir>) -> wasmtime::Result<wit::Rights> {
        Ok(wit_rights(self.handle(&dir)?.rights))
    }

    async fn read(&mut self, dir: Resource<OpenDir>, path: String) -> FsResult<Vec<u8>> {
        let call = simple("read", vec![&path], Rights::READ);
        self.run(dir, call, |root, r, limit| {
            let mut file = r[0].open_file(root, OpenOptions::new().read(true))?;
            if file.metadata()?.len() > limit as u64 {
                return Err(too_large(limit));
            }
            let mut buf = Vec::new();
            (&mut file).take(limit as u64 + 1).read_to_end(&mut buf)?;
            if buf.len() > limit {
                return Err(too_large(limit));
            }
            Ok(buf)
        })
        .await
    }

    async fn list(&mut self, dir: Resource<OpenDir>, path: String) -> FsResult<Vec<DirEntry>> {
        let call = simple("list", vec![&path], Rights::READ);
        self.run(dir, call, |root, r, limit| {
            let mut entries = Vec::new();
            let mut bytes = 0;
            let dir = r[0].open_dir(root)?;
            for e in dir.entries()? {
                let e = e?;
                let name = e.file_name().to_string_lossy().into_owned();
                // What an entry costs the host: its name, and the entry
                // with the name's allocation (as the vector of them grows).
                bytes += name.len() + 2 * std::mem::size_of::<DirEntry>() + 16;
                if bytes > limit {
                    return Err(too_large(limit));
                }
                entries.push(DirEntry {
                    name,
                    kind: kind_of(tree::entry_type(&dir, &e)?),
                });
            }
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(entries)
        })
        .await
    }

    async fn stat(&mut self, dir: Resource<OpenDir>, path: String) -> FsResult<Metadata> {
        let call = simple("stat", vec![&path], Rights::READ);
        self.run(dir, call, |root, r, _| {
            let m = match r[0].name() {
                None => root.dir_metadata()?,
                Some(name) => r[0].dir(root).symlink_metadata(name)?,
            };
            let modified = m
                .modified()
                .ok()
                .and_then(|t| t.into_std().duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs());
            Ok(Metadata {
                kind: kind_of(m.file_type()),
                size: m.len(),
                modified,
            })
        })
        .await
    }

    async fn write(
        &mut self,
        dir: Resource<OpenDir>,
        path: String,
        contents: Vec<u8>,
    ) -> FsResult<()> {
        let call = Call {
            bytes: contents.len(),
            args: digest(&contents),
            preview: &contents,
            ..simple("write", vec![&path], Rights::WRITE)
        };
        self.run(dir, call, |root, r, _| {
            let mut options = OpenOptions::new();
            match r[0].kind {
                None => options.write(true).create_new(true),
                Some(_) => options.write(true).create(true).truncate(true),
            };
            let mut f = r[0]
                .open_file(root, &mut options)
                .map_err(|e| resolve::since(e, &r[0], root))?;
            std::io::Write::write_all(&mut f, &contents)
        })
        .await
    }

    async fn append(
        &mut self,
        dir: Resource<OpenDir>,
        path: String,
        contents: Vec<u8>,
    ) -> FsResult<()> {
        let call = Call {
            bytes: contents.len(),
            args: digest(&contents),
            preview: &contents,
            ..simple("append", vec![&path], Rights::WRITE)
        };
        self.run(dir, call, |root, r, _| {
            let mut f = r[0].open_file(root, OpenOptions::new().append(true).create(true))?;
            std::io::Write::write_all(&mut f, &contents)
        })
        .await
    }

    async fn create_dir(&mut self, dir: Resource<OpenDir>, path: String) -> FsResult<()> {
        let call = simple("create-dir", vec![&path], Rights::WRITE);
        self.run(dir, call, |root, r, _| {
            // Each missing component is made and then opened (no symlink
            // followed) in the directory made before it.
            let mut cur: Option<Dir> = None;
            for name in &r[0].names {
                let parent = cur.as_ref().unwrap_or(r[0].dir(root));
                match parent.create_dir(name) {
                    Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                    _ => {}
                }
                cur = Some(resolve::open_dir_nofollow(parent, name)?);
            }
            Ok(())
        })
        .await
    }

    async fn truncate(&mut self, dir: Resource<OpenDir>, path: String, size: u64) -> FsResult<()> {
        let call = Call {
            bytes: usize::try_from(size).unwrap_or(usize::MAX),
            args: format!("to {size} bytes"),
            ..simple("truncate", vec![&path], Rights::WRITE)
        };
        self.run(dir, call, |root, r, _| {
            r[0].open_file(root, OpenOptions::new().write(true))?
                .set_len(size)
        })
        .await
    }

    async fn remove_file(&mut self, dir: Resource<OpenDir>, path: String) -> FsResult<()> {
        let call = simple("remove-file", vec![&path], Rights::DELETE);
        self.run(dir, call, |root, r, _| {
            r[0].dir(root).remove_file(r[0].name().unwrap_or("."))
        })
        .await
    }

    async fn remove_dir(
        &mut self,
        dir: Resource<OpenDir>,
        path: String,
        recursive: bool,
    ) -> FsResult<()> {
        // Shown to an approver and bound by the digest: `remove-dir build`
        // alone reads as removing an empty directory.
        let call = Call {
            subtree: recursive,
            args: if recursive {
                "recursive: with everything in it".into()
            } else {
                String::new()
            },
            ..simple("remove-dir", vec![&path], Rights::DELETE)
        };
        let deadline = self.gate.deadline();
        self.run(dir, call, |root, r, _| {
            let (parent, name) = (r[0].dir(root), r[0].name().unwrap_or("."));
            if recursive {
                tree::remove_tree(parent, name, &r[0].path, deadline)
            } else {
                parent.remove_dir(name)
            }
        })
        .await
    }

    async fn rename(&mut self, dir: Resource<OpenDir>, from: String, to: String) -> FsResult<()> {
        let call = Call {
            subtree: true,
            ..simple("rename", vec![&from, &to], Rights::WRITE | Rights::DELETE)
        };
        let deadline = self.gate.deadline();
        self.run(dir, call, |root, r, _| {
            let (from, to) = (&r[0], &r[1]);
            tree::links_stay_inside(root, from, to, deadline)?;
            let names = (from.name().unwrap_or("."), to.name().unwrap_or("."));
            if to.kind.is_some() {
                return from.dir(root).rename(names.0, to.dir(root), names.1);
            }
            // Nothing was there when decided: nothing is replaced.
            use rustix::fs::{RenameFlags, renameat_with};
            let flags = RenameFlags::NOREPLACE;
            match renameat_with(from.dir(root), names.0, to.dir(root), names.1, flags) {
                // A file system without it (NFS, some FUSE): looked at,
                // then renamed (a name made between the two is replaced).
                Err(rustix::io::Errno::INVAL) => match to.dir(root).symlink_metadata(names.1) {
                    Ok(_) => Err(io::ErrorKind::AlreadyExists.into()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        from.dir(root).rename(names.0, to.dir(root), names.1)
                    }
                    Err(e) => Err(e),
                },
                done => done.map_err(io::Error::from),
            }
            .map_err(|e| resolve::since(e, to, root))
        })
        .await
    }

    async fn drop(&mut self, dir: Resource<OpenDir>) -> wasmtime::Result<()> {
        self.table.delete(dir)?;
        Ok(())
    }
}
