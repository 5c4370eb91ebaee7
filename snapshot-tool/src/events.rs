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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::batch::{
    merge, push_bounded, Batch, Pids, MAX_PENDING_CONNECTS, MAX_PENDING_EVENTS, MAX_PENDING_USES,
    TITLE_GAP_NS,
};
use crate::bpfuse::{self, KernelRecord};
use crate::ksys;
use crate::layout::{EventRecord, SockUseRecord, SourceInfo, UseDir};
use crate::nlmsg::NlReader;
use crate::sockuse::{self, Bindings, LenDecoder, SchedDecoder, SchedEvent, SkIds, UseSample, Who};
use crate::tracefmt::{parse_format, Field, TpFormat};

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
/// Nice value of the event reader thread.
const READER_NICE: i32 = -10;
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
    /// TCP state changes decoded (any socket, any namespace) since the
    /// reader last took them: the snapshot re-reads the TCP tables only
    /// after one.
    pub tcp_changes: u64,
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
    /// The send/receive calls come from the eBPF program instead of `lens`.
    kernel_uses: bool,
}

impl Decoder {
    /// Whether per-call evidence runs (perf tracepoints or eBPF).
    fn uses_on(&self) -> bool {
        !self.lens.is_empty() || self.kernel_uses
    }

    /// One send or receive call counted in user space (the perf path, and
    /// UDP calls of the eBPF path): a UDP send binds its socket to its
    /// thread's route lookup.
    fn use_sample(&mut self, u: UseSample) {
        if let Some(tuple) = self.bindings.udp_send(&u) {
            self.udp_binding(u.sk, u.time, tuple);
        }
        self.uses.push(u);
    }

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
                self.use_sample(u);
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
        if self.uses_on() {
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
        self.tcp_changes += 1;
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
        if !self.uses_on() || e.sport == 0 {
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

/// Decodes proc connector datagrams: (what, tgid, pid) for fork (child),
/// exec and exit; other events are skipped.
pub fn parse_proc_events(buf: &[u8]) -> Vec<(ProcEvent, u32, u32)> {
    let mut out = Vec::new();
    for m in NlReader::new(buf) {
        // After nlmsghdr: cn_msg (20), proc_event: what, cpu, timestamp
        // (16), then the event data.
        let u32_at = |o: usize| -> Option<u32> {
            Some(u32::from_ne_bytes(m.body.get(o..o + 4)?.try_into().ok()?))
        };
        let base = 20;
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
    /// The runs the eBPF program keeps, ended at each snapshot.
    kruns: Option<Arc<Mutex<bpfuse::Runs>>>,
    ids: SkIds,
    /// The eBPF programs, attached while this lives (dropped after the
    /// reader thread stopped).
    _kernel: Option<bpfuse::Kernel>,
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
        // The send/receive calls: reduced to runs in the kernel by the eBPF
        // program where it loads, else sampled by the perf tracepoints.
        let use_formats = formats
            .iter()
            .filter(|(s, f)| (*s == sockuse::SRC_SEND || *s == sockuse::SRC_RECV) && f.is_ok())
            .count();
        let loaded = if !opts.use_tracepoints {
            Err("switched off (--sources tracepoints-no-use)".to_string())
        } else if !opts.ebpf {
            Err("switched off (--sources tracepoints-perf-use)".to_string())
        } else if use_formats < 2 {
            Err("the send/receive tracepoints are missing".to_string())
        } else {
            match &events_dir {
                Ok(dir) => bpfuse::load(dir, dec.self_pid),
                Err(e) => Err(e.clone()),
            }
        };
        let mut kernel = None;
        match loaded {
            Ok(k) => {
                formats.retain(|(s, _)| *s != sockuse::SRC_SEND && *s != sockuse::SRC_RECV);
                for name in [sockuse::SRC_SEND, sockuse::SRC_RECV] {
                    infos.push(SourceInfo {
                        name: name.into(),
                        used: true,
                        detail: Some(format!(
                            "counted by the eBPF program ({})",
                            bpfuse::SRC_EBPF
                        )),
                    });
                }
                infos.push(SourceInfo {
                    name: bpfuse::SRC_EBPF.into(),
                    used: true,
                    detail: Some(format!(
                        "TCP calls reduced to runs in the kernel, UDP calls passed one by one; ring buffer of 8 MiB{}",
                        match bpfuse::own_pid_ns() {
                            Ok((inum, true)) => format!(
                                "; tasks named in the recorder's own pid namespace \
                                 (pid:[{inum}]): calls by processes outside it are not seen"
                            ),
                            _ => String::new(),
                        }
                    )),
                });
                dec.kernel_uses = true;
                kernel = Some(k);
            }
            Err(e) => infos.push(SourceInfo {
                name: bpfuse::SRC_EBPF.into(),
                used: false,
                detail: Some(if opts.use_tracepoints && use_formats == 2 && opts.ebpf {
                    format!("{e}; the perf tracepoints are used instead")
                } else {
                    e
                }),
            }),
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
        // The sched tracepoints' own pid fields are the initial pid
        // namespace's; the samples', like /proc, the recorder's.
        sched.foreign = matches!(bpfuse::own_pid_ns(), Ok((_, true)));
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
                    sockuse::SRC_FORK if sched.foreign => {
                        return Err("the recorder runs in a pid namespace of its own, and the \
                                    tracepoint names the new task only by its pid in the \
                                    initial one (children are named at their first exec, call \
                                    or snapshot)"
                            .into());
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
            dec.kernel_uses = false;
            kernel = None;
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
        let uses = dec.uses_on();
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
        let ids = dec.ids.clone();
        let (kernel, kring, kruns) = match kernel {
            Some((k, ring, runs)) => (Some(k), Some(ring), Some(Arc::new(Mutex::new(runs)))),
            None => (None, None, None),
        };
        if !rings.is_empty() || !sched_rings.is_empty() || conn.is_some() || kring.is_some() {
            let (b, s) = (batch.clone(), stop.clone());
            let reader = Reader {
                rings,
                sched_rings,
                _extra: extra,
                conn,
                dec,
                sched,
                walks,
                kring,
                kruns: kruns.clone(),
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
                kruns,
                ids,
                _kernel: kernel,
            }),
            infos,
        )
    }

    /// Takes what accumulated since the last call; the open runs end here
    /// (a snapshot boundary): the kernel's quiet ones (all of them with
    /// `all`, at the last snapshot) are read from their network namespace,
    /// entered from a process `ns_pids` names in it.
    pub fn take(&self, ns_pids: &BTreeMap<u64, Vec<u32>>, all: bool) -> Batch {
        let mut b = match self.batch.lock() {
            Ok(b) => b,
            Err(p) => p.into_inner(),
        };
        let mut ended = Vec::new();
        b.open.flush(&mut ended);
        if let Some(k) = &self.kruns {
            let mut k = match k.lock() {
                Ok(k) => k,
                Err(p) => p.into_inner(),
            };
            let (lost, failed) = k.flush(&self.ids, ns_pids, all, &mut ended);
            b.lost += lost;
            b.walk_errors.extend(failed);
        }
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
    /// Those calls reduced in the kernel by the eBPF program where it
    /// loads (off: `--sources tracepoints-perf-use`).
    pub ebpf: bool,
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
    /// The eBPF program's ring buffer and runs.
    kring: Option<bpfuse::Ring>,
    kruns: Option<Arc<Mutex<bpfuse::Runs>>>,
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
    // Pid 0: a task outside the recorder's pid namespace (or the idle
    // task), which its /proc cannot show.
    if s.pid == self_pid || s.pid == 0 {
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
        let _ = ksys::process::set_thread_nice(READER_NICE);
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
        if let Some(k) = &self.kring {
            fds.push(k.fd().as_raw_fd());
        }
        let mut krecs: Vec<KernelRecord> = Vec::new();
        let mut touches: Vec<(u32, u64, i64)> = Vec::new();
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
            // The eBPF program's records, also after the process events.
            if let Some(k) = &mut self.kring {
                local.lost += k.drain(&mut krecs);
                krecs.retain(|r| match *r {
                    KernelRecord::Call(u) => {
                        self.dec.use_sample(u);
                        false
                    }
                    KernelRecord::Note { key, owner, time } => {
                        touches.push(((owner >> 32) as u32, key & !1, time));
                        false
                    }
                    KernelRecord::Cut {
                        key, owner, time, ..
                    } => {
                        if owner != 0 {
                            touches.push(((owner >> 32) as u32, key & !1, time));
                        }
                        true
                    }
                });
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
            let calls = self.dec.uses.iter().map(|u| (u.pid, u.sk, u.time));
            for (pid, sk, time) in calls.chain(touches.drain(..)) {
                let pause = time.saturating_sub(last.2) >= TITLE_GAP_NS;
                if (pid, sk) == (last.0, last.1) && !pause {
                    last.2 = last.2.max(time);
                    continue;
                }
                let new_pair = (pid, sk) != (last.0, last.1) && pids.new_pair(pid, sk);
                last = (pid, sk, time);
                if pids.map.contains_key(&pid) {
                    pids.refresh(pid, new_pair, time, &mut local);
                } else {
                    pids.get(pid, &mut local);
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
            local.tcp_changes += std::mem::take(&mut self.dec.tcp_changes);
            let busy = !local.events.is_empty()
                || !local.procs.is_empty()
                || !local.tasks.is_empty()
                || !local.fork_pids.is_empty()
                || !self.dec.uses.is_empty()
                || !self.dec.binds.is_empty()
                || !krecs.is_empty()
                || local.lost + local.dropped + local.connector_lost + local.unjoined > 0
                || local.tcp_changes > 0;
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
                    if let Some(k) = &self.kruns {
                        let mut k = match k.lock() {
                            Ok(k) => k,
                            Err(p) => p.into_inner(),
                        };
                        let who = |pid: u32| match pids.map.get(&pid) {
                            Some(i) => Who {
                                start_time: Some(i.start_time),
                                comm: Some(i.comm.clone()),
                            },
                            None => Who::default(),
                        };
                        for r in krecs.drain(..) {
                            let KernelRecord::Cut {
                                key,
                                family,
                                old,
                                owner,
                                time,
                                netns,
                            } = r
                            else {
                                continue;
                            };
                            if let Some(old) = old {
                                k.ended(ids, key, family, old, who, &mut ended);
                            }
                            if owner != 0 {
                                let pid = (owner >> 32) as u32;
                                k.begin(key, netns, time, pid, who(pid));
                            }
                        }
                    }
                    push_bounded(&mut b, ended);
                }
                krecs.clear();
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

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
