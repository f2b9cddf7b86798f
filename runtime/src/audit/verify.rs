//! Verifying a chained trail: the first bad record, or how far it is intact.
//!
//! What is checked, line by line, is what `docs/AUDIT-FORMAT.md` specifies:
//! each line is exactly the bytes Warden's serializer writes for a known
//! record (no unknown field, no other whitespace, order or escaping), its
//! `hash` is the SHA-256 of those bytes up to `,"hash":`, it follows the line
//! before it, and each checkpoint states the records before it and carries a
//! signature by one of the known keys.

use super::line::{GENESIS, checkpoint_message, record_hash};
use super::{Event, FIELDS, RECORD_VERSION, Record};
use crate::keys::Verifier;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::Path;

/// The result of verifying a trail.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Records read (up to the first bad one).
    pub records: u64,
    pub checkpoints: u64,
    /// 1-based line of the last valid checkpoint.
    pub last_checkpoint: Option<u64>,
    /// Records after the last checkpoint: the trail was truncated there, or
    /// its writer stopped before checkpointing them.
    pub uncovered: u64,
    /// Invocations with a start record and no end.
    pub unfinished: Vec<String>,
    /// Checkpoints signed by a key the verifier was not given (the first
    /// line of each such key): their signatures could not be checked.
    pub unknown_keys: Vec<UnknownKey>,
    /// The first bad record.
    pub tampered: Option<Tamper>,
}

/// Where and how a trail was altered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tamper {
    /// 1-based line number.
    pub line: u64,
    pub reason: String,
}

/// A checkpoint signed by a key that is not one of the known keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKey {
    /// 1-based line of its first checkpoint.
    pub line: u64,
    /// The key id the checkpoint names.
    pub kid: String,
}

/// What a report comes to, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// A record was altered, removed, inserted or reordered.
    Tampered,
    /// The chain holds, but a checkpoint is signed by a key the verifier
    /// does not know.
    UnknownKey,
    /// Intact up to its last checkpoint, with records after it or an
    /// invocation without an end.
    Incomplete,
    /// Intact and complete.
    Complete,
}

impl Report {
    /// Intact and complete: every record chained and covered by a checkpoint
    /// signed by a known key, every invocation ended.
    pub fn is_complete(&self) -> bool {
        self.status() == Status::Complete
    }

    pub fn status(&self) -> Status {
        if self.tampered.is_some() {
            Status::Tampered
        } else if !self.unknown_keys.is_empty() {
            Status::UnknownKey
        } else if self.uncovered > 0 || !self.unfinished.is_empty() {
            Status::Incomplete
        } else {
            Status::Complete
        }
    }
}

/// The hash a record should carry (for tools that rebuild a trail).
pub fn rehash(record: &Record) -> String {
    record_hash(record)
}

/// Verifies the trail in `path`. With `keys`, checkpoint signatures must
/// verify against them; without, unsigned and signed checkpoints are only
/// checked for consistency.
pub fn verify(path: &Path, keys: Option<&Verifier>) -> std::io::Result<Report> {
    let file = crate::files::open_regular(path)?;
    // Writers only append: the length between writes bounds a read that
    // ends on a whole record, however long the read takes.
    let held = settled(&file);
    let len = file.metadata().map(|m| m.len());
    if held {
        let _ = file.unlock();
    }
    // Read a line at a time: a trail of any length costs the memory of its
    // longest line, and a line longer than any Warden writes is not read
    // whole.
    let mut reader = std::io::BufReader::with_capacity(1 << 16, std::io::Read::take(file, len?));
    let mut walk = Walk::new(keys);
    let mut line = Vec::new();
    loop {
        line.clear();
        let limit = MAX_LINE as u64 + 1;
        let read = std::io::BufRead::read_until(
            &mut std::io::Read::take(&mut reader, limit),
            b'\n',
            &mut line,
        )?;
        if read == 0 {
            break;
        }
        let whole = line.last() == Some(&b'\n');
        let raw = if whole {
            &line[..line.len() - 1]
        } else {
            &line[..]
        };
        if !walk.line(raw, whole) {
            break;
        }
    }
    Ok(walk.report())
}

/// The longest line [`verify`] reads: Warden cuts every field a tool or an
/// agent fills (a tool's error to 4 KiB, a reason to 600 bytes), so its
/// lines are a few KiB; this is the bound of a torn last line it cuts too.
const MAX_LINE: usize = 64 << 20;

/// Waits (up to [`SETTLE`]) for a writer's write in progress to end, by
/// taking the trail's lock shared: a live trail read half-way through a
/// batch would end in a torn line and read as altered. Whether the lock
/// was taken (if a stopped writer holds it, the trail is read as it is).
fn settled(file: &std::fs::File) -> bool {
    let until = std::time::Instant::now() + SETTLE;
    loop {
        match file.try_lock_shared() {
            Ok(()) => return true,
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < until => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(_) => return false,
        }
    }
}

/// How long [`verify`] waits for a write in progress; a write of a batch
/// takes milliseconds.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(5);

pub fn verify_text(text: &str, keys: Option<&Verifier>) -> Report {
    verify_bytes(text.as_bytes(), keys)
}

/// The suffix of every line: `,"hash":"` 64 hex digits `"}`.
const HASH_TAIL: usize = r#","hash":""}"#.len() + 64;

/// Checks one line's form and hash; the record it holds and its hash.
fn check_line(raw: &[u8]) -> Result<(Record, String), String> {
    let text = std::str::from_utf8(raw)
        .map_err(|_| "not UTF-8 text (the record was edited)".to_owned())?;
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
        .map_err(|_| "not a complete audit record (edited or truncated)".to_owned())?;
    if let Some(field) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        // An edited line's text is quoted cut: it may be megabytes.
        let field: String = field.chars().take(64).collect();
        return Err(format!(
            "unknown field {field:?}: Warden writes no such field (the record was edited)"
        ));
    }
    let record: Record = serde_json::from_str(text).map_err(|e| {
        let e = e.to_string();
        let e = e.split(" at line ").next().unwrap_or_default();
        let e = &e[..e.floor_char_boundary(256)];
        format!("not a Warden audit record: {e} (the record was edited)")
    })?;
    if record.v != RECORD_VERSION {
        return Err(format!(
            "record version {} is not one this verifier knows (expected {RECORD_VERSION})",
            record.v
        ));
    }
    let canonical = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
    if canonical != raw {
        let column = canonical
            .iter()
            .zip(raw)
            .position(|(a, b)| a != b)
            .unwrap_or(canonical.len().min(raw.len()))
            + 1;
        return Err(format!(
            "not in the exact form Warden writes (whitespace, field order or escaping differs at column {column}): the record was edited"
        ));
    }
    // Canonical and with a `hash`: the line ends with `,"hash":"<hex>"}`.
    let hex =
        |h: &String| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let Some(stated) = record.hash.clone().filter(hex) else {
        return Err("has no hash (the record was edited)".into());
    };
    let mut hasher = Sha256::new();
    hasher.update(&raw[..raw.len() - HASH_TAIL]);
    hasher.update(b"}");
    let hash = hex::encode(hasher.finalize());
    if hash != stated {
        return Err("its contents do not match its hash (the record was edited)".into());
    }
    Ok((record, hash))
}

/// Verifies a trail's bytes (see [`verify`]).
pub fn verify_bytes(bytes: &[u8], keys: Option<&Verifier>) -> Report {
    let mut walk = Walk::new(keys);
    for chunk in bytes.split_inclusive(|&b| b == b'\n') {
        let (raw, whole) = match chunk.strip_suffix(b"\n") {
            Some(raw) => (raw, true),
            None => (chunk, false),
        };
        if !walk.line(raw, whole) {
            break;
        }
    }
    walk.report()
}

/// A trail read line by line, from its first: how far it holds.
struct Walk<'k> {
    keys: Option<&'k Verifier>,
    report: Report,
    /// The hash of the last record read.
    head: String,
    /// Invocations started and not yet ended.
    open: BTreeSet<String>,
    since_checkpoint: u64,
}

impl<'k> Walk<'k> {
    fn new(keys: Option<&'k Verifier>) -> Self {
        Walk {
            keys,
            report: Report::default(),
            head: GENESIS.to_owned(),
            open: BTreeSet::new(),
            since_checkpoint: 0,
        }
    }

    /// Checks the next line, without its newline (`whole`: it had one).
    /// Whether to read on: false once a line is bad.
    fn line(&mut self, raw: &[u8], whole: bool) -> bool {
        let seq = self.report.records;
        let line = seq + 1;
        let checked = if raw.len() > MAX_LINE {
            Err(format!(
                "a line of over {} MiB: Warden writes no record that long (the trail was edited)",
                MAX_LINE >> 20
            ))
        } else if whole {
            check_line(raw)
        } else {
            Err("not a complete audit record (edited or truncated)".to_owned())
        };
        let followed = checked.and_then(|(record, hash)| {
            follows(&record, seq, &self.head, self.keys, line, &mut self.report)?;
            Ok((record, hash))
        });
        let (record, hash) = match followed {
            Ok(r) => r,
            Err(reason) => {
                self.refuse(reason);
                return false;
            }
        };
        if record.event == Event::Checkpoint {
            self.report.checkpoints += 1;
            self.report.last_checkpoint = Some(line);
            self.since_checkpoint = 0;
        } else {
            self.since_checkpoint += 1;
        }
        match record.event {
            Event::InvocationStart => {
                self.open.insert(record.invocation.to_string());
            }
            Event::InvocationEnd => {
                self.open.remove(&*record.invocation);
            }
            _ => {}
        }
        self.head = hash;
        self.report.records += 1;
        true
    }

    /// The next line is bad, for `reason`.
    fn refuse(&mut self, reason: String) {
        let line = self.report.records + 1;
        self.report.tampered = Some(Tamper { line, reason });
    }

    fn report(mut self) -> Report {
        self.report.uncovered = self.since_checkpoint;
        self.report.unfinished = self.open.into_iter().collect();
        self.report
    }
}

/// Checks that a well-formed record is record `seq` after `head`, and, for
/// a checkpoint, what it states and its signature.
fn follows(
    record: &Record,
    seq: u64,
    head: &str,
    keys: Option<&Verifier>,
    line: u64,
    report: &mut Report,
) -> Result<(), String> {
    if record.seq != Some(seq) {
        let found = record.seq.map_or("none".into(), |s| s.to_string());
        return Err(format!(
            "expected record #{seq}, found #{found} (a record was removed, inserted or reordered)"
        ));
    }
    if record.prev.as_deref() != Some(head) {
        return Err(
            "does not follow the record before it (a record was removed, inserted or reordered)"
                .into(),
        );
    }
    if record.event != Event::Checkpoint {
        return Ok(());
    }
    if record.count != Some(seq) || record.head.as_deref() != Some(head) {
        return Err("checkpoint does not state the records before it".into());
    }
    let Some(keys) = keys else {
        return Ok(());
    };
    let (Some(kid), Some(sig)) = (&record.key, &record.signature) else {
        return Err("checkpoint is not signed (no key or signature)".into());
    };
    if kid.len() != 16 || !kid.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(
            "checkpoint names a key that is not 16 lower-case hex digits (the record was edited)"
                .into(),
        );
    }
    if !keys.knows(kid) {
        if !report.unknown_keys.iter().any(|k| &k.kid == kid) {
            report.unknown_keys.push(UnknownKey {
                line,
                kid: kid.clone(),
            });
        }
        return Ok(());
    }
    if !keys.verify_raw(kid, checkpoint_message(seq, head).as_bytes(), sig) {
        return Err(format!(
            "checkpoint signature does not verify with key {kid}, which it names"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyPair;
    use crate::audit::{AuditSink, FileSink};
    use std::sync::Arc;

    /// A trail read while a writer is half-way through a write is read as
    /// it stands once the write ends (the writer's lock), not as altered.
    #[test]
    fn a_trail_is_read_between_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let whole = trail(3);
        // Cut after a line's `{"v":`: a torn record.
        let (first, rest) = whole.split_at(whole[..whole.len() / 2].rfind('\n').unwrap() + 6);
        std::fs::write(&path, first).unwrap();
        let writer = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        writer.lock().unwrap();
        let reader = {
            let path = path.clone();
            std::thread::spawn(move || verify(&path, None).unwrap())
        };
        std::thread::sleep(std::time::Duration::from_millis(200));
        std::io::Write::write_all(&mut &writer, rest.as_bytes()).unwrap();
        writer.unlock().unwrap();
        let report = reader.join().unwrap();
        assert!(report.tampered.is_none(), "{report:?}");
        assert_eq!(report.records, 6);
    }

    /// A trail file is read a line at a time, as its bytes are: the same
    /// report, and a line longer than any Warden writes is refused
    /// without being read whole.
    #[test]
    fn a_trail_file_is_read_a_line_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let whole = trail(3);
        let torn = &whole[..whole.len() - 40];
        for text in [&whole[..], torn, "", "\n", "{\"v\":1}\n"] {
            std::fs::write(&path, text).unwrap();
            let (file, bytes) = (
                verify(&path, Some(&keys(3))).unwrap(),
                verify_text(text, Some(&keys(3))),
            );
            assert_eq!(format!("{file:?}"), format!("{bytes:?}"), "{text:?}");
        }
        assert_eq!(verify(&path, None).unwrap().tampered.unwrap().line, 1);

        for end in ["", "\n"] {
            let mut long = whole.clone().into_bytes();
            long.resize(long.len() + MAX_LINE + 1, b'x');
            long.extend_from_slice(end.as_bytes());
            std::fs::write(&path, &long).unwrap();
            let report = verify(&path, Some(&keys(3))).unwrap();
            assert_eq!(report.records, 6);
            assert_eq!(
                report.tampered,
                Some(Tamper {
                    line: 7,
                    reason: "a line of over 64 MiB: Warden writes no record that long (the trail was edited)".into(),
                })
            );
        }
    }

    /// A signed trail of two invocations (start, end, checkpoint each).
    fn trail(seed: u8) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let sink = FileSink::open(&path)
            .unwrap()
            .with_signer(Arc::new(KeyPair::from_seed(&[seed; 32])));
        for i in 0..2 {
            for event in ["invocation.start", "invocation.end"] {
                let r: Record = serde_json::from_str(&format!(
                    r#"{{"v":1,"ts":"t","event":"{event}","invocation":"i{i}","task":"t","tool":"x","identity":"sha256:0","resource":"a/b \"c\" é"}}"#
                ))
                .unwrap();
                sink.append(&r).unwrap();
            }
            // Signed on demand after each invocation.
            sink.settle();
        }
        drop(sink);
        std::fs::read_to_string(&path).unwrap()
    }

    fn keys(seed: u8) -> Verifier {
        Verifier::from_jwks(&KeyPair::from_seed(&[seed; 32]).jwks()).unwrap()
    }

    fn tamper(text: &str) -> Tamper {
        verify_text(text, Some(&keys(3)))
            .tampered
            .expect("tampered")
    }

    #[test]
    fn an_intact_trail_is_complete() {
        let r = verify_text(&trail(3), Some(&keys(3)));
        assert_eq!(r.status(), Status::Complete, "{r:?}");
        assert_eq!((r.records, r.checkpoints), (6, 2));
    }

    #[test]
    fn an_added_field_is_refused_even_when_the_hash_is_kept() {
        let text = trail(3).replacen(
            r#","tool":"x""#,
            r#","tool":"x","approved_by":"security""#,
            2,
        );
        let t = tamper(&text);
        assert_eq!(t.line, 1);
        assert_eq!(
            t.reason,
            r#"unknown field "approved_by": Warden writes no such field (the record was edited)"#
        );
    }

    #[test]
    fn whitespace_order_and_escaping_changes_are_refused() {
        let text = trail(3);
        let lines: Vec<&str> = text.lines().collect();
        let second = lines[1];
        for (what, edited) in [
            ("space", second.replacen(r#""v":1,"#, r#""v": 1,"#, 1)),
            (
                "order",
                second.replacen(r#""task":"t","tool":"x""#, r#""tool":"x","task":"t""#, 1),
            ),
            ("escape", second.replacen("é", "\\u00e9", 1)),
            (
                "null",
                second.replacen(r#","task""#, r#","capability":null,"task""#, 1),
            ),
            ("carriage return", format!("{second}\r")),
        ] {
            let mut all = lines.clone();
            all[1] = &edited;
            let joined: String = all.iter().map(|l| format!("{l}\n")).collect();
            let t = tamper(&joined);
            assert_eq!(t.line, 2, "{what}: {t:?}");
            assert!(
                t.reason.starts_with("not in the exact form Warden writes"),
                "{what}: {t:?}"
            );
        }
    }

    #[test]
    fn a_duplicate_field_and_a_bad_type_are_refused() {
        let text = trail(3);
        let t = tamper(&text.replacen(r#","tool":"x""#, r#","tool":"x","tool":"y""#, 1));
        assert_eq!(t.line, 1);
        assert!(t.reason.contains("duplicate field `tool`"), "{t:?}");
        let t = tamper(&text.replacen(r#""seq":0"#, r#""seq":"0""#, 1));
        assert!(
            t.reason
                .starts_with("not a Warden audit record: invalid type"),
            "{t:?}"
        );
    }

    #[test]
    fn a_foreign_key_is_named_not_reported_as_tampering() {
        let r = verify_text(&trail(3), Some(&keys(4)));
        assert!(r.tampered.is_none(), "{r:?}");
        assert_eq!(r.status(), Status::UnknownKey);
        let kid = KeyPair::from_seed(&[3; 32]).kid().to_owned();
        assert_eq!(r.unknown_keys, [UnknownKey { line: 3, kid }]);
        // No keys at all: the same.
        let r = verify_text(&trail(3), Some(&Verifier::default()));
        assert_eq!(r.status(), Status::UnknownKey);
        // A forged signature under a known key id is still tampering.
        let text = trail(3);
        let sig = text
            .lines()
            .nth(2)
            .and_then(|l| serde_json::from_str::<Record>(l).ok())
            .and_then(|r| r.signature)
            .unwrap();
        let forged = KeyPair::from_seed(&[4; 32]).sign_raw(b"x");
        let t = tamper(&text.replacen(&sig, &forged, 1));
        assert_eq!(t.line, 3);
    }
}
