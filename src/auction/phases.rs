//! The phases of a clearing cycle, one by one, for benches and the `bench` probe. Not a stable
//! API: it exposes the engine's insides so each phase can be timed alone.

use std::sync::Arc;

use super::bid::Bid;
use super::book::BookBid;
use super::clearing::{self, Discovery, Grid, Placement, Track};
use super::config::{Config, ConfigError, MarketConfig};
use super::error::Rejection;
use super::ids::{AgentId, BidId};
use super::intake::Intake;
use super::ledger::{Admission, Ledger, Need, Release};
use super::market::Market;
use super::money::Credits;
use crate::capacity::{Bundle, ResourceId, Share, Slot, Timeline};

/// One cycle's bids on an empty market, ready to be cleared phase by phase.
#[derive(Debug)]
pub struct Cycle {
    config: Arc<Config>,
    now: u64,
    bids: Vec<BookBid>,
    initial: Grid,
}

/// A cycle after placement.
#[derive(Debug)]
pub struct Placed {
    bids: Vec<BookBid>,
    placement: Placement,
    left: Grid,
}

impl Cycle {
    /// Checks `bids` against a market of `config` at slot `now` (as `submit` would, without a
    /// ledger) and lays them out for clearing, accepted in the order given.
    ///
    /// # Errors
    ///
    /// A bad configuration, or the first bid a market would refuse.
    pub fn new(
        config: &MarketConfig,
        bids: Vec<Bid>,
        now: Slot,
    ) -> Result<Cycle, Box<dyn std::error::Error>> {
        let config: Arc<Config> = Arc::new(config.validate().map_err(|e: ConfigError| Box::new(e))?);
        let mut book = Vec::with_capacity(bids.len());
        for (order, bid) in bids.into_iter().enumerate() {
            let checked = bid.check(&config, now).map_err(|e: Rejection| Box::new(e))?;
            let mut booked = BookBid::new(bid, checked, 0, None);
            booked.order = order as u64 + 1;
            book.push(booked);
        }
        let timeline = Timeline::new(config.resources.len(), config.horizon, now);
        let initial = clearing::grid_for(&timeline, book.iter(), now.0);
        Ok(Cycle { config, now: now.0, bids: book, initial })
    }

    /// Bids in the cycle.
    pub fn len(&self) -> usize {
        self.bids.len()
    }

    /// Whether the cycle has no bids.
    pub fn is_empty(&self) -> bool {
        self.bids.is_empty()
    }

    /// Ranks and places every bid; returns the placed cycle and the number of winners.
    pub fn place(&self) -> (Placed, usize) {
        let mut bids = self.bids.clone();
        let mut left = self.initial.clone();
        let track = if self.needs_thresholds() { Track::Blocked } else { Track::Starts };
        let placement = clearing::place(self.config.priority, self.now, &mut bids, &mut left, (track, None));
        let won = placement.starts.iter().filter(|s| s.is_some()).count();
        (Placed { bids, placement, left }, won)
    }

    /// Whether the cycle's pricing rule needs critical values (a market computes them only
    /// then).
    pub fn needs_thresholds(&self) -> bool {
        self.config.pricing == crate::auction::config::PricingRule::CriticalValue
            || self.config.always_critical_values
    }

    /// Critical values of the winners and shortfalls of the losers; returns how many are known.
    pub fn thresholds(&self, placed: &Placed) -> usize {
        clearing::thresholds(
            self.config.priority,
            &placed.bids,
            &placed.placement,
            &self.initial,
            self.config.clearing_threads,
        )
        .iter()
        .filter(|t| t.is_some())
        .count()
    }

    /// A ledger of its own funding every agent with exactly its bids' limits, and each bid of
    /// `placed` escrowed in it, as the market holds them when clearing starts. Winners will
    /// pay their limits (the amounts do not change the work).
    ///
    /// # Panics
    ///
    /// Never: every bid's agent is funded before it is escrowed.
    #[allow(unsafe_code)] // The id table's rebuild: this thread alone uses the ledger.
    pub fn escrowed(&self, placed: &Placed) -> Escrowed {
        let (ledger, (intake, mut reader)) = (Ledger::new(), Intake::new());
        let mut bids = placed.bids.clone();
        for b in &mut bids {
            // Nobody sequences this ledger's intake: a full ring is emptied.
            let mut empty = |need: Need| match need {
                Need::Room => intake.take(&mut reader, drop),
                // SAFETY: this thread alone uses the ledger.
                Need::Rebuild => unsafe { ledger.rebuild_ids(&intake, || intake.take(&mut reader, drop)) },
            };
            ledger.deposit(&intake, (&b.agent, b.limit), &None, &mut empty).expect("a positive limit");
            b.account = ledger.account_of(&b.agent).expect("an account just opened");
            let admission = Admission { bid: b.clone(), max_bids: u32::MAX, book_size: usize::MAX };
            ledger.admit(&intake, admission, &mut empty).expect("a funded agent");
        }
        let payments =
            (bids.iter().zip(&placed.placement.starts)).map(|(b, start)| start.map(|_| b.limit)).collect();
        Escrowed { ledger, intake, bids, payments, threads: self.config.clearing_threads }
    }

    /// Discovers the cycle's prices; returns `(ir, envy)`.
    pub fn discover(&self, placed: &Placed) -> (f64, f64) {
        let d: Discovery = clearing::discover(&self.config, &placed.bids, &placed.placement, &placed.left);
        (d.ir, d.envy)
    }
}

/// A cycle's bids escrowed in a ledger, ready to be settled.
#[derive(Debug)]
pub struct Escrowed {
    ledger: Ledger,
    intake: Intake,
    bids: Vec<BookBid>,
    payments: Vec<Option<Credits>>,
    /// The market's clearing threads, which settle its shards.
    threads: usize,
}

impl Escrowed {
    /// Settles the cycle as clearing does, once: winners pay, the others get their escrow back.
    /// Returns what was paid (burned) and what stays escrowed (nothing, when all went well).
    pub fn settle(&mut self) -> (Credits, Credits) {
        let mut releases: Vec<(&BookBid, Release)> = (self.bids.iter().zip(&self.payments))
            .map(|(b, p)| (b, p.map_or(Release::Returned, |payment| Release::Won { payment })))
            .collect();
        self.ledger.settle(&self.intake, &mut releases, (1, self.threads), None);
        let totals = self.ledger.totals();
        (totals.burned, totals.escrowed)
    }
}

/// The benchmark book: 4 resources, windows of up to 120 slots, 1–60 slot runs, 1–20% shares
/// of one to four resources, limits of 1–100 credits, 1,000 agents with plenty of credits.
/// Deterministic from its seed. The [`worst`](Workload::new) book keeps a horizon of 3600 slots
/// whatever its size (about 55× more asked than offered at 100k bids); the
/// [`realistic`](Workload::realistic) one stretches the horizon with the book so about 3× more
/// is asked than offered, a scheduler's usual state.
#[derive(Debug)]
pub struct Workload {
    /// The market's configuration.
    pub config: MarketConfig,
    /// The agents.
    pub agents: Vec<AgentId>,
}

/// Horizon of the worst-case benchmark book.
pub const HORIZON: u64 = 3600;

/// Capacity-slots a benchmark bid asks for on average: 2.5 resources x 10.5% x 30.5 slots.
const MEAN_ASK: f64 = 2.5 * 0.105 * 30.5;

/// How many times more a realistic book asks than it is offered.
pub const REALISTIC_OVERSUBSCRIPTION: f64 = 3.0;

impl Workload {
    /// The worst-case workload (horizon 3600), for books of up to `book` bids.
    pub fn new(book: usize) -> Workload {
        Workload::with_horizon(book, HORIZON)
    }

    /// The realistic workload for books of up to `book` bids: its horizon grows with the book
    /// so that `book` bids ask about [`REALISTIC_OVERSUBSCRIPTION`] times the capacity offered.
    pub fn realistic(book: usize) -> Workload {
        let horizon = (book as f64 * MEAN_ASK / (4.0 * REALISTIC_OVERSUBSCRIPTION)).ceil() as u64;
        Workload::with_horizon(book, horizon.max(HORIZON))
    }

    fn with_horizon(book: usize, horizon: u64) -> Workload {
        let config = MarketConfig {
            resources: ["cpu", "memory", "tokens", "attention"].map(String::from).into(),
            horizon,
            max_bids_per_agent: u32::MAX,
            book_size: book.max(1),
            ..MarketConfig::default()
        };
        let agents = (0..1000).map(|a| AgentId::new(&format!("agent-{a}")).expect("a token")).collect();
        Workload { config, agents }
    }

    /// How many times more `bids` ask (share x duration, summed) than the horizon offers.
    pub fn oversubscription(&self, bids: &[Bid]) -> f64 {
        let asked: f64 =
            bids.iter().map(|b| b.bundle().total_micros() as f64 * 1e-6 * b.duration() as f64).sum();
        asked / (self.config.resources.len() as f64 * self.config.horizon as f64)
    }

    /// A market of this workload, every agent funded.
    ///
    /// # Panics
    ///
    /// Never: the configuration is valid.
    pub fn market(&self) -> Market {
        let m = Market::builder().config(self.config.clone()).build().expect("a valid configuration");
        for a in &self.agents {
            m.deposit(a, Credits::from_units(1 << 32)).expect("a valid deposit");
        }
        m
    }

    /// `n` bids drawn from `seed`, ids prefixed with `prefix`.
    pub fn bids(&self, n: usize, seed: u64, prefix: &str) -> Vec<Bid> {
        let horizon = self.config.horizon;
        let mut x = seed;
        let mut next = |k: u64| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) % k
        };
        (0..n)
            .map(|i| {
                let kinds = 1 + next(4) as usize;
                let first = next(4) as usize;
                let items: Vec<(ResourceId, Share)> = (0..kinds)
                    .map(|k| {
                        let share = Share::from_micros(10_000 * (1 + next(20) as u32)).expect("a share");
                        (ResourceId::from_index((first + k) % 4).expect("r < 16"), share)
                    })
                    .collect();
                let duration = 1 + next(60) as u32;
                let window = u64::from(duration) + next(121 - u64::from(duration));
                let earliest = next(horizon - window);
                let agent = self.agents[next(self.agents.len() as u64) as usize].clone();
                let limit = Credits::from_micros(1_000_000 + next(99_000_000));
                let id = BidId::new(&format!("{prefix}{i}")).expect("a token");
                Bid::new(id, agent, Bundle::new(items).expect("a bundle"), duration, limit)
                    .window(Slot(earliest), Slot(earliest + window))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auction::clearing::Rows;

    /// The same cycle over a grid whose rows are stretches of one slot each: every path that
    /// weighs rows by their slots, and the replays without slot bitmasks, must decide exactly
    /// what the slot rows decide.
    #[test]
    fn stretches_of_one_slot_clear_as_slots() {
        let mut workload = Workload::new(1500);
        workload.config.horizon = 400;
        let cycle = Cycle::new(&workload.config, workload.bids(1500, 7, "b"), Slot(0)).expect("a book");
        let slots = &cycle.initial;
        let hi = slots.hi();
        let stretched = Grid { lo: 0, rows: Rows::stretches((slots.lo..=hi).collect()), ..slots.clone() };
        let clear = |initial: &Grid| {
            let (mut bids, mut left) = (cycle.bids.clone(), initial.clone());
            let placement = clearing::place(
                cycle.config.priority,
                cycle.now,
                &mut bids,
                &mut left,
                (Track::Blocked, None),
            );
            let thresholds = clearing::thresholds(cycle.config.priority, &bids, &placement, initial, 2);
            let discovery = clearing::discover(&cycle.config, &bids, &placement, &left);
            let starts: Vec<Option<u64>> =
                (0..bids.len()).map(|i| placement.starts[i].map(|row| placement.rows.slot(row))).collect();
            (starts, thresholds, discovery.runs(), discovery.ir, discovery.envy)
        };
        let (a, b) = (clear(slots), clear(&stretched));
        assert!(a.0.iter().filter(|s| s.is_some()).count() > 100, "a crowded book");
        assert_eq!(a.0, b.0, "starts");
        assert_eq!(a.1, b.1, "critical values and shortfalls");
        assert_eq!(a.2, b.2, "prices");
        assert_eq!((a.3, a.4), (b.3, b.4), "ir and envy");
    }

    /// A bid that lost and stayed is not searched again while no capacity was set since, and
    /// is searched again once capacity was set: it wins as soon as the capacity it needs comes
    /// back, over a wide window (nothing tracked) and a narrow one (blocked rows tracked) alike.
    #[test]
    fn a_retained_loser_is_searched_again_only_after_capacity_was_set() {
        use crate::auction::events::EventKind;
        use crate::auction::market::Market;
        use crate::capacity::Capacity;
        // A market with no cpu in its first 1,000 slots, and bids for half of it over `window`
        // slots that stay five cycles.
        let out_of_cpu = |bids: &[(u64, &str)]| {
            let m = Market::builder().resources(["cpu"]).build().expect("a market");
            let a = AgentId::new("a").expect("a token");
            m.deposit(&a, Credits::from_units(100)).expect("a deposit");
            m.set_capacity("cpu", Slot(0), Slot(1000), Capacity::NONE).expect("an outage");
            for &(window, id) in bids {
                let bundle = m.bundle([("cpu", "0.5")]).expect("a bundle");
                let id = BidId::new(id).expect("a token");
                let bid = Bid::new(id, a.clone(), bundle, 2, Credits::from_units(10))
                    .window(Slot(0), Slot(window))
                    .good_for(5);
                m.submit(bid).expect("booked");
            }
            let events = m.subscribe();
            (m, events)
        };
        for (window, id) in [(400, "wide"), (40, "narrow")] {
            let (m, mut events) = out_of_cpu(&[(window, id)]);
            for now in 0..2 {
                m.clear(Slot(now)).expect("a cycle");
                // Nothing won, and no limit would have: a loss without a shortfall.
                let kinds: Vec<EventKind> = events.drain().iter().map(|e| e.kind.clone()).collect();
                assert!(
                    kinds.iter().any(|k| matches!(k, EventKind::BidLost { shortfall: None, .. })),
                    "{id}"
                );
                assert!(
                    !kinds.iter().any(|k| matches!(
                        k,
                        EventKind::BidWon { .. } | EventKind::BidLost { shortfall: Some(_), .. }
                    )),
                    "{id}: no capacity, no win"
                );
            }
            // The same placement trusts an earlier loss only under the same settings.
            let mut cut = m.engine().take_cut(Slot(2), None).split();
            let settings = cut.settings;
            assert_eq!(cut.bids[0].lost_under, settings + 1, "{id}: it lost under these settings");
            let full = vec![Capacity::FULL.micros() as i32; cut.initial.free.len()];
            let mut left = Grid { free: full, ..cut.initial.clone() };
            let priority = cut.config.priority;
            let trusted = clearing::place(
                priority,
                2,
                &mut cut.bids.clone(),
                &mut left.clone(),
                (Track::Starts, Some(settings)),
            );
            assert_eq!(trusted.starts, [None], "{id}: an earlier loss is trusted");
            let searched =
                clearing::place(priority, 2, &mut cut.bids, &mut left, (Track::Starts, Some(settings + 1)));
            assert!(searched.starts[0].is_some(), "{id}: searched again after a setting");
        }
        let (m, mut events) = out_of_cpu(&[(400, "wide"), (40, "narrow")]);
        m.clear(Slot(0)).expect("a cycle");
        m.clear(Slot(1)).expect("a cycle");
        m.set_capacity("cpu", Slot(0), Slot(1000), Capacity::FULL).expect("capacity back");
        m.clear(Slot(2)).expect("a cycle");
        let won: Vec<String> = events
            .drain()
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::BidWon { bid, .. } => Some(bid.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(won, ["wide", "narrow"], "both win once capacity is back");
    }

    /// A book of a few standard bundles over one common window, each at many limits (a book
    /// of standard sizes): grouping alike losers must find exactly the prices finding each
    /// loser's demand alone does.
    #[test]
    fn alike_losers_grouped_find_the_prices_each_alone_finds() {
        let mut workload = Workload::new(3000);
        workload.config.horizon = 300;
        let agent = AgentId::new("agent-1").expect("a token");
        let bids: Vec<Bid> = (0..3000u64)
            .map(|k| {
                let (cpu, memory, duration) = (1 + k % 5, 1 + (k / 5) % 3, 5 + (k / 15) % 4 * 10);
                let bundle = crate::capacity::Bundle::new([
                    (
                        ResourceId::from_index(0).expect("cpu"),
                        Share::from_micros(cpu as u32 * 10_000).expect("a share"),
                    ),
                    (
                        ResourceId::from_index(1).expect("memory"),
                        Share::from_micros(memory as u32 * 20_000).expect("a share"),
                    ),
                ])
                .expect("a bundle");
                let limit = Credits::from_micros(1_000_000 + (k * 7919) % 50_000_000);
                Bid::new(
                    BidId::new(&format!("b{k}")).expect("a token"),
                    agent.clone(),
                    bundle,
                    duration as u32,
                    limit,
                )
                .window(Slot(0), Slot(200))
            })
            .collect();
        let cycle = Cycle::new(&workload.config, bids, Slot(0)).expect("a book");
        let (placed, won) = cycle.place();
        assert!(won > 100 && won < 2500, "a crowded book: {won} won");
        let (bids, p, left) = (&placed.bids, &placed.placement, &placed.left);
        let grouped = clearing::discover(&cycle.config, bids, p, left);
        let alone = clearing::discover_each_alone(&cycle.config, bids, p, left);
        assert_eq!(grouped.runs(), alone.runs(), "prices");
        assert_eq!((grouped.ir, grouped.envy), (alone.ir, alone.envy), "ir and envy");
        assert!(grouped.envy > 0.0, "losers that could afford a start, found by group: {}", grouped.envy);
        assert!(grouped.runs().iter().any(|&(.., price)| price > cycle.config.reserve[0]), "scarce cells");
    }
}
