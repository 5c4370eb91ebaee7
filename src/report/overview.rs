//! The analyst's view of an attribution: the top processes and remote
//! endpoints, the unattributed traffic by reason, the methods and their
//! confidence, and traffic per process over time. Computed once from the
//! report rows; printed on the terminal after `procflow analyze`
//! ([`Overview::terminal`]) and drawn in `report.html`.
//!
//! Every order is total (ties broken by pid, start time, address, port), so
//! the same input gives the same view.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;

use crate::attribute::{Method, ProcKey, Reason};
use crate::flow::proto_name;
use crate::hostile::{visible, visible_cmdline, visible_path};
use crate::report::{confidence, ConnectionRow, ReportInput};
use crate::time::rfc3339_ns;

/// One process's traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSummary {
    /// The process.
    pub key: ProcKey,
    /// Its start, RFC 3339 (empty when the recorder never saw it).
    pub process_start: String,
    /// `comm`, as recorded (unescaped).
    pub comm: String,
    /// Executable path, as recorded (unescaped).
    pub exe: String,
    /// Command line, shell-quoted (unescaped).
    pub cmdline: String,
    /// Bytes sent by the host side.
    pub bytes_out: u64,
    /// Bytes received by the host side.
    pub bytes_in: u64,
    /// Packets sent.
    pub packets_out: u64,
    /// Packets received.
    pub packets_in: u64,
    /// Flows owned.
    pub flows: u64,
    /// Distinct remote (address, port) pairs.
    pub remotes: usize,
    /// Earliest packet, ns.
    pub first_ns: i64,
    /// Latest packet, ns.
    pub last_ns: i64,
}

impl ProcessSummary {
    /// Bytes both ways.
    pub fn bytes(&self) -> u64 {
        self.bytes_out + self.bytes_in
    }
}

/// One remote endpoint's traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSummary {
    /// Protocol name (`tcp`, `udp`, ...).
    pub proto: String,
    /// Remote address.
    pub ip: IpAddr,
    /// Remote port, for protocols with ports.
    pub port: Option<u16>,
    /// Bytes sent to it.
    pub bytes_out: u64,
    /// Bytes received from it.
    pub bytes_in: u64,
    /// Flows.
    pub flows: u64,
    /// The processes that talked to it, most bytes first: (pid, comm, bytes).
    pub processes: Vec<(u32, String, u64)>,
    /// Bytes of its flows no process was found for.
    pub unattributed_bytes: u64,
    /// Names its flows gave it (`docs/names.md`), with their source, in
    /// order of first flow; at most [`MAX_ENDPOINT_NAMES`], the rest
    /// counted in `more_names`.
    pub names: Vec<(String, &'static str)>,
    /// Distinct names past [`MAX_ENDPOINT_NAMES`] (a proxy's many
    /// `CONNECT` targets).
    pub more_names: u64,
}

/// Names kept per endpoint in the overview.
pub const MAX_ENDPOINT_NAMES: usize = 8;

impl EndpointSummary {
    /// Its names as `name (source)`, comma-joined, at most `n`, escaped
    /// for a terminal.
    pub fn names_text(&self, n: usize) -> String {
        let mut v: Vec<String> = self
            .names
            .iter()
            .take(n)
            .map(|(name, src)| format!("{} ({src})", visible(name, 60)))
            .collect();
        let more = (self.names.len().saturating_sub(n)) as u64 + self.more_names;
        if more > 0 {
            v.push(format!("+{more} more"));
        }
        v.join(", ")
    }

    /// Bytes both ways.
    pub fn bytes(&self) -> u64 {
        self.bytes_out + self.bytes_in
    }

    /// `1.2.3.4:443`, `[::1]:53`, or the bare address.
    pub fn address(&self) -> String {
        match (self.ip, self.port) {
            (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
            (ip, Some(p)) => format!("{ip}:{p}"),
            (ip, None) => ip.to_string(),
        }
    }
}

/// Unattributed traffic of one reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReasonSummary {
    /// The reason.
    pub reason: Reason,
    /// Flows.
    pub flows: u64,
    /// Bytes both ways.
    pub bytes: u64,
}

/// Flows and bytes of one method at one confidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodSummary {
    /// The `method` column value.
    pub method: String,
    /// `high`, `medium`, `low`, or empty for unattributed flows.
    pub confidence: &'static str,
    /// Flows.
    pub flows: u64,
    /// Bytes both ways.
    pub bytes: u64,
}

/// Traffic over time: equal time bins, one lane per process (the busiest
/// ones), one for the other processes, one for unattributed traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    /// Start of the first bin, ns.
    pub start_ns: i64,
    /// Width of a bin, ns (at least 1).
    pub bin_ns: i64,
    /// Number of bins.
    pub bins: usize,
    /// The lanes, busiest process first; `other` and `unattributed` last
    /// when present.
    pub lanes: Vec<Lane>,
}

/// What a timeline lane stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaneKind {
    /// One process.
    Process(ProcKey),
    /// The processes without a lane of their own.
    Other,
    /// Traffic without an owner.
    Unattributed,
}

/// One lane of the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Lane {
    /// What it stands for.
    pub kind: LaneKind,
    /// Label: `comm (pid)`, `other processes`, `unattributed` (unescaped).
    pub label: String,
    /// Bytes per bin. A flow's bytes are spread evenly over the bins its
    /// first and last packet span (the report rows do not keep per-packet
    /// times).
    pub bytes: Vec<f64>,
    /// Bytes in all.
    pub total: u64,
}

/// The whole view.
#[derive(Debug, Clone, PartialEq)]
pub struct Overview {
    /// Every process owning a flow, most bytes first (then pid, start).
    pub processes: Vec<ProcessSummary>,
    /// The [`MAX_ENDPOINTS`] remote endpoints with the most bytes, most
    /// first (then address, port); all of them are in connections.csv.
    pub endpoints: Vec<EndpointSummary>,
    /// Remote endpoints in all.
    pub endpoint_count: usize,
    /// Unattributed traffic per reason, most bytes first.
    pub unattributed: Vec<ReasonSummary>,
    /// Flows and bytes per method and confidence, in method order.
    pub methods: Vec<MethodSummary>,
    /// Flows.
    pub flows: u64,
    /// Bytes both ways, all flows.
    pub bytes: u64,
    /// Bytes of attributed flows.
    pub attributed_bytes: u64,
    /// First and last packet of all flows, ns.
    pub range: Option<(i64, i64)>,
    /// Traffic between two local sockets, per pair of processes, most
    /// bytes first.
    pub local_pairs: Vec<LocalPair>,
}

/// Traffic between two processes of the recorded host (loopback, or two
/// of its namespaces): the row's owner and the process at the other end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPair {
    /// The rows' owner (the end the rows are written from).
    pub owner: ProcKey,
    /// Its comm.
    pub comm: String,
    /// The process at the other end.
    pub peer: ProcKey,
    /// Its comm.
    pub peer_comm: String,
    /// Bytes the owner sent (the peer received).
    pub bytes_out: u64,
    /// Bytes the peer sent (the owner received).
    pub bytes_in: u64,
    /// Flows (rows).
    pub flows: u64,
}

/// Remote endpoints summed in full ([`Overview::endpoints`]); the others
/// are counted.
pub const MAX_ENDPOINTS: usize = 1000;

/// One endpoint's sums while the rows are read: a million endpoints at
/// scale, so only numbers here.
#[derive(Default, Clone, Copy)]
struct EpSum {
    bytes_out: u64,
    bytes_in: u64,
    flows: u64,
    unattributed_bytes: u64,
}

/// What a busiest endpoint gets besides its sums, from a second pass.
#[derive(Default)]
struct EpMore {
    /// (pid, bytes) of the processes that talked to it.
    by_pid: Vec<(u32, u64)>,
    /// Its remote names with their source, at most [`MAX_ENDPOINT_NAMES`].
    names: Vec<(String, &'static str)>,
    /// Distinct names past those.
    more_names: u64,
}

fn row_bytes(r: &ConnectionRow) -> u64 {
    r.flow.bytes_ab + r.flow.bytes_ba
}

impl Overview {
    /// Computes the view from the report rows.
    pub fn new(input: &ReportInput<'_>) -> Overview {
        let rows = &input.rows;
        type Remotes = BTreeSet<(IpAddr, Option<u16>)>;
        type EpKey = (u8, IpAddr, Option<u16>);
        let mut procs: HashMap<ProcKey, (ProcessSummary, Remotes)> = HashMap::new();
        // Compact per-endpoint sums (a million endpoints at scale): the
        // full summaries are built for the busiest ones only, in a second
        // pass over the rows.
        let mut eps: HashMap<EpKey, EpSum> = HashMap::new();
        let mut comms: HashMap<u32, String> = HashMap::new();
        let mut reasons: BTreeMap<Reason, (u64, u64)> = BTreeMap::new();
        let mut methods: BTreeMap<(Method, &'static str), (u64, u64)> = BTreeMap::new();
        let mut pairs: BTreeMap<(ProcKey, ProcKey), LocalPair> = BTreeMap::new();
        let (mut bytes, mut attributed_bytes) = (0u64, 0u64);
        let mut range: Option<(i64, i64)> = None;
        for r in rows {
            let b = row_bytes(r);
            bytes += b;
            let f = &r.flow;
            range = Some(match range {
                None => (f.first_seen_ns, f.last_seen_ns),
                Some((a, z)) => (a.min(f.first_seen_ns), z.max(f.last_seen_ns)),
            });
            let [pin, pout, bin, bout, _, _] = r.counters();
            let conf = confidence(&r.attribution);
            let m = methods.entry((r.attribution.method, conf)).or_default();
            m.0 += 1;
            m.1 += b;
            let (rip, rport) = r.remote();
            let ep = eps.entry((f.proto, rip, rport)).or_default();
            ep.bytes_out += bout;
            ep.bytes_in += bin;
            ep.flows += 1;
            match (r.attribution.owner, r.attribution.method) {
                (Some(owner), _) => {
                    attributed_bytes += b;
                    let comm = r.process.as_ref().map(|p| p.comm.clone());
                    if let Some(c) = &comm {
                        if comms.get(&owner.pid) != Some(c) {
                            comms.insert(owner.pid, c.clone());
                        }
                    }
                    let p = procs.entry(owner).or_insert_with(|| {
                        let rec = r.process.as_ref();
                        (
                            ProcessSummary {
                                key: owner,
                                process_start: r.process_start.clone(),
                                comm: comm.clone().unwrap_or_default(),
                                exe: rec.and_then(|p| p.exe.clone()).unwrap_or_default(),
                                cmdline: r.cmdline(),
                                bytes_out: 0,
                                bytes_in: 0,
                                packets_out: 0,
                                packets_in: 0,
                                flows: 0,
                                remotes: 0,
                                first_ns: f.first_seen_ns,
                                last_ns: f.last_seen_ns,
                            },
                            BTreeSet::new(),
                        )
                    });
                    let s = &mut p.0;
                    s.bytes_out += bout;
                    s.bytes_in += bin;
                    s.packets_out += pout;
                    s.packets_in += pin;
                    s.flows += 1;
                    s.first_ns = s.first_ns.min(f.first_seen_ns);
                    s.last_ns = s.last_ns.max(f.last_seen_ns);
                    p.1.insert((rip, rport));
                }
                (None, Method::Unattributed(reason)) => {
                    ep.unattributed_bytes += b;
                    let e = reasons.entry(reason).or_default();
                    e.0 += 1;
                    e.1 += b;
                }
                (None, _) => {
                    ep.unattributed_bytes += b;
                }
            }
            // Both ends local: the pair of processes, each with its bytes.
            if let (Some(o), Some(po)) = (
                r.attribution.owner,
                r.attribution.peer.as_ref().and_then(|p| p.owner),
            ) {
                let e = pairs.entry((o, po)).or_insert_with(|| LocalPair {
                    owner: o,
                    comm: r
                        .process
                        .as_ref()
                        .map(|p| p.comm.clone())
                        .unwrap_or_default(),
                    peer: po,
                    peer_comm: r.peer_comm().unwrap_or_default().to_string(),
                    bytes_out: 0,
                    bytes_in: 0,
                    flows: 0,
                });
                e.bytes_out += bout;
                e.bytes_in += bin;
                e.flows += 1;
            }
        }
        let mut processes: Vec<ProcessSummary> = procs
            .into_values()
            .map(|(mut s, remotes)| {
                s.remotes = remotes.len();
                s
            })
            .collect();
        processes.sort_by(|a, b| {
            b.bytes()
                .cmp(&a.bytes())
                .then(a.key.pid.cmp(&b.key.pid))
                .then(a.key.start_time.cmp(&b.key.start_time))
        });
        let endpoint_count = eps.len();
        let order = |a: &(EpKey, EpSum), b: &(EpKey, EpSum)| {
            let (ka, ea) = a;
            let (kb, eb) = b;
            (eb.bytes_out + eb.bytes_in)
                .cmp(&(ea.bytes_out + ea.bytes_in))
                .then(ka.1.cmp(&kb.1))
                .then(ka.2.cmp(&kb.2))
                .then_with(|| proto_name(ka.0).cmp(&proto_name(kb.0)))
        };
        let mut all: Vec<(EpKey, EpSum)> = eps.into_iter().collect();
        if all.len() > MAX_ENDPOINTS {
            all.select_nth_unstable_by(MAX_ENDPOINTS - 1, order);
            all.truncate(MAX_ENDPOINTS);
            all.shrink_to_fit();
        }
        all.sort_by(order);
        // The busiest endpoints' processes and names, in row order.
        let mut more: HashMap<EpKey, EpMore> =
            all.iter().map(|(k, _)| (*k, EpMore::default())).collect();
        for r in rows {
            let (rip, rport) = r.remote();
            let Some(ep) = more.get_mut(&(r.flow.proto, rip, rport)) else {
                continue;
            };
            if let Some(n) = r.name.as_ref().filter(|n| !n.name.is_empty()) {
                let src = n.source.map_or("", |s| s.as_str());
                if !ep.names.iter().any(|(x, _)| *x == n.name) {
                    if ep.names.len() < MAX_ENDPOINT_NAMES {
                        ep.names.push((n.name.clone(), src));
                    } else {
                        ep.more_names += 1;
                    }
                }
            }
            if let Some(owner) = r.attribution.owner {
                let b = row_bytes(r);
                match ep.by_pid.iter_mut().find(|(p, _)| *p == owner.pid) {
                    Some(e) => e.1 += b,
                    None => ep.by_pid.push((owner.pid, b)),
                }
            }
        }
        let endpoints: Vec<EndpointSummary> = all
            .into_iter()
            .map(|(key, e)| {
                let (proto, ip, port) = key;
                let m = more.remove(&key).unwrap_or_default();
                let mut v: Vec<(u32, String, u64)> = m
                    .by_pid
                    .into_iter()
                    .map(|(p, b)| (p, comms.get(&p).cloned().unwrap_or_default(), b))
                    .collect();
                v.sort_by(|x, y| y.2.cmp(&x.2).then(x.0.cmp(&y.0)));
                EndpointSummary {
                    proto: proto_name(proto),
                    ip,
                    port,
                    bytes_out: e.bytes_out,
                    bytes_in: e.bytes_in,
                    flows: e.flows,
                    processes: v,
                    unattributed_bytes: e.unattributed_bytes,
                    names: m.names,
                    more_names: m.more_names,
                }
            })
            .collect();
        let mut unattributed: Vec<ReasonSummary> = reasons
            .into_iter()
            .map(|(reason, (flows, bytes))| ReasonSummary {
                reason,
                flows,
                bytes,
            })
            .collect();
        unattributed.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.reason.cmp(&b.reason)));
        Overview {
            processes,
            endpoints,
            endpoint_count,
            unattributed,
            methods: methods
                .into_iter()
                .map(|((m, c), (flows, bytes))| MethodSummary {
                    method: m.name(),
                    confidence: c,
                    flows,
                    bytes,
                })
                .collect(),
            flows: rows.len() as u64,
            bytes,
            attributed_bytes,
            range,
            local_pairs: {
                let mut v: Vec<LocalPair> = pairs.into_values().collect();
                v.sort_by(|a, b| {
                    (b.bytes_out + b.bytes_in)
                        .cmp(&(a.bytes_out + a.bytes_in))
                        .then((a.owner, a.peer).cmp(&(b.owner, b.peer)))
                });
                v
            },
        }
    }

    /// Traffic over time in at most `bins` bins, with a lane for each of
    /// the `max_lanes` busiest processes.
    pub fn timeline(&self, input: &ReportInput<'_>, bins: usize, max_lanes: usize) -> Timeline {
        let bins = bins.max(1);
        let (start, end) = self.range.unwrap_or((0, 0));
        let span = end.saturating_sub(start).max(1);
        let bin_ns = (span / bins as i64 + 1).max(1);
        let bins = usize::try_from(span / bin_ns + 1).unwrap_or(bins).min(bins);
        let mut lane_of: HashMap<ProcKey, usize> = HashMap::new();
        let mut lanes: Vec<Lane> = Vec::new();
        for p in self.processes.iter().take(max_lanes) {
            lane_of.insert(p.key, lanes.len());
            lanes.push(Lane {
                kind: LaneKind::Process(p.key),
                label: format!("{} ({})", p.comm, p.key.pid),
                bytes: vec![0.0; bins],
                total: 0,
            });
        }
        let mut other = Lane {
            kind: LaneKind::Other,
            label: "other processes".into(),
            bytes: vec![0.0; bins],
            total: 0,
        };
        let mut unattributed = Lane {
            kind: LaneKind::Unattributed,
            label: "unattributed".into(),
            bytes: vec![0.0; bins],
            total: 0,
        };
        let bin_of = |t: i64| -> usize {
            usize::try_from(t.saturating_sub(start) / bin_ns)
                .unwrap_or(0)
                .min(bins - 1)
        };
        for r in &input.rows {
            let b = row_bytes(r);
            let lane = match r.attribution.owner {
                Some(o) => match lane_of.get(&o) {
                    Some(&i) => &mut lanes[i],
                    None => &mut other,
                },
                None => &mut unattributed,
            };
            lane.total += b;
            let (b0, b1) = (bin_of(r.flow.first_seen_ns), bin_of(r.flow.last_seen_ns));
            let share = b as f64 / (b1 - b0 + 1) as f64;
            for v in &mut lane.bytes[b0..=b1] {
                *v += share;
            }
        }
        if other.total > 0 {
            lanes.push(other);
        }
        if unattributed.total > 0 {
            lanes.push(unattributed);
        }
        Timeline {
            start_ns: start,
            bin_ns,
            bins,
            lanes,
        }
    }

    /// The summary printed after `analyze`: at most `top` rows per table,
    /// every string from the bundle shown with [`visible`], each line cut
    /// to a terminal-friendly width.
    pub fn terminal(&self, top: usize) -> String {
        let mut s = String::new();
        let pct = |part: u64, whole: u64| {
            if whole == 0 {
                100.0
            } else {
                part as f64 * 100.0 / whole as f64
            }
        };
        let _ = writeln!(
            s,
            "{} flows, {} in all, {} ({:.1}%) attributed to {} process(es)",
            self.flows,
            human_bytes(self.bytes),
            human_bytes(self.attributed_bytes),
            pct(self.attributed_bytes, self.bytes),
            self.processes.len()
        );
        if let Some((a, z)) = self.range {
            let _ = writeln!(s, "traffic from {} to {}", rfc3339_ns(a), rfc3339_ns(z));
        }
        if !self.processes.is_empty() {
            let _ = writeln!(s, "\nTop processes by bytes:");
            let _ = writeln!(
                s,
                "  {:>7}  {:<15}  {:>9}  {:>9}  {:>5}  {:>7}  {:<12}  {:<12}  {:<21}  {:<40}  cmdline",
                "pid", "comm", "out", "in", "flows", "remotes", "first", "last", "start", "exe"
            );
            for p in self.processes.iter().take(top) {
                let line = format!(
                    "  {:>7}  {:<15}  {:>9}  {:>9}  {:>5}  {:>7}  {:<12}  {:<12}  {:<21}  {:<40}  {}",
                    p.key.pid,
                    visible(&p.comm, 15),
                    human_bytes(p.bytes_out),
                    human_bytes(p.bytes_in),
                    p.flows,
                    p.remotes,
                    clock(p.first_ns),
                    clock(p.last_ns),
                    short_start(&p.process_start),
                    visible_path(&p.exe, 40),
                    visible_cmdline(&p.cmdline, 70),
                );
                let line = line.trim_end();
                let _ = writeln!(s, "{line}");
            }
            if self.processes.len() > top {
                let _ = writeln!(
                    s,
                    "  ... {} more in processes.csv",
                    self.processes.len() - top
                );
            }
        }
        if !self.local_pairs.is_empty() {
            let _ = writeln!(
                s,
                "\nBoth ends on this host (process -> process at the other end):"
            );
            for p in self.local_pairs.iter().take(top) {
                let line = format!(
                    "  {:>7} {:<15} {:>9} ->  <- {:>9}  {:>7} {:<15}  {} flow(s)",
                    p.owner.pid,
                    visible(&p.comm, 15),
                    human_bytes(p.bytes_out),
                    human_bytes(p.bytes_in),
                    p.peer.pid,
                    visible(&p.peer_comm, 15),
                    p.flows
                );
                let _ = writeln!(s, "{line}");
            }
            if self.local_pairs.len() > top {
                let _ = writeln!(
                    s,
                    "  ... {} more pairs (peer_* columns of connections.csv)",
                    self.local_pairs.len() - top
                );
            }
        }
        if !self.endpoints.is_empty() {
            let _ = writeln!(s, "\nTop remote endpoints by bytes:");
            for e in self.endpoints.iter().take(top) {
                let mut who: Vec<String> = e
                    .processes
                    .iter()
                    .take(3)
                    .map(|(pid, comm, _)| format!("{} ({pid})", visible(comm, 15)))
                    .collect();
                if e.processes.len() > 3 {
                    who.push(format!("+{} more", e.processes.len() - 3));
                }
                if e.unattributed_bytes > 0 {
                    who.push(format!(
                        "unattributed {}",
                        human_bytes(e.unattributed_bytes)
                    ));
                }
                let _ = writeln!(
                    s,
                    "  {:<6} {:<45}  {:>9} out  {:>9} in  {:>4} flow(s)  {}",
                    e.proto,
                    e.address(),
                    human_bytes(e.bytes_out),
                    human_bytes(e.bytes_in),
                    e.flows,
                    who.join(", ")
                );
                if !e.names.is_empty() {
                    let _ = writeln!(s, "         = {}", e.names_text(3));
                }
            }
            if self.endpoint_count > top {
                let _ = writeln!(
                    s,
                    "  ... {} more in connections.csv",
                    self.endpoint_count - top
                );
            }
        }
        if self.unattributed.is_empty() {
            let _ = writeln!(s, "\nUnattributed: none");
        } else {
            let _ = writeln!(s, "\nUnattributed bytes by reason:");
            for u in &self.unattributed {
                let _ = writeln!(
                    s,
                    "  {:<18} {:>9}  {:>5} flow(s)",
                    u.reason.as_str(),
                    human_bytes(u.bytes),
                    u.flows
                );
            }
        }
        s
    }
}

/// `1.2 MB`-style size (powers of 1000), exact below 10 kB.
pub fn human_bytes(n: u64) -> String {
    if n < 10_000 {
        return format!("{n} B");
    }
    let units = ["kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = n as f64 / 1000.0;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    format!("{v:.1} {}", units[i])
}

/// `HH:MM:SS.mmm` of a timestamp (UTC).
fn clock(ns: i64) -> String {
    let full = rfc3339_ns(ns);
    full.get(11..23).unwrap_or(&full).to_string()
}

/// RFC 3339 start shortened to the second.
fn short_start(s: &str) -> String {
    match s.get(..19) {
        Some(p) if !s.is_empty() => format!("{p}Z"),
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_escapes_and_bounds() {
        assert_eq!(visible("curl", 10), "curl");
        assert_eq!(visible("a\nb\x1b[31m", 20), "a\\x0ab\\x1b[31m");
        assert_eq!(visible("x\u{202e}y", 20), "x\\u{202e}y");
        assert_eq!(visible("abcdef", 3), "abc…");
        assert_eq!(visible("abc", 3), "abc");
    }

    #[test]
    fn paths_keep_their_file_name() {
        let exe = "/root/.rustup/toolchains/stable-x86_64-unknown-linux-gnu/bin/cargo";
        let v = visible_path(exe, 40);
        assert_eq!(v.chars().count(), 40, "{v}");
        assert!(
            v.starts_with("/root/.rustup/") && v.ends_with("…/bin/cargo"),
            "{v}"
        );
        assert_eq!(visible_path("/usr/bin/curl", 40), "/usr/bin/curl");
        // A file name longer than the column keeps its end.
        let v = visible_path(&format!("/x/{}", "a".repeat(50)), 10);
        assert_eq!(v, format!("…{}", "a".repeat(9)));
        assert_eq!(visible_path("/a/b\x1bc", 40), "/a/b\\x1bc");
    }

    #[test]
    fn command_lines_keep_program_and_last_arguments() {
        let c = "/usr/bin/python3 -m pip download --no-deps --dest /tmp/pip-dl-1234567 requests==2.31.0";
        let v = visible_cmdline(c, 50);
        assert!(v.chars().count() <= 50, "{v}");
        assert!(v.starts_with("/usr/bin/python3 "), "{v}");
        assert!(v.ends_with(" requests==2.31.0"), "{v}");
        assert!(v.contains(" … "), "{v}");
        assert_eq!(visible_cmdline("curl -s x", 50), "curl -s x");
        // Rows of one program differ by their last arguments, which stay.
        let a = visible_cmdline(
            "python3 /srv/scenario/client.py --port 5001 --role bulk-a",
            40,
        );
        let b = visible_cmdline(
            "python3 /srv/scenario/client.py --port 5001 --role bulk-b",
            40,
        );
        assert_ne!(a, b);
        assert!(a.chars().count() <= 40 && a.ends_with("bulk-a"), "{a}");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(9999), "9999 B");
        assert_eq!(human_bytes(210_110), "210.1 kB");
        assert_eq!(human_bytes(3_500_000_000), "3.5 GB");
    }
}
