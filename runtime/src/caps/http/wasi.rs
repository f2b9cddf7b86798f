//! Standard `wasi:http` outgoing requests, under the same egress policy as
//! `warden:tool/http`: the one egress check ([`super::egress`]), the same
//! gate (runtime policy, records, approval), and a connection to the address
//! that was checked. A streamed body is not scanned for revealed secret
//! values; secrets cannot be attached by reference here.

use super::REQUEST_TIMEOUT;
use super::check::Origin;
use super::egress::{self, Egress, Refused, Via};
use crate::audit::Event;
use crate::policy::TaskHistory;
use crate::policy::gate::{Gate, Pass};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// Per-invocation hooks for `wasi:http`: the invocation's egress and gate.
pub(crate) struct EgressHooks {
    pub(crate) egress: Egress,
    pub(crate) gate: Gate,
}

type SendResult = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Error,
>;

impl WasiHttpHooks for EgressHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let egress = self.egress.clone();
        let gate = self.gate.clone();
        Box::new(async move { send(egress, gate, request).await })
    }
}

/// Checks, gates and sends one request. A record that cannot be written
/// refuses the request (fail closed: no record, no request).
async fn send(egress: Egress, gate: Gate, request: http::Request<WasiBody>) -> SendResult {
    let denied = |_| Error::HttpRequestDenied;
    let method = request.method().as_str().to_owned();
    let url = request.uri().to_string();
    let check = egress::Request {
        via: Via::Wasi,
        method: &method,
        url: &url,
        headers: request
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes()))
            .collect(),
        body: None,
        bearer: None,
        limit: gate.hostcall_limit(),
    };
    let (shown, checked) = egress.check(&check, gate.redactor()).await;
    drop(check);
    let checked = match checked {
        Ok(c) => c,
        Err((refusal, why)) => {
            gate.refuse("http", &shown.method, &shown.resource, refusal)
                .await
                .map_err(denied)?;
            return Err(match why {
                Refused::Address => Error::DestinationIpProhibited,
                _ => Error::HttpRequestDenied,
            });
        }
    };
    let summary = || format!("{} {} (streamed body)", checked.method, shown.resource);
    let call = egress.send_call(
        &checked,
        &shown,
        gate.has_policy(),
        "body streamed",
        &summary,
        false,
    );
    let Ok(pass) = gate.pass(call).await.map_err(denied)? else {
        return Err(Error::HttpRequestDenied);
    };
    let timeout = REQUEST_TIMEOUT.min(gate.deadline().saturating_duration_since(Instant::now()));
    let started = Instant::now();
    let result = send_pinned(
        &pass,
        request,
        checked.address,
        &checked.origin,
        timeout,
        gate.hostcall_limit(),
    )
    .await;
    let host = checked.origin.host.to_string();
    let remember = |_: &_, h: &mut TaskHistory| TaskHistory::note(&mut h.hosts_contacted, &host);
    gate.outcome(pass, Event::Egress, remember, |r| {
        r.address = Some(checked.address.to_string());
        r.duration_us = Some(started.elapsed().as_micros().try_into().unwrap_or(u64::MAX));
        match &result {
            Ok((resp, _)) => {
                r.status = Some(resp.status().as_u16());
                r.outcome = Some("ok".into());
            }
            Err(e) => {
                r.outcome = Some("error".into());
                r.message = Some(e.to_string());
            }
        }
    })
    .map_err(denied)?;
    result
}

/// Sends `req` over a connection to `addr`; TLS verifies the origin's host name.
async fn send_pinned(
    _pass: &Pass<()>,
    mut req: http::Request<WasiBody>,
    addr: SocketAddr,
    origin: &Origin,
    timeout: Duration,
    limit: usize,
) -> SendResult {
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(Error::Connect)?;
    // The request line carries only the path; Host was set from the URL.
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    *req.uri_mut() = http::Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;
    let response = if origin.scheme == "https" {
        let roots = tokio_rustls::rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        let config = tokio_rustls::rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = match &origin.host {
            url::Host::Domain(d) => {
                tokio_rustls::rustls::pki_types::ServerName::try_from(d.clone())
                    .map_err(|_| Error::HttpRequestUriInvalid)?
            }
            url::Host::Ipv4(a) => (*a).into(),
            url::Host::Ipv6(a) => (*a).into(),
        };
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(Error::Tls)?;
        exchange(TokioIo::new(tls), req, timeout, limit).await?
    } else {
        exchange(TokioIo::new(tcp), req, timeout, limit).await?
    };
    Ok((response, Box::new(async { Ok(()) })))
}

async fn exchange<IO>(
    io: IO,
    req: http::Request<WasiBody>,
    timeout: Duration,
    limit: usize,
) -> Result<http::Response<WasiBody>, Error>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        tokio::time::timeout(timeout, hyper::client::conn::http1::handshake(io))
            .await
            .map_err(|_| Error::ConnectionTimeout)??;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("wasi:http connection ended: {e}");
        }
    });
    let resp = tokio::time::timeout(timeout, sender.send_request(req))
        .await
        .map_err(|_| Error::ConnectionReadTimeout)??;
    Ok(resp.map(|body| {
        http_body_util::Limited::new(body, limit)
            .map_err(move |e| match e.downcast::<hyper::Error>() {
                Ok(h) => Error::from(*h),
                Err(_) => Error::HttpResponseBodySize(Some(limit as u64)),
            })
            .boxed_unsync()
    }))
}
