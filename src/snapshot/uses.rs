//! Per-send and per-read evidence (`sockuse.jsonl`): which process sent or
//! read how many bytes on which kernel socket, and which socket was which
//! tuple when.
//!
//! `use` runs are kept per (socket id, direction) in call order, so that
//! their byte counts laid end to end give each process' range of the
//! socket's byte stream. `sock` bindings are folded into tenancies: one
//! socket id holding one tuple from its first binding until the socket id
//! holds another tuple or its TCP state reaches `CLOSE` (ids are reused
//! once a socket is freed). Times are converted to realtime like socket
//! events: CLOCK_MONOTONIC plus the (realtime - monotonic) offset of the
//! snapshot that carries the record.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

pub use procflow_format::layout::UseDir;
use procflow_format::layout::{SockUseKind, SockUseRecord};

use super::timeline::Transport;

/// A run of send or receive calls of one process on one socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UseRun {
    /// Socket id (the recording's keyed hash of the kernel address).
    pub sk: u64,
    /// Send or receive.
    pub dir: UseDir,
    /// tcp or udp.
    pub transport: Transport,
    /// Thread group id of the caller.
    pub pid: u32,
    /// Thread id of the run's first call.
    pub tid: u32,
    /// Start time of the process (clock ticks since boot); 0 when unknown.
    pub start_time: u64,
    /// Whether `start_time` is known.
    pub start_known: bool,
    /// Realtime ns of the first call.
    pub first_ns: i64,
    /// Realtime ns of the last call.
    pub last_ns: i64,
    /// Calls with a positive return.
    pub calls: u64,
    /// Bytes those calls sent or read.
    pub bytes: u64,
    /// Position in the bundle (snapshot order, then line): call order
    /// among runs that began at the same instant.
    pub order: u64,
}

/// One socket id holding one tuple for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tenancy {
    /// Socket id.
    pub sk: u64,
    /// tcp or udp.
    pub transport: Transport,
    /// Local endpoint (canonical form).
    pub local: SocketAddr,
    /// Remote endpoint (canonical form).
    pub remote: SocketAddr,
    /// Realtime ns of its first binding.
    pub from_ns: i64,
    /// Realtime ns when it ended (`CLOSE`, or the id bound to another
    /// tuple); `i64::MAX` when never seen to end. Exclusive: a call at
    /// this time is of the next socket of the id.
    pub until_ns: i64,
    /// Realtime ns when the previous socket of the same id was last seen
    /// to end (`i64::MIN` when none was): no call before it is of this
    /// socket, whatever the slack allowed before its first binding.
    pub since_ns: i64,
}

/// A `sock` binding as read, before folding.
#[derive(Debug, Clone)]
struct Binding {
    sk: u64,
    t_ns: i64,
    order: u64,
    transport: Transport,
    local: SocketAddr,
    remote: Option<SocketAddr>,
    closed: bool,
}

/// Collects the records of every snapshot.
#[derive(Debug, Default)]
pub struct UseBuilder {
    runs: Vec<UseRun>,
    bindings: Vec<Binding>,
    order: u64,
    unusable: u64,
    sources: Vec<String>,
}

fn parse_sk(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

fn transport_of(p: &str) -> Option<Transport> {
    match p {
        "tcp" => Some(Transport::Tcp),
        "udp" => Some(Transport::Udp),
        _ => None,
    }
}

fn canon(ip: &str, port: u16) -> Option<SocketAddr> {
    let ip: IpAddr = ip.parse().ok()?;
    Some(SocketAddr::new(ip.to_canonical(), port))
}

impl UseBuilder {
    /// Keeps one record; `offset` is the carrying snapshot's (realtime -
    /// monotonic). Records of an unknown kind are skipped; records missing
    /// what their kind needs are counted as unusable.
    pub fn record(&mut self, offset: i64, r: &SockUseRecord) {
        self.order += 1;
        let (Some(sk), Some(transport)) = (parse_sk(&r.sk), transport_of(&r.proto)) else {
            self.unusable += 1;
            return;
        };
        if !self.sources.contains(&r.source) && self.sources.len() < 64 {
            self.sources.push(r.source.clone());
        }
        match &r.kind {
            SockUseKind::Use => {
                let (Some(dir), Some(pid), Some(first), Some(last), Some(bytes)) =
                    (r.dir, r.pid, r.first_ns, r.last_ns, r.bytes)
                else {
                    self.unusable += 1;
                    return;
                };
                let first_ns = first.saturating_add(offset);
                self.runs.push(UseRun {
                    sk,
                    dir,
                    transport,
                    pid,
                    tid: r.tid.unwrap_or(pid),
                    start_time: r.start_time.unwrap_or(0),
                    start_known: r.start_time.is_some(),
                    first_ns,
                    last_ns: last.saturating_add(offset).max(first_ns),
                    calls: r.calls.unwrap_or(0),
                    bytes,
                    order: self.order,
                });
            }
            SockUseKind::Sock => {
                let local = match (&r.local_ip, r.local_port) {
                    (Some(ip), Some(port)) => canon(ip, port),
                    _ => None,
                };
                let remote = match (&r.remote_ip, r.remote_port) {
                    (Some(ip), Some(port)) => canon(ip, port).map(Some),
                    (None, None) => Some(None),
                    _ => None,
                };
                let (Some(t), Some(local), Some(remote)) = (r.mono_ns, local, remote) else {
                    self.unusable += 1;
                    return;
                };
                self.bindings.push(Binding {
                    sk,
                    t_ns: t.saturating_add(offset),
                    order: self.order,
                    transport,
                    local,
                    remote,
                    closed: r.state.as_deref() == Some("CLOSE"),
                });
            }
            SockUseKind::Other(_) => {}
        }
    }

    /// Sorts and indexes; `start_of(pid)` names the start time of a run
    /// whose process was gone before it was read (the only process record
    /// of that pid), as for socket events.
    pub fn finish(self, start_of: impl Fn(u32) -> Option<u64>) -> UseIndex {
        let mut runs = self.runs;
        for r in runs.iter_mut().filter(|r| !r.start_known) {
            if let Some(st) = start_of(r.pid) {
                r.start_time = st;
                r.start_known = true;
            }
        }
        runs.sort_by_key(|r| (r.sk, r.dir == UseDir::Recv, r.first_ns, r.order));
        let mut bindings = self.bindings;
        bindings.sort_by_key(|b| (b.sk, b.t_ns, b.order));
        let mut tenancies: Vec<Tenancy> = Vec::new();
        let mut i = 0;
        while let Some(b) = bindings.get(i) {
            // The bindings of one id, in time order: consecutive ones of one
            // tuple are one tenancy (the states of one connection).
            let mut j = i;
            let mut open: Option<Tenancy> = None;
            let first_of_id = tenancies.len();
            // When the id last passed to a new socket.
            let mut boundary = i64::MIN;
            while let Some(c) = bindings.get(j).filter(|c| c.sk == b.sk) {
                let same = open.is_some_and(|t| {
                    Some(t.remote) == c.remote && t.local == c.local && t.transport == c.transport
                });
                if !same {
                    if let Some(mut t) = open.take() {
                        // TCP ids are exclusive: another tuple ends the
                        // tenancy. An unconnected UDP socket sends to several
                        // peers: its tenancies stay open, unless the local
                        // port changed (a socket keeps its port: the id was
                        // freed and reused by a new socket).
                        if t.transport == Transport::Tcp {
                            t.until_ns = c.t_ns;
                            boundary = c.t_ns;
                        } else if t.local.port() != c.local.port() {
                            t.until_ns = c.t_ns;
                            boundary = c.t_ns;
                            for u in tenancies.iter_mut().skip(first_of_id) {
                                u.until_ns = u.until_ns.min(c.t_ns);
                            }
                        }
                        tenancies.push(t);
                    }
                    if let Some(remote) = c.remote {
                        open = Some(Tenancy {
                            sk: c.sk,
                            transport: c.transport,
                            local: c.local,
                            remote,
                            from_ns: c.t_ns,
                            until_ns: i64::MAX,
                            since_ns: boundary,
                        });
                    }
                }
                if c.closed {
                    if let Some(mut t) = open.take() {
                        t.until_ns = c.t_ns;
                        tenancies.push(t);
                    }
                    boundary = c.t_ns;
                }
                j += 1;
            }
            if let Some(t) = open {
                tenancies.push(t);
            }
            i = j.max(i + 1);
        }
        let mut by_tuple: HashMap<(Transport, SocketAddr, SocketAddr), Vec<usize>> = HashMap::new();
        for (k, t) in tenancies.iter().enumerate() {
            by_tuple
                .entry((t.transport, t.local, t.remote))
                .or_default()
                .push(k);
        }
        UseIndex {
            runs,
            tenancies,
            by_tuple,
            unusable: self.unusable,
            sources: self.sources,
        }
    }
}

/// The use evidence of a bundle.
#[derive(Debug, Clone, Default)]
pub struct UseIndex {
    /// Every run, sorted by (socket id, direction, first call).
    pub runs: Vec<UseRun>,
    /// Every tenancy, sorted by socket id and time.
    pub tenancies: Vec<Tenancy>,
    by_tuple: HashMap<(Transport, SocketAddr, SocketAddr), Vec<usize>>,
    /// Records that could not be used (bad id, protocol, address or a
    /// missing field).
    pub unusable: u64,
    /// The sources the records name (at most 64).
    pub sources: Vec<String>,
}

impl UseIndex {
    /// Whether the bundle holds any run.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The runs of socket `sk` in direction `dir`, in call order.
    pub fn runs_of(&self, sk: u64, dir: UseDir) -> &[UseRun] {
        let key = |r: &UseRun| (r.sk, r.dir == UseDir::Recv);
        let want = (sk, dir == UseDir::Recv);
        let lo = self.runs.partition_point(|r| key(r) < want);
        let hi = self.runs.partition_point(|r| key(r) <= want);
        self.runs.get(lo..hi).unwrap_or(&[])
    }

    /// The runs of socket `sk` in direction `dir` whose first call lies in
    /// `[lo, hi]`, in call order (a binary search: a socket with many runs
    /// costs each flow only its own).
    pub fn runs_between(&self, sk: u64, dir: UseDir, lo: i64, hi: i64) -> &[UseRun] {
        let all = self.runs_of(sk, dir);
        let a = all.partition_point(|r| r.first_ns < lo);
        let b = all.partition_point(|r| r.first_ns <= hi);
        all.get(a..b.max(a)).unwrap_or(&[])
    }

    /// Tenancies of this tuple (any time), also those bound with an
    /// unspecified local address on the same port (an unbound datagram
    /// socket's binding names the port the send chose, not the address).
    pub fn tenancies_of(
        &self,
        t: Transport,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> impl Iterator<Item = &Tenancy> {
        let ip = local.ip().to_canonical();
        let remote = SocketAddr::new(remote.ip().to_canonical(), remote.port());
        let any: IpAddr = if ip.is_ipv4() {
            IpAddr::from([0u8; 4])
        } else {
            IpAddr::from([0u16; 8])
        };
        let mut locals = vec![SocketAddr::new(ip, local.port())];
        if !ip.is_unspecified() {
            locals.push(SocketAddr::new(any, local.port()));
            if ip.is_ipv4() {
                // A dual-stack socket bound to `::`.
                locals.push(SocketAddr::new(IpAddr::from([0u16; 8]), local.port()));
            }
        }
        locals
            .into_iter()
            .flat_map(move |l| {
                self.by_tuple
                    .get(&(t, l, remote))
                    .map(Vec::as_slice)
                    .unwrap_or(&[])
                    .iter()
            })
            .filter_map(|&i| self.tenancies.get(i))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A `use` record (monotonic ns).
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        sk: &str,
        dir: UseDir,
        proto: &str,
        pid: u32,
        st: u64,
        first: i64,
        last: i64,
        bytes: u64,
    ) -> SockUseRecord {
        let mut r = SockUseRecord::run(
            "tracepoint:sock:sock_send_length",
            sk.into(),
            dir,
            proto,
            4,
            pid,
            pid,
            first,
            last,
            1,
            bytes,
        );
        r.start_time = Some(st);
        r
    }

    /// A `sock` record.
    pub fn bind(
        sk: &str,
        t: i64,
        proto: &str,
        local: &str,
        remote: &str,
        state: Option<&str>,
    ) -> SockUseRecord {
        let l: SocketAddr = local.parse().unwrap();
        let r: SocketAddr = remote.parse().unwrap();
        SockUseRecord::binding(
            "tracepoint:sock:inet_sock_set_state",
            sk.into(),
            t,
            proto,
            (l.ip().to_string(), l.port()),
            Some((r.ip().to_string(), r.port())),
            state,
        )
    }

    #[test]
    fn tenancies_end_at_close_and_at_another_tuple() {
        let mut b = UseBuilder::default();
        let a = ("10.0.0.1:4000", "10.0.0.2:80");
        b.record(0, &bind("01", 10, "tcp", a.0, a.1, Some("SYN_SENT")));
        b.record(0, &bind("01", 20, "tcp", a.0, a.1, Some("ESTABLISHED")));
        b.record(0, &bind("01", 90, "tcp", a.0, a.1, Some("CLOSE")));
        b.record(0, &bind("01", 100, "tcp", "10.0.0.1:4001", a.1, None));
        b.record(0, &bind("zz", 100, "tcp", "10.0.0.1:4001", a.1, None));
        b.record(0, &run("01", UseDir::Send, "tcp", 7, 1, 30, 40, 100));
        b.record(0, &run("01", UseDir::Send, "tcp", 8, 1, 25, 26, 50));
        let idx = b.finish(|_| None);
        assert_eq!(idx.unusable, 1);
        let t: Vec<_> = idx
            .tenancies_of(Transport::Tcp, a.0.parse().unwrap(), a.1.parse().unwrap())
            .collect();
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].from_ns, t[0].until_ns), (10, 90));
        let runs = idx.runs_of(1, UseDir::Send);
        assert_eq!(runs.iter().map(|r| r.pid).collect::<Vec<_>>(), [8, 7]);
        assert!(idx.runs_of(1, UseDir::Recv).is_empty());
        assert_eq!(idx.runs_between(1, UseDir::Send, 26, 40).len(), 1);
    }

    #[test]
    fn an_unbound_datagram_socket_is_found_by_port_and_its_reused_id_ends_it() {
        let mut b = UseBuilder::default();
        let dns = "10.0.0.9:53";
        b.record(0, &bind("02", 10, "udp", "0.0.0.0:5000", dns, None));
        b.record(
            0,
            &bind("02", 20, "udp", "0.0.0.0:5000", "10.0.0.8:53", None),
        );
        b.record(0, &bind("02", 30, "udp", "0.0.0.0:6000", dns, None));
        let idx = b.finish(|_| None);
        let find = |port: u16| -> Vec<(i64, i64)> {
            let l = SocketAddr::new("10.0.0.1".parse().unwrap(), port);
            idx.tenancies_of(Transport::Udp, l, dns.parse().unwrap())
                .map(|t| (t.from_ns, t.until_ns))
                .collect()
        };
        // Another peer keeps it open; another port (a new socket) ends it.
        assert_eq!(find(5000), [(10, 30)]);
        assert_eq!(find(6000), [(30, i64::MAX)]);
    }
}
