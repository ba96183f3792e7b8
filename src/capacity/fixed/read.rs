//! Reading a written decimal through serde exactly, JSON numbers included.
//!
//! serde_json (without its `arbitrary_precision` feature, which this crate cannot enable: it
//! breaks the `flatten` and the internally tagged enum of the events) hands a visitor every
//! number with a fraction as an `f64`, and the `f64` has already lost what the sender wrote:
//! `12345678901.123456` arrives as `12345678901.123455`, `1.00000000000000000000001` as `1`.
//! So a decimal asks for serde_json's raw value instead: `deserialize_newtype_struct` with the
//! name serde_json's own `RawValue` asks with ([`RAW_VALUE`]). serde_json's deserializer (from a
//! string, a slice or a reader) answers with a map of one entry whose value is the text of the
//! JSON value exactly as written: a number's digits, or a string with its quotes. That text is
//! then read by the grammar of [`text`](super::text), numbers and strings alike.
//!
//! Every other deserializer takes the name as any newtype's and calls `visit_newtype_struct`
//! (TOML's, and the buffer serde keeps for untagged enums and flattened structs), or forwards to
//! `deserialize_any`. There a value is read as what it is: a string's text and a whole number
//! are exact; a float is refused ([`DecimalError::Float`]), as its digits may already be gone and
//! nothing tells whether it had more than six places; the message asks for a string.
//!
//! The name is serde_json's private contract, the one `Box<RawValue>`'s own `Deserialize`
//! relies on; the tests below fail if serde_json ever answers it differently. One gap is
//! serde_json's and cannot be closed here: a `serde_json::Value` holds its numbers as `f64`
//! already, and answers the raw-value request with the float's shortest spelling, so a `Value`
//! must carry amounts as strings to carry them exactly.

use std::borrow::Cow;
use std::fmt;

use rust_decimal::Decimal;
use serde::de::{self, DeserializeSeed, Deserializer, Expected, MapAccess, Unexpected, Visitor};

use super::text::{DecimalError, Quoted, parse_micros};
use super::{MICRO, from_micro};

/// The newtype name serde_json answers with a value's raw text (`serde_json::raw::TOKEN`).
pub(super) const RAW_VALUE: &str = "$serde_json::private::RawValue";

/// The millionths of a decimal read from `d`: the outer `Err` for a value that is neither a
/// number nor a string (a type error, as serde reports it), the inner one for a number or a
/// string that the grammar refuses, for the caller to report in its own words.
pub(crate) fn deserialize_micros<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Result<u64, DecimalError>, D::Error> {
    d.deserialize_newtype_struct(RAW_VALUE, Written { raw_asked: true })
}

/// Deserializes a decimal written as a JSON string (`"0.1"`) or number (`0.1`), exactly: what
/// [`deserialize_micros`] reads, as a [`Decimal`] (with at most six places, never negative).
pub(crate) fn deserialize_decimal<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    match deserialize_micros(d)? {
        Ok(micros) => Ok(from_micro(i128::from(micros))),
        Err(e) => Err(de::Error::custom(e)),
    }
}

/// Reads one written decimal. `raw_asked` is true while the raw-value request is pending (a map
/// is then serde_json's answer); inside `visit_newtype_struct` it is false and a map is a map.
struct Written {
    raw_asked: bool,
}

impl<'de> Visitor<'de> for Written {
    type Value = Result<u64, DecimalError>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a decimal, as a string or a number")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        if !self.raw_asked || map.next_key_seed(RawKey)?.is_none() {
            return Err(de::Error::invalid_type(Unexpected::Map, &self));
        }
        let raw = map.next_value_seed(RawText)?;
        read_raw(&raw, &self)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(Written { raw_asked: false })
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(parse_micros(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.checked_mul(MICRO).ok_or_else(|| DecimalError::TooLarge(Quoted::new(&v.to_string()))))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Ok(Err(DecimalError::Negative(Quoted::new(&v.to_string())))),
        }
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Self::Value, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Ok(Err(DecimalError::TooLarge(Quoted::new(&v.to_string())))),
        }
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Self::Value, E> {
        match u128::try_from(v) {
            Ok(v) => self.visit_u128(v),
            Err(_) => Ok(Err(DecimalError::Negative(Quoted::new(&v.to_string())))),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Err(DecimalError::Float(v)))
    }
}

/// Reads a JSON value's raw text: a number's digits or a string's contents by the grammar,
/// anything else is a type error.
fn read_raw<E: de::Error>(raw: &str, expected: &dyn Expected) -> Result<Result<u64, DecimalError>, E> {
    match raw.as_bytes().first() {
        Some(b'"') => match raw.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
            Some(inner) if !inner.contains('\\') => Ok(parse_micros(inner)),
            // Escapes are JSON's business (`"\u0031"` is `"1"`); they are rare, so they may
            // cost a string.
            _ => {
                let text: String = serde_json::from_str(raw).map_err(E::custom)?;
                Ok(parse_micros(&text))
            }
        },
        Some(b'-' | b'0'..=b'9') => Ok(parse_micros(raw)),
        Some(b't') => Err(E::invalid_type(Unexpected::Bool(true), expected)),
        Some(b'f') => Err(E::invalid_type(Unexpected::Bool(false), expected)),
        Some(b'n') => Err(E::invalid_type(Unexpected::Unit, expected)),
        Some(b'[') => Err(E::invalid_type(Unexpected::Seq, expected)),
        _ => Err(E::invalid_type(Unexpected::Map, expected)),
    }
}

/// The key of serde_json's raw-value map, which must be [`RAW_VALUE`].
struct RawKey;

impl<'de> DeserializeSeed<'de> for RawKey {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for RawKey {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("serde_json's raw value")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        if v == RAW_VALUE { Ok(()) } else { Err(E::invalid_value(Unexpected::Str(v), &self)) }
    }
}

/// The raw text itself, borrowed from the input when serde_json can lend it.
struct RawText;

impl<'de> DeserializeSeed<'de> for RawText {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for RawText {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the raw text of a JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything a visitor is told, to watch serde_json's answer to the raw-value request.
    #[derive(Debug, PartialEq)]
    enum Told {
        Map { key: String, value: String },
        Other,
    }

    struct Recorder;

    impl<'de> Visitor<'de> for Recorder {
        type Value = Told;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("anything")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Told, A::Error> {
            let (key, value) = map.next_entry::<String, String>()?.expect("one entry");
            assert!(map.next_key::<String>()?.is_none(), "a single entry");
            Ok(Told::Map { key, value })
        }
        fn visit_newtype_struct<D: Deserializer<'de>>(self, _: D) -> Result<Told, D::Error> {
            Ok(Told::Other)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Told, E> {
            Ok(Told::Other)
        }
    }

    /// The private mechanism this module relies on: if serde_json stops answering the raw-value
    /// request with a one-entry map of the text as written, for every kind of input, this fails.
    #[test]
    fn serde_json_answers_the_raw_value_request_with_the_text_as_written() {
        let number = "12345678901.123456";
        let expect = |value: &str| Told::Map { key: RAW_VALUE.into(), value: value.into() };
        let from_str =
            serde_json::Deserializer::from_str(number).deserialize_newtype_struct(RAW_VALUE, Recorder);
        assert_eq!(from_str.unwrap(), expect(number));
        let from_slice = serde_json::Deserializer::from_slice(b" \"1.5\" ")
            .deserialize_newtype_struct(RAW_VALUE, Recorder);
        assert_eq!(from_slice.unwrap(), expect("\"1.5\""));
        let from_reader = serde_json::Deserializer::from_reader(&b"1.00000000000000000000001"[..])
            .deserialize_newtype_struct(RAW_VALUE, Recorder);
        assert_eq!(from_reader.unwrap(), expect("1.00000000000000000000001"));
        // And `Box<RawValue>` still asks with this very name.
        let boxed: Box<serde_json::value::RawValue> = serde_json::from_str(number).unwrap();
        assert_eq!(boxed.get(), number);
    }

    fn json(text: &str) -> Result<u64, DecimalError> {
        deserialize_micros(&mut serde_json::Deserializer::from_str(text)).unwrap()
    }

    #[test]
    fn json_numbers_and_strings_read_as_written() {
        assert_eq!(json("12345678901.123456"), Ok(12_345_678_901_123_456));
        assert_eq!(json("\"12345678901.123456\""), Ok(12_345_678_901_123_456));
        assert_eq!(json("18446744073709.551615"), Ok(u64::MAX));
        assert_eq!(json("\"\\u0031.5\""), Ok(1_500_000));
        assert_eq!(json("0.1"), Ok(100_000));
        assert!(matches!(json("1.00000000000000000000001"), Err(DecimalError::TooPrecise(_))));
        assert!(matches!(json("1e3"), Err(DecimalError::Exponent(_))));
        assert!(matches!(json("-1"), Err(DecimalError::Negative(_))));
        assert!(matches!(json("18446744073709551616"), Err(DecimalError::TooLarge(_))));
        assert!(matches!(json("\" 1\""), Err(DecimalError::NotPlain(_))));
        let reader = deserialize_micros(&mut serde_json::Deserializer::from_reader(&b"2.000001"[..]));
        assert_eq!(reader.unwrap(), Ok(2_000_001));
    }

    #[test]
    fn other_json_types_are_type_errors() {
        for text in ["true", "null", "{}", "[1]", "{\"a\":1}"] {
            let e = deserialize_micros(&mut serde_json::Deserializer::from_str(text)).unwrap_err();
            assert!(e.to_string().starts_with("invalid type"), "{text}: {e}");
        }
    }

    #[test]
    fn other_formats_read_strings_and_whole_numbers_and_refuse_floats() {
        use serde::de::IntoDeserializer;
        use serde::de::value::Error;
        let read = |d: serde::de::value::StrDeserializer<'_, Error>| deserialize_micros(d).unwrap();
        assert_eq!(read("0.05".into_deserializer()), Ok(50_000));
        let whole = deserialize_micros(IntoDeserializer::<Error>::into_deserializer(7u64)).unwrap();
        assert_eq!(whole, Ok(7_000_000));
        let negative = deserialize_micros(IntoDeserializer::<Error>::into_deserializer(-7i64)).unwrap();
        assert!(matches!(negative, Err(DecimalError::Negative(_))));
        let float = deserialize_micros(IntoDeserializer::<Error>::into_deserializer(0.05f64)).unwrap();
        assert_eq!(float, Err(DecimalError::Float(0.05)));
        assert!(float.unwrap_err().to_string().contains("\"0.05\""));
    }

    /// JSON buffered by serde (an untagged enum here) no longer has its digits: a float there is
    /// refused, a string is still exact.
    #[test]
    fn buffered_json_refuses_floats() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(untagged)]
        enum Either {
            Amount(#[serde(deserialize_with = "deserialize_decimal")] Decimal),
        }
        let Either::Amount(d) = serde_json::from_str::<Either>("\"0.1\"").unwrap();
        assert_eq!(d, Decimal::new(1, 1));
        assert!(serde_json::from_str::<Either>("0.1").is_err());
        assert!(serde_json::from_str::<Either>("3").is_ok());
    }
}
