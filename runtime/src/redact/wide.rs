//! A value's forms in the wide encodings: UTF-16 and UTF-32.

/// An ASCII `value` in UTF-16 and UTF-32, either byte order: a server may
/// answer in them of its own accord, without a charset that says so (a
/// BOM, an XML declaration), and each is still text for a pattern.
pub(super) fn forms(value: &str) -> Vec<String> {
    if !value.is_ascii() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for width in [2, 4] {
        for big in [false, true] {
            let mut wide = Vec::with_capacity(value.len() * width);
            for b in value.bytes() {
                let unit = std::iter::repeat_n(0u8, width - 1);
                match big {
                    true => wide.extend(unit.chain([b])),
                    false => wide.extend([b].into_iter().chain(unit)),
                }
            }
            out.extend(String::from_utf8(wide));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::redact::Redactor;

    /// A server's echo of a value in UTF-16 or UTF-32, either byte order,
    /// with or without a BOM, is found.
    #[test]
    fn a_value_in_utf16_or_utf32_is_redacted() {
        let r = Redactor::new([("api", "tok-0123456789")]);
        let encode = |text: &str, width: usize, big: bool| -> Vec<u8> {
            let unit = |c: char| -> Vec<u8> {
                let c = c as u32;
                match (width, big) {
                    (2, false) => (c as u16).to_le_bytes().to_vec(),
                    (2, true) => (c as u16).to_be_bytes().to_vec(),
                    (_, false) => c.to_le_bytes().to_vec(),
                    _ => c.to_be_bytes().to_vec(),
                }
            };
            text.chars().flat_map(unit).collect()
        };
        for (width, big) in [(2, false), (2, true), (4, false), (4, true)] {
            let mut body = match (width, big) {
                (2, false) => vec![0xff, 0xfe],
                (2, true) => vec![0xfe, 0xff],
                _ => Vec::new(),
            };
            body.extend(encode("Bearer tok-0123456789\n", width, big));
            let out = r.redact_bytes(&body);
            let value = encode("0123456789", width, big);
            assert!(
                !out.windows(value.len()).any(|w| w == value),
                "{width} {big}: {out:?}"
            );
            assert!(
                String::from_utf8_lossy(&out).contains("[REDACTED:api]"),
                "{width} {big}"
            );
        }
    }
}
