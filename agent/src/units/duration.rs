//! Durations written the way people write them: "250ms", "1s", "5m", "1h".
use std::{fmt, str::FromStr, time::Duration};

use serde::{de, Deserialize, Deserializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(Duration);

impl HumanDuration {
    pub const fn from_secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }
    pub const fn from_millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }
    pub fn get(self) -> Duration {
        self.0
    }
}

/// The longest duration the parser takes at all; each setting has its own, smaller bound
/// (config/validate.rs). Anything longer is a typo or an overflow attempt.
pub const CEILING: Duration = Duration::from_secs(365 * 24 * 3600);

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        if digits.is_empty() {
            return Err(format!(
                "`{s}` is not a duration: expected a number and a unit, like \"500ms\" or \"1s\""
            ));
        }
        let unit_ms: u64 = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "" => return Err(format!("`{s}` has no unit: write \"{s}s\" or \"{s}ms\"")),
            other => {
                return Err(format!(
                    "unknown unit `{other}` in `{s}`: use ms, s, m or h"
                ))
            }
        };
        // Digits too many for u64 overflow too: checked all the way.
        digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(unit_ms))
            .map(Duration::from_millis)
            .filter(|d| *d <= CEILING)
            .map(Self)
            .ok_or_else(|| format!("`{s}` is too long: no setting takes more than 8760h (a year)"))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0.as_millis())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(
            "250ms".parse::<HumanDuration>().unwrap().get(),
            Duration::from_millis(250)
        );
        assert_eq!(
            "2s".parse::<HumanDuration>().unwrap().get(),
            Duration::from_secs(2)
        );
        assert_eq!(
            "5m".parse::<HumanDuration>().unwrap().get(),
            Duration::from_secs(300)
        );
        assert_eq!(
            "1h".parse::<HumanDuration>().unwrap().get(),
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        assert!("5"
            .parse::<HumanDuration>()
            .unwrap_err()
            .contains("no unit"));
        assert!("5d"
            .parse::<HumanDuration>()
            .unwrap_err()
            .contains("unknown unit `d`"));
        assert!("fast"
            .parse::<HumanDuration>()
            .unwrap_err()
            .contains("not a duration"));
        for overflow in [
            "99999999999s",
            "4294967295h",
            "18446744073709551615ms",
            "18446744073709551616ms",
            "8761h",
        ] {
            assert!(
                overflow
                    .parse::<HumanDuration>()
                    .unwrap_err()
                    .contains("too long"),
                "{overflow}"
            );
        }
        assert_eq!(
            "8760h".parse::<HumanDuration>().unwrap().get(),
            CEILING,
            "the ceiling itself is taken"
        );
        assert!("ms"
            .parse::<HumanDuration>()
            .unwrap_err()
            .contains("not a duration"));
    }
}
