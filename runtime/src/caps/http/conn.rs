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
            Failure::Tls(e) => write!(f, "TLS: {e}"),
            Failure::Http(e) => write!(f, "HTTP: {e}"),
        }
    }
}

/// Opens a connection to `addr` for a request to `origin`, each step within
/// `timeout`. The connection is driven on a task of its own, which ends
/// when the returned sender and the response it gave are dropped.
pub(crate) async fn open<B>(
    addr: SocketAddr,
    origin: &Origin,
    timeout: Duration,
) -> Result<SendRequest<B>, Failure>
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

async fn handshake<IO, B>(io: IO, timeout: Duration) -> Result<SendRequest<B>, Failure>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (sender, conn) = tokio::time::timeout(timeout, http1::handshake(io))
        .await
        .map_err(|_| Failure::Timeout)?
        .map_err(Failure::Http)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("outgoing HTTP connection ended: {e}");
        }
    });
    Ok(sender)
}
