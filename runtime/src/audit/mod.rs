//! The audit trail: one record per invocation start, per host-call decision,
//! per tool log message and per invocation end.
//!
//! Records are JSON Lines. A record is written before the action it allows
//! takes place; if it cannot be written the host call fails, and the
//! invocation with it, rather than running unaudited.
//!
//! A [`FileSink`] trail is tamper-evident: each record carries its sequence
//! number, the hash of the record before it and its own hash, and signed
//! checkpoints follow each invocation's end (see [`file`] and [`verify`]).

mod clock;
mod file;
pub(crate) mod line;
mod owed;
pub mod show;
pub mod verify;

pub use file::{Cadence, FileSink, WriteBehind};
pub use line::{GENESIS, checkpoint_message, record_hash};

use crate::redact::Redactor;
pub(crate) use owed::Open;
use owed::Owed;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Version of the record format.
pub const RECORD_VERSION: u32 = 1;

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    #[serde(rename = "invocation.start")]
    InvocationStart,
    #[serde(rename = "decision")]
    Decision,
    #[serde(rename = "log")]
    Log,
    #[serde(rename = "secret.issued")]
    SecretIssued,
    #[serde(rename = "secret.expired")]
    SecretExpired,
    /// An egress request that was sent: its status and byte counts.
    #[serde(rename = "egress")]
    Egress,
    /// An action waiting for approval: its digest and argument summary.
    #[serde(rename = "approval.requested")]
    ApprovalRequested,
    /// What an allowed host call's operation came to (`ok`, or `error`
    /// and why), for capabilities without a record of their own; and
    /// `stopped` for an operation dropped before it finished (a request or
    /// a deployment: its invocation ended, was cancelled or ran out of
    /// time, or the tool dropped the `wasi:http` response it waited for).
    #[serde(rename = "outcome")]
    Outcome,
    /// A deployment that ran: backend, target, artifact digest, outcome.
    #[serde(rename = "deploy")]
    Deploy,
    /// A signed statement of how many records precede it and the hash of
    /// the last one.
    #[serde(rename = "checkpoint")]
    Checkpoint,
    #[serde(rename = "invocation.end")]
    InvocationEnd,
}

/// One audit record. Optional fields are omitted when they do not apply.
///
/// Serialized, its fields come in declaration order ([`FIELDS`]); a trail
/// line is exactly that serialization (see `docs/AUDIT-FORMAT.md`), and a
/// field Warden does not write is refused, not ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub v: u32,
    /// Position in a chained trail, from 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Hash of the record before this one in a chained trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
    /// RFC 3339, UTC, milliseconds.
    pub ts: String,
    pub event: Event,
    pub invocation: Arc<str>,
    pub task: Arc<str>,
    /// The agent the task runs for, when one authenticated:
    /// `oauth:ISSUER SUBJECT`, `spiffe:ID` or `static-token:NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<Arc<str>>,
    pub tool: Arc<str>,
    /// The tool's identity, `sha256:…`.
    pub identity: Arc<str>,
    /// Who signed the component (`key:sha256:…`), on the start record of a
    /// tool whose manifest requires a signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<Arc<str>>,
    /// Capability family of a host call, e.g. `fs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    /// e.g. `write`, `remove-file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// e.g. `workspace:src/lib.rs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// `allow` or `deny`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// The rule that decided, e.g. `fs.rights`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Ids of the runtime policies that decided (denied or asked for
    /// approval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<Vec<String>>,
    /// The address an egress request connected to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// HTTP status of an egress response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_out: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_in: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_us: Option<u64>,
    /// How an invocation ended: `ok`, `tool-error:<kind>`, `limit:<which>`,
    /// `trap`, `host-error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Log level, for log records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// Log message (capped), or detail of an outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Checkpoint: how many records precede it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Checkpoint: the hash of the last record before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    /// Checkpoint: Ed25519 signature (base64url) over `count` and `head`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// Checkpoint: id of the signing key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// SHA-256 (hex) of this record without this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

/// The fields of a [`Record`], in the order a trail line holds them.
pub const FIELDS: [&str; 31] = [
    "v",
    "seq",
    "prev",
    "ts",
    "event",
    "invocation",
    "task",
    "agent",
    "tool",
    "identity",
    "signer",
    "capability",
    "action",
    "resource",
    "decision",
    "rule",
    "reason",
    "policies",
    "address",
    "status",
    "bytes_out",
    "bytes_in",
    "duration_us",
    "outcome",
    "level",
    "message",
    "count",
    "head",
    "signature",
    "key",
    "hash",
];

impl Record {
    /// A record of `event`, now, by these ids, its other fields empty.
    pub fn new(
        event: Event,
        invocation: Arc<str>,
        task: Arc<str>,
        tool: Arc<str>,
        identity: Arc<str>,
    ) -> Record {
        Record {
            v: RECORD_VERSION,
            seq: None,
            prev: None,
            ts: clock::now_rfc3339(),
            event,
            invocation,
            task,
            agent: None,
            tool,
            identity,
            signer: None,
            capability: None,
            action: None,
            resource: None,
            decision: None,
            rule: None,
            reason: None,
            policies: None,
            address: None,
            status: None,
            bytes_out: None,
            bytes_in: None,
            duration_us: None,
            outcome: None,
            level: None,
            message: None,
            count: None,
            head: None,
            signature: None,
            key: None,
            hash: None,
        }
    }
}

/// Where records go.
pub trait AuditSink: Send + Sync {
    /// Appends one record; it must be durable in the sink's sense (for a file:
    /// handed to the OS) before this returns.
    fn append(&self, record: &Record) -> Result<(), AuditError>;

    /// Appends `records` in order, as one write where the sink can (a file
    /// sink: one `write` under one lock). All or none: on error, none of
    /// them counts as written.
    fn append_all(&self, records: &[Record]) -> Result<(), AuditError> {
        records.iter().try_for_each(|r| self.append(r))
    }

    /// Appends `records` in order, all or none, for the sink to write now
    /// or soon: records nothing waits on (an invocation's end). A file
    /// sink writes them with its next write or within its
    /// [`WriteBehind`] window, whichever comes first.
    fn append_behind(&self, records: Vec<Record>) -> Result<(), AuditError> {
        self.append_all(&records)
    }

    /// Writes now what [`AuditSink::append_behind`] left waiting.
    fn flush(&self) -> Result<(), AuditError> {
        Ok(())
    }

    /// Writes what waits and signs what the sink has left unsigned (a file
    /// sink's checkpoint), as at a clean shutdown; a no-op for sinks
    /// without either.
    fn settle(&self) {}

    /// Whether records can be written now; why not when they cannot (a
    /// store that is unreachable). Readiness probes ask this.
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot write the audit trail {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot write the audit trail {}: another writer has held its lock for {}s (a stopped warden process? `fuser` names the holder)",
        path.display(),
        waited.as_secs()
    )]
    Locked {
        path: PathBuf,
        waited: std::time::Duration,
    },
    #[error("audit sink failed: {0}")]
    Sink(String),
    /// A record of an invocation whose end record was already written:
    /// nothing may follow an invocation's end (a request task of an
    /// invocation its caller dropped, still finishing a poll).
    #[error("the invocation has ended: no record may follow its end record")]
    Ended,
}

/// Keeps records in memory; for tests and embedders that ship them elsewhere.
#[derive(Default)]
pub struct MemorySink {
    records: Mutex<Vec<Record>>,
}

impl MemorySink {
    pub fn new() -> Arc<MemorySink> {
        Arc::new(MemorySink::default())
    }

    pub fn records(&self) -> Vec<Record> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records of one invocation, in order.
    pub fn invocation(&self, id: &str) -> Vec<Record> {
        self.records()
            .into_iter()
            .filter(|r| &*r.invocation == id)
            .collect()
    }
}

impl AuditSink for MemorySink {
    fn append(&self, record: &Record) -> Result<(), AuditError> {
        self.append_all(std::slice::from_ref(record))
    }

    fn append_all(&self, records: &[Record]) -> Result<(), AuditError> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(records);
        Ok(())
    }
}

/// Emits each record as a `tracing` event with target `warden::audit`.
/// The default sink: nothing is written unless a subscriber collects it.
pub struct TracingSink;

impl AuditSink for TracingSink {
    fn append(&self, record: &Record) -> Result<(), AuditError> {
        let json = serde_json::to_string(record).map_err(|e| AuditError::Sink(e.to_string()))?;
        // Escaped for a terminal (a record keeps a tool's text as it
        // wrote it, bidi overrides and all; JSON escapes only controls).
        let json = crate::redact::json_for_terminal(&json);
        tracing::info!(target: "warden::audit", "{json}");
        Ok(())
    }
}

/// The audit context of one invocation: who is acting, under which task.
/// Records pass through the invocation's secret redactor on the way out.
///
/// An invocation's start record may be held back ([`Auditor::hold`]) until
/// its next record: the two then go out in one write. Every effect of a
/// tool passes a host call, and every host call writes a record before it
/// acts, so the start is still on the trail before anything the invocation
/// does; a tool that makes no host call gets its start and end in one
/// write.
///
/// The end record ([`Auditor::write_end`]) is the invocation's last: any
/// record written after it, by any clone, is refused
/// ([`AuditError::Ended`]), and nothing of it is written.
#[derive(Clone)]
pub struct Auditor {
    sink: Arc<dyn AuditSink>,
    redactor: Option<Arc<Redactor>>,
    /// What the invocation's trail still owes, shared by this invocation's
    /// clones (the runtime's, its store's gate, its request tasks'). Each
    /// write holds it, so a record and the end are never written out of
    /// order.
    owed: Arc<Mutex<owed::Trail>>,
    pub invocation: Arc<str>,
    pub task: Arc<str>,
    /// The agent the task runs for, as records name it.
    pub agent: Option<Arc<str>>,
    pub tool: Arc<str>,
    pub identity: Arc<str>,
}

impl Auditor {
    pub fn new(
        sink: Arc<dyn AuditSink>,
        invocation: &str,
        task: &str,
        tool: &str,
        identity: &str,
    ) -> Self {
        Self {
            sink,
            redactor: None,
            owed: Arc::default(),
            invocation: invocation.into(),
            task: task.into(),
            agent: None,
            tool: tool.into(),
            identity: identity.into(),
        }
    }

    /// An auditor from ids the caller already holds as shared strings.
    pub fn with_ids(
        sink: Arc<dyn AuditSink>,
        invocation: Arc<str>,
        task: Arc<str>,
        tool: Arc<str>,
        identity: Arc<str>,
    ) -> Self {
        Self {
            sink,
            redactor: None,
            owed: Arc::default(),
            invocation,
            task,
            agent: None,
            tool,
            identity,
        }
    }

    /// Names the agent the task runs for in every record.
    pub fn with_agent(mut self, agent: Option<Arc<str>>) -> Self {
        self.agent = agent;
        self
    }

    /// An auditor whose records go nowhere (for `describe`, which grants nothing).
    pub(crate) fn discard() -> Self {
        struct Discard;
        impl AuditSink for Discard {
            fn append(&self, _: &Record) -> Result<(), AuditError> {
                Ok(())
            }
        }
        Self::new(Arc::new(Discard), "", "", "", "")
    }

    /// A record of this invocation with the common fields filled in.
    pub fn record(&self, event: Event) -> Record {
        let mut r = Record::new(
            event,
            self.invocation.clone(),
            self.task.clone(),
            self.tool.clone(),
            self.identity.clone(),
        );
        r.agent.clone_from(&self.agent);
        r
    }

    /// Redacts the invocation's secret values from every record written.
    pub(crate) fn set_redactor(&mut self, redactor: Arc<Redactor>) {
        self.redactor = Some(redactor);
    }

    /// A decision record: the capability, action and resource of a host
    /// call, and the decision with the rule that made it and its reason.
    pub fn decision(
        &self,
        capability: &str,
        action: &str,
        resource: &str,
        d: &crate::policy::Decision,
    ) -> Record {
        let mut r = self.record(Event::Decision);
        r.capability = Some(capability.to_owned());
        r.action = Some(action.to_owned());
        r.resource = Some(resource.to_owned());
        r.decision = Some(if d.allow { "allow" } else { "deny" }.into());
        r.rule = Some(d.rule.into());
        r.reason = Some(d.reason.clone());
        if !d.policies.is_empty() {
            r.policies = Some(d.policies.clone());
        }
        r
    }

    /// Holds `start` back until this invocation's next record, to be
    /// written with it (see the type's documentation).
    pub(crate) fn hold(&mut self, start: Record) {
        self.owed().owed = Owed::Start(Box::new(start));
    }

    /// Whether the invocation's end record was written (or tried).
    pub(crate) fn ended(&self) -> bool {
        matches!(self.owed().owed, Owed::Ended)
    }

    fn owed(&self) -> std::sync::MutexGuard<'_, owed::Trail> {
        self.owed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `record`, after the held start record if there is one.
    ///
    /// A record is written from the host call that it allows, on the tool's
    /// fiber stack, whose pages stay resident for as long as the call then
    /// waits: the redacted copies are made on the heap, by calls that return
    /// before the sink's append (records on this frame would deepen every
    /// append, ~3.6 KiB).
    pub fn write(&self, record: &Record) -> Result<(), AuditError> {
        self.write_held(&mut self.owed(), record)
    }

    /// [`Auditor::write`] with the trail's state held.
    fn write_held(&self, trail: &mut owed::Trail, record: &Record) -> Result<(), AuditError> {
        match std::mem::replace(&mut trail.owed, Owed::Nothing) {
            Owed::Nothing => self.append_clean(record),
            Owed::Start(start) => {
                let both = self.cleaned_pair(start, record);
                self.sink.append_all(&both).inspect_err(|_| {
                    // Not written: still owed before the next record.
                    trail.owed = Owed::Start(owed::first_boxed(both));
                })
            }
            Owed::Ended => {
                trail.owed = Owed::Ended;
                Err(AuditError::Ended)
            }
        }
    }

    /// Appends `record`, redacted first if this invocation has secrets.
    fn append_clean(&self, record: &Record) -> Result<(), AuditError> {
        match self.redactor.as_deref() {
            Some(r) if !r.is_empty() => self.sink.append(&self.cleaned_boxed(record)),
            _ => self.sink.append(record),
        }
    }

    #[inline(never)]
    fn cleaned_boxed(&self, record: &Record) -> Box<Record> {
        Box::new(self.cleaned(record.clone()))
    }

    /// The held start (moved, not copied) and `record`, each redacted.
    #[inline(never)]
    fn cleaned_pair(&self, start: Box<Record>, record: &Record) -> Vec<Record> {
        vec![self.cleaned(*start), self.cleaned(record.clone())]
    }

    /// Writes `end`, this invocation's last record, behind
    /// ([`AuditSink::append_behind`]): nothing waits on it. The held start
    /// record goes with it, and the outcome `stopped` of each operation
    /// still open ([`Auditor::write_open`]) right before it.
    pub fn write_end(&self, end: Record) -> Result<(), AuditError> {
        // The end is the invocation's last record, written or not: a start
        // not written with it is never owed again, and nothing follows it.
        let mut trail = self.owed();
        let start = match std::mem::replace(&mut trail.owed, Owed::Ended) {
            Owed::Nothing => None,
            Owed::Start(start) => Some(*start),
            Owed::Ended => return Err(AuditError::Ended),
        };
        let stopped = trail.take_open().into_values().map(|op| self.stopped(op));
        let records = start.into_iter().chain(stopped).chain([end]);
        let records = records.map(|r| self.cleaned(r));
        self.sink.append_behind(records.collect())
    }

    /// `record` with the invocation's secret values redacted from its
    /// free-text fields (the action too: an egress method is the tool's).
    fn cleaned(&self, mut record: Record) -> Record {
        if let Some(r) = self.redactor.as_deref().filter(|r| !r.is_empty()) {
            for field in [
                &mut record.action,
                &mut record.resource,
                &mut record.reason,
                &mut record.message,
            ] {
                if let Some(text) = field.take() {
                    *field = Some(r.redact_string(text));
                }
            }
        }
        record
    }
}

#[cfg(test)]
mod tests;
