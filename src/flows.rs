//! The `flows` pipeline: captures replayed into flows, written as one CSV
//! row per flow for every protocol at once (the columns are specified in
//! `docs/flows-csv.md`), with an optional JSON run report.

use crate::capture::{self, CaptureError, Replay, ReplayOptions};
use crate::flow::{community_id, proto_name, tcp_flags_text, Flow, SplitRules};
use crate::time::{rfc3339_ns, seconds_ns};
use std::io::{self, Write};
use std::path::PathBuf;

/// What to replay and how.
#[derive(Debug, Clone)]
pub struct FlowsConfig {
    /// Capture files (pcap or pcapng); merged in order of their first packet.
    pub captures: Vec<PathBuf>,
    /// Worker threads (`None`: all cores). The flows are the same for any
    /// value.
    pub threads: Option<usize>,
    /// When one key starts a new flow.
    pub split: SplitRules,
    /// Where to report the bytes replayed.
    pub progress: Option<crate::progress::Progress>,
}

/// Replays the captures into flows. Unreadable files and bad packets are
/// reported in the [`Replay`], not as `Err`.
pub fn replay_flows(cfg: &FlowsConfig) -> Result<Replay, CaptureError> {
    let opts = ReplayOptions {
        threads: cfg.threads,
        split: cfg.split,
        progress: cfg.progress.clone(),
        ..ReplayOptions::default()
    };
    use crate::progress::{Event, Stage};
    if let Some(p) = &cfg.progress {
        let total = cfg
            .captures
            .iter()
            .filter_map(|c| std::fs::metadata(c).ok())
            .map(|m| m.len())
            .sum();
        p.event(Stage::Replay, Event::Start(total));
    }
    let r = capture::replay(&cfg.captures, &opts);
    if let Some(p) = &cfg.progress {
        p.event(Stage::Replay, Event::Finish);
    }
    r
}

/// Column names of the flows CSV, in order.
pub const CSV_HEADER: &[&str] = &[
    "flow_id",
    "proto",
    "family",
    "a_ip",
    "a_port",
    "b_ip",
    "b_port",
    "first_seen",
    "last_seen",
    "packets_ab",
    "packets_ba",
    "bytes_ab",
    "bytes_ba",
    "ip_bytes_ab",
    "ip_bytes_ba",
    "tcp_flags_ab",
    "tcp_flags_ba",
    "icmp_type",
    "icmp_code",
    "icmp_id",
    "community_id",
    "duration",
];

/// Writes flows as CSV (header first). Every field is a number, an address,
/// a timestamp, letters or base64, so no field ever needs quoting.
pub fn write_csv<W: Write>(mut w: W, flows: &[Flow]) -> io::Result<()> {
    writeln!(w, "{}", CSV_HEADER.join(","))?;
    let opt = |v: Option<u16>| v.map(|p| p.to_string()).unwrap_or_default();
    for f in flows {
        let tcp = f.proto == crate::flow::ipproto::TCP;
        let flags = |x: u8| {
            if tcp {
                tcp_flags_text(x)
            } else {
                String::new()
            }
        };
        let [packets_ab, packets_ba, bytes_ab, bytes_ba, ip_bytes_ab, ip_bytes_ba] =
            f.counters(false);
        writeln!(
            w,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            f.id,
            proto_name(f.proto),
            f.family.as_str(),
            f.a_ip,
            opt(f.a_port),
            f.b_ip,
            opt(f.b_port),
            rfc3339_ns(f.first_seen_ns),
            rfc3339_ns(f.last_seen_ns),
            packets_ab,
            packets_ba,
            bytes_ab,
            bytes_ba,
            ip_bytes_ab,
            ip_bytes_ba,
            flags(f.tcp_flags_ab),
            flags(f.tcp_flags_ba),
            f.icmp.map(|k| k.icmp_type.to_string()).unwrap_or_default(),
            f.icmp.map(|k| k.code.to_string()).unwrap_or_default(),
            f.icmp.map(|k| k.id.to_string()).unwrap_or_default(),
            community_id(f, 0),
            seconds_ns(f.last_seen_ns.saturating_sub(f.first_seen_ns)),
        )?;
    }
    w.flush()
}

/// Writes the JSON run report ([`report_json`]), pretty-printed, with a
/// final newline.
pub fn write_report_json<W: Write>(mut w: W, r: &Replay) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut w, &report_json(r))?;
    writeln!(w)?;
    w.flush()
}

/// The JSON run report: everything but the flows themselves.
pub fn report_json(r: &Replay) -> serde_json::Value {
    let files: Vec<_> = r
        .files
        .iter()
        .map(|f| {
            serde_json::json!({
                "path": f.path.to_string_lossy(),
                "format": f.format,
                "link_types": f.link_types,
                "packets": f.packets,
                "bytes": f.bytes,
                "snaplen_cut": f.snaplen_cut,
                "first_seen": f.first_ns.map(rfc3339_ns),
                "last_seen": f.last_ns.map(rfc3339_ns),
                "problems": f.problems,
                "error": f.error,
            })
        })
        .collect();
    let mut v = serde_json::json!({
        "files": files,
        "packets": r.files.iter().map(|f| f.packets).sum::<u64>(),
        "bytes": r.files.iter().map(|f| f.bytes).sum::<u64>(),
        "flows": r.flows.len(),
        "undecodable": r.undecodable,
        "non_ip": r.non_ip.iter().map(|n| serde_json::json!({
            "ethertype": format!("0x{:04x}", n.ethertype),
            "packets": n.packets,
            "bytes": n.bytes,
        })).collect::<Vec<_>>(),
        "problem_counts": r.problem_counts,
        "problems": r.problems,
    });
    // Only captures that carry process annotations (ptcpdump) have the key,
    // so the run report of any other capture is unchanged.
    if !r.annotations.is_empty() {
        v["process_annotations"] = serde_json::json!(r.annotations);
    }
    v
}

/// One paragraph for stderr: files, packets, flows, problems.
pub fn summary(r: &Replay) -> String {
    let packets: u64 = r.files.iter().map(|f| f.packets).sum();
    let bytes: u64 = r.files.iter().map(|f| f.bytes).sum();
    let unreadable = r.files.iter().filter(|f| f.error.is_some()).count();
    let non_ip: u64 = r.non_ip.iter().map(|n| n.packets).sum();
    let cut: u64 = r.files.iter().map(|f| f.snaplen_cut).sum();
    let total_problems: u64 = r.problem_counts.values().sum();
    let mut s = format!(
        "procflow flows: {} file(s){}, {packets} packets, {bytes} bytes, {} flows",
        r.files.len(),
        if unreadable > 0 {
            format!(" ({unreadable} unreadable)")
        } else {
            String::new()
        },
        r.flows.len()
    );
    s += &format!(", {non_ip} non-IP frames in {} ethertypes", r.non_ip.len());
    s += &format!(", {} packets in no flow", r.undecodable);
    if cut > 0 {
        s += &format!(", {cut} packets cut by snaplen (counted at full length)");
    }
    s += &format!(", {total_problems} problems");
    if !r.problem_counts.is_empty() {
        let kinds: Vec<String> = r
            .problem_counts
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect();
        s += &format!(" ({})", kinds.join(", "));
    }
    s.push('.');
    s
}
