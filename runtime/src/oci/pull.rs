//! Pulling a component: from the blob cache when it has the digest, else
//! from the registry (`http.rs`), bounded and checked at each step.

use super::cache::{BlobCache, CacheError};
use super::http::Session;
use super::reference::{OciRef, shown};
use super::signatures::{self, CosignSignature, SignatureArtifact};
use super::{
    Credentials, LAYER_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, OLD_LAYER_MEDIA_TYPE, OciError,
    PULL_TIMEOUT, component_size, within,
};
use crate::identity::Identity;
use oci_client::manifest::OciImageManifest;

/// A component and where it came from.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The digest of the OCI manifest the component was found through.
    pub manifest_digest: Identity,
    /// The component's digest (its identity), checked against its bytes.
    pub layer_digest: Identity,
    pub bytes: Vec<u8>,
    /// Served from the blob cache, without the network.
    pub from_cache: bool,
    /// cosign's signatures of `manifest_digest` (empty when there are
    /// none): fetched with the component, or those the cache recorded at
    /// its last pull. Not verified here; see `runtime::load`'s signature check.
    pub signatures: Vec<CosignSignature>,
    /// The manifest's bytes, when they came from the registry.
    manifest: Option<Vec<u8>>,
    /// The signature artifact, when it came from the registry.
    signature_artifact: Option<SignatureArtifact>,
}

/// The component `reference` names, for a run: from `cache` when it has
/// the reference's digest (a tag's digest is the one its last pull
/// recorded), else from the registry unless `offline`. What is fetched is
/// stored in `cache`. `pin`, the tool's identity, is checked against the
/// manifest's layer before the component is downloaded.
pub async fn resolve(
    reference: &OciRef,
    cache: Option<&BlobCache>,
    offline: bool,
    credentials: Option<&Credentials>,
    pin: Option<&Identity>,
) -> Result<Pulled, OciError> {
    if let Some(cache) = cache {
        let digest = match reference.digest() {
            Some(d) => Ok(Some(d.clone())),
            None => cache.tag(reference),
        };
        // Reading and hashing up to 256 MiB: other tasks go on meanwhile.
        let cached = crate::blocking::blocking(|| {
            digest.and_then(|d| match d {
                Some(d) => from_cache(cache, reference, &d),
                None => Ok(None),
            })
        });
        match cached {
            Ok(Some(p)) => {
                check_pin(reference, pin, &p.layer_digest)?;
                return Ok(p);
            }
            Ok(None) => {}
            Err(error) if offline => {
                return Err(OciError::Cache {
                    reference: reference.to_string(),
                    error,
                });
            }
            Err(error) => {
                tracing::warn!("{error}; fetching it again");
                discard(cache, &error);
            }
        }
    }
    if offline {
        return Err(OciError::NotCached {
            reference: reference.to_string(),
        });
    }
    let pulled = fetch(reference, credentials, pin).await?;
    if let Some(cache) = cache {
        crate::blocking::blocking(|| store(cache, reference, &pulled))?;
    }
    Ok(pulled)
}

/// `warden pull`: a tag is always resolved again at the registry (and the
/// new resolution recorded); a digest the cache has is not fetched again,
/// but its signatures are (a signature may be added after a pull).
pub async fn pull(
    reference: &OciRef,
    cache: &BlobCache,
    credentials: Option<&Credentials>,
    pin: Option<&Identity>,
) -> Result<Pulled, OciError> {
    if reference.digest().is_some() {
        let mut pulled = resolve(reference, Some(cache), false, credentials, pin).await?;
        if pulled.from_cache {
            let digest = pulled.manifest_digest.clone();
            let work = async {
                let mut s = Session::new(reference, credentials)?;
                signatures::fetch(&mut s, reference, &digest).await
            };
            pulled.signature_artifact = within(PULL_TIMEOUT, reference, work).await?;
            pulled.signatures = pulled
                .signature_artifact
                .as_ref()
                .map(SignatureArtifact::signatures)
                .unwrap_or_default();
            crate::blocking::blocking(|| store(cache, reference, &pulled))?;
        }
        return Ok(pulled);
    }
    let pulled = fetch(reference, credentials, pin).await?;
    crate::blocking::blocking(|| store(cache, reference, &pulled))?;
    Ok(pulled)
}

fn check_pin(reference: &OciRef, pin: Option<&Identity>, layer: &Identity) -> Result<(), OciError> {
    match pin {
        Some(pin) if pin != layer => Err(OciError::Pin {
            reference: reference.to_string(),
            expected: pin.clone(),
            actual: layer.clone(),
        }),
        _ => Ok(()),
    }
}

/// Removes an unusable cache entry, unless it is a sound blob (its bytes
/// hash to its name) that was only not what was expected of it.
fn discard(cache: &BlobCache, error: &CacheError) {
    if cache.intact(&error.path) {
        return;
    }
    if let Err(e) = std::fs::remove_file(&error.path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %error.path.display(), "cannot remove an unusable cache entry: {e}");
    }
}

/// Blobs first, the tag last: a recorded tag never names a missing blob.
fn store(cache: &BlobCache, reference: &OciRef, pulled: &Pulled) -> Result<(), OciError> {
    let err = |error| OciError::Cache {
        reference: reference.to_string(),
        error,
    };
    if let Some(manifest) = &pulled.manifest {
        cache.put(&pulled.manifest_digest, manifest).map_err(err)?;
    }
    cache
        .put(&pulled.layer_digest, &pulled.bytes)
        .map_err(err)?;
    // The signatures were fetched again with the component: none at the
    // registry now (its publisher removed them) is none in the cache too.
    match &pulled.signature_artifact {
        Some(artifact) => {
            signatures::store(cache, reference, &pulled.manifest_digest, artifact).map_err(err)?
        }
        None => {
            let tag = signatures::signature_ref(reference, &pulled.manifest_digest);
            cache.remove_tag(&tag).map_err(err)?
        }
    }
    if reference.digest().is_none() {
        cache
            .set_tag(reference, &pulled.manifest_digest)
            .map_err(err)?;
    }
    Ok(())
}

/// The component through the cached manifest `digest`, if both are cached.
fn from_cache(
    cache: &BlobCache,
    reference: &OciRef,
    digest: &Identity,
) -> Result<Option<Pulled>, CacheError> {
    let Some(manifest) = cache.get(digest)? else {
        return Ok(None);
    };
    let layer = layer_of(&manifest).map_err(|reason| CacheError {
        path: cache.blob_path(digest),
        reason: format!("the cached manifest of {reference}: {reason}"),
    })?;
    let Some(bytes) = cache.get(&layer.digest)? else {
        return Ok(None);
    };
    let signatures = signatures::from_cache(cache, reference, digest)?;
    Ok(Some(Pulled {
        manifest_digest: digest.clone(),
        layer_digest: layer.digest,
        bytes,
        from_cache: true,
        signatures,
        manifest: None,
        signature_artifact: None,
    }))
}

/// The one component layer of a manifest.
pub(super) struct Layer {
    pub(super) digest: Identity,
    pub(super) size: u64,
}

/// The most of an error about a registry's manifest shown: its text quotes
/// the registry's (a 60 KiB field, 500 layers' media types).
pub(super) const MAX_SHOWN: usize = 1024;

/// The one wasm layer of an OCI image manifest, checked: its media type,
/// digest and size.
pub(super) fn layer_of(manifest: &[u8]) -> Result<Layer, String> {
    checked_layer(manifest).map_err(|e| crate::caps::log::truncate(e, MAX_SHOWN))
}

fn checked_layer(manifest: &[u8]) -> Result<Layer, String> {
    let m: OciImageManifest = serde_json::from_slice(manifest)
        .map_err(|e| format!("the manifest is not an OCI image manifest: {e}"))?;
    if m.schema_version != 2 {
        return Err(format!(
            "the manifest has schemaVersion {} (expected 2)",
            m.schema_version
        ));
    }
    if let Some(t) = &m.media_type
        && t != MANIFEST_MEDIA_TYPE
    {
        return Err(format!(
            "the manifest's media type is '{}' (expected {MANIFEST_MEDIA_TYPE})",
            shown(t)
        ));
    }
    let types: Vec<String> = m.layers.iter().map(|l| shown(&l.media_type)).collect();
    let [layer] = m.layers.as_slice() else {
        return Err(format!(
            "expected one layer of type {LAYER_MEDIA_TYPE}, found {} layers ({})",
            m.layers.len(),
            types.join(", ")
        ));
    };
    if layer.media_type != LAYER_MEDIA_TYPE && layer.media_type != OLD_LAYER_MEDIA_TYPE {
        return Err(format!(
            "expected one layer of type {LAYER_MEDIA_TYPE}, found a layer of type '{}'",
            types.join(", ")
        ));
    }
    let digest = layer.digest.parse::<Identity>().map_err(|_| {
        format!(
            "the layer's digest '{}' is not sha256 (expected sha256: and 64 hex digits)",
            shown(&layer.digest)
        )
    })?;
    let size = component_size(layer.size).ok_or_else(|| {
        format!(
            "the layer's size {} is not from 1 byte to the component limit of {}",
            layer.size,
            crate::units::format_size(super::MAX_COMPONENT)
        )
    })?;
    Ok(Layer { digest, size })
}

/// Manifest, then component, then signatures, from the registry, all
/// within [`PULL_TIMEOUT`].
async fn fetch(
    reference: &OciRef,
    credentials: Option<&Credentials>,
    pin: Option<&Identity>,
) -> Result<Pulled, OciError> {
    within(
        PULL_TIMEOUT,
        reference,
        fetch_unbounded(reference, credentials, pin),
    )
    .await
}

async fn fetch_unbounded(
    reference: &OciRef,
    credentials: Option<&Credentials>,
    pin: Option<&Identity>,
) -> Result<Pulled, OciError> {
    let mut s = Session::new(reference, credentials)?;
    let (headers, manifest) = s.manifest(&reference.version_str()).await?;
    let invalid = |reason: String| OciError::Invalid {
        reference: reference.to_string(),
        reason,
    };
    let manifest_digest = Identity::of(&manifest);
    if let Some(want) = reference.digest()
        && *want != manifest_digest
    {
        return Err(invalid(format!(
            "the registry sent a manifest whose digest is {manifest_digest}, not the {want} asked for"
        )));
    }
    if let Some(said) = headers
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.starts_with("sha256:"))
        && said != manifest_digest.to_string()
    {
        return Err(invalid(format!(
            "the registry says the manifest's digest is '{}' but its bytes hash to {manifest_digest}",
            shown(said)
        )));
    }
    let layer = layer_of(&manifest).map_err(invalid)?;
    check_pin(reference, pin, &layer.digest)?;
    let path = format!("blobs/{}", layer.digest);
    let (_, bytes) = s.get(&path, None, layer.size, "the component").await?;
    if bytes.len() as u64 != layer.size {
        return Err(invalid(format!(
            "the registry sent {} bytes for a layer of {} bytes",
            bytes.len(),
            layer.size
        )));
    }
    let actual = Identity::of(&bytes);
    if actual != layer.digest {
        return Err(invalid(format!(
            "the registry sent bytes whose digest is {actual} for the layer {} (refused: not the component the manifest names)",
            layer.digest
        )));
    }
    let signature_artifact = signatures::fetch(&mut s, reference, &manifest_digest).await?;
    Ok(Pulled {
        manifest_digest,
        layer_digest: actual,
        bytes,
        from_cache: false,
        signatures: signature_artifact
            .as_ref()
            .map(SignatureArtifact::signatures)
            .unwrap_or_default(),
        manifest: Some(manifest),
        signature_artifact,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_must_have_one_wasm_layer() {
        let m = |layers: &str| {
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{MANIFEST_MEDIA_TYPE}","config":{{"mediaType":"x","digest":"sha256:{z}","size":2}},"layers":[{layers}]}}"#,
                z = "0".repeat(64)
            )
        };
        let layer = |t: &str| {
            format!(
                r#"{{"mediaType":"{t}","digest":"sha256:{}","size":10}}"#,
                "1".repeat(64)
            )
        };
        assert!(layer_of(m(&layer(LAYER_MEDIA_TYPE)).as_bytes()).is_ok());
        assert!(layer_of(m(&layer(OLD_LAYER_MEDIA_TYPE)).as_bytes()).is_ok());
        // A JSON escape: ESC in the media type.
        let e = layer_of(m(&layer("application/x\\u001b[31m")).as_bytes())
            .err()
            .unwrap();
        assert!(e.contains("application/x\\u{1b}[31m"), "{e}");
        let two = format!("{},{}", layer(LAYER_MEDIA_TYPE), layer("text/plain"));
        let e = layer_of(m(&two).as_bytes()).err().unwrap();
        assert_eq!(
            e,
            "expected one layer of type application/wasm, found 2 layers (application/wasm, text/plain)"
        );
        let big = m(&layer(LAYER_MEDIA_TYPE)).replace("\"size\":10", "\"size\":999999999999");
        let e = layer_of(big.as_bytes()).err().unwrap();
        assert!(e.contains("component limit of 256 MiB"), "{e}");
        assert!(layer_of(b"[]").is_err());
        // What the registry wrote is quoted, and cut.
        let many = vec![layer(&"t".repeat(120)); 500].join(",");
        let e = layer_of(m(&many).as_bytes()).err().unwrap();
        assert!(
            e.len() < MAX_SHOWN + 20 && e.ends_with("…[truncated]"),
            "{e}"
        );
        let e = layer_of(format!(r#"{{"schemaVersion":"{}"}}"#, "A".repeat(60 << 10)).as_bytes());
        assert!(e.err().unwrap().len() < MAX_SHOWN + 20);
    }

    /// A digest reference that names another artifact's cached blob (a
    /// component, not a manifest) leaves that blob in the cache: it is
    /// sound, only not a manifest.
    #[tokio::test]
    async fn a_sound_blob_named_as_a_manifest_is_not_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::new(dir.path());
        let bytes = b"\0asm\x0d\0\x01\0 another tool".to_vec();
        let digest = Identity::of(&bytes);
        cache.put(&digest, &bytes).unwrap();
        let reference: OciRef = format!("oci://127.0.0.1:1/x@{digest}").parse().unwrap();
        assert!(
            resolve(&reference, Some(&cache), false, None, None)
                .await
                .is_err()
        );
        assert_eq!(cache.get(&digest).unwrap(), Some(bytes));
        // A blob whose bytes no longer hash to its name is discarded.
        std::fs::write(cache.blob_path(&digest), b"tampered").unwrap();
        assert!(
            resolve(&reference, Some(&cache), false, None, None)
                .await
                .is_err()
        );
        assert!(!cache.blob_path(&digest).exists());
    }

    /// A registry that takes the connection and never answers: the pull
    /// ends at its overall limit (here 300 ms, not the 30 s a silent
    /// registry is given per read), with what happened.
    #[tokio::test]
    async fn a_pull_ends_at_its_overall_limit() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let reference: OciRef = format!("oci://127.0.0.1:{port}/tools/echo:v1")
            .parse()
            .unwrap();
        let limit = std::time::Duration::from_millis(300);
        let started = std::time::Instant::now();
        let err = within(limit, &reference, fetch_unbounded(&reference, None, None))
            .await
            .unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        assert_eq!(
            err.to_string(),
            format!(
                "{reference}: the registry did not finish within 300ms (the limit for a whole pull)"
            )
        );
        drop(listener);
    }
}
