//! Critical values and shortfalls, without re-running the cycle per bid.
//!
//! Lowering a winner's limit only moves it later in the order; the bids before it are placed as
//! before, so it wins at a later position exactly when it still fits in the state the *other*
//! bids leave there. Those states only fill up, so there is a first bid after which it no longer
//! fits: the *blocker*. Its critical value is the least limit that still ranks it before the
//! blocker (the reserve if there is none).
//!
//! Without the winner, later bids may be placed differently, and those changes cascade. The
//! counterfactual is replayed lazily (see [`super::replay`]): only bids whose window reaches the
//! rows it holds are visited; a bid is placed as in the real run unless its window touches a
//! *dirty* cell (one where the counterfactual differs) in a way that could open a start the real
//! run found blocked, or close the one it took. The replay keeps its own copy of the rows it has
//! looked at, grown on demand.
//!
//! A loser moved earlier finds exactly the state the real run had there, so its threshold is the
//! least limit that ranks it before the first winner after which it no longer fits. That winner
//! is found by binary search over checkpoints of the real run, then a short replay.

use std::ops::Range;

use super::grid::{Grid, overlaps};
use super::rank::least_limit_beating;
use super::replay::{Dirty, Local, SaleIndex, SpanIndex};
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
    // Winners in clearing order, with their starts.
    let winners: Vec<(usize, u64)> = (0..bids.len()).filter_map(|i| p.starts[i].map(|s| (i, s))).collect();
    winners_critical(rule, bids, p, initial, &winners, &mut out);
    losers_needed(rule, bids, p, initial, &winners, &mut out);
    out
}

fn threshold_against(rule: PriorityRule, me: &Ranked, rival: &Ranked, range: (u64, u64)) -> Option<u64> {
    least_limit_beating(rule, me.size, me.order, range, (rival.key, rival.order))
}

pub(super) fn placed(r: &Ranked, start: u64) -> Range<u64> {
    start..start + r.duration
}

fn winners_critical(
    rule: PriorityRule,
    bids: &[BookBid],
    p: &Placement,
    initial: &Grid,
    winners: &[(usize, u64)],
    out: &mut [Option<u64>],
) {
    // The real run, replayed winner by winner: before winner w it holds the state w met.
    let mut real = initial.clone();
    let mut local = Local::default();
    let index = SpanIndex::new(p, initial.lo);
    let sold = SaleIndex::new(p, winners, initial.lo);
    let mut dirty = Dirty::new(initial);
    for (w, &(i, start)) in winners.iter().enumerate() {
        let me = &p.ranked[i];
        let blocker =
            counterfactual_blocker(bids, p, &real, (winners, w), (&mut local, &mut dirty), (&index, &sold));
        out[i] = Some(match blocker {
            Some(q) => {
                let rival = &p.ranked[q];
                threshold_against(rule, me, rival, (me.reserve, me.limit))
                    .expect("a winner ranks before every bid after it")
            }
            None => me.reserve,
        });
        real.take(&bids[i].bundle, start, me.duration);
    }
}

/// The position of the first bid after which winner `winners[w]` no longer fits when it is
/// left out, or `None` if it always fits. `base` is the real state just before it.
fn counterfactual_blocker(
    bids: &[BookBid],
    p: &Placement,
    base: &Grid,
    (winners, w): (&[(usize, u64)], usize),
    (local, dirty): (&mut Local, &mut Dirty),
    (index, sold): (&SpanIndex, &SaleIndex),
) -> Option<usize> {
    let (pos, start) = winners[w];
    let i = pos;
    let me = p.ranked[i];
    let my_reach = p.reach(bids, i);
    local.reset(base, me.span());
    // Where the counterfactual may differ from the real run: these cells.
    dirty.clear();
    dirty.mark(me.mask, placed(&me, start));
    // Only bids reaching the rows the counterfactual holds can change them or be changed.
    let mut scan = index.scan(pos, me.span());
    while let Some(q) = scan.next() {
        let j = q;
        let other = &p.ranked[j];
        let span = other.span();
        let real_start = p.starts[j];
        let new_start = if !may_change(dirty, other, real_start, p.blocked[j]) {
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
            if real_start.is_none()
                && let Some(open) = dirty.slots(other.mask, span.clone())
            {
                // It failed at every start in the real run, and a start whose run avoids the
                // dirty cells sees the same cells now: only runs touching them can succeed.
                let first_dirty = reach.first + u64::from(open.trailing_zeros());
                let last_dirty = reach.first + 127 - u64::from(open.leading_zeros());
                reach.first = reach.first.max((first_dirty + 1).saturating_sub(other.duration));
                reach.last_end = reach.last_end.min(last_dirty + other.duration);
            }
            let new_start = local.grid.find_start(&reach);
            if new_start != real_start {
                for s in [real_start, new_start].into_iter().flatten() {
                    dirty.mark(other.mask, placed(other, s));
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

/// Whether a bid's placement may differ from the real run's, given the cells that differ.
///
/// In the real run, at this bid's turn, every start before its real one failed (and, for a
/// loser, every start). A start whose run avoids the dirty cells sees exactly what it saw
/// then, so it fails again; the real start, if its run avoids them, succeeds again.
fn may_change(dirty: &Dirty, r: &Ranked, real_start: Option<u64>, blocked: Option<u128>) -> bool {
    let span = r.span();
    if !dirty.touches(r.mask, span.clone()) {
        return false;
    }
    let (Some(blocked), Some(changed)) = (blocked, dirty.slots(r.mask, span)) else { return true };
    match real_start {
        None => has_run(!(blocked & !changed), r.last_end - r.first, r.duration),
        Some(s) => {
            dirty.touches(r.mask, placed(r, s))
                || has_run(!(blocked & !changed), s - r.first + r.duration - 1, r.duration)
        }
    }
}

/// Whether `open` has `len` consecutive set bits within its lowest `width` bits.
fn has_run(open: u128, width: u64, len: u64) -> bool {
    if width < len {
        return false;
    }
    let mut open = open & if width >= 128 { u128::MAX } else { (1u128 << width) - 1 };
    // `open` keeps bit k while slots k..k+have are all open; double `have` up to `len`.
    let mut have = 1;
    while have < len && open != 0 {
        let shift = have.min(len - have);
        open &= open >> shift;
        have += shift;
    }
    open != 0
}

fn losers_needed(
    rule: PriorityRule,
    bids: &[BookBid],
    p: &Placement,
    initial: &Grid,
    winners: &[(usize, u64)],
    out: &mut [Option<u64>],
) {
    if winners.len() == bids.len() {
        return;
    }
    // Checkpoints of the real run: states after the first k * every winners.
    let grid_bytes = initial.free.len() * 4 + 1;
    let every = (winners.len() * grid_bytes / CHECKPOINT_BUDGET + 1).max(8);
    let mut checkpoints = vec![initial.clone()];
    let mut state = initial.clone();
    for (n, &(i, s)) in winners.iter().enumerate() {
        state.take(&bids[i].bundle, s, p.ranked[i].duration);
        if (n + 1) % every == 0 {
            checkpoints.push(state.clone());
        }
    }
    drop(state);
    let mut local = Local::default();
    for (i, need) in out.iter_mut().enumerate() {
        if p.starts[i].is_some() {
            continue;
        }
        let me = &p.ranked[i];
        let reach = p.reach(bids, i);
        if checkpoints[0].find_start(&reach).is_none() {
            continue; // No limit would have won: it never fits.
        }
        // Winners ranked before it; it fits before the first of them and not after the last.
        let before = winners.partition_point(|&(at, _)| at < i);
        let usable = before / every;
        // The last checkpoint (within those before it) where it still fits.
        let (mut lo, mut hi) = (0, usable);
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if checkpoints[mid].find_start(&reach).is_some() { lo = mid } else { hi = mid - 1 }
        }
        local.reset(&checkpoints[lo], me.span());
        let blocker = winners[lo * every..before].iter().find(|&&(k, s)| {
            let r = &p.ranked[k];
            r.mask & me.mask != 0
                && overlaps(&placed(r, s), &me.span())
                && local.grid.take(&bids[k].bundle, s, r.duration)
                && local.grid.find_start(&reach).is_none()
        });
        let Some(&(at, _)) = blocker else {
            debug_assert!(false, "a loser stops fitting before its own position");
            continue;
        };
        let rival = &p.ranked[at];
        *need = threshold_against(rule, me, rival, (me.limit, u64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::super::rank::key;
    use super::*;

    #[test]
    fn runs_of_open_slots() {
        assert!(has_run(0b0111_0110, 8, 3));
        assert!(!has_run(0b0110_0110, 8, 3));
        assert!(!has_run(0b0111_0000, 6, 3), "the run must end within the width");
        assert!(!has_run(u128::MAX, 2, 3));
        assert!(has_run(u128::MAX, 128, 128));
    }
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
