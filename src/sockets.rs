//! `procflow sockets`: what the recorder saw at one moment, as `ss -tanp`
//! would have printed it then: every TCP and UDP socket of the snapshot,
//! its state, endpoints, inode, uid and the processes holding it.
//!
//! Works on any bundle: `procflow-snap record` bundles with or without a
//! capture, and `procflow-snap once` triage bundles (one snapshot).

use std::net::SocketAddr;

use serde::Serialize;

use crate::report::socket_state_name;
use crate::snapshot::timeline::{SnapTime, Timeline, Transport};

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
    /// Owning uid.
    pub uid: u32,
    /// Holders, by pid.
    pub owners: Vec<Owner>,
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
        rows.push(SocketRow {
            netid: match s.key.transport {
                Transport::Tcp => "tcp",
                Transport::Udp => "udp",
            },
            state: socket_state_name(s.key.transport, run.state),
            local: s.key.local,
            remote: s.key.remote,
            netns: s.key.netns,
            inode: s.key.inode,
            uid: s.uid,
            owners,
        });
    }
    rows.sort_by(|a, b| {
        (a.netid, a.state, a.local, a.remote, a.inode)
            .cmp(&(b.netid, b.state, b.local, b.remote, b.inode))
    });
    rows
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
