//! The load and fault run CI does (`tests/load/run.sh`, or
//! `cargo run --release --example load -- [WARDEN]`): `target/release/warden`
//! on loopback, in a scratch directory, each check bounded in time.
//!
//! 1. Load: 10,000 MCP `tools/call`s over streamable HTTP from 64 concurrent
//!    clients: every call answered with the tool's result; the trail holds
//!    exactly one `invocation.start` and one `invocation.end` per call and
//!    `warden audit verify` passes.
//! 2. SIGKILL: `warden serve` killed while a call runs (the `hog` tool
//!    looping): `warden audit verify` finds the trail intact up to its last
//!    record and reports the call unfinished (exit 3).
//! 3. Disk full: the trail on a 64 KiB tmpfs with 16 KiB left, a tool that
//!    logs 200 messages of 4 KiB: the invocation fails closed (non-zero
//!    exit, the error names the audit trail, no tool output). Without
//!    permission to mount (not root), a file size limit (`ulimit -f`) stands
//!    in for the full disk, and the run says so.
//!
//! `WARDEN_LOAD_CALLS` and `WARDEN_LOAD_CLIENTS` change the first check's
//! size. One summary line per check; the exit status is non-zero if any
//! check failed.

mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

use anyhow::{Context as _, bail, ensure};
use rmcp::model::{CallToolRequestParams, JsonObject};
use rmcp::service::{RoleClient, RunningService};
use rmcp::{ClientHandler, ServiceExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;

#[derive(Clone, Default)]
struct Client;
impl ClientHandler for Client {}

/// The scratch layout every check shares: manifest, grant, state, cache.
struct Scratch {
    dir: tempfile::TempDir,
    warden: PathBuf,
}

impl Scratch {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.warden);
        self.env(&mut cmd);
        cmd
    }

    fn env(&self, cmd: &mut tokio::process::Command) {
        cmd.env("WARDEN_STATE_DIR", self.path("state"))
            .env("WARDEN_CACHE_DIR", self.path("cache"))
            .env_remove("WARDEN_AUDIT")
            .env_remove("RUST_LOG")
            .kill_on_drop(true);
    }

    /// `warden serve --http 127.0.0.1:0` with its trail at `trail`; the
    /// child and its URL.
    async fn serve(&self, trail: &Path) -> anyhow::Result<(tokio::process::Child, String)> {
        let mut child = self
            .command()
            .args(["serve", "--http", "127.0.0.1:0", "--manifest"])
            .arg(self.path("manifest.toml"))
            .arg("--grants")
            .arg(self.path("task.toml"))
            .arg("--audit")
            .arg(trail)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn warden serve")?;
        let mut lines = tokio::io::BufReader::new(child.stderr.take().context("stderr")?).lines();
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = line.strip_prefix("warden: serving MCP at ") {
                    return Ok(url.to_owned());
                }
                eprintln!("warden serve: {line}");
            }
            bail!("warden serve exited before serving")
        })
        .await
        .context("warden serve did not start within 60 s")??;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok((child, url))
    }

    /// `warden audit verify TRAIL`: exit status and stdout.
    async fn verify(&self, trail: &Path) -> anyhow::Result<(i32, String)> {
        let out = self
            .command()
            .args(["audit", "verify"])
            .arg(trail)
            .output()
            .await?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.status.code().unwrap_or(-1), text))
    }
}

fn call(tool: &str, args: Value) -> CallToolRequestParams {
    let args: JsonObject = args.as_object().cloned().unwrap_or_default();
    CallToolRequestParams::new(tool.to_owned()).with_arguments(args)
}

async fn http_client(url: &str) -> anyhow::Result<RunningService<RoleClient, Client>> {
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    let config = StreamableHttpClientTransportConfig::with_uri(url.to_owned());
    let transport = rmcp::transport::StreamableHttpClientTransport::from_config(config);
    Ok(Client.serve(transport).await?)
}

/// Start and end records by invocation, from a trail's text.
fn starts_and_ends(text: &str) -> anyhow::Result<(HashMap<String, u32>, HashMap<String, u32>)> {
    let (mut starts, mut ends) = (HashMap::new(), HashMap::new());
    for (i, line) in text.lines().enumerate() {
        let r: Value =
            serde_json::from_str(line).with_context(|| format!("trail line {}", i + 1))?;
        let inv = r["invocation"].as_str().unwrap_or_default().to_owned();
        match r["event"].as_str() {
            Some("invocation.start") => *starts.entry(inv).or_default() += 1,
            Some("invocation.end") => *ends.entry(inv).or_default() += 1,
            _ => {}
        }
    }
    Ok((starts, ends))
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// 1. 10,000 calls from 64 clients.
async fn load(s: &Scratch) -> anyhow::Result<String> {
    let calls = env_usize("WARDEN_LOAD_CALLS", 10_000);
    let clients = env_usize("WARDEN_LOAD_CLIENTS", 64).max(1);
    let trail = s.path("load.jsonl");
    let (mut child, url) = s.serve(&trail).await?;
    let ok = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let share = calls / clients + usize::from(c < calls % clients);
        let (url, ok) = (url.clone(), ok.clone());
        tasks.push(tokio::spawn(async move {
            let client = http_client(&url).await?;
            for i in 0..share {
                let message = format!("c{c}-{i}");
                let r = client
                    .call_tool(call("echo", json!({ "message": message })))
                    .await
                    .with_context(|| format!("client {c} call {i}"))?;
                let got = r
                    .structured_content
                    .as_ref()
                    .and_then(|v| v["message"].as_str());
                ensure!(
                    r.is_error != Some(true) && got == Some(message.as_str()),
                    "client {c} call {i}: {r:?}"
                );
                ok.fetch_add(1, Ordering::Relaxed);
            }
            let _ = client.cancel().await;
            anyhow::Ok(())
        }));
    }
    let mut failures = Vec::new();
    for t in tasks {
        if let Err(e) = t.await? {
            failures.push(format!("{e:#}"));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    // A clean stop: the server signs what it owes and exits.
    terminate(&mut child).await?;
    let answered = ok.load(Ordering::Relaxed);
    ensure!(
        failures.is_empty() && answered == calls as u64,
        "{answered} of {calls} calls answered; first failure: {}",
        failures.first().map_or("none", String::as_str)
    );
    let text = std::fs::read_to_string(&trail)?;
    let (starts, ends) = starts_and_ends(&text)?;
    let n_starts: u32 = starts.values().sum();
    let n_ends: u32 = ends.values().sum();
    ensure!(
        n_starts as usize == calls && n_ends as usize == calls,
        "the trail holds {n_starts} starts and {n_ends} ends for {calls} calls"
    );
    ensure!(
        starts.len() == calls
            && starts
                .iter()
                .all(|(inv, n)| *n == 1 && ends.get(inv) == Some(&1)),
        "some invocation has other than one start and one end"
    );
    let (code, out) = s.verify(&trail).await?;
    ensure!(code == 0, "warden audit verify exited {code}: {out}");
    Ok(format!(
        "{calls} calls from {clients} concurrent clients over HTTP, all answered in {secs:.1} s ({:.0} calls/s); trail: {n_starts} starts, {n_ends} ends, {} lines, verify: {}",
        calls as f64 / secs,
        text.lines().count(),
        out.trim()
    ))
}

async fn terminate(child: &mut tokio::process::Child) -> anyhow::Result<()> {
    let pid = child.id().context("server already exited")?;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    ensure!(status.success(), "kill -TERM {pid} failed");
    tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .context("warden serve did not exit within 30 s of SIGTERM")??;
    Ok(())
}

/// 2. SIGKILL while a call runs.
async fn sigkill(s: &Scratch) -> anyhow::Result<String> {
    let trail = s.path("kill.jsonl");
    let (mut child, url) = s.serve(&trail).await?;
    let client = Arc::new(http_client(&url).await?);
    let r = client
        .call_tool(call("echo", json!({"message": "before"})))
        .await?;
    ensure!(r.is_error != Some(true), "the first call failed: {r:?}");
    let looping = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .call_tool(call("hog", json!({"attack": "log-then-loop"})))
                .await
        })
    };
    // Wait until the looping call's start record is in the trail.
    let deadline = Instant::now() + Duration::from_secs(30);
    let running = loop {
        let text = std::fs::read_to_string(&trail).unwrap_or_default();
        let (starts, ends) = starts_and_ends(&text)?;
        if let Some(inv) = starts.keys().find(|i| !ends.contains_key(*i)) {
            break inv.clone();
        }
        ensure!(
            Instant::now() < deadline,
            "the hog call did not start within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    ensure!(!looping.is_finished(), "the hog call ended before the kill");
    child.start_kill()?; // SIGKILL
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await??;
    ensure!(
        status.code().is_none(),
        "warden serve exited by itself: {status}"
    );
    let answer = tokio::time::timeout(Duration::from_secs(10), looping).await;
    let answer = match answer {
        Ok(Ok(Ok(r))) => format!("answered {:?}", r.is_error),
        Ok(Ok(Err(e))) => format!("error: {e}"),
        Ok(Err(e)) => format!("task: {e}"),
        Err(_) => "no answer".into(),
    };
    ensure!(
        !answer.starts_with("answered Some(false)"),
        "the killed call was answered as a success"
    );

    let text = std::fs::read_to_string(&trail)?;
    let lines = text.lines().count() as u64;
    let report = warden::audit::verify::verify(&trail, None)?;
    ensure!(
        report.tampered.is_none() && report.records == lines,
        "the trail does not verify up to its last record: {report:?}"
    );
    ensure!(
        report.unfinished == vec![running.clone()],
        "unfinished: {:?}, expected [{running}]",
        report.unfinished
    );
    let (code, out) = s.verify(&trail).await?;
    ensure!(
        code == 3 && out.contains(&running) && out.contains("unfinished"),
        "warden audit verify exited {code} (expected 3, incomplete): {out}"
    );
    Ok(format!(
        "SIGKILL mid-invocation: the trail verifies through its last record ({lines} records), the killed call is reported unfinished, exit 3 (client saw: {answer})"
    ))
}

/// 3. The trail's disk full mid-invocation.
async fn disk_full(s: &Scratch) -> anyhow::Result<String> {
    let dir = s.path("full");
    std::fs::create_dir_all(&dir)?;
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&dir)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let trail = dir.join("audit.jsonl");
    let input = r#"{"attack":"log-flood","size":200}"#;
    let mut cmd = if mounted {
        // 48 KiB of the 64 are taken: 16 KiB are left for the trail.
        std::fs::write(dir.join("filler"), vec![0u8; 48 << 10])?;
        s.command()
    } else {
        eprintln!(
            "load: cannot mount a tmpfs here (not root?): a 16 KiB file size limit stands in for the full disk"
        );
        let mut cmd = tokio::process::Command::new("sh");
        s.env(&mut cmd);
        // EFBIG instead of SIGXFSZ once the trail reaches the limit.
        cmd.args(["-c", "trap '' XFSZ; ulimit -f 32; exec \"$0\" \"$@\""])
            .arg(&s.warden);
        cmd
    };
    let out = cmd
        .args(["run", "--approver", "deny", "--manifest"])
        .arg(s.path("manifest.toml"))
        .args(["hog", "--input", input, "--audit"])
        .arg(&trail)
        .output()
        .await;
    let trail_text = std::fs::read(&trail).unwrap_or_default();
    let report = warden::audit::verify::verify_text(&String::from_utf8_lossy(&trail_text), None);
    if mounted {
        let _ = std::process::Command::new("umount").arg(&dir).status();
    }
    let out = out?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code().unwrap_or(-1);
    ensure!(
        code != 0,
        "the invocation succeeded with its trail's disk full: {stdout}"
    );
    ensure!(
        !stdout.contains("logged"),
        "the tool's output was returned with its trail's disk full: {stdout}"
    );
    ensure!(
        stderr.contains("audit") && stderr.contains(&*trail.to_string_lossy()),
        "the error does not name the audit trail: {stderr}"
    );
    let (starts, ends) = starts_and_ends_lossy(&trail_text);
    Ok(format!(
        "disk full mid-invocation ({}): failed closed, exit {code}, no output; error: {}; trail: {} bytes, {starts} start, {ends} end, verify: {}",
        if mounted {
            "64 KiB tmpfs"
        } else {
            "ulimit -f stand-in"
        },
        stderr.trim().lines().last().unwrap_or(""),
        trail_text.len(),
        match &report.tampered {
            Some(t) => format!("line {}: {}", t.line, t.reason),
            None => format!(
                "{} records intact, unfinished {:?}",
                report.records, report.unfinished
            ),
        }
    ))
}

fn starts_and_ends_lossy(bytes: &[u8]) -> (usize, usize) {
    let text = String::from_utf8_lossy(bytes);
    let count = |event: &str| {
        text.lines()
            .filter(|l| l.contains(&format!("\"event\":\"{event}\"")))
            .count()
    };
    (count("invocation.start"), count("invocation.end"))
}

fn warden_path() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::args_os().nth(1) {
        return Ok(PathBuf::from(p));
    }
    // target/release/examples/load -> target/release/warden
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("no target directory")?;
    Ok(dir.join("warden"))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let setup = async {
        let warden = warden_path()?;
        ensure!(
            warden.is_file(),
            "no warden binary at {} (cargo build --release --bin warden)",
            warden.display()
        );
        let dir = tempfile::tempdir()?;
        std::fs::write(
            dir.path().join("manifest.toml"),
            format!(
                "[tools.echo]\ncomponent = \"{}\"\n\n[tools.hog]\ncomponent = \"{}\"\ntimeout = \"120s\"\nmemory = \"32MiB\"\n",
                guests::ECHO,
                guests::HOG
            ),
        )?;
        std::fs::write(dir.path().join("task.toml"), "task = \"load\"\n")?;
        anyhow::Ok(Scratch { dir, warden })
    };
    let s = match setup.await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("load: setup: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let mut failed = false;
    type Check<'a> =
        std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<String>> + 'a>>;
    let checks: [(&str, Check); 3] = [
        ("load", Box::pin(load(&s))),
        ("sigkill", Box::pin(sigkill(&s))),
        ("disk-full", Box::pin(disk_full(&s))),
    ];
    for (name, check) in checks {
        let t = Instant::now();
        match tokio::time::timeout(Duration::from_secs(120), check).await {
            Ok(Ok(summary)) => println!(
                "load {name}: ok ({:.1} s): {summary}",
                t.elapsed().as_secs_f64()
            ),
            Ok(Err(e)) => {
                failed = true;
                println!(
                    "load {name}: FAILED ({:.1} s): {e:#}",
                    t.elapsed().as_secs_f64()
                );
            }
            Err(_) => {
                failed = true;
                println!("load {name}: FAILED: did not finish within 120 s");
            }
        }
    }
    println!("load: {:.1} s in all", started.elapsed().as_secs_f64());
    if failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
