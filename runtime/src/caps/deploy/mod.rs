//! The `deploy` capability: named targets, each with its own `deploy` right.
//!
//! ```toml
//! [[tools.deploy-artifact.deploy]]
//! name = "staging"
//! rights = ["deploy"]
//! backend = "exec"                      # a program, run without a shell
//! program = "/usr/local/bin/ship"
//! args = ["--env", "staging", "{artifact}"]   # {artifact}: the artifact's path
//! env = ["HOME", "PATH"]                # passed through; everything else is cleared
//! timeout = "60s"
//!
//! [[tools.deploy-artifact.deploy]]
//! name = "production"
//! rights = ["deploy"]
//! backend = "webhook"                   # POST of a JSON description
//! url = "https://deploy.example.com/hooks/release"
//! ```
//!
//! A webhook call carries `Authorization: Bearer <identity token>` minted for
//! the invocation (audience: the URL's origin), so the receiver can verify
//! which tool, task and invocation is deploying.

mod artifact;
mod exec;
mod host;
pub(crate) mod manifest;
pub(crate) use host::{DeployStore, DeployView, add_to_linker};

use std::time::Duration;

/// Default time a backend may take, further bounded by the invocation deadline.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Most bytes of backend output returned to the tool.
pub const MAX_OUTPUT: usize = 64 << 10;

/// A deploy target in a tool's manifest entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployTarget {
    pub name: String,
    pub backend: Backend,
    pub timeout: Duration,
    /// Each deployment waits for an approver.
    pub approval: bool,
    /// Sensitivity labels, for runtime policy (e.g. `production`).
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// A program and its arguments; `{artifact}` in an argument is replaced
    /// by the path of a private copy of the artifact.
    Exec {
        program: String,
        args: Vec<String>,
        /// Environment variables passed through from the host.
        env: Vec<String>,
    },
    /// A URL that receives a JSON description of the deployment.
    Webhook { url: String },
}

impl Backend {
    /// A webhook's identity-token audience: its URL's origin
    /// (`scheme://host[:port]`, the port only when not the scheme's own).
    pub(crate) fn audience(&self) -> Option<Result<String, String>> {
        let Backend::Webhook { url } = self else {
            return None;
        };
        Some(crate::net::parse_url(url).map(|(_, o)| {
            let port = match (o.scheme.as_str(), o.port) {
                ("http", 80) | ("https", 443) => String::new(),
                (_, p) => format!(":{p}"),
            };
            format!("{}://{}{port}", o.scheme, o.host)
        }))
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Backend::Exec { .. } => "exec",
            Backend::Webhook { .. } => "webhook",
        }
    }
}

/// The deploy targets a grant names (`granted`), from the `ceiling` of
/// `tool`'s manifest entry, for one invocation. Refuses a name the ceiling
/// does not list.
pub(crate) fn authorize(
    tool: &str,
    ceiling: &[DeployTarget],
    granted: &std::collections::BTreeSet<String>,
) -> Result<Vec<DeployTarget>, crate::diag::GrantError> {
    crate::diag::by_name(
        granted,
        ceiling,
        |t| &t.name,
        |name, known| crate::diag::GrantError::UnknownTarget {
            tool: tool.to_owned(),
            name,
            known,
        },
    )
}

/// The target names in `granted` that the `ceiling` lists; others are dropped.
pub(crate) fn narrow(
    ceiling: &[DeployTarget],
    granted: &std::collections::BTreeSet<String>,
) -> std::collections::BTreeSet<String> {
    granted
        .iter()
        .filter(|name| ceiling.iter().any(|t| t.name == **name))
        .cloned()
        .collect()
}
