//! What a stranger's connection may hold on every HTTP server Warden runs
//! (MCP, approvals, console): a place among a bounded number open at once,
//! and a bounded time to send a request's head. A connection past the cap
//! is closed as it comes; one that sends no complete head within the read
//! timeout (a new connection, or a kept-alive one between requests) is
//! closed by hyper. Before, a client opening connections that each sent
//! half a request line kept every one open for good: enough of them used
//! up the process's file descriptors, and then every tool's files, every
//! egress connection and every new client failed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// File descriptors kept for everything but connections (the trail, tools'
/// files, egress sockets, the compile cache) when the process's limit
/// bounds the connections below what was asked for.
const RESERVED_FDS: u64 = 256;
/// The fewest connections a server takes, whatever the descriptor limit.
const MIN_CONNECTIONS: usize = 16;

/// The connections one server holds open, at most `max`.
pub(crate) struct Admission {
    open: Arc<Semaphore>,
    max: usize,
    what: &'static str,
    /// Whether the last connection that came was turned away (warned once
    /// per spell of turning them away).
    full: AtomicBool,
}

impl Admission {
    /// At most `max` connections for the server named `what`, and fewer
    /// when the process's descriptor limit leaves no room for that many
    /// beside [`RESERVED_FDS`].
    pub(crate) fn new(what: &'static str, max: usize) -> Admission {
        let max = match fd_room() {
            Some(room) if room < max => {
                tracing::info!(
                    "{what}: at most {room} connections open at once (the process may open {} files; asked for {max})",
                    room as u64 + RESERVED_FDS
                );
                room
            }
            _ => max,
        }
        .clamp(MIN_CONNECTIONS, Semaphore::MAX_PERMITS);
        Admission {
            open: Arc::new(Semaphore::new(max)),
            max,
            what,
            full: AtomicBool::new(false),
        }
    }

    /// A place for a new connection from `peer`, held until the connection
    /// ends; `None` when all are taken (the caller drops the connection).
    pub(crate) fn admit(&self, peer: std::net::SocketAddr) -> Option<OwnedSemaphorePermit> {
        match self.open.clone().try_acquire_owned() {
            Ok(permit) => {
                self.full.store(false, Ordering::Relaxed);
                Some(permit)
            }
            Err(_) => {
                if !self.full.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "{}: {} connections open, the most it holds; closing new ones as they come until one ends",
                        self.what,
                        self.max
                    );
                }
                tracing::debug!("{}: closing {peer}'s connection (all taken)", self.what);
                None
            }
        }
    }
}

/// How many connections the process's open-file limit leaves room for.
fn fd_room() -> Option<usize> {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current?;
    usize::try_from(limit.saturating_sub(RESERVED_FDS)).ok()
}

/// The longest wait for a request's head: hyper adds it to the time now,
/// and a sum past what the clock holds panicked every connection's task.
pub const MAX_READ_TIMEOUT: Duration = Duration::from_secs(3600);

/// An HTTP/1 connection builder whose client must send each request's head
/// within `read` (hyper closes the connection otherwise, and closes one
/// kept alive that many seconds after its last answer), at most
/// [`MAX_READ_TIMEOUT`].
pub(crate) fn http1(read: Duration) -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(read.min(MAX_READ_TIMEOUT));
    builder
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_server_turns_connections_away_until_one_ends() {
        let peer = "127.0.0.1:9".parse().unwrap();
        let a = Admission::new("test", MIN_CONNECTIONS);
        assert_eq!(a.max, MIN_CONNECTIONS);
        let held: Vec<_> = (0..MIN_CONNECTIONS)
            .map(|_| a.admit(peer).unwrap())
            .collect();
        assert!(a.admit(peer).is_none(), "one past the cap is turned away");
        assert!(a.full.load(Ordering::Relaxed));
        drop(held);
        assert!(a.admit(peer).is_some(), "a place is back once one ends");
        assert!(!a.full.load(Ordering::Relaxed));
    }

    #[test]
    fn the_cap_leaves_room_for_the_rest_of_the_process() {
        let room = fd_room().expect("this platform states its descriptor limit");
        let a = Admission::new("test", usize::MAX);
        assert_eq!(a.max, room.max(MIN_CONNECTIONS));
    }
}
