//! `tools/call` over HTTP on a short path, as the stdio loop takes it
//! (`stdio.rs`).
//!
//! rmcp serves each session: `initialize`, `tools/list`, notifications,
//! event streams (GET), DELETE, every error, and every request not taken
//! here. A `tools/call` POST without a session on the 2026-07-28 protocol
//! is taken as `inline.rs` says ([`Sessions::stateless`]). A `tools/call`
//! POST in a session rmcp holds is answered here with
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
//! A session is what its `initialize` settled (what rmcp's handler sees: the
//! negotiated version, the client's capabilities and name), noted when rmcp
//! answers it with a session id; a call is taken only while rmcp still holds
//! the session. Calls taken here never reach rmcp's idle timer, so the idle
//! limit of every session is kept here instead (rmcp's is turned off): a
//! session with no request and no running call for [`IDLE`] is closed, as
//! rmcp would close it.

#[path = "fast_admit.rs"]
mod admit;
#[path = "fast_handed.rs"]
pub(crate) mod handed;
#[path = "fast_sweep.rs"]
mod sweep;

use super::super::WardenMcp;
use super::super::call::{self, Caller, Client};
use super::answer;
use crate::auth::Authenticated;
use http::{HeaderMap, request::Parts};
use rmcp::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CancelledNotificationParam, ClientCapabilities, Implementation,
    InitializeRequestParams, ProtocolVersion, RequestId,
};
use rmcp::transport::streamable_http_server::session::SessionManager;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long a session may go without a request (rmcp's default).
pub(crate) const IDLE: Duration = Duration::from_secs(300);

/// The session header.
pub(crate) const SESSION: &str = "mcp-session-id";

/// Sessions a server keeps open at once. Each holds what its client said
/// at `initialize` (within [`MAX_INITIALIZE`]) until it closes or goes
/// idle for [`IDLE`]; unbounded, a client could open them until memory ran
/// out.
pub(crate) const MAX_SESSIONS: usize = 4096;

/// Sessions one authenticated agent keeps open at once: one agent cannot
/// take every place of [`MAX_SESSIONS`] and turn the others away.
/// Unauthenticated clients share the server's places.
pub(crate) const MAX_SESSIONS_PER_AGENT: usize = 256;

/// The largest `initialize` request: what a session keeps of it is its
/// client's capabilities and name (a few hundred bytes from real clients).
pub(crate) const MAX_INITIALIZE: usize = 64 << 10;

/// The parts of a JSON-RPC message this path looks at; the rest stays raw.
/// (`method` may be written with escapes: whatever rmcp parses, this does.)
#[derive(Deserialize)]
pub(crate) struct Message<'a> {
    #[serde(borrow)]
    jsonrpc: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) method: Option<Cow<'a, str>>,
    pub(crate) id: Option<RequestId>,
    #[serde(borrow)]
    pub(crate) params: Option<&'a RawValue>,
    /// Whether it has a `result` or an `error` (even `null`): rmcp reads
    /// a message's kind from its keys, and refuses a request that has one.
    #[serde(default, deserialize_with = "crate::mcp::present")]
    result: bool,
    #[serde(default, deserialize_with = "crate::mcp::present")]
    error: bool,
}

impl Message<'_> {
    /// Whether it is a JSON-RPC 2.0 request or notification as rmcp reads
    /// one: no `result` or `error` beside its `method`.
    pub(crate) fn plain(&self) -> bool {
        self.jsonrpc.as_deref() == Some("2.0") && !self.result && !self.error
    }
}

/// The sessions rmcp holds, as this path needs them.
pub(crate) struct Sessions {
    manager: Arc<LocalSessionManager>,
    map: Mutex<HashMap<Arc<str>, Arc<Session>>>,
    /// The owners of sessions being opened (`admit::Reserved`).
    pending: Mutex<Vec<Option<Arc<str>>>>,
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
    /// The version its handshake settled on (`None`: none, and rmcp takes
    /// its calls).
    version: Option<ProtocolVersion>,
    /// Set by a further `initialize` in the session, which rmcp answers and
    /// which may change what its handler sees: rmcp takes its calls.
    again: AtomicBool,
    capabilities: ClientCapabilities,
    client: Implementation,
    /// When the session was last used, in seconds after `Sessions::started`.
    used: AtomicU64,
    /// The calls running here, by request id (for `notifications/cancelled`).
    running: Mutex<HashMap<RequestId, CancellationToken>>,
    /// The ids of its requests rmcp is answering, each with the mark of
    /// its reservation (`handed.rs`).
    handed: Mutex<HashMap<RequestId, handed::Mark>>,
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
            pending: Mutex::default(),
            started: Instant::now(),
            stopping,
        }
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Notes the session rmcp opened, with the id `id`, in answer to an
    /// `initialize` that asked `params` of `mcp`.
    pub(crate) fn opened(
        &self,
        id: &str,
        params: InitializeRequestParams,
        mcp: &WardenMcp,
        owner: Option<Arc<str>>,
    ) {
        let id: Arc<str> = id.into();
        let version = negotiated(
            &params.protocol_version,
            mcp.get_info().protocol_version,
            &mcp.supported_protocol_versions(),
        );
        let session = Session {
            id: id.clone(),
            owner,
            version,
            again: AtomicBool::new(false),
            capabilities: params.capabilities,
            client: params.client_info,
            used: AtomicU64::new(self.now()),
            running: Mutex::default(),
            handed: Mutex::default(),
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

    /// Takes a POST of `message` when it is a call this path answers;
    /// `None` hands it to rmcp. A cancellation of a call running here
    /// cancels it (and goes on to rmcp, which answers it). A call under the
    /// id of one running here is refused (`Err`), whichever would run it.
    pub(crate) async fn post(
        &self,
        mcp: &WardenMcp,
        parts: &Parts,
        message: &Message<'_>,
    ) -> Option<Result<Taken, answer::Answering>> {
        let session = self.get(&parts.headers)?;
        if !message.plain() {
            return None;
        }
        let id = match (message.method.as_deref()?, &message.id) {
            ("tools/call", Some(id)) => id.clone(),
            ("initialize", _) => {
                session.again.store(true, Ordering::Relaxed);
                return None;
            }
            ("notifications/cancelled", None) => {
                let params = crate::mcp::params_of(message.params);
                let cancelled = serde_json::from_str::<CancelledNotificationParam>(params)
                    .ok()
                    .and_then(|p| p.request_id);
                // The entry stays until the call ends: its id is in use
                // until then (the call's own end removes it).
                let cancel = cancelled.and_then(|id| lock(&session.running).get(&id).cloned());
                if let Some(cancel) = cancel {
                    cancel.cancel();
                }
                return None;
            }
            _ => return None,
        };
        if let Some(e) = handed::refusal(&session, &id) {
            return Some(Err(answer::refused(e, id, true)));
        }
        let version = session.version.as_ref()?;
        if !plain(&parts.headers)
            || call::current(Some(version))
            || session.again.load(Ordering::Relaxed)
        {
            return None;
        }
        let request: CallToolRequestParams =
            serde_json::from_str(crate::mcp::params_of(message.params)).ok()?;
        let meta = request.meta.as_ref();
        if meta.is_some_and(|m| {
            m.protocol_version().is_some()
                || m.client_capabilities().is_some()
                || m.client_info().is_some()
        }) {
            return None;
        }
        if !self.manager.has_session(&session.id).await.unwrap_or(false) {
            return None;
        }
        let client = Client {
            version: Some(version),
            capabilities: Some(&session.capabilities),
            info: Some(&session.client),
        };
        let (caller, notes) = caller(mcp, parts, client, meta, session.closed.child_token())?;
        Some(Ok(Taken {
            caller,
            request,
            id,
            legacy: true,
            notes,
            session: Some(session),
        }))
    }

    /// Takes a POST of `message` without a session when it is a call on
    /// the 2026-07-28 protocol this path answers (`inline.rs`); `None`
    /// hands it to rmcp.
    pub(crate) fn stateless(
        &self,
        mcp: &WardenMcp,
        parts: &Parts,
        message: &Message<'_>,
    ) -> Option<Taken> {
        let call = super::inline::take(mcp, parts, message)?;
        let client = Client {
            version: Some(&call.version),
            capabilities: Some(&call.capabilities),
            info: Some(&call.info),
        };
        let meta = call.request.meta.as_ref();
        let (caller, notes) = caller(mcp, parts, client, meta, self.stopping.child_token())?;
        Some(Taken {
            caller,
            request: call.request,
            id: call.id,
            legacy: false,
            notes,
            session: None,
        })
    }
}

/// A call this path took: all that answering it needs, owned, so that the
/// request it came in (whose headers and body share hyper's read buffer,
/// 8 KiB) is freed while it runs.
pub(crate) struct Taken {
    caller: Caller,
    request: CallToolRequestParams,
    id: RequestId,
    /// In the shape of a version before 2026-07-28.
    legacy: bool,
    notes: Option<answer::Notes>,
    /// The session it runs in, which notes it running until it ends.
    session: Option<Arc<Session>>,
}

impl Taken {
    /// Starts the call on a task of its own; what waits for its answer.
    /// Its session notes it running from here until it ends (both here, so
    /// that no entry is left behind).
    pub(crate) fn start(self, mcp: &WardenMcp) -> answer::Answering {
        let Taken {
            caller,
            request,
            id,
            legacy,
            notes,
            session,
        } = self;
        if let Some(session) = &session {
            // Under the ids rmcp answers too, taken in the order `hand`
            // takes them: one id cannot pass both at once.
            let handed = lock(&session.handed);
            match lock(&session.running).entry(id.clone()) {
                Entry::Occupied(_) => return answer::refused(call::id_in_use(), id, legacy),
                Entry::Vacant(_) if handed.contains_key(&id) => {
                    return answer::refused(call::id_in_use(), id, legacy);
                }
                Entry::Vacant(v) => v.insert(caller.cancelled().clone()),
            };
        }
        let ended = id.clone();
        let done = move || {
            if let Some(session) = session {
                lock(&session.running).remove(&ended);
            }
        };
        answer::answer(mcp, caller, request, id, legacy, notes, done)
    }
}

/// The caller of a call taken here from `client`, under the grant of whoever
/// sent `parts`, and where its progress goes; `None` leaves the call to
/// rmcp: no grant (rmcp answers why), or a client that answers approvals
/// through `elicitation/create` requests, which only rmcp sends.
fn caller(
    mcp: &WardenMcp,
    parts: &Parts,
    client: Client<'_>,
    meta: Option<&rmcp::model::RequestMetaObject>,
    cancelled: CancellationToken,
) -> Option<(Caller, Option<answer::Notes>)> {
    let grant = mcp
        .grant_for(parts.extensions.get::<Authenticated>())
        .ok()??;
    let (link, notes) = answer::link(meta);
    let caller = Caller::new(grant, client, meta, link, cancelled)?;
    Some((caller, notes))
}

/// The version rmcp's handshake settles on for a client that asked
/// `requested`, from a server whose own is `preferred` and that supports
/// `supported` (rmcp's `negotiate_protocol_version`, which it does not
/// export): the requested one if it has an `initialize` handshake and is
/// supported, else `preferred` if it has one, else the newest supported one
/// that has one. rmcp's handler sees it on every later request of the
/// session; `None`: the handshake fails.
fn negotiated(
    requested: &ProtocolVersion,
    preferred: ProtocolVersion,
    supported: &[ProtocolVersion],
) -> Option<ProtocolVersion> {
    if requested.has_initialize() && supported.contains(requested) {
        return Some(requested.clone());
    }
    if preferred.has_initialize() {
        return Some(preferred);
    }
    supported
        .iter()
        .filter(|v| v.has_initialize())
        .max_by(|a, b| a.as_str().cmp(b.as_str()))
        .cloned()
}

/// Whether a request's headers leave nothing for rmcp to check or decide:
/// a plain `Accept` naming both answers a POST may get, a JSON body, a
/// version header (if any) that is a known version before 2026-07-28, and
/// no SEP-2243 standard headers.
fn plain(headers: &HeaderMap) -> bool {
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
    media(headers) && version_ok && !standard
}

/// Whether a POST's media types leave rmcp nothing to refuse: a plain
/// `Accept` naming both answers a POST may get, and a JSON body.
pub(super) fn media(headers: &HeaderMap) -> bool {
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
    json && sse && content_json
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

    /// A session rmcp opened that was never noted here (its client left
    /// between the two) is closed on the second sweep that sees it.
    #[tokio::test]
    async fn a_session_never_noted_is_closed() {
        let manager = Arc::new(LocalSessionManager::default());
        let sessions = Sessions::new(manager.clone(), CancellationToken::new());
        let (id, _transport) = manager.create_session().await.unwrap();
        let mut strays = Vec::new();
        sessions.sweep_once(&mut strays).await;
        assert!(
            manager.has_session(&id).await.unwrap(),
            "closed while it may be opening"
        );
        sessions.sweep_once(&mut strays).await;
        // Closed on a task of its own (a stuck one cannot hold the sweep).
        let closing = std::time::Instant::now();
        while manager.has_session(&id).await.unwrap() {
            assert!(closing.elapsed() < Duration::from_secs(5), "never closed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(strays.is_empty());
    }

    #[test]
    fn a_message_with_a_result_or_an_error_is_not_a_plain_request() {
        let read = |s: &str| serde_json::from_str::<Message>(s).unwrap().plain();
        assert!(read(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#));
        assert!(!read(r#"{"id":1,"method":"tools/call"}"#));
        assert!(!read(r#"{"jsonrpc":"1.0","id":1,"method":"tools/call"}"#));
        for extra in [
            r#""result":{}"#,
            r#""result":null"#,
            r#""error":{"code":1}"#,
        ] {
            let m = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call",{extra}}}"#);
            assert!(!read(&m), "{m}");
        }
    }

    #[test]
    fn a_session_has_the_version_rmcps_handshake_settles_on() {
        let known = ProtocolVersion::KNOWN_VERSIONS;
        let (latest, before) = (ProtocolVersion::V_2026_07_28, ProtocolVersion::V_2025_06_18);
        // Asked for a version with a handshake: that one.
        assert_eq!(negotiated(&before, latest.clone(), known), Some(before));
        // Asked for the current protocol (no handshake) or an unknown one:
        // the newest with a handshake, not what was asked.
        let newest = ProtocolVersion::LATEST_WITH_INITIALIZE;
        assert_eq!(
            negotiated(&latest, latest.clone(), known),
            Some(newest.clone())
        );
        let unknown: ProtocolVersion = serde_json::from_str("\"2025-01-01\"").unwrap();
        assert_eq!(negotiated(&unknown, latest.clone(), known), Some(newest));
        // A server whose own version has a handshake falls back to it.
        let own = ProtocolVersion::V_2025_03_26;
        assert_eq!(negotiated(&latest, own.clone(), known), Some(own));
        // Nothing supported has one: no session.
        assert_eq!(
            negotiated(&latest, latest.clone(), std::slice::from_ref(&latest)),
            None
        );
    }

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
