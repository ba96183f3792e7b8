//! The population: each agent has one kind of task, a private value for it, and a strategy.

use super::config::{SimConfig, StrategyMix};
use super::rng::Rng;
use crate::auction::{AgentId, Bid, BidId, Credits};
use crate::capacity::{Bundle, ResourceId, Share, Slot};

/// How an agent turns its private value into a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Bids its value.
    Truthful,
    /// Bids a fixed fraction of its value.
    Shading,
    /// Bids the index cost plus a learned margin, capped by its value.
    Adaptive,
    /// Bids its value, several at once, now and then.
    Bursty,
}

impl Strategy {
    /// Every strategy, in the order reports list them.
    pub const ALL: [Strategy; 4] =
        [Strategy::Truthful, Strategy::Shading, Strategy::Adaptive, Strategy::Bursty];

    /// The strategy's name.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Truthful => "truthful",
            Strategy::Shading => "shading",
            Strategy::Adaptive => "adaptive",
            Strategy::Bursty => "bursty",
        }
    }
}

/// One agent of the population.
#[derive(Clone, Debug)]
pub(crate) struct Agent {
    pub(crate) id: AgentId,
    pub(crate) strategy: Strategy,
    /// `(resource index, share in millionths)` of its task.
    bundle: Vec<(usize, u32)>,
    duration: u32,
    /// Slots the window may slide beyond the run.
    slack: u64,
    /// Private value per capacity-slot, in credits.
    value_density: f64,
    /// Shading factor (Shading) or margin over the index cost (Adaptive).
    factor: f64,
    /// Bursty agents bid every `period` cycles, starting at `phase`.
    phase: u64,
    rng: Rng,
    /// Live bids.
    pub(crate) live: u32,
    placed: u64,
}

/// Bursty agents bid this many at once...
const BURST: u32 = 3;
/// ...every this many cycles.
const BURST_PERIOD: u64 = 300;

fn pick(mix: &StrategyMix, u: f64) -> Strategy {
    let weights = [mix.truthful, mix.shading, mix.adaptive, mix.bursty];
    let total: f64 = weights.iter().sum();
    let mut acc = 0.0;
    for (w, s) in weights.iter().zip(Strategy::ALL) {
        acc += w / total;
        if u < acc {
            return s;
        }
    }
    Strategy::Truthful
}

impl Agent {
    /// The `i`-th agent of a population drawn from `rng`.
    pub(crate) fn new(i: usize, config: &SimConfig, rng: &Rng) -> Agent {
        let mut rng = rng.fork(i as u64 + 1);
        let resources = config.market.resources.len();
        let kinds = rng.between(1, resources.min(3) as u64) as usize;
        let first = rng.between(0, resources as u64 - 1) as usize;
        let bundle = (0..kinds)
            .map(|k| ((first + k * 2 + k / 2) % resources, 10_000 * rng.between(1, 8) as u32))
            .collect();
        let strategy = pick(&config.strategies, rng.unit());
        let factor = match strategy {
            Strategy::Shading => rng.uniform(0.5, 0.9),
            Strategy::Adaptive => 0.2,
            _ => 1.0,
        };
        Agent {
            id: AgentId::new(&format!("agent-{i}")).expect("a token"),
            strategy,
            bundle: dedupe(bundle),
            duration: rng.between(5, 30) as u32,
            slack: rng.between(0, 30),
            value_density: rng.log_normal(1.0, 0.6),
            factor,
            phase: rng.between(0, BURST_PERIOD - 1),
            rng,
            live: 0,
            placed: 0,
        }
    }

    /// Capacity-slots of one task.
    fn size(&self) -> f64 {
        self.bundle.iter().map(|&(_, s)| f64::from(s) / 1e6).sum::<f64>() * f64::from(self.duration)
    }

    /// The bids this agent places at cycle `now`, given the arrival chance and the published
    /// index (credits per capacity-slot, by resource), within `available` credits.
    pub(crate) fn decide(
        &mut self,
        now: u64,
        chance: f64,
        index: &[f64],
        available: Credits,
        good_for: u32,
    ) -> Vec<Bid> {
        let count = match self.strategy {
            Strategy::Bursty => {
                if now % BURST_PERIOD == self.phase && self.live == 0 {
                    BURST
                } else {
                    0
                }
            }
            _ => u32::from(self.live == 0 && self.rng.unit() < chance),
        };
        let mut left = available.micros();
        let mut bids = Vec::new();
        for _ in 0..count {
            let value = self.value_density * self.size() * self.rng.uniform(0.8, 1.2);
            let wanted = match self.strategy {
                Strategy::Truthful | Strategy::Bursty => value,
                Strategy::Shading => value * self.factor,
                Strategy::Adaptive => {
                    let cost: f64 = self
                        .bundle
                        .iter()
                        .map(|&(r, s)| index[r] * f64::from(s) / 1e6 * f64::from(self.duration))
                        .sum();
                    value.min(cost * (1.0 + self.factor))
                }
            };
            let limit = ((wanted * 1e6) as u64).min(left);
            if limit == 0 {
                break;
            }
            left -= limit;
            let earliest = now + self.rng.between(0, 10);
            let bundle = Bundle::new(self.bundle.iter().map(|&(r, s)| {
                (ResourceId::from_index(r).expect("r < 16"), Share::from_micros(s).expect("a share"))
            }))
            .expect("a bundle");
            self.placed += 1;
            let id = BidId::new(&format!("{}-{}", self.id, self.placed)).expect("a token");
            let latest_end = earliest + u64::from(self.duration) + self.slack;
            bids.push(
                Bid::new(id, self.id.clone(), bundle, self.duration, Credits::from_micros(limit))
                    .window(Slot(earliest), Slot(latest_end))
                    .good_for(good_for),
            );
        }
        bids
    }

    /// Learns from an outcome: an adaptive agent widens its margin after losing and narrows it
    /// after winning.
    pub(crate) fn learn(&mut self, won: bool) {
        if self.strategy == Strategy::Adaptive {
            self.factor =
                if won { (self.factor * 0.8).max(0.02) } else { (self.factor * 1.5 + 0.05).min(4.0) };
        }
    }
}

fn dedupe(mut bundle: Vec<(usize, u32)>) -> Vec<(usize, u32)> {
    bundle.sort_by_key(|&(r, _)| r);
    bundle.dedup_by_key(|&mut (r, _)| r);
    bundle
}
