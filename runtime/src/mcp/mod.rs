//! The MCP server: Warden's tools for any MCP client, over stdio or
//! streamable HTTP (the official Rust SDK, `rmcp`).
//!
//! - `tools/list` comes from each component's `describe()`, with its
//!   annotations (`readOnlyHint`, `destructiveHint`, `idempotentHint`,
//!   `openWorldHint`) derived from what the caller's grant gives the tool
//!   ([`Hints`]). A tool that cannot be described is left out, and
//!   named by [`WardenMcp::unavailable`]; the others are served.
//! - `tools/call` runs one invocation under the operator's grant; the client
//!   has no way to change it (there is no tool that grants anything). The
//!   rmcp handler and the stdio loop's own answers take one path
//!   (`call.rs`): each builds a caller and writes the answer its own way.
//! - An approval gate is asked of the client through elicitation (the
//!   current protocol's input-required round trip) when the client supports
//!   it and the operator answers none ([`ServeOptions::client_approvals`]);
//!   otherwise the runtime's configured approver answers.
//! - Cancellation stops the invocation; long calls send progress.
//! - A tool's stdout/stderr never enter the protocol stream: they are
//!   captured, logged, and returned (capped) in the result's `_meta`.

mod busy;
mod call;
pub mod http;
mod rounds;
pub mod stdio;

pub use rounds::{Round, RoundStore};

use crate::auth::Authenticated;
use crate::{Error, Grant, Rights, Runtime};
use call::{Caller, Client, Link, Parked};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CustomRequest, CustomResult, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ProtocolVersion, ServerCapabilities,
    ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// How the server behaves; the defaults suit a local agent.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Calls running at once; one more is answered "busy".
    pub max_in_flight: usize,
    /// Calls one agent (an authenticated caller) may have running at once,
    /// so that it cannot take every place and turn the others away; calls
    /// without an agent count only toward `max_in_flight`.
    pub max_in_flight_per_agent: usize,
    /// How often a call with a progress token gets a progress notification.
    pub progress_interval: Duration,
    /// Bytes of a tool's stdout and of its stderr returned in `_meta`.
    pub stdio_in_result: usize,
    /// Whether a client that supports elicitation answers the approvals
    /// of its calls. Off when the operator answers them (`warden serve`
    /// with `--approvals`, `--console` or an `--approver` named): a client
    /// may be the agent itself, and would approve what it asked.
    pub client_approvals: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_in_flight: 64,
            max_in_flight_per_agent: 48,
            progress_interval: Duration::from_secs(1),
            stdio_in_result: 4 << 10,
            client_approvals: true,
        }
    }
}

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
    /// The tools whose input schema asks for `Mcp-Param-*` headers
    /// (`x-mcp-header`, anywhere in it).
    param_headers: std::collections::BTreeSet<String>,
    /// Tools that could not be described, by name, with why.
    unavailable: BTreeMap<String, String>,
    slots: Arc<Semaphore>,
    /// Calls running, by agent.
    agents_running: busy::ByAgent,
    /// Calls waiting for the client's answer to an approval, by the
    /// SHA-256 of their state token.
    parked: Mutex<HashMap<String, Parked>>,
    /// Where replicas share those calls, if they do.
    rounds: std::sync::OnceLock<Arc<dyn RoundStore>>,
    /// The task that sweeps parked calls which finished (started with the
    /// first one).
    sweeping: std::sync::OnceLock<()>,
    options: ServeOptions,
}

/// Which grant a call runs under: chosen by the operator, never the client.
#[derive(Clone)]
pub enum Grants {
    /// One task grant for every caller the transport does not authenticate
    /// (stdio, an open loopback HTTP server).
    One(Arc<Grant>),
    /// HTTP only: each caller's grant is the one its credential selects
    /// ([`crate::auth::Authenticator`]); there is no default.
    PerCaller,
}

impl WardenMcp {
    /// Describes every tool once (compiling it if needed) and builds the
    /// server. A tool that cannot be described (its component does not
    /// load, its `describe` traps or returns a schema MCP cannot use) is
    /// left out and named in [`WardenMcp::unavailable`]; the others are
    /// served. It is an error only when the manifest has tools and none of
    /// them can be served.
    pub async fn new(
        runtime: Runtime,
        grants: Grants,
        options: ServeOptions,
    ) -> Result<WardenMcp, Error> {
        let names: Vec<String> = runtime.tools().map(|t| t.name.clone()).collect();
        let mut tools = BTreeMap::new();
        let mut unavailable = BTreeMap::new();
        for name in names {
            match definition(&runtime, &name).await {
                Ok(tool) => {
                    if tools.insert(name.clone(), tool).is_some() {
                        return Err(Error::Config(format!(
                            "two tools are named '{name}' (MCP tool names must be unique)"
                        )));
                    }
                }
                Err(e) => {
                    unavailable.insert(name, e.to_string());
                }
            }
        }
        fn mentions(v: &Value) -> bool {
            match v {
                Value::Object(o) => o.contains_key("x-mcp-header") || o.values().any(mentions),
                Value::Array(a) => a.iter().any(mentions),
                _ => false,
            }
        }
        let param_headers = tools
            .iter()
            .filter(|(_, t)| {
                t.input_schema.values().any(mentions) || t.input_schema.contains_key("x-mcp-header")
            })
            .map(|(name, _)| name.clone())
            .collect();
        if tools.is_empty() && !unavailable.is_empty() {
            let why: Vec<String> = unavailable
                .iter()
                .map(|(name, e)| format!("'{name}': {e}"))
                .collect();
            return Err(Error::Config(format!(
                "no tool can be served ({})",
                why.join("; ")
            )));
        }
        Ok(WardenMcp {
            shared: Arc::new(Shared {
                slots: Arc::new(Semaphore::new(options.max_in_flight.max(1))),
                agents_running: busy::ByAgent::default(),
                runtime,
                grants,
                tools,
                param_headers,
                unavailable,
                parked: Mutex::default(),
                rounds: std::sync::OnceLock::new(),
                sweeping: std::sync::OnceLock::new(),
                options,
            }),
        })
    }

    /// Shares the calls parked for an approval round trip with other
    /// replicas through `store` (`serve --state`): a client's retry may
    /// reach any of them. Once; call it on a tokio runtime.
    pub fn share_rounds(&self, store: Arc<dyn RoundStore>) {
        if self.shared.rounds.set(store.clone()).is_ok() {
            tokio::spawn(rounds::pick_up(Arc::downgrade(&self.shared), store));
        }
    }

    /// The tools left out at start-up, by name, with why (as the runtime
    /// said it: print it through [`crate::redact::escape_control`]).
    pub fn unavailable(&self) -> &BTreeMap<String, String> {
        &self.shared.unavailable
    }

    /// Whether calls can run now: not while the audit trail cannot be
    /// written (a state store that is unreachable).
    pub fn ready(&self) -> Result<(), String> {
        self.shared.runtime.audit_health()
    }

    /// Waits until no call is running (for a graceful shutdown).
    pub async fn idle(&self) {
        let all = u32::try_from(self.shared.options.max_in_flight.max(1)).unwrap_or(u32::MAX);
        let _ = self.shared.slots.acquire_many(all).await;
    }

    /// Whether the input schema of the tool `name` asks for any argument
    /// to be restated in an `Mcp-Param-*` header (SEP-2243 `x-mcp-header`),
    /// anywhere in it.
    fn asks_param_headers(&self, name: &str) -> bool {
        self.shared.param_headers.contains(name)
    }

    /// The caller of a request that came through rmcp.
    fn caller(&self, cx: &RequestContext<RoleServer>) -> Result<Caller, McpError> {
        let (version, capabilities, info) = (
            cx.protocol_version(),
            cx.client_capabilities(),
            cx.client_info(),
        );
        let client = Client {
            version: version.as_ref(),
            capabilities: capabilities.as_ref(),
            info: info.as_ref(),
        };
        let link = Link::Peer(cx.peer.clone());
        let grant = self.grant(cx)?.ok_or_else(no_tools)?;
        Caller::new(grant, client, Some(&cx.meta), link, cx.ct.clone())
            // rmcp's peer sends elicitation requests: always a caller.
            .ok_or_else(|| McpError::internal_error("no caller for this request", None))
    }

    /// The grant of the caller: the one its credential selected (the HTTP
    /// layer authenticated it), or the one grant.
    fn grant(&self, cx: &RequestContext<RoleServer>) -> Result<Option<Arc<Grant>>, McpError> {
        let parts = cx.extensions.get::<::http::request::Parts>();
        self.grant_for(parts.and_then(|p| p.extensions.get::<Authenticated>()))
    }

    /// The grant of a caller the HTTP layer found to be `who`; `None`: an
    /// authenticated agent the agents file gives no tools.
    fn grant_for(&self, who: Option<&Authenticated>) -> Result<Option<Arc<Grant>>, McpError> {
        match (who, &self.shared.grants) {
            (Some(Authenticated::Agent { grant, .. }), _) => Ok(grant.clone()),
            (_, Grants::One(g)) => Ok(Some(g.clone())),
            (_, Grants::PerCaller) => Err(McpError::invalid_request(
                "no grant for this caller (it did not authenticate)",
                None,
            )),
        }
    }

    /// The tool list with annotations from what `grant` gives each tool.
    fn list(&self, grant: &Grant) -> Vec<Tool> {
        self.shared
            .tools
            .iter()
            .map(|(name, tool)| {
                let narrowed = self.shared.runtime.narrow(name, grant).ok();
                let hints = narrowed.as_ref().map_or_else(Hints::closed, Hints::of);
                tool.clone().with_annotations(hints.annotations())
            })
            .collect()
    }
}

/// The MCP tool annotations a narrowed grant implies. The host cannot see
/// what a tool will do with a right, only what it may do, so each hint says
/// what the grant allows at worst:
///
/// - `readOnlyHint`: nothing outside the tool can change: no fs write or
///   delete, no deploy target, no egress method other than GET or HEAD.
/// - `destructiveHint`: any change may destroy: a write may overwrite or
///   truncate, a delete removes, a deploy replaces, and a remote method
///   other than GET/HEAD may do either. False only when read-only.
/// - `idempotentHint`: true only when read-only; a write may append, a
///   deploy or a POST may act again.
/// - `openWorldHint`: the tool reaches beyond its handles: any egress rule
///   or deploy target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hints {
    changes: bool,
    open_world: bool,
}

impl Hints {
    /// No grant for the tool: it can reach nothing.
    fn closed() -> Hints {
        Hints {
            changes: false,
            open_world: false,
        }
    }

    fn of(grant: &Grant) -> Hints {
        let rights = grant.fs.values().fold(Rights::NONE, |r, h| r | h.rights);
        let fs_changes = rights.has(crate::Right::Write) || rights.has(crate::Right::Delete);
        let unsafe_method = grant.http.iter().any(|h| {
            h.methods
                .as_deref()
                .is_none_or(|ms| ms.iter().any(|m| !matches!(m.as_str(), "GET" | "HEAD")))
        });
        let deploys = !grant.deploy.is_empty();
        Hints {
            changes: fs_changes || unsafe_method || deploys,
            open_world: !grant.http.is_empty() || deploys,
        }
    }

    fn annotations(self) -> ToolAnnotations {
        ToolAnnotations::new()
            .read_only(!self.changes)
            .destructive(self.changes)
            .idempotent(!self.changes)
            .open_world(self.open_world)
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
        // An agent the agents file gives no tools sees none.
        let tools = match self.grant(&cx)? {
            Some(grant) => self.list(&grant),
            None => Vec::new(),
        };
        Ok(ListToolsResult::with_all_items(tools))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.shared.tools.get(name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        self.clone().tools_call(self.caller(&cx)?, request).await
    }

    /// rmcp hands over a request of a method it does not know, and also one
    /// of a method it knows whose params do not parse: the latter is
    /// invalid params (-32602), as the stdio loop answers it.
    async fn on_custom_request(
        &self,
        request: CustomRequest,
        _cx: RequestContext<RoleServer>,
    ) -> Result<CustomResult, McpError> {
        if request.method == "tools/call" {
            let params = request.params.unwrap_or(Value::Null);
            if let Err(e) = serde_json::from_value::<CallToolRequestParams>(params) {
                return Err(call::bad_call_params(e));
            }
        }
        Err(McpError::new(
            rmcp::model::ErrorCode::METHOD_NOT_FOUND,
            echoed(&request.method, 128),
            None,
        ))
    }
}

/// The MCP definition of the tool `name`, from its `describe`.
async fn definition(runtime: &Runtime, name: &str) -> Result<Tool, Error> {
    let info = runtime.describe(name).await?;
    let input = object(info.input_schema).ok_or_else(|| Error::Component {
        path: runtime
            .tools()
            .find(|t| t.name == name)
            .map(|t| t.component.clone())
            .unwrap_or_default(),
        reason: "its input schema is not a JSON object (MCP needs an object schema)".into(),
    })?;
    let mut tool = Tool::new(name.to_owned(), info.description, Arc::new(input));
    if let Some(out) = info.output_schema.and_then(object) {
        tool = tool.with_raw_output_schema(Arc::new(out));
    }
    Ok(tool)
}

fn object(v: Value) -> Option<JsonObject> {
    match v {
        Value::Object(o) => Some(o),
        _ => None,
    }
}

/// The answer to a call from an agent that has no tools.
fn no_tools() -> McpError {
    McpError::invalid_request(
        "no tools are granted to this agent (no [[agent]] entry of the agents file matches it)",
        None,
    )
}

/// A client's own words echoed in an error (a tool or method name, what
/// the parser quoted): cut, and escaped for whoever reads the error.
pub(crate) fn echoed(text: &str, max: usize) -> String {
    crate::redact::escape_control(&crate::policy::gate::cut(text, max)).into_owned()
}

/// A message's `params` as Warden's own paths read them: an object, else
/// `null` (refused). serde reads a struct from an array too, by position,
/// which rmcp refuses: `[null, "deploy", …]` ran a call whose name
/// nothing in front of Warden would see.
pub(crate) fn params_of(params: Option<&serde_json::value::RawValue>) -> &str {
    params
        .map(|p| p.get())
        .filter(|p| an_object(p.as_bytes()))
        .unwrap_or("null")
}

/// Whether a JSON text is an object (its first byte past whitespace is
/// `{`): a derived `Deserialize` struct reads an array too, by position,
/// which the SDK refuses; what Warden's own paths take, it must accept.
pub(crate) fn an_object(json: &[u8]) -> bool {
    json.iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .is_some_and(|b| *b == b'{')
}

/// Whether a field is there at all (for `#[serde(deserialize_with)]`).
pub(crate) fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    <serde::de::IgnoredAny as serde::Deserialize>::deserialize(d).map(|_| true)
}

/// A failed call as its agent reads it: its mistakes and what ended the tool
/// whole; the host's own failures without their detail (paths, the store).
pub(crate) fn for_agent(e: &Error) -> String {
    use crate::GrantError::{File, Open, OutsideCeiling};
    let what = match e {
        Error::Grant(File { .. } | Open { .. } | OutsideCeiling { .. }) => RUN,
        Error::UnknownTool { .. } | Error::Grant(_) | Error::Input(_) => return e.to_string(),
        Error::Limit(_) | Error::Trap(_) | Error::Cancelled => return e.to_string(),
        Error::Audit(_) => "the audit trail cannot be written, so nothing is done unrecorded",
        _ => RUN,
    };
    host_failed(e, what)
}

pub(crate) const RUN: &str = "the call could not be run";

/// Logs `e` (escaped) and tells the agent only `what` failed.
pub(crate) fn host_failed(e: &dyn std::fmt::Display, what: &str) -> String {
    let detail = crate::redact::escape_control(&e.to_string()).into_owned();
    tracing::warn!("a call failed on the host: {detail}");
    format!("host error: {what}; the server's log says why")
}

#[cfg(test)]
mod tests {
    use super::Hints;

    #[test]
    fn only_an_object_is_a_message_warden_reads() {
        assert!(super::an_object(b" \r\n\t{\"jsonrpc\":\"2.0\"}"));
        assert!(!super::an_object(br#"["2.0","tools/call",1,{}]"#));
        assert!(!super::an_object(b"  "));
        assert!(!super::an_object(b"\xc2\xa0{}"), "not JSON whitespace");
    }
    use crate::caps::fs::FsGrant;
    use crate::caps::http::HttpGrant;
    use crate::{Grant, Rights};

    fn with_fs(rights: &str) -> Grant {
        let mut g = Grant::new("t");
        g.fs.insert(
            "workspace".into(),
            FsGrant {
                path: "/w".into(),
                rights: rights.parse::<Rights>().unwrap(),
            },
        );
        g
    }

    fn with_http(methods: &[&str]) -> Grant {
        let mut g = Grant::new("t");
        g.http.push(HttpGrant {
            url: "https://api.example/".into(),
            methods: Some(methods.iter().map(|m| m.to_string()).collect()),
        });
        g
    }

    /// (readOnly, destructive, idempotent, openWorld)
    fn hints(g: &Grant) -> (bool, bool, bool, bool) {
        let a = Hints::of(g).annotations();
        (
            a.read_only_hint.unwrap(),
            a.destructive_hint.unwrap(),
            a.idempotent_hint.unwrap(),
            a.open_world_hint.unwrap(),
        )
    }

    #[test]
    fn a_read_grant_is_read_only_and_closed() {
        assert_eq!(hints(&with_fs("read")), (true, false, true, false));
        assert_eq!(hints(&Grant::new("t")), (true, false, true, false));
        assert_eq!(Hints::closed(), Hints::of(&Grant::new("t")));
    }

    #[test]
    fn a_write_grant_is_destructive_not_additive() {
        // A write may overwrite or truncate, and may append (not idempotent).
        assert_eq!(hints(&with_fs("read,write")), (false, true, false, false));
        assert_eq!(hints(&with_fs("delete")), (false, true, false, false));
    }

    #[test]
    fn egress_is_open_world_and_read_only_only_for_get_and_head() {
        assert_eq!(
            hints(&with_http(&["GET", "HEAD"])),
            (true, false, true, true)
        );
        assert_eq!(
            hints(&with_http(&["GET", "POST"])),
            (false, true, false, true)
        );
        assert_eq!(hints(&with_http(&["DELETE"])), (false, true, false, true));
        // No method list: the ceiling's, which may hold any.
        let mut any = Grant::new("t");
        any.http.push(HttpGrant {
            url: "https://api.example/".into(),
            methods: None,
        });
        assert_eq!(hints(&any), (false, true, false, true));
    }

    #[test]
    fn a_deploy_target_changes_state_in_the_open_world() {
        let mut g = with_fs("read");
        g.deploy.insert("production".into());
        assert_eq!(hints(&g), (false, true, false, true));
    }
}
