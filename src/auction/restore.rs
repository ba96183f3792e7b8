//! [`Market::snapshot`], [`Market::restore`] and [`Market::state_hash`]: the market's state as
//! data and back.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use super::book::BookBid;
use super::clearing::Discovery;
use super::config::MAX_HORIZON;
use super::config::{Config, ConfigError};
use super::engine::Engine;
use super::intake::Intake;
use super::ledger::Ledger;
use super::lines::Prepared;
use super::market::Market;
use super::snapshot::{
    CapacityRun, CurveState, PriceRun, PriceState, SNAPSHOT_VERSION, Snapshot, SoldRun, StateError,
    StateHash, TimelineState,
};
use crate::capacity::{Capacity, ResourceId, Slot};

impl Market {
    /// The market's whole state as data, once every operation accepted so far is sequenced
    /// (their events go to subscribers first). Waits for a running [`clear`](Market::clear);
    /// holds every ledger shard while it copies the accounts.
    ///
    /// # Errors
    ///
    /// [`StateError::CycleInFlight`] on a restored market whose replayed events ended mid-cycle.
    ///
    /// # Examples
    ///
    /// ```
    /// use capacity_auction::{AgentId, Market};
    ///
    /// let market = Market::builder().resources(["cpu"]).build()?;
    /// market.deposit(&AgentId::new("a")?, "10".parse()?)?;
    /// let snapshot = market.snapshot()?;
    /// let copy = Market::restore(snapshot.clone())?;
    /// assert_eq!(copy.state_hash()?, market.state_hash()?);
    /// assert_eq!(copy.balance(&AgentId::new("a")?).unwrap().available, "10".parse()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn snapshot(&self) -> Result<Snapshot, StateError> {
        let _one = self.clearing();
        let mut engine = self.engine();
        if let Some(cut) = &engine.in_flight {
            return Err(StateError::CycleInFlight(cut.cycle));
        }
        let ledger = {
            // With intake closed no producer is between its ticket and its entry: the ring
            // holds every operation made so far, whole, and nothing changes until it opens.
            let mut reader = self.reader();
            self.intake.close(|| self.intake.take(&mut reader, |e| engine.sequence(e)));
            self.intake.take(&mut reader, |e| engine.sequence(e));
            drop(reader);
            self.hand_over(&mut engine);
            let ledger = self.ledger.export();
            self.intake.open();
            ledger
        };
        engine.publish();
        let config = &self.config;
        let name = |r: usize| config.resources.shared_name(ResourceId::from_index(r).expect("a resource"));
        let book = engine
            .book
            .bids()
            .iter()
            .filter(|b| !engine.book.is_cancelled(&b.agent, &b.id))
            .map(|b| b.written(&config.resources))
            .collect();
        let capacity = |micros: u32| Capacity::from_micros(micros).expect("capacity within [0, 1]");
        let timeline = TimelineState {
            changes: engine
                .timeline
                .changes()
                .map(|(r, from, to, c)| CapacityRun {
                    resource: name(r),
                    from: Slot(from),
                    to: Slot(to),
                    capacity: capacity(c),
                })
                .collect(),
            sold: engine
                .timeline
                .sold_runs()
                .into_iter()
                .map(|(r, from, to, s)| SoldRun {
                    resource: name(r),
                    from: Slot(from),
                    to: Slot(to),
                    sold: capacity(s),
                })
                .collect(),
        };
        let curve = engine.discovery.as_ref().map(|d| {
            let slots = d.slots();
            CurveState {
                from: Slot(slots.start),
                to: Slot(slots.end),
                runs: d
                    .runs()
                    .into_iter()
                    .map(|(r, from, to, price)| PriceRun {
                        resource: name(r),
                        from: Slot(from),
                        to: Slot(to),
                        price,
                    })
                    .collect(),
                ir: d.ir,
                envy: d.envy,
            }
        });
        Ok(Snapshot {
            version: SNAPSHOT_VERSION,
            config: self.source.clone(),
            seq: engine.seq,
            cycle: engine.cycle,
            now: engine.now,
            ledger,
            book,
            timeline,
            prices: PriceState { index: engine.index.clone(), reports: engine.prices.clone(), curve },
        })
    }

    /// A digest of the market's whole state (its [`snapshot`](Market::snapshot)'s): two markets
    /// with equal hashes hold the same accounts, escrow, book, capacity, prices and remembered
    /// ids, as of the same event.
    ///
    /// # Errors
    ///
    /// As [`snapshot`](Market::snapshot).
    pub fn state_hash(&self) -> Result<StateHash, StateError> {
        Ok(self.snapshot()?.hash())
    }

    /// The market `snapshot` was taken of, as it was then; apply the events after
    /// `snapshot.seq` with [`replay`](Market::replay). It has no subscribers yet.
    ///
    /// # Errors
    ///
    /// Another version, a configuration that does not validate, or parts that disagree.
    pub fn restore(snapshot: Snapshot) -> Result<Market, StateError> {
        if snapshot.version != SNAPSHOT_VERSION {
            return Err(StateError::Format(format!(
                "snapshot version {} is not {SNAPSHOT_VERSION}",
                snapshot.version
            )));
        }
        let inconsistent = StateError::Inconsistent;
        let config: Arc<Config> =
            Arc::new(snapshot.config.validate().map_err(|e: ConfigError| inconsistent(e.to_string()))?);
        let resource = |name: &str| {
            config.resources.find(name).ok_or_else(|| inconsistent(format!("no resource `{name}`")))
        };
        let now = snapshot.now;
        let (ledger, pending) = Ledger::import(&snapshot.ledger).map_err(StateError::Inconsistent)?;
        if pending != snapshot.book.len() {
            return Err(inconsistent(format!(
                "{pending} bids escrowed, {} in the book",
                snapshot.book.len()
            )));
        }
        let mut engine = Engine::new(config.clone(), now);
        engine.seq = snapshot.seq;
        engine.cycle = snapshot.cycle;
        for c in &snapshot.timeline.changes {
            engine.timeline.set_capacity(resource(&c.resource)?, c.from, c.to, c.capacity);
        }
        for s in &snapshot.timeline.sold {
            if s.from < now || s.to.0 > now.0 + config.horizon.next_power_of_two() {
                return Err(inconsistent(format!("sales over [{}, {}) outside the timeline", s.from, s.to)));
            }
            engine.timeline.sell(resource(&s.resource)?, s.from.0..s.to.0, s.sold.micros());
        }
        for p in &snapshot.book {
            let account = ledger.account_of(&p.agent).ok_or_else(|| {
                inconsistent(format!("bid `{}` of `{}`, who has no account", p.bid, p.agent))
            })?;
            let bid = BookBid::from_written(&config, account, p.clone()).map_err(StateError::Inconsistent)?;
            if !ledger.holds_pending(&bid) {
                return Err(inconsistent(format!(
                    "bid `{}` of `{}` is not escrowed as pending",
                    p.bid, p.agent
                )));
            }
            engine.book.insert(bid);
        }
        if snapshot.prices.index.len() != config.resources.len() {
            return Err(inconsistent("one index per resource".into()));
        }
        engine.index = snapshot.prices.index.clone();
        engine.prices = snapshot.prices.reports.clone();
        if let Some(curve) = &snapshot.prices.curve {
            if curve.to.0.saturating_sub(curve.from.0) > MAX_HORIZON {
                return Err(inconsistent("a price curve longer than any horizon".into()));
            }
            let idle = config.reserve.iter().map(|&r| config.bound(r)).collect();
            let runs = curve
                .runs
                .iter()
                .map(|r| Ok((resource(&r.resource)?.index(), r.from.0, r.to.0, r.price)))
                .collect::<Result<Vec<_>, StateError>>()?;
            let slots = curve.from.0..curve.to.0;
            engine.discovery = Some(
                Discovery::from_runs(slots, config.resources.len(), idle, runs, (curve.ir, curve.envy))
                    .map_err(StateError::Inconsistent)?,
            );
        }
        let (intake, reader) = Intake::resumed(snapshot.cycle);
        let live = (0..pending).all(|_| intake.reserve_live(usize::MAX));
        debug_assert!(live);
        Ok(Market {
            engine: Mutex::new(engine),
            reader: Mutex::new(reader),
            clearing: Mutex::new(()),
            lines: Prepared::default(),
            config,
            source: snapshot.config,
            ledger,
            intake,
            now: AtomicU64::new(now.0),
            cycles: AtomicU64::new(snapshot.cycle),
        })
    }
}
