//! What one invocation may spend of the trail, and what it has spent.

use super::{AuditFailed, Gate, shown};
use crate::audit::Record;
use crate::policy::Decision;
use crate::redact::Redactor;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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

impl Gate {
    /// The refusal of a call past the invocation's audit budget: past its
    /// calls (`calls`, the count with this one) or else its bytes. Only the
    /// first is recorded.
    pub(super) fn spent_out(
        &self,
        capability: &'static str,
        action: &str,
        resource: &str,
        calls: Option<u64>,
    ) -> Result<Decision, AuditFailed> {
        let (what, limit) = if let Some(calls) = calls {
            (
                format!("{} audited host calls", calls - 1),
                format!("max-audited-calls = {}", self.budget.calls),
            )
        } else {
            (
                // Not the count itself: records are charged redacted,
                // so the count would tell a tool whether a value it
                // wrote was a secret's (it learns of no guess here:
                // see `guessed`).
                "its bytes of audit records".to_owned(),
                format!(
                    "max-audit-bytes = \"{}\"",
                    crate::units::format_size(self.budget.bytes)
                ),
            )
        };
        let d = Decision::deny(
            "limits.audit",
            format!(
                "this invocation has used its audit budget ({what}; the tool's {limit} in the manifest); no further host calls are allowed"
            ),
        );
        if !self.spent.told.swap(true, Ordering::Relaxed) {
            let r = self
                .audit
                .decision(capability, action, &shown(resource, &self.redactor), &d);
            self.audit.write(&r).map_err(|e| AuditFailed(Arc::new(e)))?;
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Approval, HostCall};
    use super::*;
    use crate::approval::{ApprovalAnswer, ApprovalRequest, Approvals, Approver};
    use crate::audit::{Auditor, Event, MemorySink};
    use std::time::{Duration, Instant};

    /// Denies every request after a moment, as a person or a webhook
    /// would: the calls behind it queue meanwhile.
    struct SlowDenial;

    #[async_trait::async_trait]
    impl Approver for SlowDenial {
        async fn ask(&self, request: &ApprovalRequest) -> Option<ApprovalAnswer> {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Some(ApprovalAnswer {
                digest: request.digest.clone(),
                approved: false,
                by: "slow".into(),
            })
        }
    }

    /// Calls admitted together, each then waiting its turn to ask a
    /// person: their requests (with a summary of kilobytes) and answers
    /// would each be recorded past the budget. The budget is looked at
    /// again once a call's turn comes.
    #[tokio::test]
    async fn calls_queued_for_approval_stay_within_the_audit_budget() {
        let sink = MemorySink::new();
        let auditor = Auditor::new(sink.clone(), "inv", "task", "tool", "sha256:0");
        let budget = AuditBudget {
            calls: 20_000,
            bytes: 16 << 10,
        };
        let approvals = Approvals::new(Arc::new(SlowDenial), Duration::from_secs(5));
        let deadline = Instant::now() + Duration::from_secs(30);
        let redactor = Arc::new(Redactor::default());
        let gate = Gate::new(
            auditor,
            None,
            Arc::new(approvals),
            redactor,
            deadline,
            1 << 20,
            budget,
        );
        let summary = || "x".repeat(3000);
        let calls = (0..200).map(|i| {
            let (gate, summary) = (&gate, &summary);
            async move {
                let resource = format!("https://example.com/{i}");
                let call = HostCall {
                    whole: None,
                    capability: "http",
                    action: "send",
                    resource: &resource,
                    check: Decision::allow("http.allow", "listed".into()),
                    asks: Vec::new(),
                    approval: Approval {
                        required: true,
                        action: "http.send",
                        resource: &resource,
                        args: "",
                        summary,
                    },
                    address: None,
                    sealed: (),
                };
                gate.pass(call).await.unwrap().map(|_| ()).unwrap_err()
            }
        });
        let refusals = futures_util::future::join_all(calls).await;
        let records = sink.records();
        let written: usize = (records.iter())
            .map(|r| serde_json::to_string(r).unwrap().len())
            .sum();
        // The budget, plus the calls that crossed it together: one request
        // and answer, and the decisions admitted before any was recorded.
        assert!(written < (16 << 10) + (8 << 10), "{written} bytes");
        let asked = (records.iter()).filter(|r| r.event == Event::ApprovalRequested);
        assert!(asked.count() <= 4);
        let spent = (refusals.iter())
            .filter(|d| d.rule == "limits.audit")
            .count();
        assert!(spent > 150, "{spent} of 200 refused past the budget");
        let told = (records.iter()).filter(|r| r.rule.as_deref() == Some("limits.audit"));
        assert_eq!(told.count(), 1);
    }
}
