//! Files under the directory handles of the task's grant.
//!
//! ```ignore
//! let src = warden_tool::fs::handle("repo")?.read_to_string("src/lib.rs")?;
//! ```
//!
//! Paths are relative to the handle. The host refuses absolute paths, `..`,
//! trailing slashes and symlinks that lead out of the handle with
//! [`ErrorCode::Denied`], as it refuses any operation the handle's rights do
//! not cover.

use crate::bindings::warden::tool::fs as wit;
pub use wit::{DirEntry, EntryKind, ErrorCode, HandleInfo, Metadata, Rights};

/// An error from the host's file system capability.
pub type Error = wit::Error;

impl wit::Error {
    /// `code: message`, e.g. `denied: handle 'repo' has no write right`.
    pub fn describe(&self) -> String {
        format!("{}: {}", code_name(self.code), self.message)
    }
}

/// The WIT name of an error code, e.g. `denied`.
pub fn code_name(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Denied => "denied",
        ErrorCode::NotFound => "not-found",
        ErrorCode::AlreadyExists => "already-exists",
        ErrorCode::NotADirectory => "not-a-directory",
        ErrorCode::IsADirectory => "is-a-directory",
        ErrorCode::DirectoryNotEmpty => "directory-not-empty",
        ErrorCode::InvalidPath => "invalid-path",
        ErrorCode::TooLarge => "too-large",
        ErrorCode::Io => "io",
    }
}

/// Opens a handle of this task's grant by name.
pub fn handle(name: &str) -> Result<Handle, Error> {
    Ok(Handle {
        dir: wit::open(name)?,
    })
}

/// The handles this task was granted, with their rights.
pub fn handles() -> Vec<HandleInfo> {
    wit::handles()
}

/// An open directory handle.
pub struct Handle {
    dir: wit::Dir,
}

impl Handle {
    pub fn rights(&self) -> Rights {
        self.dir.rights()
    }

    pub fn read(&self, path: &str) -> Result<Vec<u8>, Error> {
        self.dir.read(path)
    }

    /// Reads a file as UTF-8; invalid UTF-8 is an `io` error.
    pub fn read_to_string(&self, path: &str) -> Result<String, Error> {
        String::from_utf8(self.read(path)?).map_err(|_| Error {
            code: ErrorCode::Io,
            message: format!("{path} is not valid UTF-8"),
        })
    }

    pub fn list(&self, path: &str) -> Result<Vec<DirEntry>, Error> {
        self.dir.list(path)
    }

    pub fn stat(&self, path: &str) -> Result<Metadata, Error> {
        self.dir.stat(path)
    }

    pub fn write(&self, path: &str, contents: impl AsRef<[u8]>) -> Result<(), Error> {
        self.dir.write(path, contents.as_ref())
    }

    pub fn append(&self, path: &str, contents: impl AsRef<[u8]>) -> Result<(), Error> {
        self.dir.append(path, contents.as_ref())
    }

    pub fn create_dir(&self, path: &str) -> Result<(), Error> {
        self.dir.create_dir(path)
    }

    pub fn truncate(&self, path: &str, size: u64) -> Result<(), Error> {
        self.dir.truncate(path, size)
    }

    pub fn remove_file(&self, path: &str) -> Result<(), Error> {
        self.dir.remove_file(path)
    }

    pub fn remove_dir(&self, path: &str) -> Result<(), Error> {
        self.dir.remove_dir(path, false)
    }

    pub fn remove_dir_all(&self, path: &str) -> Result<(), Error> {
        self.dir.remove_dir(path, true)
    }

    pub fn rename(&self, from: &str, to: &str) -> Result<(), Error> {
        self.dir.rename(from, to)
    }
}
