//! The one duration grammar of every duration option of `procflow` and
//! `procflow-snap`: a non-negative decimal number with an optional unit,
//! `ns`, `us`, `ms`, `s`, `m` (or `min`) or `h`; a bare number is seconds.
//! `250ms`, `30s`, `1.5s`, `10m`, `1h` and `600` are all durations.

use std::time::Duration;

/// Largest accepted duration: 10^18 ns (about 31 years), so that every
/// duration also fits an `i64` count of nanoseconds.
pub const MAX_NS: u64 = 1_000_000_000_000_000_000;

/// Why a text is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// No number where one was expected.
    #[error("{0:?} is not a duration (e.g. 30s, 500ms, 2m)")]
    NotANumber(String),
    /// A unit other than the known ones.
    #[error("{text:?}: unknown unit {unit:?} (use ns, us, ms, s, m, h)")]
    UnknownUnit {
        /// The whole text.
        text: String,
        /// The unit found.
        unit: String,
    },
    /// Larger than [`MAX_NS`].
    #[error("{0:?} is out of range")]
    OutOfRange(String),
}

/// Parses a duration (see the module documentation). Surrounding white
/// space is ignored.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let s = text.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let ns_per_unit: u64 = match unit {
        "" | "s" => 1_000_000_000,
        "ms" => 1_000_000,
        "us" => 1_000,
        "ns" => 1,
        "m" | "min" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => {
            return Err(DurationError::UnknownUnit {
                text: s.to_string(),
                unit: unit.to_string(),
            })
        }
    };
    let not_a_number = || DurationError::NotANumber(s.to_string());
    let out_of_range = || DurationError::OutOfRange(s.to_string());
    let ns = if num.contains('.') {
        // Fractions: f64 arithmetic, truncated to whole nanoseconds.
        let v: f64 = num.parse().map_err(|_| not_a_number())?;
        let ns = v * ns_per_unit as f64;
        if !ns.is_finite() || !(0.0..=MAX_NS as f64).contains(&ns) {
            return Err(out_of_range());
        }
        ns as u64
    } else {
        let v: u64 = num.parse().map_err(|e: std::num::ParseIntError| {
            if *e.kind() == std::num::IntErrorKind::PosOverflow {
                out_of_range()
            } else {
                not_a_number()
            }
        })?;
        v.checked_mul(ns_per_unit)
            .filter(|ns| *ns <= MAX_NS)
            .ok_or_else(out_of_range)?
    };
    Ok(Duration::from_nanos(ns))
}

/// Formats a duration the shortest way [`parse_duration`] reads back
/// exactly: `250ms`, `2s`, `10m`, `1h`, `1500us`.
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    let units: [(u128, &str); 6] = [
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
        (1, "ns"),
    ];
    for (size, name) in units {
        if ns != 0 && ns.is_multiple_of(size) {
            return format!("{}{name}", ns / size);
        }
    }
    "0s".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Result<Duration, DurationError> {
        Ok(Duration::from_millis(n))
    }

    #[test]
    fn grammar() {
        assert_eq!(parse_duration("250ms"), ms(250));
        assert_eq!(parse_duration("30s"), ms(30_000));
        assert_eq!(parse_duration("30"), ms(30_000));
        assert_eq!(parse_duration("10m"), ms(600_000));
        assert_eq!(parse_duration("10min"), ms(600_000));
        assert_eq!(parse_duration("1h"), ms(3_600_000));
        assert_eq!(parse_duration("1.5s"), ms(1_500));
        assert_eq!(parse_duration("0.1s"), ms(100));
        assert_eq!(parse_duration(" 2m "), ms(120_000));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse_duration("0"), ms(0));
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "s",
            "-1s",
            "abc",
            "1.2.3s",
            ".",
            "5 parsecs",
            "1d",
            "1e3s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        assert!(matches!(
            parse_duration("5 parsecs"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("99999999999999999999h"),
            Err(DurationError::OutOfRange(_))
        ));
        assert!(matches!(
            parse_duration("400000h"),
            Err(DurationError::OutOfRange(_))
        ));
        assert_eq!(
            parse_duration("5 parsecs").unwrap_err().to_string(),
            "\"5 parsecs\": unknown unit \" parsecs\" (use ns, us, ms, s, m, h)"
        );
    }

    #[test]
    fn formats_back() {
        for d in ["250ms", "2s", "10m", "1h", "1500us", "7ns", "0s"] {
            let parsed = parse_duration(d).unwrap();
            assert_eq!(format_duration(parsed), d);
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
    }
}
