//! The names tokens are redacted under: a tool's own identity tokens, and
//! deploy webhooks' tokens, which the tool does not hold.

/// The name an identity token handed to a tool is redacted under.
pub(crate) const HANDED_OUT: &str = "identity-token";

/// The name redaction knows the identity tokens for `audience` by, so that
/// a request's check can tell whose tokens it carries: [`HANDED_OUT`], a
/// space (no secret's name holds one) and the audience. Its marker, and
/// what is shown of it, is [`HANDED_OUT`]'s.
pub(crate) fn token_name(audience: &str) -> String {
    format!("{HANDED_OUT} {audience}")
}

/// The name a deploy webhook's identity token is redacted under.
pub(crate) const DEPLOY_TOKEN: &str = "deploy-token";

/// The name redaction knows a deploy webhook's tokens for `audience` by:
/// [`DEPLOY_TOKEN`], a space and the audience. Unlike a tool's own
/// tokens, it counts as a secret the tool does not hold: what servers
/// answer is read whole and redacted, and it may be sent nowhere.
pub(crate) fn deploy_token_name(audience: &str) -> String {
    format!("{DEPLOY_TOKEN} {audience}")
}

/// Whether `name` is a deploy webhook's token's.
pub(crate) fn is_deploy_token(name: &str) -> bool {
    name.strip_prefix(DEPLOY_TOKEN)
        .is_some_and(|rest| rest.starts_with(' '))
}

/// The audience of an identity token's name; `None` for a secret's.
pub(crate) fn token_audience(name: &str) -> Option<&str> {
    name.strip_prefix(HANDED_OUT)?.strip_prefix(' ')
}

/// A name as people are shown it: a token's without its audience.
pub(crate) fn shown_name(name: &str) -> &str {
    match token_audience(name) {
        Some(_) => HANDED_OUT,
        None if is_deploy_token(name) => DEPLOY_TOKEN,
        None => name,
    }
}
