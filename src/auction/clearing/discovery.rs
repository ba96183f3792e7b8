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
use super::{Placement, Ranked};
use crate::auction::book::BookBid;
use crate::auction::config::Config;
use crate::auction::money::{Price, pico_cost};
use crate::capacity::Bundle;
use crate::capacity::fixed::MICRO;

/// This cycle's price of every resource in every slot its bids could touch.
#[derive(Clone, Debug)]
pub(crate) struct Discovery {
    lo: u64,
    stride: usize,
    prices: Vec<Price>,
    /// The price of slots no bid touched: the reserve, bounded.
    idle: Vec<Price>,
    /// Winners whose bundle costs at most their limit, over winners (1 when none).
    pub(crate) ir: f64,
    /// Losers whose cheapest start costs less than their limit, over losers (0 when none).
    pub(crate) envy: f64,
}

impl Discovery {
    /// The price of `resource` in `slot`.
    pub(crate) fn price(&self, resource: usize, slot: u64) -> Price {
        let rows = (self.prices.len() / self.stride.max(1)) as u64;
        if slot >= self.lo && slot - self.lo < rows {
            self.prices[(slot - self.lo) as usize * self.stride + resource]
        } else {
            self.idle[resource]
        }
    }

    /// The slots the curve covers.
    pub(crate) fn slots(&self) -> std::ops::Range<u64> {
        self.lo..self.lo + (self.prices.len() / self.stride.max(1)) as u64
    }

    /// The curve as runs of equal prices: `(resource, from, to, price)`, by resource then slot.
    pub(crate) fn runs(&self) -> Vec<(usize, u64, u64, Price)> {
        let mut runs: Vec<(usize, u64, u64, Price)> = Vec::new();
        for r in 0..self.stride {
            for t in self.slots() {
                let p = self.price(r, t);
                match runs.last_mut() {
                    Some(run) if run.0 == r && run.2 == t && run.3 == p => run.2 = t + 1,
                    _ => runs.push((r, t, t + 1, p)),
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
        let rows = slots.end.checked_sub(slots.start).ok_or("an empty curve")? as usize;
        let mut prices = vec![Price::ZERO; rows * stride];
        for (r, from, to, price) in runs {
            if r >= stride || from < slots.start || to > slots.end || from > to {
                return Err(format!("a price run [{from}, {to}) outside the curve"));
            }
            for t in from..to {
                prices[(t - slots.start) as usize * stride + r] = price;
            }
        }
        Ok(Discovery { lo: slots.start, stride, prices, idle, ir, envy })
    }

    /// The cost of `bundle` over `[start, start + duration)`, in 10^-12 credits.
    pub(crate) fn cost(&self, bundle: &Bundle, start: u64, duration: u64) -> u128 {
        bundle
            .raw()
            .map(|(r, share)| {
                (start..start + duration).map(|t| pico_cost(u64::from(share), self.price(r, t))).sum::<u128>()
            })
            .sum()
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

/// Buffers [`loser_demand`] reuses from one loser to the next.
#[derive(Default)]
struct Scratch {
    blocked: Vec<u64>,
    weight: Vec<u64>,
    window: std::collections::VecDeque<usize>,
}

/// What loser `b` needs of each cell it was blocked in: for every start `s`, its surplus spread
/// over the blocked cells of `[s, s + duration)` (the water level that prices that start out),
/// and for each blocked cell the highest level of the starts covering it. Calls
/// `need(cell, premium)` for every blocked cell of the span.
fn loser_demand(
    b: &BookBid,
    r: &Ranked,
    left: &Grid,
    scratch: &mut Scratch,
    mut need: impl FnMut(usize, u64),
) {
    let stride = left.stride;
    let row = |t: u64| (t - left.lo) as usize * stride;
    let surplus = r.limit - r.reserve;
    let width = (r.last_end - r.first) as usize;
    let d = r.duration as usize;
    let Scratch { blocked, weight, window } = scratch;
    // Blocked weight of each slot: the shares it could not have.
    blocked.clear();
    blocked.extend(r.span().map(|t| {
        let at = row(t);
        b.bundle
            .raw()
            .filter(|&(res, share)| left.free[at + res] < share as i32)
            .map(|(_, s)| u64::from(s))
            .sum::<u64>()
    }));
    if blocked.iter().all(|&w| w == 0) {
        return;
    }
    // Blocked weight of each start's run.
    let starts = width + 1 - d;
    weight.clear();
    let mut run: u64 = blocked[..d].iter().sum();
    weight.push(run);
    for s in 1..starts {
        run = run + blocked[s + d - 1] - blocked[s - 1];
        weight.push(run);
    }
    // For each slot, the lightest start covering it sets the highest level: a sliding minimum.
    window.clear();
    let mut next = 0;
    let mut level = (usize::MAX, 0);
    for (k, &b_t) in blocked.iter().enumerate() {
        // Starts covering slot k: max(0, k + 1 - d) ..= min(k, starts - 1).
        while next < starts && next <= k {
            while window.back().is_some_and(|&j| weight[j] >= weight[next]) {
                window.pop_back();
            }
            window.push_back(next);
            next += 1;
        }
        while window.front().is_some_and(|&j| j + d <= k) {
            window.pop_front();
        }
        if b_t == 0 {
            continue;
        }
        let Some(&lightest) = window.front() else { continue };
        // Neighbouring slots mostly share their lightest start: divide once per start.
        if level.0 != lightest {
            level = (lightest, per_unit(surplus, weight[lightest], true));
        }
        let level = level.1;
        let at = row(r.first + k as u64);
        for (res, share) in b.bundle.raw() {
            if left.free[at + res] < share as i32 {
                need(at + res, level);
            }
        }
    }
}

/// The start of a bid whose run costs least at `price(slot, resource)` (weighted by its shares,
/// in the price's unit times millionths), and that cost; the earliest on ties. `sums` is scratch.
fn cheapest_start(
    b: &BookBid,
    r: &Ranked,
    price: impl Fn(u64, usize) -> u64,
    sums: &mut Vec<u128>,
) -> (u64, u128) {
    let width = (r.last_end - r.first) as usize;
    let d = r.duration as usize;
    // Prefix sums over the span of the bundle's weighted price per slot.
    sums.clear();
    sums.push(0);
    let mut acc = 0u128;
    for t in r.span() {
        acc += b.bundle.raw().map(|(res, share)| u128::from(share) * u128::from(price(t, res))).sum::<u128>();
        sums.push(acc);
    }
    (0..=width - d)
        .map(|k| (r.first + k as u64, sums[k + d] - sums[k]))
        .min_by_key(|&(_, cost)| cost)
        .expect("a start")
}

/// `slack / share`, in 64 bits when the slack fits (below 18 million credits).
fn per_share(slack: u128, share: u32) -> u128 {
    match u64::try_from(slack) {
        Ok(slack) => u128::from(slack / u64::from(share)),
        Err(_) => slack / u128::from(share),
    }
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
    let stride = left.stride;
    let cell = |slot: u64, r: usize| (slot - left.lo) as usize * stride + r;
    // Each winner's slack below its limit, in 10^-12 credits, and the winners on each cell
    // (`holders[from[c]..from[c + 1]]`).
    let mut slack: Vec<u128> = vec![0; bids.len()];
    let mut from = vec![0u32; premium.len() + 1];
    let winners =
        || bids.iter().enumerate().filter_map(|(i, b)| p.starts[i].map(|start| (i, b, &p.ranked[i], start)));
    for (_, b, r, start) in winners() {
        for t in start..start + r.duration {
            for (res, _) in b.bundle.raw() {
                from[cell(t, res) + 1] += 1;
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
        for t in start..start + r.duration {
            for (res, share) in b.bundle.raw() {
                let c = cell(t, res);
                cost += u128::from(share) * u128::from(premium[c]);
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
    let mut hopeful: Vec<usize> = super::pool::install(config.clearing_threads, || {
        let premium = &*premium;
        losers
            .par_iter()
            .with_min_len(512)
            .map_init(Vec::new, |sums, &i| {
                let (_, cost) = cheapest_start(&bids[i], &p.ranked[i], |t, res| premium[cell(t, res)], sums);
                (cost < surplus(i)).then_some(i)
            })
            .flatten_iter()
            .collect()
    });
    let mut sums = Vec::new();
    for _ in 0..ROUNDS {
        let mut raised = false;
        hopeful.retain(|&i| {
            let b = &bids[i];
            let r = &p.ranked[i];
            // The cheapest start at current premiums.
            let (start, cost) = cheapest_start(b, r, |t, res| premium[cell(t, res)], &mut sums);
            let surplus = surplus(i);
            if cost >= surplus {
                return false;
            }
            let mut deficit = surplus - cost;
            for t in start..start + r.duration {
                for (res, share) in b.bundle.raw() {
                    let c = cell(t, res);
                    if deficit == 0 || left.free[c] >= share as i32 {
                        continue;
                    }
                    let on = &holders[from[c] as usize..from[c + 1] as usize];
                    let want = deficit.div_ceil(u128::from(share));
                    let mut raise = want.min(u128::from(price_room(c, premium[c])));
                    for &(w, s) in on {
                        if raise == 0 {
                            break;
                        }
                        raise = raise.min(per_share(slack[w as usize], s));
                    }
                    if raise == 0 {
                        continue;
                    }
                    premium[c] += raise as u64;
                    for &(w, s) in on {
                        slack[w as usize] -= raise * u128::from(s);
                    }
                    deficit = deficit.saturating_sub(raise * u128::from(share));
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
    for i in hopeful {
        may_afford[i] = true;
    }
    may_afford
}

/// Discovers the cycle's prices from its placement and the free capacity it left.
pub(crate) fn discover(config: &Config, bids: &[BookBid], p: &Placement, left: &Grid) -> Discovery {
    let stride = left.stride;
    let cells = left.free.len();
    let mut winner_bound = vec![u64::MAX; cells];
    let cell = |slot: u64, r: usize| (slot - left.lo) as usize * stride + r;

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
                    loser_demand(&bids[i], &p.ranked[i], left, &mut scratch, |c, level| {
                        bound[c] = bound[c].max(level)
                    });
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
            (start..start + r.duration).flat_map(|t| b.bundle.raw().map(move |(res, s)| (cell(t, res), s)))
        };
        let scarce: u64 = cells_of().filter(|&(c, _)| loser_bound[c] > 0).map(|(_, s)| u64::from(s)).sum();
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
    let mut found = Discovery { lo: left.lo, stride, prices, idle, ir: 1.0, envy: 0.0 };

    // Who can afford what at those prices: (winners, rational, losers, envious).
    let tally = |(w, r, l, e): (u64, u64, u64, u64), (w2, r2, l2, e2): (u64, u64, u64, u64)| {
        (w + w2, r + r2, l + l2, e + e2)
    };
    let (winners, rational, losers, envious) = super::pool::install(config.clearing_threads, || {
        (0..bids.len())
            .into_par_iter()
            .with_min_len(512)
            .map_init(Vec::new, |sums, i| {
                let (b, r) = (&bids[i], &p.ranked[i]);
                let limit = u128::from(r.limit) * u128::from(MICRO);
                match p.starts[i] {
                    Some(start) => (1, u64::from(found.cost(&b.bundle, start, r.duration) <= limit), 0, 0),
                    // A loser whose premiums alone met its surplus in `refine` cannot afford a
                    // start at the reserve plus premium, unless a cap lowered some price.
                    None if !may_afford[i] && !lowered => (0, 0, 1, 0),
                    None => {
                        let (_, cheapest) = cheapest_start(b, r, |t, res| found.price(res, t).micros(), sums);
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
