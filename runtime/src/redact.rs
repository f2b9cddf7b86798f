//! Redaction: every granted secret value is replaced by `[REDACTED:name]`
//! in everything that leaves the host, and found in everything a tool
//! sends — matched after normalizing the encodings a reader or a receiving
//! server decodes.
//!
//! What is matched, at any offset and in any mix:
//!
//! - the value itself, with spaces as `+` (form encoding);
//! - its hex, in any letter case;
//! - its base64 (standard and URL-safe, padded or not, and every character
//!   of the encoding that depends on the value alone at each of the three
//!   byte alignments, so a value base64-encoded inside a longer string is
//!   still found; a four-byte value by decoding the text's base64 runs);
//! - any of those behind escapes, decoded as a reader would, up to
//!   [`MAX_LAYERS`] times over: percent-encoding (`%XX`, any case, any
//!   subset of bytes), JSON and JavaScript escapes (`\uXXXX` with surrogate
//!   pairs, `\xXX`, `\n`, `\"`, `\/` …) and HTML character references
//!   (`&#115;`, `&#x73;`, with or without `;`, and the named references to
//!   ASCII characters: `&amp;`, `&sol;` …). A match in a decoded view is
//!   mapped back to the escapes that produced it, and those are replaced.
//!
//! Not matched (a tool that can read a value can always transform it; see
//! `SECURITY.md`): encodings applied *around* an escaped form (base64 of a
//! percent-encoded value), other transforms (reversal, XOR, encryption,
//! compression), a value split across JSON strings, headers and body, or
//! separate requests.

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use std::borrow::Cow;
use std::collections::BTreeSet;

mod b64;
mod by_reference;
mod decode;
mod jws;
mod names;
mod numbers;
mod terminal;
mod wide;

use decode::{ESCAPE_STARTS, Span, decode, may_escape};
pub(crate) use jws::and_signatures;
pub use terminal::{escape_control, hidden, json_for_terminal};

/// How many times escapes are decoded over one another (`%2525` is two).
pub const MAX_LAYERS: usize = 4;

/// The most of a text redacted before it is cut to what a record or a log
/// keeps (a few KiB): redacting first finds a value the cut would split,
/// and this bounds what that costs (a tool's log message or path may be
/// megabytes). A value across this line could only be moved into the part
/// kept by markers shorter than the values they replace, a megabyte of
/// them: by a tool that holds the value, which can show it anyway.
pub(crate) const REDACT_WITHIN: usize = 1 << 20;

pub(crate) use names::{
    DEPLOY_TOKEN, HANDED_OUT, deploy_token_name, is_deploy_token, shown_name, token_audience,
    token_name,
};

/// Replaces secret values in text and bytes.
#[derive(Default)]
pub struct Redactor {
    /// Case-sensitive forms: the value and its base64.
    exact: Option<AhoCorasick>,
    /// Name index of each `exact` pattern.
    exact_names: Vec<usize>,
    /// Forms matched in any ASCII letter case: hex.
    folded: Option<AhoCorasick>,
    /// Name index of each `folded` pattern.
    folded_names: Vec<usize>,
    names: Vec<String>,
    markers: Vec<String>,
    /// A value is shorter than [`SHORT`] bytes: base64 runs are decoded.
    short: bool,
    /// The longest value's length in bytes.
    longest: usize,
    /// Indices in `names` of the values held by reference
    /// (`by_reference.rs`).
    hidden: Vec<usize>,
    /// Whether each of `hidden` has been revealed to the tool since.
    revealed: Vec<std::sync::atomic::AtomicBool>,
}

/// Base64 patterns shorter than this are not used: too likely to match
/// innocent text. Every value of [`SHORT`] bytes or more has patterns this
/// long at each byte alignment; a shorter one is found by decoding.
const MIN_B64_PATTERN: usize = 6;

/// Values shorter than this are found in base64 at an odd byte alignment
/// by decoding the text's base64 runs ([`b64`]): their stable characters
/// there are four or five, too few for a pattern.
const SHORT: usize = 5;

/// Forms of `value` matched case-sensitively: plain, spaces as `+`, as a
/// JSON string's contents, base64.
fn exact_forms(value: &str) -> Vec<String> {
    let bytes = value.as_bytes();
    let mut out = vec![value.to_owned()];
    if value.contains(' ') {
        out.push(value.replace(' ', "+"));
    }
    // Escaped for JSON (`\"`, `\\`, `\n`, `\u001b`), matched as written: a
    // `\` glued before its first escape would pair with it (see
    // `folded_forms`).
    if let Ok(json) = serde_json::to_string(value) {
        let json = &json[1..json.len() - 1];
        if json != value {
            out.push(json.to_owned());
        }
    }
    for engine in [&STANDARD, &URL_SAFE] {
        out.push(engine.encode(bytes));
    }
    out.extend(wide::forms(value));
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        for shift in 0..3 {
            let mut shifted = vec![0u8; shift];
            shifted.extend_from_slice(bytes);
            let encoded = engine.encode(&shifted);
            // Characters before `start` mix in the shifted-in bytes; after
            // `end` they depend on what follows the value (a last group of
            // one or two of its bytes has one or two characters of its own).
            let start = [0, 2, 3][shift];
            let end = shifted.len() / 3 * 4 + shifted.len() % 3;
            if end > start && end - start >= MIN_B64_PATTERN {
                out.push(encoded[start..end].to_owned());
            }
        }
    }
    // The value with its own escape look-alikes decoded (`s3cr%40t` as
    // `s3cr@t`): a view that decodes every kind of escape at once decodes
    // them together with the layers a tool wrapped around the value (`%5C`
    // `u0070…%2540…`, which a reader peels one kind at a time), and finds
    // this form where the value itself no longer stands.
    let mut view = decode::decode(bytes, None, None);
    for _ in 0..MAX_LAYERS {
        let Some(v) = view else { break };
        // As long and as varied as a pattern must be not to match
        // ordinary text (`&equals;` eight times is `========`).
        let distinct = v.bytes.iter().collect::<BTreeSet<_>>().len();
        if let Ok(text) = std::str::from_utf8(&v.bytes)
            && text.len() >= MIN_B64_PATTERN
            && distinct >= 4
        {
            out.push(text.to_owned());
        }
        view = decode::decode(&v.bytes, None, None);
    }
    out.retain(|p| !p.is_empty());
    out
}

/// Forms of `value` matched in any letter case: hex, the usual
/// percent-encodings (every byte, all but unreserved, all but letters and
/// digits), and every character as `\uXXXX` (JSON, JavaScript) or every
/// byte as `\xXX`. Decoding finds any other mix of escapes; these also
/// catch a form whose first escape a preceding escape character glued into
/// an escape of its own, which shifts the decoding: `%` + `000A…` decodes
/// as `%00` + `0A…`, and `\` + `\u0021\u005c\u0022…` as `\\` + `u0021` +
/// `\"…`, where the value's own `\"` then decodes too. (HTML character
/// references cannot be glued into: `&` + `&#…` is a lone `&`.)
fn folded_forms(value: &str) -> Vec<String> {
    use std::fmt::Write as _;
    let bytes = value.as_bytes();
    let percent = |keep: fn(u8) -> bool| -> String {
        bytes
            .iter()
            .map(|&b| {
                if keep(b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    let mut out = vec![hex::encode(bytes)];
    for keep in [
        (|_| false) as fn(u8) -> bool,
        |b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'),
        |b| b.is_ascii_alphanumeric(),
    ] {
        let form = percent(keep);
        if form != value && !out.contains(&form) {
            out.push(form);
        }
    }
    let mut units = String::with_capacity(value.len() * 6);
    for u in value.encode_utf16() {
        let _ = write!(units, "\\u{u:04x}");
    }
    out.push(units);
    let mut each = String::with_capacity(bytes.len() * 4);
    for b in bytes {
        let _ = write!(each, "\\x{b:02x}");
    }
    out.push(each);
    out
}

/// Builds one matcher over `(pattern, name index)` pairs.
fn matcher(forms: Vec<(String, usize)>, folded: bool) -> (Option<AhoCorasick>, Vec<usize>) {
    let mut patterns: Vec<String> = Vec::new();
    let mut names = Vec::new();
    for (p, n) in forms {
        let dup = patterns.iter().any(|q| {
            if folded {
                q.eq_ignore_ascii_case(&p)
            } else {
                *q == p
            }
        });
        if !dup {
            patterns.push(p);
            names.push(n);
        }
    }
    if patterns.is_empty() {
        return (None, names);
    }
    let ac = AhoCorasick::builder()
        // Every match, overlapping ones too (`find` merges them): leftmost
        // matching would report one of two values that overlap, and the
        // other's name and the rest of its bytes would be missed.
        .match_kind(MatchKind::Standard)
        .ascii_case_insensitive(folded)
        .build(&patterns)
        .ok();
    (ac, names)
}

/// One found value: its span in the original text and its name's index.
type Hit = (usize, usize, usize);

impl Redactor {
    /// A redactor for `(name, value)` pairs.
    pub fn new<'a>(secrets: impl IntoIterator<Item = (&'a str, &'a str)>) -> Redactor {
        let mut names = Vec::new();
        let mut markers = Vec::new();
        let mut exact = Vec::new();
        let mut folded = Vec::new();
        let (mut short, mut longest) = (false, 0);
        for (name, value) in secrets {
            if value.is_empty() {
                continue;
            }
            let index = names.len();
            short |= value.len() < SHORT;
            longest = longest.max(value.len());
            names.push(name.to_owned());
            markers.push(format!("[REDACTED:{}]", shown_name(name)));
            exact.extend(exact_forms(value).into_iter().map(|p| (p, index)));
            folded.extend(folded_forms(value).into_iter().map(|p| (p, index)));
        }
        let (exact, exact_names) = matcher(exact, false);
        let (folded, folded_names) = matcher(folded, true);
        Redactor {
            exact,
            exact_names,
            folded,
            folded_names,
            names,
            markers,
            short,
            longest,
            hidden: Vec::new(),
            revealed: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_none() && self.folded.is_none()
    }

    /// Whether a granted secret's value is among what is redacted, not only
    /// identity tokens handed to the tool: what a server answers the tool
    /// is read whole and redacted only then (the tool holds its own tokens,
    /// so a server echoing one tells it nothing).
    pub(crate) fn holds_secrets(&self) -> bool {
        (self.names.iter()).any(|n| n != HANDED_OUT && token_audience(n).is_none())
    }

    /// Every value found in `bytes` and in up to `layers` decoded views of
    /// it, as spans of `bytes`, sorted and merged where they overlap.
    fn find(&self, bytes: &[u8], layers: usize) -> Vec<Hit> {
        merged(self.find_each(bytes, layers))
    }

    /// Every value found, each hit apart (overlapping hits are merged for
    /// replacing only: a value's name must not be lost to another's hit
    /// that overlaps it, glued to it by an escape).
    fn find_each(&self, bytes: &[u8], layers: usize) -> Vec<Hit> {
        let mut hits = Vec::new();
        if self.is_empty() {
            return hits;
        }
        if u32::try_from(bytes.len()).is_err() {
            // Past every limit Warden sets (the views' offsets are 32-bit):
            // the whole text is redacted, unread.
            return vec![(0, bytes.len(), 0)];
        }
        self.scan(bytes, None, &mut hits);
        if may_escape(bytes) {
            // Every kind of escape decoded at each layer (mixed encodings),
            // and, when the text holds more than one kind, each kind alone:
            // a value containing `%41` escaped as JSON must not be decoded
            // as percent too.
            let present: Vec<u8> = ESCAPE_STARTS
                .into_iter()
                .filter(|c| bytes.contains(c))
                .collect();
            let alone = if present.len() > 1 {
                present
            } else {
                Vec::new()
            };
            for only in std::iter::once(None).chain(alone.into_iter().map(Some)) {
                let mut view = decode(bytes, None, only);
                for _ in 0..layers {
                    let Some(v) = view else { break };
                    self.scan(&v.bytes, Some(&v.spans), &mut hits);
                    // Each view finds again what the views before it found
                    // (a value not escaped is in all of them): kept once,
                    // or a text of many values costs a copy of each hit
                    // per view.
                    hits.sort_unstable();
                    hits.dedup();
                    view = decode(&v.bytes, Some(&v.spans), only);
                }
            }
        }
        hits
    }

    /// Finds every form in `bytes` (a view mapped back through `spans`, if
    /// given), and, when a value is [`SHORT`], the values in each base64
    /// run of it, decoded.
    fn scan(&self, bytes: &[u8], spans: Option<&[Span]>, hits: &mut Vec<Hit>) {
        let original = |s: usize, e: usize| match spans {
            Some(sp) => (sp[s].0 as usize, sp[e - 1].1 as usize),
            None => (s, e),
        };
        self.scan_mapped(bytes, original, hits);
        if !self.short {
            return;
        }
        let mut decoded = Vec::new();
        for (start, end) in b64::runs(bytes) {
            for offset in 0..4 {
                let run = &bytes[start + offset..end];
                b64::decode_into(run, &mut decoded);
                self.scan_mapped(
                    &decoded,
                    |a, b| {
                        let (a, b) = b64::chars_of(a, b, run.len());
                        original(start + offset + a, start + offset + b)
                    },
                    hits,
                );
            }
        }
    }

    /// Finds every form in `bytes`, each hit's span mapped by `original`.
    fn scan_mapped(
        &self,
        bytes: &[u8],
        original: impl Fn(usize, usize) -> (usize, usize),
        hits: &mut Vec<Hit>,
    ) {
        for (m, names) in [
            (&self.exact, &self.exact_names),
            (&self.folded, &self.folded_names),
        ] {
            let Some(m) = m else { continue };
            for hit in m.find_overlapping_iter(bytes) {
                let (s, e) = original(hit.start(), hit.end());
                hits.push((s, e, names[hit.pattern().as_usize()]));
            }
        }
    }

    /// `bytes` with each found span replaced by its marker.
    fn replace(&self, bytes: &[u8], hits: &[Hit]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        let mut at = 0;
        for &(s, e, name) in hits {
            out.extend_from_slice(&bytes[at..s]);
            out.extend_from_slice(self.markers[name].as_bytes());
            at = e;
        }
        out.extend_from_slice(&bytes[at..]);
        out
    }

    /// Names of the secrets whose values (in any encoding) occur in `bytes`.
    pub fn names_in(&self, bytes: &[u8]) -> BTreeSet<String> {
        self.find_each(bytes, MAX_LAYERS)
            .into_iter()
            .map(|(_, _, n)| self.names[n].clone())
            .collect()
    }

    pub fn redact<'s>(&self, text: &'s str) -> Cow<'s, str> {
        let hits = self.find(text.as_bytes(), MAX_LAYERS);
        if hits.is_empty() {
            return Cow::Borrowed(text);
        }
        // Spans start and end on character boundaries (escapes are ASCII,
        // values are whole characters); lossy only if that ever fails.
        match String::from_utf8(self.replace(text.as_bytes(), &hits)) {
            Ok(s) => Cow::Owned(s),
            Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
        }
    }

    pub fn redact_bytes(&self, bytes: &[u8]) -> Vec<u8> {
        let hits = self.find(bytes, MAX_LAYERS);
        if hits.is_empty() {
            return bytes.to_vec();
        }
        self.replace(bytes, &hits)
    }

    /// `bytes` redacted, or `None` if no value is in it; adds the names
    /// of the values found to `found`.
    pub fn redact_found(&self, bytes: &[u8], found: &mut BTreeSet<String>) -> Option<Vec<u8>> {
        let each = self.find_each(bytes, MAX_LAYERS);
        if each.is_empty() {
            return None;
        }
        // Named from every hit: two values that overlap are both named.
        found.extend(
            each.iter()
                .map(|&(_, _, n)| shown_name(&self.names[n]).to_owned()),
        );
        Some(self.replace(bytes, &merged(each)))
    }

    /// `text` redacted, then cut to `max` bytes with its length stated, as
    /// [`crate::policy::gate::cut`] shows a long string: cut first, a value
    /// across the cut would keep its first bytes, no longer whole enough to
    /// be found. (Its first [`REDACT_WITHIN`] bytes are redacted.)
    pub(crate) fn redact_cut(&self, text: &str, max: usize) -> String {
        self.redact_cut_of(text, max, text.len())
    }

    /// [`Redactor::redact_cut`] of `text`, the start of something `len`
    /// bytes long.
    pub(crate) fn redact_cut_of(&self, text: &str, max: usize, len: usize) -> String {
        if text.len() <= max && len == text.len() {
            return self.redact(text).into_owned();
        }
        let head = self.redact(&text[..text.floor_char_boundary(REDACT_WITHIN)]);
        let end = head.floor_char_boundary(max);
        format!("{}…[{len} bytes]", &head[..end])
    }

    pub fn redact_string(&self, text: String) -> String {
        match self.redact(&text) {
            Cow::Borrowed(_) => text,
            Cow::Owned(s) => s,
        }
    }

    /// Redacts a JSON text by what it means, not how it is spelled: every
    /// string and object key is decoded, redacted (with its own escapes
    /// decoded again) and encoded again, and a number whose digits hold a
    /// value becomes the marker, as a string. The text is returned
    /// unchanged when nothing in it holds a value. Text that is not JSON is
    /// redacted as text. If a value is still found in the re-encoded text
    /// (it spans JSON tokens), the whole text becomes the marker, as a
    /// JSON string.
    pub fn redact_json<'s>(&self, text: &'s str) -> Cow<'s, str> {
        // One more layer than a string gets: its own JSON escapes.
        let hits = self.find(text.as_bytes(), MAX_LAYERS + 1);
        // A number holding a value becomes the marker, as a string, read
        // from the text (`numbers`). One with a fraction or an exponent
        // holds digits its text does not hold together (`1.2345678e7` is
        // 12345678), which any parser gives back (the client's, or
        // Warden's own, for MCP's `structuredContent`).
        let mut numbers: Vec<Hit> = Vec::new();
        if !self.is_empty() && (!hits.is_empty() || spelled_numbers(text)) {
            // A run of zeros longer than a value's hex form holds no more
            // values than that.
            let zeros = 2 * self.longest + 1;
            let found = |digits: &str| Some(self.find(digits.as_bytes(), 0).first()?.2);
            numbers::each_holding(text.as_bytes(), zeros, found, |s, e, name| {
                numbers.push((s, e, name));
            });
        }
        let first = match (hits.first(), numbers.first()) {
            (Some(&(_, _, name)), _) | (None, Some(&(_, _, name))) => name,
            (None, None) => return Cow::Borrowed(text),
        };
        let text = self.replace_numbers(text, &numbers);
        if hits.is_empty() {
            return Cow::Owned(text);
        }
        let Ok(mut value) = serde_json::from_str::<serde_json::Value>(&text) else {
            // Not JSON serde reads whole (over 128 levels deep, a lone
            // surrogate): redacted as text, with as many layers.
            let hits = self.find(text.as_bytes(), MAX_LAYERS + 1);
            let out = self.replace(text.as_bytes(), &hits);
            return Cow::Owned(String::from_utf8_lossy(&out).into_owned());
        };
        self.redact_strings(&mut value);
        let out = serde_json::to_string(&value).unwrap_or_default();
        if self.find(out.as_bytes(), MAX_LAYERS + 1).is_empty() && !out.is_empty() {
            return Cow::Owned(out);
        }
        let marker = serde_json::Value::String(self.markers[first].clone());
        Cow::Owned(marker.to_string())
    }

    /// `text` with each of `numbers` (spans of number tokens) replaced by
    /// its marker as a JSON string.
    fn replace_numbers(&self, text: &str, numbers: &[Hit]) -> String {
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for &(s, e, name) in numbers {
            out.push_str(&text[at..s]);
            out.push_str(&serde_json::Value::String(self.markers[name].clone()).to_string());
            at = e;
        }
        out.push_str(&text[at..]);
        out
    }

    pub fn redact_json_string(&self, text: String) -> String {
        match self.redact_json(&text) {
            Cow::Borrowed(_) => text,
            Cow::Owned(s) => s,
        }
    }

    /// Redacts the strings and object keys of `value` in place.
    fn redact_strings(&self, value: &mut serde_json::Value) {
        use serde_json::Value;
        match value {
            Value::String(s) => {
                if let Cow::Owned(r) = self.redact(s) {
                    *s = r;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_strings(v)),
            Value::Object(map) => {
                for (k, mut v) in std::mem::take(map) {
                    self.redact_strings(&mut v);
                    map.insert(self.redact(&k).into_owned(), v);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
}

/// `hits` sorted, and merged where they overlap (the first one's name).
fn merged(mut hits: Vec<Hit>) -> Vec<Hit> {
    if hits.len() < 2 {
        return hits;
    }
    hits.sort_unstable();
    let mut merged: Vec<Hit> = Vec::with_capacity(hits.len());
    for h in hits {
        match merged.last_mut() {
            Some(last) if h.0 < last.1 => last.1 = last.1.max(h.1),
            _ => merged.push(h),
        }
    }
    merged
}

/// Whether `text` may hold a JSON number written with a fraction or an
/// exponent (a digit followed by `.`, `e` or `E`, in a string or not), or
/// an integer of more digits than an `f64` keeps (16 in a row).
fn spelled_numbers(text: &str) -> bool {
    let mut run = 0;
    text.as_bytes().windows(2).any(|w| {
        run = if w[0].is_ascii_digit() { run + 1 } else { 0 };
        // A fraction or an exponent, or more digits than an f64 keeps.
        run > 0 && matches!(w[1], b'.' | b'e' | b'E') || run >= 16
    })
}

#[cfg(test)]
#[path = "redact_tests.rs"]
mod tests;
