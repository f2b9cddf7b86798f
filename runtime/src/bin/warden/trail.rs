//! `warden audit`: verify and show a trail.

use crate::Failure;
use crate::out::outln;
use std::path::Path;
use warden::Verifier;
use warden::audit::verify::{Status, verify};
use warden::audit::{Event, Record};
use warden::redact::escape_control;

/// One readable line for a record, its control characters escaped: paths,
/// URLs, reasons and messages are chosen by tools (and a trail file by
/// whoever wrote it) and must not rewrite or forge a terminal's lines.
pub fn summarize(r: &Record) -> String {
    escape_control(&describe(r)).into_owned()
}

fn describe(r: &Record) -> String {
    let event = match r.event {
        Event::InvocationStart => "start",
        Event::Decision => "decision",
        Event::Log => "log",
        Event::InvocationEnd => "end",
        Event::SecretIssued => "issued",
        Event::SecretExpired => "expired",
        Event::Egress => "egress",
        Event::Checkpoint => "checkpoint",
        Event::Deploy => "deploy",
        Event::ApprovalRequested => "approval?",
        Event::Outcome => "outcome",
    };
    if r.event == Event::Checkpoint {
        let signed = if r.signature.is_some() {
            "signed"
        } else {
            "unsigned"
        };
        return format!("{event:<8} {} records, {signed}", r.count.unwrap_or(0));
    }
    let inv = &r.invocation[r.invocation.len().saturating_sub(8)..];
    let mut s = format!("{event:<8} {:<12} inv {inv}", r.tool);
    if let (Some(a), Some(res), Some(d)) = (&r.action, &r.resource, &r.decision) {
        s.push_str(&format!("  {d:<5} {a} {res}"));
        if let Some(reason) = &r.reason {
            s.push_str(&format!("  ({reason})"));
        }
        if let Some(p) = &r.policies {
            s.push_str(&format!("  [policy {}]", p.join(", ")));
        }
    } else if let (Some(cap), Some(res)) = (&r.capability, &r.resource) {
        match &r.action {
            Some(a) => s.push_str(&format!("  {cap} {a} {res}")),
            None => s.push_str(&format!("  {cap} {res}")),
        }
    }
    if let Some(status) = r.status {
        s.push_str(&format!(
            "  status {status}, {} bytes in",
            r.bytes_in.unwrap_or(0)
        ));
    }
    if let Some(o) = &r.outcome {
        s.push_str(&format!("  outcome={o}"));
        if let Some(us) = r.duration_us {
            s.push_str(&format!(" in {:.1}ms", us as f64 / 1000.0));
        }
    }
    s
}

/// Exit status (also in `warden audit verify --help` and
/// docs/AUDIT-FORMAT.md): 0 intact and complete; 1 altered (the first bad
/// line is reported); 2 unreadable (the trail or `--jwks`); 3 intact up to
/// its last checkpoint but incomplete (truncated there, or its writer
/// stopped mid-invocation); 4 a checkpoint is signed by a key that is not
/// one of the known keys (the chain holds, the signature cannot be checked).
///
/// Without `--jwks` the known key is this instance's audit key, read from
/// the state directory if it exists: verifying never creates a key.
pub fn verify_cmd(file: &Path, jwks: Option<&Path>) -> Result<u8, Failure> {
    let (keys, known) = match jwks {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| crate::usage(anyhow::anyhow!("cannot read {}: {e}", p.display())))?;
            let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                crate::usage(anyhow::anyhow!("{}: not a JWKS (JSON): {e}", p.display()))
            })?;
            let keys = Verifier::from_jwks(&json)
                .map_err(|e| crate::usage(anyhow::anyhow!("{}: {e}", p.display())))?;
            let kids: Vec<&str> = keys.kids().collect();
            let known = format!("the keys in {} ({})", p.display(), kids.join(", "));
            (keys, known)
        }
        None => match crate::audit_key_path() {
            Err(e) => (Verifier::default(), format!("none: {e:#}")),
            Ok(path) => match warden::KeyPair::load(&path).map_err(|e| crate::usage(e.into()))? {
                Some(key) => {
                    let keys =
                        Verifier::from_jwks(&key.jwks()).map_err(|e| crate::usage(e.into()))?;
                    let known = format!(
                        "this instance's audit key {} ({})",
                        key.kid(),
                        path.display()
                    );
                    (keys, known)
                }
                None => (
                    Verifier::default(),
                    format!(
                        "none: this instance has no audit key ({} does not exist)",
                        path.display()
                    ),
                ),
            },
        },
    };
    let report = verify(file, Some(&keys))
        .map_err(|e| crate::usage(anyhow::anyhow!("cannot read {}: {e}", file.display())))?;
    let status = report.status();
    if let Some(t) = &report.tampered {
        outln!("{}: intact up to line {}", file.display(), t.line - 1)?;
        eprintln!("error: {}:{}: {}", file.display(), t.line, t.reason);
        return Ok(1);
    }
    if status == Status::Complete {
        outln!(
            "{}: ok, {} records, {} signed checkpoints, every invocation ended",
            file.display(),
            report.records,
            report.checkpoints
        )?;
        return Ok(0);
    }
    if status == Status::UnknownKey {
        outln!(
            "{}: chain intact ({} records), but its checkpoints' signatures cannot be checked",
            file.display(),
            report.records
        )?;
        for k in &report.unknown_keys {
            eprintln!(
                "error: {}:{}: checkpoint signed by key {}, which is not one of the known keys; pass its JWKS with --jwks",
                file.display(),
                k.line,
                k.kid
            );
        }
        eprintln!("known keys: {known}");
    } else {
        match report.last_checkpoint {
            Some(l) => outln!(
                "{}: intact and signed up to its last checkpoint (line {l})",
                file.display()
            ),
            None => outln!("{}: chain intact, but no checkpoint yet", file.display()),
        }?;
    }
    if report.uncovered > 0 {
        outln!(
            "warning: {} records after the last checkpoint are not covered by a signature (the trail was truncated there, or its writer stopped)",
            report.uncovered
        )?;
    }
    for inv in &report.unfinished {
        outln!(
            "warning: invocation {} has no end record (unfinished)",
            escape_control(inv)
        )?;
    }
    Ok(if status == Status::UnknownKey { 4 } else { 3 })
}

/// Prints a readable, filtered view of a trail.
pub fn show_cmd(
    file: &Path,
    task: Option<&str>,
    tool: Option<&str>,
    decision: Option<&str>,
    invocation: Option<&str>,
) -> Result<u8, Failure> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| crate::usage(anyhow::anyhow!("cannot read {}: {e}", file.display())))?;
    for (i, line) in text.lines().enumerate() {
        let Ok(r) = serde_json::from_str::<Record>(line) else {
            outln!("{:>6}  (not a record)", i + 1)?;
            continue;
        };
        let keep = task.is_none_or(|t| &*r.task == t)
            && tool.is_none_or(|t| &*r.tool == t)
            && decision.is_none_or(|d| r.decision.as_deref() == Some(d))
            && invocation.is_none_or(|v| &*r.invocation == v);
        if keep {
            outln!("{:>6}  {}  {}", i + 1, escape_control(&r.ts), summarize(&r))?;
        }
    }
    Ok(0)
}
