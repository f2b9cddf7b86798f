//! The tool contract's tests.

use super::*;
use serde_json::json;

fn contract(input: Value, output: Option<Value>) -> Contract {
    Contract::new(&input, output.as_ref()).unwrap()
}

#[test]
fn input_errors_name_the_pointer_and_the_expectation_not_the_value() {
    let c = contract(
        json!({"type": "object", "required": ["path"],
               "properties": {"path": {"type": "string"}, "n": {"type": "integer"}}}),
        None,
    );
    assert!(c.check_input(&json!({"path": "a"})).is_ok());
    let e = c
        .check_input(&json!({"path": "a", "n": "sk-secret-value"}))
        .unwrap_err();
    assert!(e.contains("at /n"), "{e}");
    assert!(e.contains("integer"), "{e}");
    assert!(!e.contains("sk-secret-value"), "{e}");
    let e = c.check_input(&json!({})).unwrap_err();
    assert!(e.contains("at /: ") && e.contains("path"), "{e}");
}

#[test]
fn property_names_are_shown_only_when_short_and_plain() {
    let c = contract(
        json!({"type": "object", "additionalProperties": false,
               "properties": {"a": {"propertyNames": {"maxLength": 3}}}}),
        None,
    );
    let e = c.check_input(&json!({"extra": 1})).unwrap_err();
    assert!(e.contains("('extra' unexpected)"), "{e}");
    let long = "k".repeat(500);
    let e = c.check_input(&json!({long.clone(): 1})).unwrap_err();
    assert!(
        e.ends_with("at /: additional properties are not allowed (1 unexpected)"),
        "{e}"
    );
    let e = c.check_input(&json!({"x\u{1b}[2J": 1})).unwrap_err();
    assert!(!e.contains('\u{1b}'), "{e}");
    // Nor in a pointer: a segment that is not printable is elided.
    let typed = contract(json!({"additionalProperties": {"type": "integer"}}), None);
    let e = typed.check_input(&json!({"\u{1b}[2J": "x"})).unwrap_err();
    assert!(e.contains("at /…: "), "{e}");
    assert!(!e.contains('\u{1b}'), "{e}");
    let e = typed.check_input(&json!({"sk/a+b==": "x"})).unwrap_err();
    assert!(e.contains("at /…: ") && !e.contains("sk~1"), "{e}");
    // A bidirectional override or an invisible character is elided too,
    // in a pointer and in the names listed.
    let e = typed
        .check_input(&json!({"\u{202e}gnp.exe": "x"}))
        .unwrap_err();
    assert!(e.contains("at /…: ") && !e.contains('\u{202e}'), "{e}");
    let e = c.check_input(&json!({"a\u{200b}b": 1})).unwrap_err();
    assert!(
        e.ends_with("(1 unexpected)") && !e.contains('\u{200b}'),
        "{e}"
    );
    // propertyNames: the name is the value that failed, never shown.
    let e = c
        .check_input(&json!({"a": {"sk-secret-name": 1}}))
        .unwrap_err();
    assert!(!e.contains("sk-secret"), "{e}");
    assert!(e.contains("propertyNames"), "{e}");
}

/// jsonschema quotes the part of a schema it refuses whole: a tool's
/// 1 MiB schema is not quoted whole in the error.
#[test]
fn an_invalid_schema_is_not_quoted_whole() {
    let long = "A".repeat(1 << 20);
    let e = Contract::new(&json!({"minLength": long}), None)
        .err()
        .unwrap();
    assert!(
        e.starts_with("its input schema is not a valid JSON Schema: "),
        "{e}"
    );
    assert!(e.len() < 1000, "{} bytes", e.len());
    let e = Contract::new(&json!({"minLength": "\u{1b}[2J"}), None)
        .err()
        .unwrap();
    assert!(!e.contains('\u{1b}'), "{e}");
}

#[test]
fn a_long_pointer_is_shortened_to_whole_segments() {
    let key = format!("sk-{}", "s".repeat(250));
    let c = contract(
        json!({"type": "object", "additionalProperties": {"type": "object",
               "additionalProperties": {"type": "integer"}}}),
        None,
    );
    let e = c
        .check_input(&json!({"first": {key.clone(): "x"}}))
        .unwrap_err();
    assert!(
        e.starts_with("input does not match the tool's input schema: at /first/…: "),
        "{e}"
    );
    assert!(!e.contains("sk-"), "{e}");
}

#[test]
fn a_check_that_would_cost_too_much_is_refused_before_it_runs() {
    // 999 evaluations per value is within the bound; 1 MiB of values
    // would be half a billion of them.
    let all: Vec<Value> = (0..998).map(|i| json!({"minimum": -i})).collect();
    let c = contract(json!({"items": {"allOf": all}}), None);
    let zeros = Value::Array(vec![json!(0); 20_000]);
    let started = std::time::Instant::now();
    let e = c.check_input(&zeros).unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_millis(100));
    assert!(
        e.contains("at /: the input is too large for the tool's schema: 20001 values"),
        "{e}"
    );
    // A pattern on a megabyte of strings, likewise.
    let c = contract(json!({"type": "string", "pattern": "a[ab]{100}c"}), None);
    let e = c
        .check_input(&Value::String("ab".repeat(200_000)))
        .unwrap_err();
    assert!(e.contains("400000 bytes of strings"), "{e}");
    // Errors past the listed ones are counted up to a point.
    let c = contract(json!({"items": {"type": "string"}}), None);
    let e = c
        .check_input(&Value::Array(vec![json!(1); 5000]))
        .unwrap_err();
    assert!(e.ends_with("and over 1000 more"), "{e}");
}

#[test]
fn formats_and_unique_items_are_checked_within_bounds() {
    // A draft-7 schema asserts its formats: `regex` is parsed (its
    // parser is quadratic in named groups) only up to 4 KiB.
    let c = contract(
        json!({"$schema": "http://json-schema.org/draft-07/schema#",
               "type": "string", "format": "regex"}),
        None,
    );
    assert!(c.check_input(&json!("^(?<a>x)\\k<a>$")).is_ok());
    assert!(c.check_input(&json!("(unclosed")).is_err());
    let groups: String = (0..1000).map(|i| format!("(?<g{i}>)")).collect();
    let started = std::time::Instant::now();
    let e = c.check_input(&Value::String(groups)).unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_millis(100));
    assert!(e.contains("regex"), "{e}");
    // A format scans strings: it counts as a pattern.
    let e = c
        .check_input(&Value::String("a".repeat(300_000)))
        .unwrap_err();
    assert!(e.contains("300000 bytes of strings"), "{e}");
    // uniqueItems compares pairs of items at worst (colliding hashes:
    // every array of arrays hashes alike): bounded.
    let c = contract(json!({"type": "array", "uniqueItems": true}), None);
    let per_value = c.input.bound.per_value;
    let many = Value::Array((0..12_000).map(|i| json!(i)).collect());
    let e = c.check_input(&many).unwrap_err();
    let steps = 12_000 * 12_001 * per_value;
    assert!(e.contains(&format!("{steps} steps at worst")), "{e}");
    let fine = Value::Array((0..3_000).map(|i| json!(i)).collect());
    assert!(c.check_input(&fine).is_ok());
    // Applied fifty times over (an allOf of $refs), a regex is parsed
    // within one budget per check: past it, the format fails.
    let refs: Vec<Value> = (0..50).map(|_| json!({"$ref": "#/$defs/r"})).collect();
    let c = contract(
        json!({"$schema": "http://json-schema.org/draft-07/schema#",
               "$defs": {"r": {"type": "string", "format": "regex"}},
               "allOf": refs}),
        None,
    );
    let group: String = (0..400).map(|i| format!("(?<g{i}>)")).collect();
    assert!(group.len() < 4096);
    assert!(c.check_input(&Value::String(group[..63].into())).is_ok());
    let e = c.check_input(&Value::String(group)).unwrap_err();
    assert!(e.contains("regex"), "{e}");
}

/// jsonschema gathers every problem before handing out the first: a
/// large value that is wrong everywhere (here 200,000 of them) has
/// only its first named, not millions gathered.
#[test]
fn a_large_value_has_only_its_first_problem_named() {
    let c = contract(json!({"type": "array", "items": {"type": "string"}}), None);
    let many = Value::Array(vec![json!(1); 200_000]);
    let e = c.check_input(&many).unwrap_err();
    assert_eq!(
        e,
        "input does not match the tool's input schema: at /0: value is not of type \"string\" \
         (only the first problem is named for an input this large)"
    );
}

/// Under anyOf, each problem keeps a copy of the value where it was
/// found, all gathered first: an Optional list of 200,000 wrong items
/// (or a large object missing many names) has none named.
#[test]
fn problems_under_any_of_are_not_named_for_a_large_value() {
    let c = contract(
        json!({"anyOf": [{"type": "array", "items": {"type": "string"}},
                         {"type": "null"}]}),
        None,
    );
    let e = c
        .check_input(&Value::Array(vec![json!(1); 200_000]))
        .unwrap_err();
    assert_eq!(
        e,
        "input does not match the tool's input schema: at /: the input does not match the \
         schema (its problems are not named for an input this large: gathering them could \
         copy it many times over)"
    );
    // A small one still has them named.
    let e = c.check_input(&json!([1])).unwrap_err();
    assert!(e.contains("at /"), "{e}");
    assert!(!e.contains("not named"), "{e}");
}

#[test]
fn at_most_three_problems_are_listed() {
    let c = contract(json!({"type": "array", "items": {"type": "string"}}), None);
    let e = c.check_input(&json!([1, 2, 3, 4, 5, 6])).unwrap_err();
    assert_eq!(e.matches("at /").count(), SHOWN, "{e}");
    assert!(e.ends_with("and 3 more"), "{e}");
}

#[test]
fn output_is_checked_only_when_a_schema_is_declared() {
    let free = contract(json!({}), None);
    assert!(free.check_output("[1]").is_ok());
    let c = contract(
        json!({}),
        Some(json!({"type": "object", "required": ["ok"]})),
    );
    assert!(c.check_output(r#"{"ok": true}"#).is_ok());
    let e = c.check_output("[1]").unwrap_err();
    assert!(
        e.starts_with("the tool's output does not match its output schema"),
        "{e}"
    );
}

#[test]
fn a_schema_cannot_reach_outside_itself_or_backtrack() {
    // No retrieval: a remote or file reference does not compile.
    for r in ["https://example.com/s.json", "file:///etc/passwd"] {
        let e = Contract::new(&json!({"$ref": r}), None).unwrap_err();
        assert!(
            e.starts_with("its input schema is refused: its $ref"),
            "{e}"
        );
    }
    // A pattern that backtracks exponentially elsewhere is linear here.
    let c = contract(json!({"type": "string", "pattern": "^(a+)+$"}), None);
    let hostile = format!("{}!", "a".repeat(100_000));
    let started = std::time::Instant::now();
    assert!(c.check_input(&Value::String(hostile)).is_err());
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

#[test]
fn a_schema_that_could_cost_exponential_work_is_refused_at_compile() {
    // 5 levels of a 10-way oneOf, each branch a $ref to the next:
    // 10^5 evaluations for one string.
    let mut defs = serde_json::Map::new();
    for i in 0..5 {
        let next = json!({"$ref": format!("#/$defs/a{}", i + 1)});
        defs.insert(format!("a{i}"), json!({"oneOf": vec![next; 10]}));
    }
    defs.insert("a5".into(), json!({"type": "string"}));
    let hostile = json!({"$defs": defs, "$ref": "#/$defs/a0"});
    let started = std::time::Instant::now();
    let e = Contract::new(&json!({}), Some(&hostile)).unwrap_err();
    assert!(
        e.starts_with("its output schema is refused: it could make the host evaluate over"),
        "{e}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
}

#[test]
fn schemars_integer_formats_become_ranges() {
    let mut s = json!({
        "type": "object",
        "properties": {
            "count": {"type": "integer", "format": "uint", "minimum": 1},
            "port": {"type": "integer", "format": "uint16"},
            "list": {"type": "array", "items": {"type": "integer", "format": "int8"}},
            "when": {"type": "string", "format": "date-time"},
            "n": {"type": "integer", "format": "int32"},
            "maybe": {"type": ["integer", "null"], "format": "uint32"},
            "format": {"type": "string", "const": {"type": "integer", "format": "uint"}}
        }
    });
    standard_formats(&mut s);
    let p = &s["properties"];
    assert_eq!(p["count"], json!({"type": "integer", "minimum": 1}));
    assert_eq!(
        p["port"],
        json!({"type": "integer", "minimum": 0, "maximum": 65535})
    );
    assert_eq!(
        p["list"]["items"],
        json!({"type": "integer", "minimum": -128, "maximum": 127})
    );
    assert_eq!(p["when"]["format"], "date-time");
    assert_eq!(p["n"]["format"], "int32");
    assert_eq!(
        p["maybe"],
        json!({"type": ["integer", "null"], "minimum": 0, "maximum": 4294967295u64})
    );
    // A property named `format` and a value in `const` are not formats.
    assert_eq!(p["format"]["const"]["format"], "uint");
}

/// Problems copy schema text too (a `not`'s schema, a `pattern`), and
/// keys (`additionalProperties`): a small value whose problems would copy
/// a large schema part, or a large key, many times has none named.
#[test]
fn problems_that_would_copy_much_are_not_named() {
    let big = "a".repeat(200_000);
    let c = contract(
        json!({"type": "array", "items": {"not": {"description": big}}}),
        None,
    );
    let e = c
        .check_input(&Value::Array(vec![json!(0); 200]))
        .unwrap_err();
    assert!(
        e.contains("gathering them could copy it many times over"),
        "{e}"
    );
    let c = contract(
        json!({"type": "array", "items": {"pattern": format!("^{big}")}}),
        None,
    );
    // Without anyOf/oneOf/not, the first is named (`validate` stops
    // there), its pattern cut.
    let e = c
        .check_input(&Value::Array(vec![json!(""); 200]))
        .unwrap_err();
    assert!(e.len() < 1_000, "{}", &e[..1_000]);
    assert!(
        e.contains("at /0: ")
            && e.ends_with("(only the first problem is named for an input this large)"),
        "{e}"
    );
    let all: Vec<Value> = (0..999)
        .map(|_| json!({"additionalProperties": false}))
        .collect();
    let c = contract(json!({"allOf": all}), None);
    let e = c
        .check_input(&json!({ "k".repeat(100_000): 0 }))
        .unwrap_err();
    assert!(
        e.ends_with("(only the first problem is named for an input this large)"),
        "{e}"
    );
    // Each missing name is copied per problem: a 900 KB name, 40,000 times.
    let c = contract(
        json!({"type": "array", "items": {"required": ["A".repeat(900_000)]}}),
        None,
    );
    let e = c
        .check_input(&Value::Array(vec![json!({}); 40_000]))
        .unwrap_err();
    assert!(
        e.ends_with("(only the first problem is named for an input this large)"),
        "{}",
        &e[..e.len().min(1_000)]
    );
    // A small value, a small schema: named.
    let e = c.check_input(&json!({"k": 0})).unwrap_err();
    assert!(e.contains("at /:") && !e.contains("gathering"), "{e}");
}
