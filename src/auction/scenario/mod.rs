//! Scenario files (docs/design.md §9): a market, accounts, steps, and what must happen.
//!
//! A step may carry `"rejected": "<code>"`: the step must then be refused with that code.
//! Without it, a refused `submit` or `cancel` is ordinary market behaviour (its `bid_rejected`
//! can be expected like any event), while a refused `deposit`, `transfer`, `capacity` or `clear`
//! fails the scenario: it is a mistake in the setup. A scenario may also carry a `description`.

mod expect;
mod run;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

pub use expect::{BalanceExpect, Expect};
pub use run::ScenarioReport;

use super::config::MarketConfig;
use super::error::RejectCode;
use super::money::Credits;

/// A scenario: the market it runs, the accounts it opens, its steps and its expectations.
///
/// # Examples
///
/// ```
/// use capacity_auction::Scenario;
///
/// let s = Scenario::from_json(r#"{
///   "name": "one_bid_wins",
///   "market": {"resources": ["cpu"], "pricing": "pay_as_bid"},
///   "accounts": {"a": "10"},
///   "steps": [
///     {"submit": {"id": "b1", "agent": "a", "bundle": {"cpu": "0.5"}, "duration": 2, "limit": "4"}},
///     {"clear": {"at": 0}}
///   ],
///   "expect": {"sequence": [{"type": "bid_won", "bid": "b1", "payment": "4"}], "balances": {"a": "6"}}
/// }"#)?;
/// let report = s.run();
/// assert!(report.passed(), "{report}");
/// # Ok::<(), capacity_auction::ScenarioError>(())
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Its name, printed with the verdict.
    pub name: String,
    /// What it shows, for readers.
    #[serde(default)]
    pub description: Option<String>,
    /// The market's configuration; omitted keys take defaults.
    #[serde(default)]
    pub market: MarketConfig,
    /// Accounts opened with a deposit before the first step, by agent.
    #[serde(default)]
    pub accounts: BTreeMap<String, Credits>,
    /// What happens, in order.
    pub steps: Vec<Step>,
    /// What must have happened.
    #[serde(default)]
    pub expect: Expect,
}

/// One step: an action, optionally a correlation id and an expected refusal.
#[derive(Debug)]
pub struct Step {
    /// What to do.
    pub action: Action,
    /// Copied onto the events the step causes.
    pub correlation_id: Option<String>,
    /// The step must be refused with this code.
    pub rejected: Option<RejectCode>,
}

/// A step's action.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A bid, as JSON gives it (kept raw, so malformed bids reach the market and are refused
    /// there).
    Submit(Box<RawValue>),
    /// Withdraw a bid.
    Cancel {
        /// Its agent.
        agent: String,
        /// The bid.
        bid: String,
    },
    /// Credits into an account.
    Deposit {
        /// The account.
        agent: String,
        /// How much: a string or a number, read exactly as written (at most six places).
        #[serde(deserialize_with = "crate::capacity::fixed::deserialize_decimal")]
        amount: rust_decimal::Decimal,
    },
    /// Credits between accounts.
    Transfer {
        /// Paying account.
        from: String,
        /// Receiving account.
        to: String,
        /// How much: a string or a number, read exactly as written (at most six places).
        #[serde(deserialize_with = "crate::capacity::fixed::deserialize_decimal")]
        amount: rust_decimal::Decimal,
    },
    /// A capacity change over `[from_slot, to_slot)`.
    Capacity {
        /// The resource.
        resource: String,
        /// First slot.
        from_slot: u64,
        /// Exclusive end.
        to_slot: u64,
        /// The new capacity, in `[0, 1]`: a string or a number, read exactly as written (at
        /// most six places).
        #[serde(deserialize_with = "crate::capacity::fixed::deserialize_decimal")]
        capacity: rust_decimal::Decimal,
    },
    /// A clearing cycle at slot `at`.
    Clear {
        /// The slot; time never goes back.
        at: u64,
    },
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Step, D::Error> {
        struct StepVisitor;
        impl<'de> Visitor<'de> for StepVisitor {
            type Value = Step;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a step: one of submit, cancel, deposit, transfer, capacity, clear")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Step, A::Error> {
                let (mut action, mut correlation_id, mut rejected) = (None, None, None);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "correlation_id" => correlation_id = Some(map.next_value()?),
                        "rejected" => rejected = Some(map.next_value()?),
                        "submit" | "cancel" | "deposit" | "transfer" | "capacity" | "clear" => {
                            if action.is_some() {
                                return Err(de::Error::custom("a step has exactly one action"));
                            }
                            let value: Box<RawValue> = map.next_value()?;
                            let tagged = format!("{{\"{key}\":{}}}", value.get());
                            action =
                                Some(serde_json::from_str::<Action>(&tagged).map_err(de::Error::custom)?);
                        }
                        other => {
                            return Err(de::Error::custom(format!("unknown field `{other}` in a step")));
                        }
                    }
                }
                let action = action.ok_or_else(|| de::Error::custom("a step has one action"))?;
                Ok(Step { action, correlation_id, rejected })
            }
        }
        d.deserialize_map(StepVisitor)
    }
}

/// A scenario file that cannot be read or is not a scenario.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a scenario.
    #[error("{path}: {source}")]
    Format {
        /// The file (empty when parsed from a string).
        path: PathBuf,
        /// What is wrong.
        source: serde_json::Error,
    },
}

impl Scenario {
    /// Parses a scenario.
    ///
    /// # Errors
    ///
    /// [`ScenarioError::Format`] when the text is not a scenario.
    pub fn from_json(json: &str) -> Result<Scenario, ScenarioError> {
        serde_json::from_str(json).map_err(|source| ScenarioError::Format { path: PathBuf::new(), source })
    }

    /// Reads a scenario file.
    ///
    /// # Errors
    ///
    /// When the file cannot be read or is not a scenario.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ScenarioError::Io { path: path.into(), source })?;
        serde_json::from_str(&text).map_err(|source| ScenarioError::Format { path: path.into(), source })
    }

    /// The scenario files named by `paths`: files as given, folders searched for `*.json`
    /// (recursively, in name order).
    ///
    /// # Errors
    ///
    /// When a folder cannot be read.
    pub fn files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ScenarioError> {
        let mut out = Vec::new();
        for path in paths {
            if path.is_dir() {
                let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                    .map_err(|source| ScenarioError::Io { path: path.clone(), source })?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .collect();
                entries.sort();
                let (dirs, files): (Vec<_>, Vec<_>) = entries.into_iter().partition(|p| p.is_dir());
                out.extend(files.into_iter().filter(|p| p.extension().is_some_and(|e| e == "json")));
                out.extend(Scenario::files(&dirs)?);
            } else {
                out.push(path.clone());
            }
        }
        Ok(out)
    }
}
