//! Secrets: issued just in time, revealed only when the manifest allows,
//! expired at their TTL, redacted from every channel, audited without values.

use serde_json::{Value, json};
use std::sync::Arc;
use warden::audit::{Event, MemorySink, Record};
use warden::{Error, Grant, GrantError, Manifest, Runtime};

const TOKEN: &str = "tok-3f9a7c1e-live-credential";
const HIDDEN: &str = "hidden-c0ffee-credential";
const GATED: &str = "gated-5eed-credential-77";

struct Vault {
    dir: tempfile::TempDir,
    audit: Arc<MemorySink>,
    runtime: Runtime,
}

fn manifest() -> String {
    format!(
        r#"
[tools.probe]
component = "{probe}"
timeout = "5s"
token-audiences = ["probe"]

[[tools.probe.secrets]]
name = "token"
source = "file:token.txt"
reveal = true
approval = "none"

[[tools.probe.secrets]]
name = "hidden"
source = "file:hidden.txt"

[[tools.probe.secrets]]
name = "gated"
source = "file:gated.txt"
reveal = true

[[tools.probe.secrets]]
name = "short-lived"
source = "exec:printf %s short-lived-value-123"
ttl = "100ms"
reveal = true
approval = "none"

[[tools.probe.secrets]]
name = "broken"
source = "exec:false"
reveal = true
approval = "none"

[[tools.probe.secrets]]
name = "absent"
source = "env:WARDEN_TEST_SURELY_UNSET_VARIABLE"
"#,
        probe = crate::SECRET_PROBE
    )
}

impl Vault {
    fn new() -> Vault {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token.txt"), format!("{TOKEN}\n")).unwrap();
        std::fs::write(dir.path().join("hidden.txt"), HIDDEN).unwrap();
        std::fs::write(dir.path().join("gated.txt"), GATED).unwrap();
        let path = dir.path().join("manifest.toml");
        std::fs::write(&path, manifest()).unwrap();
        let audit = MemorySink::new();
        let runtime = Runtime::builder()
            .manifest(Manifest::load(&path).unwrap())
            .audit(audit.clone())
            .cache_dir(crate::common::shared_cache())
            .build()
            .unwrap();
        Vault {
            dir,
            audit,
            runtime,
        }
    }

    async fn probe(&self, grant: &[&str], input: Value) -> Result<warden::Invocation, Error> {
        let mut g = Grant::new("secrets-task");
        for s in grant {
            g = g.secret(s);
        }
        self.runtime.invoke("probe", &g, &input.to_string()).await
    }

    fn decisions(&self, inv: &str) -> Vec<Record> {
        self.audit
            .invocation(inv)
            .into_iter()
            .filter(|r| r.event == Event::Decision)
            .collect()
    }
}

/// The forms of `value` the probe leaks (see tools/secret-probe).
fn leak_forms(value: &str) -> Vec<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    vec![
        value.to_owned(),
        STANDARD.encode(value),
        STANDARD.encode(format!("Authorization: Bearer {value}")),
        URL_SAFE_NO_PAD.encode(format!("x{value}")),
        hex::encode(value),
        value.replace('-', "%2D"),
        value.bytes().map(|b| format!("%{b:02x}")).collect(),
        value
            .chars()
            .map(|c| format!("\\u{:04x}", c as u32))
            .collect(),
    ]
}

fn assert_clean(what: &str, text: &str, value: &str) {
    for form in leak_forms(value) {
        assert!(!text.contains(&form), "{what} leaks {form}: {text}");
    }
}

fn output(run: &warden::Invocation) -> Value {
    serde_json::from_str(run.output.as_ref().unwrap()).unwrap()
}

/// The log record of invocation `id`.
fn log_record(v: &Vault, id: &str) -> warden::audit::Record {
    v.audit
        .invocation(id)
        .into_iter()
        .find(|r| r.event == Event::Log)
        .unwrap()
}

#[tokio::test]
async fn a_revealed_secret_is_redacted_from_every_channel() {
    let v = Vault::new();
    let input =
        serde_json::json!({"name": "token", "channels": ["output", "stdout", "stderr", "log"]});
    let run = v.probe(&["token"], input).await.unwrap();
    let out = run.output.clone().unwrap();
    assert!(out.contains(r#""status":"ok""#), "{out}");
    assert_eq!(
        out.matches("[REDACTED:token]").count(),
        9,
        "every leaked form is redacted: {out}"
    );
    assert_clean("output", &out, TOKEN);
    let stdout = String::from_utf8(run.stdout.clone()).unwrap();
    let stderr = String::from_utf8(run.stderr.clone()).unwrap();
    assert!(stdout.contains("[REDACTED:token]"), "{stdout}");
    assert_clean("stdout", &stdout, TOKEN);
    assert_clean("stderr", &stderr, TOKEN);
    let trail = serde_json::to_string(&v.audit.records()).unwrap();
    assert_clean("audit trail", &trail, TOKEN);
    let log = log_record(&v, &run.id);
    assert!(log.message.unwrap().contains("[REDACTED:token]"));

    // The tool's error message too.
    let run = v
        .probe(
            &["token"],
            serde_json::json!({"name": "token", "channels": ["error"]}),
        )
        .await
        .unwrap();
    let err = run.output.unwrap_err();
    assert!(
        err.message.starts_with("leaking: [REDACTED:token]"),
        "{err}"
    );
    assert_clean("tool error", &err.message, TOKEN);
    let end = v.audit.invocation(&run.id).pop().unwrap();
    assert_clean("end record", end.message.as_deref().unwrap(), TOKEN);
}

/// An identity token the tool is handed is a credential like a secret's
/// value: the tool puts it in its output, stdout, stderr and a log message,
/// and each of them shows `[REDACTED:identity-token]`, as does nothing of
/// it reach the trail (a JWT's header starts `eyJ`).
#[tokio::test]
async fn an_identity_token_a_tool_holds_is_redacted_from_every_channel() {
    let v = Vault::new();
    let input = serde_json::json!({"name": "token", "channels": ["identity"]});
    let run = v.probe(&["token"], input).await.unwrap();
    let out = output(&run);
    assert_eq!(
        out["leaked"],
        serde_json::json!(["[REDACTED:identity-token]"])
    );
    let stdout = String::from_utf8(run.stdout.clone()).unwrap();
    let stderr = String::from_utf8(run.stderr.clone()).unwrap();
    assert_eq!(stdout, "[REDACTED:identity-token]");
    assert_eq!(stderr, "[REDACTED:identity-token]");
    let log = log_record(&v, &run.id);
    assert_eq!(
        log.message.as_deref(),
        Some("token [REDACTED:identity-token]")
    );
    let trail = serde_json::to_string(&v.audit.records()).unwrap();
    assert!(!trail.contains("eyJ"), "a token on the trail: {trail}");
    let d = v
        .decisions(&run.id)
        .into_iter()
        .find(|r| r.capability.as_deref() == Some("identity"))
        .unwrap();
    assert_eq!(
        (d.resource.as_deref(), d.decision.as_deref()),
        (Some("probe"), Some("allow"))
    );
}

/// A value held by reference cannot have been read by the tool: in what
/// it writes, the value is a guess, and a redaction marker would say which
/// guess was right (ten thousand PINs returned, one of them marked). Each
/// path out refuses such text whole, recording `secret.guessed`; a host
/// call holding it (a log message, a secret's name) also ends the
/// invocation's host calls. Wrong guesses pass as they were written.
#[tokio::test]
async fn a_guess_at_a_value_held_by_reference_is_withheld_on_every_path() {
    let v = Vault::new();
    let guesses = |right: bool| {
        let mut g: Vec<String> = (0..50).map(|i| format!("hidden-c0ffee-{i:04}")).collect();
        if right {
            g[37] = HIDDEN.into();
        }
        g.join(",")
    };
    let reason = |what: &str| {
        format!(
            "exfiltration attempt: {what} holds the value of secret 'hidden', which this tool \
             may use only by reference"
        )
    };
    let run = |channels: &[&str], right: bool| {
        let input = json!({"name": "hidden", "guesses": guesses(right), "channels": channels});
        let v = &v;
        async move { v.probe(&["hidden"], input).await.unwrap() }
    };
    let guessed = |id: &str| -> Vec<(String, String)> {
        (v.decisions(id).into_iter())
            .filter(|d| d.rule.as_deref() == Some("secret.guessed"))
            .map(|d| (d.capability.unwrap(), d.action.unwrap()))
            .collect()
    };
    let pair = |c: &str, a: &str| vec![(c.to_owned(), a.to_owned())];

    // Wrong guesses, on every path: as they were written, nothing refused.
    let all = ["output", "stdout", "stderr", "log", "get"];
    let wrong = run(&all, false).await;
    let out = output(&wrong);
    assert_eq!(
        (&out["status"], &out["leaked"][0]),
        (&json!("ok"), &json!(guesses(false)))
    );
    assert_eq!(wrong.stdout, guesses(false).as_bytes());
    assert_eq!(wrong.stderr, guesses(false).as_bytes());
    assert_eq!(log_record(&v, &wrong.id).message.unwrap(), guesses(false));
    assert!(guessed(&wrong.id).is_empty());

    // The output, the tool's error, stdout and stderr: withheld whole.
    let right = run(&["output"], true).await;
    let e = right.output.as_ref().unwrap_err();
    assert_eq!(e.kind, warden::ToolErrorKind::Denied);
    assert_eq!(
        e.message,
        format!("{}: withheld", reason("the tool's output"))
    );
    assert_eq!(guessed(&right.id), pair("result", "output"));
    let right = run(&["error"], true).await;
    let e = right.output.as_ref().unwrap_err();
    assert_eq!(
        e.message,
        format!("{}: withheld", reason("the tool's error"))
    );
    assert_eq!(guessed(&right.id), pair("result", "error"));
    let right = run(&["stdout", "stderr"], true).await;
    assert_eq!(output(&right)["status"], "ok");
    for (stream, bytes) in [("stdout", &right.stdout), ("stderr", &right.stderr)] {
        let shown = format!("[{}: withheld]", reason(&format!("the tool's {stream}")));
        assert_eq!(String::from_utf8_lossy(bytes), shown);
    }
    let both = [pair("result", "stdout"), pair("result", "stderr")].concat();
    assert_eq!(guessed(&right.id), both);

    // A log message or a secret's name: refused, and the gate trips.
    let tripped =
        "no further host calls: this invocation attempted an exfiltration (secret.guessed)";
    for (channel, capability, action) in [("log", "log", "warn"), ("get", "secret", "get")] {
        let right = run(&[channel], true).await;
        let out = output(&right);
        assert_eq!(
            (&out["status"], &out["message"]),
            (&json!("denied"), &json!(tripped))
        );
        assert_eq!(guessed(&right.id), pair(capability, action), "{channel}");
        let d = v.decisions(&right.id);
        assert_eq!(d.last().unwrap().rule.as_deref(), Some("gate.tripped"));
        let logged = v.audit.invocation(&right.id).into_iter();
        assert!(logged.filter(|r| r.event == Event::Log).count() == 0);
    }
    // After the trip, the first refusal is recorded and the rest are not,
    // and log messages are dropped: the records' sizes, charged to the
    // audit budget, would tell what they held.
    let right = run(&["get", "get", "log", "get"], true).await;
    let denied: Vec<_> = (v.decisions(&right.id).into_iter())
        .filter(|d| d.decision.as_deref() == Some("deny"))
        .map(|d| d.rule.unwrap())
        .collect();
    assert_eq!(denied, ["secret.guessed", "gate.tripped"]);
    let logged = v.audit.invocation(&right.id).into_iter();
    assert!(logged.filter(|r| r.event == Event::Log).count() == 0);
}

/// A secret whose reveal waits for a person is held by reference until a
/// `reveal` of it passes the gate (denied, it never does): before that,
/// its value in what the tool writes is a guess, withheld whole, not
/// marked where it stood. One the tool may reveal at will (no approval, no
/// runtime policy) is its own from the start: a marker tells it nothing.
#[tokio::test]
async fn a_secret_is_held_by_reference_until_a_reveal_passes_the_gate() {
    struct Yes;
    #[async_trait::async_trait]
    impl warden::approval::Approver for Yes {
        async fn ask(
            &self,
            r: &warden::approval::ApprovalRequest,
        ) -> Option<warden::approval::ApprovalAnswer> {
            Some(warden::approval::ApprovalAnswer {
                digest: r.digest.clone(),
                approved: true,
                by: "test".into(),
            })
        }
    }
    let v = Vault::new();
    let guessed = |id: &str| -> Vec<String> {
        (v.decisions(id).into_iter())
            .filter(|d| d.rule.as_deref() == Some("secret.guessed"))
            .map(|d| d.action.unwrap())
            .collect()
    };
    let guesses = |value: &str| format!("{value}X,{value},0002");
    // Its reveal denied (the runtime's approver is deny-all), then guessed.
    let input = json!({"name": "gated", "channels": ["output"]});
    let run = v.probe(&["gated"], input).await.unwrap();
    assert_eq!(output(&run)["status"], "denied", "{:?}", run.output);
    let input = json!({"name": "gated", "guesses": guesses(GATED), "channels": ["output"]});
    let run = v.probe(&["gated"], input).await.unwrap();
    let e = run.output.as_ref().unwrap_err();
    assert_eq!(e.kind, warden::ToolErrorKind::Denied);
    assert_eq!(
        e.message,
        "exfiltration attempt: the tool's output holds the value of secret 'gated', which this \
         tool may use only by reference: withheld"
    );
    assert_eq!(guessed(&run.id), ["output"]);
    // Revealed with a person's approval, the value is the tool's own:
    // marked, not a guess.
    let options = warden::InvokeOptions {
        approver: Some(Arc::new(Yes)),
        ..Default::default()
    };
    let input = json!({"name": "gated", "channels": ["output"]}).to_string();
    let grant = Grant::new("secrets-task").secret("gated");
    let run = (v.runtime.invoke_with("probe", &grant, &input, options))
        .await
        .unwrap();
    let out = output(&run);
    assert_eq!(out["status"], "ok", "{out}");
    assert_eq!(out["leaked"][0], "[REDACTED:gated]");
    assert!(guessed(&run.id).is_empty());
    // At will (`approval = "none"`): marked from the start.
    let input = json!({"name": "token", "guesses": guesses(TOKEN), "channels": ["output"]});
    let run = v.probe(&["token"], input).await.unwrap();
    let out = output(&run);
    assert_eq!(
        out["leaked"][0], "[REDACTED:token]X,[REDACTED:token],0002",
        "{out}"
    );
    assert!(guessed(&run.id).is_empty());
}

#[tokio::test]
async fn reveal_is_denied_unless_the_manifest_allows_it() {
    let v = Vault::new();
    let run = v
        .probe(
            &["hidden"],
            serde_json::json!({"name": "hidden", "channels": ["output"]}),
        )
        .await
        .unwrap();
    let out = output(&run);
    assert_eq!(out["status"], "denied");
    assert_eq!(
        out["message"],
        "the manifest does not allow revealing secret 'hidden' (reveal = false); use it by reference"
    );
    let d = v.decisions(&run.id);
    assert_eq!(d.len(), 2, "{d:?}");
    assert_eq!(
        (d[0].action.as_deref(), d[0].decision.as_deref()),
        (Some("get"), Some("allow"))
    );
    assert_eq!(
        (d[1].action.as_deref(), d[1].rule.as_deref()),
        (Some("reveal"), Some("secret.reveal"))
    );
    assert_eq!(d[1].decision.as_deref(), Some("deny"));
}

#[tokio::test]
async fn an_ungranted_secret_is_denied_and_an_unknown_one_refused() {
    let v = Vault::new();
    let run = v
        .probe(&[], serde_json::json!({"name": "token"}))
        .await
        .unwrap();
    assert_eq!(output(&run)["status"], "denied");
    assert_eq!(
        v.decisions(&run.id)[0].rule.as_deref(),
        Some("secret.grant")
    );

    let before = v.audit.records().len();
    let err = v
        .probe(&["nonexistent"], serde_json::json!({"name": "token"}))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Grant(GrantError::UnknownSecret { name, .. }) if name == "nonexistent"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("its secrets: token, hidden, gated, short-lived, broken, absent"),
        "{err}"
    );
    // Nothing ran; the refused grant is recorded (who asked for what).
    let records = v.audit.records();
    assert_eq!(records.len(), before + 1, "{records:?}");
    let refusal = records.last().unwrap();
    assert_eq!(
        (refusal.capability.as_deref(), refusal.rule.as_deref()),
        (Some("grant"), Some("grant.ceiling"))
    );
    assert_eq!(refusal.resource.as_deref(), Some("secret:nonexistent"));
}

#[tokio::test]
async fn a_secret_expires_at_its_ttl() {
    let v = Vault::new();
    let run = v
        .probe(&["short-lived"], serde_json::json!({"name": "short-lived"}))
        .await
        .unwrap();
    assert_eq!(output(&run)["status"], "ok");
    let run = v
        .probe(
            &["short-lived"],
            serde_json::json!({"name": "short-lived", "delay_ms": 300}),
        )
        .await
        .unwrap();
    let out = output(&run);
    assert_eq!(out["status"], "expired", "{out}");
    assert_eq!(
        out["message"],
        "secret 'short-lived' has expired (past its ttl)"
    );
    let d = v.decisions(&run.id);
    assert_eq!(
        (d[1].rule.as_deref(), d[1].decision.as_deref()),
        (Some("secret.ttl"), Some("deny"))
    );
}

#[tokio::test]
async fn failing_sources_stop_the_invocation_before_the_tool_starts() {
    let v = Vault::new();
    for (name, want) in [
        (
            "broken",
            "secret 'broken' (source exec) could not be resolved: false exited with exit status: 1",
        ),
        (
            "absent",
            "secret 'absent' (source env) could not be resolved: environment variable WARDEN_TEST_SURELY_UNSET_VARIABLE is not set",
        ),
    ] {
        let err = v
            .probe(&[name, "token"], serde_json::json!({"name": "token"}))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Secret(_)), "{err:?}");
        assert_eq!(err.to_string(), want);
        assert_eq!(err.class(), warden::ErrorClass::Usage);
        let records = v.audit.records();
        let end = records.last().unwrap();
        assert_eq!(end.event, Event::InvocationEnd);
        assert_eq!(end.outcome.as_deref(), Some("secret-error"));
        // The tool never ran: no decisions, no issued secrets.
        let inv = &end.invocation;
        assert!(
            v.audit
                .invocation(inv)
                .iter()
                .all(|r| r.event != Event::Decision && r.event != Event::SecretIssued)
        );
    }
    let trail = serde_json::to_string(&v.audit.records()).unwrap();
    assert_clean("audit trail", &trail, TOKEN);
}

#[tokio::test]
async fn secrets_are_resolved_for_each_invocation_and_expire_with_it() {
    let v = Vault::new();
    let first = v
        .probe(&["token"], serde_json::json!({"name": "token"}))
        .await
        .unwrap();
    std::fs::write(v.dir.path().join("token.txt"), "rotated-credential-0042").unwrap();
    let second = v
        .probe(&["token"], serde_json::json!({"name": "token"}))
        .await
        .unwrap();
    let fnv = |value: &str| {
        let mut h: u64 = 0xcbf29ce484222325;
        for b in value.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x100000001b3);
        }
        format!("fnv:{h:016x}")
    };
    assert_eq!(output(&first)["fingerprint"], fnv(TOKEN));
    assert_eq!(
        output(&second)["fingerprint"],
        fnv("rotated-credential-0042")
    );

    let events: Vec<_> = v
        .audit
        .invocation(&second.id)
        .iter()
        .map(|r| r.event)
        .collect();
    assert_eq!(
        events,
        [
            Event::InvocationStart,
            Event::SecretIssued,
            Event::Decision,
            Event::Decision,
            Event::SecretExpired,
            Event::InvocationEnd
        ]
    );
    let issued = &v.audit.invocation(&second.id)[1];
    assert_eq!(issued.resource.as_deref(), Some("token"));
    assert_eq!(
        issued.reason.as_deref(),
        Some("source file, revealable, expires with the invocation")
    );
}

#[test]
fn the_cli_grants_secrets_by_name_and_redacts_env_values() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.toml");
    std::fs::write(
        &m,
        format!(
            "[tools.probe]\ncomponent = \"{}\"\n[[tools.probe.secrets]]\nname = \"api\"\nsource = \"env:WARDEN_CLI_TEST_TOKEN\"\nreveal = true\napproval = \"none\"\n",
            crate::SECRET_PROBE
        ),
    )
    .unwrap();
    let value = "cli-env-token-5e2b9d";
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("--cache-dir")
        .arg(crate::common::shared_cache())
        .args([
            "run",
            "--manifest",
            &m.display().to_string(),
            "probe",
            "--grant",
            "secret:api",
        ])
        .args(["--audit", &dir.path().join("a.jsonl").display().to_string()])
        .args([
            "--input",
            r#"{"name":"api","channels":["output","stdout"]}"#,
            "-v",
        ])
        .env("WARDEN_CLI_TEST_TOKEN", value)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("[REDACTED:api]"), "{stdout}");
    assert_clean("cli stdout", &stdout, value);
    assert_clean("cli stderr (tool stdout under -v)", &stderr, value);
    assert_clean(
        "audit file",
        &std::fs::read_to_string(dir.path().join("a.jsonl")).unwrap(),
        value,
    );
}

#[tokio::test]
async fn a_value_in_json_escapes_or_percent_escapes_is_redacted_from_the_output() {
    let v = Vault::new();
    let input = serde_json::json!({"name": "token", "channels": ["escaped", "output"]});
    let run = v.probe(&["token"], input).await.unwrap();
    let text = run.output.clone().unwrap();
    let escaped: String = TOKEN
        .chars()
        .map(|c| format!("\\u{:04x}", c as u32))
        .collect();
    // What an MCP client's structuredContent and the CLI are made of: the
    // output as parsed JSON.
    let out = output(&run);
    assert_eq!(out["escaped"], "[REDACTED:token]", "{text}");
    let every_byte: String = TOKEN.bytes().map(|b| format!("%{b:02x}")).collect();
    for (i, want) in [
        "[REDACTED:token]", // plain
        "[REDACTED:token]", // every byte percent-encoded
        "[REDACTED:token]", // twice
        "[REDACTED:token]", // hex, letters in both cases
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(out["leaked"][i], *want, "leaked[{i}]: {text}");
    }
    assert!(
        !text.contains(&escaped) && !text.contains(&every_byte),
        "{text}"
    );
    assert_clean("output", &out.to_string(), TOKEN);
    let trail = serde_json::to_string(&v.audit.records()).unwrap();
    assert_clean("audit trail", &trail, TOKEN);
    let end = v.audit.invocation(&run.id).pop().unwrap();
    assert_eq!(end.outcome.as_deref(), Some("ok"));
}

/// `WARDEN_LOG=trace`: every capability that handles values is used with a
/// revealed secret (reveal, get, attach, `warden:tool/http` and `wasi:http`
/// requests and responses, fs writes and reads and paths, identity tokens,
/// tool log, stdio), and no form of the value reaches the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_value_reaches_a_trace_log() {
    let value = "trace-secret-7b1e44d09a";
    let hidden = "trace-hidden-e5c3a2f180";
    let port = crate::common::http_server(|req| {
        let echo = format!(
            "{} {}",
            req.header("authorization").unwrap_or(""),
            req.header("x-api-key").unwrap_or("")
        );
        let body = format!("{echo} {} {}", req.path, String::from_utf8_lossy(&req.body));
        (
            "200 OK".into(),
            format!("X-Echo: {echo}\r\n"),
            body.into_bytes(),
        )
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    std::fs::write(dir.path().join("hidden.txt"), hidden).unwrap();
    let secrets = format!(
        r#"
[[tools.TOOL.secrets]]
name = "api"
source = "env:WARDEN_TRACE_TEST_TOKEN"
reveal = true
approval = "none"
send-to = ["http://127.0.0.1:{port}"]

[[tools.TOOL.secrets]]
name = "hidden"
source = "file:hidden.txt"
send-to = ["http://127.0.0.1:{port}"]

[[tools.TOOL.http]]
scheme = "http"
host = "127.0.0.1"
port = {port}
methods = ["GET", "POST"]
approval = "none"
"#
    );
    let manifest = format!(
        r#"
[tools.probe]
component = "{probe}"
token-audiences = ["probe"]
[[tools.probe.fs]]
handle = "workspace"
within = "{ws}"
rights = ["read", "write"]
{probe_secrets}

[tools.egress]
component = "{egress}"
{egress_secrets}

[tools.std]
component = "{std}"
{std_secrets}
"#,
        probe = crate::SECRET_PROBE,
        egress = crate::EGRESS_PROBE,
        std = crate::WASI_HTTP_PROBE,
        ws = ws.display(),
        probe_secrets = secrets.replace("TOOL", "probe"),
        egress_secrets = secrets.replace("TOOL", "egress"),
        std_secrets = secrets.replace("TOOL", "std"),
    );
    let m = dir.path().join("m.toml");
    std::fs::write(&m, manifest).unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let fs_grant = format!("fs:workspace={}:read,write", ws.display());
    let http_grant = format!("http:{base}/");
    let runs: Vec<(&str, Vec<String>, String)> = vec![
        (
            "probe",
            vec![fs_grant],
            r#"{"name":"api","channels":["output","escaped","stdout","stderr","log","fs","identity"]}"#
                .into(),
        ),
        (
            "egress",
            vec![http_grant.clone()],
            serde_json::json!({"method": "POST", "url": format!("{base}/echo"), "reveal": "api", "into": "query", "bearer": "hidden"}).to_string(),
        ),
        (
            "egress",
            vec![http_grant.clone()],
            serde_json::json!({"method": "POST", "url": format!("{base}/echo"), "reveal": "api", "into": "body"}).to_string(),
        ),
        (
            "std",
            vec![http_grant.clone()],
            serde_json::json!({"method": "POST", "url": format!("{base}/echo"), "reveal": "api", "into": "query"}).to_string(),
        ),
        (
            "std",
            vec![http_grant],
            serde_json::json!({"method": "POST", "url": format!("{base}/echo"), "reveal": "api", "into": "body"}).to_string(),
        ),
    ];
    // The compiler's own tracing (no tool values) is not needed. The
    // second filter tries to turn the value-logging targets back on: a
    // span directive (wasmtime's bindings log within `wit-bindgen
    // import` spans) and targets more specific than the ones turned off.
    let quiet =
        "trace,cranelift_codegen=off,cranelift_frontend=off,regalloc2=off,wasmtime_cranelift=off";
    let reopened = format!(
        "{quiet},[wit-bindgen import]=trace,wasmtime_wasi::p2::bindings::sync=trace,\
         wasmtime_wasi_http::p2::bindings::generated=trace,wasmtime_wasi_http::p2::bindings::http=trace"
    );
    let runs = runs.iter().flat_map(|run| {
        [
            (run.clone(), quiet.to_owned()),
            (run.clone(), reopened.clone()),
        ]
    });
    for ((tool, grants, input), filter) in runs {
        let mut args: Vec<String> = vec![
            "--cache-dir".into(),
            crate::common::shared_cache().display().to_string(),
            "run".into(),
            "--manifest".into(),
            m.display().to_string(),
            tool.into(),
            "--grant".into(),
            "secret:api".into(),
            "--grant".into(),
            "secret:hidden".into(),
            "--audit".into(),
            dir.path().join("a.jsonl").display().to_string(),
            "--input".into(),
            input.clone(),
        ];
        for g in grants {
            args.extend(["--grant".into(), g]);
        }
        let log = filter.clone();
        let o = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
                .args(&args)
                .env("WARDEN_LOG", &log)
                .env("WARDEN_TRACE_TEST_TOKEN", value)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
        );
        assert_eq!(o.status.code(), Some(0), "{tool} {input}: {stderr}");
        assert!(stderr.contains("TRACE"), "{tool}: tracing is on: {stderr}");
        assert!(
            !stderr.contains("p2::bindings"),
            "{tool} {filter}: a value-logging target's line: {stderr}"
        );
        for secret in [value, hidden] {
            assert_clean(&format!("{tool} trace log"), &stderr, secret);
            assert_clean(&format!("{tool} stdout"), &stdout, secret);
        }
        // An identity token (a JWT: base64 of `{"`) is not logged either.
        assert!(!stderr.contains("eyJ"), "{tool}: a token in the log");
    }
    let trail = std::fs::read_to_string(dir.path().join("a.jsonl")).unwrap();
    assert_clean("audit file", &trail, value);
    assert_clean("audit file", &trail, hidden);
}

/// A log message longer than the 4 KiB a record keeps, with the value
/// across the cut: cut first and then redacted, the value's first bytes
/// were no longer whole enough to be found, and reached the trail (and
/// the operator's log, and telemetry) as they were.
#[tokio::test]
async fn a_value_across_the_cut_of_a_long_log_message_is_redacted() {
    let v = Vault::new();
    // The value's first 12, 5 or all but one of its bytes before the cut.
    for pad in [4096 - 12, 4096 - 5, 4096 - TOKEN.len() + 1] {
        let input = serde_json::json!({"name": "token", "channels": ["log"], "pad": pad});
        let run = v.probe(&["token"], input).await.unwrap();
        let message = log_record(&v, &run.id).message.unwrap();
        assert!(message.ends_with("…[truncated]"), "{pad}: {message}");
        // (`tok-`: its first bytes, and not the marker's `token`)
        assert!(
            !message.contains(&TOKEN[..4]),
            "pad {pad}: {}",
            &message[4000..]
        );
    }
}

/// A task's history shared with other runtimes leaves the host (a
/// database): a path the tool wrote, named with a secret it revealed,
/// reaches it redacted like every record.
#[tokio::test]
async fn a_shared_history_keeps_no_secret_value_of_a_path_written() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    std::fs::write(dir.path().join("token.txt"), TOKEN).unwrap();
    // A policy that reads the files a task wrote and the secrets it
    // revealed (a set none reads keeps nothing).
    std::fs::write(
        dir.path().join("all.cedar"),
        "permit(principal, action, resource);\n\
         forbid(principal, action, resource) when { context.task.files_written.contains(\"never\") \
         || context.task.secrets_revealed.contains(\"never\") };",
    )
    .unwrap();
    let path = dir.path().join("manifest.toml");
    let manifest = format!(
        "policies = [\"all.cedar\"]\n[tools.probe]\ncomponent = \"{}\"\n\
         [[tools.probe.fs]]\nhandle = \"workspace\"\nwithin = \"{}\"\nrights = [\"read\", \"write\"]\n\
         [[tools.probe.secrets]]\nname = \"token\"\nsource = \"file:token.txt\"\nreveal = true\napproval = \"none\"\n",
        crate::SECRET_PROBE,
        ws.display()
    );
    std::fs::write(&path, manifest).unwrap();
    let kept = Arc::new(crate::common::KeptHistory::default());
    let runtime = crate::common::runtime_with_history(&path, kept.clone());
    let grant = Grant::new("t").secret("token").fs(
        "workspace",
        &ws,
        warden::Rights::READ | warden::Rights::WRITE,
    );
    let input = serde_json::json!({"name": "token", "channels": ["fs-name"]});
    let run = runtime
        .invoke("probe", &grant, &input.to_string())
        .await
        .unwrap();
    assert!(run.output.is_ok(), "{:?}", run.output);
    assert!(
        ws.join(format!("leak-{TOKEN}.txt")).exists(),
        "the tool wrote its file"
    );
    let saved = kept.saved.lock().unwrap().clone();
    let written: Vec<&str> = saved.iter().flat_map(|h| &h.files_written).collect();
    assert_eq!(written.len(), 1, "{saved:?}");
    assert!(
        written[0].contains("leak-[REDACTED:token].txt"),
        "{written:?}"
    );
    assert!(
        saved.iter().all(|h| h.secrets_revealed.contains("token")),
        "{saved:?}"
    );
    let stored = format!("{saved:?}");
    assert_clean("the shared history", &stored, TOKEN);
}

/// A runtime whose tool `tool` (`component`, `timeout`) is granted one
/// secret, `secret`, from a shell script `script` run as an `exec:` source;
/// loaded, so its compile is not timed.
async fn with_secret_script(
    dir: &std::path::Path,
    (tool, component, timeout): (&str, &str, &str),
    secret: &str,
    script: &str,
) -> Runtime {
    use std::os::unix::fs::PermissionsExt;
    let program = dir.join(format!("{secret}-vault.sh"));
    std::fs::write(&program, script).unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.join("manifest.toml");
    std::fs::write(
        &path,
        format!(
            "[tools.{tool}]\ncomponent = \"{component}\"\ntimeout = \"{timeout}\"\n\
             [[tools.{tool}.secrets]]\nname = \"{secret}\"\nsource = \"exec:{}\"\n",
            program.display()
        ),
    )
    .unwrap();
    let runtime = Runtime::builder()
        .manifest(Manifest::load(&path).unwrap())
        .cache_dir(crate::common::shared_cache())
        .build()
        .unwrap();
    runtime.load(tool).await.unwrap();
    runtime
}

/// An `exec:` source that does not finish held the call for its own 10 s
/// whatever the tool's timeout, and what it started outlived it (only the
/// program itself was killed). Now the sources resolve within the tool's
/// timeout, and the program's whole process group is killed.
#[tokio::test]
async fn a_slow_secret_program_is_stopped_at_the_tools_timeout_with_what_it_started() {
    let dir = tempfile::tempdir().unwrap();
    // A child of its own (a shell's `sleep`) that killing the shell
    // leaves running.
    let script = "#!/bin/sh\nsleep 301.7\nprintf %s never-printed-value\n";
    let tool = ("probe", crate::SECRET_PROBE, "1s");
    let runtime = with_secret_script(dir.path(), tool, "slow", script).await;
    let began = std::time::Instant::now();
    let err = runtime
        .invoke(
            "probe",
            &Grant::new("t").secret("slow"),
            r#"{"name":"slow","channels":["output"]}"#,
        )
        .await
        .unwrap_err();
    let took = began.elapsed();
    assert!(matches!(err, Error::Secret(_)), "{err}");
    assert!(
        err.to_string()
            .contains("did not finish within the tool's timeout"),
        "{err}"
    );
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    let left = std::process::Command::new("pgrep")
        .args(["-f", "sleep 301.7"])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "the program's child is still running: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}

/// The tool's time counts from before its secrets are resolved: a source
/// that takes most of it leaves the tool the rest, not a timeout of its
/// own after (a call could take its sources' time and then all of its
/// timeout, holding a slot).
#[tokio::test]
async fn a_tools_timeout_counts_its_secrets_time() {
    let dir = tempfile::tempdir().unwrap();
    let script = "#!/bin/sh\nsleep 1.5\nprintf %s slowish-secret-value\n";
    let tool = ("hog", crate::HOG, "2s");
    let runtime = with_secret_script(dir.path(), tool, "slowish", script).await;
    let began = std::time::Instant::now();
    let err = runtime
        .invoke(
            "hog",
            &Grant::new("t").secret("slowish"),
            r#"{"attack":"loop"}"#,
        )
        .await
        .unwrap_err();
    let took = began.elapsed();
    assert!(
        matches!(err, Error::Limit(warden::LimitExceeded::Deadline { .. })),
        "{err}"
    );
    // 2 s in all; it was 1.5 s and then 2 s more.
    assert!(took < std::time::Duration::from_millis(3000), "{took:?}");
}
