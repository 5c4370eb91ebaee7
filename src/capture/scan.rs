//! Sequential record scanner for classic pcap and pcapng.
//!
//! The scanner walks a capture held in memory and yields, per packet, where
//! its bytes are and when it was captured. It reads only record and block
//! headers (16 to 32 bytes per packet), so it is cheap enough to run on one
//! thread while the packet bytes themselves are decoded in parallel. It never
//! panics: every length is checked against what is left of the buffer.

use std::collections::BTreeSet;

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
}

/// A problem the scanner met: not fatal to the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanProblem {
    /// 1-based packet number, when the problem concerns one packet.
    pub packet_index: Option<u64>,
    /// Byte offset in the file.
    pub offset: u64,
    /// Short stable kind name.
    pub kind: &'static str,
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

#[derive(Debug)]
enum Kind {
    Pcap {
        be: bool,
        nanos: bool,
        rec_hdr: usize,
        link: u16,
        snaplen: u32,
    },
    PcapNg {
        be: bool,
        ifaces: Vec<Iface>,
        skip_section: bool,
    },
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
    last_ts: i64,
    done: bool,
}

fn rd16(b: &[u8], off: usize, be: bool) -> Option<u16> {
    let s = b.get(off..off.checked_add(2)?)?;
    let a = [s[0], s[1]];
    Some(if be {
        u16::from_be_bytes(a)
    } else {
        u16::from_le_bytes(a)
    })
}

fn rd32(b: &[u8], off: usize, be: bool) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    let a = [s[0], s[1], s[2], s[3]];
    Some(if be {
        u32::from_be_bytes(a)
    } else {
        u32::from_le_bytes(a)
    })
}

fn rd64(b: &[u8], off: usize, be: bool) -> Option<u64> {
    let s = b.get(off..off.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(if be {
        u64::from_be_bytes(a)
    } else {
        u64::from_le_bytes(a)
    })
}

const SHB: u32 = 0x0A0D_0D0A;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;

/// Capture format names as reported.
pub fn format_name(buf: &[u8]) -> &'static str {
    match buf.get(0..4) {
        Some([0x0A, 0x0D, 0x0D, 0x0A]) => "pcapng",
        _ => "pcap",
    }
}

impl<'a> Scanner<'a> {
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
        let mut s = Scanner {
            buf,
            pos: 0,
            kind: Kind::PcapNg {
                be: false,
                ifaces: Vec::new(),
                skip_section: false,
            },
            packets: 0,
            link_types: BTreeSet::new(),
            unreadable_packets: 0,
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
            let major = rd16(buf, 4, be).unwrap_or(0);
            let minor = rd16(buf, 6, be).unwrap_or(0);
            if major != 2 {
                return fatal(
                    4,
                    format!("unsupported pcap version {major}.{minor} (expected 2.x)"),
                );
            }
            let snaplen = rd32(buf, 16, be).unwrap_or(0);
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
            s.link_types.insert(link);
            s.kind = Kind::Pcap {
                be,
                nanos,
                rec_hdr,
                link,
                snaplen,
            };
            s.pos = 24;
            return Ok(s);
        }
        if m == SHB {
            // At offset 0 an unknown version is an error, never a skip.
            s.read_shb(0)?;
            return Ok(s);
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
        let left = buf.len().saturating_sub(pos);
        if left == 0 {
            self.done = true;
            return;
        }
        let index = self.packets + 1;
        if left < rec_hdr {
            problems.push(ScanProblem {
                packet_index: Some(index),
                offset: pos as u64,
                kind: "truncated-record",
                what: format!("record header needs {rec_hdr} bytes, {left} left at end of file"),
            });
            self.done = true;
            return;
        }
        let sec = rd32(buf, pos, be).unwrap_or(0);
        let frac = rd32(buf, pos + 4, be).unwrap_or(0);
        let caplen = rd32(buf, pos + 8, be).unwrap_or(0);
        let mut orig_len = rd32(buf, pos + 12, be).unwrap_or(0);
        if caplen > snaplen.max(MAX_PLAUSIBLE_CAPLEN) {
            problems.push(ScanProblem {
                packet_index: Some(index),
                offset: pos as u64,
                kind: "corrupt-record",
                what: format!(
                    "record claims {caplen} captured bytes, more than snaplen {snaplen} and the {MAX_PLAUSIBLE_CAPLEN}-byte maximum; file damaged, reading stops here"
                ),
            });
            self.done = true;
            return;
        }
        let data_left = left - rec_hdr;
        if caplen as usize > data_left {
            problems.push(ScanProblem {
                packet_index: Some(index),
                offset: pos as u64,
                kind: "truncated-record",
                what: format!(
                    "record claims {caplen} captured bytes, only {data_left} left in the file (cut while writing?)"
                ),
            });
            self.done = true;
            return;
        }
        if caplen > orig_len {
            problems.push(ScanProblem {
                packet_index: Some(index),
                offset: pos as u64,
                kind: "caplen-exceeds-len",
                what: format!("captured length {caplen} exceeds original length {orig_len}; counting {caplen}"),
            });
            orig_len = caplen;
        }
        let limit = if nanos { 1_000_000_000 } else { 1_000_000 };
        if frac >= limit {
            problems.push(ScanProblem {
                packet_index: Some(index),
                offset: pos as u64 + 4,
                kind: "timestamp-fraction",
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
        });
        self.pos = pos + rec_hdr + caplen as usize;
    }

    /// Reads the Section Header Block at `pos`. `Ok(true)`: a readable
    /// section starts; `Ok(false)`: its version is unknown, the section is
    /// skipped (only after the first section; the first is fatal).
    fn read_shb(&mut self, pos: usize) -> Result<bool, FatalError> {
        let buf = self.buf;
        let bom = rd32(buf, pos + 8, false).ok_or_else(|| FatalError {
            offset: pos as u64,
            what: "section header block cut short before its byte-order magic".into(),
        })?;
        let be = match bom {
            BYTE_ORDER_MAGIC => false,
            0x4D3C_2B1A => true,
            other => {
                return Err(FatalError {
                    offset: pos as u64 + 8,
                    what: format!(
                        "pcapng byte-order magic 0x{other:08x} is neither 0x1a2b3c4d nor its swap"
                    ),
                })
            }
        };
        let len = self.check_block(pos, be).map_err(|what| FatalError {
            offset: pos as u64,
            what,
        })?;
        let major = rd16(buf, pos + 12, be).unwrap_or(0);
        let minor = rd16(buf, pos + 14, be).unwrap_or(0);
        self.kind = Kind::PcapNg {
            be,
            ifaces: Vec::new(),
            skip_section: major != 1,
        };
        if major != 1 {
            if pos == 0 {
                return Err(FatalError {
                    offset: 12,
                    what: format!("unsupported pcapng version {major}.{minor} (expected 1.x)"),
                });
            }
            self.pos = pos + len;
            return Ok(false);
        }
        self.pos = pos + len;
        Ok(true)
    }

    /// Checks the block at `pos`: total length sane, inside the file, and
    /// equal to the trailing copy. Returns the length.
    fn check_block(&self, pos: usize, be: bool) -> Result<usize, String> {
        let buf = self.buf;
        let left = buf.len().saturating_sub(pos);
        let Some(len) = rd32(buf, pos + 4, be) else {
            return Err(format!(
                "block header needs 8 bytes, {left} left at end of file"
            ));
        };
        let len = len as usize;
        if len < 12 || len % 4 != 0 {
            return Err(format!(
                "block total length {len} is not a multiple of 4 of at least 12"
            ));
        }
        if len > left {
            return Err(format!(
                "block claims {len} bytes, only {left} left in the file"
            ));
        }
        let trailer = rd32(buf, pos + len - 4, be).unwrap_or(0) as usize;
        if trailer != len {
            return Err(format!(
                "block total length in header {len} and trailer {trailer} don't match"
            ));
        }
        Ok(len)
    }

    fn pcapng_block(&mut self, out: &mut Vec<RawRec>, problems: &mut Vec<ScanProblem>) {
        let buf = self.buf;
        let pos = self.pos;
        if pos >= buf.len() {
            self.done = true;
            return;
        }
        // A new section may change the byte order: recognise it first.
        if rd32(buf, pos, false) == Some(SHB) {
            match self.read_shb(pos) {
                Ok(true) => {}
                Ok(false) => problems.push(ScanProblem {
                    packet_index: None,
                    offset: pos as u64 + 12,
                    kind: "unsupported-section",
                    what: format!(
                        "pcapng section version {}.{} is not 1.x; its blocks are skipped",
                        rd16(buf, pos + 12, self.be()).unwrap_or(0),
                        rd16(buf, pos + 14, self.be()).unwrap_or(0)
                    ),
                }),
                Err(e) => {
                    problems.push(ScanProblem {
                        packet_index: None,
                        offset: e.offset,
                        kind: "corrupt-block",
                        what: format!("section header: {}", e.what),
                    });
                    self.resync(pos, problems);
                }
            }
            return;
        }
        let be = self.be();
        let len = match self.check_block(pos, be) {
            Ok(l) => l,
            Err(what) => {
                problems.push(ScanProblem {
                    packet_index: None,
                    offset: pos as u64,
                    kind: if pos + 8 > buf.len() {
                        "truncated-block"
                    } else {
                        "corrupt-block"
                    },
                    what,
                });
                self.resync(pos, problems);
                return;
            }
        };
        self.pos = pos + len;
        let Kind::PcapNg { skip_section, .. } = self.kind else {
            return;
        };
        if skip_section {
            return;
        }
        let btype = rd32(buf, pos, be).unwrap_or(0);
        let body = &buf[pos..pos + len - 4]; // within bounds: checked by check_block
        match btype {
            1 => self.idb(pos, body, be, problems),
            6 | 2 => self.epb(btype, pos, body, be, out, problems),
            3 => self.spb(pos, body, be, out, problems),
            // NRB, ISB, DSB, custom and unknown blocks carry no packets.
            _ => {}
        }
    }

    fn be(&self) -> bool {
        match self.kind {
            Kind::PcapNg { be, .. } | Kind::Pcap { be, .. } => be,
        }
    }

    /// After a corrupt block, looks for the next offset (4-byte aligned from
    /// the bad block) where a well-formed block of a known type starts, and
    /// resumes there; reports how many bytes were skipped.
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
                    kind: "resync",
                    what: format!("skipped {} damaged bytes, resumed at offset {p}", p - from),
                });
                self.pos = p;
                return;
            }
            p += 4;
        }
        self.done = true;
    }

    fn idb(&mut self, pos: usize, body: &[u8], be: bool, problems: &mut Vec<ScanProblem>) {
        let (Some(link), Some(snaplen)) = (rd16(body, 8, be), rd32(body, 12, be)) else {
            problems.push(ScanProblem {
                packet_index: None,
                offset: pos as u64,
                kind: "corrupt-block",
                what: "interface description block shorter than its fixed fields".into(),
            });
            // Keep interface numbering aligned with the writer's.
            self.push_iface(Iface {
                link: u16::MAX,
                snaplen: 0,
                tsresol: 6,
                tsoffset: 0,
            });
            return;
        };
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
                    kind: "corrupt-option",
                    what: format!("interface option {code} of length {olen} overruns its block"),
                });
                break;
            };
            match (code, val) {
                (0, _) => break,
                (9, [r]) => iface.tsresol = *r,
                (14, _) if olen == 8 => iface.tsoffset = rd64(val, 0, be).unwrap_or(0) as i64,
                _ => {}
            }
            o += 4 + olen.div_ceil(4) * 4;
        }
        self.link_types.insert(link);
        self.push_iface(iface);
    }

    fn push_iface(&mut self, iface: Iface) {
        if let Kind::PcapNg { ifaces, .. } = &mut self.kind {
            ifaces.push(iface);
        }
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
            kind: "corrupt-block",
            what,
        });
    }

    fn epb(
        &mut self,
        btype: u32,
        pos: usize,
        body: &[u8],
        be: bool,
        out: &mut Vec<RawRec>,
        problems: &mut Vec<ScanProblem>,
    ) {
        let iface_id = if btype == 6 {
            rd32(body, 8, be).map(|v| v as usize)
        } else {
            rd16(body, 8, be).map(usize::from)
        };
        let (Some(iface_id), Some(hi), Some(lo), Some(caplen), Some(orig)) = (
            iface_id,
            rd32(body, 12, be),
            rd32(body, 16, be),
            rd32(body, 20, be),
            rd32(body, 24, be),
        ) else {
            return self.bad_packet(
                pos,
                "packet block shorter than its fixed fields".into(),
                problems,
            );
        };
        if body.len() < 28 + caplen as usize {
            return self.bad_packet(
                pos,
                format!(
                    "packet block of {} bytes cannot hold its {caplen} captured bytes",
                    body.len() + 4
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
        let ts_ns = match ts_to_ns(units, iface.tsresol, iface.tsoffset) {
            Some(t) => t,
            None => {
                problems.push(ScanProblem {
                    packet_index: Some(index),
                    offset: pos as u64 + 12,
                    kind: "timestamp-range",
                    what: "timestamp outside 1677..2262, kept as the previous packet's".into(),
                });
                self.last_ts
            }
        };
        self.push(
            out,
            pos,
            pos + 28,
            caplen,
            orig,
            ts_ns,
            iface.link,
            problems,
        );
    }

    fn spb(
        &mut self,
        pos: usize,
        body: &[u8],
        be: bool,
        out: &mut Vec<RawRec>,
        problems: &mut Vec<ScanProblem>,
    ) {
        let Some(orig) = rd32(body, 8, be) else {
            return self.bad_packet(
                pos,
                "simple packet block shorter than its fixed fields".into(),
                problems,
            );
        };
        let Some(iface) = self.iface(0) else {
            return self.bad_packet(
                pos,
                "simple packet block before any interface description".into(),
                problems,
            );
        };
        let room = body.len().saturating_sub(12) as u32;
        let mut caplen = orig.min(room);
        if iface.snaplen != 0 {
            caplen = caplen.min(iface.snaplen);
        }
        // Simple packet blocks carry no timestamp: they get the previous
        // packet's, so they sort where they were written.
        self.push(
            out,
            pos,
            pos + 12,
            caplen,
            orig,
            self.last_ts,
            iface.link,
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
        link: u16,
        problems: &mut Vec<ScanProblem>,
    ) {
        self.packets += 1;
        if caplen > orig_len {
            problems.push(ScanProblem {
                packet_index: Some(self.packets),
                offset: pos as u64,
                kind: "caplen-exceeds-len",
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
        });
    }
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
}
