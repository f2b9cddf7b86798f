//! The gate: the only way a host call of any capability reaches its
//! operation.
//!
//! Every call passes the same steps in the same order:
//!
//! 1. the capability's built-in check (a [`Decision`] it computed with pure
//!    functions — rights, allowlists, grants);
//! 2. the runtime policy (Cedar), asked only about what the check allowed;
//!    it may deny or ask for approval;
//! 3. the decision record;
//! 4. approval, when the manifest or a policy requires it: the request
//!    record, the approver's answer, the answer record;
//! 5. a [`Pass`] — the witness the operation needs, which only this module
//!    can make — carrying the inputs the capability sealed into the call;
//! 6. the operation (the capability's own code, holding the pass);
//! 7. the task's history and the outcome record, which spend the pass
//!    ([`Gate::outcome`]); a pass dropped unspent (its operation stopped
//!    part-way: the invocation ended, was cancelled or ran out of time, or
//!    the tool dropped a `wasi:http` response it was waiting for) records
//!    that outcome itself: `stopped`.
//!
//! A capability never writes its own decision record and never asks the
//! approver itself. A record that cannot be written stops the call
//! ([`AuditFailed`]): nothing happens unrecorded.
//!
//! Because the trail fails closed, a full disk would stop every tool: the
//! gate also holds each invocation to a [`Budget`] of audited host calls and
//! trail bytes, and refuses a call whose resource (a path, a URL) is longer
//! than [`MAX_RESOURCE`] — before anything of it is recorded in full.

use super::cedar::Resource;
use super::{Decision, Did, PolicyCtx};
use crate::approval::Approvals;
use crate::audit::{AuditError, Auditor, Event, Record};
use crate::redact::Redactor;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// The audit trail could not be written: the call fails closed, and the
/// invocation traps with this payload.
#[derive(Debug, Clone, thiserror::Error)]
#[error(transparent)]
pub(crate) struct AuditFailed(pub(crate) Arc<AuditError>);

mod approve;
mod budget;
mod pass;

pub use budget::AuditBudget;
use budget::{Spent, TRIPS, record_size};
pub(crate) use pass::Pass;
use pass::Unspent;

/// The longest resource (a path, a URL, a target) a host call may name, in
/// bytes. Longer ones are refused, and recorded cut to [`SHOWN_OF_LONG`].
pub const MAX_RESOURCE: usize = 8 << 10;
/// How much of an over-long resource its refusal record shows.
const SHOWN_OF_LONG: usize = 256;

/// The most bytes of an approval's summary a person (and the trail) is
/// shown: redacted and escaped first, then cut. Each part a tool chooses
/// is cut to [`SUMMARY_PART`] (contents to [`SUMMARY_CONTENTS`]) first, so
/// the facts an approver needs (where a path resolves, the secret attached,
/// the sizes) are within it however long a path, URL or header is.
pub(crate) const MAX_SUMMARY: usize = 4096;

/// The most bytes of one path, URL or header a summary shows.
pub(crate) const SUMMARY_PART: usize = 512;

/// The most bytes of written contents or a body a summary shows.
pub(crate) const SUMMARY_CONTENTS: usize = 1024;

/// A part of a summary a tool chose, redacted whole (a value split by the
/// cut would keep a prefix no longer whole enough to be found), escaped
/// for people (escaping lengthens: after the cut, hidden characters would
/// make a part up to ten times as long), then cut to `max` bytes with its
/// length as written stated.
pub(crate) fn summary_part(redactor: &Redactor, part: &[u8], max: usize) -> String {
    let found = redactor.redact_found(part, &mut Default::default());
    let redacted = found.as_deref().unwrap_or(part);
    // Escaping only lengthens: `max` bytes of the head are `max` of all.
    let head = String::from_utf8_lossy(&redacted[..redacted.len().min(max + 4)]);
    let shown = crate::redact::escape_control(&head);
    if redacted.len() <= max && shown.len() <= max {
        return shown.into_owned();
    }
    let end = shown.floor_char_boundary(max);
    // The length as written: redacted, it would be longer by a marker's
    // excess where a value held by reference stood past the cut.
    format!("{}…[{} bytes]", &shown[..end], part.len())
}

/// `s` whole, or when longer than `max` bytes its first bytes (on a
/// character boundary) and its length: how a record shows an over-long
/// string.
pub(crate) fn cut(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[{} bytes]", &s[..end], s.len()).into()
}

/// An over-long resource as its refusal record shows it.
fn shown(s: &str, redactor: &Redactor) -> String {
    redactor.redact_cut(s, SHOWN_OF_LONG)
}

/// [`shown`] of `s`, the start (or all) of a resource `len` bytes long.
fn shown_of(s: &str, len: usize, redactor: &Redactor) -> String {
    redactor.redact_cut_of(s, SHOWN_OF_LONG, len)
}

/// One question for the runtime policy: a Cedar action (`fs::write`), the
/// call's detail (`write`), and the resource as policies see it.
pub(crate) struct Ask<'a> {
    pub(crate) action: String,
    pub(crate) detail: &'a str,
    pub(crate) resource: Resource<'a>,
}

/// What an approver is shown and what an answer is bound to.
pub(crate) struct Approval<'a> {
    /// The manifest requires approval for this call.
    pub(crate) required: bool,
    /// e.g. `fs.write`, `http.send`.
    pub(crate) action: &'a str,
    /// What the approval names, e.g. `workspace:a.txt` or a target.
    pub(crate) resource: &'a str,
    /// Canonical arguments the digest binds (e.g. a content digest).
    pub(crate) args: &'a str,
    /// The arguments for a person to read; built only when asked.
    pub(crate) summary: &'a (dyn Fn() -> String + Sync),
}

impl Approval<'static> {
    /// No approval required by the manifest (a policy may still ask).
    pub(crate) fn none() -> Self {
        Approval {
            required: false,
            action: "",
            resource: "",
            args: "",
            summary: &String::new,
        }
    }
}

/// A typed host call on its way to its operation.
pub(crate) struct HostCall<'a, T> {
    /// Capability family and action as the audit names them (`fs`, `write`).
    pub(crate) capability: &'static str,
    pub(crate) action: &'a str,
    /// What the call acts on, as the audit shows it.
    pub(crate) resource: &'a str,
    /// The length of what the call names when `resource` is that cut
    /// (`None`: it is whole): a path of megabytes is refused by its length,
    /// not quoted whole first.
    pub(crate) whole: Option<usize>,
    /// The capability's built-in decision.
    pub(crate) check: Decision,
    /// What to ask the runtime policy (only asked when the check allows).
    pub(crate) asks: Vec<Ask<'a>>,
    pub(crate) approval: Approval<'a>,
    /// The address an egress request will connect to, audited with the
    /// decision.
    pub(crate) address: Option<SocketAddr>,
    /// What the operation needs, sealed until the call passes.
    pub(crate) sealed: T,
}

/// The gate of one invocation. Cheap to clone: a `wasi:http` request takes
/// a clone into its future.
#[derive(Clone)]
pub(crate) struct Gate {
    audit: Auditor,
    policy: Option<PolicyCtx>,
    approvals: Arc<Approvals>,
    /// Approval requests made so far in this invocation (numbers digests),
    /// held while the invocation waits for an answer: one question at a
    /// time, so a tool's calls in flight cannot open several prompts at
    /// once (a person's `y` then answering another than the one shown).
    approving: Arc<tokio::sync::Mutex<u64>>,
    redactor: Arc<Redactor>,
    deadline: Instant,
    /// Most bytes one host call may carry.
    hostcall_limit: usize,
    budget: AuditBudget,
    spent: Arc<Spent>,
}

impl Gate {
    pub(crate) fn new(
        audit: Auditor,
        policy: Option<PolicyCtx>,
        approvals: Arc<Approvals>,
        redactor: Arc<Redactor>,
        deadline: Instant,
        hostcall_limit: usize,
        budget: AuditBudget,
    ) -> Gate {
        Gate {
            audit,
            policy,
            approvals,
            approving: Arc::default(),
            redactor,
            deadline,
            hostcall_limit,
            budget,
            spent: Arc::default(),
        }
    }

    /// Whether the invocation has used up its [`AuditBudget`], or tripped
    /// the gate (a tool's log messages are dropped then).
    pub(crate) fn over_budget(&self) -> bool {
        self.spent.tripped.get().is_some()
            || self.spent.told.load(Ordering::Relaxed)
            || self.spent.bytes.load(Ordering::Relaxed) >= self.budget.bytes
    }

    /// Admits a call to the gate: charges it to the budget, and refuses it
    /// (recorded, unless the budget's refusal already was) past the budget
    /// or when its resource is over-long.
    fn admit(
        &self,
        capability: &'static str,
        action: &str,
        (resource, named): (&str, usize),
    ) -> Result<Option<Decision>, AuditFailed> {
        let calls = self.spent.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let bytes = self.spent.bytes.load(Ordering::Relaxed);
        if calls > self.budget.calls || bytes >= self.budget.bytes {
            let over = (calls > self.budget.calls).then_some(calls);
            return self.spent_out(capability, action, resource, over).map(Some);
        }
        if let Some(d) = self.tripped(capability)? {
            return Ok(Some(d));
        }
        if let Some(d) = self.guessed(capability, action, resource)? {
            return Ok(Some(d));
        }
        if named > MAX_RESOURCE {
            let d = Decision::deny(
                "limits.resource",
                format!(
                    "the {capability} {action} call names a resource of {named} bytes, more than the limit of {MAX_RESOURCE} bytes"
                ),
            );
            self.write(&self.audit.decision(
                capability,
                action,
                &shown_of(resource, named, &self.redactor),
                &d,
            ))?;
            return Ok(Some(d));
        }
        Ok(None)
    }

    /// The refusal (recorded, and tripping the gate) of a call whose
    /// resource or action holds the value of a secret the tool holds only
    /// by reference: a guess (or a copy the tool came upon), which the
    /// record's size or a marker in a refusal quoting it would confirm.
    /// Requests are scanned whole by their own check (`Egress::guessed`)
    /// before the gate.
    fn guessed(
        &self,
        capability: &'static str,
        action: &str,
        resource: &str,
    ) -> Result<Option<Decision>, AuditFailed> {
        if capability == "http" {
            return Ok(None);
        }
        // As far as any record redacts it (a resource of megabytes is
        // refused for its size, its first part shown).
        let in_text = |t: &str| {
            let head = &t[..t.floor_char_boundary(crate::redact::REDACT_WITHIN)];
            self.redactor.guessed(head.as_bytes())
        };
        // A resource may come redacted already (a path a link leads to):
        // a marker in it stands for a value the tool wrote.
        let marked = || self.redactor.hidden_marked(resource.as_bytes());
        let found = in_text(resource)
            .or_else(|| in_text(action))
            .or_else(marked);
        let Some(name) = found else {
            return Ok(None);
        };
        let what = format!("the {capability} {action} call");
        self.refuse_guess(
            Redactor::guess_reason(&what, &name),
            capability,
            action,
            resource,
        )
        .map(Some)
    }

    /// Records `reason`, a guess at a secret held by reference, as a
    /// `secret.guessed` refusal, and trips the gate.
    pub(crate) fn refuse_guess(
        &self,
        reason: String,
        capability: &'static str,
        action: &str,
        resource: &str,
    ) -> Result<Decision, AuditFailed> {
        let d = Decision::deny("secret.guessed", reason);
        let _ = self.spent.tripped.set("secret.guessed");
        let shown = shown(resource, &self.redactor);
        let action = self.redactor.redact(action);
        self.write(&self.audit.decision(capability, &action, &shown, &d))?;
        Ok(d)
    }

    /// The refusal (recorded) of a call after the invocation attempted an
    /// exfiltration ([`TRIPS`]), if it did.
    fn tripped(&self, capability: &'static str) -> Result<Option<Decision>, AuditFailed> {
        let Some(rule) = self.spent.tripped.get() else {
            return Ok(None);
        };
        let d = Decision::deny(
            "gate.tripped",
            format!("no further host calls: this invocation attempted an exfiltration ({rule})"),
        );
        // The first refusal is recorded, the rest are not: records the
        // tool went on making would each charge the audit budget their
        // size, redacted, and where the budget ran out would tell it what
        // they held.
        // That one names the capability alone: the tool chose the rest,
        // which may hold guesses, and their size would tell again.
        if self.spent.refused_tripped.fetch_add(1, Ordering::Relaxed) == 0 {
            self.write(&self.audit.decision(capability, "", "", &d))?;
        }
        Ok(Some(d))
    }

    /// Whether the invocation has attempted an exfiltration: its host
    /// calls are refused from then on ([`TRIPS`]).
    pub(crate) fn is_tripped(&self) -> bool {
        self.spent.tripped.get().is_some()
    }

    pub(crate) fn hostcall_limit(&self) -> usize {
        self.hostcall_limit
    }

    /// Whether runtime policy is loaded (capabilities build [`Ask`]s only
    /// then).
    pub(crate) fn has_policy(&self) -> bool {
        self.policy.is_some()
    }

    pub(crate) fn audit(&self) -> &Auditor {
        &self.audit
    }

    /// The runtime policy's refusal of `asks` on their own, if it refuses
    /// them; nothing is noted in the task's history (asked as before a
    /// person is). For a capability whose own check would refuse with a
    /// reason that tells something of what the policy forbids reading (a
    /// deploy artifact's contents): the policy's refusal is given instead.
    pub(crate) fn policy_refusal(&self, asks: &[Ask<'_>]) -> Option<Decision> {
        let policy = self.policy.as_ref()?;
        let mut d = Decision::allow("policy", String::new());
        policy.decide(&mut d, asks, &self.redactor, (true, false), self.deadline);
        (!d.allow).then_some(d)
    }

    pub(crate) fn redactor(&self) -> &Arc<Redactor> {
        &self.redactor
    }

    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Decides `call`, records the decision, asks for approval when needed,
    /// and hands back a [`Pass`] — or the denial, already recorded.
    pub(crate) async fn pass<T>(
        &self,
        call: HostCall<'_, T>,
    ) -> Result<Result<Pass<'_, T>, Decision>, AuditFailed> {
        let HostCall {
            capability,
            action,
            resource,
            whole,
            check: mut decision,
            asks,
            approval,
            address,
            sealed,
        } = call;
        let named = whole.unwrap_or(resource.len());
        if let Some(refusal) = self.admit(capability, action, (resource, named))? {
            return Ok(Err(refusal));
        }
        // Decided and, unless a person is to be asked, noted in the task's
        // history in one step (`PolicyCtx::decide`).
        let ask_approval = (self.policy.as_ref()).is_some_and(|policy| {
            policy.decide(
                &mut decision,
                &asks,
                &self.redactor,
                (approval.required, false),
                self.deadline,
            )
        });
        let approved = approval.required || ask_approval;
        let mut record = self.audit.decision(capability, action, resource, &decision);
        record.address = address.map(|a| a.to_string());
        if !decision.allow {
            if let Some(rule) = TRIPS.iter().find(|r| **r == decision.rule) {
                let _ = self.spent.tripped.set(rule);
            }
            self.write(&record)?;
            // Reasons quote tool-chosen strings (URLs, paths): redacted and
            // with control characters escaped, like everything else that
            // leaves the host.
            let reason = self.redactor.redact(&decision.reason);
            let reason = crate::redact::escape_control(&reason);
            tracing::debug!(tool = %self.audit.tool, capability, "denied: {reason}");
            return Ok(Err(decision));
        }
        let call = Unspent::allowed(self, &record, capability, action, resource)?;
        if approved {
            // Boxed: waiting for a person is the rare path, and its state
            // would otherwise size the future of every host call (each
            // one resident while its call waits; the `mcp` bench).
            let answer = Box::pin(self.approve(&approval)).await?;
            if !answer.allow {
                call.spend(); // the answer's record tells it
                return Ok(Err(answer));
            }
            // Tripped while the person was asked: not sent all the same.
            if let Some(refusal) = self.tripped(capability)? {
                call.spend(); // its record tells it
                return Ok(Err(refusal));
            }
            if let Some(refusal) = self.reconsider(&asks, capability, action, resource)? {
                call.spend(); // its record tells it
                return Ok(Err(refusal));
            }
        }
        Ok(Ok(Pass {
            approved,
            call,
            sealed,
        }))
    }

    /// Records a call its built-in check refused (`refusal.allow` is
    /// false), through [`Gate::pass`] like any other; returns the denial.
    pub(crate) async fn refuse(
        &self,
        capability: &'static str,
        action: &str,
        resource: &str,
        refusal: Decision,
    ) -> Result<Decision, AuditFailed> {
        let call = HostCall {
            whole: None,
            capability,
            action,
            resource,
            check: Decision {
                allow: false,
                ..refusal
            },
            asks: Vec::new(),
            approval: Approval::none(),
            address: None,
            sealed: (),
        };
        Ok(match self.pass(call).await? {
            Err(d) => d,
            // A call whose check denies never passes; kept total without a panic.
            Ok(_) => Decision::deny("gate", "refused".into()),
        })
    }

    /// Notes in the task's history (for later calls' policy context) what
    /// an operation that can be stopped part-way — a request, a deployment
    /// — is about to do, before it begins: one stopped before its outcome
    /// has reached its host or target all the same.
    pub(crate) fn note(&self, remember: impl FnOnce(&mut Did)) {
        if let Some(p) = &self.policy {
            p.remember(&self.redactor, remember);
        }
    }

    /// Spends the pass of an operation that succeeded, for a capability
    /// whose outcome carries no facts of its own (fs, secrets, identity):
    /// notes what the task did, and writes an `outcome` record when an
    /// approver was asked. A routine success is implied by the call's allow
    /// decision and writes nothing, which keeps the trail (and the cost of a
    /// call) to what a reader needs.
    pub(crate) fn done<T>(
        &self,
        pass: Pass<'_, T>,
        remember: impl FnOnce(&T, &mut Did),
    ) -> Result<(), AuditFailed> {
        if pass.approved {
            return self.outcome(pass, Event::Outcome, remember, |r| {
                r.outcome = Some("ok".into())
            });
        }
        if let Some(p) = &self.policy {
            p.remember(&self.redactor, |h| remember(&pass.sealed, h));
        }
        pass.call.spend();
        Ok(())
    }

    /// Spends the pass of an operation that failed: an `outcome` record
    /// saying why when an approver was asked or the operation `changes`
    /// state (it may have been half made); otherwise the tool's error and
    /// the invocation's end record tell it, as for any failure.
    pub(crate) fn failed<T>(
        &self,
        pass: Pass<'_, T>,
        message: &str,
        changes: bool,
    ) -> Result<(), AuditFailed> {
        if !pass.approved && !changes {
            pass.call.spend();
            return Ok(());
        }
        self.outcome(
            pass,
            Event::Outcome,
            |_, _| {},
            |r| {
                r.outcome = Some("error".into());
                r.message = Some(message.to_owned());
            },
        )
    }

    /// Spends a pass after its operation: notes what the task did (for
    /// later calls' policy context; `remember` sees what was sealed), then
    /// writes the outcome record — `event` with the call's capability,
    /// action and resource, filled in by `fill` (which may name them more
    /// precisely, e.g. a deploy's backend and artifact digest).
    pub(crate) fn outcome<T>(
        &self,
        pass: Pass<'_, T>,
        event: Event,
        remember: impl FnOnce(&T, &mut Did),
        fill: impl FnOnce(&mut Record),
    ) -> Result<(), AuditFailed> {
        if let Some(p) = &self.policy {
            p.remember(&self.redactor, |h| remember(&pass.sealed, h));
        }
        pass.call.settle(|op| {
            let mut r = self.audit.record(event);
            fill(&mut r);
            r.capability.get_or_insert_with(|| op.capability.into());
            r.action.get_or_insert(op.action);
            r.resource.get_or_insert(op.resource);
            r
        })
    }

    /// Spends a pass whose operation was refused by the sandbox itself
    /// (e.g. cap-std refusing a symlink out of a handle): the refusal is a
    /// decision of its own, recorded as the outcome.
    pub(crate) fn refused<T>(&self, pass: Pass<'_, T>, d: &Decision) -> Result<(), AuditFailed> {
        pass.call.settle(|op| {
            self.audit
                .decision(op.capability, &op.action, &op.resource, d)
        })
    }

    /// Writes a record (and charges it to the budget): decisions, outcomes,
    /// a tool's log messages.
    pub(crate) fn write(&self, record: &Record) -> Result<(), AuditFailed> {
        self.charge(record);
        self.audit
            .write(record)
            .map_err(|e| AuditFailed(Arc::new(e)))
    }
}
