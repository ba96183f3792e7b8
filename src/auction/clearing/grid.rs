//! The cycle's working copy of free capacity: row-major over the slots its bids can touch, a row
//! per slot, or over long horizons a row per stretch of slots over which no placement differs.

use std::ops::Range;

use super::rows::Rows;
use crate::capacity::{Bundle, MAX_RESOURCES};

/// Free capacity (millionths, negative after a cut below sales) of every resource for the rows
/// `[lo, lo + rows)`, a row's resources side by side so they share a cache line.
///
/// Everything the clearing does is in rows. In the common case a row is a slot (row `t` is slot
/// `t`); over a long horizon, [`Rows`] maps rows to stretches of slots.
#[derive(Clone, Debug, Default)]
pub(crate) struct Grid {
    pub(crate) lo: u64,
    pub(crate) stride: usize,
    pub(crate) free: Vec<i32>,
    pub(crate) rows: Rows,
}

/// Where a bid may run this cycle: a run of `duration` slots within the rows `first..last_end`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reach {
    /// Per resource, the share needed; `i32::MIN` for resources the bundle does not name, so a
    /// row is checked with one branch-free comparison per resource.
    pub(crate) need: [i32; MAX_RESOURCES],
    pub(crate) first: u64,
    pub(crate) last_end: u64,
    /// Slots, not rows.
    pub(crate) duration: u64,
}

/// The rows of a span (bit k for row `first + k`) in which a bundle did not fit, for spans of
/// at most 128 rows of a slot each.
pub(crate) type Blocked = Option<u128>;

impl Reach {
    pub(crate) fn new(bundle: &Bundle, first: u64, last_end: u64, duration: u64) -> Reach {
        Reach::of_shares(bundle.raw(), first, last_end, duration)
    }

    /// The same from a bundle's shares: (resource index, share).
    pub(crate) fn of_shares(
        shares: impl Iterator<Item = (usize, u32)>,
        first: u64,
        last_end: u64,
        duration: u64,
    ) -> Reach {
        let mut need = [i32::MIN; MAX_RESOURCES];
        for (r, share) in shares {
            need[r] = share as i32;
        }
        Reach { need, first, last_end, duration }
    }

    /// The rows a run may touch.
    pub(crate) fn span(&self) -> Range<u64> {
        self.first..self.last_end
    }
}

impl Grid {
    /// One past the last row.
    pub(crate) fn hi(&self) -> u64 {
        self.lo + (self.free.len() / self.stride.max(1)) as u64
    }

    fn row(&self, row: u64) -> &[i32] {
        let at = (row - self.lo) as usize * self.stride;
        &self.free[at..at + self.stride]
    }

    /// Whether the bundle fits in `row`.
    fn fits_at(&self, need: &[i32; MAX_RESOURCES], row: u64) -> bool {
        self.row(row).iter().zip(need).fold(true, |fits, (&free, &need)| fits & (free >= need))
    }

    /// The earliest start at which the whole run fits. Each candidate's run is checked from its
    /// last row down, so a row that does not fit skips every start whose run holds it; no row is
    /// looked at twice.
    pub(crate) fn find_start(&self, reach: &Reach) -> Option<u64> {
        let (mut start, mut verified) = (reach.first, reach.first);
        let last_end = self.rows.slot(reach.last_end);
        // Rows in `start..verified` are known to fit.
        'candidate: while start < reach.last_end && self.rows.slot(start) + reach.duration <= last_end {
            // A candidate after a blocked stretch need not end on a bound; the start found does.
            let end = self.rows.end_covering(start, reach.duration);
            let mut row = end;
            while row > verified {
                row -= 1;
                if !self.fits_at(&reach.need, row) {
                    start = row + 1;
                    verified = end.max(start);
                    continue 'candidate;
                }
            }
            debug_assert_eq!(end, self.rows.end(start, reach.duration));
            return Some(start);
        }
        None
    }

    /// Whether a reach's rows can be followed as bits of a `u128`: a span of at most 128 rows,
    /// each a slot.
    pub(crate) fn tracks(&self, reach: &Reach) -> bool {
        reach.last_end - reach.first <= u64::from(u128::BITS) && !self.rows.stretched()
    }

    /// The earliest start at which the whole run fits, and the rows before it that blocked
    /// (tracked where the grid [`tracks`](Grid::tracks) the reach).
    pub(crate) fn find_start_and_blocked(&self, reach: &Reach) -> (Option<u64>, Blocked) {
        if !self.tracks(reach) {
            // Nothing to track: the search that skips past every row that does not fit.
            return (self.find_start(reach), None);
        }
        let (mut from, mut run) = (reach.first, 0u64);
        let mut blocked = 0u128;
        for row in reach.span() {
            if self.fits_at(&reach.need, row) {
                run += 1;
                if run >= reach.duration {
                    return (Some(from), Some(blocked));
                }
            } else {
                (from, run) = (row + 1, 0);
                blocked |= 1 << (row - reach.first);
            }
        }
        (None, Some(blocked))
    }

    /// The rows of `rows` (within the reach's span, at most 128 after its first row, each a
    /// slot) in which the bundle fits, as bits from the reach's first row.
    pub(crate) fn fitting(&self, reach: &Reach, rows: Range<u64>) -> u128 {
        let from = rows.start.max(reach.first);
        let to = rows.end.min(reach.last_end);
        (from..to)
            .filter(|&row| self.fits_at(&reach.need, row))
            .fold(0, |bits, row| bits | 1 << (row - reach.first))
    }

    /// The rows of `rows` (within the reach's span, at most 128 after its first row, each a
    /// slot) in which the bundle no longer fits for want of a resource among `resources`, as
    /// bits from the reach's first row: after a take of those resources, the only rows it can
    /// have closed.
    pub(crate) fn short(
        &self,
        reach: &Reach,
        resources: impl Iterator<Item = usize> + Clone,
        rows: Range<u64>,
    ) -> u128 {
        let from = rows.start.max(reach.first);
        let to = rows.end.min(reach.last_end);
        let mut bits = 0;
        for row in from..to {
            let at = (row - self.lo) as usize * self.stride;
            if resources.clone().any(|r| self.free[at + r] < reach.need[r]) {
                bits |= 1 << (row - reach.first);
            }
        }
        bits
    }

    /// Takes the bundle in a run of `duration` slots from row `start`, clipped to the grid's
    /// rows; whether any row was touched.
    pub(crate) fn take(&mut self, bundle: &Bundle, start: u64, duration: u64) -> bool {
        self.take_within(bundle.raw(), start, duration, self.lo..self.hi())
    }

    /// Takes `shares` (resource index, share) in a run of `duration` slots from row `start`,
    /// clipped to `rows` and the grid's rows; whether any row was touched.
    pub(crate) fn take_within(
        &mut self,
        shares: impl Iterator<Item = (usize, u32)> + Clone,
        start: u64,
        duration: u64,
        rows: Range<u64>,
    ) -> bool {
        let from = start.max(self.lo).max(rows.start);
        let to = self.rows.end(start, duration).min(self.hi()).min(rows.end);
        for slot in from..to {
            let at = (slot - self.lo) as usize * self.stride;
            for (r, share) in shares.clone() {
                self.free[at + r] -= share as i32;
            }
        }
        from < to
    }

    /// Copies `rows` from `other`, a grid of the same shape.
    pub(crate) fn copy_rows(&mut self, other: &Grid, rows: Range<u64>) {
        debug_assert!(self.lo == other.lo && self.stride == other.stride);
        if rows.is_empty() {
            return;
        }
        let from = (rows.start - self.lo) as usize * self.stride;
        let to = (rows.end - self.lo) as usize * self.stride;
        self.free[from..to].copy_from_slice(&other.free[from..to]);
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
        let mut g = Grid { lo: 0, stride: 2, free: vec![1_000_000; 12], rows: Rows::default() };
        g.free[2] = 0;
        g.free[7] = 0;
        let b = bundle(&[(0, 500_000), (1, 500_000)]);
        assert_eq!(g.find_start(&Reach::new(&b, 0, 6, 2)), Some(4));
        let cpu_only = bundle(&[(0, 500_000)]);
        assert_eq!(g.find_start(&Reach::new(&cpu_only, 0, 6, 2)), Some(2));
        assert!(g.take(&cpu_only, 2, 2));
        assert_eq!(g.free[4], 500_000);
        assert_eq!(g.find_start_and_blocked(&Reach::new(&b, 0, 4, 3)), (None, Some(0b1010)));
        assert_eq!(g.find_start(&Reach::new(&b, 0, 4, 3)), None);
        assert_eq!(g.find_start_and_blocked(&Reach::new(&b, 0, 6, 2)), (Some(4), Some(0b1010)));
    }

    #[test]
    fn a_long_span_is_searched_by_skipping_and_not_tracked() {
        // One resource over 300 slots, full in every slot but 3 of every 10, and free from 250.
        let mut g = Grid { lo: 0, stride: 1, free: vec![0; 300], rows: Rows::default() };
        for slot in 0..300u64 {
            if slot % 10 < 3 || slot >= 250 {
                g.free[slot as usize] = 1_000_000;
            }
        }
        let b = bundle(&[(0, 500_000)]);
        let linear = |reach: &Reach| {
            (reach.first..reach.last_end).find(|&s| {
                s + reach.duration <= reach.last_end
                    && (s..s + reach.duration).all(|t| g.free[t as usize] >= 500_000)
            })
        };
        for (first, last_end, duration) in [(0, 300, 3), (0, 300, 4), (5, 300, 2), (0, 260, 20), (0, 200, 4)]
        {
            let reach = Reach::new(&b, first, last_end, duration);
            let (start, blocked) = g.find_start_and_blocked(&reach);
            assert_eq!(start, linear(&reach), "{first}..{last_end}, {duration} slots");
            assert_eq!(start, g.find_start(&reach));
            assert_eq!(blocked, None, "spans past 128 rows are not tracked");
        }
        assert_eq!(g.find_start_and_blocked(&Reach::new(&b, 0, 300, 4)).0, Some(250));
    }
}
