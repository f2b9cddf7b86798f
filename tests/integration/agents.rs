//! Agents as workload identities (`warden serve --http --agents FILE`): a
//! loopback authorization server (keys made here, metadata and JWKS over
//! HTTP) and a SPIFFE bundle; tokens verified, mapped to grants, named in
//! the trail and in Cedar's `context.agent`; every bad token refused with
//! 401 and a reason in the server's log.

use crate::common::{HttpAnswer, HttpRequest, http_server};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PublicKeyData as _};
use rmcp::ServiceExt as _;
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A P-256 signing key and its JWK.
struct Key {
    kid: String,
    pair: KeyPair,
}

impl Key {
    fn new(kid: &str) -> Key {
        Key {
            kid: kid.to_owned(),
            pair: KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
        }
    }

    fn jwk(&self) -> Value {
        let raw = self.pair.subject_public_key_info();
        // The uncompressed point is the key's last 65 bytes: 04 || x || y.
        let point = &raw[raw.len() - 65..];
        json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
            "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..]),
        })
    }

    fn sign(&self, claims: &Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(self.kid.clone());
        let key = EncodingKey::from_ec_der(&self.pair.serialize_der());
        jsonwebtoken::encode(&h, claims, &key).unwrap()
    }
}

/// A loopback authorization server: RFC 8414 metadata naming its JWKS,
/// which holds `keys` (changeable), and a count of JWKS fetches.
struct AuthServer {
    url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
}

impl AuthServer {
    async fn start(keys: Vec<Value>) -> AuthServer {
        let shared = Arc::new(Mutex::new(keys));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (k, f) = (shared.clone(), fetches.clone());
        let port = http_server(move |req: HttpRequest| -> HttpAnswer {
            let host = req.header("host").unwrap_or_default().to_owned();
            let json_ok = |v: Value| {
                (
                    "200 OK".to_owned(),
                    "Content-Type: application/json\r\n".to_owned(),
                    v.to_string().into_bytes(),
                )
            };
            match req.path.as_str() {
                "/.well-known/oauth-authorization-server" => json_ok(json!({
                    "issuer": format!("http://{host}"),
                    "jwks_uri": format!("http://{host}/jwks"),
                })),
                "/jwks" => {
                    f.fetch_add(1, Ordering::SeqCst);
                    json_ok(json!({"keys": k.lock().unwrap().clone()}))
                }
                _ => ("404 Not Found".into(), String::new(), Vec::new()),
            }
        })
        .await;
        AuthServer {
            url: format!("http://127.0.0.1:{port}"),
            keys: shared,
            fetches,
        }
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A running `warden serve --http --agents`, its URL and its log.
struct Served {
    child: tokio::process::Child,
    url: String,
    log: Arc<Mutex<String>>,
    dir: PathBuf,
}

impl Served {
    fn resource(&self) -> &str {
        &self.url
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log holds `text` (a refusal is logged as it is
    /// answered; the line may trail the answer by a moment).
    async fn logged(&self, text: &str) -> bool {
        for _ in 0..50 {
            if self.log().contains(text) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    fn trail(&self) -> String {
        std::fs::read_to_string(self.dir.join("audit.jsonl")).unwrap_or_default()
    }

    /// The trail once it holds `text` (records are written behind, within
    /// a moment), or as it is after 5 s.
    async fn trail_holding(&self, text: &str) -> String {
        for _ in 0..250 {
            let t = self.trail();
            if t.contains(text) {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.trail()
    }
}

/// A workspace, a manifest (echo; remover with delete; a policy that
/// forbids deletes to agents in the `contractors` group), grant templates.
fn world(dir: &Path) -> PathBuf {
    let ws = dir.join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    std::fs::write(
        dir.join("policies/agents.cedar"),
        "@id(\"no-deletes-by-contractors\")\n@reason(\"contractor agents may not delete\")\nforbid(principal, action == Warden::Action::\"fs::delete\", resource)\n  when { context.agent.groups.contains(\"contractors\") };\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("manifest.toml"),
        format!(
            "policies = [\"policies\"]\n[tools.echo]\ncomponent = \"{}\"\n[tools.remover]\ncomponent = \"{}\"\n[[tools.remover.fs]]\nhandle = \"workspace\"\nwithin = \"{}\"\nrights = [\"read\", \"delete\"]\n",
            crate::ECHO,
            crate::REMOVE_PATH,
            ws.display()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("echo-task.toml"), "task = \"template\"\n").unwrap();
    std::fs::write(
        dir.join("delete-task.toml"),
        format!(
            "task = \"template\"\n[fs.workspace]\npath = \"{}\"\nrights = [\"read\", \"delete\"]\n",
            ws.display()
        ),
    )
    .unwrap();
    ws
}

async fn serve(dir: &Path, agents: &str) -> Served {
    serve_with(dir, agents, &[]).await
}

async fn serve_with(dir: &Path, agents: &str, extra: &[&str]) -> Served {
    use tokio::io::AsyncBufReadExt;
    std::fs::write(dir.join("agents.toml"), agents).unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_warden"));
    cmd.arg("--cache-dir")
        .arg(crate::common::shared_cache())
        .args(["serve", "--http", "127.0.0.1:0", "--manifest"])
        .arg(dir.join("manifest.toml"))
        .arg("--agents")
        .arg(dir.join("agents.toml"))
        .arg("--audit")
        .arg(dir.join("audit.jsonl"))
        .args(extra)
        .env("WARDEN_STATE_DIR", dir.join("state"))
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let log = Arc::new(Mutex::new(String::new()));
    let url = loop {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("server did not start")
            .unwrap()
            .unwrap_or_else(|| panic!("server exited: {}", log.lock().unwrap()));
        log.lock().unwrap().push_str(&format!("{line}\n"));
        if let Some(url) = line.strip_prefix("warden: serving MCP at ") {
            break url.to_owned();
        }
    };
    let l = log.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            l.lock().unwrap().push_str(&format!("{line}\n"));
        }
    });
    Served {
        child,
        url,
        log,
        dir: dir.to_owned(),
    }
}

/// POSTs an `initialize` with `token`: the status, the challenge, the body.
async fn initialize(url: &str, token: Option<&str>) -> (u16, String, String) {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"}}})
            .to_string(),
        );
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    // A refusal's reason, unescaped; or the whole body.
    let shown = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or(body);
    (status, challenge, shown)
}

async fn client(url: &str, token: &str) -> rmcp::service::RunningService<rmcp::RoleClient, ()> {
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    let config =
        StreamableHttpClientTransportConfig::with_uri(url.to_owned()).auth_header(token.to_owned());
    let transport = rmcp::transport::StreamableHttpClientTransport::from_config(config);
    ().serve(transport).await.unwrap()
}

fn call(tool: &str, args: Value) -> CallToolRequestParams {
    CallToolRequestParams::new(tool.to_owned()).with_arguments(args.as_object().unwrap().clone())
}

fn agents_file(issuer: &str, extra: &str) -> String {
    format!(
        r#"
[[issuer]]
issuer = "{issuer}"
algorithms = ["ES256"]
scopes = ["tools"]
refresh = "1s"

[[agent]]
issuer = "{issuer}"
subject = "ci-*"
grants = "echo-task.toml"
labels = ["ci"]
task-claim = "run_id"

[[agent]]
issuer = "{issuer}"
subject = "ci-deployer"
groups = ["deployers"]
grants = "delete-task.toml"
{extra}"#
    )
}

#[tokio::test]
async fn a_verified_agent_gets_its_mapped_grant_and_every_record_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    let ws = world(&dir);
    let key = Key::new("k1");
    let auth = AuthServer::start(vec![key.jwk()]).await;
    let s = serve(&dir, &agents_file(&auth.url, "")).await;
    let token = |sub: &str, extra: Value| {
        let mut c = json!({"iss": auth.url, "sub": sub, "aud": s.resource(),
            "exp": now() + 300, "iat": now()});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        key.sign(&c)
    };

    // ci-bot: the prefix entry, its task from the run_id claim, label ci.
    let bot = token("ci-bot", json!({"run_id": "run-42"}));
    let c = client(&s.url, &bot).await;
    let tools = c.list_all_tools().await.unwrap();
    assert_eq!(tools.len(), 2);
    let r = c
        .call_tool(call("echo", json!({"message": "hi"})))
        .await
        .unwrap();
    assert_ne!(r.is_error, Some(true), "{r:?}");
    let meta = &r.meta.as_ref().unwrap().0["warden"];
    assert_eq!(meta["task"], "run-42");
    // Its grant holds no fs handle: the remover's grant is refused.
    std::fs::write(ws.join("x.txt"), "x").unwrap();
    let r = c
        .call_tool(call("remover", json!({"path": "x.txt"})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(ws.join("x.txt").exists());

    // ci-deployer in group deployers: the more specific entry wins (exact
    // subject and a group), with the delete grant; task from the token.
    let deployer = token("ci-deployer", json!({"groups": ["deployers"]}));
    let d = client(&s.url, &deployer).await;
    let r = d
        .call_tool(call("remover", json!({"path": "x.txt"})))
        .await
        .unwrap();
    assert_ne!(r.is_error, Some(true), "{r:?}");
    assert!(!ws.join("x.txt").exists());
    let task = r.meta.as_ref().unwrap().0["warden"]["task"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(task.starts_with("agent-") && task.len() == 22, "{task}");

    // The same agent in group contractors too: Cedar denies by context.agent.
    std::fs::write(ws.join("y.txt"), "y").unwrap();
    let contractor = token(
        "ci-deployer",
        json!({"groups": ["deployers", "contractors"]}),
    );
    let k = client(&s.url, &contractor).await;
    let r = k
        .call_tool(call("remover", json!({"path": "y.txt"})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true), "{r:?}");
    assert!(ws.join("y.txt").exists());

    // No entry matches: refused before a session opens (it would have no
    // tools), with the agent named.
    let stranger = token("someone", json!({}));
    let (status, challenge, body) = initialize(&s.url, Some(&stranger)).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert_eq!(
        body,
        format!(
            "no [[agent]] entry of the agents file matches oauth:{} someone: it is granted no tools",
            auth.url
        )
    );
    for c in [c, d, k] {
        c.cancel().await.unwrap();
    }

    // The trail names the agent in every record of its invocations, and
    // the policy that denied; the tokens appear nowhere.
    let trail = s.trail_holding("no-deletes-by-contractors").await;
    let bot_agent = format!("\"agent\":\"oauth:{} ci-bot\"", auth.url);
    let records: Vec<Value> = trail
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of_run = records
        .iter()
        .filter(|r| r["task"] == "run-42")
        .collect::<Vec<_>>();
    assert!(of_run.len() >= 2, "{trail}");
    for r in &of_run {
        assert_eq!(r["agent"], format!("oauth:{} ci-bot", auth.url), "{r}");
    }
    assert!(trail.contains(&bot_agent));
    let denied = records
        .iter()
        .find(|r| r["decision"] == "deny" && r["rule"] == "policy")
        .unwrap_or_else(|| panic!("no policy denial: {trail}"));
    assert_eq!(denied["policies"], json!(["no-deletes-by-contractors"]));
    assert_eq!(denied["agent"], format!("oauth:{} ci-deployer", auth.url));
    for t in [&bot, &deployer, &contractor, &stranger] {
        assert!(!trail.contains(t.as_str()));
        assert!(!s.log().contains(t.as_str()));
    }
    let report = warden::audit::verify::verify_text(&trail, None);
    assert!(report.tampered.is_none(), "{report:?}");
    drop(s.child);
}

#[tokio::test]
async fn every_bad_token_is_refused_with_401_and_a_reason_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    world(&dir);
    let key = Key::new("k1");
    let other = Key::new("k1"); // same kid, another key
    let auth = AuthServer::start(vec![key.jwk()]).await;
    let s = serve(&dir, &agents_file(&auth.url, "")).await;
    let claims = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut c = json!({"iss": auth.url, "sub": "ci-bot", "aud": s.resource(),
            "exp": now() + 300, "run_id": "r"});
        f(c.as_object_mut().unwrap());
        c
    };
    let good = claims(&|_| {});
    let unsigned = |header: Value, c: &Value| {
        format!(
            "{}.{}.",
            B64.encode(header.to_string()),
            B64.encode(c.to_string())
        )
    };
    let hmac = {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("k1".into());
        let public = key.jwk().to_string();
        jsonwebtoken::encode(
            &h,
            &good,
            &EncodingKey::from_secret(public.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let hmac_x = {
        // HMAC keyed with the public key's own bytes (the classic confusion).
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("k1".into());
        let spki = key.pair.subject_public_key_info();
        jsonwebtoken::encode(&h, &good, &EncodingKey::from_secret(&spki).unwrap()).unwrap()
    };
    let unknown_kid = Key::new("k9").sign(&good);
    let svid = key.sign(
        &json!({"sub": "spiffe://evil.example/bot", "aud": s.resource(), "exp": now() + 300}),
    );
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            key.sign(&claims(&|c| {
                c.insert("exp".into(), json!(now() - 600));
            })),
            "the token has expired (exp)",
        ),
        (
            "not yet valid",
            key.sign(&claims(&|c| {
                c.insert("nbf".into(), json!(now() + 600));
            })),
            "not valid yet (nbf)",
        ),
        (
            "wrong audience",
            key.sign(&claims(&|c| {
                c.insert("aud".into(), json!("http://127.0.0.1:1/mcp"));
            })),
            "the token is for another resource",
        ),
        (
            "another resource",
            key.sign(&claims(&|c| {
                c.insert("aud".into(), json!(["https://api.example/"]));
            })),
            "the token is for another resource",
        ),
        (
            "no audience",
            key.sign(&claims(&|c| {
                c.remove("aud");
            })),
            "the token has no aud claim",
        ),
        (
            "no expiry",
            key.sign(&claims(&|c| {
                c.remove("exp");
            })),
            "the token has no exp claim",
        ),
        (
            "wrong issuer",
            key.sign(&claims(&|c| {
                c.insert("iss".into(), json!("https://evil.example"));
            })),
            "issuer \"https://evil.example\" is not trusted",
        ),
        (
            "another key",
            other.sign(&good),
            "its signature does not verify",
        ),
        (
            "unknown kid",
            unknown_kid,
            "its key id \"k9\" is not in the issuer's key set",
        ),
        (
            "alg none",
            unsigned(json!({"alg": "none", "kid": "k1"}), &good),
            "alg none is never accepted",
        ),
        ("hmac with the jwk", hmac, "algorithm HS256 is not allowed"),
        (
            "hmac with the key",
            hmac_x,
            "algorithm HS256 is not allowed",
        ),
        (
            "untrusted trust domain",
            svid,
            "SPIFFE trust domain \"evil.example\" is not trusted",
        ),
        ("not a jwt", "not-a-jwt".into(), "not a signed JWT"),
        (
            "a terminal escape in the kid",
            Key::new("\u{1b}[31mk").sign(&good),
            "\"\\u{1b}[31mk\" is not in the issuer's key set",
        ),
        ("huge", "a".repeat(20 << 10), "longer than 16 KiB"),
        (
            "an invisible character in the subject",
            key.sign(&claims(&|c| {
                c.insert("sub".into(), json!("ci-bot\u{200b}"));
            })),
            "is not 1 to 512 printable characters",
        ),
    ];
    let metadata = format!(
        "resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\"",
        s.url.trim_end_matches("/mcp")
    );
    for (what, token, reason) in &cases {
        let (status, challenge, body) = initialize(&s.url, Some(token)).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{what}: {challenge}"
        );
        assert!(challenge.contains(&metadata), "{what}: {challenge}");
        assert!(body.contains(reason), "{what}: {body}");
        assert!(
            s.logged(reason).await,
            "{what}: {reason} not in the log:\n{}",
            s.log()
        );
    }
    // Control characters from a token never reach the log raw.
    assert!(!s.log().contains('\u{1b}'));
    // No token: 401, no error code, the metadata and scopes named.
    let (status, challenge, _) = initialize(&s.url, None).await;
    assert_eq!(status, 401);
    assert!(!challenge.contains("error="), "{challenge}");
    assert!(
        challenge.contains(&metadata) && challenge.contains("scope=\"tools\""),
        "{challenge}"
    );
    // The good token passes, after all of that; but not beside another
    // Authorization header (which one a proxy in front read is unknown).
    let (status, _, body) = initialize(&s.url, Some(&key.sign(&good))).await;
    assert_eq!(status, 200, "{body}");
    let twice = reqwest::Client::new()
        .post(&s.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("authorization", format!("Bearer {}", key.sign(&good)))
        .header("authorization", "Basic dXNlcjpwdw==")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status(), 401);
    // Nothing was invoked: the trail holds no record.
    assert!(!s.trail().contains("invocation.start"));
    drop(s.child);
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_and_made_up_kids_do_not_flood_the_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    world(&dir);
    let (k1, k2) = (Key::new("k1"), Key::new("k2"));
    let auth = AuthServer::start(vec![k1.jwk()]).await;
    let s = serve(&dir, &agents_file(&auth.url, "")).await;
    let claims = json!({"iss": auth.url, "sub": "ci-bot", "aud": s.resource(),
        "exp": now() + 300, "run_id": "r"});
    assert_eq!(initialize(&s.url, Some(&k1.sign(&claims))).await.0, 200);
    assert_eq!(auth.fetches.load(Ordering::SeqCst), 1);
    // The issuer rotates: k2 is published. Past the refresh bound (1s), a
    // token signed with k2 makes the server fetch the set again.
    auth.keys.lock().unwrap().push(k2.jwk());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(initialize(&s.url, Some(&k2.sign(&claims))).await.0, 200);
    assert_eq!(auth.fetches.load(Ordering::SeqCst), 2);
    // Thirty made-up key ids in a burst: at most one more fetch.
    for i in 0..30 {
        let t = Key::new(&format!("made-up-{i}")).sign(&claims);
        assert_eq!(initialize(&s.url, Some(&t)).await.0, 401);
    }
    assert!(
        auth.fetches.load(Ordering::SeqCst) <= 3,
        "{}",
        auth.fetches.load(Ordering::SeqCst)
    );
    // A key the issuer removed keeps no power once the set is fetched again.
    auth.keys.lock().unwrap().retain(|k| k["kid"] != "k1");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let t = Key::new("k3").sign(&claims); // unknown: triggers a fetch
    assert_eq!(initialize(&s.url, Some(&t)).await.0, 401);
    let fresh = json!({"iss": auth.url, "sub": "ci-bot", "aud": s.resource(),
        "exp": now() + 299, "run_id": "r2"});
    let (status, _, body) = initialize(&s.url, Some(&k1.sign(&fresh))).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body.contains("its key id \"k1\" is not in the issuer's key set"),
        "{body}"
    );
    drop(s.child);
}

#[tokio::test]
async fn spiffe_svids_and_the_protected_resource_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    world(&dir);
    let (key, spiffe_key) = (Key::new("k1"), Key::new("svid-1"));
    let auth = AuthServer::start(vec![key.jwk()]).await;
    let mut bundle = spiffe_key.jwk();
    bundle["use"] = json!("jwt-svid");
    std::fs::write(
        dir.join("example.org.jwks"),
        json!({"keys": [bundle], "spiffe_sequence": 1}).to_string(),
    )
    .unwrap();
    let extra = r#"
[[spiffe]]
trust-domain = "example.org"
bundle = "example.org.jwks"

[[agent]]
spiffe-id = "spiffe://example.org/ci/*"
grants = "echo-task.toml"
"#;
    let s = serve(&dir, &agents_file(&auth.url, extra)).await;
    let svid = |sub: &str, k: &Key| {
        k.sign(&json!({"sub": sub, "aud": [s.resource()], "exp": now() + 300}))
    };
    let c = client(&s.url, &svid("spiffe://example.org/ci/bot", &spiffe_key)).await;
    let r = c
        .call_tool(call("echo", json!({"message": "svid"})))
        .await
        .unwrap();
    assert_ne!(r.is_error, Some(true), "{r:?}");
    c.cancel().await.unwrap();
    let want = "\"agent\":\"spiffe:spiffe://example.org/ci/bot\"";
    let trail = s.trail_holding(want).await;
    assert!(trail.contains(want), "{trail}");
    // The issuer's key cannot sign for the trust domain, nor the reverse.
    let (status, _, body) =
        initialize(&s.url, Some(&svid("spiffe://example.org/ci/bot", &key))).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("not in the issuer's key set"), "{body}");
    // A path outside every entry: verified, but refused (no tools).
    let outside = svid("spiffe://example.org/prod/db", &spiffe_key);
    let (status, _, body) = initialize(&s.url, Some(&outside)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body,
        "no [[agent]] entry of the agents file matches spiffe:spiffe://example.org/prod/db: it \
         is granted no tools"
    );

    // The metadata, as RFC 9728 shapes it, at both well-known paths.
    let origin = s.url.trim_end_matches("/mcp").to_owned();
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let r = reqwest::get(format!("{origin}{path}")).await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        let doc: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(doc["resource"], s.resource());
        assert_eq!(doc["authorization_servers"], json!([auth.url]));
        assert_eq!(doc["scopes_supported"], json!(["tools"]));
        assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
    }
    drop(s.child);
}

#[tokio::test]
async fn the_official_python_client_calls_tools_with_a_bearer_jwt() {
    let Some(python) = crate::common::python_with("mcp") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    world(&dir);
    let key = Key::new("k1");
    let auth = AuthServer::start(vec![key.jwk()]).await;
    let s = serve(&dir, &agents_file(&auth.url, "")).await;
    let token = key.sign(
        &json!({"iss": auth.url, "sub": "ci-python", "aud": s.resource(),
        "exp": now() + 300, "run_id": "py-run"}),
    );
    let script = dir.join("client.py");
    std::fs::write(
        &script,
        r#"
import asyncio, json, sys
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

async def main(url, token):
    http = create_mcp_http_client(headers={"Authorization": "Bearer " + token})
    async with http, streamable_http_client(url, http_client=http) as (r, w):
        async with ClientSession(r, w) as s:
            await s.initialize()
            tools = await s.list_tools()
            res = await s.call_tool("echo", {"message": "from python"})
            print(json.dumps({"tools": sorted(t.name for t in tools.tools),
                              "result": res.structured_content}))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"#,
    )
    .unwrap();
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(&s.url)
        .arg(&token)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tools"], json!(["echo", "remover"]));
    assert_eq!(v["result"], json!({"message": "from python"}));
    let want = format!("\"agent\":\"oauth:{} ci-python\"", auth.url);
    let trail = s.trail_holding(&want).await;
    assert!(trail.contains(&want), "{trail}");
    drop(s.child);
}

#[test]
fn warden_check_validates_the_agents_file_like_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    world(&dir);
    let check = |file: &str, json: bool| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_warden"));
        c.arg("--cache-dir")
            .arg(crate::common::shared_cache())
            .arg("check")
            .arg(dir.join("manifest.toml"))
            .arg("--agents")
            .arg(dir.join(file));
        if json {
            c.arg("--json");
        }
        let out = c.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    std::fs::write(
        dir.join("good.toml"),
        agents_file("https://login.example", ""),
    )
    .unwrap();
    let (code, out, err) = check("good.toml", false);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("ok    agents           2 entries, trusting https://login.example from"),
        "{out}"
    );
    std::fs::write(
        dir.join("bad.toml"),
        "[[issuer]]\nissuer = \"https://login.example\"\nalgorithms = [\"none\"]\n\n[[agent]]\nissuer = \"https://login.example\"\nsubject = \"*-bot\"\ngrants = \"echo-task.toml\"\n",
    )
    .unwrap();
    let (code, out, err) = check("bad.toml", false);
    assert_eq!(code, Some(2), "{out}{err}");
    let bad = dir.join("bad.toml").display().to_string();
    assert!(
        err.contains(&format!(
            "{bad}:3:14: issuer.algorithms: \"none\" is not an algorithm"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{bad}:7:11: agent.subject: '*' only ends a pattern"
        )),
        "{err}"
    );
    let (code, out, _) = check("bad.toml", true);
    assert_eq!(code, Some(2));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["problems"][0]["line"], 3);
    assert_eq!(v["problems"][0]["column"], 14);
    assert_eq!(v["problems"][0]["field"], "issuer.algorithms");
}

/// `sig` with its ECDSA P-256 `s` replaced by `n - s`: the same signature
/// in its other valid form.
fn other_form(token: &str) -> String {
    const N: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63,
        0x25, 0x51,
    ];
    let (message, sig) = token.rsplit_once('.').unwrap();
    let mut sig = B64.decode(sig).unwrap();
    let s = sig[32..].to_vec();
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = i16::from(N[i]) - i16::from(s[i]) - borrow;
        borrow = i16::from(d < 0);
        if d < 0 {
            d += 256;
        }
        sig[32 + i] = d as u8;
    }
    format!("{message}.{}", B64.encode(sig))
}

#[tokio::test]
async fn sessions_tasks_and_headers_an_agent_cannot_bend() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    world(&dir);
    let key = Key::new("k1");
    let auth = AuthServer::start(vec![key.jwk()]).await;
    let extra = format!(
        "\n[[agent]]\nissuer = \"{}\"\nsubject = \"other\"\ngrants = \"echo-task.toml\"\n",
        auth.url
    );
    let s = serve(&dir, &agents_file(&auth.url, &extra)).await;
    let token = |sub: &str, extra: Value| {
        let mut c = json!({"iss": auth.url, "sub": sub, "aud": s.resource(),
            "exp": now() + 300, "iat": now(), "jti": format!("{sub}-1")});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        key.sign(&c)
    };

    // The same token in its other signature form verifies too, but is the
    // same token: the same task (and so the same history), not a new one.
    let a = token("ci-deployer", json!({"groups": ["deployers"]}));
    let b = other_form(&a);
    assert_ne!(a, b);
    let mut tasks = Vec::new();
    for t in [&a, &b] {
        let c = client(&s.url, t).await;
        let r = c.call_tool(call("echo", json!({}))).await.unwrap();
        tasks.push(r.meta.unwrap().0["warden"]["task"].clone());
        c.cancel().await.unwrap();
    }
    assert_eq!(tasks[0], tasks[1]);

    // A session belongs to the agent that opened it: another agent with a
    // good token cannot use it.
    let post = |token: String, session: Option<String>, body: Value| {
        let url = s.url.clone();
        async move {
            let mut req = reqwest::Client::new()
                .post(&url)
                .bearer_auth(token)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("mcp-protocol-version", "2025-06-18")
                .body(body.to_string());
            if let Some(id) = session {
                req = req.header("mcp-session-id", id);
            }
            req.send().await.unwrap()
        }
    };
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}}});
    let r = post(a.clone(), None, init).await;
    assert_eq!(r.status(), 200);
    let id = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let other = token("other", json!({}));
    let r = post(other, Some(id.clone()), list.clone()).await;
    assert_eq!(r.status(), 404);
    assert!(s.logged("a session another caller opened").await);
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert!(
        post(a.clone(), Some(id.clone()), initialized)
            .await
            .status()
            .is_success()
    );
    assert_eq!(post(a.clone(), Some(id), list).await.status(), 200);

    // A task-claim cannot take the prefix of the ids Warden makes.
    let (status, _, body) = initialize(
        &s.url,
        Some(&token(
            "ci-bot",
            json!({"run_id": "agent-0123456789abcdef"}),
        )),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("the agent- prefix is kept"), "{body}");
    // A token with critical header extensions is refused.
    let good = json!({"iss": auth.url, "sub": "ci-bot", "aud": s.resource(), "exp": now() + 300, "run_id": "r"});
    let plain = key.sign(&good);
    let (_, rest) = plain.split_once('.').unwrap();
    let crit = format!(
        "{}.{rest}",
        B64.encode(json!({"alg": "ES256", "kid": "k1", "crit": ["exp"], "exp": 1}).to_string())
    );
    let (status, _, body) = initialize(&s.url, Some(&crit)).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("critical extensions (crit)"), "{body}");
    drop(s.child);
}

#[tokio::test]
async fn a_configured_resource_is_what_tokens_name_and_where_its_metadata_is() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    world(&dir);
    let key = Key::new("k1");
    let auth = AuthServer::start(vec![key.jwk()]).await;
    let resource = "https://tools.example/agents/mcp";
    let file = format!("resource = \"{resource}\"\n{}", agents_file(&auth.url, ""));
    let s = serve(&dir, &file).await;
    let origin = s.url.trim_end_matches("/mcp").to_owned();
    let r = reqwest::get(format!(
        "{origin}/.well-known/oauth-protected-resource/agents/mcp"
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let doc: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(doc["resource"], resource);
    let (status, challenge, _) = initialize(&s.url, None).await;
    assert_eq!(status, 401);
    assert!(
        challenge.contains("resource_metadata=\"https://tools.example/.well-known/oauth-protected-resource/agents/mcp\""),
        "{challenge}"
    );
    // Tokens name the configured resource, not the address served.
    let claims = |aud: &str| json!({"iss": auth.url, "sub": "ci-bot", "aud": aud, "exp": now() + 300, "run_id": "r"});
    assert_eq!(
        initialize(&s.url, Some(&key.sign(&claims(resource))))
            .await
            .0,
        200
    );
    assert_eq!(
        initialize(&s.url, Some(&key.sign(&claims(&s.url)))).await.0,
        401
    );
    drop(s.child);
}

#[tokio::test]
async fn the_person_asked_to_approve_sees_which_agent_asks() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    let ws = world(&dir);
    let manifest = std::fs::read_to_string(dir.join("manifest.toml")).unwrap();
    std::fs::write(
        dir.join("manifest.toml"),
        format!("{manifest}approval = [\"delete\"]\n"),
    )
    .unwrap();
    let operator = "operator-token-0123456789";
    std::fs::write(dir.join("operator.token"), operator).unwrap();
    let key = Key::new("k1");
    let auth = AuthServer::start(vec![key.jwk()]).await;
    let token_file = dir.join("operator.token").display().to_string();
    let s = serve_with(
        &dir,
        &agents_file(&auth.url, ""),
        &[
            "--approvals",
            "127.0.0.1:0",
            "--approvals-token-file",
            &token_file,
        ],
    )
    .await;
    let approvals = s
        .log()
        .lines()
        .find_map(|l| {
            l.strip_prefix("warden: pending approvals at ")
                .map(str::to_owned)
        })
        .unwrap();
    let deployer = key.sign(
        &json!({"iss": auth.url, "sub": "ci-deployer", "aud": s.resource(),
        "exp": now() + 300, "groups": ["deployers"]}),
    );
    std::fs::write(ws.join("z.txt"), "z").unwrap();
    let c = client(&s.url, &deployer).await;
    let call = tokio::spawn(async move {
        let r = c.call_tool(call("remover", json!({"path": "z.txt"}))).await;
        c.cancel().await.unwrap();
        r
    });
    let http = reqwest::Client::new();
    let pending = loop {
        let list: Value = serde_json::from_str(
            &http
                .get(&approvals)
                .bearer_auth(operator)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        )
        .unwrap();
        if let Some(p) = list.as_array().and_then(|a| a.first()).cloned() {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(pending["agent"], format!("oauth:{} ci-deployer", auth.url));
    assert_eq!(pending["action"], "fs.remove-file");
    let digest = pending["digest"].as_str().unwrap();
    let answered = http
        .post(format!("{approvals}/{digest}"))
        .bearer_auth(operator)
        .body(json!({"approved": true, "by": "ops"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), 200);
    let r = call.await.unwrap().unwrap();
    assert_ne!(r.is_error, Some(true), "{r:?}");
    assert!(!ws.join("z.txt").exists());
    drop(s.child);
}

/// One stateless 2026-07-28 `tools/call` of the remover by the holder of
/// `token`, a client that answers approvals itself; `retry`: the
/// requestState it answers. The JSON-RPC answer.
async fn remove_as(url: &str, token: &str, path: &str, retry: Option<&str>) -> Value {
    let mut params = json!({
        "name": "remover",
        "arguments": {"path": path},
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "round-client", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}},
        },
    });
    if let Some(state) = retry {
        params["requestState"] = json!(state);
        params["inputResponses"] =
            json!({"approval": {"action": "accept", "content": {"approved": true}}});
    }
    crate::common::post_call(url, Some(token), "remover", params).await
}

#[tokio::test]
async fn an_approval_round_answers_only_for_the_agent_whose_call_asked() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    let ws = world(&dir);
    let manifest = std::fs::read_to_string(dir.join("manifest.toml")).unwrap();
    std::fs::write(
        dir.join("manifest.toml"),
        format!("{manifest}approval = [\"delete\"]\n"),
    )
    .unwrap();
    let key = Key::new("k1");
    let auth = AuthServer::start(vec![key.jwk()]).await;
    // Another agent with the same grant: it may delete too, but only on
    // its own calls.
    let other = format!(
        "\n[[agent]]\nissuer = \"{}\"\nsubject = \"ops-bot\"\ngrants = \"delete-task.toml\"\n",
        auth.url
    );
    let s = serve(&dir, &agents_file(&auth.url, &other)).await;
    let token = |sub: &str, groups: Value| {
        key.sign(&json!({"iss": auth.url, "sub": sub, "aud": s.resource(),
            "exp": now() + 300, "groups": groups}))
    };
    let deployer = token("ci-deployer", json!(["deployers"]));
    let intruder = token("ops-bot", json!([]));
    std::fs::write(ws.join("z.txt"), "z").unwrap();

    let asked = remove_as(&s.url, &deployer, "z.txt", None).await;
    assert_eq!(asked["result"]["resultType"], "input_required", "{asked}");
    let state = asked["result"]["requestState"].as_str().unwrap().to_owned();

    // The other agent holds the state (leaked, logged, guessed): its
    // answer is for a round it never started, so no round at all.
    let v = remove_as(&s.url, &intruder, "z.txt", Some(&state)).await;
    assert_eq!(
        v["error"]["message"],
        "unknown or expired requestState (an approval answer counts once, for the call that asked)",
        "{v}"
    );
    assert!(
        ws.join("z.txt").exists(),
        "deleted on another agent's answer"
    );

    // The agent whose call asked answers it: the round was still open.
    let v = remove_as(&s.url, &deployer, "z.txt", Some(&state)).await;
    assert_eq!(v["result"]["isError"], false, "{v}");
    assert!(!ws.join("z.txt").exists());
    let invocation = v["result"]["_meta"]["warden"]["invocation"]
        .as_str()
        .unwrap()
        .to_owned();
    // The trail: the approval is the deployer's client's, in the
    // deployer's invocation; the other agent took no part in it.
    let trail = s.trail_holding("\"event\":\"end\"").await;
    let approval = trail
        .lines()
        .find(|l| {
            l.contains(&invocation)
                && l.contains("\"capability\":\"approval\"")
                && l.contains("\"event\":\"decision\"")
        })
        .unwrap_or_else(|| panic!("no approval record: {trail}"));
    assert!(
        approval.contains("MCP client 'round-client' (elicitation)")
            && approval.contains(&format!("oauth:{} ci-deployer", auth.url)),
        "{approval}"
    );
    assert!(!trail.contains("ops-bot"), "{trail}");
}
