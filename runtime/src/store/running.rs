//! Which invocations run, whichever replica runs them: read from the
//! shared audit trail, which needs no write of its own on the hot path.
//! An invocation runs from its start record to its end record; a start
//! is committed before the invocation's first effect (a token minted is
//! one), and an end before its answer is sent. See
//! [`crate::caps::identity::InvocationLedger`].

use super::{Link, StateUrl, StoreError};
use crate::caps::identity::InvocationLedger;
use std::sync::Arc;

/// An [`InvocationLedger`] reading `warden_audit` (by its invocation
/// index).
pub struct PgInvocations {
    link: Link,
}

impl PgInvocations {
    /// Connects (migrating if needed).
    pub async fn open(url: &StateUrl) -> Result<Arc<PgInvocations>, StoreError> {
        let link = Link::open(url).await?;
        Ok(Arc::new(PgInvocations { link }))
    }
}

#[async_trait::async_trait]
impl InvocationLedger for PgInvocations {
    async fn running(&self, invocation: &str) -> Result<bool, String> {
        let client = self.link.get().await?;
        let row = self
            .link
            .within(client.query_one(
                "SELECT coalesce(bool_or(event = 'invocation.start'), false)
                        AND NOT coalesce(bool_or(event = 'invocation.end'), false)
                 FROM warden_audit WHERE invocation = $1",
                &[&invocation],
            ))
            .await?;
        row.try_get(0).map_err(|e| self.link.failed(super::pg(&e)))
    }
}
