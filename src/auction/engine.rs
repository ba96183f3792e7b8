//! The single writer: sequences intake into events and keeps what only clearing touches. A
//! cycle's own steps (the cut, the outcome) are in [`super::cycle`].

use std::sync::Arc;
use std::sync::mpsc::Sender;

use super::book::Book;
use super::clearing::Discovery;
use super::config::Config;
use super::cycle::{Cut, PriceReport};
use super::events::{BundleShares, Event, EventKind};
use super::ids::BidId;
use super::intake::{Entry, Remember};
use super::money::Price;
use crate::capacity::{Slot, Timeline};

/// The writer's state: everything only clearing and sequencing touch.
#[derive(Debug)]
pub(crate) struct Engine {
    pub(crate) config: Arc<Config>,
    pub(crate) timeline: Timeline,
    pub(crate) book: Book,
    /// The last `seq` given.
    pub(crate) seq: u64,
    /// Cycles started (cut) so far.
    pub(crate) cycle: u64,
    pub(crate) now: Slot,
    /// The smoothed price of every resource, once a cycle has set it.
    pub(crate) index: Vec<Option<Price>>,
    pub(crate) prices: Vec<PriceReport>,
    /// The last cycle's price of every resource in every slot it reached.
    pub(crate) discovery: Option<Discovery>,
    subscribers: Vec<Sender<Arc<Vec<Event>>>>,
    /// Events made since the last publish.
    pending: Vec<Event>,
    /// Bids whose `bid_accepted` was just sequenced: `(account, bid, seq)`, for the ledger to
    /// remember the seq a repeat of the id is answered with.
    pub(crate) accepted: Vec<(u32, BidId, u64)>,
    /// Ids just decided or refused, for the ledger to forget in time.
    pub(crate) remembered: Vec<Remember>,
    /// A cycle replay has cut but not yet seen the outcome of (the journal ended mid-cycle).
    pub(crate) in_flight: Option<Cut>,
    /// The in-flight cycle's outcome events replayed so far.
    pub(crate) outcome: Vec<Event>,
}

impl Engine {
    pub(crate) fn new(config: Arc<Config>, start: Slot) -> Engine {
        let resources = config.resources.len();
        Engine {
            timeline: Timeline::new(resources, config.horizon, start),
            book: Book::default(),
            seq: 0,
            cycle: 0,
            now: start,
            index: vec![None; resources],
            prices: Vec::new(),
            discovery: None,
            subscribers: Vec::new(),
            pending: Vec::new(),
            accepted: Vec::new(),
            remembered: Vec::new(),
            in_flight: None,
            outcome: Vec::new(),
            config,
        }
    }

    pub(crate) fn subscribe(&mut self, tx: Sender<Arc<Vec<Event>>>) {
        self.subscribers.push(tx);
    }

    /// Live bids in the book.
    pub(crate) fn book_len(&self) -> usize {
        self.book.len()
    }

    pub(crate) fn emit(
        &mut self,
        cycle: Option<u64>,
        correlation_id: Option<Arc<str>>,
        kind: EventKind,
    ) -> u64 {
        self.seq += 1;
        self.pending.push(Event { seq: self.seq, cycle, slot: self.now, correlation_id, kind });
        self.seq
    }

    /// Makes room for `n` more events before the next publish (an outcome's, made at once).
    pub(crate) fn reserve_events(&mut self, n: usize) {
        self.pending.reserve(n);
    }

    /// Hands the events made since the last publish to every subscriber.
    pub(crate) fn publish(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        // Handed over as made, not copied: a cycle's outcome holds an event per bid in the book.
        let batch = Arc::new(std::mem::take(&mut self.pending));
        self.subscribers.retain(|tx| tx.send(batch.clone()).is_ok());
    }

    /// Takes the events made since the last publish, handing them to nobody (a replay's, which
    /// are already known).
    pub(crate) fn take_unpublished(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.pending)
    }

    /// Drops the first unpublished events, which must be `known` (a resumed cycle's outcome
    /// events that a replay had already seen).
    ///
    /// # Panics
    ///
    /// When they differ: clearing is deterministic, so the same cut must make the same events.
    pub(crate) fn drop_known(&mut self, known: &[Event]) {
        let made = &self.pending[..known.len().min(self.pending.len())];
        assert_eq!(made, known, "a resumed cycle made other events than the ones recorded");
        self.pending.drain(..known.len());
    }

    /// Gives one intake entry its place in the event stream.
    pub(crate) fn sequence(&mut self, entry: Entry) {
        match entry {
            Entry::Accepted(mut bid) => {
                let bundle = BundleShares::of(&bid.bundle, &self.config.resources);
                let kind = EventKind::BidAccepted {
                    bid: bid.id.clone(),
                    agent: bid.agent.clone(),
                    beneficiary: bid.beneficiary.clone(),
                    bundle,
                    duration: bid.window.duration(),
                    earliest_start: bid.window.earliest_start(),
                    latest_end: bid.window.latest_end(),
                    limit: bid.limit,
                    good_for: bid.cycles_left,
                };
                bid.order = self.emit(None, bid.correlation_id.clone(), kind);
                self.accepted.push((bid.account, bid.id.clone(), bid.order));
                self.book.insert(bid);
            }
            Entry::Rejected { bid, agent, rejection, correlation_id, remember } => {
                self.remembered.extend(remember);
                let kind = EventKind::BidRejected {
                    bid: clip(bid),
                    agent: clip(agent),
                    reason: rejection.code,
                    message: rejection.message,
                };
                self.emit(None, correlation_id, kind);
            }
            Entry::Cancelled { agent, bid, correlation_id, remember } => {
                self.remembered.extend(remember);
                self.emit(
                    None,
                    correlation_id,
                    EventKind::BidCancelled { bid: bid.clone(), agent: agent.clone() },
                );
                self.book.cancel(agent, bid);
            }
            Entry::Deposited { agent, amount, correlation_id } => {
                self.emit(None, correlation_id, EventKind::CreditsDeposited { agent, amount });
            }
            Entry::Transferred { from, to, amount, correlation_id } => {
                self.emit(None, correlation_id, EventKind::CreditsTransferred { from, to, amount });
            }
            Entry::Void => {}
        }
    }
}

/// The longest raw id a `bid_rejected` echoes, in bytes.
pub(crate) const MAX_ECHOED_ID: usize = 64;

/// A raw id from a refused request, cut to [`MAX_ECHOED_ID`] bytes (on a character boundary) for
/// the event.
pub(crate) fn clip(mut s: String) -> String {
    if s.len() > MAX_ECHOED_ID {
        let mut at = MAX_ECHOED_ID;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
    s
}
