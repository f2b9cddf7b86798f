//! Who signed a component: cosign-compatible keyed signatures, checked
//! before a component is compiled.
//!
//! A manifest names the key a component must be signed with
//! (`signed-by = { key = "keys/tools.pub" }`, for every tool or per tool).
//! What is signed is what cosign signs:
//!
//! - a component file: its bytes, with the signature beside it
//!   (`cosign sign-blob --key cosign.key tool.wasm > tool.wasm.sig`, or
//!   `warden sign`): base64 of an ASN.1 ECDSA P-256 / SHA-256 signature;
//! - a component in a registry: cosign's simple-signing payload naming the
//!   artifact's manifest digest, stored under the tag
//!   `sha256-<digest>.sig` (`cosign sign --key`, or `warden sign`).
//!
//! Keys are cosign's: a PEM public key to verify, an encrypted
//! `SIGSTORE PRIVATE KEY` (scrypt + secretbox, the password from
//! `COSIGN_PASSWORD`) to sign. The crypto is the sigstore crate's.
//!
//! Or it names who must have signed, keyless (`signed-by = { identity,
//! issuer, trust-root }`): a Sigstore bundle beside the file, checked
//! offline against a trust root file ([`keyless`]).

pub mod keyless;

pub use keyless::{Keyless, MAX_BUNDLE, TrustRoot};

use crate::identity::Identity;
use base64::Engine as _;
use sigstore::crypto::signing_key::SigStoreKeyPair;
use sigstore::crypto::{CosignVerificationKey, Signature, SigningScheme};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The largest key file read.
pub const MAX_KEY: u64 = 16 << 10;
/// The largest signature read (an ECDSA P-256 signature in base64 is ~96
/// bytes; RSA-4096 ~684).
pub const MAX_SIGNATURE: u64 = 4 << 10;
/// The largest simple-signing payload read.
pub const MAX_PAYLOAD: u64 = 16 << 10;

/// The simple-signing payload's media type (a cosign signature layer).
pub const PAYLOAD_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The annotation holding a cosign signature layer's signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

#[derive(Debug, thiserror::Error)]
pub enum ProvenanceError {
    #[error("cannot read {what} {}: {reason}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{} is not a public key (expected a PEM `PUBLIC KEY`, as `cosign generate-key-pair` or `warden sign --generate-key` writes): {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error("{} is not a cosign private key or its password is wrong (expected an `ENCRYPTED SIGSTORE PRIVATE KEY`, the password in COSIGN_PASSWORD): {reason}", path.display())]
    PrivateKey { path: PathBuf, reason: String },
    #[error("the signature does not verify with the key {key} ({reason})")]
    Mismatch { key: String, reason: String },
    #[error("{} is not a Sigstore trust root (expected a trusted_root.json, as `cosign trusted-root create` writes): {reason}", path.display())]
    TrustRoot { path: PathBuf, reason: String },
    #[error("cannot sign: {0}")]
    Sign(String),
}

/// A public key components must be signed with.
#[derive(Clone)]
pub struct TrustedKey {
    /// Where it was read from, for messages.
    pub path: PathBuf,
    /// `sha256:<hex>` of the key's DER encoding: the signer the audit
    /// trail names.
    pub fingerprint: String,
    key: Arc<CosignVerificationKey>,
}

impl fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TrustedKey({} {})",
            self.path.display(),
            self.fingerprint
        )
    }
}

impl PartialEq for TrustedKey {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Eq for TrustedKey {}

impl fmt::Display for TrustedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.path.display(), self.short())
    }
}

impl TrustedKey {
    /// Reads a PEM public key (ECDSA P-256/P-384, Ed25519 or RSA, as
    /// cosign takes).
    pub fn load(path: &Path) -> Result<TrustedKey, ProvenanceError> {
        let pem = read_bounded(path, MAX_KEY, "the public key")?;
        TrustedKey::from_pem(path, &pem)
    }

    pub fn from_pem(path: &Path, pem: &[u8]) -> Result<TrustedKey, ProvenanceError> {
        let bad = |reason: String| ProvenanceError::Key {
            path: path.to_owned(),
            reason,
        };
        let text = std::str::from_utf8(pem).map_err(|_| bad("not UTF-8 text".into()))?;
        let parsed = ::pem::parse(text.trim()).map_err(|e| bad(e.to_string()))?;
        if parsed.tag() != "PUBLIC KEY" {
            return Err(bad(format!(
                "found a `{}` block",
                crate::redact::escape_control(&cut(parsed.tag(), 40))
            )));
        }
        let key = CosignVerificationKey::try_from_der(parsed.contents())
            .map_err(|e| bad(e.to_string()))?;
        Ok(TrustedKey {
            path: path.to_owned(),
            fingerprint: Identity::of(parsed.contents()).to_string(),
            key: Arc::new(key),
        })
    }

    /// The fingerprint's first 12 hex digits, for messages.
    pub fn short(&self) -> String {
        let hex = self.fingerprint.trim_start_matches("sha256:");
        format!("sha256:{}", &hex[..hex.len().min(12)])
    }

    /// Checks `signature` (base64, as cosign writes it) over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), ProvenanceError> {
        let mismatch = |reason: &str| ProvenanceError::Mismatch {
            key: self.to_string(),
            reason: reason.into(),
        };
        let signature = signature.trim_ascii();
        if signature.is_empty() {
            return Err(mismatch("the signature is empty"));
        }
        if base64::engine::general_purpose::STANDARD
            .decode(signature)
            .is_err()
        {
            return Err(mismatch("the signature is not base64"));
        }
        self.key
            .verify_signature(Signature::Base64Encoded(signature), message)
            .map_err(|_| {
                mismatch("signed by another key, or the signed bytes were changed after signing")
            })
    }

    /// Checks a cosign signature layer: `signature` over `payload`, and the
    /// payload names `manifest_digest` in `repository`
    /// (`HOST[:PORT]/REPOSITORY`, as [`simple_signing_payload`] writes it):
    /// a signature for the same bytes in another repository (pushes are
    /// reproducible, so another tool's manifest can have this digest) is
    /// not a signature of this one.
    pub fn verify_payload(
        &self,
        payload: &[u8],
        signature: &[u8],
        manifest_digest: &Identity,
        repository: &str,
    ) -> Result<(), ProvenanceError> {
        self.verify(payload, signature)?;
        let mismatch = |reason: String| ProvenanceError::Mismatch {
            key: self.to_string(),
            reason,
        };
        let named = payload_names(payload).map_err(mismatch)?;
        if named.digest != manifest_digest.to_string() {
            return Err(mismatch(format!(
                "the signature is for the artifact {}, not this one ({manifest_digest})",
                crate::redact::escape_control(&cut(&named.digest, 80))
            )));
        }
        if docker_hub(&named.repository) != docker_hub(repository) {
            return Err(mismatch(format!(
                "the signature is for the repository '{}', not this one ('{}')",
                crate::redact::escape_control(&cut(&named.repository, 120)),
                crate::redact::escape_control(&cut(repository, 120))
            )));
        }
        Ok(())
    }
}

/// A repository as cosign names Docker Hub's (go-containerregistry):
/// `docker.io` and `registry-1.docker.io` as `index.docker.io`, and a
/// repository of one component under `library/`. Others as they are.
fn docker_hub(repository: &str) -> std::borrow::Cow<'_, str> {
    let Some((registry, path)) = repository.split_once('/') else {
        return repository.into();
    };
    if !matches!(
        registry,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    ) {
        return repository.into();
    }
    if path.contains('/') {
        format!("index.docker.io/{path}").into()
    } else {
        format!("index.docker.io/library/{path}").into()
    }
}

/// What a simple-signing payload names.
#[derive(Debug)]
struct Named {
    /// `critical.image.docker-manifest-digest`.
    digest: String,
    /// `critical.identity.docker-reference`.
    repository: String,
}

/// The manifest digest and repository a simple-signing payload names.
fn payload_names(payload: &[u8]) -> Result<Named, String> {
    #[derive(serde::Deserialize)]
    struct Payload {
        critical: Critical,
    }
    #[derive(serde::Deserialize)]
    struct Critical {
        identity: ImageIdentity,
        image: Image,
        #[serde(rename = "type")]
        kind: String,
    }
    #[derive(serde::Deserialize)]
    struct ImageIdentity {
        #[serde(rename = "docker-reference")]
        reference: String,
    }
    #[derive(serde::Deserialize)]
    struct Image {
        #[serde(rename = "docker-manifest-digest")]
        digest: String,
    }
    let p: Payload = serde_json::from_slice(payload)
        .map_err(|e| format!("the signed payload is not cosign's simple-signing JSON: {e}"))?;
    if p.critical.kind != "cosign container image signature" {
        return Err(format!(
            "the signed payload's type is `{}`, not `cosign container image signature`",
            crate::redact::escape_control(&cut(&p.critical.kind, 80))
        ));
    }
    Ok(Named {
        digest: p.critical.image.digest,
        repository: p.critical.identity.reference,
    })
}

/// Cosign's simple-signing payload for the artifact `repository` (e.g.
/// `127.0.0.1:5000/tools/echo`) at `manifest_digest`.
pub fn simple_signing_payload(repository: &str, manifest_digest: &Identity) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": {"docker-reference": repository},
            "image": {"docker-manifest-digest": manifest_digest.to_string()},
            "type": "cosign container image signature",
        },
        "optional": null,
    }))
    .unwrap_or_default()
}

/// A cosign key pair for signing.
pub struct SigningKey {
    signer: sigstore::crypto::SigStoreSigner,
    /// The matching public key, PEM.
    pub public_pem: String,
}

impl SigningKey {
    /// A new ECDSA P-256 key pair (cosign's default); returns it with its
    /// private key encrypted under `password`, PEM.
    pub fn generate(password: &[u8]) -> Result<(SigningKey, String), ProvenanceError> {
        let sign_err = |e: sigstore::errors::SigstoreError| ProvenanceError::Sign(e.to_string());
        let signer = SigningScheme::ECDSA_P256_SHA256_ASN1
            .create_signer()
            .map_err(sign_err)?;
        let pair = signer.to_sigstore_keypair().map_err(sign_err)?;
        let private = pair
            .private_key_to_encrypted_pem(password)
            .map_err(sign_err)?;
        let public_pem = pair.public_key_to_pem().map_err(sign_err)?;
        Ok((SigningKey { signer, public_pem }, private.to_string()))
    }

    /// Reads an encrypted cosign private key.
    pub fn load(path: &Path, password: &[u8]) -> Result<SigningKey, ProvenanceError> {
        let pem = zeroize::Zeroizing::new(read_bounded(path, MAX_KEY, "the private key")?);
        let bad = |e: sigstore::errors::SigstoreError| ProvenanceError::PrivateKey {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        let pair = SigStoreKeyPair::from_encrypted_pem(&pem, password).map_err(bad)?;
        let signer = pair
            .to_sigstore_signer(&SigningScheme::ECDSA_P256_SHA256_ASN1)
            .map_err(bad)?;
        let public_pem = pair.public_key_to_pem().map_err(bad)?;
        Ok(SigningKey { signer, public_pem })
    }

    /// A signature over `message`, base64, as cosign writes it.
    pub fn sign(&self, message: &[u8]) -> Result<String, ProvenanceError> {
        let der = self
            .signer
            .sign(message)
            .map_err(|e| ProvenanceError::Sign(e.to_string()))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(der))
    }

    /// The public key, as a [`TrustedKey`].
    pub fn trusted(&self, path: &Path) -> Result<TrustedKey, ProvenanceError> {
        TrustedKey::from_pem(path, self.public_pem.as_bytes())
    }
}

/// Reads at most `max` bytes of a regular file (not a FIFO or device),
/// refusing a larger one.
pub(crate) fn read_bounded(
    path: &Path,
    max: u64,
    what: &'static str,
) -> Result<Vec<u8>, ProvenanceError> {
    crate::files::read_regular(path, max).map_err(|e| ProvenanceError::Read {
        what,
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (SigningKey, TrustedKey) {
        let (key, _) = SigningKey::generate(b"pw").unwrap();
        let trusted = key.trusted(Path::new("k.pub")).unwrap();
        (key, trusted)
    }

    #[test]
    fn a_blob_signature_verifies_and_a_changed_blob_or_other_key_does_not() {
        let (key, trusted) = pair();
        let sig = key.sign(b"component bytes").unwrap();
        trusted.verify(b"component bytes", sig.as_bytes()).unwrap();
        let changed = trusted
            .verify(b"component bytez", sig.as_bytes())
            .unwrap_err();
        assert!(
            changed
                .to_string()
                .contains("does not verify with the key k.pub (sha256:"),
            "{changed}"
        );
        let (_, other) = pair();
        assert!(other.verify(b"component bytes", sig.as_bytes()).is_err());
        for bad in [&b""[..], b"not base64!", b"AAAA"] {
            assert!(trusted.verify(b"component bytes", bad).is_err());
        }
    }

    #[test]
    fn an_encrypted_key_round_trips_and_a_wrong_password_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (key, private) = SigningKey::generate(b"pw").unwrap();
        let path = dir.path().join("cosign.key");
        std::fs::write(&path, &private).unwrap();
        assert!(private.contains("ENCRYPTED SIGSTORE PRIVATE KEY"));
        let loaded = SigningKey::load(&path, b"pw").unwrap();
        assert_eq!(loaded.public_pem, key.public_pem);
        let sig = loaded.sign(b"x").unwrap();
        key.trusted(&path)
            .unwrap()
            .verify(b"x", sig.as_bytes())
            .unwrap();
        let wrong = SigningKey::load(&path, b"nope").err().unwrap();
        assert!(wrong.to_string().contains("password is wrong"), "{wrong}");
    }

    #[test]
    fn a_payload_must_name_the_artifact_it_is_checked_for() {
        let (key, trusted) = pair();
        let digest = Identity::of(b"manifest");
        let payload = simple_signing_payload("127.0.0.1:5000/tools/echo", &digest);
        let sig = key.sign(&payload).unwrap();
        trusted
            .verify_payload(
                &payload,
                sig.as_bytes(),
                &digest,
                "127.0.0.1:5000/tools/echo",
            )
            .unwrap();
        let other = Identity::of(b"another manifest");
        let err = trusted
            .verify_payload(
                &payload,
                sig.as_bytes(),
                &other,
                "127.0.0.1:5000/tools/echo",
            )
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("the signature is for the artifact"),
            "{err}"
        );
    }

    #[test]
    fn docker_hub_is_named_as_cosign_names_it() {
        for (ours, cosigns) in [
            ("docker.io/org/tool", "index.docker.io/org/tool"),
            ("registry-1.docker.io/org/tool", "index.docker.io/org/tool"),
            ("docker.io/tool", "index.docker.io/library/tool"),
            ("ghcr.io/org/tool", "ghcr.io/org/tool"),
            ("127.0.0.1:5000/tools/echo", "127.0.0.1:5000/tools/echo"),
        ] {
            assert_eq!(docker_hub(ours), docker_hub(cosigns), "{ours}");
        }
        assert_ne!(
            docker_hub("docker.io/org/a"),
            docker_hub("index.docker.io/org/b")
        );
        assert_ne!(
            docker_hub("ghcr.io/org/tool"),
            docker_hub("docker.io/org/tool")
        );
    }

    #[test]
    fn a_payload_must_name_the_repository_it_is_checked_for() {
        let (key, trusted) = pair();
        let digest = Identity::of(b"manifest");
        let payload = simple_signing_payload("reg/a", &digest);
        let sig = key.sign(&payload).unwrap();
        trusted
            .verify_payload(&payload, sig.as_bytes(), &digest, "reg/a")
            .unwrap();
        let err = trusted
            .verify_payload(&payload, sig.as_bytes(), &digest, "reg/b")
            .unwrap_err();
        let ProvenanceError::Mismatch { reason, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(
            reason,
            "the signature is for the repository 'reg/a', not this one ('reg/b')"
        );
        // A repository named with escape sequences is shown escaped.
        let payload = simple_signing_payload("reg/\u{1b}[2Ja", &digest);
        let sig = key.sign(&payload).unwrap();
        let err = trusted
            .verify_payload(&payload, sig.as_bytes(), &digest, "reg/b")
            .unwrap_err();
        assert!(!err.to_string().contains('\u{1b}'), "{err:?}");
        // A payload without a docker-reference is not cosign's.
        let bare = serde_json::to_vec(&serde_json::json!({
            "critical": {
                "image": {"docker-manifest-digest": digest.to_string()},
                "type": "cosign container image signature",
            },
        }))
        .unwrap();
        let sig = key.sign(&bare).unwrap();
        let err = trusted
            .verify_payload(&bare, sig.as_bytes(), &digest, "reg/a")
            .unwrap_err();
        assert!(
            err.to_string().contains(
                "the signed payload is not cosign's simple-signing JSON: missing field `identity`"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_key_file_that_is_not_a_public_key_is_refused_with_what_was_found() {
        let dir = tempfile::tempdir().unwrap();
        let (_, private) = SigningKey::generate(b"pw").unwrap();
        let path = dir.path().join("k.pub");
        std::fs::write(&path, &private).unwrap();
        let err = TrustedKey::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("found a `ENCRYPTED SIGSTORE PRIVATE KEY` block"),
            "{err}"
        );
        std::fs::write(&path, vec![b'A'; MAX_KEY as usize + 1]).unwrap();
        let err = TrustedKey::load(&path).unwrap_err().to_string();
        assert!(err.contains("more than the 16384 bytes expected"), "{err}");
        let fifo = dir.path().join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let err = TrustedKey::load(&fifo).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }
}
