//! A trail line, byte for byte: a record's JSON with `seq` and `prev`
//! spliced in after its version and its `hash` appended last, and what a
//! checkpoint signs (docs/AUDIT-FORMAT.md).

use super::{AuditError, Event, Record};
use sha2::{Digest, Sha256};

/// What a line adds to its record's JSON, at most: `"seq":N,` (20 digits),
/// `"prev":"…",` and `,"hash":"…"` (64 hex digits each), and the newline.
const LINE_EXTRA: usize = 27 + 74 + 74 + 1;

/// `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The SHA-256 (hex) of a record's JSON without its `hash` field.
pub fn record_hash(record: &Record) -> String {
    let mut r = record.clone();
    r.hash = None;
    hex::encode(Sha256::digest(serde_json::to_vec(&r).unwrap_or_default()))
}

/// A record serialized without `seq`, `prev` and `hash`, ready to be
/// chained: serialized before the chain's lock is taken, so that writers
/// in parallel do that work in parallel.
pub(crate) struct Body {
    pub(crate) event: Event,
    json: Vec<u8>,
    /// The length of its leading `{"v":N,`.
    lead: usize,
}

impl Body {
    pub(crate) fn of(record: &Record) -> Result<Body, AuditError> {
        let json = if record.seq.is_none() && record.prev.is_none() && record.hash.is_none() {
            // Most records fit: no reallocation while serializing.
            let mut json = Vec::with_capacity(512);
            serde_json::to_writer(&mut json, record).map_err(sink_err)?;
            json
        } else {
            unchained_json(record)?
        };
        // `v` is the first field and a number: the lead ends at the first comma.
        let lead = json
            .iter()
            .position(|&b| b == b',')
            .map(|i| i + 1)
            .filter(|&i| json.starts_with(b"{\"v\":") && i > 5)
            .ok_or_else(|| AuditError::Sink("a record must start with its version".into()))?;
        Ok(Body {
            event: record.event,
            json,
            lead,
        })
    }

    /// The most bytes [`Body::line_into`] appends: the JSON, `seq` and
    /// `prev`, the `hash` and the newline.
    pub(crate) fn line_len(&self) -> usize {
        self.json.len() + LINE_EXTRA
    }

    /// Appends to `out` the record's line chained at `seq` after `prev`,
    /// and returns its hash: exactly the JSON that serializing the record
    /// with `seq`, `prev` and `hash` set gives: `seq` and `prev` spliced in
    /// after the leading `{"v":1,` and `hash` (of the bytes before it)
    /// appended as the last field.
    pub(crate) fn line_into(&self, seq: u64, prev: &str, out: &mut Vec<u8>) -> String {
        let start = out.len();
        out.reserve(self.line_len());
        out.extend_from_slice(&self.json[..self.lead]);
        out.extend_from_slice(b"\"seq\":");
        out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
        out.extend_from_slice(b",\"prev\":\"");
        out.extend_from_slice(prev.as_bytes());
        out.extend_from_slice(b"\",");
        out.extend_from_slice(&self.json[self.lead..]);
        let hash = lower_hex(&Sha256::digest(&out[start..]));
        out.pop(); // the closing brace
        out.extend_from_slice(b",\"hash\":\"");
        out.extend_from_slice(hash.as_bytes());
        out.extend_from_slice(b"\"}\n");
        hash
    }
}

fn sink_err(e: serde_json::Error) -> AuditError {
    AuditError::Sink(e.to_string())
}

/// The JSON of `record` without its `seq`, `prev` and `hash`: a record
/// read back from a trail. Apart, so that the copy does not size the frame
/// of [`Body::of`], which runs on a tool's fiber stack.
#[cold]
#[inline(never)]
fn unchained_json(record: &Record) -> Result<Vec<u8>, AuditError> {
    let mut r = record.clone();
    (r.seq, r.prev, r.hash) = (None, None, None);
    serde_json::to_vec(&r).map_err(sink_err)
}

/// `record`'s line chained at `seq` after `prev` (see [`Body::line_into`]).
#[cfg(test)]
pub(super) fn line_of(
    record: &Record,
    seq: u64,
    prev: &str,
) -> Result<(Vec<u8>, String), AuditError> {
    let mut line = Vec::new();
    let hash = Body::of(record)?.line_into(seq, prev, &mut line);
    Ok((line, hash))
}

/// `bytes` in lower-case hex (what `hex::encode` gives, without its
/// per-character iterator: this runs for every record).
pub(super) fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// `invocation`, `task`, `tool`, `identity` of a record: what a checkpoint
/// copies from the last record its sink wrote.
pub(crate) type Ids = [std::sync::Arc<str>; 4];

/// A checkpoint of the `count` records before it, the last with hash
/// `head`, signed by `signer`, carrying `ids` (empty when none).
pub(crate) fn checkpoint_record(
    ids: Option<Ids>,
    count: u64,
    head: &str,
    signer: &crate::keys::KeyPair,
) -> Record {
    let [invocation, task, tool, identity] =
        ids.unwrap_or_else(|| std::array::from_fn(|_| std::sync::Arc::from("")));
    let mut c = Record::new(Event::Checkpoint, invocation, task, tool, identity);
    c.count = Some(count);
    c.head = Some(head.to_owned());
    c.signature = Some(signer.sign_raw(checkpoint_message(count, head).as_bytes()));
    c.key = Some(signer.kid().to_owned());
    c
}

/// What a checkpoint signature covers.
pub fn checkpoint_message(count: u64, head: &str) -> String {
    format!("warden-audit-checkpoint/1 {count} {head}")
}
