//! The recorder's conntrack work per tick, alone: `TICKS` ticks of
//! [`Conntrack::tick`] on the namespace this runs in (ctnetlink dump, lines
//! formatted, identities compared, delta built), then the CPU time per
//! tick. Used by `scripts/bench-conntrack.sh`; run as root inside the
//! namespace to measure (`ip netns exec NS conntrack_cost [TICKS]`).

use std::collections::BTreeMap;

use procflow_snap::conntrack::Conntrack;
use procflow_snap::layout::NetnsEntry;
use procflow_snap::{live, sys};

fn main() {
    let ticks: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let mut ct = Conntrack::start(false);
    let src = ct.source();
    if !ct.used() {
        eprintln!("conntrack not used: {:?}", src.detail);
        std::process::exit(1);
    }
    let ns = live::read_netns("self").unwrap_or(0);
    let ns_pids: BTreeMap<u64, Vec<u32>> = [(ns, vec![std::process::id()])].into();
    let (mut bytes, mut lines) = (0usize, 0usize);
    let cpu0 = sys::self_cpu_ns();
    let t0 = std::time::Instant::now();
    for seq in 1..=ticks {
        let mut entries = vec![NetnsEntry {
            inode: ns,
            pid: std::process::id(),
            tables: Vec::new(),
        }];
        let mut members = Vec::new();
        let mut errs = Vec::new();
        ct.tick(
            seq,
            seq == 1,
            ns,
            &ns_pids,
            &mut entries,
            &mut members,
            &mut errs,
        );
        assert!(errs.is_empty(), "{errs:?}");
        if seq == 1 {
            lines = members
                .first()
                .map_or(0, |m| m.1.iter().filter(|&&b| b == b'\n').count());
        } else {
            bytes += members.iter().map(|m| m.1.len()).sum::<usize>();
        }
    }
    let cpu = sys::self_cpu_ns().saturating_sub(cpu0);
    println!(
        "{ticks} ticks, {lines} entries: {:.2} CPU ms per tick ({:.2} ms wall), {} bytes of members after the keyframe",
        cpu as f64 / 1e6 / ticks as f64,
        t0.elapsed().as_secs_f64() * 1e3 / ticks as f64,
        bytes
    );
}
