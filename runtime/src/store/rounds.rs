//! Approval round trips of MCP clients, shared by replicas
//! (`warden_rounds`): see [`crate::mcp::RoundStore`] for the protocol and
//! `migrations/0004_rounds.sql` for the states. Every step is one
//! conditional `UPDATE` or `DELETE`, so each transition happens once
//! whichever replicas race for it.

use super::{Link, StateUrl, StoreError};
use crate::mcp::{Round, RoundStore};
use std::sync::Arc;
use std::time::Duration;

/// A [`RoundStore`] in PostgreSQL, for one process (its rounds are the
/// ones it parked: `owner` is random per process, not the replica's name,
/// which a restarted pod keeps).
pub struct PgRounds {
    link: Link,
    owner: String,
}

impl PgRounds {
    /// Connects (migrating if needed).
    pub async fn open(url: &StateUrl) -> Result<Arc<PgRounds>, StoreError> {
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|e| url.failed(format!("no randomness: {e}")))?;
        let link = Link::open(url).await?;
        Ok(Arc::new(PgRounds {
            link,
            owner: hex::encode(id),
        }))
    }

    async fn changed(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<bool, String> {
        let client = self.link.get().await?;
        Ok(self.link.within(client.execute(sql, params)).await? == 1)
    }
}

#[async_trait::async_trait]
impl RoundStore for PgRounds {
    async fn park(&self, state: &str, tool: &str) -> Result<(), String> {
        self.changed(
            "INSERT INTO warden_rounds (state, owner, tool) VALUES ($1, $2, $3)",
            &[&state, &self.owner, &tool],
        )
        .await
        .map(|_| ())
    }

    async fn take(&self, state: &str) -> Result<bool, String> {
        self.changed(
            "DELETE FROM warden_rounds WHERE state = $1 AND owner = $2 AND status = 'parked'",
            &[&state, &self.owner],
        )
        .await
    }

    async fn withdraw(&self, state: &str) -> Result<bool, String> {
        self.changed(
            "DELETE FROM warden_rounds WHERE state = $1 AND status = 'answered'",
            &[&state],
        )
        .await
    }

    async fn answer(
        &self,
        state: &str,
        tool: &str,
        approved: bool,
        by: &str,
    ) -> Result<bool, String> {
        self.changed(
            "UPDATE warden_rounds
             SET status = 'answered', approved = $3, answered_by = $4, moved = now()
             WHERE state = $1 AND tool = $2 AND status = 'parked'",
            &[&state, &tool, &approved, &by],
        )
        .await
    }

    async fn answered(&self) -> Result<Vec<(String, bool, String)>, String> {
        let client = self.link.get().await?;
        let rows = self
            .link
            .within(client.query(
                "UPDATE warden_rounds SET status = 'running', moved = now()
                 WHERE owner = $1 AND status = 'answered'
                 RETURNING state, approved, answered_by",
                &[&self.owner],
            ))
            .await?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get(0)?;
                let approved: Option<bool> = r.try_get(1)?;
                let by: Option<String> = r.try_get(2)?;
                Ok((state, approved == Some(true), by.unwrap_or_default()))
            })
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(|e| self.link.failed(super::pg(&e)))
    }

    async fn done(&self, state: &str, response: &str) -> Result<(), String> {
        self.changed(
            "UPDATE warden_rounds SET status = 'done', response = $3, moved = now()
             WHERE state = $1 AND owner = $2 AND status = 'running'",
            &[&state, &self.owner, &response],
        )
        .await
        .map(|_| ())
    }

    async fn round(&self, state: &str) -> Result<Round, String> {
        let client = self.link.get().await?;
        // The answer, taken once: the row goes with it.
        let done = self
            .link
            .within(client.query_opt(
                "DELETE FROM warden_rounds WHERE state = $1 AND status = 'done' RETURNING response",
                &[&state],
            ))
            .await?;
        if let Some(row) = done {
            let response: Option<String> = row
                .try_get(0)
                .map_err(|e| self.link.failed(super::pg(&e)))?;
            return Ok(Round::Done(response.unwrap_or_default()));
        }
        let row = self
            .link
            .within(client.query_opt(
                "SELECT status, extract(epoch FROM now() - moved)::float8
                 FROM warden_rounds WHERE state = $1",
                &[&state],
            ))
            .await?;
        let Some(row) = row else {
            return Ok(Round::Gone);
        };
        let read = || -> Result<Round, tokio_postgres::Error> {
            let status: &str = row.try_get(0)?;
            Ok(match status {
                "answered" => {
                    let age: f64 = row.try_get(1)?;
                    Round::Answered(Duration::from_secs_f64(age.clamp(0.0, 1e9)))
                }
                "running" | "done" => Round::Running,
                _ => Round::Gone,
            })
        };
        read().map_err(|e| self.link.failed(super::pg(&e)))
    }
}
