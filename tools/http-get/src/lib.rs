//! Fetches a URL under the task's egress grant, optionally authenticated by
//! a secret the tool never sees.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use warden_tool::http::Request;
use warden_tool::{Error, Tool, secrets};

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    /// An absolute http(s) URL inside the egress grant.
    url: String,
    /// A granted secret to send as `Authorization: Bearer …` (by reference).
    #[serde(default)]
    secret: Option<String>,
    /// Follow up to 5 redirects (each one checked by the host).
    #[serde(default = "yes")]
    follow_redirects: bool,
}

fn yes() -> bool {
    true
}

#[derive(Serialize, JsonSchema)]
struct Output {
    status: u16,
    /// The URL that answered, after redirects.
    url: String,
    content_type: Option<String>,
    /// The body as text (invalid UTF-8 replaced).
    body: String,
}

struct HttpGet;

impl Tool for HttpGet {
    type Input = Input;
    type Output = Output;
    const NAME: &'static str = "http-get";
    const DESCRIPTION: &'static str = "Fetch a URL (GET) under the task's egress grant, optionally authenticated with a named secret.";

    fn invoke(input: Input) -> Result<Output, Error> {
        let secret = input.secret.as_deref().map(secrets::get).transpose()?;
        let mut url = input.url;
        for _ in 0..=5 {
            let mut req = Request::get(&url);
            if let Some(s) = &secret {
                req = req.bearer(s);
            }
            let resp = req.send()?;
            let header = |name: &str| {
                resp.headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone())
            };
            if (300..400).contains(&resp.status)
                && input.follow_redirects
                && let Some(location) = header("location")
            {
                url = resolve(&url, &location);
                continue;
            }
            return Ok(Output {
                status: resp.status,
                content_type: header("content-type"),
                body: String::from_utf8_lossy(&resp.body).into_owned(),
                url,
            });
        }
        Err(Error::failed("more than 5 redirects"))
    }
}

/// `location` against `base`: absolute URLs as they are, `/path` on the
/// same origin, anything else relative to the base's directory.
fn resolve(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_owned();
    }
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let origin_end = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |i| after_scheme + i);
    if location.starts_with('/') {
        format!("{}{location}", &base[..origin_end])
    } else {
        let dir_end = base
            .rfind('/')
            .filter(|&i| i >= origin_end)
            .map_or(base.len(), |i| i + 1);
        format!("{}{location}", &base[..dir_end])
    }
}

warden_tool::export!(HttpGet);
