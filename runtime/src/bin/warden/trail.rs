//! `warden audit`: verify and show a trail.

use crate::out::outln;
use crate::{Failure, usage};
use anyhow::Context as _;
use serde_json::json;
use std::path::{Path, PathBuf};
use warden::Verifier;
use warden::audit::Record;
use warden::audit::verify::{Report, Status, verify};
use warden::redact::escape_control;

pub use warden::audit::show::summarize;

/// Exit status (also in `warden audit verify --help` and
/// docs/AUDIT-FORMAT.md): 0 intact and complete; 1 altered (the first bad
/// line is reported); 2 unreadable (the trail or `--jwks`); 3 intact up to
/// its last checkpoint but incomplete (truncated there, or its writer
/// stopped mid-invocation); 4 a checkpoint is signed by a key that is not
/// one of the known keys (the chain holds, the signature cannot be checked).
///
/// Without `--jwks` the known key is this instance's audit key, read from
/// the state directory if it exists: verifying never creates a key. With
/// `json`, the report is one JSON object on stdout (same exit status).
pub fn verify_cmd(file: &Path, jwks: Option<&Path>, json: bool) -> Result<u8, Failure> {
    let (keys, known) = match jwks {
        Some(p) => jwks_file(p)?,
        None => match crate::audit_key_path() {
            Err(e) => (Verifier::default(), format!("none: {e:#}")),
            Ok(path) => match warden::KeyPair::load(&path).map_err(|e| crate::usage(e.into()))? {
                Some(key) => {
                    let keys =
                        Verifier::from_jwks(&key.jwks()).map_err(|e| crate::usage(e.into()))?;
                    let known = format!(
                        "this instance's audit key {} ({})",
                        key.kid(),
                        path.display()
                    );
                    (keys, known)
                }
                None => (
                    Verifier::default(),
                    format!(
                        "none: this instance has no audit key ({} does not exist)",
                        path.display()
                    ),
                ),
            },
        },
    };
    let report = verify(file, Some(&keys)).map_err(|e| crate::usage(unreadable(file, &e)))?;
    let status = report.status();
    let code = exit_status(status);
    if json {
        return reported(code, verify_json(file, &report, &known));
    }
    let label = crate::shown(&file.display().to_string()).into_owned();
    reported(code, print_report(&label, &report, &known))
}

/// The status of a verification whose report was printed with `printed`.
/// A verdict outranks a failure to print it: a trail found altered (1) or
/// signed by an unknown key (4) keeps its status on a full disk or a closed
/// pipe (the failure goes to stderr), and no failure to print reads as 3,
/// which here says "intact but incomplete", a live trail's usual state.
pub fn reported(code: u8, printed: Result<(), Failure>) -> Result<u8, Failure> {
    match printed {
        Ok(()) => Ok(code),
        Err(f) if matches!(code, 1 | 4) => {
            if f.code != crate::out::CLOSED_STATUS {
                crate::out::errln!("error: {:#}", f.error);
            }
            Ok(code)
        }
        Err(f) if f.code == 3 => Err(Failure {
            code: 2,
            error: f.error,
        }),
        Err(f) => Err(f),
    }
}

/// A verification's report for people: `label` names the trail (a file,
/// or a chain in the state store), line numbers count within it.
pub fn print_report(label: &str, report: &Report, known: &str) -> Result<(), Failure> {
    let status = report.status();
    if let Some(t) = &report.tampered {
        // Where it was altered first: said even when stdout cannot be.
        crate::out::errln!("error: {}:{}: {}", label, t.line, escape_control(&t.reason));
        outln!("{}: intact up to line {}", label, t.line - 1)?;
        return Ok(());
    }
    if status == Status::Complete {
        outln!(
            "{}: ok, {} records, {} signed checkpoints, every invocation ended",
            label,
            report.records,
            report.checkpoints
        )?;
        return Ok(());
    }
    if status == Status::UnknownKey {
        // The keys first, on stderr: said even when stdout cannot be.
        for k in &report.unknown_keys {
            crate::out::errln!(
                "error: {}:{}: checkpoint signed by key {}, which is not one of the known keys; pass its JWKS with --jwks",
                label,
                k.line,
                escape_control(&k.kid)
            );
        }
        crate::out::errln!("known keys: {}", escape_control(known));
        outln!(
            "{}: chain intact ({} records), but its checkpoints' signatures cannot be checked",
            label,
            report.records
        )?;
    } else {
        match report.last_checkpoint {
            Some(l) => outln!(
                "{}: intact and signed up to its last checkpoint (line {l})",
                label
            ),
            None => outln!("{}: chain intact, but no checkpoint yet", label),
        }?;
    }
    if report.uncovered > 0 {
        outln!(
            "warning: {} records after the last checkpoint are not covered by a signature (the trail was truncated there, or its writer stopped)",
            report.uncovered
        )?;
    }
    for inv in &report.unfinished {
        outln!(
            "warning: invocation {} has no end record (unfinished)",
            escape_control(inv)
        )?;
    }
    Ok(())
}

/// The keys of a JWKS file (`--jwks`), and how to name them.
pub fn jwks_file(p: &Path) -> Result<(Verifier, String), Failure> {
    let text = crate::read_text(p, "key set").map_err(crate::usage)?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| crate::usage(anyhow::anyhow!("{}: not a JWKS (JSON): {e}", p.display())))?;
    let keys = Verifier::from_jwks(&json)
        .map_err(|e| crate::usage(anyhow::anyhow!("{}: {e}", p.display())))?;
    let kids: Vec<&str> = keys.kids().collect();
    let known = format!("the keys in {} ({})", p.display(), kids.join(", "));
    Ok((keys, known))
}

/// The exit status of a verification (see [`verify_cmd`]).
pub fn exit_status(status: Status) -> u8 {
    match status {
        Status::Complete => 0,
        Status::Tampered => 1,
        Status::Incomplete => 3,
        Status::UnknownKey => 4,
    }
}

/// A status as `--json` names it.
pub fn status_name(status: Status) -> &'static str {
    match status {
        Status::Complete => "complete",
        Status::Tampered => "tampered",
        Status::Incomplete => "incomplete",
        Status::UnknownKey => "unknown-key",
    }
}

/// `audit verify --json`: the report as one object.
fn verify_json(file: &Path, report: &Report, known: &str) -> Result<(), Failure> {
    let status = status_name(report.status());
    let value = json!({
        "file": file.display().to_string(),
        "status": status,
        "records": report.records,
        "checkpoints": report.checkpoints,
        "last_checkpoint": report.last_checkpoint,
        "uncovered": report.uncovered,
        "unfinished": report.unfinished,
        "tampered": report.tampered.as_ref().map(|t| json!({"line": t.line, "reason": t.reason})),
        "unknown_keys": report
            .unknown_keys
            .iter()
            .map(|k| json!({"line": k.line, "kid": k.kid}))
            .collect::<Vec<_>>(),
        "known_keys": known,
    });
    outln!("{}", for_people(&value.to_string()))
}

/// An error reading the trail `file`: a missing one is said to be missing.
fn unreadable(file: &Path, e: &std::io::Error) -> anyhow::Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => {
            anyhow::anyhow!("audit trail {} not found", file.display())
        }
        _ => anyhow::anyhow!("cannot read the audit trail {}: {e}", file.display()),
    }
}

/// The filters of `audit show`, each checked by clap against the form it
/// takes (a bad one is a usage error, status 2, naming the value).
#[derive(clap::Args, Default)]
pub struct Filters {
    /// Only this task's records.
    #[arg(long, value_parser = task_filter)]
    task: Option<String>,
    /// Only this tool's records (its manifest name).
    #[arg(long, value_parser = tool_filter)]
    tool: Option<String>,
    /// Only decisions that went this way.
    #[arg(long, value_parser = ["allow", "deny"])]
    decision: Option<String>,
    /// Only this invocation's records: its id, or the last 8 characters
    /// `audit show` prints after `inv`.
    #[arg(long, value_parser = invocation_filter)]
    invocation: Option<String>,
}

fn task_filter(task: &str) -> Result<String, String> {
    warden::grant::check_task(task)?;
    Ok(task.to_owned())
}

fn tool_filter(tool: &str) -> Result<String, String> {
    crate::check_tool_name(tool)?;
    Ok(tool.to_owned())
}

fn invocation_filter(id: &str) -> Result<String, String> {
    let short = id.len() == 8 && id.chars().all(|c| c.is_ascii_hexdigit());
    if short || uuid::Uuid::try_parse(id).is_ok() {
        Ok(id.to_ascii_lowercase())
    } else {
        Err("expected an invocation id (a UUID such as 019ad5c2-7f3e-7b21-9c4d-5e6f7a8b9c0d) or its last 8 hex digits".into())
    }
}

impl Filters {
    pub fn keep(&self, r: &Record) -> bool {
        self.task.as_deref().is_none_or(|t| &*r.task == t)
            && self.tool.as_deref().is_none_or(|t| &*r.tool == t)
            && self
                .decision
                .as_deref()
                .is_none_or(|d| r.decision.as_deref() == Some(d))
            && self.invocation.as_deref().is_none_or(|v| {
                if v.len() == 8 {
                    r.invocation.ends_with(v)
                } else {
                    &*r.invocation == v
                }
            })
    }
}

/// Prints a readable, filtered view of a trail; with `json`, the kept
/// records as JSON Lines, each as the trail holds it (control characters
/// escaped).
///
/// A file whose first line is not a record is not a trail: status 2. Lines
/// that are not records further on are shown as such, and the status is 1
/// (`warden audit verify` says whether the trail was altered).
pub fn show_cmd(file: &Path, filters: &Filters, json: bool) -> Result<u8, Failure> {
    let failed = |e: std::io::Error| crate::usage(unreadable(file, &e));
    let f = warden::files::open_regular(file).map_err(failed)?;
    let len = f.metadata().map_err(failed)?.len();
    // A line at a time, as `audit verify` reads: a trail of any size (a
    // sparse file of a terabyte) costs the memory of its longest line, and
    // a line longer than any Warden writes is not read whole.
    let mut reader = std::io::BufReader::with_capacity(1 << 16, std::io::Read::take(f, len));
    let named = crate::shown(&file.display().to_string()).into_owned();
    let mut line = Vec::new();
    let mut bad = 0;
    for i in 0usize.. {
        use std::io::BufRead as _;
        line.clear();
        let mut within = std::io::Read::take(&mut reader, MAX_LINE as u64 + 1);
        let read = within.read_until(b'\n', &mut line).map_err(failed)?;
        if read == 0 {
            break;
        }
        // Longer than any line Warden writes: not a record, and nothing
        // after it is read (its end could be a terabyte on).
        let over = line.last() != Some(&b'\n') && read > MAX_LINE;
        if over && i > 0 {
            bad += 1;
            if !json {
                outln!(
                    "{:>6}  (not a record: over {} MiB; not read further)",
                    i + 1,
                    MAX_LINE >> 20
                )?;
            }
            break;
        }
        let parsed = if over {
            Err(format!("a line of over {} MiB", MAX_LINE >> 20))
        } else {
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            (std::str::from_utf8(text).map_err(|_| "it is not UTF-8 text".to_owned())).and_then(
                |t| {
                    Ok((
                        serde_json::from_str::<Record>(t).map_err(|e| e.to_string())?,
                        t,
                    ))
                },
            )
        };
        let (r, text) = match parsed {
            Ok(parsed) => parsed,
            Err(e) if i == 0 => {
                return Err(crate::usage(anyhow::anyhow!(
                    "{named} is not an audit trail: line 1 is not an audit record ({}); expected JSON Lines as docs/AUDIT-FORMAT.md describes",
                    crate::shown(&e)
                )));
            }
            Err(_) => {
                bad += 1;
                if !json {
                    outln!("{:>6}  (not a record)", i + 1)?;
                }
                continue;
            }
        };
        if !filters.keep(&r) {
            continue;
        }
        if json {
            outln!("{}", for_people(text))?;
        } else {
            outln!("{:>6}  {}  {}", i + 1, escape_control(&r.ts), summarize(&r))?;
        }
    }
    if bad > 0 {
        crate::out::errln!(
            "error: {}: {bad} lines are not audit records; `warden audit verify` says whether the trail was altered",
            crate::shown(&file.display().to_string())
        );
        return Ok(1);
    }
    Ok(0)
}

/// The longest line `audit show` reads, as `audit verify`: Warden's lines
/// are a few KiB.
const MAX_LINE: usize = 64 << 20;

/// A line of JSON for a terminal: what a person would not see as itself
/// inside strings (DEL and C1 controls, bidi overrides, zero-width and tag
/// characters) escaped as `\uXXXX`, as every other output of the CLI
/// ([`warden::redact::json_for_terminal`]), and a raw tab or carriage
/// return (which JSON allows only between tokens) made a space; the JSON's
/// meaning is kept.
pub fn for_people(json: &str) -> std::borrow::Cow<'_, str> {
    match warden::redact::json_for_terminal(json) {
        shown if shown.contains('\t') => shown.replace('\t', " ").into(),
        shown => shown,
    }
}

/// `warden audit checkpoint`: signs an existing trail's unsigned tail.
pub fn checkpoint(file: Option<PathBuf>) -> Result<u8, Failure> {
    let file = file
        .or_else(crate::default_audit_path)
        .context("no audit path: pass FILE")
        .map_err(usage)?;
    let meta = std::fs::metadata(&file)
        .with_context(|| format!("cannot read the audit trail {}", file.display()))
        .map_err(usage)?;
    if !meta.is_file() {
        return Err(usage(anyhow::anyhow!(
            "{} is not a regular file (expected an audit trail)",
            file.display()
        )));
    }
    let sink = crate::open_audit(&file).map_err(usage)?;
    let wrote = sink.checkpoint().map_err(|e| usage(e.into()))?;
    let shown = crate::shown(&file.display().to_string()).into_owned();
    if wrote {
        outln!("{shown}: signed a checkpoint")?;
    } else {
        outln!("{shown}: nothing unsigned (it ends with a checkpoint, or is empty)")?;
    }
    Ok(0)
}

#[derive(clap::Subcommand)]
pub enum AuditCommand {
    /// Check each line's exact form, the hash chain and the signed
    /// checkpoints; report the first bad record.
    ///
    /// The format is docs/AUDIT-FORMAT.md. Checkpoints are checked against
    /// this instance's audit key (read if it exists; verify never creates
    /// one) or the keys of --jwks.
    ///
    /// Exit status: 0 intact and complete; 1 altered (the first bad line is
    /// named); 2 the trail or --jwks cannot be read; 3 intact up to its last
    /// checkpoint but incomplete (truncated there, or its writer stopped
    /// mid-invocation); 4 a checkpoint is signed by a key that is not one of
    /// the known keys (the key id is named; pass its JWKS with --jwks).
    Verify {
        /// The trail file.
        #[arg(required_unless_present = "state")]
        file: Option<PathBuf>,
        /// Verify the trail replicas keep in PostgreSQL (when no FILE is
        /// given; also read from $WARDEN_STATE) instead (each
        /// process's chain in turn; the exit status is the worst chain's).
        /// Without --jwks, checkpoints are checked against the keys the
        /// replicas published in the store.
        #[arg(long, value_name = "URL", env = "WARDEN_STATE", hide_env_values = true)]
        state: Option<String>,
        /// Verify checkpoints with this public key set instead of the local
        /// audit key (see `warden audit jwks` on the instance that wrote it).
        #[arg(long, value_name = "FILE")]
        jwks: Option<PathBuf>,
        /// Print the report as one JSON object ("status": complete,
        /// tampered, incomplete or unknown-key; the same exit status).
        #[arg(long)]
        json: bool,
    },
    /// Print a readable view, optionally filtered.
    ///
    /// Exit status: 0 shown; 1 some lines are not records; 2 the file
    /// cannot be read or is not a trail, or a filter is malformed.
    Show {
        /// The trail file.
        #[arg(required_unless_present = "state")]
        file: Option<PathBuf>,
        /// Show the trail replicas keep in PostgreSQL instead.
        #[arg(long, value_name = "URL", env = "WARDEN_STATE", hide_env_values = true)]
        state: Option<String>,
        #[command(flatten)]
        filters: Filters,
        /// Print the kept records as JSON Lines, as the trail holds them.
        #[arg(long)]
        json: bool,
    },
    /// Write each chain of the trail replicas keep in PostgreSQL to
    /// DIR/CHAIN.jsonl, byte for byte a file trail (`warden audit verify
    /// FILE` checks it). Existing files are not overwritten.
    Export {
        #[arg(long, value_name = "URL", env = "WARDEN_STATE", hide_env_values = true)]
        state: String,
        /// The directory to write to (created if needed).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Print the public key set that verifies this instance's checkpoints.
    Jwks,
    /// Sign the trail's newest records now: append a checkpoint if records
    /// follow its last one (checkpoints otherwise come every 256 records,
    /// 500 ms after the first unsigned one, and when a writer stops).
    Checkpoint {
        /// The trail (default: the default audit trail).
        file: Option<PathBuf>,
    },
}

/// `warden audit …`.
pub async fn run(command: AuditCommand) -> Result<u8, Failure> {
    match command {
        AuditCommand::Verify {
            file,
            state,
            jwks,
            json,
        } => match (file, state) {
            (Some(file), _) => verify_cmd(&file, jwks.as_deref(), json),
            (None, Some(url)) => crate::state_trail::verify(&url, jwks.as_deref(), json).await,
            (None, None) => unreachable!("clap requires one"),
        },
        AuditCommand::Show {
            file,
            state,
            filters,
            json,
        } => match (file, state) {
            (Some(file), _) => show_cmd(&file, &filters, json),
            (None, Some(url)) => crate::state_trail::show(&url, &filters, json).await,
            (None, None) => unreachable!("clap requires one"),
        },
        AuditCommand::Export { state, out } => crate::state_trail::export(&state, &out).await,
        AuditCommand::Checkpoint { file } => checkpoint(file),
        AuditCommand::Jwks => {
            let key = crate::audit_key().map_err(usage)?;
            outln!(
                "{}",
                serde_json::to_string_pretty(&key.jwks()).map_err(|e| usage(e.into()))?
            )?;
            Ok(0)
        }
    }
}
