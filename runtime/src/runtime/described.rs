//! What a tool's `describe` says, checked before it is served: people
//! and models read it (`tools/list` in a client, `warden describe`), so
//! it must be text they see as it is, and of a size every client can be
//! handed.

/// The most bytes of a name or version in a tool's `describe`.
const MOST_NAME: usize = 128;
/// The most bytes of a description (the tool's, a handle's).
const MOST_DESCRIPTION: usize = 8 << 10;
/// The most handles a tool may describe.
const MOST_HANDLES: usize = 64;
/// The most bytes of a schema's JSON text.
const MOST_SCHEMA: usize = 1 << 20;

/// Refuses what a tool's `describe` says that would mislead a person
/// reading it (`tools/list` in a client, `warden describe`) or that every
/// client would be handed at length: a name, version or description with
/// a character a person would not see as itself (a control character, a
/// bidirectional override, a zero-width one; a description may break
/// lines and hold tabs), or text past its size. Names the field and
/// what was expected.
pub(super) fn check_described(
    info: &crate::bindings::exports::warden::tool::guest::ToolInfo,
) -> Result<(), String> {
    let text = |field: &str, value: &str, most: usize, lines: bool| {
        if value.len() > most {
            return Err(format!(
                "describe() returned a {field} of {} bytes (at most {most})",
                value.len()
            ));
        }
        match misread(value, lines) {
            Some((at, c)) => Err(format!(
                "describe() returned a {field} with {} at byte {at} (expected text a person \
                 sees as it is: no control, bidirectional or invisible characters)",
                c.escape_unicode()
            )),
            None => Ok(()),
        }
    };
    text("name", &info.name, MOST_NAME, false)?;
    text("version", &info.version, MOST_NAME, false)?;
    text("description", &info.description, MOST_DESCRIPTION, true)?;
    if info.handles.len() > MOST_HANDLES {
        return Err(format!(
            "describe() returned {} handles (at most {MOST_HANDLES})",
            info.handles.len()
        ));
    }
    for h in &info.handles {
        text("handle name", &h.name, MOST_NAME, false)?;
        text("handle description", &h.description, MOST_DESCRIPTION, true)?;
    }
    let schemas = [Some(&info.input_schema), info.output_schema.as_ref()];
    for (which, schema) in ["input", "output"].iter().zip(schemas) {
        if let Some(schema) = schema.filter(|s| s.len() > MOST_SCHEMA) {
            return Err(format!(
                "describe() returned an {which} schema of {} bytes (at most {MOST_SCHEMA})",
                schema.len()
            ));
        }
    }
    Ok(())
}

/// Refuses text in a schema `describe` returned that a person would
/// misread (each of its keys and strings, as [`check_described`] checks
/// the description; a `pattern` and the keys of `patternProperties` are
/// expressions, held to [`misread_in`]): clients hand a tool's schemas to
/// people and models as they are (serde_json escapes only C0 controls).
/// Names where, as a JSON pointer.
pub(super) fn check_schema_text(schema: &serde_json::Value, which: &str) -> Result<(), String> {
    let mut at = Vec::new();
    match schema_text(schema, &mut at, Place::Schema) {
        Ok(()) => Ok(()),
        Err((what, (byte, c))) => {
            // A `patternProperties` key on the way is not checked: escaped.
            let pointer: String = at.iter().map(|t| format!("/{t}")).collect();
            let pointer = crate::redact::escape_control(&pointer);
            let escape = match what {
                EXPRESSION => "; a regular expression may match it with an escape, \\x{..}",
                _ => "",
            };
            Err(format!(
                "describe() returned an {which} schema with {} at byte {byte} of {what} at {} \
                 (expected text a person sees as it is: no control, bidirectional or invisible \
                 characters{escape})",
                c.escape_unicode(),
                crate::policy::gate::cut(if pointer.is_empty() { "/" } else { &pointer }, 200)
            ))
        }
    }
}

/// What a refusal names in a `pattern` or a `patternProperties` name.
const EXPRESSION: &str = "a regular expression";

/// Where a value sits in a schema, as [`schema_text`] walks it.
#[derive(Clone, Copy, PartialEq)]
enum Place {
    /// A schema: its keys are keywords.
    Schema,
    /// A map of schemas by name (`properties`, `$defs`); `expressions`:
    /// the names are regular expressions (`patternProperties`).
    Schemas { expressions: bool },
    /// A list of schemas (`allOf`, `prefixItems`).
    List,
    /// A regular expression (`pattern`): it may hold C0 controls
    /// ([`misread_in`]).
    Expression,
    /// Anything else (`const`, `enum`, `default`, `examples`, unknown
    /// keywords): data, every key and string checked.
    Data,
}

/// Where the value of a schema's keyword `key` sits.
fn place_of(key: &str, value: &serde_json::Value) -> Place {
    let schemas = |value: &serde_json::Value| match value {
        serde_json::Value::Array(_) => Place::List,
        _ => Place::Schema,
    };
    match key {
        "pattern" => Place::Expression,
        "patternProperties" => Place::Schemas { expressions: true },
        "properties" | "$defs" | "definitions" | "dependentSchemas" | "dependencies" => {
            Place::Schemas { expressions: false }
        }
        "allOf" | "anyOf" | "oneOf" | "prefixItems" => Place::List,
        "items" | "additionalItems" => schemas(value),
        "additionalProperties"
        | "unevaluatedProperties"
        | "unevaluatedItems"
        | "not"
        | "if"
        | "then"
        | "else"
        | "contains"
        | "propertyNames"
        | "contentSchema" => Place::Schema,
        _ => Place::Data,
    }
}

/// Walks `value` depth first, `at` the JSON pointer's tokens to it (only
/// built into text when something is refused), `place` where it sits: a
/// `pattern` and the names of `patternProperties` are expressions where
/// they are keywords, not where they are data (`{"default": {"pattern":
/// …}}`).
fn schema_text(
    value: &serde_json::Value,
    at: &mut Vec<String>,
    place: Place,
) -> Result<(), (&'static str, (usize, char))> {
    use serde_json::Value;
    match value {
        Value::String(text) => match misread_in(text, place == Place::Expression) {
            Some(found) if place == Place::Expression => Err((EXPRESSION, found)),
            Some(found) => Err(("a string", found)),
            None => Ok(()),
        },
        Value::Array(items) => {
            let inner = match place {
                Place::List | Place::Schemas { .. } => Place::Schema,
                _ => Place::Data,
            };
            for (i, item) in items.iter().enumerate() {
                at.push(i.to_string());
                schema_text(item, at, inner)?;
                at.pop();
            }
            Ok(())
        }
        Value::Object(map) => {
            for (key, item) in map {
                let (expression, inner) = match place {
                    Place::Schema => (false, place_of(key, item)),
                    Place::Schemas { expressions } => (expressions, Place::Schema),
                    _ => (false, Place::Data),
                };
                let found = match expression {
                    true => misread_in(key, true).map(|found| (EXPRESSION, found)),
                    false => misread(key, false).map(|found| ("a key", found)),
                };
                if let Some(found) = found {
                    return Err(found);
                }
                at.push(key.replace('~', "~0").replace('/', "~1"));
                schema_text(item, at, inner)?;
                at.pop();
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// [`misread`] in running text, or in a regular expression
/// (`expression`), which may hold as themselves the C0 controls that move
/// nothing on a terminal and DEL (`^[^\u0000-\u001f]*$` spells its range's
/// ends; JSON escapes C0 controls, not DEL, which terminals ignore) and
/// what joins and styles emoji, but not ESC, CR, BS, BEL, VT, FF, SO or
/// SI (a client that prints a decoded pattern would let them rewrite what
/// a person sees), nor anything else a person or model would read as
/// something else: a bidirectional override, a tag character, a C1
/// control. A regular expression can match those with escapes (`\x1b`,
/// `\x{202E}`).
fn misread_in(text: &str, expression: bool) -> Option<(usize, char)> {
    if !expression {
        return misread(text, true);
    }
    let moves = |c: char| matches!(c, '\u{7}'..='\u{8}' | '\u{b}'..='\u{f}' | '\u{1b}');
    let inert = |c: char| matches!(c, '\0'..='\u{1f}' | '\u{7f}') && !moves(c);
    let joins = |c: char| matches!(c, '\u{200d}' | '\u{fe0e}' | '\u{fe0f}');
    (text.char_indices()).find(|&(_, c)| crate::redact::hidden(c) && !inert(c) && !joins(c))
}

/// The first character of `text` a person would not see as itself, with
/// its byte: [`crate::redact::hidden`], but in running text (`lines`) a
/// line break (LF, or CR before LF: a CR alone returns to the start of the
/// line, and what follows hides what came before), a tab, the non-joiner
/// Persian and Indic scripts write words with (U+200C), and what joins and
/// styles emoji (U+200D, U+FE0E, U+FE0F: `👩‍💻`, `❤️`).
fn misread(text: &str, lines: bool) -> Option<(usize, char)> {
    let allowed = |c: char, next: Option<char>| {
        lines
            && match c {
                '\r' => next == Some('\n'),
                _ => matches!(
                    c,
                    '\n' | '\t' | '\u{200c}' | '\u{200d}' | '\u{fe0e}' | '\u{fe0f}'
                ),
            }
    };
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if crate::redact::hidden(c) && !allowed(c, chars.peek().map(|&(_, n)| n)) {
            return Some((at, c));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::exports::warden::tool::guest::{HandleSpec, ToolInfo};
    use crate::bindings::warden::tool::fs::Rights;

    fn info() -> ToolInfo {
        ToolInfo {
            name: "t".into(),
            version: "1.0".into(),
            description: "Counts lines.\n\tIn every file.".into(),
            input_schema: "{}".into(),
            output_schema: None,
            handles: vec![HandleSpec {
                name: "repo".into(),
                rights: Rights::READ,
                description: "the repository".into(),
            }],
        }
    }

    #[test]
    fn schema_text_is_seen_as_it_is() {
        let ok = serde_json::json!({"properties": {"path": {
            "description": "A path.\r\n\tRelative. \u{2764}\u{fe0f} \u{1f469}\u{200d}\u{1f4bb} \u{641}\u{627}\u{6cc}\u{644}\u{200c}\u{647}\u{627}",
            "enum": ["a", "b"], "pattern": "^[^\u{0}-\u{1f}]*$"}},
            "patternProperties": {"^\u{1}": {}}});
        assert_eq!(check_schema_text(&ok, "input"), Ok(()));
        let e = check_schema_text(
            &serde_json::json!({"properties": {"p": {"title": "x\u{e0041}"}}}),
            "input",
        )
        .unwrap_err();
        assert_eq!(
            e,
            "describe() returned an input schema with \\u{e0041} at byte 1 of a string at \
             /properties/p/title (expected text a person sees as it is: no control, \
             bidirectional or invisible characters)"
        );
        let e = check_schema_text(
            &serde_json::json!({"properties": {"a/\u{202e}b": {}}}),
            "output",
        )
        .unwrap_err();
        assert!(
            e.starts_with("describe() returned an output schema with \\u{202e} at byte 2 of a key at /properties "),
            "{e}"
        );
        // A `patternProperties` key is an expression and may hold C0
        // controls that move nothing: on the way to what is refused, it
        // is named escaped.
        let e = check_schema_text(
            &serde_json::json!({"patternProperties": {"\u{1}[2J": {"title": "\u{85}"}}}),
            "input",
        )
        .unwrap_err();
        assert!(e.contains("at /patternProperties/\\u{1}[2J/title "), "{e}");
        assert!(!e.contains('\u{1}'), "{e}");
        // Not ESC, CR or BS: a client printing a decoded pattern would let
        // them rewrite what a person sees.
        for (pattern, c) in [
            ("^[a-z]+$\u{1b}M", "1b"),
            ("^a$\rReads one file.", "d"),
            ("a\u{8}", "8"),
        ] {
            let e = check_schema_text(
                &serde_json::json!({"properties": {"q": {"pattern": pattern}}}),
                "input",
            )
            .unwrap_err();
            assert!(e.contains(&format!("\\u{{{c}}} at byte ")), "{e}");
            assert!(
                e.contains("of a regular expression at /properties/q/pattern "),
                "{e}"
            );
            assert!(e.ends_with("may match it with an escape, \\x{..})"), "{e}");
        }
        // But an expression holds nothing a model would read as something
        // else: an unused alternative in tag characters, an override.
        let hidden = "^[a-z]+$|\u{e0049}\u{e0067}\u{e006e}";
        let e = check_schema_text(
            &serde_json::json!({"properties": {"q": {"pattern": hidden}}}),
            "input",
        )
        .unwrap_err();
        assert!(
            e.contains("\\u{e0049} at byte 9 of a regular expression at /properties/q/pattern "),
            "{e}"
        );
        let e = check_schema_text(
            &serde_json::json!({"patternProperties": {"a\u{202e}": {}}}),
            "input",
        )
        .unwrap_err();
        assert!(
            e.contains("\\u{202e} at byte 1 of a regular expression at /patternProperties "),
            "{e}"
        );
        // Exempt where they are keywords, not where they are data.
        let ok = serde_json::json!({"$defs": {"a": {"pattern": "\u{1}",
            "patternProperties": {"\u{1}": {}}}},
            "allOf": [{"items": {"pattern": "\u{1}"}},
                {"pattern": "^(\u{1f469}\u{200d}\u{1f4bb}|\u{2764}\u{fe0f})+$"}]});
        assert_eq!(check_schema_text(&ok, "input"), Ok(()));
        for (data, at) in [
            (
                serde_json::json!({"default": {"pattern": "\u{202e}"}}),
                "/default/pattern",
            ),
            (
                serde_json::json!({"examples": [{"pattern": "\u{202e}"}]}),
                "/examples/0/pattern",
            ),
            (
                serde_json::json!({"x-meta": {"patternProperties": {"\u{202e}": 1}}}),
                "/x-meta/patternProperties ",
            ),
            (
                serde_json::json!({"properties": {"pattern": {"title": "\u{202e}"}}}),
                "/properties/pattern/title",
            ),
        ] {
            let e = check_schema_text(&data, "input").unwrap_err();
            assert!(e.contains(&format!("at {at}")), "{e}");
        }
    }

    #[test]
    fn describe_text_is_bounded_and_seen_as_it_is() {
        assert_eq!(check_described(&info()), Ok(()));
        let refused = |change: &dyn Fn(&mut ToolInfo)| {
            let mut i = info();
            change(&mut i);
            check_described(&i).unwrap_err()
        };
        let e = refused(&|i| i.name = "t\n".into());
        assert!(
            e.starts_with("describe() returned a name with \\u{a} at byte 1"),
            "{e}"
        );
        let e = refused(&|i| i.version = "1\u{200b}".into());
        assert!(e.contains("a version with \\u{200b} at byte 1"), "{e}");
        let e = refused(&|i| i.handles[0].description = "r\u{9b}31m".into());
        assert!(
            e.contains("a handle description with \\u{9b} at byte 1"),
            "{e}"
        );
        // A line break is LF or CR LF; a CR alone would hide the text
        // before it on a terminal that prints the description.
        let e = refused(&|i| i.description = "Uploads the repo.\rReads one file.".into());
        assert!(e.contains("a description with \\u{d} at byte 17"), "{e}");
        let mut crlf = info();
        crlf.description =
            "Reads files.\r\nIn \u{641}\u{627}\u{6cc}\u{644}\u{200c}\u{647}\u{627}.\r".into();
        assert!(
            check_described(&crlf)
                .unwrap_err()
                .contains("\\u{d} at byte ")
        );
        crlf.description.pop();
        assert_eq!(
            check_described(&crlf),
            Ok(()),
            "CR LF, and a Persian word's non-joiner"
        );
        let e = refused(&|i| i.description = "x".repeat(MOST_DESCRIPTION + 1));
        assert_eq!(
            e,
            "describe() returned a description of 8193 bytes (at most 8192)"
        );
        let e = refused(&|i| i.handles = vec![i.handles[0].clone(); MOST_HANDLES + 1]);
        assert_eq!(e, "describe() returned 65 handles (at most 64)");
        let e = refused(&|i| i.output_schema = Some(" ".repeat(MOST_SCHEMA + 1)));
        assert_eq!(
            e,
            "describe() returned an output schema of 1048577 bytes (at most 1048576)"
        );
    }
}
