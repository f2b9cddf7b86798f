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
/// The most a value's problems may copy, of it and of the schema, for them
/// to be named (see `Checked::problems`).
const MOST_PROBLEM_BYTES: u64 = 16 << 20;

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
                .map_err(|e| {
                    // jsonschema quotes the offending part whole (up to the
                    // schema's 1 MiB): cut, escaped.
                    let e = crate::policy::gate::cut(&e.to_string(), 4 * SHOWN_BYTES).into_owned();
                    let e = crate::redact::escape_control(&e).into_owned();
                    format!("its {which} schema is not a valid JSON Schema: {e}")
                })?;
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
        let (values, nested) = match self.affordable(value, which) {
            Ok(measured) => measured,
            Err(e) => return Some(e),
        };
        REGEX_FORMAT_LEFT.set(MOST_REGEX_FORMAT_BYTES);
        if self.validator.is_valid(value) {
            return None;
        }
        // jsonschema gathers every problem before it hands out the first,
        // each keeping copies: of the value where it was found (a key,
        // serialized items: up to 6× escaped), or of schema text (a `not`'s
        // schema, a `pattern`). At most `per_value` problems at each value,
        // each copying at most its subtree (summed over the values:
        // `nested`) or the schema's largest copy. Past the budget, or past
        // 10^5 evaluations (a problem each, at worst), only the first is
        // named: `validate` stops at it; but under anyOf/oneOf/not it
        // gathers each branch's problems first, so there none is named.
        let evaluations = values.saturating_mul(self.bound.per_value);
        let copies = (nested.saturating_mul(6))
            .saturating_add(values.saturating_mul(self.bound.copy))
            .saturating_mul(self.bound.per_value);
        let many = copies > MOST_PROBLEM_BYTES || evaluations > MOST_LISTED_EVALUATIONS;
        if many && self.bound.branches {
            return Some(format!(
                "at /: the {which} does not match the schema (its problems are not named for an \
                 {which} this large: gathering them could copy it many times over)"
            ));
        }
        REGEX_FORMAT_LEFT.set(MOST_REGEX_FORMAT_BYTES);
        if many {
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
    /// string bytes times the schema's patterns. If not, its values, and
    /// the sum of the sizes of its values' subtrees (each value's own size
    /// times its depth: what copying each where it is could take).
    fn affordable(&self, value: &Value, which: &str) -> Result<(u64, u64), String> {
        let (mut values, mut bytes, mut nested) = (0u64, 0u64, 0u64);
        let mut stack = vec![(value, 1u64)];
        while let Some((v, depth)) = stack.pop() {
            values += 1;
            let own = match v {
                Value::String(s) => s.len() as u64,
                Value::Array(items) => {
                    stack.extend(items.iter().map(|i| (i, depth + 1)));
                    0
                }
                Value::Object(map) => {
                    stack.extend(map.values().map(|i| (i, depth + 1)));
                    map.keys().map(|k| k.len() as u64).sum::<u64>()
                }
                _ => 0,
            };
            bytes += own;
            nested = nested.saturating_add((own + 16).saturating_mul(depth));
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
        Ok((values, nested))
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
/// that redaction would not recognize; nor one a person would misread (a
/// control, bidirectional or invisible character).
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
        if segment.contains('~') || segment.chars().any(crate::redact::hidden) {
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
            .all(|n| n.len() <= 64 && !n.chars().any(crate::redact::hidden));
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
        // The schema's own text (a pattern, a format) is the tool's, and
        // may be long (a 1 MiB pattern): cut.
        _ => {
            let said = e.masked().to_string();
            crate::redact::escape_control(&crate::policy::gate::cut(&said, 4 * SHOWN_BYTES))
                .into_owned()
        }
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
#[path = "contract_tests.rs"]
mod tests;
