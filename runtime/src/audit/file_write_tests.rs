//! Unit tests of `file`: a write in progress and the appenders around it,
//! and what a trail must be before anything is written to it.
use super::tests::{behind, event, invocations};
use super::*;
use std::time::Duration;

/// Holds the trail's lock from another open file (as another writer
/// would), so that the sink's next write waits for it; released when
/// dropped.
fn held(path: &Path) -> std::fs::File {
    let other = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    other.lock().unwrap();
    other
}

/// Runs `f` on a thread; its result, if it comes within `wait`.
fn within<T: Send + 'static>(
    wait: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> (std::sync::mpsc::Receiver<T>, Option<T>) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    let got = rx.recv_timeout(wait).ok();
    (rx, got)
}

/// Issue #12: a write in progress does not hold appenders up. While the
/// write of a full batch waits for the trail's lock, records appended to be
/// written behind are queued at once; a record that must be written when
/// appended waits for it, and goes after everything before it. One chain,
/// in order.
#[test]
fn appenders_queue_behind_a_write_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    let sink = Arc::new(behind(&path, 2, Duration::MAX));
    let lock = held(&path);
    let s = sink.clone();
    let (full, none) = within(Duration::from_millis(300), move || {
        s.append_behind(vec![event("invocation.end", 1), event("invocation.end", 2)])
    });
    assert!(
        none.is_none(),
        "the batch's write waits for the trail's lock"
    );
    let s = sink.clone();
    let (_, queued) = within(Duration::from_secs(5), move || {
        s.append_behind(vec![event("invocation.end", 3)])
    });
    assert!(
        matches!(queued, Some(Ok(()))),
        "queued while the write waits: {queued:?}"
    );
    let s = sink.clone();
    let (now, none) = within(Duration::from_millis(300), move || {
        s.append(&event("decision", 4))
    });
    assert!(
        none.is_none(),
        "a record written when appended waits its turn"
    );
    drop(lock);
    full.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
    now.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        invocations(&text),
        ["i1:end", "i2:end", "i3:end", "i4:decision"]
    );
    let report = crate::audit::verify::verify_text(&text, None);
    assert!(report.tampered.is_none(), "{report:?}");
    assert_eq!(report.records, 4);
}

/// A write that gives up (the trail's lock held past [`LOCK_PATIENCE`])
/// fails the appender whose records it was writing, and puts back those
/// that waited to be written behind, before those queued while it waited:
/// the next write has them, in order, and until then nothing more is
/// queued (what waits does not grow while writes fail).
#[test]
fn a_write_that_fails_keeps_what_waited_before_what_came_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    let sink = Arc::new(behind(&path, 3, Duration::MAX));
    sink.append_behind(vec![event("invocation.end", 1)])
        .unwrap();
    let lock = held(&path);
    let s = sink.clone();
    let (full, _) = within(Duration::from_millis(300), move || {
        s.append_behind(vec![event("invocation.end", 2), event("invocation.end", 3)])
    });
    sink.append_behind(vec![event("invocation.end", 4)])
        .unwrap();
    let failed = full
        .recv_timeout(LOCK_PATIENCE + Duration::from_secs(10))
        .unwrap();
    assert!(
        matches!(failed, Err(AuditError::Locked { .. })),
        "{failed:?}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    drop(lock);
    // Nothing more is queued onto what waits after a failure: the next
    // append writes it all, its own records last.
    sink.append_behind(vec![event("invocation.end", 5)])
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(invocations(&text), ["i1:end", "i4:end", "i5:end"]);
    let report = crate::audit::verify::verify_text(&text, None);
    assert!(report.tampered.is_none(), "{report:?}");
}

/// Ends that waited, taken by a write that then failed, are due again at
/// once: the sink's thread, which saw nothing due while the write had them
/// and went to sleep, is woken to write them within the window.
#[test]
fn ends_put_back_by_a_failed_write_are_still_written_within_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    let sink = Arc::new(behind(&path, 100, Duration::from_millis(50)));
    sink.append_behind(vec![event("invocation.end", 1)])
        .unwrap();
    let lock = held(&path);
    let s = sink.clone();
    let (now, _) = within(Duration::ZERO, move || s.append(&event("decision", 2)));
    let failed = now
        .recv_timeout(LOCK_PATIENCE + Duration::from_secs(10))
        .unwrap();
    assert!(
        matches!(failed, Err(AuditError::Locked { .. })),
        "{failed:?}"
    );
    drop(lock);
    let started = std::time::Instant::now();
    let text = loop {
        let text = std::fs::read_to_string(&path).unwrap();
        if !text.is_empty() || started.elapsed() > Duration::from_secs(3) {
            break text;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(
        invocations(&text),
        ["i1:end"],
        "written by the sink's thread"
    );
}

/// A file that takes writes and keeps none (`/proc/self/comm` reads as a
/// regular file of no length), or a trail removed after it was opened: an
/// append fails, not succeeds with the records lost.
#[test]
fn a_trail_that_does_not_keep_what_is_written_fails_the_append() {
    let sink = FileSink::open("/proc/self/comm").unwrap();
    let err = sink
        .append(&event("invocation.start", 0))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("cannot write the audit trail /proc/self/comm: it holds 0 bytes after a write that should have left "),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    let sink = FileSink::open(&path).unwrap();
    sink.append(&event("invocation.start", 0)).unwrap();
    std::fs::remove_file(&path).unwrap();
    let err = sink
        .append(&event("invocation.end", 0))
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with("it was removed after it was opened: records written to it would be lost"),
        "{err}"
    );
}

/// A trail cut or rewritten shorter under a sink that has it open (its
/// history replaced by another process) is not continued, and not signed:
/// the next write fails, naming what happened, and writes nothing.
#[test]
fn a_trail_cut_under_its_sink_is_not_continued() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    let sink = FileSink::open(&path)
        .unwrap()
        .with_signer(Arc::new(KeyPair::from_seed(&[7; 32])));
    for n in 0..3 {
        sink.append(&event("log", n)).unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let first = text.lines().next().unwrap();
    let forged = format!("{first}\n");
    std::fs::write(&path, &forged).unwrap();
    let err = sink.append(&event("log", 3)).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "cannot write the audit trail {}: it holds {} bytes, fewer than the {} this sink left: another process cut or rewrote it; nothing was written (`warden audit verify` shows where)",
            path.display(),
            forged.len(),
            text.len()
        )
    );
    assert!(sink.checkpoint().is_err());
    drop(sink);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), forged);

    // Rewritten as long or longer: a made-up history chained from the
    // start, padded past where the sink left off.
    let path = dir.path().join("u.jsonl");
    let sink = FileSink::open(&path).unwrap();
    for n in 0..3 {
        sink.append(&event("log", n)).unwrap();
    }
    let left = std::fs::metadata(&path).unwrap().len();
    let mut made_up = Vec::new();
    let mut prev = GENESIS.to_owned();
    for seq in 0..5 {
        let (line, hash) =
            crate::audit::line::line_of(&event("invocation.end", 90 + seq), seq, &prev).unwrap();
        made_up.extend_from_slice(&line);
        prev = hash;
    }
    assert!(made_up.len() as u64 > left);
    std::fs::write(&path, &made_up).unwrap();
    let err = sink.append(&event("log", 3)).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "cannot write the audit trail {}: the line this sink wrote last, ending at byte {left}, is not there any more: another process rewrote it; nothing was written (`warden audit verify` shows where)",
            path.display()
        )
    );
    assert_eq!(std::fs::read(&path).unwrap(), made_up);
    // Another writer appending after the sink's last line is followed.
    let path = dir.path().join("v.jsonl");
    let (one, two) = (
        FileSink::open(&path).unwrap(),
        FileSink::open(&path).unwrap(),
    );
    for n in 0..4 {
        [&one, &two][n as usize % 2]
            .append(&event("log", n))
            .unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(crate::audit::verify::verify_text(&text, None).records, 4);
}

/// A trail path that names something else is refused before anything is
/// written or cut: `/dev/null` (directly or through a symlink swapped in
/// for the trail) would take every record and keep none, and a file whose
/// last line is not a record cut short is not a trail to truncate.
#[test]
fn a_trail_is_a_regular_file_and_only_a_records_torn_tail_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("t.jsonl");
    std::os::unix::fs::symlink("/dev/null", &link).unwrap();
    for path in [Path::new("/dev/null"), &link] {
        let err = FileSink::open(path).err().expect("refused").to_string();
        assert_eq!(
            err,
            format!(
                "cannot write the audit trail {}: it is a character device: a trail is a regular file (records written elsewhere would be lost)",
                path.display()
            )
        );
    }
    let err = FileSink::open(dir.path())
        .err()
        .expect("refused")
        .to_string();
    assert!(err.ends_with("Is a directory (os error 21)"), "{err}");
    // A key, a configuration file: no line break at the end, and no record.
    let other = dir.path().join("key");
    std::fs::write(&other, "notes\nseed-without-a-line-break").unwrap();
    let err = FileSink::open(&other).err().expect("refused").to_string();
    assert!(err.ends_with("its last line is neither complete nor a record cut short (expected a line starting {\"v\":): not an audit trail? nothing was cut or written"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&other).unwrap(),
        "notes\nseed-without-a-line-break"
    );
    // Zeros a crash left where a write did not reach the disk are cut.
    let torn = dir.path().join("zeros.jsonl");
    std::fs::write(&torn, "{\"\0\0\0\0\0").unwrap();
    FileSink::open(&torn).unwrap();
    assert_eq!(std::fs::read(&torn).unwrap(), b"");
    std::fs::write(&torn, [0u8; 9]).unwrap();
    FileSink::open(&torn).unwrap();
    assert_eq!(std::fs::read(&torn).unwrap(), b"");
    // Zeros after other bytes are not a crash's: a program's last line.
    let program = dir.path().join("rm");
    let elf = b"\x7fELF\x02\x01\x01\0\0\0\nsection\n\0\0\0\0\0\0\x08\x40text";
    std::fs::write(&program, elf).unwrap();
    let err = FileSink::open(&program).err().expect("refused").to_string();
    assert!(err.ends_with("its last line is neither complete nor a record cut short (expected a line starting {\"v\":): not an audit trail? nothing was cut or written"), "{err}");
    assert_eq!(std::fs::read(&program).unwrap(), elf);
    // A text file that ends with a line break (a shell's startup file a
    // symlink named as the trail) is refused, however it ends; so is one
    // whose last line is a record cut short but whose first is no record.
    let profile = dir.path().join("profile");
    let link = dir.path().join("linked.jsonl");
    std::os::unix::fs::symlink(&profile, &link).unwrap();
    for text in ["export PATH=/usr/bin\n", "# notes\n{\"v\":1,\"seq\""] {
        std::fs::write(&profile, text).unwrap();
        for path in [&profile, &link] {
            let err = FileSink::open(path).err().expect("refused").to_string();
            assert!(err.ends_with("its first line is not a record (expected a line starting {\"v\":): not an audit trail? nothing was cut or written"), "{err}");
        }
        assert_eq!(std::fs::read_to_string(&profile).unwrap(), text);
    }
    // A record cut short after two bytes is still one.
    std::fs::write(&other, "{\"").unwrap();
    let sink = FileSink::open(&other).unwrap();
    sink.append(&event("invocation.start", 0)).unwrap();
    drop(sink);
    let text = std::fs::read_to_string(&other).unwrap();
    assert!(text.starts_with("{\"v\":1,"), "{text}");
    assert_eq!(crate::audit::verify::verify_text(&text, None).records, 1);
}
