//! Standard `wasi:http` outgoing requests, under the same egress policy as
//! `warden:tool/http`: the one egress check ([`super::egress`]), the same
//! gate (runtime policy, records, approval), and a connection to the address
//! that was checked. Secrets cannot be attached by reference here.
//!
//! Both bodies are buffered, bounded by the host call limit: the request's,
//! so the egress check scans it for revealed secret values like any other
//! (a guest must finish its body before it waits for the response, as the
//! usual client libraries do); the response's, so every granted secret a
//! server reflects (its headers, its body) is redacted before the tool reads
//! any of it. A redaction over a stream would need a window as long as the
//! longest encoding of a value and would still hand the tool the bytes
//! before a match completes; the limit bounds the memory either way.

use super::REQUEST_TIMEOUT;
use super::approve::Approvable;
use super::conn::Failure;
use super::egress::{self, Egress, Refused, Via};
use crate::policy::gate::{Gate, Pass};
use crate::redact::Redactor;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// Per-invocation hooks for `wasi:http`: the invocation's egress and gate,
/// and its requests' tasks.
pub(crate) struct EgressHooks {
    pub(crate) egress: Egress,
    pub(crate) gate: Gate,
    /// Stopped, each task awaited, before the invocation's end is written:
    /// `wasmtime-wasi-http` keeps the response's future in the store's
    /// table, which only aborts its task when dropped, and a task part-way
    /// through a poll on another thread may send after that.
    pub(crate) requests: super::Requests,
    /// The bytes its requests' bodies and responses hold in the host.
    pub(crate) held: Held,
}

/// The bytes an invocation's `wasi:http` bodies hold in the host at once,
/// request and response, from the first byte buffered until the request
/// is sent (a request's) or the tool drops the body (a response's). Each
/// body is bounded by the host call limit, and so are all of them
/// together: before, a tool with no egress grant at all could start
/// hundreds of requests, each buffering 16 MiB before its check, and hold
/// gigabytes of the host's memory against a 64 MiB memory limit. A
/// response's head is charged with its body.
///
/// It also holds the invocation's turns to connect: at most
/// [`MAX_CONNECTIONS`] of its requests are on the network at once, the rest
/// wait their turn. A tool that never awaits its responses could
/// otherwise open as many sockets as its table takes handles (~2,000), past
/// the descriptors `serve` keeps for every tool.
#[derive(Clone, Default)]
pub(crate) struct Held(std::sync::Arc<Holding>);

pub(crate) struct Holding {
    bytes: std::sync::atomic::AtomicUsize,
    connections: tokio::sync::Semaphore,
}

impl Default for Holding {
    fn default() -> Self {
        Holding {
            bytes: Default::default(),
            connections: tokio::sync::Semaphore::new(MAX_CONNECTIONS),
        }
    }
}

/// How many of an invocation's `wasi:http` requests connect at once.
pub(crate) const MAX_CONNECTIONS: usize = 32;

/// Bytes charged to [`Held`], given back when dropped.
struct Charge {
    held: Held,
    bytes: usize,
}

impl Charge {
    /// Charges `n` more bytes, unless that takes the invocation's bodies
    /// past `limit` together (then nothing is charged).
    fn add(&mut self, n: usize, limit: usize) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let taken = self.held.0.bytes.fetch_update(Relaxed, Relaxed, |held| {
            held.checked_add(n).filter(|&total| total <= limit)
        });
        if taken.is_ok() {
            self.bytes += n;
        }
        taken.is_ok()
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        (self.held.0.bytes).fetch_sub(self.bytes, std::sync::atomic::Ordering::Relaxed);
    }
}

type SendResult = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Error,
>;

/// What a request body's stream takes in one write, and how many writes
/// it keeps before the host reads them: the bytes a body the host has not
/// read yet holds (two of these), in every body a tool opens. wasmtime's
/// defaults (a MiB, once) let a tool that never sends its requests hold
/// 2 MiB per body, as many bodies as the store's table takes.
const BODY_CHUNK: usize = 16 << 10;

impl WasiHttpHooks for EgressHooks {
    fn p2_outgoing_body_buffer_chunks(&mut self) -> usize {
        1
    }

    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        BODY_CHUNK
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let egress = self.egress.clone();
        let gate = self.gate.clone();
        let held = self.held.clone();
        let sent = self.requests.run(move || send(egress, gate, held, request));
        Box::new(async move {
            sent.await.unwrap_or_else(|| {
                Err(Error::InternalError(Some(
                    "the request was stopped with its invocation".into(),
                )))
            })
        })
    }
}

/// Checks, gates and sends one request. A record that cannot be written
/// refuses the request (fail closed: no record, no request).
async fn send(
    egress: Egress,
    gate: Gate,
    held: Held,
    request: http::Request<WasiBody>,
) -> SendResult {
    let denied = |_| Error::HttpRequestDenied;
    let method = request.method().as_str().to_owned();
    let url = request.uri().to_string();
    let limit = gate.hostcall_limit();
    let wait = gate.deadline().saturating_duration_since(Instant::now());
    let (parts, body) = request.into_parts();
    // Up to one byte over the limit: the check refuses that with `http.size`.
    let mut charge = Charge { held, bytes: 0 };
    let (body, trailers, crowded) =
        buffer(body, limit.saturating_add(1), wait, &mut charge).await?;
    let mut headers: Vec<(&str, &[u8])> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .collect();
    headers.extend(
        trailers
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_bytes())),
    );
    let check = egress::Request {
        via: Via::Wasi,
        method: &method,
        url: &url,
        headers,
        body: Some(&body),
        bearer: None,
        limit,
    };
    let (shown, checked) = egress.check(&check, gate.redactor()).await;
    drop(check);
    let checked = match checked {
        Ok(c) => c,
        Err((refusal, why)) => {
            gate.refuse("http", &shown.method, &shown.resource, refusal)
                .await
                .map_err(denied)?;
            return Err(match why {
                Refused::Address => Error::DestinationIpProhibited,
                _ => Error::HttpRequestDenied,
            });
        }
    };
    if crowded {
        let refusal = crate::policy::Decision::deny(
            "http.size",
            format!(
                "the invocation's requests in flight hold more than the host call limit of {limit} bytes of bodies together; finish or drop one first"
            ),
        );
        gate.refuse("http", &shown.method, &shown.resource, refusal)
            .await
            .map_err(denied)?;
        return Err(Error::HttpRequestBodySize(None));
    }
    // The body and trailers are read whole above, so an approval binds
    // what is sent, as on `warden:tool/http`.
    let request = || Approvable {
        headers: fields(&parts.headers),
        trailers: trailers.as_ref().map(|t| fields(t)).unwrap_or_default(),
        bearer: None,
        body: &body,
    };
    let args = checked.approval_args(gate.has_policy(), request);
    let summary = || request().summary(&checked, &shown.resource, gate.redactor());
    let call = egress.send_call(&checked, &shown, gate.has_policy(), &args, &summary);
    let Ok(pass) = gate.pass(call).await.map_err(denied)? else {
        return Err(Error::HttpRequestDenied);
    };
    checked.note_contacted(&gate);
    // Its turn to connect (the invocation's end stops the wait with it).
    let turns = charge.held.clone();
    let Ok(_turn) = turns.0.connections.acquire().await else {
        return Err(Error::InternalError(None));
    };
    // Tripped while it waited: not sent, as after an approval.
    if gate.is_tripped() {
        let why = "not sent: the invocation attempted an exfiltration while this request waited";
        gate.failed(pass, why, true).map_err(denied)?;
        return Err(Error::HttpRequestDenied);
    }
    let timeout = REQUEST_TIMEOUT.min(gate.deadline().saturating_duration_since(Instant::now()));
    let started = Instant::now();
    let mut parts = parts;
    if gate.redactor().holds_secrets() {
        super::readable::ask_whole(&mut parts.headers);
    }
    // Charged until hyper has sent it and drops it.
    let held = charge.held.clone();
    let request = http::Request::from_parts(parts, replay(body, trailers, Some(charge)));
    let mut found = BTreeSet::new();
    // Within one timeout, as `warden:tool/http`'s exchange: its steps (the
    // connection, the head, the body) each within it took up to three.
    let sent = send_pinned(
        &pass,
        request,
        &checked,
        (timeout, limit),
        (gate.redactor(), &mut found),
        held,
    );
    let result = tokio::time::timeout(timeout, sent)
        .await
        .unwrap_or(Err(Error::ConnectionReadTimeout));
    let unasked = egress::unasked(&found, None, gate.redactor());
    let result = match &unasked {
        Some(_) if result.is_ok() => Err(Error::HttpRequestDenied),
        _ => result,
    };
    checked
        .record(&gate, pass, started, |r| match &result {
            Ok((resp, _)) => {
                r.status = Some(resp.status().as_u16());
                r.outcome = Some("ok".into());
                r.message = egress::reflected(&found);
            }
            Err(e) => {
                r.outcome = Some("error".into());
                r.message = Some(unasked.clone().unwrap_or_else(|| e.to_string()));
            }
        })
        .map_err(denied)?;
    if let Some(why) = unasked {
        let resource = &shown.resource;
        gate.refuse_guess(why, "http", &checked.method, resource)
            .map_err(denied)?;
    }
    result
}

/// A request's fields as its approval binds them: `host` left out (the
/// checked URL's, which the approval names).
fn fields(map: &HeaderMap) -> Vec<(&str, &[u8])> {
    (map.iter())
        .filter(|(k, _)| **k != http::header::HOST)
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .collect()
}

/// A body read whole, up to `most` bytes (reading stops once past it), and
/// its trailers, within `wait`; each chunk charged to the invocation's
/// bodies held together, which may hold `most - 1` bytes: reading stops
/// too once they would hold more (`true`: crowded out). A body alone over
/// the limit is read to `most` bytes, for its check to refuse by size.
async fn buffer(
    mut body: WasiBody,
    most: usize,
    wait: Duration,
    charge: &mut Charge,
) -> Result<(Bytes, Option<HeaderMap>, bool), Error> {
    let read = async {
        let mut data = BytesMut::new();
        let mut trailers: Option<HeaderMap> = None;
        while let Some(frame) = body.frame().await {
            match frame?.into_data() {
                Ok(chunk) => {
                    let take = chunk.len().min(most - data.len());
                    if !charge.add(take, most.saturating_sub(1)) {
                        let alone = charge.bytes + take >= most;
                        if !alone {
                            return Ok((data.freeze(), trailers, true));
                        }
                    }
                    data.extend_from_slice(&chunk[..take]);
                    if data.len() >= most {
                        break;
                    }
                }
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        trailers.get_or_insert_with(HeaderMap::new).extend(t);
                    }
                }
            }
        }
        Ok((data.freeze(), trailers, false))
    };
    tokio::time::timeout(wait, read)
        .await
        .map_err(|_| Error::ConnectionWriteTimeout)?
}

/// A buffered body as a body again, its trailers after its data.
/// With `charge`, the bytes stay charged to the invocation until the body
/// is dropped.
fn replay(data: Bytes, trailers: Option<HeaderMap>, charge: Option<Charge>) -> WasiBody {
    use futures_util::StreamExt as _;
    let mut frames = vec![Ok(Frame::data(data))];
    if let Some(t) = trailers {
        frames.push(Ok(Frame::trailers(t)));
    }
    let frames = futures_util::stream::iter(frames).map(move |frame| {
        let _held = &charge;
        frame
    });
    StreamBody::new(frames).boxed_unsync()
}

/// The response as the tool may see it: its body buffered (bounded by the
/// limit `send_pinned` put on it), and every granted secret value redacted
/// from its header values and body; a header whose name holds one is
/// dropped (a name cannot hold the marker), `content-length` follows the
/// redacted body and no reason phrase is kept. Adds the names found.
async fn redact_response(
    resp: http::Response<WasiBody>,
    (redactor, found): (&Redactor, &mut BTreeSet<String>),
    (wait, limit): (Duration, usize),
    held: Held,
) -> Result<http::Response<WasiBody>, Error> {
    let (mut parts, body) = resp.into_parts();
    let none = Redactor::default();
    let redactor = if redactor.holds_secrets() {
        redactor
    } else {
        &none
    };
    if !redactor.is_empty() {
        let headers = parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes()));
        if let Some(why) = super::readable::unreadable(parts.status.as_u16(), headers) {
            tracing::debug!("wasi:http response refused: {why}");
            return Err(match parts.status.as_u16() {
                206 => Error::HttpProtocolError,
                _ => Error::HttpResponseContentCoding(Some(why)),
            });
        }
    }
    let mut charge = Charge { held, bytes: 0 };
    // The head and trailers stay in the host until the tool drops the
    // response: charged with its body.
    let size = |m: &HeaderMap| -> usize { m.iter().map(|(k, v)| k.as_str().len() + v.len()).sum() };
    if !charge.add(size(&parts.headers), limit) {
        return Err(Error::HttpResponseHeaderSectionSize(None));
    }
    let most = limit.saturating_add(1);
    let read = buffer(body, most, wait, &mut charge).await;
    let (data, trailers) = match read {
        Ok((data, trailers, false)) => (data, trailers),
        // Past the limit alone (the body's own limit says so first) or
        // together with the invocation's other bodies.
        Ok((_, _, true)) => return Err(Error::HttpResponseBodySize(None)),
        Err(Error::ConnectionWriteTimeout) => return Err(Error::ConnectionReadTimeout),
        Err(e) => return Err(e),
    };
    if !charge.add(trailers.as_ref().map_or(0, size), limit) {
        return Err(Error::HttpResponseTrailerSectionSize(None));
    }
    parts.extensions.remove::<hyper::ext::ReasonPhrase>();
    let data = match redactor.redact_found(&data, found) {
        Some(r) => Bytes::from(r),
        None => data,
    };
    let redact_map = |map: HeaderMap, found: &mut BTreeSet<String>| {
        let mut out = HeaderMap::with_capacity(map.len());
        let mut name = None;
        for (k, v) in map {
            // `into_iter` names a header once, before all its values.
            if let Some(k) = k {
                name = (redactor
                    .redact_found(k.as_str().as_bytes(), found)
                    .is_none())
                .then_some(k);
            }
            let Some(k) = &name else { continue };
            let v = match redactor.redact_found(v.as_bytes(), found) {
                Some(r) => HeaderValue::from_bytes(&r).unwrap_or(HeaderValue::from_static("")),
                None => v,
            };
            out.append(k.clone(), v);
        }
        out
    };
    parts.headers = redact_map(std::mem::take(&mut parts.headers), found);
    if parts.headers.contains_key(http::header::CONTENT_LENGTH) {
        parts
            .headers
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(data.len()));
    }
    let trailers = trailers.map(|t| redact_map(t, found));
    Ok(http::Response::from_parts(
        parts,
        replay(data, trailers, Some(charge)),
    ))
}

/// Sends `req` over a connection to `addr` (TLS verifies the origin's host
/// name) and reads its response, redacted ([`redact_response`]); the
/// connection is closed once it is read.
async fn send_pinned(
    _pass: &Pass<'_, ()>,
    mut req: http::Request<WasiBody>,
    checked: &egress::Checked,
    (timeout, limit): (Duration, usize),
    redacting: (&Redactor, &mut BTreeSet<String>),
    held: Held,
) -> SendResult {
    // The request as checked: its method, the request line's path and
    // query, and `Host`, from the checked URL, not as the tool wrote them.
    let (target, host) = checked.origin_form();
    *req.method_mut() = http::Method::from_bytes(checked.method.as_bytes())
        .map_err(|_| Error::HttpRequestMethodInvalid)?;
    *req.uri_mut() = http::Uri::builder()
        .path_and_query(target)
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;
    let host = HeaderValue::from_str(&host).map_err(|_| Error::HttpRequestUriInvalid)?;
    req.headers_mut().insert(http::header::HOST, host);
    let super::conn::Connection {
        mut sender,
        mut driver,
    } = super::conn::open(checked.address, &checked.origin, timeout)
        .await
        .map_err(|e| match e {
            Failure::Timeout => Error::ConnectionTimeout,
            Failure::Connect(e) => Error::Connect(e),
            // In words of our own: rustls's can list a certificate's names.
            Failure::Tls(e) => Error::Tls(std::io::Error::other(
                super::conn::tls_reason(&e).into_owned(),
            )),
            Failure::Http(e) => Error::from(e),
        })?;
    let exchange = async {
        let resp = tokio::time::timeout(timeout, sender.send_request(req))
            .await
            .map_err(|_| Error::ConnectionReadTimeout)??;
        let resp = resp.map(|body| {
            http_body_util::Limited::new(body, limit)
                .map_err(move |e| match e.downcast::<hyper::Error>() {
                    Ok(h) => Error::from(*h),
                    Err(_) => Error::HttpResponseBodySize(Some(limit as u64)),
                })
                .boxed_unsync()
        });
        redact_response(resp, redacting, (timeout, limit), held).await
    };
    let resp = driver.beside(std::pin::pin!(exchange)).await?;
    // Read whole: nothing is left for the connection to do.
    let io: Box<dyn Future<Output = Result<(), Error>> + Send> = Box::new(async { Ok(()) });
    Ok((resp, io))
}
