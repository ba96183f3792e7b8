//! The intake: what producers hand to the single writer, and the cut that splits it by cycle.
//!
//! Every operation (a submit, a cancel, a deposit, a transfer, a refusal) claims a ticket from
//! the intake [`ring`] and writes its [`Entry`] under it: the ticket is its place in the order
//! operations happened, and the writer sequences entries in ticket order, without a lock and
//! without merging. An operation that takes credits from an account does so before it claims its
//! ticket, one that adds credits after, so a replay in ticket order never finds an account short
//! (see `ledger`).
//!
//! A clearing *cut* is a ticket too: the writer claims one, and the operations with tickets
//! below it are in the cycle's book, those above it after. While the cycle computes, the bids
//! it took are *frozen*: a cancel of one (a bid accepted below the cut, cancelled above it)
//! waits for the outcome instead of racing the settlement. Producers read the last cut through
//! [`Cuts`], a sequence lock the writer alone writes.

use std::sync::Arc;

use crate::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use crate::sync::{Condvar, Mutex};

use crossbeam_utils::CachePadded;

use super::book::BookBid;
use super::error::Rejection;
use super::ids::{AgentId, BidId};
use super::money::Credits;

pub(crate) mod ring;

pub(crate) use ring::Reader;

/// Slots in the intake ring: entries accepted and not yet sequenced. A producer that finds it
/// full sequences what is in it (as the writer's `flush` would) before it goes on.
pub(crate) const RING_SLOTS: usize = 1 << 17;

/// One accepted or refused operation, in the order producers made them.
#[derive(Debug)]
pub(crate) enum Entry {
    /// A bid booked and escrowed.
    Accepted(BookBid),
    /// A submit or cancel refused; a refused submit's id is remembered, to be forgotten later.
    Rejected {
        bid: String,
        agent: String,
        rejection: Rejection,
        correlation_id: Option<Arc<str>>,
        remember: Option<Remember>,
    },
    /// A pending bid withdrawn; its escrow was released.
    Cancelled { agent: AgentId, bid: BidId, correlation_id: Option<Arc<str>>, remember: Option<Remember> },
    /// Credits deposited.
    Deposited { agent: AgentId, amount: Credits, correlation_id: Option<Arc<str>> },
    /// Credits moved between accounts.
    Transferred { from: AgentId, to: AgentId, amount: Credits, correlation_id: Option<Arc<str>> },
    /// Nothing: a ticket claimed by an operation that made no event (a repeated id, an
    /// operation refused without one), or a cut.
    Void,
}

/// An id decided or refused in cycle `cycle`, which the writer forgets some cycles later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Remember {
    /// The agent's account.
    pub(crate) account: u32,
    pub(crate) bid: BidId,
    pub(crate) cycle: u64,
    /// Refused (else decided).
    pub(crate) refused: bool,
}

impl ring::Void for Entry {
    fn void() -> Entry {
        Entry::Void
    }
}

/// Tickets a producer claimed; entries go in with `put`, and tickets left are written void.
pub(crate) type Claim<'a> = ring::Claim<'a, Entry>;

/// The ring was full: the caller sequences what is in it and tries again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Full;

/// The last clearing cut, as producers read it: a sequence lock whose one writer is the market's.
#[derive(Debug)]
struct Cuts {
    /// Odd while the writer is making a cut.
    version: AtomicU64,
    /// The ticket of the last clearing cut; 0 before any.
    last: AtomicU64,
    /// Clearing cycles started (cut) so far.
    started: AtomicU64,
    /// The ticket of the cut whose cycle is being computed; 0 while none is.
    frozen: AtomicU64,
    /// The ticket at which the writer closed intake; 0 while it is open.
    closed: AtomicU64,
}

impl Cuts {
    /// Changes the cuts under the sequence lock: odd while `change` runs (the writer alone).
    fn write(&self, change: impl FnOnce(&Cuts)) {
        self.version.fetch_add(1, Ordering::SeqCst);
        change(self);
        self.version.fetch_add(1, Ordering::SeqCst);
    }
}

/// What a producer reads of the cuts, all from one instant.
#[derive(Clone, Copy, Debug)]
struct CutsSeen {
    last: u64,
    started: u64,
    frozen: u64,
    closed: u64,
}

/// The ring, the cuts and the live-bid count shared by producers and the writer.
#[derive(Debug)]
pub(crate) struct Intake {
    ring: ring::Ring<Entry>,
    cuts: Cuts,
    thaw: Mutex<()>,
    thawed: Condvar,
    /// Live bids in the book or on their way to it.
    live: CachePadded<AtomicUsize>,
}

/// The first ticket: 0 stands for "before every ticket" (a bid booked by a replay or a restore).
const FIRST_TICKET: u64 = 1;

impl Intake {
    /// An intake and the reader of its ring (the writer's).
    pub(crate) fn new() -> (Intake, Reader) {
        Intake::resumed(0)
    }

    /// The intake of a market that has already started `cycles` cycles (a restored one).
    pub(crate) fn resumed(cycles: u64) -> (Intake, Reader) {
        Intake::with_slots(cycles, RING_SLOTS)
    }

    /// As [`resumed`](Intake::resumed), with a ring of `slots`.
    pub(crate) fn with_slots(cycles: u64, slots: usize) -> (Intake, Reader) {
        let (ring, reader) = ring::Ring::new(slots, FIRST_TICKET);
        let cuts = Cuts {
            version: AtomicU64::new(0),
            last: AtomicU64::new(0),
            started: AtomicU64::new(cycles),
            frozen: AtomicU64::new(0),
            closed: AtomicU64::new(0),
        };
        let intake = Intake {
            ring,
            cuts,
            thaw: Mutex::new(()),
            thawed: Condvar::new(),
            live: CachePadded::new(AtomicUsize::new(0)),
        };
        (intake, reader)
    }

    /// Claims `n` consecutive tickets (at most the ring's slots), or [`Full`].
    pub(crate) fn claim(&self, n: usize) -> Result<Claim<'_>, Full> {
        if n > self.ring.capacity() {
            return Err(Full);
        }
        self.ring.claim(n.max(1) as u64).ok_or(Full)
    }

    /// The ring's slots: the most tickets one claim may take.
    pub(crate) fn slots(&self) -> usize {
        self.ring.capacity()
    }

    /// What producers read of the cuts, consistently.
    fn seen(&self) -> CutsSeen {
        let c = &self.cuts;
        let backoff = crossbeam_utils::Backoff::new();
        loop {
            let version = c.version.load(Ordering::SeqCst);
            if version & 1 == 0 {
                let seen = CutsSeen {
                    last: c.last.load(Ordering::SeqCst),
                    started: c.started.load(Ordering::SeqCst),
                    frozen: c.frozen.load(Ordering::SeqCst),
                    closed: c.closed.load(Ordering::SeqCst),
                };
                if c.version.load(Ordering::SeqCst) == version {
                    return seen;
                }
            }
            crate::sync::snooze(&backoff);
        }
    }

    /// The cycle an operation under `ticket` falls in, exactly as the event stream will show it:
    /// the clearing cycles started by cuts below it. Read after the ticket is claimed: only the
    /// last cut can be above it, since the writer takes every ticket below a cut before it makes
    /// the next.
    pub(crate) fn cycle_of(&self, ticket: u64) -> u64 {
        let seen = self.seen();
        if ticket > seen.last { seen.started } else { seen.started - 1 }
    }

    /// Clearing cycles started so far (the writer's view, or a replay's).
    pub(crate) fn started(&self) -> u64 {
        self.cuts.started.load(Ordering::SeqCst)
    }

    /// The ticket a bid booked now, outside the ring (by a replay or a restore), stands at: below
    /// any cut still to come, above every cut made.
    pub(crate) fn booked_now(&self) -> u64 {
        self.ring.claimed()
    }

    /// Whether a bid accepted under ticket `accepted` is in the cycle being cleared, for an
    /// operation under ticket `ticket`: a cut lies between them and its cycle is computing.
    pub(crate) fn is_frozen(&self, accepted: u64, ticket: u64) -> bool {
        let seen = self.seen();
        seen.frozen != 0 && accepted <= seen.frozen && seen.frozen < ticket
    }

    /// Whether intake was closed below `ticket`: its operation must give the ticket up (void) and
    /// wait for intake to open again.
    pub(crate) fn is_closed(&self, ticket: u64) -> bool {
        let seen = self.seen();
        seen.closed != 0 && seen.closed < ticket
    }

    /// Blocks until intake is open.
    pub(crate) fn wait_open(&self) {
        let mut guard = self.thaw.lock().unwrap_or_else(|e| e.into_inner());
        while self.cuts.closed.load(Ordering::SeqCst) != 0 {
            guard = self.thawed.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The writer closes intake: operations claiming a ticket from now on wait until it opens,
    /// and those that claimed one before have written their entries when this returns (they
    /// are in the ring, not yet sequenced). `room` is called when the ring is too full for the
    /// closing ticket (the caller sequences what is in it). Open it again with
    /// [`open`](Intake::open).
    pub(crate) fn close(&self, room: impl FnMut()) {
        let ticket = self.mark(|c, ticket| c.closed.store(ticket, Ordering::SeqCst), room);
        self.ring.wait_published(ticket);
    }

    /// Opens intake again and wakes the operations waiting for it.
    pub(crate) fn open(&self) {
        let _guard = self.thaw.lock().unwrap_or_else(|e| e.into_inner());
        self.cuts.write(|c| c.closed.store(0, Ordering::SeqCst));
        self.thawed.notify_all();
    }

    /// The writer claims a ticket of its own (a cut, a close) and, under the sequence lock,
    /// records it with `set`, so a producer whose ticket follows it sees it; `room` is called
    /// while the ring is too full for it. The ticket holds nothing.
    fn mark(&self, set: impl Fn(&Cuts, u64), mut room: impl FnMut()) -> u64 {
        loop {
            let mut marked = None;
            self.cuts.write(|c| {
                if let Some(claim) = self.ring.claim(1) {
                    set(c, claim.ticket());
                    marked = Some(claim.ticket());
                }
            });
            match marked {
                Some(ticket) => return ticket,
                None => room(),
            }
        }
    }

    /// Blocks until the cycle being cleared, if any, has its outcome.
    pub(crate) fn wait_thaw(&self) {
        let mut guard = self.thaw.lock().unwrap_or_else(|e| e.into_inner());
        while self.cuts.frozen.load(Ordering::SeqCst) != 0 {
            guard = self.thawed.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Takes one more live bid if fewer than `limit` are live.
    pub(crate) fn reserve_live(&self, limit: usize) -> bool {
        self.reserve_live_n(1, limit)
    }

    /// Takes `n` more live bids at once if no more than `limit` are then live.
    pub(crate) fn reserve_live_n(&self, n: usize, limit: usize) -> bool {
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |l| (l + n <= limit).then_some(l + n))
            .is_ok()
    }

    /// Gives back `n` live bids.
    pub(crate) fn release_live(&self, n: usize) {
        self.live.fetch_sub(n, Ordering::AcqRel);
    }

    /// Live bids in the book or on their way to it.
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// The writer: hands every entry claimed so far to `each`, in ticket order, waiting for any
    /// still being written. Void entries are skipped.
    pub(crate) fn take(&self, reader: &mut Reader, each: impl FnMut(Entry)) {
        self.take_until(reader, self.ring.claimed(), each);
    }

    /// As [`take`](Intake::take), the tickets below `until`.
    fn take_until(&self, reader: &mut Reader, until: u64, mut each: impl FnMut(Entry)) {
        self.ring.take(reader, until, |_, e| {
            if !matches!(e, Entry::Void) {
                each(e);
            }
        });
    }

    /// The writer's clearing cut: claims the cut's ticket, freezes the bids below it (their cycle
    /// starts), and hands every entry below it to `each`. Entries claimed after it stay for the
    /// next take.
    pub(crate) fn cut(&self, reader: &mut Reader, mut each: impl FnMut(Entry)) {
        // Room first, so producers never wait on a half-made cut for long.
        self.take(reader, &mut each);
        let set = |c: &Cuts, ticket| {
            c.last.store(ticket, Ordering::SeqCst);
            c.started.fetch_add(1, Ordering::SeqCst);
            c.frozen.store(ticket, Ordering::SeqCst);
        };
        let ticket = {
            let reader = &mut *reader;
            let each = &mut each;
            self.mark(set, || self.take(reader, &mut *each))
        };
        self.take_until(reader, ticket + 1, each);
    }

    /// Ends the freeze and wakes waiting cancels.
    pub(crate) fn thaw(&self) {
        let _guard = self.thaw.lock().unwrap_or_else(|e| e.into_inner());
        self.cuts.frozen.store(0, Ordering::SeqCst);
        self.thawed.notify_all();
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use crate::phases::Workload;
    use crate::{AgentId, BidId, Credits, Event, Market, Slot};

    /// A market whose intake ring holds `slots` entries, on the workload's configuration.
    fn market(workload: &Workload, slots: usize) -> Market {
        Market::builder().config(workload.config.clone()).build_with_ring(slots).unwrap()
    }

    /// Funds every agent of the workload.
    fn fund(market: &Market, workload: &Workload) {
        for a in &workload.agents {
            market.deposit(a, Credits::from_units(1 << 32)).unwrap();
        }
    }

    /// Deposits, submits (singly and in batches larger than the ring), cancels and a refusal,
    /// then a clearing; the events the market made.
    fn run(market: &Market, workload: &Workload) -> Vec<Event> {
        let mut events = market.subscribe();
        fund(market, workload);
        let bids = workload.bids(300, 3, "b");
        let (single, batch) = bids.split_at(100);
        for bid in single {
            market.submit(bid.clone()).unwrap();
        }
        assert!(market.submit_batch(batch.to_vec()).iter().all(Result::is_ok));
        for bid in &bids[..20] {
            market.cancel(bid.agent(), bid.id()).unwrap();
        }
        assert!(market.cancel(&AgentId::new("agent-0").unwrap(), &BidId::new("nope").unwrap()).is_err());
        market.clear(Slot(0)).unwrap();
        events.drain()
    }

    #[test]
    fn a_full_ring_is_sequenced_by_the_producer_and_changes_no_event() {
        let workload = Workload::new(301);
        let roomy = run(&market(&workload, super::RING_SLOTS), &workload);
        let tight = market(&workload, 8);
        assert_eq!(run(&tight, &workload), roomy);
        assert!(roomy.len() > 300 + 8, "the run fills an 8-slot ring many times over");
    }

    #[test]
    fn producers_on_two_threads_through_a_tiny_ring_lose_nothing() {
        let workload = Workload::new(4001);
        let m = market(&workload, 4);
        let mut events = m.subscribe();
        fund(&m, &workload);
        let bids = workload.bids(4000, 5, "b");
        std::thread::scope(|s| {
            for part in bids.chunks(2000) {
                let m = &m;
                s.spawn(move || {
                    for (i, bid) in part.iter().enumerate() {
                        if i % 3 == 0 {
                            assert!(m.submit_batch(vec![bid.clone()]).pop().unwrap().is_ok());
                        } else {
                            m.submit(bid.clone()).unwrap();
                        }
                    }
                });
            }
        });
        m.flush();
        let seqs: Vec<u64> = events.drain().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=4000 + workload.agents.len() as u64).collect::<Vec<_>>());
        assert_eq!(m.book_len(), 4000);
        let totals = m.totals();
        let held = totals.available.micros() + totals.escrowed.micros() + totals.burned.micros();
        assert_eq!(held, totals.deposits.micros());
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    /// A producer claims a ticket and reads its cycle while the writer cuts: an operation the
    /// cut took (below it) is of the cycle before, one it left (above it) of the cycle it
    /// started, as the event stream will show them; and a bid accepted below the cut is frozen
    /// for an operation above it.
    #[test]
    fn a_cut_racing_a_producer_puts_it_on_one_side() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(|| {
            let (intake, mut reader) = Intake::with_slots(0, 4);
            let intake = Arc::new(intake);
            let producer = {
                let intake = intake.clone();
                loom::thread::spawn(move || {
                    let mut claim = intake.claim(1).unwrap();
                    let ticket = claim.ticket();
                    let cycle = intake.cycle_of(ticket);
                    let frozen = intake.is_frozen(0, ticket);
                    claim.put(Entry::Deposited {
                        agent: crate::AgentId::new("a").unwrap(),
                        amount: crate::Credits::from_micros(cycle + 1),
                        correlation_id: None,
                    });
                    (cycle, frozen)
                })
            };
            let mut below = Vec::new();
            intake.cut(&mut reader, |e| below.push(e));
            let (cycle, frozen) = producer.join().unwrap();
            let mut above = Vec::new();
            intake.take(&mut reader, |e| above.push(e));
            assert_eq!(below.len() + above.len(), 1);
            assert_eq!(cycle, if below.is_empty() { 1 } else { 0 });
            assert_eq!(frozen, below.is_empty(), "a bid from before the cut is frozen after it");
            intake.thaw();
        });
    }
}
