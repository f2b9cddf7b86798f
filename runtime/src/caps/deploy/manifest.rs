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
    // A deploy changes state outside the task's handles: a person approves
    // unless security waives it.
    let approval = c.approval(
        raw.approval,
        f("approval"),
        Some(&format!("deploy target '{name}'")),
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        text: &str,
        seen: &[DeployTarget],
    ) -> (Option<DeployTarget>, Vec<(usize, String, String)>) {
        let raw: RawDeploy = toml::from_str(text).unwrap();
        let mut c = Checker::new(text);
        let target = section(&mut c, "t", 1, raw, seen);
        let problems = c
            .into_problems()
            .into_iter()
            .map(|p| (p.line, p.field, p.message))
            .collect();
        (target, problems)
    }

    #[test]
    fn exec_and_webhook_targets_and_their_problems() {
        let (exec, problems) = check(
            "name = \"staging\"\nrights = [\"deploy\"]\nbackend = \"exec\"\nprogram = \"/bin/true\"\n",
            &[],
        );
        assert!(problems.is_empty(), "{problems:?}");
        let exec = exec.unwrap();
        assert_eq!(exec.timeout, DEFAULT_TIMEOUT);

        let (_, problems) = check(
            "name = \"staging\"\nrights = [\"read\"]\nbackend = \"webhook\"\nprogram = \"/bin/true\"\ntimeout = \"0s\"\n",
            std::slice::from_ref(&exec),
        );
        let f = |k: &str| format!("tools.t.deploy[1].{k}");
        assert_eq!(
            problems,
            [
                (1, f("name"), "target 'staging' is listed twice".to_owned()),
                (2, f("rights"), "a deploy target takes exactly the deploy right (expected rights = [\"deploy\"])".to_owned()),
                (5, f("timeout"), "timeout must be above 0 and at most 3600s".to_owned()),
                (3, f("backend"), "a webhook target needs `url` (and no `program`)".to_owned()),
            ]
        );
    }
}
