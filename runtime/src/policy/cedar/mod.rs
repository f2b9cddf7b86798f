//! Runtime policy: Cedar rules security adds on top of the manifest.
//!
//! Every host call the manifest allows is then asked of the policies with
//! principal = the tool, action = the capability action (`fs::write`, …),
//! resource = what it acts on, with the labels the manifest gives it, and
//! context = the task's labels and history, the time and the call. The
//! schema is [`SCHEMA`]; `warden schema` prints it.
//!
//! The manifest stays the ceiling: a built-in `permit` for everything makes
//! `forbid` the only effect a policy can have. A `forbid` annotated
//! `@approval("required")` forbids unless a human approves. A policy that
//! fails to evaluate denies (fail closed). `@id("…")` names a policy in
//! decisions and audit records; `@reason("…")` is the message a denied tool
//! sees.

mod history;
mod load;
mod request;

pub use history::{MAX_ENTRY, MAX_HISTORY, MAX_HISTORY_BYTES, Noted, TaskHistory};
pub use load::{PolicyError, PolicyProblem};

use cedar_policy::{Authorizer, PolicySet};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::PathBuf;

/// The entities, actions and context every policy is validated against.
pub const SCHEMA: &str = include_str!("../warden.cedarschema");

/// Stack for one evaluation: Cedar wants 100 KiB of headroom.
const EVAL_STACK: usize = 512 << 10;

/// The id of the built-in permit that makes the manifest the ceiling.
const CEILING: &str = "warden.manifest-ceiling";

/// A loaded, validated set of Cedar policies.
pub struct RuntimePolicy {
    set: PolicySet,
    /// Policy ids whose forbid an approval lifts.
    approval: BTreeSet<String>,
    /// `@reason` annotations by policy id.
    reasons: HashMap<String, String>,
    /// Where each policy came from, for messages.
    files: Vec<PathBuf>,
    authorizer: Authorizer,
    /// Which of the task history's sets ([`TaskHistory::KINDS`], in that
    /// order) a policy reads: a call that one of them, full, could not
    /// note is then refused, not left out.
    reads: [bool; 4],
    /// The policies' strings longer than [`MAX_ENTRY`], by the form a
    /// history set keeps them in (head and digest): a policy asking whether
    /// a set holds one sees it whole (`request.rs`).
    whole: HashMap<String, String>,
}

impl fmt::Debug for RuntimePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimePolicy")
            .field("files", &self.files)
            .field("policies", &self.ids())
            .finish()
    }
}

/// What the policies say about one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Forbidden unless a human approves; the ids of the policies that ask.
    Approval {
        policies: Vec<String>,
        reason: String,
    },
    Deny {
        policies: Vec<String>,
        reason: String,
    },
}

/// The principal of every request.
#[derive(Debug, Clone)]
pub struct ToolFacts {
    pub name: String,
    pub identity: String,
    pub labels: Vec<String>,
}

/// What a call acts on.
#[derive(Debug, Clone)]
pub enum Resource<'a> {
    Path {
        handle: &'a str,
        path: &'a str,
        host_path: &'a str,
        labels: &'a [String],
    },
    Host {
        host: &'a str,
        origin: &'a str,
        url: &'a str,
        labels: &'a [String],
        send_to_of: Vec<String>,
    },
    Secret {
        name: &'a str,
        labels: &'a [String],
        send_to: &'a [String],
    },
    Target {
        name: &'a str,
        backend: &'a str,
        labels: &'a [String],
    },
    Audience {
        url: &'a str,
    },
}

/// One call, as the policies see it.
pub struct Query<'a> {
    pub tool: &'a ToolFacts,
    /// e.g. `fs::write`.
    pub action: &'a str,
    pub resource: Resource<'a>,
    pub task: &'a str,
    pub task_labels: &'a [String],
    /// Who the task runs for, when an agent authenticated.
    pub agent: Option<&'a crate::agent::Agent>,
    pub history: &'a TaskHistory,
    pub invocation: &'a str,
    pub detail: &'a str,
    /// Seconds since the Unix epoch.
    pub now: i64,
}
impl RuntimePolicy {
    /// The ids of the loaded policies (without the built-in ceiling).
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .set
            .policies()
            .map(|p| p.id().to_string())
            .filter(|id| id != CEILING)
            .collect();
        ids.sort();
        ids
    }

    /// The files the policies were read from.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Whether a policy reads the task history's set `kind` (one of
    /// [`TaskHistory::KINDS`], e.g. `hosts_contacted`).
    pub fn reads_history(&self, kind: &str) -> bool {
        TaskHistory::KINDS
            .iter()
            .zip(self.reads)
            .any(|(k, reads)| reads && *k == kind)
    }

    /// Whether a policy reads any of the task history's sets.
    pub fn reads_any_history(&self) -> bool {
        self.reads.contains(&true)
    }

    /// Asks the policies about one call. Anything that goes wrong denies.
    pub fn decide(&self, q: &Query<'_>) -> Verdict {
        // Cedar guards its recursion by measuring the thread's stack; a host
        // call runs on a wasmtime fiber stack, which it cannot measure (it
        // reads as exhausted). Evaluating on a stack segment of its own gives
        // it a stack it knows.
        stacker::grow(EVAL_STACK, || self.decide_here(q))
    }

    fn decide_here(&self, q: &Query<'_>) -> Verdict {
        let response = match request::build(q, &self.whole) {
            Ok((request, entities)) => self
                .authorizer
                .is_authorized(&request, &self.set, &entities),
            Err(e) => {
                return Verdict::Deny {
                    policies: Vec::new(),
                    reason: format!("runtime policy: the call could not be described: {e}"),
                };
            }
        };
        let diagnostics = response.diagnostics();
        let failed: Vec<String> = diagnostics
            .errors()
            .map(|e| match e {
                cedar_policy::AuthorizationError::PolicyEvaluationError(e) => {
                    e.policy_id().to_string()
                }
            })
            .collect();
        if !failed.is_empty() {
            let detail: Vec<String> = diagnostics.errors().map(|e| e.to_string()).collect();
            return Verdict::Deny {
                policies: failed,
                reason: format!(
                    "runtime policy failed to evaluate (denied): {}",
                    detail.join("; ")
                ),
            };
        }
        if response.decision() == cedar_policy::Decision::Allow {
            return Verdict::Allow;
        }
        let mut ids: Vec<String> = diagnostics.reason().map(|id| id.to_string()).collect();
        ids.sort();
        let (gated, hard): (Vec<String>, Vec<String>) =
            ids.into_iter().partition(|id| self.approval.contains(id));
        let reason_of = |ids: &[String]| {
            ids.iter()
                .map(|id| match self.reasons.get(id) {
                    Some(r) => format!("{r} (policy {id})"),
                    None => format!("forbidden by policy {id}"),
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        if hard.is_empty() && !gated.is_empty() {
            let reason = reason_of(&gated);
            Verdict::Approval {
                policies: gated,
                reason,
            }
        } else {
            let reason = reason_of(&hard);
            Verdict::Deny {
                policies: hard,
                reason,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cedar_policy::Schema;
    use std::path::Path;

    fn examples() -> RuntimePolicy {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policies");
        RuntimePolicy::load(&[dir]).unwrap()
    }

    fn parse(text: &str) -> Result<RuntimePolicy, PolicyError> {
        RuntimePolicy::parse(&[(PathBuf::from("p.cedar"), text.to_owned())])
    }

    fn tool() -> ToolFacts {
        ToolFacts {
            name: "t".into(),
            identity: "sha256:00".into(),
            labels: vec![],
        }
    }

    fn ask(
        p: &RuntimePolicy,
        action: &str,
        resource: Resource<'_>,
        labels: &[String],
        h: &TaskHistory,
    ) -> Verdict {
        p.decide(&Query {
            tool: &tool(),
            action,
            resource,
            task: "task",
            task_labels: labels,
            agent: None,
            history: h,
            invocation: "inv",
            detail: "",
            now: 1_700_000_000,
        })
    }

    fn target<'a>(name: &'a str, labels: &'a [String]) -> Resource<'a> {
        Resource::Target {
            name,
            backend: "exec",
            labels,
        }
    }

    fn path<'a>(path: &'a str, host_path: &'a str) -> Resource<'a> {
        Resource::Path {
            handle: "repo",
            path,
            host_path,
            labels: &[],
        }
    }

    #[test]
    fn the_schema_and_the_example_policies_are_valid() {
        assert!(Schema::from_cedarschema_str(SCHEMA).is_ok());
        assert_eq!(
            examples().ids(),
            [
                "github-changes-need-approval",
                "no-egress-after-reveal",
                "production-needs-release"
            ]
        );
    }

    #[test]
    fn production_deploys_need_a_release_task() {
        let p = examples();
        let h = TaskHistory::default();
        let prod = ["production".to_owned()];
        let release = ["release".to_owned()];
        match ask(&p, "deploy::run", target("eu-live", &prod), &[], &h) {
            Verdict::Deny { policies, reason } => {
                assert_eq!(policies, ["production-needs-release"]);
                assert!(
                    reason.contains("needs a task labelled 'release'"),
                    "{reason}"
                );
            }
            v => panic!("{v:?}"),
        }
        assert!(matches!(
            ask(&p, "deploy::run", target("production", &[]), &[], &h),
            Verdict::Deny { .. }
        ));
        assert_eq!(
            ask(&p, "deploy::run", target("eu-live", &prod), &release, &h),
            Verdict::Allow
        );
        assert_eq!(
            ask(&p, "deploy::run", target("staging", &[]), &[], &h),
            Verdict::Allow
        );
    }

    #[test]
    fn egress_after_a_reveal_goes_only_to_the_secrets_send_to() {
        let p = examples();
        let host = |send_to_of: Vec<String>| Resource::Host {
            host: "b.example",
            origin: "https://b.example:443",
            url: "https://b.example/x",
            labels: &[],
            send_to_of,
        };
        let mut h = TaskHistory::default();
        assert_eq!(ask(&p, "http::send", host(vec![]), &[], &h), Verdict::Allow);
        TaskHistory::note(&mut h.secrets_revealed, "api");
        match ask(&p, "http::send", host(vec![]), &[], &h) {
            Verdict::Deny { policies, .. } => assert_eq!(policies, ["no-egress-after-reveal"]),
            v => panic!("{v:?}"),
        }
        assert_eq!(
            ask(&p, "http::send", host(vec!["api".into()]), &[], &h),
            Verdict::Allow
        );
        TaskHistory::note(&mut h.secrets_revealed, "other");
        assert!(matches!(
            ask(&p, "http::send", host(vec!["api".into()]), &[], &h),
            Verdict::Deny { .. }
        ));
    }

    /// A set keeps a path over [`MAX_ENTRY`] bytes as its head and digest;
    /// a policy naming that path (in a set of paths too, or escaped) still
    /// finds it, and a path of the same head does not pass for it.
    #[test]
    fn a_policy_naming_a_long_path_finds_it_in_the_history() {
        let long = format!("repo:release/{}.json", "x".repeat(180));
        let twin = format!("repo:release/{}.jsox", "x".repeat(180));
        let escaped = long.replacen('r', "\\u{72}", 1);
        for condition in [
            format!("context.task.files_written.contains(\"{long}\")"),
            format!("context.task.files_written.containsAny([\"a\", \"{escaped}\"])"),
        ] {
            let p = parse(&format!(
                "@id(\"once\") forbid (principal, action, resource) when {{ {condition} }};"
            ))
            .unwrap();
            let mut h = TaskHistory::default();
            TaskHistory::note(&mut h.files_written, &twin);
            // A path a tool writes as the long path's kept form is not it.
            let forged = super::history::entry(&long).into_owned();
            assert!(forged.len() <= MAX_ENTRY);
            TaskHistory::note(&mut h.files_written, &forged);
            assert_eq!(
                ask(&p, "fs::read", path("a", "/r/a"), &[], &h),
                Verdict::Allow
            );
            TaskHistory::note(&mut h.files_written, &long);
            assert!(h.files_written.iter().all(|e| e.len() <= MAX_ENTRY));
            match ask(&p, "fs::read", path("a", "/r/a"), &[], &h) {
                Verdict::Deny { policies, .. } => assert_eq!(policies, ["once"], "{condition}"),
                v => panic!("{condition}: {v:?}"),
            }
        }
    }

    #[test]
    fn changes_under_github_need_approval_and_nothing_else_does() {
        let p = examples();
        let h = TaskHistory::default();
        for (action, rel, host) in [
            (
                "fs::write",
                ".github/workflows/ci.yml",
                "/r/.github/workflows/ci.yml",
            ),
            ("fs::write", ".github", "/r/.github"),
            ("fs::delete", ".github/CODEOWNERS", "/r/.github/CODEOWNERS"),
            // A handle granted inside .github/.
            (
                "fs::write",
                "workflows/ci.yml",
                "/r/.github/workflows/ci.yml",
            ),
        ] {
            match ask(&p, action, path(rel, host), &[], &h) {
                Verdict::Approval { policies, .. } => {
                    assert_eq!(policies, ["github-changes-need-approval"], "{rel}")
                }
                v => panic!("{rel}: {v:?}"),
            }
        }
        for (action, rel, host) in [
            (
                "fs::read",
                ".github/workflows/ci.yml",
                "/r/.github/workflows/ci.yml",
            ),
            ("fs::write", "docs/github.md", "/r/docs/github.md"),
            ("fs::write", ".githubx/a", "/r/.githubx/a"),
        ] {
            assert_eq!(
                ask(&p, action, path(rel, host), &[], &h),
                Verdict::Allow,
                "{rel}"
            );
        }
    }

    #[test]
    fn a_hard_forbid_beats_an_approval() {
        let p = parse(
            "@id(\"gate\") @approval(\"required\") forbid (principal, action, resource);\n\
             @id(\"never\") forbid (principal, action == Warden::Action::\"fs::write\", resource);",
        )
        .unwrap();
        let h = TaskHistory::default();
        assert!(matches!(
            ask(&p, "fs::read", path("a", "/a"), &[], &h),
            Verdict::Approval { .. }
        ));
        match ask(&p, "fs::write", path("a", "/a"), &[], &h) {
            Verdict::Deny { policies, .. } => assert_eq!(policies, ["never"]),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn an_evaluation_error_denies() {
        // Valid against the schema, but fails at run time (overflow).
        let p = parse(
            "@id(\"boom\") forbid (principal, action, resource) when { context.time.unix * 9223372036854775807 > 0 };",
        )
        .unwrap();
        match ask(
            &p,
            "fs::read",
            path("a", "/a"),
            &[],
            &TaskHistory::default(),
        ) {
            Verdict::Deny { policies, reason } => {
                assert_eq!(policies, ["boom"]);
                assert!(reason.contains("failed to evaluate"), "{reason}");
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn time_facts() {
        // 2023-11-14T22:13:20Z was a Tuesday.
        let p = parse("@id(\"tuesday-night\") forbid (principal, action, resource) when { context.time.weekday == 1 && context.time.hour == 22 };").unwrap();
        assert!(matches!(
            ask(
                &p,
                "fs::read",
                path("a", "/a"),
                &[],
                &TaskHistory::default()
            ),
            Verdict::Deny { .. }
        ));
    }
}
