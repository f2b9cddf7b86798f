//! `warden sign`: cosign-compatible keyed signatures, for tool authors
//! without cosign at hand.
//!
//! `warden sign --generate-key keys/tools` writes `keys/tools.key` (an
//! encrypted `SIGSTORE PRIVATE KEY`, as `cosign generate-key-pair` writes)
//! and `keys/tools.pub`; `warden sign --key keys/tools.key tool.wasm`
//! writes `tool.wasm.sig` (as `cosign sign-blob --key` prints). The
//! password is `COSIGN_PASSWORD`'s, as cosign's is.

use crate::out::outln;
use crate::{Failure, shown, usage};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use warden::provenance::SigningKey;

#[derive(clap::Args)]
pub struct SignArgs {
    /// The component file to sign.
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

pub fn sign(args: SignArgs) -> Result<u8, Failure> {
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
    let bytes = warden::provenance::read_component(&component).map_err(|e| usage(e.into()))?;
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
