//! What an invocation's trail still owes ([`Auditor`]): its start record
//! while it is held back, and the outcome of each operation that passed
//! the gate and has not recorded one; and, once its end is written, that
//! nothing may follow.

use super::{AuditError, Auditor, Event, Record};
use std::collections::BTreeMap;

/// An invocation's debts to its trail, shared by its auditor's clones.
#[derive(Default)]
pub(super) struct Trail {
    pub(super) owed: Owed,
    /// Operations that passed the gate without an outcome yet, in the
    /// order they passed.
    open: BTreeMap<u64, Open>,
    next: u64,
}

#[derive(Default)]
pub(super) enum Owed {
    #[default]
    Nothing,
    /// The start record, held back to go out with the next record. Boxed:
    /// [`Auditor::write`] runs on the tool's fiber stack, whose pages stay
    /// resident while the call then waits, and a record taken out by value
    /// would size its frame.
    Start(Box<Record>),
    /// The end record was written or tried: nothing may follow it.
    Ended,
}

/// The first of `records`, boxed (a cold path: a held start whose write
/// failed, owed again).
#[cold]
#[inline(never)]
pub(super) fn first_boxed(mut records: Vec<Record>) -> Box<Record> {
    Box::new(records.swap_remove(0))
}

/// An operation that passed the gate: what its outcome record names.
pub(crate) struct Open {
    pub(crate) capability: &'static str,
    pub(crate) action: String,
    pub(crate) resource: String,
}

/// The message of an outcome `stopped`.
const STOPPED: &str = "the operation was stopped before it finished: its invocation ended, was cancelled or ran out of time, the tool dropped the response it waited for, or the host failed";

impl Trail {
    /// The operations still open, taken to be recorded stopped by the end.
    pub(super) fn take_open(&mut self) -> BTreeMap<u64, Open> {
        std::mem::take(&mut self.open)
    }
}

impl Auditor {
    /// Writes `allowed`, the decision that lets operation `op` go ahead,
    /// and notes the operation open, in one hold of the trail's state: it
    /// owes an outcome, which [`Auditor::settle`] records (or
    /// [`Auditor::close`] forgoes), or else the invocation's end records
    /// it `stopped` right before itself ([`Auditor::write_end`]). That
    /// holds when the operation outlives the invocation, on another
    /// thread: a caller that drops the invocation only tells a request's
    /// task to abort. Refused once the end is written, as any record.
    pub(crate) fn write_open(&self, allowed: &Record, op: Open) -> Result<u64, AuditError> {
        let mut trail = self.owed();
        self.write_held(&mut trail, allowed)?;
        let id = trail.next;
        trail.next += 1;
        trail.open.insert(id, op);
        Ok(id)
    }

    /// Writes the outcome `build` makes of open operation `id`, in one
    /// hold of the trail's state: refused ([`AuditError::Ended`]) when the
    /// invocation's end recorded it stopped already.
    pub(crate) fn settle(
        &self,
        id: u64,
        build: impl FnOnce(Open) -> Record,
    ) -> Result<(), AuditError> {
        let mut trail = self.owed();
        let op = trail.open.remove(&id).ok_or(AuditError::Ended)?;
        self.write_held(&mut trail, &build(op))
    }

    /// Forgoes open operation `id`'s outcome record (its decision or the
    /// invocation's end tells it).
    pub(crate) fn close(&self, id: u64) {
        self.owed().open.remove(&id);
    }

    /// The outcome `stopped` of `op`.
    pub(crate) fn stopped(&self, op: Open) -> Record {
        let mut r = self.record(Event::Outcome);
        r.capability = Some(op.capability.into());
        r.action = Some(op.action);
        r.resource = Some(op.resource);
        r.outcome = Some("stopped".into());
        r.message = Some(STOPPED.into());
        r
    }
}
