//! Replicas sharing state in PostgreSQL (issue 16): a real PostgreSQL
//! server from Debian's packages, started on loopback for each test, and
//! `warden serve --http --state` processes writing their audit chains to it.
//!
//! Without PostgreSQL (`/usr/lib/postgresql/*/bin/initdb`) the tests are
//! skipped with a note, unless `CI` is set, when they fail.

use crate::mcp::{Setup, call, http_client, setup};
use serde_json::json;
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A PostgreSQL server of the test's own, on a free loopback port, its data
/// in a temporary directory; stopped when dropped.
pub(crate) struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// Running as root: PostgreSQL's tools run as the `postgres` user.
    root: bool,
}

fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

impl Postgres {
    pub(crate) fn start() -> Option<Postgres> {
        let Some(bin) = postgres_bin() else {
            if std::env::var_os("CI").is_some() {
                panic!("PostgreSQL is missing (CI installs Debian's postgresql)");
            }
            println!("skipped: PostgreSQL not installed (apt-get install postgresql)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
        if root {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown to postgres");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = Postgres {
            dir,
            bin,
            port,
            root,
        };
        let data = pg.data();
        let out = pg
            .tool("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "warden", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {}", text(&out.stderr));
        pg.start_server();
        Some(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A PostgreSQL tool, run as `postgres` when the test runs as root.
    fn tool(&self, name: &str) -> Command {
        let path = self.bin.join(name);
        if self.root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn start_server(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            self.dir.path().display()
        );
        let out = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("log"))
            .args(["-w", "-t", "30", "-o", &options, "start"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            text(&out.stdout),
            std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
        );
    }

    /// Stops the server (fast: open connections are closed).
    pub(crate) fn stop(&self) {
        let _ = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "stop"])
            .output();
    }

    pub(crate) fn restart(&self) {
        self.start_server();
    }

    pub(crate) fn url(&self) -> String {
        format!("postgres://warden@127.0.0.1:{}/postgres", self.port)
    }

    /// A client as the superuser (the test's own).
    pub(crate) async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `warden serve --http --state` as replica `name`; the child and its URL.
async fn replica(s: &Setup, pg: &Postgres, name: &str) -> (tokio::process::Child, String) {
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
        .env("WARDEN_STATE_DIR", s.dir.path().join("state"))
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("server did not start")
            .unwrap()
            .expect("server exited");
        if let Some(url) = line.strip_prefix("warden: serving MCP at ") {
            break url.to_owned();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, url)
}

/// SIGTERM, and the exit status.
async fn terminate(mut child: tokio::process::Child) -> Option<i32> {
    let pid = child.id().unwrap().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("replica did not stop on SIGTERM")
        .unwrap()
        .code()
}

fn warden(s: &Setup, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .env("WARDEN_STATE_DIR", s.dir.path().join("state"))
        .output()
        .unwrap()
}

/// `GET` of a probe path next to the MCP endpoint: its status.
async fn probe(url: &str, path: &str) -> u16 {
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
    let ends: i64 = db
        .query_one(
            "SELECT count(*) FROM warden_audit WHERE event = 'invocation.end'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
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
    let out = warden(
        &s,
        &[
            "audit",
            "export",
            "--state",
            &url,
            "--out",
            dir.to_str().unwrap(),
        ],
    );
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
    // Exporting again does not overwrite.
    let out = warden(
        &s,
        &[
            "audit",
            "export",
            "--state",
            &url,
            "--out",
            dir.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("export does not overwrite"));

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
    let chain_b: String = db
        .query_one(
            "SELECT chain FROM warden_chains WHERE replica = 'replica-b'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
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
        assert!(e.contains("is unreachable"), "{e}");
        assert!(e.contains("nothing is done unrecorded"), "{e}");
        assert!(!e.contains("warden@"), "{e}");
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
    let ends: i64 = db
        .query_one(
            "SELECT count(*) FROM warden_audit WHERE event = 'invocation.end'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
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
