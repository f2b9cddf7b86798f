//! Redaction: every granted secret value, and its common encodings, is
//! replaced by `[REDACTED:name]` in everything that leaves the host.

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use std::borrow::Cow;

/// Replaces secret values in text and bytes.
#[derive(Default)]
pub struct Redactor {
    matcher: Option<AhoCorasick>,
    /// The replacement for each pattern, by pattern index.
    replacements: Vec<String>,
    /// The secret name of each pattern, by pattern index.
    names: Vec<String>,
}

/// Base64 patterns shorter than this are not used: too likely to match
/// innocent text.
const MIN_B64_PATTERN: usize = 8;

/// Encodings of `value` that a tool could emit: plain, JSON-escaped, hex,
/// URL-encoded, and base64 (standard and URL-safe, padded or not, and the
/// stable middle of the encoding at each of the three byte alignments, so a
/// value base64-encoded inside a longer string is still found).
fn encodings(value: &str) -> Vec<String> {
    let bytes = value.as_bytes();
    let mut out = vec![
        value.to_owned(),
        hex::encode(bytes),
        hex::encode_upper(bytes),
        url_encode(value, is_unreserved, true),
        url_encode(value, is_unreserved, false),
        url_encode(value, u8::is_ascii_alphanumeric, true),
        url_encode(value, u8::is_ascii_alphanumeric, false),
    ];
    if let Ok(json) = serde_json::to_string(value) {
        out.push(json[1..json.len() - 1].to_owned());
    }
    for engine in [&STANDARD, &URL_SAFE] {
        out.push(engine.encode(bytes));
    }
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        for shift in 0..3 {
            let mut shifted = vec![0u8; shift];
            shifted.extend_from_slice(bytes);
            let encoded = engine.encode(&shifted);
            // Characters before `start` mix in the shifted-in bytes; after
            // `end` they depend on what follows the value.
            let start = if shift == 0 { 0 } else { 4 };
            let end = shifted.len() / 3 * 4;
            if end > start && end - start >= MIN_B64_PATTERN {
                out.push(encoded[start..end].to_owned());
            }
        }
    }
    out.retain(|p| !p.is_empty());
    out
}

fn is_unreserved(b: &u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Percent-encoding, keeping the bytes `keep` accepts; upper- or lower-case hex.
fn url_encode(value: &str, keep: fn(&u8) -> bool, upper: bool) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if keep(&b) {
            out.push(b as char);
        } else if upper {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

impl Redactor {
    /// A redactor for `(name, value)` pairs.
    pub fn new<'a>(secrets: impl IntoIterator<Item = (&'a str, &'a str)>) -> Redactor {
        let mut patterns = Vec::new();
        let mut replacements = Vec::new();
        let mut names = Vec::new();
        for (name, value) in secrets {
            for p in encodings(value) {
                if !patterns.contains(&p) {
                    patterns.push(p);
                    replacements.push(format!("[REDACTED:{name}]"));
                    names.push(name.to_owned());
                }
            }
        }
        if patterns.is_empty() {
            return Redactor::default();
        }
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
            .ok();
        Redactor {
            matcher,
            replacements,
            names,
        }
    }

    /// Names of the secrets whose values (in any encoding) occur in `bytes`.
    pub fn names_in(&self, bytes: &[u8]) -> std::collections::BTreeSet<String> {
        match &self.matcher {
            Some(m) => m
                .find_iter(bytes)
                .map(|hit| self.names[hit.pattern().as_usize()].clone())
                .collect(),
            None => Default::default(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    pub fn redact<'s>(&self, text: &'s str) -> Cow<'s, str> {
        match &self.matcher {
            Some(m) if m.is_match(text) => Cow::Owned(m.replace_all(text, &self.replacements)),
            _ => Cow::Borrowed(text),
        }
    }

    pub fn redact_bytes(&self, bytes: &[u8]) -> Vec<u8> {
        match &self.matcher {
            Some(m) => m.replace_all_bytes(bytes, &self.replacements),
            None => bytes.to_vec(),
        }
    }

    pub fn redact_string(&self, text: String) -> String {
        match self.redact(&text) {
            Cow::Borrowed(_) => text,
            Cow::Owned(s) => s,
        }
    }
}

/// `text` with control characters (ESC, CR, LF, …) escaped as `\u{..}`, for
/// anything a person reads: a tool-chosen string must not rewrite a
/// terminal's lines or forge one.
pub fn escape_control(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUE: &str = "s3cr3t-T0ken/with+odd&chars=";

    #[test]
    fn every_encoding_is_redacted_at_any_alignment() {
        let r = Redactor::new([("api", VALUE)]);
        let mut leaks = vec![
            VALUE.to_owned(),
            hex::encode(VALUE),
            hex::encode_upper(VALUE),
            url_encode(VALUE, is_unreserved, true),
            url_encode(VALUE, u8::is_ascii_alphanumeric, false),
            serde_json::to_string(VALUE).unwrap(),
        ];
        for prefix in ["", "a", "ab", "abc", "Bearer "] {
            let framed = format!("{prefix}{VALUE}!?");
            for engine in [&STANDARD, &URL_SAFE, &STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
                leaks.push(engine.encode(&framed));
            }
        }
        for leak in leaks {
            let text = format!("before {leak} after");
            let out = r.redact(&text);
            assert!(out.contains("[REDACTED:api]"), "not redacted: {leak}");
            assert!(!out.contains(VALUE), "{out}");
        }
        assert_eq!(r.redact("nothing here"), "nothing here");
    }

    #[test]
    fn bytes_and_several_secrets() {
        let r = Redactor::new([("a", "first-secret"), ("b", "second-secret")]);
        let out = r.redact_bytes(b"x first-secret y second-secret z");
        assert_eq!(out, b"x [REDACTED:a] y [REDACTED:b] z");
    }

    #[test]
    fn control_characters_are_escaped_for_people() {
        assert_eq!(super::escape_control("a.txt"), "a.txt");
        assert_eq!(
            super::escape_control("a\n  details   fake\u{1b}[2K"),
            "a\\u{a}  details   fake\\u{1b}[2K"
        );
    }
}
