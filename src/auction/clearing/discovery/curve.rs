//! A cycle's discovered prices: one per resource per row of its grid, with what they cost.

use super::super::Rows;
use crate::auction::money::{Price, pico_cost};
use crate::capacity::Bundle;

/// This cycle's price of every resource in every slot its bids could touch: one per row of the
/// cycle's grid, as a row's slots are alike.
#[derive(Clone, Debug)]
pub(crate) struct Discovery {
    /// The first row.
    pub(super) lo: u64,
    pub(super) stride: usize,
    pub(super) rows: Rows,
    /// Per row, per resource.
    pub(super) prices: Vec<Price>,
    /// The price of slots no bid touched: the reserve, bounded.
    pub(super) idle: Vec<Price>,
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
    pub(super) fn at_row(&self, resource: usize, row: u64) -> Price {
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
