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

use super::{AuditError, AuditSink, Event, Record};
use crate::caps::identity::Issuer;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
/// follows it go out in one `write`.
pub struct FileSink {
    path: PathBuf,
    state: Mutex<Chain>,
    signer: Option<Arc<Issuer>>,
}

struct Chain {
    file: File,
    /// The next record's `seq`.
    seq: u64,
    /// The last record's hash.
    head: String,
    since_checkpoint: u64,
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
            path,
            state: Mutex::new(Chain {
                file,
                seq,
                head,
                since_checkpoint: 0,
            }),
            signer: None,
        })
    }

    /// Signs checkpoints with `signer`'s Ed25519 key.
    pub fn with_signer(mut self, signer: Arc<Issuer>) -> FileSink {
        self.signer = Some(signer);
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
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
        signer: &Issuer,
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
        let mut chain = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (seq, head, since) = (chain.seq, chain.head.clone(), chain.since_checkpoint);
        let mut out = Vec::with_capacity(1024);
        chain.push(record, &mut out)?;
        // An unsigned checkpoint would prove nothing a reader cannot
        // recompute: without a signer the trail is the hash chain alone.
        if let Some(signer) = self.signer.as_deref()
            && (record.event == Event::InvocationEnd || chain.since_checkpoint >= CHECKPOINT_EVERY)
        {
            chain.checkpoint(record, signer, &mut out)?;
        }
        if let Err(source) = chain.file.write_all(&out) {
            // Nothing was chained: the next record links to the last written one.
            (chain.seq, chain.head, chain.since_checkpoint) = (seq, head, since);
            return Err(AuditError::Io {
                path: self.path.clone(),
                source,
            });
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
