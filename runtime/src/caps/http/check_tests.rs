use super::*;

/// A resolver that stalls, then answers loopback.
fn stalling(_: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    std::thread::sleep(Duration::from_millis(700));
    Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
}

#[tokio::test]
async fn a_stalled_lookup_holds_its_permit_until_the_resolver_returns() {
    let limit: &'static Lookups = Box::leak(Box::new(Lookups {
        permits: Semaphore::new(2),
        most: 2,
    }));
    let short = (limit, Duration::from_millis(100));
    // Two lookups stop waiting; their resolver threads do not.
    for name in ["a.example", "b.example"] {
        let e = lookup(name, 443, short, stalling).await.unwrap_err();
        assert_eq!(e, format!("resolving {name} timed out"));
    }
    // The third waits for a permit they still hold: no third thread.
    let e = lookup("c.example", 443, short, stalling).await.unwrap_err();
    assert_eq!(
        e,
        "resolving c.example timed out waiting its turn: 2 lookups, the most at once, were in flight and none finished"
    );
    // Once they return, lookups run again.
    let returned = std::time::Instant::now() + Duration::from_secs(10);
    while limit.permits.available_permits() < 2 {
        assert!(
            std::time::Instant::now() < returned,
            "the resolvers never returned"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let addrs = lookup("d.example", 8443, (limit, Duration::from_secs(5)), stalling).await;
    assert_eq!(addrs.unwrap(), [SocketAddr::from(([127, 0, 0, 1], 8443))]);
    assert_eq!(limit.permits.available_permits(), 2);
}

#[tokio::test]
async fn the_system_resolver_answers_through_the_bound() {
    let addrs = lookup("localhost", 80, (&LOOKUPS, DNS_TIMEOUT), system_lookup).await;
    assert!(
        addrs
            .unwrap()
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 80)
    );
}

#[test]
fn normalizes_hosts_and_refuses_userinfo_and_nul() {
    let (_, o) = parse_url("HTTP://API.Example.COM.:443/x").unwrap();
    assert_eq!(o.to_string(), "http://api.example.com:443");
    let (_, o) = parse_url("http://0x7f.1/").unwrap();
    assert_eq!(o.host, Host::<String>::Ipv4("127.0.0.1".parse().unwrap()));
    let (_, o) = parse_url("http://2130706433/").unwrap();
    assert_eq!(o.host, Host::<String>::Ipv4("127.0.0.1".parse().unwrap()));
    let (_, o) = parse_url("http://[::ffff:127.0.0.1]/").unwrap();
    assert!(matches!(o.host, Host::Ipv6(_)));
    let (_, o) = parse_url("https://bücher.example/").unwrap();
    assert_eq!(o.host, Host::Domain("xn--bcher-kva.example".to_owned()));
    assert!(
        parse_url("http://u:p@api.example.com/")
            .unwrap_err()
            .contains("userinfo")
    );
    assert!(
        parse_url("http://api.example.com:80@evil.example/")
            .unwrap_err()
            .contains("userinfo")
    );
    assert!(
        parse_url("http://api.example.com\0.evil/")
            .unwrap_err()
            .contains("NUL")
    );
    assert!(
        parse_url("file:///etc/passwd")
            .unwrap_err()
            .contains("scheme 'file'")
    );
    assert!(
        parse_url("/relative")
            .unwrap_err()
            .contains("expected an absolute")
    );
}

#[test]
fn path_prefixes_hold_whole_segments() {
    for (path, prefix, held) in [
        ("/v1", "/v1", true),
        ("/v1/", "/v1", true),
        ("/v1/items", "/v1", true),
        ("/v1-admin", "/v1", false),
        ("/v1.json", "/v1", false),
        ("/v1;x=1/items", "/v1", false),
        ("/v1/items", "/v1/", true),
        ("/v1", "/v1/", false),
        ("/anything", "/", true),
        ("/v2/items", "/v1", false),
        ("/api/v1x", "/api/v1x", true),
    ] {
        assert_eq!(within(path, prefix), held, "{path} within {prefix}");
    }
}

#[test]
fn a_policy_reads_a_url_with_its_needless_escapes_decoded() {
    assert_eq!(
        policy_form("https://api.x/%61dmin/%2fx?%66orce=%74rue&a=%2b%7E%e2%82%ac"),
        "https://api.x/admin/%2Fx?force=true&a=%2B~%E2%82%AC"
    );
    // Not an escape, or cut short: kept as is; text around escapes whole.
    assert_eq!(policy_form("/é%zz%4/%"), "/é%zz%4/%");
    assert_eq!(policy_form("/é%41é"), "/éAé");
}

#[test]
fn encoded_dot_segments_are_found() {
    for path in [
        "/v1/..%2Fadmin",
        "/v1/..%2fadmin",
        "/v1/%2e%2e%2fadmin",
        "/v1/.%2E%5Cadmin",
        "/v1/x%2F..%2F..%2Fadmin",
        "/v1/%252e%252e%252fadmin",
        "/v1/%25252e%25252e%25252fadmin",
        "/v1/x%2F.%2Fy",
        "/v1/..;/admin",
        "/v1/.;x/admin",
        "/v1/..%3B/admin",
        "/v1/%u002e%u002e/admin",
        "/v1/%C0%AE%C0%AE%C0%AFadmin",
        "/v1/%e0%80%ae%e0%80%ae/admin",
        "/v1/%2525252e%2525252e/admin",
        "/v1/%EF%BC%8E%EF%BC%8E/admin",
        "/v1/%EF%BC%8E%EF%BC%8E%EF%BC%8Fadmin",
        "/v1/%E2%80%A5%EF%BC%BCadmin",
        "/v1/%E2%80%A4%EF%BC%9Bx/admin",
        "/v1/%25EF%25BC%258E%25EF%25BC%258E/admin",
        "/v1/%EF%BC%258E%EF%BC%258E/admin",
        "/v1/%252525EF%252525BC%2525258E/admin",
        "/v1/%C0%25AE%C0%25AE/admin",
        "/v1/%EF%BC%85%EF%BC%92%EF%BD%85%EF%BC%85%EF%BC%92%EF%BD%85/admin",
        "/v1/%EF%BC%85%EF%BD%95%EF%BC%90%EF%BC%90%EF%BC%92%EF%BD%85/admin",
        "/v1/%252525252e%252525252e/admin",
    ] {
        assert!(encoded_dot_segment(path).is_some(), "{path}");
    }
    for path in [
        "/v1/items",
        "/api/v4/projects/group%2Fproject",
        "/v1/a..b%2Fc",
        "/v1/%2e%2e.txt",
        "/v1/%E2%80%A6",
        "/v1/%zz",
        "/v1/a;b/c",
        "/v1/..x;y/",
        "/files/100%25users",
        "/files/%25c0ffee",
        "/v1/%C1vila",
        "/v1/%C3%A9t%C3%A9",
        "/v1/%EF%BC%8E%EF%BC%8E%EF%BC%8E",
        "/v1/a%EF%BC%8Eb",
        "/v1/%E5%9B%BE%E7%89%87",
    ] {
        assert!(encoded_dot_segment(path).is_none(), "{path}");
    }
    // As the URL parser leaves them.
    let (url, _) = parse_url("http://h/v1/%2e%2e/x/..%2Fadmin").unwrap();
    assert_eq!(url.path(), "/x/..%2Fadmin");
    assert!(encoded_dot_segment(url.path()).is_some());
}

#[test]
fn classifies_special_addresses() {
    for (ip, want) in [
        ("127.0.0.1", Some("loopback")),
        ("10.1.2.3", Some("private")),
        ("192.168.0.1", Some("private")),
        ("169.254.169.254", Some("cloud metadata")),
        ("168.63.129.16", Some("cloud metadata")),
        ("::ffff:168.63.129.16", Some("cloud metadata")),
        ("168.63.129.17", None),
        ("100.64.0.1", Some("shared (CGNAT)")),
        ("0.0.0.0", Some("non-routable")),
        ("::1", Some("loopback")),
        ("::ffff:127.0.0.1", Some("loopback")),
        ("fd00::1", Some("private (unique local)")),
        ("fd00:ec2::254", Some("cloud metadata")),
        ("fd00:ec2::253", Some("private (unique local)")),
        ("::ffff:169.254.169.254", Some("cloud metadata")),
        ("fe80::1", Some("link-local")),
        ("93.184.216.34", None),
        ("2606:4700::1111", None),
        // ranges no tool should reach unlisted
        ("198.18.0.1", Some("benchmarking")),
        ("198.19.255.1", Some("benchmarking")),
        ("198.20.0.1", None),
        ("192.0.0.8", Some("protocol assignment")),
        ("240.0.0.1", Some("reserved")),
        ("255.255.255.255", Some("non-routable")),
        ("203.0.113.9", Some("documentation")),
        // IPv6 forms that carry an IPv4 address are that address
        ("64:ff9b::a00:7", Some("private")),
        ("64:ff9b::7f00:1", Some("loopback")),
        ("64:ff9b::a9fe:a9fe", Some("cloud metadata")),
        ("64:ff9b::5db8:d822", None),
        ("2002:a00:7::1", Some("private")),
        ("2002:7f00:1::", Some("loopback")),
        ("::10.0.0.7", Some("private")),
        ("::127.0.0.1", Some("loopback")),
        ("64:ff9b:1::a00:7", Some("local-use NAT64")),
        (
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            Some("Teredo tunnel"),
        ),
        ("fec0::1", Some("site-local")),
        ("100::1", Some("discard-only")),
        ("2001:db8::1", Some("documentation")),
    ] {
        assert_eq!(is_special(ip.parse().unwrap()), want, "{ip}");
    }
}

#[test]
fn a_path_is_read_as_lenient_servers_route_it() {
    for (path, read) in [
        ("/admin/users", "/admin/users"),
        ("//admin///users/", "/admin/users/"),
        ("/%61dmin/users", "/admin/users"),
        ("/%2561dmin/users", "/admin/users"),
        ("/admin;jsessionid=1/users", "/admin/users"),
        ("/admin\\users", "/admin/users"),
        ("/admin%2Fusers", "/admin/users"),
        ("/", "/"),
        ("//", "/"),
    ] {
        assert_eq!(server_reading(path), read, "{path}");
    }
}
