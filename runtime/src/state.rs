//! What one invocation's store holds.

use crate::caps::deploy::DeployView;
use crate::caps::fs::{FsCtx, FsView};
use crate::caps::http::HttpView;
use crate::caps::http::egress::Egress;
use crate::caps::identity::IdentityView;
use crate::caps::log::{LogLimits, LogState, LogView};
use crate::caps::secrets::{SecretsCtx, SecretsView};
use crate::policy::gate::Gate;
use crate::redact::Redactor;
use std::sync::Arc;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// What one invocation was granted, resolved and ready to use.
pub(crate) struct Authority {
    pub(crate) minter: Arc<crate::caps::identity::Minter>,
    pub(crate) fs: FsCtx,
    pub(crate) secrets: SecretsCtx,
    pub(crate) redactor: Arc<Redactor>,
    pub(crate) egress: Egress,
    pub(crate) deploy: Vec<crate::caps::deploy::DeployTarget>,
}

/// One invocation's store: the gate every host call passes, and each
/// capability's context beside it.
pub(crate) struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    /// The one way a host call reaches its operation.
    pub(crate) gate: Gate,
    pub(crate) fs: FsCtx,
    pub(crate) secrets: SecretsCtx,
    /// Egress rules of this invocation (grant within ceiling).
    pub(crate) egress: Egress,
    /// The `http` capability's requests, each on a task of its own: the
    /// invocation aborts and awaits them, and `wasi:http`'s, before its end
    /// is recorded ([`HostState::stop_requests`]).
    pub(crate) requests: crate::caps::http::Requests,
    /// Standard `wasi:http`, under the same egress check and gate.
    pub(crate) http_ctx: wasmtime_wasi_http::WasiHttpCtx,
    /// Built on the first `wasi:http` call (most tools make none).
    pub(crate) http_hooks: Option<crate::caps::http::wasi::EgressHooks>,
    /// Mints this invocation's identity tokens.
    pub(crate) minter: Arc<crate::caps::identity::Minter>,
    /// Deploy targets of this invocation.
    pub(crate) deploy: Vec<crate::caps::deploy::DeployTarget>,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) log_limits: LogLimits,
    pub(crate) log: LogState,
}

impl HostState {
    /// Aborts every request still running, through either interface, and
    /// waits until each task is gone.
    pub(crate) async fn stop_requests(&mut self) {
        self.requests.stop().await;
        if let Some(hooks) = &mut self.http_hooks {
            hooks.requests.stop().await;
        }
    }
}

// Each capability's view of the store: its own context, the table when it
// holds guest resources, and the gate.

impl crate::caps::fs::FsStore for HostState {
    fn fs(&mut self) -> FsView<'_> {
        FsView {
            ctx: &self.fs,
            table: &mut self.table,
            gate: &self.gate,
        }
    }
}

impl crate::caps::secrets::SecretsStore for HostState {
    fn secrets(&mut self) -> SecretsView<'_> {
        SecretsView {
            ctx: &mut self.secrets,
            table: &mut self.table,
            gate: &self.gate,
        }
    }
}

impl crate::caps::http::HttpStore for HostState {
    fn http(&mut self) -> HttpView<'_> {
        HttpView {
            egress: &self.egress,
            secrets: &mut self.secrets,
            table: &mut self.table,
            gate: &self.gate,
            requests: &mut self.requests,
        }
    }
}

impl crate::caps::identity::IdentityStore for HostState {
    fn identity(&mut self) -> IdentityView<'_> {
        IdentityView {
            minter: &self.minter,
            gate: &self.gate,
        }
    }
}

impl crate::caps::deploy::DeployStore for HostState {
    fn deploy(&mut self) -> DeployView<'_> {
        DeployView {
            targets: &self.deploy,
            fs: &self.fs,
            minter: &self.minter,
            gate: &self.gate,
        }
    }
}

impl crate::caps::log::LogStore for HostState {
    fn log(&mut self) -> LogView<'_> {
        LogView {
            state: &mut self.log,
            limits: self.log_limits,
            gate: &self.gate,
        }
    }
}

impl wasmtime_wasi_http::WasiHttpView for HostState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        let hooks = self
            .http_hooks
            .get_or_insert_with(|| crate::caps::http::wasi::EgressHooks {
                egress: self.egress.clone(),
                gate: self.gate.clone(),
                requests: crate::caps::http::Requests::default(),
                held: Default::default(),
            });
        wasmtime_wasi_http::WasiHttpCtxView {
            hooks,
            table: &mut self.table,
            ctx: &mut self.http_ctx,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The trap payload when a tool grows a memory past its limit.
#[derive(Debug, Clone, thiserror::Error)]
#[error("memory limit of {limit} bytes exceeded (its memories would have held {desired} bytes)")]
pub(crate) struct MemoryExceeded {
    pub(crate) limit: usize,
    pub(crate) desired: usize,
}

/// Caps the tool's linear memories, summed, at its `memory` limit: a
/// component may hold several (a module may declare two, and a component
/// may instantiate many modules), and each counted alone would let it use
/// the limit as many times over.
pub(crate) struct MemoryLimiter {
    pub(crate) limit: usize,
    /// The bytes of every memory of the store so far.
    pub(crate) used: usize,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: usize) -> MemoryLimiter {
        MemoryLimiter { limit, used: 0 }
    }
}

/// Table elements per table; far above what compilers emit.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl ResourceLimiter for MemoryLimiter {
    /// Called as each memory is created (`current` 0) and grown, before
    /// wasmtime checks the memory's own declared maximum: a growth past
    /// that fails without being charged.
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if max.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        let total = (self.used.saturating_sub(current)).saturating_add(desired);
        if total > self.limit {
            return Err(wasmtime::Error::new(MemoryExceeded {
                limit: self.limit,
                desired: total,
            }));
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

#[cfg(test)]
mod tests {
    use super::{MemoryExceeded, MemoryLimiter};
    use wasmtime::ResourceLimiter;

    const MIB: usize = 1 << 20;

    #[test]
    fn the_memory_limit_holds_for_the_memories_together() {
        let mut l = MemoryLimiter::new(64 * MIB);
        // Two memories created at 24 MiB each: 48 MiB in all.
        assert!(l.memory_growing(0, 24 * MIB, None).unwrap());
        assert!(l.memory_growing(0, 24 * MIB, None).unwrap());
        // One grows by 16 MiB: 64 MiB, the limit.
        assert!(l.memory_growing(24 * MIB, 40 * MIB, None).unwrap());
        // The other by one page more: past it, though each alone is under.
        let e = l
            .memory_growing(24 * MIB, 24 * MIB + 65536, None)
            .unwrap_err();
        let e = e
            .downcast_ref::<MemoryExceeded>()
            .expect("the limit's error");
        assert_eq!((e.limit, e.desired), (64 * MIB, 64 * MIB + 65536));
        // A third memory finds no room either, and the refusals took none.
        assert!(l.memory_growing(0, 65536, None).is_err());
        assert_eq!(l.used, 64 * MIB);
    }

    #[test]
    fn a_growth_past_a_memorys_own_maximum_fails_uncharged() {
        let mut l = MemoryLimiter::new(64 * MIB);
        assert!(l.memory_growing(0, MIB, Some(2 * MIB)).unwrap());
        // An allocator probing past the declared maximum: refused by it.
        for _ in 0..100 {
            assert!(!l.memory_growing(MIB, 3 * MIB, Some(2 * MIB)).unwrap());
        }
        assert_eq!(l.used, MIB);
        assert!(l.memory_growing(MIB, 2 * MIB, Some(2 * MIB)).unwrap());
    }

    #[test]
    fn one_memory_may_use_the_whole_limit() {
        let mut l = MemoryLimiter::new(64 * MIB);
        assert!(l.memory_growing(0, MIB, None).unwrap());
        assert!(l.memory_growing(MIB, 64 * MIB, None).unwrap());
        assert!(l.memory_growing(64 * MIB, 64 * MIB + 65536, None).is_err());
    }
}
