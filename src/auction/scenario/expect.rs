//! Expectations: event patterns matched field by field, and balances.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::auction::money::Credits;
use crate::capacity::fixed::parse_plain;

/// What must have happened.
///
/// A pattern's field that is a JSON number (directly, or as a `min`/`max` bound) is kept as its
/// text, a string: a [`Value`] would hold it as an `f64`, and decimals compare by value whatever
/// their JSON type, so `12345678901.123456` matches exactly that and no neighbour.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Patterns that must match events in this order (other events may come between).
    #[serde(default, deserialize_with = "exact_patterns")]
    pub sequence: Vec<Map<String, Value>>,
    /// Patterns no event may match.
    #[serde(default, deserialize_with = "exact_patterns")]
    pub forbidden: Vec<Map<String, Value>>,
    /// Balances at the end, by agent.
    #[serde(default)]
    pub balances: BTreeMap<String, BalanceExpect>,
}

/// An expected balance: a bare amount is the available balance.
#[derive(Debug)]
pub enum BalanceExpect {
    /// The available balance.
    Available(Credits),
    /// Either or both parts.
    Parts {
        /// Available credits.
        available: Option<Credits>,
        /// Escrowed credits.
        escrowed: Option<Credits>,
    },
}

impl<'de> Deserialize<'de> for BalanceExpect {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<BalanceExpect, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Parts {
            #[serde(default)]
            available: Option<Credits>,
            #[serde(default)]
            escrowed: Option<Credits>,
        }
        // Taken raw and only then told apart: an untagged enum would buffer the value, and a
        // buffered number is already a float.
        let raw = Box::<RawValue>::deserialize(d)?;
        let expect = if raw.get().starts_with('{') {
            serde_json::from_str(raw.get())
                .map(|p: Parts| BalanceExpect::Parts { available: p.available, escrowed: p.escrowed })
        } else {
            serde_json::from_str(raw.get()).map(BalanceExpect::Available)
        };
        expect.map_err(|e| D::Error::custom(format_args!("balance {}: {e}", raw.get())))
    }
}

/// Patterns as written, numbers kept exact (see [`Expect`]).
fn exact_patterns<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Map<String, Value>>, D::Error> {
    let patterns = Vec::<BTreeMap<String, Box<RawValue>>>::deserialize(d)?;
    let exact = |pattern: BTreeMap<String, Box<RawValue>>| -> serde_json::Result<Map<String, Value>> {
        pattern.into_iter().map(|(field, raw)| Ok((field, exact_field(&raw)?))).collect()
    };
    patterns.into_iter().map(exact).collect::<serde_json::Result<_>>().map_err(D::Error::custom)
}

/// A pattern's field: a number, or a range of numbers, as its exact text; anything else as JSON
/// reads it (compared whole, as written).
fn exact_field(raw: &RawValue) -> serde_json::Result<Value> {
    if raw.get().starts_with('{') {
        let range: BTreeMap<String, Box<RawValue>> = serde_json::from_str(raw.get())?;
        if !range.is_empty() && range.keys().all(|k| k == "min" || k == "max") {
            let exact = range.into_iter().map(|(bound, raw)| Ok((bound, exact_number(&raw)?)));
            return exact.collect::<serde_json::Result<Map<String, Value>>>().map(Value::Object);
        }
    }
    exact_number(raw)
}

/// A plain decimal number as its text; any other value as JSON reads it.
fn exact_number(raw: &RawValue) -> serde_json::Result<Value> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'-' | b'0'..=b'9') if parse_plain(text).is_some() => Ok(Value::String(text.to_owned())),
        _ => serde_json::from_str(text),
    }
}

fn decimal(v: &Value) -> Option<Decimal> {
    match v {
        Value::String(s) => parse_plain(s),
        Value::Number(n) => parse_plain(&n.to_string()),
        _ => None,
    }
}

/// Whether `actual` satisfies `expected`: decimals by value, `{"min", "max"}` as a range.
fn value_matches(expected: &Value, actual: &Value) -> bool {
    if let Value::Object(range) = expected
        && !range.is_empty()
        && range.keys().all(|k| k == "min" || k == "max")
    {
        let Some(x) = decimal(actual) else { return false };
        let within = |k: &str, ok: fn(Decimal, Decimal) -> bool| match range.get(k) {
            None => true,
            Some(bound) => decimal(bound).is_some_and(|b| ok(x, b)),
        };
        return within("min", |x, b| x >= b) && within("max", |x, b| x <= b);
    }
    match (decimal(expected), decimal(actual)) {
        (Some(e), Some(a)) => e == a,
        _ => expected == actual,
    }
}

/// Whether an event (as a JSON object) matches a pattern: every named field equal.
pub(super) fn matches(pattern: &Map<String, Value>, event: &Map<String, Value>) -> bool {
    pattern.iter().all(|(k, v)| event.get(k).is_some_and(|actual| value_matches(v, actual)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decimals_compare_by_value() {
        assert!(value_matches(&json!("50"), &json!("50.000")));
        assert!(value_matches(&json!(50), &json!("50")));
        assert!(!value_matches(&json!("50"), &json!("50.1")));
        assert!(value_matches(&json!("b1"), &json!("b1")));
        assert!(!value_matches(&json!("b1"), &json!("b2")));
        assert!(value_matches(&json!(true), &json!(true)));
        assert!(value_matches(&json!(null), &json!(null)));
    }

    #[test]
    fn pattern_numbers_are_kept_as_written() {
        let e: Expect = serde_json::from_str(
            r#"{"sequence": [{"amount": 12345678901.123456, "price": {"min": 0.1, "max": 0.30000000000000001},
                             "slot": 3, "bundle": {"cpu": 0.5}, "ok": true}],
                "balances": {"a": 12345678901.123456, "b": {"escrowed": 0.000001}}}"#,
        )
        .unwrap();
        let pattern = &e.sequence[0];
        assert!(value_matches(&pattern["amount"], &json!("12345678901.123456")));
        assert!(!value_matches(&pattern["amount"], &json!("12345678901.123455")));
        assert!(value_matches(&pattern["price"], &json!("0.3")));
        assert!(!value_matches(&pattern["price"], &json!("0.300001")));
        assert!(value_matches(&pattern["slot"], &json!(3)));
        assert_eq!(pattern["bundle"], json!({"cpu": 0.5}));
        assert_eq!(pattern["ok"], json!(true));
        let credits = |s: &str| s.parse::<Credits>().unwrap();
        assert!(matches!(e.balances["a"], BalanceExpect::Available(c) if c == credits("12345678901.123456")));
        assert!(matches!(
            e.balances["b"],
            BalanceExpect::Parts { available: None, escrowed: Some(c) } if c == credits("0.000001")
        ));
        let bad = serde_json::from_str::<Expect>(r#"{"balances": {"a": {"availble": "1"}}}"#);
        assert!(bad.unwrap_err().to_string().contains("availble"));
        assert!(serde_json::from_str::<Expect>(r#"{"balances": {"a": 1e3}}"#).is_err());
    }

    #[test]
    fn ranges() {
        assert!(value_matches(&json!({"min": 0.5}), &json!(0.75)));
        assert!(value_matches(&json!({"min": "1", "max": "2"}), &json!("1.5")));
        assert!(!value_matches(&json!({"max": 1}), &json!("1.000001")));
        assert!(!value_matches(&json!({"min": 1}), &json!(null)));
    }
}
