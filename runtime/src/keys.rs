//! Ed25519 keys: the one key pair an instance signs with — its workload
//! identity tokens (`caps::identity`) and its audit checkpoints
//! (`audit::FileSink`) — and the verifier that checks such signatures
//! from a published JWKS (RFC 7517).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// A key another user could have written is not one to sign with: its
/// owner must be this user or root (a Kubernetes Secret's files are root's),
/// and neither its group nor other users may write it. Anyone who could
/// have chosen the seed can sign trails that verify and tokens that
/// services accept. (Like ssh's own check, but on writing, which forges,
/// rather than reading.)
fn private(file: &std::fs::File) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = file.metadata().map_err(|e| format!("cannot read: {e}"))?;
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(format!(
            "owned by user {}, not by this user ({me}) or root: another user could have chosen it",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "mode {:04o} lets other users write it (expected no write for group and others, such as 0600)",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// A JWKS that does not hold usable keys.
#[derive(Debug, thiserror::Error)]
#[error("bad JWKS: {0}")]
pub struct JwksError(String);

/// A key file that cannot be read, parsed or created.
#[derive(Debug, thiserror::Error)]
#[error("key file {}: {reason}", path.display())]
pub struct KeyError {
    pub path: PathBuf,
    pub reason: String,
}

/// An Ed25519 signing key and its id.
pub struct KeyPair {
    key: SigningKey,
    kid: String,
}

impl KeyPair {
    /// A fresh key that lives as long as the process.
    pub fn ephemeral() -> Result<KeyPair, KeyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut *seed).map_err(|e| KeyError {
            path: PathBuf::new(),
            reason: format!("no randomness: {e}"),
        })?;
        Ok(Self::from_seed(&seed))
    }

    pub fn from_seed(seed: &[u8; 32]) -> KeyPair {
        let key = SigningKey::from_bytes(seed);
        let kid = kid_of(&key.verifying_key());
        KeyPair { kid, key }
    }

    /// Loads the key from `path` (a 32-byte seed, hex) if the file exists;
    /// never creates it (a verifier must not mint the key it checks with).
    pub fn load(path: &Path) -> Result<Option<KeyPair>, KeyError> {
        let err = |reason: String| KeyError {
            path: path.to_owned(),
            reason,
        };
        let mut file = match crate::files::open_regular(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err(format!("cannot read: {e}"))),
        };
        private(&file).map_err(err)?;
        // A seed is 64 hex digits and a line break.
        let mut text = Zeroizing::new(String::new());
        std::io::Read::read_to_string(&mut std::io::Read::take(&mut file, 4096), &mut text)
            .map_err(|e| err(format!("cannot read: {e}")))?;
        let mut seed = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.trim(), &mut *seed)
            .map_err(|e| err(format!("not a 64-digit hex seed ({e})")))?;
        Ok(Some(Self::from_seed(&seed)))
    }

    /// Loads the key from `path` (a 32-byte seed, hex), creating it with mode
    /// 0600 on first use.
    pub fn load_or_create(path: &Path) -> Result<KeyPair, KeyError> {
        let err = |reason: String| KeyError {
            path: path.to_owned(),
            reason,
        };
        if let Some(pair) = Self::load(path)? {
            return Ok(pair);
        }
        let pair = Self::ephemeral()?;
        if let Some(dir) = path.parent() {
            // Checked as well as made: another user's directory (or one
            // others may write) would let them swap the key later.
            crate::dirs::create_private_dir(dir, "the key's directory").map_err(err)?;
        }
        // Written whole to a file of its own, then linked into place unless
        // a key is there: processes starting at once each make one, and
        // the first linked is every one's. A key is never seen part-written
        // (the loser used to read an empty file), nor left so by a crash.
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        let mut f = tempfile::NamedTempFile::new_in(dir.unwrap_or(Path::new(".")))
            .map_err(|e| err(format!("cannot create: {e}")))?;
        let seed = Zeroizing::new(hex::encode(pair.key.to_bytes()));
        std::io::Write::write_all(&mut f, seed.as_bytes())
            .and_then(|()| f.as_file().sync_all())
            .map_err(|e| err(format!("cannot write: {e}")))?;
        match f.persist_noclobber(path) {
            Ok(_) => {}
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
                return Self::load(path)?
                    .ok_or_else(|| err("made by another process, then gone".into()));
            }
            Err(e) => return Err(err(format!("cannot create: {}", e.error))),
        }
        Ok(pair)
    }

    /// The key id: 16 hex digits of the public key's SHA-256.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// An Ed25519 signature (base64url) over `message`.
    pub fn sign_raw(&self, message: &[u8]) -> String {
        B64.encode(self.key.sign(message).to_bytes())
    }

    /// The private key as PKCS#8 (RFC 8410), what `jsonwebtoken` signs
    /// with; kept zeroized when dropped.
    pub(crate) fn pkcs8(&self) -> Zeroizing<Vec<u8>> {
        // The fixed PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410,
        // section 10.3), then the 32-byte seed.
        const PREFIX: [u8; 16] = [
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        let mut der = Zeroizing::new(Vec::with_capacity(48));
        der.extend_from_slice(&PREFIX);
        der.extend_from_slice(self.key.as_bytes());
        der
    }

    /// The public key set (RFC 7517) that verifies this key's signatures.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({
            "keys": [{
                "kty": "OKP",
                "crv": "Ed25519",
                "alg": "EdDSA",
                "use": "sig",
                "kid": self.kid,
                "x": B64.encode(self.key.verifying_key().as_bytes()),
            }]
        })
    }
}

/// Verifies signatures against the Ed25519 keys of a JWKS, as a downstream
/// service or an audit verifier would. The default holds no key.
#[derive(Default)]
pub struct Verifier {
    /// Each key's id, the key for raw signatures (audit checkpoints), and
    /// the same key for tokens (`jsonwebtoken`).
    keys: Vec<(String, VerifyingKey, jsonwebtoken::DecodingKey)>,
}

/// A key's id: the first 8 bytes of the SHA-256 of its public key, in hex.
fn kid_of(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

impl Verifier {
    /// Whether `jwk` is one Ed25519 key whose id is `kid` (and that names
    /// no other): a row of the replicas' published keys as it must be.
    pub fn is_key(jwk: &serde_json::Value, kid: &str) -> bool {
        Verifier::from_jwks(&serde_json::json!({ "keys": [jwk] }))
            .is_ok_and(|v| matches!(&v.keys[..], [(id, _, _)] if id == kid))
    }

    /// The Ed25519 keys of `jwks`, read with `jsonwebtoken`'s JWK types
    /// (other key types are skipped).
    pub fn from_jwks(jwks: &serde_json::Value) -> Result<Verifier, JwksError> {
        use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
        let bad = |m: &str| JwksError(m.to_owned());
        let set: JwkSet = serde_json::from_value(jwks.clone())
            .map_err(|e| JwksError(format!("not a JWK set: {e}")))?;
        let mut keys = Vec::new();
        for k in &set.keys {
            let AlgorithmParameters::OctetKeyPair(okp) = &k.algorithm else {
                continue;
            };
            if okp.curve != EllipticCurve::Ed25519 {
                continue;
            }
            let x = B64.decode(&okp.x).map_err(|_| bad("x is not base64url"))?;
            let x: [u8; 32] = x.try_into().map_err(|_| bad("x is not 32 bytes"))?;
            let key = VerifyingKey::from_bytes(&x).map_err(|_| bad("x is not an Ed25519 key"))?;
            let decoding = jsonwebtoken::DecodingKey::from_jwk(k)
                .map_err(|e| JwksError(format!("x is not an Ed25519 key: {e}")))?;
            // A key's id is its key's: a set (the replicas' store, say)
            // that names a key by another's id would let it stand in for
            // that key, and a genuine one fail.
            let kid = kid_of(&key);
            if let Some(stated) = k.common.key_id.as_deref().filter(|s| *s != kid) {
                let stated: String = crate::redact::escape_control(stated)
                    .chars()
                    .take(64)
                    .collect();
                return Err(JwksError(format!(
                    "key id '{stated}' is not its key's (the key's id is {kid})"
                )));
            }
            keys.push((kid, key, decoding));
        }
        Ok(Verifier { keys })
    }

    /// The token key of `kid`, if the set holds it.
    pub(crate) fn decoding_key(&self, kid: &str) -> Option<&jsonwebtoken::DecodingKey> {
        self.keys.iter().find(|(k, ..)| k == kid).map(|(.., d)| d)
    }

    /// The ids of the keys in the set.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(k, ..)| k.as_str())
    }

    /// Whether the set holds key `kid`.
    pub fn knows(&self, kid: &str) -> bool {
        self.keys.iter().any(|(k, ..)| k == kid)
    }

    /// Whether `signature` (base64url) is key `kid`'s signature over `message`.
    pub fn verify_raw(&self, kid: &str, message: &[u8], signature: &str) -> bool {
        let Some((_, key, _)) = self.keys.iter().find(|(k, ..)| k == kid) else {
            return false;
        };
        let Ok(sig) = B64.decode(signature) else {
            return false;
        };
        let Ok(sig) = <[u8; 64]>::try_from(sig) else {
            return false;
        };
        key.verify_strict(message, &Signature::from_bytes(&sig))
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Processes starting at once in a fresh state directory each made the
    /// key: the others failed ("File exists") or read it empty ("not a
    /// 64-digit hex seed"), and a key was left empty by a crash between its
    /// creation and its write. Now each gets the one key linked first.
    #[test]
    fn keys_made_at_once_are_one_key_never_seen_part_written() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("keys").join("audit.key");
            let start = std::sync::Barrier::new(8);
            let kids: Vec<String> = std::thread::scope(|s| {
                let made: Vec<_> = (0..8)
                    .map(|_| {
                        s.spawn(|| {
                            start.wait();
                            KeyPair::load_or_create(&path).map(|k| k.kid().to_owned())
                        })
                    })
                    .collect();
                made.into_iter()
                    .map(|t| t.join().unwrap().unwrap())
                    .collect()
            });
            assert!(kids.iter().all(|k| *k == kids[0]), "{kids:?}");
            let loaded = KeyPair::load(&path).unwrap().unwrap();
            assert_eq!(loaded.kid(), kids[0]);
            // Nothing else is left in the directory.
            assert_eq!(
                std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
                1
            );
        }
    }

    #[test]
    fn a_signature_verifies_only_with_its_key_and_message() {
        let a = KeyPair::from_seed(&[1; 32]);
        let b = KeyPair::from_seed(&[2; 32]);
        let sig = a.sign_raw(b"checkpoint");
        let va = Verifier::from_jwks(&a.jwks()).unwrap();
        assert!(va.knows(a.kid()) && !va.knows(b.kid()));
        assert!(va.verify_raw(a.kid(), b"checkpoint", &sig));
        assert!(!va.verify_raw(a.kid(), b"checkpoinT", &sig));
        assert!(!va.verify_raw(b.kid(), b"checkpoint", &sig));
        let vb = Verifier::from_jwks(&b.jwks()).unwrap();
        assert!(!vb.verify_raw(a.kid(), b"checkpoint", &sig));
    }

    #[test]
    fn a_row_is_a_key_only_under_its_own_id() {
        let (a, b) = (KeyPair::from_seed(&[1; 32]), KeyPair::from_seed(&[2; 32]));
        let jwk = a.jwks()["keys"][0].clone();
        assert!(Verifier::is_key(&jwk, a.kid()));
        assert!(!Verifier::is_key(&jwk, b.kid()), "another key's id");
        let mut bare = jwk.clone();
        bare.as_object_mut().unwrap().remove("kid");
        assert!(Verifier::is_key(&bare, a.kid()));
        assert!(!Verifier::is_key(&bare, b.kid()));
        let mut naming = b.jwks()["keys"][0].clone();
        naming["kid"] = serde_json::json!(a.kid());
        assert!(
            !Verifier::is_key(&naming, a.kid()),
            "a key naming another's id"
        );
        assert!(!Verifier::is_key(
            &serde_json::json!({"kty": "oct"}),
            a.kid()
        ));
    }

    #[test]
    fn a_key_named_by_another_keys_id_is_refused() {
        let (a, b) = (KeyPair::from_seed(&[1; 32]), KeyPair::from_seed(&[2; 32]));
        // b's key under a's id: it would verify as a, and a's own fail.
        let mut set = b.jwks();
        set["keys"][0]["kid"] = a.kid().into();
        let mut both = a.jwks();
        both["keys"]
            .as_array_mut()
            .unwrap()
            .insert(0, set["keys"][0].clone());
        for set in [set, both] {
            let e = Verifier::from_jwks(&set).err().unwrap();
            assert_eq!(
                e.0,
                format!(
                    "key id '{}' is not its key's (the key's id is {})",
                    a.kid(),
                    b.kid()
                )
            );
        }
        // Without an id, a key is known by its own.
        let mut bare = b.jwks();
        bare["keys"][0].as_object_mut().unwrap().remove("kid");
        assert!(Verifier::from_jwks(&bare).unwrap().knows(b.kid()));
    }

    #[test]
    fn a_key_file_is_created_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k/key");
        let first = KeyPair::load_or_create(&path).unwrap();
        let again = KeyPair::load_or_create(&path).unwrap();
        assert_eq!(first.kid(), again.kid());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        assert!(KeyPair::load(&dir.path().join("absent")).unwrap().is_none());
        assert!(!dir.path().join("absent").exists());
        std::fs::write(&path, "not hex").unwrap();
        let e = KeyPair::load_or_create(&path).err().unwrap();
        assert!(e.to_string().contains("not a 64-digit hex seed"), "{e}");
    }

    /// A key file another user could have written (a state directory they
    /// made first, in a shared place) is refused, not signed with; a
    /// Kubernetes Secret's file (root's, read-only for a group) is taken.
    #[test]
    fn a_key_another_user_could_have_written_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let first = KeyPair::load_or_create(&path).unwrap();
        for mode in [0o620, 0o602, 0o666] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = KeyPair::load(&path).err().unwrap().to_string();
            assert_eq!(
                e,
                format!(
                    "key file {}: mode {mode:04o} lets other users write it (expected no write for group and others, such as 0600)",
                    path.display()
                )
            );
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o440)).unwrap();
        assert_eq!(KeyPair::load(&path).unwrap().unwrap().kid(), first.kid());
        // A key made in a directory others may write is refused.
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = KeyPair::load_or_create(&open.join("key"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("is writable by other users (expected mode 0700)"),
            "{e}"
        );
        let fifo = dir.path().join("fifo");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
        )
        .unwrap();
        let e = KeyPair::load(&fifo).err().unwrap().to_string();
        assert!(
            e.ends_with("cannot read: it is a named pipe, not a regular file"),
            "{e}"
        );
        if rustix::process::geteuid().is_root() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
            let e = KeyPair::load(&path).err().unwrap().to_string();
            assert!(
                e.ends_with("owned by user 65534, not by this user (0) or root: another user could have chosen it"),
                "{e}"
            );
        }
    }
}
