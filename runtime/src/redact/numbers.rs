//! JSON numbers as a parser reads them: a number written with a fraction
//! or an exponent (`1.2345678e7`) holds digits its text does not hold
//! together, and any parser gives them back (`12345678`). Each is expanded
//! here from its text, exactly: not through `f64`, which keeps 16 or 17
//! significant digits, and whether or not the rest of the text is JSON
//! that serde reads whole (deeper than 128 levels, a lone surrogate).

/// The longest expansion written out: past it a number is its digits and
/// a run of zeros that holds no value but zeros.
const MAX_EXPANSION: usize = 1024;

/// Each number outside a string: its span and its value's decimal digits,
/// as a parser prints it (`1234.5678`, `12345678`, `0.001`), without its
/// sign.
pub(super) fn spelled(text: &[u8]) -> Vec<(usize, usize, String)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'"' => {
                i += 1;
                while i < text.len() && text[i] != b'"' {
                    i += if text[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                i += 1;
                while i < text.len()
                    && matches!(text[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    i += 1;
                }
                if let Some(digits) = expand(&text[start..i]) {
                    out.push((start, i, digits));
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// The decimal digits of a number token; `None` for what is no number.
fn expand(token: &[u8]) -> Option<String> {
    let token = token.strip_prefix(b"-").unwrap_or(token);
    let (mantissa, exp) = match token.iter().position(|b| matches!(b, b'e' | b'E')) {
        Some(e) => (&token[..e], Some(&token[e + 1..])),
        None => (token, None),
    };
    let (int, frac) = match mantissa.iter().position(|&b| b == b'.') {
        Some(p) if p + 1 < mantissa.len() => (&mantissa[..p], &mantissa[p + 1..]),
        Some(_) => return None,
        None => (mantissa, &b""[..]),
    };
    let all_digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    if int.is_empty() || !all_digits(int) || !all_digits(frac) {
        return None;
    }
    let exp: i64 = match exp {
        None => 0,
        Some(e) => {
            let digits = e
                .strip_prefix(b"+")
                .or_else(|| e.strip_prefix(b"-"))
                .unwrap_or(e);
            if digits.is_empty() || !all_digits(digits) {
                return None;
            }
            // Saturated: past the expansion's cap every exponent is alike.
            let n = std::str::from_utf8(digits)
                .ok()?
                .parse::<i64>()
                .unwrap_or(i64::MAX / 4);
            let n = n.min(i64::MAX / 4);
            if e.first() == Some(&b'-') { -n } else { n }
        }
    };
    let mut digits: Vec<u8> = [int, frac].concat();
    // Where the decimal point falls in `digits`.
    let mut point = int.len() as i64 + exp;
    let lead = digits.iter().take_while(|&&d| d == b'0').count();
    digits.drain(..lead);
    point -= lead as i64;
    while digits.last() == Some(&b'0') && (digits.len() as i64) > point {
        digits.pop();
    }
    if digits.is_empty() {
        return Some("0".into());
    }
    let zeros = |n: i64| "0".repeat(usize::try_from(n).unwrap_or(0).min(MAX_EXPANSION));
    let digits = String::from_utf8(digits).ok()?;
    Some(if point >= digits.len() as i64 {
        format!("{digits}{}", zeros(point - digits.len() as i64))
    } else if point <= 0 {
        format!("0.{}{digits}", zeros(-point))
    } else {
        let (i, f) = digits.split_at(point as usize);
        format!("{i}.{f}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_expand_exactly_from_their_text() {
        let expanded = |t: &str| {
            spelled(t.as_bytes())
                .into_iter()
                .map(|(_, _, d)| d)
                .collect::<Vec<_>>()
        };
        assert_eq!(expanded("1.2345678e7"), ["12345678"]);
        assert_eq!(
            expanded("[9.8765432109876543e16, -12.5E-3]"),
            ["98765432109876543", "0.0125"]
        );
        assert_eq!(
            expanded("{\"a\": 1234.56780, \"b\": 0.0e5, \"c\": 7e+2}"),
            ["1234.5678", "0", "700"]
        );
        assert_eq!(
            expanded("[012345678, \"1.2345678e7\", 3., 1-2]"),
            ["12345678"]
        );
        assert_eq!(expanded("1e99999999999999999999").len(), 1);
        assert!(expanded("1e99999999999999999999")[0].len() <= MAX_EXPANSION + 1);
        assert_eq!(
            spelled(b"{\"x\":\"\\\"\",\"n\":1.5e1}")[0],
            (14, 19, "15".into())
        );
    }
}
