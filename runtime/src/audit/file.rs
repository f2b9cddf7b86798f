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

#[path = "file_tick.rs"]
mod tick;

pub use tick::{Cadence, WriteBehind};

use super::line::{Body, GENESIS, Ids, checkpoint_record};
use super::{AuditError, AuditSink, Event, Record};
use crate::keys::KeyPair;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The last complete chained record of a trail of `len` bytes, reading only
/// its tail (a trail grows for as long as it is kept; appending must not
/// read it all).
fn last_record(mut file: &File, len: u64) -> std::io::Result<Option<Record>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut window: u64 = 64 << 10;
    loop {
        let start = len.saturating_sub(window);
        file.seek(SeekFrom::Start(start))?;
        let mut tail = Vec::new();
        file.take(len - start).read_to_end(&mut tail)?;
        let text = String::from_utf8_lossy(&tail);
        // The first line of a window that does not start the file may be cut.
        let lines = text.lines().skip(usize::from(start > 0));
        let found = lines.collect::<Vec<_>>().into_iter().rev().find_map(|l| {
            serde_json::from_str::<Record>(l)
                .ok()
                .filter(|r| r.seq.is_some())
        });
        if found.is_some() || start == 0 {
            return Ok(found);
        }
        window *= 4;
    }
}

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
}

struct Chain {
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
    /// The last background write failed: until a write succeeds, records
    /// are written when appended (and fail there, closed).
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
        let mut opts = OpenOptions::new();
        opts.append(true).create(true).read(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let file = opts.open(&path).map_err(|source| AuditError::Io {
            path: path.clone(),
            source,
        })?;
        let shared = Arc::new(Shared {
            path,
            file,
            state: Mutex::new(Chain {
                seq: 0,
                head: GENESIS.to_owned(),
                unsigned: 0,
                unsigned_since: None,
                ids: None,
                len: None,
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
        });
        {
            let mut chain = shared.lock();
            let _held = shared.hold()?;
            shared.catch_up(&mut chain)?;
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
                self.shared.flush(&mut chain)
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
        let mut chain = self.shared.lock();
        self.shared.checkpoint(&mut chain)
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

    /// With the lock held: when the trail is not as this sink left it,
    /// continues the chain from its last record (a checkpoint there covers
    /// everything before it, this sink's records too).
    fn catch_up(&self, chain: &mut Chain) -> Result<u64, AuditError> {
        let len = self.file.metadata().map_err(|e| self.io(e))?.len();
        if chain.len == Some(len) {
            return Ok(len);
        }
        self.resync(chain, len)
    }

    /// [`Shared::catch_up`] when another writer appended: a call of its own,
    /// so that its frame (a record read back, ~3 KiB) is not on the stack of
    /// every append, which may be a waiting tool's fiber stack.
    #[cold]
    #[inline(never)]
    fn resync(&self, chain: &mut Chain, len: u64) -> Result<u64, AuditError> {
        const EDITED: &str = "its last record's seq or hash was edited (expected a seq below the largest and 64 hex digits): `warden audit verify` shows where";
        let len = self.cut_torn_tail(len)?;
        let last = last_record(&self.file, len).map_err(|e| self.io(e))?;
        (chain.seq, chain.head) = match &last {
            // Chained onto raw: an edited hash or seq must not break (or
            // overflow into) the next line.
            Some(r) => match (r.seq.unwrap_or(0).checked_add(1), r.hash.as_deref()) {
                (Some(seq), None) => (seq, GENESIS.to_owned()),
                (Some(seq), Some(h))
                    if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) =>
                {
                    (seq, h.to_owned())
                }
                _ => return Err(self.io(std::io::Error::other(EDITED))),
            },
            None => (0, GENESIS.to_owned()),
        };
        match last {
            None => chain.unsigned = 0,
            Some(r) if r.event == Event::Checkpoint => chain.unsigned = 0,
            Some(r) => {
                chain.unsigned = chain.unsigned.max(1);
                chain
                    .ids
                    .get_or_insert([r.invocation, r.task, r.tool, r.identity]);
            }
        }
        if chain.unsigned == 0 {
            chain.unsigned_since = None;
        }
        chain.len = Some(len);
        Ok(len)
    }

    /// With the lock held: a trail that does not end with a newline ends in
    /// a record whose write never completed (its writer was killed
    /// mid-`write`, or the disk filled). That record was never written, so
    /// the action it would have allowed never ran: the torn line is cut off,
    /// so that the next record starts a line of its own instead of merging
    /// into it. Returns the trail's length after.
    fn cut_torn_tail(&self, len: u64) -> Result<u64, AuditError> {
        use std::os::unix::fs::FileExt;
        let mut last = [0u8; 1];
        if len == 0 {
            return Ok(0);
        }
        self.file
            .read_exact_at(&mut last, len - 1)
            .map_err(|e| self.io(e))?;
        if last[0] == b'\n' {
            return Ok(len);
        }
        // Find the start of the torn line, reading back in blocks.
        let mut end = len;
        let mut block = vec![0u8; 64 << 10];
        let keep = loop {
            let start = end.saturating_sub(block.len() as u64);
            let chunk = &mut block[..(end - start) as usize];
            self.file
                .read_exact_at(chunk, start)
                .map_err(|e| self.io(e))?;
            if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
                break start + i as u64 + 1;
            }
            if start == 0 {
                break 0;
            }
            end = start;
        };
        tracing::warn!(
            "audit trail {}: cut off a torn last line ({} bytes) left by a write that never completed",
            self.path.display(),
            len - keep
        );
        self.file.set_len(keep).map_err(|e| self.io(e))?;
        Ok(keep)
    }

    /// Under the trail's lock: catches up with other writers, chains the
    /// records waiting to be written behind, then `adds`, then what `build`
    /// adds (a checkpoint) to a buffer, and writes it in one `write`. On
    /// failure nothing is chained (the next record links to the last
    /// written one) and what waited still waits.
    fn write_locked(
        &self,
        chain: &mut Chain,
        adds: &[Body],
        build: impl FnOnce(&mut Chain, &mut Vec<u8>) -> Result<(), AuditError>,
    ) -> Result<(), AuditError> {
        let _held = self.hold()?;
        let len = self.catch_up(chain)?;
        let saved = (
            chain.seq,
            chain.head.clone(),
            chain.unsigned,
            chain.unsigned_since,
        );
        // Room for every line and a checkpoint: the buffer is not grown
        // (copied) while the lines are chained onto it.
        let lines: usize = chain.behind.iter().chain(adds).map(Body::line_len).sum();
        let mut out = Vec::with_capacity(lines + 1024);
        let behind = std::mem::take(&mut chain.behind);
        for body in behind.iter().chain(adds) {
            chain.push(body, &mut out);
        }
        let written = build(chain, &mut out).and_then(|()| {
            (&self.file).write_all(&out).map_err(|e| {
                // Part of it may be on disk: read the tail next time.
                chain.len = None;
                self.io(e)
            })
        });
        match written {
            Ok(()) => {
                chain.len = Some(len + out.len() as u64);
                if let Some(last) = chain.behind_ids.take() {
                    chain.ids = Some(last);
                }
                chain.behind_since = None;
                chain.behind_failed = false;
                Ok(())
            }
            Err(e) => {
                chain.behind = behind;
                (chain.seq, chain.head, chain.unsigned, chain.unsigned_since) = saved;
                // Take back what part of it reached the disk; if that fails
                // too, the next append cuts it off (`cut_torn_tail`).
                if chain.len.is_none() && self.file.set_len(len).is_ok() {
                    chain.len = Some(len);
                }
                Err(e)
            }
        }
    }

    /// Appends `records` to be written behind, or now when that is off,
    /// the last background write failed, or enough records wait. They are
    /// serialized before the chain's lock is taken.
    fn append_behind(&self, records: &[Record]) -> Result<(), AuditError> {
        let (queued, last) = queue(records)?;
        let mut chain = self.lock();
        let w = chain.write_behind;
        if chain.behind_failed || chain.behind.len() + queued.len() >= w.records {
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

    /// Writes what waits to be written behind, if anything.
    fn flush(&self, chain: &mut Chain) -> Result<(), AuditError> {
        if chain.behind.is_empty() {
            return Ok(());
        }
        self.write_locked(chain, &[], |_, _| Ok(()))?;
        self.after_write(chain);
        Ok(())
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
        mut chain: MutexGuard<'_, Chain>,
        queued: Vec<Body>,
        last: Option<Ids>,
    ) -> Result<(), AuditError> {
        self.write_locked(&mut chain, &queued, |chain, out| {
            if let Some(signer) = chain.signer.clone()
                && chain.unsigned >= chain.cadence.records
            {
                chain.checkpoint(&signer, out)?;
            }
            Ok(())
        })?;
        if last.is_some() {
            chain.ids = last;
        }
        self.after_write(&mut chain);
        Ok(())
    }

    /// Writes a checkpoint if there is a signer and records follow the
    /// trail's last checkpoint; returns whether it wrote one.
    fn checkpoint(&self, chain: &mut Chain) -> Result<bool, AuditError> {
        let Some(signer) = chain.signer.clone() else {
            return Ok(false);
        };
        let mut wrote = false;
        self.write_locked(chain, &[], |chain, out| {
            if chain.unsigned > 0 {
                chain.checkpoint(&signer, out)?;
                wrote = true;
            }
            Ok(())
        })?;
        Ok(wrote)
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

impl Chain {
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
        self.shared.flush(&mut self.shared.lock())
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
