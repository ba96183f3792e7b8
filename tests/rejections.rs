//! Every reason code of docs/design.md §8 is produced through the market's API, each refusal
//! changes nothing, and refused submits and cancels emit `bid_rejected` while refused credit
//! operations emit nothing.

use std::collections::BTreeSet;

use capacity_auction::{
    AgentId, Bid, BidId, BidRequest, Capacity, Credits, EventKind, LedgerTotals, Market, Price, RejectCode,
    Slot,
};

fn id(s: &str) -> BidId {
    BidId::new(s).unwrap()
}

fn agent(s: &str) -> AgentId {
    AgentId::new(s).unwrap()
}

fn credits(s: &str) -> Credits {
    s.parse().unwrap()
}

fn market() -> Market {
    Market::builder()
        .resources(["cpu", "memory"])
        .horizon(100)
        .reserve("memory", Price::from_units(1))
        .max_bids_per_agent(2)
        .book_size(3)
        .build()
        .unwrap()
}

/// Checks every refusal against the state before it: nothing may change.
struct Probe<'a> {
    market: &'a Market,
    seen: BTreeSet<&'static str>,
}

impl Probe<'_> {
    fn refused<T: std::fmt::Debug>(
        &mut self,
        code: RejectCode,
        op: impl FnOnce() -> capacity_auction::Result<T>,
    ) {
        let before: LedgerTotals = self.market.totals();
        let live = self.market.live_bids();
        let balances: Vec<_> = ["a", "b", "c"].iter().map(|a| self.market.balance(&agent(a))).collect();
        let got = op();
        assert_eq!(got.as_ref().map_err(|r| r.code).unwrap_err(), code, "{got:?}");
        assert!(!got.unwrap_err().message.is_empty());
        assert_eq!(self.market.totals(), before);
        assert_eq!(self.market.live_bids(), live);
        let after: Vec<_> = ["a", "b", "c"].iter().map(|a| self.market.balance(&agent(a))).collect();
        assert_eq!(balances, after, "{code} changed a balance");
        self.seen.insert(code.as_str());
    }
}

#[test]
fn every_reason_code_is_produced_and_changes_nothing() {
    let m = market();
    let mut events = m.subscribe();
    for a in ["a", "b", "c"] {
        m.deposit(&agent(a), credits("100")).unwrap();
    }
    let cpu = |s: &str| m.bundle([("cpu", s)]).unwrap();
    let bid = |i: &str, who: &str, limit: &str| Bid::new(id(i), agent(who), cpu("0.1"), 2, credits(limit));
    let mut p = Probe { market: &m, seen: BTreeSet::new() };

    p.refused(RejectCode::Malformed, || m.submit_json(b"{not json"));
    p.refused(RejectCode::Malformed, || {
        m.submit_json(br#"{"id":"bad id","agent":"a","bundle":{"cpu":0.1},"duration":1,"limit":1}"#)
    });
    p.refused(RejectCode::Malformed, || m.submit(bid("g0", "a", "1").good_for(0)));
    p.refused(RejectCode::UnknownField, || {
        m.submit_json(br#"{"id":"u","agent":"a","bundle":{"cpu":0.1},"duration":1,"limit":1,"tip":1}"#)
    });
    p.refused(RejectCode::UnknownResource, || {
        m.submit_json(br#"{"id":"r","agent":"a","bundle":{"gpu":0.1},"duration":1,"limit":1}"#)
    });
    p.refused(RejectCode::InvalidShare, || {
        m.submit_json(br#"{"id":"s","agent":"a","bundle":{"cpu":1.1},"duration":1,"limit":1}"#)
    });
    p.refused(RejectCode::EmptyBundle, || {
        m.submit_json(br#"{"id":"e","agent":"a","bundle":{},"duration":1,"limit":1}"#)
    });
    p.refused(RejectCode::InvalidDuration, || {
        m.submit(Bid::new(id("d"), agent("a"), cpu("0.1"), 101, credits("1")))
    });
    p.refused(RejectCode::InvalidWindow, || m.submit(bid("w", "a", "1").window(Slot(5), Slot(6))));
    p.refused(RejectCode::BeyondHorizon, || m.submit(bid("h", "a", "1").window(Slot(99), Slot(101))));
    p.refused(RejectCode::InvalidAmount, || m.submit(bid("x", "a", "0")));
    p.refused(RejectCode::BelowReserve, || {
        m.submit(Bid::new(
            id("m"),
            agent("a"),
            m.bundle([("memory", "0.5")]).unwrap(),
            2,
            credits("0.999999"),
        ))
    });
    p.refused(RejectCode::UnknownAgent, || m.submit(bid("n", "nobody", "1")));
    p.refused(RejectCode::InsufficientCredits, || m.submit(bid("big", "a", "100.000001")));
    p.refused(RejectCode::Forbidden, || {
        let req =
            BidRequest::from_json(br#"{"id":"f","agent":"b","bundle":{"cpu":0.1},"duration":1,"limit":1}"#)
                .unwrap();
        m.submit_as(&agent("a"), &req)
    });

    m.submit(bid("a1", "a", "1")).unwrap();
    m.submit(bid("a2", "a", "1")).unwrap();
    p.refused(RejectCode::TooManyBids, || m.submit(bid("a3", "a", "1")));
    m.submit(bid("b1", "b", "1")).unwrap();
    p.refused(RejectCode::BookFull, || m.submit(bid("c1", "c", "1")));
    p.refused(RejectCode::NotFound, || m.cancel(&agent("a"), &id("never")));
    p.refused(RejectCode::NotFound, || m.cancel(&agent("b"), &id("a1")));
    m.clear(Slot(0)).unwrap();
    p.refused(RejectCode::NotPending, || m.cancel(&agent("a"), &id("a1")));

    // Credit operations and operator steps refuse without events.
    p.refused(RejectCode::InvalidAmount, || m.deposit(&agent("a"), Credits::ZERO));
    p.refused(RejectCode::InvalidAmount, || m.deposit(&agent("a"), Credits::MAX));
    p.refused(RejectCode::UnknownAgent, || m.transfer(&agent("a"), &agent("nobody"), credits("1")));
    p.refused(RejectCode::InsufficientCredits, || m.transfer(&agent("a"), &agent("b"), credits("1000")));
    p.refused(RejectCode::UnknownResource, || m.set_capacity("gpu", Slot(0), Slot(5), Capacity::NONE));
    p.refused(RejectCode::InvalidWindow, || m.set_capacity("cpu", Slot(5), Slot(5), Capacity::NONE));
    p.refused(RejectCode::InvalidWindow, || {
        m.clear(Slot(0)).and_then(|_| m.clear(Slot(7))).and(m.clear(Slot(3)))
    });

    // `unavailable` and `internal` are the NATS service's own (tests/nats_durability.rs).
    let all: BTreeSet<&str> = RejectCode::ALL
        .iter()
        .filter(|c| !matches!(c, RejectCode::Unavailable | RejectCode::Internal))
        .map(|c| c.as_str())
        .collect();
    assert_eq!(p.seen, all, "every reason code of the market is produced");

    // One bid_rejected per refused submit or cancel, none for credits or capacity.
    let rejected: Vec<_> = events
        .drain()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::BidRejected { bid, reason, .. } => Some((bid, reason)),
            _ => None,
        })
        .collect();
    assert_eq!(rejected.len(), 20, "{rejected:?}");
    assert_eq!(rejected[0], (String::new(), RejectCode::Malformed), "nothing readable in `{{not json`");
    assert_eq!(rejected[1].0, "bad id");
    assert!(rejected.iter().any(|r| r == &("f".to_owned(), RejectCode::Forbidden)));
}

#[test]
fn repeated_ids_are_answered_with_the_first_result() {
    let m = market();
    m.deposit(&agent("a"), credits("10")).unwrap();
    let bundle = m.bundle([("cpu", "0.2")]).unwrap();
    let first = m.submit(Bid::new(id("b1"), agent("a"), bundle, 1, credits("4"))).unwrap();
    assert!(!first.repeat);
    let again = m.submit(Bid::new(id("b1"), agent("a"), bundle, 1, credits("9"))).unwrap();
    assert!(again.repeat);
    assert_eq!(m.balance(&agent("a")).unwrap().escrowed, credits("4"));
    assert_eq!(m.live_bids(), 1);

    let refused = m.submit(Bid::new(id("b2"), agent("a"), bundle, 1, credits("7"))).unwrap_err();
    assert_eq!(refused.code, RejectCode::InsufficientCredits);
    m.deposit(&agent("a"), credits("100")).unwrap();
    let still = m.submit(Bid::new(id("b2"), agent("a"), bundle, 1, credits("7"))).unwrap_err();
    assert_eq!(still, refused, "the first answer stands");

    // Decided bids are remembered for `dedupe_cycles` cycles, then the id is free again.
    let report = m.clear(Slot(0)).unwrap();
    assert_eq!(report.won, 1);
    assert!(m.submit(Bid::new(id("b1"), agent("a"), bundle, 1, credits("4"))).unwrap().repeat);
    for slot in 1..=100 {
        m.clear(Slot(slot)).unwrap();
    }
    assert!(!m.submit(Bid::new(id("b1"), agent("a"), bundle, 1, credits("4"))).unwrap().repeat);
}

#[test]
fn flush_publishes_intake_without_clearing() {
    let m = market();
    let mut events = m.subscribe();
    m.deposit(&agent("a"), credits("5")).unwrap();
    assert!(events.try_next().is_none(), "intake waits for the writer");
    m.flush();
    let e = events.try_next().unwrap();
    assert_eq!(e.seq, 1);
    assert!(matches!(e.kind, EventKind::CreditsDeposited { .. }));
    assert_eq!(m.book_len(), 0);
}

#[test]
fn a_batch_answers_like_submits_one_by_one() {
    let run = |batched: bool| {
        let m = market();
        let mut events = m.subscribe();
        for a in ["a", "b", "c"] {
            m.deposit(&agent(a), credits("3")).unwrap();
        }
        let bundle = m.bundle([("cpu", "0.2")]).unwrap();
        let bids: Vec<Bid> =
            [("x1", "a", "2"), ("y1", "b", "1"), ("x1", "a", "2"), ("x2", "a", "2"), ("z1", "c", "0")]
                .into_iter()
                .map(|(i, who, limit)| Bid::new(id(i), agent(who), bundle, 1, credits(limit)))
                .collect();
        let answers: Vec<_> =
            if batched { m.submit_batch(bids) } else { bids.into_iter().map(|b| m.submit(b)).collect() };
        m.flush();
        let codes: Vec<_> =
            answers.iter().map(|a| a.as_ref().map(|r| r.repeat).map_err(|e| e.code)).collect();
        let json: Vec<String> = events.drain().iter().map(capacity_auction::Event::to_json).collect();
        (codes, json, m.balance(&agent("a")))
    };
    let (codes, events, balance) = run(true);
    assert_eq!(
        codes,
        vec![
            Ok(false),
            Ok(false),
            Ok(true),
            Err(RejectCode::InsufficientCredits),
            Err(RejectCode::InvalidAmount)
        ]
    );
    assert_eq!((codes, events, balance), run(false), "the same answers, events and balances");
}
