//! Unit tests of `call`.
use super::*;

#[test]
fn approvals_are_round_trips_on_the_current_protocol_and_requests_before() {
    let elicits = ClientCapabilities::builder().enable_elicitation().build();
    let plain = ClientCapabilities::default();
    let (now, before) = (ProtocolVersion::V_2026_07_28, ProtocolVersion::V_2025_06_18);
    assert_eq!(mode(Some(&elicits), Some(&now)), Some(Mode::RoundTrip));
    assert_eq!(mode(Some(&elicits), Some(&before)), Some(Mode::Request));
    assert_eq!(mode(Some(&elicits), None), Some(Mode::Request));
    assert_eq!(mode(Some(&plain), Some(&now)), None);
    assert_eq!(mode(None, Some(&now)), None);
    assert!(current(Some(&now)));
    assert!(!current(Some(&before)));
    assert!(!current(None));
}

#[test]
fn a_link_that_cannot_send_requests_has_no_caller_for_a_client_asked_by_request() {
    let elicits = ClientCapabilities::builder().enable_elicitation().build();
    let caller = |version: ProtocolVersion| {
        let client = Client {
            version: Some(&version),
            capabilities: Some(&elicits),
            info: None,
        };
        let link = Link::Stdio(stdio::Out::new(tokio::io::sink(), CancellationToken::new()).0);
        Caller::new(Arc::default(), client, None, link, CancellationToken::new())
    };
    assert!(caller(ProtocolVersion::V_2025_06_18).is_none());
    let current = caller(ProtocolVersion::V_2026_07_28).expect("a caller");
    assert!(matches!(current.elicitation, Some(Elicitation::RoundTrip)));
    assert_eq!(current.client, "unnamed");
    assert!(current.progress.is_none());
}
