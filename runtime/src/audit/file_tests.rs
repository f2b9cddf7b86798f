//! Unit tests of `file`.
use super::*;
use crate::audit::line::{line_of, lower_hex, record_hash};
use std::time::{Duration, Instant};

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

pub(super) fn event(event: &str, i: u64) -> Record {
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

fn signed(path: &Path, cadence: Cadence) -> FileSink {
    FileSink::open(path)
        .unwrap()
        .with_signer(Arc::new(KeyPair::from_seed(&[5; 32])))
        .with_cadence(cadence)
}

fn verify_signed(text: &str) -> crate::audit::verify::Report {
    let key = KeyPair::from_seed(&[5; 32]);
    let verifier = crate::Verifier::from_jwks(&key.jwks()).unwrap();
    crate::audit::verify::verify_text(text, Some(&verifier))
}

#[test]
fn a_checkpoint_comes_after_every_cadence_records_and_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    let hour = Duration::from_secs(3600);
    let sink = signed(
        &path,
        Cadence {
            records: 5,
            within: hour,
        },
    );
    for i in 0..6 {
        // Two records in one write, as an invocation's start and end.
        sink.append_all(&[event("invocation.start", i), event("invocation.end", i)])
            .unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let kinds = events(&text);
    let at: Vec<usize> = (0..kinds.len())
        .filter(|&i| kinds[i] == Event::Checkpoint)
        .collect();
    // After the 3rd batch (6 records ≥ 5) and the 6th (6 more).
    assert_eq!(at, [6, 13], "{kinds:?}");
    sink.append(&event("log", 7)).unwrap();
    // Unsigned until the sink is dropped (or settled): incomplete.
    let report = verify_signed(&std::fs::read_to_string(&path).unwrap());
    assert_eq!(report.uncovered, 1, "{report:?}");
    assert!(!report.is_complete());
    drop(sink);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(events(&text).last(), Some(&Event::Checkpoint));
    let report = verify_signed(&text);
    assert!(report.is_complete(), "{report:?}");
    assert_eq!((report.records, report.checkpoints), (16, 3));
}

#[test]
fn a_checkpoint_comes_within_the_cadence_time_without_more_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    let within = Duration::from_millis(100);
    let sink = signed(
        &path,
        Cadence {
            records: 1000,
            within,
        },
    );
    let written = Instant::now();
    sink.append(&event("invocation.start", 0)).unwrap();
    sink.append(&event("invocation.end", 0)).unwrap();
    let signed_at = loop {
        let text = std::fs::read_to_string(&path).unwrap();
        if events(&text).last() == Some(&Event::Checkpoint) {
            break written.elapsed();
        }
        assert!(written.elapsed() < Duration::from_secs(10), "never signed");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(
        signed_at >= within,
        "signed after {signed_at:?}, before {within:?}"
    );
    let report = verify_signed(&std::fs::read_to_string(&path).unwrap());
    assert!(report.is_complete(), "{report:?}");
    // Nothing unsigned: no further checkpoint, by time or at the end.
    std::thread::sleep(within * 2);
    drop(sink);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(events(&text).len(), 3, "{text}");
}

#[test]
fn settle_signs_now_and_the_sink_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    let hour = Duration::from_secs(3600);
    let sink = signed(
        &path,
        Cadence {
            records: 1000,
            within: hour,
        },
    );
    sink.append(&event("invocation.end", 0)).unwrap();
    assert_eq!(
        events(&std::fs::read_to_string(&path).unwrap()),
        [Event::InvocationEnd]
    );
    sink.settle();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(events(&text), [Event::InvocationEnd, Event::Checkpoint]);
    // Nothing unsigned: settling again writes nothing.
    assert!(!sink.checkpoint().unwrap());
    sink.append(&event("log", 1)).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(events(&text).len(), 3);
}

#[test]
fn a_sink_signs_an_unsigned_tail_another_writer_left() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    let unsigned = FileSink::open(&path).unwrap();
    unsigned.append(&event("log", 0)).unwrap();
    drop(unsigned);
    let hour = Duration::from_secs(3600);
    let sink = signed(
        &path,
        Cadence {
            records: 1000,
            within: hour,
        },
    );
    assert!(sink.checkpoint().unwrap());
    let report = verify_signed(&std::fs::read_to_string(&path).unwrap());
    assert!(report.is_complete(), "{report:?}");
    assert_eq!((report.records, report.checkpoints), (2, 1));
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
    assert_eq!(report.records - report.checkpoints, 300);
}

#[test]
fn spliced_lines_are_what_the_verifier_recomputes() {
    let mut r: Record = serde_json::from_str(
        r#"{"v":1,"ts":"t","event":"decision","invocation":"i","task":"t","tool":"x","identity":"sha256:0","reason":"a \"quoted\" reason"}"#,
    )
    .unwrap();
    for seq in [0, 7, 10, 1_234_567_890_123, u64::MAX] {
        r.seq = None;
        let (line, hash) = line_of(&r, seq, GENESIS).unwrap();
        // What the writer reserves for it is enough.
        let body = crate::audit::line::Body::of(&r).unwrap();
        assert!(
            line.len() <= body.line_len(),
            "{} > {}",
            line.len(),
            body.line_len()
        );
        let parsed: Record = serde_json::from_slice(&line).unwrap();
        assert_eq!(
            (parsed.seq, parsed.prev.as_deref()),
            (Some(seq), Some(GENESIS))
        );
        assert_eq!(parsed.hash.as_deref(), Some(hash.as_str()));
        assert_eq!(record_hash(&parsed), hash);
        assert_eq!(serde_json::to_vec(&parsed).unwrap(), line[..line.len() - 1]);
        // The fallback path gives the same bytes.
        r.seq = Some(0);
        let (other, _) = line_of(&r, seq, GENESIS).unwrap();
        assert_eq!(other, line);
    }
}

#[test]
fn lower_hex_is_hex_encode() {
    let bytes: Vec<u8> = (0..=255).collect();
    assert_eq!(lower_hex(&bytes), hex::encode(&bytes));
}

pub(super) fn behind(path: &Path, records: usize, within: Duration) -> FileSink {
    FileSink::open(path)
        .unwrap()
        .with_write_behind(WriteBehind { records, within })
}

pub(super) fn invocations(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| {
            let r: Record = serde_json::from_str(l).unwrap();
            format!("{}:{}", r.invocation, line_event(&r))
        })
        .collect()
}

fn line_event(r: &Record) -> &'static str {
    match r.event {
        Event::InvocationEnd => "end",
        Event::Decision => "decision",
        _ => "other",
    }
}

#[test]
fn ends_written_behind_go_out_first_with_the_next_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    let sink = behind(&path, 1000, Duration::from_secs(3600));
    sink.append_behind(vec![event("invocation.end", 0)])
        .unwrap();
    sink.append_behind(vec![event("invocation.end", 1)])
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "",
        "written at once"
    );
    sink.append(&event("decision", 2)).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(invocations(&text), ["i0:end", "i1:end", "i2:decision"]);
    let report = crate::audit::verify::verify_text(&text, None);
    assert!(report.tampered.is_none(), "{report:?}");
    assert_eq!(report.records, 3);
}

#[test]
fn ends_written_behind_are_on_the_trail_within_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    let sink = behind(&path, 1000, Duration::from_millis(20));
    let queued = Instant::now();
    sink.append_behind(vec![event("invocation.end", 0)])
        .unwrap();
    let text = loop {
        let text = std::fs::read_to_string(&path).unwrap();
        if !text.is_empty() {
            break text;
        }
        assert!(queued.elapsed() < Duration::from_secs(5), "never written");
        std::thread::sleep(Duration::from_millis(2));
    };
    assert!(
        queued.elapsed() >= Duration::from_millis(20),
        "before its time"
    );
    assert_eq!(invocations(&text), ["i0:end"]);
}

#[test]
fn ends_written_behind_are_on_time_whether_the_sinks_thread_lingers_or_sleeps() {
    // After records come, the sink's thread wakes by itself for a while
    // (appenders do not wake it); after that it sleeps until woken. A
    // record appended in either state is written within the window.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    let within = Duration::from_millis(20);
    let sink = behind(&path, 1000, within);
    let written_within = |n: usize| {
        let queued = Instant::now();
        sink.append_behind(vec![event("invocation.end", n as u64)])
            .unwrap();
        loop {
            let text = std::fs::read_to_string(&path).unwrap();
            if invocations(&text).len() == n + 1 {
                return queued.elapsed();
            }
            assert!(
                queued.elapsed() < Duration::from_secs(5),
                "record {n} never written"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    written_within(0);
    for n in 1..4 {
        // Lingering: its own timer finds it.
        let took = written_within(n);
        assert!(took < within * 10, "record {n} took {took:?}");
    }
    std::thread::sleep(super::tick::LINGER + within * 3);
    // Asleep: the appender wakes it.
    let took = written_within(4);
    assert!(took >= within && took < within * 10, "took {took:?}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        invocations(&text),
        ["i0:end", "i1:end", "i2:end", "i3:end", "i4:end"]
    );
}

#[test]
fn windows_of_any_length_mean_by_count_alone_and_never_panic() {
    // `Duration::MAX` (no time bound) for both the checkpoint cadence and
    // writing behind: records go out by count, when flushed and when the
    // sink goes, and the trail verifies.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    let sink = signed(
        &path,
        Cadence {
            records: 3,
            within: Duration::MAX,
        },
    )
    .with_write_behind(WriteBehind {
        records: 4,
        within: Duration::MAX,
    });
    sink.append(&event("invocation.start", 1)).unwrap();
    sink.append_behind(vec![event("invocation.end", 1)])
        .unwrap();
    sink.append_behind(vec![event("invocation.end", 2)])
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        events(&std::fs::read_to_string(&path).unwrap()).len(),
        1,
        "by count alone"
    );
    sink.flush().unwrap();
    drop(sink);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        invocations(&text)
            .into_iter()
            .filter(|l| l.ends_with(":end"))
            .collect::<Vec<_>>(),
        ["i1:end", "i2:end"]
    );
    let report = verify_signed(&text);
    assert!(report.is_complete(), "{report:?}");
}

#[test]
fn ends_written_behind_go_out_once_enough_wait_and_when_the_sink_goes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    let sink = behind(&path, 3, Duration::from_secs(3600));
    sink.append_behind(vec![event("invocation.end", 0)])
        .unwrap();
    sink.append_behind(vec![event("invocation.end", 1)])
        .unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    sink.append_behind(vec![event("invocation.end", 2)])
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(invocations(&text), ["i0:end", "i1:end", "i2:end"]);

    sink.append_behind(vec![event("invocation.end", 3)])
        .unwrap();
    drop(sink);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(invocations(&text).len(), 4, "{text}");
    assert!(
        crate::audit::verify::verify_text(&text, None)
            .tampered
            .is_none()
    );

    let sink = behind(&path, 1000, Duration::from_secs(3600));
    sink.append_behind(vec![event("invocation.end", 4)])
        .unwrap();
    sink.flush().unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 5);
}

#[test]
fn when_a_write_behind_fails_later_appends_fail_closed() {
    // Every write to /dev/full fails with ENOSPC (a full disk; `open`
    // refuses it as a trail).
    let full = std::fs::OpenOptions::new()
        .append(true)
        .read(true)
        .open("/dev/full")
        .unwrap();
    let sink = FileSink::on("/dev/full".into(), full)
        .unwrap()
        .with_write_behind(WriteBehind {
            records: 1000,
            within: Duration::from_millis(1),
        });
    sink.append_behind(vec![event("invocation.end", 0)])
        .unwrap();
    let started = Instant::now();
    let err = loop {
        if let Err(e) = sink.append_behind(vec![event("invocation.end", 1)]) {
            break e;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "never failed");
        std::thread::sleep(Duration::from_millis(2));
    };
    match &err {
        AuditError::Io { source, .. } => {
            assert_eq!(source.raw_os_error(), Some(libc::ENOSPC), "{err}")
        }
        other => panic!("expected an I/O error, got {other}"),
    }
    assert!(sink.flush().is_err(), "what waits still waits");
}

#[test]
fn a_last_record_with_an_edited_hash_or_seq_is_not_chained_onto() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    let sink = FileSink::open(&path).unwrap();
    sink.append(&event("invocation.start", 0)).unwrap();
    drop(sink);
    let good = std::fs::read_to_string(&path).unwrap();
    let hash = serde_json::from_str::<Record>(good.trim_end())
        .unwrap()
        .hash
        .unwrap();
    // A hash that would break the next line's JSON, and a seq that would
    // overflow into it.
    for edited in [
        good.replace(&hash, "ab\\\",\\\"x\\\":\\\"1"),
        good.replace("\"seq\":0", &format!("\"seq\":{}", u64::MAX)),
    ] {
        assert_ne!(edited, good);
        std::fs::write(&path, &edited).unwrap();
        let e = FileSink::open(&path)
            .and_then(|s| s.append(&event("invocation.end", 0)))
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("its last record's seq or hash was edited"),
            "{e}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), edited, "appended");
    }
}
