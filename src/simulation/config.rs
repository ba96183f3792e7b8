//! What a simulation runs: the population, its strategies, the demand pattern, the market.

use serde::{Deserialize, Serialize};

use crate::auction::{Credits, MarketConfig};
use crate::capacity::Capacity;

/// A simulation, as flags, a TOML file or a JSON file give it. Omitted keys take defaults: the
/// standard workload of 1,000 agents, 4 resources and 2,000 cycles, with a diurnal wave, a
/// demand spike and a cpu outage.
///
/// # Examples
///
/// ```
/// use capacity_auction::SimConfig;
///
/// let c: SimConfig = serde_json::from_str(r#"{"agents": 50, "cycles": 100, "patterns": ["steady"]}"#)?;
/// assert_eq!(c.agents, 50);
/// assert_eq!(c.market.resources.len(), 4);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// The run's name: its output goes to `<out>/<name>/`.
    pub name: String,
    /// Everything random follows from it.
    pub seed: u64,
    /// Agents in the population.
    pub agents: usize,
    /// Clearing cycles to run; each advances the market one slot.
    pub cycles: u64,
    /// Chance that an idle agent places a bid in a cycle, before the patterns scale it.
    pub arrival: f64,
    /// Credits every agent receives every `reward_every` cycles (from cycle 0): the only source
    /// of credits.
    pub reward: Credits,
    /// Cycles between rewards.
    pub reward_every: u64,
    /// Cycles a bid stays in the book while it loses.
    pub good_for: u32,
    /// Shares of the population following each strategy.
    pub strategies: StrategyMix,
    /// The demand pattern: any of `steady`, `diurnal`, `spike`, `outage` (`steady` alone is
    /// flat demand and full capacity).
    pub patterns: Vec<Pattern>,
    /// The diurnal wave.
    pub diurnal: Diurnal,
    /// The demand spike.
    pub spike: Spike,
    /// The capacity outage.
    pub outage: Outage,
    /// The market.
    pub market: MarketConfig,
}

/// Shares of the population by strategy (normalized; need not sum to 1).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StrategyMix {
    /// Bids its value.
    pub truthful: f64,
    /// Bids a fixed fraction (0.5–0.9) of its value.
    pub shading: f64,
    /// Bids what the published index says the bundle costs, plus a margin it learns, never
    /// above its value.
    pub adaptive: f64,
    /// Quiet, then several bids at once.
    pub bursty: f64,
}

/// One shape of demand or supply over the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    /// Flat demand, full capacity.
    Steady,
    /// Demand rises and falls in a sine wave.
    Diurnal,
    /// Demand multiplies for a stretch of cycles.
    Spike,
    /// One resource loses capacity for a stretch of cycles.
    Outage,
}

/// The diurnal wave: arrival scaled by `1 + amplitude * sin(2 pi cycle / period)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Diurnal {
    /// Cycles per wave.
    pub period: u64,
    /// Relative swing, in `[0, 1)`.
    pub amplitude: f64,
}

/// The spike: arrival times `factor` from `from` to `to` (fractions of the run).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Spike {
    /// Start, as a fraction of the run.
    pub from: f64,
    /// End, as a fraction of the run.
    pub to: f64,
    /// Arrival multiplier.
    pub factor: f64,
}

/// The outage: `resource` offers only `capacity` from `from` to `to` (fractions of the run).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Outage {
    /// The resource hit.
    pub resource: String,
    /// Start, as a fraction of the run.
    pub from: f64,
    /// End, as a fraction of the run.
    pub to: f64,
    /// What it still offers.
    pub capacity: Capacity,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            name: "default".into(),
            seed: 1,
            agents: 1000,
            cycles: 2000,
            arrival: 0.002,
            reward: Credits::from_units(2),
            reward_every: 10,
            good_for: 8,
            strategies: StrategyMix::default(),
            patterns: vec![Pattern::Diurnal, Pattern::Spike, Pattern::Outage],
            diurnal: Diurnal::default(),
            spike: Spike::default(),
            outage: Outage::default(),
            market: MarketConfig {
                horizon: 600,
                smoothing: rust_decimal::Decimal::new(5, 2),
                ..MarketConfig::default()
            },
        }
    }
}

impl Default for StrategyMix {
    fn default() -> StrategyMix {
        StrategyMix { truthful: 0.4, shading: 0.3, adaptive: 0.2, bursty: 0.1 }
    }
}

impl Default for Diurnal {
    fn default() -> Diurnal {
        Diurnal { period: 800, amplitude: 0.4 }
    }
}

impl Default for Spike {
    fn default() -> Spike {
        Spike { from: 0.35, to: 0.42, factor: 3.0 }
    }
}

impl Default for Outage {
    fn default() -> Outage {
        Outage {
            resource: "cpu".into(),
            from: 0.65,
            to: 0.75,
            capacity: Capacity::from_micros(300_000).expect("0.3 is a capacity"),
        }
    }
}

/// Why a simulation cannot run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The market configuration is not valid.
    #[error("market: {0}")]
    Market(#[from] crate::auction::ConfigError),
    /// A simulation key is out of range.
    #[error("{0}")]
    Invalid(String),
}

impl SimConfig {
    /// Reads a simulation from a TOML file, or a JSON file when its name ends in `.json`.
    ///
    /// # Errors
    ///
    /// When the file cannot be read or does not hold a simulation.
    pub fn from_file(path: &std::path::Path) -> Result<SimConfig, SimError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SimError::Invalid(format!("{}: {e}", path.display())))?;
        let parsed = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| e.to_string())
        } else {
            toml::from_str(&text).map_err(|e| e.to_string())
        };
        parsed.map_err(|e| SimError::Invalid(format!("{}: {e}", path.display())))
    }

    /// Checks the keys the market does not check itself.
    pub(crate) fn check(&self) -> Result<(), SimError> {
        let bad = |m: String| Err(SimError::Invalid(m));
        if self.agents == 0 || self.cycles == 0 {
            return bad("agents and cycles are at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.arrival) {
            return bad(format!("arrival is a probability, got {}", self.arrival));
        }
        if self.reward_every == 0 || self.good_for == 0 {
            return bad("reward_every and good_for are at least 1".into());
        }
        let s = self.strategies;
        let weights = [s.truthful, s.shading, s.adaptive, s.bursty];
        if weights.iter().any(|w| !w.is_finite() || *w < 0.0) || weights.iter().sum::<f64>() <= 0.0 {
            return bad("strategy shares are non-negative and not all zero".into());
        }
        for (what, from, to) in
            [("spike", self.spike.from, self.spike.to), ("outage", self.outage.from, self.outage.to)]
        {
            if !(0.0..=1.0).contains(&from) || !(from..=1.0).contains(&to) {
                return bad(format!("{what} runs from `from` to `to`, fractions with from <= to"));
            }
        }
        if self.spike.factor < 0.0
            || !(0.0..1.0).contains(&self.diurnal.amplitude)
            || self.diurnal.period == 0
        {
            return bad("spike factor >= 0, diurnal amplitude in [0, 1), period >= 1".into());
        }
        if self.patterns.contains(&Pattern::Outage) && !self.market.resources.contains(&self.outage.resource)
        {
            return bad(format!(
                "the outage hits `{}`, which the market does not sell",
                self.outage.resource
            ));
        }
        Ok(())
    }

    pub(crate) fn has(&self, pattern: Pattern) -> bool {
        self.patterns.contains(&pattern)
    }

    /// The cycles `[from, to)` a fraction range covers.
    pub(crate) fn cycles_of(&self, from: f64, to: f64) -> (u64, u64) {
        let at = |f: f64| (f * self.cycles as f64).round() as u64;
        (at(from), at(to))
    }
}
