//! `procflow flows` as users run it: CSV on stdout or a file, JSON report,
//! summary on stderr, exit codes 0 / 1 (a file unreadable) / 2 (usage).

use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_procflow"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/pcaps")
        .join(name)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("procflow-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

#[test]
fn csv_on_stdout_with_exact_header_and_row() {
    let out = bin()
        .args(["flows"])
        .arg(fixture("tcpdump_tcp-handshake-nano.pcap"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let csv = String::from_utf8(out.stdout).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "flow_id,proto,family,a_ip,a_port,b_ip,b_port,first_seen,last_seen,packets_ab,packets_ba,bytes_ab,bytes_ba,\
         ip_bytes_ab,ip_bytes_ba,tcp_flags_ab,tcp_flags_ba,icmp_type,icmp_code,icmp_id,community_id,duration"
    );
    assert_eq!(
        lines.next().unwrap(),
        "1,tcp,ipv4,131.155.215.69,46656,137.116.81.94,80,2014-12-09T17:16:09.924505488Z,\
         2014-12-09T17:16:10.052115157Z,2,1,144,76,112,60,SA,SA,,,,1:2yIc1nOKpII1OaQM5xqRj49LriE=,0.127609669"
    );
    assert_eq!(lines.next(), None);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("1 file(s), 3 packets, 220 bytes, 1 flows"),
        "{err}"
    );
}

#[test]
fn unreadable_file_exits_1_keeps_other_flows_and_names_file_and_offset() {
    let garbage = tmp("garbage.pcap");
    std::fs::write(&garbage, b"this is not a capture at all").unwrap();
    let out_csv = tmp("out.csv");
    let json = tmp("report.json");
    let out = bin()
        .args(["flows", "--threads", "2", "--out"])
        .arg(&out_csv)
        .arg("--json")
        .arg(&json)
        .arg(&garbage)
        .arg(fixture("suricata_bug-6875-fuzz.pcap"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(&format!(
            "{}: offset 0: not a pcap or pcapng file",
            garbage.display()
        )),
        "{err}"
    );
    assert!(err.contains("packet 2, offset 228"), "{err}");
    assert!(err.contains("(1 unreadable)"), "{err}");
    let csv = std::fs::read_to_string(&out_csv).unwrap();
    assert_eq!(
        csv.lines().count(),
        2,
        "the readable file's flow is written"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["flows"], 1);
    assert_eq!(report["problem_counts"]["unreadable-file"], 1);
    assert_eq!(report["problem_counts"]["corrupt-record"], 1);
    let problems = report["problems"].as_array().unwrap();
    assert!(problems
        .iter()
        .any(|p| p["packet_index"] == 2 && p["offset"] == 228));
    assert!(report["files"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["error"].is_string()));
}

#[test]
fn non_ip_frames_are_in_the_json_report_not_in_rows() {
    let json = tmp("nonip.json");
    let out = bin()
        .args(["flows", "--out", "-", "--json"])
        .arg(&json)
        .arg(fixture("tcpdump_802.1ad_QinQ.pcap"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 1);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["non_ip"][0]["ethertype"], "0x0806");
    assert_eq!(report["non_ip"][0]["packets"], 2);
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(bin().arg("flows").output().unwrap().status.code(), Some(2));
    assert_eq!(
        bin()
            .args(["flows", "--threads", "0", "x.pcap"])
            .output()
            .unwrap()
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        bin().arg("nonsense").output().unwrap().status.code(),
        Some(2)
    );
    let out = bin()
        .args(["flows", "--out", "/nonexistent-dir/x.csv"])
        .arg(fixture("tcpdump_pptp.pcap"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("--out /nonexistent-dir/x.csv"));
}
