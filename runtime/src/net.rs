//! URLs and HTTP clients as every host-made request sees them: egress
//! (`caps::http`), deploy webhooks and the webhook approver parse URLs and
//! build clients here, so one rule holds whichever of them sends.

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

/// Whether a secret's `send-to` list names `origin`.
pub fn send_to_allows(send_to: &[String], origin: &Origin) -> bool {
    send_to
        .iter()
        .filter_map(|d| parse_origin(d).ok())
        .any(|o| o == *origin)
}

/// The HTTP client settings every host-made request uses: rustls, no
/// automatic redirects, no proxy from the environment.
pub(crate) fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .use_rustls_tls()
}
