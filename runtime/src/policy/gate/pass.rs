//! The witness that a call passed the gate ([`Pass`]), and what records
//! its operation's outcome when nothing else did ([`Unspent`]).

use super::{AuditFailed, Gate};
use crate::audit::Open;

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
/// ones ([`Auditor::open`](crate::audit::Auditor::open)), which owe an
/// outcome: dropped unspent, with its operation's future — a request in
/// flight when its invocation ends, is cancelled or runs out of time, or
/// whose `wasi:http` response the tool drops before it comes; a deployment
/// when its invocation is cancelled — it records the outcome `stopped`,
/// unless the invocation's end did that first (its caller dropped it, and
/// the request's task was only told to abort). So every operation that
/// passed the gate and may have begun has an outcome before the end. It
/// borrows the gate: a pass costs no reference counts.
pub(super) struct Unspent<'g> {
    gate: &'g Gate,
    /// `None` once spent (or when the invocation had ended).
    id: Option<u64>,
}

impl<'g> Unspent<'g> {
    pub(super) fn new(
        gate: &'g Gate,
        capability: &'static str,
        action: &str,
        resource: &str,
    ) -> Self {
        let op = Open {
            capability,
            action: action.to_owned(),
            resource: resource.to_owned(),
        };
        Unspent {
            gate,
            id: gate.audit.open(op),
        }
    }

    /// Its names, for the outcome record written by whoever spends it;
    /// `None` when the invocation's end recorded it stopped already.
    pub(super) fn spend(mut self) -> Option<Open> {
        self.id.take().and_then(|id| self.gate.audit.close(id))
    }
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
        let Some(op) = gate.audit.close(id) else {
            return;
        };
        if let Err(AuditFailed(e)) = gate.write(&gate.audit.stopped(op)) {
            tracing::error!(
                tool = %gate.audit.tool,
                invocation = %gate.audit.invocation,
                "audit: a stopped operation's outcome: {e}"
            );
        }
    }
}

/// What spending a pass the invocation's end recorded stopped gives: the
/// trail refuses any record after the end.
pub(super) fn ended() -> AuditFailed {
    AuditFailed(std::sync::Arc::new(crate::audit::AuditError::Ended))
}

impl<T> Pass<'_, T> {
    /// What the capability sealed into the call.
    pub(crate) fn sealed(&self) -> &T {
        &self.sealed
    }
}
