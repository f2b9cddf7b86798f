//! The MCP server, driven by rmcp's own client: in process over a duplex
//! pipe, over real stdio (`warden serve --stdio`) and over streamable HTTP
//! (`warden serve --http`).

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ElicitRequestParams,
    ElicitResult, ElicitationAction, Implementation, JsonObject, ProgressNotificationParam,
};
use rmcp::service::{NotificationContext, RequestContext, RoleClient, RunningService};
use rmcp::{ClientHandler, ErrorData, ServiceExt};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use warden::approval::DenyAll;
use warden::audit::{Event, MemorySink};
use warden::mcp::stdio::{self, Served};
use warden::mcp::{Grants, ServeOptions, WardenMcp};
use warden::{Grant, Manifest, Runtime};

/// A client that answers approvals (elicitations) as told and records what
/// it was asked and the progress it was sent.
#[derive(Clone, Default)]
pub(crate) struct Client {
    approve: bool,
    elicitation: bool,
    asked: Arc<Mutex<Vec<String>>>,
    progress: Arc<Mutex<Vec<f64>>>,
}

impl ClientHandler for Client {
    fn get_info(&self) -> ClientConfig {
        let caps = if self.elicitation {
            ClientCapabilities::builder().enable_elicitation().build()
        } else {
            ClientCapabilities::default()
        };
        ClientConfig::new(caps, Implementation::new("warden-test-client", "1.0"))
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _cx: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        if let ElicitRequestParams::FormElicitationParams { message, .. } = request {
            self.asked.lock().unwrap().push(message);
        }
        Ok(ElicitResult::new(ElicitationAction::Accept)
            .with_content(json!({"approved": self.approve})))
    }

    async fn on_progress(
        &self,
        p: ProgressNotificationParam,
        _cx: NotificationContext<RoleClient>,
    ) {
        self.progress.lock().unwrap().push(p.progress);
    }
}

pub(crate) struct Setup {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) manifest: PathBuf,
    pub(crate) grants: PathBuf,
    workspace: PathBuf,
}

pub(crate) fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let ws = root.join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(ws.join("a.txt"), "alpha").unwrap();
    let manifest = root.join("manifest.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"
[tools.echo]
component = "{echo}"

[tools.hog]
component = "{hog}"
timeout = "3s"
memory = "32MiB"

[tools.reader]
component = "{probe}"
[[tools.reader.fs]]
handle = "workspace"
within = "{ws}"
rights = ["read"]

[tools.writer]
component = "{write}"
[[tools.writer.fs]]
handle = "workspace"
within = "{ws}"
rights = ["read", "write"]
approval = ["write"]

[tools.remover]
component = "{remove}"
[[tools.remover.fs]]
handle = "workspace"
within = "{ws}"
rights = ["read", "delete"]
"#,
            echo = crate::ECHO,
            hog = crate::HOG,
            probe = crate::FS_PROBE,
            write = crate::WRITE_FILE,
            remove = crate::REMOVE_PATH,
            ws = ws.display(),
        ),
    )
    .unwrap();
    let grants = root.join("task.toml");
    std::fs::write(
        &grants,
        format!(
            "task = \"mcp-task\"\n[fs.workspace]\npath = \"{}\"\nrights = [\"read\", \"write\", \"delete\"]\n",
            ws.display()
        ),
    )
    .unwrap();
    Setup {
        dir,
        manifest,
        grants,
        workspace: ws,
    }
}

async fn server(s: &Setup, audit: Arc<MemorySink>, options: ServeOptions) -> WardenMcp {
    let runtime = Runtime::builder()
        .manifest(Manifest::load(&s.manifest).unwrap())
        .audit(audit)
        .approver(Arc::new(DenyAll))
        .cache_dir(crate::common::shared_cache())
        .build()
        .unwrap();
    let grant = Grant::load(&s.grants).unwrap();
    WardenMcp::new(runtime, Grants::One(Arc::new(grant)), options)
        .await
        .unwrap()
}

/// A server and a client connected in process.
async fn connect(mcp: WardenMcp, client: Client) -> RunningService<RoleClient, Client> {
    let (a, b) = tokio::io::duplex(1 << 20);
    tokio::spawn(async move {
        if let Ok(running) = mcp.serve(a).await {
            let _ = running.waiting().await;
        }
    });
    client.serve(b).await.unwrap()
}

/// Which server loop a test drives: rmcp's service (what HTTP uses), or
/// the stdio loop (`warden serve --stdio`), which answers `tools/call`
/// itself and hands the rest to rmcp.
#[derive(Debug, Clone, Copy)]
enum Via {
    Sdk,
    Stdio,
}

/// Each of these test bodies runs once per server loop.
macro_rules! through_both_loops {
    ($($sdk:ident, $stdio:ident => $body:ident;)*) => {$(
        #[tokio::test]
        async fn $sdk() {
            $body(Via::Sdk).await;
        }

        #[tokio::test]
        async fn $stdio() {
            $body(Via::Stdio).await;
        }
    )*};
}

through_both_loops! {
    list_call_denial_limit_and_stdout_through_rmcp,
    list_call_denial_limit_and_stdout_through_the_stdio_loop => list_call_denial_limit_and_stdout;
    // In the stdio loop, calls whose approvals need `elicitation/create` go
    // to rmcp; calls from a client without elicitation stay in the loop.
    approvals_through_elicitation_via_rmcp,
    approvals_through_elicitation_via_the_stdio_loop => approvals_are_asked_through_elicitation;
    cancellation_and_progress_through_rmcp,
    cancellation_and_progress_through_the_stdio_loop =>
        cancellation_ends_the_invocation_and_long_calls_report_progress;
}

/// A client connected to `mcp` in process through `via`; for the stdio
/// loop, also what it served (once the client has gone).
async fn connect_via(
    via: Via,
    mcp: WardenMcp,
    client: Client,
) -> (
    RunningService<RoleClient, Client>,
    Option<JoinHandle<Served>>,
) {
    match via {
        Via::Sdk => (connect(mcp, client).await, None),
        Via::Stdio => {
            let (a, b) = tokio::io::duplex(1 << 20);
            let (read, write) = tokio::io::split(a);
            let served = tokio::spawn(async move {
                stdio::serve_on(mcp, read, write, 1 << 20, CancellationToken::new())
                    .await
                    .unwrap()
            });
            (client.serve(b).await.unwrap(), Some(served))
        }
    }
}

fn args(v: Value) -> JsonObject {
    v.as_object().unwrap().clone()
}

pub(crate) fn call(tool: &str, v: Value) -> CallToolRequestParams {
    CallToolRequestParams::new(tool.to_owned()).with_arguments(args(v))
}

pub(crate) fn text(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect()
}

async fn list_call_denial_limit_and_stdout(via: Via) {
    let s = setup();
    let audit = MemorySink::new();
    let (client, served) = connect_via(
        via,
        server(&s, audit.clone(), ServeOptions::default()).await,
        Client::default(),
    )
    .await;

    // tools/list from describe(), annotations from the grant's rights.
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names, ["echo", "hog", "reader", "remover", "writer"]);
    let get = |n: &str| tools.iter().find(|t| t.name == n).unwrap();
    let hints = |n: &str| {
        let a = get(n).annotations.clone().unwrap();
        (
            a.read_only_hint,
            a.destructive_hint,
            a.idempotent_hint,
            a.open_world_hint,
        )
    };
    let t = Some(true);
    let f = Some(false);
    assert_eq!(hints("reader"), (t, f, t, f));
    // A write may overwrite or truncate: destructive, not additive.
    assert_eq!(hints("writer"), (f, t, f, f));
    assert_eq!(hints("remover"), (f, t, f, f));
    assert_eq!(
        get("echo").description.as_deref(),
        Some("Returns its input message.")
    );
    assert_eq!(get("echo").input_schema["type"], "object");
    assert!(get("echo").output_schema.is_some());

    // A call: structured content plus a text rendering.
    let r = client
        .call_tool(call("echo", json!({"message": "hi"})))
        .await
        .unwrap();
    assert_ne!(r.is_error, Some(true));
    assert_eq!(r.structured_content, Some(json!({"message": "hi"})));
    assert_eq!(
        serde_json::from_str::<Value>(&text(&r)).unwrap(),
        json!({"message": "hi"})
    );
    let meta = &r.meta.as_ref().unwrap().0["warden"];
    assert_eq!(meta["task"], "mcp-task");
    assert!(meta["identity"].as_str().unwrap().starts_with("sha256:"));

    // A denial: an isError result with the reason; the server keeps serving.
    let r = client
        .call_tool(call(
            "reader",
            json!({"op": "write", "path": "a.txt", "contents": "x"}),
        ))
        .await
        .unwrap();
    let out: Value =
        serde_json::from_str(&text(&r)).unwrap_or_else(|e| panic!("{e}: {}", text(&r)));
    assert_eq!(out["error"]["code"], "denied", "{out}");
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("needs the write right"),
        "{out}"
    );

    // A limit: an isError result naming it.
    let r = client
        .call_tool(call("hog", json!({"attack": "memory"})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(
        text(&r).contains("limit exceeded: memory limit of 32 MiB exceeded"),
        "{}",
        text(&r)
    );

    // A tool printing to stdout/stderr: the stream is intact, the text
    // arrives in _meta only.
    let r = client
        .call_tool(call(
            "hog",
            json!({"attack": "print", "text": "{\"jsonrpc\":\"2.0\",\"id\":99}"}),
        ))
        .await
        .unwrap();
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    let meta = &r.meta.as_ref().unwrap().0["warden"];
    assert_eq!(meta["stdout"], "{\"jsonrpc\":\"2.0\",\"id\":99}");
    assert_eq!(meta["stderr"], "{\"jsonrpc\":\"2.0\",\"id\":99}");

    // Unknown tool and bad input.
    let e = client
        .call_tool(call("grant-me", json!({})))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("unknown tool 'grant-me'"), "{e}");
    let r = client
        .call_tool(call("hog", json!({"attack": 5})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));

    // And still serving.
    let r = client
        .call_tool(call("echo", json!({"message": "still here"})))
        .await
        .unwrap();
    assert_eq!(r.structured_content, Some(json!({"message": "still here"})));
    client.cancel().await.unwrap();
    if let Some(served) = served {
        // The stdio loop answered every call itself (7) and handed the
        // session's other messages (initialize, initialized, list) to rmcp.
        let served = served.await.unwrap();
        assert_eq!((served.calls, served.to_sdk, served.refused), (7, 3, 0));
    }
}

/// In the stdio loop, calls whose approvals need `elicitation/create` go
/// to rmcp; calls from a client without elicitation stay in the loop.
async fn approvals_are_asked_through_elicitation(via: Via) {
    let s = setup();
    let write = || {
        call(
            "writer",
            json!({"path": "notes.md", "content": "approved text"}),
        )
    };

    // A client that approves: asked once, with tool, action and resource.
    let audit = MemorySink::new();
    let yes = Client {
        approve: true,
        elicitation: true,
        ..Client::default()
    };
    let (client, _) = connect_via(
        via,
        server(&s, audit.clone(), ServeOptions::default()).await,
        yes.clone(),
    )
    .await;
    let r = client.call_tool(write()).await.unwrap();
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    assert_eq!(
        std::fs::read_to_string(s.workspace.join("notes.md")).unwrap(),
        "approved text"
    );
    let asked = yes.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    assert!(
        asked[0].contains("approve fs.write on workspace:notes.md by tool writer"),
        "{}",
        asked[0]
    );
    let answer = audit
        .records()
        .into_iter()
        .find(|r| r.capability.as_deref() == Some("approval") && r.event == Event::Decision)
        .unwrap();
    assert_eq!(answer.decision.as_deref(), Some("allow"));
    assert!(
        answer
            .reason
            .unwrap()
            .contains("MCP client 'warden-test-client' (elicitation)")
    );
    client.cancel().await.unwrap();

    // A client that refuses: denied, nothing written.
    std::fs::remove_file(s.workspace.join("notes.md")).unwrap();
    let no = Client {
        approve: false,
        elicitation: true,
        ..Client::default()
    };
    let (client, _) = connect_via(
        via,
        server(&s, MemorySink::new(), ServeOptions::default()).await,
        no.clone(),
    )
    .await;
    let r = client.call_tool(write()).await.unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(text(&r).contains("denied by MCP client"), "{}", text(&r));
    assert!(!s.workspace.join("notes.md").exists());
    client.cancel().await.unwrap();

    // A client without elicitation: the configured approver (deny-all).
    let plain = Client::default();
    let (client, _) = connect_via(
        via,
        server(&s, MemorySink::new(), ServeOptions::default()).await,
        plain.clone(),
    )
    .await;
    let r = client.call_tool(write()).await.unwrap();
    assert!(text(&r).contains("deny-all"), "{}", text(&r));
    assert!(plain.asked.lock().unwrap().is_empty());
    client.cancel().await.unwrap();
}

async fn cancellation_ends_the_invocation_and_long_calls_report_progress(via: Via) {
    let s = setup();
    let audit = MemorySink::new();
    let options = ServeOptions {
        progress_interval: Duration::from_millis(100),
        ..ServeOptions::default()
    };
    let watcher = Client::default();
    let (client, served) = connect_via(
        via,
        server(&s, audit.clone(), options).await,
        watcher.clone(),
    )
    .await;

    // A spinning tool, cancelled after 400 ms of progress.
    let mut meta = rmcp::model::RequestMetaObject::default();
    meta.set_progress_token(rmcp::model::ProgressToken(
        rmcp::model::NumberOrString::Number(7),
    ));
    let request = rmcp::model::ClientRequest::CallToolRequest(rmcp::model::CallToolRequest::new(
        call("hog", json!({"attack": "loop"})),
    ));
    let handle = client
        .send_cancellable_request(
            request,
            rmcp::service::PeerRequestOptions::no_options().with_meta(meta),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(450)).await;
    let cancelled = Instant::now();
    handle.cancel(Some("test".into())).await.unwrap();
    // The invocation ends promptly and is audited as cancelled.
    let end = loop {
        if let Some(r) = audit
            .records()
            .into_iter()
            .find(|r| r.event == Event::InvocationEnd)
        {
            break r;
        }
        assert!(
            cancelled.elapsed() < Duration::from_secs(2),
            "not ended after cancel"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(end.outcome.as_deref(), Some("cancelled"));
    assert!(cancelled.elapsed() < Duration::from_millis(500));
    let ticks = watcher.progress.lock().unwrap().clone();
    assert!(ticks.len() >= 2, "{ticks:?}");
    assert!(ticks.windows(2).all(|w| w[0] < w[1]), "{ticks:?}");

    // The server keeps serving.
    let r = client
        .call_tool(call("echo", json!({"message": "after"})))
        .await
        .unwrap();
    assert_eq!(r.structured_content, Some(json!({"message": "after"})));
    client.cancel().await.unwrap();
    if let Some(served) = served {
        // Both calls and the cancellation stayed in the loop.
        assert_eq!(served.await.unwrap().calls, 2);
    }
}

#[tokio::test]
async fn beyond_the_in_flight_bound_calls_are_busy() {
    let s = setup();
    let options = ServeOptions {
        max_in_flight: 1,
        ..ServeOptions::default()
    };
    let mcp = server(&s, MemorySink::new(), options).await;
    let slow = connect(mcp.clone(), Client::default()).await;
    let other = connect(mcp, Client::default()).await;
    let spinning = tokio::spawn(async move {
        let r = slow.call_tool(call("hog", json!({"attack": "loop"}))).await;
        (slow, r)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = other
        .call_tool(call("echo", json!({"message": "x"})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(
        text(&r).starts_with("busy: 1 calls are already running"),
        "{}",
        text(&r)
    );
    let (_slow, r) = spinning.await.unwrap();
    assert!(text(&r.unwrap()).contains("deadline exceeded"));
    // The slot is free again.
    let r = other
        .call_tool(call("echo", json!({"message": "x"})))
        .await
        .unwrap();
    assert_ne!(r.is_error, Some(true));
}

fn warden_serve(s: &Setup, extra: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_warden"));
    cmd.arg("--cache-dir")
        .arg(crate::common::shared_cache())
        .args(["serve", "--manifest"])
        .arg(&s.manifest)
        .arg("--grants")
        .arg(&s.grants)
        .arg("--audit")
        .arg(s.dir.path().join("audit.jsonl"))
        .args(extra)
        .env("WARDEN_STATE_DIR", s.dir.path().join("state"));
    cmd
}

/// The lines of a session: `initialize`, then a `tools/call` of `echo`.
const STDIO_SESSION: &str = concat!(
    r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#,
    "\n",
    r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    "\n",
    r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"message":"over fd"}}}"#,
    "\n",
);

/// Whether an open file is in non-blocking mode (shared by every copy of
/// its descriptor, the server's included).
fn nonblocking(fd: impl std::os::fd::AsFd) -> bool {
    rustix::fs::fcntl_getfl(fd)
        .unwrap()
        .contains(rustix::fs::OFlags::NONBLOCK)
}

/// Reads lines until the answer to call 2, which must be `echo`'s.
fn read_echo_answer(out: impl std::io::Read) {
    use std::io::BufRead as _;
    for line in std::io::BufReader::new(out).lines() {
        let line = line.unwrap();
        if line.contains(r#""id":2"#) {
            assert!(
                line.contains(r#""structuredContent":{"message":"over fd"}"#),
                "{line}"
            );
            return;
        }
    }
    panic!("the server closed its output without answering the call");
}

/// `warden serve --stdio` on the given stdin, stdout and stderr.
fn serve_stdio(
    s: &Setup,
    stdin: impl Into<Stdio>,
    stdout: impl Into<Stdio>,
    stderr: impl Into<Stdio>,
) -> std::process::Child {
    warden_serve(s, &["--stdio"])
        .into_std()
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// stdin and stdout that are pipes are served by the runtime's reactor (no
/// blocking-pool thread between a request and its answer) through
/// non-blocking open files of the server's own: the client's open files,
/// which its other processes may share, stay blocking, even when the
/// server is killed.
#[test]
fn over_stdio_pipes_are_polled_and_left_blocking() {
    use std::io::Write as _;
    let s = setup();
    // The server on pipes whose ends the test keeps too, its call answered.
    let start = || {
        let (stdin_r, mut stdin_w) = std::io::pipe().unwrap();
        let (stdout_r, stdout_w) = std::io::pipe().unwrap();
        let child = serve_stdio(
            &s,
            stdin_r.try_clone().unwrap(),
            stdout_w.try_clone().unwrap(),
            Stdio::null(),
        );
        stdin_w.write_all(STDIO_SESSION.as_bytes()).unwrap();
        read_echo_answer(&stdout_r);
        (child, stdin_r, stdin_w, stdout_r, stdout_w)
    };
    let (mut child, stdin_r, stdin_w, _stdout_r, stdout_w) = start();
    // While serving (the call answered), the server reads and writes each
    // pipe through a non-blocking open file of its own; the client's open
    // files stay blocking.
    assert!(polls(child.id(), &stdin_r), "stdin is not on the reactor");
    assert!(polls(child.id(), &stdout_w), "stdout is not on the reactor");
    assert!(
        !nonblocking(&stdin_r),
        "the client's stdin made non-blocking"
    );
    assert!(
        !nonblocking(&stdout_w),
        "the client's stdout made non-blocking"
    );
    drop(stdin_w);
    assert!(child.wait().unwrap().success());
    assert!(!nonblocking(&stdin_r), "stdin left non-blocking");
    assert!(!nonblocking(&stdout_w), "stdout left non-blocking");

    // Killed with SIGKILL mid-session, the server leaves nothing to put
    // back: the client's pipes are as they were.
    let (mut child, stdin_r, _stdin_w, _stdout_r, stdout_w) = start();
    assert!(polls(child.id(), &stdin_r), "stdin is not on the reactor");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!nonblocking(&stdin_r), "SIGKILL left stdin non-blocking");
    assert!(!nonblocking(&stdout_w), "SIGKILL left stdout non-blocking");
}

/// Whether process `pid` holds a non-blocking open file of the pipe `fd`
/// is (its own, not the one `fd` shares with it).
fn polls(pid: u32, fd: impl std::os::fd::AsFd) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let pipe = rustix::fs::fstat(fd).unwrap();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .any(|e| {
            let same = std::fs::metadata(e.path())
                .is_ok_and(|m| (m.dev(), m.ino()) == (pipe.st_dev, pipe.st_ino));
            let info = std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                e.file_name().to_string_lossy()
            ))
            .unwrap_or_default();
            let flags = info
                .lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
                .unwrap_or(0);
            same && flags & 0o4000 != 0
        })
}

/// A raw stdio session, its first call (echo, id 2) answered: the server,
/// its stdin, and the lines of its output still to come.
type StdioLines = std::io::Lines<std::io::BufReader<std::io::PipeReader>>;
fn served_session(s: &Setup) -> (std::process::Child, std::io::PipeWriter, StdioLines) {
    use std::io::{BufRead as _, Write as _};
    let (stdin_r, mut stdin_w) = std::io::pipe().unwrap();
    let (stdout_r, stdout_w) = std::io::pipe().unwrap();
    let child = serve_stdio(s, stdin_r, stdout_w, Stdio::null());
    stdin_w.write_all(STDIO_SESSION.as_bytes()).unwrap();
    let mut lines = std::io::BufReader::new(stdout_r).lines();
    while !lines
        .next()
        .expect("output closed")
        .unwrap()
        .contains(r#""id":2"#)
    {}
    (child, stdin_w, lines)
}

/// The next line of `lines` under `id`.
fn with_id(lines: &mut impl Iterator<Item = std::io::Result<String>>, id: u64) -> Value {
    loop {
        let line = lines.next().expect("output closed").unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        if v["id"] == id {
            return v;
        }
    }
}

/// The error a call gets under the id of a call still running.
const ID_IN_USE: &str = "this request id is already in use by a call still running in this session (ids must be unique while their requests run)";

/// Sends an `echo` call under id 9 while a call under 9 runs, and asserts
/// that it is refused as an id in use.
fn echo_under_9_is_refused(stdin_w: &mut impl std::io::Write, next: &mut impl FnMut(u64) -> Value) {
    writeln!(
        stdin_w,
        r#"{{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"again"}}}}}}"#
    )
    .unwrap();
    let refused = next(9);
    assert_eq!(refused["error"]["code"], -32600, "{refused}");
    assert_eq!(refused["error"]["message"], ID_IN_USE);
}

/// A call under the id of a call still running is refused (a cancellation
/// names a call by its id: the second would take the id over); the first
/// can still be cancelled by it.
#[test]
fn over_stdio_a_request_id_in_use_is_refused_and_the_first_call_keeps_it() {
    use std::io::Write as _;
    let s = setup();
    let (mut child, mut stdin_w, mut lines) = served_session(&s);
    let _watchdog = kill_after(&child, Duration::from_secs(60));
    let mut next = |id: u64| with_id(&mut lines, id);
    writeln!(
        stdin_w,
        r#"{{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{{"name":"hog","arguments":{{"attack":"loop"}}}}}}"#
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    echo_under_9_is_refused(&mut stdin_w, &mut next);
    // So is one the SDK would run (its `_meta` names its client).
    writeln!(
        stdin_w,
        r#"{{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"sdk"}},"_meta":{{"io.modelcontextprotocol/clientInfo":{{"name":"t","version":"1"}}}}}}}}"#
    )
    .unwrap();
    let refused = next(9);
    assert_eq!(refused["error"]["code"], -32600, "{refused}");
    // And one whose method or version is written with escapes (the SDK
    // reads `tools\/call` as `tools/call`; the loop could not borrow it and
    // handed the line over unchecked, a second call under id 9).
    for (version, method) in [("2.0", r"tools\/call"), (r"2\u002e0", "tools/call")] {
        writeln!(
            stdin_w,
            r#"{{"jsonrpc":"{version}","id":9,"method":"{method}","params":{{"name":"echo","arguments":{{"message":"escaped"}}}}}}"#
        )
        .unwrap();
        let refused = next(9);
        assert_eq!(
            refused["error"]["message"], ID_IN_USE,
            "{method}: {refused}"
        );
    }
    let cancelled = Instant::now();
    writeln!(
        stdin_w,
        r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":9}}}}"#
    )
    .unwrap();
    let first = next(9);
    assert_eq!(first["result"]["isError"], true, "{first}");
    assert!(
        first["result"]["content"][0]["text"] == "cancelled by the client",
        "{first}"
    );
    assert!(cancelled.elapsed() < Duration::from_secs(2));
    drop(stdin_w);
    assert!(child.wait().unwrap().success());
}

/// The id of a call the SDK runs (its `_meta` names its client, a
/// lifecycle the SDK validates) is in use too: a call under it is refused
/// while it runs, by the loop that would run it; once the client cancels
/// it, the id is free again (the SDK does not answer a cancelled request).
#[test]
fn over_stdio_the_id_of_a_call_the_sdk_runs_is_in_use_until_it_ends() {
    use std::io::Write as _;
    let s = setup();
    let (mut child, mut stdin_w, mut lines) = served_session(&s);
    let _watchdog = kill_after(&child, Duration::from_secs(60));
    let mut next = |id: u64| with_id(&mut lines, id);
    writeln!(
        stdin_w,
        r#"{{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{{"name":"hog","arguments":{{"attack":"loop"}},"_meta":{{"io.modelcontextprotocol/clientInfo":{{"name":"t","version":"1"}}}}}}}}"#
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    echo_under_9_is_refused(&mut stdin_w, &mut next);
    writeln!(
        stdin_w,
        r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":9}}}}"#
    )
    .unwrap();
    writeln!(
        stdin_w,
        r#"{{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"free"}}}}}}"#
    )
    .unwrap();
    // Whatever the SDK says of the cancelled call, the next call under its
    // id runs.
    loop {
        let answer = next(9);
        assert!(answer.get("error").is_none(), "{answer}");
        if answer.to_string().contains("free") {
            break;
        }
    }
    drop(stdin_w);
    assert!(child.wait().unwrap().success());
}

/// Told to stop (SIGTERM) while the SDK runs a call (its `_meta` names its
/// client), the server lets it finish and answers it before it exits, as it
/// does the calls it runs itself. Before, the SDK had 2 s, and a call
/// running longer was dropped unanswered.
#[test]
fn over_stdio_a_call_the_sdk_runs_is_answered_before_the_server_stops() {
    use std::io::Write as _;
    let s = setup();
    let (mut child, mut stdin_w, mut lines) = served_session(&s);
    let _watchdog = kill_after(&child, Duration::from_secs(60));
    writeln!(
        stdin_w,
        r#"{{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{{"name":"hog","arguments":{{"attack":"loop"}},"_meta":{{"io.modelcontextprotocol/clientInfo":{{"name":"t","version":"1"}}}}}}}}"#
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let pid = child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    assert!(sent.unwrap().success());
    // hog loops until its 3 s deadline: past the SDK's old 2 s.
    let answer = with_id(&mut lines, 9);
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    assert!(answer.to_string().contains("deadline"), "{answer}");
    assert!(child.wait().unwrap().success());
    drop(stdin_w);
}

/// A `tools/call` line the SDK would refuse (one that also has a `result`,
/// or bytes that are not UTF-8 in a field nobody reads) is refused the
/// same however fast the loop takes it: it never runs the tool.
#[test]
fn over_stdio_a_line_the_sdk_refuses_is_not_run_by_the_loop() {
    use std::io::Write as _;
    let s = setup();
    let (mut child, mut stdin_w, lines) = served_session(&s);
    let _watchdog = kill_after(&child, Duration::from_secs(60));
    let call = |id: u64, extra: &[u8]| {
        let mut line = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"m"}}}}"#
        )
        .into_bytes();
        line.extend_from_slice(extra);
        line.extend_from_slice(b"}\n");
        line
    };
    stdin_w.write_all(&call(5, br#","result":{}"#)).unwrap();
    stdin_w.write_all(&call(6, b",\"x\":\"\xff\"")).unwrap();
    stdin_w.write_all(&call(7, b"")).unwrap();
    // Neither is run (the SDK answers "Invalid request", without an id it
    // would trust); the session goes on, and the next call is answered.
    // (The SDK's answers may come after the loop's.)
    std::thread::sleep(Duration::from_millis(500));
    drop(stdin_w);
    let seen: Vec<Value> = lines
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    let (answered, others): (Vec<&Value>, Vec<&Value>) = seen.iter().partition(|v| v["id"] == 7);
    assert_eq!(
        answered[0]["result"]["structuredContent"]["message"], "m",
        "{seen:?}"
    );
    assert!(
        others.iter().any(|v| v["error"]["code"] == -32600),
        "{seen:?}"
    );
    assert!(others.iter().all(|v| v.get("result").is_none()), "{seen:?}");
    assert!(child.wait().unwrap().success());
    let trail = std::fs::read_to_string(s.dir.path().join("audit.jsonl")).unwrap_or_default();
    let starts = trail.matches("\"event\":\"invocation.start\"").count();
    assert_eq!(starts, 2, "only the calls with ids 2 and 7 ran: {trail}");
}

/// A named FIFO as stdin whose writer has written and gone before the
/// server starts (`warden serve --stdio < fifo` while another process
/// writes to it): answered, and its end seen, so the server ends.
#[test]
fn over_stdio_a_fifo_written_and_closed_before_the_start_ends_the_server() {
    use std::io::Write as _;
    let s = setup();
    let fifo = s.dir.path().join("in.fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut w = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
            w.write_all(STDIO_SESSION.as_bytes()).unwrap();
        })
    };
    // Opened as a shell opens it: blocking, until the writer opens too.
    let input = std::fs::File::open(&fifo).unwrap();
    writer.join().unwrap();
    let (stdout_r, stdout_w) = std::io::pipe().unwrap();
    let mut child = serve_stdio(&s, input, stdout_w, Stdio::null());
    read_echo_answer(&stdout_r);
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("the server did not see the end of its FIFO input");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(child.wait().unwrap().success());
}

/// A socket pair (what Node gives a child process's stdio) is served the
/// same way; a regular file as stdin, which cannot be polled, keeps
/// tokio's blocking reads.
#[test]
fn over_stdio_a_socket_or_a_file_serves_too() {
    use std::io::Write as _;
    let s = setup();
    let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut child = serve_stdio(
        &s,
        std::os::fd::OwnedFd::from(theirs.try_clone().unwrap()),
        std::os::fd::OwnedFd::from(theirs.try_clone().unwrap()),
        Stdio::null(),
    );
    ours.write_all(STDIO_SESSION.as_bytes()).unwrap();
    read_echo_answer(&ours);
    assert!(nonblocking(&theirs), "the socket is not on the reactor");
    ours.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(!nonblocking(&theirs), "the socket left non-blocking");

    let input = s.dir.path().join("session.jsonl");
    std::fs::write(&input, STDIO_SESSION).unwrap();
    let out = warden_serve(&s, &["--stdio"])
        .into_std()
        .stdin(std::fs::File::open(&input).unwrap())
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    read_echo_answer(&out.stdout[..]);
}

/// A client's JSON-RPC id is logged by the SDK at `warn` (the default
/// level) as a field, which `fmt` wrote raw: escape sequences, a carriage
/// return and a forged line reached the operator's terminal. Every field of
/// every log line is now escaped, and a huge one cut.
#[test]
fn a_clients_request_id_reaches_the_log_escaped_and_cut() {
    let s = setup();
    let forged = r"x\u001b]0;pwn\u0007\u001b[2K\r\nFORGED  INFO warden: approved\u202e";
    let lines = format!(
        "{}{}\n{}\n",
        &STDIO_SESSION[..STDIO_SESSION
            .find("\n{\"jsonrpc\":\"2.0\",\"id\":2")
            .unwrap()
            + 1],
        format_args!(r#"{{"jsonrpc":"2.0","id":"{forged}","method":"nope"}}"#),
        format_args!(
            r#"{{"jsonrpc":"2.0","id":"{}","method":"nope"}}"#,
            "y".repeat(100_000)
        ),
    );
    let input = s.dir.path().join("session.jsonl");
    std::fs::write(&input, lines).unwrap();
    let out = warden_serve(&s, &["--stdio"])
        .into_std()
        .stdin(std::fs::File::open(&input).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("FORGED"),
        "the SDK's line is not there: {stderr}"
    );
    assert!(
        !stderr.contains(['\u{1b}', '\u{7}', '\r', '\u{202e}']),
        "a raw control or bidi character in the log: {stderr:?}"
    );
    assert!(
        !stderr.lines().any(|l| l.starts_with("FORGED")),
        "a forged log line: {stderr}"
    );
    assert!(stderr.contains("\\u{1b}]0;pwn"), "{stderr}");
    assert!(
        stderr.len() < 40_000 && stderr.contains("yyyy") && stderr.contains("bytes cut"),
        "a 100 KB id is logged whole ({} bytes)",
        stderr.len()
    );
}

/// A JSON array reads, by position, as the fields a derived parser wants:
/// over stdio it ran as a `tools/call` that the SDK would have refused.
/// Only an object is Warden's to answer; the SDK refuses the array.
#[test]
fn over_stdio_an_array_is_not_a_call() {
    use std::io::{BufRead as _, Write as _};
    let s = setup();
    let mut child = warden_serve(&s, &["--stdio"])
        .into_std()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let head = &STDIO_SESSION[..STDIO_SESSION
        .find("\n{\"jsonrpc\":\"2.0\",\"id\":2")
        .unwrap()
        + 1];
    let mut stdin = child.stdin.take().unwrap();
    let arrays = concat!(
        r#"["2.0",7,"tools/call",{"name":"echo","arguments":{"message":"by position"}}]"#,
        "\n",
        r#"["2.0","tools/call",8,{"name":"echo","arguments":{"message":"by position"}}]"#,
        "\n",
        // An object whose params are an array: refused as rmcp refuses it.
        r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":[null,"echo",{"message":"by position"},null,null]}"#,
        "\n",
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"message":"after"}}}"#,
        "\n",
    );
    write!(stdin, "{head}{arrays}").unwrap();
    // Every answer up to the last call's, and whatever follows in 300 ms.
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("\"after\"") {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "{seen}");
        seen.push_str(&line);
    }
    std::thread::sleep(Duration::from_millis(300));
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    seen.push_str(&rest);
    assert!(child.wait().unwrap().success());
    assert!(!seen.contains("by position"), "an array ran: {seen}");
    assert!(
        !seen.contains("already in use"),
        "an array was taken: {seen}"
    );
    let trail = std::fs::read_to_string(s.dir.path().join("audit.jsonl")).unwrap();
    assert_eq!(trail.matches("\"invocation.end\"").count(), 1, "{trail}");
}

/// A pipe the client had made non-blocking stays so (only what the server
/// changed is put back); a pipe that stderr shares with stdout (`2>&1`) is
/// left blocking, since stderr's writes would turn non-blocking too.
#[test]
fn over_stdio_only_what_the_server_changed_is_restored() {
    use std::io::Write as _;
    let s = setup();
    let (stdin_r, mut stdin_w) = std::io::pipe().unwrap();
    let (stdout_r, stdout_w) = std::io::pipe().unwrap();
    rustix::io::ioctl_fionbio(&stdin_r, true).unwrap();
    let mut child = serve_stdio(
        &s,
        stdin_r.try_clone().unwrap(),
        stdout_w.try_clone().unwrap(),
        stdout_w.try_clone().unwrap(),
    );
    stdin_w.write_all(STDIO_SESSION.as_bytes()).unwrap();
    read_echo_answer(&stdout_r);
    assert!(
        !nonblocking(&stdout_w),
        "stdout shared with stderr was made non-blocking"
    );
    drop(stdin_w);
    assert!(child.wait().unwrap().success());
    assert!(
        nonblocking(&stdin_r),
        "the client's non-blocking stdin was made blocking"
    );
}

/// At the end of input, an answer larger than the pipe's buffer still
/// reaches a slow reader whole, past the 2 s the SDK's lines get to flush
/// (a write given up part-way leaves the rest queued, and it goes out last).
#[test]
fn over_stdio_the_last_answer_reaches_a_slow_reader_whole() {
    use std::io::{Read as _, Write as _};
    let s = setup();
    let (stdin_r, mut stdin_w) = std::io::pipe().unwrap();
    let (mut stdout_r, stdout_w) = std::io::pipe().unwrap();
    let mut child = serve_stdio(&s, stdin_r, stdout_w, Stdio::null());
    // An unknown method goes to the SDK, whose error echoes the id.
    let id = "x".repeat(1 << 20);
    writeln!(
        stdin_w,
        r#"{{"jsonrpc":"2.0","id":"{id}","method":"no/such"}}"#
    )
    .unwrap();
    drop(stdin_w);
    let _watchdog = kill_after(&child, Duration::from_secs(60));
    // 16 reads, 200 ms apart: 3 s, past the 2 s the SDK gets to flush.
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        std::thread::sleep(Duration::from_millis(200));
        match stdout_r.read(&mut chunk).unwrap() {
            0 => break,
            n => got.extend_from_slice(&chunk[..n]),
        }
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(
        got.last(),
        Some(&b'\n'),
        "the line was cut at {} bytes",
        got.len()
    );
    let answer: Value = serde_json::from_slice(&got).unwrap();
    assert_eq!(answer["id"].as_str().map(str::len), Some(1 << 20));
    assert!(answer["error"].is_object(), "{}", &answer["error"]);
}

/// A listening socket on stdin (what inetd's "wait" mode or a systemd
/// socket without `Accept=` hands over) is not a stream to poll: the server
/// ends at once instead of waiting on it forever.
#[test]
fn over_stdio_a_listening_socket_on_stdin_ends_the_server() {
    let s = setup();
    let listener = std::os::unix::net::UnixListener::bind(s.dir.path().join("l.sock")).unwrap();
    let mut child = serve_stdio(
        &s,
        std::os::fd::OwnedFd::from(listener),
        Stdio::null(),
        Stdio::null(),
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the server waits on a listening socket");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}

/// Kills `child` after `limit` unless the returned guard is dropped first:
/// a test of a server that could hang fails instead of hanging.
fn kill_after(child: &std::process::Child, limit: Duration) -> impl Drop + use<> {
    struct Guard(std::sync::mpsc::Sender<()>);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.send(());
        }
    }
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let pid = child.id().to_string();
    std::thread::spawn(move || {
        if rx.recv_timeout(limit) == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid])
                .status();
        }
    });
    Guard(tx)
}

/// A call's progress note that waits for a slow client does not hold up
/// the rest of the session. The SDK's 1 MiB line fills the pipe; the
/// `hog`'s first progress note (1 s) queues behind it, then an answer of
/// the loop's own: once the client reads, every line arrives. (When the
/// note waited for the output inside the call, which only the loop polls,
/// and the loop waited behind it to write the answer, the session hung.)
#[test]
fn over_stdio_a_progress_note_waiting_on_a_slow_client_does_not_hang_the_session() {
    use std::io::{BufRead as _, Write as _};
    let s = setup();
    let (stdin_r, mut stdin_w) = std::io::pipe().unwrap();
    let (stdout_r, stdout_w) = std::io::pipe().unwrap();
    let mut child = serve_stdio(&s, stdin_r, stdout_w, Stdio::null());
    let watchdog = kill_after(&child, Duration::from_secs(60));
    let init = STDIO_SESSION.lines().take(2).collect::<Vec<_>>().join("\n");
    writeln!(stdin_w, "{init}").unwrap();
    // Answered: the session is the loop's, so the call below is too.
    let mut out = std::io::BufReader::new(&stdout_r);
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.contains(r#""id":1,"#), "{line}");
    writeln!(
        stdin_w,
        r#"{{"jsonrpc":"2.0","id":100,"method":"tools/call","params":{{"name":"hog","arguments":{{"attack":"loop"}},"_meta":{{"progressToken":"p"}}}}}}"#
    )
    .unwrap();
    let id = "x".repeat(1 << 20);
    writeln!(
        stdin_w,
        r#"{{"jsonrpc":"2.0","id":"{id}","method":"no/such"}}"#
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    writeln!(
        stdin_w,
        r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"after"}}}}}}"#
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (mut echo, mut hog, mut notes) = (false, false, 0);
    for line in out.lines() {
        let line = line.unwrap();
        echo |= line.contains(r#""id":2,"#) && line.contains(r#""message":"after""#);
        hog |= line.contains(r#""id":100,"#);
        notes += usize::from(line.contains("notifications/progress"));
        if echo && hog {
            break;
        }
    }
    assert!(
        echo && hog,
        "the session hung (echo answered: {echo}, hog answered: {hog})"
    );
    assert!(notes >= 1, "no progress note");
    drop(stdin_w);
    assert!(child.wait().unwrap().success());
    drop(watchdog);
}

#[tokio::test]
async fn over_stdio_a_printing_tool_does_not_corrupt_the_stream() {
    let s = setup();
    let transport =
        rmcp::transport::TokioChildProcess::new(warden_serve(&s, &["--stdio"])).unwrap();
    let client = Client::default().serve(transport).await.unwrap();
    let tools = client.list_all_tools().await.unwrap();
    assert_eq!(tools.len(), 5);
    for _ in 0..3 {
        let r = client
            .call_tool(call(
                "hog",
                json!({"attack": "print", "text": "Content-Length: 5\r\n\r\n{}\n"}),
            ))
            .await
            .unwrap();
        assert_eq!(
            r.structured_content,
            Some(json!({"result": "Content-Length: 5\r\n\r\n{}\n"}))
        );
    }
    let r = client
        .call_tool(call("echo", json!({"message": "ok"})))
        .await
        .unwrap();
    assert_eq!(r.structured_content, Some(json!({"message": "ok"})));
    client.cancel().await.unwrap();
    // The audit trail saw every call, and the server signed them all when
    // it stopped (the cadence is 256 records or 500 ms).
    let trail = std::fs::read_to_string(s.dir.path().join("audit.jsonl")).unwrap();
    assert_eq!(trail.matches("\"event\":\"invocation.end\"").count(), 4);
    let report = warden::audit::verify::verify_text(&trail, None);
    assert!(report.is_complete(), "{report:?}");
    assert!(report.checkpoints >= 1, "{report:?}");
}

/// `warden serve --http` on a free port; returns the child and its URL.
async fn http_server(s: &Setup, extra: &[&str]) -> (tokio::process::Child, String) {
    let (child, url, _) = http_server_said(s, extra).await;
    (child, url)
}

/// [`http_server`], and the lines it printed before its URL (other
/// endpoints it announced).
pub(crate) async fn http_server_said(
    s: &Setup,
    extra: &[&str],
) -> (tokio::process::Child, String, Vec<String>) {
    let mut cmd = warden_serve(s, &["--http", "127.0.0.1:0"]);
    cmd.args(extra).stderr(Stdio::piped()).kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let (url, said) = crate::common::said_until(&mut child, "warden: serving MCP at ").await;
    (child, url, said)
}

pub(crate) async fn http_client(
    url: &str,
    token: Option<&str>,
) -> Result<RunningService<RoleClient, Client>, String> {
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    let mut config = StreamableHttpClientTransportConfig::with_uri(url.to_owned());
    if let Some(t) = token {
        config = config.auth_header(t.trim_start_matches("Bearer ").to_owned());
    }
    let transport = rmcp::transport::StreamableHttpClientTransport::from_config(config);
    Client::default()
        .serve(transport)
        .await
        .map_err(|e| e.to_string())
}

async fn post(url: &str, headers: &[(&str, &str)], body: String) -> (u16, String) {
    let client = reqwest::Client::new();
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.body(body).send().await.unwrap();
    (
        resp.status().as_u16(),
        resp.text().await.unwrap_or_default(),
    )
}

#[tokio::test]
async fn over_http_tokens_origins_sizes_bad_json_and_concurrent_sessions() {
    let s = setup();
    let token = "test-token-0123456789abcdef";
    std::fs::write(s.dir.path().join("token"), token).unwrap();
    let token_file = s.dir.path().join("token").display().to_string();
    let (mut child, url) =
        http_server(&s, &["--token-file", &token_file, "--max-request", "65536"]).await;
    let auth = format!("Bearer {token}");

    // No token, a wrong token: 401 before anything else, each told which.
    assert!(http_client(&url, None).await.is_err());
    let (status, body) = post(&url, &[], "{}".into()).await;
    assert_eq!(status, 401);
    assert!(body.contains("a bearer token is required"), "{body}");
    let (status, body) = post(
        &url,
        &[("authorization", "Bearer wrong-token-0123456789")],
        "{}".into(),
    )
    .await;
    assert_eq!(status, 401);
    assert!(
        body.contains("the bearer token is not one this server accepts"),
        "{body}"
    );

    // DNS rebinding: a foreign Host or Origin is refused.
    let (status, _) = post(
        &url,
        &[("authorization", &auth), ("host", "evil.example")],
        "{}".into(),
    )
    .await;
    assert_eq!(status, 403, "host");
    let (status, _) = post(
        &url,
        &[("authorization", &auth), ("origin", "http://evil.example")],
        "{}".into(),
    )
    .await;
    assert_eq!(status, 403, "origin");
    // Before any token is looked at: a rebound page learns nothing of
    // which tokens are refused, or why.
    for (name, value) in [("host", "evil.example"), ("origin", "http://evil.example")] {
        for bearer in [
            "Bearer wrong-token-0123456789",
            "Bearer eyJhbGciOiJFUzI1NiJ9.e30.x",
        ] {
            let (status, body) = post(
                &url,
                &[("authorization", bearer), (name, value)],
                "{}".into(),
            )
            .await;
            assert_eq!(status, 403, "{name} {bearer}: {body}");
            assert!(!body.contains("token"), "{body}");
        }
    }

    // Oversize and malformed requests get errors.
    let big = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": "m".repeat(100_000)}}});
    let (status, _) = post(&url, &[("authorization", &auth)], big.to_string()).await;
    assert_eq!(status, 413);
    let (status, body) = post(
        &url,
        &[("authorization", &auth)],
        "{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": ".into(),
    )
    .await;
    assert!((400..500).contains(&status), "{status} {body}");

    // Several sessions calling at once.
    let mut calls = Vec::new();
    for i in 0..4 {
        let url = url.clone();
        let auth = auth.clone();
        calls.push(tokio::spawn(async move {
            let c = http_client(&url, Some(&auth)).await.unwrap();
            let mut seen = Vec::new();
            for j in 0..5 {
                let m = format!("client {i} call {j}");
                let r = c
                    .call_tool(call("echo", json!({"message": m})))
                    .await
                    .unwrap();
                seen.push(
                    r.structured_content.unwrap()["message"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                );
            }
            let _ = c.cancel().await;
            seen
        }));
    }
    for (i, c) in calls.into_iter().enumerate() {
        let seen = c.await.unwrap();
        assert_eq!(
            seen,
            (0..5)
                .map(|j| format!("client {i} call {j}"))
                .collect::<Vec<_>>()
        );
    }
    let _ = child.start_kill();
}

#[test]
fn serve_refuses_bad_configuration() {
    let s = setup();
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
            .arg("--cache-dir")
            .arg(crate::common::shared_cache())
            .args(["serve", "--manifest"])
            .arg(&s.manifest)
            .arg("--grants")
            .arg(&s.grants)
            .args(extra)
            .env("WARDEN_STATE_DIR", s.dir.path().join("state"))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&[]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("choose a transport: --stdio or --http ADDR"),
        "{err}"
    );
    let (code, err) = run(&["--http", "0.0.0.0:0"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("is not a loopback address"), "{err}");
    // An agents file for a remote address must say what URL tokens name.
    let agents = s.dir.path().join("agents.toml");
    std::fs::write(&agents, "[[issuer]]\nissuer = \"https://login.example\"\n").unwrap();
    let a = agents.display().to_string();
    let (code, err) = run(&["--http", "0.0.0.0:0", "--allow-remote", "--agents", &a]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("no resource, and --http 0.0.0.0:0 is not loopback"),
        "{err}"
    );
    // A bad agents file stops start-up, naming where.
    std::fs::write(&agents, "[[issuer]]\nissuer = \"http://login.example\"\n").unwrap();
    let (code, err) = run(&["--http", "127.0.0.1:0", "--agents", &a]);
    assert_eq!(code, Some(2));
    assert!(err.contains("agents.toml:2:10: issuer.issuer: \"http://login.example\" is plain http to another host"), "{err}");
    // A duplicate tool name in the manifest stops start-up.
    let dup = s.dir.path().join("dup.toml");
    let text = std::fs::read_to_string(&s.manifest).unwrap();
    std::fs::write(
        &dup,
        format!("{text}\n[tools.echo]\ncomponent = \"{}\"\n", crate::ECHO),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["serve", "--stdio", "--manifest"])
        .arg(&dup)
        .arg("--grants")
        .arg(&s.grants)
        .env("WARDEN_STATE_DIR", s.dir.path().join("state"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("dup.toml:32:") && err.contains("duplicate key"),
        "{err}"
    );
}

/// A server and a client on the current protocol (2026-07-28), where the
/// server may not send requests: approvals are input-required round trips.
async fn connect_current(mcp: WardenMcp, client: Client) -> RunningService<RoleClient, Client> {
    use rmcp::model::{InitializeResult, ProtocolVersion, ServerCapabilities};
    use rmcp::service::{RoleServer, serve_directly};
    let (a, b) = tokio::io::duplex(1 << 20);
    let client_info = client
        .get_info()
        .with_protocol_version(ProtocolVersion::V_2026_07_28);
    tokio::spawn(async move {
        let running = serve_directly::<RoleServer, _, _, _, _>(mcp, a, Some(client_info));
        let _ = running.waiting().await;
    });
    let mut server_info =
        InitializeResult::new(ServerCapabilities::builder().enable_tools().build());
    server_info.protocol_version = ProtocolVersion::V_2026_07_28;
    serve_directly::<RoleClient, _, _, _, _>(client, b, Some(server_info.into()))
}

#[tokio::test]
async fn on_the_current_protocol_approvals_are_input_required_round_trips() {
    use rmcp::model::{CallToolResponse, InputResponses};
    let s = setup();
    let audit = MemorySink::new();
    let yes = Client {
        approve: true,
        elicitation: true,
        ..Client::default()
    };
    let mcp = server(&s, audit.clone(), ServeOptions::default()).await;
    let client = connect_current(mcp, yes.clone()).await;
    let write = call(
        "writer",
        json!({"path": "round.md", "content": "round trip"}),
    );

    // The SDK's client fulfils the input request and retries.
    let r = client.call_tool(write.clone()).await.unwrap();
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    assert_eq!(
        std::fs::read_to_string(s.workspace.join("round.md")).unwrap(),
        "round trip"
    );
    assert_eq!(yes.asked.lock().unwrap().len(), 1);

    // Driven by hand: the first answer is input-required with a state.
    let CallToolResponse::InputRequired(asked) =
        client.call_tool_once(write.clone()).await.unwrap()
    else {
        panic!("expected input-required");
    };
    let state = asked.request_state.clone().unwrap();
    assert_eq!(state.len(), 32, "128 random bits");
    // A forged state is refused.
    let mut forged = write.clone();
    forged.request_state = Some("0".repeat(32));
    forged.input_responses = Some(InputResponses::from([(
        "approval".to_owned(),
        json!({"action": "accept", "content": {"approved": true}}),
    )]));
    let e = client.call_tool_once(forged.clone()).await.unwrap_err();
    assert!(
        e.to_string().contains("unknown or expired requestState"),
        "{e}"
    );
    // The real state retried under another tool's name: refused, and the
    // call stays parked for its own answer (not dropped, running on
    // unanswered with its place given back).
    let mut misnamed = forged.clone();
    misnamed.name = "echo".into();
    misnamed.request_state = Some(state.clone());
    let e = client.call_tool_once(misnamed).await.unwrap_err();
    assert!(
        e.to_string().contains("unknown or expired requestState"),
        "{e}"
    );
    // The real state with a refusal: denied.
    let mut answer = forged.clone();
    answer.request_state = Some(state.clone());
    answer.input_responses = Some(InputResponses::from([(
        "approval".to_owned(),
        json!({"action": "accept", "content": {"approved": false}}),
    )]));
    let CallToolResponse::Complete(r) = client.call_tool_once(answer.clone()).await.unwrap() else {
        panic!("expected a result");
    };
    assert_eq!(r.is_error, Some(true));
    assert!(text(&r).contains("denied by MCP client"), "{}", text(&r));
    // Replaying the same state (now approving) counts for nothing.
    answer.input_responses = forged.input_responses.clone();
    let e = client.call_tool_once(answer).await.unwrap_err();
    assert!(
        e.to_string().contains("unknown or expired requestState"),
        "{e}"
    );
    client.cancel().await.unwrap();
}

/// `warden serve --stdio` with the operator's approvals endpoint (its
/// token `op_token`), serving `client`: the session and the endpoint.
async fn stdio_with_approvals(
    s: &Setup,
    op_token: &str,
    client: Client,
) -> (RunningService<RoleClient, Client>, String) {
    use tokio::io::AsyncBufReadExt;
    std::fs::write(s.dir.path().join("op-token"), op_token).unwrap();
    let op_file = s.dir.path().join("op-token").display().to_string();
    let args = [
        "--stdio",
        "--approvals",
        "127.0.0.1:0",
        "--approvals-token-file",
        &op_file,
    ];
    let mut cmd = warden_serve(s, &args);
    cmd.stderr(Stdio::piped());
    let (transport, stderr) = rmcp::transport::TokioChildProcess::builder(cmd)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(stderr.unwrap()).lines();
    let base = loop {
        let line = lines.next_line().await.unwrap().expect("server exited");
        if let Some(url) = line.strip_prefix("warden: pending approvals at ") {
            break url.to_owned();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (client.serve(transport).await.unwrap(), base)
}

/// The operator's `body` for request `digest` at the approvals endpoint
/// `base`: the answer's status.
async fn answer(base: &str, op_token: &str, digest: &str, body: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{base}/{digest}"))
        .bearer_auth(op_token)
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Guessing the approvals endpoint's token: a wrong one is answered after
/// half a second, and past five in a second every request is answered 429
/// unchecked (the right token too, so a guess learns nothing) until the
/// second is over.
#[tokio::test]
async fn the_approvals_endpoint_checks_five_wrong_tokens_a_second() {
    let s = setup();
    let op_token = "operator-token-0123456789";
    let (client, base) = stdio_with_approvals(&s, op_token, Client::default()).await;
    let http = reqwest::Client::new();
    let started = std::time::Instant::now();
    let guesses = (0..12).map(|i| {
        let (http, base) = (http.clone(), base.clone());
        tokio::spawn(async move {
            let at = std::time::Instant::now();
            let r = http
                .get(&base)
                .bearer_auth(format!("guess-{i}"))
                .send()
                .await;
            (r.unwrap().status().as_u16(), at.elapsed())
        })
    });
    let mut answers = Vec::new();
    for g in guesses.collect::<Vec<_>>() {
        answers.push(g.await.unwrap());
    }
    let right = http.get(&base).bearer_auth(op_token).send().await.unwrap();
    if started.elapsed() < Duration::from_millis(900) {
        assert_eq!(right.status().as_u16(), 429, "within the second");
    }
    let wrong: Vec<_> = answers.iter().filter(|(s, _)| *s == 401).collect();
    assert_eq!(wrong.len(), 5, "{answers:?}");
    assert!(
        wrong.iter().all(|(_, t)| *t >= Duration::from_millis(450)),
        "{answers:?}"
    );
    assert_eq!(
        answers.iter().filter(|(s, _)| *s == 429).count(),
        7,
        "{answers:?}"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let right = http.get(&base).bearer_auth(op_token).send().await.unwrap();
    assert_eq!(right.status().as_u16(), 200);
    client.cancel().await.unwrap();
}

/// A request without the approvals token is answered 401 and its
/// connection closed: a stranger asking again and again on kept-alive
/// connections held the places of the operator's tools. The operator's
/// own connection is kept alive.
#[tokio::test]
async fn an_approvals_request_without_the_token_closes_its_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = setup();
    let op_token = "operator-token-0123456789";
    let (client, base) = stdio_with_approvals(&s, op_token, Client::default()).await;
    let rest = base.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_at(rest.find('/').unwrap());
    let ask = |auth: &str| format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}\r\n");
    for (auth, status, closed) in [
        (String::new(), "HTTP/1.1 401", true),
        (
            format!("Authorization: Bearer {op_token}\r\n"),
            "HTTP/1.1 200",
            false,
        ),
    ] {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(ask(&auth).as_bytes()).await.unwrap();
        let (mut said, mut buf) = (Vec::new(), [0u8; 4096]);
        let ended = loop {
            match tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf)).await {
                Err(_) => break false,
                Ok(Ok(0) | Err(_)) => break true,
                Ok(Ok(n)) => said.extend_from_slice(&buf[..n]),
            }
        };
        let said = String::from_utf8_lossy(&said).to_ascii_lowercase();
        assert!(said.starts_with(&status.to_ascii_lowercase()), "{said}");
        assert_eq!(ended, closed, "{said}");
        assert_eq!(said.contains("connection: close"), closed, "{said}");
    }
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn approvals_wait_at_the_operators_endpoint_when_the_client_cannot_elicit() {
    let s = setup();
    let op_token = "operator-token-0123456789";
    let (client, base) = stdio_with_approvals(&s, op_token, Client::default()).await;
    let call = tokio::spawn(async move {
        let r = client
            .call_tool(call(
                "writer",
                json!({"path": "queued.md", "content": "queued"}),
            ))
            .await;
        (client, r)
    });

    let http = reqwest::Client::new();
    // The agent's side has no token for this endpoint.
    let resp = http.get(&base).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    // The operator sees the request…
    let pending = loop {
        let body = http
            .get(&base)
            .bearer_auth(op_token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let list: Value = serde_json::from_str(&body).unwrap();
        if let Some(first) = list.as_array().and_then(|a| a.first()) {
            break first.clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(pending["tool"], "writer");
    assert_eq!(pending["action"], "fs.write");
    assert_eq!(pending["resource"], "workspace:queued.md");
    assert_eq!(pending["task"], "mcp-task");
    let digest = pending["digest"].as_str().unwrap();
    // Who answers goes into the trail as written: a name holding a
    // control or an invisible character is refused, nothing answered.
    for by in ["ops\u{1b}[2J", "ops\u{202e}sna"] {
        let body = json!({"approved": true, "by": by}).to_string();
        assert_eq!(answer(&base, op_token, digest, &body).await, 400, "{by:?}");
    }
    // …a wrong digest answers nothing, the right one approves.
    assert_eq!(
        answer(
            &base,
            op_token,
            &"0".repeat(64),
            r#"{"approved": true, "by": "ops"}"#
        )
        .await,
        404
    );
    assert_eq!(
        answer(
            &base,
            op_token,
            digest,
            r#"{"approved": true, "by": "ops"}"#
        )
        .await,
        200
    );
    let (client, r) = call.await.unwrap();
    let r = r.unwrap();
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    assert_eq!(
        std::fs::read_to_string(s.workspace.join("queued.md")).unwrap(),
        "queued"
    );
    client.cancel().await.unwrap();
    let trail = std::fs::read_to_string(s.dir.path().join("audit.jsonl")).unwrap();
    assert!(
        trail.contains("approved by ops (approvals endpoint)"),
        "{trail}"
    );
}

/// A client that can elicit may be the agent itself: when the operator
/// answers approvals (`--approvals`), the client is never asked, however
/// eagerly it would approve; the call waits for the operator, who denies.
/// Before, the client's elicitation replaced the operator's endpoint, and
/// an agent approved its own writes.
#[tokio::test]
async fn with_an_operators_endpoint_a_client_that_elicits_is_not_asked() {
    let s = setup();
    let op_token = "operator-token-0123456789";
    let agent = Client {
        approve: true,
        elicitation: true,
        ..Client::default()
    };
    let asked = agent.asked.clone();
    let (client, base) = stdio_with_approvals(&s, op_token, agent).await;
    let call = tokio::spawn(async move {
        let input = json!({"path": "self-approved.md", "content": "x"});
        let r = client.call_tool(call("writer", input)).await;
        (client, r)
    });
    let http = reqwest::Client::new();
    let started = std::time::Instant::now();
    let pending = loop {
        let body = http.get(&base).bearer_auth(op_token).send().await.unwrap();
        let list: Value = serde_json::from_str(&body.text().await.unwrap()).unwrap();
        if let Some(first) = list.as_array().and_then(|a| a.first()) {
            break first.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no approval reached the operator; the client was asked {:?}",
            asked.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let digest = pending["digest"].as_str().unwrap();
    assert_eq!(
        answer(
            &base,
            op_token,
            digest,
            r#"{"approved": false, "by": "ops"}"#
        )
        .await,
        200
    );
    let (client, r) = call.await.unwrap();
    let r = r.unwrap();
    assert_eq!(r.is_error, Some(true), "{}", text(&r));
    assert!(asked.lock().unwrap().is_empty(), "the client was asked");
    assert!(!s.workspace.join("self-approved.md").exists());
    client.cancel().await.unwrap();
}

/// `warden serve --http` with no `--approver`, under a pseudo-terminal
/// (util-linux `script`), run in the foreground or, by a shell with job
/// control, in the background (`warden serve … &`); and the screen, read
/// on a thread as it comes (a prompt ends no line).
struct Screen {
    pty: std::process::Child,
    typed: std::process::ChildStdin,
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    shown: String,
    /// The server's own command line names it: whatever happens, it goes
    /// with the test (it holds the test harness's output open).
    dir: String,
}

impl Screen {
    fn serve(s: &Setup, background: bool) -> Screen {
        let cmd = warden_serve(s, &["--http", "127.0.0.1:0"]);
        let mut line = std::iter::once(cmd.as_std().get_program())
            .chain(cmd.as_std().get_args())
            .map(|a| format!("'{}'", a.to_str().unwrap()))
            .collect::<Vec<_>>()
            .join(" ");
        if background {
            line = format!("bash -c \"set -m; {line} & wait\"");
        }
        let mut pty = std::process::Command::new("script")
            .args(["-q", "-e", "-c", &line, "/dev/null"])
            .env("WARDEN_STATE_DIR", s.dir.path().join("state"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("util-linux `script` runs the server under a pseudo-terminal");
        let typed = pty.stdin.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let mut screen = pty.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = std::io::Read::read(&mut screen, &mut buf) {
                let _ = tx.send(buf[..n].to_vec());
            }
        });
        Screen {
            pty,
            typed,
            rx,
            shown: String::new(),
            dir: s.dir.path().display().to_string(),
        }
    }

    /// What the terminal showed up to `want`, waiting for it.
    fn until(&mut self, want: &str) -> String {
        loop {
            if let Some(at) = self.shown.find(want) {
                let rest = self.shown.split_off(at + want.len());
                return std::mem::replace(&mut self.shown, rest);
            }
            let more = self
                .rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("the terminal never showed {want:?}: {}", self.shown));
            self.shown.push_str(&String::from_utf8_lossy(&more));
        }
    }

    /// The server's URL, once it says it serves.
    fn url(&mut self) -> String {
        self.until("warden: serving MCP at ");
        self.until("\n").trim().to_owned()
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = std::process::Command::new("pkill")
            .args(["-KILL", "-f", &self.dir])
            .status();
        let _ = self.pty.kill();
        let _ = self.pty.wait();
    }
}

/// An MCP client over HTTP at `url` that elicits and approves whatever it
/// is asked (an agent approving its own writes), and what it was asked.
async fn approving_agent(
    url: String,
) -> (RunningService<RoleClient, Client>, Arc<Mutex<Vec<String>>>) {
    let agent = Client {
        approve: true,
        elicitation: true,
        ..Client::default()
    };
    let asked = agent.asked.clone();
    let transport = rmcp::transport::StreamableHttpClientTransport::from_uri(url);
    (agent.serve(transport).await.unwrap(), asked)
}

/// From a shell, `warden serve --http` has a terminal on its stdin, and
/// `auto` asks the operator at that terminal, so an MCP client that elicits
/// (it may be the agent itself) is not asked. Before, only a named
/// `--approver` counted as the operator's, and the agent approved its own
/// write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_a_terminal_the_operator_answers_and_a_client_that_elicits_is_not_asked() {
    use std::io::Write;
    let s = setup();
    let mut screen = Screen::serve(&s, false);
    let url = screen.url();
    let (client, asked) = approving_agent(url).await;
    let call = tokio::spawn(async move {
        let input = json!({"path": "self-approved.md", "content": "x"});
        let r = client.call_tool(call("writer", input)).await;
        (client, r)
    });
    screen.until("approve? [y/N]");
    screen.typed.write_all(b"n\n").unwrap();
    let (client, r) = call.await.unwrap();
    let r = r.unwrap();
    assert_eq!(r.is_error, Some(true), "{}", text(&r));
    assert!(text(&r).contains("denied by terminal"), "{}", text(&r));
    assert!(asked.lock().unwrap().is_empty(), "the client was asked");
    assert!(!s.workspace.join("self-approved.md").exists());
    client.cancel().await.unwrap();
}

/// `warden serve --http … &` from a shell: the terminal is on its stdin,
/// but the kernel stops a job in the background that reads it (SIGTTIN)
/// until `fg`, and every call waiting on an approval waited with it. In
/// the background no person answers there: `auto` is as without a
/// terminal, and a client that elicits is asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_the_background_of_a_terminal_the_server_is_not_stopped_by_asking_it() {
    let s = setup();
    let mut screen = Screen::serve(&s, true);
    let said = screen.until("warden: serving MCP at ");
    assert!(
        said.contains("warden: in the background of its terminal, so no approval is asked there"),
        "{said}"
    );
    let url = screen.until("\n").trim().to_owned();
    let (client, asked) = approving_agent(url).await;
    let input = json!({"path": "asked.md", "content": "x"});
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        client.call_tool(call("writer", input)),
    )
    .await
    .expect("the call was never answered: the server was stopped at its terminal")
    .unwrap();
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    assert_eq!(asked.lock().unwrap().len(), 1, "the client was not asked");
    assert_eq!(
        std::fs::read_to_string(s.workspace.join("asked.md")).unwrap(),
        "x"
    );
    while let Ok(more) = screen.rx.try_recv() {
        screen.shown.push_str(&String::from_utf8_lossy(&more));
    }
    assert!(!screen.shown.contains("approve?"), "{}", screen.shown);
    client.cancel().await.unwrap();
}

/// One agent's slow calls took every place: every other agent's call was
/// answered "busy". An agent may hold three quarters of `--max-in-flight`
/// (by default), and another agent's call still runs.
#[tokio::test]
async fn over_http_one_agent_cannot_take_every_place() {
    let s = setup();
    let task = s.dir.path().join("task.toml");
    std::fs::write(&task, "task = \"t\"\n").unwrap();
    let mut args = vec!["--max-in-flight".to_owned(), "4".to_owned()];
    for (name, token) in [
        ("b", "token-b-0123456789abcdef"),
        ("c", "token-c-0123456789abcdef"),
    ] {
        std::fs::write(s.dir.path().join(name), token).unwrap();
        args.push("--client".into());
        args.push(format!(
            "{}={}",
            s.dir.path().join(name).display(),
            task.display()
        ));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (mut child, url) = http_server(&s, &args).await;
    let b = Arc::new(
        http_client(&url, Some("token-b-0123456789abcdef"))
            .await
            .unwrap(),
    );
    let c = http_client(&url, Some("token-c-0123456789abcdef"))
        .await
        .unwrap();
    let hogs: Vec<_> = (0..3)
        .map(|_| {
            let b = b.clone();
            tokio::spawn(async move { b.call_tool(call("hog", json!({"attack": "loop"}))).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = b
        .call_tool(call("echo", json!({"message": "x"})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    assert_eq!(
        text(&r),
        "busy: this agent has 3 calls running, as many as one agent may; retry later"
    );
    let r = c
        .call_tool(call("echo", json!({"message": "x"})))
        .await
        .unwrap();
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    for hog in hogs {
        assert!(text(&hog.await.unwrap().unwrap()).contains("deadline exceeded"));
    }
    // Its places are given back.
    let r = b
        .call_tool(call("echo", json!({"message": "x"})))
        .await
        .unwrap();
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    child.kill().await.unwrap();
}

#[tokio::test]
async fn over_http_each_token_selects_its_operator_chosen_grant_and_shutdown_drains() {
    let s = setup();
    let (a, b) = ("token-a-0123456789abcdef", "token-b-0123456789abcdef");
    std::fs::write(s.dir.path().join("a"), a).unwrap();
    std::fs::write(s.dir.path().join("b"), b).unwrap();
    let reader_task = s.dir.path().join("reader-task.toml");
    std::fs::write(
        &reader_task,
        format!(
            "task = \"reader-task\"\n[fs.workspace]\npath = \"{}\"\nrights = [\"read\"]\n",
            s.workspace.display()
        ),
    )
    .unwrap();
    let a_file = s.dir.path().join("a").display().to_string();
    let client_b = format!(
        "{}={}",
        s.dir.path().join("b").display(),
        reader_task.display()
    );
    let (child, url) = http_server(&s, &["--token-file", &a_file, "--client", &client_b]).await;

    let hints = |tools: &[rmcp::model::Tool], name: &str| {
        let a = tools
            .iter()
            .find(|t| t.name == name)
            .unwrap()
            .annotations
            .clone()
            .unwrap();
        (a.read_only_hint, a.destructive_hint)
    };
    let ca = http_client(&url, Some(a)).await.unwrap();
    let cb = http_client(&url, Some(b)).await.unwrap();
    let (ta, tb) = (
        ca.list_all_tools().await.unwrap(),
        cb.list_all_tools().await.unwrap(),
    );
    assert_eq!(hints(&ta, "remover"), (Some(false), Some(true)));
    assert_eq!(hints(&tb, "remover"), (Some(true), Some(false)));
    // B's grant holds no delete: the same call is denied for B only.
    let remove = |p: &str| call("remover", json!({"path": p}));
    std::fs::write(s.workspace.join("x.txt"), "x").unwrap();
    let r = cb.call_tool(remove("x.txt")).await.unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(
        text(&r).contains("grant for handle 'workspace' refused") || text(&r).contains("denied"),
        "{}",
        text(&r)
    );
    assert!(s.workspace.join("x.txt").exists());
    let r = ca.call_tool(remove("x.txt")).await.unwrap();
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    assert!(!s.workspace.join("x.txt").exists());
    let meta = |r: &CallToolResult| r.meta.as_ref().unwrap().0["warden"]["task"].clone();
    let r = cb.call_tool(call("echo", json!({}))).await.unwrap();
    assert_eq!(meta(&r), "reader-task");

    // SIGTERM while a call runs: the call still gets its answer, then the
    // server exits cleanly.
    let slow = tokio::spawn(async move {
        let started = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(20),
            ca.call_tool(call("hog", json!({"attack": "loop"}))),
        )
        .await
        .expect("the running call was answered before shutdown");
        (r, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut child = child;
    sigterm(&child);
    let (r, took) = slow.await.unwrap();
    let r = r.unwrap();
    assert!(
        text(&r).contains("deadline exceeded after 3s"),
        "{}",
        text(&r)
    );
    assert!(took >= Duration::from_secs(2), "{took:?}");
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    // The trail names each static token by its file, never as an identity,
    // and holds neither token.
    let trail = std::fs::read_to_string(s.dir.path().join("audit.jsonl")).unwrap();
    assert!(trail.contains("\"task\":\"reader-task\",\"agent\":\"static-token:b\""));
    assert!(trail.contains("\"agent\":\"static-token:a\""));
    assert!(!trail.contains(a) && !trail.contains(b));
}

fn sigterm(child: &tokio::process::Child) {
    let pid = child.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// The stdio loop over a pipe, driven line by line.
struct Lines {
    to: tokio::io::WriteHalf<tokio::io::DuplexStream>,
    from: tokio::io::Lines<tokio::io::BufReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>>,
}

impl Lines {
    async fn send(&mut self, line: &str) {
        use tokio::io::AsyncWriteExt;
        self.to.write_all(line.as_bytes()).await.unwrap();
        self.to.write_all(b"\n").await.unwrap();
    }

    async fn answer(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(10), self.from.next_line())
            .await
            .expect("no answer")
            .unwrap()
            .expect("stream ended");
        serde_json::from_str(&line).unwrap()
    }
}

fn stdio_session(
    mcp: WardenMcp,
    max_request: usize,
    stop: CancellationToken,
) -> (Lines, JoinHandle<std::io::Result<Served>>) {
    use tokio::io::AsyncBufReadExt;
    let (a, b) = tokio::io::duplex(1 << 20);
    let (read, write) = tokio::io::split(a);
    let served = tokio::spawn(stdio::serve_on(mcp, read, write, max_request, stop));
    let (from, to) = tokio::io::split(b);
    let lines = Lines {
        to,
        from: tokio::io::BufReader::new(from).lines(),
    };
    (lines, served)
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"lines","version":"1"}}}"#;

#[tokio::test]
async fn the_stdio_loop_answers_bad_lines_with_errors_and_keeps_serving() {
    let s = setup();
    let mcp = server(&s, MemorySink::new(), ServeOptions::default()).await;
    let (mut io, served) = stdio_session(mcp, 4096, CancellationToken::new());
    // An `initialize` rmcp refuses (no params) does not stall the loop.
    io.send(r#"{"jsonrpc":"2.0","id":"bad","method":"initialize"}"#)
        .await;
    let e = io.answer().await;
    assert_eq!(e["id"], "bad", "{e}");
    assert!(e["error"]["code"].is_i64(), "{e}");
    io.send(INITIALIZE).await;
    assert_eq!(io.answer().await["result"]["protocolVersion"], "2025-11-25");
    io.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
        .await;

    // Not JSON: a parse error, no id.
    io.send("{not json").await;
    let e = io.answer().await;
    assert_eq!(e["error"]["code"], -32700, "{e}");
    assert!(e.get("id").is_none_or(Value::is_null), "{e}");
    // A blank line is nothing at all; tools/call params that do not parse
    // name what is wrong.
    io.send("").await;
    io.send(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"nam":"echo"}}"#)
        .await;
    let e = io.answer().await;
    assert_eq!(
        (e["id"].clone(), e["error"]["code"].clone()),
        (json!(1), json!(-32602))
    );
    let message = e["error"]["message"].as_str().unwrap();
    assert!(message.contains("missing field `name`"), "{message}");
    // A line over the cap: refused without being buffered.
    let big = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": "m".repeat(10_000)}}});
    io.send(&big.to_string()).await;
    let e = io.answer().await;
    assert_eq!(e["error"]["code"], -32600, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("request too large"),
        "{e}"
    );
    // Unknown methods are rmcp's to answer; calls still work.
    io.send(r#"{"jsonrpc":"2.0","id":3,"method":"no/such"}"#)
        .await;
    assert_eq!(io.answer().await["error"]["code"], -32601);
    io.send(r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"echo","arguments":{"message":"fine"}}}"#)
        .await;
    let r = io.answer().await;
    assert_eq!(r["id"], 4);
    assert_eq!(r["result"]["structuredContent"], json!({"message": "fine"}));
    // The legacy shape for a 2025-11-25 session, as rmcp gives it.
    assert!(r["result"].get("resultType").is_none(), "{r}");

    drop(io);
    let served = served.await.unwrap().unwrap();
    assert_eq!(served.calls, 1);
    assert_eq!(served.refused, 3);
}

/// `warden serve --stdio` with piped stdin and stdout, its `initialize`
/// answered; what it writes next is left unread.
async fn stdio_server_initialized(
    s: &Setup,
) -> (tokio::process::Child, tokio::process::ChildStdin) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut child = warden_serve(s, &["--stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    stdin
        .write_all(format!("{INITIALIZE}\n").as_bytes())
        .await
        .unwrap();
    // Read byte by byte up to the newline: nothing after the answer is
    // taken off the pipe.
    let mut stdout = tokio::io::BufReader::with_capacity(1, stdout);
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(60), stdout.read_line(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.contains("protocolVersion"), "{answer}");
    child.stdout = Some(stdout.into_inner());
    (child, stdin)
}

#[tokio::test]
async fn warden_serve_stdio_exits_on_sigterm_while_its_client_stays() {
    let s = setup();
    let (mut child, stdin) = stdio_server_initialized(&s).await;
    sigterm(&child);
    // stdin is still open: the signal alone ends the server, cleanly.
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("warden serve --stdio ignored SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    drop(stdin);
}

/// A client that stopped reading while an answer waits to be written: told
/// to stop (SIGTERM), the server gives it up once its output has taken no
/// bytes for 3 s, and exits cleanly, every call that ran ended on the trail.
/// Before, the loop waited in the answer's write for good, and ignored the
/// signal.
#[tokio::test]
async fn warden_serve_stdio_exits_on_sigterm_while_its_client_stopped_reading() {
    use tokio::io::AsyncWriteExt;
    let s = setup();
    let (mut child, mut stdin) = stdio_server_initialized(&s).await;
    // Each answer holds its 100 KB message twice: the first fills the pipe,
    // and the client reads nothing more. Its requests are written from a
    // task: the server stops reading them while it waits on the client.
    let writer = tokio::spawn(async move {
        let big = "x".repeat(100_000);
        let _ = stdin
            .write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n")
            .await;
        for id in 1..=3 {
            let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": "echo", "arguments": {"message": big}}});
            let _ = stdin.write_all(format!("{call}\n").as_bytes()).await;
        }
        std::future::pending::<()>().await;
    });
    // The first call ran (its end is on the trail) and its answer waits.
    let trail = s.dir.path().join("audit.jsonl");
    let waited = Instant::now();
    while !std::fs::read_to_string(&trail).is_ok_and(|t| t.contains("invocation.end")) {
        assert!(waited.elapsed() < Duration::from_secs(30), "no call ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let told = Instant::now();
    sigterm(&child);
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("warden serve --stdio ignored SIGTERM while its client did not read")
        .unwrap();
    let took = told.elapsed();
    assert_eq!(status.code(), Some(0));
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "stopped {took:?} after SIGTERM (the client is given 3 s)"
    );
    writer.abort();
    let trail = std::fs::read_to_string(&trail).unwrap();
    let count = |event: &str| {
        trail
            .lines()
            .filter(|l| serde_json::from_str::<Value>(l).unwrap()["event"] == event)
            .count()
    };
    assert!(count("invocation.start") >= 1, "{trail}");
    assert_eq!(
        count("invocation.start"),
        count("invocation.end"),
        "{trail}"
    );
}

#[tokio::test]
async fn the_stdio_loop_cancels_calls_when_the_client_goes_and_finishes_them_on_shutdown() {
    let s = setup();
    const SPIN: &str = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"hog","arguments":{"attack":"loop"}}}"#;

    // The client closes its end mid-call: the call is cancelled.
    let audit = MemorySink::new();
    let mcp = server(&s, audit.clone(), ServeOptions::default()).await;
    let (mut io, served) = stdio_session(mcp, 1 << 20, CancellationToken::new());
    io.send(INITIALIZE).await;
    io.answer().await;
    io.send(SPIN).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let gone = Instant::now();
    drop(io);
    served.await.unwrap().unwrap();
    assert!(
        gone.elapsed() < Duration::from_secs(1),
        "{:?}",
        gone.elapsed()
    );
    let end = audit
        .records()
        .into_iter()
        .find(|r| r.event == Event::InvocationEnd)
        .unwrap();
    assert_eq!(end.outcome.as_deref(), Some("cancelled"));

    // Told to stop (SIGTERM): the running call finishes (here at its 3 s
    // deadline) and is answered before the loop returns.
    let stop = CancellationToken::new();
    let mcp = server(&s, MemorySink::new(), ServeOptions::default()).await;
    let (mut io, served) = stdio_session(mcp, 1 << 20, stop.clone());
    io.send(INITIALIZE).await;
    io.answer().await;
    io.send(SPIN).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.cancel();
    let r = io.answer().await;
    assert_eq!(r["id"], 7);
    assert!(
        r["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("deadline exceeded"),
        "{r}"
    );
    assert_eq!(served.await.unwrap().unwrap().calls, 1);
}

// ---- One bad tool does not stop the server (issue #11, item 12) ----

/// A manifest with `echo`, a tool whose `describe` traps and a file that
/// is not a component; `only_bad` keeps just the two that cannot be served.
fn bad_tools(dir: &std::path::Path, only_bad: bool) -> PathBuf {
    let junk = dir.join("junk.wasm");
    std::fs::write(&junk, b"not a component").unwrap();
    let mut text = format!(
        "[tools.bad]\ncomponent = \"{}\"\n\n[tools.junk]\ncomponent = \"{}\"\n",
        crate::BAD_DESCRIBE,
        junk.display()
    );
    if !only_bad {
        text.push_str(&format!(
            "\n[tools.echo]\ncomponent = \"{}\"\n",
            crate::ECHO
        ));
    }
    let path = dir.join(if only_bad { "bad.toml" } else { "mixed.toml" });
    std::fs::write(&path, text).unwrap();
    path
}

fn runtime_for(manifest: &std::path::Path) -> Runtime {
    Runtime::builder()
        .manifest(Manifest::load(manifest).unwrap())
        .audit(MemorySink::new())
        .cache_dir(crate::common::shared_cache())
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_tool_that_cannot_be_described_is_left_out_and_the_rest_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = bad_tools(dir.path(), false);
    let grant = Grants::One(Arc::new(Grant::new("t")));
    let mcp = WardenMcp::new(runtime_for(&manifest), grant, ServeOptions::default())
        .await
        .unwrap();
    let unavailable = mcp.unavailable().clone();
    assert_eq!(
        unavailable.keys().map(String::as_str).collect::<Vec<_>>(),
        ["bad", "junk"]
    );
    assert!(
        unavailable["bad"].starts_with("tool trapped: "),
        "{}",
        unavailable["bad"]
    );
    assert!(
        unavailable["junk"].contains("junk.wasm") && unavailable["junk"].contains("not a"),
        "{}",
        unavailable["junk"]
    );
    let client = connect(mcp, Client::default()).await;
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names, ["echo"]);
    let r = client
        .call_tool(call("echo", json!({"message": "served"})))
        .await
        .unwrap();
    assert_eq!(r.structured_content, Some(json!({"message": "served"})));
    // The one left out cannot be called.
    let r = client.call_tool(call("bad", json!({}))).await;
    let text = format!("{r:?}");
    assert!(text.contains("unknown tool 'bad'"), "{text}");
    client.cancel().await.unwrap();

    // None at all can be served: an error naming each.
    let manifest = bad_tools(dir.path(), true);
    let grant = Grants::One(Arc::new(Grant::new("t")));
    let err = WardenMcp::new(runtime_for(&manifest), grant, ServeOptions::default())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("no tool can be served ('bad': tool trapped: "),
        "{err}"
    );
    assert!(err.contains("; 'junk': "), "{err}");
}

#[tokio::test]
async fn warden_serve_names_the_tools_it_leaves_out_and_serves_the_rest() {
    let s = setup();
    let manifest = bad_tools(s.dir.path(), false);
    let log = s.dir.path().join("serve-stderr.txt");
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_warden"));
    cmd.arg("--cache-dir")
        .arg(crate::common::shared_cache())
        .args(["serve", "--stdio", "--manifest"])
        .arg(&manifest)
        .arg("--grants")
        .arg(&s.grants)
        .arg("--audit")
        .arg(s.dir.path().join("audit.jsonl"))
        .env("WARDEN_STATE_DIR", s.dir.path().join("state"));
    let (transport, _) = rmcp::transport::TokioChildProcess::builder(cmd)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let client = Client::default().serve(transport).await.unwrap();
    let tools = client.list_all_tools().await.unwrap();
    assert_eq!(tools.len(), 1);
    assert_eq!(tools[0].name, "echo");
    client.cancel().await.unwrap();
    let err = std::fs::read_to_string(&log).unwrap();
    let left_out: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("warden: not serving tool "))
        .collect();
    assert_eq!(left_out.len(), 2, "{err}");
    assert!(
        left_out[0].starts_with("warden: not serving tool 'bad': tool trapped: "),
        "{err}"
    );
    assert!(
        left_out[1].starts_with("warden: not serving tool 'junk': "),
        "{err}"
    );

    // Nothing to serve: exit 2 with one line naming each tool.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("--cache-dir")
        .arg(crate::common::shared_cache())
        .args(["serve", "--stdio", "--manifest"])
        .arg(bad_tools(s.dir.path(), true))
        .arg("--grants")
        .arg(&s.grants)
        .arg("--audit")
        .arg(s.dir.path().join("audit.jsonl"))
        .env("WARDEN_STATE_DIR", s.dir.path().join("state"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: no tool can be served ('bad': tool trapped: "),
        "{err}"
    );
}

/// A JSON array reads, by position, as the fields a derived parser wants:
/// in a session, the short path ran `["2.0","tools/call",8,{…}]` as a
/// call that rmcp refuses. Only an object is the short path's.
#[tokio::test]
async fn over_http_an_array_is_not_a_call() {
    let s = setup();
    let (mut child, url) = http_server(&s, &[]).await;
    let (c, _) = Bare::open(&url, "2025-06-18", json!({})).await;
    let array =
        json!(["2.0", "tools/call", 8, {"name": "echo", "arguments": {"message": "by position"}}]);
    let (status, _, body) = c.post(array).await;
    assert!(!body.contains("by position"), "{status} {body}");
    assert!((400..500).contains(&status), "{status} {body}");
    // An object whose params are an array, the same.
    let params = json!([null, "echo", {"message": "by position"}, null, null]);
    let (status, _, body) = c
        .post(json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": params}))
        .await;
    assert!(!body.contains("by position"), "{status} {body}");
    let (status, _, body) = c.call(2, "echo", json!({"message": "after"})).await;
    assert_eq!(status, 200);
    assert!(body.contains("after"), "{body}");
    child.kill().await.unwrap();
}

/// rmcp routes a session's answers by request id: a request under the id
/// of one it was still answering took that one's route, and the first
/// one's entry was never freed (with its id, of any length): a client
/// reusing ids grew the server without end. Such a request is refused,
/// whichever would answer it, as is an id past 256 bytes; once the first
/// is answered, its id is free.
#[tokio::test]
async fn over_http_the_id_of_a_request_rmcp_answers_is_in_use_until_it_has() {
    let s = setup();
    let (mut child, url) = http_server(&s, &[]).await;
    let (c, _) = Bare::open(&url, "2025-06-18", json!({})).await;
    // A POST of `body` in the session with `accept`, on `version`.
    let with_accept = |accept: &str, version: &str, body: &Value| {
        (c.http.post(&url))
            .header("content-type", "application/json")
            .header("accept", accept)
            .header("mcp-protocol-version", version)
            .header("mcp-session-id", c.session.as_deref().unwrap())
            .body(body.to_string())
    };
    // An `Accept` with parameters: rmcp answers (not the short path).
    let to_rmcp = |id: u64| {
        let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "hog", "arguments": {"attack": "loop"}}});
        let req = with_accept("application/json, text/event-stream;q=1", &c.version, &call);
        tokio::spawn(async move { req.send().await.unwrap().text().await.unwrap() })
    };
    let slow = to_rmcp(40);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for again in [
        json!({"jsonrpc": "2.0", "id": 40, "method": "ping"}),
        json!({"jsonrpc": "2.0", "id": 40, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": "m"}}}),
    ] {
        let (status, _, body) = c.post(again).await;
        assert_eq!(status, 200, "{body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["error"]["message"], ID_IN_USE, "{body}");
    }
    let long = "i".repeat(257);
    let (_, _, body) = c
        .post(json!({"jsonrpc": "2.0", "id": long, "method": "ping"}))
        .await;
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        answer["error"]["message"],
        "request id longer than 256 bytes (expected a number or a short string)",
        "{body}"
    );
    // The call is answered on its own stream; then its id is free.
    let body = slow.await.unwrap();
    assert!(
        body.contains(r#""id":40"#) && body.contains("deadline"),
        "{body}"
    );
    let (_, _, body) = c
        .post(json!({"jsonrpc": "2.0", "id": 40, "method": "ping"}))
        .await;
    assert!(body.contains(r#""result":{}"#), "{body}");
    // A request the client cancels is answered no more: its id is free at
    // once (kept, a client's timeouts would use up the session's ids).
    let slow = to_rmcp(41);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, _, body) = c
        .post(json!({"jsonrpc": "2.0", "id": 41, "method": "ping"}))
        .await;
    assert!(body.contains(ID_IN_USE), "{body}");
    // A cancellation rmcp refuses (an `Accept` without event streams)
    // does not reach it: the id stays in use.
    let cancel =
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 41}});
    let refused = with_accept("application/json", &c.version, &cancel)
        .send()
        .await
        .unwrap();
    assert!(!refused.status().is_success(), "{}", refused.status());
    // Nor does one rmcp answers 202 on the 2026-07-28 protocol without
    // passing it to the session.
    let current = with_accept("application/json, text/event-stream", "2026-07-28", &cancel)
        .header("mcp-method", "notifications/cancelled")
        .send()
        .await
        .unwrap();
    assert!(current.status().is_success(), "{}", current.status());
    let (_, _, body) = c
        .post(json!({"jsonrpc": "2.0", "id": 41, "method": "ping"}))
        .await;
    assert!(body.contains(ID_IN_USE), "{body}");
    let (status, _, _) = c.post(cancel).await;
    assert_eq!(status, 202);
    let (_, _, body) = c
        .post(json!({"jsonrpc": "2.0", "id": 41, "method": "ping"}))
        .await;
    assert!(body.contains(r#""result":{}"#), "{body}");
    let _ = slow.await;
    child.kill().await.unwrap();
}

/// A bare streamable HTTP client (what a stdlib client sends): each POST
/// with `Accept: application/json, text/event-stream`, the session once
/// `initialize` has given one.
struct Bare {
    http: reqwest::Client,
    url: String,
    session: Option<String>,
    /// The `MCP-Protocol-Version` header: the version the session settled.
    version: String,
}

impl Bare {
    /// Status, content type and body of one POST of `body`.
    /// One POST of `body`, as sent.
    async fn send(&self, body: Value) -> reqwest::Response {
        let mut req = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", &self.version);
        if let Some(s) = &self.session {
            req = req.header("mcp-session-id", s);
        }
        req.body(body.to_string()).send().await.unwrap()
    }

    async fn post(&self, body: Value) -> (u16, String, String) {
        let resp = self.send(body).await;
        let kind = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (resp.status().as_u16(), kind, resp.text().await.unwrap())
    }

    /// A client of `url` with the session an `initialize` asking for
    /// `version` with `capabilities` opened, and the version it settled.
    async fn open(url: &str, version: &str, capabilities: Value) -> (Bare, String) {
        let http = reqwest::Client::new();
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": version, "capabilities": capabilities, "clientInfo": {"name": "bare", "version": "1"}}});
        let resp = http
            .post(url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(init.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let session = resp.headers()["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let body = resp.text().await.unwrap();
        let settled = body
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l.trim_start_matches("data: ")).ok())
            .find_map(|m| m["result"]["protocolVersion"].as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("no initialize result in {body}"));
        let c = Bare {
            http,
            url: url.to_owned(),
            session: Some(session),
            version: settled.clone(),
        };
        let (status, _, _) = c
            .post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        assert_eq!(status, 202);
        (c, settled)
    }

    async fn call(&self, id: u64, tool: &str, args: Value) -> (u16, String, String) {
        self.post(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": args}}))
            .await
    }
}

#[tokio::test]
async fn over_http_a_sessions_calls_are_answered_as_json_cancelled_and_end_with_it() {
    let s = setup();
    let (mut child, url) = http_server(&s, &[]).await;
    let (c, settled) = Bare::open(&url, "2025-06-18", json!({})).await;
    assert_eq!(settled, "2025-06-18");

    // A plain call: one JSON answer, shaped as rmcp shapes it.
    let (status, kind, body) = c.call(1, "echo", json!({"message": "hi"})).await;
    assert_eq!((status, kind.as_str()), (200, "application/json"), "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["id"], 1);
    assert_eq!(answer["result"]["structuredContent"]["message"], "hi");
    assert!(answer["result"].get("resultType").is_none(), "{answer}");
    // Errors keep their JSON-RPC shape.
    let (_, _, body) = c.call(2, "nope", json!({})).await;
    assert!(body.contains("unknown tool 'nope'"), "{body}");
    // tools/call without a name: invalid params (-32602), as over stdio,
    // not "method not found".
    let (status, _, body) = c
        .post(json!({"jsonrpc": "2.0", "id": 21, "method": "tools/call", "params": {"arguments": {}}}))
        .await;
    assert_eq!(status, 200);
    let answer = body
        .lines()
        .find_map(|l| serde_json::from_str::<Value>(l.trim_start_matches("data: ")).ok())
        .unwrap_or(Value::Null);
    assert_eq!(answer["error"]["code"], -32602, "{body}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing field `name`"),
        "{body}"
    );
    // Input the tool's schema refuses: a tool error (isError) naming where,
    // so a model can correct it (MCP: input validation is a tool error).
    let (_, _, body) = c.call(22, "echo", json!({"message": 5})).await;
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["result"]["isError"], true, "{body}");
    let text = answer["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.starts_with(
            "invalid input: input does not match the tool's input schema: at /message: "
        ),
        "{text}"
    );

    // A call with a progress token that ends before it has progress to
    // tell: one JSON answer.
    let (status, kind, body) = c
        .post(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": "p"}, "_meta": {"progressToken": "t"}}}))
        .await;
    assert_eq!((status, kind.as_str()), (200, "application/json"), "{body}");
    assert!(body.contains(r#"\"message\":\"p\""#), "{body}");
    // One that runs past the progress interval (1 s): an event stream of
    // its progress (with its token), then its answer, then the end.
    let (status, kind, body) = c
        .post(json!({"jsonrpc": "2.0", "id": 31, "method": "tools/call", "params": {"name": "hog", "arguments": {"attack": "loop"}, "_meta": {"progressToken": "slow"}}}))
        .await;
    assert_eq!(status, 200);
    assert!(kind.starts_with("text/event-stream"), "{kind}");
    let events: Vec<Value> = body
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect();
    let (last, notes) = events.split_last().unwrap();
    assert!(!notes.is_empty(), "{body}");
    for note in notes {
        assert_eq!(note["method"], "notifications/progress", "{body}");
        assert_eq!(note["params"]["progressToken"], "slow", "{body}");
    }
    assert_eq!(last["id"], 31, "{body}");
    assert_eq!(last["result"]["isError"], true, "{body}");
    // A progress token over 1 KiB (echoed in every note) gets no notes:
    // the same call answers with one JSON message.
    let long = "t".repeat(1025);
    let (status, kind, body) = c
        .post(json!({"jsonrpc": "2.0", "id": 32, "method": "tools/call", "params": {"name": "hog", "arguments": {"attack": "loop"}, "_meta": {"progressToken": long}}}))
        .await;
    assert_eq!((status, kind.as_str()), (200, "application/json"), "{body}");
    assert!(!body.contains("notifications/progress"), "{body}");

    // notifications/cancelled stops a call running on the short path.
    let running = {
        let c = Bare {
            http: c.http.clone(),
            url: url.clone(),
            session: c.session.clone(),
            version: c.version.clone(),
        };
        tokio::spawn(async move {
            let started = Instant::now();
            let r = c.call(4, "hog", json!({"attack": "loop"})).await;
            (r, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Another call under the id of one still running is refused: it would
    // take over the id, and the cancellation below would miss the first.
    let (status, _, body) = c.call(4, "echo", json!({"message": "again"})).await;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["id"], 4, "{body}");
    assert_eq!(answer["error"]["code"], -32600, "{body}");
    assert_eq!(answer["error"]["message"], ID_IN_USE);
    let (status, _, _) = c
        .post(json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 4}}))
        .await;
    assert_eq!(status, 202);
    let ((status, _, body), took) = running.await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("cancelled by the client"), "{body}");
    assert!(took < Duration::from_millis(2500), "{took:?}");
    // Answered, its id is free again (the call's end told the session
    // before its answer went out): a call under it runs.
    let (status, _, body) = c.call(4, "echo", json!({"message": "after"})).await;
    assert_eq!(status, 200);
    assert!(body.contains(r#"\"message\":\"after\""#), "{body}");

    // An unknown session, a closed one: 404.
    let stranger = Bare {
        http: c.http.clone(),
        url: url.clone(),
        session: Some("no-such-session".into()),
        version: c.version.clone(),
    };
    assert_eq!(stranger.call(5, "echo", json!({})).await.0, 404);
    let resp = c
        .http
        .delete(&url)
        .header("mcp-session-id", c.session.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(c.call(6, "echo", json!({})).await.0, 404);
    // DELETE of a terminated or unknown session: 404 (not 202 again).
    for id in [c.session.as_deref().unwrap(), "no-such-session"] {
        let resp = c
            .http
            .delete(&url)
            .header("mcp-session-id", id)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 404, "{id}");
    }
    let _ = child.start_kill();
}

/// `initialize` asking for the current protocol, which has no handshake
/// (rmcp's own client asks for it by default): the session settles on the
/// newest version with one, and its calls are taken on the short path in
/// that version's shape. A client that elicits has its approvals asked as
/// that version asks them, by an `elicitation/create` request: its calls go
/// to rmcp, which can send one.
#[tokio::test]
async fn over_http_a_session_asked_for_the_current_protocol_is_served_in_the_one_it_settled() {
    let s = setup();
    let (mut child, url) = http_server(&s, &[]).await;
    let (c, settled) = Bare::open(&url, "2026-07-28", json!({})).await;
    assert_eq!(settled, "2025-11-25");
    let (status, kind, body) = c.call(1, "echo", json!({"message": "hi"})).await;
    assert_eq!((status, kind.as_str()), (200, "application/json"), "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["result"]["structuredContent"]["message"], "hi");
    assert!(answer["result"].get("resultType").is_none(), "{answer}");
    // After a further `initialize` in the session (rmcp answers it, and
    // what its handler sees may change), rmcp takes the session's calls.
    let again = json!({"jsonrpc": "2.0", "id": 9, "method": "initialize", "params": {"protocolVersion": "2026-07-28", "capabilities": {}, "clientInfo": {"name": "bare", "version": "2"}}});
    let _ = c.post(again).await;
    let (status, kind, body) = c.call(10, "echo", json!({"message": "hi"})).await;
    assert_eq!(status, 200, "{body}");
    assert!(kind.starts_with("text/event-stream"), "{kind}");

    // A write that needs approval, from a client that elicits: rmcp's event
    // stream, carrying its elicitation request (unanswered here).
    let (c, settled) = Bare::open(&url, "2026-07-28", json!({"elicitation": {}})).await;
    assert_eq!(settled, "2025-11-25");
    let resp = c
        .send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "writer", "arguments": {"path": "x.md", "content": "x"}}}))
        .await;
    assert_eq!(resp.status(), 200);
    let kind = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(kind.starts_with("text/event-stream"), "{kind}");
    let mut resp = resp;
    let mut seen = String::new();
    while !seen.contains("elicitation/create") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
            .await
            .expect("the elicitation request within 10 s")
            .unwrap()
            .expect("the stream ended before the elicitation request");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        seen.contains("approve fs.write on workspace:x.md"),
        "{seen}"
    );
    assert!(!s.workspace.join("x.md").exists());
    let _ = child.kill().await;
}

/// A client that drops a call's event stream (after its first progress
/// note) cancels the call, as one that drops a JSON answer does: the trail
/// ends it `cancelled`, well before its 3 s limit.
#[tokio::test]
async fn over_http_a_dropped_event_stream_cancels_its_call() {
    let s = setup();
    let (mut child, url) = http_server(&s, &[]).await;
    let (c, _) = Bare::open(&url, "2025-06-18", json!({})).await;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "hog", "arguments": {"attack": "loop"}, "_meta": {"progressToken": 1}}});
    let mut resp = c.send(body).await;
    let kind = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(kind.starts_with("text/event-stream"), "{kind}");
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("notifications/progress"));
    drop(resp);
    tokio::time::sleep(Duration::from_millis(300)).await;
    sigterm(&child);
    let _ = child.wait().await;
    let trail = std::fs::read_to_string(s.dir.path().join("audit.jsonl")).unwrap();
    let end: Value = trail
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|r| r["event"] == "invocation.end" && r["tool"] == "hog")
        .unwrap_or_else(|| panic!("no end of the call: {trail}"));
    assert_eq!(end["outcome"], "cancelled", "{end}");
    assert!(end["duration_us"].as_u64().unwrap() < 2_500_000, "{end}");
}

/// One `tools/call` of echo without a session on the current protocol,
/// with `headers` over the usual ones and `meta` as its `_meta`: status,
/// content type and body.
async fn stateless_echo(url: &str, headers: &[(&str, &str)], meta: Value) -> (u16, String, String) {
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": "echo", "arguments": {"message": "hi"}, "_meta": meta}});
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.body(body.to_string()).send().await.unwrap();
    let kind = resp.headers()["content-type"].to_str().unwrap().to_owned();
    (resp.status().as_u16(), kind, resp.text().await.unwrap())
}

/// Calls without a session on the 2026-07-28 protocol are answered on the
/// short path (one JSON answer, in that protocol's shape) only when rmcp's
/// checks of their headers and `_meta` would all pass; every other one is
/// left to rmcp, which refuses it as before.
#[tokio::test]
async fn over_http_calls_on_the_current_protocol_without_a_session_are_checked_as_rmcp_checks_them()
{
    let s = setup();
    let (mut child, url) = http_server(&s, &[]).await;
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "bare", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    let standard = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "echo"),
    ];
    let (status, kind, body) = stateless_echo(&url, &standard, meta.clone()).await;
    assert_eq!((status, kind.as_str()), (200, "application/json"), "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["id"], 7);
    assert_eq!(answer["result"]["resultType"], "complete", "{answer}");
    assert_eq!(answer["result"]["structuredContent"]["message"], "hi");

    // What rmcp refuses, refused as it refuses it: never run.
    let with = |k: &'static str, v: &'static str| {
        let mut h: Vec<(&str, &str)> = standard.iter().filter(|(n, _)| *n != k).copied().collect();
        if !v.is_empty() {
            h.push((k, v));
        }
        h
    };
    let refused = [
        (
            with("mcp-name", "reader"),
            meta.clone(),
            -32020,
            "does not match body value",
        ),
        (
            with("mcp-method", ""),
            meta.clone(),
            -32020,
            "missing required Mcp-Method",
        ),
        (
            with("mcp-name", ""),
            meta.clone(),
            -32020,
            "missing required Mcp-Name",
        ),
        (
            with("mcp-protocol-version", "2025-11-25"),
            meta.clone(),
            -32020,
            "does not match request _meta protocolVersion",
        ),
        (
            standard.to_vec(),
            json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28"}),
            -32602,
            "io.modelcontextprotocol/clientCapabilities",
        ),
    ];
    for (headers, meta, code, why) in refused {
        let (status, _, body) = stateless_echo(&url, &headers, meta).await;
        assert_eq!(status, 400, "{headers:?}: {body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["error"]["code"], code, "{body}");
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(why),
            "{body}"
        );
    }
    // A request that also has a `result`: rmcp reads no request in it.
    let body = json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call", "result": {}, "params": {
        "name": "echo", "arguments": {"message": "hi"}, "_meta": meta}});
    let mut req = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    for (k, v) in standard {
        req = req.header(k, v);
    }
    let resp = req.body(body.to_string()).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 415);
    // A name given twice: refused too.
    let mut twice = standard.to_vec();
    twice.push(("mcp-name", "echo"));
    let (status, _, body) = stateless_echo(&url, &twice, meta.clone()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("duplicate Mcp-Name"), "{body}");
    // A name in Base64 is rmcp's to decode: answered by rmcp, on its event
    // stream.
    let (status, kind, body) =
        stateless_echo(&url, &with("mcp-name", "=?base64?ZWNobw==?="), meta.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert!(kind.starts_with("text/event-stream"), "{kind}");
    assert!(body.contains(r#"\"message\":\"hi\""#), "{body}");
    // The trail holds the two calls that ran, and only them.
    sigterm(&child);
    let _ = child.wait().await;
    let trail = std::fs::read_to_string(s.dir.path().join("audit.jsonl")).unwrap_or_default();
    let starts = trail
        .lines()
        .filter(|l| l.contains("\"invocation.start\""))
        .count();
    assert_eq!(starts, 2, "{trail}");
}

#[tokio::test]
async fn over_http_a_session_id_that_is_not_text_is_refused() {
    // rmcp would read it as no session and open one the sweep never sees.
    let s = setup();
    let (mut child, url) = http_server(&s, &[]).await;
    let resp = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header(
            "mcp-session-id",
            reqwest::header::HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        )
        .body(
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"}}})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert!(resp.headers().get("mcp-session-id").is_none());
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("Mcp-Session-Id must be visible ASCII"),
        "{body}"
    );
    child.kill().await.unwrap();
}

/// `--allowed-host` (a Kubernetes Service's name, an ingress's host): that
/// `Host` is answered; any other non-loopback one is still refused.
#[tokio::test]
async fn over_http_an_allowed_host_is_answered_and_others_are_refused() {
    let s = setup();
    let (mut child, url) = http_server(&s, &["--allowed-host", "Warden.Internal:8765"]).await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2026-07-28", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}).to_string();
    let (status, _) = post(&url, &[("host", "evil.example:8765")], init.clone()).await;
    assert_eq!(status, 403);
    let (status, body) = post(&url, &[("host", "warden.internal:8765")], init).await;
    assert_ne!(status, 403, "{body}");
    assert!(status < 300, "{status}: {body}");
    let _ = child.kill().await;
}

/// A failure of the host's own (here, a secret whose source file is gone)
/// reaches the agent as that, without the host's paths: the detail is for
/// the operator's log. The agent's own mistakes are still named to it.
#[tokio::test]
async fn a_host_failure_reaches_the_agent_without_the_hosts_details() {
    let s = setup();
    let root = s.dir.path().canonicalize().unwrap();
    let manifest = root.join("keyed.toml");
    let gone = root.join("operator-only/deploy.key");
    std::fs::write(
        &manifest,
        format!(
            "[tools.echo]\ncomponent = \"{}\"\n[[tools.echo.secrets]]\nname = \"key\"\nsource = \"file:{}\"\n",
            crate::ECHO,
            gone.display()
        ),
    )
    .unwrap();
    let runtime = Runtime::builder()
        .manifest(Manifest::load(&manifest).unwrap())
        .audit(MemorySink::new())
        .cache_dir(crate::common::shared_cache())
        .build()
        .unwrap();
    let grant = Grant::new("t").secret("key");
    let mcp = WardenMcp::new(
        runtime,
        Grants::One(Arc::new(grant)),
        ServeOptions::default(),
    )
    .await
    .unwrap();
    let client = connect(mcp, Client::default()).await;
    let r = client
        .call_tool(call("echo", json!({"message": "hi"})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    assert_eq!(
        text(&r),
        "host error: the call could not be run; the server's log says why"
    );
    // Its own mistake, its input, is named to it.
    let r = client
        .call_tool(call("echo", json!({"message": 7})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(text(&r).starts_with("invalid input"), "{}", text(&r));
}
