//! Unit tests of `identity`: minting, handing out and marking active.
use super::*;
use crate::keys::Verifier;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

/// A minter of invocation `invocation` for `audiences`, its deadline
/// at `deadline` (Unix seconds), marking it in `active`.
fn test_minter(
    invocation: &str,
    deadline: u64,
    audiences: Vec<String>,
    active: ActiveInvocations,
) -> Minter {
    Minter {
        issuer: Arc::new(Issuer::from_seed(&[7; 32])),
        tool: "t".into(),
        identity: "sha256:00".into(),
        task: "task".into(),
        invocation: invocation.into(),
        scope: Vec::new(),
        deadline,
        audiences,
        webhooks: Vec::new(),
        active,
        mark: Default::default(),
        minted: Default::default(),
    }
}

#[test]
fn an_invocation_is_active_from_its_first_token_until_it_ends() {
    let active = ActiveInvocations::default();
    let minter = test_minter("inv-1", now_secs() + 60, vec!["api".into()], active.clone());
    assert!(!active.is_active("inv-1"), "no token yet");
    minter.mint("api");
    minter.mint("api");
    assert!(active.is_active("inv-1"));
    minter.ended();
    assert!(!active.is_active("inv-1"));
    // A token minted after the end (a task the invocation left
    // behind) never makes it active again.
    minter.mint("api");
    assert!(!active.is_active("inv-1"));
    // A minter ended before its first token (`describe`'s, whose
    // invocation id is empty) never marks anything active.
    let describing = Minter {
        invocation: "".into(),
        mark: Default::default(),
        ..minter
    };
    describing.ended();
    describing.mint("api");
    assert!(!active.is_active(""));
}

/// A tool is handed the token signed before it ran (redaction knows
/// it), for a listed audience, only while its invocation runs; signing
/// them marks nothing active.
#[test]
fn a_tool_is_handed_its_preminted_token_only_while_it_runs() {
    let active = ActiveInvocations::default();
    let minter = test_minter(
        "inv-2",
        now_secs() + 60,
        vec!["api".into(), "other".into()],
        active.clone(),
    );
    assert_eq!(minter.hand_out("api"), None, "nothing signed yet");
    let signed: Vec<String> = minter.premint().map(|(_, t)| t.to_owned()).collect();
    assert_eq!(signed.len(), 2);
    assert!(!active.is_active("inv-2"), "signing marks nothing active");
    assert_eq!(minter.hand_out("api").as_ref(), Some(&signed[0]));
    assert_eq!(minter.hand_out("nope"), None);
    assert!(active.is_active("inv-2"));
    let verifier = Verifier::from_jwks(&minter.issuer.jwks()).unwrap();
    assert_eq!(verifier.verify(&signed[1], "other").unwrap().jti, "inv-2");
    minter.ended();
    assert_eq!(minter.hand_out("api"), None, "not after its end");
    // `describe`'s minter: ended before anything, and signs nothing.
    let describing = Minter {
        invocation: "".into(),
        mark: Default::default(),
        minted: Default::default(),
        ..minter
    };
    describing.ended();
    let _ = describing.premint().count();
    assert_eq!(describing.hand_out("api"), None);
    assert!(!active.is_active(""));
}

/// A tool that may run an hour is handed a token that has not expired
/// however late it asks: tokens of five-minute windows, each valid a
/// minute before the last expires, up to the deadline; none longer.
#[test]
fn a_long_invocation_has_a_token_for_every_window_up_to_its_deadline() {
    let now = now_secs();
    let minter = test_minter(
        "inv-3",
        now + 3600,
        vec!["api".into()],
        ActiveInvocations::default(),
    );
    let verifier = Verifier::from_jwks(&minter.issuer.jwks()).unwrap();
    let windows: Vec<Claims> = minter
        .premint()
        .map(|(_, t)| {
            let claims = t.split('.').nth(1).unwrap();
            serde_json::from_slice(&B64.decode(claims).unwrap()).unwrap()
        })
        .collect();
    assert_eq!(windows.len(), 15);
    assert_eq!(windows[0].nbf, windows[0].iat);
    for w in windows.windows(2) {
        assert!(w[1].nbf + 60 <= w[0].exp, "{w:?}");
        assert!(w[0].exp - w[0].nbf <= MAX_TOKEN_LIFETIME_SECS);
    }
    assert_eq!(windows.last().unwrap().exp, now + 3600);
    // Handed out now: the first window's, which verifies now.
    let token = minter.hand_out("api").unwrap();
    assert_eq!(verifier.verify(&token, "api").unwrap().nbf, windows[0].nbf);
}

fn claims(aud: &str, exp: u64) -> Claims {
    Claims {
        iss: Issuer::from_seed(&[7; 32]).iss(),
        sub: "sha256:00".into(),
        aud: aud.into(),
        task: "t".into(),
        jti: "inv".into(),
        tool: "tool".into(),
        scope: vec!["fs:workspace:read".into()],
        iat: now_secs(),
        nbf: now_secs(),
        exp,
    }
}

#[test]
fn tokens_verify_against_the_jwks_and_nothing_else() {
    let issuer = Issuer::from_seed(&[7; 32]);
    let verifier = Verifier::from_jwks(&issuer.jwks()).unwrap();
    let token = issuer.sign(&claims("https://api", now_secs() + 60));
    assert_eq!(verifier.verify(&token, "https://api").unwrap().task, "t");
    assert!(
        verifier
            .verify(&token, "https://other")
            .unwrap_err()
            .to_string()
            .contains("audience")
    );
    // Past its expiry by more than the leeway.
    let expired = issuer.sign(&claims("https://api", now_secs() - LEEWAY_SECS - 1));
    assert!(
        verifier
            .verify(&expired, "https://api")
            .unwrap_err()
            .to_string()
            .contains("expired")
    );
    // Tampered claims, and another issuer's key.
    let mut parts: Vec<_> = token.split('.').map(str::to_owned).collect();
    parts[1] = B64.encode(serde_json::to_vec(&claims("https://api", now_secs() + 9999)).unwrap());
    assert!(verifier.verify(&parts.join("."), "https://api").is_err());
    let other = Issuer::from_seed(&[8; 32]).sign(&claims("https://api", now_secs() + 60));
    assert!(verifier.verify(&other, "https://api").is_err());
}

#[test]
fn issuer_validity_window_and_algorithm_are_checked() {
    let issuer = Issuer::from_seed(&[7; 32]);
    let verifier = Verifier::from_jwks(&issuer.jwks()).unwrap();
    let err = |token: &str| {
        verifier
            .verify(token, "https://api")
            .unwrap_err()
            .to_string()
    };
    let now = now_secs();
    // Within the leeway: still valid.
    let late = issuer.sign(&claims("https://api", now - 2));
    assert!(verifier.verify(&late, "https://api").is_ok());
    // Not valid before a time to come.
    let mut early = claims("https://api", now + 600);
    early.nbf = now + 120;
    assert_eq!(
        err(&issuer.sign(&early)),
        "invalid token: not valid yet (nbf)"
    );
    // Our key, but another issuer's name.
    let mut forged = claims("https://api", now + 60);
    forged.iss = "https://accounts.example".into();
    assert_eq!(
        err(&issuer.sign(&forged)),
        format!("invalid token: issuer is not warden:{}", issuer.kid())
    );
    // alg none, and HS256 keyed with the public key (algorithm
    // confusion): refused before any key is tried.
    let body = B64.encode(serde_json::to_vec(&claims("https://api", now + 60)).unwrap());
    let none = format!(
        "{}.{body}.",
        B64.encode(format!(r#"{{"alg":"none","kid":"{}"}}"#, issuer.kid()))
    );
    assert!(
        err(&none).starts_with("invalid token: not a JWT"),
        "{}",
        err(&none)
    );
    let public = B64
        .decode(issuer.jwks()["keys"][0]["x"].as_str().unwrap())
        .unwrap();
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = Some(issuer.kid().to_owned());
    let confused = jsonwebtoken::encode(
        &h,
        &claims("https://api", now + 60),
        &jsonwebtoken::EncodingKey::from_secret(&public).unwrap(),
    )
    .unwrap();
    assert_eq!(err(&confused), "invalid token: alg is HS256, not EdDSA");
}

#[test]
fn the_key_is_created_once_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/identity.key");
    let a = Issuer::load_or_create(&path).unwrap();
    let b = Issuer::load_or_create(&path).unwrap();
    assert_eq!(a.jwks(), b.jwks());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}

/// A deploy webhook's tokens are signed before the tool runs, so that
/// redaction knows them, and never handed to the tool: the deployment
/// sends the one whose window is open, and marks the invocation active.
#[test]
fn a_webhooks_token_is_signed_before_the_tool_runs_and_never_handed_to_it() {
    let active = ActiveInvocations::default();
    let minter = Minter {
        webhooks: vec!["https://deploy.example".into()],
        ..test_minter("inv-9", now_secs() + 60, vec!["api".into()], active.clone())
    };
    let signed: Vec<(String, String)> = (minter.premint())
        .map(|(a, t)| (a.to_owned(), t.to_owned()))
        .collect();
    let audiences: Vec<&str> = signed.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(audiences, ["api", "https://deploy.example"]);
    assert_eq!(minter.hand_out("https://deploy.example"), None);
    assert!(!active.is_active("inv-9"));
    assert_eq!(minter.webhook_token("https://deploy.example"), signed[1].1);
    assert!(active.is_active("inv-9"));
    // An audience signed for nothing before: a fresh token.
    let fresh = minter.webhook_token("https://other.example");
    assert!(signed.iter().all(|(_, t)| *t != fresh));
}
