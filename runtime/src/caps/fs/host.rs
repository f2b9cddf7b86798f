//! Host side of `warden:tool/fs`: path check, policy decision and audit
//! before every operation, then the operation through the handle's `Dir`.

use super::path::{self, CheckedPath, PathError};
use super::{GrantedHandle, OpenDir};
use crate::bindings::warden::tool::fs::{
    self as wit, DirEntry, EntryKind, ErrorCode, HandleInfo, Host, HostDir, Metadata,
};
use crate::policy::cedar::Resource as Subject;
use crate::policy::{Decision, FsRequest, TaskHistory};
use crate::rights::{Right, Rights};
use crate::state::HostState;
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

/// One fs call on its way through the gate.
struct Call<'a> {
    handle: Arc<GrantedHandle>,
    action: &'static str,
    resource: String,
    paths: Vec<Result<CheckedPath<'a>, PathError>>,
    needs: Rights,
    bytes: usize,
}

impl HostState {
    fn handle(&self, dir: &Resource<OpenDir>) -> wasmtime::Result<Arc<GrantedHandle>> {
        Ok(self.table.get(dir)?.handle.clone())
    }

    fn call<'a>(
        &self,
        dir: &Resource<OpenDir>,
        action: &'static str,
        paths: &[&'a str],
        needs: Rights,
    ) -> wasmtime::Result<Call<'a>> {
        let handle = self.handle(dir)?;
        let resource = format!("{}:{}", handle.name, paths.join(" -> "));
        Ok(Call {
            handle,
            action,
            resource,
            paths: paths.iter().map(|p| path::check(p)).collect(),
            needs,
            bytes: 0,
        })
    }

    /// Asks the runtime policy about each path and right of an allowed
    /// call; true when it asks for approval. Paths are resolved through
    /// symlinks inside the handle, so a link cannot dodge a path rule.
    fn fs_policy(&self, call: &Call<'_>, d: &mut Decision) -> bool {
        let Some(rules) = &self.rules else {
            return false;
        };
        let h = &call.handle;
        let mut approval = false;
        for p in call.paths.iter().filter_map(|p| p.as_ref().ok()) {
            let path = resolve(&h.dir, p.as_str());
            let host_path = if path == "." {
                h.path.clone()
            } else {
                h.path.join(&path)
            };
            let host_path = host_path.to_string_lossy();
            for right in call.needs.iter() {
                let resource = Subject::Path {
                    handle: &h.name,
                    path: &path,
                    host_path: &host_path,
                    labels: &h.labels,
                };
                approval |= rules.consult(d, &format!("fs::{right}"), call.action, resource);
                if !d.allow {
                    return false;
                }
            }
        }
        approval
    }

    /// Decides and audits a call; `Ok(Ok(true))` when the runtime policy
    /// asks for approval. `Ok(Err(_))` is a denial for the guest;
    /// `Err(_)` (the audit could not be written) traps.
    fn gate(&mut self, call: &Call<'_>) -> FsResult<bool> {
        let mut decision = self.policy.decide_fs(&FsRequest {
            handle: &call.handle.name,
            action: call.action,
            paths: &call.paths,
            held: call.handle.rights,
            needs: call.needs,
        });
        if decision.allow && call.bytes > self.hostcall_limit {
            decision = Decision::deny(
                "fs.size",
                format!(
                    "{} bytes exceed the host call limit of {} bytes",
                    call.bytes, self.hostcall_limit
                ),
            );
        }
        let approval = decision.allow && self.fs_policy(call, &mut decision);
        self.audit_decision(call, &decision)?;
        if decision.allow {
            return Ok(Ok(approval));
        }
        let code = match (decision.rule, call.paths.iter().find_map(|p| p.err())) {
            ("fs.size", _) => ErrorCode::TooLarge,
            ("fs.path", Some(e)) if !e.is_escape() => ErrorCode::InvalidPath,
            _ => ErrorCode::Denied,
        };
        Ok(Err(error(code, decision.reason)))
    }

    fn audit_decision(&mut self, call: &Call<'_>, d: &Decision) -> wasmtime::Result<()> {
        let r = self.audit.decision("fs", call.action, &call.resource, d);
        if !d.allow {
            tracing::debug!(tool = %self.audit.tool, resource = %call.resource, "denied: {}", d.reason);
        }
        self.write_audit(&r)
    }

    /// Maps the operation's result; a cap-std escape refusal is audited as a
    /// denial by the sandbox.
    fn finish<T>(&mut self, call: &Call<'_>, result: io::Result<T>) -> FsResult<T> {
        match result {
            Ok(v) => Ok(Ok(v)),
            Err(e) if is_escape(&e) => {
                let d = Decision::deny(
                    "fs.sandbox",
                    "path leads outside the handle (through a symlink)".into(),
                );
                self.audit_decision(call, &d)?;
                Ok(Err(error(ErrorCode::Denied, d.reason)))
            }
            Err(e) => Ok(Err(io_error(&e))),
        }
    }

    /// Runs one gated operation.
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

    /// Runs one gated operation; `args` are its canonical arguments beyond
    /// the paths (e.g. a content digest), for approval requests.
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
        let mut call = self.call(&dir, action, paths, needs)?;
        call.bytes = bytes;
        let policy_approval = match self.gate(&call)? {
            Ok(a) => a,
            Err(denied) => return Ok(Err(denied)),
        };
        // The gate allows a call only when every path passed the check; a
        // call that got here otherwise is a host bug, which traps.
        let checked: Vec<CheckedPath<'_>> = call
            .paths
            .iter()
            .map(|p| p.ok())
            .collect::<Option<_>>()
            .ok_or_else(|| wasmtime::Error::msg("fs: an unchecked path passed the policy gate"))?;
        if policy_approval || !call.handle.approval.intersection(needs).is_empty() {
            let mut summary = format!(
                "{action} {} on handle '{}'",
                paths.join(" -> "),
                call.handle.name
            );
            if !args.is_empty() {
                summary.push_str(&format!(" ({bytes} bytes, {args})"));
            }
            let verdict = self
                .approve(&format!("fs.{action}"), &call.resource, &args, summary)
                .await?;
            if let Err(reason) = verdict {
                return Ok(Err(error(ErrorCode::Denied, reason)));
            }
        }
        let result = op(&call.handle.dir, &checked, self.hostcall_limit);
        if result.is_ok() && needs.has(Right::Write) {
            self.remember(|h| {
                for p in &checked {
                    TaskHistory::note(
                        &mut h.files_written,
                        &format!("{}:{}", call.handle.name, p.as_str()),
                    );
                }
            });
        }
        self.finish(&call, result)
    }
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

impl Host for HostState {
    async fn open(&mut self, name: String) -> FsResult<Resource<OpenDir>> {
        let handle = self.fs.handles.get(&name).cloned();
        let decision = self.policy.decide_open(&name, handle.is_some());
        match handle {
            // Opening a granted handle is not itself an action on anything;
            // each operation through it is decided and audited.
            Some(handle) => Ok(Ok(self.table.push(OpenDir { handle })?)),
            None => {
                self.write_audit(&self.audit.decision("fs", "open", &name, &decision))?;
                Ok(Err(error(ErrorCode::Denied, decision.reason)))
            }
        }
    }

    async fn handles(&mut self) -> wasmtime::Result<Vec<HandleInfo>> {
        Ok(self
            .fs
            .handles
            .values()
            .map(|h| HandleInfo {
                name: h.name.clone(),
                rights: wit_rights(h.rights),
            })
            .collect())
    }
}

impl HostDir for HostState {
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
