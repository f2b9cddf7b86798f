//! The contract between host and tool, kept by the host: a call's input
//! must match the tool's `inputSchema` before anything runs, and its output
//! the `outputSchema` when the tool declares one. A tool written in any
//! language gets the same checks; the SDK's own (serde) is a second line.
//!
//! The schemas come from the tool's `describe()`, run once per loaded tool,
//! and are compiled once ([`Contract::new`]). They are the tool's, so they
//! are treated as untrusted too:
//!
//! - no `$ref` reaches outside the schema (the validator is built without
//!   file or network retrieval);
//! - a schema whose `anyOf`/`oneOf`/`allOf`/`$ref` nesting could cost
//!   the host more than a bounded number of checks per value is refused
//!   (`schema_cost.rs`): validation runs outside the tool's deadline;
//! - `pattern` uses the linear-time `regex` engine, so an input cannot
//!   make a pattern backtrack for ever;
//! - error messages name where (a JSON pointer) and what was expected, not
//!   the value found, and at most [`SHOWN`] problems are listed.
//!
//! Schemas are served in standard JSON Schema: the integer formats schemars
//! writes (`uint`, `uint16`, `int8`…), which no JSON Schema draft defines
//! and TypeScript clients warn about, become the range they stand for
//! ([`standard_formats`]).

use super::schema_cost::Bound;
use jsonschema::{PatternOptions, Validator};
use serde_json::Value;

/// The most schema problems one error lists.
pub(crate) const SHOWN: usize = 3;

/// The most work one check may take: values times the schema's bound on
/// evaluations per value (about 50 ms at worst on this machine).
const MOST_EVALUATIONS: u64 = 10_000_000;
/// The most string and key bytes one check may scan per regular expression
/// in the schema (a pattern costs up to a few µs per byte).
const MOST_PATTERN_BYTES: u64 = 256 << 10;
/// The largest compiled pattern (the regex crate's size limit): the
/// patterns that cost most per byte are larger.
const PATTERN_SIZE: usize = 64 << 10;
/// The longest string `format: regex` checks: its parser's cost grows with
/// the square of a pattern's named groups and back-references.
const MOST_REGEX_FORMAT: usize = 4 << 10;
/// The most bytes `format: regex` parses in one check, however often the
/// schema applies it (an `allOf` of a thousand `$ref`s to it): past them,
/// a string fails the format.
const MOST_REGEX_FORMAT_BYTES: usize = 64 << 10;
/// The most work `uniqueItems` may do: pairs of items it may compare (all
/// of them, when their hashes collide) times the values a comparison may
/// walk, times the evaluations per value (how often the schema may apply
/// it).
const MOST_PAIR_WORK: u64 = 100_000_000;

thread_local! {
    /// What `format: regex` may still parse in the check running on this
    /// thread (validation is synchronous; each check sets it).
    static REGEX_FORMAT_LEFT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}
/// The most problems counted after the ones listed.
const COUNTED: usize = 1_000;
/// The most a value's check may cost (values times evaluations per value)
/// for its problems to be listed and counted; past it only the first is
/// named (jsonschema gathers every problem first: at 10^7, gigabytes).
const MOST_LISTED_EVALUATIONS: u64 = 100_000;

/// A tool's compiled schemas.
pub(crate) struct Contract {
    input: Checked,
    output: Option<Checked>,
}

/// One compiled schema and what checking a value against it may cost.
struct Checked {
    validator: Validator,
    bound: Bound,
}

impl std::fmt::Debug for Contract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contract")
            .field("output", &self.output.is_some())
            .finish_non_exhaustive()
    }
}

impl Contract {
    /// Compiles `input` and `output` (already normalized); an error names
    /// which schema is invalid and why.
    pub(crate) fn new(input: &Value, output: Option<&Value>) -> Result<Contract, String> {
        let compile = |schema: &Value, which: &str| {
            let bound = super::schema_cost::bound(schema)
                .map_err(|e| format!("its {which} schema is refused: {e}"))?;
            let validator = jsonschema::options()
                .with_pattern_options(PatternOptions::regex().size_limit(PATTERN_SIZE))
                .with_format("regex", regex_format)
                .build(schema)
                .map_err(|e| format!("its {which} schema is not a valid JSON Schema: {e}"))?;
            Ok::<_, String>(Checked { validator, bound })
        };
        Ok(Contract {
            input: compile(input, "input")?,
            output: output.map(|s| compile(s, "output")).transpose()?,
        })
    }

    /// Checks a call's input (already parsed) against the input schema.
    pub(crate) fn check_input(&self, input: &Value) -> Result<(), String> {
        self.input
            .problems(input, "input")
            .map(|p| format!("input does not match the tool's input schema: {p}"))
            .map_or(Ok(()), Err)
    }

    /// Checks the tool's output (JSON text) against the output schema, if
    /// it declares one.
    pub(crate) fn check_output(&self, output: &str) -> Result<(), String> {
        let Some(schema) = &self.output else {
            return Ok(());
        };
        let value: Value = serde_json::from_str(output)
            .map_err(|e| format!("the tool returned output that is not JSON: {e}"))?;
        schema
            .problems(&value, "output")
            .map(|p| format!("the tool's output does not match its output schema: {p}"))
            .map_or(Ok(()), Err)
    }
}

impl Checked {
    /// The first [`SHOWN`] problems of `value`, each as `at POINTER: what
    /// was expected`; `None` when it matches. A value too large for what
    /// the schema may cost per value is one problem, found before any
    /// validation.
    fn problems(&self, value: &Value, which: &str) -> Option<String> {
        let values = match self.affordable(value, which) {
            Ok(values) => values,
            Err(e) => return Some(e),
        };
        REGEX_FORMAT_LEFT.set(MOST_REGEX_FORMAT_BYTES);
        if self.validator.is_valid(value) {
            return None;
        }
        REGEX_FORMAT_LEFT.set(MOST_REGEX_FORMAT_BYTES);
        // jsonschema gathers every error before the first is handed out:
        // for a large value (millions of errors at worst, each a few
        // hundred bytes), only the first.
        if values.saturating_mul(self.bound.per_value) > MOST_LISTED_EVALUATIONS {
            let first = self.validator.validate(value).err()?;
            return Some(format!(
                "at {}: {} (only the first problem is named for an {which} this large)",
                pointer(first.instance_path().as_str()),
                what(&first)
            ));
        }
        let mut all = self.validator.iter_errors(value);
        let mut listed: Vec<String> = all
            .by_ref()
            .take(SHOWN)
            .map(|e| format!("at {}: {}", pointer(e.instance_path().as_str()), what(&e)))
            .collect();
        match all.take(COUNTED + 1).count() {
            0 => {}
            n if n > COUNTED => listed.push(format!("and over {COUNTED} more")),
            n => listed.push(format!("and {n} more")),
        }
        Some(listed.join("; "))
    }

    /// Refuses a value whose check could cost more than the host spends on
    /// one: its values times the schema's evaluations per value, and its
    /// string bytes times the schema's patterns. Its values, if not.
    fn affordable(&self, value: &Value, which: &str) -> Result<u64, String> {
        let (mut values, mut bytes) = (0u64, 0u64);
        let mut stack = vec![value];
        while let Some(v) = stack.pop() {
            values += 1;
            match v {
                Value::String(s) => bytes += s.len() as u64,
                Value::Array(items) => stack.extend(items),
                Value::Object(map) => {
                    bytes += map.keys().map(|k| k.len() as u64).sum::<u64>();
                    stack.extend(map.values());
                }
                _ => {}
            }
        }
        let evaluations = values.saturating_mul(self.bound.per_value);
        if evaluations > MOST_EVALUATIONS {
            return Err(format!(
                "at /: the {which} is too large for the tool's schema: {values} values, each \
                 costing up to {} schema evaluations (at most {MOST_EVALUATIONS} in all)",
                self.bound.per_value
            ));
        }
        if self.bound.unique {
            let mut work = 0;
            pair_work(value, &mut work);
            let work = work.saturating_mul(self.bound.per_value);
            if work > MOST_PAIR_WORK {
                return Err(format!(
                    "at /: the {which} is too large for the tool's schema: uniqueItems may \
                     compare its arrays' items pairwise, {work} steps at worst (at most \
                     {MOST_PAIR_WORK})"
                ));
            }
        }
        if bytes.saturating_mul(self.bound.patterns) > MOST_PATTERN_BYTES {
            return Err(format!(
                "at /: the {which} is too large for the tool's schema: {bytes} bytes of strings \
                 and keys, each scanned by up to {} patterns (at most {MOST_PATTERN_BYTES} \
                 bytes times patterns)",
                self.bound.patterns
            ));
        }
        Ok(values)
    }
}

/// The values under `value` (itself included); adds to `work`, for each
/// array, its items times the values under it: what comparing every pair
/// of its items may walk (a comparison stops within the smaller item).
fn pair_work(value: &Value, work: &mut u64) -> u64 {
    match value {
        Value::Array(items) => {
            let under = 1 + items.iter().map(|v| pair_work(v, work)).sum::<u64>();
            *work = work.saturating_add((items.len() as u64).saturating_mul(under));
            under
        }
        Value::Object(map) => 1 + map.values().map(|v| pair_work(v, work)).sum::<u64>(),
        _ => 1,
    }
}

/// `format: regex`, as jsonschema checks it (an ECMAScript regular
/// expression), for strings up to [`MOST_REGEX_FORMAT`] bytes; a longer
/// one is refused unparsed.
fn regex_format(s: &str) -> bool {
    let left = REGEX_FORMAT_LEFT.get();
    if s.len() > MOST_REGEX_FORMAT || s.len() > left {
        return false;
    }
    REGEX_FORMAT_LEFT.set(left - s.len());
    jsonschema_regex::is_valid_ecma_regex(s)
}

/// The most bytes of a JSON pointer or of a property name an error shows.
const SHOWN_BYTES: usize = 200;

/// A value's JSON pointer, shortened to whole segments when long: a key
/// is shown whole or not at all, so a secret in it is never cut to a piece
/// that redaction would not recognize.
fn pointer(at: &str) -> String {
    if at.is_empty() {
        return "/".into();
    }
    let mut shown = String::new();
    for segment in at.split('/').skip(1) {
        if shown.len() + segment.len() + 1 > SHOWN_BYTES {
            shown.push_str("/…");
            break;
        }
        shown.push('/');
        // A key is the instance's: shown only when printable, and not
        // with a pointer escape (`~1` for `/`), which redaction would not
        // read as the key it spells.
        if segment.contains('~') || segment.chars().any(|c| c.is_control()) {
            shown.push('…');
        } else {
            shown.push_str(segment);
        }
    }
    shown
}

/// What was expected, without the value found (masked). Property names
/// are the instance's: they are shown only when short and printable, and
/// a `propertyNames` failure never shows the name.
fn what(e: &jsonschema::ValidationError<'_>) -> String {
    use jsonschema::error::ValidationErrorKind as Kind;
    let names = |unexpected: &[String], which: &str| {
        let plain = unexpected
            .iter()
            .all(|n| n.len() <= 64 && !n.chars().any(char::is_control));
        if plain && unexpected.iter().map(String::len).sum::<usize>() <= SHOWN_BYTES {
            let list: Vec<String> = unexpected.iter().map(|n| format!("'{n}'")).collect();
            format!(
                "{which} properties are not allowed ({} unexpected)",
                list.join(", ")
            )
        } else {
            format!(
                "{which} properties are not allowed ({} unexpected)",
                unexpected.len()
            )
        }
    };
    match e.kind() {
        Kind::AdditionalProperties { unexpected } => names(unexpected, "additional"),
        Kind::UnevaluatedProperties { unexpected } => names(unexpected, "unevaluated"),
        Kind::PropertyNames { .. } => {
            "a property name does not match the schema's propertyNames".into()
        }
        // The schema's own text (a pattern, a format) is the tool's.
        _ => crate::redact::escape_control(&e.masked().to_string()).into_owned(),
    }
}

/// Rewrites the integer formats schemars writes, which no JSON Schema
/// draft defines, as the ranges they stand for (keeping any tighter bound
/// the schema states). Other formats stay.
pub(crate) fn standard_formats(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            let integer = match map.get("type") {
                Some(Value::String(t)) => t == "integer",
                Some(Value::Array(ts)) => ts.iter().any(|t| t == "integer"),
                _ => false,
            };
            let range = map
                .get("format")
                .and_then(Value::as_str)
                .filter(|_| integer)
                .and_then(integer_range);
            if let Some((min, max)) = range {
                map.remove("format");
                map.entry("minimum").or_insert(Value::from(min));
                if let Some(max) = max {
                    map.entry("maximum").or_insert(Value::from(max));
                }
            }
            // Values, not schemas: left as they are.
            for (key, sub) in map.iter_mut() {
                if !matches!(key.as_str(), "const" | "enum" | "default" | "examples") {
                    standard_formats(sub);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(standard_formats),
        _ => {}
    }
}

/// The range of a schemars integer format: (minimum, maximum if it fits
/// a JSON number exactly).
fn integer_range(format: &str) -> Option<(i64, Option<u64>)> {
    Some(match format {
        "uint" | "uint64" | "uint128" | "usize" => (0, None),
        "uint8" => (0, Some(u8::MAX.into())),
        "uint16" => (0, Some(u16::MAX.into())),
        "uint32" => (0, Some(u32::MAX.into())),
        "int8" => (i8::MIN.into(), Some(i8::MAX as u64)),
        "int16" => (i16::MIN.into(), Some(i16::MAX as u64)),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
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
        // propertyNames: the name is the value that failed, never shown.
        let e = c
            .check_input(&json!({"a": {"sk-secret-name": 1}}))
            .unwrap_err();
        assert!(!e.contains("sk-secret"), "{e}");
        assert!(e.contains("propertyNames"), "{e}");
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
}
