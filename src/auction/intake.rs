//! The intake: what producers hand to the single writer, and the cut that splits it by cycle.
//!
//! Producers (any thread) push [`Entry`]s onto a lock-free queue while holding only their
//! agent's ledger shard. The writer pops them in order and gives them their event `seq`. A
//! clearing cycle starts with a *cut*: the writer takes every shard lock for an instant, pushes a
//! [`Entry::Mark`] and bumps the epoch, so an entry belongs to this cycle exactly when it
//! precedes the mark. While the cycle computes, the bids it contains are *frozen*: a cancel of
//! one of them waits for the outcome instead of racing the settlement.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crossbeam_queue::SegQueue;

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
    /// The writer's cut: everything before it is sequenced now.
    Mark,
}

/// The queue between producers and the writer, and the cycle epoch.
#[derive(Debug)]
pub(crate) struct Intake {
    queue: SegQueue<Entry>,
    /// Incremented at every clearing cut (under every shard lock); a bid remembers the epoch it
    /// was accepted in.
    epoch: AtomicU64,
    /// Bids accepted in an epoch below this are being cleared; 0 when no cycle is running.
    frozen_below: AtomicU64,
    thaw: Mutex<()>,
    thawed: Condvar,
    /// Live bids in the book or on their way to it.
    live: AtomicUsize,
}

impl Intake {
    pub(crate) fn new() -> Intake {
        Intake {
            queue: SegQueue::new(),
            epoch: AtomicU64::new(1),
            frozen_below: AtomicU64::new(0),
            thaw: Mutex::new(()),
            thawed: Condvar::new(),
            live: AtomicUsize::new(0),
        }
    }

    /// Queues `entry` for the writer. Call with the agent's shard locked, so an agent's entries
    /// are in the order its ledger changed.
    pub(crate) fn push(&self, entry: Entry) {
        self.queue.push(entry);
    }

    /// The current epoch. Read with the agent's shard locked.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
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

    /// The clearing cut. Call with every shard locked: no producer is between a ledger change and
    /// its push. Freezes the bids accepted so far and opens the next epoch.
    pub(crate) fn cut_and_freeze(&self) {
        self.queue.push(Entry::Mark);
        let epoch = self.epoch.fetch_add(1, Ordering::AcqRel);
        self.frozen_below.store(epoch + 1, Ordering::Release);
    }

    /// A cut without freezing, to sequence what has arrived so far.
    pub(crate) fn cut(&self) {
        self.queue.push(Entry::Mark);
    }

    /// Ends the freeze and wakes waiting cancels.
    pub(crate) fn thaw(&self) {
        let _guard = self.thaw.lock().unwrap_or_else(|e| e.into_inner());
        self.frozen_below.store(0, Ordering::Release);
        self.thawed.notify_all();
    }

    /// Pops entries up to the writer's last mark, handing each to `each`. Only the writer calls
    /// this, after pushing its mark, so the first mark popped is its own.
    pub(crate) fn drain_to_mark(&self, mut each: impl FnMut(Entry)) {
        loop {
            match self.queue.pop() {
                Some(Entry::Mark) => return,
                Some(entry) => each(entry),
                None => unreachable!("the writer's mark is in the queue"),
            }
        }
    }
}
