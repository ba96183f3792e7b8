//! The machinery of counterfactual replays: which bids reach which rows, which real sales
//! touched them, which cells differ, and a growing private copy of the rows looked at.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ops::Range;

use super::Placement;
use super::critical::placed;
use super::grid::Grid;

/// Cells where the counterfactual may differ from the real run: a bitset per resource over the
/// grid's rows, cleared word by word between winners.
#[derive(Debug)]
pub(super) struct Dirty {
    lo: u64,
    words: usize,
    bits: Vec<u64>,
    touched: Vec<usize>,
}

impl Dirty {
    pub(super) fn new(grid: &Grid) -> Dirty {
        let rows = grid.free.len() / grid.stride.max(1);
        let words = rows.div_ceil(64) + 2;
        Dirty { lo: grid.lo, words, bits: vec![0; words * grid.stride.max(1)], touched: Vec::new() }
    }

    pub(super) fn clear(&mut self) {
        for w in self.touched.drain(..) {
            self.bits[w] = 0;
        }
    }

    fn resources(mask: u16) -> impl Iterator<Item = usize> {
        (0..16).filter(move |r| mask & (1 << r) != 0)
    }

    pub(super) fn mark(&mut self, mask: u16, rows: Range<u64>) {
        for r in Dirty::resources(mask) {
            for slot in rows.clone() {
                let bit = (slot - self.lo) as usize;
                let w = r * self.words + bit / 64;
                if self.bits[w] == 0 {
                    self.touched.push(w);
                }
                self.bits[w] |= 1 << (bit % 64);
            }
        }
    }

    /// The bits of `rows` (at most 128 of them) of resource `r`, lowest bit first.
    fn window(&self, r: usize, rows: &Range<u64>) -> u128 {
        let start = (rows.start - self.lo) as usize;
        let width = (rows.end - rows.start) as usize;
        let base = r * self.words + start / 64;
        let shift = start % 64;
        let word = |k: usize| u128::from(self.bits[base + k]);
        let mut out = (word(0) >> shift) | (word(1) << (64 - shift));
        if shift > 0 {
            out |= word(2) << (128 - shift);
        }
        if width < 128 { out & ((1u128 << width) - 1) } else { out }
    }

    /// Slots of `rows` (at most 128) with a dirty cell of a resource in `mask`; `None` for
    /// longer ranges.
    pub(super) fn slots(&self, mask: u16, rows: Range<u64>) -> Option<u128> {
        (rows.end - rows.start <= 128)
            .then(|| Dirty::resources(mask).fold(0, |acc, r| acc | self.window(r, &rows)))
    }

    /// Whether any cell of `rows` of a resource in `mask` is dirty.
    pub(super) fn touches(&self, mask: u16, rows: Range<u64>) -> bool {
        let mut at = rows.start;
        while at < rows.end {
            let chunk = at..rows.end.min(at + 128);
            if Dirty::resources(mask).any(|r| self.window(r, &chunk) != 0) {
                return true;
            }
            at = chunk.end;
        }
        false
    }
}

/// Slots per bucket of the span index.
const BUCKET: u64 = 64;

/// For each bucket of [`BUCKET`] slots, the clearing positions of the bids whose span reaches
/// into it, ascending.
#[derive(Debug)]
pub(super) struct SpanIndex {
    lo: u64,
    buckets: Vec<Vec<u32>>,
}

impl SpanIndex {
    pub(super) fn new(p: &Placement, lo: u64) -> SpanIndex {
        let mut buckets: Vec<Vec<u32>> = Vec::new();
        for (pos, r) in p.ranked.iter().enumerate() {
            let span = r.span();
            let (first, last) = ((span.start - lo) / BUCKET, (span.end - 1 - lo) / BUCKET);
            if buckets.len() <= last as usize {
                buckets.resize_with(last as usize + 1, Vec::new);
            }
            for b in first..=last {
                buckets[b as usize].push(pos as u32);
            }
        }
        SpanIndex { lo, buckets }
    }

    fn bucket_range(&self, rows: &Range<u64>) -> Range<usize> {
        let first = ((rows.start - self.lo) / BUCKET) as usize;
        let last = ((rows.end - 1 - self.lo) / BUCKET) as usize;
        first.min(self.buckets.len())..(last + 1).min(self.buckets.len())
    }

    /// The positions after `after` of bids reaching `rows`, in order.
    pub(super) fn scan(&self, after: usize, rows: Range<u64>) -> Scan<'_> {
        let mut scan = Scan { index: self, after, covered: 0..0, heads: BinaryHeap::new(), last: None };
        scan.widen(rows);
        scan
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
            let run = placed(&p.ranked[i], start);
            let (first, last) = ((run.start - lo) / BUCKET, (run.end - 1 - lo) / BUCKET);
            if buckets.len() <= last as usize {
                buckets.resize_with(last as usize + 1, Vec::new);
            }
            for b in first..=last {
                buckets[b as usize].push((i as u32, start));
            }
        }
        SaleIndex { lo, buckets }
    }

    /// Calls `each(bid, start, clip)` for every real sale at a position in `(after, before)`
    /// with its rows clipped to one bucket's part of `rows`: each sold cell of `rows` once.
    pub(super) fn each_between(
        &self,
        rows: Range<u64>,
        after: usize,
        before: usize,
        mut each: impl FnMut(usize, u64, Range<u64>),
    ) {
        let first = ((rows.start - self.lo) / BUCKET) as usize;
        let last = ((rows.end - 1 - self.lo) / BUCKET) as usize;
        for b in first..=last.min(self.buckets.len().saturating_sub(1)) {
            let bucket = self.lo + b as u64 * BUCKET;
            let clip = rows.start.max(bucket)..rows.end.min(bucket + BUCKET);
            let list = &self.buckets[b];
            let from = list.partition_point(|&(i, _)| i as usize <= after);
            for &(i, start) in &list[from..] {
                if i as usize >= before {
                    break;
                }
                each(i as usize, start, clip.clone());
            }
        }
    }
}

/// A merge of the index's buckets over a growing range of rows, without repeats.
#[derive(Debug)]
pub(super) struct Scan<'a> {
    index: &'a SpanIndex,
    /// Positions up to this one are behind the scan.
    after: usize,
    covered: Range<usize>,
    /// `(position, bucket, offset in bucket)` of each covered bucket's next entry.
    heads: BinaryHeap<Reverse<(u32, usize, usize)>>,
    last: Option<u32>,
}

impl Scan<'_> {
    /// Adds the buckets of `rows` not yet covered, from just after the current position.
    pub(super) fn widen(&mut self, rows: Range<u64>) {
        let want = self.index.bucket_range(&rows);
        let from = self.last.map_or(self.after as u32 + 1, |l| l + 1);
        let start = if self.covered.is_empty() { want.start } else { want.start.min(self.covered.start) };
        let end = want.end.max(self.covered.end);
        for b in start..end {
            if self.covered.contains(&b) {
                continue;
            }
            let list = &self.index.buckets[b];
            let at = list.partition_point(|&pos| pos < from);
            if at < list.len() {
                self.heads.push(Reverse((list[at], b, at)));
            }
        }
        self.covered = start..end;
    }
}

impl Iterator for Scan<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        loop {
            let Reverse((pos, b, at)) = self.heads.pop()?;
            let list = &self.index.buckets[b];
            if at + 1 < list.len() {
                self.heads.push(Reverse((list[at + 1], b, at + 1)));
            }
            if self.last == Some(pos) {
                continue;
            }
            self.last = Some(pos);
            return Some(pos as usize);
        }
    }
}

/// A copy of some rows of the grid, grown as the counterfactual looks further.
#[derive(Debug, Default)]
pub(super) struct Local {
    pub(super) grid: Grid,
    pub(super) rows: Range<u64>,
}

impl Local {
    pub(super) fn reset(&mut self, base: &Grid, rows: Range<u64>) {
        self.rows = rows.clone();
        self.grid.lo = rows.start;
        self.grid.stride = base.stride;
        self.grid.free.clear();
        copy_rows(base, rows, &mut self.grid.free);
    }

    /// Grows the copy to cover `want`; `replay(new_rows, grid)` brings each new range of rows
    /// from the base state up to date, touching only those rows.
    pub(super) fn extend(
        &mut self,
        base: &Grid,
        want: Range<u64>,
        mut replay: impl FnMut(Range<u64>, &mut Grid),
    ) {
        let lo = want.start.min(self.rows.start);
        let hi = want.end.max(self.rows.end);
        if lo == self.rows.start && hi == self.rows.end {
            return;
        }
        let stride = base.stride;
        let mut free = Vec::with_capacity((hi - lo) as usize * stride);
        copy_rows(base, lo..self.rows.start, &mut free);
        free.extend_from_slice(&self.grid.free);
        copy_rows(base, self.rows.end..hi, &mut free);
        let old = self.rows.clone();
        self.grid = Grid { lo, stride, free };
        self.rows = lo..hi;
        for new in [lo..old.start, old.end..hi] {
            if !new.is_empty() {
                replay(new, &mut self.grid);
            }
        }
    }
}

fn copy_rows(base: &Grid, rows: Range<u64>, out: &mut Vec<i32>) {
    if rows.is_empty() {
        return;
    }
    let from = (rows.start - base.lo) as usize * base.stride;
    let to = (rows.end - base.lo) as usize * base.stride;
    out.extend_from_slice(&base.free[from..to]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirty_cells_by_resource_and_slot() {
        let grid = Grid { lo: 10, stride: 2, free: vec![0; 2 * 300] };
        let mut d = Dirty::new(&grid);
        d.mark(0b01, 70..75);
        assert_eq!(d.slots(0b01, 60..100), Some(0b11111 << 10));
        assert_eq!(d.slots(0b10, 60..100), Some(0));
        assert_eq!(d.slots(0b01, 60..200), None, "over 128 slots");
        assert!(d.touches(0b11, 10..300));
        assert!(!d.touches(0b10, 10..300));
        assert!(!d.touches(0b01, 75..300));
        d.clear();
        assert!(!d.touches(0b01, 10..300));
    }
}
