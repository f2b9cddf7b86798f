//! The one egress check, used by both HTTP paths (`warden:tool/http` and
//! standard `wasi:http`): one rule, one check, one message, whatever the
//! path. It is the built-in check the gate receives for an egress call.

use super::EgressRule;
use super::check::{self, METHODS, Origin};
use super::overrides;
use crate::caps::secrets::check::{self as secret_check, Held};
use crate::policy::Decision;
use crate::policy::cedar::Resource as Subject;
use crate::policy::gate::{Approval, Ask, AuditFailed, Gate, HostCall, Pass};
use crate::redact::Redactor;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use url::Url;

/// Request headers a tool may not set on `warden:tool/http`: the host
/// derives them (`wasi:http` derives and forbids them itself).
const HOST_HEADERS: [&str; 4] = ["host", "content-length", "transfer-encoding", "connection"];
/// The egress one invocation may use: its rules, and where each granted
/// secret may be sent. Cheap to clone (a `wasi:http` request takes one).
#[derive(Clone, Default)]
pub(crate) struct Egress {
    pub(crate) rules: Arc<[EgressRule]>,
    /// The `send-to` origins of each granted secret.
    pub(crate) send_to: Arc<[(String, Vec<String>)]>,
    /// The tool's `token-send-to`: where its identity tokens may be sent
    /// (`None`: each audience's to that audience's origin).
    pub(crate) tokens_to: Option<Vec<String>>,
}

/// Which interface a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    Tool,
    Wasi,
}

/// One request as the check sees it.
pub(crate) struct Request<'a> {
    pub(crate) via: Via,
    pub(crate) method: &'a str,
    pub(crate) url: &'a str,
    pub(crate) headers: Vec<(&'a str, &'a [u8])>,
    /// `None` when a `warden:tool/http` request has none (`wasi:http`
    /// bodies are read whole before the check).
    pub(crate) body: Option<&'a [u8]>,
    /// A secret attached by reference: its name and what the task holds
    /// of it.
    pub(crate) bearer: Option<(&'a str, Option<Held>)>,
    /// Most bytes of a request body.
    pub(crate) limit: usize,
}

/// Why a request was refused, for each path's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    InvalidRequest,
    Denied,
    TooLarge,
    Expired,
    /// The destination resolves only to addresses the rule does not list.
    Address,
}

/// A request that passed the check.
pub(crate) struct Checked {
    pub(crate) method: String,
    pub(crate) url: Url,
    pub(crate) origin: Origin,
    pub(crate) rule: EgressRule,
    /// The address to connect to (and only it).
    pub(crate) address: SocketAddr,
    /// The allowing decision.
    pub(crate) allow: Decision,
    /// Other methods the request asks its server for, by a method-override
    /// header or a `_method` parameter ([`overrides`]), each allowed by the
    /// grant too, with the labels of the rule that allows it.
    overrides: Vec<(String, Vec<String>)>,
    /// Each method asked for on each path a path-override header asks for
    /// ([`overrides::paths`]): the method, the redacted URL and the labels
    /// of the rule that allows it.
    routed: Vec<(String, String, Vec<String>)>,
    /// Whether a person approves it: its rule requires it for its method,
    /// or the rule of a method it asks for by override does.
    needs_approval: bool,
    host: String,
    origin_text: String,
    /// The redacted URL as runtime policy reads it ([`check::policy_form`]).
    policy_url: String,
}

/// What the audit shows of a request: its method and redacted URL.
pub(crate) struct Shown {
    pub(crate) method: String,
    pub(crate) resource: String,
}

impl Egress {
    /// Method, URL, headers, body size, allowlist, the attached secret's
    /// grant and `send-to`, revealed secret values carried in the URL,
    /// headers or body (`send-to` again), and the address — in that order.
    /// Returns what the audit shows either way.
    pub(crate) async fn check(
        &self,
        req: &Request<'_>,
        redactor: &Redactor,
    ) -> (Shown, Result<Checked, (Decision, Refused)>) {
        let method = req.method.to_ascii_uppercase();
        let mut shown = Shown {
            // A method the tool made up is never shown as the action (it
            // could carry a secret or a terminal control): the reason
            // names it, redacted and cut.
            method: if METHODS.contains(&method.as_str()) {
                method.clone()
            } else {
                "INVALID".to_owned()
            },
            resource: redactor.redact(req.url).into_owned(),
        };
        let result = self.decide(req, redactor, &method, &mut shown).await;
        (shown, result)
    }

    async fn decide(
        &self,
        req: &Request<'_>,
        redactor: &Redactor,
        method: &str,
        shown: &mut Shown,
    ) -> Result<Checked, (Decision, Refused)> {
        let refuse = |rule, reason: String, why| Err((Decision::deny(rule, reason), why));
        // Before any check whose refusal quotes the tool's text redacted
        // (its method, a path it asks for by override): a marker there would
        // confirm a guess at a value the tool cannot have read.
        if let Some(d) = self.guessed(req, redactor) {
            return Err((d, Refused::Denied));
        }
        if !METHODS.contains(&method) {
            // Redacted before it is cut, so no part of a secret is left.
            let reason = format!(
                "unknown method '{}' (expected one of {})",
                crate::policy::gate::cut(&redactor.redact(req.method), 64),
                METHODS.join(", ")
            );
            return refuse("http.request", reason, Refused::InvalidRequest);
        }
        let (url, origin) = match check::parse_url(req.url) {
            Ok(v) => v,
            // NUL and userinfo are bypass attempts; anything else is a bad URL.
            Err(reason) if reason.contains("NUL") || reason.contains("userinfo") => {
                return refuse("http.url", reason, Refused::Denied);
            }
            Err(reason) => return refuse("http.url", reason, Refused::InvalidRequest),
        };
        // And as parsed: the parser drops tabs and line breaks (`/48<TAB>21`
        // is `/4821`), and the URL read is quoted from here on, redacted.
        if let Some(name) = redactor.guessed(url.as_str().as_bytes()) {
            return Err((guess(&name), Refused::Denied));
        }
        shown.resource = redactor.redact(url.as_str()).into_owned();
        if let Some(reason) = check::encoded_dot_segment(url.path()) {
            return refuse("http.url", reason, Refused::Denied);
        }
        if req.via == Via::Tool {
            for (name, value) in &req.headers {
                // Named only when the name is a token: an invalid one is
                // not echoed (it might hide a value from the redactor).
                let reason = if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    Some(
                        "a header name is not valid HTTP (expected a token: letters, \
                          digits and !#$%&'*+-.^_`|~)"
                            .to_owned(),
                    )
                } else if http::HeaderValue::from_bytes(value).is_err() {
                    Some(format!(
                        "the value of header '{name}' is not valid HTTP (expected no \
                         control characters such as CR, LF or NUL)"
                    ))
                } else {
                    None
                };
                if let Some(reason) = reason {
                    return refuse("http.request", reason, Refused::InvalidRequest);
                }
                let lower = name.to_ascii_lowercase();
                if HOST_HEADERS.contains(&lower.as_str())
                    || (req.bearer.is_some() && lower == "authorization")
                {
                    let reason = format!("header '{name}' may not be set by a tool here");
                    return refuse("http.request", reason, Refused::InvalidRequest);
                }
            }
        }
        let body_len = req.body.map_or(0, <[u8]>::len);
        if body_len > req.limit {
            let reason = format!(
                "request body of {body_len} bytes exceeds the host call limit of {} bytes",
                req.limit
            );
            return refuse("http.size", reason, Refused::TooLarge);
        }
        let mut rule = match check::match_rule(&self.rules, method, &url, &origin) {
            Ok(r) => r,
            Err(reason) => return refuse("http.allowlist", reason, Refused::Denied),
        };
        // Where the server may act (a path or method it is told to take
        // instead), the addresses every rule that applies allows.
        let mut addresses = rule.addresses.clone();
        let mut needs_approval = rule.approval.applies(method);
        // A server that routes by a path override acts there: each path
        // asked for is checked as the request's own, by every method.
        let paths = match overrides::paths(&url, &req.headers) {
            Ok(paths) => paths,
            Err(reason) => return refuse("http.request", reason, Refused::InvalidRequest),
        };
        let mut routed = Vec::new();
        let mut path_checked = |asked: &str| {
            let route = overrides::Route {
                rules: &self.rules,
                origin: &origin,
                redactor,
            };
            route.check(asked, &paths, &mut routed, &mut addresses)
        };
        match path_checked(method) {
            Ok(approval) => needs_approval |= approval,
            Err(reason) => return refuse("http.allowlist", reason, Refused::Denied),
        }
        let mut overrides = Vec::new();
        let found = match overrides::find(method, &url, &req.headers, req.body) {
            Ok(found) => found,
            Err(reason) => return refuse("http.request", reason, Refused::InvalidRequest),
        };
        let mut asked_addresses = Vec::new();
        for o in found {
            let asked = String::from_utf8_lossy(&o.value)
                .trim()
                .to_ascii_uppercase();
            if !METHODS.contains(&asked.as_str()) {
                let reason = format!(
                    "{} names no method (expected one of {})",
                    o.by,
                    METHODS.join(", ")
                );
                return refuse("http.request", reason, Refused::InvalidRequest);
            }
            let labels = match check::match_rule(&self.rules, &asked, &url, &origin) {
                Ok(r) => {
                    needs_approval |= r.approval.applies(&asked);
                    asked_addresses.push(r.addresses);
                    r.labels
                }
                Err(reason) => {
                    let reason = format!("{} asks for {asked}: {reason}", o.by);
                    return refuse("http.allowlist", reason, Refused::Denied);
                }
            };
            match path_checked(&asked) {
                Ok(approval) => needs_approval |= approval,
                Err(reason) => {
                    let reason = format!("{} asks for {asked}, and {reason}", o.by);
                    return refuse("http.allowlist", reason, Refused::Denied);
                }
            }
            if asked != method && !overrides.iter().any(|(m, _)| *m == asked) {
                overrides.push((asked, labels));
            }
        }
        for allowed in asked_addresses {
            addresses.retain(|a| allowed.contains(a));
        }
        rule.addresses = addresses;
        if let Some((name, held)) = req.bearer {
            let d = secret_check::decide("attach", name, held);
            if !d.allow {
                let why = if d.rule == "secret.ttl" {
                    Refused::Expired
                } else {
                    Refused::Denied
                };
                return Err((d, why));
            }
            self.send_to(name, &origin)
                .map_err(|d| (d, Refused::Denied))?;
        }
        // Revealed secret values the tool put into the request itself.
        let mut carried = redactor.names_in(url.as_str().as_bytes());
        for (k, v) in &req.headers {
            carried.extend(redactor.names_in(k.as_bytes()));
            carried.extend(redactor.names_in(v));
        }
        if let Some(body) = req.body {
            carried.extend(redactor.names_in(body));
        }
        for name in carried {
            if redactor.is_hidden(&name) {
                return Err((guess(&name), Refused::Denied));
            }
            self.send_to(&name, &origin)
                .map_err(|d| (d, Refused::Denied))?;
        }
        let address = check::resolve(&origin, &rule)
            .await
            .map_err(|reason| (Decision::deny("http.address", reason), Refused::Address))?;
        let via = match req.via {
            Via::Tool => "",
            Via::Wasi => " (wasi:http)",
        };
        let mut reason = format!("{method} {origin}{} is granted{via}", url.path());
        if !overrides.is_empty() {
            let asked: Vec<&str> = overrides.iter().map(|(m, _)| m.as_str()).collect();
            reason.push_str(&format!(
                ", and so is {} asked for by override",
                asked.join(", ")
            ));
        }
        for (by, path) in &paths {
            let path = redactor.redact(path.path());
            reason.push_str(&format!(", as is {path} asked for by {by}"));
        }
        let allow = Decision::allow("http.allowlist", reason);
        Ok(Checked {
            method: method.to_owned(),
            host: origin.host.to_string(),
            origin_text: origin.to_string(),
            url,
            origin,
            rule,
            address,
            allow,
            overrides,
            routed,
            needs_approval,
            policy_url: check::policy_form(&shown.resource),
        })
    }

    /// The refusal of a request whose text as the tool wrote it (method,
    /// URL, header names and values, body) holds the value of a secret it
    /// holds only by reference.
    fn guessed(&self, req: &Request<'_>, redactor: &Redactor) -> Option<Decision> {
        let parts = [req.method.as_bytes(), req.url.as_bytes()].into_iter();
        let headers = req.headers.iter().flat_map(|(k, v)| [k.as_bytes(), *v]);
        let mut parts = parts.chain(headers).chain(req.body);
        parts.find_map(|p| Some(guess(&redactor.guessed(p)?)))
    }

    /// A secret may go only to its `send-to` origins, an identity token
    /// handed to the tool only to its `token-send-to`.
    fn send_to(&self, name: &str, origin: &Origin) -> Result<(), Decision> {
        if let Some(audience) = crate::redact::token_audience(name) {
            return self.token_to(audience, origin);
        }
        if crate::redact::is_deploy_token(name) {
            return Err(Decision::deny(
                "identity.send-to",
                format!(
                    "exfiltration attempt: a deploy webhook's identity token goes only with its deployment, not to {origin}"
                ),
            ));
        }
        let Some((_, to)) = self.send_to.iter().find(|(n, _)| n == name) else {
            return Ok(());
        };
        if check::send_to_allows(to, origin) {
            return Ok(());
        }
        let to = if to.is_empty() {
            "nowhere".to_owned()
        } else {
            to.join(", ")
        };
        Err(Decision::deny(
            "secret.send-to",
            format!("exfiltration attempt: secret '{name}' may be sent only to {to}, not {origin}"),
        ))
    }

    /// A token for `audience` may go only to the tool's `token-send-to`,
    /// or without one, to the audience's own origin (an audience that is
    /// no http or https URL: nowhere).
    fn token_to(&self, audience: &str, origin: &Origin) -> Result<(), Decision> {
        let deny = |to: String| {
            Decision::deny(
                "identity.send-to",
                format!(
                    "exfiltration attempt: this tool's identity tokens for audience '{}' may be \
                     sent {to}, not {origin}",
                    crate::redact::escape_control(audience)
                ),
            )
        };
        match &self.tokens_to {
            Some(to) if check::send_to_allows(to, origin) => Ok(()),
            Some(to) if to.is_empty() => Err(deny("nowhere (its token-send-to is empty)".into())),
            Some(to) => Err(deny(format!(
                "only to {} (its token-send-to)",
                to.join(", ")
            ))),
            None => match crate::net::parse_url(audience) {
                Ok((_, own)) if own == *origin => Ok(()),
                Ok((_, own)) => Err(deny(format!("only to {own} (its audience's origin)"))),
                Err(_) => Err(deny(
                    "nowhere (the audience is no http or https URL, and the tool has no \
                     token-send-to)"
                        .into(),
                )),
            },
        }
    }

    /// The gate's call for a checked request, the same for both paths:
    /// its allow decision and address, the runtime policy's question (when
    /// policies are loaded), and the approval its rule requires. `args` and
    /// `summary` are what an approval binds and shows
    /// ([`super::approve::Approvable`]).
    pub(crate) fn send_call<'a>(
        &self,
        c: &'a Checked,
        shown: &'a Shown,
        policy: bool,
        args: &'a str,
        summary: &'a (dyn Fn() -> String + Sync),
    ) -> HostCall<'a, ()> {
        HostCall {
            whole: None,
            capability: "http",
            action: &shown.method,
            resource: &shown.resource,
            check: c.allow.clone(),
            asks: if policy {
                let own = std::iter::once((&c.method, &c.rule.labels));
                let methods = own.chain(c.overrides.iter().map(|(m, l)| (m, l)));
                let asked = methods.map(|(m, labels)| (m, labels, &c.policy_url));
                let routed = (c.routed.iter()).map(|(m, url, labels)| (m, labels, url));
                (asked.chain(routed))
                    .map(|(m, labels, url)| self.ask(c, m, labels, url))
                    .collect()
            } else {
                Vec::new()
            },
            approval: Approval {
                required: c.needs_approval,
                action: "http.send",
                resource: &shown.resource,
                args,
                summary,
            },
            address: Some(c.address),
            sealed: (),
        }
    }

    /// The runtime policy's question about a checked request, as `method`
    /// (its own, or one it asks for by override). The resource names the
    /// granted secrets whose `send-to` this origin is, so a policy can see
    /// where revealed values may go.
    pub(crate) fn ask<'a>(
        &self,
        c: &'a Checked,
        method: &'a str,
        labels: &'a [String],
        resource: &'a str,
    ) -> Ask<'a> {
        let send_to_of = self
            .send_to
            .iter()
            .filter(|(_, to)| check::send_to_allows(to, &c.origin))
            .map(|(name, _)| name.clone())
            .collect();
        Ask {
            action: "http::send".into(),
            detail: method,
            resource: Subject::Host {
                host: &c.host,
                origin: &c.origin_text,
                url: resource,
                labels,
                send_to_of,
            },
        }
    }
}

/// The refusal of a request holding the value of secret `name`, which the
/// tool holds only by reference: it can only be a guess.
fn guess(name: &str) -> Decision {
    let reason = Redactor::guess_reason("the request", name);
    Decision::deny(
        "secret.guessed",
        format!("{reason}: refused to every host, its own send-to too"),
    )
}

/// What the egress outcome record says when a response carried granted
/// secret values back (a server echoing the request: debug endpoints,
/// error pages) and they were redacted before the tool saw it. Every
/// granted secret is redacted, by-reference ones above all: the tool must
/// not see what it was never given.
/// Why a response is withheld: it holds the value of a secret the tool
/// may use only by reference, which the request did not carry
/// (`attached`). The server is the tool's to choose (one serving a page of
/// candidates), and a marker where the value stood would say which is
/// right.
pub(crate) fn unasked(
    found: &BTreeSet<String>,
    attached: Option<&str>,
    redactor: &Redactor,
) -> Option<String> {
    let name = (found.iter()).find(|n| redactor.is_hidden(n) && Some(n.as_str()) != attached)?;
    let reason = Redactor::guess_reason("the response", name);
    Some(format!(
        "{reason}, and the request did not carry it: withheld"
    ))
}

pub(crate) fn reflected(found: &BTreeSet<String>) -> Option<String> {
    if found.is_empty() {
        return None;
    }
    let names: Vec<String> = found.iter().map(|n| format!("'{n}'")).collect();
    Some(format!(
        "secret {} reflected in the response; redacted before the tool saw it",
        names.join(", ")
    ))
}

impl Checked {
    /// The other methods it asks its server for by override.
    pub(crate) fn asked_for(&self) -> impl Iterator<Item = &str> {
        self.overrides.iter().map(|(m, _)| m.as_str())
    }

    /// Whether its rules require a person's approval.
    pub(crate) fn needs_approval(&self) -> bool {
        self.needs_approval
    }

    /// The request line's target and the `Host` header of the request as
    /// checked, on both paths: what is sent is what the allowlist, the
    /// secret scan, the record and the approver saw (a `wasi:http` URI as
    /// the tool wrote it may hold `..`, `%2e` or `\\` segments, which
    /// the check's parse removes).
    pub(crate) fn origin_form(&self) -> (String, String) {
        let url = &self.url;
        let target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let host = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        (target, host)
    }
}

impl Checked {
    /// Notes the request's host in the task's history before it is sent:
    /// one stopped part-way has reached it too. Without a policy there is
    /// no history, and nothing is formatted.
    pub(super) fn note_contacted(&self, gate: &Gate) {
        gate.note(|did| did.contacted(self.origin.host.to_string()));
    }

    /// Spends the request's pass on its `egress` record, on either path:
    /// the checked address, the time since `started`, and what `fill`
    /// adds (status or error, byte counts).
    pub(super) fn record(
        &self,
        gate: &Gate,
        pass: Pass<'_, ()>,
        started: std::time::Instant,
        fill: impl FnOnce(&mut crate::audit::Record),
    ) -> Result<(), AuditFailed> {
        gate.outcome(
            pass,
            crate::audit::Event::Egress,
            |_, _| {},
            |r| {
                r.address = Some(self.address.to_string());
                r.duration_us = Some(started.elapsed().as_micros().try_into().unwrap_or(u64::MAX));
                fill(r);
            },
        )
    }
}

#[cfg(test)]
#[path = "egress_tests.rs"]
mod tests;
