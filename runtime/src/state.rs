//! What one invocation's store holds.

use crate::audit::{AuditError, Auditor, Record};
use crate::caps::fs::FsCtx;
use crate::caps::log::{LogLimits, LogState};
use crate::caps::secrets::SecretsCtx;
use crate::caps::secrets::redact::Redactor;
use crate::policy::Policy;
use std::sync::Arc;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// What one invocation was granted, resolved and ready to use.
pub(crate) struct Authority {
    pub(crate) minter: Arc<crate::caps::identity::Minter>,
    pub(crate) fs: FsCtx,
    pub(crate) secrets: SecretsCtx,
    pub(crate) redactor: Arc<Redactor>,
    pub(crate) egress: Vec<crate::caps::http::EgressRule>,
    pub(crate) deploy: Vec<crate::caps::deploy::DeployTarget>,
}

pub(crate) struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) fs: FsCtx,
    pub(crate) secrets: SecretsCtx,
    pub(crate) redactor: Arc<Redactor>,
    /// Egress rules of this invocation (grant within ceiling).
    pub(crate) egress: Vec<crate::caps::http::EgressRule>,
    /// When the invocation's deadline passes.
    pub(crate) deadline: std::time::Instant,
    /// Mints this invocation's identity tokens.
    pub(crate) minter: Arc<crate::caps::identity::Minter>,
    /// Deploy targets of this invocation.
    pub(crate) deploy: Vec<crate::caps::deploy::DeployTarget>,
    /// Asks the approver for actions the manifest gates.
    pub(crate) gate: Arc<crate::approval::Gate>,
    /// Approval requests made so far in this invocation.
    pub(crate) approvals: u64,
    /// Standard `wasi:http`, under the same egress policy.
    pub(crate) http_ctx: wasmtime_wasi_http::WasiHttpCtx,
    pub(crate) http_hooks: crate::caps::http::wasi::EgressHooks,
    pub(crate) audit: Auditor,
    pub(crate) policy: Arc<Policy>,
    /// Runtime policy of this invocation, when the manifest has any.
    pub(crate) rules: Option<crate::policy::PolicyCtx>,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) hostcall_limit: usize,
    pub(crate) log_limits: LogLimits,
    pub(crate) log: LogState,
}

impl HostState {
    /// Asks the runtime policy, when there is one, about a call `d` allows;
    /// true when it asks for approval (see [`crate::policy::PolicyCtx::consult`]).
    pub(crate) fn consult<'r>(
        &self,
        d: &mut crate::policy::Decision,
        action: &str,
        detail: &str,
        resource: impl FnOnce() -> crate::policy::cedar::Resource<'r>,
    ) -> bool {
        match &self.rules {
            Some(p) if d.allow => p.consult(d, action, detail, resource()),
            _ => false,
        }
    }

    /// Records something the task did, when there is a runtime policy.
    pub(crate) fn remember(&self, f: impl FnOnce(&mut crate::policy::TaskHistory)) {
        if let Some(p) = &self.rules {
            p.remember(f);
        }
    }

    /// Waits for approval of an action; `Ok(Err(reason))` is a refusal.
    /// The request and the answer are both audited.
    pub(crate) async fn approve(
        &mut self,
        action: &str,
        resource: &str,
        args: &str,
        summary: String,
    ) -> wasmtime::Result<Result<String, String>> {
        use crate::audit::Event;
        let number = self.approvals;
        self.approvals += 1;
        let a = &self.audit;
        let request = crate::approval::ApprovalRequest {
            digest: crate::approval::digest(
                &a.identity,
                &a.task,
                &a.invocation,
                number,
                action,
                resource,
                args,
            ),
            tool: a.tool.to_string(),
            identity: a.identity.to_string(),
            task: a.task.to_string(),
            invocation: a.invocation.to_string(),
            action: action.to_owned(),
            resource: self.redactor.redact(resource).into_owned(),
            summary: self.redactor.redact_string(summary),
        };
        let mut r = self.audit.record(Event::ApprovalRequested);
        r.capability = Some("approval".into());
        r.action = Some(action.to_owned());
        r.resource = Some(request.resource.clone());
        r.message = Some(request.summary.clone());
        r.reason = Some(format!("digest {}", request.digest));
        self.write_audit(&r)?;
        let gate = self.gate.clone();
        let verdict = gate.decide(&request, self.deadline).await;
        let answer = if verdict.approved {
            crate::policy::Decision::allow("approval", verdict.reason.clone())
        } else {
            crate::policy::Decision::deny("approval", verdict.reason.clone())
        };
        self.write_audit(
            &self
                .audit
                .decision("approval", action, &request.resource, &answer),
        )?;
        Ok(if verdict.approved {
            Ok(verdict.reason)
        } else {
            Err(verdict.reason)
        })
    }

    /// Writes an audit record; failure traps the invocation (fail closed).
    pub(crate) fn write_audit(&self, record: &Record) -> wasmtime::Result<()> {
        self.audit
            .write(record)
            .map_err(|e| wasmtime::Error::new(AuditFailed(Arc::new(e))))
    }
}

/// The trap payload when the audit trail cannot be written mid-invocation.
#[derive(Debug, Clone, thiserror::Error)]
#[error(transparent)]
pub(crate) struct AuditFailed(pub(crate) Arc<AuditError>);

impl wasmtime_wasi_http::WasiHttpView for HostState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            hooks: &mut self.http_hooks,
            table: &mut self.table,
            ctx: &mut self.http_ctx,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The trap payload when a tool grows a memory past its limit.
#[derive(Debug, Clone, thiserror::Error)]
#[error("memory limit of {limit} bytes exceeded (tried to grow to {desired} bytes)")]
pub(crate) struct MemoryExceeded {
    pub(crate) limit: usize,
    pub(crate) desired: usize,
}

/// Caps each linear memory at the tool's `memory` limit.
pub(crate) struct MemoryLimiter {
    pub(crate) limit: usize,
}

/// Table elements per table; far above what compilers emit.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            return Err(wasmtime::Error::new(MemoryExceeded {
                limit: self.limit,
                desired,
            }));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
