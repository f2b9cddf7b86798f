//! The secrets section of a tool's manifest entry: `[[tools.NAME.secrets]]`,
//! one secret the tool may be granted and where it may be sent.

use super::{SecretSource, SecretSpec};
use crate::diag::{Checker, check_name};
use crate::net;
use serde::Deserialize;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawSecret {
    name: Spanned<String>,
    source: Spanned<String>,
    ttl: Option<Spanned<String>>,
    #[serde(default)]
    reveal: bool,
    #[serde(default)]
    send_to: Vec<Spanned<String>>,
    approval: Option<Spanned<String>>,
    labels: Option<Spanned<Vec<String>>>,
}

impl RawSecret {
    /// The secret's name, and where the manifest gives it.
    pub(crate) fn name_at(&self) -> (String, Range<usize>) {
        (self.name.get_ref().clone(), self.name.span())
    }
}

/// Each secret a manifest declares: its tool, its index in the tool's
/// list, its name and where the name is.
pub(crate) type Declared = Vec<(String, usize, String, Range<usize>)>;

/// A secret's name is one secret across the manifest, as a task's grant
/// and its history name it: two tools' secrets of one name with another
/// source or send-to are refused. The history notes a secret revealed by
/// its name, and a policy holding a task's egress to the send-to of what
/// it revealed reads the calling tool's send-to under that name: another
/// tool's value revealed under the name would pass as this one's.
pub(crate) fn one_per_name<'a>(
    c: &mut Checker,
    declared: &Declared,
    specs: impl Fn(&str) -> Option<&'a [SecretSpec]>,
) {
    let mut first: std::collections::HashMap<&str, (&str, &SecretSpec)> = Default::default();
    for (tool, i, name, span) in declared {
        let Some(spec) = specs(tool).and_then(|all| all.iter().find(|s| &s.name == name)) else {
            continue;
        };
        match first.get(name.as_str()) {
            None => {
                first.insert(name, (tool, spec));
            }
            Some((other, was)) if differs(was, spec) => c.problem(
                span.clone(),
                format!("tools.{tool}.secrets[{i}].name"),
                not_one(name, other),
            ),
            Some(_) => {}
        }
    }
}

/// Whether two secrets of one name are two secrets: another source, or
/// another send-to (in any order).
pub(crate) fn differs(a: &SecretSpec, b: &SecretSpec) -> bool {
    fn set(s: &SecretSpec) -> std::collections::BTreeSet<&String> {
        s.send_to.iter().collect()
    }
    a.source != b.source || set(a) != set(b)
}

/// Why secret `name` here is refused, as `other`'s of that name differs.
pub(crate) fn not_one(name: &str, other: &str) -> String {
    format!(
        "secret '{name}' has another source or send-to here than in tool '{other}': a task's \
         grant and its history name a secret by its name, so a name is one secret across the \
         manifest (expected the same source and send-to, or another name)"
    )
}

/// Where a secret's `file:` source is, or the program an `exec:` source
/// runs (relative to the manifest, and to the working directory it is run
/// from; a bare name where `PATH` finds it), with the source's span and
/// what it is: the manifest keeps them out of every fs ceiling
/// ([`in_ceiling`]).
pub(crate) fn source_paths(
    raw: &RawSecret,
    base: &Path,
) -> Option<(Range<usize>, Vec<PathBuf>, &'static str)> {
    let source = SecretSource::parse(raw.source.get_ref(), base).ok()?;
    let (paths, what) = source_locations(&source, Some(base))?;
    Some((raw.source.span(), paths, what))
}

/// Where `source` reads from on the host, and what it is, for the fs
/// ceiling check: a file, or the program an `exec:` source runs (a relative
/// one also from `base`). `None` for the other kinds.
pub(crate) fn source_locations(
    source: &SecretSource,
    base: Option<&Path>,
) -> Option<(Vec<PathBuf>, &'static str)> {
    Some(match source {
        SecretSource::File(path) => (vec![path.clone()], "secret file"),
        SecretSource::Exec { program, .. } if program.contains('/') => {
            let mut at: Vec<PathBuf> = base.map(|b| b.join(program)).into_iter().collect();
            at.extend(std::env::current_dir().ok().map(|d| d.join(program)));
            (at, "secret program")
        }
        SecretSource::Exec { program, .. } => {
            let path = std::env::var_os("PATH").unwrap_or_default();
            let found = std::env::split_paths(&path)
                .map(|d| d.join(program))
                .find(|p| p.is_file());
            (found.into_iter().collect(), "secret program")
        }
        _ => return None,
    })
}

/// The fs ceiling (tool, handle, directory) among `ceilings` that holds
/// `path` or any directory on its way, each resolved but for its own name
/// (a link inside a ceiling, replaced by the tool, would lead elsewhere; a
/// directory not yet made, the tool could make). A tool granted that
/// handle could read the value or replace it, with no grant of the
/// secret, no reveal decision and no approval.
pub(crate) fn in_ceiling<'t>(
    path: &Path,
    ceilings: impl IntoIterator<Item = (&'t str, &'t str, &'t Path)>,
) -> Option<(&'t str, &'t str, &'t Path)> {
    /// `p` as its deepest existing ancestor resolves, the rest appended.
    fn resolved(p: &Path) -> Option<PathBuf> {
        p.canonicalize()
            .ok()
            .or_else(|| Some(resolved(p.parent()?)?.join(p.file_name()?)))
    }
    let ceilings: Vec<_> = ceilings.into_iter().collect();
    // A manifest loaded by a relative name has a relative base.
    let path = &std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut on_the_way = resolved(path)
        .into_iter()
        .chain(path.ancestors().filter_map(|a| {
            let name = a.file_name()?;
            Some(resolved(a.parent()?)?.join(name))
        }));
    on_the_way.find_map(|place| {
        (ceilings.iter().copied()).find(|(_, _, within)| place.starts_with(within))
    })
}

/// Validates `tools.{tool}.secrets[{i}]`; a `file:` source is resolved
/// against `base`, and `seen` are the secrets already accepted.
pub(crate) fn section(
    c: &mut Checker<'_>,
    tool: &str,
    i: usize,
    raw: RawSecret,
    base: &Path,
    seen: &[SecretSpec],
) -> Option<SecretSpec> {
    let before = c.count();
    let f = |k: &str| format!("tools.{tool}.secrets[{i}].{k}");
    let name = raw.name.get_ref().clone();
    if let Err(e) = check_name(&name) {
        c.problem(
            raw.name.span(),
            f("name"),
            format!("invalid secret name: {e}"),
        );
    } else if name == crate::redact::HANDED_OUT || name == crate::redact::DEPLOY_TOKEN {
        // The names identity tokens are redacted under: a secret by one
        // would be taken for one (responses are read whole only while a
        // secret is held), and its marker would read as one's.
        c.problem(
            raw.name.span(),
            f("name"),
            format!("secret name '{name}' is reserved for identity tokens (expected another name)"),
        );
    } else if seen.iter().any(|s| s.name == name) {
        c.problem(
            raw.name.span(),
            f("name"),
            format!("secret '{name}' is listed twice (expected one entry per secret)"),
        );
    }
    let source = SecretSource::parse(raw.source.get_ref(), base)
        .map_err(|e| c.problem(raw.source.span(), f("source"), e))
        .ok();
    let ttl = raw
        .ttl
        .as_ref()
        .and_then(|t| c.duration(t, f("ttl"), "ttl"));
    for dest in &raw.send_to {
        if let Err(e) = net::parse_origin(dest.get_ref()) {
            c.problem(dest.span(), f("send-to"), net::destination_problem(&e));
        }
    }
    // Revealing a secret's value to the tool exposes it: a person approves
    // unless security waives it (by-reference use never reveals it).
    let exposes = format!("revealing secret '{name}'");
    let approval = c.approval(
        raw.approval,
        f("approval"),
        raw.reveal.then_some(exposes.as_str()),
    );
    let labels = c.labels(raw.labels, f("labels"));
    let source = source?;
    (c.count() == before).then(|| SecretSpec {
        approval,
        labels,
        name,
        source,
        ttl,
        reveal: raw.reveal,
        send_to: raw.send_to.into_iter().map(|d| d.into_inner()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use crate::manifest::{Manifest, ManifestError};
    use std::path::Path;
    use std::time::Duration;

    fn parse(text: &str, base: &Path) -> Result<Manifest, ManifestError> {
        Manifest::parse(text, Path::new("m.toml"), base)
    }

    fn fixture() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.wasm"), b"").unwrap();
        dir
    }

    #[test]
    fn secrets_section() {
        let dir = fixture();
        let m = parse(
            "[tools.t]\ncomponent = \"t.wasm\"\n[[tools.t.secrets]]\nname = \"api\"\nsource = \"env:API_TOKEN\"\nttl = \"2s\"\nsend-to = [\"https://api.example.com\"]\n",
            dir.path(),
        )
        .unwrap();
        let s = &m.tool("t").unwrap().secrets[0];
        assert_eq!(
            (s.name.as_str(), s.ttl, s.reveal),
            ("api", Some(Duration::from_secs(2)), false)
        );
        let err = parse(
            "[tools.t]\ncomponent = \"t.wasm\"\n[[tools.t.secrets]]\nname = \"api\"\nsource = \"ldap:x\"\nsend-to = [\"api.example.com\"]\n",
            dir.path(),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(
                "m.toml:5:10: tools.t.secrets[0].source: unknown secret source kind 'ldap'"
            ),
            "{msg}"
        );
        assert!(
            msg.contains("tools.t.secrets[0].send-to: invalid destination"),
            "{msg}"
        );
        let err = parse(
            "[tools.t]\ncomponent = \"t.wasm\"\n[[tools.t.secrets]]\nname = \"identity-token\"\nsource = \"env:X\"\n",
            dir.path(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("m.toml:4:8: tools.t.secrets[0].name: secret name 'identity-token' is reserved for identity tokens (expected another name)"),
            "{err}"
        );
        let err = parse(
            "[tools.t]\ncomponent = \"t.wasm\"\n[[tools.t.secrets]]\nname = \"deploy-token\"\nsource = \"env:X\"\n",
            dir.path(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("secret name 'deploy-token' is reserved for identity tokens"),
            "{err}"
        );
    }
}
