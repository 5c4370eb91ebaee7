//! The `analyze` pipeline: replay a bundle's captures, rebuild the socket
//! timeline from its snapshots, attribute every flow, write the reports
//! (columns in `docs/report-schema.md`) and hash inputs and outputs.
//!
//! The bundle is only read. Problems that do not prevent a result (bad
//! packets, bad /proc lines, a cut archive, a clock step) are handed to the
//! caller as warnings, as they are found, and recorded in `summary.json`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufWriter};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use procflow_format::hash::sha256_file;
use rayon::prelude::*;

use crate::annotate::{NoteIndex, PacketNote, PcapngOut, Selection};
use crate::attribute::{self, HostContext, Options};
use crate::capture::{self, CaptureError, Replay, ReplayOptions};
use crate::flow::community_id;
use crate::hostile::visible;
use crate::outdir::ReportDir;
use crate::overview::Overview;
use crate::progress::{CountingReader, Event, Progress, Stage};
use crate::report::connections_csv::ConnectionsCsv;
use crate::report::connections_jsonl::ConnectionsJsonl;
use crate::report::html::{HtmlInput, HtmlReport};
use crate::report::processes_csv::ProcessesCsv;
use crate::report::summary::{FileHash, FileRole, RecordedHash, Summary, SummaryInput};
use crate::report::{HashingWriter, ReportInput, ReportWriter};
use crate::snapshot::archive::{Bundle, BundleError};
use crate::snapshot::timeline::{Timeline, TimelineBuilder};
use crate::snapshot::SnapshotDiagnostics;
use crate::split;
use crate::time::rfc3339_ns;
use crate::verify::{self, ArchiveState, Area, Evidence, Finding, Known};
use crate::warning::{Warning, MAX_ANNOTATION_WARNINGS};

/// Names of the files `analyze` writes, summary last.
pub const REPORT_FILES: [&str; 5] = [
    "connections.csv",
    "connections.jsonl",
    "processes.csv",
    "report.html",
    "summary.json",
];

/// What to analyze and how.
#[derive(Debug, Clone)]
pub struct AnalyzeConfig {
    /// Bundle directory written by `procflow-snap record`; its capture files
    /// (`capture-*`, `*.pcap`, `*.pcapng`) are replayed.
    pub bundle: PathBuf,
    /// More capture files recorded separately (same host and time).
    pub pcaps: Vec<PathBuf>,
    /// Directory for the reports (created if absent).
    pub out: PathBuf,
    /// Worker threads of the replay (`None`: all cores). The reports are the
    /// same for any value.
    pub threads: Option<usize>,
    /// Largest time between a flow and a sighting of its socket (or of the
    /// socket's holder), ns.
    pub max_gap_ns: i64,
    /// Overwrite report files already in `out`.
    pub force: bool,
    /// Hash the inputs and check them against the bundle's SHA256SUMS
    /// (`false`: `summary.json` says `"sha256": null` and
    /// `"recorded_hash": "not-checked"`).
    pub hash: bool,
    /// Also write every replayed packet, annotated with its owner, to this
    /// pcapng file (see [`crate::annotate`]).
    pub pcapng: Option<PathBuf>,
    /// Where to report the progress of replay and hashing.
    pub progress: Option<crate::progress::Progress>,
    /// Refuse to write reports when an evidence check fails.
    pub strict: bool,
    /// Write CSV text cells as they were (no formula prefix, no escaping).
    pub csv_raw: bool,
}

/// Why an analysis could not produce reports.
#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    /// The annotated pcapng cannot be written where asked.
    #[error(transparent)]
    Pcapng(#[from] crate::annotate::PcapngError),
    /// The bundle cannot be opened or its archives cannot be read.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The captures cannot be replayed at all.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// The report directory cannot be used: inside the bundle, report
    /// files there without `force`, cannot be created.
    #[error(transparent)]
    ReportDir(#[from] crate::outdir::OutputError),
    /// `strict` was given and an evidence check failed: no report written.
    #[error(
        "{failed} evidence check(s) failed and --strict was given; no report written \
         (run without --strict to analyze this bundle anyway)"
    )]
    EvidenceRefused {
        /// Number of findings.
        failed: usize,
        /// The checks, for the caller to print.
        evidence: Box<Evidence>,
    },
    /// Nothing to replay.
    #[error(
        "{}: no capture file in the bundle (capture-*, *.pcap, *.pcapng) and no --pcap given",
        bundle.display()
    )]
    NoCapture {
        /// The bundle as given.
        bundle: PathBuf,
    },
    /// An input file cannot be read for hashing.
    #[error("{}: cannot read", path.display())]
    ReadInput {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// No snapshot of the bundle is complete.
    #[error(
        "{}: no complete snapshot in the bundle's archives; nothing to attribute with",
        bundle.display()
    )]
    NoSnapshot {
        /// The bundle as given.
        bundle: PathBuf,
    },
    /// The packets and the snapshots are from different times.
    #[error(
        "the capture ({} .. {}) and the snapshots ({} .. {}) do not overlap in time; \
         were they recorded on the same host at the same time?",
        rfc3339_ns(capture.0),
        rfc3339_ns(capture.1),
        rfc3339_ns(snapshots.0),
        rfc3339_ns(snapshots.1)
    )]
    NoOverlap {
        /// First and last packet, ns.
        capture: (i64, i64),
        /// First and last snapshot, ns.
        snapshots: (i64, i64),
    },
    /// A report file cannot be written.
    #[error("cannot write {}", crate::hostile::term_path(path))]
    WriteReport {
        /// The report file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// What a finished analysis found, for a one-line account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalysisOutcome {
    /// Flows (rows of `connections.csv`).
    pub flows: usize,
    /// Snapshots read.
    pub snapshots: usize,
    /// Sockets in the timeline.
    pub sockets: usize,
    /// Bytes of all flows.
    pub bytes: u64,
    /// Bytes of the flows attributed to a process.
    pub attributed_bytes: u64,
    /// Some capture file could not be read at all (the others were used).
    pub capture_unreadable: bool,
    /// The analyst's summary for the terminal: top processes and remote
    /// endpoints, unattributed bytes by reason, evidence status; bundle
    /// strings escaped, every table bounded.
    pub terminal_summary: String,
    /// What the annotated pcapng holds, when one was asked for.
    pub pcapng: Option<crate::annotate::WriteStats>,
    /// The evidence checks (integrity, recorder status, capture drops,
    /// unreadable fds); their status block is printed before the result
    /// line.
    pub evidence: Evidence,
}

/// The bundle's SHA256SUMS (`HEX  NAME` lines), if present, read as the
/// evidence checks read it (`verify::parse_sums`): a line they call
/// malformed is not used here either, so the inputs' `recorded_hash` and
/// the evidence status never disagree.
fn read_sha256sums(bundle: &Path) -> Option<BTreeMap<String, String>> {
    let bytes = crate::hostile::read_small_file(
        &bundle.join(procflow_format::layout::SHA256SUMS_FILE),
        crate::hostile::SMALL_FILE_CAP,
    )
    .ok()?;
    Some(verify::parse_sums(&String::from_utf8_lossy(&bytes)).by_name)
}

/// Hashes the inputs in parallel, comparing bundle files to SHA256SUMS.
fn hash_inputs(
    bundle: &Bundle,
    extra: &[PathBuf],
    hash: bool,
    progress: Option<&Progress>,
) -> Result<Vec<FileHash>, AnalyzeError> {
    let sums = read_sha256sums(&bundle.dir);
    let mut files: Vec<(FileRole, PathBuf, bool)> =
        vec![(FileRole::Manifest, bundle.manifest_path.clone(), true)];
    files.extend(
        bundle
            .archives
            .iter()
            .filter(|p| p.exists())
            .map(|p| (FileRole::Archive, p.clone(), true)),
    );
    files.extend(
        bundle
            .captures
            .iter()
            .map(|p| (FileRole::Capture, p.clone(), true)),
    );
    files.extend(extra.iter().map(|p| (FileRole::Capture, p.clone(), false)));
    files
        .par_iter()
        .map(|(role, path, in_bundle)| {
            let mut unreadable = false;
            // A stream (`--pcap <(zcat ...)`) can be read once, by the
            // replay: it is not hashed.
            let stream = !std::fs::metadata(path).is_ok_and(|m| m.is_file());
            let (sha256, bytes) = if hash && !stream {
                let read = |path: &Path| match progress {
                    Some(p) => procflow_format::hash::sha256_reader(
                        CountingReader {
                            inner: std::fs::File::open(path)?,
                            progress: p.clone(),
                            stage: Stage::Hash,
                        },
                        &|| false,
                    ),
                    None => sha256_file(path),
                };
                match read(path) {
                    Ok((h, n)) => (Some(h), n),
                    // Damaged media: the file is reported (evidence status,
                    // replay), the analysis goes on with the others.
                    Err(_) => {
                        unreadable = true;
                        (None, std::fs::metadata(path).map_or(0, |m| m.len()))
                    }
                }
            } else {
                let meta = std::fs::metadata(path).map_err(|source| AnalyzeError::ReadInput {
                    path: path.clone(),
                    source,
                })?;
                (None, meta.len())
            };
            let recorded_hash = if *in_bundle {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                Some(match (&sums, &sha256) {
                    _ if unreadable => RecordedHash::Unreadable,
                    (_, None) => RecordedHash::NotChecked,
                    (None, _) => RecordedHash::NoSha256sums,
                    (Some(m), Some(sha256)) => match m.get(&name) {
                        Some(h) if h == sha256 => RecordedHash::Match,
                        Some(_) => RecordedHash::Mismatch,
                        None => RecordedHash::NotListed,
                    },
                })
            } else {
                None
            };
            Ok(FileHash {
                role: *role,
                path: path.display().to_string(),
                bytes,
                sha256,
                recorded_hash,
            })
        })
        .collect()
}

/// Reads the snapshots of a bundle into a timeline.
pub fn read_timeline(bundle: &Bundle) -> Result<(Timeline, SnapshotDiagnostics), BundleError> {
    let mut builder = TimelineBuilder::new(bundle.byte_order);
    let mut diag = SnapshotDiagnostics::default();
    bundle.read_snapshots(&mut builder, &mut diag)?;
    Ok((builder.finish(), diag))
}

/// Writes independent reports into `dir` at once, one file each, on the
/// current rayon pool; their hashes come back in the order given. The bytes
/// of each file are those of writing it alone.
fn write_reports(
    dir: &mut ReportDir,
    writers: &[&(dyn ReportWriter + Sync)],
) -> Result<Vec<FileHash>, AnalyzeError> {
    let mut files = Vec::with_capacity(writers.len());
    for w in writers {
        let file = dir
            .create(w.file_name())
            .map_err(|source| AnalyzeError::WriteReport {
                path: dir.path().join(w.file_name()),
                source,
            })?;
        files.push(file);
    }
    let at = dir.path().to_path_buf();
    writers
        .par_iter()
        .zip(files)
        .map(|(w, file)| write_into(&at, *w, file))
        .collect()
}

fn write_report(dir: &mut ReportDir, w: &dyn ReportWriter) -> Result<FileHash, AnalyzeError> {
    let file = dir
        .create(w.file_name())
        .map_err(|source| AnalyzeError::WriteReport {
            path: dir.path().join(w.file_name()),
            source,
        })?;
    write_into(dir.path(), w, file)
}

/// Writes report `w` into `file` (created in `dir`), synced, and hashed.
fn write_into(dir: &Path, w: &dyn ReportWriter, file: File) -> Result<FileHash, AnalyzeError> {
    hash_into(w, file).map_err(|source| AnalyzeError::WriteReport {
        path: dir.join(w.file_name()),
        source,
    })
}

/// Writes report `w` into `file`, synced, and returns its hash and size.
pub(crate) fn hash_into(w: &dyn ReportWriter, file: File) -> io::Result<FileHash> {
    // Buffered before hashing: the writers emit many small pieces, and the
    // hash is then updated once per 64 KiB instead of once per piece.
    let mut out = BufWriter::with_capacity(1 << 16, HashingWriter::new(file));
    w.write(&mut out)?;
    let hw = out.into_inner().map_err(|e| e.into_error())?;
    let (sha256, bytes, file) = hw.finish()?;
    file.sync_all()?;
    Ok(FileHash {
        role: FileRole::Report,
        path: w.file_name().to_string(),
        bytes,
        sha256: Some(sha256),
        recorded_hash: None,
    })
}

/// A realtime clock step this large between two snapshots fails the
/// evidence check (smaller ones, as NTP makes, are warnings): one hour.
pub const CLOCK_STEP_FAILS_NS: u64 = 3_600_000_000_000;

/// Runs the evidence checks with what the analysis already knows: the
/// hashes computed while replaying, how each archive ended, which capture
/// files could not be read, and how many packets they held.
fn check_evidence(
    bundle: &Bundle,
    inputs: &[FileHash],
    diag: &SnapshotDiagnostics,
    replay: &Replay,
    hash: bool,
    clock_step: Option<(i64, u64)>,
) -> Evidence {
    let name_of = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let mut known = Known {
        no_hash: !hash,
        ..Known::default()
    };
    for f in inputs.iter().filter(|f| f.recorded_hash.is_some()) {
        if let Some(h) = &f.sha256 {
            known.hashes.insert(name_of(Path::new(&f.path)), h.clone());
        }
    }
    for a in &bundle.archives {
        let n = name_of(a);
        let state = if let Some(c) = diag.cut_archives.iter().find(|c| c.archive == n) {
            ArchiveState::Cut {
                offset: c.offset,
                what: c.reason.clone(),
            }
        } else if let Some(c) = diag.damaged_archives.iter().find(|c| c.archive == n) {
            ArchiveState::Cut {
                offset: c.offset,
                what: c.reason.clone(),
            }
        } else if diag.unclosed_archives.contains(&n) {
            ArchiveState::NoTrailer
        } else {
            ArchiveState::Whole
        };
        known.archives.insert(n, state);
    }
    let in_bundle: Vec<&crate::capture::FileReport> = replay
        .files
        .iter()
        .filter(|f| bundle.captures.contains(&f.path))
        .collect();
    for f in &in_bundle {
        let st = match (&f.damage, &f.error) {
            (None, Some(e)) => Err(e.clone()),
            (damage, _) => Ok(crate::capture::Structure {
                packets: f.packets,
                damage: damage.clone(),
            }),
        };
        known.captures.insert(name_of(&f.path), st);
    }
    let mut ev = verify::check(&bundle.dir, &bundle.manifest, &known);
    if diag.skipped_snapshots > 0 {
        ev.add(Finding {
            area: Area::Integrity,
            check: crate::verify::Check::SnapshotsSkipped,
            file: None,
            detail: format!(
                "{} complete snapshot(s) could not be applied (invalid or mismatched meta.json, \
                 no meta.json, out of order); first: {}",
                diag.skipped_snapshots,
                visible(diag.first_skipped.as_deref().unwrap_or(""), 300)
            ),
        });
    }
    if let Some((step, seq)) = clock_step.filter(|(s, _)| s.unsigned_abs() >= CLOCK_STEP_FAILS_NS) {
        ev.add(Finding {
            area: Area::Recorder,
            check: crate::verify::Check::ClockStep,
            file: None,
            detail: format!(
                "the realtime clock stepped by {:.3} s before snapshot {seq}, more than an \
                 hour: the times of the bundle cannot be trusted near it",
                step as f64 / 1e9
            ),
        });
    }
    let read: u64 = in_bundle.iter().map(|f| f.packets).sum();
    if let Some(f) = verify::packet_shortfall(&bundle.manifest, ev.capture_counters.as_ref(), read)
    {
        ev.add(f);
    }
    ev
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
            s.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
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

/// The evidence line of the terminal summary (the full status block is
/// printed apart, before the result line).
fn evidence_status(bundle: &Bundle, ev: &Evidence) -> String {
    let m = &bundle.manifest;
    let failed = ev.failed_areas();
    format!(
        "Evidence: recorder {} ({} snapshots); {}",
        visible(m.status.as_str(), 40),
        m.snapshots,
        if failed.is_empty() {
            "all checks hold".to_string()
        } else {
            format!("FAILED: {} (see the evidence status)", failed.join(", "))
        }
    )
}

/// Attribution: each flow to its owner, then the flows whose socket
/// changed owner cut at the change, from their packets read again. Also
/// the capture's part of `summary.json`, taken before the flows move on.
#[allow(clippy::type_complexity)]
fn attribute_flows(
    cfg: &AnalyzeConfig,
    bundle: &Bundle,
    timeline: &Timeline,
    replay: &mut Replay,
    captures: &[PathBuf],
    opts: &ReplayOptions,
) -> Result<
    (
        serde_json::Value,
        Vec<crate::flow::Flow>,
        Vec<attribute::Attribution>,
        split::PacketParts,
    ),
    AnalyzeError,
> {
    let ctx = host_context(bundle);
    let aopts = Options {
        max_gap_ns: cfg.max_gap_ns,
    };
    let attributions = attribute::attribute_all(timeline, &ctx, &aopts, &replay.flows);
    // Ownership at packet time: flows whose socket changed owner are cut,
    // from their packets read again.
    let cuts = split::plan(timeline, &ctx, &replay.flows, &attributions);
    // The capture's part of summary.json, while the replay still holds its
    // flows: they are moved on from here, not copied (at a million flows
    // every copy is hundreds of MB).
    let replay_json = crate::flows::report_json(replay);
    let replay_flows = std::mem::take(&mut replay.flows);
    let (flows, attributions, packet_parts) = if cuts.is_empty() {
        (replay_flows, attributions, split::PacketParts::new())
    } else {
        let again = ReplayOptions {
            keep_packets_of: cuts
                .iter()
                .filter_map(|c| replay_flows.get(c.index).cloned())
                .collect(),
            progress: None,
            names: false,
            ..opts.clone()
        };
        let packets = capture::replay(captures, &again)?.packets;
        split::apply(
            timeline,
            &ctx,
            &aopts,
            replay_flows,
            attributions,
            &cuts,
            &packets,
        )
    };
    Ok((replay_json, flows, attributions, packet_parts))
}

/// Warnings of the capture's own process annotations that disagree with
/// the snapshots (the first [`MAX_ANNOTATION_WARNINGS`], then how many
/// more).
fn warn_annotations(
    annotation_check: &crate::annotations::AnnotationCheck,
    warn: &mut dyn FnMut(Warning),
) {
    for d in annotation_check
        .disagree
        .iter()
        .take(MAX_ANNOTATION_WARNINGS)
    {
        warn(Warning::AnnotationDisagrees {
            flow_id: d.flow_id,
            annotated_pid: d.annotated_pid,
            annotated_cmd: d.annotated_cmd.clone(),
            snapshot_pid: d.snapshot_pid,
        });
    }
    if annotation_check.disagree.len() > MAX_ANNOTATION_WARNINGS {
        warn(Warning::MoreAnnotationDisagreements(
            annotation_check.disagree.len() - MAX_ANNOTATION_WARNINGS,
        ));
    }
}

/// Warnings about the remote names: sources that disagree, DNS answers
/// from a server no resolv.conf names.
fn warn_names(st: &crate::names::RowStats, warn: &mut dyn FnMut(Warning)) {
    if let Some((flow_id, name, other)) = &st.first_conflict {
        warn(Warning::NameConflicts {
            flows: st.conflicts,
            flow_id: *flow_id,
            name: name.clone(),
            other: other.clone(),
        });
    }
    if let Some((flow_id, server, netns)) = st.first_unlisted_dns_server {
        warn(Warning::UnlistedDnsServer {
            flows: st.dns_servers_not_in_resolv_conf,
            flow_id,
            server,
            netns,
        });
    }
}

/// Warnings about the report rows: process start times that cannot be
/// told, owners without a process record.
fn warn_rows(bundle: &Bundle, input: &ReportInput<'_>, warn: &mut dyn FnMut(Warning)) {
    if bundle.manifest.host.clk_tck == 0 {
        warn(Warning::ClkTckZero);
    }
    // An owner named by an fd listing with no process record: its pid is
    // known, its name and command line are not.
    let mut nameless: Vec<u32> = input
        .rows
        .iter()
        .filter(|r| r.process.is_none() && r.event_comm.is_none())
        .filter_map(|r| r.attribution.owner.map(|o| o.pid))
        .collect();
    nameless.sort_unstable();
    nameless.dedup();
    if !nameless.is_empty() {
        warn(Warning::OwnersWithoutProcess(nameless));
    }
}

/// The annotated pcapng: every replayed packet with its owner's note.
fn write_annotated(
    out: PcapngOut,
    timeline: &Timeline,
    input: &ReportInput<'_>,
    replay: &Replay,
    packet_parts: split::PacketParts,
) -> Result<crate::annotate::WriteStats, AnalyzeError> {
    let mut notes = NoteIndex::default();
    // Each pid's recorded processes (start, comm), to name an
    // owner's parent: the latest one started before the owner.
    let mut by_pid: HashMap<u32, Vec<(u64, &str)>> = HashMap::new();
    for ((pid, start), p) in &timeline.processes {
        by_pid
            .entry(*pid)
            .or_default()
            .push((*start, p.comm.as_str()));
    }
    let parent_comm = |r: &crate::report::ConnectionRow| -> Option<&str> {
        let p = r.process.as_ref()?;
        by_pid
            .get(&p.ppid)?
            .iter()
            .filter(|(s, _)| *s <= p.start_time)
            .max_by_key(|(s, _)| *s)
            .map(|(_, c)| *c)
    };
    notes.set_packet_parts(packet_parts);
    for r in &input.rows {
        notes.add(
            r.flow.id,
            r.attribution.parent_flow_id,
            r.flow.first_seen_ns,
            r.flow.last_seen_ns,
            PacketNote::of_row(r, parent_comm(r)),
        );
    }
    Ok(out.write(&replay.files, &replay.packet_flows, &notes, Selection::All)?)
}

/// The inputs read side by side: the capture replayed, the snapshot
/// timeline built, the input files hashed (each with its progress).
#[allow(clippy::type_complexity)]
fn read_inputs(
    cfg: &AnalyzeConfig,
    bundle: &Bundle,
    captures: &[PathBuf],
    opts: &ReplayOptions,
) -> (
    Result<Replay, CaptureError>,
    Result<(Timeline, SnapshotDiagnostics), BundleError>,
    Result<Vec<FileHash>, AnalyzeError>,
) {
    let size = |ps: &[PathBuf]| -> u64 {
        ps.iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    };
    if let Some(p) = &cfg.progress {
        p.event(Stage::Replay, Event::Start(size(captures)));
        if cfg.hash {
            let mut all = vec![bundle.manifest_path.clone()];
            all.extend(bundle.archives.iter().cloned());
            all.extend(captures.iter().cloned());
            p.event(Stage::Hash, Event::Start(size(&all)));
        }
    }
    // Replay, the timeline and the input hashes are independent: run them
    // side by side.
    let (replay, (timeline, hashes)) = rayon::join(
        || {
            let r = capture::replay(captures, opts);
            if let Some(p) = &cfg.progress {
                p.event(Stage::Replay, Event::Finish);
            }
            r
        },
        || {
            rayon::join(
                || read_timeline(bundle),
                || {
                    let h = hash_inputs(bundle, &cfg.pcaps, cfg.hash, cfg.progress.as_ref());
                    if let (Some(p), true) = (&cfg.progress, cfg.hash) {
                        p.event(Stage::Hash, Event::Finish);
                    }
                    h
                },
            )
        },
    );
    (replay, timeline, hashes)
}

/// Warnings about what was read: damaged packets and files (and all of
/// them counted per kind), cut archives, the snapshots' warnings, unusable
/// /proc lines.
fn warn_inputs(replay: &Replay, diag: &SnapshotDiagnostics, warn: &mut dyn FnMut(Warning)) {
    for p in &replay.problems {
        warn(Warning::CaptureProblem(p.clone()));
    }
    if !replay.problem_counts.is_empty() {
        warn(Warning::CaptureProblemCounts(replay.problem_counts.clone()));
    }
    for c in &diag.cut_archives {
        warn(Warning::ArchiveCut(c.clone()));
    }
    for w in &diag.warnings {
        warn(Warning::Snapshot(w.clone()));
    }
    if diag.bad_lines > 0 {
        warn(Warning::BadLines {
            count: diag.bad_lines,
            first: diag.bad_line_details.first().cloned(),
        });
    }
}

/// Warnings about the timeline: socket events it could not use, a
/// realtime clock step.
fn warn_timeline(timeline: &Timeline, warn: &mut dyn FnMut(Warning)) {
    if timeline.unusable_events > 0 {
        warn(Warning::UnusableEvents(timeline.unusable_events));
    }
    if let Some((step_ns, seq)) = timeline.largest_clock_step() {
        if step_ns.unsigned_abs() >= 100_000_000 {
            warn(Warning::ClockStep { step_ns, seq });
        }
    }
}

/// Runs the analysis: reports written into `cfg.out`. Warnings (problems
/// that do not prevent a result) go to `on_warning` as they are found, one
/// sentence each ([`Warning::message`]); report.html and `summary.json`
/// show the same ones. Runs on the current rayon pool.
pub fn run_analysis(
    cfg: &AnalyzeConfig,
    on_warning: &mut dyn FnMut(&str),
) -> Result<AnalysisOutcome, AnalyzeError> {
    let bundle = Bundle::open(&cfg.bundle)?;
    let mut out = ReportDir::prepare(&cfg.out, &[&cfg.bundle], &REPORT_FILES, cfg.force)?;
    let mut captures = bundle.captures.clone();
    captures.extend(cfg.pcaps.iter().cloned());
    if captures.is_empty() {
        return Err(AnalyzeError::NoCapture {
            bundle: cfg.bundle.clone(),
        });
    }
    let pcapng_out = match &cfg.pcapng {
        Some(p) => Some(PcapngOut::prepare(
            p,
            &captures,
            &[cfg.bundle.as_path()],
            cfg.force,
        )?),
        None => None,
    };
    let opts = ReplayOptions {
        threads: cfg.threads,
        track_packets: pcapng_out.is_some(),
        progress: cfg.progress.clone(),
        names: true,
        ..ReplayOptions::default()
    };
    let (replay, timeline, hashes) = read_inputs(cfg, &bundle, &captures, &opts);
    let mut replay = replay?;
    let (timeline, diag) = timeline?;
    let inputs = hashes?;
    // Every warning: to the caller as found, and kept for the reports.
    let mut warnings: Vec<Warning> = Vec::new();
    let mut warn = |w: Warning| {
        on_warning(&w.message());
        warnings.push(w);
    };
    warn_inputs(&replay, &diag, &mut warn);
    let Some((s0, s1)) = timeline.time_range() else {
        return Err(AnalyzeError::NoSnapshot {
            bundle: cfg.bundle.clone(),
        });
    };
    let crange = capture_range(&replay);
    if let Some((c0, c1)) = crange {
        if c1 < s0 || c0 > s1 {
            return Err(AnalyzeError::NoOverlap {
                capture: (c0, c1),
                snapshots: (s0, s1),
            });
        }
    } else {
        warn(Warning::NoIpFlow);
    }
    warn_timeline(&timeline, &mut warn);
    let evidence = check_evidence(
        &bundle,
        &inputs,
        &diag,
        &replay,
        cfg.hash,
        timeline.largest_clock_step(),
    );
    if cfg.strict && !evidence.ok {
        return Err(AnalyzeError::EvidenceRefused {
            failed: evidence.findings.len(),
            evidence: Box::new(evidence),
        });
    }
    let (replay_json, flows, mut attributions, packet_parts) =
        attribute_flows(cfg, &bundle, &timeline, &mut replay, &captures, &opts)?;
    // The capture's own process annotations (ptcpdump), checked against
    // the snapshots.
    let annotation_check = crate::annotations::apply(
        &timeline,
        &bundle.manifest,
        &replay.annotations,
        &flows,
        &mut attributions,
    );
    warn_annotations(&annotation_check, &mut warn);
    let cid = |f: &crate::flow::Flow| community_id(f, 0);
    let mut input = ReportInput::new(&bundle.manifest, &timeline, flows, attributions, &cid);
    input.csv_raw = cfg.csv_raw;
    // Names of the remote ends, from the capture (docs/names.md).
    let name_stats = replay.names.as_ref().map(|n| {
        crate::names::annotate_rows(
            &mut input.rows,
            n,
            &timeline.nsfiles,
            bundle.manifest.host.netns,
        )
    });
    if let Some(st) = &name_stats {
        warn_names(st, &mut warn);
    }
    warn_rows(&bundle, &input, &mut warn);
    let overview = Overview::new(&input);
    let html_input = HtmlInput {
        report: &input,
        overview: &overview,
        bundle: cfg.bundle.display().to_string(),
        inputs: &inputs,
        evidence: &evidence,
        warnings: warnings.iter().map(Warning::report_message).collect(),
    };
    let outputs = write_reports(
        &mut out,
        &[
            &ConnectionsCsv(&input),
            &ConnectionsJsonl(&input),
            &ProcessesCsv(&input),
            &HtmlReport(&html_input),
        ],
    )?;
    let summary_input = SummaryInput {
        report: &input,
        bundle: cfg.bundle.display().to_string(),
        inputs: inputs.clone(),
        capture: {
            let mut v = replay_json;
            if annotation_check.flows > 0 {
                v["annotation_check"] = serde_json::json!(annotation_check);
            }
            if let Some(st) = &name_stats {
                v["names"] = serde_json::json!(st);
            }
            v
        },
        capture_range: crange,
        snapshots: &diag,
        max_gap_ns: cfg.max_gap_ns,
        outputs,
        evidence: serde_json::to_value(&evidence).unwrap_or(serde_json::Value::Null),
        warnings: Some(&warnings),
    };
    write_report(&mut out, &Summary(&summary_input))?;
    out.commit()?;
    let pcapng = match pcapng_out {
        Some(out) => Some(write_annotated(
            out,
            &timeline,
            &input,
            &replay,
            packet_parts,
        )?),
        None => None,
    };
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
    Ok(AnalysisOutcome {
        flows: input.rows.len(),
        snapshots: timeline.snapshots.len(),
        sockets: timeline.sockets.len(),
        bytes: total,
        attributed_bytes: attributed,
        capture_unreadable: replay.any_file_unreadable(),
        terminal_summary: format!(
            "{}{}{}\n",
            overview.terminal(10),
            if annotation_check.flows > 0 {
                format!(
                    "Capture annotations (ptcpdump PID comments): {} flow(s); {} agree with the snapshots, {} attributed from them alone, {} DISAGREE, {} name a process the recorder never saw\n",
                    annotation_check.flows,
                    annotation_check.agree,
                    annotation_check.from_annotation,
                    annotation_check.disagree.len(),
                    annotation_check.unknown_process
                )
            } else {
                String::new()
            },
            evidence_status(&bundle, &evidence)
        ),
        pcapng,
        evidence,
    })
}
