//! JSON numbers as a parser reads them: a number written with a fraction
//! or an exponent (`1.2345678e7`) holds digits its text does not hold
//! together, and any parser gives them back (`12345678`). Each is read
//! here from its text, exactly (not through `f64`, which keeps 16 or 17
//! significant digits), and as an `f64` parser rounds it
//! (`12345677.99999999999` is `12345678`), whether or not the rest of the
//! text is JSON that serde reads whole (deeper than 128 levels, a lone
//! surrogate).

/// Each number outside a string, with its span: `found` is given the
/// number's readings in turn (its value's decimal digits as a parser prints
/// them, without sign, `1234.5678`, `12345678`, `0.001`, with at most
/// `zeros` zeros written out of any run; then, for a fraction or an
/// exponent, the `f64` a parser rounds it to, printed) and says whether one
/// holds a value: `on` is called for each number that does. One reading at
/// a time: `[1e999,1e999,…]` holds no more than one expansion.
pub(super) fn each_holding(
    text: &[u8],
    zeros: usize,
    found: impl Fn(&str) -> Option<usize>,
    mut on: impl FnMut(usize, usize, usize),
) {
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
                let token = &text[start..i];
                let name = expand(token, zeros).and_then(|d| found(&d)).or_else(|| {
                    let rounded = rounded(token)?;
                    found(&rounded)
                });
                if let Some(name) = name {
                    on(start, i, name);
                }
            }
            _ => i += 1,
        }
    }
}

/// A number token with a fraction or an exponent, or an integer of more
/// digits than an `f64` keeps (a JavaScript client reads
/// `12345678901234499999` as `12345678901234500000`), as an `f64` parser
/// reads it, printed as Rust prints it (`12345678`, `12345678901234500000`);
/// `None` for an integer an `f64` holds exactly as written, what is no
/// number, or no finite value.
fn rounded(token: &[u8]) -> Option<String> {
    let digits = token.iter().filter(|b| b.is_ascii_digit()).count();
    if digits <= 15 && !token.iter().any(|b| matches!(b, b'.' | b'e' | b'E')) {
        return None;
    }
    let value: f64 = std::str::from_utf8(token).ok()?.parse().ok()?;
    value.is_finite().then(|| format!("{}", value.abs()))
}

/// The decimal digits of a number token; `None` for what is no number.
fn expand(token: &[u8], max_zeros: usize) -> Option<String> {
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
    let zeros = |n: i64| "0".repeat(usize::try_from(n).unwrap_or(0).min(max_zeros));
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

    fn spelled(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut i = 0;
        let b = text.as_bytes();
        while i < b.len() {
            if b[i] == b'-' || b[i].is_ascii_digit() {
                let start = i;
                while i < b.len() && matches!(b[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    i += 1;
                }
                out.extend(expand(&b[start..i], 1024));
            } else {
                i += 1;
            }
        }
        out
    }

    #[test]
    fn numbers_expand_exactly_from_their_text() {
        assert_eq!(spelled("1.2345678e7"), ["12345678"]);
        assert_eq!(
            spelled("[9.8765432109876543e16, -12.5E-3]"),
            ["98765432109876543", "0.0125"]
        );
        assert_eq!(
            spelled("[1234.56780, 0.0e5, 7e+2, 1E+0008]"),
            ["1234.5678", "0", "700", "100000000"]
        );
        assert_eq!(spelled("[012345678, 3., 1-2]"), ["12345678"]);
        assert_eq!(
            expand(b"1e99999999999999999999", 40).unwrap(),
            format!("1{}", "0".repeat(40))
        );
        assert_eq!(expand(b"1e-99999999999999999999", 3).unwrap(), "0.0001");
        assert_eq!(
            rounded(b"12345677.99999999999").as_deref(),
            Some("12345678")
        );
        assert_eq!(rounded(b"-1.5e1").as_deref(), Some("15"));
        assert_eq!(rounded(b"12345678"), None);
        assert_eq!(rounded(b"1e999"), None);
    }

    #[test]
    fn each_number_outside_strings_is_read_in_turn() {
        let text = br#"{"x":"\"1.5e1","n":1.5e1,"m":[2e1,-7]}"#;
        let mut seen = Vec::new();
        let read = std::cell::RefCell::new(Vec::new());
        each_holding(
            text,
            8,
            |d| {
                read.borrow_mut().push(d.to_owned());
                (d == "15" || d == "7").then_some(1)
            },
            |s, e, name| seen.push((s, e, name)),
        );
        assert_eq!(seen, [(19, 24, 1), (34, 36, 1)]);
        assert_eq!(*read.borrow(), ["15", "20", "20", "7"]);
    }

    /// An integer longer than an `f64` holds is read as a JavaScript
    /// client rounds it too: its exact digits differ from a 15-digit
    /// value's, the digits it is shown with hold them.
    #[test]
    fn a_long_integer_is_read_as_an_f64_parser_rounds_it() {
        let text = br#"{"n":12345678901234499999,"m":-123456789012345}"#;
        let mut seen = Vec::new();
        let read = std::cell::RefCell::new(Vec::new());
        each_holding(
            text,
            8,
            |d| {
                read.borrow_mut().push(d.to_owned());
                d.contains("123456789012345").then_some(1)
            },
            |s, e, name| seen.push((s, e, name)),
        );
        assert_eq!(seen, [(5, 25, 1), (30, 46, 1)]);
        assert_eq!(
            *read.borrow(),
            [
                "12345678901234499999",
                "12345678901234500000",
                "123456789012345"
            ]
        );
    }
}
