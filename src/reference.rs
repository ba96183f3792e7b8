//! A simple, obviously correct clearing: the oracle the fast engine is tested against and the
//! baseline its benches are measured against.
//!
//! It follows docs/design.md §5 and §6 to the letter and nothing more: sort by the priority
//! rule, then for each bid try every start in its window and every slot and resource of the run
//! against a map of what is used. Critical values are found the definitional way, by bisection
//! over the limit, re-running the whole cycle each time.

use std::collections::HashMap;

use crate::auction::PriorityRule;

/// A bid as the oracle sees it. Shares and limits in millionths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefBid {
    /// `(resource index, share in millionths)` pairs.
    pub bundle: Vec<(usize, u32)>,
    /// First slot the run may start in.
    pub earliest_start: u64,
    /// Exclusive end of the window.
    pub latest_end: u64,
    /// Run length in slots.
    pub duration: u64,
    /// The most it pays, in millionths of a credit.
    pub limit: u64,
    /// Its cost at reserve prices, in millionths: the least it pays.
    pub reserve: u64,
    /// Acceptance order; lower wins ties.
    pub order: u64,
}

impl RefBid {
    fn size(&self) -> u64 {
        self.bundle.iter().map(|&(_, s)| u64::from(s)).sum::<u64>() * self.duration
    }

    fn key(&self, rule: PriorityRule) -> f64 {
        let limit = self.limit as f64;
        match rule {
            PriorityRule::Value => limit,
            PriorityRule::Density => limit / self.size() as f64,
            PriorityRule::Los => limit / (self.size() as f64).sqrt(),
        }
    }
}

/// One clearing cycle at slot `now`: the start of every bid that wins, `None` for the others.
/// `free(resource, slot)` is the capacity left before the cycle, in millionths.
pub fn clear(
    rule: PriorityRule,
    now: u64,
    free: &dyn Fn(usize, u64) -> i64,
    bids: &[RefBid],
) -> Vec<Option<u64>> {
    let mut order: Vec<usize> = (0..bids.len()).collect();
    order.sort_by(|&a, &b| {
        let (ka, kb) = (bids[a].key(rule), bids[b].key(rule));
        kb.partial_cmp(&ka).expect("keys are numbers").then(bids[a].order.cmp(&bids[b].order))
    });
    let mut used: HashMap<(usize, u64), i64> = HashMap::new();
    let mut starts = vec![None; bids.len()];
    for i in order {
        let b = &bids[i];
        let first = b.earliest_start.max(now);
        if first + b.duration > b.latest_end {
            continue;
        }
        let fits = |s: u64, used: &HashMap<(usize, u64), i64>| {
            (s..s + b.duration).all(|t| {
                b.bundle.iter().all(|&(r, share)| {
                    free(r, t) - used.get(&(r, t)).copied().unwrap_or(0) >= i64::from(share)
                })
            })
        };
        if let Some(s) = (first..=b.latest_end - b.duration).find(|&s| fits(s, &used)) {
            for t in s..s + b.duration {
                for &(r, share) in &b.bundle {
                    *used.entry((r, t)).or_default() += i64::from(share);
                }
            }
            starts[i] = Some(s);
        }
    }
    starts
}

/// The least limit at which bid `i` wins the cycle, everything else unchanged, found by
/// bisection over `[low, high]`; `None` if it does not win even at `high`.
pub fn least_winning_limit(
    rule: PriorityRule,
    now: u64,
    free: &dyn Fn(usize, u64) -> i64,
    bids: &[RefBid],
    i: usize,
    (low, high): (u64, u64),
) -> Option<u64> {
    let mut trial = bids.to_vec();
    let mut wins = |limit: u64| {
        trial[i].limit = limit;
        clear(rule, now, free, &trial)[i].is_some()
    };
    if !wins(high) {
        return None;
    }
    let (mut lo, mut hi) = (low, high);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if wins(mid) { hi = mid } else { lo = mid + 1 }
    }
    Some(hi)
}

/// What bid `i` pays under `critical_value`: the least limit with which it still wins, never
/// below its reserve. `None` if it lost.
pub fn critical_value(
    rule: PriorityRule,
    now: u64,
    free: &dyn Fn(usize, u64) -> i64,
    bids: &[RefBid],
    i: usize,
) -> Option<u64> {
    clear(rule, now, free, bids)[i]?;
    least_winning_limit(rule, now, free, bids, i, (bids[i].reserve, bids[i].limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bid(share: u32, duration: u64, limit: u64, order: u64) -> RefBid {
        RefBid {
            bundle: vec![(0, share)],
            earliest_start: 0,
            latest_end: duration,
            duration,
            limit,
            reserve: 0,
            order,
        }
    }

    #[test]
    fn larger_bid_wins_when_both_cannot_fit() {
        let full = |_: usize, _: u64| 1_000_000;
        let bids = [bid(700_000, 10, 50_000_000, 1), bid(400_000, 10, 10_000_000, 2)];
        assert_eq!(clear(PriorityRule::Value, 0, &full, &bids), vec![Some(0), None]);
        // The 70% bid was accepted first, so a tie with the 40% bid's 10 credits is enough.
        assert_eq!(critical_value(PriorityRule::Value, 0, &full, &bids, 0), Some(10_000_000));
    }
}
