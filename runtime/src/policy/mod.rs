//! The one decision point: every host call is decided here, and every
//! decision carries the rule that made it and a reason.
//!
//! The manifest's rules decide first; what they allow is then asked of the
//! runtime policy ([`cedar`]), which can only deny or ask for approval.

pub mod cedar;

pub use cedar::{PolicyError, RuntimePolicy, TaskHistory};

use crate::caps::fs::path::{CheckedPath, PathError};
use crate::rights::Rights;
use std::sync::{Arc, Mutex};

/// The answer to one host call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allow: bool,
    /// The rule that decided, e.g. `fs.rights`.
    pub rule: &'static str,
    pub reason: String,
    /// Ids of the runtime policies that denied the call or asked for its
    /// approval.
    pub policies: Vec<String>,
}

impl Decision {
    pub fn allow(rule: &'static str, reason: String) -> Self {
        Self {
            allow: true,
            rule,
            reason,
            policies: Vec::new(),
        }
    }

    pub fn deny(rule: &'static str, reason: String) -> Self {
        Self {
            allow: false,
            rule,
            reason,
            policies: Vec::new(),
        }
    }
}

/// What the runtime policy of one invocation needs: the policies, who is
/// calling, and the task's history shared by its invocations.
#[derive(Clone)]
pub(crate) struct PolicyCtx {
    pub(crate) rules: Arc<RuntimePolicy>,
    pub(crate) tool: Arc<cedar::ToolFacts>,
    pub(crate) task: Arc<str>,
    pub(crate) labels: Arc<[String]>,
    pub(crate) invocation: Arc<str>,
    pub(crate) history: Arc<Mutex<TaskHistory>>,
}

impl PolicyCtx {
    /// Asks the runtime policy about a call `d` allows. A forbid turns `d`
    /// into a denial naming its policies; a forbid an approval lifts leaves
    /// `d` allowed, names the policies, and returns true: the caller must
    /// get approval before acting.
    pub(crate) fn consult(
        &self,
        d: &mut Decision,
        action: &str,
        detail: &str,
        resource: cedar::Resource<'_>,
    ) -> bool {
        if !d.allow {
            return false;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| i64::try_from(t.as_secs()).unwrap_or(i64::MAX));
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let verdict = self.rules.decide(&cedar::Query {
            tool: &self.tool,
            action,
            resource,
            task: &self.task,
            task_labels: &self.labels,
            history: &history,
            invocation: &self.invocation,
            detail,
            now,
        });
        drop(history);
        match verdict {
            cedar::Verdict::Allow => false,
            cedar::Verdict::Approval { policies, reason } => {
                d.reason = format!("{}; approval required: {reason}", d.reason);
                d.policies = policies;
                true
            }
            cedar::Verdict::Deny { policies, reason } => {
                *d = Decision {
                    allow: false,
                    rule: "policy",
                    reason,
                    policies,
                };
                false
            }
        }
    }

    /// Records something the task did, for later calls' context.
    pub(crate) fn remember(&self, f: impl FnOnce(&mut TaskHistory)) {
        f(&mut self.history.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// A file system host call, as the policy sees it.
pub struct FsRequest<'a, 'p> {
    pub handle: &'a str,
    pub action: &'static str,
    /// The checked path(s) of the call, or why a path was refused.
    pub paths: &'a [Result<CheckedPath<'p>, PathError>],
    /// Rights the handle holds.
    pub held: Rights,
    /// Rights the action needs.
    pub needs: Rights,
}

/// Actions that must never apply to a handle's root directory itself.
const DESTRUCTIVE: [&str; 3] = ["remove-file", "remove-dir", "rename"];

/// Deny by default: a call is allowed only when its paths stay inside the
/// handle and the handle holds every right the action needs.
#[derive(Debug, Default)]
pub struct Policy {
    /// Cedar policies from the manifest, asked after the manifest's rules.
    pub(crate) rules: Option<Arc<RuntimePolicy>>,
}

impl Policy {
    /// Opening a handle by name: only handles in the task's grant exist.
    pub fn decide_open(&self, handle: &str, granted: bool) -> Decision {
        if granted {
            Decision::allow("fs.handle", format!("handle '{handle}' is in the grant"))
        } else {
            Decision::deny(
                "fs.handle",
                format!("no handle '{handle}' in this task's grant"),
            )
        }
    }

    /// A secret action (`get`, `reveal`) on `name`; `state` is
    /// `(expired, reveal allowed)` when the task was granted the secret.
    pub fn decide_secret(&self, action: &str, name: &str, state: Option<(bool, bool)>) -> Decision {
        match state {
            None => Decision::deny(
                "secret.grant",
                format!("no secret '{name}' in this task's grant"),
            ),
            Some((true, _)) => Decision::deny(
                "secret.ttl",
                format!("secret '{name}' has expired (past its ttl)"),
            ),
            Some((false, false)) if action == "reveal" => Decision::deny(
                "secret.reveal",
                format!(
                    "the manifest does not allow revealing secret '{name}' (reveal = false); use it by reference"
                ),
            ),
            Some(_) => Decision::allow("secret.grant", format!("secret '{name}' is granted")),
        }
    }

    /// Deploying to `target`: only targets in the task's grant.
    pub fn decide_deploy(&self, target: &str, granted: bool) -> Decision {
        if granted {
            Decision::allow("deploy.grant", format!("target '{target}' is granted"))
        } else {
            Decision::deny(
                "deploy.grant",
                format!("no deploy target '{target}' in this task's grant"),
            )
        }
    }

    /// Minting an identity token for `audience`.
    pub fn decide_token(&self, audience: &str, allowed: &[String]) -> Decision {
        if allowed.iter().any(|a| a == audience) {
            Decision::allow(
                "identity.audience",
                format!("audience {audience} is listed"),
            )
        } else {
            Decision::deny(
                "identity.audience",
                format!("the manifest does not list audience '{audience}' for this tool's tokens"),
            )
        }
    }

    pub fn decide_fs(&self, req: &FsRequest<'_, '_>) -> Decision {
        for p in req.paths {
            match p {
                Err(e) => return Decision::deny("fs.path", e.to_string()),
                Ok(p) if p.is_root() && DESTRUCTIVE.contains(&req.action) => {
                    return Decision::deny(
                        "fs.root",
                        format!(
                            "{} of the root of handle '{}' is not allowed",
                            req.action, req.handle
                        ),
                    );
                }
                Ok(_) => {}
            }
        }
        let missing = req.needs.excess_over(req.held);
        if !missing.is_empty() {
            return Decision::deny(
                "fs.rights",
                format!(
                    "{} needs the {} right on handle '{}', which holds {}",
                    req.action, missing, req.handle, req.held
                ),
            );
        }
        Decision::allow(
            "fs.rights",
            format!("handle '{}' holds {}", req.handle, req.needs),
        )
    }
}
