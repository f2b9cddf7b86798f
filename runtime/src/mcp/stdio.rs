//! MCP over stdio, with `tools/call` on a short path.
//!
//! rmcp serves the session: `initialize` and version negotiation, `ping`,
//! `tools/list`, errors for unknown methods and malformed messages, and
//! requests to the client. It sits behind an in-memory pipe; this loop reads
//! the client's lines and hands it every one but the hot path, a `tools/call`
//! in an initialized session, which the loop answers itself through the
//! same `tools/call` path as the SDK's handler (`WardenMcp::tools_call`):
//! no channel hop, no task per request, one write per answer. The loop
//! keeps what is its own: which calls it takes, their cancellation
//! (`notifications/cancelled`), and writing the answer in the shape the
//! SDK would give it. A call's id is in use while it runs, on either side
//! (`session.rs`): a call under it is refused.
//!
//! The session is what the `initialize` request said and the version the
//! SDK's answer negotiated; the loop notes both as they pass and knows the
//! session before the client sees the answer. The SDK keeps the calls that
//! need it: any before that (a 2026-07-28 session without `initialize`
//! stays with the SDK throughout), those whose `_meta` carries their own
//! protocol version or client (the SDK validates that lifecycle), and those
//! whose client answers approvals through `elicitation/create` requests
//! (protocols before 2026-07-28), since only the SDK sends requests to the
//! client.
//!
//! The loop also answers what the SDK would drop or mis-name: a line that
//! is not JSON gets a parse error, a line longer than the request cap an
//! invalid-request error (its bytes are skipped, never buffered), and
//! `tools/call` params that do not parse an invalid-params error.

mod fds;
mod out;
mod session;

pub(crate) use out::Out;

use session::{Handshake, SdkCalls, Session};

use super::call::{self, Caller, Client, Link};
use super::{Grants, WardenMcp};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt as _, StreamExt as _};
use rmcp::ErrorData as McpError;
use rmcp::ServiceExt as _;
use rmcp::model::{
    CallToolRequestParams, CancelledNotificationParam, RequestId, ServerJsonRpcMessage,
};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

/// The parts of a client line the loop looks at; the rest stays raw.
/// (`jsonrpc` and `method` may be written with escapes, `tools\/call`:
/// whatever the SDK parses, this does, or a call it runs would not hold
/// its id.)
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    jsonrpc: Option<Cow<'a, str>>,
    id: Option<RequestId>,
    #[serde(borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
    /// A `result` or `error` key (even `null`; both: not a `Line`).
    #[serde(default, rename = "result", alias = "error")]
    #[serde(deserialize_with = "super::present")]
    answer: bool,
}

/// A call's answer, once it has one, and the audit work owed once it is
/// written.
type Answer = Pin<Box<dyn Future<Output = (RequestId, ServerJsonRpcMessage)> + Send>>;

/// What a session's loop did, for the log (and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Served {
    /// `tools/call`s the loop answered itself.
    pub calls: u64,
    /// Lines handed to the SDK.
    pub to_sdk: u64,
    /// Lines answered with an error by the loop (not JSON, too long, bad
    /// `tools/call` params).
    pub refused: u64,
}

/// Serves `mcp` on this process's stdin and stdout until the client closes
/// its input or `shutdown` is cancelled; calls running then finish and are
/// answered first. A line longer than `max_request` bytes is refused.
pub async fn serve(
    mcp: WardenMcp,
    max_request: usize,
    shutdown: CancellationToken,
) -> std::io::Result<Served> {
    let (input, output, _restore) = fds::open();
    serve_on(mcp, input, output, max_request, shutdown).await
}

/// [`serve`] on any pair of streams.
pub async fn serve_on(
    mcp: WardenMcp,
    input: impl AsyncRead + Send + Unpin + 'static,
    output: impl AsyncWrite + Send + 'static,
    max_request: usize,
    shutdown: CancellationToken,
) -> std::io::Result<Served> {
    let Grants::One(grant) = mcp.shared.grants.clone() else {
        return Err(std::io::Error::other(
            "MCP over stdio serves one task grant (per-token grants are for HTTP)",
        ));
    };
    // Cancelled when the loop ends, or at once when it is told to stop.
    let ending = shutdown.child_token();
    let (out, notes) = Out::new(output, ending.clone());
    let notes = tokio::spawn(notes);

    // The SDK, behind an in-memory pipe.
    let (ours, theirs) = tokio::io::duplex(1 << 20);
    let (from_sdk, mut to_sdk) = tokio::io::split(ours);
    let session = Arc::new(Handshake::default());
    let sdk_calls = Arc::new(SdkCalls::default());
    let sdk = {
        let mcp = mcp.clone();
        tokio::spawn(async move {
            match mcp.serve(theirs).await {
                Ok(running) => {
                    let _ = running.waiting().await;
                }
                Err(e) => tracing::warn!("MCP over stdio: the client did not initialize: {e}"),
            }
        })
    };
    // The SDK's lines to the client. The answer to `initialize` sets the
    // session up before the client can see it, so its next call is known.
    let forward = {
        let (out, session, sdk_calls) = (out.clone(), session.clone(), sdk_calls.clone());
        tokio::spawn(async move {
            let mut lines = BufReader::new(from_sdk);
            let mut line = Vec::new();
            while matches!(lines.read_until(b'\n', &mut line).await, Ok(n) if n > 0) {
                session.answered(&line);
                sdk_calls.answered(&line);
                out.line(&line).await;
                line.clear();
            }
        })
    };

    let mut input = Lines {
        reader: BufReader::new(input),
        line: Vec::new(),
        cap: max_request,
        skipped: 0,
        returned: false,
    };
    let mut served = Served::default();
    let mut calls = Calls {
        mcp,
        grant,
        out: out.clone(),
        stopping: CancellationToken::new(),
        running: HashMap::new(),
        sdk: sdk_calls,
        answers: FuturesUnordered::new(),
    };
    // Told to stop, the loop takes nothing more, even with lines and
    // answers ready (`select!` picks among ready branches at random).
    while !shutdown.is_cancelled() {
        tokio::select! {
            read = input.next() => {
                let line = match read {
                    Ok(Some(Ok(line))) => line,
                    Ok(Some(Err(skipped))) => {
                        served.refused += 1;
                        let e = McpError::invalid_request(
                            format!("request too large: {skipped} bytes (this server takes lines up to {max_request} bytes)"),
                            None,
                        );
                        out.message(&ServerJsonRpcMessage::error(e, None)).await;
                        continue;
                    }
                    Ok(None) | Err(_) => break,
                };
                let take = match serde_json::from_slice::<Line>(line) {
                    // Else the SDK's to refuse (JSON skips what it ignores unchecked).
                    Ok(l)
                        if l.jsonrpc.as_deref() == Some("2.0")
                            && !l.answer
                            && super::an_object(line)
                            && std::str::from_utf8(line).is_ok() =>
                    {
                        calls.take(&l, &session)
                    }
                    // JSON, but not a message this loop reads: the SDK's.
                    Ok(_) => Take::No,
                    Err(e) if e.classify() == serde_json::error::Category::Data => Take::No,
                    Err(_) if line.trim_ascii().is_empty() => Take::Done,
                    Err(e) => Take::Refused(
                        None,
                        McpError::parse_error(
                            format!("not JSON: {e} (expected one JSON-RPC message per line)"),
                            None,
                        ),
                    ),
                };
                match take {
                    Take::Done => {}
                    Take::Called => served.calls += 1,
                    Take::No => {
                        served.to_sdk += 1;
                        if to_sdk.write_all(line).await.is_err() {
                            break;
                        }
                    }
                    Take::Refused(id, e) => {
                        served.refused += 1;
                        out.message(&ServerJsonRpcMessage::error(e, id)).await;
                    }
                }
            }
            Some((id, answer)) = calls.answers.next() => {
                calls.running.remove(&id);
                out.message(&answer).await;
            }
            () = shutdown.cancelled() => break,
        }
    }
    // Told to stop: calls still running finish and are answered (within
    // their deadlines and GRACE; a client that reads nothing for STALLED
    // is given up). The client gone: they are cancelled (nobody would
    // read their answers).
    ending.cancel();
    if !shutdown.is_cancelled() {
        calls.stopping.cancel();
    }
    let drain = async {
        while let Some((_, answer)) = calls.answers.next().await {
            out.message(&answer).await;
        }
        // And the calls the SDK runs (it answers them itself, through
        // `forward`), unless the client or the SDK is gone.
        while shutdown.is_cancelled() && !calls.sdk.is_empty() && !sdk.is_finished() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    if tokio::time::timeout(GRACE, drain).await.is_err() {
        tracing::warn!("MCP over stdio: calls still running after {GRACE:?}; stopping anyway");
    }
    // End of input for the SDK too; it gets a moment to flush.
    let _ = to_sdk.shutdown().await;
    let (sdk_abort, forward_abort) = (sdk.abort_handle(), forward.abort_handle());
    if tokio::time::timeout(FLUSH, async {
        let _ = sdk.await;
        let _ = forward.await;
    })
    .await
    .is_err()
    {
        sdk_abort.abort();
        forward_abort.abort();
    }
    notes.abort();
    out.finish(GRACE).await;
    tracing::debug!(?served, "MCP over stdio: session ended");
    Ok(served)
}

/// How long running calls get to finish once the loop stops.
const GRACE: Duration = Duration::from_secs(30);
/// How long the SDK gets to finish its lines after the loop stops.
const FLUSH: Duration = Duration::from_secs(2);

/// The client's input as lines of at most `cap` bytes.
struct Lines<R> {
    reader: R,
    line: Vec<u8>,
    cap: usize,
    /// Bytes of a too-long line skipped so far.
    skipped: usize,
    /// `line` holds a line already returned.
    returned: bool,
}

/// What the loop does with a line.
enum Take {
    /// Hand it to the SDK.
    No,
    /// Nothing more to do (a blank line, a cancellation the loop handled).
    Done,
    /// A call the loop runs and answers.
    Called,
    /// Answer it with this error.
    Refused(Option<RequestId>, McpError),
}

impl<R: AsyncBufRead + Unpin> Lines<R> {
    /// The next line (`Err` with its length when it was too long), `None`
    /// at the end of input. Cancel-safe: the only await is `fill_buf`,
    /// which consumes nothing, and a partial line stays in `line`.
    async fn next(&mut self) -> std::io::Result<Option<Result<&[u8], usize>>> {
        if std::mem::take(&mut self.returned) {
            self.line.clear();
        }
        loop {
            let chunk = self.reader.fill_buf().await?;
            let (take, ended) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None if chunk.is_empty() => (0, true),
                None => (chunk.len(), false),
            };
            if self.skipped > 0 || self.line.len() + take > self.cap {
                self.skipped += self.line.len() + take;
                self.line.clear();
            } else {
                self.line.extend_from_slice(&chunk[..take]);
            }
            self.reader.consume(take);
            if ended {
                self.returned = true;
                if self.skipped > 0 {
                    return Ok(Some(Err(std::mem::take(&mut self.skipped))));
                }
                return Ok((!self.line.is_empty()).then_some(Ok(self.line.as_slice())));
            }
        }
    }
}

/// The calls this loop answers itself.
struct Calls {
    mcp: WardenMcp,
    grant: Arc<crate::Grant>,
    out: Out,
    /// Parent of every call's cancellation: the client went away.
    stopping: CancellationToken,
    running: HashMap<RequestId, CancellationToken>,
    /// The calls the SDK runs: their ids are in use too.
    sdk: Arc<SdkCalls>,
    answers: FuturesUnordered<Answer>,
}

impl Calls {
    /// Takes a line the loop answers itself: a `tools/call` in an
    /// initialized session (unless its approvals must go through the SDK),
    /// or the cancellation of such a call. False hands the line to the SDK.
    fn take(&mut self, line: &Line, handshake: &Handshake) -> Take {
        let session = handshake.get();
        match (line.method.as_deref(), &line.id) {
            (Some("initialize"), Some(id)) => {
                handshake.asked(id, line.params);
                Take::No
            }
            (Some("notifications/cancelled"), None) => {
                let params = super::params_of(line.params);
                let id = serde_json::from_str::<CancelledNotificationParam>(params)
                    .ok()
                    .and_then(|p| p.request_id);
                let Some(id) = id else {
                    return Take::No;
                };
                match self.running.get(&id) {
                    Some(cancel) => {
                        cancel.cancel();
                        Take::Done
                    }
                    None => {
                        self.sdk.cancelled(&id);
                        Take::No
                    }
                }
            }
            (Some("tools/call"), Some(id)) => {
                // The id of a call running here or in the SDK is in use,
                // whichever would run this one.
                if self.running.contains_key(id) || self.sdk.running(id) {
                    return Take::Refused(Some(id.clone()), call::id_in_use());
                }
                // Parameters that do not parse are refused here, with the
                // id: the SDK would answer without it, and the id would
                // stay in use for good.
                let params = super::params_of(line.params);
                let request = match serde_json::from_str::<CallToolRequestParams>(params) {
                    Ok(r) => r,
                    Err(e) => return Take::Refused(Some(id.clone()), call::bad_call_params(e)),
                };
                // Before `initialize` has been answered, the SDK decides.
                let Some(session) = session else {
                    self.sdk.handed(id);
                    return Take::No;
                };
                let Some(caller) = self.caller(&request, session) else {
                    self.sdk.handed(id);
                    return Take::No;
                };
                self.running.insert(id.clone(), caller.cancelled().clone());
                let (mcp, id) = (self.mcp.clone(), id.clone());
                let legacy = !call::current(Some(&session.version));
                self.answers
                    .push(Box::pin(mcp.tools_call(caller, request).map(
                        move |response| {
                            let answer = match response.and_then(|r| call::shape(r, legacy)) {
                                Ok(result) => ServerJsonRpcMessage::response(result, id.clone()),
                                Err(e) => ServerJsonRpcMessage::error(e, Some(id.clone())),
                            };
                            (id, answer)
                        },
                    )));
                Take::Called
            }
            _ => Take::No,
        }
    }

    /// The caller of a call in the session `initialize` set up; `None`
    /// when the SDK must take the call: its `_meta` states its own protocol
    /// version or client (the inline lifecycle, which the SDK validates), or
    /// its approvals need `elicitation/create` requests, which only the SDK
    /// sends.
    fn caller(&self, request: &CallToolRequestParams, session: &Session) -> Option<Caller> {
        let meta = request.meta.as_ref();
        if meta.is_some_and(|m| {
            m.protocol_version().is_some()
                || m.client_capabilities().is_some()
                || m.client_info().is_some()
        }) {
            return None;
        }
        let client = Client {
            version: Some(&session.version),
            capabilities: Some(&session.capabilities),
            info: Some(&session.client),
        };
        let link = Link::Stdio(self.out.clone());
        Caller::new(
            self.grant.clone(),
            client,
            meta,
            link,
            self.stopping.child_token(),
        )
    }
}
