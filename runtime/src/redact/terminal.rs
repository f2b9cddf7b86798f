//! Text as a person's terminal shows it: nothing in it that the terminal
//! would act on (move the cursor, rewrite a line, reorder or hide text).

use std::borrow::Cow;

/// `text` with control characters (ESC, CR, LF, …) and invisible format
/// characters (bidirectional overrides and isolates, zero-width characters)
/// escaped as `\u{..}`, for anything a person reads: a tool-chosen string
/// must not rewrite a terminal's lines, forge one, or read in another order
/// than it is stored.
pub fn escape_control(text: &str) -> Cow<'_, str> {
    if !text.chars().any(hidden) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if hidden(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A JSON text as a person's terminal may show it: the same JSON value,
/// with every character [`escape_control`] would hide written as a `\u`
/// escape (they can only be inside strings), and a carriage return between
/// tokens as a space (it would rewrite the line).
pub fn json_for_terminal(json: &str) -> Cow<'_, str> {
    if !json.chars().any(hidden) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    let mut units = [0u16; 2];
    for c in json.chars() {
        match c {
            // Raw, these are whitespace between tokens (JSON strings escape
            // them): a line break and a tab are shown as such (`warden
            // describe` prints its JSON pretty), a carriage return as a space.
            '\n' | '\t' => out.push(c),
            '\r' => out.push(' '),
            c if hidden(c) => {
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A character a person would not see as itself: a control character, or
/// one that reorders, hides or breaks text (every Unicode format character,
/// the line and paragraph separators, variation selectors, and characters
/// that render blank). Names an agent or a task goes by hold none: two
/// that look the same would be two.
pub fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(c,
            // Format characters (General_Category Cf, Unicode 16).
            '\u{00ad}' | '\u{0600}'..='\u{0605}' | '\u{061c}' | '\u{06dd}' | '\u{070f}'
            | '\u{0890}'..='\u{0891}' | '\u{08e2}' | '\u{180e}' | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{feff}'
            | '\u{fff0}'..='\u{fffb}' | '\u{110bd}' | '\u{110cd}' | '\u{13430}'..='\u{1343f}'
            | '\u{1bca0}'..='\u{1bca3}' | '\u{1d173}'..='\u{1d17a}'
            // Tag characters: invisible, and read by language models as
            // the ASCII they shadow (hidden instructions); with the rest of
            // their plane's default-ignorable block, variation selectors
            // included.
            | '\u{e0000}'..='\u{e0fff}'
            // Line and paragraph separators: a line break to many viewers.
            | '\u{2028}' | '\u{2029}'
            // Variation selectors: invisible, and 256 of them carry any
            // byte (text smuggled past a reader, as tag characters do).
            | '\u{180b}'..='\u{180d}' | '\u{180f}' | '\u{fe00}'..='\u{fe0f}'
            // Rendered blank or not at all: a combining grapheme joiner,
            // Hangul fillers, Khmer inherent vowels, the braille blank.
            | '\u{034f}' | '\u{115f}' | '\u{1160}' | '\u{17b4}' | '\u{17b5}' | '\u{2800}'
            | '\u{3164}' | '\u{ffa0}')
}
