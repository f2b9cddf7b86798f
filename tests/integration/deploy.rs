//! Deploy: its own right, exec and webhook backends, audited.

use serde_json::{Value, json};
use std::sync::{Arc, Mutex, OnceLock};
use warden::audit::{Event, MemorySink};
use warden::{Error, Grant, GrantError, Manifest, Rights, Runtime};

const SCRIPT: &str = "#!/bin/sh\n# args: --env NAME ARTIFACT OUTDIR\ncp \"$3\" \"$4/deployed.txt\"\necho \"deployed $(basename \"$3\") to $2 PATH=${PATH:+set} HOME=${HOME:-unset}\"\n";

/// The value of the deployer's secret `deploy-key`.
const DEPLOY_KEY: &str = "sek-0d15ea5e-77aa-4bb2";

/// (token was active when received, the JSON body)
type Hooks = Arc<Mutex<Vec<(bool, Value)>>>;

async fn receiver(runtime: Arc<OnceLock<Runtime>>) -> (u16, Hooks) {
    let hooks: Hooks = Arc::default();
    let log = hooks.clone();
    let port = crate::common::http_server(move |req| {
        let token = req.bearer();
        if req.path.ends_with("/echo-signature") {
            // One that quotes the token's signature alone.
            let signature = token.rsplit('.').next().unwrap_or("").to_owned();
            return (
                "200 OK".into(),
                String::new(),
                format!("sig {signature}").into(),
            );
        }
        if req.path.ends_with("/echo") {
            // A receiver that quotes the request it got.
            return (
                "200 OK".into(),
                String::new(),
                format!("got {token}").into(),
            );
        }
        let active = runtime.get().is_some_and(|rt| rt.introspect(&token).active);
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let name = body["artifact"]["name"].as_str().unwrap_or("?").to_owned();
        log.lock().unwrap().push((active, body));
        if active {
            (
                "202 Accepted".into(),
                String::new(),
                format!("accepted {name}").into(),
            )
        } else {
            ("401 Unauthorized".into(), String::new(), b"no".to_vec())
        }
    })
    .await;
    (port, hooks)
}

struct Site {
    _dir: tempfile::TempDir,
    ws: std::path::PathBuf,
    out: std::path::PathBuf,
    hooks: Hooks,
    audit: Arc<MemorySink>,
    runtime: Runtime,
}

async fn site() -> Site {
    let cell: Arc<OnceLock<Runtime>> = Arc::default();
    let (port, hooks) = receiver(cell.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let (ws, out) = (root.join("ws"), root.join("out"));
    std::fs::create_dir_all(ws.join("dist")).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(ws.join("dist/app.txt"), "release 1.2.3").unwrap();
    let key = root.join("deploy-key.txt");
    std::fs::write(&key, DEPLOY_KEY).unwrap();
    let script = root.join("ship.sh");
    std::fs::write(&script, SCRIPT).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let text = format!(
        r#"
[tools.deployer]
component = "{tool}"
[[tools.deployer.fs]]
handle = "workspace"
within = "{ws}"
rights = ["read", "write"]

[[tools.deployer.deploy]]
name = "staging"
approval = "none"
rights = ["deploy"]
backend = "exec"
program = "{script}"
args = ["--env", "staging", "{{artifact}}", "{out}"]
env = ["PATH"]

[[tools.deployer.deploy]]
name = "production"
approval = "none"
rights = ["deploy"]
backend = "webhook"
url = "http://127.0.0.1:{port}/hooks/release"

[[tools.deployer.deploy]]
name = "chatty"
approval = "none"
rights = ["deploy"]
backend = "exec"
program = "/bin/sh"
args = ["-c", "head -c 10000000 /dev/zero | tr '\\0' x; echo done >&2"]

[[tools.deployer.deploy]]
name = "lingering"
approval = "none"
rights = ["deploy"]
backend = "exec"
program = "/bin/sh"
args = ["-c", "sleep 302.9 & echo shipped"]
timeout = "20s"

[[tools.deployer.deploy]]
name = "escaping"
approval = "none"
rights = ["deploy"]
backend = "exec"
program = "/bin/sh"
args = ["-c", "setsid sleep 305.5 & echo shipped"]
timeout = "20s"

[[tools.deployer.deploy]]
name = "hung"
approval = "none"
rights = ["deploy"]
backend = "exec"
program = "/bin/sleep"
args = ["30"]
timeout = "1s"

[[tools.deployer.deploy]]
name = "gated"
rights = ["deploy"]
backend = "exec"
program = "{script}"
args = ["--env", "gated", "{{artifact}}", "{out}"]
approval = "required"

[[tools.deployer.deploy]]
name = "echoing"
approval = "none"
rights = ["deploy"]
backend = "webhook"
url = "http://127.0.0.1:{port}/hooks/echo"

[[tools.deployer.deploy]]
name = "echoing-signature"
approval = "none"
rights = ["deploy"]
backend = "webhook"
url = "http://127.0.0.1:{port}/hooks/echo-signature"

[[tools.deployer.deploy]]
name = "unreachable"
approval = "none"
rights = ["deploy"]
backend = "webhook"
url = "http://127.0.0.1:1/hooks/release?key=hook-token-77#frag"

[[tools.deployer.deploy]]
name = "straddling"
approval = "none"
rights = ["deploy"]
backend = "exec"
program = "/bin/sh"
args = ["-c", "head -c 65530 /dev/zero | tr '\\0' x; cat '{key}'"]

[[tools.deployer.secrets]]
name = "deploy-key"
source = "file:{key}"
send-to = ["https://elsewhere.example"]

# The same value as a variable a target passes its program.
[[tools.deployer.secrets]]
name = "path-secret"
source = "env:PATH"

[[tools.deployer.deploy]]
name = "env-dump"
approval = "none"
rights = ["deploy"]
backend = "exec"
program = "/bin/sh"
args = ["-c", "echo \"path=$PATH\"; printf %s \"$PATH\" | od -An -tx1 | tr -d ' \\n'"]
env = ["PATH"]

[[tools.deployer.deploy]]
name = "env-straddle"
approval = "none"
rights = ["deploy"]
backend = "exec"
program = "/bin/sh"
args = ["-c", "n=${{#PATH}}; r=$(( (131072 - 3 - 2 * n) / n )); i=0; while [ $i -lt $r ]; do printf %s \"$PATH\"; i=$((i + 1)); done; head -c $(( 131072 - 3 - r * n )) /dev/zero | tr '\\0' x; printf %s \"$PATH\""]
env = ["PATH"]

[[tools.deployer.deploy]]
name = "env-across-cut"
approval = "none"
rights = ["deploy"]
backend = "exec"
program = "/bin/sh"
args = ["-c", "n=${{#PATH}}; s=$(( 131072 - n - n / 2 )); r=$(( s / n )); i=0; while [ $i -lt $r ]; do printf %s \"$PATH\"; i=$((i + 1)); done; head -c $(( s - r * n )) /dev/zero | tr '\\0' x; printf %s \"$PATH\"; head -c 4096 /dev/zero | tr '\\0' y"]
env = ["PATH"]

[[tools.deployer.deploy]]
name = "by-default"
rights = ["deploy"]
backend = "exec"
program = "{script}"
args = ["--env", "by-default", "{{artifact}}", "{out}"]
"#,
        tool = crate::DEPLOY_ARTIFACT,
        ws = ws.display(),
        script = script.display(),
        out = out.display(),
        key = key.display(),
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
    let _ = cell.set(runtime.clone());
    Site {
        _dir: dir,
        ws,
        out,
        hooks,
        audit,
        runtime,
    }
}

impl Site {
    async fn deploy(&self, grant: &Grant, target: &str) -> Result<warden::Invocation, Error> {
        self.deploy_artifact(grant, target, "dist/app.txt").await
    }

    async fn deploy_artifact(
        &self,
        grant: &Grant,
        target: &str,
        artifact: &str,
    ) -> Result<warden::Invocation, Error> {
        let input = json!({"target": target, "artifact": artifact}).to_string();
        self.runtime.invoke("deployer", grant, &input).await
    }
}

#[tokio::test]
async fn exec_targets_run_the_program_on_a_copy_with_a_cleared_environment() {
    let s = site().await;
    let grant = Grant::new("release")
        .fs("workspace", &s.ws, Rights::READ)
        .deploy("staging");
    let run = s.deploy(&grant, "staging").await.unwrap();
    let out: Value = serde_json::from_str(&run.output.unwrap()).unwrap();
    assert_eq!(out["status"], 0);
    assert_eq!(
        out["output"],
        "deployed app.txt to staging PATH=set HOME=unset\n"
    );
    assert_eq!(
        std::fs::read_to_string(s.out.join("deployed.txt")).unwrap(),
        "release 1.2.3"
    );
    let records = s.audit.invocation(&run.id);
    let d = records
        .iter()
        .find(|r| r.capability.as_deref() == Some("deploy") && r.event == Event::Decision)
        .unwrap();
    assert_eq!(
        (d.decision.as_deref(), d.rule.as_deref()),
        (Some("allow"), Some("deploy.grant"))
    );
    let done = records.iter().find(|r| r.event == Event::Deploy).unwrap();
    assert_eq!(done.outcome.as_deref(), Some("status 0"));
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"release 1.2.3"));
    assert!(
        done.resource
            .as_deref()
            .unwrap()
            .ends_with(&format!("sha256:{digest}")),
        "{done:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_targets_get_a_live_identity_token_and_a_description() {
    let s = site().await;
    let grant = Grant::new("release")
        .fs("workspace", &s.ws, Rights::READ)
        .deploy("production");
    let run = s.deploy(&grant, "production").await.unwrap();
    let out: Value = serde_json::from_str(&run.output.unwrap()).unwrap();
    assert_eq!(
        (out["status"].as_i64(), out["output"].as_str()),
        (Some(202), Some("accepted dist/app.txt"))
    );
    let (active, body) = s.hooks.lock().unwrap()[0].clone();
    assert!(
        active,
        "the receiver verified a live token for this invocation"
    );
    assert_eq!(body["target"], "production");
    assert_eq!(body["task"], "release");
    assert_eq!(body["invocation"], run.id);
    assert_eq!(body["artifact"]["size"], 13);
}

#[tokio::test]
async fn deploy_is_its_own_right() {
    let s = site().await;
    // A write handle cannot deploy: the artifact must be readable.
    let grant = Grant::new("t")
        .fs("workspace", &s.ws, Rights::WRITE)
        .deploy("staging");
    let err = s
        .deploy(&grant, "staging")
        .await
        .unwrap()
        .output
        .unwrap_err();
    assert_eq!(err.kind, warden::ToolErrorKind::Denied);
    assert_eq!(
        err.message,
        "the artifact's handle 'workspace' holds write, not read"
    );
    // Read and write without the deploy grant: no deployment.
    let grant = Grant::new("t").fs("workspace", &s.ws, Rights::READ | Rights::WRITE);
    let run = s.deploy(&grant, "staging").await.unwrap();
    let err = run.output.unwrap_err();
    assert_eq!(
        err.message,
        "no deploy target 'staging' in this task's grant"
    );
    let d = s
        .audit
        .invocation(&run.id)
        .into_iter()
        .find(|r| r.capability.as_deref() == Some("deploy"))
        .unwrap();
    assert_eq!(d.decision.as_deref(), Some("deny"));
    // A deploy target gives no file access.
    let grant = Grant::new("t").deploy("staging");
    let err = s
        .deploy(&grant, "staging")
        .await
        .unwrap()
        .output
        .unwrap_err();
    assert_eq!(err.message, "no handle 'workspace' in this task's grant");
    assert!(!s.out.join("deployed.txt").exists(), "nothing was deployed");
    // An unknown target is refused before anything runs.
    let err = s
        .deploy(&Grant::new("t").deploy("moon"), "moon")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Grant(GrantError::UnknownTarget { name, .. }) if name == "moon"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(
            "its targets: staging, production, chatty, lingering, escaping, hung, gated, echoing, echoing-signature, unreachable, straddling, env-dump, env-straddle, env-across-cut, by-default"
        ),
        "{err}"
    );
}

#[test]
fn deploy_targets_take_only_the_deploy_right() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[tools.d]\ncomponent = \"{}\"\n[[tools.d.deploy]]\nname = \"x\"\nrights = [\"write\"]\nbackend = \"exec\"\nprogram = \"/bin/true\"\n\
         [[tools.d.deploy]]\nname = \"y\"\nrights = [\"deploy\"]\nbackend = \"ftp\"\n",
        crate::DEPLOY_ARTIFACT
    );
    let err = Manifest::parse(&text, std::path::Path::new("m.toml"), dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "m.toml:5:10: tools.d.deploy[0].rights: a deploy target takes exactly the deploy right"
        ),
        "{err}"
    );
    assert!(
        err.contains("tools.d.deploy[1].backend: unknown backend 'ftp' (expected exec or webhook)"),
        "{err}"
    );
}

#[tokio::test]
async fn an_approval_gated_target_waits_for_an_approver() {
    let s = site().await;
    let grant = Grant::new("t")
        .fs("workspace", &s.ws, Rights::READ)
        .deploy("gated");
    let run = s.deploy(&grant, "gated").await.unwrap();
    let err = run.output.unwrap_err();
    assert_eq!(err.message, "denied by deny-all (no approver configured)");
    assert!(!s.out.join("deployed.txt").exists());
    let asked = s
        .audit
        .invocation(&run.id)
        .into_iter()
        .find(|r| r.event == Event::ApprovalRequested)
        .unwrap();
    assert_eq!(asked.action.as_deref(), Some("deploy.run"));
    assert!(
        asked
            .message
            .as_deref()
            .unwrap()
            .contains("to 'gated' (exec)"),
        "{asked:?}"
    );

    // However long the artifact's path (hidden characters escape to eight
    // times their bytes), where a link in it leads, its size, digest and
    // target are all in what the person is shown.
    let hidden = "\u{34f}".repeat(120);
    let long = s.ws.join(format!(
        "dist/{hidden}/{hidden}/{hidden}/{hidden}/{hidden}/{hidden}"
    ));
    std::fs::create_dir_all(&long).unwrap();
    std::os::unix::fs::symlink("../../../../../../app.txt", long.join("app")).unwrap();
    let artifact = format!("dist/{hidden}/{hidden}/{hidden}/{hidden}/{hidden}/{hidden}/app");
    let run = s.deploy_artifact(&grant, "gated", &artifact).await.unwrap();
    assert!(run.output.is_err());
    let asked = s
        .audit
        .invocation(&run.id)
        .into_iter()
        .find(|r| r.event == Event::ApprovalRequested)
        .unwrap();
    let shown = asked.message.unwrap();
    for fact in [
        "(resolves to dist/app.txt)",
        "(13 bytes, sha256 ",
        "to 'gated' (exec)",
    ] {
        assert!(shown.contains(fact), "{fact}: {shown}");
    }
    assert!(shown.len() <= 4096, "{}", shown.len());
    // The trail names the file deployed, not only the link the tool named.
    let decided = s
        .audit
        .invocation(&run.id)
        .into_iter()
        .find(|r| r.event == Event::Decision && r.capability.as_deref() == Some("deploy"))
        .unwrap();
    let resource = decided.resource.unwrap();
    assert!(
        resource.starts_with("gated <- workspace:dist/")
            && resource.ends_with("; resolves to dist/app.txt"),
        "{resource}"
    );
}

#[tokio::test]
async fn a_deploy_target_waits_for_a_person_unless_the_manifest_waives_it() {
    let s = site().await;
    // No approval field: a person approves (here nobody answers: denied).
    let grant = Grant::new("t")
        .fs("workspace", &s.ws, Rights::READ)
        .deploy("by-default");
    let run = s.deploy(&grant, "by-default").await.unwrap();
    let err = run.output.unwrap_err();
    assert_eq!(err.message, "denied by deny-all (no approver configured)");
    assert!(!s.out.join("deployed.txt").exists());
    let records = s.audit.invocation(&run.id);
    let asked = records
        .iter()
        .find(|r| r.event == Event::ApprovalRequested)
        .expect("an approval request");
    assert_eq!(asked.action.as_deref(), Some("deploy.run"));
    assert!(
        records.iter().all(|r| r.event != Event::Deploy),
        "{records:?}"
    );
    // `approval = "none"` (staging): it runs without asking.
    let grant = Grant::new("t")
        .fs("workspace", &s.ws, Rights::READ)
        .deploy("staging");
    let run = s.deploy(&grant, "staging").await.unwrap();
    assert!(run.output.is_ok(), "{:?}", run.output);
    assert!(
        s.audit
            .invocation(&run.id)
            .iter()
            .all(|r| r.event != Event::ApprovalRequested)
    );
}

// ---- Nothing outlives the deadline, output is capped (issue #11, items 10, 11) ----

#[tokio::test]
async fn a_named_pipe_or_a_directory_is_not_an_artifact_and_nothing_blocks_on_it() {
    let s = site().await;
    let fifo = s.ws.join("dist/pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let grant = Grant::new("t")
        .fs("workspace", &s.ws, Rights::READ)
        .deploy("staging");
    let started = std::time::Instant::now();
    for (artifact, kind) in [("dist/pipe", "a named pipe"), ("dist", "a directory")] {
        let run = s
            .deploy_artifact(&grant, "staging", artifact)
            .await
            .unwrap();
        let err = run.output.unwrap_err();
        assert_eq!(err.kind, warden::ToolErrorKind::Denied);
        assert_eq!(
            err.message,
            format!(
                "{artifact} is not a regular file (it is {kind}); only a regular file can be deployed"
            )
        );
        let d = s
            .audit
            .invocation(&run.id)
            .into_iter()
            .find(|r| r.capability.as_deref() == Some("deploy"))
            .unwrap();
        assert_eq!(
            (d.decision.as_deref(), d.rule.as_deref()),
            (Some("deny"), Some("deploy.artifact"))
        );
    }
    // Refused at once: the open did not wait for a writer to the pipe.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(!s.out.join("deployed.txt").exists());
}

#[tokio::test]
async fn a_program_that_floods_its_output_is_read_to_the_end_and_capped() {
    let s = site().await;
    let grant = Grant::new("t")
        .fs("workspace", &s.ws, Rights::READ)
        .deploy("chatty");
    let run = s.deploy(&grant, "chatty").await.unwrap();
    let out: Value = serde_json::from_str(&run.output.unwrap()).unwrap();
    assert_eq!(
        out["status"], 0,
        "the program was not blocked on a full pipe"
    );
    let output = out["output"].as_str().unwrap();
    assert_eq!(output.len(), 64 << 10);
    assert!(output.bytes().all(|b| b == b'x'));
}

/// A deployment running when its invocation is cancelled has an outcome
/// in the trail all the same: `stopped`, recorded by its gate pass as the
/// deployment's future is dropped, before the invocation's end.
#[tokio::test]
async fn a_deployment_stopped_by_a_cancel_has_its_outcome_recorded() {
    let s = site().await;
    let grant = Grant::new("cancelled-deploy")
        .fs("workspace", &s.ws, Rights::READ)
        .deploy("hung");
    let cancel = tokio_util::sync::CancellationToken::new();
    let options = warden::InvokeOptions {
        cancel: Some(cancel.clone()),
        ..Default::default()
    };
    let input = json!({"target": "hung", "artifact": "dist/app.txt"}).to_string();
    let call = s.runtime.invoke_with("deployer", &grant, &input, options);
    let ours = |r: &warden::audit::Record| &*r.task == "cancelled-deploy";
    let cancelled = async {
        // Once the deployment is allowed (its program then runs for 1 s).
        let allowed = |r: &warden::audit::Record| {
            ours(r) && r.event == Event::Decision && r.capability.as_deref() == Some("deploy")
        };
        while !s.audit.records().iter().any(allowed) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        cancel.cancel();
    };
    let (ended, ()) = tokio::join!(call, cancelled);
    assert!(matches!(ended, Err(Error::Cancelled)), "{ended:?}");
    let records: Vec<_> = s.audit.records().into_iter().filter(ours).collect();
    let n = records.len();
    let kinds: Vec<_> = records[n - 3..]
        .iter()
        .map(|r| (r.event, r.decision.as_deref(), r.outcome.as_deref()))
        .collect();
    assert_eq!(
        kinds,
        [
            (Event::Decision, Some("allow"), None),
            (Event::Outcome, None, Some("stopped")),
            (Event::InvocationEnd, None, Some("cancelled")),
        ],
        "{records:#?}"
    );
    let stopped = &records[n - 2];
    assert_eq!(
        (stopped.capability.as_deref(), stopped.action.as_deref()),
        (Some("deploy"), records[n - 3].action.as_deref()),
        "{records:#?}"
    );
}

/// A webhook's token often rides in its URL's query or path: a failed
/// delivery names the webhook by its origin (not reqwest's copy of the
/// whole URL), and neither the tool nor the trail learns the rest.
#[tokio::test]
async fn a_failed_webhook_is_named_without_its_query() {
    let s = site().await;
    let grant = Grant::new("t")
        .fs("workspace", &s.ws, Rights::READ)
        .deploy("unreachable");
    let run = s.deploy(&grant, "unreachable").await.unwrap();
    let err = run.output.unwrap_err();
    assert!(
        err.message
            .starts_with("webhook http://127.0.0.1:1 failed: "),
        "{}",
        err.message
    );
    let trail = format!("{:?}", s.audit.invocation(&run.id));
    for shown in [&err.message, &trail] {
        assert!(!shown.contains("hook-token-77"), "{shown}");
        assert!(!shown.contains("/hooks/release"), "{shown}");
    }
}

#[tokio::test]
async fn a_program_that_hangs_is_killed_at_its_timeout() {
    let s = site().await;
    let grant = Grant::new("t")
        .fs("workspace", &s.ws, Rights::READ)
        .deploy("hung");
    let started = std::time::Instant::now();
    let run = s.deploy(&grant, "hung").await.unwrap();
    let err = run.output.unwrap_err();
    assert_eq!(err.message, "sleep did not finish within 1s");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let done = s
        .audit
        .invocation(&run.id)
        .into_iter()
        .find(|r| r.event == Event::Deploy)
        .unwrap();
    assert_eq!(done.outcome.as_deref(), Some("error"));
}

/// A program that deploys, starts a helper holding its output open and
/// exits 0 waited for the helper until the target's timeout, and the
/// deployment that happened was answered and recorded as timed out. Its
/// output gets a moment after it exits; then what it left in its process
/// group is killed, and its outcome is its own.
#[tokio::test]
async fn a_program_that_leaves_a_helper_holding_its_output_ends_as_it_exited() {
    let s = site().await;
    let grant = Grant::new("t")
        .fs("workspace", &s.ws, Rights::READ)
        .deploy("lingering");
    let started = std::time::Instant::now();
    let run = s.deploy(&grant, "lingering").await.unwrap();
    let took = started.elapsed();
    let out: serde_json::Value = serde_json::from_str(&run.output.unwrap()).unwrap();
    assert_eq!(out["status"], 0, "{out}");
    assert_eq!(out["output"], "shipped\n", "{out}");
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
    let left = std::process::Command::new("pgrep")
        .args(["-f", "sleep 302.9"])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "the helper is still running: {}",
        String::from_utf8_lossy(&left.stdout)
    );
    let done = s
        .audit
        .invocation(&run.id)
        .into_iter()
        .find(|r| r.event == Event::Deploy)
        .unwrap();
    assert_eq!(done.outcome.as_deref(), Some("status 0"));

    // One that left the group (`setsid`) is not killed with it, and is no
    // longer waited for either: a second after the group is killed, the
    // program's own status stands.
    let grant = Grant::new("t")
        .fs("workspace", &s.ws, Rights::READ)
        .deploy("escaping");
    let started = std::time::Instant::now();
    let run = s.deploy(&grant, "escaping").await.unwrap();
    let took = started.elapsed();
    let _ = std::process::Command::new("pkill")
        .args(["-f", "sleep 305.5"])
        .status();
    let out: serde_json::Value = serde_json::from_str(&run.output.unwrap()).unwrap();
    assert_eq!(out["status"], 0, "{out}");
    assert_eq!(out["output"], "shipped\n", "{out}");
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
}

/// A deployment carries its artifact to a program or a webhook, which is no
/// secret's `send-to`: an artifact holding a granted secret's value (in its
/// bytes, encoded or not, or in its name) is refused before anything runs,
/// and the refusal is recorded. What comes back is redacted before it is
/// cut, and a webhook's own identity token does not come back to the tool.
#[tokio::test]
async fn a_deployment_carries_no_secret_and_hands_none_back() {
    let s = site().await;
    let grant = || {
        Grant::new("t")
            .fs("workspace", &s.ws, Rights::READ)
            .deploy("staging")
            .deploy("echoing")
            .deploy("echoing-signature")
            .deploy("straddling")
            .secret("deploy-key")
    };
    let hex: String = DEPLOY_KEY.bytes().map(|b| format!("{b:02x}")).collect();
    std::fs::write(s.ws.join("dist/plain.txt"), format!("key={DEPLOY_KEY}\n")).unwrap();
    std::fs::write(s.ws.join("dist/hex.txt"), format!("key={hex}\n")).unwrap();
    std::fs::write(s.ws.join(format!("dist/{DEPLOY_KEY}.txt")), "named").unwrap();
    for artifact in [
        "dist/plain.txt".to_owned(),
        "dist/hex.txt".to_owned(),
        format!("dist/{DEPLOY_KEY}.txt"),
    ] {
        let run = s
            .deploy_artifact(&grant(), "staging", &artifact)
            .await
            .unwrap();
        let err = run.output.unwrap_err();
        assert_eq!(err.kind, warden::ToolErrorKind::Denied, "{artifact}");
        // In its name, the value is one the tool wrote: held by reference,
        // it can only be a guess, refused at the gate.
        let named = artifact.contains(DEPLOY_KEY);
        let (reason, rule) = match named {
            true => (
                "exfiltration attempt: the deploy run call holds the value of secret \
                 'deploy-key', which this tool may use only by reference",
                "secret.guessed",
            ),
            false => (
                "exfiltration attempt: the artifact carries the value of secret 'deploy-key', \
                 and a deployment is no secret's send-to",
                "secret.send-to",
            ),
        };
        assert_eq!(err.message, reason, "{artifact}");
        let d = s
            .audit
            .invocation(&run.id)
            .into_iter()
            .find(|r| r.capability.as_deref() == Some("deploy"))
            .unwrap();
        assert_eq!(
            (d.decision.as_deref(), d.rule.as_deref()),
            (Some("deny"), Some(rule)),
            "{artifact}"
        );
        let trail = serde_json::to_string(&s.audit.invocation(&run.id)).unwrap();
        assert!(!trail.contains(DEPLOY_KEY), "{trail}");
    }
    assert!(
        !s.out.join("deployed.txt").exists(),
        "a refused artifact was deployed"
    );
    // The artifact without the secret goes.
    let run = s.deploy(&grant(), "staging").await.unwrap();
    let out: Value = serde_json::from_str(&run.output.unwrap()).unwrap();
    assert_eq!(out["status"], 0, "{out}");

    // A receiver quoting the token it was sent: the tool gets the marker.
    let run = s.deploy(&grant(), "echoing").await.unwrap();
    let out: Value = serde_json::from_str(&run.output.unwrap()).unwrap();
    assert_eq!(out["output"], "got [REDACTED:deploy-token]", "{out}");
    // Its signature alone (the header and claims can be guessed).
    let run = s.deploy(&grant(), "echoing-signature").await.unwrap();
    let out: Value = serde_json::from_str(&run.output.unwrap()).unwrap();
    assert_eq!(out["output"], "sig [REDACTED:deploy-token]", "{out}");

    // A program printing the value of a secret the tool holds only by
    // reference (here across the 64 KiB cut): withheld whole, not marked.
    // The artifact can make a program print candidates (a tarball of files
    // named after ten thousand PINs, listed as unpacked), and a marker
    // would say which was right: recorded as a guess, and the gate trips.
    let run = s.deploy(&grant(), "straddling").await.unwrap();
    let out: Value = serde_json::from_str(&run.output.unwrap()).unwrap();
    assert_eq!(
        out["output"],
        "[exfiltration attempt: the deploy program's output holds the value of secret \
         'deploy-key', which this tool may use only by reference: withheld]",
        "{out}"
    );
    let guessed: Vec<_> = (s.audit.invocation(&run.id).into_iter())
        .filter(|r| r.rule.as_deref() == Some("secret.guessed"))
        .map(|r| (r.capability.unwrap(), r.action.unwrap()))
        .collect();
    assert_eq!(guessed, [("deploy".to_owned(), "output".to_owned())]);
    let trail = serde_json::to_string(&s.audit.invocation(&run.id)).unwrap();
    assert!(
        !trail.contains(DEPLOY_KEY) && !trail.contains("xxxxx[REDAC"),
        "{trail}"
    );
}

/// What a target passes its program through the environment is the
/// host's (a cloud credential), not the tool's: a program printing it, in
/// any encoding redaction knows, hands the tool and the trail a marker.
#[tokio::test]
async fn a_programs_environment_is_redacted_from_what_it_prints() {
    let s = site().await;
    let grant = Grant::new("t")
        .fs("workspace", &s.ws, Rights::READ)
        .deploy("env-dump");
    let path = std::env::var("PATH").unwrap();
    assert!(path.len() >= 8, "{path}");
    let run = s.deploy(&grant, "env-dump").await.unwrap();
    let out: Value = serde_json::from_str(&run.output.unwrap()).unwrap();
    assert_eq!(out["status"], 0, "{out}");
    assert_eq!(
        out["output"], "path=[REDACTED:PATH]\n[REDACTED:PATH]",
        "{out}"
    );
    let trail = serde_json::to_string(&s.audit.invocation(&run.id)).unwrap();
    assert!(!trail.contains(&path), "{trail}");
    assert!(trail.contains("path=[REDACTED:PATH]"), "{trail}");
    // A value the tool holds by reference that is (or is inside) a value
    // passed: looked for before the variables are redacted, so it is a
    // guess withheld, not a variable's marker.
    let grant = Grant::new("t")
        .fs("workspace", &s.ws, Rights::READ)
        .deploy("env-dump")
        .secret("path-secret");
    let run = s.deploy(&grant, "env-dump").await.unwrap();
    let out: Value = serde_json::from_str(&run.output.unwrap()).unwrap();
    assert_eq!(
        out["output"],
        "[exfiltration attempt: the deploy program's output holds the value of secret \
         'path-secret', which this tool may use only by reference: withheld]",
        "{out}"
    );

    // Printed again and again, with a copy across where the output is
    // read (128 KiB), or across where an end as long as a value would be
    // dropped: cut, the output could end in part of a value, in a form
    // of any length, so it is withheld whole (before, markers shrinking
    // the rest brought such a head into what the tool gets).
    let withheld = "[sh printed more than 128 KiB: its output is withheld, as, cut there, it \
                    could end in part of a value passed through its environment]";
    let head = &path[..path.len() / 2];
    for target in ["env-straddle", "env-across-cut"] {
        let grant = Grant::new("t")
            .fs("workspace", &s.ws, Rights::READ)
            .deploy(target);
        let run = s.deploy(&grant, target).await.unwrap();
        let out: Value = serde_json::from_str(&run.output.unwrap()).unwrap();
        assert_eq!(out["output"], withheld, "{target}");
        let trail = serde_json::to_string(&s.audit.invocation(&run.id)).unwrap();
        assert!(!trail.contains(head), "{target}: {trail}");
    }
}

/// Reading an artifact is a read of its handle: a runtime policy that
/// forbids reading a path forbids deploying it, through a link too (the
/// policy sees the resolved path), before anything runs; and it is the
/// policy's refusal a tool gets, not which granted secret the file holds.
#[tokio::test]
async fn a_policy_that_forbids_reading_a_path_forbids_deploying_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let ws = root.join("ws");
    std::fs::create_dir_all(ws.join("keys")).unwrap();
    std::fs::create_dir_all(ws.join("dist")).unwrap();
    // A value of a secret the tool is granted: which secret a file holds
    // is something of what is in it, and the tool may not read this one.
    std::fs::write(ws.join("keys/prod.key"), "key=sek-prod-7f3a9c21\n").unwrap();
    std::fs::write(root.join("prod-secret"), "sek-prod-7f3a9c21").unwrap();
    std::fs::write(ws.join("dist/app.txt"), "release").unwrap();
    std::os::unix::fs::symlink("../keys/prod.key", ws.join("dist/innocent.txt")).unwrap();
    std::fs::write(
        root.join("keys.cedar"),
        "@id(\"no-reading-keys\")\n@reason(\"keys are not for tools\")\n\
         forbid (principal, action == Warden::Action::\"fs::read\", resource)\n\
         when { resource.path like \"keys/*\" };\n",
    )
    .unwrap();
    let marker = root.join("shipped");
    let text = format!(
        "policies = [\"keys.cedar\"]\n\n[tools.deployer]\ncomponent = \"{tool}\"\n\
         [[tools.deployer.fs]]\nhandle = \"workspace\"\nwithin = \"{ws}\"\nrights = [\"read\"]\n\n\
         [[tools.deployer.deploy]]\nname = \"staging\"\napproval = \"none\"\nrights = [\"deploy\"]\n\
         backend = \"exec\"\nprogram = \"/bin/sh\"\nargs = [\"-c\", \"echo shipped >> '{marker}'\"]\n\n\
         [[tools.deployer.secrets]]\nname = \"prod-key\"\nsource = \"file:{secret}\"\n",
        tool = crate::DEPLOY_ARTIFACT,
        secret = root.join("prod-secret").display(),
        ws = ws.display(),
        marker = marker.display(),
    );
    std::fs::write(root.join("manifest.toml"), text).unwrap();
    let audit = MemorySink::new();
    let runtime = Runtime::builder()
        .manifest(Manifest::load(root.join("manifest.toml")).unwrap())
        .audit(audit.clone())
        .cache_dir(crate::common::shared_cache())
        .build()
        .unwrap();
    let grant = Grant::new("t")
        .fs("workspace", &ws, Rights::READ)
        .deploy("staging")
        .secret("prod-key");
    for artifact in ["keys/prod.key", "dist/innocent.txt"] {
        let input = json!({"target": "staging", "artifact": artifact}).to_string();
        let run = runtime.invoke("deployer", &grant, &input).await.unwrap();
        let err = run.output.unwrap_err();
        assert_eq!(err.kind, warden::ToolErrorKind::Denied, "{artifact}");
        // The policy's refusal, not that the file carries `prod-key`.
        assert!(
            err.message.contains("keys are not for tools") && !err.message.contains("prod-key"),
            "{artifact}: {err}"
        );
        let d = audit
            .invocation(&run.id)
            .into_iter()
            .find(|r| r.capability.as_deref() == Some("deploy") && r.event == Event::Decision)
            .unwrap();
        assert_eq!(d.decision.as_deref(), Some("deny"), "{artifact}");
        assert_eq!(
            d.policies.as_deref(),
            Some(&["no-reading-keys".to_owned()][..]),
            "{artifact}"
        );
    }
    assert!(!marker.exists(), "a forbidden artifact was deployed");
    let input = json!({"target": "staging", "artifact": "dist/app.txt"}).to_string();
    let run = runtime.invoke("deployer", &grant, &input).await.unwrap();
    assert!(run.output.is_ok(), "{:?}", run.output);
    assert!(marker.exists());
}
