//! The pending approvals endpoint for the operator (`serve --approvals`):
//! its own listener and token, never the agent's.

use super::{Body, bearer, json, next_connection, plain, refused_token, unauthorized};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves the pending approvals of `queue` to the operator (never to the
/// agent: it has its own listener and token):
/// `GET /approvals` lists them; `POST /approvals/DIGEST` with
/// `{"approved": true|false, "by": "NAME"}` (the webhook approver's answer, the same fields) answers one.
pub async fn serve_approvals(
    listener: TcpListener,
    queue: Arc<dyn crate::approval::ApprovalQueue>,
    token: String,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let token = Arc::new(zeroize::Zeroizing::new(token));
    let guesses = Arc::new(Guesses::default());
    let admission = super::conns::Admission::new("approvals", MAX_CONNECTIONS);
    while let Some((stream, peer)) = next_connection(&listener, &shutdown, "approvals").await {
        let Some(place) = admission.admit(peer) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let queue = queue.clone();
        let token = token.clone();
        let guesses = guesses.clone();
        let handler = hyper::service::service_fn(move |req: Request<Incoming>| {
            let queue = queue.clone();
            let token = token.clone();
            let guesses = guesses.clone();
            async move { Ok::<_, Infallible>(approvals(req, &*queue, &token, &guesses).await) }
        });
        tokio::spawn(async move {
            let _ = super::conns::http1(READ_WITHIN)
                .serve_connection(super::conns::io(stream, READ_WITHIN), handler)
                .await;
            drop(place);
        });
    }
    Ok(())
}

/// The longest name an answer may give for who answered.
const MAX_BY: usize = 128;
/// Connections open at once (an operator's tools); more are closed as
/// they come.
const MAX_CONNECTIONS: usize = 256;
/// How long a request's head, and its body, may take to arrive.
const READ_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// 503 for the operator: the approvals store cannot be read (why is
/// logged, not told).
fn unavailable(why: &str) -> Response<Body> {
    tracing::warn!("approvals: {why}");
    plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "the approvals store is unreachable; try again",
    )
}

/// `r`, closing its connection: a client without the token keeps no
/// place among the operator's tools' connections by asking again.
fn closing(mut r: Response<Body>) -> Response<Body> {
    (r.headers_mut()).insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    r
}

/// Wrong tokens checked in a second, all clients together; past them a
/// request is answered 429 unchecked (a guess past the budget learns
/// nothing; the budget is back a second after a flood stops), as the
/// console's sign-in is.
const WRONG_TOKENS_PER_SECOND: u32 = 5;
/// How long the answer to a wrong token waits.
const WRONG_TOKEN_DELAY: std::time::Duration = std::time::Duration::from_millis(500);

/// The wrong tokens of the current second: when it began, and how many.
#[derive(Default)]
struct Guesses(std::sync::Mutex<Option<(std::time::Instant, u32)>>);

impl Guesses {
    /// Why `headers` are refused (`refused_token`), checked only while the
    /// second's budget of wrong tokens lasts (`Err` past it), and a wrong
    /// one counted: all under the lock, so that requests at once cannot
    /// each pass a budget with one place left.
    fn check(&self, headers: &http::HeaderMap, token: &str) -> Result<Option<&'static str>, ()> {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        let (since, n) = g.get_or_insert((now, 0));
        if now.duration_since(*since) >= std::time::Duration::from_secs(1) {
            (*since, *n) = (now, 0);
        }
        if *n >= WRONG_TOKENS_PER_SECOND {
            return Err(());
        }
        let why = refused_token(headers, token);
        if why.is_some() && bearer(headers).is_some() {
            *n += 1;
        }
        Ok(why)
    }
}

async fn approvals(
    req: Request<Incoming>,
    queue: &dyn crate::approval::ApprovalQueue,
    token: &str,
    guesses: &Guesses,
) -> Response<Body> {
    let Ok(refused) = guesses.check(req.headers(), token) else {
        crate::mcp::http::conns::quiet_warn!(
            "approvals: wrong tokens over {WRONG_TOKENS_PER_SECOND} a second"
        );
        return closing(plain(
            StatusCode::TOO_MANY_REQUESTS,
            "too many wrong tokens; try again in a second",
        ));
    };
    if let Some(why) = refused {
        let presented = bearer(req.headers()).is_some();
        if presented {
            crate::mcp::http::conns::quiet_warn!("approvals: a request with a wrong token");
            tokio::time::sleep(WRONG_TOKEN_DELAY).await;
        }
        return closing(unauthorized(why, presented));
    }
    let path = req.uri().path().to_owned();
    match (req.method().clone(), path.strip_prefix("/approvals")) {
        (http::Method::GET, Some("" | "/")) => match queue.waiting().await {
            Ok(waiting) => json(
                StatusCode::OK,
                &serde_json::to_value(waiting).unwrap_or_default(),
            ),
            Err(why) => unavailable(&why),
        },
        (http::Method::POST, Some(rest)) if rest.len() > 1 => {
            let digest = rest.strip_prefix('/').unwrap_or(rest);
            let read = super::conns::read_body(req.into_body(), 64 << 10);
            let body = match tokio::time::timeout(READ_WITHIN, read).await {
                Ok(Ok(b)) => b,
                Err(_) => {
                    return plain(
                        StatusCode::REQUEST_TIMEOUT,
                        "the answer did not arrive within 10s",
                    );
                }
                Ok(Err(super::conns::BodyError::TooLarge)) => {
                    return plain(StatusCode::PAYLOAD_TOO_LARGE, "answer larger than 64 KiB");
                }
                Ok(Err(super::conns::BodyError::Failed(_))) => {
                    return plain(StatusCode::BAD_REQUEST, "cannot read the answer");
                }
            };
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Answer {
                approved: bool,
                by: String,
            }
            let a: Answer = match serde_json::from_slice(&body) {
                Ok(a) => a,
                Err(e) => {
                    return plain(
                        StatusCode::BAD_REQUEST,
                        &format!(
                            "bad answer: {} (expected {{\"approved\": true|false, \"by\": \"NAME\"}})",
                            crate::mcp::echoed(&e.to_string(), 256)
                        ),
                    );
                }
            };
            // Who answered goes into the trail and before every viewer of
            // it as written: printable characters only, as a task id.
            if a.by.chars().count() > MAX_BY
                || a.by.trim().is_empty()
                || a.by.chars().any(crate::redact::hidden)
            {
                return plain(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "bad answer: \"by\" must name who answers, in 1 to {MAX_BY} printable characters"
                    ),
                );
            }
            let by = format!("{} (approvals endpoint)", a.by);
            match queue.answer_waiting(digest, a.approved, &by).await {
                Ok(true) => json(
                    StatusCode::OK,
                    &serde_json::json!({"answered": digest, "approved": a.approved}),
                ),
                Ok(false) => plain(
                    StatusCode::NOT_FOUND,
                    "no request with this digest is waiting (answered, expired or never asked)",
                ),
                Err(why) => unavailable(&why),
            }
        }
        _ => plain(
            StatusCode::NOT_FOUND,
            "not found (GET /approvals, POST /approvals/DIGEST)",
        ),
    }
}
