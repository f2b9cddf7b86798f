//! The http section of a tool's manifest entry: `[[tools.NAME.http]]`, one
//! egress ceiling.

use super::check as http_check;
use super::{EgressApproval, EgressRule};
use crate::diag::Checker;
use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawHttp {
    scheme: Spanned<String>,
    host: Spanned<String>,
    port: Option<u16>,
    methods: Option<Spanned<Vec<String>>>,
    path_prefixes: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    addresses: Vec<Spanned<String>>,
    approval: Option<Spanned<String>>,
    labels: Option<Spanned<Vec<String>>>,
}

/// Validates `tools.{tool}.http[{i}]`.
pub(crate) fn section(
    c: &mut Checker<'_>,
    tool: &str,
    i: usize,
    raw: RawHttp,
) -> Option<EgressRule> {
    let before = c.count();
    let f = |k: &str| format!("tools.{tool}.http[{i}].{k}");
    let scheme = raw.scheme.get_ref();
    if !matches!(scheme.as_str(), "http" | "https") {
        c.problem(
            raw.scheme.span(),
            f("scheme"),
            format!("unknown scheme '{scheme}' (expected http or https)"),
        );
    }
    let host = raw.host.get_ref();
    let origin = match raw.port {
        Some(p) => format!("{scheme}://{host}:{p}"),
        None => format!("{scheme}://{host}"),
    };
    let origin = match http_check::parse_origin(&origin) {
        Ok(o) => Some(o),
        Err(e) => {
            c.problem(
                raw.host.span(),
                f("host"),
                format!("{e} (expected a host name or IP address)"),
            );
            None
        }
    };
    let methods = match raw.methods {
        None => vec!["GET".to_owned()],
        Some(ms) => {
            let upper: Vec<String> = ms
                .get_ref()
                .iter()
                .map(|m| m.to_ascii_uppercase())
                .collect();
            for m in &upper {
                if !http_check::METHODS.contains(&m.as_str()) {
                    c.problem(
                        ms.span(),
                        f("methods"),
                        format!(
                            "unknown method '{m}' (expected {})",
                            http_check::METHODS.join(", ")
                        ),
                    );
                }
            }
            upper
        }
    };
    let path_prefixes = match raw.path_prefixes {
        None => vec!["/".to_owned()],
        Some(ps) => {
            if let Some(bad) = ps.get_ref().iter().find(|p| !p.starts_with('/')) {
                c.problem(
                    ps.span(),
                    f("path-prefixes"),
                    format!("'{bad}' does not start with '/'"),
                );
            }
            ps.into_inner()
        }
    };
    let mut addresses = Vec::new();
    for a in &raw.addresses {
        match a.get_ref().parse::<std::net::IpAddr>() {
            Ok(ip) => addresses.push(ip),
            Err(_) => c.problem(
                a.span(),
                f("addresses"),
                format!(
                    "'{}' is not an IP address (expected e.g. 10.0.0.7 or ::1)",
                    a.get_ref()
                ),
            ),
        }
    }
    // A method other than GET or HEAD may change state on the other side:
    // a person approves each such request unless security waives it.
    let changing: Vec<&str> = methods
        .iter()
        .map(String::as_str)
        .filter(|m| !matches!(*m, "GET" | "HEAD"))
        .collect();
    let what = format!("{} to {}", changing.join("/"), raw.host.get_ref());
    let explicit = raw.approval.as_ref().map(|v| v.get_ref() == "required");
    let approval = match (
        c.approval(
            raw.approval,
            f("approval"),
            (!changing.is_empty()).then_some(what.as_str()),
        ),
        explicit,
    ) {
        (false, _) => EgressApproval::Never,
        (true, Some(true)) => EgressApproval::Always,
        (true, _) => EgressApproval::Changing,
    };
    let labels = c.labels(raw.labels, f("labels"));
    let origin = origin?;
    (c.count() == before).then_some(EgressRule {
        origin,
        methods,
        path_prefixes,
        addresses,
        approval,
        labels,
        narrower: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Line, column, field and message.
    type Found = Vec<(usize, usize, String, String)>;

    fn check(text: &str) -> (Option<EgressRule>, Found) {
        let raw: RawHttp = toml::from_str(text).unwrap();
        let mut c = Checker::new(text);
        let rule = section(&mut c, "t", 0, raw);
        let problems = c
            .into_problems()
            .into_iter()
            .map(|p| (p.line, p.column, p.field, p.message))
            .collect();
        (rule, problems)
    }

    #[test]
    fn defaults_and_every_problem_at_its_field() {
        let (rule, problems) = check("scheme = \"https\"\nhost = \"api.example.com\"\n");
        let rule = rule.unwrap();
        assert_eq!(rule.origin.to_string(), "https://api.example.com:443");
        assert_eq!(
            (rule.methods, rule.path_prefixes),
            (vec!["GET".to_owned()], vec!["/".to_owned()])
        );
        assert!(problems.is_empty(), "{problems:?}");

        let (rule, problems) = check(
            "scheme = \"https\"\nhost = \"api.example.com\"\nmethods = [\"get\", \"brew\"]\n\
             path-prefixes = [\"v1\"]\naddresses = [\"10.0.0.7\", \"nope\"]\napproval = \"maybe\"\n",
        );
        assert!(rule.is_none());
        let f = |k: &str| format!("tools.t.http[0].{k}");
        assert_eq!(
            problems,
            [
                (
                    3,
                    11,
                    f("methods"),
                    "unknown method 'BREW' (expected GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS)"
                        .to_owned()
                ),
                (
                    4,
                    17,
                    f("path-prefixes"),
                    "'v1' does not start with '/'".to_owned()
                ),
                (
                    5,
                    26,
                    f("addresses"),
                    "'nope' is not an IP address (expected e.g. 10.0.0.7 or ::1)".to_owned()
                ),
                (
                    6,
                    12,
                    f("approval"),
                    "approval = 'maybe' (expected \"required\" or \"none\")".to_owned()
                ),
            ]
        );
    }
}
