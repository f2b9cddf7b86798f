//! DNS-rebinding protection: the `Host` a request names and the `Origin` a
//! browser sends must be ones this server answers for. The rules are
//! rmcp's (its service checks again for the requests it serves); they are
//! decided here, once, before either path takes a request. And the one
//! bearer token a request may carry.

use http::{HeaderMap, StatusCode, Uri};

/// The `Bearer` token of a request, if any: none when it has several
/// `Authorization` headers (a proxy in front may have read another one
/// than this server would).
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let mut all = headers.get_all(http::header::AUTHORIZATION).iter();
    let v = all.next()?.to_str().ok()?;
    if all.next().is_some() {
        return None;
    }
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The hosts and origins a server accepts.
#[derive(Debug, Clone)]
pub(crate) struct Allowed {
    /// Host names (lower case, no brackets) with the port they must name,
    /// or any port.
    hosts: Vec<(String, Option<u16>)>,
    /// Browser origins: scheme, host and port (any port when `None`).
    origins: Vec<(String, String, Option<u16>)>,
}

/// Why a request is refused: its status and what it was expected to carry.
pub(crate) type Refusal = (StatusCode, &'static str);

impl Allowed {
    /// Accepts `hosts` (`name` or `name:port`) and `origins`
    /// (`scheme://host:port`). An entry that does not parse accepts nothing.
    pub(crate) fn new(hosts: &[String], origins: &[String]) -> Allowed {
        Allowed {
            hosts: hosts.iter().filter_map(|h| authority(h)).collect(),
            origins: origins.iter().filter_map(|o| origin(o)).collect(),
        }
    }

    /// Whether a request for `uri` with `headers` may be served.
    pub(crate) fn check(&self, uri: &Uri, headers: &HeaderMap) -> Result<(), Refusal> {
        let host = match headers.get(http::header::HOST) {
            Some(v) => v.to_str().ok().and_then(authority).ok_or((
                StatusCode::BAD_REQUEST,
                "bad Host header (expected host or host:port)",
            ))?,
            None => uri
                .authority()
                .map(|a| (normalize(a.host()), a.port_u16()))
                .ok_or((StatusCode::BAD_REQUEST, "a Host header is required"))?,
        };
        let host_ok = self
            .hosts
            .iter()
            .any(|(name, port)| *name == host.0 && port.is_none_or(|p| host.1 == Some(p)));
        if !host_ok {
            return Err((
                StatusCode::FORBIDDEN,
                "the Host header names a host this server does not answer for (DNS rebinding protection)",
            ));
        }
        let Some(value) = headers.get(http::header::ORIGIN) else {
            return Ok(());
        };
        let Some((scheme, host, port)) = value.to_str().ok().and_then(origin) else {
            return Err((
                StatusCode::FORBIDDEN,
                "bad Origin header (expected scheme://host:port)",
            ));
        };
        let port = port.or_else(|| default_port(&scheme));
        let origin_ok = self
            .origins
            .iter()
            .any(|(s, h, p)| *s == scheme && *h == host && p.is_none_or(|p| port == Some(p)));
        if origin_ok {
            Ok(())
        } else {
            Err((
                StatusCode::FORBIDDEN,
                "the Origin header names an origin this server does not serve (cross-origin protection)",
            ))
        }
    }
}

fn normalize(host: &str) -> String {
    host.trim_matches(['[', ']']).to_ascii_lowercase()
}

/// `host` or `host:port`.
fn authority(value: &str) -> Option<(String, Option<u16>)> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    match http::uri::Authority::try_from(value) {
        Ok(a) => Some((normalize(a.host()), a.port_u16())),
        Err(_) => None,
    }
}

/// `scheme://host[:port]`; `null` and anything else is none.
fn origin(value: &str) -> Option<(String, String, Option<u16>)> {
    let uri = Uri::try_from(value.trim()).ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let a = uri.authority()?;
    Some((scheme, normalize(a.host()), a.port_u16()))
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Allowed {
        let hosts: Vec<String> = [
            "localhost",
            "127.0.0.1",
            "[::1]",
            "127.0.0.1:8080",
            "proxy.example",
        ]
        .map(String::from)
        .to_vec();
        let origins = ["http://localhost:8080", "http://[::1]:8080"].map(String::from);
        Allowed::new(&hosts, &origins)
    }

    fn check(host: Option<&str>, origin: Option<&str>) -> Result<(), StatusCode> {
        let mut h = HeaderMap::new();
        if let Some(v) = host {
            h.insert(http::header::HOST, v.parse().unwrap());
        }
        if let Some(v) = origin {
            h.insert(http::header::ORIGIN, v.parse().unwrap());
        }
        allowed()
            .check(&Uri::from_static("/mcp"), &h)
            .map_err(|(s, _)| s)
    }

    #[test]
    fn loopback_and_listed_hosts_pass_with_any_port_unless_one_is_named() {
        for host in [
            "localhost",
            "LOCALHOST:9",
            "127.0.0.1:8080",
            "[::1]:8080",
            "proxy.example:443",
        ] {
            assert_eq!(check(Some(host), None), Ok(()), "{host}");
        }
    }

    #[test]
    fn foreign_or_malformed_hosts_are_refused() {
        assert_eq!(
            check(Some("evil.example"), None),
            Err(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            check(Some("localhost.evil.example"), None),
            Err(StatusCode::FORBIDDEN)
        );
        assert_eq!(check(Some("a b"), None), Err(StatusCode::BAD_REQUEST));
        assert_eq!(check(None, None), Err(StatusCode::BAD_REQUEST));
    }

    #[test]
    fn origins_must_match_scheme_host_and_port() {
        let ok = Some("localhost:8080");
        assert_eq!(check(ok, Some("http://localhost:8080")), Ok(()));
        assert_eq!(check(ok, Some("http://[::1]:8080")), Ok(()));
        for bad in [
            "http://evil.example",
            "http://localhost:8081",
            "http://localhost",
            "https://localhost:8080",
            "null",
            "garbage",
        ] {
            assert_eq!(check(ok, Some(bad)), Err(StatusCode::FORBIDDEN), "{bad}");
        }
    }
}
