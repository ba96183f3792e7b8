//! Events (docs/design.md §8): one typed enum, JSON with a version, a gapless `seq`, and strict
//! decoding.

use std::fmt;
use std::sync::Arc;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::{RejectCode, Rejection};
use super::ids::{AgentId, BidId};
use super::money::{Credits, Price};
use crate::capacity::{Capacity, CapacitySlots, Share, Slot};

/// The version written in every event's `v`.
pub const EVENT_VERSION: u8 = 1;

/// Something that happened in a market, numbered by `seq` without gaps.
///
/// # Examples
///
/// ```
/// use capacity_auction::{Event, EventKind};
///
/// let json = r#"{"v":1,"seq":7,"cycle":null,"slot":0,"correlation_id":null,"type":"bid_cancelled","bid":"b1","agent":"a"}"#;
/// let event = Event::from_json(json.as_bytes())?;
/// assert!(matches!(event.kind, EventKind::BidCancelled { .. }));
/// assert_eq!(event.to_json(), json);
/// # Ok::<(), capacity_auction::Rejection>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Position in the market's event stream: 1, 2, 3, … without gaps.
    pub seq: u64,
    /// The clearing cycle that caused it, or `None` for intake (bids, cancels, credits).
    pub cycle: Option<u64>,
    /// The market's current slot when it happened.
    pub slot: Slot,
    /// The correlation id of the request that caused it.
    pub correlation_id: Option<Arc<str>>,
    /// What happened.
    pub kind: EventKind,
}

/// What happened, with its fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum EventKind {
    /// A bid entered the book; its limit is escrowed.
    BidAccepted {
        /// The bid.
        bid: BidId,
        /// Who pays.
        agent: AgentId,
        /// Who runs.
        beneficiary: AgentId,
        /// Resource -> share.
        bundle: BundleShares,
        /// Slots the run lasts.
        duration: u32,
        /// First possible start.
        earliest_start: Slot,
        /// Exclusive end of the window.
        latest_end: Slot,
        /// The most it pays.
        limit: Credits,
        /// Clearing cycles it stays in the book while it loses.
        good_for: u32,
    },
    /// A submit or cancel was refused; nothing changed.
    BidRejected {
        /// The bid id as given (possibly not a valid id).
        bid: String,
        /// The agent as given.
        agent: String,
        /// The reason code.
        reason: RejectCode,
        /// What was wrong.
        message: String,
    },
    /// A pending bid was withdrawn; its escrow is released.
    BidCancelled {
        /// The bid.
        bid: BidId,
        /// Its agent.
        agent: AgentId,
    },
    /// A bid won: it runs in `[start, end)`.
    BidWon {
        /// The bid.
        bid: BidId,
        /// Who pays.
        agent: AgentId,
        /// Who runs.
        beneficiary: AgentId,
        /// First slot of the run.
        start: Slot,
        /// Exclusive end of the run.
        end: Slot,
        /// What it pays.
        payment: Credits,
    },
    /// A bid lost this cycle.
    BidLost {
        /// The bid.
        bid: BidId,
        /// Its agent.
        agent: AgentId,
        /// Whether it stays in the book for another cycle.
        retained: bool,
        /// How much more limit would have won this cycle, if any limit would have.
        shortfall: Option<Credits>,
    },
    /// A bid's window can no longer hold its run; its escrow is released.
    BidExpired {
        /// The bid.
        bid: BidId,
        /// Its agent.
        agent: AgentId,
    },
    /// A resource's prices after a cycle.
    PriceDiscovered {
        /// The resource.
        resource: Arc<str>,
        /// Price of the current slot.
        spot: Price,
        /// Volume-weighted price over the slots this cycle sold (the spot when it sold none).
        average: Price,
        /// Smoothed over cycles: the market price.
        index: Price,
        /// Fraction of full capacity sold in the current slot.
        utilization: f64,
        /// Capacity-slots this cycle's bids asked for.
        requested: CapacitySlots,
        /// Capacity-slots this cycle sold.
        sold: CapacitySlots,
        /// The prototype's figure: winning credits / capacity-slots sold.
        legacy: Price,
    },
    /// A clearing cycle cut the book: the bids pending now take part in it, and everything
    /// after this event until the cycle's outcomes happened while it computed (and waits for the
    /// next cycle). Its `slot` is the slot the cycle clears at.
    CycleStarted {
        /// Bids taken into the cycle, those about to expire included.
        bids: u64,
    },
    /// A clearing cycle finished.
    CycleCleared {
        /// Bids that took part (won + lost + expired).
        bids: u64,
        /// Winners.
        won: u64,
        /// Losers, retained or not.
        lost: u64,
        /// Expired before clearing.
        expired: u64,
        /// Sum of payments.
        revenue: Credits,
        /// Sum of the winners' limits (their declared values).
        welfare: Credits,
        /// Fraction of winners whose bundle costs at most their limit at the discovered prices.
        ir: f64,
        /// Fraction of losers whose cheapest start costs less than their limit at those prices.
        envy: f64,
    },
    /// Credits entered an account.
    CreditsDeposited {
        /// The account.
        agent: AgentId,
        /// How much.
        amount: Credits,
    },
    /// Credits moved between accounts (also pool settlement).
    CreditsTransferred {
        /// Paying account.
        from: AgentId,
        /// Receiving account.
        to: AgentId,
        /// How much.
        amount: Credits,
    },
    /// Credits were destroyed in settlement.
    CreditsBurned {
        /// The paying account.
        agent: AgentId,
        /// How much.
        amount: Credits,
    },
    /// The capacity of a slot range changed.
    CapacityChanged {
        /// The resource.
        resource: Arc<str>,
        /// First slot changed.
        from_slot: Slot,
        /// Exclusive end of the range.
        to_slot: Slot,
        /// The new capacity.
        capacity: Capacity,
    },
}

impl EventKind {
    /// The `type` written on the wire (`"bid_won"`).
    pub fn type_name(&self) -> &'static str {
        match self {
            EventKind::BidAccepted { .. } => "bid_accepted",
            EventKind::BidRejected { .. } => "bid_rejected",
            EventKind::BidCancelled { .. } => "bid_cancelled",
            EventKind::BidWon { .. } => "bid_won",
            EventKind::BidLost { .. } => "bid_lost",
            EventKind::BidExpired { .. } => "bid_expired",
            EventKind::PriceDiscovered { .. } => "price_discovered",
            EventKind::CycleStarted { .. } => "cycle_started",
            EventKind::CycleCleared { .. } => "cycle_cleared",
            EventKind::CreditsDeposited { .. } => "credits_deposited",
            EventKind::CreditsTransferred { .. } => "credits_transferred",
            EventKind::CreditsBurned { .. } => "credits_burned",
            EventKind::CapacityChanged { .. } => "capacity_changed",
        }
    }

    /// Whether the event is about credits (`system.economy.*`) rather than the market.
    pub fn is_economy(&self) -> bool {
        matches!(
            self,
            EventKind::CreditsDeposited { .. }
                | EventKind::CreditsTransferred { .. }
                | EventKind::CreditsBurned { .. }
        )
    }
}

/// A bundle as events write it: resource name -> share, in the market's resource order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BundleShares(pub Vec<(Arc<str>, Share)>);

impl Serialize for BundleShares {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, share) in &self.0 {
            map.serialize_entry(&**name, share)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for BundleShares {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<BundleShares, D::Error> {
        struct Items;
        impl<'de> Visitor<'de> for Items {
            type Value = BundleShares;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of resource name -> share")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<BundleShares, A::Error> {
                let mut items = Vec::new();
                while let Some((name, share)) = map.next_entry::<String, Share>()? {
                    items.push((Arc::from(name), share));
                }
                Ok(BundleShares(items))
            }
        }
        d.deserialize_map(Items)
    }
}

/// What every event's JSON starts with, up to its `seq`.
fn line_head() -> &'static str {
    static HEAD: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HEAD.get_or_init(|| format!(r#"{{"v":{EVENT_VERSION},"seq":"#))
}

/// The envelope as written: `v`, `seq`, `cycle`, `slot`, `correlation_id`, then the kind.
#[derive(Serialize)]
struct WireOut<'a> {
    v: u8,
    seq: u64,
    cycle: Option<u64>,
    slot: Slot,
    correlation_id: Option<&'a str>,
    #[serde(flatten)]
    kind: &'a EventKind,
}

/// An event of a capacity-auction market: the envelope and one kind, tagged by `type`.
// As read: unknown keys reach the kind, which refuses them.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "Event"))]
pub(crate) struct WireIn {
    /// Format version, always 1.
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 1)))]
    v: u8,
    /// Position in the market's event stream, from 1, without gaps.
    seq: u64,
    /// The clearing cycle that caused it; null for intake.
    cycle: Option<u64>,
    /// The market's current slot.
    slot: Slot,
    /// The correlation id of the request that caused it.
    correlation_id: Option<Arc<str>>,
    #[serde(flatten)]
    kind: EventKind,
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WireOut {
            v: EVENT_VERSION,
            seq: self.seq,
            cycle: self.cycle,
            slot: self.slot,
            correlation_id: self.correlation_id.as_deref(),
            kind: &self.kind,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Event, D::Error> {
        let w = WireIn::deserialize(d)?;
        if w.v != EVENT_VERSION {
            return Err(serde::de::Error::custom(format!("event version {} is not {EVENT_VERSION}", w.v)));
        }
        Ok(Event { seq: w.seq, cycle: w.cycle, slot: w.slot, correlation_id: w.correlation_id, kind: w.kind })
    }
}

impl Event {
    /// The event as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("events always serialize")
    }

    /// The event's JSON from just after its `seq`, whatever its `seq` is.
    #[cfg(test)]
    pub(crate) fn line(&self) -> Vec<u8> {
        Event::line_of(self.cycle, self.slot, self.correlation_id.as_deref(), &self.kind)
    }

    /// The JSON of an event of these fields from just after its `seq`: `{"v":1,"seq":`, then a
    /// `seq`, then this, is [`to_json`](Event::to_json) of the event with that `seq`
    /// ([`write_line`](Event::write_line)).
    pub(crate) fn line_of(
        cycle: Option<u64>,
        slot: Slot,
        correlation_id: Option<&str>,
        kind: &EventKind,
    ) -> Vec<u8> {
        let wire = WireOut { v: EVENT_VERSION, seq: 0, cycle, slot, correlation_id, kind };
        Event::tail(&serde_json::to_vec(&wire).expect("events always serialize"))
    }

    /// What follows the `seq` in `json`, a line written with `seq` 0.
    pub(crate) fn tail(json: &[u8]) -> Vec<u8> {
        let head = line_head().len() + 1;
        debug_assert!(json.starts_with(line_head().as_bytes()) && json[head - 1] == b'0');
        json[head..].to_vec()
    }

    /// Appends the JSON of the event with `seq` whose [`line_of`](Event::line_of) is `line`.
    pub(crate) fn write_line(seq: u64, line: &[u8], out: &mut Vec<u8>) {
        use std::io::Write;
        out.extend_from_slice(line_head().as_bytes());
        write!(out, "{seq}").expect("writing to memory");
        out.extend_from_slice(line);
    }

    /// Decodes an event, refusing unknown fields and other versions.
    ///
    /// # Errors
    ///
    /// `unknown_field` or `malformed`.
    pub fn from_json(json: &[u8]) -> Result<Event, Rejection> {
        serde_json::from_slice(json).map_err(|e| Rejection::from_json(&e))
    }

    /// The bid this event is about, if it is about one.
    pub fn bid(&self) -> Option<&str> {
        match &self.kind {
            EventKind::BidAccepted { bid, .. }
            | EventKind::BidCancelled { bid, .. }
            | EventKind::BidWon { bid, .. }
            | EventKind::BidLost { bid, .. }
            | EventKind::BidExpired { bid, .. } => Some(bid.as_str()),
            EventKind::BidRejected { bid, .. } => Some(bid),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Event> {
        let a = AgentId::new("a").unwrap();
        let b = BidId::new("b").unwrap();
        let kinds = vec![
            EventKind::BidAccepted {
                bid: b.clone(),
                agent: a.clone(),
                beneficiary: a.clone(),
                bundle: BundleShares(vec![("cpu".into(), "0.1".parse().unwrap())]),
                duration: 3,
                earliest_start: Slot(0),
                latest_end: Slot(9),
                limit: "5".parse().unwrap(),
                good_for: 2,
            },
            EventKind::BidLost { bid: b.clone(), agent: a.clone(), retained: false, shortfall: None },
            EventKind::PriceDiscovered {
                resource: "cpu".into(),
                spot: Price::from_micros(1),
                average: Price::ZERO,
                index: Price::ZERO,
                utilization: 0.25,
                requested: CapacitySlots::from_units(3),
                sold: CapacitySlots::ZERO,
                legacy: Price::ZERO,
            },
        ];
        kinds
            .into_iter()
            .enumerate()
            .map(|(i, kind)| Event {
                seq: i as u64 + 1,
                cycle: Some(1),
                slot: Slot(4),
                correlation_id: Some("c".into()),
                kind,
            })
            .collect()
    }

    #[test]
    fn round_trips() {
        for e in sample() {
            let json = e.to_json();
            assert!(json.starts_with(r#"{"v":1,"seq":"#), "{json}");
            assert_eq!(Event::from_json(json.as_bytes()).unwrap(), e);
        }
    }

    #[test]
    fn strict_decoding() {
        let json = sample()[1].to_json();
        let extra = json.replace(r#""retained""#, r#""colour":1,"retained""#);
        assert_eq!(Event::from_json(extra.as_bytes()).unwrap_err().code, RejectCode::UnknownField);
        let v2 = json.replace(r#""v":1"#, r#""v":2"#);
        assert_eq!(Event::from_json(v2.as_bytes()).unwrap_err().code, RejectCode::Malformed);
        let bad_type = json.replace("bid_lost", "bid_misplaced");
        assert!(Event::from_json(bad_type.as_bytes()).is_err());
    }
}
