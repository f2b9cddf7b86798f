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
            for a in &self.audiences {
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

    /// The token for `audience` the tool may hold now (`identity::token`),
    /// the one whose window began last: `None` when none was signed for it
    /// before the tool ran, or the invocation has ended — a token minted
    /// while a tool describes itself would name no invocation, be recorded
    /// nowhere and pass no policy.
    pub(crate) fn hand_out(&self, audience: &str) -> Option<String> {
        let now = now_secs();
        let (_, _, token) = (self.minted.get()?.iter())
            .filter(|(a, nbf, _)| a == audience && *nbf <= now)
            .max_by_key(|(_, nbf, _)| *nbf)?;
        self.mark_active().then(|| token.clone())
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
mod tests {
    use super::*;
    use crate::keys::Verifier;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

    /// A minter of invocation `invocation` for `audiences`, its deadline
    /// at `deadline` (Unix seconds), marking it in `active`.
    fn test_minter(
        invocation: &str,
        deadline: u64,
        audiences: Vec<String>,
        active: ActiveInvocations,
    ) -> Minter {
        Minter {
            issuer: Arc::new(Issuer::from_seed(&[7; 32])),
            tool: "t".into(),
            identity: "sha256:00".into(),
            task: "task".into(),
            invocation: invocation.into(),
            scope: Vec::new(),
            deadline,
            audiences,
            active,
            mark: Default::default(),
            minted: Default::default(),
        }
    }

    #[test]
    fn an_invocation_is_active_from_its_first_token_until_it_ends() {
        let active = ActiveInvocations::default();
        let minter = test_minter("inv-1", now_secs() + 60, vec!["api".into()], active.clone());
        assert!(!active.is_active("inv-1"), "no token yet");
        minter.mint("api");
        minter.mint("api");
        assert!(active.is_active("inv-1"));
        minter.ended();
        assert!(!active.is_active("inv-1"));
        // A token minted after the end (a task the invocation left
        // behind) never makes it active again.
        minter.mint("api");
        assert!(!active.is_active("inv-1"));
        // A minter ended before its first token (`describe`'s, whose
        // invocation id is empty) never marks anything active.
        let describing = Minter {
            invocation: "".into(),
            mark: Default::default(),
            ..minter
        };
        describing.ended();
        describing.mint("api");
        assert!(!active.is_active(""));
    }

    /// A tool is handed the token signed before it ran (redaction knows
    /// it), for a listed audience, only while its invocation runs; signing
    /// them marks nothing active.
    #[test]
    fn a_tool_is_handed_its_preminted_token_only_while_it_runs() {
        let active = ActiveInvocations::default();
        let minter = test_minter(
            "inv-2",
            now_secs() + 60,
            vec!["api".into(), "other".into()],
            active.clone(),
        );
        assert_eq!(minter.hand_out("api"), None, "nothing signed yet");
        let signed: Vec<String> = minter.premint().map(|(_, t)| t.to_owned()).collect();
        assert_eq!(signed.len(), 2);
        assert!(!active.is_active("inv-2"), "signing marks nothing active");
        assert_eq!(minter.hand_out("api").as_ref(), Some(&signed[0]));
        assert_eq!(minter.hand_out("nope"), None);
        assert!(active.is_active("inv-2"));
        let verifier = Verifier::from_jwks(&minter.issuer.jwks()).unwrap();
        assert_eq!(verifier.verify(&signed[1], "other").unwrap().jti, "inv-2");
        minter.ended();
        assert_eq!(minter.hand_out("api"), None, "not after its end");
        // `describe`'s minter: ended before anything, and signs nothing.
        let describing = Minter {
            invocation: "".into(),
            mark: Default::default(),
            minted: Default::default(),
            ..minter
        };
        describing.ended();
        let _ = describing.premint().count();
        assert_eq!(describing.hand_out("api"), None);
        assert!(!active.is_active(""));
    }

    /// A tool that may run an hour is handed a token that has not expired
    /// however late it asks: tokens of five-minute windows, each valid a
    /// minute before the last expires, up to the deadline; none longer.
    #[test]
    fn a_long_invocation_has_a_token_for_every_window_up_to_its_deadline() {
        let now = now_secs();
        let minter = test_minter(
            "inv-3",
            now + 3600,
            vec!["api".into()],
            ActiveInvocations::default(),
        );
        let verifier = Verifier::from_jwks(&minter.issuer.jwks()).unwrap();
        let windows: Vec<Claims> = minter
            .premint()
            .map(|(_, t)| {
                let claims = t.split('.').nth(1).unwrap();
                serde_json::from_slice(&B64.decode(claims).unwrap()).unwrap()
            })
            .collect();
        assert_eq!(windows.len(), 15);
        assert_eq!(windows[0].nbf, windows[0].iat);
        for w in windows.windows(2) {
            assert!(w[1].nbf + 60 <= w[0].exp, "{w:?}");
            assert!(w[0].exp - w[0].nbf <= MAX_TOKEN_LIFETIME_SECS);
        }
        assert_eq!(windows.last().unwrap().exp, now + 3600);
        // Handed out now: the first window's, which verifies now.
        let token = minter.hand_out("api").unwrap();
        assert_eq!(verifier.verify(&token, "api").unwrap().nbf, windows[0].nbf);
    }

    fn claims(aud: &str, exp: u64) -> Claims {
        Claims {
            iss: Issuer::from_seed(&[7; 32]).iss(),
            sub: "sha256:00".into(),
            aud: aud.into(),
            task: "t".into(),
            jti: "inv".into(),
            tool: "tool".into(),
            scope: vec!["fs:workspace:read".into()],
            iat: now_secs(),
            nbf: now_secs(),
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
        // Past its expiry by more than the leeway.
        let expired = issuer.sign(&claims("https://api", now_secs() - LEEWAY_SECS - 1));
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
    fn issuer_validity_window_and_algorithm_are_checked() {
        let issuer = Issuer::from_seed(&[7; 32]);
        let verifier = Verifier::from_jwks(&issuer.jwks()).unwrap();
        let err = |token: &str| {
            verifier
                .verify(token, "https://api")
                .unwrap_err()
                .to_string()
        };
        let now = now_secs();
        // Within the leeway: still valid.
        let late = issuer.sign(&claims("https://api", now - 2));
        assert!(verifier.verify(&late, "https://api").is_ok());
        // Not valid before a time to come.
        let mut early = claims("https://api", now + 600);
        early.nbf = now + 120;
        assert_eq!(
            err(&issuer.sign(&early)),
            "invalid token: not valid yet (nbf)"
        );
        // Our key, but another issuer's name.
        let mut forged = claims("https://api", now + 60);
        forged.iss = "https://accounts.example".into();
        assert_eq!(
            err(&issuer.sign(&forged)),
            format!("invalid token: issuer is not warden:{}", issuer.kid())
        );
        // alg none, and HS256 keyed with the public key (algorithm
        // confusion): refused before any key is tried.
        let body = B64.encode(serde_json::to_vec(&claims("https://api", now + 60)).unwrap());
        let none = format!(
            "{}.{body}.",
            B64.encode(format!(r#"{{"alg":"none","kid":"{}"}}"#, issuer.kid()))
        );
        assert!(
            err(&none).starts_with("invalid token: not a JWT"),
            "{}",
            err(&none)
        );
        let public = B64
            .decode(issuer.jwks()["keys"][0]["x"].as_str().unwrap())
            .unwrap();
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some(issuer.kid().to_owned());
        let confused = jsonwebtoken::encode(
            &h,
            &claims("https://api", now + 60),
            &jsonwebtoken::EncodingKey::from_secret(&public).unwrap(),
        )
        .unwrap();
        assert_eq!(err(&confused), "invalid token: alg is HS256, not EdDSA");
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
