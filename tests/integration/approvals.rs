//! Approval gates: digest-bound, single-use, expiring approvals.

use crate::common::{World, code, message};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use warden::approval::{ApprovalAnswer, ApprovalRequest, Approver};
use warden::audit::{Event, MemorySink};
use warden::{Grant, Manifest, Rights, Runtime};

#[derive(Clone, Copy)]
enum Mode {
    Approve,
    Deny,
    Never,
    /// Answers every request with the first answer it gave.
    ReplayFirst,
}

struct Script {
    mode: Mode,
    seen: Mutex<Vec<ApprovalRequest>>,
}

#[async_trait::async_trait]
impl Approver for Script {
    async fn ask(&self, r: &ApprovalRequest) -> Option<ApprovalAnswer> {
        let first = {
            let mut seen = self.seen.lock().unwrap();
            seen.push(r.clone());
            seen[0].digest.clone()
        };
        let answer = |digest: String, approved| {
            Some(ApprovalAnswer {
                digest,
                approved,
                by: "script".into(),
            })
        };
        match self.mode {
            Mode::Approve => answer(r.digest.clone(), true),
            Mode::Deny => answer(r.digest.clone(), false),
            Mode::ReplayFirst => answer(first, true),
            Mode::Never => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                None
            }
        }
    }
}

/// A world whose `gated` tool needs approval to write (not to read).
fn gated(mode: Option<Mode>) -> (World, Runtime, Arc<MemorySink>, Option<Arc<Script>>) {
    let world = World::new();
    let text = format!(
        "[tools.gated]\ncomponent = \"{}\"\n[[tools.gated.fs]]\nhandle = \"workspace\"\nwithin = \"{}\"\nrights = [\"read\", \"write\"]\napproval = [\"write\"]\n",
        crate::FS_PROBE,
        world.workspace.display()
    );
    let path = world.dir.path().join("gated.toml");
    std::fs::write(&path, text).unwrap();
    let audit = MemorySink::new();
    let script = mode.map(|mode| {
        Arc::new(Script {
            mode,
            seen: Mutex::default(),
        })
    });
    let mut b = Runtime::builder()
        .manifest(Manifest::load(&path).unwrap())
        .audit(audit.clone())
        .cache_dir(crate::common::shared_cache())
        .approval_timeout(Duration::from_millis(300));
    if let Some(s) = &script {
        b = b.approver(s.clone());
    }
    (world, b.build().unwrap(), audit, script)
}

async fn write(world: &World, rt: &Runtime, contents: &str) -> (serde_json::Value, String) {
    let grant =
        Grant::new("gated-task").fs("workspace", &world.workspace, Rights::READ | Rights::WRITE);
    let input = json!({"op": "write", "path": "a.txt", "contents": contents}).to_string();
    let run = rt.invoke("gated", &grant, &input).await.unwrap();
    (serde_json::from_str(&run.output.unwrap()).unwrap(), run.id)
}

#[tokio::test]
async fn an_approved_write_happens_and_both_sides_are_audited() {
    let (world, rt, audit, script) = gated(Some(Mode::Approve));
    let (r, inv) = write(&world, &rt, "approved").await;
    assert_eq!(code(&r), None, "{r}");
    assert_eq!(
        std::fs::read_to_string(world.workspace.join("a.txt")).unwrap(),
        "approved"
    );
    let seen = script.unwrap().seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].action.as_str(), seen[0].resource.as_str()),
        ("fs.write", "workspace:a.txt")
    );
    assert_eq!(seen[0].task, "gated-task");
    assert_eq!(seen[0].invocation, inv);
    assert!(
        seen[0].summary.contains("8 bytes, sha256 "),
        "{}",
        seen[0].summary
    );
    // What is written is shown, not only its size and digest.
    assert!(
        seen[0].summary.ends_with("; contents: \"approved\""),
        "{}",
        seen[0].summary
    );
    let records = audit.invocation(&inv);
    let asked = records
        .iter()
        .find(|r| r.event == Event::ApprovalRequested)
        .unwrap();
    assert_eq!(
        asked.reason.as_deref(),
        Some(format!("digest {}", seen[0].digest).as_str())
    );
    let answer = records
        .iter()
        .find(|r| r.capability.as_deref() == Some("approval") && r.event == Event::Decision)
        .unwrap();
    assert_eq!(
        (answer.decision.as_deref(), answer.reason.as_deref()),
        (Some("allow"), Some("approved by script"))
    );
}

/// A runtime whose tool `gated` (the fs probe) writes to the workspace
/// only once a scripted person approves, holding secret `name` (`value`,
/// with `extra` lines for it); its approver, trail and grant.
fn gated_writes(
    world: &World,
    name: &str,
    value: &str,
    extra: &str,
) -> (Runtime, Arc<Script>, Arc<MemorySink>, Grant) {
    std::fs::write(world.dir.path().join(format!("{name}.txt")), value).unwrap();
    let text = format!(
        "[tools.gated]\ncomponent = \"{}\"\n[[tools.gated.fs]]\nhandle = \"workspace\"\nwithin = \"{}\"\nrights = [\"read\", \"write\"]\napproval = [\"write\"]\n[[tools.gated.secrets]]\nname = \"{name}\"\nsource = \"file:{name}.txt\"\n{extra}",
        crate::FS_PROBE,
        world.workspace.display()
    );
    let path = world.dir.path().join("gated.toml");
    std::fs::write(&path, text).unwrap();
    let script = Arc::new(Script {
        mode: Mode::Approve,
        seen: Mutex::default(),
    });
    let audit = MemorySink::new();
    let rt = Runtime::builder()
        .manifest(Manifest::load(&path).unwrap())
        .audit(audit.clone())
        .cache_dir(crate::common::shared_cache())
        .approver(script.clone())
        .build()
        .unwrap();
    let grant = Grant::new("t")
        .fs("workspace", &world.workspace, Rights::READ | Rights::WRITE)
        .secret(name);
    (rt, script, audit, grant)
}

/// Contents written under approval are previewed to the person, and to
/// the agent when it answers its own elicitation: a value held by
/// reference in them would come back as a marker, saying which of the
/// candidates written was right. The write is refused as a guess before
/// anyone is asked, and the gate trips.
#[tokio::test]
async fn a_guess_in_a_files_contents_is_refused_before_a_person_is_asked() {
    let world = World::new();
    let (rt, script, audit, grant) = gated_writes(&world, "pin", "4821", "");
    let write = |contents: &str| {
        json!({"op": "write", "path": "guesses.txt", "contents": contents}).to_string()
    };
    let run = rt
        .invoke("gated", &grant, &write("4820 4821 4822"))
        .await
        .unwrap();
    let out: serde_json::Value = serde_json::from_str(&run.output.unwrap()).unwrap();
    assert_eq!(
        out["error"],
        json!({"code": "denied", "message": "exfiltration attempt: the approval request holds \
            the value of secret 'pin', which this tool may use only by reference"})
    );
    assert!(script.seen.lock().unwrap().is_empty(), "a person was asked");
    assert!(!world.workspace.join("guesses.txt").exists());
    let rules: Vec<_> = (audit.invocation(&run.id).into_iter())
        .filter(|r| r.event == Event::Decision)
        .filter_map(|r| r.rule)
        .collect();
    assert!(rules.contains(&"secret.guessed".to_owned()), "{rules:?}");
    // Past the preview's cut, the length shown is the length written: a
    // right guess there does not lengthen it by a marker's excess.
    let padded = |pin: &str| format!("{} {pin}", "x".repeat(1100));
    for pin in ["4820", "4821"] {
        let run = rt
            .invoke("gated", &grant, &write(&padded(pin)))
            .await
            .unwrap();
        assert!(run.output.is_ok(), "{:?}", run.output);
    }
    let seen = script.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    let contents = |i: usize| {
        seen[i]
            .summary
            .split_once("; contents:")
            .unwrap()
            .1
            .to_owned()
    };
    assert_eq!(contents(0), contents(1));
    assert!(
        seen[0].summary.ends_with("…[1105 bytes]\""),
        "{}",
        seen[0].summary
    );
    script.seen.lock().unwrap().clear();
    // Wrong guesses are asked about, as any write.
    let run = rt
        .invoke("gated", &grant, &write("4820 4822"))
        .await
        .unwrap();
    assert!(run.output.is_ok(), "{:?}", run.output);
    assert_eq!(script.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_writes_preview_is_redacted_escaped_and_bounded() {
    let world = World::new();
    // A long token: its marker is far shorter than it, which is what let a
    // cut-then-redact preview show a piece of it (below). Revealable: a
    // value held by reference in a preview is refused as a guess
    // (`a_guess_in_a_files_contents_is_refused_before_a_person_is_asked`).
    let value: String = (0..1000u32)
        .map(|i| char::from(b"0123456789abcdef"[(i * 7 % 16) as usize]))
        .collect();
    let value = format!("sk-preview-{value}");
    let reveal = "reveal = true\napproval = \"none\"\n";
    let (rt, script, audit, grant) = gated_writes(&world, "token", &value, reveal);
    // The secret at the start (found before the preview is cut), a line a
    // terminal would obey, and far more than a person is shown.
    let contents = format!("{value}\n\u{1b}[2Jfake prompt\n{}", "x".repeat(100_000));
    let input = json!({"op": "write", "path": "big.txt", "contents": contents}).to_string();
    let run = rt.invoke("gated", &grant, &input).await.unwrap();
    assert!(run.output.is_ok(), "{:?}", run.output);
    let summary = script.seen.lock().unwrap()[0].summary.clone();
    assert!(!summary.contains(&value[..40]), "{summary}");
    assert!(summary.contains("[REDACTED:token]"), "{summary}");
    assert!(!summary.contains('\u{1b}'), "{summary}");
    assert!(summary.contains("fake prompt"), "{summary}");
    // The contents' 1 KiB, with what precedes them.
    assert!(summary.len() < 1300, "{}", summary.len());
    assert!(summary.ends_with(" bytes]\""), "{summary}");
    // The trail's record of the request shows the same.
    let asked = audit
        .invocation(&run.id)
        .into_iter()
        .find(|r| r.event == Event::ApprovalRequested)
        .unwrap();
    assert_eq!(asked.message.as_deref(), Some(summary.as_str()));

    // The token over and over, so that redacted copies take little room and
    // one copy straddles any fixed read-ahead (64 KiB was one): the preview
    // is redacted whole before it is cut, so no piece of a copy shows.
    let contents = value.repeat(70);
    let input = json!({"op": "write", "path": "big.txt", "contents": contents}).to_string();
    let run = rt.invoke("gated", &grant, &input).await.unwrap();
    assert!(run.output.is_ok(), "{:?}", run.output);
    let summary = script.seen.lock().unwrap()[1].summary.clone();
    assert!(summary.contains("[REDACTED:token]"), "{summary}");
    assert!(!summary.contains("sk-preview-"), "{summary}");
    assert!(!summary.contains(&value[200..240]), "{summary}");
    assert!(summary.len() < 1300, "{}", summary.len());
}

#[tokio::test]
async fn reads_are_not_gated_when_only_writes_need_approval() {
    let (world, rt, _audit, script) = gated(Some(Mode::Deny));
    let grant = Grant::new("t").fs("workspace", &world.workspace, Rights::READ);
    let run = rt
        .invoke("gated", &grant, r#"{"op":"read","path":"a.txt"}"#)
        .await
        .unwrap();
    assert!(run.output.unwrap().contains("alpha"));
    assert!(script.unwrap().seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn denied_unanswered_and_default_mean_denied() {
    for (mode, want) in [
        (Some(Mode::Deny), "denied by script"),
        (Some(Mode::Never), "approval timed out after 0.3s"),
        (None, "denied by deny-all (no approver configured)"),
    ] {
        let (world, rt, _audit, _script) = gated(mode);
        let started = Instant::now();
        let (r, _) = write(&world, &rt, "pwned").await;
        assert_eq!(code(&r), Some("denied"), "{r}");
        assert_eq!(message(&r), want);
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(
            std::fs::read_to_string(world.workspace.join("a.txt")).unwrap(),
            "alpha"
        );
    }
}

#[tokio::test]
async fn a_replayed_approval_does_not_match_another_request() {
    let (world, rt, _audit, script) = gated(Some(Mode::ReplayFirst));
    let (r, _) = write(&world, &rt, "first").await;
    assert_eq!(code(&r), None, "{r}");
    // Another invocation with changed arguments: the replayed answer names
    // the first request's digest.
    let (r, _) = write(&world, &rt, "second").await;
    assert_eq!(code(&r), Some("denied"), "{r}");
    assert_eq!(
        message(&r),
        "the answer from script is for another request (a changed argument, another invocation or a replay)"
    );
    assert_eq!(
        std::fs::read_to_string(world.workspace.join("a.txt")).unwrap(),
        "first"
    );
    let seen = script.unwrap().seen.lock().unwrap().clone();
    assert_ne!(seen[0].digest, seen[1].digest);
}

#[test]
fn approval_fields_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[tools.t]\ncomponent = \"{}\"\n[[tools.t.fs]]\nhandle = \"w\"\nwithin = \".\"\nrights = [\"read\"]\napproval = \"maybe\"\n\
         [[tools.t.secrets]]\nname = \"s\"\nsource = \"env:X\"\napproval = \"later\"\n",
        crate::FS_PROBE
    );
    let err = Manifest::parse(&text, std::path::Path::new("m.toml"), dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "tools.t.fs[0].approval: expected approval = \"required\" or a list of rights"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "tools.t.secrets[0].approval: approval = 'later' (expected \"required\" or \"none\")"
        ),
        "{err}"
    );
}

/// A manifest where write-file needs approval to write.
fn write_file_gated(world: &World) -> std::path::PathBuf {
    let text = format!(
        "[tools.write-file]\ncomponent = \"{}\"\n[[tools.write-file.fs]]\nhandle = \"workspace\"\nwithin = \"{}\"\nrights = [\"write\"]\napproval = \"required\"\n",
        crate::WRITE_FILE,
        world.workspace.display()
    );
    let path = world.dir.path().join("write-gated.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `warden run` under a pseudo-terminal (util-linux `script`), typing `answer`.
fn run_in_pty(world: &World, manifest: &std::path::Path, answer: &str) -> (Option<i32>, String) {
    use std::io::Write;
    let cmd = format!(
        "{} --cache-dir {} run --manifest {} write-file --grant fs:workspace={}:write --audit {} --input '{{\"path\":\"notes.txt\",\"content\":\"hello\"}}'",
        env!("CARGO_BIN_EXE_warden"),
        crate::common::shared_cache().display(),
        manifest.display(),
        world.workspace.display(),
        world.dir.path().join("pty-audit.jsonl").display(),
    );
    let mut child = std::process::Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("util-linux `script` runs the CLI under a pseudo-terminal");
    let mut stdin = child.stdin.take().unwrap();
    // Answer once the prompt is up; the pty buffers the line until it is read.
    std::thread::sleep(std::time::Duration::from_millis(500));
    stdin.write_all(answer.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_terminal_prompt_shows_the_request_and_takes_the_answer() {
    let world = World::new();
    let manifest = write_file_gated(&world);
    let (status, screen) = run_in_pty(&world, &manifest, "y\n");
    for want in [
        "warden: approval needed",
        "action    fs.write",
        "resource  workspace:notes.txt",
        "(5 bytes, sha256 ",
        "approve? [y/N]",
    ] {
        assert!(screen.contains(want), "missing {want:?} in:\n{screen}");
    }
    assert_eq!(status, Some(0), "{screen}");
    assert_eq!(
        std::fs::read_to_string(world.workspace.join("notes.txt")).unwrap(),
        "hello"
    );
    let trail = std::fs::read_to_string(world.dir.path().join("pty-audit.jsonl")).unwrap();
    assert!(trail.contains("approved by terminal ("), "{trail}");

    std::fs::remove_file(world.workspace.join("notes.txt")).unwrap();
    let (status, screen) = run_in_pty(&world, &manifest, "n\n");
    assert_eq!(status, Some(1), "{screen}");
    assert!(screen.contains("denied by terminal ("), "{screen}");
    assert!(!world.workspace.join("notes.txt").exists());
}

/// One HTTP request a webhook receives: its text (head and body) and its
/// body, once the body is whole JSON (or the peer stops sending).
async fn read_request(sock: &mut tokio::net::TcpStream) -> (String, String) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 64 << 10];
    let mut len = 0;
    loop {
        let n = sock.read(&mut buf[len..]).await.unwrap_or(0);
        len += n;
        let text = String::from_utf8_lossy(&buf[..len]).into_owned();
        if let Some((_, body)) = text.split_once("\r\n\r\n")
            && serde_json::from_str::<serde_json::Value>(body).is_ok()
        {
            let body = body.to_owned();
            return (text, body);
        }
        if n == 0 {
            return (text, String::new());
        }
    }
}

/// A runtime over `manifest` whose approvals go to `approver`, and its trail.
fn with_approver(
    manifest: &std::path::Path,
    approver: warden::approval::WebhookApprover,
) -> (Runtime, Arc<MemorySink>) {
    let audit = MemorySink::new();
    let rt = Runtime::builder()
        .manifest(Manifest::load(manifest).unwrap())
        .audit(audit.clone())
        .cache_dir(crate::common::shared_cache())
        .approver(Arc::new(approver))
        .build()
        .unwrap();
    (rt, audit)
}

/// The reason of an invocation's approval decision.
fn approval_reason(audit: &MemorySink, invocation: &str) -> String {
    audit
        .invocation(invocation)
        .into_iter()
        .find(|r| r.capability.as_deref() == Some("approval") && r.event == Event::Decision)
        .and_then(|r| r.reason)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_approver_answers_for_the_digest_it_was_sent() {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let key = Arc::new(warden::KeyPair::from_seed(&[7; 32]));
    let verifier = warden::Verifier::from_jwks(&key.jwks()).unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (text, body) = read_request(&mut sock).await;
            let req: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            // Only a request signed by the host's key counts.
            let header = text
                .lines()
                .find_map(|l| l.strip_prefix("warden-signature: "))
                .unwrap_or_default()
                .to_owned();
            let field = |k: &str| {
                header
                    .split(',')
                    .find_map(|p| p.strip_prefix(k))
                    .unwrap_or_default()
                    .to_owned()
            };
            let t: u64 = field("t=").parse().unwrap_or(0);
            let signed = verifier.verify_raw(
                &field("kid="),
                warden::approval::webhook_message(t, &body).as_bytes(),
                &field("ed25519="),
            );
            // Approve writes, refuse anything under .github/; the request
            // says which agent asked (none authenticated here: null), as a
            // terminal prompt and the queue do.
            let ok = signed
                && req.get("agent") == Some(&serde_json::Value::Null)
                && !req["resource"].as_str().unwrap_or("").contains(".github/");
            let answer =
                json!({"digest": req["digest"], "approved": ok, "by": "ci-bot"}).to_string();
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        }
    });
    let world = World::new();
    let manifest = write_file_gated(&world);
    let approver =
        warden::approval::WebhookApprover::new(&format!("http://127.0.0.1:{port}/approve"))
            .unwrap()
            .signed_by(key.clone());
    let (rt, audit) = with_approver(&manifest, approver);
    let grant = Grant::new("t").fs("workspace", &world.workspace, Rights::WRITE);
    let run = rt
        .invoke("write-file", &grant, r#"{"path":"ok.txt","content":"x"}"#)
        .await
        .unwrap();
    assert!(run.output.is_ok(), "{:?}", run.output);
    let reason = approval_reason(&audit, &run.id);
    assert_eq!(
        reason,
        format!("approved by webhook http://127.0.0.1:{port} (ci-bot)")
    );
    let input = r#"{"path":".github/workflows/ci.yml","content":"x","create_dirs":true}"#;
    let run = rt.invoke("write-file", &grant, input).await.unwrap();
    let err = run.output.unwrap_err();
    assert!(err.message.starts_with("denied by webhook"), "{err}");
    // The same request unsigned: the receiver cannot trust it and refuses.
    let unsigned =
        warden::approval::WebhookApprover::new(&format!("http://127.0.0.1:{port}/approve"))
            .unwrap();
    let rt = Runtime::builder()
        .manifest(Manifest::load(&manifest).unwrap())
        .cache_dir(crate::common::shared_cache())
        .approver(Arc::new(unsigned))
        .build()
        .unwrap();
    let run = rt
        .invoke("write-file", &grant, r#"{"path":"ok.txt","content":"y"}"#)
        .await
        .unwrap();
    let err = run.output.unwrap_err();
    assert!(err.message.starts_with("denied by webhook"), "{err}");
}

#[tokio::test]
async fn a_webhook_answer_is_bounded_and_its_url_token_is_not_shown() {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // First answer: a megabyte. Then: approvals by a very long name.
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((mut sock, _)) = listener.accept().await {
            let (_, body) = read_request(&mut sock).await;
            let req: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let digest = req["digest"].as_str().unwrap_or_default().to_owned();
            let answer = if first {
                format!(
                    "{{\"digest\": \"{digest}\", \"approved\": true, \"pad\": \"{}\"}}",
                    "x".repeat(1 << 20)
                )
            } else {
                json!({"digest": digest, "approved": true, "by": "b".repeat(10_000)}).to_string()
            };
            first = false;
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                answer.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(answer.as_bytes()).await;
        }
    });
    let world = World::new();
    let manifest = write_file_gated(&world);
    // A chat webhook's token rides in its path, another's in the query.
    let url = format!("http://127.0.0.1:{port}/services/T0/sk-path-token?token=sk-hook-token#frag");
    let approver = warden::approval::WebhookApprover::new(&url).unwrap();
    let (rt, audit) = with_approver(&manifest, approver);
    let grant = Grant::new("t").fs("workspace", &world.workspace, Rights::WRITE);
    // The same write twice: the first answer is a megabyte, the second
    // names a very long approver.
    let write = r#"{"path":"hooked.txt","content":"x"}"#;
    // A megabyte answer is not read: the request is denied.
    let run = rt.invoke("write-file", &grant, write).await.unwrap();
    assert!(run.output.is_err(), "{:?}", run.output);
    assert!(!world.workspace.join("hooked.txt").exists());
    // A long name is cut, and the URL's query (its token) is not shown.
    let run = rt.invoke("write-file", &grant, write).await.unwrap();
    assert!(run.output.is_ok(), "{:?}", run.output);
    let reason = approval_reason(&audit, &run.id);
    assert_eq!(
        reason,
        format!(
            "approved by webhook http://127.0.0.1:{port} ({})",
            "b".repeat(128)
        )
    );
    let trail = serde_json::to_string(&audit.records()).unwrap();
    assert!(!trail.contains("sk-hook-token"), "{trail}");
    assert!(!trail.contains("sk-path-token"), "{trail}");
}

#[test]
fn a_webhook_that_fails_is_logged_with_the_reason_and_denies() {
    let world = World::new();
    let manifest = write_file_gated(&world);
    let state = world.dir.path().join("state");
    let dead = {
        // A port nothing listens on.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let ws = format!("fs:workspace={}:write", world.workspace.display());
    let hook = format!("webhook=http://127.0.0.1:{dead}/approve");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .env("WARDEN_STATE_DIR", &state)
        .env("WARDEN_CACHE_DIR", crate::common::shared_cache())
        .args([
            "run",
            "--manifest",
            &manifest.display().to_string(),
            "write-file",
        ])
        .args(["--grant", &ws, "--approver", &hook])
        .args([
            "--audit",
            &world.dir.path().join("a.jsonl").display().to_string(),
        ])
        .args(["--input", r#"{"path":"x.txt","content":"x"}"#])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "approval webhook http://127.0.0.1:{dead}: cannot send the request: "
        )) && err.contains("the request is denied"),
        "{err}"
    );
    assert!(!world.workspace.join("x.txt").exists());
}

/// `remove-dir build` read like removing an empty directory when it took
/// the whole tree, and `truncate` showed no size: both are said, and the
/// digest a person answers binds them.
#[tokio::test]
async fn an_approver_is_told_a_remove_is_recursive_and_a_truncates_size() {
    let world = World::new();
    std::fs::create_dir_all(world.workspace.join("build/deep")).unwrap();
    std::fs::write(world.workspace.join("build/deep/x"), "x").unwrap();
    let text = format!(
        "[tools.gated]\ncomponent = \"{}\"\n[[tools.gated.fs]]\nhandle = \"workspace\"\nwithin = \"{}\"\nrights = [\"read\", \"write\", \"delete\"]\napproval = [\"write\", \"delete\"]\n",
        crate::FS_PROBE,
        world.workspace.display()
    );
    let path = world.dir.path().join("gated.toml");
    std::fs::write(&path, text).unwrap();
    let script = Arc::new(Script {
        mode: Mode::Approve,
        seen: Mutex::default(),
    });
    let rt = Runtime::builder()
        .manifest(Manifest::load(&path).unwrap())
        .audit(MemorySink::new())
        .cache_dir(crate::common::shared_cache())
        .approver(script.clone())
        .build()
        .unwrap();
    let grant = Grant::new("t").fs(
        "workspace",
        &world.workspace,
        Rights::READ | Rights::WRITE | Rights::DELETE,
    );
    for op in [
        json!({"op": "truncate", "path": "a.txt", "size": 0}),
        json!({"op": "remove-dir", "path": "empty"}),
        json!({"op": "remove-dir", "path": "build", "recursive": true}),
    ] {
        let run = rt.invoke("gated", &grant, &op.to_string()).await.unwrap();
        assert!(run.output.unwrap().contains("\"ok\""), "{op}");
    }
    let seen = script.seen.lock().unwrap().clone();
    let summaries: Vec<&str> = seen.iter().map(|r| r.summary.as_str()).collect();
    assert_eq!(
        summaries,
        [
            "truncate a.txt on handle 'workspace' (to 0 bytes)",
            "remove-dir empty on handle 'workspace'",
            "remove-dir build on handle 'workspace' (recursive: with everything in it)",
        ]
    );
    assert!(!world.workspace.join("build").exists());

    // Whether a write or a rename makes its file or replaces one.
    for op in [
        json!({"op": "write", "path": "a.txt", "contents": "new"}),
        json!({"op": "write", "path": "fresh.txt", "contents": "new"}),
        json!({"op": "rename", "path": "fresh.txt", "to": "a.txt"}),
        json!({"op": "rename", "path": "a.txt", "to": "b.txt"}),
    ] {
        let run = rt.invoke("gated", &grant, &op.to_string()).await.unwrap();
        assert!(run.output.unwrap().contains("\"ok\""), "{op}");
    }
    let seen = script.seen.lock().unwrap().clone();
    let said: Vec<(&str, &str)> = seen[3..]
        .iter()
        .map(|r| {
            (
                r.summary.split(" on handle").next().unwrap(),
                r.summary.as_str(),
            )
        })
        .collect();
    let fate = |s: &str| {
        [
            "; creates it)",
            "; replaces the existing file)",
            "(replaces the existing file)",
        ]
        .into_iter()
        .find(|f| s.contains(f))
    };
    assert_eq!(
        said.iter()
            .map(|(head, s)| (*head, fate(s)))
            .collect::<Vec<_>>(),
        [
            ("write a.txt", Some("; replaces the existing file)")),
            ("write fresh.txt", Some("; creates it)")),
            (
                "rename fresh.txt -> a.txt",
                Some("(replaces the existing file)")
            ),
            ("rename a.txt -> b.txt", None),
        ],
        "{said:?}"
    );
}
