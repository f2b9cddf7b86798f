//! OpenTelemetry over OTLP/HTTP (`--otlp URL`), received by a loopback
//! collector the test runs: an invocation is a span with its decisions as
//! events, every audit record a log record tied to that span.

use crate::common::{HttpRequest, http_server, shared_cache};
use serde_json::Value;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the collector was sent, by path.
type Received = Arc<Mutex<Vec<HttpRequest>>>;

async fn collector() -> (u16, Received) {
    let got: Received = Arc::default();
    let keep = got.clone();
    let port = http_server(move |req| {
        keep.lock().unwrap().push(req);
        ("200 OK".into(), String::new(), Vec::new())
    })
    .await;
    (port, got)
}

/// `warden run` of the write tool with only the right to read: its write
/// is denied, and it ends in a tool error.
fn denied_write(dir: &std::path::Path, otlp: &[&str]) -> Output {
    denied_write_with(dir, otlp, &[])
}

/// [`denied_write`] with `env` set for the child.
fn denied_write_with(dir: &std::path::Path, otlp: &[&str], env: &[(&str, &str)]) -> Output {
    let ws = dir.join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let manifest = dir.join("warden.toml");
    std::fs::write(
        &manifest,
        format!(
            "[tools.writer]\ncomponent = \"{}\"\n[[tools.writer.fs]]\nhandle = \"workspace\"\nwithin = \"{}\"\nrights = [\"read\", \"write\"]\n",
            crate::WRITE_FILE,
            ws.display()
        ),
    )
    .unwrap();
    Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("--cache-dir")
        .arg(shared_cache())
        .args(otlp)
        .args(["run", "--manifest"])
        .arg(&manifest)
        .arg("writer")
        .arg("--grant")
        .arg(format!("fs:workspace={}:read", ws.display()))
        .args([
            "--task",
            "otel-task",
            "--input",
            r#"{"path": "x.md", "content": "hi"}"#,
        ])
        .arg("--audit")
        .arg(dir.join("audit.jsonl"))
        .env("WARDEN_STATE_DIR", dir.join("state"))
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// An OTLP attribute's value, as JSON encodes it.
fn attr<'a>(attrs: &'a Value, key: &str) -> Option<&'a Value> {
    let kv = attrs.as_array()?.iter().find(|kv| kv["key"] == key)?;
    let v = &kv["value"];
    v.get("stringValue").or_else(|| v.get("intValue"))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invocation_reaches_a_loopback_collector_as_a_span_with_events_and_its_records_as_logs()
{
    let (port, got) = collector().await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let out = tokio::task::block_in_place(|| {
        denied_write(
            dir.path(),
            &["--otlp", &url, "--otlp-protocol", "http/json"],
        )
    });
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "warden: sending OpenTelemetry to {url} (http/json)"
        )),
        "{stderr}"
    );

    let got = got.lock().unwrap();
    let body = |path: &str| -> Value {
        let r = got
            .iter()
            .find(|r| r.path == path)
            .unwrap_or_else(|| panic!("nothing sent to {path}"));
        assert_eq!(r.method, "POST");
        assert_eq!(r.header("content-type"), Some("application/json"));
        serde_json::from_slice(&r.body).unwrap()
    };
    let traces = body("/v1/traces");
    let resource = &traces["resourceSpans"][0]["resource"]["attributes"];
    assert_eq!(attr(resource, "service.name").unwrap(), "warden");
    let span = &traces["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    assert_eq!(span["name"], "invoke writer");
    assert_eq!(
        attr(&span["attributes"], "warden.task").unwrap(),
        "otel-task"
    );
    assert_eq!(attr(&span["attributes"], "warden.tool").unwrap(), "writer");
    let invocation = attr(&span["attributes"], "warden.invocation")
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        attr(&span["attributes"], "warden.outcome")
            .unwrap()
            .as_str()
            .unwrap()
            .starts_with("tool-error")
    );
    assert_eq!(span["status"]["code"], 2, "an error: {}", span["status"]);
    let events = span["events"].as_array().unwrap();
    let denied = events
        .iter()
        .find(|e| {
            e["name"] == "decision"
                && attr(&e["attributes"], "warden.decision").is_some_and(|d| d == "deny")
        })
        .unwrap_or_else(|| panic!("no denial among {events:?}"));
    assert_eq!(
        attr(&denied["attributes"], "warden.action").unwrap(),
        "write"
    );
    assert_eq!(
        attr(&denied["attributes"], "warden.resource").unwrap(),
        "workspace:x.md"
    );
    assert!(attr(&denied["attributes"], "warden.rule").is_some());

    // Every record of the trail is a log record, tied to the span.
    let logs = body("/v1/logs");
    let records = logs["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
        .as_array()
        .unwrap();
    let trail = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    // (Checkpoints are the trail's own, not an invocation's.)
    let of_invocation = trail
        .lines()
        .filter(|l| l.contains(&invocation) && !l.contains(r#""event":"checkpoint""#))
        .count();
    assert_eq!(records.len(), of_invocation, "{records:?}");
    for r in records {
        assert_eq!(r["traceId"], span["traceId"], "{r}");
        assert_eq!(r["spanId"], span["spanId"], "{r}");
        assert_eq!(
            attr(&r["attributes"], "warden.invocation").unwrap(),
            invocation.as_str()
        );
    }
    assert!(records.iter().any(|r| {
        r["body"]["stringValue"]
            .as_str()
            .unwrap()
            .starts_with("decision writer")
    }));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_default_encoding_is_protobuf_and_an_unreachable_collector_costs_no_call() {
    let (port, got) = collector().await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}/");
    let out = tokio::task::block_in_place(|| denied_write(dir.path(), &["--otlp", &url]));
    assert_eq!(out.status.code(), Some(1));
    {
        let got = got.lock().unwrap();
        for path in ["/v1/traces", "/v1/logs"] {
            let r = got
                .iter()
                .find(|r| r.path == path)
                .unwrap_or_else(|| panic!("nothing sent to {path}"));
            assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
            // Protobuf strings are their UTF-8 bytes.
            assert!(r.body.windows(6).any(|w| w == b"writer"));
        }
    }

    // Nobody listens: the call is the same, and does not wait long.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{closed}");
    let out = tokio::task::block_in_place(|| denied_write(dir.path(), &["--otlp", &url]));
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(
        std::fs::read_to_string(dir.path().join("audit.jsonl"))
            .unwrap()
            .contains("\"decision\":\"deny\"")
    );

    // A URL that is not one is refused before anything runs.
    let out = tokio::task::block_in_place(|| {
        denied_write(dir.path(), &["--otlp", "http://u:secret@127.0.0.1:4318"])
    });
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("expected no credentials"), "{stderr}");
    assert!(!stderr.contains("secret"), "{stderr}");
}

/// A collector that redirects: the export is not sent on (nor the headers
/// of `OTEL_EXPORTER_OTLP_HEADERS` with it).
#[tokio::test(flavor = "multi_thread")]
async fn a_collector_cannot_redirect_the_telemetry_elsewhere() {
    let (elsewhere, got_elsewhere) = collector().await;
    let asked: Received = Arc::default();
    let keep = asked.clone();
    let port = http_server(move |req| {
        let path = req.path.clone();
        keep.lock().unwrap().push(req);
        (
            "307 Temporary Redirect".into(),
            format!("Location: http://127.0.0.1:{elsewhere}{path}\r\n"),
            Vec::new(),
        )
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let out = tokio::task::block_in_place(|| {
        let headers = [(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "x-api-key=sekrit-header-value",
        )];
        denied_write_with(dir.path(), &["--otlp", &url], &headers)
    });
    assert_eq!(out.status.code(), Some(1));
    let asked = asked.lock().unwrap();
    assert!(
        asked.iter().any(|r| r.path == "/v1/traces"),
        "nothing exported"
    );
    assert_eq!(asked[0].header("x-api-key"), Some("sekrit-header-value"));
    assert!(
        got_elsewhere.lock().unwrap().is_empty(),
        "the redirect was followed"
    );
}
