//! Loading a tool: fetch its bytes (`source::fetch`: a file, or a registry
//! through the blob cache), check its identity, compile (or take it from
//! the cache), link, and open its fs ceilings — once per tool and process.

use super::{CompileEvent, Inner, Runtime};
use crate::audit::{Auditor, Event};
use crate::bindings::ToolPre;
use crate::caps::fs::Ceilings;
use crate::engine;
use crate::error::Error;
use crate::identity::Identity;
use crate::manifest::{SignedBy, ToolSpec};
use crate::oci::OciError;
use crate::policy::cedar::ToolFacts;
use crate::provenance::{self, ProvenanceError};
use crate::source::{self, FetchError, Fetched};
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
    /// Who signed the component, when the manifest requires a signature.
    pub(super) signer: Option<Arc<str>>,
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

impl LoadedTool {
    /// Instantiates the tool in `store` and calls its `invoke`.
    pub(super) async fn call(
        &self,
        store: &mut wasmtime::Store<HostState>,
        input: &str,
    ) -> wasmtime::Result<Result<String, crate::bindings::exports::warden::tool::guest::ToolError>>
    {
        let t = self.pre.instantiate_async(&mut *store).await?;
        t.warden_tool_guest().call_invoke(&mut *store, input).await
    }
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
                    // Fetching may wait on a registry; compiling is CPU
                    // work, on a blocking thread. Boxed: a pull's future
                    // (its requests, their time limits) would size every
                    // invocation's, though it runs once a tool.
                    let fetched = Box::pin(source::fetch(
                        &inner.sources,
                        &spec.component,
                        spec.identity.as_ref(),
                    ))
                    .await
                    .map_err(|e| fetch_error(&spec, e))?;
                    tokio::task::spawn_blocking(move || inner.compile(spec, fetched))
                        .await
                        .map_err(|e| Error::Host(format!("compile task failed: {e}")))?
                        .map(Arc::new)
                }
            })
            .await
            .cloned()
            .inspect_err(|e| self.inner.audit_refused(tool, e))
    }
}

impl Inner {
    /// A component refused before it was compiled (its identity pin or
    /// its signature) goes on the trail: a `decision` denying
    /// `component`/`load`, with the refused bytes' identity. Each attempt
    /// is recorded (a refused load is not kept).
    fn audit_refused(&self, tool: &str, e: &Error) {
        let (identity, component, rule) = match e {
            Error::IdentityMismatch { actual, path, .. } => (actual, path, "identity"),
            Error::Unsigned(u) => (&u.identity, &u.component, "signed-by"),
            _ => return,
        };
        let id = self.ids.next();
        let auditor = Auditor::new(self.audit.clone(), &id, "", tool, &identity.to_string());
        let mut r = auditor.record(Event::Decision);
        r.capability = Some("component".into());
        r.action = Some("load".into());
        r.resource = Some(component.to_string());
        r.decision = Some("deny".into());
        r.rule = Some(rule.into());
        r.reason = Some(e.to_string());
        if let Err(err) = auditor.write(&r) {
            tracing::error!("cannot record the refused load of '{tool}': {err}");
        }
    }

    pub(super) fn slot(&self, tool: &str) -> Result<&ToolSlot, Error> {
        self.tools.get(tool).ok_or_else(|| Error::UnknownTool {
            name: tool.to_owned(),
            known: self.tools.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }

    fn compile(&self, spec: ToolSpec, fetched: Fetched) -> Result<LoadedTool, Error> {
        let component_err = |reason: String| Error::Component {
            path: spec.component.clone(),
            reason,
        };
        let bytes = fetched.bytes;
        if let Some(reason) = engine::sniff(&bytes) {
            return Err(component_err(reason.into()));
        }
        let identity = Identity::of(&bytes);
        if identity != fetched.identity {
            return Err(component_err(format!(
                "its bytes hash to {identity}, not to the {} they were fetched as",
                fetched.identity
            )));
        }
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
        verify_origin(&spec, fetched.oci.as_ref())?;
        let signer = check_signature(&spec, &bytes, &identity, fetched.oci.as_ref())?;
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
            signer,
            pre,
            ceilings,
            described: OnceCell::new(),
        })
    }
}

/// Why `spec`'s bytes could not be had, as the library's error: a file that
/// cannot be read or bytes a registry should not have sent are the
/// component's fault (usage), a registry that cannot be reached is the
/// host's.
fn fetch_error(spec: &ToolSpec, e: FetchError) -> Error {
    let component = |reason: String| Error::Component {
        path: spec.component.clone(),
        reason,
    };
    match e {
        FetchError::Read(e) => component(format!("cannot read the component: {e}")),
        FetchError::Oci(OciError::Pin {
            expected, actual, ..
        }) => Error::IdentityMismatch {
            tool: spec.name.clone(),
            path: spec.component.clone(),
            expected,
            actual,
        },
        FetchError::Oci(OciError::Invalid { reason, .. }) => component(reason),
        FetchError::Oci(e @ (OciError::NotCached { .. } | OciError::Cache { .. })) => {
            Error::NotCached(e.to_string())
        }
        FetchError::Oci(e @ OciError::Registry { .. }) => Error::Registry(e.to_string()),
    }
}

/// Logs where a registry component came from. Its digests were checked by
/// the pull; its signature, when the manifest requires one, is checked
/// next, by `check_signature`, before anything is compiled.
fn verify_origin(_spec: &ToolSpec, origin: Option<&source::OciOrigin>) -> Result<(), Error> {
    if let Some(origin) = origin {
        tracing::debug!(
            reference = %origin.reference,
            manifest = %origin.manifest_digest,
            from_cache = origin.from_cache,
            "component from a registry"
        );
    }
    Ok(())
}

/// Checks `spec`'s component (`bytes`, from `origin` when it came from a
/// registry) against its manifest entry's `signed-by`, before it is
/// compiled; returns the signer the audit trail names, if one is required.
fn check_signature(
    spec: &ToolSpec,
    bytes: &[u8],
    identity: &Identity,
    origin: Option<&source::OciOrigin>,
) -> Result<Option<Arc<str>>, Error> {
    let Some(signed_by) = &spec.signed_by else {
        return Ok(None);
    };
    let refuse = |found: String| {
        Error::Unsigned(Box::new(crate::error::Unsigned {
            tool: spec.name.clone(),
            component: spec.component.clone(),
            identity: identity.clone(),
            expected: signed_by.to_string(),
            found,
        }))
    };
    let read = |path: &std::path::Path, max, what| {
        provenance::read_bounded(path, max, what).map_err(|e| {
            let what = what.trim_start_matches("the ");
            refuse(format!("found no usable {what} at {}: {e}", path.display()))
        })
    };
    match (signed_by, origin, &spec.signature) {
        // The chain key -> payload -> manifest digest -> layer -> bytes:
        // see `oci::signatures::verify`.
        (SignedBy::Key(key), Some(origin), _) => {
            crate::oci::signatures::verify(key, &origin.signatures, &origin.manifest_digest)
                .map_err(refuse)?;
        }
        // `warden check` refuses this pairing; kept closed here too.
        (SignedBy::Identity(_), Some(_), _) => {
            return Err(refuse(
                "a registry component, whose keyless signatures are not checked".into(),
            ));
        }
        (_, None, None) => return Err(refuse("no signature file is named".into())),
        (SignedBy::Key(key), None, Some(path)) => {
            let sig = read(path, provenance::MAX_SIGNATURE, "the signature")?;
            key.verify(bytes, &sig).map_err(|e| {
                refuse(format!(
                    "the signature at {} {}",
                    path.display(),
                    mismatch_text(&e)
                ))
            })?;
        }
        (SignedBy::Identity(keyless), None, Some(path)) => {
            let bundle = read(path, provenance::MAX_BUNDLE, "the bundle")?;
            keyless
                .verify(bytes, identity, &bundle)
                .map_err(|reason| refuse(format!("the bundle at {} {reason}", path.display())))?;
        }
    }
    Ok(Some(Arc::from(match signed_by {
        SignedBy::Key(key) => format!("key:{}", key.fingerprint),
        SignedBy::Identity(keyless) => keyless.signer(),
    })))
}

/// A verification failure, worded to follow "the signature at X".
fn mismatch_text(e: &ProvenanceError) -> String {
    match e {
        ProvenanceError::Mismatch { reason, .. } => format!("does not verify: {reason}"),
        other => format!("cannot be used: {other}"),
    }
}
