//! Price discovery (DESIGN.md §7), first method: marginal surplus densities on scarce cells.
//!
//! A cell (resource, slot) is *scarce* when some loser needed more of it than the cycle left
//! free. Its price is the reserve plus a premium between two bounds:
//!
//! - the highest surplus density among the losers it blocked — a loser's surplus (limit minus
//!   reserve cost) spread over the resources that blocked it — so losers cannot afford it;
//! - the lowest surplus density among the winners holding it, so every winner can afford its
//!   bundle: its cost is its reserve cost plus at most its surplus.
//!
//! Where the bounds cross (bundles make exact equilibrium prices impossible in general), the
//! winners' bound wins, so individual rationality holds exactly (before floor and cap), and the
//! envy figure honestly counts the losers who could afford a start. Cells that are not scarce
//! sit at the reserve. Every price is then held within the floor and the cap.

use super::Placement;
use super::grid::Grid;
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

    /// The cost of `bundle` over `[start, start + duration)`, in 10^-12 credits.
    pub(crate) fn cost(&self, bundle: &Bundle, start: u64, duration: u64) -> u128 {
        bundle
            .raw()
            .map(|(r, share)| {
                (start..start + duration).map(|t| pico_cost(u64::from(share), self.price(r, t))).sum::<u128>()
            })
            .sum()
    }

    /// The cheapest start of a bid, as a cost in 10^-12 credits.
    fn cheapest(&self, bundle: &Bundle, first: u64, last_end: u64, duration: u64) -> u128 {
        let span = (last_end - first) as usize;
        let mut sums = vec![0u128; span + 1];
        for (r, share) in bundle.raw() {
            let mut acc = 0u128;
            // Prefix sums of this resource's price over the span, weighted by the share.
            let mut prefix = Vec::with_capacity(span + 1);
            prefix.push(0u128);
            for t in first..last_end {
                acc += pico_cost(u64::from(share), self.price(r, t));
                prefix.push(acc);
            }
            for (s, sum) in sums.iter_mut().enumerate() {
                if s + duration as usize <= span {
                    *sum += prefix[s + duration as usize] - prefix[s];
                }
            }
        }
        sums[..=span - duration as usize].iter().copied().min().unwrap_or(u128::MAX)
    }
}

/// Surplus per capacity-slot as a price: `surplus * 10^6 / size`, rounded down.
fn density(surplus: u64, size: u64) -> u64 {
    if size == 0 {
        return 0;
    }
    let d = u128::from(surplus) * u128::from(MICRO) / u128::from(size);
    u64::try_from(d).unwrap_or(u64::MAX)
}

/// Discovers the cycle's prices from its placement and the free capacity it left.
pub(crate) fn discover(config: &Config, bids: &[BookBid], p: &Placement, left: &Grid) -> Discovery {
    let stride = left.stride;
    let cells = left.free.len();
    let mut winner_bound = vec![u64::MAX; cells];
    let mut loser_bound = vec![0u64; cells];
    let mut scarce = vec![false; cells];
    let cell = |slot: u64, r: usize| (slot - left.lo) as usize * stride + r;

    for (i, b) in bids.iter().enumerate() {
        let r = &p.ranked[i];
        let surplus = r.limit - r.reserve;
        match p.starts[i] {
            Some(start) => {
                let d = density(surplus, r.size);
                for t in start..start + r.duration {
                    for (res, _) in b.bundle.raw() {
                        let c = cell(t, res);
                        winner_bound[c] = winner_bound[c].min(d);
                    }
                }
            }
            None => {
                // The resources that blocked it somewhere in its window carry its surplus.
                let blocked =
                    |res: usize, share: u32| r.span().any(|t| left.free[cell(t, res)] < share as i32);
                let blocked_size: u64 = b
                    .bundle
                    .raw()
                    .filter(|&(res, share)| blocked(res, share))
                    .map(|(_, share)| u64::from(share) * r.duration)
                    .sum();
                let d = density(surplus, blocked_size);
                for t in r.span() {
                    for (res, share) in b.bundle.raw() {
                        let c = cell(t, res);
                        if left.free[c] < share as i32 {
                            scarce[c] = true;
                            loser_bound[c] = loser_bound[c].max(d);
                        }
                    }
                }
            }
        }
    }

    let mut prices = Vec::with_capacity(cells);
    for c in 0..cells {
        let reserve = config.reserve[c % stride.max(1)];
        let premium = if scarce[c] { loser_bound[c].min(winner_bound[c]) } else { 0 };
        let raw = Price::from_micros(reserve.micros().saturating_add(premium));
        prices.push(config.bound(raw));
    }
    let idle = config.reserve.iter().map(|&r| config.bound(r)).collect();
    let mut found = Discovery { lo: left.lo, stride, prices, idle, ir: 1.0, envy: 0.0 };

    let (mut winners, mut rational, mut losers, mut envious) = (0u64, 0u64, 0u64, 0u64);
    for (i, b) in bids.iter().enumerate() {
        let r = &p.ranked[i];
        let limit = u128::from(r.limit) * u128::from(MICRO);
        match p.starts[i] {
            Some(start) => {
                winners += 1;
                rational += u64::from(found.cost(&b.bundle, start, r.duration) <= limit);
            }
            None => {
                losers += 1;
                envious += u64::from(found.cheapest(&b.bundle, r.first, r.last_end, r.duration) < limit);
            }
        }
    }
    if winners > 0 {
        found.ir = rational as f64 / winners as f64;
    }
    if losers > 0 {
        found.envy = envious as f64 / losers as f64;
    }
    found
}
