//! Task histories in PostgreSQL: the runtime policy's `context.task` (what
//! a task has revealed, contacted, written, deployed) whichever replica a
//! task's calls land on. See [`crate::policy::HistoryStore`].

use super::{Link, StateUrl, StoreError};
use crate::policy::{HistoryStore, TaskHistory};
use std::sync::Arc;

/// A [`HistoryStore`] in PostgreSQL (`warden_task_history`).
pub struct PgHistory {
    link: Link,
}

impl PgHistory {
    /// Connects (migrating if needed).
    pub async fn open(url: &StateUrl) -> Result<Arc<PgHistory>, StoreError> {
        let link = Link::open(url).await?;
        Ok(Arc::new(PgHistory { link }))
    }
}

#[async_trait::async_trait]
impl HistoryStore for PgHistory {
    async fn load(&self, key: &str) -> Result<TaskHistory, String> {
        let client = self.link.get().await?;
        // A set holds at most MAX_HISTORY items of MAX_HISTORY_BYTES in
        // all: so many rows of each kind, the oldest first (one kind's rows
        // cannot crowd out another's, a revealed secret behind thousands of
        // files written), and no more than a set keeps read from the
        // database (replicas that each kept a full set store more).
        let limit = i64::try_from(crate::policy::cedar::MAX_HISTORY).unwrap_or(i64::MAX);
        let bytes = i64::try_from(crate::policy::cedar::MAX_HISTORY_BYTES).unwrap_or(i64::MAX);
        let rows = self
            .link
            .within(client.query(
                "SELECT kind, item FROM (
                     SELECT kind, item, row_number() OVER w AS n,
                            sum(octet_length(item)) OVER w AS b
                     FROM warden_task_history WHERE task = $1
                     WINDOW w AS (PARTITION BY kind ORDER BY noted, item)) AS h
                 WHERE n <= $2 AND b <= $3",
                &[&key, &limit, &bytes],
            ))
            .await?;
        let mut history = TaskHistory::default();
        for row in rows {
            let kind: &str = row
                .try_get(0)
                .map_err(|e| self.link.failed(super::pg(&e)))?;
            let item: &str = row
                .try_get(1)
                .map_err(|e| self.link.failed(super::pg(&e)))?;
            if let Some(set) = history.set_mut(kind) {
                set.keep(item);
            }
        }
        Ok(history)
    }

    async fn save(&self, key: &str, added: &TaskHistory) -> Result<(), String> {
        let client = self.link.get().await?;
        let (kinds, items): (Vec<&str>, Vec<&str>) = added.items().unzip();
        self.link
            .within(client.execute(
                "INSERT INTO warden_task_history (task, kind, item)
                 SELECT $1, k, i FROM unnest($2::text[], $3::text[]) AS u(k, i)
                 ON CONFLICT DO NOTHING",
                &[&key, &kinds, &items],
            ))
            .await
            .map(|_| ())
    }
}
