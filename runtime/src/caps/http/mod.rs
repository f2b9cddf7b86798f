//! The `http` capability: egress to listed destinations only, performed by
//! the host, with secrets attached by reference.
//!
//! Manifest ceilings:
//!
//! ```toml
//! [[tools.http-get.http]]
//! scheme = "https"                 # http or https
//! host = "api.example.com"         # exact, after normalizing; or an IP address
//! port = 443                       # default: the scheme's
//! methods = ["GET"]                # default ["GET"]
//! path-prefixes = ["/v1/"]         # default ["/"]
//! addresses = ["10.0.0.7"]         # private/loopback addresses the host may resolve to
//! ```
//!
//! A grant narrows them per task: `--grant http:https://api.example.com/v1/`
//! (methods of the ceiling) or `--grant http:GET=https://api.example.com/v1/`.

mod approve;
pub mod check;
mod conn;
pub(crate) mod egress;
mod host;
pub(crate) mod kept;
pub(crate) mod manifest;
mod overrides;
mod readable;
pub(crate) use host::{HttpStore, HttpView, Requests, add_to_linker};
pub(crate) mod wasi;

use crate::diag::GrantError;
use check::Origin;
use std::net::IpAddr;
use std::time::Duration;

/// Per-request timeout, further bounded by the invocation's deadline.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One egress rule: a manifest ceiling, or what a grant makes of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRule {
    pub origin: Origin,
    /// Upper-case method names.
    pub methods: Vec<String>,
    pub path_prefixes: Vec<String>,
    /// Private, loopback or link-local addresses this host may resolve to.
    pub addresses: Vec<IpAddr>,
    /// Which requests wait for an approver.
    pub approval: EgressApproval,
    /// Sensitivity labels, for runtime policy.
    pub labels: Vec<String>,
    /// A narrower ceiling's rule within a grant (`/admin/` in a grant of
    /// `/`): a request under it is held to it, and a method it does not
    /// allow is refused there, not given to the grant's wider rule.
    pub narrower: bool,
}

/// Which requests of an egress rule wait for a person's approval, from
/// the fewest to the most (`max` of two is the stricter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum EgressApproval {
    /// None: the rule allows only GET and HEAD, or the manifest waived
    /// approval (`approval = "none"`).
    #[default]
    Never,
    /// Requests whose method may change state on the other side (not GET
    /// or HEAD): the default of a rule that allows such a method.
    Changing,
    /// Every request (`approval = "required"`).
    Always,
}

impl EgressApproval {
    /// Whether a request with `method` (upper-case) waits for approval.
    pub fn applies(self, method: &str) -> bool {
        match self {
            EgressApproval::Never => false,
            EgressApproval::Changing => !matches!(method, "GET" | "HEAD"),
            EgressApproval::Always => true,
        }
    }
}

/// One egress entry of a grant: a URL prefix and, optionally, methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpGrant {
    /// `scheme://host[:port]/path-prefix`
    pub url: String,
    /// `None`: the methods of the ceiling rule.
    pub methods: Option<Vec<String>>,
}

impl HttpGrant {
    /// Parses the CLI form after `http:`: `URL` or `METHODS=URL`.
    pub fn parse_cli(rest: &str) -> Result<HttpGrant, String> {
        let (methods, url) = match rest.split_once('=') {
            Some((m, u)) if !m.contains("://") => (Some(m), u),
            _ => (None, rest),
        };
        let methods = methods.map(|m| {
            m.split(',')
                .map(|m| m.trim().to_ascii_uppercase())
                .collect::<Vec<_>>()
        });
        let g = HttpGrant {
            url: url.to_owned(),
            methods,
        };
        g.parsed()?;
        Ok(g)
    }

    fn parsed(&self) -> Result<(Origin, String), String> {
        let (url, origin) = check::parse_url(&self.url)?;
        if url.query().is_some() {
            return Err(format!(
                "'{}' has a query (expected a URL prefix)",
                self.url
            ));
        }
        for m in self.methods.iter().flatten() {
            if !check::METHODS.contains(&m.as_str()) {
                return Err(format!(
                    "unknown method '{m}' (expected one of {})",
                    check::METHODS.join(", ")
                ));
            }
        }
        if let Some(reason) = check::encoded_dot_segment(url.path()) {
            return Err(format!("'{}': {reason}", self.url));
        }
        Ok((origin, url.path().to_owned()))
    }
}

/// The rules one invocation may use: each grant entry inside a ceiling
/// rule, narrowed to the grant's path prefix and methods. Refuses an entry
/// that no ceiling contains.
pub(crate) fn authorize(
    tool: &str,
    ceilings: &[EgressRule],
    grants: &[HttpGrant],
) -> Result<Vec<EgressRule>, GrantError> {
    let mut out = Vec::new();
    for g in grants {
        let refuse = |reason: String| GrantError::HttpOutsideCeiling {
            tool: tool.to_owned(),
            url: g.url.clone(),
            reason,
        };
        let (origin, prefix) = g.parsed().map_err(&refuse)?;
        let Some(rule) = fit(ceilings, g, &origin, &prefix) else {
            return Err(refuse(if ceilings.iter().any(|c| c.origin == origin) {
                "its methods or path are wider than the manifest's ceiling".into()
            } else {
                format!("{origin} is not in the manifest's egress ceiling")
            }));
        };
        let narrower = within_grant(ceilings, &rule);
        out.push(rule);
        for n in narrower {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    Ok(out)
}

/// The ceilings narrower than a grant's rule, within it (`/admin/` in a
/// grant of `/`), each as a rule of the grant's methods it allows (perhaps
/// none) with its own labels, approval and addresses: a request under one
/// is held to the most specific ceiling the manifest states for it, as a
/// grant is (`fit`), not to the wider one its grant fitted.
fn within_grant(ceilings: &[EgressRule], granted: &EgressRule) -> Vec<EgressRule> {
    let prefix = &granted.path_prefixes[0];
    let mut out = Vec::new();
    for c in ceilings.iter().filter(|c| c.origin == granted.origin) {
        let narrower =
            (c.path_prefixes.iter()).filter(|q| q.len() > prefix.len() && check::within(q, prefix));
        for q in narrower {
            // Also as a lenient server reads it, for a path so read
            // (`acme%2Fprod` is `acme/prod` there).
            let mut path_prefixes = vec![q.clone()];
            let read = check::server_reading(q);
            if read != *q {
                path_prefixes.push(read);
            }
            let rule = EgressRule {
                origin: c.origin.clone(),
                methods: (granted.methods.iter())
                    .filter(|m| c.methods.contains(m))
                    .cloned()
                    .collect(),
                path_prefixes,
                addresses: c.addresses.clone(),
                approval: c.approval,
                labels: c.labels.clone(),
                narrower: true,
            };
            if !out.contains(&rule) {
                out.push(rule);
            }
        }
    }
    out
}

/// The ceiling rule containing a grant entry, narrowed to it: of those
/// that contain it, one with the longest path prefix (the first of them in
/// the manifest that allows its methods), whose labels and approval are
/// the most specific the manifest states for it (`/admin/` within `/`),
/// whatever the order; a grant of methods none of those allows is refused.
fn fit(
    ceilings: &[EgressRule],
    g: &HttpGrant,
    origin: &Origin,
    prefix: &str,
) -> Option<EgressRule> {
    let containing: Vec<(usize, &EgressRule)> = (ceilings.iter())
        .filter(|c| c.origin == *origin)
        .filter_map(|c| Some((c.longest_prefix_of(prefix)?, c)))
        .collect();
    // Only the most specific: a grant of methods it does not allow does
    // not fall through to a wider ceiling's labels and approval.
    let most = containing.iter().map(|(len, _)| *len).max()?;
    containing
        .into_iter()
        .filter(|(len, _)| *len == most)
        .find_map(|(_, c)| {
            let methods = match &g.methods {
                Some(ms) if ms.iter().all(|m| c.methods.contains(m)) => ms.clone(),
                Some(_) => return None,
                None => c.methods.clone(),
            };
            Some(EgressRule {
                origin: origin.clone(),
                methods,
                path_prefixes: vec![prefix.to_owned()],
                addresses: c.addresses.clone(),
                approval: c.approval,
                labels: c.labels.clone(),
                narrower: false,
            })
        })
}

/// The grant entries a tool's ceiling contains, methods narrowed; others dropped.
pub(crate) fn narrow(ceilings: &[EgressRule], grants: &[HttpGrant]) -> Vec<HttpGrant> {
    grants
        .iter()
        .filter_map(|g| {
            let (origin, prefix) = g.parsed().ok()?;
            let wide = HttpGrant {
                url: g.url.clone(),
                methods: None,
            };
            // Its own methods first: of equally specific ceilings, the one
            // that allows them (`fit`), not the first.
            let rule = (fit(ceilings, g, &origin, &prefix))
                .or_else(|| fit(ceilings, &wide, &origin, &prefix))?;
            let methods: Vec<String> = match &g.methods {
                Some(ms) => ms
                    .iter()
                    .filter(|m| rule.methods.contains(m))
                    .cloned()
                    .collect(),
                None => rule.methods,
            };
            (!methods.is_empty()).then(|| HttpGrant {
                url: g.url.clone(),
                methods: Some(methods),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_fits_a_ceiling_by_whole_path_segments() {
        let ceiling = EgressRule {
            origin: check::parse_origin("https://api.example").unwrap(),
            methods: vec!["GET".into()],
            path_prefixes: vec!["/v1".into()],
            addresses: Vec::new(),
            approval: EgressApproval::Never,
            labels: Vec::new(),
            narrower: false,
        };
        let grant = |path: &str| HttpGrant {
            url: format!("https://api.example{path}"),
            methods: None,
        };
        for (path, fits) in [
            ("/v1", true),
            ("/v1/x/", true),
            ("/v1-admin/", false),
            ("/v10", false),
        ] {
            let got = authorize("t", std::slice::from_ref(&ceiling), &[grant(path)]);
            assert_eq!(got.is_ok(), fits, "{path}: {got:?}");
        }
    }

    /// Of the ceilings that contain a grant, the most specific gives its
    /// labels and approval, whatever their order in the manifest; and of
    /// a task's grants, the most specific that allows a request does.
    #[test]
    fn the_most_specific_ceiling_and_grant_apply() {
        let rule = |prefix: &str, labels: &[&str], approval| EgressRule {
            origin: check::parse_origin("https://api.example").unwrap(),
            methods: vec!["GET".into()],
            path_prefixes: vec![prefix.into()],
            addresses: Vec::new(),
            approval,
            labels: labels.iter().map(|l| l.to_string()).collect(),
            narrower: false,
        };
        let wide = rule("/", &[], EgressApproval::Never);
        let admin = rule("/admin/", &["admin"], EgressApproval::Always);
        let grant = |path: &str| HttpGrant {
            url: format!("https://api.example{path}"),
            methods: None,
        };
        for ceilings in [[wide.clone(), admin.clone()], [admin.clone(), wide.clone()]] {
            // Asking for a method only the wider allows does not fall
            // through to it.
            let post = HttpGrant {
                url: "https://api.example/admin/".into(),
                methods: Some(vec!["GET".into(), "POST".into()]),
            };
            let mut wide_post = ceilings.clone();
            for c in &mut wide_post {
                if c.path_prefixes == ["/"] {
                    c.methods.push("POST".into());
                }
            }
            assert!(authorize("t", &wide_post, &[post]).is_err());
            let got = authorize("t", &ceilings, &[grant("/admin/")]).unwrap();
            assert_eq!(
                (&got[0].labels, got[0].approval),
                (&vec!["admin".to_owned()], EgressApproval::Always)
            );
            let got = authorize("t", &ceilings, &[grant("/")]).unwrap();
            assert!(got[0].labels.is_empty());
            // A grant of `/` holds `/admin/`: a request there is held to
            // the narrower ceiling, and a method it does not allow is
            // refused there, not given to the wider one.
            let wide_grant = HttpGrant {
                url: "https://api.example/".into(),
                methods: Some(vec!["GET".into(), "POST".into()]),
            };
            let got = authorize("t", &wide_post, &[wide_grant]).unwrap();
            assert_eq!(got.len(), 2, "{got:?}");
            assert_eq!(
                (&got[1].methods, &got[1].path_prefixes, got[1].narrower),
                (&vec!["GET".to_owned()], &vec!["/admin/".to_owned()], true)
            );
            let origin = check::parse_origin("https://api.example").unwrap();
            let url = url::Url::parse("https://api.example/admin/users").unwrap();
            let r = check::match_rule(&got, "GET", &url, &origin).unwrap();
            assert_eq!(
                (&r.labels, r.approval),
                (&vec!["admin".to_owned()], EgressApproval::Always)
            );
            assert_eq!(
                check::match_rule(&got, "POST", &url, &origin).unwrap_err(),
                "POST /admin/users on https://api.example:443 is not in the egress grant: \
                 the manifest's rule for /admin/ does not allow POST"
            );
            let url = url::Url::parse("https://api.example/public").unwrap();
            let r = check::match_rule(&got, "POST", &url, &origin).unwrap();
            assert_eq!((r.path_prefixes[0].as_str(), r.narrower), ("/", false));
            // Written so a lenient server reads it under `/admin/`: held
            // to `/admin/` all the same.
            for path in [
                "//admin/users",
                "/%61dmin/users",
                "/admin;v=1/users",
                "/%2561dmin/x",
                "/admin",
                "/admin;x/;",
                "/%EF%BD%81dmin/x",
                "/admin%EF%BC%8Fx",
            ] {
                let url = url::Url::parse(&format!("https://api.example{path}")).unwrap();
                let r = check::match_rule(&got, "GET", &url, &origin).unwrap();
                assert_eq!(
                    (&r.labels, r.approval),
                    (&vec!["admin".to_owned()], EgressApproval::Always),
                    "{path}"
                );
                let e = check::match_rule(&got, "POST", &url, &origin).unwrap_err();
                assert_eq!(
                    e,
                    format!(
                        "POST {path} on https://api.example:443 is not in the egress grant: the \
                         manifest's rule for /admin/ does not allow POST (as a server may read \
                         the path)"
                    ),
                );
            }
        }
        let origin = check::parse_origin("https://api.example").unwrap();
        let url = url::Url::parse("https://api.example/admin/users").unwrap();
        for granted in [[wide.clone(), admin.clone()], [admin.clone(), wide.clone()]] {
            let r = check::match_rule(&granted, "GET", &url, &origin).unwrap();
            assert_eq!(r.labels, ["admin"]);
        }
        let url = url::Url::parse("https://api.example/public").unwrap();
        let granted = [admin.clone(), wide];
        let r = check::match_rule(&granted, "GET", &url, &origin).unwrap();
        assert!(r.labels.is_empty());
        // Of two equally specific ceilings, a grant narrowed for a tool
        // keeps the methods of the one that allows them.
        let post = EgressRule {
            methods: vec!["POST".into()],
            ..admin.clone()
        };
        let grant = HttpGrant {
            url: "https://api.example/admin/".into(),
            methods: Some(vec!["POST".into()]),
        };
        let narrowed = narrow(&[admin, post], std::slice::from_ref(&grant));
        assert_eq!(narrowed.len(), 1);
        assert_eq!(
            narrowed[0].methods.as_deref(),
            Some(&["POST".to_owned()][..])
        );
    }
}
