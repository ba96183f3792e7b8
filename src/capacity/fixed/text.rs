//! The one grammar of a written decimal, for strings and JSON numbers alike.
//!
//! An amount or a share is written `digits` or `digits.digits`, with 1 to 6 digits after the
//! point: the schema's `^[0-9]+(\.[0-9]{1,6})?$`, and nothing else, so that no text has two
//! readings. Refused, each with its own message:
//!
//! - a sign: `-1` (amounts and shares are never negative, and `-0` is not written either) and
//!   `+1`;
//! - anything around or inside the digits: spaces (`" 1"`), `_`, `1.`, `.5`, trailing text;
//! - exponents (`1e3`, `1E-2`), `NaN`, `inf`;
//! - a seventh digit after the point, even a zero (`1.0000000`): "at most six digits written"
//!   is the rule the schema states and a sender can check, where "a value with at most six
//!   places" would also let `1.00000000000000000000000` through;
//! - more than `u64::MAX` millionths, 18446744073709.551615, the most any amount holds.
//!
//! Leading zeros (`007`) are read: the schema allows them in strings (JSON numbers never have
//! them). The digits are read straight into millionths, never through a float or through
//! [`Decimal`]'s own parser (which accepts `+`, exponents and rounds what it cannot hold).

use std::fmt;

use rust_decimal::Decimal;

use super::MICRO;

/// Digits an amount or a share may have after the point.
const PLACES: usize = 6;
/// Characters of a refused text quoted back in a message: a sender's mistake is echoed, a
/// megabyte of it is not.
const QUOTED: usize = 40;

/// Why a written decimal is refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub(crate) enum DecimalError {
    /// `""`.
    #[error("an empty string is not a decimal")]
    Empty,
    /// Not digits with an optional point and fraction.
    #[error("`{0}` is not a plain decimal: digits, then optionally `.` and 1 to 6 digits")]
    NotPlain(Quoted),
    /// `1e3`.
    #[error("`{0}` has an exponent: write the decimal in full")]
    Exponent(Quoted),
    /// `NaN`, `inf`, `infinity`, in any case, with or without a sign.
    #[error("`{0}` is not a finite number")]
    NotFinite(Quoted),
    /// A `-` sign.
    #[error("`{0}` is negative: amounts and shares are never negative")]
    Negative(Quoted),
    /// A seventh digit after the point.
    #[error("`{0}` has more than 6 decimal places")]
    TooPrecise(Quoted),
    /// More than `u64::MAX` millionths.
    #[error("`{0}` is above 18446744073709.551615, the most any amount holds")]
    TooLarge(Quoted),
    /// A number another format (TOML, or JSON that serde buffered for an untagged enum or a
    /// flattened struct) had already read as a binary float: whatever the sender wrote may be
    /// gone, so it is not taken.
    #[error(
        "the number {0} came as a binary float, which may have lost digits: write it as a string, \"{0}\""
    )]
    Float(f64),
}

/// A refused text as quoted in a message: its first [`QUOTED`] characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Quoted(String);

impl Quoted {
    pub(crate) fn new(text: &str) -> Quoted {
        match text.char_indices().nth(QUOTED) {
            Some((end, _)) => Quoted(format!("{}…", &text[..end])),
            None => Quoted(text.to_owned()),
        }
    }
}

impl fmt::Display for Quoted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A text that follows the grammar (a sign aside), split at its point.
struct Plain<'a> {
    negative: bool,
    whole: &'a [u8],
    /// Empty when there is no point.
    fraction: &'a [u8],
}

fn digits(bytes: &[u8]) -> (&[u8], &[u8]) {
    bytes.split_at(bytes.iter().take_while(|b| b.is_ascii_digit()).count())
}

/// Splits `text` as `-? digits (. digits)?`, naming what else it is when it is not that.
fn split(text: &str) -> Result<Plain<'_>, DecimalError> {
    if text.is_empty() {
        return Err(DecimalError::Empty);
    }
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, rest) = digits(unsigned.as_bytes());
    if whole.is_empty() {
        let word = text.trim_start_matches(['-', '+']).to_ascii_lowercase();
        if matches!(word.as_str(), "nan" | "inf" | "infinity") {
            return Err(DecimalError::NotFinite(Quoted::new(text)));
        }
        return Err(DecimalError::NotPlain(Quoted::new(text)));
    }
    let (fraction, rest) = match rest.split_first() {
        Some((b'.', after)) => match digits(after) {
            ([], _) => return Err(DecimalError::NotPlain(Quoted::new(text))),
            split => split,
        },
        _ => (&[][..], rest),
    };
    match rest {
        [] => Ok(Plain { negative, whole, fraction }),
        [b'e' | b'E', exponent @ ..] if is_exponent(exponent) => {
            Err(DecimalError::Exponent(Quoted::new(text)))
        }
        _ => Err(DecimalError::NotPlain(Quoted::new(text))),
    }
}

/// Whether `bytes` is what follows the `e` of an exponent: `[+-]? digits`.
fn is_exponent(bytes: &[u8]) -> bool {
    let unsigned = bytes.strip_prefix(b"+").or_else(|| bytes.strip_prefix(b"-")).unwrap_or(bytes);
    !unsigned.is_empty() && unsigned.iter().all(u8::is_ascii_digit)
}

/// The millionths `text` writes, by the grammar of this module.
///
/// # Errors
///
/// Whatever the grammar refuses, named.
pub(crate) fn parse_micros(text: &str) -> Result<u64, DecimalError> {
    let plain = split(text)?;
    if plain.negative {
        return Err(DecimalError::Negative(Quoted::new(text)));
    }
    if plain.fraction.len() > PLACES {
        return Err(DecimalError::TooPrecise(Quoted::new(text)));
    }
    let push = |acc: u64, digit: u8| acc.checked_mul(10)?.checked_add(u64::from(digit - b'0'));
    let whole = plain.whole.iter().try_fold(0u64, |acc, &d| push(acc, d));
    let micros = whole.and_then(|w| w.checked_mul(MICRO)).and_then(|w| {
        // The fraction's digits, padded to six: `.5` is 500 000 millionths.
        let mut fraction = plain.fraction.iter().chain(std::iter::repeat(&b'0')).take(PLACES);
        fraction.try_fold(0u64, |acc, &d| push(acc, d)).and_then(|f| w.checked_add(f))
    });
    micros.ok_or_else(|| DecimalError::TooLarge(Quoted::new(text)))
}

/// Any plain decimal, signed and with as many places as a [`Decimal`] holds (28), exactly; `None`
/// for any other text. Scenario expectations compare event fields with it, and those include
/// figures with more than six places.
pub(crate) fn parse_plain(text: &str) -> Option<Decimal> {
    let plain = split(text).ok()?;
    let scale = u32::try_from(plain.fraction.len()).ok()?;
    let mut digits = plain.whole.iter().chain(plain.fraction);
    let magnitude =
        digits.try_fold(0i128, |acc, &d| acc.checked_mul(10)?.checked_add(i128::from(d - b'0')))?;
    let mantissa = if plain.negative { -magnitude } else { magnitude };
    Decimal::try_from_i128_with_scale(mantissa, scale).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(text: &str) -> DecimalError {
        parse_micros(text).unwrap_err()
    }

    #[test]
    fn plain_decimals_read_exactly() {
        assert_eq!(parse_micros("0"), Ok(0));
        assert_eq!(parse_micros("0.1"), Ok(100_000));
        assert_eq!(parse_micros("12.500000"), Ok(12_500_000));
        assert_eq!(parse_micros("0.000001"), Ok(1));
        assert_eq!(parse_micros("007.5"), Ok(7_500_000));
        assert_eq!(parse_micros("12345678901.123456"), Ok(12_345_678_901_123_456));
        assert_eq!(parse_micros("18446744073709.551615"), Ok(u64::MAX));
        assert_eq!(parse_micros("18446744073709"), Ok(18_446_744_073_709_000_000));
    }

    #[test]
    fn every_other_spelling_is_refused_by_name() {
        use DecimalError as E;
        let q = Quoted::new;
        assert_eq!(refusal(""), E::Empty);
        for text in [" 1", "1 ", "+1", "1.", ".5", "1_000", "1,5", "0x10", "1.2.3", "--1", "abc", "1e", "1e+"]
        {
            assert_eq!(refusal(text), E::NotPlain(q(text)), "{text}");
        }
        for text in ["1e3", "1E-2", "1.5e+7", "-1e3"] {
            assert_eq!(refusal(text), E::Exponent(q(text)), "{text}");
        }
        for text in ["NaN", "nan", "inf", "-inf", "+Infinity", "INF"] {
            assert_eq!(refusal(text), E::NotFinite(q(text)), "{text}");
        }
        for text in ["-1", "-0", "-0.5", "-1.0000001"] {
            assert_eq!(refusal(text), E::Negative(q(text)), "{text}");
        }
        for text in ["1.0000001", "1.0000000", "1.00000000000000000000001", "0.0000001"] {
            assert_eq!(refusal(text), E::TooPrecise(q(text)), "{text}");
        }
        for text in ["18446744073709.551616", "18446744073710", "99999999999999999999999999999999"] {
            assert_eq!(refusal(text), E::TooLarge(q(text)), "{text}");
        }
        // Unicode digits are not ASCII digits.
        assert_eq!(refusal("١"), E::NotPlain(q("١")));
    }

    #[test]
    fn long_texts_are_quoted_short() {
        let long = "7".repeat(1000);
        let message = refusal(&long).to_string();
        assert!(message.len() < 200, "{message}");
        assert!(message.contains(&"7".repeat(QUOTED)) && message.contains('…'));
    }

    #[test]
    fn plain_decimals_of_any_scale_read_for_comparison() {
        assert_eq!(parse_plain("-0.25"), Some(Decimal::new(-25, 2)));
        assert_eq!(parse_plain("0.3333333333333333"), Some(Decimal::new(3_333_333_333_333_333, 16)));
        assert_eq!(parse_plain("50.000"), Some(Decimal::from(50)));
        for text in ["+1", " 1", "1e3", "NaN", "", "1.", "0.1000000000000000000000000000001"] {
            assert_eq!(parse_plain(text), None, "{text}");
        }
    }
}
