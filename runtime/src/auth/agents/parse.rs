//! Reading an agents file: each problem at its line and column, with the
//! form expected; the checks of single values (URLs, durations, trust
//! domains).

use super::{
    ASYMMETRIC, AgentKind, AgentRule, Algorithm, Grant, Issuer, Pattern, Problem, RawAgent,
    TrustDomain,
};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

/// The problems found so far, with positions in `text`.
pub(super) struct Problems<'a> {
    pub(super) file: &'a Path,
    pub(super) text: &'a str,
    pub(super) found: Vec<Problem>,
}

impl Problems<'_> {
    pub(super) fn at(&mut self, span: std::ops::Range<usize>, field: &str, message: String) {
        let (line, column) = if span == (0..0) {
            (0, 0)
        } else {
            crate::diag::line_col(self.text, span.start)
        };
        self.found.push(Problem {
            file: self.file.to_owned(),
            line,
            column,
            field: field.to_owned(),
            message,
        });
    }

    /// The line of the `[[agent]]` header of the entry holding `span`.
    pub(super) fn line(&self, span: &std::ops::Range<usize>) -> usize {
        let header = self.text[..span.start]
            .rfind("[[agent]]")
            .unwrap_or(span.start);
        crate::diag::line_col(self.text, header).0
    }

    /// Runs `check` on a value; a failure is a problem at the value.
    pub(super) fn check<T>(
        &mut self,
        v: &Spanned<T>,
        field: &str,
        check: impl FnOnce(&T) -> Result<(), String>,
    ) -> Option<()> {
        match check(v.get_ref()) {
            Ok(()) => Some(()),
            Err(m) => {
                self.at(v.span(), field, m);
                None
            }
        }
    }

    pub(super) fn algorithms(
        &mut self,
        v: Option<&Spanned<Vec<String>>>,
        field: &str,
    ) -> Vec<Algorithm> {
        let Some(v) = v else {
            return ASYMMETRIC.to_vec();
        };
        let mut out = Vec::new();
        for name in v.get_ref() {
            match name.parse::<Algorithm>() {
                Ok(a) if ASYMMETRIC.contains(&a) => out.push(a),
                _ => {
                    let m = format!(
                        "{name:?} is not an algorithm tokens may use (expected some of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA; never none or HMAC)"
                    );
                    self.at(v.span(), field, m);
                }
            }
        }
        if v.get_ref().is_empty() {
            self.at(
                v.span(),
                field,
                "empty (expected at least one algorithm)".into(),
            );
        }
        out
    }

    pub(super) fn refresh(&mut self, v: Option<&Spanned<String>>, field: &str) -> Duration {
        let Some(v) = v else {
            return Duration::from_secs(30);
        };
        let bounded = |t: &String| {
            duration(t, Duration::from_secs(86_400))?;
            match humantime::parse_duration(t) {
                Ok(d) if d < Duration::from_secs(1) => Err(format!(
                    "{t:?} is shorter than 1s (a made-up key id would make this server fetch the issuer's keys that often)"
                )),
                _ => Ok(()),
            }
        };
        match self.check(v, field, bounded) {
            Some(()) => humantime::parse_duration(v.get_ref()).unwrap_or_default(),
            None => Duration::ZERO,
        }
    }

    pub(super) fn agent(
        &mut self,
        a: &RawAgent,
        base: &Path,
        issuers: &[Issuer],
        spiffe: &[TrustDomain],
    ) -> Option<AgentRule> {
        let before = self.found.len();
        let line = self.line(&a.grants.span());
        let (kind, issuer, id) = match (&a.issuer, &a.spiffe_id) {
            (Some(i), None) => {
                if !issuers.iter().any(|o| &o.issuer == i.get_ref()) {
                    self.at(
                        i.span(),
                        "agent.issuer",
                        format!(
                            "{:?} is not a trusted issuer (expected one of the [[issuer]] tables)",
                            i.get_ref()
                        ),
                    );
                }
                let id = match &a.subject {
                    None => Pattern::Any,
                    Some(s) => match Pattern::parse(s.get_ref()) {
                        Ok(p) => p,
                        Err(m) => {
                            self.at(s.span(), "agent.subject", m);
                            Pattern::Any
                        }
                    },
                };
                (AgentKind::OAuth, Some(i.get_ref().clone()), id)
            }
            (None, Some(s)) => {
                if let Some(subject) = &a.subject {
                    self.at(
                        subject.span(),
                        "agent.subject",
                        "an SVID's subject is its SPIFFE ID: give spiffe-id only".into(),
                    );
                }
                let domain = s
                    .get_ref()
                    .strip_prefix("spiffe://")
                    .and_then(|r| r.split('/').next())
                    .unwrap_or("");
                if !spiffe.iter().any(|t| t.domain == domain) {
                    self.at(
                        s.span(),
                        "agent.spiffe-id",
                        format!(
                            "{:?} is not in a trusted trust domain (expected spiffe://DOMAIN/PATH, DOMAIN one of the [[spiffe]] tables)",
                            s.get_ref()
                        ),
                    );
                }
                let id = match Pattern::parse(s.get_ref()) {
                    Ok(Pattern::Any) | Err(_) => {
                        self.at(
                            s.span(),
                            "agent.spiffe-id",
                            "expected a SPIFFE ID, or a prefix of one ending in *".into(),
                        );
                        Pattern::Any
                    }
                    Ok(p) => p,
                };
                (AgentKind::Spiffe, None, id)
            }
            _ => {
                self.at(
                    a.grants.span(),
                    "agent",
                    "names neither or both of issuer and spiffe-id (expected exactly one)".into(),
                );
                return None;
            }
        };
        let grant = match Grant::load(base.join(a.grants.get_ref())) {
            Ok(g) => g,
            Err(e) => {
                self.at(a.grants.span(), "agent.grants", e.to_string());
                Grant::new("-")
            }
        };
        let mut labels = BTreeSet::new();
        for l in &a.labels {
            if let Err(e) = crate::diag::check_name(l.get_ref()) {
                self.at(l.span(), "agent.labels", format!("invalid task label {e}"));
            }
            labels.insert(l.get_ref().clone());
        }
        if let Some(c) = &a.task_claim {
            self.check(c, "agent.task-claim", |c| {
                if c.is_empty() || c.len() > 64 || !c.chars().all(|ch| ch.is_ascii_graphic()) {
                    Err(format!(
                        "{c:?} is not a claim name (expected 1 to 64 visible ASCII characters)"
                    ))
                } else {
                    Ok(())
                }
            });
        }
        (self.found.len() == before).then(|| AgentRule {
            kind,
            issuer,
            id,
            groups: a.groups.clone(),
            scopes: a.scopes.clone(),
            grant: Arc::new(grant),
            grants_file: base.join(a.grants.get_ref()),
            labels,
            task_claim: a.task_claim.as_ref().map(|c| c.get_ref().clone()),
            line,
        })
    }
}

/// Whether `host` (of a URL) is this machine without asking DNS: exactly
/// `localhost`, a loopback address, the unspecified address (a connection
/// to `0.0.0.0` or `::` reaches this machine), or an IPv4 one written as
/// IPv6. Plain http is allowed only for these: a name under `localhost`,
/// or `localhost.`, goes to DNS with many resolvers (musl, glibc without
/// `myhostname`), where whoever answers may be anyone.
pub(crate) fn loopback(host: &url::Host<&str>) -> bool {
    let v4 = |a: std::net::Ipv4Addr| a.is_loopback() || a.is_unspecified();
    match host {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(a) => v4(*a),
        url::Host::Ipv6(a) => {
            a.is_loopback() || a.is_unspecified() || a.to_ipv4_mapped().is_some_and(v4)
        }
    }
}

/// Whether `host` may be this machine: [`loopback`], and names under
/// `localhost` (RFC 6761) or with the root's dot; for refusing what must
/// not be here (a remote issuer's `jwks_uri`). (A public name that resolves
/// here is not seen: that takes a lookup.)
pub(crate) fn this_machine(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => {
            let d = d.strip_suffix('.').unwrap_or(d).to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        _ => loopback(host),
    }
}

/// An https URL (http only for loopback), without credentials, query or
/// fragment, and without whitespace.
pub(crate) fn web_url(v: &str, what: &str) -> Result<(), String> {
    url_checked(v, what, false)
}

/// A key set's URL: as [`web_url`], but a query is allowed (some issuers
/// name their key set by one).
pub(crate) fn key_url(v: &str) -> Result<(), String> {
    url_checked(v, "a JWK set's URL", true)
}

fn url_checked(v: &str, what: &str, query: bool) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "{v:?} {why} (expected {what}: https://HOST/PATH, or http:// on loopback)"
        ))
    };
    if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("holds whitespace or control characters");
    }
    let Ok(u) = url::Url::parse(v) else {
        return bad("is not a URL");
    };
    let local = u.host().is_some_and(|h| loopback(&h));
    match u.scheme() {
        "https" => {}
        "http" if local => {}
        "http" => return bad("is plain http to another host"),
        _ => return bad("has another scheme"),
    }
    if !u.username().is_empty() || u.password().is_some() {
        return bad("holds credentials");
    }
    if (u.query().is_some() && !query) || u.fragment().is_some() {
        return bad(if query {
            "has a fragment"
        } else {
            "has a query or fragment"
        });
    }
    Ok(())
}

pub(super) fn duration(v: &str, max: Duration) -> Result<(), String> {
    match humantime::parse_duration(v) {
        Ok(d) if d <= max => Ok(()),
        Ok(_) => Err(format!(
            "{v:?} is longer than {}",
            humantime::format_duration(max)
        )),
        Err(e) => Err(format!("{v:?}: {e} (expected a duration such as \"30s\")")),
    }
}

pub(super) fn trust_domain(d: &String) -> Result<(), String> {
    let ok = !d.is_empty()
        && d.len() <= 255
        && d.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-._".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{d:?} is not a trust domain (expected lower-case letters, digits, '-', '.', '_', such as example.org)"
        ))
    }
}
