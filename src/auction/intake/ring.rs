//! The intake ring: a bounded, lock-free, many-producer, one-consumer ring of entries in ticket
//! order (the multi-producer sequencer of a disruptor).
//!
//! A producer *claims* consecutive tickets by moving `claimed` forward with one compare-and-swap,
//! refused when the ring has no room for them; the ticket is the entry's place in the total order
//! of intake. It writes each entry into slot `ticket % capacity` and *publishes* it by storing the
//! slot's stamp. The consumer takes tickets in order, waiting at a slot whose stamp is not yet
//! published (a producer between its claim and its write: a few instructions, no locks, no
//! allocation), and frees slots by moving `taken` forward.
//!
//! Invariants, with `capacity` a power of two:
//! - `taken <= claimed <= taken + capacity`: at most a lap of claimed tickets not yet taken, so no
//!   two live tickets share a slot.
//! - A slot's stamp is `ticket + 1` exactly while it holds the published entry of `ticket`; it is
//!   anything else while the slot is free or being written. Stamps only grow.
//! - Every claimed ticket is written exactly once ([`Claim`] writes a void entry into any ticket
//!   it is dropped without, so even a panicking producer leaves no hole the consumer would wait on
//!   forever).
//!
//! Orderings: the stamp store is `Release` and the consumer's stamp load `Acquire`, so the entry
//! written before the stamp is seen whole. `taken` is stored `Release` after the consumer has
//! moved an entry out and loaded `Acquire` by a claim, so a producer never overwrites an entry
//! still being read. `claimed` moves by a `SeqCst` compare-and-swap: the market's cut orders its
//! own stores around a claim (see `intake::Cuts`).
#![allow(unsafe_code)]

use std::mem::MaybeUninit;

use crossbeam_utils::CachePadded;

use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::cell::UnsafeCell;

/// An entry that may be void: what a claimed ticket holds when its claim was given up.
pub(crate) trait Void {
    /// The entry that stands for nothing.
    fn void() -> Self;
}

/// One place in the ring.
struct Slot<T> {
    /// `ticket + 1` while the slot holds the published entry of `ticket`.
    stamp: AtomicU64,
    value: UnsafeCell<MaybeUninit<T>>,
}

/// The ring. See the module documentation for its invariants.
pub(crate) struct Ring<T> {
    /// The next ticket to claim.
    claimed: CachePadded<AtomicU64>,
    /// Tickets below this were taken by the consumer: their slots are free.
    taken: CachePadded<AtomicU64>,
    slots: Box<[Slot<T>]>,
    mask: u64,
}

// SAFETY: entries move from producers to the consumer (`T: Send`); a slot is written only by the
// one producer that claimed its ticket and read only by the one consumer after its stamp says it
// is published, so no entry is ever reached from two threads at once.
unsafe impl<T: Send> Send for Ring<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Ring<T> {}

impl<T> std::fmt::Debug for Ring<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("claimed", &self.claimed.load(Ordering::Relaxed))
            .field("taken", &self.taken.load(Ordering::Relaxed))
            .field("capacity", &self.slots.len())
            .finish()
    }
}

/// The ring's one consumer: whoever holds it takes entries out. There is exactly one per ring.
#[derive(Debug)]
pub(crate) struct Reader {
    /// The next ticket to take (mirrors the ring's `taken`, which only this reader moves).
    next: u64,
}

impl<T: Void> Ring<T> {
    /// A ring of `capacity` slots (a power of two), whose first ticket is `first`; and its reader.
    ///
    /// # Panics
    ///
    /// When `capacity` is not a power of two.
    pub(crate) fn new(capacity: usize, first: u64) -> (Ring<T>, Reader) {
        assert!(capacity.is_power_of_two(), "the ring's capacity is a power of two");
        let ring = Ring {
            claimed: CachePadded::new(AtomicU64::new(first)),
            taken: CachePadded::new(AtomicU64::new(first)),
            slots: slots(capacity),
            mask: capacity as u64 - 1,
        };
        (ring, Reader { next: first })
    }

    /// The ring's slots.
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The next ticket to be claimed: every ticket below it is claimed.
    pub(crate) fn claimed(&self) -> u64 {
        self.claimed.load(Ordering::SeqCst)
    }

    /// Claims `n` consecutive tickets (1 to the capacity), or `None` when the ring has no room
    /// for them until the consumer takes some.
    pub(crate) fn claim(&self, n: u64) -> Option<Claim<'_, T>> {
        debug_assert!(n >= 1 && n <= self.slots.len() as u64);
        let mut first = self.claimed.load(Ordering::Relaxed);
        loop {
            if first + n - self.taken.load(Ordering::Acquire) > self.slots.len() as u64 {
                return None;
            }
            match self.claimed.compare_exchange_weak(first, first + n, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => return Some(Claim { ring: self, next: first, end: first + n }),
                Err(now) => first = now,
            }
        }
    }

    /// Hands each entry of a ticket below `until` (at most what is claimed) to `each` in ticket
    /// order, waiting for any not yet published, and frees their slots.
    pub(crate) fn take(&self, reader: &mut Reader, until: u64, mut each: impl FnMut(u64, T)) {
        debug_assert!(until <= self.claimed());
        while reader.next < until {
            let ticket = reader.next;
            let slot = &self.slots[(ticket & self.mask) as usize];
            wait(|| slot.stamp.load(Ordering::Acquire) == ticket + 1);
            // SAFETY: the stamp says the producer of `ticket` wrote the slot and will not touch it
            // again; no other ticket maps to it until `taken` passes `ticket`; and this reader is
            // the only one, so the value is moved out exactly once.
            let value = slot.value.with(|p| unsafe { (*p).assume_init_read() });
            reader.next += 1;
            // Free slots as they are read in groups, so producers waiting for room see it
            // without each entry writing to the line they read.
            if reader.next & FREE_EVERY == 0 {
                self.taken.store(reader.next, Ordering::Release);
            }
            each(ticket, value);
        }
        self.taken.store(reader.next, Ordering::Release);
    }

    /// Waits until every ticket below `until` (at most what is claimed) is published; takes
    /// nothing. Any thread may wait.
    pub(crate) fn wait_published(&self, until: u64) {
        let mut ticket = self.taken.load(Ordering::Acquire);
        while ticket < until {
            let slot = &self.slots[(ticket & self.mask) as usize];
            // A later stamp means the ticket was taken and its slot reused: published too.
            wait(|| slot.stamp.load(Ordering::Acquire) > ticket);
            ticket += 1;
        }
    }

    /// Takes every entry claimed so far, as [`take`](Ring::take).
    #[cfg(test)]
    pub(crate) fn take_all(&self, reader: &mut Reader, each: impl FnMut(u64, T)) {
        let until = self.claimed();
        self.take(reader, until, each);
    }
}

/// Slots freed per store of `taken` while taking, less one.
const FREE_EVERY: u64 = 63;

/// Waits for `ready`: spins a little, then yields the core (two cores are few to spin on).
fn wait(ready: impl Fn() -> bool) {
    let backoff = crossbeam_utils::Backoff::new();
    while !ready() {
        crate::sync::snooze(&backoff);
    }
}

#[cfg(not(loom))]
fn slots<T>(capacity: usize) -> Box<[Slot<T>]> {
    let layout = std::alloc::Layout::array::<Slot<T>>(capacity).expect("a ring that fits in memory");
    if layout.size() == 0 {
        return (0..capacity).map(|_| Slot::new()).collect();
    }
    // Zeroed memory is a ring of free slots (stamp 0, no value), and the system hands large
    // zeroed allocations over untouched: a ring costs the pages its entries have used.
    // SAFETY: `layout` is non-zero in size.
    let raw = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<Slot<T>>();
    if raw.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    // SAFETY: `raw` was allocated by the global allocator for exactly `capacity` slots, and an
    // all-zero `Slot` is valid: an `AtomicU64` of 0 and an uninitialised value.
    unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(raw, capacity)) }
}

#[cfg(loom)]
fn slots<T>(capacity: usize) -> Box<[Slot<T>]> {
    (0..capacity).map(|_| Slot::new()).collect()
}

impl<T> Slot<T> {
    #[cfg_attr(not(loom), allow(dead_code))]
    fn new() -> Slot<T> {
        Slot { stamp: AtomicU64::new(0), value: UnsafeCell::new(MaybeUninit::uninit()) }
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        let (taken, claimed) = (self.taken.load(Ordering::Relaxed), self.claimed.load(Ordering::Relaxed));
        for ticket in taken..claimed {
            let slot = &self.slots[(ticket & self.mask) as usize];
            if slot.stamp.load(Ordering::Relaxed) == ticket + 1 {
                // SAFETY: published and never taken: the value is initialised and dropped once.
                slot.value.with_mut(|p| unsafe { (*p).assume_init_drop() });
            }
        }
    }
}

/// Tickets claimed and not yet written: `next..end`. Entries go in with [`put`](Claim::put), in
/// ticket order; tickets left when it is dropped are written void.
#[derive(Debug)]
pub(crate) struct Claim<'a, T: Void> {
    ring: &'a Ring<T>,
    next: u64,
    end: u64,
}

impl<T: Void> Claim<'_, T> {
    /// The next ticket [`put`](Claim::put) will write.
    pub(crate) fn ticket(&self) -> u64 {
        self.next
    }

    /// Writes `value` under the next claimed ticket and publishes it; returns the ticket.
    ///
    /// # Panics
    ///
    /// When every claimed ticket is written.
    pub(crate) fn put(&mut self, value: T) -> u64 {
        assert!(self.next < self.end, "a claim's tickets are all written");
        let ticket = self.next;
        let slot = &self.ring.slots[(ticket & self.ring.mask) as usize];
        // SAFETY: this claim alone holds `ticket`, and the claim checked that the slot's previous
        // ticket (a lap earlier) was taken, so no one else reads or writes the slot now.
        slot.value.with_mut(|p| unsafe { (*p).write(value) });
        slot.stamp.store(ticket + 1, Ordering::Release);
        self.next += 1;
        ticket
    }
}

impl<T: Void> Drop for Claim<'_, T> {
    fn drop(&mut self) {
        while self.next < self.end {
            self.put(T::void());
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    impl Void for u64 {
        fn void() -> u64 {
            0
        }
    }

    #[test]
    fn entries_come_out_in_ticket_order_and_a_full_ring_refuses_a_claim() {
        let (ring, mut reader) = Ring::<u64>::new(4, 1);
        let mut a = ring.claim(3).unwrap();
        assert_eq!(a.put(10), 1);
        assert!(ring.claim(2).is_none(), "three of four slots are claimed");
        let mut b = ring.claim(1).unwrap();
        assert_eq!(b.put(40), 4);
        assert_eq!(a.put(20), 2);
        drop(a); // ticket 3 is written void
        let mut seen = Vec::new();
        ring.take_all(&mut reader, |t, v| seen.push((t, v)));
        assert_eq!(seen, [(1, 10), (2, 20), (3, 0), (4, 40)]);
        // The slots are free again: a whole lap can be claimed.
        let mut c = ring.claim(4).unwrap();
        for v in 5..=8 {
            c.put(v * 10);
        }
        drop(c);
        seen.clear();
        ring.take(&mut reader, 7, |t, v| seen.push((t, v)));
        assert_eq!(seen, [(5, 50), (6, 60)]);
    }

    #[test]
    fn entries_left_in_a_dropped_ring_are_dropped() {
        let counted = std::sync::Arc::new(());
        struct Counted(#[allow(dead_code)] Option<std::sync::Arc<()>>);
        impl Void for Counted {
            fn void() -> Counted {
                Counted(None)
            }
        }
        let (ring, _reader) = Ring::<Counted>::new(8, 1);
        let mut claim = ring.claim(3).unwrap();
        claim.put(Counted(Some(counted.clone())));
        claim.put(Counted(Some(counted.clone())));
        drop(claim);
        assert_eq!(std::sync::Arc::strong_count(&counted), 3);
        drop(ring);
        assert_eq!(std::sync::Arc::strong_count(&counted), 1);
    }

    #[test]
    fn producers_on_threads_lose_nothing_and_keep_their_order() {
        let (ring, mut reader) = Ring::<u64>::new(64, 1);
        let per = 20_000u64;
        let mut seen: Vec<u64> = Vec::new();
        std::thread::scope(|s| {
            for p in 0..2u64 {
                let ring = &ring;
                s.spawn(move || {
                    for i in 0..per {
                        loop {
                            if let Some(mut c) = ring.claim(1) {
                                c.put(1 + p * per + i);
                                break;
                            }
                            std::thread::yield_now();
                        }
                    }
                });
            }
            while seen.len() < 2 * per as usize {
                ring.take_all(&mut reader, |_, v| seen.push(v));
                std::thread::yield_now();
            }
        });
        for p in 0..2u64 {
            let mine: Vec<u64> = seen.iter().copied().filter(|v| (v - 1) / per == p).collect();
            assert_eq!(mine, (1 + p * per..1 + (p + 1) * per).collect::<Vec<_>>());
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    impl Void for u64 {
        fn void() -> u64 {
            0
        }
    }

    /// Every interleaving with up to three preemptions (loom's advice: bugs need few), checked.
    fn model(f: impl Fn() + Sync + Send + 'static) {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(f);
    }

    /// Two producers claim and write while the reader takes: whatever the interleaving, every
    /// entry comes out once, whole, in ticket order, and the reader waits at a claimed slot
    /// rather than read it half-written.
    #[test]
    fn producers_racing_the_reader_lose_nothing() {
        model(|| {
            let (ring, mut reader) = Ring::<u64>::new(2, 1);
            let ring = Arc::new(ring);
            let producers: Vec<_> = (0..2u64)
                .map(|p| {
                    let ring = ring.clone();
                    loom::thread::spawn(move || ring.claim(1).map(|mut c| (c.put(10 + p), 10 + p)))
                })
                .collect();
            let mut seen = Vec::new();
            ring.take_all(&mut reader, |t, v| seen.push((t, v)));
            let mut written: Vec<(u64, u64)> =
                producers.into_iter().map(|h| h.join().unwrap().expect("two slots for two claims")).collect();
            ring.take_all(&mut reader, |t, v| seen.push((t, v)));
            written.sort_unstable();
            assert_eq!(seen, written);
            assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), [1, 2]);
        });
    }

    /// A producer a lap ahead of the reader waits for its slot to be taken: the entry of the
    /// previous lap is read whole before the slot is written again.
    #[test]
    fn a_lap_ahead_waits_for_the_reader() {
        model(|| {
            let (ring, mut reader) = Ring::<u64>::new(1, 1);
            let ring = Arc::new(ring);
            let producer = {
                let ring = ring.clone();
                loom::thread::spawn(move || {
                    for v in [7, 8] {
                        let mut claim = loop {
                            match ring.claim(1) {
                                Some(c) => break c,
                                None => loom::thread::yield_now(),
                            }
                        };
                        claim.put(v);
                    }
                })
            };
            let mut seen = Vec::new();
            while seen.len() < 2 {
                ring.take_all(&mut reader, |t, v| seen.push((t, v)));
                loom::thread::yield_now();
            }
            producer.join().unwrap();
            assert_eq!(seen, [(1, 7), (2, 8)]);
        });
    }
}
