//! Keyless signatures (`signed-by = { identity, issuer, trust-root }`): a
//! Sigstore bundle beside the component, verified offline against a trust
//! root file. The tests are their own Sigstore — a Fulcio CA, a CT log and
//! a Rekor log, each a key made here — so every link of the chain can be
//! broken on purpose, and each break must be refused with its own reason,
//! before compiling, with the refusal on the trail.

use crate::signing::{refusal, run, trail, warden};
use base64::Engine as _;
use rcgen::{
    CertificateParams, CustomExtension, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData as _, SanType,
    SerialNumber, SigningKey as _,
};
use serde_json::{Value, json};
use sha2::Digest as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

const IDENTITY: &str = "alice@example.com";
const ISSUER: &str = "https://issuer.example.com";
/// When the test certificates are issued (2026-01-01T00:00:00Z); they are
/// valid for ten minutes, as Fulcio's are.
const T0: i64 = 1_767_225_600;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(bytes).into()
}

/// A DER TLV (tag, definite length).
fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match value.len() {
        n if n < 0x80 => out.push(n as u8),
        n if n < 0x100 => out.extend([0x81, n as u8]),
        n => out.extend([0x82, (n >> 8) as u8, n as u8]),
    }
    out.extend_from_slice(value);
    out
}

fn ca_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

/// A test Sigstore: a Fulcio root, a CT log key and a Rekor key.
struct Sigstore {
    ca: CertificateParams,
    ca_key: KeyPair,
    ca_der: Vec<u8>,
    ct_key: KeyPair,
    rekor_key: KeyPair,
}

/// What to sign, and which link to break.
struct Sign {
    identity: &'static str,
    issuer: &'static str,
    /// When Rekor integrated the entry, seconds after [`T0`].
    logged_after: i64,
    /// Embed an SCT, signed by this Sigstore's CT key (or another's).
    sct: Option<bool>,
}

impl Default for Sign {
    fn default() -> Self {
        Sign {
            identity: IDENTITY,
            issuer: ISSUER,
            logged_after: 60,
            sct: Some(true),
        }
    }
}

impl Sigstore {
    fn new(name: &str) -> Sigstore {
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let ca = ca_params(name);
        let ca_der = ca.self_signed(&ca_key).unwrap().der().to_vec();
        Sigstore {
            ca,
            ca_key,
            ca_der,
            ct_key: KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
            rekor_key: KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
        }
    }

    /// The trust root file naming this Sigstore.
    fn trusted_root(&self) -> String {
        let log = |key: &KeyPair| {
            let spki = key.subject_public_key_info();
            json!({
                "baseUrl": "https://log.example.com",
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": b64(&spki),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": {"start": "2025-01-01T00:00:00Z"}
                },
                "logId": {"keyId": b64(&sha256(&spki))}
            })
        };
        json!({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [log(&self.rekor_key)],
            "certificateAuthorities": [{
                "subject": {"organization": "test", "commonName": "test fulcio"},
                "uri": "https://fulcio.example.com",
                "certChain": {"certificates": [{"rawBytes": b64(&self.ca_der)}]},
                "validFor": {"start": "2025-01-01T00:00:00Z"}
            }],
            "ctlogs": [log(&self.ct_key)],
            "timestampAuthorities": []
        })
        .to_string()
    }

    /// A leaf certificate for `key` as Fulcio issues one: no subject, the
    /// identity as its SAN, the issuer extension, code signing, ten
    /// minutes, and (unless `sct` is None) an embedded SCT.
    fn leaf(&self, key: &KeyPair, s: &Sign, other_ct: &KeyPair) -> Vec<u8> {
        let ct = s.sct.map(|own| if own { &self.ct_key } else { other_ct });
        self.sign_leaf(key, leaf_params(s), ct)
    }

    /// Signs the leaf `p` for `key`, with an SCT from `ct` embedded.
    fn sign_leaf(&self, key: &KeyPair, mut p: CertificateParams, ct: Option<&KeyPair>) -> Vec<u8> {
        let issuer = Issuer::from_params(&self.ca, &self.ca_key);
        let Some(ct) = ct else {
            return p.signed_by(key, &issuer).unwrap().der().to_vec();
        };
        // The precertificate's TBSCertificate: the same certificate
        // without the SCT list extension (RFC 6962 §3.2).
        let pre = p.signed_by(key, &issuer).unwrap().der().to_vec();
        let tbs = first_element(&first_element_body(&pre));
        let timestamp = ((T0 + 5) * 1000) as u64;
        let mut signed = vec![0, 0];
        signed.extend(timestamp.to_be_bytes());
        signed.extend([0, 1]);
        signed.extend(sha256(&self.ca_key.subject_public_key_info()));
        signed.extend(&(tbs.len() as u32).to_be_bytes()[1..]);
        signed.extend(&tbs);
        signed.extend([0, 0]);
        let sig = ct.sign(&signed).unwrap();
        let mut sct = vec![0];
        sct.extend(sha256(&ct.subject_public_key_info()));
        sct.extend(timestamp.to_be_bytes());
        sct.extend([0, 0, 4, 3]);
        sct.extend((sig.len() as u16).to_be_bytes());
        sct.extend(&sig);
        let mut list = ((sct.len() + 2) as u16).to_be_bytes().to_vec();
        list.extend((sct.len() as u16).to_be_bytes());
        list.extend(&sct);
        p.custom_extensions.push(CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 4, 1, 11129, 2, 4, 2],
            tlv(0x04, &list),
        ));
        p.signed_by(key, &issuer).unwrap().der().to_vec()
    }

    /// A bundle over `artifact`, as `cosign sign-blob --bundle` writes.
    fn bundle(&self, artifact: &[u8], s: &Sign) -> Value {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let other_ct = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = self.leaf(&key, s, &other_ct);
        let signature = key.sign(artifact).unwrap();
        self.logged(artifact, &cert, &signature, T0 + s.logged_after)
    }

    /// The bundle for a signature and certificate, with its Rekor entry
    /// integrated at `time` and a SET over it.
    fn logged(&self, artifact: &[u8], cert: &[u8], signature: &[u8], time: i64) -> Value {
        let pem = pem::encode(&pem::Pem::new("CERTIFICATE", cert.to_vec()));
        let body = json!({
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": hex::encode(sha256(artifact))}},
                "signature": {"content": b64(signature), "publicKey": {"content": b64(pem.as_bytes())}}
            }
        })
        .to_string();
        let log_id = sha256(&self.rekor_key.subject_public_key_info());
        let set = self.set(&b64(body.as_bytes()), time, &log_id, 42);
        json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {
                "certificate": {"rawBytes": b64(cert)},
                "tlogEntries": [{
                    "logIndex": "42",
                    "logId": {"keyId": b64(&log_id)},
                    "kindVersion": {"kind": "hashedrekord", "version": "0.0.1"},
                    "integratedTime": time.to_string(),
                    "inclusionPromise": {"signedEntryTimestamp": b64(&set)},
                    "canonicalizedBody": b64(body.as_bytes())
                }]
            },
            "messageSignature": {
                "messageDigest": {"algorithm": "SHA2_256", "digest": b64(&sha256(artifact))},
                "signature": b64(signature)
            }
        })
    }

    /// Rekor's signed entry timestamp: its key's signature over the
    /// entry's canonical JSON.
    fn set(&self, body: &str, time: i64, log_id: &[u8], index: i64) -> Vec<u8> {
        let payload = format!(
            r#"{{"body":"{body}","integratedTime":{time},"logID":"{}","logIndex":{index}}}"#,
            hex::encode(log_id)
        );
        self.rekor_key.sign(payload.as_bytes()).unwrap()
    }
}

/// A leaf's parameters as Fulcio issues them: no subject, the identity as
/// its SAN, the issuer extension, code signing, ten minutes from [`T0`].
fn leaf_params(s: &Sign) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.subject_alt_names = vec![SanType::Rfc822Name(s.identity.try_into().unwrap())];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.serial_number = Some(SerialNumber::from(vec![0x11, 0x22, 0x33]));
    let t0 = rcgen::date_time_ymd(2026, 1, 1);
    p.not_before = t0;
    p.not_after = t0 + Duration::from_secs(600);
    p.custom_extensions = vec![fulcio_issuer_v2(s.issuer)];
    p
}

/// The value bytes of the outermost DER SEQUENCE.
fn first_element_body(der: &[u8]) -> Vec<u8> {
    let (start, len) = header(der);
    der[start..start + len].to_vec()
}

/// The first DER element (header and value) of `der`.
fn first_element(der: &[u8]) -> Vec<u8> {
    let (start, len) = header(der);
    der[..start + len].to_vec()
}

fn header(der: &[u8]) -> (usize, usize) {
    match der[1] {
        n if n < 0x80 => (2, n as usize),
        0x81 => (3, der[2] as usize),
        0x82 => (4, (der[2] as usize) << 8 | der[3] as usize),
        n => panic!("length form {n:#x}"),
    }
}

/// A directory with the echo component, a Sigstore's trust root and a
/// manifest requiring [`IDENTITY`] from [`ISSUER`].
fn world(store: &Sigstore) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    std::fs::copy(crate::ECHO, d.join("echo.wasm")).unwrap();
    std::fs::write(d.join("trusted_root.json"), store.trusted_root()).unwrap();
    std::fs::write(
        d.join("warden.toml"),
        format!(
            "signed-by = {{ identity = \"{IDENTITY}\", issuer = \"{ISSUER}\", trust-root = \"trusted_root.json\" }}\n[tools.echo]\ncomponent = \"echo.wasm\"\n"
        ),
    )
    .unwrap();
    (dir, d)
}

fn put_bundle(d: &Path, bundle: &Value) {
    std::fs::write(d.join("echo.wasm.sigstore.json"), bundle.to_string()).unwrap();
}

fn run_echo(d: &Path) -> (i32, String, String) {
    run(warden(d).args([
        "run",
        "-m",
        "warden.toml",
        "echo",
        "--input",
        r#"{"message":"keyless"}"#,
        "--audit",
        "audit.jsonl",
    ]))
}

/// Runs echo expecting a refusal whose message and audited reason both
/// say `says`.
fn refused(d: &Path, says: &str) {
    let (code, out, err) = run_echo(d);
    assert_eq!(code, 2, "expected a refusal saying {says:?}\n{out}{err}");
    assert!(
        err.contains(&format!("echo.wasm must be signed by {}", expected())),
        "{err}"
    );
    assert!(err.contains(says), "expected {says:?} in\n{err}");
    let r = refusal(d);
    let reason = r.reason.unwrap_or_default();
    assert!(reason.contains(says), "the trail says {reason:?}");
    std::fs::remove_file(d.join("audit.jsonl")).unwrap();
}

fn expected() -> String {
    format!("the identity {IDENTITY} (issuer {ISSUER})")
}

#[test]
fn a_keyless_signed_component_runs_and_the_start_record_names_the_identity() {
    let store = Sigstore::new("test fulcio");
    let (_dir, d) = world(&store);
    let echo = std::fs::read(d.join("echo.wasm")).unwrap();
    put_bundle(&d, &store.bundle(&echo, &Sign::default()));
    let (code, out, err) = run_echo(&d);
    assert_eq!((code, out.trim()), (0, r#"{"message":"keyless"}"#), "{err}");
    let start = trail(&d)
        .into_iter()
        .find(|r| r.event == warden::audit::Event::InvocationStart)
        .unwrap();
    assert_eq!(
        start.signer.as_deref(),
        Some(format!("keyless:{ISSUER} {IDENTITY}").as_str())
    );
    // A bundle in the v0.1 form (the certificate as a chain, integers as
    // JSON numbers) verifies too.
    let mut b = store.bundle(&echo, &Sign::default());
    let m = &mut b["verificationMaterial"];
    let cert = m["certificate"].take();
    m.as_object_mut().unwrap().remove("certificate");
    m["x509CertificateChain"] = json!({"certificates": [cert]});
    let e = &mut m["tlogEntries"][0];
    e["logIndex"] = json!(42);
    let t: i64 = e["integratedTime"].as_str().unwrap().parse().unwrap();
    e["integratedTime"] = json!(t);
    b["mediaType"] = json!("application/vnd.dev.sigstore.bundle+json;version=0.1");
    put_bundle(&d, &b);
    let (code, _, err) = run_echo(&d);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_bundle_from_another_signer_or_over_other_bytes_is_refused() {
    let store = Sigstore::new("test fulcio");
    let (_dir, d) = world(&store);
    let echo = std::fs::read(d.join("echo.wasm")).unwrap();

    put_bundle(
        &d,
        &store.bundle(
            &echo,
            &Sign {
                identity: "mallory@example.com",
                ..Sign::default()
            },
        ),
    );
    refused(
        &d,
        &format!(
            "was signed by mallory@example.com (issuer {ISSUER}), expected {IDENTITY} (issuer {ISSUER})"
        ),
    );
    put_bundle(
        &d,
        &store.bundle(
            &echo,
            &Sign {
                issuer: "https://evil.example.com",
                ..Sign::default()
            },
        ),
    );
    refused(
        &d,
        "was signed by alice@example.com (issuer https://evil.example.com)",
    );

    // Signed, then the component changed: the bundle's digest says so; with
    // the digest removed, the log entry does; with that forged too, the
    // signature does not verify.
    let mut other = echo.clone();
    other.extend_from_slice(b"\0");
    let mut b = store.bundle(&other, &Sign::default());
    put_bundle(&d, &b);
    refused(&d, "is for other bytes");
    b["messageSignature"]
        .as_object_mut()
        .unwrap()
        .remove("messageDigest");
    put_bundle(&d, &b);
    refused(&d, "has a transparency log entry for other bytes");

    // A certificate from a CA the trust root does not name.
    let rogue = Sigstore::new("rogue fulcio");
    let mut b = rogue.bundle(&echo, &Sign::default());
    // ... logged by the trusted Rekor, so only the chain is wrong.
    let cert = base64::engine::general_purpose::STANDARD
        .decode(
            b["verificationMaterial"]["certificate"]["rawBytes"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    let sig = base64::engine::general_purpose::STANDARD
        .decode(b["messageSignature"]["signature"].as_str().unwrap())
        .unwrap();
    b = store.logged(&echo, &cert, &sig, T0 + 60);
    put_bundle(&d, &b);
    refused(
        &d,
        "has a certificate that does not chain to a certificate authority of the trust root",
    );
    // Logged by a Rekor the trust root does not name.
    put_bundle(&d, &rogue.bundle(&echo, &Sign::default()));
    refused(
        &d,
        "was logged by a transparency log the trust root does not name",
    );
}

#[test]
fn each_broken_link_of_a_bundle_is_refused_with_its_reason() {
    let store = Sigstore::new("test fulcio");
    let (_dir, d) = world(&store);
    let echo = std::fs::read(d.join("echo.wasm")).unwrap();

    // No SCT, or one from a CT log the trust root does not name.
    let no_sct = Sign {
        sct: None,
        ..Sign::default()
    };
    put_bundle(&d, &store.bundle(&echo, &no_sct));
    refused(&d, "has a certificate with no embedded SCT");
    let other_sct = Sign {
        sct: Some(false),
        ..Sign::default()
    };
    put_bundle(&d, &store.bundle(&echo, &other_sct));
    refused(
        &d,
        "has a certificate with no SCT that verifies with a CT log key of the trust root",
    );

    // Logged after the ten-minute certificate expired (a stolen key used
    // late): the SET is good, the time is not.
    let late = Sign {
        logged_after: 3600,
        ..Sign::default()
    };
    put_bundle(&d, &store.bundle(&echo, &late));
    refused(
        &d,
        "for code signing at its signing time 2026-01-01T01:00:00Z",
    );

    // The entry's integrated time moved back into the window: the SET no
    // longer verifies.
    let mut b = store.bundle(&echo, &late);
    b["verificationMaterial"]["tlogEntries"][0]["integratedTime"] = json!((T0 + 60).to_string());
    put_bundle(&d, &b);
    refused(
        &d,
        "signed entry timestamp does not verify with the log's key",
    );

    // An entry (with a good SET) for another signature.
    let good = store.bundle(&echo, &Sign::default());
    let cert = base64::engine::general_purpose::STANDARD
        .decode(
            good["verificationMaterial"]["certificate"]["rawBytes"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    let mut b = store.logged(&echo, &cert, b"another signature", T0 + 60);
    b["messageSignature"]["signature"] = good["messageSignature"]["signature"].clone();
    put_bundle(&d, &b);
    refused(&d, "has a transparency log entry for another signature");

    // A signature the certificate's key did not make, logged as such.
    let other_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let forged = other_key.sign(&echo).unwrap();
    put_bundle(&d, &store.logged(&echo, &cert, &forged, T0 + 60));
    refused(&d, "does not verify: its signature is not over these bytes");

    // No SET (an entry with only an inclusion proof cannot be checked
    // offline), a DSSE attestation, a key-signed bundle, not a bundle.
    let mut b = good.clone();
    b["verificationMaterial"]["tlogEntries"][0]
        .as_object_mut()
        .unwrap()
        .remove("inclusionPromise");
    put_bundle(&d, &b);
    refused(
        &d,
        "has no transparency log entry with a signed entry timestamp",
    );
    let mut b = good.clone();
    b.as_object_mut().unwrap().remove("messageSignature");
    b["dsseEnvelope"] =
        json!({"payload": "", "payloadType": "application/vnd.in-toto+json", "signatures": []});
    put_bundle(&d, &b);
    refused(&d, "holds no message signature");
    let mut b = good.clone();
    b["verificationMaterial"]
        .as_object_mut()
        .unwrap()
        .remove("certificate");
    b["verificationMaterial"]["publicKey"] = json!({"hint": "x"});
    put_bundle(&d, &b);
    refused(&d, "holds no certificate");
    std::fs::write(d.join("echo.wasm.sigstore.json"), "\u{1b}[2Jnot json").unwrap();
    refused(&d, "is not a Sigstore bundle");
    std::fs::remove_file(d.join("echo.wasm.sigstore.json")).unwrap();
    refused(&d, "found no usable bundle at");
}

#[test]
fn keyless_manifest_entries_are_checked() {
    let store = Sigstore::new("test fulcio");
    let (_dir, d) = world(&store);
    std::fs::write(
        d.join("bad_root.json"),
        r#"{"mediaType": "application/json"}"#,
    )
    .unwrap();
    std::fs::write(
        d.join("warden.toml"),
        format!(
            r#"[tools.a]
component = "echo.wasm"
signed-by = {{ identity = "{IDENTITY}", issuer = "{ISSUER}" }}
[tools.b]
component = "echo.wasm"
signed-by = {{ key = "k.pub", identity = "{IDENTITY}" }}
[tools.c]
component = "echo.wasm"
signed-by = {{ identity = "{IDENTITY}", issuer = "{ISSUER}", trust-root = "bad_root.json" }}
[tools.d]
component = "echo.wasm"
signed-by = {{ identity = "alice @example.com", issuer = "{ISSUER}", trust-root = "trusted_root.json" }}
[tools.e]
component = "oci://127.0.0.1:5000/tools/echo:1"
signed-by = {{ identity = "{IDENTITY}", issuer = "{ISSUER}", trust-root = "trusted_root.json" }}
"#
        ),
    )
    .unwrap();
    let (code, out, err) = run(warden(&d).args(["check", "warden.toml"]));
    assert_eq!(code, 2, "{out}{err}");
    for says in [
        "tools.a.signed-by: trust-root missing",
        "tools.b.signed-by: a key and a keyless identity are named together",
        "tools.c.signed-by.trust-root: ",
        "bad_root.json is not a Sigstore trust root (expected a trusted_root.json",
        "tools.d.signed-by.identity: expected a non-empty name",
        "tools.e.signed-by: keyless signatures are checked for component files",
    ] {
        assert!(err.contains(says), "{says}\n{err}");
    }
}

// ---- Attacker review: the bundle file (and the component) are the
// attacker's; the trust root and the manifest are not. ----

impl Sigstore {
    /// A Fulcio-style leaf as [`Sigstore::leaf`] makes (identity, issuer,
    /// code signing, ten minutes, an SCT from this Sigstore's CT log),
    /// changed by `f` before it is signed.
    fn leaf_with(&self, key: &KeyPair, f: impl FnOnce(&mut CertificateParams)) -> Vec<u8> {
        let mut p = leaf_params(&Sign::default());
        f(&mut p);
        self.sign_leaf(key, p, Some(&self.ct_key))
    }

    /// A bundle over `artifact` whose certificate `f` changed, logged
    /// (good SET) one minute in.
    fn bundle_with(&self, artifact: &[u8], f: impl FnOnce(&mut CertificateParams)) -> Value {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = self.leaf_with(&key, f);
        let signature = key.sign(artifact).unwrap();
        self.logged(artifact, &cert, &signature, T0 + 60)
    }
}

fn fulcio_issuer_v1(issuer: &str) -> CustomExtension {
    CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 57264, 1, 1], issuer.as_bytes().to_vec())
}

fn fulcio_issuer_v2(issuer: &str) -> CustomExtension {
    CustomExtension::from_oid_content(
        &[1, 3, 6, 1, 4, 1, 57264, 1, 8],
        tlv(0x0c, issuer.as_bytes()),
    )
}

/// Runs echo; it must be refused (exit 2, the refusal audited), never
/// panic, and say `says`.
fn refused_cleanly(d: &Path, says: &str) {
    let (code, out, err) = run_fresh(d);
    assert!(!err.contains("panicked"), "a panic:\n{err}");
    assert_eq!(code, 2, "expected a refusal saying {says:?}\n{out}{err}");
    assert!(err.contains(says), "expected {says:?} in\n{err}");
    let reason = refusal(d).reason.unwrap_or_default();
    assert!(reason.contains(says), "the trail says {reason:?}");
    let _ = std::fs::remove_file(d.join("audit.jsonl"));
}

/// A Rekor-signed entry whose integratedTime is at or past year 10000
/// (past what RFC 3339 can write) is refused like any late signature, as
/// an audited signed-by refusal, not a panic while the refusal is worded.
#[test]
fn attack_a_log_time_past_year_9999_is_refused_without_a_panic() {
    let store = Sigstore::new("test fulcio");
    let (_dir, d) = world(&store);
    let echo = std::fs::read(d.join("echo.wasm")).unwrap();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = store.leaf(&key, &Sign::default(), &key);
    let sig = key.sign(&echo).unwrap();
    put_bundle(&d, &store.logged(&echo, &cert, &sig, 253_402_300_800 + 60));
    refused_cleanly(&d, "for code signing at its signing time");
}

/// Pins: the identity is the certificate's first email/URI SAN and is
/// compared exactly — another signer first, case, a trailing NUL, a SAN
/// of another type, are all refused, and the NUL is shown escaped.
#[test]
fn attack_identity_confusion_in_the_certificate_is_refused() {
    let store = Sigstore::new("test fulcio");
    let (_dir, d) = world(&store);
    let echo = std::fs::read(d.join("echo.wasm")).unwrap();
    let email = |s: &str| SanType::Rfc822Name(s.try_into().unwrap());

    put_bundle(
        &d,
        &store.bundle_with(&echo, |p| {
            p.subject_alt_names = vec![email("mallory@example.com"), email(IDENTITY)];
        }),
    );
    refused_cleanly(&d, "names more than one subject alternative name");
    // Nor is the wanted identity listed first read as the signer.
    put_bundle(
        &d,
        &store.bundle_with(&echo, |p| {
            p.subject_alt_names = vec![email(IDENTITY), email("mallory@example.com")];
        }),
    );
    refused_cleanly(&d, "names more than one subject alternative name");

    put_bundle(
        &d,
        &store.bundle_with(&echo, |p| {
            p.subject_alt_names = vec![email("Alice@example.com")];
        }),
    );
    refused_cleanly(&d, "was signed by Alice@example.com");

    put_bundle(
        &d,
        &store.bundle_with(&echo, |p| {
            p.subject_alt_names = vec![email("alice@example.com\0")];
        }),
    );
    refused_cleanly(&d, "was signed by alice@example.com\\u{0}");

    put_bundle(
        &d,
        &store.bundle_with(&echo, |p| {
            p.subject_alt_names = vec![SanType::DnsName("example.com".try_into().unwrap())];
        }),
    );
    refused_cleanly(&d, "subject alternative name is not an email or URI");

    // A URI SAN spelled like the email is not the email.
    put_bundle(
        &d,
        &store.bundle_with(&echo, |p| {
            p.subject_alt_names =
                vec![SanType::URI("mailto:alice@example.com".try_into().unwrap())];
        }),
    );
    refused_cleanly(&d, "was signed by mailto:alice@example.com");
}

/// Pins: the v2 issuer extension wins over v1; a v1-only certificate
/// (older Fulcio) is read as raw bytes; a v2 that is not a UTF8String is
/// refused.
#[test]
fn attack_issuer_v1_and_v2_extensions_are_not_confused() {
    let store = Sigstore::new("test fulcio");
    let (_dir, d) = world(&store);
    let echo = std::fs::read(d.join("echo.wasm")).unwrap();

    // v1 says the expected issuer, v2 another: v2 is the issuer.
    put_bundle(
        &d,
        &store.bundle_with(&echo, |p| {
            p.custom_extensions = vec![
                fulcio_issuer_v1(ISSUER),
                fulcio_issuer_v2("https://evil.example.com"),
            ];
        }),
    );
    refused_cleanly(&d, "(issuer https://evil.example.com)");

    // v1 alone with a trailing NUL: not the issuer, and shown escaped.
    put_bundle(
        &d,
        &store.bundle_with(&echo, |p| {
            p.custom_extensions = vec![fulcio_issuer_v1("https://issuer.example.com\0")];
        }),
    );
    refused_cleanly(&d, "(issuer https://issuer.example.com\\u{0})");

    // v2 as an IA5String rather than a UTF8String.
    put_bundle(
        &d,
        &store.bundle_with(&echo, |p| {
            p.custom_extensions = vec![CustomExtension::from_oid_content(
                &[1, 3, 6, 1, 4, 1, 57264, 1, 8],
                tlv(0x16, ISSUER.as_bytes()),
            )];
        }),
    );
    refused_cleanly(&d, "OIDC issuer extension cannot be read");

    // v1 alone, exact: accepted (Fulcio wrote v1 before v2).
    put_bundle(
        &d,
        &store.bundle_with(&echo, |p| {
            p.custom_extensions = vec![fulcio_issuer_v1(ISSUER)];
        }),
    );
    let (code, _, err) = run_fresh(&d);
    assert_eq!(code, 0, "{err}");
}

/// Pins: a CA certificate, or a leaf without code signing (no EKU,
/// serverAuth only, anyExtendedKeyUsage) is not a signer.
#[test]
fn attack_a_ca_or_a_leaf_not_for_code_signing_is_refused() {
    let store = Sigstore::new("test fulcio");
    let (_dir, d) = world(&store);
    let echo = std::fs::read(d.join("echo.wasm")).unwrap();
    type Change = Box<dyn FnOnce(&mut CertificateParams)>;
    let cases: Vec<(&str, Change)> = vec![
        (
            "CaUsedAsEndEntity",
            Box::new(|p| {
                p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
                p.key_usages = vec![
                    KeyUsagePurpose::KeyCertSign,
                    KeyUsagePurpose::DigitalSignature,
                ];
            }),
        ),
        ("RequiredEku", Box::new(|p| p.extended_key_usages = vec![])),
        (
            "RequiredEku",
            Box::new(|p| p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth]),
        ),
        (
            "RequiredEku",
            Box::new(|p| p.extended_key_usages = vec![ExtendedKeyUsagePurpose::Any]),
        ),
    ];
    for (why, f) in cases {
        put_bundle(&d, &store.bundle_with(&echo, f));
        refused_cleanly(
            &d,
            "does not chain to a certificate authority of the trust root for code signing",
        );
        let (_, _, err) = run_fresh(&d);
        assert!(err.contains(why), "{why}: {err}");
        let _ = std::fs::remove_file(d.join("audit.jsonl"));
    }
}

/// Pins: every field the SET covers is checked in the form signed —
/// another logIndex or logId is refused; integers written with a sign or
/// leading zeros are read as the same integer the SET signed (harmless);
/// a negative (signed) integrated time is refused; the first entry with a
/// promise is the one checked (a bad one is not skipped for a good one
/// behind it).
#[test]
fn attack_set_fields_and_entry_choice() {
    let store = Sigstore::new("test fulcio");
    let (_dir, d) = world(&store);
    let echo = std::fs::read(d.join("echo.wasm")).unwrap();
    let good = store.bundle(&echo, &Sign::default());

    for index in [json!("43"), json!(-42), json!("-42"), json!("4.2e1")] {
        let mut b = good.clone();
        b["verificationMaterial"]["tlogEntries"][0]["logIndex"] = index.clone();
        put_bundle(&d, &b);
        let (code, _, err) = run_fresh(&d);
        assert!(!err.contains("panicked"), "{index}: {err}");
        assert_eq!(code, 2, "{index}: {err}");
    }
    for index in [json!("+42"), json!("0042")] {
        let mut b = good.clone();
        b["verificationMaterial"]["tlogEntries"][0]["logIndex"] = index.clone();
        put_bundle(&d, &b);
        let (code, _, err) = run_fresh(&d);
        assert_eq!(code, 0, "{index}: {err}");
    }

    // A signed negative integrated time.
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = store.leaf(&key, &Sign::default(), &key);
    let sig = key.sign(&echo).unwrap();
    put_bundle(&d, &store.logged(&echo, &cert, &sig, -1));
    refused_cleanly(&d, "has a negative integrated time");

    // A bad entry (untrusted log) before a good one: refused, not skipped.
    let rogue = Sigstore::new("rogue");
    let bad_entry =
        rogue.bundle(&echo, &Sign::default())["verificationMaterial"]["tlogEntries"][0].clone();
    let mut b = good.clone();
    let entries = b["verificationMaterial"]["tlogEntries"]
        .as_array_mut()
        .unwrap();
    entries.insert(0, bad_entry);
    put_bundle(&d, &b);
    refused_cleanly(
        &d,
        "was logged by a transparency log the trust root does not name",
    );
}

/// Pins: the bundle's own messageDigest matching is not enough — the
/// signature must be over these bytes; a logged hash of other bytes is
/// refused even when everything else is good.
#[test]
fn attack_a_matching_digest_over_a_signature_of_other_bytes_is_refused() {
    let store = Sigstore::new("test fulcio");
    let (_dir, d) = world(&store);
    let echo = std::fs::read(d.join("echo.wasm")).unwrap();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = store.leaf(&key, &Sign::default(), &key);
    // Alice's key signed other bytes; the entry is logged with echo's hash.
    let sig = key.sign(b"something alice meant").unwrap();
    put_bundle(&d, &store.logged(&echo, &cert, &sig, T0 + 60));
    refused_cleanly(&d, "does not verify: its signature is not over these bytes");
}

/// Pins: malformed or hostile bundles are refused with an audited
/// reason and no panic, and nothing from the bundle reaches the terminal
/// or the trail unescaped.
#[test]
fn attack_hostile_bundles_are_refused_cleanly_and_escaped() {
    let store = Sigstore::new("test fulcio");
    let (_dir, d) = world(&store);
    let echo = std::fs::read(d.join("echo.wasm")).unwrap();
    let good = store.bundle(&echo, &Sign::default());

    // Control and bidi characters in the mediaType and digest algorithm.
    let evil = "\u{1b}]0;pwned\u{7}\u{1b}[2J\u{202e}\u{9b}";
    for field in ["mediaType", "algorithm"] {
        let mut b = good.clone();
        if field == "mediaType" {
            b["mediaType"] = json!(evil);
        } else {
            b["messageSignature"]["messageDigest"]["algorithm"] = json!(evil);
        }
        put_bundle(&d, &b);
        let (code, out, err) = run_fresh(&d);
        assert_eq!(code, 2, "{out}{err}");
        let reason = refusal(&d).reason.unwrap_or_default();
        for c in ['\u{1b}', '\u{7}', '\u{202e}', '\u{9b}'] {
            assert!(!err.contains(c), "{field}: {c:?} reached stderr: {err:?}");
            assert!(
                !reason.contains(c),
                "{field}: {c:?} reached the trail: {reason:?}"
            );
        }
        std::fs::remove_file(d.join("audit.jsonl")).unwrap();
    }

    // A certificate that is not DER, logged as such (so the entry is good).
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let sig = key.sign(&echo).unwrap();
    for cert in [
        vec![],
        vec![0x30, 0x80, 0, 0],
        vec![0x30; 300],
        b"\x1b[2J".to_vec(),
    ] {
        put_bundle(&d, &store.logged(&echo, &cert, &sig, T0 + 60));
        let (code, _, err) = run_fresh(&d);
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(code, 2, "{err}");
        assert!(!err.contains('\u{1b}'), "{err:?}");
    }

    // Garbage in each unsigned field.
    let fields: [(&str, &[&str]); 6] = [
        (
            "/verificationMaterial/certificate/rawBytes",
            &["", "!!", "AAAA"],
        ),
        ("/messageSignature/signature", &["", "AA==", "!!"]),
        (
            "/verificationMaterial/tlogEntries/0/inclusionPromise/signedEntryTimestamp",
            &["", "AA=="],
        ),
        (
            "/verificationMaterial/tlogEntries/0/canonicalizedBody",
            &["", "e30=", "bnVsbA=="],
        ),
        (
            "/verificationMaterial/tlogEntries/0/logId/keyId",
            &["", "AA=="],
        ),
        (
            "/verificationMaterial/tlogEntries/0/integratedTime",
            &["", "99999999999999999999", "-9223372036854775808"],
        ),
    ];
    for (ptr, values) in fields {
        for v in values {
            let mut b = good.clone();
            *b.pointer_mut(ptr).unwrap() = json!(v);
            put_bundle(&d, &b);
            let (code, _, err) = run_fresh(&d);
            assert!(!err.contains("panicked"), "{ptr}={v}: {err}");
            assert_eq!(code, 2, "{ptr}={v}: {err}");
        }
    }

    // Too big, and not a regular file.
    std::fs::write(d.join("echo.wasm.sigstore.json"), vec![b' '; 300 << 10]).unwrap();
    refused_cleanly(&d, "more than the");
    std::fs::remove_file(d.join("echo.wasm.sigstore.json")).unwrap();
    let ok = std::process::Command::new("mkfifo")
        .arg(d.join("echo.wasm.sigstore.json"))
        .status()
        .unwrap();
    assert!(ok.success());
    refused_cleanly(&d, "not a regular file");
}

/// [`run_echo`] with an empty trail.
fn run_fresh(d: &Path) -> (i32, String, String) {
    let _ = std::fs::remove_file(d.join("audit.jsonl"));
    run_echo(d)
}
