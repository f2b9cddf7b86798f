//! Loading a tool: read, check its identity, compile (or take it from the
//! cache), link, and open its fs ceilings — once per tool and process.

use super::{CompileEvent, Inner, Runtime};
use crate::bindings::ToolPre;
use crate::caps::fs::Ceilings;
use crate::engine;
use crate::error::Error;
use crate::identity::Identity;
use crate::manifest::ToolSpec;
use crate::policy::cedar::ToolFacts;
use crate::state::HostState;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::OnceCell;

pub(super) struct ToolSlot {
    pub(super) spec: ToolSpec,
    pub(super) loaded: OnceCell<Arc<LoadedTool>>,
}

/// A compiled, linked tool, ready to instantiate.
pub(super) struct LoadedTool {
    pub(super) spec: ToolSpec,
    pub(super) identity: Identity,
    /// The tool's name and `identity` as text, computed once.
    pub(super) name: Arc<str>,
    pub(super) identity_str: Arc<str>,
    pub(super) pre: ToolPre<HostState>,
    pub(super) ceilings: Ceilings,
    /// The tool as runtime policy sees it.
    pub(super) facts: Arc<ToolFacts>,
    /// Its `describe`, asked on first need (`Runtime::described`).
    pub(super) described: OnceCell<Described>,
}

/// What a tool's `describe` said, and the contract its schemas make.
pub(super) struct Described {
    pub(super) info: super::ToolInfo,
    pub(super) contract: super::contract::Contract,
}

impl Runtime {
    /// The tool named `tool`, compiled and linked on first use.
    pub(super) async fn loaded(&self, tool: &str) -> Result<Arc<LoadedTool>, Error> {
        let slot = self.inner.slot(tool)?;
        slot.loaded
            .get_or_try_init(|| {
                let inner = self.inner.clone();
                let spec = slot.spec.clone();
                async move {
                    tokio::task::spawn_blocking(move || inner.compile(spec))
                        .await
                        .map_err(|e| Error::Host(format!("compile task failed: {e}")))?
                        .map(Arc::new)
                }
            })
            .await
            .cloned()
    }
}

impl Inner {
    pub(super) fn slot(&self, tool: &str) -> Result<&ToolSlot, Error> {
        self.tools.get(tool).ok_or_else(|| Error::UnknownTool {
            name: tool.to_owned(),
            known: self.tools.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }

    fn compile(&self, spec: ToolSpec) -> Result<LoadedTool, Error> {
        let component_err = |reason: String| Error::Component {
            path: spec.component.clone(),
            reason,
        };
        let bytes = std::fs::read(&spec.component)
            .map_err(|e| component_err(format!("cannot read the component: {e}")))?;
        if let Some(reason) = engine::sniff(&bytes) {
            return Err(component_err(reason.into()));
        }
        let identity = Identity::of(&bytes);
        if let Some(pin) = &spec.identity
            && *pin != identity
        {
            return Err(Error::IdentityMismatch {
                tool: spec.name.clone(),
                path: spec.component.clone(),
                expected: pin.clone(),
                actual: identity,
            });
        }
        let cached = self
            .cache
            .as_ref()
            .and_then(|c| c.load(&self.engine, &identity));
        let component = match cached {
            Some(c) => c,
            None => {
                let hook = |e| self.on_compile.as_ref().map(|h| h(e));
                hook(CompileEvent::Started {
                    tool: spec.name.clone(),
                    identity: identity.clone(),
                });
                let started = Instant::now();
                let c = wasmtime::component::Component::new(&self.engine, &bytes)
                    .map_err(|e| component_err(format!("invalid component: {e:#}")))?;
                hook(CompileEvent::Finished {
                    tool: spec.name.clone(),
                    identity: identity.clone(),
                    elapsed: started.elapsed(),
                });
                if let Some(cache) = &self.cache {
                    cache.store(&identity, &c);
                }
                c
            }
        };
        let pre = self.linker.instantiate_pre(&component).map_err(|e| {
            component_err(format!(
                "cannot be linked: {e:#} (a tool may import only the warden:tool world and WASI 0.2)"
            ))
        })?;
        let pre = ToolPre::new(pre).map_err(|e| {
            component_err(format!(
                "does not export the warden:tool/guest interface: {e:#}"
            ))
        })?;
        let ceilings = Ceilings::open(&spec.fs)
            .map_err(|e| Error::Host(format!("tool '{}': {e}", spec.name)))?;
        Ok(LoadedTool {
            facts: Arc::new(ToolFacts {
                name: spec.name.clone(),
                identity: identity.to_string(),
                labels: spec.labels.clone(),
            }),
            name: spec.name.as_str().into(),
            spec,
            identity_str: identity.to_string().into(),
            identity,
            pre,
            ceilings,
            described: OnceCell::new(),
        })
    }
}
