//! URL normalization, rule matching and address classification for egress.

use super::EgressRule;
pub use crate::net::{Origin, parse_origin, parse_url, send_to_allows};
use std::net::IpAddr;
use url::{Host, Url};

pub const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// The first rule allowing `method` on `url`, or why none does.
pub fn match_rule<'r>(
    rules: &'r [EgressRule],
    method: &str,
    url: &Url,
    origin: &Origin,
) -> Result<&'r EgressRule, String> {
    if rules.is_empty() {
        return Err("this task has no egress grant".into());
    }
    let same_origin: Vec<_> = rules.iter().filter(|r| r.origin == *origin).collect();
    if same_origin.is_empty() {
        let what = match origin.host {
            Host::Domain(_) => "host",
            _ => "IP address",
        };
        return Err(format!(
            "{what} {} (port {}, {}) is not in the egress grant",
            origin.host, origin.port, origin.scheme
        ));
    }
    let path = url.path();
    let allowed = same_origin.iter().find(|r| {
        r.methods.iter().any(|m| m == method)
            && r.path_prefixes.iter().any(|p| path.starts_with(p.as_str()))
    });
    allowed.copied().ok_or_else(|| {
        format!("{method} {path} on {origin} is not in the egress grant (methods or path prefix)")
    })
}

/// Addresses a tool may reach only when the manifest lists them.
pub fn is_special(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_private() {
                Some("private")
            } else if v4.is_link_local() {
                Some(if o == [169, 254, 169, 254] {
                    "cloud metadata"
                } else {
                    "link-local"
                })
            } else if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() || o[0] == 0 {
                Some("non-routable")
            } else if o[0] == 100 && (64..128).contains(&o[1]) {
                Some("shared (CGNAT)")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_special(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() || v6.is_multicast() {
                Some("non-routable")
            } else if seg == [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254] {
                // AWS's IPv6 instance metadata endpoint, fd00:ec2::254: inside
                // fc00::/7, so it is checked before unique local addresses.
                Some("cloud metadata")
            } else if seg[0] & 0xfe00 == 0xfc00 {
                Some("private (unique local)")
            } else if seg[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_hosts_and_refuses_userinfo_and_nul() {
        let (_, o) = parse_url("HTTP://API.Example.COM.:443/x").unwrap();
        assert_eq!(o.to_string(), "http://api.example.com:443");
        let (_, o) = parse_url("http://0x7f.1/").unwrap();
        assert_eq!(o.host, Host::<String>::Ipv4("127.0.0.1".parse().unwrap()));
        let (_, o) = parse_url("http://2130706433/").unwrap();
        assert_eq!(o.host, Host::<String>::Ipv4("127.0.0.1".parse().unwrap()));
        let (_, o) = parse_url("http://[::ffff:127.0.0.1]/").unwrap();
        assert!(matches!(o.host, Host::Ipv6(_)));
        let (_, o) = parse_url("https://bücher.example/").unwrap();
        assert_eq!(o.host, Host::Domain("xn--bcher-kva.example".to_owned()));
        assert!(
            parse_url("http://u:p@api.example.com/")
                .unwrap_err()
                .contains("userinfo")
        );
        assert!(
            parse_url("http://api.example.com:80@evil.example/")
                .unwrap_err()
                .contains("userinfo")
        );
        assert!(
            parse_url("http://api.example.com\0.evil/")
                .unwrap_err()
                .contains("NUL")
        );
        assert!(
            parse_url("file:///etc/passwd")
                .unwrap_err()
                .contains("scheme 'file'")
        );
        assert!(
            parse_url("/relative")
                .unwrap_err()
                .contains("expected an absolute")
        );
    }

    #[test]
    fn classifies_special_addresses() {
        for (ip, want) in [
            ("127.0.0.1", Some("loopback")),
            ("10.1.2.3", Some("private")),
            ("192.168.0.1", Some("private")),
            ("169.254.169.254", Some("cloud metadata")),
            ("100.64.0.1", Some("shared (CGNAT)")),
            ("0.0.0.0", Some("non-routable")),
            ("::1", Some("loopback")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("fd00::1", Some("private (unique local)")),
            ("fd00:ec2::254", Some("cloud metadata")),
            ("fd00:ec2::253", Some("private (unique local)")),
            ("::ffff:169.254.169.254", Some("cloud metadata")),
            ("fe80::1", Some("link-local")),
            ("93.184.216.34", None),
            ("2606:4700::1111", None),
        ] {
            assert_eq!(is_special(ip.parse().unwrap()), want, "{ip}");
        }
    }
}
