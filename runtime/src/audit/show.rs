//! How a record reads to a person: one line, its control characters
//! escaped (`warden audit show` and the operator console).

use super::{Event, Record};
use crate::redact::escape_control;

/// One readable line for a record, its control characters escaped: paths,
/// URLs, reasons and messages are chosen by tools (and a trail file by
/// whoever wrote it) and must not rewrite or forge a terminal's lines.
pub fn summarize(r: &Record) -> String {
    escape_control(&describe(r)).into_owned()
}

/// [`summarize`] without the escaping, for callers that escape for their
/// own medium (the console's HTML).
pub fn describe(r: &Record) -> String {
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
    // The last eight characters (a trail read without verifying it may
    // hold any text here, so not a byte offset).
    let inv = r
        .invocation
        .char_indices()
        .rev()
        .nth(7)
        .map_or(&*r.invocation, |(i, _)| &r.invocation[i..]);
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
