//! Host side of `warden:tool/fs`: each operation's path check, rights and
//! size go to the gate as its built-in decision; what passes runs through
//! the handle's `Dir`.

use super::check::{self, FsRequest};
use super::path::{self, CheckedPath, PathError};
use super::{FsView, GrantedHandle, OpenDir};
use crate::bindings::warden::tool::fs::{
    self as wit, DirEntry, EntryKind, ErrorCode, HandleInfo, Host, HostDir, Metadata,
};
use crate::policy::cedar::Resource as Subject;
use crate::policy::gate::{Approval, Ask, HostCall};
use crate::policy::{Decision, TaskHistory};
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

/// What an fs operation needs, sealed into its host call: the handle and
/// the call's checked paths.
struct Target<'p> {
    handle: Arc<GrantedHandle>,
    paths: Vec<Result<CheckedPath<'p>, PathError>>,
}

impl FsView<'_> {
    fn handle(&self, dir: &Resource<OpenDir>) -> wasmtime::Result<Arc<GrantedHandle>> {
        Ok(self.table.get(dir)?.handle.clone())
    }

    /// Runs one operation through the gate.
    async fn run<T>(
        &mut self,
        dir: Resource<OpenDir>,
        action: &'static str,
        paths: &[&str],
        needs: Rights,
        bytes: usize,
        op: impl FnOnce(&Dir, &[CheckedPath<'_>], usize) -> io::Result<T>,
    ) -> FsResult<T> {
        self.run_args(dir, action, paths, needs, bytes, String::new(), op)
            .await
    }

    /// Runs one operation through the gate; `args` are its canonical
    /// arguments beyond the paths (e.g. a content digest), for approvals.
    #[allow(clippy::too_many_arguments)]
    async fn run_args<T>(
        &mut self,
        dir: Resource<OpenDir>,
        action: &'static str,
        paths: &[&str],
        needs: Rights,
        bytes: usize,
        args: String,
        op: impl FnOnce(&Dir, &[CheckedPath<'_>], usize) -> io::Result<T>,
    ) -> FsResult<T> {
        let handle = self.handle(&dir)?;
        let limit = self.gate.hostcall_limit();
        let checked: Vec<_> = paths.iter().map(|p| path::check(p)).collect();
        let check = check::decide(&FsRequest {
            handle: &handle.name,
            action,
            paths: &checked,
            held: handle.rights,
            needs,
            bytes,
            limit,
        });
        let bad_path = checked.iter().find_map(|p| p.err());
        // Runtime policy sees each path resolved through symlinks inside
        // the handle, so a link cannot dodge a path rule.
        let resolved: Vec<(String, String)> = if check.allow && self.gate.has_policy() {
            checked
                .iter()
                .filter_map(|p| p.as_ref().ok())
                .map(|p| resolved(&handle, p.as_str()))
                .collect()
        } else {
            Vec::new()
        };
        let asks = resolved
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
        let resource = format!("{}:{}", handle.name, paths.join(" -> "));
        let approval_action = format!("fs.{action}");
        let summary = || {
            let mut s = format!(
                "{action} {} on handle '{}'",
                paths.join(" -> "),
                handle.name
            );
            if !args.is_empty() {
                s.push_str(&format!(" ({bytes} bytes, {args})"));
            }
            s
        };
        let call = HostCall {
            capability: "fs",
            action,
            resource: &resource,
            check,
            asks,
            approval: Approval {
                required: !handle.approval.intersection(needs).is_empty(),
                action: &approval_action,
                resource: &resource,
                args: &args,
                summary: &summary,
                can_wait: true,
            },
            address: None,
            sealed: Target {
                handle: handle.clone(),
                paths: checked,
            },
        };
        let pass = match self.gate.pass(call).await? {
            Ok(pass) => pass,
            Err(d) => {
                let code = match (d.rule, bad_path) {
                    ("fs.size", _) => ErrorCode::TooLarge,
                    ("fs.path", Some(e)) if !e.is_escape() => ErrorCode::InvalidPath,
                    _ => ErrorCode::Denied,
                };
                return Ok(Err(error(code, d.reason)));
            }
        };
        let target = pass.sealed();
        // The gate passes a call only when every path passed the check; a
        // call that got here otherwise is a host bug, which traps.
        let paths: Vec<CheckedPath<'_>> = target
            .paths
            .iter()
            .map(|p| p.ok())
            .collect::<Option<_>>()
            .ok_or_else(|| wasmtime::Error::msg("fs: an unchecked path passed the gate"))?;
        match op(&target.handle.dir, &paths, limit) {
            Ok(v) => {
                let remember = |t: &Target<'_>, h: &mut TaskHistory| {
                    if needs.has(Right::Write) {
                        for p in t.paths.iter().flatten() {
                            let file = format!("{}:{}", t.handle.name, p.as_str());
                            TaskHistory::note(&mut h.files_written, &file);
                        }
                    }
                };
                self.gate.done(pass, remember)?;
                Ok(Ok(v))
            }
            Err(e) if is_escape(&e) => {
                let d = Decision::deny(
                    "fs.sandbox",
                    "path leads outside the handle (through a symlink)".into(),
                );
                self.gate.refused(pass, &d)?;
                Ok(Err(error(ErrorCode::Denied, d.reason)))
            }
            Err(e) => {
                let err = io_error(&e);
                self.gate.failed(pass, &err.message)?;
                Ok(Err(err))
            }
        }
    }
}

/// `path` inside the handle with symlinks resolved (the parent's, when
/// `path` does not exist yet), and the host path it names; the path itself
/// when it cannot be resolved, which the sandbox then refuses anyway.
fn resolved(handle: &GrantedHandle, path: &str) -> (String, String) {
    let path = resolve(&handle.dir, path);
    let host_path = if path == "." {
        handle.path.clone()
    } else {
        handle.path.join(&path)
    };
    let host_path = host_path.to_string_lossy().into_owned();
    (path, host_path)
}

/// `path` inside `dir` with symlinks resolved (the parent's, when `path`
/// does not exist yet); the path itself when it cannot be resolved, which
/// the sandbox then refuses anyway.
fn resolve(dir: &Dir, path: &str) -> String {
    let relative = |p: std::path::PathBuf| {
        let s = p.to_string_lossy().into_owned();
        if s.is_empty() { ".".to_owned() } else { s }
    };
    if path == "." {
        return path.to_owned();
    }
    if let Ok(p) = dir.canonicalize(path) {
        return relative(p);
    }
    let (parent, name) = path.rsplit_once('/').unwrap_or((".", path));
    match dir.canonicalize(parent).map(relative) {
        Ok(p) if p == "." => name.to_owned(),
        Ok(p) => format!("{p}/{name}"),
        Err(_) => path.to_owned(),
    }
}

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
        self.run(dir, "read", &[&path], Rights::READ, 0, |d, p, limit| {
            let mut file = d.open(p[0].as_str())?;
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
        self.run(dir, "list", &[&path], Rights::READ, 0, |d, p, limit| {
            let mut entries = Vec::new();
            let mut bytes = 0;
            for e in d.read_dir(p[0].as_str())? {
                let e = e?;
                let name = e.file_name().to_string_lossy().into_owned();
                bytes += name.len() + 8;
                if bytes > limit {
                    return Err(too_large(limit));
                }
                entries.push(DirEntry {
                    name,
                    kind: kind_of(e.file_type()?),
                });
            }
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(entries)
        })
        .await
    }

    async fn stat(&mut self, dir: Resource<OpenDir>, path: String) -> FsResult<Metadata> {
        self.run(dir, "stat", &[&path], Rights::READ, 0, |d, p, _| {
            let m = if p[0].is_root() {
                d.dir_metadata()?
            } else {
                d.symlink_metadata(p[0].as_str())?
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
        self.run_args(
            dir,
            "write",
            &[&path],
            Rights::WRITE,
            contents.len(),
            format!(
                "sha256 {}",
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&contents))
            ),
            |d, p, _| d.write(p[0].as_str(), &contents),
        )
        .await
    }

    async fn append(
        &mut self,
        dir: Resource<OpenDir>,
        path: String,
        contents: Vec<u8>,
    ) -> FsResult<()> {
        self.run_args(
            dir,
            "append",
            &[&path],
            Rights::WRITE,
            contents.len(),
            format!(
                "sha256 {}",
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&contents))
            ),
            |d, p, _| {
                let mut f =
                    d.open_with(p[0].as_str(), OpenOptions::new().append(true).create(true))?;
                std::io::Write::write_all(&mut f, &contents)
            },
        )
        .await
    }

    async fn create_dir(&mut self, dir: Resource<OpenDir>, path: String) -> FsResult<()> {
        self.run(dir, "create-dir", &[&path], Rights::WRITE, 0, |d, p, _| {
            d.create_dir_all(p[0].as_str())
        })
        .await
    }

    async fn truncate(&mut self, dir: Resource<OpenDir>, path: String, size: u64) -> FsResult<()> {
        let bytes = usize::try_from(size).unwrap_or(usize::MAX);
        self.run(
            dir,
            "truncate",
            &[&path],
            Rights::WRITE,
            bytes,
            |d, p, _| {
                d.open_with(p[0].as_str(), OpenOptions::new().write(true))?
                    .set_len(size)
            },
        )
        .await
    }

    async fn remove_file(&mut self, dir: Resource<OpenDir>, path: String) -> FsResult<()> {
        self.run(
            dir,
            "remove-file",
            &[&path],
            Rights::DELETE,
            0,
            |d, p, _| d.remove_file(p[0].as_str()),
        )
        .await
    }

    async fn remove_dir(
        &mut self,
        dir: Resource<OpenDir>,
        path: String,
        recursive: bool,
    ) -> FsResult<()> {
        self.run(dir, "remove-dir", &[&path], Rights::DELETE, 0, |d, p, _| {
            if recursive {
                d.remove_dir_all(p[0].as_str())
            } else {
                d.remove_dir(p[0].as_str())
            }
        })
        .await
    }

    async fn rename(&mut self, dir: Resource<OpenDir>, from: String, to: String) -> FsResult<()> {
        self.run(
            dir,
            "rename",
            &[&from, &to],
            Rights::WRITE | Rights::DELETE,
            0,
            |d, p, _| d.rename(p[0].as_str(), d, p[1].as_str()),
        )
        .await
    }

    async fn drop(&mut self, dir: Resource<OpenDir>) -> wasmtime::Result<()> {
        self.table.delete(dir)?;
        Ok(())
    }
}
