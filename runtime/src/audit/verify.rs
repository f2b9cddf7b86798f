//! Verifying a chained trail: the first bad record, or how far it is intact.

use super::file::{GENESIS, checkpoint_message, record_hash};
use super::{Event, Record};
use crate::keys::Verifier;
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

impl Report {
    /// Intact and complete: every record chained and covered by a checkpoint,
    /// every invocation ended.
    pub fn is_complete(&self) -> bool {
        self.tampered.is_none() && self.uncovered == 0 && self.unfinished.is_empty()
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
    let text = std::fs::read_to_string(path)?;
    Ok(verify_text(&text, keys))
}

pub fn verify_text(text: &str, keys: Option<&Verifier>) -> Report {
    let mut report = Report::default();
    let mut head = GENESIS.to_owned();
    let mut open: BTreeSet<String> = BTreeSet::new();
    let mut since_checkpoint = 0;
    let bad = |line: u64, reason: String, report: &mut Report| {
        report.tampered = Some(Tamper { line, reason });
    };
    let ends_cleanly = text.is_empty() || text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    for (i, raw) in lines.iter().enumerate() {
        let line = i as u64 + 1;
        let is_last = i + 1 == lines.len();
        let record: Record = match serde_json::from_str(raw) {
            Ok(r) if !is_last || ends_cleanly => r,
            _ => {
                bad(
                    line,
                    "not a complete audit record (edited or truncated)".into(),
                    &mut report,
                );
                break;
            }
        };
        if record.seq != Some(i as u64) {
            let found = record.seq.map_or("none".into(), |s| s.to_string());
            bad(
                line,
                format!(
                    "expected record #{i}, found #{found} (a record was removed, inserted or reordered)"
                ),
                &mut report,
            );
            break;
        }
        if record.prev.as_deref() != Some(head.as_str()) {
            bad(line, "does not follow the record before it (a record was removed, inserted or reordered)".into(), &mut report);
            break;
        }
        let hash = record_hash(&record);
        if record.hash.as_deref() != Some(hash.as_str()) {
            bad(
                line,
                "its contents do not match its hash (the record was edited)".into(),
                &mut report,
            );
            break;
        }
        if record.event == Event::Checkpoint {
            if record.count != Some(i as u64) || record.head.as_deref() != Some(head.as_str()) {
                bad(
                    line,
                    "checkpoint does not state the records before it".into(),
                    &mut report,
                );
                break;
            }
            if let Some(keys) = keys {
                let signed = match (&record.key, &record.signature) {
                    (Some(kid), Some(sig)) => {
                        keys.verify_raw(kid, checkpoint_message(i as u64, &head).as_bytes(), sig)
                    }
                    _ => false,
                };
                if !signed {
                    bad(
                        line,
                        "checkpoint signature does not verify with the audit key".into(),
                        &mut report,
                    );
                    break;
                }
            }
            report.checkpoints += 1;
            report.last_checkpoint = Some(line);
            since_checkpoint = 0;
        } else {
            since_checkpoint += 1;
        }
        match record.event {
            Event::InvocationStart => {
                open.insert(record.invocation.to_string());
            }
            Event::InvocationEnd => {
                open.remove(&*record.invocation);
            }
            _ => {}
        }
        head = hash;
        report.records += 1;
    }
    report.uncovered = since_checkpoint;
    report.unfinished = open.into_iter().collect();
    report
}
