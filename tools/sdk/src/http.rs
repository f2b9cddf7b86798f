//! Outbound HTTP, performed by the host under the task's egress grant.
//!
//! ```ignore
//! use warden_tool::{http, secrets};
//! let token = secrets::get("api-token")?;          // never revealed
//! let resp = http::Request::get("https://api.example.com/v1/me")
//!     .bearer(&token)                               // the host inserts the value
//!     .send()?;
//! ```
//!
//! Redirects are not followed by the host: a 3xx response comes back as is,
//! and a request to its `location` is checked like any other.

use crate::bindings::warden::tool::http as wit;
use crate::secrets::Secret;
pub use wit::{ErrorCode, Response};

/// An error from the host's http capability.
pub type Error = wit::Error;

impl wit::Error {
    pub fn describe(&self) -> String {
        let code = match self.code {
            ErrorCode::Denied => "denied",
            ErrorCode::InvalidRequest => "invalid-request",
            ErrorCode::Expired => "expired",
            ErrorCode::TooLarge => "too-large",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Connection => "connection",
        };
        format!("{code}: {}", self.message)
    }
}

/// A request being built.
pub struct Request<'s> {
    inner: wit::Request,
    bearer: Option<&'s Secret>,
}

impl<'s> Request<'s> {
    pub fn new(method: &str, url: &str) -> Self {
        Self {
            inner: wit::Request {
                method: method.to_owned(),
                url: url.to_owned(),
                headers: Vec::new(),
                body: None,
            },
            bearer: None,
        }
    }

    pub fn get(url: &str) -> Self {
        Self::new("GET", url)
    }

    pub fn post(url: &str) -> Self {
        Self::new("POST", url)
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.inner.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.inner.body = Some(body.into());
        self
    }

    /// Attach a secret by reference as `Authorization: Bearer …`.
    pub fn bearer(mut self, secret: &'s Secret) -> Self {
        self.bearer = Some(secret);
        self
    }

    pub fn send(self) -> Result<Response, Error> {
        wit::send(&self.inner, self.bearer.map(|s| s.resource()))
    }
}
