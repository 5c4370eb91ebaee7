//! procflow-snap: the on-host recorder's library half.
//!
//! [`layout`] describes the bundle format shared with the analyzer. The
//! rest is the recorder, in the order a tick runs: [`live`] reads /proc
//! through the pure parsers of [`procfs`], [`delta`] turns successive reads
//! into keyframes and deltas, [`archive`] appends them to tar files that
//! survive a cut at any byte, [`bundle`] writes the manifest and hashes,
//! [`capture`] runs tcpdump beside it and [`record`] drives the loop;
//! [`conntrack`] adds each namespace's connection-tracking table, read
//! through [`netlink`]; [`operator`] locks `--out`, warns at start, prints
//! the heartbeat and reads tcpdump's counters for the manifest.
//! [`reader`] is the format's one reader, shared with the analyzer: it reads
//! archives back (also cut ones) snapshot by snapshot and applies them to
//! rebuild the tables and fd listing at each tick. The recorder binary
//! itself never reads an archive.

pub mod archive;
pub mod bundle;
pub mod capture;
pub mod conntrack;
pub mod events;
pub mod ksys;
pub mod live;
pub mod netlink;
pub mod operator;
pub mod record;
pub mod sys;

/// The bundle format, shared with the analyzer (crate `procflow-format`).
pub use procflow_format::{delta, layout, procfs, reader};
