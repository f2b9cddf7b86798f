//! Test tool: one outbound request exactly as asked, optionally carrying a
//! revealed secret in the URL, a header or the body; reports the host's
//! answer verbatim.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use warden_tool::http::{ErrorCode, Request};
use warden_tool::{Error, Tool, secrets};

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    #[serde(default = "get")]
    method: String,
    url: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    body: Option<String>,
    /// Attach this secret by reference.
    #[serde(default)]
    bearer: Option<String>,
    /// Reveal this secret and put it `into` the request.
    #[serde(default)]
    reveal: Option<String>,
    /// `query`, `header` or `body`.
    #[serde(default)]
    into: String,
}

fn get() -> String {
    "GET".into()
}

#[derive(Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Output {
    Ok {
        status: u16,
        body: String,
        location: Option<String>,
    },
    Error {
        code: String,
        message: String,
    },
}

struct EgressProbe;

impl Tool for EgressProbe {
    type Input = Input;
    type Output = Output;
    const NAME: &'static str = "egress-probe";
    const DESCRIPTION: &'static str = "Test tool: one HTTP request, reported verbatim.";

    fn invoke(i: Input) -> Result<Output, Error> {
        let mut url = i.url.clone();
        let mut headers = i.headers.clone();
        let mut body = i.body.clone();
        if let Some(name) = &i.reveal {
            let value = secrets::get(name)?.reveal()?;
            match i.into.as_str() {
                "query" => url = format!("{url}?token={value}"),
                "header" => headers.push(("x-api-key".into(), value)),
                _ => body = Some(format!("{{\"token\":\"{value}\"}}")),
            }
        }
        let bearer = i.bearer.as_deref().map(secrets::get).transpose()?;
        let mut req = Request::new(&i.method, &url);
        for (k, v) in &headers {
            req = req.header(k, v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        if let Some(s) = &bearer {
            req = req.bearer(s);
        }
        Ok(match req.send() {
            Ok(resp) => Output::Ok {
                status: resp.status,
                location: resp
                    .headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("location"))
                    .map(|(_, v)| v.clone()),
                body: String::from_utf8_lossy(&resp.body).into_owned(),
            },
            Err(e) => {
                let code = match e.code {
                    ErrorCode::Denied => "denied",
                    ErrorCode::InvalidRequest => "invalid-request",
                    ErrorCode::Expired => "expired",
                    ErrorCode::TooLarge => "too-large",
                    ErrorCode::Timeout => "timeout",
                    ErrorCode::Connection => "connection",
                };
                Output::Error {
                    code: code.into(),
                    message: e.message,
                }
            }
        })
    }
}

warden_tool::export!(EgressProbe);
