//! Streamable HTTP for the MCP server: loopback by default, bearer tokens
//! when configured, `Host` and `Origin` checked (DNS-rebinding protection),
//! request bodies capped, graceful shutdown that lets running calls finish.
//!
//! Every request passes the same checks here, in one order: the path, the
//! bearer token (`crate::auth` decides who the caller is; its protected
//! resource metadata, RFC 9728, is served unauthenticated), `Host` and
//! `Origin` (`host.rs`), the body's size. Then a
//! `tools/call` in a session, or without one on the 2026-07-28 protocol
//! (`inline.rs` says which), is answered on a short path (`fast.rs`) and
//! everything else by rmcp's streamable HTTP service. Accepted connections
//! set `TCP_NODELAY`: an answer written in more than one piece (headers and
//! a priming event, then the message) must not wait for the client's
//! delayed ACK (~40 ms a call with common clients).

mod answer;
mod approvals;
pub(crate) mod conns;
mod fast;
pub(crate) mod host;
mod inline;
mod tokens;

pub use approvals::serve_approvals;
pub use tokens::{INTROSPECT_PATH, JWKS_PATH};

use super::WardenMcp;
use crate::auth::{Authenticator, Refusal};
use crate::redact::escape_control;
use answer::Posted;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The path the MCP endpoint is served at.
pub const PATH: &str = "/mcp";

/// Where the protected resource metadata (RFC 9728) is served: this, or
/// this followed by the resource's path (`/mcp`).
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// HTTP settings.
#[derive(Clone)]
pub struct HttpOptions {
    /// Who may call, and under which grant; the default lets anyone call
    /// (loopback only is then the protection).
    pub auth: Arc<Authenticator>,
    /// Largest request body accepted.
    pub max_request: usize,
    /// Extra `Host` names to accept besides loopback (e.g. behind a proxy).
    pub allowed_hosts: Vec<String>,
    /// How long shutdown waits for running calls.
    pub drain: Duration,
    /// The bearer token of `POST /introspect`'s callers (downstream
    /// services checking a tool's identity token); introspection is off
    /// without one.
    pub introspection: Option<Arc<zeroize::Zeroizing<String>>>,
    /// Connections open at once; more are closed as they come (fewer when
    /// the process's open-file limit leaves no room for that many).
    pub max_connections: usize,
    /// How long a client may take to send a request's head, and its body:
    /// a connection that sends no complete head within it is closed (a
    /// kept-alive one too, that long after its last answer), a body that
    /// has not arrived is answered 408. At most an hour; longer is taken
    /// as an hour.
    pub read_timeout: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            auth: Arc::new(Authenticator::new(Vec::new())),
            max_request: 4 << 20,
            allowed_hosts: Vec::new(),
            drain: Duration::from_secs(30),
            introspection: None,
            max_connections: 4096,
            read_timeout: Duration::from_secs(30),
        }
    }
}

pub(crate) use host::bearer;

type Body = BoxBody<Bytes, Infallible>;

fn json(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn plain(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": { "code": -32600, "message": message },
    });
    let mut r = json(status, &body);
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
    }
    r
}

/// Why a request's bearer token is refused: none, or one this server does
/// not know (compared in constant time); `None` when it is accepted.
fn refused_token(headers: &HeaderMap, token: &str) -> Option<&'static str> {
    match bearer(headers) {
        None => Some("a bearer token is required (Authorization: Bearer TOKEN)"),
        Some(t) if crate::auth::same(token, t) => None,
        Some(_) => Some("the bearer token is not one this server accepts"),
    }
}

/// 401, with the challenge RFC 6750 gives: `invalid_token` when a token
/// came and was refused.
fn unauthorized(why: &'static str, presented: bool) -> Response<Body> {
    let mut r = plain(StatusCode::UNAUTHORIZED, why);
    if presented {
        r.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
    }
    r
}

/// A refused caller's answer: 401 (or 403) with the challenge the MCP
/// authorization specification gives — the error code (RFC 6750), the
/// scopes, and where this resource's metadata is (RFC 9728).
fn refused(r: &Refusal, auth: &Authenticator) -> Response<Body> {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::UNAUTHORIZED);
    let reason = escape_control(&crate::policy::gate::cut(&r.reason, 300)).into_owned();
    let mut response = plain(status, &reason);
    let mut challenge = vec!["Bearer".to_owned()];
    let mut params = Vec::new();
    if let Some(e) = r.error {
        params.push(format!("error=\"{e}\""));
    }
    if let Some(url) = auth.resource().and_then(metadata_url) {
        params.push(format!("resource_metadata=\"{url}\""));
    }
    let scopes = auth.scopes();
    if !scopes.is_empty()
        && scopes.chars().all(|c| c.is_ascii_graphic() || c == ' ')
        && !scopes.contains('"')
    {
        params.push(format!("scope=\"{scopes}\""));
    }
    challenge.push(params.join(", "));
    if let Ok(v) = http::HeaderValue::from_str(challenge.join(" ").trim()) {
        response
            .headers_mut()
            .insert(http::header::WWW_AUTHENTICATE, v);
    }
    response
}

/// Where the metadata of `resource` is: its origin, the well-known path,
/// then its path (RFC 9728, section 3.1).
fn metadata_url(resource: &str) -> Option<String> {
    let u = url::Url::parse(resource).ok()?;
    let path = u.path().trim_end_matches('/');
    Some(format!(
        "{}{METADATA_PATH}{path}",
        u.origin().ascii_serialization()
    ))
}

/// The next connection, or `None` once `shutdown` is cancelled. A failed
/// accept (out of file descriptors, say) waits 100 ms before the next: it
/// would fail again at once, and spin and flood the log.
pub(crate) async fn next_connection(
    listener: &TcpListener,
    shutdown: &CancellationToken,
    what: &str,
) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => return Some(a),
                Err(e) => {
                    tracing::warn!("{what}: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = shutdown.cancelled() => return None,
        }
    }
}

/// Serves `mcp` at `http://ADDR/mcp` on an already bound listener until
/// `shutdown` is cancelled; then stops accepting and waits (up to
/// `options.drain`) for running calls to finish.
pub async fn serve(
    listener: TcpListener,
    mcp: WardenMcp,
    options: HttpOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let port = listener.local_addr()?.port();
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1", "[::1]"]
        .iter()
        .flat_map(|h| [h.to_string(), format!("{h}:{port}")])
        .collect();
    hosts.extend(options.allowed_hosts.iter().cloned());
    let origins = [
        format!("http://localhost:{port}"),
        format!("http://127.0.0.1:{port}"),
        format!("http://[::1]:{port}"),
    ];
    let allowed = host::Allowed::new(&hosts, &origins);
    let sessions = CancellationToken::new();
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts)
        .with_allowed_origins(origins)
        .with_max_request_body_bytes(options.max_request)
        .with_cancellation_token(sessions.clone());
    // Idle sessions are closed by `fast::Sessions::sweep`, which sees the
    // calls rmcp does not.
    let mut manager = LocalSessionManager::default();
    manager.session_config.keep_alive = None;
    let manager = Arc::new(manager);
    let factory = mcp.clone();
    let service = StreamableHttpService::new(move || Ok(factory.clone()), manager.clone(), config);
    let shared = Arc::new(Endpoint {
        service,
        sessions: Arc::new(fast::Sessions::new(manager, sessions.clone())),
        allowed,
        mcp: mcp.clone(),
        options,
    });
    let sweeper = shared.clone();
    tokio::spawn(async move { sweeper.sessions.sweep(Duration::from_secs(30)).await });
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let admission = conns::Admission::new("MCP", shared.options.max_connections);
    let read_timeout = shared.options.read_timeout;
    while let Some((stream, peer)) = next_connection(&listener, &shutdown, "MCP").await {
        let Some(place) = admission.admit(peer) else {
            continue;
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("connection from {peer}: cannot set TCP_NODELAY: {e}");
        }
        let shared = shared.clone();
        let handler = hyper::service::service_fn(move |req: Request<Incoming>| {
            let shared = shared.clone();
            async move { Ok::<_, Infallible>(shared.handle(req, peer).await) }
        });
        let conn =
            conns::http1(read_timeout).serve_connection(conns::io(stream, read_timeout), handler);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection from {peer}: {e}");
            }
            drop(place);
        });
    }
    drop(listener);
    tracing::info!("shutting down: waiting for running calls");
    if tokio::time::timeout(shared.options.drain, mcp.idle())
        .await
        .is_err()
    {
        tracing::warn!(
            "calls still running after {:?}; stopping",
            shared.options.drain
        );
    }
    // Calls are done: let connections finish sending their last responses
    // (a client's standing event stream never finishes, hence the bound),
    // then close the sessions.
    let _ = tokio::time::timeout(Duration::from_secs(2), graceful.shutdown()).await;
    sessions.cancel();
    Ok(())
}

/// Liveness: the process answers.
pub const HEALTH_PATH: &str = "/healthz";
/// Readiness: calls can run (the audit trail can be written).
pub const READY_PATH: &str = "/readyz";

/// What every request of one server needs.
struct Endpoint {
    service: StreamableHttpService<WardenMcp, LocalSessionManager>,
    sessions: Arc<fast::Sessions>,
    allowed: host::Allowed,
    mcp: WardenMcp,
    options: HttpOptions,
}

impl Endpoint {
    /// The probes a load balancer or Kubernetes asks, without a token:
    /// `GET /healthz` (200 while the server runs) and `GET /readyz` (503
    /// while the audit trail cannot be written; why is logged, not told).
    fn probe(&self, req: &Request<Incoming>) -> Option<Response<Body>> {
        let path = req.uri().path();
        if path != HEALTH_PATH && path != READY_PATH {
            return None;
        }
        if req.method() != http::Method::GET {
            return Some(plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed (probes are GET)",
            ));
        }
        if path == HEALTH_PATH {
            return Some(json(StatusCode::OK, &serde_json::json!({"status": "ok"})));
        }
        Some(match self.mcp.ready() {
            Ok(()) => json(StatusCode::OK, &serde_json::json!({"status": "ready"})),
            Err(why) => {
                tracing::warn!("not ready: {why}");
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &serde_json::json!({"status": "unavailable", "reason": "the audit trail cannot be written"}),
                )
            }
        })
    }

    async fn handle(
        self: &Arc<Self>,
        mut req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let path = req.uri().path();
        // At the well-known path, followed by `/mcp` or by the configured
        // resource's own path (where the challenge says it is).
        if let Some(suffix) = path.strip_prefix(METADATA_PATH)
            && (suffix.is_empty()
                || suffix == PATH
                || self.options.auth.resource_path() == Some(suffix))
        {
            return self.metadata(&req);
        }
        if let Some(probe) = self.probe(&req) {
            return probe;
        }
        if path == tokens::JWKS_PATH || path == tokens::INTROSPECT_PATH {
            if let Err((status, why)) = self.allowed.check(req.uri(), req.headers()) {
                tracing::warn!("refused a request from {peer}: {why}");
                return plain(status, why);
            }
            let runtime = &self.mcp.shared.runtime;
            if path == tokens::JWKS_PATH {
                return tokens::jwks(&req, runtime);
            }
            let token = self.options.introspection.as_deref().map(|t| t.as_str());
            return Box::pin(tokens::introspect(req, runtime, token, peer)).await;
        }
        if path != PATH {
            return plain(
                StatusCode::NOT_FOUND,
                "not found (the MCP endpoint is /mcp; also /.well-known/jwks.json, /introspect, /healthz, /readyz)",
            );
        }
        // Host and Origin first: a page a rebound name loaded gets nothing
        // else from this server, not even which tokens it refuses and why.
        // Logged below the default level: anyone may send these.
        if let Err((status, why)) = self.allowed.check(req.uri(), req.headers()) {
            tracing::info!("refused a request from {peer}: {why}");
            return plain(status, why);
        }
        let options = &self.options;
        // Boxed, as every step before a call runs is: the future of a
        // request is as large as its largest step, and each call in flight
        // holds one (the `mcp` bench's 1,000).
        match Box::pin(options.auth.authenticate(bearer(req.headers()))).await {
            Ok(who) => {
                // A session belongs to whoever opened it: another caller
                // (even one with a good token) cannot use, cancel or end it.
                if self.sessions.foreign(req.headers(), who.who()) {
                    tracing::info!(
                        "refused a request from {peer}: a session another caller opened"
                    );
                    return plain(
                        StatusCode::NOT_FOUND,
                        "no such session (unknown, or already terminated)",
                    );
                }
                req.extensions_mut().insert(who);
            }
            Err(r) => {
                tracing::info!(
                    "refused a request from {peer} ({}): {}",
                    r.status,
                    escape_control(&crate::policy::gate::cut(&r.reason, 300))
                );
                return refused(&r, &options.auth);
            }
        }
        let declared = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > options.max_request) {
            return too_large(options.max_request);
        }
        self.sessions.touch(req.headers());
        match *req.method() {
            http::Method::POST => match Box::pin(self.post(req)).await {
                Posted::Answered(response) => response,
                Posted::Running(call) => call.response().await,
            },
            http::Method::DELETE => {
                let id = req.headers().get(fast::SESSION).cloned();
                // An unknown or already terminated session: 404, as the
                // transport specifies (rmcp answers 202 for any).
                if let Some(id) = &id
                    && !self.sessions.known(id.to_str().unwrap_or("")).await
                {
                    return plain(
                        StatusCode::NOT_FOUND,
                        "no such session (unknown, or already terminated)",
                    );
                }
                let response = self.rmcp(req).await;
                if let Some(id) = id.as_ref().and_then(|v| v.to_str().ok())
                    && response.status().is_success()
                {
                    self.sessions.closed(id);
                }
                response
            }
            _ => self.rmcp(req).await,
        }
    }

    /// The protected resource metadata (RFC 9728), to anyone (it holds
    /// nothing secret); 404 when no agents file is configured.
    fn metadata(&self, req: &Request<Incoming>) -> Response<Body> {
        if let Err((status, why)) = self.allowed.check(req.uri(), req.headers()) {
            return plain(status, why);
        }
        match self.options.auth.metadata() {
            Some(doc) if req.method() == http::Method::GET => json(StatusCode::OK, &doc),
            Some(_) => plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "the metadata is read with GET",
            ),
            None => plain(
                StatusCode::NOT_FOUND,
                "no protected resource metadata (this server verifies no agent tokens)",
            ),
        }
    }

    /// rmcp's answer to `req`. Its future is boxed: inline, it would size
    /// the future of every request, calls on the short path too.
    async fn rmcp<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body + Send + 'static,
        B::Error: std::fmt::Display,
    {
        Box::pin(self.service.handle(req)).await
    }

    /// A POST: a call the short path takes, or rmcp's, with the body read
    /// (within the cap) once.
    async fn post(self: &Arc<Self>, req: Request<Incoming>) -> Posted {
        // rmcp reads a session id that is not text as none and opens a new
        // session, which the sweep would never see: refused here.
        if req
            .headers()
            .get(fast::SESSION)
            .is_some_and(|v| v.to_str().is_err())
        {
            return Posted::Answered(plain(
                StatusCode::BAD_REQUEST,
                "Mcp-Session-Id must be visible ASCII (the id the server gave at initialize)",
            ));
        }
        let (parts, body) = req.into_parts();
        let owner = parts
            .extensions
            .get::<crate::auth::Authenticated>()
            .and_then(|a| a.who().cloned());
        let read = conns::read_body(body, self.options.max_request);
        let Ok(read) = tokio::time::timeout(self.options.read_timeout, read).await else {
            return Posted::Answered(plain(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "the request body did not arrive within {}s",
                    self.options.read_timeout.as_secs_f64()
                ),
            ));
        };
        let body = match read {
            Ok(b) => b,
            Err(conns::BodyError::TooLarge) => {
                return Posted::Answered(too_large(self.options.max_request));
            }
            Err(conns::BodyError::Failed(e)) => {
                tracing::debug!("cannot read a request body: {e}");
                return Posted::Answered(plain(
                    StatusCode::BAD_REQUEST,
                    "cannot read the request body",
                ));
            }
        };
        // Only a body in UTF-8 is this path's (JSON skips what it ignores
        // unchecked), and only an object; rmcp refuses anything else.
        let message = std::str::from_utf8(&body)
            .ok()
            .filter(|_| super::an_object(&body))
            .and_then(|_| serde_json::from_slice::<fast::Message>(&body).ok());
        let new_session = !parts.headers.contains_key(fast::SESSION);
        let mut _reserved = None; // until the session is open and noted, or the request ends
        if let Some(m) = &message
            && m.method.as_deref() == Some("initialize")
        {
            match self
                .sessions
                .admit_initialize(body.len(), new_session, owner.as_ref())
            {
                Ok(reserved) => _reserved = reserved,
                Err(refused) => return Posted::Answered(*refused),
            }
        }
        let mut initialize = None;
        let taken = match &message {
            Some(m) if !new_session => self.sessions.post(&self.mcp, &parts, m).await,
            Some(m) if m.method.as_deref() == Some("initialize") => {
                initialize = m.params.and_then(|p| {
                    serde_json::from_str::<rmcp::model::InitializeRequestParams>(p.get()).ok()
                });
                None
            }
            Some(m) => self.sessions.stateless(&self.mcp, &parts, m).map(Ok),
            None => None,
        };
        if let Some(taken) = taken {
            let running = match taken {
                Ok(taken) => taken.start(&self.mcp),
                Err(refused) => refused,
            };
            // Its headers and body share hyper's read buffer: freed before
            // the call runs, not held for as long as it does.
            drop(message);
            drop((body, parts));
            return Posted::Running(running);
        }
        let handed = match self.sessions.hand(&parts, message.as_ref(), new_session) {
            Ok(handed) => handed,
            Err(refused) => return Posted::Running(refused),
        };
        let request = Request::from_parts(parts, Full::new(body));
        let Some(params) = initialize else {
            let answer = fast::handed::Answer::of(self.rmcp(request).await, handed);
            return Posted::Answered(answer);
        };
        // A new session, opened by rmcp and noted here in a task a client
        // leaving cannot cancel between the two (else a session unnoted).
        let this = self.clone();
        let opening = tokio::spawn(async move {
            let response = this.rmcp(request).await;
            let opened = response
                .headers()
                .get(fast::SESSION)
                .and_then(|v| v.to_str().ok());
            if let (Some(id), true) = (opened, response.status().is_success()) {
                this.sessions.opened(id, params, &this.mcp, owner);
            }
            drop(_reserved);
            response
        });
        Posted::Answered(opening.await.unwrap_or_else(|e| {
            tracing::warn!("opening a session failed: {e}");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot open a session")
        }))
    }
}

fn too_large(max: usize) -> Response<Body> {
    plain(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("request body larger than the limit of {max} bytes"),
    )
}
