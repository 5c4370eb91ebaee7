//! `summary.json`: what was analyzed (with hashes), the host, the time
//! ranges, the totals, what each method attributed, every diagnostic, and
//! the hashes of the other report files. Written last.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::Serialize;
use serde_json::{json, Value};

use super::{rfc3339_ns, ReportInput, ReportWriter};
use crate::attribute::Method;
use crate::snapshot::SnapshotDiagnostics;

/// What a hashed file is to the analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileRole {
    /// The bundle's `manifest.json`.
    Manifest,
    /// A snapshot archive.
    Archive,
    /// A capture file, of the bundle or given with `--pcap`.
    Capture,
    /// A report file written by this analysis.
    Report,
    /// Evidence other tools collected (`procflow correlate`): a UAC
    /// archive or file, an audit log.
    Evidence,
}

/// How a bundle file's hash compares with the bundle's `SHA256SUMS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordedHash {
    /// Listed with the same hash.
    Match,
    /// Listed with another hash: the file changed after recording.
    Mismatch,
    /// The bundle has a `SHA256SUMS` that does not list the file.
    NotListed,
    /// The bundle has no (readable) `SHA256SUMS`.
    NoSha256sums,
    /// Not hashed (`analyze --no-hash`).
    NotChecked,
    /// Could not be read to the end (I/O error, or it vanished): `sha256`
    /// is null; the evidence status says why.
    Unreadable,
}

/// A file read or written, with its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileHash {
    /// What the file is.
    pub role: FileRole,
    /// Path as given (inputs) or file name (outputs).
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Hex SHA-256; `None` only for inputs when `analyze --no-hash` was
    /// given. Outputs are always hashed, while they are written.
    pub sha256: Option<String>,
    /// For bundle files, how the hash compares with the bundle's
    /// SHA256SUMS; absent for outputs and captures given with `--pcap` from
    /// outside the bundle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorded_hash: Option<RecordedHash>,
}

/// Inputs of the summary besides the rows.
pub struct SummaryInput<'a> {
    /// Rows and timeline.
    pub report: &'a ReportInput<'a>,
    /// Bundle directory as given.
    pub bundle: String,
    /// Hashes of the inputs.
    pub inputs: Vec<FileHash>,
    /// Capture-side facts and problems (files, malformed packets, non-IP
    /// frames), as produced by the replay.
    pub capture: Value,
    /// First and last packet time, ns.
    pub capture_range: Option<(i64, i64)>,
    /// Snapshot-side diagnostics.
    pub snapshots: &'a SnapshotDiagnostics,
    /// The `--max-gap` in force, ns.
    pub max_gap_ns: i64,
    /// Hashes of the report files written before the summary.
    pub outputs: Vec<FileHash>,
    /// The evidence checks ([`crate::verify::Evidence`]).
    pub evidence: Value,
    /// The warnings of `analyze`, as the terminal showed them (`None`: no
    /// `warnings` key, as for `correlate`, whose notes are in `foreign`).
    pub warnings: Option<&'a [crate::warning::Warning]>,
}

fn range(r: Option<(i64, i64)>) -> Value {
    match r {
        Some((a, b)) => {
            json!({ "start": rfc3339_ns(a), "end": rfc3339_ns(b), "start_ns": a, "end_ns": b })
        }
        None => Value::Null,
    }
}

/// Writer of `summary.json`.
pub struct Summary<'a>(pub &'a SummaryInput<'a>);

impl Summary<'_> {
    /// The summary as a JSON value.
    pub fn value(&self) -> Value {
        let s = self.0;
        let rows = &s.report.rows;
        let m = s.report.manifest;
        let tl = s.report.timeline;
        let mut per: BTreeMap<Method, (u64, u64, u64)> = BTreeMap::new();
        let (mut packets, mut bytes, mut ip_bytes) = (0u64, 0u64, 0u64);
        for r in rows {
            let f = &r.flow;
            let e = per.entry(r.attribution.method).or_default();
            e.0 += 1;
            e.1 += f.packets_ab + f.packets_ba;
            e.2 += f.bytes_ab + f.bytes_ba;
            packets += f.packets_ab + f.packets_ba;
            bytes += f.bytes_ab + f.bytes_ba;
            ip_bytes += f.ip_bytes_ab + f.ip_bytes_ba;
        }
        let methods: Vec<Value> = Method::all()
            .into_iter()
            .map(|meth| {
                let (flows, pk, by) = per.get(&meth).copied().unwrap_or_default();
                json!({ "method": meth.name(), "flows": flows, "packets": pk, "bytes": by, "doc": meth.doc() })
            })
            .collect();
        let attributed_bytes: u64 = per
            .iter()
            .filter(|(k, _)| k.is_attributed())
            .map(|(_, v)| v.2)
            .sum();
        let clock = match tl.largest_clock_step() {
            Some((step, seq)) => json!({
                "largest_realtime_step_ns": step,
                "at_snapshot": seq,
                "stepped": step.unsigned_abs() >= 100_000_000,
            }),
            None => Value::Null,
        };
        let snap_range = tl.time_range();
        let processes = s
            .report
            .process_rows()
            .iter()
            .filter(|p| p.owner.is_some())
            .count();
        let mut v = json!({
            "tool": { "name": "procflow", "version": env!("CARGO_PKG_VERSION") },
            "options": { "max_gap_ms": s.max_gap_ns / 1_000_000 },
            "inputs": { "bundle": s.bundle, "files": s.inputs },
            "recording": {
                "status": m.status,
                "recorder": m.tool,
                "privileges": m.privileges,
                "options": m.options,
                "capture": m.capture,
                "started": m.started,
                "ended": m.ended,
                "snapshots_in_manifest": m.snapshots,
                "errors": m.errors,
            },
            "host": m.host,
            "time_ranges": {
                "capture": range(s.capture_range),
                "snapshots": range(snap_range),
                "snapshots_read": tl.snapshots.len(),
                "first_snapshot_seq": tl.snapshots.first().map(|x| x.seq),
                "last_snapshot_seq": tl.snapshots.last().map(|x| x.seq),
            },
            "counts": {
                "flows": rows.len(),
                "packets": packets,
                "bytes": bytes,
                "ip_bytes": ip_bytes,
                "attributed_bytes": attributed_bytes,
                "attributed_share": if bytes == 0 { 0.0 } else { attributed_bytes as f64 / bytes as f64 },
                "processes": processes,
                "sockets": tl.sockets.len(),
                "namespaces": tl.netns_list(),
            },
            "methods": methods,
            "evidence": s.evidence,
            "diagnostics": {
                "capture": s.capture,
                "proc_bad_lines": s.snapshots.bad_lines,
                "proc_bad_line_details": s.snapshots.bad_line_details,
                "cut_archives": s.snapshots.cut_archives,
                "warnings": s.snapshots.warnings,
                "clock": clock,
            },
            "outputs": s.outputs,
        });
        if let Some(w) = s.warnings {
            v["warnings"] = w.iter().map(crate::warning::Warning::to_json).collect();
        }
        // Each namespace's resolvers and hosts file, where recorded.
        if !tl.nsfiles.is_empty() {
            v["namespace_files"] = json!({
                "counts": tl.nsfiles.stats,
                "pairs": tl.nsfiles.resolvers(),
            });
        }
        v
    }
}

impl ReportWriter for Summary<'_> {
    fn file_name(&self) -> &'static str {
        "summary.json"
    }

    fn write(&self, out: &mut dyn Write) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut *out, &self.value())?;
        out.write_all(b"\n")
    }
}
