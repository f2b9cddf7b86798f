//! `oci://HOST[:PORT]/REPO(:TAG|@sha256:HEX)`: a component in an OCI
//! registry, parsed strictly so that what is fetched is what was written.
//!
//! The host is a lower-case DNS name, a dotted-quad IPv4 address or a
//! bracketed IPv6 address; the repository follows the OCI distribution
//! spec's grammar (lower-case path components joined by `.`, `_`, `__` or
//! `-`, so no `..`); a tag is `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`; a digest
//! is `sha256:` and 64 lower-case hex digits. Anything else — userinfo, a
//! query or fragment, control or non-ASCII characters, a missing tag — is
//! refused with the form that was expected.

use crate::identity::Identity;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// The longest reference accepted, in bytes.
pub const MAX_REFERENCE: usize = 512;

/// The form a reference takes, for error messages.
pub const EXPECTED: &str =
    "expected oci://HOST[:PORT]/REPOSITORY:TAG or oci://HOST[:PORT]/REPOSITORY@sha256:HEX";

/// A registry host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Name(String),
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

impl Host {
    /// Loopback by what the host *is*: 127.0.0.0/8, ::1 (and ::ffff:127.x),
    /// or the name `localhost` itself (not `localhost.example`, not
    /// `127.0.0.1.example`).
    pub fn is_loopback(&self) -> bool {
        match self {
            Host::Name(n) => n == "localhost",
            Host::V4(a) => a.is_loopback(),
            Host::V6(a) => a.is_loopback() || a.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::V4(a) => write!(f, "{a}"),
            Host::V6(a) => write!(f, "[{a}]"),
        }
    }
}

/// A tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Version {
    Tag(String),
    Digest(Identity),
}

/// A parsed `oci://` reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OciRef {
    pub host: Host,
    pub port: Option<u16>,
    pub repository: String,
    pub version: Version,
}

impl OciRef {
    /// `HOST[:PORT]`, as the registry is addressed.
    pub fn registry(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.to_string(),
        }
    }

    /// Plain HTTP only for a loopback registry; TLS for every other.
    pub fn scheme(&self) -> &'static str {
        if self.host.is_loopback() {
            "http"
        } else {
            "https"
        }
    }

    pub fn digest(&self) -> Option<&Identity> {
        match &self.version {
            Version::Digest(d) => Some(d),
            Version::Tag(_) => None,
        }
    }

    /// The same repository at `digest`.
    pub fn with_digest(&self, digest: Identity) -> OciRef {
        OciRef {
            version: Version::Digest(digest),
            ..self.clone()
        }
    }

    /// `HOST[:PORT]/REPOSITORY`: the repository as cosign's simple-signing
    /// payload names it (`critical.identity.docker-reference`), what
    /// `warden sign` writes and a registry signature must name.
    pub fn docker_reference(&self) -> String {
        format!("{}/{}", self.registry(), self.repository)
    }

    /// The manifest's or tag's path part: the tag or `sha256:…`.
    pub fn version_str(&self) -> String {
        match &self.version {
            Version::Tag(t) => t.clone(),
            Version::Digest(d) => d.to_string(),
        }
    }

    /// The reference as oci-client takes it.
    pub(crate) fn client_ref(&self) -> oci_client::Reference {
        match &self.version {
            Version::Tag(t) => {
                oci_client::Reference::with_tag(self.registry(), self.repository.clone(), t.clone())
            }
            Version::Digest(d) => oci_client::Reference::with_digest(
                self.registry(),
                self.repository.clone(),
                d.to_string(),
            ),
        }
    }
}

impl fmt::Display for OciRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "oci://{}/{}", self.registry(), self.repository)?;
        match &self.version {
            Version::Tag(t) => write!(f, ":{t}"),
            Version::Digest(d) => write!(f, "@{d}"),
        }
    }
}

/// A string from a manifest or a command line, fit to be shown: control
/// and invisible characters escaped, at most 120 bytes.
pub fn shown(s: &str) -> String {
    let cut = super::cut(s, 120);
    let more = if cut.len() < s.len() { "…" } else { "" };
    format!("{}{more}", crate::redact::escape_control(cut))
}

impl FromStr for OciRef {
    type Err = String;

    fn from_str(s: &str) -> Result<OciRef, String> {
        // A password in user information is not shown back.
        let text = without_userinfo(s);
        let bad = |what: &str| {
            format!(
                "invalid OCI reference '{}': {what} ({EXPECTED})",
                shown(&text)
            )
        };
        if s.len() > MAX_REFERENCE {
            return Err(bad(&format!("longer than {MAX_REFERENCE} bytes")));
        }
        if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(bad(&format!(
                "it holds {} (only printable ASCII is allowed)",
                c.escape_unicode()
            )));
        }
        let rest = s
            .strip_prefix("oci://")
            .ok_or_else(|| bad("it does not start with oci://"))?;
        if rest.contains(['?', '#']) {
            return Err(bad("a query or fragment is not allowed"));
        }
        let (authority, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("no repository after the host"))?;
        if authority.contains('@') {
            return Err(bad(
                "user information (user:password@) is not allowed; registry credentials come from WARDEN_REGISTRY, WARDEN_REGISTRY_USERNAME and WARDEN_REGISTRY_PASSWORD",
            ));
        }
        let (host, port) = parse_authority(authority).map_err(|e| bad(&e))?;
        let (repository, version) = match path.split_once('@') {
            Some((repo, digest)) => {
                let d = digest.parse::<Identity>().map_err(|_| {
                    bad("the digest must be sha256: followed by 64 lower-case hex digits")
                })?;
                (repo, Version::Digest(d))
            }
            None => {
                // The tag follows the last ':' after the last '/'.
                let last = path.rfind('/').map_or(0, |i| i + 1);
                match path[last..].find(':') {
                    Some(i) => {
                        let (repo, tag) = path.split_at(last + i);
                        let tag = &tag[1..];
                        check_tag(tag).map_err(|e| bad(&e))?;
                        (repo, Version::Tag(tag.to_owned()))
                    }
                    None => return Err(bad("no tag (:TAG) or digest (@sha256:HEX)")),
                }
            }
        };
        check_repository(repository).map_err(|e| bad(&e))?;
        Ok(OciRef {
            host,
            port,
            repository: repository.to_owned(),
            version,
        })
    }
}

/// `s` with any user information (`user:password@`) replaced by `…`.
///
/// The user information ends at the last `@` that is not a digest's
/// (`@sha256:HEX`, the last `@` when a long digest-like text follows it):
/// a password may itself hold `/` or `@`, so neither the first `@` nor the
/// first `/` tells where it ends. When unsure, more is hidden, not less.
fn without_userinfo(s: &str) -> String {
    let (scheme, rest) = match s.find("://") {
        Some(i) => s.split_at(i + 3),
        None => ("", s),
    };
    let (body, digest) = match rest.rfind('@') {
        Some(i) if digest_like(&rest[i + 1..]) => rest.split_at(i),
        _ => (rest, ""),
    };
    match body.rfind('@') {
        Some(i) => format!("{scheme}…@{}{digest}", &body[i + 1..]),
        None => s.to_owned(),
    }
}

/// Whether `t` looks like a digest (`ALGORITHM:ENCODED`, the encoded part
/// at least 32 characters long) rather than a host and port.
fn digest_like(t: &str) -> bool {
    let Some((algorithm, encoded)) = t.split_once(':') else {
        return false;
    };
    !algorithm.is_empty()
        && algorithm
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b))
        && encoded.len() >= 32
        && encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"=_-".contains(&b))
}

fn parse_authority(a: &str) -> Result<(Host, Option<u16>), String> {
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or("an IPv6 host must be written [ADDRESS]")?;
        let addr = v6
            .parse::<Ipv6Addr>()
            .map_err(|_| "the host is not an IPv6 address".to_owned())?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("expected :PORT after the host")?),
        };
        (Host::V6(addr), port)
    } else {
        let (host, port) = match a.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        };
        (parse_host(host)?, port)
    };
    let port = match port {
        None => None,
        Some(p) => {
            let n = (!p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse::<u16>().ok())
                .flatten()
                .filter(|n| *n > 0)
                .ok_or("the port must be a number from 1 to 65535")?;
            Some(n)
        }
    };
    Ok((host, port))
}

fn parse_host(h: &str) -> Result<Host, String> {
    if h.is_empty() {
        return Err("no host".into());
    }
    if h.len() > 253 {
        return Err("the host is longer than 253 bytes".into());
    }
    // All digits and dots: an IPv4 address in dotted-quad form, nothing
    // shorter or in another base (127.1, 0x7f.0.0.1).
    if h.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let addr = h
            .parse::<Ipv4Addr>()
            .map_err(|_| "the host is not a dotted-quad IPv4 address".to_owned())?;
        return Ok(Host::V4(addr));
    }
    for label in h.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(
                "the host must be a lower-case DNS name (letters, digits, '-', labels joined by '.'), an IPv4 address or [IPv6]".into(),
            );
        }
    }
    // A name that parses as an IP address in some other spelling is not
    // accepted as a name either.
    if h.parse::<IpAddr>().is_ok() {
        return Err("the host is not a dotted-quad IPv4 address".into());
    }
    Ok(Host::Name(h.to_owned()))
}

/// The distribution spec's repository grammar: path components of
/// `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`.
fn check_repository(r: &str) -> Result<(), String> {
    let expected = "the repository must be lower-case path components like team/tool (letters and digits joined by '.', '_', '__' or '-')";
    if r.is_empty() || r.len() > 255 {
        return Err(format!("{expected}, 1 to 255 bytes"));
    }
    for part in r.split('/') {
        let bytes = part.as_bytes();
        let mut i = 0;
        let mut prev_alnum = false;
        while i < bytes.len() {
            let b = bytes[i];
            if b.is_ascii_lowercase() || b.is_ascii_digit() {
                prev_alnum = true;
                i += 1;
                continue;
            }
            // A separator: one '.', one or two '_', or a run of '-',
            // between alphanumerics.
            let start = i;
            match b {
                b'.' => i += 1,
                b'_' => {
                    i += 1;
                    if bytes.get(i) == Some(&b'_') {
                        i += 1;
                    }
                }
                b'-' => {
                    while bytes.get(i) == Some(&b'-') {
                        i += 1;
                    }
                }
                _ => return Err(expected.into()),
            }
            let next_alnum = bytes
                .get(i)
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
            if !prev_alnum || !next_alnum || start == 0 {
                return Err(expected.into());
            }
            prev_alnum = false;
        }
        if !prev_alnum {
            return Err(expected.into());
        }
    }
    Ok(())
}

fn check_tag(t: &str) -> Result<(), String> {
    let ok = !t.is_empty()
        && t.len() <= 128
        && !t.starts_with(['.', '-'])
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err("the tag must be 1 to 128 of A-Z a-z 0-9 _ . - (not starting with . or -)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn accepts_tags_digests_ports_and_ipv6() {
        for (text, registry, repo, version, loopback) in [
            (
                "oci://ghcr.io/acme/tool:1.0",
                "ghcr.io",
                "acme/tool",
                "1.0",
                false,
            ),
            (
                "oci://127.0.0.1:5000/tools/echo:v1",
                "127.0.0.1:5000",
                "tools/echo",
                "v1",
                true,
            ),
            (
                "oci://localhost:5000/a__b-c.d:x",
                "localhost:5000",
                "a__b-c.d",
                "x",
                true,
            ),
            (
                "oci://[::1]:5000/echo:latest",
                "[::1]:5000",
                "echo",
                "latest",
                true,
            ),
            ("oci://127.9.9.9/echo:t", "127.9.9.9", "echo", "t", true),
            (
                &format!("oci://reg.example:443/a/b@{D}"),
                "reg.example:443",
                "a/b",
                D,
                false,
            ),
        ] {
            let r: OciRef = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(r.registry(), registry, "{text}");
            assert_eq!(r.repository, repo, "{text}");
            assert_eq!(r.version_str(), version, "{text}");
            assert_eq!(r.host.is_loopback(), loopback, "{text}");
            assert_eq!(r.scheme(), if loopback { "http" } else { "https" });
            assert_eq!(r.to_string(), text, "round trip");
        }
    }

    #[test]
    fn loopback_is_decided_by_the_parsed_host() {
        for text in [
            "oci://127.0.0.1.evil.com/x:1",
            "oci://localhost.evil/x:1",
            "oci://evil-localhost/x:1",
            "oci://10.0.0.1/x:1",
            "oci://[::2]/x:1",
            "oci://128.0.0.1/x:1",
        ] {
            let r: OciRef = text.parse().unwrap();
            assert!(!r.host.is_loopback(), "{text}");
            assert_eq!(r.scheme(), "https", "{text}");
        }
        let mapped: OciRef = "oci://[::ffff:127.0.0.1]/x:1".parse().unwrap();
        assert!(mapped.host.is_loopback());
    }

    #[test]
    fn refuses_hostile_and_malformed_references_with_the_expected_form() {
        for (text, why) in [
            ("ghcr.io/a:1", "does not start with oci://"),
            ("OCI://ghcr.io/a:1", "does not start with oci://"),
            ("oci://ghcr.io/a", "no tag (:TAG) or digest"),
            ("oci://ghcr.io", "no repository"),
            ("oci:///a:1", "no host"),
            ("oci://user:pw@ghcr.io/a:1", "user information"),
            ("oci://ghcr.io/a:1?x=1", "query or fragment"),
            ("oci://ghcr.io/a:1#f", "query or fragment"),
            ("oci://ghcr.io/../a:1", "the repository must be"),
            ("oci://ghcr.io/a/../b:1", "the repository must be"),
            ("oci://ghcr.io/a//b:1", "the repository must be"),
            ("oci://ghcr.io/A:1", "the repository must be"),
            ("oci://ghcr.io/-a:1", "the repository must be"),
            ("oci://ghcr.io/a.:1", "the repository must be"),
            ("oci://ghcr.io/a___b:1", "the repository must be"),
            ("oci://ghcr.io/a:.x", "the tag must be"),
            ("oci://ghcr.io/a:", "the tag must be"),
            ("oci://ghcr.io/a@sha256:abc", "the digest must be"),
            ("oci://ghcr.io/a@md5:abc", "the digest must be"),
            ("oci://GHCR.io/a:1", "lower-case DNS name"),
            ("oci://gh_cr.io/a:1", "lower-case DNS name"),
            ("oci://127.1/a:1", "dotted-quad"),
            ("oci://999.0.0.1/a:1", "dotted-quad"),
            ("oci://ghcr.io:0/a:1", "port"),
            ("oci://ghcr.io:99999/a:1", "port"),
            ("oci://ghcr.io:+80/a:1", "port"),
            ("oci://[::1/a:1", "IPv6"),
            ("oci://[zz]/a:1", "IPv6"),
            ("oci://ghcr.io/a:1\u{1b}[2J", "only printable ASCII"),
            ("oci://ghcr.io/a\u{202e}:1", "only printable ASCII"),
            ("oci://ghcr.io/a b:1", "only printable ASCII"),
            // A password holding '/' or '@': not shown either.
            ("oci://user:pa/ss@host/r:t", "the port must be"),
            ("oci://user:p@ss@host/r:t", "user information"),
            (
                "oci://user:pa/ss@host/r@sha256:0000000000000000000000000000000000000000000000000000000000000000",
                "the port must be",
            ),
        ] {
            let e = text.parse::<OciRef>().unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
            assert!(e.contains(EXPECTED), "{text:?}: {e}");
            assert!(!e.contains('\u{1b}') && !e.contains('\u{202e}'), "{e:?}");
            assert!(!e.contains("pw@"), "{e}");
            assert!(!e.contains("pa/ss") && !e.contains("ss@"), "{e}");
        }
        let e = "oci://user:pa/ss@host/r:t".parse::<OciRef>().unwrap_err();
        assert_eq!(
            e,
            format!(
                "invalid OCI reference 'oci://…@host/r:t': the port must be a number from 1 to 65535 ({EXPECTED})"
            )
        );
        let e = "oci://user:p@ss@host/r:t".parse::<OciRef>().unwrap_err();
        assert!(
            e.starts_with("invalid OCI reference 'oci://…@host/r:t': user information"),
            "{e}"
        );
        // A digest reference is shown whole.
        let digest = format!("oci://ghcr.io/a:b@{D}");
        let e = digest.parse::<OciRef>().unwrap_err();
        assert!(
            e.starts_with(&format!("invalid OCI reference '{digest}'")),
            "{e}"
        );
        let long = format!("oci://ghcr.io/{}:1", "a".repeat(600));
        let e = long.parse::<OciRef>().unwrap_err();
        assert!(e.contains("longer than 512 bytes"), "{e}");
        assert!(e.len() < 400, "the long reference is cut: {e}");
    }
}
