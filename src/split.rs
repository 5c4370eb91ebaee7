//! Ownership at packet time: a flow whose socket changed owner during its
//! lifetime is cut at the change, so that no report row mixes two owners.
//!
//! `procflow flows` aggregates packets by protocol and endpoints, with a
//! long idle gap for UDP (600 s): the same UDP 4-tuple used by two processes
//! a few seconds apart is one flow. After attribution, [`plan`] looks at the
//! evidence of each flow's endpoints during its lifetime: the recorder's
//! events when there are any (taken in the owning process' context), else
//! the snapshot sockets the attributing rule accepts, each with its owner.
//! When two or more owners follow one another without overlapping, the flow
//! is planned for a cut. The packets of those flows alone are then read
//! again (a second replay keeping only their packets) and [`apply`] cuts
//! each one between owners, in the largest silence of its packets between
//! the last evidence of one owner and the first of the next. Each part is
//! attributed on its own and names its parent flow.
//!
//! With per-send and per-read evidence (`event-use`) the cut is by bytes,
//! not by time: every packet goes to the process whose calls sent or read
//! its bytes (`attribute::uses::place`), and each distinct owner (pid,
//! start time and the program it was running then), at each local end,
//! gets one part holding exactly its packets.
//!
//! Part ids follow the largest flow id, in the order of their parents, so
//! the ids of unsplit flows stay those of `procflow flows` and every id is
//! the same for any thread count.

use std::collections::BTreeMap;

use std::net::SocketAddr;

use crate::attribute::uses::{self, EndUse, Span};
use crate::attribute::{
    self, Attribution, HostContext, Method, Note, Options, OwnerSpan, PeerEnd, ProcKey, Rule,
    UseMatch,
};
use crate::flow::{ipproto, Flow, PacketMark};
use crate::snapshot::timeline::{Timeline, Transport};

/// A flow to cut: its index in the flow list and its owners in time order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// Index of the flow in the list given to [`plan`].
    pub index: usize,
    /// Owners one after the other, without overlap (empty for a cut by
    /// use evidence).
    pub spans: Vec<OwnerSpan>,
    /// Cut by the bytes each process sent or read, not by time.
    pub by_use: bool,
}

/// The send and receive runs of both local ends of an attributed flow:
/// the row's end (through the NAT translation when there was one) and,
/// when both ends are local, the other.
fn flow_uses(tl: &Timeline, f: &Flow, a: &Attribution) -> Option<(EndUse, Option<EndUse>)> {
    let transport = match f.proto {
        ipproto::TCP => Transport::Tcp,
        ipproto::UDP => Transport::Udp,
        _ => return None,
    };
    let (local_is_a, a_port, b_port) = (a.local_is_a?, f.a_port?, f.b_port?);
    let fa = SocketAddr::new(f.a_ip, a_port);
    let fb = SocketAddr::new(f.b_ip, b_port);
    let (local, remote) = if local_is_a { (fa, fb) } else { (fb, fa) };
    let (t0, t1) = (f.first_seen_ns, f.last_seen_ns.max(f.first_seen_ns));
    let (ll, lr) = a
        .nat
        .as_deref()
        .map_or((local, remote), |n| (n.local, n.remote));
    let mine = a
        .uses
        .and_then(|_| uses::end_use(tl, transport, ll, lr, t0, t1))
        .unwrap_or_default();
    let peer = a
        .peer
        .as_ref()
        .filter(|p| p.uses.is_some())
        .and_then(|_| uses::end_use(tl, transport, remote, local, t0, t1));
    (!mine.send.is_empty() || !mine.recv.is_empty() || peer.is_some()).then_some((mine, peer))
}

/// Who a span names: the process and the identity (program) it had at
/// time `t` (clamped to the span's calls).
type Who = (ProcKey, Option<i64>);

fn who(tl: &Timeline, s: &Span, t: i64) -> Who {
    let t = t.clamp(s.first_ns, s.last_ns);
    (
        s.owner,
        tl.identity_since(s.owner.pid, s.owner.start_time, t),
    )
}

/// Whether the runs of `end` name more than one process or program.
fn several(tl: &Timeline, end: &EndUse) -> bool {
    let mut first: Option<Who> = None;
    for s in end.send.iter().chain(&end.recv) {
        for w in [who(tl, s, s.first_ns), who(tl, s, s.last_ns)] {
            match first {
                None => first = Some(w),
                Some(x) if x != w => return true,
                Some(_) => {}
            }
        }
    }
    false
}

/// The flows whose evidence shows two or more owners one after the other.
pub fn plan(
    tl: &Timeline,
    ctx: &HostContext,
    flows: &[Flow],
    attributions: &[Attribution],
) -> Vec<Cut> {
    use rayon::prelude::*;
    flows
        .par_iter()
        .zip(attributions.par_iter())
        .enumerate()
        .filter_map(|(index, (f, a))| {
            if let Some((mine, peer)) = flow_uses(tl, f, a) {
                let cut = several(tl, &mine) || peer.as_ref().is_some_and(|p| several(tl, p));
                return cut.then_some(Cut {
                    index,
                    spans: Vec::new(),
                    by_use: true,
                });
            }
            let spans = attribute::owner_spans(tl, ctx, f, a);
            (spans.len() >= 2).then_some(Cut {
                index,
                spans,
                by_use: false,
            })
        })
        .collect()
}

/// Where to cut between two owners: in the middle of the largest silence
/// among the packets between the last evidence of the first owner (`lo`)
/// and the first evidence of the next (`hi`).
fn boundary(lo: i64, hi: i64, packets: &[PacketMark]) -> i64 {
    let mut points: Vec<i64> = vec![lo];
    points.extend(
        packets
            .iter()
            .map(|p| p.ts_ns)
            .filter(|&t| t > lo && t < hi),
    );
    points.push(hi);
    points.sort_unstable();
    let (a, b) = points
        .windows(2)
        .filter_map(|w| match w {
            [a, b] => Some((*a, *b)),
            _ => None,
        })
        .max_by_key(|(a, b)| (b.saturating_sub(*a), std::cmp::Reverse(*a)))
        .unwrap_or((lo, hi));
    a.saturating_add(b.saturating_sub(a) / 2)
        .max(a.saturating_add(1))
}

/// The parts of `parent` cut between its owners: one flow per owner that
/// has packets, with that owner's packets' counters and times.
pub fn cut_flow(parent: &Flow, spans: &[OwnerSpan], packets: &[PacketMark]) -> Vec<Flow> {
    // Between two owners, the largest silence; next to a stretch without
    // owner, the bound of the owner's possible life itself (the packets on
    // the owner's side of it may be the owner's).
    let bounds: Vec<i64> = spans
        .windows(2)
        .filter_map(|w| match w {
            [x, _] if x.owner.is_none() => Some(x.last_ns),
            [_, y] if y.owner.is_none() => Some(y.first_ns.saturating_add(1)),
            [x, y] => Some(boundary(x.last_ns, y.first_ns, packets)),
            _ => None,
        })
        .collect();
    let mut parts: Vec<Option<Flow>> = vec![None; bounds.len() + 1];
    for p in packets {
        let k = bounds.iter().take_while(|&&b| p.ts_ns >= b).count();
        let Some(slot) = parts.get_mut(k) else {
            continue;
        };
        let f = slot.get_or_insert_with(|| parent.cleared(p.ts_ns));
        add(f, p);
    }
    parts.into_iter().flatten().collect()
}

/// A flow cut by use evidence: one part per distinct (owner at this end,
/// owner at the other local end), each with exactly the packets whose
/// bytes those processes sent or read, in order of first packet, with its
/// attribution. Fewer than two parts: the flow stays whole.
fn use_parts(
    tl: &Timeline,
    f: &Flow,
    a: &Attribution,
    packets: &[PacketMark],
) -> (Vec<(Flow, Attribution)>, Vec<usize>) {
    let Some((mine, peer)) = flow_uses(tl, f, a) else {
        return (Vec::new(), Vec::new());
    };
    let Some(local_is_a) = a.local_is_a else {
        return (Vec::new(), Vec::new());
    };
    let transport = if f.proto == ipproto::TCP {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    let from_local = |p: &PacketMark| p.ab == local_is_a;
    let has_mine = !mine.send.is_empty() || !mine.recv.is_empty();
    let local_owner = if has_mine {
        uses::place(&mine, packets, transport, from_local)
    } else {
        vec![None; packets.len()]
    };
    let peer_owner = match &peer {
        Some(p) => uses::place(p, packets, transport, |x| !from_local(x)),
        None => vec![None; packets.len()],
    };
    type Key = (Option<Who>, Option<Who>);
    /// A run and the time to read its owner's identity at.
    type At = Option<(Span, i64)>;
    let mut keys: std::collections::HashMap<Key, usize> = std::collections::HashMap::new();
    let mut parts: Vec<(Flow, At, At)> = Vec::new();
    // The part of each packet.
    let mut of_packet: Vec<usize> = Vec::with_capacity(packets.len());
    for ((p, lo), po) in packets.iter().zip(&local_owner).zip(&peer_owner) {
        let key: Key = (
            lo.as_ref().map(|s| who(tl, s, p.ts_ns)),
            po.as_ref().map(|s| who(tl, s, p.ts_ns)),
        );
        let k = *keys.entry(key).or_insert_with(|| {
            parts.push((
                f.cleared(p.ts_ns),
                lo.map(|s| (s, p.ts_ns.clamp(s.first_ns, s.last_ns))),
                po.map(|s| (s, p.ts_ns.clamp(s.first_ns, s.last_ns))),
            ));
            parts.len() - 1
        });
        if let Some((part, _, _)) = parts.get_mut(k) {
            add(part, p);
        }
        of_packet.push(k);
    }
    if parts.len() < 2 {
        return (Vec::new(), Vec::new());
    }
    let parts = parts
        .into_iter()
        .map(|(part, lo, po)| {
            let mut pa = a.clone();
            pa.notes.retain(|n| {
                !matches!(
                    n,
                    Note::Shared(_) | Note::EventOwners(_) | Note::UseOwners(_)
                )
            });
            if let Some((s, t)) = lo {
                pa.owner = Some(s.owner);
                pa.ident_ns = Some(t);
                pa.uses = Some(UseMatch {
                    owners: 1,
                    placed: true,
                    since_ns: t,
                });
                pa.shared_with = mine.concurrent(s.owner);
                if pa.shared_with.len() >= 2 {
                    pa.notes.push(Note::Interleaved(pa.shared_with.len()));
                }
            }
            if let (Some((s, t)), Some(pe)) = (po, &peer) {
                pa.peer = Some(Box::new(PeerEnd {
                    method: Method::Rule(Rule::EventUse),
                    owner: Some(s.owner),
                    uses: Some(UseMatch {
                        owners: 1,
                        placed: true,
                        since_ns: t,
                    }),
                    ident_ns: Some(t),
                    shared_with: pe.concurrent(s.owner),
                }));
            }
            (part, pa)
        })
        .collect();
    (parts, of_packet)
}

/// Adds packet `p` to the counters and times of `f`.
fn add(f: &mut Flow, p: &PacketMark) {
    f.first_seen_ns = f.first_seen_ns.min(p.ts_ns);
    f.last_seen_ns = f.last_seen_ns.max(p.ts_ns);
    if p.ab {
        f.packets_ab += 1;
        f.bytes_ab += u64::from(p.bytes);
        f.ip_bytes_ab += u64::from(p.ip_bytes);
        f.tcp_flags_ab |= p.tcp_flags;
    } else {
        f.packets_ba += 1;
        f.bytes_ba += u64::from(p.bytes);
        f.ip_bytes_ba += u64::from(p.ip_bytes);
        f.tcp_flags_ba |= p.tcp_flags;
    }
}

/// Whether `packets` are exactly the packets of `f` (the second replay
/// found the same flow).
fn same_flow(f: &Flow, packets: &[PacketMark]) -> bool {
    let n = packets.len() as u64;
    let bytes: u64 = packets.iter().map(|p| u64::from(p.bytes)).sum();
    let first = packets.iter().map(|p| p.ts_ns).min();
    n == f.packets_ab + f.packets_ba
        && bytes == f.bytes_ab + f.bytes_ba
        && first == Some(f.first_seen_ns)
}

/// Which part each packet of a flow cut by use evidence went to, by the
/// parent's id: the packet (file in processing order, packet number) that
/// begins each stretch of packets of one part, with that part's id, in
/// packet order. The parts of such a flow interleave in time (a shell's
/// prompt before and after its child's output), so a packet's part cannot
/// be told from its time.
pub type PacketParts = BTreeMap<u64, Vec<((u32, u64), u64)>>;

/// The stretches of `packets` (each with its part's index in `of_packet`)
/// as [`PacketParts`] entries, the part of index `k` having id `base + k`.
fn stretches(packets: &[PacketMark], of_packet: &[usize], base: u64) -> Vec<((u32, u64), u64)> {
    let mut v: Vec<((u32, u64), u64)> = packets
        .iter()
        .zip(of_packet)
        .map(|(p, &k)| ((p.file, p.index), base.saturating_add(k as u64)))
        .collect();
    v.sort_unstable();
    v.dedup_by(|cur, prev| cur.1 == prev.1);
    v
}

/// Replaces each planned flow by its parts, each attributed on its own,
/// in the parent's place. `packets` holds the packets of the planned flows
/// by flow id (a flow without its packets, or whose packets do not add up
/// to it, stays whole). Returns the flows and attributions in report order,
/// and the part of each packet of the flows cut by use evidence.
pub fn apply(
    tl: &Timeline,
    ctx: &HostContext,
    opts: &Options,
    flows: Vec<Flow>,
    attributions: Vec<Attribution>,
    cuts: &[Cut],
    packets: &BTreeMap<u64, Vec<PacketMark>>,
) -> (Vec<Flow>, Vec<Attribution>, PacketParts) {
    let mut packet_parts = PacketParts::new();
    let mut next_id = flows.iter().map(|f| f.id).max().unwrap_or(0) + 1;
    let by_index: BTreeMap<usize, &Cut> = cuts.iter().map(|c| (c.index, c)).collect();
    // The parts of each flow that is cut, in flow order (their ids follow
    // that order).
    let mut replaced: BTreeMap<usize, Vec<(Flow, Attribution)>> = BTreeMap::new();
    for (&i, c) in &by_index {
        let (Some(f), Some(a)) = (flows.get(i), attributions.get(i)) else {
            continue;
        };
        let Some(p) = packets.get(&f.id) else {
            continue;
        };
        if !same_flow(f, p) {
            continue;
        }
        let mut out = Vec::new();
        if c.by_use {
            let (parts, of_packet) = use_parts(tl, f, a, p);
            let n = parts.len();
            if n >= 2 {
                packet_parts.insert(f.id, stretches(p, &of_packet, next_id));
                for (k, (mut part, mut pa)) in parts.into_iter().enumerate() {
                    part.id = next_id;
                    next_id += 1;
                    pa.parent_flow_id = Some(f.id);
                    pa.notes.push(Note::SplitPart {
                        part: k + 1,
                        parts: n,
                    });
                    out.push((part, pa));
                }
            }
        } else {
            let parts = cut_flow(f, &c.spans, p);
            let n = parts.len();
            if n >= 2 {
                for (k, mut part) in parts.into_iter().enumerate() {
                    part.id = next_id;
                    next_id += 1;
                    let mut pa = attribute::attribute(tl, ctx, opts, &part);
                    pa.parent_flow_id = Some(f.id);
                    pa.notes.push(Note::SplitPart {
                        part: k + 1,
                        parts: n,
                    });
                    out.push((part, pa));
                }
            }
        }
        if !out.is_empty() {
            replaced.insert(i, out);
        }
    }
    let (mut flows, mut attributions) = (flows, attributions);
    let n = flows.len().min(attributions.len());
    flows.truncate(n);
    attributions.truncate(n);
    if replaced.is_empty() {
        return (flows, attributions, packet_parts);
    }
    // Rebuilt from the end, the inputs shrinking as the output grows: at a
    // million flows, both side by side would double the peak.
    let extra: usize = replaced.values().map(|v| v.len() - 1).sum();
    let mut out_f = Vec::with_capacity(n + extra);
    let mut out_a = Vec::with_capacity(n + extra);
    while let (Some(f), Some(a)) = (flows.pop(), attributions.pop()) {
        let i = flows.len();
        match replaced.remove(&i) {
            Some(parts) => {
                for (pf, pa) in parts.into_iter().rev() {
                    out_f.push(pf);
                    out_a.push(pa);
                }
            }
            None => {
                out_f.push(f);
                out_a.push(a);
            }
        }
        if i % (1 << 16) == 0 {
            flows.shrink_to_fit();
            attributions.shrink_to_fit();
        }
    }
    out_f.reverse();
    out_a.reverse();
    (out_f, out_a, packet_parts)
}

#[cfg(test)]
mod use_scenarios;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::ProcKey;

    fn mark(ts: i64, ab: bool) -> PacketMark {
        PacketMark {
            ts_ns: ts,
            ab,
            bytes: 100,
            ip_bytes: 86,
            tcp_flags: 0,
            tcp_seq: 0,
            tcp_ack: 0,
            tcp_payload: 0,
            file: 0,
            index: 0,
        }
    }

    fn span(pid: u32, a: i64, b: i64) -> OwnerSpan {
        OwnerSpan {
            owner: Some(ProcKey { pid, start_time: 1 }),
            first_ns: a,
            last_ns: b,
        }
    }

    #[test]
    fn cut_in_the_largest_silence_between_owners() {
        // Owner 1's last evidence at 100, owner 2's first at 10_000; the
        // packets pause from 300 to 9_000.
        let pk: Vec<PacketMark> = [0, 50, 150, 300, 9_000, 9_500, 10_100, 12_000]
            .iter()
            .enumerate()
            .map(|(i, &t)| mark(t, i % 2 == 0))
            .collect();
        assert_eq!(boundary(100, 10_000, &pk), 4_650);
        let parent = Flow {
            id: 7,
            proto: crate::flow::ipproto::UDP,
            family: crate::flow::Family::V4,
            a_ip: "10.0.0.1".parse().unwrap(),
            a_port: Some(5000),
            b_ip: "10.0.0.2".parse().unwrap(),
            b_port: Some(53),
            icmp: None,
            first_seen_ns: 0,
            last_seen_ns: 12_000,
            packets_ab: 4,
            packets_ba: 4,
            bytes_ab: 400,
            bytes_ba: 400,
            ip_bytes_ab: 344,
            ip_bytes_ba: 344,
            tcp_flags_ab: 0,
            tcp_flags_ba: 0,
        };
        assert!(same_flow(&parent, &pk));
        let parts = cut_flow(&parent, &[span(1, 0, 100), span(2, 10_000, 12_000)], &pk);
        assert_eq!(parts.len(), 2);
        assert_eq!((parts[0].first_seen_ns, parts[0].last_seen_ns), (0, 300));
        assert_eq!((parts[0].packets_ab, parts[0].packets_ba), (2, 2));
        assert_eq!(
            (parts[1].first_seen_ns, parts[1].last_seen_ns),
            (9_000, 12_000)
        );
        assert_eq!(parts[1].bytes_ab + parts[1].bytes_ba, 400);
        // An owner without packets gets no part.
        let parts = cut_flow(&parent, &[span(1, 0, 100), span(3, 20_000, 21_000)], &pk);
        assert_eq!(parts.len(), 2);
        let parts = cut_flow(
            &parent,
            &[span(1, 50_000, 50_100), span(3, 60_000, 61_000)],
            &pk,
        );
        assert_eq!(parts.len(), 1);
        // Next to a stretch without owner, the cut is the owner's birth or
        // death bound, not the largest silence.
        let none = |a, b| OwnerSpan {
            owner: None,
            first_ns: a,
            last_ns: b,
        };
        let parts = cut_flow(&parent, &[none(0, 9_200), span(2, 10_000, 12_000)], &pk);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].first_seen_ns, 9_500);
        let parts = cut_flow(&parent, &[span(1, 0, 100), none(140, 12_000)], &pk);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].last_seen_ns, 50);
    }
}
