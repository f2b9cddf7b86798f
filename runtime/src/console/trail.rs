//! The audit trail as the console shows it: each chain read and verified
//! as `warden audit verify` does, then its records filtered.
//!
//! A file trail is one chain, read up to its last newline (the writer may
//! be half-way through a line); a store (`--state`) has a chain per writer.
//! Every page view reads and verifies the trail again (the status shown is
//! the trail's now, not a cached one), at most [`MAX_READ`] bytes of it
//! all told: a larger file is read from its end; a store's chains newest
//! first, each whole while the budget lasts, the one that spends it from
//! its end, older ones not at all. What was not read whole is shown
//! unverified, and the page says so.

use crate::audit::Record;
use crate::audit::verify::{Report, verify_bytes};
use crate::keys::Verifier;
use std::path::PathBuf;

/// Where the trail is, and the keys its checkpoints are checked with.
pub enum TrailSource {
    /// A file trail, and this instance's audit key.
    File { path: PathBuf, keys: Verifier },
    /// The shared store; its published keys are read with the trail.
    Store(Box<crate::store::StateUrl>),
}

/// One chain: its name, its verification, and its matching records
/// (1-based line, record), newest first.
pub(crate) struct Chain {
    pub name: String,
    /// `None`: too large to verify on a page view.
    pub report: Option<Report>,
    /// Matching records, with their 1-based line when it is known.
    pub records: Vec<(Option<u64>, Record)>,
    /// Matching records beyond those kept.
    pub more: usize,
    /// The chain's size.
    pub bytes: u64,
    /// How much of it was read: its newest `read` bytes.
    pub read: u64,
}

/// What a page view read of the trail.
pub(crate) struct Trail {
    /// The chains read, newest first.
    pub chains: Vec<Chain>,
    /// Older chains left unread: the budget was spent.
    pub older: usize,
}

/// The most of a trail a page view reads, all its chains together; of a
/// larger trail, the newest this many bytes are shown, a chain not read
/// whole unverified.
pub(crate) const MAX_READ: u64 = 64 << 20;
/// How long reading the store's trail may take.
const STORE_TIME: std::time::Duration = std::time::Duration::from_secs(30);

/// What the trail page filters on; every field optional, each compared
/// exactly (the invocation also by its last 8 characters).
#[derive(Default, Debug, Clone)]
pub(crate) struct Filters {
    pub task: String,
    pub tool: String,
    pub invocation: String,
    pub event: String,
    pub decision: String,
}

/// The event names a filter may give, as records spell them.
pub(crate) const EVENTS: &[&str] = &[
    "invocation.start",
    "decision",
    "approval.requested",
    "secret.issued",
    "secret.expired",
    "egress",
    "deploy",
    "outcome",
    "log",
    "invocation.end",
    "checkpoint",
];

/// The longest value a filter takes.
const MAX_FILTER: usize = 256;

impl Filters {
    /// The filters of a query string, or what is wrong with one.
    pub(crate) fn parse(query: &str) -> Result<Filters, String> {
        let mut f = Filters::default();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            if v.is_empty() {
                continue;
            }
            if v.len() > MAX_FILTER || v.chars().any(char::is_control) {
                return Err(format!(
                    "filter '{k}': expected at most {MAX_FILTER} bytes without control characters"
                ));
            }
            let slot = match &*k {
                "task" => &mut f.task,
                "tool" => &mut f.tool,
                "invocation" => &mut f.invocation,
                "event" if EVENTS.contains(&&*v) => &mut f.event,
                "event" => {
                    return Err(format!(
                        "filter 'event': expected one of {}",
                        EVENTS.join(", ")
                    ));
                }
                "decision" if v == "allow" || v == "deny" => &mut f.decision,
                "decision" => return Err("filter 'decision': expected allow or deny".into()),
                _ => {
                    return Err(format!(
                        "unknown filter '{k}' (expected task, tool, invocation, event or decision)"
                    ));
                }
            };
            *slot = v.into_owned();
        }
        Ok(f)
    }

    fn keep(&self, r: &Record) -> bool {
        let is = |want: &str, have: &str| want.is_empty() || want == have;
        let event = serde_json::to_value(r.event).ok();
        is(&self.task, &r.task)
            && is(&self.tool, &r.tool)
            && (self.invocation.is_empty()
                || *r.invocation == *self.invocation
                || (self.invocation.len() == 8 && r.invocation.ends_with(&*self.invocation)))
            && is(
                &self.event,
                event.as_ref().and_then(|e| e.as_str()).unwrap_or(""),
            )
            && is(&self.decision, r.decision.as_deref().unwrap_or(""))
    }
}

/// The bytes of a trail up to its last complete line.
fn complete_lines(mut bytes: Vec<u8>) -> Vec<u8> {
    let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    bytes.truncate(end);
    bytes
}

/// One chain verified (when read whole: `whole` is `None`, else the
/// chain's size) and filtered, keeping the newest `limit` matches.
fn chain(
    name: String,
    bytes: &[u8],
    keys: Option<&Verifier>,
    f: &Filters,
    limit: usize,
    whole: Option<u64>,
) -> Chain {
    let report = whole.is_none().then(|| verify_bytes(bytes, keys));
    let mut records = Vec::new();
    let mut matched = 0;
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate().rev() {
        let Ok(r) = serde_json::from_str::<Record>(line) else {
            continue;
        };
        if f.keep(&r) {
            matched += 1;
            if records.len() < limit {
                records.push((whole.is_none().then_some(i as u64 + 1), r));
            }
        }
    }
    Chain {
        name,
        report,
        more: matched - records.len(),
        records,
        bytes: whole.unwrap_or(bytes.len() as u64),
        read: bytes.len() as u64,
    }
}

/// A file trail's complete lines: all of them, or when it is larger than
/// [`MAX_READ`] the newest (and its size). Only a regular file is read
/// (opened without blocking: a FIFO swapped in is refused, not waited on).
fn read_file(path: &std::path::Path) -> std::io::Result<(Vec<u8>, Option<u64>)> {
    use std::io::{Read as _, Seek as _};
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let size = meta.len();
    if size <= MAX_READ {
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        file.take(MAX_READ).read_to_end(&mut bytes)?;
        return Ok((complete_lines(bytes), None));
    }
    file.seek(std::io::SeekFrom::Start(size - MAX_READ))?;
    let mut bytes = Vec::new();
    file.take(MAX_READ).read_to_end(&mut bytes)?;
    // The first line is cut: skip to the next.
    let start = bytes
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |i| i + 1);
    Ok((complete_lines(bytes.split_off(start)), Some(size)))
}

impl TrailSource {
    /// The chains a page reads, verified when read whole, with the newest
    /// `limit` records of each that match `f`; or why the trail cannot be
    /// read.
    pub(crate) async fn read(&self, f: &Filters, limit: usize) -> Result<Trail, String> {
        match self {
            TrailSource::File { path, keys } => {
                let path = path.clone();
                let (bytes, whole) = tokio::task::spawn_blocking(move || read_file(&path))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("cannot read the audit trail: {e}"))?;
                Ok(Trail {
                    chains: vec![chain("file".into(), &bytes, Some(keys), f, limit, whole)],
                    older: 0,
                })
            }
            TrailSource::Store(url) => tokio::time::timeout(STORE_TIME, read_store(url, f, limit))
                .await
                .map_err(|_| {
                    format!("the store did not answer within {}s", STORE_TIME.as_secs())
                })?,
        }
    }
}

/// The store's chains, newest first, within [`MAX_READ`] bytes all told:
/// each read whole while the budget lasts, the one that spends it from its
/// end (its newest lines), older ones not at all (counted).
async fn read_store(
    url: &crate::store::StateUrl,
    f: &Filters,
    limit: usize,
) -> Result<Trail, String> {
    let reader = crate::store::TrailReader::open(url)
        .await
        .map_err(|e| e.to_string())?;
    let jwks = reader.jwks().await.map_err(|e| e.to_string())?;
    let keys = Verifier::from_jwks(&jwks).map_err(|e| e.to_string())?;
    let mut left = MAX_READ;
    let mut trail = Trail {
        chains: Vec::new(),
        older: 0,
    };
    // Oldest first: read from the newest.
    let chains = reader.chains().await.map_err(|e| e.to_string())?;
    for c in chains.iter().rev() {
        if left == 0 {
            trail.older += 1;
            continue;
        }
        let tail = reader
            .newest_lines(&c.chain, left)
            .await
            .map_err(|e| e.to_string())?;
        let read = tail.bytes.len() as u64;
        left = if tail.cut {
            0
        } else {
            left.saturating_sub(read)
        };
        // Not read whole: its size, for the page to say how much was read
        // of how much (counted by the store; a chain that grew meanwhile
        // is at least what was read of it).
        let whole = if tail.cut {
            let size = reader
                .chain_bytes(&c.chain)
                .await
                .map_err(|e| e.to_string())?;
            Some(size.max(read))
        } else {
            None
        };
        let name = format!("{} ({})", c.chain, c.replica);
        trail
            .chains
            .push(chain(name, &tail.bytes, Some(&keys), f, limit, whole));
    }
    Ok(trail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_name_what_is_wrong_and_what_was_expected() {
        let f = Filters::parse("task=t1&event=decision&decision=deny&tool=").unwrap();
        assert_eq!(
            (&*f.task, &*f.event, &*f.decision),
            ("t1", "decision", "deny")
        );
        assert!(f.tool.is_empty());
        let e = Filters::parse("event=nope").unwrap_err();
        assert!(
            e.starts_with("filter 'event': expected one of invocation.start"),
            "{e}"
        );
        assert_eq!(
            Filters::parse("decision=maybe").unwrap_err(),
            "filter 'decision': expected allow or deny"
        );
        assert!(
            Filters::parse("colour=red")
                .unwrap_err()
                .starts_with("unknown filter 'colour'")
        );
        assert!(
            Filters::parse("task=a%1bb")
                .unwrap_err()
                .contains("control characters")
        );
        let long = format!("task={}", "a".repeat(MAX_FILTER + 1));
        assert!(Filters::parse(&long).is_err());
    }

    #[test]
    fn a_fifo_is_refused_without_waiting_and_a_large_trail_is_read_from_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let e = read_file(&fifo).unwrap_err();
        assert!(e.to_string().ends_with("is not a regular file"), "{e}");
        let big = dir.path().join("big");
        let line = format!("{}\n", "x".repeat(1023));
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(MAX_READ + 10).unwrap();
        drop(f);
        let mut f = std::fs::OpenOptions::new().append(true).open(&big).unwrap();
        std::io::Write::write_all(&mut f, format!("{line}{line}").as_bytes()).unwrap();
        let (bytes, whole) = read_file(&big).unwrap();
        assert_eq!(whole, Some(MAX_READ + 10 + 2048));
        assert_eq!(bytes, line.as_bytes(), "only the last whole line");
    }

    #[test]
    fn a_half_written_last_line_is_not_read() {
        assert_eq!(
            complete_lines(b"{\"a\":1}\n{\"b\"".to_vec()),
            b"{\"a\":1}\n"
        );
        assert_eq!(complete_lines(b"{\"b\"".to_vec()), b"");
    }
}
