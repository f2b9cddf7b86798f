//! The HTTP side of a pull, and the oci-client client a push uses.
//!
//! The two GETs of a pull (manifest, then blob) go through a client built
//! here, so that their redirects, sizes and timeouts are Warden's: plain
//! HTTP only to loopback and only from a loopback registry, at most 5
//! redirects, bodies read up to a bound.
//! A token service, when the registry names one, is checked the same way
//! and asked through the same client.

use super::reference::{Host, OciRef, shown};
use super::{CONNECT_TIMEOUT, Credentials, OciError, READ_TIMEOUT, REQUEST_TIMEOUT, shown_error};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};

/// GETs against one repository, authenticating once when asked to.
pub(super) struct Session<'a> {
    reference: &'a OciRef,
    credentials: Option<&'a Credentials>,
    http: reqwest::Client,
    authorization: Option<HeaderValue>,
    asked: bool,
}

/// Whether plain HTTP may be used to reach `url`'s host.
fn loopback_url(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => Host::Name(d.to_owned()).is_loopback(),
        Some(url::Host::Ipv4(a)) => Host::V4(a).is_loopback(),
        Some(url::Host::Ipv6(a)) => Host::V6(a).is_loopback(),
        None => false,
    }
}

/// `scheme://host[:port]` of a URL: what a message may show of it (no
/// path, no query where a storage service puts its signature).
fn origin(url: &url::Url) -> String {
    shown(&url.origin().ascii_serialization())
}

/// Refuses plain HTTP to anything but loopback, and to anything at all
/// when the registry itself is not on loopback (`registry_loopback`): a
/// remote registry, reached over TLS, may not send the client to a plain
/// HTTP service on this machine (another user's listener, or a port that
/// something local forwards elsewhere).
fn check_scheme(url: &url::Url, what: &str, registry_loopback: bool) -> Result<(), String> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback_url(url) && registry_loopback => Ok(()),
        "http" if loopback_url(url) => Err(format!(
            "refused {what} to plain HTTP on {} (the registry is not on loopback, so what it names must use https)",
            origin(url)
        )),
        "http" => Err(format!(
            "refused {what} to plain HTTP on {} (a host that is not loopback must use https)",
            origin(url)
        )),
        other => Err(format!(
            "refused {what} with scheme '{}' (expected https)",
            shown(other)
        )),
    }
}

impl<'a> Session<'a> {
    pub(super) fn new(
        reference: &'a OciRef,
        credentials: Option<&'a Credentials>,
    ) -> Result<Self, OciError> {
        let registry_loopback = reference.host.is_loopback();
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 5 {
                return attempt.error("more than 5 redirects");
            }
            match check_scheme(attempt.url(), "a redirect", registry_loopback) {
                Ok(()) => attempt.follow(),
                Err(e) => attempt.error(e),
            }
        });
        let http = reqwest::Client::builder()
            .redirect(policy)
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("warden/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OciError::Registry {
                reference: reference.to_string(),
                reason: format!("cannot make an HTTP client: {}", shown_error(&e)),
            })?;
        Ok(Session {
            reference,
            credentials: Credentials::for_ref(credentials, reference),
            http,
            authorization: None,
            asked: false,
        })
    }

    fn failed(&self, reason: String) -> OciError {
        OciError::Registry {
            reference: self.reference.to_string(),
            reason,
        }
    }

    /// `GET /v2/REPO/PATH`, its body read up to `max` bytes.
    pub(super) async fn get(
        &mut self,
        path: &str,
        accept: Option<&str>,
        max: u64,
        what: &str,
    ) -> Result<(reqwest::header::HeaderMap, Vec<u8>), OciError> {
        match self.request(path, accept, max, what, false).await? {
            Some(answer) => Ok(answer),
            None => Err(self.failed(format!("the registry has no {what}"))),
        }
    }

    /// `GET /v2/REPO/manifests/VERSION`: an OCI image manifest, read up to
    /// [`MAX_MANIFEST`](super::MAX_MANIFEST).
    pub(super) async fn manifest(
        &mut self,
        version: &str,
    ) -> Result<(reqwest::header::HeaderMap, Vec<u8>), OciError> {
        let path = format!("manifests/{version}");
        self.get(
            &path,
            Some(super::MANIFEST_MEDIA_TYPE),
            super::MAX_MANIFEST,
            "the manifest",
        )
        .await
    }

    /// As [`Session::get`], but a 404 is `None`.
    pub(super) async fn get_if_present(
        &mut self,
        path: &str,
        accept: Option<&str>,
        max: u64,
        what: &str,
    ) -> Result<Option<(reqwest::header::HeaderMap, Vec<u8>)>, OciError> {
        self.request(path, accept, max, what, true).await
    }

    async fn request(
        &mut self,
        path: &str,
        accept: Option<&str>,
        max: u64,
        what: &str,
        missing_ok: bool,
    ) -> Result<Option<(reqwest::header::HeaderMap, Vec<u8>)>, OciError> {
        let r = self.reference;
        let url = format!(
            "{}://{}/v2/{}/{path}",
            r.scheme(),
            r.registry(),
            r.repository
        );
        loop {
            let mut req = self.http.get(&url);
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            if let Some(auth) = &self.authorization {
                req = req.header(AUTHORIZATION, auth.clone());
            }
            let mut resp = req
                .send()
                .await
                .map_err(|e| self.failed(format!("cannot get {what}: {}", shown_error(&e))))?;
            let status = resp.status();
            // Only the registry's own challenge is answered: a host a
            // redirect led to (a blob's storage) could otherwise name a
            // token service of its choosing and be sent the credentials.
            let from_registry =
                url::Url::parse(&url).is_ok_and(|asked| asked.origin() == resp.url().origin());
            if status == reqwest::StatusCode::UNAUTHORIZED && !self.asked && !from_registry {
                return Err(self.failed(format!(
                    "{} asked for credentials after a redirect; they go to the registry only",
                    origin(resp.url())
                )));
            }
            if status == reqwest::StatusCode::UNAUTHORIZED && !self.asked {
                self.asked = true;
                let challenge = resp
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                self.authenticate(&challenge).await?;
                continue;
            }
            if missing_ok && status == reqwest::StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if !status.is_success() {
                let hint = match status.as_u16() {
                    401 | 403 => {
                        " (set WARDEN_REGISTRY, WARDEN_REGISTRY_USERNAME and WARDEN_REGISTRY_PASSWORD if the registry needs credentials)"
                    }
                    404 => " (is it pushed? check the repository and tag)",
                    _ => "",
                };
                let body = read_bounded(&mut resp, 512).await.unwrap_or_default();
                let body = String::from_utf8_lossy(&body);
                let body = body.trim();
                let body = if body.is_empty() {
                    String::new()
                } else {
                    format!(": {}", shown(body))
                };
                return Err(self.failed(format!(
                    "the registry answered {status} for {what}{hint}{body}"
                )));
            }
            if let Some(len) = resp.content_length()
                && len > max
            {
                return Err(OciError::Invalid {
                    reference: r.to_string(),
                    reason: format!(
                        "{what} is {len} bytes, over the limit of {}",
                        crate::units::format_size(max)
                    ),
                });
            }
            let headers = resp.headers().clone();
            let body = read_bounded(&mut resp, max)
                .await
                .map_err(|e| self.failed(format!("cannot read {what}: {}", shown_error(&e))))?;
            if body.len() as u64 > max {
                return Err(OciError::Invalid {
                    reference: r.to_string(),
                    reason: format!(
                        "{what} is over the limit of {}",
                        crate::units::format_size(max)
                    ),
                });
            }
            return Ok(Some((headers, body)));
        }
    }

    /// Answers a 401: HTTP basic with the credentials, or a bearer token
    /// from the token service the challenge names,
    /// which must itself be https or loopback.
    async fn authenticate(&mut self, challenge: &str) -> Result<(), OciError> {
        let scheme = challenge.split_whitespace().next().unwrap_or("");
        if scheme.eq_ignore_ascii_case("basic") {
            let creds = self.credentials.ok_or_else(|| {
                self.failed("the registry asks for credentials (set WARDEN_REGISTRY to this registry, WARDEN_REGISTRY_USERNAME and WARDEN_REGISTRY_PASSWORD)".into())
            })?;
            self.authorization = Some(sensitive(creds.basic_header()));
            return Ok(());
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(self.failed(format!(
                "the registry answered 401 with a challenge Warden does not know ('{}'; expected Basic or Bearer)",
                shown(challenge)
            )));
        }
        let realm = param(challenge, "realm").unwrap_or_default();
        let url = url::Url::parse(&realm).map_err(|_| {
            self.failed(format!(
                "the registry's token service '{}' is not a URL",
                shown(&realm)
            ))
        })?;
        check_scheme(&url, "a token service", self.reference.host.is_loopback())
            .map_err(|e| self.failed(e))?;
        let token = self.token(url, challenge).await?;
        self.authorization = match (token, self.credentials) {
            (Some(t), _) => Some(sensitive(format!("Bearer {t}"))),
            (None, Some(c)) => Some(sensitive(c.basic_header())),
            (None, None) => None,
        };
        Ok(())
    }
}

impl Session<'_> {
    /// A bearer token from the token service at `realm` (the Docker token
    /// protocol), asked through this session's client: the realm was
    /// checked by the caller, and each redirect is checked like the
    /// registry's. The challenge that named it is the one answered; the
    /// registry is not asked for a second one. `None` when the service
    /// gives no token (basic credentials are then sent as they are).
    async fn token(
        &self,
        mut realm: url::Url,
        challenge: &str,
    ) -> Result<Option<String>, OciError> {
        {
            let mut q = realm.query_pairs_mut();
            if let Some(service) = param(challenge, "service") {
                q.append_pair("service", &service);
            }
            q.append_pair(
                "scope",
                &format!("repository:{}:pull", self.reference.repository),
            );
        }
        let mut req = self.http.get(realm);
        if let Some(c) = self.credentials {
            req = req.header(AUTHORIZATION, sensitive(c.basic_header()));
        }
        let refused =
            |reason: String| self.failed(format!("the registry's token service refused: {reason}"));
        let mut resp = req.send().await.map_err(|e| refused(shown_error(&e)))?;
        let status = resp.status();
        let body = read_bounded(&mut resp, MAX_TOKEN_ANSWER)
            .await
            .map_err(|e| refused(shown_error(&e)))?;
        if !status.is_success() {
            return Err(refused(format!("it answered {status}")));
        }
        if body.len() as u64 > MAX_TOKEN_ANSWER {
            return Err(refused(format!(
                "its answer is over {}",
                crate::units::format_size(MAX_TOKEN_ANSWER)
            )));
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            token: Option<String>,
            access_token: Option<String>,
        }
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|_| refused("its answer is not the JSON a token service sends".into()))?;
        Ok(answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty()))
    }
}

/// The largest token service answer read.
const MAX_TOKEN_ANSWER: u64 = 64 << 10;

fn sensitive(value: String) -> HeaderValue {
    let mut v = HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""));
    v.set_sensitive(true);
    v
}

/// `name="value"` from a `WWW-Authenticate` challenge.
fn param(challenge: &str, name: &str) -> Option<String> {
    let at = challenge.find(&format!("{name}=\""))? + name.len() + 2;
    let rest = &challenge[at..];
    Some(rest[..rest.find('"')?].to_owned())
}

/// An oci-client client for `reference`'s registry: plain HTTP only for
/// loopback, timeouts set.
pub(super) fn client(reference: &OciRef) -> Result<oci_client::Client, String> {
    use oci_client::client::{ClientConfig, ClientProtocol};
    let config = ClientConfig {
        protocol: if reference.host.is_loopback() {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        connect_timeout: Some(CONNECT_TIMEOUT),
        read_timeout: Some(READ_TIMEOUT),
        platform_resolver: None,
        user_agent: concat!("warden/", env!("CARGO_PKG_VERSION")),
        ..Default::default()
    };
    oci_client::Client::try_from(config)
        .map_err(|e| format!("cannot make a registry client: {}", shown_error(&e)))
}

/// A response body, read until it passes `max` bytes.
async fn read_bounded(resp: &mut reqwest::Response, max: u64) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        body.extend_from_slice(&chunk);
        if body.len() as u64 > max {
            break;
        }
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_for_loopback_only() {
        for ok in [
            "https://registry.example/x",
            "http://127.0.0.1:5000/x",
            "http://localhost/x",
            "http://[::1]:80/x",
        ] {
            assert!(
                check_scheme(&url::Url::parse(ok).unwrap(), "a redirect", true).is_ok(),
                "{ok}"
            );
        }
        // A remote registry: https only, loopback included.
        assert!(
            check_scheme(
                &url::Url::parse("https://127.0.0.1:5000/x").unwrap(),
                "a redirect",
                false
            )
            .is_ok()
        );
        for local in [
            "http://127.0.0.1:5000/x?X-Amz-Signature=secret",
            "http://localhost/token",
            "http://[::1]:80/x",
        ] {
            for what in ["a redirect", "a token service"] {
                let e = check_scheme(&url::Url::parse(local).unwrap(), what, false).unwrap_err();
                let at = origin(&url::Url::parse(local).unwrap());
                assert_eq!(
                    e,
                    format!(
                        "refused {what} to plain HTTP on {at} (the registry is not on loopback, so what it names must use https)"
                    ),
                    "{local}"
                );
                assert!(!e.contains("secret"), "{e}");
            }
        }
        assert_eq!(
            check_scheme(
                &url::Url::parse("http://127.0.0.1:5000/x").unwrap(),
                "a redirect",
                false
            )
            .unwrap_err(),
            "refused a redirect to plain HTTP on http://127.0.0.1:5000 (the registry is not on loopback, so what it names must use https)"
        );
        for bad in [
            "http://127.0.0.1.evil.com/x",
            "http://localhost.evil/x",
            "http://10.0.0.1/x?X-Amz-Signature=secret",
            "ftp://127.0.0.1/x",
        ] {
            let e = check_scheme(&url::Url::parse(bad).unwrap(), "a redirect", true).unwrap_err();
            assert!(e.starts_with("refused a redirect"), "{bad}: {e}");
            assert!(!e.contains("secret"), "{e}");
        }
    }

    #[test]
    fn challenge_parameters() {
        let c =
            r#"Bearer realm="https://auth.example/token",service="reg",scope="repository:a:pull""#;
        assert_eq!(param(c, "realm").unwrap(), "https://auth.example/token");
        assert_eq!(param(c, "service").unwrap(), "reg");
        assert_eq!(param("Bearer", "realm"), None);
    }
}
