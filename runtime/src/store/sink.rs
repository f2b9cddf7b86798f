//! The audit trail in PostgreSQL: a hash chain of this process's own.
//!
//! A sink names a new chain when it opens and appends to it alone, so
//! replicas never wait on each other for the chain's head: each chain is
//! a file trail's lines, byte for byte (`Body::line_into`), with the same
//! signed checkpoints on the same [`Cadence`], and verifies as one.
//!
//! Appenders chain their records under a lock and hand them to the sink's
//! thread, which inserts everything waiting in one statement (one commit
//! for many appenders: group commit) and wakes them. Every append returns
//! when its records are committed, an invocation's end too: with the
//! store, a call's records are in it before its answer is sent. An
//! appender on a multi-threaded tokio runtime waits in
//! [`tokio::task::block_in_place`], so that the runtime's other tasks go
//! on meanwhile (on another thread).
//!
//! Fail closed: when an insert fails or the store does not answer within
//! [`PATIENCE`], the records waiting fail to their appenders, and every
//! append fails at once until the thread has reconnected and read the
//! chain's last committed record back (an insert whose answer was lost may
//! have committed: the chain continues from what the store holds).

use super::{PATIENCE, StateUrl, StoreError};
use crate::audit::Cadence;
use crate::audit::line::{Body, GENESIS, Ids, checkpoint_record};
use crate::audit::{AuditError, AuditSink, Event, Record};
use crate::keys::KeyPair;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio_postgres::Client;

#[path = "sink_io.rs"]
mod io;
use io::{blocking, insert, prepare};

/// The longest wait counted in time (a longer cadence means "by count
/// alone").
const FAR: Duration = Duration::from_secs(86_400);

/// How a [`PgSink`] writes.
pub struct PgOptions {
    /// This writer's name, recorded with its chain (a pod's name).
    pub replica: String,
    /// Signs checkpoints, and is published in the store's key set.
    pub signer: Option<Arc<KeyPair>>,
    pub cadence: Cadence,
}

/// An [`AuditSink`] appending to a chain of its own in PostgreSQL.
pub struct PgSink {
    shared: Arc<Shared>,
    writer: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    url: StateUrl,
    replica: String,
    state: Mutex<State>,
    /// Wakes the writer: records wait, or the sink closes.
    wake: Condvar,
    /// Wakes appenders: records were committed, or failed.
    done: Condvar,
}

/// A record chained and waiting to be inserted.
struct Row {
    seq: i64,
    hash: String,
    line: String,
    ts: String,
    event: &'static str,
    ids: Ids,
}

struct State {
    /// This process's chain: a new one when the store's copy of it is not
    /// what this process wrote (see [`Shared::write`]).
    chain: String,
    /// The next record's `seq`, and the last chained record's hash.
    seq: u64,
    head: String,
    /// Chained, not yet inserted.
    waiting: Vec<Row>,
    /// Records with `seq` below this are committed; the last one's hash.
    committed: u64,
    committed_head: String,
    /// The rows of the insert that failed last: it may have committed.
    lost: Vec<Row>,
    /// Bumped when an insert fails and when the writer reconnects: an
    /// appender from an earlier generation succeeded only if its records
    /// were committed before that generation's failure.
    generation: u64,
    /// The generation that last failed, and what was committed then.
    failed: Option<(u64, u64)>,
    /// Why the store is unreachable; appends fail while it is `Some`.
    down: Option<String>,
    unsigned: u64,
    unsigned_since: Option<Instant>,
    ids: Option<Ids>,
    signer: Option<Arc<KeyPair>>,
    cadence: Cadence,
    closing: bool,
}

/// The record's `event`, as serialized (a column to filter on).
fn event_name(e: Event) -> &'static str {
    match e {
        Event::InvocationStart => "invocation.start",
        Event::Decision => "decision",
        Event::Log => "log",
        Event::InvocationEnd => "invocation.end",
        Event::SecretIssued => "secret.issued",
        Event::SecretExpired => "secret.expired",
        Event::Egress => "egress",
        Event::Checkpoint => "checkpoint",
        Event::Deploy => "deploy",
        Event::ApprovalRequested => "approval.requested",
        Event::Outcome => "outcome",
    }
}

impl PgSink {
    /// Connects, migrates, names a new chain for this process and
    /// publishes the signer's public key; fails (naming the store, never
    /// its password) when the store cannot be reached.
    pub fn open(url: &StateUrl, options: PgOptions) -> Result<PgSink, StoreError> {
        let shared = Arc::new(Shared {
            url: url.clone(),
            replica: options.replica.clone(),
            state: Mutex::new(State {
                chain: uuid::Uuid::now_v7().to_string(),
                seq: 0,
                head: GENESIS.to_owned(),
                waiting: Vec::new(),
                committed: 0,
                committed_head: GENESIS.to_owned(),
                lost: Vec::new(),
                generation: 0,
                failed: None,
                down: None,
                unsigned: 0,
                unsigned_since: None,
                ids: None,
                signer: options.signer.clone(),
                cadence: Cadence {
                    records: options.cadence.records.max(1),
                    within: options.cadence.within,
                },
                closing: false,
            }),
            wake: Condvar::new(),
            done: Condvar::new(),
        });
        // The writer's thread runs a client of its own (a runtime cannot
        // be entered from the caller's, which may be async); it says how
        // connecting went before it starts writing.
        let (started_tx, started) = std::sync::mpsc::channel();
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("warden-audit-pg".into())
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| shared.url.failed(format!("cannot start its client: {e}")));
                    let client = rt.and_then(|rt| {
                        let c = rt.block_on(shared.register(&options))?;
                        Ok((rt, c))
                    });
                    match client {
                        Ok((rt, client)) => {
                            let _ = started_tx.send(Ok(()));
                            shared.write(rt, client);
                        }
                        Err(e) => {
                            let _ = started_tx.send(Err(e));
                        }
                    }
                })
                .map_err(|e| url.failed(format!("cannot start the audit writer's thread: {e}")))?
        };
        match started.recv() {
            Ok(Ok(())) => Ok(PgSink {
                shared,
                writer: Some(writer),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(url.failed("the audit writer's thread stopped")),
        }
    }

    /// This process's chain.
    pub fn chain(&self) -> String {
        self.shared.lock().chain.clone()
    }
}

impl Shared {
    /// Connects, migrates, names this chain and publishes the signer's key.
    async fn register(&self, options: &PgOptions) -> Result<Client, StoreError> {
        let client = tokio::time::timeout(3 * PATIENCE, self.url.open())
            .await
            .map_err(|_| {
                self.url
                    .unreachable(format!("no answer within {:?}", 3 * PATIENCE))
            })??;
        let failed = |e: tokio_postgres::Error| self.url.failed(super::pg(&e));
        let chain = self.lock().chain.clone();
        self.name_chain(&client, &chain).await?;
        if let Some(key) = &options.signer {
            let jwk = key.jwks()["keys"][0].to_string();
            client
                .execute(
                    // Replicas may only insert here. A row another wrote
                    // under this id with another key is left out when the
                    // set is read (`Store::jwks`): this chain then shows as
                    // signed by an unknown key, never as that key's.
                    "INSERT INTO warden_keys (kid, jwk) VALUES ($1, $2) ON CONFLICT (kid) DO NOTHING",
                    &[&key.kid(), &jwk],
                )
                .await
                .map_err(failed)?;
        }
        Ok(client)
    }

    /// Records `chain` as this replica's.
    async fn name_chain(&self, client: &Client, chain: &str) -> Result<(), StoreError> {
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&chain, &self.replica];
        let named = client.execute(
            "INSERT INTO warden_chains (chain, replica) VALUES ($1, $2)",
            &params,
        );
        match tokio::time::timeout(PATIENCE, named).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.url.failed(super::pg(&e))),
            Err(_) => Err(self.url.unreachable("no answer")),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn refused(&self, why: &str) -> AuditError {
        AuditError::Sink(format!(
            "the audit store {} is unreachable ({why}); nothing is done unrecorded",
            self.url.shown()
        ))
    }

    /// Chains `records`, hands them to the writer and returns once they
    /// are committed.
    fn append(&self, records: &[Record]) -> Result<(), AuditError> {
        let bodies = records
            .iter()
            .map(|r| Body::of(r).map(|b| (b, r)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut st = self.lock();
        if let Some(why) = &st.down {
            return Err(self.refused(why));
        }
        if st.closing {
            return Err(AuditError::Sink("the audit sink is closed".into()));
        }
        for (body, r) in &bodies {
            st.push(body, r);
        }
        let (end, generation) = (st.seq, st.generation);
        self.wake.notify_one();
        blocking(|| self.wait_for(st, end, generation))
    }

    /// Waits until the records below `end` chained in `generation` are
    /// committed, or have failed; the writer answers within about twice
    /// [`PATIENCE`], and a writer that does not (it stopped) fails them.
    fn wait_for(
        &self,
        mut st: MutexGuard<'_, State>,
        end: u64,
        generation: u64,
    ) -> Result<(), AuditError> {
        let deadline = Instant::now() + 3 * PATIENCE;
        loop {
            if st.generation == generation && st.committed >= end {
                return Ok(());
            }
            if st.generation != generation {
                return match st.failed {
                    Some((g, committed)) if g == generation && committed >= end => Ok(()),
                    _ => {
                        let why = st.down.clone().unwrap_or_else(|| "an insert failed".into());
                        Err(self.refused(&why))
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(self.refused("the audit writer does not answer"));
            }
            st = self
                .done
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn flush(&self) -> Result<(), AuditError> {
        let st = self.lock();
        if let Some(why) = &st.down {
            return Err(self.refused(why));
        }
        let (end, generation) = (st.seq, st.generation);
        self.wake.notify_one();
        blocking(|| self.wait_for(st, end, generation))
    }

    /// Chains a checkpoint now if records are unsigned; returns whether.
    fn checkpoint(&self, st: &mut State) -> Result<bool, AuditError> {
        if st.unsigned == 0 || st.down.is_some() {
            return Ok(false);
        }
        let Some(signer) = st.signer.clone() else {
            return Ok(false);
        };
        let c = checkpoint_record(st.ids.clone(), st.seq, &st.head, &signer);
        let body = Body::of(&c)?;
        st.push(&body, &c);
        Ok(true)
    }

    /// The writer thread: inserts what waits, signs on the cadence, and
    /// reconnects after a failure (not sooner than `retry` after it).
    fn write(&self, rt: tokio::runtime::Runtime, client: Client) {
        // A writer that stops for any reason (a panic too) fails what
        // waits, and every append after it.
        struct Stopped<'a>(&'a Shared);
        impl Drop for Stopped<'_> {
            fn drop(&mut self) {
                let mut st = self.0.lock();
                st.down
                    .get_or_insert_with(|| "the audit writer stopped".into());
                st.failed = Some((st.generation, st.committed));
                st.generation += 1;
                st.waiting.clear();
                self.0.done.notify_all();
            }
        }
        let _stopped = Stopped(self);
        let mut client = Some(client);
        // The insert, prepared on the current connection.
        let mut prepared = None;
        let mut retry = Duration::from_millis(100);
        let mut st = self.lock();
        loop {
            if client.is_none() {
                if st.closing {
                    return;
                }
                st = self
                    .wake
                    .wait_timeout(st, retry)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                retry = (retry * 2).min(Duration::from_secs(2));
                drop(st);
                let back = rt.block_on(self.reconnect());
                st = self.lock();
                match back {
                    Ok(c) => {
                        tracing::info!("audit store {}: reachable again", self.url.shown());
                        client = Some(c);
                        prepared = None;
                        st.down = None;
                        st.generation += 1;
                        if st.seq > 0 {
                            // What failed may have left the tail unsigned.
                            st.unsigned = st.unsigned.max(1);
                            st.unsigned_since.get_or_insert_with(Instant::now);
                        }
                    }
                    Err(e) => st.down = Some(e.to_string()),
                }
                continue;
            }
            let due = st
                .unsigned_since
                .filter(|_| st.signer.is_some())
                .map(|t| t + st.cadence.within.min(FAR));
            let count_due = st.signer.is_some() && st.unsigned >= st.cadence.records;
            let time_due = due.is_some_and(|d| d <= Instant::now());
            if count_due || time_due || (st.closing && st.waiting.is_empty()) {
                // A checkpoint when due, and a last one when closing.
                if let Err(e) = self.checkpoint(&mut st) {
                    tracing::error!("audit store: checkpoint: {e}");
                }
                if st.closing && st.waiting.is_empty() {
                    return;
                }
            }
            if st.waiting.is_empty() {
                st = match due {
                    Some(d) => {
                        let wait = d.saturating_duration_since(Instant::now());
                        self.wake
                            .wait_timeout(st, wait)
                            .unwrap_or_else(|p| p.into_inner())
                            .0
                    }
                    None => self.wake.wait(st).unwrap_or_else(|p| p.into_inner()),
                };
                continue;
            }
            let rows = std::mem::take(&mut st.waiting);
            let (end, chain) = (st.seq, st.chain.clone());
            drop(st);
            let Some(c) = client.as_ref() else {
                unreachable!("checked above")
            };
            let inserted = rt.block_on(async {
                if prepared.is_none() {
                    prepared = Some(prepare(c).await?);
                }
                let Some(statement) = prepared.as_ref() else {
                    unreachable!("prepared above")
                };
                insert(c, statement, &chain, &rows).await
            });
            st = self.lock();
            match inserted {
                Ok(()) => {
                    st.committed = end;
                    if let Some(last) = rows.last() {
                        st.committed_head.clone_from(&last.hash);
                    }
                    retry = Duration::from_millis(100);
                }
                Err(why) => {
                    tracing::error!("audit store {}: {why}", self.url.shown());
                    client = None;
                    st.down = Some(why);
                    st.failed = Some((st.generation, st.committed));
                    st.generation += 1;
                    st.waiting.clear();
                    st.lost = rows;
                    // Not chained on again: a failed append names no ids.
                    st.ids = None;
                }
            }
            self.done.notify_all();
        }
    }
}

impl State {
    fn push(&mut self, body: &Body, r: &Record) {
        let mut line = Vec::new();
        let prev = std::mem::take(&mut self.head);
        self.head = body.line_into(self.seq, &prev, &mut line);
        line.pop(); // the newline: a row holds the line alone
        let hash = self.head.clone();
        let ids = [
            r.invocation.clone(),
            r.task.clone(),
            r.tool.clone(),
            r.identity.clone(),
        ];
        self.waiting.push(Row {
            seq: i64::try_from(self.seq).unwrap_or(i64::MAX),
            hash,
            // Lines are serde_json's output: UTF-8.
            line: String::from_utf8(line).unwrap_or_default(),
            ts: r.ts.to_string(),
            event: event_name(r.event),
            ids: ids.clone(),
        });
        self.seq += 1;
        if r.event == Event::Checkpoint {
            self.unsigned = 0;
            self.unsigned_since = None;
        } else {
            self.ids = Some(ids);
            self.unsigned += 1;
            if self.unsigned_since.is_none() {
                self.unsigned_since = Some(Instant::now());
            }
        }
    }
}

impl AuditSink for PgSink {
    fn append(&self, record: &Record) -> Result<(), AuditError> {
        self.shared.append(std::slice::from_ref(record))
    }

    fn append_all(&self, records: &[Record]) -> Result<(), AuditError> {
        self.shared.append(records)
    }

    fn flush(&self) -> Result<(), AuditError> {
        self.shared.flush()
    }

    fn settle(&self) {
        let signed = {
            let mut st = self.shared.lock();
            self.shared.checkpoint(&mut st)
        };
        if let Err(e) = signed.and_then(|_| self.shared.flush()) {
            tracing::error!("audit store, settling: {e}");
        }
    }

    fn health(&self) -> Result<(), String> {
        match &self.shared.lock().down {
            Some(why) => Err(format!(
                "the audit store {} is unreachable: {why}",
                self.shared.url.shown()
            )),
            None => Ok(()),
        }
    }
}

impl Drop for PgSink {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_all();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_columns_say_what_the_lines_say() {
        for e in [
            Event::InvocationStart,
            Event::Decision,
            Event::Log,
            Event::InvocationEnd,
            Event::SecretIssued,
            Event::SecretExpired,
            Event::Egress,
            Event::Checkpoint,
            Event::Deploy,
            Event::ApprovalRequested,
            Event::Outcome,
        ] {
            assert_eq!(serde_json::to_value(e).unwrap(), event_name(e), "{e:?}");
        }
    }
}
