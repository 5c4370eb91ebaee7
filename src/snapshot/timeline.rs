//! The socket timeline: /proc state reconstructed snapshot by snapshot and
//! folded into runs.
//!
//! The state is applied by the format's own reader
//! (`procflow_format::reader::State`: a keyframe replaces the state, a delta
//! applies its changes, an `unchanged` table keeps its rows); this module
//! decides what is kept of it (tcp and udp rows, parsed with the host's byte
//! order) and words its problems. After each snapshot every socket and
//! every (inode, process) holding present in the state extends its current
//! run or starts a new one, so memory grows with the number of distinct
//! sockets and of their appearances, not with sockets × snapshots.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use procflow_format::delta::{FdEntry, FdStatus, RowKeeper};
use procflow_format::layout::{
    ClockReading, EventRecord, ProcessRecord, SnapshotMeta, TableStored,
};
use procflow_format::reader::{Problem, ProblemKind, Snapshot, State};

use super::procnet::{parse_row, ByteOrder, ProcNetRow, STATE_LISTEN};
use super::SnapshotDiagnostics;

/// Transport protocol of a socket table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    /// tcp / tcp6.
    Tcp,
    /// udp / udp6.
    Udp,
}

impl Transport {
    /// The transport of a table name; `None` for raw and icmp tables, which
    /// the join does not use.
    pub fn of_table(table: &str) -> Option<Transport> {
        match table {
            "tcp" | "tcp6" => Some(Transport::Tcp),
            "udp" | "udp6" => Some(Transport::Udp),
            _ => None,
        }
    }

    /// IANA protocol number.
    pub fn proto(self) -> u8 {
        match self {
            Transport::Tcp => crate::flow::ipproto::TCP,
            Transport::Udp => crate::flow::ipproto::UDP,
        }
    }
}

/// Identity of a socket across snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SocketKey {
    /// Network namespace inode the table was read in.
    pub netns: u64,
    /// tcp or udp.
    pub transport: Transport,
    /// Local endpoint as printed (IPv4-mapped addresses kept as such).
    pub local: SocketAddr,
    /// Remote endpoint as printed.
    pub remote: SocketAddr,
    /// Socket inode, 0 for rows without one.
    pub inode: u64,
}

/// A stretch of consecutive snapshots in which something was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// `before` realtime clock of the first snapshot of the run, ns.
    pub start_ns: i64,
    /// `after` realtime clock of the last snapshot of the run, ns.
    pub end_ns: i64,
    /// Sequence number of the first snapshot.
    pub first_seq: u64,
    /// Sequence number of the last snapshot.
    pub last_seq: u64,
    /// State at the last snapshot (sockets only).
    pub state: u8,
}

impl Run {
    /// Distance in ns between this run and `[t0, t1]`; 0 when they overlap.
    pub fn gap(&self, t0: i64, t1: i64) -> i64 {
        if t1 < self.start_ns {
            self.start_ns.saturating_sub(t1)
        } else if t0 > self.end_ns {
            t0.saturating_sub(self.end_ns)
        } else {
            0
        }
    }

    /// Length in ns of the overlap of this run with `[t0, t1]`.
    pub fn overlap(&self, t0: i64, t1: i64) -> i64 {
        let a = self.start_ns.max(t0);
        let b = self.end_ns.min(t1);
        b.saturating_sub(a).max(0)
    }
}

/// Appends snapshot `seq` to a list of runs: extends the last run when it
/// ended at `seq - 1`, else starts a new one.
pub(super) fn see(runs: &mut Vec<Run>, seq: u64, t0: i64, t1: i64, state: u8) {
    match runs.last_mut() {
        Some(r) if r.last_seq == seq => r.state = state,
        Some(r) if r.last_seq.checked_add(1) == Some(seq) => {
            r.end_ns = t1;
            r.last_seq = seq;
            r.state = state;
        }
        _ => runs.push(Run {
            start_ns: t0,
            end_ns: t1,
            first_seq: seq,
            last_seq: seq,
            state,
        }),
    }
}

/// A socket and when it was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socket {
    /// Its identity.
    pub key: SocketKey,
    /// Owning uid from the table row.
    pub uid: u32,
    /// When it was seen, in time order.
    pub runs: Vec<Run>,
}

/// A process holding a socket inode, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks since boot.
    pub start_time: u64,
    /// The process' network namespace.
    pub netns: u64,
    /// When it held the inode.
    pub runs: Vec<Run>,
}

/// A process whose fd directory could not be read, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks (0 if unknown).
    pub start_time: u64,
    /// Errno name.
    pub error: String,
    /// When it was unreadable.
    pub runs: Vec<Run>,
}

/// What a socket event says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    /// TCP active open, in the connecting process' context.
    Connect,
    /// TCP connection accepted.
    Accept,
    /// A datagram sent (UDP), in the sending process' context.
    Send,
    /// A socket looked up when the first packet of its flow was seen.
    Lookup,
    /// The socket was closed.
    Close,
    /// A TCP socket began listening (no remote end: kept, not matched to
    /// flows).
    Listen,
}

impl EventKind {
    /// The kind of an [`EventRecord::kind`]; `None` for kinds this analyzer
    /// does not know (counted, not used).
    pub fn parse(kind: &str) -> Option<EventKind> {
        Some(match kind {
            "connect" => EventKind::Connect,
            "accept" => EventKind::Accept,
            "send" => EventKind::Send,
            "lookup" => EventKind::Lookup,
            "close" => EventKind::Close,
            "listen" => EventKind::Listen,
            _ => return None,
        })
    }
}

/// One socket event of the recorder's event sources, its time converted to
/// the realtime clock of the capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SockEvent {
    /// Realtime ns: the event's CLOCK_MONOTONIC plus the (realtime -
    /// monotonic) offset of the snapshot that carries it.
    pub t_ns: i64,
    /// What happened.
    pub kind: EventKind,
    /// Index into [`Timeline::event_sources`].
    pub source: usize,
    /// Process id.
    pub pid: u32,
    /// Start time of the process (clock ticks since boot); from the event,
    /// else from the only process record of that pid; 0 when unknown.
    pub start_time: u64,
    /// Whether `start_time` is known.
    pub start_known: bool,
    /// Namespace of the process, when known.
    pub netns: Option<u64>,
    /// tcp or udp.
    pub transport: Transport,
    /// Local endpoint (canonical form; the address may be unspecified).
    pub local: SocketAddr,
    /// Remote endpoint (canonical form), when the socket had one.
    pub remote: Option<SocketAddr>,
    /// Socket inode, when the source knew it.
    pub inode: Option<u64>,
    /// Sequence number of the snapshot that carried it.
    pub seq: u64,
}

/// A process known only from socket events (no process record of it was
/// written): what the events said about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventIdent {
    /// The comm the event carried.
    pub comm: String,
    /// Its network namespace, when the event carried it.
    pub netns: Option<u64>,
}

/// A process record replaced by a different program for the same (pid,
/// start time): an execve between two sightings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecChange {
    /// Realtime ns of the snapshot that first showed the new program.
    pub t_ns: i64,
    /// The comm before.
    pub old_comm: String,
    /// The comm after.
    pub new_comm: String,
}

/// Whether `new` (a later record of the same process) lost what `old` had:
/// a process read while exiting has no exe, an empty command line and is
/// re-parented to 1 (or a subreaper).
fn degraded(old: &ProcessRecord, new: &ProcessRecord) -> bool {
    (old.exe.is_some() && new.exe.is_none()) || (!old.cmdline.is_empty() && new.cmdline.is_empty())
}

/// Clock readings of one applied snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapTime {
    /// Sequence number.
    pub seq: u64,
    /// Clocks before the tables were read.
    pub before: ClockReading,
    /// Clocks after the fd walk.
    pub after: ClockReading,
}

/// What the analyzer keeps of the snapshots: only tcp and udp tables, each
/// row parsed with the host's byte order and, once known, the index of its
/// socket (so a row present in many snapshots is looked up once, not once
/// per snapshot); beside each fd entry, once known, the holder index of
/// each inode it holds.
#[derive(Debug, Clone, Copy)]
struct ProcRows {
    order: ByteOrder,
}

impl RowKeeper for ProcRows {
    type Row = (ProcNetRow, Option<usize>);
    type Memo = Option<Vec<usize>>;

    fn keeps(&self, table: &str) -> bool {
        Transport::of_table(table).is_some()
    }

    fn row(&self, line: &str) -> Result<Option<Self::Row>, String> {
        match parse_row(line, self.order) {
            Ok(row) => Ok(row.map(|r| (r, None))),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Builds a [`Timeline`] from snapshots applied in order.
#[derive(Debug)]
pub struct TimelineBuilder {
    state: State<ProcRows>,
    sockets: Vec<Socket>,
    socket_index: HashMap<SocketKey, usize>,
    holders: Vec<(u64, Holder)>,
    holder_index: HashMap<(u64, u32, u64), usize>,
    denied: Vec<Denied>,
    denied_index: HashMap<(u32, u64), usize>,
    processes: HashMap<(u32, u64), ProcessRecord>,
    exec_changes: HashMap<(u32, u64), Vec<ExecChange>>,
    snapshots: Vec<SnapTime>,
    events: Vec<SockEvent>,
    event_sources: Vec<String>,
    event_idents: HashMap<(u32, u64), EventIdent>,
    unusable_events: u64,
    conntrack: super::conntrack::CtBuilder,
    nsfiles: super::nsfiles::NsFilesBuilder,
    uses: super::uses::UseBuilder,
    identities: HashMap<(u32, u64), Vec<(i64, ProcessRecord)>>,
}

impl TimelineBuilder {
    /// A builder for text written on a host of the given byte order.
    pub fn new(order: ByteOrder) -> TimelineBuilder {
        TimelineBuilder {
            state: State::new(ProcRows { order }),
            sockets: Vec::new(),
            socket_index: HashMap::new(),
            holders: Vec::new(),
            holder_index: HashMap::new(),
            denied: Vec::new(),
            denied_index: HashMap::new(),
            processes: HashMap::new(),
            exec_changes: HashMap::new(),
            snapshots: Vec::new(),
            events: Vec::new(),
            event_sources: Vec::new(),
            event_idents: HashMap::new(),
            unusable_events: 0,
            conntrack: Default::default(),
            nsfiles: Default::default(),
            uses: Default::default(),
            identities: HashMap::new(),
        }
    }

    /// Sequence number of the last snapshot applied.
    pub fn last_seq(&self) -> Option<u64> {
        self.state.last_seq
    }

    /// Applies one complete snapshot read from `archive` (named in
    /// diagnostics) on top of the current state, then extends the runs of
    /// everything present.
    pub fn apply(&mut self, archive: &str, snap: &Snapshot, diag: &mut SnapshotDiagnostics) {
        let applied = self.state.apply(snap);
        for p in applied.problems {
            report(archive, snap.meta.seq, p, diag);
        }
        if !applied.applied {
            return;
        }
        let t_ns = snap.meta.before.realtime_ns;
        let offset = snap
            .meta
            .before
            .realtime_ns
            .saturating_sub(snap.meta.before.monotonic_ns);
        for p in applied.processes {
            self.identity(offset, &p);
            self.process_record(t_ns, p);
        }
        for r in &applied.sockuse {
            self.uses.record(offset, r);
        }
        for e in &applied.events {
            self.event(snap.meta.seq, offset, e);
        }
        self.conntrack.apply(archive, snap, diag);
        self.nsfiles.apply(archive, snap, diag);
        self.extend(&snap.meta);
    }

    /// Keeps the most complete record of a (pid, start time). A later
    /// record naming another program (comm, exe or command line changed,
    /// nothing lost) was written after an execve: it supersedes the earlier
    /// one, so a forked-then-exec'd process is named by the program it
    /// became, and the change is kept. A later record that lost its exe or
    /// command line was read while the process was exiting: the earlier,
    /// complete one stays.
    fn process_record(&mut self, t_ns: i64, p: ProcessRecord) {
        let key = (p.pid, p.start_time);
        match self.processes.get_mut(&key) {
            None => {
                self.processes.insert(key, p);
            }
            Some(old) if degraded(old, &p) => {}
            Some(old) => {
                if old.comm != p.comm || old.exe != p.exe || old.cmdline != p.cmdline {
                    self.exec_changes.entry(key).or_default().push(ExecChange {
                        t_ns,
                        old_comm: old.comm.clone(),
                        new_comm: p.comm.clone(),
                    });
                }
                *old = p;
            }
        }
    }

    /// Keeps a process record that says when it was read (`seen_ns`) or
    /// which exec it follows (`exec_ns`) in the process' identity history:
    /// the identity in force at a time is the latest record from before it.
    /// A record read while the process was exiting adds nothing.
    fn identity(&mut self, offset: i64, p: &ProcessRecord) {
        let Some(mono) = p.exec_ns.or(p.seen_ns) else {
            return;
        };
        let from = mono.saturating_add(offset);
        let h = self.identities.entry((p.pid, p.start_time)).or_default();
        let pos = h.partition_point(|(t, _)| *t <= from);
        let before = pos.checked_sub(1).and_then(|i| h.get(i));
        if before.is_some_and(|(_, old)| degraded(old, p)) {
            return;
        }
        // The same identity read again adds nothing either.
        let same = |old: &ProcessRecord| {
            old.comm == p.comm && old.exe == p.exe && old.cmdline == p.cmdline && old.uid == p.uid
        };
        if before.is_some_and(|(_, old)| same(old)) {
            return;
        }
        h.insert(pos, (from, p.clone()));
    }

    /// Keeps one socket event, its time converted to realtime with the
    /// carrying snapshot's clock offset. Events of unknown kind or protocol,
    /// or with an unparsable address, are counted as unusable.
    fn event(&mut self, seq: u64, offset: i64, e: &EventRecord) {
        let transport = match e.proto.as_str() {
            "tcp" => Some(Transport::Tcp),
            "udp" => Some(Transport::Udp),
            _ => None,
        };
        let local = e.local_ip.parse::<IpAddr>().ok();
        let remote = match (&e.remote_ip, e.remote_port) {
            (Some(ip), Some(port)) => match ip.parse::<IpAddr>() {
                Ok(ip) => Some(Some(SocketAddr::new(ip.to_canonical(), port))),
                Err(_) => None,
            },
            _ => Some(None),
        };
        let (Some(kind), Some(transport), Some(local), Some(remote)) =
            (EventKind::parse(&e.kind), transport, local, remote)
        else {
            self.unusable_events += 1;
            return;
        };
        let source = match self.event_sources.iter().position(|s| *s == e.source) {
            Some(i) => i,
            None => {
                self.event_sources.push(e.source.clone());
                self.event_sources.len() - 1
            }
        };
        if let (Some(st), Some(comm)) = (e.start_time, &e.comm) {
            self.event_idents
                .entry((e.pid, st))
                .or_insert_with(|| EventIdent {
                    comm: comm.clone(),
                    netns: e.netns,
                });
        }
        self.events.push(SockEvent {
            t_ns: e.mono_ns.saturating_add(offset),
            kind,
            source,
            pid: e.pid,
            start_time: e.start_time.unwrap_or(0),
            start_known: e.start_time.is_some(),
            netns: e.netns.filter(|&n| n != 0),
            transport,
            local: SocketAddr::new(local.to_canonical(), e.local_port),
            remote,
            inode: e.inode.filter(|&i| i != 0),
            seq,
        });
    }

    fn extend(&mut self, meta: &SnapshotMeta) {
        let seq = meta.seq;
        let (t0, t1) = (meta.before.realtime_ns, meta.after.realtime_ns);
        self.snapshots.push(SnapTime {
            seq,
            before: meta.before,
            after: meta.after,
        });
        for ((netns, table), rows) in &mut self.state.tables {
            let Some(transport) = Transport::of_table(table) else {
                continue;
            };
            for (row, cached) in rows.rows.values_mut() {
                let idx = match *cached {
                    Some(i) => i,
                    None => {
                        let key = SocketKey {
                            netns: *netns,
                            transport,
                            local: row.local,
                            remote: row.remote,
                            inode: row.inode,
                        };
                        let i = *self.socket_index.entry(key).or_insert_with(|| {
                            self.sockets.push(Socket {
                                key,
                                uid: row.uid,
                                runs: Vec::new(),
                            });
                            self.sockets.len() - 1
                        });
                        *cached = Some(i);
                        i
                    }
                };
                if let Some(s) = self.sockets.get_mut(idx) {
                    see(&mut s.runs, seq, t0, t1, row.state);
                }
            }
        }
        for (&pid, e) in &mut self.state.fds {
            let FdEntry {
                start_time,
                netns,
                status,
                memo,
            } = e;
            let start_time = *start_time;
            let inodes = match status {
                FdStatus::Holds(inodes) => inodes,
                FdStatus::Denied(error) => {
                    let idx = *self
                        .denied_index
                        .entry((pid, start_time))
                        .or_insert_with(|| {
                            self.denied.push(Denied {
                                pid,
                                start_time,
                                error: error.clone(),
                                runs: Vec::new(),
                            });
                            self.denied.len() - 1
                        });
                    if let Some(d) = self.denied.get_mut(idx) {
                        see(&mut d.runs, seq, t0, t1, 0);
                    }
                    continue;
                }
            };
            let indexes = memo.get_or_insert_with(|| {
                inodes
                    .iter()
                    .map(|&inode| {
                        *self
                            .holder_index
                            .entry((inode, pid, start_time))
                            .or_insert_with(|| {
                                self.holders.push((
                                    inode,
                                    Holder {
                                        pid,
                                        start_time,
                                        netns: *netns,
                                        runs: Vec::new(),
                                    },
                                ));
                                self.holders.len() - 1
                            })
                    })
                    .collect()
            });
            for &idx in indexes.iter() {
                if let Some((_, h)) = self.holders.get_mut(idx) {
                    see(&mut h.runs, seq, t0, t1, 0);
                }
            }
        }
    }

    /// Finishes the timeline: sorts everything by identity (so nothing
    /// depends on hash order) and builds the lookup indexes.
    pub fn finish(self) -> Timeline {
        let mut sockets = self.sockets;
        sockets.sort_by_key(|s| s.key);
        let inet_inodes: HashSet<u64> = sockets
            .iter()
            .map(|s| s.key.inode)
            .filter(|&i| i != 0)
            .collect();
        let mut holders: HashMap<u64, Vec<Holder>> = HashMap::new();
        for (inode, h) in self.holders {
            // Unix and netlink sockets are in the fd listings too; only
            // inodes seen in a tcp/udp table matter to the join.
            if inet_inodes.contains(&inode) {
                holders.entry(inode).or_default().push(h);
            }
        }
        for v in holders.values_mut() {
            v.sort_by_key(|h| (h.start_time, h.pid));
        }
        let mut denied = self.denied;
        denied.sort_by_key(|d| (d.pid, d.start_time));
        let mut exact: HashMap<(Transport, SocketAddr, SocketAddr), Vec<usize>> = HashMap::new();
        let mut bound: HashMap<(Transport, u16), Vec<usize>> = HashMap::new();
        let mut netns_addrs: HashMap<u64, HashSet<IpAddr>> = HashMap::new();
        for (i, s) in sockets.iter().enumerate() {
            let k = &s.key;
            let local = SocketAddr::new(k.local.ip().to_canonical(), k.local.port());
            let remote = SocketAddr::new(k.remote.ip().to_canonical(), k.remote.port());
            if !remote.ip().is_unspecified() || remote.port() != 0 {
                exact
                    .entry((k.transport, local, remote))
                    .or_default()
                    .push(i);
            }
            let listening = match k.transport {
                Transport::Tcp => s.runs.iter().any(|r| r.state == STATE_LISTEN),
                Transport::Udp => remote.ip().is_unspecified() && remote.port() == 0,
            };
            if listening {
                bound
                    .entry((k.transport, local.port()))
                    .or_default()
                    .push(i);
            }
            if !local.ip().is_unspecified() {
                netns_addrs.entry(k.netns).or_default().insert(local.ip());
            }
        }
        let mut netns_sorted: Vec<u64> = sockets.iter().map(|s| s.key.netns).collect();
        netns_sorted.sort_unstable();
        netns_sorted.dedup();
        // Events: a process gone before its event was handled has no start
        // time in it; the only record of that pid names it, else it stays
        // unknown (0).
        let mut by_pid: HashMap<u32, Vec<u64>> = HashMap::new();
        for &(pid, st) in self.processes.keys() {
            by_pid.entry(pid).or_default().push(st);
        }
        let mut events = self.events;
        for e in events.iter_mut().filter(|e| !e.start_known) {
            if let Some([st]) = by_pid.get(&e.pid).map(Vec::as_slice) {
                e.start_time = *st;
                e.start_known = true;
            }
        }
        events.sort_by(|x, y| {
            (x.t_ns, x.seq, x.pid, x.kind, x.local, x.remote)
                .cmp(&(y.t_ns, y.seq, y.pid, y.kind, y.local, y.remote))
        });
        let mut event_index: HashMap<(Transport, u16, SocketAddr), Vec<usize>> = HashMap::new();
        for (i, e) in events.iter().enumerate() {
            if let Some(r) = e.remote {
                event_index
                    .entry((e.transport, e.local.port(), r))
                    .or_default()
                    .push(i);
            }
        }
        // An event's namespace uses its local address too: a container
        // whose sockets all lived between two snapshots is still found by
        // its address (traffic between containers seen on a bridge).
        for e in &events {
            if let Some(ns) = e.netns.filter(|_| !e.local.ip().is_unspecified()) {
                netns_addrs.entry(ns).or_default().insert(e.local.ip());
                netns_sorted.push(ns);
            }
        }
        netns_sorted.sort_unstable();
        netns_sorted.dedup();
        let uses = {
            let by_pid = &by_pid;
            self.uses
                .finish(|pid| match by_pid.get(&pid).map(Vec::as_slice) {
                    Some([st]) => Some(*st),
                    _ => None,
                })
        };
        let identities = self
            .identities
            .into_iter()
            .filter(|(_, h)| h.len() > 1)
            .collect();
        let processes = self.processes;
        let event_idents = self
            .event_idents
            .into_iter()
            .filter(|(k, _)| !processes.contains_key(k))
            .collect();
        Timeline {
            uses,
            identities,
            conntrack: self.conntrack.finish(),
            nsfiles: self.nsfiles.finish(),
            events,
            event_index,
            event_sources: self.event_sources,
            event_idents,
            unusable_events: self.unusable_events,
            exec_changes: self.exec_changes,
            netns_sorted,
            sockets,
            holders,
            denied,
            processes,
            snapshots: self.snapshots,
            exact,
            bound,
            netns_addrs,
        }
    }
}

/// Puts a problem met while applying a snapshot into the diagnostics, in
/// the analyzer's words.
fn report(archive: &str, seq: u64, p: Problem, diag: &mut SnapshotDiagnostics) {
    let word = |stored| match stored {
        TableStored::Full => "full",
        TableStored::Delta => "delta",
        TableStored::Unchanged => "unchanged",
        TableStored::Missing => "missing",
    };
    let text = match p.kind {
        ProblemKind::BadLine(reason) if p.more > 0 => {
            // The unusable lines past the listed ones: counted only.
            diag.bad_lines = diag.bad_lines.saturating_add(p.more);
            let _ = reason;
            return;
        }
        ProblemKind::BadLine(reason) => {
            diag.bad_line(archive, &p.member, p.line, reason);
            return;
        }
        // The echo of an earlier bad line (a removal of a row that could
        // not be parsed) or of a pid reused: nothing more to say.
        ProblemKind::Mismatch(_) => return,
        ProblemKind::OutOfOrder { last } => {
            diag.out_of_order(archive, seq, last);
            return;
        }
        ProblemKind::DeltaFirst => format!(
            "{archive}: snapshot {seq} is a delta without a preceding snapshot; \
             applied to an empty state"
        ),
        ProblemKind::TableAbsent {
            netns,
            table,
            stored,
        } => format!(
            "{archive}: snapshot {seq} lists {table} of netns {netns} as {}, \
             but the member is absent; table treated as unknown",
            word(stored)
        ),
        ProblemKind::NoBase {
            netns,
            table,
            stored: TableStored::Unchanged,
        } => format!(
            "{archive}: snapshot {seq} says {table} of netns {netns} is unchanged, \
             but no earlier rows are known"
        ),
        ProblemKind::NoBase { .. } => format!(
            "{archive}: {} is a delta without a base table; applied to an empty table",
            p.member
        ),
        ProblemKind::NotSelfContained {
            netns,
            table,
            stored,
        } => format!(
            "{archive}: keyframe {seq} stores {table} of netns {netns} as {}; \
             applied to the earlier rows",
            word(stored)
        ),
        ProblemKind::KeyframeWithoutFds => {
            format!("{archive}: keyframe {seq} has no fd listing; no owners known at that time")
        }
    };
    diag.warn(text);
}

/// The reconstructed history of sockets and their owners.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// Every tcp/udp socket seen, sorted by key.
    pub sockets: Vec<Socket>,
    /// Per socket inode, the processes that held it, sorted by start time.
    pub holders: HashMap<u64, Vec<Holder>>,
    /// Processes whose fd directory could not be read, and when.
    pub denied: Vec<Denied>,
    /// Process records by (pid, start time).
    pub processes: HashMap<(u32, u64), ProcessRecord>,
    /// Clock readings of every applied snapshot, in order.
    pub snapshots: Vec<SnapTime>,
    /// Socket events of the recorder's event sources, in time order.
    pub events: Vec<SockEvent>,
    /// Names of the event sources, as the events name them.
    pub event_sources: Vec<String>,
    /// Processes known only from events (no process record), by (pid,
    /// start time).
    pub event_idents: HashMap<(u32, u64), EventIdent>,
    /// Events of a kind, protocol or address this analyzer cannot use.
    pub unusable_events: u64,
    /// Program changes (execve) seen in the process records of a (pid,
    /// start time), in order.
    pub exec_changes: HashMap<(u32, u64), Vec<ExecChange>>,
    /// Conntrack entries of every namespace, for flows seen after NAT.
    pub conntrack: super::conntrack::CtTimeline,
    /// Each namespace's /etc/hosts and /etc/resolv.conf, when recorded.
    pub nsfiles: super::nsfiles::NsFiles,
    /// Who sent and read on which socket (`sockuse.jsonl`).
    pub uses: super::uses::UseIndex,
    /// Processes recorded as more than one identity with the time each
    /// took effect (realtime ns: the exec, else when it was read), in time
    /// order: the program and title of a process as a function of time.
    pub identities: HashMap<(u32, u64), Vec<(i64, ProcessRecord)>>,
    event_index: HashMap<(Transport, u16, SocketAddr), Vec<usize>>,
    exact: HashMap<(Transport, SocketAddr, SocketAddr), Vec<usize>>,
    bound: HashMap<(Transport, u16), Vec<usize>>,
    netns_addrs: HashMap<u64, HashSet<IpAddr>>,
    netns_sorted: Vec<u64>,
}

impl Timeline {
    /// Sockets whose (canonical) local and remote endpoints are exactly
    /// these, in any namespace.
    pub fn exact(&self, t: Transport, local: SocketAddr, remote: SocketAddr) -> &[usize] {
        let local = SocketAddr::new(local.ip().to_canonical(), local.port());
        let remote = SocketAddr::new(remote.ip().to_canonical(), remote.port());
        self.exact
            .get(&(t, local, remote))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Events (indexes into [`Timeline::events`], in time order) of a
    /// socket with this local port and remote endpoint, whatever the local
    /// address and namespace.
    pub fn events_for(&self, t: Transport, local_port: u16, remote: SocketAddr) -> &[usize] {
        let remote = SocketAddr::new(remote.ip().to_canonical(), remote.port());
        self.event_index
            .get(&(t, local_port, remote))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// LISTEN tcp sockets or unconnected udp sockets bound to this port, on
    /// any address, in any namespace.
    pub fn bound(&self, t: Transport, port: u16) -> &[usize] {
        self.bound.get(&(t, port)).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether a namespace has a socket whose local address is `ip`
    /// (canonical form).
    pub fn netns_has_addr(&self, netns: u64, ip: IpAddr) -> bool {
        self.netns_addrs
            .get(&netns)
            .is_some_and(|s| s.contains(&ip.to_canonical()))
    }

    /// Every namespace with a tcp/udp socket, sorted.
    pub fn netns_list(&self) -> &[u64] {
        &self.netns_sorted
    }

    /// When the socket of `run` can have existed: after the `before` clock
    /// of the last snapshot that did not show it yet (it was created after
    /// that table read began) and before the `after` clock of the first
    /// snapshot that no longer showed it. Unbounded on a side without such
    /// a snapshot (`i64::MIN`, `i64::MAX`).
    pub fn possible_life(&self, run: &Run) -> (i64, i64) {
        let i = self.snapshots.partition_point(|s| s.seq < run.first_seq);
        let birth = i
            .checked_sub(1)
            .and_then(|k| self.snapshots.get(k))
            .map_or(i64::MIN, |s| s.before.realtime_ns);
        let j = self.snapshots.partition_point(|s| s.seq <= run.last_seq);
        let death = self
            .snapshots
            .get(j)
            .map_or(i64::MAX, |s| s.after.realtime_ns);
        (birth, death)
    }

    /// The identity of process (pid, start time) at realtime `t_ns`: the
    /// latest identity that took effect at or before it, else the first
    /// one; without a history, its one (most complete) process record.
    pub fn identity_at(&self, pid: u32, start_time: u64, t_ns: i64) -> Option<&ProcessRecord> {
        match self.identities.get(&(pid, start_time)) {
            Some(h) if !h.is_empty() => {
                let i = h.partition_point(|(t, _)| *t <= t_ns);
                h.get(i.saturating_sub(1)).map(|(_, p)| p)
            }
            _ => self.processes.get(&(pid, start_time)),
        }
    }

    /// When the identity in force at `t_ns` took effect (see
    /// [`Timeline::identity_at`]); `None` without a history.
    pub fn identity_since(&self, pid: u32, start_time: u64, t_ns: i64) -> Option<i64> {
        let h = self.identities.get(&(pid, start_time))?;
        let i = h.partition_point(|(t, _)| *t <= t_ns);
        h.get(i.saturating_sub(1)).map(|(t, _)| *t)
    }

    /// Realtime range covered by the snapshots: first `before` to last
    /// `after`, ns.
    pub fn time_range(&self) -> Option<(i64, i64)> {
        let first = self.snapshots.first()?;
        let last = self.snapshots.last()?;
        Some((first.before.realtime_ns, last.after.realtime_ns))
    }

    /// The largest change of (realtime - monotonic) between consecutive
    /// snapshots: a CLOCK_REALTIME step (NTP, manual). Returns the step in ns
    /// (signed) and the sequence number of the snapshot after it.
    pub fn largest_clock_step(&self) -> Option<(i64, u64)> {
        let off = |c: &ClockReading| c.realtime_ns.saturating_sub(c.monotonic_ns);
        self.snapshots
            .windows(2)
            .filter_map(|w| match w {
                [a, b] => Some((off(&b.before).saturating_sub(off(&a.before)), b.seq)),
                _ => None,
            })
            .max_by_key(|(step, seq)| (step.unsigned_abs(), std::cmp::Reverse(*seq)))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use procflow_format::layout::{
        events_member, fds_member, net_member, parse_member, procs_member, row_identity, FdWalk,
        NetnsEntry, SnapshotKind, TableEntry, NET_TABLES,
    };

    /// Clock reading at `s` seconds (realtime = 1.7e9 s + s).
    pub fn clock(ms: i64) -> ClockReading {
        ClockReading {
            realtime_ns: 1_700_000_000_000_000_000 + ms * 1_000_000,
            monotonic_ns: 5_000_000_000 + ms * 1_000_000,
            boottime_ns: 5_000_000_000 + ms * 1_000_000,
        }
    }

    /// A table row for `tcp`/`udp` (IPv4, little-endian hex) text.
    pub fn row4(local: &str, remote: &str, state: u8, inode: u64) -> String {
        let hex = |s: &str| {
            let a: SocketAddr = s.parse().unwrap();
            match a.ip() {
                IpAddr::V4(v4) => {
                    format!("{:08X}:{:04X}", u32::from_le_bytes(v4.octets()), a.port())
                }
                IpAddr::V6(v6) => {
                    let o = v6.octets();
                    let mut s = String::new();
                    for c in o.chunks(4) {
                        s.push_str(&format!(
                            "{:08X}",
                            u32::from_le_bytes([c[0], c[1], c[2], c[3]])
                        ));
                    }
                    format!("{s}:{:04X}", a.port())
                }
            }
        };
        format!(
            "   0: {} {} {:02X} 00000000:00000000 00:00000000 00000000  1000        0 {} 1 0000000000000000 100 0 0 10 0",
            hex(local),
            hex(remote),
            state,
            inode
        )
    }

    pub const HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";

    /// Builder of one synthetic snapshot.
    pub struct Snap {
        pub seq: u64,
        pub ms: i64,
        pub kind: SnapshotKind,
        /// (netns, table, stored, text)
        pub tables: Vec<(u64, &'static str, TableStored, String)>,
        pub fds: Option<String>,
        pub procs: Option<String>,
        pub events: Option<String>,
        pub sockuse: Option<String>,
    }

    /// One JSON record a line, as the recorder writes procs and events.
    fn json_lines<T: serde::Serialize>(recs: &[T]) -> String {
        recs.iter()
            .map(|r| serde_json::to_string(r).unwrap() + "\n")
            .collect()
    }

    impl Snap {
        pub fn new(seq: u64, ms: i64, kind: SnapshotKind) -> Snap {
            Snap {
                seq,
                ms,
                kind,
                tables: Vec::new(),
                fds: None,
                procs: None,
                events: None,
                sockuse: None,
            }
        }
        pub fn sockuse(mut self, recs: &[procflow_format::layout::SockUseRecord]) -> Snap {
            self.sockuse = Some(json_lines(recs));
            self
        }
        pub fn events(mut self, evs: &[EventRecord]) -> Snap {
            self.events = Some(json_lines(evs));
            self
        }
        pub fn table(
            mut self,
            netns: u64,
            table: &'static str,
            stored: TableStored,
            text: String,
        ) -> Snap {
            self.tables.push((netns, table, stored, text));
            self
        }
        pub fn fds(mut self, lines: &[&str]) -> Snap {
            self.fds = Some(lines.join("\n") + "\n");
            self
        }
        pub fn procs(mut self, recs: &[ProcessRecord]) -> Snap {
            self.procs = Some(json_lines(recs));
            self
        }
        pub fn meta(&self) -> SnapshotMeta {
            let mut netns: Vec<NetnsEntry> = Vec::new();
            for (ns, table, stored, _) in &self.tables {
                let e = match netns.iter_mut().find(|e| e.inode == *ns) {
                    Some(e) => e,
                    None => {
                        netns.push(NetnsEntry {
                            inode: *ns,
                            pid: 1,
                            tables: NET_TABLES
                                .iter()
                                .map(|t| TableEntry {
                                    table: t.to_string(),
                                    stored: if self.kind == SnapshotKind::Keyframe {
                                        TableStored::Full
                                    } else {
                                        TableStored::Unchanged
                                    },
                                })
                                .collect(),
                        });
                        netns.last_mut().unwrap()
                    }
                };
                match e.tables.iter_mut().find(|t| t.table == *table) {
                    Some(t) => t.stored = *stored,
                    // Tables beyond the /proc/net ones (conntrack).
                    None => e.tables.push(TableEntry {
                        table: table.to_string(),
                        stored: *stored,
                    }),
                }
            }
            SnapshotMeta {
                seq: self.seq,
                kind: self.kind,
                before: clock(self.ms),
                net_done: clock(self.ms + 10),
                after: clock(self.ms + 20),
                netns,
                fd_walk: FdWalk::Full,
                pids_walked: 0,
                pids_total: 0,
                self_cpu_ns: 0,
                errors: Vec::new(),
            }
        }
        /// The members as the recorder writes them (tables missing from
        /// `tables` in a keyframe are written empty).
        pub fn members(&self) -> Vec<(String, String)> {
            let meta = self.meta();
            let mut out = Vec::new();
            for ns in &meta.netns {
                for t in &ns.tables {
                    let text = self
                        .tables
                        .iter()
                        .find(|(n, tb, _, _)| *n == ns.inode && *tb == t.table)
                        .map(|x| x.3.clone());
                    match t.stored {
                        TableStored::Full => out.push((
                            net_member(self.seq, ns.inode, &t.table, true),
                            text.unwrap_or_else(|| format!("{HEADER}\n")),
                        )),
                        TableStored::Delta => out.push((
                            net_member(self.seq, ns.inode, &t.table, false),
                            text.unwrap_or_default(),
                        )),
                        _ => {}
                    }
                }
            }
            if let Some(f) = &self.fds {
                out.push((fds_member(self.seq), f.clone()));
            }
            if let Some(p) = &self.procs {
                out.push((procs_member(self.seq), p.clone()));
            }
            if let Some(e) = &self.events {
                out.push((events_member(self.seq), e.clone()));
            }
            if let Some(u) = &self.sockuse {
                out.push((procflow_format::layout::sockuse_member(self.seq), u.clone()));
            }
            out
        }
        pub fn input(&self) -> Snapshot {
            Snapshot {
                meta: self.meta(),
                members: self
                    .members()
                    .into_iter()
                    .map(|(n, t)| {
                        let m = parse_member(&n).unwrap();
                        (n, m, t.into_bytes())
                    })
                    .collect(),
            }
        }
    }

    pub const ARCHIVE: &str = "snapshots-000001.tar";

    pub fn build(snaps: &[Snap]) -> (Timeline, SnapshotDiagnostics) {
        let mut b = TimelineBuilder::new(ByteOrder::Little);
        let mut d = SnapshotDiagnostics::default();
        for s in snaps {
            b.apply(ARCHIVE, &s.input(), &mut d);
        }
        (b.finish(), d)
    }

    pub fn table(rows: &[String]) -> String {
        let mut s = format!("{HEADER}\n");
        for r in rows {
            s.push_str(r);
            s.push('\n');
        }
        s
    }

    const NS: u64 = 4026531840;

    /// A process record of `pid` in namespace `netns`.
    pub fn rec_ns(pid: u32, start_time: u64, netns: u64) -> ProcessRecord {
        ProcessRecord {
            netns,
            ..rec(pid, start_time, "p")
        }
    }

    pub fn rec(pid: u32, start_time: u64, comm: &str) -> ProcessRecord {
        ProcessRecord {
            pid,
            start_time,
            ppid: 1,
            uid: 0,
            comm: comm.into(),
            exe: None,
            cmdline: vec![comm.into()],
            netns: NS,
            cgroup: None,
            container_id: None,
            seen_ns: None,
            exec_ns: None,
            euid: None,
            user: None,
        }
    }

    #[test]
    fn keyframe_delta_unchanged_reconstruction() {
        let a = row4("10.0.0.1:40000", "10.0.0.2:80", 1, 100);
        let b = row4("10.0.0.1:40001", "10.0.0.2:80", 1, 101);
        let snaps = vec![
            Snap::new(1, 0, SnapshotKind::Keyframe)
                .table(
                    NS,
                    "tcp",
                    TableStored::Full,
                    table(std::slice::from_ref(&a)),
                )
                .fds(&["10 500 4026531840 100"])
                .procs(&[rec(10, 500, "bash"), rec(10, 500, "curl")]),
            // b appears, a stays.
            Snap::new(2, 1000, SnapshotKind::Delta)
                .table(NS, "tcp", TableStored::Delta, format!("+{b}\n"))
                .fds(&["11 600 4026531840 101"]),
            // Nothing changes.
            Snap::new(3, 2000, SnapshotKind::Delta).table(
                NS,
                "tcp",
                TableStored::Unchanged,
                String::new(),
            ),
            // a goes away; pid 10 exits.
            Snap::new(4, 3000, SnapshotKind::Delta)
                .table(
                    NS,
                    "tcp",
                    TableStored::Delta,
                    format!("-{}\n", row_identity(&a).unwrap()),
                )
                .fds(&["-10 500"]),
            // Keyframe without a: it stays gone; b still there.
            Snap::new(5, 4000, SnapshotKind::Keyframe)
                .table(
                    NS,
                    "tcp",
                    TableStored::Full,
                    table(std::slice::from_ref(&b)),
                )
                .fds(&["11 600 4026531840 101"]),
        ];
        let (tl, d) = build(&snaps);
        assert_eq!(d.bad_lines, 0, "{d:?}");
        assert!(d.warnings.is_empty(), "{:?}", d.warnings);
        assert_eq!(tl.sockets.len(), 2);
        let sa = &tl.sockets[0];
        assert_eq!(sa.key.inode, 100);
        assert_eq!(sa.runs.len(), 1);
        assert_eq!((sa.runs[0].first_seq, sa.runs[0].last_seq), (1, 3));
        assert_eq!(sa.runs[0].start_ns, clock(0).realtime_ns);
        assert_eq!(sa.runs[0].end_ns, clock(2020).realtime_ns);
        let sb = &tl.sockets[1];
        assert_eq!((sb.runs[0].first_seq, sb.runs[0].last_seq), (2, 5));
        let h = &tl.holders[&100];
        assert_eq!(h.len(), 1);
        assert_eq!(
            (h[0].pid, h[0].runs[0].first_seq, h[0].runs[0].last_seq),
            (10, 1, 3)
        );
        assert_eq!(tl.holders[&101][0].runs.len(), 1);
        assert_eq!(tl.processes[&(10, 500)].comm, "curl");
        assert_eq!(tl.processes.len(), 1);
        assert_eq!(
            tl.time_range(),
            Some((clock(0).realtime_ns, clock(4020).realtime_ns))
        );
    }

    #[test]
    fn reappearing_socket_gets_a_second_run_and_bad_lines_are_counted() {
        let a = row4("10.0.0.1:40000", "10.0.0.2:80", 1, 100);
        let snaps = vec![
            Snap::new(1, 0, SnapshotKind::Keyframe).table(
                NS,
                "tcp",
                TableStored::Full,
                table(&[a.clone(), "  7: garbage".into()]),
            ),
            Snap::new(2, 1000, SnapshotKind::Keyframe).table(
                NS,
                "tcp",
                TableStored::Full,
                table(&[]),
            ),
            Snap::new(3, 2000, SnapshotKind::Delta).table(
                NS,
                "tcp",
                TableStored::Delta,
                format!("+{a}\nbogus\n"),
            ),
        ];
        let (tl, d) = build(&snaps);
        assert_eq!(d.bad_lines, 2);
        assert_eq!(d.bad_line_details[0].line, 3);
        assert_eq!(
            d.bad_line_details[0].member,
            "snap/00000001/net/4026531840/tcp"
        );
        assert_eq!(d.bad_line_details[1].line, 2);
        assert_eq!(tl.sockets[0].runs.len(), 2);
    }

    /// A big-endian host prints addresses in network order.
    #[test]
    fn big_endian_host() {
        let snap = Snap::new(1, 0, SnapshotKind::Keyframe).table(
            NS,
            "tcp",
            TableStored::Full,
            table(&["   0: 0A000001:9C40 0A000002:0050 01 00000000:00000000 00:00000000 00000000     0        0 77 1 0 100 0 0 10 0".into()]),
        );
        let mut b = TimelineBuilder::new(ByteOrder::Big);
        let mut d = SnapshotDiagnostics::default();
        b.apply(ARCHIVE, &snap.input(), &mut d);
        let tl = b.finish();
        assert_eq!(tl.sockets[0].key.local, "10.0.0.1:40000".parse().unwrap());
        assert_eq!(tl.sockets[0].key.remote, "10.0.0.2:80".parse().unwrap());
    }

    #[test]
    fn clock_step_is_found() {
        let snaps = [
            Snap::new(1, 0, SnapshotKind::Keyframe),
            Snap::new(2, 1000, SnapshotKind::Keyframe),
            Snap::new(3, 2000, SnapshotKind::Keyframe),
        ];
        let mut b = TimelineBuilder::new(ByteOrder::Little);
        let mut d = SnapshotDiagnostics::default();
        for (i, s) in snaps.iter().enumerate() {
            let mut inp = s.input();
            if i == 2 {
                // Realtime jumps 5 s ahead, monotonic does not.
                inp.meta.before.realtime_ns += 5_000_000_000;
                inp.meta.after.realtime_ns += 5_000_000_000;
            }
            b.apply(ARCHIVE, &inp, &mut d);
        }
        let tl = b.finish();
        assert_eq!(tl.largest_clock_step(), Some((5_000_000_000, 3)));
    }

    /// An event of `pid` at `ms` (monotonic, as [`clock`] reads it).
    pub fn ev(
        kind: &str,
        ms: i64,
        pid: u32,
        start: Option<u64>,
        local: &str,
        remote: &str,
    ) -> EventRecord {
        let l: SocketAddr = local.parse().unwrap();
        let r: SocketAddr = remote.parse().unwrap();
        EventRecord {
            source: "tracepoint:sock:inet_sock_set_state".into(),
            kind: kind.into(),
            mono_ns: clock(ms).monotonic_ns,
            pid,
            tid: pid,
            start_time: start,
            comm: Some(format!("p{pid}")),
            netns: Some(NS),
            proto: "tcp".into(),
            local_ip: l.ip().to_string(),
            local_port: l.port(),
            remote_ip: Some(r.ip().to_string()),
            remote_port: Some(r.port()),
            inode: None,
        }
    }

    #[test]
    fn events_are_kept_in_realtime_and_indexed() {
        let mut odd = ev("connect", 500, 7, Some(70), "10.0.0.1:40000", "10.0.0.2:80");
        odd.kind = "splice".into();
        let mut bad = ev("connect", 500, 7, Some(70), "10.0.0.1:40000", "10.0.0.2:80");
        bad.local_ip = "not-an-address".into();
        let snaps = vec![
            Snap::new(1, 0, SnapshotKind::Keyframe).procs(&[rec(8, 80, "worker")]),
            Snap::new(2, 1000, SnapshotKind::Keyframe).events(&[
                ev("close", 900, 8, None, "10.0.0.1:40000", "10.0.0.2:80"),
                ev("connect", 500, 7, Some(70), "10.0.0.1:40000", "10.0.0.2:80"),
                odd,
                bad,
            ]),
        ];
        let (tl, d) = build(&snaps);
        assert_eq!(d.bad_lines, 0, "{d:?}");
        assert_eq!(tl.unusable_events, 2);
        assert_eq!(tl.events.len(), 2);
        // Time order, realtime.
        assert_eq!(tl.events[0].kind, EventKind::Connect);
        assert_eq!(tl.events[0].t_ns, clock(500).realtime_ns);
        // A gone process' start time comes from its only record.
        assert_eq!((tl.events[1].pid, tl.events[1].start_time), (8, 80));
        assert!(tl.events[1].start_known);
        let idx = tl.events_for(Transport::Tcp, 40000, "10.0.0.2:80".parse().unwrap());
        assert_eq!(idx, &[0, 1]);
        // Identity from the event for a process without record.
        assert_eq!(tl.event_idents[&(7, 70)].comm, "p7");
        assert!(!tl.event_idents.contains_key(&(8, 80)));
    }

    #[test]
    fn exiting_process_record_does_not_overwrite_and_execve_is_kept() {
        let good = ProcessRecord {
            exe: Some("/usr/bin/curl".into()),
            cmdline: vec!["curl".into(), "http://x".into()],
            ppid: 300,
            ..rec(10, 500, "curl")
        };
        let exiting = ProcessRecord {
            exe: None,
            cmdline: vec![],
            ppid: 1,
            ..rec(10, 500, "curl")
        };
        let execd = ProcessRecord {
            exe: Some("/usr/bin/wget".into()),
            cmdline: vec!["wget".into()],
            ppid: 300,
            ..rec(10, 500, "wget")
        };
        let snaps = vec![
            Snap::new(1, 0, SnapshotKind::Keyframe).procs(std::slice::from_ref(&good)),
            Snap::new(2, 1000, SnapshotKind::Keyframe).procs(std::slice::from_ref(&exiting)),
        ];
        let (tl, _) = build(&snaps);
        assert_eq!(tl.processes[&(10, 500)], good);
        assert!(tl.exec_changes.is_empty());
        let snaps = vec![
            Snap::new(1, 0, SnapshotKind::Keyframe).procs(std::slice::from_ref(&good)),
            Snap::new(2, 1000, SnapshotKind::Keyframe).procs(std::slice::from_ref(&execd)),
            Snap::new(3, 2000, SnapshotKind::Keyframe).procs(&[exiting]),
        ];
        let (tl, _) = build(&snaps);
        assert_eq!(tl.processes[&(10, 500)], execd);
        let ch = &tl.exec_changes[&(10, 500)];
        assert_eq!(ch.len(), 1);
        assert_eq!(
            (ch[0].old_comm.as_str(), ch[0].new_comm.as_str()),
            ("curl", "wget")
        );
        assert_eq!(ch[0].t_ns, clock(1000).realtime_ns);
    }
}
