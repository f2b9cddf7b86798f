//! The witness that a call passed the gate ([`Pass`]), and what records
//! its operation's outcome when nothing else did ([`Unspent`]).

use super::{AuditFailed, Gate};
use crate::audit::{AuditError, Event};

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

/// What an outcome record names, and until the pass is spent, its gate:
/// dropped unspent, with its operation's future — a request in flight when
/// its invocation ends, is cancelled or runs out of time, or whose
/// `wasi:http` response the tool drops before it comes; a deployment when
/// its invocation is cancelled — it records the outcome `stopped`, so that
/// every operation that passed the gate and may have begun has an outcome
/// in the trail. It borrows the gate: a pass costs no reference counts.
pub(super) struct Unspent<'g> {
    pub(super) gate: Option<&'g Gate>,
    pub(super) capability: &'static str,
    pub(super) action: String,
    pub(super) resource: String,
}

/// The message of an outcome `stopped`.
const STOPPED: &str = "the operation was stopped before it finished: its invocation ended, was cancelled or ran out of time, the tool dropped the response it waited for, or the host failed";

impl Unspent<'_> {
    /// Its names, for the outcome record written by whoever spends it.
    pub(super) fn spend(mut self) -> (&'static str, String, String) {
        self.gate = None;
        let action = std::mem::take(&mut self.action);
        (self.capability, action, std::mem::take(&mut self.resource))
    }
}

impl Drop for Unspent<'_> {
    fn drop(&mut self) {
        let Some(gate) = self.gate.take() else {
            return;
        };
        // Dropped by a panic unwinding (a host bug): the invocation fails
        // with it, and a sink that panicked in turn would abort the process.
        if std::thread::panicking() {
            return;
        }
        let mut r = gate.audit.record(Event::Outcome);
        r.capability = Some(self.capability.into());
        r.action = Some(std::mem::take(&mut self.action));
        r.resource = Some(std::mem::take(&mut self.resource));
        r.outcome = Some("stopped".into());
        r.message = Some(STOPPED.into());
        // Refused after the invocation's end (its store dropped later, by a
        // caller that dropped the invocation): nothing may follow the end.
        match gate.write(&r) {
            Err(AuditFailed(e)) if !matches!(*e, AuditError::Ended) => {
                tracing::error!(
                    tool = %gate.audit.tool,
                    invocation = %gate.audit.invocation,
                    "audit: a stopped operation's outcome: {e}"
                );
            }
            _ => {}
        }
    }
}

impl<T> Pass<'_, T> {
    /// What the capability sealed into the call.
    pub(crate) fn sealed(&self) -> &T {
        &self.sealed
    }
}
