//! Who is signed in to the console.
//!
//! A session needs two secrets together: the cookie, and the session's
//! view key in every page's path (`/s/VIEW/…`). Cookies are not kept apart
//! by port, so any other service on the same loopback address is sent the
//! cookie; it is never sent the path (the pages' referrer policy is
//! `same-origin`, and another port is another origin). Forms also carry
//! the session's CSRF token.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The cookie that carries a session.
pub(super) const COOKIE: &str = "warden_console";
/// How long a session lasts after signing in.
pub(super) const SESSION: Duration = Duration::from_secs(8 * 3600);
/// Sessions kept at once; signing in past this ends the oldest.
const MAX_SESSIONS: usize = 64;

/// A signed-in operator, as a request's handler sees them.
#[derive(Clone)]
pub(crate) struct Who {
    /// The name they signed in with (their own word: the token is shared).
    pub name: String,
    pub csrf: String,
    /// `/s/VIEW`: where their pages are.
    pub base: String,
}

struct Session {
    who: Who,
    view: String,
    until: Instant,
}

/// The sessions of one console, keyed by the SHA-256 of the cookie's
/// value (the values themselves are not kept).
#[derive(Default)]
pub(super) struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
}

/// 32 random bytes, hex; `None` without randomness.
fn random() -> Option<String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).ok()?;
    Some(hex::encode(b))
}

fn key(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}

/// Every value of the session cookie a request carries (another service
/// on the same host may have set more than one, with other paths).
fn cookies(headers: &http::HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .filter(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

impl Sessions {
    /// A new session for `name`: its cookie value and who it is.
    pub(super) fn open(&self, name: &str) -> Option<(String, Who)> {
        let (value, csrf, view) = (random()?, random()?, random()?);
        let who = Who {
            name: name.to_owned(),
            csrf,
            base: format!("/s/{view}"),
        };
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        map.retain(|_, s| s.until > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.until).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(
            key(&value),
            Session {
                who: who.clone(),
                view,
                until: now + SESSION,
            },
        );
        Some((value, who))
    }

    /// The operator a request with `headers` for the pages of `view` is
    /// from: one of its cookies must be a live session whose view is
    /// `view`.
    pub(super) fn find(&self, headers: &http::HeaderMap, view: &str) -> Option<Who> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        map.retain(|_, s| s.until > now);
        cookies(headers)
            .filter_map(|c| map.get(&key(c)))
            .find(|s| crate::auth::same(&s.view, view))
            .map(|s| s.who.clone())
    }

    /// Ends the session whose CSRF token is `csrf`.
    pub(super) fn close(&self, csrf: &str) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, s| s.who.csrf != csrf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookies(values: &[&str]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        let line = values
            .iter()
            .map(|v| format!("{COOKIE}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        h.insert(http::header::COOKIE, line.parse().unwrap());
        h
    }

    #[test]
    fn a_session_needs_its_cookie_and_its_view_together() {
        let s = Sessions::default();
        let (cookie, who) = s.open("alice").unwrap();
        let view = who.base.strip_prefix("/s/").unwrap();
        assert_eq!(
            s.find(&with_cookies(&[&cookie]), view).unwrap().name,
            "alice"
        );
        // The cookie alone (another port was sent it) opens nothing.
        assert!(s.find(&with_cookies(&[&cookie]), &"0".repeat(64)).is_none());
        // Nor the view without the cookie.
        assert!(s.find(&with_cookies(&["junk"]), view).is_none());
        // A junk cookie set first by another port does not hide the real one.
        assert!(s.find(&with_cookies(&["junk", &cookie]), view).is_some());
        s.close(&who.csrf);
        assert!(s.find(&with_cookies(&[&cookie]), view).is_none());
    }
}
