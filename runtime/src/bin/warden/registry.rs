//! `warden pull` and `warden push`: components in OCI registries.
//!
//! Credentials, when a registry needs them, come from
//! `WARDEN_REGISTRY_USERNAME` and `WARDEN_REGISTRY_PASSWORD`, for the registry
//! `WARDEN_REGISTRY` names (and no other); they are
//! never printed.

use crate::out::outln;
use crate::{Failure, shown, usage};
use std::path::{Path, PathBuf};
use warden::oci::{self, BlobCache, Credentials, OciError, OciRef};
use warden::source::ComponentSource;
use warden::{Identity, Manifest};

#[derive(clap::Args)]
pub struct PullArgs {
    /// References like oci://HOST[:PORT]/REPOSITORY:TAG or
    /// oci://HOST[:PORT]/REPOSITORY@sha256:HEX.
    #[arg(required_unless_present = "manifest", value_name = "OCI-REF")]
    references: Vec<String>,
    /// Pull every oci:// component of this manifest (checked against its
    /// tools' identity pins).
    #[arg(long, short, value_name = "FILE", conflicts_with = "references")]
    manifest: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct PushArgs {
    /// The component (.wasm) to publish.
    component: PathBuf,
    /// Where: oci://HOST[:PORT]/REPOSITORY:TAG.
    #[arg(value_name = "OCI-REF")]
    reference: String,
}

/// A registry failure with its exit status: 3 when the registry could not
/// be reached or refused, 2 for what it sent or the cache holds.
pub(crate) fn failure(e: OciError) -> Failure {
    let code = match e {
        OciError::Registry { .. } => 3,
        _ => 2,
    };
    Failure {
        code,
        error: e.into(),
    }
}

fn parse(text: &str) -> Result<OciRef, Failure> {
    text.parse::<OciRef>()
        .map_err(|e| usage(anyhow::anyhow!(e)))
}

/// Refuses `what`, which asks a registry, when the user said never to.
pub(crate) fn online(what: &str, offline: bool) -> Result<(), Failure> {
    if offline {
        return Err(usage(anyhow::anyhow!(
            "{what} asks a registry, and --offline (or WARDEN_OFFLINE=1) says never to ask one"
        )));
    }
    Ok(())
}

/// `warden pull`: fills the blob cache, so that later runs need no network.
pub async fn pull(args: PullArgs, cache_dir: Option<&Path>, offline: bool) -> Result<u8, Failure> {
    online("warden pull", offline)?;
    let dir = cache_dir.ok_or_else(|| {
        usage(anyhow::anyhow!(
            "warden pull fills the cache, and there is none (drop --no-cache, or pass --cache-dir DIR)"
        ))
    })?;
    let cache = BlobCache::open(dir).map_err(|e| usage(anyhow::anyhow!(e)))?;
    // (reference, the identity its tool pins)
    let mut wanted: Vec<(OciRef, Option<Identity>)> = Vec::new();
    match &args.manifest {
        Some(path) => {
            let manifest = Manifest::load(path).map_err(warden::Error::from)?;
            for spec in manifest.tools.values() {
                if let ComponentSource::Oci(r) = &spec.component {
                    wanted.push(((**r).clone(), spec.identity.clone()));
                }
            }
            if wanted.is_empty() {
                outln!(
                    "{}: no oci:// components to pull",
                    shown(&path.display().to_string())
                )?;
            }
        }
        None => {
            for text in &args.references {
                wanted.push((parse(text)?, None));
            }
        }
    }
    let credentials = Credentials::from_env();
    for (reference, pin) in &wanted {
        crate::out::errln!("pulling {reference}");
        let pulled = oci::pull(reference, &cache, credentials.as_ref(), pin.as_ref())
            .await
            .map_err(failure)?;
        let how = if pulled.from_cache {
            "already in the cache"
        } else {
            "fetched"
        };
        outln!(
            "{reference}: {} (identity {}, {} bytes, {how})",
            reference.with_digest(pulled.manifest_digest.clone()),
            pulled.layer_digest,
            pulled.bytes.len()
        )?;
    }
    Ok(0)
}

/// `warden push`: publishes a component; prints the reference by digest.
pub async fn push(args: PushArgs, offline: bool) -> Result<u8, Failure> {
    online("warden push", offline)?;
    let reference = parse(&args.reference)?;
    let shown_path = shown(&args.component.display().to_string()).into_owned();
    // A regular file of at most MAX_COMPONENT bytes, as a pull takes.
    let bytes = warden::source::read_component(&args.component)
        .map_err(|e| usage(anyhow::anyhow!("{}", shown(&e.to_string()))))?;
    crate::out::errln!("pushing {shown_path} to {reference}");
    let digest = oci::push(&bytes, &reference, Credentials::from_env().as_ref())
        .await
        .map_err(failure)?;
    outln!("{}", reference.with_digest(digest))?;
    Ok(0)
}
