//! Responses that redaction can read, for an invocation holding secrets.
//!
//! A response is redacted before the tool reads it, so that a server that
//! echoes what it was sent (a debug endpoint, an error page quoting the
//! `Authorization` header) cannot hand a by-reference secret to the tool.
//! Redaction reads the body's bytes as they arrive: compressed
//! (`Content-Encoding: gzip`), a reflected value is in none of the forms it
//! knows, and the tool decompresses it; cut into ranges (`Range`), a value
//! reaches the tool a part at a time. A tool chooses both with its request
//! headers, so while the invocation holds secrets its requests ask for the
//! whole body, unencoded, and a response encoded anyway is refused.
//!
//! The same for characters: in UTF-16 or EBCDIC (`Accept-Charset`, or
//! `Accept: text/plain;charset=utf-16le`, which many frameworks honour) a
//! reflected value's letters are not the bytes redaction looks for. A
//! request names no charset, and a response in one that does not spell
//! ASCII as ASCII is refused.

use http::header::{ACCEPT, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue};

/// The request headers that choose an encoding, a charset or a part of the
/// body (also spelled with `_`, which CGI-style servers read as `-`),
/// removed, `Accept-Encoding: identity`, and `Accept` without its
/// `charset` parameters.
pub(super) fn ask_whole(headers: &mut HeaderMap) {
    const CHOOSING: [&str; 5] = [
        "accept-encoding",
        "accept-charset",
        "range",
        "if-range",
        "te",
    ];
    let choosing: Vec<http::HeaderName> = (headers.keys())
        .filter(|k| CHOOSING.contains(&k.as_str().replace('_', "-").as_str()))
        .cloned()
        .collect();
    for name in choosing {
        headers.remove(name);
    }
    headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    let accepts: Vec<HeaderValue> = headers.get_all(ACCEPT).iter().cloned().collect();
    headers.remove(ACCEPT);
    for accept in accepts {
        // Not text: nothing a server would read a charset from.
        let Ok(text) = accept.to_str() else { continue };
        if let Ok(value) = HeaderValue::from_str(&without_charset(text)) {
            headers.append(ACCEPT, value);
        }
    }
}

/// An `Accept` value's media ranges without any part that names a charset,
/// read as the plainest server reads it (split at every `,` and `;`, quotes
/// or not: a quoted string read as one value by one parser is parameters
/// to another).
fn without_charset(accept: &str) -> String {
    let ranges = accept.split(',').map(|range| {
        (range.split(';'))
            .filter(|part| !part.to_ascii_lowercase().contains("charset"))
            .collect::<Vec<_>>()
            .join(";")
    });
    ranges.collect::<Vec<_>>().join(",")
}

/// `value` split at each `sep` outside a quoted string (where `\` escapes
/// the next character), as a media type's parameters are read.
fn split(value: &str, sep: u8) -> Vec<&str> {
    let (mut parts, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, b) in value.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            _ if b == sep && !quoted => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    parts
}

/// A media-type parameter's name and value (unquoted; an extended value,
/// `charset*=UTF-8''utf-16`, after its last `'`), if `part` is one.
fn param(part: &str) -> Option<(&str, &str)> {
    let (name, value) = part.split_once('=')?;
    let (name, value) = (name.trim(), value.trim().trim_matches('"'));
    match name.ends_with('*') {
        true => Some((name, value.rsplit('\'').next().unwrap_or(value))),
        false => Some((name, value)),
    }
}

/// Whether a parameter's name is `charset`, extended (`charset*`) or a
/// part of a continued one (`charset*0`, `charset*1*`: a part alone is no
/// charset that spells ASCII, so a continued one is refused).
fn is_charset(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    (lower.strip_prefix("charset"))
        .is_some_and(|rest| rest.bytes().all(|b| b == b'*' || b.is_ascii_digit()))
}

/// Charsets that encode every ASCII character as its own byte, so a
/// reflected value reads as it was sent: UTF-8 and ASCII, the ISO 8859
/// and Windows code pages, KOI8, and the East Asian multi-byte ones (whose
/// ASCII range is ASCII). Not UTF-16/32, UTF-7, EBCDIC (`IBM037`, `cp500`)
/// or anything unknown.
fn spells_ascii(charset: &str) -> bool {
    let c = charset.to_ascii_lowercase();
    const EXACT: [&str; 16] = [
        "utf-8",
        "utf8",
        "us-ascii",
        "ascii",
        "shift_jis",
        "sjis",
        "windows-31j",
        "cp932",
        "euc-jp",
        "euc-kr",
        "gbk",
        "gb2312",
        "gb18030",
        "big5",
        "big5-hkscs",
        "tis-620",
    ];
    const PREFIXES: [&str; 6] = [
        "iso-8859-",
        "iso8859-",
        "latin",
        "windows-125",
        "cp125",
        "koi8-",
    ];
    EXACT.contains(&c.as_str())
        || (PREFIXES.iter()).any(|p| {
            c.strip_prefix(p).is_some_and(|rest| {
                !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric())
            })
        })
}

/// Why a response's body cannot be redacted, if it cannot: a content
/// coding other than `identity`, or a part of a body (status 206). What
/// the server wrote is not quoted: a server can list candidates for a
/// secret there, and a marker redacting one would tell the tool which, with
/// nothing recorded as a guess (this refusal comes before the response is
/// scanned). The header is named, the value not.
pub(super) fn unreadable<'a>(
    status: u16,
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Option<String> {
    if status == 206 {
        return Some(
            "the response is a part of a body (206), which redaction cannot read whole while \
             this invocation holds secrets"
                .into(),
        );
    }
    for (name, value) in headers {
        if name.eq_ignore_ascii_case(CONTENT_TYPE.as_str()) {
            // Every charset named, in every type the value lists, read
            // with quotes (as RFC 9110 reads it) and without (as the
            // plainest parser does): parsers differ on which one counts.
            let value = String::from_utf8_lossy(value);
            let quoted = split(&value, b',').into_iter().flat_map(|t| split(t, b';'));
            let plain = value.split([',', ';']);
            let params = quoted.chain(plain).filter_map(param);
            let mut charsets = params.filter(|(name, _)| is_charset(name));
            if charsets.any(|(_, c)| !spells_ascii(c)) {
                return Some(
                    "the response's Content-Type names a charset that does not spell ASCII as \
                     ASCII: redaction cannot read it while this invocation holds secrets; the \
                     request named no charset"
                        .into(),
                );
            }
            continue;
        }
        // A transfer coding other than chunked (which the client decodes)
        // reaches the tool as it was sent, like a content coding.
        let (header, plain) = if name.eq_ignore_ascii_case(CONTENT_ENCODING.as_str()) {
            ("Content-Encoding", "identity")
        } else if name.eq_ignore_ascii_case(TRANSFER_ENCODING.as_str()) {
            ("Transfer-Encoding", "chunked")
        } else {
            continue;
        };
        let value = String::from_utf8_lossy(value);
        let coded = value
            .split(',')
            .map(str::trim)
            .any(|c| !c.is_empty() && !c.eq_ignore_ascii_case(plain));
        if coded {
            return Some(format!(
                "the response is encoded (a {header} other than {plain}), which redaction \
                 cannot read while this invocation holds secrets; the request asked for identity"
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{ACCEPT_CHARSET, IF_RANGE, RANGE, TE};

    #[test]
    fn a_request_asks_for_the_whole_body_unencoded() {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip, br"));
        h.insert(RANGE, HeaderValue::from_static("bytes=0-3"));
        h.insert(IF_RANGE, HeaderValue::from_static("\"e\""));
        h.insert(TE, HeaderValue::from_static("gzip"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        h.insert(ACCEPT_CHARSET, HeaderValue::from_static("utf-16le"));
        h.insert("accept_charset", HeaderValue::from_static("utf-16le"));
        h.insert("Accept_Encoding", HeaderValue::from_static("gzip"));
        h.append(
            ACCEPT,
            HeaderValue::from_static("text/plain;charset=utf-16le;q=0.9, application/json"),
        );
        h.append(
            ACCEPT,
            HeaderValue::from_static("text/x; CHARSET=\"ibm037\""),
        );
        h.append(
            ACCEPT,
            HeaderValue::from_static("text/y; q=\", text/z; charset=ibm037; y=\""),
        );
        h.append(
            ACCEPT,
            HeaderValue::from_static("text/v;x=\"a\\\";CharSet=IBM037;y=\"b\""),
        );
        ask_whole(&mut h);
        assert!(!h.contains_key(ACCEPT_CHARSET));
        assert!(!h.contains_key("accept_charset") && !h.contains_key("accept_encoding"));
        let accept: Vec<&str> = (h.get_all(ACCEPT).iter())
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(
            accept,
            [
                "text/plain;q=0.9, application/json",
                "text/x",
                "text/y; q=\", text/z; y=\"",
                "text/v;x=\"a\\\";y=\"b\""
            ]
        );
        assert_eq!(h.get(ACCEPT_ENCODING).unwrap(), "identity");
        assert_eq!(h.get_all(ACCEPT_ENCODING).iter().count(), 1);
        for gone in [RANGE, IF_RANGE, TE] {
            assert!(!h.contains_key(&gone), "{gone}");
        }
        assert_eq!(h.get("x-kept").unwrap(), "1");
    }

    #[test]
    fn an_encoded_or_partial_response_is_unreadable() {
        let ce = |v: &'static str| vec![("Content-Encoding", v.as_bytes())];
        for coded in ["gzip", "BR", "identity, deflate", " x-custom "] {
            let why = unreadable(200, ce(coded)).unwrap_or_else(|| panic!("{coded}"));
            assert!(why.contains("Content-Encoding"), "{why}");
        }
        assert!(unreadable(206, Vec::new()).unwrap().contains("206"));
        let te = |v: &'static str| vec![("transfer-encoding", v.as_bytes())];
        let why = unreadable(200, te("gzip, chunked")).unwrap();
        assert!(
            why.contains("Transfer-Encoding other than chunked"),
            "{why}"
        );
        assert_eq!(unreadable(200, te("chunked")), None);
        for plain in ["identity", "Identity", ""] {
            assert_eq!(unreadable(200, ce(plain)), None, "{plain:?}");
        }
        let typed = vec![("content-type", b"a/b".as_slice())];
        assert_eq!(unreadable(200, typed), None);
        let typed = |v: &'static str| vec![("Content-Type", v.as_bytes())];
        for wide in [
            "text/plain; charset=utf-16le",
            "application/json;charset=\"UTF-16\"",
            "text/plain; q=1; Charset = IBM037",
            "text/html; charset=utf-7",
            "text/plain; charset=utf-32be",
            "text/plain; charset=x-unknown",
            "text/plain; charset=latin",
            // A second charset, one hidden from a naive split by quotes,
            // an extended one, a second type.
            "text/plain; charset=utf-8; charset=utf-16",
            "text/plain; x=\"; charset=utf-8\"; charset=utf-16",
            "text/plain; charset*=utf-16''",
            "text/plain; charset=utf-8, text/html; charset=utf-16be",
            "text/plain; charset*=UTF-8''ibm037",
            "text/plain; charset*0=utf; charset*1=-8",
            "text/plain; charset=\"utf-8;x\"",
            "text/plain; x=\"a; charset=utf-16\"; charset=utf-8",
        ] {
            let why = unreadable(200, typed(wide)).unwrap_or_else(|| panic!("{wide}"));
            assert!(why.contains("charset"), "{why}");
        }
        for narrow in [
            "text/plain; charset=utf-8",
            "text/html; charset=\"ISO-8859-1\"",
            "text/plain;charset=windows-1252",
            "text/plain; charset=Shift_JIS",
            "application/json",
            "text/plain; charset*=utf-8''UTF-8",
        ] {
            assert_eq!(unreadable(200, typed(narrow)), None, "{narrow}");
        }
        // What the server wrote is not quoted: neither a hostile coding
        // name nor candidates for a secret, where a marker redacting one
        // would tell the tool which it is.
        let long = format!("\u{1b}[2J{}", "x".repeat(500));
        let why = unreadable(200, vec![("content-encoding", long.as_bytes())]).unwrap();
        assert!(!why.contains('\u{1b}') && !why.contains("xxx"), "{why}");
        let listed = "0084, 0085, 0086, tok-0123456789abcdef";
        let why = unreadable(200, vec![("content-encoding", listed.as_bytes())]).unwrap();
        assert!(!why.contains("0085") && !why.contains("tok-"), "{why}");
        let typed = format!("text/plain; charset={listed}");
        let why = unreadable(200, vec![("content-type", typed.as_bytes())]).unwrap();
        assert!(!why.contains("0085") && !why.contains("tok-"), "{why}");
    }
}
