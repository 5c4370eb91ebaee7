//! Attribution: each flow joined to the socket that carried it and to the
//! process that held that socket at the time. Per flow, never per packet.
//!
//! Rules are tried in a fixed order and the first one that yields an owner
//! is reported as the flow's [`Method`] (for traffic between two local
//! sockets, both ends are tried within each pair of rules, the initiator
//! first):
//!
//! 1. `exact`: a socket with the flow's 4-tuple (local and remote endpoints).
//! 2. `exact-v4mapped`: the same, held by an IPv6 socket as `::ffff:a.b.c.d`.
//! 3. `listen`: a TCP LISTEN socket on the flow's local address and port
//!    (the server side of an accepted connection whose own socket was never
//!    seen), also through an IPv4-mapped listener address.
//! 4. `listen-wildcard`: the same on `0.0.0.0` or `::`.
//! 5. `udp-bound`: an unconnected UDP socket bound to the local address and
//!    port (also IPv4-mapped).
//! 6. `udp-bound-wildcard`: the same bound to `0.0.0.0` or `::`.
//!
//! Within a rule the socket seen closest in time to the flow's lifetime
//! wins: overlap first (largest overlap), then the smallest gap, never more
//! than `max_gap`. A socket found without an owner (inode 0, no holder, or
//! holders unreadable) does not stop the search; when no later rule finds an
//! owner the flow is `unattributed:no-owner` or `unattributed:owner-unreadable`.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use crate::flow::{ipproto, Family, Flow};
use crate::snapshot::procnet::{is_v4_mapped, STATE_LISTEN};
use crate::snapshot::timeline::{Run, Socket, Timeline, Transport};

/// Default `--max-gap`: 30 s.
///
/// Long enough to cover several recorder intervals (default 100 ms, more
/// under load or `--max-cpu`) and the
/// time between a socket's last sighting and its last packets; shorter than
/// Linux's TIME_WAIT (60 s), during which the initiator cannot reuse the
/// same 4-tuple, so an exact match within the bound is the same connection.
pub const DEFAULT_MAX_GAP_NS: i64 = 30_000_000_000;

/// Why a flow has no owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// No socket matching the flow was seen within the time bound.
    NoSocket,
    /// A matching socket was seen, but with inode 0 (TIME_WAIT, open
    /// request, orphan) or held by no known process.
    NoOwner,
    /// A matching socket was seen with no known holder while some process'
    /// fd directory could not be read (permission): the owner is hidden.
    OwnerUnreadable,
    /// Neither TCP nor UDP (ICMP, GRE, ...): /proc/net/{tcp,udp} cannot own it.
    NotTcpUdp,
    /// The flow lies entirely outside the snapshots' time range and no
    /// socket was found within the bound.
    OutsideRecording,
    /// Neither endpoint is an address of the host or of a recorded namespace.
    NotLocal,
}

impl Reason {
    /// Every reason, in report order.
    pub const ALL: [Reason; 6] = [
        Reason::NoSocket,
        Reason::NoOwner,
        Reason::OwnerUnreadable,
        Reason::NotTcpUdp,
        Reason::OutsideRecording,
        Reason::NotLocal,
    ];

    /// Name as written after `unattributed:`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoSocket => "no-socket",
            Reason::NoOwner => "no-owner",
            Reason::OwnerUnreadable => "owner-unreadable",
            Reason::NotTcpUdp => "not-tcp-udp",
            Reason::OutsideRecording => "outside-recording",
            Reason::NotLocal => "not-local",
        }
    }
}

/// The rule that attributed a flow, or why none did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Method {
    /// Socket with the flow's 4-tuple.
    Exact,
    /// 4-tuple through an IPv4-mapped IPv6 socket.
    ExactV4Mapped,
    /// TCP LISTEN socket on the local address and port.
    Listen,
    /// TCP LISTEN socket on the wildcard address and the local port.
    ListenWildcard,
    /// Unconnected UDP socket bound to the local address and port.
    UdpBound,
    /// Unconnected UDP socket bound to the wildcard address and local port.
    UdpBoundWildcard,
    /// No owner.
    Unattributed(Reason),
}

impl Method {
    /// Every method, in rule order then reasons.
    pub fn all() -> Vec<Method> {
        let mut v = vec![
            Method::Exact,
            Method::ExactV4Mapped,
            Method::Listen,
            Method::ListenWildcard,
            Method::UdpBound,
            Method::UdpBoundWildcard,
        ];
        v.extend(Reason::ALL.iter().map(|r| Method::Unattributed(*r)));
        v
    }

    /// The `method` column value.
    pub fn name(self) -> String {
        match self {
            Method::Exact => "exact".into(),
            Method::ExactV4Mapped => "exact-v4mapped".into(),
            Method::Listen => "listen".into(),
            Method::ListenWildcard => "listen-wildcard".into(),
            Method::UdpBound => "udp-bound".into(),
            Method::UdpBoundWildcard => "udp-bound-wildcard".into(),
            Method::Unattributed(r) => format!("unattributed:{}", r.as_str()),
        }
    }

    /// One-sentence description (also written into summary.json).
    pub fn doc(self) -> &'static str {
        match self {
            Method::Exact => "a socket with the flow's local and remote address and port, seen closest in time to the flow",
            Method::ExactV4Mapped => "as exact, held by a dual-stack IPv6 socket as ::ffff:a.b.c.d while the packets are IPv4",
            Method::Listen => "no connected socket seen; a TCP LISTEN socket on the flow's local address and port (server side of an accepted connection)",
            Method::ListenWildcard => "as listen, the listener bound to 0.0.0.0 or ::",
            Method::UdpBound => "no connected socket seen; an unconnected UDP socket bound to the flow's local address and port",
            Method::UdpBoundWildcard => "as udp-bound, the socket bound to 0.0.0.0 or ::",
            Method::Unattributed(Reason::NoSocket) => "no matching socket was seen within --max-gap of the flow",
            Method::Unattributed(Reason::NoOwner) => "a matching socket was seen but with inode 0 (TIME_WAIT, open request, orphan) or no process holding it",
            Method::Unattributed(Reason::OwnerUnreadable) => "a matching socket was seen without a known holder while some process' fd directory was unreadable (permission)",
            Method::Unattributed(Reason::NotTcpUdp) => "not TCP or UDP (ICMP and others): no socket table can own it",
            Method::Unattributed(Reason::OutsideRecording) => "the flow lies entirely outside the snapshots' time range",
            Method::Unattributed(Reason::NotLocal) => "neither endpoint is an address of the host or of a recorded namespace",
        }
    }

    /// Whether an owner was found.
    pub fn is_attributed(self) -> bool {
        !matches!(self, Method::Unattributed(_))
    }
}

/// A process identity: pid and start time (clock ticks since boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProcKey {
    /// Process id.
    pub pid: u32,
    /// Field 22 of /proc/PID/stat.
    pub start_time: u64,
}

/// The socket a flow was matched to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketMatch {
    /// Index into [`Timeline::sockets`].
    pub index: usize,
    /// Its namespace.
    pub netns: u64,
    /// Its inode (0 when it had none).
    pub inode: u64,
    /// Its state at the end of the matching run.
    pub state: u8,
    /// tcp or udp.
    pub transport: Transport,
    /// ns between the flow's lifetime and the run; 0 when they overlap.
    pub gap_ns: i64,
}

/// The result of attributing one flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribution {
    /// Which endpoint is the host's: `Some(true)` = a (the initiator),
    /// `Some(false)` = b, `None` = neither (the report then puts `a` in the
    /// local columns).
    pub local_is_a: Option<bool>,
    /// Both endpoints are local (loopback or host-to-itself traffic).
    pub both_local: bool,
    /// The rule that matched, or the reason none did.
    pub method: Method,
    /// The socket used (also for `no-owner` and `owner-unreadable`).
    pub socket: Option<SocketMatch>,
    /// Primary owner.
    pub owner: Option<ProcKey>,
    /// Every process holding the socket around the flow's time, by start
    /// time, when there is more than one (the owner included).
    pub shared_with: Vec<ProcKey>,
    /// Short remarks for the `note` column.
    pub notes: Vec<String>,
}

/// Facts about the recording host.
#[derive(Debug, Clone, Default)]
pub struct HostContext {
    /// Namespace the capture was taken in (the recorder's, `host.netns`).
    pub capture_netns: u64,
    /// The host's interface addresses (canonical form).
    pub addresses: HashSet<IpAddr>,
}

impl HostContext {
    /// Whether `ip` is the host's: an interface address, a loopback address,
    /// or the local address of a socket recorded in the capture namespace.
    pub fn is_local(&self, tl: &Timeline, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_loopback()
            || self.addresses.contains(&ip)
            || tl.netns_has_addr(self.capture_netns, ip)
    }
}

/// Attribution options.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Largest distance in time between a flow and a socket sighting.
    pub max_gap_ns: i64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_gap_ns: DEFAULT_MAX_GAP_NS,
        }
    }
}

/// One way to read a flow: which end is local, and where to look.
struct Orientation {
    local_is_a: bool,
    netns: Vec<u64>,
}

/// Which namespaces may hold the socket of local address `ip`: the capture
/// namespace first (when the address is the host's), then any other
/// namespace that has a socket on that address. Loopback addresses exist in
/// every namespace but a capture only sees its own namespace's loopback, so
/// they never lead to another namespace.
fn namespaces_for(tl: &Timeline, ctx: &HostContext, ip: IpAddr, host_local: bool) -> Vec<u64> {
    let mut v = Vec::new();
    if host_local {
        v.push(ctx.capture_netns);
    }
    if !ip.to_canonical().is_loopback() {
        for &ns in tl.netns_list() {
            if ns != ctx.capture_netns && tl.netns_has_addr(ns, ip) {
                v.push(ns);
            }
        }
    }
    v
}

fn orientations(tl: &Timeline, ctx: &HostContext, f: &Flow) -> Vec<Orientation> {
    let a_local = ctx.is_local(tl, f.a_ip);
    let b_local = ctx.is_local(tl, f.b_ip);
    let mut out = Vec::new();
    for (is_a, ip, local) in [(true, f.a_ip, a_local), (false, f.b_ip, b_local)] {
        if local {
            out.push(Orientation {
                local_is_a: is_a,
                netns: namespaces_for(tl, ctx, ip, true),
            });
        }
    }
    if out.is_empty() {
        // Traffic between other namespaces seen from the capture point
        // (bridge, veth): usable only through the namespace that owns the
        // address.
        for (is_a, ip) in [(true, f.a_ip), (false, f.b_ip)] {
            let ns = namespaces_for(tl, ctx, ip, false);
            if !ns.is_empty() {
                out.push(Orientation {
                    local_is_a: is_a,
                    netns: ns,
                });
            }
        }
    }
    out
}

/// Rules in tiers. Within a tier, the orientations are tried in order
/// before the next tier: for traffic between two local sockets, the
/// initiator's socket found through a wildcard address beats the
/// responder's found through its specific address.
const TIERS: [[Method; 2]; 3] = [
    [Method::Exact, Method::ExactV4Mapped],
    [Method::Listen, Method::ListenWildcard],
    [Method::UdpBound, Method::UdpBoundWildcard],
];

/// Whether socket `s` (in namespace `ns`) is a candidate of `rule` for a
/// flow whose local end is `local`.
fn rule_accepts(rule: Method, s: &Socket, ns: u64, local: SocketAddr) -> bool {
    if s.key.netns != ns {
        return false;
    }
    let sip = s.key.local.ip();
    let flow_v4 = local.is_ipv4();
    let same_addr = sip.to_canonical() == local.ip().to_canonical();
    // 0.0.0.0 accepts IPv4 only; `::` accepts both (a dual-stack socket,
    // unless IPV6_V6ONLY, which /proc does not show).
    let wildcard = sip.is_unspecified() && (flow_v4 || sip.is_ipv6());
    match rule {
        Method::Exact => !is_v4_mapped(sip) && s.key.local.is_ipv4() == flow_v4,
        Method::ExactV4Mapped => is_v4_mapped(sip),
        Method::Listen => {
            s.key.transport == Transport::Tcp
                && same_addr
                && s.runs.iter().any(|r| r.state == STATE_LISTEN)
        }
        Method::ListenWildcard => {
            s.key.transport == Transport::Tcp
                && wildcard
                && s.runs.iter().any(|r| r.state == STATE_LISTEN)
        }
        Method::UdpBound => s.key.transport == Transport::Udp && same_addr,
        Method::UdpBoundWildcard => s.key.transport == Transport::Udp && wildcard,
        Method::Unattributed(_) => false,
    }
}

/// The run of `s` nearest to `[t0, t1]`: largest overlap, then smallest gap.
fn nearest_run(s: &Socket, t0: i64, t1: i64) -> Option<&Run> {
    s.runs
        .iter()
        .min_by_key(|r| (r.gap(t0, t1), std::cmp::Reverse(r.overlap(t0, t1))))
}

/// Who owned the socket, as far as the fd listings tell.
enum Ownership {
    Owned(ProcKey, Vec<ProcKey>),
    NoHolder,
    Unreadable,
}

fn ownership(tl: &Timeline, s: &Socket, run: &Run, t0: i64, t1: i64, max_gap: i64) -> Ownership {
    if s.key.inode == 0 {
        return Ownership::NoHolder;
    }
    // A holding counts when it overlaps the socket's matching run or lies
    // within the bound of the flow itself.
    let near = |r: &Run| r.gap(t0, t1) <= max_gap || r.gap(run.start_ns, run.end_ns) == 0;
    let mut found: Vec<(ProcKey, i64, i64)> = Vec::new();
    for h in tl
        .holders
        .get(&s.key.inode)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let runs: Vec<&Run> = h.runs.iter().filter(|r| near(r)).collect();
        if runs.is_empty() {
            continue;
        }
        let overlap = runs.iter().map(|r| r.overlap(t0, t1)).max().unwrap_or(0);
        let gap = runs.iter().map(|r| r.gap(t0, t1)).min().unwrap_or(i64::MAX);
        found.push((
            ProcKey {
                pid: h.pid,
                start_time: h.start_time,
            },
            overlap,
            gap,
        ));
    }
    // Primary: the holder that overlaps the flow most, then the nearest;
    // ties go to the most recently started process: a socket shared through
    // fork or socket activation is typically used by the child (nginx
    // worker, systemd-activated service), not by the parent that made it.
    let primary = found
        .iter()
        .min_by_key(|(k, overlap, gap)| {
            (
                std::cmp::Reverse(*overlap),
                *gap,
                std::cmp::Reverse(k.start_time),
                k.pid,
            )
        })
        .map(|x| x.0);
    if let Some(p) = primary {
        let mut all: Vec<ProcKey> = found.iter().map(|x| x.0).collect();
        all.sort_by_key(|k| (k.start_time, k.pid));
        if all.len() < 2 {
            all.clear();
        }
        return Ownership::Owned(p, all);
    }
    let hidden = tl.denied.iter().any(|d| {
        let same_ns = tl
            .processes
            .get(&(d.pid, d.start_time))
            .map_or(true, |p| p.netns == s.key.netns);
        same_ns && d.runs.iter().any(&near)
    });
    if hidden {
        Ownership::Unreadable
    } else {
        Ownership::NoHolder
    }
}

/// Attributes one flow.
pub fn attribute(tl: &Timeline, ctx: &HostContext, opts: &Options, f: &Flow) -> Attribution {
    let (t0, t1) = (f.first_seen_ns, f.last_seen_ns.max(f.first_seen_ns));
    let orients = orientations(tl, ctx, f);
    let mut out = Attribution {
        local_is_a: orients.first().map(|o| o.local_is_a),
        both_local: orients.len() == 2
            && orients
                .iter()
                .all(|o| o.netns.first() == Some(&ctx.capture_netns)),
        method: Method::Unattributed(Reason::NoSocket),
        socket: None,
        owner: None,
        shared_with: Vec::new(),
        notes: Vec::new(),
    };
    let transport = match f.proto {
        ipproto::TCP => Transport::Tcp,
        ipproto::UDP => Transport::Udp,
        _ => {
            out.method = Method::Unattributed(Reason::NotTcpUdp);
            return out;
        }
    };
    if orients.is_empty() {
        out.method = Method::Unattributed(Reason::NotLocal);
        return out;
    }
    let (Some(a_port), Some(b_port)) = (f.a_port, f.b_port) else {
        return out;
    };
    let a = SocketAddr::new(f.a_ip, a_port);
    let b = SocketAddr::new(f.b_ip, b_port);
    // First socket found without an owner, kept in case no rule finds one.
    let mut ownerless: Option<(SocketMatch, Reason, bool)> = None;
    for (tier, o, rule) in TIERS.iter().flat_map(|t| {
        orients
            .iter()
            .flat_map(move |o| t.iter().map(move |r| (t, o, *r)))
    }) {
        // Connected-socket rules look the 4-tuple up; the others the port.
        let uses_port = tier[0] != Method::Exact;
        if uses_port && (tier[0] == Method::Listen) != (transport == Transport::Tcp) {
            continue;
        }
        {
            let (local, remote) = if o.local_is_a { (a, b) } else { (b, a) };
            let cands: &[usize] = if uses_port {
                tl.bound(transport, local.port())
            } else {
                tl.exact(transport, local, remote)
            };
            for &ns in &o.netns {
                let best = cands
                    .iter()
                    .filter_map(|&i| tl.sockets.get(i).map(|s| (i, s)))
                    .filter(|(_, s)| rule_accepts(rule, s, ns, local))
                    .filter_map(|(i, s)| nearest_run(s, t0, t1).map(|r| (i, s, r)))
                    .filter(|(_, _, r)| r.gap(t0, t1) <= opts.max_gap_ns)
                    .min_by_key(|(i, _, r)| {
                        (r.gap(t0, t1), std::cmp::Reverse(r.overlap(t0, t1)), *i)
                    });
                let Some((index, s, run)) = best else {
                    continue;
                };
                let m = SocketMatch {
                    index,
                    netns: s.key.netns,
                    inode: s.key.inode,
                    state: run.state,
                    transport,
                    gap_ns: run.gap(t0, t1),
                };
                match ownership(tl, s, run, t0, t1, opts.max_gap_ns) {
                    Ownership::Owned(owner, shared) => {
                        out.method = rule;
                        out.local_is_a = Some(o.local_is_a);
                        out.socket = Some(m);
                        out.owner = Some(owner);
                        if !shared.is_empty() {
                            out.notes.push(format!(
                                "socket shared by {} processes; owner is the one using it longest during the flow, then the youngest",
                                shared.len()
                            ));
                        }
                        out.shared_with = shared;
                        if is_v4_mapped(s.key.local.ip()) && rule != Method::ExactV4Mapped {
                            out.notes.push("ipv4-mapped socket".into());
                        }
                        if ns != ctx.capture_netns {
                            out.notes.push("socket in another network namespace".into());
                        }
                        if out.both_local {
                            out.notes.push(format!(
                                "both ends local; attributed to the {}'s socket",
                                if o.local_is_a {
                                    "initiator"
                                } else {
                                    "responder"
                                }
                            ));
                        }
                        if let Some((om, r, _)) = &ownerless {
                            out.notes.push(format!(
                                "{} socket inode {} seen without owner ({})",
                                if om.inode == 0 { "an exact" } else { "a" },
                                om.inode,
                                r.as_str()
                            ));
                        }
                        return out;
                    }
                    Ownership::NoHolder => {
                        if ownerless.is_none() {
                            ownerless = Some((m, Reason::NoOwner, o.local_is_a));
                        }
                    }
                    Ownership::Unreadable => {
                        if ownerless
                            .as_ref()
                            .map_or(true, |x| x.1 == Reason::NoOwner && x.0.inode == 0)
                        {
                            ownerless = Some((m, Reason::OwnerUnreadable, o.local_is_a));
                        }
                    }
                }
            }
        }
    }
    if let Some((m, reason, local_is_a)) = ownerless {
        out.method = Method::Unattributed(reason);
        out.socket = Some(m);
        out.local_is_a = Some(local_is_a);
        return out;
    }
    if let Some((s0, s1)) = tl.time_range() {
        if t1 < s0 || t0 > s1 {
            out.method = Method::Unattributed(Reason::OutsideRecording);
        }
    }
    out
}

/// Attributes every flow, in parallel; the result is in flow order.
pub fn attribute_all(
    tl: &Timeline,
    ctx: &HostContext,
    opts: &Options,
    flows: &[Flow],
) -> Vec<Attribution> {
    use rayon::prelude::*;
    flows
        .par_iter()
        .map(|f| attribute(tl, ctx, opts, f))
        .collect()
}

/// Family of an address as the flow type names it.
pub fn family_of(ip: IpAddr) -> Family {
    if ip.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::IcmpKey;
    use crate::snapshot::timeline::tests::{build, clock, row4, table, Snap};
    use procflow_format::layout::{SnapshotKind, TableStored};

    const NS: u64 = 4026531840;
    const NS2: u64 = 4026532500;
    const K: SnapshotKind = SnapshotKind::Keyframe;
    const FULL: TableStored = TableStored::Full;

    fn ctx() -> HostContext {
        HostContext {
            capture_netns: NS,
            addresses: ["10.0.0.1".parse().unwrap()].into_iter().collect(),
        }
    }

    fn flow(proto: u8, a: &str, b: &str, t0_ms: i64, t1_ms: i64) -> Flow {
        let a: SocketAddr = a.parse().unwrap();
        let b: SocketAddr = b.parse().unwrap();
        Flow {
            id: 1,
            proto,
            family: family_of(a.ip()),
            a_ip: a.ip(),
            a_port: Some(a.port()),
            b_ip: b.ip(),
            b_port: Some(b.port()),
            icmp: None,
            first_seen_ns: clock(t0_ms).realtime_ns,
            last_seen_ns: clock(t1_ms).realtime_ns,
            packets_ab: 1,
            packets_ba: 1,
            bytes_ab: 100,
            bytes_ba: 100,
            ip_bytes_ab: 86,
            ip_bytes_ba: 86,
            tcp_flags_ab: 0,
            tcp_flags_ba: 0,
        }
    }

    fn tcp(a: &str, b: &str, t0: i64, t1: i64) -> Flow {
        flow(ipproto::TCP, a, b, t0, t1)
    }

    /// Two keyframes at 0 s and 1 s with the same tables and fds.
    fn two(tables: &[(u64, &'static str, Vec<String>)], fds: &[&str]) -> Timeline {
        let mk = |seq, ms| {
            let mut s = Snap::new(seq, ms, K).fds(fds);
            for (ns, t, rows) in tables {
                s = s.table(*ns, t, FULL, table(rows));
            }
            s
        };
        let (tl, d) = build(&[mk(1, 0), mk(2, 1000)]);
        assert_eq!(d.bad_lines, 0, "{d:?}");
        tl
    }

    fn run(tl: &Timeline, f: &Flow) -> Attribution {
        attribute(tl, &ctx(), &Options::default(), f)
    }

    fn pid(a: &Attribution) -> Option<u32> {
        a.owner.map(|o| o.pid)
    }

    #[test]
    fn exact_and_time_bound() {
        let tl = two(
            &[(
                NS,
                "tcp",
                vec![row4("10.0.0.1:40000", "93.184.216.34:443", 1, 100)],
            )],
            &["10 500 4026531840 3,100"],
        );
        let a = run(&tl, &tcp("10.0.0.1:40000", "93.184.216.34:443", 200, 800));
        assert_eq!(a.method, Method::Exact);
        assert_eq!(pid(&a), Some(10));
        assert_eq!(a.local_is_a, Some(true));
        assert_eq!(a.socket.unwrap().gap_ns, 0);
        assert_eq!(a.socket.unwrap().inode, 100);
        // Same tuple seen from the other side: the server's reply flow.
        let a = run(&tl, &tcp("93.184.216.34:443", "10.0.0.1:40000", 200, 800));
        assert_eq!((a.method, a.local_is_a), (Method::Exact, Some(false)));
        // 5 s after the last sighting: still within the bound.
        let a = run(&tl, &tcp("10.0.0.1:40000", "93.184.216.34:443", 6020, 7000));
        assert_eq!(a.method, Method::Exact);
        assert_eq!(a.socket.unwrap().gap_ns, 5_000_000_000);
        // 40 s after: outside the bound, and outside the recording.
        let a = run(
            &tl,
            &tcp("10.0.0.1:40000", "93.184.216.34:443", 41020, 42000),
        );
        assert_eq!(a.method, Method::Unattributed(Reason::OutsideRecording));
        let tight = Options {
            max_gap_ns: 1_000_000_000,
        };
        let a = attribute(
            &tl,
            &ctx(),
            &tight,
            &tcp("10.0.0.1:40000", "93.184.216.34:443", 6020, 7000),
        );
        assert_eq!(a.method, Method::Unattributed(Reason::OutsideRecording));
    }

    #[test]
    fn exact_v4mapped() {
        let tl = two(
            &[(
                NS,
                "tcp6",
                vec![row4(
                    "[::ffff:10.0.0.1]:8080",
                    "[::ffff:10.0.0.9]:5000",
                    1,
                    7,
                )],
            )],
            &["20 900 4026531840 7"],
        );
        let a = run(&tl, &tcp("10.0.0.9:5000", "10.0.0.1:8080", 0, 500));
        assert_eq!(a.method, Method::ExactV4Mapped);
        assert_eq!(pid(&a), Some(20));
        assert_eq!(a.local_is_a, Some(false));
    }

    #[test]
    fn listen_specific_mapped_and_wildcard() {
        let tl = two(
            &[
                (
                    NS,
                    "tcp",
                    vec![
                        row4("10.0.0.1:8080", "0.0.0.0:0", 0x0A, 30),
                        row4("0.0.0.0:22", "0.0.0.0:0", 0x0A, 31),
                    ],
                ),
                (
                    NS,
                    "tcp6",
                    vec![
                        row4("[::ffff:10.0.0.1]:9090", "[::]:0", 0x0A, 32),
                        row4("[::]:443", "[::]:0", 0x0A, 33),
                    ],
                ),
            ],
            &[
                "30 1 4026531840 30",
                "31 1 4026531840 31",
                "32 1 4026531840 32",
                "33 1 4026531840 33",
            ],
        );
        let a = run(&tl, &tcp("10.0.0.9:5555", "10.0.0.1:8080", 0, 500));
        assert_eq!(
            (a.method, pid(&a), a.local_is_a),
            (Method::Listen, Some(30), Some(false))
        );
        let a = run(&tl, &tcp("10.0.0.9:5555", "10.0.0.1:22", 0, 500));
        assert_eq!((a.method, pid(&a)), (Method::ListenWildcard, Some(31)));
        let a = run(&tl, &tcp("10.0.0.9:5555", "10.0.0.1:9090", 0, 500));
        assert_eq!((a.method, pid(&a)), (Method::Listen, Some(32)));
        assert!(a.notes.iter().any(|n| n.contains("ipv4-mapped")));
        // `::` accepts IPv4 too (dual stack).
        let a = run(&tl, &tcp("10.0.0.9:5555", "10.0.0.1:443", 0, 500));
        assert_eq!((a.method, pid(&a)), (Method::ListenWildcard, Some(33)));
        // 0.0.0.0 does not accept IPv6.
        let v6 = Snap::new(1, 0, K)
            .table(
                NS,
                "tcp",
                FULL,
                table(&[row4("0.0.0.0:22", "0.0.0.0:0", 0x0A, 31)]),
            )
            .fds(&["31 1 4026531840 31"]);
        let (tl6, _) = build(&[v6]);
        let c = HostContext {
            capture_netns: NS,
            addresses: ["fd00::1".parse().unwrap()].into_iter().collect(),
        };
        let a = attribute(
            &tl6,
            &c,
            &Options::default(),
            &tcp("[fd00::9]:5555", "[fd00::1]:22", 0, 10),
        );
        assert_eq!(a.method, Method::Unattributed(Reason::NoSocket));
        // A LISTEN socket does not own UDP.
        let a = run(
            &tl,
            &flow(ipproto::UDP, "10.0.0.9:5555", "10.0.0.1:8080", 0, 500),
        );
        assert_eq!(a.method, Method::Unattributed(Reason::NoSocket));
    }

    #[test]
    fn udp_bound_specific_and_wildcard() {
        let tl = two(
            &[(
                NS,
                "udp",
                vec![
                    row4("10.0.0.1:53", "0.0.0.0:0", 0x07, 40),
                    row4("0.0.0.0:5353", "0.0.0.0:0", 0x07, 41),
                    row4("10.0.0.1:41000", "9.9.9.9:53", 0x01, 42),
                ],
            )],
            &[
                "40 1 4026531840 40",
                "41 2 4026531840 41",
                "42 3 4026531840 42",
            ],
        );
        let a = run(
            &tl,
            &flow(ipproto::UDP, "10.0.0.9:3333", "10.0.0.1:53", 0, 500),
        );
        assert_eq!((a.method, pid(&a)), (Method::UdpBound, Some(40)));
        let a = run(
            &tl,
            &flow(ipproto::UDP, "224.0.0.251:5353", "10.0.0.1:5353", 0, 500),
        );
        assert_eq!((a.method, pid(&a)), (Method::UdpBoundWildcard, Some(41)));
        // A connected UDP socket is an exact match.
        let a = run(
            &tl,
            &flow(ipproto::UDP, "10.0.0.1:41000", "9.9.9.9:53", 0, 500),
        );
        assert_eq!((a.method, pid(&a)), (Method::Exact, Some(42)));
    }

    #[test]
    fn every_unattribution_reason() {
        let tl = two(
            &[(
                NS,
                "tcp",
                vec![
                    row4("10.0.0.1:40000", "10.0.0.2:80", 0x06, 0),
                    row4("10.0.0.1:40001", "10.0.0.2:80", 0x01, 555),
                    row4("10.0.0.1:40002", "10.0.0.2:80", 0x01, 556),
                ],
            )],
            &["!300 77 EACCES"],
        );
        // TIME_WAIT row: inode 0.
        let a = run(&tl, &tcp("10.0.0.1:40000", "10.0.0.2:80", 0, 500));
        assert_eq!(a.method, Method::Unattributed(Reason::NoOwner));
        assert_eq!(a.socket.unwrap().inode, 0);
        // Holder hidden by EACCES.
        let a = run(&tl, &tcp("10.0.0.1:40001", "10.0.0.2:80", 0, 500));
        assert_eq!(a.method, Method::Unattributed(Reason::OwnerUnreadable));
        let a = run(&tl, &tcp("10.0.0.1:40009", "10.0.0.2:80", 0, 500));
        assert_eq!(a.method, Method::Unattributed(Reason::NoSocket));
        let mut icmp = flow(ipproto::ICMP, "10.0.0.1:0", "10.0.0.2:0", 0, 500);
        icmp.a_port = None;
        icmp.b_port = None;
        icmp.icmp = Some(IcmpKey {
            icmp_type: 8,
            code: 0,
            id: 1,
        });
        assert_eq!(
            run(&tl, &icmp).method,
            Method::Unattributed(Reason::NotTcpUdp)
        );
        assert_eq!(run(&tl, &icmp).local_is_a, Some(true));
        let a = run(
            &tl,
            &tcp("10.0.0.1:40001", "10.0.0.2:80", -3_600_000, -3_500_000),
        );
        assert_eq!(a.method, Method::Unattributed(Reason::OutsideRecording));
        let a = run(&tl, &tcp("8.8.8.8:1000", "1.1.1.1:80", 0, 500));
        assert_eq!(
            (a.method, a.local_is_a),
            (Method::Unattributed(Reason::NotLocal), None)
        );
        // Without the denied pid, the same socket has no owner.
        let tl2 = two(
            &[(
                NS,
                "tcp",
                vec![row4("10.0.0.1:40001", "10.0.0.2:80", 1, 555)],
            )],
            &[],
        );
        let a = run(&tl2, &tcp("10.0.0.1:40001", "10.0.0.2:80", 0, 500));
        assert_eq!(a.method, Method::Unattributed(Reason::NoOwner));
    }

    #[test]
    fn port_reuse_by_two_pids_gives_two_owners() {
        let r1 = row4("10.0.0.1:40000", "10.0.0.2:80", 1, 1001);
        let r2 = row4("10.0.0.1:40000", "10.0.0.2:80", 1, 1002);
        let snaps = vec![
            Snap::new(1, 0, K)
                .table(NS, "tcp", FULL, table(std::slice::from_ref(&r1)))
                .fds(&["10 100 4026531840 1001"]),
            Snap::new(2, 1000, K)
                .table(NS, "tcp", FULL, table(&[r1]))
                .fds(&["10 100 4026531840 1001"]),
            Snap::new(3, 40000, K)
                .table(NS, "tcp", FULL, table(std::slice::from_ref(&r2)))
                .fds(&["11 4000 4026531840 1002"]),
            Snap::new(4, 41000, K)
                .table(NS, "tcp", FULL, table(&[r2]))
                .fds(&["11 4000 4026531840 1002"]),
        ];
        let (tl, _) = build(&snaps);
        let a = run(&tl, &tcp("10.0.0.1:40000", "10.0.0.2:80", 100, 900));
        assert_eq!((pid(&a), a.socket.unwrap().inode), (Some(10), 1001));
        let b = run(&tl, &tcp("10.0.0.1:40000", "10.0.0.2:80", 40100, 40900));
        assert_eq!((pid(&b), b.socket.unwrap().inode), (Some(11), 1002));
        // Between the two, nearest in time wins: 3 s after the first one.
        let c = run(&tl, &tcp("10.0.0.1:40000", "10.0.0.2:80", 4000, 4020));
        assert_eq!(pid(&c), Some(10));
        assert_eq!(c.socket.unwrap().gap_ns, 2_980_000_000);
    }

    #[test]
    fn shared_socket_names_all_holders_and_the_youngest_as_owner() {
        let tl = two(
            &[(NS, "tcp", vec![row4("0.0.0.0:22", "0.0.0.0:0", 0x0A, 1337)])],
            &["1 5 4026531840 1337", "1337 900 4026531840 1337"],
        );
        let a = run(&tl, &tcp("10.0.0.9:5555", "10.0.0.1:22", 0, 500));
        assert_eq!(pid(&a), Some(1337));
        assert!(a.notes.iter().any(|n| n.contains("shared by 2")));
        assert_eq!(
            a.shared_with,
            vec![
                ProcKey {
                    pid: 1,
                    start_time: 5
                },
                ProcKey {
                    pid: 1337,
                    start_time: 900
                }
            ]
        );
    }

    #[test]
    fn capture_namespace_is_preferred_over_the_mirror_image() {
        let tl = two(
            &[
                (
                    NS,
                    "tcp",
                    vec![row4("10.0.0.1:40000", "10.0.0.2:80", 1, 50)],
                ),
                (
                    NS2,
                    "tcp",
                    vec![
                        row4("10.0.0.2:80", "10.0.0.1:40000", 1, 60),
                        row4("10.0.0.2:80", "0.0.0.0:0", 0x0A, 61),
                        row4("10.0.0.2:80", "10.0.0.3:40000", 1, 62),
                    ],
                ),
            ],
            &["10 1 4026531840 50", "20 2 4026532500 60,61,62"],
        );
        let a = run(&tl, &tcp("10.0.0.1:40000", "10.0.0.2:80", 0, 500));
        assert_eq!(
            (pid(&a), a.socket.unwrap().netns, a.local_is_a),
            (Some(10), NS, Some(true))
        );
        // Our side's socket unseen: the peer namespace's listener must not
        // be taken for ours.
        let a = run(&tl, &tcp("10.0.0.1:40001", "10.0.0.2:80", 0, 500));
        assert_eq!(a.method, Method::Unattributed(Reason::NoSocket));
        // Traffic between two other addresses, one of them the peer
        // namespace's: attributed there, and said so.
        let a = run(&tl, &tcp("10.0.0.3:40000", "10.0.0.2:80", 0, 500));
        assert_eq!(
            (a.method, pid(&a), a.socket.unwrap().netns),
            (Method::Exact, Some(20), NS2)
        );
        assert_eq!(a.local_is_a, Some(false));
        assert!(a.notes.iter().any(|n| n.contains("namespace")));
    }

    #[test]
    fn loopback_prefers_the_initiator_socket() {
        let tl = two(
            &[(
                NS,
                "tcp",
                vec![
                    row4("127.0.0.1:50000", "127.0.0.1:8000", 1, 70),
                    row4("127.0.0.1:8000", "127.0.0.1:50000", 1, 71),
                    row4("127.0.0.1:8000", "0.0.0.0:0", 0x0A, 72),
                ],
            )],
            &["10 1 4026531840 70", "20 2 4026531840 71,72"],
        );
        let a = run(&tl, &tcp("127.0.0.1:50000", "127.0.0.1:8000", 0, 500));
        assert_eq!(
            (a.method, pid(&a), a.local_is_a, a.both_local),
            (Method::Exact, Some(10), Some(true), true)
        );
        assert!(a.notes.iter().any(|n| n.contains("initiator")));
        // Unconnected UDP on loopback: the sender's wildcard-bound socket
        // is preferred over the receiver's specific one.
        let tlu = two(
            &[(
                NS,
                "udp",
                vec![
                    row4("0.0.0.0:32790", "0.0.0.0:0", 0x07, 80),
                    row4("127.0.0.1:19999", "0.0.0.0:0", 0x07, 81),
                ],
            )],
            &["10 1 4026531840 80", "20 2 4026531840 81"],
        );
        let a = run(
            &tlu,
            &flow(ipproto::UDP, "127.0.0.1:32790", "127.0.0.1:19999", 0, 500),
        );
        assert_eq!(
            (a.method, pid(&a), a.local_is_a),
            (Method::UdpBoundWildcard, Some(10), Some(true))
        );
        // The client gone unseen: the server's accepted socket owns it.
        let a = run(&tl, &tcp("127.0.0.1:50001", "127.0.0.1:8000", 0, 500));
        assert_eq!(
            (a.method, pid(&a), a.local_is_a),
            (Method::Listen, Some(20), Some(false))
        );
    }
}

/// The join on third-party fixtures: /proc/net tables and the fd links of
/// the projects they come from (read from ../shared/testdata, never copied).
#[cfg(test)]
mod fixture_tests {
    use super::*;
    use crate::snapshot::timeline::tests::{build, Snap};
    use procflow_format::layout::{SnapshotKind, TableStored};
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::PathBuf;

    const NS: u64 = 4026531840;

    fn dir() -> Option<PathBuf> {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/proc-fixtures");
        if p.is_dir() {
            Some(p)
        } else {
            eprintln!("SKIPPED: ../shared/testdata/proc-fixtures is absent");
            None
        }
    }

    /// fd_listings.tsv as `PID START NETNS INODES` lines per fixture set.
    fn fd_lines(dir: &std::path::Path, set: &str) -> Vec<String> {
        let text = std::fs::read_to_string(dir.join("fd_listings.tsv")).unwrap();
        let mut by_pid: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
        for line in text.lines().skip(1) {
            let c: Vec<&str> = line.split('\t').collect();
            if c[0] != set {
                continue;
            }
            let pid: u32 = c[1].parse().unwrap();
            let inodes = by_pid.entry(pid).or_default();
            if let Some(n) = c[3]
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
            {
                inodes.insert(n.parse().unwrap());
            }
        }
        by_pid
            .into_iter()
            .filter(|(_, i)| !i.is_empty())
            .map(|(pid, inodes)| {
                let list: Vec<String> = inodes.iter().map(|i| i.to_string()).collect();
                format!("{pid} {} {NS} {}", pid * 10, list.join(","))
            })
            .collect()
    }

    /// Every expected_sockets.tsv row with `expected_pids`: the socket is in
    /// the timeline and its holders are exactly those pids.
    #[test]
    fn expected_owners_of_fixture_sockets() {
        let Some(dir) = dir() else { return };
        let sets = [
            (
                "dissect-target",
                "dissect-target/proc/net/",
                &["tcp", "tcp6", "udp", "udp6"][..],
            ),
            (
                "weaveworks-scope",
                "weaveworks-scope/",
                &["mockfs_proc_1_net_tcp.txt"][..],
            ),
        ];
        let expected = std::fs::read_to_string(dir.join("expected_sockets.tsv")).unwrap();
        let mut checked = 0;
        for (set, prefix, files) in sets {
            let fds = fd_lines(&dir, set);
            let refs: Vec<&str> = fds.iter().map(String::as_str).collect();
            let mut snap = Snap::new(1, 0, SnapshotKind::Keyframe).fds(&refs);
            for f in files {
                let table: &'static str = match *f {
                    "tcp" | "mockfs_proc_1_net_tcp.txt" => "tcp",
                    "tcp6" => "tcp6",
                    "udp" => "udp",
                    _ => "udp6",
                };
                let text = std::fs::read_to_string(dir.join(format!("{prefix}{f}"))).unwrap();
                snap = snap.table(NS, table, TableStored::Full, text);
            }
            let (tl, d) = build(&[snap]);
            assert_eq!(d.bad_lines, 0, "{set}: {d:?}");
            for line in expected.lines().filter(|l| !l.starts_with('#')).skip(1) {
                let c: Vec<&str> = line.split('\t').collect();
                if !c[0].starts_with(prefix) || c[10].is_empty() {
                    continue;
                }
                let local: SocketAddr =
                    SocketAddr::new(c[3].parse().unwrap(), c[4].parse().unwrap());
                let remote: SocketAddr =
                    SocketAddr::new(c[5].parse().unwrap(), c[6].parse().unwrap());
                let sock = tl
                    .sockets
                    .iter()
                    .find(|s| s.key.local == local && s.key.remote == remote)
                    .unwrap_or_else(|| panic!("{line}: socket not in timeline"));
                let got: BTreeSet<u32> =
                    tl.holders[&sock.key.inode].iter().map(|h| h.pid).collect();
                let want: BTreeSet<u32> = c[10].split(';').map(|p| p.parse().unwrap()).collect();
                assert_eq!(got, want, "{line}");
                checked += 1;
            }
        }
        assert!(checked >= 8, "only {checked} rows");
    }

    /// dissect.target's sshd-style listener shared by pid 1 and pid 1337, and
    /// its ESTABLISHED row with inode 0: a connection to port 22 goes to the
    /// younger holder and names both; the inode-0 tuple has no owner, so the
    /// listener owns it.
    #[test]
    fn dissect_target_join() {
        let Some(dir) = dir() else { return };
        let fds = fd_lines(&dir, "dissect-target");
        let refs: Vec<&str> = fds.iter().map(String::as_str).collect();
        let tcp = std::fs::read_to_string(dir.join("dissect-target/proc/net/tcp")).unwrap();
        let snap = Snap::new(1, 0, SnapshotKind::Keyframe).fds(&refs).table(
            NS,
            "tcp",
            TableStored::Full,
            tcp,
        );
        let (tl, _) = build(&[snap]);
        let ctx = HostContext {
            capture_netns: NS,
            addresses: ["172.16.64.136".parse().unwrap()].into_iter().collect(),
        };
        let t = crate::snapshot::timeline::tests::clock(5).realtime_ns;
        let mk = |a: &str, b: &str| Flow {
            id: 1,
            proto: ipproto::TCP,
            family: Family::V4,
            a_ip: a.parse::<SocketAddr>().unwrap().ip(),
            a_port: Some(a.parse::<SocketAddr>().unwrap().port()),
            b_ip: b.parse::<SocketAddr>().unwrap().ip(),
            b_port: Some(b.parse::<SocketAddr>().unwrap().port()),
            icmp: None,
            first_seen_ns: t,
            last_seen_ns: t,
            packets_ab: 1,
            packets_ba: 0,
            bytes_ab: 60,
            bytes_ba: 0,
            ip_bytes_ab: 46,
            ip_bytes_ba: 0,
            tcp_flags_ab: 2,
            tcp_flags_ba: 0,
        };
        let a = attribute(
            &tl,
            &ctx,
            &Options::default(),
            &mk("172.16.64.1:49442", "172.16.64.136:22"),
        );
        assert_eq!(a.method, Method::ListenWildcard);
        assert_eq!(a.owner.map(|o| o.pid), Some(1337));
        assert_eq!(
            a.shared_with.iter().map(|k| k.pid).collect::<Vec<_>>(),
            vec![1, 1337]
        );
        assert!(
            a.notes.iter().any(|n| n.contains("without owner")),
            "{:?}",
            a.notes
        );
    }
}
