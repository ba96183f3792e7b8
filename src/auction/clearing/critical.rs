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
    for (w, &(pos, i, start)) in winners.iter().enumerate() {
        let me = &p.ranked[i];
        let blocker = counterfactual_blocker(bids, p, &real, winners, w, &mut local);
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
    winners: &[(usize, usize, u64)],
    w: usize,
    local: &mut Local,
) -> Option<usize> {
    let (pos, i, start) = winners[w];
    let me = p.ranked[i];
    let my_reach = p.reach(bids, i);
    local.reset(base, me.span());
    let mut dirty = placed(&me, start);
    for q in pos + 1..p.order.len() {
        let j = p.order[q] as usize;
        let other = &p.ranked[j];
        let span = other.span();
        let real_start = p.starts[j];
        let new_start = if !overlaps(&span, &dirty) {
            // Untouched by the change: placed as in the real run.
            real_start
        } else {
            local.extend(base, span.clone(), |rows, grid| {
                // New rows hold the real state at this point: replay earlier real placements.
                for &(_, k, s) in winners[w + 1..].iter().take_while(|&&(at, _, _)| at < q) {
                    let r = &p.ranked[k];
                    if overlaps(&placed(r, s), &rows) {
                        grid.take(&bids[k].bundle, s, r.duration);
                    }
                }
            });
            let new_start = local.grid.find_start(&p.reach(bids, j));
            if new_start != real_start {
                for s in [real_start, new_start].into_iter().flatten() {
                    let run = placed(other, s);
                    dirty = dirty.start.min(run.start)..dirty.end.max(run.end);
                }
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
    /// from the base state up to date.
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
            if new.is_empty() {
                continue;
            }
            // Replay only into the new rows: take on a grid of just those rows, then copy back.
            let mut part = Grid { lo: new.start, stride, free: Vec::new() };
            copy_rows(base, new.clone(), &mut part.free);
            replay(new.clone(), &mut part);
            let at = (new.start - lo) as usize * stride;
            self.grid.free[at..at + part.free.len()].copy_from_slice(&part.free);
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
