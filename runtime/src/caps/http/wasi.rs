//! Standard `wasi:http` outgoing requests, under the same egress policy as
//! `warden:tool/http`: the same URL checks, allowlist, address policy and
//! secret `send-to` rule (for values in the URL and headers; a streamed body
//! is not scanned), the same audit records, and a connection to the address
//! that was checked. Secrets cannot be attached by reference here.

use super::check::{self, METHODS, Origin};
use super::host::resolve;
use super::{EgressRule, REQUEST_TIMEOUT};
use crate::audit::{Auditor, Event};
use crate::caps::secrets::redact::Redactor;
use crate::policy::Decision;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// Per-invocation hooks for `wasi:http`.
pub(crate) struct EgressHooks {
    pub(crate) rules: Vec<EgressRule>,
    pub(crate) redactor: Arc<Redactor>,
    /// `send-to` origins of each granted secret.
    pub(crate) send_to: Vec<(String, Vec<String>)>,
    pub(crate) audit: Auditor,
    pub(crate) deadline: Instant,
    /// Most bytes of a response body.
    pub(crate) limit: usize,
    /// Runtime policy, when the manifest has any.
    pub(crate) policy: Option<crate::policy::PolicyCtx>,
}

type SendResult = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Error,
>;

struct Checked {
    method: String,
    resource: String,
    origin: Origin,
    rule: EgressRule,
    /// The allowing decision, with any runtime policy ids.
    allow: Decision,
}

impl EgressHooks {
    /// The synchronous checks: method, URL, allowlist, secrets in URL and headers.
    fn check(&self, req: &http::Request<WasiBody>) -> Result<Checked, (String, String, Decision)> {
        let method = req.method().as_str().to_ascii_uppercase();
        let raw = req.uri().to_string();
        let resource = self.redactor.redact(&raw).into_owned();
        let deny = |rule, reason: String| {
            Err((
                method.clone(),
                resource.clone(),
                Decision::deny(rule, reason),
            ))
        };
        if !METHODS.contains(&method.as_str()) {
            return deny("http.request", format!("unknown method '{method}'"));
        }
        let (url, origin) = match check::parse_url(&raw) {
            Ok(v) => v,
            Err(reason) => return deny("http.url", reason),
        };
        let rule = match check::match_rule(&self.rules, &method, &url, &origin) {
            Ok(r) => r.clone(),
            Err(reason) => return deny("http.allowlist", reason),
        };
        if rule.approval {
            return deny(
                "approval",
                "this egress needs approval, which only warden:tool/http requests can wait for"
                    .into(),
            );
        }
        let mut carried = self.redactor.names_in(raw.as_bytes());
        for (k, v) in req.headers() {
            carried.extend(self.redactor.names_in(k.as_str().as_bytes()));
            carried.extend(self.redactor.names_in(v.as_bytes()));
        }
        for name in carried {
            let allowed = self
                .send_to
                .iter()
                .find(|(n, _)| *n == name)
                .is_some_and(|(_, to)| check::send_to_allows(to, &origin));
            if !allowed {
                return deny(
                    "secret.send-to",
                    format!("exfiltration attempt: secret '{name}' may not be sent to {origin}"),
                );
            }
        }
        let resource = self.redactor.redact(url.as_str()).into_owned();
        let mut allow = Decision::allow(
            "http.allowlist",
            format!("{method} {resource} is granted (wasi:http)"),
        );
        let approval = super::consult_egress(
            self.policy.as_ref(),
            &mut allow,
            &method,
            &origin,
            &resource,
            &rule,
            self.send_to
                .iter()
                .map(|(n, to)| (n.as_str(), to.as_slice())),
        );
        if approval {
            allow.allow = false;
            allow.rule = "approval";
            allow.reason = format!(
                "{}; only warden:tool/http requests can wait for approval",
                allow.reason
            );
        }
        if !allow.allow {
            return Err((method, resource, allow));
        }
        if let Some(p) = &self.policy {
            p.remember(|h| {
                crate::policy::TaskHistory::note(&mut h.hosts_contacted, &origin.host.to_string())
            });
        }
        Ok(Checked {
            resource,
            method,
            origin,
            rule,
            allow,
        })
    }
}

fn record(
    audit: &Auditor,
    method: &str,
    resource: &str,
    address: Option<SocketAddr>,
    d: &Decision,
) -> Result<(), Error> {
    let mut r = audit.decision("http", method, resource, d);
    r.address = address.map(|a| a.to_string());
    // Fail closed: no record, no request.
    audit.write(&r).map_err(|_| Error::HttpRequestDenied)
}

impl WasiHttpHooks for EgressHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let checked = self.check(&request);
        let audit = self.audit.clone();
        let limit = self.limit;
        let timeout = REQUEST_TIMEOUT.min(self.deadline.saturating_duration_since(Instant::now()));
        Box::new(async move {
            let c = match checked {
                Ok(c) => c,
                Err((method, resource, d)) => {
                    record(&audit, &method, &resource, None, &d)?;
                    return Err(Error::HttpRequestDenied);
                }
            };
            let addr = match resolve(&c.origin, &c.rule).await {
                Ok(a) => a,
                Err(reason) => {
                    record(
                        &audit,
                        &c.method,
                        &c.resource,
                        None,
                        &Decision::deny("http.address", reason),
                    )?;
                    return Err(Error::DestinationIpProhibited);
                }
            };
            record(&audit, &c.method, &c.resource, Some(addr), &c.allow)?;
            let started = Instant::now();
            let result = send_pinned(request, addr, &c.origin, timeout, limit).await;
            let mut r = audit.record(Event::Egress);
            r.capability = Some("http".into());
            r.action = Some(c.method);
            r.resource = Some(c.resource);
            r.address = Some(addr.to_string());
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
            audit.write(&r).map_err(|_| Error::HttpRequestDenied)?;
            result
        })
    }
}

/// Sends `req` over a connection to `addr`; TLS verifies the origin's host name.
async fn send_pinned(
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
