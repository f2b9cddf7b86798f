//! Secrets granted to this task.
//!
//! ```ignore
//! let token = warden_tool::secrets::get("api-token")?;
//! let value = token.reveal()?; // only if the manifest says reveal = true
//! ```
//!
//! A secret expires at its TTL or when the invocation returns. The host
//! redacts a revealed value as it was revealed, and its known encodings
//! (base64, hex, URL, JSON escapes), from the tool's output, errors,
//! stdout, stderr and logs; not a value the tool derives from it (a part of
//! it, reversed, hashed, encrypted), which leaves as written. Prefer a
//! by-reference use ([`crate::http::Request::bearer`]): the tool then never
//! holds the value.

use crate::bindings::warden::tool::secrets as wit;
pub use wit::ErrorCode;

/// An error from the host's secrets capability.
pub type Error = wit::Error;

impl wit::Error {
    /// `code: message`, e.g. `expired: secret 'api' has expired (past its ttl)`.
    pub fn describe(&self) -> String {
        let code = match self.code {
            ErrorCode::Denied => "denied",
            ErrorCode::Expired => "expired",
        };
        format!("{code}: {}", self.message)
    }
}

/// A granted secret, held by reference.
pub struct Secret {
    inner: wit::Secret,
}

/// A granted secret by name.
pub fn get(name: &str) -> Result<Secret, Error> {
    Ok(Secret {
        inner: wit::get(name)?,
    })
}

impl Secret {
    pub fn name(&self) -> String {
        self.inner.name()
    }

    pub(crate) fn resource(&self) -> &wit::Secret {
        &self.inner
    }

    /// The value; needs `reveal = true` in the manifest.
    pub fn reveal(&self) -> Result<String, Error> {
        self.inner.reveal()
    }
}
