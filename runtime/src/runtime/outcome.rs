//! What a tool's result becomes: a trap classified as the limit or fault
//! that caused it, output checked against its limit, the tool's own error,
//! and secret values redacted from all of them.

use super::{ToolError, ToolErrorKind};
use crate::bindings::exports::warden::tool::guest;
use crate::caps::stdio::OutputFlood;
use crate::error::{Error, LimitExceeded};
use crate::policy::gate::AuditFailed;
use crate::redact::Redactor;
use crate::state::MemoryExceeded;
use wasmtime::Trap;

/// The trap payload when the epoch callback finds the deadline passed.
#[derive(Debug, thiserror::Error)]
#[error("deadline exceeded")]
pub(super) struct DeadlineHit;

/// Redacts secret values from the tool's output or error.
pub(super) fn redact_result(
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

pub(super) fn tool_error(e: guest::ToolError) -> ToolError {
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

pub(super) fn check_output(output: String, limit: u64) -> Result<Result<String, ToolError>, Error> {
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
pub(super) fn classify(e: wasmtime::Error, limits: crate::manifest::Limits) -> Error {
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
