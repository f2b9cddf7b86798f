//! How the short path (`fast.rs`) answers a call it took: one
//! `application/json` response when the call ends before it has progress
//! to tell; an event stream once it has (a call whose `_meta` asked for
//! progress and runs past the first progress interval): the progress
//! notifications as they come, then the answer, then the end of the stream.
//! The streamable HTTP transport lets a server answer a POST either way.
//!
//! The call runs in a task of its own, so a client that goes away (drops
//! the request, or the event stream) cancels it rather than dropping it
//! half-way.

use super::super::WardenMcp;
use super::super::call::{self, Caller, Link};
use super::Body;
use bytes::Bytes;
use futures_util::{FutureExt as _, StreamExt};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use rmcp::model::{
    CallToolRequestParams, ProgressNotification, ProgressNotificationParam, RequestId,
    RequestMetaObject, ServerJsonRpcMessage, ServerNotification,
};
use std::convert::Infallible;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

/// Where a call's progress goes: an event stream if its `_meta` asked for
/// progress (with the receiving end, for [`answer`]), else nowhere.
pub(super) fn link(meta: Option<&RequestMetaObject>) -> (Link, Option<Notes>) {
    if meta
        .and_then(RequestMetaObject::get_progress_token)
        .is_none()
    {
        return (Link::None, None);
    }
    let (tx, rx) = watch::channel(None);
    (Link::Events(tx), Some(rx))
}

/// The progress of a call, as [`link`] gave it: its newest note only. A
/// later note replaces one not yet sent, so a client that reads slowly
/// gets the latest progress rather than a backlog, and a call holds one
/// note however long it runs (a queue's first block is ~4 KiB a call, the
/// `mcp` bench's 1,000 calls in flight).
pub(super) type Notes = watch::Receiver<Option<ProgressNotificationParam>>;

/// The next note not yet sent; `None` once the call has ended (its link
/// is gone).
async fn next_note(notes: &mut Notes) -> Option<ProgressNotificationParam> {
    loop {
        notes.changed().await.ok()?;
        if let Some(note) = notes.borrow_and_update().clone() {
            return Some(note);
        }
    }
}

/// A call's encoded answer: its HTTP status and body, from its task.
type Answered = Result<(StatusCode, Bytes), serde_json::Error>;

/// Starts a call taken here, to be answered in the shape of a version
/// before 2026-07-28 (`legacy`) or of 2026-07-28 with its HTTP status for
/// errors (rmcp's `jsonrpc_http_status`); `notes` are its progress, if it
/// asked for any; `done` runs when it ends.
///
/// Not `async`: an async function's arguments stay in its future for as
/// long as it runs; what waits for the answer ([`Answering`]) holds only
/// what it needs (a few hundred bytes a call in flight, not ~2 KiB).
pub(super) fn answer(
    mcp: &WardenMcp,
    caller: Caller,
    request: CallToolRequestParams,
    id: RequestId,
    legacy: bool,
    notes: Option<Notes>,
    done: impl FnOnce() + Send + 'static,
) -> Answering {
    let cancel = caller.cancelled().clone();
    let (tx, rx) = oneshot::channel::<Answered>();
    // Run even if the call panics, or its task is dropped before it first
    // runs (the guard goes with the task): its session must not count it
    // as running forever.
    let ended = Done(Some(done));
    let task_id = id.clone();
    // The call's future as it is, not moved into a task's own (which
    // would keep its arguments a second time) for as long as it runs.
    tokio::spawn(
        mcp.clone()
            .tools_call(caller, request)
            .map(move |response| {
                drop(ended);
                let id = task_id;
                let (status, answer) = match response.and_then(|r| call::shape(r, legacy)) {
                    Ok(result) => (StatusCode::OK, ServerJsonRpcMessage::response(result, id)),
                    Err(e) => (status(&e, legacy), ServerJsonRpcMessage::error(e, Some(id))),
                };
                let answer = serde_json::to_vec(&answer).map(|b| (status, Bytes::from(b)));
                // A client gone by now has nobody to read it.
                let _ = tx.send(answer);
            }),
    );
    Answering {
        rx,
        notes,
        id,
        gone: cancel.drop_guard(),
    }
}

/// The answer to a call refused before it started.
pub(super) fn refused(e: rmcp::ErrorData, id: RequestId, legacy: bool) -> Answering {
    let (tx, rx) = oneshot::channel::<Answered>();
    let status = status(&e, legacy);
    let answer = ServerJsonRpcMessage::error(e, Some(id.clone()));
    let _ = tx.send(serde_json::to_vec(&answer).map(|b| (status, Bytes::from(b))));
    Answering {
        rx,
        notes: None,
        id,
        gone: CancellationToken::new().drop_guard(),
    }
}

/// A call running on its task: what its answer still needs.
pub(crate) struct Answering {
    rx: oneshot::Receiver<Answered>,
    notes: Option<Notes>,
    id: RequestId,
    /// Cancels the call if the request is dropped before it is answered.
    gone: DropGuard,
}

impl Answering {
    /// The call's answer: JSON if it ends before it has progress to tell,
    /// else an event stream.
    pub(crate) async fn response(self) -> Response<Body> {
        let Answering {
            mut rx,
            notes,
            id,
            gone,
        } = self;
        let first = match notes {
            None => Ok((&mut rx).await),
            Some(mut notes) => tokio::select! {
                biased;
                answered = &mut rx => Ok(answered),
                // Closed before the answer came: wait for the answer.
                Some(note) = next_note(&mut notes) => Err((note, notes)),
            },
        };
        match first {
            Ok(answered) => {
                gone.disarm();
                match answered {
                    Ok(Ok((status, body))) => json(status, body),
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
                }
            }
            Err((note, notes)) => events(note, notes, rx, id, gone),
        }
    }
}

/// Runs its function when dropped.
struct Done<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> Drop for Done<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

/// What an event stream still has to send.
struct Stream {
    first: Option<ProgressNotificationParam>,
    notes: Notes,
    answer: Option<oneshot::Receiver<Answered>>,
    id: RequestId,
    /// Cancels the call if the stream is dropped before its answer is sent.
    gone: Option<DropGuard>,
}

/// An event stream that starts with `first`: then the rest of `notes`, then
/// the answer.
fn events(
    first: ProgressNotificationParam,
    notes: Notes,
    answer: oneshot::Receiver<Answered>,
    id: RequestId,
    gone: DropGuard,
) -> Response<Body> {
    let state = Stream {
        first: Some(first),
        notes,
        answer: Some(answer),
        id,
        gone: Some(gone),
    };
    let frames = futures_util::stream::unfold(state, |mut s| async move {
        let note = match s.first.take() {
            Some(note) => Some(note),
            None => next_note(&mut s.notes).await,
        };
        if let Some(note) = note {
            let note = ServerNotification::ProgressNotification(ProgressNotification::new(note));
            let event = event(&ServerJsonRpcMessage::notification(note));
            return Some((event, s));
        }
        let answered = s.answer.take()?.await;
        if let Some(gone) = s.gone.take() {
            gone.disarm();
        }
        let event = match answered {
            Ok(Ok((_, body))) => sse(&body),
            Ok(Err(e)) => {
                tracing::error!("MCP over HTTP: cannot encode an answer: {e}");
                let e = rmcp::ErrorData::internal_error("cannot encode the answer", None);
                event(&ServerJsonRpcMessage::error(e, Some(s.id.clone())))
            }
            Err(_) => {
                let e = rmcp::ErrorData::internal_error("host error: the call's task failed", None);
                event(&ServerJsonRpcMessage::error(e, Some(s.id.clone())))
            }
        };
        Some((event, s))
    });
    let body = StreamBody::new(frames.map(|b| Ok::<_, Infallible>(Frame::data(b))));
    let mut r = Response::new(BodyExt::boxed(body));
    let headers = r.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    // A proxy that buffers answers would hold the progress back.
    headers.insert("x-accel-buffering", http::HeaderValue::from_static("no"));
    r
}

/// `message` as one server-sent event.
fn event(message: &ServerJsonRpcMessage) -> Bytes {
    match serde_json::to_vec(message) {
        Ok(json) => sse(&json),
        Err(e) => {
            tracing::error!("MCP over HTTP: cannot encode a message: {e}");
            // A comment line: an event stream's reader skips it.
            Bytes::from_static(b": a message could not be encoded\n\n")
        }
    }
}

/// A JSON message as one server-sent event (JSON has no raw newline).
fn sse(json: &[u8]) -> Bytes {
    let mut b = Vec::with_capacity(json.len() + 8);
    b.extend_from_slice(b"data: ");
    b.extend_from_slice(json);
    b.extend_from_slice(b"\n\n");
    Bytes::from(b)
}

/// The HTTP status of an error answer, as rmcp gives it: 200 before
/// 2026-07-28 (`legacy`); from 2026-07-28, 400 for a version, capability or
/// header the request got wrong and 404 for an unknown method.
fn status(e: &rmcp::ErrorData, legacy: bool) -> StatusCode {
    use rmcp::model::ErrorCode;
    match e.code {
        _ if legacy => StatusCode::OK,
        ErrorCode::UNSUPPORTED_PROTOCOL_VERSION
        | ErrorCode::MISSING_REQUIRED_CLIENT_CAPABILITY
        | ErrorCode::HEADER_MISMATCH => StatusCode::BAD_REQUEST,
        ErrorCode::METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
        _ => StatusCode::OK,
    }
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

/// What reading a POST came to.
pub(crate) enum Posted {
    Answered(Response<Body>),
    /// A call the short path took, running on its task.
    Running(Answering),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slow reader gets the newest note, not a backlog; the stream's
    /// notes end when the call's link is gone.
    #[tokio::test]
    async fn a_note_not_yet_sent_is_replaced_by_the_next() {
        let meta: RequestMetaObject =
            serde_json::from_value(serde_json::json!({"progressToken": 7})).unwrap();
        let (Link::Events(tx), Some(mut notes)) = link(Some(&meta)) else {
            panic!("a call asking for progress gets an event link");
        };
        let token = meta.get_progress_token().unwrap();
        for secs in [1.0, 2.0, 3.0] {
            let link = Link::Events(tx.clone());
            link.progress(ProgressNotificationParam::new(token.clone(), secs))
                .await;
        }
        let note = next_note(&mut notes).await.expect("a note");
        assert_eq!(note.progress, 3.0);
        drop(tx);
        assert!(next_note(&mut notes).await.is_none());
        assert!(matches!(link(None), (Link::None, None)));
    }

    #[test]
    fn an_event_is_one_data_line_and_a_blank_line() {
        assert_eq!(&sse(br#"{"a":"x\ny"}"#)[..], b"data: {\"a\":\"x\\ny\"}\n\n");
    }

    #[test]
    fn errors_of_the_current_protocol_carry_rmcps_status() {
        use rmcp::ErrorData;
        let header = ErrorData::new(rmcp::model::ErrorCode::HEADER_MISMATCH, "h", None);
        let params = ErrorData::invalid_params("p", None);
        assert_eq!(status(&header, false), StatusCode::BAD_REQUEST);
        assert_eq!(status(&header, true), StatusCode::OK);
        assert_eq!(status(&params, false), StatusCode::OK);
    }
}
