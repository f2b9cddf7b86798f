//! URL normalization, rule matching and address classification for egress.

use super::EgressRule;
pub use crate::net::{Origin, parse_origin, parse_url, send_to_allows};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::sync::Semaphore;
use unicode_normalization::UnicodeNormalization;
use url::{Host, Url};

pub const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// The rule for `method` on `url`: of the rules whose path prefix holds
/// it, the most specific that allows `method` (the first of equals); or
/// why none does. A narrower ceiling's rule within a grant that holds the
/// path but not `method` refuses it there (see [`EgressRule::narrower`]).
/// Where a grant holds narrower ceilings, the path is also taken as a
/// lenient server may read it ([`server_reading`]: `//admin/x`,
/// `/%61dmin/x` and `/admin;p/x` are `/admin/x` to some, `/admin` is the
/// root of `/admin/`): a method a narrower ceiling refuses there is
/// refused, and the approval, labels and addresses of the rule there are
/// added to the rule's (the stricter of each).
pub fn match_rule(
    rules: &[EgressRule],
    method: &str,
    url: &Url,
    origin: &Origin,
) -> Result<EgressRule, String> {
    if rules.is_empty() {
        return Err("this task has no egress grant".into());
    }
    let same_origin: Vec<&EgressRule> = rules.iter().filter(|r| r.origin == *origin).collect();
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
    let fenced = |fence: &EgressRule, how: &str| {
        format!(
            "{method} {path} on {origin} is not in the egress grant: the manifest's rule for {} \
             does not allow {method}{how}",
            fence.path_prefixes[0]
        )
    };
    let mut rule = match rule_for(&same_origin, method, path) {
        Ok(r) => r.clone(),
        Err(Some(fence)) => return Err(fenced(fence, "")),
        Err(None) => {
            return Err(format!(
                "{method} {path} on {origin} is not in the egress grant (methods or path prefix)"
            ));
        }
    };
    if !same_origin.iter().any(|r| r.narrower) {
        return Ok(rule);
    }
    let read = server_reading(path);
    let root = format!("{}/", read.trim_end_matches('/'));
    for read in [read, root].iter().filter(|r| *r != path) {
        match rule_for(&same_origin, method, read) {
            Ok(also) => {
                rule.approval = rule.approval.max(also.approval);
                for label in &also.labels {
                    if !rule.labels.contains(label) {
                        rule.labels.push(label.clone());
                    }
                }
                rule.addresses.retain(|a| also.addresses.contains(a));
            }
            Err(Some(fence)) => return Err(fenced(fence, " (as a server may read the path)")),
            // No rule holds it so read: the path as written decided.
            Err(None) => {}
        }
    }
    Ok(rule)
}

/// The rule for `method` at `path` among one origin's rules (see
/// [`match_rule`]); or, if none, the narrower ceiling's rule that refuses
/// it, if one does.
fn rule_for<'r>(
    rules: &[&'r EgressRule],
    method: &str,
    path: &str,
) -> Result<&'r EgressRule, Option<&'r EgressRule>> {
    let holding: Vec<(usize, &EgressRule)> = (rules.iter())
        .filter_map(|r| Some((r.longest_prefix_of(path)?, *r)))
        .collect();
    let mut lengths: Vec<usize> = holding.iter().map(|(len, _)| *len).collect();
    lengths.sort_unstable();
    lengths.dedup();
    // From the most specific (its labels and approval the manifest's for
    // this path): the first rule that allows `method`.
    for len in lengths.into_iter().rev() {
        let here = || {
            holding
                .iter()
                .filter(move |(l, _)| *l == len)
                .map(|(_, r)| *r)
        };
        if let Some(r) = here().find(|r| r.methods.iter().any(|m| m == method)) {
            return Ok(r);
        }
        if let Some(r) = here().find(|r| r.narrower) {
            return Err(Some(r));
        }
    }
    Err(None)
}

/// `path` as a lenient server may route it: percent-decoded (up to three
/// rounds, for servers that decode again), NFKC-normalized (a full-width
/// `ａ` or `／` is `a` or `/` to a server that normalizes), `\` as `/`
/// (IIS), each segment cut at `;` (Tomcat's path parameters), and runs of
/// `/` as one (nginx's `merge_slashes`). Dot segments are refused before
/// ([`encoded_dot_segment`]).
pub(crate) fn server_reading(path: &str) -> String {
    let mut bytes = path.as_bytes().to_vec();
    for _ in 0..3 {
        match decoded_once(&bytes) {
            Some(next) => bytes = next,
            None => break,
        }
    }
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if !text.is_ascii() {
        text = text.nfkc().collect();
    }
    let text = text.replace('\\', "/");
    let mut out = String::with_capacity(text.len());
    let mut last_empty = false;
    for segment in text.split('/') {
        let segment = segment.split(';').next().unwrap_or_default();
        last_empty = segment.is_empty();
        if !last_empty {
            out.push('/');
            out.push_str(segment);
        }
    }
    // `/admin/` and `/admin/;p` end in a segment that is empty once cut.
    if out.is_empty() || last_empty {
        out.push('/');
    }
    out
}

/// `bytes` percent-decoded once, if that changes them (a server that
/// decodes again reads the next round).
fn decoded_once(bytes: &[u8]) -> Option<Vec<u8>> {
    if !bytes.contains(&b'%') {
        return None;
    }
    let next: Vec<u8> = percent_encoding::percent_decode(bytes).collect();
    (next != bytes).then_some(next)
}

impl EgressRule {
    /// The length of the longest of this rule's path prefixes that
    /// `path` is under, if any: how specific the rule is for it.
    pub(crate) fn longest_prefix_of(&self, path: &str) -> Option<usize> {
        (self.path_prefixes.iter())
            .filter(|p| within(path, p))
            .map(String::len)
            .max()
    }
}

/// Whether `path` is under the path prefix `prefix`, segment by segment,
/// as Kubernetes matches an Ingress `Prefix` path: a prefix ending in `/`
/// holds what starts with it; any other holds itself and what starts
/// with it and `/` (`/v1` holds `/v1` and `/v1/x`, not `/v1-admin`).
pub fn within(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// A path a server may read as another: one with a segment that is `.` or
/// `..` once cut at `;` (Tomcat drops `;` parameters before it normalizes:
/// `/v1/..;/admin` is `/admin` to it), as written or percent-decoded (up
/// to three times, for servers that decode again), its segments split at
/// `/` and `\\` (`/v1/..%2Fadmin` is `/admin` to a server that decodes
/// before it routes); or one with an encoding some servers decode and
/// others do not (IIS's `%u002e`, the overlong UTF-8 `%c0%ae`). The URL
/// parser has already removed the dot segments it sees. The reason, or
/// `None`.
pub fn encoded_dot_segment(path: &str) -> Option<String> {
    let dotted = |p: &str| {
        p.split(['/', '\\'])
            .map(|s| s.split(';').next().unwrap_or_default())
            .any(|s| s == "." || s == "..")
    };
    if dotted(path) {
        return Some(
            "the path holds a dot segment with a ';' parameter (a server that drops \
             parameters may route the request outside the granted path prefix)"
                .into(),
        );
    }
    if odd_escape(path.as_bytes()) {
        return Some(
            "the path holds an encoding servers read differently (%u, or overlong UTF-8)".into(),
        );
    }
    // Decoded as bytes: a character whose bytes are encoded in different
    // rounds (`%EF%BC%258E`) is whole only once every round is done.
    let mut decoded = path.as_bytes().to_vec();
    for _ in 0..3 {
        match decoded_once(&decoded) {
            Some(next) => decoded = next,
            None => break,
        }
        if odd_escape(&decoded) {
            return Some(
                "the path holds an encoding servers read differently (%u, or overlong \
                 UTF-8), percent-encoded"
                    .into(),
            );
        }
        let text = String::from_utf8_lossy(&decoded);
        if dotted(&text) {
            return Some(
                "the path holds a dot segment in percent-encoding (a server that \
                 decodes it may route the request outside the granted path prefix)"
                    .into(),
            );
        }
        // A full-width dot or solidus (U+FF0E, U+FF0F), a one- or two-dot
        // leader (U+2024, U+2025): `.`, `/` or `..` to a server that
        // applies NFKC to what it decoded.
        if text.is_ascii() {
            continue;
        }
        let normal: String = text.nfkc().collect();
        if dotted(&normal) || odd_escape(normal.as_bytes()) {
            return Some(
                "the path holds a dot segment in a Unicode compatibility form (a \
                 full-width dot or solidus, which a server that normalizes reads as \
                 '.' or '/')"
                    .into(),
            );
        }
        // Full-width `％２ｅ` is `%2e` once normalized: decoded on from there.
        if normal != text {
            decoded = normal.into_bytes();
        }
    }
    // Encoded once more than is decoded here: a dot, a separator, a `%` or
    // a byte of a longer character still encoded after three rounds.
    let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
    let still = (0..decoded.len()).any(|i| {
        decoded[i] == b'%'
            && hex(decoded.get(i + 1))
                .zip(hex(decoded.get(i + 2)))
                .is_some_and(|(h, l)| matches!(h * 16 + l, 0x25 | 0x2e | 0x2f | 0x5c | 0x80..))
    });
    if decoded != path.as_bytes() && still {
        return Some(
            "the path is percent-encoded more than three times over a dot, a separator \
             or a character beyond ASCII"
                .into(),
        );
    }
    None
}

/// Whether `b` holds `%u` followed by four hex digits (IIS decodes it) or
/// an overlong UTF-8 sequence (`%c0%ae`, `%e0%80%ae`, `%f0%80%80%ae`), its
/// bytes escaped or, in a path decoded once already, raw: escapes some
/// servers decode to `.` or `/` and others refuse.
fn odd_escape(b: &[u8]) -> bool {
    let hex = |i: usize| b.get(i).and_then(|c| (*c as char).to_digit(16));
    // The byte at `i`, escaped or raw (not ASCII), and its length.
    let unit = |i: usize| -> Option<(u32, usize)> {
        match *b.get(i)? {
            b'%' => Some((hex(i + 1)? * 16 + hex(i + 2)?, 3)),
            c if c >= 0x80 => Some((u32::from(c), 1)),
            _ => None,
        }
    };
    (0..b.len()).any(|i| {
        let u = b[i] == b'%'
            && b.get(i + 1).is_some_and(|c| c.eq_ignore_ascii_case(&b'u'))
            && b.get(i + 2..i + 6)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
        let overlong = unit(i).is_some_and(|(first, n)| {
            let next = unit(i + n).map(|(c, _)| c);
            match first {
                0xc0 | 0xc1 => next.is_some_and(|n| (0x80..0xc0).contains(&n)),
                0xe0 => next.is_some_and(|n| (0x80..0xa0).contains(&n)),
                0xf0 => next.is_some_and(|n| (0x80..0x90).contains(&n)),
                _ => false,
            }
        });
        u || overlong
    })
}

/// A URL as runtime policy reads it (`resource.url`): each percent-escape
/// of an unreserved character (RFC 3986 §2.3: letters, digits, `-._~`)
/// decoded, and the hex digits of the others upper-cased (§6.2.2), so that
/// `/%61dmin` — the same path to any server — cannot pass a rule on
/// `/admin`. Case is left as sent: servers differ on it.
pub fn policy_form(url: &str) -> String {
    let b = url.as_bytes();
    let mut out = String::with_capacity(url.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if let (b'%', Some(&h), Some(&l)) = (b[i], b.get(i + 1), b.get(i + 2))
            && let (Some(h), Some(l)) = (hex(h), hex(l))
        {
            let c = (h * 16 + l) as u8;
            if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                out.push(c as char);
            } else {
                out.push_str(&format!("%{c:02X}"));
            }
            i += 3;
            continue;
        }
        // Up to the next escape: whole characters, the input being text.
        let next = b[i + 1..]
            .iter()
            .position(|&c| c == b'%')
            .map_or(b.len(), |n| i + 1 + n);
        out.push_str(&url[i..next]);
        i = next;
    }
    out
}

/// Addresses a tool may reach only when the manifest lists them.
pub fn is_special(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if o == [168, 63, 129, 16] {
                // Azure's platform endpoint (WireServer, the guest agent's
                // host plugin): public address space, a host's own service.
                Some("cloud metadata")
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
            } else if o[0] == 198 && (o[1] & 0xfe) == 18 {
                Some("benchmarking")
            } else if o[..3] == [192, 0, 0] {
                Some("protocol assignment")
            } else if o[0] >= 240 {
                Some("reserved")
            } else if matches!(o[..3], [192, 0, 2] | [198, 51, 100] | [203, 0, 113]) {
                Some("documentation")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_special(IpAddr::V4(v4));
            }
            // Addresses that carry an IPv4 address a gateway or a tunnel
            // reaches for them: NAT64 (64:ff9b::/96), 6to4 (2002::/16) and
            // the deprecated IPv4-compatible form (::a.b.c.d). They are
            // what the IPv4 address is.
            let seg = v6.segments();
            let embedded = |hi: u16, lo: u16| {
                let [a, b] = hi.to_be_bytes();
                let [c, d] = lo.to_be_bytes();
                std::net::Ipv4Addr::new(a, b, c, d)
            };
            let carried = match seg {
                [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(embedded(hi, lo)),
                [0x2002, hi, lo, ..] => Some(embedded(hi, lo)),
                [0, 0, 0, 0, 0, 0, hi, lo] if hi != 0 => Some(embedded(hi, lo)),
                _ => None,
            };
            if let Some(v4) = carried {
                return is_special(IpAddr::V4(v4));
            }
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
            } else if seg[0] & 0xffc0 == 0xfec0 {
                Some("site-local")
            } else if seg[..3] == [0x64, 0xff9b, 1] {
                Some("local-use NAT64")
            } else if seg[..2] == [0x2001, 0] {
                // Teredo: a tunnel to an IPv4 address it obfuscates.
                Some("Teredo tunnel")
            } else if seg[..4] == [0x100, 0, 0, 0] {
                Some("discard-only")
            } else if seg[..2] == [0x2001, 0xdb8] {
                Some("documentation")
            } else {
                None
            }
        }
    }
}

const DNS_TIMEOUT: Duration = Duration::from_secs(5);

/// Name lookups in flight at once, process-wide. A lookup is the system
/// resolver's, on a thread of tokio's blocking pool, and the thread is
/// held until the resolver gives up (resolv.conf's timeout × attempts ×
/// servers: 30 s with three servers), however soon its request stopped
/// waiting. Without a bound, a tool sending many requests at once to a
/// granted name whose DNS stalls would hold every thread of that pool
/// (512), and with them every blocking task of the process: compiling a
/// component, reading a file, asking the terminal.
const MAX_LOOKUPS: usize = 32;

static LOOKUPS: Lookups = Lookups {
    permits: Semaphore::const_new(MAX_LOOKUPS),
    most: MAX_LOOKUPS,
};

/// A bound on lookups in flight: a permit each, `most` in all.
struct Lookups {
    permits: Semaphore,
    most: usize,
}

/// The address to connect to: an IP literal (it matched a rule naming it),
/// or the first resolved address that is public or listed in the rule.
pub(super) async fn resolve(origin: &Origin, rule: &EgressRule) -> Result<SocketAddr, String> {
    let domain = match &origin.host {
        Host::Ipv4(a) => return Ok(SocketAddr::new(IpAddr::V4(*a), origin.port)),
        Host::Ipv6(a) => return Ok(SocketAddr::new(IpAddr::V6(*a), origin.port)),
        Host::Domain(d) => d,
    };
    let addrs = lookup(domain, origin.port, (&LOOKUPS, DNS_TIMEOUT), system_lookup).await?;
    let mut refused = None;
    for addr in addrs {
        match is_special(addr.ip()) {
            Some(kind) if !rule.addresses.contains(&addr.ip()) => {
                refused.get_or_insert(format!(
                    "{domain} resolves to {}, a {kind} address the manifest does not list",
                    addr.ip()
                ));
            }
            _ => return Ok(addr),
        }
    }
    Err(refused.unwrap_or_else(|| format!("{domain} has no addresses")))
}

/// The system resolver's addresses for `domain`.
fn system_lookup(domain: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    std::net::ToSocketAddrs::to_socket_addrs(&(domain, port)).map(Iterator::collect)
}

/// `domain`'s addresses by `resolve`, run on the blocking pool holding one
/// of `limit`'s permits until it returns (not only until this lookup
/// stops waiting for it), within `timeout` from asking for the permit.
async fn lookup(
    domain: &str,
    port: u16,
    (limit, timeout): (&'static Lookups, Duration),
    resolve: fn(&str, u16) -> std::io::Result<Vec<SocketAddr>>,
) -> Result<Vec<SocketAddr>, String> {
    let mut started = false;
    let asked = async {
        let permit = limit.permits.acquire().await.ok()?;
        started = true;
        let name = domain.to_owned();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            resolve(&name, port)
        })
        .await
        .ok()
    };
    match tokio::time::timeout(timeout, asked).await {
        Ok(Some(Ok(addrs))) => Ok(addrs),
        Ok(Some(Err(e))) => Err(format!("cannot resolve {domain}: {e}")),
        Ok(None) => Err(format!(
            "cannot resolve {domain}: the lookup did not finish"
        )),
        Err(_) if !started => Err(format!(
            "resolving {domain} timed out waiting its turn: {} lookups, the most at once, were in flight and none finished",
            limit.most
        )),
        Err(_) => Err(format!("resolving {domain} timed out")),
    }
}

#[cfg(test)]
#[path = "check_tests.rs"]
mod tests;
