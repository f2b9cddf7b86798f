//! Workload identity tokens for this invocation.
//!
//! ```ignore
//! let token = warden_tool::identity::token("https://api.example.com")?;
//! ```
//!
//! The token is a host-signed JWT naming the tool (`sub`, its component
//! digest), the task and the invocation; it expires by the invocation's
//! deadline and is reported inactive as soon as the invocation returns.

use crate::bindings::warden::tool::identity as wit;

/// An error from the host's identity capability.
pub type Error = wit::Error;

/// A token for `audience`, which the manifest must list for this tool.
pub fn token(audience: &str) -> Result<String, Error> {
    wit::token(audience)
}
