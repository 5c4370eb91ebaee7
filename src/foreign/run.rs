//! The `correlate` pipeline: read the evidence, replay the captures, join,
//! write the reports (the same files as `analyze`, plus a `foreign`
//! section in `summary.json`).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use procflow_format::layout::Manifest;
use rayon::prelude::*;
use serde_json::{json, Value};

use crate::capture::{self, CaptureError, ReplayOptions};
use crate::flow::community_id;
use crate::outdir::ReportDir;
use crate::overview::Overview;
use crate::report::connections_csv::ConnectionsCsv;
use crate::report::connections_jsonl::ConnectionsJsonl;
use crate::report::html::{HtmlInput, HtmlReport};
use crate::report::processes_csv::ProcessesCsv;
use crate::report::summary::{FileHash, FileRole, Summary, SummaryInput};
use crate::report::{ReportInput, ReportWriter};
use crate::snapshot::SnapshotDiagnostics;

use super::audit::{self, AuditLog};
use super::join::{self, JoinOptions, Joined};
use super::uac::{self, UacCollection};
use super::{detect, EvidenceError, Kind};

/// What to correlate and how.
#[derive(Debug, Clone)]
pub struct CorrelateConfig {
    /// Capture files (pcap, pcapng), one capture or its rotated parts.
    pub captures: Vec<PathBuf>,
    /// Evidence paths: UAC archives or folders, audit logs, folders of them.
    pub evidence: Vec<PathBuf>,
    /// Report directory.
    pub out: PathBuf,
    /// The host's addresses, besides those the evidence gives.
    pub host_ips: Vec<IpAddr>,
    /// `--clock-offset SOURCE=DUR`: `uac`, `audit` (ns, added to the
    /// source's times).
    pub offsets: BTreeMap<String, i64>,
    /// Largest gap between an audit call and its flow, ns.
    pub max_gap_ns: i64,
    /// Worker threads of the replay.
    pub threads: Option<usize>,
    /// Overwrite reports already in `out`.
    pub force: bool,
    /// Hash the inputs.
    pub hash: bool,
    /// Write CSV text cells as they were.
    pub csv_raw: bool,
    /// Progress of replay.
    pub progress: Option<crate::progress::Progress>,
}

/// Why a correlation could not produce reports.
#[derive(Debug, thiserror::Error)]
pub enum CorrelateError {
    /// An evidence path cannot be used.
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
    /// The captures cannot be replayed at all.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// The report directory cannot be used.
    #[error(transparent)]
    ReportDir(#[from] crate::outdir::OutputError),
    /// No evidence given, or none usable.
    #[error("no evidence: give --evidence with a UAC collection or an audit log")]
    NoEvidence,
    /// A report file cannot be written.
    #[error("cannot write {}", crate::hostile::term_path(path))]
    WriteReport {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// What a finished correlation found.
#[derive(Debug, Clone)]
pub struct CorrelateOutcome {
    /// Flows.
    pub flows: usize,
    /// Bytes of all flows.
    pub bytes: u64,
    /// Bytes attributed.
    pub attributed_bytes: u64,
    /// Some capture file could not be read at all.
    pub capture_unreadable: bool,
    /// Evidence damage found (cut archive, forged or unreadable lines):
    /// said in the reports; exit status 3.
    pub evidence_damaged: Vec<String>,
    /// The clock of each source, one sentence each.
    pub clocks: Vec<String>,
    /// What each source covered, one sentence each.
    pub coverage: Vec<String>,
    /// The terminal summary (top processes, endpoints, reasons).
    pub terminal_summary: String,
}

/// Evidence read, by kind.
#[derive(Default)]
struct Inputs {
    uacs: Vec<UacCollection>,
    audit_files: Vec<(PathBuf, bool)>,
    acquisition_logs: Vec<(PathBuf, Option<(i64, i64)>)>,
    hashed: Vec<PathBuf>,
}

/// `Acquisition Started: Sat Dec 05 19:38:52 2026 +0000` and `Finished`.
fn acquisition_log(path: &Path) -> Option<(i64, i64)> {
    let b = crate::hostile::read_small_file(path, 1 << 20).ok()?;
    let t = String::from_utf8_lossy(&b);
    let find = |k: &str| {
        t.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| super::parse_ctime(v.trim(), 0))
    };
    let s = find("Acquisition Started:")?;
    Some((s, find("Acquisition Finished:").unwrap_or(s)))
}

/// Every regular file under `dir` (links not followed), bounded.
fn files_under(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    if depth > 8 || out.len() > 100_000 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut ents: Vec<_> = rd.flatten().collect();
    ents.sort_by_key(|e| e.file_name());
    for e in ents {
        let Ok(m) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        if m.is_dir() {
            files_under(&e.path(), out, depth + 1);
        } else if m.is_file() {
            out.push(e.path());
        }
    }
}

fn classify(
    path: &Path,
    inp: &mut Inputs,
    in_folder: bool,
    warn: &mut dyn FnMut(&str),
) -> Result<(), EvidenceError> {
    let kind = match detect(path) {
        Ok(k) => k,
        Err(e @ EvidenceError::Unknown { .. }) if in_folder => {
            warn(&format!("skipped: {e}"));
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    match kind {
        Kind::Bundle => {
            return Err(EvidenceError::Bundle {
                path: path.to_path_buf(),
            })
        }
        Kind::UacArchive { gzip } => {
            inp.uacs.push(uac::read(path, Some(gzip))?);
            inp.hashed.push(path.to_path_buf());
        }
        Kind::UacFolder => {
            inp.uacs.push(uac::read(path, None)?);
            files_under(path, &mut inp.hashed, 0);
        }
        Kind::UacAcquisitionLog => {
            inp.acquisition_logs
                .push((path.to_path_buf(), acquisition_log(path)));
            inp.hashed.push(path.to_path_buf());
        }
        Kind::AuditLog { gzip } => {
            inp.audit_files.push((path.to_path_buf(), gzip));
            inp.hashed.push(path.to_path_buf());
        }
        Kind::Folder => {
            if in_folder {
                return Ok(());
            }
            let mut files = Vec::new();
            let Ok(rd) = std::fs::read_dir(path) else {
                return Err(EvidenceError::Read {
                    path: path.to_path_buf(),
                    source: io::Error::other("cannot list the folder"),
                });
            };
            for e in rd.flatten() {
                if std::fs::symlink_metadata(e.path()).is_ok_and(|m| m.is_file() || m.is_dir()) {
                    files.push(e.path());
                }
            }
            files.sort();
            let before = (inp.uacs.len(), inp.audit_files.len());
            for f in files {
                classify(&f, inp, true, warn)?;
            }
            if before == (inp.uacs.len(), inp.audit_files.len()) {
                return Err(EvidenceError::Unknown {
                    path: path.to_path_buf(),
                    what: "a folder holding no UAC collection and no audit log".into(),
                });
            }
        }
    }
    Ok(())
}

fn hash_files(paths: &[PathBuf], role: FileRole, hash: bool) -> Vec<FileHash> {
    paths
        .par_iter()
        .map(|p| {
            let (sha256, bytes) = if hash {
                match procflow_format::hash::sha256_file(p) {
                    Ok((h, n)) => (Some(h), n),
                    Err(_) => (None, std::fs::metadata(p).map_or(0, |m| m.len())),
                }
            } else {
                (None, std::fs::metadata(p).map_or(0, |m| m.len()))
            };
            FileHash {
                role,
                path: p.display().to_string(),
                bytes,
                sha256,
                recorded_hash: None,
            }
        })
        .collect()
}

/// A manifest standing in for a bundle's, so the report writers can be
/// shared: the host facts the evidence gives, no recorder.
fn stand_in_manifest(uacs: &[UacCollection], j: &Joined, argv: &[String]) -> Manifest {
    let host = uacs
        .iter()
        .find_map(|c| c.hostname.clone())
        .unwrap_or_default();
    let btime = join::boot_time(uacs);
    let t = j
        .coverage
        .iter()
        .filter_map(|c| c.start_ns)
        .min()
        .unwrap_or(0);
    let stamp = |ns: i64| json!({ "utc": crate::time::rfc3339_ns(ns), "clocks": { "realtime_ns": ns, "monotonic_ns": 0, "boottime_ns": 0 } });
    let v = json!({
        "format": "foreign-evidence",
        "format_version": 0,
        "tool": { "name": "procflow correlate", "version": env!("CARGO_PKG_VERSION"), "argv": argv },
        "host": {
            "hostname": host,
            "kernel_release": "",
            "kernel_version": "",
            "arch": "",
            "byte_order": "little",
            "boot_id": "",
            "btime": btime.unwrap_or(0),
            "clk_tck": if btime.is_some() { 100 } else { 0 },
            "clocksource": "",
            "netns": 0,
            "addresses": j.host_addresses.iter().map(|a| json!({ "iface": "", "ip": a.to_string() })).collect::<Vec<_>>(),
        },
        "privileges": { "euid": 0, "cap_eff": "" },
        "options": { "interval_ms": 0, "keyframe_every": 0, "full_walk_ms": 0, "max_cpu_percent": null, "archive_max_bytes": 0 },
        "capture": null,
        "started": stamp(t),
        "ended": null,
        "status": "foreign-evidence",
        "archives": [],
        "capture_files": [],
        "snapshots": 0,
        "errors": [],
    });
    serde_json::from_value(v).expect("the stand-in manifest matches the manifest type")
}

fn write_one(dir: &mut ReportDir, w: &dyn ReportWriter) -> Result<FileHash, CorrelateError> {
    let path = dir.path().join(w.file_name());
    let file = dir
        .create(w.file_name())
        .and_then(|f| crate::analyze::hash_into(w, f));
    file.map_err(|source| CorrelateError::WriteReport { path, source })
}

/// `summary.json` with the `foreign` section.
struct ForeignSummary<'a> {
    base: Summary<'a>,
    foreign: Value,
}

impl ReportWriter for ForeignSummary<'_> {
    fn file_name(&self) -> &'static str {
        "summary.json"
    }
    fn write(&self, out: &mut dyn Write) -> io::Result<()> {
        let mut v = self.base.value();
        v["recording"] = Value::Null;
        v["foreign"] = self.foreign.clone();
        serde_json::to_writer_pretty(&mut *out, &v)?;
        out.write_all(b"\n")
    }
}

/// Damage of the evidence worth an exit status.
fn damage(uacs: &[UacCollection], audit: Option<&AuditLog>) -> Vec<String> {
    let mut d = Vec::new();
    for c in uacs {
        let p = &c.problems;
        let name = c.path.display().to_string();
        if let Some(cut) = &p.archive_cut {
            d.push(format!("{name}: {cut}; read up to there"));
        }
        if p.members_cut > 0 {
            d.push(format!(
                "{name}: {} member(s) larger than the cap, read in part",
                p.members_cut
            ));
        }
        if p.suspicious_names > 0 {
            d.push(format!("{name}: {} member name(s) with `..` or an absolute path (never used as paths; ignored)", p.suspicious_names));
        }
        if p.fd_lines_dropped > 0 {
            d.push(format!("{name}: {} fd listing line(s) dropped: a socket link with more than socket:[N], or an fd listed twice (forged by a file name with a newline?)", p.fd_lines_dropped));
        }
        if p.bad_lines > 0 {
            d.push(format!(
                "{name}: {} unusable table or listing line(s){}",
                p.bad_lines,
                p.bad_line_details
                    .first()
                    .map_or(String::new(), |b| format!(", first: {b}"))
            ));
        }
    }
    if let Some(a) = audit {
        let p = &a.problems;
        if p.bad_lines > 0 {
            d.push(format!(
                "audit log: {} line(s) that are not audit records{}",
                p.bad_lines,
                p.bad_line_details
                    .first()
                    .map_or(String::new(), |b| format!(", first: {b}"))
            ));
        }
        if p.long_lines > 0 {
            d.push(format!(
                "audit log: {} line(s) longer than {} bytes, cut",
                p.long_lines,
                audit::LINE_CAP
            ));
        }
        if p.without_sockaddr > 0 {
            d.push(format!(
                "audit log: {} socket call(s) without a readable SOCKADDR record",
                p.without_sockaddr
            ));
        }
    }
    d
}

/// Runs the correlation; warnings go to `on_warning` as found.
pub fn run_correlate(
    cfg: &CorrelateConfig,
    argv: &[String],
    on_warning: &mut dyn FnMut(&str),
) -> Result<CorrelateOutcome, CorrelateError> {
    if cfg.evidence.is_empty() {
        return Err(CorrelateError::NoEvidence);
    }
    let evidence_paths: Vec<&Path> = cfg.evidence.iter().map(PathBuf::as_path).collect();
    let mut out = ReportDir::prepare(
        &cfg.out,
        &evidence_paths,
        &crate::analyze::REPORT_FILES,
        cfg.force,
    )?;
    let mut inp = Inputs::default();
    for p in &cfg.evidence {
        classify(p, &mut inp, false, on_warning)?;
    }
    if inp.uacs.is_empty() && inp.audit_files.is_empty() {
        return Err(CorrelateError::NoEvidence);
    }
    // Acquisition logs: times for collections without uac.log.
    for (path, times) in &inp.acquisition_logs {
        match times {
            Some(t) => {
                for c in inp.uacs.iter_mut().filter(|c| c.acquisition.is_none()) {
                    c.acquisition = Some(*t);
                }
            }
            None => on_warning(&format!(
                "{}: a UAC acquisition log without readable start and finish times",
                path.display()
            )),
        }
    }
    let opts = ReplayOptions {
        threads: cfg.threads,
        progress: cfg.progress.clone(),
        ..ReplayOptions::default()
    };
    let (replay, (audit, inputs)) = rayon::join(
        || capture::replay(&cfg.captures, &opts),
        || {
            rayon::join(
                || {
                    if inp.audit_files.is_empty() {
                        Ok(None)
                    } else {
                        audit::read(&inp.audit_files).map(Some)
                    }
                },
                || {
                    let mut h = hash_files(&cfg.captures, FileRole::Capture, cfg.hash);
                    h.extend(hash_files(&inp.hashed, FileRole::Evidence, cfg.hash));
                    h
                },
            )
        },
    );
    let replay = replay?;
    let audit = audit?;
    for p in replay.problems.iter().take(50) {
        on_warning(&p.to_string());
    }
    for f in &replay.files {
        if let Some(e) = &f.error {
            on_warning(&format!("{}: unreadable: {e}", f.path.display()));
        }
    }
    let jopts = JoinOptions {
        host_ips: cfg.host_ips.clone(),
        offsets: cfg.offsets.clone(),
        max_gap_ns: cfg.max_gap_ns,
    };
    let joined = join::join(&replay.flows, &inp.uacs, audit.as_ref(), &jopts);
    for w in &joined.warnings {
        on_warning(w);
    }
    let damaged = damage(&inp.uacs, audit.as_ref());
    for d in &damaged {
        on_warning(d);
    }
    let mut notes = Vec::new();
    for c in &inp.uacs {
        let p = &c.problems;
        if !p.missing_per_pid.is_empty() {
            let what: Vec<String> = p
                .missing_per_pid
                .iter()
                .map(|(f, n)| format!("{f} {n}"))
                .collect();
            notes.push(format!(
                "{}: {} pid(s) with an fd listing lack identity files (processes exit while UAC works through every pid): missing {}; argv and start time taken from ps output where they are",
                c.path.display(),
                p.pids_incomplete,
                what.join(", ")
            ));
        }
        if !c.has_fd_listings {
            notes.push(format!(
                "{}: no fd listings (proc/PID/fd.txt): owners come from ss/netstat/lsof output only (uac-ss)",
                c.path.display()
            ));
        }
    }
    if let Some(a) = &audit {
        let p = &a.problems;
        if p.failed > 0 || p.other_family > 0 {
            notes.push(format!(
                "audit log: {} call(s) on unix/netlink sockets, {} failed call(s) that started no connection: not used",
                p.other_family, p.failed
            ));
        }
        if p.interpreted_lines > 0 {
            notes.push("audit log: ausearch -i output: its local times are read as UTC; the clock estimate absorbs the zone".into());
        }
        if p.evicted > 0 {
            notes.push(format!(
                "audit log: {} event(s) closed early (more than {} open at once)",
                p.evicted,
                audit::OPEN_CAP
            ));
        }
    }
    for n in &notes {
        on_warning(n);
    }
    let manifest = stand_in_manifest(&inp.uacs, &joined, argv);
    let cid = |f: &crate::flow::Flow| community_id(f, 0);
    // The rows own their flows and attributions; replay's flows still
    // count in summary.json and the closing line.
    let mut input = ReportInput::new(
        &manifest,
        &joined.timeline,
        replay.flows.clone(),
        joined.attributions.clone(),
        &cid,
    );
    input.csv_raw = cfg.csv_raw;
    // A process known only from audit records has no start time: none is
    // shown (its key's 0 would read as the boot time).
    for r in &mut input.rows {
        if r.attribution.owner.is_some_and(|o| o.start_time == 0) {
            r.process_start.clear();
        }
    }
    let overview = Overview::new(&input);
    let clocks: Vec<String> = joined.clocks.iter().map(|c| c.text.clone()).collect();
    let coverage: Vec<String> = joined
        .coverage
        .iter()
        .map(|c| {
            let range = match (c.start_ns, c.end_ns) {
                (Some(a), Some(b)) => format!("{} .. {}", crate::time::rfc3339_ns(a), crate::time::rfc3339_ns(b)),
                _ => "no time".into(),
            };
            format!(
                "{}: {range}; {} pid(s), {} {}; candidate for {} flow(s), kept for {} flow(s), {} bytes",
                c.source,
                c.pids,
                c.sockets,
                if c.source == "audit" { "socket event(s)" } else { "socket(s)" },
                c.flows_explained,
                c.flows_attributed,
                c.bytes_attributed
            )
        })
        .collect();
    let mut html_warnings: Vec<String> = Vec::new();
    html_warnings.push(format!(
        "foreign evidence (procflow correlate): host addresses {} (from {})",
        joined
            .host_addresses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        if joined.host_address_source.is_empty() {
            "nothing"
        } else {
            &joined.host_address_source
        }
    ));
    html_warnings.extend(clocks.iter().cloned());
    html_warnings.extend(coverage.iter().cloned());
    html_warnings.extend(damaged.iter().map(|d| format!("evidence: {d}")));
    html_warnings.extend(notes.iter().cloned());
    html_warnings.extend(joined.warnings.iter().cloned());
    if joined.disagreements > 0 {
        html_warnings.push(format!(
            "{} flow(s) where two sources name different pids (note column)",
            joined.disagreements
        ));
    }
    let foreign_evidence = crate::verify::Evidence::foreign(&damaged);
    let html_input = HtmlInput {
        report: &input,
        overview: &overview,
        bundle: cfg
            .evidence
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        inputs: &inputs,
        evidence: &foreign_evidence,
        warnings: html_warnings,
    };
    let mut outputs = Vec::new();
    for w in [
        &ConnectionsCsv(&input) as &dyn ReportWriter,
        &ConnectionsJsonl(&input),
        &ProcessesCsv(&input),
        &HtmlReport(&html_input),
    ] {
        outputs.push(write_one(&mut out, w)?);
    }
    let crange = {
        let first = replay.flows.iter().map(|f| f.first_seen_ns).min();
        let last = replay.flows.iter().map(|f| f.last_seen_ns).max();
        first.zip(last)
    };
    let diag = SnapshotDiagnostics::default();
    let summary_input = SummaryInput {
        report: &input,
        bundle: String::new(),
        inputs: inputs.clone(),
        capture: crate::flows::report_json(&replay),
        capture_range: crange,
        snapshots: &diag,
        max_gap_ns: cfg.max_gap_ns,
        outputs,
        evidence: json!({ "ok": damaged.is_empty(), "findings": damaged }),
        warnings: None,
    };
    let foreign = json!({
        "host_addresses": joined.host_addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "host_addresses_from": joined.host_address_source,
        "clocks": joined.clocks,
        "sources": joined.coverage,
        "disagreements": joined.disagreements,
        "uac": inp.uacs.iter().map(|c| json!({
            "path": c.path.display().to_string(),
            "hostname": c.hostname,
            "time_source": c.time_source,
            "tables_read": c.tables_at.map(|(a, b)| json!({"start": crate::time::rfc3339_ns(a * 1_000_000_000), "end": crate::time::rfc3339_ns(b * 1_000_000_000)})),
            "acquisition": c.acquisition.map(|(a, b)| json!({"start": crate::time::rfc3339_ns(a * 1_000_000_000), "end": crate::time::rfc3339_ns(b * 1_000_000_000)})),
            "sockets": c.sockets.len(),
            "fd_listings": c.processes.values().filter(|p| p.has_fd).count(),
            "listed_owners": c.listed.len(),
            "processes": c.processes.len(),
            "problems": c.problems,
        })).collect::<Vec<_>>(),
        "audit": audit.as_ref().map(|a| json!({
            "files": a.paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "events": a.events.len(),
            "range": a.range.map(|(x, y)| json!({"start": crate::time::rfc3339_ns(x), "end": crate::time::rfc3339_ns(y)})),
            "problems": a.problems,
        })),
        "notes": notes,
    });
    write_one(
        &mut out,
        &ForeignSummary {
            base: Summary(&summary_input),
            foreign,
        },
    )?;
    out.commit()?;
    let total: u64 = replay.flows.iter().map(|f| f.bytes_ab + f.bytes_ba).sum();
    let attributed: u64 = replay
        .flows
        .iter()
        .zip(&joined.attributions)
        .filter(|(_, a)| a.method.is_attributed())
        .map(|(f, _)| f.bytes_ab + f.bytes_ba)
        .sum();
    Ok(CorrelateOutcome {
        flows: replay.flows.len(),
        bytes: total,
        attributed_bytes: attributed,
        capture_unreadable: replay.any_file_unreadable(),
        evidence_damaged: damaged,
        clocks,
        coverage,
        terminal_summary: overview.terminal(10),
    })
}
