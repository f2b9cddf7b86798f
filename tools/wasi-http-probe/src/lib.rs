//! Test tool: one GET through the standard `wasi:http` outgoing handler, to
//! show that the host's egress policy applies to it as to `warden:tool/http`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use warden_tool::{Error, Tool};
use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, Method, OutgoingRequest, Scheme};

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    /// `http://host[:port]/path`
    url: String,
}

#[derive(Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Output {
    Ok { status: u16, body: String },
    Error { code: String },
}

struct WasiHttpProbe;

impl Tool for WasiHttpProbe {
    type Input = Input;
    type Output = Output;
    const NAME: &'static str = "wasi-http-probe";
    const DESCRIPTION: &'static str = "Test tool: one GET through standard wasi:http.";

    fn invoke(i: Input) -> Result<Output, Error> {
        let (scheme, rest) = i
            .url
            .split_once("://")
            .ok_or_else(|| Error::invalid_input("no scheme"))?;
        let (authority, path) = match rest.find('/') {
            Some(n) => (&rest[..n], &rest[n..]),
            None => (rest, "/"),
        };
        let req = OutgoingRequest::new(Fields::new());
        let _ = req.set_method(&Method::Get);
        let _ = req.set_scheme(Some(&if scheme == "https" {
            Scheme::Https
        } else {
            Scheme::Http
        }));
        let _ = req.set_authority(Some(authority));
        let _ = req.set_path_with_query(Some(path));
        let future = match outgoing_handler::handle(req, None) {
            Ok(f) => f,
            Err(e) => {
                return Ok(Output::Error {
                    code: format!("{e:?}"),
                });
            }
        };
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
        })
    }
}

warden_tool::export!(WasiHttpProbe);
