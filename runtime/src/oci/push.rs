//! Pushing a component as a Wasm OCI artifact, through oci-client.

use super::http::client;
use super::reference::OciRef;
use super::{
    CONFIG_MEDIA_TYPE, Credentials, LAYER_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, MAX_COMPONENT, OciError,
    REQUEST_TIMEOUT, shown_error,
};
use crate::identity::Identity;
use oci_client::manifest::{OciDescriptor, OciImageManifest};

/// The artifact's parts: config, then manifest, for a component.
///
/// The config's `created` is the Unix epoch, so the same component pushes
/// to the same manifest digest each time (as reproducible image builders
/// do); the convention's other fields say it is a wasip2 component.
pub(crate) fn artifact(component: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let layer = Identity::of(component);
    let config = serde_json::json!({
        "created": "1970-01-01T00:00:00Z",
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer.to_string()],
    });
    let config = serde_json::to_vec(&config).unwrap_or_default();
    let manifest = one_layer_manifest(
        CONFIG_MEDIA_TYPE,
        &config,
        OciDescriptor {
            media_type: LAYER_MEDIA_TYPE.to_owned(),
            digest: layer.to_string(),
            size: component.len() as i64,
            ..Default::default()
        },
    );
    (config, manifest)
}

/// An OCI image manifest (JSON) for `config` and one layer: what a
/// component and a cosign signature artifact are each pushed as.
pub(crate) fn one_layer_manifest(
    config_media_type: &str,
    config: &[u8],
    layer: OciDescriptor,
) -> Vec<u8> {
    let manifest = OciImageManifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.to_owned()),
        config: OciDescriptor {
            media_type: config_media_type.to_owned(),
            digest: Identity::of(config).to_string(),
            size: config.len() as i64,
            ..Default::default()
        },
        layers: vec![layer],
        ..Default::default()
    };
    serde_json::to_vec(&manifest).unwrap_or_default()
}

/// Pushes `component` to `reference` (a tag); the answer is the manifest's
/// digest, which `reference` with `@sha256:…` pulls.
pub async fn push(
    component: &[u8],
    reference: &OciRef,
    credentials: Option<&Credentials>,
) -> Result<Identity, OciError> {
    let invalid = |reason: String| OciError::Invalid {
        reference: reference.to_string(),
        reason,
    };
    if reference.digest().is_some() {
        return Err(invalid(
            "a push names a tag (oci://HOST/REPOSITORY:TAG); its digest is the answer".into(),
        ));
    }
    if component.len() as u64 > MAX_COMPONENT {
        return Err(invalid(format!(
            "the component is {} bytes, over the limit of {}",
            component.len(),
            crate::units::format_size(MAX_COMPONENT)
        )));
    }
    // A component's preamble: the magic, a version, layer 1.
    if component.get(..4) != Some(b"\0asm") || component.get(6..8) != Some(&[1, 0]) {
        return Err(invalid(
            "not a WebAssembly component (expected a component built for wasm32-wasip2)".into(),
        ));
    }
    let (config, manifest) = artifact(component);
    let digest = Identity::of(&manifest);
    upload(
        reference,
        reference,
        [(component, "the component"), (&config, "the config")],
        manifest,
        credentials,
    )
    .await?;
    Ok(digest)
}

/// Pushes an artifact's two blobs, then its manifest, to `target` (a tag
/// in `reference`'s repository) within [`REQUEST_TIMEOUT`], with the
/// credentials of `reference`'s registry.
pub(super) async fn upload(
    reference: &OciRef,
    target: &OciRef,
    blobs: [(&[u8], &str); 2],
    manifest: Vec<u8>,
    credentials: Option<&Credentials>,
) -> Result<(), OciError> {
    let failed = |reason: String| OciError::Registry {
        reference: target.to_string(),
        reason,
    };
    let client = client(reference).map_err(failed)?;
    let auth = Credentials::registry_auth(credentials, reference);
    let target = target.client_ref();
    let work = async {
        client
            .auth(&target, &auth, oci_client::RegistryOperation::Push)
            .await
            .map_err(|e| format!("authentication failed: {}", shown_error(&e)))?;
        for (bytes, what) in blobs {
            client
                .push_blob(&target, bytes.to_vec(), &Identity::of(bytes).to_string())
                .await
                .map_err(|e| format!("cannot push {what}: {}", shown_error(&e)))?;
        }
        client
            .push_manifest_raw(
                &target,
                manifest,
                reqwest::header::HeaderValue::from_static(MANIFEST_MEDIA_TYPE),
            )
            .await
            .map_err(|e| format!("cannot push the manifest: {}", shown_error(&e)))?;
        Ok::<_, String>(())
    };
    tokio::time::timeout(REQUEST_TIMEOUT, work)
        .await
        .map_err(|_| failed(format!("the push took longer than {REQUEST_TIMEOUT:?}")))?
        .map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_artifact_follows_the_wasm_convention_and_is_reproducible() {
        let (config, manifest) = artifact(b"\0asm\r\0\x01\0");
        assert_eq!(
            artifact(b"\0asm\r\0\x01\0"),
            (config.clone(), manifest.clone())
        );
        let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        assert_eq!(m["schemaVersion"], 2);
        assert_eq!(m["mediaType"], MANIFEST_MEDIA_TYPE);
        assert_eq!(m["config"]["mediaType"], CONFIG_MEDIA_TYPE);
        assert_eq!(m["layers"][0]["mediaType"], LAYER_MEDIA_TYPE);
        assert_eq!(m["layers"][0]["size"], 8);
        let c: serde_json::Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(c["os"], "wasip2");
        assert_eq!(c["layerDigests"][0], m["layers"][0]["digest"]);
    }
}
