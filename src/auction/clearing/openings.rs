//! Losers indexed by what could open them.
//!
//! A loser failed at every start in the real run, each start for the rows of its run that were
//! too full. In a counterfactual it can win only if, for some start, every one of those rows has
//! more free capacity than the real run had there (is *raised*). So it needs at least `k` raised
//! rows within its span, `k` being the fewest rows that blocked any one of its starts; until the
//! units of rows its span reaches hold that many, visiting it is wasted. On a crowded book nine
//! visits in ten are such losers, and raised rows are few and short-lived (a freed cell is soon
//! taken again), so a replay that visits a loser only while its units hold enough raised rows
//! meets a fraction of them.
//!
//! Losers are listed by the first unit of rows their span reaches, each tagged with a *class* of
//! its `k` and with how many units its span reaches. A replay keeps, per unit, how many of its
//! rows are raised, and per first unit the raised rows of it and of each number of units after
//! it; a class is *open* for the losers reaching so many units while that sum reaches the
//! class's least `k`, and a scan merges the open units' lists from where it stands, passing over
//! losers of shut classes. Classes opened late are met from the scan's position on: a loser
//! passed while its class was shut had too few raised rows at its turn to win.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ops::Range;

use super::span::Visit;

/// Classes of the fewest blocking rows `k`: class `c` holds `CLASS_LEAST[c] <= k <
/// CLASS_LEAST[c + 1]`, steps of about √2 so a list opens at no less than 70% of what its
/// losers need.
const CLASS_LEAST: [u16; 12] = [1, 2, 3, 4, 6, 8, 11, 16, 22, 32, 45, 64];

/// Rows per unit over which raised rows are counted: finer units open fewer lists for rows
/// raised nearby, at more sums to keep per change.
pub(super) const UNIT: u64 = 32;

/// Most units past its first that a listed loser's span reaches: a tracked span has at most
/// 128 rows.
const MAX_REACH: usize = 127_u64.div_ceil(UNIT) as usize;

/// How many units a listed loser's span may reach.
const REACHES: usize = MAX_REACH + 1;

/// Per how many units past its first a loser's span reaches, how many classes are open for it.
type Open = [u8; REACHES];

/// The units `rows` (relative to the grid's first row) reach.
fn units_of(rows: &Range<u64>) -> Range<usize> {
    (rows.start / UNIT) as usize..((rows.end - 1) / UNIT) as usize + 1
}

/// The fewest rows of `blocked` (bits of a span `width` rows wide) within any run of `duration`
/// rows, if the span holds a run at all.
pub(super) fn fewest_blocking(blocked: u128, width: u64, duration: u64) -> Option<u32> {
    if duration == 0 || duration > width || width > 128 {
        return None;
    }
    let run = if duration >= 128 { u128::MAX } else { (1u128 << duration) - 1 };
    (0..=width - duration).map(|s| (blocked & run << s).count_ones()).min()
}

fn class_of(k: u32) -> usize {
    CLASS_LEAST.partition_point(|&least| u32::from(least) <= k) - 1
}

/// How many classes open with `raised` rows.
fn open_classes(raised: u32) -> usize {
    CLASS_LEAST.partition_point(|&least| u32::from(least) <= raised)
}

/// The listed losers: unit `u`'s are `visits[at[u]..at[u + 1]]`, in clearing order, with their
/// positions and tags packed alongside (a scan passing over shut classes reads five bytes a
/// loser). A tag holds how many units past its first a loser's span reaches (high four bits)
/// and its class (low four).
#[derive(Debug, Default)]
pub(super) struct Openings {
    at: Vec<u32>,
    visits: Vec<Visit>,
    positions: Vec<u32>,
    tags: Vec<u8>,
    /// Per first unit, how many units past it its losers' spans reach.
    reach: Vec<u8>,
}

impl Openings {
    /// Lists `losers` (each a record, in clearing order, with its fewest blocking rows) over the
    /// units their spans reach; rows raised past those open nothing.
    pub(super) fn new(losers: &[(Visit, u32)]) -> Openings {
        let units = losers.iter().map(|(v, _)| units_of(&v.rows()).end).max().unwrap_or(0);
        let mut at = vec![0u32; units + 1];
        let mut reach = vec![0u8; units];
        for (v, _) in losers {
            let reached = units_of(&v.rows());
            debug_assert!(reached.len() <= MAX_REACH + 1);
            at[reached.start + 1] += 1;
            reach[reached.start] = reach[reached.start].max((reached.len() - 1) as u8);
        }
        for u in 0..units {
            at[u + 1] += at[u];
        }
        let mut fill = at.clone();
        let mut visits = losers.first().map_or_else(Vec::new, |&(v, _)| vec![v; losers.len()]);
        let mut tags = vec![0u8; losers.len()];
        for (v, k) in losers {
            let reached = units_of(&v.rows());
            let (u, i) = (reached.start, fill[reached.start] as usize);
            (visits[i], tags[i]) = (*v, ((reached.len() - 1) << 4 | class_of(*k)) as u8);
            fill[u] += 1;
        }
        let positions = visits.iter().map(|v| v.pos).collect();
        Openings { at, visits, positions, tags, reach }
    }

    fn units(&self) -> usize {
        self.reach.len()
    }

    /// The index of unit `u`'s first loser from index `from` on whose class `open` has open
    /// for the units it reaches.
    fn first_open(&self, u: usize, from: usize, open: &Open) -> Option<usize> {
        let end = self.at[u + 1] as usize;
        self.tags[from..end].iter().position(|&t| t & 15 < open[usize::from(t >> 4)]).map(|k| from + k)
    }

    /// The index of unit `u`'s first loser at position `next` or later.
    fn seek(&self, u: usize, next: usize) -> usize {
        let (from, end) = (self.at[u] as usize, self.at[u + 1] as usize);
        from + self.positions[from..end].partition_point(|&pos| (pos as usize) < next)
    }
}

/// An open unit's place: the position and index of its next loser of an open class, and which
/// opening of the unit it belongs to (a unit whose open classes change starts anew; its old
/// place is dropped when met).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Head {
    pos: u32,
    at: u32,
    unit: u32,
    opening: u32,
}

/// A replay's view of the open classes, kept across replays so nothing is allocated per winner.
#[derive(Debug, Default)]
pub(super) struct Live {
    /// Per unit, its raised rows.
    raised: Vec<u8>,
    /// Per first unit, the raised rows of it and the `e` units after, for each `e`.
    sum: Vec<[u16; REACHES]>,
    /// Per first unit, the classes open for its losers reaching `e` units past it.
    open: Vec<Open>,
    /// Per first unit, how many times its open classes changed.
    openings: Vec<u32>,
    /// Units whose raised rows are not zero, to reset.
    touched: Vec<usize>,
    /// The open units' places, least position first.
    heads: BinaryHeap<Reverse<Head>>,
}

impl Live {
    /// Starts a replay over `openings` with no row raised.
    pub(super) fn reset(&mut self, openings: &Openings) {
        let n = openings.units();
        if self.raised.len() != n {
            *self = Live {
                raised: vec![0; n],
                sum: vec![[0; REACHES]; n],
                open: vec![[0; REACHES]; n],
                openings: vec![0; n],
                ..Live::default()
            };
        }
        for j in self.touched.drain(..) {
            self.raised[j] = 0;
            for u in j.saturating_sub(MAX_REACH)..=j {
                (self.sum[u], self.open[u]) = ([0; REACHES], [0; REACHES]);
            }
        }
        self.heads.clear();
    }

    /// Takes the raised rows of the units `rows` (relative to the grid's first row) reach from
    /// `raised_in(unit)`, opening and shutting classes; losers of classes opened are met from
    /// position `next` on.
    pub(super) fn update(
        &mut self,
        openings: &Openings,
        rows: &Range<u64>,
        next: usize,
        raised_in: impl Fn(usize) -> u32,
    ) {
        let reached = units_of(rows);
        for j in reached.start..reached.end.min(openings.units()) {
            let (old, new) = (self.raised[j], raised_in(j) as u8);
            if old == new {
                continue;
            }
            if old == 0 {
                self.touched.push(j);
            }
            self.raised[j] = new;
            for u in j.saturating_sub(MAX_REACH)..=j {
                let past = j - u;
                if past > usize::from(openings.reach[u]) {
                    continue;
                }
                let mut open = self.open[u];
                for (sum, open) in self.sum[u].iter_mut().zip(&mut open).skip(past) {
                    *sum = *sum + u16::from(new) - u16::from(old);
                    *open = open_classes(u32::from(*sum)) as u8;
                }
                if open == self.open[u] {
                    continue;
                }
                // Its place so far is dropped when met; a new one starts from `next`.
                (self.open[u], self.openings[u]) = (open, self.openings[u] + 1);
                if let Some(at) = openings.first_open(u, openings.seek(u, next), &open) {
                    let pos = openings.positions[at];
                    self.heads.push(Reverse(Head {
                        pos,
                        at: at as u32,
                        unit: u as u32,
                        opening: self.openings[u],
                    }));
                }
            }
        }
    }

    /// Drops the places of units whose open classes changed since, so the least one is live.
    fn settle(&mut self) {
        while let Some(&Reverse(h)) = self.heads.peek() {
            if h.opening == self.openings[h.unit as usize] {
                return;
            }
            self.heads.pop();
        }
    }

    /// The position of the next loser of an open class.
    pub(super) fn peek(&mut self) -> u32 {
        self.settle();
        self.heads.peek().map_or(u32::MAX, |h| h.0.pos)
    }

    /// The record of the next loser of an open class, the one [`Live::peek`] gave, moving past
    /// it.
    pub(super) fn take<'a>(&mut self, openings: &'a Openings) -> &'a Visit {
        let mut top = self.heads.peek_mut().expect("a loser was peeked");
        let head = &mut top.0;
        let visit = &openings.visits[head.at as usize];
        let u = head.unit as usize;
        match openings.first_open(u, head.at as usize + 1, &self.open[u]) {
            Some(at) => (head.at, head.pos) = (at as u32, openings.positions[at]),
            None => drop(std::collections::binary_heap::PeekMut::pop(top)),
        }
        visit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fewest_blocking_rows_over_every_start() {
        // Rows 1 and 5 blocked in a span of 8: a run of 3 from row 2 meets none, so a loser
        // could not have these bits.
        assert_eq!(fewest_blocking(0b0010_0010, 8, 3), Some(0));
        assert_eq!(fewest_blocking(0b0010_0010, 8, 5), Some(1));
        assert_eq!(fewest_blocking(0b1111_1111, 8, 5), Some(5));
        assert_eq!(fewest_blocking(u128::MAX, 128, 128), Some(128));
        assert_eq!(fewest_blocking(1, 4, 5), None, "no run fits the span");
        assert_eq!(class_of(1), 0);
        assert_eq!(class_of(5), 3);
        assert_eq!(class_of(128), CLASS_LEAST.len() - 1);
        assert_eq!(open_classes(0), 0);
        assert_eq!(open_classes(5), 4);
    }

    #[test]
    fn a_class_opens_once_the_units_its_losers_reach_hold_enough_raised_rows() {
        let u = UNIT;
        // Losers at positions 3, 5 and 9 first reaching unit 1, needing 1, 5 and 20 raised rows:
        // the first reaches units 1 to 3, the second unit 1 only, the third units 1 and 2.
        let losers = [
            (Visit::loser(3, u + 6..3 * u + 2, 4), 1),
            (Visit::loser(5, u..u + 30, 10), 5),
            (Visit::loser(9, u + 20..3 * u, 30), 20),
        ];
        let openings = Openings::new(&losers);
        let mut live = Live::default();
        let seen = |live: &mut Live| {
            let mut out = Vec::new();
            while live.peek() != u32::MAX {
                out.push(live.take(&openings).pos);
            }
            out
        };
        // Four raised rows in unit 2 open the classes up to k 5 for losers reaching it: not the
        // one of k 5 whose span ends in unit 1, nor the one of k 20.
        live.reset(&openings);
        live.update(&openings, &(2 * u..2 * u + 1), 0, |j| if j == 2 { 4 } else { 0 });
        assert_eq!(seen(&mut live), [3]);
        // Four in unit 1 too, from position 4 on, open it.
        live.update(&openings, &(u..u + 1), 4, |j| if j <= 2 { 4 } else { 0 });
        assert_eq!(seen(&mut live), [5]);
        // Twenty in all, from position 4 on: the loser at 3 is passed, the others met.
        let twenty = |j: usize| match j {
            1 => 16,
            2 => 4,
            _ => 0,
        };
        live.reset(&openings);
        live.update(&openings, &(u..3 * u), 4, twenty);
        assert_eq!(seen(&mut live), [5, 9]);
        // Lowered again, the classes shut.
        live.reset(&openings);
        live.update(&openings, &(u..3 * u), 0, twenty);
        live.update(&openings, &(u..3 * u), 0, |_| 0);
        assert_eq!(seen(&mut live), Vec::<u32>::new());
        // A unit its losers do not reach opens nothing.
        live.reset(&openings);
        live.update(&openings, &(4 * u..5 * u), 0, |_| u as u32);
        assert_eq!(seen(&mut live), Vec::<u32>::new());
    }
}
