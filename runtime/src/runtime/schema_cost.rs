//! How much work a tool's schema can make the host do per checked value.
//!
//! A JSON Schema validator evaluates every branch of `anyOf`, `oneOf` and
//! `allOf`, and follows `$ref`, without memoizing. A schema a tool wrote
//! could nest those so that one small input costs the host 2^40 checks:
//! `{"$defs": {"a0": {"oneOf": [{"$ref": "#/$defs/a1"}, {"$ref":
//! "#/$defs/a1"}]}, …}}` is a few hundred bytes. Validation runs in the
//! host, outside the tool's deadline, so such a schema is refused when the
//! contract is compiled ([`bound`]), not met on a call.
//!
//! The bound counts schema evaluations at one value of the instance, at
//! every depth the input can reach (serde_json parses at most
//! [`DEPTH`] levels): the in-place applicators (`allOf`, `anyOf`, `oneOf`,
//! `not`, `if`/`then`/`else`, `$ref`, dependent schemas) multiply at one
//! value; the child applicators (`properties`, `items`, …) move to a child
//! value, where only the schemas applying to the same child add up. It is
//! an over-estimate (every branch is assumed to run), so the limit,
//! [`MOST_PER_VALUE`], is generous; the bundled tools need well under 20.
//! The whole instance then costs at most its size times the bound.
//!
//! What the bound cannot follow is refused too: a `$ref` that is not a
//! JSON pointer into the schema, `$dynamicRef`/`$recursiveRef`, a nested
//! `$id` (which would change what `#` means below it), and an in-place
//! cycle (`{"$ref": "#"}`).

use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

/// The most schema evaluations one value of an instance may cost.
pub(crate) const MOST_PER_VALUE: u64 = 1_000;
/// The deepest an instance can be (serde_json's recursion limit).
const DEPTH: usize = 128;
/// The most schema values a schema may have.
const MOST_NODES: usize = 10_000;
/// The most steps the bound may take (keys times closure sizes).
const MOST_WORK: u64 = 1_000_000;

/// How deep in-place applicators may nest at one value: the validator
/// recurses once for each, at each depth of the instance, on a worker
/// thread's stack.
const MOST_IN_PLACE: usize = 16;

/// What a schema may cost, per value and per string byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bound {
    /// Schema evaluations at one value of the instance, at most.
    pub(crate) per_value: u64,
    /// Regular expressions in the schema (`pattern`, `patternProperties`)
    /// and formats (`format`, which a check scans and some parse): each
    /// may scan every string and key of the instance.
    pub(crate) patterns: u64,
    /// Whether the schema says `uniqueItems`: an array's check then
    /// compares its items pairwise at worst (when their hashes collide).
    pub(crate) unique: bool,
}

/// The bound for `schema` (see the module doc), or why it is refused.
pub(crate) fn bound(schema: &Value) -> Result<Bound, String> {
    let mut nodes = 0;
    let mut patterns = 0;
    let mut unique = false;
    check_ids(schema, true, &mut nodes, &mut (&mut patterns, &mut unique))?;
    let mut cost = Cost {
        root: schema,
        closures: HashMap::new(),
        visiting: Vec::new(),
        at: HashMap::new(),
        work: 0,
    };
    let mut most = 0;
    for depth in 0..=DEPTH {
        let here = cost.at(schema, depth)?;
        if here == 0 {
            // Nothing applies this deep, so nothing deeper either.
            break;
        }
        most = most.max(here);
    }
    Ok(Bound {
        per_value: most,
        patterns,
        unique,
    })
}

fn too_costly(n: u64) -> String {
    format!(
        "it could make the host evaluate {}{n} schemas per value (at most {MOST_PER_VALUE} are \
         allowed): its anyOf/oneOf/allOf/$ref nest too deep",
        if n >= MOST_PER_VALUE { "over " } else { "" }
    )
}

/// Refuses a nested `$id` and counts schema objects, walking keyword
/// positions only (a property named `$id` is a name, and `const`, `enum`,
/// `default` and `examples` hold values).
fn check_ids(
    schema: &Value,
    root: bool,
    nodes: &mut usize,
    found: &mut (&mut u64, &mut bool),
) -> Result<(), String> {
    *nodes += 1;
    let Value::Object(map) = schema else {
        return Ok(());
    };
    let (patterns, unique) = found;
    for scans in ["pattern", "format"] {
        if map.get(scans).is_some_and(Value::is_string) {
            **patterns += 1;
        }
    }
    if let Some(Value::Object(p)) = map.get("patternProperties") {
        **patterns += p.len() as u64;
    }
    **unique |= map.get("uniqueItems") == Some(&Value::Bool(true));
    if *nodes > MOST_NODES {
        return Err(format!("it has over {MOST_NODES} schema objects"));
    }
    if !root && (map.contains_key("$id") || map.contains_key("id")) {
        return Err("it sets $id below its root (not supported)".into());
    }
    for (key, value) in map {
        match key.as_str() {
            "const" | "enum" | "default" | "examples" => {}
            "properties" | "patternProperties" | "$defs" | "definitions" | "dependentSchemas"
            | "dependencies" => {
                if let Value::Object(named) = value {
                    for sub in named.values() {
                        check_ids(sub, false, nodes, found)?;
                    }
                }
            }
            _ => match value {
                Value::Object(_) => check_ids(value, false, nodes, found)?,
                Value::Array(items) => {
                    for sub in items {
                        check_ids(sub, false, nodes, found)?;
                    }
                }
                _ => {}
            },
        }
    }
    Ok(())
}

/// A schema node, by address (nodes live as long as the schema).
fn id(v: &Value) -> usize {
    std::ptr::from_ref(v) as usize
}

/// Where a child value sits, as the child applicators see it.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Child<'a> {
    Property(&'a str),
    OtherProperty,
    PropertyName,
    Item(usize),
    OtherItem,
}

struct Cost<'a> {
    root: &'a Value,
    /// Each node's in-place closure: the nodes evaluated at the same value,
    /// with how many times.
    closures: HashMap<usize, Rc<Vec<(&'a Value, u64)>>>,
    visiting: Vec<usize>,
    at: HashMap<(usize, usize), u64>,
    work: u64,
}

impl<'a> Cost<'a> {
    /// Evaluations at one value `depth` levels below the value `s` applies to.
    fn at(&mut self, s: &'a Value, depth: usize) -> Result<u64, String> {
        if let Some(&n) = self.at.get(&(id(s), depth)) {
            return Ok(n);
        }
        let closure = self.closure(s)?;
        let n = if depth == 0 {
            weighed(&closure)
        } else {
            let mut keys: HashSet<Child<'a>> =
                HashSet::from([Child::OtherProperty, Child::PropertyName, Child::OtherItem]);
            for (node, _) in closure.iter() {
                child_keys(node, &mut keys);
            }
            self.work += (keys.len() * closure.len()) as u64;
            if self.work > MOST_WORK {
                return Err("it is too complex to bound (over a million steps)".into());
            }
            let mut most = 0u64;
            for key in &keys {
                let mut sum = 0u64;
                for (node, times) in closure.iter() {
                    for t in applies(node, key) {
                        let below = self.at(t, depth - 1)?;
                        sum = sum.saturating_add(times.saturating_mul(below));
                    }
                }
                most = most.max(sum);
            }
            most
        };
        if n > MOST_PER_VALUE {
            return Err(too_costly(n));
        }
        self.at.insert((id(s), depth), n);
        Ok(n)
    }

    fn closure(&mut self, s: &'a Value) -> Result<Rc<Vec<(&'a Value, u64)>>, String> {
        if let Some(c) = self.closures.get(&id(s)) {
            return Ok(c.clone());
        }
        if self.visiting.contains(&id(s)) {
            return Err(
                "it refers to itself without reaching into the value (an in-place $ref cycle)"
                    .into(),
            );
        }
        if self.visiting.len() >= MOST_IN_PLACE {
            return Err(format!(
                "its in-place applicators (allOf/anyOf/oneOf/not/if/$ref) nest over {MOST_IN_PLACE} deep"
            ));
        }
        self.visiting.push(id(s));
        let mut all: Vec<(&'a Value, u64)> = vec![(s, 1)];
        let mut index: HashMap<usize, usize> = HashMap::from([(id(s), 0)]);
        for t in self.in_place(s)? {
            for &(node, times) in self.closure(t)?.iter() {
                match index.get(&id(node)) {
                    Some(&i) => all[i].1 = all[i].1.saturating_add(times),
                    None => {
                        index.insert(id(node), all.len());
                        all.push((node, times));
                    }
                }
            }
        }
        self.visiting.pop();
        let total = weighed(&all);
        if total > MOST_PER_VALUE {
            return Err(too_costly(total));
        }
        let all = Rc::new(all);
        self.closures.insert(id(s), all.clone());
        Ok(all)
    }

    /// The schemas `s` applies at the value it applies to.
    fn in_place(&self, s: &'a Value) -> Result<Vec<&'a Value>, String> {
        let Value::Object(map) = s else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for key in ["allOf", "anyOf", "oneOf"] {
            if let Some(Value::Array(items)) = map.get(key) {
                out.extend(items.iter());
            }
        }
        for key in ["not", "if", "then", "else"] {
            out.extend(map.get(key));
        }
        for key in ["dependentSchemas", "dependencies"] {
            if let Some(Value::Object(named)) = map.get(key) {
                out.extend(named.values().filter(|v| v.is_object() || v.is_boolean()));
            }
        }
        if map.contains_key("$dynamicRef") || map.contains_key("$recursiveRef") {
            return Err("it uses $dynamicRef or $recursiveRef (not supported)".into());
        }
        if let Some(r) = map.get("$ref") {
            out.push(self.resolve(r)?);
        }
        Ok(out)
    }

    fn resolve(&self, r: &Value) -> Result<&'a Value, String> {
        // A percent-encoded pointer is decoded by the validator, not by
        // serde_json: refused, so both always resolve the same node.
        let target = r
            .as_str()
            .filter(|r| !r.contains('%'))
            .and_then(|r| r.strip_prefix('#'))
            .filter(|p| p.is_empty() || p.starts_with('/'))
            .and_then(|p| self.root.pointer(p));
        target.ok_or_else(|| {
            format!(
                "its $ref {} is not a JSON pointer into the schema",
                crate::policy::gate::cut(&r.to_string(), 80)
            )
        })
    }
}

/// Evaluations of a closure at its value: each node as many times as it is
/// reached, by its weight.
fn weighed(closure: &[(&Value, u64)]) -> u64 {
    closure.iter().fold(0u64, |n, (node, times)| {
        n.saturating_add(times.saturating_mul(weight(node)))
    })
}

/// What evaluating one schema node costs at a value: one, plus each name
/// it requires and each value it enumerates (compared one by one).
fn weight(s: &Value) -> u64 {
    let Value::Object(map) = s else { return 1 };
    let len = |key: &str| match map.get(key) {
        Some(Value::Array(items)) => items.len() as u64,
        _ => 0,
    };
    let dependent: u64 = match map.get("dependentRequired") {
        Some(Value::Object(d)) => d
            .values()
            .map(|v| v.as_array().map_or(0, |a| a.len() as u64))
            .sum(),
        _ => 0,
    };
    1 + len("required") + len("enum") + dependent
}

/// Adds the child positions `s` names to `keys`.
fn child_keys<'a>(s: &'a Value, keys: &mut HashSet<Child<'a>>) {
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
fn applies<'a>(s: &'a Value, key: &Child<'_>) -> Vec<&'a Value> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        let b = bound(&json!({"properties": {"a": {"pattern": "^a"}},
                              "patternProperties": {"^x": {}, "^y": {}}}))
        .unwrap();
        assert_eq!(b.patterns, 3);
    }

    #[test]
    fn a_wide_schema_is_bounded_quickly() {
        let props: Map<String, Value> = (0..9000).map(|i| (format!("p{i}"), json!(true))).collect();
        let started = std::time::Instant::now();
        let _ = bound(&json!({"properties": props, "anyOf": [{}]}));
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }
}
