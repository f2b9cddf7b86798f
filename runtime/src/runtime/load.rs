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

/// The most bytes of a name or version in a tool's `describe`.
const MOST_NAME: usize = 128;
/// The most bytes of a description (the tool's, a handle's).
const MOST_DESCRIPTION: usize = 8 << 10;
/// The most handles a tool may describe.
const MOST_HANDLES: usize = 64;
/// The most bytes of a schema's JSON text.
const MOST_SCHEMA: usize = 1 << 20;

/// Refuses what a tool's `describe` says that would mislead a person
/// reading it (`tools/list` in a client, `warden describe`) or that every
/// client would be handed at length: a name, version or description with
/// a character a person would not see as itself (a control character, a
/// bidirectional override, a zero-width one; a description may break
/// lines and hold tabs), or text past its size. Names the field and
/// what was expected.
pub(super) fn check_described(
    info: &crate::bindings::exports::warden::tool::guest::ToolInfo,
) -> Result<(), String> {
    let text = |field: &str, value: &str, most: usize, lines: bool| {
        if value.len() > most {
            return Err(format!(
                "describe() returned a {field} of {} bytes (at most {most})",
                value.len()
            ));
        }
        match misread(value, lines) {
            Some((at, c)) => Err(format!(
                "describe() returned a {field} with {} at byte {at} (expected text a person \
                 sees as it is: no control, bidirectional or invisible characters)",
                c.escape_unicode()
            )),
            None => Ok(()),
        }
    };
    text("name", &info.name, MOST_NAME, false)?;
    text("version", &info.version, MOST_NAME, false)?;
    text("description", &info.description, MOST_DESCRIPTION, true)?;
    if info.handles.len() > MOST_HANDLES {
        return Err(format!(
            "describe() returned {} handles (at most {MOST_HANDLES})",
            info.handles.len()
        ));
    }
    for h in &info.handles {
        text("handle name", &h.name, MOST_NAME, false)?;
        text("handle description", &h.description, MOST_DESCRIPTION, true)?;
    }
    let schemas = [Some(&info.input_schema), info.output_schema.as_ref()];
    for (which, schema) in ["input", "output"].iter().zip(schemas) {
        if let Some(schema) = schema.filter(|s| s.len() > MOST_SCHEMA) {
            return Err(format!(
                "describe() returned an {which} schema of {} bytes (at most {MOST_SCHEMA})",
                schema.len()
            ));
        }
    }
    Ok(())
}

/// Refuses text in a schema `describe` returned that a person would
/// misread (each of its keys and strings, as [`check_described`] checks
/// the description; a `pattern` and the keys of `patternProperties` are
/// expressions, not text): clients hand a tool's schemas to people and
/// models as they are (serde_json escapes only C0 controls). Names where,
/// as a JSON pointer.
pub(super) fn check_schema_text(schema: &serde_json::Value, which: &str) -> Result<(), String> {
    let mut at = Vec::new();
    match schema_text(schema, &mut at, Place::Schema) {
        Ok(()) => Ok(()),
        Err((what, (byte, c))) => {
            // A `patternProperties` key on the way is not checked: escaped.
            let pointer: String = at.iter().map(|t| format!("/{t}")).collect();
            let pointer = crate::redact::escape_control(&pointer);
            Err(format!(
                "describe() returned an {which} schema with {} at byte {byte} of {what} at {} \
                 (expected text a person sees as it is: no control, bidirectional or invisible \
                 characters)",
                c.escape_unicode(),
                crate::policy::gate::cut(if pointer.is_empty() { "/" } else { &pointer }, 200)
            ))
        }
    }
}

/// Where a value sits in a schema, as [`schema_text`] walks it.
#[derive(Clone, Copy, PartialEq)]
enum Place {
    /// A schema: its keys are keywords.
    Schema,
    /// A map of schemas by name (`properties`, `$defs`); `expressions`:
    /// the names are regular expressions (`patternProperties`).
    Schemas { expressions: bool },
    /// A list of schemas (`allOf`, `prefixItems`).
    List,
    /// A regular expression (`pattern`): not text, not checked.
    Expression,
    /// Anything else (`const`, `enum`, `default`, `examples`, unknown
    /// keywords): data, every key and string checked.
    Data,
}

/// Where the value of a schema's keyword `key` sits.
fn place_of(key: &str, value: &serde_json::Value) -> Place {
    let schemas = |value: &serde_json::Value| match value {
        serde_json::Value::Array(_) => Place::List,
        _ => Place::Schema,
    };
    match key {
        "pattern" => Place::Expression,
        "patternProperties" => Place::Schemas { expressions: true },
        "properties" | "$defs" | "definitions" | "dependentSchemas" | "dependencies" => {
            Place::Schemas { expressions: false }
        }
        "allOf" | "anyOf" | "oneOf" | "prefixItems" => Place::List,
        "items" | "additionalItems" => schemas(value),
        "additionalProperties"
        | "unevaluatedProperties"
        | "unevaluatedItems"
        | "not"
        | "if"
        | "then"
        | "else"
        | "contains"
        | "propertyNames"
        | "contentSchema" => Place::Schema,
        _ => Place::Data,
    }
}

/// Walks `value` depth first, `at` the JSON pointer's tokens to it (only
/// built into text when something is refused), `place` where it sits: a
/// `pattern` and the names of `patternProperties` are exempt where they
/// are keywords, not where they are data (`{"default": {"pattern": …}}`).
fn schema_text(
    value: &serde_json::Value,
    at: &mut Vec<String>,
    place: Place,
) -> Result<(), (&'static str, (usize, char))> {
    use serde_json::Value;
    match value {
        Value::String(text) if place != Place::Expression => match misread(text, true) {
            Some(found) => Err(("a string", found)),
            None => Ok(()),
        },
        Value::Array(items) => {
            let inner = match place {
                Place::List | Place::Schemas { .. } => Place::Schema,
                _ => Place::Data,
            };
            for (i, item) in items.iter().enumerate() {
                at.push(i.to_string());
                schema_text(item, at, inner)?;
                at.pop();
            }
            Ok(())
        }
        Value::Object(map) => {
            for (key, item) in map {
                let (exempt, inner) = match place {
                    Place::Schema => (false, place_of(key, item)),
                    Place::Schemas { expressions } => (expressions, Place::Schema),
                    _ => (false, Place::Data),
                };
                if !exempt && let Some(found) = misread(key, false) {
                    return Err(("a key", found));
                }
                at.push(key.replace('~', "~0").replace('/', "~1"));
                schema_text(item, at, inner)?;
                at.pop();
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The first character of `text` a person would not see as itself, with
/// its byte: [`crate::redact::hidden`], but in running text (`lines`) a
/// line break, a tab, and what joins and styles emoji (U+200D, U+FE0E,
/// U+FE0F: `👩‍💻`, `❤️`).
fn misread(text: &str, lines: bool) -> Option<(usize, char)> {
    let allowed =
        |c: char| lines && matches!(c, '\n' | '\t' | '\r' | '\u{200d}' | '\u{fe0e}' | '\u{fe0f}');
    text.char_indices()
        .find(|(_, c)| crate::redact::hidden(*c) && !allowed(*c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::exports::warden::tool::guest::{HandleSpec, ToolInfo};
    use crate::bindings::warden::tool::fs::Rights;

    fn info() -> ToolInfo {
        ToolInfo {
            name: "t".into(),
            version: "1.0".into(),
            description: "Counts lines.\n\tIn every file.".into(),
            input_schema: "{}".into(),
            output_schema: None,
            handles: vec![HandleSpec {
                name: "repo".into(),
                rights: Rights::READ,
                description: "the repository".into(),
            }],
        }
    }

    #[test]
    fn schema_text_is_seen_as_it_is() {
        let ok = serde_json::json!({"properties": {"path": {
            "description": "A path.\r\n\tRelative. \u{2764}\u{fe0f} \u{1f469}\u{200d}\u{1f4bb}",
            "enum": ["a", "b"], "pattern": "^[^\u{0}-\u{1f}]*$"}},
            "patternProperties": {"^\u{1}": {}}});
        assert_eq!(check_schema_text(&ok, "input"), Ok(()));
        let e = check_schema_text(
            &serde_json::json!({"properties": {"p": {"title": "x\u{e0041}"}}}),
            "input",
        )
        .unwrap_err();
        assert_eq!(
            e,
            "describe() returned an input schema with \\u{e0041} at byte 1 of a string at \
             /properties/p/title (expected text a person sees as it is: no control, \
             bidirectional or invisible characters)"
        );
        let e = check_schema_text(
            &serde_json::json!({"properties": {"a/\u{202e}b": {}}}),
            "output",
        )
        .unwrap_err();
        assert!(
            e.starts_with("describe() returned an output schema with \\u{202e} at byte 2 of a key at /properties "),
            "{e}"
        );
        // A `patternProperties` key is an expression, not checked: on the
        // way to what is refused, it is named escaped.
        let e = check_schema_text(
            &serde_json::json!({"patternProperties": {"\u{1b}[2J\u{202e}": {"title": "\u{85}"}}}),
            "input",
        )
        .unwrap_err();
        assert!(
            e.contains("at /patternProperties/\\u{1b}[2J\\u{202e}/title "),
            "{e}"
        );
        assert!(!e.contains(['\u{1b}', '\u{202e}']), "{e}");
        // Exempt where they are keywords, not where they are data.
        let ok = serde_json::json!({"$defs": {"a": {"pattern": "\u{1}",
            "patternProperties": {"\u{1}": {}}}},
            "allOf": [{"items": {"pattern": "\u{1}"}}]});
        assert_eq!(check_schema_text(&ok, "input"), Ok(()));
        for (data, at) in [
            (
                serde_json::json!({"default": {"pattern": "\u{202e}"}}),
                "/default/pattern",
            ),
            (
                serde_json::json!({"examples": [{"pattern": "\u{202e}"}]}),
                "/examples/0/pattern",
            ),
            (
                serde_json::json!({"x-meta": {"patternProperties": {"\u{202e}": 1}}}),
                "/x-meta/patternProperties ",
            ),
            (
                serde_json::json!({"properties": {"pattern": {"title": "\u{202e}"}}}),
                "/properties/pattern/title",
            ),
        ] {
            let e = check_schema_text(&data, "input").unwrap_err();
            assert!(e.contains(&format!("at {at}")), "{e}");
        }
    }

    #[test]
    fn describe_text_is_bounded_and_seen_as_it_is() {
        assert_eq!(check_described(&info()), Ok(()));
        let refused = |change: &dyn Fn(&mut ToolInfo)| {
            let mut i = info();
            change(&mut i);
            check_described(&i).unwrap_err()
        };
        let e = refused(&|i| i.name = "t\n".into());
        assert!(
            e.starts_with("describe() returned a name with \\u{a} at byte 1"),
            "{e}"
        );
        let e = refused(&|i| i.version = "1\u{200b}".into());
        assert!(e.contains("a version with \\u{200b} at byte 1"), "{e}");
        let e = refused(&|i| i.handles[0].description = "r\u{9b}31m".into());
        assert!(
            e.contains("a handle description with \\u{9b} at byte 1"),
            "{e}"
        );
        let e = refused(&|i| i.description = "x".repeat(MOST_DESCRIPTION + 1));
        assert_eq!(
            e,
            "describe() returned a description of 8193 bytes (at most 8192)"
        );
        let e = refused(&|i| i.handles = vec![i.handles[0].clone(); MOST_HANDLES + 1]);
        assert_eq!(e, "describe() returned 65 handles (at most 64)");
        let e = refused(&|i| i.output_schema = Some(" ".repeat(MOST_SCHEMA + 1)));
        assert_eq!(
            e,
            "describe() returned an output schema of 1048577 bytes (at most 1048576)"
        );
    }
}
