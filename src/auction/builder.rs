//! [`MarketBuilder`]: every configuration key as a setter, validated once in `build`.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use super::config::{ConfigError, MarketConfig, PricingRule, PriorityRule, Settlement};
use super::engine::Engine;
use super::intake::Intake;
use super::ledger::Ledger;
use super::lines::Prepared;
use super::market::Market;
use super::money::Price;
use crate::capacity::Slot;

/// Builds a [`Market`]; every key of docs/design.md §3 has a setter, validated once in
/// [`build`](MarketBuilder::build).
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct MarketBuilder {
    config: MarketConfig,
    start: Slot,
}

impl MarketBuilder {
    /// The market's name.
    pub fn name(mut self, name: &str) -> Self {
        self.config.name = name.into();
        self
    }
    /// The resources, in the order events list them.
    pub fn resources<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.config.resources = names.into_iter().map(Into::into).collect();
        self
    }
    /// Slot length in milliseconds.
    pub fn slot_ms(mut self, ms: u64) -> Self {
        self.config.slot_ms = ms;
        self
    }
    /// Slots ahead of `now` a window may reach.
    pub fn horizon(mut self, slots: u64) -> Self {
        self.config.horizon = slots;
        self
    }
    /// How winners pay.
    pub fn pricing(mut self, rule: PricingRule) -> Self {
        self.config.pricing = rule;
        self
    }
    /// The order bids are considered in.
    pub fn priority(mut self, rule: PriorityRule) -> Self {
        self.config.priority = rule;
        self
    }
    /// The reserve price of `resource`.
    pub fn reserve(mut self, resource: &str, price: Price) -> Self {
        self.config.reserve.insert(resource.into(), price);
        self
    }
    /// The lowest price discovery may publish.
    pub fn floor(mut self, price: Price) -> Self {
        self.config.floor = price;
        self
    }
    /// The highest price discovery may publish.
    pub fn cap(mut self, price: Option<Price>) -> Self {
        self.config.cap = price;
        self
    }
    /// Weight of the newest cycle in the index, in `(0, 1]`.
    pub fn smoothing(mut self, weight: rust_decimal::Decimal) -> Self {
        self.config.smoothing = weight;
        self
    }
    /// Where payments go.
    pub fn settlement(mut self, settlement: Settlement) -> Self {
        self.config.settlement = settlement;
        self
    }
    /// The account `pool` settlement credits.
    pub fn pool_account(mut self, agent: &str) -> Self {
        self.config.pool_account = agent.into();
        self
    }
    /// Live bids one agent may hold.
    pub fn max_bids_per_agent(mut self, n: u32) -> Self {
        self.config.max_bids_per_agent = n;
        self
    }
    /// Live bids the book holds.
    pub fn book_size(mut self, n: usize) -> Self {
        self.config.book_size = n;
        self
    }
    /// Threads the exact critical-value pass may use (1 by default).
    pub fn clearing_threads(mut self, n: usize) -> Self {
        self.config.clearing_threads = n;
        self
    }
    /// Whether critical values (shortfalls, overpayment) are computed under every pricing rule.
    pub fn always_critical_values(mut self, always: bool) -> Self {
        self.config.always_critical_values = always;
        self
    }
    /// Every key at once.
    pub fn config(mut self, config: MarketConfig) -> Self {
        self.config = config;
        self
    }
    /// The slot the market starts at (default 0): bids are checked against it until the first
    /// `clear`.
    pub fn start(mut self, slot: Slot) -> Self {
        self.start = slot;
        self
    }

    /// The market.
    ///
    /// # Errors
    ///
    /// The first key that is not valid.
    pub fn build(self) -> Result<Market, ConfigError> {
        self.build_with_ring(super::intake::RING_SLOTS)
    }

    /// As [`build`](MarketBuilder::build), with an intake ring of `slots` (a power of two).
    pub(crate) fn build_with_ring(self, slots: usize) -> Result<Market, ConfigError> {
        let config = Arc::new(self.config.validate()?);
        let ledger = Ledger::new();
        if config.settlement == Settlement::Pool {
            ledger.open(&config.pool_account);
        }
        let (intake, reader) = Intake::with_slots(0, slots);
        Ok(Market {
            engine: Mutex::new(Engine::new(config.clone(), self.start)),
            reader: Mutex::new(reader),
            clearing: Mutex::new(()),
            lines: Prepared::default(),
            config,
            source: self.config,
            ledger,
            intake,
            now: AtomicU64::new(self.start.0),
            cycles: AtomicU64::new(0),
        })
    }
}
