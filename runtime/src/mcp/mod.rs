//! The MCP server: Warden's tools for any MCP client, over stdio or
//! streamable HTTP (the official Rust SDK, `rmcp`).
//!
//! - `tools/list` comes from each component's `describe()`, with
//!   `readOnlyHint` / `destructiveHint` derived from the rights the caller's
//!   grant gives the tool.
//! - `tools/call` runs one invocation under the operator's grant; the client
//!   has no way to change it (there is no tool that grants anything).
//! - An approval gate is asked of the client through elicitation (the
//!   current protocol's input-required round trip) when the client supports
//!   it; otherwise the runtime's configured approver answers.
//! - Cancellation stops the invocation; long calls send progress.
//! - A tool's stdout/stderr never enter the protocol stream: they are
//!   captured, logged, and returned (capped) in the result's `_meta`.

pub mod http;
pub mod stdio;

use crate::approval::{ApprovalAnswer, ApprovalRequest, Approver};
use crate::{Error, Grant, Invocation, InvokeOptions, Rights, Runtime};
use rmcp::model::{
    BooleanSchema, CallToolRequestParams, CallToolResponse, CallToolResult, ClientCapabilities,
    ContentBlock, ElicitRequest, ElicitRequestParams, ElicitationSchema, Implementation,
    InputRequest, InputRequests, InputRequiredResult, JsonObject, ListToolsResult, MetaObject,
    PaginatedRequestParams, PrimitiveSchemaDefinition, ProgressNotificationParam, ProgressToken,
    ProtocolVersion, ServerCapabilities, ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How the server behaves; the defaults suit a local agent.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Calls running at once; one more is answered "busy".
    pub max_in_flight: usize,
    /// How often a call with a progress token gets a progress notification.
    pub progress_interval: Duration,
    /// Bytes of a tool's stdout and of its stderr returned in `_meta`.
    pub stdio_in_result: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_in_flight: 64,
            progress_interval: Duration::from_secs(1),
            stdio_in_result: 4 << 10,
        }
    }
}

/// The name of the elicitation request that asks for an approval.
const APPROVAL: &str = "approval";

/// Serves a runtime's tools under operator-chosen grants. Cheap to clone:
/// the HTTP transport makes one per session.
#[derive(Clone)]
pub struct WardenMcp {
    shared: Arc<Shared>,
}

struct Shared {
    runtime: Runtime,
    grants: Grants,
    /// Tool definitions from `describe`, by manifest name.
    tools: BTreeMap<String, Tool>,
    slots: Arc<Semaphore>,
    /// Calls waiting for the client's answer to an approval, by state token.
    parked: Mutex<HashMap<String, Parked>>,
    options: ServeOptions,
}

/// Which grant a call runs under: chosen by the operator, never the client.
#[derive(Clone)]
pub enum Grants {
    /// One task grant for every caller.
    One(Arc<Grant>),
    /// HTTP: the bearer token a caller presents selects its task grant.
    ByToken(Arc<Vec<(String, Arc<Grant>)>>),
}

type Outcome = Result<Result<Invocation, Error>, tokio::task::JoinError>;

/// An invocation: driven by the request's own task while the client waits
/// (no hop to another thread), moved to a task of its own when the call is
/// parked for an approval round trip.
enum Call {
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

    fn is_finished(&self) -> bool {
        matches!(self, Call::There(h) if h.is_finished())
    }

    /// Keeps the invocation running without the request that started it.
    fn detach(self) -> Call {
        match self {
            Call::Here(f) => Call::There(tokio::spawn(f)),
            there => there,
        }
    }
}

/// A call in progress.
struct Running {
    tool: String,
    call: Call,
    approvals: mpsc::Receiver<Pending>,
    cancel: CancellationToken,
    started: Instant,
    _slot: OwnedSemaphorePermit,
}

/// A call waiting for the client's answer to `request`.
struct Parked {
    running: Running,
    request: ApprovalRequest,
    answer: oneshot::Sender<ApprovalAnswer>,
}

/// An approval request on its way to the MCP client.
struct Pending {
    request: ApprovalRequest,
    answer: oneshot::Sender<ApprovalAnswer>,
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

/// What a call needs from the session it arrived on: built from rmcp's
/// request context, or by the stdio loop for the calls it answers itself.
pub(crate) struct Caller {
    grant: Arc<Grant>,
    /// How the client answers approvals, if it can.
    elicitation: Option<Elicitation>,
    /// The client's name, for the audit's "approved by".
    client: String,
    /// Where progress goes, for a call that asked for it.
    progress: Option<(ProgressToken, Notifier)>,
    /// Cancelled when the client cancels the call (or its session ends).
    cancelled: CancellationToken,
}

/// Sends progress notifications to the client.
enum Notifier {
    Peer(rmcp::Peer<RoleServer>),
    Stdio(stdio::Out),
}

impl Notifier {
    async fn progress(&self, note: ProgressNotificationParam) {
        match self {
            Notifier::Peer(peer) => {
                let _ = peer.notify_progress(note).await;
            }
            Notifier::Stdio(out) => out.progress(note).await,
        }
    }
}

impl WardenMcp {
    /// Describes every tool once (compiling it if needed) and builds the
    /// server. A tool that fails to load is an error here, at start-up.
    pub async fn new(
        runtime: Runtime,
        grants: Grants,
        options: ServeOptions,
    ) -> Result<WardenMcp, Error> {
        let names: Vec<String> = runtime.tools().map(|t| t.name.clone()).collect();
        let mut tools = BTreeMap::new();
        for name in names {
            let info = runtime.describe(&name).await?;
            let input = object(info.input_schema).ok_or_else(|| Error::Component {
                path: runtime
                    .tools()
                    .find(|t| t.name == name)
                    .map(|t| t.component.clone())
                    .unwrap_or_default(),
                reason: "its input schema is not a JSON object (MCP needs an object schema)".into(),
            })?;
            let mut tool = Tool::new(name.clone(), info.description, Arc::new(input));
            if let Some(out) = info.output_schema.and_then(object) {
                tool = tool.with_raw_output_schema(Arc::new(out));
            }
            if tools.insert(name.clone(), tool).is_some() {
                return Err(Error::Config(format!(
                    "two tools are named '{name}' (MCP tool names must be unique)"
                )));
            }
        }
        Ok(WardenMcp {
            shared: Arc::new(Shared {
                slots: Arc::new(Semaphore::new(options.max_in_flight.max(1))),
                runtime,
                grants,
                tools,
                parked: Mutex::default(),
                options,
            }),
        })
    }

    /// Waits until no call is running (for a graceful shutdown).
    pub async fn idle(&self) {
        let all = u32::try_from(self.shared.options.max_in_flight.max(1)).unwrap_or(u32::MAX);
        let _ = self.shared.slots.acquire_many(all).await;
    }

    /// The caller of a request that came through rmcp.
    fn caller(&self, cx: &RequestContext<RoleServer>) -> Result<Caller, McpError> {
        let elicitation = match mode(cx.client_capabilities(), cx.protocol_version()) {
            Some(Mode::RoundTrip) => Some(Elicitation::RoundTrip),
            Some(Mode::Request) => Some(Elicitation::Request(cx.peer.clone())),
            None => None,
        };
        Ok(Caller {
            grant: self.grant(cx)?,
            elicitation,
            client: client_name(cx.client_info()),
            progress: cx
                .meta
                .get_progress_token()
                .map(|t| (t, Notifier::Peer(cx.peer.clone()))),
            cancelled: cx.ct.clone(),
        })
    }

    /// Runs (or resumes) one `tools/call`.
    pub(crate) async fn call(
        &self,
        request: CallToolRequestParams,
        caller: &Caller,
    ) -> Result<CallToolResponse, McpError> {
        if let Some(state) = request.request_state.clone() {
            return self.resume(&request, &state, caller).await;
        }
        match self.start(request.name.to_string(), request.arguments, caller)? {
            Ok(running) => self.drive(running, caller).await,
            Err(refused) => Ok(refused.into()),
        }
    }

    /// The grant of the caller: the one grant, or the one its bearer token
    /// selects (the HTTP layer has already refused unknown tokens).
    fn grant(&self, cx: &RequestContext<RoleServer>) -> Result<Arc<Grant>, McpError> {
        match &self.shared.grants {
            Grants::One(g) => Ok(g.clone()),
            Grants::ByToken(list) => {
                let token = cx
                    .extensions
                    .get::<::http::request::Parts>()
                    .and_then(|p| http::bearer(&p.headers));
                token
                    .and_then(|t| {
                        list.iter()
                            .find(|(known, _)| http::same(known, &t))
                            .map(|(_, g)| g.clone())
                    })
                    .ok_or_else(|| McpError::invalid_request("no grant for this caller", None))
            }
        }
    }

    /// The tool list with annotations from the rights `grant` gives.
    fn list(&self, grant: &Grant) -> Vec<Tool> {
        self.shared
            .tools
            .iter()
            .map(|(name, tool)| {
                let narrowed = self.shared.runtime.narrow(name, grant).ok();
                let rights = narrowed
                    .as_ref()
                    .map(|g| g.fs.values().fold(Rights::NONE, |r, h| r | h.rights))
                    .unwrap_or(Rights::NONE);
                let deploys = narrowed.as_ref().is_some_and(|g| !g.deploy.is_empty());
                let changes = rights.has(crate::Right::Write) || rights.has(crate::Right::Delete);
                let annotations = ToolAnnotations::new()
                    .read_only(!changes && !deploys)
                    .destructive(rights.has(crate::Right::Delete) || deploys);
                tool.clone().with_annotations(annotations)
            })
            .collect()
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
                    "unknown tool '{name}' (this server has: {})",
                    known.join(", ")
                ),
                None,
            ));
        }
        let Ok(slot) = self.shared.slots.clone().try_acquire_owned() else {
            return Ok(Err(failure(format!(
                "busy: {} calls are already running, this server's limit; retry later",
                self.shared.options.max_in_flight
            ))));
        };
        let input = Value::Object(arguments.unwrap_or_default()).to_string();
        let grant = match self.shared.runtime.narrow(&name, &caller.grant) {
            Ok(g) => g,
            Err(e) => return Ok(Err(failure(e.to_string()))),
        };
        let (tx, approvals) = mpsc::channel(1);
        let approver: Option<Arc<dyn Approver>> = match &caller.elicitation {
            Some(Elicitation::RoundTrip) => Some(Arc::new(Elicit { tx })),
            Some(Elicitation::Request(peer)) => Some(Arc::new(AskPeer {
                peer: peer.clone(),
                client: caller.client.clone(),
            })),
            None => None,
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
            call,
            approvals,
            cancel,
            started: Instant::now(),
            _slot: slot,
        }))
    }

    /// Waits for a call to finish, to need an approval, or to be cancelled;
    /// sends progress meanwhile.
    async fn drive(
        &self,
        mut running: Running,
        caller: &Caller,
    ) -> Result<CallToolResponse, McpError> {
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
                Some(p) = running.approvals.recv() => Next::Approval(p),
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
                    if let Some((token, notifier)) = &caller.progress {
                        let secs = running.started.elapsed().as_secs_f64();
                        let note = ProgressNotificationParam::new(token.clone(), secs)
                            .with_message(format!("{} running for {secs:.0}s", running.tool));
                        notifier.progress(note).await;
                    }
                }
                Next::Approval(p) => match state_token() {
                    Some(state) => return Ok(self.park(running, p, state).into()),
                    // No randomness for an unguessable handle: unanswered,
                    // so denied.
                    None => drop(p),
                },
            }
        }
    }

    /// Parks a call until the client answers its approval request.
    fn park(&self, mut running: Running, p: Pending, state: String) -> InputRequiredResult {
        running.call = running.call.detach();
        let mut requests = InputRequests::new();
        requests.insert(
            APPROVAL.into(),
            InputRequest::Elicitation(ElicitRequest::new(prompt(&p.request))),
        );
        let mut parked = self.shared.parked.lock().unwrap_or_else(|e| e.into_inner());
        // Calls whose approval timed out finished without their client:
        // drop them (and their slots).
        parked.retain(|_, p| !p.running.call.is_finished());
        parked.insert(
            state.clone(),
            Parked {
                running,
                request: p.request,
                answer: p.answer,
            },
        );
        InputRequiredResult::new(Some(requests), Some(state))
    }

    /// The client's answer to a parked call's approval request.
    async fn resume(
        &self,
        req: &CallToolRequestParams,
        state: &str,
        caller: &Caller,
    ) -> Result<CallToolResponse, McpError> {
        let parked = self
            .shared
            .parked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(state);
        let Some(parked) = parked.filter(|p| p.running.tool == req.name) else {
            return Err(McpError::invalid_params(
                "unknown or expired requestState (an approval answer counts once, for the call that asked)",
                None,
            ));
        };
        let answer = req
            .input_responses
            .as_ref()
            .and_then(|r| r.get(APPROVAL))
            .cloned()
            .unwrap_or(Value::Null);
        let _ = parked.answer.send(ApprovalAnswer {
            digest: parked.request.digest.clone(),
            approved: approves(&answer),
            by: format!("MCP client '{}' (elicitation)", caller.client),
        });
        self.drive(parked.running, caller).await
    }

    /// An invocation's outcome as a tool result.
    fn render(&self, r: Outcome) -> CallToolResult {
        let inv = match r {
            Err(e) => return failure(format!("host error: the invocation task failed: {e}")),
            Ok(Err(Error::Cancelled)) => return failure("cancelled by the client".into()),
            Ok(Err(e @ Error::Limit(_))) => return failure(format!("limit exceeded: {e}")),
            Ok(Err(e)) => return failure(e.to_string()),
            Ok(Ok(inv)) => inv,
        };
        let cap = self.shared.options.stdio_in_result;
        for (stream, bytes) in [("stdout", &inv.stdout), ("stderr", &inv.stderr)] {
            if !bytes.is_empty() {
                tracing::info!(tool = %inv.tool, invocation = %inv.id, "{stream}: {}", String::from_utf8_lossy(bytes));
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

impl ServerHandler for WardenMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_protocol_version(ProtocolVersion::LATEST)
            .with_server_info(Implementation::new("warden", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Tools run in Warden's WebAssembly sandbox under a grant chosen by the operator. \
                 Denials and limits come back as tool errors; some actions ask you for approval.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        cx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let grant = self.grant(&cx)?;
        Ok(ListToolsResult::with_all_items(self.list(&grant)))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.shared.tools.get(name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let caller = self.caller(&cx)?;
        let response = self.call(request, &caller).await;
        // Sign the audit checkpoint while rmcp sends the answer.
        let runtime = self.shared.runtime.clone();
        tokio::spawn(async move { runtime.settle_audit() });
        response
    }
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
    capabilities: Option<ClientCapabilities>,
    version: Option<ProtocolVersion>,
) -> Option<Mode> {
    capabilities.and_then(|c| c.elicitation)?;
    let current = version.is_some_and(|v| v >= ProtocolVersion::V_2026_07_28);
    Some(if current {
        Mode::RoundTrip
    } else {
        Mode::Request
    })
}

/// What the client is asked for one approval.
fn prompt(r: &ApprovalRequest) -> ElicitRequestParams {
    let message = format!(
        "Warden: approve {} on {} by tool {} ({}) in task {}?\n{}",
        r.action, r.resource, r.tool, r.identity, r.task, r.summary
    );
    let schema = ElicitationSchema::new(BTreeMap::from([(
        "approve".to_owned(),
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

/// Whether an elicitation answer approves: accepted, with `approve: true`.
fn approves(answer: &Value) -> bool {
    answer["action"] == "accept" && answer["content"]["approve"] == true
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

fn client_name(info: Option<Implementation>) -> String {
    info.map(|i| i.name).unwrap_or_else(|| "unnamed".into())
}

fn failure(message: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message)])
}

fn object(v: Value) -> Option<JsonObject> {
    match v {
        Value::Object(o) => Some(o),
        _ => None,
    }
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
