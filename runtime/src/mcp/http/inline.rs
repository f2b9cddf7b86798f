//! Which `tools/call` POSTs without a session the short path (`fast.rs`)
//! takes: calls on the 2026-07-28 protocol, whose requests each carry their
//! version, client and capabilities in `_meta`, and SEP-2243 headers that
//! restate the method and tool for proxies that route on them.
//!
//! rmcp checks such a request before its handler sees it and answers each
//! failure its own way (`tower.rs` `validate_*`, then the handler's
//! per-request lifecycle). This path repeats none of those answers: [`take`]
//! takes a call only when every check would pass, stated positively, and
//! leaves everything else to rmcp, which answers it as before:
//!
//! - the body is a JSON-RPC 2.0 `tools/call` request (no `result` or
//!   `error` key) whose params parse;
//! - `_meta` names a version from 2026-07-28 on that the server supports,
//!   the client's capabilities and its name;
//! - `MCP-Protocol-Version` is that version, `Mcp-Method` is `tools/call`
//!   and `Mcp-Name` is the tool's name as it is (not Base64), each given
//!   once;
//! - no `Mcp-Param-*` header, and the tool's input schema asks for none
//!   (`x-mcp-header`);
//! - `Accept` and `Content-Type` as `fast::media` takes them.

use super::super::WardenMcp;
use super::fast::{self, Message};
use http::HeaderMap;
use http::request::Parts;
use rmcp::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, Implementation, ProtocolVersion, RequestId,
};

/// A call this path takes, with the client its `_meta` names.
pub(super) struct Call {
    pub(super) request: CallToolRequestParams,
    pub(super) id: RequestId,
    pub(super) version: ProtocolVersion,
    pub(super) capabilities: ClientCapabilities,
    pub(super) info: Implementation,
}

/// The call, if `message` is one this path takes.
pub(super) fn take(mcp: &WardenMcp, parts: &Parts, message: &Message<'_>) -> Option<Call> {
    if !message.plain() || message.method.as_deref() != Some("tools/call") {
        return None;
    }
    let id = message.id.clone()?;
    let headers = &parts.headers;
    if !fast::media(headers) {
        return None;
    }
    let request: CallToolRequestParams =
        serde_json::from_str(crate::mcp::params_of(message.params)).ok()?;
    let meta = request.meta.as_ref()?;
    let (version, capabilities, info) = (
        meta.protocol_version()?,
        meta.client_capabilities()?,
        meta.client_info()?,
    );
    let current = version >= ProtocolVersion::V_2026_07_28
        && mcp.supported_protocol_versions().contains(&version)
        && meta.missing_required_keys(&version).is_empty();
    let restated = one(headers, "mcp-protocol-version") == Some(version.as_str())
        && one(headers, "mcp-method") == Some("tools/call")
        && one(headers, "mcp-name")
            .is_some_and(|name| name == request.name && !name.starts_with("=?"));
    let no_params = !headers.keys().any(|k| k.as_str().starts_with("mcp-param-"))
        && !mcp.asks_param_headers(&request.name);
    (current && restated && no_params).then_some(Call {
        request,
        id,
        version,
        capabilities,
        info,
    })
}

/// The value of the header `name` when it is given once, as text.
fn one<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    value.to_str().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_counts_only_when_given_once_as_text() {
        let mut h = HeaderMap::new();
        assert_eq!(one(&h, "mcp-name"), None);
        h.append("mcp-name", "echo".parse().unwrap());
        assert_eq!(one(&h, "mcp-name"), Some("echo"));
        h.append("mcp-name", "echo".parse().unwrap());
        assert_eq!(one(&h, "mcp-name"), None);
        let mut h = HeaderMap::new();
        h.append(
            "mcp-name",
            http::HeaderValue::from_bytes(b"ech\xff").unwrap(),
        );
        assert_eq!(one(&h, "mcp-name"), None);
    }
}
