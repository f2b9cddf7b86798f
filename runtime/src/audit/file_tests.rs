//! Unit tests of `file`.
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
fn a_deferred_checkpoint_still_comes_right_after_its_end_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    let key = KeyPair::from_seed(&[5; 32]);
    let sink = FileSink::open(&path)
        .unwrap()
        .with_signer(Arc::new(KeyPair::from_seed(&[5; 32])))
        .defer_checkpoints();
    for i in 0..50 {
        sink.append(&event("invocation.start", i)).unwrap();
        sink.append(&event("invocation.end", i)).unwrap();
        // Settled by the server, or paid by the next record.
        if i % 2 == 0 {
            sink.settle();
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
fn a_torn_last_line_is_cut_off_before_the_next_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    let sink = FileSink::open(&path).unwrap();
    sink.append(&event("invocation.start", 0)).unwrap();
    drop(sink);
    // A writer killed mid-`write`: half a record, no newline.
    let whole = std::fs::read(&path).unwrap();
    let mut torn = whole.clone();
    torn.extend_from_slice(&whole[..whole.len() / 2]);
    std::fs::write(&path, &torn).unwrap();
    let report = crate::audit::verify::verify_text(&String::from_utf8_lossy(&torn), None);
    assert_eq!(
        report.tampered.map(|t| t.line),
        Some(2),
        "a torn tail shows"
    );
    // The next writer cuts it off and goes on with one chain.
    let sink = FileSink::open(&path).unwrap();
    sink.append(&event("invocation.end", 0)).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with(std::str::from_utf8(&whole).unwrap()));
    let report = crate::audit::verify::verify_text(&text, None);
    assert!(report.tampered.is_none(), "{report:?}");
    assert_eq!(report.records, 2);
}

#[test]
fn settle_writes_the_owed_checkpoint_and_the_sink_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    let sink = FileSink::open(&path)
        .unwrap()
        .with_signer(Arc::new(KeyPair::from_seed(&[5; 32])))
        .defer_checkpoints();
    sink.append(&event("invocation.end", 0)).unwrap();
    assert_eq!(
        events(&std::fs::read_to_string(&path).unwrap()),
        [Event::InvocationEnd]
    );
    sink.settle();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(events(&text), [Event::InvocationEnd, Event::Checkpoint]);
    sink.append(&event("log", 1)).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(events(&text).len(), 3);
}

#[test]
fn sinks_sharing_a_trail_keep_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    let key = KeyPair::from_seed(&[5; 32]);
    // Opened before any of them writes: each must see the others' records.
    let sinks: Vec<_> = (0..4)
        .map(|_| {
            Arc::new(
                FileSink::open(&path)
                    .unwrap()
                    .with_signer(Arc::new(KeyPair::from_seed(&[5; 32]))),
            )
        })
        .collect();
    let threads: Vec<_> = sinks
        .iter()
        .enumerate()
        .map(|(t, sink)| {
            let sink = sink.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    let n = t as u64 * 100 + i;
                    sink.append(&event("invocation.start", n)).unwrap();
                    sink.append(&event("log", n)).unwrap();
                    sink.append(&event("invocation.end", n)).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(sinks);
    let text = std::fs::read_to_string(&path).unwrap();
    let verifier = crate::Verifier::from_jwks(&key.jwks()).unwrap();
    let report = crate::audit::verify::verify_text(&text, Some(&verifier));
    assert!(report.is_complete(), "{report:?}");
    assert_eq!((report.records, report.checkpoints), (400, 100));
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
