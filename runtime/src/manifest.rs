//! The capability manifest: security's ceiling for each tool.
//!
//! ```toml
//! [tools.read-files]
//! component = "tools/read-files.wasm"   # relative to this file
//! identity = "sha256:…"                  # optional pin
//! timeout = "10s"                        # default 10s
//! memory = "64MiB"                       # default 64MiB
//! max-output = "1MiB"                    # default 1MiB
//!
//! [[tools.read-files.fs]]
//! handle = "workspace"
//! within = "projects"                    # a grant's directory must be inside this
//! rights = ["read"]
//!
//! [[tools.read-files.secrets]]
//! name = "api-token"
//! source = "exec:vault kv get -field=token secret/api"   # or env:VAR, file:PATH
//! ttl = "30s"                            # default: the invocation's lifetime
//! reveal = false                         # default false: use by reference only
//! send-to = ["https://api.example.com"]  # where it may be attached
//! ```
//!
//! `labels = [...]` on a tool, an fs ceiling, an egress rule, a secret or a
//! deploy target are sensitivity labels the runtime policy sees; a top-level
//! `policies = ["policies/"]` lists Cedar files (or directories of `*.cedar`
//! files) checked on every host call the manifest allows.
//!
//! Unknown fields are errors. Every problem is reported with its file, line,
//! column, field and the form that was expected; nothing is half-loaded.

use crate::caps::deploy::{Backend, DEFAULT_TIMEOUT as DEPLOY_TIMEOUT, DeployTarget};
use crate::caps::http::{EgressRule, check as http_check};
use crate::caps::secrets::{SecretSource, SecretSpec};
use crate::identity::Identity;
use crate::policy::RuntimePolicy;
use crate::rights::Rights;
use crate::units::{format_duration, format_size, parse_duration, parse_size};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MEMORY: u64 = 64 << 20;
pub const DEFAULT_MAX_OUTPUT: u64 = 1 << 20;
/// Wasm32 linear memory cannot exceed 4 GiB.
pub const MAX_MEMORY: u64 = 4 << 30;
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
pub const MAX_OUTPUT: u64 = 256 << 20;

/// A validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The file it was read from (for messages).
    pub path: PathBuf,
    pub tools: BTreeMap<String, ToolSpec>,
    /// Cedar policies asked after the manifest's own rules.
    pub policy: Option<Arc<RuntimePolicy>>,
}

/// One tool's entry: its component and the ceiling of what it may be granted.
#[derive(Debug, Clone)]
pub struct ToolSpec {
    pub name: String,
    /// Absolute path of the component.
    pub component: PathBuf,
    pub identity: Option<Identity>,
    pub limits: Limits,
    pub fs: Vec<FsCeiling>,
    pub secrets: Vec<SecretSpec>,
    /// Egress ceilings; no entry, no egress.
    pub http: Vec<EgressRule>,
    /// Audiences the tool may mint identity tokens for.
    pub token_audiences: Vec<String>,
    /// Deploy targets.
    pub deploy: Vec<DeployTarget>,
    /// Labels of the tool itself, for runtime policy.
    pub labels: Vec<String>,
}

/// Per-invocation limits of a tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub timeout: Duration,
    /// Bytes of linear memory, summed over the component's memories.
    pub memory: u64,
    /// Bytes of JSON the tool may return.
    pub max_output: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            memory: DEFAULT_MEMORY,
            max_output: DEFAULT_MAX_OUTPUT,
        }
    }
}

/// The most a grant may give for one fs handle.
#[derive(Debug, Clone)]
pub struct FsCeiling {
    pub handle: String,
    /// Canonical directory; a granted directory must be this or inside it.
    pub within: PathBuf,
    pub rights: Rights,
    /// Rights whose use waits for an approver (`approval = "required"` or a
    /// list of rights).
    pub approval: Rights,
    /// Sensitivity labels, for runtime policy.
    pub labels: Vec<String>,
}

impl ToolSpec {
    /// A tool with default limits and no capabilities.
    pub fn new(name: impl Into<String>, component: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            component: component.into(),
            identity: None,
            limits: Limits::default(),
            fs: Vec::new(),
            secrets: Vec::new(),
            http: Vec::new(),
            token_audiences: Vec::new(),
            deploy: Vec::new(),
            labels: Vec::new(),
        }
    }

    pub fn deploy_target(&self, name: &str) -> Option<&DeployTarget> {
        self.deploy.iter().find(|t| t.name == name)
    }

    /// Adds an egress ceiling.
    pub fn http(mut self, rule: EgressRule) -> Self {
        self.http.push(rule);
        self
    }

    /// Adds a secret the tool may be granted.
    pub fn secret(mut self, spec: SecretSpec) -> Self {
        self.secrets.push(spec);
        self
    }

    pub fn secret_spec(&self, name: &str) -> Option<&SecretSpec> {
        self.secrets.iter().find(|s| s.name == name)
    }

    /// Adds an fs ceiling; `within` is canonicalized.
    pub fn fs(
        mut self,
        handle: &str,
        within: impl AsRef<Path>,
        rights: Rights,
    ) -> std::io::Result<Self> {
        self.fs.push(FsCeiling {
            handle: handle.to_owned(),
            within: within.as_ref().canonicalize()?,
            rights,
            approval: Rights::NONE,
            labels: Vec::new(),
        });
        Ok(self)
    }

    pub fn ceiling(&self, handle: &str) -> Option<&FsCeiling> {
        self.fs.iter().find(|c| c.handle == handle)
    }
}

impl Manifest {
    /// Reads and validates a manifest file.
    pub fn load(path: impl AsRef<Path>) -> Result<Manifest, ManifestError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ManifestError {
            file: path.to_owned(),
            problems: vec![Problem::whole_file(format!(
                "cannot read the manifest: {e}"
            ))],
        })?;
        let base = path.parent().map(Path::to_owned).unwrap_or_default();
        Self::parse(&text, path, &base)
    }

    /// Validates manifest text; relative paths are resolved against `base`.
    pub fn parse(text: &str, file: &Path, base: &Path) -> Result<Manifest, ManifestError> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            ManifestError {
                file: file.to_owned(),
                problems: vec![Problem {
                    file: None,
                    line,
                    column,
                    field: String::new(),
                    message: e.message().trim().to_owned(),
                }],
            }
        })?;
        let mut v = Validator {
            text,
            problems: Vec::new(),
        };
        let mut tools = BTreeMap::new();
        for (name, raw_tool) in raw.tools {
            if let Some(tool) = v.tool(name.get_ref(), name.span(), raw_tool, base) {
                tools.insert(tool.name.clone(), tool);
            }
        }
        let mut policy = None;
        if !raw.policies.is_empty() {
            let paths: Vec<PathBuf> = raw.policies.iter().map(|p| base.join(p)).collect();
            match RuntimePolicy::load(&paths) {
                Ok(p) => policy = Some(Arc::new(p)),
                Err(e) => v.problems.extend(e.problems.into_iter().map(|p| {
                    Problem {
                        file: Some(p.file),
                        line: p.line,
                        column: p.column,
                        field: p
                            .policy
                            .map(|id| format!("policy '{id}'"))
                            .unwrap_or_default(),
                        message: p.message,
                    }
                })),
            }
        }
        if tools.is_empty() && v.problems.is_empty() {
            v.problems.push(Problem::whole_file(
                "no tools (expected at least one [tools.NAME] table)".into(),
            ));
        }
        if !v.problems.is_empty() {
            return Err(ManifestError {
                file: file.to_owned(),
                problems: v.problems,
            });
        }
        Ok(Manifest {
            path: file.to_owned(),
            tools,
            policy,
        })
    }

    pub fn tool(&self, name: &str) -> Option<&ToolSpec> {
        self.tools.get(name)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(default)]
    policies: Vec<String>,
    #[serde(default)]
    tools: BTreeMap<Spanned<String>, RawTool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawTool {
    component: Spanned<String>,
    identity: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    memory: Option<Spanned<String>>,
    max_output: Option<Spanned<String>>,
    #[serde(default)]
    fs: Vec<RawFsCeiling>,
    #[serde(default)]
    secrets: Vec<RawSecret>,
    #[serde(default)]
    http: Vec<RawHttp>,
    #[serde(default)]
    token_audiences: Vec<String>,
    #[serde(default)]
    deploy: Vec<RawDeploy>,
    labels: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeploy {
    name: Spanned<String>,
    rights: Spanned<Vec<String>>,
    backend: Spanned<String>,
    program: Option<Spanned<String>>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
    url: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    approval: Option<Spanned<String>>,
    labels: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawHttp {
    scheme: Spanned<String>,
    host: Spanned<String>,
    port: Option<u16>,
    methods: Option<Spanned<Vec<String>>>,
    path_prefixes: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    addresses: Vec<Spanned<String>>,
    approval: Option<Spanned<String>>,
    labels: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawSecret {
    name: Spanned<String>,
    source: Spanned<String>,
    ttl: Option<Spanned<String>>,
    #[serde(default)]
    reveal: bool,
    #[serde(default)]
    send_to: Vec<Spanned<String>>,
    approval: Option<Spanned<String>>,
    labels: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFsCeiling {
    handle: Spanned<String>,
    within: Spanned<String>,
    rights: Spanned<Vec<Spanned<String>>>,
    approval: Option<Spanned<toml::Value>>,
    labels: Option<Spanned<Vec<String>>>,
}

struct Validator<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    /// `approval = "required"`, the only value an approval field takes.
    fn required(&mut self, v: Option<Spanned<String>>, field: String) -> bool {
        match v {
            None => false,
            Some(s) if s.get_ref() == "required" => true,
            Some(s) => {
                self.problem(
                    s.span(),
                    field,
                    format!("approval = '{}' (expected \"required\")", s.get_ref()),
                );
                false
            }
        }
    }

    /// Sensitivity labels: names like tool names.
    fn labels(&mut self, raw: Option<Spanned<Vec<String>>>, field: String) -> Vec<String> {
        let Some(raw) = raw else {
            return Vec::new();
        };
        let span = raw.span();
        let labels = raw.into_inner();
        for l in &labels {
            if let Err(e) = check_name(l) {
                self.problem(span.clone(), field.clone(), format!("invalid label {e}"));
            }
        }
        labels
    }

    fn problem(&mut self, span: Range<usize>, field: String, message: String) {
        let (line, column) = line_col(self.text, span.start);
        self.problems.push(Problem {
            file: None,
            line,
            column,
            field,
            message,
        });
    }

    fn tool(
        &mut self,
        name: &str,
        span: Range<usize>,
        raw: RawTool,
        base: &Path,
    ) -> Option<ToolSpec> {
        let before = self.problems.len();
        let field = |f: &str| format!("tools.{name}.{f}");
        if let Err(e) = check_name(name) {
            self.problem(
                span,
                format!("tools.{name}"),
                format!("invalid tool name: {e}"),
            );
        }

        let component = base.join(raw.component.get_ref());
        if !component.is_file() {
            self.problem(
                raw.component.span(),
                field("component"),
                format!(
                    "component file '{}' not found (expected a path to a .wasm component, relative to the manifest)",
                    component.display()
                ),
            );
        }
        let identity = raw
            .identity
            .and_then(|id| match id.get_ref().parse::<Identity>() {
                Ok(i) => Some(i),
                Err(e) => {
                    self.problem(id.span(), field("identity"), e);
                    None
                }
            });

        let mut limits = Limits::default();
        if let Some(t) = raw.timeout {
            match parse_duration(t.get_ref()) {
                Ok(d) if d.is_zero() || d > MAX_TIMEOUT => self.problem(
                    t.span(),
                    field("timeout"),
                    format!(
                        "timeout must be above 0 and at most {}",
                        format_duration(MAX_TIMEOUT)
                    ),
                ),
                Ok(d) => limits.timeout = d,
                Err(e) => self.problem(t.span(), field("timeout"), e),
            }
        }
        if let Some(m) = raw.memory {
            match parse_size(m.get_ref()) {
                Ok(n) if !(1 << 20..=MAX_MEMORY).contains(&n) => self.problem(
                    m.span(),
                    field("memory"),
                    format!(
                        "memory must be between 1 MiB and {}",
                        format_size(MAX_MEMORY)
                    ),
                ),
                Ok(n) => limits.memory = n,
                Err(e) => self.problem(m.span(), field("memory"), e),
            }
        }
        if let Some(m) = raw.max_output {
            match parse_size(m.get_ref()) {
                Ok(n) if n == 0 || n > MAX_OUTPUT => self.problem(
                    m.span(),
                    field("max-output"),
                    format!(
                        "max-output must be above 0 and at most {}",
                        format_size(MAX_OUTPUT)
                    ),
                ),
                Ok(n) => limits.max_output = n,
                Err(e) => self.problem(m.span(), field("max-output"), e),
            }
        }

        let mut fs: Vec<FsCeiling> = Vec::new();
        for (i, c) in raw.fs.into_iter().enumerate() {
            let f = |k: &str| format!("tools.{name}.fs[{i}].{k}");
            let handle = c.handle.get_ref().clone();
            if let Err(e) = check_name(&handle) {
                self.problem(
                    c.handle.span(),
                    f("handle"),
                    format!("invalid handle name: {e}"),
                );
            } else if fs.iter().any(|other| other.handle == handle) {
                self.problem(
                    c.handle.span(),
                    f("handle"),
                    format!("handle '{handle}' is listed twice (expected one fs entry per handle)"),
                );
            }
            let within = base.join(c.within.get_ref());
            let within = match within.canonicalize() {
                Ok(p) if p.is_dir() => Some(p),
                Ok(p) => {
                    self.problem(
                        c.within.span(),
                        f("within"),
                        format!("'{}' is not a directory", p.display()),
                    );
                    None
                }
                Err(e) => {
                    self.problem(
                        c.within.span(),
                        f("within"),
                        format!(
                            "directory '{}' cannot be opened: {e} (expected an existing directory, relative to the manifest)",
                            within.display()
                        ),
                    );
                    None
                }
            };
            let mut rights = Rights::NONE;
            for r in c.rights.get_ref() {
                match r.get_ref().parse::<crate::rights::Right>() {
                    Ok(r) => rights = rights | r.into(),
                    Err(e) => self.problem(r.span(), f("rights"), e),
                }
            }
            if c.rights.get_ref().is_empty() {
                self.problem(
                    c.rights.span(),
                    f("rights"),
                    "no rights (expected a list such as [\"read\"])".into(),
                );
            }
            let approval = match c.approval {
                None => Rights::NONE,
                Some(a) => match a.get_ref() {
                    toml::Value::String(s) if s == "required" => rights,
                    toml::Value::Array(items) => {
                        let parsed: Result<Rights, String> = items
                            .iter()
                            .map(|v| v.as_str().unwrap_or("").parse::<crate::rights::Right>())
                            .collect();
                        match parsed {
                            Ok(r) => r,
                            Err(e) => {
                                self.problem(a.span(), f("approval"), e);
                                Rights::NONE
                            }
                        }
                    }
                    _ => {
                        self.problem(
                            a.span(),
                            f("approval"),
                            "expected approval = \"required\" or a list of rights such as [\"write\"]".into(),
                        );
                        Rights::NONE
                    }
                },
            };
            let labels = self.labels(c.labels, f("labels"));
            if let Some(within) = within {
                fs.push(FsCeiling {
                    handle,
                    within,
                    rights,
                    approval,
                    labels,
                });
            }
        }

        let mut deploy: Vec<DeployTarget> = Vec::new();
        for (i, raw) in raw.deploy.into_iter().enumerate() {
            if let Some(t) = self.deploy(name, i, raw, &deploy) {
                deploy.push(t);
            }
        }

        let mut http = Vec::new();
        for (i, raw) in raw.http.into_iter().enumerate() {
            if let Some(rule) = self.http(name, i, raw) {
                http.push(rule);
            }
        }

        let mut secrets: Vec<SecretSpec> = Vec::new();
        for (i, raw) in raw.secrets.into_iter().enumerate() {
            if let Some(spec) = self.secret(name, i, raw, base, &secrets) {
                secrets.push(spec);
            }
        }

        let labels = self.labels(raw.labels, field("labels"));
        (self.problems.len() == before).then(|| ToolSpec {
            labels,
            name: name.to_owned(),
            component,
            identity,
            limits,
            fs,
            secrets,
            http,
            token_audiences: raw.token_audiences,
            deploy,
        })
    }

    fn deploy(
        &mut self,
        tool: &str,
        i: usize,
        raw: RawDeploy,
        seen: &[DeployTarget],
    ) -> Option<DeployTarget> {
        let before = self.problems.len();
        let f = |k: &str| format!("tools.{tool}.deploy[{i}].{k}");
        let name = raw.name.get_ref().clone();
        if let Err(e) = check_name(&name) {
            self.problem(
                raw.name.span(),
                f("name"),
                format!("invalid target name: {e}"),
            );
        } else if seen.iter().any(|t| t.name == name) {
            self.problem(
                raw.name.span(),
                f("name"),
                format!("target '{name}' is listed twice"),
            );
        }
        if raw.rights.get_ref().as_slice() != ["deploy"] {
            self.problem(
                raw.rights.span(),
                f("rights"),
                "a deploy target takes exactly the deploy right (expected rights = [\"deploy\"])"
                    .into(),
            );
        }
        let mut timeout = DEPLOY_TIMEOUT;
        if let Some(t) = &raw.timeout {
            match parse_duration(t.get_ref()) {
                Ok(d) if !d.is_zero() && d <= MAX_TIMEOUT => timeout = d,
                Ok(_) => self.problem(
                    t.span(),
                    f("timeout"),
                    format!(
                        "timeout must be above 0 and at most {}",
                        format_duration(MAX_TIMEOUT)
                    ),
                ),
                Err(e) => self.problem(t.span(), f("timeout"), e),
            }
        }
        let backend = match (raw.backend.get_ref().as_str(), raw.program, raw.url) {
            ("exec", Some(program), None) => Some(Backend::Exec {
                program: program.into_inner(),
                args: raw.args,
                env: raw.env,
            }),
            ("webhook", None, Some(url)) => match http_check::parse_url(url.get_ref()) {
                Ok(_) => Some(Backend::Webhook {
                    url: url.into_inner(),
                }),
                Err(e) => {
                    self.problem(url.span(), f("url"), e);
                    None
                }
            },
            ("exec", _, _) => {
                self.problem(
                    raw.backend.span(),
                    f("backend"),
                    "an exec target needs `program` (and no `url`)".into(),
                );
                None
            }
            ("webhook", _, _) => {
                self.problem(
                    raw.backend.span(),
                    f("backend"),
                    "a webhook target needs `url` (and no `program`)".into(),
                );
                None
            }
            (other, _, _) => {
                self.problem(
                    raw.backend.span(),
                    f("backend"),
                    format!("unknown backend '{other}' (expected exec or webhook)"),
                );
                None
            }
        };
        let approval = self.required(raw.approval, f("approval"));
        let labels = self.labels(raw.labels, f("labels"));
        let backend = backend?;
        (self.problems.len() == before).then_some(DeployTarget {
            name,
            backend,
            timeout,
            approval,
            labels,
        })
    }

    fn http(&mut self, tool: &str, i: usize, raw: RawHttp) -> Option<EgressRule> {
        let before = self.problems.len();
        let f = |k: &str| format!("tools.{tool}.http[{i}].{k}");
        let scheme = raw.scheme.get_ref();
        if !matches!(scheme.as_str(), "http" | "https") {
            self.problem(
                raw.scheme.span(),
                f("scheme"),
                format!("unknown scheme '{scheme}' (expected http or https)"),
            );
        }
        let host = raw.host.get_ref();
        let origin = match raw.port {
            Some(p) => format!("{scheme}://{host}:{p}"),
            None => format!("{scheme}://{host}"),
        };
        let origin = match http_check::parse_origin(&origin) {
            Ok(o) => Some(o),
            Err(e) => {
                self.problem(
                    raw.host.span(),
                    f("host"),
                    format!("{e} (expected a host name or IP address)"),
                );
                None
            }
        };
        let methods = match raw.methods {
            None => vec!["GET".to_owned()],
            Some(ms) => {
                let upper: Vec<String> = ms
                    .get_ref()
                    .iter()
                    .map(|m| m.to_ascii_uppercase())
                    .collect();
                for m in &upper {
                    if !http_check::METHODS.contains(&m.as_str()) {
                        self.problem(
                            ms.span(),
                            f("methods"),
                            format!(
                                "unknown method '{m}' (expected {})",
                                http_check::METHODS.join(", ")
                            ),
                        );
                    }
                }
                upper
            }
        };
        let path_prefixes = match raw.path_prefixes {
            None => vec!["/".to_owned()],
            Some(ps) => {
                if let Some(bad) = ps.get_ref().iter().find(|p| !p.starts_with('/')) {
                    self.problem(
                        ps.span(),
                        f("path-prefixes"),
                        format!("'{bad}' does not start with '/'"),
                    );
                }
                ps.into_inner()
            }
        };
        let mut addresses = Vec::new();
        for a in &raw.addresses {
            match a.get_ref().parse::<std::net::IpAddr>() {
                Ok(ip) => addresses.push(ip),
                Err(_) => self.problem(
                    a.span(),
                    f("addresses"),
                    format!(
                        "'{}' is not an IP address (expected e.g. 10.0.0.7 or ::1)",
                        a.get_ref()
                    ),
                ),
            }
        }
        let approval = self.required(raw.approval, f("approval"));
        let labels = self.labels(raw.labels, f("labels"));
        let origin = origin?;
        (self.problems.len() == before).then_some(EgressRule {
            origin,
            methods,
            path_prefixes,
            addresses,
            approval,
            labels,
        })
    }

    fn secret(
        &mut self,
        tool: &str,
        i: usize,
        raw: RawSecret,
        base: &Path,
        seen: &[SecretSpec],
    ) -> Option<SecretSpec> {
        let before = self.problems.len();
        let f = |k: &str| format!("tools.{tool}.secrets[{i}].{k}");
        let name = raw.name.get_ref().clone();
        if let Err(e) = check_name(&name) {
            self.problem(
                raw.name.span(),
                f("name"),
                format!("invalid secret name: {e}"),
            );
        } else if seen.iter().any(|s| s.name == name) {
            self.problem(
                raw.name.span(),
                f("name"),
                format!("secret '{name}' is listed twice (expected one entry per secret)"),
            );
        }
        let source = SecretSource::parse(raw.source.get_ref(), base)
            .map_err(|e| self.problem(raw.source.span(), f("source"), e))
            .ok();
        let mut ttl = None;
        if let Some(t) = raw.ttl {
            match parse_duration(t.get_ref()) {
                Ok(d) if d.is_zero() || d > MAX_TIMEOUT => self.problem(
                    t.span(),
                    f("ttl"),
                    format!(
                        "ttl must be above 0 and at most {}",
                        format_duration(MAX_TIMEOUT)
                    ),
                ),
                Ok(d) => ttl = Some(d),
                Err(e) => self.problem(t.span(), f("ttl"), e),
            }
        }
        for dest in &raw.send_to {
            if let Err(e) = http_check::parse_origin(dest.get_ref()) {
                self.problem(
                    dest.span(),
                    f("send-to"),
                    format!("invalid destination: {e} (expected a URL origin such as https://api.example.com)"),
                );
            }
        }
        let approval = self.required(raw.approval, f("approval"));
        let labels = self.labels(raw.labels, f("labels"));
        let source = source?;
        (self.problems.len() == before).then(|| SecretSpec {
            approval,
            labels,
            name,
            source,
            ttl,
            reveal: raw.reveal,
            send_to: raw.send_to.into_iter().map(|d| d.into_inner()).collect(),
        })
    }
}

/// Tool and handle names: lower-case letters, digits, `-` and `_`.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{name}' (expected 1 to 64 lower-case letters, digits, '-' or '_', starting with a letter or digit)"
        ))
    }
}

pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Everything wrong with a manifest.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ManifestError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

/// One problem, at a position in the manifest (line 0: the whole file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Set when the problem is in another file the manifest names (a
    /// policy file).
    pub file: Option<PathBuf>,
    pub line: usize,
    pub column: usize,
    /// Dotted path of the field, e.g. `tools.read-files.fs[0].rights`.
    pub field: String,
    pub message: String,
}

impl Problem {
    fn whole_file(message: String) -> Self {
        Self {
            file: None,
            line: 0,
            column: 0,
            field: String::new(),
            message,
        }
    }
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", p.file.as_ref().unwrap_or(&self.file).display())?;
            if p.line > 0 {
                write!(f, ":{}:{}", p.line, p.column)?;
            }
            if !p.field.is_empty() {
                write!(f, ": {}", p.field)?;
            }
            write!(f, ": {}", p.message)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, base: &Path) -> Result<Manifest, ManifestError> {
        Manifest::parse(text, Path::new("m.toml"), base)
    }

    fn fixture() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.wasm"), b"").unwrap();
        std::fs::create_dir(dir.path().join("ws")).unwrap();
        dir
    }

    #[test]
    fn valid_manifest_with_defaults() {
        let dir = fixture();
        let m = parse(
            "[tools.t]\ncomponent = \"t.wasm\"\ntimeout = \"2s\"\n[[tools.t.fs]]\nhandle = \"ws\"\nwithin = \"ws\"\nrights = [\"read\", \"delete\"]\n",
            dir.path(),
        )
        .unwrap();
        let t = m.tool("t").unwrap();
        assert_eq!(t.limits.timeout, Duration::from_secs(2));
        assert_eq!(t.limits.memory, DEFAULT_MEMORY);
        assert_eq!(t.fs[0].rights, Rights::READ | Rights::DELETE);
        assert_eq!(
            t.fs[0].within,
            dir.path().join("ws").canonicalize().unwrap()
        );
    }

    #[test]
    fn unknown_field_is_reported_with_its_line() {
        let dir = fixture();
        let err = parse(
            "[tools.t]\ncomponent = \"t.wasm\"\ncolour = \"red\"\n",
            dir.path(),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("m.toml:3:1: unknown field `colour`"),
            "{msg}"
        );
        assert!(msg.contains("expected one of `component`"), "{msg}");
    }

    #[test]
    fn every_semantic_problem_is_reported_with_field_and_expectation() {
        let dir = fixture();
        let err = parse(
            "[tools.t]\ncomponent = \"missing.wasm\"\nmemory = \"12 parsecs\"\nidentity = \"md5:00\"\n\
             [[tools.t.fs]]\nhandle = \"ws\"\nwithin = \"nowhere\"\nrights = [\"read\", \"deploy\"]\n",
            dir.path(),
        )
        .unwrap_err();
        let fields: Vec<_> = err
            .problems
            .iter()
            .map(|p| (p.line, p.field.as_str()))
            .collect();
        assert_eq!(
            fields,
            [
                (2, "tools.t.component"),
                (4, "tools.t.identity"),
                (3, "tools.t.memory"),
                (7, "tools.t.fs[0].within"),
                (8, "tools.t.fs[0].rights"),
            ]
        );
        let msg = err.to_string();
        assert!(
            msg.contains("unknown right 'deploy' (expected read, write or delete)"),
            "{msg}"
        );
        assert!(
            msg.contains("expected a path to a .wasm component"),
            "{msg}"
        );
    }

    #[test]
    fn duplicate_handles_and_bad_names_are_refused() {
        let dir = fixture();
        let err = parse(
            "[tools.Bad]\ncomponent = \"t.wasm\"\n[[tools.Bad.fs]]\nhandle = \"ws\"\nwithin = \"ws\"\nrights = [\"read\"]\n\
             [[tools.Bad.fs]]\nhandle = \"ws\"\nwithin = \"ws\"\nrights = [\"write\"]\n",
            dir.path(),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("invalid tool name: 'Bad'"), "{msg}");
        assert!(msg.contains("handle 'ws' is listed twice"), "{msg}");
    }

    #[test]
    fn secrets_section() {
        let dir = fixture();
        let m = parse(
            "[tools.t]\ncomponent = \"t.wasm\"\n[[tools.t.secrets]]\nname = \"api\"\nsource = \"env:API_TOKEN\"\nttl = \"2s\"\nsend-to = [\"https://api.example.com\"]\n",
            dir.path(),
        )
        .unwrap();
        let s = &m.tool("t").unwrap().secrets[0];
        assert_eq!(
            (s.name.as_str(), s.ttl, s.reveal),
            ("api", Some(Duration::from_secs(2)), false)
        );
        let err = parse(
            "[tools.t]\ncomponent = \"t.wasm\"\n[[tools.t.secrets]]\nname = \"api\"\nsource = \"ldap:x\"\nsend-to = [\"api.example.com\"]\n",
            dir.path(),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(
                "m.toml:5:10: tools.t.secrets[0].source: unknown secret source kind 'ldap'"
            ),
            "{msg}"
        );
        assert!(
            msg.contains("tools.t.secrets[0].send-to: invalid destination"),
            "{msg}"
        );
    }

    #[test]
    fn labels_are_parsed_and_checked() {
        let dir = fixture();
        let m = parse(
            "[tools.t]\ncomponent = \"t.wasm\"\nlabels = [\"internal\"]\n[[tools.t.fs]]\nhandle = \"ws\"\nwithin = \"ws\"\nrights = [\"read\"]\nlabels = [\"source\", \"pii\"]\n",
            dir.path(),
        )
        .unwrap();
        let t = m.tool("t").unwrap();
        assert_eq!(t.labels, ["internal"]);
        assert_eq!(t.fs[0].labels, ["source", "pii"]);
        let err = parse(
            "[tools.t]\ncomponent = \"t.wasm\"\n[[tools.t.deploy]]\nname = \"prod\"\nrights = [\"deploy\"]\nbackend = \"exec\"\nprogram = \"/bin/true\"\nlabels = [\"Production\"]\n",
            dir.path(),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("m.toml:8:10: tools.t.deploy[0].labels: invalid label 'Production'"),
            "{msg}"
        );
    }

    #[test]
    fn policy_problems_name_their_own_file() {
        let dir = fixture();
        std::fs::write(
            dir.path().join("p.cedar"),
            "forbid (principal, action, resource)\nwhen { context.nope };\n",
        )
        .unwrap();
        let err = parse(
            "policies = [\"p.cedar\", \"missing.cedar\"]\n[tools.t]\ncomponent = \"t.wasm\"\n",
            dir.path(),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("p.cedar:2:"), "{msg}");
        assert!(msg.contains("nope"), "{msg}");
        assert!(
            msg.contains("missing.cedar: cannot read the policy file"),
            "{msg}"
        );
    }

    #[test]
    fn empty_manifest_is_an_error() {
        let err = parse("", Path::new(".")).unwrap_err();
        assert!(err.to_string().contains("no tools"));
    }
}
