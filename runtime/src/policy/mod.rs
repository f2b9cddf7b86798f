//! The one decision point: every host call passes the [`gate`], and every
//! decision carries the rule that made it and a reason.
//!
//! Each capability's built-in check decides first; what it allows is then
//! asked of the runtime policy ([`cedar`]), which can only deny or ask for
//! approval.

pub mod cedar;
pub(crate) mod gate;

pub use cedar::{PolicyError, RuntimePolicy, TaskHistory};

use std::borrow::Cow;
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

/// Every task's history, for runtime policy: one per task id and issuer
/// (agents of two authorization servers naming the same task id do not
/// share one). At most [`Histories::MAX`] are kept; past that, those no
/// running invocation holds are forgotten.
#[derive(Default)]
pub(crate) struct Histories(Mutex<std::collections::HashMap<Arc<str>, Arc<Mutex<TaskHistory>>>>);

/// Where task histories are shared beyond one process (replicas of a
/// service): each invocation starts from what the store holds for its
/// task, and what it noted is stored before its end is recorded (so
/// before its answer). `store::PgHistory` keeps them in PostgreSQL.
#[async_trait::async_trait]
pub trait HistoryStore: Send + Sync {
    /// What the store holds for the task `key` ([`Histories::key`]).
    async fn load(&self, key: &str) -> Result<TaskHistory, String>;
    /// Adds what one invocation noted to the task `key`'s history.
    async fn save(&self, key: &str, added: &TaskHistory) -> Result<(), String>;
}

impl Histories {
    pub(crate) const MAX: usize = 1 << 16;

    /// A task's key: its id, within its agent's issuer (empty: none).
    pub fn key(issuer: &str, task: &str) -> String {
        if issuer.is_empty() {
            task.to_owned()
        } else {
            format!("{issuer}\n{task}")
        }
    }

    /// The history of `task`, for an agent of `issuer` (empty: none).
    pub(crate) fn of(&self, issuer: &str, task: &Arc<str>) -> Arc<Mutex<TaskHistory>> {
        let key: Arc<str> = if issuer.is_empty() {
            task.clone()
        } else {
            Self::key(issuer, task).into()
        };
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if all.len() >= Self::MAX && !all.contains_key(&key) {
            all.retain(|_, h| Arc::strong_count(h) > 1);
        }
        all.entry(key).or_default().clone()
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
    pub(crate) agent: Option<Arc<crate::agent::Agent>>,
    pub(crate) invocation: Arc<str>,
    pub(crate) history: Arc<Mutex<TaskHistory>>,
    /// What this invocation noted, for a shared [`HistoryStore`].
    pub(crate) added: Option<Arc<Mutex<TaskHistory>>>,
}

/// What a call did, by the sets of the task's history it goes into, as
/// its capability tells it: noted by [`PolicyCtx::remember`].
#[derive(Default)]
pub(crate) struct Did(Vec<(&'static str, String)>);

impl Did {
    /// A file written, `handle:path`.
    pub(crate) fn wrote(&mut self, file: String) {
        self.0.push(("files_written", file));
    }

    pub(crate) fn contacted(&mut self, host: String) {
        self.0.push(("hosts_contacted", host));
    }

    pub(crate) fn deployed(&mut self, target: &str) {
        self.0.push(("targets_deployed", target.to_owned()));
    }

    pub(crate) fn revealed(&mut self, secret: &str) {
        self.0.push(("secrets_revealed", secret.to_owned()));
    }
}

/// The refusal of a call a full set of the task's history could not note:
/// without it, a task that filled the set (4,096 hosts under an egress
/// wildcard, say) would go on unnoted, and a policy forbidding what follows
/// would never fire.
fn full_history(kind: &str) -> Decision {
    let (done, things, thing, text) = match kind {
        "files_written" => ("written", "files", "file", "paths"),
        "hosts_contacted" => ("contacted", "hosts", "host", "names"),
        "targets_deployed" => ("deployed to", "targets", "target", "names"),
        _ => ("revealed", "secrets", "secret", "names"),
    };
    Decision::deny(
        "policy.history",
        format!(
            "this task has {done} as many different {things} as its history keeps for the \
             runtime policy, which reads {kind} ({} {things}, or {} bytes of {text}); a \
             further {thing} would go unnoted, so it is refused",
            cedar::MAX_HISTORY,
            cedar::MAX_HISTORY_BYTES
        ),
    )
}

/// What a question notes in the task's history, and in which set, when a
/// policy reads that set: the file an `fs::write` writes (`handle:path`,
/// redacted as [`PolicyCtx::remember`] notes it), the host an
/// `http::send` reaches, the target a `deploy::run` deploys to, the secret
/// a `secret::reveal` reveals. `None` for any other question.
fn noted_item(
    rules: &cedar::RuntimePolicy,
    action: &str,
    resource: &cedar::Resource<'_>,
    redactor: &crate::redact::Redactor,
) -> Option<(&'static str, String)> {
    let (kind, item) = match (action, resource) {
        ("fs::write", cedar::Resource::Path { handle, path, .. }) => {
            ("files_written", Cow::Owned(format!("{handle}:{path}")))
        }
        ("http::send", cedar::Resource::Host { host, .. }) => {
            ("hosts_contacted", Cow::Borrowed(*host))
        }
        ("deploy::run", cedar::Resource::Target { name, .. }) => {
            ("targets_deployed", Cow::Borrowed(*name))
        }
        ("secret::reveal", cedar::Resource::Secret { name, .. }) => {
            ("secrets_revealed", Cow::Borrowed(*name))
        }
        _ => return None,
    };
    if !rules.reads_history(kind) {
        return None;
    }
    // Only paths are the tool's own words (as `remember` redacts them).
    let item = match kind {
        "files_written" => redactor.redact(&item).into_owned(),
        _ => item.into_owned(),
    };
    Some((kind, item))
}

/// Past this many questions, a call is decided as long work
/// ([`crate::blocking::blocking`]).
const MANY_ASKS: usize = 16;

impl PolicyCtx {
    /// Asks the runtime policy about every question of a call `d` allows,
    /// and notes what the call is about to do — the files it writes, the
    /// host it sends to, the target it deploys to, the secret it reveals —
    /// in each set of the task's history a policy reads, all under one
    /// hold of the history's lock: two calls of one task acting at once
    /// cannot both pass a check the other's note would fail (write once,
    /// deploy once), nor each pass a set with one place left. A call that
    /// then fails stays noted: a request stopped part-way has reached its
    /// host.
    ///
    /// A forbid turns `d` into a denial naming its policies; a call a full
    /// set could not note is refused (`policy.history`). A forbid an
    /// approval lifts leaves `d` allowed, names the policies, and returns
    /// true: the caller must get approval before acting. Nothing is noted
    /// while a person is still to be asked (`required`, or a policy's
    /// approval) unless `approved`: once they are, the call is decided
    /// again and noted then, so its own note cannot refuse it.
    pub(crate) fn decide(
        &self,
        d: &mut Decision,
        asks: &[gate::Ask<'_>],
        redactor: &crate::redact::Redactor,
        how: (bool, bool),
        deadline: std::time::Instant,
    ) -> bool {
        if !d.allow {
            return false;
        }
        // A call of many questions (a subtree's paths) may take the
        // invocation's time: its worker's other invocations go on.
        if asks.len() > MANY_ASKS {
            crate::blocking::blocking(|| self.decide_now(d, asks, redactor, how, deadline))
        } else {
            self.decide_now(d, asks, redactor, how, deadline)
        }
    }

    /// [`Self::decide`] on this thread, of a call `d` allows.
    fn decide_now(
        &self,
        d: &mut Decision,
        asks: &[gate::Ask<'_>],
        redactor: &crate::redact::Redactor,
        (required, approved): (bool, bool),
        deadline: std::time::Instant,
    ) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| i64::try_from(t.as_secs()).unwrap_or(i64::MAX));
        let items: std::collections::BTreeSet<(&str, String)> = (asks.iter())
            .filter_map(|a| noted_item(&self.rules, &a.action, &a.resource, redactor))
            .collect();
        let history = crate::blocking::lock(&self.history);
        // A call the full set cannot hold is refused before anyone is asked.
        for kind in TaskHistory::KINDS {
            let of_kind = (items.iter()).filter(|(k, _)| *k == kind);
            if !(history.set(kind))
                .is_some_and(|set| set.has_room_for(of_kind.map(|(_, i)| i.as_str())))
            {
                *d = full_history(kind);
                return false;
            }
        }
        let mut ask_approval = false;
        for ask in asks {
            // A call of many questions (a subtree's paths, each asked with
            // the task's history) is answered within the invocation's time.
            if std::time::Instant::now() >= deadline {
                *d = Decision::deny(
                    "policy.deadline",
                    format!(
                        "the runtime policy's {} questions about this call were not all \
                         answered within the invocation's deadline",
                        asks.len()
                    ),
                );
                return false;
            }
            ask_approval |= self.ask(&history, d, ask, now);
            if !d.allow {
                return false;
            }
        }
        if items.is_empty() || (!approved && (required || ask_approval)) {
            return ask_approval;
        }
        let items = items.iter().map(|(kind, item)| (*kind, item.as_str()));
        self.note(history, items);
        ask_approval
    }

    /// Notes `items` in the task's `history` (held), and what it keeps of
    /// them (noted now or before) in what this invocation adds to a shared
    /// store: an invocation adds no more than the task's sets keep, nothing
    /// they are too full for, and each item once; and what another
    /// invocation noted but did not store goes with this one.
    fn note<'a>(
        &self,
        mut history: std::sync::MutexGuard<'_, TaskHistory>,
        items: impl Iterator<Item = (&'a str, &'a str)>,
    ) {
        let new: Vec<(&str, &str)> = items
            .filter(|(kind, item)| (history.set_mut(kind)).is_some_and(|set| set.note(item)))
            .collect();
        drop(history);
        if let Some(added) = &self.added {
            let mut added = added.lock().unwrap_or_else(|p| p.into_inner());
            for (kind, item) in new {
                if let Some(set) = added.set_mut(kind) {
                    set.note(item);
                }
            }
        }
    }

    /// One question, against `history` as it stands: see [`Self::decide`].
    fn ask(&self, history: &TaskHistory, d: &mut Decision, ask: &gate::Ask<'_>, now: i64) -> bool {
        let verdict = self.rules.decide(&cedar::Query {
            tool: &self.tool,
            action: &ask.action,
            resource: ask.resource.clone(),
            task: &self.task,
            task_labels: &self.labels,
            agent: self.agent.as_deref(),
            history,
            invocation: &self.invocation,
            detail: ask.detail,
            now,
        });
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

    /// Records what the task did, for later calls' context, the paths
    /// written redacted with the invocation's redactor before each set
    /// keeps them (a path may hold a secret's value the tool revealed, and
    /// the history outlives the invocation, in this process and in a
    /// shared store beyond it): as [`Self::decide`] notes them, once.
    pub(crate) fn remember(&self, redactor: &crate::redact::Redactor, f: impl FnOnce(&mut Did)) {
        let mut did = Did::default();
        f(&mut did);
        // Only what a policy reads is kept: a set none reads would only
        // grow (a rename notes its whole subtree), in memory and in a
        // shared store.
        did.0.retain(|(kind, _)| self.rules.reads_history(kind));
        if did.0.is_empty() {
            return;
        }
        // Only paths are the tool's own words: hosts, targets and secret
        // names come from the grant, and a policy names them as they are.
        let items: Vec<(&str, Cow<'_, str>)> = (did.0.iter())
            .map(|(kind, item)| match *kind {
                "files_written" => (*kind, redactor.redact(item)),
                _ => (*kind, Cow::Borrowed(item.as_str())),
            })
            .collect();
        let items = items.iter().map(|(kind, item)| (*kind, item.as_ref()));
        self.note(crate::blocking::lock(&self.history), items);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_id_is_shared_within_an_issuer_only() {
        let h = Histories::default();
        let task: Arc<str> = "run-1".into();
        let a = h.of("https://a.example", &task);
        assert!(Arc::ptr_eq(&a, &h.of("https://a.example", &task)));
        assert!(!Arc::ptr_eq(&a, &h.of("https://b.example", &task)));
        assert!(!Arc::ptr_eq(&a, &h.of("", &task)));
    }

    /// What a call did is noted once, as `decide` notes it: a long path
    /// redacted, then kept as its head and digest (kept first and then
    /// noted again, it was a digest of the digest, and took two places).
    #[test]
    fn a_long_path_written_is_redacted_then_kept_once() {
        let reads = ctx("permit (principal, action, resource);\n\
             forbid (principal, action, resource) when { context.task.files_written.contains(\"x\") };");
        let r = crate::redact::Redactor::new([("api", "tok-0123456789")]);
        let path = format!("ws:{}tok-0123456789{}", "a".repeat(70), "b".repeat(100));
        reads.remember(&r, |did| did.wrote(path.clone()));
        let mut want = cedar::Noted::default();
        want.note(&r.redact(&path));
        assert_eq!(reads.history.lock().unwrap().files_written, want);
        assert!(want.iter().all(|e| !e.contains("tok-0123")));
    }

    /// A set no policy reads keeps nothing, however much a call did: it
    /// would only grow (a rename notes its whole subtree), in this process
    /// and in a shared store.
    #[test]
    fn what_no_policy_reads_is_not_kept() {
        let ctx = ctx("permit (principal, action, resource);\n\
             forbid (principal, action, resource) when { context.task.hosts_contacted.contains(\"x\") };");
        let none = crate::redact::Redactor::default();
        ctx.remember(&none, |did| {
            for i in 0..100 {
                did.wrote(format!("ws:f{i}"));
            }
            did.deployed("prod");
            did.revealed("key");
            did.contacted("api.example".into());
        });
        let h = ctx.history.lock().unwrap();
        assert!(h.files_written.is_empty() && h.targets_deployed.is_empty());
        assert!(h.secrets_revealed.is_empty());
        assert_eq!(
            h.hosts_contacted.iter().collect::<Vec<_>>(),
            ["api.example"]
        );
    }

    /// What an invocation adds to a shared store is what the task's sets
    /// keep of what it noted: nothing they are too full for (each
    /// invocation added up to a full set's worth of new rows, for every
    /// start to read); what they held before, again (its first invocation
    /// may not have stored it).
    #[test]
    fn an_invocation_adds_only_what_the_tasks_sets_keep() {
        let mut ctx = ctx("permit (principal, action, resource);\n\
             forbid (principal, action, resource) when { context.task.files_written.contains(\"x\") };");
        let added: Arc<Mutex<TaskHistory>> = Arc::default();
        ctx.added = Some(added.clone());
        ctx.history.lock().unwrap().files_written.note("ws:old");
        let none = crate::redact::Redactor::default();
        for _ in 0..3 {
            ctx.remember(&none, |did| {
                did.wrote("ws:old".into());
                did.wrote("ws:new".into());
            });
        }
        let kept = |h: &Arc<Mutex<TaskHistory>>| h.lock().unwrap().files_written.len();
        assert_eq!(
            added
                .lock()
                .unwrap()
                .files_written
                .iter()
                .collect::<Vec<_>>(),
            ["ws:new", "ws:old"]
        );
        ctx.remember(&none, |did| {
            (0..cedar::MAX_HISTORY).for_each(|i| did.wrote(format!("ws:f{i}")))
        });
        assert_eq!(kept(&ctx.history), cedar::MAX_HISTORY);
        assert_eq!(kept(&added), cedar::MAX_HISTORY);
        // The next invocation of the task, its sets full: it adds nothing.
        let next: Arc<Mutex<TaskHistory>> = Arc::default();
        ctx.added = Some(next.clone());
        ctx.remember(&none, |did| {
            (0..100).for_each(|i| did.wrote(format!("ws:g{i}")))
        });
        assert_eq!(kept(&next), 0);
        ctx.remember(&none, |did| did.wrote("ws:old".into()));
        assert_eq!(kept(&next), 1);
    }

    fn ctx(policy: &str) -> PolicyCtx {
        let rules = cedar::RuntimePolicy::parse(&[("p.cedar".into(), policy.into())]).unwrap();
        PolicyCtx {
            rules: Arc::new(rules),
            tool: Arc::new(cedar::ToolFacts {
                name: "t".into(),
                identity: "sha256:0".into(),
                labels: Vec::new(),
            }),
            task: "task".into(),
            labels: Arc::from([]),
            agent: None,
            invocation: "inv".into(),
            history: Arc::default(),
            added: None,
        }
    }

    /// A call's questions are answered within the invocation's deadline:
    /// past it, the call is refused (`policy.deadline`) and nothing noted.
    #[test]
    fn questions_past_the_deadline_refuse_the_call() {
        let ctx = ctx(
            "forbid (principal, action, resource) when { context.task.files_written.contains(\"x\") };",
        );
        let asks: Vec<gate::Ask<'_>> = ["a", "b"]
            .into_iter()
            .map(|path| gate::Ask {
                action: "fs::write".into(),
                detail: "",
                resource: cedar::Resource::Path {
                    handle: "ws",
                    path,
                    host_path: path,
                    labels: &[],
                },
            })
            .collect();
        let none = crate::redact::Redactor::default();
        let now = std::time::Instant::now();
        let mut d = Decision::allow("fs.rights", "granted".into());
        ctx.decide(&mut d, &asks, &none, (false, false), now);
        assert_eq!(d.rule, "policy.deadline");
        assert!(!d.allow);
        assert!(d.reason.contains("2 questions"), "{}", d.reason);
        assert!(ctx.history.lock().unwrap().files_written.is_empty());
        let mut d = Decision::allow("fs.rights", "granted".into());
        let later = now + std::time::Duration::from_secs(60);
        ctx.decide(&mut d, &asks, &none, (false, false), later);
        assert!(d.allow, "{d:?}");
        assert_eq!(ctx.history.lock().unwrap().files_written.len(), 2);
    }
}
