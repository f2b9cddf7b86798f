//! The one decision point: every host call is decided here, and every
//! decision carries the rule that made it and a reason.

use crate::caps::fs::path::{CheckedPath, PathError};
use crate::rights::Rights;

/// The answer to one host call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allow: bool,
    /// The rule that decided, e.g. `fs.rights`.
    pub rule: &'static str,
    pub reason: String,
}

impl Decision {
    pub fn allow(rule: &'static str, reason: String) -> Self {
        Self {
            allow: true,
            rule,
            reason,
        }
    }

    pub fn deny(rule: &'static str, reason: String) -> Self {
        Self {
            allow: false,
            rule,
            reason,
        }
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

/// Deny by default: a call is allowed only when its paths stay inside the
/// handle and the handle holds every right the action needs.
#[derive(Debug, Default)]
pub struct Policy;

impl Policy {
    pub fn decide_fs(&self, req: &FsRequest<'_, '_>) -> Decision {
        for p in req.paths {
            if let Err(e) = p {
                return Decision::deny("fs.path", e.to_string());
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
