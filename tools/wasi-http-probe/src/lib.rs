//! Test tool: one request through the standard `wasi:http` outgoing
//! handler, to show that the host's egress policy applies to it as to
//! `warden:tool/http`; optionally carrying a revealed secret, encoded.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use warden_tool::{Error, Tool, secrets};
use wasi::http::outgoing_handler;
use wasi::http::types::{
    Fields, FutureIncomingResponse, Method, OutgoingBody, OutgoingRequest, Scheme,
};

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    /// `http://host[:port]/path`
    url: String,
    /// `GET` (default) or `POST`.
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    body: Option<String>,
    /// Reveal this secret and put it `into` the request.
    #[serde(default)]
    reveal: Option<String>,
    /// `query`, `header` or `body`, optionally `:how` (see [`encode`]).
    #[serde(default)]
    into: String,
    /// Send the request, wait this many milliseconds and return without
    /// waiting for the response or dropping its handle (a tool that leaves
    /// a request in flight).
    #[serde(default)]
    leave_after_ms: Option<u64>,
    /// Start this many POSTs to `url` at once, each writing `body` and none
    /// finishing it; 300 ms later, say how each stands.
    #[serde(default)]
    unfinished: Option<u32>,
    /// Start this many POSTs to `url` at once, each writing `body` and
    /// finishing it; then wait for every answer, and say how each ended.
    #[serde(default)]
    parallel: Option<u32>,
    /// Once the request is sent (its body finished), wait 200 ms, POST
    /// this body to `url` too and wait for its answer, then for the
    /// first's: `started`, the first's code and then this one's.
    #[serde(default)]
    meanwhile: Option<String>,
    /// Build this many requests and header fields, each set with values of
    /// `bytes` bytes, and keep them all: say which setters refused.
    #[serde(default)]
    kept: Option<Kept>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Kept {
    count: u32,
    bytes: u32,
    /// Each request's header fields hold one value of this many bytes.
    #[serde(default)]
    fields_bytes: u32,
    /// Also GET `url`, copy its response's header fields and add one.
    #[serde(default)]
    copy_response: bool,
}

#[derive(Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Output {
    Ok {
        status: u16,
        body: String,
        headers: Vec<(String, String)>,
    },
    Error {
        code: String,
    },
    /// Returned with the request still in flight.
    Left,
    /// What `kept` built: the setters that refused (`method`, `authority`,
    /// `path`, `fields`, `response-copy`), and how many requests it held.
    Kept {
        refused: Vec<String>,
        held: u32,
    },
    /// How each of the `unfinished` requests stood: `open` (no answer
    /// yet), or its error code.
    Started {
        codes: Vec<String>,
    },
}

/// `value` as a receiving server would decode it back: `plain`, `percent`
/// (every byte `%xx`), `double` (`%25XX`: percent-encoded twice),
/// `b64-percent` (base64, then every byte percent-encoded), `json-u` (JSON
/// `\u` escapes), `hex-mixed` (hex, letters in both cases), `html` (`&#NN;`).
fn encode(how: &str, value: &str) -> String {
    let percent = |s: &str| -> String { s.bytes().map(|b| format!("%{b:02x}")).collect() };
    match how {
        "percent" => percent(value),
        "double" => percent(value).replace('%', "%25"),
        "b64-percent" => {
            const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let mut out = String::new();
            for chunk in value.as_bytes().chunks(3) {
                let n = chunk
                    .iter()
                    .enumerate()
                    .fold(0u32, |acc, (i, &b)| acc | (b as u32) << (16 - 8 * i));
                for i in 0..4 {
                    if i <= chunk.len() {
                        out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
                    } else {
                        out.push('=');
                    }
                }
            }
            percent(&out)
        }
        "json-u" => value
            .encode_utf16()
            .map(|u| format!("\\u{u:04X}"))
            .collect(),
        "hex-mixed" => value
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if i % 3 == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect(),
        "html" => value.chars().map(|c| format!("&#{};", c as u32)).collect(),
        _ => value.to_owned(),
    }
}

struct WasiHttpProbe;

impl Tool for WasiHttpProbe {
    type Input = Input;
    type Output = Output;
    const NAME: &'static str = "wasi-http-probe";
    const DESCRIPTION: &'static str = "Test tool: one GET through standard wasi:http.";

    fn invoke(i: Input) -> Result<Output, Error> {
        if let Some(k) = &i.kept {
            return kept(&i.url, k);
        }
        if let Some(n) = i.unfinished {
            return started(&i.url, i.body.as_deref().unwrap_or(""), n, false);
        }
        if let Some(n) = i.parallel {
            return started(&i.url, i.body.as_deref().unwrap_or(""), n, true);
        }
        let mut url = i.url.clone();
        let mut headers = i.headers.clone();
        let mut body = i.body.clone();
        if let Some(name) = &i.reveal {
            let value = secrets::get(name)?.reveal()?;
            let (into, how) = i.into.split_once(':').unwrap_or((i.into.as_str(), "plain"));
            let value = encode(how, &value);
            match into {
                "query" => url = format!("{url}?token={value}"),
                "header" => headers.push(("x-api-key".into(), value)),
                _ => body = Some(format!("{{\"token\":\"{value}\"}}")),
            }
        }
        let fields = Fields::new();
        for (k, v) in &headers {
            let _ = fields.append(k, v.as_bytes());
        }
        let method = match i.method.as_deref() {
            Some("POST") => Method::Post,
            _ => Method::Get,
        };
        let req = request(&url, fields, &method)?;
        let outgoing = req.body().map_err(|_| Error::failed("no request body"))?;
        let future = match outgoing_handler::handle(req, None) {
            Ok(f) => f,
            Err(e) => {
                return Ok(Output::Error {
                    code: format!("{e:?}"),
                });
            }
        };
        // The body is written and finished before waiting for the response.
        {
            let stream = outgoing
                .write()
                .map_err(|_| Error::failed("no request body stream"))?;
            for chunk in body.as_deref().unwrap_or("").as_bytes().chunks(4096) {
                if stream.blocking_write_and_flush(chunk).is_err() {
                    break;
                }
            }
        }
        let _ = OutgoingBody::finish(outgoing, None);
        if let Some(second) = &i.meanwhile {
            wasi::clocks::monotonic_clock::subscribe_duration(200_000_000).block();
            let later = match started_one(&i.url, second, true)? {
                Ok((later, _)) => {
                    later.subscribe().block();
                    code(&later)
                }
                Err(refused) => refused,
            };
            future.subscribe().block();
            return Ok(Output::Started {
                codes: vec![code(&future), later],
            });
        }
        if let Some(ms) = i.leave_after_ms {
            wasi::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
            // Its handle is not dropped either, as a component in a
            // language that does not drop its resources on return: the
            // store holds it until the invocation ends.
            std::mem::forget(future);
            return Ok(Output::Left);
        }
        future.subscribe().block();
        let resp = match future.get() {
            Some(Ok(Ok(r))) => r,
            Some(Ok(Err(e))) => {
                return Ok(Output::Error {
                    code: format!("{e:?}"),
                });
            }
            other => {
                return Ok(Output::Error {
                    code: format!("{other:?}"),
                });
            }
        };
        let status = resp.status();
        let headers = resp
            .headers()
            .entries()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let body = resp.consume().map_err(|_| Error::failed("no body"))?;
        let stream = body.stream().map_err(|_| Error::failed("no body stream"))?;
        let mut bytes = Vec::new();
        loop {
            match stream.blocking_read(64 << 10) {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(wasi::io::streams::StreamError::Closed) => break,
                Err(wasi::io::streams::StreamError::LastOperationFailed(e)) => {
                    return Ok(Output::Error {
                        code: e.to_debug_string(),
                    });
                }
            }
        }
        Ok(Output::Ok {
            status,
            body: String::from_utf8_lossy(&bytes).into_owned(),
            headers,
        })
    }
}

/// Requests and fields built and kept, never sent (see [`Input::kept`]).
fn kept(url: &str, k: &Kept) -> Result<Output, Error> {
    let n = k.bytes as usize;
    let mut refused = std::collections::BTreeSet::new();
    let mut held = Vec::new();
    for _ in 0..k.count {
        let req = OutgoingRequest::new(Fields::new());
        if req.set_method(&Method::Other("X".repeat(n))).is_err() {
            refused.insert("method");
        }
        if req.set_authority(Some(&"a".repeat(n))).is_err() {
            refused.insert("authority");
        }
        let path = format!("/{}", "p".repeat(n.saturating_sub(1)));
        if req.set_path_with_query(Some(&path)).is_err() {
            refused.insert("path");
        }
        // Each held resource counts against the tool's cap of 2,048.
        let fields = (k.fields_bytes > 0).then(Fields::new);
        if let Some(f) = &fields
            && f.append("x-kept", &vec![b'v'; k.fields_bytes as usize])
                .is_err()
        {
            refused.insert("fields");
        }
        held.push((req, fields));
    }
    if k.copy_response {
        let req = request(url, Fields::new(), &Method::Get)?;
        let future = outgoing_handler::handle(req, None)
            .map_err(|e| Error::failed(format!("not sent: {e:?}")))?;
        let response = loop {
            match future.get() {
                Some(Ok(Ok(r))) => break r,
                Some(other) => return Err(Error::failed(format!("no response: {other:?}"))),
                None => future.subscribe().block(),
            }
        };
        let copy = response.headers().clone();
        if copy.append("x-added", b"1").is_err() {
            refused.insert("response-copy");
        }
    }
    Ok(Output::Kept {
        refused: refused.into_iter().map(String::from).collect(),
        held: held.len() as u32,
    })
}

/// A request for `url` (`http://` or `https://`), its path and query as
/// written.
fn request(url: &str, fields: Fields, method: &Method) -> Result<OutgoingRequest, Error> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| Error::invalid_input("no scheme"))?;
    let (authority, path) = match rest.find('/') {
        Some(n) => (&rest[..n], &rest[n..]),
        None => (rest, "/"),
    };
    let req = OutgoingRequest::new(fields);
    let _ = req.set_method(method);
    let _ = req.set_scheme(Some(&if scheme == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    }));
    let _ = req.set_authority(Some(authority));
    let _ = req.set_path_with_query(Some(path));
    Ok(req)
}

/// `n` POSTs to `url` started at once, each body written and, unless
/// `finish`, left unfinished (held open, as a slow client would), and how
/// each stands 300 ms later; with `finish`, how each ended.
fn started(url: &str, body: &str, n: u32, finish: bool) -> Result<Output, Error> {
    let mut held = Vec::new();
    let mut codes = Vec::new();
    for _ in 0..n {
        match started_one(url, body, finish)? {
            Ok(started) => held.push(started),
            Err(refused) => codes.push(refused),
        }
    }
    if !finish {
        wasi::clocks::monotonic_clock::subscribe_duration(300_000_000).block();
    }
    for (future, _) in &held {
        if finish {
            future.subscribe().block();
        }
        codes.push(code(future));
    }
    Ok(Output::Started { codes })
}

/// A request started: its response to come, and its body stream and body
/// when held open.
type Started = (
    FutureIncomingResponse,
    Option<(wasi::io::streams::OutputStream, OutgoingBody)>,
);

/// A POST of `body` to `url` started, its body finished or (unless
/// `finish`) held open; the error code when the handler refuses it.
fn started_one(url: &str, body: &str, finish: bool) -> Result<Result<Started, String>, Error> {
    let req = request(url, Fields::new(), &Method::Post)?;
    let outgoing = req.body().map_err(|_| Error::failed("no request body"))?;
    let future = match outgoing_handler::handle(req, None) {
        Ok(f) => f,
        Err(e) => return Ok(Err(format!("{e:?}"))),
    };
    let stream = outgoing
        .write()
        .map_err(|_| Error::failed("no request body stream"))?;
    for chunk in body.as_bytes().chunks(4096) {
        if stream.blocking_write_and_flush(chunk).is_err() {
            break;
        }
    }
    if finish {
        drop(stream);
        let _ = OutgoingBody::finish(outgoing, None);
        Ok(Ok((future, None)))
    } else {
        Ok(Ok((future, Some((stream, outgoing)))))
    }
}

/// How a request stands, polled once without waiting: `open` (no answer
/// yet), `answered`, its error code, or `taken`.
fn code(future: &FutureIncomingResponse) -> String {
    let _ = future.subscribe().ready();
    match future.get() {
        None => "open".into(),
        Some(Ok(Ok(_))) => "answered".into(),
        Some(Ok(Err(e))) => format!("{e:?}"),
        Some(Err(())) => "taken".into(),
    }
}

warden_tool::export!(WasiHttpProbe);
