//! The capability manifest: security's ceiling for each tool.
//!
//! ```toml
//! [tools.read-files]
//! component = "tools/read-files.wasm"   # relative to this file, or
//!                                        # "oci://HOST[:PORT]/REPO:TAG" or "…@sha256:HEX"
//! identity = "sha256:…"                  # optional pin
//! timeout = "10s"                        # default 10s
//! memory = "64MiB"                       # default 64MiB
//! max-output = "1MiB"                    # default 1MiB
//! max-audited-calls = 20000              # host calls one invocation may make
//! max-audit-bytes = "16MiB"              # trail bytes one invocation may use
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

mod signed_by;

use crate::caps::deploy::DeployTarget;
use crate::caps::http::EgressRule;
use crate::caps::secrets::SecretSpec;
use crate::caps::{deploy, fs, http, secrets};
use crate::diag::{Checker, Waiver};
use crate::identity::Identity;
use crate::oci::OciRef;
use crate::policy::RuntimePolicy;
use crate::rights::Rights;
use crate::source::ComponentSource;
use crate::units::{format_size, parse_size};
use serde::Deserialize;
use signed_by::RawSignedBy;
pub use signed_by::SignedBy;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

pub use crate::caps::fs::manifest::FsCeiling;
pub use crate::diag::{MAX_TIMEOUT, Problem, check_name};
pub use crate::policy::gate::AuditBudget;

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MEMORY: u64 = 64 << 20;
pub const DEFAULT_MAX_OUTPUT: u64 = 1 << 20;
/// Wasm32 linear memory cannot exceed 4 GiB.
pub const MAX_MEMORY: u64 = 4 << 30;
pub const MAX_OUTPUT: u64 = 256 << 20;

/// A validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The file it was read from (for messages).
    pub path: PathBuf,
    pub tools: BTreeMap<String, ToolSpec>,
    /// Cedar policies asked after the manifest's own rules.
    pub policy: Option<Arc<RuntimePolicy>>,
    /// Actions that would wait for a person by default and that this
    /// manifest lets run without one (`approval = "none"`), in file order.
    pub waivers: Vec<Waiver>,
}

/// One tool's entry: its component and the ceiling of what it may be granted.
#[derive(Debug, Clone)]
pub struct ToolSpec {
    pub name: String,
    /// The component: an absolute path, or an `oci://` reference.
    pub component: ComponentSource,
    pub identity: Option<Identity>,
    /// Who must have signed the component (checked before it is compiled).
    pub signed_by: Option<SignedBy>,
    /// Where a file component's signature is (`<component>.sig` unless the
    /// manifest says); unused for a registry component.
    pub signature: Option<PathBuf>,
    pub limits: Limits,
    pub fs: Vec<FsCeiling>,
    pub secrets: Vec<SecretSpec>,
    /// Egress ceilings; no entry, no egress.
    pub http: Vec<EgressRule>,
    /// Audiences the tool may mint identity tokens for.
    pub token_audiences: Vec<String>,
    /// Origins the tool may send its identity tokens to in its requests;
    /// `None`: each audience's tokens to that audience's own origin.
    pub token_send_to: Option<Vec<String>>,
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
    /// How much of the audit trail one invocation may use.
    pub audit: AuditBudget,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            memory: DEFAULT_MEMORY,
            max_output: DEFAULT_MAX_OUTPUT,
            audit: AuditBudget::default(),
        }
    }
}

impl ToolSpec {
    /// A tool with default limits and no capabilities, from a component
    /// file.
    pub fn new(name: impl Into<String>, component: impl Into<PathBuf>) -> Self {
        Self::with_source(name, ComponentSource::File(component.into()))
    }

    /// A tool with default limits and no capabilities, from a file or an
    /// OCI reference (`ToolSpec::with_source("x", "oci://…".parse::<OciRef>()?)`).
    pub fn with_source(name: impl Into<String>, component: impl Into<ComponentSource>) -> Self {
        Self {
            name: name.into(),
            component: component.into(),
            identity: None,
            signed_by: None,
            signature: None,
            limits: Limits::default(),
            fs: Vec::new(),
            secrets: Vec::new(),
            http: Vec::new(),
            token_audiences: Vec::new(),
            token_send_to: None,
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
        let text =
            crate::files::read_regular_text(path, crate::files::MAX_CONFIG).map_err(|e| {
                ManifestError {
                    file: path.to_owned(),
                    problems: vec![Problem::whole_file(format!(
                        "cannot read the manifest: {e}"
                    ))],
                }
            })?;
        let base = path.parent().map(Path::to_owned).unwrap_or_default();
        Self::parse(&text, path, &base)
    }

    /// Validates manifest text; relative paths are resolved against `base`.
    pub fn parse(text: &str, file: &Path, base: &Path) -> Result<Manifest, ManifestError> {
        // Types and field names first, every problem of them (`shape.rs`);
        // then what the values mean, on whatever was well-formed.
        let (raw, shape) = crate::shape::deserialize::<RawManifest>(text);
        let Some(raw) = raw else {
            return Err(ManifestError {
                file: file.to_owned(),
                problems: shape,
            });
        };
        let mut c = Checker::new(text);
        let signed = raw
            .signed_by
            .and_then(|s| signed_by::signed_by(&mut c, s, "signed-by", base));
        let mut tools = BTreeMap::new();
        let (mut secret_files, mut declared) = (Vec::new(), secrets::manifest::Declared::new());
        for (name, raw_tool) in raw.tools {
            for (i, s) in raw_tool.secrets.iter().enumerate() {
                let (secret, at) = s.name_at();
                declared.push((name.get_ref().clone(), i, secret, at));
                if let Some((span, paths, what)) = secrets::manifest::source_paths(s, base) {
                    let field = format!("tools.{}.secrets[{i}].source", name.get_ref());
                    secret_files.push((span, field, paths, what));
                }
            }
            let at = (name.get_ref().as_str(), name.span());
            if let Some(tool) = tool(&mut c, at, raw_tool, base, signed.as_ref()) {
                tools.insert(tool.name.clone(), tool);
            }
        }
        secrets::manifest::one_per_name(&mut c, &declared, |t| {
            tools.get(t).map(|t: &ToolSpec| &t.secrets[..])
        });
        for (span, field, paths, what) in secret_files {
            let held = paths.iter().find_map(|path| {
                secrets::manifest::in_ceiling(path, ceilings(&tools)).map(|c| (path, c))
            });
            if let Some((path, (tool, handle, within))) = held {
                c.problem(
                    span,
                    field,
                    format!(
                        "the {what} {} is inside {}, tool '{tool}''s fs ceiling '{handle}': \
                         a tool granted that handle could read or replace it without the \
                         secret (expected secret files and programs outside every fs ceiling)",
                        path.display(),
                        within.display()
                    ),
                );
            }
        }
        let mut policy = None;
        if !raw.policies.is_empty() {
            let paths: Vec<PathBuf> = raw.policies.iter().map(|p| base.join(p)).collect();
            match RuntimePolicy::load(&paths) {
                Ok(p) => policy = Some(Arc::new(p)),
                Err(e) => {
                    for p in e.problems {
                        c.push(Problem {
                            file: Some(p.file),
                            line: p.line,
                            column: p.column,
                            field: p
                                .policy
                                .map(|id| format!("policy '{id}'"))
                                .unwrap_or_default(),
                            message: p.message,
                        });
                    }
                }
            }
        }
        let waivers = c.take_waivers();
        let mut problems = shape;
        problems.extend(c.into_problems());
        // In file order; problems in policy files after the manifest's own.
        problems.sort_by_key(|p| (p.file.is_some(), p.line, p.column));
        if tools.is_empty() && problems.is_empty() {
            return Err(ManifestError {
                file: file.to_owned(),
                problems: vec![Problem::whole_file(
                    "no tools (expected at least one [tools.NAME] table)".into(),
                )],
            });
        }
        if !problems.is_empty() {
            return Err(ManifestError {
                file: file.to_owned(),
                problems,
            });
        }
        Ok(Manifest {
            path: file.to_owned(),
            tools,
            policy,
            waivers,
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
    /// What every tool's component must be signed by, unless its own
    /// table says.
    #[serde(default, rename = "signed-by")]
    signed_by: Option<Spanned<RawSignedBy>>,
    #[serde(default)]
    tools: BTreeMap<Spanned<String>, RawTool>,
}

/// A tool's entry; each capability's section is its own (`caps::<cap>::manifest`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawTool {
    component: Spanned<String>,
    identity: Option<Spanned<String>>,
    signed_by: Option<Spanned<RawSignedBy>>,
    signature: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    memory: Option<Spanned<String>>,
    max_output: Option<Spanned<String>>,
    max_audited_calls: Option<Spanned<u64>>,
    max_audit_bytes: Option<Spanned<String>>,
    #[serde(default)]
    fs: Vec<fs::manifest::RawFsCeiling>,
    #[serde(default)]
    secrets: Vec<secrets::manifest::RawSecret>,
    #[serde(default)]
    http: Vec<http::manifest::RawHttp>,
    #[serde(default)]
    token_audiences: Vec<String>,
    token_send_to: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    deploy: Vec<deploy::manifest::RawDeploy>,
    labels: Option<Spanned<Vec<String>>>,
}

/// Validates one tool's entry: its own fields here, each capability's
/// section in that capability's `manifest` module.
/// Every tool's fs ceilings: (tool, handle, directory).
pub(crate) fn ceilings(
    tools: &BTreeMap<String, ToolSpec>,
) -> impl Iterator<Item = (&str, &str, &Path)> {
    tools.values().flat_map(|t| {
        (t.fs.iter()).map(move |c| (t.name.as_str(), c.handle.as_str(), c.within.as_path()))
    })
}

fn tool(
    c: &mut Checker<'_>,
    (name, span): (&str, Range<usize>),
    raw: RawTool,
    base: &Path,
    signed: Option<&SignedBy>,
) -> Option<ToolSpec> {
    let before = c.count();
    let field = |f: &str| format!("tools.{name}.{f}");
    if let Err(e) = check_name(name) {
        c.problem(
            span,
            format!("tools.{name}"),
            format!("invalid tool name: {e}"),
        );
    }

    let component = component(c, &raw.component, field("component"), base);
    let identity = raw
        .identity
        .and_then(|id| match id.get_ref().parse::<Identity>() {
            Ok(i) => Some(i),
            Err(e) => {
                c.problem(id.span(), field("identity"), e);
                None
            }
        });

    let mut limits = Limits::default();
    if let Some(t) = raw.timeout
        && let Some(d) = c.duration(&t, field("timeout"), "timeout")
    {
        limits.timeout = d;
    }
    if let Some(m) = raw.memory {
        match parse_size(m.get_ref()) {
            Ok(n) if !(1 << 20..=MAX_MEMORY).contains(&n) => c.problem(
                m.span(),
                field("memory"),
                format!(
                    "memory must be between 1 MiB and {}",
                    format_size(MAX_MEMORY)
                ),
            ),
            Ok(n) => limits.memory = n,
            Err(e) => c.problem(m.span(), field("memory"), e),
        }
    }
    if let Some(m) = raw.max_output {
        match parse_size(m.get_ref()) {
            Ok(n) if n == 0 || n > MAX_OUTPUT => c.problem(
                m.span(),
                field("max-output"),
                format!(
                    "max-output must be above 0 and at most {}",
                    format_size(MAX_OUTPUT)
                ),
            ),
            Ok(n) => limits.max_output = n,
            Err(e) => c.problem(m.span(), field("max-output"), e),
        }
    }
    if let Some(n) = raw.max_audited_calls {
        match *n.get_ref() {
            0 => c.problem(
                n.span(),
                field("max-audited-calls"),
                "max-audited-calls must be at least 1".into(),
            ),
            k if k > AuditBudget::MAX_CALLS => c.problem(
                n.span(),
                field("max-audited-calls"),
                format!(
                    "max-audited-calls must be at most {}",
                    AuditBudget::MAX_CALLS
                ),
            ),
            k => limits.audit.calls = k,
        }
    }
    if let Some(m) = raw.max_audit_bytes {
        match parse_size(m.get_ref()) {
            Ok(n) if !(AuditBudget::MIN_BYTES..=AuditBudget::MAX_BYTES).contains(&n) => c.problem(
                m.span(),
                field("max-audit-bytes"),
                format!(
                    "max-audit-bytes must be between {} and {}",
                    format_size(AuditBudget::MIN_BYTES),
                    format_size(AuditBudget::MAX_BYTES)
                ),
            ),
            Ok(n) => limits.audit.bytes = n,
            Err(e) => c.problem(m.span(), field("max-audit-bytes"), e),
        }
    }

    let mut fs: Vec<FsCeiling> = Vec::new();
    for (i, raw) in raw.fs.into_iter().enumerate() {
        if let Some(ceiling) = fs::manifest::section(c, name, i, raw, base, &fs) {
            fs.push(ceiling);
        }
    }
    let mut deploy: Vec<DeployTarget> = Vec::new();
    for (i, raw) in raw.deploy.into_iter().enumerate() {
        if let Some(t) = deploy::manifest::section(c, name, i, raw, &deploy) {
            deploy.push(t);
        }
    }
    let mut http = Vec::new();
    for (i, raw) in raw.http.into_iter().enumerate() {
        if let Some(rule) = http::manifest::section(c, name, i, raw) {
            http.push(rule);
        }
    }
    let mut secrets: Vec<SecretSpec> = Vec::new();
    for (i, raw) in raw.secrets.into_iter().enumerate() {
        if let Some(spec) = secrets::manifest::section(c, name, i, raw, base, &secrets) {
            secrets.push(spec);
        }
    }

    let token_send_to =
        crate::caps::identity::manifest::send_to(c, name, &raw.token_audiences, raw.token_send_to);
    let labels = c.labels(raw.labels, field("labels"));
    let component = component?;
    let (signed_by, signature) = signed_by::of_tool(
        c,
        (raw.signed_by, raw.signature),
        &field("signed-by"),
        base,
        signed,
        (&component, raw.component.span()),
    );
    (c.count() == before).then(|| ToolSpec {
        labels,
        name: name.to_owned(),
        component,
        identity,
        signed_by,
        signature,
        limits,
        fs,
        secrets,
        http,
        token_audiences: raw.token_audiences,
        token_send_to,
        deploy,
    })
}

/// A tool's `component`: an `oci://` reference (anything with a scheme is
/// read as one, so `https://…` or `OCI://…` is refused, not taken for a
/// path), else a path relative to the manifest that must exist.
fn component(
    c: &mut Checker<'_>,
    raw: &Spanned<String>,
    field: String,
    base: &Path,
) -> Option<ComponentSource> {
    let text = raw.get_ref();
    let scheme = text
        .split_once(':')
        .is_some_and(|(s, _)| s.eq_ignore_ascii_case("oci"))
        || text.contains("://");
    if scheme {
        return match text.parse::<OciRef>() {
            Ok(r) => Some(ComponentSource::Oci(Box::new(r))),
            Err(e) => {
                c.problem(raw.span(), field, e);
                None
            }
        };
    }
    let path = base.join(text);
    if !path.is_file() {
        c.problem(
            raw.span(),
            field,
            format!(
                "component file '{}' not found (expected a path to a .wasm component, relative to the manifest, or an oci:// reference)",
                path.display()
            ),
        );
        return None;
    }
    Some(ComponentSource::File(path))
}

/// Everything wrong with a manifest.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ManifestError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
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
#[path = "manifest_tests.rs"]
mod tests;
