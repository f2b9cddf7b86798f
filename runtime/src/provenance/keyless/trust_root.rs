//! The trust root file (Sigstore's `trusted_root.json`) and the checks
//! made against it: the transparency log entry, the certificate chain and
//! its embedded SCT.

use super::bundle::Bundle;
use super::{CODE_SIGNING, MAX_TRUST_ROOT, SCT_LIST, at, b64, extension, shown};
use crate::identity::Identity;
use crate::provenance::{ProvenanceError, cut, read_bounded};
use base64::Engine as _;
use rustls_pki_types::{CertificateDer, UnixTime};
use sha2::{Digest as _, Sha256};
use sigstore::crypto::{CosignVerificationKey, Signature};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};
use x509_cert::Certificate;
use x509_cert::der::{Decode as _, Encode as _, Tag, TagNumber, Tagged as _};
use x509_cert::ext::Extension;

/// A trust root file: the certificate authorities, transparency logs and
/// CT logs keyless signatures are checked against.
pub struct TrustRoot {
    pub path: PathBuf,
    /// The file's digest, to tell two trust roots apart.
    pub digest: Identity,
    cas: Vec<Authority>,
    tlogs: Vec<LogKey>,
    ctlogs: Vec<LogKey>,
}

impl fmt::Debug for TrustRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustRoot({} {})", self.path.display(), self.digest)
    }
}

impl PartialEq for TrustRoot {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest
    }
}

impl Eq for TrustRoot {}

struct Authority {
    /// Leaf-most first, the root last (the root is the trust anchor).
    chain: Vec<CertificateDer<'static>>,
    valid: Window,
}

struct LogKey {
    /// SHA-256 of the key's DER encoding: the log ID (RFC 6962).
    id: [u8; 32],
    key: CosignVerificationKey,
    valid: Window,
}

/// When a key or authority may be used, in seconds since the epoch.
#[derive(Clone, Copy, Default)]
struct Window {
    start: Option<u64>,
    end: Option<u64>,
}

impl Window {
    fn contains(&self, t: u64) -> bool {
        self.start.is_none_or(|s| s <= t) && self.end.is_none_or(|e| t <= e)
    }
}

impl TrustRoot {
    /// Reads a `trusted_root.json` (as `cosign trusted-root create` writes
    /// or Sigstore's TUF repository serves).
    pub fn load(path: &Path) -> Result<TrustRoot, ProvenanceError> {
        let text = read_bounded(path, MAX_TRUST_ROOT, "the trust root")?;
        TrustRoot::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &[u8]) -> Result<TrustRoot, ProvenanceError> {
        let bad = |reason: String| ProvenanceError::TrustRoot {
            path: path.to_owned(),
            reason,
        };
        let raw: super::bundle::raw::Root =
            serde_json::from_slice(text).map_err(|e| bad(e.to_string()))?;
        if !raw
            .media_type
            .starts_with("application/vnd.dev.sigstore.trustedroot")
        {
            return Err(bad(format!(
                "its mediaType is {:?}",
                cut(&raw.media_type, 80)
            )));
        }
        let mut cas = Vec::new();
        for (i, ca) in raw.certificate_authorities.into_iter().enumerate() {
            let chain = ca
                .cert_chain
                .certificates
                .iter()
                .map(|c| b64(&c.raw_bytes).map(CertificateDer::from))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(format!("certificateAuthorities[{i}]: {e}")))?;
            if chain.is_empty() {
                return Err(bad(format!(
                    "certificateAuthorities[{i}] has no certificates"
                )));
            }
            for (j, c) in chain.iter().enumerate() {
                Certificate::from_der(c).map_err(|e| {
                    bad(format!(
                        "certificateAuthorities[{i}].certChain.certificates[{j}]: {e}"
                    ))
                })?;
            }
            let valid = window(ca.valid_for.as_ref())
                .map_err(|e| bad(format!("certificateAuthorities[{i}].validFor: {e}")))?;
            cas.push(Authority { chain, valid });
        }
        let logs = |list: Vec<super::bundle::raw::Log>, field: &str| {
            list.into_iter()
                .enumerate()
                .map(|(i, log)| {
                    let der = b64(&log.public_key.raw_bytes)
                        .map_err(|e| bad(format!("{field}[{i}].publicKey: {e}")))?;
                    let key = CosignVerificationKey::try_from_der(&der)
                        .map_err(|e| bad(format!("{field}[{i}].publicKey: {e}")))?;
                    let valid = window(log.public_key.valid_for.as_ref())
                        .map_err(|e| bad(format!("{field}[{i}].publicKey.validFor: {e}")))?;
                    Ok(LogKey {
                        id: Sha256::digest(&der).into(),
                        key,
                        valid,
                    })
                })
                .collect::<Result<Vec<_>, ProvenanceError>>()
        };
        let tlogs = logs(raw.tlogs, "tlogs")?;
        let ctlogs = logs(raw.ctlogs, "ctlogs")?;
        for (list, field) in [
            (cas.is_empty(), "certificateAuthorities"),
            (tlogs.is_empty(), "tlogs"),
            (ctlogs.is_empty(), "ctlogs"),
        ] {
            if list {
                return Err(bad(format!("it names no {field}")));
            }
        }
        Ok(TrustRoot {
            path: path.to_owned(),
            digest: Identity::of(text),
            cas,
            tlogs,
            ctlogs,
        })
    }

    /// Checks the transparency log entry: its SET, and that it records
    /// `digest`, the bundle's signature and certificate. Returns its
    /// integrated time.
    pub(super) fn check_entry(&self, b: &Bundle, digest: &[u8; 32]) -> Result<u64, String> {
        let e = &b.entry;
        let log = self
            .tlogs
            .iter()
            .find(|l| l.id[..] == e.log_id[..])
            .ok_or("was logged by a transparency log the trust root does not name")?;
        let payload = format!(
            r#"{{"body":"{}","integratedTime":{},"logID":"{}","logIndex":{}}}"#,
            base64::engine::general_purpose::STANDARD.encode(&e.body),
            e.integrated_time,
            hex::encode(e.log_id),
            e.log_index
        );
        log.key
            .verify_signature(Signature::Raw(&e.set), payload.as_bytes())
            .map_err(|_| "has a transparency log entry whose signed entry timestamp does not verify with the log's key (the entry was changed)".to_owned())?;
        let time = u64::try_from(e.integrated_time)
            .map_err(|_| "has a negative integrated time".to_owned())?;
        if !log.valid.contains(time) {
            return Err(format!(
                "was logged at {} by a transparency log key the trust root does not trust then",
                at(time)
            ));
        }
        let body: super::bundle::raw::HashedRekord =
            serde_json::from_slice(&e.body).map_err(|err| {
                format!("has a transparency log entry that is not a hashedrekord: {err}")
            })?;
        if body.kind != "hashedrekord" {
            return Err(format!(
                "has a transparency log entry of kind {}, expected hashedrekord",
                shown(&body.kind)
            ));
        }
        let hash = &body.spec.data.hash;
        if !hash.algorithm.eq_ignore_ascii_case("sha256")
            || !hash.value.eq_ignore_ascii_case(&hex::encode(digest))
        {
            return Err(
                "has a transparency log entry for other bytes (its digest is not this component's)"
                    .into(),
            );
        }
        let logged_sig = b64(&body.spec.signature.content)
            .map_err(|err| format!("has a transparency log entry whose signature {err}"))?;
        if logged_sig != b.signature {
            return Err("has a transparency log entry for another signature".into());
        }
        let pem = b64(&body.spec.signature.public_key.content)
            .map_err(|err| format!("has a transparency log entry whose certificate {err}"))?;
        let logged_cert = std::str::from_utf8(&pem)
            .ok()
            .and_then(|t| ::pem::parse(t.trim()).ok());
        if logged_cert.is_none_or(|p| p.contents() != b.certificate.as_ref()) {
            return Err("has a transparency log entry for another certificate".into());
        }
        Ok(time)
    }

    /// Checks the certificate chains to an authority for code signing at
    /// `time`, and carries an SCT from a CT log of the trust root.
    pub(super) fn check_certificate(
        &self,
        der: &CertificateDer<'static>,
        time: u64,
    ) -> Result<Certificate, String> {
        let ee = webpki::EndEntityCert::try_from(der)
            .map_err(|e| format!("has a certificate that cannot be read: {e}"))?;
        let leaf = Certificate::from_der(der)
            .map_err(|e| format!("has a certificate that cannot be read: {e}"))?;
        let when = UnixTime::since_unix_epoch(Duration::from_secs(time));
        let mut last = String::from("no certificate authority of the trust root was valid then");
        for ca in self.cas.iter().filter(|ca| ca.valid.contains(time)) {
            let (root, intermediates) = ca.chain.split_last().expect("checked on load");
            let Ok(anchor) = webpki::anchor_from_trusted_cert(root) else {
                continue;
            };
            match ee.verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &[anchor],
                intermediates,
                when,
                webpki::KeyUsage::required(CODE_SIGNING),
                None,
                None,
            ) {
                Ok(_) => {
                    self.check_sct(&leaf, der, ca)?;
                    return Ok(leaf);
                }
                Err(e) => last = format!("{e:?}"),
            }
        }
        Err(format!(
            "has a certificate that does not chain to a certificate authority of the trust root for code signing at its signing time {} ({last})",
            at(time)
        ))
    }

    /// Checks an SCT embedded in `leaf` (issued by a certificate of `ca`)
    /// verifies with a CT log key of the trust root.
    fn check_sct(&self, leaf: &Certificate, der: &[u8], ca: &Authority) -> Result<(), String> {
        let list = extension(leaf, SCT_LIST)
            .ok_or("has a certificate with no embedded SCT (it was not logged to a CT log)")?;
        let list = x509_cert::der::asn1::OctetString::from_der(list.extn_value.as_bytes())
            .map_err(|e| format!("has a certificate whose SCT list cannot be read: {e}"))?;
        let scts =
            parse_scts(list.as_bytes()).ok_or("has a certificate whose SCT list cannot be read")?;
        let issuer = ca
            .chain
            .iter()
            .filter_map(|c| Certificate::from_der(c).ok())
            .find(|c| c.tbs_certificate().subject() == leaf.tbs_certificate().issuer())
            .ok_or("has a certificate whose issuer is not in the trust root's chain")?;
        let issuer_spki = issuer
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .map_err(|e| e.to_string())?;
        let issuer_key_hash: [u8; 32] = Sha256::digest(&issuer_spki).into();
        let tbs = precert_tbs(der)
            .map_err(|e| format!("has a certificate whose SCT cannot be checked: {e}"))?;
        for sct in &scts {
            let Some(log) = self.ctlogs.iter().find(|l| l.id == sct.log_id) else {
                continue;
            };
            if !log.valid.contains(sct.timestamp / 1000) {
                continue;
            }
            // RFC 6962 §3.2: what a precertificate's SCT signs.
            let mut signed = Vec::with_capacity(tbs.len() + 64);
            signed.extend_from_slice(&[0, 0]); // v1, certificate_timestamp
            signed.extend_from_slice(&sct.timestamp.to_be_bytes());
            signed.extend_from_slice(&1u16.to_be_bytes()); // precert_entry
            signed.extend_from_slice(&issuer_key_hash);
            signed.extend_from_slice(&(tbs.len() as u32).to_be_bytes()[1..]);
            signed.extend_from_slice(&tbs);
            signed.extend_from_slice(&(sct.extensions.len() as u16).to_be_bytes());
            signed.extend_from_slice(&sct.extensions);
            if log
                .key
                .verify_signature(Signature::Raw(&sct.signature), &signed)
                .is_ok()
            {
                return Ok(());
            }
        }
        Err(
            "has a certificate with no SCT that verifies with a CT log key of the trust root"
                .into(),
        )
    }
}

struct Sct {
    log_id: [u8; 32],
    timestamp: u64,
    extensions: Vec<u8>,
    signature: Vec<u8>,
}

/// A TLS-encoded `SignedCertificateTimestampList` (RFC 6962 §3.3).
fn parse_scts(list: &[u8]) -> Option<Vec<Sct>> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = b.split_at_checked(n)?;
        *b = rest;
        Some(head)
    }
    fn len16<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
        let n = u16::from_be_bytes(take(b, 2)?.try_into().ok()?);
        take(b, usize::from(n))
    }
    let mut outer = list;
    let mut list = len16(&mut outer)?;
    let mut out = Vec::new();
    while !list.is_empty() {
        let mut s = len16(&mut list)?;
        if take(&mut s, 1)? != [0] {
            continue; // not a v1 SCT
        }
        let log_id = take(&mut s, 32)?.try_into().ok()?;
        let timestamp = u64::from_be_bytes(take(&mut s, 8)?.try_into().ok()?);
        let extensions = len16(&mut s)?.to_vec();
        let _algorithms = take(&mut s, 2)?;
        let signature = len16(&mut s)?.to_vec();
        out.push(Sct {
            log_id,
            timestamp,
            extensions,
            signature,
        });
    }
    Some(out)
}

/// The precertificate TBSCertificate an SCT signs: the leaf's, its SCT list
/// extension removed, from the original DER (a decoded certificate does
/// not always re-encode byte for byte).
fn precert_tbs(leaf: &[u8]) -> x509_cert::der::Result<Vec<u8>> {
    use x509_cert::der::Any;
    const EXTENSIONS: Tag = Tag::ContextSpecific {
        constructed: true,
        number: TagNumber(3),
    };
    let fields = Vec::<Any>::from_der(leaf)?;
    let tbs = fields.first().ok_or_else(|| Tag::Sequence.value_error())?;
    let mut tbs: Vec<Any> = tbs.decode_as()?;
    if let Some(exts) = tbs.iter_mut().find(|f| f.tag() == EXTENSIONS) {
        let mut kept = Vec::new();
        for e in Vec::<Any>::from_der(exts.value())? {
            if e.decode_as::<Extension>()?.extn_id != SCT_LIST {
                kept.push(e);
            }
        }
        *exts = Any::new(EXTENSIONS, kept.to_der()?)?;
    }
    tbs.to_der()
}

fn window(w: Option<&super::bundle::raw::Window>) -> Result<Window, String> {
    let Some(w) = w else {
        return Ok(Window::default());
    };
    let parse = |s: &Option<String>| -> Result<Option<u64>, String> {
        s.as_deref()
            .map(|s| {
                humantime::parse_rfc3339_weak(s)
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_secs())
                    .ok_or_else(|| format!("{:?} is not an RFC 3339 time", cut(s, 40)))
            })
            .transpose()
    };
    Ok(Window {
        start: parse(&w.start)?,
        end: parse(&w.end)?,
    })
}
