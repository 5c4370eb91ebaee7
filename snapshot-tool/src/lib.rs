//! procflow-snap: the on-host recorder's library half.
//!
//! [`layout`] describes the bundle format shared with the analyzer. The
//! rest is the recorder, in the order a tick runs: [`live`] reads /proc
//! through the pure parsers of [`procfs`], [`delta`] turns successive reads
//! into keyframes and deltas, [`archive`] appends them to tar files that
//! survive a cut at any byte, [`bundle`] writes the manifest and hashes,
//! [`capture`] runs tcpdump beside it and [`record`] drives the loop.
//! [`reader`] reads archives back (also cut ones) and replays them.

pub mod archive;
pub mod bundle;
pub mod capture;
pub mod cli;
pub mod delta;
pub mod layout;
pub mod live;
pub mod procfs;
pub mod reader;
pub mod record;
pub mod sys;
