//! procflow-snap: the on-host recorder's library half. Its public API is
//! small: [`record`] (`Config`, and `run`, which the binary calls and which
//! returns an `Outcome` for the binary to say; the library prints nothing
//! but the heartbeat), the live /proc reader [`live`], the packet capture
//! (its own `AF_PACKET` ring, or tcpdump) in [`capture`], and the conntrack
//! reader [`conntrack`] and [`sys`] that the cost measurements in
//! `examples/` use.
//!
//! Inside, in the order a tick runs: `live` reads /proc through the pure
//! parsers of [`procfs`], [`delta`] turns successive reads into keyframes
//! and deltas, `archive` appends them to tar files that survive a cut at
//! any byte, `bundle` writes the manifest and hashes, `capture` records
//! the packets (or runs tcpdump beside it) and `record` drives the loop;
//! `conntrack` adds each namespace's connection-tracking table, read
//! through `netlink`; `events`, `sockuse` and `lookup` follow the kernel's
//! event sources into a `batch`, with tracepoint layouts from `tracefmt`
//! and netlink messages from `nlmsg`; `outdir` checks and locks `--out`;
//! `operator` warns at start and prints the heartbeat. Every system call
//! std lacks is in `ksys`, the only module where `unsafe` is allowed.
//! [`layout`] describes the bundle format shared with the analyzer;
//! [`reader`] is the format's one reader: it reads archives back (also cut
//! ones) snapshot by snapshot. The recorder binary itself never reads an
//! archive.
//!
//! ```
//! // The pids of /proc as the recorder lists them; this process is one.
//! let pids = procflow_snap::live::Proc::live().list_pids().expect("read /proc");
//! assert!(pids.contains(&std::process::id()));
//! ```

// `unsafe` only in `ksys` (allowed there by name).
#![deny(unsafe_code)]

pub(crate) mod archive;
pub(crate) mod batch;
pub(crate) mod bpfuse;
pub(crate) mod bundle;
pub mod capture;
pub mod conntrack;
pub mod custody;
pub(crate) mod events;
// Every system call the standard library lacks, each `unsafe` block
// justified there; nowhere else.
#[allow(unsafe_code)]
#[deny(clippy::undocumented_unsafe_blocks)]
pub(crate) mod ksys;
pub mod live;
pub(crate) mod lookup;
pub(crate) mod netlink;
pub(crate) mod nlmsg;
pub(crate) mod nsfiles;
pub(crate) mod operator;
pub(crate) mod outdir;
pub mod record;
pub mod ring;
pub(crate) mod sockuse;
pub mod sys;
pub(crate) mod tracefmt;

/// The bundle format, shared with the analyzer (crate `procflow-format`).
pub use procflow_format::{delta, layout, procfs, reader};
