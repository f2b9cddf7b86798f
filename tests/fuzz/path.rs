//! The fs path check (`caps::fs::path::check`) and the fs decision
//! (`caps::fs::check::decide`) on arbitrary paths: no accepted path leaves
//! its handle (after normalization it has no `..` component and is not
//! absolute), the check agrees with an independent statement of the rule,
//! and the decision never allows a path the check refused.

use crate::check;
use crate::corpus;
use proptest::prelude::*;
use std::path::{Component, Path};
use std::sync::Arc;
use warden::Rights;
use warden::caps::fs::check::{FsRequest, decide};
use warden::caps::fs::path::{PathError, check};

const DICT: &[&str] = &[
    "a", "b", "src", "..", ".", "...", "/", "//", "\\", "\0", " ", "~", "C:", "%2e%2e", "%2f",
    "\u{2215}", // division slash
    "\u{ff0e}", // fullwidth full stop
    "\u{2024}", // one dot leader
    "\u{200b}", "é", "日本", "\n", "\r", "\t", ":", "*", "?",
];

const ACTIONS: &[&str] = &[
    "read",
    "write",
    "list",
    "stat",
    "create-dir",
    "remove-file",
    "remove-dir",
    "rename",
];

/// The rule, stated independently of the implementation.
fn inside(p: &str) -> bool {
    if p == "." {
        return true;
    }
    !p.is_empty()
        && !p.chars().any(char::is_control)
        && !p.contains('\\')
        && !p.starts_with('/')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

fn rights(bits: u8) -> Rights {
    let mut r = Rights::NONE;
    for (i, one) in [Rights::READ, Rights::WRITE, Rights::DELETE]
        .into_iter()
        .enumerate()
    {
        if bits & (1 << i) != 0 {
            r = r | one;
        }
    }
    r
}

fn property(p: &str, action: usize, held: u8, needs: u8) -> Result<(), TestCaseError> {
    let checked = check(p);
    check!(
        checked.is_ok() == inside(p),
        "check({p:?}) = {checked:?}, the rule says {}",
        inside(p)
    );
    match checked {
        Ok(c) => {
            check!(c.as_str() == p, "check({p:?}) changed the path");
            check!(c.is_root() == (p == "."), "check({p:?}): wrong root");
            let path = Path::new(p);
            check!(
                !path.is_absolute(),
                "check({p:?}) accepted an absolute path"
            );
            let mut depth = 0usize;
            for comp in path.components() {
                match comp {
                    Component::Normal(_) => depth += 1,
                    Component::CurDir if p == "." => {}
                    other => {
                        return Err(TestCaseError::fail(format!(
                            "check({p:?}) accepted a path with component {other:?}"
                        )));
                    }
                }
            }
            check!(depth > 0 || p == ".", "check({p:?}): no component");
        }
        Err(e) => {
            check!(
                e.is_escape() == !matches!(e, PathError::Empty | PathError::Control(_)),
                "check({p:?}): {e:?} escape flag"
            );
            check!(!e.to_string().is_empty(), "check({p:?}): empty message");
        }
    }
    let paths = [checked];
    let action = ACTIONS[action % ACTIONS.len()];
    let d = decide(&FsRequest {
        handle: "workspace",
        action,
        paths: &paths,
        held: rights(held),
        needs: rights(needs),
        bytes: 0,
        limit: 1 << 20,
    });
    if d.allow {
        let ok = matches!(&paths[0], Ok(c) if !(c.is_root()
            && matches!(action, "remove-file" | "remove-dir" | "rename")));
        check!(ok, "decide allowed {action} of {p:?}: {}", d.reason);
    }
    Ok(())
}

pub fn run() {
    let lines: Vec<Vec<u8>> = corpus::seeds("path")
        .iter()
        .flat_map(|f| f.split(|b| *b == b'\n').map(<[u8]>::to_vec))
        .filter(|l| !l.is_empty())
        .collect();
    let seeds = Arc::new(lines);
    let paths = prop_oneof![
        3 => corpus::mutated(seeds, DICT).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        3 => corpus::tokens(DICT, 12),
        1 => any::<String>(),
    ];
    let inputs = (paths, any::<usize>(), 0u8..8, 0u8..8);
    crate::fuzz("path", 5.0, inputs, |(p, action, held, needs)| {
        property(&p, action, held, needs)
    });
}
