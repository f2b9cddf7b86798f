use super::*;

fn dir_with_grants() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("t.toml"), "task = \"x\"\n").unwrap();
    std::fs::write(d.path().join("b.jwks"), r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"s1","use":"jwt-svid","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#).unwrap();
    d
}

fn parse(d: &tempfile::TempDir, text: &str) -> Result<AgentsFile, AgentsError> {
    AgentsFile::parse(&d.path().join("agents.toml"), text)
}

const ISSUER: &str = "[[issuer]]\nissuer = \"https://login.example\"\n";

#[test]
fn problems_name_their_line_column_and_the_form_expected() {
    let d = dir_with_grants();
    let text = format!(
        "{ISSUER}algorithms = [\"HS256\"]\n\n[[agent]]\nissuer = \"https://other.example\"\nsubject = \"a*b\"\ngrants = \"missing.toml\"\n"
    );
    let e = parse(&d, &text).unwrap_err();
    let shown: Vec<String> =
        e.0.iter()
            .map(|p| format!("{}:{} {}: {}", p.line, p.column, p.field, p.message))
            .collect();
    assert_eq!(e.0.len(), 4, "{shown:#?}");
    assert!(
        shown[0]
            .starts_with("3:14 issuer.algorithms: \"HS256\" is not an algorithm tokens may use"),
        "{shown:#?}"
    );
    assert!(shown[0].contains("never none or HMAC"));
    assert!(
        shown[1]
            .starts_with("6:10 agent.issuer: \"https://other.example\" is not a trusted issuer"),
        "{shown:#?}"
    );
    assert!(
        shown[2].starts_with("7:11 agent.subject: '*' only ends a pattern"),
        "{shown:#?}"
    );
    assert!(shown[3].starts_with("8:10 agent.grants: "), "{shown:#?}");
    assert!(
        e.to_string()
            .contains("agents.toml:3:14: issuer.algorithms"),
        "{e}"
    );
}

#[test]
fn issuers_must_be_https_or_loopback_and_unknown_fields_are_refused() {
    let d = dir_with_grants();
    for (text, want) in [
        (
            "[[issuer]]\nissuer = \"http://login.example\"\n",
            "is plain http to another host",
        ),
        (
            "[[issuer]]\nissuer = \"https://user:pw@login.example\"\n",
            "holds credentials",
        ),
        (
            "[[issuer]]\nissuer = \"https://login.example\"\nalgorithms = [\"none\"]\n",
            "never none or HMAC",
        ),
        (
            "[[issuer]]\nissuer = \"https://login.example\"\nalgorithms = []\n",
            "empty (expected at least one algorithm)",
        ),
        (
            "[[issuer]]\nissuer = \"https://login.example\"\nkeys = \"x\"\n",
            "unknown field `keys`",
        ),
        (
            "[[spiffe]]\ntrust-domain = \"Example.ORG\"\nbundle = \"b.jwks\"\n",
            "is not a trust domain",
        ),
        (
            "[[spiffe]]\ntrust-domain = \"example.org\"\nbundle = \"t.toml\"\n",
            "not a JWK set",
        ),
        (
            "resource = \"ftp://x/mcp\"\n[[issuer]]\nissuer = \"https://a.example\"\n",
            "has another scheme",
        ),
        (
            "leeway = \"1h\"\n[[issuer]]\nissuer = \"https://a.example\"\n",
            "is longer than 5m",
        ),
        ("", "trusts no one"),
        (
            "[[issuer]]\nissuer = \"https://a.example\"\nrefresh = \"0s\"\n",
            "is shorter than 1s",
        ),
    ] {
        let e = parse(&d, text).unwrap_err().to_string();
        assert!(e.contains(want), "{text}: {e}");
    }
    assert!(parse(&d, "[[issuer]]\nissuer = \"http://127.0.0.1:9/\"\n").is_ok());
}

fn agent(kind: AgentKind, issuer: &str, subject: &str, groups: &[&str]) -> Agent {
    Agent {
        kind,
        issuer: issuer.into(),
        subject: subject.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        scopes: BTreeSet::new(),
    }
}

#[test]
fn the_most_specific_entry_wins_and_no_match_is_none() {
    let d = dir_with_grants();
    let text = format!(
        "{ISSUER}[[spiffe]]\ntrust-domain = \"example.org\"\nbundle = \"b.jwks\"\n\
         [[agent]]\nissuer = \"https://login.example\"\ngrants = \"t.toml\"\nlabels = [\"any\"]\n\
         [[agent]]\nissuer = \"https://login.example\"\nsubject = \"ci-*\"\ngrants = \"t.toml\"\nlabels = [\"ci\"]\n\
         [[agent]]\nissuer = \"https://login.example\"\nsubject = \"ci-release-*\"\ngrants = \"t.toml\"\nlabels = [\"release\"]\n\
         [[agent]]\nissuer = \"https://login.example\"\nsubject = \"ci-*\"\ngroups = [\"ops\"]\ngrants = \"t.toml\"\nlabels = [\"ops\"]\n\
         [[agent]]\nissuer = \"https://login.example\"\nsubject = \"ci-bot\"\ngrants = \"t.toml\"\nlabels = [\"exact\"]\n\
         [[agent]]\nspiffe-id = \"spiffe://example.org/ci/*\"\ngrants = \"t.toml\"\nlabels = [\"svid\"]\n"
    );
    let f = parse(&d, &text).unwrap();
    let label = |a: &Agent| f.find(a).map(|r| r.labels.iter().next().unwrap().clone());
    let oauth = |s: &str, g: &[&str]| agent(AgentKind::OAuth, "https://login.example", s, g);
    assert_eq!(label(&oauth("someone", &[])).as_deref(), Some("any"));
    assert_eq!(label(&oauth("ci-x", &[])).as_deref(), Some("ci"));
    assert_eq!(label(&oauth("ci-x", &["ops"])).as_deref(), Some("ops"));
    assert_eq!(
        label(&oauth("ci-release-1", &["ops"])).as_deref(),
        Some("release")
    );
    assert_eq!(label(&oauth("ci-bot", &["ops"])).as_deref(), Some("exact"));
    let svid = |s: &str| agent(AgentKind::Spiffe, "spiffe://example.org", s, &[]);
    assert_eq!(
        label(&svid("spiffe://example.org/ci/a")).as_deref(),
        Some("svid")
    );
    assert_eq!(label(&svid("spiffe://example.org/prod/a")), None);
    // Another issuer's agent matches nothing (no "any issuer" entry).
    assert_eq!(
        label(&agent(
            AgentKind::OAuth,
            "https://evil.example",
            "ci-bot",
            &[]
        )),
        None
    );
    // A static token is never matched by the agents file.
    assert_eq!(label(&Agent::static_token("ci-bot")), None);
}

#[test]
fn two_entries_for_the_same_agents_are_a_problem() {
    let d = dir_with_grants();
    let text = format!(
        "{ISSUER}[[agent]]\nissuer = \"https://login.example\"\nsubject = \"a\"\ngrants = \"t.toml\"\n\
         [[agent]]\nissuer = \"https://login.example\"\nsubject = \"a\"\ngrants = \"t.toml\"\n"
    );
    let e = parse(&d, &text).unwrap_err().to_string();
    assert!(
        e.contains("matches the same agents as the entry at line 3"),
        "{e}"
    );
}

/// What counts as this machine when a discovered `jwks_uri` is refused for
/// a remote issuer: every spelling that reaches it, not only `localhost`
/// and `127.0.0.1`. Plain http is allowed for fewer: not for names a
/// resolver may send to DNS.
#[test]
fn every_spelling_of_this_machine_is_loopback() {
    let strict = |u: &str| {
        let u = url::Url::parse(u).unwrap();
        super::parse::loopback(&u.host().unwrap())
    };
    for u in ["https://LOCALHOST./k", "https://keys.localhost/k"] {
        assert!(!strict(u), "{u} may go to DNS");
        assert!(super::parse::web_url(&u.replace("https", "http"), "a key URL").is_err());
    }
    assert!(strict("https://[::ffff:127.0.0.1]/k") && strict("https://localhost/k"));
    let local = |u: &str| {
        let u = url::Url::parse(u).unwrap();
        super::parse::this_machine(&u.host().unwrap())
    };
    for u in [
        "https://localhost/k",
        "https://LOCALHOST./k",
        "https://keys.localhost/k",
        "https://127.0.0.1/k",
        "https://127.1/k",
        "https://0.0.0.0:6443/k",
        "https://[::1]/k",
        "https://[::]/k",
        "https://[::ffff:127.0.0.1]/k",
        "https://[::ffff:0.0.0.0]/k",
    ] {
        assert!(local(u), "{u} is this machine");
    }
    for u in [
        "https://example.com/k",
        "https://localhost.example.com/k",
        "https://10.0.0.1/k",
        "https://[::ffff:10.0.0.1]/k",
    ] {
        assert!(!local(u), "{u} is not");
    }
}
