//! Method overrides: a header or a parameter with which a request asks its
//! server to act as another method. Frameworks and gateways honour
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

/// Whether a header named `name` is a method override.
pub(crate) fn is_header(name: &str) -> bool {
    let same = |o: &str| {
        (o.len() == name.len())
            && (o.bytes().zip(name.bytes()))
                .all(|(o, n)| o == n.to_ascii_lowercase() || (o == b'-' && n == b'_'))
    };
    HEADERS.iter().any(|o| same(o))
}

/// One override a request carries: where, for messages (the tool's own
/// header name, which the check has seen is a token, or a fixed phrase),
/// and the method it names as sent.
pub(crate) struct Override<'r> {
    pub(crate) by: String,
    pub(crate) value: std::borrow::Cow<'r, [u8]>,
}

/// Every override in a request: its headers (the `wasi:http` trailers
/// among them), its query, and its body as a form, JSON or multipart form,
/// its `Content-Type` read as loosely as the servers that honour `_method`
/// read it. `Err` with the reason when the body cannot be read as such a
/// server reads it: several different `Content-Type`s (servers differ on
/// which counts), a `Content-Encoding`, a charset other than UTF-8 or
/// ASCII, UTF-16.
pub(crate) fn find<'r>(
    url: &Url,
    headers: &[(&'r str, &'r [u8])],
    body: Option<&'r [u8]>,
) -> Result<Vec<Override<'r>>, String> {
    let mut found: Vec<Override<'r>> = headers
        .iter()
        .filter(|(name, _)| is_header(name))
        .map(|(name, value)| Override {
            by: format!("header '{name}'"),
            value: (*value).into(),
        })
        .collect();
    let field = |by: &str, value: Vec<u8>| Override {
        by: format!("the {by}'s '_method'"),
        value: value.into(),
    };
    if let Some(query) = url.query() {
        let params = url::form_urlencoded::parse(query.as_bytes());
        for (_, value) in params.filter(|(k, _)| is_param(k)) {
            found.push(field("query", value.into_owned().into_bytes()));
        }
    }
    let Some(body) = body.filter(|b| !b.is_empty()) else {
        return Ok(found);
    };
    let mut types: Vec<String> = headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .map(|(_, value)| String::from_utf8_lossy(value).trim().to_owned())
        .collect();
    types.dedup();
    // Servers differ on which of several counts: one, or the same again.
    if types.len() > 1 {
        return Err(format!(
            "the request has {} different Content-Type headers (expected one)",
            types.len()
        ));
    }
    let content_type = types.pop().filter(|t| !t.is_empty());
    // The media type ends at `;`, `,` or a space, as Rack and PHP read it;
    // none (or an empty one) is a form, as Rack reads a body without one.
    let media = content_type.as_deref().map(|t| {
        let end = t.find([';', ',', ' ', '\t']).unwrap_or(t.len());
        t[..end].to_ascii_lowercase()
    });
    let media = media.as_deref();
    let form = matches!(media, None | Some("application/x-www-form-urlencoded"));
    // Laravel reads a body as JSON when its Content-Type holds `/json` or
    // `+json` anywhere, parameters included.
    let json = content_type
        .as_deref()
        .is_some_and(|t| t.to_ascii_lowercase().contains("json"));
    let multipart = media.is_some_and(|m| m.starts_with("multipart/"));
    if !(form || json || multipart) {
        return Ok(found);
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
    if let Some(charset) = content_type
        .as_deref()
        .and_then(|t| parameter(t, "charset"))
        && !ASCII_CHARSETS.contains(&charset.to_ascii_lowercase().as_str())
    {
        return Err(format!(
            "{parsed} in a charset other than UTF-8 or ASCII cannot be read for a '_method' override"
        ));
    }
    if body.starts_with(&[0xfe, 0xff]) || body.starts_with(&[0xff, 0xfe]) {
        return Err(format!(
            "{parsed} in UTF-16 cannot be read for a '_method' override"
        ));
    }
    let body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
    if form {
        let params = url::form_urlencoded::parse(body);
        for (_, value) in params.filter(|(k, _)| is_param(k)) {
            found.push(field("form", value.into_owned().into_bytes()));
        }
    }
    if json {
        for value in json_fields(body)? {
            found.push(field("JSON body", value.into_bytes()));
        }
    }
    if multipart {
        let boundary = content_type
            .as_deref()
            .and_then(|t| parameter(t, "boundary"));
        for value in multipart_fields(body, boundary.unwrap_or_default()) {
            found.push(field("multipart form", value));
        }
    }
    Ok(found)
}

/// Charsets a form or JSON body may name: every field name reads as in
/// UTF-8 in them.
const ASCII_CHARSETS: [&str; 5] = ["utf-8", "utf8", "us-ascii", "iso-8859-1", "windows-1252"];

/// The first value of the parameter `name` anywhere in a header's value
/// (Rack and PHP find `boundary=` anywhere), unquoted, or up to `;`, `,`
/// or a space.
fn parameter<'t>(value: &'t str, name: &str) -> Option<&'t str> {
    let lower = value.to_ascii_lowercase();
    let at = lower.find(&format!("{name}="))? + name.len() + 1;
    let rest = &value[at..];
    Some(match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next().unwrap_or_default(),
        None => rest.split([';', ',', ' ', '\t']).next().unwrap_or_default(),
    })
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
/// ignores without it); `Err` if the parser refuses it all the same.
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
        Err(e) if e.to_string().starts_with("recursion limit exceeded") => Err(
            "the JSON body nests more than 128 levels deep, so whether it asks for another \
             method by '_method' cannot be read"
                .into(),
        ),
        Err(_) => Ok(Vec::new()),
    }
}

/// The contents of each part of a multipart form named `_method` in any
/// spelling [`is_param`] takes (`name="_method"`, `name=_method`,
/// `name*=utf-8''_method`), without the line break before the next
/// boundary.
fn multipart_fields(body: &[u8], boundary: &str) -> Vec<Vec<u8>> {
    if boundary.is_empty() {
        return Vec::new();
    }
    let delimiter = format!("--{boundary}");
    let mut found = Vec::new();
    for part in split(body, delimiter.as_bytes()).skip(1) {
        // Where the headers end: at the first blank line in CRLF, or in LF
        // (servers differ), each read.
        let crlf = find_bytes(part, b"\r\n\r\n").map(|at| (at, 4));
        let lf = find_bytes(part, b"\n\n").map(|at| (at, 2));
        for (end, gap) in [crlf, lf].into_iter().flatten() {
            let (head, contents) = (&part[..end], &part[end + gap..]);
            if part_names(head).iter().any(|name| is_param(name)) {
                let contents = contents.strip_suffix(b"\n").unwrap_or(contents);
                found.push(contents.strip_suffix(b"\r").unwrap_or(contents).to_vec());
            }
        }
    }
    found
}

/// The names a part's headers may give it, on any of their lines: each
/// `name` and `name*` parameter (unquoted, backslash escapes undone; a
/// `name*` without its charset and language) and a `Content-ID` (Rack
/// names a part by it when it has no name).
fn part_names(head: &[u8]) -> Vec<String> {
    let head = String::from_utf8_lossy(head);
    let mut names: Vec<String> = head
        .split(['\r', '\n', ';'])
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim().trim_matches('"').replace('\\', "");
            match k.as_str() {
                "name" => Some(v),
                "name*" => Some(v.rsplit('\'').next().unwrap_or(&v).to_owned()),
                _ => None,
            }
        })
        .collect();
    names.extend(head.split(['\r', '\n']).filter_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-id")
            .then(|| v.trim().trim_matches(['<', '>']).to_owned())
    }));
    names
}

/// `haystack` cut at each `needle`.
fn split<'h>(haystack: &'h [u8], needle: &'h [u8]) -> impl Iterator<Item = &'h [u8]> + 'h {
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
mod tests {
    use super::*;

    fn methods(url: &str, headers: &[(&str, &[u8])], body: &[u8]) -> Vec<(String, String)> {
        let url = Url::parse(url).unwrap();
        find(&url, headers, Some(body))
            .unwrap()
            .into_iter()
            .map(|o| (o.by, String::from_utf8_lossy(&o.value).into_owned()))
            .collect()
    }

    #[test]
    fn overrides_are_found_where_servers_read_them() {
        let none: &[(&str, &[u8])] = &[];
        let found = |url, headers, body| methods(url, headers, body);
        assert_eq!(
            found("http://h/x?_method=DELETE&a=1", none, b""),
            [("the query's '_method'".to_owned(), "DELETE".to_owned())]
        );
        // Percent-encoded, PHP's spellings (leading spaces dropped, a NUL
        // ends the name, `.` or `[` for `_`), any case, every field.
        assert_eq!(
            found(
                "http://h/x?%5Fmethod=put&.Method=patch&%20METHOD=x&[method=y&+_method=a&_method%00x=b",
                none,
                b""
            )
            .len(),
            5
        );
        let form: &[(&str, &[u8])] = &[("Content-Type", b"application/x-www-form-urlencoded")];
        assert_eq!(
            found("http://h/x", form, b"a=1&_method=delete"),
            [("the form's '_method'".to_owned(), "delete".to_owned())]
        );
        // No Content-Type: a form, as Rack reads it.
        assert_eq!(found("http://h/x", none, b"_method=DELETE").len(), 1);
        let json: &[(&str, &[u8])] =
            &[("content-type", b"application/vnd.api+json; charset=utf-8")];
        assert_eq!(
            found(
                "http://h/x",
                json,
                br#"{"a":{"_method":"GET"},"\u005fmethod":"DELETE","_METHOD":7}"#
            ),
            [
                ("the JSON body's '_method'".to_owned(), "DELETE".to_owned()),
                ("the JSON body's '_method'".to_owned(), "7".to_owned())
            ]
        );
        let multipart: &[(&str, &[u8])] =
            &[("Content-Type", b"multipart/form-data; boundary=\"XyZ\"")];
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n_method\r\n--XyZ\r\nContent-Disposition: form-data; name=_method\r\n\r\nDELETE\r\n--XyZ--\r\n";
        assert_eq!(
            found("http://h/x", multipart, body),
            [(
                "the multipart form's '_method'".to_owned(),
                "DELETE".to_owned()
            )]
        );
        let headers: &[(&str, &[u8])] = &[("X_HTTP_Method_Override", b"PUT"), ("x-method", b"GET")];
        assert_eq!(
            found("http://h/x", headers, b""),
            [(
                "header 'X_HTTP_Method_Override'".to_owned(),
                "PUT".to_owned()
            )]
        );
        // Where no server reads one: a JSON body's nested field, a text
        // body, a field named otherwise.
        let text: &[(&str, &[u8])] = &[("Content-Type", b"text/plain")];
        assert!(
            found(
                "http://h/x?method=DELETE&__method=x",
                text,
                b"_method=DELETE"
            )
            .is_empty()
        );
        assert!(found("http://h/x", json, b"not json _method").is_empty());
        // LF line ends.
        let both: &[(&str, &[u8])] = &[("content-type", b"multipart/form-data; boundary=b")];
        let body = b"--b\nContent-Disposition: form-data; name=\"_method\"\n\nPUT\n--b--\n";
        assert_eq!(found("http://h/x", both, body).len(), 1);
        // Content types as Rack and PHP read them: cut at `,` or a space,
        // empty as none, any multipart, `boundary=` anywhere and cut at `,`.
        for (content_type, body) in [
            ("application/x-www-form-urlencoded,x", &b"a=1& _method=PUT"[..]),
            ("", b"_method=PUT"),
            ("text/plain; a=/json", br#"{"_method":"PUT"}"#),
            ("application/jsonx", br#"{"_method":"PUT","_METHOD":1e999}"#),
            ("application/json; charset=UTF-8", b"\xef\xbb\xbf{\"_method\":\"PUT\"}"),
            ("multipart/mixed; boundary=B,x", b"--B\r\nContent-Disposition: form-data; name=\"\\_method\"\r\n\r\nPUT\r\n--B--"),
            ("multipart/form-data; xboundary=B", b"--B\r\nContent-ID: <_method>\r\n\r\nPUT\r\n--B--"),
            ("multipart/form-data; boundary=B", b"--B\r\nX: 1\n\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nPUT\r\n--B--"),
        ] {
            let headers: &[(&str, &[u8])] = &[("Content-Type", content_type.as_bytes())];
            let got = methods("http://h/x", headers, body);
            assert!(got.iter().any(|(_, v)| v == "PUT"), "{content_type}: {got:?}");
        }
        // What cannot be read as a server would: refused.
        let url = Url::parse("http://h/x").unwrap();
        for (headers, body, reason) in [
            (
                &[
                    ("Content-Type", &b"text/plain"[..]),
                    ("Content-Type", b"application/json"),
                ][..],
                &b"{}"[..],
                "the request has 2 different Content-Type headers",
            ),
            (
                &[("Content-Encoding", b"gzip")],
                b"\x1f\x8b",
                "a body a server parses for fields",
            ),
            (
                &[(
                    "Content-Type",
                    b"application/x-www-form-urlencoded; charset=ibm037",
                )],
                b"\x6d\x94",
                "a body a server parses for fields (a form, JSON, a multipart form) in a charset",
            ),
            (
                &[("Content-Type", b"application/json")],
                b"\xff\xfe{\x00}\x00",
                "a body a server parses for fields (a form, JSON, a multipart form) in UTF-16",
            ),
        ] {
            let refused = find(&url, headers, Some(body)).err().unwrap_or_default();
            assert!(refused.starts_with(reason), "{reason}: {refused}");
        }
        // The same Content-Type many times is read once.
        let many: Vec<(&str, &[u8])> = (0..10_000)
            .map(|_| ("content-type", &b"application/json"[..]))
            .collect();
        assert_eq!(
            methods("http://h/x", &many, br#"{"_method":"PUT"}"#).len(),
            1
        );
        // Nested deeper than a parser's recursion goes: still read.
        let deep = format!(
            "{{\"a\":{}1{},\"_method\":\"DELETE\"}}",
            "[".repeat(5000),
            "]".repeat(5000)
        );
        let got = methods("http://h/x", json, deep.as_bytes());
        assert_eq!(
            got,
            [("the JSON body's '_method'".to_owned(), "DELETE".to_owned())]
        );
    }
}
