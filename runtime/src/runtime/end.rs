//! An invocation's end on the trail: each issued secret expired, then the
//! end record, written once, whether the invocation finished, failed on
//! its way in, or its caller dropped it part-way.

use super::outcome::{Outcome, end_summary};
use crate::audit::{AuditError, Auditor, Event};
use crate::error::Error;
use std::sync::Arc;
use std::time::Duration;

/// The end an invocation owes its trail from its start record on, and the
/// invocation's auditor. Ended by [`End::finish`] or [`End::fail`] (or by
/// a secret source's failure, which writes its own end); dropped unended (the caller dropped the invocation's future: a timeout
/// or a `select!` around `invoke`, a server shutting down), it writes the
/// end itself, outcome `cancelled`.
///
/// Declared before the invocation's store, it is dropped after it when the
/// future is: the tool is gone by then and its request tasks told to
/// abort. A record one of them still writes, finishing a poll on another
/// thread, is refused once this end is written ([`AuditError::Ended`]), so
/// the end stays the invocation's last record.
pub(super) struct End {
    /// The invocation's auditor: the run's own, owned here so that the
    /// guard holds no second copy (each copy counts a reference to the
    /// runtime-wide sink, which every thread's invocations share).
    pub(super) auditor: Auditor,
    /// The secrets issued, to record as expired.
    issued: Vec<String>,
}

impl End {
    pub(super) fn new(auditor: Auditor) -> End {
        End {
            auditor,
            issued: Vec::new(),
        }
    }

    /// The names of the secrets issued, once they are.
    pub(super) fn issued(&mut self, names: Vec<String>) {
        self.issued = names;
    }

    /// Ends the invocation's audit: each issued secret expired, then the
    /// end record with the outcome, the duration and any log messages
    /// dropped.
    pub(super) fn finish(
        mut self,
        result: &Outcome,
        duration: Duration,
        dropped: u32,
    ) -> Result<(), Error> {
        let mut end = self.auditor.record(Event::InvocationEnd);
        end.duration_us = Some(duration.as_micros().try_into().unwrap_or(u64::MAX));
        let (outcome, message) = end_summary(result, dropped);
        end.outcome = Some(outcome);
        end.message = message;
        self.write(end).map_err(|e| Error::Audit(Arc::new(e)))
    }

    /// Ends the audit of an invocation that failed before its tool ran
    /// (`error`), unless the failure ended it already.
    pub(super) fn fail(mut self, error: &Error) {
        if self.auditor.ended() {
            return;
        }
        let mut end = self.auditor.record(Event::InvocationEnd);
        end.outcome = Some("host-error".into());
        end.message = Some(error.to_string());
        if let Err(e) = self.write(end) {
            tracing::error!(invocation = %self.auditor.invocation, "audit trail: {e}");
        }
    }

    /// Each issued secret expired, then `end`, tried even when an expiry
    /// was not written; the first error. The invocation has ended after it,
    /// written or not ([`Auditor::write_end`]).
    fn write(&mut self, end: crate::audit::Record) -> Result<(), AuditError> {
        let mut first = Ok(());
        for name in std::mem::take(&mut self.issued) {
            let mut r = self.auditor.record(Event::SecretExpired);
            r.capability = Some("secret".into());
            r.resource = Some(name);
            r.reason = Some("the invocation ended".into());
            if let Err(e) = self.auditor.write(&r) {
                first = first.and(Err(e));
            }
        }
        let ended = self.auditor.write_end(end);
        first.and(ended)
    }
}

impl Drop for End {
    fn drop(&mut self) {
        if self.auditor.ended() {
            return;
        }
        // Unwinding from a panic (the sink's own, perhaps): a second panic
        // here would abort the process, so the trail is left without an
        // end, as the panic leaves it.
        if std::thread::panicking() {
            tracing::error!(
                invocation = %self.auditor.invocation,
                "audit trail: an invocation dropped while its thread panicked has no end record"
            );
            return;
        }
        let mut end = self.auditor.record(Event::InvocationEnd);
        end.outcome = Some("cancelled".into());
        end.message = Some("the caller dropped the invocation before it ended".into());
        if let Err(e) = self.write(end) {
            tracing::error!(
                invocation = %self.auditor.invocation,
                "audit trail: cannot end a dropped invocation: {e}"
            );
        }
    }
}
