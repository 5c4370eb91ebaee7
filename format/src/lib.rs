//! procflow-format: the bundle contract that the recorder (`procflow-snap`)
//! and the analyzer (`procflow`) both compile against. Pure code over bytes
//! and `std::io::Read`: no libc, no live /proc access, no `unsafe`.
//!
//! - [`layout`]: file and member names, the manifest, snapshot metadata,
//!   fd and delta lines, row identities: the format's Rust description
//!   (`docs/archive-format.md` says the same in prose).
//! - [`procfs`]: pure parsers of the /proc text the recorder reads
//!   (stat, status, cmdline, cgroup, table rows).
//! - [`delta`]: keyframes and deltas, both directions (computing them on
//!   the host, applying them when reading).
//! - [`reader`]: the format's one reader, streaming snapshots out of
//!   archives (also cut ones) and applying them to a state.
//! - [`conntrack`]: the canonical line of a connection-tracking entry
//!   and of a conntrack event, and their pure parsers.
//! - [`duration`]: the one duration grammar (`250ms`, `30s`, `10m`, `1h`,
//!   bare seconds) of every duration option of both binaries.
//! - [`hash`]: SHA-256 of files and hex, as `SHA256SUMS` and `summary.json`
//!   write them.
//! - [`time`]: UTC timestamps (RFC 3339 with nanoseconds, compact names)
//!   over one civil-date algorithm.
//! - [`procnet`]: /proc/net/{tcp,udp}{,6} rows parsed into typed sockets
//!   with the recorded host byte order.
//!
//! ```
//! use procflow_format::duration::parse_duration;
//! use procflow_format::procnet::{parse_endpoint, ByteOrder};
//! use procflow_format::time::rfc3339_ns;
//!
//! // One grammar for every duration option of both binaries.
//! assert_eq!(parse_duration("10m").unwrap().as_secs(), 600);
//! // 127.0.0.1:22 as a little-endian host prints it in /proc/net/tcp.
//! let ep = parse_endpoint("0100007F:0016", ByteOrder::Little).unwrap();
//! assert_eq!(ep.to_string(), "127.0.0.1:22");
//! assert_eq!(rfc3339_ns(0), "1970-01-01T00:00:00.000000000Z");
//! ```

pub mod conntrack;
pub mod delta;
pub mod duration;
pub mod hash;
pub mod layout;
pub mod procfs;
pub mod procnet;
pub mod reader;
pub mod time;

/// What a unit test does when its fixture is missing (shared with the
/// integration tests).
#[cfg(test)]
#[path = "../../tests/common/mod.rs"]
mod test_common;
