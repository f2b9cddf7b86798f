//! Approval round trips across replicas. A 2026-07-28 client asked to
//! approve gets an input-required result with a `requestState`, and
//! answers by retrying the call with it; behind a round-robin front the
//! retry may reach another replica than the one running the call. With a
//! [`RoundStore`] (`serve --state`) it may:
//!
//! 1. the replica running the call (its owner) parks it in the store
//!    under the SHA-256 of the state, before the client learns the state;
//! 2. a retry that reaches another replica records the answer there, once
//!    ([`RoundStore::answer`]), and waits for the call's answer;
//! 3. the owner takes the answer up ([`pick_up`], every [`LOOK`]), hands
//!    it to the waiting invocation, runs the call on (to its end or its
//!    next approval) and writes its answer ([`RoundStore::done`]);
//! 4. the answering replica returns that answer to the client.
//!
//! A retry that reaches the owner takes the round in the store first
//! ([`RoundStore::take`]): an answer counts once wherever it arrives. The
//! state itself, which answers the call, is never stored.

use super::WardenMcp;
use super::call::{APPROVAL, Caller, Parked, Pending, Running, approves, failure, prompt};
use crate::agent::Agent;
use crate::approval::ApprovalAnswer;
use rmcp::ErrorData as McpError;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ElicitRequest, InputRequest,
    InputRequests, InputRequiredResult,
};
use serde_json::Value;
use serde_json::json;
use sha2::Digest as _;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How often the owner looks for answers given elsewhere (only while it
/// has parked calls), and how often an answering replica looks for the
/// call's answer.
pub(crate) const LOOK: Duration = Duration::from_millis(100);

/// How long an answer may wait for its owner to take it up: it looks
/// every [`LOOK`], so one still waiting after this has stopped.
pub(crate) const PICK_UP: Duration = Duration::from_secs(5);

/// A round's progress, as the store has it.
pub enum Round {
    /// Answered, and not yet taken up by its owner, since this long.
    Answered(Duration),
    /// The owner runs the call on.
    Running,
    /// The call's answer ([`encode`]d).
    Done(String),
    /// No such round.
    Gone,
}

/// Where replicas share approval round trips (see the module's text).
/// `state` is always a requestState's [`key`] (its SHA-256 with the agent's
/// name), never the state itself.
#[async_trait::async_trait]
pub trait RoundStore: Send + Sync {
    /// Parks a round of `tool`, owned by this process.
    async fn park(&self, state: &str, tool: &str) -> Result<(), String>;
    /// Takes a round this process parked, for a retry that reached it (or
    /// as its call ended unanswered): false when it was answered elsewhere
    /// first.
    async fn take(&self, state: &str) -> Result<bool, String>;
    /// Answers a round of `tool` parked by another process, once: false
    /// when none is parked under `state`.
    async fn answer(
        &self,
        state: &str,
        tool: &str,
        approved: bool,
        by: &str,
    ) -> Result<bool, String>;
    /// Withdraws an answer its owner has not taken up: false when it has
    /// (the call runs on).
    async fn withdraw(&self, state: &str) -> Result<bool, String>;
    /// The rounds this process parked that were answered elsewhere, each
    /// handed out once: (state, approved, by).
    async fn answered(&self) -> Result<Vec<(String, bool, String)>, String>;
    /// The answer of a round's call, run on here.
    async fn done(&self, state: &str, response: &str) -> Result<(), String>;
    /// Where a round is; its call's answer is handed out once.
    async fn round(&self, state: &str) -> Result<Round, String>;
}

/// The key a requestState is parked under: its SHA-256 together with the
/// agent whose call asked (`Agent::recorded`; none when callers do not
/// authenticate). A retry by another agent, even one holding the state,
/// looks up another key, here and in the store: an approval round answers
/// only for the agent that started the call.
pub(crate) fn key(state: &str, agent: Option<&Agent>) -> String {
    let mut h = sha2::Sha256::new().chain_update(b"warden round\0");
    if let Some(agent) = agent {
        h.update(agent.recorded().as_bytes());
    }
    hex::encode(
        h.chain_update(b"\0")
            .chain_update(state.as_bytes())
            .finalize(),
    )
}

/// Whether `state` has the shape this server gives (128 bits in hex):
/// anything else is refused before the store sees it.
pub(crate) fn well_formed(state: &str) -> bool {
    state.len() == 32 && state.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A further round's state sealed with the state before it, which only
/// the client and the owner know (the store has its SHA-256, another
/// digest): what the store keeps of it cannot answer it. Its own inverse.
fn seal(with: &str, state: &str) -> String {
    let pad = sha2::Sha256::new()
        .chain_update(b"warden round seal\0")
        .chain_update(with.as_bytes())
        .finalize();
    match hex::decode(state) {
        Ok(bytes) if bytes.len() <= pad.len() => hex::encode(
            bytes
                .iter()
                .zip(pad.iter())
                .map(|(a, b)| a ^ b)
                .collect::<Vec<u8>>(),
        ),
        // Not a state this server made: nothing to keep.
        _ => String::new(),
    }
}

/// `response` with a further round's state sealed (or opened) with `with`.
fn sealed(mut response: CallToolResponse, with: &str) -> CallToolResponse {
    if let CallToolResponse::InputRequired(r) = &mut response {
        r.request_state = r.request_state.as_deref().map(|s| seal(with, s));
    }
    response
}

/// A call's answer as the store keeps it.
pub(crate) fn encode(response: &CallToolResponse) -> String {
    match response {
        CallToolResponse::InputRequired(r) => json!({ "input_required": r }),
        CallToolResponse::Complete(r) => json!({ "complete": r }),
        _ => json!({ "complete": failure("the call ended in a way this server does not relay".into()) }),
    }
    .to_string()
}

fn decode(text: &str) -> Result<CallToolResponse, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Stored {
        Complete(CallToolResult),
        InputRequired(InputRequiredResult),
    }
    match serde_json::from_str::<Stored>(text).map_err(|e| e.to_string())? {
        Stored::Complete(r) => Ok(r.into()),
        Stored::InputRequired(r) => Ok(r.into()),
    }
}

/// Every second, drops the parked calls that finished without their client
/// (their approval expired): their slots come back, and with a shared
/// store their rounds are deleted (answered now, they are unknown).
async fn sweep(server: Weak<super::Shared>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(shared) = server.upgrade() else {
            return;
        };
        // Dropped here (their slots with them), before the store is asked.
        let ended: Vec<String> = {
            let mut parked = shared.parked.lock().unwrap_or_else(|e| e.into_inner());
            let keys: Vec<String> = parked
                .iter()
                .filter(|(_, p)| p.running.call.is_finished())
                .map(|(k, _)| k.clone())
                .collect();
            for k in &keys {
                parked.remove(k);
            }
            keys
        };
        if let Some(store) = shared.rounds.get() {
            for key in &ended {
                if let Err(why) = store.take(key).await {
                    tracing::debug!("approval rounds: {why}");
                }
            }
        }
    }
}

/// The owner's side: while calls are parked, looks every [`LOOK`] (else
/// every ten) for answers given through other replicas, and runs each
/// answered call on. Ends with the server.
pub(super) async fn pick_up(server: Weak<super::Shared>, store: Arc<dyn RoundStore>) {
    let mut failing = false;
    for tick in 1u64.. {
        tokio::time::sleep(LOOK).await;
        let Some(shared) = server.upgrade() else {
            return;
        };
        // Every tick while calls are parked; every tenth regardless, for
        // answers to calls that ended meanwhile (their approval expired).
        let parked = !shared
            .parked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty();
        if !parked && tick % 10 != 0 {
            continue;
        }
        let answered = match store.answered().await {
            Ok(a) => {
                failing = false;
                a
            }
            Err(why) => {
                if !failing {
                    tracing::warn!("approval rounds: {why}");
                }
                failing = true;
                continue;
            }
        };
        let mcp = WardenMcp { shared };
        for (state, approved, by) in answered {
            let (mcp, store) = (mcp.clone(), store.clone());
            tokio::spawn(async move { run_on(&mcp, &*store, &state, approved, by).await });
        }
    }
}

/// Hands an answer given elsewhere to its parked call, runs the call on,
/// and writes its answer for the replica that took the client's retry.
async fn run_on(mcp: &WardenMcp, store: &dyn RoundStore, state: &str, approved: bool, by: String) {
    let parked = mcp
        .shared
        .parked
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(state);
    let response: CallToolResponse = match parked {
        Some(p) => {
            let _ = p.answer.send(ApprovalAnswer {
                digest: p.request.digest.clone(),
                approved,
                by,
            });
            match mcp.drive(p.running, &Caller::elsewhere()).await {
                Ok(r) => sealed(r, &p.state),
                Err(e) => failure(e.message.into_owned()).into(),
            }
        }
        None => failure(
            "the call ended before its approval was answered (the approval timed out)".into(),
        )
        .into(),
    };
    let text = encode(&response);
    // The answering replica waits for it: a failed write is tried again.
    for attempt in 0..5 {
        match store.done(state, &text).await {
            Ok(()) => return,
            Err(why) => {
                tracing::warn!("approval rounds: cannot write a call's answer: {why}");
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
        }
    }
}

/// The answering replica's side: records the client's answer to a round
/// parked elsewhere and waits (up to `within`) for the call's answer.
pub(super) async fn answer_elsewhere(
    store: &dyn RoundStore,
    (state, key): (&str, &str),
    tool: &str,
    approved: bool,
    by: &str,
    within: Duration,
) -> Result<CallToolResponse, McpError> {
    let unavailable = |why: String| {
        tracing::warn!("approval rounds: {why}");
        McpError::internal_error(
            "the state store did not confirm the approval answer (it may be unreachable): if it was recorded, the call runs on where it started and its outcome is in the audit trail; if not, this requestState still answers it",
            None,
        )
    };
    if !store
        .answer(key, tool, approved, by)
        .await
        .map_err(unavailable)?
    {
        return Err(unknown_state());
    }
    let lost = |why: &str| {
        McpError::internal_error(
            format!(
                "{why}; the answer was recorded once, and the call's outcome is in the audit trail"
            ),
            None,
        )
    };
    let started = Instant::now();
    let mut failing_since: Option<Instant> = None;
    loop {
        tokio::time::sleep(LOOK).await;
        match store.round(key).await {
            Ok(Round::Done(text)) => {
                return decode(&text)
                    .map(|r| sealed(r, state))
                    .map_err(|e| lost(&format!("the call's answer is unreadable ({e})")));
            }
            // Its owner has stopped (or stalls): the answer is withdrawn,
            // so that it cannot run later behind the client's back;
            // unless the owner took it up meanwhile.
            Ok(Round::Answered(waiting)) if waiting > PICK_UP => match store.withdraw(key).await {
                Ok(true) => {
                    return Err(McpError::internal_error(
                        format!(
                            "the replica running this call did not take the answer up within {PICK_UP:?} (it may have stopped): the answer is withdrawn and the action it was asked for did not run; call again"
                        ),
                        None,
                    ));
                }
                Ok(false) => failing_since = None,
                Err(why) => tracing::warn!("approval rounds: {why}"),
            },
            Ok(Round::Gone) => return Err(lost("the round is gone from the state store")),
            Ok(_) => failing_since = None,
            Err(why) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() > PICK_UP {
                    tracing::warn!("approval rounds: {why}");
                    return Err(lost("the state store stopped answering"));
                }
            }
        }
        if started.elapsed() > within {
            return Err(lost(&format!(
                "the call did not answer within {within:?} on the replica running it"
            )));
        }
    }
}

impl WardenMcp {
    /// Parks a call until the client answers its approval request.
    pub(super) fn park(
        &self,
        mut running: Running,
        p: Pending,
        state: String,
        key: String,
    ) -> InputRequiredResult {
        running.call = running.call.detach();
        let mut requests = InputRequests::new();
        requests.insert(
            APPROVAL.into(),
            InputRequest::Elicitation(ElicitRequest::new(prompt(&p.request))),
        );
        // Calls whose approval expires finish without their client: swept.
        self.shared
            .sweeping
            .get_or_init(|| drop(tokio::spawn(sweep(Arc::downgrade(&self.shared)))));
        let mut parked = self.shared.parked.lock().unwrap_or_else(|e| e.into_inner());
        parked.insert(
            key,
            Parked {
                running,
                request: p.request,
                answer: p.answer,
                state: zeroize::Zeroizing::new(state.clone()),
            },
        );
        InputRequiredResult::new(Some(requests), Some(state))
    }

    /// The client's answer to a parked call's approval request; one that
    /// answers nothing (another agent's state, one answered already, or
    /// expired) is logged with who sent it.
    pub(super) async fn resume(
        &self,
        req: &CallToolRequestParams,
        state: &str,
        caller: &Caller,
    ) -> Result<CallToolResponse, McpError> {
        let answered = self.answer(req, state, caller).await;
        if let Err(e) = &answered
            && e.message == unknown_state().message
        {
            let agent = caller
                .agent()
                .map(|a| format!("{} {}", a.issuer, a.subject));
            tracing::info!(
                tool = %super::echoed(&req.name, 128),
                agent = %super::echoed(agent.as_deref().unwrap_or("-"), 256),
                client = %super::echoed(&caller.client, 128),
                "an approval answer was refused: unknown or expired requestState"
            );
        }
        answered
    }

    /// The client's answer to a parked call's approval request: to a call
    /// parked here, or (with a shared store) by another replica.
    async fn answer(
        &self,
        req: &CallToolRequestParams,
        state: &str,
        caller: &Caller,
    ) -> Result<CallToolResponse, McpError> {
        // A state of another shape, or for a tool this server does not
        // have, is refused before anything (the store) sees it.
        if !well_formed(state) || !self.shared.tools.contains_key(req.name.as_ref() as &str) {
            return Err(unknown_state());
        }
        let key = key(state, caller.agent());
        let answer = req
            .input_responses
            .as_ref()
            .and_then(|r| r.get(APPROVAL))
            .cloned()
            .unwrap_or(Value::Null);
        let by = format!("MCP client '{}' (elicitation)", caller.client);
        let here = self
            .shared
            .parked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .is_some_and(|p| p.running.tool == req.name);
        let rounds = self.shared.rounds.get();
        match rounds {
            // Parked elsewhere (or unknown): answered through the store.
            Some(rounds) if !here => {
                let within = self
                    .shared
                    .runtime
                    .tools()
                    .find(|t| t.name == req.name)
                    .map_or(Duration::ZERO, |t| t.limits.timeout)
                    + PICK_UP;
                return answer_elsewhere(
                    &**rounds,
                    (state, &key),
                    &req.name,
                    approves(&answer),
                    &by,
                    within,
                )
                .await;
            }
            // Parked here: taken in the store first, so that an answer
            // through another replica cannot count too.
            Some(rounds) => match rounds.take(&key).await {
                Ok(true) => {}
                Ok(false) => return Err(unknown_state()),
                Err(why) => {
                    tracing::warn!("approval rounds: {why}");
                    return Err(McpError::internal_error(
                        "the state store cannot be reached: the approval answer was not recorded, retry",
                        None,
                    ));
                }
            },
            None => {}
        }
        // Taken only for its own tool: a retry naming another leaves the
        // call parked (dropping it would free its place while it runs on,
        // answered by no one, its cancel out of reach).
        let parked = {
            let mut all = self.shared.parked.lock().unwrap_or_else(|e| e.into_inner());
            let mine = (all.get(&key)).is_some_and(|p| p.running.tool == req.name);
            mine.then(|| all.remove(&key)).flatten()
        };
        let Some(parked) = parked else {
            return Err(unknown_state());
        };
        let _ = parked.answer.send(ApprovalAnswer {
            digest: parked.request.digest.clone(),
            approved: approves(&answer),
            by,
        });
        self.drive(parked.running, caller).await
    }
}

/// The error for a requestState no process knows (or one answered).
pub(super) fn unknown_state() -> McpError {
    McpError::invalid_params(
        "unknown or expired requestState (an approval answer counts once, for the call that asked)",
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_further_state_is_sealed_with_the_one_before_and_opened_by_it() {
        let (first, second) = (
            "0123456789abcdef0123456789abcdef",
            "fedcba9876543210fedcba9876543210",
        );
        let stored = seal(first, second);
        assert_eq!(stored.len(), 32);
        assert_ne!(stored, second);
        assert_eq!(seal(first, &stored), second);
        // Another state, or the stored key, does not open it.
        assert_ne!(seal(&key(first, None), &stored), second);
        assert_ne!(seal("ffffffffffffffffffffffffffffffff", &stored), second);
        assert_eq!(seal(first, "not hex"), "");
    }

    #[test]
    fn only_states_of_the_shape_given_are_looked_up() {
        assert!(well_formed("0123456789abcdef0123456789ABCDEF"));
        for bad in [
            "",
            "0",
            &"0".repeat(33),
            "0123456789abcdef0123456789abcdeg",
            "x\0'; --",
        ] {
            assert!(!well_formed(bad), "{bad}");
        }
    }
}
