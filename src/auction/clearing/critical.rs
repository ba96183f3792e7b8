//! Critical values and shortfalls, without re-running the cycle per bid.
//!
//! Lowering a winner's limit only moves it later in the order; the bids before it are placed as
//! before, so it wins at a later position exactly when it still fits in the state the *other*
//! bids leave there. Those states only fill up, so there is a first bid after which it no longer
//! fits: the *blocker*. Its critical value is the least limit that still ranks it before the
//! blocker (the reserve if there is none).
//!
//! Without the winner, later bids may be placed differently, and those changes cascade. The
//! counterfactual is replayed lazily: a bid whose window avoids every slot where the
//! counterfactual differs from the real run (the *dirty* range) is placed as it was; only bids
//! reaching into the dirty range are placed again. The replay keeps its own copy of the rows it
//! has looked at, grown on demand.
//!
//! A loser moved earlier finds exactly the state the real run had there, so its threshold is the
//! least limit that ranks it before the first winner after which it no longer fits. That winner
//! is found by binary search over checkpoints of the real run, then a short replay.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ops::Range;

use super::grid::{Grid, overlaps};
use super::rank::least_limit_beating;
use super::{Placement, Ranked};
use crate::auction::book::BookBid;
use crate::auction::config::PriorityRule;

/// Memory the loser checkpoints may take.
const CHECKPOINT_BUDGET: usize = 64 << 20;

pub(super) fn thresholds(
    rule: PriorityRule,
    bids: &[BookBid],
    p: &Placement,
    initial: &Grid,
) -> Vec<Option<u64>> {
    let mut out = vec![None; bids.len()];
    // Winners in clearing order, with their positions in it.
    let winners: Vec<(usize, usize, u64)> = p
        .order
        .iter()
        .enumerate()
        .filter_map(|(pos, &i)| p.starts[i as usize].map(|s| (pos, i as usize, s)))
        .collect();
    winners_critical(rule, bids, p, initial, &winners, &mut out);
    losers_needed(rule, bids, p, initial, &winners, &mut out);
    out
}

fn threshold_against(rule: PriorityRule, me: &Ranked, rival: &Ranked, range: (u64, u64)) -> Option<u64> {
    least_limit_beating(rule, me.size, me.order, range, (rival.key, rival.order))
}

fn placed(r: &Ranked, start: u64) -> Range<u64> {
    start..start + r.duration
}

fn winners_critical(
    rule: PriorityRule,
    bids: &[BookBid],
    p: &Placement,
    initial: &Grid,
    winners: &[(usize, usize, u64)],
    out: &mut [Option<u64>],
) {
    // The real run, replayed winner by winner: before winner w it holds the state w met.
    let mut real = initial.clone();
    let mut local = Local::default();
    let index = SpanIndex::new(p, initial.lo);
    let sold = SaleIndex::new(p, winners, initial.lo);
    for (w, &(pos, i, start)) in winners.iter().enumerate() {
        let me = &p.ranked[i];
        let blocker = counterfactual_blocker(bids, p, &real, (winners, w), &mut local, (&index, &sold));
        out[i] = Some(match blocker {
            Some(q) => {
                let rival = &p.ranked[p.order[q] as usize];
                threshold_against(rule, me, rival, (me.reserve, me.limit))
                    .expect("a winner ranks before every bid after it")
            }
            None => me.reserve,
        });
        debug_assert!(pos < p.order.len());
        real.take(&bids[i].bundle, start, me.duration);
    }
}

/// The position of the first bid after which winner `winners[w]` no longer fits when it is
/// left out, or `None` if it always fits. `base` is the real state just before it.
fn counterfactual_blocker(
    bids: &[BookBid],
    p: &Placement,
    base: &Grid,
    (winners, w): (&[(usize, usize, u64)], usize),
    local: &mut Local,
    (index, sold): (&SpanIndex, &SaleIndex),
) -> Option<usize> {
    let (pos, i, start) = winners[w];
    let me = p.ranked[i];
    let my_reach = p.reach(bids, i);
    local.reset(base, me.span());
    // Where the counterfactual may differ from the real run: these slots, these resources.
    let mut dirty = placed(&me, start);
    let mut dirty_mask = me.mask;
    // Only bids reaching the rows the counterfactual holds can change them or be changed.
    let mut scan = index.scan(pos, me.span());
    while let Some(q) = scan.next() {
        let j = p.order[q] as usize;
        let other = &p.ranked[j];
        let span = other.span();
        let real_start = p.starts[j];
        let new_start = if other.mask & dirty_mask == 0
            || !overlaps(&span, &dirty)
            || (real_start.is_none() && !may_fit(p.blocked[j], other, &dirty))
        {
            // Untouched by the change: placed as in the real run.
            real_start
        } else {
            local.extend(base, span.clone(), |rows, grid| {
                // New rows hold the real state at this point: replay the real sales between.
                sold.each_between(rows, pos, q, |k, s, clip| {
                    grid.take_within(&bids[k].bundle, s, p.ranked[k].duration, clip);
                });
            });
            scan.widen(local.rows.clone());
            let mut reach = p.reach(bids, j);
            if real_start.is_none() {
                // It failed at every start in the real run, and a start whose run avoids the
                // dirty slots sees the same cells now: only runs touching them can succeed.
                reach.first = reach.first.max((dirty.start + 1).saturating_sub(other.duration));
                reach.last_end = reach.last_end.min(dirty.end + other.duration - 1);
            }
            let new_start = local.grid.find_start(&reach);
            if new_start != real_start {
                for s in [real_start, new_start].into_iter().flatten() {
                    let run = placed(other, s);
                    dirty = dirty.start.min(run.start)..dirty.end.max(run.end);
                }
                dirty_mask |= other.mask;
            }
            new_start
        };
        if let Some(s) = new_start {
            let run = placed(other, s);
            let touched = local.grid.take(&bids[j].bundle, s, other.duration);
            if touched
                && other.mask & me.mask != 0
                && overlaps(&run, &me.span())
                && local.grid.find_start(&my_reach).is_none()
            {
                return Some(q);
            }
        }
    }
    None
}

/// Whether a bid that lost in the real run, blocked in the slots `blocked`, may fit once the
/// `dirty` slots change: only if some run of it avoids every blocked slot outside them.
fn may_fit(blocked: Option<u128>, r: &Ranked, dirty: &Range<u64>) -> bool {
    let Some(blocked) = blocked else { return true };
    let width = r.last_end - r.first;
    let span_bits = if width == 128 { u128::MAX } else { (1u128 << width) - 1 };
    let lo = dirty.start.max(r.first);
    let hi = dirty.end.min(r.last_end);
    let dirty_bits = if lo < hi { (span_bits >> (width - (hi - lo))) << (lo - r.first) } else { 0 };
    let mut open = span_bits & !(blocked & !dirty_bits);
    // `open` keeps bit k when slots k..k+len are all open; double len up to the duration.
    let mut len = 1;
    while len < r.duration && open != 0 {
        let shift = len.min(r.duration - len);
        open &= open >> shift;
        len += shift;
    }
    open != 0
}

/// Slots per bucket of the span index.
const BUCKET: u64 = 64;

/// For each bucket of [`BUCKET`] slots, the clearing positions of the bids whose span reaches
/// into it, ascending.
#[derive(Debug)]
struct SpanIndex {
    lo: u64,
    buckets: Vec<Vec<u32>>,
}

impl SpanIndex {
    fn new(p: &Placement, lo: u64) -> SpanIndex {
        let mut buckets: Vec<Vec<u32>> = Vec::new();
        for (pos, &i) in p.order.iter().enumerate() {
            let span = p.ranked[i as usize].span();
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
    fn scan(&self, after: usize, rows: Range<u64>) -> Scan<'_> {
        let mut scan = Scan { index: self, after, covered: 0..0, heads: BinaryHeap::new(), last: None };
        scan.widen(rows);
        scan
    }
}

/// For each bucket of [`BUCKET`] slots, the real run's sales reaching into it, in clearing
/// order: `(position, bid, start)`.
#[derive(Debug)]
struct SaleIndex {
    lo: u64,
    buckets: Vec<Vec<(u32, u32, u64)>>,
}

impl SaleIndex {
    fn new(p: &Placement, winners: &[(usize, usize, u64)], lo: u64) -> SaleIndex {
        let mut buckets: Vec<Vec<(u32, u32, u64)>> = Vec::new();
        for &(pos, i, start) in winners {
            let run = placed(&p.ranked[i], start);
            let (first, last) = ((run.start - lo) / BUCKET, (run.end - 1 - lo) / BUCKET);
            if buckets.len() <= last as usize {
                buckets.resize_with(last as usize + 1, Vec::new);
            }
            for b in first..=last {
                buckets[b as usize].push((pos as u32, i as u32, start));
            }
        }
        SaleIndex { lo, buckets }
    }

    /// Calls `each(bid, start, clip)` for every real sale at a position in `(after, before)`
    /// with its rows clipped to one bucket's part of `rows`: each sold cell of `rows` once.
    fn each_between(
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
            let from = list.partition_point(|&(pos, _, _)| pos as usize <= after);
            for &(pos, i, start) in &list[from..] {
                if pos as usize >= before {
                    break;
                }
                each(i as usize, start, clip.clone());
            }
        }
    }
}

/// A merge of the index's buckets over a growing range of rows, without repeats.
#[derive(Debug)]
struct Scan<'a> {
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
    fn widen(&mut self, rows: Range<u64>) {
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
struct Local {
    grid: Grid,
    rows: Range<u64>,
}

impl Local {
    fn reset(&mut self, base: &Grid, rows: Range<u64>) {
        self.rows = rows.clone();
        self.grid.lo = rows.start;
        self.grid.stride = base.stride;
        self.grid.free.clear();
        copy_rows(base, rows, &mut self.grid.free);
    }

    /// Grows the copy to cover `want`; `replay(new_rows, grid)` brings each new range of rows
    /// from the base state up to date, touching only those rows.
    fn extend(&mut self, base: &Grid, want: Range<u64>, mut replay: impl FnMut(Range<u64>, &mut Grid)) {
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

fn losers_needed(
    rule: PriorityRule,
    bids: &[BookBid],
    p: &Placement,
    initial: &Grid,
    winners: &[(usize, usize, u64)],
    out: &mut [Option<u64>],
) {
    if winners.len() == p.order.len() {
        return;
    }
    // Checkpoints of the real run: states after the first k * every winners.
    let grid_bytes = initial.free.len() * 4 + 1;
    let every = (winners.len() * grid_bytes / CHECKPOINT_BUDGET + 1).max(8);
    let mut checkpoints = vec![initial.clone()];
    let mut state = initial.clone();
    for (n, &(_, i, s)) in winners.iter().enumerate() {
        state.take(&bids[i].bundle, s, p.ranked[i].duration);
        if (n + 1) % every == 0 {
            checkpoints.push(state.clone());
        }
    }
    drop(state);
    let mut local = Local::default();
    for (pos, &i) in p.order.iter().enumerate() {
        let i = i as usize;
        if p.starts[i].is_some() {
            continue;
        }
        let me = &p.ranked[i];
        let reach = p.reach(bids, i);
        if checkpoints[0].find_start(&reach).is_none() {
            continue; // No limit would have won: it never fits.
        }
        // Winners ranked before it; it fits before the first of them and not after the last.
        let before = winners.partition_point(|&(at, _, _)| at < pos);
        let usable = before / every;
        // The last checkpoint (within those before it) where it still fits.
        let (mut lo, mut hi) = (0, usable);
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if checkpoints[mid].find_start(&reach).is_some() { lo = mid } else { hi = mid - 1 }
        }
        local.reset(&checkpoints[lo], me.span());
        let blocker = winners[lo * every..before].iter().find(|&&(_, k, s)| {
            let r = &p.ranked[k];
            r.mask & me.mask != 0
                && overlaps(&placed(r, s), &me.span())
                && local.grid.take(&bids[k].bundle, s, r.duration)
                && local.grid.find_start(&reach).is_none()
        });
        let Some(&(at, _, _)) = blocker else {
            debug_assert!(false, "a loser stops fitting before its own position");
            continue;
        };
        let rival = &p.ranked[p.order[at] as usize];
        out[i] = threshold_against(rule, me, rival, (me.limit, u64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::super::rank::key;
    use super::*;
    #[test]
    fn key_is_monotone_in_limit() {
        for rule in [PriorityRule::Value, PriorityRule::Density, PriorityRule::Los] {
            let mut last = f64::MIN;
            for limit in [0, 1, 2, 999_999, 1_000_000, 1 << 40] {
                let k = key(rule, limit, 3_000_000);
                assert!(k >= last);
                last = k;
            }
        }
    }
}
