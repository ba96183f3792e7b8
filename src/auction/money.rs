//! [`Credits`] and [`Price`]: exact fixed-point money, six decimal places.

use crate::capacity::fixed::{MICRO, micro_unit};

micro_unit! {
    /// An amount of credits: never negative, at most six decimal places, exact.
    ///
    /// Held as millionths in a `u64` (up to 18446744073709.551615 credits); converts to and from
    /// [`rust_decimal::Decimal`] at every boundary. Text, and JSON as a string or a number, is
    /// read exactly as written, never through a float: digits, then optionally `.` and 1 to 6
    /// digits. Anything else is refused: a seventh decimal place (even `1.0000000`), a sign,
    /// an exponent, spaces, `NaN`, more than the maximum. Written as a string.
    ///
    /// # Examples
    ///
    /// ```
    /// use capacity_auction::Credits;
    ///
    /// let c: Credits = "12.5".parse()?;
    /// assert_eq!(c.micros(), 12_500_000);
    /// assert_eq!(c.to_string(), "12.5");
    /// assert!("-1".parse::<Credits>().is_err());
    /// assert!("0.0000001".parse::<Credits>().is_err());
    /// let exact: Credits = serde_json::from_str("12345678901.123456").unwrap();
    /// assert_eq!(exact.micros(), 12_345_678_901_123_456);
    /// assert_eq!(serde_json::to_string(&exact).unwrap(), r#""12345678901.123456""#);
    /// assert!(serde_json::from_str::<Credits>("1e3").is_err());
    /// # Ok::<(), capacity_auction::UnitError>(())
    /// ```
    Credits, "credits"
}

micro_unit! {
    /// A price: credits for the full capacity of one resource for one slot, six decimals.
    Price, "a price"
}

/// `share` millionths of a resource for one slot at `price`, in 10^-12 credits: exact.
pub(crate) const fn pico_cost(share_micros: u64, price: Price) -> u128 {
    share_micros as u128 * price.micros() as u128
}

/// Credits worth at least `picos` 10^-12 credits (rounded up to the millionth).
pub(crate) fn credits_ceil(picos: u128) -> Credits {
    let micros = picos.div_ceil(u128::from(MICRO));
    Credits::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    #[test]
    fn exact_arithmetic() {
        let a: Credits = "0.1".parse().unwrap();
        let b: Credits = "0.2".parse().unwrap();
        assert_eq!(a.checked_add(b).unwrap().to_string(), "0.3");
        assert_eq!(a.checked_sub(b), None);
        assert_eq!(Credits::from_units(50).to_decimal(), Decimal::from(50));
        assert_eq!(credits_ceil(1), Credits::from_micros(1));
        assert_eq!(credits_ceil(2_000_000), Credits::from_micros(2));
    }

    #[test]
    fn json() {
        let c: Credits = serde_json::from_str("50").unwrap();
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"50\"");
        let c: Credits = serde_json::from_str("\"0.000001\"").unwrap();
        assert_eq!(c.micros(), 1);
        assert!(serde_json::from_str::<Credits>("-2").is_err());
        assert!(serde_json::from_str::<Credits>("\"abc\"").is_err());
    }
}
