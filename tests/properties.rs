//! Property tests: the fast clearing against the reference oracle, and the market's invariants
//! over random sequences of operations.

use std::collections::{BTreeMap, HashMap};

mod common;

use capacity_auction::reference::{self, RefBid};
use capacity_auction::{AgentId, Event, EventKind, PricingRule, Slot};
use common::*;
use proptest::prelude::*;

/// The oracle's view of the bids the market accepted, with their acceptance order.
fn oracle_bids(s: &Setup, specs: &[BidSpec], limits: &[u64], events: &[Event]) -> Vec<(usize, RefBid)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::BidAccepted { bid, .. } => {
                let k = bid_index(bid.as_str());
                let spec = &specs[k];
                Some((
                    k,
                    RefBid {
                        bundle: spec.bundle.clone(),
                        earliest_start: spec.earliest,
                        latest_end: spec.earliest + u64::from(spec.duration) + spec.slack,
                        duration: u64::from(spec.duration),
                        limit: limits[k],
                        reserve: reserve_of(s, spec),
                        order: e.seq,
                    },
                ))
            }
            _ => None,
        })
        .collect()
}

fn capacity_fn(s: &Setup) -> impl Fn(usize, u64) -> i64 + '_ {
    move |r, t| {
        s.outages
            .iter()
            .rev()
            .find(|&&(or, from, to, _)| or == r && (from..to).contains(&t))
            .map_or(1_000_000, |&(_, _, _, cap)| i64::from(cap))
    }
}

struct Outcome {
    start: Option<u64>,
    payment: Option<u64>,
    shortfall: Option<Option<u64>>,
}

fn outcomes(events: &[Event]) -> BTreeMap<usize, Outcome> {
    let mut out = BTreeMap::new();
    for e in events {
        match &e.kind {
            EventKind::BidWon { bid, start, payment, .. } => {
                out.insert(
                    bid_index(bid.as_str()),
                    Outcome { start: Some(start.get()), payment: Some(payment.micros()), shortfall: None },
                );
            }
            EventKind::BidLost { bid, shortfall, .. } => {
                out.insert(
                    bid_index(bid.as_str()),
                    Outcome { start: None, payment: None, shortfall: Some(shortfall.map(|c| c.micros())) },
                );
            }
            _ => {}
        }
    }
    out
}

/// Every decided bid's start, payment (under `critical_value`) and shortfall equal the
/// oracle's, and payments stay within reserve and limit.
fn matches_oracle(
    s: &Setup,
    specs: &[BidSpec],
    limits: &[u64],
    now: u64,
    events: &[Event],
) -> Result<(), TestCaseError> {
    let accepted = oracle_bids(s, specs, limits, events);
    let ref_bids: Vec<RefBid> = accepted.iter().map(|(_, b)| b.clone()).collect();
    let free = capacity_fn(s);
    let starts = reference::clear(s.priority, now, &free, &ref_bids);
    let got = outcomes(events);
    for (j, (k, rb)) in accepted.iter().enumerate() {
        if rb.latest_end < now + rb.duration {
            continue; // expired before clearing
        }
        let o = &got[k];
        prop_assert_eq!(o.start, starts[j], "start of b{}", k);
        if let Some(payment) = o.payment {
            prop_assert!(payment <= rb.limit && payment >= rb.reserve);
            match s.pricing {
                PricingRule::PayAsBid => prop_assert_eq!(payment, rb.limit),
                PricingRule::CriticalValue => prop_assert_eq!(
                    Some(payment),
                    reference::critical_value(s.priority, now, &free, &ref_bids, j),
                    "critical value of b{}",
                    k
                ),
                PricingRule::Uniform => {}
            }
        } else if s.critical() {
            let needed =
                reference::least_winning_limit(s.priority, now, &free, &ref_bids, j, (rb.limit, u64::MAX));
            let shortfall = o.shortfall.unwrap();
            prop_assert_eq!(shortfall.map(|x| x + rb.limit), needed, "shortfall of b{}", k);
        } else {
            // Without critical values the shortfall is not known: null, never a guess.
            prop_assert_eq!(o.shortfall, Some(None), "shortfall of b{} without critical values", k);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(8))]

    /// Books of a few hundred bids with windows across many slots: the replays' indexes (span
    /// buckets, position bitsets, checkpoints) span several words and buckets.
    #[test]
    fn large_books_match_the_oracle(
        (mut s, specs) in setup().prop_flat_map(|s| {
            let n = s.resources;
            (Just(s), prop::collection::vec(wide_bid_spec(n), 120..220))
        })
    ) {
        s.pricing = PricingRule::CriticalValue;
        s.deposits = vec![1_000_000_000_000; 4];
        let limits: Vec<u64> = specs.iter().map(|b| b.limit).collect();
        let (_, events) = run_cycle(&s, &specs, &limits, 0, None);
        matches_oracle(&s, &specs, &limits, 0, &events)?;
    }
}

proptest! {
    #![proptest_config(cases(2000))]

    /// Placement, critical values and shortfalls equal the oracle's; payments stay within
    /// reserve and limit; a raised limit never turns a win into a loss; replays are identical.
    #[test]
    fn one_cycle_matches_the_oracle(
        (s, specs, now, raise) in setup().prop_flat_map(|s| {
            let n = s.resources;
            (Just(s), prop::collection::vec(bid_spec(n), 1..24), 0u64..3, 1u64..50_000_000)
        })
    ) {
        let limits: Vec<u64> = specs.iter().map(|b| b.limit).collect();
        let (market, events) = run_cycle(&s, &specs, &limits, now, None);
        let got = outcomes(&events);
        matches_oracle(&s, &specs, &limits, now, &events)?;

        // Invariants after the cycle.
        let t = market.totals();
        prop_assert_eq!(t.available.micros() + t.escrowed.micros() + t.burned.micros(), t.deposits.micros());
        for r in 0..s.resources {
            for slot in now..now + HORIZON {
                let name = format!("r{r}");
                let sold = market.sold(&name, Slot(slot)).unwrap();
                prop_assert!(sold <= market.capacity(&name, Slot(slot)).unwrap(), "r{} oversold at {}", r, slot);
            }
        }

        // Raising a winner's limit keeps it a winner. Its agent gets the difference first, so
        // every other bid is accepted or refused exactly as before.
        if let Some((&k, _)) = got.iter().find(|(_, o)| o.start.is_some()) {
            let mut raised = limits.clone();
            raised[k] += raise;
            let (_, again) = run_cycle(&s, &specs, &raised, now, Some((k, raise)));
            let accepted_again = again.iter().any(|e| matches!(&e.kind, EventKind::BidAccepted { bid, .. } if bid_index(bid.as_str()) == k));
            if accepted_again {
                prop_assert!(outcomes(&again)[&k].start.is_some(), "b{} lost after raising its limit", k);
            }
        }

        // The same operations give byte-identical events.
        let (_, replay) = run_cycle(&s, &specs, &limits, now, None);
        let a: Vec<String> = events.iter().map(Event::to_json).collect();
        let b: Vec<String> = replay.iter().map(Event::to_json).collect();
        prop_assert_eq!(a, b);
    }
}

/// Groups of bids this far apart leave long empty stretches between them.
const APART: u64 = 30_000;

proptest! {
    #![proptest_config(cases(300))]

    /// Bids in groups far apart on a long horizon, so the clearing's rows are stretches of many
    /// slots rather than slots: placement, critical values and shortfalls still equal the
    /// oracle's, and every winner can afford its bundle at the prices found.
    #[test]
    fn stretched_rows_match_the_oracle(
        (mut s, grouped) in setup().prop_flat_map(|s| {
            let n = s.resources;
            (Just(s), prop::collection::vec((bid_spec(n), 0u64..4), 2..16))
        })
    ) {
        s.horizon = 4 * APART;
        let last = grouped.len() - 1;
        let specs: Vec<BidSpec> = grouped
            .into_iter()
            .enumerate()
            .map(|(k, (mut b, group))| {
                // The first and last groups are always there: the cycle reaches 90,000 slots.
                let group = match k { 0 => 0, _ if k == last => 3, _ => group };
                b.earliest += group * APART;
                b
            })
            .collect();
        let limits: Vec<u64> = specs.iter().map(|b| b.limit).collect();
        let (_, events) = run_cycle(&s, &specs, &limits, 0, None);
        matches_oracle(&s, &specs, &limits, 0, &events)?;
        let ir = events.iter().find_map(|e| match e.kind {
            EventKind::CycleCleared { ir, .. } => Some(ir),
            _ => None,
        });
        prop_assert_eq!(ir, Some(1.0));
    }
}

/// Runs `ops` twice: the invariants hold each time, and the events are the same.
fn invariants_hold_twice_alike(s: &Setup, ops: &[Op]) -> Result<(), TestCaseError> {
    let first = run_ops(s, ops)?;
    let second = run_ops(s, ops)?;
    prop_assert_eq!(first, second);
    Ok(())
}

/// A bid as `bid_accepted` told it: agent, `(resource, share)` pairs, limit.
type Accepted = (AgentId, Vec<(usize, u32)>, u64);

/// Replays `ops` on a market; checks conservation and that no cycle sells more than capacity.
fn run_ops(s: &Setup, ops: &[Op]) -> Result<Vec<String>, TestCaseError> {
    let m = build(s);
    let mut events = m.subscribe();
    let mut run = Run::default();
    // The model: bundles and live limits by bid, capacity and sales by (resource, slot).
    let mut bundles: HashMap<String, Accepted> = HashMap::new();
    let mut capacity: HashMap<(usize, u64), i64> = HashMap::new();
    let mut sold: HashMap<(usize, u64), i64> = HashMap::new();
    let mut live: HashMap<String, u64> = HashMap::new();
    let mut log = Vec::new();
    for o in ops {
        run.apply(&m, o);
        if let Op::Clear(_) = o {
            let before = sold.clone();
            for e in events.drain() {
                log.push(e.to_json());
                match &e.kind {
                    EventKind::BidAccepted { bid, agent, bundle, limit, .. } => {
                        let items =
                            bundle.0.iter().map(|(n, s)| (n[1..].parse().unwrap(), s.micros())).collect();
                        bundles.insert(bid.to_string(), (agent.clone(), items, limit.micros()));
                        live.insert(format!("{agent}/{bid}"), limit.micros());
                    }
                    EventKind::CapacityChanged { resource, from_slot, to_slot, capacity: c } => {
                        for t in from_slot.get()..to_slot.get() {
                            capacity.insert((resource[1..].parse().unwrap(), t), i64::from(c.micros()));
                        }
                    }
                    EventKind::BidWon { bid, start, end, payment, .. } => {
                        let (a, items, limit) = &bundles[bid.as_str()];
                        prop_assert!(payment.micros() <= *limit);
                        live.remove(&format!("{a}/{bid}"));
                        for t in start.get()..end.get() {
                            for &(r, share) in items {
                                *sold.entry((r, t)).or_default() += i64::from(share);
                            }
                        }
                    }
                    EventKind::BidLost { bid, agent, retained: false, .. }
                    | EventKind::BidExpired { bid, agent }
                    | EventKind::BidCancelled { bid, agent } => {
                        live.remove(&format!("{agent}/{bid}"));
                    }
                    _ => {}
                }
            }
            for (cell, &after) in &sold {
                let cap = capacity.get(cell).copied().unwrap_or(1_000_000);
                let was = before.get(cell).copied().unwrap_or(0);
                prop_assert!(after == was || after <= cap, "cell {:?} oversold: {} > {}", cell, after, cap);
            }
            let t = m.totals();
            prop_assert_eq!(
                t.available.micros() + t.escrowed.micros() + t.burned.micros(),
                t.deposits.micros()
            );
            let escrow: u64 = live.values().sum();
            prop_assert_eq!(t.escrowed.micros(), escrow, "escrow equals the live bids' limits");
        }
    }
    Ok(log)
}

proptest! {
    #![proptest_config(cases(500))]

    /// Over many cycles: no cell is ever sold past its capacity, credits are conserved exactly,
    /// escrow is the live bids' limits, and the same operations give the same events.
    #[test]
    fn many_cycles_keep_the_invariants(
        (s, ops) in setup().prop_flat_map(|s| {
            let n = s.resources;
            (Just(s), prop::collection::vec(op(n), 1..60))
        })
    ) {
        invariants_hold_twice_alike(&s, &ops)?;
    }
}

proptest! {
    #![proptest_config(cases(120))]

    /// The same over a long horizon with bids in groups far apart, so cycles clear on stretches
    /// of slots while time moves, capacity changes and losers stay for later cycles.
    #[test]
    fn many_cycles_on_stretches_keep_the_invariants(
        (mut s, ops) in setup().prop_flat_map(|s| {
            let n = s.resources;
            (Just(s), prop::collection::vec((op(n), 0u64..4), 1..60))
        })
    ) {
        s.horizon = 4 * APART;
        let ops: Vec<Op> = ops
            .into_iter()
            .map(|(o, group)| match o {
                Op::Submit(mut spec) => {
                    spec.earliest += group * APART;
                    Op::Submit(spec)
                }
                o => o,
            })
            .collect();
        invariants_hold_twice_alike(&s, &ops)?;
    }
}
