//! The file sink: an append-only, hash-chained, checkpointed JSON Lines trail.
//!
//! Each record gets `seq` (its position), `prev` (the hash of the record
//! before it) and `hash` (SHA-256 of the line's bytes before `,"hash":`,
//! closed with `}`: exactly the record's JSON without `hash`). With a
//! signer, a `checkpoint` record states `count` (records before it) and
//! `head` (the last record's hash), signed with Ed25519, on a [`Cadence`]:
//! once [`Cadence::records`] records are unsigned or [`Cadence::within`]
//! after the first of them, whichever comes first, and when the sink is
//! dropped or asked ([`AuditSink::settle`]). Without a signer the trail is
//! the hash chain alone.
//! Editing, removing, inserting or reordering a record breaks the chain;
//! re-chaining after an edit cannot reproduce a later signed checkpoint.
//!
//! A signature costs more than all the rest of an invocation's audit work
//! (see the `invoke` bench), so it is not paid per invocation: the records
//! after the last checkpoint are covered by the hash chain alone until the
//! next one — at most `records` of them, for at most `within` while the
//! writer runs (SECURITY.md says what that allows).
//!
//! The format, byte for byte, is `docs/AUDIT-FORMAT.md`.

#[path = "file_tail.rs"]
mod tail;
#[path = "file_tick.rs"]
mod tick;

pub use tick::{Cadence, WriteBehind};

use super::line::{Body, GENESIS, Ids, checkpoint_record};
use super::{AuditError, AuditSink, Event, Record};
use crate::keys::KeyPair;
use std::fs::{File, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long an append waits for another writer's lock on the trail.
pub const LOCK_PATIENCE: Duration = Duration::from_secs(10);

/// Appends chained records as JSON Lines; the records of one append (and a
/// checkpoint due after them) go out in one `write`.
///
/// Several sinks, in one process or many, can append to one trail: each
/// append holds an exclusive advisory lock (`flock`) on the file, and when
/// the file's length is not what this sink last left it at, another writer
/// has appended, so the chain continues from the trail's last record. One
/// chain results, whoever writes.
///
/// One write at a time, in order; while it chains and writes, the sink's
/// own lock is free, so appenders of records written behind (an
/// invocation's end) queue theirs instead of waiting for it.
///
/// With a signer, a thread of the sink's own writes the checkpoints due by
/// time; dropping the sink stops it and signs what is left unsigned.
pub struct FileSink {
    shared: Arc<Shared>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    path: PathBuf,
    file: File,
    state: Mutex<Chain>,
    /// Wakes the ticker: records became unsigned, or the sink is closing.
    wake: Condvar,
    /// Wakes those waiting for a write in progress to end.
    written: Condvar,
}

/// Where the chain stands on disk: what only a write changes. A write
/// works on a copy, without the sink's lock (appenders queue records to be
/// written behind meanwhile), and puts it back when it is done.
#[derive(Clone)]
struct Head {
    /// The next record's `seq`.
    seq: u64,
    /// The last record's hash.
    head: String,
    /// Records after the trail's last checkpoint (at least 1 when another
    /// writer left its tail unsigned).
    unsigned: u64,
    /// When the first of them was written (with a signer).
    unsigned_since: Option<Instant>,
    /// The ids a checkpoint copies: the last record this sink wrote.
    ids: Option<Ids>,
    /// The file's length after this sink's last write (or read of its tail);
    /// `None` when unknown (a write failed part-way).
    len: Option<u64>,
}

struct Chain {
    /// As of the last write that ended.
    at: Head,
    /// A write is in progress, without the lock: the one writer at a time
    /// ([`Shared::write`]).
    writing: bool,
    /// How many wait for it to end (a wake-up is a system call).
    waiting: usize,
    signer: Option<Arc<KeyPair>>,
    cadence: Cadence,
    /// Records appended to be written behind, in order, serialized: the
    /// next write chains and writes them first.
    behind: Vec<Body>,
    /// The ids of the last of them.
    behind_ids: Option<Ids>,
    /// When the first of them was appended.
    behind_since: Option<Instant>,
    write_behind: WriteBehind,
    /// The last write failed with records waiting to be written behind:
    /// until a write succeeds, records are written when appended (and
    /// fail there, closed), so that what waits does not grow.
    behind_failed: bool,
    /// When the sink's thread looks at the chain again by itself: `None`
    /// while it waits to be woken. An appender wakes it (a system call,
    /// costly on a virtual machine) only when it would look too late.
    ticker_wakes: Option<Instant>,
    /// When records were last appended to be written behind: the thread
    /// keeps waking by itself for [`tick::LINGER`] after.
    behind_at: Option<Instant>,
    closing: bool,
}

/// How many records may wait to be written behind while a write is in
/// progress, in batches of `write_behind.records`: past that, an appender
/// waits for the write and writes them itself.
const BATCHES_WAITING: usize = 4;

/// `records` serialized (outside the chain's lock), and the ids of the
/// last of them.
fn queue(records: &[Record]) -> Result<(Vec<Body>, Option<Ids>), AuditError> {
    let bodies = records.iter().map(Body::of).collect::<Result<_, _>>()?;
    Ok((bodies, records.last().map(ids)))
}

fn ids(r: &Record) -> Ids {
    [
        r.invocation.clone(),
        r.task.clone(),
        r.tool.clone(),
        r.identity.clone(),
    ]
}

/// The trail's lock, released when dropped.
struct Held<'a>(&'a File);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        // Closing the file would release it too; an error here leaves
        // nothing to undo.
        let _ = self.0.unlock();
    }
}

impl FileSink {
    /// Opens (creating with mode 0600 if needed) a trail for appending and
    /// continues its chain from the last complete record.
    pub fn open(path: impl AsRef<Path>) -> Result<FileSink, AuditError> {
        let path = path.as_ref().to_owned();
        let file = tail::options()
            .open(&path)
            .and_then(|file| tail::regular(&file).map(|()| file))
            .map_err(|source| AuditError::Io {
                path: path.clone(),
                source,
            })?;
        Self::on(path, file)
    }

    /// A sink on a trail already open (a unit test's `/dev/full`, which no
    /// trail may be, stands for a full disk).
    fn on(path: PathBuf, file: File) -> Result<FileSink, AuditError> {
        let shared = Arc::new(Shared {
            path,
            file,
            state: Mutex::new(Chain {
                at: Head {
                    seq: 0,
                    head: GENESIS.to_owned(),
                    unsigned: 0,
                    unsigned_since: None,
                    ids: None,
                    len: None,
                },
                writing: false,
                waiting: 0,
                signer: None,
                cadence: Cadence::default(),
                behind: Vec::new(),
                behind_ids: None,
                behind_since: None,
                write_behind: WriteBehind::default(),
                behind_failed: false,
                ticker_wakes: None,
                behind_at: None,
                closing: false,
            }),
            wake: Condvar::new(),
            written: Condvar::new(),
        });
        {
            let mut chain = shared.lock();
            let _held = shared.hold()?;
            shared.catch_up(&mut chain.at)?;
        }
        let ticker = {
            let shared = shared.clone();
            // Without the thread, what waits is written by the next write,
            // a flush or the end, and checkpoints come by count, on demand
            // and at the end; only the time bounds are lost.
            std::thread::Builder::new()
                .name("warden-audit".into())
                .spawn(move || shared.tick())
                .inspect_err(|e| tracing::error!("audit trail: cannot start its thread: {e}"))
                .ok()
        };
        if ticker.is_none() {
            shared.lock().write_behind = WriteBehind::OFF;
        }
        Ok(FileSink { shared, ticker })
    }

    /// Signs checkpoints with `signer`'s Ed25519 key, on the default
    /// [`Cadence`].
    pub fn with_signer(self, signer: Arc<KeyPair>) -> FileSink {
        self.shared.lock().signer = Some(signer);
        self
    }

    /// Writes invocation ends behind on `w` instead of the default
    /// ([`WriteBehind::default`]); [`WriteBehind::OFF`] writes each record
    /// when it is appended.
    pub fn with_write_behind(self, w: WriteBehind) -> FileSink {
        let flushed = {
            let mut chain = self.shared.lock();
            if self.ticker.is_some() {
                chain.write_behind = w;
            }
            if w.records == 0 {
                self.shared.flush(chain).1
            } else {
                Ok(())
            }
        };
        if let Err(e) = flushed {
            tracing::error!("audit trail: {e}");
        }
        self
    }

    /// Signs checkpoints on `cadence` instead of the default.
    pub fn with_cadence(self, cadence: Cadence) -> FileSink {
        self.shared.lock().cadence = Cadence {
            records: cadence.records.max(1),
            within: cadence.within,
        };
        self.shared.wake.notify_all();
        self
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Writes a checkpoint now if records follow the trail's last one
    /// (whoever wrote them) and this sink has a signer; returns whether it
    /// wrote one.
    pub fn checkpoint(&self) -> Result<bool, AuditError> {
        self.shared.checkpoint(self.shared.lock()).1
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Chain> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn io(&self, source: std::io::Error) -> AuditError {
        AuditError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Takes the trail's exclusive lock, waiting up to [`LOCK_PATIENCE`]
    /// for another writer to finish its append.
    fn hold(&self) -> Result<Held<'_>, AuditError> {
        let started = Instant::now();
        let mut pause = Duration::from_micros(50);
        loop {
            match self.file.try_lock() {
                Ok(()) => return Ok(Held(&self.file)),
                Err(TryLockError::WouldBlock) if started.elapsed() < LOCK_PATIENCE => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(10));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(AuditError::Locked {
                        path: self.path.clone(),
                        waited: LOCK_PATIENCE,
                    });
                }
                Err(TryLockError::Error(source)) => return Err(self.io(source)),
            }
        }
    }

    /// Writes the records waiting to be written behind, then `adds`, then
    /// what `build` adds (a checkpoint), chained, in one `write`, under the
    /// trail's lock and after catching up with other writers; one write at
    /// a time, in order. The sink's lock is released while it writes:
    /// appenders queue records to be written behind meanwhile (they are
    /// the next write's). On failure nothing is chained (the next record
    /// links to the last written one) and what waited still waits, before
    /// what came meanwhile.
    fn write<'a>(
        &'a self,
        chain: MutexGuard<'a, Chain>,
        adds: &[Body],
        build: impl FnOnce(&mut Head, &mut Vec<u8>) -> Result<(), AuditError>,
    ) -> (MutexGuard<'a, Chain>, Result<(), AuditError>) {
        let mut chain = self.after_writing(chain);
        let batch = std::mem::take(&mut chain.behind);
        let batch_ids = chain.behind_ids.take();
        let batch_since = chain.behind_since.take();
        let mut at = chain.at.clone();
        chain.writing = true;
        drop(chain);
        let writing = Writing(self);

        // As it stands once caught up with other writers, before this write.
        let mut synced = None;
        let written = self.write_out(&mut at, &mut synced, &batch, adds, build);

        let mut chain = self.lock();
        match &written {
            Ok(()) => {
                if let Some(last) = batch_ids {
                    at.ids = Some(last);
                }
                chain.at = at;
                chain.behind_failed = false;
            }
            Err(_) => {
                let newer = std::mem::replace(&mut chain.behind, batch);
                chain.behind.extend(newer);
                if chain.behind_ids.is_none() {
                    chain.behind_ids = batch_ids;
                }
                if let Some(first) = batch_since {
                    chain.behind_since = Some(first);
                    // Due sooner than the sink's thread may look (it
                    // looked while the write had taken them).
                    let due = first + chain.write_behind.within.min(tick::FAR);
                    if chain.wakes_late(due) {
                        self.wake.notify_one();
                    }
                }
                // What waits is not queued onto: appenders write for
                // themselves, and fail closed, until a write succeeds.
                chain.behind_failed = !chain.behind.is_empty();
                if let Some(mut synced) = synced {
                    synced.len = at.len;
                    chain.at = synced;
                }
            }
        }
        chain.writing = false;
        std::mem::forget(writing);
        if chain.waiting > 0 {
            self.written.notify_all();
        }
        (chain, written)
    }

    /// `chain` once no write is in progress.
    fn after_writing<'a>(&'a self, mut chain: MutexGuard<'a, Chain>) -> MutexGuard<'a, Chain> {
        while chain.writing {
            chain.waiting += 1;
            chain = self.written.wait(chain).unwrap_or_else(|p| p.into_inner());
            chain.waiting -= 1;
        }
        chain
    }

    /// [`Shared::write`]'s part without the sink's lock, on `at`.
    fn write_out(
        &self,
        at: &mut Head,
        synced: &mut Option<Head>,
        batch: &[Body],
        adds: &[Body],
        build: impl FnOnce(&mut Head, &mut Vec<u8>) -> Result<(), AuditError>,
    ) -> Result<(), AuditError> {
        let _held = self.hold()?;
        let len = self.catch_up(at)?;
        *synced = Some(at.clone());
        // Room for every line and a checkpoint: the buffer is not grown
        // (copied) while the lines are chained onto it.
        let lines: usize = batch.iter().chain(adds).map(Body::line_len).sum();
        let mut out = Vec::with_capacity(lines + 1024);
        for body in batch.iter().chain(adds) {
            at.push(body, &mut out);
        }
        build(at, &mut out)?;
        if let Err(e) = (&self.file).write_all(&out) {
            // Part of it may be on disk: take it back; if that fails too,
            // the next write reads the tail and cuts it off
            // (`cut_torn_tail`).
            at.len = self.file.set_len(len).is_ok().then_some(len);
            return Err(self.io(e));
        }
        let want = len + out.len() as u64;
        tail::kept(&self.file, want).map_err(|e| {
            at.len = None;
            self.io(e)
        })?;
        at.len = Some(want);
        Ok(())
    }

    /// Appends `records` to be written behind, or now when that is off,
    /// the last background write failed, or enough records wait (while a
    /// write is in progress, up to [`BATCHES_WAITING`] batches). They are
    /// serialized before the chain's lock is taken.
    fn append_behind(&self, records: &[Record]) -> Result<(), AuditError> {
        let (queued, last) = queue(records)?;
        let mut chain = self.lock();
        let w = chain.write_behind;
        let waiting = chain.behind.len() + queued.len();
        let full = if chain.writing {
            waiting >= w.records.saturating_mul(BATCHES_WAITING)
        } else {
            waiting >= w.records
        };
        if chain.behind_failed || full {
            return self.append_queued(chain, queued, last);
        }
        chain.behind.extend(queued);
        if last.is_some() {
            chain.behind_ids = last;
        }
        if chain.behind_since.is_none() {
            let now = Instant::now();
            chain.behind_since = Some(now);
            chain.behind_at = Some(now);
            if chain.wakes_late(now + w.within.min(tick::FAR)) {
                drop(chain);
                self.wake.notify_one();
            }
        }
        Ok(())
    }

    /// Writes what waits to be written behind, if anything, once a write
    /// in progress has ended: everything appended before is then written.
    fn flush<'a>(
        &'a self,
        chain: MutexGuard<'a, Chain>,
    ) -> (MutexGuard<'a, Chain>, Result<(), AuditError>) {
        let chain = self.after_writing(chain);
        if chain.behind.is_empty() {
            return (chain, Ok(()));
        }
        let (mut chain, written) = self.write(chain, &[], |_, _| Ok(()));
        if written.is_ok() {
            self.after_write(&mut chain);
        }
        (chain, written)
    }

    /// Appends `records` (after what waits to be written behind), and a
    /// checkpoint if as many records as the cadence allows are now
    /// unsigned.
    fn append(&self, records: &[Record]) -> Result<(), AuditError> {
        let (queued, last) = queue(records)?;
        self.append_queued(self.lock(), queued, last)
    }

    /// [`Shared::append`] of records already serialized, `last` the ids of
    /// the last of them.
    fn append_queued(
        &self,
        chain: MutexGuard<'_, Chain>,
        queued: Vec<Body>,
        last: Option<Ids>,
    ) -> Result<(), AuditError> {
        let (signer, every) = (chain.signer.clone(), chain.cadence.records);
        let (mut chain, written) = self.write(chain, &queued, |at, out| match signer {
            Some(signer) if at.unsigned >= every => at.checkpoint(&signer, out),
            _ => Ok(()),
        });
        written?;
        if last.is_some() {
            chain.at.ids = last;
        }
        self.after_write(&mut chain);
        Ok(())
    }

    /// Writes a checkpoint if there is a signer and records follow the
    /// trail's last checkpoint; returns whether it wrote one.
    fn checkpoint<'a>(
        &'a self,
        chain: MutexGuard<'a, Chain>,
    ) -> (MutexGuard<'a, Chain>, Result<bool, AuditError>) {
        let Some(signer) = chain.signer.clone() else {
            return (chain, Ok(false));
        };
        let mut wrote = false;
        let (chain, written) = self.write(chain, &[], |at, out| {
            if at.unsigned > 0 {
                at.checkpoint(&signer, out)?;
                wrote = true;
            }
            Ok(())
        });
        (chain, written.map(|()| wrote))
    }
}

/// A write in progress; if it unwinds, the next one may start.
struct Writing<'a>(&'a Shared);

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.0.lock().writing = false;
        self.0.written.notify_all();
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_all();
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
        self.settle();
    }
}

impl Head {
    /// Chains `record` onto `out` (not yet written).
    fn push(&mut self, body: &Body, out: &mut Vec<u8>) {
        self.head = body.line_into(self.seq, &self.head, out);
        self.seq += 1;
        if body.event == Event::Checkpoint {
            self.unsigned = 0;
            self.unsigned_since = None;
        } else {
            self.unsigned += 1;
        }
    }

    /// Chains a checkpoint of everything before it onto `out`.
    fn checkpoint(&mut self, signer: &KeyPair, out: &mut Vec<u8>) -> Result<(), AuditError> {
        let c = checkpoint_record(self.ids.clone(), self.seq, &self.head, signer);
        self.push(&Body::of(&c)?, out);
        Ok(())
    }
}

impl AuditSink for FileSink {
    fn append(&self, record: &Record) -> Result<(), AuditError> {
        self.shared.append(std::slice::from_ref(record))
    }

    fn append_all(&self, records: &[Record]) -> Result<(), AuditError> {
        self.shared.append(records)
    }

    fn append_behind(&self, records: Vec<Record>) -> Result<(), AuditError> {
        self.shared.append_behind(&records)
    }

    fn flush(&self) -> Result<(), AuditError> {
        self.shared.flush(self.shared.lock()).1
    }

    /// Writes what waits and signs what is unsigned now.
    fn settle(&self) {
        if let Err(e) = self.flush().and_then(|()| self.checkpoint()) {
            tracing::error!("audit trail, settling: {e}");
        }
    }
}

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;
#[cfg(test)]
#[path = "file_write_tests.rs"]
mod write_tests;
