//! The http section of a tool's manifest entry: `[[tools.NAME.http]]`, one
//! egress ceiling.

use super::EgressRule;
use super::check as http_check;
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
    let approval = c.required(raw.approval, f("approval"));
    let labels = c.labels(raw.labels, f("labels"));
    let origin = origin?;
    (c.count() == before).then_some(EgressRule {
        origin,
        methods,
        path_prefixes,
        addresses,
        approval,
        labels,
    })
}
