//! Per-conversation frame and byte counts of `procflow flows` against
//! `tshark -z conv,tcp|udp|ip|ipv6` on every shared test capture tshark can
//! read. Where the two definitions of a conversation differ on purpose, the
//! capture is listed in `DIVERGENCES` with the reason (also documented in
//! docs/flows-csv.md); a listed divergence that disappears fails the test too,
//! so the list stays true.

mod common;

use procflow::capture::{replay, ReplayOptions};
use procflow::flow::{Family, Flow};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (capture, table, why the counts differ).
const DIVERGENCES: &[(&str, &str, &str)] = &[
    (
        "pcapparser_wireshark_samples-test.pcapng",
        "IPv6",
        "tshark also counts IPv6 tunnelled in UDP (Teredo)",
    ),
    (
        "tcpdump_ipv6-srh-ext-header.pcap",
        "IPv6",
        "tshark also counts the IPv6 packet inside the segment routing header",
    ),
    (
        "tcpdump_of13_ericsson.pcapng",
        "UDP",
        "tshark also counts a UDP packet carried inside OpenFlow messages",
    ),
    (
        "tcpdump_of13_ericsson.pcapng",
        "IPv4",
        "tshark also counts the IPv4 packet carried inside OpenFlow messages",
    ),
    (
        "zeek_dns-edns-ecs.pcap",
        "UDP",
        "tshark counts a fragmented DNS response once, procflow every fragment",
    ),
    (
        "suricata_defrag-eth-vlan-ipv4-tcp-syn.pcap",
        "TCP",
        "tshark counts a fragmented segment once, procflow every fragment",
    ),
    (
        "suricata_defrag-eth-vlan-ipv6-tcp.pcap",
        "TCP",
        "tshark counts a fragmented segment once, procflow every fragment",
    ),
    (
        "suricata_defrag-eth-vlan-ipv6-tcp.pcap",
        "IPv6",
        "tshark's conv,ipv6 counts a fragmented datagram once",
    ),
    (
        "zeek_ipv4_fragmented-1.pcap",
        "UDP",
        "tshark counts a fragmented datagram once, procflow every fragment",
    ),
    (
        "zeek_ipv4_fragmented-syn.pcap",
        "TCP",
        "tshark counts a fragmented segment once, procflow every fragment",
    ),
    (
        "zeek_dns-edns-ecs.pcap",
        "UDP",
        "tshark counts a fragmented datagram once, procflow every fragment",
    ),
    (
        "zeek_ipv6-fragmented-dns.pcap",
        "UDP",
        "tshark counts a fragmented datagram once, procflow every fragment",
    ),
    (
        "zeek_ipv6-fragmented-dns.pcap",
        "IPv6",
        "tshark's conv,ipv6 counts a fragmented datagram once",
    ),
    (
        "tcpdump_LINKTYPE_IPV4_invalid.pcap",
        "UDP",
        "link type IPv4 carrying IPv6: tshark decodes it, procflow reports it",
    ),
    (
        "tcpdump_LINKTYPE_IPV4_invalid.pcap",
        "IPv6",
        "link type IPv4 carrying IPv6: tshark decodes it, procflow reports it",
    ),
    (
        "tcpdump_ipv6-routing-header.pcap",
        "UDP",
        "tshark keys UDP by the routing header's final destination",
    ),
    (
        "zeek_ipv6-hbh-routing0.pcap",
        "UDP",
        "tshark keys UDP by the routing header's final destination",
    ),
    (
        "tcpdump_ipv6_frag6_negative_len.pcap",
        "IPv6",
        "malformed fragment header: tshark drops the packet",
    ),
    (
        "tcpdump_tcp_header_heapoverflow.pcap",
        "TCP",
        "TCP header cut after the ports: tshark drops it as malformed",
    ),
    (
        "tcpdump_udp-length-heapoverflow.pcap",
        "UDP",
        "impossible UDP length: tshark drops it as malformed",
    ),
];

fn testdata() -> Option<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/pcaps");
    d.is_dir().then_some(d)
}

/// Wireshark's `format_size` with SI units, as the conversation table prints
/// byte counts: exact below 10 kB, then truncated to kB, MB, GB.
fn ws_size(n: u64) -> String {
    if n / 1_000_000_000 >= 10 {
        format!("{} GB", n / 1_000_000_000)
    } else if n / 1_000_000 >= 10 {
        format!("{} MB", n / 1_000_000)
    } else if n / 1000 >= 10 {
        format!("{} kB", n / 1000)
    } else {
        format!("{n} bytes")
    }
}

/// Per-conversation counts: key (left endpoint, right endpoint) ordered,
/// value (frames left->right, bytes, frames right->left, bytes).
type Table = BTreeMap<(String, String), (u64, u64, u64, u64)>;

fn add(t: &mut Table, a: String, b: String, ab: (u64, u64), ba: (u64, u64)) {
    let (k, ab, ba) = if a <= b {
        ((a, b), ab, ba)
    } else {
        ((b, a), ba, ab)
    };
    let e = t.entry(k).or_default();
    e.0 += ab.0;
    e.1 += ab.1;
    e.2 += ba.0;
    e.3 += ba.1;
}

fn endpoint(ip: &std::net::IpAddr, port: Option<u16>) -> String {
    match port {
        Some(p) => format!("{ip}:{p}"),
        None => ip.to_string(),
    }
}

fn ours(flows: &[Flow]) -> BTreeMap<&'static str, Table> {
    let mut m: BTreeMap<&'static str, Table> = BTreeMap::new();
    for f in flows {
        let ab = (f.packets_ab, f.bytes_ab);
        let ba = (f.packets_ba, f.bytes_ba);
        let table = match f.proto {
            6 => Some("TCP"),
            17 => Some("UDP"),
            _ => None,
        };
        if let Some(t) = table {
            add(
                m.entry(t).or_default(),
                endpoint(&f.a_ip, f.a_port),
                endpoint(&f.b_ip, f.b_port),
                ab,
                ba,
            );
        }
        let ipt = if f.family == Family::V4 {
            "IPv4"
        } else {
            "IPv6"
        };
        add(
            m.entry(ipt).or_default(),
            f.a_ip.to_string(),
            f.b_ip.to_string(),
            ab,
            ba,
        );
    }
    m
}

/// Parses `tshark -q -z conv,...` output. Byte counts are kept as tshark
/// printed them (possibly rounded to kB), so they are compared as text.
type TsharkTable = BTreeMap<(String, String), (u64, String, u64, String)>;

fn parse_tshark(out: &str) -> BTreeMap<String, TsharkTable> {
    let mut m: BTreeMap<String, TsharkTable> = BTreeMap::new();
    let mut table = String::new();
    for line in out.lines() {
        if let Some(name) = line.strip_suffix(" Conversations") {
            table = name.to_string();
            continue;
        }
        let Some((a, rest)) = line.split_once("<->") else {
            continue;
        };
        let toks: Vec<&str> = rest.split_whitespace().collect();
        // B, frames<-, n, unit, frames->, n, unit, ...
        if toks.len() < 7 {
            continue;
        }
        let b = toks[0].to_string();
        let a = a.trim().to_string();
        let f_ba: u64 = toks[1].parse().unwrap();
        let b_ba = format!("{} {}", toks[2], toks[3]);
        let f_ab: u64 = toks[4].parse().unwrap();
        let b_ab = format!("{} {}", toks[5], toks[6]);
        let (k, v) = if a <= b {
            ((a, b), (f_ab, b_ab, f_ba, b_ba))
        } else {
            ((b, a), (f_ba, b_ba, f_ab, b_ab))
        };
        // tshark may list one key several times (TCP streams): sum frames;
        // byte text only comparable when the key is listed once.
        let t = m.entry(table.clone()).or_default();
        match t.get_mut(&k) {
            Some(e) => {
                e.0 += v.0;
                e.2 += v.2;
                e.1 = "(several rows)".into();
                e.3 = "(several rows)".into();
            }
            None => {
                t.insert(k, v);
            }
        }
    }
    m
}

#[test]
fn conversations_match_tshark() {
    let Some(dir) = testdata() else {
        common::missing("../shared/testdata not present");
        return;
    };
    if Command::new("tshark").arg("--version").output().is_err() {
        common::missing("tshark not installed");
        return;
    }
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".pcap") || n.ends_with(".pcapng"))
        .collect();
    names.sort();
    let mut failures = Vec::new();
    let mut seen_divergence = Vec::new();
    let mut compared = 0;
    for name in &names {
        let path = dir.join(name);
        let out = Command::new("tshark")
            .args(["-n", "-q", "-r"])
            .arg(&path)
            .args([
                "-z",
                "conv,tcp",
                "-z",
                "conv,udp",
                "-z",
                "conv,ip",
                "-z",
                "conv,ipv6",
            ])
            .output()
            .unwrap();
        if !out.status.success() {
            continue; // tshark cannot read it: nothing to compare with
        }
        compared += 1;
        let theirs = parse_tshark(&String::from_utf8_lossy(&out.stdout));
        let r = replay(std::slice::from_ref(&path), &ReplayOptions::default()).unwrap();
        let mine = ours(&r.flows);
        for table in ["TCP", "UDP", "IPv4", "IPv6"] {
            let empty_t = BTreeMap::new();
            let empty_m = Table::new();
            let t = theirs.get(table).unwrap_or(&empty_t);
            let m = mine.get(table).unwrap_or(&empty_m);
            let mut diffs = Vec::new();
            for (k, tv) in t {
                match m.get(k) {
                    None => diffs.push(format!("{k:?}: tshark {tv:?}, procflow none")),
                    // Both ends equal (loopback to itself): directions are
                    // indistinguishable, compare totals.
                    Some(mv) if k.0 == k.1 => {
                        let total = (tv.0 + tv.2, mv.0 + mv.2);
                        let text = if tv.3 == "0 bytes" { &tv.1 } else { &tv.3 };
                        if total.0 != total.1 || *text != ws_size(mv.1 + mv.3) {
                            diffs.push(format!("{k:?}: tshark {tv:?}, procflow {mv:?}"));
                        }
                    }
                    Some(mv) => {
                        let bytes_ok = (tv.1 == "(several rows)" || tv.1 == ws_size(mv.1))
                            && (tv.3 == "(several rows)" || tv.3 == ws_size(mv.3));
                        if tv.0 != mv.0 || tv.2 != mv.2 || !bytes_ok {
                            diffs.push(format!("{k:?}: tshark {tv:?}, procflow {mv:?}"));
                        }
                    }
                }
            }
            for (k, mv) in m {
                if !t.contains_key(k) {
                    diffs.push(format!("{k:?}: tshark none, procflow {mv:?}"));
                }
            }
            let expected = DIVERGENCES
                .iter()
                .any(|(c, tb, _)| *c == name && *tb == table);
            if expected {
                seen_divergence.push((name.clone(), table));
                if diffs.is_empty() {
                    failures.push(format!(
                        "{name} {table}: listed as divergent but now matches"
                    ));
                }
            } else if !diffs.is_empty() {
                failures.push(format!("{name} {table}:\n    {}", diffs.join("\n    ")));
            }
        }
    }
    eprintln!("compared {compared} captures with tshark");
    assert!(compared > 30, "too few captures compared: {compared}");
    assert!(
        failures.is_empty(),
        "differences from tshark:\n{}",
        failures.join("\n")
    );
}
