//! Deploying an artifact to a target the task was granted.
//!
//! ```ignore
//! let outcome = warden_tool::deploy::run("staging", "workspace", "dist/app.tar.gz")?;
//! ```

use crate::bindings::warden::tool::deploy as wit;
pub use wit::{ErrorCode, Outcome};

/// An error from the host's deploy capability.
pub type Error = wit::Error;

/// Deploys the file `artifact` under handle `handle` (which needs the read
/// right) to `target`.
pub fn run(target: &str, handle: &str, artifact: &str) -> Result<Outcome, Error> {
    wit::run(target, handle, artifact)
}
