//! The agents file: which authorization servers and SPIFFE trust domains
//! `warden serve --http` trusts, and which task grant each verified agent
//! gets. Security writes it; `warden check --agents FILE` validates it.
//!
//! ```toml
//! # This server as tokens must name it in `aud` (RFC 8707). Default: the
//! # address served, http://ADDR/mcp.
//! resource = "https://tools.example.com/mcp"
//! leeway = "30s"                      # clock skew allowed on exp and nbf
//!
//! [[issuer]]
//! issuer = "https://login.example.com"
//! # jwks = "https://login.example.com/keys"   # default: from its metadata
//! algorithms = ["ES256", "RS256"]     # default: every asymmetric one
//! scopes = ["tools"]                  # advertised in the resource metadata
//!
//! [[spiffe]]
//! trust-domain = "example.org"
//! bundle = "example.org.jwks"         # its JWT bundle (a JWK set)
//!
//! [[agent]]                           # the most specific match wins
//! issuer = "https://login.example.com"
//! subject = "ci-*"                    # exact, or a prefix ending in *
//! groups = ["deployers"]              # the token must carry all of them
//! scopes = ["tools"]
//! grants = "ci-task.toml"             # the task grant template
//! labels = ["ci"]                     # task labels added
//! task-claim = "run_id"               # the task id; default: one per token
//!
//! [[agent]]
//! spiffe-id = "spiffe://example.org/ci/*"
//! grants = "ci-task.toml"
//! ```

use crate::agent::{Agent, AgentKind};
use crate::grant::Grant;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

mod parse;
use parse::{Problems, duration, trust_domain};
pub(crate) use parse::{key_url, loopback, this_machine, web_url};

/// Every asymmetric algorithm `jsonwebtoken` verifies: the default
/// allowlist. HMAC is never allowed: a public key set cannot verify it, and
/// allowing it is the algorithm-confusion attack.
pub const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// One problem in an agents file, at a position (line 0: the whole file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub field: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.field,
            self.message
        )
    }
}

/// An agents file that cannot be used: every problem found.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct AgentsError(pub Vec<Problem>);

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// Its authorization server metadata (RFC 8414, or OpenID discovery)
    /// names its `jwks_uri`.
    Discover,
    Url(String),
    File(PathBuf),
}

/// A trusted authorization server.
#[derive(Debug, Clone)]
pub struct Issuer {
    pub issuer: String,
    pub keys: KeySource,
    pub algorithms: Vec<Algorithm>,
    pub scopes: Vec<String>,
    /// The least time between two fetches of its keys for an unknown `kid`.
    pub refresh: Duration,
}

/// A trusted SPIFFE trust domain.
#[derive(Debug, Clone)]
pub struct TrustDomain {
    pub domain: String,
    pub bundle: PathBuf,
    pub algorithms: Vec<Algorithm>,
    pub refresh: Duration,
}

/// Which subjects (or SPIFFE IDs) an `[[agent]]` entry matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Any,
    Exact(String),
    Prefix(String),
}

impl Pattern {
    fn parse(text: &str) -> Result<Pattern, String> {
        if text.is_empty() || text.chars().any(crate::redact::hidden) {
            return Err(
                "empty or holds control or invisible characters (expected an id, or a prefix ending in *)"
                    .into(),
            );
        }
        match text.find('*') {
            None => Ok(Pattern::Exact(text.to_owned())),
            Some(i) if i + 1 == text.len() => Ok(if i == 0 {
                Pattern::Any
            } else {
                Pattern::Prefix(text[..i].to_owned())
            }),
            Some(_) => Err(format!(
                "'*' only ends a pattern (expected an id, or a prefix ending in *), found {text:?}"
            )),
        }
    }

    fn matches(&self, id: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(e) => e == id,
            Pattern::Prefix(p) => id.starts_with(p.as_str()),
        }
    }

    /// Exact beats any prefix; a longer prefix beats a shorter one.
    fn rank(&self) -> (u8, usize) {
        match self {
            Pattern::Any => (0, 0),
            Pattern::Prefix(p) => (1, p.len()),
            Pattern::Exact(e) => (2, e.len()),
        }
    }
}

/// One `[[agent]]` entry: which verified agents it matches, and what their
/// tasks get.
#[derive(Debug, Clone)]
pub struct AgentRule {
    /// `oauth` (with `issuer`) or `spiffe`.
    pub kind: AgentKind,
    pub issuer: Option<String>,
    /// The subject (OAuth) or SPIFFE ID it matches.
    pub id: Pattern,
    pub groups: BTreeSet<String>,
    pub scopes: BTreeSet<String>,
    /// The task grant template (its task id is replaced).
    pub grant: Arc<Grant>,
    /// The file it was read from.
    pub grants_file: PathBuf,
    pub labels: BTreeSet<String>,
    /// The claim that names the task; none: one task per token.
    pub task_claim: Option<String>,
    /// Where the entry is, for logs.
    pub line: usize,
}

impl AgentRule {
    fn matches(&self, a: &Agent) -> bool {
        a.kind == self.kind
            && self.issuer.as_deref().is_none_or(|i| i == a.issuer)
            && self.id.matches(&a.subject)
            && self.groups.is_subset(&a.groups)
            && self.scopes.is_subset(&a.scopes)
    }

    fn rank(&self) -> ((u8, usize), usize) {
        (self.id.rank(), self.groups.len() + self.scopes.len())
    }
}

/// A loaded agents file.
#[derive(Debug, Clone)]
pub struct AgentsFile {
    pub path: PathBuf,
    /// This server's resource indicator, when the file names it.
    pub resource: Option<String>,
    pub leeway: Duration,
    pub issuers: Vec<Issuer>,
    pub spiffe: Vec<TrustDomain>,
    pub agents: Vec<AgentRule>,
}

impl AgentsFile {
    /// The most specific entry matching `agent`: an exact id before a
    /// prefix, a longer prefix before a shorter, then more groups and
    /// scopes required; the earlier entry of two equally specific.
    pub fn find(&self, agent: &Agent) -> Option<&AgentRule> {
        let mut best: Option<&AgentRule> = None;
        for rule in self.agents.iter().filter(|r| r.matches(agent)) {
            if best.is_none_or(|b| rule.rank() > b.rank()) {
                best = Some(rule);
            }
        }
        best
    }

    /// The files it names, each with what it is: each agent's grant file,
    /// each issuer's key file and each trust domain's bundle (whoever can
    /// change one could widen an agent's grant, or sign as any agent).
    pub fn files(&self) -> Vec<(PathBuf, &'static str)> {
        let grants = self
            .agents
            .iter()
            .map(|a| (a.grants_file.clone(), "agent grants file"));
        let keys = self.issuers.iter().filter_map(|i| match &i.keys {
            KeySource::File(f) => Some((f.clone(), "issuer key file")),
            _ => None,
        });
        let bundles = self
            .spiffe
            .iter()
            .map(|d| (d.bundle.clone(), "SPIFFE bundle"));
        grants.chain(keys).chain(bundles).collect()
    }

    /// Reads and checks an agents file, and every grant file it names.
    pub fn load(path: &Path) -> Result<AgentsFile, AgentsError> {
        let text =
            crate::files::read_regular_text(path, crate::files::MAX_CONFIG).map_err(|e| {
                AgentsError(vec![Problem {
                    file: path.to_owned(),
                    line: 0,
                    column: 0,
                    field: "file".into(),
                    message: format!("cannot read the agents file: {e}"),
                }])
            })?;
        Self::parse(path, &text)
    }

    /// Checks `text`, read from `path` (relative files are resolved against
    /// its directory).
    pub fn parse(path: &Path, text: &str) -> Result<AgentsFile, AgentsError> {
        let mut p = Problems {
            file: path,
            text,
            found: Vec::new(),
        };
        let raw: Raw = match toml::from_str(text) {
            Ok(r) => r,
            Err(e) => {
                p.at(
                    e.span().unwrap_or(0..0),
                    "file",
                    e.message().trim().to_owned(),
                );
                return Err(AgentsError(p.found));
            }
        };
        let base = path.parent().unwrap_or(Path::new(""));
        let resource = raw.resource.as_ref().and_then(|r| {
            p.check(r, "resource", |v| {
                web_url(v, "the URL of this server's MCP endpoint")
            })
            .map(|()| r.get_ref().clone())
        });
        let leeway = match &raw.leeway {
            None => Duration::from_secs(30),
            Some(l) => p
                .check(l, "leeway", |v| duration(v, Duration::from_secs(300)))
                .map_or(Duration::ZERO, |()| {
                    humantime::parse_duration(l.get_ref()).unwrap_or_default()
                }),
        };
        let mut issuers: Vec<Issuer> = Vec::new();
        for i in &raw.issuer {
            let name = i.issuer.get_ref();
            if p.check(&i.issuer, "issuer.issuer", |v| {
                web_url(v, "the issuer's URL, as tokens name it in iss")
            })
            .is_none()
            {
                continue;
            }
            if issuers.iter().any(|o| &o.issuer == name) {
                p.at(
                    i.issuer.span(),
                    "issuer.issuer",
                    format!("{name:?} is listed twice"),
                );
            }
            let keys = match &i.jwks {
                None => KeySource::Discover,
                Some(j) if j.get_ref().contains("://") => {
                    p.check(j, "issuer.jwks", |v| key_url(v));
                    KeySource::Url(j.get_ref().clone())
                }
                Some(j) => KeySource::File(base.join(j.get_ref())),
            };
            issuers.push(Issuer {
                issuer: name.clone(),
                keys,
                algorithms: p.algorithms(i.algorithms.as_ref(), "issuer.algorithms"),
                scopes: i.scopes.clone(),
                refresh: p.refresh(i.refresh.as_ref(), "issuer.refresh"),
            });
        }
        let mut spiffe: Vec<TrustDomain> = Vec::new();
        for s in &raw.spiffe {
            let d = s.trust_domain.get_ref();
            p.check(&s.trust_domain, "spiffe.trust-domain", trust_domain);
            if spiffe.iter().any(|o| &o.domain == d) {
                p.at(
                    s.trust_domain.span(),
                    "spiffe.trust-domain",
                    format!("{d:?} is listed twice"),
                );
            }
            let bundle = base.join(s.bundle.get_ref());
            if let Err(e) = super::keys::read_bundle(&bundle) {
                p.at(s.bundle.span(), "spiffe.bundle", e);
            }
            spiffe.push(TrustDomain {
                domain: d.clone(),
                bundle,
                algorithms: p.algorithms(s.algorithms.as_ref(), "spiffe.algorithms"),
                refresh: p.refresh(s.refresh.as_ref(), "spiffe.refresh"),
            });
        }
        if issuers.is_empty() && spiffe.is_empty() && p.found.is_empty() {
            p.at(
                0..0,
                "file",
                "trusts no one (expected at least one [[issuer]] or [[spiffe]] table)".into(),
            );
        }
        let mut agents: Vec<AgentRule> = Vec::new();
        for a in &raw.agent {
            if let Some(rule) = p.agent(a, base, &issuers, &spiffe) {
                if let Some(same) = agents.iter().find(|o| {
                    (&o.kind, &o.issuer, &o.id, &o.groups, &o.scopes)
                        == (
                            &rule.kind,
                            &rule.issuer,
                            &rule.id,
                            &rule.groups,
                            &rule.scopes,
                        )
                }) {
                    p.at(
                        a.grants.span(),
                        "agent",
                        format!(
                            "matches the same agents as the entry at line {} (the first would always win)",
                            same.line
                        ),
                    );
                }
                agents.push(rule);
            }
        }
        if !p.found.is_empty() {
            return Err(AgentsError(p.found));
        }
        Ok(AgentsFile {
            path: path.to_owned(),
            resource,
            leeway,
            issuers,
            spiffe,
            agents,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Raw {
    resource: Option<Spanned<String>>,
    leeway: Option<Spanned<String>>,
    #[serde(default)]
    issuer: Vec<RawIssuer>,
    #[serde(default)]
    spiffe: Vec<RawSpiffe>,
    #[serde(default)]
    agent: Vec<RawAgent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawIssuer {
    issuer: Spanned<String>,
    jwks: Option<Spanned<String>>,
    algorithms: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    scopes: Vec<String>,
    refresh: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawSpiffe {
    trust_domain: Spanned<String>,
    bundle: Spanned<String>,
    algorithms: Option<Spanned<Vec<String>>>,
    refresh: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawAgent {
    issuer: Option<Spanned<String>>,
    subject: Option<Spanned<String>>,
    spiffe_id: Option<Spanned<String>>,
    #[serde(default)]
    groups: BTreeSet<String>,
    #[serde(default)]
    scopes: BTreeSet<String>,
    grants: Spanned<String>,
    #[serde(default)]
    labels: Vec<Spanned<String>>,
    task_claim: Option<Spanned<String>>,
}

#[cfg(test)]
#[path = "agents_tests.rs"]
mod tests;
