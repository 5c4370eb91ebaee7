//! procflow: attribute captured network traffic to the Linux processes that
//! sent it, offline, by joining a packet capture with /proc socket state
//! archived by `procflow-snap`.
//!
//! The data flow, one module per stage (details in `docs/architecture.md`):
//!
//! 1. [`flow`]: the flow type that replay produces and attribution consumes.
//! 2. [`snapshot`]: the bundle's archives read into a socket timeline.
//! 3. [`attribute`]: each flow joined to the socket and process that owned it.
//! 4. [`report`]: the report files.

pub mod attribute;
pub mod flow;
pub mod report;
pub mod snapshot;
