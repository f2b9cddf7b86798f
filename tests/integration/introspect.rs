//! Token introspection and the key set over HTTP (`serve
//! --introspect-token-file`, `GET /.well-known/jwks.json`): a downstream
//! service asks any replica whether a tool's identity token is live, and
//! every replica answers the same — active while the call runs wherever it
//! runs, inactive once it has ended.

use crate::mcp::{Setup, call, http_client, setup};
use crate::postgres::Postgres;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex, OnceLock};

const AUDIENCE: &str = "https://api.test";
const INTROSPECTOR: &str = "introspector-token-0123456789";

/// A request to `base` (`http://127.0.0.1:PORT`), blocking, over a fresh
/// connection: the status and the body. Headers are `Name: value` lines.
fn request(base: &str, method: &str, path: &str, headers: &[&str], body: &str) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if !headers
        .iter()
        .any(|h| h.to_ascii_lowercase().starts_with("host:"))
    {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    sock.write_all(head.as_bytes()).unwrap();
    sock.write_all(body.as_bytes()).unwrap();
    let mut out = Vec::new();
    sock.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

/// `POST /introspect` with the introspector's token: the status and the
/// answer.
fn introspect(base: &str, token: &str) -> (u16, Value) {
    let form = format!("token={token}&token_type_hint=access_token");
    let (status, body) = request(
        base,
        "POST",
        "/introspect",
        &[
            &format!("Authorization: Bearer {INTROSPECTOR}"),
            "Content-Type: application/x-www-form-urlencoded",
        ],
        &form,
    );
    (status, serde_json::from_str(&body).unwrap_or(json!(body)))
}

/// What the loopback API saw: the token, and each server's introspection
/// answer while the call was running.
type Seen = Arc<Mutex<Vec<(String, Vec<(u16, Value)>)>>>;

/// Adds `call-api` (minting tokens for [`AUDIENCE`], calling a loopback
/// API) to `s`; the API introspects every token it gets at each of the
/// servers set in the returned cell.
async fn with_api(s: &Setup) -> (Arc<OnceLock<Vec<String>>>, Seen, u16) {
    let servers: Arc<OnceLock<Vec<String>>> = Arc::default();
    let seen: Seen = Arc::default();
    let (at, log) = (servers.clone(), seen.clone());
    let port = crate::common::http_server(move |req| {
        let token = req.bearer();
        let answers = at
            .get()
            .unwrap()
            .iter()
            .map(|b| introspect(b, &token))
            .collect();
        log.lock().unwrap().push((token, answers));
        ("200 OK".into(), String::new(), b"checked".to_vec())
    })
    .await;
    let mut manifest = std::fs::read_to_string(&s.manifest).unwrap();
    manifest.push_str(&format!(
        "\n[tools.call-api]\ncomponent = \"{}\"\ntimeout = \"20s\"\ntoken-audiences = [\"{AUDIENCE}\"]\n\
         token-send-to = [\"http://127.0.0.1:{port}\"]\n\
         [[tools.call-api.http]]\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {port}\n",
        crate::CALL_API
    ));
    std::fs::write(&s.manifest, manifest).unwrap();
    let mut grants = std::fs::read_to_string(&s.grants).unwrap();
    grants.push_str(&format!("\n[[http]]\nurl = \"http://127.0.0.1:{port}/\"\n"));
    std::fs::write(&s.grants, grants).unwrap();
    let file = s.dir.path().join("introspector.token");
    std::fs::write(&file, INTROSPECTOR).unwrap();
    (servers, seen, port)
}

fn base(mcp_url: &str) -> String {
    mcp_url.trim_end_matches("/mcp").to_owned()
}

/// One `call-api` call through `url`: the token it used, and what each
/// server said about it during the call.
async fn one_call(url: &str, port: u16, seen: &Seen) -> (String, Vec<(u16, Value)>) {
    let client = http_client(url, None).await.unwrap();
    let r = client
        .call_tool(call(
            "call-api",
            json!({"url": format!("http://127.0.0.1:{port}/whoami"), "audience": AUDIENCE}),
        ))
        .await
        .unwrap();
    assert_ne!(r.is_error, Some(true), "{}", crate::mcp::text(&r));
    let _ = client.cancel().await;
    seen.lock().unwrap().pop().expect("the API was not called")
}

/// The answer for an active token of `call-api` under the test's task.
fn assert_live(answer: &(u16, Value), jti: &str) {
    let (status, a) = answer;
    assert_eq!(*status, 200, "{a}");
    assert_eq!(a["active"], true, "{a}");
    assert_eq!(
        (
            &a["tool"],
            &a["task"],
            &a["aud"],
            &a["jti"],
            &a["token_type"]
        ),
        (
            &json!("call-api"),
            &json!("mcp-task"),
            &json!(AUDIENCE),
            &json!(jti),
            &json!("Bearer")
        )
    );
    assert!(a["sub"].as_str().unwrap().starts_with("sha256:"), "{a}");
    assert!(a["scope"].as_str().unwrap().contains("http:"), "{a}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_is_active_on_every_replica_while_its_call_runs_and_on_none_after() {
    let Some(pg) = Postgres::start() else { return };
    let s = setup();
    let (servers, seen, port) = with_api(&s).await;
    let file = s.dir.path().join("introspector.token");
    let extra = ["--introspect-token-file", file.to_str().unwrap()];
    let (a, url_a, _) = crate::replicas::replica_with(&s, &pg, "replica-a", &extra).await;
    let (b, url_b, _) = crate::replicas::replica_with(&s, &pg, "replica-b", &extra).await;
    let (base_a, base_b) = (base(&url_a), base(&url_b));
    servers.set(vec![base_a.clone(), base_b.clone()]).unwrap();

    // The call runs on A; B knows it runs from the shared trail.
    let (token, during) = one_call(&url_a, port, &seen).await;
    let jti = during[0].1["jti"].as_str().unwrap_or_default().to_owned();
    assert_live(&during[0], &jti);
    assert_live(&during[1], &jti);
    let db = pg.client().await;
    let row = db
        .query_one(
            "SELECT count(*) FILTER (WHERE event = 'invocation.start'),
                    count(*) FILTER (WHERE event = 'invocation.end'),
                    min(c.replica)
             FROM warden_audit JOIN warden_chains c USING (chain) WHERE invocation = $1",
            &[&jti],
        )
        .await
        .unwrap();
    let (starts, ends, on): (i64, i64, String) = (row.get(0), row.get(1), row.get(2));
    assert_eq!((starts, ends, on.as_str()), (1, 1, "replica-a"));

    // Ended: inactive everywhere, and the answer says nothing else.
    for b in [&base_a, &base_b] {
        assert_eq!(introspect(b, &token), (200, json!({"active": false})));
    }
    // Every replica publishes the same keys, which verify the token.
    let (sa, ja) = request(&base_a, "GET", "/.well-known/jwks.json", &[], "");
    let (sb, jb) = request(&base_b, "GET", "/.well-known/jwks.json", &[], "");
    assert_eq!((sa, sb), (200, 200));
    assert_eq!(ja, jb);
    let keys: Value = serde_json::from_str(&ja).unwrap();
    let claims = warden::Verifier::from_jwks(&keys)
        .unwrap()
        .verify(&token, AUDIENCE)
        .unwrap();
    assert_eq!(claims.jti, jti);

    // A call on B, introspected on A while it runs: the other way round.
    let (_, during) = one_call(&url_b, port, &seen).await;
    let jti_b = during[1].1["jti"].as_str().unwrap_or_default().to_owned();
    assert_ne!(jti_b, jti);
    assert_live(&during[0], &jti_b);
    assert_live(&during[1], &jti_b);

    // The store down: a token B does not see running is neither active
    // nor inactive (503), and the store's user is not named.
    pg.stop();
    let (status, answer) = introspect(&base_b, &token);
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"], "temporarily_unavailable");
    assert!(!answer.to_string().contains("warden@"), "{answer}");
    // A token that does not verify needs no store: inactive still.
    assert_eq!(
        introspect(&base_b, "a.b.c"),
        (200, json!({"active": false}))
    );
    pg.restart();
    let _ = (
        crate::replicas::terminate(a).await,
        crate::replicas::terminate(b).await,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn introspection_needs_its_own_token_and_one_well_formed_form() {
    let s = setup();
    let (servers, seen, port) = with_api(&s).await;
    let file = s.dir.path().join("introspector.token");
    let (child, url, _) =
        crate::mcp::http_server_said(&s, &["--introspect-token-file", file.to_str().unwrap()])
            .await;
    let at = base(&url);
    servers.set(vec![at.clone()]).unwrap();
    // One process, no store: active while the call runs, not after.
    let (token, during) = one_call(&url, port, &seen).await;
    let jti = during[0].1["jti"].as_str().unwrap_or_default().to_owned();
    assert_live(&during[0], &jti);
    assert_eq!(introspect(&at, &token), (200, json!({"active": false})));

    let form = "Content-Type: application/x-www-form-urlencoded";
    let good = format!("Authorization: Bearer {INTROSPECTOR}");
    let body = format!("token={token}");
    let refused = |headers: &[&str], method: &str, body: &str| {
        request(&at, method, "/introspect", headers, body)
    };
    // Who may ask: the introspector alone, never without a token.
    let (st, b) = refused(&[form], "POST", &body);
    assert_eq!(st, 401, "{b}");
    assert!(b.contains("a bearer token is required"), "{b}");
    let (st, b) = refused(
        &[form, "Authorization: Bearer guess-0123456789abcdef"],
        "POST",
        &body,
    );
    assert_eq!(st, 401, "{b}");
    assert!(b.contains("not one this server accepts"), "{b}");
    // How: a POST of one form with one token.
    let (st, b) = refused(&[&good], "GET", "");
    assert_eq!(st, 405, "{b}");
    let (st, b) = refused(&[&good, "Content-Type: application/json"], "POST", "{}");
    assert_eq!(st, 415, "{b}");
    assert!(b.contains("application/x-www-form-urlencoded"), "{b}");
    let (st, b) = refused(&[&good, form], "POST", &format!("{body}&token=a.b.c"));
    assert_eq!(st, 400, "{b}");
    assert!(b.contains("token is given more than once"), "{b}");
    let (st, b) = refused(&[&good, form], "POST", "token_type_hint=x");
    assert_eq!(st, 400, "{b}");
    assert!(b.contains("the form has no token"), "{b}");
    let big = format!("token={}", "a".repeat(20 << 10));
    let (st, b) = refused(&[&good, form], "POST", &big);
    assert_eq!(st, 413, "{b}");
    // Tokens that are not this server's: inactive, nothing told.
    let mut parts: Vec<&str> = token.split('.').collect();
    parts[2] = "AAAA";
    let forged = parts.join(".");
    let other = warden::KeyPair::from_seed(&[7; 32]).sign(&warden::Claims {
        iss: "warden:x".into(),
        sub: "sha256:00".into(),
        aud: AUDIENCE.into(),
        task: "mcp-task".into(),
        jti: jti.clone(),
        tool: "call-api".into(),
        scope: vec![],
        iat: 0,
        nbf: 0,
        exp: u64::MAX / 2,
    });
    for t in [
        "",
        "not-a-token",
        forged.as_str(),
        other.as_str(),
        "%00%1b[31m",
    ] {
        let (st, b) = introspect(&at, t);
        if t.is_empty() {
            assert_eq!(st, 400, "{b}");
        } else {
            assert_eq!((st, b), (200, json!({"active": false})), "{t}");
        }
    }
    // A Host this server does not answer to (DNS rebinding).
    let (st, _) = request(
        &at,
        "GET",
        "/.well-known/jwks.json",
        &["Host: evil.example"],
        "",
    );
    assert!(st == 400 || st == 403, "{st}");
    drop(child);

    // Without --introspect-token-file: off, and said so.
    let (child, url, _) = crate::mcp::http_server_said(&s, &[]).await;
    let (st, b) = request(&base(&url), "POST", "/introspect", &[&good, form], &body);
    assert_eq!(st, 404, "{b}");
    assert!(b.contains("--introspect-token-file"), "{b}");
    drop(child);
}

#[test]
fn an_introspection_token_shared_with_a_client_or_an_operator_is_refused() {
    let s = setup();
    let file = s.dir.path().join("same.token");
    std::fs::write(&file, INTROSPECTOR).unwrap();
    let file = file.to_str().unwrap();
    // `serve --http` with `extra`, the introspection token also being the
    // token `extra` names last: its exit status and what it said.
    let refused = |extra: &[&str]| {
        let (manifest, grants) = (s.manifest.to_str().unwrap(), s.grants.to_str().unwrap());
        let mut args = vec!["serve", "--manifest", manifest, "--grants", grants];
        args.extend(["--http", "127.0.0.1:0", "--introspect-token-file", file]);
        args.extend(extra);
        let out = crate::replicas::warden(&s, &args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), err)
    };
    let (code, err) = refused(&["--token-file", file]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("the introspection token must differ from every client token (an agent must not read what other calls' tokens say)"),
        "{err}"
    );
    // Nor may it be an operator's: a service that introspects must not
    // also answer approvals.
    let (code, err) = refused(&["--approvals", "127.0.0.1:0", "--approvals-token-file", file]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("the approvals and introspection tokens must differ (each operator endpoint needs its own)"),
        "{err}"
    );
}
