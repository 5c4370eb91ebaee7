//! procflow-snap: the on-host recorder's library half.
//!
//! [`layout`] describes the bundle format shared with the analyzer.

pub mod layout;
