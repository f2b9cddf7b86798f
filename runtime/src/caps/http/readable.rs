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

use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, IF_RANGE, RANGE, TE, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue};

/// The request headers that choose an encoding or a part of the body,
/// removed, and `Accept-Encoding: identity`.
pub(super) fn ask_whole(headers: &mut HeaderMap) {
    for name in [ACCEPT_ENCODING, RANGE, IF_RANGE, TE] {
        headers.remove(name);
    }
    headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
}

/// Why a response's body cannot be redacted, if it cannot: a content
/// coding other than `identity`, or a part of a body (status 206). The
/// coding named is the server's: redacted (it may echo what it was sent),
/// then cut and escaped.
pub(super) fn unreadable<'a>(
    status: u16,
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    redactor: &crate::redact::Redactor,
) -> Option<String> {
    if status == 206 {
        return Some(
            "the response is a part of a body (206), which redaction cannot read whole while \
             this invocation holds secrets"
                .into(),
        );
    }
    for (name, value) in headers {
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
            let shown =
                crate::redact::escape_control(&redactor.redact_cut(&value, 64)).into_owned();
            return Some(format!(
                "the response is encoded ({header}: {shown}), which redaction cannot \
                 read while this invocation holds secrets; the request asked for identity"
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_asks_for_the_whole_body_unencoded() {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip, br"));
        h.insert(RANGE, HeaderValue::from_static("bytes=0-3"));
        h.insert(IF_RANGE, HeaderValue::from_static("\"e\""));
        h.insert(TE, HeaderValue::from_static("gzip"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        ask_whole(&mut h);
        assert_eq!(h.get(ACCEPT_ENCODING).unwrap(), "identity");
        assert_eq!(h.get_all(ACCEPT_ENCODING).iter().count(), 1);
        for gone in [RANGE, IF_RANGE, TE] {
            assert!(!h.contains_key(&gone), "{gone}");
        }
        assert_eq!(h.get("x-kept").unwrap(), "1");
    }

    #[test]
    fn an_encoded_or_partial_response_is_unreadable() {
        let none = crate::redact::Redactor::default();
        let ce = |v: &'static str| vec![("Content-Encoding", v.as_bytes())];
        for coded in ["gzip", "BR", "identity, deflate", " x-custom "] {
            let why = unreadable(200, ce(coded), &none).unwrap_or_else(|| panic!("{coded}"));
            assert!(why.contains("Content-Encoding"), "{why}");
        }
        assert!(unreadable(206, Vec::new(), &none).unwrap().contains("206"));
        let te = |v: &'static str| vec![("transfer-encoding", v.as_bytes())];
        let why = unreadable(200, te("gzip, chunked"), &none).unwrap();
        assert!(why.contains("Transfer-Encoding: gzip, chunked"), "{why}");
        assert_eq!(unreadable(200, te("chunked"), &none), None);
        for plain in ["identity", "Identity", ""] {
            assert_eq!(unreadable(200, ce(plain), &none), None, "{plain:?}");
        }
        let typed = vec![("content-type", b"a/b".as_slice())];
        assert_eq!(unreadable(200, typed, &none), None);
        // A hostile coding name is shown escaped and short.
        let long = format!("\u{1b}[2J{}", "x".repeat(500));
        let why = unreadable(200, vec![("content-encoding", long.as_bytes())], &none).unwrap();
        assert!(!why.contains('\u{1b}') && why.len() < 400, "{why}");
        // A server echoing a secret as its coding: the value is redacted,
        // also where the cut would have split it.
        let r = crate::redact::Redactor::new([("bearer", "tok-0123456789abcdef")]);
        for pad in [0, 50, 60] {
            let echoed = format!("{}tok-0123456789abcdef", "x".repeat(pad));
            let why = unreadable(200, vec![("content-encoding", echoed.as_bytes())], &r).unwrap();
            assert!(!why.contains("tok-0123"), "{pad}: {why}");
            assert!(
                pad > 40 || why.contains("[REDACTED:bearer]"),
                "{pad}: {why}"
            );
        }
    }
}
