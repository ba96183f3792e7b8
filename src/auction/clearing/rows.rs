//! The rows of a cycle's grid: a slot each, or over long horizons stretches of slots chosen so
//! that no placement the cycle can make starts or ends inside one.

use std::ops::Range;
use std::sync::Arc;

/// The slots of each row of a cycle's grid.
///
/// A row is either one slot (row `t` is slot `t`) or, when the cycle's slots are many and what
/// can happen in them is little, a stretch `[bounds[t], bounds[t + 1])` over which free capacity
/// is the same and every run that any placement of the cycle can make starts and ends on a bound.
/// The bounds are then every slot where the timeline's free capacity changes, every bid's first
/// start and last end, and whatever a chain of runs laid end to end from those can reach: a run
/// starts at its bid's first slot or where a blocking stretch ends, which is one of those or the
/// end of another run, and a chain holds each bid at most once.
#[derive(Clone, Debug, Default)]
pub(crate) struct Rows {
    bounds: Option<Arc<[u64]>>,
}

impl Rows {
    /// Stretches `[bounds[t], bounds[t + 1])`: `bounds` ascending, at least two.
    pub(crate) fn stretches(bounds: Vec<u64>) -> Rows {
        debug_assert!(bounds.len() >= 2 && bounds.windows(2).all(|w| w[0] < w[1]));
        Rows { bounds: Some(bounds.into()) }
    }

    /// The stretches' bounds, when rows are stretches.
    pub(crate) fn bounds(&self) -> Option<&[u64]> {
        self.bounds.as_deref()
    }

    /// Whether rows are stretches rather than slots.
    pub(crate) fn stretched(&self) -> bool {
        self.bounds.is_some()
    }

    /// The first slot of `row`.
    pub(crate) fn slot(&self, row: u64) -> u64 {
        match &self.bounds {
            None => row,
            Some(b) => b[row as usize],
        }
    }

    /// The row holding `slot`.
    pub(crate) fn row(&self, slot: u64) -> u64 {
        match &self.bounds {
            None => slot,
            Some(b) => (b.partition_point(|&x| x <= slot).max(1) - 1) as u64,
        }
    }

    /// The slots of `rows`.
    pub(crate) fn slots(&self, rows: Range<u64>) -> Range<u64> {
        self.slot(rows.start)..self.slot(rows.end)
    }

    /// The rows of the slots `slots`, whose ends are bounds.
    pub(crate) fn rows(&self, slots: Range<u64>) -> Range<u64> {
        self.row(slots.start)..self.end_row(slots.end)
    }

    /// The row starting at `slot`, a bound (or one past the last row's end).
    fn end_row(&self, slot: u64) -> u64 {
        match &self.bounds {
            None => slot,
            Some(b) => {
                let k = b.partition_point(|&x| x < slot);
                debug_assert!(b.get(k) == Some(&slot), "slot {slot} is not a bound");
                k as u64
            }
        }
    }

    /// The row after a run of `duration` slots from row `start`.
    pub(crate) fn end(&self, start: u64, duration: u64) -> u64 {
        match &self.bounds {
            None => start + duration,
            Some(_) => self.end_row(self.slot(start) + duration),
        }
    }

    /// The row after the one holding the last slot of a run of `duration` slots from row
    /// `start`: [`end`](Rows::end) when the run ends on a bound, as every run a placement makes
    /// does; a candidate run that does not is covered whole.
    pub(crate) fn end_covering(&self, start: u64, duration: u64) -> u64 {
        match &self.bounds {
            None => start + duration,
            Some(_) => self.row(self.slot(start) + duration - 1) + 1,
        }
    }

    /// The rows of a run of `duration` slots from row `start`.
    pub(crate) fn run(&self, start: u64, duration: u64) -> Range<u64> {
        start..self.end(start, duration)
    }

    /// Slots in `row`.
    pub(crate) fn width(&self, row: u64) -> u64 {
        match &self.bounds {
            None => 1,
            Some(b) => b[row as usize + 1] - b[row as usize],
        }
    }
}

/// Below this many slots, a cycle's rows are its slots.
const STRETCH_FROM: u64 = 1 << 16;

impl Rows {
    /// The rows for a cycle over `slots` whose bids run `(span, duration)` (slots): stretches
    /// when they are a small part of the slots, one row per slot otherwise. `breaks` writes the
    /// slots where free capacity changes, read only when stretches may do.
    pub(crate) fn choose(
        slots: Range<u64>,
        breaks: impl FnOnce(&mut Vec<u64>),
        bids: impl Iterator<Item = (Range<u64>, u64)> + Clone,
    ) -> Rows {
        let len = slots.end - slots.start;
        if len < STRETCH_FROM {
            return Rows::default();
        }
        let mut changes = Vec::new();
        breaks(&mut changes);
        stretch_bounds(slots, &changes, bids, len / 4).map_or_else(Rows::default, Rows::stretches)
    }
}

/// The bounds of [`Rows`] stretched over `slots` (ascending, first and last the ends of
/// `slots`), or `None` when there would be more than `most`.
fn stretch_bounds(
    slots: Range<u64>,
    breaks: &[u64],
    bids: impl Iterator<Item = (Range<u64>, u64)> + Clone,
    most: u64,
) -> Option<Vec<u64>> {
    let lo = slots.start;
    let mut seen = vec![0u64; ((slots.end - lo) as usize + 1).div_ceil(64)];
    let mut points: Vec<u64> = Vec::new();
    let mut add = |slot: u64, points: &mut Vec<u64>| {
        let at = (slot - lo) as usize;
        let (w, bit) = (at / 64, 1u64 << (at % 64));
        if seen[w] & bit == 0 {
            seen[w] |= bit;
            points.push(slot);
        }
    };
    let clip = |slot: u64| slot.clamp(slots.start, slots.end);
    for slot in [slots.start, slots.end].into_iter().chain(breaks.iter().copied()) {
        add(clip(slot), &mut points);
    }
    let mut durations = Vec::new();
    for (span, duration) in bids.clone() {
        add(clip(span.start), &mut points);
        add(clip(span.end), &mut points);
        durations.push(duration);
    }
    if points.len() as u64 > most {
        return None;
    }
    let chain = durations.len();
    durations.sort_unstable();
    durations.dedup();
    // Runs laid end to end from the points so far, a bid at most once in a chain.
    let mut frontier = points.clone();
    for _ in 0..chain {
        let mut next = Vec::new();
        for &p in &frontier {
            for &d in &durations {
                let q = p + d;
                if q >= slots.end {
                    break;
                }
                add(q, &mut next);
            }
            if (points.len() + next.len()) as u64 > most {
                return None;
            }
        }
        if next.is_empty() {
            break;
        }
        points.extend_from_slice(&next);
        frontier = next;
    }
    points.sort_unstable();
    Some(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(rows: &Rows) -> Vec<u64> {
        rows.bounds().expect("stretches").to_vec()
    }

    #[test]
    fn long_horizons_get_a_row_per_change() {
        // One bid of one slot anywhere in 2^22 slots: its run, and the rest.
        let one = Rows::choose(0..1 << 22, |_| {}, std::iter::once((0..1 << 22, 1)));
        assert_eq!(bounds(&one), [0, 1, 1 << 22]);
        // A thousand half-day runs in a day: two halves.
        let day = Rows::choose(0..86_400, |_| {}, (0..1000).map(|_| (0..86_400, 43_200)));
        assert_eq!(bounds(&day), [0, 43_200, 86_400]);
        assert_eq!((day.row(43_199), day.row(43_200), day.width(1)), (0, 1, 43_200));
        assert_eq!(day.end(0, 43_200), 1);
        // A capacity change, and two bids of 1000 slots chained from each point.
        let b = Rows::choose(0..100_000, |out| out.push(5_000), (0..2).map(|_| (0..100_000, 1000)));
        assert_eq!(bounds(&b), [0, 1000, 2000, 5000, 6000, 7000, 100_000]);
    }

    #[test]
    fn short_or_crowded_reaches_keep_a_row_per_slot() {
        assert!(!Rows::choose(0..60_000, |_| {}, std::iter::once((0..60_000, 1))).stretched());
        // A bid starting in every slot: stretches would be slots.
        let crowded = Rows::choose(0..70_000, |_| {}, (0..70_000).map(|t| (t..t + 1, 1)));
        assert!(!crowded.stretched());
        let slots = Rows::default();
        assert_eq!((slots.row(7), slots.slot(7), slots.end(7, 3), slots.width(7)), (7, 7, 10, 1));
    }
}
