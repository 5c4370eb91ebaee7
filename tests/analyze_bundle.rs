//! `procflow analyze` on synthetic bundles: a manifest, a tar of keyframe
//! and delta snapshots written with the shared layout helpers, and a pcap of
//! packets built with etherparse. Runs the real binary.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use etherparse::PacketBuilder;
use procflow_format::layout::{
    archive_name, events_member, fds_member, meta_member, net_member, procs_member, row_identity,
    ClockReading, FdWalk, HostAddress, HostInfo, Manifest, NetnsEntry, Privileges, ProcessRecord,
    RecordOptions, SnapshotKind, SnapshotMeta, TableEntry, TableStored, TimeStamp, ToolInfo,
    FORMAT_NAME, FORMAT_VERSION, MANIFEST_FILE, NET_TABLES,
};

const NS: u64 = 4026531840;
/// Realtime of the first snapshot, ns.
const T0: i64 = 1_700_000_000_000_000_000;
const MS: i64 = 1_000_000;

fn clock(ms: i64) -> ClockReading {
    ClockReading {
        realtime_ns: T0 + ms * MS,
        monotonic_ns: 9_000_000_000 + ms * MS,
        boottime_ns: 9_000_000_000 + ms * MS,
    }
}

/// A /proc/net row (little-endian host) for an IPv4 socket.
fn row(local: &str, remote: &str, state: u8, inode: u64) -> String {
    let hex = |s: &str| {
        let a: std::net::SocketAddrV4 = s.parse().unwrap();
        format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(a.ip().octets()),
            a.port()
        )
    };
    format!(
        "   0: {} {} {state:02X} 00000000:00000000 00:00000000 00000000     0        0 {inode} 1 0000000000000000 100 0 0 10 0",
        hex(local),
        hex(remote)
    )
}

const HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";

fn proc_rec(pid: u32, start: u64, comm: &str, cmd: &[&str]) -> ProcessRecord {
    ProcessRecord {
        pid,
        start_time: start,
        ppid: 1,
        uid: 1000,
        comm: comm.into(),
        exe: Some(format!("/usr/bin/{comm}")),
        cmdline: cmd.iter().map(|s| s.to_string()).collect(),
        netns: NS,
        cgroup: None,
        container_id: None,
        seen_ns: None,
        exec_ns: None,
        euid: None,
        user: None,
    }
}

fn manifest(format_version: u32) -> Manifest {
    let ts = |ms| TimeStamp {
        utc: String::new(),
        clocks: clock(ms),
    };
    Manifest {
        format: FORMAT_NAME.into(),
        format_version,
        tool: ToolInfo {
            name: "procflow-snap".into(),
            version: "0.1.0".into(),
            argv: vec!["procflow-snap".into(), "record".into()],
        },
        host: HostInfo {
            hostname: "suspect".into(),
            kernel_release: "6.1.0-18-amd64".into(),
            kernel_version: "#1 SMP".into(),
            arch: "x86_64".into(),
            byte_order: procflow_format::layout::ByteOrder::Little,
            boot_id: "8a5b2f0e-1111-2222-3333-444455556666".into(),
            btime: 1_699_990_000,
            clk_tck: 100,
            clocksource: "tsc".into(),
            netns: NS,
            addresses: vec![
                HostAddress {
                    iface: "lo".into(),
                    ip: "127.0.0.1".into(),
                },
                HostAddress {
                    iface: "eth0".into(),
                    ip: "10.0.0.1".into(),
                },
            ],
        },
        privileges: Privileges {
            euid: 0,
            cap_eff: "000001ffffffffff".into(),
        },
        options: RecordOptions {
            nice: Some(19),
            interval_ms: 1000,
            keyframe_every: 300,
            full_walk_ms: 2000,
            max_cpu_percent: None,
            archive_max_bytes: 64 << 20,
            max_size_bytes: None,
            keep_ms: None,
        },
        capture: None,
        started: ts(0),
        ended: Some(ts(5000)),
        status: procflow_format::layout::RecorderStatus::Complete,
        archives: vec![archive_name(1)],
        capture_files: vec!["capture-1.pcap".into()],
        snapshots: 5,
        errors: vec![],
        sources: vec![],
        deleted: vec![],
    }
}

/// One snapshot: seq, time, kind, tcp and udp member text (full or delta,
/// `None` = unchanged), fds and procs text.
struct Snap {
    seq: u64,
    ms: i64,
    kind: SnapshotKind,
    tcp: Option<String>,
    udp: Option<String>,
    fds: String,
    procs: String,
}

fn write_tar(path: &Path, snaps: &[Snap]) {
    write_tar_with_events(path, snaps, &BTreeMap::new());
}

/// As [`write_tar`], with an `events.jsonl` member for the snapshots in
/// `events` (seq -> text).
fn write_tar_with_events(path: &Path, snaps: &[Snap], events: &BTreeMap<u64, String>) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    };
    for s in snaps {
        let full = s.kind == SnapshotKind::Keyframe;
        let stored = |t: &Option<String>| match (t, full) {
            (None, _) => TableStored::Unchanged,
            (Some(_), true) => TableStored::Full,
            (Some(_), false) => TableStored::Delta,
        };
        let mut tables = Vec::new();
        for t in NET_TABLES {
            let st = match t {
                "tcp" => stored(&s.tcp),
                "udp" => stored(&s.udp),
                _ if full => TableStored::Full,
                _ => TableStored::Unchanged,
            };
            tables.push(TableEntry {
                table: t.into(),
                stored: st,
            });
            let text = match t {
                "tcp" => s.tcp.clone(),
                "udp" => s.udp.clone(),
                _ if full => Some(format!("{HEADER}\n")),
                _ => None,
            };
            if let Some(text) = text {
                add(&net_member(s.seq, NS, t, full), text.as_bytes());
            }
        }
        add(&fds_member(s.seq), s.fds.as_bytes());
        add(&procs_member(s.seq), s.procs.as_bytes());
        if let Some(e) = events.get(&s.seq) {
            add(&events_member(s.seq), e.as_bytes());
        }
        let meta = SnapshotMeta {
            seq: s.seq,
            kind: s.kind,
            before: clock(s.ms),
            net_done: clock(s.ms + 5),
            after: clock(s.ms + 10),
            netns: vec![NetnsEntry {
                inode: NS,
                pid: 1,
                tables,
            }],
            fd_walk: if full { FdWalk::Full } else { FdWalk::Changed },
            pids_walked: 10,
            pids_total: 10,
            self_cpu_ns: 0,
            errors: vec![],
        };
        add(
            &meta_member(s.seq),
            serde_json::to_string(&meta).unwrap().as_bytes(),
        );
    }
    b.finish().unwrap();
}

/// Packets of the capture: (ms after T0, frame bytes).
struct Pcap(Vec<(i64, Vec<u8>)>);

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn ip4(s: &str) -> [u8; 4] {
    s.parse::<std::net::Ipv4Addr>().unwrap().octets()
}

impl Pcap {
    fn tcp(&mut self, ms: i64, src: (&str, u16), dst: (&str, u16), flags: &str, payload: usize) {
        let mut b = PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4(ip4(src.0), ip4(dst.0), 64)
            .tcp(src.1, dst.1, 1000, 65535);
        for f in flags.chars() {
            b = match f {
                'S' => b.syn(),
                'A' => b.ack(1),
                'F' => b.fin(),
                'P' => b.psh(),
                _ => b,
            };
        }
        let mut v = Vec::new();
        b.write(&mut v, &vec![0x42; payload]).unwrap();
        self.0.push((ms, v));
    }

    fn udp(&mut self, ms: i64, src: (&str, u16), dst: (&str, u16), payload: usize) {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4(ip4(src.0), ip4(dst.0), 64)
            .udp(src.1, dst.1)
            .write(&mut v, &vec![0x17; payload])
            .unwrap();
        self.0.push((ms, v));
    }

    fn ping(&mut self, ms: i64, src: &str, dst: &str) {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4(ip4(src), ip4(dst), 64)
            .icmpv4_echo_request(7, 1)
            .write(&mut v, &[0u8; 56])
            .unwrap();
        self.0.push((ms, v));
    }

    fn total_bytes(&self) -> u64 {
        self.0.iter().map(|p| p.1.len() as u64).sum()
    }

    /// Classic pcap, microseconds, Ethernet.
    fn write(&self, path: &Path, shift_ms: i64) {
        let mut out = Vec::new();
        out.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&4u16.to_le_bytes());
        out.extend_from_slice(&0i32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&65535u32.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        let mut pkts: Vec<&(i64, Vec<u8>)> = self.0.iter().collect();
        pkts.sort_by_key(|p| p.0);
        for (ms, data) in pkts {
            let ns = T0 + (ms + shift_ms) * MS;
            out.extend_from_slice(&((ns / 1_000_000_000) as u32).to_le_bytes());
            out.extend_from_slice(&(((ns % 1_000_000_000) / 1000) as u32).to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(data);
        }
        std::fs::write(path, out).unwrap();
    }
}

struct Scenario {
    snaps: Vec<Snap>,
    pcap: Pcap,
}

/// The scenario every test starts from. Five snapshots, one per second:
/// - curl (pid 10) connected 10.0.0.1:40000 -> 93.184.216.34:443 (seq 1-3);
/// - sshd (pid 20, start 50) and its child (pid 21, start 900) share the
///   listener 0.0.0.0:22;
/// - 10.0.0.1:40001 -> 10.0.0.2:80 is used by wget (pid 30) at seq 1-2 and,
///   after it is gone, by a second wget (pid 31) at seq 4-5: port reuse;
/// - avahi (pid 40) on udp 0.0.0.0:5353;
/// - a TIME_WAIT row (inode 0) for 10.0.0.1:40002 -> 10.0.0.2:80;
/// - one garbage row in a delta.
fn scenario() -> Scenario {
    let curl = row("10.0.0.1:40000", "93.184.216.34:443", 0x01, 100);
    let ssh = row("0.0.0.0:22", "0.0.0.0:0", 0x0A, 200);
    let w1 = row("10.0.0.1:40001", "10.0.0.2:80", 0x01, 300);
    let w2 = row("10.0.0.1:40001", "10.0.0.2:80", 0x01, 301);
    let tw = row("10.0.0.1:40002", "10.0.0.2:80", 0x06, 0);
    let mdns = row("0.0.0.0:5353", "0.0.0.0:0", 0x07, 400);
    let procs = |recs: &[ProcessRecord]| {
        recs.iter()
            .map(|r| serde_json::to_string(r).unwrap() + "\n")
            .collect::<String>()
    };
    let snaps = vec![
        Snap {
            seq: 1,
            ms: 0,
            kind: SnapshotKind::Keyframe,
            tcp: Some(format!("{HEADER}\n{curl}\n{ssh}\n{w1}\n{tw}\n")),
            udp: Some(format!("{HEADER}\n{mdns}\n")),
            fds: format!(
                "10 5000 {NS} 7,100\n20 50 {NS} 200\n21 900 {NS} 200\n30 6000 {NS} 300\n40 60 {NS} 400\n"
            ),
            procs: procs(&[
                proc_rec(10, 5000, "curl", &["curl", "-s", "https://example.com/a b"]),
                proc_rec(20, 50, "sshd", &["/usr/sbin/sshd", "-D"]),
                proc_rec(21, 900, "sshd", &["sshd: alice [priv]"]),
                proc_rec(30, 6000, "wget", &["wget", "http://10.0.0.2/"]),
                proc_rec(40, 60, "avahi-daemon", &["avahi-daemon: running"]),
            ]),
        },
        Snap {
            seq: 2,
            ms: 1000,
            kind: SnapshotKind::Delta,
            tcp: Some(format!("-{}\n", row_identity(&tw).unwrap())),
            udp: None,
            fds: String::new(),
            procs: String::new(),
        },
        Snap {
            seq: 3,
            ms: 2000,
            kind: SnapshotKind::Delta,
            tcp: Some(format!("-{}\n", row_identity(&w1).unwrap())),
            udp: None,
            fds: "-30 6000\n".into(),
            procs: String::new(),
        },
        Snap {
            seq: 4,
            ms: 3000,
            kind: SnapshotKind::Delta,
            tcp: Some(format!(
                "-{}\n+{w2}\n+   9: this is not a socket row\n",
                row_identity(&curl).unwrap()
            )),
            udp: None,
            fds: format!("31 7000 {NS} 301\n10 5000 {NS} 7\n"),
            procs: procs(&[proc_rec(31, 7000, "wget", &["wget", "http://10.0.0.2/x"])]),
        },
        Snap {
            seq: 5,
            ms: 4000,
            kind: SnapshotKind::Delta,
            tcp: None,
            udp: None,
            fds: String::new(),
            procs: String::new(),
        },
    ];
    let mut p = Pcap(Vec::new());
    // curl, during its socket's life.
    p.tcp(500, ("10.0.0.1", 40000), ("93.184.216.34", 443), "S", 0);
    p.tcp(520, ("93.184.216.34", 443), ("10.0.0.1", 40000), "SA", 0);
    p.tcp(540, ("10.0.0.1", 40000), ("93.184.216.34", 443), "AP", 300);
    p.tcp(600, ("93.184.216.34", 443), ("10.0.0.1", 40000), "AP", 1400);
    // An inbound ssh connection whose own socket was never seen.
    p.tcp(1200, ("10.0.0.9", 5555), ("10.0.0.1", 22), "S", 0);
    p.tcp(1210, ("10.0.0.1", 22), ("10.0.0.9", 5555), "SA", 0);
    p.tcp(1220, ("10.0.0.9", 5555), ("10.0.0.1", 22), "AP", 40);
    // Port reuse: the same 4-tuple, two connections, two processes.
    p.tcp(600, ("10.0.0.1", 40001), ("10.0.0.2", 80), "S", 0);
    p.tcp(610, ("10.0.0.2", 80), ("10.0.0.1", 40001), "SA", 0);
    p.tcp(620, ("10.0.0.1", 40001), ("10.0.0.2", 80), "AF", 0);
    p.tcp(630, ("10.0.0.2", 80), ("10.0.0.1", 40001), "AF", 0);
    p.tcp(3500, ("10.0.0.1", 40001), ("10.0.0.2", 80), "S", 0);
    p.tcp(3510, ("10.0.0.2", 80), ("10.0.0.1", 40001), "SA", 0);
    p.tcp(3520, ("10.0.0.1", 40001), ("10.0.0.2", 80), "AP", 100);
    // TIME_WAIT leftover: seen, no owner.
    p.tcp(800, ("10.0.0.1", 40002), ("10.0.0.2", 80), "AF", 0);
    // mDNS to the wildcard-bound socket.
    p.udp(2000, ("10.0.0.7", 5353), ("10.0.0.1", 5353), 80);
    // ICMP, no socket table for it.
    p.ping(2500, "10.0.0.1", "8.8.8.8");
    // A connection whose socket was never seen.
    p.tcp(2600, ("10.0.0.1", 45000), ("1.2.3.4", 80), "S", 0);
    // Traffic between two other hosts.
    p.tcp(2700, ("192.168.5.5", 1000), ("192.168.5.6", 80), "S", 0);
    Scenario { snaps, pcap: p }
}

fn tmp(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("analyze-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_bundle(dir: &Path, s: &Scenario, format_version: u32, shift_ms: i64) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join(MANIFEST_FILE),
        serde_json::to_string_pretty(&manifest(format_version)).unwrap(),
    )
    .unwrap();
    write_tar(&dir.join(archive_name(1)), &s.snaps);
    s.pcap.write(&dir.join("capture-1.pcap"), shift_ms);
    write_sums(dir);
}

/// `SHA256SUMS` over every file of the bundle, as the recorder writes it
/// at a clean stop, so the evidence checks hold.
fn write_sums(dir: &Path) {
    use sha2::Digest;
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "SHA256SUMS")
        .collect();
    names.sort();
    let mut text = String::new();
    for n in names {
        let h = sha2::Sha256::digest(std::fs::read(dir.join(&n)).unwrap());
        let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
        text.push_str(&format!("{hex}  {n}\n"));
    }
    std::fs::write(dir.join("SHA256SUMS"), text).unwrap();
}

fn analyze(bundle: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_procflow"))
        .arg("analyze")
        .arg(bundle)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

type Rows = Vec<BTreeMap<String, String>>;

fn read_csv(path: &Path) -> Rows {
    let mut r = csv::Reader::from_path(path).unwrap();
    let headers = r.headers().unwrap().clone();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            headers
                .iter()
                .zip(rec.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

fn find<'a>(
    rows: &'a Rows,
    local_port: &str,
    remote: &str,
    first: &str,
) -> &'a BTreeMap<String, String> {
    rows.iter()
        .find(|r| {
            r["local_port"] == local_port
                && format!("{}:{}", r["remote_ip"], r["remote_port"]) == remote
                && r["first_seen"].contains(first)
        })
        .unwrap_or_else(|| panic!("no row {local_port} {remote} {first}: {rows:#?}"))
}

fn sum(rows: &Rows, cols: &[&str]) -> u64 {
    rows.iter()
        .map(|r| {
            cols.iter()
                .map(|c| r[*c].parse::<u64>().unwrap())
                .sum::<u64>()
        })
        .sum()
}

/// Every warning printed on the terminal is in `summary.json`'s
/// `warnings`, in the same order and words, and in report.html's data;
/// returns the summary's warnings as (kind, message).
fn warnings_agree(stderr: &str, report: &Path) -> Vec<(String, String)> {
    let terminal: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("procflow: warning: "))
        .collect();
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("summary.json")).unwrap()).unwrap();
    let warnings: Vec<(String, String)> = summary["warnings"]
        .as_array()
        .expect("summary.json has a warnings array")
        .iter()
        .map(|w| {
            (
                w["kind"].as_str().unwrap().to_string(),
                w["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let messages: Vec<&str> = warnings.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(terminal, messages, "{stderr}");
    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    for m in &messages {
        let quoted = serde_json::to_string(m)
            .unwrap()
            .replace('<', "\\u003c")
            .replace('>', "\\u003e")
            .replace('&', "\\u0026");
        assert!(html.contains(&quoted), "{quoted} not in report.html");
    }
    warnings
}

#[test]
fn attributes_every_rule_and_reason() {
    let d = tmp("rules");
    let s = scenario();
    write_bundle(&d.join("bundle"), &s, FORMAT_VERSION, 0);
    let out = analyze(&d.join("bundle"), &d.join("report"), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let rows = read_csv(&d.join("report/connections.csv"));
    let headers: Vec<String> = csv::Reader::from_path(d.join("report/connections.csv"))
        .unwrap()
        .headers()
        .unwrap()
        .iter()
        .map(String::from)
        .collect();
    let want = [
        "flow_id",
        "proto",
        "family",
        "local_ip",
        "local_port",
        "remote_ip",
        "remote_port",
        "first_seen",
        "last_seen",
        "packets_in",
        "packets_out",
        "bytes_in",
        "bytes_out",
        "pid",
        "process_start",
        "ppid",
        "uid",
        "comm",
        "exe",
        "cmdline",
        "netns",
        "method",
        "time_gap_ms",
        "shared_with",
    ];
    assert_eq!(headers[..want.len()], want);

    let curl = find(&rows, "40000", "93.184.216.34:443", "20.5");
    assert_eq!(
        (curl["pid"].as_str(), curl["method"].as_str()),
        ("10", "exact")
    );
    assert_eq!(curl["comm"], "curl");
    assert_eq!(curl["cmdline"], "curl -s 'https://example.com/a b'");
    assert_eq!(curl["direction"], "out");
    assert_eq!(curl["time_gap_ms"], "0");
    // A holder seen during the flow, but no send call recorded: at most
    // medium, and the note says why.
    assert_eq!(curl["confidence"], "medium");
    assert!(curl["note"].contains("holder evidence only"), "{curl:?}");
    assert_eq!(curl["packets_out"], "2");
    assert_eq!(curl["packets_in"], "2");
    // btime 1699990000 + 5000 ticks / 100 Hz.
    assert_eq!(curl["process_start"], "2023-11-14T19:27:30.000000000Z");
    assert_eq!(curl["netns"], NS.to_string());

    let ssh = find(&rows, "22", "10.0.0.9:5555", "");
    assert_eq!(
        (ssh["pid"].as_str(), ssh["method"].as_str()),
        ("21", "listen-wildcard")
    );
    assert_eq!(ssh["shared_with"], "20:50;21:900");
    assert_eq!(ssh["direction"], "in");

    let w1 = find(&rows, "40001", "10.0.0.2:80", "20.6");
    let w2 = find(&rows, "40001", "10.0.0.2:80", "23.5");
    assert_eq!((w1["pid"].as_str(), w1["inode"].as_str()), ("30", "300"));
    assert_eq!((w2["pid"].as_str(), w2["inode"].as_str()), ("31", "301"));
    assert_eq!(w2["cmdline"], "wget http://10.0.0.2/x");

    let tw = find(&rows, "40002", "10.0.0.2:80", "");
    assert_eq!(
        (tw["pid"].as_str(), tw["method"].as_str()),
        ("", "unattributed:no-owner")
    );
    assert_eq!(tw["socket_state"], "TIME_WAIT");
    assert_eq!(tw["time_gap_ms"], "790");

    let mdns = find(&rows, "5353", "10.0.0.7:5353", "");
    assert_eq!(
        (mdns["pid"].as_str(), mdns["method"].as_str()),
        ("40", "udp-bound-wildcard")
    );

    let icmp = rows.iter().find(|r| r["proto"] == "icmp").unwrap();
    assert_eq!(icmp["method"], "unattributed:not-tcp-udp");
    let lost = find(&rows, "45000", "1.2.3.4:80", "");
    assert_eq!(lost["method"], "unattributed:no-socket");
    let other = rows
        .iter()
        .find(|r| r["local_ip"] == "192.168.5.5")
        .unwrap();
    assert_eq!(other["method"], "unattributed:not-local");
    assert_eq!(rows.len(), 9);

    // Totals add up: per process, per flow, and to the capture itself.
    let procs = read_csv(&d.join("report/processes.csv"));
    let total = s.pcap.total_bytes();
    assert_eq!(sum(&rows, &["bytes_in", "bytes_out"]), total);
    assert_eq!(sum(&procs, &["bytes_in", "bytes_out"]), total);
    assert_eq!(sum(&procs, &["connections"]), rows.len() as u64);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("report/summary.json")).unwrap()).unwrap();
    assert_eq!(summary["counts"]["bytes"], total);
    assert_eq!(summary["diagnostics"]["capture"]["bytes"], total);
    // Processes, then reasons, each by bytes descending.
    let bytes = |r: &BTreeMap<String, String>| -> u64 {
        r["bytes_in"].parse::<u64>().unwrap() + r["bytes_out"].parse::<u64>().unwrap()
    };
    let split = procs.iter().position(|r| r["pid"].is_empty()).unwrap();
    assert!(procs[split..].iter().all(|r| r["pid"].is_empty()));
    for part in [&procs[..split], &procs[split..]] {
        assert!(part.windows(2).all(|w| bytes(&w[0]) >= bytes(&w[1])));
    }
    let mut reasons: Vec<&str> = procs
        .iter()
        .filter(|r| r["pid"].is_empty())
        .map(|r| r["comm"].as_str())
        .collect();
    reasons.sort_by_key(|r| {
        [
            "unattributed:no-socket",
            "unattributed:no-owner",
            "unattributed:not-tcp-udp",
            "unattributed:not-local",
        ]
        .iter()
        .position(|x| x == r)
    });
    assert_eq!(
        reasons,
        [
            "unattributed:no-socket",
            "unattributed:no-owner",
            "unattributed:not-tcp-udp",
            "unattributed:not-local"
        ]
    );
    // The garbage row is counted with its archive, member and line.
    assert_eq!(summary["diagnostics"]["proc_bad_lines"], 1);
    let bad = &summary["diagnostics"]["proc_bad_line_details"][0];
    assert_eq!(bad["archive"], "snapshots-000001.tar");
    assert_eq!(bad["member"], net_member(4, NS, "tcp", false));
    assert_eq!(bad["line"], 3);
    assert!(stderr.contains("1 unusable /proc"), "{stderr}");
    let kinds: Vec<String> = warnings_agree(&stderr, &d.join("report"))
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(kinds.contains(&"proc-bad-lines".to_string()), "{kinds:?}");
    // Output hashes are those of the files.
    for o in summary["outputs"].as_array().unwrap() {
        let bytes = std::fs::read(d.join("report").join(o["path"].as_str().unwrap())).unwrap();
        assert_eq!(o["bytes"], bytes.len() as u64);
    }
    assert_eq!(summary["outputs"].as_array().unwrap().len(), 4);
    // The summary, on standard output (pageable, savable), names the
    // busiest process and the evidence; standard error keeps diagnostics.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Top processes by bytes:"), "{stdout}");
    assert!(stdout.contains("Unattributed bytes by reason:"), "{stdout}");
    assert!(stdout.contains("Evidence: recorder"), "{stdout}");
    assert!(stdout.contains("procflow analyze: "), "{stdout}");
    assert!(!stderr.contains("Top processes by bytes:"), "{stderr}");
    // Progress bars only on a terminal: none here.
    assert!(
        !stderr.contains('\u{1b}') && !stderr.contains("replay ["),
        "{stderr}"
    );
    assert_eq!(summary["inputs"]["files"].as_array().unwrap().len(), 3);
    // JSON lines: one per flow, ECS names.
    let jsonl = std::fs::read_to_string(d.join("report/connections.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(jsonl.lines().next().unwrap()).unwrap();
    assert_eq!(jsonl.lines().count(), rows.len());
    assert_eq!(first["timestamp_desc"], "Flow first seen");
    assert!(first["datetime"].as_str().unwrap().ends_with('Z'));
    let curl_json = jsonl
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["source.port"] == 40000)
        .unwrap();
    assert_eq!(curl_json["process.pid"], 10);
    assert_eq!(curl_json["process.name"], "curl");
    assert_eq!(curl_json["network.direction"], "outbound");
    assert_eq!(curl_json["procflow.method"], "exact");
    assert!(curl_json["network.community_id"]
        .as_str()
        .unwrap()
        .starts_with("1:"));

    // Same bytes whatever the thread count; no overwrite without --force.
    let again = analyze(&d.join("bundle"), &d.join("report"), &[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    for threads in ["1", "3"] {
        let o = analyze(
            &d.join("bundle"),
            &d.join(format!("report-{threads}")),
            &["--threads", threads],
        );
        assert!(o.status.success());
        for f in [
            "connections.csv",
            "connections.jsonl",
            "processes.csv",
            "summary.json",
        ] {
            assert_eq!(
                std::fs::read(d.join("report").join(f)).unwrap(),
                std::fs::read(d.join(format!("report-{threads}")).join(f)).unwrap(),
                "{f} differs with --threads {threads}"
            );
        }
    }
    // With a 100 ms bound the TIME_WAIT row (seen only in the first
    // snapshot, 0.79 s before its flow) no longer counts.
    let forced = analyze(
        &d.join("bundle"),
        &d.join("report"),
        &["--force", "--max-gap", "100ms"],
    );
    assert!(forced.status.success());
    let rows = read_csv(&d.join("report/connections.csv"));
    assert_eq!(
        find(&rows, "40002", "10.0.0.2:80", "")["method"],
        "unattributed:no-socket"
    );
    assert_eq!(find(&rows, "40000", "93.184.216.34:443", "")["pid"], "10");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn cut_archive_is_read_up_to_its_last_complete_snapshot() {
    let d = tmp("cut");
    let s = scenario();
    let b = d.join("bundle");
    write_bundle(&b, &s, FORMAT_VERSION, 0);
    let tar = b.join(archive_name(1));
    let full = std::fs::read(&tar).unwrap();
    // Cut inside the last snapshot's meta.json: 1024 zero bytes of end
    // marker, then the meta data block, then into it.
    let cut_at = full.len() - 1024 - 300;
    std::fs::write(&tar, &full[..cut_at]).unwrap();
    let out = analyze(&b, &d.join("report"), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A cut archive is an evidence warning (exit 3), the reports are
    // written all the same.
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("archive-cut: snapshots-000001.tar is cut at byte offset"),
        "{stderr}"
    );
    assert!(
        stderr.contains("snapshots-000001.tar: archive cut at byte offset"),
        "{stderr}"
    );
    assert!(stderr.contains("read up to snapshot 4"), "{stderr}");
    let kinds: Vec<String> = warnings_agree(&stderr, &d.join("report"))
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(kinds.contains(&"archive-cut".to_string()), "{kinds:?}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("report/summary.json")).unwrap()).unwrap();
    let cut = &summary["diagnostics"]["cut_archives"][0];
    assert_eq!(cut["last_complete_seq"], 4);
    assert_eq!(cut["size"], cut_at as u64);
    assert_eq!(summary["time_ranges"]["snapshots_read"], 4);
    // The flows of the first four seconds are still attributed.
    let rows = read_csv(&d.join("report/connections.csv"));
    assert_eq!(find(&rows, "40000", "93.184.216.34:443", "")["pid"], "10");
    assert_eq!(find(&rows, "40001", "10.0.0.2:80", "23.5")["pid"], "31");

    // A tar cut in the middle of a header block, and one with only the
    // first member: never a panic, never an error.
    let mid_header = 512 * 3 + 100;
    std::fs::write(&tar, &full[..mid_header]).unwrap();
    let out = analyze(&b, &d.join("report2"), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no complete snapshot"), "{stderr}");
    assert!(stderr.contains("archive cut at byte offset 0"), "{stderr}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn capture_outside_the_snapshots_is_an_error_naming_both_ranges() {
    let d = tmp("apart");
    let s = scenario();
    let b = d.join("bundle");
    write_bundle(&b, &s, FORMAT_VERSION, 86_400_000);
    let out = analyze(&b, &d.join("report"), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("do not overlap"), "{stderr}");
    // Capture: a day later; snapshots: the five seconds.
    assert!(
        stderr
            .contains("capture (2023-11-15T22:13:20.500000000Z .. 2023-11-15T22:13:23.520000000Z)"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "snapshots (2023-11-14T22:13:20.000000000Z .. 2023-11-14T22:13:24.010000000Z)"
        ),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn unknown_format_version_is_a_clear_error() {
    let d = tmp("version");
    let b = d.join("bundle");
    write_bundle(&b, &scenario(), FORMAT_VERSION + 98, 0);
    let out = analyze(&b, &d.join("report"), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "format_version {} is not supported",
            FORMAT_VERSION + 98
        )),
        "{stderr}"
    );
    assert!(!d.join("report/connections.csv").exists());
    // Reports never go inside the bundle.
    write_bundle(&b, &scenario(), FORMAT_VERSION, 0);
    let out = analyze(&b, &b.join("r"), &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("inside the bundle"));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(b.join(MANIFEST_FILE))
        .unwrap();
    writeln!(f, "garbage").unwrap();
    let out = analyze(&b, &d.join("report"), &[]);
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("manifest.json: not a procflow bundle manifest"));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn separate_pcap_and_sha256sums_check() {
    let d = tmp("pcap");
    let s = scenario();
    let b = d.join("bundle");
    write_bundle(&b, &s, FORMAT_VERSION, 0);
    std::fs::rename(b.join("capture-1.pcap"), d.join("separate.pcap")).unwrap();
    // Without any capture: a clear error.
    let out = analyze(&b, &d.join("report0"), &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no capture file in the bundle"));
    // A SHA256SUMS with one right and one wrong hash.
    let manifest_hash = {
        use sha2::Digest;
        let h = sha2::Sha256::digest(std::fs::read(b.join(MANIFEST_FILE)).unwrap());
        h.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    std::fs::write(
        b.join("SHA256SUMS"),
        format!(
            "{manifest_hash}  {MANIFEST_FILE}\n{}  {}\n",
            "0".repeat(64),
            archive_name(1)
        ),
    )
    .unwrap();
    let pcap = d.join("separate.pcap");
    let out = analyze(&b, &d.join("report"), &["--pcap", pcap.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The wrong hash is an evidence warning: exit 3, reports written.
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("hash-mismatch: snapshots-000001.tar: SHA-256"),
        "{stderr}"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("report/summary.json")).unwrap()).unwrap();
    let files = summary["inputs"]["files"].as_array().unwrap();
    let by_role = |role: &str| files.iter().find(|f| f["role"] == role).unwrap();
    assert_eq!(by_role("manifest")["recorded_hash"], "match");
    assert_eq!(by_role("archive")["recorded_hash"], "mismatch");
    assert!(by_role("capture").get("recorded_hash").is_none());
    assert_eq!(summary["counts"]["bytes"], s.pcap.total_bytes());
    let rows = read_csv(&d.join("report/connections.csv"));
    assert_eq!(find(&rows, "40000", "93.184.216.34:443", "")["pid"], "10");
    // --no-hash: same reports, inputs listed with their size but unhashed.
    let out = analyze(
        &b,
        &d.join("report-nohash"),
        &["--pcap", pcap.to_str().unwrap(), "--no-hash"],
    );
    // Unhashed, the capture the manifest names but the bundle lacks is
    // still an evidence warning.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("file-missing: capture-1.pcap is named in the manifest"),
        "{stderr}"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("report-nohash/summary.json")).unwrap())
            .unwrap();
    let files = summary["inputs"]["files"].as_array().unwrap();
    let by_role = |role: &str| files.iter().find(|f| f["role"] == role).unwrap();
    assert_eq!(by_role("manifest")["recorded_hash"], "not-checked");
    assert!(by_role("manifest")["sha256"].is_null());
    assert!(by_role("capture")["bytes"].as_u64().unwrap() > 0);
    assert_eq!(
        std::fs::read(d.join("report/connections.csv")).unwrap(),
        std::fs::read(d.join("report-nohash/connections.csv")).unwrap()
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_folder_without_manifest_is_named_as_not_a_bundle() {
    let d = tmp("nobundle");
    std::fs::write(d.join("capture.pcap"), b"").unwrap();
    let out = analyze(&d, &d.join("report"), &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has no manifest.json"), "{err}");
    assert!(err.contains("procflow flows"), "{err}");
    assert!(!d.join("report").exists());
    let _ = std::fs::remove_dir_all(&d);
}

/// The same UDP 4-tuple used by two processes, 3 s apart: one flow for
/// `procflow flows` (UDP idle gap 600 s), two rows for `analyze`, each
/// with its own owner, counts and times, both naming the parent flow; the
/// bytes add up, and the output is the same for any thread count. First
/// from snapshots only (two bound sockets, two inodes), then from send
/// events only (no socket ever seen).
#[test]
fn a_tuple_used_by_two_processes_is_split_at_the_change_of_owner() {
    let d = tmp("split");
    let a = row("0.0.0.0:5000", "0.0.0.0:0", 0x07, 500);
    let b = row("0.0.0.0:5000", "0.0.0.0:0", 0x07, 501);
    let procs = |recs: &[ProcessRecord]| {
        recs.iter()
            .map(|r| serde_json::to_string(r).unwrap() + "\n")
            .collect::<String>()
    };
    let snap = |seq: u64, udp: &str, fds: String, procs: String| Snap {
        seq,
        ms: (seq as i64 - 1) * 1000,
        kind: SnapshotKind::Keyframe,
        tcp: Some(format!("{HEADER}\n")),
        udp: Some(format!("{HEADER}\n{udp}")),
        fds,
        procs,
    };
    let q1 = proc_rec(50, 5000, "dig", &["dig", "@10.0.0.2", "a.example"]);
    let q2 = proc_rec(51, 5300, "nslookup", &["nslookup", "b.example", "10.0.0.2"]);
    let polled = vec![
        snap(
            1,
            &format!("{a}\n"),
            format!("50 5000 {NS} 500\n"),
            procs(std::slice::from_ref(&q1)),
        ),
        snap(
            2,
            &format!("{a}\n"),
            format!("50 5000 {NS} 500\n"),
            String::new(),
        ),
        snap(3, "", String::new(), String::new()),
        snap(
            4,
            &format!("{b}\n"),
            format!("51 5300 {NS} 501\n"),
            procs(std::slice::from_ref(&q2)),
        ),
        snap(
            5,
            &format!("{b}\n"),
            format!("51 5300 {NS} 501\n"),
            String::new(),
        ),
    ];
    let mut pcap = Pcap(Vec::new());
    for i in 0..5 {
        pcap.udp(100 + i * 150, ("10.0.0.1", 5000), ("10.0.0.2", 53), 40);
        pcap.udp(110 + i * 150, ("10.0.0.2", 53), ("10.0.0.1", 5000), 120);
    }
    for i in 0..3 {
        pcap.udp(3100 + i * 200, ("10.0.0.1", 5000), ("10.0.0.2", 53), 50);
        pcap.udp(3110 + i * 200, ("10.0.0.2", 53), ("10.0.0.1", 5000), 200);
    }
    let total = pcap.total_bytes();
    // Events only: the two processes' sends, no socket in any table.
    let ev = |ms: i64, pid: u32, start: u64, comm: &str| {
        serde_json::json!({
            "source": "tracepoint:fib:fib_table_lookup", "kind": "send",
            "mono_ns": clock(ms).monotonic_ns, "pid": pid, "tid": pid,
            "start_time": start, "comm": comm, "netns": NS, "proto": "udp",
            "local_ip": "10.0.0.1", "local_port": 5000,
            "remote_ip": "10.0.0.2", "remote_port": 53
        })
        .to_string()
            + "\n"
    };
    let mut events = BTreeMap::new();
    events.insert(
        2,
        (0..5)
            .map(|i| ev(100 + i * 150, 50, 5000, "dig"))
            .collect::<String>(),
    );
    events.insert(
        5,
        (0..3)
            .map(|i| ev(3100 + i * 200, 51, 5300, "nslookup"))
            .collect::<String>(),
    );
    let evented: Vec<Snap> = (1..=5)
        .map(|seq| {
            snap(
                seq,
                "",
                String::new(),
                if seq == 1 {
                    procs(std::slice::from_ref(&q1))
                } else {
                    String::new()
                },
            )
        })
        .collect();
    for (name, snaps, events, method) in [
        ("polled", &polled, BTreeMap::new(), "udp-bound-wildcard"),
        ("evented", &evented, events, "event-send"),
    ] {
        let bundle = d.join(name);
        std::fs::create_dir_all(&bundle).unwrap();
        std::fs::write(
            bundle.join(MANIFEST_FILE),
            serde_json::to_string_pretty(&manifest(FORMAT_VERSION)).unwrap(),
        )
        .unwrap();
        write_tar_with_events(&bundle.join(archive_name(1)), snaps, &events);
        pcap.write(&bundle.join("capture-1.pcap"), 0);
        write_sums(&bundle);
        let mut outputs = Vec::new();
        for threads in ["1", "3"] {
            let rep = d.join(format!("{name}-report-{threads}"));
            let out = analyze(&bundle, &rep, &["--threads", threads]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            outputs.push(std::fs::read(rep.join("connections.csv")).unwrap());
        }
        assert_eq!(
            outputs[0], outputs[1],
            "{name}: output depends on --threads"
        );
        let rows = read_csv(&d.join(format!("{name}-report-1/connections.csv")));
        assert_eq!(rows.len(), 2, "{name}: {rows:#?}");
        let (r1, r2) = (&rows[0], &rows[1]);
        assert_eq!(
            (r1["pid"].as_str(), r2["pid"].as_str()),
            ("50", "51"),
            "{name}"
        );
        assert_eq!(
            (r1["method"].as_str(), r2["method"].as_str()),
            (method, method)
        );
        // Flow 1 of `procflow flows` is the parent; the parts come after it.
        assert_eq!(r1["parent_flow_id"], "1");
        assert_eq!(r2["parent_flow_id"], "1");
        assert_eq!((r1["flow_id"].as_str(), r2["flow_id"].as_str()), ("2", "3"));
        assert_eq!(
            (r1["packets_out"].as_str(), r1["packets_in"].as_str()),
            ("5", "5")
        );
        assert_eq!(
            (r2["packets_out"].as_str(), r2["packets_in"].as_str()),
            ("3", "3")
        );
        assert!(r1["last_seen"].contains("20.710"), "{name}: {r1:?}");
        assert!(r2["first_seen"].contains("23.100"), "{name}: {r2:?}");
        assert_eq!(sum(&rows, &["bytes_in", "bytes_out"]), total);
        assert!(r2["note"].contains("part 2 of 2"), "{:?}", r2["note"]);
        // Annotated packets follow the cut: each goes to the part whose
        // time holds it, with that part's owner.
        let pcapng = d.join(format!("{name}.pcapng"));
        let out = analyze(
            &bundle,
            &d.join(format!("{name}-report-pcapng")),
            &["--quiet", "--pcapng", pcapng.to_str().unwrap()],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut r =
            pcap_file::pcapng::PcapNgReader::new(std::fs::File::open(&pcapng).unwrap()).unwrap();
        let mut owners: BTreeMap<String, u64> = BTreeMap::new();
        while let Some(block) = r.next_block() {
            if let (pcap_file::pcapng::Block::EnhancedPacket(epb), _) = block.unwrap() {
                for o in &epb.options {
                    if let pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption::Common(
                        pcap_file::pcapng::blocks::opt_common::CommonOption::Comment(c),
                    ) = o
                    {
                        let pid = c.lines().next().unwrap_or("").to_string();
                        let flow = c.lines().find(|l| l.starts_with("Flow: ")).unwrap_or("");
                        *owners.entry(format!("{pid} {flow}")).or_default() += 1;
                    }
                }
            }
        }
        assert_eq!(
            owners.get("PID: 50 Flow: 2"),
            Some(&10),
            "{name}: {owners:?}"
        );
        assert_eq!(
            owners.get("PID: 51 Flow: 3"),
            Some(&6),
            "{name}: {owners:?}"
        );
        if name == "evented" {
            // Known only from its events: the comm they carried.
            assert_eq!(r2["comm"], "nslookup");
            let procs = read_csv(&d.join(format!("{name}-report-1/processes.csv")));
            let p51 = procs.iter().find(|p| p["pid"] == "51").unwrap();
            assert_eq!(p51["comm"], "nslookup");
            // A send event names who opened the socket, not who sent
            // every datagram: medium without per-send runs.
            assert_eq!(r2["confidence"], "medium");
        }
    }
    // The first user's socket never seen: the second one's socket cannot
    // have carried the packets sent before it existed (the snapshots before
    // its first sighting show the port without it). Those packets are a
    // part of their own, without owner, instead of going to the second.
    let half: Vec<Snap> = (1..=5)
        .map(|seq| match seq {
            4 | 5 => snap(
                seq,
                &format!("{b}\n"),
                format!("51 5300 {NS} 501\n"),
                procs(std::slice::from_ref(&q2)),
            ),
            _ => snap(seq, "", String::new(), String::new()),
        })
        .collect();
    let bundle = d.join("half");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(
        bundle.join(MANIFEST_FILE),
        serde_json::to_string_pretty(&manifest(FORMAT_VERSION)).unwrap(),
    )
    .unwrap();
    write_tar(&bundle.join(archive_name(1)), &half);
    pcap.write(&bundle.join("capture-1.pcap"), 0);
    write_sums(&bundle);
    let out = analyze(&bundle, &d.join("half-report"), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = read_csv(&d.join("half-report/connections.csv"));
    assert_eq!(rows.len(), 2, "{rows:#?}");
    assert_eq!(rows[0]["pid"], "");
    assert_eq!(rows[0]["method"], "unattributed:no-socket");
    assert_eq!(
        (
            rows[0]["packets_out"].as_str(),
            rows[0]["packets_in"].as_str()
        ),
        ("5", "5")
    );
    assert_eq!(rows[1]["pid"], "51");
    assert_eq!(rows[1]["parent_flow_id"], "1");

    // `procflow flows` is unchanged: one flow.
    let out = Command::new(env!("CARGO_BIN_EXE_procflow"))
        .arg("flows")
        .arg(d.join("polled/capture-1.pcap"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 2, "{text}");
}

/// Replaces every `from` by `to` (same length) in a file.
fn patch(path: &Path, from: &[u8], to: &[u8]) -> usize {
    assert_eq!(from.len(), to.len());
    let mut b = std::fs::read(path).unwrap();
    let mut n = 0;
    let mut i = 0;
    while i + from.len() <= b.len() {
        if &b[i..i + from.len()] == from {
            b[i..i + from.len()].copy_from_slice(to);
            n += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    std::fs::write(path, b).unwrap();
    n
}

/// A capture whose packets carry ptcpdump-style `PID:` comments (here the
/// annotated pcapng of a first analysis) is evidence of its own: where it
/// agrees with the snapshots the method is `capture-annotation` with high
/// confidence, where it disagrees the snapshots' owner is kept and the
/// disagreement reported.
#[test]
fn capture_annotations_are_checked_against_the_snapshots() {
    let d = tmp("annotations");
    let s = scenario();
    let plain = d.join("plain");
    write_bundle(&plain, &s, FORMAT_VERSION, 0);
    let annotated = d.join("annotated.pcapng");
    let o = analyze(
        &plain,
        &d.join("r0"),
        &["--quiet", "--pcapng", annotated.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let base = read_csv(&d.join("r0/connections.csv"));
    // The same bundle, its capture replaced by the annotated one.
    let again = |name: &str, tamper: Option<(&[u8], &[u8])>| {
        let b = d.join(name);
        write_bundle(&b, &s, FORMAT_VERSION, 0);
        std::fs::copy(&annotated, b.join("capture-1.pcap")).unwrap();
        if let Some((from, to)) = tamper {
            assert!(patch(&b.join("capture-1.pcap"), from, to) > 0);
        }
        write_sums(&b);
        let out = d.join(format!("r-{name}"));
        let o = analyze(&b, &out, &[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (
            read_csv(&out.join("connections.csv")),
            // The summary (stdout) and the warnings (stderr).
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            serde_json::from_slice::<serde_json::Value>(
                &std::fs::read(out.join("summary.json")).unwrap(),
            )
            .unwrap(),
        )
    };
    let (rows, stderr, summary) = again("agree", None);
    assert_eq!(rows.len(), base.len());
    let attributed = base.iter().filter(|r| !r["pid"].is_empty()).count();
    assert!(attributed >= 3);
    for (b, r) in base.iter().zip(&rows) {
        assert_eq!(b["pid"], r["pid"], "flow {}", b["flow_id"]);
        if !b["pid"].is_empty() {
            assert_eq!(r["method"], "capture-annotation", "flow {}", r["flow_id"]);
            assert_eq!(r["confidence"], "high");
        } else {
            assert_eq!(r["method"], b["method"]);
        }
    }
    assert!(
        stderr.contains(&format!(
            "Capture annotations (ptcpdump PID comments): {attributed} flow(s); {attributed} agree"
        )),
        "{stderr}"
    );
    let check = &summary["diagnostics"]["capture"]["annotation_check"];
    assert_eq!(check["agree"], attributed);
    // The capture names pid 99 where the snapshots saw pid 10 (curl).
    let (rows, stderr, summary) = again("disagree", Some((b"PID: 10\n", b"PID: 99\n")));
    let curl: Vec<_> = rows.iter().filter(|r| r["pid"] == "10").collect();
    assert!(!curl.is_empty());
    for r in &curl {
        assert_ne!(r["method"], "capture-annotation");
    }
    assert!(
        stderr.contains("the capture's annotation names pid 99"),
        "{stderr}"
    );
    let dis = summary["diagnostics"]["capture"]["annotation_check"]["disagree"]
        .as_array()
        .unwrap();
    assert_eq!(dis.len(), curl.len());
    assert!(dis
        .iter()
        .all(|x| x["annotated_pid"] == 99 && x["snapshot_pid"] == 10));
    // The same warning, in the same words, in summary.json and report.html.
    let w: Vec<&str> = summary["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["kind"] == "annotation-disagrees")
        .map(|w| w["message"].as_str().unwrap())
        .collect();
    assert_eq!(w.len(), curl.len().min(20), "{w:?}");
    for m in &w {
        assert!(
            stderr.contains(&format!("procflow: warning: {m}\n")),
            "{m}\n{stderr}"
        );
    }
    let html = std::fs::read_to_string(d.join("r-disagree/report.html")).unwrap();
    assert!(html.contains("annotation names pid 99"));
    let _ = std::fs::remove_dir_all(&d);
}

/// Two defects of identities, end to end: a bundle recorded without root
/// (other users' fd directories EACCES, their namespace unreadable too:
/// netns 0 in their records) says `owner-unreadable`, not `no-owner`; and a
/// process recorded again while exiting (no exe, empty command line,
/// re-parented to 1) keeps the identity recorded before.
#[test]
fn unprivileged_bundle_and_exiting_process_identity() {
    let d = tmp("identity");
    let hidden = row("10.0.0.1:40010", "10.0.0.2:80", 0x01, 700);
    let mine = row("10.0.0.1:40011", "10.0.0.2:80", 0x01, 701);
    let procs = |recs: &[ProcessRecord]| {
        recs.iter()
            .map(|r| serde_json::to_string(r).unwrap() + "\n")
            .collect::<String>()
    };
    let other_user = ProcessRecord {
        netns: 0,
        exe: None,
        ..proc_rec(60, 6000, "sshd", &[])
    };
    let good = ProcessRecord {
        ppid: 300,
        ..proc_rec(61, 6100, "curl", &["curl", "http://10.0.0.2/"])
    };
    let exiting = ProcessRecord {
        exe: None,
        cmdline: vec![],
        ppid: 1,
        ..proc_rec(61, 6100, "curl", &[])
    };
    let snaps: Vec<Snap> = (1..=3)
        .map(|seq| Snap {
            seq,
            ms: (seq as i64 - 1) * 1000,
            kind: SnapshotKind::Keyframe,
            tcp: Some(format!("{HEADER}\n{hidden}\n{mine}\n")),
            udp: Some(format!("{HEADER}\n")),
            fds: format!("!60 6000 EACCES\n61 6100 {NS} 701\n"),
            procs: match seq {
                1 => procs(&[other_user.clone(), good.clone()]),
                3 => procs(std::slice::from_ref(&exiting)),
                _ => String::new(),
            },
        })
        .collect();
    let mut pcap = Pcap(Vec::new());
    pcap.tcp(500, ("10.0.0.1", 40010), ("10.0.0.2", 80), "AP", 100);
    pcap.tcp(600, ("10.0.0.1", 40011), ("10.0.0.2", 80), "AP", 100);
    let bundle = d.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    let mut m = manifest(FORMAT_VERSION);
    m.privileges.euid = 1000;
    m.privileges.cap_eff = "0000000000000000".into();
    std::fs::write(
        bundle.join(MANIFEST_FILE),
        serde_json::to_string_pretty(&m).unwrap(),
    )
    .unwrap();
    write_tar(&bundle.join(archive_name(1)), &snaps);
    pcap.write(&bundle.join("capture-1.pcap"), 0);
    write_sums(&bundle);
    let out = analyze(&bundle, &d.join("report"), &["--quiet"]);
    // Unreadable fds are an evidence warning (exit 3), not a failure.
    assert!(
        matches!(out.status.code(), Some(0) | Some(3)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = read_csv(&d.join("report/connections.csv"));
    let h = find(&rows, "40010", "10.0.0.2:80", "20.5");
    assert_eq!(h["method"], "unattributed:owner-unreadable", "{h:?}");
    let c = find(&rows, "40011", "10.0.0.2:80", "20.6");
    assert_eq!((c["pid"].as_str(), c["method"].as_str()), ("61", "exact"));
    assert_eq!(c["exe"], "/usr/bin/curl");
    assert_eq!(c["cmdline"], "curl http://10.0.0.2/");
    assert_eq!(c["ppid"], "300");
    let _ = std::fs::remove_dir_all(&d);
}

/// A process name written by an attacker (terminal escapes, a newline, an
/// HTML end tag) reaches neither the terminal summary nor report.html as
/// is.
#[test]
fn hostile_process_names_are_escaped_in_the_summary_and_the_page() {
    let d = tmp("hostile-names");
    let mut s = scenario();
    let evil = r#""comm":"cu\u001b]0;owned\u0007rl\n</script><b>x""#;
    for snap in &mut s.snaps {
        snap.procs = snap.procs.replace(r#""comm":"curl""#, evil);
    }
    let b = d.join("b");
    write_bundle(&b, &s, FORMAT_VERSION, 0);
    let out = d.join("r");
    let o = analyze(&b, &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("Top processes by bytes:"), "{stdout}");
    for text in [&stdout, &stderr] {
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "raw control characters on the terminal: {text:?}"
        );
    }
    // Escaped, and cut to the column width.
    assert!(stdout.contains(r"cu\x1b]0;owned"), "{stdout}");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(!html.contains('\u{1b}') && !html.contains('\u{7}'));
    assert!(
        !html.contains("</script><b>"),
        "the data closed the script element"
    );
    assert_eq!(html.matches("</script>").count(), 2, "only the page's own");
    let _ = std::fs::remove_dir_all(&d);
}
