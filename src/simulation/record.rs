//! What a simulation records — every cycle's report, and the marked stretches — and what it
//! makes of them: a summary and CSV files.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::sync::Arc;

use super::config::SimConfig;
use crate::auction::{Credits, CycleReport};

/// A stretch of the run worth marking on charts (a spike, an outage), in cycles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    /// What happened.
    pub label: String,
    /// First cycle.
    pub from: u64,
    /// Cycle after the last.
    pub to: u64,
}

/// A finished simulation: its configuration and every cycle's report.
#[derive(Clone, Debug, PartialEq)]
pub struct Simulation {
    /// What ran.
    pub config: SimConfig,
    /// One report per cycle, in order (cycle numbers from 1).
    pub reports: Vec<CycleReport>,
    /// The spike and the outage, if the patterns had them.
    pub marks: Vec<Mark>,
}

/// Whole-run figures.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// Winning outcomes.
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

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

impl Simulation {
    pub(crate) fn new(config: &SimConfig) -> Simulation {
        Simulation { config: config.clone(), reports: Vec::new(), marks: Vec::new() }
    }

    /// Whole-run figures.
    pub fn summary(&self) -> Summary {
        let sum = |f: fn(&CycleReport) -> u64| self.reports.iter().map(f).sum::<u64>();
        let resources = self.reports.first().map_or(0, |r| r.prices.len());
        let resources = (0..resources)
            .map(|r| {
                let index = || self.reports.iter().map(move |c| c.prices[r].index.micros() as f64 / 1e6);
                let peak = index().fold(0.0, f64::max);
                let utilization = mean(self.reports.iter().map(|c| c.prices[r].utilization));
                (self.reports[0].prices[r].resource.clone(), mean(index()), peak, utilization)
            })
            .collect();
        Summary {
            won: sum(|c| c.won),
            lost: sum(|c| c.lost),
            revenue: Credits::from_micros(sum(|c| c.revenue.micros())),
            welfare: Credits::from_micros(sum(|c| c.welfare.micros())),
            overpayment: Credits::from_micros(sum(|c| c.overpayment.unwrap_or_default().micros())),
            ir: mean(self.reports.iter().filter(|c| c.won > 0).map(|c| c.ir)),
            envy: mean(self.reports.iter().filter(|c| c.lost > 0).map(|c| c.envy)),
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
        for c in &self.reports {
            for p in &c.prices {
                writeln!(
                    out,
                    "{},{},{},{},{},{:.6},{},{}",
                    c.cycle, p.resource, p.spot, p.average, p.index, p.utilization, p.requested, p.sold
                )?;
            }
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
        for c in &self.reports {
            writeln!(
                out,
                "{},{},{},{},{},{},{},{:.6},{:.6},{}",
                c.cycle,
                c.bids,
                c.won,
                c.lost,
                c.expired,
                c.revenue,
                c.welfare,
                c.ir,
                c.envy,
                c.overpayment.unwrap_or_default()
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
