//! The `secrets` capability: credentials issued just in time for one
//! invocation, expiring at their TTL or when the invocation returns.
//!
//! Values are resolved from their source when the invocation starts (never
//! cached across invocations), held in zeroizing memory, wiped on expiry and
//! when the invocation ends, and redacted (with their common encodings) from
//! everything that leaves the host.

pub mod check;
mod host;
pub(crate) mod manifest;

use crate::policy::gate::Gate;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use wasmtime::component::{HasData, Linker, ResourceTable};
use zeroize::Zeroizing;

/// Values shorter than this are refused: they cannot be redacted reliably.
pub const MIN_SECRET_LEN: usize = 4;
/// How long an `exec:` source may run.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(10);
/// The most bytes a source may produce.
pub const MAX_SECRET_LEN: usize = 64 << 10;

/// Where a secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `env:VAR`: an environment variable of the host process.
    Env(String),
    /// `file:PATH`: a file's contents, without a trailing newline.
    File(PathBuf),
    /// `exec:PROGRAM ARGS…`: a program run without a shell; its stdout,
    /// without a trailing newline. Arguments are split like a POSIX shell
    /// would split words (quotes allowed), but nothing is expanded.
    Exec { program: String, args: Vec<String> },
    /// `mint:AUDIENCE`: an identity token (EdDSA JWT) for this invocation,
    /// signed by this Warden instance when the invocation starts, with the
    /// same claims as the guest's `identity.token(AUDIENCE)`: `exp` no later
    /// than the invocation deadline (and at most five minutes away), and
    /// introspection reports it inactive once the invocation ends. The
    /// manifest names the audience, so `token-audiences` does not apply and
    /// no identity decision is made; otherwise it is an ordinary secret
    /// (by reference, `send-to`, `reveal`, TTL, redaction).
    Mint(String),
}

impl SecretSource {
    /// Parses `env:VAR`, `file:PATH` (relative to `base`), `exec:PROGRAM ARGS…`
    /// or `mint:AUDIENCE`.
    pub fn parse(s: &str, base: &std::path::Path) -> Result<SecretSource, String> {
        let expected = "expected env:VAR, file:PATH, exec:PROGRAM ARGS… or mint:AUDIENCE";
        let (kind, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("invalid secret source '{s}' ({expected})"))?;
        if rest.trim().is_empty() {
            return Err(format!("empty secret source '{s}' ({expected})"));
        }
        match kind {
            "env" => Ok(SecretSource::Env(rest.to_owned())),
            "file" => Ok(SecretSource::File(base.join(rest))),
            "exec" => {
                let mut words = shlex::split(rest)
                    .ok_or_else(|| format!("unbalanced quotes in secret source '{s}'"))?
                    .into_iter();
                let program = words.next().ok_or_else(|| format!("no program in '{s}'"))?;
                Ok(SecretSource::Exec {
                    program,
                    args: words.collect(),
                })
            }
            "mint" => Ok(SecretSource::Mint(rest.to_owned())),
            other => Err(format!("unknown secret source kind '{other}' ({expected})")),
        }
    }

    /// `env`, `file`, `exec` or `mint`: safe to show in errors and audit records.
    pub fn kind(&self) -> &'static str {
        match self {
            SecretSource::Env(_) => "env",
            SecretSource::File(_) => "file",
            SecretSource::Exec { .. } => "exec",
            SecretSource::Mint(_) => "mint",
        }
    }
}

/// One secret in a tool's manifest entry: the most a grant may give.
#[derive(Debug, Clone)]
pub struct SecretSpec {
    pub name: String,
    pub source: SecretSource,
    /// `None`: the invocation's lifetime.
    pub ttl: Option<Duration>,
    /// Whether the tool may read the value with `reveal`.
    pub reveal: bool,
    /// Egress destinations this secret may be attached to.
    pub send_to: Vec<String>,
    /// Revealing it waits for an approver.
    pub approval: bool,
    /// Sensitivity labels, for runtime policy.
    pub labels: Vec<String>,
}

/// A secret that could not be resolved. Never contains the value.
#[derive(Debug, Clone, thiserror::Error)]
#[error("secret '{name}' (source {kind}) could not be resolved: {reason}")]
pub struct SecretError {
    pub name: String,
    pub kind: &'static str,
    pub reason: String,
}

/// A secret issued to one invocation.
pub(crate) struct Issued {
    pub(crate) spec: SecretSpec,
    /// Wiped on expiry and when dropped.
    pub(crate) value: Zeroizing<String>,
    pub(crate) expires: Option<Instant>,
    pub(crate) expired: bool,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("name", &self.spec.name)
            .field("value", &"[REDACTED]")
            .finish()
    }
}

impl Issued {
    /// Whether the secret is past its TTL at `now`; wipes the value if so.
    pub(crate) fn check_expiry(&mut self, now: Instant) -> bool {
        if !self.expired && self.expires.is_some_and(|t| now >= t) {
            self.expired = true;
            zeroize::Zeroize::zeroize(&mut *self.value);
        }
        self.expired
    }
}

/// The secrets of one invocation, by name.
#[derive(Default)]
pub(crate) struct SecretsCtx {
    pub(crate) issued: BTreeMap<String, Issued>,
}

impl SecretsCtx {
    /// The secrets the tool holds only by reference when it starts: every
    /// one, until a `reveal` of it passes the gate (one waiting for a
    /// person, or denied, never does; `Redactor::reveal`), but those it
    /// may read at will (`reveal = true` with no approval, no ttl that may
    /// pass before it asks, and no runtime `policy` that could forbid it: a
    /// marker tells it nothing it could not read) and one whose value is a
    /// token it is `handed` (a `mint:` secret for one of its own audiences).
    pub(crate) fn by_reference<'a>(
        &'a self,
        policy: bool,
        handed: &'a [(String, &str)],
    ) -> impl Iterator<Item = &'a str> {
        let at_will =
            move |s: &Issued| s.spec.reveal && !s.spec.approval && s.spec.ttl.is_none() && !policy;
        let handed = move |s: &Issued| handed.iter().any(|(_, t)| *t == s.value.as_str());
        (self.issued.values())
            .filter(move |s| !at_will(s) && !handed(s))
            .map(|s| s.spec.name.as_str())
    }
}

/// What the secrets host impl sees of the store.
pub(crate) struct SecretsView<'a> {
    pub(crate) ctx: &'a mut SecretsCtx,
    pub(crate) table: &'a mut ResourceTable,
    pub(crate) gate: &'a Gate,
}

/// A store that can give the secrets host impl its view.
pub(crate) trait SecretsStore: Send + 'static {
    fn secrets(&mut self) -> SecretsView<'_>;
}

struct Secrets;

impl HasData for Secrets {
    type Data<'a> = SecretsView<'a>;
}

pub(crate) fn add_to_linker<T: SecretsStore>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    crate::bindings::warden::tool::secrets::add_to_linker::<T, Secrets>(linker, T::secrets)
}

/// The guest's `secret` resource: a reference by name, never the value.
pub struct SecretRef {
    pub(crate) name: String,
}

/// Resolves each secret from its source, now, all of them before the
/// invocation's `deadline` (an `exec:` program each at most
/// [`EXEC_TIMEOUT`]): several slow sources, one after another, held the
/// call for each one's whole timeout before the tool's own time began.
pub(crate) async fn resolve(
    specs: Vec<SecretSpec>,
    minter: &crate::caps::identity::Minter,
    deadline: Instant,
) -> Result<SecretsCtx, SecretError> {
    let mut issued = BTreeMap::new();
    let now = Instant::now();
    for spec in specs {
        let err = |reason: String| SecretError {
            name: spec.name.clone(),
            kind: spec.source.kind(),
            reason,
        };
        let raw = match &spec.source {
            SecretSource::Mint(aud) => Zeroizing::new(minter.mint(aud).into_bytes()),
            other => fetch(other, deadline).await.map_err(err)?,
        };
        // Checked in place: a copy refused as not UTF-8 would be freed
        // unwiped inside its error.
        let value = std::str::from_utf8(&raw).map_err(|_| err("the value is not UTF-8".into()))?;
        let trimmed = value.trim_end_matches(['\n', '\r']);
        if trimmed.len() < MIN_SECRET_LEN {
            return Err(err(format!(
                "the value is shorter than {MIN_SECRET_LEN} bytes, too short to redact reliably"
            )));
        }
        let value = Zeroizing::new(trimmed.to_owned());
        let expires = spec.ttl.map(|ttl| now + ttl);
        issued.insert(
            spec.name.clone(),
            Issued {
                spec,
                value,
                expires,
                expired: false,
            },
        );
    }
    Ok(SecretsCtx { issued })
}

/// A secret file's contents: a regular file (a FIFO would block the open,
/// a device like `/dev/zero` never end: both refused, as is a file that
/// grew past the limit after it was looked at), read into one buffer that
/// never moves, so no copy of the value is left behind in freed memory.
fn read_secret_file(path: &std::path::Path) -> Result<Zeroizing<Vec<u8>>, String> {
    use std::io::Read as _;
    let fail = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    // Nor made the controlling terminal if a terminal was put there.
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut opts, libc::O_NONBLOCK | libc::O_NOCTTY);
    let file = opts.open(path).map_err(fail)?;
    if !file.metadata().map_err(fail)?.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    let mut value = Zeroizing::new(Vec::with_capacity(MAX_SECRET_LEN + 1));
    file.take(MAX_SECRET_LEN as u64 + 1)
        .read_to_end(&mut value)
        .map_err(fail)?;
    if value.len() > MAX_SECRET_LEN {
        return Err(format!(
            "{} is larger than {MAX_SECRET_LEN} bytes",
            path.display()
        ));
    }
    Ok(value)
}

async fn fetch(source: &SecretSource, deadline: Instant) -> Result<Zeroizing<Vec<u8>>, String> {
    match source {
        SecretSource::Env(var) => std::env::var_os(var)
            .map(|v| Zeroizing::new(v.into_encoded_bytes()))
            .ok_or_else(|| format!("environment variable {var} is not set")),
        SecretSource::File(path) => read_secret_file(path),
        SecretSource::Mint(_) => Err("minted tokens are issued by the runtime".into()),
        SecretSource::Exec { program, args } => {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "{program} was not run: the tool's timeout has passed"
                ));
            }
            // A group of its own, killed whole (so it cannot prompt at the
            // terminal: it is not the terminal's foreground job).
            let mut child = tokio::process::Command::new(program)
                .args(args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .process_group(0)
                .spawn()
                .map_err(|e| format!("cannot run {program}: {e}"))?;
            let group = crate::caps::group::Group::of(&child);
            let failed = |e: std::io::Error| format!("{program} failed: {e}");
            // Read into one buffer of the most a value may be (and room for
            // the reader's probe): a program printing without end costs no
            // more, and the value leaves no copies in freed memory.
            let run = async {
                let mut value = Zeroizing::new(Vec::with_capacity(MAX_SECRET_LEN + 64));
                if let Some(out) = child.stdout.take() {
                    use tokio::io::AsyncReadExt as _;
                    let mut out = out.take(MAX_SECRET_LEN as u64 + 1);
                    out.read_to_end(&mut value).await.map_err(failed)?;
                }
                if value.len() > MAX_SECRET_LEN {
                    // Killed as it is dropped.
                    return Err(format!(
                        "{program} printed more than {MAX_SECRET_LEN} bytes"
                    ));
                }
                let status = child.wait().await;
                group.reaped();
                let status = status.map_err(failed)?;
                if !status.success() {
                    return Err(format!("{program} exited with {status}"));
                }
                Ok(value)
            };
            let (limit, named) = if left < EXEC_TIMEOUT {
                (left, "the tool's timeout".to_owned())
            } else {
                (EXEC_TIMEOUT, format!("{}s", EXEC_TIMEOUT.as_secs()))
            };
            tokio::time::timeout(limit, run)
                .await
                .unwrap_or_else(|_| Err(format!("{program} did not finish within {named}")))
        }
    }
}

/// The secrets a grant names (`granted`), from the `ceiling` of `tool`'s
/// manifest entry, for one invocation. Refuses a name the ceiling does not
/// list.
pub(crate) fn authorize(
    tool: &str,
    ceiling: &[SecretSpec],
    granted: &std::collections::BTreeSet<String>,
) -> Result<Vec<SecretSpec>, crate::diag::GrantError> {
    crate::diag::by_name(
        granted,
        ceiling,
        |s| &s.name,
        |name, known| crate::diag::GrantError::UnknownSecret {
            tool: tool.to_owned(),
            name,
            known,
        },
    )
}

/// The secret names in `granted` that the `ceiling` lists; others are dropped.
pub(crate) fn narrow(
    ceiling: &[SecretSpec],
    granted: &std::collections::BTreeSet<String>,
) -> std::collections::BTreeSet<String> {
    granted
        .iter()
        .filter(|name| ceiling.iter().any(|s| s.name == **name))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `exec:` source that prints without end is read to the most a
    /// value may be, refused and killed, long before its timeout; one that
    /// prints a value and fails is refused; one that prints a value and
    /// exits gives it.
    #[tokio::test]
    async fn an_exec_source_is_read_no_further_than_a_value_may_be() {
        let exec = |line: &str| SecretSource::parse(line, std::path::Path::new("/")).unwrap();
        let started = std::time::Instant::now();
        let fetch = |source| fetch_within(source, Duration::from_secs(60));
        let e = fetch(exec("exec:yes")).await.unwrap_err();
        assert_eq!(e, format!("yes printed more than {MAX_SECRET_LEN} bytes"));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let e = fetch(exec("exec:sh -c 'printf abcd; exit 3'"))
            .await
            .unwrap_err();
        assert!(e.ends_with("exited with exit status: 3"), "{e}");
        let v = fetch(exec("exec:printf %s value-1234")).await.unwrap();
        assert_eq!(&v[..], b"value-1234");
    }
    async fn fetch_within(
        source: SecretSource,
        within: Duration,
    ) -> Result<Zeroizing<Vec<u8>>, String> {
        fetch(&source, Instant::now() + within).await
    }

    /// A program that does not finish is stopped at the time left, and
    /// none is started once none is left.
    #[tokio::test]
    async fn an_exec_source_is_given_only_the_time_left() {
        let sleep = SecretSource::parse("exec:sleep 30", std::path::Path::new("/")).unwrap();
        let started = std::time::Instant::now();
        let e = fetch_within(sleep.clone(), Duration::from_millis(200))
            .await
            .unwrap_err();
        assert_eq!(e, "sleep did not finish within the tool's timeout");
        assert!(started.elapsed() < Duration::from_secs(5));
        let e = fetch_within(sleep, Duration::ZERO).await.unwrap_err();
        assert_eq!(e, "sleep was not run: the tool's timeout has passed");
    }
    use std::path::Path;

    #[test]
    fn parses_sources_and_explains_bad_ones() {
        let base = Path::new("/etc/warden");
        assert_eq!(
            SecretSource::parse("env:TOKEN", base).unwrap(),
            SecretSource::Env("TOKEN".into())
        );
        assert_eq!(
            SecretSource::parse("file:token.txt", base).unwrap(),
            SecretSource::File("/etc/warden/token.txt".into())
        );
        assert_eq!(
            SecretSource::parse("exec:vault kv get -field=token 'secret/my app'", base).unwrap(),
            SecretSource::Exec {
                program: "vault".into(),
                args: vec![
                    "kv".into(),
                    "get".into(),
                    "-field=token".into(),
                    "secret/my app".into()
                ],
            }
        );
        for (bad, want) in [
            ("TOKEN", "expected env:VAR"),
            ("ldap:x", "unknown secret source kind 'ldap'"),
            ("env:", "empty secret source"),
            ("exec:op 'read", "unbalanced quotes"),
            ("mint:", "empty secret source"),
        ] {
            let e = SecretSource::parse(bad, base).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn a_secret_file_must_be_a_bounded_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("token");
        std::fs::write(&ok, "s3cret").unwrap();
        assert_eq!(&**read_secret_file(&ok).unwrap(), b"s3cret");
        // A device reports no length and never ends; a FIFO blocks the open.
        let e = read_secret_file(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(e, "/dev/zero is not a regular file");
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success());
        let started = Instant::now();
        let e = read_secret_file(&fifo).unwrap_err();
        assert!(e.ends_with("is not a regular file"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(2));
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; MAX_SECRET_LEN + 1]).unwrap();
        let e = read_secret_file(&big).unwrap_err();
        assert!(
            e.ends_with(&format!("is larger than {MAX_SECRET_LEN} bytes")),
            "{e}"
        );
    }

    #[test]
    fn expiry_wipes_the_value() {
        let mut s = Issued {
            spec: SecretSpec {
                name: "t".into(),
                source: SecretSource::Env("X".into()),
                ttl: Some(Duration::from_millis(1)),
                reveal: true,
                send_to: vec![],
                approval: false,
                labels: Vec::new(),
            },
            value: Zeroizing::new("value-1234".into()),
            expires: Some(Instant::now()),
            expired: false,
        };
        assert!(s.check_expiry(Instant::now() + Duration::from_millis(1)));
        assert!(s.value.bytes().all(|b| b == 0), "value not wiped");
        assert!(!format!("{s:?}").contains("value-1234"));
    }
}
