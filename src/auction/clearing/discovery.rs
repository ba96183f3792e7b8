//! Price discovery (docs/design.md §7; the method and its measurements: docs/price-discovery.md).
//!
//! The cycle's allocation is fixed; prices are chosen for it. A cell (resource, slot) is
//! *scarce* when a loser needed more of it than the cycle left free; every other cell stays at
//! the reserve. On scarce cells:
//!
//! 1. each loser needs, for every start of its window, its surplus spread over that run's
//!    blocked cells (the start's *water level*); a cell's demand is the highest level of any
//!    loser's starts covering it — at that price no loser could afford any start;
//! 2. each winner spreads its surplus over its own scarce cells; the least such amount among a
//!    cell's winners caps the cell, so every winner can afford its bundle (IR, exactly);
//! 3. losers that could still afford a start bid up its blocked cells with whatever slack the
//!    winners holding them have left, for a few rounds.
//!
//! Prices are the reserve plus the premium, held under the cap. IR is 1 by construction; envy —
//! losers who could afford a start — is reported as measured.

use rayon::prelude::*;

use super::grid::Grid;
use super::{Placement, Ranked, Rows};
use crate::auction::book::BookBid;
use crate::auction::config::Config;
use crate::auction::money::{Price, pico_cost};
use crate::capacity::fixed::MICRO;
use crate::capacity::{Bundle, MAX_RESOURCES};

/// This cycle's price of every resource in every slot its bids could touch: one per row of the
/// cycle's grid, as a row's slots are alike.
#[derive(Clone, Debug)]
pub(crate) struct Discovery {
    /// The first row.
    lo: u64,
    stride: usize,
    rows: Rows,
    /// Per row, per resource.
    prices: Vec<Price>,
    /// The price of slots no bid touched: the reserve, bounded.
    idle: Vec<Price>,
    /// Winners whose bundle costs at most their limit, over winners (1 when none).
    pub(crate) ir: f64,
    /// Losers whose cheapest start costs less than their limit, over losers (0 when none).
    pub(crate) envy: f64,
}

impl Discovery {
    /// Rows the curve covers, from `lo`.
    fn row_count(&self) -> u64 {
        (self.prices.len() / self.stride.max(1)) as u64
    }

    /// The price of `resource` in row `row` of the cycle's grid.
    fn at_row(&self, resource: usize, row: u64) -> Price {
        self.prices[(row - self.lo) as usize * self.stride + resource]
    }

    /// The price of `resource` in `slot`.
    pub(crate) fn price(&self, resource: usize, slot: u64) -> Price {
        let slots = self.slots();
        if slots.contains(&slot) { self.at_row(resource, self.rows.row(slot)) } else { self.idle[resource] }
    }

    /// The slots the curve covers.
    pub(crate) fn slots(&self) -> std::ops::Range<u64> {
        self.rows.slots(self.lo..self.lo + self.row_count())
    }

    /// The curve as runs of equal prices: `(resource, from, to, price)`, by resource then slot.
    pub(crate) fn runs(&self) -> Vec<(usize, u64, u64, Price)> {
        let mut runs: Vec<(usize, u64, u64, Price)> = Vec::new();
        for r in 0..self.stride {
            for row in self.lo..self.lo + self.row_count() {
                let (p, slots) = (self.at_row(r, row), self.rows.slots(row..row + 1));
                match runs.last_mut() {
                    Some(run) if run.0 == r && run.2 == slots.start && run.3 == p => run.2 = slots.end,
                    _ => runs.push((r, slots.start, slots.end, p)),
                }
            }
        }
        runs
    }

    /// A curve over `slots` of `stride` resources from its runs; `idle` prices the slots it does
    /// not cover.
    pub(crate) fn from_runs(
        slots: std::ops::Range<u64>,
        stride: usize,
        idle: Vec<Price>,
        runs: impl IntoIterator<Item = (usize, u64, u64, Price)>,
        (ir, envy): (f64, f64),
    ) -> Result<Discovery, String> {
        if slots.end < slots.start {
            return Err("an empty curve".into());
        }
        let runs: Vec<(usize, u64, u64, Price)> = runs.into_iter().collect();
        // A row wherever some resource's price may change.
        let mut bounds = vec![slots.start, slots.end];
        for &(r, from, to, _) in &runs {
            if r >= stride || from < slots.start || to > slots.end || from > to {
                return Err(format!("a price run [{from}, {to}) outside the curve"));
            }
            bounds.extend([from, to]);
        }
        bounds.sort_unstable();
        bounds.dedup();
        let (rows, lo) =
            if bounds.len() >= 2 { (Rows::stretches(bounds), 0) } else { (Rows::default(), slots.start) };
        let count = rows.bounds().map_or(0, |b| b.len() - 1);
        let mut prices = vec![Price::ZERO; count * stride];
        for (r, from, to, price) in runs {
            for row in rows.rows(from..to) {
                prices[row as usize * stride + r] = price;
            }
        }
        Ok(Discovery { lo, stride, rows, prices, idle, ir, envy })
    }

    /// What `share` of `resource` costs over a run of `duration` slots from row `start`, in
    /// 10^-12 credits.
    pub(crate) fn run_cost(&self, resource: usize, share: u32, start: u64, duration: u64) -> u128 {
        self.rows
            .run(start, duration)
            .map(|row| {
                pico_cost(u64::from(share), self.at_row(resource, row)) * u128::from(self.rows.width(row))
            })
            .sum()
    }

    /// The cost of `bundle` over a run of `duration` slots from row `start`, in 10^-12 credits.
    pub(crate) fn cost(&self, bundle: &Bundle, start: u64, duration: u64) -> u128 {
        bundle.raw().map(|(r, share)| self.run_cost(r, share, start, duration)).sum()
    }
}

/// `surplus * 10^6 / weight` (a premium in millionths of a credit per full capacity-slot),
/// rounded up when a loser's demand (so its cost reaches its limit), down when a winner's cap
/// (so its cost stays within its limit).
fn per_unit(surplus: u64, weight: u64, up: bool) -> u64 {
    if weight == 0 {
        return if up && surplus > 0 { u64::MAX } else { 0 };
    }
    // In 64 bits when the product fits (always, below 18 million credits of surplus).
    if let Some(n) = surplus.checked_mul(MICRO) {
        return if up { n.div_ceil(weight) } else { n / weight };
    }
    let n = u128::from(surplus) * u128::from(MICRO);
    let d = if up { n.div_ceil(u128::from(weight)) } else { n / u128::from(weight) };
    u64::try_from(d).unwrap_or(u64::MAX)
}

/// The runs a bid may take within its span, as `(start, end)` rows counted from its first row:
/// one from every row when a row is a slot, and from every row whose run ends on a bound when
/// rows are stretches (a placement can start nowhere else).
fn runs_of(rows: &Rows, r: &Ranked, out: &mut Vec<(usize, usize)>) {
    out.clear();
    let width = (r.last_end - r.first) as usize;
    match rows.bounds() {
        None => {
            let d = r.duration as usize;
            if width >= d {
                out.extend((0..=width - d).map(|k| (k, k + d)));
            }
        }
        Some(bounds) => {
            let first = r.first as usize;
            let last = bounds[r.last_end as usize];
            let mut j = first;
            for k in 0..width {
                let end = bounds[first + k] + r.duration;
                if end > last {
                    break;
                }
                while bounds[j] < end {
                    j += 1;
                }
                if bounds[j] == end {
                    out.push((k, j - first));
                }
            }
        }
    }
}

/// Buffers [`loser_demand`] reuses from one loser to the next.
#[derive(Default)]
struct Scratch {
    blocked: Vec<u64>,
    /// Per row of the span, the resources it was blocked in, as a mask.
    masks: Vec<u16>,
    sums: Vec<u64>,
    weight: Vec<u64>,
    runs: Vec<(usize, usize)>,
    /// The sliding minimum's candidates: `(run, weight)`.
    window: std::collections::VecDeque<(usize, u64)>,
}

/// What loser `b` needs of each cell it was blocked in: for every run it may take, its surplus
/// spread over the blocked capacity-slots of the run (the water level that prices that run out),
/// and for each blocked cell the highest level of the runs covering it. Calls
/// `need(cell, premium)` for every blocked cell of the span. `S` is the grid's stride when the
/// caller knows it at compile time (so a row is checked in one unrolled pass), 0 otherwise.
fn loser_demand<const S: usize>(
    b: &BookBid,
    r: &Ranked,
    left: &Grid,
    scratch: &mut Scratch,
    mut need: impl FnMut(usize, u64),
) {
    let (stride, rows) = (left.stride, &left.rows);
    let n = if S > 0 { S } else { stride };
    debug_assert_eq!(n, stride);
    let at_row = |row: u64| (row - left.lo) as usize * stride;
    let surplus = r.limit - r.reserve;
    let Scratch { blocked, masks, sums, weight, runs, window } = scratch;
    // Per resource, the share it needs (`i32::MIN` where it needs none, so such a cell is never
    // short) and the weight a short cell adds.
    let (mut want, mut share) = ([i32::MIN; MAX_RESOURCES], [0u64; MAX_RESOURCES]);
    for (res, s) in b.bundle.raw() {
        (want[res], share[res]) = (s as i32, u64::from(s));
    }
    // Blocked weight of each row (the shares it could not have, times its slots) and the
    // resources it was short of.
    blocked.clear();
    masks.clear();
    let cells = &left.free[at_row(r.first)..at_row(r.last_end)];
    for (k, row) in cells.chunks_exact(n).enumerate() {
        let (mut w, mut m) = (0u64, 0u16);
        for j in 0..n {
            let short = row[j] < want[j];
            w += if short { share[j] } else { 0 };
            m |= u16::from(short) << j;
        }
        blocked.push(if rows.stretched() { w * rows.width(r.first + k as u64) } else { w });
        masks.push(m);
    }
    if masks.iter().all(|&m| m == 0) {
        return;
    }
    // Blocked weight of each run.
    sums.clear();
    sums.push(0);
    let mut acc = 0;
    for &w in blocked.iter() {
        acc += w;
        sums.push(acc);
    }
    let at = at_row(r.first);
    let mut need_row = |k: usize, mask: u16, level: u64| {
        let mut m = mask;
        while m != 0 {
            need(at + k * stride + m.trailing_zeros() as usize, level);
            m &= m - 1;
        }
    };
    // For each row, the lightest run covering it sets the highest level: a sliding minimum
    // (runs start and end in order, so the runs covering a row are consecutive). Neighbouring
    // rows mostly share their lightest run: divide once per run.
    let mut level = (usize::MAX, 0);
    if rows.bounds().is_none() {
        // A row a slot: run `j` is rows `j..j + d`, and a row's runs are the last `d` started.
        let (d, span) = (r.duration as usize, masks.len());
        let (lightest, mut head) = (&mut *window, 0);
        lightest.clear();
        for (k, &mask) in masks.iter().enumerate() {
            if k + d <= span {
                let w = sums[k + d] - sums[k];
                while lightest.len() > head && lightest.back().is_some_and(|&(_, back)| back >= w) {
                    lightest.pop_back();
                }
                lightest.push_back((k, w));
            }
            if lightest[head].0 + d <= k {
                head += 1;
            }
            if mask != 0 {
                let (j, w) = lightest[head];
                if level.0 != j {
                    level = (j, per_unit(surplus, w, true));
                }
                need_row(k, mask, level.1);
            }
        }
        return;
    }
    runs_of(rows, r, runs);
    weight.clear();
    weight.extend(runs.iter().map(|&(k, e)| sums[e] - sums[k]));
    let (window, mut next) = (&mut *window, 0);
    window.clear();
    for (k, &mask) in masks.iter().enumerate() {
        while next < runs.len() && runs[next].0 <= k {
            while window.back().is_some_and(|&(j, _)| weight[j] >= weight[next]) {
                window.pop_back();
            }
            window.push_back((next, 0));
            next += 1;
        }
        while window.front().is_some_and(|&(j, _)| runs[j].1 <= k) {
            window.pop_front();
        }
        if mask == 0 {
            continue;
        }
        let Some(&(lightest, _)) = window.front() else { continue };
        if level.0 != lightest {
            level = (lightest, per_unit(surplus, weight[lightest], true));
        }
        need_row(k, mask, level.1);
    }
}

/// The run of a bid whose cost at `price(row, resource)` is least (weighted by its shares and
/// the rows' slots, in the price's unit times millionths): its start row and that cost; the
/// earliest on ties. `sums` and `runs` are scratch.
fn cheapest_start(
    b: &BookBid,
    r: &Ranked,
    rows: &Rows,
    price: impl Fn(u64, usize) -> u64,
    (sums, runs): &mut (Vec<u128>, Vec<(usize, usize)>),
) -> (u64, u128) {
    // Prefix sums over the span of the bundle's weighted price per row.
    sums.clear();
    sums.push(0);
    let mut acc = 0u128;
    for row in r.span() {
        let per_slot: u128 =
            b.bundle.raw().map(|(res, share)| u128::from(share) * u128::from(price(row, res))).sum();
        acc += per_slot * u128::from(rows.width(row));
        sums.push(acc);
    }
    runs_of(rows, r, runs);
    runs.iter()
        .map(|&(k, e)| (r.first + k as u64, sums[e] - sums[k]))
        .min_by_key(|&(_, cost)| cost)
        .expect("a start")
}

/// `slack / weight`, in 64 bits when the slack fits (below 18 million credits).
fn per_share(slack: u128, weight: u64) -> u128 {
    match u64::try_from(slack) {
        Ok(slack) => u128::from(slack / weight),
        Err(_) => slack / u128::from(weight),
    }
}

/// A loser that may still afford a start: its cheapest start and that start's cost, found when
/// `at` raises had been made.
struct Hope {
    bid: usize,
    at: u64,
    start: u64,
    cost: u128,
}

/// Rounds of the slack-passing refinement.
const ROUNDS: usize = 4;

/// Raises the premiums of contested cells where the winners holding them can still pay: each
/// loser that could afford its cheapest start bids up that start's blocked cells, each cell by
/// at most what every winner on it has left below its limit. Repeated a few rounds, as a raise
/// can move a loser's cheapest start. Prices only rise, winners' costs stay within their limits.
/// `losers` are the positions of the losers in `bids`. Returns, per bid, whether it is a loser
/// that may still afford a start at the premiums left.
fn refine(
    config: &Config,
    (bids, losers): (&[BookBid], &[usize]),
    p: &Placement,
    left: &Grid,
    premium: &mut [u64],
) -> Vec<bool> {
    let (stride, rows) = (left.stride, &left.rows);
    let cell = |row: u64, r: usize| (row - left.lo) as usize * stride + r;
    // Each winner's slack below its limit, in 10^-12 credits, and the winners on each cell
    // (`holders[from[c]..from[c + 1]]`).
    let mut slack: Vec<u128> = vec![0; bids.len()];
    let mut from = vec![0u32; premium.len() + 1];
    let winners =
        || bids.iter().enumerate().filter_map(|(i, b)| p.starts[i].map(|start| (i, b, &p.ranked[i], start)));
    for (_, b, r, start) in winners() {
        for row in rows.run(start, r.duration) {
            for (res, _) in b.bundle.raw() {
                from[cell(row, res) + 1] += 1;
            }
        }
    }
    for c in 0..premium.len() {
        from[c + 1] += from[c];
    }
    let mut holders = vec![(0u32, 0u32); from[premium.len()] as usize];
    let mut filled = from.clone();
    for (i, b, r, start) in winners() {
        let mut cost = 0u128;
        for row in rows.run(start, r.duration) {
            for (res, share) in b.bundle.raw() {
                let c = cell(row, res);
                cost += u128::from(share) * u128::from(premium[c]) * u128::from(rows.width(row));
                holders[filled[c] as usize] = (i as u32, share);
                filled[c] += 1;
            }
        }
        slack[i] = (u128::from(r.limit - r.reserve) * u128::from(MICRO)).saturating_sub(cost);
    }
    let price_room = |c: usize, q: u64| match config.cap {
        Some(cap) => cap.micros().saturating_sub(config.reserve[c % stride].micros().saturating_add(q)),
        None => u64::MAX,
    };
    // What a loser's premiums must reach for its cost to meet its limit exactly.
    let surplus = |i: usize| {
        let (b, r) = (&bids[i], &p.ranked[i]);
        let reserve: u128 = b
            .bundle
            .raw()
            .map(|(res, sh)| pico_cost(u64::from(sh), config.reserve[res]) * u128::from(r.duration))
            .sum();
        (u128::from(r.limit) * u128::from(MICRO)).saturating_sub(reserve)
    };
    // Losers that may still afford a start. Premiums only rise, so one whose cheapest start
    // costs its surplus or more never can again: those at the premiums as they stand now are
    // found in parallel, and the rounds (in order: each raise moves the next loser's costs)
    // visit only the others.
    // Each with its cheapest start and that start's cost, as of a count of raises (`Hope`).
    let mut hopeful: Vec<Hope> = super::pool::install(config.clearing_threads, || {
        let premium = &*premium;
        losers
            .par_iter()
            .with_min_len(512)
            .map_init(Default::default, |scratch, &i| {
                let price = |row, res| premium[cell(row, res)];
                let (start, cost) = cheapest_start(&bids[i], &p.ranked[i], rows, price, scratch);
                (cost < surplus(i)).then_some(Hope { bid: i, at: 0, start, cost })
            })
            .flatten_iter()
            .collect()
    });
    // Raises so far, and per row the count when one last raised a cell of it: a loser's
    // cheapest start is recomputed only when a raise reached its span since it was found.
    // Cells a holder with no slack left sits on: no raise can reach them again.
    let mut frozen = vec![false; premium.len()];
    let freeze = |frozen: &mut [bool], w: usize| {
        let start = p.starts[w].expect("a winner");
        for row in rows.run(start, p.ranked[w].duration) {
            for (res, _) in bids[w].bundle.raw() {
                frozen[cell(row, res)] = true;
            }
        }
    };
    for (w, _, _, _) in winners().filter(|&(w, ..)| slack[w] == 0) {
        freeze(&mut frozen, w);
    }
    let mut raises = 0u64;
    let mut raised_at = vec![0u64; premium.len() / stride.max(1)];
    let mut scratch = Default::default();
    for _ in 0..ROUNDS {
        let mut raised = false;
        hopeful.retain_mut(|hope| {
            let i = hope.bid;
            let b = &bids[i];
            let r = &p.ranked[i];
            // The cheapest start at current premiums.
            let span = (r.first - left.lo) as usize..(r.last_end - left.lo) as usize;
            if raised_at[span].iter().any(|&at| at > hope.at) {
                let price = |row, res| premium[cell(row, res)];
                (hope.start, hope.cost) = cheapest_start(b, r, rows, price, &mut scratch);
            }
            hope.at = raises;
            let (start, cost) = (hope.start, hope.cost);
            let surplus = surplus(i);
            if cost >= surplus {
                return false;
            }
            let mut deficit = surplus - cost;
            for row in rows.run(start, r.duration) {
                let width = rows.width(row);
                for (res, share) in b.bundle.raw() {
                    let c = cell(row, res);
                    if deficit == 0 || left.free[c] >= share as i32 || frozen[c] {
                        continue;
                    }
                    let on = &holders[from[c] as usize..from[c + 1] as usize];
                    let weight = u64::from(share) * width;
                    let want = deficit.div_ceil(u128::from(weight));
                    let mut raise = want.min(u128::from(price_room(c, premium[c])));
                    for &(w, s) in on {
                        if raise == 0 {
                            break;
                        }
                        // At most what its slack pays for: divide only when that binds.
                        let weight = u64::from(s) * width;
                        if raise * u128::from(weight) > slack[w as usize] {
                            raise = per_share(slack[w as usize], weight);
                        }
                    }
                    if raise == 0 {
                        continue;
                    }
                    premium[c] += raise as u64;
                    raises += 1;
                    raised_at[(row - left.lo) as usize] = raises;
                    for &(w, s) in on {
                        slack[w as usize] -= raise * u128::from(u64::from(s) * width);
                        if slack[w as usize] == 0 {
                            freeze(&mut frozen, w as usize);
                        }
                    }
                    deficit = deficit.saturating_sub(raise * u128::from(weight));
                    raised = true;
                }
            }
            true
        });
        if !raised {
            break;
        }
    }
    let mut may_afford = vec![false; bids.len()];
    for hope in hopeful {
        may_afford[hope.bid] = true;
    }
    may_afford
}

/// Discovers the cycle's prices from its placement and the free capacity it left.
pub(crate) fn discover(config: &Config, bids: &[BookBid], p: &Placement, left: &Grid) -> Discovery {
    let (stride, rows) = (left.stride, &left.rows);
    let cells = left.free.len();
    let mut winner_bound = vec![u64::MAX; cells];
    let cell = |row: u64, r: usize| (row - left.lo) as usize * stride + r;

    // Losers first: which cells are scarce, and how much each needs (the highest level any
    // loser sets on a cell: the same whatever the split).
    let losers: Vec<usize> = (0..bids.len()).filter(|&i| p.starts[i].is_none()).collect();
    let loser_bound = super::pool::install(config.clearing_threads, || {
        // A few parts per thread, each with its own copy of the cells.
        let part = losers.len().div_ceil(rayon::current_num_threads() * 2).max(256);
        losers
            .par_chunks(part)
            .map(|part| {
                let (mut bound, mut scratch) = (vec![0u64; cells], Scratch::default());
                for &i in part {
                    let need = |c: usize, level| bound[c] = bound[c].max(level);
                    match stride {
                        // The benchmark's and most markets' four resources, unrolled.
                        4 => loser_demand::<4>(&bids[i], &p.ranked[i], left, &mut scratch, need),
                        _ => loser_demand::<0>(&bids[i], &p.ranked[i], left, &mut scratch, need),
                    }
                }
                bound
            })
            .reduce_with(|mut a, b| {
                a.iter_mut().zip(b).for_each(|(x, y)| *x = (*x).max(y));
                a
            })
            .unwrap_or_else(|| vec![0u64; cells])
    });
    // Then each winner spreads its surplus over its scarce cells only (the others stay at the
    // reserve), which bounds what those cells may cost.
    for (i, b) in bids.iter().enumerate() {
        let Some(start) = p.starts[i] else { continue };
        let r = &p.ranked[i];
        let cells_of = || {
            rows.run(start, r.duration).flat_map(|row| {
                b.bundle.raw().map(move |(res, s)| (cell(row, res), u64::from(s) * rows.width(row)))
            })
        };
        let scarce: u64 = cells_of().filter(|&(c, _)| loser_bound[c] > 0).map(|(_, w)| w).sum();
        let cap = per_unit(r.limit - r.reserve, scarce, false);
        for (c, _) in cells_of() {
            winner_bound[c] = winner_bound[c].min(cap);
        }
    }

    let mut premium: Vec<u64> = loser_bound.iter().zip(&winner_bound).map(|(&l, &w)| l.min(w)).collect();
    let may_afford = refine(config, (bids, &losers), p, left, &mut premium);
    let mut prices = Vec::with_capacity(cells);
    // Whether the bounds lowered any price below its reserve plus premium.
    let mut lowered = false;
    for (c, &q) in premium.iter().enumerate() {
        let reserve = config.reserve[c % stride.max(1)];
        let unbounded = reserve.micros().checked_add(q);
        let price = config.bound(Price::from_micros(unbounded.unwrap_or(u64::MAX)));
        lowered |= unbounded.is_none_or(|u| price.micros() < u);
        prices.push(price);
    }
    let idle = config.reserve.iter().map(|&r| config.bound(r)).collect();
    let mut found = Discovery { lo: left.lo, stride, rows: rows.clone(), prices, idle, ir: 1.0, envy: 0.0 };

    // Who can afford what at those prices: (winners, rational, losers, envious).
    let tally = |(w, r, l, e): (u64, u64, u64, u64), (w2, r2, l2, e2): (u64, u64, u64, u64)| {
        (w + w2, r + r2, l + l2, e + e2)
    };
    let (winners, rational, losers, envious) = super::pool::install(config.clearing_threads, || {
        (0..bids.len())
            .into_par_iter()
            .with_min_len(512)
            .map_init(Default::default, |scratch, i| {
                let (b, r) = (&bids[i], &p.ranked[i]);
                let limit = u128::from(r.limit) * u128::from(MICRO);
                match p.starts[i] {
                    Some(start) => (1, u64::from(found.cost(&b.bundle, start, r.duration) <= limit), 0, 0),
                    // A loser whose premiums alone met its surplus in `refine` cannot afford a
                    // start at the reserve plus premium, unless a cap lowered some price.
                    None if !may_afford[i] && !lowered => (0, 0, 1, 0),
                    None => {
                        let price = |row, res| found.at_row(res, row).micros();
                        let (_, cheapest) = cheapest_start(b, r, rows, price, scratch);
                        (0, 0, 1, u64::from(cheapest < limit))
                    }
                }
            })
            .reduce(|| (0, 0, 0, 0), tally)
    });
    if winners > 0 {
        found.ir = rational as f64 / winners as f64;
    }
    if losers > 0 {
        found.envy = envious as f64 / losers as f64;
    }
    found
}
