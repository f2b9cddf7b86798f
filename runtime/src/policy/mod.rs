//! The one decision point: every host call passes the [`gate`], and every
//! decision carries the rule that made it and a reason.
//!
//! Each capability's built-in check decides first; what it allows is then
//! asked of the runtime policy ([`cedar`]), which can only deny or ask for
//! approval.

pub mod cedar;
pub(crate) mod gate;

pub use cedar::{PolicyError, RuntimePolicy, TaskHistory};

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

/// The refusal of a write a full `files_written` could not note.
fn full_history() -> Decision {
    Decision::deny(
        "policy.history",
        format!(
            "this task has written as many different files as its history keeps for the \
             runtime policy, which reads files_written ({} files, or {} bytes of paths); a \
             further file would go unnoted, so it is refused",
            cedar::MAX_HISTORY,
            cedar::MAX_HISTORY_BYTES
        ),
    )
}

/// The `files_written` item an `fs::write` question notes: `handle:path`,
/// redacted as [`PolicyCtx::remember`] notes it. `None` for any other.
fn written_item(
    action: &str,
    resource: &cedar::Resource<'_>,
    redactor: &crate::redact::Redactor,
) -> Option<String> {
    match resource {
        cedar::Resource::Path { handle, path, .. } if action == "fs::write" => {
            Some(redactor.redact(&format!("{handle}:{path}")).into_owned())
        }
        _ => None,
    }
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
        redactor: &crate::redact::Redactor,
    ) -> bool {
        if !d.allow {
            return false;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| i64::try_from(t.as_secs()).unwrap_or(i64::MAX));
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        // With a policy that reads `files_written`, a file the full set
        // cannot hold is refused before anyone is asked (and again, under
        // the lock, when it is noted: [`PolicyCtx::reserve`]).
        let written = (self.rules.reads_files_written())
            .then(|| written_item(action, &resource, redactor))
            .flatten();
        if let Some(item) = &written
            && !history.files_written.has_room_for([item.as_str()])
        {
            *d = full_history();
            return false;
        }
        let verdict = self.rules.decide(&cedar::Query {
            tool: &self.tool,
            action,
            resource,
            task: &self.task,
            task_labels: &self.labels,
            agent: self.agent.as_deref(),
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

    /// Notes the files a call allowed (and approved, when a person was
    /// asked) is about to write, before it writes them, under the history's
    /// lock, when a policy reads `files_written`: invocations of one task
    /// writing at once cannot each pass a set with one place left, and a
    /// task that filled it cannot write on unnoted. A refusal when the set
    /// cannot hold them all; nothing is noted then.
    pub(crate) fn reserve(
        &self,
        asks: &[gate::Ask<'_>],
        redactor: &crate::redact::Redactor,
    ) -> Option<Decision> {
        if !self.rules.reads_files_written() {
            return None;
        }
        let items: std::collections::BTreeSet<String> = (asks.iter())
            .filter_map(|a| written_item(&a.action, &a.resource, redactor))
            .collect();
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let set = &mut history.files_written;
        if !set.has_room_for(items.iter().map(String::as_str)) {
            return Some(full_history());
        }
        for item in &items {
            set.note(item);
        }
        None
    }

    /// Records something the task did, for later calls' context, the
    /// paths written redacted with the invocation's redactor: a path may
    /// hold a secret's value the tool revealed, and the history outlives
    /// the invocation (in this process, and in a shared store beyond it).
    pub(crate) fn remember(
        &self,
        redactor: &crate::redact::Redactor,
        f: impl FnOnce(&mut TaskHistory),
    ) {
        let mut noted = TaskHistory::default();
        f(&mut noted);
        // Only paths are the tool's own words: hosts, targets and secret
        // names come from the grant, and a policy names them as they are.
        if !redactor.is_empty() {
            let mut redacted = cedar::Noted::default();
            for file in &noted.files_written {
                redacted.note(&redactor.redact(file));
            }
            noted.files_written = redacted;
        }
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .merge(&noted);
        let Some(added) = &self.added else {
            return;
        };
        added
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .merge(&noted);
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
}
