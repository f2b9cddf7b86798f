//! The runtime: loads tools from a manifest and runs invocations under grants.

use crate::approval::{Approvals, Approver, DEFAULT_APPROVAL_TIMEOUT, DenyAll};
use crate::audit::{AuditSink, Auditor, Event, TracingSink};
use crate::bindings::ToolPre;
use crate::bindings::exports::warden::tool::guest;
use crate::caps::deploy::DeployTarget;
use crate::caps::fs::{self, Ceilings, FsCtx};
use crate::caps::http::egress::Egress;
use crate::caps::http::{self, EgressRule};
use crate::caps::identity::{ActiveInvocations, Claims, Introspection, Issuer, Minter, Verifier};
use crate::caps::log::{LogLimits, LogState};
use crate::caps::secrets::{self, SecretSpec};
use crate::caps::stdio::{CappedPipe, OutputFlood};
use crate::engine::{self, CompileCache, EPOCH_TICK};
use crate::error::{Error, LimitExceeded};
use crate::grant::{Grant, GrantError, check_task};
use crate::identity::Identity;
use crate::manifest::{Manifest, ToolSpec};
use crate::policy::cedar::ToolFacts;
use crate::policy::gate::{AuditFailed, Gate};
use crate::policy::{PolicyCtx, RuntimePolicy, TaskHistory};
use crate::redact::Redactor;
use crate::rights::Rights;
use crate::state::{Authority, HostState, MemoryExceeded, MemoryLimiter};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OnceCell, Semaphore};
use wasmtime::component::Linker;
use wasmtime::{Engine, Store, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;

/// Progress of a first-time compile, for progress indicators.
#[derive(Debug, Clone)]
pub enum CompileEvent {
    Started {
        tool: String,
        identity: Identity,
    },
    Finished {
        tool: String,
        identity: Identity,
        elapsed: Duration,
    },
}

type CompileHook = Arc<dyn Fn(CompileEvent) + Send + Sync>;

/// Builds a [`Runtime`]. Deny by default; the defaults are:
///
/// - no tools until [`manifest`](Self::manifest) or [`tool`](Self::tool);
/// - audit records go to [`TracingSink`] (target `warden::audit`);
/// - no compile cache on disk (components compile once per process);
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
    audit: Arc<dyn AuditSink>,
    cache_dir: Option<PathBuf>,
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
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        Self {
            tools: BTreeMap::new(),
            manifest_path: None,
            audit: Arc::new(TracingSink),
            cache_dir: None,
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
        }
    }
}

impl RuntimeBuilder {
    /// Serves the tools of a manifest.
    pub fn manifest(mut self, manifest: Manifest) -> Self {
        self.manifest_path = Some(manifest.path.clone());
        self.tools.extend(manifest.tools);
        if manifest.policy.is_some() {
            self.rules = manifest.policy;
        }
        self
    }

    /// Cedar policies asked on every host call the manifest allows (a
    /// manifest's `policies` set this too).
    pub fn policy(mut self, policy: RuntimePolicy) -> Self {
        self.rules = Some(Arc::new(policy));
        self
    }

    /// Serves one tool.
    pub fn tool(mut self, spec: ToolSpec) -> Self {
        self.tools.insert(spec.name.clone(), spec);
        self
    }

    pub fn audit(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.audit = sink;
        self
    }

    /// Keeps compiled components in `dir` (see [`engine::default_cache_dir`]).
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
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
        let host = |e: wasmtime::Error| Error::Host(format!("{e:#}"));
        let engine = engine::build(self.max_concurrent).map_err(host)?;
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(host)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(host)?;
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
                stdio_limit: self.stdio_limit,
                max_input: self.max_input,
                hostcall_limit: self.hostcall_limit,
                log_limits: self.log_limits,
                on_compile: self.on_compile,
                issuer,
                active: ActiveInvocations::default(),
                ids: InvocationIds::new()?,
                approvals: Arc::new(Approvals::new(self.approver, self.approval_timeout)),
            }),
        })
    }
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

/// Runs tools. Cheap to clone; every clone shares the engine, the compiled
/// tools and the audit sink. Invocations may run concurrently from many tasks.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<HostState>,
    tools: BTreeMap<String, ToolSlot>,
    manifest_path: Option<PathBuf>,
    audit: Arc<dyn AuditSink>,
    cache: Option<CompileCache>,
    slots: Semaphore,
    /// Cedar policies asked on every host call the manifest allows.
    rules: Option<Arc<RuntimePolicy>>,
    /// What each task has done so far, for runtime policy.
    tasks: std::sync::Mutex<HashMap<Arc<str>, Arc<std::sync::Mutex<TaskHistory>>>>,
    stdio_limit: usize,
    max_input: usize,
    hostcall_limit: usize,
    log_limits: LogLimits,
    on_compile: Option<CompileHook>,
    issuer: Arc<Issuer>,
    active: ActiveInvocations,
    ids: InvocationIds,
    approvals: Arc<Approvals>,
}

/// UUIDv7 invocation ids: the time in milliseconds, then a per-runtime random
/// seed mixed with a counter, so ids are unique and time-ordered without a
/// call for fresh randomness on every invocation.
struct InvocationIds {
    seed: [u8; 10],
    counter: std::sync::atomic::AtomicU64,
}

impl InvocationIds {
    fn new() -> Result<Self, Error> {
        let mut seed = [0u8; 10];
        getrandom::fill(&mut seed)
            .map_err(|e| Error::Config(format!("no randomness for ids: {e}")))?;
        Ok(Self {
            seed,
            counter: Default::default(),
        })
    }

    fn next(&self) -> String {
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut tail = self.seed;
        for (b, c) in tail[2..].iter_mut().zip(n.to_be_bytes()) {
            *b ^= c;
        }
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        uuid::Builder::from_unix_timestamp_millis(ms, &tail)
            .into_uuid()
            .to_string()
    }
}

struct ToolSlot {
    spec: ToolSpec,
    loaded: OnceCell<Arc<LoadedTool>>,
}

/// A compiled, linked tool, ready to instantiate.
struct LoadedTool {
    spec: ToolSpec,
    identity: Identity,
    /// The tool's name and `identity` as text, computed once.
    name: Arc<str>,
    identity_str: Arc<str>,
    pre: ToolPre<HostState>,
    ceilings: Ceilings,
    /// The tool as runtime policy sees it.
    facts: Arc<ToolFacts>,
}

/// Per-call options of [`Runtime::invoke_with`].
#[derive(Default, Clone)]
pub struct InvokeOptions {
    /// Answers this call's approval requests instead of the runtime's
    /// approver (e.g. the MCP client that made the call).
    pub approver: Option<Arc<dyn Approver>>,
    /// Cancelling it ends the invocation: the tool is stopped, its secrets
    /// expire and the audit records the outcome `cancelled`.
    pub cancel: Option<tokio_util::sync::CancellationToken>,
}

/// What a tool says about itself (`describe`).
#[derive(Debug, Clone, Serialize)]
pub struct ToolInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    pub identity: String,
    pub input_schema: serde_json::Value,
    pub output_schema: Option<serde_json::Value>,
    pub handles: Vec<HandleSpec>,
}

/// A handle a tool expects, from its `describe`.
#[derive(Debug, Clone, Serialize)]
pub struct HandleSpec {
    pub name: String,
    pub rights: Rights,
    pub description: String,
}

/// An error the tool itself returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct ToolError {
    pub kind: ToolErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ToolErrorKind {
    InvalidInput,
    Denied,
    NotFound,
    Failed,
}

impl std::fmt::Display for ToolErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ToolErrorKind::InvalidInput => "invalid-input",
            ToolErrorKind::Denied => "denied",
            ToolErrorKind::NotFound => "not-found",
            ToolErrorKind::Failed => "failed",
        })
    }
}

/// The result of one invocation that ran to completion.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub id: String,
    pub task: String,
    pub tool: String,
    pub identity: Identity,
    /// The tool's JSON output, or the error it returned.
    pub output: Result<String, ToolError>,
    /// Captured stdout and stderr of the tool (bounded).
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub duration: Duration,
}

impl Runtime {
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    /// The tools this runtime serves, by name.
    pub fn tools(&self) -> impl Iterator<Item = &ToolSpec> {
        self.inner.tools.values().map(|s| &s.spec)
    }

    /// Compiles (or loads from the cache) and links a tool; later calls reuse it.
    pub async fn load(&self, tool: &str) -> Result<Identity, Error> {
        Ok(self.loaded(tool).await?.identity.clone())
    }

    async fn loaded(&self, tool: &str) -> Result<Arc<LoadedTool>, Error> {
        let slot = self
            .inner
            .tools
            .get(tool)
            .ok_or_else(|| Error::UnknownTool {
                name: tool.to_owned(),
                known: self
                    .inner
                    .tools
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        slot.loaded
            .get_or_try_init(|| {
                let inner = self.inner.clone();
                let spec = slot.spec.clone();
                async move {
                    tokio::task::spawn_blocking(move || inner.compile(spec))
                        .await
                        .map_err(|e| Error::Host(format!("compile task failed: {e}")))?
                        .map(Arc::new)
                }
            })
            .await
            .cloned()
    }

    /// Runs `tool` once under `grant` with JSON `input`.
    ///
    /// The grant is checked against the tool's manifest ceiling first; a grant
    /// that would have to be narrowed is refused with [`Error::Grant`] before
    /// anything runs or is audited.
    pub async fn invoke(
        &self,
        tool: &str,
        grant: &Grant,
        input: &str,
    ) -> Result<Invocation, Error> {
        self.invoke_with(tool, grant, input, InvokeOptions::default())
            .await
    }

    /// [`invoke`](Self::invoke) with per-call options: who answers its
    /// approval requests, and a token that cancels it.
    pub async fn invoke_with(
        &self,
        tool: &str,
        grant: &Grant,
        input: &str,
        options: InvokeOptions,
    ) -> Result<Invocation, Error> {
        let loaded = self.loaded(tool).await?;
        check_task(&grant.task).map_err(|e| Error::Grant(GrantError::Task(e)))?;
        let fs = fs::authorize(&loaded.spec, &loaded.ceilings, grant)?;
        let secrets = authorize_secrets(&loaded.spec, grant)?;
        let egress = http::authorize(&loaded.spec.name, &loaded.spec.http, &grant.http)?;
        let deploy = authorize_deploy(&loaded.spec, grant)?;
        let granted = Authorized {
            fs,
            secrets,
            egress,
            deploy,
        };
        self.inner
            .run(&loaded, grant, granted, input, options)
            .await
    }

    /// The part of a task's `grant` that `tool` may receive: its handles only,
    /// rights intersected with its ceiling, directories clipped to `within`.
    ///
    /// [`invoke`](Self::invoke) refuses a grant that would have to be narrowed;
    /// a caller running several tools under one task grant narrows it per
    /// tool with this, explicitly.
    pub fn narrow(&self, tool: &str, grant: &Grant) -> Result<Grant, Error> {
        let spec = &self.inner.slot(tool)?.spec;
        let mut narrowed = fs::narrow(spec, grant);
        narrowed.secrets = grant
            .secrets
            .iter()
            .filter(|s| spec.secret_spec(s).is_some())
            .cloned()
            .collect();
        narrowed.http = http::narrow(&spec.http, &grant.http);
        narrowed.deploy = grant
            .deploy
            .iter()
            .filter(|t| spec.deploy_target(t).is_some())
            .cloned()
            .collect();
        narrowed.labels = grant.labels.clone();
        Ok(narrowed)
    }

    /// Finishes audit work the sink deferred (see [`AuditSink::settle`]).
    pub fn settle_audit(&self) {
        self.inner.audit.settle();
    }

    /// The public keys that verify this runtime's identity tokens (JWKS).
    pub fn jwks(&self) -> serde_json::Value {
        self.inner.issuer.jwks()
    }

    /// RFC 7662-style introspection: a token is active only if this runtime
    /// signed it, it has not expired, and its invocation is still running.
    pub fn introspect(&self, token: &str) -> Introspection {
        let verifier = match Verifier::from_jwks(&self.inner.issuer.jwks()) {
            Ok(v) => v,
            Err(e) => return inactive(None, e.to_string()),
        };
        match verifier.verify_any_audience(token) {
            Err(e) => inactive(None, e.to_string()),
            Ok(c) if !self.inner.active.is_active(&c.jti) => {
                inactive(Some(c), "its invocation has ended".into())
            }
            Ok(c) => Introspection {
                active: true,
                claims: Some(c),
                reason: None,
            },
        }
    }

    /// Calls the tool's `describe` export (with an empty grant).
    pub async fn describe(&self, tool: &str) -> Result<ToolInfo, Error> {
        let loaded = self.loaded(tool).await?;
        let authority = Authority {
            minter: Arc::new(self.inner.minter(&loaded, &Auditor::discard(), Vec::new())),
            fs: FsCtx::default(),
            secrets: Default::default(),
            redactor: Arc::default(),
            egress: Egress::default(),
            deploy: Vec::new(),
        };
        let (mut store, _) = self.inner.store_with_pipes(
            &loaded,
            authority,
            Auditor::discard(),
            None,
            self.inner.approvals.clone(),
        );
        let info = async {
            let t = loaded.pre.instantiate_async(&mut store).await?;
            t.warden_tool_guest().call_describe(&mut store).await
        };
        let info = tokio::time::timeout(loaded.spec.limits.timeout, info)
            .await
            .map_err(|_| LimitExceeded::Deadline {
                after: loaded.spec.limits.timeout,
            })?
            .map_err(|e| classify(e, loaded.spec.limits))?;
        let schema = |s: &str, which: &str| {
            serde_json::from_str(s).map_err(|e| Error::Component {
                path: loaded.spec.component.clone(),
                reason: format!("describe() returned an {which} schema that is not JSON: {e}"),
            })
        };
        Ok(ToolInfo {
            input_schema: schema(&info.input_schema, "input")?,
            output_schema: info
                .output_schema
                .as_deref()
                .map(|s| schema(s, "output"))
                .transpose()?,
            name: info.name,
            version: info.version,
            description: info.description,
            identity: loaded.identity.to_string(),
            handles: info
                .handles
                .into_iter()
                .map(|h| HandleSpec {
                    name: h.name,
                    rights: from_wit_rights(h.rights),
                    description: h.description,
                })
                .collect(),
        })
    }

    /// The manifest file this runtime was built from, if any.
    pub fn manifest_path(&self) -> Option<&std::path::Path> {
        self.inner.manifest_path.as_deref()
    }
}

fn from_wit_rights(r: crate::bindings::warden::tool::fs::Rights) -> Rights {
    use crate::bindings::warden::tool::fs::Rights as W;
    let mut out = Rights::NONE;
    for (w, ours) in [
        (W::READ, Rights::READ),
        (W::WRITE, Rights::WRITE),
        (W::DELETE, Rights::DELETE),
    ] {
        if r.contains(w) {
            out = out | ours;
        }
    }
    out
}

/// A grant checked against the tool's ceiling, ready for one invocation.
struct Authorized {
    fs: FsCtx,
    secrets: Vec<SecretSpec>,
    egress: Vec<EgressRule>,
    deploy: Vec<DeployTarget>,
}

/// The manifest entries (`entries`, named by `name_of`) that a grant names
/// (`granted`); an unknown name is refused with `unknown(name, known names)`.
fn by_name<'a, T: Clone + 'a>(
    granted: &std::collections::BTreeSet<String>,
    entries: &'a [T],
    name_of: impl Fn(&T) -> &str,
    unknown: impl Fn(String, String) -> GrantError,
) -> Result<Vec<T>, GrantError> {
    granted
        .iter()
        .map(|name| {
            entries
                .iter()
                .find(|e| name_of(e) == name)
                .cloned()
                .ok_or_else(|| {
                    let known: Vec<_> = entries.iter().map(&name_of).collect();
                    let known = if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    };
                    unknown(name.clone(), known)
                })
        })
        .collect()
}

fn authorize_deploy(spec: &ToolSpec, grant: &Grant) -> Result<Vec<DeployTarget>, GrantError> {
    by_name(
        &grant.deploy,
        &spec.deploy,
        |t| &t.name,
        |name, known| GrantError::UnknownTarget {
            tool: spec.name.clone(),
            name,
            known,
        },
    )
}

fn authorize_secrets(spec: &ToolSpec, grant: &Grant) -> Result<Vec<SecretSpec>, GrantError> {
    by_name(
        &grant.secrets,
        &spec.secrets,
        |s| &s.name,
        |name, known| GrantError::UnknownSecret {
            tool: spec.name.clone(),
            name,
            known,
        },
    )
}

/// The trap payload when the epoch callback finds the deadline passed.
#[derive(Debug, thiserror::Error)]
#[error("deadline exceeded")]
struct DeadlineHit;

fn inactive(claims: Option<Claims>, reason: String) -> Introspection {
    Introspection {
        active: false,
        claims,
        reason: Some(reason),
    }
}

/// Marks an invocation active for token introspection until dropped.
struct ActiveGuard<'a> {
    set: &'a ActiveInvocations,
    id: Arc<str>,
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.set.end(&self.id);
    }
}

impl Inner {
    fn minter(&self, tool: &LoadedTool, audit: &Auditor, scope: Vec<String>) -> Minter {
        Minter {
            issuer: self.issuer.clone(),
            tool: audit.tool.clone(),
            identity: audit.identity.clone(),
            task: audit.task.clone(),
            invocation: audit.invocation.clone(),
            scope,
            deadline: crate::caps::identity::now_secs() + tool.spec.limits.timeout.as_secs().max(1),
            audiences: tool.spec.token_audiences.clone(),
        }
    }

    fn slot(&self, tool: &str) -> Result<&ToolSlot, Error> {
        self.tools.get(tool).ok_or_else(|| Error::UnknownTool {
            name: tool.to_owned(),
            known: self.tools.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }

    fn compile(&self, spec: ToolSpec) -> Result<LoadedTool, Error> {
        let component_err = |reason: String| Error::Component {
            path: spec.component.clone(),
            reason,
        };
        let bytes = std::fs::read(&spec.component)
            .map_err(|e| component_err(format!("cannot read the component: {e}")))?;
        if let Some(reason) = engine::sniff(&bytes) {
            return Err(component_err(reason.into()));
        }
        let identity = Identity::of(&bytes);
        if let Some(pin) = &spec.identity
            && *pin != identity
        {
            return Err(Error::IdentityMismatch {
                tool: spec.name.clone(),
                path: spec.component.clone(),
                expected: pin.clone(),
                actual: identity,
            });
        }
        let cached = self
            .cache
            .as_ref()
            .and_then(|c| c.load(&self.engine, &identity));
        let component = match cached {
            Some(c) => c,
            None => {
                let hook = |e| self.on_compile.as_ref().map(|h| h(e));
                hook(CompileEvent::Started {
                    tool: spec.name.clone(),
                    identity: identity.clone(),
                });
                let started = Instant::now();
                let c = wasmtime::component::Component::new(&self.engine, &bytes)
                    .map_err(|e| component_err(format!("invalid component: {e:#}")))?;
                hook(CompileEvent::Finished {
                    tool: spec.name.clone(),
                    identity: identity.clone(),
                    elapsed: started.elapsed(),
                });
                if let Some(cache) = &self.cache {
                    cache.store(&identity, &c);
                }
                c
            }
        };
        let pre = self.linker.instantiate_pre(&component).map_err(|e| {
            component_err(format!(
                "cannot be linked: {e:#} (a tool may import only the warden:tool world and WASI 0.2)"
            ))
        })?;
        let pre = ToolPre::new(pre).map_err(|e| {
            component_err(format!(
                "does not export the warden:tool/guest interface: {e:#}"
            ))
        })?;
        let ceilings =
            Ceilings::open(&spec).map_err(|e| Error::Host(format!("tool '{}': {e}", spec.name)))?;
        Ok(LoadedTool {
            facts: Arc::new(ToolFacts {
                name: spec.name.clone(),
                identity: identity.to_string(),
                labels: spec.labels.clone(),
            }),
            name: spec.name.as_str().into(),
            spec,
            identity_str: identity.to_string().into(),
            identity,
            pre,
            ceilings,
        })
    }

    /// The shared history of `task`, for runtime policy.
    fn history(&self, task: &Arc<str>) -> Arc<std::sync::Mutex<TaskHistory>> {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.entry(task.clone()).or_default().clone()
    }

    fn pipes(&self) -> (CappedPipe, CappedPipe) {
        (
            CappedPipe::new("stdout", self.stdio_limit),
            CappedPipe::new("stderr", self.stdio_limit),
        )
    }

    /// A fresh store for one invocation: no preopens, env, args or network;
    /// captured stdio; memory limit; epoch deadline that yields every tick.
    fn store_with_pipes(
        &self,
        tool: &LoadedTool,
        authority: Authority,
        audit: Auditor,
        rules: Option<PolicyCtx>,
        approvals: Arc<Approvals>,
    ) -> (Store<HostState>, (CappedPipe, CappedPipe)) {
        let pipes = self.pipes();
        let deadline = Instant::now() + tool.spec.limits.timeout;
        let wasi = WasiCtxBuilder::new()
            .stdout(pipes.0.clone())
            .stderr(pipes.1.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let gate = Gate::new(
            audit,
            rules,
            approvals,
            authority.redactor,
            deadline,
            self.hostcall_limit,
        );
        let http_hooks = http::wasi::EgressHooks {
            egress: authority.egress.clone(),
            gate: gate.clone(),
        };
        let state = HostState {
            wasi,
            http_ctx: wasmtime_wasi_http::WasiHttpCtx::new(),
            http_hooks,
            table: Default::default(),
            gate,
            fs: authority.fs,
            secrets: authority.secrets,
            egress: authority.egress,
            deploy: authority.deploy,
            minter: authority.minter,
            limiter: MemoryLimiter {
                limit: usize::try_from(tool.spec.limits.memory).unwrap_or(usize::MAX),
            },
            log_limits: self.log_limits,
            log: LogState::default(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Err(wasmtime::Error::new(DeadlineHit))
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        (store, pipes)
    }

    async fn run(
        &self,
        tool: &LoadedTool,
        grant: &Grant,
        granted: Authorized,
        input: &str,
        options: InvokeOptions,
    ) -> Result<Invocation, Error> {
        let task = grant.task.as_str();
        let Authorized {
            fs,
            secrets: secret_specs,
            egress,
            deploy,
        } = granted;
        if input.len() > self.max_input {
            return Err(Error::Input(format!(
                "input is {} bytes, more than the limit of {} bytes",
                input.len(),
                self.max_input
            )));
        }
        serde_json::from_str::<serde::de::IgnoredAny>(input)
            .map_err(|e| Error::Input(format!("input is not valid JSON: {e}")))?;
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| Error::Host("runtime is shutting down".into()))?;

        let id = self.ids.next();
        let spec = &tool.spec;
        let mut auditor = Auditor::with_ids(
            self.audit.clone(),
            id.as_str().into(),
            task.into(),
            tool.name.clone(),
            tool.identity_str.clone(),
        );
        // What was granted, once: the start record lists fs handles with
        // their host paths, token scopes without them.
        let rest: Vec<String> = secret_specs
            .iter()
            .map(|s| format!("secret:{}", s.name))
            .chain(deploy.iter().map(|t| format!("deploy:{}", t.name)))
            .chain(egress.iter().map(|r| {
                format!(
                    "http:{}={}{}",
                    r.methods.join(","),
                    r.origin,
                    r.path_prefixes.join(",")
                )
            }))
            .collect();
        let mut start = auditor.record(Event::InvocationStart);
        let granted: Vec<String> = fs
            .handles
            .values()
            .map(|h| format!("{}={}:{}", h.name, h.path.display(), h.rights))
            .chain(rest.iter().cloned())
            .collect();
        start.resource = Some(granted.join(" "));
        let audit_err = |e| Error::Audit(Arc::new(e));
        auditor.write(&start).map_err(audit_err)?;
        self.active.start(auditor.invocation.clone());
        let _active = ActiveGuard {
            set: &self.active,
            id: auditor.invocation.clone(),
        };
        let scope: Vec<String> = fs
            .handles
            .values()
            .map(|h| format!("fs:{}:{}", h.name, h.rights))
            .chain(rest)
            .collect();
        let minter = Arc::new(self.minter(tool, &auditor, scope));

        // Secrets are resolved just in time; a failing source stops the
        // invocation before the tool starts.
        let secrets = match secrets::resolve(secret_specs, &minter).await {
            Ok(s) => s,
            Err(e) => {
                let mut end = auditor.record(Event::InvocationEnd);
                end.outcome = Some("secret-error".into());
                end.message = Some(e.to_string());
                auditor.write(&end).map_err(audit_err)?;
                return Err(Error::Secret(e));
            }
        };
        let redactor = Arc::new(Redactor::new(
            secrets
                .issued
                .values()
                .map(|s| (s.spec.name.as_str(), s.value.as_str())),
        ));
        auditor.set_redactor(redactor.clone());
        for s in secrets.issued.values() {
            let mut r = auditor.record(Event::SecretIssued);
            r.capability = Some("secret".into());
            r.resource = Some(s.spec.name.clone());
            let expires = match s.spec.ttl {
                Some(t) => format!("after {}", crate::units::format_duration(t)),
                None => "with the invocation".into(),
            };
            let use_ = if s.spec.reveal {
                "revealable"
            } else {
                "by reference only"
            };
            r.reason = Some(format!(
                "source {}, {use_}, expires {expires}",
                s.spec.source.kind()
            ));
            auditor.write(&r).map_err(audit_err)?;
        }
        let issued: Vec<String> = secrets.issued.keys().cloned().collect();

        let send_to = secrets
            .issued
            .values()
            .map(|s| (s.spec.name.clone(), s.spec.send_to.clone()))
            .collect();
        let authority = Authority {
            minter,
            fs,
            secrets,
            redactor: redactor.clone(),
            egress: Egress {
                rules: egress.into(),
                send_to,
            },
            deploy,
        };
        let rules = self.rules.as_ref().map(|rules| PolicyCtx {
            rules: rules.clone(),
            tool: tool.facts.clone(),
            task: auditor.task.clone(),
            labels: grant.labels.iter().cloned().collect(),
            invocation: auditor.invocation.clone(),
            history: self.history(&auditor.task),
        });
        let approvals = match options.approver {
            Some(a) => Arc::new(self.approvals.with_approver(a)),
            None => self.approvals.clone(),
        };
        let (mut store, (stdout, stderr)) =
            self.store_with_pipes(tool, authority, auditor.clone(), rules, approvals);
        let started = Instant::now();
        let call = async {
            let t = tool.pre.instantiate_async(&mut store).await?;
            t.warden_tool_guest().call_invoke(&mut store, input).await
        };
        let timed = tokio::time::timeout(spec.limits.timeout, call);
        let outcome = match options.cancel {
            None => Some(timed.await),
            Some(cancel) => tokio::select! {
                r = timed => Some(r),
                () = cancel.cancelled() => None,
            },
        };
        let result = match outcome {
            None => Err(Error::Cancelled),
            Some(Err(_)) => Err(Error::Limit(LimitExceeded::Deadline {
                after: spec.limits.timeout,
            })),
            Some(Ok(Err(trap))) => Err(classify(trap, spec.limits)),
            Some(Ok(Ok(Err(e)))) => Ok(Err(tool_error(e))),
            Some(Ok(Ok(Ok(output)))) => check_output(output, spec.limits.max_output),
        };
        let duration = started.elapsed();
        let dropped = store.data().log.dropped;
        // Dropping the store wipes the secret values (zeroizing memory).
        drop(store);
        let result = redact_result(result, &redactor);
        for name in issued {
            let mut r = auditor.record(Event::SecretExpired);
            r.capability = Some("secret".into());
            r.resource = Some(name);
            r.reason = Some("the invocation ended".into());
            auditor.write(&r).map_err(audit_err)?;
        }

        let mut end = auditor.record(Event::InvocationEnd);
        end.duration_us = Some(duration.as_micros().try_into().unwrap_or(u64::MAX));
        let (outcome, detail) = match &result {
            Ok(Ok(_)) => ("ok".to_owned(), None),
            Ok(Err(e)) => (format!("tool-error:{}", e.kind), Some(e.message.clone())),
            Err(Error::Limit(l)) => (format!("limit:{}", l.name()), Some(l.to_string())),
            Err(Error::Trap(t)) => ("trap".to_owned(), Some(t.clone())),
            Err(Error::Cancelled) => ("cancelled".to_owned(), None),
            Err(e) => ("host-error".to_owned(), Some(e.to_string())),
        };
        end.outcome = Some(outcome);
        end.message = match (detail, dropped) {
            (d, 0) => d,
            (Some(d), n) => Some(format!("{d}; {n} log messages dropped")),
            (None, n) => Some(format!("{n} log messages dropped")),
        };
        auditor.write(&end).map_err(|e| Error::Audit(Arc::new(e)))?;

        Ok(Invocation {
            id,
            task: task.to_owned(),
            tool: spec.name.clone(),
            identity: tool.identity.clone(),
            output: result?,
            stdout: redactor.redact_bytes(&stdout.contents()),
            stderr: redactor.redact_bytes(&stderr.contents()),
            duration,
        })
    }
}

/// Redacts secret values from the tool's output or error.
fn redact_result(
    result: Result<Result<String, ToolError>, Error>,
    redactor: &Redactor,
) -> Result<Result<String, ToolError>, Error> {
    if redactor.is_empty() {
        return result;
    }
    match result {
        Ok(Ok(out)) => Ok(Ok(redactor.redact_string(out))),
        Ok(Err(e)) => Ok(Err(ToolError {
            kind: e.kind,
            message: redactor.redact_string(e.message),
        })),
        Err(Error::Trap(t)) => Err(Error::Trap(redactor.redact_string(t))),
        other => other,
    }
}

fn tool_error(e: guest::ToolError) -> ToolError {
    let kind = match e.kind {
        guest::ErrorKind::InvalidInput => ToolErrorKind::InvalidInput,
        guest::ErrorKind::Denied => ToolErrorKind::Denied,
        guest::ErrorKind::NotFound => ToolErrorKind::NotFound,
        guest::ErrorKind::Failed => ToolErrorKind::Failed,
    };
    ToolError {
        kind,
        message: e.message,
    }
}

fn check_output(output: String, limit: u64) -> Result<Result<String, ToolError>, Error> {
    if output.len() as u64 > limit {
        return Err(LimitExceeded::Output {
            size: output.len() as u64,
            limit,
        }
        .into());
    }
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&output) {
        return Ok(Err(ToolError {
            kind: ToolErrorKind::Failed,
            message: format!("the tool returned output that is not JSON: {e}"),
        }));
    }
    Ok(Ok(output))
}

/// Turns a trap into the limit or fault that caused it.
fn classify(e: wasmtime::Error, limits: crate::manifest::Limits) -> Error {
    if e.is::<DeadlineHit>() || e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return LimitExceeded::Deadline {
            after: limits.timeout,
        }
        .into();
    }
    if e.is::<MemoryExceeded>() {
        return LimitExceeded::Memory {
            limit: limits.memory,
        }
        .into();
    }
    if let Some(flood) = e.downcast_ref::<OutputFlood>() {
        return LimitExceeded::from(flood.clone()).into();
    }
    if let Some(AuditFailed(a)) = e.downcast_ref::<AuditFailed>() {
        return Error::Audit(a.clone());
    }
    if e.downcast_ref::<Trap>() == Some(&Trap::StackOverflow) {
        return LimitExceeded::Stack.into();
    }
    // The root cause names the trap; the wasm backtrace around it goes to
    // the debug log only.
    tracing::debug!("trap: {e:?}");
    Error::Trap(e.root_cause().to_string())
}
