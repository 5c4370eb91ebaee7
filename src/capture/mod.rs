//! Capture replay: files -> per-packet records -> flows.
//!
//! Each file is memory-mapped (see `source`) and walked by a cheap
//! sequential `scan::Scanner` that only reads record headers. Records are
//! handed out in bounded batches; a batch's packets are decoded in parallel
//! with rayon into compact `Copy` records while the previous batch is folded
//! into the [`FlowTable`] on another core. Folding is strictly in file
//! order, files in order of their first timestamp, so the output does not
//! depend on the thread count, and memory holds at most two batches whatever
//! the file size.

pub(crate) mod guard;
pub(crate) mod scan;
pub(crate) mod source;

use crate::decode::{self, DecodeError, Decoded, Layer};
use crate::flow::{Flow, FlowTable, PacketFlow, PacketMark, PacketOrigin, SplitRules};
use rayon::prelude::*;
use scan::{RawRec, ScanProblem, Scanner};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Most packets per batch: enough to amortise the rayon fan-out, few
/// enough (a few MB of records) that memory does not grow with the file.
const BATCH: usize = 32_768;

/// Most file bytes per batch: small enough that the packets just scanned
/// are still in cache when they are decoded (measured: 1-4 MB use a fifth
/// less CPU than 32k full-size packets).
const BATCH_BYTES: usize = 2 << 20;

/// How to replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Worker threads; `None` uses all cores.
    pub threads: Option<usize>,
    /// When a flow key is split into several flows.
    pub split: SplitRules,
    /// Problems kept per file with their details; further ones are only
    /// counted (in [`Replay::problem_counts`] and [`FileReport::problems`]).
    pub max_problems_per_file: usize,
    /// Bytes of a memory-mapped file read between two remaps of it: bounds
    /// the map's resident pages, hence peak memory, whatever the file size.
    pub remap_every: usize,
    /// Record the flow of every packet in [`Replay::packet_flows`] (for
    /// writing annotated captures; 16 bytes per packet).
    pub track_packets: bool,
    /// Where to report the bytes read ([`crate::progress::Stage::Replay`]).
    pub progress: Option<crate::progress::Progress>,
    /// Flows whose packets are kept in [`Replay::packets`], to cut them in
    /// time. When set, the replay reads those flows only: [`Replay::flows`]
    /// holds them (and any other flow of the same protocol and endpoints),
    /// and [`Replay::packets`] is keyed by the ids the given flows carry.
    pub keep_packets_of: Vec<Flow>,
    /// Read remote endpoint names (DNS, TLS/QUIC SNI, HTTP) and JA4 from
    /// the first packets of each flow into [`Replay::names`]
    /// (`docs/names.md`).
    pub names: bool,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            threads: None,
            split: SplitRules::default(),
            max_problems_per_file: 1000,
            remap_every: 64 << 20,
            track_packets: false,
            progress: None,
            keep_packets_of: Vec::new(),
            names: false,
        }
    }
}

/// A path as JSON text: lossy UTF-8 (a file name from a hostile host need
/// not be UTF-8, and JSON strings must be).
fn lossy_path<S: serde::Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string_lossy())
}

/// What one input file contributed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileReport {
    /// The path as given.
    #[serde(serialize_with = "lossy_path")]
    pub path: PathBuf,
    /// `pcap` or `pcapng`; empty when the file could not be read at all.
    pub format: String,
    /// Link types of the file's interfaces.
    pub link_types: Vec<u16>,
    /// Packet records read.
    pub packets: u64,
    /// Sum of original frame lengths.
    pub bytes: u64,
    /// Packets whose capture was cut by the snaplen (caplen < orig_len);
    /// not an error, their full length is still counted.
    pub snaplen_cut: u64,
    /// Timestamp of the first packet, ns since the epoch.
    pub first_ns: Option<i64>,
    /// Timestamp of the last packet, ns since the epoch.
    pub last_ns: Option<i64>,
    /// Problems met in this file (all of them, including those past the
    /// detail limit).
    pub problems: u64,
    /// Set when the file could not be read at all: why.
    pub error: Option<String>,
    /// The first damage to the file's structure (a record or block cut
    /// short or impossible, reading failed part way): its offset, kind and
    /// what was found. Content damage, which the evidence checks fail on.
    #[serde(skip)]
    pub damage: Option<Damage>,
}

/// Damage to a capture file's structure: what the evidence checks fail on
/// (a bad packet inside a sound record is not damage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Byte offset of the record or block at fault.
    pub offset: u64,
    /// Its kind: `truncated-record`, `corrupt-block`, `read-failed`...
    pub kind: ProblemKind,
    /// What was found there.
    pub what: String,
}

impl ProblemKind {
    /// Whether the problem is damage to the file's structure rather than
    /// to one packet's content.
    pub fn is_structural(self) -> bool {
        matches!(
            self,
            ProblemKind::ReadFailed
                | ProblemKind::TruncatedRecord
                | ProblemKind::CorruptRecord
                | ProblemKind::TruncatedBlock
                | ProblemKind::CorruptBlock
                | ProblemKind::Resync
                | ProblemKind::UnsupportedSection
        )
    }
}

/// How one capture file reads, record by record: its packet count and its
/// first structural damage. Reads the record headers only (no decoding),
/// through the same scanner and map as replay; memory stays bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Structure {
    /// Packet records read before any damage stopped reading.
    pub packets: u64,
    /// The first damage, if any.
    pub damage: Option<Damage>,
}

/// Walks the capture file at `path` (see [`Structure`]); `Err` when it
/// cannot be opened or is no capture at all.
pub fn structure(path: &Path) -> Result<Structure, String> {
    let mut src = source::Source::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut scanner =
        Scanner::open(src.bytes()).map_err(|e| format!("offset {}: {}", e.offset, e.what))?;
    let mut raw = Vec::with_capacity(BATCH);
    let mut problems = Vec::new();
    let mut damage: Option<Damage> = None;
    let mut mapped_from = 0;
    loop {
        if src.is_mapped() && scanner.position().saturating_sub(mapped_from) >= 64 << 20 {
            let detached = scanner.rebind(&[]);
            src.remap();
            scanner = detached.rebind(src.bytes());
            mapped_from = scanner.position();
        }
        let before = scanner.position();
        scanner.next_batch(&mut raw, BATCH, BATCH_BYTES, &mut problems);
        if let Some((at, now)) = src.failed_at() {
            let limit = now.map_or(at, |n| n.min(at));
            let past = raw
                .iter()
                .filter(|r| (r.data_off as u64).saturating_add(u64::from(r.caplen)) > limit)
                .count() as u64;
            return Ok(Structure {
                packets: scanner.packets.saturating_sub(past),
                damage: damage.or(Some(Damage {
                    offset: at,
                    kind: ProblemKind::ReadFailed,
                    what: format!(
                        "reading failed at byte offset {at}{} (truncated while read, or an I/O \
                         error on the device)",
                        now.map_or(String::new(), |n| format!(", the file now has {n} bytes"))
                    ),
                })),
            });
        }
        for p in problems.drain(..) {
            if damage.is_none() && p.kind.is_structural() {
                damage = Some(Damage {
                    offset: p.offset,
                    kind: p.kind,
                    what: p.what,
                });
            }
        }
        if scanner.is_done() || (raw.is_empty() && scanner.position() == before) {
            break;
        }
    }
    Ok(Structure {
        packets: scanner.packets,
        damage,
    })
}

impl FileReport {
    /// A file about to be read: nothing counted yet.
    fn new(path: &Path, format: &str, error: Option<String>) -> FileReport {
        FileReport {
            path: path.to_path_buf(),
            format: format.to_string(),
            link_types: Vec::new(),
            packets: 0,
            bytes: 0,
            snaplen_cut: 0,
            first_ns: None,
            last_ns: None,
            problems: 0,
            error,
            damage: None,
        }
    }
}

/// The kind of a [`Problem`]: a short stable name in reports (`kebab-case`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// The file is not a capture this build reads, or cannot be read at all.
    UnreadableFile,
    /// Reading the file failed part way (it shrank, or the device failed).
    ReadFailed,
    /// A pcap record ends past the end of the file.
    TruncatedRecord,
    /// A pcap record header is impossible; a classic pcap stops there.
    CorruptRecord,
    /// A record claims more captured bytes than the packet had.
    CaplenExceedsLen,
    /// A timestamp fraction beyond one second.
    TimestampFraction,
    /// A timestamp outside the range of nanoseconds since the epoch.
    TimestampRange,
    /// A pcapng block ends past the end of the file.
    TruncatedBlock,
    /// A pcapng block is malformed.
    CorruptBlock,
    /// A pcapng section of a version this build does not read.
    UnsupportedSection,
    /// Reading resumed at the next well-formed pcapng block after a damaged one.
    Resync,
    /// A malformed pcapng option.
    CorruptOption,
    /// An IP fragment whose first fragment (with the ports) was not captured.
    OrphanFragment,
    /// A link type the decoder does not read.
    UnsupportedLinkType,
    /// The link layer (or a VLAN tag, an MPLS label) is cut short.
    LinkTruncated,
    /// The IP header or an IPv6 extension header is cut short.
    IpTruncated,
    /// The transport header is cut short of the ports.
    TransportTruncated,
    /// The IP version does not fit the link type or ethertype.
    IpVersionMismatch,
    /// An IPv4 header with an impossible length.
    BadIpv4Header,
    /// A BSD loopback frame of an unknown address family.
    UnknownLoopbackFamily,
    /// An MPLS label stack without a bottom label.
    MplsNoBottom,
}

impl ProblemKind {
    /// The kind's name as written in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::UnreadableFile => "unreadable-file",
            ProblemKind::ReadFailed => "read-failed",
            ProblemKind::TruncatedRecord => "truncated-record",
            ProblemKind::CorruptRecord => "corrupt-record",
            ProblemKind::CaplenExceedsLen => "caplen-exceeds-len",
            ProblemKind::TimestampFraction => "timestamp-fraction",
            ProblemKind::TimestampRange => "timestamp-range",
            ProblemKind::TruncatedBlock => "truncated-block",
            ProblemKind::CorruptBlock => "corrupt-block",
            ProblemKind::UnsupportedSection => "unsupported-section",
            ProblemKind::Resync => "resync",
            ProblemKind::CorruptOption => "corrupt-option",
            ProblemKind::OrphanFragment => "orphan-fragment",
            ProblemKind::UnsupportedLinkType => "unsupported-link-type",
            ProblemKind::LinkTruncated => "link-truncated",
            ProblemKind::IpTruncated => "ip-truncated",
            ProblemKind::TransportTruncated => "transport-truncated",
            ProblemKind::IpVersionMismatch => "ip-version-mismatch",
            ProblemKind::BadIpv4Header => "bad-ipv4-header",
            ProblemKind::UnknownLoopbackFamily => "unknown-loopback-family",
            ProblemKind::MplsNoBottom => "mpls-no-bottom",
        }
    }
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&DecodeError> for ProblemKind {
    fn from(e: &DecodeError) -> Self {
        match e {
            DecodeError::UnsupportedLinkType(_) => ProblemKind::UnsupportedLinkType,
            DecodeError::Truncated { layer, .. } => match layer {
                Layer::Link | Layer::Vlan | Layer::Mpls => ProblemKind::LinkTruncated,
                Layer::Ipv4 | Layer::Ipv6 | Layer::Ipv6Ext => ProblemKind::IpTruncated,
                _ => ProblemKind::TransportTruncated,
            },
            DecodeError::IpVersion { .. } => ProblemKind::IpVersionMismatch,
            DecodeError::BadIpv4Header { .. } => ProblemKind::BadIpv4Header,
            DecodeError::LoopbackFamily(_) => ProblemKind::UnknownLoopbackFamily,
            DecodeError::MplsNoBottom => ProblemKind::MplsNoBottom,
        }
    }
}

/// One problem met while reading: a bad packet, a damaged record, an
/// unreadable file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The file.
    #[serde(serialize_with = "lossy_path")]
    pub file: PathBuf,
    /// 1-based packet number in the file (Wireshark's frame number), when
    /// the problem concerns one packet.
    pub packet_index: Option<u64>,
    /// Byte offset in the file of the record, block or field at fault.
    pub offset: u64,
    /// Short stable kind, e.g. `truncated-record`, `ip-truncated`.
    pub kind: ProblemKind,
    /// What was wrong, in words.
    pub what: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.display())?;
        if let Some(i) = self.packet_index {
            write!(f, "packet {i}, ")?;
        }
        write!(f, "offset {}: {} ({})", self.offset, self.what, self.kind)
    }
}

/// Non-IP frames of one ethertype.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NonIpCount {
    /// Ethertype (`0x0000` stands for 802.3 frames with a length field).
    pub ethertype: u16,
    /// Frames.
    pub packets: u64,
    /// Sum of original frame lengths.
    pub bytes: u64,
}

/// The process a capture's own annotations give a flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowAnnotation {
    /// The flow.
    pub flow_id: u64,
    /// The pid most of its annotated packets name (ties: the lowest).
    pub pid: u32,
    /// That pid's command, as annotated (unescaped).
    pub cmd: String,
    /// Packets annotated with that pid.
    pub packets: u64,
    /// Other pids its packets name, with their packet counts.
    pub other_pids: Vec<(u32, u64)>,
}

/// Everything replay produced.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    /// Flows sorted by id (1..); identical whatever the thread count.
    pub flows: Vec<Flow>,
    /// Per input, in processing order.
    pub files: Vec<FileReport>,
    /// Problems with details (bounded per file).
    pub problems: Vec<Problem>,
    /// All problems counted per kind.
    pub problem_counts: BTreeMap<String, u64>,
    /// Non-IP frames per ethertype, by ethertype.
    pub non_ip: Vec<NonIpCount>,
    /// Packets counted in files but in no flow (malformed, unsupported link
    /// type, fragments without their first fragment); reasons in `problems`.
    pub undecodable: u64,
    /// With [`ReplayOptions::track_packets`]: the flow of every packet that
    /// is in one, sorted by file (processing order) and packet number.
    pub packet_flows: Vec<PacketFlow>,
    /// Flows whose packets carry process annotations in the capture itself
    /// (ptcpdump's `PID:` comments), by flow id.
    pub annotations: Vec<FlowAnnotation>,
    /// The packets of the flows of [`ReplayOptions::keep_packets_of`], by
    /// flow id, in capture order.
    pub packets: BTreeMap<u64, Vec<PacketMark>>,
    /// With [`ReplayOptions::names`]: what the packets say about the
    /// remote endpoints' names.
    pub names: Option<crate::names::Names>,
}

impl Replay {
    /// Whether some file could not be read at all.
    pub fn any_file_unreadable(&self) -> bool {
        self.files.iter().any(|f| f.error.is_some())
    }
}

/// A programming-level failure of replay (bad input is never one).
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The worker thread pool could not be built.
    #[error("cannot start worker threads")]
    ThreadPool(#[source] rayon::ThreadPoolBuildError),
}

/// One packet after decoding: compact and `Copy`.
#[derive(Debug, Clone, Copy)]
struct Rec {
    raw: RawRec,
    decoded: Decoded,
}

/// Replays capture files into flows. Unreadable files are reported in
/// [`FileReport::error`] and [`Replay::problems`], never as `Err`.
pub fn replay(paths: &[PathBuf], opts: &ReplayOptions) -> Result<Replay, CaptureError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads.unwrap_or(0))
        .build()
        .map_err(CaptureError::ThreadPool)?;
    Ok(pool.install(|| {
        // Rotated files are folded in order of their first packet, so flows
        // spanning files merge and ids do not depend on argument order. Files
        // are opened one at a time (here and below): a day of rotated files
        // must not exhaust file descriptors.
        // A stream (pipe, `<(zcat ...)`) can be read only once: its source
        // (a temporary copy) is kept from this first look to the replay.
        let mut kept: Vec<Option<io::Result<source::Source>>> = Vec::new();
        let mut order: Vec<(Option<i64>, usize)> = Vec::new();
        for (i, p) in paths.iter().enumerate() {
            let regular = std::fs::metadata(p).is_ok_and(|m| m.is_file());
            let s = source::Source::open_streaming(p);
            let ts = s.as_ref().ok().and_then(|s| first_ts(s.bytes()));
            kept.push(if regular { None } else { Some(s) });
            order.push((ts, i));
        }
        order.sort_by_key(|&(ts, i)| (ts.is_none(), ts, i));
        let mut r = Replayer::new(opts);
        for (_, i) in order {
            let path = &paths[i];
            let opened = match kept.get_mut(i).and_then(Option::take) {
                Some(s) => s,
                None => source::Source::open_streaming(path),
            };
            match opened {
                Ok(mut s) => r.file(path, &mut s),
                Err(e) => r.unreadable(path, 0, format!("cannot open: {e}")),
            }
        }
        r.finish()
    }))
}

/// The packets of a replay that read the kept flows only, keyed by the ids
/// those flows had in the full replay (matched on protocol, endpoints and
/// first packet time); packets of flows not asked for are dropped.
fn kept_ids(
    kept: &[Flow],
    flows: &[Flow],
    packets: BTreeMap<u64, Vec<PacketMark>>,
) -> BTreeMap<u64, Vec<PacketMark>> {
    type Ident = (u8, IpAddr, Option<u16>, IpAddr, Option<u16>, i64);
    let ident =
        |f: &Flow| -> Ident { (f.proto, f.a_ip, f.a_port, f.b_ip, f.b_port, f.first_seen_ns) };
    let wanted: HashMap<Ident, u64> = kept.iter().map(|f| (ident(f), f.id)).collect();
    let here: HashMap<u64, u64> = flows
        .iter()
        .filter_map(|f| wanted.get(&ident(f)).map(|&id| (f.id, id)))
        .collect();
    packets
        .into_iter()
        .filter_map(|(id, log)| here.get(&id).map(|&orig| (orig, log)))
        .collect()
}

/// Replays one capture held in memory (the file name is only used in
/// reports). Runs on the current rayon pool; used by fuzzing and tests.
pub fn replay_bytes(name: &Path, bytes: &[u8], opts: &ReplayOptions) -> Replay {
    let mut r = Replayer::new(opts);
    r.file(name, &mut source::Source::Owned(bytes.to_vec()));
    r.finish()
}

fn first_ts(buf: &[u8]) -> Option<i64> {
    let mut s = Scanner::open(buf).ok()?;
    let mut out = Vec::new();
    let mut probs = Vec::new();
    // A corrupt file could make this walk long; a bounded number of rounds
    // is enough for any real capture's first packet.
    for _ in 0..64 {
        s.next_batch(&mut out, 1, usize::MAX, &mut probs);
        if let Some(r) = out.first() {
            return Some(r.ts_ns);
        }
        if s.is_done() {
            break;
        }
    }
    None
}

struct Replayer<'o> {
    opts: &'o ReplayOptions,
    /// Packet annotations: (file index, annotation).
    annotations: Vec<(u32, scan::PacketAnnotation)>,
    table: FlowTable,
    files: Vec<FileReport>,
    /// (file index, problem): sorted by file and offset at the end, since
    /// scan problems are met one batch ahead of decode problems.
    problems: Vec<(usize, Problem)>,
    problem_counts: BTreeMap<String, u64>,
    non_ip: BTreeMap<u16, (u64, u64)>,
    undecodable: u64,
    names: Option<crate::names::Collector>,
}

impl<'o> Replayer<'o> {
    fn new(opts: &'o ReplayOptions) -> Self {
        let mut table = FlowTable::new(opts.split);
        if opts.track_packets {
            table.track_packets();
        }
        Replayer {
            opts,
            annotations: Vec::new(),
            table: {
                if !opts.keep_packets_of.is_empty() {
                    table.watch(&opts.keep_packets_of);
                    table.watch_only();
                }
                table
            },
            files: Vec::new(),
            problems: Vec::new(),
            problem_counts: BTreeMap::new(),
            non_ip: BTreeMap::new(),
            undecodable: 0,
            names: opts.names.then(crate::names::Collector::new),
        }
    }

    fn problem(&mut self, file_idx: usize, p: ScanProblem) {
        *self
            .problem_counts
            .entry(p.kind.as_str().to_string())
            .or_default() += 1;
        let Some(f) = self.files.get_mut(file_idx) else {
            return;
        };
        f.problems += 1;
        if f.damage.is_none() && p.kind.is_structural() && p.kind != ProblemKind::UnreadableFile {
            f.damage = Some(Damage {
                offset: p.offset,
                kind: p.kind,
                what: p.what.clone(),
            });
        }
        if f.problems <= self.opts.max_problems_per_file as u64 {
            self.problems.push((
                file_idx,
                Problem {
                    file: f.path.clone(),
                    packet_index: p.packet_index,
                    offset: p.offset,
                    kind: p.kind,
                    what: p.what,
                },
            ));
        }
    }

    /// File `idx` could not be read past byte `at`: the file's error and a
    /// `read-failed` problem, worded by `what`.
    fn read_failed(&mut self, idx: usize, at: u64, what: String) {
        if let Some(f) = self.files.get_mut(idx) {
            f.error = Some(format!("offset {at}: {what}"));
        }
        self.problem(
            idx,
            ScanProblem {
                packet_index: None,
                offset: at,
                kind: ProblemKind::ReadFailed,
                what,
            },
        );
    }

    fn unreadable(&mut self, path: &Path, offset: u64, what: String) {
        self.files.push(FileReport::new(
            path,
            "",
            Some(format!("offset {offset}: {what}")),
        ));
        let idx = self.files.len() - 1;
        self.problem(
            idx,
            ScanProblem {
                packet_index: None,
                offset,
                kind: ProblemKind::UnreadableFile,
                what,
            },
        );
    }

    fn file(&mut self, path: &Path, src: &mut source::Source) {
        let buf = src.bytes();
        let mut scanner = match Scanner::open(buf) {
            Ok(s) => s,
            Err(e) => return self.unreadable(path, e.offset, e.what),
        };
        let idx = self.files.len();
        self.files
            .push(FileReport::new(path, scan::format_name(buf), None));
        let mut raw = Vec::with_capacity(BATCH);
        let mut scan_problems = Vec::new();
        let mut prev: Vec<Rec> = Vec::new();
        let mut next: Vec<Rec> = Vec::with_capacity(BATCH);
        let mut mapped_from = 0;
        let mut read_failed_dropped = 0u64;
        // Start of the batch in `prev`: nothing before it is read again.
        let mut prev_from = 0u64;
        loop {
            // A stream: copied ahead of the scanner, and what is behind the
            // batch still to fold given back.
            let ahead = (scanner.position() + BATCH_BYTES) as u64;
            if src.wants(ahead) {
                let detached = scanner.rebind(&[]);
                src.fill(ahead);
                scanner = detached.rebind(src.bytes());
            }
            src.release(prev_from);
            if src.is_mapped()
                && scanner.position().saturating_sub(mapped_from) >= self.opts.remap_every
            {
                let detached = scanner.rebind(&[]);
                src.remap();
                scanner = detached.rebind(src.bytes());
                mapped_from = scanner.position();
            }
            let buf = src.bytes();
            let scanned_from = scanner.position();
            // Fold the previous batch (in order, on this thread) while the
            // pool scans and decodes the next one.
            rayon::join(
                || self.fold(idx, &prev, buf),
                || {
                    scanner.next_batch(&mut raw, BATCH, BATCH_BYTES, &mut scan_problems);
                    raw.par_iter()
                        .with_min_len(1024)
                        .map(|r| Rec {
                            raw: *r,
                            decoded: decode_raw(buf, r),
                        })
                        .collect_into_vec(&mut next)
                },
            );
            if let Some((at, now)) = src.failed_at() {
                // What was just read may be zeros standing in for bytes the
                // file no longer has: the packets wholly before the failed
                // offset are the file's and are kept (folded now, after the
                // batch before them, which was folded during this round);
                // those from there on are dropped, and the file ends here.
                scan_problems.clear();
                // (Past the file's current end the map reads zeros without
                // a fault: the limit is the smaller of the two.)
                let limit = now.map_or(at, |n| n.min(at));
                next.retain(|r| {
                    (r.raw.data_off as u64).saturating_add(u64::from(r.raw.caplen)) <= limit
                });
                self.fold(idx, &next, buf);
                let dropped = raw.len().saturating_sub(next.len()) as u64;
                read_failed_dropped = dropped;
                next.clear();
                let what = format!(
                    "the file changed while being read: reading failed at byte offset {at}{} \
                     (truncated, or an I/O error on the device); packets from there on are \
                     not read",
                    now.map_or(String::new(), |n| format!(", the file now has {n} bytes"))
                );
                self.read_failed(idx, at, what);
                break;
            }
            for p in scan_problems.drain(..) {
                self.problem(idx, p);
            }
            if let Some(p) = &self.opts.progress {
                let done = scanner.position().saturating_sub(scanned_from) as u64;
                p.event(
                    crate::progress::Stage::Replay,
                    crate::progress::Event::Advance(done),
                );
            }
            // Packets the capture annotates with a process: their flows are
            // remembered when the batch just scanned is folded.
            for a in scanner.annotations.drain(..) {
                self.table.track_packet(idx as u32, a.index);
                self.annotations.push((idx as u32, a));
            }
            std::mem::swap(&mut prev, &mut next);
            prev_from = scanned_from as u64;
            if raw.is_empty() {
                break;
            }
        }
        if let Some((at, what)) = src.stream_error() {
            // The stream ended on an error: what came before it is read.
            let what = format!(
                "the stream ended at byte offset {at}: {what}; the packets before it are read"
            );
            self.read_failed(idx, at, what);
        }
        let f = &mut self.files[idx];
        f.link_types = scanner.link_types.iter().copied().collect();
        f.packets = scanner.packets.saturating_sub(read_failed_dropped);
        self.undecodable += scanner.unreadable_packets;
    }

    fn fold(&mut self, idx: usize, recs: &[Rec], buf: &[u8]) {
        for rec in recs {
            let r = &rec.raw;
            {
                let f = &mut self.files[idx];
                f.bytes += u64::from(r.orig_len);
                if r.caplen < r.orig_len {
                    f.snaplen_cut += 1;
                }
                f.first_ns = Some(f.first_ns.map_or(r.ts_ns, |t| t.min(r.ts_ns)));
                f.last_ns = Some(f.last_ns.map_or(r.ts_ns, |t| t.max(r.ts_ns)));
            }
            match rec.decoded {
                Decoded::Ip(p) => {
                    let origin = PacketOrigin {
                        file: idx as u32,
                        index: r.index,
                        offset: r.rec_off,
                    };
                    let slot = self.table.add(r.ts_ns, r.orig_len, &p, origin);
                    // Names: only packets with payload among the first of
                    // their direction, or DNS; the rest pays this test.
                    if let (Some(names), Some(slot)) = (&mut self.names, slot) {
                        if p.payload_len > 0 && crate::names::wanted(&p, slot.nth) {
                            let at = r.data_off.saturating_add(p.payload_off as usize);
                            if let Some(pl) = buf.get(at..at.saturating_add(p.payload_len as usize))
                            {
                                names.observe(slot.state, r.ts_ns, slot.from_a, &p, pl, slot.nth);
                            }
                        }
                    }
                }
                Decoded::NonIp(et) => {
                    let e = self.non_ip.entry(et).or_default();
                    e.0 += 1;
                    e.1 += u64::from(r.orig_len);
                }
                Decoded::Error(e) => {
                    self.undecodable += 1;
                    let cut = if r.caplen < r.orig_len {
                        format!(
                            " (snaplen cut the packet to {} of {} bytes)",
                            r.caplen, r.orig_len
                        )
                    } else {
                        String::new()
                    };
                    self.problem(
                        idx,
                        ScanProblem {
                            packet_index: Some(r.index),
                            offset: r.rec_off,
                            kind: ProblemKind::from(&e),
                            what: format!("{e}{cut}"),
                        },
                    );
                }
            }
        }
    }

    fn finish(self) -> Replay {
        let mut me = self;
        let table = std::mem::replace(&mut me.table, FlowTable::new(me.opts.split));
        let collector = me.names.take();
        let (flows, orphans, packets, packet_flows, id_of) =
            table.finish_with_ids(collector.is_some());
        let names = collector.map(|c| c.finish(&id_of, &flows));
        let packets = if me.opts.keep_packets_of.is_empty() {
            packets
        } else {
            kept_ids(&me.opts.keep_packets_of, &flows, packets)
        };
        for o in orphans {
            me.undecodable += 1;
            me.problem(
                o.origin.file as usize,
                ScanProblem {
                    packet_index: Some(o.origin.index),
                    offset: o.origin.offset,
                    kind: ProblemKind::OrphanFragment,
                    what: "IP fragment whose first fragment (with the ports) was not captured"
                        .into(),
                },
            );
        }
        me.problems.sort_by_key(|(file, p)| (*file, p.offset));
        let annotations = flow_annotations(&me.annotations, &packet_flows);
        Replay {
            flows,
            files: me.files,
            problems: me.problems.into_iter().map(|(_, p)| p).collect(),
            problem_counts: me.problem_counts,
            non_ip: me
                .non_ip
                .into_iter()
                .map(|(ethertype, (packets, bytes))| NonIpCount {
                    ethertype,
                    packets,
                    bytes,
                })
                .collect(),
            undecodable: me.undecodable,
            packet_flows,
            packets,
            annotations,
            names,
        }
    }
}

/// Per flow: the pid its annotated packets name most, and the others.
fn flow_annotations(
    annotations: &[(u32, scan::PacketAnnotation)],
    packet_flows: &[PacketFlow],
) -> Vec<FlowAnnotation> {
    // flow id -> pid -> (packets, cmd)
    let mut by: BTreeMap<u64, BTreeMap<u32, (u64, String)>> = BTreeMap::new();
    for (file, a) in annotations {
        let Ok(i) = packet_flows.binary_search_by(|p| (p.file, p.index).cmp(&(*file, a.index)))
        else {
            continue; // not in a flow (not IP)
        };
        let e = by
            .entry(packet_flows[i].flow_id)
            .or_default()
            .entry(a.pid)
            .or_insert_with(|| (0, a.cmd.clone()));
        e.0 += 1;
    }
    by.into_iter()
        .filter_map(|(flow_id, pids)| {
            let (&pid, (packets, cmd)) = pids
                .iter()
                .max_by(|x, y| x.1 .0.cmp(&y.1 .0).then(y.0.cmp(x.0)))?;
            let (packets, cmd) = (*packets, cmd.clone());
            let other_pids = pids
                .iter()
                .filter(|(p, _)| **p != pid)
                .map(|(p, (n, _))| (*p, *n))
                .collect();
            Some(FlowAnnotation {
                flow_id,
                pid,
                cmd,
                packets,
                other_pids,
            })
        })
        .collect()
}

fn decode_raw(buf: &[u8], r: &RawRec) -> Decoded {
    let Some(frame) = buf.get(r.data_off..r.data_off.saturating_add(r.caplen as usize)) else {
        return Decoded::Error(decode::DecodeError::Truncated {
            layer: decode::Layer::Link,
            at: 0,
            need: r.caplen,
            have: 0,
        });
    };
    decode::decode(r.link, frame, r.orig_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read failure part way through a mapped capture (here the file
    /// shrinks under the map, as an I/O error on the device does through
    /// the guard) keeps the packets wholly before the failed offset: their
    /// flows are counted, the file says where reading failed, and its
    /// structure names the damage.
    #[test]
    fn io_error_mid_capture_keeps_readable_start() {
        let sample = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/compat/sample-bundle-v1-poll/capture-20261128T165616Z.pcap");
        let bytes = std::fs::read(&sample).unwrap();
        let whole = replay_bytes(&sample, &bytes, &ReplayOptions::default());
        let p = std::env::temp_dir().join(format!("procflow-ioerr-{}.pcap", std::process::id()));
        std::fs::write(&p, &bytes).unwrap();
        let mut src = source::Source::open(&p).unwrap();
        let cut = bytes.len() as u64 / 2;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let opts = ReplayOptions::default();
        let mut r = Replayer::new(&opts);
        r.file(&p, &mut src);
        let got = r.finish();
        drop(src);
        let f = &got.files[0];
        assert!(
            f.error.as_deref().unwrap_or("").contains("reading failed"),
            "{f:?}"
        );
        assert!(f.packets > 0 && f.packets < whole.files[0].packets, "{f:?}");
        assert!(!got.flows.is_empty(), "the readable start gave no flow");
        assert_eq!(
            f.damage.as_ref().map(|d| d.kind),
            Some(ProblemKind::ReadFailed)
        );
        // A truncated copy of the same bytes reads the same packets.
        let copy = replay_bytes(&p, &bytes[..cut as usize], &ReplayOptions::default());
        assert_eq!(copy.files[0].packets, f.packets);
        let s = structure(&p).unwrap();
        assert_eq!(s.packets, f.packets);
        assert!(
            matches!(
                s.damage.map(|d| d.kind),
                Some(ProblemKind::TruncatedRecord | ProblemKind::CorruptRecord)
            ),
            "the cut file ends inside a record"
        );
        let _ = std::fs::remove_file(&p);
    }
}
