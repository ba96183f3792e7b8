//! Price-discovery simulations (feature `sim`): a population of agents with private values,
//! budgets fed only by periodic rewards, and strategies, bidding into a market over thousands
//! of cycles while demand and supply move. Seeded and deterministic: the same configuration
//! gives the same rows.

mod agents;
mod config;
mod record;
mod rng;

use std::collections::BTreeMap;

pub use agents::Strategy;
pub use config::{Diurnal, Outage, Pattern, SimConfig, SimError, Spike, StrategyMix};
pub use record::{Mark, Simulation, Summary};

use agents::Agent;
use rng::Rng;

use crate::auction::{AgentId, EventKind, Market};
use crate::capacity::Slot;

impl SimConfig {
    /// Runs the simulation, calling `progress(cycle)` after each cycle.
    ///
    /// # Errors
    ///
    /// When the configuration is out of range or the market's is invalid.
    ///
    /// # Examples
    ///
    /// ```
    /// use capacity_auction::SimConfig;
    ///
    /// let config = SimConfig { agents: 100, cycles: 200, arrival: 0.05, ..SimConfig::default() };
    /// let run = config.run(|_| {})?;
    /// assert_eq!(run.reports.len(), 200);
    /// assert!(run.reports.iter().all(|c| c.ir == 1.0));
    /// assert_eq!(run, config.run(|_| {})?, "the same seed gives the same run");
    /// # Ok::<(), capacity_auction::SimError>(())
    /// ```
    pub fn run(&self, mut progress: impl FnMut(u64)) -> Result<Simulation, SimError> {
        self.check()?;
        // Overpayment over critical values is a figure of every run, whatever the pricing rule.
        let market = Market::builder().config(self.market.clone()).always_critical_values(true).build()?;
        let mut events = market.subscribe();
        let rng = Rng::new(self.seed);
        let mut agents: Vec<Agent> = (0..self.agents).map(|i| Agent::new(i, self, &rng)).collect();
        let by_id: BTreeMap<AgentId, usize> =
            agents.iter().enumerate().map(|(i, a)| (a.id.clone(), i)).collect();
        let mut arrivals = rng.fork(0);
        let _ = arrivals.next_u64();

        let resources = market.resources().len();
        let mut index = vec![0.0f64; resources];
        let (spike_from, spike_to) = self.cycles_of(self.spike.from, self.spike.to);
        let (outage_from, outage_to) = self.cycles_of(self.outage.from, self.outage.to);
        let mut run = Simulation::new(self);
        if self.has(Pattern::Spike) && spike_from < spike_to {
            run.marks.push(Mark {
                label: format!("spike x{}", self.spike.factor),
                from: spike_from,
                to: spike_to,
            });
        }
        if self.has(Pattern::Outage) && outage_from < outage_to {
            let label = format!("{} outage at {}", self.outage.resource, self.outage.capacity);
            run.marks.push(Mark { label, from: outage_from + 1, to: outage_to + 1 });
        }

        for cycle in 0..self.cycles {
            let now = cycle;
            if cycle % self.reward_every == 0 {
                for a in &agents {
                    market.deposit(&a.id, self.reward).expect("rewards are valid deposits");
                }
            }
            if self.has(Pattern::Outage) && cycle == outage_from && outage_from < outage_to {
                market
                    .set_capacity(
                        &self.outage.resource,
                        Slot(outage_from),
                        Slot(outage_to),
                        self.outage.capacity,
                    )
                    .expect("a valid outage");
            }
            let mut chance = self.arrival;
            if self.has(Pattern::Diurnal) {
                let phase = std::f64::consts::TAU * cycle as f64 / self.diurnal.period as f64;
                chance *= 1.0 + self.diurnal.amplitude * phase.sin();
            }
            if self.has(Pattern::Spike) && (spike_from..spike_to).contains(&cycle) {
                chance *= self.spike.factor;
            }
            for agent in &mut agents {
                let available = market.balance(&agent.id).map(|b| b.available).unwrap_or_default();
                for bid in agent.decide(now, chance, &index, available, self.good_for) {
                    if market.submit(bid).is_ok() {
                        agent.live += 1;
                    }
                }
            }
            let report = market.clear(Slot(now)).expect("time moves forward");
            for e in events.drain() {
                let (agent, won) = match &e.kind {
                    EventKind::BidWon { agent, .. } => (agent, true),
                    EventKind::BidLost { agent, retained: false, .. }
                    | EventKind::BidExpired { agent, .. } => (agent, false),
                    _ => continue,
                };
                let a = &mut agents[by_id[agent]];
                a.live -= 1;
                a.learn(won);
            }
            for (r, p) in report.prices.iter().enumerate() {
                index[r] = p.index.micros() as f64 / 1e6;
            }
            run.reports.push(report);
            progress(cycle + 1);
        }
        Ok(run)
    }
}
