//! The report files, one writer per format behind [`ReportWriter`].
//!
//! Rows are computed once from the flows and their attributions
//! ([`ConnectionRow`], [`ProcessRow`]); each writer only formats them. Every
//! order is deterministic (flow id; pid and start time), so the bytes do not
//! depend on the thread count. Column meanings: `docs/report-schema.md`.

pub mod connections_csv;
pub mod connections_jsonl;
pub mod html;
pub mod overview;
pub mod processes_csv;
pub mod summary;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::IpAddr;

use procflow_format::hash::hex;
use procflow_format::layout::{Manifest, ProcessRecord};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::attribute::{Attribution, Method, Note, ProcKey, Reason};
use crate::flow::{proto_name, Flow};
use crate::snapshot::procnet::{tcp_state_name, STATE_CLOSE};
use crate::snapshot::timeline::{Timeline, Transport};
pub use crate::time::rfc3339_ns;

/// A report file writer.
pub trait ReportWriter {
    /// File name inside the report directory.
    fn file_name(&self) -> &'static str;
    /// Writes the whole file.
    fn write(&self, out: &mut dyn Write) -> io::Result<()>;
}

/// Joins command-line arguments with spaces, single-quoting those a POSIX
/// shell would split or expand, so the line can be pasted back.
pub fn shell_join(args: &[String]) -> String {
    let quote = |a: &String| -> String {
        let plain = !a.is_empty()
            && a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b));
        if plain {
            a.clone()
        } else {
            format!("'{}'", a.replace('\'', r"'\''"))
        }
    };
    args.iter().map(quote).collect::<Vec<_>>().join(" ")
}

/// Longest command line a report row repeats, in bytes: a longer one
/// (Linux allows about 2 MB) is cut on a row, with the SHA-256 of the whole
/// line beside it; `processes.csv` holds it whole, once per process.
pub const ROW_CMDLINE_MAX: usize = 4096;

/// Longest other per-process text a report row repeats (comm, exe,
/// container id), in bytes: longer than any a kernel gives (a path is at
/// most 4096 bytes, a comm 15), so only a crafted bundle reaches it.
pub const ROW_TEXT_MAX: usize = 4096;

/// `s` as a report row repeats it: whole when at most `max` bytes, else its
/// first bytes (cut on a character boundary) and `…`.
pub fn row_text(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &s[..end]))
}

/// A command line as a report row repeats it: the shell-quoted line
/// ([`shell_join`]), cut by [`row_text`] to [`ROW_CMDLINE_MAX`] bytes, and
/// the SHA-256 (hex) of the whole line when it was cut.
pub fn row_cmdline(args: &[String]) -> (String, Option<String>) {
    let whole = shell_join(args);
    match row_text(&whole, ROW_CMDLINE_MAX) {
        Cow::Borrowed(_) => (whole, None),
        Cow::Owned(cut) => (cut, Some(hex(&Sha256::digest(whole.as_bytes())))),
    }
}

/// The arguments as a report row repeats them: whole when their text
/// totals at most [`ROW_CMDLINE_MAX`] bytes, else the first ones within
/// it, the last of them cut by [`row_text`]; and whether any was left out
/// or cut.
pub fn row_args(args: &[String]) -> (Vec<Cow<'_, str>>, bool) {
    let mut out = Vec::new();
    let mut room = ROW_CMDLINE_MAX;
    for a in args {
        if a.len() > room {
            if room > 0 {
                out.push(row_text(a, room));
            }
            return (out, true);
        }
        room -= a.len();
        out.push(Cow::Borrowed(a.as_str()));
    }
    (out, false)
}

/// ECS `process.entity_id`: the first 16 bytes, in hex, of
/// SHA-256(`boot_id|pid|start_time`), so a reused pid is a different entity.
pub fn entity_id(boot_id: &str, pid: u32, start_time: u64) -> String {
    let d = Sha256::digest(format!("{boot_id}|{pid}|{start_time}").as_bytes());
    hex(&d[..16])
}

/// Process start time in ns since the epoch: btime + start_time / clk_tck.
pub fn process_start_ns(m: &Manifest, start_time: u64) -> i64 {
    let tck = u128::from(m.host.clk_tck.max(1));
    let since_boot = u128::from(start_time) * 1_000_000_000 / tck;
    let since_boot = i64::try_from(since_boot).unwrap_or(i64::MAX);
    m.host
        .btime
        .saturating_mul(1_000_000_000)
        .saturating_add(since_boot)
}

/// How much to trust an attribution: `high`, `medium` or `low`
/// ([`Attribution::confidence`]); empty when unattributed.
pub fn confidence(a: &Attribution) -> &'static str {
    a.confidence().map_or("", |c| c.as_str())
}

/// A note in words.
pub fn note_text(n: &Note) -> String {
    match *n {
        Note::Shared(k) => format!(
            "socket shared by {k} processes; owner is the one using it longest during the flow, then the youngest"
        ),
        Note::EventOwners(k) => format!(
            "events of this socket name {k} processes during the flow; owner is the one nearest in time"
        ),
        Note::V4MappedSocket => "ipv4-mapped socket".into(),
        Note::OtherNamespace => "socket in another network namespace".into(),
        Note::Nat(m) => format!(
            "translated by conntrack ({}{}): the socket holds {} -> {}",
            m.kind.as_str(),
            match m.kind {
                procflow_format::conntrack::NatKind::Snat => ", masquerade",
                procflow_format::conntrack::NatKind::Dnat => ", published port",
                procflow_format::conntrack::NatKind::Both => "",
            },
            m.local,
            m.remote
        ),
        Note::BothLocal { initiator } => format!(
            "both ends local; attributed to the {}'s socket",
            if initiator { "initiator" } else { "responder" }
        ),
        Note::OwnerlessSocket { inode, reason } => format!(
            "{} socket inode {inode} seen without owner ({})",
            if inode == 0 { "an exact" } else { "a" },
            reason.as_str()
        ),
        Note::NoEvents => {
            "no socket events in the bundle (periodic snapshots only): a socket living between two snapshots leaves no owner".into()
        }
        Note::ExecChanged { t_ns } => format!(
            "the process changed program (execve) at {}; named by the program it became",
            rfc3339_ns(t_ns)
        ),
        Note::HolderOnly { bundle_has_uses } => format!(
            "holder evidence only: {}; the owner held or opened the socket, another process holding it may have sent the bytes",
            if bundle_has_uses {
                "no send or read call on this socket was recorded"
            } else {
                "the bundle holds no per-send evidence"
            }
        ),
        Note::UseOwners(k) => format!(
            "send and read calls on this socket name {k} processes; owner is the one with the most bytes"
        ),
        Note::Interleaved(k) => format!(
            "{k} processes sent or read on this socket at the same time; this row holds only this one's bytes"
        ),
        Note::AuditSession { auid, ses } => {
            let id = |v: Option<u32>| v.map_or("unset".to_string(), |v| v.to_string());
            format!("audit login uid {} session {}", id(auid), id(ses))
        }
        Note::OtherEvidence { pid, rule } => {
            format!("{} names another pid, {pid}; the stronger evidence is kept", rule.name())
        }
        Note::SplitPart { part, parts } => {
            format!("part {part} of {parts} of a flow whose socket changed owner")
        }
    }
}

/// The notes of an attribution, joined with `; `.
pub fn notes_text(a: &Attribution) -> String {
    a.notes.iter().map(note_text).collect::<Vec<_>>().join("; ")
}

/// Name of a socket state as reported: TCP state names; for UDP
/// `CONNECTED` (01) or `UNCONNECTED` (07).
pub fn socket_state_name(t: Transport, state: u8) -> &'static str {
    match t {
        Transport::Tcp => tcp_state_name(state),
        Transport::Udp if state == STATE_CLOSE => "UNCONNECTED",
        Transport::Udp if state == 0x01 => "CONNECTED",
        Transport::Udp => "UNKNOWN",
    }
}

/// One line of `connections.csv`: the field names are the column names, in
/// order (`docs/report-schema.md`); `None` is an empty field.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ConnectionCsvRow<'a> {
    pub(crate) flow_id: u64,
    pub(crate) proto: String,
    pub(crate) family: &'a str,
    pub(crate) local_ip: String,
    pub(crate) local_port: Option<u16>,
    pub(crate) remote_ip: String,
    pub(crate) remote_port: Option<u16>,
    pub(crate) first_seen: String,
    pub(crate) last_seen: String,
    pub(crate) packets_in: u64,
    pub(crate) packets_out: u64,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) pid: Option<u32>,
    pub(crate) process_start: &'a str,
    pub(crate) ppid: Option<u32>,
    pub(crate) uid: Option<u32>,
    pub(crate) comm: Option<Cow<'a, str>>,
    pub(crate) exe: Option<Cow<'a, str>>,
    pub(crate) cmdline: String,
    pub(crate) netns: Option<u64>,
    pub(crate) method: String,
    pub(crate) time_gap_ms: Option<i64>,
    pub(crate) shared_with: String,
    pub(crate) direction: &'a str,
    pub(crate) confidence: &'a str,
    pub(crate) socket_state: &'a str,
    pub(crate) inode: Option<u64>,
    pub(crate) socket_uid: Option<u32>,
    pub(crate) entity_id: &'a str,
    pub(crate) community_id: &'a str,
    pub(crate) ip_bytes_in: u64,
    pub(crate) ip_bytes_out: u64,
    pub(crate) duration_ms: i64,
    pub(crate) process_start_ticks: Option<u64>,
    pub(crate) container_id: Option<Cow<'a, str>>,
    pub(crate) icmp_type: Option<u8>,
    pub(crate) icmp_code: Option<u8>,
    pub(crate) both_local: bool,
    pub(crate) note: String,
    pub(crate) parent_flow_id: Option<u64>,
    pub(crate) nat: Option<&'static str>,
    pub(crate) nat_local_ip: Option<String>,
    pub(crate) nat_local_port: Option<u16>,
    pub(crate) nat_remote_ip: Option<String>,
    pub(crate) nat_remote_port: Option<u16>,
    pub(crate) peer_pid: Option<u32>,
    pub(crate) peer_process_start_ticks: Option<u64>,
    pub(crate) peer_comm: Option<Cow<'a, str>>,
    pub(crate) peer_cmdline: String,
    pub(crate) peer_method: String,
    pub(crate) peer_confidence: &'a str,
    // Names of the remote end (docs/names.md), kept together.
    pub(crate) remote_name: Option<Cow<'a, str>>,
    pub(crate) remote_name_source: Option<&'static str>,
    pub(crate) remote_name_other: Option<Cow<'a, str>>,
    pub(crate) resolved_by_pid: Option<u32>,
    pub(crate) resolved_by_comm: Option<Cow<'a, str>>,
    pub(crate) resolved_at: Option<String>,
    pub(crate) ja4: Option<&'a str>,
    // Set when `cmdline` / `peer_cmdline` was cut ([`row_cmdline`]).
    pub(crate) cmdline_sha256: Option<String>,
    pub(crate) peer_cmdline_sha256: Option<String>,
}

impl ConnectionCsvRow<'_> {
    /// The row with its text from the bundle (comm, exe, cmdline,
    /// container id) made safe for spreadsheets ([`csv_text`]), unless
    /// `raw`.
    pub fn neutralised(mut self, raw: bool) -> Self {
        if !raw {
            self.comm = self.comm.map(|c| csv_text(c));
            self.exe = self.exe.map(|c| csv_text(c));
            self.cmdline = csv_text(Cow::Owned(self.cmdline)).into_owned();
            self.container_id = self.container_id.map(|c| csv_text(c));
            self.peer_comm = self.peer_comm.map(|c| csv_text(c));
            self.peer_cmdline = csv_text(Cow::Owned(self.peer_cmdline)).into_owned();
            self.remote_name = self.remote_name.map(|c| csv_text(c));
            self.remote_name_other = self.remote_name_other.map(|c| csv_text(c));
            self.resolved_by_comm = self.resolved_by_comm.map(|c| csv_text(c));
        }
        self
    }
}

/// A CSV text cell from the bundle made safe for spreadsheets: a formula
/// start prefixed with `'`, control characters escaped visibly
/// ([`crate::hostile::csv_cell`]).
pub fn csv_text(s: Cow<'_, str>) -> Cow<'_, str> {
    match crate::hostile::csv_cell(&s, false) {
        Cow::Borrowed(_) => s,
        Cow::Owned(o) => Cow::Owned(o),
    }
}

/// Writes `rows` as CSV under a header of the field names of `T`, written
/// also when there is no row.
pub fn write_csv_rows<T, I>(out: &mut dyn Write, rows: I) -> io::Result<()>
where
    T: Serialize + Default,
    I: IntoIterator<Item = T>,
{
    let mut w = csv::Writer::from_writer(out);
    let mut empty = true;
    for r in rows {
        w.serialize(r)?;
        empty = false;
    }
    if empty {
        w.write_record(&csv_header::<T>()?)?;
    }
    w.flush()
}

/// The CSV header of `T`: its field names, as `csv` writes them before the
/// first serialized row.
fn csv_header<T: Serialize + Default>() -> io::Result<csv::StringRecord> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.serialize(T::default())?;
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(bytes.as_slice())
        .records()
        .next()
        .transpose()?
        .ok_or_else(|| io::Error::other("a CSV row type without fields"))
}

/// One row of `connections.csv` (and one line of `connections.jsonl`).
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionRow {
    /// The flow.
    pub flow: Flow,
    /// Its attribution.
    pub attribution: Attribution,
    /// Whether the local end is the initiator (`a`); true when no end is
    /// local (the initiator is then put in the local columns).
    pub local_is_a: bool,
    /// The owner's record, if the recorder saw it: shared by every row of
    /// that process, never copied per row.
    pub process: Option<std::sync::Arc<ProcessRecord>>,
    /// Owner's start time, RFC 3339.
    pub process_start: String,
    /// Owner's entity id.
    pub entity_id: String,
    /// Community ID v1 of the flow.
    pub community_id: String,
    /// Owning uid of the matched socket row.
    pub socket_uid: Option<u32>,
    /// Namespace of the matched event's process, when it carried one.
    pub event_netns: Option<u64>,
    /// The owner's comm as its events gave it, when no process record of
    /// it was written (the process was gone before the next snapshot).
    pub event_comm: Option<String>,
    /// Both ends local: the record of the process at the other end, as it
    /// was when it sent or read these bytes.
    pub peer_process: Option<std::sync::Arc<ProcessRecord>>,
    /// The remote end's name and the flow's JA4, from the capture
    /// (`docs/names.md`); filled by [`crate::names::annotate_rows`].
    /// Boxed: most flows have none, and a row is kept per flow.
    pub name: Option<Box<crate::names::FlowName>>,
}

/// [`row_text`] bounded by [`ROW_TEXT_MAX`].
fn text(s: &str) -> Cow<'_, str> {
    row_text(s, ROW_TEXT_MAX)
}

impl ConnectionRow {
    /// Local endpoint (ip, port).
    pub fn local(&self) -> (IpAddr, Option<u16>) {
        if self.local_is_a {
            (self.flow.a_ip, self.flow.a_port)
        } else {
            (self.flow.b_ip, self.flow.b_port)
        }
    }

    /// Remote endpoint (ip, port).
    pub fn remote(&self) -> (IpAddr, Option<u16>) {
        if self.local_is_a {
            (self.flow.b_ip, self.flow.b_port)
        } else {
            (self.flow.a_ip, self.flow.a_port)
        }
    }

    /// (packets_in, packets_out, bytes_in, bytes_out, ip_bytes_in, ip_bytes_out)
    /// seen from the local end.
    pub fn counters(&self) -> [u64; 6] {
        self.flow.counters(self.local_is_a)
    }

    /// `out` when the local end initiated, `in` when the remote did, empty
    /// when neither end is local.
    pub fn direction(&self) -> &'static str {
        match self.attribution.local_is_a {
            Some(true) => "out",
            Some(false) => "in",
            None => "",
        }
    }

    /// Gap in whole milliseconds, rounded up so that a gap is never shown as 0.
    pub fn time_gap_ms(&self) -> Option<i64> {
        let g = self.attribution.gap_ns()?;
        Some((g + 999_999) / 1_000_000)
    }

    /// `pid:start;pid:start` of every holder when the socket was shared.
    pub fn shared_with(&self) -> String {
        self.attribution
            .shared_with
            .iter()
            .map(|k| format!("{}:{}", k.pid, k.start_time))
            .collect::<Vec<_>>()
            .join(";")
    }

    /// The command line, shell-quoted.
    pub fn cmdline(&self) -> String {
        self.process
            .as_ref()
            .map(|p| shell_join(&p.cmdline))
            .unwrap_or_default()
    }

    /// Namespace of the matched socket, else of the matched event's process.
    pub fn netns(&self) -> Option<u64> {
        self.attribution
            .socket
            .map(|s| s.netns)
            .or(self.event_netns)
            .or(self.attribution.netns_hint)
    }

    /// Socket state name of the matched socket.
    pub fn socket_state(&self) -> &'static str {
        match self.attribution.socket {
            Some(s) => socket_state_name(s.transport, s.state),
            None => "",
        }
    }

    /// The line of `connections.csv`.
    pub fn csv_row(&self) -> ConnectionCsvRow<'_> {
        let f = &self.flow;
        let a = &self.attribution;
        let (lip, lport) = self.local();
        let (rip, rport) = self.remote();
        let [pin, pout, bin, bout, ipin, ipout] = self.counters();
        let p = self.process.as_ref();
        let owner = a.owner;
        let (cmdline, cmdline_sha256) = p.map(|p| row_cmdline(&p.cmdline)).unwrap_or_default();
        let (peer_cmdline, peer_cmdline_sha256) = self
            .peer_process
            .as_ref()
            .map(|p| row_cmdline(&p.cmdline))
            .unwrap_or_default();
        ConnectionCsvRow {
            flow_id: f.id,
            proto: proto_name(f.proto),
            family: f.family.as_str(),
            local_ip: lip.to_string(),
            local_port: lport,
            remote_ip: rip.to_string(),
            remote_port: rport,
            first_seen: rfc3339_ns(f.first_seen_ns),
            last_seen: rfc3339_ns(f.last_seen_ns),
            packets_in: pin,
            packets_out: pout,
            bytes_in: bin,
            bytes_out: bout,
            pid: owner.map(|o| o.pid),
            process_start: &self.process_start,
            ppid: p.map(|p| p.ppid),
            uid: p.map(|p| p.uid),
            comm: p
                .map(|p| p.comm.as_str())
                .or(self.event_comm.as_deref())
                .map(text),
            exe: p.and_then(|p| p.exe.as_deref()).map(text),
            cmdline,
            netns: self.netns(),
            method: a.method.name(),
            time_gap_ms: self.time_gap_ms(),
            shared_with: self.shared_with(),
            direction: self.direction(),
            confidence: confidence(a),
            socket_state: self.socket_state(),
            inode: a.socket.map(|s| s.inode),
            socket_uid: self.socket_uid,
            entity_id: &self.entity_id,
            community_id: &self.community_id,
            ip_bytes_in: ipin,
            ip_bytes_out: ipout,
            duration_ms: f.last_seen_ns.saturating_sub(f.first_seen_ns) / 1_000_000,
            process_start_ticks: owner.map(|o| o.start_time),
            container_id: p.and_then(|p| p.container_id.as_deref()).map(text),
            icmp_type: f.icmp.map(|i| i.icmp_type),
            icmp_code: f.icmp.map(|i| i.code),
            both_local: a.both_local,
            note: notes_text(a),
            parent_flow_id: a.parent_flow_id,
            nat: a.nat.as_deref().map(|n| n.kind.as_str()),
            nat_local_ip: a.nat.as_deref().map(|n| n.local.ip().to_string()),
            nat_local_port: a.nat.as_deref().map(|n| n.local.port()),
            nat_remote_ip: a.nat.as_deref().map(|n| n.remote.ip().to_string()),
            nat_remote_port: a.nat.as_deref().map(|n| n.remote.port()),
            peer_pid: a.peer.as_ref().and_then(|p| p.owner).map(|o| o.pid),
            peer_process_start_ticks: a.peer.as_ref().and_then(|p| p.owner).map(|o| o.start_time),
            peer_comm: self.peer_comm().map(text),
            peer_cmdline,
            peer_method: a.peer.as_ref().map(|p| p.method.name()).unwrap_or_default(),
            peer_confidence: a
                .peer
                .as_ref()
                .and_then(|p| p.confidence())
                .map_or("", |c| c.as_str()),
            remote_name: self
                .name
                .as_ref()
                .filter(|n| !n.name.is_empty())
                .map(|n| Cow::Borrowed(n.name.as_str())),
            remote_name_source: self
                .name
                .as_ref()
                .and_then(|n| n.source)
                .map(|s| s.as_str()),
            remote_name_other: self
                .name
                .as_ref()
                .filter(|n| !n.other.is_empty())
                .map(|n| Cow::Borrowed(n.other.as_str())),
            resolved_by_pid: self.name.as_ref().and_then(|n| n.resolved_by_pid),
            resolved_by_comm: self
                .name
                .as_ref()
                .and_then(|n| n.resolved_by_comm.as_deref())
                .map(text),
            resolved_at: self
                .name
                .as_ref()
                .and_then(|n| n.dns)
                .map(|(_, t)| rfc3339_ns(t)),
            ja4: self.name.as_ref().and_then(|n| n.ja4.as_deref()),
            cmdline_sha256,
            peer_cmdline_sha256,
        }
    }

    /// Both ends local: the comm of the process at the other end.
    pub fn peer_comm(&self) -> Option<&str> {
        self.peer_process.as_ref().map(|p| p.comm.as_str())
    }

    /// Packet and byte counters seen from the other local end: its `in`
    /// is this row's `out`.
    pub fn peer_counters(&self) -> [u64; 6] {
        let [pin, pout, bin, bout, ipin, ipout] = self.counters();
        [pout, pin, bout, bin, ipout, ipin]
    }
}

/// Everything the report writers need.
pub struct ReportInput<'a> {
    /// The bundle manifest.
    pub manifest: &'a Manifest,
    /// The socket timeline.
    pub timeline: &'a Timeline,
    /// One row per flow, in flow id order.
    pub rows: Vec<ConnectionRow>,
    /// Write CSV text cells as they were (`--csv-raw`): no `'` before a
    /// formula start, no escaping of control characters.
    pub csv_raw: bool,
}

/// Computes a community id for a flow.
pub type CommunityIdFn = dyn Fn(&Flow) -> String + Sync;

impl<'a> ReportInput<'a> {
    /// Builds the rows (in parallel; the result is in flow order). The
    /// flows and attributions are moved into the rows, not copied.
    pub fn new(
        manifest: &'a Manifest,
        timeline: &'a Timeline,
        flows: Vec<Flow>,
        attributions: Vec<Attribution>,
        community_id: &CommunityIdFn,
    ) -> ReportInput<'a> {
        use rayon::prelude::*;
        // One shared copy of each process record (and of each identity a
        // process had over time), not one copy per row: rows find theirs
        // by the address of the timeline's record.
        let records: std::collections::HashMap<usize, std::sync::Arc<ProcessRecord>> = timeline
            .processes
            .values()
            .chain(timeline.identities.values().flatten().map(|(_, p)| p))
            .map(|p| {
                (
                    p as *const ProcessRecord as usize,
                    std::sync::Arc::new(p.clone()),
                )
            })
            .collect();
        let shared =
            |p: &ProcessRecord| records.get(&(p as *const ProcessRecord as usize)).cloned();
        let row = |(f, a): (Flow, Attribution)| {
            // The owner as it was when it sent or read these bytes (an
            // exec or a new title changes it), else at the first packet.
            let at = a.ident_ns.unwrap_or(f.first_seen_ns);
            let process = a
                .owner
                .and_then(|o| timeline.identity_at(o.pid, o.start_time, at))
                .and_then(&shared);
            let peer_process = a.peer.as_ref().and_then(|p| {
                let o = p.owner?;
                let at = p.ident_ns.unwrap_or(f.first_seen_ns);
                timeline
                    .identity_at(o.pid, o.start_time, at)
                    .and_then(&shared)
            });
            // A process known only from events: the comm they carried.
            let event_comm = match (&process, a.owner) {
                (None, Some(o)) => timeline
                    .event_idents
                    .get(&(o.pid, o.start_time))
                    .map(|i| i.comm.clone()),
                _ => None,
            };
            // An event without the namespace (its process was gone when
            // the recorder handled it): the owner's record says it.
            let event_netns = a.event.and_then(|e| {
                timeline
                    .events
                    .get(e.index)
                    .and_then(|e| e.netns)
                    .or_else(|| process.as_ref().map(|p| p.netns).filter(|&n| n != 0))
            });
            let (process_start, entity) = match a.owner {
                // Without clk_tck a start time in ticks says no time.
                Some(o) if manifest.host.clk_tck == 0 => (
                    String::new(),
                    entity_id(&manifest.host.boot_id, o.pid, o.start_time),
                ),
                Some(o) => (
                    rfc3339_ns(process_start_ns(manifest, o.start_time)),
                    entity_id(&manifest.host.boot_id, o.pid, o.start_time),
                ),
                None => (String::new(), String::new()),
            };
            let socket_uid = a
                .socket
                .and_then(|s| timeline.sockets.get(s.index))
                .map(|s| s.uid);
            let community_id = community_id(&f);
            ConnectionRow {
                flow: f,
                local_is_a: a.local_is_a.unwrap_or(true),
                attribution: a,
                process,
                process_start,
                entity_id: entity,
                community_id,
                socket_uid,
                event_netns,
                event_comm,
                peer_process,
                name: None,
            }
        };
        // Rows are built a slice at a time from the end of the flows, each
        // slice's flows and attributions freed as its rows are made: at a
        // million flows, the inputs and the rows side by side would double
        // the peak. The rows come out last first and are turned round.
        const SLICE: usize = 1 << 16;
        let (mut flows, mut attributions) = (flows, attributions);
        let mut rows: Vec<ConnectionRow> = Vec::with_capacity(flows.len());
        while !flows.is_empty() {
            let at = flows.len().saturating_sub(SLICE);
            let fs = flows.split_off(at);
            let ats = attributions.split_off(at.min(attributions.len()));
            flows.shrink_to_fit();
            attributions.shrink_to_fit();
            let part: Vec<ConnectionRow> = fs.into_par_iter().zip(ats).map(&row).collect();
            rows.extend(part.into_iter().rev());
        }
        rows.reverse();
        ReportInput {
            manifest,
            timeline,
            rows,
            csv_raw: false,
        }
    }

    /// Per-process totals plus one row per unattribution reason present:
    /// processes first, by total bytes (in + out) descending, then pid and
    /// start time; then the reasons, by bytes descending, then reason order.
    pub fn process_rows(&self) -> Vec<ProcessRow> {
        let mut by: BTreeMap<(u8, u32, u64), ProcessRow> = BTreeMap::new();
        for r in &self.rows {
            let key = match (r.attribution.owner, r.attribution.method) {
                (Some(o), _) => (0u8, o.pid, o.start_time),
                (None, Method::Unattributed(reason)) => {
                    let idx = Reason::ALL.iter().position(|x| *x == reason).unwrap_or(0);
                    (1u8, 0, idx as u64)
                }
                (None, _) => (1u8, 0, 0),
            };
            let e = by.entry(key).or_insert_with(|| ProcessRow {
                owner: r.attribution.owner,
                method: r.attribution.method,
                process: r.process.clone(),
                event_comm: r.event_comm.clone(),
                process_start: r.process_start.clone(),
                entity_id: r.entity_id.clone(),
                connections: 0,
                counters: [0; 6],
                first_seen_ns: r.flow.first_seen_ns,
                last_seen_ns: r.flow.last_seen_ns,
                ja4: Vec::new(),
            });
            if let Some(j) = r.name.as_ref().and_then(|n| n.ja4.as_ref()) {
                if !e.ja4.contains(j) && e.ja4.len() < crate::names::MAX_JA4_PER_PROCESS {
                    e.ja4.push(j.clone());
                }
            }
            e.connections += 1;
            for (t, c) in e.counters.iter_mut().zip(r.counters()) {
                *t += c;
            }
            e.first_seen_ns = e.first_seen_ns.min(r.flow.first_seen_ns);
            e.last_seen_ns = e.last_seen_ns.max(r.flow.last_seen_ns);
        }
        let mut rows: Vec<((u8, u32, u64), ProcessRow)> = by.into_iter().collect();
        // The map's key order (pid, start; reason) breaks byte ties.
        rows.sort_by(|(ka, a), (kb, b)| {
            let total = |r: &ProcessRow| r.counters[2] + r.counters[3];
            ka.0.cmp(&kb.0)
                .then(total(b).cmp(&total(a)))
                .then(ka.cmp(kb))
        });
        rows.into_iter().map(|(_, r)| r).collect()
    }
}

/// One row of `processes.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessRow {
    /// The process, or `None` for an unattributed-reason row.
    pub owner: Option<ProcKey>,
    /// For reason rows, the `unattributed:REASON` method.
    pub method: Method,
    /// Its record.
    pub process: Option<std::sync::Arc<ProcessRecord>>,
    /// Its comm as its events gave it, when it has no record.
    pub event_comm: Option<String>,
    /// RFC 3339 start.
    pub process_start: String,
    /// Entity id.
    pub entity_id: String,
    /// Number of flows.
    pub connections: u64,
    /// Summed counters, as [`ConnectionRow::counters`].
    pub counters: [u64; 6],
    /// Earliest flow start, ns.
    pub first_seen_ns: i64,
    /// Latest flow end, ns.
    pub last_seen_ns: i64,
    /// Distinct JA4 fingerprints of its flows, in order of first use
    /// (at most [`crate::names::MAX_JA4_PER_PROCESS`]).
    pub ja4: Vec<String>,
}

/// Writes `bytes` to `out`; the writer that also hashes.
pub struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps a writer.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Flushes and returns (hex SHA-256, byte count, inner writer).
    pub fn finish(mut self) -> io::Result<(String, u64, W)> {
        self.inner.flush()?;
        Ok((hex(&self.hasher.finalize()), self.bytes, self.inner))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(buf.get(..n).unwrap_or(buf));
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            shell_join(&v(&["curl", "-s", "http://a/b?c=d"])),
            "curl -s 'http://a/b?c=d'"
        );
        assert_eq!(
            shell_join(&v(&["sh", "-c", "echo it's"])),
            r"sh -c 'echo it'\''s'"
        );
        assert_eq!(shell_join(&v(&["x", ""])), "x ''");
    }

    #[test]
    fn csv_header_comes_from_the_row_struct_also_without_rows() {
        let mut out = Vec::new();
        write_csv_rows(&mut out, Vec::<ConnectionCsvRow>::new()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "flow_id,proto,family,local_ip,local_port,remote_ip,remote_port,first_seen,\
             last_seen,packets_in,packets_out,bytes_in,bytes_out,pid,process_start,ppid,uid,\
             comm,exe,cmdline,netns,method,time_gap_ms,shared_with,direction,confidence,\
             socket_state,inode,socket_uid,entity_id,community_id,ip_bytes_in,ip_bytes_out,\
             duration_ms,process_start_ticks,container_id,icmp_type,icmp_code,both_local,note,parent_flow_id,\
             nat,nat_local_ip,nat_local_port,nat_remote_ip,nat_remote_port,\
             peer_pid,peer_process_start_ticks,peer_comm,peer_cmdline,peer_method,peer_confidence,\
             remote_name,remote_name_source,remote_name_other,resolved_by_pid,\
             resolved_by_comm,resolved_at,ja4,cmdline_sha256,peer_cmdline_sha256\n"
        );
        let mut out = Vec::new();
        write_csv_rows(&mut out, Vec::<processes_csv::ProcessCsvRow>::new()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "pid,process_start,ppid,uid,comm,exe,cmdline,connections,packets_in,packets_out,\
             bytes_in,bytes_out,first_seen,last_seen,process_start_ticks,entity_id,\
             ip_bytes_in,ip_bytes_out,container_id,ja4\n"
        );
    }

    #[test]
    fn a_long_command_line_is_cut_on_a_row_with_the_hash_of_the_whole() {
        let short = vec!["curl".to_string(), "-s".to_string()];
        assert_eq!(row_cmdline(&short), ("curl -s".to_string(), None));
        assert_eq!(
            row_args(&short),
            (vec![Cow::from("curl"), Cow::from("-s")], false)
        );
        // A multi-byte character across the bound is not split.
        let long = vec!["python3".to_string(), "é".repeat(ROW_CMDLINE_MAX)];
        let whole = shell_join(&long);
        let (text, hash) = row_cmdline(&long);
        assert!(text.len() <= ROW_CMDLINE_MAX + '…'.len_utf8());
        assert!(text.ends_with('…'));
        assert!(whole.starts_with(text.trim_end_matches('…')));
        assert_eq!(hash.unwrap(), hex(&Sha256::digest(whole.as_bytes())));
        let (args, cut) = row_args(&long);
        assert!(cut);
        assert_eq!(args[0], "python3");
        assert!(args[1].len() <= ROW_CMDLINE_MAX - 7 + '…'.len_utf8());
        // Arguments past the bound are left out.
        let many = vec!["x".repeat(ROW_CMDLINE_MAX), "y".to_string()];
        let (args, cut) = row_args(&many);
        assert!(cut);
        assert_eq!(args.len(), 1);
        assert_eq!(row_text("abc", 2), "ab…");
        assert_eq!(row_text("abc", 3), "abc");
    }

    #[test]
    fn entity_id_depends_on_all_three() {
        let a = entity_id("b", 1, 2);
        assert_eq!(a.len(), 32);
        assert_ne!(a, entity_id("b", 1, 3));
        assert_ne!(a, entity_id("c", 1, 2));
        assert_ne!(a, entity_id("b", 2, 2));
    }
}
