//! Approval round trips across replicas (2026-07-28 clients): an approval
//! asked as an input-required result by the replica running the call may
//! be answered by a retry that reaches another replica; the answer counts
//! once, wherever it arrives, and the call runs on where it started.

use crate::mcp::setup;
use crate::postgres::{Postgres, one};
use crate::replicas::{replica, terminate};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const CLIENT: &str = "rounds-test";

/// One stateless `tools/call` of `writer` at `url` (a client that answers
/// approvals itself); `retry`: the requestState and the approval answer.
/// The JSON-RPC answer.
async fn write(url: &str, path: &str, retry: Option<(&str, bool)>) -> Value {
    write_with(url, "writer", path, retry).await
}

/// [`write`] with another tool.
async fn write_with(url: &str, tool: &str, path: &str, retry: Option<(&str, bool)>) -> Value {
    // A path with a folder asks twice: to create the folder, to write.
    let mut params = json!({
        "name": tool,
        "arguments": {"path": path, "content": format!("wrote {path}"), "create_dirs": path.contains('/')},
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": CLIENT, "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}},
        },
    });
    if let Some((state, approved)) = retry {
        params["requestState"] = json!(state);
        params["inputResponses"] =
            json!({"approval": {"action": "accept", "content": {"approved": approved}}});
    }
    crate::common::post_call(url, None, tool, params).await
}

/// The requestState of an input-required answer that asks for approval.
fn asked(v: &Value) -> String {
    let r = &v["result"];
    assert_eq!(r["resultType"], "input_required", "{v}");
    let prompt = r["inputRequests"]["approval"]["params"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(prompt.contains("approve fs."), "{v}");
    r["requestState"].as_str().unwrap().to_owned()
}

fn error(v: &Value) -> String {
    v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn result_text(v: &Value) -> String {
    v["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approval_round_trip_is_answered_through_any_replica_once() {
    let Some(pg) = Postgres::start() else { return };
    let s = setup();
    let ws = s.dir.path().canonicalize().unwrap().join("ws");
    let (a, url_a) = replica(&s, &pg, "replica-a").await;
    let (b, url_b) = replica(&s, &pg, "replica-b").await;
    const UNKNOWN: &str = "unknown or expired requestState";

    // Asked on A, approved through B: the call runs on at A, and B
    // returns its answer.
    let state = asked(&write(&url_a, "one.md", None).await);
    let forged = "0".repeat(32);
    let v = write(&url_b, "one.md", Some((&forged, true))).await;
    assert!(error(&v).contains(UNKNOWN), "{v}");
    let started = Instant::now();
    let v = write(&url_b, "one.md", Some((&state, true))).await;
    let took = started.elapsed();
    assert_eq!(v["result"]["isError"], false, "{v}");
    assert_eq!(
        std::fs::read_to_string(ws.join("one.md")).unwrap(),
        "wrote one.md"
    );
    println!("answered through B, the call's answer back in {took:?}");
    let invocation = v["result"]["_meta"]["warden"]["invocation"]
        .as_str()
        .unwrap()
        .to_owned();
    // Once: the same answer again, on either replica, counts for nothing.
    for url in [&url_a, &url_b] {
        let v = write(url, "one.md", Some((&state, true))).await;
        assert!(error(&v).contains(UNKNOWN), "{v}");
    }

    // Asked on A and answered on A: taken there, so not again on B.
    let state = asked(&write(&url_a, "two.md", None).await);
    let v = write(&url_a, "two.md", Some((&state, true))).await;
    assert_eq!(v["result"]["isError"], false, "{v}");
    let v = write(&url_b, "two.md", Some((&state, true))).await;
    assert!(error(&v).contains(UNKNOWN), "{v}");

    // Refused through B: denied at A, nothing written.
    let state = asked(&write(&url_a, "three.md", None).await);
    let v = write(&url_b, "three.md", Some((&state, false))).await;
    assert_eq!(v["result"]["isError"], true, "{v}");
    assert!(
        result_text(&v).contains(&format!("denied by MCP client '{CLIENT}' (elicitation)")),
        "{v}"
    );
    assert!(!ws.join("three.md").exists());

    // The trail at A says who approved, through which client.
    let db = pg.client().await;
    let n: i64 = one(
        &db,
        "SELECT count(*) FROM warden_audit JOIN warden_chains c USING (chain)
             WHERE c.replica = 'replica-a' AND invocation = $1 AND event = 'decision'
               AND line LIKE $2",
        &[
            &invocation,
            &format!("%approved by MCP client '{CLIENT}' (elicitation)%"),
        ],
    )
    .await;
    assert_eq!(n, 1);
    // The store keeps the state's hash, never the state.
    let stored: i64 = one(
        &db,
        "SELECT count(*) FROM warden_rounds WHERE state = $1",
        &[&state],
    )
    .await;
    assert_eq!(stored, 0);

    // Two approvals in one call, both answered through B: the second
    // round's state reaches the client through B (sealed in the store with
    // the first, opened by B) and answers like the first.
    let first = asked(&write(&url_a, "deep/five.md", None).await);
    let v = write(&url_b, "deep/five.md", Some((&first, true))).await;
    let second = asked(&v);
    assert_ne!(second, first);
    let v = write(&url_b, "deep/five.md", Some((&second, true))).await;
    assert_eq!(v["result"]["isError"], false, "{v}");
    assert_eq!(
        std::fs::read_to_string(ws.join("deep/five.md")).unwrap(),
        "wrote deep/five.md"
    );
    // Delivered rounds leave nothing behind.
    let left: i64 = one(
        &db,
        "SELECT count(*) FROM warden_rounds WHERE status <> 'parked'",
        &[],
    )
    .await;
    assert_eq!(left, 0);

    // A state of another shape, or for a tool the server lacks, never
    // reaches the store.
    let v = write(&url_b, "six.md", Some(("x\u{0}'; --", true))).await;
    assert!(error(&v).contains(UNKNOWN), "{v}");

    // The replica running the call stalls (SIGSTOP) past the answer: the
    // answer is withdrawn and the client told, and when the replica
    // resumes nothing runs behind the client's back.
    let state = asked(&write(&url_a, "four.md", None).await);
    let pid = a.id().unwrap().to_string();
    let signal = |sig: &str| {
        std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
    };
    signal("-STOP");
    let started = Instant::now();
    let v = write(&url_b, "four.md", Some((&state, true))).await;
    signal("-CONT");
    assert!(
        error(&v).contains(
            "the replica running this call did not take the answer up within 5s (it may have stopped): the answer is withdrawn and the action it was asked for did not run"
        ),
        "{v}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!ws.join("four.md").exists());
    for url in [&url_a, &url_b] {
        let v = write(url, "four.md", Some((&state, true))).await;
        assert!(error(&v).contains(UNKNOWN), "{v}");
    }
    // A still holds the withdrawn call, parked until its approval expires
    // (a graceful stop would wait for it): stopped at once.
    drop(a);
    assert_eq!(terminate(b).await, Some(0));
}

/// A call parked for an approval its client never answers ends at its
/// deadline, and its slot comes back within a second: a server with one
/// slot serves the next call (it answered "busy" until another call
/// parked, before).
#[tokio::test(flavor = "multi_thread")]
async fn an_unanswered_round_gives_its_slot_back_when_its_call_ends() {
    let s = setup();
    let ws = s.dir.path().canonicalize().unwrap().join("ws");
    let mut manifest = std::fs::read_to_string(&s.manifest).unwrap();
    manifest.push_str(&format!(
        "\n[tools.quick-writer]\ncomponent = \"{}\"\ntimeout = \"1s\"\n\
         [[tools.quick-writer.fs]]\nhandle = \"workspace\"\nwithin = \"{}\"\n\
         rights = [\"read\", \"write\"]\napproval = [\"write\"]\n",
        crate::WRITE_FILE,
        ws.display()
    ));
    std::fs::write(&s.manifest, manifest).unwrap();
    let (child, url, _) = crate::mcp::http_server_said(&s, &["--max-in-flight", "1"]).await;
    let state = asked(&write_with(&url, "quick-writer", "late.md", None).await);
    // The one slot is the parked call's.
    let v = write_with(&url, "quick-writer", "other.md", None).await;
    assert!(result_text(&v).contains("busy"), "{v}");
    // Past its deadline and a sweep, the slot is back.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let v = write_with(&url, "quick-writer", "other.md", None).await;
    let next = asked(&v);
    assert_ne!(next, state);
    // The expired call's state answers nothing, and nothing was written.
    let v = write_with(&url, "quick-writer", "late.md", Some((&state, true))).await;
    assert!(error(&v).contains("unknown or expired requestState"), "{v}");
    assert!(!ws.join("late.md").exists());
    drop(child);
}
