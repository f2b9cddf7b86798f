//! `warden sign`: cosign-compatible keyed signatures, for tool authors
//! without cosign at hand.
//!
//! `warden sign --generate-key keys/tools` writes `keys/tools.key` (an
//! encrypted `SIGSTORE PRIVATE KEY`, as `cosign generate-key-pair` writes)
//! and `keys/tools.pub`; `warden sign --key keys/tools.key tool.wasm`
//! writes `tool.wasm.sig` (as `cosign sign-blob --key` prints). The
//! password is `COSIGN_PASSWORD`'s, as cosign's is.
//!
//! `warden sign --key keys/tools.key oci://HOST/REPO:TAG` signs a registry
//! artifact as `cosign sign --key` does: cosign's simple-signing payload
//! for the manifest digest the reference resolves to, pushed under the tag
//! `sha256-<hex>.sig`. It replaces any signatures already at that tag
//! (cosign appends; Warden reads either).

use crate::out::outln;
use crate::{Failure, shown, usage};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use warden::oci;
use warden::provenance::SigningKey;

#[derive(clap::Args)]
pub struct SignArgs {
    /// The component file to sign, or an oci://HOST/REPO:TAG (or @sha256:…)
    /// reference whose signature is pushed to the registry.
    #[arg(required_unless_present = "generate_key", value_name = "COMPONENT")]
    component: Option<PathBuf>,
    /// The private key (cosign's encrypted PEM; password in COSIGN_PASSWORD).
    #[arg(long, value_name = "FILE", required_unless_present = "generate_key")]
    key: Option<PathBuf>,
    /// Where to write the signature [default: COMPONENT.sig].
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Make a new ECDSA P-256 key pair instead: PREFIX.key (encrypted with
    /// COSIGN_PASSWORD) and PREFIX.pub, for `signed-by = { key = "PREFIX.pub" }`.
    #[arg(long, value_name = "PREFIX", conflicts_with_all = ["component", "key", "output"])]
    generate_key: Option<PathBuf>,
}

pub async fn sign(args: SignArgs) -> Result<u8, Failure> {
    let password = password()?;
    if let Some(prefix) = args.generate_key {
        return generate(&prefix, password.as_bytes());
    }
    let (Some(component), Some(key)) = (args.component, args.key) else {
        return Err(usage(anyhow::anyhow!(
            "expected a component and --key FILE"
        )));
    };
    let key = SigningKey::load(&key, password.as_bytes()).map_err(|e| usage(e.into()))?;
    if let Some(text) = component.to_str().filter(|t| t.starts_with("oci://")) {
        if args.output.is_some() {
            return Err(usage(anyhow::anyhow!(
                "--output is for a component file; a registry signature is pushed under the tag sha256-<digest>.sig"
            )));
        }
        return sign_registry(&key, text).await;
    }
    let bytes = warden::source::read_component(&component).map_err(|e| usage(e.into()))?;
    let signature = key.sign(&bytes).map_err(|e| usage(e.into()))?;
    let output = args.output.unwrap_or_else(|| {
        let mut p = component.clone().into_os_string();
        p.push(".sig");
        PathBuf::from(p)
    });
    std::fs::write(&output, format!("{signature}\n")).map_err(|e| {
        usage(anyhow::anyhow!(
            "cannot write the signature {}: {e}",
            shown(&output.display().to_string())
        ))
    })?;
    outln!(
        "signed {} ({}): {}",
        shown(&component.display().to_string()),
        warden::Identity::of(&bytes),
        shown(&output.display().to_string())
    )?;
    Ok(0)
}

/// Signs the artifact `text` names and pushes the signature beside it.
async fn sign_registry(key: &SigningKey, text: &str) -> Result<u8, Failure> {
    let reference = text
        .parse::<oci::OciRef>()
        .map_err(|e| usage(anyhow::anyhow!(e)))?;
    let credentials = oci::Credentials::from_env();
    let digest = oci::manifest_digest(&reference, credentials.as_ref())
        .await
        .map_err(crate::registry::failure)?;
    let repository = format!("{}/{}", reference.registry(), reference.repository);
    let payload = warden::provenance::simple_signing_payload(&repository, &digest);
    let signature = key.sign(&payload).map_err(|e| usage(e.into()))?;
    let at = oci::push_signature(
        &reference,
        &digest,
        &payload,
        &signature,
        credentials.as_ref(),
    )
    .await
    .map_err(crate::registry::failure)?;
    outln!("signed {}: {at}", reference.with_digest(digest))?;
    Ok(0)
}

/// cosign's `COSIGN_PASSWORD` (empty is a choice; unset is not).
fn password() -> Result<zeroize::Zeroizing<String>, Failure> {
    match std::env::var("COSIGN_PASSWORD") {
        Ok(p) => Ok(zeroize::Zeroizing::new(p)),
        Err(_) => Err(usage(anyhow::anyhow!(
            "set COSIGN_PASSWORD to the key's password (cosign's convention; it may be empty)"
        ))),
    }
}

/// Writes PREFIX.key (mode 0600, never over an existing file) and PREFIX.pub.
fn generate(prefix: &Path, password: &[u8]) -> Result<u8, Failure> {
    let with = |ext: &str| {
        let mut p = prefix.to_owned().into_os_string();
        p.push(ext);
        PathBuf::from(p)
    };
    let (private_path, public_path) = (with(".key"), with(".pub"));
    if let Some(dir) = private_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            usage(anyhow::anyhow!(
                "cannot make the directory {}: {e}",
                shown(&dir.display().to_string())
            ))
        })?;
    }
    let (key, private) = SigningKey::generate(password).map_err(|e| usage(e.into()))?;
    let private = zeroize::Zeroizing::new(private);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let written = opts.open(&private_path).and_then(|mut f| {
        f.write_all(private.as_bytes())?;
        f.sync_all()
    });
    written.map_err(|e| {
        usage(anyhow::anyhow!(
            "cannot write the private key {} (an existing key is never overwritten): {e}",
            shown(&private_path.display().to_string())
        ))
    })?;
    if let Err(e) = std::fs::write(&public_path, &key.public_pem) {
        // Nothing half-made: the private key without its public half goes.
        let _ = std::fs::remove_file(&private_path);
        return Err(usage(anyhow::anyhow!(
            "cannot write the public key {}: {e}",
            shown(&public_path.display().to_string())
        )));
    }
    outln!(
        "private key: {} (encrypted with COSIGN_PASSWORD)\npublic key:  {} (fingerprint {})",
        shown(&private_path.display().to_string()),
        shown(&public_path.display().to_string()),
        key.trusted(&public_path)
            .map(|k| k.fingerprint)
            .unwrap_or_default()
    )?;
    Ok(0)
}
