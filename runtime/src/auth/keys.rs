//! The verification keys of one issuer or trust domain: fetched (from its
//! metadata's `jwks_uri`, a configured URL, or a bundle file), cached,
//! refetched when stale or when a token names a key id not in the cache —
//! at most once per `refresh`, so a flood of made-up key ids costs the
//! issuer nothing.

use super::agents::{KeySource, loopback, this_machine};
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Keys older than this are fetched again before use (kept if the fetch
/// fails: an unreachable issuer does not lock every agent out).
const MAX_AGE: Duration = Duration::from_secs(15 * 60);
/// The largest metadata document or key set read.
const MAX_DOCUMENT: usize = 256 << 10;
/// How long a set that cannot be fetched again is still used: past this,
/// its tokens are refused (a network attacker who blocks the issuer cannot
/// keep a removed key alive for ever).
const MAX_STALE: Duration = Duration::from_secs(24 * 3600);
/// The most keys one set may hold.
const MAX_KEYS: usize = 64;

/// One usable key: how to verify with it, and the algorithm it is pinned to.
#[derive(Clone)]
pub(crate) struct Key {
    pub(crate) key: DecodingKey,
    pub(crate) alg: Option<String>,
}

#[derive(Default)]
struct Cached {
    keys: HashMap<String, Key>,
    fetched: Option<Instant>,
    /// The last fetch tried, successful or not (the refresh bound).
    tried: Option<Instant>,
}

/// Where the keys come from.
pub(crate) enum Source {
    Discover { issuer: String },
    Url(String),
    File(PathBuf),
}

impl Source {
    pub(crate) fn of(issuer: &str, keys: &KeySource) -> Source {
        match keys {
            KeySource::Discover => Source::Discover {
                issuer: issuer.to_owned(),
            },
            KeySource::Url(u) => Source::Url(u.clone()),
            KeySource::File(f) => Source::File(f.clone()),
        }
    }
}

/// The keys of one issuer or trust domain.
pub(crate) struct KeySet {
    source: Source,
    refresh: Duration,
    cached: std::sync::Mutex<Cached>,
    /// Held while fetching: one fetch at a time.
    fetching: tokio::sync::Mutex<()>,
    client: reqwest::Client,
    /// How many fetches were made (for the log and tests).
    fetches: std::sync::atomic::AtomicU64,
}

impl KeySet {
    pub(crate) fn new(source: Source, refresh: Duration, client: reqwest::Client) -> KeySet {
        KeySet {
            source,
            refresh,
            cached: std::sync::Mutex::default(),
            fetching: tokio::sync::Mutex::const_new(()),
            client,
            fetches: Default::default(),
        }
    }

    /// The key `kid` names, fetching the set when it is stale or lacks it
    /// (within the refresh bound). A key in a fresh set is read without
    /// waiting; only fetches wait for each other (one at a time), so a slow
    /// issuer stalls no request whose key is already known.
    pub(crate) async fn get(&self, kid: &str) -> Result<Key, String> {
        if let Some(k) = self.known(kid, MAX_AGE) {
            return Ok(k);
        }
        let _one_fetch = match self.fetching.try_lock() {
            Ok(g) => g,
            Err(_) => {
                // A fetch is running: a stale set answers meanwhile.
                if let Some(k) = self.known(kid, MAX_STALE) {
                    return Ok(k);
                }
                self.fetching.lock().await
            }
        };
        // Another request may have fetched while this one waited.
        if let Some(k) = self.known(kid, MAX_AGE) {
            return Ok(k);
        }
        let may_fetch = {
            let mut c = self.lock();
            // A stale set is fetched again at least every MAX_AGE, whatever
            // `refresh` allows for made-up key ids (up to a day).
            let bound = if c.fetched.is_none_or(|t| t.elapsed() >= MAX_AGE) {
                self.refresh.min(MAX_AGE)
            } else {
                self.refresh
            };
            let may = c.tried.is_none_or(|t| t.elapsed() >= bound);
            if may {
                c.tried = Some(Instant::now());
            }
            may
        };
        if may_fetch {
            self.fetches
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let fetched = self.fetch().await;
            let mut c = self.lock();
            match fetched {
                Ok(keys) => {
                    c.keys = keys;
                    c.fetched = Some(Instant::now());
                }
                Err(e) => {
                    // The details (addresses, statuses) are for the
                    // operator, not for whoever sent the token.
                    tracing::warn!(
                        "cannot fetch the key set: {}",
                        crate::redact::escape_control(&e)
                    );
                    if c.keys.is_empty() {
                        return Err(
                            "cannot get the keys that verify it (the server's log says why)".into(),
                        );
                    }
                }
            }
        }
        // A stale set still answers (an unreachable issuer locks no agent
        // out at once) for up to MAX_STALE; a key it lacks is unknown until
        // the next allowed fetch.
        if let Some(k) = self.known(kid, MAX_STALE) {
            return Ok(k);
        }
        let shown = super::token::shown(kid);
        Err(if !self.lock().keys.contains_key(kid) {
            if may_fetch {
                format!("its key id {shown} is not in the issuer's key set")
            } else {
                format!(
                    "its key id {shown} is not in the issuer's key set (fetched again at most every {})",
                    humantime::format_duration(self.refresh)
                )
            }
        } else {
            format!(
                "the issuer's keys could not be fetched for over {}: refused until they are",
                humantime::format_duration(MAX_STALE)
            )
        })
    }

    /// `kid`'s key in the cached set, if the set is younger than `age`.
    fn known(&self, kid: &str, age: Duration) -> Option<Key> {
        let c = self.lock();
        if c.fetched.is_none_or(|t| t.elapsed() >= age) {
            return None;
        }
        c.keys.get(kid).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.cached.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn fetch(&self) -> Result<HashMap<String, Key>, String> {
        match &self.source {
            Source::File(f) => read_bundle(f),
            Source::Url(u) => parse_set(&self.document(u).await?),
            Source::Discover { issuer } => {
                let jwks = self.discover(issuer).await?;
                parse_set(&self.document(&jwks).await?)
            }
        }
    }

    /// The `jwks_uri` of `issuer`'s metadata: RFC 8414's well-known path,
    /// then OpenID discovery's. The metadata must name this very issuer.
    async fn discover(&self, issuer: &str) -> Result<String, String> {
        let u = url::Url::parse(issuer).map_err(|e| format!("issuer {issuer:?}: {e}"))?;
        let path = u.path().trim_end_matches('/');
        let origin = u.origin().ascii_serialization();
        let candidates = [
            format!("{origin}/.well-known/oauth-authorization-server{path}"),
            format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            ),
        ];
        let mut why = Vec::new();
        for at in candidates {
            let doc = match self.document(&at).await {
                Ok(d) => d,
                Err(e) => {
                    why.push(e);
                    continue;
                }
            };
            if doc.get("issuer").and_then(|v| v.as_str()) != Some(issuer) {
                why.push(format!("{at}: its issuer is not {issuer:?}"));
                continue;
            }
            let Some(jwks) = doc.get("jwks_uri").and_then(|v| v.as_str()) else {
                why.push(format!("{at}: no jwks_uri"));
                continue;
            };
            super::agents::key_url(jwks)?;
            let local = |u: &str| {
                url::Url::parse(u)
                    .ok()
                    .and_then(|u| u.host().map(|h| this_machine(&h)))
                    .unwrap_or(false)
            };
            if local(jwks) && !local(issuer) {
                return Err(format!(
                    "{at}: its jwks_uri is on this machine, its issuer is not"
                ));
            }
            return Ok(jwks.to_owned());
        }
        Err(why.join("; "))
    }

    /// A JSON document from `at`: https (http on loopback), no redirects,
    /// at most 256 KiB.
    async fn document(&self, at: &str) -> Result<serde_json::Value, String> {
        let u = url::Url::parse(at).map_err(|e| format!("{at}: {e}"))?;
        let local = u.host().is_some_and(|h| loopback(&h));
        if !(u.scheme() == "https" || (u.scheme() == "http" && local)) {
            return Err(format!("{at}: not https"));
        }
        let mut response = self
            .client
            .get(u)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| format!("{at}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{at}: HTTP {}", response.status().as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| format!("{at}: {e}"))? {
            if body.len() + chunk.len() > MAX_DOCUMENT {
                return Err(format!("{at}: larger than {} KiB", MAX_DOCUMENT >> 10));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| format!("{at}: not JSON: {e}"))
    }

    pub(crate) fn fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The keys of a JWT bundle or key set file (a SPIFFE bundle is a JWK set).
pub(crate) fn read_bundle(path: &Path) -> Result<HashMap<String, Key>, String> {
    let text = crate::provenance::read_bounded(path, MAX_DOCUMENT as u64, "the key set")
        .map_err(|e| e.to_string())?;
    let doc: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| format!("{}: not a JWK set: {e}", path.display()))?;
    parse_set(&doc).map_err(|e| format!("{}: {e}", path.display()))
}

/// The signing keys of a JWK set, by key id. A key of a type this host
/// cannot use, or for encryption, is skipped; a set with none is refused.
fn parse_set(doc: &serde_json::Value) -> Result<HashMap<String, Key>, String> {
    let keys = doc
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or("not a JWK set (expected {\"keys\": [...]})")?;
    let mut out = HashMap::new();
    for k in keys.iter().take(MAX_KEYS) {
        let Ok(jwk) = serde_json::from_value::<Jwk>(k.clone()) else {
            continue;
        };
        let usable = match &jwk.common.public_key_use {
            None | Some(PublicKeyUse::Signature) => true,
            Some(PublicKeyUse::Other(u)) => u == "jwt-svid",
            Some(PublicKeyUse::Encryption) => false,
        };
        let (Some(kid), true) = (jwk.common.key_id.clone(), usable) else {
            continue;
        };
        if matches!(
            jwk.algorithm,
            jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)
        ) {
            // A shared secret in a public key set: never a verification key.
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        let alg = jwk.common.key_algorithm.map(|a| a.to_string());
        out.insert(kid, Key { key, alg });
    }
    if out.is_empty() {
        return Err(
            "no usable signing key (expected keys with a kid, of type RSA, EC or OKP)".into(),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(path: &Path, kid: &str) {
        let jwk = format!(
            r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"{kid}","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}}]}}"#
        );
        std::fs::write(path, jwk).unwrap();
    }

    /// A set older than 15 minutes is fetched again before a token is
    /// checked, even with a `refresh` of a day (which bounds the fetches
    /// made-up key ids cause): a key the issuer removed stops verifying.
    #[tokio::test]
    async fn a_stale_set_is_fetched_again_whatever_the_refresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.jwks");
        bundle(&path, "old");
        let day = Duration::from_secs(86_400);
        let set = KeySet::new(Source::File(path.clone()), day, reqwest::Client::new());
        assert!(set.get("old").await.is_ok());
        let fetches = || set.fetches.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(fetches(), 1);
        // A fresh set: a made-up key id waits for the refresh bound.
        assert!(set.get("made-up").await.is_err());
        assert_eq!(fetches(), 1);

        // The issuer removes the key; 16 minutes pass.
        bundle(&path, "new");
        let then = Instant::now()
            .checked_sub(Duration::from_secs(16 * 60))
            .unwrap();
        {
            let mut c = set.lock();
            c.fetched = Some(then);
            c.tried = Some(then);
        }
        let e = set.get("old").await.err().unwrap();
        assert_eq!(fetches(), 2);
        assert_eq!(e, "its key id \"old\" is not in the issuer's key set");
        assert!(set.get("new").await.is_ok());
    }
}
