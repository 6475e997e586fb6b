//! Money is `rust_decimal::Decimal` end to end (`NUMERIC(12,2)` in PostgreSQL). JSON shows it as a number
//! (`99.99`): the `serde-float` feature writes the shortest decimal text of the value, which is exact for any
//! amount with two decimals and up to 15 significant digits, the only amounts this service stores.

use rust_decimal::{Decimal, RoundingStrategy};

/// The largest amount a `NUMERIC(12,2)` column holds.
pub const MAX_AMOUNT: Decimal = Decimal::from_parts(3_567_587_327, 232, 0, false, 2);

/// Rounds to cents, half away from zero (the rule shoppers expect: 0.125 -> 0.13).
pub fn round_cents(amount: Decimal) -> Decimal {
    amount.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

/// Reads money from a request's JSON text itself (a number, or a string holding one), never through `f64`:
/// `11.999999999999999999` stays exactly that (and is then refused for its decimals), where a float would
/// have made it `12.0`. Use with `#[serde(deserialize_with = "money::from_json_text")]`, or `..._opt` with
/// `#[serde(default)]` for an optional field.
pub fn from_json_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    from_json_text_opt(d)?
        .ok_or_else(|| serde::de::Error::custom("expected an amount such as 19.99, got null"))
}

pub fn from_json_text_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    use serde::{de::Error, Deserialize};
    let raw = <Box<serde_json::value::RawValue>>::deserialize(d)?;
    let text = raw.get().trim();
    if text == "null" {
        return Ok(None);
    }
    let text = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(text);
    Decimal::from_str_exact(text)
        .or_else(|_| Decimal::from_scientific(text))
        .map(Some)
        .map_err(|_| D::Error::custom(format!("expected an amount such as 19.99, got {text}")))
}

/// Checks an amount a client sent (a total it saw): not negative, at most two decimals, within range.
pub fn validate_amount(field: &str, amount: Decimal) -> Result<(), String> {
    if amount < Decimal::ZERO {
        return Err(format!("{field} must not be negative"));
    }
    within_cents_and_range(field, amount)
}

/// Checks a price a client sent: positive, at most two decimals, within the column's range.
pub fn validate_price(field: &str, price: Decimal) -> Result<(), String> {
    if price <= Decimal::ZERO {
        return Err(format!("{field} must be greater than 0"));
    }
    within_cents_and_range(field, price)
}

/// The rules every amount shares: whole cents, and what `NUMERIC(12,2)` holds.
fn within_cents_and_range(field: &str, amount: Decimal) -> Result<(), String> {
    if amount.normalize().scale() > 2 {
        return Err(format!("{field} must have at most 2 decimal places"));
    }
    if amount > MAX_AMOUNT {
        return Err(format!("{field} must be at most {MAX_AMOUNT}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn max_amount_is_the_numeric_12_2_limit() {
        assert_eq!(MAX_AMOUNT, dec!(9999999999.99));
    }

    #[test]
    fn rounds_half_away_from_zero() {
        assert_eq!(round_cents(dec!(0.125)), dec!(0.13));
        assert_eq!(round_cents(dec!(0.124)), dec!(0.12));
    }

    #[test]
    fn json_round_trip_is_exact_and_numeric() {
        let v = dec!(99.99);
        let text = serde_json::to_string(&v).unwrap();
        assert_eq!(text, "99.99");
        let back: Decimal = serde_json::from_str("19.99").unwrap();
        assert_eq!(back, dec!(19.99));
        let big: Decimal = serde_json::from_str("9999999999.99").unwrap();
        assert_eq!(big, dec!(9999999999.99));
    }

    #[test]
    fn amounts_are_read_from_the_json_text_never_through_a_float() {
        #[derive(serde::Deserialize)]
        struct Body {
            #[serde(deserialize_with = "from_json_text")]
            price: Decimal,
        }
        let read = |json: &str| serde_json::from_str::<Body>(json).map(|b| b.price);
        assert_eq!(read(r#"{"price": 11.999999999999999999}"#).unwrap(), dec!(11.999999999999999999));
        assert!(validate_price("price", read(r#"{"price": 11.999999999999999999}"#).unwrap()).is_err());
        assert_eq!(read(r#"{"price": "19.99"}"#).unwrap(), dec!(19.99));
        assert_eq!(read(r#"{"price": 1e2}"#).unwrap(), dec!(100));
        assert!(read(r#"{"price": true}"#).is_err());
        assert!(read(r#"{"price": "cheap"}"#).is_err());
    }

    #[test]
    fn validates_prices() {
        assert!(validate_price("price", dec!(0)).is_err());
        assert!(validate_price("price", dec!(-1)).is_err());
        assert!(validate_price("price", dec!(1.234)).is_err());
        assert!(validate_price("price", dec!(1.50)).is_ok());
        assert!(validate_price("price", dec!(10000000000)).is_err());
    }
}
