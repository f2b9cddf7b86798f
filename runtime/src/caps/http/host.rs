//! Host side of `warden:tool/http`: check, decide, audit, then send from
//! the host to the address that was checked.

use super::check::{self, METHODS, Origin};
use super::{EgressRule, REQUEST_TIMEOUT};
use crate::audit::Event;
use crate::bindings::warden::tool::http::{self as wit, ErrorCode, Host, Request, Response};
use crate::caps::secrets::SecretRef;
use crate::policy::cedar::Resource as Subject;
use crate::policy::{Decision, TaskHistory};
use crate::state::HostState;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use url::Host as UrlHost;
use wasmtime::component::Resource;

type HttpResult<T> = wasmtime::Result<Result<T, wit::Error>>;

const DNS_TIMEOUT: Duration = Duration::from_secs(5);
/// Request headers a tool may not set: the host derives them.
const HOST_HEADERS: [&str; 4] = ["host", "content-length", "transfer-encoding", "connection"];

fn error(code: ErrorCode, message: impl Into<String>) -> wit::Error {
    wit::Error {
        code,
        message: message.into(),
    }
}

/// What the audit says about one request.
struct Egress {
    method: String,
    /// The URL, redacted.
    resource: String,
    address: Option<SocketAddr>,
}

impl HostState {
    fn audit_egress(&mut self, e: &Egress, d: &Decision) -> wasmtime::Result<()> {
        let mut r = self.audit.decision("http", &e.method, &e.resource, d);
        r.address = e.address.map(|a| a.to_string());
        self.write_audit(&r)
    }

    fn deny<T>(
        &mut self,
        e: &Egress,
        rule: &'static str,
        reason: String,
        code: ErrorCode,
    ) -> HttpResult<T> {
        let d = Decision::deny(rule, reason);
        self.audit_egress(e, &d)?;
        Ok(Err(error(code, d.reason)))
    }

    /// Secrets found in the request must be allowed to go to `origin`.
    fn check_send_to(&self, name: &str, origin: &Origin) -> Result<(), String> {
        let Some(s) = self.secrets.issued.get(name) else {
            return Ok(());
        };
        if check::send_to_allows(&s.spec.send_to, origin) {
            return Ok(());
        }
        let to = if s.spec.send_to.is_empty() {
            "nowhere".to_owned()
        } else {
            s.spec.send_to.join(", ")
        };
        Err(format!(
            "exfiltration attempt: secret '{name}' may be sent only to {to}, not {origin}"
        ))
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// The address to connect to: an IP literal (it matched a rule naming it),
/// or the first resolved address that is public or listed in the rule.
pub(super) async fn resolve(origin: &Origin, rule: &EgressRule) -> Result<SocketAddr, String> {
    let domain = match &origin.host {
        UrlHost::Ipv4(a) => return Ok(SocketAddr::new(IpAddr::V4(*a), origin.port)),
        UrlHost::Ipv6(a) => return Ok(SocketAddr::new(IpAddr::V6(*a), origin.port)),
        UrlHost::Domain(d) => d,
    };
    let addrs = tokio::time::timeout(
        DNS_TIMEOUT,
        tokio::net::lookup_host((domain.as_str(), origin.port)),
    )
    .await
    .map_err(|_| format!("resolving {domain} timed out"))?
    .map_err(|e| format!("cannot resolve {domain}: {e}"))?;
    let mut refused = None;
    for addr in addrs {
        match check::is_special(addr.ip()) {
            Some(kind) if !rule.addresses.contains(&addr.ip()) => {
                refused.get_or_insert(format!(
                    "{domain} resolves to {}, a {kind} address the manifest does not list",
                    addr.ip()
                ));
            }
            _ => return Ok(addr),
        }
    }
    Err(refused.unwrap_or_else(|| format!("{domain} has no addresses")))
}

impl Host for HostState {
    async fn send(
        &mut self,
        req: Request,
        bearer: Option<Resource<SecretRef>>,
    ) -> HttpResult<Response> {
        let method = req.method.to_ascii_uppercase();
        let mut e = Egress {
            method: method.clone(),
            resource: self.redactor.redact(&req.url).into_owned(),
            address: None,
        };
        if !METHODS.contains(&method.as_str()) {
            let reason = format!(
                "unknown method '{}' (expected one of {})",
                req.method,
                METHODS.join(", ")
            );
            return self.deny(&e, "http.request", reason, ErrorCode::InvalidRequest);
        }
        let (url, origin) = match check::parse_url(&req.url) {
            Ok(v) => v,
            // NUL and userinfo are bypass attempts; anything else is a bad URL.
            Err(reason) if reason.contains("NUL") || reason.contains("userinfo") => {
                return self.deny(&e, "http.url", reason, ErrorCode::Denied);
            }
            Err(reason) => return self.deny(&e, "http.url", reason, ErrorCode::InvalidRequest),
        };
        e.resource = self.redactor.redact(url.as_str()).into_owned();
        for (name, _) in &req.headers {
            let lower = name.to_ascii_lowercase();
            if HOST_HEADERS.contains(&lower.as_str())
                || (bearer.is_some() && lower == "authorization")
            {
                let reason = format!("header '{name}' may not be set by a tool here");
                return self.deny(&e, "http.request", reason, ErrorCode::InvalidRequest);
            }
        }
        let body_len = req.body.as_ref().map_or(0, Vec::len);
        if body_len > self.hostcall_limit {
            let reason = format!(
                "request body of {body_len} bytes exceeds the host call limit of {} bytes",
                self.hostcall_limit
            );
            return self.deny(&e, "http.size", reason, ErrorCode::TooLarge);
        }
        let rule = match check::match_rule(&self.egress, &method, &url, &origin) {
            Ok(r) => r.clone(),
            Err(reason) => return self.deny(&e, "http.allowlist", reason, ErrorCode::Denied),
        };

        // Whether runtime policy asks for approval.
        let mut approval = false;
        // A secret attached by reference.
        let mut bearer_value = None;
        if let Some(b) = &bearer {
            let name = self.table.get(b)?.name.clone();
            let now = Instant::now();
            let state = self
                .secrets
                .issued
                .get_mut(&name)
                .map(|s| (s.check_expiry(now), true));
            let d = self.policy.decide_secret("attach", &name, state);
            if !d.allow {
                let code = if d.rule == "secret.ttl" {
                    ErrorCode::Expired
                } else {
                    ErrorCode::Denied
                };
                return self.deny(&e, d.rule, d.reason, code);
            }
            if let Err(reason) = self.check_send_to(&name, &origin) {
                return self.deny(&e, "secret.send-to", reason, ErrorCode::Denied);
            }
            let mut attach = Decision::allow(
                "secret.send-to",
                format!("attached to {method} {origin} (in its send-to)"),
            );
            if let Some(s) = self.secrets.issued.get(&name) {
                let o = origin.to_string();
                approval |= self.consult(&mut attach, "secret::attach", &o, || Subject::Secret {
                    name: &name,
                    labels: &s.spec.labels,
                    send_to: &s.spec.send_to,
                });
            }
            self.write_audit(&self.audit.decision("secret", "attach", &name, &attach))?;
            if !attach.allow {
                return Ok(Err(error(ErrorCode::Denied, attach.reason)));
            }
            bearer_value = self.secrets.issued.get(&name).map(|s| s.value.clone());
        }
        // Revealed secret values the tool put into the request itself.
        let mut carried = self.redactor.names_in(url.as_str().as_bytes());
        for (k, v) in &req.headers {
            carried.extend(self.redactor.names_in(k.as_bytes()));
            carried.extend(self.redactor.names_in(v.as_bytes()));
        }
        if let Some(body) = &req.body {
            carried.extend(self.redactor.names_in(body));
        }
        for name in carried {
            if let Err(reason) = self.check_send_to(&name, &origin) {
                return self.deny(&e, "secret.send-to", reason, ErrorCode::Denied);
            }
        }

        let mut allow = Decision::allow(
            "http.allowlist",
            format!("{method} {origin}{} is granted", url.path()),
        );
        approval |= super::consult_egress(
            self.rules.as_ref(),
            &mut allow,
            &method,
            &origin,
            &e.resource,
            &rule,
            self.secrets
                .issued
                .values()
                .map(|s| (s.spec.name.as_str(), s.spec.send_to.as_slice())),
        );
        if !allow.allow {
            self.audit_egress(&e, &allow)?;
            return Ok(Err(error(ErrorCode::Denied, allow.reason)));
        }
        if rule.approval || approval {
            let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
                req.body.as_deref().unwrap_or_default(),
            ));
            let summary = format!("{method} {} ({body_len} bytes of body)", e.resource);
            let verdict = self
                .approve(
                    "http.send",
                    &e.resource,
                    &format!("body sha256 {digest}"),
                    summary,
                )
                .await?;
            if let Err(reason) = verdict {
                return Ok(Err(error(ErrorCode::Denied, reason)));
            }
        }
        let addr = match resolve(&origin, &rule).await {
            Ok(a) => a,
            Err(reason) => return self.deny(&e, "http.address", reason, ErrorCode::Denied),
        };
        e.address = Some(addr);
        self.audit_egress(&e, &allow)?;
        let host = origin.host.to_string();
        self.remember(|h| TaskHistory::note(&mut h.hosts_contacted, &host));

        let started = Instant::now();
        let timeout = REQUEST_TIMEOUT.min(self.remaining());
        let result = perform(
            &url,
            &origin,
            addr,
            &method,
            req,
            bearer_value.as_deref().map(String::as_str),
            timeout,
            self.hostcall_limit,
        )
        .await;
        let mut r = self.audit.record(Event::Egress);
        r.capability = Some("http".into());
        r.action = Some(e.method.clone());
        r.resource = Some(e.resource.clone());
        r.address = Some(addr.to_string());
        r.bytes_out = Some(body_len as u64);
        r.duration_us = Some(started.elapsed().as_micros().try_into().unwrap_or(u64::MAX));
        match &result {
            Ok(resp) => {
                r.status = Some(resp.status);
                r.bytes_in = Some(resp.body.len() as u64);
                r.outcome = Some("ok".into());
            }
            Err(err) => {
                r.outcome = Some("error".into());
                r.message = Some(err.message.clone());
            }
        }
        self.write_audit(&r)?;
        Ok(result)
    }
}

#[allow(clippy::too_many_arguments)]
async fn perform(
    url: &url::Url,
    origin: &Origin,
    addr: SocketAddr,
    method: &str,
    req: Request,
    bearer: Option<&str>,
    timeout: Duration,
    limit: usize,
) -> Result<Response, wit::Error> {
    let conn = |e: reqwest::Error| {
        if e.is_timeout() {
            error(
                ErrorCode::Timeout,
                format!("no response within {}s", timeout.as_secs_f32()),
            )
        } else {
            error(
                ErrorCode::Connection,
                format!("request to {origin} failed: {e}"),
            )
        }
    };
    let mut builder = super::client_builder().timeout(timeout);
    if let UrlHost::Domain(d) = &origin.host {
        // Connect to the address that was checked, not a fresh lookup.
        builder = builder.resolve(d, addr);
    }
    let client = builder.build().map_err(conn)?;
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|_| error(ErrorCode::InvalidRequest, "invalid method"))?;
    let mut rb = client.request(method, url.clone());
    for (k, v) in req.headers {
        rb = rb.header(k, v);
    }
    if let Some(token) = bearer {
        rb = rb.bearer_auth(token);
    }
    if let Some(body) = req.body {
        rb = rb.body(body);
    }
    let mut resp = rb.send().await.map_err(conn)?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(conn)? {
        if body.len() + chunk.len() > limit {
            return Err(error(
                ErrorCode::TooLarge,
                format!("response body exceeds the host call limit of {limit} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}
