#![doc = include_str!("../README.md")]
#![deny(unsafe_code)]

mod auction;
pub mod bindings;
mod capacity;
pub mod reference;
mod sync;
#[doc(hidden)]
pub use auction::phases;
#[cfg(feature = "sim")]
mod simulation;

#[cfg(feature = "schema")]
pub use auction::json_schemas;
pub use auction::{Action, BalanceExpect, Expect, Scenario, ScenarioError, ScenarioReport, Step};
pub use auction::{
    AgentId, Balance, Bid, BidId, BidRequest, BundleRequest, BundleShares, ConfigError, Correlated, Credits,
    CycleReport, EVENT_VERSION, Event, EventKind, IdError, LedgerTotals, MAX_HORIZON, Market, MarketBuilder,
    MarketConfig, Price, PriceReport, PricingRule, PriorityRule, Receipt, RejectCode, Rejection, Result,
    SNAPSHOT_VERSION, Settlement, Snapshot, StateError, StateHash, Subscription,
};
pub use capacity::{
    Bundle, BundleError, Capacity, CapacitySlots, MAX_RESOURCES, ResourceId, Resources, ResourcesError,
    Share, Slot, Timeline, UnitError, Window,
};
#[cfg(feature = "sim")]
pub use simulation::{
    Diurnal, Mark, Outage, Pattern, SimConfig, SimError, Simulation, Spike, Strategy, StrategyMix, Summary,
};
