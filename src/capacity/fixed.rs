//! Decimal <-> micro-unit conversion shared by every fixed-point unit of the crate.
//!
//! Shares, capacities, credits and prices all carry at most six decimal places, so each is an
//! integer count of millionths inside. Parsing goes through [`Decimal`] so that `"0.1"` is exactly
//! 100 000 millionths, never the binary float nearest to a tenth.

use std::fmt;

use rust_decimal::Decimal;
use serde::de::{self, Visitor};

/// Millionths in one unit.
pub(crate) const MICRO: u64 = 1_000_000;

/// The value of `d` in millionths, if it has at most six decimal places and fits an `i128`.
pub(crate) fn to_micro(d: Decimal) -> Option<i128> {
    let d = d.normalize();
    let scale = d.scale();
    if scale > 6 {
        return None;
    }
    d.mantissa().checked_mul(10i128.pow(6 - scale))
}

/// `micro` millionths as a decimal with trailing zeros removed (`1_500_000` -> `1.5`).
pub(crate) fn from_micro(micro: i128) -> Decimal {
    Decimal::from_i128_with_scale(micro, 6).normalize()
}

/// Writes `micro` millionths as a plain decimal (`100000` -> `0.1`).
pub(crate) fn fmt_micro(micro: u64, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let whole = micro / MICRO;
    let frac = micro % MICRO;
    if frac == 0 {
        return write!(f, "{whole}");
    }
    let mut digits = format!("{frac:06}");
    while digits.ends_with('0') {
        digits.pop();
    }
    write!(f, "{whole}.{digits}")
}

/// Deserializes a decimal given either as a JSON string (`"0.1"`) or a number (`0.1`).
///
/// Numbers are read through their shortest decimal spelling, which is what the sender wrote.
pub(crate) fn deserialize_decimal<'de, D: de::Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    d.deserialize_any(DecimalVisitor)
}

struct DecimalVisitor;

impl Visitor<'_> for DecimalVisitor {
    type Value = Decimal;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a decimal number or a string holding one")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Decimal, E> {
        parse_decimal(v).ok_or_else(|| E::custom(format!("`{v}` is not a decimal number")))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Decimal, E> {
        Ok(Decimal::from(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Decimal, E> {
        Ok(Decimal::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Decimal, E> {
        if !v.is_finite() {
            return Err(E::custom("a decimal must be finite"));
        }
        // `{}` prints the shortest spelling that reads back as `v`: what the sender wrote.
        self.visit_str(&format!("{v}"))
    }
}

/// Parses a plain decimal (`"12"`, `"-0.5"`, `"1e-3"` is refused: money has no exponents).
pub(crate) fn parse_decimal(s: &str) -> Option<Decimal> {
    let s = s.trim();
    if s.is_empty() || s.len() > 40 || s.contains(['e', 'E', '_']) {
        return None;
    }
    s.parse::<Decimal>().ok()
}

/// Defines a fixed-point newtype of millionths with parsing, display and serde as a decimal.
macro_rules! micro_unit {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(u64);

        impl $name {
            /// Nothing.
            pub const ZERO: $name = $name(0);
            /// The largest amount representable.
            pub const MAX: $name = $name(u64::MAX);

            /// `micros` millionths.
            pub const fn from_micros(micros: u64) -> $name {
                $name(micros)
            }

            /// Whole units.
            ///
            /// # Panics
            ///
            /// When `units` millionths overflow `u64`.
            pub const fn from_units(units: u64) -> $name {
                match units.checked_mul($crate::capacity::fixed::MICRO) {
                    Some(m) => $name(m),
                    None => panic!(concat!($what, " overflow")),
                }
            }

            /// Millionths.
            pub const fn micros(self) -> u64 {
                self.0
            }

            /// The exact decimal value.
            pub fn to_decimal(self) -> rust_decimal::Decimal {
                $crate::capacity::fixed::from_micro(i128::from(self.0))
            }

            /// The amount `d`.
            ///
            /// # Errors
            ///
            /// When `d` is negative, has more than six decimal places or is too large.
            pub fn from_decimal(d: rust_decimal::Decimal) -> Result<$name, $crate::capacity::UnitError> {
                match $crate::capacity::fixed::to_micro(d) {
                    Some(m) if m < 0 => Err($crate::capacity::UnitError(format!(concat!($what, " is never negative, got {}"), d))),
                    Some(m) => u64::try_from(m)
                        .map($name)
                        .map_err(|_| $crate::capacity::UnitError(format!(concat!($what, " {} is too large"), d))),
                    None => Err($crate::capacity::UnitError(format!(concat!($what, " has at most 6 decimal places, got {}"), d))),
                }
            }

            /// `self + other`, or `None` on overflow.
            pub const fn checked_add(self, other: $name) -> Option<$name> {
                match self.0.checked_add(other.0) {
                    Some(m) => Some($name(m)),
                    None => None,
                }
            }

            /// `self - other`, or `None` below zero.
            pub const fn checked_sub(self, other: $name) -> Option<$name> {
                match self.0.checked_sub(other.0) {
                    Some(m) => Some($name(m)),
                    None => None,
                }
            }

            /// `self - other`, or zero below zero.
            pub const fn saturating_sub(self, other: $name) -> $name {
                $name(self.0.saturating_sub(other.0))
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::capacity::UnitError;

            fn from_str(s: &str) -> Result<$name, $crate::capacity::UnitError> {
                let d = $crate::capacity::fixed::parse_decimal(s)
                    .ok_or_else(|| $crate::capacity::UnitError(format!("`{s}` is not a decimal number")))?;
                $name::from_decimal(d)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                $crate::capacity::fixed::fmt_micro(self.0, f)
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Display::fmt(self, f)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                let d = $crate::capacity::fixed::deserialize_decimal(d)?;
                $name::from_decimal(d).map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use micro_unit;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micro_round_trip() {
        let d = parse_decimal("0.1").unwrap();
        assert_eq!(to_micro(d), Some(100_000));
        assert_eq!(to_micro(parse_decimal("12.500000").unwrap()), Some(12_500_000));
        assert_eq!(to_micro(parse_decimal("0.0000001").unwrap()), None);
        assert_eq!(from_micro(1_500_000).to_string(), "1.5");
        assert_eq!(parse_decimal("1e3"), None);
        assert_eq!(parse_decimal(""), None);
    }

    #[test]
    fn numbers_read_as_written() {
        let d: Decimal = deserialize_decimal(&mut serde_json::Deserializer::from_str("0.1")).unwrap();
        assert_eq!(d.to_string(), "0.1");
        let d: Decimal = deserialize_decimal(&mut serde_json::Deserializer::from_str("\"2.25\"")).unwrap();
        assert_eq!(to_micro(d), Some(2_250_000));
    }
}
