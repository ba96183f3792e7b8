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
//! losers who could afford a start — is reported as measured. Step 3 is [`refine`]; the prices
//! found are a [`Discovery`] ([`curve`]).

mod curve;
mod refine;

use rayon::prelude::*;

pub(crate) use self::curve::Discovery;
use super::grid::Grid;
use super::{Placement, Ranked, Rows};
use crate::auction::book::BookBid;
use crate::auction::config::Config;
use crate::auction::money::Price;
use crate::capacity::MAX_RESOURCES;
use crate::capacity::fixed::MICRO;

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

/// What discovery reads of a loser besides its limit: its bundle, span, duration and reserve.
/// Losers alike in these need the same cells, at levels rising with their surplus, and have the
/// same cheapest start at any prices (a book of standard bundles over common windows has many).
type Shape = (crate::capacity::Bundle, u64, u64, u64, u64);

fn shape_of(b: &BookBid, r: &Ranked) -> Shape {
    (b.bundle, r.first, r.last_end, r.duration, r.reserve)
}

/// Losers looked at before deciding whether grouping pays.
const SAMPLE: usize = 4096;

/// The losers grouped by shape: the group of each (in `losers`' order), and for each group the
/// loser with the highest limit (the first of them on ties). When the first [`SAMPLE`] losers
/// are mostly of shapes of their own, grouping would cost more than it saves: each is then a
/// group of its own (the prices are the same either way).
fn alike(bids: &[BookBid], p: &Placement, losers: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let mut groups: foldhash::HashMap<Shape, usize> = foldhash::HashMap::default();
    let mut strongest: Vec<usize> = Vec::new();
    let mut of = Vec::with_capacity(losers.len());
    for (k, &i) in losers.iter().enumerate() {
        if k == SAMPLE && strongest.len() * 2 > SAMPLE {
            return each_alone(bids, p, losers);
        }
        let r = &p.ranked[i];
        let g = *groups.entry(shape_of(&bids[i], r)).or_insert_with(|| {
            strongest.push(i);
            strongest.len() - 1
        });
        if r.limit > p.ranked[strongest[g]].limit {
            strongest[g] = i;
        }
        of.push(g);
    }
    (of, strongest)
}

/// Every loser a group of its own.
fn each_alone(_: &[BookBid], _: &Placement, losers: &[usize]) -> (Vec<usize>, Vec<usize>) {
    ((0..losers.len()).collect(), losers.to_vec())
}

/// Buffers [`loser_demand`] reuses from one loser to the next.
#[derive(Default)]
struct Scratch {
    /// Per row of the span, the resources it was blocked in, as a mask.
    masks: Vec<u16>,
    /// Blocked weight of the span's first rows: `sums[k]` over rows `0..k`.
    sums: Vec<u64>,
    /// The runs it may take, when rows are stretches (over slots, they are every `(k, k + d)`).
    runs: Vec<(usize, usize)>,
    /// The sliding minimum's candidates, `(end, weight)` of runs, those from `head` on live.
    window: Vec<(usize, u64)>,
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
    let Scratch { masks, sums, runs, window } = scratch;
    // Per resource, the share it needs (`i32::MIN` where it needs none, so such a cell is never
    // short) and the weight a short cell adds.
    let (mut want, mut share) = ([i32::MIN; MAX_RESOURCES], [0u64; MAX_RESOURCES]);
    for (res, s) in b.bundle.raw() {
        (want[res], share[res]) = (s as i32, u64::from(s));
    }
    // The resources each row was short of, and the blocked weight (the shares it could not
    // have, times its slots) of the rows before each.
    masks.clear();
    sums.clear();
    sums.push(0);
    let (mut acc, mut short_anywhere, stretched) = (0u64, 0u16, rows.stretched());
    let cells = &left.free[at_row(r.first)..at_row(r.last_end)];
    for (k, row) in cells.chunks_exact(n).enumerate() {
        let (mut w, mut m) = (0u64, 0u16);
        for j in 0..n {
            let short = row[j] < want[j];
            w += if short { share[j] } else { 0 };
            m |= u16::from(short) << j;
        }
        acc += if stretched { w * rows.width(r.first + k as u64) } else { w };
        sums.push(acc);
        masks.push(m);
        short_anywhere |= m;
    }
    if short_anywhere == 0 {
        return;
    }
    let at = at_row(r.first);
    let mut need_row = |k: usize, mask: u16, level: u64| {
        let mut m = mask;
        while m != 0 {
            need(at + k * stride + m.trailing_zeros() as usize, level);
            m &= m - 1;
        }
    };
    // The `j`th run it may take, as `(start, end)` rows from its first.
    let (width, d) = (masks.len(), r.duration as usize);
    if stretched {
        runs_of(rows, r, runs);
    }
    let run = |j: usize| match stretched {
        false => (j + d <= width).then_some((j, j + d)),
        true => runs.get(j).copied(),
    };
    // For each row, the lightest run covering it sets the highest level: a sliding minimum
    // over `(end, weight)` of the runs started (runs start and end in order, so the runs
    // covering a row are consecutive, and no two end alike). Neighbouring rows mostly share
    // their lightest run: divide once per run.
    window.clear();
    let (mut head, mut next, mut level) = (0, 0, (usize::MAX, 0));
    for (k, &mask) in masks.iter().enumerate() {
        while let Some((start, end)) = run(next)
            && start <= k
        {
            let w = sums[end] - sums[start];
            while window.len() > head && window[window.len() - 1].1 >= w {
                window.pop();
            }
            window.push((end, w));
            next += 1;
        }
        while head < window.len() && window[head].0 <= k {
            head += 1;
        }
        if mask == 0 || head == window.len() {
            continue;
        }
        let (end, w) = window[head];
        if level.0 != end {
            level = (end, per_unit(surplus, w, true));
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
    super::pool::breathe();
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

/// How losers are grouped: `(group of each loser, one loser of each group)`.
type Grouping = fn(&[BookBid], &Placement, &[usize]) -> (Vec<usize>, Vec<usize>);

/// Discovers the cycle's prices from its placement and the free capacity it left.
pub(crate) fn discover(config: &Config, bids: &[BookBid], p: &Placement, left: &Grid) -> Discovery {
    discover_grouped(config, (bids, p, left), alike)
}

/// As [`discover`], every loser in a group of its own: what grouping must not change.
#[cfg(test)]
pub(crate) fn discover_each_alone(
    config: &Config,
    bids: &[BookBid],
    p: &Placement,
    left: &Grid,
) -> Discovery {
    discover_grouped(config, (bids, p, left), each_alone)
}

fn discover_grouped(
    config: &Config,
    (bids, p, left): (&[BookBid], &Placement, &Grid),
    grouping: Grouping,
) -> Discovery {
    let (stride, rows) = (left.stride, &left.rows);
    let cells = left.free.len();
    let mut winner_bound = vec![u64::MAX; cells];
    let cell = |row: u64, r: usize| (row - left.lo) as usize * stride + r;

    // Losers first: which cells are scarce, and how much each needs (the highest level any
    // loser sets on a cell: the same whatever the split).
    // Of losers alike, the one with the largest surplus sets the highest level on every cell.
    let losers: Vec<usize> = (0..bids.len()).filter(|&i| p.starts[i].is_none()).collect();
    let (groups, strongest) = grouping(bids, p, &losers);
    let loser_bound = super::pool::install(config.clearing_threads, || {
        // A few parts per thread, each with its own copy of the cells.
        let part = strongest.len().div_ceil(rayon::current_num_threads() * 2).max(256);
        strongest
            .par_chunks(part)
            .map(|part| {
                let (mut bound, mut scratch) = (vec![0u64; cells], Scratch::default());
                for &i in part {
                    super::pool::breathe();
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
    let may_afford = refine::refine(config, (bids, &losers), (&groups, &strongest), p, left, &mut premium);
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

    // A loser whose premiums alone met its surplus in `refine` cannot afford a start at the
    // reserve plus premium, unless a cap lowered some price.
    let may_afford = |i: usize| may_afford[i] || lowered;
    // Each group's cheapest start at those prices, for the groups with a loser that may afford
    // one (its cost is the same for every loser of the group).
    let mut asked = vec![false; strongest.len()];
    for (&i, &g) in losers.iter().zip(&groups) {
        asked[g] |= may_afford(i);
    }
    let cheapest: Vec<Option<u128>> = super::pool::install(config.clearing_threads, || {
        (0..strongest.len())
            .into_par_iter()
            .with_min_len(64)
            .map_init(Default::default, |scratch, g| {
                let i = strongest[g];
                let price = |row, res| found.at_row(res, row).micros();
                asked[g].then(|| cheapest_start(&bids[i], &p.ranked[i], rows, price, scratch).1)
            })
            .collect()
    });
    let limit = |i: usize| u128::from(p.ranked[i].limit) * u128::from(MICRO);
    // Losers whose cheapest start costs less than their limit.
    let envious = (losers.iter().zip(&groups))
        .filter(|&(&i, &g)| may_afford(i) && cheapest[g].is_some_and(|cost| cost < limit(i)))
        .count();
    // Winners, and those who can afford their bundle.
    let (winners, rational) = super::pool::install(config.clearing_threads, || {
        (0..bids.len())
            .into_par_iter()
            .with_min_len(512)
            .filter_map(|i| {
                let (b, r) = (&bids[i], &p.ranked[i]);
                let start = p.starts[i]?;
                Some((1u64, u64::from(found.cost(&b.bundle, start, r.duration) <= limit(i))))
            })
            .reduce(|| (0, 0), |(w, r), (w2, r2)| (w + w2, r + r2))
    });
    if winners > 0 {
        found.ir = rational as f64 / winners as f64;
    }
    if !losers.is_empty() {
        found.envy = envious as f64 / losers.len() as f64;
    }
    found
}
