//! Aggregation: decoded packets folded into flows, in capture order.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::Flow;
use crate::packet::{icmp_counterpart, ipproto, tcpflag, Family, Frag, IcmpKey, IpPacket};

/// When one key is split into several flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitRules {
    /// Idle time after which any packet starts a new flow (ns). Default
    /// 600 s.
    pub idle_gap_ns: i64,
    /// Idle time after which a TCP flow that saw FIN or RST is over (ns).
    /// Default 120 s, twice the usual Linux TIME_WAIT.
    pub closed_tcp_gap_ns: i64,
}

impl Default for SplitRules {
    fn default() -> Self {
        SplitRules {
            idle_gap_ns: 600_000_000_000,
            closed_tcp_gap_ns: 120_000_000_000,
        }
    }
}

/// Where a packet came from, to report a packet that fits no flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketOrigin {
    /// Index of the file in processing order.
    pub file: u32,
    /// 1-based packet number in the file.
    pub index: u64,
    /// Byte offset of the record in the file.
    pub offset: u64,
}

/// A non-first fragment whose first fragment (with the ports) never came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrphanFragment {
    /// Where the fragment was read.
    pub origin: PacketOrigin,
    /// Its frame length.
    pub orig_len: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    family: Family,
    proto: u8,
    lo: [u8; 16],
    lo_port: u16,
    hi: [u8; 16],
    hi_port: u16,
    /// ICMP (canonical type, code, id); zero otherwise.
    icmp: (u8, u8, u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FragKey {
    family: Family,
    proto: u8,
    src: [u8; 16],
    dst: [u8; 16],
    id: u32,
}

impl FragKey {
    /// The fragments of `pkt`'s datagram, IP identification `id`.
    fn of(pkt: &IpPacket, id: u32) -> FragKey {
        FragKey {
            family: pkt.family,
            proto: pkt.proto,
            src: pkt.src,
            dst: pkt.dst,
            id,
        }
    }
}

fn addr_words(a: &[u8; 16]) -> (u64, u64) {
    let mut x = [0u8; 8];
    let mut y = [0u8; 8];
    x.copy_from_slice(&a[..8]);
    y.copy_from_slice(&a[8..]);
    (u64::from_ne_bytes(x), u64::from_ne_bytes(y))
}

// Keys are hashed as a few whole words instead of field by field: hashing
// was a fifth of the replay time with the derived impls.
impl Hash for Key {
    fn hash<H: Hasher>(&self, h: &mut H) {
        let (a, b) = addr_words(&self.lo);
        let (c, d) = addr_words(&self.hi);
        let small = u64::from(self.proto)
            | (u64::from(self.family == Family::V6) << 8)
            | (u64::from(self.lo_port) << 16)
            | (u64::from(self.hi_port) << 32)
            | (u64::from(self.icmp.0) << 48)
            | (u64::from(self.icmp.1) << 56);
        h.write_u64(a);
        h.write_u64(b);
        h.write_u64(c);
        h.write_u64(d);
        h.write_u64(small ^ u64::from(self.icmp.2).rotate_left(40));
    }
}

impl Hash for FragKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        let (a, b) = addr_words(&self.src);
        let (c, d) = addr_words(&self.dst);
        h.write_u64(a);
        h.write_u64(b);
        h.write_u64(c);
        h.write_u64(d);
        h.write_u64(
            u64::from(self.id)
                | u64::from(self.proto) << 32
                | u64::from(self.family == Family::V6) << 40,
        );
    }
}

/// A fast multiply-rotate hasher (FxHash-like) with a per-table random seed,
/// so crafted traffic cannot aim at collisions it cannot predict. Table
/// order never reaches the output: flows are sorted at the end.
#[derive(Clone, Copy)]
struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        // Final avalanche so the low bits hashbrown uses depend on all input.
        let mut z = self.0;
        z = (z ^ (z >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        z ^ (z >> 33)
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_ne_bytes(w));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

#[derive(Clone)]
struct FastState(u64);

impl FastState {
    fn new() -> Self {
        use std::hash::BuildHasher;
        FastState(std::collections::hash_map::RandomState::new().hash_one(0u64))
    }
}

impl BuildHasher for FastState {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher(self.0)
    }
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    ts_ns: i64,
    orig_len: u32,
    pkt: IpPacket,
    origin: PacketOrigin,
}

struct State {
    flow: Flow,
    a: ([u8; 16], u16),
    closed: bool,
    seq: u64,
    /// Every packet, when the key is watched.
    log: Vec<PacketMark>,
}

/// One packet of a watched flow: what a flow's counters are made of, so a
/// flow can be cut in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketMark {
    /// Capture timestamp, ns since the epoch.
    pub ts_ns: i64,
    /// Sent by `a` (the initiator).
    pub ab: bool,
    /// Frame length.
    pub bytes: u32,
    /// IP length.
    pub ip_bytes: u32,
    /// TCP flags (0 for other protocols).
    pub tcp_flags: u8,
    /// TCP sequence number (0 for other protocols).
    pub tcp_seq: u32,
    /// TCP acknowledgment number (0 for other protocols).
    pub tcp_ack: u32,
    /// TCP payload length (0 for other protocols).
    pub tcp_payload: u32,
    /// Index of its file in processing order (as [`PacketFlow::file`]).
    pub file: u32,
    /// 1-based packet number in its file (as [`PacketFlow::index`]).
    pub index: u64,
}

/// Folds decoded packets into flows. Packets must be added in capture order;
/// the result then depends only on the packets, not on how they were read.
pub struct FlowTable {
    rules: SplitRules,
    current: HashMap<Key, usize, FastState>,
    states: Vec<State>,
    /// First fragments seen: the ports their later fragments belong to.
    frags: HashMap<FragKey, (u16, u16, Option<IcmpKey>, i64), FastState>,
    /// Later fragments that arrived before their first fragment.
    pending: HashMap<FragKey, Vec<Pending>, FastState>,
    pending_count: usize,
    orphans: Vec<OrphanFragment>,
    /// Keys whose packets are kept ([`FlowTable::watch`]).
    watch: HashSet<Key, FastState>,
    /// Only the watched keys are folded ([`FlowTable::watch_only`]).
    watch_only: bool,
    /// When tracking: (file, packet index, state) of every folded packet.
    track: Option<Vec<(u32, u64, u32)>>,
    /// When only some packets are tracked: their (file, packet index).
    track_only: Option<HashSet<(u32, u64)>>,
}

/// Where [`FlowTable::add`] put a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// The flow's state index (mapped to its id by
    /// [`FlowTable::finish_with_ids`]).
    pub state: u32,
    /// Sent by the flow's initiator.
    pub from_a: bool,
    /// The packet's number in its direction, from 1.
    pub nth: u64,
}

/// The flow a packet was folded into (see [`FlowTable::track_packets`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PacketFlow {
    /// Index of the file in processing order.
    pub file: u32,
    /// 1-based packet number in the file.
    pub index: u64,
    /// The flow's id.
    pub flow_id: u64,
}

/// Bound on remembered first fragments; beyond it, entries older than the
/// reassembly timeout are dropped.
const MAX_FRAGS: usize = 65_536;
/// Fragments of a datagram arrive within this time of each other (Linux
/// `ipfrag_time` is 30 s).
const FRAG_TIMEOUT_NS: i64 = 60_000_000_000;
/// Bound on fragments waiting for their first fragment.
const MAX_PENDING: usize = 16_384;

fn icmp_canonical(v6: bool, k: IcmpKey) -> (u8, u8, u16) {
    let pairs: &[u8] = if v6 {
        &[129, 134, 136, 131, 140, 145]
    } else {
        &[0, 14, 16, 18, 9]
    };
    let ty = if pairs.contains(&k.icmp_type) {
        icmp_counterpart(v6, k.icmp_type).unwrap_or(k.icmp_type)
    } else {
        k.icmp_type
    };
    (ty, k.code, k.id)
}

fn to_ip(family: Family, a: &[u8; 16]) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(*a)),
    }
}

impl FlowTable {
    /// An empty table splitting keys by `rules`.
    pub fn new(rules: SplitRules) -> Self {
        FlowTable {
            rules,
            current: HashMap::with_hasher(FastState::new()),
            states: Vec::new(),
            frags: HashMap::with_hasher(FastState::new()),
            pending: HashMap::with_hasher(FastState::new()),
            pending_count: 0,
            orphans: Vec::new(),
            track: None,
            track_only: None,
            watch: HashSet::with_hasher(FastState::new()),
            watch_only: false,
        }
    }

    /// Keeps every packet of the conversations of these flows (by their
    /// protocol and endpoints: every flow of the same key is kept), for
    /// [`FlowTable::finish_logged`].
    pub fn watch(&mut self, flows: &[Flow]) {
        for f in flows {
            let addr = |ip: IpAddr| -> [u8; 16] {
                let mut a = [0u8; 16];
                match ip {
                    IpAddr::V4(v4) => a[..4].copy_from_slice(&v4.octets()),
                    IpAddr::V6(v6) => a = v6.octets(),
                }
                a
            };
            let x = (addr(f.a_ip), f.a_port.unwrap_or(0));
            let y = (addr(f.b_ip), f.b_port.unwrap_or(0));
            let (lo, hi) = if x <= y { (x, y) } else { (y, x) };
            let v6 = f.family == Family::V6;
            self.watch.insert(Key {
                family: f.family,
                proto: f.proto,
                lo: lo.0,
                lo_port: lo.1,
                hi: hi.0,
                hi_port: hi.1,
                icmp: f.icmp.map(|k| icmp_canonical(v6, k)).unwrap_or((0, 0, 0)),
            });
        }
    }

    /// Folds only the packets of the watched keys ([`FlowTable::watch`]):
    /// the table then holds those flows alone, numbered among themselves.
    pub fn watch_only(&mut self) {
        self.watch_only = true;
    }

    /// Remembers which flow every packet goes into, for
    /// [`FlowTable::finish_tracked`] (16 bytes per packet).
    pub fn track_packets(&mut self) {
        self.track.get_or_insert_with(Vec::new);
        self.track_only = None;
    }

    /// Remembers which flow packet `index` of file `file` goes into (when
    /// not every packet is tracked already); call it before adding the
    /// packet.
    pub fn track_packet(&mut self, file: u32, index: u64) {
        if self.track.is_none() {
            self.track = Some(Vec::new());
            self.track_only = Some(HashSet::default());
        }
        if let Some(only) = &mut self.track_only {
            only.insert((file, index));
        }
    }

    /// Number of flows so far.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// Whether no flow has been seen.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// Adds one packet of frame length `orig_len` captured at `ts_ns`.
    /// Returns where it went ([`Slot`]), unless it is a later fragment
    /// waiting for its first.
    pub fn add(
        &mut self,
        ts_ns: i64,
        orig_len: u32,
        pkt: &IpPacket,
        origin: PacketOrigin,
    ) -> Option<Slot> {
        let mut pkt = *pkt;
        // Later fragments lack what the first one carries in its transport
        // header: ports, or the ICMP type/code/id.
        let keyed_by_transport =
            pkt.has_ports() || pkt.proto == ipproto::ICMP || pkt.proto == ipproto::ICMPV6;
        if keyed_by_transport {
            match pkt.frag {
                Frag::Later(id) => {
                    let fk = FragKey::of(&pkt, id);
                    match self.frags.get(&fk) {
                        Some(&(s, d, icmp, _)) => {
                            pkt.sport = s;
                            pkt.dport = d;
                            pkt.icmp = icmp;
                        }
                        None => {
                            self.pending.entry(fk).or_default().push(Pending {
                                ts_ns,
                                orig_len,
                                pkt,
                                origin,
                            });
                            self.pending_count += 1;
                            if self.pending_count > MAX_PENDING {
                                self.flush_pending();
                            }
                            return None;
                        }
                    }
                }
                Frag::First(id) => {
                    let fk = FragKey::of(&pkt, id);
                    if self.frags.len() >= MAX_FRAGS {
                        self.frags
                            .retain(|_, v| ts_ns.saturating_sub(v.3) < FRAG_TIMEOUT_NS);
                    }
                    self.frags
                        .insert(fk, (pkt.sport, pkt.dport, pkt.icmp, ts_ns));
                    let slot = self.fold(ts_ns, orig_len, &pkt, origin);
                    if let Some(waiting) = self.pending.remove(&fk) {
                        self.pending_count -= waiting.len();
                        for mut w in waiting {
                            w.pkt.sport = pkt.sport;
                            w.pkt.dport = pkt.dport;
                            w.pkt.icmp = pkt.icmp;
                            self.fold(w.ts_ns, w.orig_len, &w.pkt, w.origin);
                        }
                    }
                    return slot;
                }
                Frag::None => {}
            }
        }
        self.fold(ts_ns, orig_len, &pkt, origin)
    }

    fn flush_pending(&mut self) {
        let mut all: Vec<OrphanFragment> = self
            .pending
            .drain()
            .flat_map(|(_, v)| {
                v.into_iter().map(|p| OrphanFragment {
                    origin: p.origin,
                    orig_len: p.orig_len,
                })
            })
            .collect();
        // HashMap order is random: report in capture order.
        all.sort_by_key(|o| (o.origin.file, o.origin.index));
        self.orphans.extend(all);
        self.pending_count = 0;
    }

    fn fold(
        &mut self,
        ts_ns: i64,
        orig_len: u32,
        p: &IpPacket,
        origin: PacketOrigin,
    ) -> Option<Slot> {
        let v6 = p.family == Family::V6;
        let (sport, dport) = if p.has_ports() {
            (p.sport, p.dport)
        } else {
            (0, 0)
        };
        let src = (p.src, sport);
        let dst = (p.dst, dport);
        let (lo, hi) = if src <= dst { (src, dst) } else { (dst, src) };
        let key = Key {
            family: p.family,
            proto: p.proto,
            lo: lo.0,
            lo_port: lo.1,
            hi: hi.0,
            hi_port: hi.1,
            icmp: p.icmp.map(|k| icmp_canonical(v6, k)).unwrap_or((0, 0, 0)),
        };
        if self.watch_only && !self.watch.contains(&key) {
            return None;
        }
        let is_tcp = p.proto == ipproto::TCP;
        let syn_only = is_tcp && p.tcp_flags & (tcpflag::SYN | tcpflag::ACK) == tcpflag::SYN;
        let existing = self.current.get(&key).copied().filter(|&i| {
            let s = &self.states[i];
            let gap = ts_ns.saturating_sub(s.flow.last_seen_ns);
            let limit = if is_tcp && s.closed {
                self.rules.closed_tcp_gap_ns
            } else {
                self.rules.idle_gap_ns
            };
            !(gap > limit || (s.closed && syn_only))
        });
        let idx = match existing {
            Some(i) => i,
            None => {
                // The SYN-ACK sender is the responder, even when the SYN
                // itself was not captured.
                let syn_ack = is_tcp
                    && p.tcp_flags & (tcpflag::SYN | tcpflag::ACK) == tcpflag::SYN | tcpflag::ACK;
                let (a, b) = if syn_ack { (dst, src) } else { (src, dst) };
                let ports = p.has_ports();
                let seq = self.states.len() as u64;
                self.states.push(State {
                    flow: Flow::new(
                        p.proto,
                        p.family,
                        (to_ip(p.family, &a.0), ports.then_some(a.1)),
                        (to_ip(p.family, &b.0), ports.then_some(b.1)),
                        p.icmp,
                        ts_ns,
                    ),
                    a,
                    closed: false,
                    seq,
                    log: Vec::new(),
                });
                let i = self.states.len() - 1;
                self.current.insert(key, i);
                i
            }
        };
        if let Some(t) = &mut self.track {
            if self
                .track_only
                .as_ref()
                .is_none_or(|only| only.contains(&(origin.file, origin.index)))
            {
                t.push((origin.file, origin.index, idx as u32));
            }
        }
        let watched = !self.watch.is_empty() && self.watch.contains(&key);
        let s = &mut self.states[idx];
        if watched {
            s.log.push(PacketMark {
                ts_ns,
                ab: src == s.a,
                bytes: orig_len,
                ip_bytes: p.ip_len,
                tcp_flags: p.tcp_flags,
                tcp_seq: p.tcp_seq,
                tcp_ack: p.tcp_ack,
                tcp_payload: p.tcp_payload,
                file: origin.file,
                index: origin.index,
            });
        }
        let f = &mut s.flow;
        f.first_seen_ns = f.first_seen_ns.min(ts_ns);
        f.last_seen_ns = f.last_seen_ns.max(ts_ns);
        let from_a = src == s.a;
        let nth = if from_a {
            f.packets_ab += 1;
            f.bytes_ab += u64::from(orig_len);
            f.ip_bytes_ab += u64::from(p.ip_len);
            f.tcp_flags_ab |= p.tcp_flags;
            f.packets_ab
        } else {
            f.packets_ba += 1;
            f.bytes_ba += u64::from(orig_len);
            f.ip_bytes_ba += u64::from(p.ip_len);
            f.tcp_flags_ba |= p.tcp_flags;
            f.packets_ba
        };
        if is_tcp && p.tcp_flags & (tcpflag::FIN | tcpflag::RST) != 0 {
            s.closed = true;
        }
        Some(Slot {
            state: idx as u32,
            from_a,
            nth,
        })
    }

    /// Ends aggregation: flows numbered from 1 in order of (first_seen, key,
    /// creation), and the fragments that never met their first fragment.
    pub fn finish(self) -> (Vec<Flow>, Vec<OrphanFragment>) {
        let (flows, orphans, _, _) = self.finish_all();
        (flows, orphans)
    }

    /// [`FlowTable::finish`], plus the flow of every packet when
    /// [`FlowTable::track_packets`] was called (sorted by file and index;
    /// empty otherwise).
    pub fn finish_tracked(self) -> (Vec<Flow>, Vec<OrphanFragment>, Vec<PacketFlow>) {
        let (flows, orphans, _, packets) = self.finish_all();
        (flows, orphans, packets)
    }

    /// As [`FlowTable::finish`], plus the packets of the watched flows by
    /// flow id, in capture order.
    pub fn finish_logged(
        self,
    ) -> (
        Vec<Flow>,
        Vec<OrphanFragment>,
        BTreeMap<u64, Vec<PacketMark>>,
    ) {
        let (flows, orphans, logs, _) = self.finish_all();
        (flows, orphans, logs)
    }

    /// Everything: flows, orphans, watched packets, the flow of every packet.
    #[allow(clippy::type_complexity)]
    pub fn finish_all(
        self,
    ) -> (
        Vec<Flow>,
        Vec<OrphanFragment>,
        BTreeMap<u64, Vec<PacketMark>>,
        Vec<PacketFlow>,
    ) {
        let (flows, orphans, logs, packets, _) = self.finish_with_ids(false);
        (flows, orphans, logs, packets)
    }

    /// [`FlowTable::finish_all`], plus the flow id of every [`Slot::state`]
    /// when `ids` (empty otherwise).
    #[allow(clippy::type_complexity)]
    pub fn finish_with_ids(
        mut self,
        ids: bool,
    ) -> (
        Vec<Flow>,
        Vec<OrphanFragment>,
        BTreeMap<u64, Vec<PacketMark>>,
        Vec<PacketFlow>,
        Vec<u64>,
    ) {
        self.flush_pending();
        let track = self.track.take();
        let mut states = self.states;
        states.sort_by(|x, y| {
            let kx = (
                x.flow.first_seen_ns,
                x.flow.proto,
                x.flow.family,
                x.flow.a_ip,
                x.flow.a_port,
            );
            let ky = (
                y.flow.first_seen_ns,
                y.flow.proto,
                y.flow.family,
                y.flow.a_ip,
                y.flow.a_port,
            );
            kx.cmp(&ky)
                .then_with(|| {
                    (x.flow.b_ip, x.flow.b_port, x.flow.icmp).cmp(&(
                        y.flow.b_ip,
                        y.flow.b_port,
                        y.flow.icmp,
                    ))
                })
                .then(x.seq.cmp(&y.seq))
        });
        let want_ids = ids || track.is_some();
        let mut id_of = vec![0u64; if want_ids { states.len() } else { 0 }];
        if want_ids {
            for (i, s) in states.iter().enumerate() {
                id_of[s.seq as usize] = i as u64 + 1;
            }
        }
        let mut logs = BTreeMap::new();
        let flows = states
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let id = i as u64 + 1;
                if !s.log.is_empty() {
                    logs.insert(id, s.log);
                }
                Flow { id, ..s.flow }
            })
            .collect();
        let mut packets: Vec<PacketFlow> = track
            .unwrap_or_default()
            .into_iter()
            .map(|(file, index, st)| PacketFlow {
                file,
                index,
                flow_id: id_of.get(st as usize).copied().unwrap_or(0),
            })
            .collect();
        packets.sort_unstable();
        (flows, self.orphans, logs, packets, id_of)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::tcp_flags_text;

    fn pkt(src: u8, sp: u16, dst: u8, dp: u16, flags: u8) -> IpPacket {
        let mut s = [0u8; 16];
        let mut d = [0u8; 16];
        s[..4].copy_from_slice(&[10, 0, 0, src]);
        d[..4].copy_from_slice(&[10, 0, 0, dst]);
        IpPacket {
            family: Family::V4,
            proto: ipproto::TCP,
            src: s,
            dst: d,
            sport: sp,
            dport: dp,
            tcp_flags: flags,
            tcp_seq: 0,
            tcp_ack: 0,
            tcp_payload: 0,
            icmp: None,
            ip_len: 40,
            frag: Frag::None,
            payload_off: 0,
            payload_len: 0,
        }
    }

    const O: PacketOrigin = PacketOrigin {
        file: 0,
        index: 0,
        offset: 0,
    };

    #[test]
    fn syn_after_fin_splits_and_syn_ack_sets_initiator() {
        use tcpflag::*;
        let mut t = FlowTable::new(SplitRules::default());
        // Capture starts at the SYN-ACK: the responder is 10.0.0.2.
        t.add(1, 60, &pkt(2, 80, 1, 5000, SYN | ACK), O);
        t.add(2, 60, &pkt(1, 5000, 2, 80, ACK), O);
        t.add(3, 60, &pkt(1, 5000, 2, 80, FIN | ACK), O);
        t.add(4, 60, &pkt(1, 5000, 2, 80, SYN), O); // port reused
        t.add(5, 60, &pkt(2, 80, 1, 5000, SYN | ACK), O);
        let (flows, orphans) = t.finish();
        assert!(orphans.is_empty());
        assert_eq!(flows.len(), 2);
        let f = &flows[0];
        assert_eq!((f.a_port, f.packets_ab, f.packets_ba), (Some(5000), 2, 1));
        assert_eq!(tcp_flags_text(f.tcp_flags_ab), "AF");
        assert_eq!(
            (flows[1].id, flows[1].packets_ab, flows[1].packets_ba),
            (2, 1, 1)
        );
    }

    #[test]
    fn idle_gap_splits() {
        let mut t = FlowTable::new(SplitRules {
            idle_gap_ns: 10,
            closed_tcp_gap_ns: 5,
        });
        t.add(0, 60, &pkt(1, 1, 2, 2, tcpflag::ACK), O);
        t.add(10, 60, &pkt(1, 1, 2, 2, tcpflag::ACK), O);
        t.add(21, 60, &pkt(1, 1, 2, 2, tcpflag::ACK), O);
        assert_eq!(t.finish().0.len(), 2);
    }

    #[test]
    fn later_fragment_before_first_joins_its_flow() {
        let mut t = FlowTable::new(SplitRules::default());
        let mut later = pkt(1, 0, 2, 0, 0);
        later.proto = ipproto::UDP;
        later.frag = Frag::Later(7);
        let mut first = pkt(1, 53, 2, 5353, 0);
        first.proto = ipproto::UDP;
        first.frag = Frag::First(7);
        t.add(1, 100, &later, O);
        t.add(2, 200, &first, O);
        t.add(3, 50, &later, O);
        let mut stray = later;
        stray.frag = Frag::Later(8);
        t.add(4, 70, &stray, O);
        let (flows, orphans) = t.finish();
        assert_eq!(flows.len(), 1);
        assert_eq!(
            (
                flows[0].packets_ab,
                flows[0].bytes_ab,
                flows[0].first_seen_ns
            ),
            (3, 350, 1)
        );
        assert_eq!(orphans.len(), 1);
    }

    #[test]
    fn fragmented_ping_is_one_flow() {
        let mut t = FlowTable::new(SplitRules::default());
        // An ICMP message of `icmp_type` in two fragments of IP id `ip_id`.
        let fragments = |mut head: IpPacket, icmp_type, ip_id| {
            head.proto = ipproto::ICMP;
            head.icmp = Some(IcmpKey {
                icmp_type,
                code: 0,
                id: 77,
            });
            head.frag = Frag::First(ip_id);
            let mut later = head;
            later.icmp = None;
            later.frag = Frag::Later(ip_id);
            [head, later]
        };
        let request = fragments(pkt(1, 0, 2, 0, 0), 8, 9);
        let reply = fragments(pkt(2, 0, 1, 0, 0), 0, 10);
        for p in request.iter().chain(&reply) {
            t.add(1, 1514, p, O);
        }
        let (flows, orphans) = t.finish();
        assert!(orphans.is_empty());
        assert_eq!(flows.len(), 1);
        assert_eq!((flows[0].packets_ab, flows[0].packets_ba), (2, 2));
    }
}
