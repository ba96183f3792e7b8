//! The ids each agent has used: an open-addressing table, inserted into and read by producers
//! without a lock, so a repeated id is answered with its first result.
//!
//! A slot goes `EMPTY → BUSY → READY → TOMB` and never back. A producer claims an empty slot
//! by compare-and-swap (`EMPTY → BUSY`), writes the key and what is fixed about the bid, then
//! publishes it (`READY`, with the key's hash). Two producers inserting the same key probe the
//! same slots in the same order, so the second meets the first's slot: it waits while that slot
//! is `BUSY` (the first is a few stores from done) and then finds the key. Only the writer
//! forgets ids (`READY → TOMB`); a tombstone is skipped by lookups and never reused, so no probe
//! sequence ever changes under a reader.
//!
//! A slot's body is written once, before `READY`, and read only after; it is dropped when the
//! table is, and the writer replaces the table only while intake is closed (no producer between
//! a claim and its entry), so nothing is freed under a reader. The bid's changing state (pending,
//! decided, refused) and the `seq` of its `bid_accepted` are atomic words beside the body.
#![allow(unsafe_code)]

use std::hash::BuildHasher;
use std::mem::MaybeUninit;

use crate::auction::error::Rejection;
use crate::auction::ids::BidId;
use crate::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use crate::sync::cell::UnsafeCell;

const EMPTY: u64 = 0;
const BUSY: u64 = 1;
const TOMB: u64 = 2;
/// Set in the tag of every published slot, beside the key's hash.
const READY: u64 = 1 << 63;

/// A bid's state, as one word: what it is and, beside it, a ticket or a cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// In the book, accepted under intake ticket `accepted`.
    Pending { accepted: u64 },
    /// Accepted earlier, decided (won, lost, expired, cancelled) in cycle `cycle`.
    Decided { cycle: u64 },
    /// Refused in cycle `cycle` (the body holds the refusal).
    Refused { cycle: u64 },
}

const KIND: u32 = 62;
const VALUE: u64 = (1 << KIND) - 1;

impl State {
    fn word(self) -> u64 {
        match self {
            State::Pending { accepted } => accepted & VALUE,
            State::Decided { cycle } => 1 << KIND | (cycle & VALUE),
            State::Refused { cycle } => 2 << KIND | (cycle & VALUE),
        }
    }

    fn of(word: u64) -> State {
        let value = word & VALUE;
        match word >> KIND {
            0 => State::Pending { accepted: value },
            1 => State::Decided { cycle: value },
            _ => State::Refused { cycle: value },
        }
    }
}

/// What is fixed about a remembered id: whose, which, the limit it escrows, and, for a refused
/// one, the refusal.
#[derive(Debug)]
pub(crate) struct Body {
    pub(crate) account: u32,
    pub(crate) bid: BidId,
    pub(crate) limit: u64,
    pub(crate) refusal: Option<Box<Rejection>>,
}

struct Slot {
    /// `EMPTY`, `BUSY`, `TOMB`, or `READY` and the key's hash.
    tag: AtomicU64,
    /// The bid's [`State`] as a word.
    state: AtomicU64,
    /// The `seq` of its `bid_accepted`; 0 until the writer has sequenced it.
    seq: AtomicU64,
    body: UnsafeCell<MaybeUninit<Body>>,
}

/// A published slot: its body, read-only, and its changing state.
#[derive(Clone, Copy)]
pub(crate) struct Id<'a> {
    slot: &'a Slot,
}

impl std::fmt::Debug for Id<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Id").field("body", self.body()).field("state", &self.state()).finish()
    }
}

impl<'a> Id<'a> {
    pub(crate) fn body(&self) -> &'a Body {
        // SAFETY: an `Id` is made only for a slot seen `READY` (with `Acquire`), whose body was
        // written before and is never written again while the table lives.
        self.slot.body.with(|p| unsafe { (*p).assume_init_ref() })
    }

    pub(crate) fn state(&self) -> State {
        State::of(self.slot.state.load(Ordering::Acquire))
    }

    /// Moves the state from `from` to `to`; false when it was no longer `from`.
    pub(crate) fn change(&self, from: State, to: State) -> bool {
        self.slot.state.compare_exchange(from.word(), to.word(), Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Sets the state (the writer, on a bid no producer can change: frozen, or replayed).
    pub(crate) fn set(&self, to: State) {
        self.slot.state.store(to.word(), Ordering::Release);
    }

    /// The `seq` of its `bid_accepted`, once sequenced.
    pub(crate) fn seq(&self) -> Option<u64> {
        let seq = self.slot.seq.load(Ordering::Acquire);
        (seq > 0).then_some(seq)
    }

    pub(crate) fn set_seq(&self, seq: u64) {
        self.slot.seq.store(seq, Ordering::Release);
    }
}

/// What an insert found.
#[derive(Debug)]
pub(crate) enum Inserted<'a> {
    /// The key is new: its slot, published with the body and state given.
    New(Id<'a>),
    /// The key was there: the first one.
    Repeat(Id<'a>),
    /// The table is as full as it may get: the writer must rebuild it first. The body comes
    /// back.
    Full(Body),
}

/// The table. See the module documentation.
pub(crate) struct IdTable {
    slots: Box<[Slot]>,
    /// Slots ever claimed (tombstones included); kept at most [`IdTable::limit`].
    used: AtomicUsize,
    hasher: foldhash::fast::FixedState,
}

// SAFETY: bodies (`Send + Sync`) are written by the one producer that claimed their slot before
// it is published and only read after, as the module documentation says.
unsafe impl Send for IdTable {}
// SAFETY: as above.
unsafe impl Sync for IdTable {}

impl std::fmt::Debug for IdTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdTable")
            .field("slots", &self.slots.len())
            .field("used", &self.used.load(Ordering::Relaxed))
            .finish()
    }
}

/// The smallest table.
pub(crate) const MIN_SLOTS: usize = 1 << 10;

impl IdTable {
    /// A table of at least `slots` (rounded up to a power of two).
    pub(crate) fn new(slots: usize) -> IdTable {
        let slots = slots.max(4).next_power_of_two();
        IdTable {
            slots: (0..slots)
                .map(|_| Slot {
                    tag: AtomicU64::new(EMPTY),
                    state: AtomicU64::new(0),
                    seq: AtomicU64::new(0),
                    body: UnsafeCell::new(MaybeUninit::uninit()),
                })
                .collect(),
            used: AtomicUsize::new(0),
            hasher: foldhash::fast::FixedState::with_seed(0x1d5_7ab1e),
        }
    }

    /// Slots a table may use before it is rebuilt: three in four, so probes stay short and an
    /// empty slot always ends them.
    fn limit(&self) -> usize {
        self.slots.len() / 4 * 3
    }

    /// Whether the table is full enough to rebuild.
    pub(crate) fn is_full(&self) -> bool {
        self.used.load(Ordering::Acquire) >= self.limit()
    }

    fn tag(&self, account: u32, bid: &str) -> u64 {
        READY | (self.hasher.hash_one((account, bid)) >> 1)
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// The published, unforgotten slot of `(account, bid)`, waiting out one being written.
    pub(crate) fn find(&self, account: u32, bid: &str) -> Option<Id<'_>> {
        let tag = self.tag(account, bid);
        let mut at = tag as usize & self.mask();
        loop {
            let slot = &self.slots[at];
            match wait_published(slot) {
                EMPTY => return None,
                t if t == tag => {
                    let id = Id { slot };
                    let body = id.body();
                    if body.account == account && body.bid.as_str() == bid {
                        return Some(id);
                    }
                }
                _ => {}
            }
            at = (at + 1) & self.mask();
        }
    }

    /// Reserves room for `n` inserts at once ([`insert_reserved`](IdTable::insert_reserved)),
    /// if the table has it: a batch touches the shared count once, not once per id.
    pub(crate) fn reserve(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| (u + n <= self.limit()).then_some(u + n))
            .is_ok()
    }

    /// Gives back `n` reserved inserts not made.
    pub(crate) fn unreserve(&self, n: usize) {
        if n > 0 {
            self.used.fetch_sub(n, Ordering::AcqRel);
        }
    }

    /// Inserts `body` in `state` unless its key is there already.
    pub(crate) fn insert(&self, body: Body, state: State) -> Inserted<'_> {
        self.insert_with(body, state, false)
    }

    /// As [`insert`](IdTable::insert), into room reserved before: a new id uses one reserved
    /// insert (never `Full`), a repeat none.
    pub(crate) fn insert_reserved(&self, body: Body, state: State) -> Inserted<'_> {
        self.insert_with(body, state, true)
    }

    fn insert_with(&self, body: Body, state: State, reserved: bool) -> Inserted<'_> {
        let tag = self.tag(body.account, body.bid.as_str());
        let mut at = tag as usize & self.mask();
        loop {
            let slot = &self.slots[at];
            match wait_published(slot) {
                EMPTY => {
                    if !reserved && self.used.fetch_add(1, Ordering::AcqRel) >= self.limit() {
                        self.used.fetch_sub(1, Ordering::AcqRel);
                        return Inserted::Full(body);
                    }
                    if slot.tag.compare_exchange(EMPTY, BUSY, Ordering::AcqRel, Ordering::Acquire).is_err() {
                        // Another producer took it first: look at what it publishes.
                        if !reserved {
                            self.used.fetch_sub(1, Ordering::AcqRel);
                        }
                        continue;
                    }
                    // SAFETY: the slot is `BUSY` and this producer made it so: no one else writes
                    // it, and no one reads its body until it is `READY`.
                    slot.body.with_mut(|p| unsafe { (*p).write(body) });
                    slot.state.store(state.word(), Ordering::Relaxed);
                    slot.seq.store(0, Ordering::Relaxed);
                    slot.tag.store(tag, Ordering::Release);
                    return Inserted::New(Id { slot });
                }
                t if t == tag => {
                    let id = Id { slot };
                    let first = id.body();
                    if first.account == body.account && first.bid == body.bid {
                        return Inserted::Repeat(id);
                    }
                }
                _ => {}
            }
            at = (at + 1) & self.mask();
        }
    }

    /// Forgets `(account, bid)` if its state is still `state` (the writer only).
    pub(crate) fn forget(&self, account: u32, bid: &str, state: State) {
        let tag = self.tag(account, bid);
        let mut at = tag as usize & self.mask();
        loop {
            let slot = &self.slots[at];
            match wait_published(slot) {
                EMPTY => return,
                t if t == tag => {
                    let id = Id { slot };
                    let body = id.body();
                    if body.account == account && body.bid.as_str() == bid {
                        if id.state() == state {
                            slot.tag.store(TOMB, Ordering::Release);
                        }
                        return;
                    }
                }
                _ => {}
            }
            at = (at + 1) & self.mask();
        }
    }

    /// Every published, unforgotten slot.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Id<'_>> {
        self.slots.iter().filter(|s| s.tag.load(Ordering::Acquire) & READY != 0).map(|slot| Id { slot })
    }

    /// Ids remembered (tombstones apart).
    pub(crate) fn len(&self) -> usize {
        self.iter().count()
    }

    /// A table holding this one's remembered ids (not its tombstones), with room for as many
    /// again. Call with no producer inside the table.
    pub(crate) fn rebuilt(mut self) -> IdTable {
        let live = self.len();
        let bigger = IdTable::new((live * 4).max(self.slots.len() / 2).max(MIN_SLOTS));
        let slots = std::mem::take(&mut self.slots);
        for slot in slots.into_vec() {
            let tag = slot.tag.load(Ordering::Acquire);
            if tag == EMPTY || tag == BUSY {
                continue;
            }
            // SAFETY: a `READY` or `TOMB` slot's body was written and is taken out once, here,
            // the old table being consumed.
            let body = slot.body.with(|p| unsafe { (*p).assume_init_read() });
            if tag & READY == 0 {
                continue;
            }
            let state = State::of(slot.state.load(Ordering::Acquire));
            let seq = slot.seq.load(Ordering::Acquire);
            match bigger.insert(body, state) {
                Inserted::New(id) => id.set_seq(seq),
                _ => unreachable!("a rebuilt table has room for each id once"),
            }
        }
        bigger
    }
}

/// A slot's tag once it is not being written.
fn wait_published(slot: &Slot) -> u64 {
    let backoff = crossbeam_utils::Backoff::new();
    loop {
        let tag = slot.tag.load(Ordering::Acquire);
        if tag != BUSY {
            return tag;
        }
        crate::sync::snooze(&backoff);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn body(account: u32, bid: &str) -> Body {
        Body { account, bid: BidId::new(bid).unwrap(), limit: 1, refusal: None }
    }

    #[test]
    fn an_id_is_found_until_forgotten_and_a_rebuild_keeps_what_is_remembered() {
        let table = IdTable::new(16);
        assert!(matches!(table.insert(body(1, "a"), State::Pending { accepted: 3 }), Inserted::New(_)));
        assert!(matches!(table.insert(body(2, "a"), State::Refused { cycle: 0 }), Inserted::New(_)));
        assert!(matches!(table.insert(body(1, "a"), State::Refused { cycle: 0 }), Inserted::Repeat(_)));
        let id = table.find(1, "a").unwrap();
        id.set_seq(9);
        assert!(id.change(State::Pending { accepted: 3 }, State::Decided { cycle: 4 }));
        assert!(!id.change(State::Pending { accepted: 3 }, State::Decided { cycle: 5 }), "decided once");
        table.forget(2, "a", State::Refused { cycle: 1 });
        assert!(table.find(2, "a").is_some(), "a later state is not forgotten");
        table.forget(2, "a", State::Refused { cycle: 0 });
        assert!(table.find(2, "a").is_none());
        // Forgotten, the id can be used again.
        assert!(matches!(table.insert(body(2, "a"), State::Pending { accepted: 8 }), Inserted::New(_)));
        let mut n = 0;
        let table = loop {
            if table.is_full() {
                break table.rebuilt();
            }
            match table.insert(body(3, &format!("x{n}")), State::Decided { cycle: 1 }) {
                Inserted::New(_) => n += 1,
                other => panic!("{other:?}"),
            }
        };
        assert!(!table.is_full());
        assert_eq!(table.len(), n + 2);
        let id = table.find(1, "a").unwrap();
        assert_eq!((id.state(), id.seq()), (State::Decided { cycle: 4 }, Some(9)));
        assert_eq!(table.find(2, "a").unwrap().state(), State::Pending { accepted: 8 });
        assert!(table.find(3, &format!("x{}", n - 1)).is_some());
    }
}

impl Drop for IdTable {
    fn drop(&mut self) {
        for slot in self.slots.iter() {
            let tag = slot.tag.load(Ordering::Acquire);
            if tag != EMPTY && tag != BUSY {
                // SAFETY: a published or forgotten slot's body was written, and is dropped once.
                slot.body.with_mut(|p| unsafe { (*p).assume_init_drop() });
            }
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    fn body(bid: &str) -> Body {
        Body { account: 7, bid: BidId::new(bid).unwrap(), limit: 5, refusal: None }
    }

    /// Two producers insert the same id at once, while a third looks for it: one books it, the
    /// other finds the first, and the reader sees it whole or not at all.
    #[test]
    fn the_same_id_inserted_twice_at_once_is_booked_once() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(|| {
            let table = Arc::new(IdTable::new(4));
            let inserts: Vec<_> = (0..2u64)
                .map(|p| {
                    let table = table.clone();
                    loom::thread::spawn(move || {
                        match table.insert(body("b1"), State::Pending { accepted: p + 1 }) {
                            Inserted::New(_) => true,
                            Inserted::Repeat(first) => {
                                assert_eq!(first.body().limit, 5);
                                false
                            }
                            Inserted::Full(_) => panic!("room for one id"),
                        }
                    })
                })
                .collect();
            if let Some(found) = table.find(7, "b1") {
                assert_eq!(found.body().bid.as_str(), "b1");
            }
            let booked: Vec<bool> = inserts.into_iter().map(|h| h.join().unwrap()).collect();
            assert_eq!(booked.iter().filter(|b| **b).count(), 1, "booked once");
            assert_eq!(table.len(), 1);
        });
    }
}
