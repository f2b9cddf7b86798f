//! One module per capability: its configuration, its checks, its view of
//! the store and its host implementation side by side. Each host call goes
//! through the gate ([`crate::policy::gate`]).

pub mod deploy;
pub mod fs;
pub(crate) mod group;
pub mod http;
pub mod identity;
pub mod log;
pub mod secrets;
pub mod stdio;

use wasmtime::component::Linker;

/// A store that gives each capability its view (the runtime's `HostState`,
/// in `state.rs`). A capability adds its `…Store` trait here.
pub(crate) trait Store:
    fs::FsStore
    + log::LogStore
    + secrets::SecretsStore
    + http::HttpStore
    + identity::IdentityStore
    + deploy::DeployStore
{
}

impl<T> Store for T where
    T: fs::FsStore
        + log::LogStore
        + secrets::SecretsStore
        + http::HttpStore
        + identity::IdentityStore
        + deploy::DeployStore
{
}

/// Links every capability's interface of the `tool` world, each to its own
/// view of the store. Adding a capability adds one line here.
pub(crate) fn add_to_linker<T: Store>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    fs::add_to_linker(linker)?;
    log::add_to_linker(linker)?;
    secrets::add_to_linker(linker)?;
    http::add_to_linker(linker)?;
    identity::add_to_linker(linker)?;
    deploy::add_to_linker(linker)?;
    Ok(())
}
