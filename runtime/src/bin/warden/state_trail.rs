//! `warden audit verify|show|export --state URL`: the audit trail replicas
//! keep in PostgreSQL, one chain per process, each read as a file trail.

use crate::out::outln;
use crate::trail::{
    Filters, exit_status, for_people, jwks_file, print_report, reported, status_name,
};
use crate::{Failure, shown, usage};
use serde_json::json;
use std::path::Path;
use warden::Verifier;
use warden::audit::Record;
use warden::audit::verify::Status;
use warden::store::{ChainInfo, StateUrl, TrailReader};

async fn reader(url: &StateUrl) -> Result<TrailReader<'_>, Failure> {
    TrailReader::open(url).await.map_err(|e| usage(e.into()))
}

fn parse(url: &str) -> Result<StateUrl, Failure> {
    StateUrl::parse(url).map_err(|e| usage(e.into()))
}

/// How bad a status is, worst first.
fn severity(s: Status) -> u8 {
    match s {
        Status::Tampered => 0,
        Status::UnknownKey => 1,
        Status::Incomplete => 2,
        Status::Complete => 3,
    }
}

fn label(url: &StateUrl, c: &ChainInfo) -> String {
    format!(
        "{} chain {} ({})",
        url.shown(),
        shown(&c.chain),
        shown(&c.replica)
    )
}

/// Verifies every chain in the store; the exit status is the worst
/// chain's, as for a file (see `verify_cmd`). Without `--jwks`, the keys
/// are those the replicas published in the store, and the report says so.
pub async fn verify(url: &str, jwks: Option<&Path>, json: bool) -> Result<u8, Failure> {
    let url = parse(url)?;
    let reader = reader(&url).await?;
    let (keys, known) = match jwks {
        Some(p) => jwks_file(p)?,
        None => {
            let set = reader.jwks().await.map_err(|e| usage(e.into()))?;
            let keys = Verifier::from_jwks(&set).map_err(|e| usage(e.into()))?;
            let kids: Vec<&str> = keys.kids().collect();
            let known = format!(
                "the keys published in the state store ({}): as trustworthy as the store itself; pass --jwks to check against keys you hold",
                kids.join(", ")
            );
            (keys, known)
        }
    };
    let chains = reader
        .verify(Some(&keys))
        .await
        .map_err(|e| usage(e.into()))?;
    let worst = chains
        .iter()
        .map(|(_, r)| r.status())
        .min_by_key(|s| severity(*s))
        .unwrap_or(Status::Complete);
    if json {
        let value = json!({
            "state": url.shown(),
            "status": status_name(worst),
            "known_keys": known,
            "chains": chains.iter().map(|(c, r)| json!({
                "chain": c.chain,
                "replica": c.replica,
                "started": c.started,
                "status": status_name(r.status()),
                "records": r.records,
                "checkpoints": r.checkpoints,
                "uncovered": r.uncovered,
                "unfinished": r.unfinished,
                "tampered": r.tampered.as_ref().map(|t| json!({"seq": t.line - 1, "reason": t.reason})),
                "unknown_keys": r.unknown_keys.iter().map(|k| k.kid.clone()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        });
        return reported(
            exit_status(worst),
            outln!("{}", for_people(&value.to_string())),
        );
    }
    let printed = (|| {
        if chains.is_empty() {
            outln!("{}: no records yet", url.shown())?;
        }
        // Every chain's report, though stdout fails on the first: each
        // names its altered line or unknown keys on stderr first.
        let mut failed = None;
        for (c, report) in &chains {
            if let Err(e) = print_report(&label(&url, c), report, &known) {
                failed.get_or_insert(e);
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        if chains.len() > 1 {
            outln!(
                "{}: {} chains, {} records; {}",
                url.shown(),
                chains.len(),
                chains.iter().map(|(_, r)| r.records).sum::<u64>(),
                status_name(worst)
            )?;
        }
        Ok(())
    })();
    reported(exit_status(worst), printed)
}

/// Shows the records of every chain, oldest chain first, filtered; each
/// line names its chain's first 8 characters and the record's `seq`.
pub async fn show(url: &str, filters: &Filters, json: bool) -> Result<u8, Failure> {
    let url = parse(url)?;
    let reader = reader(&url).await?;
    let chains = reader.chains().await.map_err(|e| usage(e.into()))?;
    let mut bad = 0;
    for c in &chains {
        let lines = reader.lines(&c.chain).await.map_err(|e| usage(e.into()))?;
        let short = shown(
            c.chain
                .get(c.chain.len().saturating_sub(8)..)
                .unwrap_or(&c.chain),
        );
        for line in String::from_utf8_lossy(&lines).lines() {
            let Ok(r) = serde_json::from_str::<Record>(line) else {
                bad += 1;
                if !json {
                    outln!("{short}  (not a record)")?;
                }
                continue;
            };
            if !filters.keep(&r) {
                continue;
            }
            if json {
                outln!("{}", for_people(line))?;
            } else {
                outln!(
                    "{short}:{:<6} {}  {}",
                    r.seq.unwrap_or(0),
                    shown(&r.ts),
                    crate::trail::summarize(&r)
                )?;
            }
        }
    }
    if bad > 0 {
        crate::out::errln!(
            "error: {}: {bad} rows are not audit records; `warden audit verify --state` says whether the trail was altered",
            url.shown()
        );
        return Ok(1);
    }
    Ok(0)
}

/// Writes each chain to `DIR/CHAIN.jsonl`, byte for byte a file trail
/// (`warden audit verify FILE` checks it); refuses to overwrite a file.
pub async fn export(url: &str, dir: &Path) -> Result<u8, Failure> {
    let url = parse(url)?;
    let reader = reader(&url).await?;
    std::fs::create_dir_all(dir).map_err(|e| {
        usage(anyhow::anyhow!(
            "cannot create the directory {}: {e}",
            dir.display()
        ))
    })?;
    let chains = reader.chains().await.map_err(|e| usage(e.into()))?;
    let mut bad = 0;
    for c in &chains {
        let lines = reader.lines(&c.chain).await.map_err(|e| usage(e.into()))?;
        // Chain names are UUIDs this code made; a row that says otherwise
        // names no file (and is reported, the others exported).
        let Ok(id) = uuid::Uuid::try_parse(&c.chain) else {
            crate::out::errln!(
                "error: {}: a chain is named {}, not a UUID: not exported",
                url.shown(),
                shown(&c.chain)
            );
            bad += 1;
            continue;
        };
        let path = dir.join(format!("{}.jsonl", id.hyphenated()));
        // A chain exported before and grown since is reported, the others
        // exported.
        if let Err(e) = write_new(&path, &lines) {
            crate::out::errln!("error: {e:#}");
            bad += 1;
            continue;
        }
        outln!(
            "{}: {} records ({})",
            path.display(),
            c.records,
            shown(&c.replica)
        )?;
    }
    if chains.is_empty() {
        outln!("{}: no records yet; nothing exported", url.shown())?;
    }
    Ok(u8::from(bad > 0))
}

/// Creates `path` (mode 0600) with `bytes`, whole or not at all (written
/// aside, then linked into place): an export that failed part-way left a
/// truncated chain, which verified as tampered, and a rerun stopped at the
/// first chain written. A file there already is an error unless it holds
/// exactly `bytes` (a rerun goes on past what was exported).
fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let failed = |e: std::io::Error| anyhow::anyhow!("cannot write {}: {e}", path.display());
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(failed)?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(failed)?;
    match tmp.persist_noclobber(path) {
        Ok(_) => Ok(()),
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
            let same = path
                .symlink_metadata()
                .is_ok_and(|m| m.is_file() && m.len() == bytes.len() as u64)
                && std::fs::read(path).is_ok_and(|b| b == bytes);
            if same {
                return Ok(());
            }
            Err(anyhow::anyhow!(
                "cannot create {}: it exists with other contents (export does not overwrite)",
                path.display()
            ))
        }
        Err(e) => Err(failed(e.error)),
    }
}
