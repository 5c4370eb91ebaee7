//! Whole replay (format detection, record scanning, decoding, flow
//! aggregation) over arbitrary bytes: must never panic, and must account for
//! every packet it counts.
//!
//! `cargo +nightly fuzz run replay -- -max_len=65536`; seed the corpus with
//! the captures in ../testdata/pcaps.
#![no_main]

use libfuzzer_sys::fuzz_target;
use procflow::capture::{replay_bytes, ReplayOptions};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let opts = ReplayOptions { threads: Some(1), ..ReplayOptions::default() };
    let r = replay_bytes(Path::new("fuzz-input"), data, &opts);
    let packets: u64 = r.files.iter().map(|f| f.packets).sum();
    let in_flows: u64 = r.flows.iter().map(|f| f.packets_ab + f.packets_ba).sum();
    let non_ip: u64 = r.non_ip.iter().map(|n| n.packets).sum();
    assert_eq!(packets, in_flows + non_ip + r.undecodable);
});
