//! A manifest's shape — field names and value types — checked so that every
//! problem is reported at once, not only the first one serde meets.
//!
//! The document is parsed into toml's spanned tree and deserialized; when
//! that fails, the error's span names the entry at fault, which is reported
//! (with its field path and the form that was expected, e.g. `timeout = 5`:
//! a duration string like "5s") and taken out of the tree, and the rest is
//! deserialized again. The types stay defined once, by the `Raw*` structs;
//! this module only learns where they disagree with the text.
//!
//! What a removal hides: an entry whose table lacks a required field is
//! removed whole, so the other problems inside it wait for the next check.
//! A required field this module removed for its type is not reported again
//! as missing.

use crate::diag::{Problem, line_col};
use serde::de::DeserializeOwned;
use std::ops::Range;
use toml::Spanned;
use toml::de::{DeTable, DeValue, Deserializer};

/// The most problems one check reports (each costs a pass over the tree).
const MOST: usize = 64;

/// `text` deserialized as `T`, with every shape problem found on the way.
/// `None` when nothing could be deserialized (a syntax error, an error
/// without a position, or too many problems); otherwise the value holds
/// what was left once the entries at fault were taken out.
pub(crate) fn deserialize<T: DeserializeOwned>(text: &str) -> (Option<T>, Vec<Problem>) {
    let (mut root, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        let problems = errors
            .iter()
            .map(|e| at(text, e.span(), String::new(), e.message().trim().to_owned()))
            .collect();
        return (None, problems);
    }
    let mut problems = Vec::new();
    // (the table's span, the key) of each required field taken out.
    let mut removed: Vec<(Range<usize>, String)> = Vec::new();
    loop {
        let e = match T::deserialize(Deserializer::from(root.clone())) {
            Ok(value) => return (Some(value), problems),
            Err(e) => e,
        };
        let message = e.message().trim().to_owned();
        let Some(span) = e.span() else {
            problems.push(at(text, None, String::new(), message));
            return (None, problems);
        };
        let Some(found) = locate(root.get_ref(), root.span(), &span) else {
            problems.push(at(text, Some(span), String::new(), message));
            return (None, problems);
        };
        let ours = missing_field(&message)
            .is_some_and(|f| removed.iter().any(|(s, k)| *s == span && k == f));
        if !ours {
            let mut message = explain(&message, &found.key);
            if missing_field(&message).is_some() {
                // The whole entry is set aside: say so, since what is
                // inside it is not checked this time.
                message.push_str(&format!(
                    " ({} is set aside: what is inside it is checked once this is fixed)",
                    found.removed
                ));
            }
            problems.push(at(text, Some(span), found.field.clone(), message));
        }
        remove(root.get_mut(), &found.steps);
        removed.push((found.table, found.key));
        if problems.len() >= MOST {
            return (None, problems);
        }
    }
}

fn at(text: &str, span: Option<Range<usize>>, field: String, message: String) -> Problem {
    let (line, column) = span.map_or((0, 0), |s| line_col(text, s.start));
    Problem {
        file: None,
        line,
        column,
        field,
        message,
    }
}

/// One step down the tree.
enum Step {
    Key(String),
    Index(usize),
}

/// The entry an error is about.
struct Found {
    /// Down to the entry to remove: the deepest table entry holding the
    /// error's span (ending in a key).
    steps: Vec<Step>,
    /// The dotted path of the deepest value holding the span, e.g.
    /// `tools.x.fs[0].rights[1]`.
    field: String,
    /// The dotted path of the entry removed, e.g. `tools.x.fs`.
    removed: String,
    /// The removed entry's key, and the span of the table holding it.
    key: String,
    table: Range<usize>,
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

/// The entry an error's span is about. A table's own span is only its
/// header (`[tools.x]`), so the search goes down every table, and the
/// deepest entry whose key, value or header holds the span wins.
fn locate(root: &DeTable<'_>, root_span: Range<usize>, span: &Range<usize>) -> Option<Found> {
    let mut steps = Vec::new();
    let mut field = Vec::new();
    let (depth, key, table) = in_table(root, root_span, span, &mut steps, &mut field)?;
    steps.truncate(depth);
    Some(Found {
        steps,
        field: dotted(&field),
        removed: dotted(&field[..depth]),
        key,
        table,
    })
}

/// `tools.x.fs[0].rights` from its parts (keys, and `[i]` for items).
fn dotted(parts: &[(bool, String)]) -> String {
    let mut dotted = String::new();
    for (is_key, name) in parts {
        if *is_key && !dotted.is_empty() {
            dotted.push('.');
        }
        dotted.push_str(name);
    }
    dotted
}

/// Searches `table`'s entries; on a match `steps` and `field` lead to the
/// deepest value holding `span`, and the answer is how many steps lead to
/// the deepest table entry, its key and its table's span.
fn in_table(
    table: &DeTable<'_>,
    table_span: Range<usize>,
    span: &Range<usize>,
    steps: &mut Vec<Step>,
    field: &mut Vec<(bool, String)>,
) -> Option<(usize, String, Range<usize>)> {
    for (key, value) in table.iter() {
        let name = key.get_ref().to_string();
        steps.push(Step::Key(name.clone()));
        field.push((true, name.clone()));
        let here = (steps.len(), name, table_span.clone());
        if let Some(deeper) = in_value(value, span, steps, field) {
            return Some(deeper.unwrap_or(here));
        }
        if contains(&key.span(), span) || contains(&value.span(), span) {
            return Some(here);
        }
        steps.pop();
        field.pop();
    }
    None
}

/// `Some(Some(entry))`: a deeper table entry holds the span; `Some(None)`:
/// an array item of this value does, and no table inside it.
#[allow(clippy::option_option)]
fn in_value(
    value: &Spanned<DeValue<'_>>,
    span: &Range<usize>,
    steps: &mut Vec<Step>,
    field: &mut Vec<(bool, String)>,
) -> Option<Option<(usize, String, Range<usize>)>> {
    match value.get_ref() {
        DeValue::Table(t) => in_table(t, value.span(), span, steps, field).map(Some),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                steps.push(Step::Index(i));
                field.push((false, format!("[{i}]")));
                if let Some(deeper) = in_value(item, span, steps, field) {
                    return Some(deeper);
                }
                if contains(&item.span(), span) {
                    return Some(None);
                }
                steps.pop();
                field.pop();
            }
            None
        }
        _ => None,
    }
}

/// Removes the entry `steps` leads to (its last step is a key).
fn remove(table: &mut DeTable<'_>, steps: &[Step]) {
    match steps {
        [Step::Key(k)] => {
            let key = table.keys().find(|key| key.get_ref() == k).cloned();
            if let Some(key) = key {
                table.remove(&key);
            }
        }
        [Step::Key(k), rest @ ..] => {
            if let Some((_, v)) = table.iter_mut().find(|(key, _)| key.get_ref() == k) {
                remove_in(v.get_mut(), rest);
            }
        }
        _ => {}
    }
}

fn remove_in(value: &mut DeValue<'_>, steps: &[Step]) {
    match (value, steps) {
        (DeValue::Table(t), _) => remove(t, steps),
        (DeValue::Array(items), [Step::Index(i), rest @ ..]) => {
            if let Some(v) = items.get_mut(*i) {
                remove_in(v.get_mut(), rest);
            }
        }
        _ => {}
    }
}

fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.strip_suffix('`')
}

/// serde's message, with the form the field expects in Warden's words:
/// `invalid type: integer `5`, expected a string` on `timeout` becomes
/// `expected a duration string like "5s" (found integer `5`)`.
fn explain(message: &str, key: &str) -> String {
    let found = ["invalid type: ", "invalid value: "]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .and_then(|rest| rest.split_once(", expected "))
        .map(|(found, _)| found);
    // The value found is the file's: a long one is shown by its start.
    let found = found.map(|f| crate::policy::gate::cut(f, 120));
    match (found, expected(key)) {
        (Some(found), Some(form)) => {
            let form = form.replace("NAME.fs", &format!("NAME.{key}"));
            format!("expected {form} (found {found})")
        }
        _ => message.to_owned(),
    }
}

/// The form a manifest field takes, by its key.
fn expected(key: &str) -> Option<&'static str> {
    Some(match key {
        "timeout" | "ttl" => "a duration string like \"5s\"",
        "memory" | "max-output" | "max-audit-bytes" => "a size string like \"64MiB\"",
        "max-audited-calls" => "a whole number like 20000",
        "port" => "a port number from 1 to 65535",
        "reveal" => "true or false",
        "rights" => "a list of rights like [\"read\", \"write\"]",
        "approval" => "\"required\" or \"none\"",
        "component" => "a path to a .wasm component or an oci:// reference, as a string",
        "identity" => "a component identity like \"sha256:…\"",
        "labels" | "methods" | "path-prefixes" | "addresses" | "send-to" | "args" | "env"
        | "token-audiences" | "token-send-to" | "policies" => "a list of strings",
        "tools" => "tables like [tools.NAME]",
        "fs" | "http" | "secrets" | "deploy" => "an array of tables like [[tools.NAME.fs]]",
        "handle" | "within" | "name" | "source" | "scheme" | "host" | "backend" | "program"
        | "url" => "a string",
        _ => return None,
    })
}
