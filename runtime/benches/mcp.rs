//! `cargo bench --bench mcp`: the MCP server against the in-process call.
//!
//! 1. `tools/call` round trip of the trivial `echo` tool over stdio
//!    (`warden serve --stdio`), median and p99 over sequential calls from a
//!    minimal blocking client, in alternating batches with a pipe round trip
//!    through `cat`, with the client and both servers pinned to one CPU and
//!    then to two; next to `Runtime::invoke` measured in the same run.
//!    Target in each placement: median ≤ that placement's `cat` floor +
//!    invoke + 15 µs. Then rmcp's client, unpinned.
//! 2. `tools/call` over streamable HTTP from clients that behave like common
//!    ones: `benches/mcp_http.py`, standard-library Python, one keep-alive
//!    `http.client` connection per client, clients spread over processes;
//!    8 and 64 closed-loop clients, latency, calls/s and the server's CPU
//!    per call, next to the same client against a plain hyper server that
//!    echoes the request (the floor for any HTTP server with this client
//!    here). Targets with 64 clients: median ≤ 10 ms, server CPU ≤ 80 µs a
//!    call, ≥ 3× the 1,390 calls/s measured before #12; with 8 clients:
//!    median ≤ 3 ms. Then rmcp's own client, 8 clients.
//! 3. 1,000 calls in flight over HTTP, each waiting in a host call (an HTTP
//!    request to a loopback server that holds its answer), and the server's
//!    resident memory meanwhile (and its proportional set size, which
//!    counts the pages of the tool's memory image that every instance maps
//!    once in all). Target: resident within 128 MiB. Then the same
//!    1,000 calls over stdio (one pipe, no HTTP connections): what the
//!    invocations themselves hold.
//! 4. Start-up: `warden serve --stdio` until `initialize` is answered, with a
//!    warm compile cache. Target: under 20 ms.
//!
//! `WARDEN_BENCH_STDIO_PEER="NAME=COMMAND ARG…"` adds another MCP server to
//! 1, driven with the same lines in the same alternating batches (issue
//! #12's target: Warden's median at most a third of Wassette v0.2.0's).
//! `{plain-echo-dir}` in the command is replaced by a directory holding
//! `plain_echo.wasm` (`tools/plain-echo`: the same trivial tool as one
//! exported function, WASI only), for hosts that map a component's
//! functions to tools; e.g. `wassette=/path/to/wassette serve --stdio
//! --plugin-dir {plain-echo-dir}`.
//!
//! `WARDEN_BENCH_QUICK=1` runs fewer iterations (CI smoke run);
//! `WARDEN_BENCH_ONLY_STDIO=1` stops after 1 (and 1b),
//! `WARDEN_BENCH_ONLY_IN_FLIGHT=1` runs only 3.

use rmcp::model::{CallToolRequestParams, JsonObject};
use rmcp::service::{RoleClient, RunningService};
use rmcp::{ClientHandler, ServiceExt};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The `warden` binary's allocator, so that in-process figures match it.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

#[derive(Clone, Default)]
struct Client;
impl ClientHandler for Client {}

/// What a stdio `tools/call` may add to a pipe round trip and the
/// in-process invocation, both measured in the same run (issue #12).
const STDIO_OVERHEAD_TARGET_US: f64 = 15.0;
const RSS_TARGET_MIB: f64 = 128.0;
const HTTP_MEDIAN_TARGET_MS: f64 = 10.0;
const HTTP_MEDIAN_8_TARGET_MS: f64 = 3.0;
const HTTP_CPU_TARGET_US: f64 = 80.0;
/// Calls/s with 64 stdlib clients before #12 (the Nagle stall), times 3.
const HTTP_RATE_TARGET: f64 = 3.0 * 1390.0;
const STARTUP_TARGET_MS: f64 = 20.0;

fn quick() -> bool {
    std::env::var_os("WARDEN_BENCH_QUICK").is_some()
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn echo_call(i: usize) -> CallToolRequestParams {
    let args: JsonObject = json!({"message": format!("m{i}")})
        .as_object()
        .cloned()
        .unwrap_or_default();
    CallToolRequestParams::new("echo").with_arguments(args)
}

struct Layout {
    dir: tempfile::TempDir,
    manifest: std::path::PathBuf,
    grants: std::path::PathBuf,
}

fn layout(slow_port: u16) -> Layout {
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = dir.path().join("manifest.toml");
    std::fs::write(
        &manifest,
        format!(
            "[tools.echo]\ncomponent = \"{}\"\n\n[tools.waiter]\ncomponent = \"{}\"\ntimeout = \"60s\"\nmemory = \"16MiB\"\n[[tools.waiter.http]]\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {slow_port}\n",
            guests::ECHO,
            guests::HTTP_GET
        ),
    )
    .expect("manifest");
    let grants = dir.path().join("task.toml");
    std::fs::write(
        &grants,
        format!("task = \"bench\"\n[[http]]\nurl = \"http://127.0.0.1:{slow_port}/\"\n"),
    )
    .expect("grants");
    Layout {
        dir,
        manifest,
        grants,
    }
}

/// The `warden` binary the bench serves with: this build's, or
/// `WARDEN_BENCH_BIN` (another build's, to compare two builds in turn on
/// the same machine).
fn warden_bin() -> std::ffi::OsString {
    std::env::var_os("WARDEN_BENCH_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_warden").into())
}

fn serve_cmd(l: &Layout, cache: &Path, extra: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(warden_bin());
    cmd.arg("--cache-dir")
        .arg(cache)
        .args(["serve", "--manifest"])
        .arg(&l.manifest)
        .arg("--grants")
        .arg(&l.grants)
        .arg("--audit")
        .arg(l.dir.path().join("audit.jsonl"))
        .args(extra)
        .env("WARDEN_STATE_DIR", l.dir.path().join("state"))
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// A loopback server that holds every request until `release` is set.
async fn slow_server(release: Arc<tokio::sync::Notify>, held: Arc<AtomicUsize>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let release = release.clone();
            let held = held.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                held.fetch_add(1, Ordering::SeqCst);
                release.notified().await;
                let _ = sock
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    port
}

async fn stdio_client(l: &Layout, cache: &Path) -> RunningService<RoleClient, Client> {
    let transport =
        rmcp::transport::TokioChildProcess::new(serve_cmd(l, cache, &["--stdio"])).expect("spawn");
    Client.serve(transport).await.expect("initialize")
}

/// `warden serve --http` on a free port: the child and its URL.
async fn http_server(l: &Layout, cache: &Path, extra: &[&str]) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let mut child = serve_cmd(l, cache, &[&["--http", "127.0.0.1:0"], extra].concat())
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
    (child, url)
}

async fn http_client(url: &str) -> RunningService<RoleClient, Client> {
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    let config =
        StreamableHttpClientTransportConfig::with_uri(url.to_owned()).max_concurrent_requests(64);
    let transport = rmcp::transport::StreamableHttpClientTransport::from_config(config);
    Client.serve(transport).await.expect("initialize")
}

/// Sequential JSON-RPC round trips over a child's stdin/stdout from a
/// blocking thread: `initialize`, then `n` (+100 warm-up) `tools/call`s of
/// echo; the per-call times in µs. `check` sees each answer line.
/// A child that answers request lines (`cat`, `warden serve --stdio`),
/// driven by a blocking client on the calling thread.
struct LineServer {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    out: std::io::BufReader<std::process::ChildStdout>,
    line: String,
}

impl LineServer {
    /// `cmd` started on CPU `cpu` (through `taskset`) if given, and, if
    /// `mcp`, through `initialize`.
    fn start(cmd: std::process::Command, cpu: Option<usize>, mcp: bool) -> LineServer {
        let mut cmd = match cpu {
            Some(cpu) => {
                let mut pinned = std::process::Command::new("taskset");
                pinned.arg("-c").arg(cpu.to_string()).arg(cmd.get_program());
                pinned.args(cmd.get_args());
                for (k, v) in cmd.get_envs() {
                    if let Some(v) = v {
                        pinned.env(k, v);
                    }
                }
                pinned
            }
            None => cmd,
        };
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        let mut s = LineServer {
            stdin: child.stdin.take().expect("stdin"),
            out: std::io::BufReader::new(child.stdout.take().expect("stdout")),
            child,
            line: String::new(),
        };
        if mcp {
            let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}});
            s.send(&format!("{init}\n"), true);
            s.send(
                "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n",
                false,
            );
        }
        s
    }

    fn send(&mut self, text: &str, answer: bool) {
        use std::io::{BufRead, Write};
        self.stdin.write_all(text.as_bytes()).expect("write");
        self.stdin.flush().expect("flush");
        if answer {
            self.line.clear();
            self.out.read_line(&mut self.line).expect("read");
        }
    }

    /// One `tools/call` of `echo` and its answer, in µs.
    fn call(&mut self, i: usize) -> f64 {
        let req = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{i},\"method\":\"tools/call\",\"params\":{{\"name\":\"echo\",\"arguments\":{{\"message\":\"m{i}\"}}}}}}\n"
        );
        let t = Instant::now();
        self.send(&req, true);
        t.elapsed().as_secs_f64() * 1e6
    }
}

impl Drop for LineServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pins the calling thread to `cpu` (`taskset` on its thread id); whether
/// it could.
fn pin_this_thread(cpu: usize) -> bool {
    let Some(tid) = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name().map(|t| t.to_string_lossy().into_owned()))
    else {
        return false;
    };
    std::process::Command::new("taskset")
        .args(["-pc", &cpu.to_string(), &tid])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Another MCP server measured beside Warden over stdio (see the module).
struct Peer {
    name: String,
    program: String,
    args: Vec<String>,
    /// Holds `plain_echo.wasm` for `{plain-echo-dir}`.
    dir: tempfile::TempDir,
}

impl Peer {
    /// From `WARDEN_BENCH_STDIO_PEER`, if set.
    fn from_env() -> Option<Peer> {
        let spec = std::env::var("WARDEN_BENCH_STDIO_PEER").ok()?;
        let (name, command) = spec
            .split_once('=')
            .expect("WARDEN_BENCH_STDIO_PEER=NAME=COMMAND ARG...");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::copy(guests::PLAIN_ECHO, dir.path().join("plain_echo.wasm"))
            .expect("plain_echo.wasm");
        let shown = dir.path().display().to_string();
        let mut words = command
            .split_whitespace()
            .map(|w| w.replace("{plain-echo-dir}", &shown));
        Some(Peer {
            name: name.to_owned(),
            program: words.next().expect("a command after NAME="),
            args: words.collect(),
            dir,
        })
    }

    fn command(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.program);
        cmd.args(&self.args).current_dir(self.dir.path());
        cmd
    }
}

/// Medians and p99 of `n` sequential calls through `warden` and the same
/// lines through `cat` (the pipe floor), the client on CPU 0 and both
/// servers on CPU `server_cpu` (if `taskset` can pin them: the last value
/// says whether it did), measured in alternating batches so that
/// both see the same machine: where the two processes run decides what a
/// wake-up costs (on this virtual machine, a pipe round trip between two
/// CPUs costs several times one on a single CPU), and an unpinned run lands
/// on either from run to run. With a `peer`, its median and p99 too, its
/// batches alternating with the others.
fn stdio_placed(
    warden: std::process::Command,
    peer: Option<std::process::Command>,
    server_cpu: usize,
    n: usize,
) -> ([f64; 3], Option<[f64; 2]>, bool) {
    std::thread::scope(|s| {
        s.spawn(|| {
            let pinned = pin_this_thread(0);
            let cpu = pinned.then_some(server_cpu);
            let mut floor = LineServer::start(std::process::Command::new("cat"), cpu, false);
            let mut served = LineServer::start(warden, cpu, true);
            let mut other = peer.map(|p| LineServer::start(p, cpu, true));
            for i in 1..=100 {
                floor.call(i);
                served.call(i);
                if let Some(o) = other.as_mut() {
                    o.call(i);
                }
            }
            if let Some(o) = &other {
                assert!(
                    o.line.contains("\"result\"") && !o.line.contains("\"isError\":true"),
                    "the peer's answer: {}",
                    o.line
                );
            }
            let mut theirs = Vec::with_capacity(n);
            assert!(
                served.line.contains("\"structuredContent\""),
                "{}",
                served.line
            );
            let (mut cat, mut ours) = (Vec::with_capacity(n), Vec::with_capacity(n));
            let batch = 50;
            for round in 0..n.div_ceil(batch) {
                let ids = 101 + round * batch..101 + (round + 1) * batch;
                if let Some(o) = other.as_mut().filter(|_| round % 2 == 1) {
                    theirs.extend(ids.clone().map(|i| o.call(i)));
                }
                if round % 2 == 0 {
                    cat.extend(ids.clone().map(|i| floor.call(i)));
                    ours.extend(ids.clone().map(|i| served.call(i)));
                } else {
                    ours.extend(ids.clone().map(|i| served.call(i)));
                    cat.extend(ids.clone().map(|i| floor.call(i)));
                }
                if let Some(o) = other.as_mut().filter(|_| round % 2 == 0) {
                    theirs.extend(ids.map(|i| o.call(i)));
                }
                assert!(
                    served.line.contains("\"structuredContent\""),
                    "{}",
                    served.line
                );
            }
            let figures = [
                percentile(&mut ours, 0.5),
                percentile(&mut ours, 0.99),
                percentile(&mut cat, 0.5),
            ];
            let peer = other.map(|_| [percentile(&mut theirs, 0.5), percentile(&mut theirs, 0.99)]);
            (figures, peer, pinned)
        })
        .join()
        .expect("stdio client")
    })
}

/// `in_flight` calls over one `warden serve --stdio` pipe, each waiting in
/// a host call: how many waited at once, resident MiB then and idle, and
/// how many completed once released.
async fn stdio_in_flight(
    l: &Layout,
    cache: &Path,
    held: &AtomicUsize,
    release: &tokio::sync::Notify,
    slow_port: u16,
    in_flight: usize,
) -> (usize, (f64, f64), f64, usize) {
    use tokio::io::AsyncBufReadExt;
    let limit = (in_flight + 16).to_string();
    let mut child = serve_cmd(l, cache, &["--stdio", "--max-in-flight", &limit])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id().expect("pid");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}});
    stdin
        .write_all(format!("{init}\n").as_bytes())
        .await
        .expect("write");
    lines.next_line().await.expect("read").expect("initialized");
    stdin
        .write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle = rss_mib(pid);
    held.store(0, Ordering::SeqCst);
    let mut batch = String::new();
    for i in 0..in_flight {
        let call = json!({"jsonrpc": "2.0", "id": i + 1, "method": "tools/call", "params": {
            "name": "waiter", "arguments": {"url": format!("http://127.0.0.1:{slow_port}/stdio/{i}")}}});
        batch.push_str(&format!("{call}\n"));
    }
    stdin.write_all(batch.as_bytes()).await.expect("write");
    let started = Instant::now();
    while held.load(Ordering::SeqCst) < in_flight && started.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waiting = held.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss = (rss_mib(pid), pss_mib(pid));
    release.notify_waiters();
    let mut ok = 0;
    while ok < waiting {
        match tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await {
            Ok(Ok(Some(line))) if !line.contains("\"isError\":true") => ok += 1,
            Ok(Ok(Some(_))) => {}
            _ => break,
        }
    }
    drop(stdin);
    let _ = child.kill().await;
    (waiting, rss, idle, ok)
}

/// The proportional set size: resident pages, each divided by how many
/// mappings share it. A tool's initial memory image is one set of page-cache
/// pages mapped into every instance's memory, which resident memory counts
/// once per instance and this once in all.
fn pss_mib(pid: u32) -> f64 {
    proc_mib(&format!("/proc/{pid}/smaps_rollup"), "Pss:")
}

fn rss_mib(pid: u32) -> f64 {
    proc_mib(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// The `key` line of a `/proc` file, in kB, as MiB (0 if unreadable).
fn proc_mib(path: &str, key: &str) -> f64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// One run of `benches/mcp_http.py` against `url`: its JSON report.
fn stdlib_clients(url: &str, pid: u32, clients: usize, floor: bool) -> Option<serde_json::Value> {
    let duration = if quick() { "2" } else { "5" };
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/mcp_http.py"))
        .args(["--url", url, "--pid", &pid.to_string()])
        .args(["--clients", &clients.to_string(), "--duration", duration]);
    if floor {
        cmd.arg("--floor");
    }
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) => {
            println!("http, stdlib Python clients: skipped (python3: {e})");
            return None;
        }
    };
    let report = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok());
    assert!(
        out.status.success() && report.is_some(),
        "mcp_http.py failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    report
}

/// A plain HTTP/1.1 server answering each request with its own body
/// (`TCP_NODELAY` set): what any HTTP server costs with a given client.
async fn echo_server() -> String {
    use http_body_util::BodyExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let _ = sock.set_nodelay(true);
            let service = hyper::service::service_fn(
                |req: hyper::Request<hyper::body::Incoming>| async move {
                    let body = req.into_body().collect().await?.to_bytes();
                    let mut r = hyper::Response::new(http_body_util::Full::new(body));
                    r.headers_mut().insert(
                        "content-type",
                        hyper::header::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, hyper::Error>(r)
                },
            );
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(sock), service),
            );
        }
    });
    format!("http://127.0.0.1:{port}/mcp")
}

fn figure(r: &serde_json::Value, key: &str) -> f64 {
    r[key].as_f64().unwrap_or(f64::NAN)
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

/// 1,000 calls in flight over HTTP, then over stdio, each waiting in a
/// host call (`waiter`, held by the slow server until `release`): the
/// server's resident memory then, against its idle figure.
async fn in_flight(
    l: &Layout,
    cache: &Path,
    held: &AtomicUsize,
    release: &tokio::sync::Notify,
    slow_port: u16,
) {
    let in_flight = 1000;
    let limit = (in_flight + 16).to_string();
    let (child, url) = http_server(l, cache, &["--max-in-flight", &limit]).await;
    let pid = child.id().expect("pid");
    let idle = rss_mib(pid);
    let per_client = 50;
    let mut tasks = Vec::new();
    for c in 0..in_flight / per_client {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let client = Arc::new(http_client(&url).await);
            let mut calls = Vec::new();
            for i in 0..per_client {
                let client = client.clone();
                let args: JsonObject =
                    json!({"url": format!("http://127.0.0.1:{slow_port}/{c}/{i}")})
                        .as_object()
                        .cloned()
                        .unwrap_or_default();
                calls.push(tokio::spawn(async move {
                    client
                        .call_tool(CallToolRequestParams::new("waiter").with_arguments(args))
                        .await
                        .map(|r| r.is_error != Some(true))
                }));
            }
            let mut ok = 0;
            for call in calls {
                if matches!(call.await, Ok(Ok(true))) {
                    ok += 1;
                }
            }
            ok
        }));
    }
    let started = Instant::now();
    while held.load(Ordering::SeqCst) < in_flight && started.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waiting = held.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (rss, pss) = (rss_mib(pid), pss_mib(pid));
    release.notify_waiters();
    let mut ok = 0;
    for task in tasks {
        ok += task.await.unwrap_or(0);
    }
    println!(
        "http in flight: {waiting} calls waiting in a host call at once; server resident memory {rss:.0} MiB (idle {idle:.0} MiB; \
         proportional {pss:.0} MiB); {ok} completed once released; target {in_flight} within {RSS_TARGET_MIB} MiB: {}",
        met(waiting >= in_flight && rss <= RSS_TARGET_MIB)
    );
    drop(child);
    let (waiting, (rss, pss), idle, ok) =
        stdio_in_flight(l, cache, held, release, slow_port, in_flight).await;
    println!(
        "stdio in flight: {waiting} calls waiting in a host call at once; server resident memory {rss:.0} MiB (idle {idle:.0} MiB; \
         proportional {pss:.0} MiB): {:.0} KiB a call; {ok} completed once released",
        (rss - idle) * 1024.0 / in_flight as f64
    );
}

#[tokio::main]
async fn main() {
    let cache = tempfile::tempdir().expect("cache dir");
    let release = Arc::new(tokio::sync::Notify::new());
    let held = Arc::new(AtomicUsize::new(0));
    let slow_port = slow_server(release.clone(), held.clone()).await;
    let l = layout(slow_port);
    let n = if quick() { 300 } else { 2000 };
    if std::env::var_os("WARDEN_BENCH_ONLY_IN_FLIGHT").is_some() {
        // Compiled once, as the parts before would have: the server then
        // loads the tools from the cache.
        drop(http_server(&l, cache.path(), &[]).await);
        return in_flight(&l, cache.path(), &held, &release, slow_port).await;
    }

    // In-process baseline: the same tool through Runtime::invoke.
    let runtime = warden::Runtime::builder()
        .manifest(warden::Manifest::load(&l.manifest).expect("manifest"))
        .audit(Arc::new(
            warden::audit::FileSink::open(l.dir.path().join("inproc.jsonl")).expect("trail"),
        ))
        .cache_dir(cache.path())
        .build()
        .expect("runtime");
    let grant = warden::Grant::new("bench");
    let mut inproc = Vec::with_capacity(n);
    for i in 0..n + 100 {
        let input = format!(r#"{{"message":"m{i}"}}"#);
        let t = Instant::now();
        runtime
            .invoke("echo", &grant, &input)
            .await
            .expect("invoke");
        if i >= 100 {
            inproc.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    let inproc_median = percentile(&mut inproc, 0.5);

    // The MCP layer alone: server and client in this process over a pipe.
    let mcp = warden::mcp::WardenMcp::new(
        runtime.clone(),
        warden::mcp::Grants::One(Arc::new(grant.clone())),
        warden::mcp::ServeOptions::default(),
    )
    .await
    .expect("server");
    let (a, b) = tokio::io::duplex(1 << 20);
    tokio::spawn(async move {
        if let Ok(r) = mcp.serve(a).await {
            let _ = r.waiting().await;
        }
    });
    let client = Client.serve(b).await.expect("initialize");
    let mut piped = Vec::with_capacity(n);
    for i in 0..n + 100 {
        let t = Instant::now();
        client.call_tool(echo_call(i)).await.expect("call");
        if i >= 100 {
            piped.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    let _ = client.cancel().await;
    let piped_median = percentile(&mut piped, 0.5);
    println!(
        "in-process MCP through rmcp's service loop (what HTTP uses; rmcp client, duplex pipe): median {piped_median:.1} µs"
    );

    // 1. `warden serve --stdio` and the floor, the same request lines
    // through `cat` and back (a pipe round trip between two processes, no
    // server work at all), in alternating batches from a blocking client
    // thread: with the client and the servers on one CPU, then on two.
    let warden = || {
        let mut cmd = std::process::Command::new(warden_bin());
        cmd.arg("--cache-dir")
            .arg(cache.path())
            .args(["serve", "--stdio", "--manifest"])
            .arg(&l.manifest)
            .arg("--grants")
            .arg(&l.grants)
            .arg("--audit")
            .arg(l.dir.path().join("audit.jsonl"))
            .env("WARDEN_STATE_DIR", l.dir.path().join("state"));
        cmd
    };
    let cpus = std::thread::available_parallelism().map_or(1, |c| c.get());
    let placements: &[(usize, &str)] = if cpus > 1 {
        &[(0, "one CPU"), (1, "two CPUs")]
    } else {
        &[(0, "one CPU")]
    };
    let peer = Peer::from_env();
    for &(server_cpu, placed) in placements {
        let ([median, p99, floor], theirs, pinned) =
            stdio_placed(warden(), peer.as_ref().map(Peer::command), server_cpu, n);
        let placed = if pinned {
            format!("client and server on {placed}")
        } else {
            "unpinned (`taskset` failed)".to_owned()
        };
        let stdio_target = floor + inproc_median + STDIO_OVERHEAD_TARGET_US;
        println!(
            "stdio tools/call, minimal JSON-RPC client, {placed} (echo, {n} sequential, \
             alternating with the floor): median {median:.1} µs, p99 {p99:.1} µs; pipe floor (`cat`, same \
             placement) {floor:.1} µs; in-process Runtime::invoke median {inproc_median:.1} µs; \
             target median <= floor + invoke + {STDIO_OVERHEAD_TARGET_US} = {stdio_target:.1} µs: {}",
            met(median <= stdio_target)
        );
        if let (Some(peer), Some([their_median, their_p99])) = (&peer, theirs) {
            println!(
                "  {} over stdio, same lines, client and placement: median {their_median:.1} µs, p99 {their_p99:.1} µs; \
                 Warden's median is {:.2}x lower (#12's target against Wassette v0.2.0: at least 3x): {}",
                peer.name,
                their_median / median,
                met(their_median >= 3.0 * median)
            );
        }
    }

    // 1b. stdio round trips with rmcp's client.
    let client = stdio_client(&l, cache.path()).await;
    let mut rtt = Vec::with_capacity(n);
    for i in 0..n + 100 {
        let t = Instant::now();
        let r = client.call_tool(echo_call(i)).await.expect("call");
        assert_ne!(r.is_error, Some(true));
        if i >= 100 {
            rtt.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    let _ = client.cancel().await;
    let median = percentile(&mut rtt, 0.5);
    let p99 = percentile(&mut rtt, 0.99);
    println!(
        "stdio tools/call, rmcp client (echo, {n} sequential): median {median:.1} µs, p99 {p99:.1} µs"
    );
    let only_stdio = std::env::var_os("WARDEN_BENCH_ONLY_STDIO").is_some();

    if only_stdio {
        return;
    }

    // 2. HTTP with stdlib Python clients, then the floor: the same client
    // against a plain hyper server that echoes each request.
    let (mut child, url) = http_server(&l, cache.path(), &[]).await;
    let pid = child.id().expect("pid");
    let floor_url = echo_server().await;
    for clients in [8, 64] {
        let Some(r) = stdlib_clients(&url, pid, clients, false) else {
            break;
        };
        let floor =
            stdlib_clients(&floor_url, std::process::id(), clients, true).unwrap_or_default();
        let (median, p99, rate, cpu) = (
            figure(&r, "median_ms"),
            figure(&r, "p99_ms"),
            figure(&r, "calls_per_s"),
            figure(&r, "server_cpu_us_per_call"),
        );
        let targets = if clients == 64 {
            format!(
                "targets: median ≤ {HTTP_MEDIAN_TARGET_MS} ms: {}, server CPU ≤ {HTTP_CPU_TARGET_US} µs: {}, ≥ {HTTP_RATE_TARGET:.0} calls/s: {}",
                met(median <= HTTP_MEDIAN_TARGET_MS),
                met(cpu <= HTTP_CPU_TARGET_US),
                met(rate >= HTTP_RATE_TARGET)
            )
        } else {
            format!(
                "target: median ≤ {HTTP_MEDIAN_8_TARGET_MS} ms: {}",
                met(median <= HTTP_MEDIAN_8_TARGET_MS)
            )
        };
        println!(
            "http tools/call, {clients} stdlib Python clients (echo, closed loop): median {median:.2} ms, p99 {p99:.2} ms, \
             {rate:.0} calls/s, server CPU {cpu:.0} µs a call; floor (plain hyper echo server, same client): median {:.2} ms, \
             p99 {:.2} ms, {:.0} calls/s, server CPU {:.0} µs a call; in-process invoke median {inproc_median:.1} µs; {targets}",
            figure(&floor, "median_ms"),
            figure(&floor, "p99_ms"),
            figure(&floor, "calls_per_s"),
            figure(&floor, "server_cpu_us_per_call"),
        );
    }

    // 2b. rmcp's own client, several at once.
    let clients = 8;
    let per = if quick() { 50 } else { 250 };
    let t = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let client = http_client(&url).await;
            for i in 0..per {
                let r = client
                    .call_tool(echo_call(c * per + i))
                    .await
                    .expect("call");
                assert_ne!(r.is_error, Some(true));
            }
            let _ = client.cancel().await;
        }));
    }
    for task in tasks {
        task.await.expect("client");
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "http tools/call, rmcp client (echo, {clients} clients × {per}): {:.0} calls/s ({:.1} µs per call in all)",
        (clients * per) as f64 / secs,
        secs * 1e6 / (clients * per) as f64
    );
    let _ = child.start_kill();

    // 3. 1,000 calls in flight, each waiting in a host call.
    in_flight(&l, cache.path(), &held, &release, slow_port).await;

    // 4. Start-up with a warm cache: spawn to initialize answered.
    let mut times = Vec::new();
    for _ in 0..if quick() { 3 } else { 10 } {
        let t = Instant::now();
        let client = stdio_client(&l, cache.path()).await;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        let _ = client.cancel().await;
    }
    let startup = percentile(&mut times, 0.5);
    println!(
        "start-up (warm cache, 2 tools): initialize answered {startup:.1} ms after spawn (median); target < {STARTUP_TARGET_MS} ms: {}",
        if startup < STARTUP_TARGET_MS {
            "met"
        } else {
            "MISSED"
        }
    );
}
