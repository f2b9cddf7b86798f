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
pub(crate) use host::add_to_linker;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use zeroize::Zeroizing;

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

/// Signs tokens with this instance's key.
pub struct Issuer {
    key: SigningKey,
    kid: String,
    iss: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("identity key {}: {reason}", path.display())]
    Key {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("invalid token: {0}")]
    Invalid(String),
}

impl Issuer {
    /// An issuer with a fresh key that lives as long as the process.
    pub fn ephemeral() -> Result<Issuer, IdentityError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut *seed)
            .map_err(|e| IdentityError::Invalid(format!("no randomness: {e}")))?;
        Ok(Self::from_seed(&seed))
    }

    pub fn from_seed(seed: &[u8; 32]) -> Issuer {
        let key = SigningKey::from_bytes(seed);
        let kid = hex::encode(&Sha256::digest(key.verifying_key().as_bytes())[..8]);
        Issuer {
            iss: format!("warden:{kid}"),
            kid,
            key,
        }
    }

    /// Loads the key from `path` (a 32-byte seed, hex), creating it with mode
    /// 0600 on first use.
    pub fn load_or_create(path: &Path) -> Result<Issuer, IdentityError> {
        let err = |reason: String| IdentityError::Key {
            path: path.to_owned(),
            reason,
        };
        if let Ok(text) = std::fs::read_to_string(path).map(Zeroizing::new) {
            let mut seed = Zeroizing::new([0u8; 32]);
            hex::decode_to_slice(text.trim(), &mut *seed)
                .map_err(|e| err(format!("not a 64-digit hex seed ({e})")))?;
            return Ok(Self::from_seed(&seed));
        }
        let issuer = Self::ephemeral()?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| err(format!("cannot create its directory: {e}")))?;
        }
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts
            .open(path)
            .map_err(|e| err(format!("cannot create: {e}")))?;
        let seed = Zeroizing::new(hex::encode(issuer.key.to_bytes()));
        std::io::Write::write_all(&mut f, seed.as_bytes())
            .map_err(|e| err(format!("cannot write: {e}")))?;
        Ok(issuer)
    }

    /// The key id: 16 hex digits of the public key's SHA-256.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// An Ed25519 signature (base64url) over `message`.
    pub fn sign_raw(&self, message: &[u8]) -> String {
        B64.encode(self.key.sign(message).to_bytes())
    }

    /// The issuer name, `warden:<key id>`.
    pub fn iss(&self) -> &str {
        &self.iss
    }

    /// The public key set (RFC 7517) to verify this issuer's tokens.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({
            "keys": [{
                "kty": "OKP",
                "crv": "Ed25519",
                "alg": "EdDSA",
                "use": "sig",
                "kid": self.kid,
                "x": B64.encode(self.key.verifying_key().as_bytes()),
            }]
        })
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": self.kid});
        let signing_input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(serde_json::to_vec(claims).unwrap_or_default())
        );
        let sig = self.key.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", B64.encode(sig.to_bytes()))
    }
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Verifies tokens against a JWKS, as a downstream service would.
pub struct Verifier {
    keys: Vec<(String, VerifyingKey)>,
}

impl Verifier {
    pub fn from_jwks(jwks: &serde_json::Value) -> Result<Verifier, IdentityError> {
        let bad = |m: &str| IdentityError::Invalid(format!("bad JWKS: {m}"));
        let mut keys = Vec::new();
        for k in jwks["keys"].as_array().ok_or_else(|| bad("no keys"))? {
            if k["kty"] != "OKP" || k["crv"] != "Ed25519" {
                continue;
            }
            let x = B64
                .decode(k["x"].as_str().ok_or_else(|| bad("no x"))?)
                .map_err(|_| bad("x is not base64url"))?;
            let x: [u8; 32] = x.try_into().map_err(|_| bad("x is not 32 bytes"))?;
            let key = VerifyingKey::from_bytes(&x).map_err(|_| bad("x is not an Ed25519 key"))?;
            keys.push((k["kid"].as_str().unwrap_or_default().to_owned(), key));
        }
        Ok(Verifier { keys })
    }

    /// Whether `signature` (base64url) is key `kid`'s signature over `message`.
    pub fn verify_raw(&self, kid: &str, message: &[u8], signature: &str) -> bool {
        let Some((_, key)) = self.keys.iter().find(|(k, _)| k == kid) else {
            return false;
        };
        let Ok(sig) = B64.decode(signature) else {
            return false;
        };
        let Ok(sig) = <[u8; 64]>::try_from(sig) else {
            return false;
        };
        key.verify_strict(message, &Signature::from_bytes(&sig))
            .is_ok()
    }

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
        let key = self
            .keys
            .iter()
            .find(|(k, _)| k == kid)
            .map(|(_, k)| k)
            .ok_or_else(|| invalid("unknown key id"))?;
        let sig: [u8; 64] = B64
            .decode(s)
            .map_err(|_| invalid("bad signature encoding"))?
            .try_into()
            .map_err(|_| invalid("bad signature length"))?;
        key.verify_strict(format!("{h}.{c}").as_bytes(), &Signature::from_bytes(&sig))
            .map_err(|_| invalid("signature does not verify"))?;
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
            iss: self.issuer.iss().to_owned(),
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
