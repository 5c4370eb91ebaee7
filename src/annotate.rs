//! Annotated pcapng: the replayed packets, unchanged, each carrying who
//! sent it, for Wireshark and tshark.
//!
//! Every packet of the input captures is written in order (files in
//! processing order, packets in file order) with its bytes, captured and
//! original length and timestamp to the nanosecond; each input interface
//! becomes one interface description (link type and snaplen kept, time
//! resolution 1 ns). A packet of an attributed flow carries an
//! `opt_comment` in ptcpdump's layout:
//!
//! ```text
//! PID: 1234
//! Cmd: /usr/bin/curl
//! Args: curl -s https://example.com
//! ```
//!
//! followed by `ProcessStart:`, `Method:`, `Confidence:` and `Flow:` lines
//! (then `SharedWith:`, `Parent:` with the parent's pid and comm,
//! `Container:` and `Cgroup:` where recorded),
//! and the `epb_processid_threadid` option (code 8: the pid, thread id 0 =
//! unknown). A packet without an owner carries `procflow: unattributed
//! (REASON)`, a packet in no flow (not IP, undecodable) says so. Strings
//! from the bundle are escaped with [`crate::hostile::term`], so one field
//! stays one line.
//!
//! The same writer carves: given a set of flow ids, it writes only their
//! packets (`procflow carve`).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption, InterfaceTsResolution,
};
use pcap_file::pcapng::blocks::opt_common::{CommonOption, UnknownOption};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::{DataLink, Endianness};

use crate::capture::scan::Scanner;
use crate::capture::{source, FileReport};
use crate::flow::PacketFlow;
use crate::hostile::visible;
use crate::report::{confidence, ConnectionRow};

/// pcapng `epb_processid_threadid` option code.
pub const EPB_PROCESSID_THREADID: u16 = 8;

/// What one flow's packets carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketNote {
    /// The comment text.
    pub comment: String,
    /// The owner's pid, for `epb_processid_threadid`.
    pub pid: Option<u32>,
}

/// The text of an owned flow's note, as found in a report row or a
/// `connections.csv` line (hostile text: escaped and bounded by
/// [`PacketNote::owned`]).
#[derive(Debug, Clone, Copy)]
pub struct NoteFields<'a> {
    /// Owner's pid.
    pub pid: u32,
    /// Owner's exe, else its comm.
    pub cmd: &'a str,
    /// Owner's command line, shell-quoted.
    pub args: &'a str,
    /// Owner's start (RFC 3339).
    pub start: &'a str,
    /// Attribution method.
    pub method: &'a str,
    /// Attribution confidence.
    pub confidence: &'a str,
    /// Report row's flow id.
    pub flow: &'a str,
    /// Other holders of the socket, `pid:start;...`, or empty.
    pub shared_with: &'a str,
    /// Both ends local: the process at the other end (`pid comm`), or
    /// empty.
    pub peer: &'a str,
    /// The owner's parent, `PPID (comm)` or `PPID` when its record is
    /// missing, or empty when not recorded.
    pub parent: &'a str,
    /// The owner's container id, or empty.
    pub container: &'a str,
    /// The owner's cgroup (first line of /proc/PID/cgroup), or empty.
    pub cgroup: &'a str,
}

/// Longest `Cmd:`, `Args:` and `SharedWith:` values of a comment, in
/// characters: a pcapng option holds at most 65535 bytes, and an escaped
/// character takes at most 10.
const CMD_CHARS: usize = 1024;
const ARGS_CHARS: usize = 4096;
const SHARED_CHARS: usize = 512;

impl PacketNote {
    /// The note of a report row: ptcpdump's `PID:`/`Cmd:`/`Args:` lines
    /// and procflow's method, or the reason there is no owner. `parent_comm`
    /// is the comm of the owner's parent process when it was recorded.
    pub fn of_row(row: &ConnectionRow, parent_comm: Option<&str>) -> PacketNote {
        let a = &row.attribution;
        let flow = row.flow.id.to_string();
        let mut note = match a.owner {
            Some(o) => {
                let p = row.process.as_ref();
                let cmd = p
                    .and_then(|p| p.exe.clone())
                    .or_else(|| p.map(|p| p.comm.clone()))
                    .unwrap_or_default();
                PacketNote::owned(&NoteFields {
                    pid: o.pid,
                    cmd: &cmd,
                    args: &row.cmdline(),
                    start: &row.process_start,
                    method: &a.method.name(),
                    confidence: confidence(a),
                    flow: &flow,
                    shared_with: &row.shared_with(),
                    peer: &peer_text(row),
                    parent: &p
                        .filter(|p| p.ppid != 0)
                        .map(|p| match parent_comm {
                            Some(c) => format!("{} ({c})", p.ppid),
                            None => p.ppid.to_string(),
                        })
                        .unwrap_or_default(),
                    container: p.and_then(|p| p.container_id.as_deref()).unwrap_or(""),
                    cgroup: p.and_then(|p| p.cgroup.as_deref()).unwrap_or(""),
                })
            }
            None => PacketNote::unowned(&a.method.name(), &flow),
        };
        if let Some(n) = &row.name {
            note.add_names(n);
        }
        note
    }

    /// Appends the remote end's name, the resolving process and the JA4
    /// (`docs/names.md`), escaped and bounded.
    pub fn add_names(&mut self, n: &crate::names::FlowName) {
        let c = &mut self.comment;
        if let Some(src) = n.source {
            c.push_str(&format!(
                "\nRemoteName: {} ({})",
                visible(&n.name, 256),
                src.as_str()
            ));
        }
        if !n.other.is_empty() {
            c.push_str(&format!("\nRemoteNameAlso: {}", visible(&n.other, 512)));
        }
        if let Some(pid) = n.resolved_by_pid {
            c.push_str(&format!(
                "\nResolvedBy: {} ({pid})",
                visible(n.resolved_by_comm.as_deref().unwrap_or(""), 64)
            ));
        }
        if let Some(j) = &n.ja4 {
            c.push_str(&format!("\nJA4: {}", visible(j, 64)));
        }
    }

    /// The note of an owned flow: every text field escaped for a terminal
    /// (tshark prints comments) and the long ones bounded.
    pub fn owned(f: &NoteFields<'_>) -> PacketNote {
        let mut c = format!(
            "PID: {}\nCmd: {}\nArgs: {}\nProcessStart: {}\nMethod: {}\nConfidence: {}\nFlow: {}",
            f.pid,
            visible(f.cmd, CMD_CHARS),
            visible(f.args, ARGS_CHARS),
            visible(f.start, 64),
            visible(f.method, 256),
            visible(f.confidence, 16),
            visible(f.flow, 24),
        );
        if !f.shared_with.is_empty() {
            c.push_str("\nSharedWith: ");
            c.push_str(&visible(f.shared_with, SHARED_CHARS));
        }
        if !f.peer.is_empty() {
            c.push_str("\nPeer: ");
            c.push_str(&visible(f.peer, CMD_CHARS));
        }
        for (key, value, max) in [
            ("Parent", f.parent, 64),
            ("Container", f.container, 128),
            ("Cgroup", f.cgroup, SHARED_CHARS),
        ] {
            if !value.is_empty() {
                c.push('\n');
                c.push_str(key);
                c.push_str(": ");
                c.push_str(&visible(value, max));
            }
        }
        PacketNote {
            comment: c,
            pid: Some(f.pid),
        }
    }

    /// The note of a flow without owner: `method` says why.
    pub fn unowned(method: &str, flow: &str) -> PacketNote {
        PacketNote {
            comment: format!(
                "procflow: {}\nFlow: {}",
                visible(method, 256).replacen(':', " (", 1) + ")",
                visible(flow, 24)
            ),
            pid: None,
        }
    }
}

/// Both ends local: `PID comm (method, confidence)` of the process at the
/// other end; empty otherwise.
fn peer_text(row: &ConnectionRow) -> String {
    let Some(p) = row.attribution.peer.as_ref() else {
        return String::new();
    };
    match p.owner {
        Some(o) => format!(
            "{} {} ({}, {})",
            o.pid,
            row.peer_comm().unwrap_or(""),
            p.method.name(),
            p.confidence().map_or("", |c| c.as_str())
        ),
        None => p.method.name(),
    }
}

/// The note of packets that belong to no flow.
pub fn no_flow_note() -> PacketNote {
    PacketNote {
        comment: "procflow: in no flow (not IP, or undecodable: see summary.json)".into(),
        pid: None,
    }
}

/// The notes of every report row, found by a packet's replayed flow id and
/// time: a flow cut between owners (`parent_flow_id`) gives its packets to
/// the part whose time range holds them, and a flow cut by the bytes each
/// process sent or read to the part its packet was placed in (its parts
/// interleave in time).
#[derive(Debug, Clone, Default)]
pub struct NoteIndex {
    by_id: HashMap<u64, PacketNote>,
    /// Parent flow id -> its parts (first_seen, last_seen, id), in time order.
    parts: HashMap<u64, Vec<(i64, i64, u64)>>,
    /// Parent flow id -> the part of each of its packets, as stretches
    /// ((file, packet number) of the first packet, part id), in order.
    packet_parts: crate::split::PacketParts,
}

impl NoteIndex {
    /// Adds the note of the row `id`, a part of `parent` spanning
    /// `first..=last` ns when it is one.
    pub fn add(&mut self, id: u64, parent: Option<u64>, first: i64, last: i64, note: PacketNote) {
        self.by_id.insert(id, note);
        if let Some(p) = parent {
            let v = self.parts.entry(p).or_default();
            v.push((first, last, id));
            v.sort_unstable();
        }
    }

    /// The part each packet of the flows cut by use evidence went to
    /// (`split::apply`).
    pub fn set_packet_parts(&mut self, parts: crate::split::PacketParts) {
        self.packet_parts = parts;
    }

    /// Number of replayed flows the rows stand for (parts count once, as
    /// their parent).
    pub fn replayed_flows(&self) -> usize {
        let parts: usize = self.parts.values().map(Vec::len).sum();
        self.by_id.len() - parts + self.parts.len()
    }

    /// The report row (id and note) of a packet of replayed flow `id` at
    /// `ts_ns`, packet number `at.1` of file `at.0`.
    pub fn lookup(&self, id: u64, ts_ns: i64, at: (u32, u64)) -> Option<(u64, &PacketNote)> {
        let placed = self.packet_parts.get(&id).and_then(|v| {
            let i = v.partition_point(|(first, _)| *first <= at);
            v.get(i.checked_sub(1)?).map(|(_, part)| *part)
        });
        let id = match (placed, self.parts.get(&id)) {
            (Some(part), _) => part,
            (None, Some(parts)) => {
                let i = parts.partition_point(|p| p.0 <= ts_ns);
                // The last part begun by then; before the first, the first.
                parts.get(i.saturating_sub(1)).map(|p| p.2)?
            }
            (None, None) => id,
        };
        self.by_id.get(&id).map(|n| (id, n))
    }
}

/// What was written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Packets written.
    pub packets: u64,
    /// Sum of their original lengths.
    pub bytes: u64,
    /// Packets written with an owner's pid.
    pub attributed: u64,
    /// Interface descriptions written.
    pub interfaces: u32,
}

/// Which packets to write.
pub enum Selection<'a> {
    /// Every packet, also those in no flow.
    All,
    /// Only the packets of these flows.
    Flows(&'a HashSet<u64>),
}

/// Writes the packets of `files` (replay's processing order; unreadable
/// files are skipped) to `out` as pcapng. `packet_flows` is replay's
/// packet-to-flow map, `notes` the report rows' notes.
pub fn write_pcapng(
    files: &[FileReport],
    packet_flows: &[PacketFlow],
    notes: &NoteIndex,
    selection: Selection<'_>,
    out: &mut dyn Write,
) -> io::Result<WriteStats> {
    let shb = SectionHeaderBlock {
        endianness: Endianness::Little,
        major_version: 1,
        minor_version: 0,
        section_length: -1,
        options: vec![SectionHeaderOption::UserApplication(Cow::Owned(format!(
            "procflow {}",
            env!("CARGO_PKG_VERSION")
        )))],
    };
    let mut w = PcapNgWriter::with_section_header(out, shb).map_err(io::Error::other)?;
    let mut stats = WriteStats::default();
    let none = no_flow_note();
    let mut first_iface = 0u32;
    for (file_idx, f) in files.iter().enumerate() {
        if f.error.is_some() {
            continue;
        }
        let file_idx = file_idx as u32;
        let start = packet_flows.partition_point(|p| p.file < file_idx);
        let end = packet_flows.partition_point(|p| p.file <= file_idx);
        let mine = &packet_flows[start..end];
        let src = source::Source::open(&f.path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", f.path.display())))?;
        let n = write_file(
            &mut w,
            src.bytes(),
            &f.path,
            first_iface,
            mine,
            notes,
            &none,
            &selection,
            &mut stats,
        )?;
        first_iface += n;
    }
    stats.interfaces = first_iface;
    w.into_inner().flush()?;
    Ok(stats)
}

/// The last packet's flow: id, whether it is cut between owners, its
/// report row and whether it is selected.
type LastFlow<'a> = (u64, bool, Option<(u64, &'a PacketNote)>, bool);

#[allow(clippy::too_many_arguments)]
fn write_file<W: Write>(
    w: &mut PcapNgWriter<W>,
    buf: &[u8],
    path: &Path,
    first_iface: u32,
    flows: &[PacketFlow],
    notes: &NoteIndex,
    none: &PacketNote,
    selection: &Selection<'_>,
    stats: &mut WriteStats,
) -> io::Result<u32> {
    let err = |e: pcap_file::pcapng::PcapNgWriteError| {
        io::Error::other(format!("writing packets of {}: {e}", path.display()))
    };
    let Ok(mut scanner) = Scanner::open(buf) else {
        return Ok(0);
    };
    let mut recs = Vec::new();
    let mut problems = Vec::new();
    let mut described = 0usize;
    let mut at = 0usize;
    let mut last: Option<LastFlow<'_>> = None;
    loop {
        scanner.next_batch(&mut recs, 8192, 4 << 20, &mut problems);
        problems.clear();
        for i in &scanner.interfaces[described..] {
            let idb = InterfaceDescriptionBlock {
                linktype: DataLink::from(u32::from(i.link)),
                snaplen: i.snaplen,
                options: vec![InterfaceDescriptionOption::IfTsResol(
                    InterfaceTsResolution::from_u8(9).map_err(io::Error::other)?,
                )],
            };
            w.write_pcapng_block(idb).map_err(err)?;
        }
        described = scanner.interfaces.len();
        if recs.is_empty() {
            break;
        }
        for r in &recs {
            while at < flows.len() && flows[at].index < r.index {
                at += 1;
            }
            let flow = flows.get(at).filter(|p| p.index == r.index);
            // Row and selection are per flow: looked up again only when the
            // flow changes, or for a flow cut between owners (by time).
            let (row, keep) = match (flow, last) {
                (Some(p), Some((id, false, row, keep))) if p.flow_id == id => (row, keep),
                _ => {
                    let row =
                        flow.and_then(|p| notes.lookup(p.flow_id, r.ts_ns, (p.file, p.index)));
                    let keep = match selection {
                        Selection::All => true,
                        Selection::Flows(set) => row.is_some_and(|(id, _)| set.contains(&id)),
                    };
                    last = flow.map(|p| {
                        let split = notes.parts.contains_key(&p.flow_id);
                        (p.flow_id, split, row, keep)
                    });
                    (row, keep)
                }
            };
            if !keep {
                continue;
            }
            let note = row.map_or(none, |(_, n)| n);
            let data = buf
                .get(r.data_off..r.data_off.saturating_add(r.caplen as usize))
                .unwrap_or(&[]);
            let mut options = vec![EnhancedPacketOption::Common(CommonOption::Comment(
                Cow::Borrowed(note.comment.as_str()),
            ))];
            let pid_tid;
            if let Some(pid) = note.pid {
                let mut v = [0u8; 8];
                v[..4].copy_from_slice(&pid.to_le_bytes());
                pid_tid = v;
                options.push(EnhancedPacketOption::Common(CommonOption::Unknown(
                    UnknownOption::new(EPB_PROCESSID_THREADID, &pid_tid),
                )));
                stats.attributed += 1;
            }
            let epb = EnhancedPacketBlock {
                interface_id: first_iface + r.iface,
                timestamp: Duration::from_nanos(u64::try_from(r.ts_ns).unwrap_or(0)),
                original_len: r.orig_len,
                data: Cow::Borrowed(data),
                options,
            };
            w.write_pcapng_block(epb).map_err(err)?;
            stats.packets += 1;
            stats.bytes += u64::from(r.orig_len);
        }
    }
    Ok(u32::try_from(described).unwrap_or(u32::MAX))
}

/// Why the annotated pcapng was not written.
#[derive(Debug, thiserror::Error)]
pub enum PcapngError {
    /// Its location cannot be used, or the finished file cannot be put
    /// in place.
    #[error(transparent)]
    Output(#[from] crate::outdir::OutputError),
    /// [`PcapngOut::write`] was called on an output already written.
    #[error("pcapng output already written")]
    AlreadyWritten,
    /// Writing the packets failed.
    #[error("pcapng output")]
    Write(#[source] io::Error),
}

/// [`write_pcapng`] into `path` through [`crate::outdir::SafeFile`]: refused
/// inside a bundle, over an input, or over an existing file unless `force`;
/// written beside it and renamed when complete.
pub struct PcapngOut {
    file: crate::outdir::SafeFile,
}

impl PcapngOut {
    /// Checks and opens `path` before any work is done.
    pub fn prepare(
        path: &Path,
        inputs: &[std::path::PathBuf],
        bundles: &[&Path],
        force: bool,
    ) -> Result<PcapngOut, PcapngError> {
        let file = crate::outdir::SafeFile::create(path, "pcapng output", inputs, bundles, force)?;
        Ok(PcapngOut { file })
    }

    /// Writes the packets and puts the file in place.
    pub fn write(
        mut self,
        files: &[FileReport],
        packet_flows: &[PacketFlow],
        notes: &NoteIndex,
        selection: Selection<'_>,
    ) -> Result<WriteStats, PcapngError> {
        let f = self.file.take().ok_or(PcapngError::AlreadyWritten)?;
        let mut bw = io::BufWriter::with_capacity(1 << 20, f);
        let stats = write_pcapng(files, packet_flows, notes, selection, &mut bw)
            .map_err(PcapngError::Write)?;
        let f = bw
            .into_inner()
            .map_err(|e| PcapngError::Write(e.into_error()))?;
        self.file.commit(f)?;
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cut_by_use_are_found_by_packet_not_by_time() {
        let note = |pid| PacketNote {
            comment: format!("PID: {pid}"),
            pid: Some(pid),
        };
        let mut n = NoteIndex::default();
        // Flow 7 cut into a shell's part (10, the whole connection) and its
        // child's (11, inside it in time); flow 8 cut by time.
        n.add(10, Some(7), 100, 900, note(1));
        n.add(11, Some(7), 300, 500, note(2));
        n.add(20, Some(8), 100, 400, note(3));
        n.add(21, Some(8), 500, 900, note(4));
        let mut pp = crate::split::PacketParts::new();
        pp.insert(7, vec![((0, 1), 10), ((0, 4), 11), ((1, 2), 10)]);
        n.set_packet_parts(pp);
        let pid = |id, ts, at| n.lookup(id, ts, at).and_then(|(_, x)| x.pid);
        assert_eq!(pid(7, 100, (0, 1)), Some(1));
        assert_eq!(pid(7, 300, (0, 4)), Some(2));
        assert_eq!(pid(7, 500, (0, 9)), Some(2));
        // The shell's last bytes, after its child began: the shell's.
        assert_eq!(pid(7, 800, (1, 2)), Some(1));
        assert_eq!(pid(7, 900, (1, 7)), Some(1));
        // By time where no packet parts were given.
        assert_eq!(pid(8, 450, (0, 3)), Some(3));
        assert_eq!(pid(8, 600, (0, 4)), Some(4));
        assert_eq!(n.replayed_flows(), 2);
    }

    #[test]
    fn owned_note_is_escaped_and_fits_one_pcapng_option() {
        let long = "\u{202e}".repeat(100_000);
        let n = PacketNote::owned(&NoteFields {
            pid: 7,
            cmd: &long,
            args: &long,
            start: "\x1b[2J",
            method: "socket_table",
            confidence: "high",
            flow: "3",
            shared_with: &long,
            peer: &long,
            parent: "1 (systemd\n)",
            container: &long,
            cgroup: &long,
        });
        assert!(
            n.comment.len() <= usize::from(u16::MAX),
            "{}",
            n.comment.len()
        );
        assert!(!n.comment.contains('\u{202e}') && !n.comment.contains('\x1b'));
        assert!(n.comment.starts_with("PID: 7\nCmd: \\u{202e}"));
        assert!(
            n.comment.contains("\nParent: 1 (systemd\\x0a)\n"),
            "{}",
            n.comment
        );
        assert!(n.comment.contains("\nContainer: \\u{202e}"));
        assert!(n.comment.contains("\nCgroup: \\u{202e}"));
        assert_eq!(n.pid, Some(7));
        // Nothing recorded, no line.
        let n = PacketNote::owned(&NoteFields {
            pid: 8,
            cmd: "curl",
            args: "curl x",
            start: "",
            method: "exact",
            confidence: "high",
            flow: "1",
            shared_with: "",
            peer: "",
            parent: "",
            container: "",
            cgroup: "",
        });
        assert!(!n.comment.contains("Parent:") && !n.comment.contains("Cgroup:"));
    }
}
