//! Waiting for a person: one approval at a time per invocation, both the
//! request and the answer recorded, and the runtime policy asked again
//! once the answer came (the task may have done more meanwhile).

use super::{Approval, Ask, AuditFailed, Gate, MAX_SUMMARY};
use crate::approval::ApprovalRequest;
use crate::audit::Event;
use crate::policy::Decision;
use crate::redact::escape_control;
use std::sync::atomic::Ordering;

impl Gate {
    /// Asks the approver; both the request and the answer are recorded.
    /// One question at a time: a call waits here for any other of its
    /// invocation's questions to be answered first.
    pub(super) async fn approve(&self, a: &Approval<'_>) -> Result<Decision, AuditFailed> {
        // What a person would be shown, redacted: a value held by
        // reference in it (a file's contents, a path) would be a marker
        // the agent reads in its own approval prompt.
        let summary = self.redactor.redact_string((a.summary)());
        let shown = [summary.as_bytes(), a.resource.as_bytes()];
        let marked = shown.iter().find_map(|t| self.redactor.hidden_marked(t));
        if let Some(name) = marked.or_else(|| self.redactor.guessed(a.args.as_bytes())) {
            let what = "the approval request";
            let reason = crate::redact::Redactor::guess_reason(what, &name);
            return self.refuse_guess(reason, "approval", a.action, a.resource);
        }
        let mut asked = self.approving.lock().await;
        // Admitted before the questions ahead of it were recorded: a
        // tool's thousands of gated calls, queued here, would each record
        // a request and an answer past the audit budget, and a person be
        // asked about calls the gate has since tripped on.
        if let Some(refusal) = self.tripped("approval")? {
            return Ok(refusal);
        }
        if self.spent.bytes.load(Ordering::Relaxed) >= self.budget.bytes {
            return self.spent_out("approval", a.action, a.resource, None);
        }
        let number = *asked;
        *asked += 1;
        let audit = &self.audit;
        let request = ApprovalRequest {
            digest: crate::approval::digest(
                &audit.identity,
                &audit.task,
                &audit.invocation,
                number,
                a.action,
                a.resource,
                a.args,
            ),
            tool: audit.tool.to_string(),
            identity: audit.identity.to_string(),
            task: audit.task.to_string(),
            agent: audit.agent.as_deref().map(str::to_owned),
            invocation: audit.invocation.to_string(),
            action: a.action.to_owned(),
            resource: escape_control(&self.redactor.redact(a.resource)).into_owned(),
            summary: summary_shown(&summary),
        };
        let mut r = audit.record(Event::ApprovalRequested);
        r.capability = Some("approval".into());
        r.action = Some(a.action.to_owned());
        r.resource = Some(request.resource.clone());
        r.message = Some(request.summary.clone());
        r.reason = Some(format!("digest {}", request.digest));
        self.write(&r)?;
        let verdict = self.approvals.decide(&request, self.deadline).await;
        let answer = if verdict.approved {
            Decision::allow("approval", verdict.reason)
        } else {
            Decision::deny("approval", verdict.reason)
        };
        self.write(&audit.decision("approval", a.action, &request.resource, &answer))?;
        Ok(answer)
    }

    /// The runtime policy's questions asked again after an approval: what
    /// the task did while the person was asked (a secret revealed by the
    /// tool's other calls, say) may forbid the call now. A refusal is
    /// recorded and returned; an approval the policy would ask for again
    /// is the one just given.
    pub(super) fn reconsider(
        &self,
        asks: &[Ask<'_>],
        capability: &'static str,
        action: &str,
        resource: &str,
    ) -> Result<Option<Decision>, AuditFailed> {
        let Some(policy) = self.policy.as_ref().filter(|_| !asks.is_empty()) else {
            return Ok(None);
        };
        // Decided again and noted in one step (`PolicyCtx::decide`).
        let mut decision = Decision::allow("policy", "allowed again after the approval".into());
        policy.decide(
            &mut decision,
            asks,
            &self.redactor,
            (true, true),
            self.deadline,
        );
        if !decision.allow {
            self.write(&self.audit.decision(capability, action, resource, &decision))?;
            return Ok(Some(decision));
        }
        Ok(None)
    }
}

/// A redacted summary as a person sees it: escaped, cut to [`MAX_SUMMARY`].
/// Escaping only lengthens, so only the first `MAX_SUMMARY` bytes are
/// escaped (a write's contents may be megabytes).
fn summary_shown(redacted: &str) -> String {
    let end = redacted.floor_char_boundary(MAX_SUMMARY);
    let head = escape_control(&redacted[..end]);
    if head.len() <= MAX_SUMMARY && end == redacted.len() {
        return head.into_owned();
    }
    let keep = head.floor_char_boundary(MAX_SUMMARY);
    format!("{}…[{} bytes]", &head[..keep], redacted.len())
}
