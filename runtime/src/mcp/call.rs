//! The one `tools/call` path. A transport describes the client a call came
//! from ([`Client`]) and how to reach it ([`Link`]); [`Caller::new`] turns
//! that into the call's caller, and [`WardenMcp::tools_call`] runs (or
//! resumes: `rounds.rs`) the call and renders its result. rmcp's `ServerHandler::call_tool` and the stdio loop both go
//! through here; each keeps only how a request arrives and how its answer
//! is written.

use super::{WardenMcp, stdio};
use crate::agent::Agent;
use crate::approval::{ApprovalAnswer, ApprovalRequest, Approver};
use crate::{Error, Grant, Invocation, InvokeOptions};
use rmcp::model::{
    BooleanSchema, CallToolRequestParams, CallToolResponse, CallToolResult, ClientCapabilities,
    ContentBlock, ElicitRequestParams, ElicitationSchema, Implementation, JsonObject, MetaObject,
    PrimitiveSchemaDefinition, ProgressNotificationParam, ProgressToken, ProtocolVersion,
    RequestMetaObject,
};
use rmcp::{ErrorData as McpError, RoleServer};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The error for `tools/call` params that do not parse (-32602, invalid
/// params), on every transport.
pub(crate) fn bad_call_params(e: impl std::fmt::Display) -> McpError {
    McpError::invalid_params(
        format!(
            "tools/call params: {} (expected {{\"name\": TOOL, \"arguments\": {{...}}}})",
            super::echoed(&e.to_string(), 512)
        ),
        None,
    )
}

/// The error for a call whose request id a call still running in its
/// session already has: a cancellation names a call by its id, so the
/// second would make the first one uncancellable (and its session look
/// idle once either ended). The id itself is the client's: not echoed.
pub(crate) fn id_in_use() -> McpError {
    McpError::invalid_request(
        "this request id is already in use by a call still running in this session (ids must be unique while their requests run)",
        None,
    )
}

/// The name of the elicitation request that asks for an approval.
pub(super) const APPROVAL: &str = "approval";

/// What a transport knows of the client a call came from: the protocol
/// version the session negotiated (or the request states), the client's
/// capabilities and its name.
pub(crate) struct Client<'a> {
    pub(crate) version: Option<&'a ProtocolVersion>,
    pub(crate) capabilities: Option<&'a ClientCapabilities>,
    pub(crate) info: Option<&'a Implementation>,
}

/// How a call reaches its client: rmcp's peer (which can also send the
/// client requests), or notifications only: the stdio loop's output, or the
/// event stream of an answer over HTTP (`http/answer.rs`).
pub(crate) enum Link {
    Peer(rmcp::Peer<RoleServer>),
    Stdio(stdio::Out),
    /// A note replaces one the stream has not sent yet: progress is
    /// advisory, and a client that does not read must not hold up its call.
    Events(tokio::sync::watch::Sender<Option<ProgressNotificationParam>>),
    /// Nowhere: a call that asked for no progress.
    None,
}

impl Link {
    pub(super) async fn progress(&self, note: ProgressNotificationParam) {
        match self {
            // Bounded: a client that stops reading fills rmcp's queue, and
            // a send waiting on it would stop the call's loop (its end, its
            // cancel) for as long; the note is dropped instead.
            Link::Peer(peer) => {
                let _ = tokio::time::timeout(PEER_NOTE, peer.notify_progress(note)).await;
            }
            Link::Stdio(out) => out.progress(note).await,
            Link::Events(tx) => {
                tx.send_replace(Some(note));
            }
            Link::None => {}
        }
    }
}

/// The longest a progress note may wait for rmcp's queue.
const PEER_NOTE: std::time::Duration = std::time::Duration::from_millis(100);

/// The longest progress token a call's notes echo: a longer one (up to the
/// request's size, in every note) gets no progress.
const MAX_PROGRESS_TOKEN: usize = 1024;

/// What a call needs from the session it arrived on.
pub(crate) struct Caller {
    grant: Arc<Grant>,
    /// How the client answers approvals, if it can.
    elicitation: Option<Elicitation>,
    /// The client's name, for the audit's "approved by".
    pub(super) client: String,
    /// Where progress goes, for a call that asked for it.
    progress: Option<(ProgressToken, Link)>,
    /// Cancelled when the client cancels the call (or its session ends).
    cancelled: CancellationToken,
}

impl Caller {
    /// The caller of a call under `grant` from `client`, whose request
    /// carried `meta`; `cancelled` ends the call. `None` when the client
    /// answers approvals through `elicitation/create` requests and `link`
    /// cannot send requests (only rmcp's peer can).
    pub(crate) fn new(
        grant: Arc<Grant>,
        client: Client<'_>,
        meta: Option<&RequestMetaObject>,
        link: Link,
        cancelled: CancellationToken,
    ) -> Option<Caller> {
        let elicitation = match (mode(client.capabilities, client.version), &link) {
            (None, _) => None,
            (Some(Mode::RoundTrip), _) => Some(Elicitation::RoundTrip),
            (Some(Mode::Request), Link::Peer(peer)) => Some(Elicitation::Request(peer.clone())),
            (Some(Mode::Request), _) => return None,
        };
        Some(Caller {
            grant,
            elicitation,
            // Self-declared: cut, as an approvals endpoint's `by` is, and
            // control characters (a NUL) made visible.
            client: client.info.map_or_else(
                || "unnamed".into(),
                |i| {
                    crate::redact::escape_control(&crate::policy::gate::cut(&i.name, 128))
                        .into_owned()
                },
            ),
            progress: meta
                .and_then(RequestMetaObject::get_progress_token)
                .filter(|t| match &t.0 {
                    rmcp::model::NumberOrString::String(s) => s.len() <= MAX_PROGRESS_TOKEN,
                    rmcp::model::NumberOrString::Number(_) => true,
                })
                .map(|t| (t, link)),
            cancelled,
        })
    }

    /// Cancelled when the client cancels the call (or its session ends).
    pub(crate) fn cancelled(&self) -> &CancellationToken {
        &self.cancelled
    }

    /// The agent calling, when callers authenticate.
    pub(super) fn agent(&self) -> Option<&Agent> {
        self.grant.agent.as_deref()
    }

    /// The caller of a call run on after its approval was answered through
    /// another replica: no client to send progress to or to cancel it;
    /// a further approval is another round trip.
    pub(super) fn elsewhere() -> Caller {
        Caller {
            grant: Arc::default(),
            elicitation: Some(Elicitation::RoundTrip),
            client: "another replica".into(),
            progress: None,
            cancelled: CancellationToken::new(),
        }
    }
}

/// Whether `version` is the 2026-07-28 protocol or later: approvals are
/// input-required round trips, results carry `resultType` and cache hints.
pub(crate) fn current(version: Option<&ProtocolVersion>) -> bool {
    version.is_some_and(|v| *v >= ProtocolVersion::V_2026_07_28)
}

/// How a client answers approvals through elicitation, if it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The current protocol: an input-required result, answered by a retry.
    RoundTrip,
    /// Older protocols: an `elicitation/create` request to the client.
    Request,
}

/// A caller's elicitation, with what asking it takes.
enum Elicitation {
    RoundTrip,
    Request(rmcp::Peer<RoleServer>),
}

/// The elicitation mode of a client with `capabilities` speaking `version`.
fn mode(
    capabilities: Option<&ClientCapabilities>,
    version: Option<&ProtocolVersion>,
) -> Option<Mode> {
    capabilities?.elicitation.as_ref()?;
    Some(if current(version) {
        Mode::RoundTrip
    } else {
        Mode::Request
    })
}

type Outcome = Result<Result<Invocation, Error>, tokio::task::JoinError>;

/// An invocation: driven by the request's own task while the client waits
/// (no hop to another thread), moved to a task of its own when the call is
/// parked for an approval round trip.
pub(super) enum Call {
    Here(std::pin::Pin<Box<dyn std::future::Future<Output = Result<Invocation, Error>> + Send>>),
    There(JoinHandle<Result<Invocation, Error>>),
}

impl Call {
    async fn finish(&mut self) -> Outcome {
        match self {
            Call::Here(f) => Ok(f.await),
            Call::There(h) => h.await,
        }
    }

    pub(super) fn is_finished(&self) -> bool {
        matches!(self, Call::There(h) if h.is_finished())
    }

    /// Keeps the invocation running without the request that started it.
    pub(super) fn detach(self) -> Call {
        match self {
            Call::Here(f) => Call::There(tokio::spawn(f)),
            there => there,
        }
    }
}

/// A call in progress.
pub(super) struct Running {
    pub(super) tool: String,
    /// The agent whose call this is: only its retry answers an approval.
    agent: Option<Arc<Agent>>,
    pub(super) call: Call,
    approvals: Option<mpsc::Receiver<Pending>>,
    cancel: CancellationToken,
    started: Instant,
    _slot: super::busy::Slots,
}

/// A call waiting for the client's answer to `request`.
pub(super) struct Parked {
    pub(super) running: Running,
    pub(super) request: ApprovalRequest,
    pub(super) answer: oneshot::Sender<ApprovalAnswer>,
    /// The state the client was given (this process's memory only), which
    /// seals a further round's state when the answer came through another
    /// replica (`rounds.rs`).
    pub(super) state: zeroize::Zeroizing<String>,
}

/// An approval request on its way to the MCP client.
pub(super) struct Pending {
    pub(super) request: ApprovalRequest,
    pub(super) answer: oneshot::Sender<ApprovalAnswer>,
}

/// Hands a call's approval requests to the MCP handler, which asks the
/// client through elicitation.
struct Elicit {
    tx: mpsc::Sender<Pending>,
}

#[async_trait::async_trait]
impl Approver for Elicit {
    async fn ask(&self, request: &ApprovalRequest) -> Option<ApprovalAnswer> {
        let (answer, rx) = oneshot::channel();
        self.tx
            .send(Pending {
                request: request.clone(),
                answer,
            })
            .await
            .ok()?;
        rx.await.ok()
    }
}

/// Asks the client directly (protocols before 2026-07-28).
struct AskPeer {
    peer: rmcp::Peer<RoleServer>,
    client: String,
}

#[async_trait::async_trait]
impl Approver for AskPeer {
    async fn ask(&self, request: &ApprovalRequest) -> Option<ApprovalAnswer> {
        let result = self.peer.create_elicitation(prompt(request)).await.ok()?;
        let answer = serde_json::to_value(result).ok()?;
        Some(ApprovalAnswer {
            digest: request.digest.clone(),
            approved: approves(&answer),
            by: format!("MCP client '{}' (elicitation)", self.client),
        })
    }
}

impl WardenMcp {
    /// Runs (or resumes) one `tools/call` for `caller`: the path every
    /// transport's calls take.
    ///
    /// Not `async`, and `self` owned: an `async fn` keeps each argument
    /// twice in its future (as passed, and moved into its body), and a
    /// caller that moved them in would keep a third copy; this future is
    /// what every call in flight holds, so the stdio loop and the HTTP
    /// short path box or spawn it as it is.
    #[allow(clippy::manual_async_fn)] // see the doc: its arguments kept once
    pub(crate) fn tools_call(
        self,
        caller: Caller,
        request: CallToolRequestParams,
    ) -> impl Future<Output = Result<CallToolResponse, McpError>> + Send + 'static {
        async move {
            if let Some(state) = request.request_state.clone() {
                // Boxed: an answer to a parked approval is the rarer path,
                // and its state would otherwise size every call's future.
                return Box::pin(self.resume(&request, &state, &caller)).await;
            }
            // Matched as it comes: bound first, the result would be kept
            // beside the running call it holds.
            let running = match self.start(request.name.to_string(), request.arguments, &caller) {
                Ok(Ok(running)) => running,
                Ok(Err(refused)) => return Ok(refused.into()),
                Err(e) => return Err(e),
            };
            self.drive(running, &caller).await
        }
    }

    /// Starts a call.
    fn start(
        &self,
        name: String,
        arguments: Option<JsonObject>,
        caller: &Caller,
    ) -> Result<Result<Running, CallToolResult>, McpError> {
        if !self.shared.tools.contains_key(&name) {
            let known: Vec<&str> = self.shared.tools.keys().map(String::as_str).collect();
            return Err(McpError::invalid_params(
                format!(
                    "unknown tool '{}' (this server has: {})",
                    super::echoed(&name, 128),
                    known.join(", ")
                ),
                None,
            ));
        }
        let slot = match super::busy::Slots::take(&self.shared, caller.grant.agent.as_deref()) {
            Ok(slot) => slot,
            Err(busy) => return Ok(Err(failure(busy))),
        };
        let input = Value::Object(arguments.unwrap_or_default()).to_string();
        let grant = match self.shared.runtime.narrow(&name, &caller.grant) {
            Ok(g) => g,
            Err(e) => return Ok(Err(failure(super::for_agent(&e)))),
        };
        // A channel allocates room for 32 messages up front: only calls
        // whose approvals come back as round trips get one.
        let elicitation = caller
            .elicitation
            .as_ref()
            .filter(|_| self.shared.options.client_approvals);
        let (approver, approvals): (Option<Arc<dyn Approver>>, _) = match elicitation {
            Some(Elicitation::RoundTrip) => {
                let (tx, rx) = mpsc::channel(1);
                (Some(Arc::new(Elicit { tx })), Some(rx))
            }
            Some(Elicitation::Request(peer)) => (
                Some(Arc::new(AskPeer {
                    peer: peer.clone(),
                    client: caller.client.clone(),
                })),
                None,
            ),
            None => (None, None),
        };
        let cancel = CancellationToken::new();
        let options = InvokeOptions {
            approver,
            cancel: Some(cancel.clone()),
        };
        let runtime = self.shared.runtime.clone();
        let tool = name.clone();
        let call = Call::Here(Box::pin(async move {
            runtime.invoke_with(&tool, &grant, &input, options).await
        }));
        Ok(Ok(Running {
            tool: name,
            agent: caller.grant.agent.clone(),
            call,
            approvals,
            cancel,
            started: Instant::now(),
            _slot: slot,
        }))
    }

    /// Waits for a call to finish, to need an approval, or to be cancelled;
    /// sends progress meanwhile. Not `async`, for the reason
    /// [`WardenMcp::tools_call`] gives: `running` is kept once.
    #[allow(clippy::manual_async_fn)] // see the doc: its arguments kept once
    pub(super) fn drive<'a>(
        &'a self,
        mut running: Running,
        caller: &'a Caller,
    ) -> impl Future<Output = Result<CallToolResponse, McpError>> + Send + 'a {
        async move {
            enum Next {
                Done(Outcome),
                Approval(Pending),
                Cancelled,
                Tick,
            }
            let every = self.shared.options.progress_interval;
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                let next = tokio::select! {
                    r = running.call.finish() => Next::Done(r),
                    Some(p) = next_approval(&mut running.approvals) => Next::Approval(p),
                    () = caller.cancelled.cancelled() => Next::Cancelled,
                    _ = ticks.tick(), if caller.progress.is_some() => Next::Tick,
                };
                match next {
                    Next::Done(r) => return Ok(self.render(r).into()),
                    Next::Cancelled => {
                        running.cancel.cancel();
                        let r = running.call.finish().await;
                        return Ok(self.render(r).into());
                    }
                    Next::Tick => {
                        if let Some((token, link)) = &caller.progress {
                            let secs = running.started.elapsed().as_secs_f64();
                            let note = ProgressNotificationParam::new(token.clone(), secs)
                                .with_message(format!("{} running for {secs:.0}s", running.tool));
                            // Boxed, for the same reason: once a second at most.
                            Box::pin(link.progress(note)).await;
                        }
                    }
                    Next::Approval(p) => {
                        // No randomness for an unguessable handle, or no
                        // store to share it through: unanswered, so denied.
                        let Some(state) = state_token() else { continue };
                        let key = super::rounds::key(&state, running.agent.as_deref());
                        if let Some(rounds) = self.shared.rounds.get()
                            && let Err(why) = rounds.park(&key, &running.tool).await
                        {
                            tracing::warn!("approval rounds: {why}; the approval is denied");
                            continue;
                        }
                        return Ok(self.park(running, p, state, key).into());
                    }
                }
            }
        }
    }

    /// An invocation's outcome as a tool result.
    fn render(&self, r: Outcome) -> CallToolResult {
        let inv = match r {
            Err(e) => return failure(super::host_failed(&e, super::RUN)),
            Ok(Err(Error::Cancelled)) => return failure("cancelled by the client".into()),
            Ok(Err(e @ Error::Limit(_))) => return failure(format!("limit exceeded: {e}")),
            Ok(Err(e)) => return failure(super::for_agent(&e)),
            Ok(Ok(inv)) => inv,
        };
        let cap = self.shared.options.stdio_in_result;
        for (stream, bytes) in [("stdout", &inv.stdout), ("stderr", &inv.stderr)] {
            if !bytes.is_empty() {
                let text = String::from_utf8_lossy(bytes);
                let text = crate::redact::escape_control(&text);
                tracing::info!(tool = %inv.tool, invocation = %inv.id, "{stream}: {text}");
            }
        }
        let mut meta = serde_json::Map::new();
        meta.insert(
            "warden".into(),
            json!({
                "invocation": inv.id,
                "task": inv.task,
                "identity": inv.identity.to_string(),
                "duration_ms": inv.duration.as_secs_f64() * 1000.0,
                "stdout": capped(&inv.stdout, cap),
                "stderr": capped(&inv.stderr, cap),
            }),
        );
        let mut result = match inv.output {
            Ok(text) => {
                let structured = serde_json::from_str::<Value>(&text)
                    .ok()
                    .filter(Value::is_object);
                let mut ok = CallToolResult::success(vec![ContentBlock::text(text)]);
                ok.structured_content = structured;
                ok
            }
            Err(e) => failure(e.to_string()),
        };
        result.meta = Some(MetaObject(meta));
        result
    }
}

/// What the client is asked for one approval.
pub(super) fn prompt(r: &ApprovalRequest) -> ElicitRequestParams {
    let message = format!(
        "Warden: approve {} on {} by tool {} ({}) in task {}?\n{}",
        r.action, r.resource, r.tool, r.identity, r.task, r.summary
    );
    let schema = ElicitationSchema::new(BTreeMap::from([(
        "approved".to_owned(),
        PrimitiveSchemaDefinition::Boolean(
            BooleanSchema::new()
                .title("Approve")
                .description("true lets this one action run; anything else denies it"),
        ),
    )]));
    ElicitRequestParams::FormElicitationParams {
        meta: None,
        message,
        requested_schema: schema,
    }
}

/// Whether an elicitation answer approves: accepted, with `approved: true`
/// (the answer field the webhook and the approvals endpoint use too).
pub(super) fn approves(answer: &Value) -> bool {
    answer["action"] == "accept" && answer["content"]["approved"] == true
}

pub(super) fn failure(message: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message)])
}

fn capped(bytes: &[u8], cap: usize) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(cap)]).into_owned();
    if bytes.len() > cap {
        format!("{text}… ({} bytes in all)", bytes.len())
    } else {
        text
    }
}

/// An unguessable handle for a parked call (128 random bits).
fn state_token() -> Option<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).ok()?;
    Some(hex::encode(b))
}

/// A call's response in the shape the SDK gives it for the session's
/// protocol version (its `ServerHandler` dispatch does the same); `legacy`:
/// a version before 2026-07-28. Both transports' short paths answer with it.
pub(crate) fn shape(
    response: CallToolResponse,
    legacy: bool,
) -> Result<rmcp::model::ServerResult, McpError> {
    let mut result = rmcp::model::ServerResult::from(response);
    if legacy {
        if matches!(result, rmcp::model::ServerResult::InputRequiredResult(_)) {
            return Err(McpError::invalid_request(
                "InputRequiredResult requires negotiated protocol version 2026-07-28 or newer",
                None,
            ));
        }
        result.strip_result_type_for_legacy_peer();
        result.strip_non_object_output_for_legacy_peer();
    } else {
        result.fill_missing_cache_hints();
    }
    Ok(result)
}

/// The next approval a call asks its client for, if its approvals come
/// back as round trips; otherwise never.
async fn next_approval(approvals: &mut Option<mpsc::Receiver<Pending>>) -> Option<Pending> {
    match approvals {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[path = "call_tests.rs"]
mod tests;
