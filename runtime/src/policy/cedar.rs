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

use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicyId,
    PolicySet, Request, RestrictedExpression, Schema, ValidationMode, Validator,
};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::manifest::line_col;

/// The entities, actions and context every policy is validated against.
pub const SCHEMA: &str = include_str!("warden.cedarschema");

/// Stack for one evaluation: Cedar wants 100 KiB of headroom.
const EVAL_STACK: usize = 512 << 10;

/// The id of the built-in permit that makes the manifest the ceiling.
const CEILING: &str = "warden.manifest-ceiling";

/// Entries kept per kind of task history; older entries stay, newer ones
/// beyond this are dropped (a task this busy should be split).
pub const MAX_HISTORY: usize = 4096;

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
}

impl fmt::Debug for RuntimePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimePolicy")
            .field("files", &self.files)
            .field("policies", &self.ids())
            .finish()
    }
}

/// One problem in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyProblem {
    pub file: PathBuf,
    /// 1-based; 0 when the problem is the whole file.
    pub line: usize,
    pub column: usize,
    /// The policy's id, when the problem is in one policy.
    pub policy: Option<String>,
    pub message: String,
}

impl PolicyProblem {
    /// A problem with a whole file.
    fn whole(file: PathBuf, message: String) -> Self {
        Self {
            file,
            line: 0,
            column: 0,
            policy: None,
            message,
        }
    }
}

/// Everything wrong with a set of policy files.
#[derive(Debug, Clone, thiserror::Error)]
pub struct PolicyError {
    pub problems: Vec<PolicyProblem>,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", p.file.display())?;
            if p.line > 0 {
                write!(f, ":{}:{}", p.line, p.column)?;
            }
            if let Some(id) = &p.policy {
                write!(f, ": policy '{id}'")?;
            }
            write!(f, ": {}", p.message)?;
        }
        Ok(())
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

/// What a task has done so far, across its invocations.
#[derive(Debug, Default, Clone)]
pub struct TaskHistory {
    pub secrets_revealed: BTreeSet<String>,
    pub hosts_contacted: BTreeSet<String>,
    pub files_written: BTreeSet<String>,
    pub targets_deployed: BTreeSet<String>,
}

impl TaskHistory {
    /// Adds `item` to one of the sets, up to [`MAX_HISTORY`] entries.
    pub fn note(set: &mut BTreeSet<String>, item: &str) {
        if set.len() < MAX_HISTORY && !set.contains(item) {
            set.insert(item.to_owned());
        }
    }
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
    pub history: &'a TaskHistory,
    pub invocation: &'a str,
    pub detail: &'a str,
    /// Seconds since the Unix epoch.
    pub now: i64,
}

fn schema() -> Schema {
    // The schema is part of this crate; a test parses it.
    Schema::from_cedarschema_str(SCHEMA)
        .map(|(s, _)| s)
        .unwrap_or_else(|e| unreachable!("the built-in schema does not parse: {e}"))
}

impl RuntimePolicy {
    /// Reads policy files (a directory stands for its `*.cedar` files, in
    /// name order), parses and validates them against [`SCHEMA`].
    pub fn load(paths: &[PathBuf]) -> Result<RuntimePolicy, PolicyError> {
        let mut sources = Vec::new();
        let mut problems = Vec::new();
        for path in paths {
            let whole = |message: String| PolicyProblem::whole(path.clone(), message);
            if path.is_dir() {
                match std::fs::read_dir(path) {
                    Ok(entries) => {
                        let mut files: Vec<PathBuf> = entries
                            .filter_map(|e| e.ok().map(|e| e.path()))
                            .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
                            .collect();
                        files.sort();
                        if files.is_empty() {
                            problems.push(whole(
                                "no *.cedar files in this directory (expected Cedar policy files)"
                                    .into(),
                            ));
                        }
                        for f in files {
                            match std::fs::read_to_string(&f) {
                                Ok(text) => sources.push((f, text)),
                                Err(e) => problems
                                    .push(PolicyProblem::whole(f, format!("cannot read: {e}"))),
                            }
                        }
                    }
                    Err(e) => problems.push(whole(format!("cannot read the directory: {e}"))),
                }
            } else {
                match std::fs::read_to_string(path) {
                    Ok(text) => sources.push((path.clone(), text)),
                    Err(e) => problems.push(whole(format!(
                        "cannot read the policy file: {e} (expected a Cedar file or a directory of them)"
                    ))),
                }
            }
        }
        match Self::parse(&sources) {
            Ok(p) if problems.is_empty() => Ok(p),
            Ok(_) => Err(PolicyError { problems }),
            Err(mut e) => {
                problems.append(&mut e.problems);
                Err(PolicyError { problems })
            }
        }
    }

    /// Parses and validates policy texts, each with the file it came from.
    pub fn parse(sources: &[(PathBuf, String)]) -> Result<RuntimePolicy, PolicyError> {
        let mut problems = Vec::new();
        let mut set = PolicySet::new();
        let mut approval = BTreeSet::new();
        let mut reasons = HashMap::new();
        // Policy id -> (file index, text) for locating validation errors.
        let mut origin: HashMap<String, usize> = HashMap::new();
        for (index, (file, text)) in sources.iter().enumerate() {
            let parsed = match PolicySet::from_str(text) {
                Ok(p) => p,
                Err(errors) => {
                    for e in errors.iter() {
                        problems.push(problem(file, text, None, e));
                    }
                    continue;
                }
            };
            if parsed.templates().next().is_some() {
                problems.push(PolicyProblem::whole(
                    file.clone(),
                    "policy templates are not supported (expected static policies)".into(),
                ));
            }
            let stem = file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut policies: Vec<_> = parsed.policies().collect();
            // Parsed ids are `policy0`, `policy1`, … in file order.
            policies.sort_by_key(|p| {
                p.id()
                    .to_string()
                    .trim_start_matches("policy")
                    .parse::<usize>()
                    .unwrap_or(usize::MAX)
            });
            for (n, p) in policies.into_iter().enumerate() {
                let id = p
                    .annotation("id")
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("{stem}#{n}"));
                // A parsed policy displays as its own source text.
                let (line, column) = text
                    .find(&p.to_string())
                    .map(|at| line_col(text, at))
                    .unwrap_or((0, 0));
                let at = |message: String| PolicyProblem {
                    file: file.clone(),
                    line,
                    column,
                    policy: Some(id.clone()),
                    message,
                };
                if id == CEILING || origin.contains_key(&id) {
                    problems.push(at(format!(
                        "the id '{id}' is used twice (expected each @id to be unique)"
                    )));
                    continue;
                }
                match p.annotation("approval") {
                    None => {}
                    Some("required") if p.effect() == cedar_policy::Effect::Forbid => {
                        approval.insert(id.clone());
                    }
                    Some("required") => problems.push(at(
                        "@approval(\"required\") on a permit (expected it on a forbid: policies can only restrict)".into(),
                    )),
                    Some(other) => problems.push(at(format!(
                        "@approval(\"{other}\") (expected @approval(\"required\"))"
                    ))),
                }
                if let Some(r) = p.annotation("reason") {
                    reasons.insert(id.clone(), r.to_owned());
                }
                origin.insert(id.clone(), index);
                if let Err(e) = set.add(p.new_id(PolicyId::new(&id))) {
                    problems.push(at(e.to_string()));
                }
            }
        }
        let schema = schema();
        let result = Validator::new(schema).validate(&set, ValidationMode::Strict);
        for e in result.validation_errors() {
            let id = e.policy_id().to_string();
            let (file, text) = match origin.get(&id) {
                Some(&i) => (&sources[i].0, sources[i].1.as_str()),
                None => continue,
            };
            problems.push(problem(file, text, Some(id), e));
        }
        if !problems.is_empty() {
            return Err(PolicyError { problems });
        }
        let internal = |message: String| PolicyError {
            problems: vec![PolicyProblem {
                policy: Some(CEILING.into()),
                ..PolicyProblem::whole(PathBuf::new(), message)
            }],
        };
        let ceiling = cedar_policy::Policy::parse(
            Some(PolicyId::new(CEILING)),
            "permit (principal, action, resource);",
        )
        .map_err(|e| internal(e.to_string()))?;
        set.add(ceiling).map_err(|e| internal(e.to_string()))?;
        Ok(RuntimePolicy {
            set,
            approval,
            reasons,
            files: sources.iter().map(|(f, _)| f.clone()).collect(),
            authorizer: Authorizer::new(),
        })
    }

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

    /// Asks the policies about one call. Anything that goes wrong denies.
    pub fn decide(&self, q: &Query<'_>) -> Verdict {
        // Cedar guards its recursion by measuring the thread's stack; a host
        // call runs on a wasmtime fiber stack, which it cannot measure (it
        // reads as exhausted). Evaluating on a stack segment of its own gives
        // it a stack it knows.
        stacker::grow(EVAL_STACK, || self.decide_here(q))
    }

    fn decide_here(&self, q: &Query<'_>) -> Verdict {
        let response = match request(q) {
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

fn uid(kind: &str, id: &str) -> Result<EntityUid, String> {
    let t = EntityTypeName::from_str(kind).map_err(|e| e.to_string())?;
    Ok(EntityUid::from_type_name_and_id(t, EntityId::new(id)))
}

fn string(s: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(s.to_owned())
}

fn strings<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> RestrictedExpression {
    RestrictedExpression::new_set(items.into_iter().map(|s| string(s.as_ref())))
}

fn record(pairs: Vec<(&str, RestrictedExpression)>) -> Result<RestrictedExpression, String> {
    RestrictedExpression::new_record(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)))
        .map_err(|e| e.to_string())
}

fn entity(uid: &EntityUid, attrs: Vec<(&str, RestrictedExpression)>) -> Result<Entity, String> {
    Entity::new(
        uid.clone(),
        attrs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        Default::default(),
    )
    .map_err(|e| e.to_string())
}

/// The Cedar request and entities for one call.
fn request(q: &Query<'_>) -> Result<(Request, Entities), String> {
    let tool = uid("Warden::Tool", &q.tool.name)?;
    let tool_entity = entity(
        &tool,
        vec![
            ("name", string(&q.tool.name)),
            ("identity", string(&q.tool.identity)),
            ("labels", strings(&q.tool.labels)),
        ],
    )?;
    let (resource, attrs) = match &q.resource {
        Resource::Path {
            handle,
            path,
            host_path,
            labels,
        } => (
            uid("Warden::Path", &format!("{handle}:{path}"))?,
            vec![
                ("handle", string(handle)),
                ("path", string(path)),
                ("host_path", string(host_path)),
                ("labels", strings(labels.iter())),
            ],
        ),
        Resource::Host {
            host,
            origin,
            url,
            labels,
            send_to_of,
        } => (
            uid("Warden::Host", host)?,
            vec![
                ("host", string(host)),
                ("origin", string(origin)),
                ("url", string(url)),
                ("labels", strings(labels.iter())),
                ("send_to_of", strings(send_to_of)),
            ],
        ),
        Resource::Secret {
            name,
            labels,
            send_to,
        } => (
            uid("Warden::Secret", name)?,
            vec![
                ("name", string(name)),
                ("labels", strings(labels.iter())),
                ("send_to", strings(send_to.iter())),
            ],
        ),
        Resource::Target {
            name,
            backend,
            labels,
        } => (
            uid("Warden::Target", name)?,
            vec![
                ("name", string(name)),
                ("backend", string(backend)),
                ("labels", strings(labels.iter())),
            ],
        ),
        Resource::Audience { url } => (uid("Warden::Audience", url)?, vec![("url", string(url))]),
    };
    let resource_entity = entity(&resource, attrs)?;
    let h = q.history;
    let days = q.now.div_euclid(86_400);
    let context = Context::from_pairs([
        (
            "task".to_owned(),
            record(vec![
                ("id", string(q.task)),
                ("labels", strings(q.task_labels)),
                ("secrets_revealed", strings(&h.secrets_revealed)),
                ("hosts_contacted", strings(&h.hosts_contacted)),
                ("files_written", strings(&h.files_written)),
                ("targets_deployed", strings(&h.targets_deployed)),
            ])?,
        ),
        (
            "time".to_owned(),
            record(vec![
                ("unix", RestrictedExpression::new_long(q.now)),
                (
                    "hour",
                    RestrictedExpression::new_long(q.now.rem_euclid(86_400) / 3600),
                ),
                // 1970-01-01 was a Thursday (3 when Monday is 0).
                (
                    "weekday",
                    RestrictedExpression::new_long((days + 3).rem_euclid(7)),
                ),
            ])?,
        ),
        ("invocation".to_owned(), string(q.invocation)),
        ("detail".to_owned(), string(q.detail)),
    ])
    .map_err(|e| e.to_string())?;
    let action = uid("Warden::Action", q.action)?;
    let request = Request::new(tool, action, resource, context, None).map_err(|e| e.to_string())?;
    let entities =
        Entities::from_entities([tool_entity, resource_entity], None).map_err(|e| e.to_string())?;
    Ok((request, entities))
}

/// A problem at the first labelled position of a Cedar diagnostic.
fn problem(
    file: &Path,
    text: &str,
    policy: Option<String>,
    e: &(impl miette::Diagnostic + fmt::Display),
) -> PolicyProblem {
    let (line, column) = e
        .labels()
        .and_then(|mut l| l.next())
        .map(|l| line_col(text, l.offset()))
        .unwrap_or((0, 0));
    let mut message = e.to_string();
    if let Some(help) = e.help() {
        message.push_str(&format!(" ({help})"));
    }
    PolicyProblem {
        file: file.to_owned(),
        line,
        column,
        policy,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn malformed_policies_are_located_and_explained() {
        let e = parse(
            "permit (principal, action, resource)\nwhen { context.task.labels.contains(\"x\") ;",
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("p.cedar:2:"), "{msg}");

        let e = parse("\n\n@id(\"typo\")\nforbid (principal, action == Warden::Action::\"deploy::run\", resource)\nwhen { resource.lables.contains(\"production\") };").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("p.cedar:5:"), "{msg}");
        assert!(msg.contains("policy 'typo'"), "{msg}");
        assert!(msg.contains("lables"), "{msg}");

        let e = parse("forbid (principal, action == Warden::Action::\"fs::exec\", resource);")
            .unwrap_err();
        assert!(e.to_string().contains("fs::exec"), "{e}");

        let e = parse("@id(\"a\") forbid (principal, action, resource);\n@id(\"a\") forbid (principal, action, resource);").unwrap_err();
        assert!(e.to_string().contains("the id 'a' is used twice"), "{e}");

        let e = parse("@approval(\"required\") permit (principal, action, resource);").unwrap_err();
        assert!(e.to_string().contains("expected it on a forbid"), "{e}");

        let e = parse("@approval(\"maybe\") forbid (principal, action, resource);").unwrap_err();
        assert!(
            e.to_string().contains("expected @approval(\"required\")"),
            "{e}"
        );
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
