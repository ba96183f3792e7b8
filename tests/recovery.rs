//! A market's state as data: a snapshot at any point between operations, restored and brought
//! forward by the events that followed, is the market that made them — the same state hash, and
//! the same events from then on; a replay cut anywhere, even inside a cycle, resumes exactly.

mod common;

use capacity_auction::{Event, Market, Snapshot, StateError};
use common::*;
use proptest::prelude::*;

/// Runs `ops` on a fresh market, taking a snapshot before op `at` (or at the end); returns the
/// market, the snapshot, where the run stood then, and every event.
fn run_with_snapshot(s: &Setup, ops: &[Op], at: usize) -> (Market, Snapshot, Run, Vec<Event>) {
    let m = market_of(s);
    let mut events = m.subscribe();
    fund(s, &m);
    let mut run = Run::default();
    let mut taken = None;
    for (i, op) in ops.iter().enumerate() {
        if i == at {
            taken = Some((m.snapshot().unwrap(), run));
        }
        run.apply(&m, op);
    }
    let (snapshot, then) = taken.unwrap_or_else(|| (m.snapshot().unwrap(), run));
    m.flush();
    (m, snapshot, then, events.drain())
}

/// Events through JSON and back, as a journal holds them.
fn through_json(events: &[Event]) -> Vec<Event> {
    events.iter().map(|e| Event::from_json(e.to_json().as_bytes()).unwrap()).collect()
}

proptest! {
    #![proptest_config(cases(300))]

    /// Restore + replay of the rest gives the same state hash as the uninterrupted run; the
    /// restored market given the same later operations makes the same events; a replay from
    /// the first event agrees too.
    #[test]
    fn snapshot_and_replay_equal_the_uninterrupted_run(
        (s, ops, at) in setup().prop_flat_map(|s| {
            let n = s.resources;
            prop::collection::vec(op(n), 1..50).prop_flat_map(move |ops| {
                let len = ops.len();
                (Just(s.clone()), Just(ops), 0..=len)
            })
        })
    ) {
        let (live, snapshot, then, events) = run_with_snapshot(&s, &ops, at);
        let hash = live.state_hash().unwrap();

        // The snapshot survives JSON, and restores to its own hash.
        let snapshot = Snapshot::from_json(&snapshot.to_json()).unwrap();
        let restored = Market::restore(snapshot.clone()).unwrap();
        prop_assert_eq!(restored.state_hash().unwrap(), snapshot.hash());

        // Restore + replay of the later events (as a journal gives them) = the live market.
        let later: Vec<Event> = through_json(&events).into_iter().filter(|e| e.seq > snapshot.seq).collect();
        restored.replay(&later).unwrap();
        prop_assert_eq!(restored.state_hash().unwrap(), hash);
        prop_assert_eq!(restored.totals(), live.totals());

        // The restored market, given the same later operations, makes the same events.
        let again = Market::restore(snapshot.clone()).unwrap();
        let mut made = again.subscribe();
        let mut run = then;
        for op in &ops[at.min(ops.len())..] {
            run.apply(&again, op);
        }
        again.flush();
        let made: Vec<String> = made.drain().iter().map(Event::to_json).collect();
        let expected: Vec<String> = later.iter().map(Event::to_json).collect();
        prop_assert_eq!(made, expected);
        prop_assert_eq!(again.state_hash().unwrap(), hash);

        // From the first event, on an empty market of the same configuration.
        let scratch = Market::builder().config(live.config().clone()).build().unwrap();
        scratch.replay(&events).unwrap();
        prop_assert_eq!(scratch.state_hash().unwrap(), hash);
    }

    /// Events cut anywhere — between a cycle's start and its outcome, or inside the outcome —
    /// replay to a cycle in flight that `resume` finishes with exactly the recorded events.
    #[test]
    fn a_replay_cut_inside_a_cycle_resumes_it_exactly(
        (s, ops, cut) in setup().prop_flat_map(|s| {
            let n = s.resources;
            (Just(s), prop::collection::vec(op(n), 1..40), any::<prop::sample::Index>())
        })
    ) {
        let (live, _, _, events) = run_with_snapshot(&s, &ops, usize::MAX);
        let cut = cut.index(events.len() + 1);
        let follower = Market::builder().config(live.config().clone()).build().unwrap();
        let mut resumed = follower.subscribe();
        follower.replay(&events[..cut]).unwrap();
        let mut at = cut;
        if let Some(report) = follower.resume() {
            // Nothing came between the cut and the outcome in this run (intake was quiet).
            let made = resumed.drain();
            prop_assert_eq!(made.last().map(|e| e.seq), Some(report.seq));
            prop_assert_eq!(&made[..], &events[cut..cut + made.len()]);
            at += made.len();
        } else {
            prop_assert!(follower.snapshot().is_ok());
        }
        follower.replay(&events[at..]).unwrap();
        prop_assert_eq!(follower.state_hash().unwrap(), live.state_hash().unwrap());
    }
}

#[test]
fn a_replay_refuses_gaps_and_foreign_events() {
    let s = Setup {
        resources: 1,
        priority: capacity_auction::PriorityRule::Los,
        pricing: capacity_auction::PricingRule::CriticalValue,
        settlement: capacity_auction::Settlement::Burn,
        reserve: vec![0],
        deposits: vec![5_000_000, 1, 1, 1],
        outages: vec![],
        floor: 0,
        cap: None,
        threads: 1,
        always_critical: false,
        horizon: HORIZON,
    };
    let (live, _, _, events) = run_with_snapshot(&s, &[], 0);
    assert!(!events.is_empty());
    let fresh = || Market::builder().config(live.config().clone()).build().unwrap();
    let gap = fresh().replay(&events[1..]).unwrap_err();
    assert!(matches!(gap, StateError::Gap { expected: 1, .. }), "{gap}");
    // An event this state cannot have made: a deposit recorded with another amount.
    let mut forged = events.clone();
    let json = forged[0].to_json().replace("\"5\"", "\"6\"");
    forged[0] = Event::from_json(json.as_bytes()).unwrap();
    let market = fresh();
    market.replay(&forged[..1]).unwrap();
    assert_ne!(market.state_hash().unwrap(), live.state_hash().unwrap());
    // A pending bid the ledger does not hold cannot be restored.
    let mut snapshot = live.snapshot().unwrap();
    snapshot.version = 99;
    assert!(matches!(Market::restore(snapshot), Err(StateError::Format(_))));
}
