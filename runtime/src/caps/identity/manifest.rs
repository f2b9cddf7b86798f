//! A tool's `token-send-to`: the origins its identity tokens may be sent
//! to in its own requests.

use crate::diag::Checker;
use crate::net;
use toml::Spanned;

/// The tool's `token-send-to`, each entry an origin. `None` when it has
/// none: each audience's tokens then go only to that audience's origin
/// (an audience that is no http or https URL: nowhere).
pub(crate) fn send_to(
    c: &mut Checker<'_>,
    tool: &str,
    audiences: &[String],
    listed: Option<Vec<Spanned<String>>>,
) -> Option<Vec<String>> {
    let field = format!("tools.{tool}.token-send-to");
    let listed = listed?;
    if audiences.is_empty()
        && let Some(first) = listed.first()
    {
        c.problem(
            first.span(),
            field.clone(),
            "token-send-to names where identity tokens may go, but the tool lists no \
             token-audiences (expected token-audiences beside it, or no token-send-to)"
                .into(),
        );
    }
    let mut origins = Vec::with_capacity(listed.len());
    for dest in listed {
        match net::parse_origin(dest.get_ref()) {
            Ok(origin) => origins.push(origin.to_string()),
            Err(e) => c.problem(dest.span(), field.clone(), net::destination_problem(&e)),
        }
    }
    Some(origins)
}
