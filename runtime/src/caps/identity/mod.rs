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
//! Tokens are EdDSA (Ed25519) JWTs, made and checked with `jsonwebtoken`:
//! the algorithm allowlist is EdDSA alone, and verification checks the
//! signature against the key the header names, `iss` (bound to that key),
//! `aud`, `exp` and `nbf` with [`LEEWAY_SECS`] of clock skew.

mod host;
pub(crate) mod manifest;
pub(crate) use host::{IdentityStore, IdentityView, add_to_linker};

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest lifetime of a token, further bounded by the invocation deadline.
pub const MAX_TOKEN_LIFETIME_SECS: u64 = 300;

/// How many ended invocations a runtime remembers for introspection (see
/// [`ActiveInvocations`]).
pub const MAX_ENDED: usize = 65_536;

/// Clock skew allowed when checking `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 5;

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
    /// Not valid before (the time it was issued).
    pub nbf: u64,
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
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(self.kid().to_owned());
        let key = jsonwebtoken::EncodingKey::from_ed_der(&self.pkcs8());
        // Signing with a well-formed Ed25519 key and serializable claims
        // cannot fail; an empty token would fail every verification.
        jsonwebtoken::encode(&header, claims, &key).unwrap_or_else(|e| {
            tracing::error!("cannot sign an identity token: {e}");
            String::new()
        })
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
        self.check(token, Some(audience))
    }

    /// Checks the signature, the issuer and the validity window, for any
    /// audience.
    pub fn verify_any_audience(&self, token: &str) -> Result<Claims, IdentityError> {
        self.check(token, None)
    }

    fn check(&self, token: &str, audience: Option<&str>) -> Result<Claims, IdentityError> {
        use jsonwebtoken::errors::ErrorKind;
        use jsonwebtoken::{Algorithm, Validation};
        let invalid = |m: String| IdentityError::Invalid(m);
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| invalid(format!("not a JWT: {e}")))?;
        if header.alg != Algorithm::EdDSA {
            return Err(invalid(format!("alg is {:?}, not EdDSA", header.alg)));
        }
        let kid = header.kid.unwrap_or_default();
        let key = self
            .decoding_key(&kid)
            .ok_or_else(|| invalid("unknown key id".into()))?;
        let mut v = Validation::new(Algorithm::EdDSA);
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        v.set_issuer(&[format!("warden:{kid}")]);
        match audience {
            Some(a) => v.set_audience(&[a]),
            None => v.validate_aud = false,
        }
        jsonwebtoken::decode::<Claims>(token, key, &v)
            .map(|d| d.claims)
            .map_err(|e| {
                invalid(match e.kind() {
                    ErrorKind::ExpiredSignature => "expired".into(),
                    ErrorKind::ImmatureSignature => "not valid yet (nbf)".into(),
                    ErrorKind::InvalidAudience => {
                        format!("audience is not {}", audience.unwrap_or_default())
                    }
                    ErrorKind::InvalidIssuer => format!("issuer is not warden:{kid}"),
                    ErrorKind::InvalidSignature => "signature does not verify".into(),
                    ErrorKind::MissingRequiredClaim(c) => format!("no {c} claim"),
                    _ => e.to_string(),
                })
            })
    }
}

/// Which invocations are running: a token is active only while its
/// invocation is. Invocations that ended here are remembered until their
/// tokens expire, so that this process's own knowledge wins over a shared
/// ledger that missed their end (see [`crate::Runtime::introspect_shared`]).
#[derive(Clone, Default)]
pub struct ActiveInvocations {
    ids: Arc<Mutex<Invocations>>,
}

#[derive(Default)]
struct Invocations {
    running: HashSet<Arc<str>>,
    ended: HashSet<Arc<str>>,
    /// When each ended one may be forgotten (Unix seconds), in end order.
    forget: std::collections::VecDeque<(u64, Arc<str>)>,
}

impl ActiveInvocations {
    fn lock(&self) -> std::sync::MutexGuard<'_, Invocations> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn start(&self, id: Arc<str>) {
        self.lock().running.insert(id);
    }

    /// `id` ended; its tokens expire by `deadline` (Unix seconds), and no
    /// later than [`MAX_TOKEN_LIFETIME_SECS`] from now. At most
    /// [`MAX_ENDED`] are kept (the oldest go first).
    pub(crate) fn end(&self, id: &str, deadline: u64) {
        let mut ids = self.lock();
        let Some(id) = ids.running.take(id) else {
            return;
        };
        let now = now_secs();
        while ids
            .forget
            .front()
            .is_some_and(|(t, _)| *t < now || ids.ended.len() >= MAX_ENDED)
        {
            if let Some((_, old)) = ids.forget.pop_front() {
                ids.ended.remove(&old);
            }
        }
        let expiry = deadline.min(now + MAX_TOKEN_LIFETIME_SECS);
        ids.ended.insert(id.clone());
        ids.forget.push_back((expiry + LEEWAY_SECS + 2, id));
    }

    pub fn is_active(&self, id: &str) -> bool {
        self.lock().running.contains(id)
    }

    /// Whether `id` ran here and ended (and its tokens may not have
    /// expired yet).
    pub fn ended_here(&self, id: &str) -> bool {
        self.lock().ended.contains(id)
    }
}

/// Where invocations that other runtimes run are known (replicas sharing
/// one store): introspection asks it about a token this runtime does not
/// see running. See [`crate::store::PgInvocations`].
#[async_trait::async_trait]
pub trait InvocationLedger: Send + Sync {
    /// Whether `invocation` has started and not yet ended, as far as the
    /// ledger knows; why not, when it cannot be asked (introspection then
    /// fails rather than answer either way).
    async fn running(&self, invocation: &str) -> Result<bool, String>;
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
    /// Audiences of the deploy webhooks the task was granted: their tokens
    /// are signed before the tool runs too, so that redaction knows them
    /// (a webhook that echoes its token, or hands it back later through a
    /// granted host, hands the tool nothing), and never handed to the tool.
    pub(crate) webhooks: Vec<String>,
    /// Where the invocation is marked active, from its first token on
    /// (an invocation that mints none costs the set nothing).
    pub(crate) active: ActiveInvocations,
    pub(crate) mark: Mutex<Mark>,
    /// A token for each of `audiences`, signed before the tool runs
    /// ([`Minter::premint`]) so that redaction knows their values: what the
    /// tool is handed is kept out of its output, logs, errors and the
    /// trail, as a secret's value is. Audience, `nbf`, token.
    pub(crate) minted: OnceLock<Vec<(String, u64, String)>>,
}

/// Whether a minter's invocation is marked active.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    #[default]
    NotYet,
    Active,
    /// The invocation has ended: a token minted now is never active.
    Ended,
}

impl Minter {
    /// A token for `audience`, the invocation marked active (a `mint:`
    /// secret, a deployment's webhook).
    pub(crate) fn mint(&self, audience: &str) -> String {
        self.mark_active();
        let iat = now_secs();
        self.sign(audience, iat, iat)
    }

    /// Marks the invocation active unless it has ended; whether it has not.
    fn mark_active(&self) -> bool {
        let mut mark = self.mark.lock().unwrap_or_else(|p| p.into_inner());
        if *mark == Mark::NotYet {
            self.active.start(self.invocation.clone());
            *mark = Mark::Active;
        }
        *mark == Mark::Active
    }

    /// Signs the tokens of each listed audience, once, before the tool
    /// runs (a manifest lists few; a tool that lists none pays nothing):
    /// one a [`MAX_TOKEN_LIFETIME_SECS`] window, the next valid a minute
    /// before the last expires, up to the deadline (one for a tool whose
    /// timeout is under five minutes). The invocation is marked active only
    /// when one is handed out. Their audiences and values, for redaction.
    pub(crate) fn premint(&self) -> impl Iterator<Item = (&str, &str)> {
        let minted = self.minted.get_or_init(|| {
            let iat = now_secs();
            let step = MAX_TOKEN_LIFETIME_SECS - 60;
            let mut out = Vec::new();
            // A webhook whose origin is also one of the tool's audiences
            // gets the tokens the tool may hold (the same claims).
            let webhooks = self.webhooks.iter().filter(|w| !self.audiences.contains(w));
            for a in self.audiences.iter().chain(webhooks) {
                let mut nbf = iat;
                loop {
                    out.push((a.clone(), nbf, self.sign(a, iat, nbf)));
                    if nbf + MAX_TOKEN_LIFETIME_SECS >= self.deadline {
                        break;
                    }
                    nbf += step;
                }
            }
            out
        });
        minted.iter().map(|(a, _, t)| (a.as_str(), t.as_str()))
    }

    /// [`Minter::premint`]'s tokens, each by the name redaction knows it
    /// by: a tool's own audience's as a token handed to it, a webhook's as
    /// a deploy token (a secret the tool does not hold).
    pub(crate) fn premint_named(&self) -> impl Iterator<Item = (String, &str)> {
        self.premint().map(|(audience, token)| {
            let name = match self.audiences.iter().any(|a| a == audience) {
                true => crate::redact::token_name(audience),
                false => crate::redact::deploy_token_name(audience),
            };
            (name, token)
        })
    }

    /// The token for `audience` the tool may hold now (`identity::token`),
    /// the one whose window began last: `None` when none was signed for it
    /// before the tool ran, or the invocation has ended — a token minted
    /// while a tool describes itself would name no invocation, be recorded
    /// nowhere and pass no policy.
    pub(crate) fn hand_out(&self, audience: &str) -> Option<String> {
        if !self.audiences.iter().any(|a| a == audience) {
            return None;
        }
        let token = self.signed_now(audience)?;
        self.mark_active().then(|| token.clone())
    }

    /// The token for a deploy webhook at `audience`: the one signed before
    /// the tool ran whose window began last (redaction knows it), else a
    /// new one; the invocation marked active.
    pub(crate) fn webhook_token(&self, audience: &str) -> String {
        // Before the first window (the clock stepped back): still the
        // first, which redaction knows, not a new one.
        let first = || {
            let minted = self.minted.get()?;
            minted
                .iter()
                .find(|(a, _, _)| a == audience)
                .map(|(_, _, t)| t)
        };
        match self.signed_now(audience).or_else(first) {
            Some(token) => {
                self.mark_active();
                token.clone()
            }
            None => self.mint(audience),
        }
    }

    /// Of the tokens signed before the tool ran for `audience`, the one
    /// whose window began last, if one has begun.
    fn signed_now(&self, audience: &str) -> Option<&String> {
        let now = now_secs();
        let (_, _, token) = (self.minted.get()?.iter())
            .filter(|(a, nbf, _)| a == audience && *nbf <= now)
            .max_by_key(|(_, nbf, _)| *nbf)?;
        Some(token)
    }

    /// Whether tokens were signed before the tool ran.
    pub(crate) fn preminted(&self) -> bool {
        self.minted.get().is_some()
    }

    fn sign(&self, audience: &str, iat: u64, nbf: u64) -> String {
        self.issuer.sign(&Claims {
            iss: self.issuer.iss(),
            sub: self.identity.to_string(),
            aud: audience.to_owned(),
            task: self.task.to_string(),
            jti: self.invocation.to_string(),
            tool: self.tool.to_string(),
            scope: self.scope.clone(),
            iat,
            nbf,
            exp: self
                .deadline
                .min(nbf + MAX_TOKEN_LIFETIME_SECS)
                .max(nbf + 1),
        })
    }

    /// The invocation has ended: its tokens are no longer active.
    pub(crate) fn ended(&self) {
        let mut mark = self.mark.lock().unwrap_or_else(|p| p.into_inner());
        if *mark == Mark::Active {
            self.active.end(&self.invocation, self.deadline);
        }
        *mark = Mark::Ended;
    }
}

#[cfg(test)]
mod tests;
