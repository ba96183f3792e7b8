//! [`Share`]: a fraction of one resource's full capacity, and [`Capacity`], what a slot offers.

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::fixed::{self, MICRO, micro_unit};

/// A fraction of a resource's full (idle-system) capacity: `0 < share <= 1`, at most six
/// decimal places, held exactly as millionths.
///
/// # Examples
///
/// ```
/// use capacity_auction::Share;
///
/// let tenth: Share = "0.1".parse()?;
/// assert_eq!(tenth.micros(), 100_000);
/// assert_eq!(tenth.to_string(), "0.1");
/// assert!("1.5".parse::<Share>().is_err());
/// # Ok::<(), capacity_auction::UnitError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Share(u32);

/// A malformed share, capacity or amount.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnitError(pub(crate) String);

impl Share {
    /// The whole resource.
    pub const FULL: Share = Share(MICRO as u32);

    /// The share of `micros` millionths.
    ///
    /// # Errors
    ///
    /// When `micros` is zero or above one million.
    pub fn from_micros(micros: u32) -> Result<Share, UnitError> {
        if micros == 0 || u64::from(micros) > MICRO {
            return Err(UnitError(format!("a share is above 0 and at most 1, got {micros} millionths")));
        }
        Ok(Share(micros))
    }

    /// The share `d`.
    ///
    /// # Errors
    ///
    /// When `d` is not in `(0, 1]` or has more than six decimal places.
    pub fn from_decimal(d: Decimal) -> Result<Share, UnitError> {
        match fixed::to_micro(d) {
            Some(m) if m > 0 && m <= i128::from(MICRO) => Ok(Share(m as u32)),
            Some(_) => Err(UnitError(format!("a share is above 0 and at most 1, got {d}"))),
            None => Err(UnitError(format!("a share has at most 6 decimal places, got {d}"))),
        }
    }

    /// Millionths of the full capacity.
    pub const fn micros(self) -> u32 {
        self.0
    }

    /// The share as a decimal.
    pub fn to_decimal(self) -> Decimal {
        fixed::from_micro(i128::from(self.0))
    }
}

impl std::str::FromStr for Share {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Share, UnitError> {
        let micros = fixed::parse_micros(s).map_err(|e| UnitError(e.to_string()))?;
        Share::from_decimal(fixed::from_micro(i128::from(micros)))
    }
}

impl fmt::Display for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fixed::fmt_micro(u64::from(self.0), f)
    }
}

impl Serialize for Share {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Share {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Share, D::Error> {
        let d = fixed::deserialize_decimal(d)?;
        Share::from_decimal(d).map_err(serde::de::Error::custom)
    }
}

/// What one slot of a resource offers: a fraction of full capacity in `[0, 1]` (0 is an outage).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Capacity(u32);

impl Capacity {
    /// Full capacity, the default of every slot.
    pub const FULL: Capacity = Capacity(MICRO as u32);
    /// No capacity: an outage.
    pub const NONE: Capacity = Capacity(0);

    /// The capacity `d`.
    ///
    /// # Errors
    ///
    /// When `d` is not in `[0, 1]` or has more than six decimal places.
    pub fn from_decimal(d: Decimal) -> Result<Capacity, UnitError> {
        match fixed::to_micro(d) {
            Some(m) if (0..=i128::from(MICRO)).contains(&m) => Ok(Capacity(m as u32)),
            Some(_) => Err(UnitError(format!("a capacity is in [0, 1], got {d}"))),
            None => Err(UnitError(format!("a capacity has at most 6 decimal places, got {d}"))),
        }
    }

    /// The capacity of `micros` millionths.
    ///
    /// # Errors
    ///
    /// When `micros` is above one million.
    pub fn from_micros(micros: u32) -> Result<Capacity, UnitError> {
        if u64::from(micros) > MICRO {
            return Err(UnitError(format!("a capacity is at most 1, got {micros} millionths")));
        }
        Ok(Capacity(micros))
    }

    /// Millionths of the full capacity.
    pub const fn micros(self) -> u32 {
        self.0
    }

    /// The capacity as a decimal.
    pub fn to_decimal(self) -> Decimal {
        fixed::from_micro(i128::from(self.0))
    }
}

impl std::str::FromStr for Capacity {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Capacity, UnitError> {
        let micros = fixed::parse_micros(s).map_err(|e| UnitError(e.to_string()))?;
        Capacity::from_decimal(fixed::from_micro(i128::from(micros)))
    }
}

impl fmt::Display for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fixed::fmt_micro(u64::from(self.0), f)
    }
}

impl Serialize for Capacity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Capacity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Capacity, D::Error> {
        let d = fixed::deserialize_decimal(d)?;
        Capacity::from_decimal(d).map_err(serde::de::Error::custom)
    }
}

micro_unit! {
    /// A volume of capacity over time: shares times slots (`0.5` of a resource for 4 slots is
    /// `2` capacity-slots), exact to the millionth.
    CapacitySlots, "a volume"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_bounds() {
        assert_eq!("1".parse::<Share>().unwrap(), Share::FULL);
        assert!("0".parse::<Share>().is_err());
        assert!("-0.1".parse::<Share>().is_err());
        assert!("1.000001".parse::<Share>().is_err());
        assert!("0.0000001".parse::<Share>().is_err());
        assert_eq!("0.000001".parse::<Share>().unwrap().micros(), 1);
        assert_eq!("0.7".parse::<Share>().unwrap().to_string(), "0.7");
    }

    #[test]
    fn capacity_allows_zero() {
        assert_eq!("0".parse::<Capacity>().unwrap(), Capacity::NONE);
        assert!("1.1".parse::<Capacity>().is_err());
        assert_eq!("0.5".parse::<Capacity>().unwrap().micros(), 500_000);
    }

    #[test]
    fn json_accepts_strings_and_numbers() {
        let a: Share = serde_json::from_str("\"0.25\"").unwrap();
        let b: Share = serde_json::from_str("0.25").unwrap();
        assert_eq!(a, b);
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"0.25\"");
        // Read as written, not through a float (which would make both of these 0.1).
        assert!(serde_json::from_str::<Share>("0.10000000000000000001").is_err());
        assert!(serde_json::from_str::<Share>("1e-1").is_err());
        assert!(serde_json::from_str::<Capacity>("\" 0.5\"").is_err());
    }
}
