//! `procflow carve`: the packets of one process (or of chosen flows) into
//! their own pcapng, annotated as by `analyze --pcapng`.
//!
//! The source is a report directory written by `analyze` (its
//! `connections.csv` says which flows belong to whom, its `summary.json`
//! where the captures are), or a bundle, which is then analyzed first into
//! a temporary directory. The captures are replayed again with the same
//! rules, so flow ids are those of the report; the replay must find exactly
//! the report's flows, and each capture must still have the size the report
//! recorded, or carving stops.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

use crate::annotate::{NoteFields, NoteIndex, PacketNote, PcapngOut, Selection, WriteStats};
use crate::capture::{self, ReplayOptions};
use crate::hostile::term_path;

/// Which flows to carve. Criteria combine: a flow must match all given.
#[derive(Debug, Clone, Default)]
pub struct Criteria {
    /// Owner's pid.
    pub pid: Option<u32>,
    /// Owner's start: `process_start_ticks` or the RFC 3339 `process_start`.
    pub start: Option<String>,
    /// Owner's `comm`, exactly.
    pub comm: Option<String>,
    /// Flow ids (any of them).
    pub flows: Vec<u64>,
}

/// What to carve and where.
#[derive(Debug, Clone)]
pub struct CarveConfig {
    /// Report directory or bundle.
    pub source: PathBuf,
    /// Which flows.
    pub criteria: Criteria,
    /// The pcapng to write.
    pub out: PathBuf,
    /// Overwrite `out`.
    pub force: bool,
    /// Replay threads (`None`: all cores).
    pub threads: Option<usize>,
}

/// What was carved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarveOutcome {
    /// Flows selected.
    pub flows: usize,
    /// Their `packets_in + packets_out` according to the report.
    pub expected_packets: u64,
    /// What was written.
    pub written: WriteStats,
}

type Row = HashMap<String, String>;

fn read_rows(path: &Path) -> Result<Vec<Row>, CarveError> {
    let at = || path.to_path_buf();
    let file =
        std::fs::File::open(path).map_err(|source| CarveError::Read { path: at(), source })?;
    let mut r = csv::Reader::from_reader(file);
    let headers = r
        .headers()
        .map_err(|source| CarveError::Csv { path: at(), source })?
        .clone();
    let mut rows = Vec::new();
    for (i, rec) in r.records().enumerate() {
        let rec = rec.map_err(|source| CarveError::CsvLine {
            path: at(),
            line: i + 2,
            source,
        })?;
        rows.push(
            headers
                .iter()
                .zip(rec.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect(),
        );
    }
    Ok(rows)
}

/// A CSV cell as written, without the spreadsheet-formula guard.
/// What exists instead, for a selection that matched nothing: the owners
/// with the most bytes (`pid comm`, escaped), how many there are, and where
/// the whole list is (the report's processes.csv; a bundle's is written by
/// `procflow analyze`, carve's own analysis is temporary).
fn owners_text(rows: &[Row], from_bundle: bool) -> String {
    const SHOWN: usize = 8;
    let mut by: HashMap<(String, String), u64> = HashMap::new();
    for r in rows {
        let pid = cell(r, "pid");
        if pid.is_empty() {
            continue;
        }
        let b: u64 = cell(r, "bytes_in").parse().unwrap_or(0);
        let b2: u64 = cell(r, "bytes_out").parse().unwrap_or(0);
        *by.entry((pid.to_string(), cell(r, "comm").to_string()))
            .or_default() += b.saturating_add(b2);
    }
    if by.is_empty() {
        return format!("none of its {} flow(s) has an owner", rows.len());
    }
    let mut v: Vec<_> = by.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let names: Vec<String> = v
        .iter()
        .take(SHOWN)
        .map(|((pid, comm), _)| format!("{pid} ({})", crate::hostile::visible(comm, 16)))
        .collect();
    let more = v.len().saturating_sub(SHOWN);
    format!(
        "its flows are owned by {} process(es), most bytes first: --pid {}{}{}",
        v.len(),
        names.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        },
        if from_bundle {
            " (`procflow analyze` writes the whole list to processes.csv)"
        } else {
            " (all of them in processes.csv beside connections.csv)"
        }
    )
}

fn cell<'a>(r: &'a Row, k: &str) -> &'a str {
    let v = r.get(k).map(String::as_str).unwrap_or("");
    v.strip_prefix('\'').unwrap_or(v)
}

fn matches(r: &Row, c: &Criteria) -> bool {
    if let Some(pid) = c.pid {
        if cell(r, "pid") != pid.to_string() {
            return false;
        }
    }
    if let Some(start) = &c.start {
        if cell(r, "process_start_ticks") != start && cell(r, "process_start") != start {
            return false;
        }
    }
    if let Some(comm) = &c.comm {
        if cell(r, "comm") != comm || cell(r, "pid").is_empty() {
            return false;
        }
    }
    if !c.flows.is_empty() {
        let id: Option<u64> = cell(r, "flow_id").parse().ok();
        if !id.is_some_and(|id| c.flows.contains(&id)) {
            return false;
        }
    }
    true
}

/// The note of a `connections.csv` row, as [`PacketNote::of_row`] makes it.
fn note_of(r: &Row) -> PacketNote {
    let flow = cell(r, "flow_id");
    let peer = match (cell(r, "peer_pid"), cell(r, "peer_method")) {
        ("", m) => m.to_string(),
        (pid, m) => format!(
            "{pid} {} ({m}, {})",
            cell(r, "peer_comm"),
            cell(r, "peer_confidence")
        ),
    };
    match cell(r, "pid").parse::<u32>() {
        Ok(pid) => PacketNote::owned(&NoteFields {
            pid,
            cmd: match cell(r, "exe") {
                "" => cell(r, "comm"),
                e => e,
            },
            args: cell(r, "cmdline"),
            start: cell(r, "process_start"),
            method: cell(r, "method"),
            confidence: cell(r, "confidence"),
            flow,
            shared_with: cell(r, "shared_with"),
            peer: &peer,
            // connections.csv has no parent or cgroup column.
            parent: "",
            container: cell(r, "container_id"),
            cgroup: "",
        }),
        Err(_) => PacketNote::unowned(cell(r, "method"), flow),
    }
}

/// Why carving failed. Messages name the file (escaped for the terminal);
/// where the cause reads best mid-sentence it is part of the message.
#[derive(Debug, thiserror::Error)]
pub enum CarveError {
    /// The source cannot be looked at.
    #[error(
        "{}: {error} (give a report directory written by `procflow analyze`, or a bundle)",
        term_path(path)
    )]
    Source {
        /// The source given.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// The source is a file.
    #[error(
        "{} is a file; carve reads a report directory written by `procflow analyze` \
         (or a bundle directory)",
        term_path(.0)
    )]
    SourceIsFile(PathBuf),
    /// The bundle could not be analyzed.
    #[error(transparent)]
    Analyze(#[from] crate::analyze::AnalyzeError),
    /// The directory is neither a report directory nor a bundle.
    #[error(
        "{} holds no connections.csv and summary.json: not a report directory of \
         `procflow analyze`, nor a bundle (no manifest.json)",
        term_path(.0)
    )]
    NotReports(PathBuf),
    /// A report file cannot be read.
    #[error("{}: cannot read", term_path(path))]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// connections.csv is not CSV.
    #[error("{}", term_path(path))]
    Csv {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: csv::Error,
    },
    /// A line of connections.csv is not CSV.
    #[error("{} line {line}", term_path(path))]
    CsvLine {
        /// The file.
        path: PathBuf,
        /// Line number, 1-based.
        line: usize,
        /// Why.
        #[source]
        source: csv::Error,
    },
    /// summary.json cannot be read.
    #[error("{}", term_path(path))]
    Summary {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// summary.json is not JSON.
    #[error("{}: not JSON", term_path(path))]
    SummaryNotJson {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// No flow matches the criteria.
    #[error("no flow of {} matches {criteria}; {owners}", term_path(given))]
    NoMatch {
        /// The report directory or bundle given.
        given: PathBuf,
        /// The criteria, as options.
        criteria: String,
        /// What does exist: the busiest owners (escaped), and where the
        /// whole list is.
        owners: String,
    },
    /// A capture named in the summary cannot be found.
    #[error(
        "capture {} named in {}: {error} (run carve from the directory analyze ran in, \
         or give the bundle instead)",
        term_path(capture),
        term_path(summary)
    )]
    CaptureMissing {
        /// The capture.
        capture: PathBuf,
        /// summary.json.
        summary: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// A capture changed size since the report.
    #[error(
        "capture {} is {size} bytes, the report says {reported}: it changed since the report \
         was written",
        term_path(capture)
    )]
    CaptureChanged {
        /// The capture.
        capture: PathBuf,
        /// Its size now.
        size: u64,
        /// The size the report gives, as written there.
        reported: String,
    },
    /// The captures cannot be replayed.
    #[error(transparent)]
    Replay(#[from] capture::CaptureError),
    /// The captures are not those of the report.
    #[error(
        "the captures replay into {replayed} flows, {} stands for {reported}: not the captures \
         of this report",
        term_path(connections)
    )]
    OtherCaptures {
        /// Flows replayed.
        replayed: usize,
        /// connections.csv.
        connections: PathBuf,
        /// Flows it stands for.
        reported: usize,
    },
    /// The pcapng cannot be written.
    #[error(transparent)]
    Pcapng(#[from] crate::annotate::PcapngError),
}

/// Carves. Runs on the current rayon pool.
pub fn run_carve(cfg: &CarveConfig) -> Result<CarveOutcome, CarveError> {
    let src = &cfg.source;
    let meta = std::fs::metadata(src).map_err(|error| CarveError::Source {
        path: src.clone(),
        error,
    })?;
    if !meta.is_dir() {
        return Err(CarveError::SourceIsFile(src.clone()));
    }
    let mut tmp = None;
    let report_dir = if src.join(procflow_format::layout::MANIFEST_FILE).exists() {
        let dir = std::env::temp_dir().join(format!(
            "procflow-carve-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let acfg = crate::analyze::AnalyzeConfig {
            bundle: src.clone(),
            pcaps: Vec::new(),
            out: dir.clone(),
            threads: cfg.threads,
            max_gap_ns: 30_000_000_000,
            force: false,
            hash: false,
            pcapng: None,
            strict: false,
            csv_raw: true,
            progress: None,
        };
        tmp = Some(dir.clone());
        let r = crate::analyze::run_analysis(&acfg, &mut |_| {});
        if let Err(e) = r {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e.into());
        }
        dir
    } else {
        src.clone()
    };
    let result = carve_from_reports(&report_dir, cfg, tmp.is_some());
    if let Some(t) = tmp {
        let _ = std::fs::remove_dir_all(t);
    }
    result
}

fn carve_from_reports(
    dir: &Path,
    cfg: &CarveConfig,
    from_bundle: bool,
) -> Result<CarveOutcome, CarveError> {
    let conn = dir.join("connections.csv");
    let sum = dir.join("summary.json");
    if !conn.exists() || !sum.exists() {
        return Err(CarveError::NotReports(dir.to_path_buf()));
    }
    let rows = read_rows(&conn)?;
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&sum).map_err(|source| CarveError::Summary {
            path: sum.clone(),
            source,
        })?)
        .map_err(|source| CarveError::SummaryNotJson {
            path: sum.clone(),
            source,
        })?;
    let selected: Vec<&Row> = rows.iter().filter(|r| matches(r, &cfg.criteria)).collect();
    if selected.is_empty() {
        return Err(CarveError::NoMatch {
            given: cfg.source.clone(),
            criteria: describe(&cfg.criteria),
            owners: owners_text(&rows, from_bundle),
        });
    }
    let ids: HashSet<u64> = selected
        .iter()
        .filter_map(|r| cell(r, "flow_id").parse().ok())
        .collect();
    let expected: u64 = selected
        .iter()
        .map(|r| {
            cell(r, "packets_in").parse::<u64>().unwrap_or(0)
                + cell(r, "packets_out").parse::<u64>().unwrap_or(0)
        })
        .sum();
    let files = summary["inputs"]["files"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut captures = Vec::new();
    for f in files.iter().filter(|f| f["role"] == "capture") {
        let p = PathBuf::from(f["path"].as_str().unwrap_or(""));
        let size =
            std::fs::metadata(&p)
                .map(|m| m.len())
                .map_err(|error| CarveError::CaptureMissing {
                    capture: p.clone(),
                    summary: sum.clone(),
                    error,
                })?;
        if Some(size) != f["bytes"].as_u64() {
            return Err(CarveError::CaptureChanged {
                capture: p,
                size,
                reported: f["bytes"].to_string(),
            });
        }
        captures.push(p);
    }
    let bundle = PathBuf::from(summary["inputs"]["bundle"].as_str().unwrap_or(""));
    let out = PcapngOut::prepare(&cfg.out, &captures, &[bundle.as_path()], cfg.force)?;
    let opts = ReplayOptions {
        threads: cfg.threads,
        track_packets: true,
        ..ReplayOptions::default()
    };
    let replay = capture::replay(&captures, &opts)?;
    let mut notes = NoteIndex::default();
    for r in &rows {
        let ts = |k: &str| parse_rfc3339_ns(cell(r, k)).unwrap_or(i64::MIN);
        if let Ok(id) = cell(r, "flow_id").parse::<u64>() {
            notes.add(
                id,
                cell(r, "parent_flow_id").parse().ok(),
                ts("first_seen"),
                ts("last_seen"),
                note_of(r),
            );
        }
    }
    if replay.flows.len() != notes.replayed_flows() {
        return Err(CarveError::OtherCaptures {
            replayed: replay.flows.len(),
            connections: conn,
            reported: notes.replayed_flows(),
        });
    }
    let written = out.write(
        &replay.files,
        &replay.packet_flows,
        &notes,
        Selection::Flows(&ids),
    )?;
    Ok(CarveOutcome {
        flows: ids.len(),
        expected_packets: expected,
        written,
    })
}

fn describe(c: &Criteria) -> String {
    let mut v = Vec::new();
    if let Some(p) = c.pid {
        v.push(format!("--pid {p}"));
    }
    if let Some(s) = &c.start {
        v.push(format!("--start {}", crate::hostile::term(s)));
    }
    if let Some(s) = &c.comm {
        v.push(format!("--comm {}", crate::hostile::term(s)));
    }
    for f in &c.flows {
        v.push(format!("--flow {f}"));
    }
    v.join(" ")
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (the reports' timestamps) to ns since
/// the epoch.
pub fn parse_rfc3339_ns(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let rest = s.get(19..)?.strip_suffix('Z')?;
    let frac = match rest.strip_prefix('.') {
        Some(f) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|c| c.is_ascii_digit()) => {
            f.parse::<i64>().ok()? * 10i64.pow(9 - f.len() as u32)
        }
        None if rest.is_empty() => 0,
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec;
    secs.checked_mul(1_000_000_000)?.checked_add(frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        for ns in [0i64, 1_795_884_976_180_412_354, 951_782_400_000_000_001] {
            assert_eq!(parse_rfc3339_ns(&crate::time::rfc3339_ns(ns)), Some(ns));
        }
        assert_eq!(
            parse_rfc3339_ns("2026-11-28T16:56:16Z"),
            Some(1_795_884_976_000_000_000)
        );
        assert_eq!(parse_rfc3339_ns("2026-11-28 16:56:16Z"), None);
        assert_eq!(parse_rfc3339_ns(""), None);
    }
}
