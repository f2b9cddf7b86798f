//! `signed-by` in a manifest: for every tool (top level) or one tool (in
//! its table, replacing the top level's), and a file component's
//! `signature`.

use crate::diag::Checker;
use crate::provenance::TrustedKey;
use crate::source::ComponentSource;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// What a component must be signed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedBy {
    /// A cosign key: `signed-by = { key = "keys/tools.pub" }`.
    Key(TrustedKey),
}

impl std::fmt::Display for SignedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignedBy::Key(k) => write!(f, "the key {k}"),
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
    let keyless = [&raw.identity, &raw.issuer, &raw.trust_root]
        .into_iter()
        .flatten()
        .next();
    if let Some(k) = keyless {
        c.problem(
            k.span(),
            field.to_owned(),
            "keyless signatures (identity, issuer and trust-root) are not supported yet: expected key = \"path/to/cosign.pub\"".into(),
        );
        return None;
    }
    let Some(key) = raw.key else {
        c.problem(
            span,
            field.to_owned(),
            "expected key = \"path/to/cosign.pub\" (the public key components must be signed with, relative to the manifest)".into(),
        );
        return None;
    };
    match TrustedKey::load(&base.join(key.get_ref())) {
        Ok(k) => Some(SignedBy::Key(k)),
        Err(e) => {
            c.problem(key.span(), format!("{field}.key"), e.to_string());
            None
        }
    }
}

/// A tool's `signed-by` (its own, else the top level's) and, for a file
/// component, where its signature is.
pub(crate) fn of_tool(
    c: &mut Checker<'_>,
    (raw, signature): (Option<Spanned<RawSignedBy>>, Option<Spanned<String>>),
    field: &str,
    base: &Path,
    top: Option<&SignedBy>,
    component: &ComponentSource,
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
        (ComponentSource::Oci(_), None) => None,
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
            sig.push(".sig");
            Some(PathBuf::from(sig))
        }
    };
    (signed_by, signature)
}
