//! One invocation, from its input to its end record, and the fresh store it
//! runs in. [`Inner::run`] reads as the lifecycle; each step is a short
//! function below it.

use super::contract::Contract;
use super::end::End;
use super::load::LoadedTool;
use super::outcome::{
    DeadlineHit, Outcome, check_error, check_output, classify, lift_limit, log_trap, unread,
};
use super::{Inner, Invocation, InvokeOptions, ToolError, ToolErrorKind, guessed};
use crate::approval::{Approvals, Approver};
use crate::audit::{AuditError, Auditor, Event, Record};
use crate::caps::deploy::{self, DeployTarget};
use crate::caps::fs::{self, FsCtx};
use crate::caps::http::egress::Egress;
use crate::caps::http::{self, EgressRule};
use crate::caps::identity::Minter;
use crate::caps::log::LogState;
use crate::caps::secrets::{self, SecretSpec, SecretsCtx};
use crate::caps::stdio::CappedPipe;
use crate::error::{Error, LimitExceeded};
use crate::grant::{Grant, GrantError, check_task};
use crate::policy::PolicyCtx;
use crate::policy::gate::{Gate, MAX_RESOURCE};
use crate::redact::Redactor;
use crate::state::{Authority, HostState, MemoryLimiter};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::time::error::Elapsed;
use tokio_util::sync::CancellationToken;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;

impl Inner {
    /// One invocation, start to end:
    ///
    /// 1. check the input (JSON, within the size limit, matching the tool's
    ///    input schema), wait for a slot;
    /// 2. prepare the start record (what was granted; it goes out with the
    ///    next record, before anything the tool does), mark the invocation
    ///    active for token introspection;
    /// 3. resolve its secrets just in time, record each one issued;
    /// 4. run the tool in a fresh store within its deadline, unless cancelled;
    /// 5. drop the store (wiping secret values), redact the result, record
    ///    the secrets expired, write the end record. Output that does not
    ///    match the tool's output schema ends as a tool error.
    pub(super) async fn run(
        &self,
        tool: &LoadedTool,
        contract: &Contract,
        grant: &Grant,
        mut granted: Authorized,
        input: &str,
        options: InvokeOptions,
    ) -> Result<Invocation, Error> {
        check_input(input, self.max_input, contract)?;
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| Error::Host("runtime is shutting down".into()))?;
        // Before anything is recorded: without its task's history, no start.
        let shared = self.shared_history(grant).await?;

        let id = self.ids.next();
        // Name and identity copied, not shared: counting references to one
        // copy from every thread's invocations made them contend for it.
        let mut auditor = Auditor::with_ids(
            self.audit.clone(),
            id.as_str().into(),
            grant.task.as_str().into(),
            Arc::from(&*tool.name),
            Arc::from(&*tool.identity_str),
        )
        .with_agent(grant.recorded_agent());
        let (listed, scope) = granted.names();
        if granted.secrets.is_empty() {
            hold_start(&mut auditor, listed, tool.signer.clone());
        } else {
            // Resolving a secret may act (an `exec:` source runs a program,
            // `mint:` signs a token): the start goes out first.
            write_start(&auditor, listed, tool.signer.clone())?;
        }
        // From here on the invocation owes its trail an end, even if its
        // caller drops it: declared before the store, dropped after it.
        let mut end = End::new(auditor);
        let webhooks = granted
            .deploy
            .iter()
            .filter_map(|t| t.backend.audience()?.ok());
        let minter = Arc::new(self.minter(tool, &end.auditor, scope, webhooks.collect()));
        let _active = Active(minter.clone());

        // The tool's time counts from here: its secrets' sources run in it.
        let deadline = Instant::now() + tool.spec.limits.timeout;
        let specs = (std::mem::take(&mut granted.secrets), self.rules.is_some());
        let (secrets, redactor) = match issue_secrets(&mut end, specs, (&minter, deadline)).await {
            Ok(issued) => issued,
            Err(e) => {
                end.fail(&e);
                return Err(e);
            }
        };

        let tokens_to = tool.spec.token_send_to.clone();
        let authority = granted.into_authority(minter, secrets, redactor.clone(), tokens_to);
        let added = shared.as_ref().map(|_| Arc::default());
        let approver = (options.approver, added.clone(), deadline);
        let (store, (stdout, stderr)) =
            self.invocation_store(tool, grant, &end.auditor, authority, approver);
        let (cancel, limit) = (options.cancel, self.hostcall_limit);
        let Ran {
            result,
            duration,
            dropped,
        } = run_tool(tool, store, input, (cancel, deadline), limit).await;

        let result = keep_contract(result, contract);
        let (result, stdout, stderr) =
            guessed::withheld(result, (stdout, stderr), &redactor, &end.auditor);
        // Shared before its end (so its answer); if not, it fails after it.
        let unsaved = super::history::save(shared, added).await;
        end.finish(&result, duration, dropped)?;
        if let Some(e) = unsaved {
            return Err(Error::Host(format!(
                "the task's history was not shared: {e}"
            )));
        }
        Ok(Invocation {
            id,
            task: grant.task.clone(),
            tool: tool.spec.name.clone(),
            identity: tool.identity.clone(),
            output: result?,
            stdout,
            stderr,
            duration,
        })
    }

    /// Records a grant refused against the tool's ceiling — who asked for
    /// what, and why not — as a `grant` decision of its own invocation id
    /// (nothing ran, so there is no start or end record).
    pub(super) fn refused_grant(
        &self,
        tool: &LoadedTool,
        grant: &Grant,
        refusal: &GrantError,
    ) -> Result<(), Error> {
        const SHOWN: usize = 256;
        let id = self.ids.next();
        // The task may be what was wrong with the grant: kept short.
        let task = crate::policy::gate::cut(&grant.task, SHOWN);
        let auditor = Auditor::with_ids(
            self.audit.clone(),
            id.as_str().into(),
            task.into(),
            tool.name.clone(),
            tool.identity_str.clone(),
        )
        .with_agent(grant.recorded_agent());
        let rule = match refusal {
            GrantError::Task(_) => "grant.task",
            _ => "grant.ceiling",
        };
        // What was asked for, and the refusal quoting it (a URL, a path),
        let cut = |s: String| crate::policy::gate::cut(&s, MAX_RESOURCE).into_owned();
        let requested = cut(grant.requested());
        let denial = crate::Decision::deny(rule, cut(refusal.to_string())); // of any size: cut.
        let record = auditor.decision("grant", "invoke", &requested, &denial);
        auditor.write(&record).map_err(audit_err)
    }

    /// The invocation's store: its authority, the runtime policy with the
    /// task's history, and who answers its approval requests (the caller's
    /// approver if it gave one, else the runtime's).
    fn invocation_store(
        &self,
        tool: &LoadedTool,
        grant: &Grant,
        auditor: &Auditor,
        authority: Authority,
        (approver, added, deadline): (Option<Arc<dyn Approver>>, super::history::Added, Instant),
    ) -> (Store<HostState>, (CappedPipe, CappedPipe)) {
        let rules = self.rules.as_ref().map(|rules| PolicyCtx {
            rules: rules.clone(),
            tool: tool.facts.clone(),
            task: auditor.task.clone(),
            labels: grant.labels.iter().cloned().collect(),
            agent: grant.agent.clone(),
            invocation: auditor.invocation.clone(),
            history: self.tasks.of(
                grant.agent.as_ref().map_or("", |a| a.issuer.as_str()),
                &auditor.task,
            ),
            added,
        });
        let approvals = match approver {
            Some(a) => Arc::new(self.approvals.with_approver(a)),
            None => self.approvals.clone(),
        };
        let audit = (auditor.clone(), deadline);
        self.store_with_pipes(tool, authority, audit, rules, approvals)
    }

    /// Mints the invocation's identity tokens: its ids, `scope`, and a
    /// deadline no later than the tool's timeout.
    pub(super) fn minter(
        &self,
        tool: &LoadedTool,
        audit: &Auditor,
        scope: Vec<String>,
        webhooks: Vec<String>,
    ) -> Minter {
        Minter {
            issuer: self.issuer.clone(),
            tool: audit.tool.clone(),
            identity: audit.identity.clone(),
            task: audit.task.clone(),
            invocation: audit.invocation.clone(),
            scope,
            deadline: crate::caps::identity::now_secs() + tool.spec.limits.timeout.as_secs().max(1),
            audiences: tool.spec.token_audiences.clone(),
            webhooks,
            active: self.active.clone(),
            mark: Default::default(),
            minted: Default::default(),
        }
    }

    fn pipes(&self) -> (CappedPipe, CappedPipe) {
        (
            CappedPipe::new("stdout", self.stdio_limit),
            CappedPipe::new("stderr", self.stdio_limit),
        )
    }

    /// A fresh store for one invocation: no preopens, env, args or network;
    /// captured stdio; memory limit; epoch deadline that yields every tick.
    pub(super) fn store_with_pipes(
        &self,
        tool: &LoadedTool,
        authority: Authority,
        (audit, deadline): (Auditor, Instant),
        rules: Option<PolicyCtx>,
        approvals: Arc<Approvals>,
    ) -> (Store<HostState>, (CappedPipe, CappedPipe)) {
        let pipes = self.pipes();
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
            tool.spec.limits.audit,
        );
        let state = HostState {
            wasi,
            http_ctx: crate::caps::http::kept::context(),
            http_hooks: None,
            table: resource_table(),
            gate,
            fs: authority.fs,
            secrets: authority.secrets,
            egress: authority.egress,
            requests: Default::default(),
            deploy: authority.deploy,
            minter: authority.minter,
            limiter: MemoryLimiter::new(
                usize::try_from(tool.spec.limits.memory).unwrap_or(usize::MAX),
            ),
            log_limits: self.log_limits,
            log: LogState::default(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_hostcall_fuel(lift_limit(self.hostcall_limit, tool.spec.limits.max_output));
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
}

/// Resources a tool may hold at once (streams, pollables, handles, HTTP
/// requests and bodies); wasmtime's default is a million. Each may hold
/// host memory (a request body's unread writes, 32 KiB), so their number
/// bounds it; a tool past it traps. Real tools hold tens.
const MAX_RESOURCES: usize = 2048;

fn resource_table() -> wasmtime::component::ResourceTable {
    let mut table = wasmtime::component::ResourceTable::new();
    table.set_max_capacity(MAX_RESOURCES);
    table
}

/// Refuses input over `max` bytes, not JSON, or not matching the tool's
/// input schema, before anything runs.
pub(super) fn check_input(input: &str, max: usize, contract: &Contract) -> Result<(), Error> {
    if input.len() > max {
        return Err(Error::Input(format!(
            "input is {} bytes, more than the limit of {max} bytes",
            input.len(),
        )));
    }
    let value: serde_json::Value = serde_json::from_str(input)
        .map_err(|e| Error::Input(format!("input is not valid JSON: {e}")))?;
    contract.check_input(&value).map_err(Error::Input)
}

/// The tool's output checked against its output schema: a mismatch is the
/// tool's failure (MCP clients are promised output that matches).
fn keep_contract(result: Outcome, contract: &Contract) -> Outcome {
    match result {
        Ok(Ok(output)) => Ok(contract
            .check_output(&output)
            .map(|()| output)
            .map_err(|message| ToolError {
                kind: ToolErrorKind::Failed,
                message,
            })),
        other => other,
    }
}

fn audit_err(e: AuditError) -> Error {
    Error::Audit(Arc::new(e))
}

/// The start record, naming what was granted and who signed the tool.
fn start_record(auditor: &Auditor, granted: String, signer: Option<Arc<str>>) -> Record {
    let mut start = auditor.record(Event::InvocationStart);
    start.resource = Some(granted);
    start.signer = signer;
    start
}

/// Writes the start record now.
fn write_start(auditor: &Auditor, granted: String, signer: Option<Arc<str>>) -> Result<(), Error> {
    auditor
        .write(&start_record(auditor, granted, signer))
        .map_err(audit_err)
}

/// The start record, naming what was granted: held back to go out with the
/// invocation's next record (its first secret issued, its first host call's
/// decision, or its end), which comes before anything the invocation does.
fn hold_start(auditor: &mut Auditor, granted: String, signer: Option<Arc<str>>) {
    let start = start_record(auditor, granted, signer);
    auditor.hold(start);
}

/// Resolves the granted secrets just in time. A failing source ends the
/// invocation before the tool starts, with the end record `secret-error`.
/// Each issued secret is recorded, and from then on the auditor redacts
/// their values.
async fn issue_secrets(
    end: &mut End,
    (specs, policy): (Vec<SecretSpec>, bool),
    (minter, deadline): (&Minter, Instant),
) -> Result<(SecretsCtx, Arc<Redactor>), Error> {
    let secrets = match secrets::resolve(specs, minter, deadline).await {
        Ok(s) => s,
        Err(e) => {
            let mut record = end.auditor.record(Event::InvocationEnd);
            record.outcome = Some("secret-error".into());
            record.message = Some(e.to_string());
            end.auditor.write_end(record).map_err(audit_err)?;
            return Err(Error::Secret(e));
        }
    };
    // Each audience's tokens by a name of their own (a request's check
    // tells whose it carries); every signed token's signature apart.
    let handed: Vec<(String, &str)> = minter.premint_named().collect();
    let redactor = Redactor::new(crate::redact::and_signatures(
        (secrets.issued.values())
            .map(|s| (s.spec.name.as_str(), s.value.as_str()))
            .chain(handed.iter().map(|(name, t)| (name.as_str(), *t))),
    ));
    let hidden = secrets.by_reference(policy, &handed);
    let redactor = Arc::new(redactor.hiding(hidden));
    end.auditor.set_redactor(redactor.clone());
    end.issued(secrets.issued.keys().cloned().collect());
    for s in secrets.issued.values() {
        let record = issued_record(&end.auditor, &s.spec);
        end.auditor.write(&record).map_err(audit_err)?;
    }
    Ok((secrets, redactor))
}

/// The `secret-issued` record of one secret: its source kind, how it may be
/// used and when it expires; never its value.
fn issued_record(auditor: &Auditor, spec: &SecretSpec) -> Record {
    let mut r = auditor.record(Event::SecretIssued);
    r.capability = Some("secret".into());
    r.resource = Some(spec.name.clone());
    let expires = match spec.ttl {
        Some(t) => format!("after {}", crate::units::format_duration(t)),
        None => "with the invocation".into(),
    };
    let use_ = if spec.reveal {
        "revealable"
    } else {
        "by reference only"
    };
    r.reason = Some(format!(
        "source {}, {use_}, expires {expires}",
        spec.source.kind()
    ));
    r
}

/// What running the tool left, once its store is gone.
struct Ran {
    result: Outcome,
    duration: Duration,
    /// Log messages dropped over the invocation's limit.
    dropped: u32,
}

/// Runs the tool's `invoke` until its `deadline` unless `cancel` fires
/// first, then drops the store, which wipes the secret values.
async fn run_tool(
    tool: &LoadedTool,
    mut store: Store<HostState>,
    input: &str,
    (cancel, deadline): (Option<CancellationToken>, Instant),
    hostcall_limit: usize,
) -> Ran {
    let limits = tool.spec.limits;
    let lift = store.hostcall_fuel();
    let started = Instant::now();
    let outcome = {
        // Pinned here, once: `within` and the `select!` hold a reference.
        // Moved into either, the call would be stored twice in the
        // invocation's future, which every call in flight holds.
        let call = std::pin::pin!(tool.call(&mut store, input));
        match cancel {
            None => Some(within(deadline, call).await),
            Some(cancel) => tokio::select! {
                r = within(deadline, call) => Some(r),
                () = cancel.cancelled() => None,
            },
        }
    };
    let result = match outcome {
        None => Err(Error::Cancelled),
        Some(Err(_)) => Err(Error::Limit(LimitExceeded::Deadline {
            after: limits.timeout,
        })),
        Some(Ok(Err(trap))) => Err(
            match unread(&trap, lift, hostcall_limit, limits.max_output) {
                Some(limit) => limit.into(),
                None => {
                    log_trap(&trap, store.data().gate.redactor());
                    classify(trap, limits)
                }
            },
        ),
        Some(Ok(Ok(Err(e)))) => check_error(e, limits.max_output),
        Some(Ok(Ok(Ok(output)))) => check_output(output, limits.max_output),
    };
    // A call cancelled or out of time may have left requests waiting on
    // their tasks, and a tool may return with a `wasi:http` request still
    // in flight: gone (and their secrets wiped) before the end is written.
    store.data_mut().stop_requests().await;
    let duration = started.elapsed();
    let dropped = store.data().log.dropped;
    drop(store);
    Ran {
        result,
        duration,
        dropped,
    }
}

/// `call`, unless `deadline` passes first. The timer is set only if the
/// call does not end in its first poll (a tool that makes no host call):
/// setting one takes the runtime's handle, a reference count that every
/// thread's invocations would otherwise contend for.
async fn within<F: Future>(deadline: Instant, mut call: Pin<&mut F>) -> Result<F::Output, Elapsed> {
    let deadline = tokio::time::Instant::from_std(deadline);
    let first = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
    match first {
        Poll::Ready(out) => Ok(out),
        Poll::Pending => tokio::time::timeout_at(deadline, call).await,
    }
}

/// A grant checked against the tool's ceiling, ready for one invocation.
pub(super) struct Authorized {
    pub(super) fs: FsCtx,
    pub(super) secrets: Vec<SecretSpec>,
    pub(super) egress: Vec<EgressRule>,
    pub(super) deploy: Vec<DeployTarget>,
}

impl Authorized {
    /// Checks `grant` against `tool`'s manifest ceiling, capability by
    /// capability. Refuses anything the ceiling does not contain, before
    /// anything runs or is audited.
    pub(super) fn new(tool: &LoadedTool, grant: &Grant) -> Result<Self, GrantError> {
        check_task(&grant.task).map_err(GrantError::Task)?;
        Ok(Self {
            fs: fs::authorize(&tool.spec.name, &tool.spec.fs, &tool.ceilings, &grant.fs)?,
            secrets: secrets::authorize(&tool.spec.name, &tool.spec.secrets, &grant.secrets)?,
            egress: http::authorize(&tool.spec.name, &tool.spec.http, &grant.http)?,
            deploy: deploy::authorize(&tool.spec.name, &tool.spec.deploy, &grant.deploy)?,
        })
    }

    /// What was granted, named for the start record and for identity-token
    /// scopes: the record lists fs handles with their host paths
    /// (`repo=/src:read`), scopes without them (`fs:repo:read`); both then
    /// list `secret:NAME`, `deploy:TARGET` and `http:METHODS=ORIGINPATHS`.
    fn names(&self) -> (String, Vec<String>) {
        let rest: Vec<String> = self
            .secrets
            .iter()
            .map(|s| format!("secret:{}", s.name))
            .chain(self.deploy.iter().map(|t| format!("deploy:{}", t.name)))
            .chain(self.egress.iter().filter(|r| !r.narrower).map(|r| {
                format!(
                    "http:{}={}{}",
                    r.methods.join(","),
                    r.origin,
                    r.path_prefixes.join(",")
                )
            }))
            .collect();
        let handles = self.fs.handles.values();
        let listed: Vec<String> = handles
            .clone()
            .map(|h| format!("{}={}:{}", h.name, h.path.display(), h.rights))
            .chain(rest.iter().cloned())
            .collect();
        let scope = handles
            .map(|h| format!("fs:{}:{}", h.name, h.rights))
            .chain(rest)
            .collect();
        (listed.join(" "), scope)
    }

    /// The store's authority: this grant, with its secrets resolved, and
    /// where each may be sent: a secret to its `send-to`, the identity
    /// tokens handed to the tool to its `token-send-to` (`None`: each
    /// audience's to its own origin).
    fn into_authority(
        self,
        minter: Arc<Minter>,
        secrets: SecretsCtx,
        redactor: Arc<Redactor>,
        tokens_to: Option<Vec<String>>,
    ) -> Authority {
        let specs = secrets.issued.values().map(|s| &s.spec);
        let egress = Egress {
            rules: self.egress.into(),
            send_to: (specs.map(|s| (s.name.clone(), s.send_to.clone()))).collect(),
            tokens_to,
        };
        Authority {
            minter,
            fs: self.fs,
            secrets,
            redactor,
            egress,
            deploy: self.deploy,
        }
    }
}

/// Ends the invocation for token introspection when dropped (its minter
/// marked it active with its first token).
struct Active(Arc<Minter>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.ended();
    }
}

#[cfg(test)]
#[path = "invoke_tests.rs"]
mod tests;
