//! Where a schema's child applicators (`properties`, `items`, …) apply:
//! the child positions of a value, and the schemas each position gets
//! ([`super::schema_cost`] counts the cost there).

use serde_json::{Map, Value};
use std::collections::HashSet;

/// Where a child value sits, as the child applicators see it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) enum Child<'a> {
    Property(&'a str),
    OtherProperty,
    PropertyName,
    Item(usize),
    OtherItem,
}

/// Adds the child positions `s` names to `keys`.
pub(super) fn child_keys<'a>(s: &'a Value, keys: &mut HashSet<Child<'a>>) {
    let Value::Object(map) = s else { return };
    if let Some(Value::Object(props)) = map.get("properties") {
        keys.extend(props.keys().map(|name| Child::Property(name)));
    }
    for key in ["prefixItems", "items"] {
        if let Some(Value::Array(items)) = map.get(key) {
            keys.extend((0..items.len()).map(Child::Item));
        }
    }
}

/// The schemas `s` applies to a child value at `key`.
pub(super) fn applies<'a>(s: &'a Value, key: &Child<'_>) -> Vec<&'a Value> {
    let Value::Object(map) = s else {
        return Vec::new();
    };
    let mut out: Vec<&'a Value> = Vec::new();
    let patterns = |out: &mut Vec<&'a Value>| {
        if let Some(Value::Object(p)) = map.get("patternProperties") {
            out.extend(p.values());
        }
    };
    match key {
        Child::Property(name) => {
            match map.get("properties").and_then(|p| p.get(*name)) {
                Some(sub) => out.push(sub),
                None => out.extend(map.get("additionalProperties")),
            }
            patterns(&mut out);
            out.extend(map.get("unevaluatedProperties"));
        }
        Child::OtherProperty => {
            out.extend(map.get("additionalProperties"));
            patterns(&mut out);
            out.extend(map.get("unevaluatedProperties"));
        }
        Child::PropertyName => out.extend(map.get("propertyNames")),
        Child::Item(i) => {
            let positional = ["prefixItems", "items"].iter().find_map(|k| {
                map.get(*k)
                    .and_then(Value::as_array)
                    .and_then(|a| a.get(*i))
            });
            match positional {
                Some(sub) => out.push(sub),
                None => rest_items(map, &mut out),
            }
            out.extend(map.get("contains"));
            out.extend(map.get("unevaluatedItems"));
        }
        Child::OtherItem => {
            rest_items(map, &mut out);
            out.extend(map.get("contains"));
            out.extend(map.get("unevaluatedItems"));
        }
    }
    out
}

/// The schemas for items past any positional ones.
fn rest_items<'a>(map: &'a Map<String, Value>, out: &mut Vec<&'a Value>) {
    if let Some(items) = map.get("items").filter(|v| !v.is_array()) {
        out.push(items);
    }
    out.extend(map.get("additionalItems"));
}
