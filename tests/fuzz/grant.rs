//! Grants on arbitrary strings: each line of an input through
//! `Grant::add_cli` (`fs:`, `secret:`, `http:`, `deploy:` specs), the whole
//! input as a grant file through `Grant::load`. Neither panics; what either
//! accepts is well formed (names follow the name rule, rights are not
//! empty, a task id is 1 to 128 printable characters).

use crate::check;
use crate::corpus;
use proptest::prelude::*;
use std::path::Path;
use warden::Grant;

const DICT: &[&str] = &[
    "fs:",
    "secret:",
    "http:",
    "deploy:",
    "=",
    ":",
    ",",
    "read",
    "write",
    "delete",
    "read,write,delete",
    "workspace",
    "/src/repo",
    "./",
    "..",
    "https://",
    "http://",
    "api.example.com",
    "127.0.0.1:8080",
    "[::1]",
    "/v1/",
    "?q=1",
    "#frag",
    "GET,POST",
    "task = ",
    "\"",
    "\n",
    "[fs.",
    "]\n",
    "[[http]]\n",
    "path = ",
    "rights = ",
    "[\"read\"]",
    "secrets = ",
    "labels = ",
    "deploy = ",
    "url = ",
    "methods = ",
    "\u{0}",
    "\u{1b}",
    "é",
    "\u{10ffff}",
];

fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn well_formed(g: &Grant, how: &str) -> Result<(), TestCaseError> {
    for (handle, fs) in &g.fs {
        check!(is_name(handle), "{how}: handle {handle:?} accepted");
        check!(
            !fs.rights.is_empty(),
            "{how}: handle {handle} without rights"
        );
        check!(
            !fs.path.as_os_str().is_empty(),
            "{how}: handle {handle} without a path"
        );
    }
    for name in g.secrets.iter().chain(&g.deploy).chain(&g.labels) {
        check!(is_name(name), "{how}: name {name:?} accepted");
    }
    for h in &g.http {
        // The WHATWG parser is lenient (`https:,//host/` is host ","), so
        // the rule is the parse, not the spelling.
        let parsed = url::Url::parse(&h.url).ok();
        check!(
            parsed.is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some()),
            "{how}: http grant {:?} accepted",
            h.url
        );
    }
    Ok(())
}

fn property(text: &str, file: &Path) -> Result<(), TestCaseError> {
    let mut g = Grant::new("fuzz");
    for line in text.lines() {
        let before = g.clone();
        match g.add_cli(line) {
            Ok(()) => well_formed(&g, &format!("add_cli({line:?})"))?,
            Err(e) => {
                check!(!e.to_string().is_empty(), "add_cli({line:?}): empty error");
                check!(
                    g == before,
                    "add_cli({line:?}) failed but changed the grant"
                );
            }
        }
    }
    std::fs::write(file, text).map_err(|e| TestCaseError::fail(e.to_string()))?;
    match Grant::load(file) {
        Ok(g) => {
            let task_ok = !g.task.is_empty()
                && g.task.len() <= 128
                && !g.task.chars().any(warden::redact::hidden);
            check!(task_ok, "load: task {:?} accepted", g.task);
            well_formed(&g, "load")?;
        }
        Err(e) => check!(!e.to_string().is_empty(), "load: empty error"),
    }
    Ok(())
}

pub fn run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("grant.toml");
    let seeds = corpus::seeds("grant");
    let inputs = prop_oneof![
        4 => corpus::mutated(seeds, DICT),
        2 => corpus::tokens(DICT, 24).prop_map(String::into_bytes),
        1 => corpus::bytes(128),
    ];
    crate::fuzz("grant", 1.0, inputs, |bytes| {
        property(&String::from_utf8_lossy(&bytes), &file)
    });
}
