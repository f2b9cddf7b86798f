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
/// one that reorders or hides text (Unicode format characters that
/// terminals render invisibly, characters that render blank, and tag
/// characters).
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00ad}' | '\u{034f}' | '\u{061c}' | '\u{115f}' | '\u{1160}' | '\u{17b4}'
            | '\u{17b5}' | '\u{180b}'..='\u{180f}' | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206f}'
            | '\u{2800}' | '\u{3164}' | '\u{feff}' | '\u{ffa0}' | '\u{fff9}'..='\u{fffb}'
            // Tag characters: invisible, and read by language models as
            // the ASCII they shadow (hidden instructions).
            | '\u{e0000}'..='\u{e007f}')
}
