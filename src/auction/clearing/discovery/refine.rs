//! The refinement of discovered premiums: losers that could still afford a start bid up its
//! blocked cells with the slack the winners holding them have left.

use rayon::prelude::*;

use super::super::Placement;
use super::super::grid::Grid;
use super::cheapest_start;
use crate::auction::book::BookBid;
use crate::auction::config::Config;
use crate::auction::money::pico_cost;
use crate::capacity::fixed::MICRO;

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
    /// Its group: losers of a group share their cheapest start.
    group: usize,
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
/// `losers` are the positions of the losers in `bids`, `groups` the group of each of them and
/// `alike` one loser of each group (see `alike`): losers of a group share their cheapest start.
/// Returns, per bid, whether it is a loser that may still afford a start at the premiums left.
pub(super) fn refine(
    config: &Config,
    (bids, losers): (&[BookBid], &[usize]),
    (groups, alike): (&[usize], &[usize]),
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
    let cheapest: Vec<(u64, u128)> = super::super::pool::install(config.clearing_threads, || {
        let premium = &*premium;
        alike
            .par_iter()
            .with_min_len(512)
            .map_init(Default::default, |scratch, &i| {
                let price = |row, res| premium[cell(row, res)];
                cheapest_start(&bids[i], &p.ranked[i], rows, price, scratch)
            })
            .collect()
    });
    let mut hopeful: Vec<Hope> = super::super::pool::install(config.clearing_threads, || {
        (losers.par_iter().zip(groups))
            .with_min_len(512)
            .filter_map(|(&i, &g)| {
                let (start, cost) = cheapest[g];
                (cost < surplus(i)).then_some(Hope { bid: i, group: g, at: 0, start, cost })
            })
            .collect()
    });
    // Each group's cheapest start and its cost, as of a count of raises: a loser whose own is
    // stale takes its group's when no raise reached the group's span since.
    let mut known: Vec<(u64, u64, u128)> =
        cheapest.into_iter().map(|(start, cost)| (0, start, cost)).collect();
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
            let last_raise = raised_at[span].iter().copied().max().unwrap_or(0);
            if last_raise > hope.at {
                let group = &mut known[hope.group];
                if last_raise > group.0 {
                    let price = |row, res| premium[cell(row, res)];
                    let (start, cost) = cheapest_start(b, r, rows, price, &mut scratch);
                    *group = (raises, start, cost);
                }
                (hope.start, hope.cost) = (group.1, group.2);
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
