//! `procflow sockets`: what the recorder saw at one moment, as `ss -tanp`
//! would have printed it then: every TCP and UDP socket of the snapshot,
//! its state, endpoints, inode, uid and the processes holding it; and the
//! sockets only the events saw (connect, accept, listen, close, per-send
//! bindings and runs of `sockuse.jsonl`) between that snapshot and the
//! time asked for. With a pid and no time: that process's sockets over
//! the whole recording, each with when it was first and last seen.
//!
//! Works on any bundle: `procflow-snap record` bundles with or without a
//! capture, and `procflow-snap once` triage bundles (one snapshot).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;

use serde::Serialize;

use crate::report::socket_state_name;
use crate::snapshot::timeline::{EventKind, SnapTime, Timeline, Transport};
use crate::snapshot::uses::UseDir;

/// One process holding a socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Owner {
    /// Process id.
    pub pid: u32,
    /// Start time, clock ticks since boot.
    pub start_ticks: u64,
    /// `comm` as recorded (unescaped; escape before printing).
    pub comm: String,
}

/// One socket at the chosen snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SocketRow {
    /// `tcp` or `udp`.
    pub netid: &'static str,
    /// `ESTABLISHED`, `LISTEN`, `UNCONNECTED`...
    pub state: &'static str,
    /// Local address and port.
    pub local: SocketAddr,
    /// Remote address and port.
    pub remote: SocketAddr,
    /// Network namespace inode.
    pub netns: u64,
    /// Socket inode.
    pub inode: u64,
    /// Owning uid (from a snapshot's table row; events do not carry it).
    pub uid: Option<u32>,
    /// Holders, by pid.
    pub owners: Vec<Owner>,
    /// Where the row comes from: `snapshot` (a /proc/net table row and
    /// the fd listings), `events` (socket events: connect, accept,
    /// listen, send, lookup, close), `sockuse` (per-send bindings and
    /// runs), or several joined with `+`.
    pub source: String,
    /// First time the socket was seen (realtime ns): its first snapshot,
    /// or its first event or call.
    pub first_ns: i64,
    /// Last time it was seen: its last snapshot, its close, or its last
    /// event or call.
    pub last_ns: i64,
}

/// A socket known from events or socket-use records, as one process
/// used it, before it becomes a row.
#[derive(Debug, Clone)]
struct EvSock {
    transport: Transport,
    local: SocketAddr,
    remote: Option<SocketAddr>,
    netns: Option<u64>,
    inode: Option<u64>,
    first_ns: i64,
    last_ns: i64,
    closed: bool,
    /// What opened or last used it (`connect`, `accept`, `listen`,
    /// `send`, `lookup`; `in-use` when only its close or its calls were
    /// seen).
    state: &'static str,
    /// (pid, start time); `None` for a binding no call was seen on.
    owner: Option<(u32, u64)>,
    events: bool,
    sockuse: bool,
}

fn kind_word(k: EventKind) -> &'static str {
    match k {
        EventKind::Connect => "connect",
        EventKind::Accept => "accept",
        EventKind::Send => "send",
        EventKind::Lookup => "lookup",
        EventKind::Close => "in-use",
        EventKind::Listen => "listen",
    }
}

/// Slack when joining a socket-use tenancy to an event socket of the same
/// tuple: the two clocks of one recording, read a few ms apart.
const JOIN_SLACK_NS: i64 = 1_000_000_000;

fn same_process(a: (u32, u64), b: (u32, u64)) -> bool {
    a.0 == b.0 && (a.1 == b.1 || a.1 == 0 || b.1 == 0)
}

/// One process's calls on a socket: (pid, start time), first, last.
type Part = (Option<(u32, u64)>, i64, i64);

/// Every socket the events and the socket-use records saw, one entry per
/// process and life of a tuple (a close ends it), in time order.
fn event_sockets(tl: &Timeline) -> Vec<EvSock> {
    let mut out: Vec<EvSock> = Vec::new();
    type Key = (Transport, SocketAddr, Option<SocketAddr>, u32, u64);
    let mut open: HashMap<Key, usize> = HashMap::new();
    for e in &tl.events {
        let key = (e.transport, e.local, e.remote, e.pid, e.start_time);
        let i = match open.get(&key) {
            Some(&i) => i,
            None => {
                open.insert(key, out.len());
                out.push(EvSock {
                    transport: e.transport,
                    local: e.local,
                    remote: e.remote,
                    netns: e.netns,
                    inode: e.inode,
                    first_ns: e.t_ns,
                    last_ns: e.t_ns,
                    closed: false,
                    state: kind_word(e.kind),
                    owner: Some((e.pid, e.start_time)),
                    events: true,
                    sockuse: false,
                });
                out.len() - 1
            }
        };
        let s = &mut out[i];
        s.first_ns = s.first_ns.min(e.t_ns);
        s.last_ns = s.last_ns.max(e.t_ns);
        s.inode = s.inode.or(e.inode);
        s.netns = s.netns.or(e.netns);
        if e.kind == EventKind::Close {
            s.closed = true;
            open.remove(&key);
        } else {
            s.state = kind_word(e.kind);
        }
    }
    // Joined by (transport, local port, remote): an unbound datagram
    // socket's event names the unspecified address, its binding the one
    // the send chose.
    let mut by_tuple: HashMap<(Transport, u16, SocketAddr), Vec<usize>> = HashMap::new();
    for (i, s) in out.iter().enumerate() {
        if let Some(r) = s.remote {
            by_tuple
                .entry((s.transport, s.local.port(), r))
                .or_default()
                .push(i);
        }
    }
    let uses = &tl.uses;
    for t in &uses.tenancies {
        let until = if t.until_ns == i64::MAX {
            i64::MAX
        } else {
            t.until_ns - 1
        };
        // Each process's calls on this socket.
        let mut per: Vec<((u32, u64), i64, i64)> = Vec::new();
        for dir in [UseDir::Send, UseDir::Recv] {
            let lo = t.from_ns.saturating_sub(JOIN_SLACK_NS).max(t.since_ns);
            for r in uses.runs_between(t.sk, dir, lo, until) {
                let k = (r.pid, r.start_time);
                match per.iter_mut().find(|p| p.0 == k) {
                    Some(p) => {
                        p.1 = p.1.min(r.first_ns);
                        p.2 = p.2.max(r.last_ns);
                    }
                    None => per.push((k, r.first_ns, r.last_ns)),
                }
            }
        }
        let closed = t.until_ns != i64::MAX;
        let mut parts: Vec<Part> = per.into_iter().map(|(k, a, b)| (Some(k), a, b)).collect();
        if parts.is_empty() {
            parts.push((None, t.from_ns, t.from_ns));
        }
        let single = parts.len() == 1;
        for (owner, mut first, mut last) in parts {
            // The binding opens the socket for its only user.
            if single {
                first = first.min(t.from_ns);
            }
            if closed {
                last = last.max(t.until_ns);
            }
            let joined = by_tuple
                .get(&(t.transport, t.local.port(), t.remote))
                .and_then(|v| {
                    v.iter().copied().find(|&i| {
                        let s = &out[i];
                        let local_fits = s.local.ip() == t.local.ip()
                            || s.local.ip().is_unspecified()
                            || t.local.ip().is_unspecified();
                        let owner_fits = match (s.owner, owner) {
                            (Some(a), Some(b)) => same_process(a, b),
                            _ => true,
                        };
                        local_fits
                            && owner_fits
                            && s.first_ns <= last.saturating_add(JOIN_SLACK_NS)
                            && first <= s.last_ns.saturating_add(JOIN_SLACK_NS)
                    })
                });
            match joined {
                Some(i) => {
                    let s = &mut out[i];
                    s.sockuse = true;
                    s.owner = s.owner.or(owner);
                    if s.local.ip().is_unspecified() {
                        s.local = t.local;
                    }
                    s.first_ns = s.first_ns.min(first);
                    s.last_ns = s.last_ns.max(last);
                    s.closed |= closed;
                }
                None => out.push(EvSock {
                    transport: t.transport,
                    local: t.local,
                    remote: Some(t.remote),
                    netns: None,
                    inode: None,
                    first_ns: first,
                    last_ns: last,
                    closed,
                    state: "in-use",
                    owner,
                    events: false,
                    sockuse: true,
                }),
            }
        }
    }
    merge_wildcards(out)
}

/// One entry for a socket seen both with the unspecified local address
/// (an unbound datagram socket's first send) and with the one the kernel
/// chose, by one process, at overlapping times.
fn merge_wildcards(v: Vec<EvSock>) -> Vec<EvSock> {
    let mut out: Vec<EvSock> = Vec::with_capacity(v.len());
    type Key = (Transport, u16, Option<SocketAddr>, Option<u32>);
    let mut by: HashMap<Key, Vec<usize>> = HashMap::new();
    for s in v {
        let key = (s.transport, s.local.port(), s.remote, s.owner.map(|o| o.0));
        let hit = by.get(&key).and_then(|is| {
            is.iter().copied().find(|&i| {
                let o: &EvSock = &out[i];
                (o.local.ip() == s.local.ip()
                    || o.local.ip().is_unspecified()
                    || s.local.ip().is_unspecified())
                    && o.first_ns <= s.last_ns.saturating_add(JOIN_SLACK_NS)
                    && s.first_ns <= o.last_ns.saturating_add(JOIN_SLACK_NS)
            })
        });
        match hit {
            Some(i) => {
                let o = &mut out[i];
                if o.local.ip().is_unspecified() {
                    o.local = s.local;
                }
                o.first_ns = o.first_ns.min(s.first_ns);
                o.last_ns = o.last_ns.max(s.last_ns);
                o.closed |= s.closed;
                o.events |= s.events;
                o.sockuse |= s.sockuse;
                o.netns = o.netns.or(s.netns);
                o.inode = o.inode.or(s.inode);
            }
            None => {
                by.entry(key).or_default().push(out.len());
                out.push(s);
            }
        }
    }
    out
}

/// Whether event row `r` is a use of snapshot row `x`: the same socket,
/// or a datagram sent from an unconnected UDP socket `x` (its events name
/// each peer, the table names none), by one of its holders.
fn same_socket(x: &SocketRow, r: &SocketRow) -> bool {
    if x.netid != r.netid || x.local.port() != r.local.port() {
        return false;
    }
    let local_fits = x.local.ip() == r.local.ip()
        || x.local.ip().is_unspecified()
        || r.local.ip().is_unspecified();
    let owner_fits = r
        .owners
        .iter()
        .all(|o| x.owners.iter().any(|y| y.pid == o.pid));
    let remote_fits = x.remote == r.remote
        || (x.netid == "udp" && x.remote.port() == 0 && x.remote.ip().is_unspecified());
    local_fits && remote_fits && owner_fits && (r.inode == 0 || x.inode == r.inode)
}

fn owners_of<'a>(tl: &Timeline, keys: impl IntoIterator<Item = &'a (u32, u64)>) -> Vec<Owner> {
    keys.into_iter()
        .map(|&(pid, st)| Owner {
            pid,
            start_ticks: st,
            comm: tl
                .processes
                .get(&(pid, st))
                .map(|p| p.comm.clone())
                .or_else(|| tl.event_idents.get(&(pid, st)).map(|e| e.comm.clone()))
                .or_else(|| {
                    // An event without a start time: the only record of the pid.
                    let mut it = tl.processes.iter().filter(|(k, _)| k.0 == pid);
                    match (it.next(), it.next()) {
                        (Some((_, p)), None) if st == 0 => Some(p.comm.clone()),
                        _ => None,
                    }
                })
                .unwrap_or_default(),
        })
        .collect()
}

fn unspecified(local: SocketAddr) -> SocketAddr {
    let ip: std::net::IpAddr = if local.is_ipv4() {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    SocketAddr::new(ip, 0)
}

impl EvSock {
    fn row(&self, tl: &Timeline) -> SocketRow {
        let mut src = Vec::new();
        if self.events {
            src.push("events");
        }
        if self.sockuse {
            src.push("sockuse");
        }
        SocketRow {
            netid: match self.transport {
                Transport::Tcp => "tcp",
                Transport::Udp => "udp",
            },
            state: self.state,
            local: self.local,
            remote: self.remote.unwrap_or_else(|| unspecified(self.local)),
            netns: self.netns.unwrap_or(0),
            inode: self.inode.unwrap_or(0),
            uid: None,
            owners: owners_of(tl, self.owner.iter()),
            source: src.join("+"),
            first_ns: self.first_ns,
            last_ns: self.last_ns,
        }
    }
}

fn sort_rows(rows: &mut [SocketRow]) {
    rows.sort_by(|a, b| {
        (a.netid, a.state, a.local, a.remote, a.inode, a.first_ns)
            .cmp(&(b.netid, b.state, b.local, b.remote, b.inode, b.first_ns))
    });
}

/// The sockets at `at_ns` (realtime) by snapshot `snap` (the last one
/// taken at or before it): the snapshot's, and those the events or the
/// socket-use records saw open at `at_ns` that the snapshot does not
/// hold (opened after it, or between two snapshots). Optionally only
/// those of `pid`.
pub fn sockets_at_time(
    tl: &Timeline,
    snap: &SnapTime,
    at_ns: i64,
    pid: Option<u32>,
) -> Vec<SocketRow> {
    let mut rows = sockets_at(tl, snap.seq, pid);
    let mut extra = Vec::new();
    for s in event_sockets(tl) {
        // Open at `at_ns`: opened by then, and closed after it; a socket
        // never seen to close was open from its first event until the
        // next snapshot at most, which would show it.
        let open = s.first_ns <= at_ns
            && if s.closed {
                s.last_ns >= at_ns
            } else {
                s.first_ns >= snap.before.realtime_ns
            };
        if !open || pid.is_some_and(|p| s.owner.is_none_or(|o| o.0 != p)) {
            continue;
        }
        let r = s.row(tl);
        if rows.iter().any(|x| same_socket(x, &r)) {
            continue;
        }
        extra.push(r);
    }
    sort_rows(&mut extra);
    rows.extend(extra);
    rows
}

/// Every socket `pid` held or used over the whole recording: the
/// snapshots' (first and last snapshot it held each in) and the events'
/// and socket-use records' (first and last event or call); a socket seen
/// both ways is one row with both sources.
pub fn sockets_of_pid(tl: &Timeline, pid: u32) -> Vec<SocketRow> {
    let mut rows = Vec::new();
    for s in &tl.sockets {
        let Some(hs) = tl.holders.get(&s.key.inode) else {
            continue;
        };
        let mine: Vec<_> = hs.iter().filter(|h| h.pid == pid).collect();
        let Some(first) = mine
            .iter()
            .flat_map(|h| h.runs.iter())
            .map(|r| r.start_ns)
            .min()
        else {
            continue;
        };
        let last = mine
            .iter()
            .flat_map(|h| h.runs.iter())
            .map(|r| r.end_ns)
            .max()
            .unwrap_or(first);
        // The socket's own runs while this pid held it (an inode reused
        // by another tuple is another socket).
        let Some(run) = s.runs.iter().rev().find(|r| r.gap(first, last) == 0) else {
            continue;
        };
        let keys: BTreeSet<(u32, u64)> = mine.iter().map(|h| (h.pid, h.start_time)).collect();
        rows.push(snapshot_row(
            s,
            run.state,
            owners_of(tl, &keys),
            first.max(s.runs.first().map_or(first, |r| r.start_ns)),
            last.min(s.runs.last().map_or(last, |r| r.end_ns)),
        ));
    }
    for s in event_sockets(tl) {
        if s.owner.is_none_or(|o| o.0 != pid) {
            continue;
        }
        let r = s.row(tl);
        // The same socket in the snapshots: one row, both sources.
        if let Some(snap) = rows.iter_mut().find(|x| {
            x.source.starts_with("snapshot")
                && same_socket(x, &r)
                && r.first_ns <= x.last_ns.saturating_add(JOIN_SLACK_NS * 10)
                && x.first_ns <= r.last_ns.saturating_add(JOIN_SLACK_NS * 10)
        }) {
            if !snap.source.contains(&r.source) {
                snap.source = format!("{}+{}", snap.source, r.source);
            }
            snap.first_ns = snap.first_ns.min(r.first_ns);
            snap.last_ns = snap.last_ns.max(r.last_ns);
            continue;
        }
        rows.push(r);
    }
    rows.sort_by(|a, b| {
        (a.first_ns, a.netid, a.local, a.remote, a.inode)
            .cmp(&(b.first_ns, b.netid, b.local, b.remote, b.inode))
    });
    rows
}

/// The snapshot to show: the last one taken at or before `at_ns` (realtime,
/// ns), or the last of all; `None` when the bundle has none or `at_ns` is
/// before the first.
pub fn pick_snapshot(tl: &Timeline, at_ns: Option<i64>) -> Option<&SnapTime> {
    match at_ns {
        None => tl.snapshots.last(),
        Some(t) => tl
            .snapshots
            .iter()
            .rev()
            .find(|s| s.before.realtime_ns <= t),
    }
}

/// The row of a socket the snapshots hold, in state `state` (a
/// `/proc/net` state number), seen from `first_ns` to `last_ns`.
fn snapshot_row(
    s: &crate::snapshot::timeline::Socket,
    state: u8,
    owners: Vec<Owner>,
    first_ns: i64,
    last_ns: i64,
) -> SocketRow {
    SocketRow {
        netid: match s.key.transport {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        },
        state: socket_state_name(s.key.transport, state),
        local: s.key.local,
        remote: s.key.remote,
        netns: s.key.netns,
        inode: s.key.inode,
        uid: Some(s.uid),
        owners,
        source: "snapshot".into(),
        first_ns,
        last_ns,
    }
}

/// The sockets present in snapshot `seq`, optionally only those held by
/// `pid`, sorted like `ss` (netid, state, local, remote, inode).
pub fn sockets_at(tl: &Timeline, seq: u64, pid: Option<u32>) -> Vec<SocketRow> {
    let in_seq = |r: &crate::snapshot::timeline::Run| r.first_seq <= seq && seq <= r.last_seq;
    let mut rows = Vec::new();
    for s in &tl.sockets {
        let Some(run) = s.runs.iter().find(|r| in_seq(r)) else {
            continue;
        };
        let mut owners: Vec<Owner> = tl
            .holders
            .get(&s.key.inode)
            .map(|hs| {
                hs.iter()
                    .filter(|h| h.runs.iter().any(in_seq))
                    .map(|h| Owner {
                        pid: h.pid,
                        start_ticks: h.start_time,
                        comm: tl
                            .processes
                            .get(&(h.pid, h.start_time))
                            .map(|p| p.comm.clone())
                            .unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        owners.sort_by_key(|o| (o.pid, o.start_ticks));
        if let Some(p) = pid {
            if !owners.iter().any(|o| o.pid == p) {
                continue;
            }
        }
        rows.push(snapshot_row(
            s,
            run.state,
            owners,
            s.runs.first().map_or(run.start_ns, |r| r.start_ns),
            s.runs.last().map_or(run.end_ns, |r| r.end_ns),
        ));
    }
    sort_rows(&mut rows);
    rows
}

/// Why `pid` has no socket row: whether the recording knows the process
/// at all.
pub fn no_sockets_hint(tl: &Timeline, pid: u32) -> String {
    let comm = tl
        .processes
        .iter()
        .find(|(k, _)| k.0 == pid)
        .map(|(_, p)| p.comm.clone())
        .or_else(|| {
            tl.event_idents
                .iter()
                .find(|(k, _)| k.0 == pid)
                .map(|(_, e)| e.comm.clone())
        });
    match comm {
        Some(c) => format!(
            "pid {pid} ({}) was recorded, but held no TCP or UDP socket in any snapshot and no socket event or send names it",
            crate::hostile::term(&c)
        ),
        None => format!(
            "pid {pid} is not in the recording: no process record, fd listing, socket event or send names it"
        ),
    }
}

/// `users:(("comm",pid=N),...)` as ss prints it, comm escaped for a
/// terminal.
pub fn users_text(owners: &[Owner]) -> String {
    if owners.is_empty() {
        return String::new();
    }
    let v: Vec<String> = owners
        .iter()
        .map(|o| format!("(\"{}\",pid={})", crate::hostile::term(&o.comm), o.pid))
        .collect();
    format!("users:({})", v.join(","))
}
