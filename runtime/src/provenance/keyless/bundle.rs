//! A Sigstore bundle's JSON (`cosign sign-blob --bundle`), v0.1 to v0.3:
//! the parts the keyless check uses.

use super::{b64, shown};
use rustls_pki_types::CertificateDer;

/// A bundle's parts this check uses.
pub(super) struct Bundle {
    pub(super) certificate: CertificateDer<'static>,
    pub(super) signature: Vec<u8>,
    pub(super) digest: Option<[u8; 32]>,
    pub(super) entry: Entry,
}

pub(super) struct Entry {
    pub(super) log_index: i64,
    pub(super) log_id: [u8; 32],
    pub(super) integrated_time: i64,
    pub(super) set: Vec<u8>,
    pub(super) body: Vec<u8>,
}

impl Bundle {
    pub(super) fn parse(text: &[u8]) -> Result<Bundle, String> {
        let raw: raw::Bundle = serde_json::from_slice(text)
            .map_err(|e| format!("is not a Sigstore bundle: {}", shown(&e.to_string())))?;
        if !raw
            .media_type
            .starts_with("application/vnd.dev.sigstore.bundle")
        {
            return Err(format!(
                "is not a Sigstore bundle (its mediaType is {})",
                shown(&raw.media_type)
            ));
        }
        let m = raw.verification_material;
        let certificate = match (m.certificate, m.x509_certificate_chain) {
            (Some(c), _) => c.raw_bytes,
            (None, Some(chain)) => {
                chain
                    .certificates
                    .into_iter()
                    .next()
                    .ok_or("has an empty certificate chain")?
                    .raw_bytes
            }
            (None, None) => {
                return Err("holds no certificate (a bundle signed with a key is checked with signed-by = { key = … })".into());
            }
        };
        let certificate = CertificateDer::from(
            b64(&certificate).map_err(|e| format!("has a certificate that {e}"))?,
        );
        let Some(sig) = raw.message_signature else {
            return Err("holds no message signature (a DSSE attestation is not a signature over the component; expected the bundle `cosign sign-blob --bundle` writes)".into());
        };
        let signature = b64(&sig.signature).map_err(|e| format!("has a signature that {e}"))?;
        let digest = match sig.message_digest {
            None => None,
            Some(d) if d.algorithm == "SHA2_256" => Some(
                b64(&d.digest)
                    .ok()
                    .and_then(|d| <[u8; 32]>::try_from(d).ok())
                    .ok_or("has a message digest that is not a SHA-256 digest")?,
            ),
            Some(d) => {
                return Err(format!(
                    "has a message digest by {}, expected SHA2_256",
                    shown(&d.algorithm)
                ));
            }
        };
        let entry = m
            .tlog_entries
            .into_iter()
            .find(|e| e.inclusion_promise.is_some())
            .ok_or("has no transparency log entry with a signed entry timestamp (needed to check it offline)")?;
        let promise = entry.inclusion_promise.expect("found with one");
        let log_id = b64(&entry.log_id.key_id)
            .ok()
            .and_then(|id| <[u8; 32]>::try_from(id).ok())
            .ok_or("has a transparency log entry whose logId is not a SHA-256 key ID")?;
        Ok(Bundle {
            certificate,
            signature,
            digest,
            entry: Entry {
                log_index: entry
                    .log_index
                    .get()
                    .ok_or("has a logIndex that is not an integer")?,
                log_id,
                integrated_time: entry
                    .integrated_time
                    .get()
                    .ok_or("has an integratedTime that is not an integer")?,
                set: b64(&promise.signed_entry_timestamp)
                    .map_err(|e| format!("has a signed entry timestamp that {e}"))?,
                body: b64(&entry.canonicalized_body)
                    .map_err(|e| format!("has a transparency log entry body that {e}"))?,
            },
        })
    }
}

/// The JSON shapes read: Sigstore's protobuf specs in their JSON mapping.
pub(super) mod raw {
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Root {
        #[serde(default)]
        pub media_type: String,
        #[serde(default)]
        pub tlogs: Vec<Log>,
        #[serde(default)]
        pub certificate_authorities: Vec<Authority>,
        #[serde(default)]
        pub ctlogs: Vec<Log>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Log {
        pub public_key: PublicKey,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct PublicKey {
        pub raw_bytes: String,
        pub valid_for: Option<Window>,
    }

    #[derive(Deserialize)]
    pub struct Window {
        pub start: Option<String>,
        pub end: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Authority {
        pub cert_chain: Chain,
        pub valid_for: Option<Window>,
    }

    #[derive(Deserialize)]
    pub struct Chain {
        #[serde(default)]
        pub certificates: Vec<RawBytes>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct RawBytes {
        pub raw_bytes: String,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Bundle {
        #[serde(default)]
        pub media_type: String,
        pub verification_material: Material,
        pub message_signature: Option<MessageSignature>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Material {
        pub certificate: Option<RawBytes>,
        pub x509_certificate_chain: Option<Chain>,
        #[serde(default)]
        pub tlog_entries: Vec<TlogEntry>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct MessageSignature {
        pub message_digest: Option<MessageDigest>,
        pub signature: String,
    }

    #[derive(Deserialize)]
    pub struct MessageDigest {
        pub algorithm: String,
        pub digest: String,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct TlogEntry {
        pub log_index: Int,
        pub log_id: LogId,
        pub integrated_time: Int,
        pub inclusion_promise: Option<Promise>,
        pub canonicalized_body: String,
    }

    /// A protobuf int64: a string in JSON, or a number.
    #[derive(Deserialize)]
    #[serde(untagged)]
    pub enum Int {
        Text(String),
        Number(i64),
    }

    impl Int {
        pub fn get(&self) -> Option<i64> {
            match self {
                Int::Text(s) => s.parse().ok(),
                Int::Number(n) => Some(*n),
            }
        }
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct LogId {
        pub key_id: String,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Promise {
        pub signed_entry_timestamp: String,
    }

    /// A Rekor `hashedrekord` v0.0.1 entry body.
    #[derive(Deserialize)]
    pub struct HashedRekord {
        pub kind: String,
        pub spec: Spec,
    }

    #[derive(Deserialize)]
    pub struct Spec {
        pub data: Data,
        pub signature: Sig,
    }

    #[derive(Deserialize)]
    pub struct Data {
        pub hash: Hash,
    }

    #[derive(Deserialize)]
    pub struct Hash {
        pub algorithm: String,
        pub value: String,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Sig {
        pub content: String,
        pub public_key: Content,
    }

    #[derive(Deserialize)]
    pub struct Content {
        pub content: String,
    }
}
