//! Workload identity: tokens verify against the JWKS, name the tool by its
//! digest, and are inactive as soon as their invocation returns.

use serde_json::json;
use std::sync::{Arc, Mutex, OnceLock};
use warden::audit::{Event, MemorySink};
use warden::{Grant, Identity, Manifest, Runtime, Verifier};

const AUDIENCE: &str = "https://api.test";

/// (token the server received, whether introspection said active then)
type Seen = Arc<Mutex<Vec<(String, bool)>>>;

/// A loopback API that accepts only active Warden tokens.
async fn api(runtime: Arc<OnceLock<Runtime>>) -> (u16, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let port = crate::common::http_server(move |req| {
        let token = req.bearer();
        // A downstream service asks Warden whether the token is live.
        let active = runtime.get().is_some_and(|rt| rt.introspect(&token).active);
        log.lock().unwrap().push((token, active));
        if active {
            ("200 OK".into(), String::new(), b"hello, tool".to_vec())
        } else {
            (
                "401 Unauthorized".into(),
                String::new(),
                b"inactive token".to_vec(),
            )
        }
    })
    .await;
    (port, seen)
}

async fn setup() -> (tempfile::TempDir, u16, Seen, Arc<MemorySink>, Runtime) {
    let cell: Arc<OnceLock<Runtime>> = Arc::default();
    let (port, seen) = api(cell.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[tools.call-api]
component = "{call_api}"
timeout = "20s"
token-audiences = ["{AUDIENCE}"]
token-send-to = ["http://127.0.0.1:{port}"]
[[tools.call-api.http]]
scheme = "http"
host = "127.0.0.1"
port = {port}

[tools.probe]
component = "{probe}"
[[tools.probe.http]]
scheme = "http"
host = "127.0.0.1"
port = {port}
[[tools.probe.secrets]]
name = "id"
source = "mint:{AUDIENCE}"
send-to = ["http://127.0.0.1:{port}"]
"#,
        call_api = crate::CALL_API,
        probe = crate::EGRESS_PROBE,
    );
    let path = dir.path().join("manifest.toml");
    std::fs::write(&path, text).unwrap();
    let audit = MemorySink::new();
    let runtime = Runtime::builder()
        .manifest(Manifest::load(&path).unwrap())
        .audit(audit.clone())
        .cache_dir(crate::common::shared_cache())
        .build()
        .unwrap();
    let _ = cell.set(runtime.clone());
    (dir, port, seen, audit, runtime)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minted_token_verifies_and_dies_with_its_invocation() {
    let (_dir, port, seen, audit, runtime) = setup().await;
    let grant = Grant::new("ticket-7").http(&format!("http://127.0.0.1:{port}/"), None);
    let input = json!({"url": format!("http://127.0.0.1:{port}/whoami"), "audience": AUDIENCE});
    let run = runtime
        .invoke("call-api", &grant, &input.to_string())
        .await
        .unwrap();
    let out: serde_json::Value = serde_json::from_str(&run.output.unwrap()).unwrap();
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(out["body"], "hello, tool");

    let (token, active_during) = seen.lock().unwrap()[0].clone();
    assert!(
        active_during,
        "the token was active while its invocation ran"
    );
    let claims = Verifier::from_jwks(&runtime.jwks())
        .unwrap()
        .verify(&token, AUDIENCE)
        .unwrap();
    let identity = Identity::of(&std::fs::read(crate::CALL_API).unwrap()).to_string();
    assert_eq!(claims.sub, identity);
    assert_eq!(
        (
            claims.tool.as_str(),
            claims.task.as_str(),
            claims.jti.as_str()
        ),
        ("call-api", "ticket-7", run.id.as_str())
    );
    assert_eq!(claims.scope, [format!("http:GET=http://127.0.0.1:{port}/")]);
    assert!(
        claims.exp > claims.iat && claims.exp <= claims.iat + 20,
        "{claims:?}"
    );
    assert!(claims.iss.starts_with("warden:"));

    // Copied out of the call, the token is refused.
    let after = runtime.introspect(&token);
    assert!(!after.active);
    assert_eq!(after.reason.as_deref(), Some("its invocation has ended"));
    let d = audit
        .invocation(&run.id)
        .into_iter()
        .find(|r| r.event == Event::Decision && r.capability.as_deref() == Some("identity"))
        .unwrap();
    assert_eq!(
        (d.resource.as_deref(), d.decision.as_deref()),
        (Some(AUDIENCE), Some("allow"))
    );

    // Tokens from another key or tampered ones are not active either.
    assert!(!runtime.introspect("not.a.token").active);
    let mut parts: Vec<&str> = token.split('.').collect();
    parts[2] = "AAAA";
    assert!(!runtime.introspect(&parts.join(".")).active);
}

#[tokio::test]
async fn an_unlisted_audience_is_denied() {
    let (_dir, port, seen, _audit, runtime) = setup().await;
    let grant = Grant::new("t").http(&format!("http://127.0.0.1:{port}/"), None);
    let input =
        json!({"url": format!("http://127.0.0.1:{port}/x"), "audience": "https://elsewhere"});
    let run = runtime
        .invoke("call-api", &grant, &input.to_string())
        .await
        .unwrap();
    let err = run.output.unwrap_err();
    assert_eq!(err.kind, warden::ToolErrorKind::Denied);
    assert_eq!(
        err.message,
        "the manifest does not list audience 'https://elsewhere' for this tool's tokens"
    );
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mint_secret_is_a_token_used_by_reference() {
    let (_dir, port, seen, _audit, runtime) = setup().await;
    let grant = Grant::new("t")
        .http(&format!("http://127.0.0.1:{port}/"), None)
        .secret("id");
    let input = json!({"url": format!("http://127.0.0.1:{port}/x"), "bearer": "id"});
    let run = runtime
        .invoke("probe", &grant, &input.to_string())
        .await
        .unwrap();
    let out = run.output.unwrap();
    assert!(out.contains("hello, tool"), "{out}");
    let (token, active) = seen.lock().unwrap()[0].clone();
    assert!(active);
    assert!(!out.contains(&token));
    let claims = Verifier::from_jwks(&runtime.jwks())
        .unwrap()
        .verify(&token, AUDIENCE)
        .unwrap();
    assert_eq!(claims.jti, run.id);
    assert!(!runtime.introspect(&token).active);
}

#[test]
fn the_cli_prints_a_stable_jwks() {
    let state = tempfile::tempdir().unwrap();
    let jwks = || {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["identity", "jwks"])
            .env("WARDEN_STATE_DIR", state.path())
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let first = jwks();
    assert_eq!(first["keys"][0]["kty"], "OKP");
    assert_eq!(first["keys"][0]["crv"], "Ed25519");
    assert_eq!(jwks(), first, "the key is kept in the state directory");
    assert!(Verifier::from_jwks(&first).is_ok());
}

/// A ledger that says every invocation runs (a store that missed ends),
/// or that cannot be read.
struct Ledger(Result<bool, String>);

#[async_trait::async_trait]
impl warden::InvocationLedger for Ledger {
    async fn running(&self, _: &str) -> Result<bool, String> {
        self.0.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_runtime_saw_end_wins_over_a_ledger_that_missed_it() {
    let (dir, port, seen, _audit, _) = setup().await;
    let key = || warden::KeyPair::from_seed(&[3; 32]);
    let replica = |ledger: Ledger| {
        Runtime::builder()
            .manifest(Manifest::load(dir.path().join("manifest.toml")).unwrap())
            .audit(MemorySink::new())
            .cache_dir(crate::common::shared_cache())
            .identity(key())
            .invocations(std::sync::Arc::new(ledger))
            .build()
            .unwrap()
    };
    let a = replica(Ledger(Ok(true)));
    let grant = Grant::new("t").http(&format!("http://127.0.0.1:{port}/"), None);
    let input = json!({"url": format!("http://127.0.0.1:{port}/whoami"), "audience": AUDIENCE});
    a.invoke("call-api", &grant, &input.to_string())
        .await
        .unwrap();
    let token = seen.lock().unwrap()[0].0.clone();
    // The runtime that ran it saw it end: inactive, whatever the ledger says.
    let here = a.introspect_shared(&token).await.unwrap();
    assert!(!here.active);
    assert_eq!(here.reason.as_deref(), Some("its invocation has ended"));
    // Another runtime with the same key takes the ledger's word ...
    let b = replica(Ledger(Ok(true)));
    let there = b.introspect_shared(&token).await.unwrap();
    assert!(there.active);
    assert_eq!(there.claims.unwrap().task, "t");
    assert!(
        !replica(Ledger(Ok(false)))
            .introspect_shared(&token)
            .await
            .unwrap()
            .active
    );
    // ... and answers neither way when the ledger cannot be read.
    let err = replica(Ledger(Err("the store is down".into())))
        .introspect_shared(&token)
        .await
        .unwrap_err();
    assert_eq!(err, "the store is down");
    // A token that does not verify needs no ledger.
    let broken = replica(Ledger(Err("not asked".into())));
    assert!(!broken.introspect_shared("a.b.c").await.unwrap().active);
}
