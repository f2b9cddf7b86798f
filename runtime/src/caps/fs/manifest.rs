//! The fs section of a tool's manifest entry: `[[tools.NAME.fs]]`, the most
//! a grant may give for one handle.

use crate::diag::{Checker, check_name};
use crate::rights::{Right, Rights};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// The most a grant may give for one fs handle.
#[derive(Debug, Clone)]
pub struct FsCeiling {
    pub handle: String,
    /// Canonical directory; a granted directory must be this or inside it.
    pub within: PathBuf,
    pub rights: Rights,
    /// Rights whose use waits for an approver (`approval = "required"` or a
    /// list of rights).
    pub approval: Rights,
    /// Sensitivity labels, for runtime policy.
    pub labels: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFsCeiling {
    handle: Spanned<String>,
    within: Spanned<String>,
    rights: Spanned<Vec<Spanned<String>>>,
    approval: Option<Spanned<toml::Value>>,
    labels: Option<Spanned<Vec<String>>>,
}

/// Validates `tools.{tool}.fs[{i}]`; `within` is resolved against `base`
/// and canonicalized, and `seen` are the ceilings already accepted.
pub(crate) fn section(
    c: &mut Checker<'_>,
    tool: &str,
    i: usize,
    raw: RawFsCeiling,
    base: &Path,
    seen: &[FsCeiling],
) -> Option<FsCeiling> {
    let f = |k: &str| format!("tools.{tool}.fs[{i}].{k}");
    let handle = raw.handle.get_ref().clone();
    if let Err(e) = check_name(&handle) {
        c.problem(
            raw.handle.span(),
            f("handle"),
            format!("invalid handle name: {e}"),
        );
    } else if seen.iter().any(|other| other.handle == handle) {
        c.problem(
            raw.handle.span(),
            f("handle"),
            format!("handle '{handle}' is listed twice (expected one fs entry per handle)"),
        );
    }
    let within = base.join(raw.within.get_ref());
    let within = match within.canonicalize() {
        Ok(p) if p.is_dir() => Some(p),
        Ok(p) => {
            c.problem(
                raw.within.span(),
                f("within"),
                format!("'{}' is not a directory", p.display()),
            );
            None
        }
        Err(e) => {
            c.problem(
                raw.within.span(),
                f("within"),
                format!(
                    "directory '{}' cannot be opened: {e} (expected an existing directory, relative to the manifest)",
                    within.display()
                ),
            );
            None
        }
    };
    let mut rights = Rights::NONE;
    for r in raw.rights.get_ref() {
        match r.get_ref().parse::<Right>() {
            Ok(r) => rights = rights | r.into(),
            Err(e) => c.problem(r.span(), f("rights"), e),
        }
    }
    if raw.rights.get_ref().is_empty() {
        c.problem(
            raw.rights.span(),
            f("rights"),
            "no rights (expected a list such as [\"read\"])".into(),
        );
    }
    let approval = match raw.approval {
        None => Rights::NONE,
        Some(a) => match a.get_ref() {
            toml::Value::String(s) if s == "required" => rights,
            toml::Value::Array(items) => {
                let parsed: Result<Rights, String> = items
                    .iter()
                    .map(|v| v.as_str().unwrap_or("").parse::<Right>())
                    .collect();
                match parsed {
                    Ok(r) => r,
                    Err(e) => {
                        c.problem(a.span(), f("approval"), e);
                        Rights::NONE
                    }
                }
            }
            _ => {
                c.problem(
                    a.span(),
                    f("approval"),
                    "expected approval = \"required\" or a list of rights such as [\"write\"]"
                        .into(),
                );
                Rights::NONE
            }
        },
    };
    let labels = c.labels(raw.labels, f("labels"));
    Some(FsCeiling {
        handle,
        within: within?,
        rights,
        approval,
        labels,
    })
}
