//! Critical values and shortfalls, without re-running the cycle per bid.
//!
//! Lowering a winner's limit only moves it later in the order; the bids before it are placed as
//! before, so it wins at a later position exactly when it still fits in the state the *other*
//! bids leave there. Those states only fill up, so there is a first bid after which it no longer
//! fits: the *blocker*. Its critical value is the least limit that still ranks it before the
//! blocker (the reserve if there is none, or if it would rank before the blocker even at its
//! reserve: so a replay stops at the first bid it would beat at its reserve).
//!
//! Without the winner, later bids may be placed differently, and those changes cascade. The
//! counterfactual is replayed lazily (see [`super::replay`]): only bids whose window reaches the
//! rows it holds are visited, found through the buckets of rows their spans reach
//! ([`super::span`]); a bid is placed as in the real run unless its window
//! touches a *dirty* cell (one where the counterfactual differs) in a way that could open a start
//! the real run found blocked, or close the one it took. The replay keeps its own copy of the rows
//! it has looked at, grown on demand from the nearest checkpoint of the real run, and tracks which
//! starts of the winner still fit as bits, so a take costs only the slots it touched.
//!
//! A loser moved earlier finds exactly the state the real run had there, so its threshold is the
//! least limit that ranks it before the first winner after which it no longer fits. That winner
//! is found by binary search over checkpoints of the real run, then a short replay of the real
//! sales since that reach its span (merged from the buckets of rows they reach, so a long book
//! with few checkpoints does not walk every winner in between).

use std::ops::Range;

use super::grid::{Grid, Reach, overlaps};
use super::openings::Live;
use super::rank::{beats, key, least_limit_beating};
use super::replay::{Dirty, Local, SaleIndex, Shares, Way};
use super::span::{SpanIndex, Visit};
use super::{Placement, Ranked};
use crate::auction::book::BookBid;
use crate::auction::config::PriorityRule;

/// Memory the checkpoints of the real run may take.
const CHECKPOINT_BUDGET: usize = 64 << 20;

pub(super) fn thresholds(
    rule: PriorityRule,
    bids: &[BookBid],
    p: &Placement,
    initial: &Grid,
    threads: usize,
) -> Vec<Option<u64>> {
    let mut out = vec![None; bids.len()];
    // Winners in clearing order, with their starts.
    let winners: Vec<(usize, u64)> = (0..bids.len()).filter_map(|i| p.starts[i].map(|s| (i, s))).collect();
    // With no winner, every loser met the cycle's free capacity as it was, and would meet it the
    // same at any place in the order: no limit wins it.
    if winners.is_empty() {
        return out;
    }
    let shares = Shares::new(bids);
    let checkpoints = Checkpoints::new(initial, &shares, p, &winners);
    let sold = SaleIndex::new(p, &winners, initial.lo);
    let run = Run { bids, p, winners: &winners, shares, checkpoints, sold };
    winners_critical(rule, &run, initial, threads, &mut out);
    losers_needed(rule, &run, threads, &mut out);
    out
}

/// What every replay of one cycle reads.
struct Run<'a> {
    bids: &'a [BookBid],
    p: &'a Placement,
    /// Positions and starts of the winners, in clearing order.
    winners: &'a [(usize, u64)],
    shares: Shares,
    checkpoints: Checkpoints,
    /// The real sales by the buckets of rows they reach.
    sold: SaleIndex,
}

impl Run<'_> {
    /// Takes the real sale of the bid at position `k` from `grid`, clipped to `rows`.
    fn take_sale(&self, grid: &mut Grid, k: usize, start: u64, rows: Range<u64>) -> bool {
        grid.take_within(self.shares.of(k), start, self.p.ranked[k].duration, rows)
    }

    /// Brings `rows` of `grid`, holding the checkpoint before the first `n` winners, up to the
    /// real state before position `pos` (which those `n` winners precede): the real sales since
    /// the checkpoint that reach them.
    fn sales_since_checkpoint(&self, grid: &mut Grid, rows: Range<u64>, n: usize, pos: usize) {
        let held = self.checkpoints.before(n).1;
        if held < n {
            self.sold.each_in(rows, self.winners[held].0..pos, |k, s, clip| {
                self.take_sale(grid, k, s, clip);
            });
        }
    }
}

/// States of the real run after every `every`-th winner, within [`CHECKPOINT_BUDGET`].
struct Checkpoints {
    every: usize,
    states: Vec<Grid>,
}

impl Checkpoints {
    fn new(initial: &Grid, shares: &Shares, p: &Placement, winners: &[(usize, u64)]) -> Checkpoints {
        let grid_bytes = initial.free.len() * 4 + 1;
        let every = (winners.len() * grid_bytes / CHECKPOINT_BUDGET + 1).max(8);
        let mut states = vec![initial.clone()];
        let mut state = initial.clone();
        for (n, &(i, s)) in winners.iter().enumerate() {
            state.take_within(shares.of(i), s, p.ranked[i].duration, initial.lo..initial.hi());
            if (n + 1) % every == 0 {
                states.push(state.clone());
            }
        }
        Checkpoints { every, states }
    }

    /// The latest state holding at most the first `n` winners' sales, and how many it holds.
    fn before(&self, n: usize) -> (&Grid, usize) {
        let k = (n / self.every).min(self.states.len() - 1);
        (&self.states[k], k * self.every)
    }
}

fn threshold_against(rule: PriorityRule, me: &Ranked, rival: &Ranked, range: (u64, u64)) -> Option<u64> {
    least_limit_beating(rule, me.size, me.order, range, (rival.key, rival.order))
}

/// The rows of `r`'s run from row `start`.
pub(super) fn placed(p: &Placement, r: &Ranked, start: u64) -> Range<u64> {
    p.rows.run(start, r.duration)
}

/// Most winners a thread takes at a time.
const WINNERS_PER_TAKE: usize = 64;

/// Every winner's critical value, on a pool of `threads` threads. Each winner's value depends
/// only on the real run, so the split changes nothing but the time: the pool's threads steal
/// batches of winners, and each replay starts from the real run's nearest checkpoint, brought
/// up to date on the rows of the winner's span only.
fn winners_critical(
    rule: PriorityRule,
    run: &Run<'_>,
    initial: &Grid,
    threads: usize,
    out: &mut [Option<u64>],
) {
    use rayon::prelude::*;
    let index = SpanIndex::new(run.p, initial.lo);
    let n = run.winners.len();
    let threads = threads.clamp(1, n.max(1));
    // Batches small enough for every thread to take several, so none waits on the last; winners
    // side by side in the grid together, as their replays read the same rows.
    let per_take = (n / (threads * 4)).clamp(1, WINNERS_PER_TAKE);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&w| (run.p.ranked[run.winners[w].0].first, w));
    let found: Vec<(usize, u64)> = super::pool::install(threads, || {
        (0..n.div_ceil(per_take))
            .into_par_iter()
            .map_init(
                || (Local::default(), Dirty::new(initial), Live::default()),
                |scratch, k| {
                    let batch = &order[k * per_take..((k + 1) * per_take).min(n)];
                    critical_of(rule, run, &index, scratch, batch)
                },
            )
            .flatten_iter()
            .collect()
    });
    for (i, value) in found {
        out[i] = Some(value);
    }
}

/// The critical values of the winners numbered in `batch`, as `(position, value)`.
fn critical_of(
    rule: PriorityRule,
    run: &Run<'_>,
    index: &SpanIndex,
    (local, dirty, live): &mut (Local, Dirty, Live),
    batch: &[usize],
) -> Vec<(usize, u64)> {
    let mut found = Vec::with_capacity(batch.len());
    for &w in batch {
        super::pool::breathe();
        let (i, _) = run.winners[w];
        let me = &run.p.ranked[i];
        let blocker =
            counterfactual_blocker(run, w, reserve_rank(rule, run.p, i), (local, dirty, live), index);
        found.push((
            i,
            match blocker {
                Some(q) => {
                    let rival = &run.p.ranked[q];
                    threshold_against(rule, me, rival, (me.reserve, me.limit))
                        .expect("a winner ranks before every bid after it")
                }
                None => me.reserve,
            },
        ));
    }
    found
}

/// The first position after winner `pos` holding a bid it would rank before even at its
/// reserve. Its critical value against a blocker there or later is the reserve, as it is with no
/// blocker, so its replay need not look further.
fn reserve_rank(rule: PriorityRule, p: &Placement, pos: usize) -> usize {
    let me = &p.ranked[pos];
    let at_reserve = key(rule, me.reserve, me.size);
    let later = &p.ranked[pos + 1..];
    pos + 1 + later.partition_point(|r| !beats(at_reserve, me.order, r.key, r.order))
}

/// The position of the first bid after which winner `run.winners[w]` no longer fits when it is
/// left out, or `None` if it always fits or first stops fitting at `until` or later.
fn counterfactual_blocker(
    run: &Run<'_>,
    w: usize,
    until: usize,
    (local, dirty, live): (&mut Local, &mut Dirty, &mut Live),
    index: &SpanIndex,
) -> Option<usize> {
    let (p, lo) = (run.p, index.lo);
    let (pos, start) = run.winners[w];
    let me = p.ranked[pos];
    let my_reach = p.reach(run.bids, pos);
    // The real state just before it, on the rows of its span: the nearest checkpoint's, plus
    // the real sales since that reach them.
    local.reset(run.checkpoints.before(w).0, me.span());
    run.sales_since_checkpoint(&mut local.grid, me.span(), w, pos);
    let mut fit = Fit::new(&local.grid, &my_reach);
    // Where the counterfactual differs from the real run, and which way: at first, the cells
    // it freed.
    dirty.clear();
    let freed = placed(p, &me, start);
    dirty.add(run.shares.of(pos), freed.clone(), true);
    // Only bids reaching the rows the counterfactual holds can change them or be changed, and
    // of the losers only those with enough raised rows about them.
    let mut scan = index.scan(pos, me.span(), live);
    scan.raised(&freed, |b| dirty.raised_rows(b));
    while let Some(visit) = scan.next() {
        let q = visit.pos as usize;
        if q >= until {
            break;
        }
        let real_start = visit.real_start(lo);
        let new_start = if !may_change(dirty, visit, lo) {
            // Untouched by the change: placed as in the real run.
            real_start
        } else {
            // The record holds what a placement needs but the shares: the ranked bid is not read.
            let (span, duration) = (visit.span(lo), visit.duration());
            local.extend(span.clone(), |rows, grid| {
                // New rows are untouched by the change: they hold the real state at this
                // point, the nearest checkpoint's plus the real sales since.
                let n = run.winners.partition_point(|&(at, _)| at < q);
                grid.copy_rows(run.checkpoints.before(n).0, rows.clone());
                run.sales_since_checkpoint(grid, rows, n, q);
            });
            scan.widen(local.rows.clone());
            let mut reach = Reach::of_shares(run.shares.of(q), span.start, span.end, duration);
            if real_start.is_none()
                && let Some(open) = dirty.slots(visit.mask, span.clone(), Way::Up)
            {
                // It failed at every start in the real run, and a start whose run has no more
                // free anywhere than it had then fails again: only runs touching a raised cell
                // can succeed.
                let first_raised = reach.first + u64::from(open.trailing_zeros());
                let last_raised = reach.first + 127 - u64::from(open.leading_zeros());
                reach.first = reach.first.max((first_raised + 1).saturating_sub(duration));
                reach.last_end = reach.last_end.min(last_raised + duration);
            }
            let new_start = local.grid.find_start(&reach);
            if new_start != real_start {
                // Its real sale is not taken now, its new one is.
                for (s, freed) in [(real_start, true), (new_start, false)] {
                    if let Some(s) = s {
                        let rows = p.rows.run(s, duration);
                        dirty.add(run.shares.of(q), rows.clone(), freed);
                        scan.raised(&rows, |b| dirty.raised_rows(b));
                    }
                }
            }
            new_start
        };
        if let Some(s) = new_start {
            let taken = p.rows.run(s, visit.duration());
            let touched = local.take(run.shares.of(q), s, visit.duration());
            if touched && visit.mask & me.mask != 0 && overlaps(&taken, &me.span()) {
                let fits = match &mut fit {
                    Some(fit) => {
                        let common = run.shares.of(q).map(|(r, _)| r).filter(|&r| me.mask & 1 << r != 0);
                        fit.after_take(&local.grid, &my_reach, common, taken)
                    }
                    None => local.grid.find_start(&my_reach).is_some(),
                };
                if !fits {
                    return Some(q);
                }
            }
        }
    }
    None
}

/// The slots of a winner's span (of at most 128) where its bundle still fits in the
/// counterfactual; they only close as other bids take capacity.
struct Fit {
    open: u128,
    width: u64,
    duration: u64,
}

impl Fit {
    fn new(grid: &Grid, reach: &Reach) -> Option<Fit> {
        grid.tracks(reach).then(|| Fit {
            open: grid.fitting(reach, reach.span()),
            width: reach.last_end - reach.first,
            duration: reach.duration,
        })
    }

    /// Closes the slots of `run` where a take of `resources` there left too little; whether the
    /// bundle still fits somewhere.
    fn after_take(
        &mut self,
        grid: &Grid,
        reach: &Reach,
        resources: impl Iterator<Item = usize> + Clone,
        run: Range<u64>,
    ) -> bool {
        self.open &= !grid.short(reach, resources, run);
        has_run(self.open, self.width, self.duration)
    }
}

/// Whether a bid's placement may differ from the real run's, given the cells that differ.
///
/// In the real run, at this bid's turn, every start before its real one failed (and, for a
/// loser, every start), and its real start fitted. A failed start can succeed now only if each
/// slot that kept it out has more free capacity than then (a raised cell); the real start can
/// fail now only if a cell of its run has less (a lowered one).
fn may_change(dirty: &Dirty, v: &Visit, lo: u64) -> bool {
    let span = v.span(lo);
    let (first, duration) = (span.start, v.duration());
    // The rows the starts that failed could use.
    let failed = match v.real_start(lo) {
        None => span.clone(),
        Some(s) => {
            if dirty.touches(v.mask, s..s + duration, Way::Down) {
                return true;
            }
            first..s + duration - 1
        }
    };
    if !dirty.touches(v.mask, failed.clone(), Way::Up) {
        return false;
    }
    let (Some(blocked), Some(raised)) = (v.blocked(), dirty.slots(v.mask, span, Way::Up)) else {
        return true;
    };
    has_run(!(blocked & !raised), failed.end - first, duration)
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

/// Every loser's least winning limit, on the same pool: each depends only on the real run.
fn losers_needed(rule: PriorityRule, run: &Run<'_>, threads: usize, out: &mut [Option<u64>]) {
    use rayon::prelude::*;
    if run.winners.len() == run.bids.len() {
        return;
    }
    let mut losers: Vec<usize> = (0..run.bids.len()).filter(|&i| run.p.starts[i].is_none()).collect();
    // Losers side by side in the grid share the checkpoint rows their searches read.
    losers.sort_by_key(|&i| (run.p.ranked[i].first, i));
    let found: Vec<(usize, u64)> = super::pool::install(threads, || {
        losers
            .par_iter()
            .with_min_len(256)
            .map_init(Local::default, |local, &i| {
                super::pool::breathe();
                loser_needs(rule, run, local, i).map(|need| (i, need))
            })
            .flatten_iter()
            .collect()
    });
    for (i, need) in found {
        out[i] = Some(need);
    }
}

/// The least limit with which the loser at position `i` would have won, if any.
fn loser_needs(rule: PriorityRule, run: &Run<'_>, local: &mut Local, i: usize) -> Option<u64> {
    let (p, winners, checkpoints) = (run.p, run.winners, &run.checkpoints);
    let me = &p.ranked[i];
    let reach = p.reach(run.bids, i);
    // No limit would have won if it never fits.
    checkpoints.states[0].find_start(&reach)?;
    // Winners ranked before it; it fits before the first of them and not after the last.
    let before = winners.partition_point(|&(at, _)| at < i);
    let usable = checkpoints.before(before).1 / checkpoints.every;
    // The last checkpoint (within those before it) where it still fits.
    let (mut lo, mut hi) = (0, usable);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if checkpoints.states[mid].find_start(&reach).is_some() { lo = mid } else { hi = mid - 1 }
    }
    local.reset(&checkpoints.states[lo], me.span());
    // The real sales since that checkpoint reaching its span, in clearing order.
    let since = lo * checkpoints.every;
    let positions = winners.get(since).map_or(i, |&(at, _)| at)..i;
    let blocker = run.sold.in_order(me.span(), positions).find(|&(k, s)| {
        let r = &p.ranked[k];
        r.mask & me.mask != 0
            && overlaps(&placed(p, r, s), &me.span())
            && local.take(run.shares.of(k), s, r.duration)
            && local.grid.find_start(&reach).is_none()
    });
    let Some((at, _)) = blocker else {
        debug_assert!(false, "a loser stops fitting before its own position");
        return None;
    };
    threshold_against(rule, me, &p.ranked[at], (me.limit, u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::super::Rows;
    use super::*;

    #[test]
    fn replays_stop_where_the_winner_would_rank_first_even_at_its_reserve() {
        let bid = |key: f64, order: u64, reserve: u64| Ranked {
            key,
            order,
            size: 1,
            first: 0,
            last_end: 1,
            duration: 1,
            limit: key as u64,
            reserve,
            mask: 1,
        };
        // By value, a winner of limit 10 and reserve 5 accepted fifth: at its reserve it ties
        // the bids of key 5 and ranks before those accepted after it.
        let ranked = vec![bid(10.0, 5, 5), bid(8.0, 1, 0), bid(5.0, 3, 0), bid(5.0, 7, 0), bid(1.0, 2, 0)];
        let n = ranked.len();
        let p = Placement { ranked, starts: vec![Some(0); n], blocked: vec![None; n], rows: Rows::default() };
        assert_eq!(reserve_rank(PriorityRule::Value, &p, 0), 3);
        // A blocker there or later leaves it its reserve, as no blocker does.
        let rival = &p.ranked[3];
        assert_eq!(threshold_against(PriorityRule::Value, &p.ranked[0], rival, (5, 10)), Some(5));
        // With no reserve it ranks before none of them at that price: no replay is cut short.
        let ranked = vec![bid(10.0, 5, 0), bid(8.0, 1, 0), bid(1.0, 2, 0)];
        let free =
            Placement { ranked, starts: vec![Some(0); 3], blocked: vec![None; 3], rows: Rows::default() };
        assert_eq!(reserve_rank(PriorityRule::Value, &free, 0), 3);
    }

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
