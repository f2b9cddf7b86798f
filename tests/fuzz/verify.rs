//! Trail verification (`audit::verify::verify_text`):
//!
//! - on arbitrary bytes and on JSON-record-shaped text, with and without
//!   keys: it never panics and its report is consistent with the text;
//! - on real trails (the committed seeds, checked against their public key
//!   set, and one this test writes with a `FileSink`) with one line edited:
//!   the edit is reported (tampered, at or after that line) unless the line
//!   still parses to the same record (a no-op: whitespace, key order, an
//!   unknown field, an escape spelled differently);
//! - with whole records removed, duplicated or swapped: reported unless the
//!   result is a truncation at the end, which verifies intact but
//!   incomplete.

use crate::check;
use crate::corpus;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use warden::audit::verify::{Report, verify_text};
use warden::audit::{Auditor, Event, FileSink, Record};
use warden::{Decision, KeyPair, Verifier};

const DICT: &[&str] = &[
    "{",
    "}",
    "\"",
    ":",
    ",",
    "\n",
    "\r",
    " ",
    "null",
    "\"v\":1",
    "\"seq\":",
    "\"prev\":\"",
    "\"hash\":\"",
    "\"event\":\"invocation.start\"",
    "\"event\":\"invocation.end\"",
    "\"event\":\"checkpoint\"",
    "\"count\":",
    "\"head\":\"",
    "\"signature\":\"",
    "\"key\":\"",
    "\"x\":1",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "18446744073709551615",
    "-1",
    "1e999",
    "\\u0000",
    "\\ud800",
    "\u{feff}",
];

/// A trail, its public key set and its lines.
struct Trail {
    text: String,
    keys: Option<Arc<Verifier>>,
}

impl Trail {
    fn lines(&self) -> Vec<&str> {
        self.text.lines().collect()
    }
}

/// A trail written by a `FileSink` with a signer: three invocations with
/// decisions, logs and outcomes, and one left unfinished.
fn written_trail() -> Trail {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let key = Arc::new(KeyPair::from_seed(&[7; 32]));
    let sink = Arc::new(
        FileSink::open(&path)
            .expect("trail")
            .with_signer(key.clone()),
    );
    for i in 0..3 {
        let a = Auditor::new(
            sink.clone(),
            &format!("inv-{i}"),
            "fuzz-task",
            "echo",
            "sha256:00",
        );
        a.write(&a.record(Event::InvocationStart)).expect("write");
        let allow = Decision::allow("fs.rights", "handle 'workspace' holds read".into());
        a.write(&a.decision("fs", "read", "workspace:a \"quoted\"\n.txt", &allow))
            .expect("write");
        let mut log = a.record(Event::Log);
        log.level = Some("info".into());
        log.message = Some(format!("message {i} é \u{1b}[2K \\ /"));
        a.write(&log).expect("write");
        if i < 2 {
            let mut end = a.record(Event::InvocationEnd);
            end.outcome = Some("ok".into());
            end.duration_us = Some(1234);
            a.write(&end).expect("write");
        }
    }
    drop(sink);
    let text = std::fs::read_to_string(&path).expect("read");
    let keys = Verifier::from_jwks(&key.jwks()).expect("jwks");
    Trail {
        text,
        keys: Some(Arc::new(keys)),
    }
}

/// The committed trails (`*.jsonl`), each with its `*.jwks.json` if any.
fn seed_trails() -> Vec<Trail> {
    let dir =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fuzz/corpus/verify");
    let mut out = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus/verify")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    names.sort();
    for p in names {
        let text = std::fs::read_to_string(&p).expect("seed trail");
        let jwks = p.with_extension("jwks.json");
        let keys = std::fs::read_to_string(&jwks).ok().map(|j| {
            let v: serde_json::Value = serde_json::from_str(&j).expect("jwks json");
            Arc::new(Verifier::from_jwks(&v).expect("jwks"))
        });
        out.push(Trail { text, keys });
    }
    out
}

/// What any report must satisfy for `text`.
fn consistent(text: &str, r: &Report) -> Result<(), TestCaseError> {
    let lines = text.lines().count() as u64;
    let bad = u64::from(r.tampered.is_some());
    check!(
        r.records + bad <= lines,
        "{} records and {bad} bad of {lines} lines",
        r.records
    );
    check!(
        r.uncovered <= r.records,
        "uncovered {} > records {}",
        r.uncovered,
        r.records
    );
    check!(
        r.checkpoints <= r.records,
        "checkpoints {} > records",
        r.checkpoints
    );
    if let Some(l) = r.last_checkpoint {
        check!(
            l >= 1 && l <= r.records,
            "last checkpoint at line {l} of {}",
            r.records
        );
    }
    if let Some(t) = &r.tampered {
        check!(
            t.line == r.records + 1,
            "tampered at line {} after {} records",
            t.line,
            r.records
        );
        check!(!t.reason.is_empty(), "tampered without a reason");
        check!(!r.is_complete(), "tampered but complete");
    }
    Ok(())
}

fn records(text: &str) -> Option<Vec<Record>> {
    text.lines().map(|l| serde_json::from_str(l).ok()).collect()
}

/// Line-level changes: remove, duplicate or swap whole records.
#[derive(Debug, Clone)]
enum LineEdit {
    Remove(Index),
    Duplicate(Index),
    Swap(Index, Index),
    Truncate(Index),
}

fn line_edit() -> impl Strategy<Value = LineEdit> {
    prop_oneof![
        any::<Index>().prop_map(LineEdit::Remove),
        any::<Index>().prop_map(LineEdit::Duplicate),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| LineEdit::Swap(a, b)),
        any::<Index>().prop_map(LineEdit::Truncate),
    ]
}

#[derive(Debug, Clone)]
enum Input {
    /// Arbitrary bytes (as lossy UTF-8).
    Bytes(Vec<u8>),
    /// Text from JSON and record tokens.
    Tokens(String),
    /// One line of trail `trail` edited.
    EditLine {
        trail: Index,
        line: Index,
        edits: Vec<corpus::Edit>,
    },
    /// Whole records of trail `trail` moved.
    EditLines { trail: Index, edits: Vec<LineEdit> },
}

pub fn run() {
    let mut trails = seed_trails();
    trails.push(written_trail());
    for t in &trails {
        let r = verify_text(&t.text, t.keys.as_deref());
        assert!(r.tampered.is_none(), "a seed trail does not verify: {r:?}");
    }
    // An unknown field added to a line is an edit (issue #11: the hash is
    // over the line's exact bytes, unknown fields refused).
    if let Some(t) = trails.last() {
        let mut lines = t.lines();
        let first = lines[0].replacen('{', "{\"added\":\"by hand\",", 1);
        lines[0] = &first;
        let text = format!("{}\n", lines.join("\n"));
        let r = verify_text(&text, t.keys.as_deref());
        assert_eq!(
            r.tampered.as_ref().map(|x| x.line),
            Some(1),
            "an added field must be reported: {r:?}"
        );
    }
    let trails = Arc::new(trails);
    let line_seeds: Arc<Vec<Vec<u8>>> = Arc::new(
        trails
            .iter()
            .flat_map(|t| t.lines().into_iter().map(|l| l.as_bytes().to_vec()))
            .collect(),
    );
    let no_ops = AtomicU64::new(0);
    let inputs = prop_oneof![
        1 => corpus::bytes(512).prop_map(Input::Bytes),
        1 => corpus::tokens(DICT, 64).prop_map(Input::Tokens),
        4 => (any::<Index>(), any::<Index>(), vec(corpus::edit(), 1..4))
            .prop_map(|(trail, line, edits)| Input::EditLine { trail, line, edits }),
        2 => (any::<Index>(), vec(line_edit(), 1..3))
            .prop_map(|(trail, edits)| Input::EditLines { trail, edits }),
    ];
    crate::fuzz("verify", 1.0, inputs, |input| match input {
        Input::Bytes(b) => {
            let text = String::from_utf8_lossy(&b);
            consistent(&text, &verify_text(&text, None))?;
            let keys = trails.last().and_then(|t| t.keys.as_deref());
            consistent(&text, &verify_text(&text, keys))
        }
        Input::Tokens(text) => consistent(&text, &verify_text(&text, None)),
        Input::EditLine { trail, line, edits } => {
            let t = &trails[trail.index(trails.len())];
            let lines = t.lines();
            let k = line.index(lines.len());
            let edited = corpus::apply(lines[k].as_bytes(), &edits, DICT, &line_seeds);
            let edited = String::from_utf8_lossy(&edited);
            let mut all: Vec<&str> = lines.clone();
            all[k] = edited.as_ref();
            let text = format!("{}\n", all.join("\n"));
            let r = verify_text(&text, t.keys.as_deref());
            consistent(&text, &r)?;
            // A line must be byte for byte what Warden writes: any change
            // of its bytes is an edit (issue #11), whether or not it still
            // parses to the same record.
            if edited.as_ref() != lines[k] {
                check!(
                    r.tampered.as_ref().is_some_and(|x| x.line > k as u64),
                    "line {} edited to {edited:?}: reported {:?}",
                    k + 1,
                    r.tampered
                );
            } else {
                no_ops.fetch_add(1, Ordering::Relaxed);
                check!(
                    r.tampered.is_none(),
                    "a no-op edit reported: {:?}",
                    r.tampered
                );
            }
            Ok(())
        }
        Input::EditLines { trail, edits } => {
            let t = &trails[trail.index(trails.len())];
            let orig = t.lines();
            let mut lines = orig.clone();
            for e in &edits {
                if lines.is_empty() {
                    break;
                }
                let n = lines.len();
                match e {
                    LineEdit::Remove(i) => {
                        lines.remove(i.index(n));
                    }
                    LineEdit::Duplicate(i) => {
                        let i = i.index(n);
                        lines.insert(i, lines[i]);
                    }
                    LineEdit::Swap(a, b) => lines.swap(a.index(n), b.index(n)),
                    LineEdit::Truncate(i) => lines.truncate(i.index(n)),
                }
            }
            let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
            let r = verify_text(&text, t.keys.as_deref());
            consistent(&text, &r)?;
            if orig.starts_with(&lines) {
                check!(
                    r.tampered.is_none(),
                    "a truncation reported tampered: {:?}",
                    r.tampered
                );
                check!(
                    r.records == lines.len() as u64,
                    "a truncation verified {} of {} records",
                    r.records,
                    lines.len()
                );
            } else if records(&text) != records(&t.text) {
                check!(
                    r.tampered.is_some(),
                    "records moved, reported intact: {edits:?}"
                );
            }
            Ok(())
        }
    });
    eprintln!(
        "fuzz verify: {} line edits were no-ops (the line parses to the same record)",
        no_ops.load(Ordering::Relaxed)
    );
}
