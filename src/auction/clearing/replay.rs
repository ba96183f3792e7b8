//! The machinery of counterfactual replays: which real sales touched which rows, which cells
//! differ, and a growing private copy of the rows looked at (which bids reach which rows is
//! [`super::span`]).

use std::ops::Range;

use super::Placement;
use super::critical::placed;
use super::grid::Grid;
use super::openings::UNIT;
use super::span::{BUCKET, buckets_of};
use crate::auction::book::BookBid;

/// Which way the counterfactual differs from the real run in a cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Way {
    /// More free capacity than the real run had: only such cells can open a start.
    Up,
    /// Less: only such cells can close one.
    Down,
}

/// Cells where the counterfactual differs from the real run, and by how much: the net change of
/// free capacity per cell, and per resource a bitset over the grid's rows of the cells it
/// raised and of those it lowered, cleared cell by cell between winners.
#[derive(Debug)]
pub(super) struct Dirty {
    lo: u64,
    stride: usize,
    words: usize,
    /// Per cell, counterfactual free minus real free.
    delta: Vec<i64>,
    changed: Vec<usize>,
    up: Vec<u64>,
    down: Vec<u64>,
    touched: Vec<usize>,
    /// The slots from the first dirty cell to the last, of any resource.
    hull: Range<u64>,
    /// The resources with a dirty cell, as a mask.
    marked: u16,
    /// Whether the grid's rows are stretches, whose bits mean nothing to slot-counting masks.
    stretched: bool,
}

impl Dirty {
    pub(super) fn new(grid: &Grid) -> Dirty {
        let rows = grid.free.len() / grid.stride.max(1);
        let words = rows.div_ceil(64) + 2;
        Dirty {
            lo: grid.lo,
            stride: grid.stride,
            words,
            delta: vec![0; grid.free.len()],
            changed: Vec::new(),
            up: vec![0; words * grid.stride.max(1)],
            down: vec![0; words * grid.stride.max(1)],
            touched: Vec::new(),
            hull: 0..0,
            marked: 0,
            stretched: grid.rows.stretched(),
        }
    }

    pub(super) fn clear(&mut self) {
        for c in self.changed.drain(..) {
            self.delta[c] = 0;
        }
        for w in self.touched.drain(..) {
            (self.up[w], self.down[w]) = (0, 0);
        }
        self.hull = 0..0;
        self.marked = 0;
    }

    fn resources(mut mask: u16) -> impl Iterator<Item = usize> {
        std::iter::from_fn(move || {
            (mask != 0).then(|| {
                let r = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                r
            })
        })
    }

    /// Records that the counterfactual has `shares` more free capacity (fewer when `freed` is
    /// false) than the real run in `rows`.
    pub(super) fn add(&mut self, shares: impl Iterator<Item = (usize, u32)>, rows: Range<u64>, freed: bool) {
        self.hull = if self.hull.is_empty() {
            rows.clone()
        } else {
            self.hull.start.min(rows.start)..self.hull.end.max(rows.end)
        };
        for (r, share) in shares {
            self.marked |= 1 << r;
            let change = if freed { i64::from(share) } else { -i64::from(share) };
            for slot in rows.clone() {
                let bit = (slot - self.lo) as usize;
                let c = bit * self.stride + r;
                if self.delta[c] == 0 {
                    self.changed.push(c);
                }
                self.delta[c] += change;
                let w = r * self.words + bit / 64;
                if self.up[w] == 0 && self.down[w] == 0 {
                    self.touched.push(w);
                }
                let (one, d) = (1u64 << (bit % 64), self.delta[c]);
                self.up[w] = if d > 0 { self.up[w] | one } else { self.up[w] & !one };
                self.down[w] = if d < 0 { self.down[w] | one } else { self.down[w] & !one };
            }
        }
    }

    /// The bits of `rows` (at most 128 of them) of resource `r` changed `way`, lowest bit first.
    fn window(&self, r: usize, rows: &Range<u64>, way: Way) -> u128 {
        let start = (rows.start - self.lo) as usize;
        let width = (rows.end - rows.start) as usize;
        let base = r * self.words + start / 64;
        let shift = start % 64;
        let word = |k: usize| {
            u128::from(match way {
                Way::Up => self.up[base + k],
                Way::Down => self.down[base + k],
            })
        };
        let mut out = (word(0) >> shift) | (word(1) << (64 - shift));
        if shift > 0 {
            out |= word(2) << (128 - shift);
        }
        if width < 128 { out & ((1u128 << width) - 1) } else { out }
    }

    /// Slots of `rows` (at most 128) with a cell of a resource in `mask` changed `way`; `None`
    /// for longer ranges.
    pub(super) fn slots(&self, mask: u16, rows: Range<u64>, way: Way) -> Option<u128> {
        (rows.end - rows.start <= 128 && !self.stretched)
            .then(|| Dirty::resources(mask & self.marked).fold(0, |acc, r| acc | self.window(r, &rows, way)))
    }

    /// How many rows of unit `u` (of [`UNIT`] rows from the grid's first) have a raised cell.
    pub(super) fn raised_rows(&self, u: usize) -> u32 {
        let (w, shift) = (u * UNIT as usize / 64, u * UNIT as usize % 64);
        let bits = Dirty::resources(self.marked).fold(0, |acc, r| acc | self.up[r * self.words + w]);
        (bits >> shift & (u64::MAX >> (64 - UNIT))).count_ones()
    }

    /// Whether any cell of `rows` of a resource in `mask` changed `way`.
    pub(super) fn touches(&self, mask: u16, rows: Range<u64>, way: Way) -> bool {
        let mask = mask & self.marked;
        if mask == 0 {
            return false;
        }
        let end = rows.end.min(self.hull.end);
        let mut at = rows.start.max(self.hull.start);
        while at < end {
            let chunk = at..end.min(at + 128);
            if Dirty::resources(mask).any(|r| self.window(r, &chunk, way) != 0) {
                return true;
            }
            at = chunk.end;
        }
        false
    }
}

/// For each bucket of [`BUCKET`] slots, the real run's sales reaching into it, in clearing
/// order: `(bid, start)`.
#[derive(Debug)]
pub(super) struct SaleIndex {
    lo: u64,
    buckets: Vec<Vec<(u32, u64)>>,
}

impl SaleIndex {
    pub(super) fn new(p: &Placement, winners: &[(usize, u64)], lo: u64) -> SaleIndex {
        let mut buckets: Vec<Vec<(u32, u64)>> = Vec::new();
        for &(i, start) in winners {
            let reached = buckets_of(lo, &placed(p, &p.ranked[i], start));
            if buckets.len() < reached.end {
                buckets.resize_with(reached.end, Vec::new);
            }
            for b in reached {
                buckets[b].push((i as u32, start));
            }
        }
        SaleIndex { lo, buckets }
    }

    /// The buckets `rows` reach that the index has: each bucket's first row and its sales.
    fn reached(&self, rows: &Range<u64>) -> impl Iterator<Item = (u64, &[(u32, u64)])> {
        let reached = buckets_of(self.lo, rows);
        (reached.start..reached.end.min(self.buckets.len()))
            .map(|b| (self.lo + b as u64 * BUCKET, self.buckets[b].as_slice()))
    }

    /// The real sales at a position in `positions` reaching `rows`, in clearing order, each
    /// once: `(bid, start)`.
    pub(super) fn in_order(&self, rows: Range<u64>, positions: Range<usize>) -> InOrder<'_> {
        let lists = self
            .reached(&rows)
            .map(|(_, list)| {
                let from = list.partition_point(|&(i, _)| (i as usize) < positions.start);
                let to = from + list[from..].partition_point(|&(i, _)| (i as usize) < positions.end);
                &list[from..to]
            })
            .collect();
        InOrder { lists }
    }

    /// Calls `each(bid, start, clip)` for every real sale at a position in `positions` with its
    /// rows clipped to one bucket's part of `rows`: each sold cell of `rows` once.
    pub(super) fn each_in(
        &self,
        rows: Range<u64>,
        positions: Range<usize>,
        mut each: impl FnMut(usize, u64, Range<u64>),
    ) {
        for (bucket, list) in self.reached(&rows) {
            let clip = rows.start.max(bucket)..rows.end.min(bucket + BUCKET);
            let from = list.partition_point(|&(i, _)| (i as usize) < positions.start);
            for &(i, start) in &list[from..] {
                if i as usize >= positions.end {
                    break;
                }
                each(i as usize, start, clip.clone());
            }
        }
    }
}

/// Real sales merged from several buckets' lists in clearing order, each once.
pub(super) struct InOrder<'a> {
    lists: Vec<&'a [(u32, u64)]>,
}

impl Iterator for InOrder<'_> {
    type Item = (usize, u64);

    fn next(&mut self) -> Option<(usize, u64)> {
        let &(least, start) = self.lists.iter().filter_map(|l| l.first()).min_by_key(|&&(i, _)| i)?;
        for list in &mut self.lists {
            if list.first().is_some_and(|&(i, _)| i == least) {
                *list = &list[1..];
            }
        }
        Some((least as usize, start))
    }
}

/// A working copy of the grid of which only `rows` are current, grown as a replay looks further.
#[derive(Debug, Default)]
pub(super) struct Local {
    pub(super) grid: Grid,
    pub(super) rows: Range<u64>,
}

impl Local {
    /// Starts over holding `rows` of `base`; the other rows are stale until extended over.
    pub(super) fn reset(&mut self, base: &Grid, rows: Range<u64>) {
        if self.grid.lo != base.lo
            || self.grid.stride != base.stride
            || self.grid.free.len() != base.free.len()
        {
            self.grid.clone_from(base);
        } else {
            self.grid.copy_rows(base, rows.clone());
            self.grid.rows.clone_from(&base.rows);
        }
        self.rows = rows;
    }

    /// Grows the current rows to cover `want`; `fill(new_rows, grid)` brings each new range of
    /// rows up to date, touching only those rows.
    pub(super) fn extend(&mut self, want: Range<u64>, mut fill: impl FnMut(Range<u64>, &mut Grid)) {
        let old = self.rows.clone();
        let (lo, hi) = (want.start.min(old.start), want.end.max(old.end));
        for new in [lo..old.start, old.end..hi] {
            if !new.is_empty() {
                fill(new, &mut self.grid);
            }
        }
        self.rows = lo..hi;
    }

    /// Takes `shares` in `[start, start + duration)` within the current rows; whether any row
    /// was touched.
    pub(super) fn take(
        &mut self,
        shares: impl Iterator<Item = (usize, u32)> + Clone,
        start: u64,
        duration: u64,
    ) -> bool {
        self.grid.take_within(shares, start, duration, self.rows.clone())
    }
}

/// Every bid's shares packed in clearing order, so replays take capacity without reading the
/// book.
#[derive(Debug)]
pub(super) struct Shares {
    at: Vec<u32>,
    items: Vec<(u32, u32)>,
}

impl Shares {
    pub(super) fn new(bids: &[BookBid]) -> Shares {
        let mut at = Vec::with_capacity(bids.len() + 1);
        let mut items = Vec::with_capacity(bids.len() * 2);
        at.push(0);
        for b in bids {
            items.extend(b.bundle.raw().map(|(r, s)| (r as u32, s)));
            at.push(items.len() as u32);
        }
        Shares { at, items }
    }

    /// The shares of the bid at position `i`: (resource index, share).
    pub(super) fn of(&self, i: usize) -> impl Iterator<Item = (usize, u32)> + Clone + '_ {
        self.items[self.at[i] as usize..self.at[i + 1] as usize].iter().map(|&(r, s)| (r as usize, s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirty_cells_by_resource_slot_and_way() {
        let grid = Grid { lo: 10, stride: 2, free: vec![0; 2 * 300], ..Grid::default() };
        let mut d = Dirty::new(&grid);
        d.add([(0, 5)].into_iter(), 70..75, true);
        assert_eq!(d.slots(0b01, 60..100, Way::Up), Some(0b11111 << 10));
        assert_eq!(d.slots(0b01, 60..100, Way::Down), Some(0));
        assert_eq!(d.slots(0b10, 60..100, Way::Up), Some(0));
        assert_eq!(d.slots(0b01, 60..200, Way::Up), None, "over 128 slots");
        assert!(d.touches(0b11, 10..300, Way::Up));
        assert!(!d.touches(0b11, 10..300, Way::Down));
        assert!(!d.touches(0b10, 10..300, Way::Up));
        assert!(!d.touches(0b01, 75..300, Way::Up));
        // Taking back more than was freed turns a cell down; exactly as much, unchanged.
        d.add([(0, 7)].into_iter(), 72..74, false);
        d.add([(0, 5)].into_iter(), 74..75, false);
        assert_eq!(d.slots(0b01, 70..75, Way::Up), Some(0b00011));
        assert_eq!(d.slots(0b01, 70..75, Way::Down), Some(0b01100));
        d.clear();
        assert!(!d.touches(0b01, 10..300, Way::Up) && !d.touches(0b01, 10..300, Way::Down));
        d.add([(1, 3)].into_iter(), 10..11, false);
        assert_eq!(d.slots(0b11, 10..20, Way::Down), Some(1), "cleared cells start from zero");
    }
}
