//! Approval gates: an action the manifest marks `approval = "required"`
//! waits, inside its host call and within the invocation's deadline, for an
//! [`Approver`].
//!
//! What is approved is a digest over the tool's identity, the task, the
//! invocation, a per-invocation request number, the action, the resource and
//! the canonical arguments. An answer counts only for the request whose
//! digest it names, only once, and only before the request expires: a
//! changed argument, another invocation or a replayed answer does not match.
//! Denied, timed out or unanswered means `denied`.

use crate::redact::escape_control;

mod terminal;
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
pub use terminal::TerminalApprover;
#[cfg(test)]
use terminal::prompt;

/// How long a request waits for an answer, at most (and never past the
/// invocation deadline).
pub const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(300);

/// One action waiting for approval.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ApprovalRequest {
    /// What an answer must name to count (SHA-256, hex).
    pub digest: String,
    pub tool: String,
    /// The tool's identity, `sha256:…`.
    pub identity: String,
    pub task: String,
    /// The agent the task runs for, when one authenticated
    /// (`oauth:ISSUER SUBJECT`, `spiffe:ID`, `static-token:NAME`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    pub invocation: String,
    /// e.g. `fs.write`, `http.send`, `secret.reveal`, `deploy.run`.
    pub action: String,
    /// e.g. `workspace:.github/workflows/ci.yml`.
    pub resource: String,
    /// The arguments, for a person to read (values such as file contents
    /// appear as sizes and digests).
    pub summary: String,
}

/// An approver's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalAnswer {
    /// The digest of the request this answers.
    pub digest: String,
    pub approved: bool,
    /// Who or what answered, for the audit trail.
    pub by: String,
}

/// Something that answers approval requests: a person at a terminal, a
/// webhook, a queue a UI drains. `None` means no answer.
#[async_trait::async_trait]
pub trait Approver: Send + Sync {
    async fn ask(&self, request: &ApprovalRequest) -> Option<ApprovalAnswer>;
}

/// Answers every request with a denial: the default when nothing can ask a
/// person.
pub struct DenyAll;

#[async_trait::async_trait]
impl Approver for DenyAll {
    async fn ask(&self, request: &ApprovalRequest) -> Option<ApprovalAnswer> {
        Some(ApprovalAnswer {
            digest: request.digest.clone(),
            approved: false,
            by: "deny-all (no approver configured)".into(),
        })
    }
}

impl ApprovalRequest {
    /// The request as a person is shown it (a terminal, a webhook, the
    /// pending approvals endpoint): every field with its control characters
    /// escaped, so a tool-chosen path or URL can neither rewrite a
    /// terminal's lines nor forge one. The fields are listed exhaustively:
    /// a new field does not compile until it is decided here.
    pub fn for_people(&self) -> ApprovalRequest {
        let ApprovalRequest {
            digest,
            tool,
            identity,
            task,
            agent,
            invocation,
            action,
            resource,
            summary,
        } = self;
        let e = |s: &String| escape_control(s).into_owned();
        ApprovalRequest {
            digest: e(digest),
            tool: e(tool),
            identity: e(identity),
            task: e(task),
            agent: agent.as_ref().map(e),
            invocation: e(invocation),
            action: e(action),
            resource: e(resource),
            summary: e(summary),
        }
    }
}

/// POSTs each request as JSON to a URL and waits for the answer
/// `{"digest": "…", "approved": true|false, "by": "…"}` (the field names
/// the approvals endpoint takes too).
///
/// With a signing key ([`WebhookApprover::signed_by`]) each request carries
/// `Warden-Signature: t=UNIX_SECONDS,kid=KID,ed25519=SIG`: an Ed25519
/// signature (base64url) over `warden-approval/1\n{t}\n{body}`, so a
/// receiver holding the key's JWKS can tell the request came from this
/// host, unchanged, and recently. A failure (unreachable, a status other
/// than 2xx, an answer that is not the expected JSON) is logged with its
/// reason, and the request is denied.
pub struct WebhookApprover {
    url: String,
    /// The URL as logs and the trail show it: no user, password, query or
    /// fragment (where a webhook's own token usually sits).
    shown: String,
    client: reqwest::Client,
    signer: Option<Arc<crate::KeyPair>>,
}

/// The most bytes of a webhook's answer read.
const MAX_ANSWER: usize = 64 << 10;
/// The most characters of the approver's name a webhook answer gives.
const MAX_BY: usize = 128;

/// The header of a signed webhook request.
pub const SIGNATURE_HEADER: &str = "warden-signature";

/// What a webhook request's signature covers: `body` sent at `t`.
pub fn webhook_message(t: u64, body: &str) -> String {
    format!("warden-approval/1\n{t}\n{body}")
}

impl WebhookApprover {
    /// A webhook's URL as it is shown anywhere: its origin (a chat
    /// webhook's token rides in its path, another's in its query).
    pub fn shown(url: &str) -> String {
        crate::net::shown_origin(url)
    }

    pub fn new(url: &str) -> Result<WebhookApprover, String> {
        // Its errors name it by its origin too.
        crate::net::parse_url(url).map_err(|e| e.replace(url, &Self::shown(url)))?;
        let client = crate::net::client_builder()
            .build()
            .map_err(|e| e.to_string())?;
        // Its origin only: a chat webhook's token rides in its path
        // (`/services/T0/B0/<token>`), and this name is in every ruling
        // the webhook gives, recorded and handed to the tool.
        let shown = Self::shown(url);
        Ok(WebhookApprover {
            url: url.to_owned(),
            shown,
            client,
            signer: None,
        })
    }

    /// Signs every request with `key` (see the type's documentation).
    pub fn signed_by(mut self, key: Arc<crate::KeyPair>) -> WebhookApprover {
        self.signer = Some(key);
        self
    }

    /// Logs why the webhook gave no answer; the request is then denied.
    fn failed(&self, why: &str) -> Option<ApprovalAnswer> {
        tracing::warn!(
            "approval webhook {}: {}; the request is denied",
            escape_control(&self.shown),
            escape_control(&why.chars().take(512).collect::<String>())
        );
        None
    }
}

#[async_trait::async_trait]
impl Approver for WebhookApprover {
    async fn ask(&self, r: &ApprovalRequest) -> Option<ApprovalAnswer> {
        let r = r.for_people();
        let body = serde_json::json!({
            "digest": r.digest, "tool": r.tool, "identity": r.identity, "task": r.task,
            "agent": r.agent, "invocation": r.invocation, "action": r.action,
            "resource": r.resource, "summary": r.summary,
        })
        .to_string();
        let mut req = self
            .client
            .post(&self.url)
            .header("content-type", "application/json");
        if let Some(key) = &self.signer {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let sig = key.sign_raw(webhook_message(t, &body).as_bytes());
            req = req.header(
                SIGNATURE_HEADER,
                format!("t={t},kid={},ed25519={sig}", key.kid()),
            );
        }
        let resp = match req.body(body).send().await {
            Ok(resp) => resp,
            Err(e) => {
                let e = e.without_url();
                return self.failed(&format!("cannot send the request: {e}"));
            }
        };
        let status = resp.status();
        // An answer is a few fields: read at most MAX_ANSWER of it.
        let mut resp = resp;
        let mut bytes = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) if bytes.len() + chunk.len() <= MAX_ANSWER => {
                    bytes.extend_from_slice(&chunk);
                }
                Ok(Some(_)) => {
                    return self.failed(&format!("the answer is over {} KiB", MAX_ANSWER >> 10));
                }
                Ok(None) => break,
                Err(e) => {
                    let e = e.without_url();
                    return self.failed(&format!("cannot read the answer: {e}"));
                }
            }
        }
        if !status.is_success() {
            return self.failed(&format!(
                "answered {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(256)])
            ));
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            digest: String,
            approved: bool,
            by: Option<String>,
        }
        let answer: Answer = match serde_json::from_slice(&bytes) {
            Ok(a) => a,
            Err(e) => {
                return self.failed(&format!(
                    "the answer is not {{\"digest\", \"approved\": true|false, \"by\"}}: {e}"
                ));
            }
        };
        Some(ApprovalAnswer {
            digest: answer.digest,
            approved: answer.approved,
            by: format!(
                "webhook {} ({})",
                self.shown,
                answer
                    .by
                    .as_deref()
                    .unwrap_or("unnamed")
                    .chars()
                    .take(MAX_BY)
                    .collect::<String>()
            ),
        })
    }
}

/// The outcome of one approval request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruling {
    pub approved: bool,
    /// Why, naming who answered.
    pub reason: String,
}

/// Keeps requests until someone answers them from elsewhere: the pending
/// approvals endpoint of `warden serve --approvals ADDR` lists them and takes
/// answers. A request leaves the queue when answered or when it expires.
#[derive(Default)]
pub struct QueueApprover {
    pending: Mutex<Vec<Queued>>,
}

struct Queued {
    request: ApprovalRequest,
    since: Instant,
    answer: tokio::sync::oneshot::Sender<ApprovalAnswer>,
}

/// A request waiting in a [`QueueApprover`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct Waiting {
    #[serde(flatten)]
    pub request: ApprovalRequest,
    /// Seconds it has been waiting.
    pub waiting_s: f64,
}

impl QueueApprover {
    pub fn new() -> QueueApprover {
        QueueApprover::default()
    }

    /// The requests waiting now, oldest first.
    pub fn pending(&self) -> Vec<Waiting> {
        let mut q = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        q.retain(|w| !w.answer.is_closed());
        q.iter()
            .map(|w| Waiting {
                request: w.request.for_people(),
                waiting_s: w.since.elapsed().as_secs_f64(),
            })
            .collect()
    }

    /// Answers the waiting request with `digest`; false when none waits.
    pub fn answer(&self, digest: &str, approved: bool, by: &str) -> bool {
        let mut q = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let Some(i) = q.iter().position(|w| w.request.digest == digest) else {
            return false;
        };
        let w = q.remove(i);
        w.answer
            .send(ApprovalAnswer {
                digest: digest.to_owned(),
                approved,
                by: by.to_owned(),
            })
            .is_ok()
    }
}

/// Where requests wait for an operator: what the pending approvals
/// endpoint lists and answers ([`QueueApprover`] in one process,
/// `store::PgApprover` across replicas).
#[async_trait::async_trait]
pub trait ApprovalQueue: Send + Sync {
    /// The requests waiting now, oldest first, escaped for people.
    async fn waiting(&self) -> Result<Vec<Waiting>, String>;
    /// Answers the waiting request with `digest`: `Ok(false)` when none
    /// waits (answered, expired or never asked).
    async fn answer_waiting(&self, digest: &str, approved: bool, by: &str) -> Result<bool, String>;
}

#[async_trait::async_trait]
impl ApprovalQueue for QueueApprover {
    async fn waiting(&self) -> Result<Vec<Waiting>, String> {
        Ok(self.pending())
    }

    async fn answer_waiting(&self, digest: &str, approved: bool, by: &str) -> Result<bool, String> {
        Ok(self.answer(digest, approved, by))
    }
}

#[async_trait::async_trait]
impl Approver for QueueApprover {
    async fn ask(&self, request: &ApprovalRequest) -> Option<ApprovalAnswer> {
        let (answer, rx) = tokio::sync::oneshot::channel();
        {
            let mut q = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            // When the approvals give up (timeout, a call dropped), `rx` is
            // dropped: its entry is swept by the next request or listing,
            // so requests a tool asks and drops in a loop, with no one
            // listing, cannot pile up.
            q.retain(|w| !w.answer.is_closed());
            q.push(Queued {
                request: request.clone(),
                since: Instant::now(),
                answer,
            });
        }
        rx.await.ok()
    }
}

/// Asks the approver for one runtime, and enforces expiry of answers and
/// that an answer is for the request asked (the digests come from the gate,
/// [`crate::policy::gate`]).
///
/// An answer is used once: a request's digest binds its invocation's id and
/// its number among the invocation's requests, so no two requests share
/// one, and an answer is taken only for the request whose digest it names.
/// No set of answers already used is kept (one kept for the runtime's life
/// grew by every request a tool could make be denied, for ever).
pub struct Approvals {
    approver: Arc<dyn Approver>,
    timeout: Duration,
}

impl Approvals {
    pub fn new(approver: Arc<dyn Approver>, timeout: Duration) -> Approvals {
        Approvals { approver, timeout }
    }

    /// The same timeout, asking `approver` instead.
    pub fn with_approver(&self, approver: Arc<dyn Approver>) -> Approvals {
        Approvals::new(approver, self.timeout)
    }

    /// Asks for approval of `request`, waiting until `deadline` at the latest.
    pub async fn decide(&self, request: &ApprovalRequest, deadline: Instant) -> Ruling {
        let wait = self
            .timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        let deny = |reason: String| Ruling {
            approved: false,
            reason,
        };
        let answer = match tokio::time::timeout(wait, self.approver.ask(request)).await {
            Err(_) => return deny(format!("approval timed out after {}s", wait.as_secs_f32())),
            Ok(None) => return deny("approval was not answered".into()),
            Ok(Some(a)) => ApprovalAnswer {
                by: escape_control(&a.by).into_owned(),
                ..a
            },
        };
        if answer.digest != request.digest {
            return deny(format!(
                "the answer from {} is for another request (a changed argument, another invocation or a replay)",
                answer.by
            ));
        }
        if answer.approved {
            Ruling {
                approved: true,
                reason: format!("approved by {}", answer.by),
            }
        } else {
            deny(format!("denied by {}", answer.by))
        }
    }
}

/// The digest of a request: SHA-256 over its identifying fields, the
/// request number within the invocation, and the canonical arguments.
#[allow(clippy::too_many_arguments)]
pub(crate) fn digest(
    identity: &str,
    task: &str,
    invocation: &str,
    number: u64,
    action: &str,
    resource: &str,
    args: &str,
) -> String {
    let canonical = serde_json::json!([
        "warden-approval/1",
        identity,
        task,
        invocation,
        number,
        action,
        resource,
        args
    ]);
    hex::encode(Sha256::digest(canonical.to_string()))
}

#[cfg(test)]
#[path = "approval_tests.rs"]
mod tests;
