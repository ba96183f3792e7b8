//! Decoding requests: exact decimal fields refused under the reason code of what they hold, and
//! the rejection of a payload that does not decode.
//!
//! A limit or an amount that is a JSON number or string, but not one the grammar of amounts
//! accepts (`1e3`, `"NaN"`, `"+1"`, `1.0000001`, `-1`), is the sender's `invalid_amount`, not a
//! `malformed` payload; a share likewise is `invalid_share`. serde stops at the first field it
//! cannot read and reports a message, so the field's deserializer starts its message with the
//! code (`invalid_amount: …`) and [`rejection`] reads the code back. Only these deserializers
//! write such a prefix, and neither serde nor serde_json starts a message with one.

use rust_decimal::Decimal;
use serde::Deserializer;
use serde::de::Error as _;

use super::error::{RejectCode, Rejection};
use crate::capacity::fixed;

/// The codes a field's refusal may carry in its message.
const FIELD_CODES: [RejectCode; 2] = [RejectCode::InvalidAmount, RejectCode::InvalidShare];

/// Deserializes an amount of credits (a bid's limit, a deposit, a transfer) exactly, as a
/// [`Decimal`]; a number or string that is not one is refused as `invalid_amount`.
pub(crate) fn amount<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    refused_as(RejectCode::InvalidAmount, d)
}

/// Deserializes a share or a capacity exactly, as a [`Decimal`] (its range is checked later); a
/// number or string that is not a decimal of at most six places is refused as `invalid_share`.
pub(crate) fn share<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    refused_as(RejectCode::InvalidShare, d)
}

fn refused_as<'de, D: Deserializer<'de>>(code: RejectCode, d: D) -> Result<Decimal, D::Error> {
    match fixed::deserialize_micros(d)? {
        Ok(micros) => Ok(fixed::from_micro(i128::from(micros))),
        Err(e) => Err(D::Error::custom(format_args!("{code}: {e}"))),
    }
}

/// The rejection of a request payload that failed to decode: as [`Rejection::from_json`], but
/// `invalid_amount` or `invalid_share` when a field of that kind held a number or a string that
/// is not one.
pub(crate) fn rejection(err: &serde_json::Error) -> Rejection {
    let rejection = Rejection::from_json(err);
    if rejection.code == RejectCode::Malformed && err.is_data() {
        for code in FIELD_CODES {
            if let Some(why) =
                rejection.message.strip_prefix(code.as_str()).and_then(|m| m.strip_prefix(": "))
            {
                return Rejection::new(code, why);
            }
        }
    }
    rejection
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Request {
        #[serde(deserialize_with = "amount")]
        amount: Decimal,
        #[serde(default, deserialize_with = "share")]
        share: Decimal,
    }

    fn code(json: &str) -> RejectCode {
        rejection(&serde_json::from_str::<Request>(json).unwrap_err()).code
    }

    #[test]
    fn refused_fields_carry_their_code() {
        assert_eq!(code(r#"{"amount": 1e3}"#), RejectCode::InvalidAmount);
        assert_eq!(code(r#"{"amount": "NaN"}"#), RejectCode::InvalidAmount);
        assert_eq!(code(r#"{"amount": 1, "share": "-0.5"}"#), RejectCode::InvalidShare);
        assert_eq!(code(r#"{"amount": true}"#), RejectCode::Malformed);
        assert_eq!(code(r#"{"amount": 1"#), RejectCode::Malformed);
        assert_eq!(code(r#"{"amount": 1, "colour": 1}"#), RejectCode::UnknownField);
        let r = rejection(&serde_json::from_str::<Request>(r#"{"amount": "+1"}"#).unwrap_err());
        assert!(r.message.starts_with("`+1` is not a plain decimal"), "{}", r.message);
    }

    #[test]
    fn amounts_read_exactly() {
        let r: Request = serde_json::from_str(r#"{"amount": 12345678901.123456, "share": 0.5}"#).unwrap();
        assert_eq!(r.amount.to_string(), "12345678901.123456");
        assert_eq!(r.share, Decimal::new(5, 1));
    }
}
