//! `cargo bench --bench replicas`: replicas sharing state in PostgreSQL
//! (issue 16), against a PostgreSQL server of the bench's own on loopback.
//!
//! 1. What the PostgreSQL audit trail costs a call against the file trail:
//!    one `warden serve --http`, closed-loop standard-library Python clients
//!    (`benches/mcp_http.py`, 8 and 64 of them), calls/s, median latency,
//!    the server's CPU per call and PostgreSQL's own (its processes' CPU
//!    time), the two trails alternating in the same run.
//! 2. Calls/s for one replica against three sharing one database, the same
//!    64 clients split evenly over the three (each replica's share from
//!    client processes of its own, all at once).
//!
//! On this 2-core machine the clients, the replicas and PostgreSQL share
//! the same two cores: three replicas add no cores, so (2) shows what the
//! replicas cost each other here, not what they would add on more
//! machines. Skipped with a note without PostgreSQL or python3, unless CI
//! is set. `WARDEN_BENCH_QUICK=1` runs shorter rounds (CI).

#[path = "../../tests/integration/postgres.rs"]
mod postgres;

mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

use std::path::{Path, PathBuf};
use std::process::Stdio;

fn quick() -> bool {
    std::env::var_os("WARDEN_BENCH_QUICK").is_some()
}

struct Layout {
    dir: tempfile::TempDir,
    manifest: PathBuf,
    grants: PathBuf,
}

fn layout() -> Layout {
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = dir.path().join("manifest.toml");
    std::fs::write(
        &manifest,
        format!("[tools.echo]\ncomponent = \"{}\"\n", guests::ECHO),
    )
    .expect("manifest");
    let grants = dir.path().join("task.toml");
    std::fs::write(&grants, "task = \"bench\"\n").expect("grants");
    Layout {
        dir,
        manifest,
        grants,
    }
}

/// `warden serve --http` with `trail` (`--audit FILE` or `--state URL`):
/// the child, its URL and its pid.
async fn serve(l: &Layout, cache: &Path, trail: &[&str]) -> (tokio::process::Child, String, u32) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("--cache-dir")
        .arg(cache)
        .args(["serve", "--manifest"])
        .arg(&l.manifest)
        .arg("--grants")
        .arg(&l.grants)
        .args(["--http", "127.0.0.1:0", "--max-in-flight", "256"])
        .args(trail)
        .env("WARDEN_STATE_DIR", l.dir.path().join("state"))
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let url = loop {
        let line = lines
            .next_line()
            .await
            .expect("read")
            .expect("server exited");
        if let Some(url) = line.strip_prefix("warden: serving MCP at ") {
            break url.to_owned();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let pid = child.id().expect("pid");
    (child, url, pid)
}

/// `benches/mcp_http.py` against `url` with `clients`, started now.
fn clients(url: &str, pid: u32, clients: usize) -> std::process::Child {
    let duration = if quick() { "2" } else { "5" };
    std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/mcp_http.py"))
        .args(["--url", url, "--pid", &pid.to_string()])
        .args(["--clients", &clients.to_string(), "--duration", duration])
        .args(["--processes", &clients.clamp(1, 2).to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3")
}

fn report(child: std::process::Child) -> serde_json::Value {
    let out = child.wait_with_output().expect("mcp_http.py");
    let text = String::from_utf8_lossy(&out.stdout);
    let report = text
        .lines()
        .last()
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok());
    match report {
        Some(r) if out.status.success() && r["errors"] == 0 => r,
        _ => panic!("mcp_http.py failed: {text}"),
    }
}

fn f(r: &serde_json::Value, key: &str) -> f64 {
    r[key].as_f64().unwrap_or(f64::NAN)
}

/// CPU seconds used so far by every process named `postgres`.
fn postgres_cpu_s() -> f64 {
    let tick = 100.0; // USER_HZ on Linux
    let mut total = 0.0;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some((name, rest)) = stat.split_once(") ") else {
            continue;
        };
        if !name.ends_with("(postgres") {
            continue;
        }
        let fields: Vec<&str> = rest.split(' ').collect();
        // utime and stime: fields 14 and 15 of stat, 12 and 13 after ") ".
        let t = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        total += (t(11) + t(12)) / tick;
    }
    total
}

#[tokio::main]
async fn main() {
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(std::env::var_os("CI").is_none(), "python3 is missing");
        println!("replicas bench: skipped (no python3)");
        return;
    }
    let Some(pg) = postgres::Postgres::start() else {
        return;
    };
    let l = layout();
    let cache = l.dir.path().join("cache");
    let url = pg.url();
    let file = l.dir.path().join("audit.jsonl");
    let file = file.to_str().expect("path");
    let rounds = if quick() { 1 } else { 3 };

    for n in [8, 64] {
        for round in 0..rounds {
            for (name, trail) in [
                ("file trail      ", ["--audit", file]),
                ("PostgreSQL trail", ["--state", url.as_str()]),
            ] {
                let (child, mcp, pid) = serve(&l, &cache, &trail).await;
                let pg0 = postgres_cpu_s();
                let r = report(clients(&mcp, pid, n));
                let pg_us = (postgres_cpu_s() - pg0) * 1e6 / f(&r, "calls");
                drop(child);
                println!(
                    "{n:>2} clients, {name} (round {}): {:>6.0} calls/s, median {:>6.2} ms, p99 {:>6.2} ms, server CPU {:>5.0} µs a call, PostgreSQL CPU {:>5.0} µs a call",
                    round + 1,
                    f(&r, "calls_per_s"),
                    f(&r, "median_ms"),
                    f(&r, "p99_ms"),
                    f(&r, "server_cpu_us_per_call"),
                    pg_us,
                );
            }
        }
    }

    // One replica against three, 63 clients in all.
    for round in 0..rounds {
        let (one, mcp, pid) = serve(&l, &cache, &["--state", &url]).await;
        let r = report(clients(&mcp, pid, 63));
        drop(one);
        let single = f(&r, "calls_per_s");
        let mut servers = Vec::new();
        for _ in 0..3 {
            servers.push(serve(&l, &cache, &["--state", &url]).await);
        }
        let running: Vec<_> = servers
            .iter()
            .map(|(_, mcp, pid)| clients(mcp, *pid, 21))
            .collect();
        let reports: Vec<_> = running.into_iter().map(report).collect();
        let three: f64 = reports.iter().map(|r| f(r, "calls_per_s")).sum();
        let medians: Vec<String> = reports
            .iter()
            .map(|r| format!("{:.2}", f(r, "median_ms")))
            .collect();
        drop(servers);
        println!(
            "63 clients, round {}: 1 replica {single:.0} calls/s (median {:.2} ms); 3 replicas {three:.0} calls/s (medians {} ms); ratio {:.2}",
            round + 1,
            f(&r, "median_ms"),
            medians.join(", "),
            three / single
        );
    }
}
