//! Test tool: one outbound request exactly as asked, optionally carrying a
//! revealed secret or an identity token in the URL, a header or the body;
//! reports the host's answer verbatim.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use warden_tool::http::{ErrorCode, Request};
use warden_tool::{Error, Tool, identity, secrets};

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
    /// Or put the identity token for this audience `into` the request.
    #[serde(default)]
    token: Option<String>,
    /// Where: `query`, `header` or `body`, and optionally how, after a
    /// colon: see [`encode`] (`query:percent`, `body:json-u`, …).
    #[serde(default)]
    into: String,
    /// Then GET this URL, whatever the first request's answer, and report
    /// that answer instead (what the host allows after the first).
    #[serde(default)]
    then: Option<String>,
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
        headers: Vec<(String, String)>,
    },
    Error {
        code: String,
        message: String,
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
        let carried = match (&i.reveal, &i.token) {
            (Some(name), _) => Some(secrets::get(name)?.reveal()?),
            (None, Some(audience)) => Some(identity::token(audience)?),
            (None, None) => None,
        };
        if let Some(value) = carried {
            let (into, how) = i.into.split_once(':').unwrap_or((i.into.as_str(), "plain"));
            let value = encode(how, &value);
            match into {
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
        let first = answer(req);
        Ok(match &i.then {
            Some(url) => answer(Request::new("GET", url)),
            None => first,
        })
    }
}

fn answer(req: Request) -> Output {
    match req.send() {
        Ok(resp) => Output::Ok {
            status: resp.status,
            location: resp
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("location"))
                .map(|(_, v)| v.clone()),
            body: String::from_utf8_lossy(&resp.body).into_owned(),
            headers: resp.headers.clone(),
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
    }
}

warden_tool::export!(EgressProbe);
