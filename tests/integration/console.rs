//! The operator console (`warden serve --console`): driven in a real
//! headless Chromium through ChromeDriver (Debian's `chromium` and
//! `chromium-driver`, which CI installs; skipped with a note elsewhere when
//! missing), and attacked with a plain HTTP client.

use crate::mcp::{Setup, call, http_client, http_server_said, setup};
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const OPERATOR: &str = "operator-console-token-0123456789";
/// The key WebDriver names an element by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// The pending approvals page with nothing waiting says so, and what
/// shows new requests (the page does not reload by itself).
const NOTHING_WAITING: &str =
    "<p id=none>Nothing is waiting. Use Look again to see requests that came since.</p>";

/// `warden serve --http --console` with its own token: the child, the MCP
/// URL and the console's URL (ending in `/`).
async fn console_server(s: &Setup, extra: &[&str]) -> (tokio::process::Child, String, String) {
    let token = s.dir.path().join("console-token");
    std::fs::write(&token, OPERATOR).unwrap();
    let mut args = vec![
        "--console",
        "127.0.0.1:0",
        "--console-token-file",
        token.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (child, url, said) = http_server_said(s, &args).await;
    let console = said
        .iter()
        .find_map(|l| l.strip_prefix("warden: operator console at "))
        .unwrap_or_else(|| panic!("no console announced: {said:?}"))
        .to_owned();
    (child, url, console)
}

/// ChromeDriver on a free loopback port, and a WebDriver session of
/// headless Chromium with a fresh profile.
struct Browser {
    driver: tokio::process::Child,
    http: reqwest::Client,
    base: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Option<Browser> {
        if !std::path::Path::new(CHROMEDRIVER).exists() || !std::path::Path::new(CHROMIUM).exists()
        {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "{CHROMIUM} or {CHROMEDRIVER} is missing (CI installs Debian's chromium and chromium-driver)"
                );
            }
            println!("skipped: Chromium not installed (apt-get install chromium chromium-driver)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let http = reqwest::Client::new();
        let driver_url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while http
            .get(format!("{driver_url}/status"))
            .send()
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "ChromeDriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-quic", "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync",
                         format!("--user-data-dir={}", profile.path().display())],
            },
        }}});
        let created = http
            .post(format!("{driver_url}/session"))
            .header("content-type", "application/json")
            .body(caps.to_string())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let created: Value = serde_json::from_str(&created).unwrap();
        let id = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"));
        Some(Browser {
            driver,
            http,
            base: format!("{driver_url}/session/{id}"),
            _profile: profile,
        })
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let text = req.send().await.unwrap().text().await.unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        v["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.send(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// The first element `css` selects, if any.
    async fn find(&self, css: &str) -> Option<String> {
        let v = self
            .send(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT].as_str().map(str::to_owned)
    }

    /// Waits up to 30 s for `css` to select an element, on a page a click
    /// started to load: a click can return before its navigation ends.
    async fn wait_for(&self, css: &str) {
        let started = Instant::now();
        while self.find(css).await.is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no {css} after 30 s: {}",
                self.source().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The page's URL once it starts with `prefix`, waiting up to 30 s.
    async fn url_once(&self, prefix: &str) -> String {
        let started = Instant::now();
        loop {
            let url = self.send(reqwest::Method::GET, "/url", None).await;
            let url = url.as_str().unwrap_or_default().to_owned();
            if url.starts_with(prefix) {
                return url;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "still at {url} after 30 s, not under {prefix}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn text(&self, css: &str) -> String {
        let e = self.find(css).await.unwrap_or_else(|| panic!("no {css}"));
        self.send(reqwest::Method::GET, &format!("/element/{e}/text"), None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await.unwrap_or_else(|| panic!("no {css}"));
        self.send(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let e = self.find(css).await.unwrap_or_else(|| panic!("no {css}"));
        self.send(
            reqwest::Method::POST,
            &format!("/element/{e}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn title(&self) -> String {
        self.send(reqwest::Method::GET, "/title", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn source(&self) -> String {
        self.send(reqwest::Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// A PNG of the page, kept in the test target's scratch folder.
    async fn screenshot(&self, name: &str) {
        use base64::Engine as _;
        let v = self.send(reqwest::Method::GET, "/screenshot", None).await;
        if let Some(png) = v
            .as_str()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        {
            let _ = std::fs::write(format!("{}/{name}.png", env!("CARGO_TARGET_TMPDIR")), png);
        }
    }

    async fn close(mut self) {
        let _ = self.http.delete(&self.base).send().await;
        let _ = self.driver.kill().await;
    }
}

/// The whole operator loop in a real browser: sign in, see what a gated
/// write asks (its preview escaped: a `<script>` in the content stays
/// text), approve it, and the waiting invocation goes on; then the trail
/// page shows the decision and its verification.
#[tokio::test(flavor = "multi_thread")]
async fn an_approval_answered_in_the_browser_unblocks_the_invocation() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let s = setup();
    let (mut child, url, console) = console_server(&s, &[]).await;

    let client = http_client(&url, None).await.unwrap();
    let content =
        "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">";
    let asked = tokio::spawn(async move {
        let r = client
            .call_tool(call(
                "writer",
                json!({"path": "approved.md", "content": content}),
            ))
            .await;
        (client, r)
    });

    browser.go(&console).await;
    assert!(browser.title().await.starts_with("Sign in"));
    browser.type_into("input[name=name]", "alice").await;
    browser.type_into("input[name=token]", OPERATOR).await;
    browser.click("#signin").await;
    // Signed in, the pages are under the session's own path.
    let home = browser.url_once(&format!("{console}s/")).await;
    assert_eq!(home.len(), console.len() + 67, "{home}");

    let started = Instant::now();
    while browser.find("section.req").await.is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never listed: {}",
            browser.source().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        browser.go(&home).await;
    }
    assert_eq!(browser.title().await, "Pending approvals · Warden console");
    assert_eq!(browser.text("section.req .tool").await, "writer");
    assert_eq!(browser.text("section.req .action").await, "fs.write");
    assert_eq!(
        browser.text("section.req .resource").await,
        "workspace:approved.md"
    );
    assert_eq!(browser.text("section.req .task").await, "mcp-task");
    let preview = browser.text("section.req .preview").await;
    assert!(
        preview.contains("<script>document.title='pwned'</script>"),
        "{preview}"
    );
    assert!(
        browser.find("section.req img").await.is_none(),
        "markup from the tool was rendered"
    );
    browser.screenshot("console-pending").await;

    browser.click("section.req button.approve").await;
    let (client, r) = tokio::time::timeout(Duration::from_secs(30), asked)
        .await
        .expect("the invocation was not unblocked")
        .unwrap();
    let r = r.unwrap();
    assert_ne!(r.is_error, Some(true), "{}", crate::mcp::text(&r));
    let _ = client.cancel().await;
    let ws = s.dir.path().canonicalize().unwrap().join("ws");
    assert_eq!(
        std::fs::read_to_string(ws.join("approved.md")).unwrap(),
        content
    );
    browser.wait_for("#notice").await;
    assert_eq!(browser.text("#notice").await, "Approved.");
    assert!(!browser.title().await.contains("pwned"));

    // The trail page: the decision, who made it, and the chain verified.
    browser
        .go(&format!("{home}audit?tool=writer&event=decision"))
        .await;
    let source = browser.source().await;
    assert!(source.contains("approved by alice (console)"), "{source}");
    let status = browser.text("p.status").await;
    assert!(status.starts_with("intact"), "{status}");
    browser.screenshot("console-audit").await;
    browser.close().await;
    child.kill().await.unwrap();
    let trail = std::fs::read_to_string(s.dir.path().join("audit.jsonl")).unwrap();
    assert!(trail.contains("approved by alice (console)"));
}

/// A client that does not follow redirects, with the console's cookie
/// when signed in.
struct Http {
    http: reqwest::Client,
    console: String,
    cookie: Option<String>,
}

impl Http {
    fn new(console: &str) -> Http {
        Http {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            console: console.trim_end_matches('/').to_owned(),
            cookie: None,
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        let mut r = self.http.get(format!("{}{path}", self.console));
        if let Some(c) = &self.cookie {
            r = r.header("cookie", c);
        }
        r.send().await.unwrap()
    }

    async fn post(
        &self,
        path: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut r = self
            .http
            .post(format!("{}{path}", self.console))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(c) = &self.cookie {
            r = r.header("cookie", c);
        }
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.send().await.unwrap()
    }
}

fn location(r: &reqwest::Response) -> &str {
    r.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// What a stranger, a forged form and a rebinding page get: refused, with
/// what was wrong; nothing answered.
#[tokio::test(flavor = "multi_thread")]
async fn the_console_refuses_strangers_forged_forms_foreign_hosts_and_shows_tampering() {
    let s = setup();
    let (mut child, url, console) = console_server(&s, &[]).await;
    let mut c = Http::new(&console);

    // Not signed in: pages send to /login, forms are refused.
    let r = c.get("/").await;
    assert_eq!((r.status().as_u16(), location(&r)), (303, "/login"));
    let r = c
        .post(
            "/answer",
            &[("digest", &"a".repeat(64)), ("decision", "approve")],
            &[],
        )
        .await;
    assert_eq!(r.status().as_u16(), 401);
    // A wrong token: no cookie, and the page says so.
    let r = c
        .post(
            "/login",
            &[("name", "mallory"), ("token", "not-the-token-at-all")],
            &[],
        )
        .await;
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers().get("set-cookie").is_none());
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("that is not the console&#39;s token")
    );
    // A name with control, invisible or bidi characters is refused: it is
    // recorded as who answered, and could pass for another's.
    for name in ["a\u{1b}[2Jb", "alice\u{200b}", "\u{202e}ecila"] {
        let r = c
            .post("/login", &[("name", name), ("token", OPERATOR)], &[])
            .await;
        assert_eq!(r.status().as_u16(), 400, "{name:?}");
    }
    // A page of another site posting the sign-in form (rebinding or CSRF).
    let r = c
        .post(
            "/login",
            &[("name", "x"), ("token", OPERATOR)],
            &[("origin", "http://evil.example")],
        )
        .await;
    assert_eq!(r.status().as_u16(), 403);
    assert!(r.headers().get("set-cookie").is_none());

    let r = c
        .post("/login", &[("name", "bob"), ("token", OPERATOR)], &[])
        .await;
    assert_eq!(r.status().as_u16(), 303);
    let home = location(&r).to_owned();
    assert!(home.starts_with("/s/") && home.len() == 68, "{home}");
    let base = home.trim_end_matches('/').to_owned();
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    c.cookie = Some(set.split(';').next().unwrap().to_owned());

    // The cookie alone opens nothing: another service on this host is sent
    // it, but not the session's path.
    let r = c.get("/").await;
    assert_eq!((r.status().as_u16(), location(&r)), (303, "/login"));
    let r = c.get(&format!("/s/{}/", "0".repeat(64))).await;
    assert_eq!((r.status().as_u16(), location(&r)), (303, "/login"));
    // Nor the path without the cookie.
    let stranger = Http::new(&console);
    let r = stranger.get(&home).await;
    assert_eq!((r.status().as_u16(), location(&r)), (303, "/login"));
    // A junk cookie another port set for a deeper path does not sign the
    // operator out.
    let real = c.cookie.clone().unwrap();
    c.cookie = Some(format!("warden_console=junk; {real}"));

    let r = c.get(&home).await;
    assert_eq!(r.status().as_u16(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.starts_with("default-src 'none'; style-src 'sha256-"),
        "{csp}"
    );
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    let page = r.text().await.unwrap();
    // Nothing reloads the page: it says what does.
    assert!(page.contains(NOTHING_WAITING), "{page}");
    let csrf = page
        .split("name=csrf value=\"")
        .nth(1)
        .and_then(|t| t.split('"').next())
        .unwrap()
        .to_owned();
    assert_eq!(csrf.len(), 64);

    // A request waits; forged answers do not answer it.
    let answer_path = format!("{base}/answer");
    let client = http_client(&url, None).await.unwrap();
    let asked = tokio::spawn(async move {
        let r = client
            .call_tool(call(
                "writer",
                json!({"path": "<img src=x>.md", "content": "no"}),
            ))
            .await;
        (client, r)
    });
    let started = Instant::now();
    let digest = loop {
        let page = c.get(&home).await.text().await.unwrap();
        if let Some(d) = page.split("data-digest=\"").nth(1) {
            assert!(page.contains("workspace:&lt;img src=x&gt;.md"), "{page}");
            break d[..64].to_owned();
        }
        if asked.is_finished() {
            panic!("the call ended unasked: {:?}", asked.await.unwrap().1);
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never listed: {page}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let answer = [("digest", digest.as_str()), ("decision", "approve")];
    let r = c.post(&answer_path, &answer, &[]).await;
    assert_eq!(r.status().as_u16(), 403, "no CSRF token");
    assert!(r.text().await.unwrap().contains("CSRF token is missing"));
    let with_csrf = [
        ("digest", digest.as_str()),
        ("decision", "approve"),
        ("csrf", &csrf),
    ];
    let r = c
        .post(
            &answer_path,
            &with_csrf,
            &[("origin", "http://evil.example")],
        )
        .await;
    assert_eq!(r.status().as_u16(), 403, "another site's page");
    let r = c
        .post(&answer_path, &with_csrf, &[("host", "evil.example")])
        .await;
    assert_eq!(r.status().as_u16(), 403, "a rebound name");
    let r = c
        .post(
            &answer_path,
            &[("digest", "zz"), ("decision", "approve"), ("csrf", &csrf)],
            &[],
        )
        .await;
    assert_eq!(r.status().as_u16(), 400);
    let r = c
        .post(
            &answer_path,
            &[("digest", &digest), ("decision", "maybe"), ("csrf", &csrf)],
            &[],
        )
        .await;
    assert_eq!(r.status().as_u16(), 400);
    assert!(
        c.get(&home).await.text().await.unwrap().contains(&digest),
        "still waiting"
    );

    // A field given twice (the last would win elsewhere) is refused.
    let twice = [
        ("digest", digest.as_str()),
        ("decision", "deny"),
        ("decision", "approve"),
        ("csrf", &csrf),
    ];
    let r = c.post(&answer_path, &twice, &[]).await;
    assert_eq!(r.status().as_u16(), 400);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("the form gives &#39;decision&#39; twice")
    );

    // Denied for real, once; a second answer finds nothing waiting.
    let deny = [
        ("digest", digest.as_str()),
        ("decision", "deny"),
        ("csrf", &csrf),
    ];
    let r = c.post(&answer_path, &deny, &[]).await;
    assert_eq!(location(&r), format!("{home}?answered=deny"));
    let r = c.post(&answer_path, &deny, &[]).await;
    assert_eq!(location(&r), format!("{home}?answered=gone"));
    let (client, r) = asked.await.unwrap();
    let r = r.unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(
        crate::mcp::text(&r).contains("denied by bob (console)"),
        "{}",
        crate::mcp::text(&r)
    );
    let _ = client.cancel().await;

    // Filters say what was wrong; a valid one narrows.
    let r = c.get(&format!("{base}/audit?event=nope")).await;
    assert_eq!(r.status().as_u16(), 400);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("filter &#39;event&#39;: expected one of invocation.start")
    );
    let page = c
        .get(&format!("{base}/audit?decision=deny"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("denied by bob (console)"), "{page}");
    assert_eq!(
        page.matches("<tr class=rec>").count(),
        1,
        "only the denial: {page}"
    );

    // The trail altered on disk: the page names the line.
    let trail = s.dir.path().join("audit.jsonl");
    let text = std::fs::read_to_string(&trail).unwrap();
    let forged = text.replacen("denied by bob", "approved by bob", 1);
    assert_ne!(forged, text);
    std::fs::write(&trail, forged).unwrap();
    let page = c.get(&format!("{base}/audit")).await.text().await.unwrap();
    assert!(page.contains("ALTERED at line"), "{page}");

    // Signed out: the cookie is worth nothing.
    let r = c
        .post(&format!("{base}/logout"), &[("csrf", &csrf)], &[])
        .await;
    assert_eq!(location(&r), "/login");
    let r = c.get(&home).await;
    assert_eq!((r.status().as_u16(), location(&r)), (303, "/login"));
    child.kill().await.unwrap();
}

/// A form that never finishes arriving is answered 408 (it does not hold a
/// connection for good); sign-in attempts past a second's budget are
/// refused at once, unchecked, and nothing queues.
#[tokio::test(flavor = "multi_thread")]
async fn the_console_bounds_stalled_forms_and_sign_in_attempts() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let s = setup();
    let (mut child, _, console) = console_server(&s, &[]).await;
    let addr = console
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut stalled = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stalled
        .write_all(
            format!(
                "POST /login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nname=x"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stalled.read_to_end(&mut answer))
        .await
        .expect("a stalled form held its connection")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() >= Duration::from_secs(9));

    // Twelve guesses at once: at most the second's budget is checked
    // (two seconds' worth if they straddle one), the rest are refused at
    // once, unchecked; nothing queues.
    let c = Http::new(&console);
    let started = Instant::now();
    let guesses = (0..12).map(|i| {
        let c = &c;
        async move {
            let guess = format!("wrong-guess-number-{i}-0123456789");
            c.post("/login", &[("name", "m"), ("token", &guess)], &[])
                .await
                .status()
                .as_u16()
        }
    });
    let statuses = futures_util::future::join_all(guesses).await;
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(checked + refused, 12, "{statuses:?}");
    assert!(checked <= 10 && refused >= 2, "{statuses:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "guesses queued: {:?}",
        started.elapsed()
    );
    // A second later the budget is back: the operator signs in.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = c
        .post("/login", &[("name", "ops"), ("token", OPERATOR)], &[])
        .await;
    assert_eq!(r.status().as_u16(), 303);
    child.kill().await.unwrap();
}

/// `warden serve --http` on loopback with `s`'s manifest, `grants` and
/// `extra` arguments, run to its exit (these are refused at start).
fn serve_over_http(s: &Setup, grants: &std::path::Path, extra: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("--cache-dir")
        .arg(crate::common::shared_cache())
        .args(["serve", "--manifest"])
        .arg(&s.manifest)
        .arg("--grants")
        .arg(grants)
        .args(["--http", "127.0.0.1:0", "--audit"])
        .arg(s.dir.path().join("audit.jsonl"))
        .args(extra)
        .env("WARDEN_STATE_DIR", s.dir.path().join("state"))
        .output()
        .unwrap()
}

/// `serve` takes its authority from files: a token file a tool could read
/// (its fs ceiling holds it, read-only or not) would hand it the server's
/// bearer token, and a grants file it could write would widen its own
/// grant at the next start. Either is refused before anything is served,
/// naming the file, the tool and the ceiling.
#[test]
fn serve_refuses_authority_files_a_tool_could_read_or_change() {
    let s = setup();
    let ws = s.dir.path().canonicalize().unwrap().join("ws");
    let token = ws.join("token");
    std::fs::write(&token, OPERATOR).unwrap();
    let grants = ws.join("grants.toml");
    std::fs::copy(&s.grants, &grants).unwrap();
    let serve = |grants: &std::path::Path, extra: &[&str]| serve_over_http(&s, grants, extra);
    let out = serve(&s.grants, &["--token-file", token.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("fs ceiling 'workspace'") && err.contains("and the token file ("),
        "{err}"
    );
    let out = serve(&grants, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "the grants file ({}) is inside tool '",
            grants.display()
        )) && err.contains("which may be written or deleted"),
        "{err}"
    );
    // A grant file an agents file names, there.
    let agents = s.dir.path().join("agents.toml");
    std::fs::write(
        &agents,
        "[[issuer]]\nissuer = \"https://issuer.example\"\nalgorithms = [\"ES256\"]\n\n\
         [[agent]]\nissuer = \"https://issuer.example\"\nsubject = \"ci-*\"\ngrants = \"ws/grants.toml\"\n",
    )
    .unwrap();
    let out = serve(&s.grants, &["--agents", agents.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "the agent grants file ({}) is inside tool '",
            grants.display()
        )),
        "{err}"
    );
}

/// The console's token must be its own, and a non-loopback console needs
/// --allow-remote.
#[test]
fn a_console_token_shared_with_a_client_or_a_remote_address_is_refused() {
    let s = setup();
    let shared = s.dir.path().join("shared-token");
    std::fs::write(&shared, OPERATOR).unwrap();
    let serve = |extra: &[&str]| serve_over_http(&s, &s.grants, extra);
    let t = shared.to_str().unwrap();
    let out = serve(&[
        "--token-file",
        t,
        "--console",
        "127.0.0.1:0",
        "--console-token-file",
        t,
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the console token must differ from every client token"),
        "{err}"
    );
    let out = serve(&["--console", "0.0.0.0:0", "--console-token-file", t]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--console 0.0.0.0:0 is not a loopback address (pass --allow-remote"),
        "{err}"
    );
    // The approvals endpoint answers every pending request: the same.
    let out = serve(&["--approvals", "0.0.0.0:0", "--approvals-token-file", t]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--approvals 0.0.0.0:0 is not a loopback address (pass --allow-remote"),
        "{err}"
    );
}

/// `warden serve` with `args` and a console signed in to with the
/// operator's token: the child (its stdin kept open, for --stdio) and the
/// console's URL (ending in `/`), as it announces it.
async fn serve_with_console(s: &Setup, args: &[&str]) -> (tokio::process::Child, String) {
    let token = s.dir.path().join("console-token");
    std::fs::write(&token, OPERATOR).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("--cache-dir")
        .arg(crate::common::shared_cache())
        .args(["serve", "--manifest"])
        .arg(&s.manifest)
        .arg("--grants")
        .arg(&s.grants)
        .args(args)
        .arg("--console-token-file")
        .arg(&token)
        .env("WARDEN_STATE_DIR", s.dir.path().join("state"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (console, _) = crate::common::said_until(&mut child, "warden: operator console at ").await;
    (child, console)
}

/// Signs `c` in as `name`: the session's home path (`/s/VIEW/`).
async fn sign_in(c: &mut Http, name: &str) -> String {
    let r = c
        .post("/login", &[("name", name), ("token", OPERATOR)], &[])
        .await;
    assert_eq!(r.status().as_u16(), 303);
    let home = location(&r).to_owned();
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    c.cookie = Some(set.split(';').next().unwrap().to_owned());
    home
}

/// After an answer the console shows what became of it and a *Look
/// again* link, and no list: the next request's Approve button is not
/// where the one just clicked was, so a double click answers nothing
/// more. Looking again lists it.
#[tokio::test(flavor = "multi_thread")]
async fn after_an_answer_the_page_holds_no_form_that_answers_the_next_request() {
    let s = setup();
    let (mut child, url, console) = console_server(&s, &[]).await;
    let mut c = Http::new(&console);
    let home = sign_in(&mut c, "carol").await;
    let base = home.trim_end_matches('/').to_owned();
    let page = c.get(&home).await.text().await.unwrap();
    assert!(page.contains(NOTHING_WAITING), "{page}");

    let mut asked = Vec::new();
    for path in ["first.md", "second.md"] {
        let client = http_client(&url, None).await.unwrap();
        asked.push(tokio::spawn(async move {
            let r = client
                .call_tool(call("writer", json!({"path": path, "content": "x"})))
                .await;
            (client, r)
        }));
    }
    let started = Instant::now();
    let (page, digests) = loop {
        let page = c.get(&home).await.text().await.unwrap();
        let digests: Vec<String> = page
            .split("data-digest=\"")
            .skip(1)
            .map(|d| d[..64].to_owned())
            .collect();
        if digests.len() == 2 {
            break (page, digests);
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not both listed: {page}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (a, b) = (&digests[0], &digests[1]);
    assert_ne!(a, b);
    let csrf = page
        .split("name=csrf value=\"")
        .nth(1)
        .and_then(|t| t.split('"').next())
        .unwrap()
        .to_owned();

    let answer_path = format!("{base}/answer");
    let r = c
        .post(
            &answer_path,
            &[
                ("digest", a.as_str()),
                ("decision", "deny"),
                ("csrf", &csrf),
            ],
            &[],
        )
        .await;
    assert_eq!(location(&r), format!("{home}?answered=deny"));
    let r = c.get(location(&r)).await;
    assert_eq!(r.status().as_u16(), 200);
    let answered = r.text().await.unwrap();
    assert!(
        answered.contains("<title>Answered · Warden console</title>"),
        "{answered}"
    );
    assert!(
        answered.contains(&format!(
            "<p class=note id=notice>Denied.</p><p><a href=\"{home}\" id=again>Look again</a> \
             for the requests still waiting.</p>"
        )),
        "{answered}"
    );
    // No form that answers: not B's, not any.
    assert!(!answered.contains(b.as_str()), "{answered}");
    assert!(!answered.contains("/answer\""), "{answered}");
    assert!(!answered.contains("name=decision"), "{answered}");
    assert!(!answered.contains("class=approve"), "{answered}");
    assert_eq!(
        answered.matches("<form").count(),
        1,
        "only the sign-out form: {answered}"
    );

    // Looking again lists B, with its buttons; A is gone.
    let next = c.get(&home).await.text().await.unwrap();
    assert!(
        next.contains(&format!("<section class=req data-digest=\"{b}\">")),
        "{next}"
    );
    assert!(!next.contains(a.as_str()), "{next}");
    assert_eq!(next.matches("class=approve").count(), 1, "{next}");

    let r = c
        .post(
            &answer_path,
            &[
                ("digest", b.as_str()),
                ("decision", "deny"),
                ("csrf", &csrf),
            ],
            &[],
        )
        .await;
    assert_eq!(location(&r), format!("{home}?answered=deny"));
    for task in asked {
        let (client, r) = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("a denied call did not end")
            .unwrap();
        let r = r.unwrap();
        assert_eq!(r.is_error, Some(true));
        assert!(
            crate::mcp::text(&r).contains("denied by carol (console)"),
            "{}",
            crate::mcp::text(&r)
        );
        let _ = client.cancel().await;
    }
    child.kill().await.unwrap();
}

/// With `--state`, a page view reads at most 64 MiB of the trail, all
/// chains together, newest first: a chain larger than that shows its
/// newest records, unverified, and says how much was read; older chains
/// are not read, and the page says how many.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_chain_larger_than_a_page_reads_shows_its_newest_records_and_says_so() {
    let Some(pg) = crate::postgres::Postgres::start() else {
        return;
    };
    let s = setup();
    let url = pg.url();
    let (mut child, console) = serve_with_console(
        &s,
        &[
            "--http",
            "127.0.0.1:0",
            "--state",
            &url,
            "--replica",
            "r1",
            "--console",
            "127.0.0.1:0",
        ],
    )
    .await;
    let mut c = Http::new(&console);
    let home = sign_in(&mut c, "dave").await;
    let base = home.trim_end_matches('/').to_owned();

    // Beside this replica's own chain: an older one, and a newer one of
    // 4,500 lines of 16 KiB each (with its newline): 70.3 MiB, of which
    // the newest 4,096 lines are 64 MiB.
    let db = pg.client().await;
    db.batch_execute(
        r#"
        INSERT INTO warden_chains (chain, replica, started) VALUES
            ('old-chain', 'elsewhere', now() - interval '1 day'),
            ('big-chain', 'elsewhere', now() + interval '1 day');
        INSERT INTO warden_audit (chain, seq, line, ts, event, invocation, task, tool) VALUES
            ('old-chain', 0, '{"v":1,"ts":"2026-01-01T00:00:00.000Z","event":"log","invocation":"inv-old","task":"old","tool":"echo","identity":"sha256:00"}',
             now(), 'log', 'inv-old', 'old', 'echo');
        INSERT INTO warden_audit (chain, seq, line, ts, event, invocation, task, tool)
            SELECT 'big-chain', g, p || repeat('x', 16381 - octet_length(p)) || '"}',
                   now(), 'log', inv, 'big', 'echo'
            FROM (SELECT g, inv,
                         format('{"v":1,"ts":"2026-01-01T00:00:00.000Z","event":"log","invocation":"%s","task":"big","tool":"echo","identity":"sha256:00","level":"info","message":"', inv) AS p
                  FROM (SELECT g, 'inv-' || lpad(g::text, 4, '0') AS inv
                        FROM generate_series(0, 4499) AS g) AS n) AS l;
        "#,
    )
    .await
    .unwrap();
    let size: i64 = crate::postgres::one(
        &db,
        "SELECT sum(octet_length(line) + 1)::bigint FROM warden_audit WHERE chain = 'big-chain'",
        &[],
    )
    .await;
    assert_eq!(size, 4500 * 16384);
    let chains: i64 = crate::postgres::one(&db, "SELECT count(*) FROM warden_chains", &[]).await;
    assert_eq!(chains, 3, "old-chain, r1's and big-chain");

    let status = "<p class=status><span class=warn>not verified here: this chain is 70.3 MiB, \
                  and a page reads at most 64.0 MiB of the trail, so only its newest 64.0 MiB \
                  were read; the records shown are from those (run <code>warden audit \
                  verify</code>)</span></p>";
    let older = "<p class=warn id=older>2 older chains not shown: a page reads at most 64.0 MiB \
                 of the trail, and the newer chains above spent it (run <code>warden audit \
                 verify</code>)</p>";
    // The newest record, and the oldest of those read, are shown; the one
    // before it was not read.
    for (inv, shown) in [("inv-4499", 1), ("inv-0404", 1), ("inv-0403", 0)] {
        let r = c.get(&format!("{base}/audit?invocation={inv}")).await;
        assert_eq!(r.status().as_u16(), 200);
        let page = r.text().await.unwrap();
        assert!(
            page.contains("<h2>Chain big-chain (elsewhere)</h2>"),
            "{inv}: {page}"
        );
        assert!(page.contains(status), "{inv}: {page}");
        assert!(page.contains(older), "{inv}: {page}");
        assert_eq!(page.matches("<h2>Chain ").count(), 1, "{inv}");
        assert_eq!(page.matches("<tr class=rec>").count(), shown, "{inv}");
    }
    child.kill().await.unwrap();
}

/// A console served beside `--stdio` on an address of its own (here a
/// loopback one other than 127.0.0.1, standing in for a remote address)
/// answers a browser that names that address, and a name `--allowed-host`
/// gives, with no `--http`; any other name is still refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_console_answers_its_own_address_and_allowed_hosts_without_http() {
    let s = setup();
    let audit = s.dir.path().join("audit.jsonl");
    let (mut child, console) = serve_with_console(
        &s,
        &[
            "--stdio",
            "--audit",
            audit.to_str().unwrap(),
            "--console",
            "127.0.0.2:0",
            "--allow-remote",
            "--allowed-host",
            "console.example",
        ],
    )
    .await;
    assert!(console.starts_with("http://127.0.0.2:"), "{console}");
    let port = console
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    let http = reqwest::Client::new();
    let login = format!("{console}login");
    let status = |host: String| {
        let req = http.get(login.as_str()).header("host", host);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(format!("127.0.0.2:{port}")).await, 200);
    assert_eq!(status(format!("console.example:{port}")).await, 200);
    assert_eq!(status(format!("other.example:{port}")).await, 403);
    assert_eq!(status(format!("127.0.0.3:{port}")).await, 403);
    child.kill().await.unwrap();
}
