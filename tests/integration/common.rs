//! A scratch world for tests: a workspace handle, an outside directory it
//! must never reach, symlinks in and out, and a manifest of the test tools.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use warden::audit::{Event, MemorySink, Record};
use warden::{Grant, Manifest, Rights, Runtime};

pub struct World {
    pub dir: tempfile::TempDir,
    pub workspace: PathBuf,
    pub outside: PathBuf,
    pub manifest: PathBuf,
    pub audit: Arc<MemorySink>,
    pub runtime: Runtime,
}

/// One compile cache for the whole test process, so each tool compiles once.
pub fn shared_cache() -> &'static Path {
    static CACHE: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

/// A runtime for `manifest` (written to `dir/manifest.toml`) with an
/// in-memory trail and the shared compile cache.
pub fn runtime_for(dir: &Path, manifest: &str) -> (Runtime, Arc<MemorySink>) {
    let path = dir.join("manifest.toml");
    std::fs::write(&path, manifest).unwrap();
    let audit = MemorySink::new();
    let runtime = Runtime::builder()
        .manifest(Manifest::load(&path).unwrap())
        .audit(audit.clone())
        .cache_dir(shared_cache())
        .build()
        .unwrap();
    (runtime, audit)
}

/// Runs the ignored test `test` (`module::name`) alone in a process of its
/// own, with `env` set, and returns `field` of what it printed: each field is
/// printed as `field=value|`, found anywhere in a line (libtest may print
/// the test's name on the same line). Fails if the child failed.
pub fn child_field(test: &str, env: &[(&str, String)], field: &str) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            test,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = format!("{field}=");
    text.lines()
        .find_map(|l| l.split_once(&key).map(|(_, v)| v))
        .and_then(|v| v.split_once('|').map(|(v, _)| v.to_owned()))
        .unwrap_or_else(|| panic!("no {field}= in {text}"))
}

pub const SECRET: &str = "top secret, outside the handle";

/// The manifest for [`World`]; `{ws}` is the workspace directory.
pub fn manifest_text(ws: &Path) -> String {
    let ws = ws.display();
    format!(
        r#"
[tools.probe]
component = "{probe}"
[[tools.probe.fs]]
handle = "workspace"
within = "{ws}"
rights = ["read", "write", "delete"]

[tools.reader]
component = "{probe}"
[[tools.reader.fs]]
handle = "workspace"
within = "{ws}"
rights = ["read"]

[tools.hog]
component = "{hog}"
timeout = "1s"
memory = "32MiB"
max-output = "64KiB"

[tools.echo]
component = "{echo}"

[tools.read-files]
component = "{read_files}"
[[tools.read-files.fs]]
handle = "workspace"
within = "{ws}"
rights = ["read"]

[tools.search-text]
component = "{search_text}"
[[tools.search-text.fs]]
handle = "workspace"
within = "{ws}"
rights = ["read"]

[tools.write-file]
component = "{write_file}"
[[tools.write-file.fs]]
handle = "workspace"
within = "{ws}"
rights = ["read", "write"]

[tools.remove-path]
component = "{remove_path}"
[[tools.remove-path.fs]]
handle = "workspace"
within = "{ws}"
rights = ["read", "write", "delete"]
"#,
        probe = crate::FS_PROBE,
        hog = crate::HOG,
        echo = crate::ECHO,
        read_files = crate::READ_FILES,
        search_text = crate::SEARCH_TEXT,
        write_file = crate::WRITE_FILE,
        remove_path = crate::REMOVE_PATH,
    )
}

impl World {
    pub fn new() -> World {
        Self::with(|b| b)
    }

    pub fn with(configure: impl FnOnce(warden::RuntimeBuilder) -> warden::RuntimeBuilder) -> World {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let workspace = root.join("workspace");
        let outside = root.join("outside");
        for d in [
            &workspace,
            &outside,
            &workspace.join("sub"),
            &workspace.join("empty"),
        ] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(workspace.join("a.txt"), "alpha").unwrap();
        std::fs::write(workspace.join("sub/b.txt"), "beta").unwrap();
        std::fs::write(outside.join("secret.txt"), SECRET).unwrap();
        std::os::unix::fs::symlink(outside.join("secret.txt"), workspace.join("link-out")).unwrap();
        std::os::unix::fs::symlink("../outside/secret.txt", workspace.join("rel-link-out"))
            .unwrap();
        std::os::unix::fs::symlink(&outside, workspace.join("dir-out")).unwrap();
        std::os::unix::fs::symlink("a.txt", workspace.join("link-in")).unwrap();
        let manifest = root.join("manifest.toml");
        std::fs::write(&manifest, manifest_text(&workspace)).unwrap();
        let audit = MemorySink::new();
        let runtime = configure(
            Runtime::builder()
                .manifest(Manifest::load(&manifest).unwrap())
                .audit(audit.clone())
                .cache_dir(shared_cache())
                .max_concurrent_invocations(32),
        )
        .build()
        .unwrap();
        World {
            dir,
            workspace,
            outside,
            manifest,
            audit,
            runtime,
        }
    }

    pub fn grant(&self, rights: Rights) -> Grant {
        Grant::new("test-task").fs("workspace", &self.workspace, rights)
    }

    /// Runs the fs-probe tool with one operation; returns its report and the
    /// invocation id.
    pub async fn probe(&self, rights: Rights, op: Value) -> (Value, String) {
        let run = self
            .runtime
            .invoke("probe", &self.grant(rights), &op.to_string())
            .await
            .unwrap_or_else(|e| panic!("probe {op} failed to run: {e}"));
        let out = run
            .output
            .unwrap_or_else(|e| panic!("probe {op} returned a tool error: {e}"));
        (serde_json::from_str(&out).unwrap(), run.id)
    }

    /// The decision records of one invocation.
    pub fn decisions(&self, invocation: &str) -> Vec<Record> {
        self.audit
            .invocation(invocation)
            .into_iter()
            .filter(|r| r.event == Event::Decision)
            .collect()
    }
}

/// The error code of a probe report, or `None` when it succeeded.
pub fn code(report: &Value) -> Option<&str> {
    report.get("error").map(|e| e["code"].as_str().unwrap())
}

pub fn message(report: &Value) -> &str {
    report["error"]["message"].as_str().unwrap_or("")
}

/// One request as a [`http_server`] saw it.
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    /// The request line and headers.
    pub head: String,
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// A header's value (name matched case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The `Authorization: Bearer` token, or "" without one.
    pub fn bearer(&self) -> String {
        self.header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default()
            .to_owned()
    }
}

/// A test's answer: status line (e.g. `200 OK`), extra header lines (each
/// ending in CRLF), body.
pub type HttpAnswer = (String, String, Vec<u8>);

/// A loopback HTTP/1.1 server on 127.0.0.1 for tests: one request per
/// connection, its body read by `Content-Length`, answered by `answer`.
pub async fn http_server(
    answer: impl Fn(HttpRequest) -> HttpAnswer + Send + Sync + 'static,
) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 16 << 10];
                let (head, body) = loop {
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        let length = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.trim()
                                    .eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + length {
                            break (head, buf[end + 4..end + 4 + length].to_vec());
                        }
                    }
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let mut first = head.lines().next().unwrap_or("").split(' ');
                let (method, path) = (
                    first.next().unwrap_or("").to_owned(),
                    first.next().unwrap_or("").to_owned(),
                );
                let (status, extra, body) = answer(HttpRequest {
                    method,
                    path,
                    head,
                    body,
                });
                let mut resp = format!(
                    "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                resp.extend_from_slice(&body);
                let _ = sock.write_all(&resp).await;
            });
        }
    });
    port
}

/// A Python with `module` importable: `$WARDEN_PYTHON` (then it must have
/// it: CI sets it), else the CI venv's, else `python3`. `None` (the test
/// says it skipped) when none has it and CI did not ask for one.
pub fn python_with(module: &str) -> Option<std::path::PathBuf> {
    let required = std::env::var_os("WARDEN_PYTHON").map(std::path::PathBuf::from);
    let venv =
        std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/warden-ci-venv/bin/python"));
    let candidates: Vec<std::path::PathBuf> = match &required {
        Some(p) => vec![p.clone()],
        None => venv
            .into_iter()
            .chain([std::path::PathBuf::from("python3")])
            .collect(),
    };
    for python in &candidates {
        let ok = std::process::Command::new(python)
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(python.clone());
        }
    }
    let reason = format!(
        "no python with the {module} package among {}",
        candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(required.is_none(), "WARDEN_PYTHON is set: {reason}");
    println!("skipped: {reason} (CI sets WARDEN_PYTHON)");
    None
}

/// One stateless `tools/call` of `tool` with `params` (name included) on
/// the 2026-07-28 protocol, POSTed to `url` with `bearer` if given: the
/// JSON-RPC answer, from a JSON body or the event stream's message.
pub async fn post_call(url: &str, bearer: Option<&str>, tool: &str, params: Value) -> Value {
    let body =
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params});
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", tool);
    if let Some(token) = bearer {
        req = req.bearer_auth(token);
    }
    let text = req
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let json = text
        .lines()
        .find_map(|l| l.strip_prefix("data: ").filter(|d| d.starts_with('{')))
        .unwrap_or(&text);
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// A shared task-history store for tests: every task starts from `load`,
/// and what each invocation saves is kept, in order.
#[derive(Default)]
pub struct KeptHistory {
    pub load: warden::policy::TaskHistory,
    pub saved: std::sync::Mutex<Vec<warden::policy::TaskHistory>>,
}

#[async_trait::async_trait]
impl warden::policy::HistoryStore for KeptHistory {
    async fn load(&self, _: &str) -> Result<warden::policy::TaskHistory, String> {
        Ok(self.load.clone())
    }
    async fn save(&self, _: &str, added: &warden::policy::TaskHistory) -> Result<(), String> {
        self.saved.lock().unwrap().push(added.clone());
        Ok(())
    }
}

/// A runtime of the manifest at `path` whose task histories are `kept`.
pub fn runtime_with_history(path: &Path, kept: Arc<KeptHistory>) -> Runtime {
    Runtime::builder()
        .manifest(Manifest::load(path).unwrap())
        .audit(MemorySink::new())
        .task_history(kept)
        .cache_dir(shared_cache())
        .build()
        .unwrap()
}

/// Reads a started server's stderr until a line starts with `prefix` (what
/// it prints once listening); the rest of that line, and what it said
/// before. The lines after are read and dropped (a full pipe would stall
/// it). Panics if it exits or says nothing of the kind within 60 s.
pub async fn said_until(child: &mut tokio::process::Child, prefix: &str) -> (String, Vec<String>) {
    use tokio::io::AsyncBufReadExt;
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let mut said = Vec::new();
    let rest = loop {
        let line = tokio::time::timeout(std::time::Duration::from_secs(60), lines.next_line())
            .await
            .expect("server did not start")
            .unwrap()
            .unwrap_or_else(|| panic!("server exited: {said:?}"));
        if let Some(rest) = line.strip_prefix(prefix) {
            break rest.to_owned();
        }
        said.push(line);
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (rest, said)
}
