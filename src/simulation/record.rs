//! What a simulation records: one row per resource per cycle, one row per cycle, the marked
//! stretches, and a summary; written as CSV.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::sync::Arc;

use super::config::SimConfig;
use crate::auction::Credits;
use crate::auction::{CycleReport, Price};
use crate::capacity::CapacitySlots;

/// A resource's figures after one cycle.
#[derive(Clone, Debug, PartialEq)]
pub struct PriceRow {
    /// The cycle, from 0.
    pub cycle: u64,
    /// The resource.
    pub resource: Arc<str>,
    /// Price of the current slot.
    pub spot: Price,
    /// Volume-weighted price of what the cycle sold.
    pub average: Price,
    /// The smoothed market price.
    pub index: Price,
    /// Sold fraction of full capacity in the current slot.
    pub utilization: f64,
    /// Capacity-slots asked for.
    pub requested: CapacitySlots,
    /// Capacity-slots sold.
    pub sold: CapacitySlots,
}

/// One cycle's outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct CycleRow {
    /// The cycle, from 0.
    pub cycle: u64,
    /// Bids that took part.
    pub bids: u64,
    /// Winners.
    pub won: u64,
    /// Losers.
    pub lost: u64,
    /// Expired bids.
    pub expired: u64,
    /// Sum of payments.
    pub revenue: Credits,
    /// Sum of the winners' limits.
    pub welfare: Credits,
    /// Winners who can afford their bundle at the discovered prices, as a fraction.
    pub ir: f64,
    /// Losers who could afford a start at those prices, as a fraction.
    pub envy: f64,
    /// Payments above critical values.
    pub overpayment: Credits,
}

/// A stretch of the run worth marking on charts (a spike, an outage).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    /// What happened.
    pub label: String,
    /// First cycle.
    pub from: u64,
    /// Cycle after the last.
    pub to: u64,
}

/// A finished simulation: its configuration and everything it recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct Simulation {
    /// What ran.
    pub config: SimConfig,
    /// One row per resource per cycle.
    pub prices: Vec<PriceRow>,
    /// One row per cycle.
    pub cycles: Vec<CycleRow>,
    /// The spike and the outage, if the patterns had them.
    pub marks: Vec<Mark>,
}

/// Whole-run figures.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// Bids that won, lost (finally or not) and expired.
    pub won: u64,
    /// Losing outcomes (a retained bid loses once per cycle).
    pub lost: u64,
    /// Sum of payments.
    pub revenue: Credits,
    /// Sum of winners' limits.
    pub welfare: Credits,
    /// Sum of payments above critical values.
    pub overpayment: Credits,
    /// Mean over cycles with winners.
    pub ir: f64,
    /// Mean over cycles with losers.
    pub envy: f64,
    /// Per resource: name, mean index, peak index, mean utilization.
    pub resources: Vec<(Arc<str>, f64, f64, f64)>,
}

fn credits(c: Credits) -> f64 {
    c.micros() as f64 / 1e6
}

impl Simulation {
    pub(crate) fn new(config: &SimConfig) -> Simulation {
        Simulation { config: config.clone(), prices: Vec::new(), cycles: Vec::new(), marks: Vec::new() }
    }

    pub(crate) fn record(&mut self, report: &CycleReport) {
        let cycle = report.cycle - 1;
        for p in &report.prices {
            self.prices.push(PriceRow {
                cycle,
                resource: p.resource.clone(),
                spot: p.spot,
                average: p.average,
                index: p.index,
                utilization: p.utilization,
                requested: p.requested,
                sold: p.sold,
            });
        }
        self.cycles.push(CycleRow {
            cycle,
            bids: report.bids,
            won: report.won,
            lost: report.lost,
            expired: report.expired,
            revenue: report.revenue,
            welfare: report.welfare,
            ir: report.ir,
            envy: report.envy,
            overpayment: report.overpayment,
        });
    }

    /// Whole-run figures.
    pub fn summary(&self) -> Summary {
        let sum = |f: fn(&CycleRow) -> u64| self.cycles.iter().map(f).sum::<u64>();
        let mean =
            |rows: Vec<f64>| if rows.is_empty() { 0.0 } else { rows.iter().sum::<f64>() / rows.len() as f64 };
        let ir = mean(self.cycles.iter().filter(|c| c.won > 0).map(|c| c.ir).collect());
        let envy = mean(self.cycles.iter().filter(|c| c.lost > 0).map(|c| c.envy).collect());
        let names: Vec<Arc<str>> =
            self.prices.iter().take_while(|p| p.cycle == 0).map(|p| p.resource.clone()).collect();
        let resources = names
            .into_iter()
            .map(|name| {
                let rows: Vec<&PriceRow> = self.prices.iter().filter(|p| p.resource == name).collect();
                let index: Vec<f64> = rows.iter().map(|p| p.index.micros() as f64 / 1e6).collect();
                let peak = index.iter().copied().fold(0.0, f64::max);
                let utilization = mean(rows.iter().map(|p| p.utilization).collect());
                (name, mean(index), peak, utilization)
            })
            .collect();
        Summary {
            won: sum(|c| c.won),
            lost: sum(|c| c.lost),
            revenue: Credits::from_micros(sum(|c| c.revenue.micros())),
            welfare: Credits::from_micros(sum(|c| c.welfare.micros())),
            overpayment: Credits::from_micros(sum(|c| c.overpayment.micros())),
            ir,
            envy,
            resources,
        }
    }

    /// `prices.csv`: cycle, resource, spot, average, index, utilization, requested, sold.
    ///
    /// # Errors
    ///
    /// When writing fails.
    pub fn write_prices(&self, out: &mut impl Write) -> io::Result<()> {
        writeln!(out, "cycle,resource,spot,average,index,utilization,requested,sold")?;
        for p in &self.prices {
            writeln!(
                out,
                "{},{},{},{},{},{:.6},{},{}",
                p.cycle, p.resource, p.spot, p.average, p.index, p.utilization, p.requested, p.sold
            )?;
        }
        Ok(())
    }

    /// `cycles.csv`: cycle, bids, won, lost, expired, revenue, welfare, ir, envy, overpayment.
    ///
    /// # Errors
    ///
    /// When writing fails.
    pub fn write_cycles(&self, out: &mut impl Write) -> io::Result<()> {
        writeln!(out, "cycle,bids,won,lost,expired,revenue,welfare,ir,envy,overpayment")?;
        for c in &self.cycles {
            writeln!(
                out,
                "{},{},{},{},{},{},{},{:.6},{:.6},{}",
                c.cycle, c.bids, c.won, c.lost, c.expired, c.revenue, c.welfare, c.ir, c.envy, c.overpayment
            )?;
        }
        Ok(())
    }
}

impl Summary {
    /// Mean payment above critical value per winner, in credits.
    pub fn mean_overpayment(&self) -> f64 {
        if self.won == 0 { 0.0 } else { credits(self.overpayment) / self.won as f64 }
    }

    /// A short plain-text table.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let _ =
            writeln!(t, "{:<12} {:>12} {:>12} {:>12}", "resource", "mean index", "peak index", "utilization");
        for (name, mean, peak, util) in &self.resources {
            let _ = writeln!(t, "{:<12} {:>12.4} {:>12.4} {:>11.1}%", name, mean, peak, util * 100.0);
        }
        let _ = writeln!(
            t,
            "won {}  lost {}  revenue {:.2}  welfare {:.2}  mean overpayment {:.4}  IR {:.4}  envy {:.2}%",
            self.won,
            self.lost,
            credits(self.revenue),
            credits(self.welfare),
            self.mean_overpayment(),
            self.ir,
            self.envy * 100.0
        );
        t
    }
}
