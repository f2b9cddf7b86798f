//! Keyless signatures, checked offline.
//!
//! `cosign sign-blob --bundle tool.wasm.sigstore.json tool.wasm` writes a
//! Sigstore bundle: a short-lived Fulcio certificate naming who signed (an
//! email or URI, and the OIDC issuer that vouched for it), the signature
//! over the file, and the Rekor transparency-log entry with its signed
//! entry timestamp (SET). It is checked against a trust root file
//! (Sigstore's `trusted_root.json`), never the network:
//!
//! 1. the entry's SET verifies with a transparency log key of the trust
//!    root, and the entry records these bytes' digest, this signature and
//!    this certificate; its integrated time is when the signing happened;
//! 2. the certificate chains to a certificate authority of the trust root,
//!    for code signing, valid at that time;
//! 3. an SCT embedded in it verifies with a CT log key of the trust root
//!    (the certificate was publicly logged);
//! 4. its subject alternative name is the manifest's `identity` and its
//!    Fulcio issuer extension the manifest's `issuer`, both exactly;
//! 5. the signature over the bytes verifies with the certificate's key.
//!
//! Every reason a bundle is refused is a sentence that follows "the bundle
//! at X"; strings from the bundle are escaped and cut before they are shown.

mod bundle;
mod trust_root;

pub use trust_root::TrustRoot;

use super::cut;
use crate::identity::Identity;
use base64::Engine as _;
use bundle::Bundle;
use sigstore::crypto::{CosignVerificationKey, Signature};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};
use x509_cert::Certificate;
use x509_cert::der::asn1::{ObjectIdentifier, Utf8StringRef};
use x509_cert::der::{Decode as _, Encode as _};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

/// The largest trust root file read (the public-good one is ~7 KiB).
pub const MAX_TRUST_ROOT: u64 = 1 << 20;
/// The largest bundle read (a cosign bundle is ~5 KiB).
pub const MAX_BUNDLE: u64 = 256 << 10;

/// The certificate's embedded SCT list (RFC 6962).
const SCT_LIST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.11129.2.4.2");
/// Fulcio's OIDC issuer extension: a DER UTF8String (v2) or raw bytes (v1).
const ISSUER_V2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.8");
const ISSUER_V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.1");
/// id-kp-codeSigning (1.3.6.1.5.5.7.3.3), its DER value bytes.
const CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];

/// Who must have signed, and the trust root that says so:
/// `signed-by = { identity = "...", issuer = "...", trust-root = "..." }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyless {
    pub identity: String,
    pub issuer: String,
    pub trust_root: Arc<TrustRoot>,
}

impl fmt::Display for Keyless {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the identity {} (issuer {}) under the trust root {}",
            self.identity,
            self.issuer,
            self.trust_root.path.display()
        )
    }
}

impl Keyless {
    /// The signer the audit trail names: `keyless:<issuer> <identity>`.
    pub fn signer(&self) -> String {
        format!("keyless:{} {}", self.issuer, self.identity)
    }

    /// Checks `bundle` (a Sigstore bundle's JSON) over `bytes`, whose
    /// identity (already computed by the load) is `identity`; the error is a
    /// reason to follow "the bundle at X".
    pub fn verify(&self, bytes: &[u8], identity: &Identity, bundle: &[u8]) -> Result<(), String> {
        let b = Bundle::parse(bundle)?;
        let digest = identity.digest();
        if let Some(d) = &b.digest
            && d != digest
        {
            return Err("is for other bytes (its message digest is not this component's)".into());
        }
        let time = self.trust_root.check_entry(&b, digest)?;
        let leaf = self.trust_root.check_certificate(&b.certificate, time)?;
        let (identity, issuer) = names(&leaf)?;
        if identity != self.identity || issuer != self.issuer {
            return Err(format!(
                "was signed by {} (issuer {}), expected {} (issuer {})",
                shown(&identity),
                shown(&issuer),
                self.identity,
                self.issuer
            ));
        }
        let spki = leaf
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .map_err(|e| format!("has a certificate whose key cannot be read: {e}"))?;
        let key = CosignVerificationKey::try_from_der(&spki)
            .map_err(|e| format!("has a certificate whose key cannot be used: {e}"))?;
        key.verify_signature(Signature::Raw(&b.signature), bytes)
            .map_err(|_| {
                "does not verify: its signature is not over these bytes (they were changed after signing) or not by its certificate's key".to_owned()
            })
    }
}

/// The certificate's identity (its email or URI subject alternative name)
/// and its Fulcio OIDC issuer.
fn names(leaf: &Certificate) -> Result<(String, String), String> {
    let san = leaf
        .tbs_certificate()
        .get_extension::<SubjectAltName>()
        .ok()
        .flatten()
        .ok_or("has a certificate with no subject alternative name (no signer identity)")?
        .1;
    // Fulcio names exactly one signer; a certificate naming several is not
    // read as whichever comes first.
    let identity = match san.0.as_slice() {
        [GeneralName::Rfc822Name(s) | GeneralName::UniformResourceIdentifier(s)] => s.to_string(),
        [_] => {
            return Err(
                "has a certificate whose subject alternative name is not an email or URI".into(),
            );
        }
        _ => {
            return Err(
                "has a certificate that names more than one subject alternative name (Fulcio names one signer)".into(),
            );
        }
    };
    let issuer = if let Some(e) = extension(leaf, ISSUER_V2) {
        Utf8StringRef::from_der(e.extn_value.as_bytes())
            .map(|s| s.as_str().to_owned())
            .map_err(|_| "has a certificate whose OIDC issuer extension cannot be read")?
    } else if let Some(e) = extension(leaf, ISSUER_V1) {
        String::from_utf8(e.extn_value.as_bytes().to_vec())
            .map_err(|_| "has a certificate whose OIDC issuer extension is not UTF-8")?
    } else {
        return Err(
            "has a certificate with no OIDC issuer extension (not issued by Fulcio)".into(),
        );
    };
    Ok((identity, issuer))
}

fn extension(cert: &Certificate, oid: ObjectIdentifier) -> Option<&Extension> {
    cert.tbs_certificate()
        .extensions()?
        .iter()
        .find(|e| e.extn_id == oid)
}

fn b64(text: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| "is not base64".to_owned())
}

/// A time for messages.
fn at(secs: u64) -> String {
    // RFC 3339 ends at 9999-12-31; a log could sign a later time.
    if secs >= 253_402_300_800 {
        return format!("{secs} seconds after the epoch");
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// A string from a bundle or certificate, escaped and cut for a message.
fn shown(s: &str) -> String {
    crate::redact::escape_control(&cut(s, 120)).into_owned()
}
