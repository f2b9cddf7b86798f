//! The sweep of a server's sessions: those idle for [`IDLE`] closed, those
//! rmcp no longer holds forgotten, those it holds that were never noted
//! here closed. A close is not waited for: a session whose worker is stuck
//! (its event stream unread, its channel full) cannot hold the sweep, and
//! with it every other session's end (and, the places they keep, every
//! new session).

use super::{IDLE, Session, Sessions, lock};
use rmcp::transport::streamable_http_server::session::SessionManager;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How long a session's close is waited for, on its own task.
const CLOSE_PATIENCE: Duration = Duration::from_secs(5);

impl Sessions {
    /// Closes the sessions idle for [`IDLE`] and forgets those rmcp no
    /// longer holds, every `every`, until the server stops.
    pub(crate) async fn sweep(&self, every: Duration) {
        let mut ticks = tokio::time::interval(every);
        let mut strays = Vec::new();
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = self.stopping.cancelled() => return,
            }
            self.sweep_once(&mut strays).await;
        }
    }

    /// One sweep; also closes the sessions rmcp holds that were never noted
    /// here and were `strays` on the last sweep (no count or idle time
    /// would end them; one being opened now is noted before the next).
    pub(super) async fn sweep_once(&self, strays: &mut Vec<Arc<str>>) {
        let now = self.now();
        let sessions: Vec<Arc<Session>> = lock(&self.map).values().cloned().collect();
        for s in sessions {
            let idle = now.saturating_sub(s.used.load(Ordering::Relaxed)) >= IDLE.as_secs()
                && lock(&s.running).is_empty();
            if idle {
                tracing::debug!("MCP over HTTP: closing session {} (idle)", s.id);
                self.close(&s.id);
            }
            if idle || !self.manager.has_session(&s.id).await.unwrap_or(false) {
                self.closed(&s.id);
            }
        }
        let held: Vec<Arc<str>> = self.manager.sessions.read().await.keys().cloned().collect();
        let unknown: Vec<Arc<str>> = (held.into_iter())
            .filter(|id| !lock(&self.map).contains_key(id))
            .collect();
        let (gone, seen): (Vec<_>, Vec<_>) =
            unknown.into_iter().partition(|id| strays.contains(id));
        for id in gone {
            tracing::debug!("MCP over HTTP: closing session {id} (never noted)");
            self.close(&id);
        }
        *strays = seen;
    }

    /// Closes the session `id` in rmcp on a task of its own, given up
    /// after [`CLOSE_PATIENCE`].
    fn close(&self, id: &Arc<str>) {
        let (manager, id) = (self.manager.clone(), id.clone());
        tokio::spawn(async move {
            if tokio::time::timeout(CLOSE_PATIENCE, manager.close_session(&id))
                .await
                .is_err()
            {
                tracing::debug!(
                    "MCP over HTTP: session {id} did not close within {CLOSE_PATIENCE:?}"
                );
            }
        });
    }
}
