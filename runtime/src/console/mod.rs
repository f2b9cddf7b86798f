//! The operator console (`warden serve --console ADDR`): the pending
//! approvals, with what each asks, to approve or deny; and the audit trail,
//! browsed and filtered, with its verification status. Plain HTML from the
//! server, no script, no build step.
//!
//! Who may use it, decided here for every request, in this order:
//! - `Host` (and `Origin`, when a browser sends one) must name the
//!   console itself: loopback, or a name the operator allowed (DNS
//!   rebinding);
//! - a session, from signing in with the console's own token (never an
//!   agent's), carried by an `HttpOnly`, `SameSite=Strict` cookie;
//! - every form that changes something carries the session's CSRF token.
//!
//! Every response forbids framing, scripts and caching; every string that
//! is not the console's own is escaped ([`page::esc`]).

mod page;
mod trail;

pub use trail::TrailSource;

use crate::approval::ApprovalQueue;
use crate::mcp::http::host::Allowed;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
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
    /// Further `Host` names the console answers to (HOST or HOST:PORT).
    pub allowed_hosts: Vec<String>,
}

/// The cookie that carries a session.
const COOKIE: &str = "warden_console";
/// How long a session lasts after signing in.
const SESSION: Duration = Duration::from_secs(8 * 3600);
/// Sessions kept at once; signing in past this ends the oldest.
const MAX_SESSIONS: usize = 64;
/// The longest name an operator may sign in with.
const MAX_NAME: usize = 64;
/// The largest form the console reads.
const MAX_FORM: usize = 16 << 10;
/// How long a wrong token waits for its answer (guessing is slow).
const WRONG_TOKEN_DELAY: Duration = Duration::from_millis(500);
/// Records of each chain a trail page shows.
const PAGE_RECORDS: usize = 500;

struct Session {
    name: String,
    csrf: String,
    until: Instant,
}

struct Console {
    token: Zeroizing<String>,
    queue: Arc<dyn ApprovalQueue>,
    trail: TrailSource,
    allowed: Allowed,
    /// Keyed by the SHA-256 of the cookie's value: the values themselves
    /// are not kept.
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    csp: HeaderValue,
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Serves the console on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    options: ConsoleOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let port = listener.local_addr()?.port();
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
    origins.extend(options.allowed_hosts.iter().map(|h| format!("http://{h}")));
    let style = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        Sha256::digest(page::STYLE.as_bytes()),
    );
    let csp = format!(
        "default-src 'none'; style-src 'sha256-{style}'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'"
    );
    let console = Arc::new(Console {
        token: Zeroizing::new(options.token),
        queue: options.queue,
        trail: options.trail,
        allowed: Allowed::new(&hosts, &origins),
        sessions: Mutex::new(HashMap::new()),
        csp: HeaderValue::from_str(&csp).map_err(std::io::Error::other)?,
    });
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("console: accept failed: {e}");
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let console = console.clone();
        let handler = hyper::service::service_fn(move |req: Request<Incoming>| {
            let console = console.clone();
            async move { Ok::<_, Infallible>(console.handle(req).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10))
            .serve_connection(TokioIo::new(stream), handler);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("console connection from {peer}: {e}");
            }
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), graceful.shutdown()).await;
    Ok(())
}

/// 32 random bytes, hex.
fn random() -> String {
    let mut b = [0u8; 32];
    // Without randomness no session can be made safe: the id stays all
    // zeros and is refused below.
    if getrandom::fill(&mut b).is_err() {
        return String::new();
    }
    hex::encode(b)
}

fn key(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}

/// The session cookie's value, if the request carries one.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// A form's fields, or why it cannot be read.
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
    let body = http_body_util::Limited::new(req.into_body(), MAX_FORM)
        .collect()
        .await
        .map_err(|_| {
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("form larger than {} KiB", MAX_FORM >> 10),
            )
        })?
        .to_bytes();
    Ok(url::form_urlencoded::parse(&body).into_owned().collect())
}

impl Console {
    fn respond(&self, status: StatusCode, html: String) -> Response<Body> {
        let mut r = Response::new(Full::new(Bytes::from(html)).boxed());
        *r.status_mut() = status;
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        h.insert(header::CONTENT_SECURITY_POLICY, self.csp.clone());
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }

    fn redirect(&self, to: &str) -> Response<Body> {
        let mut r = self.respond(StatusCode::SEE_OTHER, String::new());
        if let Ok(v) = HeaderValue::from_str(to) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        r
    }

    /// The signed-in operator's name and CSRF token.
    fn session(&self, headers: &HeaderMap) -> Option<(String, String)> {
        let value = cookie(headers)?;
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        sessions.retain(|_, s| s.until > now);
        let s = sessions.get(&key(value))?;
        Some((s.name.clone(), s.csrf.clone()))
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        if let Err((status, why)) = self.allowed.check(req.uri(), req.headers()) {
            return self.respond(status, page::problem(None, why));
        }
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        if path == "/login" {
            return match method {
                Method::GET => self.respond(StatusCode::OK, page::login(None)),
                Method::POST => self.login(req).await,
                _ => self.respond(
                    StatusCode::METHOD_NOT_ALLOWED,
                    page::problem(None, "GET or POST /login"),
                ),
            };
        }
        let Some((name, csrf)) = self.session(req.headers()) else {
            return match method {
                Method::GET => self.redirect("/login"),
                _ => self.respond(
                    StatusCode::UNAUTHORIZED,
                    page::problem(None, "not signed in (sign in at /login)"),
                ),
            };
        };
        let who = (&*name, &*csrf);
        match (method, &*path) {
            (Method::GET, "/") => {
                let notice = req.uri().query().and_then(|q| {
                    url::form_urlencoded::parse(q.as_bytes())
                        .find(|(k, _)| k == "answered")
                        .map(|(_, v)| v.into_owned())
                });
                let notice = notice.map(|d| match d.as_str() {
                    "approve" => "Approved.".to_owned(),
                    "deny" => "Denied.".to_owned(),
                    _ => "That request is no longer waiting (answered elsewhere, expired or withdrawn).".to_owned(),
                });
                let waiting = self.queue.waiting().await;
                let waiting = match &waiting {
                    Ok(w) => Ok(w.as_slice()),
                    Err(e) => {
                        tracing::warn!("console: approvals: {e}");
                        Err("The approvals store cannot be read now; this page will look again.")
                    }
                };
                self.respond(
                    StatusCode::OK,
                    page::approvals(who, waiting, notice.as_deref()),
                )
            }
            (Method::GET, "/audit") => {
                let filters = match trail::Filters::parse(req.uri().query().unwrap_or("")) {
                    Ok(f) => f,
                    Err(e) => {
                        return self.respond(StatusCode::BAD_REQUEST, page::problem(Some(who), &e));
                    }
                };
                let read = self.trail.read(&filters, PAGE_RECORDS).await;
                let chains = match &read {
                    Ok(c) => Ok(c.as_slice()),
                    Err(e) => {
                        tracing::warn!("console: audit trail: {e}");
                        Err("The audit trail cannot be read now (the server's log says why).")
                    }
                };
                self.respond(StatusCode::OK, page::audit(who, &filters, chains))
            }
            (Method::POST, "/answer" | "/logout") => {
                let fields = match form(req).await {
                    Ok(f) => f,
                    Err((s, e)) => return self.respond(s, page::problem(Some(who), &e)),
                };
                let presented = fields.get("csrf").map_or("", String::as_str);
                if !crate::auth::same(presented, &csrf) {
                    return self.respond(
                        StatusCode::FORBIDDEN,
                        page::problem(Some(who), "the form's CSRF token is missing or not this session's (reload the page)"),
                    );
                }
                if path == "/logout" {
                    self.sessions
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .retain(|_, s| s.csrf != csrf);
                    return self.redirect("/login");
                }
                self.answer(who, &fields).await
            }
            _ => self.respond(
                StatusCode::NOT_FOUND,
                page::problem(
                    Some(who),
                    "not found (the console has /, /audit and /login)",
                ),
            ),
        }
    }

    async fn login(&self, req: Request<Incoming>) -> Response<Body> {
        let fields = match form(req).await {
            Ok(f) => f,
            Err((s, e)) => return self.respond(s, page::login(Some(&e))),
        };
        let name = fields.get("name").map_or("", |n| n.trim());
        if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control)
        {
            return self.respond(
                StatusCode::BAD_REQUEST,
                page::login(Some(&format!(
                    "your name: expected 1 to {MAX_NAME} characters without control characters"
                ))),
            );
        }
        let token = fields.get("token").map_or("", String::as_str);
        if !crate::auth::same(token, &self.token) {
            tracing::warn!("console: a sign-in with a wrong token");
            tokio::time::sleep(WRONG_TOKEN_DELAY).await;
            return self.respond(
                StatusCode::UNAUTHORIZED,
                page::login(Some("that is not the console's token")),
            );
        }
        let (value, csrf) = (random(), random());
        if value.is_empty() || csrf.is_empty() {
            return self.respond(
                StatusCode::SERVICE_UNAVAILABLE,
                page::login(Some("no randomness for a session; try again")),
            );
        }
        {
            let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            if sessions.len() >= MAX_SESSIONS
                && let Some(oldest) = sessions
                    .iter()
                    .min_by_key(|(_, s)| s.until)
                    .map(|(k, _)| *k)
            {
                sessions.remove(&oldest);
            }
            sessions.insert(
                key(&value),
                Session {
                    name: name.to_owned(),
                    csrf,
                    until: Instant::now() + SESSION,
                },
            );
        }
        tracing::info!("console: {} signed in", crate::redact::escape_control(name));
        let mut r = self.redirect("/");
        let cookie = format!(
            "{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
            SESSION.as_secs()
        );
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
        r
    }

    /// Approves or denies one waiting request, for the signed-in operator.
    async fn answer(&self, who: (&str, &str), fields: &HashMap<String, String>) -> Response<Body> {
        let digest = fields.get("digest").map_or("", String::as_str);
        let approved = match fields.get("decision").map(String::as_str) {
            Some("approve") => true,
            Some("deny") => false,
            _ => {
                return self.respond(
                    StatusCode::BAD_REQUEST,
                    page::problem(Some(who), "the answer must be approve or deny"),
                );
            }
        };
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return self.respond(
                StatusCode::BAD_REQUEST,
                page::problem(Some(who), "the request's digest must be 64 hex digits"),
            );
        }
        let by = format!("{} (console)", who.0);
        match self.queue.answer_waiting(digest, approved, &by).await {
            Ok(true) => {
                tracing::info!(
                    "console: {} {} {digest}",
                    crate::redact::escape_control(who.0),
                    if approved { "approved" } else { "denied" }
                );
                self.redirect(if approved {
                    "/?answered=approve"
                } else {
                    "/?answered=deny"
                })
            }
            Ok(false) => self.redirect("/?answered=gone"),
            Err(e) => {
                tracing::warn!("console: approvals: {e}");
                self.respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    page::problem(
                        Some(who),
                        "the approvals store cannot be reached; nothing was answered, try again",
                    ),
                )
            }
        }
    }
}
