//! Priority keys and the clearing order: descending key, ties to the earlier accepted bid.

use crate::auction::config::PriorityRule;

/// A bid's priority key under `rule` with limit `limit` (millionths of a credit) and size
/// `size` (sum of share x duration, millionths of a capacity-slot).
///
/// Keys are floats only for ranking; they are monotone in the limit, which is all the critical
/// value search relies on. `value` is exact up to 2^53 millionths (about 9e9 credits).
pub(crate) fn key(rule: PriorityRule, limit: u64, size: u64) -> f64 {
    let limit = limit as f64;
    match rule {
        PriorityRule::Value => limit,
        PriorityRule::Density => limit / size as f64,
        PriorityRule::Los => limit / (size as f64).sqrt(),
    }
}

/// Whether a bid with `(key, order)` is considered before one with `(other_key, other_order)`.
pub(crate) fn beats(key: f64, order: u64, other_key: f64, other_order: u64) -> bool {
    key > other_key || (key == other_key && order < other_order)
}

/// The least limit in `[low, high]` whose key, for a bid of `size` accepted at `order`, beats
/// `(rival_key, rival_order)`; `None` when even `high` does not.
pub(crate) fn least_limit_beating(
    rule: PriorityRule,
    size: u64,
    order: u64,
    (low, high): (u64, u64),
    (rival_key, rival_order): (f64, u64),
) -> Option<u64> {
    let wins = |limit: u64| beats(key(rule, limit, size), order, rival_key, rival_order);
    if low > high || !wins(high) {
        return None;
    }
    let (mut lo, mut hi) = (low, high);
    // Invariant: wins(hi); everything below lo loses.
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if wins(mid) { hi = mid } else { lo = mid + 1 }
    }
    Some(hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_key_then_acceptance() {
        assert!(beats(2.0, 9, 1.0, 1));
        assert!(beats(1.0, 1, 1.0, 2));
        assert!(!beats(1.0, 2, 1.0, 1));
    }

    #[test]
    fn least_limit_is_exact() {
        // Density 5 per unit size: a rival of key 5.0 accepted earlier needs strictly more.
        let rival = (key(PriorityRule::Density, 5_000_000, 1_000_000), 1);
        let l = least_limit_beating(PriorityRule::Density, 1_000_000, 2, (0, 10_000_000), rival).unwrap();
        assert_eq!(l, 5_000_001);
        // Accepted before the rival, a tie is enough.
        let rival = (rival.0, 3);
        let l = least_limit_beating(PriorityRule::Density, 1_000_000, 2, (0, 10_000_000), rival).unwrap();
        assert_eq!(l, 5_000_000);
        assert_eq!(least_limit_beating(PriorityRule::Value, 1, 2, (0, 4), (9.0, 1)), None);
    }
}
