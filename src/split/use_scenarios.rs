//! Hand-offs and shared sockets, from synthetic bundles: attribution, the
//! plan and the cut together, as `procflow analyze` runs them.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use procflow_format::layout::{ProcessRecord, SnapshotKind, SockUseRecord, TableStored, UseDir};

use super::{apply, plan, PacketParts};
use crate::attribute::{
    attribute_all, Attribution, Confidence, HostContext, Method, Note, Options, Rule,
};
use crate::flow::{ipproto, tcpflag, Family, Flow, PacketMark};
use crate::snapshot::timeline::tests::{build, ev, rec, row4, table, Snap};
use crate::snapshot::timeline::Timeline;
use crate::snapshot::uses::tests::{bind, run};

const NS: u64 = 4026531840;
const LOCAL: &str = "10.0.0.1:40000";
const PEER: &str = "10.0.0.2:4444";
/// Payload of every data segment.
const SEG: u32 = 1000;
/// Frame overhead of every packet.
const HDR: u32 = 54;

/// Monotonic ns at `us` µs into the recording (the snapshots' clock).
fn mono(us: i64) -> i64 {
    5_000_000_000 + us * 1_000
}

fn rt(us: i64) -> i64 {
    1_700_000_000_000_000_000 + us * 1_000
}

/// A recording: two keyframes (0 ms and 50 ms) with the tables and fd
/// listings given, the second carrying the use records and identities.
struct Lab {
    rows: Vec<String>,
    fds1: Vec<String>,
    fds2: Vec<String>,
    uses: Vec<SockUseRecord>,
    procs: Vec<ProcessRecord>,
    events: Vec<procflow_format::layout::EventRecord>,
}

impl Lab {
    fn new() -> Lab {
        Lab {
            rows: Vec::new(),
            fds1: Vec::new(),
            fds2: Vec::new(),
            uses: Vec::new(),
            procs: Vec::new(),
            events: Vec::new(),
        }
    }

    fn timeline(&self) -> Timeline {
        fn fds(v: &[String]) -> Vec<&str> {
            v.iter().map(String::as_str).collect()
        }
        let s1 = Snap::new(1, 0, SnapshotKind::Keyframe)
            .table(NS, "tcp", TableStored::Full, table(&self.rows))
            .fds(&fds(&self.fds1));
        let mut s2 = Snap::new(2, 50, SnapshotKind::Keyframe)
            .table(NS, "tcp", TableStored::Full, table(&self.rows))
            .fds(&fds(&self.fds2))
            .procs(&self.procs)
            .events(&self.events);
        if !self.uses.is_empty() {
            s2 = s2.sockuse(&self.uses);
        }
        let (tl, d) = build(&[s1, s2]);
        assert_eq!(d.bad_lines, 0, "{d:?}");
        tl
    }
}

/// A `use` run at `first`..`last` µs.
fn used(
    sk: &str,
    dir: UseDir,
    pid: u32,
    st: u64,
    first: i64,
    last: i64,
    bytes: u64,
) -> SockUseRecord {
    run(sk, dir, "tcp", pid, st, mono(first), mono(last), bytes)
}

/// The packets of one TCP connection from `LOCAL` (a) to `PEER` (b).
struct Wire {
    pk: Vec<PacketMark>,
    isn_out: u32,
    isn_in: u32,
}

impl Wire {
    /// A handshake at `t` µs; with `syn: false` the capture starts after it.
    fn new(t: i64, isn_out: u32, isn_in: u32, syn: bool) -> Wire {
        let mut w = Wire {
            pk: Vec::new(),
            isn_out,
            isn_in,
        };
        if syn {
            w.push(t, true, tcpflag::SYN, isn_out, 0);
            w.push(t + 10, false, tcpflag::SYN | tcpflag::ACK, isn_in, 0);
            w.push(t + 20, true, tcpflag::ACK, isn_out.wrapping_add(1), 0);
        }
        w
    }

    fn push(&mut self, t: i64, out: bool, flags: u8, seq: u32, len: u32) {
        self.pk.push(PacketMark {
            ts_ns: rt(t),
            ab: out,
            bytes: len + HDR,
            ip_bytes: len + HDR - 14,
            tcp_flags: flags,
            tcp_seq: seq,
            tcp_ack: 0,
            tcp_payload: len,
            file: 0,
            index: self.pk.len() as u64 + 1,
        });
    }

    /// The local end sends stream bytes `[off, off + SEG)` at `t`; the
    /// peer acknowledges them.
    fn out(&mut self, t: i64, off: u32) {
        let seq = self.isn_out.wrapping_add(1).wrapping_add(off);
        self.push(t, true, tcpflag::ACK | tcpflag::PSH, seq, SEG);
        self.push(t + 5, false, tcpflag::ACK, self.isn_in.wrapping_add(1), 0);
    }

    /// The peer sends stream bytes `[off, off + SEG)` at `t`.
    fn inbound(&mut self, t: i64, off: u32) {
        let seq = self.isn_in.wrapping_add(1).wrapping_add(off);
        self.push(t, false, tcpflag::ACK | tcpflag::PSH, seq, SEG);
        self.push(t + 5, true, tcpflag::ACK, self.isn_out.wrapping_add(1), 0);
    }

    fn flow(&self, id: u64, a: &str, b: &str) -> Flow {
        let a: SocketAddr = a.parse().unwrap();
        let b: SocketAddr = b.parse().unwrap();
        let mut f = Flow::new(
            ipproto::TCP,
            Family::V4,
            (a.ip(), Some(a.port())),
            (b.ip(), Some(b.port())),
            None,
            self.pk[0].ts_ns,
        );
        f.id = id;
        for p in &self.pk {
            super::add(&mut f, p);
        }
        f
    }
}

fn ctx() -> HostContext {
    HostContext {
        capture_netns: NS,
        addresses: ["10.0.0.1".parse().unwrap()].into_iter().collect(),
    }
}

/// attribute, plan, cut: the rows `analyze` would write.
fn analyze(
    tl: &Timeline,
    flows: Vec<Flow>,
    pk: Vec<(u64, Vec<PacketMark>)>,
) -> Vec<(Flow, Attribution)> {
    analyze_parts(tl, flows, pk).0
}

/// [`analyze`], and the part of each packet of the flows cut by use.
fn analyze_parts(
    tl: &Timeline,
    flows: Vec<Flow>,
    pk: Vec<(u64, Vec<PacketMark>)>,
) -> (Vec<(Flow, Attribution)>, PacketParts) {
    let opts = Options::default();
    let a = attribute_all(tl, &ctx(), &opts, &flows);
    let cuts = plan(tl, &ctx(), &flows, &a);
    let packets: BTreeMap<u64, Vec<PacketMark>> = pk.into_iter().collect();
    let (f, a, parts) = apply(tl, &ctx(), &opts, flows, a, &cuts, &packets);
    (f.into_iter().zip(a).collect(), parts)
}

/// Payload bytes a row's local end sent and received.
fn payload(f: &Flow, local_is_a: bool) -> (u64, u64) {
    let ab = f.bytes_ab - u64::from(HDR) * f.packets_ab;
    let ba = f.bytes_ba - u64::from(HDR) * f.packets_ba;
    if local_is_a {
        (ab, ba)
    } else {
        (ba, ab)
    }
}

/// (pid, payload out, payload in, confidence) of every row.
fn summary(rows: &[(Flow, Attribution)]) -> Vec<(Option<u32>, u64, u64, Option<Confidence>)> {
    rows.iter()
        .map(|(f, a)| {
            let (o, i) = payload(f, a.local_is_a.unwrap_or(true));
            (a.owner.map(|o| o.pid), o, i, a.confidence())
        })
        .collect()
}

/// A connection by process 10 handed to process 11 after 3 segments: the
/// parent's last segment leaves after the child began to send.
fn hand_off(lab: &mut Lab, new_owner: (u32, u64), with_uses: bool) -> (Flow, Wire) {
    lab.rows.push(row4(LOCAL, PEER, 1, 500));
    lab.fds1.push("10 100 4026531840 500".into());
    lab.fds2
        .push(format!("{} {} 4026531840 500", new_owner.0, new_owner.1));
    lab.procs.push(rec(10, 100, "parent"));
    lab.procs.push(rec(new_owner.0, new_owner.1, "child"));
    lab.events
        .push(ev("connect", 0, 10, Some(100), LOCAL, PEER));
    if with_uses {
        lab.uses
            .push(bind("a1", mono(400), "tcp", LOCAL, PEER, Some("SYN_SENT")));
        lab.uses.push(used(
            "a1",
            UseDir::Send,
            10,
            100,
            1_000,
            2_000,
            3 * u64::from(SEG),
        ));
        lab.uses.push(used(
            "a1",
            UseDir::Send,
            new_owner.0,
            new_owner.1,
            5_000,
            9_000,
            5 * u64::from(SEG),
        ));
    }
    let mut w = Wire::new(500, 1_000_000, 7_000, true);
    w.out(1_500, 0);
    w.out(2_500, SEG);
    w.out(6_000, 2 * SEG);
    for k in 3..8 {
        w.out(6_000 + 500 * i64::from(k), k * SEG);
    }
    (w.flow(1, LOCAL, PEER), w)
}

#[test]
fn fork_hand_off_gives_each_process_its_own_bytes() {
    let mut lab = Lab::new();
    let (f, w) = hand_off(&mut lab, (11, 200), true);
    let rows = analyze(&lab.timeline(), vec![f], vec![(1, w.pk)]);
    assert_eq!(
        summary(&rows),
        [
            (Some(10), 3000, 0, Some(Confidence::High)),
            (Some(11), 5000, 0, Some(Confidence::High)),
        ]
    );
    for (_, a) in &rows {
        assert_eq!(a.method, Method::Rule(Rule::EventUse));
        assert_eq!(a.parent_flow_id, Some(1));
        assert!(a.shared_with.is_empty(), "{:?}", a.shared_with);
    }
}

#[test]
fn fd_passed_with_scm_rights_goes_to_the_worker() {
    // The worker is an unrelated process started before the broker.
    let mut lab = Lab::new();
    let (f, w) = hand_off(&mut lab, (30, 50), true);
    let rows = analyze(&lab.timeline(), vec![f], vec![(1, w.pk)]);
    let s = summary(&rows);
    assert_eq!(s.len(), 2, "{s:?}");
    assert_eq!(s[0].0, Some(10));
    assert_eq!(s[1], (Some(30), 5000, 0, Some(Confidence::High)));
}

#[test]
fn without_use_evidence_no_part_of_a_handed_off_flow_is_high() {
    let mut lab = Lab::new();
    let (f, w) = hand_off(&mut lab, (11, 200), false);
    let rows = analyze(&lab.timeline(), vec![f], vec![(1, w.pk)]);
    assert!(!rows.is_empty());
    for (_, a) in &rows {
        assert!(a.method.is_attributed(), "{:?}", a.method);
        assert_ne!(a.confidence(), Some(Confidence::High), "{a:?}");
        assert!(
            a.notes.iter().any(|n| matches!(
                n,
                Note::HolderOnly {
                    bundle_has_uses: false
                }
            )),
            "{:?}",
            a.notes
        );
    }
}

#[test]
fn exec_after_connect_names_the_new_program_on_its_bytes() {
    let mut lab = Lab::new();
    lab.rows.push(row4(LOCAL, PEER, 1, 500));
    lab.fds1.push("10 100 4026531840 500".into());
    lab.fds2.push("10 100 4026531840 500".into());
    let mut before = rec(10, 100, "connector");
    before.seen_ns = Some(mono(100));
    let mut after = rec(10, 100, "head");
    after.exec_ns = Some(mono(3_000));
    after.seen_ns = Some(mono(3_100));
    lab.procs = vec![before, after];
    lab.uses
        .push(bind("b2", mono(400), "tcp", LOCAL, PEER, Some("SYN_SENT")));
    lab.uses.push(used(
        "b2",
        UseDir::Send,
        10,
        100,
        1_000,
        1_200,
        2 * u64::from(SEG),
    ));
    lab.uses.push(used(
        "b2",
        UseDir::Send,
        10,
        100,
        4_000,
        6_000,
        4 * u64::from(SEG),
    ));
    let mut w = Wire::new(500, 40, 9, true);
    for k in 0..6u32 {
        w.out(1_500 + 1_000 * i64::from(k), k * SEG);
    }
    let tl = lab.timeline();
    let rows = analyze(&tl, vec![w.flow(1, LOCAL, PEER)], vec![(1, w.pk)]);
    let names: Vec<(String, u64)> = rows
        .iter()
        .map(|(f, a)| {
            let o = a.owner.unwrap();
            let p = tl
                .identity_at(o.pid, o.start_time, a.ident_ns.unwrap())
                .unwrap();
            (p.comm.clone(), payload(f, true).0)
        })
        .collect();
    assert_eq!(names, [("connector".into(), 2000), ("head".into(), 4000)]);
    assert!(rows
        .iter()
        .all(|(_, a)| a.confidence() == Some(Confidence::High)));
}

#[test]
fn reverse_shell_child_writes_through_the_inherited_socket() {
    // bash connects and reads the command; `head` (its child) writes the
    // output through the inherited fd; both hold the socket throughout.
    let mut lab = Lab::new();
    lab.rows.push(row4(LOCAL, PEER, 1, 500));
    lab.fds1.push("10 100 4026531840 500".into());
    lab.fds2.push("10 100 4026531840 500".into());
    lab.fds2.push("11 200 4026531840 500".into());
    lab.procs = vec![rec(10, 100, "bash"), rec(11, 200, "head")];
    lab.events
        .push(ev("connect", 0, 10, Some(100), LOCAL, PEER));
    lab.uses
        .push(bind("c3", mono(400), "tcp", LOCAL, PEER, Some("SYN_SENT")));
    lab.uses.push(used(
        "c3",
        UseDir::Recv,
        10,
        100,
        1_100,
        1_100,
        u64::from(SEG),
    ));
    lab.uses.push(used(
        "c3",
        UseDir::Send,
        11,
        200,
        2_000,
        9_000,
        6 * u64::from(SEG),
    ));
    let mut w = Wire::new(500, 3, 77, true);
    w.inbound(1_000, 0);
    for k in 0..6u32 {
        w.out(2_500 + 1_000 * i64::from(k), k * SEG);
    }
    let rows = analyze(
        &lab.timeline(),
        vec![w.flow(1, LOCAL, PEER)],
        vec![(1, w.pk)],
    );
    assert_eq!(
        summary(&rows),
        [
            (Some(10), 0, 1000, Some(Confidence::High)),
            (Some(11), 6000, 0, Some(Confidence::High)),
        ]
    );
}

#[test]
fn a_shells_bytes_after_its_child_exited_stay_the_shells_packet_by_packet() {
    // bash writes a prompt, its child `head` writes the output, then bash
    // reads `exit` and writes again: bash's part spans head's in time, so
    // each packet's part is the one its bytes were placed in, not the last
    // part begun before it.
    let mut lab = Lab::new();
    lab.rows.push(row4(LOCAL, PEER, 1, 500));
    lab.fds1.push("10 100 4026531840 500".into());
    lab.fds2.push("10 100 4026531840 500".into());
    lab.fds2.push("11 200 4026531840 500".into());
    lab.procs = vec![rec(10, 100, "bash"), rec(11, 200, "head")];
    lab.events
        .push(ev("connect", 0, 10, Some(100), LOCAL, PEER));
    lab.uses
        .push(bind("c5", mono(400), "tcp", LOCAL, PEER, Some("SYN_SENT")));
    let seg = u64::from(SEG);
    lab.uses
        .push(used("c5", UseDir::Send, 10, 100, 900, 900, seg));
    lab.uses
        .push(used("c5", UseDir::Recv, 10, 100, 1_600, 12_100, 2 * seg));
    lab.uses
        .push(used("c5", UseDir::Send, 11, 200, 2_000, 9_000, 6 * seg));
    lab.uses
        .push(used("c5", UseDir::Send, 10, 100, 12_200, 12_200, seg));
    let mut w = Wire::new(500, 3, 77, true);
    w.out(1_000, 0);
    w.inbound(1_500, 0);
    for k in 0..6u32 {
        w.out(2_500 + 1_000 * i64::from(k), (k + 1) * SEG);
    }
    w.inbound(12_000, SEG);
    w.out(12_300, 7 * SEG);
    let pk = w.pk.clone();
    let (rows, parts) = analyze_parts(
        &lab.timeline(),
        vec![w.flow(1, LOCAL, PEER)],
        vec![(1, w.pk)],
    );
    assert_eq!(
        summary(&rows),
        [
            (Some(10), 2000, 2000, Some(Confidence::High)),
            (Some(11), 6000, 0, Some(Confidence::High)),
        ]
    );
    let pid_of: HashMap<u64, u32> = rows
        .iter()
        .map(|(f, a)| (f.id, a.owner.map_or(0, |o| o.pid)))
        .collect();
    let stretches = parts.get(&1).expect("flow 1 cut by use");
    let owner = |p: &PacketMark| {
        let i = stretches.partition_point(|(at, _)| *at <= (p.file, p.index));
        pid_of[&stretches[i - 1].1]
    };
    let data: Vec<u32> = pk.iter().filter(|p| p.tcp_payload > 0).map(owner).collect();
    assert_eq!(data, [10, 10, 11, 11, 11, 11, 11, 11, 10, 10]);
    // Every packet in exactly one part: the parts' packets add up.
    let n: u64 = rows.iter().map(|(f, _)| f.packets_ab + f.packets_ba).sum();
    assert_eq!(n, pk.len() as u64);
}

#[test]
fn bytes_sent_just_before_exit_stay_with_their_writer() {
    // Process 10 writes 4 segments in 100 µs and exits; process 11 writes
    // one segment 50 µs later. The kernel sends 10's bytes over the next
    // 3 ms: by time they would be 11's.
    let mut lab = Lab::new();
    lab.rows.push(row4(LOCAL, PEER, 1, 500));
    lab.fds1.push("10 100 4026531840 500".into());
    lab.fds1.push("11 200 4026531840 500".into());
    lab.fds2.push("11 200 4026531840 500".into());
    lab.procs = vec![rec(10, 100, "writer"), rec(11, 200, "late")];
    lab.uses
        .push(bind("d4", mono(400), "tcp", LOCAL, PEER, Some("SYN_SENT")));
    lab.uses.push(used(
        "d4",
        UseDir::Send,
        10,
        100,
        1_000,
        1_100,
        4 * u64::from(SEG),
    ));
    lab.uses.push(used(
        "d4",
        UseDir::Send,
        11,
        200,
        1_150,
        1_150,
        u64::from(SEG),
    ));
    let mut w = Wire::new(500, 0xFFFF_F000, 5, true);
    for k in 0..5u32 {
        w.out(1_200 + 800 * i64::from(k), k * SEG);
    }
    // A retransmission of 10's second segment, last.
    let seq = w.isn_out.wrapping_add(1 + SEG);
    w.push(9_000, true, tcpflag::ACK, seq, SEG);
    let rows = analyze(
        &lab.timeline(),
        vec![w.flow(1, LOCAL, PEER)],
        vec![(1, w.pk)],
    );
    assert_eq!(
        summary(&rows),
        [
            (Some(10), 5000, 0, Some(Confidence::High)),
            (Some(11), 1000, 0, Some(Confidence::High)),
        ]
    );
}

#[test]
fn interleaved_writers_each_get_their_bytes_and_name_each_other() {
    let mut lab = Lab::new();
    lab.rows.push(row4(LOCAL, PEER, 1, 500));
    lab.fds1.push("10 100 4026531840 500".into());
    lab.fds1.push("11 200 4026531840 500".into());
    lab.procs = vec![rec(10, 100, "a"), rec(11, 200, "b")];
    lab.uses
        .push(bind("e5", mono(400), "tcp", LOCAL, PEER, Some("SYN_SENT")));
    for (k, pid) in [10u32, 11, 10, 11, 10].iter().enumerate() {
        let t = 1_000 + 300 * k as i64;
        let st = if *pid == 10 { 100 } else { 200 };
        // Each run overlaps the next: the writers interleave.
        lab.uses.push(used(
            "e5",
            UseDir::Send,
            *pid,
            st,
            t,
            t + 400,
            u64::from(SEG),
        ));
    }
    let mut w = Wire::new(500, 1, 2, true);
    for k in 0..5u32 {
        w.out(1_100 + 300 * i64::from(k), k * SEG);
    }
    let rows = analyze(
        &lab.timeline(),
        vec![w.flow(1, LOCAL, PEER)],
        vec![(1, w.pk)],
    );
    let s = summary(&rows);
    assert_eq!(
        s,
        [
            (Some(10), 3000, 0, Some(Confidence::High)),
            (Some(11), 2000, 0, Some(Confidence::High)),
        ]
    );
    for (_, a) in &rows {
        let pids: Vec<u32> = a.shared_with.iter().map(|k| k.pid).collect();
        assert_eq!(pids, [10, 11]);
        assert!(a.notes.contains(&Note::Interleaved(2)), "{:?}", a.notes);
    }
}

#[test]
fn loopback_names_both_ends_with_their_bytes() {
    let (c, s) = ("127.0.0.1:40000", "127.0.0.1:8000");
    let mut lab = Lab::new();
    lab.rows.push(row4(c, s, 1, 500));
    lab.rows.push(row4(s, c, 1, 501));
    lab.fds1.push("10 100 4026531840 500".into());
    lab.fds1.push("20 50 4026531840 501".into());
    lab.procs = vec![rec(10, 100, "curl"), rec(20, 50, "python3")];
    lab.uses
        .push(bind("f6", mono(400), "tcp", c, s, Some("SYN_SENT")));
    lab.uses
        .push(bind("f7", mono(450), "tcp", s, c, Some("SYN_RECV")));
    lab.uses.push(used(
        "f6",
        UseDir::Send,
        10,
        100,
        1_000,
        1_000,
        u64::from(SEG),
    ));
    lab.uses.push(used(
        "f7",
        UseDir::Recv,
        20,
        50,
        1_100,
        1_100,
        u64::from(SEG),
    ));
    lab.uses.push(used(
        "f7",
        UseDir::Send,
        20,
        50,
        1_200,
        2_000,
        3 * u64::from(SEG),
    ));
    lab.uses.push(used(
        "f6",
        UseDir::Recv,
        10,
        100,
        1_300,
        3_000,
        3 * u64::from(SEG),
    ));
    let mut w = Wire::new(500, 11, 22, true);
    w.out(1_050, 0);
    for k in 0..3u32 {
        w.inbound(1_250 + 300 * i64::from(k), k * SEG);
    }
    let rows = analyze(&lab.timeline(), vec![w.flow(1, c, s)], vec![(1, w.pk)]);
    assert_eq!(
        summary(&rows),
        [(Some(10), 1000, 3000, Some(Confidence::High))]
    );
    let a = &rows[0].1;
    assert!(a.both_local);
    let p = a.peer.as_ref().expect("the server end");
    assert_eq!(p.owner.map(|o| o.pid), Some(20));
    assert_eq!(p.method, Method::Rule(Rule::EventUse));
    assert_eq!(p.confidence(), Some(Confidence::High));
}

#[test]
fn loopback_server_that_hands_off_is_cut_by_the_peer_end() {
    // The client stays one process; the server's listener process reads
    // the request and a worker writes the answer.
    let (c, s) = ("127.0.0.1:40001", "127.0.0.1:8001");
    let mut lab = Lab::new();
    lab.rows.push(row4(c, s, 1, 500));
    lab.rows.push(row4(s, c, 1, 501));
    lab.fds1.push("10 100 4026531840 500".into());
    lab.fds1.push("20 50 4026531840 501".into());
    lab.fds1.push("21 60 4026531840 501".into());
    lab.procs = vec![
        rec(10, 100, "curl"),
        rec(20, 50, "master"),
        rec(21, 60, "worker"),
    ];
    lab.uses
        .push(bind("f6", mono(400), "tcp", c, s, Some("SYN_SENT")));
    lab.uses
        .push(bind("f7", mono(450), "tcp", s, c, Some("SYN_RECV")));
    lab.uses.push(used(
        "f6",
        UseDir::Send,
        10,
        100,
        1_000,
        1_000,
        u64::from(SEG),
    ));
    lab.uses.push(used(
        "f7",
        UseDir::Recv,
        20,
        50,
        1_100,
        1_100,
        u64::from(SEG),
    ));
    lab.uses.push(used(
        "f7",
        UseDir::Send,
        21,
        60,
        1_200,
        2_000,
        2 * u64::from(SEG),
    ));
    lab.uses.push(used(
        "f6",
        UseDir::Recv,
        10,
        100,
        1_300,
        3_000,
        2 * u64::from(SEG),
    ));
    let mut w = Wire::new(500, 11, 22, true);
    w.out(1_050, 0);
    for k in 0..2u32 {
        w.inbound(1_250 + 300 * i64::from(k), k * SEG);
    }
    let rows = analyze(&lab.timeline(), vec![w.flow(1, c, s)], vec![(1, w.pk)]);
    type Ends = (Option<u32>, Option<u32>, (u64, u64));
    let ends: Vec<Ends> = rows
        .iter()
        .map(|(f, a)| {
            (
                a.owner.map(|o| o.pid),
                a.peer.as_ref().and_then(|p| p.owner).map(|o| o.pid),
                payload(f, true),
            )
        })
        .collect();
    assert_eq!(
        ends,
        [
            (Some(10), Some(20), (1000, 0)),
            (Some(10), Some(21), (0, 2000))
        ]
    );
}

#[test]
fn udp_without_sequence_numbers_is_placed_by_time() {
    let (l, r) = ("10.0.0.1:5353", "10.0.0.9:53");
    let mut lab = Lab::new();
    lab.procs = vec![rec(10, 100, "dig"), rec(11, 200, "dig")];
    let mut u = |sk: &str, pid, st, t: i64| {
        let mut b = bind(sk, mono(t - 5), "udp", l, r, None);
        b.source = "udp-send-route".into();
        lab.uses.push(b);
        lab.uses
            .push(run(sk, UseDir::Send, "udp", pid, st, mono(t), mono(t), 40));
    };
    u("0a", 10, 100, 1_000);
    u("0b", 11, 200, 30_000);
    let mut pk = Vec::new();
    for (t, out) in [
        (1_010, true),
        (1_500, false),
        (30_010, true),
        (30_400, false),
    ] {
        pk.push(PacketMark {
            ts_ns: rt(t),
            ab: out,
            bytes: 82,
            ip_bytes: 68,
            tcp_flags: 0,
            tcp_seq: 0,
            tcp_ack: 0,
            tcp_payload: 0,
            file: 0,
            index: 0,
        });
    }
    let a: SocketAddr = l.parse().unwrap();
    let b: SocketAddr = r.parse().unwrap();
    let mut f = Flow::new(
        ipproto::UDP,
        Family::V4,
        (a.ip(), Some(a.port())),
        (b.ip(), Some(b.port())),
        None,
        pk[0].ts_ns,
    );
    f.id = 1;
    for p in &pk {
        super::add(&mut f, p);
    }
    let rows = analyze(&lab.timeline(), vec![f], vec![(1, pk)]);
    let s: Vec<(Option<u32>, u64)> = rows
        .iter()
        .map(|(f, a)| (a.owner.map(|o| o.pid), f.packets_ab + f.packets_ba))
        .collect();
    assert_eq!(s, [(Some(10), 2), (Some(11), 2)]);
}

/// A UDP flow from `l` to `r` of datagrams at (`t` µs, outgoing).
fn udp_flow(id: u64, l: &str, r: &str, at: &[(i64, bool)]) -> (Flow, Vec<PacketMark>) {
    let pk: Vec<PacketMark> = at
        .iter()
        .map(|&(t, out)| PacketMark {
            ts_ns: rt(t),
            ab: out,
            bytes: 82,
            ip_bytes: 68,
            tcp_flags: 0,
            tcp_seq: 0,
            tcp_ack: 0,
            tcp_payload: 0,
            file: 0,
            index: 0,
        })
        .collect();
    let a: SocketAddr = l.parse().unwrap();
    let b: SocketAddr = r.parse().unwrap();
    let mut f = Flow::new(
        ipproto::UDP,
        Family::V4,
        (a.ip(), Some(a.port())),
        (b.ip(), Some(b.port())),
        None,
        pk[0].ts_ns,
    );
    f.id = id;
    for p in &pk {
        super::add(&mut f, p);
    }
    (f, pk)
}

#[test]
fn a_reused_socket_id_gives_no_datagram_to_the_next_process() {
    // Two lookups, one fresh socket each, by two processes 4 ms apart: the
    // kernel hands the second socket the first one's id. The recorder binds
    // a datagram socket at its first send, so the second socket's binding
    // and first call share a time, and the first process' calls end within
    // the slack allowed before a binding.
    let dns = "10.0.0.9:53";
    let (l1, l2) = ("10.0.0.1:5353", "10.0.0.1:6000");
    let mut lab = Lab::new();
    lab.procs = vec![rec(10, 100, "curl"), rec(11, 200, "curl")];
    for (l, pid, st, t) in [(l1, 10, 100, 1_000), (l2, 11, 200, 5_000)] {
        let mut b = bind("0a", mono(t), "udp", l, dns, None);
        b.source = "udp-send-route".into();
        lab.uses.push(b);
        let send = run(
            "0a",
            UseDir::Send,
            "udp",
            pid,
            st,
            mono(t),
            mono(t + 20),
            64,
        );
        let recv = run(
            "0a",
            UseDir::Recv,
            "udp",
            pid,
            st,
            mono(t + 400),
            mono(t + 500),
            80,
        );
        lab.uses.extend([send, recv]);
    }
    let (f1, p1) = udp_flow(1, l1, dns, &[(1_010, true), (1_450, false)]);
    let (f2, p2) = udp_flow(2, l2, dns, &[(5_010, true), (5_450, false)]);
    let rows = analyze(&lab.timeline(), vec![f1, f2], vec![(1, p1), (2, p2)]);
    let s: Vec<(u64, Option<u32>, Option<Confidence>)> = rows
        .iter()
        .map(|(f, a)| (f.id, a.owner.map(|o| o.pid), a.confidence()))
        .collect();
    assert_eq!(
        s,
        [
            (1, Some(10), Some(Confidence::High)),
            (2, Some(11), Some(Confidence::High))
        ],
        "{rows:#?}"
    );
}

#[test]
fn a_sender_in_one_of_two_namespaces_with_its_address_names_its_own() {
    // Two container networks use 10.77.0.3 (namespaces A and B); the
    // capture (on a bridge of the host) shows a connection of B's process,
    // whose socket lived between two snapshots. Its sends name it; its
    // namespace is its own, not the first one holding the address.
    const A: u64 = 4026532400;
    const B: u64 = 4026532500;
    let (l, r) = ("10.77.0.3:43622", "10.77.0.2:80");
    let mk = |seq, ms| {
        let a = [row4("10.77.0.3:43626", "10.77.0.2:80", 1, 300)];
        let b = [row4("10.77.0.3:41000", "10.77.0.2:9000", 1, 400)];
        let mut s = Snap::new(seq, ms, SnapshotKind::Keyframe)
            .table(NS, "tcp", TableStored::Full, table(&[]))
            .table(A, "tcp", TableStored::Full, table(&a))
            .table(B, "tcp", TableStored::Full, table(&b))
            .fds(&["20 200 4026532400 300", "11 100 4026532500 400"]);
        if seq == 2 {
            s = s
                .procs(&[
                    crate::snapshot::timeline::tests::rec_ns(20, 200, A),
                    crate::snapshot::timeline::tests::rec_ns(11, 100, B),
                ])
                .sockuse(&[
                    bind("b1", mono(400), "tcp", l, r, Some("SYN_SENT")),
                    used(
                        "b1",
                        UseDir::Send,
                        11,
                        100,
                        1_000,
                        9_000,
                        8 * u64::from(SEG),
                    ),
                ]);
        }
        s
    };
    let (tl, d) = build(&[mk(1, 0), mk(2, 50)]);
    assert_eq!(d.bad_lines, 0, "{d:?}");
    let mut w = Wire::new(500, 1_000_000, 7_000, true);
    for k in 0..8 {
        w.out(1_500 + 500 * i64::from(k), k * SEG);
    }
    let f = w.flow(1, l, r);
    let a = attribute_all(&tl, &ctx(), &Options::default(), &[f]);
    let a = &a[0];
    assert_eq!(
        a.method,
        crate::attribute::Method::Rule(Rule::EventUse),
        "{a:?}"
    );
    assert_eq!(a.owner.map(|o| o.pid), Some(11));
    assert_eq!(a.netns_hint, Some(B), "{a:?}");
}
