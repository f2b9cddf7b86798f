//! Egress: a loopback server plays the external API. Only granted
//! destinations are reached; every bypass form is denied before any packet
//! leaves; secrets go by reference, and only to their `send-to`.

use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use warden::audit::{Event, MemorySink};
use warden::{Error, Grant, GrantError, Manifest, Runtime};

const API_TOKEN: &str = "api-token-9c1d4e7f2a";
const OTHER_TOKEN: &str = "other-token-55aa33cc";
const HIDDEN_TOKEN: &str = "hidden-token-0d15ea5e";

/// What the server saw: (method, path, authorization header).
type Seen = Arc<Mutex<Vec<(String, String, Option<String>)>>>;

/// The stand-in API on 127.0.0.1.
async fn serve() -> (u16, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let port = crate::common::http_server(move |req| {
        let auth = req.header("authorization").map(str::to_owned);
        log.lock()
            .unwrap()
            .push((req.method.clone(), req.path.clone(), auth.clone()));
        let (status, extra, body) = match req.path.as_str() {
            "/secure" if auth.as_deref() == Some(&format!("Bearer {API_TOKEN}")) => {
                ("200 OK", String::new(), "welcome".to_owned())
            }
            "/secure" => ("401 Unauthorized", String::new(), "no".to_owned()),
            "/redirect" => (
                "302 Found",
                "Location: http://evil.example/steal\r\n".to_owned(),
                String::new(),
            ),
            "/redirect-local" => (
                "302 Found",
                "Location: /api/landed\r\n".to_owned(),
                String::new(),
            ),
            "/api/big" => ("200 OK", String::new(), "b".repeat(64 << 10)),
            // A page of candidates at a secret held by reference.
            "/api/page" => ("200 OK", String::new(), format!("0000 {HIDDEN_TOKEN} 1111")),
            // The request's head, as it arrived.
            p if p.starts_with("/api/head") => ("200 OK", String::new(), req.head.clone()),
            // A server that says it compressed its echo, asked or not.
            p if p.starts_with("/api/gz") => (
                "200 OK",
                "Content-Encoding: gzip\r\n".to_owned(),
                format!(
                    "{} {}",
                    auth.as_deref().unwrap_or(""),
                    req.header("x-api-key").unwrap_or("")
                ),
            ),
            // A server answering in the charset asked for (Spring's string
            // converter reads it from `Accept`): its echo in UTF-16LE,
            // asked or not.
            p if p.starts_with("/api/u16") => (
                "200 OK",
                "Content-Type: text/plain; charset=utf-16le\r\n".to_owned(),
                (auth.as_deref().unwrap_or(""))
                    .chars()
                    .flat_map(|c| [c, '\0'])
                    .collect(),
            ),
            // The same without saying so (plain text, no charset).
            p if p.starts_with("/api/w16") => (
                "200 OK",
                String::new(),
                (auth.as_deref().unwrap_or(""))
                    .chars()
                    .flat_map(|c| [c, '\0'])
                    .collect(),
            ),
            // A debug endpoint: echoes what it was sent, several ways.
            p if p.starts_with("/api/echo") => {
                let sent = format!(
                    "{} {}",
                    auth.as_deref().unwrap_or(""),
                    req.header("x-api-key").unwrap_or("")
                );
                let escaped: String = sent
                    .chars()
                    .map(|c| format!("\\u{:04x}", c as u32))
                    .collect();
                let percent: String = sent.bytes().map(|b| format!("%{b:02X}")).collect();
                (
                    "200 OK",
                    format!("X-Echo: {sent}\r\n"),
                    format!("{{\"sent\":\"{escaped}\",\"pct\":\"{percent}\",\"path\":\"{p}\"}}"),
                )
            }
            p => ("200 OK", String::new(), format!("ok {p}")),
        };
        let typed = match extra.contains("Content-Type") {
            true => extra,
            false => format!("{extra}Content-Type: text/plain\r\n"),
        };
        (status.into(), typed, body.into_bytes())
    })
    .await;
    (port, seen)
}

struct Api {
    _dir: tempfile::TempDir,
    port: u16,
    seen: Seen,
    audit: Arc<MemorySink>,
    runtime: Runtime,
}

impl Api {
    async fn new() -> Api {
        Self::with(|b| b).await
    }

    async fn with(configure: impl FnOnce(warden::RuntimeBuilder) -> warden::RuntimeBuilder) -> Api {
        let (port, seen) = serve().await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("api.txt"), API_TOKEN).unwrap();
        std::fs::write(dir.path().join("other.txt"), OTHER_TOKEN).unwrap();
        std::fs::write(dir.path().join("hidden.txt"), HIDDEN_TOKEN).unwrap();
        let secrets = format!(
            r#"
[[tools.TOOL.secrets]]
name = "api"
source = "file:api.txt"
reveal = true
approval = "none"
send-to = ["http://127.0.0.1:{port}"]

[[tools.TOOL.secrets]]
name = "other"
source = "file:other.txt"
reveal = true
approval = "none"
send-to = ["https://elsewhere.example"]

[[tools.TOOL.secrets]]
name = "hidden"
source = "file:hidden.txt"
send-to = ["http://127.0.0.1:{port}"]

[[tools.TOOL.secrets]]
name = "fleeting"
source = "file:api.txt"
ttl = "1ns"
send-to = ["http://127.0.0.1:{port}"]
"#
        );
        let text = format!(
            r#"
[tools.probe]
component = "{probe}"
# Identity tokens are redacted like secrets, but are no secret a server
# could echo: without secrets, responses still come as the tool asked.
token-audiences = ["https://api.test"]
[[tools.probe.http]]
scheme = "http"
host = "127.0.0.1"
port = {port}
methods = ["GET", "POST"]
approval = "none"
{probe_secrets}

# The same, its identity tokens allowed to the loopback server.
[tools.token-ok]
component = "{probe}"
token-audiences = ["https://api.test"]
token-send-to = ["http://127.0.0.1:{port}"]
[[tools.token-ok.http]]
scheme = "http"
host = "127.0.0.1"
port = {port}
methods = ["GET", "POST"]
approval = "none"

[tools.http-get]
component = "{http_get}"
[[tools.http-get.http]]
scheme = "http"
host = "127.0.0.1"
port = {port}
{get_secrets}

[tools.changer]
component = "{probe}"
[[tools.changer.http]]
scheme = "http"
host = "127.0.0.1"
port = {port}
methods = ["GET", "POST"]

[tools.named]
component = "{probe}"
[[tools.named.http]]
scheme = "http"
host = "localhost"
port = {port}
path-prefixes = ["/api/"]
addresses = ["127.0.0.1", "::1"]

[tools.unlisted]
component = "{probe}"
[[tools.unlisted.http]]
scheme = "http"
host = "localhost"
port = {port}

[tools.std]
component = "{std}"
token-audiences = ["https://api.test"]
[[tools.std.http]]
scheme = "http"
host = "127.0.0.1"
port = {port}
methods = ["GET", "POST"]
approval = "none"
{std_secrets}

[tools.std-unlisted]
component = "{std}"
[[tools.std-unlisted.http]]
scheme = "http"
host = "localhost"
port = {port}

# The same as `std`, each request waiting for a person.
[tools.std-asks]
component = "{std}"
[[tools.std-asks.http]]
scheme = "http"
host = "127.0.0.1"
port = {port}
methods = ["GET", "POST"]
approval = "required"
{asks_secrets}
"#,
            std = crate::WASI_HTTP_PROBE,
            probe = crate::EGRESS_PROBE,
            http_get = crate::HTTP_GET,
            probe_secrets = secrets.replace("TOOL", "probe"),
            get_secrets = secrets.replace("TOOL", "http-get"),
            std_secrets = secrets.replace("TOOL", "std"),
            asks_secrets = secrets.replace("TOOL", "std-asks"),
        );
        let path = dir.path().join("manifest.toml");
        std::fs::write(&path, text).unwrap();
        let audit = MemorySink::new();
        let runtime = configure(
            Runtime::builder()
                .manifest(Manifest::load(&path).unwrap())
                .audit(audit.clone())
                .cache_dir(crate::common::shared_cache()),
        )
        .build()
        .unwrap();
        Api {
            _dir: dir,
            port,
            seen,
            audit,
            runtime,
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The task grant used by most tests: /api/, /secure and /redirect.
    fn grant(&self) -> Grant {
        let b = self.base();
        Grant::new("egress")
            .http(&format!("{b}/api/"), None)
            .http(&format!("{b}/secure"), None)
            .http(&format!("{b}/redirect"), Some(&["GET"]))
            .secret("api")
            .secret("other")
    }

    async fn probe(&self, tool: &str, grant: &Grant, input: Value) -> (Value, String) {
        let run = self
            .runtime
            .invoke(tool, grant, &input.to_string())
            .await
            .unwrap();
        (serde_json::from_str(&run.output.unwrap()).unwrap(), run.id)
    }

    fn requests(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The invocation's egress record.
    fn egress(&self, inv: &str) -> warden::audit::Record {
        let mut records = self.audit.invocation(inv).into_iter();
        records.find(|r| r.event == Event::Egress).unwrap()
    }

    fn decisions(&self, inv: &str) -> Vec<warden::audit::Record> {
        self.audit
            .invocation(inv)
            .into_iter()
            .filter(|r| r.event == Event::Decision)
            .collect()
    }
}

#[tokio::test]
async fn a_method_that_may_change_state_waits_for_a_person_by_default() {
    let api = Api::new().await;
    // `changer`'s rule allows GET and POST and says nothing of approval.
    let g = Grant::new("t").http(&format!("{}/api/", api.base()), None);
    let (out, _) = api
        .probe(
            "changer",
            &g,
            json!({"url": format!("{}/api/read", api.base())}),
        )
        .await;
    assert_eq!(out["ok"]["status"], 200, "{out}");
    let (out, inv) = api
        .probe(
            "changer",
            &g,
            json!({"method": "POST", "url": format!("{}/api/write", api.base())}),
        )
        .await;
    assert_eq!(out["error"]["code"], "denied", "{out}");
    let seen: Vec<String> = api
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.1.clone())
        .collect();
    assert_eq!(seen, ["/api/read"], "the POST reached the server");
    let asked = api
        .audit
        .invocation(&inv)
        .into_iter()
        .find(|r| r.event == Event::ApprovalRequested)
        .expect("the POST asked for approval");
    assert_eq!(asked.action.as_deref(), Some("http.send"));
}

#[tokio::test]
async fn a_granted_request_goes_to_the_checked_address_and_is_audited() {
    let api = Api::new().await;
    let (out, inv) = api
        .probe(
            "probe",
            &api.grant(),
            json!({"url": format!("{}/api/hello", api.base())}),
        )
        .await;
    assert_eq!(out["ok"]["status"], 200, "{out}");
    assert_eq!(out["ok"]["body"], "ok /api/hello");
    let records = api.audit.invocation(&inv);
    let d = records.iter().find(|r| r.event == Event::Decision).unwrap();
    assert_eq!(d.capability.as_deref(), Some("http"));
    assert_eq!(d.action.as_deref(), Some("GET"));
    assert_eq!(d.decision.as_deref(), Some("allow"));
    assert_eq!(
        d.address.as_deref(),
        Some(format!("127.0.0.1:{}", api.port).as_str())
    );
    let e = records.iter().find(|r| r.event == Event::Egress).unwrap();
    assert_eq!(e.status, Some(200));
    assert_eq!(e.bytes_in, Some("ok /api/hello".len() as u64));
    assert_eq!(
        e.resource.as_deref(),
        Some(format!("{}/api/hello", api.base()).as_str())
    );
}

#[tokio::test]
async fn every_bypass_form_is_denied_before_anything_is_sent() {
    let api = Api::new().await;
    let p = api.port;
    let g = api.grant();
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "probe",
            format!("http://127.0.0.1:{p}@evil.example/api/x"),
            "userinfo",
            "http.url",
        ),
        (
            "probe",
            format!("http://user:pw@127.0.0.1:{p}/api/x"),
            "userinfo",
            "http.url",
        ),
        (
            "probe",
            format!("http://127.0.0.1:{p}/api/x\0.evil"),
            "NUL",
            "http.url",
        ),
        (
            "probe",
            format!("http://127.0.0.1:{}/api/x", p + 1),
            "not in the egress grant",
            "http.allowlist",
        ),
        (
            "probe",
            format!("https://127.0.0.1:{p}/api/x"),
            "not in the egress grant",
            "http.allowlist",
        ),
        (
            "probe",
            format!("http://127.0.0.1:{p}/admin"),
            "not in the egress grant",
            "http.allowlist",
        ),
        (
            "probe",
            format!("http://127.0.0.1:{p}/api/../admin"),
            "not in the egress grant",
            "http.allowlist",
        ),
        (
            "probe",
            format!("http://127.0.0.1:{p}/api/%2e%2e/admin"),
            "not in the egress grant",
            "http.allowlist",
        ),
        (
            "probe",
            format!("http://evil.example:{p}/api/x"),
            "host evil.example",
            "http.allowlist",
        ),
        // The named tool lists `localhost` only: IP literal forms are not it.
        (
            "named",
            format!("http://0x7f.1:{p}/api/x"),
            "IP address 127.0.0.1",
            "http.allowlist",
        ),
        (
            "named",
            format!("http://127.1:{p}/api/x"),
            "IP address 127.0.0.1",
            "http.allowlist",
        ),
        (
            "named",
            format!("http://2130706433:{p}/api/x"),
            "IP address 127.0.0.1",
            "http.allowlist",
        ),
        (
            "named",
            format!("http://127.0.0.1.:{p}/api/x"),
            "IP address 127.0.0.1",
            "http.allowlist",
        ),
        (
            "named",
            format!("http://[::ffff:127.0.0.1]:{p}/api/x"),
            "IP address [::ffff:7f00:1]",
            "http.allowlist",
        ),
        (
            "named",
            format!("http://[::1]:{p}/api/x"),
            "IP address [::1]",
            "http.allowlist",
        ),
        (
            "named",
            format!("http://localhost.evil.example:{p}/api/x"),
            "host localhost.evil.example",
            "http.allowlist",
        ),
        (
            "named",
            format!("http://LocalHost.Evil.Example.:{p}/api/x"),
            "host localhost.evil.example",
            "http.allowlist",
        ),
        // A name that resolves to loopback the manifest does not list.
        (
            "unlisted",
            format!("http://localhost:{p}/x"),
            "a loopback address the manifest does not list",
            "http.address",
        ),
    ];
    for (tool, url, why, rule) in cases {
        let grant = match tool {
            "probe" => g.clone(),
            "named" => Grant::new("t").http(&format!("http://localhost:{p}/api/"), None),
            _ => Grant::new("t").http(&format!("http://localhost:{p}/"), None),
        };
        let (out, inv) = api.probe(tool, &grant, json!({ "url": url })).await;
        assert_eq!(out["error"]["code"], "denied", "{url}: {out}");
        let msg = out["error"]["message"].as_str().unwrap();
        assert!(msg.contains(why), "{url}: {msg}");
        let d = api.decisions(&inv);
        assert_eq!(
            (d[0].decision.as_deref(), d[0].rule.as_deref()),
            (Some("deny"), Some(rule)),
            "{url}"
        );
    }
    assert_eq!(
        api.requests(),
        0,
        "a denied request reached the server: {:?}",
        api.seen.lock().unwrap()
    );
    // Methods outside the grant.
    let (out, _) = api
        .probe(
            "probe",
            &g,
            json!({"method": "DELETE", "url": format!("{}/api/x", api.base())}),
        )
        .await;
    assert_eq!(out["error"]["code"], "denied");
    let (out, _) = api
        .probe(
            "probe",
            &g,
            json!({"method": "POST", "url": format!("{}/redirect", api.base())}),
        )
        .await;
    assert_eq!(out["error"]["code"], "denied");
    // The same host spelled differently is the same host.
    let named = Grant::new("t").http(&format!("http://localhost:{p}/api/"), None);
    let (out, _) = api
        .probe(
            "named",
            &named,
            json!({"url": format!("http://LOCALHOST.:{p}/api/ok")}),
        )
        .await;
    assert_eq!(out["ok"]["status"], 200, "{out}");
    assert_eq!(api.requests(), 1);
}

#[tokio::test]
async fn redirects_are_checked_hop_by_hop() {
    let api = Api::new().await;
    let run = api
        .runtime
        .invoke(
            "http-get",
            &api.grant(),
            &json!({"url": format!("{}/redirect", api.base())}).to_string(),
        )
        .await
        .unwrap();
    let err = run.output.unwrap_err();
    assert_eq!(err.kind, warden::ToolErrorKind::Denied);
    assert!(err.message.contains("host evil.example"), "{err}");
    let (out, _) = api
        .probe(
            "probe",
            &api.grant(),
            json!({"url": format!("{}/redirect", api.base())}),
        )
        .await;
    assert_eq!(
        out["ok"]["status"], 302,
        "the host does not follow redirects itself"
    );
    assert_eq!(out["ok"]["location"], "http://evil.example/steal");

    let grant = api
        .grant()
        .http(&format!("{}/redirect-local", api.base()), None);
    let run = api
        .runtime
        .invoke(
            "http-get",
            &grant,
            &json!({"url": format!("{}/redirect-local", api.base())}).to_string(),
        )
        .await
        .unwrap();
    let out: Value = serde_json::from_str(&run.output.unwrap()).unwrap();
    assert_eq!(out["body"], "ok /api/landed");
    assert_eq!(out["url"], format!("{}/api/landed", api.base()));
}

#[tokio::test]
async fn a_secret_is_used_by_reference_and_never_seen() {
    let api = Api::new().await;
    let input = json!({"url": format!("{}/secure", api.base()), "secret": "api"});
    let run = api
        .runtime
        .invoke("http-get", &api.grant(), &input.to_string())
        .await
        .unwrap();
    let out = run.output.unwrap();
    assert!(
        out.contains("welcome"),
        "the server accepted the token: {out}"
    );
    assert!(!out.contains(API_TOKEN));
    let seen = api.seen.lock().unwrap().clone();
    assert_eq!(
        seen[0].2.as_deref(),
        Some(format!("Bearer {API_TOKEN}").as_str())
    );
    let trail = serde_json::to_string(&api.audit.records()).unwrap();
    assert!(!trail.contains(API_TOKEN));
    let attach = api
        .audit
        .invocation(&run.id)
        .into_iter()
        .find(|r| r.action.as_deref() == Some("attach"))
        .expect("the attachment is audited");
    assert_eq!(
        (attach.resource.as_deref(), attach.decision.as_deref()),
        (Some("api"), Some("allow"))
    );
}

#[tokio::test]
async fn secrets_never_go_outside_their_send_to() {
    let api = Api::new().await;
    let url = format!("{}/api/collect", api.base());
    // By reference, to a destination outside send-to.
    let (out, inv) = api
        .probe(
            "probe",
            &api.grant(),
            json!({"url": url, "bearer": "other"}),
        )
        .await;
    assert_eq!(out["error"]["code"], "denied");
    assert_eq!(
        out["error"]["message"],
        format!(
            "exfiltration attempt: secret 'other' may be sent only to https://elsewhere.example, not http://127.0.0.1:{}",
            api.port
        )
    );
    assert_eq!(
        api.decisions(&inv).last().unwrap().rule.as_deref(),
        Some("secret.send-to")
    );
    // Revealed and smuggled in the query, a header or the body.
    for into in ["query", "header", "body"] {
        let (out, inv) = api
            .probe(
                "probe",
                &api.grant(),
                json!({"method": "POST", "url": url, "reveal": "other", "into": into}),
            )
            .await;
        assert_eq!(out["error"]["code"], "denied", "{into}: {out}");
        let d = api.decisions(&inv);
        assert_eq!(
            d.last().unwrap().rule.as_deref(),
            Some("secret.send-to"),
            "{into}"
        );
        let trail = serde_json::to_string(&api.audit.invocation(&inv)).unwrap();
        assert!(!trail.contains(OTHER_TOKEN), "{trail}");
    }
    assert_eq!(api.requests(), 0);
    // A secret whose send-to includes the destination may go there.
    let (out, _) = api
        .probe(
            "probe",
            &api.grant(),
            json!({"url": url, "reveal": "api", "into": "header"}),
        )
        .await;
    assert_eq!(out["ok"]["status"], 200, "{out}");
    // An expired secret cannot be used: the tool gets `expired`, nothing is sent.
    let before = api.requests();
    let grant = api.grant().secret("fleeting");
    let input = json!({"url": format!("{}/secure", api.base()), "bearer": "fleeting"});
    let run = api
        .runtime
        .invoke("probe", &grant, &input.to_string())
        .await
        .unwrap();
    let err = run.output.unwrap_err();
    assert_eq!(
        err.message,
        "expired: secret 'fleeting' has expired (past its ttl)"
    );
    assert_eq!(api.requests(), before);
}

/// An identity token handed to a tool is sent only to the tool's
/// `token-send-to` (by default, its audiences' origins: `probe`'s is
/// `https://api.test`), in whatever encoding redaction knows; a request
/// carrying one elsewhere is refused before it leaves, and recorded.
#[tokio::test]
async fn identity_tokens_go_only_to_their_token_send_to() {
    let api = Api::new().await;
    let url = format!("{}/api/collect", api.base());
    let grant = Grant::new("egress").http(&format!("{}/api/", api.base()), None);
    let ways = [
        "query",
        "header",
        "body",
        "query:percent",
        "query:double",
        "body:b64-percent",
        "header:hex-mixed",
        "body:json-u",
    ];
    for into in ways {
        let input =
            json!({"method": "POST", "url": url, "token": "https://api.test", "into": into});
        let (out, inv) = api.probe("probe", &grant, input).await;
        assert_eq!(out["error"]["code"], "denied", "{into}: {out}");
        assert_eq!(
            out["error"]["message"],
            format!(
                "exfiltration attempt: this tool's identity tokens for audience \
                 'https://api.test' may be sent only to https://api.test:443 (its audience's \
                 origin), not http://127.0.0.1:{}",
                api.port
            ),
            "{into}"
        );
        let last = api.decisions(&inv).pop().unwrap();
        assert_eq!(
            (last.decision.as_deref(), last.rule.as_deref()),
            (Some("deny"), Some("identity.send-to")),
            "{into}"
        );
        let trail = serde_json::to_string(&api.audit.invocation(&inv)).unwrap();
        assert!(!trail.contains("eyJ"), "a token on the trail: {trail}");
    }
    assert_eq!(api.requests(), 0);
    // Listed in its token-send-to, the same request goes.
    let input =
        json!({"method": "POST", "url": url, "token": "https://api.test", "into": "header"});
    let (out, _) = api.probe("token-ok", &grant, input).await;
    assert_eq!(out["ok"]["status"], 200, "{out}");
    assert_eq!(api.requests(), 1);
}

#[tokio::test]
async fn bodies_are_capped_and_egress_needs_a_grant() {
    let api = Api::with(|b| b.hostcall_limit(16 << 10)).await;
    let (out, _) = api
        .probe(
            "probe",
            &api.grant(),
            json!({"url": format!("{}/api/big", api.base())}),
        )
        .await;
    assert_eq!(out["error"]["code"], "too-large", "{out}");
    let (out, _) = api
        .probe("probe", &api.grant(), json!({"method": "POST", "url": format!("{}/api/x", api.base()), "body": "x".repeat(20 << 10)}))
        .await;
    assert_eq!(out["error"]["code"], "too-large", "{out}");
    let (out, _) = api
        .probe(
            "probe",
            &Grant::new("t"),
            json!({"url": format!("{}/api/x", api.base())}),
        )
        .await;
    assert_eq!(out["error"]["message"], "this task has no egress grant");
}

#[tokio::test]
async fn wasi_http_response_bodies_are_capped() {
    let api = Api::with(|b| b.hostcall_limit(16 << 10)).await;
    let grant = Grant::new("t").http(&format!("{}/api/", api.base()), None);
    let (out, _) = api
        .probe(
            "std",
            &grant,
            json!({"url": format!("{}/api/big", api.base())}),
        )
        .await;
    let code = out["error"]["code"].as_str().unwrap_or_default();
    assert_eq!(
        // The body is read whole (bounded) before the tool sees the
        // response, so the cap is the response's error code.
        code,
        "ErrorCode::HttpResponseBodySize(Some(16384))",
        "{out}"
    );
}

#[tokio::test]
async fn egress_grants_wider_than_the_ceiling_are_refused() {
    let api = Api::new().await;
    for (grant, want) in [
        (
            Grant::new("t").http(&format!("{}/api/", api.base()), Some(&["PUT"])),
            "wider than the manifest's ceiling",
        ),
        (
            Grant::new("t").http("https://api.example.com/", None),
            "not in the manifest's egress ceiling",
        ),
        (
            Grant::new("t").http("ftp://127.0.0.1/", None),
            "scheme 'ftp' is not allowed",
        ),
    ] {
        let err = api
            .runtime
            .invoke("probe", &grant, r#"{"url":"http://x"}"#)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Grant(GrantError::HttpOutsideCeiling { .. })),
            "{err:?}"
        );
        assert!(err.to_string().contains(want), "{err}");
    }
    // narrow() keeps what fits: GET/POST of the ceiling, not PUT.
    let wide = Grant::new("t").http(&format!("{}/api/", api.base()), Some(&["GET", "PUT"]));
    let narrowed = api.runtime.narrow("probe", &wide).unwrap();
    assert_eq!(
        narrowed.http[0].methods.as_deref(),
        Some(&["GET".to_owned()][..])
    );
}

#[tokio::test]
async fn standard_wasi_http_is_under_the_same_policy() {
    let api = Api::new().await;
    let grant = Grant::new("t").http(&format!("{}/api/", api.base()), None);
    let (out, inv) = api
        .probe(
            "std",
            &grant,
            json!({"url": format!("{}/api/std", api.base())}),
        )
        .await;
    assert_eq!(out["ok"]["status"], 200, "{out}");
    assert_eq!(out["ok"]["body"], "ok /api/std");
    let d = api.decisions(&inv);
    assert_eq!(d[0].decision.as_deref(), Some("allow"));
    assert!(d[0].reason.as_deref().unwrap().ends_with("(wasi:http)"));
    assert_eq!(
        d[0].address.as_deref(),
        Some(format!("127.0.0.1:{}", api.port).as_str())
    );
    let egress = api.egress(&inv);
    assert_eq!(egress.status, Some(200));
    assert_eq!(api.requests(), 1);

    for (tool, url, rule) in [
        ("std", format!("{}/admin", api.base()), "http.allowlist"),
        (
            "std",
            format!("http://evil.example:{}/api/x", api.port),
            "http.allowlist",
        ),
        (
            "std",
            format!("http://127.0.0.1:{}/api/x", api.port + 1),
            "http.allowlist",
        ),
        (
            "std-unlisted",
            format!("http://localhost:{}/x", api.port),
            "http.address",
        ),
    ] {
        let grant = match tool {
            "std" => Grant::new("t").http(&format!("{}/api/", api.base()), None),
            _ => Grant::new("t").http(&format!("http://localhost:{}/", api.port), None),
        };
        let (out, inv) = api.probe(tool, &grant, json!({ "url": url })).await;
        let code = out["error"]["code"].as_str().unwrap_or_default();
        assert!(
            code.contains("HttpRequestDenied") || code.contains("DestinationIpProhibited"),
            "{url}: {out}"
        );
        let d = api.decisions(&inv);
        assert_eq!(
            (d[0].decision.as_deref(), d[0].rule.as_deref()),
            (Some("deny"), Some(rule)),
            "{url}"
        );
    }
    assert_eq!(
        api.requests(),
        1,
        "a denied wasi:http request reached the server"
    );
    // No egress grant, no wasi:http egress either.
    let (out, _) = api
        .probe(
            "std",
            &Grant::new("t"),
            json!({"url": format!("{}/api/x", api.base())}),
        )
        .await;
    assert!(
        out["error"]["code"]
            .as_str()
            .unwrap()
            .contains("HttpRequestDenied"),
        "{out}"
    );
}

/// Issue #12: host-made HTTPS requests share one TLS configuration (one
/// session cache less per request in flight). A granted https request to a
/// server that does not speak TLS fails with a TLS error on both paths, the
/// `http` capability and wasi:http: never a panic, never a hang.
#[tokio::test]
async fn https_goes_through_the_shared_tls_configuration_on_both_paths() {
    // Answers whatever arrives with a line that is not TLS, and hangs up.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = [0u8; 512];
            let _ = conn.read(&mut buf).await;
            let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let (runtime, audit) = crate::common::runtime_for(
        dir.path(),
        &format!(
            "[tools.probe]\ncomponent = \"{}\"\n[[tools.probe.http]]\nscheme = \"https\"\nhost = \"127.0.0.1\"\nport = {port}\n\n\
             [tools.std]\ncomponent = \"{}\"\n[[tools.std.http]]\nscheme = \"https\"\nhost = \"127.0.0.1\"\nport = {port}\n",
            crate::EGRESS_PROBE,
            crate::WASI_HTTP_PROBE
        ),
    );
    let url = format!("https://127.0.0.1:{port}/api/tls");
    let grant = Grant::new("t").http(&format!("https://127.0.0.1:{port}/api/"), None);
    let call = async |tool: &str| {
        let run = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            runtime.invoke(tool, &grant, &json!({ "url": url }).to_string()),
        )
        .await
        .expect("answered")
        .unwrap();
        let out: Value = serde_json::from_str(&run.output.unwrap()).unwrap();
        (out, run.id)
    };
    let (out, inv) = call("probe").await;
    assert_eq!(out["error"]["code"], "connection", "{out}");
    // Connected, then failed in the TLS handshake (the shared configuration
    // was taken: without one it fails before connecting, saying so).
    let prefix = format!("request to https://127.0.0.1:{port} failed: TLS: ");
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with(&prefix),
        "{out}"
    );
    let allowed = audit
        .invocation(&inv)
        .into_iter()
        .any(|r| r.event == Event::Decision && r.decision.as_deref() == Some("allow"));
    assert!(allowed, "the request was decided and allowed");
    let (out, _) = call("std").await;
    let code = out["error"]["code"].as_str().unwrap_or_default();
    assert!(code.contains("Tls"), "{out}");
}

/// Issue #12: `warden:tool/http` sends on a connection of its own (no
/// client library in between): the request line is the URL's path and
/// query, `host` is the URL's authority, the tool's headers go as given,
/// the secret by reference as a bearer token. A header that would split
/// the request (CR, LF, NUL) or is not a header at all is refused by the
/// egress check, recorded, and nothing is sent.
#[tokio::test]
async fn the_request_a_tool_sends_is_exactly_what_it_asked_and_cannot_be_split() {
    let api = Api::new().await;
    let url = format!("{}/api/head?q=a%20b&r=1", api.base());
    let headers = json!([["X-Custom", "v 1"], ["accept", "text/plain"]]);
    let input = json!({"url": url, "headers": headers, "bearer": "api"});
    let (out, _) = api.probe("probe", &api.grant(), input).await;
    assert_eq!(out["ok"]["status"], 200, "{out}");
    let head = out["ok"]["body"].as_str().unwrap().to_ascii_lowercase();
    let lines: Vec<&str> = head.lines().collect();
    assert_eq!(lines[0], "get /api/head?q=a%20b&r=1 http/1.1", "{head}");
    let port = api.port;
    for want in [
        format!("host: 127.0.0.1:{port}"),
        "x-custom: v 1".into(),
        "accept: text/plain".into(),
        // The server saw the token; the tool sees its reflection redacted.
        "authorization: bearer [redacted:api]".into(),
        // The invocation holds secrets: the whole body, unencoded.
        "accept-encoding: identity".into(),
    ] {
        assert_eq!(
            lines.iter().filter(|l| **l == want).count(),
            1,
            "{want} in {head}"
        );
    }
    assert_eq!(lines.len(), 6, "nothing else is sent: {head}");

    let before = api.requests();
    for (name, value) in [
        ("X-Custom", "v\r\nX-Injected: 1"),
        ("X-Custom", "v\nhost: evil.example"),
        ("X-Custom", "v\u{0}"),
        ("X Bad", "v"),
        ("X-Custom\r\nX-Injected", "1"),
    ] {
        let input = json!({"url": url, "headers": [[name, value]]});
        let (out, inv) = api.probe("probe", &api.grant(), input).await;
        assert_eq!(
            out["error"]["code"], "invalid-request",
            "{name:?} {value:?}: {out}"
        );
        let message = out["error"]["message"].as_str().unwrap();
        assert!(message.contains("is not valid HTTP"), "{message}");
        assert!(
            !message.contains("Injected"),
            "an invalid name is not echoed: {message}"
        );
        assert!(
            !message.contains('\n') && !message.contains('\r'),
            "{message}"
        );
        let d = api.decisions(&inv);
        let last = d.last().unwrap();
        assert_eq!(
            (last.decision.as_deref(), last.rule.as_deref()),
            (Some("deny"), Some("http.request")),
            "{name:?} {value:?}"
        );
    }
    assert_eq!(api.requests(), before, "nothing reached the server");
}

/// Issue #12: a host HTTP request runs on a task of its own (off the
/// invocation's fiber). Cancelling the invocation while the request waits
/// for its answer closes the connection promptly: the task does not outlive
/// the call, nor hold its secrets.
#[tokio::test]
async fn a_cancelled_invocation_drops_its_request_in_flight() {
    let (port, mut seen, mut gone) = holding_server().await;
    let dir = tempfile::tempdir().unwrap();
    let (runtime, audit) = crate::common::runtime_for(dir.path(), &http_get_manifest(port, "60s"));
    let grant = Grant::new("t").http(&format!("http://127.0.0.1:{port}/"), None);
    let cancel = tokio_util::sync::CancellationToken::new();
    let options = warden::InvokeOptions {
        cancel: Some(cancel.clone()),
        ..Default::default()
    };
    let input = json!({ "url": format!("http://127.0.0.1:{port}/held") }).to_string();
    let call = tokio::spawn({
        let runtime = runtime.clone();
        async move {
            runtime
                .invoke_with("http-get", &grant, &input, options)
                .await
        }
    });
    tokio::time::timeout(std::time::Duration::from_secs(20), seen.recv())
        .await
        .expect("the request reached the server");
    let cancelled = std::time::Instant::now();
    cancel.cancel();
    let ended = call.await.unwrap();
    assert!(matches!(ended, Err(Error::Cancelled)), "{ended:?}");
    let hung_up = tokio::time::timeout(std::time::Duration::from_secs(5), gone.recv())
        .await
        .expect("the connection was closed after the cancel")
        .unwrap();
    assert!(
        hung_up.duration_since(cancelled) < std::time::Duration::from_secs(2),
        "closed {:?} after the cancel",
        hung_up.duration_since(cancelled)
    );
    let records = audit.records();
    let end = records.last().unwrap();
    assert_eq!(end.event, Event::InvocationEnd, "{records:#?}");
    assert_eq!(end.outcome.as_deref(), Some("cancelled"));
    assert!(
        !records.iter().any(|r| r.event == Event::Egress),
        "{records:#?}"
    );
    assert_stopped_before_the_end(&records, &format!("http://127.0.0.1:{port}/held"));
}

/// A server that reads one request and never answers: it says when the
/// request arrived, and when the client hung up.
async fn holding_server() -> (
    u16,
    tokio::sync::mpsc::Receiver<()>,
    tokio::sync::mpsc::Receiver<std::time::Instant>,
) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (arrived, seen) = tokio::sync::mpsc::channel(1);
    let (closed, gone) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let _ = conn.read(&mut buf).await;
        arrived.send(()).await.unwrap();
        while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {}
        let _ = closed.send(std::time::Instant::now()).await;
    });
    (port, seen, gone)
}

/// A caller that drops the invocation (a timeout or a `select!` around
/// `invoke`) while a request is in flight: the request's task is only told
/// to abort, and on this one-thread runtime it cannot even run until the
/// drop is over, so the invocation's end is written first. The request's
/// outcome, `stopped`, is recorded all the same, by the end, right before
/// it; and the task, gone later, adds nothing after the end.
#[tokio::test]
async fn a_dropped_invocation_records_its_request_in_flight_stopped() {
    let (port, mut seen, mut gone) = holding_server().await;
    let dir = tempfile::tempdir().unwrap();
    let audit = MemorySink::new();
    let runtime = http_get(dir.path(), port, "", |b| b.audit(audit.clone()));
    let grant = Grant::new("t").http(&format!("http://127.0.0.1:{port}/"), None);
    let url = format!("http://127.0.0.1:{port}/held");
    let input = json!({ "url": url }).to_string();
    let wait = std::time::Duration::from_secs(20);
    // Dropped by the `select!` once the request reached the server.
    tokio::time::timeout(wait, async {
        tokio::select! {
            r = runtime.invoke("http-get", &grant, &input) => panic!("it ended: {r:?}"),
            _ = seen.recv() => {}
        }
    })
    .await
    .expect("the request reached the server");
    let records = audit.records();
    let end = records.last().unwrap();
    assert_eq!(
        (end.event, end.outcome.as_deref(), end.message.as_deref()),
        (
            Event::InvocationEnd,
            Some("cancelled"),
            Some("the caller dropped the invocation before it ended")
        ),
        "{records:#?}"
    );
    assert_stopped_before_the_end(&records, &url);
    // The request's task, run now, closes the connection and writes nothing.
    tokio::time::timeout(wait, gone.recv())
        .await
        .expect("the connection was closed");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(
        audit.records().len(),
        records.len(),
        "{:#?}",
        audit.records()
    );
}

/// An invocation out of time while a request waits for its answer: the
/// deadline stops the tool's call and its request together, and the two
/// race (the request's own timeout is the invocation's deadline). Either
/// way the request has exactly one outcome, after the decision that
/// allowed it and before the end, and nothing comes after the end.
#[tokio::test]
async fn a_request_in_flight_at_the_deadline_has_one_outcome_before_the_end() {
    let (port, mut seen, mut gone) = holding_server().await;
    let dir = tempfile::tempdir().unwrap();
    let (runtime, audit) = crate::common::runtime_for(dir.path(), &http_get_manifest(port, "1s"));
    let grant = Grant::new("t").http(&format!("http://127.0.0.1:{port}/"), None);
    let url = format!("http://127.0.0.1:{port}/held");
    let input = json!({ "url": url }).to_string();
    let wait = std::time::Duration::from_secs(20);
    let started = std::time::Instant::now();
    let ended = tokio::time::timeout(wait, runtime.invoke("http-get", &grant, &input))
        .await
        .expect("the deadline ended the invocation");
    let took = started.elapsed();
    assert!(seen.try_recv().is_ok(), "the request reached the server");
    assert!(
        took < std::time::Duration::from_secs(5),
        "a 1s deadline took {took:?}"
    );
    tokio::time::timeout(wait, gone.recv())
        .await
        .expect("the connection was closed");
    // Anything the request's task still had to write would be written by now.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let records = audit.records();
    let end = records.last().unwrap();
    assert_eq!(end.event, Event::InvocationEnd, "{records:#?}");
    let outcome = end.outcome.as_deref().unwrap_or_default();
    match &ended {
        Err(Error::Limit(warden::LimitExceeded::Deadline { .. })) => {
            assert_eq!(outcome, "limit:deadline", "{records:#?}")
        }
        // The request's timeout came first and the tool returned its error.
        Ok(_) => assert!(outcome.starts_with("tool-error"), "{records:#?}"),
        other => panic!("{other:?}"),
    }
    let about_the_request: Vec<_> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.resource.as_deref() == Some(url.as_str()))
        .collect();
    let events: Vec<_> = about_the_request
        .iter()
        .map(|(_, r)| (r.event, r.decision.as_deref()))
        .collect();
    assert_eq!(events.len(), 2, "a decision and one outcome: {records:#?}");
    assert_eq!(events[0], (Event::Decision, Some("allow")), "{records:#?}");
    let (at, result) = about_the_request[1];
    assert!(
        matches!(result.event, Event::Outcome | Event::Egress),
        "{records:#?}"
    );
    match result.outcome.as_deref() {
        Some("stopped") => assert_eq!(
            result.message.as_deref(),
            Some(
                "the operation was stopped before it finished: its invocation ended, was cancelled or ran out of time, the tool dropped the response it waited for, or the host failed"
            ),
            "{records:#?}"
        ),
        // The request's own timeout came first and recorded why it failed.
        other => assert!(other.is_some(), "{records:#?}"),
    }
    assert!(at < records.len() - 1, "the outcome comes before the end");
}

/// The outcome a gate pass records when its operation is dropped before
/// it finished: `stopped`, right before the invocation's end, naming the
/// request, after the decision that allowed it.
fn assert_stopped_before_the_end(records: &[warden::audit::Record], url: &str) {
    let n = records.len();
    assert!(n >= 3, "{records:#?}");
    let stopped = &records[n - 2];
    assert_eq!(
        (
            stopped.event,
            stopped.capability.as_deref(),
            stopped.resource.as_deref(),
            stopped.outcome.as_deref(),
            stopped.message.as_deref(),
        ),
        (
            Event::Outcome,
            Some("http"),
            Some(url),
            Some("stopped"),
            Some(
                "the operation was stopped before it finished: its invocation ended, was cancelled or ran out of time, the tool dropped the response it waited for, or the host failed"
            ),
        ),
        "{records:#?}"
    );
    let allowed = records[..n - 2]
        .iter()
        .rev()
        .find(|r| r.event == Event::Decision);
    assert_eq!(
        allowed.and_then(|d| Some((d.decision.as_deref()?, d.resource.as_deref()?))),
        Some(("allow", url)),
        "{records:#?}"
    );
}

/// A tool may return with a `wasi:http` request still in flight, its
/// response never waited for and its handle never dropped (a component in
/// a language that does not drop resources on return). The request is
/// stopped and its connection closed before the invocation's end is
/// written, not some time after: `wasmtime-wasi-http` keeps the response's
/// future in the store, whose drop only asks its task to abort. On this one-thread runtime, blocked by
/// the test from the moment the call returns, nothing could close the
/// connection later.
#[tokio::test]
async fn a_request_a_tool_leaves_in_flight_is_gone_before_its_end() {
    use std::io::Read;
    use std::time::Duration;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (arrived, seen) = std::sync::mpsc::channel();
    let (closed, gone) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Reads the request, never answers, and reports when the client
        // hangs up.
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 4096];
        let _ = conn.read(&mut buf);
        arrived.send(()).unwrap();
        while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
        let _ = closed.send(());
    });
    let dir = tempfile::tempdir().unwrap();
    // One request a task: a host its stopped request reached counts.
    std::fs::write(
        dir.path().join("once.cedar"),
        "@id(\"once-a-task\")\nforbid (principal, action == Warden::Action::\"http::send\", resource)\n\
         when { context.task.hosts_contacted.contains(resource.host) };\n",
    )
    .unwrap();
    let (runtime, audit) = crate::common::runtime_for(
        dir.path(),
        &format!(
            "policies = [\"once.cedar\"]\n[tools.std]\ncomponent = \"{}\"\n[[tools.std.http]]\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {port}\n",
            crate::WASI_HTTP_PROBE
        ),
    );
    let grant = Grant::new("t").http(&format!("http://127.0.0.1:{port}/"), None);
    let input = json!({ "url": format!("http://127.0.0.1:{port}/held"), "leave_after_ms": 500 });
    let run = runtime
        .invoke("std", &grant, &input.to_string())
        .await
        .unwrap();
    assert_eq!(run.output.as_deref(), Ok("\"left\""), "{run:?}");
    seen.recv_timeout(Duration::from_secs(5))
        .expect("the request reached the server while the tool waited");
    gone.recv_timeout(Duration::from_secs(5))
        .expect("the connection was closed before the call returned");
    let records = audit.invocation(&run.id);
    let last = records.last().unwrap();
    assert_eq!(last.event, Event::InvocationEnd, "{records:#?}");
    assert_eq!(last.outcome.as_deref(), Some("ok"));
    assert!(
        !records.iter().any(|r| r.event == Event::Egress),
        "the stopped request has no egress record, which says what was sent and received: {records:#?}"
    );
    assert_stopped_before_the_end(&records, &format!("http://127.0.0.1:{port}/held"));

    // The task's history counts the host the stopped request reached: the
    // policy refuses the task a second request to it.
    let again = runtime
        .invoke("std", &grant, &input.to_string())
        .await
        .unwrap();
    let records = audit.invocation(&again.id);
    let decision = records.iter().find(|r| r.event == Event::Decision).unwrap();
    assert_eq!(
        (decision.decision.as_deref(), decision.policies.clone()),
        (Some("deny"), Some(vec!["once-a-task".to_owned()])),
        "{records:#?}"
    );
}

/// Encodings a receiving server decodes (see `encode` in tools/egress-probe).
const ENCODED: [&str; 9] = [
    "query:percent",
    "query:double",
    "query:b64-percent",
    "query:hex-mixed",
    "header:percent",
    "header:json-u",
    "body:json-u",
    "body:percent",
    "body:html",
];

/// What a server receives is the request as checked, on both paths: a
/// target the check's parse shortens (`..`, `%2e%2e`, a backslash) goes out
/// as the checked path, so it can neither reach a path the grant does not
/// name nor carry a secret outside its `send-to` in the part the parse
/// dropped; the record names what was sent.
#[tokio::test]
async fn the_target_sent_is_the_target_checked() {
    let api = Api::new().await;
    let base = api.base();
    let targets = [
        "/admin/../api/x".to_owned(),
        "/admin/%2e%2e/api/x".to_owned(),
        "/admin/%2E%2E/api/x".to_owned(),
        "/admin\\..\\api/x".to_owned(),
        format!("/api/{OTHER_TOKEN}/../x"),
    ];
    let mut sent = 0;
    for tool in ["probe", "std"] {
        for target in &targets {
            let (out, inv) = api
                .probe(
                    tool,
                    &api.grant(),
                    json!({"url": format!("{base}{target}")}),
                )
                .await;
            if out["ok"]["status"] != 200 {
                // Refused by a parse: never sent.
                assert_eq!(api.requests(), sent, "{tool} {target}: {out}");
                continue;
            }
            sent += 1;
            let seen = api.seen.lock().unwrap().last().unwrap().clone();
            assert_eq!(
                (seen.0.as_str(), seen.1.as_str()),
                ("GET", "/api/x"),
                "{tool} {target}"
            );
            let egress = api.egress(&inv);
            assert_eq!(
                egress.resource.as_deref(),
                Some(format!("{base}/api/x").as_str()),
                "{tool} {target}"
            );
        }
    }
    assert_eq!(api.requests(), sent);
    assert!(sent >= 8, "only {sent} of the requests were sent");
    // `Host` is the checked one too: 2130706433 is 127.0.0.1.
    let (out, _) = api
        .probe(
            "std",
            &api.grant(),
            json!({"url": format!("http://2130706433:{}/api/head", api.port)}),
        )
        .await;
    let head = out["ok"]["body"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        head.contains(&format!("\r\nhost: 127.0.0.1:{}\r\n", api.port)),
        "{out}"
    );
    api.seen.lock().unwrap().pop();
    let lines = api.seen.lock().unwrap().clone();
    assert!(
        lines.iter().all(|l| l.1 == "/api/x"),
        "the server saw {lines:?}"
    );
}

/// A header asking the server to act as another method
/// (`X-HTTP-Method-Override` and its kin) is checked as that method, on
/// both paths: a method the grant does not allow is refused before
/// anything is sent, one whose rule needs a person waits for one, and a
/// value that names no method is refused.
#[tokio::test]
async fn a_method_override_header_is_checked_as_the_method_it_asks_for() {
    let api = Api::new().await;
    let url = format!("{}/api/x", api.base());
    for tool in ["probe", "std"] {
        let denied = |out: &Value| match tool {
            "probe" => {
                out["error"]["code"] == "denied" || out["error"]["code"] == "invalid-request"
            }
            _ => out["error"]["code"] == "ErrorCode::HttpRequestDenied",
        };
        for (header, value, rule, reason) in [
            (
                "X-HTTP-Method-Override",
                "delete",
                "http.allowlist",
                format!(
                    "header 'X-HTTP-Method-Override' asks for DELETE: DELETE /api/x on http://127.0.0.1:{} is not in the egress grant (methods or path prefix)",
                    api.port
                ),
            ),
            (
                "x-method-override",
                " PUT ",
                "http.allowlist",
                format!(
                    "header 'x-method-override' asks for PUT: PUT /api/x on http://127.0.0.1:{} is not in the egress grant (methods or path prefix)",
                    api.port
                ),
            ),
            (
                "X-HTTP-Method",
                "TRACE",
                "http.request",
                "header 'X-HTTP-Method' names no method (expected one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS)".to_owned(),
            ),
        ] {
            let input = json!({"url": url, "headers": [[header, value]]});
            let (out, inv) = api.probe(tool, &api.grant(), input).await;
            assert!(denied(&out), "{tool} {header}: {out}");
            let d = api.decisions(&inv);
            let last = d.last().unwrap();
            // wasi:http names headers in lower case.
            let reason = match tool {
                "std" => reason.replacen(header, &header.to_ascii_lowercase(), 1),
                _ => reason,
            };
            assert_eq!(
                (last.rule.as_deref(), last.reason.as_deref()),
                (Some(rule), Some(reason.as_str())),
                "{tool} {header}"
            );
        }
        // A method the grant allows goes, and the decision says so.
        let input = json!({"url": url, "headers": [["X-HTTP-Method-Override", "POST"]]});
        let (out, inv) = api.probe(tool, &api.grant(), input).await;
        assert_eq!(out["ok"]["status"], 200, "{tool}: {out}");
        let d = api.decisions(&inv);
        assert!(
            d.last()
                .unwrap()
                .reason
                .as_deref()
                .unwrap()
                .ends_with(", and so is POST asked for by override"),
            "{tool}: {d:?}"
        );
    }
    assert_eq!(api.requests(), 2, "a refused request was sent");

    // `changer` allows POST only with a person's approval (none answers
    // here): a GET asking for POST waits for one, and is denied. The
    // override leads what the person reads, however many headers come
    // before it (the summary is cut at 2 KiB), and a credential header is
    // shown as its size and hash.
    let g = Grant::new("t").http(&format!("{}/api/", api.base()), None);
    let mut headers = vec![("Cookie".to_owned(), "session=0123456789".to_owned())];
    headers.extend((0..20).map(|i| (format!("x-pad-{i}"), "a".repeat(200))));
    headers.push(("X_HTTP_Method_Override".into(), "post".into()));
    let input = json!({"url": url, "headers": headers});
    let (out, inv) = api.probe("changer", &g, input).await;
    assert_eq!(out["error"]["code"], "denied", "{out}");
    let asked = api
        .audit
        .invocation(&inv)
        .into_iter()
        .find(|r| r.event == Event::ApprovalRequested)
        .expect("the GET asking for POST asked for approval");
    let shown = asked.message.as_deref().unwrap();
    assert!(
        shown.starts_with(&format!(
            "GET (asking for POST) {url} (0 bytes of body); headers: \
             X_HTTP_Method_Override: post, Cookie: [18 bytes], x-pad-0: aaa"
        )),
        "{shown}"
    );
    assert!(!shown.contains("0123456789"), "{shown}");
    assert_eq!(api.requests(), 2, "the unapproved request was sent");
}

/// A header asking the server to route the request to another path
/// (`X-Original-URL`, `X-Rewrite-URL`: IIS, Symfony, Zend) is checked as
/// that path, on both paths: outside the grant it is refused before
/// anything is sent, and a value naming no path on the origin is refused.
/// Within the grant it goes, and the decision names it.
#[tokio::test]
async fn a_path_override_header_is_checked_as_the_path_it_asks_for() {
    let api = Api::new().await;
    let url = format!("{}/api/x", api.base());
    let origin = format!("http://127.0.0.1:{}", api.port);
    for tool in ["probe", "std"] {
        let denied = |out: &Value| match tool {
            "probe" => {
                out["error"]["code"] == "denied" || out["error"]["code"] == "invalid-request"
            }
            _ => out["error"]["code"] == "ErrorCode::HttpRequestDenied",
        };
        for (header, value, rule, reason) in [
            (
                "X-Original-URL",
                "/admin/users",
                "http.allowlist",
                format!(
                    "header 'X-Original-URL' asks for /admin/users: GET /admin/users on {origin} is not in the egress grant (methods or path prefix)"
                ),
            ),
            (
                "x_rewrite_url",
                " /admin?x=1",
                "http.allowlist",
                format!(
                    "header 'x_rewrite_url' asks for /admin: GET /admin on {origin} is not in the egress grant (methods or path prefix)"
                ),
            ),
            // Checked as a parser reads it, sent as written: only a path in
            // the form it is read in goes.
            (
                "X-Original-URL",
                "/admin/../api/x",
                "http.request",
                "header 'X-Original-URL' names a path a URL parser reads otherwise (15 bytes written, 6 read): expected it as a server routes it, without dot segments, a fragment, whitespace or characters left to encode".to_owned(),
            ),
            (
                "X-Original-URL",
                "/admin/%2e%2e/api/x",
                "http.request",
                "header 'X-Original-URL' names a path a URL parser reads otherwise (19 bytes written, 6 read): expected it as a server routes it, without dot segments, a fragment, whitespace or characters left to encode".to_owned(),
            ),
            (
                "X-Original-URL",
                "/api/x#/../../admin",
                "http.request",
                "header 'X-Original-URL' names a path a URL parser reads otherwise (19 bytes written, 6 read): expected it as a server routes it, without dot segments, a fragment, whitespace or characters left to encode".to_owned(),
            ),
            // A tab the parser drops (`/48<TAB>21` read as `/4821`): the
            // path read is not quoted, where a marker could confirm a guess.
            (
                "X-Original-URL",
                "/api/4\t8",
                "http.request",
                "header 'X-Original-URL' names a path a URL parser reads otherwise (8 bytes written, 7 read): expected it as a server routes it, without dot segments, a fragment, whitespace or characters left to encode".to_owned(),
            ),
            (
                "X-Original-URL",
                "/api/%252e%252e/admin",
                "http.allowlist",
                "header 'X-Original-URL': the path holds a dot segment in percent-encoding (a server that decodes it may route the request outside the granted path prefix)".to_owned(),
            ),
            (
                "X-Rewrite-URL",
                "//evil.example/api/x",
                "http.request",
                "header 'X-Rewrite-URL' names no path on the request's origin (expected one starting with a single '/', as a request line has it)".to_owned(),
            ),
        ] {
            let input = json!({"url": url, "headers": [[header, value]]});
            let (out, inv) = api.probe(tool, &api.grant(), input).await;
            assert!(denied(&out), "{tool} {header}: {out}");
            let d = api.decisions(&inv);
            let last = d.last().unwrap();
            let reason = match tool {
                "std" => reason.replacen(header, &header.to_ascii_lowercase(), 1),
                _ => reason,
            };
            assert_eq!(
                (last.rule.as_deref(), last.reason.as_deref()),
                (Some(rule), Some(reason.as_str())),
                "{tool} {header}"
            );
        }
        // The refusal quotes the path as read, redacted before it is cut:
        // a granted value across the cut leaves no piece behind.
        let value = format!("/{}/{API_TOKEN}/x/..", "a".repeat(240));
        let input = json!({"url": url, "headers": [["X-Original-URL", value]]});
        let (out, inv) = api.probe(tool, &api.grant(), input).await;
        assert!(denied(&out), "{tool}: {out}");
        let reason = api.decisions(&inv).last().unwrap().reason.clone().unwrap();
        assert!(
            reason.contains("names a path a URL parser reads otherwise"),
            "{reason}"
        );
        assert!(!reason.contains(&API_TOKEN[..8]), "{reason}");
        assert!(!out.to_string().contains(&API_TOKEN[..8]), "{out}");
        // With a method override too: each method on each path (GET is
        // granted on /redirect, POST is not).
        let input = json!({"url": url, "headers": [
            ["X-HTTP-Method-Override", "POST"], ["X-Original-URL", "/redirect"]]});
        let (out, inv) = api.probe(tool, &api.grant(), input).await;
        assert!(denied(&out), "{tool}: {out}");
        let d = api.decisions(&inv);
        let last = d.last().unwrap();
        assert_eq!(last.rule.as_deref(), Some("http.allowlist"));
        assert!(
            (last.reason.as_deref().unwrap()).ends_with(&format!(
                "asks for POST, and header '{}' asks for /redirect: POST /redirect on {origin} \
                 is not in the egress grant (methods or path prefix)",
                match tool {
                    "std" => "x-original-url",
                    _ => "X-Original-URL",
                }
            )),
            "{tool}: {last:?}"
        );
        // A granted path goes, and the decision says so.
        let input = json!({"url": url, "headers": [["X-Original-URL", "/api/y"]]});
        let (out, inv) = api.probe(tool, &api.grant(), input).await;
        assert_eq!(out["ok"]["status"], 200, "{tool}: {out}");
        let d = api.decisions(&inv);
        let by = match tool {
            "std" => "x-original-url",
            _ => "X-Original-URL",
        };
        assert!(
            (d.last().unwrap().reason.as_deref().unwrap())
                .ends_with(&format!(", as is /api/y asked for by header '{by}'")),
            "{tool}: {d:?}"
        );
    }
    assert_eq!(api.requests(), 2, "a refused request was sent");
}

#[tokio::test]
async fn a_method_parameter_is_checked_as_the_method_it_asks_for() {
    let api = Api::new().await;
    // `/api/` is granted GET and POST: neither is a DELETE there, however
    // the request spells `_method` where Rails, Laravel or Symfony read it.
    let url = format!("{}/api/x", api.base());
    let form = ["Content-Type", "application/x-www-form-urlencoded"];
    let json = ["Content-Type", "application/json"];
    let cases = [
        (
            format!("{url}?_method=DELETE"),
            None,
            None,
            "the query's '_method' asks for DELETE",
        ),
        (
            format!("{url}?a=1&%5FMethod=put"),
            None,
            None,
            "the query's '_method' asks for PUT",
        ),
        (
            url.clone(),
            Some(form),
            Some("a=1&_method=delete"),
            "the form's '_method' asks for DELETE",
        ),
        // As PHP and Rack read names and Content-Types.
        (
            format!("{url}?+_method=DELETE"),
            None,
            None,
            "the query's '_method' asks for DELETE",
        ),
        (
            url.clone(),
            Some(["Content-Type", "application/x-www-form-urlencoded,x"]),
            Some("a=1& _method=PUT"),
            "the form's '_method' asks for PUT",
        ),
        // No Content-Type: read as a form, as Rack reads it.
        (
            url.clone(),
            None,
            Some(".method=PATCH"),
            "the form's '_method' asks for PATCH",
        ),
        (
            url.clone(),
            Some(json),
            Some(r#"{"\u005fmethod":"DELETE"}"#),
            "the JSON body's '_method' asks for DELETE",
        ),
    ];
    for tool in ["probe", "std"] {
        for (target, header, body, reason) in &cases {
            // Servers read `_method` on a POST only.
            let mut input = json!({"method": "POST", "url": target});
            if let Some([k, v]) = header {
                input["headers"] = json!([[k, v]]);
            }
            if let Some(body) = body {
                input["method"] = json!("POST");
                input["body"] = json!(body);
            }
            let (out, inv) = api.probe(tool, &api.grant(), input).await;
            let code = match tool {
                "probe" => &out["error"]["code"] == "denied",
                _ => out["error"]["code"] == "ErrorCode::HttpRequestDenied",
            };
            assert!(code, "{tool} {target} {body:?}: {out}");
            let d = api.decisions(&inv);
            let last = d.last().unwrap();
            assert_eq!(
                last.rule.as_deref(),
                Some("http.allowlist"),
                "{tool} {target}"
            );
            let said = last.reason.as_deref().unwrap();
            assert!(said.starts_with(reason), "{tool} {target} {body:?}: {said}");
        }
        // A value that names no method is refused, and not echoed.
        let input = json!({"method": "POST", "url": format!("{url}?_method=%1B%5B2J")});
        let (_, inv) = api.probe(tool, &api.grant(), input).await;
        let d = api.decisions(&inv);
        assert_eq!(
            d.last().unwrap().reason.as_deref(),
            Some(
                "the query's '_method' names no method (expected one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS)"
            ),
            "{tool}"
        );
    }
    assert_eq!(api.requests(), 0, "a refused request was sent");
    // Where the grant allows the method asked for, the request goes, and
    // the decision says what was asked.
    for tool in ["probe", "std"] {
        let input = json!({"method": "POST", "url": format!("{}/api/x", api.base()),
            "headers": [form], "body": "_method=POST&x=1"});
        let (out, _) = api.probe(tool, &api.grant(), input).await;
        assert_eq!(out["ok"]["status"], 200, "{tool}: {out}");
    }
    assert_eq!(api.requests(), 2);
}

#[tokio::test]
async fn a_path_prefix_holds_whole_segments_and_no_encoded_dot_segment() {
    let api = Api::new().await;
    let b = api.base();
    for tool in ["probe", "std"] {
        // `/secure` is granted without a trailing slash: itself and what is
        // under it, not a sibling that starts with the same letters.
        for (path, rule, reason) in [
            (
                "/secure-admin".to_owned(),
                "http.allowlist",
                format!("GET /secure-admin on http://127.0.0.1:{} is not in the egress grant (methods or path prefix)", api.port),
            ),
            (
                "/api/..%2Fsecure-admin".to_owned(),
                "http.url",
                "the path holds a dot segment in percent-encoding (a server that decodes it may route the request outside the granted path prefix)".to_owned(),
            ),
            (
                "/api/..;/secure-admin".to_owned(),
                "http.url",
                "the path holds a dot segment with a ';' parameter (a server that drops parameters may route the request outside the granted path prefix)".to_owned(),
            ),
            (
                "/api/x%2F%252e%252e%2F..%2Fadmin".to_owned(),
                "http.url",
                "the path holds a dot segment in percent-encoding (a server that decodes it may route the request outside the granted path prefix)".to_owned(),
            ),
            (
                "/api/%EF%BC%8E%EF%BC%8E%EF%BC%8Fsecure-admin".to_owned(),
                "http.url",
                "the path holds a dot segment in a Unicode compatibility form (a full-width dot or solidus, which a server that normalizes reads as '.' or '/')".to_owned(),
            ),
        ] {
            let (out, inv) = api.probe(tool, &api.grant(), json!({"url": format!("{b}{path}")})).await;
            assert!(out.get("error").is_some(), "{tool} {path}: {out}");
            let d = api.decisions(&inv);
            let last = d.last().unwrap();
            assert_eq!(
                (last.rule.as_deref(), last.reason.as_deref()),
                (Some(rule), Some(reason.as_str())),
                "{tool} {path}"
            );
        }
        let (out, _) = api
            .probe(tool, &api.grant(), json!({"url": format!("{b}/secure/x")}))
            .await;
        assert!(out["ok"]["status"].is_u64(), "{tool}: {out}");
    }
    assert_eq!(api.requests(), 2, "a refused request was sent");
}

#[tokio::test]
async fn encoded_secrets_never_go_outside_their_send_to_on_either_path() {
    let api = Api::new().await;
    let url = format!("{}/api/collect", api.base());
    let exfiltration = format!(
        "exfiltration attempt: secret 'other' may be sent only to https://elsewhere.example, not http://127.0.0.1:{}",
        api.port
    );
    for tool in ["probe", "std"] {
        for into in ENCODED {
            let input = json!({"method": "POST", "url": url, "reveal": "other", "into": into});
            let (out, inv) = api.probe(tool, &api.grant(), input).await;
            match tool {
                "probe" => {
                    assert_eq!(out["error"]["code"], "denied", "{tool} {into}: {out}");
                    assert_eq!(out["error"]["message"], exfiltration, "{tool} {into}");
                }
                _ => assert_eq!(
                    out["error"]["code"], "ErrorCode::HttpRequestDenied",
                    "{tool} {into}: {out}"
                ),
            }
            let d = api.decisions(&inv);
            let last = d.last().unwrap();
            assert_eq!(
                (last.rule.as_deref(), last.reason.as_deref()),
                (Some("secret.send-to"), Some(exfiltration.as_str())),
                "{tool} {into}"
            );
            let trail = serde_json::to_string(&api.audit.invocation(&inv)).unwrap();
            assert!(!trail.contains(OTHER_TOKEN), "{trail}");
        }
    }
    assert_eq!(api.requests(), 0, "nothing reached the server");
    // The same encodings of a secret whose send-to is this server go through.
    for tool in ["probe", "std"] {
        for into in ["query:percent", "body:json-u"] {
            let input = json!({"method": "POST", "url": url, "reveal": "api", "into": into});
            let (out, _) = api.probe(tool, &api.grant(), input).await;
            assert_eq!(out["ok"]["status"], 200, "{tool} {into}: {out}");
        }
    }
}

#[tokio::test]
async fn a_secret_reflected_by_its_server_is_redacted_before_the_tool_sees_it() {
    let api = Api::new().await;
    let url = format!("{}/api/echo", api.base());
    let grant = api.grant().secret("hidden");
    let reflected = "secret 'hidden' reflected in the response; redacted before the tool saw it";
    // By reference (`reveal = false`), on `warden:tool/http`.
    let (out, inv) = api
        .probe("probe", &grant, json!({"url": url, "bearer": "hidden"}))
        .await;
    assert_eq!(out["ok"]["status"], 200, "{out}");
    let text = out.to_string();
    assert!(!text.contains(HIDDEN_TOKEN), "{text}");
    let body: Value = serde_json::from_str(out["ok"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["sent"], "Bearer [REDACTED:hidden] ", "{body}");
    // percent-encoded: only the value's escapes became the marker
    assert_eq!(
        body["pct"], "%42%65%61%72%65%72%20[REDACTED:hidden]%20",
        "{body}"
    );
    let echo = out["ok"]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0] == "x-echo")
        .unwrap();
    assert_eq!(echo[1], "Bearer [REDACTED:hidden]");
    let length = out["ok"]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0] == "content-length")
        .unwrap();
    assert_eq!(
        length[1],
        out["ok"]["body"].as_str().unwrap().len().to_string()
    );
    let egress = api.egress(&inv);
    assert_eq!(
        (egress.outcome.as_deref(), egress.message.as_deref()),
        (Some("ok"), Some(reflected))
    );
    // The server did get the value: it is the response that was redacted.
    let seen = api.seen.lock().unwrap().clone();
    assert_eq!(
        seen[0].2.as_deref(),
        Some(format!("Bearer {HIDDEN_TOKEN}").as_str())
    );
    // On `wasi:http`, a revealed value reflected in headers and body.
    let input = json!({"url": url, "reveal": "api", "into": "header"});
    let (out, inv) = api.probe("std", &api.grant(), input).await;
    assert_eq!(out["ok"]["status"], 200, "{out}");
    assert!(!out.to_string().contains(API_TOKEN), "{out}");
    let body: Value = serde_json::from_str(out["ok"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["sent"], " [REDACTED:api]", "{body}");
    let echo = out["ok"]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0] == "x-echo")
        .unwrap();
    assert_eq!(echo[1], "[REDACTED:api]");
    let egress = api.egress(&inv);
    assert_eq!(
        egress.message.as_deref(),
        Some("secret 'api' reflected in the response; redacted before the tool saw it")
    );
}

/// Compressed (`Accept-Encoding: gzip`) or cut into ranges (`Range`), a
/// response reflecting a secret is in no form redaction knows, and the
/// tool could decompress or join what it got. While an invocation holds
/// secrets its requests ask for the whole body, unencoded, whatever the
/// tool set; a response encoded anyway is refused, and the trail says why.
/// Without secrets, the tool's headers go as it set them (the tools hold
/// identity tokens, which redaction knows but a server cannot echo news of).
#[tokio::test]
async fn while_secrets_are_held_responses_come_whole_and_unencoded() {
    let api = Api::new().await;
    let head = format!("{}/api/head", api.base());
    let asks = json!([
        ["Accept-Encoding", "gzip, br"],
        ["Range", "bytes=0-3"],
        ["TE", "gzip"],
        ["Accept-Charset", "utf-16le"],
        ["Accept", "text/plain;charset=utf-16le, */*;q=0.1"]
    ]);
    let holding = api.grant().secret("hidden");
    for tool in ["probe", "std"] {
        let (out, _) = api
            .probe(tool, &holding, json!({"url": head, "headers": asks}))
            .await;
        let sent = out["ok"]["body"]
            .as_str()
            .unwrap_or_else(|| panic!("{tool}: {out}"));
        let sent = sent.to_ascii_lowercase();
        let lines: Vec<&str> = sent.lines().map(str::trim_end).collect();
        assert!(
            lines.contains(&"accept-encoding: identity"),
            "{tool}: {sent}"
        );
        assert!(!sent.contains("gzip"), "{tool}: {sent}");
        assert!(!sent.contains("utf-16"), "{tool}: {sent}");
        assert!(
            lines.contains(&"accept: text/plain, */*;q=0.1"),
            "{tool}: {sent}"
        );
        for gone in ["range:", "te:", "accept-charset:"] {
            assert!(
                !lines.iter().any(|l| l.starts_with(gone)),
                "{tool} sent {gone}: {sent}"
            );
        }
        let free = Grant::new("t").http(&format!("{}/api/", api.base()), None);
        let (out, _) = api
            .probe(tool, &free, json!({"url": head, "headers": asks}))
            .await;
        let sent = out["ok"]["body"].as_str().unwrap().to_ascii_lowercase();
        let lines: Vec<&str> = sent.lines().map(str::trim_end).collect();
        assert!(
            lines.contains(&"accept-encoding: gzip, br"),
            "{tool}: {sent}"
        );
        assert!(lines.contains(&"range: bytes=0-3"), "{tool}: {sent}");
        assert!(
            lines.contains(&"accept-charset: utf-16le"),
            "{tool}: {sent}"
        );
    }

    // A server answering in UTF-16 anyway: refused before the tool reads
    // a byte, on both paths, and the trail says why, quoting nothing the
    // server wrote (a list of candidates for a secret, one marked, would
    // tell the tool which is right).
    let u16 = format!("{}/api/u16", api.base());
    let why = "the response's Content-Type names a charset that does not spell ASCII as ASCII: redaction cannot read it while this invocation holds secrets; the request named no charset";
    let (out, inv) = api
        .probe("probe", &holding, json!({"url": u16, "bearer": "hidden"}))
        .await;
    assert_eq!(out["error"]["code"], "connection", "{out}");
    assert_eq!(out["error"]["message"], why, "{out}");
    let input = json!({"url": u16, "reveal": "api", "into": "header"});
    let (out, std_inv) = api.probe("std", &holding, input).await;
    let code = out["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        code.starts_with("ErrorCode::HttpResponseContentCoding"),
        "{out}"
    );
    let wide = |t: &str| t.chars().flat_map(|c| [c, '\0']).collect::<String>();
    for token in [HIDDEN_TOKEN, API_TOKEN] {
        assert!(!out.to_string().contains(&wide(token)[..20]), "{out}");
    }
    for inv in [inv, std_inv] {
        let egress = api.egress(&inv);
        assert_eq!(egress.outcome.as_deref(), Some("error"), "{egress:?}");
        let message = egress.message.unwrap_or_default();
        assert!(
            message.contains("names a charset that does not spell ASCII"),
            "{message}"
        );
        assert!(!message.contains("utf-16le"), "{message}");
    }
    // And one that answers in UTF-16 without a word: redacted in that form.
    let w16 = format!("{}/api/w16", api.base());
    let (out, inv) = api
        .probe("probe", &holding, json!({"url": w16, "bearer": "hidden"}))
        .await;
    let body = out["ok"]["body"]
        .as_str()
        .unwrap_or_else(|| panic!("{out}"));
    assert!(!body.contains(&wide(HIDDEN_TOKEN)[..20]), "{out}");
    assert!(body.contains("[REDACTED:hidden]"), "{out}");
    let egress = api.egress(&inv);
    assert_eq!(
        (egress.outcome.as_deref(), egress.message.as_deref()),
        (
            Some("ok"),
            Some("secret 'hidden' reflected in the response; redacted before the tool saw it")
        )
    );

    let gz = format!("{}/api/gz", api.base());
    let why = "the response is encoded (a Content-Encoding other than identity), which redaction cannot read while this invocation holds secrets; the request asked for identity";
    let (out, inv) = api
        .probe("probe", &holding, json!({"url": gz, "bearer": "hidden"}))
        .await;
    assert_eq!(out["error"]["code"], "connection", "{out}");
    assert_eq!(out["error"]["message"], why, "{out}");
    let input = json!({"url": gz, "reveal": "api", "into": "header"});
    let (out, std_inv) = api.probe("std", &holding, input).await;
    let code = out["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        code.starts_with("ErrorCode::HttpResponseContentCoding"),
        "{out}"
    );
    assert!(
        !out.to_string().contains(HIDDEN_TOKEN) && !out.to_string().contains(API_TOKEN),
        "{out}"
    );
    for inv in [inv, std_inv] {
        let egress = api.egress(&inv);
        assert_eq!(egress.outcome.as_deref(), Some("error"), "{egress:?}");
        let message = egress.message.unwrap_or_default();
        assert!(
            message.contains("a Content-Encoding other than identity"),
            "{message}"
        );
    }
}

/// A tool starts many `wasi:http` requests at once and finishes none of
/// their bodies, which the host buffers to check: it holds them only up to
/// the host call limit together, and refuses each request past it
/// (`http.size`, recorded). Before, every request could buffer up to the
/// limit on its own: hundreds of them, gigabytes of the host's memory.
#[tokio::test]
async fn a_tools_wasi_http_bodies_together_stay_within_the_host_call_limit() {
    let api = Api::with(|b| b.hostcall_limit(1 << 20)).await;
    let url = format!("{}/api/upload", api.base());
    // 400 KiB each: two fit within 1 MiB, a third does not.
    let body = "b".repeat(400 << 10);
    let input = json!({"url": url, "body": body, "unfinished": 6});
    let (out, inv) = api.probe("std", &api.grant(), input).await;
    let codes: Vec<&str> = out["started"]["codes"]
        .as_array()
        .unwrap_or_else(|| panic!("{out}"))
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(codes.len(), 6, "{codes:?}");
    assert_eq!(codes[..2], ["open", "open"], "{codes:?}");
    for code in &codes[2..] {
        assert!(
            code.starts_with("ErrorCode::HttpRequestBodySize"),
            "{codes:?}"
        );
    }
    let refused: Vec<_> = api
        .decisions(&inv)
        .into_iter()
        .filter(|d| d.decision.as_deref() == Some("deny"))
        .collect();
    assert_eq!(refused.len(), 4, "{refused:?}");
    for d in &refused {
        assert_eq!(d.rule.as_deref(), Some("http.size"), "{d:?}");
        assert_eq!(
            d.reason.as_deref(),
            Some(
                "the invocation's requests in flight hold more than the host call limit of 1048576 bytes of bodies together; finish or drop one first"
            )
        );
    }
    assert_eq!(api.requests(), 0, "nothing was sent");
}

/// A tool starts many `wasi:http` requests at once: at most 32 of them
/// connect at once, the rest wait their turn, and each is answered. Before,
/// every request connected at once: about 2,000 sockets from one
/// invocation (as many handles as its table takes), past the descriptors
/// `serve` keeps for every tool.
#[tokio::test]
async fn a_tools_wasi_http_requests_connect_at_most_32_at_once() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (open, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (counted, highest) = (open.clone(), most.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let (open, most) = (counted.clone(), highest.clone());
            tokio::spawn(async move {
                most.fetch_max(open.fetch_add(1, SeqCst) + 1, SeqCst);
                let mut buf = vec![0u8; 8192];
                let _ = conn.read(&mut buf).await;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
                let _ = conn.write_all(answer.as_bytes()).await;
                open.fetch_sub(1, SeqCst);
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let manifest = format!(
        "[tools.std]\ncomponent = \"{}\"\n[[tools.std.http]]\nscheme = \"http\"\nhost = \"127.0.0.1\"\n\
         port = {port}\nmethods = [\"POST\"]\napproval = \"none\"\n",
        crate::WASI_HTTP_PROBE
    );
    let path = dir.path().join("manifest.toml");
    std::fs::write(&path, manifest).unwrap();
    let runtime = Runtime::builder()
        .manifest(Manifest::load(&path).unwrap())
        .audit(MemorySink::new())
        .cache_dir(crate::common::shared_cache())
        .build()
        .unwrap();
    let grant = Grant::new("t").http(&format!("http://127.0.0.1:{port}/"), None);
    let input = json!({"url": format!("http://127.0.0.1:{port}/up"), "parallel": 40});
    let run = runtime
        .invoke("std", &grant, &input.to_string())
        .await
        .unwrap();
    let out: Value = serde_json::from_str(&run.output.unwrap()).unwrap();
    let codes = out["started"]["codes"]
        .as_array()
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(codes.len(), 40, "{out}");
    assert!(codes.iter().all(|c| c == "answered"), "{out}");
    let most = most.load(SeqCst);
    assert!((2..=32).contains(&most), "{most} connections at once");
}

/// A method the tool makes up is the tool's text: it never becomes the
/// record's action (which a secret, upper-cased, or a terminal control
/// would otherwise reach), and the reason that names it is redacted first
/// and cut.
#[tokio::test]
async fn a_made_up_method_reaches_the_trail_only_redacted() {
    let api = Api::new().await;
    let url = format!("{}/api/collect", api.base());
    let method = format!("{API_TOKEN}\u{1b}[2J{}", "x".repeat(500));
    let (out, inv) = api
        .probe("probe", &api.grant(), json!({"method": method, "url": url}))
        .await;
    assert_eq!(out["error"]["code"], "invalid-request", "{out}");
    let decision = api.decisions(&inv).last().cloned().unwrap();
    assert_eq!(decision.action.as_deref(), Some("INVALID"));
    let reason = decision.reason.unwrap_or_default();
    assert!(
        reason.starts_with("unknown method '[REDACTED:api]\u{1b}[2Jxxx"),
        "{reason}"
    );
    assert!(
        reason.contains("…[518 bytes]' (expected one of GET"),
        "{reason}"
    );
    let trail = serde_json::to_string(&api.audit.invocation(&inv)).unwrap();
    for token in [API_TOKEN.to_owned(), API_TOKEN.to_ascii_uppercase()] {
        assert!(!trail.contains(&token), "{trail}");
    }
    assert_eq!(api.requests(), 0);
}

/// The manifest entry of an `http-get` tool with `timeout` that may reach
/// 127.0.0.1:`port`, its egress rule last (for more to be added).
fn http_get_manifest(port: u16, timeout: &str) -> String {
    format!(
        "[tools.http-get]\ncomponent = \"{}\"\ntimeout = \"{timeout}\"\n[[tools.http-get.http]]\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {port}\n",
        crate::HTTP_GET
    )
}

/// A runtime whose `http-get` tool may reach 127.0.0.1:`port`; `more` ends
/// its egress rule (and may add to its manifest entry), `build` adds to the
/// builder (a trail, an approver).
fn http_get(
    dir: &std::path::Path,
    port: u16,
    more: &str,
    build: impl FnOnce(warden::RuntimeBuilder) -> warden::RuntimeBuilder,
) -> Runtime {
    let path = dir.join("manifest.toml");
    std::fs::write(&path, format!("{}{more}", http_get_manifest(port, "60s"))).unwrap();
    let builder = Runtime::builder()
        .manifest(Manifest::load(&path).unwrap())
        .cache_dir(crate::common::shared_cache());
    build(builder).build().unwrap()
}

/// The child of `a_call_waiting_in_a_request_keeps_little_of_its_fiber_stack`.
const FIBER_CHILD: &str = "WARDEN_TEST_FIBER_STACKS";
/// Calls held waiting in their request at once.
const HELD: usize = 20;

/// Issue #12: a call waiting in a `warden:tool/http` request keeps little of
/// its fiber's stack resident. Every page of the fiber a host call touches
/// stays resident for as long as the call waits (1,000 calls in flight: 4
/// MiB a page); the egress check, the gate's records (a file trail here) and
/// the request run on a task of their own, so the fiber keeps wasmtime's
/// entry and the wait: two pages, three when the allocator takes a slow
/// path. When the check and the records ran on the fiber, every stack had
/// four. Measured in a process of its own, whose only 2 MiB mappings are
/// fiber stacks (its threads get other sizes).
#[test]
fn a_call_waiting_in_a_request_keeps_little_of_its_fiber_stack() {
    if !std::path::Path::new("/proc/self/pagemap").exists() {
        eprintln!("skipped: no /proc/self/pagemap");
        return;
    }
    let env = [
        (FIBER_CHILD, "1".to_owned()),
        ("RUST_MIN_STACK", (8 << 20).to_string()),
    ];
    let pages: Vec<usize> = crate::common::child_field("egress::fiber_stack_child", &env, "pages")
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().unwrap())
        .collect();
    eprintln!("resident pages of each fiber stack in use: {pages:?}");
    assert!(
        pages.len() >= HELD,
        "{} stacks in use, {HELD} calls waiting: {pages:?}",
        pages.len()
    );
    assert!(
        pages.iter().all(|&p| p <= 3),
        "a waiting call's fiber stack has more than 3 resident pages: {pages:?}"
    );
}

#[test]
#[ignore = "run by a_call_waiting_in_a_request_keeps_little_of_its_fiber_stack in a process of its own"]
fn fiber_stack_child() {
    if std::env::var_os(FIBER_CHILD).is_none() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(1 << 20)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Reads each request and holds it, unanswered, until the process ends.
        let (arrived, mut seen) = tokio::sync::mpsc::channel(HELD);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let arrived = arrived.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let _ = conn.read(&mut buf).await;
                    let _ = arrived.send(()).await;
                    while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {}
                });
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let trail = warden::audit::FileSink::open(dir.path().join("audit.jsonl")).unwrap();
        let runtime = http_get(dir.path(), port, "", |b| b.audit(Arc::new(trail)));
        let grant = Grant::new("t").http(&format!("http://127.0.0.1:{port}/"), None);
        let input = json!({ "url": format!("http://127.0.0.1:{port}/held") }).to_string();
        let mut calls = Vec::new();
        for _ in 0..HELD {
            let (runtime, grant, input) = (runtime.clone(), grant.clone(), input.clone());
            calls.push(tokio::spawn(async move {
                runtime.invoke("http-get", &grant, &input).await
            }));
        }
        for _ in 0..HELD {
            tokio::time::timeout(std::time::Duration::from_secs(30), seen.recv())
                .await
                .expect("every request reached the server");
        }
        let pages: Vec<String> = fiber_stack_pages()
            .into_iter()
            .filter(|&p| p > 0)
            .map(|p| p.to_string())
            .collect();
        println!("pages={}|", pages.join(","));
        for call in calls {
            call.abort();
        }
    });
}

/// Resident pages of each 2 MiB anonymous read-write mapping of this
/// process (`/proc/self/maps`, `/proc/self/pagemap`: bit 63 is "present").
fn fiber_stack_pages() -> Vec<usize> {
    use std::io::{Read, Seek, SeekFrom};
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mut pagemap = std::fs::File::open("/proc/self/pagemap").unwrap();
    let mut counts = Vec::new();
    for line in maps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() != 5 || fields[1] != "rw-p" {
            continue; // a file, a name such as [stack], or not read-write
        }
        let (lo, hi) = fields[0].split_once('-').unwrap();
        let lo = u64::from_str_radix(lo, 16).unwrap();
        let hi = u64::from_str_radix(hi, 16).unwrap();
        if hi - lo != 2 << 20 {
            continue;
        }
        let n = ((hi - lo) / 4096) as usize;
        let mut entries = vec![0u8; n * 8];
        pagemap.seek(SeekFrom::Start(lo / 4096 * 8)).unwrap();
        pagemap.read_exact(&mut entries).unwrap();
        let present = entries
            .chunks_exact(8)
            .filter(|e| u64::from_le_bytes((*e).try_into().unwrap()) >> 63 == 1)
            .count();
        counts.push(present);
    }
    counts
}

/// Approves every request after `wait`.
struct SlowApprover {
    wait: std::time::Duration,
}

#[async_trait::async_trait]
impl warden::approval::Approver for SlowApprover {
    async fn ask(
        &self,
        r: &warden::approval::ApprovalRequest,
    ) -> Option<warden::approval::ApprovalAnswer> {
        tokio::time::sleep(self.wait).await;
        Some(warden::approval::ApprovalAnswer {
            digest: r.digest.clone(),
            approved: true,
            by: "slow".into(),
        })
    }
}

/// A secret attached by reference is taken only once the request has passed
/// the gate: one whose ttl runs out while an approver considers the request
/// is not sent (the tool gets `expired`, the server sees nothing), and the
/// approved request's outcome records why. The request's check and gate run
/// on a task of their own, with the secret's value and expiry taken there.
#[tokio::test]
async fn a_secret_that_expires_while_its_request_waits_for_approval_is_not_sent() {
    let (port, seen) = serve().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("api.txt"), API_TOKEN).unwrap();
    let audit = MemorySink::new();
    let runtime = http_get(
        dir.path(),
        port,
        &format!(
            "approval = \"required\"\n[[tools.http-get.secrets]]\nname = \"brief\"\nsource = \"file:api.txt\"\n\
             ttl = \"300ms\"\nsend-to = [\"http://127.0.0.1:{port}\"]\n"
        ),
        |b| {
            b.audit(audit.clone()).approver(Arc::new(SlowApprover {
                wait: std::time::Duration::from_millis(800),
            }))
        },
    );
    let grant = Grant::new("t")
        .http(&format!("http://127.0.0.1:{port}/secure"), None)
        .secret("brief");
    let input = json!({"url": format!("http://127.0.0.1:{port}/secure"), "secret": "brief"});
    let run = runtime
        .invoke("http-get", &grant, &input.to_string())
        .await
        .unwrap();
    let err = run.output.unwrap_err();
    assert_eq!(
        err.message,
        "expired: secret 'brief' has expired (past its ttl)"
    );
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing reached the server"
    );
    let egress = audit
        .invocation(&run.id)
        .into_iter()
        .filter(|r| r.event == Event::Egress)
        .collect::<Vec<_>>();
    let last = egress.last().expect("the approved request's outcome");
    assert_eq!(
        (last.outcome.as_deref(), last.message.as_deref()),
        (
            Some("error"),
            Some("secret 'brief' has expired (past its ttl)")
        ),
        "{egress:?}"
    );
    let trail = serde_json::to_string(&audit.invocation(&run.id)).unwrap();
    assert!(!trail.contains(API_TOKEN), "{trail}");
}

/// Panics when asked to write a request's outcome (a bug in the host).
struct PanicsOnOutcome(Arc<MemorySink>);

impl warden::audit::AuditSink for PanicsOnOutcome {
    fn append(&self, record: &warden::audit::Record) -> Result<(), warden::audit::AuditError> {
        self.append_all(std::slice::from_ref(record))
    }

    fn append_all(
        &self,
        records: &[warden::audit::Record],
    ) -> Result<(), warden::audit::AuditError> {
        if records
            .iter()
            .any(|r| r.event == Event::Egress && r.outcome.is_some())
        {
            panic!("test sink: no outcome record");
        }
        self.0.append_all(records)
    }
}

/// A panic on a request's task (here: writing the outcome of a request that
/// went out) fails the invocation as it would on the fiber, rather than
/// handing the tool an error for a request left unrecorded.
#[tokio::test]
async fn a_panic_on_a_requests_task_fails_the_invocation() {
    let (port, seen) = serve().await;
    let dir = tempfile::tempdir().unwrap();
    let runtime = http_get(dir.path(), port, "", |b| {
        b.audit(Arc::new(PanicsOnOutcome(MemorySink::new())))
    });
    let grant = Grant::new("t").http(&format!("http://127.0.0.1:{port}/api/"), None);
    let input = json!({"url": format!("http://127.0.0.1:{port}/api/data")}).to_string();
    let call = tokio::spawn(async move { runtime.invoke("http-get", &grant, &input).await });
    let ended = call.await;
    assert!(
        ended.as_ref().is_err_and(|e| e.is_panic()),
        "the invocation ended without the panic: {:?}",
        ended.map(|r| r.map(|run| run.output))
    );
    assert_eq!(seen.lock().unwrap().len(), 1, "the request went out first");
}

/// A request waiting for an approver when its invocation is cancelled: the
/// approval is withdrawn (nothing left pending), nothing is sent, and the
/// invocation's end is its last record, written after the request's task
/// was stopped.
#[tokio::test]
async fn a_request_waiting_for_approval_is_withdrawn_when_its_invocation_is_cancelled() {
    let (port, seen) = serve().await;
    let dir = tempfile::tempdir().unwrap();
    let audit = MemorySink::new();
    let queue = Arc::new(warden::approval::QueueApprover::new());
    let runtime = http_get(dir.path(), port, "approval = \"required\"\n", |b| {
        b.audit(audit.clone()).approver(queue.clone())
    });
    let grant = Grant::new("t").http(&format!("http://127.0.0.1:{port}/api/"), None);
    let input = json!({"url": format!("http://127.0.0.1:{port}/api/data")}).to_string();
    let cancel = tokio_util::sync::CancellationToken::new();
    let options = warden::InvokeOptions {
        cancel: Some(cancel.clone()),
        ..Default::default()
    };
    let call = tokio::spawn({
        let runtime = runtime.clone();
        async move {
            runtime
                .invoke_with("http-get", &grant, &input, options)
                .await
        }
    });
    asked(&queue).await;
    cancel.cancel();
    let ended = call.await.unwrap();
    assert!(matches!(ended, Err(Error::Cancelled)), "{ended:?}");
    assert!(queue.pending().is_empty(), "the approval was withdrawn");
    assert_eq!(seen.lock().unwrap().len(), 0, "nothing was sent");
    let records = audit.records();
    let last = records.last().unwrap();
    assert_eq!(
        (last.event, last.outcome.as_deref()),
        (Event::InvocationEnd, Some("cancelled")),
        "{records:?}"
    );
}

/// A caller that drops the invocation's future (a timeout around `invoke`)
/// while its request waits for approval, on another worker thread: the
/// trail still expires its secret and ends the invocation, as its last
/// record, and the request is never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invocation_dropped_by_its_caller_still_ends_its_trail_last() {
    let (port, seen) = serve().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("api.txt"), API_TOKEN).unwrap();
    let audit = MemorySink::new();
    let queue = Arc::new(warden::approval::QueueApprover::new());
    let secret = "[[tools.http-get.secrets]]\nname = \"brief\"\nsource = \"file:api.txt\"\n";
    let more = format!("approval = \"required\"\n{secret}");
    let runtime = http_get(dir.path(), port, &more, |b| {
        b.audit(audit.clone()).approver(queue.clone())
    });
    let grant = Grant::new("t")
        .http(&format!("http://127.0.0.1:{port}/api/"), None)
        .secret("brief");
    let input = json!({"url": format!("http://127.0.0.1:{port}/api/data")}).to_string();
    let call = tokio::spawn({
        let runtime = runtime.clone();
        async move { runtime.invoke("http-get", &grant, &input).await }
    });
    asked(&queue).await;
    // Dropped, not cancelled: no token, the future itself goes.
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    // The request's task was aborted too; give it every chance to write.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(queue.pending().is_empty(), "the approval was withdrawn");
    assert_eq!(seen.lock().unwrap().len(), 0, "nothing was sent");
    let records = audit.records();
    let secret_events: Vec<_> = records
        .iter()
        .filter(|r| r.resource.as_deref() == Some("brief"))
        .map(|r| r.event)
        .collect();
    assert_eq!(
        secret_events,
        [Event::SecretIssued, Event::SecretExpired],
        "{records:?}"
    );
    let ends: Vec<_> = records
        .iter()
        .filter(|r| r.event == Event::InvocationEnd)
        .collect();
    assert_eq!(ends.len(), 1, "{records:?}");
    let last = records.last().unwrap();
    assert_eq!(
        (
            last.event,
            last.outcome.as_deref(),
            last.message.as_deref(),
            &*last.invocation
        ),
        (
            Event::InvocationEnd,
            Some("cancelled"),
            Some("the caller dropped the invocation before it ended"),
            &*records[0].invocation
        ),
        "{records:?}"
    );
    assert_eq!(records[0].event, Event::InvocationStart);
    assert!(!format!("{records:?}").contains(API_TOKEN));
}

/// Keeps what it is given, but cannot write a `secret.issued` record.
#[derive(Default)]
struct NoIssued(Mutex<Vec<warden::audit::Record>>);

impl warden::audit::AuditSink for NoIssued {
    fn append(&self, r: &warden::audit::Record) -> Result<(), warden::audit::AuditError> {
        if r.event == Event::SecretIssued {
            return Err(warden::audit::AuditError::Sink("disk full".into()));
        }
        self.0.lock().unwrap().push(r.clone());
        Ok(())
    }
}

/// An invocation that fails on its way in, after its start, still ends its
/// trail: its secret expired and an end naming the failure (not a drop).
#[tokio::test]
async fn an_invocation_failing_after_its_start_still_ends_its_trail() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("api.txt"), API_TOKEN).unwrap();
    let audit = Arc::new(NoIssued::default());
    let secret = "[[tools.http-get.secrets]]\nname = \"brief\"\nsource = \"file:api.txt\"\n";
    let runtime = http_get(dir.path(), 9, secret, |b| b.audit(audit.clone()));
    let grant = Grant::new("t").secret("brief");
    let input = json!({"url": "http://127.0.0.1:9/"}).to_string();
    let err = runtime
        .invoke("http-get", &grant, &input)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Audit(_)), "{err:?}");
    let records = audit.0.lock().unwrap();
    let got: Vec<_> = records
        .iter()
        .map(|r| {
            (
                r.event,
                r.resource.as_deref(),
                r.outcome.as_deref(),
                r.message.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (Event::InvocationStart, Some("secret:brief"), None, None),
            (Event::SecretExpired, Some("brief"), None, None),
            (
                Event::InvocationEnd,
                None,
                Some("host-error"),
                Some("audit sink failed: disk full")
            ),
        ]
    );
}

/// Waits (up to 20 s) until `queue` has a request waiting.
async fn asked(queue: &warden::approval::QueueApprover) {
    let since = std::time::Instant::now();
    while queue.pending().is_empty() {
        assert!(
            since.elapsed() < std::time::Duration::from_secs(20),
            "no approval asked"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Two holes a reviewer found in what a request is checked for, each
/// refused now before anything is sent, and recorded:
///
/// - a short secret base64-encoded after a prefix (HTTP Basic auth,
///   `user:s3cr3t`) at a byte alignment whose stable characters were too
///   few for a pattern: base64 runs are now decoded from every offset;
/// - a secret overlapping another (`XYZW12345678` and `5678ABCDEFGH`
///   written as `XYZW12345678ABCDEFGH`): leftmost matching reported only
///   the first, whose send-to allowed the host, and the second went out.
#[tokio::test]
async fn short_and_overlapping_secrets_never_go_outside_their_send_to() {
    let (port, seen) = serve().await;
    let dir = tempfile::tempdir().unwrap();
    for (file, value) in [
        ("pin", "s3cr3t"),
        ("e", "XYZW12345678"),
        ("f", "5678ABCDEFGH"),
    ] {
        std::fs::write(dir.path().join(file), value).unwrap();
    }
    let path = dir.path().join("manifest.toml");
    let secret = |name: &str, to: &str| {
        format!(
            "[[tools.probe.secrets]]\nname = \"{name}\"\nsource = \"file:{name}\"\n\
             reveal = true\napproval = \"none\"\nsend-to = [\"{to}\"]\n"
        )
    };
    let here = format!("http://127.0.0.1:{port}");
    std::fs::write(
        &path,
        format!(
            "[tools.probe]\ncomponent = \"{}\"\n[[tools.probe.http]]\nscheme = \"http\"\n\
             host = \"127.0.0.1\"\nport = {port}\n{}{}{}",
            crate::EGRESS_PROBE,
            secret("pin", "https://elsewhere.example"),
            secret("e", &here),
            secret("f", "https://elsewhere.example"),
        ),
    )
    .unwrap();
    let audit = MemorySink::new();
    let runtime = Runtime::builder()
        .manifest(Manifest::load(&path).unwrap())
        .audit(audit.clone())
        .cache_dir(crate::common::shared_cache())
        .build()
        .unwrap();
    let grant = Grant::new("t")
        .http(&format!("{here}/"), None)
        .secret("pin")
        .secret("e")
        .secret("f");
    let refused = |name: &str| {
        format!(
            "exfiltration attempt: secret '{name}' may be sent only to https://elsewhere.example, \
             not {here}"
        )
    };
    let probe = |input: Value| {
        let (runtime, audit, grant) = (&runtime, &audit, &grant);
        async move {
            let inv = runtime
                .invoke("probe", grant, &input.to_string())
                .await
                .unwrap();
            let out: Value = serde_json::from_str(&inv.output.unwrap()).unwrap();
            let rules: Vec<String> = (audit.invocation(&inv.id).into_iter())
                .filter(|r| r.decision.as_deref() == Some("deny"))
                .filter_map(|r| r.rule)
                .collect();
            (out, rules)
        }
    };
    use base64::Engine as _;
    for user in ["", "x", "ab", "bob:", "root:", "admin:"] {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}s3cr3t"));
        let (out, rules) = probe(json!({
            "url": format!("{here}/api/collect"),
            "headers": [["authorization", format!("Basic {basic}")]],
        }))
        .await;
        assert_eq!(out["error"]["message"], refused("pin"), "{user}: {out}");
        assert_eq!(rules, ["secret.send-to"], "{user}");
    }
    let (out, rules) =
        probe(json!({"url": format!("{here}/api/collect?q=XYZW12345678ABCDEFGH")})).await;
    assert_eq!(out["error"]["message"], refused("f"), "{out}");
    assert_eq!(rules, ["secret.send-to"]);
    assert_eq!(seen.lock().unwrap().len(), 0, "a request was sent");
    // `e` alone may go where its send-to says.
    let (out, _) = probe(json!({"url": format!("{here}/api/collect?q=XYZW12345678")})).await;
    assert_eq!(out["ok"]["status"], 200, "{out}");
}

/// A secret held only by reference cannot be read, so its value in a
/// request is a guess: refused to every host, its own send-to too (whose
/// echo would confirm a guess), and the invocation makes no further host
/// call — each refusal says whether a guess was right, and a tool may
/// learn that once, not once per request.
#[tokio::test]
async fn a_guess_at_a_secret_held_by_reference_ends_the_invocations_host_calls() {
    let api = Api::new().await;
    let url = format!("{}/api/echo", api.base());
    let grant = api.grant().secret("hidden");
    let guesses = format!("{{\"guesses\":[\"0000\",\"{HIDDEN_TOKEN}\",\"1111\"]}}");
    let (out, inv) = api
        .probe(
            "probe",
            &grant,
            json!({"url": url, "method": "POST", "body": guesses, "then": url}),
        )
        .await;
    assert_eq!(api.requests(), 0, "nothing reached the secret's own host");
    let tripped =
        "no further host calls: this invocation attempted an exfiltration (secret.guessed)";
    assert_eq!(out["error"]["message"], tripped, "{out}");
    let d = api.decisions(&inv);
    let rules: Vec<_> = d.iter().map(|r| r.rule.as_deref().unwrap()).collect();
    assert_eq!(rules, ["secret.guessed", "gate.tripped"], "{d:?}");
    assert_eq!(
        d[0].reason.as_deref(),
        Some(
            "exfiltration attempt: the request holds the value of secret 'hidden', which this \
             tool may use only by reference: refused to every host, its own send-to too"
        )
    );
    assert_eq!(d[1].reason.as_deref(), Some(tripped));
    // In a method or a path asked for by override, whose refusals quote
    // them redacted (a marker would confirm the guess): refused first.
    for input in [
        json!({"url": url, "method": format!("X {HIDDEN_TOKEN} Y")}),
        json!({"url": url, "headers": [["x-original-url", format!("/0000/{HIDDEN_TOKEN}/#")]]}),
        // In the URL with a tab the parser drops, on a path outside the
        // grant (whose refusal quotes the URL read, redacted).
        json!({"url": format!("{}/elsewhere/{}\t{}", api.base(), &HIDDEN_TOKEN[..6], &HIDDEN_TOKEN[6..])}),
    ] {
        let (out, inv) = api.probe("probe", &grant, input.clone()).await;
        assert_eq!(
            out["error"]["message"],
            d[0].reason.clone().unwrap(),
            "{input}"
        );
        assert_eq!(
            api.decisions(&inv)[0].rule.as_deref(),
            Some("secret.guessed")
        );
    }
    assert_eq!(api.requests(), 0);

    // A value sent where its send-to does not allow trips it too; the
    // next invocation starts afresh.
    let input = json!({"url": url, "reveal": "other", "into": "body", "then": url});
    let (out, inv) = api.probe("probe", &api.grant(), input).await;
    assert_eq!(
        out["error"]["message"],
        "no further host calls: this invocation attempted an exfiltration (secret.send-to)",
        "{out}"
    );
    let d = api.decisions(&inv);
    let rules: Vec<_> = d.iter().map(|r| r.rule.as_deref().unwrap()).collect();
    assert_eq!(
        rules,
        [
            "secret.grant",
            "secret.grant",
            "secret.send-to",
            "gate.tripped"
        ],
        "{d:?}"
    );
    let (out, _) = api.probe("probe", &api.grant(), json!({"url": url})).await;
    assert_eq!(out["ok"]["status"], 200, "{out}");
    assert_eq!(api.requests(), 1);
}

/// A request waiting for a person when another of its invocation's
/// requests trips the gate is not sent once approved: the answer is
/// recorded, and then the refusal.
#[tokio::test]
async fn a_request_approved_after_the_gate_tripped_is_not_sent() {
    let api = Api::with(|b| {
        b.approver(Arc::new(SlowApprover {
            wait: std::time::Duration::from_millis(800),
        }))
    })
    .await;
    let url = format!("{}/api/echo", api.base());
    let guess = format!("{{\"guess\":\"{HIDDEN_TOKEN}\"}}");
    let input = json!({"url": url, "method": "POST", "body": "first", "meanwhile": guess});
    let (out, inv) = api
        .probe("std-asks", &api.grant().secret("hidden"), input)
        .await;
    assert_eq!(
        out["started"]["codes"],
        json!([
            "ErrorCode::HttpRequestDenied",
            "ErrorCode::HttpRequestDenied"
        ]),
        "{out}"
    );
    assert_eq!(api.requests(), 0, "the approved request was sent");
    let trail: Vec<(String, Option<String>, Option<String>)> = (api.audit.invocation(&inv))
        .into_iter()
        .filter(|r| matches!(r.event, Event::Decision | Event::ApprovalRequested))
        .map(|r| (format!("{:?}", r.event), r.decision, r.rule))
        .collect();
    let step = |event: &str, decision: Option<&str>, rule: Option<&str>| {
        let owned = |s: Option<&str>| s.map(str::to_owned);
        (event.to_owned(), owned(decision), owned(rule))
    };
    assert_eq!(
        trail,
        [
            step("Decision", Some("allow"), Some("http.allowlist")),
            step("ApprovalRequested", None, None),
            step("Decision", Some("deny"), Some("secret.guessed")),
            step("Decision", Some("allow"), Some("approval")),
            step("Decision", Some("deny"), Some("gate.tripped")),
        ],
        "{trail:?}"
    );
}

/// A server the tool may reach can serve a page of candidates at a secret
/// the tool holds only by reference: redacted, the right one would come
/// back marked. A response holding such a value, which its request did not
/// carry, is withheld (on both HTTP paths), and the gate trips.
#[tokio::test]
async fn a_response_holding_a_value_the_request_did_not_carry_is_withheld() {
    let api = Api::new().await;
    let url = format!("{}/api/page", api.base());
    let grant = api.grant().secret("hidden");
    let withheld = "exfiltration attempt: the response holds the value of secret 'hidden', \
                    which this tool may use only by reference, and the request did not carry \
                    it: withheld";
    for (tool, refused) in [
        ("probe", json!({"message": withheld})),
        ("std", json!({"code": "ErrorCode::HttpRequestDenied"})),
    ] {
        let (out, inv) = api.probe(tool, &grant, json!({"url": url})).await;
        for (k, v) in refused.as_object().unwrap() {
            assert_eq!(out["error"][k], *v, "{tool}: {out}");
        }
        let egress = api.egress(&inv);
        assert_eq!(egress.outcome.as_deref(), Some("error"), "{tool}");
        assert_eq!(egress.message.as_deref(), Some(withheld), "{tool}");
        let d = api.decisions(&inv);
        assert_eq!(
            d.last().unwrap().rule.as_deref(),
            Some("secret.guessed"),
            "{tool}"
        );
    }
    // Without the secret granted, the page is only text.
    let (out, _) = api.probe("probe", &api.grant(), json!({"url": url})).await;
    assert_eq!(out["ok"]["status"], 200, "{out}");
}

/// A policy on `resource.url` reads the URL with its needless escapes
/// decoded: `/%61dmin` is `/admin` to any server, and to the policy.
#[tokio::test]
async fn a_url_rule_holds_for_a_percent_encoded_path() {
    let policy = warden::policy::RuntimePolicy::parse(&[(
        "admin.cedar".into(),
        r#"@id("no-admin")
@reason("the admin API is off limits")
forbid (principal, action == Warden::Action::"http::send", resource)
when { resource.url like "*/admin*" || resource.url like "*force=true*" };
"#
        .into(),
    )])
    .unwrap();
    let api = Api::with(|b| b.policy(policy)).await;
    for path in [
        "/api/admin/x",
        "/api/%61dmin/x",
        "/api/%61%64%6D%69%6E",
        "/api/echo?%66orce=%74rue",
    ] {
        let url = format!("{}{path}", api.base());
        let (out, inv) = api.probe("probe", &api.grant(), json!({"url": url})).await;
        assert_eq!(out["error"]["code"], "denied", "{path}: {out}");
        let d = api.decisions(&inv);
        assert_eq!(
            d[0].policies,
            Some(vec!["no-admin".to_owned()]),
            "{path}: {d:?}"
        );
    }
    assert_eq!(api.requests(), 0);
    // Elsewhere on the API: sent.
    let url = format!("{}/api/echo", api.base());
    let (out, _) = api.probe("probe", &api.grant(), json!({"url": url})).await;
    assert_eq!(out["ok"]["status"], 200, "{out}");
}

/// A tool holding the most resources it may (2,048) could keep gigabytes
/// of host memory in `wasi:http` requests and fields it builds and never
/// sends, with no grant and no record: a method or an authority of any
/// length, fields of 128 KiB each, a copy of a response's fields copied
/// whole when changed. Each is now bounded where it is set, so a resource
/// keeps a few KiB at most: a longer value is refused by its setter.
#[tokio::test]
async fn what_a_tool_keeps_in_unsent_wasi_http_requests_is_bounded() {
    let port = crate::common::http_server(|r| {
        let extra = if r.path.contains("big") {
            format!("x-big: {}\r\n", "b".repeat(20_000))
        } else {
            String::new()
        };
        ("200 OK".into(), extra, b"ok".to_vec())
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (runtime, _) = crate::common::runtime_for(
        dir.path(),
        &format!(
            "[tools.std]\ncomponent = \"{}\"\n[[tools.std.http]]\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {port}\n",
            crate::WASI_HTTP_PROBE
        ),
    );
    let grant = Grant::new("t").http(&format!("http://127.0.0.1:{port}/"), None);
    let kept = async |count: u32, bytes: u32, fields: u32, path: &str| {
        let input = json!({
            "url": format!("http://127.0.0.1:{port}{path}"),
            "kept": {"count": count, "bytes": bytes, "fields_bytes": fields, "copy_response": true},
        });
        let run = runtime.invoke("std", &grant, &input.to_string()).await?;
        Ok::<Value, Error>(serde_json::from_str(&run.output.unwrap()).unwrap())
    };
    // Within the bounds, every setter takes its value, and a copy of a
    // response's fields can be changed.
    assert_eq!(
        kept(1, 30, 16_000, "/small").await.unwrap(),
        json!({"kept": {"refused": [], "held": 1}})
    );
    // Past them: a method over 32 bytes, an authority over 512, a path
    // over 8 KiB; and a copy of fields over 16 KiB cannot be changed
    // (changing it copied it whole).
    assert_eq!(
        kept(1, 20_000, 0, "/big").await.unwrap(),
        json!({"kept": {
            "refused": ["authority", "method", "path", "response-copy"],
            "held": 1,
        }})
    );
    // Just past one: the bounds are where they are said to be.
    assert_eq!(
        kept(1, 33, 0, "/small").await.unwrap(),
        json!({"kept": {"refused": ["method"], "held": 1}})
    );
    // Fields past 16 KiB: `wasmtime-wasi-http` ends the call, as a limit.
    let err = kept(1, 30, 20_000, "/small").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("total size of fields exceeds limit"),
        "{err}"
    );
    // Many at once, each refused: the call ends, every request held.
    assert_eq!(
        kept(1500, 100_000, 0, "/small").await.unwrap(),
        json!({"kept": {"refused": ["authority", "method", "path"], "held": 1500}})
    );
}

/// Overlapping ceilings: the manifest allows the whole API (GET and POST,
/// no person) and states narrower rules for `/admin/` (GET only, labelled
/// `admin`) and `/ops/` (GET and POST, each asking a person). A task
/// granted the whole API is held, under each narrower path, to its rule:
/// the policy sees the label, a method it does not allow is refused there
/// rather than given to the wider rule, and a request there waits for a
/// person. Elsewhere the wider rule applies.
#[tokio::test]
async fn a_request_under_a_narrower_ceiling_is_held_to_it() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let port = {
        let seen = seen.clone();
        crate::common::http_server(move |r| {
            seen.lock()
                .unwrap()
                .push(format!("{} {}", r.method, r.path));
            ("200 OK".into(), String::new(), b"ok".to_vec())
        })
        .await
    };
    let dir = tempfile::tempdir().unwrap();
    let rule = |prefix: &str, methods: &str, extra: &str| {
        format!(
            "[[tools.probe.http]]\nscheme = \"http\"\nhost = \"127.0.0.1\"\nport = {port}\n\
             path-prefixes = [\"{prefix}\"]\nmethods = [{methods}]\n{extra}\n"
        )
    };
    let manifest = format!(
        "[tools.probe]\ncomponent = \"{}\"\n{}{}{}",
        crate::EGRESS_PROBE,
        rule("/", r#""GET", "POST""#, "approval = \"none\""),
        rule("/admin/", r#""GET""#, "labels = [\"admin\"]"),
        rule("/ops/", r#""GET", "POST""#, "approval = \"required\""),
    );
    std::fs::write(dir.path().join("manifest.toml"), manifest).unwrap();
    let policy = warden::policy::RuntimePolicy::parse(&[(
        "admin.cedar".into(),
        r#"@id("no-admin")
forbid (principal, action == Warden::Action::"http::send", resource)
when { resource.labels.contains("admin") };
"#
        .into(),
    )])
    .unwrap();
    let audit = MemorySink::new();
    let runtime = Runtime::builder()
        .manifest(Manifest::load(dir.path().join("manifest.toml")).unwrap())
        .audit(audit.clone())
        .policy(policy)
        .cache_dir(crate::common::shared_cache())
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let grant = Grant::new("t").http(&format!("{base}/"), None);
    let probe = async |method: &str, path: &str| {
        let input = json!({"method": method, "url": format!("{base}{path}")});
        let run = runtime
            .invoke("probe", &grant, &input.to_string())
            .await
            .unwrap();
        let out: Value = serde_json::from_str(&run.output.unwrap()).unwrap();
        (out, audit.invocation(&run.id))
    };
    let decision = |records: &[warden::audit::Record]| {
        records
            .iter()
            .find(|r| r.event == Event::Decision)
            .cloned()
            .unwrap()
    };
    // The wider rule's paths: sent, by either method, asking no one.
    for method in ["GET", "POST"] {
        let (out, _) = probe(method, "/public").await;
        assert_eq!(out["ok"]["status"], 200, "{method}: {out}");
    }
    // `/admin/`: labelled for the policy, which refuses it.
    let (out, records) = probe("GET", "/admin/users").await;
    assert_eq!(out["error"]["code"], "denied", "{out}");
    let d = decision(&records);
    assert_eq!(d.policies, Some(vec!["no-admin".to_owned()]), "{d:?}");
    // A method `/admin/`'s rule does not allow: refused there, not given
    // to the wider rule that allows it.
    let (out, records) = probe("POST", "/admin/users").await;
    let why = format!(
        "POST /admin/users on {base} is not in the egress grant: the manifest's rule \
         for /admin/ does not allow POST"
    );
    assert_eq!(out["error"]["code"], "denied", "{out}");
    let d = decision(&records);
    assert_eq!(
        (d.rule.as_deref(), d.reason.as_deref()),
        (Some("http.allowlist"), Some(why.as_str())),
        "{d:?}"
    );
    // Written so a lenient server reads it under `/admin/`: the same.
    let (out, records) = probe("POST", "//admin/users").await;
    assert_eq!(out["error"]["code"], "denied", "{out}");
    let d = decision(&records);
    assert!(
        d.reason
            .as_deref()
            .unwrap()
            .ends_with("does not allow POST (as a server may read the path)"),
        "{d:?}"
    );
    let (out, records) = probe("GET", "/%61dmin;v=1/users").await;
    assert_eq!(out["error"]["code"], "denied", "{out}");
    let d = decision(&records);
    assert_eq!(d.policies, Some(vec!["no-admin".to_owned()]), "{d:?}");
    // `/ops/`: each request waits for a person (none here: refused).
    let (out, records) = probe("GET", "/ops/restart").await;
    assert_eq!(out["error"]["code"], "denied", "{out}");
    assert!(
        records.iter().any(|r| r.event == Event::ApprovalRequested),
        "{records:?}"
    );
    assert_eq!(
        *seen.lock().unwrap(),
        ["GET /public", "POST /public"],
        "only the wider rule's requests were sent"
    );
    // The start record names what was granted, not the narrower rules.
    let (_, records) = probe("GET", "/public").await;
    let start = records.iter().find(|r| r.event == Event::InvocationStart);
    assert_eq!(
        start.unwrap().resource.as_deref(),
        Some(format!("http:GET,POST={base}/").as_str())
    );
}
