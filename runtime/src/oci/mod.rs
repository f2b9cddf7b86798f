//! Components in OCI registries: `component = "oci://HOST/REPO:TAG"` (or
//! `@sha256:…`) in a manifest, `warden pull` and `warden push`.
//!
//! Artifacts follow the Wasm OCI artifact convention (the one `wkg` and
//! `oci-wasm` use): an OCI image manifest whose config has media type
//! `application/vnd.wasm.config.v0+json` and whose one layer is the
//! component, media type `application/wasm`. Pulls also take the older
//! `application/vnd.wasm.content.layer.v1+wasm` layer type.
//!
//! What is pulled is kept in a content-addressed [`BlobCache`]; a reference
//! whose manifest and component the cache has is served from it without
//! touching the network (a tag is resolved at `warden pull` and pinned
//! locally until the next pull).
//!
//! # Security
//!
//! - TLS always, except to a loopback registry (127.0.0.0/8, ::1,
//!   `localhost`, decided by the parsed host); a redirect or token service
//!   on plain HTTP elsewhere is refused, not followed, and from a registry
//!   that is not on loopback, plain HTTP is refused even to loopback.
//! - Everything remote is bounded: a manifest at 64 KiB, one wasm layer, a
//!   component at [`MAX_COMPONENT`]; connects, reads, whole requests and
//!   a whole pull ([`PULL_TIMEOUT`]) have timeouts.
//! - The manifest is checked against a digest reference, the component
//!   against the manifest's layer digest (and its size), and against the
//!   tool's `identity` pin before it is downloaded.
//! - Credentials come only from [`Credentials`]; they are never logged or
//!   shown in errors.

pub mod cache;
mod http;
mod pull;
mod push;
pub mod reference;
pub mod signatures;

pub use cache::{BlobCache, CacheError};
pub use pull::{Pulled, pull, resolve};
pub use push::push;
pub use reference::OciRef;
pub use signatures::{CosignSignature, manifest_digest, push_signature};

use crate::identity::Identity;
use std::fmt;
use std::time::Duration;

/// The OCI image manifest media type.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The Wasm artifact config media type.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The component layer's media type.
pub const LAYER_MEDIA_TYPE: &str = "application/wasm";
/// The older layer media type (wasm-to-oci), accepted on pull.
pub const OLD_LAYER_MEDIA_TYPE: &str = "application/vnd.wasm.content.layer.v1+wasm";

/// The largest component Warden reads from a registry or its blob cache.
pub const MAX_COMPONENT: u64 = 256 << 20;

/// The largest manifest read from a registry.
pub const MAX_MANIFEST: u64 = 64 << 10;
/// A connection that does not open within this fails.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A registry that sends nothing for this long fails the request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest one request (or a whole push) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// The longest a whole pull may take: manifest, component, token and
/// signatures together (each request's own limits still apply), so that a
/// registry answering each request just in time cannot hold a pull, or a
/// run that fetches, for the sum of them.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(600);

/// `work` (one pull's requests against `reference`'s registry), ended with
/// an error when it takes longer than `limit`.
pub(crate) async fn within<T>(
    limit: Duration,
    reference: &OciRef,
    work: impl std::future::Future<Output = Result<T, OciError>>,
) -> Result<T, OciError> {
    match tokio::time::timeout(limit, work).await {
        Ok(answer) => answer,
        Err(_) => Err(OciError::Registry {
            reference: reference.to_string(),
            reason: format!(
                "the registry did not finish within {limit:?} (the limit for a whole pull)"
            ),
        }),
    }
}

/// Registry credentials for HTTP basic auth or a token service (anonymous
/// when there are none). The password is never shown.
#[derive(Clone)]
pub struct Credentials {
    /// The registry (`HOST[:PORT]`) they belong to: sent to no other.
    registry: String,
    username: String,
    password: zeroize::Zeroizing<String>,
}

impl Credentials {
    /// Credentials for `registry` (`HOST[:PORT]`, as in a reference).
    pub fn new(
        registry: impl Into<String>,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Credentials {
        Credentials {
            registry: registry.into(),
            username: username.into(),
            password: zeroize::Zeroizing::new(password.into()),
        }
    }

    /// `WARDEN_REGISTRY_USERNAME` and `WARDEN_REGISTRY_PASSWORD` for the
    /// registry `WARDEN_REGISTRY` names (`HOST[:PORT]`), when all three are
    /// set. Without `WARDEN_REGISTRY` they are not used (a warning says
    /// so): sent to whatever registry a manifest names, they would be given
    /// away by a manifest someone else wrote.
    pub fn from_env() -> Option<Credentials> {
        let user = std::env::var("WARDEN_REGISTRY_USERNAME").ok()?;
        let pass = std::env::var("WARDEN_REGISTRY_PASSWORD").ok()?;
        let Some(registry) = std::env::var("WARDEN_REGISTRY")
            .ok()
            .filter(|r| !r.is_empty())
        else {
            tracing::warn!(
                "WARDEN_REGISTRY_USERNAME and WARDEN_REGISTRY_PASSWORD are not used: set WARDEN_REGISTRY to the registry (HOST[:PORT]) they are for"
            );
            return None;
        };
        Some(Credentials::new(registry, user, pass))
    }

    /// `creds` when they belong to `reference`'s registry.
    pub(crate) fn for_ref<'a>(
        creds: Option<&'a Credentials>,
        reference: &OciRef,
    ) -> Option<&'a Credentials> {
        creds.filter(|c| c.registry.eq_ignore_ascii_case(&reference.registry()))
    }

    pub(crate) fn registry_auth(
        creds: Option<&Credentials>,
        reference: &OciRef,
    ) -> oci_client::secrets::RegistryAuth {
        match Credentials::for_ref(creds, reference) {
            Some(c) => oci_client::secrets::RegistryAuth::Basic(
                c.username.clone(),
                c.password.as_str().to_owned(),
            ),
            None => oci_client::secrets::RegistryAuth::Anonymous,
        }
    }

    fn basic_header(&self) -> String {
        use base64::Engine as _;
        let raw = zeroize::Zeroizing::new(format!("{}:{}", self.username, *self.password));
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw.as_bytes())
        )
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// Why a component could not be had from a registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OciError {
    /// Offline, and the cache does not have it.
    #[error(
        "{reference}: not in the cache (offline: the registry is not asked); run `warden pull {reference}`"
    )]
    NotCached { reference: String },
    /// The registry's answer is not an acceptable component: wrong digest,
    /// too large, not one wasm layer.
    #[error("{reference}: {reason}")]
    Invalid { reference: String, reason: String },
    /// The manifest's layer is not the tool's pinned identity.
    #[error(
        "{reference}: the manifest pins identity {expected} but the registry's component is {actual}"
    )]
    Pin {
        reference: String,
        expected: Identity,
        actual: Identity,
    },
    /// The registry could not be reached or refused.
    #[error("{reference}: {reason}")]
    Registry { reference: String, reason: String },
    /// A cache entry is unusable (and could not be fetched again).
    #[error("{reference}: {error}; run `warden pull {reference}` to fetch it again")]
    Cache {
        reference: String,
        error: CacheError,
    },
}

/// A message from a library or a server, fit to be shown: its chain of
/// causes, control characters escaped, cut to 400 bytes.
pub(crate) fn shown_error(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    let mut depth = 0;
    while let Some(s) = source
        && depth < 8
    {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
        depth += 1;
    }
    crate::redact::escape_control(cut(&without_queries(&text), 400)).into_owned()
}

/// `text` with every URL's query and fragment taken out: a redirect's URL
/// can carry a storage signature (`?X-Amz-Signature=…`), and reqwest's
/// errors name the URL they failed on.
fn without_queries(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let end_of_url = rest[at..]
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '>'))
            .map_or(rest.len(), |i| at + i);
        let url = &rest[..end_of_url];
        let kept = url[at..].find(['?', '#']).map_or(url.len(), |i| at + i);
        out.push_str(&url[..kept]);
        rest = &rest[end_of_url..];
    }
    out.push_str(rest);
    out
}

/// The longest start of `s` of at most `max` bytes that ends on a
/// character boundary.
pub(crate) fn cut(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The size a descriptor claims, if it is one a component may have.
fn component_size(size: i64) -> Option<u64> {
    u64::try_from(size)
        .ok()
        .filter(|s| (1..=MAX_COMPONENT).contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_show_urls_without_their_queries() {
        let text = "error following redirect for url (http://localhost:5086/storage/blob?X-Amz-Signature=SECRETSIG#frag): to http://10.0.0.1/x?token=T";
        let shown = without_queries(text);
        assert_eq!(
            shown,
            "error following redirect for url (http://localhost:5086/storage/blob): to http://10.0.0.1/x"
        );
        assert_eq!(
            without_queries("no url here ? at all"),
            "no url here ? at all"
        );
    }

    #[test]
    fn credentials_go_only_to_their_registry() {
        let creds = Credentials::new("registry.example:5000", "alice", "s3cret");
        let ours: OciRef = "oci://registry.example:5000/tools/echo:v1".parse().unwrap();
        let theirs: OciRef = "oci://attacker.example/tools/echo:v1".parse().unwrap();
        let other_port: OciRef = "oci://registry.example/tools/echo:v1".parse().unwrap();
        assert!(Credentials::for_ref(Some(&creds), &ours).is_some());
        assert!(Credentials::for_ref(Some(&creds), &theirs).is_none());
        assert!(Credentials::for_ref(Some(&creds), &other_port).is_none());
        assert!(matches!(
            Credentials::registry_auth(Some(&creds), &theirs),
            oci_client::secrets::RegistryAuth::Anonymous
        ));
        assert!(!format!("{creds:?}").contains("s3cret"));
    }
}
