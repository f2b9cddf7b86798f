//! Where `_method` and the override headers are found, and what is refused.

use super::*;

fn methods(url: &str, headers: &[(&str, &[u8])], body: &[u8]) -> Vec<(String, String)> {
    let url = Url::parse(url).unwrap();
    find("POST", &url, headers, Some(body))
        .unwrap()
        .into_iter()
        .map(|o| (o.by, String::from_utf8_lossy(&o.value).into_owned()))
        .collect()
}

#[test]
fn overrides_are_found_where_servers_read_them() {
    let none: &[(&str, &[u8])] = &[];
    let found = |url, headers, body| methods(url, headers, body);
    assert_eq!(
        found("http://h/x?_method=DELETE&a=1", none, b""),
        [("the query's '_method'".to_owned(), "DELETE".to_owned())]
    );
    // Percent-encoded, PHP's spellings (leading spaces dropped, a NUL
    // ends the name, `.` or `[` for `_`), any case, every field.
    assert_eq!(
        found(
            "http://h/x?%5Fmethod=put&.Method=patch&%20METHOD=x&[method=y&+_method=a&_method%00x=b",
            none,
            b""
        )
        .len(),
        5
    );
    let form: &[(&str, &[u8])] = &[("Content-Type", b"application/x-www-form-urlencoded")];
    assert_eq!(
        found("http://h/x", form, b"a=1&_method=delete"),
        [("the form's '_method'".to_owned(), "delete".to_owned())]
    );
    // No Content-Type: a form, as Rack reads it.
    assert_eq!(found("http://h/x", none, b"_method=DELETE").len(), 1);
    let json: &[(&str, &[u8])] = &[("content-type", b"application/vnd.api+json; charset=utf-8")];
    assert_eq!(
        found(
            "http://h/x",
            json,
            br#"{"a":{"_method":"GET"},"\u005fmethod":"DELETE","_METHOD":7}"#
        ),
        [
            ("the JSON body's '_method'".to_owned(), "DELETE".to_owned()),
            ("the JSON body's '_method'".to_owned(), "7".to_owned())
        ]
    );
    let multipart: &[(&str, &[u8])] = &[("Content-Type", b"multipart/form-data; boundary=\"XyZ\"")];
    let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n_method\r\n--XyZ\r\nContent-Disposition: form-data; name=_method\r\n\r\nDELETE\r\n--XyZ--\r\n";
    assert_eq!(
        found("http://h/x", multipart, body),
        [(
            "the multipart form's '_method'".to_owned(),
            "DELETE".to_owned()
        )]
    );
    let headers: &[(&str, &[u8])] = &[("X_HTTP_Method_Override", b"PUT"), ("x-method", b"GET")];
    assert_eq!(
        found("http://h/x", headers, b""),
        [(
            "header 'X_HTTP_Method_Override'".to_owned(),
            "PUT".to_owned()
        )]
    );
    // Where no server reads one: a JSON body's nested field, a text
    // body, a field named otherwise.
    let text: &[(&str, &[u8])] = &[("Content-Type", b"text/plain")];
    assert!(
        found(
            "http://h/x?method=DELETE&__method=x",
            text,
            b"_method=DELETE"
        )
        .is_empty()
    );
    assert!(found("http://h/x", json, b"not json at all").is_empty());
    // LF line ends.
    let both: &[(&str, &[u8])] = &[("content-type", b"multipart/form-data; boundary=b")];
    let body = b"--b\nContent-Disposition: form-data; name=\"_method\"\n\nPUT\n--b--\n";
    assert_eq!(found("http://h/x", both, body).len(), 1);
    // Content types as Rack and PHP read them: cut at `,` or a space,
    // empty as none, any multipart, `boundary=` anywhere and cut at `,`.
    for (content_type, body) in [
        (
            "application/x-www-form-urlencoded,x",
            &b"a=1& _method=PUT"[..],
        ),
        ("", b"_method=PUT"),
        ("text/plain; a=/json", br#"{"_method":"PUT"}"#),
        ("application/jsonx", br#"{"_method":"PUT","_METHOD":1e999}"#),
        (
            "application/json; charset=UTF-8",
            b"\xef\xbb\xbf{\"_method\":\"PUT\"}",
        ),
        (
            "multipart/mixed; boundary=B,x",
            b"--B\r\nContent-Disposition: form-data; name=\"\\_method\"\r\n\r\nPUT\r\n--B--",
        ),
        (
            "multipart/form-data; xboundary=B",
            b"--B\r\nContent-ID: <_method>\r\n\r\nPUT\r\n--B--",
        ),
        (
            "multipart/form-data; boundary=B",
            b"--B\r\nX: 1\n\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nPUT\r\n--B--",
        ),
    ] {
        let headers: &[(&str, &[u8])] = &[("Content-Type", content_type.as_bytes())];
        let got = methods("http://h/x", headers, body);
        assert!(
            got.iter().any(|(_, v)| v == "PUT"),
            "{content_type}: {got:?}"
        );
    }
    // What cannot be read as a server would: refused.
    let url = Url::parse("http://h/x").unwrap();
    for (headers, body, reason) in [
        (
            &[
                ("Content-Type", &b"text/plain"[..]),
                ("Content-Type", b"application/json"),
            ][..],
            &b"{}"[..],
            "the request has 2 different Content-Type headers",
        ),
        (
            &[("Content-Encoding", b"gzip")],
            b"\x1f\x8b",
            "a body a server parses for fields",
        ),
        (
            &[(
                "Content-Type",
                b"application/x-www-form-urlencoded; charset=ibm037",
            )],
            b"\x6d\x94",
            "a body a server parses for fields (a form, JSON, a multipart form) in a charset",
        ),
        (
            &[("Content-Type", b"application/json")],
            b"\xff\xfe{\x00}\x00",
            "a body a server parses for fields (a form, JSON, a multipart form) in UTF-16",
        ),
    ] {
        let refused = find("POST", &url, headers, Some(body))
            .err()
            .unwrap_or_default();
        assert!(refused.starts_with(reason), "{reason}: {refused}");
    }
    // The same Content-Type many times is read once.
    let many: Vec<(&str, &[u8])> = (0..10_000)
        .map(|_| ("content-type", &b"application/json"[..]))
        .collect();
    assert_eq!(
        methods("http://h/x", &many, br#"{"_method":"PUT"}"#).len(),
        1
    );
    // Rack's and PHP's other readings of a multipart form: no boundary
    // (a form), the last or the first of several, a quote ended at `;`,
    // a name quoted oddly, headers ended by a mixed blank line.
    for (content_type, body) in [
        ("multipart/form-data", &b"_method=PUT"[..]),
        ("multipart/form-data; boundary=;", b"_method=PUT"),
        (
            "multipart/form-data; boundary=A; boundary=B",
            b"--B\r\nContent-Disposition: form-data; name=_method\r\n\r\nPUT\r\n--B--",
        ),
        (
            "multipart/form-data; boundary=\"B;x\"",
            b"--B\r\nContent-Disposition: form-data; name=_method\r\n\r\nPUT\r\n--B--",
        ),
        (
            "multipart/form-data; BOUNDARY =B",
            b"--B\r\nContent-Disposition: form-data; name=\"_method\"x\r\n\r\nPUT\r\n--B--",
        ),
        (
            "multipart/form-data; boundary=B",
            b"--B\r\nContent-Disposition: form-data; name='_method'\n\r\nPUT\r\n--B--",
        ),
    ] {
        let headers: &[(&str, &[u8])] = &[("Content-Type", content_type.as_bytes())];
        let got = methods("http://h/x", headers, body);
        assert!(
            got.iter().any(|(_, v)| v == "PUT"),
            "{content_type}: {got:?}"
        );
    }
    // Fields that only mention a method are not one, whatever they hold;
    // a JSON array is no object of fields; a charset that keeps ASCII is
    // read.
    let multipart: &[(&str, &[u8])] = &[("Content-Type", b"multipart/form-data; boundary=json123")];
    for head in [
        "name=\"http_method\"",
        "name=\"webhook[method]\"",
        "name=\"file\"; filename=\"payment_method.txt\"",
        "name=\"_methods\"",
    ] {
        let body = format!(
            "--json123\r\nContent-Disposition: form-data; {head}\r\n\r\nGET\r\n--json123--"
        );
        assert!(
            methods("http://h/x", multipart, body.as_bytes()).is_empty(),
            "{head}"
        );
    }
    let rack: &[(&str, &[u8])] = &[("Content-Type", b"multipart/form-data; boundary=B")];
    let body = b"--B\r\nContent-Disposition: form-data; x=\"a\" name=_method\r\n\r\nPUT\r\n--B--";
    assert_eq!(methods("http://h/x", rack, body).len(), 1);
    assert!(
        methods(
            "http://h/x",
            json,
            br#"[{"payment_method":"card","_method":"PUT"}]"#
        )
        .is_empty()
    );
    let cyrillic: &[(&str, &[u8])] = &[(
        "Content-Type",
        b"application/x-www-form-urlencoded; charset=windows-1251",
    )];
    assert_eq!(methods("http://h/x", cyrillic, b"_method=PUT").len(), 1);
    // A value of megabytes is kept as 16 bytes; many boundaries are refused.
    let big = format!(
        "--B\r\nContent-Disposition: form-data; name=_method\r\n\r\n{}\r\n--B--",
        "x".repeat(4 << 20)
    );
    let got = methods("http://h/x", rack, big.as_bytes());
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.len(), 16);
    let many: &[(&str, &[u8])] = &[(
        "Content-Type",
        b"multipart/form-data; boundary=a; boundary=b; boundary=c; boundary=d; boundary=e",
    )];
    let url = Url::parse("http://h/x").unwrap();
    let refused = find("POST", &url, many, Some(b"x")).err().unwrap();
    assert_eq!(
        refused,
        "the multipart Content-Type names more than 4 different boundaries"
    );
    // A part that only mentions a method field over other contents is
    // not one (`payment_method`).
    let headers: &[(&str, &[u8])] = &[("Content-Type", b"multipart/form-data; boundary=B")];
    let body =
        b"--B\r\nContent-Disposition: form-data; name=\"payment_method\"\r\n\r\ncard\r\n--B--";
    assert!(methods("http://h/x", headers, body).is_empty());
    // Only a POST's fields: no server reads `_method` on another method.
    let url = Url::parse("http://h/x?_method=DELETE").unwrap();
    assert!(
        find("PUT", &url, none, Some(b"_method=DELETE"))
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        find("GET", &url, &[("X-HTTP-Method", b"PUT")], None)
            .unwrap()
            .len(),
        1
    );
    // Equal fields are one; too many different ones are refused.
    let body = "_method=PUT&".repeat(100_000);
    assert_eq!(methods("http://h/x", none, body.as_bytes()).len(), 1);
    let body: String = (0..40).map(|i| format!("_method=x{i}&")).collect();
    let url = Url::parse("http://h/x").unwrap();
    let refused = find("POST", &url, none, Some(body.as_bytes()))
        .err()
        .unwrap();
    assert_eq!(
        refused,
        "the request holds more than 32 different method overrides"
    );
    // JSON serde_json refuses but JavaScript reads, naming the field:
    // refused; a charset named with spaces around `=`: read.
    let refused = find(
        "POST",
        &url,
        json,
        Some(br#"{"\ud800":0,"_method":"DELETE"}"#),
    )
    .err()
    .unwrap();
    assert!(
        refused.starts_with("the JSON body does not parse here"),
        "{refused}"
    );
    let utf16: &[(&str, &[u8])] = &[("Content-Type", b"application/json; charset = utf-16le")];
    let refused = find("POST", &url, utf16, Some(b"{}")).err().unwrap();
    assert!(refused.contains("('utf-16…')"), "{refused}");
    // Nested deeper than a parser's recursion goes: still read.
    let deep = format!(
        "{{\"a\":{}1{},\"_method\":\"DELETE\"}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let got = methods("http://h/x", json, deep.as_bytes());
    assert_eq!(
        got,
        [("the JSON body's '_method'".to_owned(), "DELETE".to_owned())]
    );
}

#[test]
fn a_refused_charset_is_named_by_its_family_not_its_spelling() {
    let url = Url::parse("http://h/x").unwrap();
    let headers: &[(&str, &[u8])] = &[(
        "Content-Type",
        b"application/x-www-form-urlencoded; charset=utf-16tok-3f9a7c1e-live",
    )];
    let e = find("POST", &url, headers, Some(b"a=1")).err().unwrap();
    assert!(
        e.ends_with("('utf-16…') cannot be read for a '_method' override"),
        "{e}"
    );
    assert!(!e.contains("tok-"), "{e}");
}
