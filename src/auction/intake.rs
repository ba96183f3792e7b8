//! The intake: what producers hand to the single writer, and the cut that splits it by cycle.
//!
//! Producers (any thread) append [`Entry`]s to their agent's ledger shard, under that shard's
//! lock, stamped with a ticket from one counter: the order operations happened in. The writer
//! takes them at a *cut*: it holds every shard lock for an instant, swaps each shard's buffer for
//! an empty one (buffers are reused, so intake allocates nothing in steady state), and merges
//! them by ticket before giving each its event `seq`. A clearing cut also bumps the epoch and
//! *freezes* the bids it took: while the cycle computes, a cancel of one of them waits for the
//! outcome instead of racing the settlement.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crossbeam_utils::CachePadded;

use super::book::BookBid;
use super::error::Rejection;
use super::ids::{AgentId, BidId};
use super::money::Credits;

/// One accepted or refused operation, in the order producers made them.
#[derive(Debug)]
pub(crate) enum Entry {
    /// A bid booked and escrowed.
    Accepted(BookBid),
    /// A submit or cancel refused.
    Rejected { bid: String, agent: String, rejection: Rejection, correlation_id: Option<Arc<str>> },
    /// A pending bid withdrawn; its escrow was released.
    Cancelled { agent: AgentId, bid: BidId, correlation_id: Option<Arc<str>> },
    /// Credits deposited.
    Deposited { agent: AgentId, amount: Credits, correlation_id: Option<Arc<str>> },
    /// Credits moved between accounts.
    Transferred { from: AgentId, to: AgentId, amount: Credits, correlation_id: Option<Arc<str>> },
}

/// Entries as a shard holds them: `(ticket, entry)`, tickets increasing.
pub(crate) type Pending = Vec<(u64, Entry)>;

/// The tickets, the cycle epoch and the freeze shared by producers and the writer.
///
/// The two counters every submit writes (tickets and live bids) sit on cache lines of their own,
/// apart from each other and from the epoch and freeze every submit only reads, so producers on
/// different cores do not invalidate each other's copy of what they merely read.
#[derive(Debug)]
pub(crate) struct Intake {
    /// The next ticket: a total order of intake operations.
    tickets: CachePadded<AtomicU64>,
    /// Incremented at every clearing cut (under every shard lock); a bid remembers the epoch it
    /// was accepted in.
    epoch: AtomicU64,
    /// Bids accepted in an epoch below this are being cleared; 0 when no cycle is running.
    frozen_below: AtomicU64,
    thaw: Mutex<()>,
    thawed: Condvar,
    /// Live bids in the book or on their way to it.
    live: CachePadded<AtomicUsize>,
}

impl Intake {
    pub(crate) fn new() -> Intake {
        Intake::resumed(0)
    }

    /// The intake of a market that has already started `cycles` cycles (a restored one).
    pub(crate) fn resumed(cycles: u64) -> Intake {
        Intake {
            tickets: CachePadded::new(AtomicU64::new(0)),
            epoch: AtomicU64::new(cycles + 1),
            frozen_below: AtomicU64::new(0),
            thaw: Mutex::new(()),
            thawed: Condvar::new(),
            live: CachePadded::new(AtomicUsize::new(0)),
        }
    }

    /// `n` consecutive tickets; the first is returned. Take them with the agent's shard locked,
    /// so an agent's entries are in the order its ledger changed.
    pub(crate) fn tickets(&self, n: u64) -> u64 {
        self.tickets.fetch_add(n, Ordering::Relaxed)
    }

    /// The current epoch. Read with the agent's shard locked.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Clearing cycles started (cut) so far. Read with the agent's shard locked, it tells on
    /// which side of every cut an operation falls, exactly as the event stream will show it.
    pub(crate) fn started(&self) -> u64 {
        self.epoch() - 1
    }

    /// Takes one more live bid if fewer than `limit` are live.
    pub(crate) fn reserve_live(&self, limit: usize) -> bool {
        self.live.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < limit).then_some(n + 1)).is_ok()
    }

    /// Gives back `n` live bids.
    pub(crate) fn release_live(&self, n: usize) {
        self.live.fetch_sub(n, Ordering::AcqRel);
    }

    /// Live bids in the book or on their way to it.
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Whether a bid accepted in `epoch` is in the cycle being cleared. Read with its agent's
    /// shard locked.
    pub(crate) fn is_frozen(&self, epoch: u64) -> bool {
        epoch < self.frozen_below.load(Ordering::Acquire)
    }

    /// Blocks until the bids of `epoch` are no longer frozen.
    pub(crate) fn wait_thaw(&self, epoch: u64) {
        let mut guard = self.thaw.lock().unwrap_or_else(|e| e.into_inner());
        while self.is_frozen(epoch) {
            guard = self.thawed.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Freezes the bids accepted so far and opens the next epoch. Call with every shard locked
    /// (the clearing cut), so no producer is between a ledger change and its entry.
    pub(crate) fn freeze(&self) {
        let epoch = self.epoch.fetch_add(1, Ordering::AcqRel);
        self.frozen_below.store(epoch + 1, Ordering::Release);
    }

    /// Ends the freeze and wakes waiting cancels.
    pub(crate) fn thaw(&self) {
        let _guard = self.thaw.lock().unwrap_or_else(|e| e.into_inner());
        self.frozen_below.store(0, Ordering::Release);
        self.thawed.notify_all();
    }
}

/// Merges the shards' buffers (each in ticket order) into one ticket order, handing each entry
/// to `each` and leaving the buffers empty for reuse.
pub(crate) fn merge(buffers: &mut [Pending], mut each: impl FnMut(Entry)) {
    let mut heads: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    let mut drains: Vec<std::iter::Peekable<std::vec::Drain<'_, (u64, Entry)>>> =
        buffers.iter_mut().map(|b| b.drain(..).peekable()).collect();
    for (k, d) in drains.iter_mut().enumerate() {
        if let Some(&(ticket, _)) = d.peek() {
            heads.push(Reverse((ticket, k)));
        }
    }
    while let Some(Reverse((_, k))) = heads.pop() {
        let (_, entry) = drains[k].next().expect("a head has an entry");
        each(entry);
        if let Some(&(ticket, _)) = drains[k].peek() {
            heads.push(Reverse((ticket, k)));
        }
    }
}
