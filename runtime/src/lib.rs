//! Warden: a WebAssembly sandbox runtime for agent tools.
//!
//! Tools are Wasm components exporting the `tool` world in `wit/`. Each
//! invocation runs in a fresh store with exactly the authority its task's
//! [`Grant`] gives it — named directory handles with separate `read`, `write`
//! and `delete` rights — inside the ceiling security wrote in the
//! [`Manifest`]. Every host call passes one gate (`policy::gate`) and every
//! decision lands in the audit trail.
//!
//! ```no_run
//! # async fn demo() -> Result<(), warden::Error> {
//! use warden::{Grant, Manifest, Rights, Runtime, audit::FileSink};
//! use std::sync::Arc;
//!
//! let runtime = Runtime::builder()
//!     .manifest(Manifest::load("examples/manifest.toml")?)
//!     .audit(Arc::new(FileSink::open("audit.jsonl").map_err(|e| warden::Error::Config(e.to_string()))?))
//!     .build()?;
//! let grant = Grant::new("task-1").fs("workspace", "examples/workspace", Rights::READ);
//! let run = runtime.invoke("read-files", &grant, r#"{"paths":["README.md"]}"#).await?;
//! println!("{:?}", run.output);
//! # Ok(()) }
//! ```

pub mod agent;
pub mod approval;
pub mod audit;
pub mod auth;
mod bindings;
mod blocking;
pub mod caps;
pub mod console;
mod diag;
mod dirs;
pub mod engine;
mod error;
pub mod files;
pub mod grant;
pub mod identity;
pub mod keys;
pub mod manifest;
pub mod mcp;
pub mod net;
pub mod oci;
pub mod policy;
pub mod provenance;
pub mod redact;
pub mod rights;
mod runtime;
mod shape;
pub mod source;
mod state;
pub mod store;
pub mod telemetry;
pub mod units;

pub use agent::{Agent, AgentKind};
pub use bindings::VALUE_LOG_TARGETS;
pub use caps::identity::{Claims, Introspection, InvocationLedger, Issuer};
pub use diag::Waiver;
pub use error::{Error, ErrorClass, LimitExceeded, Unsigned};
pub use grant::{FsGrant, Grant, GrantError};
pub use identity::Identity;
pub use keys::{KeyPair, Verifier};
pub use manifest::{Limits, Manifest, ManifestError, ToolSpec};
pub use policy::Decision;
pub use rights::{Right, Rights};
pub use runtime::{
    CompileEvent, HandleSpec, Invocation, InvokeOptions, Runtime, RuntimeBuilder, ToolError,
    ToolErrorKind, ToolInfo,
};
pub use source::ComponentSource;

/// What `f` logs at `level` and above, as `tracing`'s default format writes
/// it (for tests of what reaches a log).
#[cfg(test)]
pub(crate) fn logged(level: tracing::Level, f: impl FnOnce()) -> String {
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(level)
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
}
