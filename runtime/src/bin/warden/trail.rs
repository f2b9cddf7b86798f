//! `warden audit`: verify and show a trail.

use crate::Failure;
use std::path::Path;
use warden::Verifier;
use warden::audit::verify::verify;
use warden::audit::{Event, Record};

/// One readable line for a record.
pub fn summarize(r: &Record) -> String {
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

/// Exit status: 0 intact and complete; 1 altered (the first bad line is
/// reported); 3 intact up to its last checkpoint but incomplete (truncated
/// there, or its writer stopped mid-invocation); 2 unreadable.
pub fn verify_cmd(file: &Path, jwks: Option<&Path>) -> Result<u8, Failure> {
    let keys = match jwks {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| crate::usage(anyhow::anyhow!("cannot read {}: {e}", p.display())))?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| crate::usage(e.into()))?;
            Verifier::from_jwks(&json).map_err(|e| crate::usage(e.into()))?
        }
        None => {
            let key = crate::audit_key().map_err(crate::usage)?;
            Verifier::from_jwks(&key.jwks()).map_err(|e| crate::usage(e.into()))?
        }
    };
    let report = verify(file, Some(&keys))
        .map_err(|e| crate::usage(anyhow::anyhow!("cannot read {}: {e}", file.display())))?;
    if let Some(t) = &report.tampered {
        println!("{}: intact up to line {}", file.display(), t.line - 1);
        eprintln!("error: {}:{}: {}", file.display(), t.line, t.reason);
        return Ok(1);
    }
    if report.is_complete() {
        println!(
            "{}: ok, {} records, {} signed checkpoints, every invocation ended",
            file.display(),
            report.records,
            report.checkpoints
        );
        return Ok(0);
    }
    match report.last_checkpoint {
        Some(l) => println!(
            "{}: intact and signed up to its last checkpoint (line {l})",
            file.display()
        ),
        None => println!("{}: chain intact, but no checkpoint yet", file.display()),
    }
    if report.uncovered > 0 {
        println!(
            "warning: {} records after the last checkpoint are not covered by a signature (the trail was truncated there, or its writer stopped)",
            report.uncovered
        );
    }
    for inv in &report.unfinished {
        println!("warning: invocation {inv} has no end record (unfinished)");
    }
    Ok(3)
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
            println!("{:>6}  (not a record)", i + 1);
            continue;
        };
        let keep = task.is_none_or(|t| &*r.task == t)
            && tool.is_none_or(|t| &*r.tool == t)
            && decision.is_none_or(|d| r.decision.as_deref() == Some(d))
            && invocation.is_none_or(|v| &*r.invocation == v);
        if keep {
            println!("{:>6}  {}  {}", i + 1, r.ts, summarize(&r));
        }
    }
    Ok(0)
}
