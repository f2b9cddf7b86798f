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
/// among them), its query, and its body as a form, JSON or multipart form
/// (as each `Content-Type` it names says: servers differ on which one
/// counts). `Err` with the reason when a field cannot be read where a
/// server may read it: a JSON body nested deeper than the parser here
/// goes (PHP's goes deeper).
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
    let types: Vec<String> = headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
        .collect();
    // None: a form, as Rack reads a body without one.
    let types = match types.is_empty() {
        true => vec![None],
        false => types.iter().map(|t| Some(t.as_str())).collect(),
    };
    for content_type in types {
        // The media type in any case; its boundary as written.
        let media = content_type.map(|t| {
            let media = t.split(';').next().unwrap_or_default();
            media.trim().to_ascii_lowercase()
        });
        match media.as_deref() {
            None | Some("application/x-www-form-urlencoded") => {
                let params = url::form_urlencoded::parse(body);
                for (_, value) in params.filter(|(k, _)| is_param(k)) {
                    found.push(field("form", value.into_owned().into_bytes()));
                }
            }
            Some(m) if m.ends_with("/json") || m.ends_with("+json") => {
                for value in json_fields(body)? {
                    found.push(field("JSON body", value.into_bytes()));
                }
            }
            Some("multipart/form-data") => {
                let boundary = content_type.and_then(boundary).unwrap_or_default();
                for value in multipart_fields(body, &boundary) {
                    found.push(field("multipart form", value));
                }
            }
            Some(_) => {}
        }
    }
    Ok(found)
}

/// Whether a parameter named `name` is `_method`, as a server may read it:
/// in any case, and with `.`, ` ` or `[` for `_` (PHP makes them `_`).
fn is_param(name: &str) -> bool {
    let name = name.as_bytes();
    name.len() == 7
        && matches!(name[0], b'_' | b'.' | b' ' | b'[')
        && name[1..].eq_ignore_ascii_case(b"method")
}

/// The values of a JSON object's top-level `_method` members (a string,
/// or any other value as its JSON text, which names no method). None when
/// the body is not a JSON object: a server that cannot parse it reads no
/// field either. `Err` when it nests too deep to read.
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
                    let value: serde_json::Value = map.next_value()?;
                    found.push(match value {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    });
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

/// A multipart `Content-Type`'s boundary.
fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim().eq_ignore_ascii_case("boundary")).then(|| v.trim().trim_matches('"').to_owned())
    })
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
        // The headers end at the first blank line, CRLF or LF.
        let crlf = find_bytes(part, b"\r\n\r\n").map(|at| (at, 4));
        let lf = find_bytes(part, b"\n\n").map(|at| (at, 2));
        let Some((end, gap)) = [crlf, lf].into_iter().flatten().min() else {
            continue;
        };
        let (head, contents) = (&part[..end], &part[end + gap..]);
        if part_names(head).iter().any(|name| is_param(name)) {
            let contents = contents.strip_suffix(b"\n").unwrap_or(contents);
            found.push(contents.strip_suffix(b"\r").unwrap_or(contents).to_vec());
        }
    }
    found
}

/// The `name` (and `name*`) parameters of a part's headers, unquoted; a
/// `name*` without its charset and language.
fn part_names(head: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(head)
        .split(['\r', '\n', ';'])
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim().trim_matches('"');
            match k.as_str() {
                "name" => Some(v.to_owned()),
                "name*" => Some(v.rsplit('\'').next().unwrap_or(v).to_owned()),
                _ => None,
            }
        })
        .collect()
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
        // Percent-encoded, PHP's spellings, any case, every field.
        assert_eq!(
            found(
                "http://h/x?%5Fmethod=put&.Method=patch&%20METHOD=x&[method=y",
                none,
                b""
            )
            .len(),
            4
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
        // LF line ends; one Content-Type of several says multipart.
        let both: &[(&str, &[u8])] = &[
            ("Content-Type", b"text/plain"),
            ("content-type", b"multipart/form-data; boundary=b"),
        ];
        let body = b"--b\nContent-Disposition: form-data; name=\"_method\"\n\nPUT\n--b--\n";
        assert_eq!(found("http://h/x", both, body).len(), 1);
        // Deeper than the parser goes: refused, not read as having none.
        let deep = format!(
            "{{\"a\":{}1{},\"_method\":\"DELETE\"}}",
            "[".repeat(200),
            "]".repeat(200)
        );
        let url = Url::parse("http://h/x").unwrap();
        let refused = find(&url, json, Some(deep.as_bytes())).err().unwrap();
        assert!(
            refused.starts_with("the JSON body nests more than 128 levels"),
            "{refused}"
        );
    }
}
