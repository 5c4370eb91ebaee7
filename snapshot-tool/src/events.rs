//! Event sources: who owned a socket at the moment it was used, seen as it
//! happens instead of at the next tick.
//!
//! - `tracepoint:sock:inet_sock_set_state`: TCP state changes. The
//!   CLOSE -> SYN_SENT change of `connect()` runs in the connecting
//!   process, before the source port is chosen; the next change of the same
//!   socket (SYN_SENT -> ESTABLISHED, in softirq) carries the full tuple, so
//!   the two are joined by the socket's kernel address. `listen()` and
//!   `close()` run in the owner's context too.
//! - `tracepoint:fib:fib_table_lookup` and `tracepoint:fib6:fib6_table_lookup`:
//!   the route lookup of every unconnected UDP `sendmsg` (and of a UDP
//!   `connect`), in the sending process, with ports: this catches
//!   resolver-style sockets that live a few milliseconds.
//! - `sock:sock_send_length` / `sock:sock_recv_length`: every send and
//!   receive call in the calling task, filtered in the kernel to IPv4/IPv6
//!   calls that moved bytes and reduced to runs in [`crate::sockuse`]; the
//!   socket's tuple comes from `inet_sock_set_state` (every change with a
//!   complete tuple, also in softirq) or, for UDP, from the route lookup of
//!   the same thread just before.
//! - `sched:sched_process_fork|exec|exit`: process lifecycle in every
//!   network namespace, each on its own small ring that wakes the reader at
//!   once, so the identity of a process living a few ms is read at its exec.
//! - `proc-connector`: exec/fork/exit as they happen, the fallback when the
//!   scheduler tracepoints cannot start (it only works in the initial
//!   network namespace).
//!
//! Events are read by one thread through perf ring buffers and the
//! connector socket (system calls in [`crate::ksys`]); the decoding here is
//! pure and works on bytes, with every field offset taken from the
//! tracepoint's `format` file. The record loop takes what accumulated at
//! each snapshot ([`EventSources::take`]).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::ksys;
use crate::layout::{EventRecord, ProcessRecord, SockUseRecord, SourceInfo, TaskRecord, UseDir};
use crate::live;
use crate::sockuse::{
    self, Bindings, LenDecoder, Runs, SchedDecoder, SchedEvent, SkIds, UseSample, Who,
};

/// A field of a tracepoint record (offset and size from its format).
pub type TpField = Field;

/// Source name of the periodic /proc reads.
pub const SRC_POLL: &str = "proc-poll";
/// Source name of the TCP state-change tracepoint.
pub const SRC_SET_STATE: &str = "tracepoint:sock:inet_sock_set_state";
/// Source name of the IPv4 route-lookup tracepoint.
pub const SRC_FIB: &str = "tracepoint:fib:fib_table_lookup";
/// Source name of the IPv6 route-lookup tracepoint.
pub const SRC_FIB6: &str = "tracepoint:fib6:fib6_table_lookup";
/// Source name of the netlink process-event connector.
pub const SRC_PROC_CONNECTOR: &str = "proc-connector";

/// Most events kept between two snapshots; beyond, they are counted as
/// dropped (and said so in the manifest).
const MAX_PENDING_EVENTS: usize = 200_000;
/// Most process identities kept between two snapshots.
const MAX_PENDING_PROCS: usize = 50_000;
/// Connects whose source port is not known yet, at most.
const MAX_PENDING_CONNECTS: usize = 65_536;
/// Data pages of each per-CPU ring buffer without the use tracepoints
/// (256 KiB with 4 KiB pages).
const RING_PAGES: usize = 64;
/// Data pages of each per-CPU ring buffer with the use tracepoints (4 MiB):
/// a sample is 64 bytes, so this holds 65 536 calls, 0.3 s of a CPU
/// sending 200 000 small messages per second, while the reader drains
/// every 20 ms or when a quarter is full (docs/recorder.md).
const USE_RING_PAGES: usize = 1024;
/// Data pages of each per-CPU ring of the scheduler tracepoints (64 KiB);
/// these wake the reader at every sample.
const SCHED_RING_PAGES: usize = 16;
/// Most `sockuse.jsonl` and `tasks.jsonl` lines kept between two
/// snapshots; beyond, they are counted as dropped.
const MAX_PENDING_USES: usize = 400_000;
/// Nice value of the event reader thread.
const READER_NICE: i32 = -10;
/// A process's whole identity (comm, cmdline, uids) is read again at its
/// first call after this long.
const TITLE_REREAD: Duration = Duration::from_secs(1);
/// Its command line alone (one small read: setproctitle shows there) is
/// read again at its calls at most this often, and at the first call of
/// each (process, socket) pair.
const TITLE_CHECK: Duration = Duration::from_millis(50);
/// A call after a pause of the process this long (ns) is checked too, at
/// most every [`TITLE_CHECK_MIN`]: a title changes between bursts of I/O
/// (sshd's session sets it while it starts the command, then relays).
const TITLE_GAP_NS: i64 = 2_000_000;
/// Least time between two command-line reads of one process.
const TITLE_CHECK_MIN: Duration = Duration::from_millis(10);

/// The fields of one tracepoint record, from its tracefs `format` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpFormat {
    /// Tracepoint id (the `ID:` line), the perf `config`.
    pub id: u64,
    /// (name, offset, size) of each field, common fields included.
    pub fields: Vec<(String, usize, usize)>,
}

impl TpFormat {
    /// Offset and size of a field.
    pub fn field(&self, name: &str) -> Option<(usize, usize)> {
        self.fields
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, o, s)| (*o, *s))
    }

    pub(crate) fn need(&self, name: &str) -> Result<Field, String> {
        self.field(name)
            .map(|(offset, size)| Field { offset, size })
            .ok_or_else(|| format!("format has no field `{name}`"))
    }
}

/// Parses a tracefs `format` file.
pub fn parse_format(text: &str) -> Result<TpFormat, String> {
    let mut id = None;
    let mut fields = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("ID:") {
            id = Some(
                v.trim()
                    .parse()
                    .map_err(|_| format!("line {}: bad ID {:.40}", n + 1, v.trim()))?,
            );
            continue;
        }
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let mut decl = None;
        let mut offset = None;
        let mut size = None;
        for part in rest.split(';') {
            let part = part.trim();
            if let Some(v) = part.strip_prefix("offset:") {
                offset = v.parse::<usize>().ok();
            } else if let Some(v) = part.strip_prefix("size:") {
                size = v.parse::<usize>().ok();
            } else if !part.is_empty() && decl.is_none() && !part.contains(':') {
                decl = Some(part);
            }
        }
        let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) else {
            return Err(format!(
                "line {}: expected `field:TYPE NAME; offset:N; size:N;`",
                n + 1
            ));
        };
        let name = decl
            .rsplit(|c: char| c.is_whitespace() || c == '*')
            .next()
            .unwrap_or(decl);
        let name = name.split('[').next().unwrap_or(name).to_string();
        fields.push((name, offset, size));
    }
    let id = id.ok_or("no `ID:` line")?;
    Ok(TpFormat { id, fields })
}

/// Where a field lies in a raw record.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    offset: usize,
    size: usize,
}

impl Field {
    /// The field as an unsigned integer (native byte order); `None` when the
    /// record is too short or the size is not 1, 2, 4 or 8.
    pub(crate) fn uint(&self, raw: &[u8]) -> Option<u64> {
        let b = raw.get(self.offset..self.offset.checked_add(self.size)?)?;
        Some(match self.size {
            1 => u64::from(b[0]),
            2 => u64::from(u16::from_ne_bytes([b[0], b[1]])),
            4 => u64::from(u32::from_ne_bytes([b[0], b[1], b[2], b[3]])),
            8 => u64::from_ne_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            _ => return None,
        })
    }

    fn bytes<'a>(&self, raw: &'a [u8]) -> Option<&'a [u8]> {
        raw.get(self.offset..self.offset.checked_add(self.size)?)
    }

    fn ip(&self, raw: &[u8]) -> Option<IpAddr> {
        let b = self.bytes(raw)?;
        match b.len() {
            4 => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
            16 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(b);
                let v6 = Ipv6Addr::from(a);
                // A v4-mapped address is an IPv4 flow on a dual-stack socket.
                Some(match v6.to_ipv4_mapped() {
                    Some(v4) => IpAddr::V4(v4),
                    None => IpAddr::V6(v6),
                })
            }
            _ => None,
        }
    }
}

/// trace_entry flags: the event ran in hard IRQ, soft IRQ or NMI context,
/// where the current task is not the socket's owner.
const IRQ_FLAGS: u64 = 0x08 | 0x10 | 0x40;

/// TCP states as the kernel numbers them.
mod tcp {
    pub const ESTABLISHED: u64 = 1;
    pub const SYN_SENT: u64 = 2;
    pub const SYN_RECV: u64 = 3;
    pub const FIN_WAIT1: u64 = 4;
    pub const CLOSE: u64 = 7;
    pub const CLOSE_WAIT: u64 = 8;
    pub const LAST_ACK: u64 = 9;
    pub const LISTEN: u64 = 10;
}

/// Decoder of `sock:inet_sock_set_state` records.
#[derive(Debug, Clone)]
pub struct SetStateDecoder {
    id: u64,
    flags: Field,
    skaddr: Field,
    oldstate: Field,
    newstate: Field,
    sport: Field,
    dport: Field,
    family: Field,
    protocol: Field,
    saddr: Field,
    daddr: Field,
    saddr_v6: Field,
    daddr_v6: Field,
}

impl SetStateDecoder {
    /// Builds the decoder from the tracepoint's format.
    pub fn new(f: &TpFormat) -> Result<SetStateDecoder, String> {
        Ok(SetStateDecoder {
            id: f.id,
            flags: f.need("common_flags")?,
            skaddr: f.need("skaddr")?,
            oldstate: f.need("oldstate")?,
            newstate: f.need("newstate")?,
            sport: f.need("sport")?,
            dport: f.need("dport")?,
            family: f.need("family")?,
            protocol: f.need("protocol")?,
            saddr: f.need("saddr")?,
            daddr: f.need("daddr")?,
            saddr_v6: f.need("saddr_v6")?,
            daddr_v6: f.need("daddr_v6")?,
        })
    }

    fn decode(&self, raw: &[u8]) -> Option<SetState> {
        let family = self.family.uint(raw)?;
        let (saddr, daddr) = match family as i32 {
            libc::AF_INET => (self.saddr.ip(raw)?, self.daddr.ip(raw)?),
            libc::AF_INET6 => (self.saddr_v6.ip(raw)?, self.daddr_v6.ip(raw)?),
            _ => return None,
        };
        Some(SetState {
            in_irq: self.flags.uint(raw)? & IRQ_FLAGS != 0,
            skaddr: self.skaddr.uint(raw)?,
            old: self.oldstate.uint(raw)?,
            new: self.newstate.uint(raw)?,
            sport: self.sport.uint(raw)? as u16,
            dport: self.dport.uint(raw)? as u16,
            protocol: self.protocol.uint(raw)?,
            saddr,
            daddr,
        })
    }
}

/// One decoded TCP state change.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SetState {
    in_irq: bool,
    skaddr: u64,
    old: u64,
    new: u64,
    sport: u16,
    dport: u16,
    protocol: u64,
    saddr: IpAddr,
    daddr: IpAddr,
}

/// Decoder of `fib:fib_table_lookup` and `fib6:fib6_table_lookup` records.
#[derive(Debug, Clone)]
pub struct FibDecoder {
    id: u64,
    source: &'static str,
    flags: Field,
    err: Field,
    proto: Field,
    src: Field,
    dst: Field,
    sport: Field,
    dport: Field,
}

impl FibDecoder {
    /// Builds the decoder from the tracepoint's format.
    pub fn new(f: &TpFormat, source: &'static str) -> Result<FibDecoder, String> {
        Ok(FibDecoder {
            id: f.id,
            source,
            flags: f.need("common_flags")?,
            err: f.need("err")?,
            proto: f.need("proto")?,
            src: f.need("src")?,
            dst: f.need("dst")?,
            sport: f.need("sport")?,
            dport: f.need("dport")?,
        })
    }
}

/// An event before the process facts are added.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RawEvent {
    source: &'static str,
    kind: &'static str,
    mono_ns: i64,
    pid: u32,
    tid: u32,
    proto: &'static str,
    local: IpAddr,
    local_port: u16,
    remote: Option<(IpAddr, u16)>,
}

/// A connect seen before its source port was chosen.
#[derive(Debug, Clone)]
struct PendingConnect {
    mono_ns: i64,
    pid: u32,
    tid: u32,
    seen: Instant,
}

/// A perf sample's header fields (TID, TIME, CPU) and its raw record.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    /// Thread group id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// CLOCK_MONOTONIC, ns.
    pub time: u64,
    /// The tracepoint record.
    pub raw: &'a [u8],
}

/// What one ring record is.
#[derive(Debug)]
pub enum RingRecord<'a> {
    /// A sample.
    Sample(Sample<'a>),
    /// The kernel dropped this many samples (ring full).
    Lost(u64),
    /// Another record type, ignored.
    Other,
}

/// Parses one ring record (8-byte header, then the body) of an event opened
/// with TID|TIME|CPU|RAW; `None` when it is cut short.
pub fn parse_ring_record(rec: &[u8]) -> Option<RingRecord<'_>> {
    let u32_at =
        |o: usize| -> Option<u32> { Some(u32::from_ne_bytes(rec.get(o..o + 4)?.try_into().ok()?)) };
    let u64_at =
        |o: usize| -> Option<u64> { Some(u64::from_ne_bytes(rec.get(o..o + 8)?.try_into().ok()?)) };
    match u32_at(0)? {
        // PERF_RECORD_SAMPLE: pid, tid, time, cpu, res, raw size, raw.
        9 => {
            let pid = u32_at(8)?;
            let tid = u32_at(12)?;
            let time = u64_at(16)?;
            let size = u32_at(32)? as usize;
            let raw = rec.get(36..36usize.checked_add(size)?)?;
            Some(RingRecord::Sample(Sample {
                pid,
                tid,
                time,
                raw,
            }))
        }
        // PERF_RECORD_LOST: id, count.
        2 => Some(RingRecord::Lost(u64_at(16)?)),
        _ => Some(RingRecord::Other),
    }
}

/// Turns decoded tracepoint samples into owner events: joins connects to
/// their source port, keeps only what ran in the owner's context, and
/// suppresses repeated UDP sends of one tuple by one process.
#[derive(Default)]
pub struct Decoder {
    set_state: Option<SetStateDecoder>,
    fib: Vec<FibDecoder>,
    pending: HashMap<u64, PendingConnect>,
    /// Sockets whose connect was written, with the connecting pid: their
    /// close by the same process says nothing new and is not written.
    connected: HashMap<u64, u32>,
    sent: HashSet<(u32, IpAddr, u16, IpAddr, u16)>,
    self_pid: u32,
    /// Connects never joined to a source port (expired or displaced).
    pub unjoined: u64,
    /// Decoders of the send and receive tracepoints in use.
    lens: Vec<LenDecoder>,
    /// The calls decoded since the reader last took them.
    uses: Vec<UseSample>,
    /// Socket bindings decoded since the reader last took them.
    binds: Vec<SockUseRecord>,
    /// (kernel address, time) of each of those bindings: runs are cut there.
    bound: Vec<(u64, i64)>,
    /// De-duplication of bindings, UDP route lookups per thread.
    bindings: Bindings,
    /// The keyed socket ids.
    ids: SkIds,
}

impl Decoder {
    /// Writes the binding of UDP socket `sk` to `tuple` made by its send at
    /// `mono_ns`, unless already written.
    fn udp_binding(&mut self, sk: u64, mono_ns: i64, tuple: sockuse::Tuple) {
        if !self.bindings.fresh(sk, &tuple, 6) {
            return;
        }
        let (ip, port, remote) = tuple;
        // A new binding of the id cuts its runs there.
        self.bound.push((sk, mono_ns));
        self.binds.push(SockUseRecord::binding(
            sockuse::SRC_UDP_ROUTE,
            self.ids.id(sk),
            mono_ns,
            "udp",
            (ip.to_string(), port),
            remote.map(|(ip, p)| (ip.to_string(), p)),
            None,
        ));
    }

    fn sample(&mut self, s: &Sample<'_>, out: &mut Vec<RawEvent>) {
        if s.pid == self.self_pid {
            return;
        }
        let Some(ty) = s
            .raw
            .get(0..2)
            .map(|b| u64::from(u16::from_ne_bytes([b[0], b[1]])))
        else {
            return;
        };
        let mono_ns = i64::try_from(s.time).unwrap_or(i64::MAX);
        if let Some(d) = self.lens.iter().find(|d| d.id == ty) {
            if let Some(u) = d.decode(s.raw, s.pid, s.tid, mono_ns) {
                if let Some(tuple) = self.bindings.udp_send(&u) {
                    self.udp_binding(u.sk, mono_ns, tuple);
                }
                self.uses.push(u);
            }
            return;
        }
        if let Some(d) = self.set_state.as_ref().filter(|d| d.id == ty) {
            if let Some(e) = d.decode(s.raw) {
                self.set_state_event(&e, mono_ns, s, out);
            }
            return;
        }
        let Some(d) = self.fib.iter().find(|d| d.id == ty) else {
            return;
        };
        let raw = s.raw;
        let ok = (|| {
            if d.flags.uint(raw)? & IRQ_FLAGS != 0 || d.err.uint(raw)? != 0 {
                return None;
            }
            if d.proto.uint(raw)? != 17 {
                return None;
            }
            let dport = d.dport.uint(raw)? as u16;
            let sport = d.sport.uint(raw)? as u16;
            if dport == 0 || sport == 0 || s.pid == 0 {
                return None;
            }
            Some((d.src.ip(raw)?, sport, d.dst.ip(raw)?, dport))
        })();
        let Some((src, sport, dst, dport)) = ok else {
            return;
        };
        let source = d.source;
        if !self.lens.is_empty() {
            let tuple = (src, sport, Some((dst, dport)));
            if let Some((sk, sent)) = self.bindings.route(s.tid, mono_ns, tuple) {
                self.udp_binding(sk, sent, tuple);
            }
        }
        if self.sent.len() >= MAX_PENDING_EVENTS {
            // Cleared only when the record loop takes a batch: a flood of
            // distinct tuples must not grow it without end. Forgetting only
            // costs repeated lines, which the batch bound then drops.
            self.sent.clear();
        }
        if !self.sent.insert((s.pid, src, sport, dst, dport)) {
            return;
        }
        out.push(RawEvent {
            source,
            kind: "send",
            mono_ns,
            pid: s.pid,
            tid: s.tid,
            proto: "udp",
            local: src,
            local_port: sport,
            remote: Some((dst, dport)),
        });
    }

    fn set_state_event(
        &mut self,
        e: &SetState,
        mono_ns: i64,
        s: &Sample<'_>,
        out: &mut Vec<RawEvent>,
    ) {
        if e.protocol != 6 {
            return;
        }
        self.binding(e, mono_ns);
        let owner_ctx = !e.in_irq && s.pid != 0;
        let ev = |kind: &'static str, mono_ns: i64, pid: u32, tid: u32, remote: bool| RawEvent {
            source: SRC_SET_STATE,
            kind,
            mono_ns,
            pid,
            tid,
            proto: "tcp",
            local: e.saddr,
            local_port: e.sport,
            remote: remote.then_some((e.daddr, e.dport)),
        };
        if e.old == tcp::CLOSE && e.new == tcp::SYN_SENT {
            if !owner_ctx {
                return;
            }
            if e.sport != 0 {
                out.push(ev("connect", mono_ns, s.pid, s.tid, true));
                self.remember_connect(e.skaddr, s.pid);
            } else {
                if self.pending.len() >= MAX_PENDING_CONNECTS {
                    self.expire(Duration::ZERO);
                }
                let displaced = self.pending.insert(
                    e.skaddr,
                    PendingConnect {
                        mono_ns,
                        pid: s.pid,
                        tid: s.tid,
                        seen: Instant::now(),
                    },
                );
                self.unjoined += u64::from(displaced.is_some());
            }
            return;
        }
        if let Some(p) = self.pending.remove(&e.skaddr) {
            if e.sport != 0 {
                out.push(ev("connect", p.mono_ns, p.pid, p.tid, true));
                self.remember_connect(e.skaddr, p.pid);
            } else {
                self.unjoined += 1;
            }
        }
        let connected_by =
            if e.new == tcp::CLOSE || e.new == tcp::FIN_WAIT1 || e.new == tcp::LAST_ACK {
                self.connected.remove(&e.skaddr)
            } else {
                None
            };
        if !owner_ctx || e.sport == 0 {
            return;
        }
        if e.old == tcp::CLOSE && e.new == tcp::LISTEN {
            out.push(ev("listen", mono_ns, s.pid, s.tid, false));
        } else if matches!(
            e.old,
            tcp::ESTABLISHED | tcp::CLOSE_WAIT | tcp::SYN_SENT | tcp::SYN_RECV
        ) && matches!(e.new, tcp::FIN_WAIT1 | tcp::LAST_ACK | tcp::CLOSE)
            && connected_by != Some(s.pid)
        {
            out.push(ev("close", mono_ns, s.pid, s.tid, true));
        }
    }

    /// A `sock` line for a state change with a complete tuple, in any
    /// context (softirq included: passive opens), once per (socket, tuple,
    /// state class); only while the use tracepoints run.
    fn binding(&mut self, e: &SetState, mono_ns: i64) {
        if self.lens.is_empty() || e.sport == 0 {
            return;
        }
        let listener = e.new == tcp::LISTEN || (e.old == tcp::LISTEN && e.new == tcp::CLOSE);
        let remote = (e.dport != 0 && !e.daddr.is_unspecified()).then_some((e.daddr, e.dport));
        if remote.is_none() && !listener {
            return;
        }
        let remote = if listener { None } else { remote };
        let tuple = (e.saddr, e.sport, remote);
        if !self
            .bindings
            .fresh(e.skaddr, &tuple, sockuse::state_class(e.new))
        {
            return;
        }
        self.bound.push((e.skaddr, mono_ns));
        self.binds.push(SockUseRecord::binding(
            SRC_SET_STATE,
            self.ids.id(e.skaddr),
            mono_ns,
            "tcp",
            (e.saddr.to_string(), e.sport),
            remote.map(|(ip, p)| (ip.to_string(), p)),
            Some(sockuse::state_name(e.new)),
        ));
    }

    fn remember_connect(&mut self, skaddr: u64, pid: u32) {
        if self.connected.len() >= MAX_PENDING_CONNECTS {
            // Forgetting only costs a redundant close line later.
            self.connected.clear();
        }
        self.connected.insert(skaddr, pid);
    }

    /// Forgets connects pending longer than `age`.
    fn expire(&mut self, age: Duration) {
        let before = self.pending.len();
        self.pending.retain(|_, p| p.seen.elapsed() < age);
        self.unjoined += (before - self.pending.len()) as u64;
    }
}

/// What the recorder knows of a pid named by an event.
#[derive(Debug, Clone)]
pub(crate) struct PidInfo {
    pub(crate) start_time: u64,
    pub(crate) netns: Option<u64>,
    pub(crate) comm: String,
    exited: Option<Instant>,
    /// When the whole identity was last read, and the title it had
    /// (comm, cmdline, uid, euid).
    read_at: Instant,
    title: (String, Vec<String>, u32, Option<u32>),
    /// When the command line alone was last read.
    checked_at: Instant,
    /// CLOCK_MONOTONIC ns of the latest call seen (as far as checked).
    last_call_ns: i64,
    /// An identity read at the process's fork, written at its first call
    /// or event (a forked child that never execs has no other record, and
    /// may be gone, or a zombie without command line, by its first call).
    pending: Option<Box<ProcessRecord>>,
}

/// What accumulated since the record loop last took it.
#[derive(Debug, Default)]
pub struct Batch {
    /// Owner events, in the order they were read.
    pub events: Vec<EventRecord>,
    /// Identities read at exec or at a pid's first event.
    pub procs: Vec<ProcessRecord>,
    /// Pids named by events (their fds are worth reading now).
    pub pids: BTreeSet<u32>,
    /// `sockuse.jsonl` lines: ended runs and socket bindings.
    pub sockuse: Vec<SockUseRecord>,
    /// `tasks.jsonl` lines.
    pub tasks: Vec<TaskRecord>,
    /// Pids that forked or exec'd while the use tracepoints are off: the
    /// fds of those holding sockets are read at the next snapshot.
    pub fork_pids: BTreeSet<u32>,
    /// The runs still open (ended into `sockuse` when the batch is taken).
    pub(crate) open: Runs,
    /// Samples the kernel dropped (ring buffer full).
    pub lost: u64,
    /// Events or identities dropped because the batch was full.
    pub dropped: u64,
    /// Process events lost by the connector (ENOBUFS).
    pub connector_lost: u64,
    /// Connects never joined to a source port.
    pub unjoined: u64,
    /// Sockets looked up whose holder was not found (closed before its
    /// process' fds were read).
    pub unowned: u64,
    /// Packets the lookup's packet socket dropped (its queue was full):
    /// their flows were not looked up.
    pub packets_dropped: u64,
    /// Receive errors on the lookup's packet socket (ENETDOWN when its
    /// interface went down or away): lookups may have stopped.
    pub packet_errors: u64,
}

/// The per-pid facts cache, and the identities read for it.
pub(crate) struct Pids {
    map: HashMap<u32, PidInfo>,
    buf: Vec<u8>,
    /// uid -> name from the host's /etc/passwd, read once.
    users: HashMap<u32, String>,
    /// Time of each pid's last exec (also when its identity could not be
    /// read): runs are cut there.
    execs: HashMap<u32, i64>,
    /// (pid, socket) pairs seen calling: the title is checked at each new one.
    pairs: HashSet<(u32, u64)>,
}

/// uid -> user name from passwd text (first name of each uid wins).
fn parse_passwd(text: &str) -> HashMap<u32, String> {
    let mut m = HashMap::new();
    for l in text.lines().take(100_000) {
        let mut f = l.split(':');
        let (Some(name), Some(_), Some(uid)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if let Ok(uid) = uid.parse::<u32>() {
            if !name.is_empty() && name.len() <= 64 {
                m.entry(uid).or_insert_with(|| name.to_string());
            }
        }
    }
    m
}

impl Pids {
    /// An empty cache.
    pub(crate) fn new() -> Pids {
        let users = std::fs::read("/etc/passwd")
            .map(|b| parse_passwd(&String::from_utf8_lossy(&b[..b.len().min(16 << 20)])))
            .unwrap_or_default();
        Pids {
            map: HashMap::new(),
            buf: Vec::with_capacity(8192),
            users,
            execs: HashMap::new(),
            pairs: HashSet::new(),
        }
    }

    /// Whether `pid` calls on `sk` for the first time (remembered).
    fn new_pair(&mut self, pid: u32, sk: u64) -> bool {
        if self.pairs.len() >= MAX_PENDING_CONNECTS {
            // Forgetting only costs one more title check per pair.
            self.pairs.clear();
        }
        self.pairs.insert((pid, sk))
    }

    /// Pushes an identity to the batch, within its bound.
    fn push(batch: &mut Batch, rec: ProcessRecord) {
        if batch.procs.len() < MAX_PENDING_PROCS {
            batch.procs.push(rec);
        } else {
            batch.dropped += 1;
        }
    }

    /// Reads a pid's stat, namespace and identity (added to `batch`, or
    /// kept until its first call or event when `defer`); `exec_ns` is the
    /// time of the exec it follows, when known.
    fn learn(
        &mut self,
        pid: u32,
        batch: &mut Batch,
        exec_ns: Option<i64>,
        defer: bool,
    ) -> Option<&PidInfo> {
        let stat = live::read_stat(pid, &mut self.buf).ok()?;
        let netns = live::read_netns(&pid.to_string()).ok();
        let (mut rec, _errs) =
            live::read_process_record(pid, &stat, netns.unwrap_or(0), &mut self.buf);
        rec.exec_ns = exec_ns;
        rec.user = self.users.get(&rec.uid).cloned();
        let comm = rec.comm.clone();
        let title = (rec.comm.clone(), rec.cmdline.clone(), rec.uid, rec.euid);
        let pending = if defer {
            Some(Box::new(rec))
        } else {
            Self::push(batch, rec);
            None
        };
        let now = Instant::now();
        self.map.insert(
            pid,
            PidInfo {
                start_time: stat.start_time,
                netns,
                comm,
                exited: None,
                read_at: now,
                title,
                checked_at: now,
                last_call_ns: i64::MIN,
                pending,
            },
        );
        self.map.get(&pid)
    }

    /// At a call by `pid` at `call_ns` (the first on its socket when
    /// `new_pair`): writes an identity kept since its fork; reads its
    /// command line again when last read [`TITLE_CHECK`] ago or more, on a
    /// new pair, or after a pause of its calls,
    /// and its whole identity when that changed or was last read
    /// [`TITLE_REREAD`] ago or more; records the identity anew if comm,
    /// cmdline or uids changed (setproctitle, privilege drop).
    fn refresh(&mut self, pid: u32, new_pair: bool, call_ns: i64, batch: &mut Batch) {
        if self.settle(pid, batch) {
            return;
        }
        let Some(i) = self.map.get_mut(&pid) else {
            return;
        };
        if i.exited.is_some() {
            return;
        }
        let now = Instant::now();
        let after_pause =
            i.last_call_ns != i64::MIN && call_ns.saturating_sub(i.last_call_ns) >= TITLE_GAP_NS;
        i.last_call_ns = i.last_call_ns.max(call_ns);
        let full = now.duration_since(i.read_at) >= TITLE_REREAD;
        if !full {
            let since = now.duration_since(i.checked_at);
            let due = since >= TITLE_CHECK || (after_pause && since >= TITLE_CHECK_MIN);
            if !new_pair && !due {
                return;
            }
            i.checked_at = now;
            if live::read_into(&format!("/proc/{pid}/cmdline"), &mut self.buf).is_err() {
                return;
            }
            let cmdline = crate::procfs::split_cmdline(&self.buf);
            if cmdline.is_empty() || cmdline == i.title.1 {
                return;
            }
        }
        i.read_at = now;
        i.checked_at = now;
        let Ok(stat) = live::read_stat(pid, &mut self.buf) else {
            return;
        };
        if stat.start_time != i.start_time {
            self.map.remove(&pid);
            return;
        }
        let netns = i.netns;
        let (mut rec, _errs) =
            live::read_process_record(pid, &stat, netns.unwrap_or(0), &mut self.buf);
        let title = (rec.comm.clone(), rec.cmdline.clone(), rec.uid, rec.euid);
        let Some(i) = self.map.get_mut(&pid) else {
            return;
        };
        if title == i.title || rec.cmdline.is_empty() {
            return; // unchanged, or exiting (a zombie has no cmdline)
        }
        i.title = title;
        i.comm = rec.comm.clone();
        rec.user = self.users.get(&rec.uid).cloned();
        Self::push(batch, rec);
    }

    /// At the first call or event of a process read at its fork: its
    /// identity read now (a forked child often changes uid or title before
    /// its first call: sshd's session), or, when it is gone or a zombie,
    /// the one read at the fork. False if there was none pending.
    fn settle(&mut self, pid: u32, batch: &mut Batch) -> bool {
        let Some(i) = self.map.get_mut(&pid) else {
            return false;
        };
        let Some(forked) = i.pending.take() else {
            return false;
        };
        let (start, netns) = (i.start_time, i.netns);
        let now = live::read_stat(pid, &mut self.buf)
            .ok()
            .filter(|st| st.start_time == start)
            .map(|st| live::read_process_record(pid, &st, netns.unwrap_or(0), &mut self.buf).0)
            .filter(|r| r.exe.is_some() && !r.cmdline.is_empty());
        let Some(mut rec) = now else {
            Self::push(batch, *forked);
            return true;
        };
        rec.user = self.users.get(&rec.uid).cloned();
        if let Some(i) = self.map.get_mut(&pid) {
            let t = Instant::now();
            i.title = (rec.comm.clone(), rec.cmdline.clone(), rec.uid, rec.euid);
            i.comm = rec.comm.clone();
            i.read_at = t;
            i.checked_at = t;
        }
        Self::push(batch, rec);
        true
    }

    /// A process often sets its title just before it forks (sshd's session
    /// sets `sshd: USER@notty`, then forks the command whose output it
    /// relays): the child's copy of the command line, read at the fork, is
    /// the parent's title at that instant. When it differs from the title
    /// last recorded for the parent and the parent still shows it, the
    /// parent's identity is recorded as of the fork's time (`fork_ns`),
    /// not of this read, so its calls since the fork carry the new title.
    fn retitled_at_fork(&mut self, parent: u32, child: u32, fork_ns: i64, batch: &mut Batch) {
        let Some(title) = self
            .map
            .get(&child)
            .and_then(|c| c.pending.as_ref())
            .map(|r| r.cmdline.clone())
        else {
            return;
        };
        let Some(p) = self.map.get(&parent) else {
            return;
        };
        if title.is_empty() || p.exited.is_some() || p.pending.is_some() || p.title.1 == title {
            return;
        }
        let (start, netns) = (p.start_time, p.netns);
        let Ok(stat) = live::read_stat(parent, &mut self.buf) else {
            return;
        };
        if stat.start_time != start {
            return;
        }
        let (mut rec, _errs) =
            live::read_process_record(parent, &stat, netns.unwrap_or(0), &mut self.buf);
        if rec.cmdline != title {
            return; // retitled again since, or the child's read came late
        }
        rec.seen_ns = Some(rec.seen_ns.map_or(fork_ns, |t| t.min(fork_ns)));
        rec.user = self.users.get(&rec.uid).cloned();
        if let Some(p) = self.map.get_mut(&parent) {
            let now = Instant::now();
            p.title = (rec.comm.clone(), rec.cmdline.clone(), rec.uid, rec.euid);
            p.comm = rec.comm.clone();
            p.read_at = now;
            p.checked_at = now;
        }
        Self::push(batch, rec);
    }

    /// A child that exited before its identity was read at its fork (a
    /// zombie shows no exe nor command line) was still its parent's
    /// program: it takes those from the parent, read now.
    fn inherit(&mut self, child: u32, parent: u32) {
        let Some(rec) = self.map.get(&child).and_then(|i| i.pending.as_ref()) else {
            return;
        };
        if rec.exe.is_some() && !rec.cmdline.is_empty() {
            return;
        }
        let netns = rec.netns;
        let Ok(stat) = live::read_stat(parent, &mut self.buf) else {
            return;
        };
        let (from, _errs) = live::read_process_record(parent, &stat, netns, &mut self.buf);
        let Some(i) = self.map.get_mut(&child) else {
            return;
        };
        let Some(rec) = i.pending.as_mut() else {
            return;
        };
        if from.exe.is_none() || from.cmdline.is_empty() {
            return;
        }
        rec.exe = from.exe;
        rec.cmdline = from.cmdline;
        rec.uid = from.uid;
        rec.euid = from.euid;
        rec.user = self.users.get(&rec.uid).cloned();
        i.title = (rec.comm.clone(), rec.cmdline.clone(), rec.uid, rec.euid);
    }

    /// The facts of `pid`, read (and its identity added to `batch`) at its
    /// first event; an identity kept since its fork is added then.
    pub(crate) fn get(&mut self, pid: u32, batch: &mut Batch) -> Option<PidInfo> {
        if self.map.contains_key(&pid) {
            self.settle(pid, batch);
            return self.map.get(&pid).cloned();
        }
        self.learn(pid, batch, None, false).cloned()
    }
}

/// Decodes proc connector datagrams: (what, tgid, pid) for fork (child),
/// exec and exit; other events are skipped.
pub fn parse_proc_events(buf: &[u8]) -> Vec<(ProcEvent, u32, u32)> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while let Some(h) = buf.get(at..at + 16) {
        let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
        if len < 16 {
            break;
        }
        let Some(msg) = buf.get(at..at + len) else {
            break;
        };
        // nlmsghdr (16), cn_msg (20), proc_event: what, cpu, timestamp (16),
        // then the event data.
        let u32_at = |o: usize| -> Option<u32> {
            Some(u32::from_ne_bytes(msg.get(o..o + 4)?.try_into().ok()?))
        };
        let base = 36;
        if let Some(what) = u32_at(base) {
            let d = base + 16;
            let ev = match what {
                1 => u32_at(d + 8)
                    .zip(u32_at(d + 12))
                    .map(|(pid, tgid)| (ProcEvent::Fork, tgid, pid)),
                2 => u32_at(d)
                    .zip(u32_at(d + 4))
                    .map(|(pid, tgid)| (ProcEvent::Exec, tgid, pid)),
                0x8000_0000 => u32_at(d)
                    .zip(u32_at(d + 4))
                    .map(|(pid, tgid)| (ProcEvent::Exit, tgid, pid)),
                _ => None,
            };
            out.extend(ev);
        }
        at += (len + 3) & !3;
    }
    out
}

/// A process event of the connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcEvent {
    /// A new task (the child's tgid and pid).
    Fork,
    /// A process image replaced.
    Exec,
    /// A task ended.
    Exit,
}

/// Where tracepoint ids and formats are read.
fn tracefs_events(mounted: &mut Option<PathBuf>) -> Result<PathBuf, String> {
    for p in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        let ev = Path::new(p).join("events");
        if ev.join("sock").is_dir() {
            return Ok(ev);
        }
    }
    let dir = std::env::temp_dir().join(format!("procflow-snap-tracefs-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("tracefs not mounted; {}: {e}", dir.display()))?;
    if let Err(e) = ksys::mount_tracefs(&dir) {
        let _ = std::fs::remove_dir(&dir);
        return Err(format!(
            "tracefs not mounted and mounting it failed: {}",
            crate::sys::errno_name(&e)
        ));
    }
    *mounted = Some(dir.clone());
    Ok(dir.join("events"))
}

fn unmount(mounted: Option<PathBuf>) {
    if let Some(dir) = mounted {
        let _ = ksys::umount(&dir);
        let _ = std::fs::remove_dir(&dir);
    }
}

/// Parses `/sys/devices/system/cpu/online` (`0-3,5`).
pub fn parse_cpu_list(s: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                    if b >= a && b - a < 4096 {
                        out.extend(a..=b);
                    }
                }
            }
            None => out.extend(part.parse::<u32>().ok()),
        }
    }
    out
}

fn perf_why(e: &std::io::Error) -> String {
    let name = crate::sys::errno_name(e);
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => {
            let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "?".into());
            format!("perf_event_open: {name} (perf_event_paranoid={paranoid}, CAP_PERFMON needed)")
        }
        _ => format!("perf_event_open: {name}"),
    }
}

/// The running event sources.
pub struct EventSources {
    batch: Arc<Mutex<Batch>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl EventSources {
    /// Starts every event source this host allows. Returns the running
    /// sources (`None` when none could start) and the status of each, in
    /// the order they are preferred.
    ///
    /// The capture-triggered lookup ([`crate::lookup`], on `iface`) starts
    /// when the TCP state-change tracepoint cannot, or when
    /// `opts.force_lookup` is set, which also leaves the tracepoints off.
    pub fn start(opts: StartOpts, iface: Option<&str>) -> (Option<EventSources>, Vec<SourceInfo>) {
        let mut infos = Vec::new();
        let mut dec = Decoder {
            self_pid: std::process::id(),
            ..Decoder::default()
        };
        let mut sched = SchedDecoder::default();
        let mut rings: Vec<ksys::PerfRing> = Vec::new();
        let mut sched_rings: Vec<ksys::PerfRing> = Vec::new();
        let mut extra: Vec<OwnedFd> = Vec::new();

        // Tracepoints: ids and formats from tracefs.
        let mut mounted = None;
        let events_dir = if opts.force_lookup {
            Err("switched off (--sources lookup)".to_string())
        } else {
            tracefs_events(&mut mounted)
        };
        let mut formats: Vec<(&'static str, Result<TpFormat, String>)> = Vec::new();
        for (src, group, name) in [
            (SRC_SET_STATE, "sock", "inet_sock_set_state"),
            (SRC_FIB, "fib", "fib_table_lookup"),
            (SRC_FIB6, "fib6", "fib6_table_lookup"),
            (sockuse::SRC_SEND, "sock", "sock_send_length"),
            (sockuse::SRC_RECV, "sock", "sock_recv_length"),
            (sockuse::SRC_FORK, "sched", "sched_process_fork"),
            (sockuse::SRC_EXEC, "sched", "sched_process_exec"),
            (sockuse::SRC_EXIT, "sched", "sched_process_exit"),
        ] {
            let is_use = src == sockuse::SRC_SEND || src == sockuse::SRC_RECV;
            let f = match &events_dir {
                Err(e) => Err(e.clone()),
                Ok(_) if is_use && !opts.use_tracepoints => {
                    Err("switched off (--sources tracepoints-no-use)".to_string())
                }
                Ok(dir) => {
                    let p = dir.join(group).join(name).join("format");
                    std::fs::read_to_string(&p)
                        .map_err(|e| format!("{}: {}", p.display(), crate::sys::errno_name(&e)))
                        .and_then(|t| parse_format(&t).map_err(|e| format!("{}: {e}", p.display())))
                }
            };
            formats.push((src, f));
        }
        unmount(mounted);

        let cpus = parse_cpu_list(
            &std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default(),
        );
        let use_on = opts.use_tracepoints
            && formats
                .iter()
                .any(|(s, f)| *s == sockuse::SRC_SEND && f.is_ok());
        let main_pages = if use_on { USE_RING_PAGES } else { RING_PAGES };
        let mut ring_of_cpu: HashMap<u32, usize> = HashMap::new();
        let mut sched_ring_of_cpu: HashMap<u32, usize> = HashMap::new();
        for (src, f) in formats {
            let is_sched = src.starts_with("tracepoint:sched:");
            let res = f.and_then(|f| {
                let filter = match src {
                    SRC_SET_STATE => {
                        dec.set_state = Some(SetStateDecoder::new(&f)?);
                        Some("protocol == 6")
                    }
                    sockuse::SRC_SEND => {
                        dec.lens.push(LenDecoder::new(&f, UseDir::Send)?);
                        Some(sockuse::USE_FILTER)
                    }
                    sockuse::SRC_RECV => {
                        dec.lens.push(LenDecoder::new(&f, UseDir::Recv)?);
                        Some(sockuse::USE_FILTER)
                    }
                    sockuse::SRC_FORK => {
                        sched.set_fork(&f)?;
                        None
                    }
                    sockuse::SRC_EXEC => {
                        sched.set_exec(&f)?;
                        None
                    }
                    sockuse::SRC_EXIT => {
                        sched.set_exit(&f)?;
                        f.field("group_dead").map(|_| "group_dead == 1")
                    }
                    _ => {
                        dec.fib.push(FibDecoder::new(&f, src)?);
                        Some("proto == 17")
                    }
                };
                let (pages, watermark) = if is_sched {
                    (SCHED_RING_PAGES, 1)
                } else {
                    (main_pages, (main_pages as u32 * 4096) / 4)
                };
                let mut fds = Vec::new();
                let mut filtered = true;
                for &cpu in &cpus {
                    let fd =
                        ksys::open_tracepoint(f.id, cpu, watermark).map_err(|e| perf_why(&e))?;
                    // The kernel drops what does not match before it
                    // reaches the ring (best effort: without the filter
                    // the decoders drop it here).
                    if let Some(flt) = filter {
                        filtered &= ksys::set_filter(&fd, flt).is_ok();
                    }
                    fds.push((cpu, fd));
                }
                if fds.is_empty() {
                    return Err("no online CPU found".to_string());
                }
                let (ring_list, by_cpu) = if is_sched {
                    (&mut sched_rings, &mut sched_ring_of_cpu)
                } else {
                    (&mut rings, &mut ring_of_cpu)
                };
                for (cpu, fd) in fds {
                    match by_cpu.get(&cpu) {
                        Some(&i) => {
                            ksys::set_output(&fd, ring_list[i].fd()).map_err(|e| {
                                format!("SET_OUTPUT: {}", crate::sys::errno_name(&e))
                            })?;
                            extra.push(fd);
                        }
                        None => {
                            let r = ksys::PerfRing::map(fd, pages)
                                .map_err(|e| format!("mmap: {}", crate::sys::errno_name(&e)))?;
                            by_cpu.insert(cpu, ring_list.len());
                            ring_list.push(r);
                        }
                    }
                }
                let mut detail = format!(
                    "perf ring buffer of {} KiB on {} CPU(s)",
                    pages * 4,
                    cpus.len()
                );
                if let Some(flt) = filter {
                    detail.push_str(if filtered {
                        ", kernel filter `"
                    } else {
                        ", kernel filter refused, filtered here: `"
                    });
                    detail.push_str(flt);
                    detail.push('`');
                }
                Ok(detail)
            });
            match res {
                Ok(detail) => infos.push(SourceInfo {
                    name: src.into(),
                    used: true,
                    detail: Some(detail),
                }),
                Err(e) => {
                    match src {
                        SRC_SET_STATE => dec.set_state = None,
                        sockuse::SRC_SEND => dec.lens.retain(|d| d.dir != UseDir::Send),
                        sockuse::SRC_RECV => dec.lens.retain(|d| d.dir != UseDir::Recv),
                        sockuse::SRC_FORK => sched.fork = None,
                        sockuse::SRC_EXEC => sched.exec = None,
                        sockuse::SRC_EXIT => sched.exit = None,
                        _ => dec.fib.retain(|d| d.source != src),
                    }
                    infos.push(SourceInfo {
                        name: src.into(),
                        used: false,
                        detail: Some(e),
                    })
                }
            }
        }
        // Enable only now: everything opened is wired to its ring.
        let mut enable_err = None;
        for fd in rings
            .iter()
            .chain(sched_rings.iter())
            .map(|r| r.fd())
            .chain(extra.iter())
        {
            if let Err(e) = ksys::enable(fd) {
                enable_err = Some(format!("enable: {}", crate::sys::errno_name(&e)));
            }
        }
        if let Some(e) = enable_err {
            for i in infos.iter_mut().filter(|i| i.used) {
                i.used = false;
                i.detail = Some(e.clone());
            }
            rings.clear();
            sched_rings.clear();
            extra.clear();
            dec.lens.clear();
            sched = SchedDecoder::default();
        }

        let exec_tp = sched.exec.is_some();
        let conn = if exec_tp {
            infos.push(SourceInfo {
                name: SRC_PROC_CONNECTOR.into(),
                used: false,
                detail: Some(
                    "not needed: the sched tracepoints see exec/fork/exit in every namespace"
                        .into(),
                ),
            });
            None
        } else {
            match ksys::proc_connector() {
                Ok(fd) => {
                    infos.push(SourceInfo {
                        name: SRC_PROC_CONNECTOR.into(),
                        used: true,
                        detail: Some("exec/fork/exit; identity read at exec".into()),
                    });
                    Some(fd)
                }
                Err(e) => {
                    infos.push(SourceInfo {
                        name: SRC_PROC_CONNECTOR.into(),
                        used: false,
                        detail: Some(format!("netlink connector: {}", crate::sys::errno_name(&e))),
                    });
                    None
                }
            }
        };
        // Without per-call evidence, a fork or exec of a socket holder
        // triggers a read of its fds instead.
        let uses = !dec.lens.is_empty();
        let walks = !uses && (sched.fork.is_some() || exec_tp || conn.is_some());
        infos.push(SourceInfo {
            name: sockuse::SRC_FORK_WALK.into(),
            used: walks,
            detail: Some(if uses {
                "not needed: the send/receive tracepoints name who uses each socket".into()
            } else if walks {
                "the fds of processes holding sockets are read at the snapshot after each of their forks and execs".into()
            } else {
                "no fork/exec events (neither sched tracepoints nor proc connector)".into()
            }),
        });
        let batch = Arc::new(Mutex::new(Batch::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let set_state = infos.iter().any(|i| i.used && i.name == SRC_SET_STATE);
        let lookup = if set_state {
            Err("not needed: tracepoints name socket owners".to_string())
        } else {
            crate::lookup::start(iface, batch.clone(), stop.clone())
        };
        infos.push(match lookup {
            Ok((t, detail)) => {
                threads.push(t);
                SourceInfo {
                    name: crate::lookup::SRC_LOOKUP.into(),
                    used: true,
                    detail: Some(detail),
                }
            }
            Err(e) => SourceInfo {
                name: crate::lookup::SRC_LOOKUP.into(),
                used: false,
                detail: Some(e),
            },
        });
        if !rings.is_empty() || !sched_rings.is_empty() || conn.is_some() {
            let (b, s) = (batch.clone(), stop.clone());
            let reader = Reader {
                rings,
                sched_rings,
                _extra: extra,
                conn,
                dec,
                sched,
                walks,
            };
            let thread = std::thread::Builder::new()
                .name("events".into())
                .spawn(move || reader.run(b, s));
            match thread {
                Ok(t) => threads.push(t),
                Err(e) => {
                    for i in infos
                        .iter_mut()
                        .filter(|i| i.used && i.name != crate::lookup::SRC_LOOKUP)
                    {
                        i.used = false;
                        i.detail = Some(format!("cannot start the reader thread: {e}"));
                    }
                }
            }
        }
        if threads.is_empty() {
            return (None, infos);
        }
        (
            Some(EventSources {
                batch,
                stop,
                threads,
            }),
            infos,
        )
    }

    /// Takes what accumulated since the last call; the open runs end here
    /// (a snapshot boundary).
    pub fn take(&self) -> Batch {
        let mut b = match self.batch.lock() {
            Ok(b) => b,
            Err(p) => p.into_inner(),
        };
        let mut ended = Vec::new();
        b.open.flush(&mut ended);
        push_bounded(&mut b, ended);
        std::mem::take(&mut *b)
    }

    /// Stops the reader thread, after one last drain of the rings.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for EventSources {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What [`EventSources::start`] may start.
#[derive(Debug, Clone, Copy)]
pub struct StartOpts {
    /// The capture-triggered lookup instead of every tracepoint.
    pub force_lookup: bool,
    /// The send/receive tracepoints (off: `--sources tracepoints-no-use`).
    pub use_tracepoints: bool,
}

/// Appends `sockuse` lines to the batch within its bound.
fn push_bounded(b: &mut Batch, lines: Vec<SockUseRecord>) {
    let room = MAX_PENDING_USES.saturating_sub(b.sockuse.len());
    b.dropped += lines.len().saturating_sub(room) as u64;
    b.sockuse.extend(lines.into_iter().take(room));
}

/// The reader thread's rings, decoders and mode.
struct Reader {
    rings: Vec<ksys::PerfRing>,
    sched_rings: Vec<ksys::PerfRing>,
    _extra: Vec<OwnedFd>,
    conn: Option<OwnedFd>,
    dec: Decoder,
    sched: SchedDecoder,
    /// Fork/exec-triggered fd walks (no use tracepoints).
    walks: bool,
}

/// A process fork, exec or exit from the scheduler tracepoints: the task
/// record, the identity read at once at exec, the pid cache kept right.
fn sched_sample(
    sched: &SchedDecoder,
    s: &Sample<'_>,
    self_pid: u32,
    walks: bool,
    pids: &mut Pids,
    local: &mut Batch,
) {
    if s.pid == self_pid {
        return;
    }
    let Some(ty) = s
        .raw
        .get(0..2)
        .map(|b| u64::from(u16::from_ne_bytes([b[0], b[1]])))
    else {
        return;
    };
    let Some(e) = sched.decode(ty, s.raw, s.pid, s.tid) else {
        return;
    };
    let mono_ns = i64::try_from(s.time).unwrap_or(i64::MAX);
    match &e {
        SchedEvent::Fork { parent, child } => {
            // A new thread joins its creator's group: not written.
            if Path::new(&format!("/proc/{parent}/task/{child}")).exists() {
                return;
            }
            // The child's exec may have been read first (from another
            // CPU's ring): what it learned stays.
            if pids.execs.get(child).is_none_or(|&t| t < mono_ns) {
                pids.map.remove(child);
                pids.execs.remove(child);
                // Its identity now, while it surely lives: the parent's
                // program. Written at its first call or event, so a child
                // that never execs and lives a few ms is named too.
                pids.learn(*child, local, None, true);
                pids.inherit(*child, *parent);
                pids.retitled_at_fork(*parent, *child, mono_ns, local);
            }
            if walks {
                local.fork_pids.insert(*parent);
                local.fork_pids.insert(*child);
            }
        }
        SchedEvent::Exec { pid, .. } => {
            pids.map.remove(pid);
            if pids.execs.len() >= MAX_PENDING_CONNECTS {
                pids.execs.clear();
            }
            pids.execs.insert(*pid, mono_ns);
            pids.learn(*pid, local, Some(mono_ns), false);
            if walks {
                local.fork_pids.insert(*pid);
            }
        }
        SchedEvent::Exit { last } => {
            if *last {
                if let Some(i) = pids.map.get_mut(&s.pid) {
                    i.exited = Some(Instant::now());
                }
            }
        }
    }
    if let Some(t) = sockuse::task_record(&e, mono_ns, s.pid, s.tid) {
        if local.tasks.len() < MAX_PENDING_USES {
            local.tasks.push(t);
        } else {
            local.dropped += 1;
        }
    }
}

impl Reader {
    /// The reader thread: drains the process events at once (their rings
    /// wake it at each sample), the socket rings every 20 ms or sooner when
    /// one passes a quarter full, adds process facts, reduces calls to runs
    /// and appends to the shared batch.
    fn run(mut self, batch: Arc<Mutex<Batch>>, stop: Arc<AtomicBool>) {
        // This thread must read an exec'd program's identity before a
        // process of a few ms is gone, also on a saturated host: it runs
        // above the default priority (on Linux the call applies to the
        // calling thread only; the snapshot thread still lowers its own).
        // Its CPU is what the events cost, at any priority. Best effort.
        let _ = rustix::process::setpriority_process(None, READER_NICE);
        let mut pids = Pids::new();
        let mut fds: Vec<i32> = self
            .sched_rings
            .iter()
            .chain(self.rings.iter())
            .map(|r| r.fd().as_raw_fd())
            .collect();
        if let Some(c) = &self.conn {
            fds.push(c.as_raw_fd());
        }
        let self_pid = self.dec.self_pid;
        let mut tmp = Vec::new();
        let mut nlbuf = vec![0u8; 64 * 1024];
        let mut raw: Vec<RawEvent> = Vec::new();
        let mut local = Batch::default();
        let mut last_sweep = Instant::now();
        loop {
            let stopping = stop.load(Ordering::SeqCst);
            let _ = ksys::poll_readable(&fds, if stopping { 0 } else { 20 });
            if let Some(c) = &self.conn {
                connector(c, &mut nlbuf, self.walks, &mut pids, &mut local);
            }
            for r in self.rings.iter_mut() {
                let dec = &mut self.dec;
                let skipped = r.drain(&mut tmp, |rec| match parse_ring_record(rec) {
                    Some(RingRecord::Sample(s)) => dec.sample(&s, &mut raw),
                    Some(RingRecord::Lost(n)) => local.lost += n,
                    _ => {}
                });
                // A torn record cost the rest of the ring: at least one sample.
                local.lost += u64::from(skipped);
            }
            // Process events after the socket rings: every exec that came
            // before a call just read is then known, so runs are cut at it
            // (the exec's sample is written before the new image runs).
            for r in self.sched_rings.iter_mut() {
                let sched = &self.sched;
                let walks = self.walks;
                let skipped = r.drain(&mut tmp, |rec| match parse_ring_record(rec) {
                    Some(RingRecord::Sample(s)) => {
                        sched_sample(sched, &s, self_pid, walks, &mut pids, &mut local)
                    }
                    Some(RingRecord::Lost(n)) => local.lost += n,
                    _ => {}
                });
                local.lost += u64::from(skipped);
            }
            for e in raw.drain(..) {
                let info = pids.get(e.pid, &mut local);
                local.pids.insert(e.pid);
                if local.events.len() >= MAX_PENDING_EVENTS {
                    local.dropped += 1;
                    continue;
                }
                local.events.push(EventRecord {
                    source: e.source.into(),
                    kind: e.kind.into(),
                    mono_ns: e.mono_ns,
                    pid: e.pid,
                    tid: e.tid,
                    start_time: info.as_ref().map(|i| i.start_time),
                    comm: info.as_ref().map(|i| i.comm.clone()),
                    netns: info.as_ref().and_then(|i| i.netns),
                    proto: e.proto.into(),
                    local_ip: e.local.to_string(),
                    local_port: e.local_port,
                    remote_ip: e.remote.map(|(ip, _)| ip.to_string()),
                    remote_port: e.remote.map(|(_, p)| p),
                    inode: None,
                });
            }
            // The rings are drained one after another: calls of one socket
            // made on two CPUs arrive out of time order, and a run laid
            // end to end must see them in order (a shell's prompt before
            // and after its child's output would become one run).
            self.dec.uses.sort_by_key(|u| u.time);
            // Titles first (outside the lock: /proc reads), then the runs.
            let mut last = (0, 0, i64::MIN);
            for u in &self.dec.uses {
                let pause = u.time.saturating_sub(last.2) >= TITLE_GAP_NS;
                if (u.pid, u.sk) == (last.0, last.1) && !pause {
                    last.2 = last.2.max(u.time);
                    continue;
                }
                let new_pair = (u.pid, u.sk) != (last.0, last.1) && pids.new_pair(u.pid, u.sk);
                last = (u.pid, u.sk, u.time);
                if pids.map.contains_key(&u.pid) {
                    pids.refresh(u.pid, new_pair, u.time, &mut local);
                } else {
                    pids.get(u.pid, &mut local);
                }
            }
            if last_sweep.elapsed() >= Duration::from_secs(1) {
                last_sweep = Instant::now();
                self.dec.expire(Duration::from_secs(30));
                pids.map.retain(|_, i| {
                    i.exited
                        .is_none_or(|t| t.elapsed() < Duration::from_secs(3))
                });
                if pids.map.len() > MAX_PENDING_CONNECTS {
                    // Without exit events the cache only grows: start
                    // over, the facts are read again at the next event.
                    pids.map.clear();
                }
            }
            local.unjoined += std::mem::take(&mut self.dec.unjoined);
            let busy = !local.events.is_empty()
                || !local.procs.is_empty()
                || !local.tasks.is_empty()
                || !local.fork_pids.is_empty()
                || !self.dec.uses.is_empty()
                || !self.dec.binds.is_empty()
                || local.lost + local.dropped + local.connector_lost + local.unjoined > 0;
            if busy {
                if let Ok(mut b) = batch.lock() {
                    if b.events.is_empty()
                        && b.procs.is_empty()
                        && b.pids.is_empty()
                        && b.sockuse.is_empty()
                    {
                        // The record loop took the last batch: a new interval.
                        self.dec.sent.clear();
                    }
                    merge(&mut b, &mut local);
                    let binds = std::mem::take(&mut self.dec.binds);
                    push_bounded(&mut b, binds);
                    for (sk, t) in self.dec.bound.drain(..) {
                        b.open.bound(sk, t);
                    }
                    let mut ended = Vec::new();
                    let ids = &self.dec.ids;
                    for u in &self.dec.uses {
                        let info = pids.map.get(&u.pid);
                        let exec_ns = pids.execs.get(&u.pid).copied();
                        let who = || match info {
                            Some(i) => Who {
                                start_time: Some(i.start_time),
                                comm: Some(i.comm.clone()),
                            },
                            None => Who::default(),
                        };
                        b.open.add(u, exec_ns, ids, &mut ended, who);
                    }
                    push_bounded(&mut b, ended);
                }
                self.dec.uses.clear();
                self.dec.binds.clear();
                self.dec.bound.clear();
            }
            if stopping {
                return;
            }
        }
    }
}

/// Reads the proc connector's pending datagrams: identity at exec, the
/// pid cache kept right at fork and exit.
fn connector(c: &OwnedFd, nlbuf: &mut [u8], walks: bool, pids: &mut Pids, local: &mut Batch) {
    loop {
        match ksys::recv(c, nlbuf) {
            Ok(Some(n)) => {
                for (what, tgid, pid) in parse_proc_events(&nlbuf[..n.min(nlbuf.len())]) {
                    if tgid != pid && what != ProcEvent::Exec {
                        continue; // a thread, not a process
                    }
                    match what {
                        ProcEvent::Fork => {
                            pids.map.remove(&tgid);
                            if walks {
                                local.fork_pids.insert(tgid);
                            }
                        }
                        ProcEvent::Exec => {
                            pids.map.remove(&tgid);
                            pids.learn(tgid, local, None, false);
                            if walks {
                                local.fork_pids.insert(tgid);
                            }
                        }
                        ProcEvent::Exit => {
                            if let Some(i) = pids.map.get_mut(&tgid) {
                                i.exited = Some(Instant::now());
                            }
                        }
                    }
                }
            }
            Ok(None) => break,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                local.connector_lost += 1;
            }
            Err(_) => break,
        }
    }
}

/// Moves what `from` holds into `into`, within the bounds.
pub(crate) fn merge(into: &mut Batch, from: &mut Batch) {
    let room = MAX_PENDING_EVENTS.saturating_sub(into.events.len());
    let n = from.events.len();
    into.events.extend(from.events.drain(..n.min(room)));
    into.dropped += from.events.len() as u64;
    from.events.clear();
    let room = MAX_PENDING_PROCS.saturating_sub(into.procs.len());
    let n = from.procs.len();
    into.procs.extend(from.procs.drain(..n.min(room)));
    into.dropped += from.procs.len() as u64;
    from.procs.clear();
    let room = MAX_PENDING_USES.saturating_sub(into.tasks.len());
    let n = from.tasks.len();
    into.tasks.extend(from.tasks.drain(..n.min(room)));
    into.dropped += from.tasks.len() as u64;
    from.tasks.clear();
    let lines = std::mem::take(&mut from.sockuse);
    push_bounded(into, lines);
    into.pids.append(&mut from.pids);
    into.fork_pids.append(&mut from.fork_pids);
    into.lost += std::mem::take(&mut from.lost);
    into.dropped += std::mem::take(&mut from.dropped);
    into.connector_lost += std::mem::take(&mut from.connector_lost);
    into.unjoined += std::mem::take(&mut from.unjoined);
    into.unowned += std::mem::take(&mut from.unowned);
    into.packets_dropped += std::mem::take(&mut from.packets_dropped);
    into.packet_errors += std::mem::take(&mut from.packet_errors);
}

#[cfg(test)]
mod tests {
    use super::*;

    const SET_STATE_FORMAT: &str = include_str!("../testdata/tracefs/inet_sock_set_state.format");
    const FIB_FORMAT: &str = include_str!("../testdata/tracefs/fib_table_lookup.format");
    const FIB6_FORMAT: &str = include_str!("../testdata/tracefs/fib6_table_lookup.format");

    fn put(raw: &mut [u8], f: (usize, usize), v: &[u8]) {
        assert_eq!(f.1, v.len());
        raw[f.0..f.0 + f.1].copy_from_slice(v);
    }

    fn set_state_raw(
        f: &TpFormat,
        flags: u8,
        sk: u64,
        old: i32,
        new: i32,
        sport: u16,
        dport: u16,
    ) -> Vec<u8> {
        let mut raw = vec![0u8; 72];
        put(
            &mut raw,
            f.field("common_type").unwrap(),
            &(f.id as u16).to_ne_bytes(),
        );
        put(&mut raw, f.field("common_flags").unwrap(), &[flags]);
        put(&mut raw, f.field("skaddr").unwrap(), &sk.to_ne_bytes());
        put(&mut raw, f.field("oldstate").unwrap(), &old.to_ne_bytes());
        put(&mut raw, f.field("newstate").unwrap(), &new.to_ne_bytes());
        put(&mut raw, f.field("sport").unwrap(), &sport.to_ne_bytes());
        put(&mut raw, f.field("dport").unwrap(), &dport.to_ne_bytes());
        put(&mut raw, f.field("family").unwrap(), &2u16.to_ne_bytes());
        put(&mut raw, f.field("protocol").unwrap(), &6u16.to_ne_bytes());
        put(&mut raw, f.field("saddr").unwrap(), &[10, 0, 0, 1]);
        put(&mut raw, f.field("daddr").unwrap(), &[10, 0, 0, 2]);
        raw
    }

    fn sample(pid: u32, time: u64, raw: &[u8]) -> Sample<'_> {
        Sample {
            pid,
            tid: pid,
            time,
            raw,
        }
    }

    #[test]
    fn formats_parse_with_offsets_from_the_file() {
        let f = parse_format(SET_STATE_FORMAT).unwrap();
        assert_eq!(f.id, 2287);
        assert_eq!(f.field("skaddr"), Some((8, 8)));
        assert_eq!(f.field("saddr"), Some((32, 4)));
        assert_eq!(f.field("daddr_v6"), Some((56, 16)));
        assert_eq!(f.field("common_flags"), Some((2, 1)));
        let f6 = parse_format(FIB6_FORMAT).unwrap();
        assert_eq!(f6.field("src"), Some((31, 16)));
        assert_eq!(f6.field("proto"), Some((68, 1)));
        assert!(parse_format("name: x\nformat:\n")
            .unwrap_err()
            .contains("ID"));
        assert!(parse_format("ID: 5\n\tfield:int x;\toffset:zz;\tsize:4;\n")
            .unwrap_err()
            .contains("line 2"));
        // A format lacking a field the decoder needs is refused by name.
        let mut short = f.clone();
        short.fields.retain(|(n, _, _)| n != "sport");
        assert!(SetStateDecoder::new(&short).unwrap_err().contains("sport"));
    }

    #[test]
    fn connect_is_joined_to_its_source_port_and_owner() {
        let f = parse_format(SET_STATE_FORMAT).unwrap();
        let mut d = Decoder {
            set_state: Some(SetStateDecoder::new(&f).unwrap()),
            ..Decoder::default()
        };
        let mut out = Vec::new();
        // connect() in process 100: no source port yet.
        let a = set_state_raw(&f, 0, 0x1000_0001, 7, 2, 0, 80);
        d.sample(&sample(100, 1_000, &a), &mut out);
        assert!(out.is_empty());
        // Another socket's softirq event: nothing.
        let b = set_state_raw(&f, 0x10, 0x1000_0002, 2, 1, 5555, 80);
        d.sample(&sample(7, 1_500, &b), &mut out);
        assert!(out.is_empty());
        // SYN-ACK processed in softirq while pid 7 runs: the owner is 100.
        let c = set_state_raw(&f, 0x10, 0x1000_0001, 2, 1, 40000, 80);
        d.sample(&sample(7, 2_000, &c), &mut out);
        assert_eq!(out.len(), 1);
        let e = &out[0];
        assert_eq!((e.kind, e.pid, e.mono_ns), ("connect", 100, 1_000));
        assert_eq!(e.local, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(e.local_port, 40000);
        assert_eq!(e.remote, Some((IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 80)));
        // Its close by the connecting process adds nothing: not written.
        let c = set_state_raw(&f, 0x01, 0x1000_0001, 1, 4, 40000, 80);
        d.sample(&sample(100, 3_000, &c), &mut out);
        assert_eq!(out.len(), 1);
        // close() of a socket connected elsewhere (accepted, inherited,
        // passed) names the process holding it at the end, with the tuple.
        let c = set_state_raw(&f, 0x01, 0x1000_0005, 8, 9, 80, 40001);
        d.sample(&sample(101, 3_000, &c), &mut out);
        assert_eq!(out[1].kind, "close");
        assert_eq!(out[1].pid, 101);
        assert_eq!(out[1].local_port, 80);
        // The same close seen in softirq context is not an owner.
        d.sample(
            &sample(
                100,
                3_000,
                &set_state_raw(&f, 0x10, 0x1000_0003, 1, 4, 1, 2),
            ),
            &mut out,
        );
        assert_eq!(out.len(), 2);
        // A connect that fails before a port was chosen is counted.
        d.sample(
            &sample(100, 4_000, &set_state_raw(&f, 0, 0x1000_0004, 7, 2, 0, 80)),
            &mut out,
        );
        d.sample(
            &sample(100, 4_100, &set_state_raw(&f, 0, 0x1000_0004, 2, 7, 0, 80)),
            &mut out,
        );
        assert_eq!(d.unjoined, 1);
        // Truncated records decode to nothing rather than panic.
        d.sample(&sample(100, 1, &a[..20]), &mut out);
        d.sample(&sample(100, 1, &a[..1]), &mut out);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn udp_route_lookups_become_sends_once_per_tuple() {
        let f = parse_format(FIB_FORMAT).unwrap();
        let f6 = parse_format(FIB6_FORMAT).unwrap();
        let mut d = Decoder {
            fib: vec![
                FibDecoder::new(&f, SRC_FIB).unwrap(),
                FibDecoder::new(&f6, SRC_FIB6).unwrap(),
            ],
            ..Decoder::default()
        };
        let mut raw = vec![0u8; 80];
        put(
            &mut raw,
            f.field("common_type").unwrap(),
            &(f.id as u16).to_ne_bytes(),
        );
        put(&mut raw, f.field("proto").unwrap(), &[17]);
        put(&mut raw, f.field("src").unwrap(), &[0, 0, 0, 0]);
        put(&mut raw, f.field("dst").unwrap(), &[127, 0, 0, 53]);
        put(&mut raw, f.field("sport").unwrap(), &40001u16.to_ne_bytes());
        put(&mut raw, f.field("dport").unwrap(), &53u16.to_ne_bytes());
        let mut out = Vec::new();
        d.sample(&sample(200, 10, &raw), &mut out);
        d.sample(&sample(200, 11, &raw), &mut out);
        assert_eq!(out.len(), 1, "a repeated tuple is one event per interval");
        assert_eq!(
            (out[0].kind, out[0].proto, out[0].pid),
            ("send", "udp", 200)
        );
        assert_eq!(
            out[0].remote,
            Some((IpAddr::V4(Ipv4Addr::new(127, 0, 0, 53)), 53))
        );
        // TCP lookups and softirq lookups are not UDP sends by a process.
        let mut tcp = raw.clone();
        put(&mut tcp, f.field("proto").unwrap(), &[6]);
        put(&mut tcp, f.field("sport").unwrap(), &1u16.to_ne_bytes());
        d.sample(&sample(200, 12, &tcp), &mut out);
        let mut irq = raw.clone();
        put(&mut irq, f.field("common_flags").unwrap(), &[0x10]);
        put(&mut irq, f.field("sport").unwrap(), &2u16.to_ne_bytes());
        d.sample(&sample(200, 13, &irq), &mut out);
        assert_eq!(out.len(), 1);
        // IPv6, with a v4-mapped destination read as IPv4.
        let mut r6 = vec![0u8; 110];
        put(
            &mut r6,
            f6.field("common_type").unwrap(),
            &(f6.id as u16).to_ne_bytes(),
        );
        put(&mut r6, f6.field("proto").unwrap(), &[17]);
        let mut dst = [0u8; 16];
        dst[15] = 1;
        put(&mut r6, f6.field("dst").unwrap(), &dst);
        put(&mut r6, f6.field("sport").unwrap(), &40002u16.to_ne_bytes());
        put(&mut r6, f6.field("dport").unwrap(), &53u16.to_ne_bytes());
        d.sample(&sample(201, 14, &r6), &mut out);
        assert_eq!(out[1].source, SRC_FIB6);
        assert_eq!(out[1].remote, Some(("::1".parse().unwrap(), 53)));
        // A flood of distinct tuples within one interval stays bounded.
        let mut flood = raw.clone();
        for i in 0..(MAX_PENDING_EVENTS + 10) {
            put(
                &mut flood,
                f.field("sport").unwrap(),
                &((i % 60000) as u16 + 1).to_ne_bytes(),
            );
            put(
                &mut flood,
                f.field("dport").unwrap(),
                &((i / 60000) as u16 + 1).to_ne_bytes(),
            );
            d.sample(&sample(202, 15, &flood), &mut Vec::new());
        }
        assert!(d.sent.len() <= MAX_PENDING_EVENTS, "{}", d.sent.len());
    }

    #[test]
    fn ring_records_and_proc_events_decode() {
        let mut rec = Vec::new();
        rec.extend_from_slice(&9u32.to_ne_bytes());
        rec.extend_from_slice(&0u16.to_ne_bytes());
        rec.extend_from_slice(&44u16.to_ne_bytes());
        rec.extend_from_slice(&10u32.to_ne_bytes());
        rec.extend_from_slice(&11u32.to_ne_bytes());
        rec.extend_from_slice(&12345u64.to_ne_bytes());
        rec.extend_from_slice(&[0u8; 8]);
        rec.extend_from_slice(&4u32.to_ne_bytes());
        rec.extend_from_slice(&[1, 2, 3, 4]);
        match parse_ring_record(&rec) {
            Some(RingRecord::Sample(s)) => {
                assert_eq!(
                    (s.pid, s.tid, s.time, s.raw),
                    (10, 11, 12345, &[1u8, 2, 3, 4][..])
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_ring_record(&rec[..38]).is_none());
        // A connector exec message for pid 77.
        let mut m = vec![0u8; 36 + 16 + 8];
        let len = m.len() as u32;
        m[0..4].copy_from_slice(&len.to_ne_bytes());
        m[36..40].copy_from_slice(&2u32.to_ne_bytes());
        m[52..56].copy_from_slice(&77u32.to_ne_bytes());
        m[56..60].copy_from_slice(&77u32.to_ne_bytes());
        assert_eq!(parse_proc_events(&m), vec![(ProcEvent::Exec, 77, 77)]);
        assert!(parse_proc_events(&m[..20]).is_empty());
        assert_eq!(parse_cpu_list("0-3,5\n"), vec![0, 1, 2, 3, 5]);
        assert_eq!(parse_cpu_list("garbage"), Vec::<u32>::new());
    }
}
