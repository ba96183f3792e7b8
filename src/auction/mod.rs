//! How capacity is sold, sans-IO and deterministic: bids, the book and its lock-free intake,
//! clearing, pricing, price discovery, the ledger, events, the [`Market`] facade, scenarios.

mod bid;
mod book;
mod builder;
mod clearing;
mod config;
mod correlated;
mod cycle;
pub(crate) mod decode;
mod engine;
mod error;
mod events;
mod ids;
mod intake;
mod ledger;
pub(crate) mod lines;
mod market;
mod money;
#[doc(hidden)]
pub mod phases;
mod replay;
mod restore;
mod scenario;
#[cfg(feature = "schema")]
mod schema;
mod snapshot;
pub(crate) mod subscription;

pub use bid::{Bid, BidRequest, BundleRequest};
pub use builder::MarketBuilder;
pub use config::{ConfigError, MAX_HORIZON, MarketConfig, PricingRule, PriorityRule, Settlement};
pub use correlated::Correlated;
pub use cycle::{CycleReport, PriceReport};
pub use error::{RejectCode, Rejection, Result};
pub use events::{BundleShares, EVENT_VERSION, Event, EventKind};
pub use ids::{AgentId, BidId, IdError};
pub use ledger::{Balance, LedgerTotals};
pub use market::{Market, Receipt};
pub use money::{Credits, Price};
pub use scenario::{Action, BalanceExpect, Expect, Scenario, ScenarioError, ScenarioReport, Step};
#[cfg(feature = "schema")]
pub use schema::json_schemas;
pub use snapshot::{SNAPSHOT_VERSION, Snapshot, StateError, StateHash};
pub use subscription::Subscription;
