use super::Egress;
use crate::net::parse_origin;

/// Without `token-send-to`, each audience's tokens go to its own
/// origin only (not to another audience's: a token for one replayed
/// by the other); listed, to those origins; an audience that is no URL
/// sends them nowhere.
#[test]
fn a_tokens_destination_is_its_audiences_origin_or_the_listed_ones() {
    let own = Egress::default();
    let to = |e: &Egress, audience: &str, origin: &str| {
        e.token_to(audience, &parse_origin(origin).unwrap())
            .map_err(|d| (d.rule, d.reason))
    };
    assert!(
        to(
            &own,
            "https://API.a.example/v1",
            "https://api.a.example:443"
        )
        .is_ok()
    );
    assert_eq!(
        to(&own, "https://a.example", "https://partner.example"),
        Err((
            "identity.send-to",
            "exfiltration attempt: this tool's identity tokens for audience \
             'https://a.example' may be sent only to https://a.example:443 (its audience's \
             origin), not https://partner.example:443"
                .into()
        ))
    );
    assert_eq!(
        to(&own, "sts.amazonaws.com", "https://sts.amazonaws.com")
            .unwrap_err()
            .1,
        "exfiltration attempt: this tool's identity tokens for audience 'sts.amazonaws.com' \
         may be sent nowhere (the audience is no http or https URL, and the tool has no \
         token-send-to), not https://sts.amazonaws.com:443"
    );
    let listed = Egress {
        tokens_to: Some(vec!["https://sts.amazonaws.com:443".into()]),
        ..Egress::default()
    };
    assert!(to(&listed, "sts.amazonaws.com", "https://sts.amazonaws.com").is_ok());
    assert_eq!(
        to(&listed, "sts.amazonaws.com", "http://127.0.0.1:9")
            .unwrap_err()
            .1,
        "exfiltration attempt: this tool's identity tokens for audience 'sts.amazonaws.com' \
         may be sent only to https://sts.amazonaws.com:443 (its token-send-to), not \
         http://127.0.0.1:9"
    );
    let shut = Egress {
        tokens_to: Some(Vec::new()),
        ..Egress::default()
    };
    assert!(to(&shut, "https://a.example", "https://a.example").is_err());
    // An audience is echoed escaped.
    let d = to(&own, "x\u{1b}[2J", "https://a.example").unwrap_err().1;
    assert!(d.contains("'x\\u{1b}[2J'"), "{d}");
    // A deploy webhook's token goes nowhere a tool sends, its own
    // webhook included.
    let hook = crate::redact::deploy_token_name("https://deploy.example");
    let d = own.send_to(&hook, &parse_origin("https://deploy.example").unwrap());
    assert_eq!(d.unwrap_err().rule, "identity.send-to");
}
