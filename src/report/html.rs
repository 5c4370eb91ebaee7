//! `report.html`: one self-contained page for a human reader. Everything is
//! inline (data as embedded JSON, hand-written CSS, JavaScript and SVG); the
//! page fetches nothing, so it opens offline and leaks nothing.
//!
//! It shows the evidence block (recorder status, input hashes and their
//! check against the bundle's SHA256SUMS, diagnostics), a timeline of bytes
//! per process (one lane each for the busiest processes, one for the other
//! processes, one for unattributed traffic), the top processes and remote
//! endpoints, unattributed traffic by reason, methods by confidence, and a
//! sortable, filterable, paged table of every flow.
//!
//! Size: the picture is aggregated into time bins and the tables into the
//! top processes and endpoints; the flow table carries the
//! [`MAX_PAGE_FLOWS`] flows with the most bytes (about 150 bytes each) and
//! says how many there are in all, linking to connections.csv and
//! connections.jsonl for the rest. The page's size is so bounded whatever
//! the capture holds; the table renders one page at a time.
//!
//! Safety: bundle strings are shown with [`visible`] (control and bidi
//! characters escaped) and inserted with `textContent` only; every `<`,
//! `>` and `&` in the embedded JSON is written as a `\u` escape, so no data
//! can close the script element.

use std::io::{self, Write};

use serde_json::{json, Value};

use super::summary::FileHash;
use super::{confidence, ReportInput, ReportWriter};
use crate::flow::proto_name;
use crate::hostile::visible;
use crate::overview::{LaneKind, Overview, MAX_ENDPOINT_NAMES};
use crate::time::rfc3339_ns;

/// Time bins of the timeline picture.
pub const TIMELINE_BINS: usize = 240;
/// Processes given a timeline lane of their own.
pub const TIMELINE_LANES: usize = 40;
/// Flows the page's table carries: those with the most bytes (all flows
/// are in connections.csv and connections.jsonl).
pub const MAX_PAGE_FLOWS: usize = 10_000;

/// What the page needs besides the rows.
pub struct HtmlInput<'a> {
    /// Rows, manifest, timeline.
    pub report: &'a ReportInput<'a>,
    /// The aggregated view.
    pub overview: &'a Overview,
    /// Bundle path as given.
    pub bundle: String,
    /// Input files and their hashes.
    pub inputs: &'a [FileHash],
    /// The evidence checks: the page's verdict, badges and findings are
    /// those of the terminal.
    pub evidence: &'a crate::verify::Evidence,
    /// Diagnostics worth a reader's attention (already worded).
    pub warnings: Vec<String>,
}

/// Writer of `report.html`.
pub struct HtmlReport<'a>(pub &'a HtmlInput<'a>);

const STYLE: &str = include_str!("html/report.css");
const SCRIPT: &str = include_str!("html/report.js");

fn ms(ns: i64) -> f64 {
    ns as f64 / 1e6
}

impl HtmlReport<'_> {
    /// The data embedded in the page.
    pub fn data(&self) -> Value {
        let h = self.0;
        let r = h.report;
        let o = h.overview;
        let m = r.manifest;
        let tl = o.timeline(r, TIMELINE_BINS, TIMELINE_LANES);
        // The remote names each process's flows went to, for the lane
        // tooltips.
        let mut lane_names: std::collections::HashMap<crate::attribute::ProcKey, Vec<&str>> =
            std::collections::HashMap::new();
        for row in &r.rows {
            if let (Some(o), Some(n)) = (row.attribution.owner, row.name.as_ref()) {
                let v = lane_names.entry(o).or_default();
                if !n.name.is_empty() && v.len() < 6 && !v.contains(&n.name.as_str()) {
                    v.push(n.name.as_str());
                }
            }
        }
        let lanes: Vec<Value> = tl
            .lanes
            .iter()
            .map(|l| {
                let (kind, pid) = match l.kind {
                    LaneKind::Process(k) => ("process", Some(k.pid)),
                    LaneKind::Other => ("other", None),
                    LaneKind::Unattributed => ("unattributed", None),
                };
                let names = match l.kind {
                    LaneKind::Process(k) => lane_names
                        .get(&k)
                        .map(|v| {
                            v.iter()
                                .map(|n| visible(n, 80))
                                .collect::<Vec<_>>()
                                .join(", ")
                        })
                        .unwrap_or_default(),
                    _ => String::new(),
                };
                json!({
                    "kind": kind,
                    "pid": pid,
                    "names": names,
                    "label": visible(&l.label, 60),
                    "total": l.total,
                    "bytes": l.bytes.iter().map(|v| v.round() as u64).collect::<Vec<_>>(),
                })
            })
            .collect();
        let processes: Vec<Value> = o
            .processes
            .iter()
            .map(|p| {
                json!([
                    p.key.pid,
                    p.process_start,
                    visible(&p.comm, 64),
                    visible(&p.exe, 512),
                    visible(&p.cmdline, 2048),
                    p.bytes_out,
                    p.bytes_in,
                    p.flows,
                    p.remotes,
                    rfc3339_ns(p.first_ns),
                    rfc3339_ns(p.last_ns),
                ])
            })
            .collect();
        let endpoints: Vec<Value> = o
            .endpoints
            .iter()
            .take(200)
            .map(|e| {
                let who: Vec<String> = e
                    .processes
                    .iter()
                    .take(5)
                    .map(|(pid, comm, _)| format!("{} ({pid})", visible(comm, 32)))
                    .collect();
                json!([
                    e.proto,
                    e.address(),
                    e.bytes_out,
                    e.bytes_in,
                    e.flows,
                    who.join(", ")
                        + &if e.processes.len() > 5 {
                            format!(" +{} more", e.processes.len() - 5)
                        } else {
                            String::new()
                        },
                    e.unattributed_bytes,
                    e.names_text(MAX_ENDPOINT_NAMES),
                ])
            })
            .collect();
        json!({
            "tool": format!("procflow {}", env!("CARGO_PKG_VERSION")),
            "bundle": visible(&h.bundle, 1024),
            "host": visible(&m.host.hostname, 256),
            "kernel": visible(&m.host.kernel_release, 256),
            "recorder": {
                "status": visible(m.status.as_str(), 256),
                "version": visible(&m.tool.version, 64),
                "started": serde_json::to_value(&m.started).unwrap_or(Value::Null),
                "ended": serde_json::to_value(&m.ended).unwrap_or(Value::Null),
                "snapshots": m.snapshots,
                // Errors a finding already words are shown once, as that
                // finding; the others as sentences.
                "errors": m.errors.iter()
                    .filter(|e| !crate::verify::RECORDER_ERRORS_IN_FINDINGS.contains(&e.what.as_str()))
                    .take(100)
                    .map(|e| visible(&crate::verify::recorder_error_sentence(e), 1024))
                    .collect::<Vec<_>>(),
            },
            "evidence": {
                "ok": h.evidence.ok,
                "failed": h.evidence.failed_areas(),
                "status": h.evidence.status.iter().map(|s| json!({
                    "area": s.area.name(),
                    "state": s.state,
                    "detail": visible(&s.detail, 1024),
                })).collect::<Vec<_>>(),
                "findings": h.evidence.findings.iter().take(200).map(|f| json!({
                    "area": f.area.name(),
                    "message": visible(&f.message(), 1024),
                })).collect::<Vec<_>>(),
                "more_findings": h.evidence.findings.len().saturating_sub(200),
            },
            "inputs": h.inputs.iter().map(|f| json!({
                "role": f.role,
                "path": visible(&f.path, 1024),
                "bytes": f.bytes,
                "sha256": f.sha256,
                "recorded_hash": f.recorded_hash,
            })).collect::<Vec<_>>(),
            "warnings": h.warnings.iter().map(|w| visible(w, 1024)).collect::<Vec<_>>(),
            "totals": {
                "flows": o.flows,
                "flows_in_page": (o.flows as usize).min(MAX_PAGE_FLOWS),
                "bytes": o.bytes,
                "attributed_bytes": o.attributed_bytes,
                "processes": o.processes.len(),
                "endpoints": o.endpoint_count,
                "first": o.range.map(|(a, _)| rfc3339_ns(a)),
                "last": o.range.map(|(_, z)| rfc3339_ns(z)),
            },
            "timeline": {
                "start_ms": ms(tl.start_ns),
                "bin_ms": ms(tl.bin_ns),
                "bins": tl.bins,
                "lanes": lanes,
            },
            "processes": processes,
            "endpoints": endpoints,
            "unattributed": o.unattributed.iter().map(|u| json!([u.reason.as_str(), u.flows, u.bytes])).collect::<Vec<_>>(),
            "methods": o.methods.iter().map(|m| json!([m.method, m.confidence, m.flows, m.bytes])).collect::<Vec<_>>(),
            "local_pairs": o.local_pairs.iter().take(50).map(|p| json!([p.owner.pid, visible(&p.comm, 64), p.bytes_out, p.bytes_in, p.peer.pid, visible(&p.peer_comm, 64), p.flows])).collect::<Vec<_>>(),
            "flow_columns": ["id", "proto", "local", "remote", "first_seen", "last_seen", "bytes_out", "bytes_in", "packets", "pid", "comm", "method", "confidence", "direction", "peer", "remote_name", "ja4"],
        })
    }
}

/// The indexes of the flows the page carries: the [`MAX_PAGE_FLOWS`] with
/// the most bytes (ties: the earlier flow), in report order.
fn page_flows(rows: &[crate::report::ConnectionRow]) -> Vec<usize> {
    let bytes: Vec<u64> = rows
        .iter()
        .map(|r| r.flow.bytes_ab.saturating_add(r.flow.bytes_ba))
        .collect();
    top_indexes(&bytes, MAX_PAGE_FLOWS)
}

/// The indexes of the `n` largest values (ties: the lower index), in
/// index order.
fn top_indexes(values: &[u64], n: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    if n == 0 {
        return Vec::new();
    }
    if idx.len() > n {
        idx.select_nth_unstable_by(n - 1, |&a, &b| values[b].cmp(&values[a]).then(a.cmp(&b)));
        idx.truncate(n);
        idx.sort_unstable();
    }
    idx
}

/// One row of the flow table, in `flow_columns` order.
fn flow_row(row: &crate::report::ConnectionRow) -> serde_json::Value {
    let (lip, lport) = row.local();
    let (rip, rport) = row.remote();
    let [pin, pout, bin, bout, _, _] = row.counters();
    let ep = |ip: std::net::IpAddr, port: Option<u16>| match (ip, port) {
        (std::net::IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
        (ip, Some(p)) => format!("{ip}:{p}"),
        (ip, None) => ip.to_string(),
    };
    // More columns than serde's tuples hold: a JSON array.
    json!([
        row.flow.id,
        proto_name(row.flow.proto),
        ep(lip, lport),
        ep(rip, rport),
        rfc3339_ns(row.flow.first_seen_ns),
        rfc3339_ns(row.flow.last_seen_ns),
        bout,
        bin,
        pin + pout,
        row.attribution.owner.map(|o| o.pid),
        visible(row.process.as_ref().map_or("", |p| p.comm.as_str()), 64),
        row.attribution.method.name(),
        confidence(&row.attribution),
        row.direction(),
        // Both ends local: the process at the other end.
        row.attribution.peer.as_ref().map(|p| match p.owner {
            Some(o) => format!("{} {}", o.pid, visible(row.peer_comm().unwrap_or(""), 64)),
            None => p.method.name(),
        }),
        row.name.as_ref().map_or(String::new(), |n| match n.source {
            Some(src) if n.other.is_empty() => {
                format!("{} ({})", visible(&n.name, 256), src.as_str())
            }
            Some(src) => format!(
                "{} ({}; also {})",
                visible(&n.name, 256),
                src.as_str(),
                visible(&n.other, 256)
            ),
            None => String::new(),
        }),
        row.name.as_ref().and_then(|n| n.ja4.clone()),
    ])
}

/// A writer that turns every `<`, `>` and `&` into its JSON `\u` escape: run
/// over JSON text, whose structure never uses them (they occur only inside
/// strings, where the escape means the same), it makes the text safe
/// inside an HTML `<script>` element. Multi-byte UTF-8 never contains these
/// bytes, so the byte stream can be rewritten as it goes.
struct ScriptSafe<'a>(&'a mut dyn Write);

impl Write for ScriptSafe<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut start = 0;
        for (i, b) in buf.iter().enumerate() {
            let esc: &[u8] = match b {
                b'<' => b"\\u003c",
                b'>' => b"\\u003e",
                b'&' => b"\\u0026",
                _ => continue,
            };
            self.0.write_all(&buf[start..i])?;
            self.0.write_all(esc)?;
            start = i + 1;
        }
        self.0.write_all(&buf[start..])?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// JSON made safe inside an HTML `<script>` element: `<`, `>` and `&` only
/// occur inside JSON strings, where `\u003c` etc. mean the same.
pub fn script_safe_json(v: &Value) -> String {
    let s = v.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 64);
    for c in s.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// The script element's text, exactly as written: what its CSP hash covers.
fn script_text() -> String {
    format!("\n{SCRIPT}")
}

/// The CSP source allowing the report's one script by its hash
/// (`sha256-BASE64`): no other inline script runs, whatever a bundle
/// smuggles into the page.
fn script_hash() -> String {
    use base64::Engine;
    use sha2::Digest;
    let h = sha2::Sha256::digest(script_text().as_bytes());
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(h)
    )
}

impl ReportWriter for HtmlReport<'_> {
    fn file_name(&self) -> &'static str {
        "report.html"
    }

    fn write(&self, out: &mut dyn Write) -> io::Result<()> {
        // Everything but the flows as one small JSON object, then the flows
        // streamed row by row into it (no tree of every flow in memory).
        let head = script_safe_json(&self.data());
        let head = head.strip_suffix('}').unwrap_or(&head);
        write!(
            out,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
             style-src 'unsafe-inline'; script-src '{}'; img-src data:\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>procflow report</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n\
             <noscript>This report draws its tables with JavaScript; the same data is in \
             connections.csv, processes.csv and summary.json.</noscript>\n\
             <main id=\"app\"></main>\n\
             <script type=\"application/json\" id=\"procflow-data\">{head},\"flows\":[",
            script_hash()
        )?;
        let mut safe = ScriptSafe(out);
        // Each row is serialized whole, then escaped in one pass: serde
        // writes many small pieces, each a call through `dyn Write`.
        let mut buf = Vec::new();
        let rows = &self.0.report.rows;
        for (i, row) in page_flows(rows).into_iter().map(|i| &rows[i]).enumerate() {
            buf.clear();
            if i > 0 {
                buf.push(b',');
            }
            serde_json::to_writer(&mut buf, &flow_row(row))?;
            safe.write_all(&buf)?;
        }
        write!(
            out,
            "]}}</script>\n<script>{}</script>\n</body>\n</html>\n",
            script_text()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_json_cannot_close_the_script() {
        let mut v = Vec::new();
        let mut w = ScriptSafe(&mut v);
        serde_json::to_writer(&mut w, &("</script>", "a&b", 1)).unwrap();
        let s = String::from_utf8(v).unwrap();
        assert!(!s.contains('<') && !s.contains('>') && !s.contains('&'));
        let back: (String, String, u32) = serde_json::from_str(&s).unwrap();
        assert_eq!(back, ("</script>".to_string(), "a&b".to_string(), 1));
    }

    #[test]
    fn page_keeps_the_busiest_flows_in_report_order() {
        assert_eq!(top_indexes(&[5, 1, 9, 5, 0, 7], 3), vec![0, 2, 5]);
        // Ties go to the earlier flow.
        assert_eq!(top_indexes(&[5, 5, 5, 5], 2), vec![0, 1]);
        assert_eq!(top_indexes(&[3, 1], 10), vec![0, 1]);
        assert!(top_indexes(&[3, 1], 0).is_empty());
    }

    #[test]
    fn json_cannot_close_the_script() {
        let v = json!({ "comm": "</script><script>alert(1)</script>&" });
        let s = script_safe_json(&v);
        assert!(!s.contains('<') && !s.contains('>') && !s.contains('&'));
        let back: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(back, v);
    }
}
