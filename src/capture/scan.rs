//! Sequential record scanner for classic pcap and pcapng.
//!
//! The scanner walks a capture held in memory and yields, per packet, where
//! its bytes are and when it was captured. It reads only record and block
//! headers (16 to 32 bytes per packet), so it is cheap enough to run on one
//! thread while the packet bytes themselves are decoded in parallel. It never
//! panics: every length is checked against what is left of the buffer.
//!
//! Records and blocks are framed by pcap-file's no-I/O parsers
//! ([`PcapParser`], [`PcapNgParser`]) run over the mapped bytes. A few things
//! those parsers cannot express are read by hand here, each marked where it
//! happens: the Kuznetzov pcap variant, the version checks, damaged records
//! that are counted rather than fatal, sub-nanosecond interface resolutions,
//! section headers with malformed options, resynchronising after a damaged
//! pcapng block, and the fixed fields of packet blocks (measured faster than
//! pcap-file's block conversion; see [`Scanner`]'s `epb`).

use pcap_file::pcap::{PcapParseError, PcapParser, PcapTsResolution};
use pcap_file::pcapng::blocks::{
    ENHANCED_PACKET_BLOCK, INTERFACE_DESCRIPTION_BLOCK, PACKET_BLOCK, SECTION_HEADER_BLOCK,
    SIMPLE_PACKET_BLOCK,
};
use pcap_file::pcapng::{Block, PcapNgParseError, PcapNgParser, RawBlock};
use pcap_file::Endianness;
use std::collections::BTreeSet;

use super::ProblemKind;

/// Largest record a classic pcap may hold when its snaplen is smaller:
/// libpcap's and wiretap's limit. Beyond it a length field is corrupt.
const MAX_PLAUSIBLE_CAPLEN: u32 = 262_144;

/// One packet record found by the scanner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawRec {
    /// Offset of the packet bytes in the file.
    pub data_off: usize,
    /// Captured length.
    pub caplen: u32,
    /// Original length on the wire.
    pub orig_len: u32,
    /// Capture time, ns since the epoch (UTC).
    pub ts_ns: i64,
    /// Link type of the packet's interface.
    pub link: u16,
    /// Offset of the record header or block in the file.
    pub rec_off: u64,
    /// 1-based packet number in the file (Wireshark's frame number).
    pub index: u64,
    /// The packet's interface, numbered across the whole file (index into
    /// [`Scanner::interfaces`]): 0 for classic pcap; for pcapng, the
    /// interfaces of earlier sections come first.
    pub iface: u32,
}

/// Most packet annotations kept per file (about 100 bytes each).
pub const MAX_ANNOTATIONS: usize = 4_000_000;

/// A packet whose capture names the process that sent or received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketAnnotation {
    /// 1-based packet number in the file.
    pub index: u64,
    /// The process id the annotation names.
    pub pid: u32,
    /// Its command (`Cmd:` line), as written (unescaped), at most 4096 bytes.
    pub cmd: String,
}

/// A packet comment in ptcpdump's layout, `PID: 1234\nCmd: /usr/bin/curl
/// \nArgs: ...`: the pid and the command. `None` for any other comment.
pub fn parse_process_comment(s: &str) -> Option<(u32, String)> {
    let mut lines = s.split('\n');
    let pid = lines.next()?.strip_prefix("PID: ")?.trim().parse().ok()?;
    let cmd = lines
        .next()
        .and_then(|l| l.strip_prefix("Cmd: "))
        .unwrap_or("");
    let mut end = cmd.len().min(4096);
    while !cmd.is_char_boundary(end) {
        end -= 1;
    }
    Some((pid, cmd[..end].to_string()))
}

/// An interface of a capture file, as its description gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterfaceInfo {
    /// Link type.
    pub link: u16,
    /// Snapshot length (0: unlimited).
    pub snaplen: u32,
}

/// A problem the scanner met: not fatal to the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanProblem {
    /// 1-based packet number, when the problem concerns one packet.
    pub packet_index: Option<u64>,
    /// Byte offset in the file.
    pub offset: u64,
    /// Short stable kind.
    pub kind: ProblemKind,
    /// Human-readable description.
    pub what: String,
}

/// The file cannot be read at all (unknown or unsupported header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatalError {
    /// Byte offset of the offending field.
    pub offset: u64,
    /// What was wrong and what was expected.
    pub what: String,
}

#[derive(Debug, Clone, Copy)]
struct Iface {
    link: u16,
    snaplen: u32,
    /// `if_tsresol`: bit 7 clear = 10^-n s, set = 2^-n s.
    tsresol: u8,
    /// `if_tsoffset` in seconds.
    tsoffset: i64,
}

enum Kind {
    Pcap {
        /// pcap-file's record parser; `None` for the Kuznetzov variant,
        /// whose 24-byte record headers pcap-file does not know (it rejects
        /// the magic), read by hand.
        parser: Option<PcapParser>,
        be: bool,
        nanos: bool,
        rec_hdr: usize,
        link: u16,
        snaplen: u32,
    },
    PcapNg {
        parser: PcapNgParser,
        /// The section's interfaces as this scanner numbers them. pcap-file
        /// keeps its own list, but drops an interface whose description it
        /// rejects (resolutions finer than 1 ns, a non-zero reserved field,
        /// a malformed option); those are read by hand here so the numbering
        /// stays the writer's.
        ifaces: Vec<Iface>,
        /// Set once an interface of this section had to be read by hand:
        /// pcap-file's interface list no longer matches the numbering, so
        /// the section's packet blocks are read by hand too.
        hand_ifaces: bool,
        /// The section's version is not 1.x: its blocks are skipped. pcap-file
        /// accepts any version, so this check is ours.
        skip_section: bool,
    },
}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kind::Pcap { rec_hdr, link, .. } => f
                .debug_struct("Pcap")
                .field("rec_hdr", rec_hdr)
                .field("link", link)
                .finish(),
            Kind::PcapNg {
                ifaces,
                skip_section,
                ..
            } => f
                .debug_struct("PcapNg")
                .field("ifaces", ifaces)
                .field("skip_section", skip_section)
                .finish(),
        }
    }
}

/// Walks one capture file's records.
#[derive(Debug)]
pub struct Scanner<'a> {
    buf: &'a [u8],
    pos: usize,
    kind: Kind,
    /// Packets seen so far (records with packet data).
    pub packets: u64,
    /// Link types seen (pcapng: all interface descriptions).
    pub link_types: BTreeSet<u16>,
    /// Packets that were counted but whose bytes could not be located
    /// (corrupt pcapng packet blocks).
    pub unreadable_packets: u64,
    /// Every interface described so far, all sections in file order.
    pub interfaces: Vec<InterfaceInfo>,
    /// Index in `interfaces` of the current section's first interface.
    section_base: u32,
    /// Process annotations found in packet comments (pcapng), in packet
    /// order; at most [`MAX_ANNOTATIONS`].
    pub annotations: Vec<PacketAnnotation>,
    last_ts: i64,
    done: bool,
}

/// `N` bytes at `off`, if the buffer holds them.
fn at<const N: usize>(b: &[u8], off: usize) -> Option<[u8; N]> {
    b.get(off..off.checked_add(N)?)?.try_into().ok()
}

/// `rdNN(buf, off, big_endian)`: an integer read in the file's byte order.
macro_rules! reader {
    ($name:ident, $t:ty) => {
        fn $name(b: &[u8], off: usize, be: bool) -> Option<$t> {
            let a = at(b, off)?;
            Some(if be {
                <$t>::from_be_bytes(a)
            } else {
                <$t>::from_le_bytes(a)
            })
        }
    };
}
reader!(rd16, u16);
reader!(rd32, u32);
reader!(rd64, u64);

const SHB: u32 = SECTION_HEADER_BLOCK;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;

/// Capture format names as reported.
pub fn format_name(buf: &[u8]) -> &'static str {
    match buf.get(0..4) {
        Some([0x0A, 0x0D, 0x0D, 0x0A]) => "pcapng",
        _ => "pcap",
    }
}

/// A pcap-file duration since the epoch in ns, when it fits an `i64`.
fn duration_ns(d: std::time::Duration) -> Option<i64> {
    i64::try_from(d.as_nanos()).ok()
}

impl<'a> Scanner<'a> {
    /// Reports a problem after which the file is not read further.
    fn give_up(
        &mut self,
        problems: &mut Vec<ScanProblem>,
        at: (Option<u64>, usize),
        kind: ProblemKind,
        what: String,
    ) {
        problems.push(ScanProblem {
            packet_index: at.0,
            offset: at.1 as u64,
            kind,
            what,
        });
        self.done = true;
    }

    /// Reads the file header. Fails when the bytes are not a capture this
    /// reader understands; the error names the offset and what was expected.
    pub fn open(buf: &'a [u8]) -> Result<Scanner<'a>, FatalError> {
        let fatal = |offset: u64, what: String| Err(FatalError { offset, what });
        let Some(magic) = buf.get(0..4) else {
            return fatal(
                0,
                format!(
                    "file is {} bytes, too short for a capture header",
                    buf.len()
                ),
            );
        };
        let m = u32::from_le_bytes([magic[0], magic[1], magic[2], magic[3]]);
        let new = |kind: Kind, pos: usize| Scanner {
            buf,
            pos,
            kind,
            packets: 0,
            link_types: BTreeSet::new(),
            unreadable_packets: 0,
            interfaces: Vec::new(),
            section_base: 0,
            annotations: Vec::new(),
            last_ts: 0,
            done: false,
        };
        // (big-endian, nanosecond, record header length)
        let pcap = match m {
            0xA1B2_C3D4 => Some((false, false, 16)),
            0xD4C3_B2A1 => Some((true, false, 16)),
            0xA1B2_3C4D => Some((false, true, 16)),
            0x4D3C_B2A1 => Some((true, true, 16)),
            // Alexey Kuznetzov's patched libpcap: 8 more bytes per record.
            0xA1B2_CD34 => Some((false, false, 24)),
            0x34CD_B2A1 => Some((true, false, 24)),
            _ => None,
        };
        if let Some((be, nanos, rec_hdr)) = pcap {
            if buf.len() < 24 {
                return fatal(
                    0,
                    format!("pcap header is 24 bytes, file has {}", buf.len()),
                );
            }
            let parser = if rec_hdr == 16 {
                match PcapParser::new(buf) {
                    Ok((_, p)) => {
                        let h = p.header();
                        debug_assert_eq!(h.endianness == Endianness::Big, be);
                        debug_assert_eq!(h.ts_resolution == PcapTsResolution::NanoSecond, nanos);
                        Some(p)
                    }
                    Err(e) => return fatal(0, format!("pcap header: {e}")),
                }
            } else {
                None
            };
            // pcap-file reads any version and hides the link type field's
            // reserved bits in its `DataLink`: both are checked on the raw
            // header, as libpcap does.
            let major = rd16(buf, 4, be).unwrap_or(0);
            let minor = rd16(buf, 6, be).unwrap_or(0);
            if major != 2 {
                return fatal(
                    4,
                    format!("unsupported pcap version {major}.{minor} (expected 2.x)"),
                );
            }
            let snaplen = match &parser {
                Some(p) => p.header().snaplen,
                None => rd32(buf, 16, be).unwrap_or(0),
            };
            let lt_field = rd32(buf, 20, be).unwrap_or(0);
            // Bits 16-25 are reserved; bits 26-31 carry FCS information that
            // does not change how the frame starts.
            if lt_field & 0x03FF_0000 != 0 {
                return fatal(
                    20,
                    format!(
                        "link type reserved bits not zero (0x{:08x})",
                        lt_field & 0x03FF_0000
                    ),
                );
            }
            let link = (lt_field & 0xFFFF) as u16;
            let mut s = new(
                Kind::Pcap {
                    parser,
                    be,
                    nanos,
                    rec_hdr,
                    link,
                    snaplen,
                },
                24,
            );
            s.link_types.insert(link);
            s.interfaces.push(InterfaceInfo { link, snaplen });
            return Ok(s);
        }
        if m == SHB {
            let (rest, parser) = match PcapNgParser::new(buf) {
                Ok(r) => r,
                // Sound framing, unreadable content (a malformed option).
                Err(PcapNgParseError::BlockConversion(e)) => match bare_shb(buf, 0) {
                    Some((len, p)) => (buf.get(len..).unwrap_or(&[]), p),
                    None => return fatal(0, format!("section header: {}", error_chain(&e))),
                },
                Err(e) => {
                    let (offset, what) = ng_error_text(&e, buf, 0);
                    return fatal(offset, format!("section header: {what}"));
                }
            };
            let sh = parser.section();
            // At offset 0 an unknown version is an error, never a skip.
            if sh.major_version != 1 {
                return fatal(
                    12,
                    format!(
                        "unsupported pcapng version {}.{} (expected 1.x)",
                        sh.major_version, sh.minor_version
                    ),
                );
            }
            let len = buf.len() - rest.len();
            return Ok(new(
                Kind::PcapNg {
                    parser,
                    ifaces: Vec::new(),
                    hand_ifaces: false,
                    skip_section: false,
                },
                len,
            ));
        }
        let hint = match magic {
            [0x1F, 0x8B, ..] => " (gzip-compressed: decompress it first)",
            [0x28, 0xB5, 0x2F, 0xFD] => " (zstd-compressed: decompress it first)",
            _ => "",
        };
        fatal(
            0,
            format!(
                "not a pcap or pcapng file: magic {:02x}{:02x}{:02x}{:02x}{hint}",
                magic[0], magic[1], magic[2], magic[3]
            ),
        )
    }

    /// Whether the scanner has reached the end of what it can read.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Offset of the next record or block.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The same scanner reading `buf`, which must hold the same bytes (the
    /// file mapped afresh). Used to let go of a memory map's pages; an empty
    /// `buf` detaches the scanner until the next rebind.
    pub fn rebind<'b>(self, buf: &'b [u8]) -> Scanner<'b> {
        Scanner {
            buf,
            pos: self.pos,
            kind: self.kind,
            packets: self.packets,
            link_types: self.link_types,
            unreadable_packets: self.unreadable_packets,
            interfaces: self.interfaces,
            section_base: self.section_base,
            annotations: self.annotations,
            last_ts: self.last_ts,
            done: self.done,
        }
    }

    /// Appends packet records to `out` (cleared first) until `max` records
    /// or `max_bytes` of file have been scanned, and any problems met on the
    /// way to `problems`.
    pub fn next_batch(
        &mut self,
        out: &mut Vec<RawRec>,
        max: usize,
        max_bytes: usize,
        problems: &mut Vec<ScanProblem>,
    ) {
        out.clear();
        let start = self.pos;
        while !self.done && out.len() < max && self.pos - start < max_bytes {
            match self.kind {
                Kind::Pcap { .. } => self.pcap_record(out, problems),
                Kind::PcapNg { .. } => self.pcapng_block(out, problems),
            }
        }
    }

    fn pcap_record(&mut self, out: &mut Vec<RawRec>, problems: &mut Vec<ScanProblem>) {
        let Kind::Pcap {
            ref parser,
            be,
            nanos,
            rec_hdr,
            link,
            snaplen,
        } = self.kind
        else {
            return;
        };
        let buf = self.buf;
        let pos = self.pos;
        let rest = buf.get(pos..).unwrap_or(&[]);
        let left = rest.len();
        if left == 0 {
            self.done = true;
            return;
        }
        let index = self.packets + 1;
        if left < rec_hdr {
            return self.give_up(
                problems,
                (Some(index), pos),
                ProblemKind::TruncatedRecord,
                format!("record header needs {rec_hdr} bytes, {left} left at end of file"),
            );
        }
        // pcap-file's `next_raw_packet`, not `next_packet`: the latter
        // rejects a record whose caplen exceeds the snaplen or its original
        // length, or whose fraction is not below one second, and stops there;
        // replay counts such records (as tcpdump and Wireshark read them) and
        // reports each.
        let (sec, frac, caplen, orig_len, data_left) = match parser {
            Some(p) => match p.next_raw_packet(rest) {
                Ok((_, raw)) => (
                    raw.ts_sec,
                    raw.ts_frac,
                    raw.incl_len,
                    raw.orig_len,
                    left - 16,
                ),
                // The header was read (`left >= 16`): `need` is its caplen.
                Err(PcapParseError::IncompleteBuffer(need, have)) => (
                    rd32(rest, 0, be).unwrap_or(0),
                    0,
                    u32::try_from(need).unwrap_or(u32::MAX),
                    0,
                    have,
                ),
                Err(e) => {
                    return self.give_up(
                        problems,
                        (Some(index), pos),
                        ProblemKind::CorruptRecord,
                        format!("{e}; reading stops here"),
                    );
                }
            },
            None => (
                rd32(buf, pos, be).unwrap_or(0),
                rd32(buf, pos + 4, be).unwrap_or(0),
                rd32(buf, pos + 8, be).unwrap_or(0),
                rd32(buf, pos + 12, be).unwrap_or(0),
                left - rec_hdr,
            ),
        };
        let mut orig_len = orig_len;
        // pcap-file checks a caplen only against what is left of the input;
        // past the snaplen and libpcap's maximum the length field is corrupt.
        if caplen > snaplen.max(MAX_PLAUSIBLE_CAPLEN) {
            let what = format!(
                "record claims {caplen} captured bytes, more than snaplen {snaplen} and the \
                 {MAX_PLAUSIBLE_CAPLEN}-byte maximum; file damaged, reading stops here"
            );
            return self.give_up(
                problems,
                (Some(index), pos),
                ProblemKind::CorruptRecord,
                what,
            );
        }
        if caplen as usize > data_left {
            let what = format!(
                "record claims {caplen} captured bytes, only {data_left} left in the file \
                 (cut while writing?)"
            );
            return self.give_up(
                problems,
                (Some(index), pos),
                ProblemKind::TruncatedRecord,
                what,
            );
        }
        if caplen > orig_len {
            problems.push(ScanProblem {
                packet_index: Some(index),
                offset: pos as u64,
                kind: ProblemKind::CaplenExceedsLen,
                what: format!("captured length {caplen} exceeds original length {orig_len}; counting {caplen}"),
            });
            orig_len = caplen;
        }
        let limit = if nanos { 1_000_000_000 } else { 1_000_000 };
        if frac >= limit {
            problems.push(ScanProblem {
                packet_index: Some(index),
                offset: pos as u64 + 4,
                kind: ProblemKind::TimestampFraction,
                what: format!(
                    "timestamp fraction {frac} is not below {limit}; carried into the seconds"
                ),
            });
        }
        let ts_ns = i64::from(sec) * 1_000_000_000 + i64::from(frac) * if nanos { 1 } else { 1000 };
        self.packets = index;
        self.last_ts = ts_ns;
        out.push(RawRec {
            data_off: pos + rec_hdr,
            caplen,
            orig_len,
            ts_ns,
            link,
            rec_off: pos as u64,
            index,
            iface: 0,
        });
        self.pos = pos + rec_hdr + caplen as usize;
    }

    fn be(&self) -> bool {
        match &self.kind {
            Kind::PcapNg { parser, .. } => parser.section().endianness == Endianness::Big,
            Kind::Pcap { be, .. } => *be,
        }
    }

    fn pcapng_block(&mut self, out: &mut Vec<RawRec>, problems: &mut Vec<ScanProblem>) {
        let buf = self.buf;
        let pos = self.pos;
        let rest = buf.get(pos..).unwrap_or(&[]);
        if rest.is_empty() {
            self.done = true;
            return;
        }
        let be = self.be();
        let Kind::PcapNg { parser, .. } = &mut self.kind else {
            return;
        };
        let raw = match parser.next_raw_block(rest) {
            Ok((after, raw)) => {
                self.pos = pos + (rest.len() - after.len());
                raw
            }
            // The block's framing was sound but pcap-file could not decode a
            // section header or interface description from it.
            Err(PcapNgParseError::StateUpdate(e)) => {
                let len = rd32(buf, pos + 4, be).unwrap_or(0) as usize;
                if rd32(buf, pos, false) == Some(SHB) {
                    if let Some((len, fresh)) = bare_shb(buf, pos) {
                        *parser = fresh;
                        self.pos = pos + len;
                        self.section_start(pos, problems);
                        return;
                    }
                    problems.push(ScanProblem {
                        packet_index: None,
                        offset: pos as u64,
                        kind: ProblemKind::CorruptBlock,
                        what: format!("section header: {}", error_chain(&e)),
                    });
                    self.resync(pos, problems);
                } else {
                    self.pos = pos + len.max(12);
                    let body = buf.get(pos..pos + len.saturating_sub(4)).unwrap_or(&[]);
                    self.hand_idb(pos, body, be, problems);
                }
                return;
            }
            Err(e) => {
                let (offset, what) = ng_error_text(&e, buf, pos);
                problems.push(ScanProblem {
                    packet_index: None,
                    offset,
                    kind: if pos + 8 > buf.len() {
                        ProblemKind::TruncatedBlock
                    } else {
                        ProblemKind::CorruptBlock
                    },
                    what,
                });
                self.resync(pos, problems);
                return;
            }
        };
        let Kind::PcapNg {
            parser,
            ifaces,
            skip_section,
            ..
        } = &mut self.kind
        else {
            return;
        };
        match raw.type_ {
            SECTION_HEADER_BLOCK => self.section_start(pos, problems),
            _ if *skip_section => {}
            INTERFACE_DESCRIPTION_BLOCK => {
                if let Some(i) = parser.interfaces().last() {
                    let link = u32::from(i.linktype) as u16;
                    ifaces.push(Iface {
                        link,
                        snaplen: i.snaplen,
                        tsresol: i.ts_resolution().to_u8(),
                        tsoffset: i.ts_offset(),
                    });
                    self.link_types.insert(link);
                    self.interfaces.push(InterfaceInfo {
                        link,
                        snaplen: i.snaplen,
                    });
                }
            }
            ENHANCED_PACKET_BLOCK | PACKET_BLOCK => self.epb(pos, raw, be, out, problems),
            SIMPLE_PACKET_BLOCK => self.spb(pos, raw, be, out, problems),
            // NRB, ISB, DSB, custom and unknown blocks carry no packets.
            _ => {}
        }
    }

    /// A section header at `pos` was read into the parser: starts the
    /// section's bookkeeping.
    fn section_start(&mut self, pos: usize, problems: &mut Vec<ScanProblem>) {
        let Kind::PcapNg {
            parser,
            ifaces,
            hand_ifaces,
            skip_section,
        } = &mut self.kind
        else {
            return;
        };
        ifaces.clear();
        *hand_ifaces = false;
        self.section_base = u32::try_from(self.interfaces.len()).unwrap_or(u32::MAX);
        let sh = parser.section();
        *skip_section = sh.major_version != 1;
        if *skip_section {
            problems.push(ScanProblem {
                packet_index: None,
                offset: pos as u64 + 12,
                kind: ProblemKind::UnsupportedSection,
                what: format!(
                    "pcapng section version {}.{} is not 1.x; its blocks are skipped",
                    sh.major_version, sh.minor_version
                ),
            });
        }
    }

    /// Checks the block at `pos`: total length sane, inside the file, and
    /// equal to the trailing copy. Returns the length. Used only to find
    /// the next sound block after a damaged one.
    fn check_block(&self, pos: usize, be: bool) -> Result<usize, String> {
        let buf = self.buf;
        let left = buf.len().saturating_sub(pos);
        let Some(len) = rd32(buf, pos + 4, be) else {
            return Err(format!(
                "block header needs 8 bytes, {left} left at end of file"
            ));
        };
        let len = len as usize;
        if len < 12 || !len.is_multiple_of(4) || len > left {
            return Err(format!("block length {len} impossible here"));
        }
        let trailer = rd32(buf, pos + len - 4, be).unwrap_or(0) as usize;
        if trailer != len {
            return Err(format!(
                "block total length in header {len} and trailer {trailer} don't match"
            ));
        }
        Ok(len)
    }

    /// After a corrupt block, looks for the next offset (4-byte aligned from
    /// the bad block) where a well-formed block of a known type starts, and
    /// resumes there; reports how many bytes were skipped. pcap-file's
    /// parser stops at the first damaged block: searching for the next one
    /// is ours.
    fn resync(&mut self, from: usize, problems: &mut Vec<ScanProblem>) {
        let be = self.be();
        let mut p = from + 4;
        while p + 12 <= self.buf.len() {
            let t = rd32(self.buf, p, be).unwrap_or(0);
            let known = (1..=6).contains(&t);
            let shb = rd32(self.buf, p, false) == Some(SHB);
            let ok = if shb {
                let bom = rd32(self.buf, p + 8, false).unwrap_or(0);
                let sbe = bom == 0x4D3C_2B1A;
                (bom == BYTE_ORDER_MAGIC || sbe) && self.check_block(p, sbe).is_ok()
            } else {
                known && self.check_block(p, be).is_ok()
            };
            if ok {
                problems.push(ScanProblem {
                    packet_index: None,
                    offset: from as u64,
                    kind: ProblemKind::Resync,
                    what: format!("skipped {} damaged bytes, resumed at offset {p}", p - from),
                });
                self.pos = p;
                return;
            }
            p += 4;
        }
        self.done = true;
    }

    /// Reads an interface description pcap-file rejected (see
    /// [`Kind::PcapNg`]'s `ifaces`): link type, snaplen, `if_tsresol`
    /// (any resolution, also finer than 1 ns) and `if_tsoffset`.
    fn hand_idb(&mut self, pos: usize, body: &[u8], be: bool, problems: &mut Vec<ScanProblem>) {
        let skip = matches!(
            self.kind,
            Kind::PcapNg {
                skip_section: true,
                ..
            }
        );
        if skip {
            return;
        }
        let iface = match (rd16(body, 8, be), rd32(body, 12, be)) {
            (Some(link), Some(snaplen)) => {
                let mut iface = Iface {
                    link,
                    snaplen,
                    tsresol: 6,
                    tsoffset: 0,
                };
                let mut o = 16;
                while let (Some(code), Some(olen)) = (rd16(body, o, be), rd16(body, o + 2, be)) {
                    let olen = usize::from(olen);
                    let Some(val) = body.get(o + 4..o + 4 + olen) else {
                        problems.push(ScanProblem {
                            packet_index: None,
                            offset: (pos + o) as u64,
                            kind: ProblemKind::CorruptOption,
                            what: format!(
                                "interface option {code} of length {olen} overruns its block"
                            ),
                        });
                        break;
                    };
                    match (code, val) {
                        (0, _) => break,
                        (9, [r]) => iface.tsresol = *r,
                        (14, _) if olen == 8 => {
                            iface.tsoffset = rd64(val, 0, be).unwrap_or(0) as i64
                        }
                        _ => {}
                    }
                    o += 4 + olen.div_ceil(4) * 4;
                }
                self.link_types.insert(link);
                iface
            }
            _ => {
                problems.push(ScanProblem {
                    packet_index: None,
                    offset: pos as u64,
                    kind: ProblemKind::CorruptBlock,
                    what: "interface description block shorter than its fixed fields".into(),
                });
                // Keep interface numbering aligned with the writer's.
                Iface {
                    link: u16::MAX,
                    snaplen: 0,
                    tsresol: 6,
                    tsoffset: 0,
                }
            }
        };
        if let Kind::PcapNg {
            ifaces,
            hand_ifaces,
            ..
        } = &mut self.kind
        {
            ifaces.push(iface);
            *hand_ifaces = true;
        }
        self.interfaces.push(InterfaceInfo {
            link: iface.link,
            snaplen: iface.snaplen,
        });
    }

    fn iface(&self, id: usize) -> Option<Iface> {
        match &self.kind {
            Kind::PcapNg { ifaces, .. } => ifaces.get(id).copied(),
            Kind::Pcap { .. } => None,
        }
    }

    fn bad_packet(&mut self, pos: usize, what: String, problems: &mut Vec<ScanProblem>) {
        self.packets += 1;
        self.unreadable_packets += 1;
        problems.push(ScanProblem {
            packet_index: Some(self.packets),
            offset: pos as u64,
            kind: ProblemKind::CorruptBlock,
            what,
        });
    }

    /// An enhanced (or obsolete) packet block, framed by pcap-file. Its
    /// timestamp is resolved by pcap-file's parser state from the
    /// interface's `if_tsresol` and `if_tsoffset`, except on interfaces
    /// pcap-file could not read, or before the epoch (which it rejects).
    ///
    /// The five fixed fields are read here rather than by converting the
    /// block with pcap-file (`RawBlock::try_into_block`): that conversion
    /// also parses options and validates, and measured on a 593k-packet
    /// pcapng (`scripts/bench-flows.sh`'s capture, `editcap -F pcapng`),
    /// `procflow flows --threads 1` took 279 ms with it against 244 ms
    /// without (203 ms with the former hand scanner), the scan thread being
    /// the sequential part. It also rejects blocks replay still counts
    /// (captured length above the original length, malformed options).
    fn epb(
        &mut self,
        pos: usize,
        raw: RawBlock<'_>,
        be: bool,
        out: &mut Vec<RawRec>,
        problems: &mut Vec<ScanProblem>,
    ) {
        let btype = raw.type_;
        let body = &raw.body[..];
        let iface_id = if btype == ENHANCED_PACKET_BLOCK {
            rd32(body, 0, be).map(|v| v as usize)
        } else {
            rd16(body, 0, be).map(usize::from)
        };
        let (Some(iface_id), Some(hi), Some(lo), Some(caplen), Some(orig)) = (
            iface_id,
            rd32(body, 4, be),
            rd32(body, 8, be),
            rd32(body, 12, be),
            rd32(body, 16, be),
        ) else {
            return self.bad_packet(
                pos,
                "packet block shorter than its fixed fields".into(),
                problems,
            );
        };
        if body.len() < 20 + caplen as usize {
            return self.bad_packet(
                pos,
                format!(
                    "packet block of {} bytes cannot hold its {caplen} captured bytes",
                    body.len() + 12
                ),
                problems,
            );
        }
        let Some(iface) = self.iface(iface_id) else {
            return self.bad_packet(
                pos,
                format!(
                    "packet refers to interface {iface_id}, which this section does not describe"
                ),
                problems,
            );
        };
        let units = (u64::from(hi) << 32) | u64::from(lo);
        let index = self.packets + 1;
        let by_parser = match &self.kind {
            Kind::PcapNg {
                parser,
                hand_ifaces: false,
                ..
            } => u32::try_from(iface_id)
                .ok()
                .and_then(|id| parser.state().decode_timestamp(id, hi, lo).ok())
                .and_then(duration_ns),
            _ => None,
        };
        let ts_ns = match by_parser.or_else(|| ts_to_ns(units, iface.tsresol, iface.tsoffset)) {
            Some(t) => t,
            None => {
                problems.push(ScanProblem {
                    packet_index: Some(index),
                    offset: pos as u64 + 12,
                    kind: ProblemKind::TimestampRange,
                    what: "timestamp outside 1677..2262, kept as the previous packet's".into(),
                });
                self.last_ts
            }
        };
        let global = self
            .section_base
            .saturating_add(u32::try_from(iface_id).unwrap_or(u32::MAX));
        self.push(
            out,
            pos,
            pos + 28,
            caplen,
            orig,
            ts_ns,
            (iface.link, global),
            problems,
        );
        if btype == ENHANCED_PACKET_BLOCK {
            let opts = body
                .get(20 + (caplen as usize).div_ceil(4) * 4..)
                .unwrap_or(&[]);
            if !opts.is_empty() {
                self.packet_options(opts, be);
            }
        }
    }

    /// Reads the options of an enhanced packet block for a process
    /// annotation: an `opt_comment` in ptcpdump's `PID: N\nCmd: PATH` layout
    /// (also what `procflow analyze --pcapng` writes).
    fn packet_options(&mut self, mut opts: &[u8], be: bool) {
        while let (Some(code), Some(len)) = (rd16(opts, 0, be), rd16(opts, 2, be)) {
            let len = usize::from(len);
            let Some(val) = opts.get(4..4 + len) else {
                return;
            };
            match code {
                0 => return,
                1 => {
                    if let Some((pid, cmd)) = std::str::from_utf8(val)
                        .ok()
                        .and_then(parse_process_comment)
                    {
                        if self.annotations.len() < MAX_ANNOTATIONS {
                            self.annotations.push(PacketAnnotation {
                                index: self.packets,
                                pid,
                                cmd,
                            });
                        }
                        return;
                    }
                }
                _ => {}
            }
            opts = opts.get(4 + len.div_ceil(4) * 4..).unwrap_or(&[]);
        }
    }

    /// A simple packet block: pcap-file sizes its data from the first
    /// interface's snaplen; a block too short for that (cut while writing)
    /// is still counted with the bytes it holds, read by hand.
    fn spb(
        &mut self,
        pos: usize,
        raw: RawBlock<'_>,
        be: bool,
        out: &mut Vec<RawRec>,
        problems: &mut Vec<ScanProblem>,
    ) {
        let Some(iface) = self.iface(0) else {
            return self.bad_packet(
                pos,
                "simple packet block before any interface description".into(),
                problems,
            );
        };
        let mut decoded = None;
        if let Kind::PcapNg {
            parser,
            hand_ifaces: false,
            ..
        } = &self.kind
        {
            if let Ok(Block::SimplePacket(b)) = raw.clone().try_into_block(parser.state()) {
                decoded = Some((b.data.len() as u32, b.original_len));
            }
        }
        let (caplen, orig) = match decoded {
            Some(d) => d,
            None => {
                let Some(orig) = rd32(&raw.body, 0, be) else {
                    return self.bad_packet(
                        pos,
                        "simple packet block shorter than its fixed fields".into(),
                        problems,
                    );
                };
                let room = raw.body.len().saturating_sub(4) as u32;
                let mut caplen = orig.min(room);
                if iface.snaplen != 0 {
                    caplen = caplen.min(iface.snaplen);
                }
                (caplen, orig)
            }
        };
        // Simple packet blocks carry no timestamp: they get the previous
        // packet's, so they sort where they were written.
        self.push(
            out,
            pos,
            pos + 12,
            caplen,
            orig,
            self.last_ts,
            (iface.link, self.section_base),
            problems,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        out: &mut Vec<RawRec>,
        pos: usize,
        data_off: usize,
        caplen: u32,
        mut orig_len: u32,
        ts_ns: i64,
        (link, iface): (u16, u32),
        problems: &mut Vec<ScanProblem>,
    ) {
        self.packets += 1;
        if caplen > orig_len {
            problems.push(ScanProblem {
                packet_index: Some(self.packets),
                offset: pos as u64,
                kind: ProblemKind::CaplenExceedsLen,
                what: format!("captured length {caplen} exceeds original length {orig_len}; counting {caplen}"),
            });
            orig_len = caplen;
        }
        self.last_ts = ts_ns;
        out.push(RawRec {
            data_off,
            caplen,
            orig_len,
            ts_ns,
            link,
            rec_off: pos as u64,
            index: self.packets,
            iface,
        });
    }
}

/// A parser for the section whose header is at `pos`, built from a copy of
/// the header without its options, and the header's length. pcap-file
/// rejects a whole section when one of its header's options is malformed
/// (e.g. a `shb_userappl` that is not UTF-8, which real writers produce);
/// replay needs only the byte order and version, as Wireshark reads it.
/// `None` when the header's framing is not sound.
fn bare_shb(buf: &[u8], pos: usize) -> Option<(usize, PcapNgParser)> {
    let hdr = buf.get(pos..pos.checked_add(24)?)?;
    let be = match rd32(hdr, 8, false)? {
        0x4D3C_2B1A => true,
        BYTE_ORDER_MAGIC => false,
        _ => return None,
    };
    let len = rd32(hdr, 4, be)? as usize;
    if len < 28
        || !len.is_multiple_of(4)
        || rd32(buf, pos.checked_add(len)? - 4, be)? as usize != len
    {
        return None;
    }
    let bare_len: [u8; 4] = if be {
        28u32.to_be_bytes()
    } else {
        28u32.to_le_bytes()
    };
    let mut bare = Vec::with_capacity(28);
    bare.extend_from_slice(&hdr[0..4]);
    bare.extend_from_slice(&bare_len);
    bare.extend_from_slice(&hdr[8..24]);
    bare.extend_from_slice(&bare_len);
    let (_, parser) = PcapNgParser::new(&bare).ok()?;
    Some((len, parser))
}

/// An error and its causes, in words.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// Offset and words for a pcapng block pcap-file could not frame.
fn ng_error_text(e: &PcapNgParseError, buf: &[u8], pos: usize) -> (u64, String) {
    let left = buf.len().saturating_sub(pos);
    let what = match e {
        PcapNgParseError::IncompleteBuffer(12, have) if *have < 12 => {
            format!("block header needs 12 bytes, {have} left at end of file")
        }
        PcapNgParseError::IncompleteBuffer(need, _) => format!(
            "block claims {} bytes, only {left} left in the file",
            need.saturating_add(8)
        ),
        PcapNgParseError::InvalidFormat(f) => f.to_string(),
        other => error_chain(other),
    };
    (pos as u64, what)
}

/// Converts a pcapng timestamp in interface units to ns since the epoch.
/// `None` when it does not fit in an `i64` of nanoseconds.
pub fn ts_to_ns(units: u64, tsresol: u8, tsoffset_s: i64) -> Option<i64> {
    let units = u128::from(units);
    let ns: u128 = if tsresol & 0x80 == 0 {
        let exp = u32::from(tsresol);
        if exp <= 9 {
            units * 10u128.pow(9 - exp)
        } else if exp - 9 <= 38 {
            units / 10u128.pow(exp - 9)
        } else {
            0
        }
    } else {
        let exp = u32::from(tsresol & 0x7F);
        (units * 1_000_000_000) >> exp
    };
    let ns = i64::try_from(ns).ok()?;
    ns.checked_add(tsoffset_s.checked_mul(1_000_000_000)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsresol_units() {
        assert_eq!(ts_to_ns(5, 6, 0), Some(5_000));
        assert_eq!(ts_to_ns(5, 9, 0), Some(5));
        assert_eq!(ts_to_ns(5_000, 12, 0), Some(5));
        assert_eq!(ts_to_ns(256, 0x88, 0), Some(1_000_000_000));
        assert_eq!(ts_to_ns(1, 6, 10), Some(10_000_001_000));
        assert_eq!(ts_to_ns(u64::MAX, 0, 0), None);
    }

    #[test]
    fn garbage_header_is_fatal_with_offset() {
        let e = Scanner::open(b"GET / HTTP/1.1\r\n").unwrap_err();
        assert_eq!(e.offset, 0);
        assert!(e.what.contains("not a pcap"), "{}", e.what);
        assert!(Scanner::open(&[0x1f, 0x8b, 8, 0])
            .unwrap_err()
            .what
            .contains("gzip"));
        assert!(Scanner::open(b"").is_err());
    }

    fn block(ty: u32, body: &[u8]) -> Vec<u8> {
        let len = (12 + body.len()) as u32;
        let mut b = ty.to_le_bytes().to_vec();
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(body);
        b.extend_from_slice(&len.to_le_bytes());
        b
    }

    fn shb(options: &[u8]) -> Vec<u8> {
        let mut body = BYTE_ORDER_MAGIC.to_le_bytes().to_vec();
        body.extend_from_slice(&[1, 0, 0, 0]);
        body.extend_from_slice(&u64::MAX.to_le_bytes());
        body.extend_from_slice(options);
        block(SHB, &body)
    }

    fn idb(link: u16, tsresol: u8) -> Vec<u8> {
        let mut body = link.to_le_bytes().to_vec();
        body.extend_from_slice(&[0, 0, 0, 0, 4, 0]);
        body.extend_from_slice(&[9, 0, 1, 0, tsresol, 0, 0, 0, 0, 0, 0, 0]);
        block(1, &body)
    }

    fn epb(units: u64, data: &[u8]) -> Vec<u8> {
        let mut body = 0u32.to_le_bytes().to_vec();
        body.extend_from_slice(&((units >> 32) as u32).to_le_bytes());
        body.extend_from_slice(&(units as u32).to_le_bytes());
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(data);
        body.resize(body.len().div_ceil(4) * 4, 0);
        block(6, &body)
    }

    fn scan_all(buf: &[u8]) -> (Vec<RawRec>, Vec<ScanProblem>) {
        let mut s = Scanner::open(buf).unwrap();
        let (mut all, mut batch, mut probs) = (Vec::new(), Vec::new(), Vec::new());
        while !s.is_done() {
            s.next_batch(&mut batch, 1000, usize::MAX, &mut probs);
            all.extend_from_slice(&batch);
        }
        (all, probs)
    }

    #[test]
    fn section_with_malformed_option_is_still_read() {
        // shb_userappl (code 4) that is not UTF-8, in the first section and
        // in a later one: pcap-file rejects such headers outright.
        let bad_opt = [4, 0, 4, 0, 0xff, 0xfe, 0xfd, 0xfc, 0, 0, 0, 0];
        let mut f = shb(&bad_opt);
        f.extend(idb(101, 6));
        f.extend(epb(7, &[0x45; 20]));
        f.extend(shb(&bad_opt));
        f.extend(idb(101, 9));
        f.extend(epb(9, &[0x45; 20]));
        let (recs, probs) = scan_all(&f);
        assert!(probs.is_empty(), "{probs:?}");
        let ts: Vec<i64> = recs.iter().map(|r| r.ts_ns).collect();
        assert_eq!(ts, vec![7_000, 9]);
    }

    #[test]
    fn picosecond_interface_is_read_by_hand() {
        // if_tsresol 12 (picoseconds) is beyond what pcap-file accepts; the
        // interface and its packets are still read.
        let mut f = shb(&[]);
        f.extend(idb(101, 12));
        f.extend(epb(5_000, &[0x45; 20]));
        let (recs, probs) = scan_all(&f);
        assert!(probs.is_empty(), "{probs:?}");
        assert_eq!(recs.len(), 1);
        assert_eq!((recs[0].ts_ns, recs[0].link, recs[0].caplen), (5, 101, 20));
    }
}
