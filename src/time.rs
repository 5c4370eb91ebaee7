//! Timestamps as analysts read them: RFC 3339 in UTC with nanoseconds
//! (the format crate's one civil-date function), and durations in seconds.

pub use procflow_format::time::rfc3339_ns;

/// Formats a duration in nanoseconds as decimal seconds with nine digits
/// (`12.000000345`), the way the flows CSV writes `duration`.
pub fn seconds_ns(ns: i64) -> String {
    let sign = if ns < 0 { "-" } else { "" };
    let abs = ns.unsigned_abs();
    format!("{sign}{}.{:09}", abs / 1_000_000_000, abs % 1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_durations() {
        assert_eq!(seconds_ns(0), "0.000000000");
        assert_eq!(seconds_ns(12_000_000_345), "12.000000345");
        assert_eq!(seconds_ns(-5), "-0.000000005");
    }
}
