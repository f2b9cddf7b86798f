//! What `warden --version` reports: the CLI's version, the WIT package its
//! tools are built against and the wasmtime that runs them — the last two
//! read from `wit/tool.wit` and `Cargo.lock` when the CLI is compiled, so
//! they cannot drift from what was built (a file without them fails the
//! build).

use std::sync::LazyLock;

/// The WIT package tools are built against, e.g. `warden:tool@0.1.0`.
pub const WIT_PACKAGE: &str = after(
    include_str!("../../../../wit/tool.wit"),
    b"\npackage ",
    b';',
    "wit/tool.wit declares no `package NAMESPACE:NAME@VERSION;`",
);

/// The wasmtime version locked in `Cargo.lock`.
pub const WASMTIME: &str = after(
    include_str!("../../../../Cargo.lock"),
    b"\nname = \"wasmtime\"\nversion = \"",
    b'"',
    "Cargo.lock locks no wasmtime version",
);

/// `--version`'s text after `warden `.
pub static VERSION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} (WIT {WIT_PACKAGE}, wasmtime {WASMTIME})",
        env!("CARGO_PKG_VERSION")
    )
});

/// The text in `haystack` after the first `needle` and before the next
/// `end`, at compile time (a missing one is a compile error, `missing`).
/// A `needle` starting with a newline also matches at the very start.
const fn after(haystack: &'static str, needle: &[u8], end: u8, missing: &str) -> &'static str {
    let bytes = haystack.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if let Some(start) = match_end(bytes, i, needle) {
            let mut j = start;
            while j < bytes.len() && bytes[j] != end && bytes[j] != b'\n' {
                j += 1;
            }
            if j == bytes.len() || bytes[j] != end || j == start {
                break;
            }
            let (_, rest) = bytes.split_at(start);
            let (found, _) = rest.split_at(j - start);
            return match core::str::from_utf8(found) {
                Ok(s) => s,
                Err(_) => panic!("{}", missing),
            };
        }
        i += 1;
    }
    panic!("{}", missing)
}

/// Where `needle` ends if it is at `i` (a leading newline also matches at
/// the very start).
const fn match_end(bytes: &[u8], i: usize, needle: &[u8]) -> Option<usize> {
    let (needle, at) = if i == 0 && !needle.is_empty() && needle[0] == b'\n' {
        (needle.split_at(1).1, 0)
    } else {
        (needle, i)
    };
    if at + needle.len() > bytes.len() {
        return None;
    }
    let mut k = 0;
    while k < needle.len() {
        if bytes[at + k] != needle[k] {
            return None;
        }
        k += 1;
    }
    Some(at + needle.len())
}
