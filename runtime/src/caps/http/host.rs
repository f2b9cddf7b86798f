//! Host side of `warden:tool/http`: the one egress check, the gate, then
//! the request sent from the host to the address that was checked.

use super::REQUEST_TIMEOUT;
use super::approve::Approvable;
use super::conn;
use super::egress::{self, Checked, Refused, Via};
use crate::audit::Event;
use crate::bindings::warden::tool::http::{self as wit, ErrorCode, Host, Request, Response};
use crate::caps::secrets::SecretRef;
use crate::caps::secrets::SecretsCtx;
use crate::caps::secrets::check::Held;
use crate::policy::Decision;
use crate::policy::cedar::Resource as Subject;
use crate::policy::gate::Gate;
use crate::policy::gate::{Approval, Ask, HostCall, Pass};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use wasmtime::component::Resource;
use wasmtime::component::{HasData, Linker, ResourceTable};

type HttpResult<T> = wasmtime::Result<Result<T, wit::Error>>;

fn error(code: ErrorCode, message: impl Into<String>) -> wit::Error {
    wit::Error {
        code,
        message: message.into(),
    }
}

fn code(why: Refused) -> ErrorCode {
    match why {
        Refused::InvalidRequest => ErrorCode::InvalidRequest,
        Refused::TooLarge => ErrorCode::TooLarge,
        Refused::Expired => ErrorCode::Expired,
        Refused::Denied | Refused::Address => ErrorCode::Denied,
    }
}

/// What the `warden:tool/http` host impl sees of the store: the egress
/// rules, the secrets (to attach one by reference), the table, the gate.
pub(crate) struct HttpView<'a> {
    pub(crate) egress: &'a egress::Egress,
    pub(crate) secrets: &'a mut SecretsCtx,
    pub(crate) table: &'a mut ResourceTable,
    pub(crate) gate: &'a Gate,
    pub(crate) requests: &'a mut Requests,
}

/// The tasks of an invocation's requests, through `warden:tool/http` or
/// `wasi:http`. Each request (its check, its records and the exchange)
/// runs on a task of its own, not on the invocation's fiber: its futures
/// are polled deep, and every page of the fiber's stack they touch stays
/// resident for as long as the call waits (the `mcp` bench's 1,000 calls
/// in flight).
#[derive(Default)]
pub(crate) struct Requests {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The length at which finished tasks are next pruned: twice what was
    /// left the last time, so that a tool with many requests in flight at
    /// once costs each new one O(1), not a walk over all of them.
    prune_at: usize,
}

impl Requests {
    /// Runs the future `make` makes on a task of its own; the wait for its
    /// result, unless the task was stopped first. The future is made and
    /// boxed on the task: made here, a large future would be copied down
    /// the fiber's stack on its way into the task (~68 KiB for `send`'s).
    /// `make` is boxed here, so what is spawned is two pointers: a larger
    /// task is built on the fiber's stack too (`tokio::spawn`,
    /// `Cell::new`). A
    /// panic on the task goes on unwinding where the result is awaited: for
    /// `warden:tool/http`, on the fiber, as it would have had the future
    /// run there, so the invocation fails rather than the tool getting an
    /// error for a request that may have gone out unrecorded; for
    /// `wasi:http`, on the task `wasmtime-wasi-http` awaits it on, which
    /// reaches the fiber when the tool next looks at the response (for a
    /// tool that never does, the invocation's end records the request
    /// `stopped`: its gate pass, dropped by the unwinding, records
    /// nothing then).
    pub(super) fn run<T, F>(
        &mut self,
        make: impl FnOnce() -> F + Send + 'static,
    ) -> impl Future<Output = Option<T>> + Send + 'static
    where
        T: Send + 'static,
        F: Future<Output = T> + Send,
    {
        /// Aborts the task if the wait is dropped with the store still
        /// alive elsewhere (the invocation's future dropped by its caller).
        struct Abort(tokio::task::AbortHandle);
        impl Drop for Abort {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        if self.tasks.len() >= self.prune_at {
            self.tasks.retain(|t| !t.is_finished());
            self.prune_at = (self.tasks.len() * 2).max(8);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let make = Box::new(make);
        let task = tokio::spawn(async move {
            use futures_util::FutureExt;
            let request = std::panic::AssertUnwindSafe(Box::pin(make()));
            let _ = tx.send(request.catch_unwind().await);
        });
        let abort = Abort(task.abort_handle());
        self.tasks.push(task);
        async move {
            let _abort = abort;
            match rx.await {
                Ok(Ok(done)) => Some(done),
                Ok(Err(panic)) => std::panic::resume_unwind(panic),
                Err(_) => None,
            }
        }
    }

    /// Aborts every request still running and waits until each task is
    /// gone (its future, connection and secret dropped: the connection is
    /// driven on the request's task, [`conn::Connection`]).
    pub(crate) async fn stop(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
    }
}

/// A store dropped with requests still running (the invocation's future
/// dropped by its caller) aborts them; it cannot wait for them.
impl Drop for Requests {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A store that can give the `warden:tool/http` host impl its view.
pub(crate) trait HttpStore: Send + 'static {
    fn http(&mut self) -> HttpView<'_>;
}

struct Http;

impl HasData for Http {
    type Data<'a> = HttpView<'a>;
}

pub(crate) fn add_to_linker<T: HttpStore>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    crate::bindings::warden::tool::http::add_to_linker::<T, Http>(linker, T::http)
}

impl Host for HttpView<'_> {
    /// The fiber looks up the attached secret; everything else (the egress
    /// check, the gate and its records, the request, its outcome) runs on a
    /// task of its own ([`Requests::run`]). Polled on the fiber, those
    /// reached ~14 KiB down its stack, and every page of it they touch
    /// stays resident for as long as the call then waits.
    async fn send(
        &mut self,
        req: Request,
        bearer: Option<Resource<SecretRef>>,
    ) -> HttpResult<Response> {
        let bearer = match &bearer {
            Some(b) => {
                let name = self.table.get(b)?.name.clone();
                Some(Bearer::of(self.secrets, name))
            }
            None => None,
        };
        let (egress, gate) = (self.egress.clone(), self.gate.clone());
        let sent = self
            .requests
            .run(move || send(egress, gate, req, bearer))
            .await;
        sent.unwrap_or_else(|| {
            Ok(Err(error(
                ErrorCode::Connection,
                "the request's task ended without an answer",
            )))
        })
    }
}

/// A secret attached by reference, as the request's task needs it.
struct Bearer {
    name: String,
    held: Option<Held>,
    /// Its labels and `send-to`, for runtime policy.
    spec: Option<(Vec<String>, Vec<String>)>,
    /// A copy of its value (unless already expired), wiped when the task
    /// ends, and when it expires: the copy is attached only once the gate
    /// has passed and the ttl is checked again (an approval may have waited
    /// past it).
    value: Option<zeroize::Zeroizing<String>>,
    expires: Option<Instant>,
}

impl Bearer {
    fn of(secrets: &mut SecretsCtx, name: String) -> Bearer {
        let held = secrets.held(&name);
        let issued = secrets.issued.get(&name);
        Bearer {
            held,
            spec: issued.map(|s| (s.spec.labels.clone(), s.spec.send_to.clone())),
            value: issued.filter(|s| !s.expired).map(|s| s.value.clone()),
            expires: issued.and_then(|s| s.expires),
            name,
        }
    }

    /// What the task holds of it now.
    fn held_now(&self) -> Option<Held> {
        let now = Instant::now();
        self.held.map(|h| Held {
            expired: h.expired || self.expires.is_some_and(|t| now >= t),
            ..h
        })
    }
}

/// Checks, gates and sends one request of `warden:tool/http`, and records
/// its outcome. A record that cannot be written refuses the request (fail
/// closed: no record, no request).
///
/// An `async move` block rather than an `async fn`: an `async fn` keeps
/// each argument twice in its future (as passed, and moved into its body),
/// and this future is what every request in flight holds.
#[allow(clippy::manual_async_fn)] // see the doc: its arguments kept once
fn send(
    egress: egress::Egress,
    gate: Gate,
    req: Request,
    mut bearer: Option<Bearer>,
) -> impl Future<Output = HttpResult<Response>> + Send {
    async move {
        let request = egress::Request {
            via: Via::Tool,
            method: &req.method,
            url: &req.url,
            headers: req
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_bytes()))
                .collect(),
            body: req.body.as_deref(),
            bearer: bearer.as_ref().map(|b| (b.name.as_str(), b.held)),
            limit: gate.hostcall_limit(),
        };
        // Matched as it comes: bound first, the check's result would keep a
        // second copy of `checked` in the future while the request runs.
        let (shown, checked) = match egress.check(&request, gate.redactor()).await {
            (shown, Ok(checked)) => (shown, checked),
            (shown, Err((refusal, why))) => {
                // Gone before the wait, so that it is not kept for the rest.
                drop(request);
                let d = gate
                    .refuse("http", &shown.method, &shown.resource, refusal)
                    .await?;
                return Ok(Err(error(code(why), d.reason)));
            }
        };
        drop(request);
        // A secret attached by reference is a host call of its own.
        let mut bearer_value = None;
        if let Some(b) = &bearer {
            let name = &b.name;
            let origin = checked.origin.to_string();
            let asks = match &b.spec {
                Some((labels, send_to)) if gate.has_policy() => vec![Ask {
                    action: "secret::attach".into(),
                    detail: &origin,
                    resource: Subject::Secret {
                        name,
                        labels,
                        send_to,
                    },
                }],
                _ => Vec::new(),
            };
            let summary = || {
                format!(
                    "attach secret '{name}' to {} {}",
                    checked.method, shown.resource
                )
            };
            let call = HostCall {
                whole: None,
                capability: "secret",
                action: "attach",
                resource: name,
                check: Decision::allow(
                    "secret.send-to",
                    format!("attached to {} {origin} (in its send-to)", checked.method),
                ),
                asks,
                approval: Approval {
                    required: false,
                    action: "secret.attach",
                    resource: name,
                    args: &origin,
                    summary: &summary,
                },
                address: None,
                sealed: (),
            };
            let pass = match gate.pass(call).await? {
                Ok(pass) => pass,
                Err(d) => return Ok(Err(error(ErrorCode::Denied, d.reason))),
            };
            gate.done(pass, |_, _| {})?;
        }

        let body_len = req.body.as_ref().map_or(0, Vec::len);
        let body = req.body.as_deref().unwrap_or_default();
        let policy = gate.has_policy();
        let request = || Approvable {
            headers: (req.headers.iter())
                .map(|(k, v)| (k.as_str(), v.as_bytes()))
                .collect(),
            trailers: Vec::new(),
            bearer: bearer.as_ref().map(|b| b.name.as_str()),
            body,
        };
        let args = checked.approval_args(policy, request);
        let summary = || request().summary(&checked, &shown.resource, gate.redactor());
        let call = egress.send_call(&checked, &shown, policy, &args, &summary);
        let pass = match gate.pass(call).await? {
            Ok(pass) => pass,
            Err(d) => return Ok(Err(error(ErrorCode::Denied, d.reason))),
        };

        // The attached secret's value, taken now: an approval may have
        // waited past its ttl.
        if let Some(b) = &mut bearer {
            match b.held_now() {
                Some(h) if !h.expired => bearer_value = b.value.take(),
                held => {
                    let expired = crate::caps::secrets::check::decide("attach", &b.name, held);
                    gate.outcome(
                        pass,
                        Event::Egress,
                        |_, _| {},
                        |r| {
                            r.outcome = Some("error".into());
                            r.message = Some(expired.reason.clone());
                        },
                    )?;
                    return Ok(Err(error(ErrorCode::Expired, expired.reason)));
                }
            }
        }
        checked.note_contacted(&gate);
        let started = Instant::now();
        let timeout =
            REQUEST_TIMEOUT.min(gate.deadline().saturating_duration_since(Instant::now()));
        let redactor = gate.redactor();
        let whole = redactor.holds_secrets();
        let result = perform(
            &pass,
            &checked,
            req,
            bearer_value,
            (timeout, whole),
            gate.hostcall_limit(),
        )
        .await;
        let received = result.as_ref().map_or(0, |resp| resp.body.len());
        let mut found = BTreeSet::new();
        let unreadable = |resp: &Response| {
            let headers = resp.headers.iter();
            whole
                .then(|| {
                    super::readable::unreadable(
                        resp.status,
                        headers.map(|(k, v)| (k.as_str(), v.as_bytes())),
                    )
                })
                .flatten()
        };
        let result = match result {
            Ok(resp) => match unreadable(&resp) {
                Some(why) => Err(error(ErrorCode::Connection, why)),
                None => Ok(redact_response(resp, redactor, &mut found)),
            },
            Err(e) => Err(wit::Error {
                code: e.code,
                message: redactor.redact_string(e.message),
            }),
        };
        let attached = bearer.as_ref().map(|b| b.name.as_str());
        let unasked = egress::unasked(&found, attached, redactor);
        let result = match &unasked {
            Some(why) if result.is_ok() => Err(error(ErrorCode::Denied, why.clone())),
            _ => result,
        };
        checked.record(&gate, pass, started, |r| {
            r.bytes_out = Some(body_len as u64);
            match &result {
                Ok(resp) => {
                    r.status = Some(resp.status);
                    r.bytes_in = Some(received as u64);
                    r.outcome = Some("ok".into());
                    r.message = egress::reflected(&found);
                }
                Err(err) => {
                    r.outcome = Some("error".into());
                    r.message = Some(err.message.clone());
                }
            }
        })?;
        if let Some(why) = unasked {
            gate.refuse_guess(why, "http", &checked.method, &shown.resource)?;
        }
        Ok(result)
    }
}

/// The response as the tool may see it: every granted secret value (in any
/// encoding the redactor knows) replaced in header names, values and the
/// body; `content-length` follows the redacted body. Adds the names found
/// to `found`.
fn redact_response(
    resp: Response,
    redactor: &crate::redact::Redactor,
    found: &mut BTreeSet<String>,
) -> Response {
    if !redactor.holds_secrets() {
        return resp;
    }
    let text = |s: String, found: &mut BTreeSet<String>| match redactor
        .redact_found(s.as_bytes(), found)
    {
        Some(r) => String::from_utf8_lossy(&r).into_owned(),
        None => s,
    };
    let body = redactor
        .redact_found(&resp.body, found)
        .unwrap_or(resp.body);
    let headers = resp
        .headers
        .into_iter()
        .map(|(k, v)| {
            let k = text(k, found);
            let v = if k.eq_ignore_ascii_case("content-length") {
                body.len().to_string()
            } else {
                text(v, found)
            };
            (k, v)
        })
        .collect();
    Response {
        status: resp.status,
        headers,
        body,
    }
}

/// Sends a request that passed the gate (`_pass` is the witness) to its
/// checked address and reads the response, up to `limit` bytes of body, all
/// within `timeout`.
async fn perform(
    _pass: &Pass<'_, ()>,
    checked: &Checked,
    req: Request,
    bearer: Option<zeroize::Zeroizing<String>>,
    (timeout, whole): (Duration, bool),
    limit: usize,
) -> Result<Response, wit::Error> {
    let Checked {
        origin,
        address: addr,
        ..
    } = checked;
    let exchange = async {
        let mut request = http_request(checked, req, bearer.as_deref().map(String::as_str))?;
        if whole {
            super::readable::ask_whole(request.headers_mut());
        }
        // Held until the body is read (or this is dropped): then closed.
        let conn::Connection {
            mut sender,
            mut driver,
        } = conn::open(*addr, origin, timeout).await.map_err(|e| {
            error(
                ErrorCode::Connection,
                format!("request to {origin} failed: {e}"),
            )
        })?;
        let exchange = std::pin::pin!(read_response(&mut sender, request, limit, origin));
        driver.beside(exchange).await
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(error(
                ErrorCode::Timeout,
                format!("no response within {}s", timeout.as_secs_f32()),
            ))
        })
}

/// Sends `request` on `sender` and reads its response, up to `limit` bytes
/// of body; a failure names `origin`.
async fn read_response(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    request: http::Request<Full<Bytes>>,
    limit: usize,
    origin: &super::check::Origin,
) -> Result<Response, wit::Error> {
    let failed = |what: &dyn std::fmt::Display| {
        error(
            ErrorCode::Connection,
            format!("request to {origin} failed: {what}"),
        )
    };
    let resp = sender.send_request(request).await.map_err(|e| failed(&e))?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut incoming = resp.into_body();
    let mut body = Vec::new();
    while let Some(frame) = incoming.frame().await {
        let Ok(chunk) = frame.map_err(|e| failed(&e))?.into_data() else {
            continue; // trailers
        };
        if body.len() + chunk.len() > limit {
            return Err(error(
                ErrorCode::TooLarge,
                format!("response body exceeds the host call limit of {limit} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// The request as sent: origin-form target, `host` from the URL (a tool may
/// not set it, nor the other headers the host derives), the tool's headers,
/// the secret as a bearer token (a sensitive header value), the body.
fn http_request(
    checked: &Checked,
    req: Request,
    bearer: Option<&str>,
) -> Result<http::Request<Full<Bytes>>, wit::Error> {
    let invalid = |what: String| error(ErrorCode::InvalidRequest, what);
    let method = http::Method::from_bytes(checked.method.as_bytes())
        .map_err(|_| invalid("invalid method".into()))?;
    let (target, host) = checked.origin_form();
    let mut headers = http::HeaderMap::with_capacity(req.headers.len() + 3);
    headers.insert(http::header::HOST, header_value(&host)?);
    for (name, value) in &req.headers {
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(format!("invalid header name '{name}'")))?;
        let value = header_value(value)
            .map_err(|_| invalid(format!("invalid value for header '{name}'")))?;
        headers.append(name, value);
    }
    if !headers.contains_key(http::header::ACCEPT) {
        headers.insert(http::header::ACCEPT, http::HeaderValue::from_static("*/*"));
    }
    if let Some(token) = bearer {
        let mut value = header_value(&zeroize::Zeroizing::new(format!("Bearer {token}")))
            .map_err(|_| invalid("the secret cannot be sent as a bearer token".into()))?;
        value.set_sensitive(true);
        headers.insert(http::header::AUTHORIZATION, value);
    }
    let mut request = http::Request::builder()
        .method(method)
        .uri(target)
        .body(Full::new(Bytes::from(req.body.unwrap_or_default())))
        .map_err(|e| invalid(format!("invalid request: {e}")))?;
    *request.headers_mut() = headers;
    Ok(request)
}

fn header_value(text: &str) -> Result<http::HeaderValue, wit::Error> {
    http::HeaderValue::from_str(text)
        .map_err(|_| error(ErrorCode::InvalidRequest, "invalid header value"))
}
