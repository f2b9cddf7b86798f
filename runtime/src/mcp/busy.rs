//! The places calls take while they run: one of the server's
//! `max_in_flight`, and, for a call an agent made, one of that agent's
//! `max_in_flight_per_agent`, so that one agent (slow calls, or calls
//! parked for approvals it never answers) cannot turn the others away.

use super::Shared;
use crate::agent::Agent;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Calls running, by agent (issuer and subject); an agent with none has
/// no entry.
#[derive(Default, Clone)]
pub(super) struct ByAgent(Arc<Mutex<HashMap<String, usize>>>);

/// A running call's places, given back when it is dropped.
pub(crate) struct Slots {
    _server: OwnedSemaphorePermit,
    agent: Option<(ByAgent, String)>,
}

impl Slots {
    /// The places for a call by `agent`, or why it is refused.
    pub(super) fn take(shared: &Shared, agent: Option<&Agent>) -> Result<Slots, String> {
        let options = &shared.options;
        take_with(
            &shared.slots,
            &shared.agents_running,
            options.max_in_flight,
            options.max_in_flight_per_agent,
            agent,
        )
    }
}

fn take_with(
    server: &Arc<Semaphore>,
    by_agent: &ByAgent,
    max_in_flight: usize,
    per_agent: usize,
    agent: Option<&Agent>,
) -> Result<Slots, String> {
    let Ok(server) = server.clone().try_acquire_owned() else {
        tracing::info!("a call was refused: {max_in_flight} calls are running, the server's limit");
        return Err(format!(
            "busy: {max_in_flight} calls are already running, this server's limit; retry later"
        ));
    };
    let Some(agent) = agent else {
        return Ok(Slots {
            _server: server,
            agent: None,
        });
    };
    let per_agent = per_agent.max(1);
    let key = format!("{}\n{}", agent.issuer, agent.subject);
    let mut running = by_agent.0.lock().unwrap_or_else(|p| p.into_inner());
    let n = running.get(&key).copied().unwrap_or(0);
    if n >= per_agent {
        let agent = super::echoed(&format!("{} {}", agent.issuer, agent.subject), 256);
        tracing::info!(%agent, "a call was refused: {n} calls of this agent are running");
        return Err(format!(
            "busy: this agent has {n} calls running, as many as one agent may; retry later"
        ));
    }
    running.insert(key.clone(), n + 1);
    drop(running);
    Ok(Slots {
        _server: server,
        agent: Some((by_agent.clone(), key)),
    })
}

impl Drop for Slots {
    fn drop(&mut self) {
        let Some((ByAgent(running), key)) = &self.agent else {
            return;
        };
        let mut running = running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = running.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                running.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_takes_at_most_its_share_and_gives_it_back() {
        let by = ByAgent::default();
        let slots = Arc::new(tokio::sync::Semaphore::new(4));
        let take = |who: Option<&Agent>, per_agent: usize| {
            // What `Slots::take` does, without a whole server.
            take_with(&slots, &by, 4, per_agent, who)
        };
        let a = Agent::static_token("a");
        let b = Agent::static_token("b");
        let a1 = take(Some(&a), 2).unwrap();
        let a2 = take(Some(&a), 2).unwrap();
        assert_eq!(
            take(Some(&a), 2).err().unwrap(),
            "busy: this agent has 2 calls running, as many as one agent may; retry later"
        );
        let b1 = take(Some(&b), 2).unwrap();
        let none = take(None, 2).unwrap();
        assert_eq!(
            take(Some(&b), 2).err().unwrap(),
            "busy: 4 calls are already running, this server's limit; retry later"
        );
        drop(a1);
        let a3 = take(Some(&a), 2).unwrap();
        drop((a2, a3, b1, none));
        assert!(by.0.lock().unwrap().is_empty(), "an agent's count stays");
        assert_eq!(slots.available_permits(), 4);
    }
}
