//! Unit tests of `redact`.
use super::*;

const VALUES: [&str; 3] = [
    "s3cr3t-T0ken/with+odd&chars=",
    "pass w\u{f6}rd \u{1f511} x",
    "a\"b\\c%d<e>",
];

fn percent_all(s: &str, upper: bool) -> String {
    s.bytes()
        .map(|b| {
            if upper {
                format!("%{b:02X}")
            } else {
                format!("%{b:02x}")
            }
        })
        .collect()
}

fn percent_reserved(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn mixed_case(s: &str) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if i % 2 == 0 {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

fn json_u_all(s: &str) -> String {
    s.encode_utf16().map(|u| format!("\\u{u:04x}")).collect()
}

fn js_x_all(s: &str) -> String {
    s.bytes().map(|b| format!("\\x{b:02X}")).collect()
}

fn html_refs(s: &str, hex: bool) -> String {
    s.chars()
        .map(|c| {
            if hex {
                format!("&#x{:x};", c as u32)
            } else {
                format!("&#{};", c as u32)
            }
        })
        .collect()
}

fn json_string(s: &str) -> String {
    let j = serde_json::to_string(s).unwrap();
    j[1..j.len() - 1].to_owned()
}

/// Every supported encoding of `value`, framed by `prefix` where the
/// encoding covers more than the value (base64 alignment).
fn leaks(value: &str, prefix: &str) -> Vec<(String, String)> {
    let mut out: Vec<(&str, String)> = vec![
        ("plain", value.to_owned()),
        ("plus", value.replace(' ', "+")),
        ("hex", hex::encode(value)),
        ("HEX", hex::encode_upper(value)),
        ("HeX", mixed_case(&hex::encode(value))),
        ("%XX all", percent_all(value, true)),
        ("%xx all", percent_all(value, false)),
        ("%Xx all", mixed_case(&percent_all(value, true))),
        ("%reserved", percent_reserved(value)),
        ("%+", percent_reserved(value).replace("%20", "+")),
        ("%25 double", percent_all(&percent_all(value, true), true)),
        ("json", json_string(value)),
        ("\\u all", json_u_all(value)),
        (
            "\\u all upper",
            json_u_all(value).to_uppercase().replace("\\U", "\\u"),
        ),
        ("\\x all", js_x_all(value)),
        ("&#", html_refs(value, false)),
        ("&#x", html_refs(value, true)),
        ("\\u of %", json_u_all(&percent_all(value, true))),
        ("% of \\u", percent_all(&json_u_all(value), false)),
        ("json of hex", json_u_all(&hex::encode(value))),
    ];
    let framed = format!("{prefix}{value}!?");
    for (label, engine) in [
        ("b64", &STANDARD),
        ("b64url", &URL_SAFE),
        ("b64nopad", &STANDARD_NO_PAD),
        ("b64urlnopad", &URL_SAFE_NO_PAD),
    ] {
        let b = engine.encode(&framed);
        out.push((label, b.clone()));
        out.push((label, percent_all(&b, false)));
        out.push((label, percent_reserved(&b)));
        out.push((label, json_u_all(&b)));
    }
    out.into_iter().map(|(l, s)| (l.to_owned(), s)).collect()
}

#[test]
fn every_encoding_is_redacted_at_any_alignment() {
    let frames = [
        ("", ""),
        ("a", "b"),
        ("ab", "%"),
        ("abc", "\\"),
        ("Bearer ", "&#"),
        ("%", "%4"),
        ("\\", "\\u00"),
        ("&#", "&"),
        ("{\"k\":\"", "\"}"),
        ("?q=", "&r=1"),
    ];
    let mut cases = 0;
    for value in VALUES {
        let r = Redactor::new([("api", value), ("other", "unrelated-value-42")]);
        for (prefix, suffix) in frames {
            for (label, leak) in leaks(value, prefix) {
                let text = format!("before {prefix}{leak}{suffix} after");
                let out = r.redact(&text);
                assert!(
                    out.contains("[REDACTED:api]"),
                    "{label} not redacted: {text}"
                );
                assert_eq!(
                    r.names_in(text.as_bytes()),
                    BTreeSet::from(["api".to_owned()]),
                    "{label}: {text}"
                );
                assert!(r.names_in(out.as_bytes()).is_empty(), "{label}: {out}");
                assert!(out.starts_with("before ") && out.ends_with(" after"));
                let bytes = r.redact_bytes(text.as_bytes());
                assert_eq!(bytes, out.as_bytes(), "{label}");
                cases += 1;
            }
        }
    }
    assert!(cases > 1000, "{cases}");
}

#[test]
fn a_value_holding_a_percent_escape_is_found_in_json_escapes() {
    // Found by the fuzzer: decoding `%Aa` and `\"` in one pass spoils
    // `0"%Aaaaa`; each kind of escape is also decoded alone.
    let r = Redactor::new([("k", "0\"%Aaaaa")]);
    // And a `%` before a percent-encoded value glues onto its start.
    let glued = Redactor::new([("k", "000A0A!0")]);
    assert_eq!(glued.redact("%000A0A%210"), "%[REDACTED:k]");
    assert_eq!(r.redact(r#"x 0\"%Aaaaa y"#), "x [REDACTED:k] y");
    assert_eq!(r.redact("x 0&#34;%Aaaaa y"), "x [REDACTED:k] y");
    assert_eq!(r.names_in(br#"0\u0022%Aaaaa"#).len(), 1);
}

#[test]
fn a_value_holding_escapes_is_found_under_layers_of_another_kind() {
    // A connection string with its own `%40`, its first letter escaped
    // for JSON, and that escape and the `%` percent-encoded once more: a
    // reader percent-decodes, then JSON-unescapes, and has the value.
    let value = "postgres://app:s3cr%40t@db/app";
    let r = Redactor::new([("dsn", value)]);
    for text in [
        "%5Cu0070ostgres://app:s3cr%2540t@db/app",
        "%5Cu{70}ostgres://app:s3cr%2540t@db/app",
        "\\u0070ostgres://app:s3cr\\u002540t@db/app",
    ] {
        assert_eq!(r.redact(text), "[REDACTED:dsn]", "{text}");
    }
    // JavaScript's braced escapes, alone.
    let r = Redactor::new([("api", "hunter22")]);
    assert_eq!(r.redact("\\u{68}\\u{0075}nter22"), "[REDACTED:api]");
    assert_eq!(r.redact("\\u{0000068}unter22"), "[REDACTED:api]");
    // A surrogate pair in braces, or a braced half and a plain one.
    let r = Redactor::new([("e", "smile-\u{1F600}-please")]);
    for text in [
        "smile-\\u{D83D}\\u{DE00}-please",
        "smile-\\u{d83d}\\uDE00-please",
        "smile-\\uD83D\\u{DE00}-please",
        "smile-\\u{000000000000000000000000000000000000000000000000000000000000000000D83D}\\uDE00-please",
    ] {
        assert_eq!(r.redact(text), "[REDACTED:e]", "{text}");
    }
    // Not escapes: no digits, seven significant ones, no closing brace.
    let r = Redactor::new([("api", "hunter22")]);
    for text in ["\\u{}unter22", "\\u{1000068}unter22", "\\u{68unter22"] {
        assert!(matches!(r.redact(text), Cow::Borrowed(_)), "{text}");
    }
}

#[test]
fn innocent_text_is_left_as_it_is() {
    let r = Redactor::new([("api", VALUES[0])]);
    for text in [
        "nothing here",
        "100% sure \\ & &#; %zz \\u12 \\uD800 &#x110000;",
        "s3cr3t-T0ken/with+odd&chars", // one character short
        "",
    ] {
        assert!(matches!(r.redact(text), Cow::Borrowed(_)), "{text}");
        assert!(r.names_in(text.as_bytes()).is_empty(), "{text}");
    }
    assert!(Redactor::default().is_empty());
    assert_eq!(Redactor::default().redact("x"), "x");
}

#[test]
fn only_the_escapes_that_spell_a_value_are_replaced() {
    let r = Redactor::new([("api", "hunter22")]);
    assert_eq!(
        r.redact("a %41 \\u0068\\u0075nter22 %2541 b"),
        "a %41 [REDACTED:api] %2541 b"
    );
    assert_eq!(
        r.redact("x=%68%75%6e%74%65%72%32%32&y=%41"),
        "x=[REDACTED:api]&y=%41"
    );
}

#[test]
fn bytes_and_several_secrets() {
    let r = Redactor::new([("a", "first-secret"), ("b", "second-secret")]);
    let out = r.redact_bytes(b"x first-secret y second-secret z");
    assert_eq!(out, b"x [REDACTED:a] y [REDACTED:b] z");
    let out = r.redact_bytes(b"\xff\xfe %66irst-secret \x00");
    assert_eq!(out, b"\xff\xfe [REDACTED:a] \x00");
}

#[test]
fn json_is_redacted_by_what_it_means() {
    let r = Redactor::new([("api", "hunter22"), ("pin", "90210417")]);
    let cases = [
        // escapes, in a value and in a key
        (
            r#"{"t":"\u0068\u0075\u006e\u0074\u0065\u0072\u0032\u0032"}"#,
            r#"{"t":"[REDACTED:api]"}"#,
        ),
        (r#"{"\u0068unter22":1}"#, r#"{"[REDACTED:api]":1}"#),
        // percent-encoding inside a JSON string
        (r#"["%68%75nter22"]"#, r#"["[REDACTED:api]"]"#),
        // a number that is a value
        (r#"{"n":90210417}"#, r#"{"n":"[REDACTED:pin]"}"#),
        (r#"[-90210417.5]"#, r#"["[REDACTED:pin]"]"#),
        // a number whose text does not hold the digits together: its value
        // does (a parser gives back 90210417.0)
        (r#"{"v":9.0210417e7}"#, r#"{"v":"[REDACTED:pin]"}"#),
        (
            r#"{"v":[1, 902104170E-1]}"#,
            r#"{"v":[1,"[REDACTED:pin]"]}"#,
        ),
        (r#"[0.90210417e8]"#, r#"["[REDACTED:pin]"]"#),
    ];
    for (text, want) in cases {
        assert_eq!(r.redact_json(text), want, "{text}");
        let parsed: serde_json::Value = serde_json::from_str(&r.redact_json(text)).unwrap();
        assert!(r.names_in(parsed.to_string().as_bytes()).is_empty());
    }
    // untouched unless a value is there (spacing and order kept)
    let plain = "{ \"b\": 1,\n \"a\": \"\\u0041\" }";
    assert!(matches!(r.redact_json(plain), Cow::Borrowed(_)));
    let decimals = "{ \"b\": 1.5e3, \"a\": \"v2.0\" }";
    assert!(matches!(r.redact_json(decimals), Cow::Borrowed(_)));
    // not JSON: redacted as text
    assert_eq!(r.redact_json("oops hunter22"), "oops [REDACTED:api]");
    // a value across JSON tokens: the whole output is withheld
    let r = Redactor::new([("q", "ab\",\"cd")]);
    assert_eq!(r.redact_json(r#"["ab","cd"]"#), r#""[REDACTED:q]""#);
}

#[test]
fn control_characters_are_escaped_for_people() {
    assert_eq!(super::escape_control("a.txt"), "a.txt");
    assert_eq!(
        super::escape_control("a\n  details   fake\u{1b}[2K"),
        "a\\u{a}  details   fake\\u{1b}[2K"
    );
    // Text that reads in another order than it is stored (a right-to-left
    // override turns `txt.exe` around), or hides characters.
    assert_eq!(
        super::escape_control("invoice\u{202e}txt.exe"),
        "invoice\\u{202e}txt.exe"
    );
    assert_eq!(
        super::escape_control("a\u{200b}b\u{2066}c\u{feff}"),
        "a\\u{200b}b\\u{2066}c\\u{feff}"
    );
    // Characters that render blank or not at all: a soft hyphen, the
    // combining grapheme joiner, Hangul fillers, the braille blank.
    assert_eq!(
        super::escape_control("a\u{ad}b\u{34f}c\u{3164}d\u{ffa0}e\u{2800}f"),
        "a\\u{ad}b\\u{34f}c\\u{3164}d\\u{ffa0}e\\u{2800}f"
    );
    // Variation selectors (256 of them carry any byte past a reader), the
    // line separators, and format characters of other scripts.
    assert_eq!(
        super::escape_control("config\u{fe0f}.toml ci\u{e0101}.yml"),
        "config\\u{fe0f}.toml ci\\u{e0101}.yml"
    );
    assert_eq!(
        super::escape_control("a\u{2028}b\u{2029}c\u{600}d\u{1d173}e\u{13430}f\u{1bca0}"),
        "a\\u{2028}b\\u{2029}c\\u{600}d\\u{1d173}e\\u{13430}f\\u{1bca0}"
    );
    // Default-ignorable code points not (yet) assigned render as nothing.
    assert_eq!(
        super::escape_control("a\u{e0080}\u{2065}\u{fff0}\u{e0fff}b"),
        "a\\u{e0080}\\u{2065}\\u{fff0}\\u{e0fff}b"
    );
    assert_eq!(super::escape_control("héllo, 世界"), "héllo, 世界");
}

/// Values whose own characters decode as escapes once a glued prefix has
/// shifted the decoder (the fuzzer's finds among them).
const TRICKY: [&str; 6] = [
    "!\\\"!a0aa",
    "000A0A!0",
    "0\"%Aaaaa",
    "#65;a\\\"bc",
    "\\u0041bcdefg",
    "%41%42xyz&#65;",
];

#[test]
fn an_escape_start_glued_before_an_encoding_does_not_hide_the_value() {
    // Found by the fuzzer: `\` + `\u0021\u005c\u0022…` decodes as `\\` +
    // `u0021` + `\"…`, and the value's own `\"` then decodes too.
    let r = Redactor::new([("k", "!\\\"!a0aa")]);
    let text = "\\\\u0021\\u005c\\u0022\\u0021\\u0061\\u0030\\u0061\\u0061";
    // The glued `\` may go with the value (overlapping matches are all
    // found, and that decoding of it spells the value too).
    let whole = |out: Cow<'_, str>| matches!(out.as_ref(), "\\[REDACTED:k]" | "[REDACTED:k]");
    assert!(whole(r.redact(text)), "{}", r.redact(text));
    assert_eq!(r.names_in(text.as_bytes()).len(), 1);
    assert!(whole(r.redact(&text.to_uppercase().replace("\\U", "\\u"))));
    // One encoding at a time: a `\` glued before an encoding of an encoding
    // (`\u0025\u0032\u0031…`, `\u` of `%21…`) can still hide a value whose
    // own characters decode as escapes.
    let layered = ["%25 double", "\\u of %", "% of \\u", "json of hex"];
    let mut misses = Vec::new();
    for value in TRICKY.into_iter().chain(VALUES) {
        let r = Redactor::new([("api", value)]);
        for glue in ["\\", "%", "&", "&#", "&#x", "\\u", "\\x", "%2", "\\u00"] {
            for (label, leak) in leaks(value, "") {
                if layered.contains(&label.as_str()) || label.starts_with("b64") {
                    continue;
                }
                let text = format!("{glue}{leak}");
                if r.names_in(text.as_bytes()).is_empty() || r.redact(&text).contains(value) {
                    misses.push(format!("{label} of {value:?} after {glue:?}: {text}"));
                }
            }
        }
    }
    assert!(misses.is_empty(), "{}", misses.join("\n"));
}

#[test]
fn json_for_terminal_escapes_what_a_terminal_would_act_on_and_keeps_the_value() {
    // (C0 controls cannot be in valid JSON strings raw; C1 ones can.)
    let raw = "{\"m\":\"ok\u{9b}2J\u{202e}[31m\u{e0001}\",\r\n\t\"n\":1}";
    let shown = super::json_for_terminal(raw);
    // A line break and a tab between tokens stay (pretty JSON); not `\r`.
    assert!(
        !shown
            .chars()
            .any(|c| (c.is_control() && !"\n\t".contains(c))
                || c == '\u{202e}'
                || c == '\u{e0001}'),
        "{shown:?}"
    );
    assert!(
        shown.contains("\\u009b") && shown.contains("\\u202e") && shown.contains("\\udb40\\udc01"),
        "{shown}"
    );
    let a: serde_json::Value = serde_json::from_str(raw).unwrap();
    let b: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(a, b, "the same JSON value");
    let plain = "{\"m\":\"héllo ✓\"}";
    assert!(matches!(
        super::json_for_terminal(plain),
        std::borrow::Cow::Borrowed(_)
    ));
}

#[test]
fn html_named_and_unterminated_references_are_decoded() {
    let r = Redactor::new([("p", "p&ss\"w0rd/+=")]);
    for text in [
        "p&amp;ss&quot;w0rd&sol;&plus;&equals;",
        "p&AMP;ss&QUOT;w0rd/+=",
        // as browsers read them: the first four without `;`
        "p&ampss&quotw0rd/+=",
        // numeric, without `;` and with leading zeros
        "&#00000112&#38ss&#x00022;w0rd&#47+=",
    ] {
        assert_eq!(
            r.redact(&format!("x {text} y")),
            "x [REDACTED:p] y",
            "{text}"
        );
    }
    // a name other than the first four needs its `;`
    assert_eq!(r.redact("p&ampss&quotw0rd&sol+="), "p&ampss&quotw0rd&sol+=");
}

/// Two values glued by an escape overlap: `%65` ends one (its last byte
/// is `e`) and begins the other's hex form (a token starts `eyJ`). The
/// hits are merged to replace them, but each value is still named, so a
/// request's check sees both (a revealed secret must not hide a token).
#[test]
fn values_glued_by_an_escape_are_each_named() {
    let r = Redactor::new([("s", "alpha-secrete"), ("t", "eyJtoken-value-9f3")]);
    let hex: String = "eyJtoken-value-9f3"
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    let text = format!("alpha-secret%{hex}");
    let names: Vec<String> = r.names_in(text.as_bytes()).into_iter().collect();
    assert_eq!(names, ["s", "t"], "{text}");
    let out = r.redact(&text);
    assert!(
        !out.contains(&hex) && !out.contains("alpha-secret"),
        "{out}"
    );
}

/// An identity token's name carries its audience for checks, and shows
/// as `identity-token` to people.
#[test]
fn a_tokens_name_is_shown_without_its_audience() {
    let name = crate::redact::token_name("https://a.example");
    assert_eq!(
        crate::redact::token_audience(&name),
        Some("https://a.example")
    );
    assert_eq!(crate::redact::token_audience("identity-tokens"), None);
    assert_eq!(crate::redact::token_audience("api"), None);
    let r = Redactor::new([(name.as_str(), "tok-value-7d1c")]);
    assert_eq!(
        r.redact("x tok-value-7d1c y"),
        "x [REDACTED:identity-token] y"
    );
    assert!(!r.holds_secrets());
    let mut found = std::collections::BTreeSet::new();
    r.redact_found(b"tok-value-7d1c", &mut found);
    assert_eq!(found.into_iter().collect::<Vec<_>>(), ["identity-token"]);
    // A deploy webhook's token is a secret the tool does not hold: what
    // servers answer is read whole while it is known.
    let name = crate::redact::deploy_token_name("https://deploy.example");
    assert!(
        crate::redact::is_deploy_token(&name) && !crate::redact::is_deploy_token("deploy-token")
    );
    let r = Redactor::new([(name.as_str(), "hook-tok-52ab")]);
    assert_eq!(r.redact("x hook-tok-52ab y"), "x [REDACTED:deploy-token] y");
    assert!(r.holds_secrets());
}

/// Two values that overlap are both found, and the text of both is
/// replaced: leftmost matching reported only the first, and the rest of
/// the second stayed (`[REDACTED:e]ABCDEFGH`).
#[test]
fn overlapping_values_are_each_found_and_replaced_whole() {
    let r = Redactor::new([("e", "XYZW12345678"), ("f", "5678ABCDEFGH")]);
    assert_eq!(r.redact("q=XYZW12345678ABCDEFGH&"), "q=[REDACTED:e]&");
    let names: Vec<String> = r.names_in(b"q=XYZW12345678ABCDEFGH").into_iter().collect();
    assert_eq!(names, ["e", "f"]);
    let mut found = BTreeSet::new();
    let out = r.redact_found(b"XYZW12345678ABCDEFGH", &mut found).unwrap();
    assert_eq!((out.as_slice(), found.len()), (&b"[REDACTED:e]"[..], 2));
}

/// A short value base64-encoded after a prefix of any length is found and
/// replaced: at an odd alignment its stable characters were too few for a
/// pattern of its own (`Authorization: Basic` of `user:s3cr3t`).
#[test]
fn a_short_value_is_found_in_base64_at_every_alignment() {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let r = Redactor::new([("pin", "s3cr3t"), ("four", "k9#z")]);
    for prefix in [
        "",
        "x",
        "ab",
        "bob:",
        "root:",
        "admin:",
        "a long user name:",
    ] {
        for (value, name) in [("s3cr3t", "pin"), ("k9#z", "four")] {
            for engine in [&STANDARD, &URL_SAFE_NO_PAD] {
                let encoded = engine.encode(format!("{prefix}{value}!"));
                let text = format!("Authorization: Basic {encoded}\r\n");
                let redacted = r.redact(&text);
                assert!(
                    redacted.contains(&format!("[REDACTED:{name}]")),
                    "{prefix}{value}: {redacted}"
                );
                let names: Vec<String> = r.names_in(text.as_bytes()).into_iter().collect();
                assert_eq!(names, [name], "{prefix}{value}");
            }
        }
    }
    // Ordinary words and base64 that holds no value are left alone.
    let plain = format!("several ordinary words {}", STANDARD.encode("nothing here"));
    assert!(matches!(r.redact(&plain), Cow::Borrowed(_)));
    // Without a four-byte value nothing is decoded: the patterns of a
    // value of five bytes or more find it at every alignment.
    for value in ["s3cr3", "s3cr3t", "s3cr3t!", "s3cr3t!!"] {
        let r = Redactor::new([("v", value)]);
        assert!(!r.short);
        for prefix in ["", "x", "ab", "abc", "bob:"] {
            for engine in [&STANDARD, &URL_SAFE_NO_PAD] {
                let text = engine.encode(format!("{prefix}{value}?"));
                assert!(
                    !r.names_in(text.as_bytes()).is_empty(),
                    "{prefix}{value}: {text}"
                );
                assert!(r.redact(&text).contains("[REDACTED:v]"), "{prefix}{value}");
            }
        }
    }
}

/// A number is read from its text, exactly, whether or not serde reads the
/// whole text as JSON (a lone surrogate, depth past 128) and past the 16
/// or 17 digits an `f64` keeps.
#[test]
fn numbers_are_read_exactly_from_their_text() {
    let r = Redactor::new([("pin", "12345678"), ("long", "98765432109876543")]);
    let cases = [
        (
            r#"{"x":"\udead","n":1.2345678e7}"#,
            r#"{"x":"\udead","n":"[REDACTED:pin]"}"#,
        ),
        (r#"[9.8765432109876543e16]"#, r#"["[REDACTED:long]"]"#),
        (r#"[98765432109876543e0, 2]"#, r#"["[REDACTED:long]",2]"#),
    ];
    for (text, want) in cases {
        assert_eq!(r.redact_json(text), want, "{text}");
    }
    // As an `f64` parser rounds it (serde's, for `structuredContent`).
    assert_eq!(
        r.redact_json(r#"{"n":12345677.99999999999}"#),
        r#"{"n":"[REDACTED:pin]"}"#
    );
    // An integer past 2^53 as a JavaScript client rounds it.
    let long = Redactor::new([("id", "123456789012345")])
        .redact_json(r#"[12345678901234499999,123456789012]"#);
    assert_eq!(long, r#"["[REDACTED:id]",123456789012]"#);
    // A million exponents cost their reading, one at a time.
    let many = format!("[{}1]", "1e999,".repeat(1 << 17));
    assert!(matches!(r.redact_json(&many), Cow::Borrowed(_)));
    let deep = format!("{}1.2345678e7{}", "[".repeat(200), "]".repeat(200));
    let out = r.redact_json(&deep);
    assert!(
        !out.contains("1.2345678e7") && out.contains("[REDACTED:pin]"),
        "{out}"
    );
    // A value in a string of such text is redacted with every layer.
    let text = r#"{"x":"\udead","s":"%2531%2532%2533%2534%2535%2536%2537%2538"}"#;
    assert!(r.redact_json(text).contains("[REDACTED:pin]"));
}

/// A signed token's signature is redacted on its own, under the token's
/// name; other values are not split.
#[test]
fn a_signed_tokens_signature_is_a_value_of_its_own() {
    let jwt = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg";
    // Shaped like one, but its first part is no JOSE header.
    let dotted = "prod.db.example-corp-production";
    let pairs: Vec<_> =
        and_signatures([("t", jwt), ("p", "a.b.c"), ("d", dotted), ("q", "nodots")]).collect();
    assert_eq!(
        pairs,
        [
            ("t", jwt),
            ("t", "c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"),
            ("p", "a.b.c"),
            ("d", dotted),
            ("q", "nodots")
        ]
    );
    let r = Redactor::new(pairs);
    assert_eq!(
        r.redact("{\"signature\":\"c2lnbmF0dXJlLW9mLXRoZS10b2tlbg\"}"),
        "{\"signature\":\"[REDACTED:t]\"}"
    );
}
