//! Evidence checks of a bundle: what `procflow verify` reports and what
//! `procflow analyze` prints as its evidence status block.
//!
//! Four areas, each `ok`, `failed` or `not-checked`:
//!
//! - **integrity**: `SHA256SUMS` present, well formed, listing every
//!   regular file of the bundle, every listed file present and matching;
//!   every file the manifest names present; no capture or archive the
//!   manifest does not name; no capture or archive name that is not a
//!   regular file; every archive closed by its trailer.
//! - **recorder**: the manifest's `status` is `complete` and no write
//!   error stopped the recording.
//! - **capture**: tcpdump's own counters (from the manifest, else from
//!   `tcpdump.log`) are known and report no packet dropped.
//! - **fds**: the recorder ran as root and no fd directory was unreadable.
//!
//! Every value taken from the bundle is escaped for the terminal where it
//! is printed ([`crate::hostile`]); the findings keep the exact text.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::BufReader;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use procflow_format::hash::{bundle_digest, sha256_file};
use procflow_format::layout::{
    parse_archive_name, CaptureCounters, Manifest, RecorderStatus, CAPTURE_PREFIX, MANIFEST_FILE,
    SHA256SUMS_FILE, TCPDUMP_LOG_FILE,
};
use serde::Serialize;

use crate::capture::{Damage, ProblemKind, Structure};
use crate::hostile::term;
use crate::hostile::visible;

/// Most characters of a manifest error text a finding quotes (the manifest
/// comes from the recorded host: a 16 MiB string stays out of the terminal).
const ERROR_TEXT_MAX: usize = 256;

/// The four areas of the evidence status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Area {
    /// Hashes, files present, archives whole.
    Integrity,
    /// How the recorder ended.
    Recorder,
    /// tcpdump's counters: drops.
    Capture,
    /// Unreadable fd directories, privileges.
    Fds,
}

impl Area {
    /// All areas, in the order they are printed.
    pub const ALL: [Area; 4] = [Area::Integrity, Area::Recorder, Area::Capture, Area::Fds];

    /// The area's name as printed and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Area::Integrity => "integrity",
            Area::Recorder => "recorder",
            Area::Capture => "capture",
            Area::Fds => "fds",
        }
    }
}

/// Each check of the evidence, by its stable name (`Check::name`, the
/// `check` of a finding in `verify --json` and `summary.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Check {
    /// `archive-cut`.
    ArchiveCut,
    /// `archive-not-closed`.
    ArchiveNotClosed,
    /// `capture-counters-missing`.
    CaptureCountersMissing,
    /// `capture-counters-unreadable`.
    CaptureCountersUnreadable,
    /// `capture-cut`.
    CaptureCut,
    /// `capture-damaged`.
    CaptureDamaged,
    /// `capture-drops`.
    CaptureDrops,
    /// `capture-exited`.
    CaptureExited,
    /// `capture-packets-missing`.
    CapturePacketsMissing,
    /// `capture-unreadable`.
    CaptureUnreadable,
    /// `clock-step`.
    ClockStep,
    /// `deleted-unasked`.
    DeletedUnasked,
    /// `digest-mismatch`.
    DigestMismatch,
    /// `evidence-damaged`.
    EvidenceDamaged,
    /// `file-missing`.
    FileMissing,
    /// `hash-mismatch`.
    HashMismatch,
    /// `not-a-regular-file`.
    NotARegularFile,
    /// `not-in-manifest`.
    NotInManifest,
    /// `not-listed`.
    NotListed,
    /// `not-root`.
    NotRoot,
    /// `recorder-lost-events`.
    RecorderLostEvents,
    /// `recorder-status`.
    RecorderStatus,
    /// `recorder-write-error`.
    RecorderWriteError,
    /// `sha256sums-empty`.
    Sha256SumsEmpty,
    /// `sha256sums-malformed`.
    Sha256SumsMalformed,
    /// `sha256sums-missing`.
    Sha256SumsMissing,
    /// `sha256sums-unreadable`.
    Sha256SumsUnreadable,
    /// `snapshots-skipped`.
    SnapshotsSkipped,
    /// `unreadable-bundle`.
    UnreadableBundle,
    /// `unreadable-fds`.
    UnreadableFds,
    /// `unreadable-file`.
    UnreadableFile,
}

impl Check {
    /// The stable name, e.g. `hash-mismatch`.
    pub fn name(self) -> &'static str {
        match self {
            Check::ArchiveCut => "archive-cut",
            Check::ArchiveNotClosed => "archive-not-closed",
            Check::CaptureCountersMissing => "capture-counters-missing",
            Check::CaptureCountersUnreadable => "capture-counters-unreadable",
            Check::CaptureCut => "capture-cut",
            Check::CaptureDamaged => "capture-damaged",
            Check::CaptureDrops => "capture-drops",
            Check::CaptureExited => "capture-exited",
            Check::CapturePacketsMissing => "capture-packets-missing",
            Check::CaptureUnreadable => "capture-unreadable",
            Check::ClockStep => "clock-step",
            Check::DeletedUnasked => "deleted-unasked",
            Check::DigestMismatch => "digest-mismatch",
            Check::EvidenceDamaged => "evidence-damaged",
            Check::FileMissing => "file-missing",
            Check::HashMismatch => "hash-mismatch",
            Check::NotARegularFile => "not-a-regular-file",
            Check::NotInManifest => "not-in-manifest",
            Check::NotListed => "not-listed",
            Check::NotRoot => "not-root",
            Check::RecorderLostEvents => "recorder-lost-events",
            Check::RecorderStatus => "recorder-status",
            Check::RecorderWriteError => "recorder-write-error",
            Check::Sha256SumsEmpty => "sha256sums-empty",
            Check::Sha256SumsMalformed => "sha256sums-malformed",
            Check::Sha256SumsMissing => "sha256sums-missing",
            Check::Sha256SumsUnreadable => "sha256sums-unreadable",
            Check::SnapshotsSkipped => "snapshots-skipped",
            Check::UnreadableBundle => "unreadable-bundle",
            Check::UnreadableFds => "unreadable-fds",
            Check::UnreadableFile => "unreadable-file",
        }
    }
}

/// One thing that does not hold. Serialized with its [`Finding::message`]
/// as `message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Area it belongs to.
    pub area: Area,
    /// The check, e.g. [`Check::HashMismatch`].
    pub check: Check,
    /// The bundle file concerned, if one.
    pub file: Option<String>,
    /// What was found, one sentence (exact bundle text; escape to print).
    pub detail: String,
}

impl Finding {
    /// The finding as it is worded everywhere (the terminal's evidence
    /// status, `verify`, `summary.json`'s `message`, report.html): the
    /// check's name, then the sentence saying what was found. Exact bundle
    /// text: escape it to print.
    pub fn message(&self) -> String {
        format!("{}: {}", self.check.name(), self.detail)
    }
}

impl Serialize for Finding {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Finding", 5)?;
        st.serialize_field("area", &self.area)?;
        st.serialize_field("check", self.check.name())?;
        if let Some(f) = &self.file {
            st.serialize_field("file", f)?;
        } else {
            st.skip_field("file")?;
        }
        st.serialize_field("detail", &self.detail)?;
        st.serialize_field("message", &self.message())?;
        st.end()
    }
}

/// Recorder errors of the manifest that a finding already words (`write`,
/// lost `events` and `conntrack-events`, `capture`, `read-fd`): report.html
/// shows those through the finding, the others with
/// [`recorder_error_sentence`].
pub const RECORDER_ERRORS_IN_FINDINGS: [&str; 5] =
    ["write", "events", "conntrack-events", "capture", "read-fd"];

/// A recorder error of the manifest in one sentence (bounded, exact bundle
/// text: escape it to print): `the recorder reported 3 read-proc error(s)
/// at /proc/4242/fd: ENOENT`.
pub fn recorder_error_sentence(e: &procflow_format::layout::RecordError) -> String {
    format!(
        "the recorder reported {} {} error(s){}: {}",
        e.count,
        visible(&e.what, 40),
        e.path
            .as_deref()
            .map(|p| format!(" at {}", visible(p, 256)))
            .unwrap_or_default(),
        visible(&e.error, ERROR_TEXT_MAX)
    )
}

/// The state of one area.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AreaStatus {
    /// The area.
    pub area: Area,
    /// `ok`, `failed` or `not-checked`.
    pub state: &'static str,
    /// One line: what holds, or how many findings.
    pub detail: String,
}

/// tcpdump's counters as known to the checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Where they come from: `manifest` or `tcpdump.log`.
    pub source: &'static str,
    /// The counters.
    #[serde(flatten)]
    pub counters: CaptureCounters,
}

/// The result of all checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// `true` when every area is `ok` or `not-checked`.
    pub ok: bool,
    /// One entry per area, in [`Area::ALL`] order.
    pub status: Vec<AreaStatus>,
    /// Every finding, by area.
    pub findings: Vec<Finding>,
    /// Files hashed and their SHA-256, by file name.
    #[serde(skip)]
    pub hashes: BTreeMap<String, String>,
    /// tcpdump's counters, when known.
    pub capture_counters: Option<Counters>,
    /// fd directories the recorder could not read (summed from the
    /// manifest's `read-fd` errors).
    pub unreadable_fd_dirs: u64,
    /// The bundle digest: SHA-256 of `SHA256SUMS` as it is (which names
    /// and hashes every file), lowercase hex; `None` without a readable
    /// `SHA256SUMS`. The recorder prints it when it stops; a digest noted
    /// then and compared now shows a bundle rewritten since, hashes and
    /// all.
    pub digest: Option<String>,
    /// What the recorder deleted while recording (`--max-size`,
    /// `--keep`): information, not a failure, when the options asked for
    /// it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted: Option<Deleted>,
    /// Packet records in the bundle's capture files, read before any
    /// damage.
    #[serde(skip)]
    pub capture_packets: u64,
}

/// What the recorder deleted while recording, summed from the manifest's
/// `deleted` list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deleted {
    /// Files deleted.
    pub files: u64,
    /// Capture files among them.
    pub captures: u64,
    /// Snapshot archives among them.
    pub archives: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Earliest time they covered, ns since the epoch.
    pub first_ns: i64,
    /// Latest time they covered, ns since the epoch.
    pub last_ns: i64,
    /// The limits that asked for it (`--max-size 8000000 bytes`,
    /// `--keep 600 s`); empty when none did.
    pub asked: String,
}

impl Deleted {
    /// From the manifest; `None` when nothing was deleted.
    pub fn of(m: &Manifest) -> Option<Deleted> {
        if m.deleted.is_empty() {
            return None;
        }
        let mut d = Deleted {
            files: 0,
            captures: 0,
            archives: 0,
            bytes: 0,
            first_ns: i64::MAX,
            last_ns: i64::MIN,
            asked: String::new(),
        };
        for e in &m.deleted {
            let n = e.files.max(1);
            d.files = d.files.saturating_add(n);
            match e.kind.as_str() {
                "capture" => d.captures = d.captures.saturating_add(n),
                "archive" => d.archives = d.archives.saturating_add(n),
                _ => {}
            }
            d.bytes = d.bytes.saturating_add(e.bytes);
            d.first_ns = d.first_ns.min(e.first_ns);
            d.last_ns = d.last_ns.max(e.last_ns);
        }
        let mut asked = Vec::new();
        if let Some(b) = m.options.max_size_bytes {
            asked.push(format!("--max-size {b} bytes"));
        }
        if let Some(k) = m.options.keep_ms {
            asked.push(format!("--keep {} s", k / 1000));
        }
        d.asked = asked.join(", ");
        Some(d)
    }

    /// One line for the terminal.
    pub fn line(&self) -> String {
        format!(
            "deleted as {}: {} older file(s) ({} capture, {} archive; {} bytes) covering {} .. {}; \
             the bundle no longer holds them (manifest `deleted`)",
            if self.asked.is_empty() { "nothing asked" } else { &self.asked },
            self.files,
            self.captures,
            self.archives,
            self.bytes,
            crate::time::rfc3339_ns(self.first_ns),
            crate::time::rfc3339_ns(self.last_ns)
        )
    }
}

/// How one archive ended, as its reader saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveState {
    /// Closed by its tar trailer.
    Whole,
    /// Ends at a member boundary without trailer.
    NoTrailer,
    /// Cut inside a member or a snapshot, at `offset`.
    Cut {
        /// Byte offset of the incomplete part.
        offset: u64,
        /// What was found there.
        what: String,
    },
    /// Could not be opened or read.
    Unreadable(String),
}

/// What the checks are given besides the bundle directory and manifest.
#[derive(Debug, Clone, Default)]
pub struct Known {
    /// SHA-256 already computed, by file name (`analyze` hashes while it
    /// replays); the others are computed by the checks.
    pub hashes: HashMap<String, String>,
    /// Do not hash at all (`analyze --no-hash`): integrity is `not-checked`
    /// as far as hashes go.
    pub no_hash: bool,
    /// How each archive ended, by file name; archives absent here are read
    /// by the checks.
    pub archives: HashMap<String, ArchiveState>,
    /// How each capture file of the bundle reads, by file name (`analyze`
    /// knows from its replay); captures absent here are walked by the
    /// checks ([`crate::capture::structure`]).
    pub captures: HashMap<String, Result<Structure, String>>,
    /// The bundle digest noted when the bundle was collected (`verify
    /// --expect`): any other digest is a finding.
    pub expect: Option<String>,
}

/// Reads an archive through the format's reader only to see how it ends.
pub fn archive_state(path: &Path) -> ArchiveState {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) => return ArchiveState::Unreadable(e.to_string()),
    };
    match procflow_format::reader::read_snapshots(BufReader::new(f), |_| {}) {
        Ok(s) if !s.damaged.is_empty() => {
            let d = &s.damaged[0];
            ArchiveState::Cut {
                offset: d.offset,
                what: format!(
                    "{}; {} damaged part(s) skipped, reading resumed at byte {}",
                    d.what,
                    s.damaged.len(),
                    d.resumed_at
                ),
            }
        }
        Ok(s) => match s.end {
            procflow_format::reader::ArchiveEnd::Trailer => ArchiveState::Whole,
            procflow_format::reader::ArchiveEnd::CleanCut => ArchiveState::NoTrailer,
            procflow_format::reader::ArchiveEnd::Cut { offset, what } => {
                ArchiveState::Cut { offset, what }
            }
        },
        Err(e) => ArchiveState::Unreadable(e.to_string()),
    }
}

/// One parsed `SHA256SUMS`: name -> hash, and its malformed lines.
#[derive(Debug, Default)]
pub(crate) struct Sums {
    /// Hash (lowercase hex) by file name, from the well-formed lines.
    pub(crate) by_name: BTreeMap<String, String>,
    malformed: Vec<(usize, String)>,
}

/// Parses `SHA256SUMS` text; malformed lines are kept apart, not used.
pub(crate) fn parse_sums(text: &str) -> Sums {
    let mut s = Sums::default();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.is_empty() {
            continue;
        }
        let Some((h, name)) = line.split_once(' ') else {
            s.malformed.push((
                n,
                "expected `HEX  NAME` (64 hex digits, two spaces, a name)".into(),
            ));
            continue;
        };
        let name = name
            .strip_prefix(' ')
            .or_else(|| name.strip_prefix('*'))
            .unwrap_or(name);
        if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            s.malformed
                .push((n, "the hash is not 64 hex digits".into()));
            continue;
        }
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            s.malformed.push((
                n,
                "the name is not a file name of the bundle directory".into(),
            ));
            continue;
        }
        if s.by_name
            .insert(name.to_string(), h.to_ascii_lowercase())
            .is_some()
        {
            s.malformed.push((n, format!("{name} is listed twice")));
        }
    }
    s
}

/// tcpdump's counters in the text of its log (the last value of each);
/// see [`CaptureCounters::from_tcpdump_log`].
pub fn parse_tcpdump_log(text: &str) -> Option<CaptureCounters> {
    CaptureCounters::from_tcpdump_log(text)
}

/// Lines of tcpdump's log that name one of its counters but whose count is
/// not a number (`-5 packets dropped by kernel`): (line number, text).
pub fn unreadable_counter_lines(text: &str) -> Vec<(usize, String)> {
    const PHRASES: [&str; 4] = [
        "captured",
        "received by filter",
        "dropped by kernel",
        "dropped by interface",
    ];
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let Some((num, rest)) = line.trim().split_once(' ') else {
            continue;
        };
        let rest = rest
            .trim_start_matches("packets ")
            .trim_start_matches("packet ");
        if PHRASES.contains(&rest) && num.parse::<u64>().is_err() {
            out.push((i + 1, line.to_string()));
        }
    }
    out
}

/// Whether a directory entry name is one of the bundle's captures.
pub fn is_capture_name(n: &str) -> bool {
    n.starts_with(CAPTURE_PREFIX) || n.ends_with(".pcap") || n.ends_with(".pcapng")
}

struct Checker {
    findings: Vec<Finding>,
}

impl Checker {
    fn add(&mut self, area: Area, check: Check, file: Option<&str>, detail: String) {
        self.findings.push(Finding {
            area,
            check,
            file: file.map(str::to_string),
            detail,
        });
    }
}

/// Runs every check on the bundle in `dir` whose manifest is `m`: one
/// function per [`Area`], each adding its findings.
pub fn check(dir: &Path, m: &Manifest, known: &Known) -> Evidence {
    let mut c = Checker {
        findings: Vec::new(),
    };
    let Integrity {
        regular,
        hashes,
        digest,
        deleted,
        capture_packets,
    } = check_integrity(&mut c, dir, m, known);
    check_recorder(&mut c, m);
    let capture_counters = check_capture(&mut c, dir, m, &regular);
    let unreadable = check_fds(&mut c, m);
    let status = Area::ALL
        .iter()
        .map(|&a| {
            let n = c.findings.iter().filter(|f| f.area == a).count();
            let (state, detail) = if n > 0 {
                ("failed", format!("{n} finding(s)"))
            } else {
                area_ok(a, &hashes, known.no_hash, m, &capture_counters)
            };
            AreaStatus {
                area: a,
                state,
                detail,
            }
        })
        .collect::<Vec<_>>();
    Evidence {
        ok: c.findings.is_empty(),
        status,
        findings: c.findings,
        hashes,
        capture_counters,
        unreadable_fd_dirs: unreadable,
        digest,
        deleted,
        capture_packets,
    }
}

/// What the integrity checks found that the other areas and the evidence
/// use.
struct Integrity {
    /// The bundle's regular files.
    regular: BTreeSet<String>,
    /// SHA-256 of each file listed in SHA256SUMS and present.
    hashes: BTreeMap<String, String>,
    /// The bundle digest (SHA-256 of SHA256SUMS), when it could be read.
    digest: Option<String>,
    /// Files the recorder deleted (a ring of files).
    deleted: Option<Deleted>,
    /// Packets read in the capture files.
    capture_packets: u64,
}

/// [`Area::Integrity`]: the directory, SHA256SUMS and the bundle digest,
/// missing and unlisted files, hashes, archives and captures whole,
/// deletions.
fn check_integrity(c: &mut Checker, dir: &Path, m: &Manifest, known: &Known) -> Integrity {
    use rayon::prelude::*;
    // The directory: regular files, and names that should be files but
    // are not.
    let mut regular: BTreeSet<String> = BTreeSet::new();
    match std::fs::read_dir(dir) {
        Ok(rd) => {
            for e in rd.flatten() {
                // A name that is not UTF-8 keeps its bytes visible
                // (`\xff`) rather than U+FFFD.
                let raw = e.file_name();
                let name = match raw.to_str() {
                    Some(n) => n.to_string(),
                    None => {
                        use std::os::unix::ffi::OsStrExt;
                        crate::hostile::term_bytes(raw.as_bytes())
                    }
                };
                let Ok(ft) = e.file_type() else { continue };
                if ft.is_file() {
                    regular.insert(name);
                } else if is_capture_name(&name) || parse_archive_name(&name).is_some() {
                    let kind = if ft.is_symlink() {
                        "a symbolic link"
                    } else if ft.is_dir() {
                        "a directory"
                    } else if ft.is_fifo() {
                        "a FIFO"
                    } else {
                        "not a regular file"
                    };
                    c.add(
                        Area::Integrity,
                        Check::NotARegularFile,
                        Some(&name),
                        format!("{name} is {kind}; it is not read as part of the bundle"),
                    );
                }
            }
        }
        Err(e) => c.add(
            Area::Integrity,
            Check::UnreadableBundle,
            None,
            format!("the bundle directory cannot be listed: {e}"),
        ),
    }
    // Files the manifest names.
    let named: BTreeSet<&str> = m
        .archives
        .iter()
        .chain(m.capture_files.iter())
        .map(String::as_str)
        .collect();
    // SHA256SUMS, and the bundle digest over it.
    let mut digest: Option<String> = None;
    let sums = if regular.contains(SHA256SUMS_FILE) {
        match crate::hostile::read_small_file(
            &dir.join(SHA256SUMS_FILE),
            crate::hostile::SMALL_FILE_CAP,
        ) {
            Ok(b) => {
                digest = Some(bundle_digest(&b));
                Some(parse_sums(&String::from_utf8_lossy(&b)))
            }
            Err(e) => {
                c.add(
                    Area::Integrity,
                    Check::Sha256SumsUnreadable,
                    Some(SHA256SUMS_FILE),
                    format!("{SHA256SUMS_FILE} cannot be read: {e}"),
                );
                None
            }
        }
    } else {
        c.add(
            Area::Integrity,
            Check::Sha256SumsMissing,
            Some(SHA256SUMS_FILE),
            format!(
                "{SHA256SUMS_FILE} is missing: no file of the bundle can be checked against \
                 what the recorder wrote"
            ),
        );
        None
    };
    if let Some(s) = &sums {
        for (line, what) in &s.malformed {
            c.add(
                Area::Integrity,
                Check::Sha256SumsMalformed,
                Some(SHA256SUMS_FILE),
                format!("{SHA256SUMS_FILE} line {line}: {what}"),
            );
        }
        if s.by_name.is_empty() {
            c.add(
                Area::Integrity,
                Check::Sha256SumsEmpty,
                Some(SHA256SUMS_FILE),
                format!("{SHA256SUMS_FILE} lists no file"),
            );
        }
    }
    if let Some(want) = &known.expect {
        let want = want.trim().to_ascii_lowercase();
        match &digest {
            Some(d) if *d == want => {}
            Some(d) => c.add(
                Area::Integrity,
                Check::DigestMismatch,
                Some(SHA256SUMS_FILE),
                format!(
                    "bundle digest {d} is not the digest noted at collection, {}: the bundle \
                     was rewritten since (files and hashes alike)",
                    visible(&want, 80)
                ),
            ),
            None => c.add(
                Area::Integrity,
                Check::DigestMismatch,
                Some(SHA256SUMS_FILE),
                format!(
                    "the bundle digest cannot be computed without {SHA256SUMS_FILE}; the \
                     digest noted at collection was {}",
                    visible(&want, 80)
                ),
            ),
        }
    }
    // Missing files: listed in SHA256SUMS or named by the manifest.
    let listed: BTreeSet<&str> = sums
        .as_ref()
        .map(|s| s.by_name.keys().map(String::as_str).collect())
        .unwrap_or_default();
    for name in listed.union(&named) {
        if regular.contains(*name) {
            continue;
        }
        let by = match (listed.contains(name), named.contains(name)) {
            (true, true) => "named in the manifest and listed in SHA256SUMS",
            (true, false) => "listed in SHA256SUMS",
            _ => "named in the manifest",
        };
        c.add(
            Area::Integrity,
            Check::FileMissing,
            Some(name),
            format!("{name} is {by} but absent from the bundle"),
        );
    }
    // Files present but not listed / not named.
    let tmp_name = format!("{MANIFEST_FILE}.tmp");
    for name in &regular {
        if name == SHA256SUMS_FILE || *name == tmp_name || name.ends_with(".tmp") {
            continue;
        }
        if sums.is_some() && !listed.contains(name.as_str()) {
            c.add(
                Area::Integrity,
                Check::NotListed,
                Some(name),
                format!("{name} is in the bundle but not listed in {SHA256SUMS_FILE}"),
            );
        }
        let evidence_file = is_capture_name(name) || parse_archive_name(name).is_some();
        if evidence_file && m.status != RecorderStatus::Recording && !named.contains(name.as_str())
        {
            c.add(
                Area::Integrity,
                Check::NotInManifest,
                Some(name),
                format!("{name} is in the bundle but the manifest does not name it"),
            );
        }
    }
    // Hashes of the listed files present.
    let mut hashes: BTreeMap<String, String> = BTreeMap::new();
    if let (Some(s), false) = (&sums, known.no_hash) {
        let todo: Vec<&String> = s.by_name.keys().filter(|n| regular.contains(*n)).collect();
        let got: Vec<(String, Result<String, String>)> = todo
            .par_iter()
            .map(|n| {
                let h = match known.hashes.get(*n) {
                    Some(h) => Ok(h.clone()),
                    None => sha256_file(&dir.join(n))
                        .map(|(h, _)| h)
                        .map_err(|e| e.to_string()),
                };
                ((*n).clone(), h)
            })
            .collect();
        for (name, h) in got {
            match h {
                Ok(h) => {
                    if s.by_name.get(&name) != Some(&h) {
                        c.add(
                            Area::Integrity,
                            Check::HashMismatch,
                            Some(&name),
                            format!(
                                "{name}: SHA-256 {h} differs from {} recorded in {SHA256SUMS_FILE}: \
                                 the file changed after recording",
                                s.by_name.get(&name).map_or("", String::as_str)
                            ),
                        );
                    }
                    hashes.insert(name, h);
                }
                Err(e) => c.add(
                    Area::Integrity,
                    Check::UnreadableFile,
                    Some(&name),
                    format!("{name} cannot be read: {e}"),
                ),
            }
        }
    }
    // Archives whole.
    let mut archive_names: Vec<(u32, &str)> = regular
        .iter()
        .filter_map(|n| parse_archive_name(n).map(|k| (k, n.as_str())))
        .collect();
    archive_names.sort();
    let states: Vec<(&str, ArchiveState)> = archive_names
        .par_iter()
        .map(|(_, n)| {
            let st = known
                .archives
                .get(*n)
                .cloned()
                .unwrap_or_else(|| archive_state(&dir.join(n)));
            (*n, st)
        })
        .collect();
    for (name, st) in states {
        match st {
            ArchiveState::Whole => {}
            ArchiveState::NoTrailer => c.add(
                Area::Integrity,
                Check::ArchiveNotClosed,
                Some(name),
                format!(
                    "{name} has no tar trailer: the recorder never closed it (every snapshot in \
                     it is complete)"
                ),
            ),
            ArchiveState::Cut { offset, what } => c.add(
                Area::Integrity,
                Check::ArchiveCut,
                Some(name),
                format!("{name} is cut at byte offset {offset}: {what}"),
            ),
            ArchiveState::Unreadable(e) => c.add(
                Area::Integrity,
                Check::UnreadableFile,
                Some(name),
                format!("{name} cannot be read: {e}"),
            ),
        }
    }
    // Captures whole: every record complete and sound. Hashes say a file
    // is as the recorder wrote it; this says what it holds can be read,
    // also when the file was cut and SHA256SUMS written again after.
    let capture_names: Vec<&str> = regular
        .iter()
        .filter(|n| is_capture_name(n))
        .map(String::as_str)
        .collect();
    let structures: Vec<(&str, Result<Structure, String>)> = capture_names
        .par_iter()
        .map(|n| {
            let st = known
                .captures
                .get(*n)
                .cloned()
                .unwrap_or_else(|| crate::capture::structure(&dir.join(n)));
            (*n, st)
        })
        .collect();
    let mut capture_packets: u64 = 0;
    for (name, st) in structures {
        match st {
            Ok(Structure { packets, damage }) => {
                capture_packets = capture_packets.saturating_add(packets);
                if let Some(Damage { offset, kind, what }) = damage {
                    let check = match kind {
                        ProblemKind::TruncatedRecord
                        | ProblemKind::TruncatedBlock
                        | ProblemKind::ReadFailed => Check::CaptureCut,
                        _ => Check::CaptureDamaged,
                    };
                    c.add(
                        Area::Integrity,
                        check,
                        Some(name),
                        format!(
                            "{name} is damaged at byte offset {offset} after {packets} readable \
                             packet(s): {} ({kind})",
                            visible(&what, ERROR_TEXT_MAX)
                        ),
                    );
                }
            }
            Err(e) => c.add(
                Area::Integrity,
                Check::CaptureUnreadable,
                Some(name),
                format!(
                    "{name} cannot be read as a capture: {}",
                    visible(&e, ERROR_TEXT_MAX)
                ),
            ),
        }
    }
    // Deletions: information when the options asked for them.
    let deleted = Deleted::of(m);
    if let Some(d) = deleted.as_ref().filter(|d| d.asked.is_empty()) {
        c.add(
            Area::Integrity,
            Check::DeletedUnasked,
            Some(MANIFEST_FILE),
            format!(
                "the manifest lists {} deleted file(s) but no --max-size or --keep asked for \
                 deletion",
                d.files
            ),
        );
    }
    Integrity {
        regular,
        hashes,
        digest,
        deleted,
        capture_packets,
    }
}

/// [`Area::Recorder`]: how the recorder ended, its write errors, the
/// evidence it lost itself.
fn check_recorder(c: &mut Checker, m: &Manifest) {
    // Recorder.
    if m.status != RecorderStatus::Complete {
        let why = match m.status {
            RecorderStatus::Recording => {
                "the recorder did not stop cleanly (killed, crashed or power loss) or is still \
                 running"
            }
            RecorderStatus::Killed => "a second signal forced the recorder out before it finished",
            RecorderStatus::DiskFull => "the disk filled up; recording stopped early",
            RecorderStatus::Error => "a write error stopped the recording",
            RecorderStatus::Complete | RecorderStatus::Other(_) => {
                "not a status this procflow knows"
            }
        };
        c.add(
            Area::Recorder,
            Check::RecorderStatus,
            Some(MANIFEST_FILE),
            format!(
                "recorder status is {:?}, not \"complete\": {why}",
                m.status.as_str()
            ),
        );
    }
    for e in m.errors.iter().filter(|e| e.what == "write") {
        c.add(
            Area::Recorder,
            Check::RecorderWriteError,
            Some(MANIFEST_FILE),
            format!(
                "the recorder reported a write error: {}",
                visible(&e.error, ERROR_TEXT_MAX)
            ),
        );
    }
    // Evidence the recorder itself lost: event samples dropped by the
    // kernel or by the recorder, conntrack event batches (ENOBUFS). The
    // recorder says these on its final line; the bundle says them here.
    for e in m
        .errors
        .iter()
        .filter(|e| e.what == "events" || e.what == "conntrack-events")
    {
        c.add(
            Area::Recorder,
            Check::RecorderLostEvents,
            Some(MANIFEST_FILE),
            format!(
                "the recorder lost evidence ({}): {} {}",
                visible(&e.what, 40),
                e.count,
                visible(&e.error, ERROR_TEXT_MAX)
            ),
        );
    }
    for e in m.errors.iter().filter(|e| e.what == "capture") {
        c.add(
            Area::Capture,
            Check::CaptureExited,
            Some(MANIFEST_FILE),
            format!(
                "the capture stopped before the recording: {}",
                visible(&e.error, ERROR_TEXT_MAX)
            ),
        );
    }
}

/// [`Area::Capture`]: the capture's counters (manifest, else tcpdump.log),
/// drops, counter lines that hold no count.
fn check_capture(
    c: &mut Checker,
    dir: &Path,
    m: &Manifest,
    regular: &BTreeSet<String>,
) -> Option<Counters> {
    // Capture counters.
    let mut capture_counters = None;
    if m.capture.is_some() {
        let from_manifest = m.capture.as_ref().and_then(|c| c.counters.clone());
        capture_counters = match from_manifest {
            Some(counters) => Some(Counters {
                source: "manifest",
                counters,
            }),
            None => crate::hostile::read_small_file(
                &dir.join(TCPDUMP_LOG_FILE),
                crate::hostile::SMALL_FILE_CAP,
            )
            .ok()
            .and_then(|b| parse_tcpdump_log(&String::from_utf8_lossy(&b)))
            .map(|counters| Counters {
                source: "tcpdump.log",
                counters,
            }),
        };
        match &capture_counters {
            None => c.add(
                Area::Capture,
                Check::CaptureCountersMissing,
                Some(TCPDUMP_LOG_FILE),
                "tcpdump's packet counters are in neither the manifest nor tcpdump.log \
                 (tcpdump did not stop cleanly): drops are unknown"
                    .into(),
            ),
            Some(k) => {
                let t = &k.counters;
                let who = match m.capture.as_ref().and_then(|c| c.method.as_deref()) {
                    Some("af-packet") => "the recorder's capture",
                    _ => "tcpdump",
                };
                if t.dropped_by_kernel > 0 {
                    c.add(
                        Area::Capture,
                        Check::CaptureDrops,
                        Some(k.source),
                        format!(
                            "{who} reports {} packets dropped by kernel of {} received by \
                             filter ({:.1} %): the capture misses traffic{}",
                            t.dropped_by_kernel,
                            t.received_by_filter,
                            pct(t.dropped_by_kernel, t.received_by_filter),
                            iface_any_note(m.capture.as_ref().map(|c| c.iface.as_str()), t)
                        ),
                    );
                }
                if let Some(d) = t.dropped_by_interface.filter(|&d| d > 0) {
                    c.add(
                        Area::Capture,
                        Check::CaptureDrops,
                        Some(k.source),
                        format!("tcpdump reports {d} packets dropped by interface"),
                    );
                }
            }
        }
    }
    // Counter lines of tcpdump.log that say a count but not as a number
    // (`-5 packets dropped by kernel`): unknown, not zero.
    if regular.contains(TCPDUMP_LOG_FILE) {
        if let Ok(b) = crate::hostile::read_small_file(
            &dir.join(TCPDUMP_LOG_FILE),
            crate::hostile::SMALL_FILE_CAP,
        ) {
            let bad = unreadable_counter_lines(&String::from_utf8_lossy(&b));
            if let Some((line, text)) = bad.first() {
                c.add(
                    Area::Capture,
                    Check::CaptureCountersUnreadable,
                    Some(TCPDUMP_LOG_FILE),
                    format!(
                        "{} counter line(s) of {TCPDUMP_LOG_FILE} hold no count, first line \
                         {line}: {:?}: those counters are unknown, not zero",
                        bad.len(),
                        visible(text, 120)
                    ),
                );
            }
        }
    }
    capture_counters
}

/// [`Area::Fds`]: privileges and unreadable fd directories; the number of
/// failed fd directory reads.
fn check_fds(c: &mut Checker, m: &Manifest) -> u64 {
    // fds.
    let unreadable: u64 = m
        .errors
        .iter()
        .filter(|e| e.what == "read-fd")
        .map(|e| e.count)
        .sum();
    if m.privileges.euid != 0 {
        c.add(
            Area::Fds,
            Check::NotRoot,
            Some(MANIFEST_FILE),
            format!(
                "the recorder ran as uid {}, not root: other users' sockets have no visible owner",
                m.privileges.euid
            ),
        );
    }
    if unreadable > 0 {
        c.add(
            Area::Fds,
            Check::UnreadableFds,
            Some(MANIFEST_FILE),
            format!(
                "{unreadable} fd directory read(s) failed (e.g. EACCES): the owners of those \
                 processes' sockets are hidden, not absent"
            ),
        );
    }
    unreadable
}

/// Why "received by filter" exceeds "captured" on `--iface any`: the
/// kernel's filter sees a loopback packet twice (sent, then received) and
/// libpcap keeps only the received copy, so the difference is not a loss.
/// Empty unless the capture ran on `any` and the counts differ.
fn iface_any_note(iface: Option<&str>, c: &CaptureCounters) -> String {
    let extra = c
        .received_by_filter
        .saturating_sub(c.captured.saturating_add(c.dropped_by_kernel));
    if iface != Some("any") || extra == 0 {
        return String::new();
    }
    format!(
        "; on --iface any the filter sees each loopback packet twice (sent and received) \
         and the capture keeps it once, so {extra} more received than captured are \
         loopback duplicates, not losses"
    )
}

fn pct(a: u64, b: u64) -> f64 {
    if b == 0 {
        100.0
    } else {
        a as f64 * 100.0 / b as f64
    }
}

fn area_ok(
    a: Area,
    hashes: &BTreeMap<String, String>,
    no_hash: bool,
    m: &Manifest,
    counters: &Option<Counters>,
) -> (&'static str, String) {
    match a {
        Area::Integrity if no_hash => (
            "not-checked",
            "hashes not checked (--no-hash); files present and archives whole".into(),
        ),
        Area::Integrity => (
            "ok",
            format!(
                "{} files match {SHA256SUMS_FILE}; every file present, archives and captures whole",
                hashes.len()
            ),
        ),
        Area::Recorder => ("ok", "status complete".into()),
        Area::Capture => match counters {
            None if m.capture.is_none() => (
                "not-checked",
                "the recorder ran no capture (captures recorded separately)".into(),
            ),
            None => ("failed", "no counters".into()),
            Some(k) => (
                "ok",
                format!(
                    "{} packets captured, {} received by filter, 0 dropped by kernel ({}){}",
                    k.counters.captured,
                    k.counters.received_by_filter,
                    k.source,
                    iface_any_note(m.capture.as_ref().map(|c| c.iface.as_str()), &k.counters)
                ),
            ),
        },
        Area::Fds => (
            "ok",
            format!(
                "recorder ran as root (euid {}); every fd directory was readable",
                m.privileges.euid
            ),
        ),
    }
}

/// Packet records in each capture file, read the way the analyzer reads
/// them (a cut last record is not counted). Returns the sum and one
/// `capture-unreadable` finding per file that cannot be read at all.
pub fn count_capture_packets(paths: &[std::path::PathBuf]) -> (u64, Vec<Finding>) {
    use crate::capture::scan::Scanner;
    let mut total = 0u64;
    let mut findings = Vec::new();
    let mut recs = Vec::new();
    let mut problems = Vec::new();
    for p in paths {
        let name = p
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let unreadable = |what: String| Finding {
            area: Area::Integrity,
            check: Check::CaptureUnreadable,
            file: Some(name.clone()),
            detail: format!("{name} cannot be read as a capture: {what}"),
        };
        let src = match crate::capture::source::Source::open(p) {
            Ok(s) => s,
            Err(e) => {
                findings.push(unreadable(e.to_string()));
                continue;
            }
        };
        if src.bytes().is_empty() {
            continue;
        }
        let mut sc = match Scanner::open(src.bytes()) {
            Ok(s) => s,
            Err(e) => {
                findings.push(unreadable(format!("at byte {}: {}", e.offset, e.what)));
                continue;
            }
        };
        while !sc.is_done() {
            // Problems are the analyzer's to report; only records count here.
            sc.next_batch(&mut recs, 32_768, 4 << 20, &mut problems);
            problems.clear();
        }
        total += sc.packets;
    }
    (total, findings)
}

/// The packets the capture files hold against the packets the capture
/// took: the recorder's own count (`captured`: packets it took from the
/// kernel, all of which belong in the files) or tcpdump's (`N packets
/// captured`). Fewer in the files is a `capture-packets-missing` finding
/// that says how many, and what the recorder knew of it.
pub fn packet_shortfall(
    m: &Manifest,
    counters: Option<&Counters>,
    in_files: u64,
) -> Option<Finding> {
    let c = counters?;
    let took = c.counters.captured;
    if in_files >= took {
        return None;
    }
    let who = match m.capture.as_ref().and_then(|c| c.native.as_ref()) {
        Some(n) => format!(
            "the recorder took {took} packets from the kernel (it wrote {}, lost {} to {} failed \
             write(s))",
            n.packets_written, n.packets_lost_writing, n.write_errors
        ),
        None => format!("tcpdump captured {took} packets"),
    };
    Some(Finding {
        area: Area::Capture,
        check: Check::CapturePacketsMissing,
        file: None,
        detail: format!(
            "{who} but the bundle's capture files hold {in_files}: {} packets are missing",
            took - in_files
        ),
    })
}

impl Evidence {
    /// The status of inputs that are not a bundle (a capture with UAC
    /// collections and audit logs): no recorder, no capture counters, no
    /// fd walks to check; each damaged input is an integrity finding.
    pub fn foreign(damaged: &[String]) -> Evidence {
        let mut ev = Evidence {
            ok: true,
            status: Area::ALL
                .iter()
                .map(|&area| AreaStatus {
                    area,
                    state: if area == Area::Integrity {
                        "ok"
                    } else {
                        "not-checked"
                    },
                    detail: if area == Area::Integrity {
                        "every input read whole".to_string()
                    } else {
                        "not a recorder bundle".to_string()
                    },
                })
                .collect(),
            findings: Vec::new(),
            hashes: BTreeMap::new(),
            capture_counters: None,
            unreadable_fd_dirs: 0,
            digest: None,
            deleted: None,
            capture_packets: 0,
        };
        for d in damaged {
            ev.add(Finding {
                area: Area::Integrity,
                check: Check::EvidenceDamaged,
                file: None,
                detail: d.clone(),
            });
        }
        ev
    }

    /// Names of the areas whose status is `failed`, in [`Area::ALL`] order.
    pub fn failed_areas(&self) -> Vec<&'static str> {
        self.status
            .iter()
            .filter(|s| s.state == "failed")
            .map(|s| s.area.name())
            .collect()
    }

    /// Adds a finding found elsewhere (the analysis knows which captures
    /// could not be read and how many packets they held) and updates the
    /// status of its area.
    pub fn add(&mut self, f: Finding) {
        let area = f.area;
        self.findings.push(f);
        self.findings.sort_by_key(|f| f.area);
        self.ok = false;
        let n = self.findings.iter().filter(|f| f.area == area).count();
        if let Some(s) = self.status.iter_mut().find(|s| s.area == area) {
            s.state = "failed";
            s.detail = format!("{n} finding(s)");
        }
    }

    /// The evidence status block, one line per area then one per finding,
    /// escaped for the terminal.
    pub fn status_block(&self) -> Vec<String> {
        let mut out = vec![format!(
            "procflow: evidence status: {}",
            if self.ok {
                "all checks hold"
            } else {
                "WARNING: some checks failed"
            }
        )];
        for s in &self.status {
            out.push(format!(
                "procflow:   {:<9} {:<11} {}",
                s.area.name(),
                s.state,
                term(&s.detail)
            ));
            for f in self.findings.iter().filter(|f| f.area == s.area) {
                out.push(format!("procflow:     {}", term(&f.message())));
            }
        }
        if let Some(d) = &self.deleted {
            out.push(format!("procflow:   {}", d.line()));
        }
        out.push(format!("procflow:   {}", self.digest_line()));
        out
    }

    /// The bundle digest line: `bundle digest: sha256:HEX`, or why there is
    /// none.
    pub fn digest_line(&self) -> String {
        match &self.digest {
            Some(d) => {
                format!("bundle digest: sha256:{d} (compare with the one noted at collection)")
            }
            None => format!("bundle digest: none ({SHA256SUMS_FILE} missing or unreadable)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcpdump_counters() {
        let log = "tcpdump: listening on pfs1\n3 packets captured\n3 packets received by filter\n0 packets dropped by kernel\n1422 packets captured\n1423 packets received by filter\n7 packets dropped by kernel\n";
        let c = parse_tcpdump_log(log).unwrap();
        assert_eq!(
            (c.captured, c.received_by_filter, c.dropped_by_kernel),
            (1422, 1423, 7)
        );
        assert_eq!(c.dropped_by_interface, None);
        assert!(parse_tcpdump_log("tcpdump: listening\n").is_none());
        let bad =
            unreadable_counter_lines("3 packets captured\n-5 packets dropped by kernel\nx y\n");
        assert_eq!(bad, vec![(2, "-5 packets dropped by kernel".to_string())]);
    }

    #[test]
    fn iface_any_difference_is_explained() {
        let c = parse_tcpdump_log(
            "264 packets captured\n325 packets received by filter\n0 packets dropped by kernel\n",
        )
        .unwrap();
        let n = iface_any_note(Some("any"), &c);
        assert!(n.contains("61 more received than captured"), "{n}");
        assert!(n.contains("loopback"), "{n}");
        assert_eq!(iface_any_note(Some("eth0"), &c), "");
        assert_eq!(iface_any_note(None, &c), "");
        let same = parse_tcpdump_log(
            "3 packets captured\n3 packets received by filter\n0 packets dropped by kernel\n",
        )
        .unwrap();
        assert_eq!(iface_any_note(Some("any"), &same), "");
    }

    #[test]
    fn sums_parsing() {
        let h = "a".repeat(64);
        let s = parse_sums(&format!(
            "{h}  x.pcap\n{h} *y.tar\ngarbage\n{h}  ../etc/passwd\nzz  z\n{h}  x.pcap\n"
        ));
        assert_eq!(s.by_name.len(), 2);
        let lines: Vec<usize> = s.malformed.iter().map(|m| m.0).collect();
        assert_eq!(lines, vec![3, 4, 5, 6]);
    }
}
