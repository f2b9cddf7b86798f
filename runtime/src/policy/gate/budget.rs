//! What one invocation may spend of the trail, and what it has spent.

use crate::audit::Record;
use crate::redact::Redactor;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

/// How much of the trail one invocation may use: audited host calls (every
/// call that reaches the gate) and bytes of the records the gate writes.
/// Past either, every host call is denied (`limits.audit`), and one record
/// says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditBudget {
    /// `max-audited-calls`, default 20,000.
    pub calls: u64,
    /// `max-audit-bytes`, default 16 MiB.
    pub bytes: u64,
}

impl AuditBudget {
    pub const DEFAULT_CALLS: u64 = 20_000;
    pub const DEFAULT_BYTES: u64 = 16 << 20;
    pub const MAX_CALLS: u64 = 10_000_000;
    pub const MIN_BYTES: u64 = 64 << 10;
    pub const MAX_BYTES: u64 = 4 << 30;
}

impl Default for AuditBudget {
    fn default() -> Self {
        AuditBudget {
            calls: Self::DEFAULT_CALLS,
            bytes: Self::DEFAULT_BYTES,
        }
    }
}

/// What an invocation has spent of its [`AuditBudget`].
#[derive(Debug, Default)]
pub(super) struct Spent {
    pub(super) calls: AtomicU64,
    pub(super) bytes: AtomicU64,
    /// The record saying the budget ran out was written.
    pub(super) told: AtomicBool,
    /// The rule of an exfiltration attempt refused in this invocation
    /// ([`TRIPS`]): no host call passes after it.
    pub(super) tripped: std::sync::OnceLock<&'static str>,
    /// Calls refused for the trip (only the first is recorded).
    pub(super) refused_tripped: AtomicU64,
}

/// Refusals that end an invocation's host calls: an attempt to send a
/// secret or a token where it may not go. Each refusal answers whether the
/// request held a value, so a tool allowed to go on could test guesses at
/// a secret it holds only by reference, a bit per request; it gets one.
pub(super) const TRIPS: [&str; 3] = ["secret.send-to", "secret.guessed", "identity.send-to"];

/// Bytes a record takes in the trail, near enough to budget with: its
/// strings as JSON escapes them, and the fields every chained record has
/// (`seq`, `prev`, `ts`, `hash`, the names).
pub(super) fn record_size(r: &Record, redactor: &Redactor) -> u64 {
    fn json(s: &str) -> u64 {
        let escaped = s
            .bytes()
            .map(|b| match b {
                b'"' | b'\\' => 1,
                0..0x20 => 5,
                _ => 0,
            })
            .sum::<u64>();
        s.len() as u64 + escaped
    }
    const FIXED: u64 = 330;
    let opt = |o: &Option<String>| o.as_deref().map_or(0, |s| json(s) + 16);
    // What the trail redacts is charged as written: a secret of a few
    // bytes, repeated, grows many times over as `[REDACTED:its-name]`.
    let redacted = |o: &Option<String>| match o.as_deref() {
        Some(s) if !redactor.is_empty() => json(&redactor.redact(s)) + 16,
        _ => opt(o),
    };
    let arc = |o: &Option<Arc<str>>| o.as_deref().map_or(0, |s| json(s) + 16);
    FIXED
        + [&r.invocation, &r.task, &r.tool, &r.identity]
            .into_iter()
            .map(|s| json(s))
            .sum::<u64>()
        + arc(&r.agent)
        + arc(&r.signer)
        + [&r.action, &r.resource, &r.reason, &r.message]
            .into_iter()
            .map(redacted)
            .sum::<u64>()
        + [
            &r.capability,
            &r.decision,
            &r.rule,
            &r.address,
            &r.outcome,
            &r.level,
        ]
        .into_iter()
        .map(opt)
        .sum::<u64>()
        + r.policies
            .iter()
            .flatten()
            .map(|p| json(p) + 3)
            .sum::<u64>()
}
