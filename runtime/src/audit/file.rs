//! The file sink: an append-only, hash-chained, checkpointed JSON Lines trail.
//!
//! Each record gets `seq` (its position), `prev` (the hash of the record
//! before it) and `hash` (SHA-256 of the record's JSON without `hash`). With a
//! signer, after each invocation's end record and every [`CHECKPOINT_EVERY`]
//! records, a `checkpoint` record states `count` (records before it) and
//! `head` (the last record's hash), signed with Ed25519. Without a signer the
//! trail is the hash chain alone.
//! Editing, removing, inserting or reordering a record breaks the chain;
//! re-chaining after an edit cannot reproduce a later signed checkpoint.
//!
//! Signing takes longer than the rest of an invocation's audit work, so a
//! server can have a background thread sign the checkpoint after an
//! invocation's end ([`FileSink::sign_in_background`]): the caller gets its
//! result without waiting for the signature, and the checkpoint still comes
//! right after the end record — the next record waits for it (signing it
//! itself if the thread has not yet), and dropping or settling the sink
//! writes it.

use super::{AuditError, AuditSink, Event, Record};
use crate::caps::identity::Issuer;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

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

/// The last complete chained record of a trail, reading only its tail (a
/// trail grows for as long as it is kept; opening it must not read it all).
fn last_record(path: &Path) -> std::io::Result<Option<Record>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut window: u64 = 64 << 10;
    loop {
        let start = len.saturating_sub(window);
        file.seek(SeekFrom::Start(start))?;
        let mut tail = Vec::new();
        (&mut file).take(window).read_to_end(&mut tail)?;
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

/// Appends chained records as JSON Lines; a record and the checkpoint that
/// follows it go out in one `write` (unless signing in the background).
pub struct FileSink {
    shared: Arc<Shared>,
    background: Option<JoinHandle<()>>,
}

struct Shared {
    path: PathBuf,
    state: Mutex<Chain>,
    signer: Option<Arc<Issuer>>,
    /// Wakes the background signer.
    wake: Condvar,
}

struct Chain {
    file: File,
    /// The next record's `seq`.
    seq: u64,
    /// The last record's hash.
    head: String,
    since_checkpoint: u64,
    /// The end record whose checkpoint the background signer owes; nothing
    /// else is chained until it is written.
    owed: Option<Record>,
    /// Why the background signer could not write a checkpoint: the next
    /// append fails with it (the trail fails closed).
    failed: Option<std::io::Error>,
    closing: bool,
}

impl FileSink {
    /// Opens (creating with mode 0600 if needed) a trail for appending and
    /// continues its chain from the last complete record.
    pub fn open(path: impl AsRef<Path>) -> Result<FileSink, AuditError> {
        let path = path.as_ref().to_owned();
        let io = |source| AuditError::Io {
            path: path.clone(),
            source,
        };
        let mut opts = OpenOptions::new();
        opts.append(true).create(true).read(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let file = opts.open(&path).map_err(io)?;
        let last = last_record(&path).map_err(io)?;
        let (seq, head) = match last {
            Some(r) => (
                r.seq.unwrap_or(0) + 1,
                r.hash.unwrap_or_else(|| GENESIS.into()),
            ),
            None => (0, GENESIS.to_owned()),
        };
        Ok(FileSink {
            shared: Arc::new(Shared {
                path,
                state: Mutex::new(Chain {
                    file,
                    seq,
                    head,
                    since_checkpoint: 0,
                    owed: None,
                    failed: None,
                    closing: false,
                }),
                signer: None,
                wake: Condvar::new(),
            }),
            background: None,
        })
    }

    /// Signs checkpoints with `signer`'s Ed25519 key.
    pub fn with_signer(mut self, signer: Arc<Issuer>) -> FileSink {
        self.settle();
        self.stop();
        // Not shared yet: no thread has started.
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.signer = Some(signer);
        }
        self
    }

    /// Signs the checkpoint after an invocation's end on a background
    /// thread, off the caller's path (for servers, where the caller is
    /// waiting for the result). Without a signer this does nothing.
    pub fn sign_in_background(mut self) -> Result<FileSink, AuditError> {
        if self.shared.signer.is_none() || self.background.is_some() {
            return Ok(self);
        }
        let shared = self.shared.clone();
        let thread = std::thread::Builder::new()
            .name("warden-audit-signer".into())
            .spawn(move || shared.sign_owed_checkpoints())
            .map_err(|source| AuditError::Io {
                path: self.shared.path.clone(),
                source,
            })?;
        self.background = Some(thread);
        Ok(self)
    }

    /// Writes an owed checkpoint now (before a process exits, say).
    pub fn settle(&self) {
        let mut chain = self.shared.lock();
        if let Err(e) = self.shared.pay(&mut chain) {
            tracing::error!("audit trail {}: {e}", self.shared.path.display());
        }
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    fn stop(&mut self) {
        if let Some(thread) = self.background.take() {
            self.shared.lock().closing = true;
            self.shared.wake.notify_all();
            let _ = thread.join();
        }
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        self.stop();
        self.settle();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Chain> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the owed checkpoint, if any, signing it on this thread.
    fn pay(&self, chain: &mut Chain) -> Result<(), AuditError> {
        let (Some(signer), Some(end)) = (self.signer.as_deref(), chain.owed.take()) else {
            return Ok(());
        };
        let signature = signer.sign_raw(checkpoint_message(chain.seq, &chain.head).as_bytes());
        self.write_checkpoint(chain, &end, signer, signature)
    }

    fn write_checkpoint(
        &self,
        chain: &mut Chain,
        end: &Record,
        signer: &Issuer,
        signature: String,
    ) -> Result<(), AuditError> {
        let (seq, head, since) = (chain.seq, chain.head.clone(), chain.since_checkpoint);
        let mut out = Vec::with_capacity(1024);
        chain.checkpoint(end, signer, signature, &mut out)?;
        if let Err(source) = chain.file.write_all(&out) {
            (chain.seq, chain.head, chain.since_checkpoint) = (seq, head, since);
            return Err(AuditError::Io {
                path: self.path.clone(),
                source,
            });
        }
        Ok(())
    }

    /// The background signer: signs each owed checkpoint without holding
    /// the lock, and writes it unless an append has written it meanwhile.
    fn sign_owed_checkpoints(&self) {
        let Some(signer) = self.signer.as_deref() else {
            return;
        };
        let mut chain = self.lock();
        loop {
            if chain.closing {
                return;
            }
            let Some(end) = chain.owed.clone() else {
                chain = self.wake.wait(chain).unwrap_or_else(|p| p.into_inner());
                continue;
            };
            let (seq, head) = (chain.seq, chain.head.clone());
            drop(chain);
            let signature = signer.sign_raw(checkpoint_message(seq, &head).as_bytes());
            chain = self.lock();
            if chain.owed.is_some() && chain.seq == seq {
                chain.owed = None;
                if let Err(e) = self.write_checkpoint(&mut chain, &end, signer, signature) {
                    chain.failed = Some(match e {
                        AuditError::Io { source, .. } => source,
                        other => std::io::Error::other(other.to_string()),
                    });
                }
            }
        }
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

    /// Chains a checkpoint of the records so far onto `out`; `signature`
    /// signs [`checkpoint_message`] of this chain's `seq` and `head`.
    fn checkpoint(
        &mut self,
        template: &Record,
        signer: &Issuer,
        signature: String,
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
        c.signature = Some(signature);
        c.key = Some(signer.kid().to_owned());
        self.push(&c, out)?;
        self.since_checkpoint = 0;
        Ok(())
    }
}

impl AuditSink for FileSink {
    fn append(&self, record: &Record) -> Result<(), AuditError> {
        let shared = &self.shared;
        let mut chain = shared.lock();
        if let Some(source) = chain.failed.take() {
            return Err(AuditError::Io {
                path: shared.path.clone(),
                source,
            });
        }
        // The checkpoint owed by the background signer comes first.
        shared.pay(&mut chain)?;
        let (seq, head, since) = (chain.seq, chain.head.clone(), chain.since_checkpoint);
        let mut out = Vec::with_capacity(1024);
        chain.push(record, &mut out)?;
        let mut owe = false;
        // An unsigned checkpoint would prove nothing a reader cannot
        // recompute: without a signer the trail is the hash chain alone.
        if let Some(signer) = shared.signer.as_deref() {
            let end = record.event == Event::InvocationEnd;
            if end && self.background.is_some() {
                owe = true;
            } else if end || chain.since_checkpoint >= CHECKPOINT_EVERY {
                let message = checkpoint_message(chain.seq, &chain.head);
                let signature = signer.sign_raw(message.as_bytes());
                chain.checkpoint(record, signer, signature, &mut out)?;
            }
        }
        if let Err(source) = chain.file.write_all(&out) {
            // Nothing was chained: the next record links to the last written one.
            (chain.seq, chain.head, chain.since_checkpoint) = (seq, head, since);
            return Err(AuditError::Io {
                path: shared.path.clone(),
                source,
            });
        }
        if owe {
            chain.owed = Some(record.clone());
            drop(chain);
            shared.wake.notify_one();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopening_a_long_trail_reads_its_tail_and_continues_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let record = |i: u64| -> Record {
            serde_json::from_str(&format!(
                r#"{{"v":1,"ts":"t","event":"log","invocation":"i{i}","task":"t","tool":"x","identity":"sha256:0","message":"{}"}}"#,
                "m".repeat(300)
            ))
            .unwrap()
        };
        let sink = FileSink::open(&path).unwrap();
        for i in 0..1000 {
            sink.append(&record(i)).unwrap();
        }
        drop(sink);
        // ~400 KB: several tail windows' worth.
        let sink = FileSink::open(&path).unwrap();
        sink.append(&record(1000)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let report = crate::audit::verify::verify_text(&text, None);
        assert!(report.tampered.is_none(), "{report:?}");
        assert_eq!(report.records, 1001);
    }

    fn event(event: &str, i: u64) -> Record {
        serde_json::from_str(&format!(
            r#"{{"v":1,"ts":"t","event":"{event}","invocation":"i{i}","task":"t","tool":"x","identity":"sha256:0"}}"#
        ))
        .unwrap()
    }

    fn events(text: &str) -> Vec<Event> {
        text.lines()
            .map(|l| serde_json::from_str::<Record>(l).unwrap().event)
            .collect()
    }

    #[test]
    fn background_signing_puts_each_checkpoint_right_after_its_end_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let key = Issuer::from_seed(&[5; 32]);
        let sink = FileSink::open(&path)
            .unwrap()
            .with_signer(Arc::new(Issuer::from_seed(&[5; 32])))
            .sign_in_background()
            .unwrap();
        assert!(sink.background.is_some());
        for i in 0..50 {
            sink.append(&event("invocation.start", i)).unwrap();
            sink.append(&event("invocation.end", i)).unwrap();
            // Sometimes the next record races the signer; sometimes the
            // signer has long finished.
            if i % 2 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
        // The last checkpoint is owed until settled or dropped.
        drop(sink);
        let text = std::fs::read_to_string(&path).unwrap();
        let expected: Vec<Event> = (0..50)
            .flat_map(|_| {
                [
                    Event::InvocationStart,
                    Event::InvocationEnd,
                    Event::Checkpoint,
                ]
            })
            .collect();
        assert_eq!(events(&text), expected);
        let verifier = crate::Verifier::from_jwks(&key.jwks()).unwrap();
        let report = crate::audit::verify::verify_text(&text, Some(&verifier));
        assert!(report.is_complete(), "{report:?}");
        assert_eq!((report.records, report.checkpoints), (150, 50));
    }

    #[test]
    fn settle_writes_the_owed_checkpoint_and_the_sink_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let sink = FileSink::open(&path)
            .unwrap()
            .with_signer(Arc::new(Issuer::from_seed(&[5; 32])))
            .sign_in_background()
            .unwrap();
        sink.append(&event("invocation.end", 0)).unwrap();
        sink.settle();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(events(&text), [Event::InvocationEnd, Event::Checkpoint]);
        sink.append(&event("log", 1)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(events(&text).len(), 3);
    }

    #[test]
    fn spliced_lines_are_what_the_verifier_recomputes() {
        let mut r: Record = serde_json::from_str(
            r#"{"v":1,"ts":"t","event":"decision","invocation":"i","task":"t","tool":"x","identity":"sha256:0","reason":"a \"quoted\" reason"}"#,
        )
        .unwrap();
        let (line, hash) = line_of(&r, 7, GENESIS).unwrap();
        let parsed: Record = serde_json::from_slice(&line).unwrap();
        assert_eq!(
            (parsed.seq, parsed.prev.as_deref()),
            (Some(7), Some(GENESIS))
        );
        assert_eq!(parsed.hash.as_deref(), Some(hash.as_str()));
        assert_eq!(record_hash(&parsed), hash);
        assert_eq!(serde_json::to_vec(&parsed).unwrap(), line[..line.len() - 1]);
        // The fallback path gives the same bytes.
        r.seq = Some(0);
        let (other, _) = line_of(&r, 7, GENESIS).unwrap();
        assert_eq!(other, line);
    }
}
