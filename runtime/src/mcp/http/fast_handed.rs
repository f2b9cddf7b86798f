//! The ids of a session's requests that rmcp answers, in use until it has:
//! a request under one of them is refused, whichever would answer it.
//!
//! rmcp routes a session's answers by request id: a second request under
//! the id of one it is still answering takes its route, and the first
//! one's entry is then never completed, nor freed (with its id, of any
//! length) for as long as the session lives. A client reusing ids could
//! grow the server without end.

use super::super::Body;
use super::{Message, Session, Sessions, lock};
use crate::mcp::call;
use crate::mcp::http::answer::{self, Answering};
use bytes::Bytes;
use http::request::Parts;
use http_body_util::BodyExt as _;
use hyper::body::{Frame, SizeHint};
use rmcp::model::RequestId;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio_util::sync::CancellationToken;

/// The longest request id taken, as JSON (a number, or a string of up to
/// about this many bytes): real clients send numbers or short strings.
pub(crate) const MAX_ID: usize = 256;

/// Requests one session may have rmcp answering at once.
pub(crate) const MAX_HANDED: usize = 256;

/// A request id reserved while rmcp answers it; or the cancellation of
/// one (`cancel`), which frees it once rmcp has taken the cancellation.
pub(crate) struct Handed {
    session: Arc<Session>,
    id: RequestId,
    mark: Mark,
    cancel: bool,
}

/// A reservation as its session keeps it.
#[derive(Clone)]
pub(crate) struct Mark {
    /// Its own: the id may have been freed (its request cancelled) and
    /// reserved again since.
    n: u64,
    /// Cancelled when the id is freed before the reservation ends.
    freed: CancellationToken,
    /// rmcp has taken the request (its answer's head came): a cancellation
    /// reaches it there.
    delivered: Arc<std::sync::atomic::AtomicBool>,
}

impl Handed {
    /// Frees the id if it is still this reservation's.
    fn free(&self) {
        let mut handed = lock(&self.session.handed);
        if handed.get(&self.id).is_some_and(|m| m.n == self.mark.n) {
            handed.remove(&self.id);
            self.mark.freed.cancel();
        }
    }
}

impl Drop for Handed {
    fn drop(&mut self) {
        if !self.cancel {
            self.free();
        }
    }
}

/// Marks of reservations, each its own.
static MARKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Why a request id is refused, if it is: too long, or in use.
pub(super) fn refusal(session: &Session, id: &RequestId) -> Option<rmcp::ErrorData> {
    too_long(id).or_else(|| {
        let handed = lock(&session.handed);
        (lock(&session.running).contains_key(id) || handed.contains_key(id)).then(call::id_in_use)
    })
}

fn too_long(id: &RequestId) -> Option<rmcp::ErrorData> {
    match id {
        RequestId::String(s) if s.len() > MAX_ID => Some(rmcp::ErrorData::invalid_request(
            format!("request id longer than {MAX_ID} bytes (expected a number or a short string)"),
            None,
        )),
        _ => None,
    }
}

/// Reserves `id` in `session` (checked and taken under one hold of its
/// ids), unless it is refused; the reservation's mark.
fn reserve(session: &Session, id: &RequestId) -> Result<Mark, rmcp::ErrorData> {
    if let Some(e) = too_long(id) {
        return Err(e);
    }
    let mut handed = lock(&session.handed);
    if lock(&session.running).contains_key(id) || handed.contains_key(id) {
        return Err(call::id_in_use());
    }
    if handed.len() >= MAX_HANDED {
        return Err(rmcp::ErrorData::invalid_request(
            format!(
                "this session has {MAX_HANDED} requests still being answered (expected at most \
                 that many at once)"
            ),
            None,
        ));
    }
    let mark = Mark {
        n: MARKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        freed: CancellationToken::new(),
        delivered: Default::default(),
    };
    handed.insert(id.clone(), mark.clone());
    Ok(mark)
}

impl Sessions {
    /// Reserves the id of a request in a session for rmcp to answer;
    /// `Err`: it is refused, answered so. A cancellation of a request rmcp
    /// has taken: what frees its id once rmcp takes the cancellation (it
    /// then answers the request no more). `Ok(None)`: nothing to reserve
    /// (a new session, or none known here; no id, a message that is not a
    /// request).
    pub(crate) fn hand(
        &self,
        parts: &Parts,
        message: Option<&Message<'_>>,
        new_session: bool,
    ) -> Result<Option<Handed>, Answering> {
        let Some(message) = message.filter(|_| !new_session) else {
            return Ok(None);
        };
        let (Some(session), Some(method)) = (self.get(&parts.headers), &message.method) else {
            return Ok(None);
        };
        let Some(id) = &message.id else {
            let plain = message.plain() && super::plain(&parts.headers);
            return Ok(cancelled(session, method, message).filter(|_| plain));
        };
        match reserve(&session, id) {
            Ok(mark) => Ok(Some(Handed {
                session,
                id: id.clone(),
                mark,
                cancel: false,
            })),
            Err(e) => Err(answer::refused(e, id.clone(), true)),
        }
    }
}

/// The cancellation a notification makes of a request of `session` rmcp
/// has taken, if it is one. (Only one whose headers leave rmcp nothing to
/// decide, `fast::plain`, is taken for one: rmcp answers a notification on
/// the 2026-07-28 protocol 202 without passing it to the session.)
fn cancelled(session: Arc<Session>, method: &str, message: &Message<'_>) -> Option<Handed> {
    if method != "notifications/cancelled" {
        return None;
    }
    let params = crate::mcp::params_of(message.params);
    let id = serde_json::from_str::<rmcp::model::CancelledNotificationParam>(params)
        .ok()?
        .request_id?;
    let mark = lock(&session.handed).get(&id).cloned()?;
    mark.delivered
        .load(std::sync::atomic::Ordering::Acquire)
        .then_some(Handed {
            session,
            id,
            mark,
            cancel: true,
        })
}

/// What a line of an answer's body says, as far as the reservation goes:
/// whether it is the answer (a result or an error) to `id`.
#[derive(serde::Deserialize)]
struct Reply {
    id: Option<RequestId>,
    #[serde(default, deserialize_with = "crate::mcp::present")]
    result: bool,
    #[serde(default, deserialize_with = "crate::mcp::present")]
    error: bool,
}

/// Whether `data` (a JSON body, or events of a stream) holds the answer to
/// `id`.
fn answers(data: &[u8], id: &RequestId) -> bool {
    data.split(|&b| b == b'\n').any(|line| {
        let line = line.strip_prefix(b"data:").unwrap_or(line).trim_ascii();
        line.starts_with(b"{")
            && serde_json::from_slice::<Reply>(line)
                .is_ok_and(|r| (r.result || r.error) && r.id.as_ref() == Some(id))
    })
}

/// rmcp's answer to a request whose id is reserved: the id is in use until
/// the answer to it has passed, or the client cancels the request (rmcp
/// then answers it no more). A client gone before that leaves rmcp still
/// answering: the rest of the body is read (and dropped) on a task of its
/// own until the answer passes. A body that ends without it (its stream
/// taken over by a resumption, `Last-Event-ID`) leaves the id in use until
/// the session ends or the request is cancelled: rmcp may still be
/// answering it. A refusal (not 2xx) frees it at once.
pub(crate) struct Answer {
    body: Body,
    handed: Option<Handed>,
    answered: bool,
}

impl Answer {
    pub(crate) fn of(
        response: http::Response<Body>,
        handed: Option<Handed>,
    ) -> http::Response<Body> {
        let taken = response.status().is_success();
        match handed {
            // A cancellation rmcp took (it queues what it takes in order):
            // the request is answered no more, and its id is free.
            Some(h) if h.cancel => {
                if taken {
                    h.free();
                }
                response
            }
            // Refused (a bad `Accept`, version or header): rmcp holds
            // nothing of it, and the id is free.
            _ if !taken => response,
            None => response,
            Some(h) => response.map(|body| {
                h.mark
                    .delivered
                    .store(true, std::sync::atomic::Ordering::Release);
                Answer {
                    body,
                    handed: Some(h),
                    answered: false,
                }
                .boxed()
            }),
        }
    }

    fn saw(&mut self, frame: &Frame<Bytes>) {
        if let (Some(data), Some(h)) = (frame.data_ref(), &self.handed) {
            self.answered |= answers(data, &h.id);
        }
    }
}

impl hyper::body::Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &frame {
            self.saw(f);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        let Some(handed) = self.handed.take() else {
            return;
        };
        if self.answered {
            return; // `handed` dropped: the id is free
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut body = std::mem::replace(&mut self.body, http_body_util::Empty::new().boxed());
        let (closed, freed) = (handed.session.closed.clone(), handed.mark.freed.clone());
        runtime.spawn(async move {
            let drained = async {
                while let Some(Ok(frame)) = body.frame().await {
                    if frame.data_ref().is_some_and(|d| answers(d, &handed.id)) {
                        return true;
                    }
                }
                false
            };
            let answered = tokio::select! {
                answered = drained => answered,
                () = closed.cancelled() => true,
                () = freed.cancelled() => true,
            };
            if !answered {
                tokio::select! {
                    () = closed.cancelled() => {}
                    () = freed.cancelled() => {}
                }
            }
            drop(handed);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answer to a request is a result or an error under its id, in a
    /// JSON body or an event of a stream; a progress note, a request of the
    /// server's under the same id, or another call's answer is not.
    #[test]
    fn an_answer_is_a_result_or_an_error_under_the_id() {
        let id = RequestId::Number(7);
        for (data, is) in [
            (r#"{"jsonrpc":"2.0","id":7,"result":{}}"#, true),
            (
                "id: 0/3\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\"error\":{\"code\":1}}\n\n",
                true,
            ),
            (
                "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n",
                false,
            ),
            (
                r#"{"jsonrpc":"2.0","id":7,"method":"elicitation/create"}"#,
                false,
            ),
            (r#"{"jsonrpc":"2.0","id":8,"result":{}}"#, false),
            (r#"{"jsonrpc":"2.0","id":"7","result":{}}"#, false),
            ("data: \n\n", false),
        ] {
            assert_eq!(answers(data.as_bytes(), &id), is, "{data}");
        }
    }
}
