//! The blob cache: what `warden pull` fetched, kept so that a run needs no
//! network for a digest it has.
//!
//! ```text
//! <cache>/blobs/sha256/<hex>   a manifest or a component, named by the sha256 of its bytes
//! <cache>/tags/<hex>.json      a tag's resolution at its last pull: {"reference", "digest"},
//!                              named by the sha256 of the reference
//! ```
//!
//! Files are written to a temporary file in the same directory and renamed
//! into place, so a reader sees a whole file or none. A blob is hashed when
//! it is written and again each time it is read: a file that does not hash
//! to its name (corrupted, truncated, swapped) is refused, never run. Reads
//! do not follow symlinks, refuse anything but a regular file (a FIFO, a
//! device) and read at most [`MAX_COMPONENT`] bytes.
//!
//! The directories are created lazily, mode 0700, inside the compile
//! cache's directory, which `engine::CompileCache` has already checked is
//! private to this user.

use super::MAX_COMPONENT;
use super::reference::OciRef;
use crate::identity::Identity;
use crate::units::format_size;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The most a tag record may hold.
const MAX_TAG_RECORD: u64 = 4 << 10;

/// A cache entry that is not what its name says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cache entry {} is unusable: {reason}", path.display())]
pub struct CacheError {
    pub path: PathBuf,
    pub reason: String,
}

/// Content-addressed blobs and tag resolutions under a cache directory.
#[derive(Debug, Clone)]
pub struct BlobCache {
    root: PathBuf,
}

impl BlobCache {
    /// The blob cache inside the compile cache directory `dir`.
    pub fn new(dir: &Path) -> BlobCache {
        BlobCache {
            root: dir.to_owned(),
        }
    }

    /// The blob cache in `dir`, created (mode 0700) if missing; a
    /// directory other users can write, or another user owns, is refused,
    /// as the compile cache's is.
    pub fn open(dir: &Path) -> Result<BlobCache, String> {
        crate::dirs::create_private_dir(dir, "cache directory")?;
        Ok(BlobCache::new(dir))
    }

    pub fn blob_path(&self, digest: &Identity) -> PathBuf {
        self.root.join("blobs").join("sha256").join(digest.hex())
    }

    fn tag_path(&self, reference: &OciRef) -> PathBuf {
        let key = Identity::of(reference.to_string().as_bytes());
        self.root.join("tags").join(format!("{}.json", key.hex()))
    }

    /// Whether `path` is a blob whose bytes hash to its name: an entry
    /// that is sound, only not what a reference expected (another
    /// artifact's blob named by a hostile digest reference), kept.
    pub fn intact(&self, path: &Path) -> bool {
        let dir = self.root.join("blobs").join("sha256");
        let name = path.strip_prefix(&dir).ok().and_then(|n| n.to_str());
        let digest = name.and_then(|hex| format!("sha256:{hex}").parse::<Identity>().ok());
        digest.is_some_and(|d| self.blob_path(&d) == path && matches!(self.get(&d), Ok(Some(_))))
    }

    /// The blob `digest`, if the cache has it and it hashes to its name.
    pub fn get(&self, digest: &Identity) -> Result<Option<Vec<u8>>, CacheError> {
        let path = self.blob_path(digest);
        let Some(bytes) = read_bounded(&path, MAX_COMPONENT)? else {
            return Ok(None);
        };
        let actual = Identity::of(&bytes);
        if actual != *digest {
            return Err(CacheError {
                path,
                reason: format!("its bytes hash to {actual}, not to its name {digest}"),
            });
        }
        Ok(Some(bytes))
    }

    /// Stores `bytes` under their digest (which they are checked to have).
    pub fn put(&self, digest: &Identity, bytes: &[u8]) -> Result<(), CacheError> {
        let path = self.blob_path(digest);
        let actual = Identity::of(bytes);
        if actual != *digest {
            return Err(CacheError {
                path,
                reason: format!("refusing to store bytes that hash to {actual} as {digest}"),
            });
        }
        write_atomic(&path, bytes)
    }

    /// Removes a blob (an unusable one, before it is fetched again).
    pub fn remove(&self, digest: &Identity) {
        let path = self.blob_path(digest);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), "cannot remove a cache entry: {e}");
        }
    }

    /// The manifest digest `reference` (a tag) resolved to at its last pull.
    pub fn tag(&self, reference: &OciRef) -> Result<Option<Identity>, CacheError> {
        let path = self.tag_path(reference);
        let Some(bytes) = read_bounded(&path, MAX_TAG_RECORD)? else {
            return Ok(None);
        };
        let bad = |reason: &str| CacheError {
            path: path.clone(),
            reason: reason.to_owned(),
        };
        let record: TagRecord =
            serde_json::from_slice(&bytes).map_err(|_| bad("not a tag record"))?;
        if record.reference != reference.to_string() {
            return Err(bad("it records another reference"));
        }
        record
            .digest
            .parse::<Identity>()
            .map(Some)
            .map_err(|_| bad("its digest is not sha256:HEX"))
    }

    /// Forgets what `reference` (a tag) resolved to: the registry no
    /// longer has it (a signature tag its publisher removed).
    pub fn remove_tag(&self, reference: &OciRef) -> Result<(), CacheError> {
        let path = self.tag_path(reference);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CacheError {
                reason: format!("cannot remove it: {e}"),
                path,
            }),
            _ => Ok(()),
        }
    }

    /// Records that `reference` (a tag) resolved to `digest`.
    pub fn set_tag(&self, reference: &OciRef, digest: &Identity) -> Result<(), CacheError> {
        let record = TagRecord {
            reference: reference.to_string(),
            digest: digest.to_string(),
        };
        let text = serde_json::to_vec(&record).unwrap_or_default();
        write_atomic(&self.tag_path(reference), &text)
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TagRecord {
    reference: String,
    digest: String,
}

/// A regular file's bytes, at most `max`; `None` if there is no file.
/// Symlinks are not followed; FIFOs and devices are refused unopened for
/// reading (opened non-blocking, checked, then read).
fn read_bounded(path: &Path, max: u64) -> Result<Option<Vec<u8>>, CacheError> {
    let bad = |reason: String| CacheError {
        path: path.to_owned(),
        reason,
    };
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(
        &mut options,
        libc::O_NOFOLLOW | libc::O_NONBLOCK,
    );
    let file = match options.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(bad("it is a symbolic link (expected a regular file)".into()));
        }
        Err(e) => return Err(bad(format!("cannot open it: {e}"))),
    };
    let meta = file
        .metadata()
        .map_err(|e| bad(format!("cannot read its metadata: {e}")))?;
    if !meta.is_file() {
        return Err(bad("it is not a regular file".into()));
    }
    // A tag names the code a reference runs: one planted by another user
    // (in a cache directory swapped after its check) is not read.
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        if meta.uid() != rustix::process::geteuid().as_raw() {
            return Err(bad("it is owned by another user".into()));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(bad("it is writable by other users".into()));
        }
    }
    if meta.len() > max {
        return Err(bad(format!(
            "it holds {} bytes, more than the limit of {}",
            meta.len(),
            format_size(max)
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(format!("cannot read it: {e}")))?;
    if bytes.len() as u64 > max {
        return Err(bad(format!(
            "it grew past the limit of {}",
            format_size(max)
        )));
    }
    Ok(Some(bytes))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    let bad = |reason: String| CacheError {
        path: path.to_owned(),
        reason,
    };
    let dir = path
        .parent()
        .ok_or_else(|| bad("no parent directory".into()))?;
    crate::dirs::private_dir(dir).map_err(|e| bad(format!("cannot create its directory: {e}")))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| bad(format!("cannot create a temporary file: {e}")))?;
    std::io::Write::write_all(&mut tmp, bytes).map_err(|e| bad(format!("cannot write: {e}")))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| bad(format!("cannot sync: {e}")))?;
    tmp.persist(path)
        .map_err(|e| bad(format!("cannot rename into place: {}", e.error)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> OciRef {
        "oci://127.0.0.1:5000/tools/echo:v1".parse().unwrap()
    }

    #[test]
    fn blobs_are_checked_on_write_and_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::new(dir.path());
        let id = Identity::of(b"component");
        assert_eq!(cache.get(&id).unwrap(), None);
        assert!(cache.put(&id, b"other").is_err(), "wrong name refused");
        cache.put(&id, b"component").unwrap();
        assert_eq!(cache.get(&id).unwrap().unwrap(), b"component");

        std::fs::write(cache.blob_path(&id), b"swapped").unwrap();
        let e = cache.get(&id).unwrap_err();
        assert!(e.reason.contains("hash to sha256:"), "{e}");
        cache.remove(&id);
        assert_eq!(cache.get(&id).unwrap(), None);
    }

    /// A tag names the code a reference runs: one others could have
    /// written (in a cache directory swapped after its check) is refused,
    /// as is a blob.
    #[cfg(unix)]
    #[test]
    fn entries_others_can_write_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::new(dir.path());
        let id = Identity::of(b"component");
        cache.set_tag(&reference(), &id).unwrap();
        assert_eq!(cache.tag(&reference()).unwrap(), Some(id.clone()));
        let open = std::fs::Permissions::from_mode(0o666);
        std::fs::set_permissions(cache.tag_path(&reference()), open.clone()).unwrap();
        let e = cache.tag(&reference()).unwrap_err();
        assert_eq!(e.reason, "it is writable by other users");
        cache.put(&id, b"component").unwrap();
        std::fs::set_permissions(cache.blob_path(&id), open).unwrap();
        let e = cache.get(&id).unwrap_err();
        assert_eq!(e.reason, "it is writable by other users");
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_and_fifos_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::new(dir.path());
        let id = Identity::of(b"x");
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, b"x").unwrap();
        std::fs::create_dir_all(cache.blob_path(&id).parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&target, cache.blob_path(&id)).unwrap();
        let e = cache.get(&id).unwrap_err();
        assert!(e.reason.contains("symbolic link"), "{e}");

        std::fs::remove_file(cache.blob_path(&id)).unwrap();
        let status = std::process::Command::new("mkfifo")
            .arg(cache.blob_path(&id))
            .status();
        if status.is_ok_and(|s| s.success()) {
            let e = cache.get(&id).unwrap_err();
            assert!(e.reason.contains("not a regular file"), "{e}");
        }
    }

    #[test]
    fn tags_record_their_resolution() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::new(dir.path());
        let r = reference();
        assert_eq!(cache.tag(&r).unwrap(), None);
        let id = Identity::of(b"manifest");
        cache.set_tag(&r, &id).unwrap();
        assert_eq!(cache.tag(&r).unwrap(), Some(id));
        let other: OciRef = "oci://127.0.0.1:5000/tools/echo:v2".parse().unwrap();
        assert_eq!(cache.tag(&other).unwrap(), None);
    }
}
