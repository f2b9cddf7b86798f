//! Three replicas sharing one database behind a round-robin front, as a
//! Kubernetes Service puts them: `tools/call` on the stateless protocol
//! (2026-07-28: no session, each request carries its version and client)
//! goes to whichever replica the front picks, and one replica killed
//! mid-run costs only the calls it held.

use crate::mcp::setup;
use crate::postgres::Postgres;
use crate::replicas::{probe, replica, terminate, warden};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A TCP front on loopback: each connection goes to the next backend in
/// turn; one that refuses the connection is skipped (as a load balancer
/// skips an endpoint that is gone). The front's address.
async fn round_robin(backends: Vec<String>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let next = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let (backends, next) = (backends.clone(), next.clone());
            tokio::spawn(async move {
                for _ in 0..backends.len() {
                    let i = next.fetch_add(1, Ordering::Relaxed) % backends.len();
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&backends[i]).await {
                        let _ = server.set_nodelay(true);
                        let _ = client.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Replicas a, b and c sharing `pg`, and a round-robin front before them:
/// the children, each replica's own MCP URL, and the front's.
async fn three_behind_a_front(
    s: &crate::mcp::Setup,
    pg: &Postgres,
) -> (Vec<tokio::process::Child>, Vec<String>, String) {
    let (mut children, mut urls, mut backends) = (Vec::new(), Vec::new(), Vec::new());
    for name in ["replica-a", "replica-b", "replica-c"] {
        let (c, u) = replica(s, pg, name).await;
        children.push(c);
        backends.push(
            u.trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap()
                .to_owned(),
        );
        urls.push(u);
    }
    let front = format!("http://{}/mcp", round_robin(backends).await);
    (children, urls, front)
}

/// Every answered invocation has exactly one start and one end record.
pub(crate) async fn one_start_and_one_end(db: &tokio_postgres::Client, answered: &[String]) {
    let rows = db
        .query(
            "SELECT a.invocation, count(*) FILTER (WHERE a.event = 'invocation.start'),
                    count(*) FILTER (WHERE a.event = 'invocation.end')
             FROM warden_audit a WHERE a.invocation = ANY($1) GROUP BY a.invocation",
            &[&answered],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), answered.len(), "answered calls without records");
    for r in &rows {
        let (starts, ends): (i64, i64) = (r.get(1), r.get(2));
        assert_eq!((starts, ends), (1, 1), "{}", r.get::<_, String>(0));
    }
}

/// `audit verify --state`: every chain complete, or also incomplete (never
/// altered) where `may_end_unsigned` says so (a replica that was killed).
pub(crate) fn chains_hold(
    s: &crate::mcp::Setup,
    pg: &Postgres,
    may_end_unsigned: impl Fn(&Value) -> bool,
) {
    let out = warden(s, &["audit", "verify", "--state", &pg.url(), "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    for chain in report["chains"].as_array().unwrap() {
        let status = chain["status"].as_str().unwrap();
        if may_end_unsigned(chain) {
            assert!(status == "complete" || status == "incomplete", "{chain}");
        } else {
            assert_eq!(status, "complete", "{chain}");
        }
    }
}

/// One stateless `tools/call` of echo: the invocation id of its answer,
/// or why it failed.
async fn stateless_call(
    http: &reqwest::Client,
    url: &str,
    message: &str,
) -> Result<String, String> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "echo", "arguments": {"message": message},
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "front-test", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {},
        },
    }});
    let resp = http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "echo")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {text}"));
    }
    // One JSON answer, or an event stream whose data line is it.
    let json = text
        .lines()
        .find_map(|l| l.strip_prefix("data: ").filter(|d| d.starts_with('{')))
        .unwrap_or(&text);
    let v: Value = serde_json::from_str(json).map_err(|e| format!("{e}: {text}"))?;
    let result = &v["result"];
    if result["isError"] != false || result["structuredContent"]["message"] != message {
        return Err(format!("not an echo: {v}"));
    }
    result["_meta"]["warden"]["invocation"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no invocation: {v}"))
}

/// `WARDEN_FRONT_CALLS` stateless calls (10,000 by default) from 16
/// clients through the front, a new connection each (so each is balanced);
/// replica b killed with SIGKILL a third of the way. Every call is answered
/// or fails to its client as a connection failure (those that reached b as
/// it died; the front then skips it); the calls reached all three replicas; every
/// answered one has its start and end on its replica's chain; the trail
/// verifies (the killed replica's chain may end unsigned, never altered).
#[tokio::test(flavor = "multi_thread")]
async fn stateless_calls_through_a_round_robin_front_reach_every_replica_and_survive_one_killed() {
    let Some(pg) = Postgres::start() else { return };
    let s = setup();
    let calls: usize = std::env::var("WARDEN_FRONT_CALLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let (children, _, url) = three_behind_a_front(&s, &pg).await;
    let mut children: Vec<_> = children.into_iter().map(Some).collect();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let clients = 16;
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (http, url, done) = (http.clone(), url.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut answered = Vec::new();
            let mut failed = Vec::new();
            for n in (c..calls).step_by(clients) {
                match stateless_call(&http, &url, &format!("{c}-{n}")).await {
                    Ok(inv) => answered.push(inv),
                    Err(e) => failed.push(e),
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            (answered, failed)
        }));
    }
    while done.load(Ordering::Relaxed) < calls / 3 {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "calls too slow"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut b = children[1].take().unwrap();
    b.start_kill().unwrap();
    let _ = b.wait().await;
    let killed_at = done.load(Ordering::Relaxed);
    let mut answered = Vec::new();
    let mut failed = Vec::new();
    for t in tasks {
        let (ok, bad) = t.await.unwrap();
        answered.extend(ok);
        failed.extend(bad);
    }
    let elapsed = started.elapsed();
    assert_eq!(answered.len() + failed.len(), calls);
    println!(
        "{calls} stateless calls through the front in {elapsed:?} ({:.0} calls/s): {} answered, {} failed (replica b killed after {killed_at})",
        calls as f64 / elapsed.as_secs_f64(),
        answered.len(),
        failed.len()
    );
    // Only calls that reached replica b as it died fail, and they fail as
    // a connection does (the front has no health checks: connections it
    // handed to b's backlog are reset) — never as a wrong or error answer.
    let shown = &failed[..failed.len().min(5)];
    assert!(
        failed.len() < calls / 20,
        "{} failed: {shown:?}",
        failed.len()
    );
    assert!(
        failed
            .iter()
            .all(|e| e.starts_with("error sending request") || e.starts_with("error decoding")),
        "{shown:?}"
    );
    for c in children.iter_mut() {
        if let Some(c) = c.take() {
            assert_eq!(terminate(c).await, Some(0));
        }
    }

    let db = pg.client().await;
    // Every replica answered some: the front spread them.
    let rows = db
        .query(
            "SELECT c.replica, count(*) FROM warden_audit a JOIN warden_chains c USING (chain)
             WHERE a.event = 'invocation.end' GROUP BY c.replica ORDER BY c.replica",
            &[],
        )
        .await
        .unwrap();
    let per: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    println!("invocations ended per replica: {per:?}");
    assert_eq!(per.len(), 3, "{per:?}");
    assert!(per.iter().all(|(_, n)| *n > 0), "{per:?}");
    // Every answered call: one start and one end.
    one_start_and_one_end(&db, &answered).await;
    chains_hold(&s, &pg, |chain| chain["replica"] == "replica-b");
}

/// The database stopped while three replicas take calls through the
/// front: calls fail closed (each with the error that says nothing was
/// done unrecorded), every replica reports not ready, and when the
/// database returns every replica is ready again and calls succeed;
/// every answered call is on the trail, and no chain is altered.
#[tokio::test(flavor = "multi_thread")]
async fn the_database_stopped_mid_run_fails_three_replicas_closed_and_they_resume() {
    let Some(pg) = Postgres::start() else { return };
    let s = setup();
    let (children, urls, url) = three_behind_a_front(&s, &pg).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, bad) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut tasks = Vec::new();
    for c in 0..8 {
        let (http, url, stop, ok, bad) = (
            http.clone(),
            url.clone(),
            stop.clone(),
            ok.clone(),
            bad.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let (mut answered, mut failed) = (Vec::new(), Vec::new());
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                match stateless_call(&http, &url, &format!("{c}-{n}")).await {
                    Ok(inv) => {
                        answered.push(inv);
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        failed.push(e);
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            (answered, failed)
        }));
    }
    let wait_for = |counter: Arc<AtomicUsize>, n: usize| async move {
        let started = Instant::now();
        while counter.load(Ordering::Relaxed) < n {
            assert!(started.elapsed() < Duration::from_secs(60), "stalled");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    wait_for(ok.clone(), 300).await;
    pg.stop();
    // Each replica fails calls, and says it is not ready.
    wait_for(bad.clone(), 60).await;
    for u in &urls {
        assert_eq!(probe(u, "/readyz").await, 503, "{u}");
        assert_eq!(probe(u, "/healthz").await, 200, "{u}");
    }
    let answered_down = ok.load(Ordering::Relaxed);
    pg.restart();
    let started = Instant::now();
    for u in &urls {
        while probe(u, "/readyz").await != 200 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{u} not ready again"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    wait_for(ok.clone(), answered_down + 300).await;
    stop.store(true, Ordering::Relaxed);
    let (mut answered, mut failed) = (Vec::new(), Vec::new());
    for t in tasks {
        let (a, f) = t.await.unwrap();
        answered.extend(a);
        failed.extend(f);
    }
    println!(
        "store stopped mid-run: {} answered, {} failed closed",
        answered.len(),
        failed.len()
    );
    // Every failure is the store's: nothing done unrecorded.
    for e in &failed {
        assert!(e.contains("nothing is done unrecorded"), "{e}");
        assert!(!e.contains("warden@"), "the store's user in an answer: {e}");
    }
    for c in children {
        assert_eq!(terminate(c).await, Some(0));
    }
    let db = pg.client().await;
    one_start_and_one_end(&db, &answered).await;
    chains_hold(&s, &pg, |_| true);
}
