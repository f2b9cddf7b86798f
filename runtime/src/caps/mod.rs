//! One module per capability: its configuration, its checks, its view of
//! the store and its host implementation side by side. Each host call goes
//! through the gate ([`crate::policy::gate`]).

pub mod deploy;
pub mod fs;
pub mod http;
pub mod identity;
pub mod log;
pub mod secrets;
pub mod stdio;

use crate::state::HostState;
use wasmtime::component::Linker;

/// Links every capability's interface of the `tool` world, each to its own
/// view of the store. Adding a capability adds one line here.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    fs::add_to_linker(linker)?;
    log::add_to_linker(linker)?;
    secrets::add_to_linker(linker)?;
    http::add_to_linker(linker)?;
    identity::add_to_linker(linker)?;
    deploy::add_to_linker(linker)?;
    Ok(())
}
