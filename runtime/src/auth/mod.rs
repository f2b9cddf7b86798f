//! Who may call `warden serve --http`, and under which task grant: the
//! HTTP server is an OAuth 2.1 resource server (the MCP authorization
//! specification). Agents present short-lived JWTs — access tokens from a
//! trusted authorization server, or SPIFFE JWT-SVIDs — which are verified
//! ([`token`]) against keys fetched and cached per issuer ([`keys`]), and
//! mapped to a task grant by the agents file ([`agents`]); the grant carries
//! the agent, so the trail and runtime policy know who asked. Static bearer
//! tokens remain, for local use: they name a token file, not an identity.
//!
//! Every request is decided here, once: [`Authenticator::authenticate`].
//! The token is never passed on: not to a tool, not to a log, not to the
//! trail.

pub mod agents;
mod keys;
mod token;

pub use agents::{AgentsError, AgentsFile, Problem};

use crate::agent::{Agent, AgentKind};
use crate::grant::{Grant, check_task};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a verified token is trusted before it is verified again
/// (against the key set as cached: see `keys` for how fresh that is).
const REVERIFY: Duration = Duration::from_secs(60);
/// Verified tokens remembered at once.
const CACHE: usize = 4096;

/// A static bearer token (local use): its name and grant.
pub struct StaticToken {
    token: zeroize::Zeroizing<String>,
    who: Arc<str>,
    grant: Arc<Grant>,
}

impl StaticToken {
    /// `token`, named `name` (its file's name): calls with it run under
    /// `grant`, their records name `static-token:NAME`.
    pub fn new(name: &str, token: String, mut grant: Grant) -> StaticToken {
        let agent = Agent::static_token(name);
        let who = agent.recorded().into();
        grant.agent = Some(Arc::new(agent));
        StaticToken {
            token: zeroize::Zeroizing::new(token),
            who,
            grant: Arc::new(grant),
        }
    }

    /// Whether `token` is this one (compared in constant time).
    pub fn is(&self, token: &str) -> bool {
        same(&self.token, token)
    }
}

/// Constant-time comparison of two tokens: their SHA-256 digests are
/// compared (fixed length, so not even a token's length shows in the time
/// taken), every byte of them.
pub fn same(a: &str, b: &str) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Who a request is from, as far as the server is concerned.
#[derive(Clone, Debug)]
pub enum Authenticated {
    /// Nobody authenticated (an open loopback server): the default grant.
    Anyone,
    /// An authenticated agent, as records name it, and the grant its task
    /// runs under; `None` when no `[[agent]]` entry matches it: no tools.
    Agent {
        who: Arc<str>,
        grant: Option<Arc<Grant>>,
    },
}

impl Authenticated {
    /// Who, as records name it (`None`: nobody authenticated). A session
    /// belongs to whoever opened it.
    pub fn who(&self) -> Option<&Arc<str>> {
        match self {
            Authenticated::Anyone => None,
            Authenticated::Agent { who, .. } => Some(who),
        }
    }
}

/// A request refused: its HTTP status (401, or 403 for a valid token the
/// agents file cannot use), the OAuth error code, and why (for the log and
/// the answer's body; token-controlled parts are escaped and cut).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    /// `None` when no token came (RFC 6750: no error code then).
    pub error: Option<&'static str>,
    pub reason: String,
}

/// Decides every request's caller.
pub struct Authenticator {
    statics: Vec<StaticToken>,
    oauth: Option<OAuth>,
    /// Everyone's grant when nothing is configured.
    open: bool,
}

struct OAuth {
    file: AgentsFile,
    resource: String,
    /// The resource's path (its metadata is also served under it).
    resource_path: String,
    trusted: Vec<token::Trusted>,
    /// Verified tokens by SHA-256: the caller and until when it holds.
    cache: Mutex<HashMap<[u8; 32], (Authenticated, Instant)>>,
}

impl Authenticator {
    /// With no static token and no agents file, anyone may call (what a
    /// loopback-only server does).
    pub fn new(statics: Vec<StaticToken>) -> Authenticator {
        Authenticator {
            open: statics.is_empty(),
            statics,
            oauth: None,
        }
    }

    /// Adds verified agents: `file` says whom to trust and what each gets;
    /// tokens must name `resource` (the file's, if it names one) in `aud`.
    /// Fails only when the HTTP client that fetches keys cannot be built.
    pub fn with_agents(
        mut self,
        file: AgentsFile,
        resource: &str,
    ) -> Result<Authenticator, String> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("cannot build the client that fetches issuers' keys: {e}"))?;
        let trust = |kind, name: &str, algorithms: &[jsonwebtoken::Algorithm], keys, refresh| {
            token::Trusted {
                kind,
                name: name.to_owned(),
                algorithms: algorithms.to_vec(),
                keys: keys::KeySet::new(keys, refresh, client.clone()),
            }
        };
        let issuers = file.issuers.iter().map(|i| {
            let keys = keys::Source::of(&i.issuer, &i.keys);
            trust(AgentKind::OAuth, &i.issuer, &i.algorithms, keys, i.refresh)
        });
        let domains = file.spiffe.iter().map(|t| {
            let keys = keys::Source::File(t.bundle.clone());
            trust(AgentKind::Spiffe, &t.domain, &t.algorithms, keys, t.refresh)
        });
        let trusted = issuers.chain(domains).collect();
        let resource = file.resource.clone().unwrap_or_else(|| resource.to_owned());
        let resource_path = url::Url::parse(&resource)
            .map(|u| u.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        self.open = false;
        self.oauth = Some(OAuth {
            resource,
            resource_path,
            file,
            trusted,
            cache: Mutex::default(),
        });
        Ok(self)
    }

    /// The resource indicator tokens must name, when agents are verified.
    pub fn resource(&self) -> Option<&str> {
        self.oauth.as_ref().map(|o| o.resource.as_str())
    }

    /// The resource's path, when agents are verified (`/mcp`, or what the
    /// agents file's `resource` names).
    pub fn resource_path(&self) -> Option<&str> {
        self.oauth.as_ref().map(|o| o.resource_path.as_str())
    }

    /// The Protected Resource Metadata document (RFC 9728), when agents are
    /// verified: this resource, its authorization servers, their scopes.
    pub fn metadata(&self) -> Option<serde_json::Value> {
        let o = self.oauth.as_ref()?;
        let mut scopes: Vec<&str> = o
            .file
            .issuers
            .iter()
            .flat_map(|i| i.scopes.iter().map(String::as_str))
            .collect();
        scopes.sort_unstable();
        scopes.dedup();
        let servers: Vec<&str> = o.file.issuers.iter().map(|i| i.issuer.as_str()).collect();
        Some(serde_json::json!({
            "resource": o.resource,
            "authorization_servers": servers,
            "scopes_supported": scopes,
            "bearer_methods_supported": ["header"],
            "resource_name": "Warden",
        }))
    }

    /// The scopes to ask for, space-separated, for a 401's challenge.
    pub fn scopes(&self) -> String {
        self.metadata()
            .and_then(|m| {
                m["scopes_supported"].as_array().map(|s| {
                    s.iter()
                        .filter_map(|v| v.as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
            })
            .unwrap_or_default()
    }

    /// How many times each issuer's keys were fetched (for tests).
    pub fn key_fetches(&self) -> Vec<(String, u64)> {
        self.oauth.as_ref().map_or_else(Vec::new, |o| {
            o.trusted
                .iter()
                .map(|t| (t.name.clone(), t.keys.fetches()))
                .collect()
        })
    }

    /// The caller of a request that presented `bearer` (or none).
    pub async fn authenticate(&self, bearer: Option<&str>) -> Result<Authenticated, Refusal> {
        let Some(token) = bearer else {
            if self.open {
                return Ok(Authenticated::Anyone);
            }
            return Err(Refusal {
                status: 401,
                error: None,
                reason: "a bearer token is required (Authorization: Bearer TOKEN)".into(),
            });
        };
        if let Some(s) = self.statics.iter().find(|s| s.is(token)) {
            return Ok(Authenticated::Agent {
                who: s.who.clone(),
                grant: Some(s.grant.clone()),
            });
        }
        let Some(o) = &self.oauth else {
            if self.open {
                return Ok(Authenticated::Anyone);
            }
            return Err(invalid(
                "the bearer token is not one this server accepts".into(),
            ));
        };
        o.caller(token).await
    }
}

fn invalid(reason: String) -> Refusal {
    Refusal {
        status: 401,
        error: Some("invalid_token"),
        reason,
    }
}

impl OAuth {
    async fn caller(&self, token: &str) -> Result<Authenticated, Refusal> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = Instant::now();
        if let Some((caller, until)) = self.lock().get(&digest)
            && *until > now
        {
            return Ok(caller.clone());
        }
        let leeway = self.file.leeway;
        let verified = token::verify(token, &self.trusted, &self.resource, leeway)
            .await
            .map_err(invalid)?;
        let caller = self.grant(&verified)?;
        let exp_in = verified
            .exp
            .saturating_add(leeway.as_secs())
            .saturating_sub(crate::caps::identity::now_secs());
        let until = now + REVERIFY.min(Duration::from_secs(exp_in));
        let mut cache = self.lock();
        if cache.len() >= CACHE {
            cache.retain(|_, (_, u)| *u > now);
            if cache.len() >= CACHE {
                cache.clear();
            }
        }
        cache.insert(digest, (caller.clone(), until));
        Ok(caller)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (Authenticated, Instant)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The task grant of a verified agent: its entry's template, with the
    /// entry's labels, the agent, and the task id (from the entry's claim,
    /// or one per token). An agent no entry matches is refused (403): it
    /// would have no tools, and its sessions would only take places (an
    /// issuer many can get tokens from names any number of subjects).
    fn grant(&self, v: &token::Verified) -> Result<Authenticated, Refusal> {
        let who: Arc<str> = v.agent.recorded().into();
        let Some(rule) = self.file.find(&v.agent) else {
            return Err(Refusal {
                status: 403,
                error: Some("insufficient_scope"),
                reason: format!(
                    "no [[agent]] entry of the agents file matches {}: it is granted no tools",
                    crate::redact::escape_control(&crate::policy::gate::cut(&who, 600))
                ),
            });
        };
        let task = match &rule.task_claim {
            None => default_task(v),
            Some(c) => {
                let value = v.claims.get(c).and_then(|v| v.as_str()).ok_or_else(|| Refusal {
                    status: 403,
                    error: Some("insufficient_scope"),
                    reason: format!(
                        "the token has no string claim {c:?}, which names the task (task-claim, line {})",
                        rule.line
                    ),
                })?;
                check_task(value)
                    .and_then(|()| {
                        if value.starts_with("agent-") {
                            Err("the agent- prefix is kept for task ids Warden makes".into())
                        } else {
                            Ok(())
                        }
                    })
                    .map_err(|e| Refusal {
                        status: 403,
                        error: Some("insufficient_scope"),
                        reason: format!("claim {c:?}: {e}"),
                    })?;
                value.to_owned()
            }
        };
        let mut grant = (*rule.grant).clone();
        grant.task = task;
        grant.labels.extend(rule.labels.iter().cloned());
        grant.agent = Some(Arc::new(v.agent.clone()));
        Ok(Authenticated::Agent {
            who,
            grant: Some(Arc::new(grant)),
        })
    }
}

/// One task per token the issuer minted: `agent-` and 16 hex digits of a
/// hash of who it proves and which token it is (`jti`, else its `iat` and
/// `exp`) — not of the token's bytes, which an agent could re-encode (an
/// ECDSA signature has two valid forms) to start a task with no history.
fn default_task(v: &token::Verified) -> String {
    let claim = |k: &str| v.claims.get(k).map(|c| c.to_string()).unwrap_or_default();
    let mut h = Sha256::new();
    for part in [v.agent.recorded(), claim("jti"), claim("iat"), claim("exp")] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    format!("agent-{}", &hex::encode(h.finalize())[..16])
}
