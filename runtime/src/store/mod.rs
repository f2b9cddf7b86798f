//! Shared state in PostgreSQL (`warden serve --state postgres://…`): what
//! replicas of one service must share. Here: the audit trail (see
//! [`PgSink`]), the public keys that verify its checkpoints, pending
//! approvals (see [`PgApprover`]), task histories (see [`PgHistory`]),
//! approvals asked of MCP clients as round trips (see [`PgRounds`]), and
//! which invocations run, read from the trail (see [`PgInvocations`]).
//!
//! The schema is `runtime/migrations/`, applied in order when a process
//! connects, under an advisory lock (replicas starting together apply each
//! migration once), each in the transaction that records it.
//!
//! The URL's password never appears in an error or a log line: what is
//! shown of a URL is [`StateUrl::shown`].

mod approvals;
mod history;
mod rounds;
mod running;
mod sink;
mod tail;

pub use approvals::PgApprover;
pub use history::PgHistory;
pub use rounds::PgRounds;
pub use running::PgInvocations;
pub use sink::{PgOptions, PgSink};
pub use tail::Tail;

use crate::audit::verify::{Report, verify_bytes};
use crate::keys::Verifier;
use std::time::Duration;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config, NoTls};

/// The migrations, in order: (version, name, SQL).
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "audit", include_str!("../../migrations/0001_audit.sql")),
    (
        2,
        "approvals",
        include_str!("../../migrations/0002_approvals.sql"),
    ),
    (
        3,
        "task history",
        include_str!("../../migrations/0003_task_history.sql"),
    ),
    (
        4,
        "rounds",
        include_str!("../../migrations/0004_rounds.sql"),
    ),
    (
        5,
        "approvals expiry",
        include_str!("../../migrations/0005_approvals_expiry.sql"),
    ),
];

fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// A client error with what the server said: tokio-postgres shows a
/// server's error as "db error" alone.
pub(crate) fn pg(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// Any advisory lock id of Warden's own: held while migrating.
const MIGRATION_LOCK: i64 = 0x5741_5244_454e; // "WARDEN"

/// How long connecting may take, and a statement, before the store counts
/// as unreachable.
pub const PATIENCE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("--state: {0}")]
    Url(String),
    #[error("the state store {at} is unreachable: {reason}")]
    Unreachable { at: String, reason: String },
    #[error("the state store {at}: {reason}")]
    Failed { at: String, reason: String },
}

/// Where the shared state is: a parsed `postgres://` URL.
#[derive(Clone)]
pub struct StateUrl {
    config: Config,
    shown: String,
}

impl std::fmt::Debug for StateUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl StateUrl {
    /// Parses `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?…]` (or
    /// `postgresql://`). TLS to the database is not built in: a URL that
    /// requires it is refused rather than silently sent in the clear.
    pub fn parse(url: &str) -> Result<StateUrl, StoreError> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(StoreError::Url(
                "expected a postgres://USER@HOST:PORT/DATABASE URL".into(),
            ));
        }
        // tokio-postgres takes the user and password up to the first `@`:
        // a second one would put the rest of a password in the host name,
        // and so in every message that names the store.
        let rest = url.split_once("://").map_or("", |(_, r)| r);
        let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
        if authority.matches('@').count() > 1 {
            return Err(StoreError::Url(
                "more than one '@' before the host: write an '@' in the user or password as %40"
                    .into(),
            ));
        }
        // tokio-postgres's own parse errors do not echo the URL.
        let mut config: Config = url
            .parse()
            .map_err(|e| StoreError::Url(format!("not a PostgreSQL URL: {e}")))?;
        if config.get_ssl_mode() == SslMode::Require {
            return Err(StoreError::Url(
                "sslmode=require: this build of warden does not speak TLS to PostgreSQL (reach the database over loopback, a Unix socket or a sidecar that does)".into(),
            ));
        }
        config.ssl_mode(SslMode::Disable);
        config.connect_timeout(PATIENCE);
        // A peer gone without a reset is noticed within about a minute.
        config.keepalives_idle(Duration::from_secs(30));
        // A commit is durable before it is answered (whatever the server's
        // default), and no lock is waited on for long.
        let options = format!(
            "{} -c synchronous_commit=on -c lock_timeout=5s",
            config.get_options().unwrap_or("")
        );
        config.options(options.trim_start());
        if config.get_application_name().is_none() {
            config.application_name("warden");
        }
        let hosts = config
            .get_hosts()
            .iter()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .collect::<Vec<_>>();
        let ports = config.get_ports();
        let port = ports.first().copied().unwrap_or(5432);
        let shown = format!(
            "postgres://{}:{port}/{}",
            crate::redact::escape_control(&hosts.join(",")),
            crate::redact::escape_control(config.get_dbname().unwrap_or("")),
        );
        Ok(StateUrl { config, shown })
    }

    /// The URL without user and password, for messages.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Unreachable {
            at: self.shown.clone(),
            reason: e.to_string(),
        }
    }

    fn failed(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Failed {
            at: self.shown.clone(),
            reason: e.to_string(),
        }
    }

    /// A connection, its driver spawned on the current runtime.
    pub async fn connect(&self) -> Result<Client, StoreError> {
        let (client, connection) = tokio::time::timeout(PATIENCE, self.config.connect(NoTls))
            .await
            .map_err(|_| self.unreachable(format!("no answer within {PATIENCE:?}")))?
            .map_err(|e| self.unreachable(pg(&e)))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("state store connection closed: {e}");
            }
        });
        Ok(client)
    }

    /// Connects and brings the schema up to date.
    pub async fn open(&self) -> Result<Client, StoreError> {
        let mut client = self.connect().await?;
        if self.schema_version(&client).await? < latest() {
            self.migrate(&mut client).await?;
        }
        Ok(client)
    }

    /// The schema's version (0: none yet), read without taking a lock or
    /// needing the right to create tables.
    async fn schema_version(&self, client: &Client) -> Result<i32, StoreError> {
        let exists: bool = client
            .query_one("SELECT to_regclass('warden_migrations') IS NOT NULL", &[])
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| self.failed(pg(&e)))?;
        if !exists {
            return Ok(0);
        }
        client
            .query_one(
                "SELECT coalesce(max(version), 0) FROM warden_migrations",
                &[],
            )
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| self.failed(pg(&e)))
    }

    /// Applies the migrations the database lacks; refuses a database whose
    /// schema is newer than this build knows.
    async fn migrate(&self, client: &mut Client) -> Result<(), StoreError> {
        let tx = client
            .transaction()
            .await
            .map_err(|e| self.failed(pg(&e)))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(|e| self.failed(pg(&e)))?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS warden_migrations (
                version integer PRIMARY KEY,
                name text NOT NULL,
                applied timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(|e| self.failed(pg(&e)))?;
        let applied: Vec<i32> = tx
            .query("SELECT version FROM warden_migrations", &[])
            .await
            .map_err(|e| self.failed(pg(&e)))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let known = latest();
        if let Some(newer) = applied.iter().copied().filter(|&v| v > known).max() {
            return Err(self.failed(format!(
                "its schema is at version {newer}, newer than this warden knows ({known}): upgrade warden"
            )));
        }
        for (version, name, sql) in MIGRATIONS {
            if applied.contains(version) {
                continue;
            }
            tx.batch_execute(sql)
                .await
                .map_err(|e| self.failed(format!("migration {version} ({name}): {e}")))?;
            tx.execute(
                "INSERT INTO warden_migrations (version, name) VALUES ($1, $2)",
                &[version, name],
            )
            .await
            .map_err(|e| self.failed(pg(&e)))?;
        }
        tx.commit().await.map_err(|e| self.failed(pg(&e)))
    }
}

/// A connection that is opened again, on next use, after it ended (the
/// store restarted, the network failed).
pub(crate) struct Link {
    url: StateUrl,
    client: tokio::sync::Mutex<Option<std::sync::Arc<Client>>>,
}

impl Link {
    /// Connects now (migrating if needed): a store unreachable at start is
    /// an error then.
    pub(crate) async fn open(url: &StateUrl) -> Result<Link, StoreError> {
        let client = tokio::time::timeout(3 * PATIENCE, url.open())
            .await
            .map_err(|_| url.unreachable("no answer"))??;
        Ok(Link {
            url: url.clone(),
            client: tokio::sync::Mutex::new(Some(std::sync::Arc::new(client))),
        })
    }

    /// The connection, opened again if it ended or was reset; why not, when
    /// it cannot be had within [`PATIENCE`].
    pub(crate) async fn get(&self) -> Result<std::sync::Arc<Client>, String> {
        let got = tokio::time::timeout(PATIENCE, async {
            let mut held = self.client.lock().await;
            if let Some(c) = held.as_ref().filter(|c| !c.is_closed()) {
                return Ok(c.clone());
            }
            *held = None;
            let c = std::sync::Arc::new(self.url.connect().await?);
            *held = Some(c.clone());
            Ok::<_, StoreError>(c)
        })
        .await;
        match got {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(self.failed("no connection within 5 s")),
        }
    }

    /// Drops the connection after a statement failed or went unanswered:
    /// a half-open one is not waited on again.
    pub(crate) async fn reset(&self) {
        *self.client.lock().await = None;
    }

    /// A statement's answer within [`PATIENCE`], or why not (naming the
    /// store); the connection is reset after a failure or silence.
    pub(crate) async fn within<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, String> {
        let r = match tokio::time::timeout(PATIENCE, f).await {
            Ok(r) => r.map_err(|e| self.failed(pg(&e))),
            Err(_) => Err(self.failed("no answer")),
        };
        if r.is_err() {
            self.reset().await;
        }
        r
    }

    /// An error naming the store (never its password).
    pub(crate) fn failed(&self, e: impl std::fmt::Display) -> String {
        self.url.failed(e).to_string()
    }

    pub(crate) fn url(&self) -> &StateUrl {
        &self.url
    }
}

/// One writer's chain in the store.
#[derive(Debug, Clone)]
pub struct ChainInfo {
    pub chain: String,
    pub replica: String,
    pub started: String,
    pub records: i64,
}

/// Reading the shared trail: its chains, their lines (whole, or the newest
/// within a budget: `tail.rs`), the published keys.
pub struct TrailReader<'a> {
    url: &'a StateUrl,
    client: Client,
}

impl<'a> TrailReader<'a> {
    /// Connects, needing only the right to read: reading creates nothing.
    pub async fn open(url: &'a StateUrl) -> Result<TrailReader<'a>, StoreError> {
        let client = url.connect().await?;
        let version = tokio::time::timeout(PATIENCE, url.schema_version(&client))
            .await
            .map_err(|_| url.unreachable("no answer"))??;
        if version == 0 {
            return Err(url.failed("it holds no Warden trail (no warden_migrations table)"));
        }
        Ok(TrailReader { client, url })
    }

    /// Every chain, oldest first.
    pub async fn chains(&self) -> Result<Vec<ChainInfo>, StoreError> {
        let rows = self
            .client
            .query(
                "SELECT c.chain, c.replica, c.started::text,
                        (SELECT count(*) FROM warden_audit a WHERE a.chain = c.chain)
                 FROM warden_chains c ORDER BY c.started, c.chain",
                &[],
            )
            .await
            .map_err(|e| self.url.failed(pg(&e)))?;
        rows.iter()
            .map(|r| {
                Ok(ChainInfo {
                    chain: r.try_get(0)?,
                    replica: r.try_get(1)?,
                    started: r.try_get(2)?,
                    records: r.try_get(3)?,
                })
            })
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(|e| self.url.failed(pg(&e)))
    }

    /// A chain's lines in order, as a file trail holds them (each ended by
    /// a newline). A gap in `seq` is kept as a gap: verification reports
    /// the record after it as not following its predecessor.
    pub async fn lines(&self, chain: &str) -> Result<Vec<u8>, StoreError> {
        let rows = self
            .client
            .query(
                "SELECT line FROM warden_audit WHERE chain = $1 ORDER BY seq",
                &[&chain],
            )
            .await
            .map_err(|e| self.url.failed(pg(&e)))?;
        let mut out = Vec::new();
        for r in rows {
            let line: &str = r.try_get(0).map_err(|e| self.url.failed(pg(&e)))?;
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        Ok(out)
    }

    /// The key set the replicas published (JWKS): each row whose key is
    /// the one its id names. Another row (written by whoever can write the
    /// table: a key under another's id, or naming one) is left out and
    /// logged, so that it cannot make the whole set fail to load, and a
    /// chain it claims shows as signed by an unknown key.
    pub async fn jwks(&self) -> Result<serde_json::Value, StoreError> {
        let rows = self
            .client
            .query("SELECT kid, jwk FROM warden_keys ORDER BY kid", &[])
            .await
            .map_err(|e| self.url.failed(pg(&e)))?;
        let mut keys = Vec::new();
        for r in &rows {
            let kid: &str = r.try_get(0).map_err(|e| self.url.failed(pg(&e)))?;
            let jwk = r
                .try_get::<_, &str>(1)
                .ok()
                .and_then(|j| serde_json::from_str(j).ok());
            match jwk {
                Some(jwk) if crate::keys::Verifier::is_key(&jwk, kid) => keys.push(jwk),
                _ => tracing::warn!(
                    "warden_keys: the row for key id '{}' does not hold that key; left out",
                    crate::redact::escape_control(&kid.chars().take(64).collect::<String>())
                ),
            }
        }
        Ok(serde_json::json!({ "keys": keys }))
    }

    /// Verifies each chain as a file trail is verified.
    pub async fn verify(
        &self,
        keys: Option<&Verifier>,
    ) -> Result<Vec<(ChainInfo, Report)>, StoreError> {
        let mut out = Vec::new();
        for chain in self.chains().await? {
            let lines = self.lines(&chain.chain).await?;
            out.push((chain, verify_bytes(&lines, keys)));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_in_the_folder_is_applied_in_order() {
        let mut files: Vec<String> =
            std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
        files.sort();
        assert_eq!(files.len(), MIGRATIONS.len(), "{files:?}");
        for (i, (file, (version, _, sql))) in files.iter().zip(MIGRATIONS).enumerate() {
            assert_eq!(usize::try_from(*version).unwrap(), i + 1);
            assert!(file.starts_with(&format!("{version:04}_")), "{file}");
            let text = std::fs::read_to_string(format!(
                "{}/migrations/{file}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap();
            assert_eq!(&text, sql, "{file}");
        }
    }

    #[test]
    fn a_url_is_shown_without_its_password_and_tls_is_not_silently_dropped() {
        let u = StateUrl::parse("postgres://warden:s3cr3t-pw@127.0.0.1:5433/trail").unwrap();
        assert_eq!(u.shown(), "postgres://127.0.0.1:5433/trail");
        assert!(!format!("{u:?}").contains("s3cr3t"));
        let e = StateUrl::parse("postgres://w:pw@db/x?sslmode=require")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sslmode=require") && !e.contains("pw@"), "{e}");
        let e = StateUrl::parse("postgres://warden:p@ss@db:5432/x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("%40") && !e.contains("ss@db"), "{e}");
        let e = StateUrl::parse("mysql://w:pw@db/x")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("expected a postgres://") && !e.contains("pw"),
            "{e}"
        );
        let e = StateUrl::parse("postgres://w:pw@db:notaport/x")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--state: not a PostgreSQL URL") && !e.contains("pw"),
            "{e}"
        );
    }
}
