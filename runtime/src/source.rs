//! Where a tool's component comes from, and the one place its bytes are
//! fetched before they are checked and compiled.
//!
//! A manifest's `component` is a path (relative to the manifest) or an
//! `oci://` reference ([`crate::oci`]). [`fetch`] returns the bytes with
//! their identity and, for a registry, the manifest they were found
//! through; `runtime::load` checks the identity pin and compiles.

use crate::identity::Identity;
use crate::oci::{self, BlobCache, Credentials, OciError, OciRef};
use std::fmt;
use std::path::{Path, PathBuf};

pub use crate::oci::MAX_COMPONENT;

/// A tool's component: a file, or an artifact in an OCI registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentSource {
    /// An absolute path (a manifest's relative path is resolved against
    /// the manifest's directory).
    File(PathBuf),
    /// Boxed: a reference is large, and errors carry a source.
    Oci(Box<OciRef>),
}

impl ComponentSource {
    /// The path of a file component.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ComponentSource::File(p) => Some(p),
            ComponentSource::Oci(_) => None,
        }
    }

    /// Whether this is a file component that exists.
    pub fn is_file(&self) -> bool {
        self.path().is_some_and(Path::is_file)
    }

    /// For messages, as `Path::display` is.
    pub fn display(&self) -> &Self {
        self
    }
}

impl Default for ComponentSource {
    fn default() -> Self {
        ComponentSource::File(PathBuf::new())
    }
}

impl From<PathBuf> for ComponentSource {
    fn from(p: PathBuf) -> Self {
        ComponentSource::File(p)
    }
}

impl From<&Path> for ComponentSource {
    fn from(p: &Path) -> Self {
        ComponentSource::File(p.to_owned())
    }
}

impl From<OciRef> for ComponentSource {
    fn from(r: OciRef) -> Self {
        ComponentSource::Oci(Box::new(r))
    }
}

impl fmt::Display for ComponentSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ComponentSource::File(p) => write!(f, "{}", p.display()),
            ComponentSource::Oci(r) => write!(f, "{r}"),
        }
    }
}

/// A component's bytes, ready to be checked and compiled.
#[derive(Debug)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    /// `sha256` of `bytes`: the identity the audit trail names.
    pub identity: Identity,
    /// Set for a component from a registry.
    pub oci: Option<OciOrigin>,
}

/// The registry artifact a component was found through.
///
/// A signature over `manifest_digest` (cosign's) is what a later check
/// verifies against a key before the component is compiled: see
/// `verify_origin` in `runtime::load`.
#[derive(Debug, Clone)]
pub struct OciOrigin {
    pub reference: OciRef,
    pub manifest_digest: Identity,
    /// Whether the blob cache served it (no network).
    pub from_cache: bool,
    /// cosign's signatures of `manifest_digest` the registry had (or the
    /// cache recorded at the last pull), unverified.
    pub signatures: Vec<crate::oci::CosignSignature>,
}

/// How components are fetched: the blob cache, whether the network may be
/// used, and registry credentials.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub cache: Option<BlobCache>,
    pub offline: bool,
    pub credentials: Option<Credentials>,
}

/// Why a component's bytes could not be had.
#[derive(Debug)]
pub enum FetchError {
    /// A file component could not be read.
    Read(std::io::Error),
    /// A registry component could not be had.
    Oci(OciError),
}

/// The bytes of `component`. `pin`, the tool's identity, lets a registry
/// component be refused before it is downloaded (the bytes are checked
/// against it again before compiling).
pub async fn fetch(
    sources: &Sources,
    component: &ComponentSource,
    pin: Option<&Identity>,
) -> Result<Fetched, FetchError> {
    match component {
        ComponentSource::File(path) => {
            // Bounded like a registry's component, a regular file only (a
            // FIFO or device swapped in after the manifest was checked would
            // block the load or exhaust memory).
            let path = path.clone();
            let read = tokio::task::spawn_blocking(move || read_component(&path))
                .await
                .map_err(|e| FetchError::Read(std::io::Error::other(e.to_string())))?;
            let bytes = read.map_err(|e| {
                FetchError::Read(std::io::Error::other(match e {
                    crate::provenance::ProvenanceError::Read { reason, .. } => reason,
                    other => other.to_string(),
                }))
            })?;
            Ok(Fetched {
                identity: Identity::of(&bytes),
                bytes,
                oci: None,
            })
        }
        ComponentSource::Oci(reference) => {
            let pulled = oci::resolve(
                reference,
                sources.cache.as_ref(),
                sources.offline,
                sources.credentials.as_ref(),
                pin,
            )
            .await
            .map_err(FetchError::Oci)?;
            Ok(Fetched {
                // Checked against the bytes by the pull.
                identity: pulled.layer_digest,
                bytes: pulled.bytes,
                oci: Some(OciOrigin {
                    reference: (**reference).clone(),
                    manifest_digest: pulled.manifest_digest,
                    from_cache: pulled.from_cache,
                    signatures: pulled.signatures,
                }),
            })
        }
    }
}

/// A component file's bytes: a regular file (not a FIFO or device) of at
/// most [`MAX_COMPONENT`] bytes.
pub fn read_component(path: &Path) -> Result<Vec<u8>, crate::provenance::ProvenanceError> {
    crate::provenance::read_bounded(path, MAX_COMPONENT, "the component")
}
