//! `warden serve`: the MCP server over stdio or streamable HTTP.

use crate::{Failure, usage};
use anyhow::Context as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use warden::audit::AuditSink;
use warden::auth::{AgentsFile, Authenticator, StaticToken};
use warden::mcp::http::HttpOptions;
use warden::mcp::{Grants, ServeOptions, WardenMcp};
use warden::{Grant, Manifest, RuntimeBuilder};

#[path = "serve_authority.rs"]
mod authority;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The capability manifest.
    #[arg(long, short)]
    manifest: PathBuf,
    /// The task grant every call runs under (a TOML grant file); over HTTP,
    /// the grant of --token-file's caller, or of every caller when no token
    /// is required. The client cannot change it. Required unless --agents
    /// gives every caller its grant.
    #[arg(long = "grants", value_name = "FILE")]
    grants: Option<PathBuf>,
    /// Serve MCP over stdin/stdout.
    #[arg(long, conflicts_with = "http")]
    stdio: bool,
    /// Serve MCP over streamable HTTP at ADDR (e.g. 127.0.0.1:8765), path /mcp.
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// HTTP: require `Authorization: Bearer TOKEN`, TOKEN read from FILE;
    /// calls with it run under --grants.
    #[arg(long, value_name = "FILE", requires = "http")]
    token_file: Option<PathBuf>,
    /// HTTP: a further client, TOKEN_FILE=GRANTS: its token selects its own
    /// task grant. Repeatable.
    #[arg(long = "client", value_name = "TOKEN_FILE=GRANTS", requires = "http")]
    clients: Vec<String>,
    /// HTTP: verify agents' tokens (OAuth access tokens, SPIFFE JWT-SVIDs)
    /// and map each agent to its task grant, as FILE says (see `warden
    /// check --agents`). Serves the protected resource metadata.
    #[arg(long, value_name = "FILE", requires = "http")]
    agents: Option<PathBuf>,
    /// Serve a non-loopback address: --http (needs --token-file or
    /// --agents), --console or --approvals.
    #[arg(long)]
    allow_remote: bool,
    /// A further `Host` the MCP endpoint (--http) and the console answer
    /// to, as clients send it (HOST or HOST:PORT; e.g. a Kubernetes
    /// Service's name, a TLS proxy's). Loopback names are always accepted,
    /// and by the console its own address; any other is refused (DNS
    /// rebinding). Needs --http or --console. Repeatable.
    #[arg(long = "allowed-host", value_name = "HOST", value_parser = host_name)]
    allowed_hosts: Vec<String>,
    /// Calls running at once; more are answered "busy".
    #[arg(long, default_value_t = 64, value_name = "N")]
    max_in_flight: usize,
    /// Calls one agent (an authenticated caller) may have running at once;
    /// more are answered "busy" [default: three quarters of
    /// --max-in-flight].
    #[arg(long, value_name = "N")]
    max_in_flight_per_agent: Option<usize>,
    /// Largest request, in bytes: an HTTP request body, a stdio line.
    #[arg(long, default_value_t = 4 << 20, value_name = "BYTES")]
    max_request: usize,
    /// HTTP: connections open at once; more are closed as they come
    /// (fewer when the process's open-file limit leaves no room for N).
    #[arg(long, default_value_t = 4096, value_name = "N", requires = "http", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// HTTP: how long a client may take to send a request's head, and its
    /// body (e.g. 30s): a connection that sends no complete head within it
    /// is closed, a kept-alive one too once idle that long, and one whose
    /// client reads nothing of its answers that long.
    #[arg(long, default_value = "30s", value_name = "DURATION", requires = "http", value_parser = read_timeout)]
    read_timeout: std::time::Duration,
    /// Serve the pending approvals at ADDR (GET /approvals, POST
    /// /approvals/DIGEST) for the operator; approvals a client cannot answer
    /// through elicitation wait there. Needs --approvals-token-file.
    #[arg(long, value_name = "ADDR", requires = "approvals_token_file")]
    approvals: Option<SocketAddr>,
    /// The operator's bearer token for --approvals (not an agent's token,
    /// nor --console's or --introspect-token-file's: each is its own).
    #[arg(long, value_name = "FILE")]
    approvals_token_file: Option<PathBuf>,
    /// Serve the operator console at ADDR (default 127.0.0.1:8766): the
    /// pending approvals to approve or deny, and the audit trail browsed
    /// with its verification status. Approvals a client cannot answer
    /// through elicitation wait there. Needs --console-token-file; a
    /// non-loopback ADDR also needs --allow-remote.
    #[arg(
        long,
        value_name = "ADDR",
        num_args = 0..=1,
        default_missing_value = "127.0.0.1:8766",
        requires = "console_token_file"
    )]
    console: Option<SocketAddr>,
    /// The operator's token for signing in to --console (not an agent's
    /// token; at least 16 characters).
    #[arg(long, value_name = "FILE")]
    console_token_file: Option<PathBuf>,
    /// HTTP: serve token introspection (RFC 7662) at POST /introspect to
    /// callers with `Authorization: Bearer TOKEN`, TOKEN read from FILE:
    /// downstream services asking whether a tool's identity token is live.
    /// With --state, every replica answers for every replica's tokens.
    /// The keys that verify tokens are at GET /.well-known/jwks.json.
    #[arg(long, value_name = "FILE", requires = "http")]
    introspect_token_file: Option<PathBuf>,
    /// Audit trail file [default: as for `warden run`].
    #[arg(long, value_name = "FILE")]
    audit: Option<PathBuf>,
    /// Shared state for replicas: postgres://USER[:PASSWORD]@HOST:PORT/DB.
    /// The audit trail goes there instead of --audit's file, a chain per
    /// process; calls fail (and /readyz says 503) while it is unreachable.
    /// See docs/REPLICAS.md.
    #[arg(
        long,
        value_name = "URL",
        env = "WARDEN_STATE",
        hide_env_values = true,
        conflicts_with = "audit"
    )]
    state: Option<String>,
    /// This replica's name, recorded with its audit chain [default: the
    /// host name, a pod's name on Kubernetes].
    #[arg(long, value_name = "NAME", env = "WARDEN_REPLICA", requires = "state")]
    replica: Option<String>,
}

/// A `--read-timeout` value: above zero, at most an hour.
fn read_timeout(s: &str) -> Result<std::time::Duration, String> {
    let d = warden::units::parse_duration(s)?;
    let ok = !d.is_zero() && d <= std::time::Duration::from_secs(3600);
    ok.then_some(d)
        .ok_or_else(|| "expected a duration above zero and at most an hour, e.g. 30s".into())
}

/// An `--allowed-host` value: a host name or address (and port).
fn host_name(host: &str) -> Result<String, String> {
    let ok = !host.is_empty()
        && host.len() <= 260
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c));
    if ok {
        Ok(host.to_ascii_lowercase())
    } else {
        Err("expected HOST or HOST:PORT (letters, digits, '-', '.', ':', '[', ']')".into())
    }
}

/// `--state` parsed, and this replica's name.
fn state_of(args: &ServeArgs) -> anyhow::Result<Option<(warden::store::StateUrl, String)>> {
    let Some(url) = &args.state else {
        return Ok(None);
    };
    let url = warden::store::StateUrl::parse(url)?;
    let replica = match &args.replica {
        Some(r) => r.clone(),
        None => std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "warden".into()),
    };
    anyhow::ensure!(
        !replica.is_empty() && replica.len() <= 253 && !replica.chars().any(char::is_control),
        "--replica: expected a name of 1 to 253 characters without control characters"
    );
    Ok(Some((url, replica)))
}

/// The file trail's path: --audit, or the default.
fn audit_path(args: &ServeArgs) -> anyhow::Result<PathBuf> {
    args.audit
        .clone()
        .or_else(crate::default_audit_path)
        .context("no audit path: pass --audit FILE")
}

/// An operator's token (`what`: approvals, console, introspection): read,
/// and not any client's (an agent must not answer its own approvals, nor
/// read what other calls' tokens say).
fn operator_token(file: &Path, what: &str, clients: &[String]) -> Result<String, Failure> {
    let token = read_token(file).map_err(usage)?;
    if clients.iter().any(|t| t == &token) {
        let why = if what == "introspection" {
            "an agent must not read what other calls' tokens say"
        } else {
            "an agent must not answer its own approvals"
        };
        return Err(usage(anyhow::anyhow!(
            "the {what} token must differ from every client token ({why})"
        )));
    }
    Ok(token)
}

async fn listen(addr: SocketAddr) -> Result<tokio::net::TcpListener, Failure> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
        .map_err(usage)
}

/// The audit sink: the state store's when --state names one, else the file.
fn open_sink(
    args: &ServeArgs,
    state: Option<&(warden::store::StateUrl, String)>,
) -> anyhow::Result<Arc<dyn AuditSink>> {
    let Some((url, replica)) = state else {
        return Ok(Arc::new(crate::open_audit(&audit_path(args)?)?));
    };
    let sink = warden::store::PgSink::open(
        url,
        warden::store::PgOptions {
            replica: replica.clone(),
            signer: Some(Arc::new(crate::audit_key()?)),
            cadence: warden::audit::Cadence::default(),
        },
    )?;
    crate::out::errln!(
        "warden: audit trail in {} (chain {})",
        url.shown(),
        sink.chain()
    );
    Ok(Arc::new(sink))
}

impl ServeArgs {
    pub fn stdio(&self) -> bool {
        self.stdio
    }
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    let token = warden::files::read_regular_text(path, 64 << 10)
        .with_context(|| format!("cannot read the token file {}", path.display()))?
        .trim()
        .to_owned();
    anyhow::ensure!(
        token.len() >= 16,
        "the token in {} is {} characters (expected at least 16)",
        path.display(),
        token.len()
    );
    Ok(token)
}

/// A static token's name: its file's name without the extension, as the
/// trail records it (`static-token:NAME`).
fn token_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    crate::shown(&stem).into_owned()
}

/// The names of the static tokens, as the trail will record them.
fn statics_names(args: &ServeArgs) -> Vec<String> {
    let clients = args
        .clients
        .iter()
        .filter_map(|c| c.split_once('=').map(|(f, _)| Path::new(f)));
    args.token_file
        .as_deref()
        .into_iter()
        .chain(clients)
        .map(token_name)
        .collect()
}

/// `operator_approver`: the operator answers approvals (an `--approver`
/// was named, or `auto` found a terminal).
pub async fn serve(
    builder: RuntimeBuilder,
    args: ServeArgs,
    operator_approver: bool,
) -> Result<u8, Failure> {
    // Listened for before any line a supervisor waits for is printed: a
    // SIGTERM sent as soon as one is read must stop the server cleanly (its
    // trail settled), not kill it before anything has listened.
    use tokio::signal::unix::SignalKind;
    let mut term = crate::stop::listen(SignalKind::terminate());
    let mut int = crate::stop::listen(SignalKind::interrupt());
    let mut hup = crate::stop::listen(SignalKind::hangup());
    if !args.stdio && args.http.is_none() {
        return Err(usage(anyhow::anyhow!(
            "choose a transport: --stdio or --http ADDR"
        )));
    }
    if !args.allowed_hosts.is_empty() && args.http.is_none() && args.console.is_none() {
        return Err(usage(anyhow::anyhow!(
            "--allowed-host names a host for --http or --console: give one of them"
        )));
    }
    let grant = match &args.grants {
        Some(g) => Some(Grant::load(g).map_err(|e| usage(e.into()))?),
        None if args.agents.is_some() && args.token_file.is_none() => None,
        None => {
            return Err(usage(anyhow::anyhow!(
                "--grants FILE is required (it is optional only with --agents and no --token-file)"
            )));
        }
    };
    let mut statics = Vec::new();
    let mut tokens = Vec::new();
    if let Some(f) = &args.token_file {
        let t = read_token(f).map_err(usage)?;
        let g = grant
            .clone()
            .unwrap_or_else(|| unreachable!("checked above"));
        tokens.push(t.clone());
        statics.push(StaticToken::new(&token_name(f), t, g));
    }
    for c in &args.clients {
        let (token_file, grants) = c
            .split_once('=')
            .with_context(|| format!("--client {c}: expected TOKEN_FILE=GRANTS"))
            .map_err(usage)?;
        let t = read_token(Path::new(token_file)).map_err(usage)?;
        let g = Grant::load(Path::new(grants)).map_err(|e| usage(e.into()))?;
        tokens.push(t.clone());
        statics.push(StaticToken::new(&token_name(Path::new(token_file)), t, g));
    }
    let mut names: Vec<String> = statics_names(&args);
    names.sort();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(usage(anyhow::anyhow!(
            "two token files are named '{}': the trail names a static token by its file's name (rename one)",
            w[0]
        )));
    }
    let mut values = tokens.clone();
    values.sort();
    if values.windows(2).any(|w| w[0] == w[1]) {
        return Err(usage(anyhow::anyhow!(
            "two token files hold the same token (each caller needs its own)"
        )));
    }
    let agents = match &args.agents {
        Some(f) => Some(AgentsFile::load(f).map_err(|e| usage(e.into()))?),
        None => None,
    };
    if let (Some(a), Some(addr)) = (&agents, args.http)
        && a.resource.is_none()
        && !addr.ip().is_loopback()
    {
        return Err(usage(anyhow::anyhow!(
            "{}: no resource, and --http {addr} is not loopback (set resource = \"https://HOST/mcp\", the URL agents reach this server at, which their tokens name in aud)",
            a.path.display()
        )));
    }
    if let Some(addr) = args.http
        && !addr.ip().is_loopback()
        && (!args.allow_remote || (tokens.is_empty() && agents.is_none()))
    {
        return Err(usage(anyhow::anyhow!(
            "--http {addr} is not a loopback address (pass --allow-remote, and --token-file or --agents, to serve it)"
        )));
    }
    let introspection = match &args.introspect_token_file {
        Some(f) => Some(Arc::new(zeroize::Zeroizing::new(operator_token(
            f,
            "introspection",
            &tokens,
        )?))),
        None => None,
    };
    let manifest = Manifest::load(&args.manifest).map_err(warden::Error::from)?;
    let state = state_of(&args).map_err(usage)?;
    let sink = open_sink(&args, state.as_ref()).map_err(usage)?;
    let sink =
        crate::with_telemetry(sink, state.as_ref().map(|(_, r)| r.clone())).map_err(usage)?;
    let mut builder = builder;
    if state.is_none() {
        builder = builder.keep_out(audit_path(&args).map_err(usage)?, "audit trail");
    }
    builder = authority::files(builder, &args, agents.as_ref());
    let mut queue = None;
    let mut approvals = None;
    let mut console = None;
    if let Some(addr) = args.approvals {
        if !addr.ip().is_loopback() && !args.allow_remote {
            return Err(usage(anyhow::anyhow!(
                "--approvals {addr} is not a loopback address (pass --allow-remote to serve it; the approvals endpoint speaks plain HTTP, so put TLS in front)"
            )));
        }
        let file = args
            .approvals_token_file
            .as_deref()
            .unwrap_or_else(|| unreachable!("clap requires it"));
        let token = operator_token(file, "approvals", &tokens)?;
        let listener = listen(addr).await?;
        let bound = listener.local_addr().map_err(|e| usage(e.into()))?;
        crate::out::errln!("warden: pending approvals at http://{bound}/approvals");
        approvals = Some((listener, token));
    }
    if let Some(addr) = args.console {
        if !addr.ip().is_loopback() && !args.allow_remote {
            return Err(usage(anyhow::anyhow!(
                "--console {addr} is not a loopback address (pass --allow-remote to serve it; the console speaks plain HTTP, so put TLS in front)"
            )));
        }
        let file = args
            .console_token_file
            .as_deref()
            .unwrap_or_else(|| unreachable!("clap requires it"));
        let token = operator_token(file, "console", &tokens)?;
        let listener = listen(addr).await?;
        let bound = listener.local_addr().map_err(|e| usage(e.into()))?;
        crate::out::errln!("warden: operator console at http://{bound}/");
        console = Some((listener, token));
    }
    // Each operator's token is its own: a service that may introspect
    // must not also answer approvals.
    let operators = [
        ("approvals", approvals.as_ref().map(|(_, t)| t.as_str())),
        ("console", console.as_ref().map(|(_, t)| t.as_str())),
        (
            "introspection",
            introspection.as_deref().map(|t| t.as_str()),
        ),
    ];
    for (i, (a, ta)) in operators.iter().enumerate() {
        for (b, tb) in &operators[i + 1..] {
            if ta.is_some() && ta == tb {
                return Err(usage(anyhow::anyhow!(
                    "the {a} and {b} tokens must differ (each operator endpoint needs its own)"
                )));
            }
        }
    }
    if approvals.is_some() || console.is_some() {
        // With --state, requests wait in the store: any replica's
        // endpoint lists and answers them.
        let q: Arc<dyn warden::approval::ApprovalQueue> = match &state {
            Some((url, replica)) => {
                let q = warden::store::PgApprover::open(
                    url,
                    replica,
                    warden::approval::DEFAULT_APPROVAL_TIMEOUT,
                )
                .await
                .map_err(|e| usage(e.into()))?;
                builder = builder.approver(q.clone());
                q
            }
            None => {
                let q = Arc::new(warden::approval::QueueApprover::new());
                builder = builder.approver(q.clone());
                q
            }
        };
        queue = Some(q);
    }
    // With --state, task histories (runtime policy's context) are shared,
    // and so is which invocations run (token introspection).
    if let Some((url, _)) = &state {
        let history = warden::store::PgHistory::open(url)
            .await
            .map_err(|e| usage(e.into()))?;
        builder = builder.task_history(history);
        if args.introspect_token_file.is_some() {
            let ledger = warden::store::PgInvocations::open(url)
                .await
                .map_err(|e| usage(e.into()))?;
            builder = builder.invocations(ledger);
        }
    }
    let runtime = builder
        .manifest(manifest)
        .audit(sink.clone())
        .max_concurrent_invocations(u32::try_from(args.max_in_flight).unwrap_or(u32::MAX))
        .build()?;
    let grants = match grant {
        Some(g) if statics.is_empty() => Grants::One(Arc::new(g)),
        _ => Grants::PerCaller,
    };
    // An operator who answers approvals answers them all: a client that
    // can elicit may be the agent itself.
    let options = ServeOptions {
        max_in_flight: args.max_in_flight,
        max_in_flight_per_agent: (args.max_in_flight_per_agent)
            .unwrap_or(args.max_in_flight - args.max_in_flight / 4),
        client_approvals: !operator_approver && args.approvals.is_none() && args.console.is_none(),
        ..ServeOptions::default()
    };
    // A tool that cannot be described is left out and named here; the
    // others are served (none at all is an error).
    let mcp = WardenMcp::new(runtime, grants, options).await?;
    // With --state, a client's answer to an approval round trip may reach
    // any replica.
    if let (Some((url, _)), false) = (&state, args.stdio) {
        let rounds = warden::store::PgRounds::open(url)
            .await
            .map_err(|e| usage(e.into()))?;
        mcp.share_rounds(rounds);
    }
    for (name, why) in mcp.unavailable() {
        crate::out::errln!(
            "warden: not serving tool '{}': {}",
            crate::shown(name),
            crate::shown(why)
        );
    }
    let shutdown = tokio_util::sync::CancellationToken::new();
    if let (Some((listener, token)), Some(q)) = (approvals, &queue) {
        let stop = shutdown.clone();
        tokio::spawn(warden::mcp::http::serve_approvals(
            listener,
            q.clone(),
            token,
            stop,
        ));
    }
    if let (Some((listener, token)), Some(q)) = (console, queue) {
        let trail = match &state {
            Some((url, _)) => warden::console::TrailSource::Store(Box::new(url.clone())),
            None => warden::console::TrailSource::File {
                path: audit_path(&args).map_err(usage)?,
                keys: warden::Verifier::from_jwks(&crate::audit_key().map_err(usage)?.jwks())
                    .map_err(|e| usage(e.into()))?,
            },
        };
        let options = warden::console::ConsoleOptions {
            token,
            queue: q,
            trail,
            allowed_hosts: args.allowed_hosts.clone(),
        };
        let stop = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = warden::console::serve(listener, options, stop).await {
                tracing::error!("console: {e}");
            }
        });
    }
    let signal = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = crate::stop::signalled(int.as_mut()) => {}
            () = crate::stop::signalled(term.as_mut()) => {}
            () = crate::stop::signalled(hup.as_mut()) => {}
        }
        signal.cancel();
    });
    if args.stdio {
        warden::mcp::stdio::serve(mcp, args.max_request, shutdown)
            .await
            .context("MCP over stdio")
            .map_err(usage)?;
        sink.settle();
        return Ok(0);
    }
    let addr = args.http.unwrap_or_else(|| unreachable!("checked above"));
    let listener = listen(addr).await?;
    let bound = listener.local_addr().map_err(|e| usage(e.into()))?;
    // The one line a supervisor (or a test) reads to find the port.
    crate::out::errln!(
        "warden: serving MCP at http://{bound}{}",
        warden::mcp::http::PATH
    );
    let mut auth = Authenticator::new(statics);
    if let Some(file) = agents {
        let resource = format!("http://{bound}{}", warden::mcp::http::PATH);
        auth = auth
            .with_agents(file, &resource)
            .map_err(|e| usage(anyhow::anyhow!(e)))?;
        if let Some(r) = auth.resource() {
            crate::out::errln!("warden: verifying agent tokens for the resource {r}");
        }
    }
    let http = HttpOptions {
        auth: Arc::new(auth),
        max_request: args.max_request,
        allowed_hosts: args.allowed_hosts.clone(),
        introspection,
        max_connections: args.max_connections as usize,
        read_timeout: args.read_timeout,
        ..HttpOptions::default()
    };
    warden::mcp::http::serve(listener, mcp, http, shutdown)
        .await
        .context("MCP over HTTP")
        .map_err(usage)?;
    sink.settle();
    Ok(0)
}
