//! Which `initialize` requests may open a session: within
//! [`MAX_INITIALIZE`] bytes, while the server keeps fewer than
//! [`MAX_SESSIONS`], and the agent fewer than [`MAX_SESSIONS_PER_AGENT`].
//! A place is held from the check until rmcp has opened the session and
//! the map holds it ([`Reserved`]), so that many `initialize`s at once on
//! as many connections cannot all pass one count.

use super::{MAX_INITIALIZE, MAX_SESSIONS, MAX_SESSIONS_PER_AGENT, Sessions, lock};
use std::sync::Arc;

/// A place held for a session being opened; given back when dropped.
pub(crate) struct Reserved {
    sessions: Arc<Sessions>,
    owner: Option<Arc<str>>,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        let mut pending = lock(&self.sessions.pending);
        if let Some(i) = pending.iter().position(|o| *o == self.owner) {
            pending.swap_remove(i);
        }
    }
}

impl Sessions {
    /// An `initialize` of `len` bytes from `owner`, for a `new` session or
    /// in one: refused (the answer) over [`MAX_INITIALIZE`] (in a session
    /// or not: rmcp keeps what a second one says too), or for a new session
    /// while as many are open or being opened as a server keeps, or as the
    /// agent may keep, until one ends; else the place held for a new one.
    pub(crate) fn admit_initialize(
        self: &Arc<Self>,
        len: usize,
        new: bool,
        owner: Option<&Arc<str>>,
    ) -> Result<Option<Reserved>, Box<http::Response<super::super::Body>>> {
        if len > MAX_INITIALIZE {
            return Err(Box::new(super::super::plain(
                http::StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "an initialize request is at most {MAX_INITIALIZE} bytes (this one is {len})"
                ),
            )));
        }
        if !new {
            return Ok(None);
        }
        let map = lock(&self.map);
        let mut pending = lock(&self.pending);
        if map.len() + pending.len() >= MAX_SESSIONS {
            super::super::conns::quiet_warn!(
                "MCP: {MAX_SESSIONS} sessions open, the most a server keeps; refusing a new one"
            );
            return Err(Box::new(super::super::plain(
                http::StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "this server keeps {MAX_SESSIONS} sessions open at once and has that many; end one (DELETE with its Mcp-Session-Id) or try again once idle ones close"
                ),
            )));
        }
        if let Some(who) = owner {
            let open = map
                .values()
                .filter(|s| s.owner.as_ref() == Some(who))
                .count();
            let opening = pending.iter().filter(|o| o.as_ref() == Some(who)).count();
            if open + opening >= MAX_SESSIONS_PER_AGENT {
                super::super::conns::quiet_warn!(
                    "MCP: agent {} holds {MAX_SESSIONS_PER_AGENT} sessions, the most one keeps; refusing a new one",
                    crate::redact::escape_control(who)
                );
                return Err(Box::new(super::super::plain(
                    http::StatusCode::TOO_MANY_REQUESTS,
                    &format!(
                        "this server keeps {MAX_SESSIONS_PER_AGENT} sessions open at once for one agent, and yours has that many; end one (DELETE with its Mcp-Session-Id) or try again once idle ones close"
                    ),
                )));
            }
        }
        pending.push(owner.cloned());
        Ok(Some(Reserved {
            sessions: self.clone(),
            owner: owner.cloned(),
        }))
    }
}
