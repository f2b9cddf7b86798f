//! `warden sign`: cosign-compatible keyed signatures, for tool authors
//! without cosign at hand.
//!
//! `warden sign --generate-key keys/tools` writes `keys/tools.key` (an
//! encrypted `SIGSTORE PRIVATE KEY`, as `cosign generate-key-pair` writes)
//! and `keys/tools.pub`; `warden sign --key keys/tools.key tool.wasm`
//! writes `tool.wasm.sig` (as `cosign sign-blob --key` prints). The
//! password is `COSIGN_PASSWORD`'s, as cosign's is.
//!
//! `warden sign --key keys/tools.key --component tool.wasm
//! oci://HOST/REPO:TAG` signs a registry artifact as `cosign sign --key`
//! does: cosign's simple-signing payload naming the repository and the
//! manifest digest the reference resolves to, pushed under the tag
//! `sha256-<hex>.sig`. It replaces any signatures already at that tag
//! (cosign appends; Warden reads either). A tag names whatever the
//! registry says when asked, so signing one needs `--component`: the
//! manifest's layer must be that file's bytes, or nothing is signed. By
//! digest (`@sha256:…`), `--component` is optional, and checked when given.

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
    /// For an oci:// reference: the component file meant. The registry's
    /// manifest must name these bytes as its layer, or nothing is signed
    /// (required for a tag, which names whatever the registry says).
    #[arg(long = "component", value_name = "FILE")]
    component_file: Option<PathBuf>,
    /// Make a new ECDSA P-256 key pair instead: PREFIX.key (encrypted with
    /// COSIGN_PASSWORD) and PREFIX.pub, for `signed-by = { key = "PREFIX.pub" }`.
    #[arg(long, value_name = "PREFIX", conflicts_with_all = ["component", "key", "output", "component_file"])]
    generate_key: Option<PathBuf>,
}

pub async fn sign(args: SignArgs, offline: bool) -> Result<u8, Failure> {
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
        crate::registry::online("signing an oci:// reference", offline)?;
        return sign_registry(&key, text, args.component_file.as_deref()).await;
    }
    if args.component_file.is_some() {
        return Err(usage(anyhow::anyhow!(
            "--component is for an oci:// reference (the file its registry manifest must name); a component file is signed as given"
        )));
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
/// With `component` (required for a tag), the registry's manifest must
/// name that file's bytes as its layer.
async fn sign_registry(
    key: &SigningKey,
    text: &str,
    component: Option<&Path>,
) -> Result<u8, Failure> {
    let reference = text
        .parse::<oci::OciRef>()
        .map_err(|e| usage(anyhow::anyhow!(e)))?;
    let expected = match component {
        Some(path) => {
            let bytes = warden::source::read_component(path).map_err(|e| usage(e.into()))?;
            Some(warden::Identity::of(&bytes))
        }
        None if reference.digest().is_none() => {
            return Err(usage(anyhow::anyhow!(
                "{reference}: signing a tag needs --component FILE, the component meant (the tag names whatever the registry says when asked; its manifest must name these bytes), or sign by digest (oci://…@sha256:…)"
            )));
        }
        None => None,
    };
    let credentials = oci::Credentials::from_env();
    let digest = oci::manifest_digest(&reference, expected.as_ref(), credentials.as_ref())
        .await
        .map_err(crate::registry::failure)?;
    let payload =
        warden::provenance::simple_signing_payload(&reference.docker_reference(), &digest);
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

/// Writes PREFIX.key (mode 0600) and PREFIX.pub, each created new: when
/// either exists, nothing is generated or written.
fn generate(prefix: &Path, password: &[u8]) -> Result<u8, Failure> {
    let with = |ext: &str| {
        let mut p = prefix.to_owned().into_os_string();
        p.push(ext);
        PathBuf::from(p)
    };
    let (private_path, public_path) = (with(".key"), with(".pub"));
    for path in [&private_path, &public_path] {
        if std::fs::symlink_metadata(path).is_ok() {
            return Err(usage(anyhow::anyhow!(
                "{} already exists: an existing key is never overwritten (remove it, or choose another PREFIX)",
                shown(&path.display().to_string())
            )));
        }
    }
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
    let create = |path: &Path, mode: u32, bytes: &[u8], what: &str| {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
        #[cfg(not(unix))]
        let _ = mode;
        let failed = |e: std::io::Error| {
            usage(anyhow::anyhow!(
                "cannot write the {what} {} (an existing key is never overwritten): {e}",
                shown(&path.display().to_string())
            ))
        };
        let mut file = opts.open(path).map_err(failed)?;
        // Made by this command: not left part-written (a disk full).
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| {
                let _ = std::fs::remove_file(path);
                failed(e)
            })
    };
    create(
        private_path.as_path(),
        0o600,
        private.as_bytes(),
        "private key",
    )?;
    if let Err(e) = create(
        public_path.as_path(),
        0o644,
        key.public_pem.as_bytes(),
        "public key",
    ) {
        // Nothing half-made: the private key without its public half goes
        // (it was created just now, by this command).
        let _ = std::fs::remove_file(&private_path);
        return Err(e);
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
