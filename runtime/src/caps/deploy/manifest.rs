//! The deploy section of a tool's manifest entry: `[[tools.NAME.deploy]]`,
//! one target the tool may deploy to.

use super::{Backend, DEFAULT_TIMEOUT, DeployTarget};
use crate::diag::{Checker, check_name};
use crate::net;
use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDeploy {
    name: Spanned<String>,
    rights: Spanned<Vec<String>>,
    backend: Spanned<String>,
    program: Option<Spanned<String>>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
    url: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    approval: Option<Spanned<String>>,
    labels: Option<Spanned<Vec<String>>>,
}

/// Validates `tools.{tool}.deploy[{i}]`; `seen` are the targets already
/// accepted.
pub(crate) fn section(
    c: &mut Checker<'_>,
    tool: &str,
    i: usize,
    raw: RawDeploy,
    seen: &[DeployTarget],
) -> Option<DeployTarget> {
    let before = c.count();
    let f = |k: &str| format!("tools.{tool}.deploy[{i}].{k}");
    let name = raw.name.get_ref().clone();
    if let Err(e) = check_name(&name) {
        c.problem(
            raw.name.span(),
            f("name"),
            format!("invalid target name: {e}"),
        );
    } else if seen.iter().any(|t| t.name == name) {
        c.problem(
            raw.name.span(),
            f("name"),
            format!("target '{name}' is listed twice"),
        );
    }
    if raw.rights.get_ref().as_slice() != ["deploy"] {
        c.problem(
            raw.rights.span(),
            f("rights"),
            "a deploy target takes exactly the deploy right (expected rights = [\"deploy\"])"
                .into(),
        );
    }
    let timeout = match &raw.timeout {
        Some(t) => c
            .duration(t, f("timeout"), "timeout")
            .unwrap_or(DEFAULT_TIMEOUT),
        None => DEFAULT_TIMEOUT,
    };
    let backend = match (raw.backend.get_ref().as_str(), raw.program, raw.url) {
        ("exec", Some(program), None) => Some(Backend::Exec {
            program: program.into_inner(),
            args: raw.args,
            env: raw.env,
        }),
        ("webhook", None, Some(url)) => match net::parse_url(url.get_ref()) {
            Ok(_) => Some(Backend::Webhook {
                url: url.into_inner(),
            }),
            Err(e) => {
                c.problem(url.span(), f("url"), e);
                None
            }
        },
        ("exec", _, _) => {
            c.problem(
                raw.backend.span(),
                f("backend"),
                "an exec target needs `program` (and no `url`)".into(),
            );
            None
        }
        ("webhook", _, _) => {
            c.problem(
                raw.backend.span(),
                f("backend"),
                "a webhook target needs `url` (and no `program`)".into(),
            );
            None
        }
        (other, _, _) => {
            c.problem(
                raw.backend.span(),
                f("backend"),
                format!("unknown backend '{other}' (expected exec or webhook)"),
            );
            None
        }
    };
    let approval = c.required(raw.approval, f("approval"));
    let labels = c.labels(raw.labels, f("labels"));
    let backend = backend?;
    (c.count() == before).then_some(DeployTarget {
        name,
        backend,
        timeout,
        approval,
        labels,
    })
}
