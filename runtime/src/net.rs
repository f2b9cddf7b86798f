//! URLs and HTTP clients as every host-made request sees them: egress
//! (`caps::http`), deploy webhooks and the webhook approver parse URLs and
//! build clients here, so one rule holds whichever of them sends.

use std::sync::{Arc, OnceLock};
use tokio_rustls::rustls;
use url::{Host, Url};

/// A destination: scheme, normalized host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub scheme: String,
    pub host: Host<String>,
    pub port: u16,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// Parses and normalizes an absolute http(s) URL: refuses NUL bytes and
/// userinfo; lower-cases and IDNA-encodes the host (the `url` crate's WHATWG
/// parsing, which also reads IPv4 forms such as `0x7f.1` as the address they
/// mean); drops one trailing dot from a domain.
pub fn parse_url(raw: &str) -> Result<(Url, Origin), String> {
    if raw.contains('\0') {
        return Err("URL contains a NUL byte".into());
    }
    let mut url = Url::parse(raw).map_err(|e| {
        format!("invalid URL '{raw}': {e} (expected an absolute http or https URL)")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "scheme '{}' is not allowed (expected http or https)",
            url.scheme()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("URL contains userinfo (user:password@), which is not allowed".into());
    }
    let host = match url.host() {
        Some(Host::Domain(d)) => {
            let d = d.strip_suffix('.').unwrap_or(d).to_owned();
            if d.is_empty() || d.ends_with('.') {
                return Err(format!("invalid host in '{raw}'"));
            }
            if url.host_str() != Some(d.as_str()) {
                url.set_host(Some(&d))
                    .map_err(|e| format!("invalid host '{d}': {e}"))?;
            }
            Host::Domain(d)
        }
        Some(Host::Ipv4(a)) => Host::Ipv4(a),
        Some(Host::Ipv6(a)) => Host::Ipv6(a),
        None => return Err(format!("URL '{raw}' has no host")),
    };
    let port = url.port_or_known_default().ok_or("URL has no port")?;
    let origin = Origin {
        scheme: url.scheme().to_owned(),
        host,
        port,
    };
    Ok((url, origin))
}

/// Parses a rule or `send-to` origin such as `https://api.example.com` or
/// `http://127.0.0.1:8080`.
pub fn parse_origin(s: &str) -> Result<Origin, String> {
    let (url, origin) = parse_url(s)?;
    if url.path() != "/" || url.query().is_some() {
        return Err(format!(
            "'{s}' has a path or query (expected an origin such as https://api.example.com)"
        ));
    }
    Ok(origin)
}

/// What a manifest says of a `send-to` entry that is no origin, given why
/// [`parse_origin`] refused it.
pub(crate) fn destination_problem(e: &str) -> String {
    if e.contains("(expected") {
        format!("invalid destination: {e}")
    } else {
        format!("invalid destination: {e} (expected a URL origin such as https://api.example.com)")
    }
}

/// Whether a secret's `send-to` list names `origin`.
pub fn send_to_allows(send_to: &[String], origin: &Origin) -> bool {
    send_to
        .iter()
        .filter_map(|d| parse_origin(d).ok())
        .any(|o| o == *origin)
}

/// The HTTP client settings every host-made request uses: rustls with
/// [`tls_config`], no automatic redirects, no proxy from the environment.
pub(crate) fn client_builder() -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    match tls_config() {
        Some(config) => builder.use_preconfigured_tls(config.as_ref().clone()),
        None => builder.use_rustls_tls(),
    }
}

/// The TLS client configuration of every host-made request: webpki's root
/// certificates, ring, ALPN `http/1.1`, and no session resumption.
///
/// Built once. A configuration built per request (what reqwest does unless
/// given one) carries its own session cache, sized for 256 servers, which
/// costs about 60 KiB: a thousand requests in flight held 60 MiB of empty
/// caches (the `mcp` bench's in-flight figure). Resumption stays off, as it
/// was when each request had its own cache: a cache shared by every task
/// would link one task's connections to another's.
///
/// The provider is named rather than taken from the process default, which
/// rustls cannot pick when more than one is compiled in. `None` only if
/// ring lacked the default protocol versions.
pub(crate) fn tls_config() -> Option<Arc<rustls::ClientConfig>> {
    static CONFIG: OnceLock<Option<Arc<rustls::ClientConfig>>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .ok()?
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.resumption = rustls::client::Resumption::disabled();
            // Both paths speak HTTP/1.1 (reqwest sets ALPN itself only on
            // a configuration it builds).
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(Arc::new(config))
        })
        .clone()
}

/// `url`'s origin alone (`https://hooks.example.com`), for whoever must not
/// see its path either: a webhook's token often rides there.
pub(crate) fn shown_origin(url: &str) -> String {
    reqwest::Url::parse(url).map_or_else(
        |_| "(an unparsable URL)".to_owned(),
        |u| u.origin().ascii_serialization(),
    )
}
