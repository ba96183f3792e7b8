//! Several threads submit and cancel while another clears: nothing lost, nothing doubled, credits
//! conserved, and the event stream replays — applied, and re-run — to the same state.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use capacity_auction::{
    AgentId, Bid, BidId, Credits, Event, EventKind, Market, PricingRule, PriorityRule, RejectCode, Slot,
};

const AGENTS: usize = 6;
const PRODUCERS: usize = 3;
const BIDS_PER_PRODUCER: usize = 1500;

fn market() -> Market {
    Market::builder()
        .resources(["cpu", "memory"])
        .horizon(400)
        .pricing(PricingRule::CriticalValue)
        .priority(PriorityRule::Los)
        .max_bids_per_agent(400)
        .build()
        .unwrap()
}

fn agent(i: usize) -> AgentId {
    AgentId::new(&format!("agent-{i}")).unwrap()
}

/// A small deterministic generator, so the test needs no seed plumbing.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[derive(Default)]
struct Answers {
    accepted: usize,
    rejected: usize,
    cancelled: usize,
    cancel_refused: usize,
}

#[test]
fn concurrent_intake_with_clearing_is_linearizable() {
    let m = Arc::new(market());
    let mut events = m.subscribe();
    for a in 0..AGENTS {
        m.deposit(&agent(a), Credits::from_units(2_000)).unwrap();
    }
    let done = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Answers::default()));

    let clearer = {
        let (m, done) = (m.clone(), done.clone());
        thread::spawn(move || {
            let mut slot = 0;
            while !done.load(Ordering::Acquire) {
                m.clear(Slot(slot)).unwrap();
                slot = (slot + 1).min(200);
                thread::yield_now();
            }
            slot
        })
    };
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let (m, answers) = (m.clone(), answers.clone());
            thread::spawn(move || {
                let mut rng = Lcg(p as u64 + 1);
                let mut mine: Vec<(AgentId, BidId)> = Vec::new();
                for k in 0..BIDS_PER_PRODUCER {
                    let a = agent(rng.next(AGENTS as u64) as usize);
                    let id = BidId::new(&format!("p{p}-{k}")).unwrap();
                    let bundle = m
                        .bundle([("cpu", ["0.1", "0.25", "0.4"][rng.next(3) as usize]), ("memory", "0.1")])
                        .unwrap();
                    let limit = Credits::from_micros(1_000_000 + rng.next(40_000_000));
                    let bid = Bid::new(id.clone(), a.clone(), bundle, 1 + rng.next(5) as u32, limit)
                        .window(Slot(0), Slot(300));
                    let answer = m.submit(bid);
                    let mut tally = answers.lock().unwrap();
                    match answer {
                        Ok(r) => {
                            assert!(!r.repeat);
                            tally.accepted += 1;
                            mine.push((a, id));
                        }
                        Err(r) => {
                            assert!(
                                matches!(r.code, RejectCode::InsufficientCredits | RejectCode::TooManyBids),
                                "{r}"
                            );
                            tally.rejected += 1;
                        }
                    }
                    drop(tally);
                    if rng.next(4) == 0 && !mine.is_empty() {
                        let (a, id) = mine.swap_remove(rng.next(mine.len() as u64) as usize);
                        let answer = m.cancel(&a, &id);
                        let mut tally = answers.lock().unwrap();
                        match answer {
                            Ok(()) => tally.cancelled += 1,
                            Err(r) => {
                                // Decided, and perhaps forgotten already: the clearer runs
                                // thousands of cycles, past `dedupe_cycles`.
                                assert!(
                                    matches!(r.code, RejectCode::NotPending | RejectCode::NotFound),
                                    "{r}"
                                );
                                tally.cancel_refused += 1;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    done.store(true, Ordering::Release);
    let last = clearer.join().unwrap();
    m.clear(Slot(last + 1)).unwrap();
    m.clear(Slot(last + 400)).unwrap(); // Everything left expires or is decided.

    let all = events.drain();
    let answers = answers.lock().unwrap();

    // Gapless, in order.
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
    }
    let count = |f: &dyn Fn(&EventKind) -> bool| all.iter().filter(|e| f(&e.kind)).count();
    // Nothing lost, nothing doubled: one event per answer.
    assert_eq!(count(&|k| matches!(k, EventKind::BidAccepted { .. })), answers.accepted);
    assert_eq!(count(&|k| matches!(k, EventKind::BidCancelled { .. })), answers.cancelled);
    assert_eq!(
        count(&|k| matches!(k, EventKind::BidRejected { .. })),
        answers.rejected + answers.cancel_refused
    );
    // Every accepted bid is decided exactly once.
    let mut decided: HashMap<String, usize> = HashMap::new();
    for e in &all {
        match &e.kind {
            EventKind::BidWon { bid, .. }
            | EventKind::BidExpired { bid, .. }
            | EventKind::BidCancelled { bid, .. }
            | EventKind::BidLost { bid, retained: false, .. } => {
                *decided.entry(bid.to_string()).or_default() += 1
            }
            _ => {}
        }
    }
    assert_eq!(decided.len(), answers.accepted);
    assert!(decided.values().all(|&n| n == 1));
    assert!(answers.cancelled > 0 && answers.accepted > 1000, "the test exercised little");

    // Credits conserved; nothing left in escrow.
    let t = m.totals();
    assert_eq!(t.escrowed, Credits::ZERO);
    assert_eq!(t.available.micros() + t.burned.micros(), t.deposits.micros());
    assert_eq!(m.live_bids(), 0);

    // The stream is the market: applied to a fresh one, the same state. Operations that raced a
    // cycle's settlement may be sequenced after its outcome, never before: the replay never
    // overdraws an account.
    let follower = market();
    follower.replay(&all).unwrap();
    assert_eq!(follower.state_hash().unwrap(), m.state_hash().unwrap());

    // The stream replays sequentially to the same outcomes and balances.
    let (replayed, replay_market) = replay(&all);
    assert_eq!(outcomes(&all), outcomes(&replayed));
    for a in 0..AGENTS {
        assert_eq!(m.balance(&agent(a)), replay_market.balance(&agent(a)), "balance of agent {a}");
    }
}

/// Applies the stream's accepted operations one at a time on a fresh market.
fn replay(events: &[Event]) -> (Vec<Event>, Market) {
    let m = market();
    let mut sub = m.subscribe();
    let mut cycle = 0;
    for e in events {
        if let Some(c) = e.cycle
            && c != cycle
        {
            cycle = c;
            m.clear(e.slot).unwrap();
        }
        match &e.kind {
            EventKind::CreditsDeposited { agent, amount } => m.deposit(agent, *amount).unwrap(),
            EventKind::BidAccepted {
                bid,
                agent,
                bundle,
                duration,
                earliest_start,
                latest_end,
                limit,
                ..
            } => {
                let items: Vec<(&str, String)> =
                    bundle.0.iter().map(|(n, s)| (&**n, s.to_string())).collect();
                let bundle = m.bundle(items.iter().map(|(n, s)| (*n, s.as_str()))).unwrap();
                let b = Bid::new(bid.clone(), agent.clone(), bundle, *duration, *limit)
                    .window(*earliest_start, *latest_end);
                m.submit(b).unwrap();
            }
            EventKind::BidCancelled { bid, agent } => m.cancel(agent, bid).unwrap(),
            _ => {}
        }
    }
    let out = sub.drain();
    (out, m)
}

/// Each bid's outcome: start and payment if it won, else how it ended.
fn outcomes(events: &[Event]) -> BTreeMap<String, String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::BidWon { bid, start, payment, .. } => {
                Some((bid.to_string(), format!("won {start} {payment}")))
            }
            EventKind::BidLost { bid, shortfall, .. } => {
                Some((bid.to_string(), format!("lost {shortfall:?}")))
            }
            EventKind::BidExpired { bid, .. } => Some((bid.to_string(), "expired".into())),
            EventKind::BidCancelled { bid, .. } => Some((bid.to_string(), "cancelled".into())),
            _ => None,
        })
        .collect()
}
