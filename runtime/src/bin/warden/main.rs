//! The `warden` command line.
//!
//! Exit status: 0 success; 1 the tool returned an error (including denials it
//! reports); 2 bad usage, manifest, grant, component or input; 3 the
//! invocation was ended by a limit (deadline, memory, stack, output) or a
//! trap, or the host failed (audit trail).

/// jemalloc, not the C library's malloc: a call allocates and frees a few
/// hundred small blocks, often on different threads (an HTTP request read
/// on one worker, its call run on another), and glibc's arena locks made
/// the threads wait on each other. With jemalloc, 64 HTTP clients cost the
/// server about a tenth less CPU a call and two threads of in-process calls
/// scale 1.3x instead of 1.0x, in about the same memory (README,
/// benchmarks).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod approver;
mod check;
mod demo;
mod logging;
mod new;
mod out;
mod progress;
mod registry;
mod serve;
mod sign;
mod state_trail;
mod stop;
mod trail;
mod version;

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, Subcommand};
use out::{out, outln};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use warden::audit::FileSink;
use warden::{
    Error, ErrorClass, Grant, Issuer, Manifest, Runtime, RuntimeBuilder, ToolErrorKind, ToolSpec,
};

#[derive(Parser)]
#[command(
    name = "warden",
    version = version::VERSION.as_str(),
    about = "Run agent tools as Wasm components under per-task grants"
)]
struct Cli {
    /// Debug logging, tool stdout/stderr and error details on stderr.
    #[arg(short, long, global = true)]
    verbose: bool,
    /// Directory for compiled components [default: $WARDEN_CACHE_DIR,
    /// $XDG_CACHE_HOME/warden or ~/.cache/warden].
    #[arg(long, global = true, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile components in memory only.
    #[arg(long, global = true)]
    no_cache: bool,
    /// Never ask a registry: oci:// components must be in the cache
    /// (`warden pull`) [also: WARDEN_OFFLINE=1].
    #[arg(long, global = true)]
    offline: bool,
    /// Who answers approval requests: `auto` (the terminal when there is
    /// one, else deny-all), `tty`, `deny`, or `webhook=URL`.
    #[arg(long, global = true, default_value = "auto", value_name = "APPROVER")]
    approver: String,
    /// Send OpenTelemetry to the OTLP/HTTP collector at URL (e.g.
    /// http://127.0.0.1:4318): each invocation a span, its host calls and
    /// decisions events on it, every audit record a log record. Off unless
    /// given.
    #[arg(long, global = true, value_name = "URL", env = "WARDEN_OTLP")]
    otlp: Option<String>,
    /// The OTLP encoding.
    #[arg(
        long,
        global = true,
        value_name = "PROTOCOL",
        default_value = "http/protobuf",
        value_parser = ["http/protobuf", "http/json"]
    )]
    otlp_protocol: String,
    #[command(subcommand)]
    command: Command,
}

/// `--otlp`, when given: set once, before any command runs.
static OTLP: std::sync::OnceLock<warden::telemetry::OtlpOptions> = std::sync::OnceLock::new();

/// `sink`, also sending OpenTelemetry when `--otlp` asks for it.
pub(crate) fn with_telemetry(
    sink: Arc<dyn warden::audit::AuditSink>,
    instance: Option<String>,
) -> anyhow::Result<Arc<dyn warden::audit::AuditSink>> {
    let Some(options) = OTLP.get() else {
        return Ok(sink);
    };
    let options = warden::telemetry::OtlpOptions {
        instance,
        ..options.clone()
    };
    let otlp = warden::telemetry::OtlpSink::new(sink, &options)?;
    // The collector named by its origin only: a path may hold a token.
    let origin = url::Url::parse(&options.endpoint)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default();
    crate::out::errln!(
        "warden: sending OpenTelemetry to {} ({})",
        shown(&origin),
        if options.json {
            "http/json"
        } else {
            "http/protobuf"
        }
    );
    Ok(Arc::new(otlp))
}

#[derive(Subcommand)]
enum Command {
    /// Run one tool once under an explicit grant; prints its JSON output.
    Run {
        /// The capability manifest.
        #[arg(long, short)]
        manifest: PathBuf,
        /// The tool's name in the manifest.
        tool: String,
        /// A grant: fs:HANDLE=DIR:RIGHTS (rights comma-separated),
        /// secret:NAME, http:[METHODS=]URL (methods comma-separated; URL a
        /// prefix) or deploy:TARGET; repeatable.
        #[arg(long = "grant", value_name = "SPEC")]
        grants: Vec<String>,
        /// A TOML grant file: task = "ID", labels = [...], [fs.HANDLE] path and
        /// rights, secrets = [...], [[http]] url (and methods), deploy = [...].
        #[arg(long = "grants", value_name = "FILE")]
        grant_file: Option<PathBuf>,
        /// Task id [default: the grant file's task, else a new id].
        #[arg(long)]
        task: Option<String>,
        /// A task label runtime policy can see (e.g. release); repeatable,
        /// added to the grant file's `labels`.
        #[arg(long = "label", value_name = "LABEL")]
        labels: Vec<String>,
        /// Tool input: JSON text, @FILE to read it from a file, or @- to read
        /// it from stdin.
        #[arg(long, default_value = "{}")]
        input: String,
        /// Audit trail file (JSON Lines, appended) [default: $WARDEN_AUDIT,
        /// else $XDG_STATE_HOME/warden/audit.jsonl or ~/.local/state/warden/audit.jsonl].
        #[arg(long, value_name = "FILE")]
        audit: Option<PathBuf>,
    },
    /// Print a component's identity and its description and schemas.
    Describe {
        /// A tool component (.wasm).
        component: PathBuf,
    },
    /// Validate a manifest: fields, paths, components, identity pins, and
    /// its Cedar policies against the schema.
    Check {
        manifest: PathBuf,
        /// Also check an agents file (`warden serve --agents`).
        #[arg(long, value_name = "FILE")]
        agents: Option<PathBuf>,
        /// Print the result as one JSON object: {"ok", "manifest", "tools",
        /// "policies", "problems": [{"message", ...}]}.
        #[arg(long)]
        json: bool,
    },
    /// Print the Cedar schema runtime policies are validated against.
    Schema,
    /// Serve the manifest's tools to MCP clients (stdio or streamable HTTP)
    /// under one operator-chosen task grant.
    Serve(Box<serve::ServeArgs>),
    /// Workload identity: the key that signs tool tokens.
    Identity {
        #[command(subcommand)]
        command: IdentityCommand,
    },
    /// The audit trail: verify it, read it.
    Audit {
        #[command(subcommand)]
        command: trail::AuditCommand,
    },
    /// Create things: `warden new tool NAME` makes a tool crate.
    New {
        #[command(subcommand)]
        what: NewCommand,
    },
    /// Print a shell's completion script, e.g. `warden completions bash >
    /// ~/.local/share/bash-completion/completions/warden`.
    Completions {
        /// bash, elvish, fish, powershell or zsh.
        shell: clap_complete::Shell,
    },
    /// Fetch oci:// components into the cache, so runs need no network;
    /// prints each reference's digest (a tag is pinned until the next pull).
    Pull(registry::PullArgs),
    /// Publish a component to a registry as a Wasm OCI artifact; prints
    /// the reference by digest.
    Push(registry::PushArgs),
    /// Sign a component with a cosign key (writes COMPONENT.sig), or make
    /// a key pair (--generate-key PREFIX); the password is COSIGN_PASSWORD.
    Sign(sign::SignArgs),
    /// Run the bundled example tools on a scratch workspace.
    Demo {
        /// Keep the workspace, manifest and audit trail in DIR.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum NewCommand {
    /// A tool crate against the guest SDK (builds for wasm32-wasip2 as
    /// generated); prints the manifest entry to paste.
    Tool(new::ToolArgs),
}

#[derive(Subcommand)]
enum IdentityCommand {
    /// Print the public key set (JWKS) that verifies this instance's tokens.
    Jwks,
}

/// A failure with the exit status it maps to.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let code = match e.class() {
            ErrorClass::Usage => 2,
            ErrorClass::Limit | ErrorClass::Host => 3,
        };
        Failure {
            code,
            error: e.into(),
        }
    }
}

fn usage(error: anyhow::Error) -> Failure {
    Failure { code: 2, error }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.verbose);
    let verbose = cli.verbose;
    // One client on stdio: a single-threaded scheduler avoids a cross-thread
    // wake-up at each hop of a call (reader, handler, invocation, writer).
    let single = matches!(&cli.command, Command::Serve(a) if a.stdio());
    let rt = if single {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Runtime::new()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            crate::out::errln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(3);
        }
    };
    let done = rt.block_on(dispatch(cli));
    // Blocking work left (a compile a signal cut short) is not waited for.
    rt.shutdown_timeout(std::time::Duration::from_millis(500));
    match done {
        Ok(code) => ExitCode::from(code),
        Err(f) if f.error.is::<out::Closed>() => ExitCode::from(f.code),
        Err(f) => {
            out::error(&f.error, verbose);
            ExitCode::from(f.code)
        }
    }
}

/// `text` with control characters escaped, for the operator's terminal.
pub(crate) fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    warden::redact::escape_control(text)
}

async fn dispatch(cli: Cli) -> Result<u8, Failure> {
    // Only commands that run tools read the keys, caches and terminal they
    // need; `describe` and `check` mint no tokens, so they load no key.
    // An empty value (`WARDEN_OTLP=`) means off, as when it is unset.
    if let Some(endpoint) = cli.otlp.as_ref().filter(|e| !e.is_empty()) {
        let _ = OTLP.set(warden::telemetry::OtlpOptions {
            endpoint: endpoint.clone(),
            json: cli.otlp_protocol == "http/json",
            instance: None,
        });
    }
    let offline = cli.offline || std::env::var_os("WARDEN_OFFLINE").is_some_and(|v| v == "1");
    // Whether a person (or the operator's webhook) answers approvals: an
    // `auto` that found a terminal does, so `serve` asks no MCP client.
    let operator_answers = std::cell::Cell::new(false);
    let builder = |tokens: bool| -> Result<RuntimeBuilder, Failure> {
        let (approver, operator) = approver::choose(&cli.approver).map_err(usage)?;
        operator_answers.set(operator);
        let mut b = runtime_builder(cli.cache_dir.as_deref(), cli.no_cache, tokens)
            .approver(approver)
            .offline(offline);
        if let Some(c) = warden::oci::Credentials::from_env() {
            b = b.registry_credentials(c);
        }
        Ok(b)
    };
    match cli.command {
        Command::Run {
            manifest,
            tool,
            grants,
            grant_file,
            task,
            labels,
            input,
            audit,
        } => {
            let mut grant = build_grant(&grants, grant_file.as_deref(), task).map_err(usage)?;
            for l in &labels {
                grant.add_label(l).map_err(|e| usage(e.into()))?;
            }
            let input = read_input(&input).map_err(usage)?;
            let manifest = Manifest::load(&manifest).map_err(Error::from)?;
            let audit = audit
                .or_else(default_audit_path)
                .context("no audit path: pass --audit FILE")
                .map_err(usage)?;
            let sink = open_audit(&audit).map_err(usage)?;
            let sink = with_telemetry(Arc::new(sink), None).map_err(usage)?;
            let mut b = builder(true)?
                .manifest(manifest)
                .audit(sink.clone())
                .keep_out(&audit, "audit trail");
            if let Some(f) = &grant_file {
                b = b.trust_file(f, "grant file");
            }
            let runtime = b.build()?;
            let code = run(&runtime, &tool, &grant, &input, cli.verbose).await;
            sink.settle();
            code
        }
        Command::Describe { component } => {
            let name = "component";
            let runtime = builder(false)?
                .tool(ToolSpec::new(name, &component))
                .build()?;
            let info = runtime.describe(name).await?;
            let info = serde_json::to_string_pretty(&info).map_err(|e| usage(e.into()))?;
            outln!("{}", warden::redact::json_for_terminal(&info))?;
            Ok(0)
        }
        Command::Check {
            manifest,
            agents,
            json,
        } => check::check(builder(false)?, &manifest, agents.as_deref(), json).await,
        Command::Serve(args) => {
            let b = builder(true)?;
            serve::serve(b, *args, operator_answers.get()).await
        }
        Command::Schema => {
            out!("{}", warden::policy::cedar::SCHEMA)?;
            Ok(0)
        }
        Command::Identity {
            command: IdentityCommand::Jwks,
        } => {
            let issuer = load_issuer().map_err(usage)?;
            outln!(
                "{}",
                serde_json::to_string_pretty(&issuer.jwks()).map_err(|e| usage(e.into()))?
            )?;
            Ok(0)
        }
        Command::Audit { command } => trail::run(command).await,
        Command::New {
            what: NewCommand::Tool(args),
        } => new::tool(args),
        Command::Completions { shell } => {
            // Written whole, then printed: the generator panics on a write
            // error, and stdout may be a closed pipe.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "warden", &mut script);
            out!("{}", String::from_utf8_lossy(&script))?;
            Ok(0)
        }
        Command::Demo { dir } => demo::run(builder(true)?, dir).await.map(|()| 0),
        Command::Pull(args) => {
            let dir = cli
                .cache_dir
                .clone()
                .or_else(warden::engine::default_cache_dir);
            registry::pull(args, dir.filter(|_| !cli.no_cache).as_deref(), offline).await
        }
        Command::Push(args) => registry::push(args, offline).await,
        Command::Sign(args) => sign::sign(args, offline).await,
    }
}

/// The signing key, kept in `$WARDEN_STATE_DIR` (default
/// `$XDG_STATE_HOME/warden` or `~/.local/state/warden`) as `identity-ed25519.key`.
pub(crate) fn load_issuer() -> anyhow::Result<Issuer> {
    Ok(Issuer::load_or_create(
        &warden_state()?.join("identity-ed25519.key"),
    )?)
}

/// The key that signs audit checkpoints, `audit-ed25519.key` in the state
/// directory (kept apart from the identity key).
pub(crate) fn audit_key() -> anyhow::Result<warden::KeyPair> {
    Ok(warden::KeyPair::load_or_create(&audit_key_path()?)?)
}

/// Where the audit key is kept (it may not exist yet).
pub(crate) fn audit_key_path() -> anyhow::Result<PathBuf> {
    Ok(warden_state()?.join("audit-ed25519.key"))
}

fn warden_state() -> anyhow::Result<PathBuf> {
    std::env::var_os("WARDEN_STATE_DIR")
        .map(PathBuf::from)
        .or_else(|| state_dir().map(|d| d.join("warden")))
        .context("no state directory: set WARDEN_STATE_DIR")
}

fn state_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
}

/// A runtime builder with the compile cache; with `tokens`, the identity key
/// from the state directory (created on first use).
fn runtime_builder(cache_dir: Option<&Path>, no_cache: bool, tokens: bool) -> RuntimeBuilder {
    let mut b = Runtime::builder().on_compile(progress::spinner());
    if let Ok(state) = warden_state() {
        b = b.keep_out(state, "state directory (its signing keys)");
    }
    if tokens {
        match load_issuer() {
            Ok(issuer) => b = b.identity(issuer),
            Err(e) => tracing::warn!("identity tokens use a temporary key: {e:#}"),
        }
    }
    let dir = cache_dir
        .map(Path::to_owned)
        .or_else(warden::engine::default_cache_dir);
    match dir {
        Some(dir) if !no_cache => b.cache_dir(dir),
        _ => b,
    }
}

fn build_grant(
    specs: &[String],
    file: Option<&Path>,
    task: Option<String>,
) -> anyhow::Result<Grant> {
    let mut grant = match file {
        Some(f) => Grant::load(f)?,
        None => Grant::new(String::new()),
    };
    for spec in specs {
        grant.add_cli(spec)?;
    }
    if let Some(task) = task {
        grant.task = task;
    }
    if grant.task.is_empty() {
        grant.task = format!("task-{}", uuid::Uuid::now_v7());
    }
    Ok(grant)
}

/// A tool's name as the manifest allows it.
pub(crate) fn check_tool_name(name: &str) -> Result<(), String> {
    warden::manifest::check_name(name).map_err(|e| format!("expected a tool name: {e}"))
}

/// The most an input or key set named on the command line may be: more than
/// any a runtime takes.
const MAX_NAMED: u64 = 256 << 20;

/// `--input`: JSON text, `@FILE`, or `@-` for standard input.
fn read_input(input: &str) -> anyhow::Result<String> {
    match input.strip_prefix('@') {
        Some("-") => warden::files::read_bounded(std::io::stdin(), MAX_NAMED)
            .and_then(|b| {
                String::from_utf8(b).map_err(|_| std::io::Error::other("it is not UTF-8 text"))
            })
            .context("cannot read the input from stdin (--input @-)"),
        Some("") => {
            anyhow::bail!("--input @ names no file (expected @FILE, or @- to read stdin)")
        }
        Some(path) => read_text(Path::new(path), "input file"),
        None => Ok(input.to_owned()),
    }
}

/// A file the user named, read as text: a missing one is said to be
/// missing, with its path; `what` says what it was for ("input file").
pub(crate) fn read_text(path: &Path, what: &str) -> anyhow::Result<String> {
    // A device is refused, not read for ever; a pipe the command line
    // feeds (`<(…)`) is read to its end.
    warden::files::read_named_text(path, MAX_NAMED).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow::anyhow!("{what} {} not found", path.display()),
        _ => anyhow::anyhow!("cannot read the {what} {}: {e}", path.display()),
    })
}

pub(crate) fn default_audit_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WARDEN_AUDIT") {
        return Some(PathBuf::from(p));
    }
    Some(state_dir()?.join("warden").join("audit.jsonl"))
}

pub(crate) fn open_audit(path: &Path) -> anyhow::Result<FileSink> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        // Mode 0700, whatever the umask: the default trail's directory is
        // the state directory, which holds the keys and is refused when
        // others can write it.
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .with_context(|| format!("cannot create the audit directory {}", parent.display()))?;
    }
    Ok(FileSink::open(path)?.with_signer(Arc::new(audit_key()?)))
}

async fn run(
    runtime: &Runtime,
    tool: &str,
    grant: &Grant,
    input: &str,
    verbose: bool,
) -> Result<u8, Failure> {
    // On a signal the invocation is dropped: its programs (each in a group
    // of its own, out of the terminal's reach) die with it; end `cancelled`.
    let run = tokio::select! {
        run = runtime.invoke(tool, grant, input) => run?,
        signal = stop::signal() => {
            runtime
                .flush_audit()
                .map_err(|e| warden::Error::Audit(Arc::new(e)))?;
            crate::out::errln!("warden: stopped by {}", signal.name);
            return Ok(128 + signal.number);
        }
    };
    // Its end is written behind: on the trail before its output is shown.
    runtime
        .flush_audit()
        .map_err(|e| warden::Error::Audit(Arc::new(e)))?;
    if verbose {
        for (name, bytes) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
            if !bytes.is_empty() {
                crate::out::errln!(
                    "tool {name} ({} bytes): {}",
                    bytes.len(),
                    shown(&String::from_utf8_lossy(bytes))
                );
            }
        }
        crate::out::errln!(
            "invocation {} of task {} took {:?}",
            run.id,
            run.task,
            run.duration
        );
    }
    match run.output {
        Ok(output) => {
            outln!("{}", warden::redact::json_for_terminal(&output))?;
            Ok(0)
        }
        Err(e) => {
            crate::out::errln!(
                "error: tool '{}' failed: {}",
                shown(tool),
                shown(&e.to_string())
            );
            Ok(if e.kind == ToolErrorKind::InvalidInput {
                2
            } else {
                1
            })
        }
    }
}
