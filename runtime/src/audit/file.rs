//! The file sink: an append-only, hash-chained, checkpointed JSON Lines trail.
//!
//! Each record gets `seq` (its position), `prev` (the hash of the record
//! before it) and `hash` (SHA-256 of the line's bytes before `,"hash":`,
//! closed with `}`: exactly the record's JSON without `hash`). With a
//! signer, after each invocation's end record and every [`CHECKPOINT_EVERY`]
//! records, a `checkpoint` record states `count` (records before it) and
//! `head` (the last record's hash), signed with Ed25519. Without a signer the
//! trail is the hash chain alone.
//! Editing, removing, inserting or reordering a record breaks the chain;
//! re-chaining after an edit cannot reproduce a later signed checkpoint.
//!
//! Signing takes longer than the rest of an invocation's audit work, so a
//! server can defer the checkpoint after an invocation's end
//! ([`FileSink::defer_checkpoints`]) and write it once the result is on its
//! way ([`AuditSink::settle`]): the caller does not wait for the signature,
//! and the checkpoint still comes right after the end record — the next
//! record writes an owed checkpoint first, and dropping the sink writes it.
//!
//! The format, byte for byte, is `docs/AUDIT-FORMAT.md`.

use super::{AuditError, AuditSink, Event, Record};
use crate::keys::KeyPair;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A checkpoint at least this often, besides one after each invocation.
pub const CHECKPOINT_EVERY: u64 = 256;
/// `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The SHA-256 (hex) of a record's JSON without its `hash` field.
pub fn record_hash(record: &Record) -> String {
    let mut r = record.clone();
    r.hash = None;
    hex::encode(Sha256::digest(serde_json::to_vec(&r).unwrap_or_default()))
}

/// A record's line chained at `seq` after `prev`: exactly the JSON that
/// serializing the record with `seq`, `prev` and `hash` set gives, built with
/// one serialization: `seq` and `prev` are spliced in after the leading
/// `{"v":1,` and `hash` (of the bytes before it) appended as the last field.
fn line_of(record: &Record, seq: u64, prev: &str) -> Result<(Vec<u8>, String), AuditError> {
    let err = |e: serde_json::Error| AuditError::Sink(e.to_string());
    let body = serde_json::to_vec(record).map_err(err)?;
    let lead = format!("{{\"v\":{},", record.v);
    let mut json = Vec::with_capacity(body.len() + 160);
    if record.seq.is_none()
        && record.prev.is_none()
        && record.hash.is_none()
        && body.starts_with(lead.as_bytes())
    {
        json.extend_from_slice(lead.as_bytes());
        json.extend_from_slice(format!("\"seq\":{seq},\"prev\":\"{prev}\",").as_bytes());
        json.extend_from_slice(&body[lead.len()..]);
    } else {
        let mut r = record.clone();
        (r.seq, r.prev, r.hash) = (Some(seq), Some(prev.to_owned()), None);
        json = serde_json::to_vec(&r).map_err(err)?;
    }
    let hash = hex::encode(Sha256::digest(&json));
    json.pop(); // the closing brace
    json.extend_from_slice(b",\"hash\":\"");
    json.extend_from_slice(hash.as_bytes());
    json.extend_from_slice(b"\"}\n");
    Ok((json, hash))
}

/// What a checkpoint signature covers.
pub fn checkpoint_message(count: u64, head: &str) -> String {
    format!("warden-audit-checkpoint/1 {count} {head}")
}

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

/// Appends chained records as JSON Lines; a record and the checkpoint that
/// follows it go out in one `write` (unless checkpoints are deferred).
///
/// Several sinks, in one process or many, can append to one trail: each
/// append holds an exclusive advisory lock (`flock`) on the file, and when
/// the file's length is not what this sink last left it at, another writer
/// has appended, so the chain continues from the trail's last record. One
/// chain results, whoever writes.
pub struct FileSink {
    path: PathBuf,
    file: File,
    state: Mutex<Chain>,
    signer: Option<Arc<KeyPair>>,
    defer: bool,
}

struct Chain {
    /// The next record's `seq`.
    seq: u64,
    /// The last record's hash.
    head: String,
    since_checkpoint: u64,
    /// The file's length after this sink's last write (or read of its tail);
    /// `None` when unknown (a write failed part-way).
    len: Option<u64>,
    /// The end record whose checkpoint is owed (deferred); nothing else is
    /// chained until it is written.
    owed: Option<Record>,
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
        let sink = FileSink {
            path,
            file,
            state: Mutex::new(Chain {
                seq: 0,
                head: GENESIS.to_owned(),
                since_checkpoint: 0,
                len: None,
                owed: None,
            }),
            signer: None,
            defer: false,
        };
        {
            let mut chain = sink.lock();
            let _held = sink.hold()?;
            sink.catch_up(&mut chain)?;
        }
        Ok(sink)
    }

    /// Signs checkpoints with `signer`'s Ed25519 key.
    pub fn with_signer(mut self, signer: Arc<KeyPair>) -> FileSink {
        self.signer = Some(signer);
        self
    }

    /// Defers the checkpoint after an invocation's end until [`settle`]
    /// (or the next record, or dropping the sink), for callers that can
    /// sign once the result is on its way. Without a signer this changes
    /// nothing. (Another writer's records may then come between the end
    /// record and its checkpoint; the checkpoint covers them too.)
    ///
    /// [`settle`]: AuditSink::settle
    pub fn defer_checkpoints(mut self) -> FileSink {
        self.defer = true;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

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
    /// continues the chain from its last record.
    fn catch_up(&self, chain: &mut Chain) -> Result<u64, AuditError> {
        let mut len = self.file.metadata().map_err(|e| self.io(e))?.len();
        if chain.len != Some(len) {
            len = self.cut_torn_tail(len)?;
            let last = last_record(&self.file, len).map_err(|e| self.io(e))?;
            (chain.seq, chain.head) = match last {
                Some(r) => (
                    r.seq.unwrap_or(0) + 1,
                    r.hash.unwrap_or_else(|| GENESIS.into()),
                ),
                None => (0, GENESIS.to_owned()),
            };
            chain.len = Some(len);
        }
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

    /// Under the trail's lock: catches up with other writers, chains what
    /// `build` adds to a buffer, and writes it in one `write`. On failure
    /// nothing is chained: the next record links to the last written one.
    fn write_locked(
        &self,
        chain: &mut Chain,
        build: impl FnOnce(&mut Chain, &mut Vec<u8>) -> Result<(), AuditError>,
    ) -> Result<(), AuditError> {
        let _held = self.hold()?;
        let len = self.catch_up(chain)?;
        let saved = (chain.seq, chain.head.clone(), chain.since_checkpoint);
        let mut out = Vec::with_capacity(1024);
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
                Ok(())
            }
            Err(e) => {
                (chain.seq, chain.head, chain.since_checkpoint) = saved;
                // Take back what part of it reached the disk; if that fails
                // too, the next append cuts it off (`cut_torn_tail`).
                if chain.len.is_none() && self.file.set_len(len).is_ok() {
                    chain.len = Some(len);
                }
                Err(e)
            }
        }
    }

    /// Writes the owed checkpoint, if any.
    fn pay(&self, chain: &mut Chain) -> Result<(), AuditError> {
        let (Some(signer), Some(end)) = (self.signer.as_deref(), chain.owed.take()) else {
            return Ok(());
        };
        let paid = self.write_locked(chain, |chain, out| chain.checkpoint(&end, signer, out));
        if paid.is_err() {
            chain.owed = Some(end);
        }
        paid
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        self.settle();
    }
}

impl Chain {
    /// Chains `record` onto `out` (not yet written).
    fn push(&mut self, record: &Record, out: &mut Vec<u8>) -> Result<(), AuditError> {
        let (line, hash) = line_of(record, self.seq, &self.head)?;
        out.extend_from_slice(&line);
        self.seq += 1;
        self.head = hash;
        self.since_checkpoint += 1;
        Ok(())
    }

    fn checkpoint(
        &mut self,
        template: &Record,
        signer: &KeyPair,
        out: &mut Vec<u8>,
    ) -> Result<(), AuditError> {
        let mut c = template.clone();
        c.event = Event::Checkpoint;
        for f in [
            &mut c.capability,
            &mut c.action,
            &mut c.resource,
            &mut c.decision,
            &mut c.rule,
            &mut c.reason,
        ] {
            *f = None;
        }
        c.duration_us = None;
        c.outcome = None;
        c.message = None;
        c.count = Some(self.seq);
        c.head = Some(self.head.clone());
        c.signature = Some(signer.sign_raw(checkpoint_message(self.seq, &self.head).as_bytes()));
        c.key = Some(signer.kid().to_owned());
        self.push(&c, out)?;
        self.since_checkpoint = 0;
        Ok(())
    }
}

impl AuditSink for FileSink {
    fn append(&self, record: &Record) -> Result<(), AuditError> {
        let mut chain = self.lock();
        let end = record.event == Event::InvocationEnd;
        // An unsigned checkpoint would prove nothing a reader cannot
        // recompute: without a signer the trail is the hash chain alone.
        let signer = self.signer.as_deref();
        let owe = signer.is_some() && end && self.defer;
        let owed = chain.owed.take();
        let written = self.write_locked(&mut chain, |chain, out| {
            // An owed checkpoint comes first.
            if let (Some(signer), Some(owed)) = (signer, &owed) {
                chain.checkpoint(owed, signer, out)?;
            }
            chain.push(record, out)?;
            if let Some(signer) = signer
                && !owe
                && (end || chain.since_checkpoint >= CHECKPOINT_EVERY)
            {
                chain.checkpoint(record, signer, out)?;
            }
            Ok(())
        });
        match written {
            Ok(()) if owe => chain.owed = Some(record.clone()),
            Ok(()) => {}
            Err(e) => {
                chain.owed = owed;
                return Err(e);
            }
        }
        Ok(())
    }

    fn settle(&self) {
        let mut chain = self.lock();
        if let Err(e) = self.pay(&mut chain) {
            tracing::error!("audit trail {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;
