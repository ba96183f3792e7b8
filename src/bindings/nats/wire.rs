//! The payloads of docs/design.md §10 beyond bids and events: replies, and the requests of cancel,
//! transfer and the operator's subjects. Requests refuse unknown fields.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::{Credits, RejectCode, Rejection};

/// The reply to a bid, cancel, transfer or operator request: `{"ok":true,"seq":N}` or
/// `{"ok":false,"error":{"code","message"}}`.
///
/// `seq` is the event the request caused (`bid_accepted`, `bid_cancelled`,
/// `credits_transferred`, …), sent once that event is acknowledged by the `audit_log` stream.
/// A repeated bid id is answered `{"ok":true,"seq":N,"repeat":true}` with the first acceptance's
/// `seq`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    /// Whether the request was carried out.
    pub ok: bool,
    /// The `seq` of the event it caused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// True when a bid id was used before: nothing new was booked.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub repeat: bool,
    /// Why it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
}

/// A refusal as replies carry it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireError {
    /// The reason code (docs/design.md §8).
    pub code: RejectCode,
    /// What was wrong.
    pub message: String,
}

/// What a successful request caused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The `seq` of the event it caused; `None` only for a repeat whose first answer is no
    /// longer remembered.
    pub seq: Option<u64>,
    /// True when a bid id was used before.
    pub repeat: bool,
}

impl Reply {
    /// Carried out, causing event `seq`.
    pub fn ok(seq: u64) -> Reply {
        Reply { ok: true, seq: Some(seq), repeat: false, error: None }
    }

    /// A repeated bid id, first accepted as event `seq` (if still remembered).
    pub fn repeat(seq: Option<u64>) -> Reply {
        Reply { ok: true, seq, repeat: true, error: None }
    }

    /// Refused.
    pub fn refused(r: &Rejection) -> Reply {
        Reply {
            ok: false,
            seq: None,
            repeat: false,
            error: Some(WireError { code: r.code, message: r.message.clone() }),
        }
    }

    /// The reply as the typed result a caller wants.
    ///
    /// # Errors
    ///
    /// The rejection the reply carries; `malformed` for a reply that is neither ok nor an error.
    pub fn into_result(self) -> Result<Ack, Rejection> {
        match (self.ok, self.error) {
            (true, None) => Ok(Ack { seq: self.seq, repeat: self.repeat }),
            (false, Some(e)) => Err(Rejection::new(e.code, e.message)),
            _ => Err(Rejection::new(RejectCode::Malformed, "a reply is either ok or an error")),
        }
    }

    pub(crate) fn to_bytes(&self) -> bytes::Bytes {
        serde_json::to_vec(self).expect("replies always serialize").into()
    }
}

/// `market.cancel.<agent>`: `{"bid"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// The bid to withdraw.
    pub bid: String,
}

/// `economic.transfer.<agent>`: `{"to","amount"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// The receiving account.
    pub to: String,
    /// How much: a JSON string or number, read exactly as written.
    #[serde(deserialize_with = "crate::auction::decode::amount")]
    pub amount: Decimal,
}

/// `admin.market.deposit`: `{"agent","amount"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepositRequest {
    /// The account, opened if needed.
    pub agent: String,
    /// How much: a JSON string or number, read exactly as written.
    #[serde(deserialize_with = "crate::auction::decode::amount")]
    pub amount: Decimal,
}

/// `admin.market.capacity`: `{"resource","from_slot","to_slot","capacity"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityRequest {
    /// The resource.
    pub resource: String,
    /// First slot changed.
    pub from_slot: u64,
    /// Exclusive end.
    pub to_slot: u64,
    /// The new capacity, in `[0, 1]`: a JSON string or number, read exactly as written.
    #[serde(deserialize_with = "crate::auction::decode::share")]
    pub capacity: Decimal,
}

/// `admin.market.clear`: `{"at": slot}`; the service's clock slot when `at` is absent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClearRequest {
    /// The slot to clear at; time never goes back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<u64>,
}

/// `economic.balance.<agent>` answers `{"agent","available","escrowed"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalanceReply {
    /// The account.
    pub agent: String,
    /// Free to bid or transfer.
    pub available: Credits,
    /// Held for live bids.
    pub escrowed: Credits,
}

/// Decodes a request payload, refusing unknown fields (`unknown_field`), an amount or a capacity
/// that is a number or string but not a decimal of at most six places (`invalid_amount`,
/// `invalid_share`), and anything else that does not decode (`malformed`).
pub(crate) fn decode<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, Rejection> {
    serde_json::from_slice(payload).map_err(|e| crate::auction::decode::rejection(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip() {
        let ok = Reply::ok(7);
        assert_eq!(String::from_utf8(ok.to_bytes().to_vec()).unwrap(), r#"{"ok":true,"seq":7}"#);
        assert_eq!(ok.into_result().unwrap(), Ack { seq: Some(7), repeat: false });
        let refused = Reply::refused(&Rejection::new(RejectCode::BookFull, "full"));
        let json = String::from_utf8(refused.to_bytes().to_vec()).unwrap();
        assert_eq!(json, r#"{"ok":false,"error":{"code":"book_full","message":"full"}}"#);
        let back: Reply = decode(json.as_bytes()).unwrap();
        assert_eq!(back.into_result().unwrap_err().code, RejectCode::BookFull);
        let odd: Reply = decode(br#"{"ok":false}"#).unwrap();
        assert_eq!(odd.into_result().unwrap_err().code, RejectCode::Malformed);
    }

    #[test]
    fn requests_refuse_unknown_fields() {
        let e = decode::<CancelRequest>(br#"{"bid":"b","colour":1}"#).unwrap_err();
        assert_eq!(e.code, RejectCode::UnknownField);
        let e = decode::<TransferRequest>(br#"{"to":"b""#).unwrap_err();
        assert_eq!(e.code, RejectCode::Malformed);
        let t: TransferRequest = decode(br#"{"to":"b","amount":"2.5"}"#).unwrap();
        assert_eq!(t.amount, Decimal::new(25, 1));
        assert_eq!(decode::<ClearRequest>(b"{}").unwrap(), ClearRequest { at: None });
    }

    #[test]
    fn amounts_and_capacities_read_exactly_or_are_refused_by_code() {
        let d: DepositRequest = decode(br#"{"agent":"a","amount":12345678901.123456}"#).unwrap();
        assert_eq!(d.amount.to_string(), "12345678901.123456");
        let e = decode::<DepositRequest>(br#"{"agent":"a","amount":1.00000000000000000000001}"#).unwrap_err();
        assert_eq!(e.code, RejectCode::InvalidAmount);
        let e = decode::<TransferRequest>(br#"{"to":"b","amount":"-1"}"#).unwrap_err();
        assert_eq!(e.code, RejectCode::InvalidAmount);
        let e = decode::<TransferRequest>(br#"{"to":"b","amount":null}"#).unwrap_err();
        assert_eq!(e.code, RejectCode::Malformed);
        let c: CapacityRequest =
            decode(br#"{"resource":"cpu","from_slot":0,"to_slot":1,"capacity":0.25}"#).unwrap();
        assert_eq!(c.capacity, Decimal::new(25, 2));
        let e = decode::<CapacityRequest>(br#"{"resource":"cpu","from_slot":0,"to_slot":1,"capacity":5e-1}"#)
            .unwrap_err();
        assert_eq!(e.code, RejectCode::InvalidShare);
    }
}
