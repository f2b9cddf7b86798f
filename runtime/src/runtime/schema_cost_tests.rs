//! The schema cost bound's tests.

use super::*;
use serde_json::{Map, json};

/// `n` levels of `k`-way `oneOf`, each branch a `$ref` to the next: k^n.
fn fanning(n: usize, k: usize) -> Value {
    let mut defs = Map::new();
    for i in 0..n {
        let next = json!({"$ref": format!("#/$defs/a{}", i + 1)});
        defs.insert(format!("a{i}"), json!({"oneOf": vec![next; k]}));
    }
    defs.insert(format!("a{n}"), json!({"type": "string"}));
    json!({"$defs": defs, "$ref": "#/$defs/a0"})
}

#[test]
fn exponential_in_place_nesting_is_refused() {
    // Each level: the node, two $ref nodes and twice the next level.
    assert_eq!(bound(&fanning(3, 2)).unwrap().per_value, 1 + 29);
    let e = bound(&fanning(4, 10)).unwrap_err();
    assert!(e.contains("at most 1000 are allowed"), "{e}");
}

#[test]
fn fan_out_through_children_is_counted_per_child() {
    // A value that could be a string, an array of values or an object
    // of values: linear, though it refers to itself twice.
    let json_value = json!({"$defs": {"v": {"anyOf": [
        {"type": "string"},
        {"type": "array", "items": {"$ref": "#/$defs/v"}},
        {"type": "object", "additionalProperties": {"$ref": "#/$defs/v"}}
    ]}}, "$ref": "#/$defs/v"});
    assert!(bound(&json_value).unwrap().per_value < 20);
    // A tree of nodes with children, and a struct of many fields.
    let tree = json!({"$defs": {"n": {"type": "object", "properties": {
        "name": {"type": "string"},
        "children": {"type": "array", "items": {"$ref": "#/$defs/n"}}}}},
        "$ref": "#/$defs/n"});
    assert!(bound(&tree).unwrap().per_value < 10);
    // But two schemas for the same child, at every level, double.
    let twice = json!({"$defs": {"v": {"type": "array", "items": {"$ref": "#/$defs/v"},
        "contains": {"$ref": "#/$defs/v"}}}, "$ref": "#/$defs/v"});
    assert!(bound(&twice).is_err());
}

#[test]
fn what_the_bound_cannot_follow_is_refused() {
    for (schema, says) in [
        (json!({"$ref": "#"}), "in-place $ref cycle"),
        (
            json!({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}),
            "cycle",
        ),
        (json!({"$ref": "#anchor"}), "not a JSON pointer"),
        (json!({"$ref": "#/$defs/missing"}), "not a JSON pointer"),
        (
            json!({"properties": {"a": {"$id": "x", "type": "string"}}}),
            "$id below its root",
        ),
        (json!({"$dynamicRef": "#meta"}), "$dynamicRef"),
        // serde_json would not decode it; the validator would.
        (
            json!({"$defs": {"e": {}, "%65": {}}, "$ref": "#/$defs/%65"}),
            "not a JSON pointer",
        ),
    ] {
        let e = bound(&schema).unwrap_err();
        assert!(e.contains(says), "{schema}: {e}");
    }
    // A property *named* $id is a name, not a keyword.
    assert!(bound(&json!({"properties": {"$id": {"type": "string"}}})).is_ok());
}

#[test]
fn deep_in_place_nesting_and_long_lists_count() {
    // A chain of 20 allOf links: cheap per value, but the validator
    // would recurse 20 deep at every depth of the instance.
    let mut defs = Map::new();
    for i in 0..20 {
        defs.insert(
            format!("a{i}"),
            json!({"allOf": [{"$ref": format!("#/$defs/a{}", i + 1)}]}),
        );
    }
    defs.insert("a20".into(), json!({"items": {"$ref": "#/$defs/a0"}}));
    let e = bound(&json!({"$defs": defs, "$ref": "#/$defs/a0"})).unwrap_err();
    assert!(e.contains("nest over 16 deep"), "{e}");
    // Each required name and enumerated value is a comparison.
    let names: Vec<String> = (0..2000).map(|i| format!("r{i}")).collect();
    let e = bound(&json!({"items": {"required": names}})).unwrap_err();
    assert!(e.contains("at most 1000 are allowed"), "{e}");
    // Scans per value: the object's keys by both patterns, "a"'s value by
    // one.
    let b = bound(&json!({"properties": {"a": {"pattern": "^a"}},
                          "patternProperties": {"^x": {}, "^y": {}}}))
    .unwrap();
    assert_eq!(b.patterns, 2);
    // One pattern reached 200 times at a value scans it 200 times.
    let refs: Vec<Value> = (0..200).map(|_| json!({"$ref": "#/$defs/p"})).collect();
    let b = bound(&json!({"$defs": {"p": {"pattern": "^a"}}, "allOf": refs})).unwrap();
    assert_eq!(b.patterns, 200);
}

/// `n` levels of `{"anyOf": [next], "unevaluatedProperties": false}`,
/// inline: each level checks the next twice (once to validate, once to
/// learn what it evaluated) and marks within it.
fn unevaluated_chain(n: usize) -> Value {
    let mut s = json!({"unevaluatedProperties": false});
    for _ in 0..n {
        s = json!({"anyOf": [s], "unevaluatedProperties": false});
    }
    s
}

#[test]
fn unevaluated_keywords_count_what_they_check_again() {
    // Nested in one another they multiply (the validator's work grows
    // ~2.6× a level): a few levels pass, more are refused, well before
    // the 16 levels the in-place limit allows.
    let costs: Vec<u64> = (0..4)
        .map(|n| bound(&unevaluated_chain(n)).unwrap().per_value)
        .collect();
    assert_eq!(costs, [3, 12, 36, 99], "{costs:?}");
    let e = bound(&json!({"type": "array", "items": unevaluated_chain(15)})).unwrap_err();
    assert!(e.contains("at most 1000 are allowed"), "{e}");
    // The common use: a base schema extended, nothing else let in.
    let extended = json!({
        "$defs": {"base": {"properties": {"a": {"type": "string"}}}},
        "allOf": [{"$ref": "#/$defs/base"}],
        "properties": {"b": {"type": "integer"}},
        "unevaluatedProperties": false
    });
    // The node (three times: it checks members again as it marks them),
    // allOf's branch and base, then both again.
    assert_eq!(bound(&extended).unwrap().per_value, 7);
    // The first item: the node's `prefixItems` schema and
    // `unevaluatedItems` (the node three times: 6), the branch's
    // `contains` (checked, checked again, and its node marked: 4).
    let items = json!({"prefixItems": [{}], "anyOf": [{"contains": {}}],
                       "unevaluatedItems": false});
    assert_eq!(bound(&items).unwrap().per_value, 10);
}

#[test]
fn a_closure_met_again_still_counts_its_depth() {
    // A chain of 112 `$ref` links reaching into the value at its end,
    // entered at every 14th link, deepest first: each piece is walked
    // within the limit, then met again from shallower places. The
    // validator would follow the whole chain at every level.
    let mut defs = Map::new();
    for i in 1..112 {
        defs.insert(
            format!("c{i}"),
            json!({"$ref": format!("#/$defs/c{}", i + 1)}),
        );
    }
    defs.insert("c112".into(), json!({"items": {"$ref": "#/$defs/c1"}}));
    let entries: Vec<Value> = (0..8)
        .map(|k| json!({"$ref": format!("#/$defs/c{}", 99 - 14 * k)}))
        .collect();
    let e = bound(&json!({"$defs": defs, "allOf": entries})).unwrap_err();
    assert!(e.contains("nest over 16 deep"), "{e}");
}

#[test]
fn content_keywords_count_as_scans() {
    let b = bound(&json!({"allOf": [{"contentMediaType": "application/json"},
                                    {"contentEncoding": "base64"}]}))
    .unwrap();
    assert_eq!(b.patterns, 2);
}

#[test]
fn a_wide_schema_is_bounded_quickly() {
    let props: Map<String, Value> = (0..9000).map(|i| (format!("p{i}"), json!(true))).collect();
    let started = std::time::Instant::now();
    let _ = bound(&json!({"properties": props, "anyOf": [{}]}));
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

#[test]
fn what_the_quick_unevaluated_check_repeats_is_counted() {
    // Each level's `if` is checked again for each part its `then`'s
    // dependentSchemas make (jsonschema's quicker check), the next level
    // inside `not: not`, out of its sight: ~k× a level.
    let mut level = json!({"type": "object"});
    for k in [31, 40, 52, 60] {
        let dependent: Map<String, Value> = (0..k)
            .map(|i| {
                (
                    format!("d{i}"),
                    json!({"properties": {format!("x{i}"): true}}),
                )
            })
            .collect();
        level = json!({"if": {"not": {"not": level}}, "then": {"dependentSchemas": dependent},
                       "unevaluatedProperties": false});
    }
    let e = bound(&json!({"type": "array", "items": level})).unwrap_err();
    assert!(e.contains("at most 1000 are allowed"), "{e}");
    // One level, as schemas use it: within the bound.
    let one = json!({"if": {"properties": {"kind": {"const": "a"}}},
                     "then": {"properties": {"a": {}}}, "unevaluatedProperties": false});
    assert!(bound(&one).unwrap().per_value < 200);
}

#[test]
fn dependency_keywords_weigh_what_they_look_up_and_require() {
    let names: Vec<String> = (0..2000).map(|i| format!("n{i}")).collect();
    let e = bound(&json!({"items": {"dependencies": {"a": names}}})).unwrap_err();
    assert!(e.contains("at most 1000 are allowed"), "{e}");
    let keys: Map<String, Value> = (0..2000).map(|i| (format!("k{i}"), json!([]))).collect();
    let e = bound(&json!({"items": {"dependentRequired": keys}})).unwrap_err();
    assert!(e.contains("at most 1000 are allowed"), "{e}");
}

#[test]
fn a_ref_reaches_schemas_only() {
    for (schema, says) in [
        (
            json!({"allOf": [{"$ref": "#/default"}], "default": {"pattern": "a"}}),
            "points into 'default'",
        ),
        (
            json!({"$ref": "#/$defs", "$defs": {"uniqueItems": true}}),
            "points into '$defs'",
        ),
        (
            json!({"$ref": "#/$defs/a/enum/0", "$defs": {"a": {"enum": [{}]}}}),
            "points into 'enum'",
        ),
    ] {
        let e = bound(&schema).unwrap_err();
        assert!(e.contains(says), "{schema}: {e}");
    }
    for fine in [
        json!({"$ref": "#/$defs/a~1b", "$defs": {"a/b": {}}}),
        json!({"$ref": "#/properties/default", "properties": {"default": {}}}),
        json!({"$ref": "#/items/0", "items": [{}]}),
        json!({"$ref": "#/items/properties/x", "items": {"properties": {"x": {}}}}),
    ] {
        assert!(bound(&fine).is_ok(), "{fine}");
    }
    // A uniqueItems reached only through a $ref still counts.
    let b = bound(&json!({"$ref": "#/$defs/u", "$defs": {"u": {"uniqueItems": true}}})).unwrap();
    assert!(b.unique);
}

#[test]
fn what_marking_checks_again_of_the_children_is_counted() {
    // Each level's `contains` is checked again on the items while the
    // validator learns which were evaluated: 2^40 for 41 levels, inline.
    let mut contains = json!({});
    for _ in 0..40 {
        contains = json!({"contains": contains, "unevaluatedItems": false});
    }
    let e = bound(&contains).unwrap_err();
    assert!(e.contains("at most 1000 are allowed"), "{e}");
    // And an `unevaluatedProperties` schema on the members it marks.
    let mut members = json!(false);
    for _ in 0..40 {
        members = json!({"anyOf": [{"properties": {"zzz": true}}],
                         "unevaluatedProperties": members});
    }
    let e = bound(&members).unwrap_err();
    assert!(e.contains("at most 1000 are allowed"), "{e}");
}

#[test]
fn a_ref_may_go_through_another_container() {
    // OpenAPI's `components/schemas`, walked as schemas are.
    let openapi = json!({"$ref": "#/components/schemas/Pet",
                         "components": {"schemas": {"Pet": {"type": "object"}}}});
    assert!(bound(&openapi).is_ok());
    let b = bound(&json!({"anyOf": [{}], "$ref": "#/x/y"})).unwrap_err();
    assert!(b.contains("not a JSON pointer"), "{b}");
}
