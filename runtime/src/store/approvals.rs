//! Pending approvals in PostgreSQL: asked on one replica, listed and
//! answered through any replica's approvals endpoint, delivered to the
//! invocation waiting on the replica that asked.
//!
//! A request's digest is its key. An answer moves it from `pending` to
//! `answered` once (a second answer, on any replica, finds nothing
//! waiting); the asking replica moves it from `answered` to `used` once,
//! and only then is the answer given to the invocation. The asker learns
//! of an answer by `NOTIFY warden_approvals` (payload: the digest) on a
//! connection of its own, and also looks every second, so a notification
//! lost while that connection was down delays an answer, never loses it.
//! A store that cannot be reached while asking is no answer: the gate
//! denies.

use super::{Link, PATIENCE, StateUrl, StoreError};
use crate::approval::{ApprovalAnswer, ApprovalQueue, ApprovalRequest, Approver, Waiting};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_postgres::{AsyncMessage, NoTls};

/// How often a waiting request is looked at without a notification.
const POLL: Duration = Duration::from_secs(1);

/// How long a request's row stays after it expires (for an operator
/// looking at the table; the audit trail keeps who asked and who answered).
const KEPT_AFTER_EXPIRY: Duration = Duration::from_secs(3600);

/// A replica sweeps expired rows when it asks, at most this often.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// An [`Approver`] and [`ApprovalQueue`] kept in PostgreSQL.
pub struct PgApprover {
    link: Arc<Link>,
    replica: String,
    /// How long a request stays answerable (the approvals timeout).
    expires: Duration,
    /// Digests answered, from `NOTIFY`.
    answered: broadcast::Sender<String>,
    listener: tokio::task::JoinHandle<()>,
    /// When this replica last deleted expired rows.
    swept: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Drop for PgApprover {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PgApprover {
    /// Connects (migrating if needed) and starts listening for answers.
    pub async fn open(
        url: &StateUrl,
        replica: &str,
        expires: Duration,
    ) -> Result<Arc<PgApprover>, StoreError> {
        let link = Arc::new(Link::open(url).await?);
        let (answered, _) = broadcast::channel(1024);
        let listener = tokio::spawn(listen(url.clone(), answered.clone()));
        Ok(Arc::new(PgApprover {
            link,
            replica: replica.to_owned(),
            expires,
            answered,
            listener,
            swept: std::sync::Mutex::new(None),
        }))
    }

    /// Deletes the rows that expired [`KEPT_AFTER_EXPIRY`] ago, whatever
    /// their state, at most every [`SWEEP_EVERY`]: kept forever, every
    /// request ever asked stayed, and an agent whose calls ask for approval
    /// grew the table by calling. A row past its expiry can no longer be
    /// answered, and its asker has given up on it. A failed sweep is
    /// logged; the request goes on.
    async fn sweep(&self) {
        {
            let mut swept = self.swept.lock().unwrap_or_else(|p| p.into_inner());
            if swept.is_some_and(|at| at.elapsed() < SWEEP_EVERY) {
                return;
            }
            *swept = Some(std::time::Instant::now());
        }
        let secs = KEPT_AFTER_EXPIRY.as_secs_f64();
        let deleted = match self.link.get().await {
            Ok(client) => {
                self.within(client.execute(
                    "DELETE FROM warden_approvals
                     WHERE expires < now() - make_interval(secs => $1)",
                    &[&secs],
                ))
                .await
            }
            Err(e) => Err(e),
        };
        match deleted {
            Ok(0) => {}
            Ok(n) => tracing::debug!("deleted {n} approval requests expired over an hour ago"),
            Err(e) => tracing::warn!("{e}"),
        }
    }

    fn failed(&self, e: impl std::fmt::Display) -> String {
        format!("the approvals store {}: {e}", self.link.url().shown())
    }

    /// A statement's answer within [`PATIENCE`], or why not.
    async fn within<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, String> {
        let r = match tokio::time::timeout(PATIENCE, f).await {
            Ok(r) => r.map_err(|e| self.failed(super::pg(&e))),
            Err(_) => Err(self.failed("no answer")),
        };
        if r.is_err() {
            self.link.reset().await;
        }
        r
    }

    /// Takes the answer to `digest` if one came (once: `answered` to
    /// `used`).
    async fn take(&self, digest: &str) -> Result<Option<ApprovalAnswer>, String> {
        let client = self.link.get().await?;
        let row = self
            .within(client.query_opt(
                "UPDATE warden_approvals SET state = 'used'
                 WHERE digest = $1 AND state = 'answered'
                 RETURNING approved, answered_by",
                &[&digest],
            ))
            .await?;
        let Some(row) = row else { return Ok(None) };
        let approved: Option<bool> = row.try_get(0).map_err(|e| self.failed(super::pg(&e)))?;
        let by: Option<String> = row.try_get(1).map_err(|e| self.failed(super::pg(&e)))?;
        Ok(Some(ApprovalAnswer {
            digest: digest.to_owned(),
            approved: approved == Some(true),
            by: by.unwrap_or_else(|| "an unnamed operator".into()),
        }))
    }
}

/// Withdraws a request still pending when its asker stops waiting.
struct Withdraw {
    link: Arc<Link>,
    digest: String,
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        let (link, digest) = (self.link.clone(), std::mem::take(&mut self.digest));
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            let Ok(client) = link.get().await else { return };
            let _ = tokio::time::timeout(
                PATIENCE,
                client.execute(
                    "UPDATE warden_approvals SET state = 'used', expires = now()
                     WHERE digest = $1 AND state = 'pending'",
                    &[&digest],
                ),
            )
            .await;
        });
    }
}

/// Forwards `NOTIFY warden_approvals` payloads to `answered`, reconnecting
/// (after a second) whenever the connection ends.
async fn listen(url: StateUrl, answered: broadcast::Sender<String>) {
    loop {
        if let Ok(Ok((client, mut conn))) =
            tokio::time::timeout(PATIENCE, url.config.connect(NoTls)).await
        {
            let tx = answered.clone();
            let driver = tokio::spawn(async move {
                while let Some(Ok(m)) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                    if let AsyncMessage::Notification(n) = m {
                        let _ = tx.send(n.payload().to_owned());
                    }
                }
            });
            if client
                .batch_execute("LISTEN warden_approvals")
                .await
                .is_ok()
            {
                let _ = driver.await;
            } else {
                driver.abort();
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

#[async_trait::async_trait]
impl Approver for PgApprover {
    async fn ask(&self, request: &ApprovalRequest) -> Option<ApprovalAnswer> {
        let mut answered = self.answered.subscribe();
        // Given up on (the approvals timeout, a cancelled call): no longer
        // listed or answerable anywhere, and out of the pending index that
        // every listing scans (left `pending`, such rows slowed listings
        // as they grew, until they passed the store's patience).
        let _withdrawn = Withdraw {
            link: self.link.clone(),
            digest: request.digest.clone(),
        };
        let json = serde_json::to_string(request).ok()?;
        let secs = self.expires.as_secs_f64();
        let asked = match self.link.get().await {
            Ok(client) => {
                self.within(client.execute(
                    "INSERT INTO warden_approvals (digest, request, replica, expires)
                     VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
                    &[&request.digest, &json, &self.replica, &secs],
                ))
                .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = asked {
            tracing::error!("{e}");
            return None;
        }
        self.sweep().await;
        loop {
            match self.take(&request.digest).await {
                Ok(Some(answer)) => return Some(answer),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!("{e}");
                    return None;
                }
            }
            // An answer to this request, or the next look.
            let _ = tokio::time::timeout(POLL, async {
                loop {
                    match answered.recv().await {
                        Ok(d) if d == request.digest => return,
                        Ok(_) => {}
                        // Notifications came faster than read (a flood):
                        // look, but not more often than every 100 ms.
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            return;
                        }
                        Err(broadcast::error::RecvError::Closed) => {
                            std::future::pending::<()>().await;
                        }
                    }
                }
            })
            .await;
        }
    }
}

#[async_trait::async_trait]
impl ApprovalQueue for PgApprover {
    async fn waiting(&self) -> Result<Vec<Waiting>, String> {
        let client = self.link.get().await?;
        let rows = self
            .within(client.query(
                "SELECT request, extract(epoch FROM now() - requested)::float8, digest
                 FROM warden_approvals
                 WHERE state = 'pending' AND expires > now()
                 ORDER BY requested",
                &[],
            ))
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let json: &str = row.try_get(0).map_err(|e| self.failed(super::pg(&e)))?;
            let waiting_s: f64 = row.try_get(1).map_err(|e| self.failed(super::pg(&e)))?;
            let digest: String = row.try_get(2).map_err(|e| self.failed(super::pg(&e)))?;
            // A row that is not a request is not shown; the digest shown is
            // the one an answer is matched on (the key, not the JSON's).
            if let Ok(mut request) = serde_json::from_str::<ApprovalRequest>(json) {
                request.digest = digest;
                out.push(Waiting {
                    request: request.for_people(),
                    waiting_s,
                });
            }
        }
        Ok(out)
    }

    async fn answer_waiting(&self, digest: &str, approved: bool, by: &str) -> Result<bool, String> {
        let client = self.link.get().await?;
        let n = self
            .within(client.execute(
                "UPDATE warden_approvals
                 SET state = 'answered', approved = $2, answered_by = $3, answered = now()
                 WHERE digest = $1 AND state = 'pending' AND expires > now()",
                &[&digest, &approved, &by],
            ))
            .await?;
        if n == 0 {
            return Ok(false);
        }
        // The asker also looks every second: a lost notification only
        // delays the answer.
        if let Err(e) = self
            .within(client.execute("SELECT pg_notify('warden_approvals', $1)", &[&digest]))
            .await
        {
            tracing::warn!("{e}");
        }
        Ok(true)
    }
}
