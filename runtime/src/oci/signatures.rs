//! cosign's signatures of an artifact: the OCI image manifest under the tag
//! `sha256-<hex of the artifact's manifest digest>.sig` in the same
//! repository, whose layers (media type
//! [`PAYLOAD_MEDIA_TYPE`](crate::provenance::PAYLOAD_MEDIA_TYPE)) are
//! simple-signing payloads, each with its base64 signature in the
//! [`SIGNATURE_ANNOTATION`](crate::provenance::SIGNATURE_ANNOTATION)
//! annotation.
//!
//! Fetched with the component (a 404 for the tag means none), bounded
//! (manifest [`MAX_MANIFEST`], the newest [`MAX_LAYERS`] signatures, payload
//! [`MAX_PAYLOAD`], signature [`MAX_SIGNATURE`]; a layer past them is
//! skipped, not the whole artifact refused), each payload checked
//! against its descriptor's digest, and kept in the blob cache with the
//! tag's resolution, so that a run after `warden pull` checks them offline.
//! They are only read here; `runtime::load`'s signature check verifies them.

use super::cache::{BlobCache, CacheError};
use super::http::Session;
use super::reference::{OciRef, Version, shown};
use super::{Credentials, MANIFEST_MEDIA_TYPE, MAX_MANIFEST, OciError};
use crate::identity::Identity;
use crate::provenance::{MAX_PAYLOAD, MAX_SIGNATURE, PAYLOAD_MEDIA_TYPE, SIGNATURE_ANNOTATION};
use oci_client::manifest::{OciDescriptor, OciImageManifest};

/// The most signature layers read from one signature manifest.
pub const MAX_LAYERS: usize = 16;

/// The config media type cosign gives a signature artifact.
const SIGNATURE_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// One cosign signature layer: the signed payload and its base64 signature,
/// and the repository it was found in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignSignature {
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
    /// `HOST[:PORT]/REPOSITORY` of the reference the signature was fetched
    /// for (not what the registry says): the repository the payload must
    /// name ([`OciRef::docker_reference`]).
    pub repository: String,
}

/// cosign's signature tag for the artifact `digest`: `sha256-<hex>.sig`.
pub fn tag_name(digest: &Identity) -> String {
    format!("sha256-{}.sig", digest.hex())
}

/// The signature tag of `digest` in `reference`'s repository.
pub fn signature_ref(reference: &OciRef, digest: &Identity) -> OciRef {
    OciRef {
        version: Version::Tag(tag_name(digest)),
        ..reference.clone()
    }
}

/// A signature artifact as fetched: its manifest and signatures.
#[derive(Debug, Clone)]
pub(super) struct SignatureArtifact {
    manifest: Vec<u8>,
    layers: Vec<(Identity, CosignSignature)>,
}

impl SignatureArtifact {
    pub(super) fn signatures(&self) -> Vec<CosignSignature> {
        self.layers.iter().map(|(_, s)| s.clone()).collect()
    }
}

/// A signature layer's descriptor, checked.
struct Layer {
    digest: Identity,
    size: u64,
    signature: Vec<u8>,
}

/// The signature layers of a signature manifest, the newest
/// [`MAX_LAYERS`] (cosign adds a layer per signing, so a digest signed again
/// and again grows); other layers, and a signature layer out of bounds, are
/// skipped, each named in a warning: one bad layer someone with push access
/// added does not hide the good ones. Only a manifest that is not one is
/// refused.
fn layers_of(manifest: &[u8]) -> Result<Vec<Layer>, String> {
    let cut = |e| crate::caps::log::truncate(e, super::pull::MAX_SHOWN);
    let (layers, skipped) = checked_layers(manifest).map_err(cut)?;
    // One warning, however many a pusher added.
    if let Some(first) = skipped.first() {
        let more = match skipped.len() - 1 {
            0 => String::new(),
            n => format!(" (and {n} more)"),
        };
        tracing::warn!("a signature layer skipped: {}{more}", cut(first.clone()));
    }
    Ok(layers)
}

fn checked_layers(manifest: &[u8]) -> Result<(Vec<Layer>, Vec<String>), String> {
    let m: OciImageManifest = serde_json::from_slice(manifest)
        .map_err(|e| format!("the signature manifest is not an OCI image manifest: {e}"))?;
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for l in m
        .layers
        .iter()
        .filter(|l| l.media_type == PAYLOAD_MEDIA_TYPE)
    {
        match checked_layer(l) {
            Ok(layer) => out.push(layer),
            Err(why) => skipped.push(why),
        }
    }
    if out.len() > MAX_LAYERS {
        skipped.push(format!(
            "the signature manifest has {} signatures: the {} oldest are not checked (at most \
             {MAX_LAYERS}, the newest)",
            out.len(),
            out.len() - MAX_LAYERS
        ));
        out.drain(..out.len() - MAX_LAYERS);
    }
    Ok((out, skipped))
}

fn checked_layer(l: &OciDescriptor) -> Result<Layer, String> {
    let digest = l.digest.parse::<Identity>().map_err(|_| {
        format!(
            "a signature layer's digest '{}' is not sha256 (expected sha256: and 64 hex digits)",
            shown(&l.digest)
        )
    })?;
    let size = u64::try_from(l.size)
        .ok()
        .filter(|s| (1..=MAX_PAYLOAD).contains(s))
        .ok_or_else(|| {
            format!(
                "a signature payload's size {} is not from 1 to {MAX_PAYLOAD} bytes",
                l.size
            )
        })?;
    let signature = l
        .annotations
        .as_ref()
        .and_then(|a| a.get(SIGNATURE_ANNOTATION))
        .cloned()
        .unwrap_or_default();
    if signature.len() as u64 > MAX_SIGNATURE {
        return Err(format!(
            "a signature is {} bytes (expected at most {MAX_SIGNATURE})",
            signature.len()
        ));
    }
    Ok(Layer {
        digest,
        size,
        signature: signature.into_bytes(),
    })
}

/// The signatures of `digest` at the registry; `None` when the signature
/// tag does not exist.
pub(super) async fn fetch(
    s: &mut Session<'_>,
    reference: &OciRef,
    digest: &Identity,
) -> Result<Option<SignatureArtifact>, OciError> {
    let invalid = |reason: String| OciError::Invalid {
        reference: reference.to_string(),
        reason: format!("its signatures (tag {}): {reason}", tag_name(digest)),
    };
    let path = format!("manifests/{}", tag_name(digest));
    let Some((_, manifest)) = s
        .get_if_present(
            &path,
            Some(MANIFEST_MEDIA_TYPE),
            MAX_MANIFEST,
            "the signature manifest",
        )
        .await?
    else {
        return Ok(None);
    };
    let mut layers = Vec::new();
    for l in layers_of(&manifest).map_err(invalid)? {
        // A payload that cannot be had, or is not what its layer names, is
        // skipped as a bad layer is: the others may hold the signature.
        let path = format!("blobs/{}", l.digest);
        let payload = match s.get(&path, None, l.size, "a signature payload").await {
            Ok((_, payload)) => payload,
            Err(e) => {
                tracing::warn!("a signature layer skipped: its payload {}: {e}", l.digest);
                continue;
            }
        };
        let actual = Identity::of(&payload);
        if actual != l.digest {
            tracing::warn!(
                "a signature layer skipped: the registry sent a payload whose digest is \
                 {actual} for the layer {}",
                l.digest
            );
            continue;
        }
        layers.push((
            actual,
            CosignSignature {
                payload,
                signature: l.signature,
                repository: reference.docker_reference(),
            },
        ));
    }
    Ok(Some(SignatureArtifact { manifest, layers }))
}

/// Stores the payloads, the manifest, then the signature tag's resolution.
pub(super) fn store(
    cache: &BlobCache,
    reference: &OciRef,
    digest: &Identity,
    artifact: &SignatureArtifact,
) -> Result<(), CacheError> {
    for (d, s) in &artifact.layers {
        cache.put(d, &s.payload)?;
    }
    let manifest_digest = Identity::of(&artifact.manifest);
    cache.put(&manifest_digest, &artifact.manifest)?;
    cache.set_tag(&signature_ref(reference, digest), &manifest_digest)
}

/// The signatures of `digest` the cache holds (none if it has no record
/// of the signature tag); a cached blob that does not hash to its name is
/// an error.
pub(super) fn from_cache(
    cache: &BlobCache,
    reference: &OciRef,
    digest: &Identity,
) -> Result<Vec<CosignSignature>, CacheError> {
    let Some(sig_digest) = cache.tag(&signature_ref(reference, digest))? else {
        return Ok(Vec::new());
    };
    let missing = |d: &Identity| CacheError {
        path: cache.blob_path(d),
        reason: format!(
            "the signatures of {reference} name it, and it is missing (expected a pulled blob)"
        ),
    };
    let manifest = cache
        .get(&sig_digest)?
        .ok_or_else(|| missing(&sig_digest))?;
    let layers = layers_of(&manifest).map_err(|reason| CacheError {
        path: cache.blob_path(&sig_digest),
        reason,
    })?;
    let mut out = Vec::new();
    let mut unpulled = 0;
    for l in layers {
        // A layer whose payload the pull skipped (it could not be had, or
        // was not what it named) is skipped again, as then.
        let Some(payload) = cache.get(&l.digest)? else {
            unpulled += 1;
            continue;
        };
        out.push(CosignSignature {
            payload,
            signature: l.signature,
            repository: reference.docker_reference(),
        });
    }
    if unpulled > 0 {
        tracing::warn!(
            "{unpulled} signature layer(s) of {reference} skipped: their payloads were not pulled"
        );
    }
    Ok(out)
}

/// Whether any of `signatures` is `key`'s over cosign's payload for
/// `manifest_digest` in the repository it was fetched from; otherwise what
/// was found, worded to follow "but".
///
/// This closes the chain from the key to the bytes compiled: the key
/// signs the payload, the payload names the repository and the manifest
/// digest (a signature copied from another repository, where the same
/// bytes pushed to the same digest, is refused), the pull
/// checked the manifest's bytes against that digest and the component's
/// bytes against the manifest's layer digest (and the loader checks them
/// again before compiling).
pub(crate) fn verify(
    key: &crate::provenance::TrustedKey,
    signatures: &[CosignSignature],
    manifest_digest: &Identity,
) -> Result<(), String> {
    let mut last = None;
    for s in signatures {
        match key.verify_payload(&s.payload, &s.signature, manifest_digest, &s.repository) {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    let tag = tag_name(manifest_digest);
    match last {
        None => Err(format!(
            "the registry has no cosign signature for it (tag {tag}; sign it with `warden sign --key KEY` or `cosign sign --key`, then `warden pull` it again)"
        )),
        Some(e) => {
            let reason = match e {
                crate::provenance::ProvenanceError::Mismatch { reason, .. } => reason,
                other => other.to_string(),
            };
            Err(format!(
                "{} signature(s) at tag {tag}, none by this key: {reason}",
                signatures.len()
            ))
        }
    }
}

/// The digest of the manifest `reference` names, asked of the registry
/// (for a digest reference, checked to be there), within
/// [`PULL_TIMEOUT`](super::PULL_TIMEOUT). With `component` (the digest of
/// the component meant), the manifest's one wasm layer must be it: what a
/// tag names when it is asked is the registry's choice, and a signature
/// is not given to whatever that is.
pub async fn manifest_digest(
    reference: &OciRef,
    component: Option<&Identity>,
    credentials: Option<&Credentials>,
) -> Result<Identity, OciError> {
    let work = async {
        let mut s = Session::new(reference, credentials)?;
        let (_, manifest) = s.manifest(&reference.version_str()).await?;
        Ok::<_, OciError>(manifest)
    };
    let manifest = super::within(super::PULL_TIMEOUT, reference, work).await?;
    let digest = Identity::of(&manifest);
    let invalid = |reason: String| OciError::Invalid {
        reference: reference.to_string(),
        reason,
    };
    if let Some(want) = reference.digest()
        && *want != digest
    {
        return Err(invalid(format!(
            "the registry sent a manifest whose digest is {digest}, not the {want} asked for"
        )));
    }
    if let Some(component) = component {
        let layer = super::pull::layer_of(&manifest).map_err(&invalid)?;
        if layer.digest != *component {
            return Err(invalid(format!(
                "the registry's manifest {digest} names the component {}, not the one given ({component}); refused to sign it",
                layer.digest
            )));
        }
    }
    Ok(digest)
}

/// The signature artifact's config and manifest for one signature layer.
pub(crate) fn artifact(payload: &[u8], signature: &str) -> (Vec<u8>, Vec<u8>) {
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "",
        "os": "",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [Identity::of(payload).to_string()]},
    }))
    .unwrap_or_default();
    let manifest = super::push::one_layer_manifest(
        SIGNATURE_CONFIG_MEDIA_TYPE,
        &config,
        OciDescriptor {
            media_type: PAYLOAD_MEDIA_TYPE.to_owned(),
            digest: Identity::of(payload).to_string(),
            size: payload.len() as i64,
            annotations: Some(
                [(SIGNATURE_ANNOTATION.to_owned(), signature.to_owned())]
                    .into_iter()
                    .collect(),
            ),
            ..Default::default()
        },
    );
    (config, manifest)
}

/// Pushes one signature of the artifact `digest` in `reference`'s
/// repository under its signature tag, replacing the signatures there;
/// the answer is the signature tag's reference.
pub async fn push_signature(
    reference: &OciRef,
    digest: &Identity,
    payload: &[u8],
    signature: &str,
    credentials: Option<&Credentials>,
) -> Result<OciRef, OciError> {
    let target_ref = signature_ref(reference, digest);
    let (config, manifest) = artifact(payload, signature);
    super::push::upload(
        reference,
        &target_ref,
        [(payload, "the signature payload"), (&config, "the config")],
        manifest,
        credentials,
    )
    .await?;
    Ok(target_ref)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_artifact_round_trips_and_is_bounded() {
        let payload = b"{\"critical\":{}}";
        let (_, manifest) = artifact(payload, "c2ln");
        let layers = layers_of(&manifest).unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0].digest, Identity::of(payload));
        assert_eq!(layers[0].signature, b"c2ln");
        let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        let layer = m["layers"][0].to_string();
        // Signed again and again: the newest 16 are checked.
        let newest = layer.replace("c2ln", "bmV3");
        let mut many = vec![layer.as_str(); MAX_LAYERS];
        many.push(&newest);
        let (kept, skipped) = checked_layers(manifest_with(&many.join(",")).as_bytes()).unwrap();
        assert_eq!(kept.len(), MAX_LAYERS);
        assert_eq!(kept[MAX_LAYERS - 1].signature, b"bmV3");
        assert_eq!(
            skipped,
            [
                "the signature manifest has 17 signatures: the 1 oldest are not checked (at most \
              16, the newest)"
            ]
        );
        // A layer out of bounds is skipped, named; the good one is kept.
        let big = layer.replace("\"size\":15", "\"size\":99999");
        let long = layer.replace("c2ln", &"A".repeat(MAX_SIGNATURE as usize + 1));
        let (kept, skipped) =
            checked_layers(manifest_with(&[big.as_str(), &long, &layer].join(",")).as_bytes())
                .unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].signature, b"c2ln");
        assert!(
            skipped[0].contains("size 99999 is not from 1 to 16384"),
            "{skipped:?}"
        );
        assert_eq!(
            skipped[1],
            "a signature is 4097 bytes (expected at most 4096)"
        );
        assert!(layers_of(b"[]").is_err());
    }

    /// A layer whose payload the pull skipped is skipped again when the
    /// cache is read: the signatures pulled are there, not an error (which
    /// had every later load of the tool fetch it again, or fail offline).
    #[test]
    fn a_layer_skipped_at_the_pull_is_skipped_in_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cache = super::super::cache::BlobCache::new(dir.path());
        let (good, bad) = (
            b"{\"critical\":1}".as_slice(),
            b"{\"critical\":2}".as_slice(),
        );
        let layer = |payload: &[u8], sig: &str| {
            let (_, m) = artifact(payload, sig);
            let m: serde_json::Value = serde_json::from_slice(&m).unwrap();
            m["layers"][0].to_string()
        };
        let manifest = manifest_with(&[layer(bad, "YmFk"), layer(good, "Z29vZA==")].join(","));
        let signature = CosignSignature {
            payload: good.to_vec(),
            signature: b"Z29vZA==".to_vec(),
            repository: "127.0.0.1:1/x".into(),
        };
        let fetched = SignatureArtifact {
            manifest: manifest.into_bytes(),
            layers: vec![(Identity::of(good), signature)],
        };
        let reference: OciRef = "oci://127.0.0.1:1/x:v1".parse().unwrap();
        let digest = Identity::of(b"the component");
        store(&cache, &reference, &digest, &fetched).unwrap();
        let read = from_cache(&cache, &reference, &digest).unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].payload, good);
        assert_eq!(read[0].signature, b"Z29vZA==");
    }

    fn manifest_with(layers: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"x","digest":"sha256:{z}","size":2}},"layers":[{layers}]}}"#,
            z = "0".repeat(64)
        )
    }
}
