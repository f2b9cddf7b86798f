//! A chain's newest lines within a byte budget, and its size: what a page
//! view (the console) reads of the shared trail, never a chain whole.
//!
//! Lines are read newest first in batches of at most [`BATCH`] rows, each
//! a range of `seq` below the last one read (an index scan of the primary
//! key, however long the chain). A batch sends a line only while the
//! batch's running total, from the newest, stays within what is left of
//! the budget: a line past it (even one huge line) is not sent.

use super::{StoreError, TrailReader, pg};

/// Rows a batch asks for.
const BATCH: i64 = 1024;

/// The newest lines of a chain, `seq` at most `$2`, at most `$3` rows; a
/// row's line only while the bytes from the newest (each line with its
/// newline) stay within `$4`, else NULL.
const NEWEST: &str = "SELECT seq, CASE WHEN upto <= $4 THEN line END
     FROM (SELECT seq, line, sum(octet_length(line) + 1) OVER (ORDER BY seq DESC) AS upto
           FROM (SELECT seq, line FROM warden_audit
                 WHERE chain = $1 AND seq <= $2
                 ORDER BY seq DESC LIMIT $3) AS batch) AS counted
     ORDER BY seq DESC";

/// The newest lines of a chain that fit a budget.
#[derive(Debug, Default)]
pub struct Tail {
    /// The lines, oldest first, each ended by a newline, as a file trail
    /// holds them.
    pub bytes: Vec<u8>,
    /// Whether older lines were left unread (the budget was spent).
    pub cut: bool,
}

impl TrailReader<'_> {
    /// A chain's size: its lines' bytes, each with its newline, as a file
    /// trail would hold them (counted by the store, nothing read here).
    pub async fn chain_bytes(&self, chain: &str) -> Result<u64, StoreError> {
        let row = self
            .client
            .query_one(
                "SELECT coalesce(sum(octet_length(line) + 1), 0)::bigint
                 FROM warden_audit WHERE chain = $1",
                &[&chain],
            )
            .await
            .map_err(|e| self.url.failed(pg(&e)))?;
        let bytes: i64 = row.try_get(0).map_err(|e| self.url.failed(pg(&e)))?;
        Ok(u64::try_from(bytes).unwrap_or(0))
    }

    /// A chain's newest lines within `budget` bytes (each line with its
    /// newline), in order: the whole chain when it fits. A gap in `seq`
    /// is kept as a gap, as [`TrailReader::lines`] keeps it.
    pub async fn newest_lines(&self, chain: &str, budget: u64) -> Result<Tail, StoreError> {
        let failed = |e: tokio_postgres::Error| self.url.failed(pg(&e));
        let mut lines: Vec<String> = Vec::new();
        let mut left = i64::try_from(budget).unwrap_or(i64::MAX);
        // The highest `seq` the next batch may hold; `seq` is never
        // negative, so below 0 there is nothing left.
        let mut max_seq = i64::MAX;
        let cut = 'read: loop {
            if max_seq < 0 {
                break 'read false;
            }
            let rows = self
                .client
                .query(NEWEST, &[&chain, &max_seq, &BATCH, &left])
                .await
                .map_err(failed)?;
            let full = i64::try_from(rows.len()).unwrap_or(i64::MAX) >= BATCH;
            for row in &rows {
                let seq: i64 = row.try_get(0).map_err(failed)?;
                let line: Option<String> = row.try_get(1).map_err(failed)?;
                let Some(line) = line else {
                    break 'read true;
                };
                // The store counts in its own encoding: count again here.
                let size = i64::try_from(line.len())
                    .unwrap_or(i64::MAX)
                    .saturating_add(1);
                if size > left {
                    break 'read true;
                }
                left -= size;
                max_seq = seq.saturating_sub(1);
                lines.push(line);
            }
            if !full {
                break 'read false;
            }
        };
        let mut bytes = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for line in lines.iter().rev() {
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
        }
        Ok(Tail { bytes, cut })
    }
}
