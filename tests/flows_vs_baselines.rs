//! Per-flow packets and bytes against the source projects' own baselines
//! (../shared/testdata/pcaps/expected_flows.tsv): Zeek conn.log rows count
//! IP-layer bytes (our `ip_bytes_*`), Suricata flow events count frame bytes
//! (our `bytes_*`). Originator and responder must match our `a` and `b`.

mod common;

use procflow::capture::{replay, ReplayOptions};
use std::path::Path;

#[test]
fn flows_match_zeek_and_suricata_baselines() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/pcaps");
    let Ok(tsv) = std::fs::read_to_string(dir.join("expected_flows.tsv")) else {
        common::missing("../shared/testdata not present");
        return;
    };
    let mut checked = 0;
    let mut failures = Vec::new();
    for row in tsv.lines().skip(1) {
        let c: Vec<&str> = row.split('\t').collect();
        let [file, source, proto, oip, oport, rip, rport, opk, oby, rpk, rby, ..] = c[..] else {
            panic!("short row: {row}");
        };
        let r = replay(&[dir.join(file)], &ReplayOptions::default()).unwrap();
        let found = r.flows.iter().find(|f| {
            procflow::flow::proto_name(f.proto) == proto
                && f.a_ip.to_string() == oip
                && f.a_port.map(|p| p.to_string()).as_deref() == Some(oport)
                && f.b_ip.to_string() == rip
                && f.b_port.map(|p| p.to_string()).as_deref() == Some(rport)
        });
        let Some(f) = found else {
            failures.push(format!(
                "{file}: no flow {proto} {oip}:{oport} -> {rip}:{rport}"
            ));
            continue;
        };
        let (ob, rb) = if source.starts_with("zeek") {
            (f.ip_bytes_ab, f.ip_bytes_ba)
        } else {
            (f.bytes_ab, f.bytes_ba)
        };
        let got = format!("{} {} {} {}", f.packets_ab, ob, f.packets_ba, rb);
        let want = format!("{opk} {oby} {rpk} {rby}");
        if got != want {
            failures.push(format!(
                "{file} {source} {oip}:{oport}: want {want}, got {got}"
            ));
        }
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} rows checked");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
