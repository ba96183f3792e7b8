//! One clearing cycle's computation (docs/design.md §5 steps 3–5, §6, §7), pure and deterministic:
//! rank, place greedily at the earliest feasible start, find critical values and shortfalls,
//! discover prices, and price the winners.

mod critical;
mod discovery;
mod grid;
mod openings;
pub(crate) mod pool;
mod rank;
mod replay;
mod rows;
mod span;

use std::ops::Range;

#[cfg(test)]
pub(crate) use discovery::discover_each_alone;
pub(crate) use discovery::{Discovery, discover};
pub(crate) use grid::{Grid, Reach};
#[cfg_attr(not(feature = "nats"), allow(unused_imports))]
pub(crate) use pool::drop_in_background;
pub(crate) use pool::install as on_pool;
use rank::key;
pub(crate) use rows::Rows;

use super::book::BookBid;
use super::config::{Config, PricingRule, PriorityRule};
use super::money::{Credits, credits_ceil};
use crate::capacity::{Slot, Timeline};

/// What the clearing needs of a bid, computed once per cycle.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ranked {
    pub(crate) key: f64,
    pub(crate) order: u64,
    /// Sum of share x duration, millionths of a capacity-slot.
    pub(crate) size: u64,
    /// The row of its first start.
    pub(crate) first: u64,
    /// The row after its last end.
    pub(crate) last_end: u64,
    /// Slots its run lasts.
    pub(crate) duration: u64,
    pub(crate) limit: u64,
    pub(crate) reserve: u64,
    pub(crate) mask: u16,
}

impl Ranked {
    pub(crate) fn span(&self) -> Range<u64> {
        self.first..self.last_end
    }
}

/// The greedy placement of one cycle. Bids are indexed by their position in clearing order.
#[derive(Debug)]
pub(crate) struct Placement {
    /// Per bid.
    pub(crate) ranked: Vec<Ranked>,
    /// Per bid, the row of its start if it won.
    pub(crate) starts: Vec<Option<u64>>,
    /// Per bid, the rows of its span (before its start, if it won) that blocked it when its
    /// turn came.
    pub(crate) blocked: Vec<grid::Blocked>,
    /// The grid's rows.
    pub(crate) rows: Rows,
}

impl Placement {
    pub(crate) fn reach(&self, bids: &[BookBid], i: usize) -> Reach {
        let r = &self.ranked[i];
        Reach::new(&bids[i].bundle, r.first, r.last_end, r.duration)
    }
}

/// The slots any of `bids` can touch from `now`: the rows the cycle's grid needs.
pub(crate) fn reach_of<'a>(bids: impl IntoIterator<Item = &'a BookBid>, now: u64) -> Range<u64> {
    let mut lo = u64::MAX;
    let mut hi = 0;
    for b in bids {
        let span = b.window.span(crate::capacity::Slot(now));
        lo = lo.min(span.start);
        hi = hi.max(span.end);
    }
    if lo >= hi { now..now } else { lo..hi }
}

/// The free capacity the timeline holds for the slots `bids` can reach from `now`, in rows fit
/// for them.
pub(crate) fn grid_for<'a>(
    timeline: &Timeline,
    bids: impl Iterator<Item = &'a BookBid> + Clone,
    now: u64,
) -> Grid {
    let slots = reach_of(bids.clone(), now);
    let mut grid = Grid { lo: slots.start, stride: timeline.resources(), ..Grid::default() };
    let runs = bids.map(|b| (b.window.span(Slot(now)), u64::from(b.window.duration())));
    let breaks = |out: &mut Vec<u64>| timeline.breaks(slots.clone(), out);
    grid.rows = Rows::choose(slots.clone(), breaks, runs);
    match grid.rows.bounds() {
        Some(bounds) => {
            grid.lo = 0;
            timeline.free_rows(bounds, &mut grid.free);
        }
        None => timeline.free_grid(slots, &mut grid.free),
    }
    grid
}

/// What a placement records beyond each bid's start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Track {
    /// The rows that blocked each bid, which critical values read.
    Blocked,
    /// Nothing more: a bid's earliest start is found skipping every start a blocked row rules
    /// out.
    Starts,
}

/// Sorts `bids` into clearing order by `rule` (descending key, then acceptance order) and
/// places each in turn at its earliest feasible start in `grid`, which ends holding what is left.
///
/// With `settings`, the timeline's capacity settings at the cut, a bid that lost and stayed
/// under the same settings loses again without a search: its window has not grown, and the
/// capacity left at its turn is at most what it was then (what the winners before it took then
/// is sold now, and nothing raised a slot's free capacity since). Only where nothing is tracked
/// for it: a tracked bid's blocked rows are read by the critical values.
pub(crate) fn place(
    rule: PriorityRule,
    now: u64,
    bids: &mut Vec<BookBid>,
    grid: &mut Grid,
    (track, settings): (Track, Option<u64>),
) -> Placement {
    let lost_before = settings.map_or(u64::MAX, |s| s + 1);
    let ranked: Vec<Ranked> = bids
        .iter()
        .map(|b| {
            let duration = u64::from(b.window.duration());
            let size = b.bundle.total_micros() * duration;
            let span = grid.rows.rows(b.window.span(Slot(now)));
            Ranked {
                key: key(rule, b.limit.micros(), size),
                order: b.order,
                size,
                first: span.start,
                last_end: span.end,
                duration,
                limit: b.limit.micros(),
                reserve: b.reserve.micros(),
                mask: b.bundle.mask(),
            }
        })
        .collect();
    let mut order: Vec<u32> = (0..bids.len() as u32).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&ranked[a as usize], &ranked[b as usize]);
        b.key.total_cmp(&a.key).then(a.order.cmp(&b.order))
    });
    // Lay bids and their figures out in clearing order: every later pass walks that order.
    let mut slots: Vec<Option<BookBid>> = std::mem::take(bids).into_iter().map(Some).collect();
    bids.extend(order.iter().map(|&i| slots[i as usize].take().expect("each bid once")));
    let ranked = order.iter().map(|&i| ranked[i as usize]).collect();
    let n = bids.len();
    let mut placement =
        Placement { ranked, starts: vec![None; n], blocked: vec![None; n], rows: grid.rows.clone() };
    for i in 0..bids.len() {
        if i % 8 == 0 {
            pool::breathe();
        }
        let reach = placement.reach(bids, i);
        let known_loser = bids[i].lost_under == lost_before;
        let (start, blocked) = match track {
            Track::Blocked if known_loser && !grid.tracks(&reach) => (None, None),
            Track::Starts if known_loser => (None, None),
            Track::Blocked => grid.find_start_and_blocked(&reach),
            Track::Starts => (grid.find_start(&reach), None),
        };
        if let Some(start) = start {
            grid.take(&bids[i].bundle, start, reach.duration);
        }
        placement.starts[i] = start;
        placement.blocked[i] = blocked;
    }
    placement
}

/// Per bid: for a winner, the least limit with which it still wins; for a loser, the least limit
/// that would have won, when some limit would have.
pub(crate) fn thresholds(
    rule: PriorityRule,
    bids: &[BookBid],
    placement: &Placement,
    initial: &Grid,
    threads: usize,
) -> Vec<Option<u64>> {
    critical::thresholds(rule, bids, placement, initial, threads)
}

/// What each winner pays under the configured rule, by bid index (`None` for losers).
pub(crate) fn payments(
    config: &Config,
    bids: &[BookBid],
    placement: &Placement,
    thresholds: &[Option<u64>],
    prices: &Discovery,
) -> Vec<Option<Credits>> {
    (0..bids.len())
        .map(|i| {
            let start = placement.starts[i]?;
            let r = &placement.ranked[i];
            let rule_payment = match config.pricing {
                PricingRule::PayAsBid => r.limit,
                PricingRule::CriticalValue => thresholds[i].unwrap_or(r.reserve),
                PricingRule::Uniform => {
                    credits_ceil(prices.cost(&bids[i].bundle, start, r.duration)).micros()
                }
            };
            Some(Credits::from_micros(rule_payment.clamp(r.reserve, r.limit)))
        })
        .collect()
}
