//! The operator console (`warden serve --console ADDR`): the pending
//! approvals, with what each asks, to approve or deny; and the audit trail,
//! browsed and filtered, with its verification status. Plain HTML from the
//! server, no script, no build step.
//!
//! Who may use it, decided here for every request, in this order:
//! - `Host` (and `Origin`, which browsers send with forms) must name the
//!   console itself: loopback, the address it is bound to, or a name the
//!   operator allowed (DNS rebinding, other sites' forms);
//! - a session, from signing in with the console's own token (never an
//!   agent's): its cookie and its view key in the path together
//!   (`session.rs` says why both);
//! - every form that changes something carries the session's CSRF token.
//!
//! Every response forbids framing, scripts and caching; every string that
//! is not the console's own is escaped ([`page::esc`]). Connections,
//! request bodies, sign-in attempts (a budget a second, not a queue) and
//! trail reads are all bounded.

mod page;
mod session;
mod trail;

pub use trail::TrailSource;

use crate::approval::ApprovalQueue;
use crate::mcp::http::host::Allowed;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use session::{SESSION, Sessions, Who};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

/// What the console serves.
pub struct ConsoleOptions {
    /// The operator's token, for signing in (not an agent's token).
    pub token: String,
    /// Where requests wait for an answer.
    pub queue: Arc<dyn ApprovalQueue>,
    /// The trail to browse and verify.
    pub trail: TrailSource,
    /// Further `Host` names the console answers to (HOST or HOST:PORT),
    /// e.g. behind a TLS proxy. Loopback names, and the address the
    /// console is bound to (unless a wildcard such as `0.0.0.0`), are
    /// always answered to.
    pub allowed_hosts: Vec<String>,
}

/// The longest name an operator may sign in with.
const MAX_NAME: usize = 64;
/// The largest form the console reads.
const MAX_FORM: usize = 16 << 10;
/// How long a request's head, and its body, may take to arrive.
const BODY_TIME: Duration = Duration::from_secs(10);
/// Connections open at once; more are closed as they come. A request
/// without a session closes its connection once answered, so strangers
/// hold none for long.
const MAX_CONNECTIONS: usize = 256;
/// Sign-in attempts checked in a second, all clients together; more are
/// answered 429 at once, unchecked (a guess past the budget learns
/// nothing, and nothing queues: the budget is back a second after a flood
/// stops).
const SIGN_INS_PER_SECOND: u32 = 5;
/// How long the answer to a wrong token waits.
const WRONG_TOKEN_DELAY: Duration = Duration::from_millis(500);
/// Records of each chain a trail page shows.
const PAGE_RECORDS: usize = 500;

struct Console {
    token: Arc<Zeroizing<String>>,
    queue: Arc<dyn ApprovalQueue>,
    trail: TrailSource,
    allowed: Allowed,
    sessions: Sessions,
    /// This second's start, and the sign-in attempts checked in it.
    sign_ins: std::sync::Mutex<(std::time::Instant, u32)>,
    /// Held while the trail is read: one read at a time.
    reading: tokio::sync::Mutex<()>,
    csp: HeaderValue,
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Serves the console on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    options: ConsoleOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let bound = listener.local_addr()?;
    let port = bound.port();
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1", "[::1]"]
        .iter()
        .map(|h| format!("{h}:{port}"))
        .collect();
    hosts.extend(options.allowed_hosts.iter().cloned());
    let mut origins = vec![
        format!("http://localhost:{port}"),
        format!("http://127.0.0.1:{port}"),
        format!("http://[::1]:{port}"),
    ];
    // The console's own address, as a browser reaching it by address
    // names it (`--console 10.0.0.5:8766 --allow-remote`); a wildcard
    // names no host, so a name for it must be allowed.
    if !bound.ip().is_unspecified() {
        hosts.push(bound.to_string());
        origins.push(format!("http://{bound}"));
    }
    for h in &options.allowed_hosts {
        origins.extend([format!("http://{h}"), format!("https://{h}")]);
    }
    let style = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        Sha256::digest(page::STYLE.as_bytes()),
    );
    let csp = format!(
        "default-src 'none'; style-src 'sha256-{style}'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'"
    );
    let console = Arc::new(Console {
        token: Arc::new(Zeroizing::new(options.token)),
        queue: options.queue,
        trail: options.trail,
        allowed: Allowed::new(&hosts, &origins),
        sessions: Sessions::default(),
        sign_ins: std::sync::Mutex::new((std::time::Instant::now(), 0)),
        reading: tokio::sync::Mutex::new(()),
        csp: HeaderValue::from_str(&csp).map_err(std::io::Error::other)?,
    });
    let admission = crate::mcp::http::conns::Admission::new("console", MAX_CONNECTIONS);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    while let Some((stream, peer)) =
        crate::mcp::http::next_connection(&listener, &shutdown, "console").await
    {
        let Some(permit) = admission.admit(peer) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let console = console.clone();
        let handler = hyper::service::service_fn(move |req: Request<Incoming>| {
            let console = console.clone();
            async move { Ok::<_, Infallible>(console.handle(req).await) }
        });
        let conn = crate::mcp::http::conns::http1(BODY_TIME)
            .serve_connection(crate::mcp::http::conns::io(stream, BODY_TIME), handler);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("console connection from {peer}: {e}");
            }
            drop(permit);
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), graceful.shutdown()).await;
    Ok(())
}

/// A form's fields, or why it cannot be read: its type, size, the time
/// it takes, and no field given twice.
async fn form(req: Request<Incoming>) -> Result<HashMap<String, String>, (StatusCode, String)> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/x-www-form-urlencoded") {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected a form (application/x-www-form-urlencoded)".into(),
        ));
    }
    let read = crate::mcp::http::conns::read_body(req.into_body(), MAX_FORM);
    let body = match tokio::time::timeout(BODY_TIME, read).await {
        Err(_) => {
            return Err((
                StatusCode::REQUEST_TIMEOUT,
                format!("the form did not arrive within {}s", BODY_TIME.as_secs()),
            ));
        }
        Ok(Err(crate::mcp::http::conns::BodyError::TooLarge)) => {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("form larger than {} KiB", MAX_FORM >> 10),
            ));
        }
        Ok(Err(crate::mcp::http::conns::BodyError::Failed(_))) => {
            return Err((StatusCode::BAD_REQUEST, "cannot read the form".into()));
        }
        Ok(Ok(b)) => b,
    };
    let mut fields = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(&body) {
        if fields.insert(k.to_string(), v.into_owned()).is_some() {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("the form gives '{}' twice (expected once)", page::esc(&k)),
            ));
        }
    }
    Ok(fields)
}

impl Console {
    fn respond(&self, status: StatusCode, html: String) -> Response<Body> {
        let mut r = Response::new(Full::new(Bytes::from(html)).boxed());
        *r.status_mut() = status;
        let h = r.headers_mut();
        for (name, value) in [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // Another port is another origin: it is sent no path (the
            // view key), and a form from it carries `Origin: null`.
            (header::REFERRER_POLICY, "same-origin"),
            (header::CACHE_CONTROL, "no-store"),
        ] {
            h.insert(name, HeaderValue::from_static(value));
        }
        h.insert(header::CONTENT_SECURITY_POLICY, self.csp.clone());
        r
    }

    fn redirect(&self, to: &str) -> Response<Body> {
        let mut r = self.respond(StatusCode::SEE_OTHER, String::new());
        if let Ok(v) = HeaderValue::from_str(to) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        r
    }

    /// Whether another sign-in attempt may be checked this second.
    fn may_sign_in(&self) -> bool {
        let mut b = self.sign_ins.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        if now.duration_since(b.0) >= Duration::from_secs(1) {
            *b = (now, 0);
        }
        b.1 += 1;
        b.1 <= SIGN_INS_PER_SECOND
    }

    /// `r` for a client without a session: its connection closes once
    /// answered.
    fn stranger(&self, mut r: Response<Body>) -> Response<Body> {
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        r
    }

    fn problem(&self, status: StatusCode, who: Option<&Who>, message: &str) -> Response<Body> {
        self.respond(status, page::problem(who, message))
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        if let Err((status, why)) = self.allowed.check(req.uri(), req.headers()) {
            return self.stranger(self.problem(status, None, why));
        }
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        match (&method, path.as_str()) {
            (&Method::GET, "/login") => {
                return self.stranger(self.respond(StatusCode::OK, page::login(None)));
            }
            (&Method::POST, "/login") => return self.stranger(self.login(req).await),
            (&Method::GET, "/") => return self.stranger(self.redirect("/login")),
            _ => {}
        }
        // `/s/VIEW/REST`: the session's own pages.
        let (view, rest) = path
            .strip_prefix("/s/")
            .map(|p| p.split_at(p.find('/').unwrap_or(p.len())))
            .unwrap_or(("", ""));
        let Some(who) = self.sessions.find(req.headers(), view) else {
            return self.stranger(match method {
                Method::GET => self.redirect("/login"),
                _ => self.problem(
                    StatusCode::UNAUTHORIZED,
                    None,
                    "not signed in (sign in at /login)",
                ),
            });
        };
        match (method, rest) {
            (Method::GET, "/" | "") => self.approvals(&who, req.uri().query()).await,
            (Method::GET, "/audit") => self.audit(&who, req.uri().query().unwrap_or("")).await,
            (Method::POST, "/answer" | "/logout") => {
                let fields = match form(req).await {
                    Ok(f) => f,
                    Err((s, e)) => return self.problem(s, Some(&who), &e),
                };
                let presented = fields.get("csrf").map_or("", String::as_str);
                if !crate::auth::same(presented, &who.csrf) {
                    return self.problem(
                        StatusCode::FORBIDDEN,
                        Some(&who),
                        "the form's CSRF token is missing or not this session's (reload the page)",
                    );
                }
                if rest == "/logout" {
                    self.sessions.close(&who.csrf);
                    return self.redirect("/login");
                }
                self.answer(&who, &fields).await
            }
            _ => self.problem(
                StatusCode::NOT_FOUND,
                Some(&who),
                "not found (the console has its approvals, its audit trail and /login)",
            ),
        }
    }

    async fn approvals(&self, who: &Who, query: Option<&str>) -> Response<Body> {
        let answered = query.and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "answered")
                .map(|(_, v)| v.into_owned())
        });
        // After an answer: what became of it, and no list (the next
        // request's button must not be under a double click).
        if let Some(d) = answered {
            let notice = match d.as_str() {
                "approve" => "Approved.",
                "deny" => "Denied.",
                _ => {
                    "That request is no longer waiting (answered elsewhere, expired or withdrawn)."
                }
            };
            return self.respond(StatusCode::OK, page::answered(who, notice));
        }
        let waiting = self.queue.waiting().await;
        let waiting = match &waiting {
            Ok(w) => Ok(w.as_slice()),
            Err(e) => {
                tracing::warn!("console: approvals: {e}");
                Err("The approvals store cannot be read now; look again shortly.")
            }
        };
        self.respond(StatusCode::OK, page::approvals(who, waiting))
    }

    async fn audit(&self, who: &Who, query: &str) -> Response<Body> {
        let filters = match trail::Filters::parse(query) {
            Ok(f) => f,
            Err(e) => return self.problem(StatusCode::BAD_REQUEST, Some(who), &e),
        };
        let read = {
            let _one = self.reading.lock().await;
            self.trail.read(&filters, PAGE_RECORDS).await
        };
        let trail = match &read {
            Ok(t) => Ok(t),
            Err(e) => {
                tracing::warn!("console: audit trail: {e}");
                Err("The audit trail cannot be read now (the server's log says why).")
            }
        };
        self.respond(StatusCode::OK, page::audit(who, &filters, trail))
    }

    async fn login(&self, req: Request<Incoming>) -> Response<Body> {
        let fields = match form(req).await {
            Ok(f) => f,
            Err((s, e)) => return self.respond(s, page::login(Some(&e))),
        };
        let name = fields.get("name").map_or("", |n| n.trim());
        // Recorded as who answered: printable characters only, as the
        // approvals endpoint takes (no zero-width or bidi characters to
        // pass for another operator's name).
        let hidden = name.chars().any(crate::redact::hidden);
        if name.is_empty() || name.chars().count() > MAX_NAME || hidden {
            return self.respond(
                StatusCode::BAD_REQUEST,
                page::login(Some(&format!(
                    "your name: expected 1 to {MAX_NAME} characters without control, \
                     invisible or bidi characters"
                ))),
            );
        }
        if !self.may_sign_in() {
            crate::mcp::http::conns::quiet_warn!(
                "console: sign-in attempts over {SIGN_INS_PER_SECOND} a second"
            );
            return self.respond(
                StatusCode::TOO_MANY_REQUESTS,
                page::login(Some("too many sign-in attempts; try again in a second")),
            );
        }
        let right = crate::auth::same(fields.get("token").map_or("", String::as_str), &self.token);
        if !right {
            crate::mcp::http::conns::quiet_warn!("console: a sign-in with a wrong token");
            tokio::time::sleep(WRONG_TOKEN_DELAY).await;
        }
        if !right {
            return self.respond(
                StatusCode::UNAUTHORIZED,
                page::login(Some("that is not the console's token")),
            );
        }
        let Some((value, who)) = self.sessions.open(name) else {
            return self.respond(
                StatusCode::SERVICE_UNAVAILABLE,
                page::login(Some("no randomness for a session; try again")),
            );
        };
        tracing::info!("console: {} signed in", crate::redact::escape_control(name));
        let mut r = self.redirect(&format!("{}/", who.base));
        let cookie = format!(
            "{}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
            session::COOKIE,
            SESSION.as_secs()
        );
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
        r
    }

    /// Approves or denies one waiting request, for the signed-in operator.
    async fn answer(&self, who: &Who, fields: &HashMap<String, String>) -> Response<Body> {
        let digest = fields.get("digest").map_or("", String::as_str);
        let approved = match fields.get("decision").map(String::as_str) {
            Some("approve") => true,
            Some("deny") => false,
            _ => {
                return self.problem(
                    StatusCode::BAD_REQUEST,
                    Some(who),
                    "the answer must be approve or deny",
                );
            }
        };
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return self.problem(
                StatusCode::BAD_REQUEST,
                Some(who),
                "the request's digest must be 64 hex digits",
            );
        }
        let by = format!("{} (console)", who.name);
        let base = &who.base;
        match self.queue.answer_waiting(digest, approved, &by).await {
            Ok(true) => {
                tracing::info!(
                    "console: {} {} {digest}",
                    crate::redact::escape_control(&who.name),
                    if approved { "approved" } else { "denied" }
                );
                let d = if approved { "approve" } else { "deny" };
                self.redirect(&format!("{base}/?answered={d}"))
            }
            Ok(false) => self.redirect(&format!("{base}/?answered=gone")),
            Err(e) => {
                tracing::warn!("console: approvals: {e}");
                self.problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Some(who),
                    "the approvals store cannot be reached; nothing was answered, try again",
                )
            }
        }
    }
}
