//! [`RuntimeBuilder`]: deny by default, every default in its doc comment.

use super::load::ToolSlot;
use super::{CompileEvent, CompileHook, Inner, InvocationIds, Runtime};
use crate::approval::{Approvals, Approver, DEFAULT_APPROVAL_TIMEOUT, DenyAll};
use crate::audit::{AuditSink, TracingSink};
use crate::caps::identity::{ActiveInvocations, Issuer};
use crate::caps::log::LogLimits;
use crate::engine::{self, CompileCache, EPOCH_TICK};
use crate::error::Error;
use crate::manifest::{Manifest, SignedBy, ToolSpec};
use crate::policy::RuntimePolicy;
use crate::rights::Rights;
use crate::source::ComponentSource;
use crate::state::HostState;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OnceCell, Semaphore};
use wasmtime::Engine;
use wasmtime::component::Linker;

/// Builds a [`Runtime`]. Deny by default; the defaults are:
///
/// - no tools until [`manifest`](Self::manifest) or [`tool`](Self::tool);
/// - audit records go to [`TracingSink`] (target `warden::audit`);
/// - no compile cache on disk (components compile once per process), and
///   so no blob cache: an `oci://` component is fetched once per process;
/// - registries may be asked (not [`offline`](Self::offline)), anonymously
///   (no [`registry_credentials`](Self::registry_credentials));
/// - at most 100 invocations run at once (more wait for a slot);
/// - tool stdout and stderr: 64 KiB each, captured, never the host's streams;
/// - input: 1 MiB; data in one host call: 16 MiB;
/// - log: 4 KiB per message, 256 messages per invocation.
///
/// Tools get no preopened directories, environment, arguments, sockets or
/// DNS; only what a grant gives them, through `warden:tool/fs`.
pub struct RuntimeBuilder {
    tools: BTreeMap<String, ToolSpec>,
    manifest_path: Option<PathBuf>,
    /// Every manifest given, for what no writable ceiling may hold.
    manifests: Vec<PathBuf>,
    /// What was given twice (a tool's name, a set of policies): refused
    /// at build, since the second would replace the first unseen.
    twice: Vec<String>,
    audit: Arc<dyn AuditSink>,
    cache_dir: Option<PathBuf>,
    /// Host paths no fs ceiling may hold (see [`RuntimeBuilder::keep_out`]).
    kept_out: Vec<(PathBuf, String)>,
    /// Files no writable fs ceiling may hold (see
    /// [`RuntimeBuilder::trust_file`]).
    trusted: Vec<(PathBuf, String)>,
    max_concurrent: u32,
    stdio_limit: usize,
    max_input: usize,
    hostcall_limit: usize,
    log_limits: LogLimits,
    on_compile: Option<CompileHook>,
    identity: Option<Arc<Issuer>>,
    approver: Arc<dyn Approver>,
    approval_timeout: Duration,
    rules: Option<Arc<RuntimePolicy>>,
    task_history: Option<Arc<dyn crate::policy::HistoryStore>>,
    ledger: Option<Arc<dyn crate::caps::identity::InvocationLedger>>,
    offline: bool,
    credentials: Option<crate::oci::Credentials>,
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        Self {
            tools: BTreeMap::new(),
            manifest_path: None,
            manifests: Vec::new(),
            twice: Vec::new(),
            audit: Arc::new(TracingSink),
            cache_dir: None,
            kept_out: Vec::new(),
            trusted: Vec::new(),
            max_concurrent: 100,
            stdio_limit: 64 << 10,
            max_input: 1 << 20,
            hostcall_limit: 16 << 20,
            log_limits: LogLimits::default(),
            on_compile: None,
            identity: None,
            approver: Arc::new(DenyAll),
            approval_timeout: DEFAULT_APPROVAL_TIMEOUT,
            rules: None,
            task_history: None,
            ledger: None,
            offline: false,
            credentials: None,
        }
    }
}

impl RuntimeBuilder {
    /// Serves the tools of a manifest.
    ///
    /// Tools from several manifests are served together; a tool named by
    /// two, or a second set of policies, fails [`build`](Self::build).
    pub fn manifest(mut self, manifest: Manifest) -> Self {
        let by = format!(
            "the manifest {}",
            crate::redact::escape_control(&manifest.path.display().to_string())
        );
        for spec in manifest.tools.into_values() {
            self = self.add_tool(spec, &by);
        }
        if let Some(policy) = manifest.policy {
            self = self.add_policy(policy, &by);
        }
        self.manifests.push(manifest.path.clone());
        self.manifest_path = Some(manifest.path);
        self
    }

    fn add_tool(mut self, spec: ToolSpec, by: &str) -> Self {
        if self.tools.contains_key(&spec.name) {
            self.twice.push(format!(
                "tool '{}' is given twice, the second time by {by}: it would replace the first, ceilings and all (expected each tool named once)",
                crate::redact::escape_control(&spec.name)
            ));
        }
        self.tools.insert(spec.name.clone(), spec);
        self
    }

    fn add_policy(mut self, policy: Arc<RuntimePolicy>, by: &str) -> Self {
        if self.rules.is_some() {
            self.twice.push(format!(
                "policies are given twice, the second time by {by}: they would replace the first, and their forbids with them (expected one set: every policy file in one manifest's `policies`)"
            ));
        }
        self.rules = Some(policy);
        self
    }

    /// Cedar policies asked on every host call the manifest allows (a
    /// manifest's `policies` set this too).
    pub fn policy(self, policy: RuntimePolicy) -> Self {
        self.add_policy(Arc::new(policy), "RuntimeBuilder::policy")
    }

    /// Serves one tool.
    pub fn tool(self, spec: ToolSpec) -> Self {
        self.add_tool(spec, "RuntimeBuilder::tool")
    }

    pub fn audit(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.audit = sink;
        self
    }

    /// Never asks a registry: an `oci://` component must be in the blob
    /// cache (`warden pull`), else loading it fails.
    pub fn offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    /// Credentials for registries that need them.
    pub fn registry_credentials(mut self, credentials: crate::oci::Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Keeps compiled components in `dir` (see [`engine::default_cache_dir`]),
    /// and components pulled from registries in `dir/blobs`.
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// A host path no tool's fs ceiling may hold, nor lie inside (the audit
    /// trail, the directory of the signing keys): a tool that could write
    /// there could rewrite the record of what it did, or sign as the host.
    /// `what` names it in the refusal. The compile cache is kept out
    /// without asking: a tool that wrote there would run native code.
    pub fn keep_out(mut self, path: impl Into<PathBuf>, what: &str) -> Self {
        self.kept_out.push((path.into(), what.to_owned()));
        self
    }

    /// A file the host reads to decide what it grants (a grants or agents
    /// file): no fs ceiling that may write or delete may hold it, as for
    /// the manifest (a tool could widen its own grant for the next start).
    /// `what` names it in the refusal.
    pub fn trust_file(mut self, path: impl Into<PathBuf>, what: &str) -> Self {
        self.trusted.push((path.into(), what.to_owned()));
        self
    }

    pub fn max_concurrent_invocations(mut self, n: u32) -> Self {
        self.max_concurrent = n.max(1);
        self
    }

    pub fn stdio_limit(mut self, bytes: usize) -> Self {
        self.stdio_limit = bytes;
        self
    }

    pub fn max_input(mut self, bytes: usize) -> Self {
        self.max_input = bytes;
        self
    }

    pub fn hostcall_limit(mut self, bytes: usize) -> Self {
        self.hostcall_limit = bytes;
        self
    }

    pub fn log_limits(mut self, limits: LogLimits) -> Self {
        self.log_limits = limits;
        self
    }

    /// The key that signs identity tokens (default: a fresh key for this
    /// runtime; see [`Issuer::load_or_create`] for one kept on disk).
    pub fn identity(mut self, issuer: Issuer) -> Self {
        self.identity = Some(Arc::new(issuer));
        self
    }

    /// Answers approval requests for actions the manifest marks
    /// `approval = "required"` (default: [`DenyAll`]).
    pub fn approver(mut self, approver: Arc<dyn Approver>) -> Self {
        self.approver = approver;
        self
    }

    /// Shares task histories (runtime policy's `context.task`) through
    /// `store` with other runtimes, e.g. replicas of a service: each
    /// invocation starts from what the store holds for its task, and what it
    /// noted is stored before its end is recorded. An invocation whose task
    /// history cannot be read does not start; one whose additions cannot be
    /// stored fails (after its end is recorded).
    pub fn task_history(mut self, store: Arc<dyn crate::policy::HistoryStore>) -> Self {
        self.task_history = Some(store);
        self
    }

    /// Answers token introspection also for invocations other runtimes
    /// run (replicas sharing `ledger`), see [`Runtime::introspect_shared`].
    pub fn invocations(mut self, ledger: Arc<dyn crate::caps::identity::InvocationLedger>) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// How long an approval request waits (default 5 minutes; never past
    /// the invocation deadline).
    pub fn approval_timeout(mut self, timeout: Duration) -> Self {
        self.approval_timeout = timeout;
        self
    }

    /// Called when a component starts and finishes compiling (cache misses).
    pub fn on_compile(mut self, hook: impl Fn(CompileEvent) + Send + Sync + 'static) -> Self {
        self.on_compile = Some(Arc::new(hook));
        self
    }

    pub fn build(self) -> Result<Runtime, Error> {
        if let Some(twice) = self.twice.first() {
            return Err(Error::Config(twice.clone()));
        }
        // Each manifest was checked alone; tools from several, or given
        // one by one, are checked together.
        secret_sources_outside_ceilings(&self.tools)?;
        one_secret_per_name(&self.tools)?;
        let cache = self
            .cache_dir
            .iter()
            .map(|d| (d.clone(), "compile cache".to_owned()));
        host_paths_outside_ceilings(cache.chain(self.kept_out.iter().cloned()), &self.tools)?;
        trusted_files_outside_writable_ceilings(&self.trusted_files(), &self.tools)?;
        let host = |e: wasmtime::Error| Error::Host(format!("{e:#}"));
        let engine = engine::build(self.max_concurrent).map_err(host)?;
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(host)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(host)?;
        crate::caps::http::kept::add_to_linker(&mut linker).map_err(host)?;
        crate::caps::add_to_linker(&mut linker).map_err(host)?;
        let cache = match &self.cache_dir {
            Some(dir) => Some(CompileCache::open(dir, &engine).map_err(Error::Config)?),
            None => None,
        };
        spawn_epoch_ticker(&engine);
        let issuer = match self.identity {
            Some(i) => i,
            None => Arc::new(Issuer::ephemeral().map_err(|e| Error::Config(e.to_string()))?),
        };
        let tools = self
            .tools
            .into_iter()
            .map(|(name, spec)| {
                let slot = ToolSlot {
                    spec,
                    loaded: OnceCell::new(),
                };
                (name, slot)
            })
            .collect();
        Ok(Runtime {
            inner: Arc::new(Inner {
                engine,
                linker,
                tools,
                manifest_path: self.manifest_path,
                audit: self.audit,
                cache,
                slots: Semaphore::new(self.max_concurrent as usize),
                rules: self.rules,
                tasks: Default::default(),
                shared_history: self.task_history,
                ledger: self.ledger,
                stdio_limit: self.stdio_limit,
                max_input: self.max_input,
                hostcall_limit: self.hostcall_limit,
                log_limits: self.log_limits,
                on_compile: self.on_compile,
                issuer,
                active: ActiveInvocations::default(),
                ids: InvocationIds::new()?,
                approvals: Arc::new(Approvals::new(self.approver, self.approval_timeout)),
                sources: crate::source::Sources {
                    cache: self.cache_dir.as_deref().map(crate::oci::BlobCache::new),
                    offline: self.offline,
                    credentials: self.credentials,
                },
            }),
        })
    }
}

impl RuntimeBuilder {
    /// The files that say what the host runs and grants, each with what it
    /// is: the manifest, the policy files and their directories (a file
    /// added there is a policy), each file component and its signature,
    /// each signer's key or trust root.
    fn trusted_files(&self) -> Vec<(PathBuf, String)> {
        let mut files = self.trusted.clone();
        files.extend(
            self.manifests
                .iter()
                .map(|p| (p.clone(), "manifest".into())),
        );
        for f in self.rules.iter().flat_map(|r| r.files()) {
            files.push((f.clone(), "policy file".into()));
            let dir = f.parent().filter(|d| !d.as_os_str().is_empty());
            files.extend(dir.map(|d| (d.to_owned(), "policy directory".into())));
        }
        for t in self.tools.values() {
            let name = crate::redact::escape_control(&t.name);
            if let ComponentSource::File(path) = &t.component {
                files.push((path.clone(), format!("component of tool '{name}'")));
            }
            if let Some(sig) = &t.signature {
                files.push((sig.clone(), format!("signature of tool '{name}'")));
            }
            match &t.signed_by {
                Some(SignedBy::Key(k)) => {
                    files.push((k.path.clone(), format!("signing key of tool '{name}'")))
                }
                Some(SignedBy::Identity(k)) => files.push((
                    k.trust_root.path.clone(),
                    format!("trust root of tool '{name}'"),
                )),
                None => {}
            }
        }
        files
    }
}

/// Refuses a tool's fs ceiling with write or delete rights that holds one
/// of the `files` saying what the host runs and grants: a tool granted it
/// could replace another tool's code (which would then run with that
/// tool's secrets and egress), widen its own ceiling in the manifest, or
/// take a policy away, the next time they are read.
fn trusted_files_outside_writable_ceilings(
    files: &[(PathBuf, String)],
    tools: &BTreeMap<String, ToolSpec>,
) -> Result<(), Error> {
    use crate::caps::secrets::manifest::in_ceiling;
    use crate::redact::escape_control;
    let changing = Rights::WRITE.union(Rights::DELETE);
    let writable = || {
        tools.values().flat_map(move |t| {
            (t.fs.iter())
                .filter(move |c| !c.rights.intersection(changing).is_empty())
                .map(move |c| (t.name.as_str(), c.handle.as_str(), c.within.as_path()))
        })
    };
    for (path, what) in files {
        if let Some((tool, handle, within)) = in_ceiling(path, writable()) {
            let (tool, handle) = (escape_control(tool), escape_control(handle));
            return Err(Error::Config(format!(
                "the {what} ({}) is inside tool '{tool}''s fs ceiling '{handle}' ({}), which may be written or deleted: a tool granted it could change what the host runs and grants (expected the manifest, its policies, components, signatures and keys outside every fs ceiling with write or delete rights)",
                escape_control(&path.display().to_string()),
                escape_control(&within.display().to_string()),
            )));
        }
    }
    Ok(())
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the engine is gone.
fn spawn_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("warden-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the epoch thread, deadlines rely on timers only: {e}");
    }
}

/// Refuses tools whose secret files or programs lie inside some tool's fs
/// ceiling (as `Manifest::parse` does for one manifest's tools).
/// Each host path neither inside a tool's fs ceiling nor holding one.
fn host_paths_outside_ceilings(
    paths: impl Iterator<Item = (PathBuf, String)>,
    tools: &BTreeMap<String, ToolSpec>,
) -> Result<(), Error> {
    use crate::caps::secrets::manifest::in_ceiling;
    for (path, what) in paths {
        let inside = in_ceiling(&path, crate::manifest::ceilings(tools)).or_else(|| {
            crate::manifest::ceilings(tools)
                .find(|&(_, _, within)| in_ceiling(within, [("", "", path.as_path())]).is_some())
        });
        if let Some((tool, handle, within)) = inside {
            return Err(Error::Config(format!(
                "tool '{tool}''s fs ceiling '{handle}' ({}) and the {what} ({}) overlap: a tool that can write there could change what the host trusts (expected the {what} outside every fs ceiling)",
                within.display(),
                path.display()
            )));
        }
    }
    Ok(())
}

fn secret_sources_outside_ceilings(tools: &BTreeMap<String, ToolSpec>) -> Result<(), Error> {
    use crate::caps::secrets::manifest::{in_ceiling, source_locations};
    for t in tools.values() {
        for s in &t.secrets {
            let Some((paths, what)) = source_locations(&s.source, None) else {
                continue;
            };
            for path in paths {
                if let Some((tool, handle, _)) = in_ceiling(&path, crate::manifest::ceilings(tools))
                {
                    return Err(Error::Config(format!(
                        "tool '{}': the {what} of secret '{}' ({}) is inside tool '{tool}''s fs \
                         ceiling '{handle}' (expected secret files and programs outside every fs ceiling)",
                        t.name,
                        s.name,
                        path.display()
                    )));
                }
            }
        }
    }
    Ok(())
}

/// A secret's name is one secret across every tool, however they were
/// given (`caps::secrets::manifest::one_per_name`).
fn one_secret_per_name(tools: &BTreeMap<String, ToolSpec>) -> Result<(), Error> {
    use crate::caps::secrets::manifest::{differs, not_one};
    let mut first: BTreeMap<&str, (&str, &crate::caps::secrets::SecretSpec)> = BTreeMap::new();
    for t in tools.values() {
        for s in &t.secrets {
            match first.get(s.name.as_str()) {
                Some((other, was)) if differs(was, s) => {
                    let why = not_one(&s.name, other);
                    return Err(Error::Config(format!("tool '{}': {why}", t.name)));
                }
                Some(_) => {}
                None => {
                    first.insert(&s.name, (&t.name, s));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "builder_tests.rs"]
mod tests;
