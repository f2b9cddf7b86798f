//! Workload identity: short-lived JWTs signed by this Warden instance.
//!
//! A token names the tool by its identity (`sub = sha256:…`), the task, the
//! invocation (`jti`), the audience and the scopes the task was granted; it
//! expires no later than the invocation's deadline, and
//! [`Runtime::introspect`](crate::Runtime::introspect) answers an
//! [`Introspection`] that reports it inactive as soon as its invocation has
//! ended (RFC 7662 style), so a downstream service can refuse a token copied
//! out of the call.
//!
//! Tokens are EdDSA (Ed25519) JWS compact serializations.

mod host;
pub(crate) use host::{IdentityStore, IdentityView, add_to_linker};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest lifetime of a token, further bounded by the invocation deadline.
pub const MAX_TOKEN_LIFETIME_SECS: u64 = 300;

/// The claims of a Warden token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The tool's identity, `sha256:…`.
    pub sub: String,
    pub aud: String,
    pub task: String,
    /// The invocation id.
    pub jti: String,
    pub tool: String,
    /// What the task was granted, e.g. `fs:workspace:read`, `secret:api`.
    pub scope: Vec<String>,
    pub iat: u64,
    pub exp: u64,
}

/// The key that signs this instance's tokens (and its audit checkpoints);
/// see [`crate::keys::KeyPair`].
pub type Issuer = crate::keys::KeyPair;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),
    #[error(transparent)]
    Jwks(#[from] crate::keys::JwksError),
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Issuing tokens: what the identity capability adds to a key pair.
impl crate::keys::KeyPair {
    /// The issuer name, `warden:<key id>`.
    pub fn iss(&self) -> String {
        format!("warden:{}", self.kid())
    }

    /// A signed JWT (EdDSA, JWS compact serialization) of `claims`.
    pub fn sign(&self, claims: &Claims) -> String {
        let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": self.kid()});
        let signing_input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(serde_json::to_vec(claims).unwrap_or_default())
        );
        let sig = self.sign_raw(signing_input.as_bytes());
        format!("{signing_input}.{sig}")
    }
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Verifying tokens: what the identity capability adds to a key set.
impl crate::keys::Verifier {
    /// Checks the signature, the audience and the expiry; returns the claims.
    pub fn verify(&self, token: &str, audience: &str) -> Result<Claims, IdentityError> {
        let claims = self.verify_any_audience(token)?;
        if claims.aud != audience {
            return Err(IdentityError::Invalid(format!(
                "audience is {}, not {audience}",
                claims.aud
            )));
        }
        Ok(claims)
    }

    /// Checks the signature and the expiry, for any audience.
    pub fn verify_any_audience(&self, token: &str) -> Result<Claims, IdentityError> {
        let invalid = |m: &str| IdentityError::Invalid(m.to_owned());
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("not a JWS compact token"));
        };
        let header: serde_json::Value =
            serde_json::from_slice(&B64.decode(h).map_err(|_| invalid("bad header encoding"))?)
                .map_err(|_| invalid("bad header"))?;
        if header["alg"] != "EdDSA" {
            return Err(invalid("alg is not EdDSA"));
        }
        let kid = header["kid"].as_str().unwrap_or_default();
        if !self.knows(kid) {
            return Err(invalid("unknown key id"));
        }
        let sig = B64
            .decode(s)
            .map_err(|_| invalid("bad signature encoding"))?;
        if sig.len() != 64 {
            return Err(invalid("bad signature length"));
        }
        if !self.verify_raw(kid, format!("{h}.{c}").as_bytes(), s) {
            return Err(invalid("signature does not verify"));
        }
        let claims: Claims =
            serde_json::from_slice(&B64.decode(c).map_err(|_| invalid("bad claims encoding"))?)
                .map_err(|e| IdentityError::Invalid(format!("bad claims: {e}")))?;
        if claims.exp <= now_secs() {
            return Err(invalid("expired"));
        }
        Ok(claims)
    }
}

/// Which invocations are running: a token is active only while its
/// invocation is.
#[derive(Clone, Default)]
pub struct ActiveInvocations {
    ids: Arc<Mutex<HashSet<Arc<str>>>>,
}

impl ActiveInvocations {
    pub(crate) fn start(&self, id: Arc<str>) {
        self.ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id);
    }

    pub(crate) fn end(&self, id: &str) {
        self.ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    pub fn is_active(&self, id: &str) -> bool {
        self.ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(id)
    }
}

/// The answer of token introspection (RFC 7662).
#[derive(Debug, Clone, Serialize)]
pub struct Introspection {
    pub active: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub claims: Option<Claims>,
    /// Why the token is inactive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A signed token for one invocation.
pub(crate) struct Minter {
    pub(crate) issuer: Arc<Issuer>,
    pub(crate) tool: Arc<str>,
    pub(crate) identity: Arc<str>,
    pub(crate) task: Arc<str>,
    pub(crate) invocation: Arc<str>,
    pub(crate) scope: Vec<String>,
    /// Unix seconds of the invocation deadline.
    pub(crate) deadline: u64,
    /// Audiences the manifest allows.
    pub(crate) audiences: Vec<String>,
}

impl Minter {
    pub(crate) fn mint(&self, audience: &str) -> String {
        let iat = now_secs();
        self.issuer.sign(&Claims {
            iss: self.issuer.iss(),
            sub: self.identity.to_string(),
            aud: audience.to_owned(),
            task: self.task.to_string(),
            jti: self.invocation.to_string(),
            tool: self.tool.to_string(),
            scope: self.scope.clone(),
            iat,
            exp: self
                .deadline
                .min(iat + MAX_TOKEN_LIFETIME_SECS)
                .max(iat + 1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Verifier;

    fn claims(aud: &str, exp: u64) -> Claims {
        Claims {
            iss: "warden:x".into(),
            sub: "sha256:00".into(),
            aud: aud.into(),
            task: "t".into(),
            jti: "inv".into(),
            tool: "tool".into(),
            scope: vec!["fs:workspace:read".into()],
            iat: now_secs(),
            exp,
        }
    }

    #[test]
    fn tokens_verify_against_the_jwks_and_nothing_else() {
        let issuer = Issuer::from_seed(&[7; 32]);
        let verifier = Verifier::from_jwks(&issuer.jwks()).unwrap();
        let token = issuer.sign(&claims("https://api", now_secs() + 60));
        assert_eq!(verifier.verify(&token, "https://api").unwrap().task, "t");
        assert!(
            verifier
                .verify(&token, "https://other")
                .unwrap_err()
                .to_string()
                .contains("audience")
        );
        let expired = issuer.sign(&claims("https://api", now_secs() - 1));
        assert!(
            verifier
                .verify(&expired, "https://api")
                .unwrap_err()
                .to_string()
                .contains("expired")
        );
        // Tampered claims, and another issuer's key.
        let mut parts: Vec<_> = token.split('.').map(str::to_owned).collect();
        parts[1] =
            B64.encode(serde_json::to_vec(&claims("https://api", now_secs() + 9999)).unwrap());
        assert!(verifier.verify(&parts.join("."), "https://api").is_err());
        let other = Issuer::from_seed(&[8; 32]).sign(&claims("https://api", now_secs() + 60));
        assert!(verifier.verify(&other, "https://api").is_err());
    }

    #[test]
    fn the_key_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/identity.key");
        let a = Issuer::load_or_create(&path).unwrap();
        let b = Issuer::load_or_create(&path).unwrap();
        assert_eq!(a.jwks(), b.jwks());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }
}
