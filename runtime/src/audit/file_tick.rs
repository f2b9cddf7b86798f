//! When a file sink writes on its own: what waits to be written behind,
//! and checkpoints due by time, on the sink's thread; and when appenders
//! wake that thread.

use super::{Chain, Shared};
use std::time::{Duration, Instant};

/// When a signing sink writes a checkpoint: once `records` records are
/// unsigned, or `within` after the first of them, whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cadence {
    pub records: u64,
    pub within: Duration,
}

impl Default for Cadence {
    /// 256 records or 500 ms. A signature costs about as much as a trivial
    /// invocation's other audit work (the `invoke` bench prints both), so
    /// one per 256 records is a fraction of a percent of it; under light
    /// load the time bound leaves an unsigned tail for at most half a
    /// second, at no more than two signatures a second.
    fn default() -> Self {
        Cadence {
            records: 256,
            within: Duration::from_millis(500),
        }
    }
}
/// How long an invocation's end record may wait to be written: it goes out
/// with the trail's next write, or once `records` records wait, or
/// `within` after the first of them, whichever comes first; and when the
/// sink is flushed ([`AuditSink::flush`], [`AuditSink::settle`]) or
/// dropped. `records = 0` writes every record at once. While a write is in
/// progress (one at a time; it waits up to [`super::LOCK_PATIENCE`] for
/// another writer's lock on the trail), ends appended meanwhile wait for
/// it to end, up to four times `records` of them.
///
/// Only records nothing waits on are written behind (an invocation's end,
/// with its start when it made no host call): every record that allows an
/// action is written before the action, and takes what waits with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteBehind {
    pub records: usize,
    pub within: Duration,
}

impl WriteBehind {
    /// Every record written when it is appended.
    pub const OFF: WriteBehind = WriteBehind {
        records: 0,
        within: Duration::ZERO,
    };
}

impl Default for WriteBehind {
    /// 128 records or 2 ms. A write costs a trivial invocation about a
    /// quarter of its time (the `invoke` bench prints both ways); 2 ms is
    /// what a crash can lose, and at most 500 background writes a second.
    fn default() -> Self {
        WriteBehind {
            records: 128,
            within: Duration::from_millis(2),
        }
    }
}

/// How long the sink's thread keeps waking by itself (every
/// `write_behind.within`) after records were last appended to be written
/// behind, so that appenders under load need not wake it.
pub(super) const LINGER: Duration = Duration::from_millis(50);

/// The longest wait counted in time (a longer window, up to
/// `Duration::MAX`, means "by count alone").
pub(super) const FAR: Duration = Duration::from_secs(86_400);

impl Shared {
    /// The sink's thread, until it closes: writes what waits to be written
    /// behind once the first of it is `write_behind.within` old, and a
    /// checkpoint once the oldest unsigned record is `cadence.within` old.
    pub(super) fn tick(&self) {
        const RETRY: Duration = Duration::from_secs(1);
        let mut chain = self.lock();
        // After a failed write: not before this.
        let mut retry_at: Option<Instant> = None;
        while !chain.closing {
            let flush_due = chain
                .behind_since
                .map(|t| t + chain.write_behind.within.min(FAR));
            let sign_due = chain
                .at
                .unsigned_since
                .filter(|_| chain.signer.is_some())
                .map(|t| t + chain.cadence.within.min(FAR));
            let now = Instant::now();
            let Some(due) = flush_due.into_iter().chain(sign_due).min() else {
                // Nothing due: while records came lately, look again each
                // `within` by itself; else wait to be woken.
                let within = chain.write_behind.within.min(FAR);
                let lately = chain.behind_at.is_some_and(|t| now < t + LINGER);
                if lately && !within.is_zero() {
                    chain.ticker_wakes = Some(now + within);
                    chain = self
                        .wake
                        .wait_timeout(chain, within)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                } else {
                    chain.ticker_wakes = None;
                    chain = self.wake.wait(chain).unwrap_or_else(|p| p.into_inner());
                }
                continue;
            };
            let due = retry_at.map_or(due, |r| r.max(due));
            if now < due {
                chain.ticker_wakes = Some(due);
                chain = self
                    .wake
                    .wait_timeout(chain, due - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                continue;
            }
            let written;
            (chain, written) = if flush_due.is_some_and(|d| d <= now) {
                self.flush(chain)
            } else {
                let (chain, wrote) = self.checkpoint(chain);
                (chain, wrote.map(drop))
            };
            match written {
                Ok(()) => retry_at = None,
                Err(e) => {
                    tracing::error!("audit trail {}: {e}", self.path.display());
                    // Appenders write for themselves now, and fail closed
                    // (`Shared::write` has set `behind_failed`).
                    // Not in a loop: wait (releasing the sink to appenders)
                    // at least a second.
                    let pause = RETRY.max(chain.cadence.within.min(Duration::from_secs(3600)));
                    retry_at = Some(Instant::now() + pause);
                }
            }
        }
    }

    /// After records were written: wakes the ticker when they are the
    /// first unsigned ones.
    pub(super) fn after_write(&self, chain: &mut Chain) {
        if chain.signer.is_some() && chain.at.unsigned > 0 && chain.at.unsigned_since.is_none() {
            let now = Instant::now();
            chain.at.unsigned_since = Some(now);
            if chain.wakes_late(now + chain.cadence.within.min(FAR)) {
                self.wake.notify_one();
            }
        }
    }
}

impl Chain {
    /// Whether the sink's thread would look at the chain only after `due`
    /// unless woken.
    pub(super) fn wakes_late(&self, due: Instant) -> bool {
        self.ticker_wakes.is_none_or(|t| t > due)
    }
}
