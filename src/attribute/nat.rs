//! The NAT rules: a flow whose wire tuple no socket holds is translated
//! through the connection-tracking entry valid at its time, and the
//! translated tuple is looked up as usual, in whichever namespace holds it.
//!
//! The wire tuple is one direction of an entry; the other direction gives
//! the tuple the socket holds. Masquerade (SNAT): the capture on the
//! uplink sees the reply direction (`peer -> host:port`), the container's
//! socket holds the original (`container -> peer`). A published port
//! (DNAT): the capture sees the original (`peer -> host:8088`), the
//! container's server socket holds the reply's (`container:80 -> peer`).
//! Entries without translation are skipped (their other direction is the
//! mirror of the wire tuple, already tried by the exact rule).

use std::net::SocketAddr;

use procflow_format::conntrack::{NatKind, Tuple};

use super::{namespaces_for, try_rule, Found, HostContext, Query, Rule};
use crate::snapshot::conntrack::CtRecord;
use crate::snapshot::timeline::{Timeline, Transport};

/// How a flow was translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatMatch {
    /// Translation the entry shows.
    pub kind: NatKind,
    /// Local end of the socket's tuple (inside the container).
    pub local: SocketAddr,
    /// Remote end of the socket's tuple.
    pub remote: SocketAddr,
    /// Namespace whose conntrack table held the entry.
    pub netns: u64,
    /// ns between the entry's sighting and the flow; 0 when seen during it.
    pub gap_ns: i64,
}

/// The namespace of a query whose namespace is unknown: no namespace has
/// inode 0, so only evidence without a namespace (events of processes gone
/// before it was read, send runs) fits it.
pub(super) const UNKNOWN_NETNS: u64 = 0;

/// The rules tried on the translated tuple for each NAT rule.
fn inner(rule: Rule) -> &'static [Rule] {
    match rule {
        Rule::EventNat => &[
            Rule::EventUse,
            Rule::EventConnect,
            Rule::EventAccept,
            Rule::LookupOnSyn,
            Rule::EventSend,
            Rule::EventClose,
        ],
        Rule::ExactNat => &[Rule::Exact, Rule::ExactV4Mapped],
        Rule::ListenNat => &[Rule::Listen, Rule::ListenWildcard],
        Rule::BoundNat => &[Rule::UdpBound, Rule::UdpBoundWildcard],
        _ => &[],
    }
}

fn same_pair(t: &Tuple, a: SocketAddr, b: SocketAddr) -> bool {
    match (t.src_sock(), t.dst_sock()) {
        (Some(s), Some(d)) => (s == a && d == b) || (s == b && d == a),
        _ => false,
    }
}

/// Applies NAT rule `rule` to the wire tuple of `q`: the first translated
/// tuple (entries nearest in time first) whose socket has an owner, else
/// the first socket found without one.
pub(super) fn try_nat(
    tl: &Timeline,
    ctx: &HostContext,
    rule: Rule,
    q: &Query,
) -> Option<(Found, NatMatch)> {
    let ct = &tl.conntrack;
    let proto = q.transport.proto();
    let wire = (canon(q.local), canon(q.remote));
    let mut entries: Vec<(i64, &CtRecord)> = ct
        .with_pair(proto, q.local, q.remote)
        .iter()
        .filter_map(|&i| ct.records.get(i))
        .filter(|r| r.entry.nat().is_some())
        .filter_map(|r| {
            let gap = r.runs.iter().map(|x| x.gap(q.t0, q.t1)).min()?;
            (gap <= q.max_gap).then_some((gap, r))
        })
        .collect();
    // Nearest first; the capture's own table before the others.
    entries.sort_by_key(|(gap, r)| (*gap, r.netns != ctx.capture_netns));
    let mut ownerless = None;
    for (gap, r) in entries {
        let Some(kind) = r.entry.nat() else { continue };
        for dir in [&r.entry.orig, &r.entry.reply] {
            let (Some(local), Some(remote)) = (dir.src_sock(), dir.dst_sock()) else {
                continue;
            };
            if same_pair(dir, wire.0, wire.1) {
                continue;
            }
            let host = ctx.is_local(tl, local.ip());
            let m = NatMatch {
                kind,
                local,
                remote,
                netns: r.netns,
                gap_ns: gap,
            };
            let mut nss = namespaces_for(tl, ctx, local.ip(), host);
            if nss.is_empty() {
                nss = listening_namespace(tl, ctx, q, local);
            }
            if nss.is_empty() && rule == Rule::EventNat {
                // No socket or event shows the translated address in a
                // known namespace: every process that used it was gone
                // before the recorder could read its namespace (a fresh
                // process per query). Events of the translated tuple that
                // carry no namespace, and send runs, still name it.
                nss = vec![UNKNOWN_NETNS];
            }
            if nss.len() > 1 {
                nss = behind(tl, r.netns, nss);
            }
            // With the namespace still ambiguous (two namespaces using the
            // translated address, none proven behind this table), only a
            // socket holding the exact translated tuple is evidence: a
            // listener in one of them would be a guess.
            let exact_only = nss.len() > 1;
            for ns in nss {
                let tq = Query {
                    local,
                    remote,
                    ns,
                    ..*q
                };
                for &inner_rule in inner(rule) {
                    if exact_only && !matches!(inner_rule, Rule::Exact | Rule::ExactV4Mapped) {
                        continue;
                    }
                    match try_rule(tl, inner_rule, &tq) {
                        Some(f @ Found::Owned { .. }) => return Some((f, m)),
                        Some(f @ Found::Ownerless(..)) if ownerless.is_none() => {
                            ownerless = Some((f, m))
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    ownerless
}

/// Of the candidate namespaces `nss` (several use the translated address:
/// separate container networks with overlapping addresses, each behind its
/// own NAT namespace), those proven to sit behind the table of namespace
/// `table`: some translated entry of that table, of any protocol, leads to
/// a socket holding the exact translated tuple in them. A namespace sits
/// behind a NAT for all its traffic: its TCP connections, seen in the
/// snapshots, prove it also for datagram sockets that lived between two
/// snapshots. All of `nss` when none is proven.
fn behind(tl: &Timeline, table: u64, nss: Vec<u64>) -> Vec<u64> {
    let mut linked: Vec<u64> = Vec::new();
    for r in tl.conntrack.records.iter().filter(|r| r.netns == table) {
        if r.entry.nat().is_none() {
            continue;
        }
        let transport = match r.entry.proto {
            crate::flow::ipproto::TCP => Transport::Tcp,
            crate::flow::ipproto::UDP => Transport::Udp,
            _ => continue,
        };
        for dir in [&r.entry.orig, &r.entry.reply] {
            let (Some(a), Some(b)) = (dir.src_sock(), dir.dst_sock()) else {
                continue;
            };
            for &i in tl.exact(transport, a, b) {
                if let Some(s) = tl.sockets.get(i) {
                    if nss.contains(&s.key.netns) && !linked.contains(&s.key.netns) {
                        linked.push(s.key.netns);
                    }
                }
            }
        }
        if linked.len() == nss.len() {
            break;
        }
    }
    if linked.is_empty() {
        nss
    } else {
        nss.into_iter().filter(|n| linked.contains(n)).collect()
    }
}

/// A container whose address no recorded socket shows (a server with
/// only a wildcard listener, whose accepted connections lived between two
/// snapshots): the one namespace other than the capture's with a listener
/// or bound socket on the translated port; none when several have one.
fn listening_namespace(tl: &Timeline, ctx: &HostContext, q: &Query, local: SocketAddr) -> Vec<u64> {
    let mut v: Vec<u64> = tl
        .bound(q.transport, local.port())
        .iter()
        .filter_map(|&i| tl.sockets.get(i))
        .filter(|s| s.key.local.ip().is_unspecified() && s.key.netns != ctx.capture_netns)
        .filter(|s| s.runs.iter().any(|r| r.gap(q.t0, q.t1) <= q.max_gap))
        .map(|s| s.key.netns)
        .collect();
    v.sort_unstable();
    v.dedup();
    if v.len() == 1 {
        v
    } else {
        Vec::new()
    }
}

fn canon(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

#[cfg(test)]
mod tests {
    use super::super::tests::tcp;
    use super::super::{attribute, Method, Options};
    use super::*;
    use crate::flow::ipproto;
    use crate::snapshot::timeline::tests::{build, row4, table, Snap};
    use procflow_format::layout::{SnapshotKind, TableStored};

    const HOST: u64 = 4026531840;
    const CONTAINER: u64 = 4026532500;
    const OTHER: u64 = 4026532600;
    const MASQ: &str =
        "tcp 10.77.0.2 198.18.0.2 58036 9001 198.18.0.2 198.18.0.1 9001 58036 0x19e 0 0 431999";
    const DNAT: &str =
        "tcp 198.18.0.2 198.18.0.1 40000 8088 10.77.0.2 198.18.0.2 80 40000 0x1ae 0 0 431999";

    fn ctx() -> HostContext {
        HostContext {
            capture_netns: HOST,
            addresses: ["198.18.0.1".parse().unwrap()].into_iter().collect(),
        }
    }

    /// Two keyframes: the container's sockets, the host's conntrack table,
    /// and another container listening on port 80 too (`others`).
    fn lab(container: &[String], others: bool, ct: &str) -> Timeline {
        let mk = |seq, ms| {
            let mut s = Snap::new(seq, ms, SnapshotKind::Keyframe)
                .table(HOST, "tcp", TableStored::Full, table(&[]))
                .table(HOST, "conntrack", TableStored::Full, format!("{ct}\n"))
                .table(CONTAINER, "tcp", TableStored::Full, table(container))
                .fds(&["10 500 4026532500 100,101", "20 600 4026532600 200"]);
            if others {
                let l = [row4("0.0.0.0:80", "0.0.0.0:0", 0x0A, 200)];
                s = s.table(OTHER, "tcp", TableStored::Full, table(&l));
            }
            s
        };
        let (tl, d) = build(&[mk(1, 0), mk(2, 1000)]);
        assert_eq!(d.bad_lines, 0, "{d:?}");
        tl
    }

    #[test]
    fn a_tcp_connection_proves_the_namespace_behind_the_nat_for_udp() {
        // Two namespaces use 10.77.0.2 (overlapping container networks);
        // the host's table translates a TCP connection of the container's
        // and a datagram exchange of a socket no snapshot saw. The TCP
        // entry places the container behind this NAT, for UDP too.
        let udp =
            "udp 10.77.0.2 198.18.0.2 44078 5353 198.18.0.2 198.18.0.1 5353 33338 0x198 0 0 30";
        let mk = |seq, ms| {
            Snap::new(seq, ms, SnapshotKind::Keyframe)
                .table(HOST, "tcp", TableStored::Full, table(&[]))
                .table(
                    HOST,
                    "conntrack",
                    TableStored::Full,
                    format!("{MASQ}\n{udp}\n"),
                )
                .table(
                    CONTAINER,
                    "tcp",
                    TableStored::Full,
                    table(&[row4("10.77.0.2:58036", "198.18.0.2:9001", 1, 100)]),
                )
                .table(
                    OTHER,
                    "tcp",
                    TableStored::Full,
                    table(&[row4("10.77.0.2:41000", "10.77.0.3:80", 1, 200)]),
                )
                .fds(&["10 500 4026532500 100", "20 600 4026532600 200"])
        };
        let (tl, d) = build(&[mk(1, 0), mk(2, 1000)]);
        assert_eq!(d.bad_lines, 0, "{d:?}");
        assert_eq!(behind(&tl, HOST, vec![CONTAINER, OTHER]), [CONTAINER]);
        // No entry of the table leads to either: both stay.
        assert_eq!(
            behind(&tl, OTHER, vec![CONTAINER, OTHER]),
            [CONTAINER, OTHER]
        );
    }

    #[test]
    fn masquerade_goes_to_the_container_socket() {
        let sock = [row4("10.77.0.2:58036", "198.18.0.2:9001", 1, 100)];
        let tl = lab(&sock, false, MASQ);
        let f = tcp("198.18.0.1:58036", "198.18.0.2:9001", 100, 900);
        let a = attribute(&tl, &ctx(), &Options::default(), &f);
        assert_eq!(a.method, Method::Rule(Rule::ExactNat));
        assert_eq!(a.owner.map(|o| o.pid), Some(10));
        assert_eq!(a.socket.map(|s| s.netns), Some(CONTAINER));
        let n = *a.nat.clone().unwrap();
        assert_eq!(n.kind, NatKind::Snat);
        assert_eq!(n.local, "10.77.0.2:58036".parse().unwrap());
        assert_eq!(n.netns, HOST);
        assert_eq!(a.local_is_a, Some(true));
        assert_eq!(a.confidence(), Some(super::super::Confidence::Medium));
        // Without the mapping the flow has no socket.
        let tl = lab(&sock, false, "");
        let a = attribute(&tl, &ctx(), &Options::default(), &f);
        assert!(!a.method.is_attributed(), "{:?}", a.method);
        // Far from the mapping's time: not translated.
        let tl = lab(&sock, false, MASQ);
        let late = tcp("198.18.0.1:58036", "198.18.0.2:9001", 60_000, 61_000);
        let a = attribute(&tl, &ctx(), &Options::default(), &late);
        assert!(!a.method.is_attributed(), "{:?}", a.method);
    }

    #[test]
    fn published_port_goes_to_the_container_server() {
        // Accepted connection seen: exact through DNAT.
        let sock = [
            row4("0.0.0.0:80", "0.0.0.0:0", 0x0A, 101),
            row4("10.77.0.2:80", "198.18.0.2:40000", 1, 100),
        ];
        let tl = lab(&sock, true, DNAT);
        let f = tcp("198.18.0.2:40000", "198.18.0.1:8088", 100, 900);
        let a = attribute(&tl, &ctx(), &Options::default(), &f);
        assert_eq!(a.method, Method::Rule(Rule::ExactNat));
        assert_eq!(a.owner.map(|o| o.pid), Some(10));
        assert_eq!(a.nat.as_deref().unwrap().kind, NatKind::Dnat);
        assert_eq!(a.local_is_a, Some(false));
        // Only the listener seen, address known from another socket.
        let sock = [
            row4("0.0.0.0:80", "0.0.0.0:0", 0x0A, 101),
            row4("10.77.0.2:5555", "198.18.0.2:53", 1, 100),
        ];
        let tl = lab(&sock, true, DNAT);
        let a = attribute(&tl, &ctx(), &Options::default(), &f);
        assert_eq!(a.method, Method::Rule(Rule::ListenNat));
        assert_eq!(a.owner.map(|o| o.pid), Some(10));
        // Only a wildcard listener, in one container: that one.
        let sock = [row4("0.0.0.0:80", "0.0.0.0:0", 0x0A, 101)];
        let tl = lab(&sock, false, DNAT);
        let a = attribute(&tl, &ctx(), &Options::default(), &f);
        assert_eq!(a.method, Method::Rule(Rule::ListenNat));
        assert_eq!(a.owner.map(|o| o.pid), Some(10));
        // ... in two containers: cannot tell which.
        let tl = lab(&sock, true, DNAT);
        let a = attribute(&tl, &ctx(), &Options::default(), &f);
        assert!(!a.method.is_attributed(), "{:?}", a.method);
    }

    #[test]
    fn udp_behind_masquerade_goes_to_the_bound_socket() {
        let mk = |seq, ms| {
            let ct = "udp 10.77.0.2 9.9.9.9 41000 53 9.9.9.9 198.18.0.1 53 41000 0x19e 0 0 30";
            let bound = [
                row4("0.0.0.0:41000", "0.0.0.0:0", 0x07, 100),
                row4("10.77.0.2:5555", "198.18.0.2:9", 1, 101),
            ];
            Snap::new(seq, ms, SnapshotKind::Keyframe)
                .table(HOST, "tcp", TableStored::Full, table(&[]))
                .table(HOST, "conntrack", TableStored::Full, format!("{ct}\n"))
                .table(CONTAINER, "udp", TableStored::Full, table(&bound))
                .fds(&["10 500 4026532500 100,101"])
        };
        let (tl, _) = build(&[mk(1, 0), mk(2, 1000)]);
        let mut f = tcp("198.18.0.1:41000", "9.9.9.9:53", 100, 200);
        f.proto = ipproto::UDP;
        let a = attribute(&tl, &ctx(), &Options::default(), &f);
        assert_eq!(a.method, Method::Rule(Rule::BoundNat));
        assert_eq!(a.owner.map(|o| o.pid), Some(10));
        assert_eq!(a.nat.as_deref().map(|n| n.kind), Some(NatKind::Snat));
    }

    /// A fresh process per query: each is gone before the recorder reads
    /// its namespace, so no socket or event ties the container's address to
    /// a namespace. The send event of the translated tuple (masquerade
    /// remapped the source port) still names the process.
    #[test]
    fn udp_sender_gone_before_its_namespace_was_read() {
        use crate::snapshot::timeline::tests::ev;
        let ct = "udp 10.77.0.2 9.9.9.9 41000 53 9.9.9.9 198.18.0.1 53 30001 0x19e 0 0 30";
        let mut send = ev("send", 150, 10, None, "10.77.0.2:41000", "9.9.9.9:53");
        send.proto = "udp".into();
        send.netns = None;
        send.comm = None;
        let mk = |seq, ms, evs: &[procflow_format::layout::EventRecord]| {
            Snap::new(seq, ms, SnapshotKind::Keyframe)
                .table(HOST, "tcp", TableStored::Full, table(&[]))
                .table(HOST, "conntrack", TableStored::Full, format!("{ct}\n"))
                .fds(&[])
                .events(evs)
        };
        let (tl, _) = build(&[mk(1, 0, &[]), mk(2, 1000, &[send])]);
        let mut f = tcp("198.18.0.1:30001", "9.9.9.9:53", 100, 200);
        f.proto = ipproto::UDP;
        let a = attribute(&tl, &ctx(), &Options::default(), &f);
        assert_eq!(a.method, Method::Rule(Rule::EventNat), "{:?}", a.notes);
        assert_eq!(a.owner.map(|o| o.pid), Some(10));
        assert_eq!(a.nat.as_deref().map(|n| n.local.port()), Some(41000));
        // No namespace is proven: none is claimed.
        assert_eq!(a.netns_hint, None);
    }

    /// Two container networks using the same addresses (each behind its own
    /// NAT namespace, or a recorder seeing two such labs): the listener is
    /// taken only in the namespace proven behind the entry's table.
    #[test]
    fn overlapping_container_addresses_need_proof_of_which_is_behind() {
        let mk = |seq, ms, link: bool| {
            let ct = if link {
                format!("{DNAT}\n{MASQ}\n")
            } else {
                format!("{DNAT}\n")
            };
            let mine = [
                row4("0.0.0.0:80", "0.0.0.0:0", 0x0A, 101),
                row4("10.77.0.2:58036", "198.18.0.2:9001", 1, 100),
            ];
            let theirs = [
                row4("0.0.0.0:80", "0.0.0.0:0", 0x0A, 201),
                row4("10.77.0.2:6000", "198.18.0.2:7", 1, 200),
            ];
            Snap::new(seq, ms, SnapshotKind::Keyframe)
                .table(HOST, "tcp", TableStored::Full, table(&[]))
                .table(HOST, "conntrack", TableStored::Full, ct)
                .table(CONTAINER, "tcp", TableStored::Full, table(&mine))
                .table(OTHER, "tcp", TableStored::Full, table(&theirs))
                .fds(&["10 500 4026532500 100,101", "20 600 4026532600 200,201"])
        };
        let f = tcp("198.18.0.2:40000", "198.18.0.1:8088", 100, 900);
        // The masquerade entry of the same table leads to CONTAINER's socket.
        let (tl, _) = build(&[mk(1, 0, true), mk(2, 1000, true)]);
        let a = attribute(&tl, &ctx(), &Options::default(), &f);
        assert_eq!(a.method, Method::Rule(Rule::ListenNat));
        assert_eq!(a.owner.map(|o| o.pid), Some(10));
        // Nothing says which: no owner rather than a guess.
        let (tl, _) = build(&[mk(1, 0, false), mk(2, 1000, false)]);
        let a = attribute(&tl, &ctx(), &Options::default(), &f);
        assert!(!a.method.is_attributed(), "{:?} {:?}", a.method, a.owner);
    }
}
