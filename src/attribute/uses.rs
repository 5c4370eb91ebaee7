//! The `event-use` rule and byte placement: which process sent or read
//! each packet of a flow, from the recorder's per-send and per-read runs.
//!
//! A flow's socket is found through the `sock` bindings of its tuple (the
//! tenancy of a socket id overlapping the flow). Its `send` runs, in call
//! order, laid end to end are the socket's outgoing byte stream; its `recv`
//! runs the incoming one. A TCP segment goes to the run owning the stream
//! offset of its first byte, counted from the sender's SYN, whatever its
//! time: bytes written before a fork and sent after it, or sent after their
//! writer exited, stay the writer's. Without a SYN (capture started
//! mid-stream), or for UDP, the run is found by time. Segments without
//! payload follow the owner of the data segment before them.

use std::net::SocketAddr;

use super::ProcKey;
use crate::flow::{tcpflag, PacketMark};
use crate::snapshot::timeline::{Timeline, Transport};
use crate::snapshot::uses::{Tenancy, UseDir, UseRun};

/// Runs this close to a flow's lifetime are of the flow (a send just
/// before the SYN is captured, a read just after the last packet).
pub(crate) const USE_WINDOW_NS: i64 = 1_000_000_000;
/// How far the capture's timestamps and the calls' converted times may
/// disagree.
const CLOCK_SLACK_NS: i64 = 2_000_000;
/// A run may begin this long before its socket's binding was recorded (the
/// binding of a datagram socket is seen within its first send).
const BIND_SLACK_NS: i64 = 10_000_000;

/// One run of one end of a flow, with its place in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    /// The process that made the calls.
    pub owner: ProcKey,
    /// First call, realtime ns.
    pub first_ns: i64,
    /// Last call, realtime ns.
    pub last_ns: i64,
    /// Stream offset of its first byte (meaningful when the end is one
    /// TCP socket).
    pub off: u64,
    /// Bytes of its calls.
    pub bytes: u64,
}

/// The runs of one end (one local socket) of a flow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EndUse {
    /// Send runs, in call order.
    pub send: Vec<Span>,
    /// Receive runs, in call order.
    pub recv: Vec<Span>,
    /// One TCP socket: offsets are stream offsets.
    pub stream: bool,
}

impl EndUse {
    /// Every process with a run, with its bytes sent and read, ordered by
    /// bytes (most first), then pid.
    pub fn owners(&self) -> Vec<(ProcKey, u64)> {
        let mut by: std::collections::HashMap<ProcKey, u64> = std::collections::HashMap::new();
        for s in self.send.iter().chain(&self.recv) {
            let b = by.entry(s.owner).or_default();
            *b = b.saturating_add(s.bytes);
        }
        let mut v: Vec<(ProcKey, u64)> = by.into_iter().collect();
        v.sort_by_key(|(k, b)| (std::cmp::Reverse(*b), k.pid, k.start_time));
        v
    }

    /// First call of `owner`'s runs.
    pub fn first_call(&self, owner: ProcKey) -> Option<i64> {
        self.send
            .iter()
            .chain(&self.recv)
            .filter(|s| s.owner == owner)
            .map(|s| s.first_ns)
            .min()
    }

    /// Processes whose runs overlap in time the runs of `owner`: writers
    /// or readers that interleaved with it (`owner` included), sorted by
    /// start time; empty when none did.
    pub fn concurrent(&self, owner: ProcKey) -> Vec<ProcKey> {
        // The owner's calls sorted by start, with the latest end so far:
        // a span overlaps one of them when one that began before its end
        // ends after its start (n log n, whatever the number of runs).
        let mut mine: Vec<(i64, i64)> = self
            .send
            .iter()
            .chain(&self.recv)
            .filter(|s| s.owner == owner)
            .map(|s| (s.first_ns, s.last_ns))
            .collect();
        mine.sort_unstable();
        let mut reach = i64::MIN;
        let ends: Vec<i64> = mine
            .iter()
            .map(|&(_, l)| {
                reach = reach.max(l);
                reach
            })
            .collect();
        let overlaps = |s: &Span| {
            let j = mine.partition_point(|&(f, _)| f <= s.last_ns);
            j.checked_sub(1)
                .and_then(|k| ends.get(k))
                .is_some_and(|&e| e >= s.first_ns)
        };
        let mut v: Vec<ProcKey> = self
            .send
            .iter()
            .chain(&self.recv)
            .filter(|s| s.owner != owner)
            .filter(|s| overlaps(s))
            .map(|s| s.owner)
            .collect();
        if v.is_empty() {
            return v;
        }
        v.push(owner);
        v.sort_by_key(|k| (k.start_time, k.pid));
        v.dedup();
        v
    }
}

fn spans(runs: &[&UseRun]) -> Vec<Span> {
    let mut off = 0u64;
    runs.iter()
        .map(|r| {
            let s = Span {
                owner: ProcKey {
                    pid: r.pid,
                    start_time: r.start_time,
                },
                first_ns: r.first_ns,
                last_ns: r.last_ns,
                off,
                bytes: r.bytes,
            };
            off = off.saturating_add(r.bytes);
            s
        })
        .collect()
}

/// The runs of the socket holding tuple (`local`, `remote`) during
/// `[t0, t1]`; `None` when no socket bound to it has a run then.
///
/// TCP: the one tenancy of the tuple that overlaps the flow most (a socket
/// id holds one connection at a time); its runs from its binding on.
/// UDP: every socket bound to the tuple around the flow, its runs within
/// the flow's lifetime (an unconnected socket sends to several peers).
pub(crate) fn end_use(
    tl: &Timeline,
    transport: Transport,
    local: SocketAddr,
    remote: SocketAddr,
    t0: i64,
    t1: i64,
) -> Option<EndUse> {
    if tl.uses.is_empty() {
        return None;
    }
    // The last instant a call can be of a tenancy: its end is the next
    // socket's first binding, made at that socket's first call.
    let last_of = |t: &Tenancy| {
        if t.until_ns == i64::MAX {
            i64::MAX
        } else {
            t.until_ns.saturating_sub(1)
        }
    };
    let (w0, w1) = (
        t0.saturating_sub(USE_WINDOW_NS),
        t1.saturating_add(USE_WINDOW_NS),
    );
    let cands = tl
        .uses
        .tenancies_of(transport, local, remote)
        .filter(|t| t.from_ns.saturating_sub(BIND_SLACK_NS) <= w1 && t.until_ns > w0);
    let mut send: Vec<&UseRun> = Vec::new();
    let mut recv: Vec<&UseRun> = Vec::new();
    let stream = transport == Transport::Tcp;
    if stream {
        let best = cands.max_by_key(|t| {
            let overlap = t.until_ns.min(t1).saturating_sub(t.from_ns.max(t0));
            (overlap, std::cmp::Reverse(t.from_ns.abs_diff(t0)), t.sk)
        })?;
        // A TCP socket's state changes (same clock as its calls) come
        // before any call on it: a run begun earlier is of an earlier
        // socket that had the same id.
        let lo = best.from_ns.max(best.since_ns);
        let hi = last_of(best);
        send.extend(tl.uses.runs_between(best.sk, UseDir::Send, lo, hi));
        recv.extend(tl.uses.runs_between(best.sk, UseDir::Recv, lo, hi));
    } else {
        // A run of the tuple's socket may begin a little before its
        // binding was seen, but not before the id's previous socket ended,
        // and not at or after the id passed to the next one: a reused id's
        // calls are another socket's, often another process'.
        let mut sks: Vec<(u64, i64, i64)> = cands
            .map(|t| {
                let lo = t.from_ns.saturating_sub(BIND_SLACK_NS).max(t.since_ns);
                (t.sk, lo, last_of(t))
            })
            .collect();
        sks.sort_unstable();
        sks.dedup();
        for (sk, lo, hi) in sks {
            // Runs last at most a flush period: those begun within the
            // window (less a margin) are the candidates.
            // A run may have begun on an earlier socket of the same id (a
            // run is not cut when the id is reused by the same process): it
            // counts when it overlaps the tenancy and the window.
            let keep = |r: &&UseRun| r.last_ns >= w0.max(lo);
            let (lo, hi) = (lo.max(w0).saturating_sub(USE_WINDOW_NS), hi.min(w1));
            send.extend(
                tl.uses
                    .runs_between(sk, UseDir::Send, lo, hi)
                    .iter()
                    .filter(keep),
            );
            recv.extend(
                tl.uses
                    .runs_between(sk, UseDir::Recv, lo, hi)
                    .iter()
                    .filter(keep),
            );
        }
        send.sort_by_key(|r| (r.first_ns, r.order));
        recv.sort_by_key(|r| (r.first_ns, r.order));
    }
    if send.is_empty() && recv.is_empty() {
        return None;
    }
    Some(EndUse {
        send: spans(&send),
        recv: spans(&recv),
        stream,
    })
}

/// Unrolls 32-bit sequence numbers into 64-bit stream offsets.
#[derive(Debug, Default, Clone, Copy)]
struct Unwrap {
    base: Option<u32>,
    last: Option<u64>,
}

impl Unwrap {
    /// Offset of sequence number `seq` from the stream's first byte, the
    /// 2^32 multiple chosen nearest the highest offset seen.
    fn offset(&mut self, seq: u32) -> Option<u64> {
        let rel = u64::from(seq.wrapping_sub(self.base?));
        const WRAP: u64 = 1 << 32;
        let x = match self.last {
            None => rel,
            Some(last) => {
                let mut c = (last & !(WRAP - 1)) | rel;
                if c.saturating_add(WRAP / 2) < last {
                    c = c.saturating_add(WRAP);
                } else if c > last.saturating_add(WRAP / 2) && c >= WRAP {
                    c -= WRAP;
                }
                c
            }
        };
        self.last = Some(self.last.map_or(x, |l| l.max(x)));
        Some(x)
    }
}

/// The span owning stream offset `x`.
fn by_offset(spans: &[Span], x: u64) -> Option<usize> {
    let i = spans.partition_point(|s| s.off <= x).checked_sub(1)?;
    let s = spans.get(i)?;
    (x < s.off.saturating_add(s.bytes)).then_some(i)
}

/// The span whose calls cover time `t`, else (`sent`: bytes leave after
/// the send) the last one begun before `t`, else (read: bytes are read
/// after they arrive) the first one ending after `t`, else the nearest.
fn by_time(spans: &[Span], t: i64, sent: bool) -> Option<usize> {
    // Spans are in call order (sorted by first call): binary search.
    let i = spans.partition_point(|s| s.first_ns <= t);
    let before = i.checked_sub(1);
    if let Some(b) = before.filter(|&b| spans.get(b).is_some_and(|s| t <= s.last_ns)) {
        return Some(b);
    }
    let after = (i < spans.len()).then_some(i);
    if sent {
        // The capture's clock and the calls' (monotonic plus a snapshot's
        // offset) differ by a few µs: a packet stamped just before a run
        // that begins right after it, long after the previous run ended,
        // is that run's.
        let near_next = after
            .and_then(|a| spans.get(a))
            .filter(|n| n.first_ns.saturating_sub(t) <= CLOCK_SLACK_NS);
        let prev_gap = before
            .and_then(|b| spans.get(b))
            .map_or(i64::MAX, |p| t.saturating_sub(p.last_ns));
        match near_next {
            Some(n) if n.first_ns.saturating_sub(t) < prev_gap => after,
            _ => before.or(after),
        }
    } else {
        after.or(before)
    }
}

/// The run of `end` that sent or read each packet: `from_end(p)` says
/// whether packet `p` was sent by this end (its `send` runs) or received
/// (its `recv` runs). A packet without payload, or whose bytes no run
/// holds, follows the data packet before it (the first one after, before
/// any data). `None` for every packet when the end has no run at all.
pub(crate) fn place(
    end: &EndUse,
    packets: &[PacketMark],
    transport: Transport,
    from_end: impl Fn(&PacketMark) -> bool,
) -> Vec<Option<Span>> {
    let tcp = transport == Transport::Tcp;
    let mut out_seq = Unwrap::default();
    let mut in_seq = Unwrap::default();
    if tcp && end.stream {
        for p in packets {
            if p.tcp_flags & tcpflag::SYN != 0 {
                let u = if from_end(p) {
                    &mut out_seq
                } else {
                    &mut in_seq
                };
                if u.base.is_none() {
                    u.base = Some(p.tcp_seq.wrapping_add(1));
                }
            }
        }
    }
    let mut owners: Vec<Option<Span>> = packets
        .iter()
        .map(|p| {
            let data = !tcp || p.tcp_payload > 0;
            if !data {
                return None;
            }
            let sent = from_end(p);
            let (spans, u) = if sent {
                (&end.send, &mut out_seq)
            } else {
                (&end.recv, &mut in_seq)
            };
            let by_seq = if tcp && end.stream {
                u.offset(p.tcp_seq).and_then(|x| by_offset(spans, x))
            } else {
                None
            };
            by_seq
                .or_else(|| by_time(spans, p.ts_ns, sent))
                .and_then(|i| spans.get(i).copied())
        })
        .collect();
    // Packets without an owner of their own follow the data before them.
    let mut prev: Option<Span> = None;
    for o in owners.iter_mut() {
        match o {
            Some(s) => prev = Some(*s),
            None => *o = prev,
        }
    }
    let first = owners.iter().flatten().next().copied();
    for o in owners.iter_mut() {
        if o.is_none() {
            *o = first;
        }
    }
    owners
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(pid: u32) -> ProcKey {
        ProcKey { pid, start_time: 1 }
    }

    fn span(pid: u32, first: i64, last: i64, off: u64, bytes: u64) -> Span {
        Span {
            owner: k(pid),
            first_ns: first,
            last_ns: last,
            off,
            bytes,
        }
    }

    fn seg(ts: i64, out: bool, flags: u8, seq: u32, len: u32) -> PacketMark {
        PacketMark {
            ts_ns: ts,
            ab: out,
            bytes: len + 54,
            ip_bytes: len + 40,
            tcp_flags: flags,
            tcp_seq: seq,
            tcp_ack: 0,
            tcp_payload: len,
            file: 0,
            index: 0,
        }
    }

    #[test]
    fn sequence_numbers_wrap_and_retransmissions_keep_their_writer() {
        // ISN just below 2^32: the stream wraps after 100 bytes.
        let isn = u32::MAX - 100;
        let end = EndUse {
            send: vec![span(1, 10, 20, 0, 150), span(2, 30, 40, 150, 200)],
            recv: vec![],
            stream: true,
        };
        let base = isn.wrapping_add(1);
        let pk = [
            seg(0, true, tcpflag::SYN, isn, 0),
            seg(50, true, tcpflag::ACK, base, 100),
            seg(51, true, tcpflag::ACK, base.wrapping_add(100), 100),
            seg(52, false, tcpflag::ACK, 7, 0),
            seg(53, true, tcpflag::ACK, base.wrapping_add(200), 150),
            // A retransmission of the first writer's bytes, after.
            seg(60, true, tcpflag::ACK, base.wrapping_add(100), 50),
        ];
        let o: Vec<u32> = place(&end, &pk, Transport::Tcp, |p| p.ab)
            .iter()
            .map(|s| s.map_or(0, |s| s.owner.pid))
            .collect();
        assert_eq!(o, [1, 1, 1, 1, 2, 1]);
        let mut u = Unwrap {
            base: Some(u32::MAX - 10),
            last: None,
        };
        assert_eq!(u.offset(u32::MAX - 10), Some(0));
        assert_eq!(u.offset(5), Some(16));
        for i in 0..5u64 {
            u.offset((i as u32 + 1).wrapping_mul(1 << 30));
        }
        assert!(u.last.unwrap() > 1 << 32);
    }

    #[test]
    fn without_a_syn_packets_are_placed_by_time() {
        let end = EndUse {
            send: vec![span(1, 10, 20, 0, 100), span(2, 30, 40, 100, 100)],
            recv: vec![span(3, 60, 70, 0, 10)],
            stream: true,
        };
        let pk = [
            seg(25, true, tcpflag::ACK, 1000, 100),
            seg(45, true, tcpflag::ACK, 1100, 100),
            seg(50, false, tcpflag::ACK, 1, 10),
        ];
        let o: Vec<u32> = place(&end, &pk, Transport::Tcp, |p| p.ab)
            .iter()
            .map(|s| s.map_or(0, |s| s.owner.pid))
            .collect();
        // Sent after the first run: its; after the second: its; read later.
        assert_eq!(o, [1, 2, 3]);
        // A datagram stamped 10 µs before the run that sent it (the two
        // clocks differ), long after the previous run: the next run's.
        let spans = [span(1, 0, 1_000, 0, 1), span(2, 5_000_000, 5_000_000, 1, 1)];
        assert_eq!(by_time(&spans, 4_990_000, true), Some(1));
        assert_eq!(by_time(&spans, 2_500_000, true), Some(0));
    }
}
