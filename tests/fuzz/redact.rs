//! The redactor on random secrets (8 to 64 characters) in random text: for
//! every encoding in [`ENCODINGS`], the secret encoded together with random
//! neighbouring bytes (so base64 starts at any alignment) and placed at a
//! random offset in random text is
//!
//! - detected: `names_in` names the secret (what egress refuses on), and
//! - redacted: nothing a reader could decode from `redact`'s output (plain
//!   text, hex runs at either nibble offset, base64 runs in either alphabet
//!   at any offset, percent escapes, JSON escapes) contains the secret;
//!   `redact_bytes` agrees with `redact`.
//!
//! Adding an encoding the redactor learns is one line in [`ENCODINGS`];
//! [`PENDING`] holds encodings not yet supported on main, whose misses are
//! counted and printed but do not fail the run.

use crate::check;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use proptest::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use warden::redact::Redactor;

/// A secret as a tool could emit it: encoded together with the bytes
/// before and after it.
#[derive(Debug, Clone)]
pub struct Leak {
    pub secret: String,
    pub before: String,
    pub after: String,
}

impl Leak {
    fn framed(&self) -> String {
        format!("{}{}{}", self.before, self.secret, self.after)
    }
}

/// One encoding: a name and how a tool would produce it.
pub struct Encoding {
    pub name: &'static str,
    pub encode: fn(&Leak) -> String,
}

/// The encodings the redactor supports on main (`redact::encodings`).
pub const ENCODINGS: &[Encoding] = &[
    Encoding {
        name: "plain",
        encode: |l| l.framed(),
    },
    Encoding {
        name: "hex",
        encode: |l| hex::encode(l.framed()),
    },
    Encoding {
        name: "HEX",
        encode: |l| hex::encode_upper(l.framed()),
    },
    Encoding {
        name: "json-escaped",
        encode: |l| json_escaped(&l.framed()),
    },
    Encoding {
        name: "percent-unreserved",
        encode: |l| percent(&l.framed(), unreserved, true),
    },
    Encoding {
        name: "percent-unreserved-lower",
        encode: |l| percent(&l.framed(), unreserved, false),
    },
    Encoding {
        name: "percent-alnum",
        encode: |l| percent(&l.framed(), alnum, true),
    },
    Encoding {
        name: "percent-alnum-lower",
        encode: |l| percent(&l.framed(), alnum, false),
    },
    Encoding {
        name: "base64",
        encode: |l| STANDARD.encode(l.framed()),
    },
    Encoding {
        name: "base64-unpadded",
        encode: |l| STANDARD_NO_PAD.encode(l.framed()),
    },
    Encoding {
        name: "base64url",
        encode: |l| URL_SAFE.encode(l.framed()),
    },
    Encoding {
        name: "base64url-unpadded",
        encode: |l| URL_SAFE_NO_PAD.encode(l.framed()),
    },
    // Decoded by the redactor before matching (issue #11, item 6/7).
    Encoding {
        name: "json-\\u-every-char",
        encode: |l| json_u_escaped(&l.framed()),
    },
    Encoding {
        name: "percent-every-byte",
        encode: |l| percent(&l.framed(), |_| false, true),
    },
    Encoding {
        name: "percent-every-byte-lower",
        encode: |l| percent(&l.framed(), |_| false, false),
    },
    // New encodings plug in here, one line each, once the redactor learns
    // them: move a line from PENDING.
];

/// Encodings a tool can emit that the redactor does not handle yet: their
/// misses are reported, not failed. (Empty: JSON `\u` escapes and
/// percent-encoding of every byte moved to [`ENCODINGS`] when the redactor
/// learned to decode them, issue #11.)
pub const PENDING: &[Encoding] = &[];

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

fn percent(s: &str, keep: fn(u8) -> bool, upper: bool) -> String {
    s.bytes()
        .map(|b| match (keep(b), upper) {
            (true, _) => (b as char).to_string(),
            (false, true) => format!("%{b:02X}"),
            (false, false) => format!("%{b:02x}"),
        })
        .collect()
}

fn json_escaped(s: &str) -> String {
    let j = serde_json::to_string(s).unwrap_or_default();
    j[1..j.len() - 1].to_owned()
}

fn json_u_escaped(s: &str) -> String {
    s.encode_utf16().map(|u| format!("\\u{u:04x}")).collect()
}

/// Every byte string a reader could decode from `out`.
fn recoverable(out: &str) -> Vec<Vec<u8>> {
    let mut found = vec![out.as_bytes().to_vec(), percent_decode(out)];
    found.push(json_unescape(out));
    found.push(json_unescape(&String::from_utf8_lossy(&percent_decode(
        out,
    ))));
    for run in runs(out, |c| c.is_ascii_hexdigit()) {
        for offset in 0..2 {
            let pairs = run.as_bytes()[offset.min(run.len())..].chunks_exact(2);
            found.push(
                pairs
                    .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap_or("00"), 16))
                    .map(|b| b.unwrap_or(0))
                    .collect(),
            );
        }
    }
    let b64 = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '-' | '_');
    for run in runs(out, b64) {
        for offset in 0..4 {
            found.push(base64_lenient(&run[offset.min(run.len())..]));
        }
    }
    found
}

/// Maximal runs of characters `keep` accepts.
fn runs(s: &str, keep: impl Fn(char) -> bool) -> Vec<&str> {
    s.split(|c| !keep(c)).filter(|r| !r.is_empty()).collect()
}

/// Base64 in either alphabet, whole groups only, no padding needed.
fn base64_lenient(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' | b'-' => 62,
            _ => 63,
        }
    };
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3 + 2);
    for group in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in group.iter().enumerate() {
            n |= val(*c) << (18 - 6 * i);
        }
        let take = match group.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => 0,
        };
        out.extend_from_slice(&n.to_be_bytes()[1..1 + take]);
    }
    out
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let escaped = (b[i] == b'%' && i + 3 <= b.len())
            .then(|| std::str::from_utf8(&b[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        if let Some(v) = escaped {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// JSON string escapes undone where they parse; other text kept.
fn json_unescape(s: &str) -> Vec<u8> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    let mut pending_high: Option<u16> = None;
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                match u16::from_str_radix(&hex, 16) {
                    Ok(u) if (0xd800..0xdc00).contains(&u) => pending_high = Some(u),
                    Ok(u) => {
                        let units: Vec<u16> = pending_high.take().into_iter().chain([u]).collect();
                        out.extend(char::decode_utf16(units).map(|r| r.unwrap_or('\u{fffd}')));
                    }
                    Err(_) => {
                        out.push_str("\\u");
                        out.push_str(&hex);
                    }
                }
            }
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out.into_bytes()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Whether `redactor` redacts `leak` encoded by `e` inside `prefix` and
/// `suffix`: `None` if it does, else what is wrong.
fn redacts(r: &Redactor, e: &Encoding, leak: &Leak, prefix: &str, suffix: &str) -> Option<String> {
    let text = format!("{prefix}{}{suffix}", (e.encode)(leak));
    if !r.names_in(text.as_bytes()).contains("api") {
        return Some(format!("{}: not detected in {text:?}", e.name));
    }
    let out = r.redact(&text);
    let secret = leak.secret.as_bytes();
    if recoverable(&out).iter().any(|b| contains(b, secret)) {
        return Some(format!("{}: recoverable from {out:?}", e.name));
    }
    if r.redact_bytes(text.as_bytes()) != out.as_bytes() {
        return Some(format!("{}: redact_bytes differs from redact", e.name));
    }
    None
}

fn secret() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[!-~]{8,64}",
        2 => "[A-Za-z0-9_-]{8,64}",
        1 => "\\PC{8,64}",
        1 => proptest::collection::vec(any::<char>(), 8..64).prop_map(|v| v.into_iter().collect()),
    ]
}

fn around() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[ -~]{0,40}",
        1 => "\\PC{0,40}",
        1 => any::<String>(),
    ]
}

pub fn run() {
    let misses: Vec<AtomicU64> = PENDING.iter().map(|_| AtomicU64::new(0)).collect();
    let tries = AtomicU64::new(0);
    let inputs = (
        secret(),
        "[ -~]{0,5}",
        "[ -~]{0,5}",
        around(),
        around(),
        proptest::collection::vec("[!-~]{8,32}", 0..3),
    );
    crate::fuzz(
        "redact",
        1.0,
        inputs,
        |(secret, before, after, prefix, suffix, others)| {
            let mut secrets = vec![("api", secret.as_str())];
            let names: Vec<String> = (0..others.len()).map(|i| format!("other{i}")).collect();
            secrets.extend(
                names
                    .iter()
                    .map(String::as_str)
                    .zip(others.iter().map(String::as_str)),
            );
            let r = Redactor::new(secrets);
            let leak = Leak {
                secret,
                before,
                after,
            };
            for e in ENCODINGS {
                if let Some(problem) = redacts(&r, e, &leak, &prefix, &suffix) {
                    check!(false, "{problem}");
                }
            }
            tries.fetch_add(1, Ordering::Relaxed);
            for (e, miss) in PENDING.iter().zip(&misses) {
                if redacts(&r, e, &leak, &prefix, &suffix).is_some() {
                    miss.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
        },
    );
    let tries = tries.load(Ordering::Relaxed);
    for (e, miss) in PENDING.iter().zip(&misses) {
        eprintln!(
            "fuzz redact: pending encoding {}: {} of {tries} leaks not redacted (not yet supported on main)",
            e.name,
            miss.load(Ordering::Relaxed)
        );
    }
}

/// The redactor's throughput on tool-like output (JSON with escapes, some
/// percent-encoding, no secret in it, and with one): a measurement, not a
/// check. `cargo test --release --test fuzz redact_throughput -- --ignored
/// --nocapture`.
#[test]
#[ignore = "a measurement"]
fn redact_throughput() {
    let r = Redactor::new([
        ("api", "sk-live-4f9a8b7c6d5e4f3a2b1c"),
        ("db", "p@ss w0rd\\\"quoted\""),
        ("pin", "90210417"),
        ("hook", "https://hooks.example/T0/B1/xyz"),
    ]);
    let mut line = String::new();
    for i in 0..64 {
        line.push_str(&format!(
            r#"{{"i":{i},"path":"/srv/data/file-{i}.txt","text":"line \"{i}\" of a tool's output\n\u00e9t\u00e9 %20 q=a%26b","ok":true}},"#
        ));
    }
    let clean = line.repeat(16); // ~100 KiB
    let dirty = format!("{clean}sk-live-4f9a8b7c6d5e4f3a2b1c");
    for (label, text) in [("clean", &clean), ("one secret", &dirty)] {
        let started = std::time::Instant::now();
        let mut n = 0usize;
        while started.elapsed() < std::time::Duration::from_secs(2) {
            n += r.redact(text).len();
        }
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "redact throughput ({label}): {:.1} MB/s over {} KiB texts",
            n as f64 / secs / 1e6,
            text.len() / 1024
        );
    }
    let started = std::time::Instant::now();
    let mut built = 0;
    while started.elapsed() < std::time::Duration::from_secs(1) {
        built += usize::from(!Redactor::new([("api", "sk-live-4f9a8b7c6d5e4f3a2b1c")]).is_empty());
    }
    eprintln!(
        "redact throughput: {:.1} µs per Redactor::new (one secret)",
        started.elapsed().as_secs_f64() * 1e6 / built as f64
    );
}
