//! The join of foreign evidence with a capture's flows: the host's
//! addresses, each source's clock offset, the candidates every source
//! offers for a flow, and the one kept (`docs/foreign-evidence.md`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use procflow_format::layout::ProcessRecord;
use serde::Serialize;

use crate::attribute::{
    Attribution, Confidence, EventMatch, Method, Note, ProcKey, Reason, Rule, SocketMatch,
    FOREIGN_RULES,
};
use crate::flow::{ipproto, tcpflag, Flow};
use crate::snapshot::procnet::STATE_LISTEN;
use crate::snapshot::timeline::{
    EventKind, Holder, Run, SockEvent, Socket, SocketKey, Timeline, Transport,
};

use super::audit::{AuditEvent, AuditLog, Call};
use super::uac::UacCollection;

const SEC: i64 = 1_000_000_000;
/// Window of the audit clock estimate.
const WINDOW_NS: i64 = 50_000_000;
/// Largest clock offset looked for.
const MAX_OFFSET_NS: i64 = 3600 * SEC;
/// Candidate pairs looked at for an estimate, at most.
const MAX_PAIRS: usize = 2_000_000;

/// How a source's clock was set against the capture's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClockOffset {
    /// `uac` or `audit`.
    pub source: String,
    /// Added to the source's times, ns.
    pub offset_ns: i64,
    /// `estimated`, `given` (`--clock-offset`) or `none` (no basis: 0).
    pub how: &'static str,
    /// Spread of the matching differences (audit) or width of the range
    /// that fits (uac), ns.
    pub spread_ns: i64,
    /// Matching pairs the estimate rests on.
    pub pairs: usize,
    /// One sentence for the terminal and summary.
    pub text: String,
}

/// What one source covered, for the report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Coverage {
    /// `uac` or `audit`.
    pub source: String,
    /// Files.
    pub paths: Vec<String>,
    /// Time range covered (capture clock), ns.
    pub start_ns: Option<i64>,
    /// End of it.
    pub end_ns: Option<i64>,
    /// Pids it names.
    pub pids: usize,
    /// Sockets (uac) or socket events (audit).
    pub sockets: usize,
    /// Flows it attributed (as the kept evidence).
    pub flows_attributed: usize,
    /// Bytes of those flows.
    pub bytes_attributed: u64,
    /// Flows where it was a candidate at all.
    pub flows_explained: usize,
}

/// Options of the join.
#[derive(Debug, Clone, Default)]
pub struct JoinOptions {
    /// Host addresses given on the command line.
    pub host_ips: Vec<IpAddr>,
    /// `--clock-offset` values by source name.
    pub offsets: BTreeMap<String, i64>,
    /// `--max-gap`, ns.
    pub max_gap_ns: i64,
}

/// The join's result.
#[derive(Debug, Clone, Default)]
pub struct Joined {
    /// A timeline holding the foreign sockets, events and processes, so the
    /// reports can look them up as for a bundle.
    pub timeline: Timeline,
    /// One attribution per flow.
    pub attributions: Vec<Attribution>,
    /// The clock of each source.
    pub clocks: Vec<ClockOffset>,
    /// What each source covered.
    pub coverage: Vec<Coverage>,
    /// The host's addresses used.
    pub host_addresses: BTreeSet<IpAddr>,
    /// Where they came from.
    pub host_address_source: String,
    /// Flows on which two sources named different pids.
    pub disagreements: usize,
    /// Sentences for the terminal and the reports.
    pub warnings: Vec<String>,
}

fn canon(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// The flow's transport, when TCP or UDP.
fn transport(f: &Flow) -> Option<Transport> {
    match f.proto {
        ipproto::TCP => Some(Transport::Tcp),
        ipproto::UDP => Some(Transport::Udp),
        _ => None,
    }
}

/// Whether the flow began with its initiator's SYN (or is UDP).
fn opened_by_a(f: &Flow) -> bool {
    f.proto != ipproto::TCP || f.tcp_flags_ab & tcpflag::SYN != 0
}

fn ends(f: &Flow, local_is_a: bool) -> Option<(SocketAddr, SocketAddr)> {
    let a = SocketAddr::new(f.a_ip.to_canonical(), f.a_port?);
    let b = SocketAddr::new(f.b_ip.to_canonical(), f.b_port?);
    Some(if local_is_a { (a, b) } else { (b, a) })
}

/// Distance from `[t0, t1]` to `[w0, w1]`, 0 when they overlap.
fn gap(t0: i64, t1: i64, w0: i64, w1: i64) -> i64 {
    if t1 < w0 {
        w0 - t1
    } else if t0 > w1 {
        t0 - w1
    } else {
        0
    }
}

/// The audit clock: the 50 ms window of `SYN time - call time` differences
/// over started connects that holds the most distinct calls.
fn estimate_audit(
    events: &[AuditEvent],
    flows_by_remote: &HashMap<SocketAddr, Vec<usize>>,
    flows: &[Flow],
) -> Option<(i64, i64, usize)> {
    let mut diffs: Vec<(i64, usize)> = Vec::new();
    'outer: for (k, e) in events.iter().enumerate() {
        if e.call != Call::Connect {
            continue;
        }
        for &i in flows_by_remote
            .get(&e.addr)
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            let d = flows[i].first_seen_ns - e.t_ns;
            if d.abs() <= MAX_OFFSET_NS {
                diffs.push((d, k));
                if diffs.len() >= MAX_PAIRS {
                    break 'outer;
                }
            }
        }
    }
    if diffs.is_empty() {
        return None;
    }
    diffs.sort_unstable();
    // Two pointers over the sorted differences; score = distinct calls.
    let mut best: Option<(usize, i64, usize, usize)> = None; // (score, -|mid|, lo, hi)
    let mut count: HashMap<usize, usize> = HashMap::new();
    let mut lo = 0;
    for hi in 0..diffs.len() {
        *count.entry(diffs[hi].1).or_default() += 1;
        while diffs[hi].0 - diffs[lo].0 > WINDOW_NS {
            let c = count.entry(diffs[lo].1).or_default();
            *c -= 1;
            if *c == 0 {
                count.remove(&diffs[lo].1);
            }
            lo += 1;
        }
        let score = count.len();
        let mid = (diffs[lo].0 + diffs[hi].0) / 2;
        let better = match best {
            None => true,
            Some((s, m, _, _)) => score > s || (score == s && -mid.abs() > m),
        };
        if better {
            best = Some((score, -mid.abs(), lo, hi));
        }
    }
    let (score, _, lo, hi) = best?;
    let window: Vec<i64> = diffs[lo..=hi].iter().map(|d| d.0).collect();
    let median = window[window.len() / 2];
    Some((median, window[window.len() - 1] - window[0], score))
}

/// The UAC clock: the offset that puts the collection window inside the
/// most flows of its connected sockets; 0 when 0 is among the best.
fn estimate_uac(
    c: &UacCollection,
    window: (i64, i64),
    flows_by_tuple: &HashMap<(Transport, SocketAddr, SocketAddr), Vec<usize>>,
    flows: &[Flow],
) -> Option<(i64, i64, i64, usize)> {
    let mut edges: Vec<(i64, i32)> = Vec::new();
    for s in &c.sockets {
        if s.state != 0x01 || s.inode == 0 {
            continue;
        }
        for &i in flows_by_tuple
            .get(&(s.transport, canon(s.local), canon(s.remote)))
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            let f = &flows[i];
            // Offsets o with [f0, f1] meeting [w0 + o, w1 + o].
            edges.push((f.first_seen_ns - window.1, 1));
            edges.push((f.last_seen_ns - window.0, -1));
        }
    }
    if edges.is_empty() {
        return None;
    }
    // Starts before ends at the same point: closed intervals.
    edges.sort_by_key(|&(t, d)| (t, -d));
    let mut cur = 0;
    let mut best = (0, 0i64, 0i64);
    for (k, &(t, d)) in edges.iter().enumerate() {
        cur += d;
        if d > 0 && cur > best.0 {
            let end = edges
                .get(k + 1..)
                .and_then(|r| r.iter().find(|e| e.1 < 0))
                .map_or(t, |e| e.0);
            best = (cur, t, end);
        }
    }
    let (n, lo, hi) = best;
    let off = if lo <= 0 && 0 <= hi {
        0
    } else {
        lo + (hi - lo) / 2
    };
    Some((off, lo, hi, n as usize))
}

fn offset_text(source: &str, off: i64, how: &str, extra: &str) -> String {
    format!(
        "{source} clock: {:+.3} s from the capture's ({how}{extra})",
        off as f64 / 1e9
    )
}

/// Connects to one remote address, paired with flows nearest first, in
/// the order they were made. A connect sends its SYN before it returns,
/// so the k-th connect to an address opened the k-th of those flows; but
/// the audit clock is estimated (a few ms of spread) and two connects a
/// few ms apart can each be nearest the other's flow. Within each address
/// the paired connects and flows are re-paired in time order: the same
/// calls and flows, none crossed.
fn uncross_connects(
    cand: &mut HashMap<usize, Cand>,
    a: &AuditLog,
    ev_keys: &[ProcKey],
    flows: &[Flow],
    audit_off: i64,
) {
    let mut by_addr: HashMap<SocketAddr, Vec<(usize, usize)>> = HashMap::new();
    for (&i, c) in cand.iter() {
        if let (Rule::AuditConnect, Some(m)) = (c.rule, &c.event) {
            by_addr
                .entry(a.events[m.index].addr)
                .or_default()
                .push((m.index, i));
        }
    }
    for pairs in by_addr.values().filter(|p| p.len() > 1) {
        let mut ks: Vec<usize> = pairs.iter().map(|p| p.0).collect();
        let mut is: Vec<usize> = pairs.iter().map(|p| p.1).collect();
        ks.sort_by_key(|&k| (a.events[k].t_ns, a.events[k].serial));
        is.sort_by_key(|&i| (flows[i].first_seen_ns, i));
        for (&k, &i) in ks.iter().zip(&is) {
            let Some(c) = cand.get_mut(&i) else { continue };
            if c.event.as_ref().is_some_and(|m| m.index == k) {
                continue;
            }
            let e = &a.events[k];
            let d = (flows[i].first_seen_ns - e.t_ns.saturating_add(audit_off)).abs();
            c.owner = ev_keys[k];
            c.gap = d;
            c.event = Some(EventMatch {
                index: k,
                gap_ns: d,
            });
            c.notes = vec![Note::AuditSession {
                auid: e.auid,
                ses: e.ses,
            }];
        }
    }
}

/// One candidate owner of a flow.
#[derive(Debug, Clone)]
struct Cand {
    rule: Rule,
    owner: ProcKey,
    gap: i64,
    socket: Option<SocketMatch>,
    event: Option<EventMatch>,
    shared: Vec<ProcKey>,
    notes: Vec<Note>,
}

impl Cand {
    fn confidence(&self) -> Confidence {
        let c = self.rule.confidence(self.gap);
        if self.shared.is_empty() {
            c
        } else {
            c.min(Confidence::Medium)
        }
    }
    fn rank(&self) -> (Confidence, std::cmp::Reverse<usize>, std::cmp::Reverse<i64>) {
        let order = FOREIGN_RULES
            .iter()
            .position(|r| *r == self.rule)
            .unwrap_or(99);
        (
            self.confidence(),
            std::cmp::Reverse(order),
            std::cmp::Reverse(self.gap),
        )
    }
}

/// Joins the flows with the evidence.
pub fn join(
    flows: &[Flow],
    uacs: &[UacCollection],
    audit: Option<&AuditLog>,
    opts: &JoinOptions,
) -> Joined {
    let mut out = Joined::default();
    // Host addresses.
    let mut hosts: BTreeSet<IpAddr> = opts.host_ips.iter().map(|i| i.to_canonical()).collect();
    let mut from = Vec::new();
    if !hosts.is_empty() {
        from.push("--host-ip".to_string());
    }
    for c in uacs {
        let n = hosts.len();
        hosts.extend(c.addresses.iter().filter(|a| !a.is_loopback()).copied());
        if hosts.len() > n {
            from.push("UAC (ip addr, socket tables)".into());
        }
    }
    if hosts.is_empty() {
        if let Some(a) = audit {
            hosts.extend(
                a.events
                    .iter()
                    .filter(|e| e.call == Call::Bind && !e.addr.ip().is_unspecified())
                    .map(|e| e.addr.ip()),
            );
            if !hosts.is_empty() {
                from.push("audit bind records".into());
            }
        }
    }
    if hosts.is_empty() {
        if let Some(a) = audit {
            let n = infer_hosts_from_connects(flows, a, opts.offsets.get("audit").copied());
            if !n.is_empty() {
                hosts.extend(n);
                from.push("the capture side of audited connects".into());
            }
        }
    }
    if hosts.is_empty() {
        out.warnings.push(
            "no evidence says which addresses are the host's (no UAC ip addr output or socket \
             table, no audit bind of a specific address): give --host-ip; every flow is \
             not-this-host"
                .into(),
        );
    }
    out.host_address_source = from.join(", ");
    out.host_addresses = hosts.clone();
    let is_host = |ip: IpAddr| hosts.contains(&ip.to_canonical());

    // Orientation of each flow.
    let orient: Vec<Option<bool>> = flows
        .iter()
        .map(|f| {
            if is_host(f.a_ip) {
                Some(true)
            } else if is_host(f.b_ip) {
                Some(false)
            } else {
                None
            }
        })
        .collect();
    let mut by_remote: HashMap<SocketAddr, Vec<usize>> = HashMap::new();
    let mut by_peer: HashMap<SocketAddr, Vec<usize>> = HashMap::new();
    let mut by_tuple: HashMap<(Transport, SocketAddr, SocketAddr), Vec<usize>> = HashMap::new();
    let mut by_local_port: HashMap<(Transport, u16), Vec<usize>> = HashMap::new();
    for (i, f) in flows.iter().enumerate() {
        let (Some(t), Some(local_is_a)) = (transport(f), orient[i]) else {
            continue;
        };
        let Some((local, remote)) = ends(f, local_is_a) else {
            continue;
        };
        by_tuple.entry((t, local, remote)).or_default().push(i);
        by_local_port.entry((t, local.port())).or_default().push(i);
        if local_is_a && opened_by_a(f) {
            by_remote.entry(remote).or_default().push(i);
        } else if !local_is_a {
            by_peer.entry(remote).or_default().push(i);
        }
    }

    // Clocks.
    let mut audit_off = 0i64;
    if let Some(a) = audit {
        let c = if let Some(&o) = opts.offsets.get("audit") {
            ClockOffset {
                source: "audit".into(),
                offset_ns: o,
                how: "given",
                spread_ns: 0,
                pairs: 0,
                text: offset_text("audit", o, "given with --clock-offset", ""),
            }
        } else {
            match estimate_audit(&a.events, &by_remote, flows) {
                Some((m, spread, n)) if n >= 3 => ClockOffset {
                    source: "audit".into(),
                    offset_ns: m,
                    how: "estimated",
                    spread_ns: spread,
                    pairs: n,
                    text: offset_text(
                        "audit",
                        m,
                        "estimated",
                        &format!(
                            ", spread {:.1} ms, from {n} connect/first-packet pairs; includes the call-to-SYN latency",
                            spread as f64 / 1e6
                        ),
                    ),
                },
                other => ClockOffset {
                    source: "audit".into(),
                    offset_ns: 0,
                    how: "none",
                    spread_ns: 0,
                    pairs: other.map_or(0, |o| o.2),
                    text: offset_text(
                        "audit",
                        0,
                        "not estimated",
                        ": fewer than 3 connects match a first packet; give --clock-offset audit=DUR if the host's clock was off",
                    ),
                },
            }
        };
        audit_off = c.offset_ns;
        out.clocks.push(c);
    }
    let mut uac_offs = Vec::new();
    for (k, c) in uacs.iter().enumerate() {
        let name = if uacs.len() == 1 {
            "uac".to_string()
        } else {
            format!("uac{}", k + 1)
        };
        let window = c
            .tables_at
            .or(c.acquisition)
            .map(|(a, b)| (a * SEC, (b + 1) * SEC));
        let clock = if let Some(&o) = opts.offsets.get(&name).or(opts.offsets.get("uac")) {
            ClockOffset {
                source: name.clone(),
                offset_ns: o,
                how: "given",
                spread_ns: 0,
                pairs: 0,
                text: offset_text(&name, o, "given with --clock-offset", ""),
            }
        } else {
            match window.and_then(|w| estimate_uac(c, w, &by_tuple, flows)) {
                Some((o, lo, hi, n)) => ClockOffset {
                    source: name.clone(),
                    offset_ns: o,
                    how: "estimated",
                    spread_ns: hi - lo,
                    pairs: n,
                    text: offset_text(
                        &name,
                        o,
                        "estimated",
                        &format!(
                            ", any of {:+.1} .. {:+.1} s fits the {n} connected socket(s) seen in the capture",
                            lo as f64 / 1e9,
                            hi as f64 / 1e9
                        ),
                    ),
                },
                None => ClockOffset {
                    source: name.clone(),
                    offset_ns: 0,
                    how: "none",
                    spread_ns: 0,
                    pairs: 0,
                    text: offset_text(&name, 0, "not estimated", ": no connected socket of the collection is in the capture"),
                },
            }
        };
        uac_offs.push(clock.offset_ns);
        out.clocks.push(clock);
        if window.is_none() {
            out.warnings.push(format!(
                "{}: no collection time (no uac.log, no member times): its sockets are used at low confidence only",
                crate::hostile::term_path(&c.path)
            ));
        }
    }

    // The timeline: processes, sockets, events.
    let mut tl = Timeline::default();
    tl.event_sources = vec!["auditd".into()];
    // UAC processes: (pid → start ticks) per collection.
    let mut uac_key: Vec<HashMap<u32, ProcKey>> = Vec::new();
    let btime = boot_time(uacs);
    for c in uacs {
        let mut keys = HashMap::new();
        for p in c.processes.values() {
            // Without stat.txt, the start ticks from ps' start time.
            let ticks = p.start_ticks.or_else(|| {
                let s = p.start_secs? - btime?;
                u64::try_from(s).ok().map(|s| s * 100)
            });
            let key = ProcKey {
                pid: p.pid,
                start_time: ticks.unwrap_or(0),
            };
            keys.insert(p.pid, key);
            tl.processes
                .entry((key.pid, key.start_time))
                .or_insert_with(|| ProcessRecord {
                    pid: p.pid,
                    start_time: key.start_time,
                    ppid: p.ppid.unwrap_or(0),
                    uid: p.uid.unwrap_or(u32::MAX),
                    comm: p.comm.clone().unwrap_or_default(),
                    exe: p.exe.clone(),
                    cmdline: p.cmdline.clone(),
                    netns: 0,
                    cgroup: None,
                    container_id: None,
                    seen_ns: None,
                    exec_ns: None,
                    euid: None,
                    user: None,
                });
        }
        uac_key.push(keys);
    }
    // Sockets (one run: the collection window, capture clock).
    struct Pending {
        key: SocketKey,
        uid: u32,
        run: Run,
        uac: usize,
    }
    let mut pend: Vec<Pending> = Vec::new();
    for (k, c) in uacs.iter().enumerate() {
        let off = uac_offs.get(k).copied().unwrap_or(0);
        let (w0, w1) = c
            .tables_at
            .or(c.acquisition)
            .map_or((i64::MIN / 4, i64::MIN / 4), |(a, b)| {
                (a * SEC + off, (b + 1) * SEC + off)
            });
        let mut seen = HashSet::new();
        for s in &c.sockets {
            let key = SocketKey {
                netns: k as u64,
                transport: s.transport,
                local: s.local,
                remote: s.remote,
                inode: s.inode,
            };
            if seen.insert(key) {
                pend.push(Pending {
                    key,
                    uid: s.uid,
                    run: Run {
                        start_ns: w0,
                        end_ns: w1,
                        first_seq: 0,
                        last_seq: 0,
                        state: s.state,
                    },
                    uac: k,
                });
            }
        }
        let in_tables: HashSet<(Transport, SocketAddr, SocketAddr)> = c
            .sockets
            .iter()
            .map(|s| (s.transport, canon(s.local), canon(s.remote)))
            .collect();
        // Tuples ss listed without a process and no table row has (read at
        // another moment): seen, owner unknown.
        for (t, local, remote, state) in &c.listed_tuples {
            let known = in_tables.contains(&(*t, canon(*local), canon(*remote)));
            let key = SocketKey {
                netns: k as u64,
                transport: *t,
                local: *local,
                remote: *remote,
                inode: 0,
            };
            if !known && seen.insert(key) {
                let st = match state.as_str() {
                    "TIME-WAIT" => 0x06,
                    "ESTAB" => 0x01,
                    "LISTEN" => STATE_LISTEN,
                    "FIN-WAIT-1" => 0x04,
                    "FIN-WAIT-2" => 0x05,
                    "CLOSE-WAIT" => 0x08,
                    "LAST-ACK" => 0x09,
                    "SYN-SENT" => 0x02,
                    "SYN-RECV" => 0x03,
                    _ => 0x07,
                };
                pend.push(Pending {
                    key,
                    uid: u32::MAX,
                    run: Run {
                        start_ns: w0,
                        end_ns: w1,
                        first_seq: 0,
                        last_seq: 0,
                        state: st,
                    },
                    uac: k,
                });
            }
        }
        // Tuples only a listing showed (no table row).
        for l in &c.listed {
            let known = in_tables.contains(&(l.transport, canon(l.local), canon(l.remote)));
            let key = SocketKey {
                netns: k as u64,
                transport: l.transport,
                local: l.local,
                remote: l.remote,
                inode: l.inode.unwrap_or(0),
            };
            if !known && seen.insert(key) {
                let state = if l.remote.ip().is_unspecified() {
                    if l.transport == Transport::Tcp {
                        STATE_LISTEN
                    } else {
                        0x07
                    }
                } else {
                    0x01
                };
                pend.push(Pending {
                    key,
                    uid: u32::MAX,
                    run: Run {
                        start_ns: w0,
                        end_ns: w1,
                        first_seq: 0,
                        last_seq: 0,
                        state,
                    },
                    uac: k,
                });
            }
        }
    }
    pend.sort_by_key(|p| p.key);
    let mut sock_uac = Vec::with_capacity(pend.len());
    for p in pend {
        sock_uac.push(p.uac);
        tl.sockets.push(Socket {
            key: p.key,
            uid: p.uid,
            runs: vec![p.run],
        });
    }
    let mut run_of_inode: HashMap<(u64, u64), Run> = HashMap::new();
    for s in &tl.sockets {
        if let Some(r) = s.runs.first() {
            run_of_inode.entry((s.key.netns, s.key.inode)).or_insert(*r);
        }
    }
    // Listed owners by (collection, transport, local, remote).
    let mut listed_by: HashMap<(usize, Transport, SocketAddr, SocketAddr), u32> = HashMap::new();
    for (k, c) in uacs.iter().enumerate() {
        for l in &c.listed {
            listed_by
                .entry((k, l.transport, canon(l.local), canon(l.remote)))
                .or_insert(l.pid);
        }
    }
    for (k, c) in uacs.iter().enumerate() {
        for (inode, hs) in &c.holders {
            for &(pid, _) in hs {
                let key = uac_key[k]
                    .get(&pid)
                    .copied()
                    .unwrap_or(ProcKey { pid, start_time: 0 });
                let run = run_of_inode.get(&(k as u64, *inode)).copied();
                if let Some(run) = run {
                    tl.holders.entry(*inode).or_default().push(Holder {
                        pid,
                        start_time: key.start_time,
                        netns: 0,
                        runs: vec![run],
                    });
                }
            }
        }
    }
    // Audit events, capture clock; their processes.
    let mut ev_keys: Vec<ProcKey> = Vec::new();
    if let Some(a) = audit {
        for e in &a.events {
            let t = e.t_ns.saturating_add(audit_off);
            // The UAC process of that pid, when it had started by then.
            let mut key = ProcKey {
                pid: e.pid,
                start_time: 0,
            };
            for (k, c) in uacs.iter().enumerate() {
                if let (Some(p), Some(kk)) = (c.processes.get(&e.pid), uac_key[k].get(&e.pid)) {
                    let started = p.start_secs.is_none_or(|s| {
                        s * SEC + uac_offs.get(k).copied().unwrap_or(0) <= t + 2 * SEC
                    });
                    if started {
                        key = *kk;
                    }
                }
            }
            ev_keys.push(key);
            let rec = tl
                .processes
                .entry((key.pid, key.start_time))
                .or_insert_with(|| ProcessRecord {
                    pid: e.pid,
                    start_time: 0,
                    ppid: e.ppid.unwrap_or(0),
                    uid: e.uid.unwrap_or(u32::MAX),
                    comm: String::new(),
                    exe: None,
                    cmdline: Vec::new(),
                    netns: 0,
                    cgroup: None,
                    container_id: None,
                    seen_ns: None,
                    exec_ns: None,
                    euid: None,
                    user: None,
                });
            // The identity at the latest call (after an exec, the program it became).
            if key.start_time == 0 || rec.comm.is_empty() {
                if let Some(c) = &e.comm {
                    rec.comm = c.chars().take(64).collect();
                }
            }
            if rec.exe.is_none() || key.start_time == 0 {
                if let Some(x) = &e.exe {
                    rec.exe = Some(x.clone());
                }
            }
            if rec.cmdline.is_empty() || (key.start_time == 0 && !e.proctitle.is_empty()) {
                rec.cmdline = e.proctitle.clone();
            }
            if rec.uid == u32::MAX {
                rec.uid = e.uid.unwrap_or(u32::MAX);
            }
            tl.events.push(SockEvent {
                t_ns: t,
                kind: match e.call {
                    Call::Connect => EventKind::Connect,
                    Call::Accept => EventKind::Accept,
                    Call::Bind => EventKind::Listen,
                },
                source: 0,
                pid: e.pid,
                start_time: key.start_time,
                start_known: key.start_time != 0,
                netns: None,
                transport: Transport::Tcp,
                local: match e.call {
                    Call::Bind => e.addr,
                    _ => SocketAddr::new(
                        if e.addr.is_ipv4() {
                            IpAddr::from([0u8; 4])
                        } else {
                            IpAddr::from([0u16; 8])
                        },
                        0,
                    ),
                },
                remote: match e.call {
                    Call::Bind => None,
                    _ => Some(e.addr),
                },
                inode: None,
                seq: e.serial,
            });
        }
    }

    // Audit assignments: one flow per call, one call per flow, nearest first.
    let mut audit_cand: HashMap<usize, Cand> = HashMap::new();
    let mut bind_events: Vec<usize> = Vec::new();
    if let Some(a) = audit {
        let mut pairs: Vec<(i64, usize, usize, Rule)> = Vec::new();
        for (k, e) in a.events.iter().enumerate() {
            let t = e.t_ns.saturating_add(audit_off);
            match e.call {
                Call::Connect => {
                    for &i in by_remote.get(&e.addr).map(Vec::as_slice).unwrap_or(&[]) {
                        let d = (flows[i].first_seen_ns - t).abs();
                        if d <= opts.max_gap_ns {
                            pairs.push((d, k, i, Rule::AuditConnect));
                        }
                    }
                }
                Call::Accept => {
                    for &i in by_peer.get(&e.addr).map(Vec::as_slice).unwrap_or(&[]) {
                        let f = &flows[i];
                        if f.proto != ipproto::TCP {
                            continue;
                        }
                        let d = f.first_seen_ns - t;
                        if d >= -opts.max_gap_ns && d <= MAX_OFFSET_NS {
                            pairs.push((d.abs(), k, i, Rule::AuditAccept));
                        }
                    }
                }
                Call::Bind => bind_events.push(k),
            }
            if pairs.len() > MAX_PAIRS {
                out.warnings.push(
                    "too many audit events to pair with flows; the rest were not used".into(),
                );
                break;
            }
        }
        pairs.sort_unstable();
        let mut used_ev = HashSet::new();
        for (d, k, i, rule) in pairs {
            if audit_cand.contains_key(&i) || used_ev.contains(&k) {
                continue;
            }
            used_ev.insert(k);
            let e = &a.events[k];
            audit_cand.insert(
                i,
                Cand {
                    rule,
                    owner: ev_keys[k],
                    gap: d,
                    socket: None,
                    event: Some(EventMatch {
                        index: k,
                        gap_ns: d,
                    }),
                    shared: Vec::new(),
                    notes: vec![Note::AuditSession {
                        auid: e.auid,
                        ses: e.ses,
                    }],
                },
            );
        }
        uncross_connects(&mut audit_cand, a, &ev_keys, flows, audit_off);
    }
    // Bind: latest bind of the port before the flow.
    let mut binds_by_port: HashMap<u16, Vec<usize>> = HashMap::new();
    if let Some(a) = audit {
        for &k in &bind_events {
            let e = &a.events[k];
            if e.addr.port() != 0 {
                binds_by_port.entry(e.addr.port()).or_default().push(k);
            }
        }
    }

    // Socket index lookups.
    let mut sock_by_tuple: HashMap<(Transport, SocketAddr, SocketAddr), Vec<usize>> =
        HashMap::new();
    let mut sock_by_port: HashMap<(Transport, u16), Vec<usize>> = HashMap::new();
    for (i, s) in tl.sockets.iter().enumerate() {
        sock_by_tuple
            .entry((s.key.transport, canon(s.key.local), canon(s.key.remote)))
            .or_default()
            .push(i);
        if s.key.remote.ip().is_unspecified() {
            sock_by_port
                .entry((s.key.transport, s.key.local.port()))
                .or_default()
                .push(i);
        }
    }

    // Per flow.
    let mut attributions = Vec::with_capacity(flows.len());
    let mut explained: BTreeMap<String, usize> = BTreeMap::new();
    for (i, f) in flows.iter().enumerate() {
        let mut a = Attribution {
            local_is_a: orient[i],
            both_local: is_host(f.a_ip) && is_host(f.b_ip),
            method: Method::Unattributed(Reason::OutsideEvidence),
            socket: None,
            event: None,
            owner: None,
            shared_with: Vec::new(),
            notes: Vec::new(),
            parent_flow_id: None,
            nat: None,
            uses: None,
            ident_ns: None,
            peer: None,
            netns_hint: None,
        };
        let Some(local_is_a) = orient[i] else {
            a.method = Method::Unattributed(
                if hosts.is_empty() || !(is_host(f.a_ip) || is_host(f.b_ip)) {
                    Reason::NotThisHost
                } else {
                    Reason::OutsideEvidence
                },
            );
            attributions.push(a);
            continue;
        };
        let Some(t) = transport(f) else {
            a.method = Method::Unattributed(Reason::NotTcpUdp);
            attributions.push(a);
            continue;
        };
        let Some((local, remote)) = ends(f, local_is_a) else {
            a.method = Method::Unattributed(Reason::NotTcpUdp);
            attributions.push(a);
            continue;
        };
        let (t0, t1) = (f.first_seen_ns, f.last_seen_ns.max(f.first_seen_ns));
        let inbound = !local_is_a;
        let mut cands: Vec<Cand> = Vec::new();
        let mut ownerless: Option<SocketMatch> = None;
        // UAC: the exact tuple.
        for &si in sock_by_tuple
            .get(&(t, local, remote))
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            let s = &tl.sockets[si];
            let k = sock_uac[si];
            let run = s.runs[0];
            let m = SocketMatch {
                index: si,
                netns: 0,
                inode: s.key.inode,
                state: run.state,
                transport: t,
                gap_ns: gap(t0, t1, run.start_ns, run.end_ns),
            };
            let holders: Vec<(u32, u32)> = if s.key.inode == 0 {
                Vec::new()
            } else {
                uacs[k]
                    .holders
                    .get(&s.key.inode)
                    .cloned()
                    .unwrap_or_default()
            };
            if holders.is_empty() {
                // A listing may still name the pid (weaker).
                if let Some(&pid) = listed_by.get(&(k, t, local, remote)) {
                    let key = uac_key[k]
                        .get(&pid)
                        .copied()
                        .unwrap_or(ProcKey { pid, start_time: 0 });
                    cands.push(Cand {
                        rule: Rule::UacSs,
                        owner: key,
                        gap: m.gap_ns,
                        socket: Some(m),
                        event: None,
                        shared: Vec::new(),
                        notes: Vec::new(),
                    });
                } else {
                    ownerless = Some(m);
                }
                continue;
            }
            let keys: Vec<ProcKey> = holders
                .iter()
                .map(|&(pid, _)| {
                    uac_key[k]
                        .get(&pid)
                        .copied()
                        .unwrap_or(ProcKey { pid, start_time: 0 })
                })
                .collect();
            // The instant of this pid's fd listing closes the window.
            let fd_end = holders
                .iter()
                .filter_map(|(pid, _)| uacs[k].processes.get(pid).and_then(|p| p.fd_time))
                .max()
                .map(|x| (x + 1) * SEC + uac_offs[k]);
            let g = gap(
                t0,
                t1,
                run.start_ns,
                fd_end.unwrap_or(run.end_ns).max(run.end_ns),
            );
            let mut shared: Vec<ProcKey> = keys.clone();
            shared.sort();
            shared.dedup();
            if shared.len() < 2 {
                shared.clear();
            }
            cands.push(Cand {
                rule: Rule::UacFd,
                owner: keys[0],
                gap: g,
                socket: Some(SocketMatch { gap_ns: g, ..m }),
                event: None,
                shared,
                notes: Vec::new(),
            });
        }
        // UAC: listener / bound socket on the local port.
        for &si in sock_by_port
            .get(&(t, local.port()))
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            let s = &tl.sockets[si];
            let k = sock_uac[si];
            let run = s.runs[0];
            let sip = s.key.local.ip().to_canonical();
            // 0.0.0.0 takes IPv4 only; `::` both (unless IPV6_V6ONLY).
            let addr_ok =
                sip == local.ip() || (sip.is_unspecified() && (local.is_ipv4() || sip.is_ipv6()));
            if !addr_ok {
                continue;
            }
            let (rule, ok) = match t {
                Transport::Tcp => (Rule::UacListen, inbound && run.state == STATE_LISTEN),
                Transport::Udp => (Rule::UacUdpBound, true),
            };
            if !ok {
                continue;
            }
            let m = SocketMatch {
                index: si,
                netns: 0,
                inode: s.key.inode,
                state: run.state,
                transport: t,
                gap_ns: gap(t0, t1, run.start_ns, run.end_ns),
            };
            let holders = uacs[k]
                .holders
                .get(&s.key.inode)
                .cloned()
                .unwrap_or_default();
            let (rule, pid) = match holders.first() {
                Some(&(pid, _)) if s.key.inode != 0 => (rule, Some(pid)),
                _ => (
                    Rule::UacSs,
                    listed_by
                        .get(&(k, t, canon(s.key.local), canon(s.key.remote)))
                        .copied(),
                ),
            };
            if let Some(pid) = pid {
                let key = uac_key[k]
                    .get(&pid)
                    .copied()
                    .unwrap_or(ProcKey { pid, start_time: 0 });
                cands.push(Cand {
                    rule,
                    owner: key,
                    gap: m.gap_ns,
                    socket: Some(m),
                    event: None,
                    shared: Vec::new(),
                    notes: Vec::new(),
                });
            }
        }
        // Audit connect / accept.
        if let Some(c) = audit_cand.get(&i) {
            cands.push(c.clone());
        }
        // Audit bind.
        if let (Some(a), true) = (audit, inbound || t == Transport::Udp) {
            let best = binds_by_port
                .get(&local.port())
                .map(Vec::as_slice)
                .unwrap_or(&[])
                .iter()
                .filter(|&&k| {
                    let e = &a.events[k];
                    let ip = e.addr.ip();
                    (ip.is_unspecified() || ip == local.ip()) && tl.events[k].t_ns <= t0 + SEC
                })
                .max_by_key(|&&k| tl.events[k].t_ns);
            if let Some(&k) = best {
                let e = &a.events[k];
                let d = (t0 - tl.events[k].t_ns).max(0);
                cands.push(Cand {
                    rule: Rule::AuditBind,
                    owner: ev_keys[k],
                    gap: d,
                    socket: None,
                    event: Some(EventMatch {
                        index: k,
                        gap_ns: d,
                    }),
                    shared: Vec::new(),
                    notes: vec![Note::AuditSession {
                        auid: e.auid,
                        ses: e.ses,
                    }],
                });
            }
        }
        let sources: BTreeSet<&str> = cands.iter().map(|c| source_of(c.rule)).collect();
        for s in sources {
            *explained.entry(s.into()).or_default() += 1;
        }
        let Some(best) = cands.iter().max_by_key(|c| c.rank()).cloned() else {
            if let Some(m) = ownerless {
                a.method = Method::Unattributed(Reason::NoOwner);
                a.notes.push(Note::OwnerlessSocket {
                    inode: m.inode,
                    reason: Reason::NoOwner,
                });
                a.socket = Some(m);
            }
            attributions.push(a);
            continue;
        };
        let other = cands
            .iter()
            .filter(|c| c.owner.pid != best.owner.pid)
            .max_by_key(|c| c.rank());
        a.method = Method::Rule(best.rule);
        a.owner = Some(best.owner);
        a.socket = best.socket.or(ownerless.filter(|_| best.event.is_some()));
        a.event = best.event;
        a.shared_with = best.shared.clone();
        a.notes = best.notes.clone();
        if let Some(o) = other {
            out.disagreements += 1;
            a.notes.push(Note::OtherEvidence {
                pid: o.owner.pid,
                rule: o.rule,
            });
        }
        attributions.push(a);
    }
    // Coverage.
    for (k, c) in uacs.iter().enumerate() {
        let name = if uacs.len() == 1 {
            "uac".to_string()
        } else {
            format!("uac{}", k + 1)
        };
        let off = uac_offs[k];
        let w = c.tables_at.or(c.acquisition);
        let mut cov = Coverage {
            source: name,
            paths: vec![c.path.display().to_string()],
            start_ns: w.map(|x| x.0 * SEC + off),
            end_ns: w.map(|x| {
                let fd_last = c.processes.values().filter_map(|p| p.fd_time).max();
                (x.1.max(fd_last.unwrap_or(x.1)) + 1) * SEC + off
            }),
            pids: c.processes.len(),
            sockets: c.sockets.len(),
            flows_explained: explained.get("uac").copied().unwrap_or(0),
            ..Coverage::default()
        };
        for (f, a) in flows.iter().zip(&attributions) {
            if let Method::Rule(r) = a.method {
                if source_of(r) == "uac"
                    && a.socket.is_some_and(|s| sock_uac.get(s.index) == Some(&k))
                {
                    cov.flows_attributed += 1;
                    cov.bytes_attributed += f.bytes_ab + f.bytes_ba;
                }
            }
        }
        out.coverage.push(cov);
    }
    if let Some(a) = audit {
        let pids: HashSet<u32> = a.events.iter().map(|e| e.pid).collect();
        let mut cov = Coverage {
            source: "audit".into(),
            paths: a.paths.iter().map(|p| p.display().to_string()).collect(),
            start_ns: a.range.map(|r| r.0 + audit_off),
            end_ns: a.range.map(|r| r.1 + audit_off),
            pids: pids.len(),
            sockets: a.events.len(),
            flows_explained: explained.get("audit").copied().unwrap_or(0),
            ..Coverage::default()
        };
        for (f, at) in flows.iter().zip(&attributions) {
            if let Method::Rule(r) = at.method {
                if source_of(r) == "audit" {
                    cov.flows_attributed += 1;
                    cov.bytes_attributed += f.bytes_ab + f.bytes_ba;
                }
            }
        }
        out.coverage.push(cov);
    }
    out.timeline = tl;
    out.attributions = attributions;
    out
}

/// Host addresses from audited connects alone: with every initiator taken
/// as a possible host, the audit clock is estimated, and the initiator
/// address of each flow whose first packet is within 50 ms of a corrected
/// connect to its responder is a vote; addresses with at least 3 votes and
/// a third of all votes are the host's.
fn infer_hosts_from_connects(flows: &[Flow], a: &AuditLog, given: Option<i64>) -> Vec<IpAddr> {
    let mut by_remote: HashMap<SocketAddr, Vec<usize>> = HashMap::new();
    for (i, f) in flows.iter().enumerate() {
        if transport(f).is_some() && opened_by_a(f) {
            if let Some(b) = f.b_port.map(|p| SocketAddr::new(f.b_ip.to_canonical(), p)) {
                by_remote.entry(b).or_default().push(i);
            }
        }
    }
    let off = match given {
        Some(o) => o,
        None => match estimate_audit(&a.events, &by_remote, flows) {
            Some((m, _, n)) if n >= 3 => m,
            _ => return Vec::new(),
        },
    };
    let mut votes: HashMap<IpAddr, usize> = HashMap::new();
    for e in a.events.iter().filter(|e| e.call == Call::Connect) {
        let t = e.t_ns.saturating_add(off);
        let near = by_remote
            .get(&e.addr)
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .map(|&i| &flows[i])
            .filter(|f| (f.first_seen_ns - t).abs() <= WINDOW_NS)
            .min_by_key(|f| (f.first_seen_ns - t).abs());
        if let Some(f) = near {
            *votes.entry(f.a_ip.to_canonical()).or_default() += 1;
        }
    }
    let total: usize = votes.values().sum();
    let mut v: Vec<IpAddr> = votes
        .into_iter()
        .filter(|&(_, n)| n >= 3 && n * 3 >= total)
        .map(|(ip, _)| ip)
        .collect();
    v.sort();
    v
}

/// `uac` or `audit`: the source of a foreign rule.
pub fn source_of(r: Rule) -> &'static str {
    match r {
        Rule::AuditConnect | Rule::AuditAccept | Rule::AuditBind => "audit",
        _ => "uac",
    }
}

/// Boot time (seconds) that makes the collection's `ps` start times agree
/// with its stat start ticks at USER_HZ 100: the median over processes.
pub fn boot_time(uacs: &[UacCollection]) -> Option<i64> {
    let mut v: Vec<i64> = uacs
        .iter()
        .flat_map(|c| c.processes.values())
        .filter_map(|p| Some(p.start_secs? - i64::try_from(p.start_ticks? / 100).ok()?))
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some(v[v.len() / 2])
}
