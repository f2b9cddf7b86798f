//! The connection of one request a tool makes (`warden:tool/http` and
//! `wasi:http` alike): to the address the egress check resolved, with TLS
//! verifying the origin's host name ([`crate::net::tls_config`]), HTTP/1.1,
//! and closed once the request is done.
//!
//! There is no pool: a connection is never shared between requests, so never
//! between invocations or tasks. Nor is there a client per request (what
//! reqwest would build, with its pool, connector and default headers): a
//! request in flight holds its connection and little else, which is what a
//! thousand calls waiting on the network cost (the `mcp` bench).

use super::check::Origin;
use hyper::body::Body;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;

/// Why a connection could not be opened.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Not connected, secured and ready within the timeout.
    Timeout,
    Connect(std::io::Error),
    Tls(std::io::Error),
    Http(hyper::Error),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout => f.write_str("not connected in time"),
            Failure::Connect(e) => write!(f, "connecting: {e}"),
            Failure::Tls(e) => write!(f, "TLS: {}", tls_reason(e)),
            Failure::Http(e) => write!(f, "HTTP: {e}"),
        }
    }
}

/// A TLS failure in words of our own. rustls's text can quote what the
/// server presented (every name its certificate is valid for), which the
/// server chooses: a list of candidates for a secret, one of which a marker
/// in the redacted message would point out to the tool.
pub(super) fn tls_reason(e: &std::io::Error) -> std::borrow::Cow<'static, str> {
    use tokio_rustls::rustls::{CertificateError as C, Error as R};
    let Some(r) = e.get_ref().and_then(|inner| inner.downcast_ref::<R>()) else {
        // Not rustls's: the connection's own (reset, closed), or ours.
        return match e.get_ref() {
            None => e.kind().to_string().into(),
            Some(_) => e.to_string().into(),
        };
    };
    let certificate = |why: &'static str| format!("the server's certificate {why}").into();
    match r {
        R::InvalidCertificate(c) => match c {
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                certificate("is not valid for the name asked for")
            }
            C::Expired | C::ExpiredContext { .. } => certificate("has expired"),
            C::NotValidYet | C::NotValidYetContext { .. } => certificate("is not valid yet"),
            C::UnknownIssuer => certificate("is not from a trusted issuer"),
            C::Revoked => certificate("is revoked"),
            _ => certificate("was refused"),
        },
        R::AlertReceived(alert) => format!("the server sent the alert {alert:?}").into(),
        R::NoCertificatesPresented => "the server presented no certificate".into(),
        _ => "the handshake failed".into(),
    }
}

/// A connection ready for its request: the request's sender, and the
/// connection's own future, which reads and writes the socket only while it
/// is polled ([`Driver::beside`]), on the request's task. There is no task
/// of its own to outlive the exchange: dropped, the socket is closed there
/// and then, even when its peer stalls its close (a TLS `close_notify` to a
/// server that reads nothing would otherwise wait forever, holding the
/// socket and the request's body), and a request task that is stopped and
/// awaited has written its last byte ([`super::Requests::stop`]).
pub(crate) struct Connection<B> {
    pub(crate) sender: SendRequest<B>,
    pub(crate) driver: Driver,
}

/// The connection's future, until it ends.
pub(crate) struct Driver(Option<Pin<Box<dyn Future<Output = ()> + Send>>>);

impl Driver {
    /// `exchange` (a request on the connection's sender and its response
    /// read), with the connection driven beside it. The caller pins the
    /// exchange: moved in, it would be stored twice in the request's future,
    /// which every request in flight holds.
    pub(crate) fn beside<'a, F: Future>(
        &'a mut self,
        mut exchange: Pin<&'a mut F>,
    ) -> impl Future<Output = F::Output> + 'a {
        std::future::poll_fn(move |cx| {
            loop {
                if let Poll::Ready(done) = exchange.as_mut().poll(cx) {
                    return Poll::Ready(done);
                }
                let Some(conn) = &mut self.0 else {
                    return Poll::Pending;
                };
                if conn.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                // Closed: the exchange's next poll sees it.
                self.0 = None;
            }
        })
    }
}

/// Opens a connection to `addr` for a request to `origin`, each step within
/// `timeout`.
///
/// Opening (TCP, TLS, the HTTP handshake) is by far the largest state of a
/// request's future: boxed here, it is freed once the connection is open,
/// instead of sizing the future of every call that then waits for its
/// response (~8 KiB a call with 1,000 waiting, measured with heaptrack).
pub(crate) async fn open<B>(
    addr: SocketAddr,
    origin: &Origin,
    timeout: Duration,
) -> Result<Connection<B>, Failure>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Box::pin(open_now(addr, origin, timeout)).await
}

async fn open_now<B>(
    addr: SocketAddr,
    origin: &Origin,
    timeout: Duration,
) -> Result<Connection<B>, Failure>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| Failure::Timeout)?
        .map_err(Failure::Connect)?;
    // Requests are written whole: do not hold a small one for an ACK.
    let _ = tcp.set_nodelay(true);
    if origin.scheme != "https" {
        return handshake(TokioIo::new(tcp), timeout).await;
    }
    let name = match &origin.host {
        url::Host::Domain(d) => ServerName::try_from(d.clone()).map_err(|_| {
            Failure::Tls(std::io::Error::other(format!(
                "'{d}' is not a valid TLS server name"
            )))
        })?,
        url::Host::Ipv4(a) => (*a).into(),
        url::Host::Ipv6(a) => (*a).into(),
    };
    let config = crate::net::tls_config().ok_or_else(|| {
        Failure::Tls(std::io::Error::other(
            "no TLS client configuration (ring lacks the default protocol versions)",
        ))
    })?;
    let tls = tokio::time::timeout(
        timeout,
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|_| Failure::Timeout)?
    .map_err(Failure::Tls)?;
    handshake(TokioIo::new(tls), timeout).await
}

/// The most bytes of a response's head (and of one read of its body).
const MAX_HEAD: usize = 64 << 10;

async fn handshake<IO, B>(io: IO, timeout: Duration) -> Result<Connection<B>, Failure>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // A response's head is read into this buffer: hyper's default lets a
    // server send ~400 KiB of it, held while the tool keeps the response.
    let mut builder = http1::Builder::new();
    builder.max_buf_size(MAX_HEAD).max_headers(100);
    let (sender, conn) = tokio::time::timeout(timeout, builder.handshake(io))
        .await
        .map_err(|_| Failure::Timeout)?
        .map_err(Failure::Http)?;
    let conn = async move {
        if let Err(e) = conn.await {
            tracing::debug!("outgoing HTTP connection ended: {e}");
        }
    };
    Ok(Connection {
        sender,
        driver: Driver(Some(Box::pin(conn))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::task::Context;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

    /// A stream whose close never completes (as a TLS close to a peer that
    /// reads nothing).
    struct Stuck(TcpStream);

    impl AsyncRead for Stuck {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Stuck {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.0).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_dropped_connection_is_closed_even_when_its_close_stalls() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut c, _) = listener.accept().await.unwrap();
            let mut b = [0u8; 4096];
            // Reads the request, never answers, waits for the socket to close.
            while matches!(c.read(&mut b).await, Ok(n) if n > 0) {}
        });
        let io = TokioIo::new(Stuck(TcpStream::connect(addr).await.unwrap()));
        let mut connection =
            handshake::<_, http_body_util::Empty<Bytes>>(io, Duration::from_secs(5))
                .await
                .unwrap();
        let req = http::Request::get("/")
            .header("host", "x")
            .body(Default::default())
            .unwrap();
        let Connection { sender, driver } = &mut connection;
        let unanswered = tokio::time::timeout(
            Duration::from_millis(200),
            driver.beside(std::pin::pin!(sender.send_request(req))),
        )
        .await;
        assert!(unanswered.is_err(), "the server never answers");
        drop(connection);
        tokio::time::timeout(Duration::from_secs(3), server)
            .await
            .expect("the connection outlived its request")
            .unwrap();
    }
}
