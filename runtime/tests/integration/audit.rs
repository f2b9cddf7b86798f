//! The audit trail: what each invocation records, and failing closed.

use crate::common::World;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use warden::audit::{AuditError, AuditSink, Event, FileSink, Record};
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
    let text = std::fs::read_to_string(&path).unwrap();
    let records: Vec<Record> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 4);
    assert_eq!(records[3].event, Event::InvocationEnd);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    let _ = mode; // pre-existing file keeps its mode; new files are 0600 (below)
    let fresh = world.dir.path().join("fresh.jsonl");
    FileSink::open(&fresh).unwrap();
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&fresh).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
}
