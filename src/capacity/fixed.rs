//! Decimal <-> micro-unit conversion shared by every fixed-point unit of the crate.
//!
//! Shares, capacities, credits and prices all carry at most six decimal places, so each is an
//! integer count of millionths inside. A written decimal, in a string or a JSON number, is read
//! by one strict grammar straight into millionths ([`text`]), through serde without ever
//! becoming a float ([`read`]): `"0.1"` and `0.1` are exactly 100 000 millionths, never the
//! binary float nearest to a tenth.

mod read;
mod text;

use std::fmt;

use rust_decimal::Decimal;

pub(crate) use read::{deserialize_decimal, deserialize_micros};
pub(crate) use text::{parse_micros, parse_plain};

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

/// Writes `micro` millionths as a plain decimal (`100000` -> `0.1`), trailing zeros removed.
/// Every amount, share and price in every event and reply goes through here, so it writes the
/// digits into a buffer of its own rather than allocating.
pub(crate) fn fmt_micro(micro: u64, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    // `u64::MAX` millionths is 14 whole digits, a point and 6 decimals.
    let mut text = [0u8; 21];
    let mut at = text.len();
    let mut put = |byte: u8| {
        at -= 1;
        text[at] = byte;
    };
    let digit = |n: u64| b'0' + (n % 10) as u8;
    let (mut whole, mut frac) = (micro / MICRO, micro % MICRO);
    if frac != 0 {
        let mut places = 6;
        while frac % 10 == 0 {
            frac /= 10;
            places -= 1;
        }
        for _ in 0..places {
            put(digit(frac));
            frac /= 10;
        }
        put(b'.');
    }
    loop {
        put(digit(whole));
        whole /= 10;
        if whole == 0 {
            break;
        }
    }
    f.write_str(std::str::from_utf8(&text[at..]).expect("ASCII digits"))
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
                $crate::capacity::fixed::parse_micros(s)
                    .map($name)
                    .map_err(|e| $crate::capacity::UnitError(e.to_string()))
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
                $crate::capacity::fixed::deserialize_micros(d)?.map($name).map_err(serde::de::Error::custom)
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
        assert_eq!(to_micro(Decimal::new(1, 1)), Some(100_000));
        assert_eq!(to_micro(Decimal::new(125, 1)), Some(12_500_000));
        assert_eq!(to_micro(Decimal::new(1, 7)), None);
        assert_eq!(to_micro(Decimal::new(10_000_000, 7)), Some(1_000_000));
        assert_eq!(from_micro(1_500_000).to_string(), "1.5");
        assert_eq!(from_micro(i128::from(u64::MAX)).to_string(), "18446744073709.551615");
    }

    #[test]
    fn millionths_are_written_as_their_decimal() {
        // Every unit displays through `fmt_micro`.
        let written = |micro: u64| crate::Credits::from_micros(micro).to_string();
        for (micro, text) in [
            (0, "0"),
            (1, "0.000001"),
            (100_000, "0.1"),
            (1_000_000, "1"),
            (1_050_000, "1.05"),
            (u64::MAX, "18446744073709.551615"),
        ] {
            assert_eq!(written(micro), text);
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Values of every size, and values with trailing zeros among their decimals.
            for micro in [x, x >> 20, x >> 40, (x >> 40) * 1000, (x >> 30) / MICRO * MICRO] {
                let text = written(micro);
                assert_eq!(text, from_micro(i128::from(micro)).to_string(), "{micro}");
                assert_eq!(parse_micros(&text).unwrap(), micro, "{text}");
            }
        }
    }

    #[test]
    fn numbers_read_as_written() {
        let d: Decimal = deserialize_decimal(&mut serde_json::Deserializer::from_str("0.1")).unwrap();
        assert_eq!(d.to_string(), "0.1");
        let d: Decimal = deserialize_decimal(&mut serde_json::Deserializer::from_str("\"2.25\"")).unwrap();
        assert_eq!(to_micro(d), Some(2_250_000));
        let d = deserialize_decimal(&mut serde_json::Deserializer::from_str("12345678901.123456")).unwrap();
        assert_eq!(d.to_string(), "12345678901.123456");
        let e = deserialize_decimal(&mut serde_json::Deserializer::from_str("1e3")).unwrap_err();
        assert!(e.to_string().contains("exponent"), "{e}");
    }
}
