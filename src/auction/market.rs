//! [`Market`]: the facade. Intake from any thread; clearing by one writer at a time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};

use super::bid::{Bid, BidRequest};
use super::builder::MarketBuilder;
use super::config::{Config, MarketConfig};
use super::correlated::Correlated;
use super::cycle::{self, Cut, CycleReport, PriceReport};
use super::engine::Engine;
use super::error::Result;
use super::events::Event;
use super::ids::{AgentId, BidId};
use super::intake::{Intake, Reader};
use super::ledger::{Balance, Ledger, LedgerTotals, Need};
use super::lines::Prepared;
use super::money::{Credits, Price};
use super::subscription::Subscription;
use crate::capacity::{Bundle, BundleError, Capacity, Resources, Slot};

/// A market for shares of capacity over time.
///
/// `submit`, `cancel`, `deposit` and `transfer` may be called from any number of threads at once;
/// they take no lock (escrow by compare-and-swap, ids in a lock-free table) and hand their entry
/// to the writer through a lock-free ring. `clear`, `flush` and `set_capacity` are the writer's. One `clear` runs at a time; it holds the writer only to cut the book at its
/// start and to apply its outcome at its end, so intake goes on being sequenced (by `flush`)
/// while it computes: bids accepted meanwhile wait for the next cycle. Events reach subscribers
/// in `seq` order when the writer sequences them, at every `flush` and `clear`.
///
/// # Examples
///
/// ```
/// use capacity_auction::{AgentId, Bid, BidId, EventKind, Market, PricingRule, Slot};
///
/// let market = Market::builder().resources(["cpu"]).pricing(PricingRule::PayAsBid).build()?;
/// let events = market.subscribe();
/// let a = AgentId::new("a")?;
/// market.deposit(&a, "100".parse()?)?;
/// let bundle = market.bundle([("cpu", "0.7")])?;
/// market.submit(Bid::new(BidId::new("b1")?, a.clone(), bundle, 10, "50".parse()?))?;
/// let report = market.clear(Slot(0))?;
/// assert_eq!(report.won, 1);
/// assert!(events.try_iter().any(|e| matches!(e.kind, EventKind::BidWon { .. })));
/// assert_eq!(market.balance(&a).unwrap().available, "50".parse()?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Market {
    pub(super) config: Arc<Config>,
    pub(super) source: MarketConfig,
    pub(super) ledger: Ledger,
    pub(super) intake: Intake,
    /// The current slot, as producers validate against it.
    pub(super) now: AtomicU64,
    /// Cycles cleared, as producers record refusals with it.
    pub(super) cycles: AtomicU64,
    pub(super) engine: Mutex<Engine>,
    /// The intake ring's one reader: taken with the engine locked.
    pub(super) reader: Mutex<Reader>,
    /// Held for a whole cycle: one runs at a time, and a snapshot waits for it.
    pub(super) clearing: Mutex<()>,
    /// Cycle outcome events' lines made ahead, for a consumer that asked for them.
    pub(super) lines: Prepared,
}

/// A submit's answer when it was not refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The bid.
    pub bid: BidId,
    /// Its agent.
    pub agent: AgentId,
    /// True when the id had been accepted before: nothing was booked this time.
    pub repeat: bool,
    /// For a repeat, the `seq` of the first acceptance's `bid_accepted`, once sequenced.
    pub seq: Option<u64>,
}

impl Market {
    /// A builder with every key at its default.
    pub fn builder() -> MarketBuilder {
        MarketBuilder::default()
    }

    /// The configuration the market was built from.
    pub fn config(&self) -> &MarketConfig {
        &self.source
    }

    /// The resources sold.
    pub fn resources(&self) -> &Resources {
        &self.config.resources
    }

    /// A bundle from `(resource name, share)` pairs.
    ///
    /// # Errors
    ///
    /// An unknown resource, a bad share, a repeat, or no pairs.
    pub fn bundle<'a, I: IntoIterator<Item = (&'a str, &'a str)>>(
        &self,
        items: I,
    ) -> Result<Bundle, BundleError> {
        Bundle::from_names(&self.config.resources, items)
    }

    /// The current slot: the last clearing's, or the start.
    pub fn now(&self) -> Slot {
        Slot(self.now.load(Ordering::Acquire))
    }

    /// A handle whose operations tag the events they cause with `correlation_id`.
    pub fn correlated(&self, correlation_id: &str) -> Correlated<'_> {
        Correlated { market: self, cid: Some(correlation_id.into()) }
    }

    /// A handle tagging its operations with `correlation_id` if there is one (a request's
    /// optional header, a scenario step's optional id).
    pub fn tagged(&self, correlation_id: Option<&str>) -> Correlated<'_> {
        Correlated { market: self, cid: correlation_id.map(Arc::from) }
    }

    /// A handle whose operations tag nothing: the market itself, as a [`Correlated`].
    pub fn uncorrelated(&self) -> Correlated<'_> {
        Correlated { market: self, cid: None }
    }

    fn untagged(&self) -> Correlated<'_> {
        self.uncorrelated()
    }

    /// Books `bid` and escrows its limit, or refuses it with a reason (and emits
    /// `bid_rejected`). A repeated id gets the first answer and books nothing.
    ///
    /// # Errors
    ///
    /// Any submit reason code of docs/design.md §8.
    pub fn submit(&self, bid: Bid) -> Result<Receipt> {
        self.untagged().submit(bid)
    }

    /// Submits a bid as JSON gives it; malformed requests are refused like bad bids.
    ///
    /// # Errors
    ///
    /// As [`submit`](Market::submit), plus `malformed` and `unknown_field`.
    pub fn submit_request(&self, request: &BidRequest) -> Result<Receipt> {
        self.untagged().submit_request(request)
    }

    /// Submits many bids at once, answering each in order: as [`submit`](Market::submit) for each,
    /// but the batch claims its places in the event stream at once.
    pub fn submit_batch(&self, bids: Vec<Bid>) -> Vec<Result<Receipt>> {
        self.untagged().submit_batch(bids)
    }

    /// Submits a bid given as JSON; a payload that does not decode is refused (and emits
    /// `bid_rejected` naming whatever id and agent could be read from it).
    ///
    /// # Errors
    ///
    /// As [`submit_request`](Market::submit_request).
    pub fn submit_json(&self, json: &[u8]) -> Result<Receipt> {
        self.untagged().submit_json(json)
    }

    /// Submits a request on behalf of `agent` (authenticated elsewhere, e.g. by a subject); a
    /// request naming another agent is `forbidden`.
    ///
    /// # Errors
    ///
    /// As [`submit_request`](Market::submit_request), plus `forbidden`.
    pub fn submit_as(&self, agent: &AgentId, request: &BidRequest) -> Result<Receipt> {
        self.untagged().submit_as(agent, request)
    }

    /// Withdraws a pending bid and releases its escrow. If the bid is in a cycle being cleared,
    /// waits for that cycle's outcome.
    ///
    /// # Errors
    ///
    /// `not_found` for an unknown bid, `not_pending` for one already decided.
    pub fn cancel(&self, agent: &AgentId, bid: &BidId) -> Result<()> {
        self.untagged().cancel(agent, bid)
    }

    /// Adds credits to an account, opening it if needed.
    ///
    /// # Errors
    ///
    /// `invalid_amount` for zero or an overflowing amount; nothing is emitted.
    pub fn deposit(&self, agent: &AgentId, amount: Credits) -> Result<()> {
        self.untagged().deposit(agent, amount)
    }

    /// Moves available credits between accounts.
    ///
    /// # Errors
    ///
    /// `invalid_amount`, `unknown_agent`, `insufficient_credits`; nothing is emitted.
    pub fn transfer(&self, from: &AgentId, to: &AgentId, amount: Credits) -> Result<()> {
        self.untagged().transfer(from, to, amount)
    }

    /// Sets the capacity of `resource` in `[from, to)`.
    ///
    /// # Errors
    ///
    /// `unknown_resource`, or `invalid_window` for an empty range or one already past.
    pub fn set_capacity(&self, resource: &str, from: Slot, to: Slot, capacity: Capacity) -> Result<()> {
        self.untagged().set_capacity(resource, from, to, capacity)
    }

    /// Runs one clearing cycle at slot `now`.
    ///
    /// # Errors
    ///
    /// `invalid_window` when `now` is before the current slot: time never goes back.
    pub fn clear(&self, now: Slot) -> Result<CycleReport> {
        self.untagged().clear(now)
    }

    /// Sequences everything accepted so far and hands its events to subscribers, without
    /// clearing; returns the `seq` of the last event made.
    pub fn flush(&self) -> u64 {
        let mut engine = self.engine();
        self.sequence_intake(&mut engine, false);
        engine.publish();
        engine.seq
    }

    /// The journal lines its cycles make ahead, when asked for.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn lines(&self) -> &Prepared {
        &self.lines
    }

    /// Drops `value` on the market's clearing threads, off the caller's: a cycle's events (one
    /// per bid in the book) are freed there rather than on the writer.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn drop_later<T: Send + 'static>(&self, value: T) {
        super::clearing::drop_in_background(self.config.clearing_threads, value);
    }

    /// The `seq` of the last event made (sequenced) so far.
    pub fn last_seq(&self) -> u64 {
        self.engine().seq
    }

    /// The writer's cut: takes every entry accepted so far (up to a clearing cut, freezing the
    /// bids below it, when `freeze`) and gives each its place in the event stream.
    pub(super) fn sequence_intake(&self, engine: &mut Engine, freeze: bool) {
        let mut reader = self.reader();
        if freeze {
            self.intake.cut(&mut reader, |e| engine.sequence(e));
        } else {
            self.intake.take(&mut reader, |e| engine.sequence(e));
        }
        drop(reader);
        self.hand_over(engine);
    }

    /// Hands the ledger what sequencing learnt: the seqs of accepted bids, the ids to forget.
    pub(super) fn hand_over(&self, engine: &mut Engine) {
        if !engine.accepted.is_empty() {
            self.ledger.mark_sequenced(&engine.accepted);
            engine.accepted.clear();
        }
        if !engine.remembered.is_empty() {
            self.ledger.remember(engine.remembered.drain(..));
        }
    }

    /// Computes a cut cycle and makes its outcome ready outside the writer, then applies it; of
    /// its events, those in `known` (a prefix a replay already saw) are not published again.
    pub(super) fn complete(&self, mut cut: Cut, known: &[Event]) -> CycleReport {
        // All of it on the clearing threads, which yield to intake when the cores are short.
        let lines = self.lines.wanted();
        let outcome = super::clearing::on_pool(cut.config.clearing_threads, move || {
            let cleared = cycle::compute(&mut cut);
            cycle::Outcome::of(cut, cleared, lines)
        });
        let mut engine = self.engine();
        if let Some(first) = known.first() {
            engine.seq = first.seq - 1;
        }
        let report = engine.apply((&self.ledger, &self.intake, &self.lines), outcome);
        engine.drop_known(known);
        self.cycles.store(report.cycle, Ordering::Release);
        self.intake.thaw();
        self.ledger.forget(report.cycle, self.config.dedupe_cycles);
        engine.publish();
        report
    }

    /// Finishes a cycle that [`replay`](Market::replay) left in flight (the events ended between
    /// its `cycle_started` and its outcome), as the market that cut it would have; `None` when
    /// no cycle is in flight. [`clear`](Market::clear) does this first by itself.
    pub fn resume(&self) -> Option<CycleReport> {
        let _one = self.clearing();
        self.resume_locked()
    }

    pub(super) fn resume_locked(&self) -> Option<CycleReport> {
        let (cut, known) = {
            let mut engine = self.engine();
            (engine.in_flight.take()?, std::mem::take(&mut engine.outcome))
        };
        Some(self.complete(cut, &known))
    }

    /// Events from now on, as the writer sequences them.
    pub fn subscribe(&self) -> Subscription {
        let (tx, rx) = mpsc::channel();
        self.engine().subscribe(tx);
        Subscription::new(rx)
    }

    /// An agent's credits, if it has an account.
    pub fn balance(&self, agent: &AgentId) -> Option<Balance> {
        self.ledger.balance(agent)
    }

    /// Ledger totals: `available + escrowed + burned == deposits`.
    pub fn totals(&self) -> LedgerTotals {
        self.ledger.totals()
    }

    /// Clearing cycles run so far; the next one is this plus one.
    pub fn cycles(&self) -> u64 {
        self.cycles.load(Ordering::Acquire)
    }

    /// Live bids: pending in the book or accepted and not yet sequenced.
    pub fn live_bids(&self) -> usize {
        self.intake.live()
    }

    /// Bids in the book (accepted and sequenced, not yet decided).
    pub fn book_len(&self) -> usize {
        self.engine().book_len()
    }

    /// The latest price figures of every resource (empty before the first cycle).
    pub fn prices(&self) -> Vec<PriceReport> {
        self.engine().prices.clone()
    }

    /// The price the last cycle discovered for `resource` in `slot` (the reserve where that cycle
    /// did not reach, or before any cycle), if the market sells it: the forward price curve.
    pub fn price_at(&self, resource: &str, slot: Slot) -> Option<Price> {
        let id = self.config.resources.find(resource)?;
        let engine = self.engine();
        Some(match &engine.discovery {
            Some(d) => d.price(id.index(), slot.0),
            None => self.config.bound(self.config.reserve[id.index()]),
        })
    }

    /// Millionths of `resource` sold in `slot`, if the market sells it.
    pub fn sold(&self, resource: &str, slot: Slot) -> Option<u32> {
        let id = self.config.resources.find(resource)?;
        Some(self.engine().timeline.sold(id, slot))
    }

    /// Millionths of `resource` offered in `slot`, if the market sells it.
    pub fn capacity(&self, resource: &str, slot: Slot) -> Option<u32> {
        let id = self.config.resources.find(resource)?;
        Some(self.engine().timeline.capacity(id, slot))
    }

    pub(super) fn engine(&self) -> MutexGuard<'_, Engine> {
        // The engine is only changed by the writer, which checks before it writes.
        self.engine.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The intake ring's reader. Lock it with the engine locked.
    pub(super) fn reader(&self) -> MutexGuard<'_, Reader> {
        self.reader.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What a producer does when it cannot go on: sequences what is in a full ring, or rebuilds
    /// a full id table.
    #[allow(unsafe_code)] // The id table's rebuild, with the engine locked.
    pub(super) fn help(&self, need: Need) {
        match need {
            Need::Room => {
                self.flush();
            }
            Need::Rebuild => {
                let mut engine = self.engine();
                let room = || {
                    let mut reader = self.reader();
                    self.intake.take(&mut reader, |e| engine.sequence(e));
                };
                // SAFETY: the engine is locked: no settlement, sequencing or snapshot runs.
                unsafe { self.ledger.rebuild_ids(&self.intake, room) };
                self.hand_over(&mut engine);
                engine.publish();
            }
        }
    }

    pub(super) fn clearing(&self) -> MutexGuard<'_, ()> {
        self.clearing.lock().unwrap_or_else(|e| e.into_inner())
    }
}
