//! Expectations: event patterns matched field by field, and balances.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::auction::money::Credits;
use crate::capacity::fixed::parse_plain;

/// What must have happened.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Patterns that must match events in this order (other events may come between).
    #[serde(default)]
    pub sequence: Vec<Map<String, Value>>,
    /// Patterns no event may match.
    #[serde(default)]
    pub forbidden: Vec<Map<String, Value>>,
    /// Balances at the end, by agent.
    #[serde(default)]
    pub balances: BTreeMap<String, BalanceExpect>,
}

/// An expected balance: a bare amount is the available balance.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum BalanceExpect {
    /// The available balance.
    Available(Credits),
    /// Either or both parts.
    Parts {
        /// Available credits.
        #[serde(default)]
        available: Option<Credits>,
        /// Escrowed credits.
        #[serde(default)]
        escrowed: Option<Credits>,
    },
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
    fn ranges() {
        assert!(value_matches(&json!({"min": 0.5}), &json!(0.75)));
        assert!(value_matches(&json!({"min": "1", "max": "2"}), &json!("1.5")));
        assert!(!value_matches(&json!({"max": 1}), &json!("1.000001")));
        assert!(!value_matches(&json!({"min": 1}), &json!(null)));
    }
}
