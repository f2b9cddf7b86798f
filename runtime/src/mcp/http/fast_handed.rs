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
use hyper::body::{Body as _, Frame, SizeHint};
use rmcp::model::RequestId;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// The longest request id taken, as JSON (a number, or a string of up to
/// about this many bytes): real clients send numbers or short strings.
pub(crate) const MAX_ID: usize = 256;

/// Requests one session may have rmcp answering at once.
pub(crate) const MAX_HANDED: usize = 256;

/// A request id reserved while rmcp answers it.
pub(crate) struct Handed {
    session: Arc<Session>,
    id: RequestId,
}

impl Drop for Handed {
    fn drop(&mut self) {
        lock(&self.session.handed).remove(&self.id);
    }
}

/// Why a request id is refused, if it is: too long, in use, or past the
/// session's requests in flight.
pub(super) fn refusal(session: &Session, id: &RequestId) -> Option<rmcp::ErrorData> {
    let long = match id {
        RequestId::String(s) => s.len() > MAX_ID,
        RequestId::Number(_) => false,
    };
    if long {
        let e =
            format!("request id longer than {MAX_ID} bytes (expected a number or a short string)");
        return Some(rmcp::ErrorData::invalid_request(e, None));
    }
    if lock(&session.running).contains_key(id) || lock(&session.handed).contains(id) {
        return Some(call::id_in_use());
    }
    (lock(&session.handed).len() >= MAX_HANDED).then(|| {
        let e = format!(
            "this session has {MAX_HANDED} requests still being answered (expected at most \
             that many at once)"
        );
        rmcp::ErrorData::invalid_request(e, None)
    })
}

impl Sessions {
    /// Reserves the id of a request in a session for rmcp to answer;
    /// `Err`: it is refused, answered so. `Ok(None)`: nothing to reserve
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
        let (Some(session), Some(id), Some(_)) =
            (self.get(&parts.headers), &message.id, &message.method)
        else {
            return Ok(None);
        };
        if let Some(e) = refusal(&session, id) {
            return Err(answer::refused(e, id.clone(), true));
        }
        lock(&session.handed).insert(id.clone());
        Ok(Some(Handed {
            session,
            id: id.clone(),
        }))
    }
}

/// rmcp's answer to a request whose id is reserved: the id is in use until
/// the answer's body ends. A client gone before that leaves rmcp still
/// answering: the rest of the body is read (and dropped) on a task of its
/// own, until it ends or the session does, and only then is the id free.
pub(crate) struct Answer {
    body: Body,
    handed: Option<Handed>,
    ended: bool,
}

impl Answer {
    pub(crate) fn of(
        response: http::Response<Body>,
        handed: Option<Handed>,
    ) -> http::Response<Body> {
        match handed {
            None => response,
            Some(h) => response.map(|body| {
                Answer {
                    body,
                    handed: Some(h),
                    ended: false,
                }
                .boxed()
            }),
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
        if let Poll::Ready(None) = frame {
            self.ended = true;
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
        if self.ended || self.body.is_end_stream() {
            return; // `handed` dropped: the id is free
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut body = std::mem::replace(&mut self.body, http_body_util::Empty::new().boxed());
        let closed = handed.session.closed.clone();
        runtime.spawn(async move {
            tokio::select! {
                () = async { while let Some(Ok(_)) = body.frame().await {} } => {}
                () = closed.cancelled() => {}
            }
            drop(handed);
        });
    }
}
