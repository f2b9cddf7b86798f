//! The witness that a call passed the gate ([`Pass`]), and what records
//! its operation's outcome when nothing else did ([`Unspent`]).

use super::{AuditFailed, Gate};
use crate::audit::{AuditError, Open, Record};
use std::sync::atomic::Ordering;

/// The witness that a call passed the gate, holding what its operation
/// needs. Only [`Gate::pass`] makes one; [`Gate::done`], [`Gate::failed`],
/// [`Gate::outcome`] and [`Gate::refused`] spend it.
#[must_use = "a pass is spent by recording its operation's outcome"]
pub(crate) struct Pass<'g, T> {
    /// An approver was asked (the outcome is always recorded then).
    pub(super) approved: bool,
    pub(super) call: Unspent<'g>,
    pub(super) sealed: T,
}

/// Until the pass is spent, its operation among its invocation's open
/// ones, which owe an outcome ([`Auditor::write_open`]): noted with the
/// decision that allowed it, before any wait for approval. Spent, its
/// outcome is written in the same hold of the trail that takes the note
/// back ([`Auditor::settle`]). Dropped unspent, with its operation's
/// future — a request in flight when its invocation ends, is cancelled or
/// runs out of time, or whose `wasi:http` response the tool drops before
/// it comes; a deployment, or a wait for approval, when its invocation is
/// cancelled — it records the outcome `stopped`, unless the invocation's
/// end did that first (its caller dropped it, and the request's task was
/// only told to abort). So every operation that was allowed and may have
/// begun has an outcome before the end. It borrows the gate: a pass costs
/// no reference counts.
///
/// [`Auditor::write_open`]: crate::audit::Auditor::write_open
/// [`Auditor::settle`]: crate::audit::Auditor::settle
pub(super) struct Unspent<'g> {
    gate: &'g Gate,
    /// `None` once spent.
    id: Option<u64>,
}

impl<'g> Unspent<'g> {
    /// Writes `allowed`, the decision, charged to the budget, with the
    /// operation noted open.
    pub(super) fn allowed(
        gate: &'g Gate,
        allowed: &Record,
        capability: &'static str,
        action: &str,
        resource: &str,
    ) -> Result<Self, AuditFailed> {
        gate.charge(allowed);
        let op = Open {
            capability,
            action: action.to_owned(),
            resource: resource.to_owned(),
        };
        let id = gate.audit.write_open(allowed, op).map_err(failed)?;
        Ok(Unspent { gate, id: Some(id) })
    }

    /// Spends it without an outcome record (its decision, or the
    /// invocation's end, tells it).
    pub(super) fn spend(mut self) {
        if let Some(id) = self.id.take() {
            self.gate.audit.close(id);
        }
    }

    /// Spends it on the outcome record `build` makes of its names, charged
    /// to the budget; refused after the invocation's end.
    pub(super) fn settle(mut self, build: impl FnOnce(Open) -> Record) -> Result<(), AuditFailed> {
        let id = self.id.take().ok_or_else(|| failed(AuditError::Ended))?;
        self.gate.settle(id, build)
    }
}

impl Gate {
    /// Charges `record` to the invocation's audit budget.
    pub(super) fn charge(&self, record: &Record) {
        self.spent.bytes.fetch_add(
            super::record_size(record, &self.redactor),
            Ordering::Relaxed,
        );
    }

    /// Writes the outcome `build` makes of open operation `id`, charged.
    fn settle(&self, id: u64, build: impl FnOnce(Open) -> Record) -> Result<(), AuditFailed> {
        let build = |op| {
            let r = build(op);
            self.charge(&r);
            r
        };
        self.audit.settle(id, build).map_err(failed)
    }
}

fn failed(e: AuditError) -> AuditFailed {
    AuditFailed(std::sync::Arc::new(e))
}

impl Drop for Unspent<'_> {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else {
            return;
        };
        // Dropped by a panic unwinding (a host bug): the invocation fails
        // with it, and a sink that panicked in turn would abort the process.
        // Still open, it is recorded stopped by the end, if one is written.
        if std::thread::panicking() {
            return;
        }
        let gate = self.gate;
        match gate.settle(id, |op| gate.audit.stopped(op)) {
            // Recorded stopped by the invocation's end already.
            Err(AuditFailed(e)) if matches!(*e, AuditError::Ended) => {}
            Err(AuditFailed(e)) => tracing::error!(
                tool = %gate.audit.tool,
                invocation = %gate.audit.invocation,
                "audit: a stopped operation's outcome: {e}"
            ),
            Ok(()) => {}
        }
    }
}

impl<T> Pass<'_, T> {
    /// What the capability sealed into the call.
    pub(crate) fn sealed(&self) -> &T {
        &self.sealed
    }
}

#[cfg(test)]
mod tests {
    use crate::audit::{Auditor, Event};
    use crate::redact::Redactor;

    /// A four-byte secret repeated 2,000 times in a resource is written as
    /// 2,000 `[REDACTED:name]`s: charged as that, not as the 8 KiB the
    /// tool sent, and never less than the line the trail writes.
    #[test]
    fn a_record_is_charged_as_the_trail_writes_it_redacted() {
        let name = "payment-terminal-pin-of-the-north-store";
        let redactor = Redactor::new([(name, "4821")]);
        let mut r = Auditor::discard().record(Event::Decision);
        r.resource = Some("4821".repeat(2000));
        r.reason = Some(format!("no such file '{}'", "4821".repeat(2000)));
        r.agent = Some("oauth:https://issuer.example ".repeat(10).into());
        let plain = super::super::record_size(&r, &Redactor::new([]));
        let charged = super::super::record_size(&r, &redactor);
        for field in [&mut r.resource, &mut r.reason] {
            *field = field.take().map(|t| redactor.redact_string(t));
        }
        let written = serde_json::to_string(&r).unwrap().len() as u64;
        assert!(charged >= written, "{charged} charged, {written} written");
        assert!(charged > 5 * plain, "{charged} charged, {plain} unredacted");
    }
}
