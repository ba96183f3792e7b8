//! Property tests of price discovery: prices stay within reserve, floor and cap; without
//! scarcity every price is the reserve; more demand for a scarce resource never lowers its
//! price; every winner can afford its bundle at the discovered prices, under every rule.

mod common;

use capacity_auction::{Event, EventKind, Market, PricingRule, Slot};
use common::*;
use proptest::prelude::*;

fn market_case() -> impl Strategy<Value = (Setup, Vec<BidSpec>, u64)> {
    setup().prop_flat_map(|s| {
        let n = s.resources;
        (Just(s), prop::collection::vec(bid_spec(n), 1..24), 0u64..3)
    })
}

/// A light book: a few small bids, so that often every one fits.
fn light_case() -> impl Strategy<Value = (Setup, Vec<BidSpec>, u64)> {
    setup().prop_flat_map(|s| {
        let n = s.resources;
        let small = bid_spec(n).prop_map(|mut b| {
            for item in &mut b.bundle {
                item.1 = (item.1 / 4).max(10_000);
            }
            b
        });
        (Just(s), prop::collection::vec(small, 1..5), 0u64..3)
    })
}

/// Goods that are substitutes: every bid wants one slot of one resource, anywhere in its
/// window.
fn substitutes_case() -> impl Strategy<Value = (Setup, Vec<BidSpec>, u64)> {
    setup().prop_flat_map(|s| {
        let n = s.resources;
        let single = bid_spec(n).prop_map(|mut b| {
            b.bundle.truncate(1);
            b.duration = 1;
            b
        });
        (Just(s), prop::collection::vec(single, 1..30), 0u64..3)
    })
}

/// The losers of a cycle, by bid index.
fn losers(events: &[Event]) -> Vec<usize> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::BidLost { bid, .. } => Some(bid_index(bid.as_str())),
            _ => None,
        })
        .collect()
}

/// Every bid's start, if it won.
fn allocation(events: &[Event]) -> Vec<(usize, Option<u64>)> {
    let mut out: Vec<(usize, Option<u64>)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::BidWon { bid, start, .. } => Some((bid_index(bid.as_str()), Some(start.get()))),
            EventKind::BidLost { bid, .. } => Some((bid_index(bid.as_str()), None)),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

fn price(m: &Market, r: usize, slot: u64) -> u64 {
    m.price_at(&format!("r{r}"), Slot(slot)).unwrap().micros()
}

proptest! {
    #![proptest_config(ProptestConfig { max_global_rejects: 100_000, ..cases(1500) })]

    /// Every price is at least its reserve (and the floor) and at most the cap; the published
    /// figures too; and every winner can afford its bundle at those prices (IR = 1).
    #[test]
    fn prices_stay_in_bounds_and_winners_can_pay((s, specs, now) in market_case()) {
        let limits: Vec<u64> = specs.iter().map(|b| b.limit).collect();
        let (m, events) = run_cycle(&s, &specs, &limits, now, None);
        for r in 0..s.resources {
            for slot in now..now + HORIZON {
                let p = price(&m, r, slot);
                prop_assert!(p >= reserve_price(&s, r), "r{} slot {}: {} below reserve", r, slot, p);
                prop_assert!(s.cap.is_none_or(|cap| p <= cap), "r{} slot {}: {} above cap", r, slot, p);
            }
        }
        for (r, report) in m.prices().iter().enumerate() {
            for figure in [report.spot, report.average, report.index] {
                prop_assert!(figure.micros() >= reserve_price(&s, r));
                prop_assert!(s.cap.is_none_or(|cap| figure.micros() <= cap));
            }
        }
        let cleared = events.iter().find_map(|e| match e.kind {
            EventKind::CycleCleared { ir, .. } => Some(ir),
            _ => None,
        });
        prop_assert_eq!(cleared, Some(1.0), "IR under {:?}", s.pricing);
    }

    /// When every bid wins there is no scarcity, and every price is the reserve.
    #[test]
    fn without_scarcity_prices_are_the_reserve((s, specs, now) in light_case()) {
        let limits: Vec<u64> = specs.iter().map(|b| b.limit).collect();
        let (m, events) = run_cycle(&s, &specs, &limits, now, None);
        prop_assume!(losers(&events).is_empty());
        for r in 0..s.resources {
            for slot in now..now + HORIZON {
                prop_assert_eq!(price(&m, r, slot), reserve_price(&s, r));
            }
            let report = &m.prices()[r];
            prop_assert_eq!(report.spot.micros(), reserve_price(&s, r));
            prop_assert_eq!(report.average.micros(), reserve_price(&s, r));
        }
    }

    /// Where goods are substitutes (every bid wants one slot of one resource), a losing bid that
    /// wants more — a higher limit, still losing, so the allocation is unchanged — never lowers
    /// the price of any slot.
    #[test]
    fn more_demand_for_substitutes_never_lowers_a_price(
        (s, specs, now) in substitutes_case(),
        pick in any::<prop::sample::Index>(),
        raise in 1u64..80_000_000,
    ) {
        let fallen = raise_a_loser(&s, &specs, now, pick, raise)?;
        prop_assert!(fallen.is_empty(), "prices fell: {:?}", fallen);
    }
}

/// Runs a cycle, then again with one loser's limit raised (its agent topped up by as much);
/// rejects the case unless there is a loser and the allocation stays the same. Returns the
/// `(resource, slot)` cells whose price fell.
fn raise_a_loser(
    s: &Setup,
    specs: &[BidSpec],
    now: u64,
    pick: prop::sample::Index,
    raise: u64,
) -> Result<Vec<(usize, u64)>, TestCaseError> {
    let limits: Vec<u64> = specs.iter().map(|b| b.limit).collect();
    let (before, events) = run_cycle(s, specs, &limits, now, None);
    let lost = losers(&events);
    prop_assume!(!lost.is_empty());
    let k = lost[pick.index(lost.len())];
    let mut raised = limits.clone();
    raised[k] += raise;
    let (after, again) = run_cycle(s, specs, &raised, now, Some((k, raise)));
    prop_assume!(allocation(&again) == allocation(&events));
    let mut fallen = Vec::new();
    for r in 0..s.resources {
        for slot in now..now + HORIZON {
            if price(&after, r, slot) < price(&before, r, slot) {
                fallen.push((r, slot));
            }
        }
    }
    Ok(fallen)
}

/// One resource, value priority, the uniform rule.
fn uniform_cpu_market() -> Market {
    Market::builder()
        .resources(["cpu"])
        .pricing(PricingRule::Uniform)
        .priority(capacity_auction::PriorityRule::Value)
        .build()
        .unwrap()
}

#[test]
fn uniform_winners_pay_their_bundle_at_the_discovered_prices() {
    let m = uniform_cpu_market();
    let mut events = m.subscribe();
    let a = capacity_auction::AgentId::new("a").unwrap();
    m.deposit(&a, "100".parse().unwrap()).unwrap();
    for (id, share, limit) in [("big", "0.7", "50"), ("small", "0.4", "10")] {
        let bundle = m.bundle([("cpu", share)]).unwrap();
        let bid = capacity_auction::Bid::new(
            capacity_auction::BidId::new(id).unwrap(),
            a.clone(),
            bundle,
            2,
            limit.parse().unwrap(),
        );
        m.submit(bid).unwrap();
    }
    m.clear(Slot(0)).unwrap();
    // The small bid (0.4 of cpu for 2 slots, surplus 10) needs 12.5 per cpu-slot to be priced
    // out; the big one then pays 0.7 x 2 x 12.5 = 17.5.
    assert_eq!(m.price_at("cpu", Slot(0)).unwrap(), "12.5".parse().unwrap());
    let payment = events.drain().into_iter().find_map(|e| match e.kind {
        EventKind::BidWon { payment, .. } => Some(payment),
        _ => None,
    });
    assert_eq!(payment, Some("17.5".parse().unwrap()));
}

#[test]
fn worked_example_of_the_docs() {
    // docs/price-discovery.md, and scenarios/24: water levels 8 and 2, the winner's cap 5 on
    // each slot, then its slack passed to slot 0.
    let m = uniform_cpu_market();
    for (agent, id, share, duration, window, limit) in [
        ("w", "holder", "0.6", 2, (0, 2), "6"),
        ("a", "early", "0.5", 1, (0, 1), "4"),
        ("b", "late", "0.5", 1, (1, 2), "1"),
    ] {
        let a = capacity_auction::AgentId::new(agent).unwrap();
        m.deposit(&a, "10".parse().unwrap()).unwrap();
        let bid = capacity_auction::Bid::new(
            capacity_auction::BidId::new(id).unwrap(),
            a,
            m.bundle([("cpu", share)]).unwrap(),
            duration,
            limit.parse().unwrap(),
        )
        .window(Slot(window.0), Slot(window.1));
        m.submit(bid).unwrap();
    }
    let report = m.clear(Slot(0)).unwrap();
    assert_eq!((report.won, report.lost, report.envy, report.ir), (1, 2, 0.0, 1.0));
    assert_eq!(m.price_at("cpu", Slot(0)).unwrap(), "8".parse().unwrap());
    assert_eq!(m.price_at("cpu", Slot(1)).unwrap(), "2".parse().unwrap());
    assert_eq!(m.price_at("cpu", Slot(2)).unwrap(), "0".parse().unwrap());
    assert_eq!(report.revenue, "6".parse().unwrap());
}
