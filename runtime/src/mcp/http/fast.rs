//! `tools/call` over HTTP on a short path, as the stdio loop takes it
//! (`stdio.rs`).
//!
//! rmcp serves each session: `initialize`, `tools/list`, notifications,
//! event streams (GET), DELETE, every error, and every request not taken
//! here. A `tools/call` POST in a session rmcp holds is answered here with
//! one `application/json` response (the streamable HTTP transport lets a
//! server answer a POST with JSON rather than an event stream), through
//! the same `tools/call` path as rmcp's handler (`WardenMcp::tools_call`):
//! no session worker, no channel hops, no event-stream framing or priming
//! event, one write per answer.
//!
//! rmcp keeps the calls that need it: those whose `_meta` carries a
//! progress token (progress goes on the request's event stream), their own
//! protocol version or client (the per-request lifecycle rmcp validates);
//! those whose client answers approvals through `elicitation/create`
//! requests (only rmcp sends requests to a client); requests with SEP-2243
//! `Mcp-Method` / `Mcp-Name` / `Mcp-Param-*` headers (rmcp checks them
//! against the body), an `Accept` with parameters, or a version header that
//! is not a known version before 2026-07-28.
//!
//! A session is what its `initialize` asked (what rmcp's handler sees: the
//! requested version, the client's capabilities and name), noted when rmcp
//! answers it with a session id; a call is taken only while rmcp still holds
//! the session. Calls taken here never reach rmcp's idle timer, so the idle
//! limit of every session is kept here instead (rmcp's is turned off): a
//! session with no request and no running call for [`IDLE`] is closed, as
//! rmcp would close it.

use super::super::call::{self, Caller, Client, Link};
use super::super::{WardenMcp, stdio};
use super::Body;
use crate::auth::Authenticated;
use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode, request::Parts};
use http_body_util::{BodyExt, Full};
use rmcp::model::{
    CallToolRequestParams, CancelledNotificationParam, ClientCapabilities, Implementation,
    InitializeRequestParams, ProtocolVersion, RequestId, ServerJsonRpcMessage,
};
use rmcp::transport::streamable_http_server::session::SessionManager;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// How long a session may go without a request (rmcp's default).
pub(crate) const IDLE: Duration = Duration::from_secs(300);

/// The session header.
pub(crate) const SESSION: &str = "mcp-session-id";

/// The parts of a JSON-RPC message this path looks at; the rest stays raw.
/// (`method` may be written with escapes: whatever rmcp parses, this does.)
#[derive(Deserialize)]
pub(crate) struct Message<'a> {
    #[serde(borrow)]
    pub(crate) method: Option<Cow<'a, str>>,
    pub(crate) id: Option<RequestId>,
    #[serde(borrow)]
    pub(crate) params: Option<&'a RawValue>,
}

/// The sessions rmcp holds, as this path needs them.
pub(crate) struct Sessions {
    manager: Arc<LocalSessionManager>,
    map: Mutex<HashMap<Arc<str>, Arc<Session>>>,
    started: Instant,
    /// Parent of every session's `closed`: the server is stopping.
    stopping: CancellationToken,
}

/// What a session's `initialize` asked, and its calls running here.
struct Session {
    id: Arc<str>,
    /// Who opened it (as records name the agent; `None`: nobody
    /// authenticated): only they may use it.
    owner: Option<Arc<str>>,
    version: ProtocolVersion,
    capabilities: ClientCapabilities,
    client: Implementation,
    /// When the session was last used, in seconds after `Sessions::started`.
    used: AtomicU64,
    /// The calls running here, by request id (for `notifications/cancelled`).
    running: Mutex<HashMap<RequestId, CancellationToken>>,
    /// Cancelled when the session ends: its calls stop.
    closed: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sessions {
    /// Sessions of `manager`; `stopping` ends their calls.
    pub(crate) fn new(manager: Arc<LocalSessionManager>, stopping: CancellationToken) -> Sessions {
        Sessions {
            manager,
            map: Mutex::default(),
            started: Instant::now(),
            stopping,
        }
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Notes the session rmcp opened, with the id `id`, in answer to an
    /// `initialize` that asked `params`.
    pub(crate) fn opened(
        &self,
        id: &str,
        params: InitializeRequestParams,
        owner: Option<Arc<str>>,
    ) {
        let id: Arc<str> = id.into();
        let session = Session {
            id: id.clone(),
            owner,
            version: params.protocol_version,
            capabilities: params.capabilities,
            client: params.client_info,
            used: AtomicU64::new(self.now()),
            running: Mutex::default(),
            closed: self.stopping.child_token(),
        };
        lock(&self.map).insert(id, Arc::new(session));
    }

    /// Forgets the session `id` and stops its calls.
    pub(crate) fn closed(&self, id: &str) {
        if let Some(s) = lock(&self.map).remove(id) {
            s.closed.cancel();
        }
    }

    /// Whether a request names a session someone other than `who` opened
    /// (it is answered as if there were no such session).
    pub(crate) fn foreign(&self, headers: &HeaderMap, who: Option<&Arc<str>>) -> bool {
        let Some(id) = headers.get(SESSION).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        lock(&self.map)
            .get(id)
            .is_some_and(|s| s.owner.as_ref() != who)
    }

    /// The session a request names, noting that it was used.
    fn get(&self, headers: &HeaderMap) -> Option<Arc<Session>> {
        let id = headers.get(SESSION)?.to_str().ok()?;
        let session = lock(&self.map).get(id).cloned()?;
        session.used.store(self.now(), Ordering::Relaxed);
        Some(session)
    }

    /// Whether rmcp holds the session `id` (it is not unknown or ended).
    pub(crate) async fn known(&self, id: &str) -> bool {
        self.manager
            .has_session(&Arc::from(id))
            .await
            .unwrap_or(false)
    }

    /// Notes a use of the session a request names, if any.
    pub(crate) fn touch(&self, headers: &HeaderMap) {
        let _ = self.get(headers);
    }

    /// Answers a POST of `message` itself when it is a call this path
    /// takes; `None` hands it to rmcp. A cancellation of a call running
    /// here cancels it (and goes on to rmcp, which answers it).
    pub(crate) async fn post(
        &self,
        mcp: &WardenMcp,
        parts: &Parts,
        message: &Message<'_>,
    ) -> Option<Response<Body>> {
        let session = self.get(&parts.headers)?;
        let id = match (message.method.as_deref()?, &message.id) {
            ("tools/call", Some(id)) => id.clone(),
            ("notifications/cancelled", None) => {
                let cancelled = message
                    .params
                    .and_then(|p| serde_json::from_str::<CancelledNotificationParam>(p.get()).ok())
                    .and_then(|p| p.request_id);
                if let Some(cancel) = cancelled.and_then(|id| lock(&session.running).remove(&id)) {
                    cancel.cancel();
                }
                return None;
            }
            _ => return None,
        };
        if !plain(&parts.headers) || call::current(Some(&session.version)) {
            return None;
        }
        let request: CallToolRequestParams =
            serde_json::from_str(message.params.map_or("null", |p| p.get())).ok()?;
        let meta = request.meta.as_ref();
        if meta.is_some_and(|m| {
            m.get_progress_token().is_some()
                || m.protocol_version().is_some()
                || m.client_capabilities().is_some()
                || m.client_info().is_some()
        }) {
            return None;
        }
        if !self.manager.has_session(&session.id).await.unwrap_or(false) {
            return None;
        }
        let grant = mcp
            .grant_for(parts.extensions.get::<Authenticated>())
            .ok()??;
        let client = Client {
            version: Some(&session.version),
            capabilities: Some(&session.capabilities),
            info: Some(&session.client),
        };
        // Without a progress token nothing is sent on the link; one that
        // cannot send requests has `Caller::new` leave a client that
        // answers approvals through `elicitation/create` to rmcp.
        let link = Link::Stdio(stdio::Out::new(tokio::io::sink()));
        let caller = Caller::new(grant, client, meta, link, session.closed.child_token())?;
        let cancel = caller.cancelled().clone();
        lock(&session.running).insert(id.clone(), cancel.clone());
        // The call runs in a task of its own, so a client that goes away
        // cancels it (below) rather than dropping it half-way.
        let (tx, rx) = oneshot::channel();
        let mcp = mcp.clone();
        tokio::spawn(async move {
            let response = mcp.tools_call(caller, request).await;
            lock(&session.running).remove(&id);
            let answer = match response.and_then(|r| call::shape(r, true)) {
                Ok(result) => ServerJsonRpcMessage::response(result, id),
                Err(e) => ServerJsonRpcMessage::error(e, Some(id)),
            };
            let answer = serde_json::to_vec(&answer).map(Bytes::from);
            // A client gone by now has nobody to read it.
            let _ = tx.send(answer);
        });
        let gone = cancel.drop_guard();
        let answer = rx.await;
        gone.disarm();
        Some(match answer {
            Ok(Ok(body)) => json(StatusCode::OK, body),
            Ok(Err(e)) => {
                tracing::error!("MCP over HTTP: cannot encode an answer: {e}");
                super::plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cannot encode the answer",
                )
            }
            Err(_) => super::plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "host error: the call's task failed",
            ),
        })
    }

    /// Closes the sessions idle for [`IDLE`] and forgets those rmcp no
    /// longer holds, every `every`, until the server stops.
    pub(crate) async fn sweep(&self, every: Duration) {
        let mut ticks = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = self.stopping.cancelled() => return,
            }
            let now = self.now();
            let sessions: Vec<Arc<Session>> = lock(&self.map).values().cloned().collect();
            for s in sessions {
                let idle = now.saturating_sub(s.used.load(Ordering::Relaxed)) >= IDLE.as_secs()
                    && lock(&s.running).is_empty();
                if idle {
                    tracing::debug!("MCP over HTTP: closing session {} (idle)", s.id);
                    let _ = self.manager.close_session(&s.id).await;
                }
                if idle || !self.manager.has_session(&s.id).await.unwrap_or(false) {
                    self.closed(&s.id);
                }
            }
        }
    }
}

/// Whether a request's headers leave nothing for rmcp to check or decide:
/// a plain `Accept` naming both answers a POST may get, a JSON body, a
/// version header (if any) that is a known version before 2026-07-28, and
/// no SEP-2243 standard headers.
fn plain(headers: &HeaderMap) -> bool {
    let (mut json, mut sse) = (false, false);
    for value in headers.get_all(http::header::ACCEPT) {
        let Ok(value) = value.to_str() else {
            return false;
        };
        for entry in value.split(',') {
            let entry = entry.trim();
            if entry.contains(';') {
                return false;
            }
            json |= entry.eq_ignore_ascii_case("application/json");
            sse |= entry.eq_ignore_ascii_case("text/event-stream");
        }
    }
    let content_json = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    let version_ok = match headers.get("mcp-protocol-version") {
        None => true,
        Some(v) => v.to_str().ok().is_some_and(|v| {
            ProtocolVersion::KNOWN_VERSIONS
                .iter()
                .any(|k| k.as_str() == v && *k < ProtocolVersion::V_2026_07_28)
        }),
    };
    let standard = headers.keys().any(|k| {
        let k = k.as_str();
        k == "mcp-method" || k == "mcp-name" || k.starts_with("mcp-param-")
    });
    json && sse && content_json && version_ok && !standard
}

fn json(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(body).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    const BASE: [(&str, &str); 2] = [
        ("accept", "application/json, text/event-stream"),
        ("content-type", "application/json"),
    ];

    #[test]
    fn only_plain_requests_of_sessions_before_2026_07_28_are_taken() {
        assert!(plain(&headers(&BASE)));
        let with = |extra: (&'static str, &'static str)| {
            let mut pairs = BASE.to_vec();
            pairs.push(extra);
            plain(&headers(&pairs))
        };
        assert!(with(("mcp-protocol-version", "2025-06-18")));
        assert!(!with(("mcp-protocol-version", "2026-07-28")));
        assert!(!with(("mcp-protocol-version", "1999-01-01")));
        assert!(!with(("mcp-method", "tools/call")));
        assert!(!with(("mcp-param-message", "x")));
        assert!(!plain(&headers(&[("accept", "application/json"), BASE[1]])));
        assert!(!plain(&headers(&[
            ("accept", "application/json, text/event-stream;q=0"),
            BASE[1]
        ])));
        assert!(!plain(&headers(&[BASE[0], ("content-type", "text/plain")])));
    }
}
