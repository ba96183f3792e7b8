//! Market configuration (docs/design.md §3): the serializable [`MarketConfig`] and its validated
//! form.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::ids::AgentId;
use super::money::Price;
use crate::capacity::fixed::{self, MICRO};
use crate::capacity::{Resources, ResourcesError, is_token};

/// How winners pay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum PricingRule {
    /// The limit: the prototype's rule.
    PayAsBid,
    /// The least limit with which the bid would still have won this cycle, other bids
    /// unchanged: truthful for single-minded bidders.
    #[default]
    CriticalValue,
    /// The bundle's cost at this cycle's discovered prices.
    Uniform,
}

/// The order in which bids are considered, descending; ties go to the earlier accepted bid.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum PriorityRule {
    /// The limit: the prototype's rule.
    Value,
    /// The limit per capacity-slot: `limit / sum(share x duration)`.
    Density,
    /// Lehmann–O'Callaghan–Shoham: `limit / sqrt(sum(share x duration))`.
    #[default]
    Los,
}

/// Where payments go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Settlement {
    /// Destroyed.
    #[default]
    Burn,
    /// Credited to the pool account.
    Pool,
}

/// A market's configuration, as builders, scenario files and config files give it. Omitted keys
/// take the defaults of docs/design.md §3.
///
/// Prices and `smoothing` are decimals of at most six places, read exactly as written: JSON
/// strings or numbers. TOML reads a number with a fraction as a binary float, which may have
/// lost digits already, so a config file writes those as strings (`smoothing = "0.05"`) or
/// whole numbers (`floor = 1`); a float is refused with a message saying so.
///
/// # Examples
///
/// ```
/// use capacity_auction::{MarketConfig, PricingRule};
///
/// let config: MarketConfig =
///     serde_json::from_str(r#"{"resources": ["cpu"], "pricing": "pay_as_bid"}"#)?;
/// assert_eq!(config.pricing, PricingRule::PayAsBid);
/// assert_eq!(config.horizon, 86_400);
/// assert!(serde_json::from_str::<MarketConfig>(r#"{"colour": "red"}"#).is_err());
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct MarketConfig {
    /// The market's name, in message ids and logs.
    pub name: String,
    /// 1 to 16 resource names, in the order events list them.
    pub resources: Vec<String>,
    /// Slot length in milliseconds.
    pub slot_ms: u64,
    /// Slots ahead of `now` that a bid's `latest_end` may reach.
    pub horizon: u64,
    /// How winners pay.
    pub pricing: PricingRule,
    /// The order bids are considered in.
    pub priority: PriorityRule,
    /// Reserve price per resource; a bundle's reserve is its cost at these prices.
    #[cfg_attr(feature = "schema", schemars(with = "BTreeMap<String, String>"))]
    pub reserve: BTreeMap<String, Price>,
    /// Lower bound of every discovered price. It also acts as a reserve for every resource: a
    /// bid whose bundle costs more at the floor than its limit is `below_reserve`, so that every
    /// winner can afford what it is charged.
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub floor: Price,
    /// Upper bound of every discovered price, if any.
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
    pub cap: Option<Price>,
    /// Weight of the newest cycle in the price index, in `(0, 1]`.
    #[serde(deserialize_with = "fixed::deserialize_decimal")]
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub smoothing: Decimal,
    /// Where payments go.
    pub settlement: Settlement,
    /// The account `pool` settlement credits.
    pub pool_account: String,
    /// Live bids one agent may hold.
    pub max_bids_per_agent: u32,
    /// Live bids the book holds; more is `book_full`.
    pub book_size: usize,
    /// Clearing cycles a decided or rejected bid id is remembered after its outcome, so a
    /// repeated submit is answered with the first result.
    pub dedupe_cycles: u64,
    /// Threads clearing may use for exact critical values and price discovery (a
    /// work-stealing pool per count). The default, 1, leaves the other cores to intake; any
    /// count gives the same payments and prices.
    pub clearing_threads: usize,
    /// Compute critical values under every pricing rule, not only `critical_value` (an
    /// extension of §4): losers' shortfalls and winners' overpayment are then known under
    /// `pay_as_bid` and `uniform` too, at the cost of the critical-value pass. Off by default:
    /// a cycle computes only what its pricing rule needs.
    pub always_critical_values: bool,
}

impl Default for MarketConfig {
    fn default() -> MarketConfig {
        MarketConfig {
            name: "default".into(),
            resources: ["cpu", "memory", "tokens", "attention"].map(String::from).into(),
            slot_ms: 1000,
            horizon: 86_400,
            pricing: PricingRule::default(),
            priority: PriorityRule::default(),
            reserve: BTreeMap::new(),
            floor: Price::ZERO,
            cap: None,
            smoothing: Decimal::new(2, 1),
            settlement: Settlement::default(),
            pool_account: "system".into(),
            max_bids_per_agent: 1000,
            book_size: 1 << 20,
            dedupe_cycles: 100,
            clearing_threads: 1,
            always_critical_values: false,
        }
    }
}

/// Longest horizon a market accepts, in slots (the timeline holds every slot of it).
pub const MAX_HORIZON: u64 = 1 << 22;

/// Why a configuration cannot make a market.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The market name is not a token.
    #[error("market name `{0}` is not 1 to 64 of [A-Za-z0-9_-]")]
    Name(String),
    /// The resource list is bad.
    #[error(transparent)]
    Resources(#[from] ResourcesError),
    /// A reserve for a resource the market does not sell.
    #[error("reserve names unknown resource `{0}`")]
    UnknownReserve(String),
    /// `slot_ms` is zero.
    #[error("slot_ms is at least 1")]
    SlotMs,
    /// The horizon is zero or too long.
    #[error("horizon is 1 to {MAX_HORIZON} slots, got {0}")]
    Horizon(u64),
    /// Smoothing outside `(0, 1]` or with more than six decimals.
    #[error("smoothing is in (0, 1] with at most 6 decimals, got {0}")]
    Smoothing(Decimal),
    /// The floor is above the cap.
    #[error("floor {floor} is above cap {cap}")]
    FloorAboveCap {
        /// The floor.
        floor: Price,
        /// The cap.
        cap: Price,
    },
    /// A reserve above the cap: no price could satisfy both.
    #[error("the reserve of `{0}` is above the cap")]
    ReserveAboveCap(String),
    /// The pool account is not a valid agent id.
    #[error("pool_account `{0}` is not 1 to 64 of [A-Za-z0-9_-]")]
    PoolAccount(String),
    /// `max_bids_per_agent` or `book_size` is zero.
    #[error("{0} is at least 1")]
    Zero(&'static str),
}

/// A validated configuration, resolved against its resources.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) resources: Resources,
    pub(crate) horizon: u64,
    pub(crate) pricing: PricingRule,
    pub(crate) priority: PriorityRule,
    /// Reserve price per resource index, at least the floor.
    pub(crate) reserve: Vec<Price>,
    pub(crate) floor: Price,
    pub(crate) cap: Option<Price>,
    /// Weight of the newest cycle in the index, in millionths.
    pub(crate) smoothing: u64,
    pub(crate) settlement: Settlement,
    pub(crate) pool_account: AgentId,
    pub(crate) max_bids_per_agent: u32,
    pub(crate) book_size: usize,
    pub(crate) dedupe_cycles: u64,
    pub(crate) clearing_threads: usize,
    pub(crate) always_critical_values: bool,
}

impl MarketConfig {
    /// Checks every key and resolves names.
    pub(crate) fn validate(&self) -> Result<Config, ConfigError> {
        if !is_token(&self.name) {
            return Err(ConfigError::Name(self.name.clone()));
        }
        let resources = Resources::new(&self.resources)?;
        let mut reserve = vec![Price::ZERO; resources.len()];
        for (name, &price) in &self.reserve {
            let id = resources.find(name).ok_or_else(|| ConfigError::UnknownReserve(name.clone()))?;
            reserve[id.index()] = price;
        }
        if self.slot_ms == 0 {
            return Err(ConfigError::SlotMs);
        }
        if self.horizon == 0 || self.horizon > MAX_HORIZON {
            return Err(ConfigError::Horizon(self.horizon));
        }
        let smoothing = match fixed::to_micro(self.smoothing) {
            Some(m) if m > 0 && m <= i128::from(MICRO) => m as u64,
            _ => return Err(ConfigError::Smoothing(self.smoothing)),
        };
        if let Some(cap) = self.cap
            && self.floor > cap
        {
            return Err(ConfigError::FloorAboveCap { floor: self.floor, cap });
        }
        // The floor is the least any slot can cost, so it reserves every resource too.
        for (r, price) in reserve.iter_mut().enumerate() {
            *price = (*price).max(self.floor);
            if self.cap.is_some_and(|cap| *price > cap) {
                return Err(ConfigError::ReserveAboveCap(self.resources[r].clone()));
            }
        }
        let pool_account = AgentId::new(&self.pool_account)
            .map_err(|_| ConfigError::PoolAccount(self.pool_account.clone()))?;
        if self.max_bids_per_agent == 0 {
            return Err(ConfigError::Zero("max_bids_per_agent"));
        }
        if self.book_size == 0 {
            return Err(ConfigError::Zero("book_size"));
        }
        if self.clearing_threads == 0 {
            return Err(ConfigError::Zero("clearing_threads"));
        }
        Ok(Config {
            resources,
            horizon: self.horizon,
            pricing: self.pricing,
            priority: self.priority,
            reserve,
            floor: self.floor,
            cap: self.cap,
            smoothing,
            settlement: self.settlement,
            pool_account,
            max_bids_per_agent: self.max_bids_per_agent,
            book_size: self.book_size,
            dedupe_cycles: self.dedupe_cycles,
            clearing_threads: self.clearing_threads,
            always_critical_values: self.always_critical_values,
        })
    }
}

impl Config {
    /// `price` held within the floor and the cap.
    pub(crate) fn bound(&self, price: Price) -> Price {
        let p = price.max(self.floor);
        match self.cap {
            Some(cap) => p.min(cap),
            None => p,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let c = MarketConfig::default().validate().unwrap();
        assert_eq!(c.resources.len(), 4);
        assert_eq!(c.smoothing, 200_000);
        assert_eq!(c.pool_account.as_str(), "system");
    }

    #[test]
    fn bad_keys_are_named() {
        let bad = |f: fn(&mut MarketConfig)| {
            let mut c = MarketConfig::default();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert!(matches!(bad(|c| c.name = "a b".into()), ConfigError::Name(_)));
        assert!(matches!(bad(|c| c.resources.clear()), ConfigError::Resources(_)));
        assert!(matches!(
            bad(|c| {
                c.reserve.insert("gpu".into(), Price::from_units(1));
            }),
            ConfigError::UnknownReserve(_)
        ));
        assert!(matches!(bad(|c| c.horizon = 0), ConfigError::Horizon(0)));
        assert!(matches!(bad(|c| c.smoothing = Decimal::ZERO), ConfigError::Smoothing(_)));
        assert!(matches!(
            bad(|c| {
                c.floor = Price::from_units(2);
                c.cap = Some(Price::from_units(1));
            }),
            ConfigError::FloorAboveCap { .. }
        ));
        assert!(matches!(bad(|c| c.book_size = 0), ConfigError::Zero("book_size")));
        assert!(matches!(
            bad(|c| {
                c.reserve.insert("cpu".into(), Price::from_units(3));
                c.cap = Some(Price::from_units(2));
            }),
            ConfigError::ReserveAboveCap(r) if r == "cpu"
        ));
    }

    #[test]
    fn decimals_read_exactly_as_written() {
        let c: MarketConfig = serde_json::from_str(
            r#"{"smoothing": 0.05, "floor": 0.000001, "cap": "12345678901.123456", "reserve": {"cpu": 2}}"#,
        )
        .unwrap();
        assert_eq!(c.smoothing, Decimal::new(5, 2));
        assert_eq!(c.floor, Price::from_micros(1));
        assert_eq!(c.cap, Some(Price::from_micros(12_345_678_901_123_456)));
        assert_eq!(c.reserve["cpu"], Price::from_units(2));
        for bad in [
            r#"{"smoothing": 1e-1}"#,
            r#"{"smoothing": 0.10000000000000000001}"#,
            r#"{"floor": 0.10000000000000000001}"#,
            r#"{"cap": "+1"}"#,
            r#"{"reserve": {"cpu": -1}}"#,
        ] {
            assert!(serde_json::from_str::<MarketConfig>(bad).is_err(), "{bad}");
        }
    }

    #[cfg(feature = "sim")]
    #[test]
    fn toml_takes_strings_and_whole_numbers_and_refuses_floats() {
        let c: MarketConfig =
            toml::from_str("smoothing = \"0.05\"\nfloor = 1\ncap = \"2.5\"\n[reserve]\ncpu = \"0.5\"\n")
                .unwrap();
        assert_eq!(c.smoothing, Decimal::new(5, 2));
        assert_eq!(c.floor, Price::from_units(1));
        assert_eq!(c.cap, Some(Price::from_micros(2_500_000)));
        assert_eq!(c.reserve["cpu"], Price::from_micros(500_000));
        for (bad, quoted) in [
            ("smoothing = 0.05", "\"0.05\""),
            ("floor = 0.5", "\"0.5\""),
            ("[reserve]\ncpu = 1.5", "\"1.5\""),
        ] {
            let e = toml::from_str::<MarketConfig>(bad).unwrap_err().to_string();
            assert!(e.contains("binary float") && e.contains(quoted), "{bad}: {e}");
        }
    }

    #[test]
    fn the_floor_reserves_every_resource() {
        let mut c = MarketConfig { floor: Price::from_units(2), ..MarketConfig::default() };
        c.reserve.insert("cpu".into(), Price::from_units(3));
        let v = c.validate().unwrap();
        assert_eq!(v.reserve[0], Price::from_units(3));
        assert!(v.reserve[1..].iter().all(|&p| p == Price::from_units(2)));
    }
}
