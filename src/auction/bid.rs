//! Bids (docs/design.md §4): the typed [`Bid`], its JSON form [`BidRequest`], and the checks a bid
//! passes before the ledger sees it.

use std::fmt;

use rust_decimal::Decimal;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::config::Config;
use super::decode;
use super::error::{RejectCode, Rejection};
use super::ids::{AgentId, BidId};
use super::money::{Credits, credits_ceil, pico_cost};
use crate::capacity::{Bundle, BundleError, Resources, Share, Slot, Window};

/// A bid for a bundle of capacity over `duration` slots inside a window, paying at most `limit`.
///
/// # Examples
///
/// ```
/// use capacity_auction::{AgentId, Bid, BidId, Bundle, Credits, Resources, Slot};
///
/// let resources = Resources::new(["cpu", "memory"])?;
/// let bundle = Bundle::from_names(&resources, [("cpu", "0.1"), ("memory", "0.05")])?;
/// let bid = Bid::new(BidId::new("b1")?, AgentId::new("agent-1")?, bundle, 60, "12".parse()?)
///     .window(Slot(0), Slot(600))
///     .good_for(5);
/// assert_eq!(bid.duration(), 60);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bid {
    pub(crate) id: BidId,
    pub(crate) agent: AgentId,
    pub(crate) beneficiary: Option<AgentId>,
    pub(crate) bundle: Bundle,
    pub(crate) duration: u64,
    pub(crate) earliest_start: Option<Slot>,
    pub(crate) latest_end: Option<Slot>,
    pub(crate) limit: Credits,
    pub(crate) good_for: u32,
}

impl Bid {
    /// A bid by `agent` for `bundle` during `duration` slots, paying at most `limit`; it may run
    /// from the current slot, stays for one cycle, and runs for the agent.
    pub fn new(id: BidId, agent: AgentId, bundle: Bundle, duration: u32, limit: Credits) -> Bid {
        Bid {
            id,
            agent,
            beneficiary: None,
            bundle,
            duration: u64::from(duration),
            earliest_start: None,
            latest_end: None,
            limit,
            good_for: 1,
        }
    }

    /// Runs somewhere in `[earliest_start, latest_end)`.
    #[must_use]
    pub fn window(mut self, earliest_start: Slot, latest_end: Slot) -> Bid {
        self.earliest_start = Some(earliest_start);
        self.latest_end = Some(latest_end);
        self
    }

    /// Starts at or after `earliest_start`; ends by `latest_end` if that is set, else runs at once.
    #[must_use]
    pub fn earliest_start(mut self, earliest_start: Slot) -> Bid {
        self.earliest_start = Some(earliest_start);
        self
    }

    /// Runs on behalf of `beneficiary` (the agent still pays).
    #[must_use]
    pub fn beneficiary(mut self, beneficiary: AgentId) -> Bid {
        self.beneficiary = Some(beneficiary);
        self
    }

    /// Stays in the book for up to `cycles` clearing cycles while it loses (at least 1).
    #[must_use]
    pub fn good_for(mut self, cycles: u32) -> Bid {
        self.good_for = cycles;
        self
    }

    /// The bid's id.
    pub fn id(&self) -> &BidId {
        &self.id
    }

    /// The paying agent.
    pub fn agent(&self) -> &AgentId {
        &self.agent
    }

    /// The run's length in slots.
    pub fn duration(&self) -> u64 {
        self.duration
    }

    /// The bundle.
    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// The window as given: `(earliest_start, latest_end)`, either unset for its default.
    pub fn window_given(&self) -> (Option<Slot>, Option<Slot>) {
        (self.earliest_start, self.latest_end)
    }

    /// The most the bid pays.
    pub fn limit(&self) -> Credits {
        self.limit
    }

    /// Checks the bid against the market at slot `now`: the resolved window and the bundle's
    /// reserve cost.
    pub(crate) fn check(&self, config: &Config, now: Slot) -> Result<(Window, Credits), Rejection> {
        let reject = |code, message: String| Err(Rejection::new(code, message));
        if self.bundle.iter().any(|(r, _)| r.index() >= config.resources.len()) {
            return reject(
                RejectCode::UnknownResource,
                "the bundle names a resource this market does not sell".into(),
            );
        }
        if self.duration == 0 || self.duration > config.horizon {
            return reject(
                RejectCode::InvalidDuration,
                format!("duration is 1 to {} slots, got {}", config.horizon, self.duration),
            );
        }
        if self.good_for == 0 {
            return reject(RejectCode::Malformed, "good_for is at least 1 cycle".into());
        }
        let earliest = self.earliest_start.unwrap_or(now);
        let latest = match self.latest_end {
            Some(end) => end,
            None => match earliest.0.checked_add(self.duration) {
                Some(end) => Slot(end),
                None => return reject(RejectCode::InvalidWindow, "the window overflows".into()),
            },
        };
        let Some(window) = Window::new(earliest, latest, self.duration as u32) else {
            return reject(
                RejectCode::InvalidWindow,
                format!("[{earliest}, {latest}) cannot hold {} slots", self.duration),
            );
        };
        if window.starts(now).is_empty() {
            return reject(
                RejectCode::InvalidWindow,
                format!("[{earliest}, {latest}) can no longer hold {} slots at slot {now}", self.duration),
            );
        }
        if latest.0 > now.0.saturating_add(config.horizon) {
            return reject(
                RejectCode::BeyondHorizon,
                format!(
                    "latest_end {latest} is past slot {} (now {now} + horizon {})",
                    now.0 + config.horizon,
                    config.horizon
                ),
            );
        }
        if self.limit == Credits::ZERO {
            return reject(RejectCode::InvalidAmount, "a bid's limit is above zero".into());
        }
        let reserve = reserve_cost(config, &self.bundle, self.duration);
        if self.limit < reserve {
            return reject(
                RejectCode::BelowReserve,
                format!("limit {} is below the bundle's reserve cost {reserve}", self.limit),
            );
        }
        Ok((window, reserve))
    }
}

/// The bundle's cost for `duration` slots at reserve prices, rounded up to the millionth.
pub(crate) fn reserve_cost(config: &Config, bundle: &Bundle, duration: u64) -> Credits {
    let picos: u128 = bundle
        .raw()
        .map(|(r, share)| pico_cost(u64::from(share), config.reserve[r]) * u128::from(duration))
        .sum();
    credits_ceil(picos)
}

/// A bid as JSON gives it (docs/design.md §4), before any check. Unknown fields are refused.
///
/// # Examples
///
/// ```
/// use capacity_auction::BidRequest;
///
/// let req = BidRequest::from_json(
///     br#"{"id":"b1","agent":"a","bundle":{"cpu":"0.1"},"duration":10,"limit":5}"#,
/// )?;
/// assert_eq!(req.id, "b1");
/// let err = BidRequest::from_json(br#"{"id":"b1","colour":"red"}"#).unwrap_err();
/// assert_eq!(err.code, capacity_auction::RejectCode::UnknownField);
/// # Ok::<(), capacity_auction::Rejection>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct BidRequest {
    /// Client-chosen id, unique per agent.
    pub id: String,
    /// The paying agent (over NATS, taken from the subject instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Who runs; the agent when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beneficiary: Option<String>,
    /// Resource name -> share.
    pub bundle: BundleRequest,
    /// Slots the run lasts.
    pub duration: i64,
    /// First slot the run may start in; the current slot when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub earliest_start: Option<i64>,
    /// Slot the run must end before (exclusive); `earliest_start + duration` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_end: Option<i64>,
    /// The most the bid pays, in total.
    #[serde(deserialize_with = "decode::amount")]
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub limit: Decimal,
    /// Clearing cycles the bid stays in the book while it loses; 1 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub good_for: Option<u32>,
}

/// A bundle as JSON gives it: resource names and shares, in the order written.
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(with = "std::collections::BTreeMap<String, String>"))]
pub struct BundleRequest(pub Vec<(String, Decimal)>);

impl Serialize for BundleRequest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, share) in &self.0 {
            map.serialize_entry(name, share)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for BundleRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<BundleRequest, D::Error> {
        struct Items;
        impl<'de> Visitor<'de> for Items {
            type Value = BundleRequest;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of resource name -> share")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<BundleRequest, A::Error> {
                let mut items: Vec<(String, Decimal)> = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    let share = map.next_value::<ShareValue>()?.0;
                    if items.iter().any(|(n, _)| *n == name) {
                        return Err(serde::de::Error::custom(format!("resource `{name}` appears twice")));
                    }
                    items.push((name, share));
                }
                Ok(BundleRequest(items))
            }
        }
        d.deserialize_map(Items)
    }
}

struct ShareValue(Decimal);

impl<'de> Deserialize<'de> for ShareValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ShareValue, D::Error> {
        decode::share(d).map(ShareValue)
    }
}

impl BidRequest {
    /// Decodes a request from JSON. The limit and the shares are read exactly as written, JSON
    /// numbers included: digits, then optionally `.` and 1 to 6 digits.
    ///
    /// # Errors
    ///
    /// `unknown_field` for a field bids do not have; `invalid_amount` for a limit, and
    /// `invalid_share` for a share, that is a number or a string but not a decimal of that
    /// grammar (`1e3`, `"NaN"`, `"+1"`, `" 1"`, a negative, a seventh decimal place, more than
    /// 18446744073709.551615); `malformed` for anything else that does not decode.
    pub fn from_json(json: &[u8]) -> Result<BidRequest, Rejection> {
        serde_json::from_slice(json).map_err(|e| decode::rejection(&e))
    }

    /// The typed bid, its names resolved against `resources`. `agent` stands in when the request
    /// names none.
    ///
    /// # Errors
    ///
    /// The reason code of the first problem found: `malformed` ids, `empty_bundle`,
    /// `unknown_resource`, `invalid_share`, `invalid_duration`, `invalid_window`,
    /// `invalid_amount`.
    pub fn to_bid(&self, resources: &Resources, agent: Option<&AgentId>) -> Result<Bid, Rejection> {
        let malformed = |what: &str, v: &str| {
            Rejection::new(RejectCode::Malformed, format!("{what} `{v}` is not 1 to 64 of [A-Za-z0-9_-]"))
        };
        let id = BidId::new(&self.id).map_err(|_| malformed("bid id", &self.id))?;
        let agent = match (&self.agent, agent) {
            (Some(a), _) => AgentId::new(a).map_err(|_| malformed("agent", a))?,
            (None, Some(a)) => a.clone(),
            (None, None) => return Err(Rejection::new(RejectCode::Malformed, "the bid names no agent")),
        };
        let beneficiary = match &self.beneficiary {
            Some(b) => Some(AgentId::new(b).map_err(|_| malformed("beneficiary", b))?),
            None => None,
        };
        let mut items = Vec::with_capacity(self.bundle.0.len());
        for (name, share) in &self.bundle.0 {
            let r = resources.find(name).ok_or_else(|| {
                Rejection::new(RejectCode::UnknownResource, format!("the market sells no resource `{name}`"))
            })?;
            let share = Share::from_decimal(*share)
                .map_err(|e| Rejection::new(RejectCode::InvalidShare, format!("share of `{name}`: {e}")))?;
            items.push((r, share));
        }
        let bundle = Bundle::new(items).map_err(|e| match e {
            BundleError::Empty => Rejection::new(RejectCode::EmptyBundle, e.to_string()),
            other => Rejection::new(RejectCode::Malformed, other.to_string()),
        })?;
        let duration = u32::try_from(self.duration).ok().filter(|&d| d > 0).ok_or_else(|| {
            Rejection::new(
                RejectCode::InvalidDuration,
                format!("duration is at least 1 slot, got {}", self.duration),
            )
        })?;
        let slot = |v: Option<i64>, what: &str| -> Result<Option<Slot>, Rejection> {
            match v {
                None => Ok(None),
                Some(s) if s >= 0 => Ok(Some(Slot(s as u64))),
                Some(s) => {
                    Err(Rejection::new(RejectCode::InvalidWindow, format!("{what} is a slot, got {s}")))
                }
            }
        };
        let earliest_start = slot(self.earliest_start, "earliest_start")?;
        let latest_end = slot(self.latest_end, "latest_end")?;
        let limit = Credits::from_decimal(self.limit)
            .map_err(|e| Rejection::new(RejectCode::InvalidAmount, format!("limit: {e}")))?;
        Ok(Bid {
            id,
            agent,
            beneficiary,
            bundle,
            duration: u64::from(duration),
            earliest_start,
            latest_end,
            limit,
            good_for: self.good_for.unwrap_or(1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources() -> Resources {
        Resources::new(["cpu", "memory"]).unwrap()
    }

    fn code(json: &str) -> RejectCode {
        match BidRequest::from_json(json.as_bytes()) {
            Err(r) => r.code,
            Ok(req) => req.to_bid(&resources(), None).unwrap_err().code,
        }
    }

    #[test]
    fn request_codes() {
        assert_eq!(code("{"), RejectCode::Malformed);
        assert_eq!(
            code(r#"{"id":"b","agent":"a","bundle":{},"duration":1,"limit":1,"x":1}"#),
            RejectCode::UnknownField
        );
        assert_eq!(
            code(r#"{"id":"b b","agent":"a","bundle":{"cpu":0.1},"duration":1,"limit":1}"#),
            RejectCode::Malformed
        );
        assert_eq!(
            code(r#"{"id":"b","agent":"a","bundle":{},"duration":1,"limit":1}"#),
            RejectCode::EmptyBundle
        );
        assert_eq!(
            code(r#"{"id":"b","agent":"a","bundle":{"gpu":0.1},"duration":1,"limit":1}"#),
            RejectCode::UnknownResource
        );
        assert_eq!(
            code(r#"{"id":"b","agent":"a","bundle":{"cpu":1.1},"duration":1,"limit":1}"#),
            RejectCode::InvalidShare
        );
        assert_eq!(
            code(r#"{"id":"b","agent":"a","bundle":{"cpu":0.1},"duration":0,"limit":1}"#),
            RejectCode::InvalidDuration
        );
        assert_eq!(
            code(r#"{"id":"b","agent":"a","bundle":{"cpu":0.1},"duration":1,"earliest_start":-3,"limit":1}"#),
            RejectCode::InvalidWindow
        );
        assert_eq!(
            code(r#"{"id":"b","agent":"a","bundle":{"cpu":0.1},"duration":1,"limit":"-1"}"#),
            RejectCode::InvalidAmount
        );
        assert_eq!(
            code(r#"{"id":"b","agent":"a","bundle":{"cpu":0.1,"cpu":0.2},"duration":1,"limit":1}"#),
            RejectCode::Malformed
        );
    }

    #[test]
    fn amounts_and_shares_are_refused_by_their_own_code() {
        let limit = |l: &str| {
            code(&format!(r#"{{"id":"b","agent":"a","bundle":{{"cpu":0.1}},"duration":1,"limit":{l}}}"#))
        };
        for bad in ["1e3", "\"NaN\"", "\"+1\"", "1.0000001", "-1", "18446744073709.551616", "\"\""] {
            assert_eq!(limit(bad), RejectCode::InvalidAmount, "{bad}");
        }
        assert_eq!(limit("true"), RejectCode::Malformed);
        assert_eq!(limit("[1]"), RejectCode::Malformed);
        let share = |s: &str| {
            code(&format!(r#"{{"id":"b","agent":"a","bundle":{{"cpu":{s}}},"duration":1,"limit":1}}"#))
        };
        for bad in ["1e-1", "\"abc\"", "0.10000000000000000001", "-0.5", "1.5"] {
            assert_eq!(share(bad), RejectCode::InvalidShare, "{bad}");
        }
        assert_eq!(share("null"), RejectCode::Malformed);
    }

    #[test]
    fn requests_round_trip_through_json() {
        let json =
            r#"{"id":"b","agent":"a","bundle":{"memory":"0.05","cpu":"0.1"},"duration":3,"limit":"2.5"}"#;
        let req = BidRequest::from_json(json.as_bytes()).unwrap();
        assert_eq!(serde_json::to_string(&req).unwrap(), json);
    }

    #[test]
    fn request_resolves() {
        let req = BidRequest::from_json(
            br#"{"id":"b","agent":"a","bundle":{"memory":"0.05","cpu":0.1},"duration":3,"latest_end":9,"limit":"2.5","good_for":2}"#,
        )
        .unwrap();
        let bid = req.to_bid(&resources(), None).unwrap();
        assert_eq!(bid.bundle.raw().collect::<Vec<_>>(), vec![(0, 100_000), (1, 50_000)]);
        assert_eq!(bid.latest_end, Some(Slot(9)));
        assert_eq!(bid.limit, "2.5".parse().unwrap());
        assert_eq!(bid.good_for, 2);
    }
}
