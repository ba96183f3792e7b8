//! The cycle's working copy of free capacity: slot-major rows over the slots its bids can touch.

use std::ops::Range;

use crate::capacity::Bundle;

/// Free capacity (millionths, negative after a cut below sales) of every resource for the slots
/// `[lo, lo + rows)`, one row per slot so a slot's resources share a cache line.
#[derive(Clone, Debug, Default)]
pub(crate) struct Grid {
    pub(crate) lo: u64,
    pub(crate) stride: usize,
    pub(crate) free: Vec<i32>,
}

/// Where a bid may run this cycle: starts in `first..=last_end - duration`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reach<'a> {
    pub(crate) bundle: &'a Bundle,
    pub(crate) first: u64,
    pub(crate) last_end: u64,
    pub(crate) duration: u64,
}

impl Reach<'_> {
    /// The slots a run may touch.
    pub(crate) fn span(&self) -> Range<u64> {
        self.first..self.last_end
    }
}

impl Grid {
    /// One slot past the last row.
    pub(crate) fn hi(&self) -> u64 {
        self.lo + (self.free.len() / self.stride.max(1)) as u64
    }

    fn row(&self, slot: u64) -> &[i32] {
        let at = (slot - self.lo) as usize * self.stride;
        &self.free[at..at + self.stride]
    }

    /// Whether the bundle fits in `slot`.
    fn fits_at(&self, bundle: &Bundle, slot: u64) -> bool {
        let row = self.row(slot);
        bundle.raw().all(|(r, share)| row[r] >= share as i32)
    }

    /// The earliest start at which the whole run fits, scanning the span once.
    pub(crate) fn find_start(&self, reach: &Reach<'_>) -> Option<u64> {
        let mut run = 0u64;
        for slot in reach.span() {
            if self.fits_at(reach.bundle, slot) {
                run += 1;
                if run == reach.duration {
                    return Some(slot + 1 - reach.duration);
                }
            } else {
                run = 0;
            }
        }
        None
    }

    /// Takes the bundle in `[start, start + duration)`, clipped to the grid's rows; whether any
    /// row was touched.
    pub(crate) fn take(&mut self, bundle: &Bundle, start: u64, duration: u64) -> bool {
        let from = start.max(self.lo);
        let to = (start + duration).min(self.hi());
        for slot in from..to {
            let at = (slot - self.lo) as usize * self.stride;
            for (r, share) in bundle.raw() {
                self.free[at + r] -= share as i32;
            }
        }
        from < to
    }
}

/// Whether two slot ranges share a slot.
pub(crate) fn overlaps(a: &Range<u64>, b: &Range<u64>) -> bool {
    a.start < b.end && b.start < a.end
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::{ResourceId, Share};

    fn bundle(items: &[(usize, u32)]) -> Bundle {
        Bundle::new(
            items.iter().map(|&(r, s)| (ResourceId::from_index(r).unwrap(), Share::from_micros(s).unwrap())),
        )
        .unwrap()
    }

    #[test]
    fn earliest_start_across_resources() {
        // Two resources, slots 0..6; cpu busy in slot 1, memory busy in slot 3.
        let mut g = Grid { lo: 0, stride: 2, free: vec![1_000_000; 12] };
        g.free[2] = 0;
        g.free[7] = 0;
        let b = bundle(&[(0, 500_000), (1, 500_000)]);
        let reach = Reach { bundle: &b, first: 0, last_end: 6, duration: 2 };
        assert_eq!(g.find_start(&reach), Some(4));
        let cpu_only = bundle(&[(0, 500_000)]);
        let reach = Reach { bundle: &cpu_only, first: 0, last_end: 6, duration: 2 };
        assert_eq!(g.find_start(&reach), Some(2));
        assert!(g.take(&cpu_only, 2, 2));
        assert_eq!(g.free[4], 500_000);
        let reach = Reach { bundle: &b, first: 0, last_end: 3, duration: 3 };
        assert_eq!(g.find_start(&reach), None);
    }
}
