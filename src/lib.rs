//! procflow: attribute captured network traffic to the Linux processes that
//! sent it, offline, by joining a packet capture with /proc socket state
//! archived by `procflow-snap`.
//!
//! The data flow, one module per stage (details in `docs/architecture.md`):
//!
//! 1. [`capture`]: read pcap/pcapng files (memory-mapped, scanned for record
//!    boundaries, decoded in parallel batches) and fold their packets into
//!    flows, reporting every damaged record or undecodable packet.
//! 2. [`decode`]: one frame of any supported link type to a small `Copy`
//!    record (addresses, ports, TCP flags, ICMP identity, IP length,
//!    fragment position).
//! 3. [`flow`]: the flow type that replay produces and attribution consumes,
//!    the aggregation that builds it, and Community ID.
//! 4. [`snapshot`]: the bundle's archives read into a socket timeline.
//! 5. [`attribute`]: each flow joined to the socket and process that owned it.
//! 6. [`report`]: the report files of `procflow analyze`; [`overview`]: the
//!    top processes, endpoints and traffic over time they show.
//!
//! The two pipelines of the `procflow` binary are plain functions over a
//! config struct: [`flows`] (captures to a flows CSV) and [`analyze`] (a
//! bundle to its reports). The command line itself lives in the binary.
//!
//! [`time`] formats timestamps as RFC 3339 UTC with nanoseconds.
//!
//! Evidence handling: [`verify`] checks a bundle's integrity, how its
//! recorder ended, capture drops and unreadable fds; [`hostile`] escapes
//! bundle text for the terminal and for CSV; [`outdir`] writes reports
//! without ever writing into a bundle, through a planted link, or half.
//!
//! ```
//! use procflow::flow::SplitRules;
//! use procflow::flows::{replay_flows, write_csv, FlowsConfig};
//!
//! // Replay a capture into flows and write them as the flows CSV.
//! let cfg = FlowsConfig {
//!     captures: vec![concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/pcaps/tcpdump_LINKTYPE_IPV4.pcap").into()],
//!     threads: Some(1),
//!     split: SplitRules::default(),
//!     progress: None,
//! };
//! let replay = replay_flows(&cfg).expect("replay");
//! let mut csv = Vec::new();
//! write_csv(&mut csv, &replay.flows).expect("write");
//! assert!(csv.starts_with(b"flow_id,proto,family,"));
//! assert_eq!(csv.iter().filter(|&&b| b == b'\n').count(), replay.flows.len() + 1);
//! ```

pub mod analyze;
pub mod annotate;
pub mod annotations;
pub mod attribute;
pub mod capture;
pub mod carve;
pub mod decode;
pub mod flow;
pub mod flows;
pub mod foreign;
pub mod hostile;
pub mod names;
pub mod outdir;
pub mod packet;
pub mod progress;
pub mod report;
pub use report::overview;
pub mod snapshot;
pub mod sockets;
pub mod split;
pub mod time;
pub mod verify;
pub mod warning;
