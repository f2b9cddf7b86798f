//! The audit trail: what each invocation records, and failing closed.

use crate::common::World;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use warden::audit::{AuditError, AuditSink, Event, FileSink, Record, verify};
use warden::{Error, Grant, Manifest, Rights, Runtime};

#[tokio::test]
async fn each_invocation_records_start_decisions_and_end() {
    let world = World::new();
    let (_, inv) = world
        .probe(
            Rights::READ,
            json!({"op": "write", "path": "x.txt", "contents": "x"}),
        )
        .await;
    let records = world.audit.invocation(&inv);
    let events: Vec<_> = records.iter().map(|r| r.event).collect();
    assert_eq!(
        events,
        [
            Event::InvocationStart,
            Event::Decision,
            Event::InvocationEnd
        ]
    );
    let identity = warden::Identity::of(&std::fs::read(crate::FS_PROBE).unwrap()).to_string();
    for r in &records {
        assert_eq!(r.v, 1);
        assert_eq!(&*r.task, "test-task");
        assert_eq!(&*r.tool, "probe");
        assert_eq!(&*r.identity, identity);
        assert!(r.ts.ends_with('Z') && r.ts.len() == 24, "{}", r.ts);
    }
    assert_eq!(
        records[0].resource.as_deref(),
        Some(format!("workspace={}:read", world.workspace.display()).as_str())
    );
    let d = &records[1];
    assert_eq!(d.capability.as_deref(), Some("fs"));
    assert_eq!(d.action.as_deref(), Some("write"));
    assert_eq!(d.resource.as_deref(), Some("workspace:x.txt"));
    assert_eq!(d.decision.as_deref(), Some("deny"));
    assert_eq!(d.rule.as_deref(), Some("fs.rights"));
    assert_eq!(
        d.reason.as_deref(),
        Some("write needs the write right on handle 'workspace', which holds read")
    );
    let end = &records[2];
    assert_eq!(end.outcome.as_deref(), Some("ok"));
    assert!(end.duration_us.is_some());
}

#[tokio::test]
async fn tool_logs_are_audited_capped_and_counted() {
    let world = World::with(|b| {
        b.log_limits(warden::caps::log::LogLimits {
            max_message: 100,
            max_messages: 5,
        })
    });
    let run = world
        .runtime
        .invoke(
            "hog",
            &Grant::new("t"),
            r#"{"attack":"log-flood","size":8}"#,
        )
        .await
        .unwrap();
    let records = world.audit.invocation(&run.id);
    let logs: Vec<_> = records.iter().filter(|r| r.event == Event::Log).collect();
    assert_eq!(logs.len(), 5);
    assert_eq!(logs[0].level.as_deref(), Some("info"));
    let m = logs[0].message.as_deref().unwrap();
    assert!(
        m.starts_with("message 0 lll") && m.ends_with("…[truncated]") && m.len() < 120,
        "{m}"
    );
    let end = records.last().unwrap();
    assert_eq!(end.message.as_deref(), Some("3 log messages dropped"));
}

/// A sink that accepts `ok` records, then fails.
struct FailAfter {
    ok: usize,
    seen: AtomicUsize,
}

impl AuditSink for FailAfter {
    fn append(&self, _: &Record) -> Result<(), AuditError> {
        if self.seen.fetch_add(1, Ordering::SeqCst) < self.ok {
            Ok(())
        } else {
            Err(AuditError::Sink("disk full".into()))
        }
    }
}

fn runtime_with_sink(world: &World, sink: Arc<dyn AuditSink>) -> Runtime {
    Runtime::builder()
        .manifest(Manifest::load(&world.manifest).unwrap())
        .cache_dir(crate::common::shared_cache())
        .audit(sink)
        .build()
        .unwrap()
}

#[tokio::test]
async fn an_unwritable_trail_fails_closed() {
    let world = World::new();
    let grant = world.grant(Rights::WRITE);
    let input = json!({"op": "write", "path": "x.txt", "contents": "x"}).to_string();

    // The start record cannot be written: the tool never runs.
    let rt = runtime_with_sink(
        &world,
        Arc::new(FailAfter {
            ok: 0,
            seen: 0.into(),
        }),
    );
    let err = rt.invoke("probe", &grant, &input).await.unwrap_err();
    assert!(matches!(err, Error::Audit(_)), "{err:?}");
    assert_eq!(err.to_string(), "audit sink failed: disk full");
    assert!(!world.workspace.join("x.txt").exists());

    // The decision cannot be written: the write does not happen.
    let rt = runtime_with_sink(
        &world,
        Arc::new(FailAfter {
            ok: 1,
            seen: 0.into(),
        }),
    );
    let err = rt.invoke("probe", &grant, &input).await.unwrap_err();
    assert!(matches!(err, Error::Audit(_)), "{err:?}");
    assert!(!world.workspace.join("x.txt").exists());

    // The end record cannot be written: the output is withheld.
    let rt = runtime_with_sink(
        &world,
        Arc::new(FailAfter {
            ok: 2,
            seen: 0.into(),
        }),
    );
    let err = rt.invoke("probe", &grant, &input).await.unwrap_err();
    assert!(matches!(err, Error::Audit(_)), "{err:?}");
}

#[tokio::test]
async fn the_file_sink_appends_json_lines() {
    let world = World::new();
    let path = world.dir.path().join("audit.jsonl");
    std::fs::write(&path, "").unwrap();
    let rt = runtime_with_sink(&world, Arc::new(FileSink::open(&path).unwrap()));
    rt.invoke("echo", &Grant::new("t"), "{}").await.unwrap();
    rt.invoke("echo", &Grant::new("t"), "{}").await.unwrap();
    // The ends are written behind (within 2 ms): on the trail now.
    rt.flush_audit().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let records: Vec<Record> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let events: Vec<_> = records.iter().map(|r| r.event).collect();
    use Event::*;
    // No signer, no checkpoints: the chain alone.
    assert_eq!(
        events,
        [
            InvocationStart,
            InvocationEnd,
            InvocationStart,
            InvocationEnd
        ]
    );
    let report = verify::verify_text(&text, None);
    assert_eq!(
        (report.records, report.checkpoints, report.uncovered),
        (4, 0, 4)
    );
    assert!(
        records
            .iter()
            .enumerate()
            .all(|(i, r)| r.seq == Some(i as u64))
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    let _ = mode; // pre-existing file keeps its mode; new files are 0600 (below)
    let fresh = world.dir.path().join("fresh.jsonl");
    FileSink::open(&fresh).unwrap();
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&fresh).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
}

/// A trail of a few invocations written by a signed file sink.
async fn signed_trail(world: &World) -> (std::path::PathBuf, warden::KeyPair) {
    let path = world.dir.path().join("chained.jsonl");
    let key = warden::KeyPair::from_seed(&[9; 32]);
    let sink = FileSink::open(&path)
        .unwrap()
        .with_signer(Arc::new(warden::KeyPair::from_seed(&[9; 32])));
    let rt = runtime_with_sink(world, Arc::new(sink));
    for i in 0..3 {
        let input =
            json!({"op": "write", "path": format!("f{i}.txt"), "contents": "x"}).to_string();
        rt.invoke("probe", &world.grant(Rights::READ), &input)
            .await
            .unwrap();
        // Signed now, not on the cadence: a checkpoint after each.
        rt.settle_audit();
    }
    (path, key)
}

fn check(text: &str, key: &warden::KeyPair) -> verify::Report {
    verify::verify_text(
        text,
        Some(&warden::Verifier::from_jwks(&key.jwks()).unwrap()),
    )
}

#[tokio::test]
async fn the_chained_trail_verifies_and_every_tampering_form_is_caught() {
    let world = World::new();
    let (path, key) = signed_trail(&world).await;
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // 3 invocations x (start, decision, end, checkpoint)
    assert_eq!(lines.len(), 12);
    let ok = check(&text, &key);
    assert!(ok.is_complete(), "{ok:?}");
    assert_eq!(
        (ok.records, ok.checkpoints, ok.last_checkpoint),
        (12, 3, Some(12))
    );

    let join = |ls: &[&str]| ls.iter().map(|l| format!("{l}\n")).collect::<String>();
    let tampered = |t: String| check(&t, &key).tampered.expect("tampering detected");

    // An edited record: the deny on line 6 rewritten as allow.
    let edited = text.replacen(r#""decision":"deny""#, r#""decision":"allow""#, 2);
    let t = tampered(edited);
    assert_eq!(t.line, 2);
    assert!(t.reason.contains("edited"), "{t:?}");
    // A deleted record.
    let mut deleted = lines.clone();
    deleted.remove(5);
    let t = tampered(join(&deleted));
    assert_eq!(t.line, 6);
    assert!(t.reason.contains("removed, inserted or reordered"), "{t:?}");
    // An inserted (replayed) record.
    let mut inserted = lines.clone();
    inserted.insert(7, lines[1]);
    assert_eq!(tampered(join(&inserted)).line, 8);
    // Reordered records.
    let mut reordered = lines.clone();
    reordered.swap(4, 5);
    assert_eq!(tampered(join(&reordered)).line, 5);
    // Truncated mid-record.
    let cut = &text[..text.len() - 20];
    let t = tampered(cut.to_owned());
    assert_eq!(t.line, 12);
    assert!(t.reason.contains("truncated"), "{t:?}");
    // Re-chained after an edit: the next checkpoint's signature no longer matches.
    let mut records: Vec<Record> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    records[1].decision = Some("allow".into());
    let mut prev = records[0].hash.clone();
    for r in records.iter_mut().skip(1) {
        r.prev = prev.clone();
        if r.event == Event::Checkpoint {
            r.head = prev.clone();
        }
        r.hash = Some(warden::audit::verify::rehash(r));
        prev = r.hash.clone();
    }
    let forged: String = records
        .iter()
        .map(|r| format!("{}\n", serde_json::to_string(r).unwrap()))
        .collect();
    let t = tampered(forged);
    assert_eq!(t.line, 4);
    assert!(t.reason.contains("signature"), "{t:?}");
    // Another key does not verify the checkpoints: they name a key the
    // verifier does not know, which is not tampering.
    let other = warden::KeyPair::from_seed(&[1; 32]);
    let r = check(&text, &other);
    assert!(r.tampered.is_none(), "{r:?}");
    assert_eq!(r.status(), verify::Status::UnknownKey);
    assert_eq!(
        r.unknown_keys,
        [verify::UnknownKey {
            line: 4,
            kid: key.kid().to_owned()
        }]
    );
    // A signature under the right key id that is not that key's: tampering.
    let sig = records[3].signature.clone().unwrap();
    let t = tampered(text.replacen(&sig, &other.sign_raw(b"forged"), 1));
    assert_eq!(t.line, 4);

    // Truncated at a record boundary inside an invocation: intact up to the
    // last checkpoint, and the unfinished invocation is named.
    let partial = join(&lines[..10]);
    let r = check(&partial, &key);
    assert!(r.tampered.is_none());
    assert_eq!((r.last_checkpoint, r.uncovered), (Some(8), 2));
    let third: Record = serde_json::from_str(lines[8]).unwrap();
    assert_eq!(r.unfinished, [third.invocation.to_string()]);
}

#[tokio::test]
async fn a_reopened_trail_continues_its_chain() {
    let world = World::new();
    let (path, key) = signed_trail(&world).await;
    let sink = FileSink::open(&path)
        .unwrap()
        .with_signer(Arc::new(warden::KeyPair::from_seed(&[9; 32])));
    let rt = runtime_with_sink(&world, Arc::new(sink));
    rt.invoke("echo", &Grant::new("t"), "{}").await.unwrap();
    rt.flush_audit().unwrap();
    // Not yet signed (the cadence is 256 records or 500 ms)...
    let r = check(&std::fs::read_to_string(&path).unwrap(), &key);
    assert_eq!((r.records, r.uncovered), (14, 2), "{r:?}");
    // ...until asked, or the runtime (and its sink) is dropped.
    drop(rt);
    let r = check(&std::fs::read_to_string(&path).unwrap(), &key);
    assert!(r.is_complete(), "{r:?}");
    assert_eq!(r.records, 15);
}

#[tokio::test]
async fn an_added_field_or_a_reformatted_line_is_refused() {
    let world = World::new();
    let (path, key) = signed_trail(&world).await;
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let with_line = |n: usize, edited: String| {
        let mut all: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        all[n] = edited;
        all.iter().map(|l| format!("{l}\n")).collect::<String>()
    };
    // A field added to the denial on line 2; its hash and the chain are
    // untouched (today's verifier hashed the parsed record, so this passed).
    let added = lines[1].replacen(
        r#","decision":"deny""#,
        r#","decision":"deny","approved_by":"security-team""#,
        1,
    );
    let t = check(&with_line(1, added), &key).tampered.expect("refused");
    assert_eq!(t.line, 2);
    assert_eq!(
        t.reason,
        r#"unknown field "approved_by": Warden writes no such field (the record was edited)"#
    );
    // The same line reformatted: a space after each comma.
    let spaced = lines[1].replace(r#"",""#, r#"", ""#);
    let t = check(&with_line(1, spaced), &key)
        .tampered
        .expect("refused");
    assert_eq!(t.line, 2);
    assert!(
        t.reason.starts_with(
            "not in the exact form Warden writes (whitespace, field order or escaping differs at column"
        ),
        "{t:?}"
    );
    // Pretty-printed on several lines.
    let value: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
    let pretty = serde_json::to_string_pretty(&value).unwrap();
    let t = check(&with_line(1, pretty), &key)
        .tampered
        .expect("refused");
    assert_eq!(t.line, 2);
    // CRLF line ends.
    let crlf = text.replace('\n', "\r\n");
    let t = check(&crlf, &key).tampered.expect("refused");
    assert_eq!(t.line, 1);
}

#[tokio::test]
async fn the_python_verifier_checks_what_warden_writes() {
    let Some(python) = crate::common::python_with("cryptography") else {
        return;
    };
    let world = World::new();
    let (path, key) = signed_trail(&world).await;
    // Every character class the escaping rules treat apart, in a record.
    let sink = FileSink::open(&path)
        .unwrap()
        .with_signer(Arc::new(warden::KeyPair::from_seed(&[9; 32])));
    let all: String = (0u8..0x20)
        .map(char::from)
        .chain("\u{7f} \"quoted\" back\\slash / é ✓ 🦀 \u{2028}".chars())
        .collect();
    for event in ["invocation.start", "invocation.end"] {
        let r: Record = serde_json::from_value(json!({
            "v": 1, "ts": "2026-01-01T00:00:00.000Z", "event": event, "invocation": "odd",
            "task": "t", "tool": "x", "identity": "sha256:0", "resource": all,
            "reason": all, "message": all, "status": 65535, "bytes_out": u64::MAX,
            "policies": ["a", all],
        }))
        .unwrap();
        sink.append(&r).unwrap();
    }
    drop(sink);
    let jwks = world.dir.path().join("jwks.json");
    std::fs::write(&jwks, key.jwks().to_string()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/verify_trail.py");
    let verify_py = |trail: &std::path::Path, jwks: &std::path::Path| {
        let o = std::process::Command::new(&python)
            .arg(script)
            .arg(trail)
            .arg("--jwks")
            .arg(jwks)
            .output()
            .unwrap();
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (o.status.code(), out)
    };
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(check(&text, &key).is_complete());
    let (code, out) = verify_py(&path, &jwks);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("ok, 15 records, 4 signed checkpoints"),
        "{out}"
    );

    // Each tampering form: the same line as Warden's verifier, non-zero.
    let lines: Vec<&str> = text.lines().collect();
    let join = |ls: &[&str]| ls.iter().map(|l| format!("{l}\n")).collect::<String>();
    let mut deleted = lines.clone();
    deleted.remove(5);
    let spaced = text.replacen(r#"","#, r#"", "#, 1);
    for (what, edited) in [
        (
            "edited value",
            text.replacen(r#""decision":"deny""#, r#""decision":"allow""#, 1),
        ),
        (
            "added field",
            text.replacen(
                r#","tool":"probe""#,
                r#","tool":"probe","approved_by":"x""#,
                2,
            ),
        ),
        ("reformatted", spaced),
        ("deleted record", join(&deleted)),
        ("truncated", text[..text.len() - 20].to_owned()),
    ] {
        let want = check(&edited, &key).tampered.expect("tampered");
        let copy = world.dir.path().join("edited.jsonl");
        std::fs::write(&copy, &edited).unwrap();
        let (code, out) = verify_py(&copy, &jwks);
        assert_eq!(code, Some(1), "{what}: {out}");
        assert!(
            out.contains(&format!("edited.jsonl:{}: {}", want.line, want.reason)),
            "{what}: expected line {} ({}), got {out}",
            want.line,
            want.reason
        );
    }
    // Another instance's key: named, exit 4.
    let other = world.dir.path().join("other.json");
    std::fs::write(
        &other,
        warden::KeyPair::from_seed(&[1; 32]).jwks().to_string(),
    )
    .unwrap();
    let (code, out) = verify_py(&path, &other);
    assert_eq!(code, Some(4), "{out}");
    assert!(
        out.contains(&format!(
            ":4: checkpoint signed by key {}, which is not one of the known keys",
            key.kid()
        )),
        "{out}"
    );

    // A checkpoint naming a "key" that would draw on the terminal (erase
    // the line above, print a fake "ok"): refused by both verifiers, and
    // nothing of it reaches the terminal raw.
    let hostile = world.dir.path().join("hostile\u{1b}[2K.jsonl");
    std::fs::copy(&path, &hostile).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let sink = FileSink::open(&hostile).unwrap();
    let r: Record = serde_json::from_value(json!({
        "v": 1, "ts": "2026-01-01T00:00:00.000Z", "event": "checkpoint",
        "invocation": "-", "task": "-", "tool": "-", "identity": "-",
        "count": text.lines().count(), "head": last["hash"],
        "key": "\u{1b}[1A\u{1b}[2Ktrail.jsonl: ok", "signature": "AA",
    }))
    .unwrap();
    sink.append(&r).unwrap();
    drop(sink);
    let edited = std::fs::read_to_string(&hostile).unwrap();
    let want = check(&edited, &key).tampered.expect("refused");
    assert_eq!(
        want.reason,
        "checkpoint names a key that is not 16 lower-case hex digits (the record was edited)"
    );
    let (code, out) = verify_py(&hostile, &jwks);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!(":{}: {}", want.line, want.reason)),
        "{out}"
    );
    assert!(!out.contains('\u{1b}'), "{out:?}");

    // What is not a trail or a key set: exit 2, at once, named.
    let fifo = world.dir.path().join("fifo.jsonl");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let started = std::time::Instant::now();
    let (code, out) = verify_py(&fifo, &jwks);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("not a regular file"), "{out}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let mismatched = {
        let mut v = key.jwks();
        v["keys"][0]["kid"] = json!("0000000000000000");
        v
    };
    for (what, jwks_text, said) in [
        (
            "an array",
            "[]".to_owned(),
            "expected an object with a `keys` array",
        ),
        (
            "a key that is a number",
            r#"{"keys":[1]}"#.to_owned(),
            "expected each key to be an object",
        ),
        (
            "a key id that is not its key's",
            mismatched.to_string(),
            "does not match its key",
        ),
    ] {
        let bad = world.dir.path().join("bad-jwks.json");
        std::fs::write(&bad, jwks_text).unwrap();
        let (code, out) = verify_py(&path, &bad);
        assert_eq!(code, Some(2), "{what}: {out}");
        assert!(out.contains(said), "{what}: {out}");
        assert!(!out.contains("Traceback"), "{what}: {out}");
    }
}

/// `warden run` shows a tool's output only once its records are on the
/// trail: its end is written behind, so a trail that takes no writes
/// (here one already at the process's file size limit, `ulimit -f`: every
/// write fails, as on a full disk) fails the run with exit 3 and no output,
/// not after it. (A device that takes no writes, /dev/full, is no trail:
/// refused before the run, as /dev/null is.)
#[test]
fn warden_run_fails_closed_when_the_written_behind_end_cannot_be_written() {
    let world = World::new();
    let trail = world.dir.path().join("full.jsonl");
    let sink = FileSink::open(&trail).unwrap();
    for i in 0..24 {
        let r: Record = serde_json::from_value(serde_json::json!({
            "v": 1, "ts": "2026-01-01T00:00:00.000Z", "event": "log",
            "invocation": format!("i{i}"), "task": "t", "tool": "x",
            "identity": "sha256:0", "message": "m".repeat(100),
        }))
        .unwrap();
        sink.append(&r).unwrap();
    }
    drop(sink);
    assert!(std::fs::metadata(&trail).unwrap().len() > 4096);
    let run = |audit: &str, limit: bool| {
        let cmd = format!(
            "{}exec \"$0\" --cache-dir \"$1\" run --manifest \"$2\" echo --input '{{\"message\":\"unrecorded\"}}' --audit \"$3\"",
            // 8 blocks of 512 bytes; the signal it would raise ignored, so
            // the write fails (EFBIG) instead.
            if limit {
                "trap '' XFSZ; ulimit -f 8; "
            } else {
                ""
            }
        );
        std::process::Command::new("sh")
            .args(["-c", &cmd, env!("CARGO_BIN_EXE_warden")])
            .arg(crate::common::shared_cache())
            .arg(&world.manifest)
            .arg(audit)
            .env("WARDEN_STATE_DIR", world.dir.path().join("state"))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let out = run(&trail.display().to_string(), true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(out.stdout.is_empty(), "output shown with no trail: {out:?}");
    assert!(
        stderr.contains(&format!(
            "cannot write the audit trail {}: File too large (os error 27)",
            trail.display()
        )),
        "{stderr}"
    );
    for device in ["/dev/full", "/dev/null"] {
        let out = run(device, false);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{device}: {stderr}");
        assert!(out.stdout.is_empty(), "{device}: {out:?}");
        assert!(
            stderr.contains(&format!(
                "cannot write the audit trail {device}: it is a character device: a trail is a regular file (records written elsewhere would be lost)"
            )),
            "{device}: {stderr}"
        );
    }
}
