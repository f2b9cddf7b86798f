//! The runtime: loads tools from a manifest and runs invocations under grants.
//!
//! - `builder.rs`: [`RuntimeBuilder`], its defaults, the epoch ticker;
//! - `load.rs`: compiling, caching and linking a tool;
//! - `contract.rs`: the tool's schemas, checked on every call's input and
//!   output;
//! - `schema_cost.rs`: the bound on what a schema can cost per value;
//! - `invoke.rs`: one invocation, from its input to its end record;
//! - `outcome.rs`: what a tool's result becomes (limits, tool errors, redaction).

mod builder;
mod contract;
mod described;
mod end;
mod guessed;
mod history;
mod invoke;
mod load;
mod outcome;
mod schema_children;
mod schema_cost;

pub use builder::RuntimeBuilder;

use crate::Verifier;
use crate::approval::{Approvals, Approver};
use crate::audit::{AuditSink, Auditor};
use crate::caps::deploy;
use crate::caps::fs::{self, FsCtx};
use crate::caps::http::{self, egress::Egress};
use crate::caps::identity::{ActiveInvocations, Claims, Introspection, Issuer};
use crate::caps::log::LogLimits;
use crate::caps::secrets;
use crate::engine::CompileCache;
use crate::error::{Error, LimitExceeded};
use crate::grant::Grant;
use crate::identity::Identity;
use crate::manifest::ToolSpec;
use crate::policy::RuntimePolicy;
use crate::rights::Rights;
use crate::state::{Authority, HostState};
use invoke::Authorized;
use load::ToolSlot;
use outcome::classify;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use wasmtime::Engine;
use wasmtime::component::Linker;

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
    tasks: crate::policy::Histories,
    /// Where task histories are shared with other runtimes, if anywhere.
    shared_history: Option<Arc<dyn crate::policy::HistoryStore>>,
    /// Where other runtimes' invocations are known (introspection).
    ledger: Option<Arc<dyn crate::caps::identity::InvocationLedger>>,
    stdio_limit: usize,
    max_input: usize,
    hostcall_limit: usize,
    log_limits: LogLimits,
    on_compile: Option<CompileHook>,
    issuer: Arc<Issuer>,
    active: ActiveInvocations,
    ids: InvocationIds,
    approvals: Arc<Approvals>,
    /// Where components come from: the blob cache, offline, credentials.
    sources: crate::source::Sources,
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

    /// Runs `tool` once under `grant` with JSON `input`.
    ///
    /// The grant is checked against the tool's manifest ceiling first; a grant
    /// that would have to be narrowed is refused with [`Error::Grant`] before
    /// anything runs, and the refusal is recorded (who asked for what).
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
        let granted = match Authorized::new(&loaded, grant) {
            Ok(granted) => granted,
            Err(e) => {
                self.inner.refused_grant(&loaded, grant, &e)?;
                return Err(e.into());
            }
        };
        let contract = &self.described(&loaded).await?.contract;
        self.inner
            .run(&loaded, contract, grant, granted, input, options)
            .await
    }

    /// Checks `input` as an invocation of `tool` would before it runs:
    /// within the input size limit, JSON, and matching the tool's input
    /// schema. Nothing runs and nothing is recorded.
    pub async fn check_input(&self, tool: &str, input: &str) -> Result<(), Error> {
        let loaded = self.loaded(tool).await?;
        let contract = &self.described(&loaded).await?.contract;
        invoke::check_input(input, self.inner.max_input, contract)
    }

    /// The part of a task's `grant` that `tool` may receive: its handles only,
    /// rights intersected with its ceiling, directories clipped to `within`.
    ///
    /// [`invoke`](Self::invoke) refuses a grant that would have to be narrowed;
    /// a caller running several tools under one task grant narrows it per
    /// tool with this, explicitly.
    pub fn narrow(&self, tool: &str, grant: &Grant) -> Result<Grant, Error> {
        let spec = &self.inner.slot(tool)?.spec;
        let mut narrowed = Grant::new(grant.task.clone());
        narrowed.fs = fs::narrow(&spec.fs, &grant.fs);
        narrowed.secrets = secrets::narrow(&spec.secrets, &grant.secrets);
        narrowed.http = http::narrow(&spec.http, &grant.http);
        narrowed.deploy = deploy::narrow(&spec.deploy, &grant.deploy);
        narrowed.labels = grant.labels.clone();
        narrowed.agent = grant.agent.clone();
        Ok(narrowed)
    }

    /// Writes now the records the audit sink holds to write behind (see
    /// [`crate::audit::WriteBehind`]): call it before reading a file trail
    /// the runtime is still writing.
    pub fn flush_audit(&self) -> Result<(), crate::audit::AuditError> {
        self.inner.audit.flush()
    }

    /// Writes what the audit sink holds and signs what it has left
    /// unsigned now (a file trail's checkpoint; see [`AuditSink::settle`]).
    pub fn settle_audit(&self) {
        self.inner.audit.settle();
    }

    /// Whether the audit sink can write now (see [`AuditSink::health`]):
    /// nothing runs while it cannot.
    pub fn audit_health(&self) -> Result<(), String> {
        self.inner.audit.health()
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

    /// [`Runtime::introspect`], and for a token this runtime signed whose
    /// invocation it neither runs nor ran, the shared ledger's answer
    /// (another replica may run it; see [`RuntimeBuilder::invocations`]).
    /// An error when the ledger cannot be asked: neither answer is known.
    pub async fn introspect_shared(&self, token: &str) -> Result<Introspection, String> {
        let here = self.introspect(token);
        let (Some(ledger), false, Some(claims)) = (&self.inner.ledger, here.active, &here.claims)
        else {
            return Ok(here);
        };
        // Ended here: what this process saw wins over a ledger that may
        // have missed the end (the store failed as it was written).
        if self.inner.active.ended_here(&claims.jti) {
            return Ok(here);
        }
        Ok(if ledger.running(&claims.jti).await? {
            Introspection {
                active: true,
                claims: here.claims,
                reason: None,
            }
        } else {
            here
        })
    }

    /// The tool's description and schemas, from its `describe` export (run
    /// once per loaded tool). Schemas are served in standard JSON Schema
    /// (see `contract.rs`).
    pub async fn describe(&self, tool: &str) -> Result<ToolInfo, Error> {
        let loaded = self.loaded(tool).await?;
        Ok(self.described(&loaded).await?.info.clone())
    }

    /// What `loaded`'s `describe` says, and its compiled contract: asked
    /// once, on first need.
    async fn described<'a>(
        &self,
        loaded: &'a load::LoadedTool,
    ) -> Result<&'a load::Described, Error> {
        loaded
            .described
            .get_or_try_init(|| self.ask_describe(loaded))
            .await
    }

    /// Calls the tool's `describe` export (with an empty grant).
    async fn ask_describe(&self, loaded: &load::LoadedTool) -> Result<load::Described, Error> {
        // An instance of the tool, like an invocation's: it takes a slot, or
        // a describe that runs to its deadline would hold a share of the
        // pool the invocations' slots count on.
        let _slot = (self.inner.slots.acquire().await)
            .map_err(|_| Error::Host("runtime is shutting down".into()))?;
        // Describing is no invocation: a token minted here is never active.
        let minter = self
            .inner
            .minter(loaded, &Auditor::discard(), Vec::new(), Vec::new());
        minter.ended();
        let authority = Authority {
            minter: Arc::new(minter),
            fs: FsCtx::default(),
            secrets: Default::default(),
            redactor: Arc::default(),
            egress: Egress::default(),
            deploy: Vec::new(),
        };
        let deadline = std::time::Instant::now() + loaded.spec.limits.timeout;
        let (mut store, _) = self.inner.store_with_pipes(
            loaded,
            authority,
            (Auditor::discard(), deadline),
            None,
            self.inner.approvals.clone(),
        );
        let lift = store.hostcall_fuel();
        let info = async {
            let t = loaded.pre.instantiate_async(&mut store).await?;
            t.warden_tool_guest().call_describe(&mut store).await
        };
        let limits = loaded.spec.limits;
        let info = tokio::time::timeout(limits.timeout, info)
            .await
            .map_err(|_| LimitExceeded::Deadline {
                after: limits.timeout,
            })?
            .map_err(|e| {
                match outcome::unread(&e, lift, self.inner.hostcall_limit, limits.max_output) {
                    Some(limit) => limit.into(),
                    None => {
                        outcome::log_trap(&e, store.data().gate.redactor());
                        classify(e, limits)
                    }
                }
            })?;
        let component_err = |reason: String| Error::Component {
            path: loaded.spec.component.clone(),
            reason,
        };
        described::check_described(&info).map_err(component_err)?;
        let schema = |s: &str, which: &str| {
            let mut schema = serde_json::from_str(s).map_err(|e| {
                component_err(format!(
                    "describe() returned an {which} schema that is not JSON: {e}"
                ))
            })?;
            described::check_schema_text(&schema, which).map_err(component_err)?;
            contract::standard_formats(&mut schema);
            Ok::<_, Error>(schema)
        };
        let input_schema = schema(&info.input_schema, "input")?;
        let output_schema = info
            .output_schema
            .as_deref()
            .map(|s| schema(s, "output"))
            .transpose()?;
        let contract = contract::Contract::new(&input_schema, output_schema.as_ref())
            .map_err(|e| component_err(format!("describe() returned a bad schema: {e}")))?;
        let info = ToolInfo {
            input_schema,
            output_schema,
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
        };
        Ok(load::Described { info, contract })
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

fn inactive(claims: Option<Claims>, reason: String) -> Introspection {
    Introspection {
        active: false,
        claims,
        reason: Some(reason),
    }
}
