//! The sink's talk with the store: inserting a batch, taking the chain
//! back after a failure, and waiting for it without stalling a runtime.

use super::{GENESIS, PATIENCE, Record, Row, Shared, StoreError};
use tokio_postgres::{Client, Statement};

impl Shared {
    /// A new connection, and where the chain continues. The store's last
    /// record of this chain is taken only if it is one this process wrote:
    /// the last it saw committed, or one of the insert that failed (whose
    /// answer may have been lost after it committed). Anything else — a
    /// row someone else inserted, a tail shorter than what was committed —
    /// and this process goes on in a new chain, saying why.
    pub(super) async fn reconnect(&self) -> Result<Client, StoreError> {
        let client = self.url.connect().await?;
        let chain = self.lock().chain.clone();
        let row = tokio::time::timeout(
            PATIENCE,
            client.query_opt(
                "SELECT seq, line FROM warden_audit WHERE chain = $1 ORDER BY seq DESC LIMIT 1",
                &[&chain],
            ),
        )
        .await
        .map_err(|_| self.url.unreachable("no answer"))?
        .map_err(|e| self.url.unreachable(crate::store::pg(&e)))?;
        let tail = row.and_then(|r| {
            let seq: i64 = r.try_get(0).ok()?;
            let line: String = r.try_get(1).ok()?;
            Some((seq, line))
        });
        let moved = {
            let mut st = self.lock();
            let ours = match &tail {
                None => st.committed == 0,
                Some((seq, line)) => {
                    if let Some(r) = st.lost.iter().find(|r| r.seq == *seq && &r.line == line) {
                        let (next, head) = (r.seq as u64 + 1, r.hash.clone());
                        (st.seq, st.committed) = (next, next);
                        st.head.clone_from(&head);
                        st.committed_head = head;
                        true
                    } else {
                        let committed_last = st.committed.checked_sub(1);
                        let hash = serde_json::from_str::<Record>(line)
                            .ok()
                            .and_then(|r| r.hash);
                        committed_last == u64::try_from(*seq).ok()
                            && hash.as_deref() == Some(st.committed_head.as_str())
                    }
                }
            };
            st.lost.clear();
            if ours {
                if tail.is_none() || st.seq != st.committed {
                    (st.seq, st.head) = (st.committed, st.committed_head.clone());
                }
                None
            } else {
                let old = std::mem::replace(&mut st.chain, uuid::Uuid::now_v7().to_string());
                let new = st.chain.clone();
                (st.seq, st.committed) = (0, 0);
                st.head = GENESIS.to_owned();
                st.committed_head = GENESIS.to_owned();
                (st.unsigned, st.unsigned_since) = (0, None);
                Some((old, new))
            }
        };
        let Some((old, new)) = moved else {
            return Ok(client);
        };
        tracing::error!(
            "audit store {}: chain {old} does not end with what this process wrote; continuing in a new chain {new}",
            self.url.shown()
        );
        self.name_chain(&client, &new).await?;
        Ok(client)
    }
}

pub(super) use crate::blocking::blocking;

/// Inserts `rows` in one statement, within [`PATIENCE`].
/// The insert of a batch of rows.
const INSERT: &str = "INSERT INTO warden_audit (chain, seq, line, ts, event, invocation, task, tool)
     SELECT $1, s, l, t::timestamptz, e, i, k, o
     FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[])
          AS u(s, l, t, e, i, k, o)";

/// [`INSERT`] prepared on `client` (once per connection: a statement given
/// as text is prepared again on every execution, a round trip more).
pub(super) async fn prepare(client: &Client) -> Result<Statement, String> {
    match tokio::time::timeout(PATIENCE, client.prepare(INSERT)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(crate::store::pg(&e)),
        Err(_) => Err(format!("no answer within {PATIENCE:?}")),
    }
}

/// Inserts `rows` with the prepared [`INSERT`] in one statement, within
/// [`PATIENCE`].
pub(super) async fn insert(
    client: &Client,
    insert: &Statement,
    chain: &str,
    rows: &[Row],
) -> Result<(), String> {
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    let lines: Vec<&str> = rows.iter().map(|r| r.line.as_str()).collect();
    let ts: Vec<&str> = rows.iter().map(|r| r.ts.as_str()).collect();
    let events: Vec<&str> = rows.iter().map(|r| r.event).collect();
    let col = |i: usize| rows.iter().map(|r| &*r.ids[i]).collect::<Vec<&str>>();
    let (inv, task, tool) = (col(0), col(1), col(2));
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] =
        [&chain, &seqs, &lines, &ts, &events, &inv, &task, &tool];
    let statement = client.execute(insert, &params);
    match tokio::time::timeout(PATIENCE, statement).await {
        Ok(Ok(n)) if n == rows.len() as u64 => Ok(()),
        Ok(Ok(n)) => Err(format!("{n} of {} records were stored", rows.len())),
        Ok(Err(e)) => Err(crate::store::pg(&e)),
        Err(_) => Err(format!("no answer within {PATIENCE:?}")),
    }
}
