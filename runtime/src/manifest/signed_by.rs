//! `signed-by` in a manifest: for every tool (top level) or one tool (in
//! its table, replacing the top level's), and a file component's
//! `signature`.

use crate::diag::Checker;
use crate::provenance::{Keyless, TrustRoot, TrustedKey};
use crate::source::ComponentSource;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use toml::Spanned;

/// What a component must be signed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedBy {
    /// A cosign key: `signed-by = { key = "keys/tools.pub" }`.
    Key(TrustedKey),
    /// A keyless signer, checked offline against a trust root:
    /// `signed-by = { identity = "...", issuer = "...", trust-root = "..." }`.
    Identity(Keyless),
}

impl std::fmt::Display for SignedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignedBy::Key(k) => write!(f, "the key {k}"),
            SignedBy::Identity(k) => k.fmt(f),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawSignedBy {
    key: Option<Spanned<String>>,
    identity: Option<Spanned<String>>,
    issuer: Option<Spanned<String>>,
    trust_root: Option<Spanned<String>>,
}

/// Checks a `signed-by` table at `field`, reading its key relative to
/// `base`.
pub(crate) fn signed_by(
    c: &mut Checker<'_>,
    raw: Spanned<RawSignedBy>,
    field: &str,
    base: &Path,
) -> Option<SignedBy> {
    let span = raw.span();
    let raw = raw.into_inner();
    const EXPECTED: &str = "expected key = \"path/to/cosign.pub\", or identity = \"…\", issuer = \"https://…\" and trust-root = \"path/to/trusted_root.json\" (paths relative to the manifest)";
    match (raw.key, raw.identity, raw.issuer, raw.trust_root) {
        (Some(key), None, None, None) => match TrustedKey::load(&base.join(key.get_ref())) {
            Ok(k) => Some(SignedBy::Key(k)),
            Err(e) => {
                c.problem(key.span(), format!("{field}.key"), e.to_string());
                None
            }
        },
        (Some(key), ..) => {
            c.problem(
                key.span(),
                field.to_owned(),
                format!("a key and a keyless identity are named together: {EXPECTED}"),
            );
            None
        }
        (None, Some(identity), Some(issuer), Some(root)) => {
            let identity = name(c, identity, &format!("{field}.identity"))?;
            let issuer = name(c, issuer, &format!("{field}.issuer"))?;
            match TrustRoot::load(&base.join(root.get_ref())) {
                Ok(r) => Some(SignedBy::Identity(Keyless {
                    identity,
                    issuer,
                    trust_root: Arc::new(r),
                })),
                Err(e) => {
                    c.problem(root.span(), format!("{field}.trust-root"), e.to_string());
                    None
                }
            }
        }
        (None, i, s, r) => {
            let missing: Vec<&str> = [
                ("identity", i.is_none()),
                ("issuer", s.is_none()),
                ("trust-root", r.is_none()),
            ]
            .into_iter()
            .filter_map(|(n, m)| m.then_some(n))
            .collect();
            c.problem(
                span,
                field.to_owned(),
                format!("{} missing: {EXPECTED}", missing.join(", ")),
            );
            None
        }
    }
}

/// A keyless `identity` or `issuer`: compared exactly with a
/// certificate's, so it must be non-empty, without spaces or control
/// characters.
fn name(c: &mut Checker<'_>, v: Spanned<String>, field: &str) -> Option<String> {
    let s = v.get_ref();
    if s.is_empty() || s.len() > 1024 || s.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
        c.problem(
            v.span(),
            field.to_owned(),
            "expected a non-empty name of at most 1024 characters without spaces or control characters (an email, a URI, or an issuer URL)".into(),
        );
        return None;
    }
    Some(v.into_inner())
}

/// A tool's `signed-by` (its own, else the top level's) and, for a file
/// component, where its signature is.
pub(crate) fn of_tool(
    c: &mut Checker<'_>,
    (raw, signature): (Option<Spanned<RawSignedBy>>, Option<Spanned<String>>),
    field: &str,
    base: &Path,
    top: Option<&SignedBy>,
    (component, component_span): (&ComponentSource, std::ops::Range<usize>),
) -> (Option<SignedBy>, Option<PathBuf>) {
    let signed_by = match raw {
        Some(raw) => signed_by(c, raw, field, base),
        None => top.cloned(),
    };
    let sig_field = field.replace("signed-by", "signature");
    let signature = match (component, signature) {
        (ComponentSource::Oci(_), Some(s)) => {
            c.problem(
                s.span(),
                sig_field,
                "a registry component's signature is found in its registry (cosign's sha256-<digest>.sig tag): expected no signature here".into(),
            );
            None
        }
        (ComponentSource::Oci(_), None) => {
            if let Some(SignedBy::Identity(_)) = &signed_by {
                c.problem(
                    component_span,
                    field.to_owned(),
                    "keyless signatures are checked for component files (a bundle beside the file); a registry component needs signed-by = { key = \"…\" }".into(),
                );
                return (None, None);
            }
            None
        }
        (ComponentSource::File(_), Some(s)) if signed_by.is_none() => {
            c.problem(
                s.span(),
                sig_field,
                "a signature is named but no signed-by names the key to check it with: expected signed-by = { key = \"…\" } here or at the top".into(),
            );
            None
        }
        (ComponentSource::File(_), Some(s)) => Some(base.join(s.get_ref())),
        (ComponentSource::File(path), None) => {
            let mut sig = path.clone().into_os_string();
            sig.push(match signed_by {
                Some(SignedBy::Identity(_)) => ".sigstore.json",
                _ => ".sig",
            });
            Some(PathBuf::from(sig))
        }
    };
    (signed_by, signature)
}
