//! `procflow analyze BUNDLE [--pcap FILE...] --out REPORT_DIR [--threads N]
//! [--max-gap DUR] [--force]`: replay the captures, rebuild the socket
//! timeline from the bundle's snapshots, attribute every flow, write the
//! reports (columns in `docs/report-schema.md`).
//!
//! The bundle is only read. Problems that do not prevent a result (bad
//! packets, bad /proc lines, a cut archive, a clock step) are printed as
//! warnings and recorded in `summary.json`.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::attribute::{self, HostContext, Options};
use crate::capture::{self, Replay, ReplayOptions};
use crate::flow::community_id;
use crate::overview::{visible, Overview};
use crate::report::connections_csv::ConnectionsCsv;
use crate::report::connections_jsonl::ConnectionsJsonl;
use crate::report::html::{HtmlInput, HtmlReport};
use crate::report::processes_csv::ProcessesCsv;
use crate::report::summary::{FileHash, Summary, SummaryInput};
use crate::report::{hex, HashingWriter, ReportInput, ReportWriter};
use crate::snapshot::archive::Bundle;
use crate::snapshot::procnet::canonical_ip;
use crate::snapshot::timeline::{Timeline, TimelineBuilder};
use crate::snapshot::SnapshotDiagnostics;
use crate::time::rfc3339_ns;

/// Names of the files `analyze` writes, summary last.
pub const REPORT_FILES: [&str; 5] = [
    "connections.csv",
    "connections.jsonl",
    "processes.csv",
    "report.html",
    "summary.json",
];

/// Arguments of `procflow analyze`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Bundle directory written by `procflow-snap record`; its capture files
    /// (`capture-*`, `*.pcap`, `*.pcapng`) are replayed.
    #[arg(value_name = "BUNDLE")]
    pub bundle: PathBuf,
    /// More capture files recorded separately (same host and time).
    #[arg(long = "pcap", value_name = "FILE")]
    pub pcap: Vec<PathBuf>,
    /// Directory for the reports (created if absent).
    #[arg(long, value_name = "REPORT_DIR")]
    pub out: PathBuf,
    /// Worker threads (default: all cores). The reports are the same for any
    /// value.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    /// Largest time between a flow and a sighting of its socket (or of the
    /// socket's holder), e.g. `30s`, `500ms`, `2m`.
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = parse_duration)]
    pub max_gap: i64,
    /// Overwrite report files already in REPORT_DIR.
    #[arg(long)]
    pub force: bool,
    /// Do not hash the inputs (nor check them against the bundle's
    /// SHA256SUMS). Hashing is the slowest step on large captures; skip it
    /// only for quick re-runs on inputs already verified. `summary.json` then
    /// says `"sha256": null` and `"recorded_hash": "not-checked"`.
    #[arg(long)]
    pub no_hash: bool,
    /// Print only warnings and the one-line result, not the summary of top
    /// processes and endpoints (for scripts).
    #[arg(long, short)]
    pub quiet: bool,
}

/// Parses `30s`, `500ms`, `2m`, `1h`, `250us`, or a plain number of
/// seconds, into nanoseconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 30s, 500ms, 2m)"))?;
    let mult = match unit {
        "" | "s" => 1e9,
        "ms" => 1e6,
        "us" => 1e3,
        "ns" => 1.0,
        "m" | "min" => 60e9,
        "h" => 3600e9,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (use ns, us, ms, s, m, h)"
            ))
        }
    };
    let ns = v * mult;
    if !ns.is_finite() || !(0.0..=1e18).contains(&ns) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(ns as i64)
}

/// SHA-256 and size of a file.
fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut r = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(buf.get(..k).unwrap_or(&[]));
        n += k as u64;
    }
    Ok((hex(&h.finalize()), n))
}

/// The bundle's SHA256SUMS (`HEX  NAME` lines), if present.
fn read_sha256sums(bundle: &Path) -> Option<HashMap<String, String>> {
    let text =
        std::fs::read_to_string(bundle.join(procflow_format::layout::SHA256SUMS_FILE)).ok()?;
    let mut m = HashMap::new();
    for line in text.lines() {
        if let Some((h, name)) = line.split_once(char::is_whitespace) {
            let name = name.trim_start().trim_start_matches('*');
            m.insert(name.to_string(), h.to_ascii_lowercase());
        }
    }
    Some(m)
}

/// Hashes the inputs in parallel, comparing bundle files to SHA256SUMS.
fn hash_inputs(bundle: &Bundle, extra: &[PathBuf], hash: bool) -> Result<Vec<FileHash>, String> {
    let sums = read_sha256sums(&bundle.dir);
    let mut files: Vec<(String, PathBuf, bool)> =
        vec![("manifest".into(), bundle.manifest_path.clone(), true)];
    files.extend(
        bundle
            .archives
            .iter()
            .filter(|p| p.exists())
            .map(|p| ("archive".into(), p.clone(), true)),
    );
    files.extend(
        bundle
            .captures
            .iter()
            .map(|p| ("capture".into(), p.clone(), true)),
    );
    files.extend(extra.iter().map(|p| ("capture".into(), p.clone(), false)));
    files
        .par_iter()
        .map(|(role, path, in_bundle)| {
            let (sha256, bytes) = if hash {
                let (h, n) =
                    hash_file(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
                (Some(h), n)
            } else {
                let meta = std::fs::metadata(path)
                    .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
                (None, meta.len())
            };
            let recorded_hash = if *in_bundle {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                Some(match (&sums, &sha256) {
                    (_, None) => "not-checked".to_string(),
                    (None, _) => "no-sha256sums".to_string(),
                    (Some(m), Some(sha256)) => match m.get(&name) {
                        Some(h) if h == sha256 => "match".to_string(),
                        Some(_) => "mismatch".to_string(),
                        None => "not-listed".to_string(),
                    },
                })
            } else {
                None
            };
            Ok(FileHash {
                role: role.clone(),
                path: path.display().to_string(),
                bytes,
                sha256,
                recorded_hash,
            })
        })
        .collect()
}

/// Reads the snapshots of a bundle into a timeline.
pub fn read_timeline(bundle: &Bundle) -> Result<(Timeline, SnapshotDiagnostics), String> {
    let mut builder = TimelineBuilder::new(bundle.byte_order);
    let mut diag = SnapshotDiagnostics::default();
    bundle
        .read_snapshots(&mut builder, &mut diag)
        .map_err(|e| e.to_string())?;
    Ok((builder.finish(), diag))
}

/// `p` with symbolic links and `..` resolved as far as it exists, the rest
/// appended: where a directory not yet created would be.
fn resolve(p: &Path) -> Option<PathBuf> {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(p)
    };
    let mut rest = Vec::new();
    let mut cur = abs.as_path();
    loop {
        if let Ok(c) = cur.canonicalize() {
            return Some(rest.iter().rev().fold(c, |acc, part| acc.join(part)));
        }
        rest.push(cur.file_name()?.to_os_string());
        cur = cur.parent()?;
    }
}

/// The report directory: created if absent; existing report files are an
/// error unless `force`. Refuses the bundle directory itself.
fn prepare_out(out: &Path, bundle: &Path, force: bool) -> Result<(), String> {
    if let (Some(o), Ok(b)) = (resolve(out), bundle.canonicalize()) {
        if o.starts_with(&b) {
            return Err(format!(
                "--out {} is inside the bundle {}; the bundle is evidence and is never written to",
                out.display(),
                bundle.display()
            ));
        }
    }
    std::fs::create_dir_all(out)
        .map_err(|e| format!("cannot create --out {}: {e}", out.display()))?;
    if !force {
        let existing: Vec<&str> = REPORT_FILES
            .iter()
            .copied()
            .filter(|f| out.join(f).exists())
            .collect();
        if !existing.is_empty() {
            return Err(format!(
                "{} already holds {}; choose another --out or pass --force to overwrite",
                out.display(),
                existing.join(", ")
            ));
        }
    }
    Ok(())
}

fn write_report(dir: &Path, w: &dyn ReportWriter) -> Result<FileHash, String> {
    let path = dir.join(w.file_name());
    let err = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let file = File::create(&path).map_err(err)?;
    let mut hw = HashingWriter::new(BufWriter::with_capacity(1 << 16, file));
    w.write(&mut hw).map_err(err)?;
    let (sha256, bytes, inner) = hw.finish().map_err(err)?;
    inner
        .into_inner()
        .map_err(|e| err(e.into_error()))?
        .sync_all()
        .map_err(err)?;
    Ok(FileHash {
        role: "report".into(),
        path: w.file_name().to_string(),
        bytes,
        sha256: Some(sha256),
        recorded_hash: None,
    })
}

/// The host's addresses from the manifest, canonical.
fn host_context(bundle: &Bundle) -> HostContext {
    let addresses: HashSet<IpAddr> = bundle
        .manifest
        .host
        .addresses
        .iter()
        .filter_map(|a| {
            // Accept `addr` and `addr/prefix` and `addr%scope`.
            let s = a.ip.split(['/', '%']).next().unwrap_or("");
            s.parse::<IpAddr>().ok().map(canonical_ip)
        })
        .collect();
    HostContext {
        capture_netns: bundle.manifest.host.netns,
        addresses,
    }
}

fn capture_range(r: &Replay) -> Option<(i64, i64)> {
    let first = r.flows.iter().map(|f| f.first_seen_ns).min()?;
    let last = r.flows.iter().map(|f| f.last_seen_ns).max()?;
    Some((first, last))
}

/// Diagnostics shown in report.html's evidence block.
fn html_warnings(replay: &Replay, diag: &SnapshotDiagnostics) -> Vec<String> {
    let mut w = Vec::new();
    for f in &replay.files {
        if let Some(e) = &f.error {
            w.push(format!("{}: unreadable: {e}", f.path.display()));
        }
    }
    if !replay.problem_counts.is_empty() {
        let kinds: Vec<String> = replay
            .problem_counts
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        w.push(format!("capture problems: {}", kinds.join(", ")));
    }
    for c in &diag.cut_archives {
        w.push(format!(
            "{}: archive cut at byte offset {} of {} ({})",
            c.archive, c.offset, c.size, c.reason
        ));
    }
    w.extend(diag.warnings.iter().cloned());
    if diag.bad_lines > 0 {
        w.push(format!(
            "{} unusable /proc or listing line(s)",
            diag.bad_lines
        ));
    }
    w
}

/// The evidence status lines of the terminal summary: how the recorder
/// ended and whether the inputs match the bundle's SHA256SUMS.
fn evidence_status(bundle: &Bundle, inputs: &[crate::report::summary::FileHash]) -> String {
    let m = &bundle.manifest;
    let mut s = format!(
        "Evidence: recorder {} ({} snapshots, {} recorder error(s))",
        visible(&m.status, 40),
        m.snapshots,
        m.errors.len()
    );
    let count = |what: &str| {
        inputs
            .iter()
            .filter(|f| f.recorded_hash.as_deref() == Some(what))
            .count()
    };
    let (ok, bad) = (count("match"), count("mismatch"));
    let unchecked = inputs.len() - ok - bad;
    s.push_str(&format!(
        "; inputs: {ok} match SHA256SUMS, {bad} MISMATCH, {unchecked} not checked"
    ));
    s
}

/// Runs `procflow analyze`.
pub fn run(args: Args) -> super::Result<ExitCode> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.map_or(0, usize::from))
        .build()
        .map_err(|e| format!("cannot start worker threads: {e}"))?;
    pool.install(|| analyze(&args))
}

fn analyze(args: &Args) -> super::Result<ExitCode> {
    let bundle = Bundle::open(&args.bundle)?;
    prepare_out(&args.out, &args.bundle, args.force)?;
    let mut captures = bundle.captures.clone();
    captures.extend(args.pcap.iter().cloned());
    if captures.is_empty() {
        return Err(format!(
            "{}: no capture file in the bundle (capture-*, *.pcap, *.pcapng) and no --pcap given",
            args.bundle.display()
        )
        .into());
    }
    let opts = ReplayOptions {
        threads: args.threads.map(usize::from),
        ..ReplayOptions::default()
    };
    // Replay, the timeline and the input hashes are independent: run them
    // side by side.
    let (replay, (timeline, hashes)) = rayon::join(
        || capture::replay(&captures, &opts),
        || {
            rayon::join(
                || read_timeline(&bundle),
                || hash_inputs(&bundle, &args.pcap, !args.no_hash),
            )
        },
    );
    let replay = replay?;
    let (timeline, diag) = timeline?;
    let inputs = hashes?;
    for p in &replay.problems {
        eprintln!("procflow: warning: {p}");
    }
    for c in &diag.cut_archives {
        eprintln!(
            "procflow: warning: {}: archive cut at byte offset {} of {} ({}); read up to {}",
            c.archive,
            c.offset,
            c.size,
            c.reason,
            c.last_complete_seq
                .map_or("no complete snapshot".to_string(), |s| format!(
                    "snapshot {s}"
                ))
        );
    }
    for w in &diag.warnings {
        eprintln!("procflow: warning: {w}");
    }
    if diag.bad_lines > 0 {
        let first = diag.bad_line_details.first();
        eprintln!(
            "procflow: warning: {} unusable /proc or listing line(s){}",
            diag.bad_lines,
            first.map_or(String::new(), |b| format!(
                ", first: {} {} line {}: {}",
                b.archive, b.member, b.line, b.reason
            ))
        );
    }
    let Some((s0, s1)) = timeline.time_range() else {
        return Err(format!(
            "{}: no complete snapshot in the bundle's archives; nothing to attribute with",
            args.bundle.display()
        )
        .into());
    };
    let crange = capture_range(&replay);
    if let Some((c0, c1)) = crange {
        if c1 < s0 || c0 > s1 {
            return Err(format!(
                "the capture ({} .. {}) and the snapshots ({} .. {}) do not overlap in time; \
                 were they recorded on the same host at the same time?",
                rfc3339_ns(c0),
                rfc3339_ns(c1),
                rfc3339_ns(s0),
                rfc3339_ns(s1)
            )
            .into());
        }
    } else {
        eprintln!("procflow: warning: the captures hold no IP flow");
    }
    if let Some((step, seq)) = timeline.largest_clock_step() {
        if step.unsigned_abs() >= 100_000_000 {
            eprintln!(
                "procflow: warning: the realtime clock stepped by {:.3} s before snapshot {seq}; \
                 times near it may be off by that much",
                step as f64 / 1e9
            );
        }
    }
    let ctx = host_context(&bundle);
    let aopts = Options {
        max_gap_ns: args.max_gap,
    };
    let attributions = attribute::attribute_all(&timeline, &ctx, &aopts, &replay.flows);
    let cid = |f: &crate::flow::Flow| community_id(f, 0);
    let input = ReportInput::new(
        &bundle.manifest,
        &timeline,
        &replay.flows,
        &attributions,
        &cid,
    );
    let overview = Overview::new(&input);
    let html_input = HtmlInput {
        report: &input,
        overview: &overview,
        bundle: args.bundle.display().to_string(),
        inputs: &inputs,
        warnings: html_warnings(&replay, &diag),
    };
    let outputs = vec![
        write_report(&args.out, &ConnectionsCsv(&input))?,
        write_report(&args.out, &ConnectionsJsonl(&input))?,
        write_report(&args.out, &ProcessesCsv(&input))?,
        write_report(&args.out, &HtmlReport(&html_input))?,
    ];
    let summary_input = SummaryInput {
        report: &input,
        bundle: args.bundle.display().to_string(),
        inputs: inputs.clone(),
        capture: super::flows::report_json(&replay),
        capture_range: crange,
        snapshots: &diag,
        max_gap_ns: args.max_gap,
        outputs,
    };
    write_report(&args.out, &Summary(&summary_input))?;
    let total: u64 = input
        .rows
        .iter()
        .map(|r| r.flow.bytes_ab + r.flow.bytes_ba)
        .sum();
    let attributed: u64 = input
        .rows
        .iter()
        .filter(|r| r.attribution.method.is_attributed())
        .map(|r| r.flow.bytes_ab + r.flow.bytes_ba)
        .sum();
    if !args.quiet {
        eprint!("\n{}", overview.terminal(10));
        eprintln!("{}\n", evidence_status(&bundle, &inputs));
    }
    eprintln!(
        "procflow analyze: {} flows, {} snapshots, {} sockets; {} of {} bytes ({:.1}%) attributed; reports in {} (open report.html)",
        input.rows.len(),
        timeline.snapshots.len(),
        timeline.sockets.len(),
        attributed,
        total,
        if total == 0 { 100.0 } else { attributed as f64 * 100.0 / total as f64 },
        args.out.display()
    );
    Ok(if replay.any_file_unreadable() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(30_000_000_000));
        assert_eq!(parse_duration("30"), Ok(30_000_000_000));
        assert_eq!(parse_duration("500ms"), Ok(500_000_000));
        assert_eq!(parse_duration("2m"), Ok(120_000_000_000));
        assert_eq!(parse_duration("1.5s"), Ok(1_500_000_000));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("").is_err());
    }
}
