//! What a stranger's connection may hold on every HTTP server Warden runs
//! (MCP, approvals, console): a place among a bounded number open at once,
//! and a bounded time to send a request's head. A connection past the cap
//! is closed as it comes; one that sends no complete head within the read
//! timeout (a new connection, or a kept-alive one between requests) is
//! closed by hyper, and so is one whose client reads nothing of its
//! answers for as long ([`Progressing`]). Before, a client opening connections that each sent
//! half a request line kept every one open for good: enough of them used
//! up the process's file descriptors, and then every tool's files, every
//! egress connection and every new client failed.

use bytes::Bytes;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// File descriptors kept for everything but connections (the trail, tools'
/// files, egress sockets, the compile cache) when the process's limit
/// bounds the connections below what was asked for.
const RESERVED_FDS: u64 = 256;
/// The fewest connections a server takes, whatever the descriptor limit.
const MIN_CONNECTIONS: usize = 16;
/// Connections each server may hold beyond the room they share, when
/// that is full.
const FLOOR: usize = 16;
/// Servers a process runs (MCP, approvals, console): the room they share
/// leaves each its [`FLOOR`].
const SERVERS: usize = 3;

/// The connections one server holds open, at most `max`, and within the
/// room every server's connections share ([`shared_room`]).
pub(crate) struct Admission {
    open: Arc<Semaphore>,
    /// Every server's connections in the process.
    all: Arc<Semaphore>,
    /// Places of its own when `all` is full ([`FLOOR`]): strangers filling
    /// one server cannot turn the operator away from another (the console,
    /// the approvals endpoint).
    floor: Arc<Semaphore>,
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
        Self::within(what, max, shared_room().clone())
    }

    /// [`Admission::new`] within the room `all` every server shares.
    fn within(what: &'static str, max: usize, all: Arc<Semaphore>) -> Admission {
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
            all,
            floor: Arc::new(Semaphore::new(FLOOR)),
            max,
            what,
            full: AtomicBool::new(false),
        }
    }

    /// A place for a new connection from `peer`, held until the connection
    /// ends; `None` when all are taken (the caller drops the connection).
    pub(crate) fn admit(&self, peer: std::net::SocketAddr) -> Option<Place> {
        let own = self.open.clone().try_acquire_owned();
        let all = (own.as_ref().ok()).map(|_| {
            (self.all.clone().try_acquire_owned())
                .or_else(|_| self.floor.clone().try_acquire_owned())
        });
        match (own, all) {
            (Ok(own), Some(Ok(all))) => {
                self.full.store(false, Ordering::Relaxed);
                Some(Place(own, all))
            }
            (own, _) => {
                if !self.full.swap(true, Ordering::Relaxed) {
                    let most = match own {
                        Ok(_) => "the most the process's servers hold together",
                        Err(_) => "the most it holds",
                    };
                    tracing::warn!(
                        "{}: {} connections open, {most}; closing new ones as they come until one ends",
                        self.what,
                        self.max - self.open.available_permits(),
                    );
                }
                tracing::debug!("{}: closing {peer}'s connection (all taken)", self.what);
                None
            }
        }
    }
}

/// A connection's places, its server's and the process's, held until it
/// ends.
pub(crate) struct Place(
    #[allow(dead_code, reason = "held for its drop")] OwnedSemaphorePermit,
    #[allow(dead_code, reason = "held for its drop")] OwnedSemaphorePermit,
);

/// The connections every server of the process (MCP, approvals, console)
/// holds together: within what the open-file limit leaves beside
/// [`RESERVED_FDS`], so that servers whose caps add up past it cannot
/// take the descriptors tools, egress and the trail need.
fn shared_room() -> &'static Arc<Semaphore> {
    static ROOM: std::sync::OnceLock<Arc<Semaphore>> = std::sync::OnceLock::new();
    ROOM.get_or_init(|| {
        let room = fd_room().map_or(Semaphore::MAX_PERMITS, |r| {
            r.saturating_sub(SERVERS * FLOOR)
        });
        Arc::new(Semaphore::new(
            room.clamp(MIN_CONNECTIONS, Semaphore::MAX_PERMITS),
        ))
    })
}

/// A warning strangers can cause as often as they like (a wrong token past
/// its budget, a refused session): logged at most once a second, the rest
/// counted and told with the next. One per place it is logged from.
pub(crate) struct Quiet {
    /// The second (from [`Quiet::epoch`], plus one) of the last warning.
    at: AtomicU64,
    held: AtomicU64,
}

impl Quiet {
    pub(crate) const fn new() -> Quiet {
        Quiet {
            at: AtomicU64::new(0),
            held: AtomicU64::new(0),
        }
    }

    fn epoch() -> std::time::Instant {
        static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        *EPOCH.get_or_init(std::time::Instant::now)
    }

    /// Whether to log the warning now: `Some(n)`, with the `n` held back
    /// since the last one; `None`, counted.
    pub(crate) fn due(&self) -> Option<u64> {
        let now = Self::epoch().elapsed().as_secs() + 1;
        let last = self.at.load(Ordering::Relaxed);
        if last == now
            || self
                .at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            self.held.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.held.swap(0, Ordering::Relaxed))
    }

    /// `message`, with how many like it were held back, if any.
    pub(crate) fn told(message: &str, held: u64) -> String {
        match held {
            0 => message.to_owned(),
            n => format!("{message} ({n} more like it not logged since the last)"),
        }
    }
}

/// Logs `$msg` (a format) at warn level through the `Quiet` of this place.
macro_rules! quiet_warn {
    ($($msg:tt)*) => {{
        static QUIET: $crate::mcp::http::conns::Quiet = $crate::mcp::http::conns::Quiet::new();
        if let Some(held) = QUIET.due() {
            tracing::warn!("{}", $crate::mcp::http::conns::Quiet::told(&format!($($msg)*), held));
        }
    }};
}
pub(crate) use quiet_warn;

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
        .header_read_timeout(read.min(MAX_READ_TIMEOUT))
        .max_header_size(MAX_HEAD)
        .max_buf_size(MAX_BUFFER);
    builder
}

/// The longest request head (hyper answers 431), and the most a
/// connection buffers of what its client sends. hyper's default, 408 KiB
/// of buffer and no head limit, let strangers' connections hold that much
/// each before Host or a token was looked at.
const MAX_HEAD: usize = 32 << 10;
const MAX_BUFFER: usize = 64 << 10;

/// How much a client must read, from when a write first has to wait,
/// before the wait starts again ([`Progressing`]).
const STEADY: usize = 64 << 10;

/// Why a request's body was not read.
#[derive(Debug)]
pub(crate) enum BodyError<E> {
    /// It is larger than the limit.
    TooLarge,
    /// Reading it failed (the connection, a malformed chunk).
    Failed(E),
}

/// A request's body read whole, at most `limit` bytes of data, into one
/// buffer: each frame copied and dropped as it comes. hyper hands frames
/// out as slices of its read buffer, and `Limited::collect` kept every one
/// and the buffer it was cut from: a body of one-byte chunks, each behind
/// a size line padded with zeros that count for nothing, held all its
/// client sent, hundreds of KiB for each byte of the limit.
pub(crate) async fn read_body<B>(mut body: B, limit: usize) -> Result<Bytes, BodyError<B::Error>>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    use http_body_util::BodyExt as _;
    let hint = usize::try_from(body.size_hint().lower()).unwrap_or(limit);
    let mut data = bytes::BytesMut::with_capacity(hint.min(limit));
    while let Some(frame) = body.frame().await {
        if let Ok(chunk) = frame.map_err(BodyError::Failed)?.into_data() {
            if chunk.len() > limit - data.len() {
                return Err(BodyError::TooLarge);
            }
            data.extend_from_slice(&chunk);
        }
    }
    Ok(data.freeze())
}

/// `stream` for hyper, its writes held to make progress within `patience`
/// ([`Progressing`]).
pub(crate) fn io(
    stream: tokio::net::TcpStream,
    patience: Duration,
) -> hyper_util::rt::TokioIo<Progressing<tokio::net::TcpStream>> {
    hyper_util::rt::TokioIo::new(Progressing {
        inner: stream,
        patience: patience.min(MAX_READ_TIMEOUT),
        stalled: None,
        since: 0,
    })
}

/// A connection whose client must read what it is sent: once a write (or
/// flush) has to wait — the client's window full — the client has
/// `patience` to read [`STEADY`] bytes or all that was written (a flush
/// done); if not, the write fails and hyper closes the connection. Before,
/// a client that never read its answers (an event stream it opened,
/// pipelined requests) kept its place, and the call behind it, until the
/// session closed; and one that read a few bytes now and then (each a
/// write that went on) kept a large answer waiting for hours.
pub(crate) struct Progressing<S> {
    inner: S,
    patience: Duration,
    /// Since when writes have waited, if they have.
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// Bytes written since then.
    since: usize,
}

impl<S> Progressing<S> {
    /// A write that could not go on: pending until `patience` has passed
    /// since it first could not, then an error.
    fn waited<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        let patience = self.patience;
        let sleep = (self.stalled).get_or_insert_with(|| Box::pin(tokio::time::sleep(patience)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the client read less than 64 KiB of its answer in {patience:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// A write's result: waited on if pending; if it went on, the wait
    /// over once [`STEADY`] bytes have gone since it began.
    fn wrote(
        &mut self,
        r: Poll<std::io::Result<usize>>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<usize>> {
        match r {
            Poll::Pending => self.waited(cx),
            Poll::Ready(Ok(n)) => {
                self.since = self.since.saturating_add(n);
                if self.since >= STEADY {
                    (self.stalled, self.since) = (None, 0);
                }
                Poll::Ready(Ok(n))
            }
            failed => failed,
        }
    }

    /// A flush's (or shutdown's) result: waited on if pending; done, all
    /// that was written has gone and the wait is over.
    fn flushed(
        &mut self,
        r: Poll<std::io::Result<()>>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        match r {
            Poll::Pending => self.waited(cx),
            ready => {
                (self.stalled, self.since) = (None, 0);
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Progressing<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Progressing<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(r, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.flushed(r, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.flushed(r, cx)
    }
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

    /// Servers whose caps add up past the process's room share it: one
    /// server's connections leave another what is left, and its floor of
    /// its own (strangers filling the MCP server cannot turn the operator
    /// away from the console).
    #[test]
    fn servers_share_the_process_room_each_with_a_floor() {
        let peer = "127.0.0.1:9".parse().unwrap();
        let room = Arc::new(Semaphore::new(44));
        let a = Admission::within("a", 80, room.clone());
        let b = Admission::within("b", 40, room.clone());
        let held_a: Vec<_> = (0..44 + FLOOR).map(|_| a.admit(peer).unwrap()).collect();
        assert!(a.admit(peer).is_none(), "the room and a's floor are full");
        let held_b: Vec<_> = (0..FLOOR).map(|_| b.admit(peer).unwrap()).collect();
        assert!(b.admit(peer).is_none(), "the room and b's floor are full");
        assert!(b.full.load(Ordering::Relaxed));
        assert_eq!(
            b.open.available_permits(),
            40 - FLOOR,
            "b's own place given back"
        );
        drop(held_a);
        assert!(b.admit(peer).is_some(), "room is back once a's end");
        drop(held_b);
        assert_eq!(room.available_permits(), 44);
    }

    /// A warning a stranger can cause is logged once a second, the rest
    /// counted and told with the next.
    #[test]
    fn a_warning_strangers_cause_is_logged_once_a_second() {
        let q = Quiet::new();
        assert_eq!(q.due(), Some(0));
        for _ in 0..1000 {
            assert_eq!(q.due(), None);
        }
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(q.due(), Some(1000));
        assert_eq!(
            Quiet::told("m", 1000),
            "m (1000 more like it not logged since the last)"
        );
        assert_eq!(Quiet::told("m", 0), "m");
    }

    /// A client that reads a little now and then (each read lets a write
    /// go on) is closed once it reads less than `STEADY` within the
    /// patience; one that reads steadily gets its whole answer.
    #[tokio::test]
    async fn a_client_must_read_steadily_not_a_trickle() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let patience = Duration::from_millis(400);
        let answer = vec![b'x'; 1 << 20];
        for (each, expected_ok) in [(512, false), (STEADY, true)] {
            let (client, server) = tokio::io::duplex(4096);
            let reader = tokio::spawn(async move {
                let (mut client, mut buf, mut read) = (client, vec![0; each], 0);
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    match client.read_exact(&mut buf).await {
                        Ok(_) => read += each,
                        Err(_) => return read,
                    }
                }
            });
            let mut conn = Progressing {
                inner: server,
                patience,
                stalled: None,
                since: 0,
            };
            let written = async {
                conn.write_all(&answer).await?;
                conn.flush().await
            };
            // Before, the trickle kept the write going for 200 s.
            let written = tokio::time::timeout(Duration::from_secs(20), written).await;
            let written = written.expect("the write ends, one way or the other");
            if expected_ok {
                assert!(written.is_ok(), "{written:?}");
            } else {
                let e = written.unwrap_err();
                assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
            }
            drop(conn);
            let read = reader.await.unwrap();
            assert_eq!(
                read >= answer.len() - 4096,
                expected_ok,
                "{read} bytes read"
            );
        }
    }

    /// A body's frames are copied, not kept: the buffers they were cut
    /// from are free once it is read; more than the limit is refused.
    #[tokio::test]
    async fn a_body_is_read_into_one_buffer_of_its_data() {
        let wire = Bytes::from(vec![b'0'; 64 << 10]);
        let body = |wire: &Bytes| {
            let frames: Vec<_> = (0..100)
                .map(|i| {
                    Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(wire.slice(i..=i)))
                })
                .collect();
            http_body_util::StreamBody::new(futures_util::stream::iter(frames))
        };
        let read = read_body(body(&wire), 100).await.unwrap();
        assert_eq!(&read[..], &[b'0'; 100][..]);
        assert!(wire.is_unique(), "no frame keeps the buffer it came from");
        let refused = read_body(body(&wire), 99).await;
        assert!(matches!(refused, Err(BodyError::TooLarge)), "{refused:?}");
    }

    #[test]
    fn the_cap_leaves_room_for_the_rest_of_the_process() {
        let room = fd_room().expect("this platform states its descriptor limit");
        let a = Admission::new("test", usize::MAX);
        assert_eq!(a.max, room.max(MIN_CONNECTIONS));
    }
}
