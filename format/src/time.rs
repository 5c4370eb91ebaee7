//! Civil time of both binaries: nanoseconds or seconds since the Unix epoch
//! written as UTC, over one date algorithm.
//!
//! The date comes from Howard Hinnant's `civil_from_days` (proleptic
//! Gregorian calendar), ten integer lines that cover the whole `i64` range;
//! kept by hand because it is the per-flow hot path of the flows CSV
//! (two timestamps per row) and needs no time zone database.

/// Formats nanoseconds since the Unix epoch as RFC 3339 UTC with exactly nine
/// fractional digits, e.g. `2026-11-28T15:42:01.123456789Z`.
///
/// Works for the whole `i64` range (years 1677 to 2262), negative values
/// included.
pub fn rfc3339_ns(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let frac = ns.rem_euclid(1_000_000_000);
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{frac:09}Z")
}

/// Formats seconds since the epoch as `20261128T154201Z` (the recorder's
/// capture file names).
pub fn compact_utc(secs: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

/// Seconds since the epoch to (year, month, day, hour, minute, second) UTC.
fn civil(secs: i64) -> (i64, u32, u32, i64, i64, i64) {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    (y, m, d, sod / 3600, (sod % 3600) / 60, sod % 60)
}

/// Days since 1970-01-01 to (year, month, day); Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_ns(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_ns(1_795_880_521_123_456_789),
            "2026-11-28T15:42:01.123456789Z"
        );
        // Leap day and the end of a leap year.
        assert_eq!(
            rfc3339_ns(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
        assert_eq!(
            rfc3339_ns(1_704_067_199_999_999_999),
            "2023-12-31T23:59:59.999999999Z"
        );
        // Beyond the 32-bit seconds range of classic pcap (2106).
        assert_eq!(
            rfc3339_ns(4_294_967_296_000_000_000),
            "2106-02-07T06:28:16.000000000Z"
        );
        assert_eq!(rfc3339_ns(-1), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(rfc3339_ns(i64::MIN), "1677-09-21T00:12:43.145224192Z");
        assert_eq!(rfc3339_ns(i64::MAX), "2262-04-11T23:47:16.854775807Z");
    }

    #[test]
    fn compact_names() {
        assert_eq!(compact_utc(1_795_880_521), "20261128T154201Z");
        assert_eq!(compact_utc(0), "19700101T000000Z");
    }
}
