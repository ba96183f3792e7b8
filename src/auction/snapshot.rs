//! A market's whole state as data: [`Snapshot`], what [`Market::snapshot`] takes and
//! [`Market::restore`] rebuilds from, and [`StateHash`], its digest.
//!
//! Everything is held in a canonical order (accounts by agent, ids by bid, pending bids by
//! acceptance, sales by resource and slot), so equal states serialize to equal bytes and hash
//! alike, whatever the hash maps inside the market did.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::config::MarketConfig;
use super::cycle::PriceReport;
use super::error::RejectCode;
use super::events::BundleShares;
use super::ids::{AgentId, BidId};
use super::money::{Credits, Price};
use crate::capacity::{Capacity, Slot};

/// The version [`Snapshot::version`] is written with; [`Market::restore`](crate::Market::restore)
/// refuses others.
pub const SNAPSHOT_VERSION: u32 = 1;

/// Everything a market holds, as of the event `seq`, between cycles: configuration, clock,
/// ledger and escrow, pending bids with every field, capacity and sales, prices, and the ids it
/// remembers. Serializable (JSON or any serde format); restore it with
/// [`Market::restore`](crate::Market::restore) and apply the events after `seq` with
/// [`Market::replay`](crate::Market::replay).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// The format's version, [`SNAPSHOT_VERSION`].
    pub version: u32,
    /// The market's configuration.
    pub config: MarketConfig,
    /// The last event the state includes.
    pub seq: u64,
    /// Cycles cleared.
    pub cycle: u64,
    /// The market's slot.
    pub now: Slot,
    pub(crate) ledger: LedgerState,
    pub(crate) book: Vec<PendingBid>,
    pub(crate) timeline: TimelineState,
    pub(crate) prices: PriceState,
}

/// Credits and remembered ids.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LedgerState {
    pub(crate) deposits: Credits,
    pub(crate) burned: Credits,
    /// By agent.
    pub(crate) accounts: Vec<AccountState>,
}

/// One account: its credits and the bid ids it has used that are still remembered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AccountState {
    pub(crate) agent: AgentId,
    pub(crate) available: Credits,
    pub(crate) escrowed: Credits,
    /// By bid id.
    pub(crate) bids: Vec<Remembered>,
}

/// What an account remembers of a bid id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Remembered {
    /// In the book, `limit` escrowed, accepted as event `seq`.
    Pending { bid: BidId, limit: Credits, seq: u64 },
    /// Accepted as event `seq`, decided in cycle `cycle`.
    Decided { bid: BidId, cycle: u64, seq: u64 },
    /// Refused in cycle `cycle`: the answer to a repeat.
    Refused { bid: BidId, cycle: u64, reason: RejectCode, message: String },
}

impl Remembered {
    pub(crate) fn bid(&self) -> &BidId {
        match self {
            Remembered::Pending { bid, .. }
            | Remembered::Decided { bid, .. }
            | Remembered::Refused { bid, .. } => bid,
        }
    }
}

/// A bid in the book, with every field clearing and settlement use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PendingBid {
    pub(crate) bid: BidId,
    pub(crate) agent: AgentId,
    pub(crate) beneficiary: AgentId,
    pub(crate) bundle: BundleShares,
    pub(crate) duration: u32,
    pub(crate) earliest_start: Slot,
    pub(crate) latest_end: Slot,
    pub(crate) limit: Credits,
    /// Cycles it may still take part in.
    pub(crate) cycles_left: u32,
    /// The `seq` of its `bid_accepted`.
    pub(crate) seq: u64,
    pub(crate) correlation_id: Option<Arc<str>>,
}

/// Capacity changes in effect and capacity sold, from `now` on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TimelineState {
    /// In the order they were made.
    pub(crate) changes: Vec<CapacityRun>,
    /// By resource, then slot.
    pub(crate) sold: Vec<SoldRun>,
}

/// A resource's capacity over `[from, to)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CapacityRun {
    pub(crate) resource: Arc<str>,
    pub(crate) from: Slot,
    pub(crate) to: Slot,
    pub(crate) capacity: Capacity,
}

/// Capacity of a resource sold over `[from, to)`, the same in every slot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SoldRun {
    pub(crate) resource: Arc<str>,
    pub(crate) from: Slot,
    pub(crate) to: Slot,
    pub(crate) sold: Capacity,
}

/// What the last cycle discovered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PriceState {
    /// The smoothed price of each resource, in configured order, once set.
    pub(crate) index: Vec<Option<Price>>,
    /// The last cycle's `price_discovered` figures.
    pub(crate) reports: Vec<PriceReport>,
    /// The last cycle's price of every slot it reached.
    pub(crate) curve: Option<CurveState>,
}

/// The last cycle's forward price curve, as runs of equal prices.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CurveState {
    /// The slots it covers, `[from, to)`.
    pub(crate) from: Slot,
    pub(crate) to: Slot,
    /// By resource, then slot.
    pub(crate) runs: Vec<PriceRun>,
    pub(crate) ir: f64,
    pub(crate) envy: f64,
}

/// A resource's price over `[from, to)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PriceRun {
    pub(crate) resource: Arc<str>,
    pub(crate) from: Slot,
    pub(crate) to: Slot,
    pub(crate) price: Price,
}

impl Snapshot {
    /// The snapshot as JSON, in its canonical form (the bytes [`hash`](Snapshot::hash) digests).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("snapshots always serialize")
    }

    /// Reads a snapshot written by [`to_json`](Snapshot::to_json).
    ///
    /// # Errors
    ///
    /// When the bytes are not a snapshot of this format.
    pub fn from_json(json: &[u8]) -> Result<Snapshot, StateError> {
        serde_json::from_slice(json).map_err(|e| StateError::Format(e.to_string()))
    }

    /// The digest of the state: BLAKE3 over the canonical JSON.
    pub fn hash(&self) -> StateHash {
        StateHash(*blake3::hash(&self.to_json()).as_bytes())
    }

    /// Pending bids in the book.
    pub fn pending_bids(&self) -> usize {
        self.book.len()
    }
}

/// A digest of a market's state ([`Market::state_hash`](crate::Market::state_hash)): equal
/// states, equal hashes. Written as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StateHash(pub [u8; 32]);

impl fmt::Display for StateHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for StateHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for StateHash {
    type Err = StateError;

    fn from_str(s: &str) -> Result<StateHash, StateError> {
        let bad = || StateError::Format(format!("`{s}` is not 64 hex digits"));
        if s.len() != 64 || !s.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(StateHash(out))
    }
}

impl Serialize for StateHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StateHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<StateHash, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a snapshot could not be taken or restored, or events could not be replayed. After a
/// failed [`replay`](crate::Market::replay) the market is in no defined state: discard it.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// A replayed cycle is in flight (the events ended mid-cycle); finish it with
    /// [`Market::resume`](crate::Market::resume) or replay its outcome first.
    #[error("cycle {0} is in flight: replay its outcome or resume it first")]
    CycleInFlight(u64),
    /// Not a snapshot of this format or version.
    #[error("not a snapshot of this format: {0}")]
    Format(String),
    /// A snapshot whose parts disagree (a pending bid without its escrow, credits not
    /// conserved, …).
    #[error("inconsistent snapshot: {0}")]
    Inconsistent(String),
    /// An event out of order: replay needs every event after the state's `seq`, in order.
    #[error("expected event {expected}, got event {got}")]
    Gap {
        /// The next `seq` the state needs.
        expected: u64,
        /// The `seq` given.
        got: u64,
    },
    /// An event the state cannot have produced: the events are not this market's, or the state
    /// is not the one they followed.
    #[error("event {seq} cannot follow this state: {why}")]
    Diverged {
        /// The event.
        seq: u64,
        /// What did not fit.
        why: String,
    },
}
