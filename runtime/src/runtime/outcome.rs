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

/// The most bytes the host copies out of a tool at once (one host call's
/// arguments, or the result; wasmtime's "hostcall fuel"): twice the larger
/// of the host call and output limits. A value somewhat over its limit is
/// read and refused with its size by its own check; a larger one, unread.
pub(super) fn lift_limit(hostcall_limit: usize, max_output: u64) -> usize {
    let max_output = usize::try_from(max_output).unwrap_or(usize::MAX);
    hostcall_limit.max(max_output).saturating_mul(2)
}

/// The limit a trap names when the tool passed more than the host reads
/// (`lift`): the arguments of a host call (the trap came out of the tool's
/// code, so it carries a wasm backtrace) or else its result.
pub(super) fn unread(
    trap: &wasmtime::Error,
    lift: usize,
    hostcall_limit: usize,
    max_output: u64,
) -> Option<LimitExceeded> {
    // wasmtime's error for exhausted hostcall fuel is not a public type.
    let exhausted = trap.chain().any(|c| {
        c.to_string()
            .starts_with("too much data is being copied between the host and the guest")
    });
    if !exhausted {
        return None;
    }
    let read = lift as u64;
    Some(
        if trap.downcast_ref::<wasmtime::WasmBacktrace>().is_some() {
            LimitExceeded::HostCallUnread {
                read,
                limit: hostcall_limit as u64,
            }
        } else {
            LimitExceeded::OutputUnread {
                read,
                limit: max_output,
            }
        },
    )
}

/// Redacts secret values from the tool's output or error. The output is
/// JSON: it is redacted by what its strings, keys and numbers mean once
/// decoded (so `\u` escapes cannot carry a value past redaction, nor into
/// an MCP client's `structuredContent`), not by its bytes.
pub(super) fn redact_result(result: Outcome, redactor: &Redactor) -> Outcome {
    if redactor.is_empty() {
        return result;
    }
    match result {
        Ok(Ok(out)) => Ok(Ok(redactor.redact_json_string(out))),
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
    // the debug log only ([`log_trap`]).
    Error::Trap(e.root_cause().to_string())
}

/// Logs a trap with its wasm backtrace at debug: redacted (its causes may
/// be a host call's words), cut (a component may name a function with a
/// megabyte) and escaped (the backtrace names the component's functions as
/// it declares them, line breaks and all).
pub(super) fn log_trap(e: &wasmtime::Error, redactor: &Redactor) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let trace = redactor.redact_cut(&format!("{e:?}"), MAX_TRAP_LOG);
    tracing::debug!("trap: {}", crate::redact::escape_control(&trace));
}

/// The bytes of a trap's backtrace the debug log shows.
const MAX_TRAP_LOG: usize = 8 << 10;

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
    // The tool's own message may be as long as its output may: the record
    // keeps its start (the result is redacted by now, so no value is cut).
    let detail = detail.map(|d| crate::policy::gate::cut(&d, END_DETAIL).into_owned());
    let message = match (detail, dropped) {
        (d, 0) => d,
        (Some(d), n) => Some(format!("{d}; {n} log messages dropped")),
        (None, n) => Some(format!("{n} log messages dropped")),
    };
    (outcome, message)
}

/// The most of an outcome's detail (a tool's error message) an end record
/// keeps; the caller gets the whole message, within the output limit.
pub(super) const END_DETAIL: usize = 4096;

/// The tool's own error, refused as output over `limit` bytes when its
/// message is (it goes where the output would: to the caller).
pub(super) fn check_error(e: guest::ToolError, limit: u64) -> Outcome {
    if e.message.len() as u64 > limit {
        return Err(LimitExceeded::Output {
            size: e.message.len() as u64,
            limit,
        }
        .into());
    }
    Ok(Err(tool_error(e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditError;
    use crate::manifest::Limits;
    use std::sync::Arc;
    use std::time::Duration;

    fn limits() -> Limits {
        Limits {
            timeout: Duration::from_secs(3),
            memory: 1 << 20,
            max_output: 16,
            ..Limits::default()
        }
    }

    fn limit_of(e: Error) -> LimitExceeded {
        match e {
            Error::Limit(l) => l,
            other => panic!("expected a limit, got {other:?}"),
        }
    }

    #[test]
    fn classify_names_the_limit_that_ended_the_run() {
        let deadline = LimitExceeded::Deadline {
            after: Duration::from_secs(3),
        };
        let cases = [
            (wasmtime::Error::new(DeadlineHit), deadline.clone()),
            // wasmtime wraps a trap's payload in its wasm backtrace
            (
                wasmtime::Error::new(DeadlineHit).context("wasm backtrace"),
                deadline.clone(),
            ),
            (wasmtime::Error::new(Trap::Interrupt), deadline),
            // the manifest's limit, not the size the tool asked for
            (
                wasmtime::Error::new(MemoryExceeded {
                    limit: 1 << 20,
                    desired: 3 << 20,
                }),
                LimitExceeded::Memory { limit: 1 << 20 },
            ),
            (
                wasmtime::Error::new(OutputFlood {
                    stream: "stderr",
                    limit: 64,
                })
                .context("wasm backtrace"),
                LimitExceeded::Stdio {
                    stream: "stderr",
                    limit: 64,
                },
            ),
            (
                wasmtime::Error::new(Trap::StackOverflow),
                LimitExceeded::Stack,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(limit_of(classify(e, limits())), want);
        }
    }

    #[test]
    fn classify_reports_an_audit_failure_as_one_not_as_a_trap() {
        let failed = AuditFailed(Arc::new(AuditError::Sink("disk full".into())));
        match classify(
            wasmtime::Error::new(failed).context("wasm backtrace"),
            limits(),
        ) {
            Error::Audit(a) => assert_eq!(a.to_string(), "audit sink failed: disk full"),
            other => panic!("expected an audit error, got {other:?}"),
        }
    }

    #[test]
    fn classify_names_any_other_trap_by_its_root_cause() {
        let e = wasmtime::Error::new(Trap::UnreachableCodeReached).context("wasm backtrace");
        match classify(e, limits()) {
            Error::Trap(t) => assert_eq!(t, Trap::UnreachableCodeReached.to_string()),
            other => panic!("expected a trap, got {other:?}"),
        }
    }

    #[test]
    fn check_output_refuses_output_over_the_limit_and_output_that_is_not_json() {
        let json = r#"{"a":1}"#.to_owned();
        assert_eq!(check_output(json.clone(), 16).unwrap(), Ok(json));
        let at_limit = format!("\"{}\"", "x".repeat(14));
        assert_eq!(check_output(at_limit.clone(), 16).unwrap(), Ok(at_limit));

        let over = format!("\"{}\"", "x".repeat(15));
        let e = check_output(over, 16).unwrap_err();
        assert_eq!(
            limit_of(e),
            LimitExceeded::Output {
                size: 17,
                limit: 16
            }
        );
        // the size is checked first
        let e = check_output("x".repeat(17), 16).unwrap_err();
        assert_eq!(
            limit_of(e),
            LimitExceeded::Output {
                size: 17,
                limit: 16
            }
        );

        let e = check_output("not json".into(), 16).unwrap().unwrap_err();
        assert_eq!(e.kind, ToolErrorKind::Failed);
        assert!(
            e.message
                .starts_with("the tool returned output that is not JSON: "),
            "{}",
            e.message
        );
    }

    #[test]
    fn redact_result_redacts_output_tool_error_messages_and_traps() {
        let r = Redactor::new([("token", "hunter22-secret")]);
        let out = redact_result(Ok(Ok(r#"{"t":"hunter22-secret"}"#.into())), &r);
        assert_eq!(out.unwrap(), Ok(r#"{"t":"[REDACTED:token]"}"#.to_owned()));
        // JSON escapes, and percent-encoding inside a JSON string
        let escaped: String = "hunter22-secret"
            .chars()
            .map(|c| format!("\\u{:04x}", c as u32))
            .collect();
        let out = redact_result(
            Ok(Ok(format!(
                r#"{{"t":"{escaped}","u":"%68unter22-secret"}}"#
            ))),
            &r,
        );
        assert_eq!(
            out.unwrap(),
            Ok(r#"{"t":"[REDACTED:token]","u":"[REDACTED:token]"}"#.to_owned())
        );

        let failed = ToolError {
            kind: ToolErrorKind::Denied,
            message: "refused hunter22-secret".into(),
        };
        let e = redact_result(Ok(Err(failed)), &r).unwrap().unwrap_err();
        assert_eq!(
            e,
            ToolError {
                kind: ToolErrorKind::Denied,
                message: "refused [REDACTED:token]".into(),
            }
        );

        let failed = ToolError {
            kind: ToolErrorKind::Failed,
            message: "leaking \\u0068unter22-secret".into(),
        };
        let e = redact_result(Ok(Err(failed)), &r).unwrap().unwrap_err();
        assert_eq!(e.message, "leaking [REDACTED:token]");

        match redact_result(Err(Error::Trap("panicked at hunter22-secret".into())), &r) {
            Err(Error::Trap(t)) => assert_eq!(t, "panicked at [REDACTED:token]"),
            other => panic!("expected a trap, got {other:?}"),
        }
        let e = redact_result(Err(LimitExceeded::Stack.into()), &r).unwrap_err();
        assert_eq!(limit_of(e), LimitExceeded::Stack);
    }

    #[test]
    fn without_secrets_redact_result_leaves_the_result_as_it_is() {
        let out = redact_result(Ok(Ok(r#""hunter22-secret""#.into())), &Redactor::default());
        assert_eq!(out.unwrap(), Ok(r#""hunter22-secret""#.to_owned()));
    }

    #[test]
    fn tool_error_keeps_the_kind_and_the_message() {
        for (kind, want) in [
            (guest::ErrorKind::InvalidInput, ToolErrorKind::InvalidInput),
            (guest::ErrorKind::Denied, ToolErrorKind::Denied),
            (guest::ErrorKind::NotFound, ToolErrorKind::NotFound),
            (guest::ErrorKind::Failed, ToolErrorKind::Failed),
        ] {
            let e = guest::ToolError {
                kind,
                message: "why".into(),
            };
            assert_eq!(
                tool_error(e),
                ToolError {
                    kind: want,
                    message: "why".into(),
                }
            );
        }
    }

    #[test]
    fn the_end_record_names_the_outcome_and_dropped_log_messages() {
        let not_found = ToolError {
            kind: ToolErrorKind::NotFound,
            message: "no such file".into(),
        };
        let cases: [(Outcome, u32, &str, Option<&str>); 8] = [
            (Ok(Ok("{}".into())), 0, "ok", None),
            (Ok(Ok("{}".into())), 2, "ok", Some("2 log messages dropped")),
            (
                Ok(Err(not_found)),
                0,
                "tool-error:not-found",
                Some("no such file"),
            ),
            (
                Err(LimitExceeded::Stack.into()),
                1,
                "limit:stack",
                Some("call stack exhausted (recursion too deep); 1 log messages dropped"),
            ),
            (
                Err(LimitExceeded::Stdio {
                    stream: "stdout",
                    limit: 1024,
                }
                .into()),
                0,
                "limit:stdout",
                Some("stdout exceeded its capture limit of 1 KiB"),
            ),
            (
                Err(Error::Trap("unreachable".into())),
                0,
                "trap",
                Some("unreachable"),
            ),
            (Err(Error::Cancelled), 0, "cancelled", None),
            (
                Err(Error::Host("gone".into())),
                0,
                "host-error",
                Some("host error: gone"),
            ),
        ];
        for (result, dropped, outcome, message) in cases {
            assert_eq!(
                end_summary(&result, dropped),
                (outcome.to_owned(), message.map(str::to_owned))
            );
        }
    }

    /// A trap's debug line carries its causes and backtrace, which the
    /// component names and a host call's words may be in: redacted, cut
    /// at 8 KiB, escaped.
    #[test]
    fn a_traps_debug_line_is_redacted_cut_and_escaped() {
        let e = wasmtime::Error::msg(format!("\u{1b}[2J{}", "f".repeat(1 << 20)))
            .context("opening hunter22-secret failed");
        let redactor = Redactor::new([("token", "hunter22-secret")]);
        let logged = crate::logged(tracing::Level::DEBUG, || log_trap(&e, &redactor));
        assert!(
            logged.contains("trap: opening [REDACTED:token] failed"),
            "{logged}"
        );
        assert!(!logged.contains("hunter22"), "{logged}");
        assert!(logged.len() < 9 << 10, "{} bytes", logged.len());
        assert!(!logged.contains('\u{1b}'));
    }
}
