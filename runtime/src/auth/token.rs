//! Verifying one bearer JWT: an access token from a trusted authorization
//! server, or a SPIFFE JWT-SVID from a trusted trust domain.
//!
//! The order matters. The unverified payload only says which issuer's keys
//! to try (`sub` beginning `spiffe://` picks a trust domain, otherwise `iss`
//! picks an issuer); nothing else is read from it before the signature
//! verifies. The header's algorithm must be on that issuer's allowlist
//! (never `none`, never HMAC) and, when the key pins one, the key's. Keys
//! come only from the issuer's key set, never from the token (`jwk`, `jku`,
//! `x5u`, `x5c` are ignored). Then `jsonwebtoken` checks the signature,
//! `exp` (required), `nbf`, `iss` and `aud` (this server's resource
//! indicator, RFC 8707).

use super::keys::KeySet;
use crate::agent::{Agent, AgentKind};
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::time::Duration;

/// The longest token read.
pub(crate) const MAX_TOKEN: usize = 16 << 10;
/// The longest `iss` or `sub` accepted.
const MAX_ID: usize = 512;

/// Whom a token may come from, and with which keys.
pub(crate) struct Trusted {
    pub(crate) kind: AgentKind,
    /// The issuer (`iss`, exact), or the trust domain.
    pub(crate) name: String,
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) keys: KeySet,
}

/// A verified token: who it proves, its claims, and when it expires.
pub(crate) struct Verified {
    pub(crate) agent: Agent,
    pub(crate) claims: Map<String, Value>,
    pub(crate) exp: u64,
}

/// Verifies `token` against `trusted`, for `resource`.
pub(crate) async fn verify(
    token: &str,
    trusted: &[Trusted],
    resource: &str,
    leeway: Duration,
) -> Result<Verified, String> {
    if token.len() > MAX_TOKEN {
        return Err(format!("the token is longer than {} KiB", MAX_TOKEN >> 10));
    }
    if critical(token) {
        return Err(
            "its header names critical extensions (crit), which this server does not understand"
                .into(),
        );
    }
    let header = jsonwebtoken::decode_header(token).map_err(|e| {
        format!(
            "not a signed JWT with an algorithm this server knows (alg none is never accepted): {e}"
        )
    })?;
    let unverified: Map<String, Value> = jsonwebtoken::dangerous::insecure_decode_claims(token)
        .map_err(|e| format!("its payload is not a JSON object: {e}"))?;
    let text = |k: &str| unverified.get(k).and_then(Value::as_str).unwrap_or("");
    let (kind, name) = match text("sub").strip_prefix("spiffe://") {
        Some(rest) => (AgentKind::Spiffe, rest.split('/').next().unwrap_or("")),
        None => (AgentKind::OAuth, text("iss")),
    };
    let Some(from) = trusted.iter().find(|t| t.kind == kind && t.name == name) else {
        let shown = shown(name);
        return Err(match kind {
            AgentKind::Spiffe => format!("SPIFFE trust domain {shown} is not trusted"),
            _ => format!("issuer {shown} is not trusted"),
        });
    };
    if !from.algorithms.contains(&header.alg) {
        return Err(format!(
            "algorithm {:?} is not allowed for {} (allowed: {})",
            header.alg,
            shown(&from.name),
            from.algorithms
                .iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let kid = header
        .kid
        .as_deref()
        .ok_or("the token names no key (kid)")?;
    let key = from.keys.get(kid).await?;
    if let Some(pinned) = &key.alg
        && *pinned != format!("{:?}", header.alg)
    {
        return Err(format!(
            "algorithm {:?} is not the one its key is for ({pinned})",
            header.alg
        ));
    }
    let mut v = Validation::new(header.alg);
    v.leeway = leeway.as_secs();
    v.validate_nbf = true;
    v.set_audience(&[resource]);
    let mut required = vec!["exp", "aud", "sub"];
    if kind == AgentKind::OAuth {
        v.set_issuer(&[&from.name]);
        required.push("iss");
    }
    v.set_required_spec_claims(&required);
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &v)
        .map_err(|e| refusal(&e, resource))?;
    let claims = data.claims;
    let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("");
    let iss = match kind {
        AgentKind::Spiffe => {
            if !sub.starts_with(&format!("spiffe://{}/", from.name)) {
                return Err(format!("its subject {} is not a SPIFFE ID", shown(sub)));
            }
            format!("spiffe://{}", from.name)
        }
        _ => from.name.clone(),
    };
    // Invisible characters too: `ci-bot` and `ci-bot` with a zero-width
    // space after it would be two agents that look the same.
    if sub.is_empty() || sub.len() > MAX_ID || sub.chars().any(crate::redact::hidden) {
        return Err(format!(
            "its subject {} is not 1 to {MAX_ID} printable characters",
            shown(sub)
        ));
    }
    let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
    let agent = Agent {
        kind,
        issuer: iss,
        subject: sub.to_owned(),
        groups: strings(&claims, &["groups", "roles"], false),
        scopes: strings(&claims, &["scope", "scp"], true),
    };
    Ok(Verified { agent, claims, exp })
}

/// The strings of `claims[names]`: arrays of strings, or a string (split on
/// spaces when `split`, as OAuth's `scope` is). Anything else is ignored.
fn strings(claims: &Map<String, Value>, names: &[&str], split: bool) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for n in names {
        match claims.get(*n) {
            Some(Value::String(s)) if split => {
                out.extend(s.split(' ').filter(|s| !s.is_empty()).map(str::to_owned));
            }
            Some(Value::String(s)) => {
                out.insert(s.clone());
            }
            Some(Value::Array(items)) => {
                out.extend(items.iter().filter_map(Value::as_str).map(str::to_owned));
            }
            _ => {}
        }
    }
    out.retain(|s| s.len() <= MAX_ID && !s.chars().any(crate::redact::hidden));
    out
}

/// Why `jsonwebtoken` refused a token, in words that name the claim.
fn refusal(e: &jsonwebtoken::errors::Error, resource: &str) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => "the token has expired (exp)".into(),
        K::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        K::InvalidAudience => {
            format!("the token is for another resource (aud does not name {resource})")
        }
        K::InvalidIssuer => "the token's issuer is not the one its keys are for (iss)".into(),
        K::InvalidSignature => "its signature does not verify".into(),
        K::MissingRequiredClaim(c) => format!("the token has no {c} claim"),
        K::InvalidAlgorithm => "its algorithm does not match its key".into(),
        _ => format!("the token does not verify: {e}"),
    }
}

/// A token-controlled string, quoted, escaped and cut for a log line.
pub(crate) fn shown(s: &str) -> String {
    let cut = crate::policy::gate::cut(s, 120);
    format!("\"{}\"", crate::redact::escape_control(&cut))
}

/// Whether the token's header has `crit` (RFC 7515, section 4.1.11: a
/// recipient that does not understand them must refuse the token).
fn critical(token: &str) -> bool {
    use base64::Engine as _;
    let head = token.split('.').next().unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head)
        .ok()
        .and_then(|b| serde_json::from_slice::<Map<String, Value>>(&b).ok())
        .is_some_and(|h| h.contains_key("crit"))
}
