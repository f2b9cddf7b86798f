//! What leaves with a tool's result — its output or error, its stdout and
//! stderr — redacted, and withheld whole when it holds the value of a
//! secret the tool holds only by reference. The tool cannot have read
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

/// `result` redacted, or in its place the refusal of a guess in it: a
/// value found in the text as written (each hit apart, so none is lost to
/// a JSON key it collides with, a revealed value's overlapping hit, or the
/// whole text redacted at once), or a marker redaction added (a JSON
/// number spelled otherwise, read as a client reads it).
fn result(result: Outcome, redactor: &Redactor, auditor: &Auditor) -> Result<Outcome, AuditError> {
    let raw = text(&result).map(|(what, t)| {
        let t = t.as_bytes();
        let found = match what {
            "output" => redactor.guessed_json(t),
            _ => redactor.guessed(t),
        };
        (found, redactor.hidden_markers(t))
    });
    let result = redact_result(result, redactor);
    let (Some((found, before)), Some((what, text))) = (raw, text(&result)) else {
        return Ok(result);
    };
    let found = found.or_else(|| redactor.guessed_since(&before, text.as_bytes()));
    let Some(reason) = refused(what, found, auditor)? else {
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
    let refusal = refused(stream, redactor.guessed(raw), auditor)?;
    Ok(match refusal {
        Some(reason) => format!("[{reason}]").into_bytes(),
        None => redactor.redact_bytes(raw),
    })
}

/// The reason the tool's `what` is withheld, once recorded, if a value
/// held by reference (`found`: its name) is in it.
fn refused(
    what: &str,
    found: Option<String>,
    auditor: &Auditor,
) -> Result<Option<String>, AuditError> {
    let Some(name) = found else {
        return Ok(None);
    };
    let reason = Redactor::guess_reason(&format!("the tool's {what}"), &name);
    let reason = format!("{reason}: withheld");
    let d = Decision::deny("secret.guessed", reason.clone());
    auditor.write(&auditor.decision("result", what, "", &d))?;
    Ok(Some(reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A right guess is withheld however redaction would have shown it:
    /// as a JSON key colliding with the tool's own marker (one marker
    /// before and after), or escaped deeper than each string is decoded.
    #[test]
    fn a_guess_is_found_in_the_text_as_written() {
        let r = Redactor::new([("pin", "4821"), ("api", "tok-0123456789")]).hiding(["pin"]);
        let auditor = Auditor::discard();
        let deep: String = "4821"
            .bytes()
            .map(|b| format!("%2525252525{b:02x}"))
            .collect();
        // A JSON escape, then five percent layers, beside a revealed value
        // (which sends the output through the re-check).
        let deeper: String = "4821"
            .bytes()
            .map(|b| format!("\\u002525252525{b:02x}"))
            .collect();
        for out in [
            r#"{"[REDACTED:pin]":0,"4821":1,"4822":1}"#.to_owned(),
            format!(r#"["[REDACTED:pin]","{deep}"]"#),
            format!(r#"{{"a":"tok-0123456789","b":"{deeper}"}}"#),
            r#"{"n":4.821e3}"#.to_owned(),
        ] {
            match result(Ok(Ok(out.clone())), &r, &auditor).unwrap() {
                Ok(Err(e)) => assert_eq!(e.kind, ToolErrorKind::Denied, "{out}"),
                other => panic!("{out}: {other:?}"),
            }
        }
        // The tool's own marker, and a revealed value, tell nothing.
        let out = r#"{"[REDACTED:pin]":0,"k":"tok-0123456789"}"#;
        let shown = result(Ok(Ok(out.into())), &r, &auditor).unwrap();
        assert_eq!(
            shown.unwrap().unwrap(),
            r#"{"[REDACTED:pin]":0,"k":"[REDACTED:api]"}"#
        );
    }
}
