//! procflow: attribute captured network traffic to the Linux processes that
//! sent it, offline, by joining a packet capture with /proc socket state
//! archived by `procflow-snap`.
//!
//! The data flow, one module per stage (details in `docs/architecture.md`):
//!
//! 1. [`flow`]: the flow type that replay produces and attribution consumes.

pub mod flow;
