//! Runtime policy: the three example Cedar policies shipped in
//! `examples/policies/`, run end to end through the tools they govern. Each
//! denies (or asks approval for) what it should, allows the rest, and names
//! itself in the audit record.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use warden::approval::{ApprovalAnswer, ApprovalRequest, Approver, DenyAll};
use warden::audit::{Event, MemorySink, Record};
use warden::{Grant, Manifest, Rights, Runtime};

const TOKEN: &str = "policy-token-0d9e8f7a6b";

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policies")
}

/// A loopback server answering 200 to everything; counts requests.
async fn server() -> (u16, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let count = hits.clone();
    let port = crate::common::http_server(move |_| {
        count.fetch_add(1, Ordering::SeqCst);
        ("200 OK".into(), String::new(), b"ok".to_vec())
    })
    .await;
    (port, hits)
}

/// Approves everything and keeps the requests.
#[derive(Default)]
struct Yes(Mutex<Vec<ApprovalRequest>>);

#[async_trait::async_trait]
impl Approver for Yes {
    async fn ask(&self, r: &ApprovalRequest) -> Option<ApprovalAnswer> {
        self.0.lock().unwrap().push(r.clone());
        Some(ApprovalAnswer {
            digest: r.digest.clone(),
            approved: true,
            by: "test".into(),
        })
    }
}

struct Setup {
    manifest: PathBuf,
    _dir: tempfile::TempDir,
    workspace: PathBuf,
    audit: Arc<MemorySink>,
    runtime: Runtime,
    /// (port, hits) of the secret's own API and of another host.
    api: (u16, Arc<AtomicUsize>),
    other: (u16, Arc<AtomicUsize>),
}

async fn setup(approver: Arc<dyn Approver>) -> Setup {
    setup_with(approver, None).await
}

/// [`setup`], its runtime sharing task histories through `history`.
async fn setup_with(
    approver: Arc<dyn Approver>,
    history: Option<Arc<dyn warden::policy::HistoryStore>>,
) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let ws = root.join("workspace");
    std::fs::create_dir_all(ws.join(".github/workflows")).unwrap();
    std::fs::create_dir_all(ws.join("docs")).unwrap();
    std::fs::write(ws.join("build.txt"), "artifact v1").unwrap();
    // A link inside the handle into .github/: must not dodge the path rule.
    std::os::unix::fs::symlink(".github", ws.join("docs-link")).unwrap();
    std::fs::write(root.join("token.txt"), TOKEN).unwrap();
    let api = server().await;
    let other = server().await;
    let text = format!(
        r#"
policies = ["{policies}"]

[tools.write-file]
component = "{write_file}"
[[tools.write-file.fs]]
handle = "workspace"
within = "{ws}"
rights = ["read", "write"]

[tools.deployer]
component = "{deploy}"
[[tools.deployer.fs]]
handle = "workspace"
within = "{ws}"
rights = ["read"]
[[tools.deployer.deploy]]
name = "production"
approval = "none"
rights = ["deploy"]
backend = "exec"
program = "/bin/echo"
args = ["deployed", "{{artifact}}"]
labels = ["production"]
[[tools.deployer.deploy]]
name = "staging"
approval = "none"
rights = ["deploy"]
backend = "exec"
program = "/bin/echo"
args = ["deployed", "{{artifact}}"]

[tools.probe]
component = "{probe}"
[[tools.probe.http]]
scheme = "http"
host = "127.0.0.1"
port = {api}
[[tools.probe.http]]
scheme = "http"
host = "127.0.0.1"
port = {other}
[[tools.probe.secrets]]
name = "api"
source = "file:token.txt"
reveal = true
approval = "none"
send-to = ["http://127.0.0.1:{api}"]

[tools.gated]
component = "{probe}"
[[tools.gated.http]]
scheme = "http"
host = "127.0.0.1"
port = {other}
approval = "required"

[tools.std]
component = "{std}"
[[tools.std.http]]
scheme = "http"
host = "127.0.0.1"
port = {other}
"#,
        policies = examples().display(),
        write_file = crate::WRITE_FILE,
        deploy = crate::DEPLOY_ARTIFACT,
        probe = crate::EGRESS_PROBE,
        std = crate::WASI_HTTP_PROBE,
        ws = ws.display(),
        api = api.0,
        other = other.0,
    );
    let path = root.join("manifest.toml");
    std::fs::write(&path, text).unwrap();
    let audit = MemorySink::new();
    let mut builder = Runtime::builder()
        .manifest(Manifest::load(&path).unwrap())
        .audit(audit.clone())
        .approver(approver)
        .cache_dir(crate::common::shared_cache());
    if let Some(h) = history {
        builder = builder.task_history(h);
    }
    let runtime = builder.build().unwrap();
    Setup {
        manifest: path,
        _dir: dir,
        workspace: ws,
        audit,
        runtime,
        api,
        other,
    }
}

impl Setup {
    /// Runs a tool; its output (or tool error as `{"error": message}`) and
    /// the invocation's audit records.
    async fn run(&self, tool: &str, grant: &Grant, input: Value) -> (Value, Vec<Record>) {
        let inv = self
            .runtime
            .invoke(tool, grant, &input.to_string())
            .await
            .unwrap_or_else(|e| panic!("{tool} {input}: {e}"));
        let out = match inv.output {
            Ok(o) => serde_json::from_str(&o).unwrap(),
            Err(e) => json!({ "error": e.message }),
        };
        (out, self.audit.invocation(&inv.id))
    }

    fn url(&self, port: u16) -> String {
        format!("http://127.0.0.1:{port}/x")
    }
}

/// The decision records naming runtime policies.
fn by_policy(records: &[Record]) -> Vec<(String, Vec<String>)> {
    records
        .iter()
        .filter(|r| r.event == Event::Decision)
        .filter_map(|r| {
            r.policies
                .clone()
                .map(|p| (r.decision.clone().unwrap_or_default(), p))
        })
        .collect()
}

#[tokio::test]
async fn production_deploys_need_a_release_task() {
    let s = setup(Arc::new(DenyAll)).await;
    let grant = |task: &str| {
        Grant::new(task)
            .fs("workspace", &s.workspace, Rights::READ)
            .deploy("production")
            .deploy("staging")
    };
    let input = |target: &str| json!({"target": target, "artifact": "build.txt"});

    let (out, records) = s
        .run("deployer", &grant("fix-bug"), input("production"))
        .await;
    let msg = out["error"].as_str().unwrap_or_default();
    assert!(
        msg.contains("deploying to a production target needs a task labelled 'release' (policy production-needs-release)"),
        "{out}"
    );
    assert_eq!(
        by_policy(&records),
        [("deny".into(), vec!["production-needs-release".to_owned()])]
    );
    let denied = records.iter().find(|r| r.policies.is_some()).unwrap();
    assert_eq!(denied.rule.as_deref(), Some("policy"));
    assert!(
        !records.iter().any(|r| r.event == Event::Deploy),
        "nothing deployed"
    );

    // The rest is allowed: staging without the label, production with it.
    let (out, records) = s.run("deployer", &grant("fix-bug"), input("staging")).await;
    assert_eq!(out["status"], 0, "{out}");
    assert!(by_policy(&records).is_empty());
    let (out, _) = s
        .run(
            "deployer",
            &grant("v1.2").label("release"),
            input("production"),
        )
        .await;
    assert_eq!(out["status"], 0, "{out}");
    assert!(
        out["output"].as_str().unwrap().starts_with("deployed"),
        "{out}"
    );
}

#[tokio::test]
async fn once_a_secret_is_revealed_the_task_talks_only_to_its_send_to() {
    let s = setup(Arc::new(DenyAll)).await;
    let grant = |task: &str| {
        Grant::new(task)
            .http(&format!("http://127.0.0.1:{}/", s.api.0), None)
            .http(&format!("http://127.0.0.1:{}/", s.other.0), None)
            .secret("api")
    };
    // Before any reveal, both hosts are reachable.
    let (out, _) = s
        .run("probe", &grant("clean"), json!({"url": s.url(s.other.0)}))
        .await;
    assert_eq!(out["ok"]["status"], 200, "{out}");
    assert_eq!(s.other.1.load(Ordering::SeqCst), 1);

    // Reveal the secret and use it with its own API: allowed.
    let leak = grant("leak");
    let (out, _) = s
        .run(
            "probe",
            &leak,
            json!({"url": s.url(s.api.0), "reveal": "api", "into": "header"}),
        )
        .await;
    assert_eq!(out["ok"]["status"], 200, "{out}");

    // A later call in the same task, to another host, with nothing
    // recognisable in it: the policy stops it before a packet leaves.
    let (out, records) = s
        .run("probe", &leak, json!({"url": s.url(s.other.0)}))
        .await;
    assert_eq!(out["error"]["code"], "denied", "{out}");
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("(policy no-egress-after-reveal)"),
        "{out}"
    );
    assert_eq!(
        by_policy(&records),
        [("deny".into(), vec!["no-egress-after-reveal".to_owned()])]
    );
    assert_eq!(s.other.1.load(Ordering::SeqCst), 1, "no request reached it");

    // Standard wasi:http in the same task is held to the same policy.
    let std_grant = Grant::new("leak").http(&format!("http://127.0.0.1:{}/", s.other.0), None);
    let (out, records) = s
        .run("std", &std_grant, json!({"url": s.url(s.other.0)}))
        .await;
    assert!(out.get("error").is_some(), "{out}");
    assert_eq!(
        by_policy(&records),
        [("deny".into(), vec!["no-egress-after-reveal".to_owned()])]
    );
    assert_eq!(s.other.1.load(Ordering::SeqCst), 1);

    // Another task is not affected.
    let (out, _) = s
        .run(
            "probe",
            &grant("other-task"),
            json!({"url": s.url(s.other.0)}),
        )
        .await;
    assert_eq!(out["ok"]["status"], 200, "{out}");
}

#[tokio::test]
async fn changes_under_github_wait_for_approval() {
    let s = setup(Arc::new(DenyAll)).await;
    let grant = Grant::new("edit").fs("workspace", &s.workspace, Rights::READ | Rights::WRITE);
    let write = |path: &str| json!({"path": path, "content": "on: push"});

    // Deny-all answers: refused, with the policy named on the decision and
    // the approval request and answer audited.
    for path in [".github/workflows/ci.yml", "docs-link/workflows/sneaky.yml"] {
        let (out, records) = s.run("write-file", &grant, write(path)).await;
        assert!(
            out["error"].as_str().unwrap().contains("deny-all"),
            "{path}: {out}"
        );
        assert_eq!(
            by_policy(&records),
            [(
                "allow".into(),
                vec!["github-changes-need-approval".to_owned()]
            )],
            "{path}"
        );
        assert!(records.iter().any(|r| r.event == Event::ApprovalRequested));
        assert!(!s.workspace.join(".github/workflows/sneaky.yml").exists());
    }
    assert!(!s.workspace.join(".github/workflows/ci.yml").exists());

    // Elsewhere: no approval asked.
    let (out, records) = s.run("write-file", &grant, write("docs/guide.md")).await;
    assert!(out.get("error").is_none(), "{out}");
    assert!(by_policy(&records).is_empty());
    assert!(!records.iter().any(|r| r.event == Event::ApprovalRequested));

    // With an approver that says yes, the write happens.
    let yes = Arc::new(Yes::default());
    let s = setup(yes.clone()).await;
    let grant = Grant::new("edit").fs("workspace", &s.workspace, Rights::READ | Rights::WRITE);
    let (out, _) = s
        .run("write-file", &grant, write(".github/workflows/ci.yml"))
        .await;
    assert!(out.get("error").is_none(), "{out}");
    assert_eq!(
        std::fs::read_to_string(s.workspace.join(".github/workflows/ci.yml")).unwrap(),
        "on: push"
    );
    let asked = yes.0.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].action, "fs.write");
    assert!(
        asked[0]
            .summary
            .starts_with("write .github/workflows/ci.yml on handle 'workspace' (8 bytes, sha256 "),
        "{}",
        asked[0].summary
    );

    // Through a link, the person is shown where the write lands, and the
    // digest binds it: the link's name alone would hide the protected path.
    let (out, _) = s
        .run(
            "write-file",
            &grant,
            write("docs-link/workflows/sneaky.yml"),
        )
        .await;
    assert!(out.get("error").is_none(), "{out}");
    let asked = yes.0.lock().unwrap().clone();
    assert_eq!(asked.len(), 2);
    assert!(
        asked[1].summary.starts_with(
            "write docs-link/workflows/sneaky.yml (resolves to .github/workflows/sneaky.yml) \
             on handle 'workspace' (8 bytes, sha256 "
        ),
        "{}",
        asked[1].summary
    );
    let r = &asked[1];
    let contents = hex::encode(<sha2::Sha256 as sha2::Digest>::digest("on: push"));
    let bound = json!([
        "warden-approval/1",
        r.identity,
        r.task,
        r.invocation,
        0,
        "fs.write",
        r.resource,
        format!("sha256 {contents}; creates it; resolves to .github/workflows/sneaky.yml"),
    ]);
    assert_eq!(
        r.digest,
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bound.to_string())),
        "the digest does not bind where the link leads"
    );
}

#[test]
fn warden_check_reports_malformed_policies() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.cedar"),
        "// deploys\n@id(\"typo\")\nforbid (principal, action == Warden::Action::\"deploy::run\", resource)\nwhen { resource.lables.contains(\"production\") };\n",
    )
    .unwrap();
    let manifest = dir.path().join("m.toml");
    let check = |policies: &str| {
        std::fs::write(
            &manifest,
            format!(
                "policies = [\"{policies}\"]\n[tools.echo]\ncomponent = \"{}\"\n",
                crate::ECHO
            ),
        )
        .unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["check"])
            .arg(&manifest)
            .env("WARDEN_STATE_DIR", dir.path())
            .output()
            .unwrap()
    };
    let out = check("bad.cedar");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bad.cedar:4:"), "{stderr}");
    assert!(stderr.contains("policy 'typo'"), "{stderr}");
    assert!(stderr.contains("lables"), "{stderr}");

    // The shipped examples pass and are listed.
    let out = check(&examples().display().to_string());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(
            "github-changes-need-approval, no-egress-after-reveal, production-needs-release"
        ),
        "{stdout}"
    );
}

/// A workspace whose `.github/` (anywhere in it) a Cedar policy protects
/// from writes and deletes outright, and the fs-probe tool with every right.
struct Guarded {
    _dir: tempfile::TempDir,
    workspace: PathBuf,
    audit: Arc<MemorySink>,
    runtime: Runtime,
}

const PROTECT: &str = "writes and deletes under .github/ are not allowed (policy protect-github)";

fn guarded() -> Guarded {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let ws = root.join("workspace");
    std::fs::create_dir_all(ws.join(".github/workflows")).unwrap();
    std::fs::write(ws.join(".github/workflows/ci.yml"), "on: push").unwrap();
    std::fs::create_dir_all(ws.join("proj/.github")).unwrap();
    std::fs::write(ws.join("proj/.github/ci.yml"), "on: push").unwrap();
    std::fs::create_dir_all(ws.join("proj/src")).unwrap();
    std::fs::write(ws.join("proj/src/lib.rs"), "fn f() {}").unwrap();
    std::fs::create_dir_all(ws.join("plain/deep")).unwrap();
    std::fs::write(ws.join("plain/deep/x.txt"), "x").unwrap();
    std::fs::write(
        root.join("protect.cedar"),
        r#"@id("protect-github")
@reason("writes and deletes under .github/ are not allowed")
forbid (
  principal,
  action in [Warden::Action::"fs::write", Warden::Action::"fs::delete"],
  resource
)
when {
  resource.path == ".github" || resource.path like ".github/*" ||
  resource.path like "*/.github" || resource.path like "*/.github/*"
};
"#,
    )
    .unwrap();
    let text = format!(
        r#"
policies = ["protect.cedar"]

[tools.probe]
component = "{probe}"
[[tools.probe.fs]]
handle = "workspace"
within = "{ws}"
rights = ["read", "write", "delete"]
"#,
        probe = crate::FS_PROBE,
        ws = ws.display(),
    );
    let path = root.join("manifest.toml");
    std::fs::write(&path, text).unwrap();
    let audit = MemorySink::new();
    let runtime = Runtime::builder()
        .manifest(Manifest::load(&path).unwrap())
        .audit(audit.clone())
        .cache_dir(crate::common::shared_cache())
        .build()
        .unwrap();
    Guarded {
        _dir: dir,
        workspace: ws,
        audit,
        runtime,
    }
}

impl Guarded {
    /// Runs fs-probe with every right; its report and its decision records.
    async fn probe(&self, op: Value) -> (Value, Vec<Record>) {
        let grant = Grant::new("t").fs(
            "workspace",
            &self.workspace,
            Rights::READ | Rights::WRITE | Rights::DELETE,
        );
        let inv = self
            .runtime
            .invoke("probe", &grant, &op.to_string())
            .await
            .unwrap_or_else(|e| panic!("probe {op}: {e}"));
        let out = serde_json::from_str(&inv.output.unwrap()).unwrap();
        let decisions = self
            .audit
            .invocation(&inv.id)
            .into_iter()
            .filter(|r| r.event == Event::Decision)
            .collect();
        (out, decisions)
    }
}

/// Issue #11, 14: a rule about a path holds for whatever affects it — a
/// recursive delete or a rename of an ancestor is decided on every path
/// beneath it.
#[tokio::test]
async fn removing_or_renaming_an_ancestor_of_a_protected_path_is_denied() {
    let g = guarded();
    for op in [
        json!({"op": "remove-dir", "path": "proj", "recursive": true}),
        json!({"op": "rename", "path": "proj", "to": "moved"}),
        // The protected directory itself, and a move onto a protected name.
        json!({"op": "rename", "path": ".github", "to": "gh"}),
        json!({"op": "rename", "path": "plain", "to": "proj/.github/plain"}),
    ] {
        let (out, d) = g.probe(op.clone()).await;
        assert_eq!(out["error"]["code"], "denied", "{op}: {out}");
        assert_eq!(out["error"]["message"], PROTECT, "{op}");
        assert_eq!(d.len(), 1, "{op}: {d:?}");
        assert_eq!(
            (d[0].decision.as_deref(), d[0].rule.as_deref()),
            (Some("deny"), Some("policy")),
            "{op}"
        );
        assert_eq!(d[0].policies, Some(vec!["protect-github".to_owned()]));
    }
    assert_eq!(
        std::fs::read_to_string(g.workspace.join("proj/.github/ci.yml")).unwrap(),
        "on: push"
    );
    assert!(g.workspace.join(".github/workflows/ci.yml").exists());
    assert!(!g.workspace.join("moved").exists());

    // A subtree with nothing protected in it is moved and removed as before.
    let (out, d) = g
        .probe(json!({"op": "rename", "path": "plain", "to": "moved"}))
        .await;
    assert_eq!(out["ok"], "renamed", "{out}");
    assert_eq!(d[0].decision.as_deref(), Some("allow"));
    assert!(g.workspace.join("moved/deep/x.txt").exists());
    let (out, _) = g
        .probe(json!({"op": "remove-dir", "path": "moved", "recursive": true}))
        .await;
    assert_eq!(out["ok"], "removed", "{out}");
    assert!(!g.workspace.join("moved").exists());
    let (out, _) = g
        .probe(json!({"op": "remove-dir", "path": "proj/src", "recursive": true}))
        .await;
    assert_eq!(out["ok"], "removed", "{out}");
}

/// A subtree too large to check against the policy is refused, with the
/// reason, rather than passed unchecked.
#[tokio::test]
async fn a_subtree_too_large_to_check_is_refused() {
    let g = guarded();
    let big = g.workspace.join("big");
    std::fs::create_dir(&big).unwrap();
    for i in 0..10_001 {
        std::fs::write(big.join(i.to_string()), "").unwrap();
    }
    let (out, d) = g
        .probe(json!({"op": "remove-dir", "path": "big", "recursive": true}))
        .await;
    let want = "'big' holds more than can be checked against the runtime policy (at most 10000 entries and 4 MiB of paths, within the deadline)";
    assert_eq!(out["error"]["code"], "denied", "{out}");
    assert_eq!(out["error"]["message"], want);
    assert_eq!(
        (d[0].decision.as_deref(), d[0].rule.as_deref()),
        (Some("deny"), Some("fs.subtree"))
    );
    assert!(big.join("0").exists());

    // Fewer entries, under directories with long names: 1,200 paths of
    // ~3.8 KB are more than 4 MiB to copy and ask about (a tree a tool can
    // build; 10,000 of 32 KB held gigabytes of the host's memory).
    let mut deep = g.workspace.join("deep");
    for i in 0..15 {
        deep.push(format!("{i:02}{}", "d".repeat(240)));
    }
    std::fs::create_dir_all(&deep).unwrap();
    for i in 0..1_200 {
        std::fs::write(deep.join(i.to_string()), "").unwrap();
    }
    let started = std::time::Instant::now();
    for op in [
        json!({"op": "remove-dir", "path": "deep", "recursive": true}),
        json!({"op": "rename", "path": "deep", "to": "moved"}),
    ] {
        let (out, d) = g.probe(op.clone()).await;
        let want = want.replacen("'big'", "'deep'", 1);
        assert_eq!(out["error"]["message"], want, "{op}: {out}");
        assert_eq!(d[0].rule.as_deref(), Some("fs.subtree"), "{op}");
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(deep.join("0").exists());

    // A small tree renamed to a long place: each path is asked about at
    // its new place too, and those bytes count.
    let many = g.workspace.join("many");
    std::fs::create_dir(&many).unwrap();
    for i in 0..1_200 {
        std::fs::write(many.join(i.to_string()), "").unwrap();
    }
    let to = format!(
        "{}/moved",
        deep.strip_prefix(&g.workspace).unwrap().display()
    );
    let (out, d) = g
        .probe(json!({"op": "rename", "path": "many", "to": to}))
        .await;
    let want = want.replacen("'big'", "'many'", 1);
    assert_eq!(out["error"]["message"], want, "{out}");
    assert_eq!(d[0].rule.as_deref(), Some("fs.subtree"));
    assert!(many.join("0").exists());
}

/// Issue #11, 15: the call is decided on the object it acts on. A host
/// thread swaps a directory for a symlink to `.github` while the tool
/// writes through it: each write is denied, or lands in the real directory
/// — never under `.github`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_swapped_in_after_the_decision_cannot_redirect_a_write() {
    let g = guarded();
    let ws = g.workspace.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swaps = Arc::new(AtomicUsize::new(0));
    let swapper = {
        let (stop, swaps) = (stop.clone(), swaps.clone());
        std::thread::spawn(move || {
            let d = ws.join("d");
            while !stop.load(Ordering::SeqCst) {
                let _ = std::fs::remove_dir_all(&d).or_else(|_| std::fs::remove_file(&d));
                let _ = std::fs::create_dir(&d);
                std::thread::yield_now();
                let _ = std::fs::remove_dir_all(&d).or_else(|_| std::fs::remove_file(&d));
                let _ = std::os::unix::fs::symlink(".github", &d);
                std::thread::yield_now();
                swaps.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    // On a loaded machine the swapper may be starved during one call, so
    // calls repeat (each checked) until the race has run and been seen.
    while swaps.load(Ordering::SeqCst) == 0 {
        std::thread::yield_now();
    }
    let start = swaps.load(Ordering::SeqCst);
    let mut denied = false;
    for _ in 0..20 {
        let (out, d) = g
            .probe(json!({"op": "write-repeat", "path": "d/planted.yml", "contents": "pwned", "size": 3000}))
            .await;
        assert!(
            !g.workspace.join(".github/planted.yml").exists(),
            "a write landed under .github: {out}"
        );
        let tally = out["ok"].as_object().unwrap();
        for (outcome, _) in tally {
            assert!(
                ["written", "denied", "not-found", "not-a-directory", "io"]
                    .contains(&outcome.as_str()),
                "{out}"
            );
        }
        // Each denial is the policy's or the sandbox's (a symlink swapped
        // in between the decision and the open), never a write.
        for r in d.iter().filter(|r| r.decision.as_deref() == Some("deny")) {
            assert!(
                matches!(r.rule.as_deref(), Some("policy" | "fs.resolve")),
                "{r:?}"
            );
        }
        denied |= tally.contains_key("denied");
        if denied && swaps.load(Ordering::SeqCst) - start > 10 {
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    swapper.join().unwrap();
    assert!(swaps.load(Ordering::SeqCst) - start > 10, "the race ran");
    assert!(denied, "the symlink was seen");
}

/// The exfiltration policy across replicas: two runtimes (two replicas of a
/// service) that share only a PostgreSQL database. A secret revealed
/// through one; egress outside its `send-to` through the other, in the same
/// task, is denied; another task is not affected.
#[tokio::test(flavor = "multi_thread")]
async fn a_secret_revealed_on_one_replica_limits_the_tasks_egress_on_another() {
    let Some(pg) = crate::postgres::Postgres::start() else {
        return;
    };
    let url = warden::store::StateUrl::parse(&pg.url()).unwrap();
    let a = setup_with(
        Arc::new(DenyAll),
        Some(warden::store::PgHistory::open(&url).await.unwrap()),
    )
    .await;
    let audit_b = MemorySink::new();
    let b = Runtime::builder()
        .manifest(Manifest::load(&a.manifest).unwrap())
        .audit(audit_b.clone())
        .task_history(warden::store::PgHistory::open(&url).await.unwrap())
        .cache_dir(crate::common::shared_cache())
        .build()
        .unwrap();
    let grant = |task: &str| {
        Grant::new(task)
            .http(&format!("http://127.0.0.1:{}/", a.api.0), None)
            .http(&format!("http://127.0.0.1:{}/", a.other.0), None)
            .secret("api")
    };
    let on_b = |task: &'static str| {
        let (b, grant, url) = (&b, grant(task), a.url(a.other.0));
        async move {
            let inv = b
                .invoke("probe", &grant, &json!({"url": url}).to_string())
                .await
                .unwrap();
            match inv.output {
                Ok(o) => serde_json::from_str::<Value>(&o).unwrap(),
                Err(e) => json!({"error": e.message}),
            }
        }
    };
    // Replica A reveals the secret in task "leak".
    let (out, _) = a
        .run(
            "probe",
            &grant("leak"),
            json!({"url": a.url(a.api.0), "reveal": "api", "into": "header"}),
        )
        .await;
    assert_eq!(out["ok"]["status"], 200, "{out}");
    // Replica B, same task, another host: denied by the policy, nothing sent.
    let out = on_b("leak").await;
    assert_eq!(out["error"]["code"], "denied", "{out}");
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("(policy no-egress-after-reveal)"),
        "{out}"
    );
    assert_eq!(a.other.1.load(Ordering::SeqCst), 0, "no request reached it");
    assert_eq!(
        by_policy(&audit_b.records()),
        [("deny".into(), vec!["no-egress-after-reveal".to_owned()])]
    );
    // Another task on B is not affected.
    let out = on_b("clean").await;
    assert_eq!(out["ok"]["status"], 200, "{out}");
    assert_eq!(a.other.1.load(Ordering::SeqCst), 1);
}

/// Answers yes, but only once it is told to: meanwhile the test acts.
#[derive(Default)]
struct WhenTold {
    asked: tokio::sync::Notify,
    answer: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl Approver for WhenTold {
    async fn ask(&self, r: &ApprovalRequest) -> Option<ApprovalAnswer> {
        self.asked.notify_one();
        self.answer.notified().await;
        Some(ApprovalAnswer {
            digest: r.digest.clone(),
            approved: true,
            by: "test".into(),
        })
    }
}

/// A request waiting for a person while the task reveals a secret (in
/// another call) is decided again once approved: the policy that forbids
/// egress after a reveal stops it, though it was allowed when asked.
#[tokio::test]
async fn a_request_approved_after_a_reveal_is_decided_again() {
    let person = Arc::new(WhenTold::default());
    let s = setup(person.clone()).await;
    let to_other = Grant::new("race").http(&format!("http://127.0.0.1:{}/", s.other.0), None);
    let to_api = Grant::new("race")
        .http(&format!("http://127.0.0.1:{}/", s.api.0), None)
        .secret("api");
    let waiting = s.run("gated", &to_other, json!({"url": s.url(s.other.0)}));
    let reveal = async {
        person.asked.notified().await;
        let input = json!({"url": s.url(s.api.0), "reveal": "api", "into": "header"});
        let revealed = s.run("probe", &to_api, input).await;
        person.answer.notify_one();
        revealed
    };
    let ((out, records), (revealed, _)) = tokio::join!(waiting, reveal);
    assert_eq!(revealed["ok"]["status"], 200, "{revealed}");
    assert_eq!(out["error"]["code"], "denied", "{out}");
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("(policy no-egress-after-reveal)"),
        "{out}"
    );
    let decisions: Vec<_> = records
        .iter()
        .filter(|r| r.event == Event::Decision)
        .map(|r| (r.capability.clone().unwrap(), r.decision.clone().unwrap()))
        .collect();
    let d = |c: &str, v: &str| (c.to_owned(), v.to_owned());
    assert_eq!(
        decisions,
        [
            d("http", "allow"),
            d("approval", "allow"),
            d("http", "deny")
        ]
    );
    assert_eq!(s.other.1.load(Ordering::SeqCst), 0, "the request was sent");
}

/// A task whose `files_written` is full (4,096 items, from a shared store
/// here) could write on unnoted, and a policy forbidding what follows a
/// write would never fire: with a policy that reads the set, a file it
/// cannot hold is refused (`policy.history`); one it holds is not, nor is
/// any file without such a policy, where the set keeps nothing. What is
/// noted is where a write went, not a link's alias.
#[tokio::test]
async fn a_full_history_refuses_a_write_it_could_not_note() {
    const REFUSAL: &str = "this task has written as many different files as its history \
        keeps for the runtime policy, which reads files_written (4096 files, or 655360 bytes \
        of paths); a further file would go unnoted, so it is refused";
    let mut full = warden::policy::TaskHistory::default();
    for i in 0..4096 {
        warden::policy::TaskHistory::note(&mut full.files_written, &format!("workspace:f{i}"));
    }
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    std::os::unix::fs::symlink("real.txt", ws.join("alias.txt")).unwrap();
    std::fs::write(ws.join("real.txt"), "x").unwrap();
    // A set a policy reads, loaded full; one it reads, loaded empty; a
    // set no policy reads, loaded full (it keeps nothing more).
    for (policy, reads, full) in [
        (
            r#"forbid (principal, action == Warden::Action::"fs::read", resource)
when { context.task.files_written.contains("workspace:marker") };"#,
            true,
            full.clone(),
        ),
        (
            r#"permit (principal, action, resource);
forbid (principal, action, resource) when { context.task.files_written.contains("workspace:never") };"#,
            false,
            warden::policy::TaskHistory::default(),
        ),
        ("permit (principal, action, resource);", false, full.clone()),
    ] {
        std::fs::write(dir.path().join("p.cedar"), policy).unwrap();
        let path = dir.path().join("manifest.toml");
        let text = format!(
            "policies = [\"p.cedar\"]\n[tools.probe]\ncomponent = \"{}\"\n\
             [[tools.probe.fs]]\nhandle = \"workspace\"\nwithin = \"{}\"\nrights = [\"read\", \"write\", \"delete\"]\n",
            crate::FS_PROBE,
            ws.display()
        );
        std::fs::write(&path, text).unwrap();
        let kept = Arc::new(crate::common::KeptHistory {
            load: full.clone(),
            ..Default::default()
        });
        let runtime = crate::common::runtime_with_history(&path, kept.clone());
        let grant = Grant::new("t").fs(
            "workspace",
            &ws,
            Rights::READ | Rights::WRITE | Rights::DELETE,
        );
        let write = |p: &str| json!({"op": "write", "path": p, "contents": "y"}).to_string();
        let run = runtime
            .invoke("probe", &grant, &write("marker"))
            .await
            .unwrap();
        let out: serde_json::Value = serde_json::from_str(&run.output.unwrap()).unwrap();
        if reads {
            assert_eq!(out["error"]["code"], "denied", "{out}");
            assert_eq!(out["error"]["message"], REFUSAL);
            assert!(!ws.join("marker").exists(), "the refused write happened");
            // A file the set holds is written again.
            let run = runtime.invoke("probe", &grant, &write("f7")).await.unwrap();
            assert!(run.output.unwrap().contains("\"ok\""));
            // Long paths are kept as their heads and digests: a set of 4,096
            // paths of 8 KiB holds under 640 KiB (not 32 MiB, copied into
            // every policy question), and refuses the same way.
            let mut long = warden::policy::TaskHistory::default();
            for i in 0..4096 {
                let path = format!("workspace:{i:04}/{}", "a".repeat(8192));
                assert!(long.files_written.note(&path));
            }
            assert!(long.files_written.bytes() <= warden::policy::cedar::MAX_HISTORY_BYTES);
            assert!(long.files_written.bytes() < 640 << 10);
            let kept = Arc::new(crate::common::KeptHistory {
                load: long,
                ..Default::default()
            });
            let runtime = crate::common::runtime_with_history(&path, kept);
            let run = runtime
                .invoke("probe", &grant, &write("marker"))
                .await
                .unwrap();
            let out: serde_json::Value = serde_json::from_str(&run.output.unwrap()).unwrap();
            assert_eq!(out["error"]["message"], REFUSAL, "{out}");
            assert!(!ws.join("marker").exists(), "the refused write happened");
        } else {
            assert!(out.get("ok").is_some(), "{out}");
            // Through a link, the file it leads to is noted.
            let run = runtime
                .invoke("probe", &grant, &write("alias.txt"))
                .await
                .unwrap();
            assert!(run.output.unwrap().contains("\"ok\""));
            // A directory renamed: every file beneath it, on both sides.
            std::fs::create_dir_all(ws.join("tmp/wf")).unwrap();
            std::fs::write(ws.join("tmp/wf/ci.yml"), "on: push").unwrap();
            let rename = json!({"op": "rename", "path": "tmp/wf", "to": "wf"}).to_string();
            let run = runtime.invoke("probe", &grant, &rename).await.unwrap();
            assert!(run.output.unwrap().contains("\"ok\""));
            let saved = kept.saved.lock().unwrap().clone();
            let written: Vec<&str> = saved.iter().flat_map(|h| &h.files_written).collect();
            // A set no policy reads keeps nothing (nor shares it); one a
            // policy reads keeps where each write went.
            let want: &[&str] = match full.files_written.is_empty() {
                false => &[],
                true => &[
                    "workspace:marker",
                    "workspace:real.txt",
                    "workspace:tmp/wf",
                    "workspace:tmp/wf/ci.yml",
                    "workspace:wf",
                    "workspace:wf/ci.yml",
                ],
            };
            assert_eq!(written, want, "{saved:?}");
            std::fs::remove_dir_all(ws.join("wf")).unwrap();
            std::fs::remove_file(ws.join("marker")).unwrap();
        }
    }
}

/// A directory holding a workspace `ws`, the runtime policy `policy`
/// (`p.cedar`) and a manifest giving `probe` read and write on the
/// workspace, with `extra` lines for that handle: the directory, the
/// workspace and the manifest's path.
fn probe_under_policy(policy: &str, extra: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    std::fs::write(dir.path().join("p.cedar"), policy).unwrap();
    let path = dir.path().join("manifest.toml");
    let text = format!(
        "policies = [\"p.cedar\"]\n[tools.probe]\ncomponent = \"{}\"\n\
         [[tools.probe.fs]]\nhandle = \"workspace\"\nwithin = \"{}\"\nrights = [\"read\", \"write\"]\n{extra}",
        crate::FS_PROBE,
        ws.display()
    );
    std::fs::write(&path, text).unwrap();
    (dir, ws, path)
}

/// `create-dir bin/x` makes `bin` too: a rule about `bin` alone holds
/// for it, not only rules about the deepest directory.
#[tokio::test]
async fn each_directory_a_create_dir_makes_is_asked_about() {
    let (_dir, ws, path) = probe_under_policy(
        r#"@id("no-bin")
forbid (principal, action == Warden::Action::"fs::write", resource)
when { resource.path == "bin" };"#,
        "",
    );
    let runtime = Runtime::builder()
        .manifest(Manifest::load(&path).unwrap())
        .audit(MemorySink::new())
        .cache_dir(crate::common::shared_cache())
        .build()
        .unwrap();
    let grant = Grant::new("t").fs("workspace", &ws, Rights::READ | Rights::WRITE);
    let input = json!({"op": "create-dir", "path": "bin/x/y"}).to_string();
    let run = runtime.invoke("probe", &grant, &input).await.unwrap();
    let out: Value = serde_json::from_str(&run.output.unwrap()).unwrap();
    assert_eq!(out["error"]["code"], "denied", "{out}");
    assert!(!ws.join("bin").exists());
    // Where `bin` is there already, only what is made is asked about.
    std::fs::create_dir(ws.join("bin")).unwrap();
    let run = runtime.invoke("probe", &grant, &input).await.unwrap();
    let out: Value = serde_json::from_str(&run.output.unwrap()).unwrap();
    assert!(out.get("ok").is_some(), "{out}");
    assert!(ws.join("bin/x/y").is_dir());
}

/// A write-once policy (`forbid` a write to a file the task already
/// wrote): a write that waits for a person is noted only once it is
/// approved, so its own note does not refuse it after the approval; the
/// second write is refused.
#[tokio::test]
async fn a_write_once_policy_lets_the_first_approved_write_through() {
    let (_dir, ws, path) = probe_under_policy(
        r#"@id("write-once")
forbid (principal, action == Warden::Action::"fs::write", resource)
when { resource.path == "release.json" &&
       context.task.files_written.contains("workspace:release.json") };"#,
        "approval = [\"write\"]\n",
    );
    let yes = Arc::new(Yes(Mutex::default()));
    let runtime = Runtime::builder()
        .manifest(Manifest::load(&path).unwrap())
        .audit(MemorySink::new())
        .approver(yes.clone())
        .cache_dir(crate::common::shared_cache())
        .build()
        .unwrap();
    let grant = Grant::new("t").fs("workspace", &ws, Rights::READ | Rights::WRITE);
    let input = json!({"op": "write", "path": "release.json", "contents": "{}"}).to_string();
    let run = runtime.invoke("probe", &grant, &input).await.unwrap();
    let out: Value = serde_json::from_str(&run.output.unwrap()).unwrap();
    assert!(out.get("ok").is_some(), "{out}");
    let run = runtime.invoke("probe", &grant, &input).await.unwrap();
    let out: Value = serde_json::from_str(&run.output.unwrap()).unwrap();
    assert_eq!(out["error"]["code"], "denied", "{out}");
    assert_eq!(
        yes.0.lock().unwrap().len(),
        1,
        "the second was refused unasked"
    );
}

/// A write-once policy naming a path longer than a history entry keeps
/// whole (160 bytes: longer ones are kept as their head and digest) still
/// refuses the second write, and the trail names the policy.
#[tokio::test]
async fn a_write_once_policy_on_a_long_path_refuses_the_second_write() {
    let name = format!("release-{}.json", "x".repeat(200));
    let (_dir, ws, path) = probe_under_policy(
        &format!(
            r#"@id("write-once")
forbid (principal, action == Warden::Action::"fs::write", resource)
when {{ context.task.files_written.contains("workspace:{name}") }};"#
        ),
        "",
    );
    let sink = MemorySink::new();
    let runtime = Runtime::builder()
        .manifest(Manifest::load(&path).unwrap())
        .audit(sink.clone())
        .cache_dir(crate::common::shared_cache())
        .build()
        .unwrap();
    let grant = Grant::new("t").fs("workspace", &ws, Rights::READ | Rights::WRITE);
    let input = json!({"op": "write", "path": name, "contents": "{}"}).to_string();
    let run = runtime.invoke("probe", &grant, &input).await.unwrap();
    let out: Value = serde_json::from_str(&run.output.unwrap()).unwrap();
    assert!(out.get("ok").is_some(), "{out}");
    let run = runtime.invoke("probe", &grant, &input).await.unwrap();
    let out: Value = serde_json::from_str(&run.output.unwrap()).unwrap();
    assert_eq!(out["error"]["code"], "denied", "{out}");
    let denied: Vec<Record> = (sink.records().into_iter())
        .filter(|r| r.decision.as_deref() == Some("deny"))
        .collect();
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0].rule.as_deref(), Some("policy"));
    assert_eq!(
        denied[0].policies.as_deref(),
        Some(&["write-once".to_owned()][..])
    );
}

/// Every set of a task's history a policy reads fails closed when full,
/// not only `files_written`: with 4,096 hosts noted (a grant naming many,
/// or a shared history arriving full), a request to a further host would go
/// unnoted, and a policy forbidding what follows contact with it would
/// never fire. So it is refused (`policy.history`, recorded) and never
/// sent; a host the set holds is not refused, nor is anything without a
/// policy reading the set. The same for a secret revealed.
#[tokio::test]
async fn a_full_history_of_hosts_or_secrets_refuses_what_it_could_not_note() {
    let (port, hits) = server().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token.txt"), "s3cret-value").unwrap();
    let manifest = |policy: &str| {
        std::fs::write(dir.path().join("p.cedar"), policy).unwrap();
        let path = dir.path().join("manifest.toml");
        let text = format!(
            "policies = [\"p.cedar\"]\n[tools.probe]\ncomponent = \"{}\"\n\
             [[tools.probe.http]]\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {port}\n\
             [[tools.probe.secrets]]\nname = \"api\"\nsource = \"file:token.txt\"\nreveal = true\n\
             approval = \"none\"\nsend-to = [\"http://127.0.0.1:{port}\"]\n",
            crate::EGRESS_PROBE,
        );
        std::fs::write(&path, text).unwrap();
        Manifest::load(&path).unwrap()
    };
    let run = |manifest: Manifest, load: warden::policy::TaskHistory, input: Value| async move {
        let audit = MemorySink::new();
        let runtime = Runtime::builder()
            .manifest(manifest)
            .audit(audit.clone())
            .task_history(Arc::new(crate::common::KeptHistory {
                load,
                ..Default::default()
            }))
            .cache_dir(crate::common::shared_cache())
            .build()
            .unwrap();
        let grant = Grant::new("t")
            .http(&format!("http://127.0.0.1:{port}/"), None)
            .secret("api");
        let inv = runtime
            .invoke("probe", &grant, &input.to_string())
            .await
            .unwrap();
        // The probe answers a refused request itself, a refused reveal
        // as a tool error: both as `{"error": {code, message}}`.
        let out: Value = match inv.output {
            Ok(o) => serde_json::from_str(&o).unwrap(),
            Err(e) => json!({"error": {
                "code": format!("{:?}", e.kind).to_lowercase(),
                "message": e.message.strip_prefix("denied: ").unwrap_or(&e.message),
            }}),
        };
        (out, audit.invocation(&inv.id))
    };
    let full = |kind: &str, also: Option<&str>| {
        let mut h = warden::policy::TaskHistory::default();
        let set = h.set_mut(kind).unwrap();
        for i in 0..4096 - usize::from(also.is_some()) {
            assert!(set.note(&format!("h{i}.example")));
        }
        if let Some(item) = also {
            assert!(set.note(item));
        }
        h
    };
    let url = format!("http://127.0.0.1:{port}/x");
    let request = json!({ "url": url });
    let reveal = json!({ "url": url, "reveal": "api", "into": "header" });
    let cases = [
        (
            "hosts_contacted",
            "127.0.0.1",
            &request,
            "this task has contacted as many different hosts as its history keeps for the \
             runtime policy, which reads hosts_contacted (4096 hosts, or 655360 bytes of \
             names); a further host would go unnoted, so it is refused",
            "http",
        ),
        (
            "secrets_revealed",
            "api",
            &reveal,
            "this task has revealed as many different secrets as its history keeps for the \
             runtime policy, which reads secrets_revealed (4096 secrets, or 655360 bytes of \
             names); a further secret would go unnoted, so it is refused",
            "secret",
        ),
    ];
    for (kind, item, input, refusal, capability) in cases {
        // `\u{5f}` is `_`: the set is read whatever the policy's spelling.
        let policy = format!(
            "forbid (principal, action == Warden::Action::\"deploy::run\", resource)\n\
             when {{ context.task[\"{}\"].contains(\"evil.example\") }};",
            kind.replace('_', "\\u{5f}")
        );
        let before = hits.load(Ordering::SeqCst);
        let (out, records) = run(manifest(&policy), full(kind, None), input.clone()).await;
        assert_eq!(out["error"]["code"], "denied", "{kind}: {out}");
        assert_eq!(out["error"]["message"], refusal, "{kind}");
        assert_eq!(
            hits.load(Ordering::SeqCst),
            before,
            "{kind}: the request was sent"
        );
        let denied: Vec<_> = (records.iter())
            .filter(|r| r.decision.as_deref() == Some("deny"))
            .map(|r| (r.capability.clone().unwrap(), r.rule.clone().unwrap()))
            .collect();
        assert_eq!(
            denied,
            [(capability.to_owned(), "policy.history".to_owned())]
        );
        // One the set already holds is noted without a place of its own.
        let (out, _) = run(manifest(&policy), full(kind, Some(item)), input.clone()).await;
        assert_eq!(out["ok"]["status"], 200, "{kind}: {out}");
        // Without a policy reading the set, nothing is refused.
        let (out, _) = run(
            manifest("permit (principal, action, resource);"),
            full(kind, None),
            input.clone(),
        )
        .await;
        assert_eq!(out["ok"]["status"], 200, "{kind}: {out}");
    }
}

/// A sink that takes its time over a record allowing a write, as a file or
/// a database does under load: the window in which, before the decision
/// and the note were one step, another call of the task was decided
/// against a history without the first call's write.
struct SlowAllow(Arc<MemorySink>);

impl warden::audit::AuditSink for SlowAllow {
    fn append(&self, record: &Record) -> Result<(), warden::audit::AuditError> {
        if record.event == Event::Decision && record.decision.as_deref() == Some("allow") {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        self.0.append(record)
    }
}

/// Calls of one task that write at once under a write-once policy: one
/// write goes through, every other is refused. Deciding and noting were
/// two steps with the allow record written between them, and two calls
/// that both decided before either noted both wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_racing_past_a_write_once_policy_write_once() {
    let (_dir, ws, path) = probe_under_policy(
        r#"@id("write-once")
forbid (principal, action == Warden::Action::"fs::write", resource)
when { resource.path == "release.json" &&
       context.task.files_written.contains("workspace:release.json") };"#,
        "",
    );
    let audit = MemorySink::new();
    let runtime = Runtime::builder()
        .manifest(Manifest::load(&path).unwrap())
        .audit(Arc::new(SlowAllow(audit.clone())))
        .cache_dir(crate::common::shared_cache())
        .build()
        .unwrap();
    let grant = Grant::new("t").fs("workspace", &ws, Rights::READ | Rights::WRITE);
    let input = json!({"op": "write", "path": "release.json", "contents": "{}"}).to_string();
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let (runtime, grant, input) = (runtime.clone(), grant.clone(), input.clone());
            tokio::spawn(async move { runtime.invoke("probe", &grant, &input).await.unwrap() })
        })
        .collect();
    let mut outcomes = Vec::new();
    for call in calls {
        let out: Value = serde_json::from_str(&call.await.unwrap().output.unwrap()).unwrap();
        outcomes.push(if out.get("ok").is_some() {
            "ok".to_owned()
        } else {
            out["error"]["code"].as_str().unwrap_or("?").to_owned()
        });
    }
    outcomes.sort();
    assert_eq!(outcomes, ["denied", "denied", "denied", "ok"]);
    let decisions: Vec<_> = (audit.records().into_iter())
        .filter(|r| r.event == Event::Decision)
        .map(|r| r.decision.unwrap())
        .collect();
    assert_eq!(
        decisions.iter().filter(|d| *d == "allow").count(),
        1,
        "{decisions:?}"
    );
}
