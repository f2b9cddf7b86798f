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
//! `unevaluatedProperties` and `unevaluatedItems` cost more than their
//! place: to learn what the schema's other keywords evaluated, the
//! validator checks each `allOf`/`anyOf`/`oneOf` branch and `if` again,
//! whole, and looks within each in-place branch, nested ones too
//! ([`Cost::marking`]); nested in one another they multiply, which the
//! bound then counts.
//!
//! What the bound cannot follow is refused too: a `$ref` that is not a
//! JSON pointer into the schema, `$dynamicRef`/`$recursiveRef`, a nested
//! `$id` (which would change what `#` means below it), and an in-place
//! cycle (`{"$ref": "#"}`).

use super::schema_children::{Child, applies, child_keys};
use serde_json::Value;
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
    /// Whether the schema says `anyOf`, `oneOf` or `not`: each problem
    /// found under one keeps a copy of the value where it was found.
    pub(crate) branches: bool,
    /// The most schema text one problem copies (a `not`'s schema, a
    /// `pattern` string), in bytes.
    pub(crate) copy: u64,
}

/// The bound for `schema` (see the module doc), or why it is refused.
pub(crate) fn bound(schema: &Value) -> Result<Bound, String> {
    let mut nodes = 0;
    check_ids(schema, true, &mut nodes)?;
    let mut cost = Cost {
        root: schema,
        closures: HashMap::new(),
        marks: HashMap::new(),
        visiting: Vec::new(),
        at: HashMap::new(),
        work: 0,
        unique: false,
        branches: false,
        copy: 0,
    };
    let mut most = Per::default();
    for depth in 0..=DEPTH {
        let here = cost.at(schema, depth)?;
        if here.evaluations == 0 {
            // Nothing applies this deep, so nothing deeper either.
            break;
        }
        most.evaluations = most.evaluations.max(here.evaluations);
        most.scans = most.scans.max(here.scans);
    }
    Ok(Bound {
        per_value: most.evaluations,
        patterns: most.scans,
        unique: cost.unique,
        branches: cost.branches,
        copy: cost.copy,
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
fn check_ids(schema: &Value, root: bool, nodes: &mut usize) -> Result<(), String> {
    *nodes += 1;
    let Value::Object(map) = schema else {
        return Ok(());
    };
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
                        check_ids(sub, false, nodes)?;
                    }
                }
            }
            _ => match value {
                Value::Object(_) => check_ids(value, false, nodes)?,
                Value::Array(items) => {
                    for sub in items {
                        check_ids(sub, false, nodes)?;
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

/// Schema nodes evaluated at one value, each with how many times.
type Nodes<'a> = Rc<Vec<(&'a Value, u64)>>;

struct Cost<'a> {
    root: &'a Value,
    /// Each node's in-place closure: the nodes evaluated at the same value,
    /// with how many times; and how deep its in-place applicators nest
    /// (1: none).
    closures: HashMap<usize, (Nodes<'a>, usize)>,
    /// What marking the properties or items a node's in-place branches
    /// evaluated costs at its value ([`Cost::marking`]).
    marks: HashMap<usize, Nodes<'a>>,
    visiting: Vec<usize>,
    at: HashMap<(usize, usize), Per>,
    work: u64,
    /// Whether a node the check reaches says `uniqueItems`.
    unique: bool,
    /// Whether a node the check reaches says `anyOf`, `oneOf` or `not`.
    branches: bool,
    /// The most schema text one problem copies: a `not`'s schema, a
    /// `pattern`.
    copy: u64,
}

/// What a schema costs at one value: evaluations, and string scans
/// (`pattern`, `format`, `contentMediaType`, `contentEncoding`, each of
/// `patternProperties` over the keys), each as many times as its node is
/// evaluated there.
#[derive(Debug, Clone, Copy, Default)]
struct Per {
    evaluations: u64,
    scans: u64,
}

impl<'a> Cost<'a> {
    /// Evaluations and scans at one value `depth` levels below the value
    /// `s` applies to.
    fn at(&mut self, s: &'a Value, depth: usize) -> Result<Per, String> {
        if let Some(&n) = self.at.get(&(id(s), depth)) {
            return Ok(n);
        }
        let closure = self.closure(s)?;
        let n = if depth == 0 {
            Per {
                evaluations: weighed(&closure),
                scans: closure.iter().fold(0u64, |n, (node, times)| {
                    n.saturating_add(times.saturating_mul(scans(node)))
                }),
            }
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
            let mut most = Per::default();
            for key in &keys {
                let mut sum = Per::default();
                for (node, times) in closure.iter() {
                    for t in applies(node, key) {
                        let below = self.at(t, depth - 1)?;
                        let add =
                            |sum: u64, below: u64| sum.saturating_add(times.saturating_mul(below));
                        sum.evaluations = add(sum.evaluations, below.evaluations);
                        sum.scans = add(sum.scans, below.scans);
                    }
                }
                most.evaluations = most.evaluations.max(sum.evaluations);
                most.scans = most.scans.max(sum.scans);
            }
            most
        };
        if n.evaluations > MOST_PER_VALUE {
            return Err(too_costly(n.evaluations));
        }
        self.at.insert((id(s), depth), n);
        Ok(n)
    }

    fn closure(&mut self, s: &'a Value) -> Result<Nodes<'a>, String> {
        Ok(self.closure_and_height(s)?.0)
    }

    /// `s`'s closure, and how deep in-place applicators nest below it. A
    /// closure met again is not walked again, but its height still counts
    /// where it is met.
    fn closure_and_height(&mut self, s: &'a Value) -> Result<(Nodes<'a>, usize), String> {
        let too_deep = || {
            format!(
                "its in-place applicators (allOf/anyOf/oneOf/not/if/$ref) nest over {MOST_IN_PLACE} deep"
            )
        };
        if let Some((c, height)) = self.closures.get(&id(s)) {
            if self.visiting.len() + height > MOST_IN_PLACE {
                return Err(too_deep());
            }
            return Ok((c.clone(), *height));
        }
        if self.visiting.contains(&id(s)) {
            return Err(
                "it refers to itself without reaching into the value (an in-place $ref cycle)"
                    .into(),
            );
        }
        if self.visiting.len() >= MOST_IN_PLACE {
            return Err(too_deep());
        }
        self.unique |= s.get("uniqueItems") == Some(&Value::Bool(true));
        self.branches |= ["anyOf", "oneOf", "not"]
            .iter()
            .any(|k| s.get(*k).is_some());
        self.copy = self.copy.max(copied(s));
        self.visiting.push(id(s));
        let mut all = Gathered::new(s);
        let mut height = 1;
        for t in self.in_place(s)? {
            let (below, h) = self.closure_and_height(t)?;
            all.add(&below, 1);
            height = height.max(h + 1);
        }
        self.visiting.pop();
        if unevaluated(s) {
            // Learning what was evaluated, the validator checks again each
            // unmarked child against the `contains` and `unevaluated*` of
            // this node and of each node it marks within (twice, counted
            // as the node three times in all).
            let children: Vec<(&'a Value, u64)> = (all.0.iter())
                .filter(|(n, _)| n.get("contains").is_some() || unevaluated(n))
                .map(|(n, _)| (*n, 2))
                .collect();
            all.add(&children, 1);
            let marking = self.marking(s)?;
            all.add(&marking, 1);
            // And jsonschema's quicker check: what each branch may evaluate
            // as parts (at most 64), each part checking again each `if`
            // it depends on.
            let ifs: Vec<&'a Value> = (all.0.iter()).filter_map(|(n, _)| n.get("if")).collect();
            for condition in ifs {
                let again = self.closure(condition)?;
                all.add(&again, PARTS);
            }
        }
        let all = all.0;
        let total = weighed(&all);
        if total > MOST_PER_VALUE {
            return Err(too_costly(total));
        }
        let all = Rc::new(all);
        self.closures.insert(id(s), (all.clone(), height));
        Ok((all, height))
    }

    /// What the validator does at a value to learn which properties or
    /// items `s`'s in-place branches evaluated, for an
    /// `unevaluatedProperties` or `unevaluatedItems` (jsonschema's
    /// `mark_evaluated_*`): each `allOf`/`anyOf`/`oneOf` branch and `if`
    /// checked again, whole (its closure), and the same marking within
    /// every in-place branch, where a nested `unevaluated*` checks the
    /// values again (counted as its node once more). Only called for a node
    /// whose closure is known, so its in-place branches hold no cycle and
    /// nest at most [`MOST_IN_PLACE`] deep.
    fn marking(&mut self, s: &'a Value) -> Result<Nodes<'a>, String> {
        if let Some(m) = self.marks.get(&id(s)) {
            return Ok(m.clone());
        }
        let mut all = Gathered(Vec::new(), HashMap::new());
        if let Value::Object(map) = s {
            let mut checked: Vec<&'a Value> = Vec::new();
            for key in ["allOf", "anyOf", "oneOf"] {
                if let Some(Value::Array(items)) = map.get(key) {
                    checked.extend(items.iter());
                }
            }
            checked.extend(map.get("if"));
            for t in checked {
                let again = self.closure(t)?;
                all.add(&again, 1);
            }
            for t in self.in_place(s)? {
                let within = self.marking(t)?;
                all.add(&within, 1);
                if unevaluated(t) {
                    all.add(&[(t, 1)], 1);
                }
            }
        }
        let total = weighed(&all.0);
        if total > MOST_PER_VALUE {
            return Err(too_costly(total));
        }
        let all = Rc::new(all.0);
        self.marks.insert(id(s), all.clone());
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
            .filter(|p| p.is_empty() || p.starts_with('/'));
        let shown = || crate::policy::gate::cut(&r.to_string(), 80).into_owned();
        let Some(pointer) = target else {
            return Err(format!(
                "its $ref {} is not a JSON pointer into the schema",
                shown()
            ));
        };
        if let Some(keyword) = outside_schemas(pointer) {
            return Err(format!(
                "its $ref {} points into '{keyword}', which holds no schema (expected a \
                 pointer through schema keywords: $defs, properties, allOf, items, …)",
                shown()
            ));
        }
        (self.root.pointer(pointer))
            .ok_or_else(|| format!("its $ref {} is not a JSON pointer into the schema", shown()))
    }
}

/// The most schema text one problem at `s` copies: a `not`'s schema (as a
/// tree of values, up to ~32 times its text), a `pattern`, a name it
/// requires (`required`, `dependentRequired`, `dependencies`).
fn copied(s: &Value) -> u64 {
    let Value::Object(map) = s else { return 0 };
    let not = map.get("not").map_or(0, |n| 32 * n.to_string().len());
    let pattern = map
        .get("pattern")
        .and_then(Value::as_str)
        .map_or(0, str::len);
    let longest = |names: Option<&Value>| {
        (names.and_then(Value::as_array).into_iter().flatten())
            .filter_map(Value::as_str)
            .map(str::len)
            .max()
            .unwrap_or(0)
    };
    let dependent = ["dependentRequired", "dependencies"]
        .iter()
        .filter_map(|k| map.get(*k).and_then(Value::as_object))
        .flat_map(|d| d.values())
        .map(|names| longest(Some(names)))
        .max()
        .unwrap_or(0);
    let required = longest(map.get("required"));
    [not, pattern, required, dependent]
        .into_iter()
        .max()
        .unwrap_or(0) as u64
}

/// The first keyword on `pointer`'s way that holds no schema (`default`,
/// `enum`, an unknown one): a schema there would be checked by the
/// validator, but not walked by [`check_ids`] (a nested `$id`).
fn outside_schemas(pointer: &str) -> Option<String> {
    let tokens: Vec<String> = (pointer.split('/').skip(1))
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect();
    let mut i = 0;
    while i < tokens.len() {
        let keyword = tokens[i].as_str();
        let step = match keyword {
            // A name or an index, then a schema.
            "$defs" | "definitions" | "properties" | "patternProperties" | "dependentSchemas"
            | "dependencies" | "allOf" | "anyOf" | "oneOf" | "prefixItems" => 2,
            // A schema, or (before 2020-12) a list of them.
            "items"
                if tokens
                    .get(i + 1)
                    .is_some_and(|t| t.parse::<usize>().is_ok()) =>
            {
                2
            }
            "items"
            | "not"
            | "if"
            | "then"
            | "else"
            | "additionalProperties"
            | "unevaluatedProperties"
            | "propertyNames"
            | "contains"
            | "additionalItems"
            | "unevaluatedItems"
            | "contentSchema" => 1,
            // Values, not schemas.
            "const" | "enum" | "default" | "examples" => return Some(keyword.to_owned()),
            // Another container (`components/schemas` of OpenAPI): walked
            // by `check_ids` as schemas are.
            _ => 1,
        };
        // `#/$defs` is the map of schemas, not one.
        if i + step > tokens.len() {
            return Some(crate::policy::gate::cut(keyword, 40).into_owned());
        }
        i += step;
    }
    None
}

/// The most parts jsonschema's quicker `unevaluatedProperties` check keeps
/// (its `MAX_PARTS`).
const PARTS: u64 = 64;

/// Whether `s` says `unevaluatedProperties` or `unevaluatedItems`.
fn unevaluated(s: &Value) -> bool {
    s.get("unevaluatedProperties").is_some() || s.get("unevaluatedItems").is_some()
}

/// Nodes gathered with how many times each is evaluated, in first-met
/// order.
struct Gathered<'a>(Vec<(&'a Value, u64)>, HashMap<usize, usize>);

impl<'a> Gathered<'a> {
    fn new(s: &'a Value) -> Self {
        Gathered(vec![(s, 1)], HashMap::from([(id(s), 0)]))
    }

    /// Adds `nodes`.
    /// Adds `nodes`, each evaluated `times` over.
    fn add(&mut self, nodes: &[(&'a Value, u64)], times: u64) {
        for &(node, n) in nodes {
            let n = n.saturating_mul(times);
            match self.1.get(&id(node)) {
                Some(&i) => self.0[i].1 = self.0[i].1.saturating_add(n),
                None => {
                    self.1.insert(id(node), self.0.len());
                    self.0.push((node, n));
                }
            }
        }
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
/// it requires and each value it enumerates (compared one by one), and each
/// name a dependency keyword looks up and each it then requires (every
/// draft's `dependencies` included: jsonschema compiles it in all).
fn weight(s: &Value) -> u64 {
    let Value::Object(map) = s else { return 1 };
    let len = |key: &str| match map.get(key) {
        Some(Value::Array(items)) => items.len() as u64,
        _ => 0,
    };
    let dependent: u64 = ["dependentRequired", "dependencies", "dependentSchemas"]
        .iter()
        .filter_map(|k| map.get(*k).and_then(Value::as_object))
        .flat_map(|d| d.values())
        .map(|v| 1 + v.as_array().map_or(0, |a| a.len() as u64))
        .fold(0u64, u64::saturating_add);
    (1 + len("required") + len("enum")).saturating_add(dependent)
}

/// The string scans evaluating one schema node makes at a value: a
/// `pattern` or `format` (which some parse), a `contentMediaType` (which
/// parses the string, as JSON, say) or `contentEncoding` (which decodes
/// it), and each of `patternProperties` (over the keys).
fn scans(s: &Value) -> u64 {
    let Value::Object(map) = s else { return 0 };
    let keywords = ["pattern", "format", "contentMediaType", "contentEncoding"];
    let named = keywords
        .iter()
        .filter(|k| map.get(**k).is_some_and(Value::is_string))
        .count() as u64;
    let patterns = match map.get("patternProperties") {
        Some(Value::Object(p)) => p.len() as u64,
        _ => 0,
    };
    named + patterns
}

#[cfg(test)]
#[path = "schema_cost_tests.rs"]
mod tests;
