//! Decoding of each link type and IP feature on real captures copied into
//! testdata/pcaps (sources in its README). Expected values were checked
//! against tshark and the source projects' own expectations.

use procflow::capture::{replay, Replay, ReplayOptions};
use procflow::flow::{community_id, proto_name, tcp_flags_text, Family, Flow};
use procflow::time::rfc3339_ns;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/pcaps")
        .join(name)
}

fn run(names: &[&str]) -> Replay {
    let paths: Vec<PathBuf> = names.iter().map(|n| fixture(n)).collect();
    replay(&paths, &ReplayOptions::default()).unwrap()
}

/// `proto a_ip:a_port > b_ip:b_port pkts_ab/pkts_ba bytes_ab/bytes_ba`.
fn line(f: &Flow) -> String {
    let ep = |ip: &std::net::IpAddr, p: Option<u16>| match p {
        Some(p) => format!("{ip}:{p}"),
        None => ip.to_string(),
    };
    format!(
        "{} {} > {} {}/{} {}/{}",
        proto_name(f.proto),
        ep(&f.a_ip, f.a_port),
        ep(&f.b_ip, f.b_port),
        f.packets_ab,
        f.packets_ba,
        f.bytes_ab,
        f.bytes_ba
    )
}

fn lines(r: &Replay) -> Vec<String> {
    r.flows.iter().map(line).collect()
}

#[test]
fn linux_sll_nanosecond_pcap() {
    let r = run(&["tcpdump_tcp-handshake-nano.pcap"]);
    assert_eq!(r.files[0].link_types, vec![113]);
    assert_eq!(
        lines(&r),
        ["tcp 131.155.215.69:46656 > 137.116.81.94:80 2/1 144/76"]
    );
    let f = &r.flows[0];
    assert_eq!(
        rfc3339_ns(f.first_seen_ns),
        "2014-12-09T17:16:09.924505488Z"
    );
    assert_eq!(tcp_flags_text(f.tcp_flags_ab), "SA");
    assert_eq!(f.ip_bytes_ab, 112);
}

#[test]
fn linux_sll2_tcp_and_icmp_with_arp_counted_apart() {
    let r = run(&["suricata_decode-sll2-01.pcap"]);
    assert_eq!(r.files[0].link_types, vec![276]);
    assert_eq!(
        lines(&r),
        ["tcp 192.168.1.253:56478 > 192.168.1.21:80 3/2 306/152"]
    );
    let r = run(&["zeek_linux_dlt_sll2.pcap"]);
    // ICMP echo request and reply form one flow each (v4 and v6).
    assert_eq!(
        lines(&r),
        [
            "icmp 192.0.2.1 > 192.0.2.1 2/0 208/0",
            "icmpv6 fe80::8c36:6ff:fe44:acaf > fe80::8c36:6ff:fe44:acaf 2/0 248/0"
        ]
    );
    assert_eq!(r.flows[0].icmp.map(|k| k.icmp_type), Some(8));
    assert_eq!(r.non_ip.iter().map(|n| n.packets).sum::<u64>(), 2);
    assert_eq!(r.undecodable, 0);
}

#[test]
fn raw_ipv4_ipv6_and_linktype_ipv4_ipv6() {
    for (name, lt, want) in [
        (
            "tcpdump_LINKTYPE_RAW_ipv4.pcap",
            101,
            "udp 192.168.1.100:12345 > 9.9.9.9:53 1/0 57/0",
        ),
        (
            "tcpdump_LINKTYPE_RAW_ipv6.pcap",
            101,
            "udp 2001:db8::1:12345 > 2620:fe::9:53 1/0 77/0",
        ),
        (
            "tcpdump_LINKTYPE_IPV4.pcap",
            228,
            "udp 192.168.1.100:12345 > 9.9.9.9:53 1/0 57/0",
        ),
        (
            "tcpdump_LINKTYPE_IPV6.pcap",
            229,
            "udp 2001:db8::1:12345 > 2620:fe::9:53 1/0 77/0",
        ),
    ] {
        let r = run(&[name]);
        assert_eq!(r.files[0].link_types, vec![lt], "{name}");
        assert_eq!(lines(&r), [want], "{name}");
    }
}

#[test]
fn linktype_ipv4_carrying_ipv6_is_reported() {
    let r = run(&["tcpdump_LINKTYPE_IPV4_invalid.pcap"]);
    assert!(r.flows.is_empty());
    assert_eq!(r.undecodable, 1);
    assert_eq!(r.problems[0].kind.as_str(), "ip-version-mismatch");
    assert_eq!(
        (r.problems[0].packet_index, r.problems[0].offset),
        (Some(1), 24)
    );
}

#[test]
fn bsd_null_loopback() {
    let r = run(&["tcpdump_tcp_rst_diag_payload.pcap"]);
    assert_eq!(r.files[0].link_types, vec![0]);
    assert_eq!(
        lines(&r),
        ["tcp 192.0.2.1:39829 > 192.168.0.1:8080 1/0 52/0"]
    );
    // IPv6 over NULL, every big packet cut by a 256-byte snaplen.
    let r = run(&["tcpdump_quic_handshake_truncated.pcap"]);
    assert_eq!(lines(&r), ["udp ::1:65165 > ::1:443 9/9 3136/2349"]);
    assert_eq!(r.files[0].snaplen_cut, 4);
    assert!(r.problems.is_empty());
}

#[test]
fn big_endian_pcap_with_gre() {
    let r = run(&["tcpdump_pptp.pcap"]);
    assert_eq!(
        lines(&r),
        [
            "tcp 10.1.1.11:3025 > 10.1.1.10:1723 6/16 692/1286",
            "47 10.1.1.11 > 10.1.1.10 1/0 94/0"
        ]
    );
    assert_eq!(r.flows[1].a_port, None);
}

#[test]
fn vlan_stacks_and_non_ip() {
    // 802.1ad + 802.1Q around ARP: non-IP, counted per ethertype.
    let r = run(&["tcpdump_802.1ad_QinQ.pcap"]);
    assert!(r.flows.is_empty());
    assert_eq!(r.non_ip.len(), 1);
    assert_eq!(
        (
            r.non_ip[0].ethertype,
            r.non_ip[0].packets,
            r.non_ip[0].bytes
        ),
        (0x0806, 2, 128)
    );
    // Two 802.1Q tags around UDP, plus ARP.
    let r = run(&["zeek_q-in-q.pcap"]);
    assert_eq!(
        lines(&r),
        [
            "udp 172.19.51.37:47808 > 172.19.51.63:47808 2/0 136/0",
            "udp 193.1.186.60:9875 > 224.2.127.254:9875 2/0 652/0"
        ]
    );
    assert_eq!(r.non_ip[0].ethertype, 0x0806);
}

#[test]
fn ethernet_padding_not_in_ip_bytes() {
    let r = run(&["zeek_tcp-http-with-padding.pcap"]);
    let f = &r.flows[0];
    // zeek conn.log: orig_ip_bytes 704, resp_ip_bytes 823.
    assert_eq!(
        (f.packets_ab, f.ip_bytes_ab, f.packets_ba, f.ip_bytes_ba),
        (13, 704, 12, 823)
    );
    assert_eq!(tcp_flags_text(f.tcp_flags_ab), "SAFP");
}

#[test]
fn ipv4_fragments_join_their_datagram() {
    // A SYN cut into two fragments: the second has no ports.
    let r = run(&["zeek_ipv4_fragmented-syn.pcap"]);
    assert_eq!(
        lines(&r),
        ["tcp 192.168.1.100:12345 > 10.0.0.5:80 2/0 108/0"]
    );
    assert_eq!(r.undecodable, 0);
}

#[test]
fn ipv6_fragments_and_orphans() {
    let r = run(&["zeek_ipv6-fragmented-dns.pcap"]);
    assert_eq!(
        lines(&r),
        [
            "udp 2001:470:1f11:81f:d138:5f55:6d4:1fe2:51850 > 2607:f740:b::f93:53 1/1 135/385",
            "udp 2001:470:1f11:81f:d138:5f55:6d4:1fe2:51851 > 2607:f740:b::f93:53 2/3 272/3424",
        ]
    );
    // One fragment whose first fragment is not in the capture.
    assert_eq!(r.undecodable, 1);
    assert_eq!(r.problems[0].kind.as_str(), "orphan-fragment");
}

#[test]
fn ipv6_extension_header_chain_is_walked() {
    // Hop-by-hop, then dozens of routing/fragment/destination headers.
    let r = run(&["libpcap_ipv6_ext_headers.pcap"]);
    assert_eq!(r.flows.len(), 1);
    assert_ne!(
        r.flows[0].proto, 43,
        "stopped inside the extension header chain"
    );
    assert_eq!(r.flows[0].family, Family::V6);
}

#[test]
fn pcapng_interfaces_of_different_link_types() {
    let r = run(&["pcapngtg_le_test006.pcapng"]);
    assert_eq!(r.files[0].format, "pcapng");
    assert_eq!(r.files[0].link_types, vec![0, 1]);
    assert_eq!(r.files[0].packets, 5);
    assert_eq!(
        r.flows
            .iter()
            .map(|f| f.packets_ab + f.packets_ba)
            .sum::<u64>(),
        5
    );
}

#[test]
fn pcapng_sections_of_both_byte_orders() {
    let r = run(&["pcapngtg_be_test202.pcapng"]);
    assert_eq!(r.files[0].packets, 8);
    assert_eq!(r.undecodable, 0);
    assert_eq!(
        r.flows
            .iter()
            .map(|f| f.packets_ab + f.packets_ba)
            .sum::<u64>(),
        8
    );
}

#[test]
fn pcapng_tsresol_power_of_two() {
    // gopacket expects 1519128000.195312500 (if_tsresol 0x88).
    let r = run(&["gopacket_le_test902.pcapng"]);
    assert_eq!(
        rfc3339_ns(r.flows[0].first_seen_ns),
        "2018-02-20T12:00:00.195312500Z"
    );
}

#[test]
fn pcapng_unknown_section_version_is_skipped() {
    // gopacket with SkipUnknownVersion: packets 1 and 3.
    let r = run(&["gopacket_le_test901.pcapng"]);
    assert_eq!(r.files[0].packets, 2);
    assert_eq!(r.problems.len(), 1);
    assert_eq!(r.problems[0].kind.as_str(), "unsupported-section");
    assert!(r.files[0].error.is_none());
}

#[test]
fn corrupt_record_stops_the_file_but_keeps_its_flows() {
    let r = run(&["suricata_bug-6875-fuzz.pcap"]);
    assert_eq!(r.files[0].packets, 1);
    assert_eq!(r.flows.len(), 1);
    let p = &r.problems[0];
    assert_eq!(
        (p.kind.as_str(), p.packet_index, p.offset),
        ("corrupt-record", Some(2), 228)
    );
    assert!(r.files[0].error.is_none());
}

#[test]
fn invalid_nanosecond_fraction_is_reported_and_carried() {
    let r = run(&["tcpdump_timestamp_invalid_nano.pcap"]);
    assert_eq!(r.problem_counts.get("timestamp-fraction"), Some(&2));
    assert_eq!(r.flows[0].packets_ab + r.flows[0].packets_ba, 3);
}

#[test]
fn unreadable_header_is_a_file_error() {
    let r = run(&[
        "libpcap_pcap-invalid-version-1.pcap",
        "tcpdump_LINKTYPE_RAW_ipv4.pcap",
    ]);
    assert!(r.any_file_unreadable());
    let bad = r.files.iter().find(|f| f.error.is_some()).unwrap();
    assert!(bad
        .error
        .as_deref()
        .unwrap()
        .contains("unsupported pcap version 1.4"));
    assert_eq!(r.flows.len(), 1, "the readable file's flows are kept");
}

#[test]
fn community_id_of_fixture_flow() {
    let r = run(&["tcpdump_LINKTYPE_RAW_ipv4.pcap"]);
    // Same value whichever endpoint is first.
    let mut f = r.flows[0].clone();
    let id = community_id(&f, 0);
    std::mem::swap(&mut f.a_ip, &mut f.b_ip);
    std::mem::swap(&mut f.a_port, &mut f.b_port);
    assert_eq!(community_id(&f, 0), id);
    assert!(id.starts_with("1:") && id.len() == 30, "{id}");
}
