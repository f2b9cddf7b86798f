//! Errors of the library. Each names what was wrong and what was expected.

use crate::audit::AuditError;
use crate::caps::stdio::OutputFlood;
use crate::grant::GrantError;
use crate::identity::Identity;
use crate::manifest::ManifestError;
use crate::source::ComponentSource;
use crate::units::{format_duration, format_size};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("unknown tool '{name}' (the manifest lists: {known})")]
    UnknownTool { name: String, known: String },
    #[error(transparent)]
    Grant(#[from] GrantError),
    /// The component is not one Warden can run; `path` is where it came
    /// from (a file or an `oci://` reference).
    #[error("{path}: {reason}")]
    Component {
        path: ComponentSource,
        reason: String,
    },
    #[error(
        "tool '{tool}' refused to load: the manifest pins identity {expected} but {path} has identity {actual}"
    )]
    IdentityMismatch {
        tool: String,
        path: ComponentSource,
        expected: Identity,
        actual: Identity,
    },
    /// A component without the signature its manifest entry requires
    /// (`signed-by`), refused before it is compiled.
    #[error("{0}")]
    Unsigned(Box<Unsigned>),
    /// An `oci://` component the blob cache does not have (or has
    /// unusable), when the network may not be used.
    #[error("{0}")]
    NotCached(String),
    /// A registry could not be reached, or refused.
    #[error("registry: {0}")]
    Registry(String),
    #[error("invalid input: {0}")]
    Input(String),
    #[error(transparent)]
    Secret(#[from] crate::caps::secrets::SecretError),
    #[error(transparent)]
    Limit(#[from] LimitExceeded),
    #[error("tool trapped: {0}")]
    Trap(String),
    #[error(transparent)]
    Audit(Arc<AuditError>),
    #[error("{0}")]
    Config(String),
    #[error("host error: {0}")]
    Host(String),
    #[error("the invocation was cancelled by its caller")]
    Cancelled,
}

/// How a caller should treat an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Bad manifest, grant, component or input: nothing ran.
    Usage,
    /// The invocation ran and was ended by a limit or a trap.
    Limit,
    /// The host failed (audit trail, I/O); the invocation did not complete.
    Host,
}

impl Error {
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Manifest(_)
            | Error::UnknownTool { .. }
            | Error::Grant(_)
            | Error::Component { .. }
            | Error::IdentityMismatch { .. }
            | Error::Unsigned(_)
            | Error::NotCached(_)
            | Error::Input(_)
            | Error::Secret(_)
            | Error::Config(_) => ErrorClass::Usage,
            Error::Limit(_) | Error::Trap(_) | Error::Cancelled => ErrorClass::Limit,
            Error::Audit(_) | Error::Host(_) | Error::Registry(_) => ErrorClass::Host,
        }
    }
}

/// A limit that ended an invocation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    #[error("deadline exceeded after {}", format_duration(*after))]
    Deadline { after: Duration },
    #[error("memory limit of {} exceeded", format_size(*limit))]
    Memory { limit: u64 },
    #[error("call stack exhausted (recursion too deep)")]
    Stack,
    #[error("{stream} exceeded its capture limit of {}", format_size(*limit as u64))]
    Stdio { stream: &'static str, limit: usize },
    #[error("output of {} exceeds the limit of {}", format_size(*size), format_size(*limit))]
    Output { size: u64, limit: u64 },
    /// Output over the most the host reads from a tool, refused unread.
    #[error("output of more than {} exceeds the limit of {}", format_size(*read), format_size(*limit))]
    OutputUnread { read: u64, limit: u64 },
    /// A host call's arguments over the most the host reads from a tool,
    /// refused unread.
    #[error(
        "a host call's arguments of more than {} exceed the host call limit of {}",
        format_size(*read),
        format_size(*limit)
    )]
    HostCallUnread { read: u64, limit: u64 },
}

impl LimitExceeded {
    /// Short name used in audit outcomes, e.g. `deadline`.
    pub fn name(&self) -> &'static str {
        match self {
            LimitExceeded::Deadline { .. } => "deadline",
            LimitExceeded::Memory { .. } => "memory",
            LimitExceeded::Stack => "stack",
            LimitExceeded::Stdio { stream, .. } => stream,
            LimitExceeded::Output { .. } | LimitExceeded::OutputUnread { .. } => "output",
            LimitExceeded::HostCallUnread { .. } => "host-call",
        }
    }
}

impl From<OutputFlood> for LimitExceeded {
    fn from(f: OutputFlood) -> Self {
        LimitExceeded::Stdio {
            stream: f.stream,
            limit: f.limit,
        }
    }
}

/// Why a component was refused for its signature.
#[derive(Debug, thiserror::Error)]
#[error(
    "tool '{tool}' refused before it was compiled: {component} must be signed by {expected}, but {found}"
)]
pub struct Unsigned {
    pub tool: String,
    pub component: ComponentSource,
    /// The refused bytes' identity.
    pub identity: Identity,
    pub expected: String,
    pub found: String,
}
