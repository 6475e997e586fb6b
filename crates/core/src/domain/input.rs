//! The rules every client's text and numbers pass, whichever resource they are for: printable text and
//! whole numbers as JSON Schema states them.

use serde::Deserialize;

/// `is_printable_text` as the API description states it (a JSON Schema pattern).
pub const PRINTABLE_PATTERN: &str = "^[^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*$";
/// The same, for text that must not be blank (it is trimmed, then must keep a character).
pub const PRINTABLE_NONBLANK_PATTERN: &str =
    "^(?=.*\\S)[^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*$";

/// The integer a JSON number stands for, written `3` or `3.0` (JSON Schema's `integer` admits both);
/// `None` for a fraction or a float too large to be exact. The one rule for "whole number" in a body.
pub fn whole_number(value: &serde_json::Number) -> Option<i64> {
    value.as_i64().or_else(|| whole_float(value.as_f64()?))
}

/// `v` as an integer when it is whole and exact (below 2^53).
pub fn whole_float(v: f64) -> Option<i64> {
    (v.fract() == 0.0 && v.abs() < 9.0e15).then_some(v as i64)
}

/// Reads a whole number (`whole_number`) within `i32`.
pub fn whole_i32<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    use serde::de::Error;
    let value = serde_json::Number::deserialize(d)?;
    whole_number(&value)
        .and_then(|n| i32::try_from(n).ok())
        .ok_or_else(|| D::Error::custom(format!("expected a whole number within 32 bits, got {value}")))
}

pub fn whole_i32_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
    use serde::Deserialize;
    Option::<serde_json::Value>::deserialize(d)?
        .map(|v| whole_i32(v).map_err(serde::de::Error::custom))
        .transpose()
}

/// The one rule for free text a client sends (names, categories, ids, labels): no control characters
/// (PostgreSQL refuses NUL, and none belongs in a name) and no bidirectional overrides or isolates
/// (U+202A..U+202E, U+2066..U+2069), which make a text display as something other than what it is.
pub fn is_printable_text(text: &str) -> bool {
    !text.chars().any(|c| c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'))
}
