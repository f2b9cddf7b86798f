//! Escapes as a reader decodes them: percent-encoding, JSON and
//! JavaScript backslash escapes, HTML character references. Each decoded
//! byte keeps the span of the original text it came from, so a value found
//! in a decoded view is replaced where it was written.

/// One decoded view of a text: its bytes and, for each byte, the span of
/// the original text it was decoded from.
pub(super) struct View {
    pub(super) bytes: Vec<u8>,
    pub(super) spans: Vec<Span>,
}

/// Where a decoded byte came from in the original text, as 32-bit offsets:
/// a view costs 8 bytes a byte for them, not 16 (a 16 MiB body with an
/// escape in it held two views of ~270 MiB each while it was redacted).
/// [`Redactor::find`] takes no text longer than they can say.
pub(super) type Span = (u32, u32);

/// Whether `bytes` may hold an escape at all (the fast path skips decoding).
pub(super) fn may_escape(bytes: &[u8]) -> bool {
    bytes.iter().any(|b| matches!(b, b'%' | b'\\' | b'&'))
}

/// The bytes that start an escape: `%`, `\\`, `&`.
pub(super) const ESCAPE_STARTS: [u8; 3] = [b'%', b'\\', b'&'];

/// `input` with every escape at its top level decoded once (only those
/// starting with `only`, when given), each output byte mapped to the
/// original span it came from (through `spans`, the mapping of `input`
/// itself, if it is a view). `None` if nothing decoded.
pub(super) fn decode(input: &[u8], spans: Option<&[Span]>, only: Option<u8>) -> Option<View> {
    // `input` is at most `u32::MAX` bytes ([`Redactor::find`]).
    let original = |a: usize, b: usize| match spans {
        Some(s) => (s[a].0, s[b - 1].1),
        None => (a as u32, b as u32),
    };
    let mut bytes = Vec::with_capacity(input.len());
    let mut out_spans = Vec::with_capacity(input.len());
    let mut changed = false;
    let mut i = 0;
    while i < input.len() {
        let wanted = only.is_none_or(|c| c == input[i]);
        match escape_at(input, i).filter(|_| wanted) {
            Some((decoded, n, used)) => {
                let span = original(i, i + used);
                bytes.extend_from_slice(&decoded[..n]);
                out_spans.extend(std::iter::repeat_n(span, n));
                i += used;
                changed = true;
            }
            None => {
                bytes.push(input[i]);
                out_spans.push(original(i, i + 1));
                i += 1;
            }
        }
    }
    changed.then_some(View {
        bytes,
        spans: out_spans,
    })
}

fn hex_digit(b: u8) -> Option<u32> {
    (b as char).to_digit(16)
}

/// The value of `n` hex digits at `at`, if they are all there.
fn hex_at(input: &[u8], at: usize, n: usize) -> Option<u32> {
    let digits = input.get(at..at + n)?;
    digits
        .iter()
        .try_fold(0u32, |acc, &b| Some(acc * 16 + hex_digit(b)?))
}

/// A character as UTF-8: its bytes and their count.
fn utf8(c: char) -> ([u8; 4], usize) {
    let mut buf = [0u8; 4];
    let n = c.encode_utf8(&mut buf).len();
    (buf, n)
}

/// The escape starting at `input[i]`, if any: the bytes it stands for,
/// how many, and how many input bytes it spans.
fn escape_at(input: &[u8], i: usize) -> Option<([u8; 4], usize, usize)> {
    match input[i] {
        b'%' => Some(([hex_at(input, i + 1, 2)? as u8, 0, 0, 0], 1, 3)),
        b'\\' => backslash_escape(input, i),
        b'&' => char_reference(input, i),
        _ => None,
    }
}

/// `\"`, `\n` …, `\xXX`, `\uXXXX` (a surrogate pair as one character),
/// `\u{X…}`.
fn backslash_escape(input: &[u8], i: usize) -> Option<([u8; 4], usize, usize)> {
    let simple = match *input.get(i + 1)? {
        b'"' => b'"',
        b'\\' => b'\\',
        b'/' => b'/',
        b'\'' => b'\'',
        b'n' => b'\n',
        b't' => b'\t',
        b'r' => b'\r',
        b'b' => 0x08,
        b'f' => 0x0c,
        b'x' => return Some(([hex_at(input, i + 2, 2)? as u8, 0, 0, 0], 1, 4)),
        // JavaScript's `\u{1F600}`: hex digits in braces, leading zeros
        // allowed (at most six others); a surrogate pairs with the next.
        b'u' if input.get(i + 2) == Some(&b'{') => {
            let (code, used) = braced(input, i)?;
            if !(0xD800..0xDC00).contains(&code) {
                let (d, n) = utf8(char::from_u32(code)?);
                return Some((d, n, used));
            }
            let (low, more) = match braced(input, i + used) {
                Some(l) => l,
                None if input.get(i + used..i + used + 2) == Some(b"\\u") => {
                    (hex_at(input, i + used + 2, 4)?, 6)
                }
                None => return None,
            };
            if !(0xDC00..0xE000).contains(&low) {
                return None;
            }
            let c = char::from_u32(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00))?;
            let (d, n) = utf8(c);
            return Some((d, n, used + more));
        }
        b'u' => {
            let unit = hex_at(input, i + 2, 4)?;
            if !(0xD800..0xDC00).contains(&unit) {
                let (d, n) = utf8(char::from_u32(unit)?);
                return Some((d, n, 6));
            }
            // A high surrogate needs its low half: `\uD83D\uDE00`, or
            // `\u{DE00}`.
            let (low, more) = match braced(input, i + 6) {
                Some(l) => l,
                None if input.get(i + 6..i + 8) == Some(b"\\u") => (hex_at(input, i + 8, 4)?, 6),
                None => return None,
            };
            if !(0xDC00..0xE000).contains(&low) {
                return None;
            }
            let c = char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))?;
            let (d, n) = utf8(c);
            return Some((d, n, 6 + more));
        }
        _ => return None,
    };
    Some(([simple, 0, 0, 0], 1, 2))
}

/// The code point of `\u{…}` at `input[i]` and the bytes it spans: hex
/// digits, any number of leading zeros, at most six others.
fn braced(input: &[u8], i: usize) -> Option<(u32, usize)> {
    if input.get(i..i + 3)? != b"\\u{" {
        return None;
    }
    let digits = input.get(i + 3..)?;
    let zeros = digits.iter().take_while(|&&b| b == b'0').count();
    let significant = digits[zeros..].iter().take(7).position(|&b| b == b'}')?;
    let close = zeros + significant;
    if close == 0 || significant > 6 {
        return None;
    }
    let code = match significant {
        0 => 0,
        n => hex_at(input, i + 3 + zeros, n)?,
    };
    Some((code, close + 4))
}

/// HTML's named references to ASCII characters (HTML5 names them all),
/// each with its `;`; the first four are read without it too, as browsers
/// read them.
const NAMED_REFERENCES: [(&str, u8); 45] = [
    ("amp", b'&'),
    ("lt", b'<'),
    ("gt", b'>'),
    ("quot", b'"'),
    ("AMP", b'&'),
    ("LT", b'<'),
    ("GT", b'>'),
    ("QUOT", b'"'),
    ("apos", b'\''),
    ("sol", b'/'),
    ("bsol", b'\\'),
    ("equals", b'='),
    ("plus", b'+'),
    ("num", b'#'),
    ("percnt", b'%'),
    ("colon", b':'),
    ("semi", b';'),
    ("comma", b','),
    ("period", b'.'),
    ("excl", b'!'),
    ("quest", b'?'),
    ("commat", b'@'),
    ("lpar", b'('),
    ("rpar", b')'),
    ("lsqb", b'['),
    ("lbrack", b'['),
    ("rsqb", b']'),
    ("rbrack", b']'),
    ("lcub", b'{'),
    ("lbrace", b'{'),
    ("rcub", b'}'),
    ("rbrace", b'}'),
    ("ast", b'*'),
    ("midast", b'*'),
    ("dollar", b'$'),
    ("Hat", b'^'),
    ("grave", b'`'),
    ("DiacriticalGrave", b'`'),
    ("lowbar", b'_'),
    ("UnderBar", b'_'),
    ("verbar", b'|'),
    ("VerticalLine", b'|'),
    ("vert", b'|'),
    ("Tab", b'\t'),
    ("NewLine", b'\n'),
];

/// An HTML character reference: `&#115;`, `&#x73;` (any number of
/// leading zeros; the `;` may be left out, as browsers allow), or a named
/// reference to an ASCII character (`&amp;`, `&sol;`).
fn char_reference(input: &[u8], i: usize) -> Option<([u8; 4], usize, usize)> {
    if input.get(i + 1) != Some(&b'#') {
        return named_reference(input, i);
    }
    let (radix, start) = match input.get(i + 2) {
        Some(b'x' | b'X') => (16, i + 3),
        _ => (10, i + 2),
    };
    let mut end = start;
    let mut value: u32 = 0;
    while let Some(&b) = input.get(end) {
        let Some(d) = (b as char).to_digit(radix) else {
            break;
        };
        value = value.checked_mul(radix)?.checked_add(d)?;
        if value > 0x10FFFF {
            return None;
        }
        end += 1;
    }
    if end == start {
        return None;
    }
    let (d, n) = utf8(char::from_u32(value)?);
    let used = if input.get(end) == Some(&b';') {
        end + 1
    } else {
        end
    };
    Some((d, n, used - i))
}

/// `&amp;` and the other [`NAMED_REFERENCES`].
fn named_reference(input: &[u8], i: usize) -> Option<([u8; 4], usize, usize)> {
    let rest = &input[i + 1..];
    NAMED_REFERENCES
        .iter()
        .enumerate()
        .find_map(|(k, &(name, c))| {
            let name = name.as_bytes();
            if !rest.starts_with(name) {
                return None;
            }
            match rest.get(name.len()) {
                Some(b';') => Some(([c, 0, 0, 0], 1, name.len() + 2)),
                _ if k < 8 => Some(([c, 0, 0, 0], 1, name.len() + 1)),
                _ => None,
            }
        })
}
