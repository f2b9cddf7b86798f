//! What an approval of a request binds and what its approver reads, the
//! same on both HTTP paths: every header the tool set (trailers apart), a
//! secret attached by reference, and the body.

use super::egress::Checked;
use super::overrides::is_any_header as is_override;
use crate::policy::gate::{SUMMARY_CONTENTS, SUMMARY_PART, summary_part};
use crate::redact::Redactor;
use sha2::{Digest, Sha256};

/// Words in a header's name that mark it as carrying a credential
/// (`Authorization`, `Cookie`, `X-Api-Key`, `Private-Token` …): an
/// approver, and the trail that keeps what an approver was shown, see its
/// size only (a hash would let guesses at a short password be checked).
const CREDENTIALS: [&str; 9] = [
    "auth",
    "cookie",
    "key",
    "token",
    "secret",
    "session",
    "password",
    "credential",
    "signature",
];

/// A request as an approval sees it.
pub(crate) struct Approvable<'h> {
    pub(crate) headers: Vec<(&'h str, &'h [u8])>,
    /// `wasi:http` trailers; none on `warden:tool/http`.
    pub(crate) trailers: Vec<(&'h str, &'h [u8])>,
    /// The secret attached by reference as the bearer token, by name.
    pub(crate) bearer: Option<&'h str>,
    pub(crate) body: &'h [u8],
}

impl Approvable<'_> {
    /// What the digest binds besides the method and URL (the approval's
    /// resource): the SHA-256 of the body, of the headers and of the
    /// trailers, each name (lower-cased) and value as sent, length-prefixed,
    /// in order; and the attached secret's name. No header (an
    /// `X-HTTP-Method-Override`, a `Content-Type`) and no byte of the body
    /// can change without changing the digest a person approved.
    pub(crate) fn args(&self) -> String {
        let fields = |fields: &[(&str, &[u8])]| {
            let mut h = Sha256::new();
            for (name, value) in fields {
                for part in [name.to_ascii_lowercase().as_bytes(), value] {
                    h.update((part.len() as u64).to_le_bytes());
                    h.update(part);
                }
            }
            hex::encode(h.finalize())
        };
        let mut args = format!(
            "body sha256 {}; headers sha256 {}",
            hex::encode(Sha256::digest(self.body)),
            fields(&self.headers)
        );
        if !self.trailers.is_empty() {
            args.push_str(&format!("; trailers sha256 {}", fields(&self.trailers)));
        }
        if let Some(name) = self.bearer {
            args.push_str(&format!("; bearer secret '{name}'"));
        }
        args
    }

    /// The request as its approver reads it: the method (and any other an
    /// override asks for), URL, body size and the attached secret first;
    /// then the headers (method overrides first, credentials as a size),
    /// the trailers, and the body. Each part the tool chose is redacted
    /// whole, then cut ([`summary_part`]), so no secret is split where a
    /// person's view ends and no long part pushes the facts out of it.
    pub(crate) fn summary(&self, checked: &Checked, resource: &str, redactor: &Redactor) -> String {
        let part = |p: &[u8]| summary_part(redactor, p, SUMMARY_PART);
        let mut s = checked.method.clone();
        for asked in checked.asked_for() {
            s.push_str(&format!(" (asking for {asked})"));
        }
        s.push_str(&format!(
            " {} ({} bytes of body)",
            part(resource.as_bytes()),
            self.body.len()
        ));
        if let Some(name) = self.bearer {
            s.push_str(&format!("; secret '{name}' attached as its bearer token"));
        }
        let (first, rest): (Vec<_>, Vec<_>) =
            self.headers.iter().partition(|(k, _)| is_override(k));
        let headers: Vec<_> = first.into_iter().chain(rest).collect();
        match headers.is_empty() {
            true => s.push_str("; no headers"),
            false => s.push_str(&format!("; headers: {}", fields(&headers, &part, 1024))),
        }
        if !self.trailers.is_empty() {
            let trailers: Vec<_> = self.trailers.iter().collect();
            s.push_str(&format!("; trailers: {}", fields(&trailers, &part, 512)));
        }
        if !self.body.is_empty() {
            let contents = summary_part(redactor, self.body, SUMMARY_CONTENTS);
            s.push_str(&format!("; contents: \"{contents}\""));
        }
        s
    }
}

/// Fields as `name: value, …` up to about `budget` bytes, then how many
/// more there are: many headers cannot push the contents out.
fn fields(all: &[&(&str, &[u8])], part: &dyn Fn(&[u8]) -> String, budget: usize) -> String {
    let mut shown = String::new();
    for (i, f) in all.iter().enumerate() {
        if shown.len() >= budget {
            shown.push_str(&format!(" … and {} more", all.len() - i));
            break;
        }
        if i > 0 {
            shown.push_str(", ");
        }
        shown.push_str(&field(f, part));
    }
    shown
}

/// `name: value`, each cut by `part`; a credential's value as its size.
fn field((name, value): &(&str, &[u8]), part: &dyn Fn(&[u8]) -> String) -> String {
    let lower = name.to_ascii_lowercase();
    if CREDENTIALS.iter().any(|c| lower.contains(c)) {
        return format!("{}: [{} bytes]", part(name.as_bytes()), value.len());
    }
    format!("{}: {}", part(name.as_bytes()), part(value))
}

impl Checked {
    /// [`Approvable::args`], when an approval may be asked: the request's
    /// rules require one, or a policy (`policy`) may; else nothing (a body
    /// of megabytes is not hashed for an approval no one will see).
    pub(crate) fn approval_args<'h>(
        &self,
        policy: bool,
        request: impl FnOnce() -> Approvable<'h>,
    ) -> String {
        if self.needs_approval() || policy {
            request().args()
        } else {
            String::new()
        }
    }
}
