//! What a downstream service needs to trust a tool's identity token
//! (`warden:tool/identity`), next to the MCP endpoint:
//!
//! - `GET /.well-known/jwks.json`: the public keys that verify tokens, to
//!   anyone (they hold nothing secret). Replicas sharing one key Secret
//!   publish the same set.
//! - `POST /introspect` (RFC 7662): whether a token is active, for callers
//!   holding the introspection token (`serve --introspect-token-file`); off
//!   without one. With `--state`, a token another replica issued is active
//!   while its invocation runs there ([`crate::Runtime::introspect_shared`]).
//!
//! Hostile input here is the caller's form and the token in it: the form
//! is read within [`MAX_FORM`] bytes and [`FORM_WITHIN`], `token` must come
//! exactly once, and the token itself is only ever verified, never logged
//! or repeated. An inactive token's answer is `{"active": false}` alone
//! (RFC 7662, section 2.2): why is not told.

use super::{Body, bearer, json, plain, refused_token, unauthorized};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::time::Duration;

/// Where the token verification keys are served.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// Where token introspection is served.
pub const INTROSPECT_PATH: &str = "/introspect";
/// The largest introspection form read (a token is well under 2 KiB).
pub(crate) const MAX_FORM: usize = 16 << 10;
/// How long an introspection form may take to arrive.
pub(crate) const FORM_WITHIN: Duration = Duration::from_secs(10);

/// `GET /.well-known/jwks.json`.
pub(super) fn jwks(req: &Request<Incoming>, runtime: &crate::Runtime) -> Response<Body> {
    if req.method() != http::Method::GET {
        return not_allowed("the key set is read with GET", "GET");
    }
    let mut r = json(StatusCode::OK, &runtime.jwks());
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("public, max-age=60"),
    );
    r
}

fn not_allowed(why: &str, allow: &'static str) -> Response<Body> {
    let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, why);
    r.headers_mut()
        .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
    r
}

/// An OAuth error answer (RFC 6749, section 5.2), not stored by caches.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response<Body> {
    no_store(json(
        status,
        &serde_json::json!({"error": error, "error_description": description}),
    ))
}

fn no_store(mut r: Response<Body>) -> Response<Body> {
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}

/// `POST /introspect`, for the holder of `token` (`None`: introspection
/// is off).
pub(super) async fn introspect(
    req: Request<Incoming>,
    runtime: &crate::Runtime,
    token: Option<&str>,
    peer: SocketAddr,
) -> Response<Body> {
    let Some(token) = token else {
        return plain(
            StatusCode::NOT_FOUND,
            "token introspection is off (serve --introspect-token-file FILE turns it on)",
        );
    };
    if let Some(why) = refused_token(req.headers(), token) {
        tracing::info!("refused an introspection request from {peer}: {why}");
        return unauthorized(why, bearer(req.headers()).is_some());
    }
    if req.method() != http::Method::POST {
        return not_allowed("introspection is a POST (RFC 7662)", "POST");
    }
    let form = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form {
        return oauth_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request",
            "expected Content-Type: application/x-www-form-urlencoded with token=TOKEN",
        );
    }
    let read = super::conns::read_body(req.into_body(), MAX_FORM);
    let body = match tokio::time::timeout(FORM_WITHIN, read).await {
        Ok(Ok(b)) => b,
        Ok(Err(super::conns::BodyError::TooLarge)) => {
            return oauth_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                &format!("the form is larger than {MAX_FORM} bytes"),
            );
        }
        Ok(Err(_)) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "cannot read the form",
            );
        }
        Err(_) => {
            return oauth_error(
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request",
                &format!("the form did not arrive within {FORM_WITHIN:?}"),
            );
        }
    };
    let (token, resource) = match the_form(&body) {
        Ok(t) => t,
        Err(why) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", why),
    };
    match runtime.introspect_shared(&token).await {
        Ok(answer) => {
            let answer = for_resource(answer, resource.as_deref());
            tracing::info!(
                "introspection from {peer}: {} (invocation {})",
                if answer.active { "active" } else { "inactive" },
                answer.claims.as_ref().map_or("unknown", |c| c.jti.as_str())
            );
            no_store(json(StatusCode::OK, &response(&answer)))
        }
        Err(why) => {
            tracing::warn!("introspection: {why}");
            oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the state store cannot be read; whether the token is active is not known, try again",
            )
        }
    }
}

/// The form's one `token`, and the `resource` asking (RFC 8707), if it
/// says: given twice, two answers could be read as one.
fn the_form(body: &[u8]) -> Result<(zeroize::Zeroizing<String>, Option<String>), &'static str> {
    let (mut found, mut resource) = (None, None);
    for (k, v) in url::form_urlencoded::parse(body) {
        if k == "token" {
            if found.is_some() {
                return Err("token is given more than once");
            }
            found = Some(zeroize::Zeroizing::new(v.into_owned()));
        } else if k == "resource" {
            if resource.is_some() {
                return Err("resource is given more than once");
            }
            resource = Some(v.into_owned());
        }
    }
    match found {
        Some(t) if !t.is_empty() => Ok((t, resource)),
        _ => Err("the form has no token (expected token=TOKEN)"),
    }
}

/// A service that names itself (`resource=`) is told a token minted for
/// another audience is not active for it (RFC 7662 §4: a token for one
/// service copied to another must not pass there).
fn for_resource(answer: crate::Introspection, resource: Option<&str>) -> crate::Introspection {
    match (resource, &answer.claims) {
        (Some(r), Some(c)) if answer.active && c.aud != r => crate::Introspection {
            active: false,
            reason: Some("minted for another audience".into()),
            ..answer
        },
        _ => answer,
    }
}

/// The answer as RFC 7662 gives it: `scope` space-separated, the rest of
/// the claims as they are; an inactive token's answer says nothing else.
fn response(answer: &crate::Introspection) -> serde_json::Value {
    match (&answer.claims, answer.active) {
        (Some(c), true) => serde_json::json!({
            "active": true,
            "token_type": "Bearer",
            "scope": c.scope.join(" "),
            "iss": c.iss,
            "sub": c.sub,
            "aud": c.aud,
            "jti": c.jti,
            "iat": c.iat,
            "nbf": c.nbf,
            "exp": c.exp,
            "task": c.task,
            "tool": c.tool,
        }),
        _ => serde_json::json!({"active": false}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_needs_one_token() {
        let the_token = |b: &[u8]| the_form(b).map(|(t, _)| t);
        assert_eq!(
            &*the_token(b"token=a.b.c&token_type_hint=x").unwrap(),
            "a.b.c"
        );
        assert_eq!(&*the_token(b"token=a%2Eb").unwrap(), "a.b");
        assert_eq!(
            the_token(b"token=a&token=b").unwrap_err(),
            "token is given more than once"
        );
        for empty in [&b""[..], b"token=", b"tok=a"] {
            assert_eq!(
                the_token(empty).unwrap_err(),
                "the form has no token (expected token=TOKEN)"
            );
        }
        assert_eq!(
            the_form(b"token=a&resource=https%3A%2F%2Fapi")
                .unwrap()
                .1
                .as_deref(),
            Some("https://api")
        );
        assert_eq!(
            the_form(b"token=a&resource=x&resource=y").unwrap_err(),
            "resource is given more than once"
        );
    }

    /// A live token for `https://api`, asked about by another service: not
    /// active for it; by its own, or by one that does not say: active.
    #[test]
    fn a_token_is_active_only_for_its_own_audience_when_asked_for_one() {
        let active = crate::Introspection {
            active: true,
            claims: Some(crate::Claims {
                iss: "warden:k".into(),
                sub: "sha256:x".into(),
                aud: "https://api".into(),
                task: "t".into(),
                jti: "i".into(),
                tool: "tool".into(),
                scope: Vec::new(),
                iat: 1,
                nbf: 1,
                exp: 2,
            }),
            reason: None,
        };
        let other = for_resource(active.clone(), Some("https://payments"));
        assert!(!other.active);
        assert_eq!(response(&other), serde_json::json!({"active": false}));
        assert!(for_resource(active.clone(), Some("https://api")).active);
        assert!(for_resource(active, None).active);
    }

    #[test]
    fn an_inactive_answer_says_nothing_else() {
        let claims = crate::Claims {
            iss: "warden:k".into(),
            sub: "sha256:x".into(),
            aud: "https://api".into(),
            task: "t".into(),
            jti: "i".into(),
            tool: "tool".into(),
            scope: vec!["fs:w:read".into(), "secret:api".into()],
            iat: 1,
            nbf: 1,
            exp: 2,
        };
        let inactive = crate::Introspection {
            active: false,
            claims: Some(claims.clone()),
            reason: Some("its invocation has ended".into()),
        };
        assert_eq!(response(&inactive), serde_json::json!({"active": false}));
        let active = crate::Introspection {
            active: true,
            claims: Some(claims),
            reason: None,
        };
        let r = response(&active);
        assert_eq!(r["scope"], "fs:w:read secret:api");
        assert_eq!(
            (r["jti"].as_str(), r["task"].as_str()),
            (Some("i"), Some("t"))
        );
    }
}
