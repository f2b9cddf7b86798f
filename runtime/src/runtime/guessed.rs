//! What leaves with a tool's result — its output or error, its stdout and
//! stderr — redacted, and withheld whole when redacting it found the value
//! of a secret the tool holds only by reference. The tool cannot have read
//! that value, so it is a guess; redacted, its marker would tell the caller
//! which guess was right (a tool returning ten thousand PINs would mark
//! one). A `secret.guessed` refusal is recorded in its place.

use super::outcome::{Outcome, redact_result};
use super::{ToolError, ToolErrorKind};
use crate::audit::{AuditError, Auditor};
use crate::caps::stdio::CappedPipe;
use crate::error::Error;
use crate::policy::Decision;
use crate::redact::Redactor;

/// `result` and the tool's stdout and stderr, redacted, with each one that
/// holds a guess refused in its place (recorded). A record that cannot be
/// written fails the invocation, and its streams are dropped.
pub(super) fn withheld(
    result: Outcome,
    (stdout, stderr): (CappedPipe, CappedPipe),
    redactor: &Redactor,
    auditor: &Auditor,
) -> (Outcome, Vec<u8>, Vec<u8>) {
    let stdio = |name, pipe: CappedPipe| self::stdio(name, &pipe.contents(), redactor, auditor);
    let checked = self::result(result, redactor, auditor)
        .and_then(|result| Ok((result, stdio("stdout", stdout)?, stdio("stderr", stderr)?)));
    checked.unwrap_or_else(|e| {
        let e = Error::Audit(std::sync::Arc::new(e));
        (Err(e), Vec::new(), Vec::new())
    })
}

/// The output, the tool's error or a trap's message, and which it is.
fn text(result: &Outcome) -> Option<(&'static str, &str)> {
    match result {
        Ok(Ok(out)) => Some(("output", out)),
        Ok(Err(e)) => Some(("error", &e.message)),
        Err(Error::Trap(t)) => Some(("trap", t)),
        Err(_) => None,
    }
}

/// `result` redacted, or in its place the refusal of a guess in it.
fn result(result: Outcome, redactor: &Redactor, auditor: &Auditor) -> Result<Outcome, AuditError> {
    let before = text(&result).map(|(_, t)| redactor.hidden_markers(t.as_bytes()));
    let result = redact_result(result, redactor);
    let (Some(before), Some((what, text))) = (before, text(&result)) else {
        return Ok(result);
    };
    let Some(reason) = refused(what, &before, text.as_bytes(), redactor, auditor)? else {
        return Ok(result);
    };
    Ok(match result {
        Err(_) => Err(Error::Trap(reason)),
        Ok(_) => Ok(Err(ToolError {
            kind: ToolErrorKind::Denied,
            message: reason,
        })),
    })
}

/// The tool's `stream` (stdout or stderr) redacted, or in its place the
/// refusal of a guess in it.
fn stdio(
    stream: &str,
    raw: &[u8],
    redactor: &Redactor,
    auditor: &Auditor,
) -> Result<Vec<u8>, AuditError> {
    let before = redactor.hidden_markers(raw);
    let redacted = redactor.redact_bytes(raw);
    Ok(
        match refused(stream, &before, &redacted, redactor, auditor)? {
            Some(reason) => format!("[{reason}]").into_bytes(),
            None => redacted,
        },
    )
}

/// The reason the tool's `what` is withheld, once recorded, if redacting
/// it found a value held by reference (`before`: the markers it held).
fn refused(
    what: &str,
    before: &[usize],
    redacted: &[u8],
    redactor: &Redactor,
    auditor: &Auditor,
) -> Result<Option<String>, AuditError> {
    let Some(name) = redactor.guessed_since(before, redacted) else {
        return Ok(None);
    };
    let reason = Redactor::guess_reason(&format!("the tool's {what}"), &name);
    let reason = format!("{reason}: withheld");
    let d = Decision::deny("secret.guessed", reason.clone());
    auditor.write(&auditor.decision("result", what, "", &d))?;
    Ok(Some(reason))
}
