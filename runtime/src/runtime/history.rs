//! Task histories shared with other runtimes (replicas): read when an
//! invocation starts, what it noted stored before its end is recorded.

use super::Inner;
use crate::error::Error;
use crate::grant::Grant;
use crate::policy::{Histories, HistoryStore, TaskHistory};
use std::sync::{Arc, Mutex};

/// The shared store and the task's key, for one invocation, and the
/// task's history read into this runtime's, held for as long as the
/// invocation runs (an idle one may be dropped to make room).
pub(super) type Shared = Option<(Arc<dyn HistoryStore>, String, Arc<Mutex<TaskHistory>>)>;

/// What one invocation noted, with a shared store.
pub(super) type Added = Option<Arc<Mutex<TaskHistory>>>;

impl Inner {
    /// With a shared history and runtime policy: the store and the task's
    /// key, the task's history read from it into this runtime's.
    pub(super) async fn shared_history(&self, grant: &Grant) -> Result<Shared, Error> {
        let (Some(store), Some(_)) = (&self.shared_history, &self.rules) else {
            return Ok(None);
        };
        let issuer = grant.agent.as_ref().map_or("", |a| a.issuer.as_str());
        let key = Histories::key(issuer, &grant.task);
        let loaded = store
            .load(&key)
            .await
            .map_err(|e| Error::Host(format!("the task's history cannot be read: {e}")))?;
        let task: Arc<str> = grant.task.as_str().into();
        // Held through a long evaluation of another call of the task: the
        // wait leaves the worker to others.
        let history = self.tasks.of(issuer, &task);
        crate::blocking::lock(&history).merge(&loaded);
        Ok(Some((store.clone(), key, history)))
    }
}

/// Stores what the invocation noted (nothing when it noted nothing;
/// redacted as it was noted, `PolicyCtx::remember`). Why not, when it
/// cannot.
pub(super) async fn save(shared: Shared, added: Added) -> Option<String> {
    let ((store, key, _), added) = shared.zip(added)?;
    let added = added.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if added.is_empty() {
        return None;
    }
    store.save(&key, &added).await.err()
}
