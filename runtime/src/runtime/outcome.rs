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

/// What one invocation came to: the tool's JSON output or its own error, or
/// the limit, trap or host failure that ended it.
pub(super) type Outcome = Result<Result<String, ToolError>, Error>;

/// The trap payload when the epoch callback finds the deadline passed.
#[derive(Debug, thiserror::Error)]
#[error("deadline exceeded")]
pub(super) struct DeadlineHit;

/// Redacts secret values from the tool's output or error.
pub(super) fn redact_result(result: Outcome, redactor: &Redactor) -> Outcome {
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

/// The error the tool returned, as the runtime reports it.
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

/// The tool's output, refused if over `limit` bytes (a limit) or not JSON
/// (a tool error).
pub(super) fn check_output(output: String, limit: u64) -> Outcome {
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

/// The end record's `outcome` and `message`: `ok`, `tool-error:KIND`,
/// `limit:NAME`, `trap`, `cancelled` or `host-error`, with the detail and
/// how many log messages were `dropped`.
pub(super) fn end_summary(result: &Outcome, dropped: u32) -> (String, Option<String>) {
    let (outcome, detail) = match result {
        Ok(Ok(_)) => ("ok".to_owned(), None),
        Ok(Err(e)) => (format!("tool-error:{}", e.kind), Some(e.message.clone())),
        Err(Error::Limit(l)) => (format!("limit:{}", l.name()), Some(l.to_string())),
        Err(Error::Trap(t)) => ("trap".to_owned(), Some(t.clone())),
        Err(Error::Cancelled) => ("cancelled".to_owned(), None),
        Err(e) => ("host-error".to_owned(), Some(e.to_string())),
    };
    let message = match (detail, dropped) {
        (d, 0) => d,
        (Some(d), n) => Some(format!("{d}; {n} log messages dropped")),
        (None, n) => Some(format!("{n} log messages dropped")),
    };
    (outcome, message)
}
