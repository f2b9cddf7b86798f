//! Replicas sharing state in PostgreSQL (issue 16): a real PostgreSQL
//! server from Debian's packages, started on loopback for each test, and
//! `warden serve --http --state` processes writing their audit chains to it.
//!
//! Without PostgreSQL (`/usr/lib/postgresql/*/bin/initdb`) the tests are
//! skipped with a note, unless `CI` is set, when they fail.

use crate::mcp::{Setup, call, http_client, setup};
use crate::postgres::{Postgres, one};
use serde_json::json;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `warden serve --http --state` as replica `name`; the child and its URL.
pub(crate) async fn replica(
    s: &Setup,
    pg: &Postgres,
    name: &str,
) -> (tokio::process::Child, String) {
    let (child, url, _) = replica_with(s, pg, name, &[]).await;
    (child, url)
}

/// [`replica`] with `extra` arguments; also the pending approvals URL, if
/// it serves one.
pub(crate) async fn replica_with(
    s: &Setup,
    pg: &Postgres,
    name: &str,
    extra: &[&str],
) -> (tokio::process::Child, String, Option<String>) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("--cache-dir")
        .arg(crate::common::shared_cache())
        .args(["serve", "--manifest"])
        .arg(&s.manifest)
        .arg("--grants")
        .arg(&s.grants)
        .args([
            "--http",
            "127.0.0.1:0",
            "--state",
            &pg.url(),
            "--replica",
            name,
        ])
        .args(extra)
        .env("WARDEN_STATE_DIR", s.dir.path().join("state"))
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut approvals = None;
    let url = loop {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("server did not start")
            .unwrap()
            .expect("server exited");
        if let Some(u) = line.strip_prefix("warden: pending approvals at ") {
            approvals = Some(u.to_owned());
        }
        if let Some(url) = line.strip_prefix("warden: serving MCP at ") {
            break url.to_owned();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, url, approvals)
}

/// SIGTERM, and the exit status.
pub(crate) async fn terminate(mut child: tokio::process::Child) -> Option<i32> {
    let pid = child.id().unwrap().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("replica did not stop on SIGTERM")
        .unwrap()
        .code()
}

pub(crate) fn warden(s: &Setup, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .env("WARDEN_STATE_DIR", s.dir.path().join("state"))
        .output()
        .unwrap()
}

/// `GET` of a probe path next to the MCP endpoint: its status.
pub(crate) async fn probe(url: &str, path: &str) -> u16 {
    let url = url.replace("/mcp", path);
    reqwest::get(url).await.unwrap().status().as_u16()
}

async fn echo_calls(url: &str, n: usize) -> Vec<Result<String, String>> {
    let c = http_client(url, None).await.unwrap();
    let mut out = Vec::new();
    for i in 0..n {
        let r = c
            .call_tool(call("echo", json!({"message": format!("m{i}")})))
            .await;
        out.push(match r {
            Ok(r) if r.is_error != Some(true) => Ok(crate::mcp::text(&r)),
            Ok(r) => Err(crate::mcp::text(&r)),
            Err(e) => Err(e.to_string()),
        });
    }
    let _ = c.cancel().await;
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_keep_one_trail_that_verifies_exports_and_shows_tampering() {
    let Some(pg) = Postgres::start() else { return };
    let s = setup();
    let (a, url_a) = replica(&s, &pg, "replica-a").await;
    let (b, url_b) = replica(&s, &pg, "replica-b").await;
    assert_eq!(probe(&url_a, "/readyz").await, 200);
    assert_eq!(probe(&url_b, "/healthz").await, 200);
    for (url, n) in [(&url_a, 3), (&url_b, 2)] {
        for r in echo_calls(url, n).await {
            assert!(r.is_ok(), "{r:?}");
        }
    }
    // Answered means recorded: the ends are in the store before the
    // replicas stop.
    let db = pg.client().await;
    let ends: i64 = one(
        &db,
        "SELECT count(*) FROM warden_audit WHERE event = 'invocation.end'",
        &[],
    )
    .await;
    assert_eq!(ends, 5);
    assert_eq!(terminate(a).await, Some(0));
    assert_eq!(terminate(b).await, Some(0));

    let url = pg.url();
    let out = warden(&s, &["audit", "verify", "--state", &url]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        !stdout.contains("warden@"),
        "the URL's user is not shown: {stdout}"
    );
    assert_eq!(stdout.matches(": ok, ").count(), 2, "{stdout}");
    assert!(
        stdout.contains("(replica-a): ok, ")
            && stdout.contains("(replica-b): ok, ")
            && stdout.contains("2 chains, "),
        "{stdout}"
    );

    // Each chain exports as a file trail, which verifies as one.
    let dir = s.dir.path().join("export");
    let export = || {
        warden(
            &s,
            &[
                "audit",
                "export",
                "--state",
                &url,
                "--out",
                dir.to_str().unwrap(),
            ],
        )
    };
    let out = export();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 2);
    for f in &files {
        let out = warden(&s, &["audit", "verify", f.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    }
    // Exporting again: a chain exported as it stands is there already
    // (a rerun after a failure goes on past it); one that differs is not
    // overwritten.
    let out = export();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let edited = format!("{}x", std::fs::read_to_string(&files[0]).unwrap());
    std::fs::write(&files[0], &edited).unwrap();
    let out = export();
    // Reported, the other chain exported: exit 1.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("exists with other contents (export does not overwrite)"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&files[0]).unwrap(), edited);

    // The table is append-only: an edit is refused by the store itself.
    let e = db
        .execute("DELETE FROM warden_audit WHERE seq = 1", &[])
        .await
        .unwrap_err();
    let e = format!("{e:?}");
    assert!(e.contains("append-only"), "{e}");

    // Whoever gets past that (an owner disabling the trigger) is caught by
    // the chain: the first bad record is named, in its chain.
    db.batch_execute(
        "ALTER TABLE warden_audit DISABLE TRIGGER warden_audit_append_only;
         UPDATE warden_audit SET line = replace(line, '\"tool\":\"echo\"', '\"tool\":\"ech0\"')
           WHERE seq = 1 AND chain = (SELECT chain FROM warden_chains WHERE replica = 'replica-b');",
    )
    .await
    .unwrap();
    let chain_b: String = one(
        &db,
        "SELECT chain FROM warden_chains WHERE replica = 'replica-b'",
        &[],
    )
    .await;
    let out = warden(&s, &["audit", "verify", "--state", &url]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!("chain {chain_b} (replica-b):2: ")),
        "{stderr}"
    );
    assert!(stdout.contains("(replica-a): ok, "), "{stdout}");
    let out = warden(&s, &["audit", "verify", "--state", &url, "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], "tampered");
    assert_eq!(out.status.code(), Some(1));

    // `audit show --state` lists every chain's records, filtered as for a
    // file (the edited record no longer names the tool).
    let ends = |args: &[&str]| {
        let out = warden(
            &s,
            &[&["audit", "show", "--state", &url, "--json"], args].concat(),
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        text(&out.stdout)
            .matches("\"event\":\"invocation.end\"")
            .count()
    };
    assert_eq!(ends(&[]), 5);
    assert_eq!(ends(&["--tool", "echo"]), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_store_down_calls_fail_closed_and_resume_when_it_returns() {
    let Some(pg) = Postgres::start() else { return };
    let s = setup();
    let (server, url) = replica(&s, &pg, "only").await;
    assert!(echo_calls(&url, 1).await[0].is_ok());

    pg.stop();
    let calls = echo_calls(&url, 2).await;
    for r in &calls {
        let e = r.as_ref().expect_err("a call ran with the store down");
        // Said to the agent without the store's address (the log has it).
        assert_eq!(
            e,
            "host error: the audit trail cannot be written, so nothing is done unrecorded; \
             the server's log says why"
        );
    }
    assert_eq!(probe(&url, "/readyz").await, 503);
    assert_eq!(probe(&url, "/healthz").await, 200);

    pg.restart();
    let started = Instant::now();
    while probe(&url, "/readyz").await != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "not ready again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for r in echo_calls(&url, 2).await {
        assert!(r.is_ok(), "{r:?}");
    }
    assert_eq!(terminate(server).await, Some(0));

    // Every call that was answered is on the trail, and the trail holds.
    let db = pg.client().await;
    let ends: i64 = one(
        &db,
        "SELECT count(*) FROM warden_audit WHERE event = 'invocation.end'",
        &[],
    )
    .await;
    assert_eq!(ends, 3);
    let out = warden(&s, &["audit", "verify", "--state", &pg.url()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}

#[test]
fn a_store_that_cannot_be_reached_stops_serve_with_what_was_wrong() {
    let s = setup();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://warden:hunter2-pw@127.0.0.1:{port}/db");
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["serve", "--manifest"])
        .arg(&s.manifest)
        .arg("--grants")
        .arg(&s.grants)
        .args(["--http", "127.0.0.1:0", "--state", &url])
        .env("WARDEN_STATE_DIR", s.dir.path().join("state"))
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "the state store postgres://127.0.0.1:{port}/db is unreachable"
        )),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    // --state and --audit are one or the other.
    let out = warden(
        &s,
        &[
            "serve",
            "--manifest",
            "m",
            "--stdio",
            "--audit",
            "a",
            "--state",
            &url,
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(!text(&out.stderr).contains("hunter2"));
}

/// The invocation id of an answered call (`_meta.warden.invocation`).
fn invocation_of(r: &rmcp::model::CallToolResult) -> Option<String> {
    let meta = serde_json::to_value(r.meta.as_ref()?).ok()?;
    Some(meta["warden"]["invocation"].as_str()?.to_owned())
}

/// Calls spread over three replicas (each client bound to one, as a
/// session is), one replica killed with SIGKILL part-way: every call is
/// answered or fails to its client, every answered call's invocation has
/// its start and end on the trail, and the trail holds (the killed
/// replica's chain may end unsigned, never altered).
#[tokio::test(flavor = "multi_thread")]
async fn a_replica_killed_mid_run_leaves_every_answered_call_recorded_and_the_trail_intact() {
    let Some(pg) = Postgres::start() else { return };
    let s = setup();
    let calls: usize = std::env::var("WARDEN_REPLICA_CALLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_500);
    let mut children = Vec::new();
    let mut urls = Vec::new();
    for name in ["replica-a", "replica-b", "replica-c"] {
        let (c, u) = replica(&s, &pg, name).await;
        children.push(Some(c));
        urls.push(u);
    }
    // Four clients per replica, each making its share of the calls.
    let per_client = calls / 12;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        for _ in 0..4 {
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                let mut answered = Vec::new();
                let mut failed = 0usize;
                let Ok(c) = http_client(&url, None).await else {
                    return (i, answered, per_client);
                };
                for n in 0..per_client {
                    let r = tokio::time::timeout(
                        Duration::from_secs(20),
                        c.call_tool(call("echo", json!({"message": format!("{i}-{n}")}))),
                    )
                    .await;
                    match r {
                        Ok(Ok(r)) if r.is_error != Some(true) => answered
                            .push(invocation_of(&r).expect("an answer names its invocation")),
                        Ok(_) => failed += 1,
                        // rmcp's client keeps waiting for an answer from a
                        // server that died (it retries the event stream):
                        // that call, and this client's later ones, failed.
                        Err(_) if i == 1 => {
                            failed += per_client - n;
                            break;
                        }
                        Err(_) => panic!("replica {i}: a call got no answer within 20 s"),
                    }
                }
                let _ = tokio::time::timeout(Duration::from_secs(5), c.cancel()).await;
                (i, answered, failed)
            }));
        }
    }
    // Replica b dies once about a third of the calls are done.
    let db = pg.client().await;
    loop {
        let n: i64 = one(
            &db,
            "SELECT count(*) FROM warden_audit WHERE event = 'invocation.end'",
            &[],
        )
        .await;
        if n as usize >= calls / 3 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "calls too slow"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut b = children[1].take().unwrap();
    b.start_kill().unwrap();
    let _ = b.wait().await;
    let mut answered = vec![Vec::new(); 3];
    let mut failed = [0usize; 3];
    for t in tasks {
        let (i, ok, bad) = t.await.unwrap();
        answered[i].extend(ok);
        failed[i] += bad;
    }
    let elapsed = started.elapsed();
    for i in [0, 2] {
        assert_eq!(failed[i], 0, "replica {i} failed calls");
        assert_eq!(answered[i].len(), 4 * per_client);
    }
    assert!(failed[1] > 0, "the killed replica answered everything");
    for c in children.iter_mut() {
        if let Some(c) = c.take() {
            assert_eq!(terminate(c).await, Some(0));
        }
    }
    println!(
        "{} calls answered, {} failed (replica b killed) in {elapsed:?}",
        answered.iter().map(Vec::len).sum::<usize>(),
        failed.iter().sum::<usize>()
    );

    // Every answered call: its start and its end, on its replica's chain.
    let all: Vec<String> = answered.concat();
    crate::front::one_start_and_one_end(&db, &all).await;
    crate::front::chains_hold(&s, &pg, |chain| chain["replica"] == "replica-b");
}

/// `replica` with the pending approvals endpoint: the child, its MCP URL
/// and its approvals URL.
async fn replica_with_approvals(
    s: &Setup,
    pg: &Postgres,
    name: &str,
    op_token_file: &str,
) -> (tokio::process::Child, String, String) {
    let extra = [
        "--approvals",
        "127.0.0.1:0",
        "--approvals-token-file",
        op_token_file,
    ];
    let (child, url, approvals) = replica_with(s, pg, name, &extra).await;
    (child, url, approvals.expect("no approvals endpoint"))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approval_asked_on_one_replica_is_answered_through_another_once() {
    let Some(pg) = Postgres::start() else { return };
    let s = setup();
    let op_token = "operator-token-0123456789";
    let op_file = s.dir.path().join("op-token");
    std::fs::write(&op_file, op_token).unwrap();
    let op_file = op_file.display().to_string();
    let (a, url_a, approvals_a) = replica_with_approvals(&s, &pg, "replica-a", &op_file).await;
    let (b, _, approvals_b) = replica_with_approvals(&s, &pg, "replica-b", &op_file).await;

    // A call on replica A that needs approval (its client cannot elicit).
    let client = http_client(&url_a, None).await.unwrap();
    let asked = tokio::spawn(async move {
        let r = client
            .call_tool(call(
                "writer",
                json!({"path": "approved.md", "content": "across replicas"}),
            ))
            .await;
        (client, r)
    });

    // The operator sees it through replica B's endpoint, and approves it
    // there.
    let http = reqwest::Client::new();
    let started = Instant::now();
    let pending = loop {
        let resp = http
            .get(&approvals_b)
            .bearer_auth(op_token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let list: serde_json::Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
        if let Some(first) = list.as_array().and_then(|a| a.first()) {
            break first.clone();
        }
        assert!(started.elapsed() < Duration::from_secs(20), "never listed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(pending["tool"], "writer");
    assert_eq!(pending["action"], "fs.write");
    assert_eq!(pending["resource"], "workspace:approved.md");
    let digest = pending["digest"].as_str().unwrap().to_owned();
    let answer = |base: String| {
        let http = http.clone();
        let digest = digest.clone();
        async move {
            http.post(format!("{base}/{digest}"))
                .bearer_auth(op_token)
                .body(r#"{"approved": true, "by": "ops-on-b"}"#)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let answered_at = Instant::now();
    assert_eq!(answer(approvals_b.clone()).await, 200);
    // Single use, across replicas: no second answer anywhere.
    assert_eq!(answer(approvals_a.clone()).await, 404);
    assert_eq!(answer(approvals_b.clone()).await, 404);

    let (client, r) = asked.await.unwrap();
    let r = r.unwrap();
    assert_ne!(r.is_error, Some(true), "{}", crate::mcp::text(&r));
    // Delivered by notification, well before the one-second look.
    let delivered = answered_at.elapsed();
    println!("answer delivered to replica A {delivered:?} after it was given on B");
    let _ = client.cancel().await;
    let ws = s.dir.path().canonicalize().unwrap().join("ws");
    assert_eq!(
        std::fs::read_to_string(ws.join("approved.md")).unwrap(),
        "across replicas"
    );
    assert_eq!(terminate(a).await, Some(0));
    assert_eq!(terminate(b).await, Some(0));
    // Replica A's chain records who approved it, through which endpoint.
    let db = pg.client().await;
    let n: i64 = one(
        &db,
        "SELECT count(*) FROM warden_audit a JOIN warden_chains c USING (chain)
             WHERE c.replica = 'replica-a' AND a.event = 'decision'
               AND a.line LIKE '%approved by ops-on-b (approvals endpoint)%'",
        &[],
    )
    .await;
    assert_eq!(n, 1);
    let state: String = one(
        &db,
        "SELECT state FROM warden_approvals WHERE digest = $1",
        &[&digest],
    )
    .await;
    assert_eq!(state, "used");
}

/// A request given up on (its call cancelled or out of time) leaves the
/// pending set: no longer listed, answerable, nor scanned by every
/// listing. Left `pending` with only its expiry moved, withdrawn rows
/// piled up in the index each listing walks.
#[tokio::test(flavor = "multi_thread")]
async fn a_withdrawn_approval_leaves_the_pending_set() {
    use warden::approval::{ApprovalQueue, ApprovalRequest, Approver};
    let Some(pg) = Postgres::start() else { return };
    let url = warden::store::StateUrl::parse(&pg.url()).unwrap();
    let q = warden::store::PgApprover::open(&url, "replica-a", Duration::from_secs(60))
        .await
        .unwrap();
    let request = ApprovalRequest {
        digest: "ab".repeat(32),
        tool: "writer".into(),
        identity: "sha256:00".into(),
        task: "t".into(),
        agent: None,
        invocation: "i".into(),
        action: "fs.write".into(),
        resource: "workspace:x".into(),
        summary: "write 1 byte".into(),
    };
    let asking = {
        let q = q.clone();
        let request = request.clone();
        tokio::spawn(async move { q.ask(&request).await })
    };
    let started = Instant::now();
    while q.waiting().await.unwrap().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(20), "never listed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    asking.abort();
    let db = pg.client().await;
    let started = Instant::now();
    loop {
        let state: String = one(
            &db,
            "SELECT state FROM warden_approvals WHERE digest = $1",
            &[&request.digest],
        )
        .await;
        if state == "used" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "still {state}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(q.waiting().await.unwrap().is_empty());
}

/// Approval rows do not stay forever: a replica that asks deletes the rows
/// that expired over an hour ago, whatever their state (each ask added a
/// row that was never deleted, so an agent whose calls ask for approval
/// grew the table by calling). A row expired minutes ago stays, and so
/// does the request being asked.
#[tokio::test(flavor = "multi_thread")]
async fn expired_approval_rows_are_swept() {
    use warden::approval::{ApprovalQueue, ApprovalRequest, Approver};
    let Some(pg) = Postgres::start() else { return };
    let url = warden::store::StateUrl::parse(&pg.url()).unwrap();
    let q = warden::store::PgApprover::open(&url, "replica-a", Duration::from_secs(60))
        .await
        .unwrap();
    let db = pg.client().await;
    for (digest, state, expired) in [
        ("old-used", "used", "2 hours"),
        ("old-answered", "answered", "90 minutes"),
        ("old-pending", "pending", "3 hours"),
        ("recent-used", "used", "10 minutes"),
    ] {
        db.execute(
            "INSERT INTO warden_approvals (digest, request, replica, expires, state)
             VALUES ($1, '{}', 'replica-b', now() - $2::text::interval, $3)",
            &[&digest, &expired, &state],
        )
        .await
        .unwrap();
    }
    let request = ApprovalRequest {
        digest: "cd".repeat(32),
        tool: "writer".into(),
        identity: "sha256:00".into(),
        task: "t".into(),
        agent: None,
        invocation: "i".into(),
        action: "fs.write".into(),
        resource: "workspace:x".into(),
        summary: "write 1 byte".into(),
    };
    let asking = {
        let q = q.clone();
        let request = request.clone();
        tokio::spawn(async move { q.ask(&request).await })
    };
    let started = Instant::now();
    let digests = loop {
        let rows = db
            .query("SELECT digest FROM warden_approvals ORDER BY digest", &[])
            .await
            .unwrap();
        let digests: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        if !digests.iter().any(|d| d.starts_with("old-")) {
            break digests;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "not swept: {digests:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(digests, [request.digest.clone(), "recent-used".into()]);
    assert_eq!(
        q.waiting().await.unwrap().len(),
        1,
        "the request asked is listed"
    );
    asking.abort();
}

/// A task's shared history is read per kind: thousands of files written
/// do not crowd out a revealed secret, and a long item (a deep path) does
/// not fail the insert that carries the reveal.
#[tokio::test(flavor = "multi_thread")]
async fn a_shared_history_keeps_a_reveal_behind_many_files_and_long_paths() {
    use warden::policy::{HistoryStore, TaskHistory};
    let Some(pg) = Postgres::start() else { return };
    let url = warden::store::StateUrl::parse(&pg.url()).unwrap();
    let store = warden::store::PgHistory::open(&url).await.unwrap();
    let max = warden::policy::cedar::MAX_HISTORY;
    let mut files = TaskHistory::default();
    for i in 0..=max {
        TaskHistory::note(&mut files.files_written, &format!("workspace:f{i}"));
    }
    // The set holds MAX_HISTORY; the store is given more over two saves.
    store.save("crowded", &files).await.unwrap();
    let mut more = TaskHistory::default();
    for i in 0..64 {
        TaskHistory::note(&mut more.files_written, &format!("workspace:g{i}"));
    }
    store.save("crowded", &more).await.unwrap();
    let mut reveal = TaskHistory::default();
    TaskHistory::note(&mut reveal.secrets_revealed, "api");
    TaskHistory::note(
        &mut reveal.files_written,
        &format!("workspace:{}", "d/".repeat(4000)),
    );
    store.save("crowded", &reveal).await.unwrap();
    let loaded = store.load("crowded").await.unwrap();
    assert!(
        loaded.secrets_revealed.contains("api"),
        "the reveal was crowded out"
    );
    assert_eq!(loaded.files_written.len(), max);
    assert!(store.load("another").await.unwrap().is_empty());
    // Rows longer than a set keeps (written by anyone with the table)
    // are read only within the bytes a set holds: 100 of 8 KiB, 80 read.
    let db = pg.client().await;
    db.execute(
        "INSERT INTO warden_task_history (task, kind, item)
         SELECT 'long', 'files_written', lpad(g::text, 8192, 'a')
         FROM generate_series(1, 100) AS g",
        &[],
    )
    .await
    .unwrap();
    let loaded = store.load("long").await.unwrap();
    let max = warden::policy::cedar::MAX_HISTORY_BYTES / 8192;
    assert_eq!(loaded.files_written.len(), max);
    assert!(loaded.files_written.bytes() < max * warden::policy::cedar::MAX_ENTRY);
}

/// Whoever can write `warden_keys` (not the audit table, which is
/// append-only) adds a row naming a replica's key id for another key, or
/// replaces the replica's row: neither stops `audit verify --state` from
/// checking every chain, and neither key stands for the replica (whose
/// chain shows as signed by an unknown key, exit 4, restarted or not: it
/// may only insert there).
#[tokio::test(flavor = "multi_thread")]
async fn a_key_row_written_by_another_neither_stops_verifying_nor_stands_for_a_replica() {
    let Some(pg) = Postgres::start() else { return };
    let s = setup();
    let (a, url_a) = replica(&s, &pg, "replica-a").await;
    for r in echo_calls(&url_a, 2).await {
        assert!(r.is_ok(), "{r:?}");
    }
    assert_eq!(terminate(a).await, Some(0));
    let db = pg.client().await;
    let kid: String = one(&db, "SELECT kid FROM warden_keys", &[]).await;
    let verify = || {
        let out = warden(&s, &["audit", "verify", "--state", &pg.url()]);
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    assert_eq!(verify().0, Some(0));
    // Another key stating the replica's id, under a row of its own.
    let mut other = warden::KeyPair::from_seed(&[9; 32]).jwks()["keys"][0].clone();
    other["kid"] = json!(kid);
    db.execute(
        "INSERT INTO warden_keys (kid, jwk) VALUES ('0123456789abcdef', $1)",
        &[&other.to_string()],
    )
    .await
    .unwrap();
    let (code, stdout, stderr) = verify();
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("(replica-a): ok, "), "{stdout}");
    // The replica's own row replaced by another key: its chain is then
    // signed by a key no row holds, until the replica starts again.
    other.as_object_mut().unwrap().remove("kid");
    db.execute(
        "UPDATE warden_keys SET jwk = $1 WHERE kid = $2",
        &[&other.to_string(), &kid],
    )
    .await
    .unwrap();
    let (code, stdout, stderr) = verify();
    assert_eq!(code, Some(4), "{stdout}{stderr}");
    let (a, _) = replica(&s, &pg, "replica-a").await;
    assert_eq!(terminate(a).await, Some(0));
    assert_eq!(verify().0, Some(4));
    // The row removed, the replica publishes its own again.
    db.execute("DELETE FROM warden_keys WHERE kid = $1", &[&kid])
        .await
        .unwrap();
    let (a, _) = replica(&s, &pg, "replica-a").await;
    assert_eq!(terminate(a).await, Some(0));
    let (code, stdout, stderr) = verify();
    assert_eq!(code, Some(0), "{stdout}{stderr}");
}
