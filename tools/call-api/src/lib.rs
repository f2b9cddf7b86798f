//! Calls an API with a workload identity token minted for this invocation:
//! the API learns which tool (by digest), task and invocation is calling,
//! and the token dies with the invocation.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use warden_tool::http::Request;
use warden_tool::{Error, Tool, identity};

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    /// An absolute URL inside the egress grant.
    url: String,
    /// The token's audience, as the API expects it (listed in the manifest).
    audience: String,
    #[serde(default = "get")]
    method: String,
    /// A JSON body to send.
    #[serde(default)]
    body: Option<serde_json::Value>,
}

fn get() -> String {
    "GET".into()
}

#[derive(Serialize, JsonSchema)]
struct Output {
    status: u16,
    body: String,
}

struct CallApi;

impl Tool for CallApi {
    type Input = Input;
    type Output = Output;
    const NAME: &'static str = "call-api";
    const DESCRIPTION: &'static str =
        "Call an HTTP API authenticated by a workload identity token minted for this call only.";

    fn invoke(input: Input) -> Result<Output, Error> {
        let token = identity::token(&input.audience)?;
        let mut req = Request::new(&input.method, &input.url)
            .header("authorization", &format!("Bearer {token}"));
        if let Some(body) = input.body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let resp = req.send()?;
        Ok(Output {
            status: resp.status,
            body: String::from_utf8_lossy(&resp.body).into_owned(),
        })
    }
}

warden_tool::export!(CallApi);
