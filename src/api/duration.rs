//! Durations written as strings such as `30s`, `5m` or `1h30m`.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

/// The pattern the CRD schema enforces for every duration field.
///
/// It accepts `0` or a sequence of `<number><unit>` pairs, where the number may have a fraction and
/// the unit is one of `ms`, `s`, `m`, `h` (the subset of Go's `time.ParseDuration` that Argo
/// Rollouts users write).
pub const DURATION_PATTERN: &str = r"^(0|([0-9]+(\.[0-9]+)?(ms|s|m|h))+)$";

/// A duration as users write it in a manifest, for example `30s`, `5m`, `1h30m` or `1.5h`.
///
/// Deserialization keeps any string so that one malformed field cannot make a whole object
/// unreadable for a controller; the API server rejects malformed values through the schema
/// pattern, and [`DurationString::to_duration`] reports them to controllers as an error.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(transparent)]
pub struct DurationString(String);

/// Why a duration string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The string was empty.
    #[error("duration is empty")]
    Empty,
    /// The string does not follow the `<number><unit>` form.
    #[error("invalid duration {input:?}: {reason}")]
    Invalid {
        /// The string as written.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The duration is too long to represent.
    #[error("duration {input:?} is too long")]
    Overflow {
        /// The string as written.
        input: String,
    },
}

impl DurationString {
    /// Wraps a string without checking it; use [`DurationString::to_duration`] to validate.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Formats a [`Duration`] in the shortest whole-unit form this type parses back exactly
    /// (`90s` becomes `90s`, `120s` becomes `2m`, `1500ms` stays `1500ms`).
    pub fn from_duration(duration: Duration) -> Self {
        let millis = duration.as_millis();
        let text = if millis == 0 {
            "0".to_owned()
        } else if millis.is_multiple_of(3_600_000) {
            format!("{}h", millis / 3_600_000)
        } else if millis.is_multiple_of(60_000) {
            format!("{}m", millis / 60_000)
        } else if millis.is_multiple_of(1_000) {
            format!("{}s", millis / 1_000)
        } else {
            format!("{millis}ms")
        };
        Self(text)
    }

    /// The string as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses the string into a [`Duration`].
    pub fn to_duration(&self) -> Result<Duration, DurationError> {
        parse_duration(&self.0)
    }
}

impl fmt::Display for DurationString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for DurationString {
    type Err = DurationError;

    /// Parses and validates, unlike [`DurationString::new`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s)?;
        Ok(Self(s.to_owned()))
    }
}

impl From<Duration> for DurationString {
    fn from(duration: Duration) -> Self {
        Self::from_duration(duration)
    }
}

impl JsonSchema for DurationString {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "DurationString".into()
    }

    fn json_schema(_generator: &mut SchemaGenerator) -> Schema {
        let mut schema = serde_json::Map::new();
        schema.insert("type".into(), "string".into());
        schema.insert("pattern".into(), DURATION_PATTERN.into());
        Schema::from(schema)
    }
}

/// Parses `0` or a sequence of `<number><unit>` pairs (`ms`, `s`, `m`, `h`) into a [`Duration`].
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    if input.is_empty() {
        return Err(DurationError::Empty);
    }
    if input == "0" {
        return Ok(Duration::ZERO);
    }
    let invalid = |reason| DurationError::Invalid {
        input: input.to_owned(),
        reason,
    };
    let overflow = || DurationError::Overflow {
        input: input.to_owned(),
    };

    // Work in whole nanoseconds (u128) so fractions such as `1.5h` are exact and overflow is
    // detected before converting to `Duration`.
    let mut total_nanos: u128 = 0;
    let mut rest = input;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| invalid("missing unit"))?;
        let (number, after_number) = rest.split_at(number_len);
        if number.is_empty() {
            return Err(invalid("expected a number"));
        }
        let unit_len = after_number
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after_number.len());
        let (unit, after_unit) = after_number.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(invalid("unit must be one of ms, s, m, h")),
        };
        let (whole, fraction) = match number.split_once('.') {
            Some((whole, fraction)) => (whole, fraction),
            None => (number, ""),
        };
        if whole.is_empty() || (number.contains('.') && fraction.is_empty()) {
            return Err(invalid("malformed number"));
        }
        let whole: u128 = whole.parse().map_err(|_| invalid("malformed number"))?;
        let mut nanos = whole.checked_mul(unit_nanos).ok_or_else(overflow)?;
        // Digits beyond nanosecond precision cannot change the result, so they are ignored
        // rather than allowed to overflow the scale.
        let mut scale = unit_nanos;
        for digit in fraction.chars() {
            let digit = digit
                .to_digit(10)
                .ok_or_else(|| invalid("malformed number"))?;
            scale /= 10;
            nanos = nanos
                .checked_add(u128::from(digit) * scale)
                .ok_or_else(overflow)?;
        }
        total_nanos = total_nanos.checked_add(nanos).ok_or_else(overflow)?;
        rest = after_unit;
    }

    let secs = u64::try_from(total_nanos / 1_000_000_000).map_err(|_| overflow())?;
    let subsec = u32::try_from(total_nanos % 1_000_000_000).map_err(|_| overflow())?;
    Ok(Duration::new(secs, subsec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_users_write() {
        let cases: &[(&str, Duration)] = &[
            ("0", Duration::ZERO),
            ("1s", Duration::from_secs(1)),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
            ("1h30m", Duration::from_secs(5400)),
            ("1.5h", Duration::from_secs(5400)),
            ("250ms", Duration::from_millis(250)),
            ("1m0.5s", Duration::from_millis(60_500)),
            ("0s", Duration::ZERO),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_duration(input), Ok(*expected), "{input}");
        }
    }

    #[test]
    fn rejects_malformed_durations() {
        let cases = [
            "", "30", "s", "5 m", "1d", "-1s", "1.s", ".5s", "1..5s", "1h 30m", "10us",
        ];
        for input in cases {
            assert!(
                parse_duration(input).is_err(),
                "{input:?} should be rejected"
            );
        }
    }

    #[test]
    fn rejects_durations_too_long_to_represent() {
        let input = format!("{}h", u128::MAX / 3);
        assert!(matches!(
            parse_duration(&input),
            Err(DurationError::Overflow { .. })
        ));
    }

    #[test]
    fn formats_durations_in_the_largest_exact_unit() {
        let cases = [
            (Duration::ZERO, "0"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_millis(1500), "1500ms"),
        ];
        for (duration, expected) in cases {
            let formatted = DurationString::from_duration(duration);
            assert_eq!(formatted.as_str(), expected);
            assert_eq!(formatted.to_duration(), Ok(duration));
        }
    }

    #[test]
    fn serializes_as_a_plain_string() {
        let duration: DurationString = serde_json::from_str("\"30s\"").unwrap();
        assert_eq!(duration.to_duration(), Ok(Duration::from_secs(30)));
        assert_eq!(serde_json::to_string(&duration).unwrap(), "\"30s\"");
    }
}
