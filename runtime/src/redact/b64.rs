//! Base64 as a reader decodes it, wherever it stands: every run of base64
//! characters (either alphabet) decoded from each of its first four
//! characters, so a value encoded inside a longer string is found at any
//! byte alignment. Used for a value of four bytes, which the patterns of
//! its own base64 cannot find at an odd alignment: its stable characters
//! there are four or five, too few to match without matching ordinary
//! text (`user:k9#z` in an `Authorization: Basic` header). Longer values'
//! patterns find them (decoding every run costs twice the redaction).

/// The shortest run decoded: the four bytes of the shortest secret
/// ([`crate::caps::secrets::MIN_SECRET_LEN`]) take six characters.
pub(super) const MIN_RUN: usize = 6;

/// A base64 character's value, in the standard (`+/`) or the URL-safe
/// (`-_`) alphabet.
fn value(b: u8) -> Option<u32> {
    Some(u32::from(match b {
        b'A'..=b'Z' => b - b'A',
        b'a'..=b'z' => b - b'a' + 26,
        b'0'..=b'9' => b - b'0' + 52,
        b'+' | b'-' => 62,
        b'/' | b'_' => 63,
        _ => return None,
    }))
}

/// The runs of base64 characters in `bytes` at least [`MIN_RUN`] long, as
/// `(start, end)`.
pub(super) fn runs(bytes: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        while at < bytes.len() {
            let start = at + bytes[at..].iter().position(|&b| value(b).is_some())?;
            let len = bytes[start..]
                .iter()
                .position(|&b| value(b).is_none())
                .unwrap_or(bytes.len() - start);
            at = start + len;
            if len >= MIN_RUN {
                return Some((start, at));
            }
        }
        None
    })
}

/// `run` (base64 characters only) decoded in groups of four from its
/// start into `out`; a last group of two or three characters decodes to
/// one or two bytes.
pub(super) fn decode_into(run: &[u8], out: &mut Vec<u8>) {
    out.clear();
    for group in run.chunks(4) {
        let mut bits = 0u32;
        for (i, &c) in group.iter().enumerate() {
            bits |= value(c).unwrap_or(0) << (18 - 6 * i);
        }
        let [_, a, b, c] = bits.to_be_bytes();
        let n = group.len().saturating_sub(1);
        out.extend_from_slice(&[a, b, c][..n]);
    }
}

/// The characters of a decoded run (from its start; `len` of them) that
/// its bytes `a..b` came from.
pub(super) fn chars_of(a: usize, b: usize, len: usize) -> (usize, usize) {
    (a / 3 * 4, ((b - 1) / 3 * 4 + 4).min(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

    #[test]
    fn a_run_decodes_from_each_offset_as_a_reader_would() {
        let text = STANDARD.encode(b"user:s3cr3t");
        let found: Vec<_> = runs(text.as_bytes()).collect();
        assert_eq!(found, [(0, text.len() - 1)], "{text}");
        let mut out = Vec::new();
        decode_into(&text.as_bytes()[..text.len() - 1], &mut out);
        assert_eq!(out, b"user:s3cr3t");
        let glued = format!("key_{}", URL_SAFE_NO_PAD.encode(b"\xfb\xffs3cr3t"));
        let (s, e) = runs(glued.as_bytes()).next().unwrap();
        decode_into(&glued.as_bytes()[s + 4..e], &mut out);
        assert_eq!(&out[2..], b"s3cr3t");
        assert_eq!(chars_of(2, 8, e - s - 4), (0, e - s - 4));
        assert_eq!(chars_of(3, 4, 10), (4, 8));
        assert_eq!(runs(b"a b cdefg hijklm").collect::<Vec<_>>(), [(10, 16)]);
    }
}
