//! The gate: every host call of every capability reaches its operation in
//! one order — decision record, approval request, approval answer, the
//! operation, the outcome record — and a denial never reaches the operation.
//!
//! Each capability is driven through an approval (required by the manifest,
//! or by a Cedar policy for identity tokens), with an approver that looks,
//! at the moment it is asked, whether the operation has already happened.

use crate::common::http_server;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use warden::approval::{ApprovalAnswer, ApprovalRequest, Approver};
use warden::audit::{Event, MemorySink, Record};
use warden::{Grant, Manifest, Rights, Runtime};

/// Answers every request with `approve`, noting whether the operation had
/// already happened when it was asked.
struct Watcher {
    approve: bool,
    happened: Box<dyn Fn() -> bool + Send + Sync>,
    seen: Mutex<Vec<(ApprovalRequest, bool)>>,
    /// Questions being answered now, and the most at once.
    open: AtomicUsize,
    most: AtomicUsize,
}

#[async_trait::async_trait]
impl Approver for Watcher {
    async fn ask(&self, r: &ApprovalRequest) -> Option<ApprovalAnswer> {
        self.seen
            .lock()
            .unwrap()
            .push((r.clone(), (self.happened)()));
        // A person takes a moment: questions asked meanwhile overlap.
        let now = self.open.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        self.open.fetch_sub(1, Ordering::SeqCst);
        Some(ApprovalAnswer {
            digest: r.digest.clone(),
            approved: self.approve,
            by: "watcher".into(),
        })
    }
}

struct Site {
    dir: tempfile::TempDir,
    ws: PathBuf,
    port: u16,
    /// Requests the loopback server has received.
    hits: Arc<AtomicUsize>,
    manifest: Manifest,
    /// The requests the approver was asked in the last run, whole.
    asked: Mutex<Vec<ApprovalRequest>>,
    /// The most questions open at once in the last run.
    most_at_once: AtomicUsize,
}

const SCRIPT: &str = "#!/bin/sh\necho shipped > \"$1\"\n";
const SECRET_VALUE: &str = "gate-secret-value-1234";

async fn site() -> Site {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let port = http_server(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
        ("200 OK".into(), String::new(), b"ok".to_vec())
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let ws = root.join("ws");
    std::fs::create_dir_all(ws.join("dist")).unwrap();
    std::fs::write(ws.join("a.txt"), "before").unwrap();
    std::fs::write(ws.join("dist/app.txt"), "release").unwrap();
    std::fs::write(root.join("key.txt"), SECRET_VALUE).unwrap();
    let script = root.join("ship.sh");
    std::fs::write(&script, SCRIPT).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let policies = root.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("tokens.cedar"),
        "@id(\"tokens-need-approval\")\n@approval(\"required\")\nforbid (principal, action == Warden::Action::\"identity::token\", resource);\n",
    )
    .unwrap();
    let text = format!(
        r#"
policies = ["{policies}"]

[tools.fs]
component = "{probe}"
[[tools.fs.fs]]
handle = "workspace"
within = "{ws}"
rights = ["read", "write"]
approval = ["write"]

[tools.secret]
component = "{secret_probe}"
[[tools.secret.secrets]]
name = "key"
source = "file:key.txt"
reveal = true
approval = "required"

[tools.http]
component = "{egress_probe}"
[[tools.http.http]]
scheme = "http"
host = "127.0.0.1"
port = {port}
methods = ["GET", "POST", "DELETE"]
approval = "required"

[tools.wasi-http]
component = "{wasi_http_probe}"
[[tools.wasi-http.http]]
scheme = "http"
host = "127.0.0.1"
port = {port}
methods = ["GET", "POST", "DELETE"]
approval = "required"

[tools.wasi-http-open]
component = "{wasi_http_probe}"
[[tools.wasi-http-open.http]]
scheme = "http"
host = "127.0.0.1"
port = {port}

[tools.deploy]
component = "{deploy_artifact}"
[[tools.deploy.fs]]
handle = "workspace"
within = "{ws}"
rights = ["read"]
[[tools.deploy.deploy]]
name = "staging"
rights = ["deploy"]
backend = "exec"
program = "{script}"
args = ["{marker}"]
approval = "required"

[tools.identity]
component = "{call_api}"
token-audiences = ["http://127.0.0.1:{port}"]
[[tools.identity.http]]
scheme = "http"
host = "127.0.0.1"
port = {port}
"#,
        policies = policies.display(),
        probe = crate::FS_PROBE,
        secret_probe = crate::SECRET_PROBE,
        egress_probe = crate::EGRESS_PROBE,
        wasi_http_probe = crate::WASI_HTTP_PROBE,
        deploy_artifact = crate::DEPLOY_ARTIFACT,
        call_api = crate::CALL_API,
        ws = ws.display(),
        script = script.display(),
        marker = root.join("shipped").display(),
    );
    let path = root.join("manifest.toml");
    std::fs::write(&path, text).unwrap();
    let manifest = Manifest::load(&path).unwrap();
    Site {
        dir,
        ws,
        port,
        hits,
        manifest,
        asked: Mutex::default(),
        most_at_once: AtomicUsize::new(0),
    }
}

impl Site {
    fn root(&self) -> PathBuf {
        self.dir.path().canonicalize().unwrap()
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/x", self.port)
    }

    /// Runs `tool` with `input` under an approver answering `approve`;
    /// returns the output, the invocation's records, and what the approver
    /// saw (action, whether the operation had happened).
    async fn run(
        &self,
        tool: &str,
        grant: Grant,
        input: Value,
        approve: bool,
        happened: impl Fn() -> bool + Send + Sync + 'static,
    ) -> (Value, Vec<Record>, Vec<(String, bool)>) {
        let watcher = Arc::new(Watcher {
            approve,
            happened: Box::new(happened),
            seen: Mutex::default(),
            open: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
        });
        let audit = MemorySink::new();
        let runtime = Runtime::builder()
            .manifest(self.manifest.clone())
            .audit(audit.clone())
            .approver(watcher.clone())
            .cache_dir(crate::common::shared_cache())
            .build()
            .unwrap();
        let run = runtime
            .invoke(tool, &grant.label("gate"), &input.to_string())
            .await
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        let out = match run.output {
            Ok(o) => serde_json::from_str(&o).unwrap(),
            Err(e) => json!({"tool-error": e.to_string()}),
        };
        let (asked, seen) = watcher
            .seen
            .lock()
            .unwrap()
            .iter()
            .map(|(r, happened)| (r.clone(), (r.action.clone(), *happened)))
            .unzip();
        *self.asked.lock().unwrap() = asked;
        self.most_at_once
            .store(watcher.most.load(Ordering::SeqCst), Ordering::SeqCst);
        (out, audit.invocation(&run.id), seen)
    }
}

/// The records of a host call, in order, as `event capability action
/// [decision]`; the invocation's own records and secret issue/expiry are
/// left out.
fn steps(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .filter(|r| {
            !matches!(
                r.event,
                Event::InvocationStart
                    | Event::InvocationEnd
                    | Event::SecretIssued
                    | Event::SecretExpired
                    | Event::Log
            )
        })
        .map(|r| {
            let event = serde_json::to_value(r.event).unwrap();
            let mut s = format!(
                "{} {} {}",
                event.as_str().unwrap(),
                r.capability.as_deref().unwrap_or("-"),
                r.action.as_deref().unwrap_or("-")
            );
            if let Some(d) = &r.decision {
                s.push(' ');
                s.push_str(d);
            }
            s
        })
        .collect()
}

/// What an approved call records, and what a refused one records.
fn expect(decision: &str, approval: &str, outcome: Option<&str>) -> (Vec<String>, Vec<String>) {
    let asked = [
        format!("{decision} allow"),
        format!("approval.requested approval {approval}"),
    ];
    let mut approved = asked.to_vec();
    approved.push(format!("decision approval {approval} allow"));
    approved.extend(outcome.map(str::to_owned));
    let mut refused = asked.to_vec();
    refused.push(format!("decision approval {approval} deny"));
    (approved, refused)
}

fn contents(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[tokio::test]
async fn fs_calls_pass_the_gate_in_order() {
    let site = site().await;
    let (approved, refused) = expect("decision fs write", "fs.write", Some("outcome fs write"));
    let grant = || Grant::new("t").fs("workspace", &site.ws, Rights::READ | Rights::WRITE);
    let input = json!({"op": "write", "path": "a.txt", "contents": "after"});
    let a = site.ws.join("a.txt");
    let watched = a.clone();
    let happened = move || contents(&watched) == "after";

    let (out, records, seen) = site
        .run("fs", grant(), input.clone(), false, happened.clone())
        .await;
    assert_eq!(out["error"]["code"], "denied", "{out}");
    assert_eq!(steps(&records), refused);
    assert_eq!(seen, [("fs.write".to_owned(), false)]);
    assert_eq!(contents(&a), "before", "a refused write reached the disk");

    let (out, records, seen) = site.run("fs", grant(), input, true, happened).await;
    assert!(out.get("error").is_none(), "{out}");
    assert_eq!(steps(&records), approved);
    assert_eq!(
        seen,
        [("fs.write".to_owned(), false)],
        "written before approval"
    );
    assert_eq!(contents(&a), "after");
    assert_eq!(
        records.iter().rev().nth(1).unwrap().outcome.as_deref(),
        Some("ok")
    );
}

#[tokio::test]
async fn secret_calls_pass_the_gate_in_order() {
    let site = site().await;
    let grant = || Grant::new("t").secret("key");
    let input = json!({"name": "key"});
    let (_, refused) = expect("decision secret reveal", "secret.reveal", None);

    let (out, records, seen) = site
        .run("secret", grant(), input.clone(), false, || false)
        .await;
    assert_eq!(out["status"], "denied", "{out}");
    assert_eq!(
        out["fingerprint"], "",
        "a refused reveal handed the value over"
    );
    // `get` needs no approval: its success is its allow decision.
    let mut expected = vec!["decision secret get allow".to_owned()];
    expected.extend(refused);
    assert_eq!(steps(&records)[..expected.len()], expected[..]);
    assert_eq!(
        steps(&records).len(),
        expected.len(),
        "{:?}",
        steps(&records)
    );
    assert_eq!(seen.len(), 1);

    let (out, records, _) = site.run("secret", grant(), input, true, || false).await;
    assert_eq!(out["status"], "ok", "{out}");
    assert_ne!(out["fingerprint"], "");
    let steps = steps(&records);
    let (approved, _) = expect(
        "decision secret reveal",
        "secret.reveal",
        Some("outcome secret reveal"),
    );
    assert_eq!(steps[1..], approved[..], "{steps:?}");
    let trail = serde_json::to_string(&records).unwrap();
    assert!(!trail.contains(SECRET_VALUE), "the value reached the trail");
}

/// `tool` (`http` on `warden:tool/http`, `wasi-http` on `wasi:http`, both
/// under a rule that requires approval): refused, nothing is sent; approved,
/// the request is sent after the answer, from the checked address.
async fn http_calls_pass_the_gate_in_order(tool: &str) {
    let site = site().await;
    let (approved, refused) = expect("decision http GET", "http.send", Some("egress http GET"));
    let grant = || Grant::new("t").http(&format!("http://127.0.0.1:{}/", site.port), None);
    let input = json!({"url": site.url()});
    let hits = site.hits.clone();
    let happened = move || hits.load(Ordering::SeqCst) > 0;

    let (out, records, seen) = site
        .run(tool, grant(), input.clone(), false, happened.clone())
        .await;
    let code = out["error"]["code"].as_str().unwrap_or_default();
    assert!(
        code == "denied" || code.contains("HttpRequestDenied"),
        "{tool}: {out}"
    );
    assert_eq!(steps(&records), refused);
    assert_eq!(
        site.hits.load(Ordering::SeqCst),
        0,
        "a refused request was sent"
    );
    assert_eq!(seen, [("http.send".to_owned(), false)]);

    let (out, records, seen) = site.run(tool, grant(), input, true, happened).await;
    assert_eq!(out["ok"]["status"], 200, "{tool}: {out}");
    assert_eq!(steps(&records), approved);
    assert_eq!(
        seen,
        [("http.send".to_owned(), false)],
        "sent before approval"
    );
    assert_eq!(site.hits.load(Ordering::SeqCst), 1);
    // The decision names the checked address the request then used.
    let address = format!("127.0.0.1:{}", site.port);
    assert_eq!(records[1].address.as_deref(), Some(address.as_str()));
}

#[tokio::test]
async fn warden_http_calls_pass_the_gate_in_order() {
    http_calls_pass_the_gate_in_order("http").await;
}

/// A `wasi:http` body and trailers are read whole before the request is
/// decided, so its approval binds what is sent, as on `warden:tool/http`.
#[tokio::test]
async fn wasi_http_calls_pass_the_gate_in_order() {
    http_calls_pass_the_gate_in_order("wasi-http").await;

    // Without approval: the decision (with the checked address), the
    // request, then its egress record.
    let site = site().await;
    let grant = Grant::new("t").http(&format!("http://127.0.0.1:{}/", site.port), None);
    let hits = site.hits.clone();
    let happened = move || hits.load(Ordering::SeqCst) > 0;
    let input = json!({"url": site.url()});
    let (out, records, seen) = site
        .run("wasi-http-open", grant, input, true, happened)
        .await;
    assert_eq!(out["ok"]["status"], 200, "{out}");
    assert_eq!(
        steps(&records),
        ["decision http GET allow", "egress http GET"]
    );
    let address = format!("127.0.0.1:{}", site.port);
    assert_eq!(records[1].address.as_deref(), Some(address.as_str()));
    assert!(seen.is_empty());
    assert_eq!(site.hits.load(Ordering::SeqCst), 1);
}

/// A tool's requests in flight together need approval together: the
/// person is asked one question at a time (a line typed at a terminal then
/// answers the question shown), and each approved request is sent.
#[tokio::test]
async fn an_invocation_asks_one_approval_at_a_time() {
    let site = site().await;
    let grant = Grant::new("t").http(&format!("http://127.0.0.1:{}/", site.port), None);
    let input = json!({"url": site.url(), "parallel": 3});
    let (out, _, seen) = site.run("wasi-http", grant, input, true, || false).await;
    assert_eq!(
        out["started"]["codes"],
        json!(["answered", "answered", "answered"]),
        "{out}"
    );
    assert_eq!(seen.len(), 3);
    assert_eq!(
        site.most_at_once.load(Ordering::SeqCst),
        1,
        "questions overlapped"
    );
    assert_eq!(site.hits.load(Ordering::SeqCst), 3);
}

/// What an HTTP approval binds, as the gate computes it: the body's
/// SHA-256 and that of every header, name and value length-prefixed.
fn http_approval_args(headers: &[(&str, &str)], body: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (name, value) in headers {
        for part in [name, value] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
    }
    format!(
        "body sha256 {}; headers sha256 {}",
        hex::encode(Sha256::digest(body)),
        hex::encode(h.finalize())
    )
}

/// The approver of an HTTP request sees every header the tool set (one
/// that changes what the request means, `X-HTTP-Method-Override`, above
/// all) and the body, escaped; the digest it answers binds both, so a
/// request whose headers or body differ is not the one approved.
#[tokio::test]
async fn an_http_approval_shows_and_binds_every_header_and_the_body_on_both_paths() {
    let site = site().await;
    let grant = || Grant::new("t").http(&format!("http://127.0.0.1:{}/", site.port), None);
    let headers = [
        ("x-http-method-override", "DELETE"),
        ("content-type", "application/json"),
    ];
    let body = "{\"release\":\"v2\"}\u{1b}[2J";
    for tool in ["http", "wasi-http"] {
        let input = json!({"method": "POST", "url": site.url(), "headers": headers, "body": body});
        let (out, _, _) = site.run(tool, grant(), input, false, || false).await;
        assert!(out.get("ok").is_none(), "{tool}: {out}");
        let asked = site.asked.lock().unwrap().clone();
        assert_eq!(asked.len(), 1, "{tool}: {asked:?} {out}");
        let r = &asked[0];
        assert_eq!(
            r.summary,
            format!(
                "POST (asking for DELETE) {} (20 bytes of body); headers: \
                 x-http-method-override: DELETE, content-type: application/json; \
                 contents: \"{{\"release\":\"v2\"}}\\u{{1b}}[2J\"",
                site.url()
            ),
            "{tool}"
        );
        let expected = json!([
            "warden-approval/1",
            r.identity,
            r.task,
            r.invocation,
            0,
            "http.send",
            r.resource,
            http_approval_args(&headers, body),
        ]);
        assert_eq!(
            r.digest,
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(expected.to_string())),
            "{tool}: the digest does not bind the headers and body as sent"
        );
    }
    assert_eq!(
        site.hits.load(Ordering::SeqCst),
        0,
        "a refused request was sent"
    );
}

/// A URL long enough to fill what an approver is shown does not push the
/// rest out: it is cut on its own (the resource line shows it whole), and
/// the body's size, the headers and the contents follow.
#[tokio::test]
async fn a_long_url_does_not_hide_the_rest_of_an_http_approval() {
    let site = site().await;
    let grant = || Grant::new("t").http(&format!("http://127.0.0.1:{}/", site.port), None);
    let url = format!("{}?q={}", site.url(), "a".repeat(3000));
    let headers = [("x-http-method-override", "DELETE")];
    for tool in ["http", "wasi-http"] {
        site.asked.lock().unwrap().clear();
        let input = json!({"method": "POST", "url": url, "headers": headers, "body": "go"});
        let (out, _, _) = site.run(tool, grant(), input, false, || false).await;
        assert!(out.get("ok").is_none(), "{tool}: {out}");
        let asked = site.asked.lock().unwrap().clone();
        assert_eq!(asked.len(), 1, "{tool}: {asked:?} {out}");
        assert_eq!(
            asked[0].summary,
            format!(
                "POST (asking for DELETE) {}…[{} bytes] (2 bytes of body); headers: \
                 x-http-method-override: DELETE; contents: \"go\"",
                &url[..512],
                url.len()
            ),
            "{tool}"
        );
        assert_eq!(asked[0].resource, url, "{tool}");
    }
}

#[tokio::test]
async fn deploys_pass_the_gate_in_order() {
    let site = site().await;
    let (approved, refused) = expect(
        "decision deploy run",
        "deploy.run",
        Some("deploy deploy exec"),
    );
    let grant = || {
        Grant::new("t")
            .fs("workspace", &site.ws, Rights::READ)
            .deploy("staging")
    };
    let input = json!({"target": "staging", "artifact": "dist/app.txt"});
    let marker = site.root().join("shipped");
    let watched = marker.clone();
    let happened = move || watched.exists();

    let (out, records, seen) = site
        .run("deploy", grant(), input.clone(), false, happened.clone())
        .await;
    assert!(
        out["tool-error"]
            .as_str()
            .unwrap()
            .contains("denied by watcher"),
        "{out}"
    );
    assert_eq!(steps(&records), refused);
    assert!(!marker.exists(), "a refused deployment ran");
    assert_eq!(seen, [("deploy.run".to_owned(), false)]);

    let (out, records, seen) = site.run("deploy", grant(), input, true, happened).await;
    assert_eq!(out["status"], 0, "{out}");
    assert_eq!(steps(&records), approved);
    assert_eq!(
        seen,
        [("deploy.run".to_owned(), false)],
        "deployed before approval"
    );
    assert_eq!(contents(&marker), "shipped\n");
}

#[tokio::test]
async fn identity_tokens_pass_the_gate_in_order() {
    let site = site().await;
    let (approved, refused) = expect(
        "decision identity token",
        "identity.token",
        Some("outcome identity token"),
    );
    let grant = || Grant::new("t").http(&format!("http://127.0.0.1:{}/", site.port), None);
    let audience = format!("http://127.0.0.1:{}", site.port);
    let input = json!({"url": site.url(), "audience": audience});

    let (out, records, seen) = site
        .run("identity", grant(), input.clone(), false, || false)
        .await;
    assert!(out.to_string().contains("denied by watcher"), "{out}");
    assert_eq!(steps(&records), refused);
    assert_eq!(
        site.hits.load(Ordering::SeqCst),
        0,
        "a refused token was used"
    );
    assert_eq!(seen.len(), 1);
    // The policy asked for the approval, and the decision names it.
    assert_eq!(
        records[1].policies.as_deref(),
        Some(&["tokens-need-approval".to_owned()][..])
    );

    let (out, records, _) = site.run("identity", grant(), input, true, || false).await;
    assert!(out.get("tool-error").is_none(), "{out}");
    let steps = steps(&records);
    assert_eq!(steps[..approved.len()], approved[..], "{steps:?}");
    // Then the call the token was minted for.
    assert_eq!(steps[approved.len()], "decision http GET allow");
}
