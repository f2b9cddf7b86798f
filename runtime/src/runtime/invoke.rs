//! One invocation: the fresh store it runs in, and its lifecycle from the
//! input check to the end record.

use super::load::LoadedTool;
use super::outcome::{DeadlineHit, check_output, classify, redact_result, tool_error};
use super::{Inner, Invocation, InvokeOptions};
use crate::approval::Approvals;
use crate::audit::{Auditor, Event};
use crate::caps::deploy::DeployTarget;
use crate::caps::fs::FsCtx;
use crate::caps::http::egress::Egress;
use crate::caps::http::{self, EgressRule};
use crate::caps::identity::{ActiveInvocations, Minter};
use crate::caps::log::LogState;
use crate::caps::secrets::{self, SecretSpec};
use crate::caps::stdio::CappedPipe;
use crate::error::{Error, LimitExceeded};
use crate::grant::Grant;
use crate::policy::gate::Gate;
use crate::policy::{PolicyCtx, TaskHistory};
use crate::redact::Redactor;
use crate::state::{Authority, HostState, MemoryLimiter};
use std::sync::Arc;
use std::time::Instant;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;

/// A grant checked against the tool's ceiling, ready for one invocation.
pub(super) struct Authorized {
    pub(super) fs: FsCtx,
    pub(super) secrets: Vec<SecretSpec>,
    pub(super) egress: Vec<EgressRule>,
    pub(super) deploy: Vec<DeployTarget>,
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
    pub(super) fn minter(&self, tool: &LoadedTool, audit: &Auditor, scope: Vec<String>) -> Minter {
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
    pub(super) fn store_with_pipes(
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

    pub(super) async fn run(
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
