//! Method and path overrides: a header or a parameter with which a
//! request asks its server to act as another method, or on another path
//! ([`paths`]). Frameworks and gateways honour
//! `X-HTTP-Method-Override` and its kin; Rails, Laravel and Symfony take
//! a `_method` field of a form (or of a JSON body, Laravel) or of the
//! query. The egress check asks of each the method it names, so a grant
//! of `POST` is no `DELETE` on a server that reads one.
//!
//! Found where such a server would look, more widely than any one of them
//! does: on any method (they read it on `POST` only), the parameter's name
//! in any case and with PHP's `.`, ` ` or `[` for its `_`, a body without a
//! `Content-Type` read as a form (Rack does), every field of that name
//! (servers differ on which one wins).

use url::Url;

/// Headers that ask for another method, lower-case; compared in any case
/// and with `_` as `-` (CGI-style servers read both as one).
const HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Headers that ask for another path: IIS's URL Rewrite module, Symfony
/// (before CVE-2018-14773), Zend Framework and the applications on them
/// route a request by these rather than by its request line.
const PATH_HEADERS: [&str; 2] = ["x-original-url", "x-rewrite-url"];

/// Whether `name` is one of `names` (lower-case), in any case and with
/// `_` as `-`.
fn named(names: &[&str], name: &str) -> bool {
    let same = |o: &str| {
        (o.len() == name.len())
            && (o.bytes().zip(name.bytes()))
                .all(|(o, n)| o == n.to_ascii_lowercase() || (o == b'-' && n == b'_'))
    };
    names.iter().any(|o| same(o))
}

/// Whether a header named `name` is a method override.
pub(crate) fn is_header(name: &str) -> bool {
    named(&HEADERS, name)
}

/// Whether a header named `name` is a method or a path override (what an
/// approver is shown first).
pub(crate) fn is_any_header(name: &str) -> bool {
    is_header(name) || named(&PATH_HEADERS, name)
}

/// The paths a request's path-override headers ask for, each as a URL on
/// `url`'s origin with the header's name for messages. `Err` when one
/// names no path on that origin (expected `/` and a path, as a request
/// line has it), one a URL parser reads as another path (dot segments,
/// `%2e`, a fragment: the header goes as it was written, and a server may
/// read it as written), or when there are more than [`MAX_OVERRIDES`]. A
/// message quotes no path (lengths only).
pub(crate) fn paths(url: &Url, headers: &[(&str, &[u8])]) -> Result<Vec<(String, Url)>, String> {
    let mut found: Vec<(String, Url)> = Vec::new();
    for (name, value) in (headers.iter()).filter(|(name, _)| named(&PATH_HEADERS, name)) {
        let by = format!("header '{name}'");
        let written = std::str::from_utf8(value.trim_ascii())
            .ok()
            .filter(|v| v.starts_with('/') && !v.starts_with("//"));
        let asked = written
            .and_then(|v| url.join(v).ok())
            .filter(|u| u.origin() == url.origin());
        let (Some(written), Some(asked)) = (written, asked) else {
            return Err(format!(
                "{by} names no path on the request's origin (expected one starting with a \
                 single '/', as a request line has it)"
            ));
        };
        let read = &asked[url::Position::BeforePath..url::Position::AfterQuery];
        if read != written {
            // Its lengths only: the path as read (a tab dropped from
            // `/48<TAB>21`) could be a guess at a value held by reference,
            // and its marker would confirm it.
            return Err(format!(
                "{by} names a path a URL parser reads otherwise ({} bytes written, {} read): \
                 expected it as a server routes it, without dot segments, a fragment, \
                 whitespace or characters left to encode",
                written.len(),
                read.len()
            ));
        }
        if !found.iter().any(|(_, u)| *u == asked) {
            if found.len() >= MAX_OVERRIDES {
                return Err(format!(
                    "the request holds more than {MAX_OVERRIDES} different path overrides"
                ));
            }
            found.push((by, asked));
        }
    }
    Ok(found)
}

/// Checks what path overrides ask for against the grant.
pub(crate) struct Route<'a> {
    pub(crate) rules: &'a [super::EgressRule],
    pub(crate) origin: &'a super::check::Origin,
    pub(crate) redactor: &'a crate::redact::Redactor,
}

impl Route<'_> {
    /// Each of `paths` checked as the request's own path by `method`, and
    /// onto `routed` what the runtime policy is then asked (the method,
    /// the redacted URL, the labels of the rule that allows it), with
    /// `addresses` kept to those each such rule allows too: whether a rule
    /// requires approval, or why one refuses.
    pub(crate) fn check(
        &self,
        method: &str,
        paths: &[(String, Url)],
        routed: &mut Vec<(String, String, Vec<String>)>,
        addresses: &mut Vec<std::net::IpAddr>,
    ) -> Result<bool, String> {
        let mut approval = false;
        for (by, path) in paths {
            if let Some(reason) = super::check::encoded_dot_segment(path.path()) {
                return Err(format!("{by}: {reason}"));
            }
            match super::check::match_rule(self.rules, method, path, self.origin) {
                Ok(r) => {
                    approval |= r.approval.applies(method);
                    addresses.retain(|a| r.addresses.contains(a));
                    let url = super::check::policy_form(&self.redactor.redact(path.as_str()));
                    routed.push((method.to_owned(), url, r.labels.clone()));
                }
                Err(reason) => return Err(format!("{by} asks for {}: {reason}", path.path())),
            }
        }
        Ok(approval)
    }
}

/// One override a request carries: where, for messages (the tool's own
/// header name, which the check has seen is a token, or a fixed phrase),
/// and the method it names as sent.
pub(crate) struct Override<'r> {
    pub(crate) by: String,
    pub(crate) value: std::borrow::Cow<'r, [u8]>,
}

/// Every override in a request: its headers (the `wasi:http` trailers
/// among them) on any method; on a `POST` (the only method Rails, Laravel,
/// Symfony and Express read `_method` on), its query and its body as a
/// form, JSON or multipart form, its `Content-Type` read as loosely as
/// those servers read it. Each override once (a body of a million equal
/// fields is one), at most [`MAX_OVERRIDES`]. `Err` with the reason when
/// the body cannot be read as such a server reads it: several different
/// `Content-Type`s, a `Content-Encoding`, a charset not ASCII-compatible,
/// UTF-16, JSON that does not parse but names a method field.
pub(crate) fn find<'r>(
    method: &str,
    url: &Url,
    headers: &[(&'r str, &'r [u8])],
    body: Option<&'r [u8]>,
) -> Result<Vec<Override<'r>>, String> {
    let mut found = Vec::new();
    for (name, value) in headers.iter().filter(|(name, _)| is_header(name)) {
        let by = format!("header '{name}'");
        add(
            &mut found,
            Override {
                by,
                value: short(value).into(),
            },
        )?;
    }
    if method == "POST" {
        fields(url, headers, body, &mut found)?;
    }
    Ok(found)
}

/// Most different overrides one request may hold.
pub(crate) const MAX_OVERRIDES: usize = 32;

/// The `_method` fields of a `POST`'s query and body, into `found`.
fn fields<'r>(
    url: &Url,
    headers: &[(&'r str, &'r [u8])],
    body: Option<&'r [u8]>,
    found: &mut Vec<Override<'r>>,
) -> Result<(), String> {
    let field = |by: &str, value: &[u8]| Override {
        by: format!("the {by}'s '_method'"),
        value: short(value).to_vec().into(),
    };
    if let Some(query) = url.query() {
        let params = url::form_urlencoded::parse(query.as_bytes());
        for (_, value) in params.filter(|(k, _)| is_param(k)) {
            add(found, field("query", value.as_bytes()))?;
        }
    }
    let Some(body) = body.filter(|b| !b.is_empty()) else {
        return Ok(());
    };
    let all: Vec<String> = headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .map(|(_, value)| String::from_utf8_lossy(value).trim().to_owned())
        .collect();
    let mut distinct: Vec<String> = all.iter().map(|t| t.to_ascii_lowercase()).collect();
    distinct.sort();
    distinct.dedup();
    // Servers differ on which of several counts: one, or the same again.
    if distinct.len() > 1 {
        return Err(format!(
            "the request has {} different Content-Type headers (expected one)",
            distinct.len()
        ));
    }
    let content_type = all.first().filter(|t| !t.is_empty()).map(String::as_str);
    // The media type ends at `;`, `,` or a space, as Rack and PHP read it;
    // none (or an empty one) is a form, as Rack reads a body without one.
    let media = content_type.map(|t| {
        let end = t.find([';', ',', ' ', '\t']).unwrap_or(t.len());
        t[..end].to_ascii_lowercase()
    });
    let media = media.as_deref();
    let multipart = media.is_some_and(|m| m.starts_with("multipart/"));
    // Rack reads a multipart body without a boundary it can use as a form.
    let form = multipart || matches!(media, None | Some("application/x-www-form-urlencoded"));
    // Laravel reads a body as JSON when its Content-Type holds `/json` or
    // `+json` anywhere, parameters included.
    let json = content_type.is_some_and(|t| {
        let t = t.to_ascii_lowercase();
        t.contains("/json") || t.contains("+json")
    });
    if !(form || json) {
        return Ok(());
    }
    let parsed = "a body a server parses for fields (a form, JSON, a multipart form)";
    let encoded = headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("content-encoding")
            && !String::from_utf8_lossy(value)
                .trim()
                .eq_ignore_ascii_case("identity")
    });
    if encoded {
        return Err(format!(
            "{parsed} with a Content-Encoding cannot be read for a '_method' override (send it unencoded)"
        ));
    }
    let mut charsets = all.iter().flat_map(|t| parameters(t, "charset"));
    // Named by the family it starts with, never by the tool's own spelling
    // (what follows the family could be a secret's value, cut unredacted).
    if let Some(family) = charsets.find_map(|c| {
        let c = c.to_ascii_lowercase();
        NOT_ASCII.iter().find(|p| c.starts_with(*p))
    }) {
        return Err(format!(
            "{parsed} in a charset that is not ASCII or a superset of it ('{family}…') cannot be read for a '_method' override"
        ));
    }
    if json && (body.starts_with(&[0xfe, 0xff]) || body.starts_with(&[0xff, 0xfe])) {
        return Err(format!(
            "{parsed} in UTF-16 cannot be read for a '_method' override"
        ));
    }
    let body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
    if form {
        let params = url::form_urlencoded::parse(body);
        for (_, value) in params.filter(|(k, _)| is_param(k)) {
            add(found, field("form", value.as_bytes()))?;
        }
    }
    if json {
        for value in json_fields(body)? {
            add(found, field("JSON body", value.as_bytes()))?;
        }
    }
    if multipart {
        // Rack takes the last `boundary=`, PHP the first: each is read.
        let mut boundaries: Vec<&str> =
            all.iter().flat_map(|t| parameters(t, "boundary")).collect();
        boundaries.sort_unstable();
        boundaries.dedup();
        if boundaries.len() > MAX_BOUNDARIES {
            return Err(format!(
                "the multipart Content-Type names more than {MAX_BOUNDARIES} different boundaries"
            ));
        }
        for boundary in boundaries {
            for value in multipart_fields(body, boundary) {
                add(found, field("multipart form", value))?;
            }
        }
    }
    Ok(())
}

/// Most different boundaries a multipart `Content-Type` may name (Rack
/// reads the last, PHP the first; each is read here).
const MAX_BOUNDARIES: usize = 4;

/// `value` without the whitespace around it, and no longer than 16 bytes:
/// enough to tell a method name (7 bytes at most) from anything else, and
/// a value of megabytes is not copied.
fn short(value: &[u8]) -> &[u8] {
    let value = value.trim_ascii();
    &value[..value.len().min(16)]
}

/// Adds `o` to `found` unless it is there; refused past [`MAX_OVERRIDES`],
/// as they come (a body of a million different fields is not collected).
fn add<'r>(found: &mut Vec<Override<'r>>, o: Override<'r>) -> Result<(), String> {
    if found.iter().any(|f| f.by == o.by && f.value == o.value) {
        return Ok(());
    }
    if found.len() >= MAX_OVERRIDES {
        return Err(format!(
            "the request holds more than {MAX_OVERRIDES} different method overrides"
        ));
    }
    found.push(o);
    Ok(())
}

/// Charsets (by prefix) in which a field name does not read as in ASCII:
/// UTF-16 and UTF-32, UCS, UTF-7, EBCDIC. A body naming one is refused.
const NOT_ASCII: [&str; 14] = [
    "utf-16", "utf16", "utf-32", "utf32", "ucs", "utf-7", "utf7", "ibm", "ebcdic", "cp037",
    "cp273", "cp500", "cp875", "cp1026",
];

/// Every value of the parameter `name` anywhere in a header's value (Rack
/// and PHP find `boundary=` anywhere, in any case, spaces around `=`):
/// unquoted, up to `;`, `,` or a space; quoted, up to its closing quote
/// and also up to a `;` in it (Rack stops there).
fn parameters<'t>(value: &'t str, name: &str) -> Vec<&'t str> {
    let lower = value.to_ascii_lowercase();
    let mut out = Vec::new();
    for (at, _) in lower.match_indices(name) {
        let rest = value[at + name.len()..].trim_start();
        let Some(rest) = rest.strip_prefix('=') else {
            continue;
        };
        let rest = rest.trim_start();
        match rest.strip_prefix('"') {
            Some(quoted) => {
                let whole = quoted.split('"').next().unwrap_or_default();
                out.push(whole);
                out.push(whole.split(';').next().unwrap_or_default());
            }
            None => out.push(rest.split([';', ',', ' ', '\t']).next().unwrap_or_default()),
        }
    }
    out.retain(|v| !v.is_empty());
    out.dedup();
    out
}

/// Whether a parameter named `name` is `_method`, as a server may read it:
/// in any case, after leading spaces (PHP drops them, and Rack splits
/// fields at `& *`) and up to a NUL (PHP stops there), with `.`, ` ` or
/// `[` for `_` (PHP makes them `_`).
fn is_param(name: &str) -> bool {
    let name = name.trim_start_matches(' ');
    let name = name.split('\0').next().unwrap_or_default().as_bytes();
    name.len() == 7
        && matches!(name[0], b'_' | b'.' | b' ' | b'[')
        && name[1..].eq_ignore_ascii_case(b"method")
}

/// The values of a JSON object's top-level `_method` members (a string,
/// or any other value as its JSON text, which names no method). None when
/// the body is not a JSON object: a server that cannot parse it reads no
/// field either. Nesting costs no recursion (serde_json skips what it
/// ignores without it). `Err` when it does not parse here but names a
/// method field, which a more lenient parser may read.
fn json_fields(body: &[u8]) -> Result<Vec<String>, String> {
    use serde::de::{Deserializer as _, IgnoredAny, MapAccess, Visitor};
    struct Fields;
    impl<'de> Visitor<'de> for Fields {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
            let mut found = Vec::new();
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if is_param(&key) {
                    // Raw, so that a number no f64 holds (`1e999`, which
                    // PHP reads as INF) does not fail the whole body.
                    let raw: Box<serde_json::value::RawValue> = map.next_value()?;
                    let text = serde_json::from_str::<String>(raw.get());
                    found.push(text.unwrap_or_else(|_| raw.get().to_owned()));
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    match de.deserialize_map(Fields) {
        Ok(found) => Ok(found),
        // A parser that takes what serde_json refuses (a lone surrogate in
        // a key: JavaScript's) may find a field here.
        Err(e) if e.classify() != serde_json::error::Category::Data && mentions_method(body) => {
            Err(
                "the JSON body does not parse here but names a method field, so whether it \
                 asks for another method by '_method' cannot be read"
                    .into(),
            )
        }
        // Valid JSON but not an object (an array): no field a server reads.
        Err(_) => Ok(Vec::new()),
    }
}

/// Whether `text` holds `method` after a `_`, `.`, `[` or space, in any
/// case: a field a server may read as `_method`, however it is spelled
/// around it.
fn mentions_method(text: &[u8]) -> bool {
    text.windows(7).any(|w| {
        matches!(w[0], b'_' | b'.' | b' ' | b'[') && w[1..].eq_ignore_ascii_case(b"method")
    })
}

/// The contents of each part of a multipart form named `_method` in any
/// spelling [`is_param`] takes (`name="_method"`, `name=_method`,
/// `name*=utf-8''_method`), without the line break before the next
/// boundary.
fn multipart_fields<'b>(body: &'b [u8], boundary: &str) -> Vec<&'b [u8]> {
    if boundary.is_empty() {
        return Vec::new();
    }
    let delimiter = format!("--{boundary}");
    let mut found = Vec::new();
    for part in split(body, delimiter.as_bytes()).skip(1) {
        // The rest of the boundary's line (`--` at the end, padding).
        let part = &part[part
            .iter()
            .position(|&b| b == b'\n')
            .map_or(part.len(), |n| n + 1)..];
        // Where the headers end, as servers differ: at the first CRLF CRLF
        // (Rack), or at the first empty line of lines ended by LF or CRLF
        // (PHP); each is read.
        let rack = find_bytes(part, b"\r\n\r\n").map(|at| (at, at + 4));
        for (end, start) in [rack, line_end(part)].into_iter().flatten() {
            let (head, contents) = (&part[..end], &part[start..]);
            let contents = contents.strip_suffix(b"\n").unwrap_or(contents);
            let contents = contents.strip_suffix(b"\r").unwrap_or(contents);
            if part_names(head).iter().any(|name| names_param(name)) {
                found.push(short(contents));
            }
        }
    }
    found
}

/// The end of a part's headers read line by line, each line ended by LF
/// with an optional CR before it (PHP): where the first empty line starts,
/// and where what follows it does.
fn line_end(part: &[u8]) -> Option<(usize, usize)> {
    let mut at = 0;
    while let Some(n) = part[at..].iter().position(|&b| b == b'\n') {
        let line = &part[at..at + n];
        if line.is_empty() || line == b"\r" {
            return Some((at, at + n + 1));
        }
        at += n + 1;
    }
    None
}

/// The names a part's headers may give it, on any of their lines: each
/// value of a `name` or `name*` parameter wherever it stands (not part of
/// another word: `filename` is not one), backslash escapes undone, a
/// `name*` without its charset and language; and a `Content-ID` (Rack
/// names a part by it when it has no name).
fn part_names(head: &[u8]) -> Vec<String> {
    let head = String::from_utf8_lossy(head).replace('\\', "");
    let lower = head.to_ascii_lowercase();
    let mut names = Vec::new();
    for (at, _) in lower.match_indices("name") {
        if lower[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        {
            continue;
        }
        let rest = head[at + 4..].strip_prefix('*').unwrap_or(&head[at + 4..]);
        let Some(value) = rest.trim_start().strip_prefix('=') else {
            continue;
        };
        let value = value.trim_start();
        let value = value.rsplit_once("''").map_or(value, |(_, v)| v);
        names.push(value.trim_start_matches(['"', '\'']).to_owned());
    }
    names.extend(head.split(['\r', '\n']).filter_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-id")
            .then(|| v.trim().trim_matches(['<', '>']).to_owned())
    }));
    names
}

/// Whether a part's name (as [`part_names`] reads it, up to the end of its
/// header) starts with `_method` as a whole word: `_method`, `_method"x`
/// (what servers read as `_method`), `_method x`; not `_methods`.
fn names_param(name: &str) -> bool {
    let end = name
        .char_indices()
        .find(|&(i, c)| i > 0 && !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(name.len(), |(i, _)| i);
    is_param(&name[..end])
}

/// `haystack` cut at each `needle`.
fn split<'h, 'n>(
    haystack: &'h [u8],
    needle: &'n [u8],
) -> impl Iterator<Item = &'h [u8]> + use<'h, 'n> {
    let mut rest = Some(haystack);
    std::iter::from_fn(move || {
        let h = rest?;
        match find_bytes(h, needle) {
            Some(at) => {
                rest = Some(&h[at + needle.len()..]);
                Some(&h[..at])
            }
            None => {
                rest = None;
                Some(h)
            }
        }
    })
}

fn find_bytes(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

#[cfg(test)]
#[path = "overrides_tests.rs"]
mod tests;
