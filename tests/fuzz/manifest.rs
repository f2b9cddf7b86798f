//! `Manifest::parse` on arbitrary TOML-ish text and on mutations of real
//! manifests: it never panics; every problem says where (a line and column,
//! a field, or the policy file it is in), and what it accepts is in range.

use crate::check;
use crate::corpus;
use proptest::prelude::*;
use std::path::{Path, PathBuf};
use warden::Manifest;
use warden::manifest::{MAX_MEMORY, MAX_OUTPUT, MAX_TIMEOUT};

const DICT: &[&str] = &[
    "[tools.",
    "[[tools.",
    "]\n",
    "]]\n",
    "\n",
    " = ",
    "\"",
    "'",
    "'''",
    "\"\"\"",
    "[",
    "]",
    "{",
    "}",
    ",",
    ".",
    "#",
    "\\u0000",
    "\\",
    "component",
    "\"t.wasm\"",
    "identity",
    "\"sha256:",
    "timeout",
    "\"10s\"",
    "\"0s\"",
    "\"99999999999999h\"",
    "memory",
    "\"64MiB\"",
    "\"18446744073709551615B\"",
    "max-output",
    "fs",
    "handle",
    "within",
    "\"ws\"",
    "\"..\"",
    "\"/\"",
    "rights",
    "[\"read\", \"write\", \"delete\"]",
    "approval",
    "\"required\"",
    "labels",
    "http",
    "scheme",
    "host",
    "port",
    "65536",
    "-1",
    "1e400",
    "methods",
    "path-prefixes",
    "addresses",
    "secrets",
    "source",
    "\"env:X\"",
    "\"file:ws\"",
    "\"exec:true\"",
    "ttl",
    "reveal",
    "true",
    "send-to",
    "deploy",
    "backend",
    "program",
    "url",
    "token-audiences",
    "token-send-to",
    "policies",
    "[\"policies\"]",
    "\u{feff}",
    "\u{10ffff}",
    "é",
];

/// A base directory the seeds resolve against: `t.wasm` (a file),
/// `ws/` (a directory) and `policies/` (the example Cedar policies).
fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("t.wasm"), b"").expect("t.wasm");
    std::fs::create_dir(dir.path().join("ws")).expect("ws");
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).expect("policies");
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/policies");
    for e in std::fs::read_dir(examples).expect("examples/policies") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), policies.join(e.file_name())).expect("copy");
    }
    dir
}

fn property(text: &str, base: &Path) -> Result<(), TestCaseError> {
    let lines = text.lines().count() + 1;
    match Manifest::parse(text, Path::new("fuzz.toml"), base) {
        Ok(m) => {
            check!(!m.tools.is_empty(), "a manifest without tools was accepted");
            for (name, t) in &m.tools {
                check!(name == &t.name, "tool {name} is stored as {}", t.name);
                let valid = !name.is_empty()
                    && name.len() <= 64
                    && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && name.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
                    });
                check!(valid, "invalid tool name {name:?} accepted");
                let l = t.limits;
                check!(
                    !l.timeout.is_zero() && l.timeout <= MAX_TIMEOUT,
                    "tool {name}: timeout {:?} out of range",
                    l.timeout
                );
                check!(
                    (1 << 20..=MAX_MEMORY).contains(&l.memory),
                    "tool {name}: memory {} out of range",
                    l.memory
                );
                check!(
                    l.max_output > 0 && l.max_output <= MAX_OUTPUT,
                    "tool {name}: max-output {} out of range",
                    l.max_output
                );
                check!(
                    t.component.is_file(),
                    "tool {name}: component {} is not a file",
                    t.component.display()
                );
                for c in &t.fs {
                    check!(
                        c.within.is_absolute(),
                        "tool {name}: fs ceiling {} is not absolute",
                        c.within.display()
                    );
                }
            }
        }
        Err(e) => {
            check!(!e.problems.is_empty(), "an error without problems");
            for p in &e.problems {
                check!(!p.message.trim().is_empty(), "a problem without a message");
                let placed = (p.line >= 1 && p.column >= 1)
                    || !p.field.is_empty()
                    || p.file.is_some()
                    || p.message.starts_with("no tools");
                check!(
                    placed,
                    "a problem with no line, field or file: {:?} in {text:?}",
                    p.message
                );
                if p.file.is_none() {
                    check!(
                        p.line <= lines,
                        "problem at line {} of a {lines}-line text: {}",
                        p.line,
                        p.message
                    );
                }
            }
            check!(!e.to_string().is_empty(), "an empty error message");
        }
    }
    Ok(())
}

pub fn run() {
    let base = fixture();
    let seeds = corpus::seeds("manifest");
    let inputs = prop_oneof![
        4 => corpus::mutated(seeds, DICT),
        2 => corpus::tokens(DICT, 48).prop_map(String::into_bytes),
        1 => corpus::bytes(256),
    ];
    crate::fuzz("manifest", 1.0, inputs, |bytes| {
        property(&String::from_utf8_lossy(&bytes), base.path())
    });
}
