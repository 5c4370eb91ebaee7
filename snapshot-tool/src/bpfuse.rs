//! Who sends and reads, reduced to runs in the kernel: the eBPF programs of
//! `snapshot-tool/bpf/sockuse.bpf.c`, BTF-typed on the `sock_send_length`
//! / `sock_recv_length` tracepoints (docs/recorder.md, "perf tracepoints
//! or eBPF").
//!
//! A TCP call costs its caller a lookup of its socket's local storage and
//! two atomic adds; the program writes a record to its ring buffer only
//! when a run ends and the next begins (another process, 1 s old, an exec,
//! TCP_CLOSE, a snapshot), with the ended run's counters. This module
//! loads the embedded object (aya, relocated against the kernel's BTF; no
//! clang needed at build time), turns those records into the same `use`
//! lines as the perf path of [`crate::sockuse`], and at a snapshot writes
//! the runs still open that went quiet, read with the program's TCP socket
//! iterator in their network namespace. UDP calls come through one record
//! per call and go through the user-space run reduction as before: their
//! binding is made by pairing each send with its thread's route lookup.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use aya::maps::{Array, MapData, RingBuf};
use aya::programs::{BtfTracePoint, Iter, TracePoint};
use aya::{Btf, Ebpf, EbpfLoader};

use crate::ksys;
use crate::layout::{SockUseRecord, UseDir};
use crate::sockuse::{SkIds, UseSample, Who, SRC_RECV, SRC_SEND};

/// Name of this source in `manifest.sources`.
pub const SRC_EBPF: &str = "ebpf-use";

/// The compiled program (built by `snapshot-tool/bpf/build.sh`).
static OBJECT: &[u8] = aya::include_bytes_aligned!("../bpf/sockuse.bpf.o");

/// The BTF-typed programs, by function name, and their tracepoints.
const BTF_PROGRAMS: [(&str, &str); 3] = [
    ("sock_send", "sock_send_length"),
    ("sock_recv", "sock_recv_length"),
    ("sock_state", "inet_sock_set_state"),
];
/// The plain tracepoint program (execs are rare) and its tracepoint.
const EXEC_PROGRAM: (&str, &str, &str) = ("process_exec", "sched", "sched_process_exec");
/// The iterator program: one TCP socket walk of a network namespace.
const ITER_PROGRAM: &str = "dump_runs";

/// Size of one ring record (`struct rec`).
const REC_LEN: usize = 80;
/// Size of one socket's storage as the iterator writes it (`struct
/// sk_runs`: two `struct run` of 14 `u64`s, reads then sends).
const SK_RUNS_LEN: usize = 2 * RUN_WORDS * 8;
/// `u64`s of one `struct run`: key, the [`RunValue`], netns, tick.
const RUN_WORDS: usize = 14;
/// An open run whose first call is older than this was not cut by the
/// program's 1 s limit: its socket went quiet, and a snapshot reads it.
const QUIET_NS: i64 = 1_500_000_000;
/// Record kinds (`K_*` in the C source).
const K_CUT: u32 = 1;
const K_NOTE: u32 = 2;
const K_UDP: u32 = 3;
const K_CLOSE: u32 = 4;
/// Slots of the `conf` array.
const CONF_EPOCH: u32 = 0;
const CONF_SELF: u32 = 1;
const CONF_LOST_RING: u32 = 2;
const CONF_LOST_MAP: u32 = 3;
const CONF_PIDNS_LEVEL: u32 = 5;
/// `LEVEL_UNKNOWN` in the C source: a pid namespace other than the
/// initial one, level to be found by the program.
const LEVEL_UNKNOWN: u32 = u32::MAX;
const CONF_PIDNS_INUM: u32 = 6;
/// Most runs whose process facts are remembered (one per open run).
const MAX_WHO: usize = 262_144;

/// A run as stored (`struct run` less its key and netns): seq, owner,
/// first, last, bytes, calls, base_bytes, base_calls, epoch, note, family.
type RunValue = [u64; 11];

/// The loaded programs: attached while this lives.
pub struct Kernel {
    _ebpf: Ebpf,
    _hooks: Vec<OwnedFd>,
}

/// The program's ring buffer, read by the events thread.
pub struct Ring {
    ring: RingBuf<MapData>,
}

/// One decoded ring record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelRecord {
    /// A run ended (`old`, if it had calls) and, unless at TCP_CLOSE, the
    /// next began with the call of (`pid`, `tid`) at `time`.
    Cut {
        /// Socket address with bit 0 set for sends.
        key: u64,
        /// 4 or 6.
        family: u8,
        /// The ended run: (tgid << 32 | tid, first, last, bytes, calls).
        old: Option<(u64, i64, i64, u64, u64)>,
        /// The new run's first call: tgid << 32 | tid, 0 at TCP_CLOSE.
        owner: u64,
        /// CLOCK_MONOTONIC ns of that call (or of the close).
        time: i64,
        /// Inode of the socket's network namespace.
        netns: u32,
    },
    /// The run's process called again (its title is worth a check).
    Note {
        /// Socket address with bit 0 set for sends.
        key: u64,
        /// tgid << 32 | tid.
        owner: u64,
        /// CLOCK_MONOTONIC ns.
        time: i64,
    },
    /// One UDP call, as the perf path samples it.
    Call(UseSample),
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_ne_bytes(a)
}

fn ns(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn dir_of(key: u64) -> UseDir {
    if key & 1 == 1 {
        UseDir::Send
    } else {
        UseDir::Recv
    }
}

/// Decodes one ring record; `None` for a short or unknown one.
pub fn decode(b: &[u8]) -> Option<KernelRecord> {
    if b.len() < REC_LEN {
        return None;
    }
    let key = u64_at(b, 0);
    let kind = u32::from_ne_bytes([b[8], b[9], b[10], b[11]]);
    let family = match u16::from_ne_bytes([b[12], b[13]]) {
        4 => 4,
        6 => 6,
        _ => return None,
    };
    let (old_owner, old_first, old_last) = (u64_at(b, 16), u64_at(b, 24), u64_at(b, 32));
    let (old_bytes, old_calls) = (u64_at(b, 40), u64_at(b, 48));
    let (owner, time) = (u64_at(b, 56), ns(u64_at(b, 64)));
    let netns = u32::from_ne_bytes([b[72], b[73], b[74], b[75]]);
    match kind {
        K_CUT | K_CLOSE => Some(KernelRecord::Cut {
            key,
            family,
            old: (old_owner != 0 && old_calls > 0).then_some((
                old_owner,
                ns(old_first),
                ns(old_last),
                old_bytes,
                old_calls,
            )),
            owner: if kind == K_CUT { owner } else { 0 },
            time,
            netns,
        }),
        K_NOTE => Some(KernelRecord::Note { key, owner, time }),
        K_UDP => Some(KernelRecord::Call(UseSample {
            sk: key & !1,
            dir: dir_of(key),
            proto: 17,
            family,
            pid: (owner >> 32) as u32,
            tid: owner as u32,
            time,
            bytes: old_bytes,
        })),
        _ => None,
    }
}

impl Ring {
    /// The fd to poll.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.ring.as_fd()
    }

    /// Decodes every record ready; returns how many were not understood.
    pub fn drain(&mut self, out: &mut Vec<KernelRecord>) -> u64 {
        let mut bad = 0;
        while let Some(item) = self.ring.next() {
            match decode(&item) {
                Some(r) => out.push(r),
                None => bad += 1,
            }
        }
        bad
    }
}

/// The program's settings and iterator, and the runs as the recorder
/// tracks them.
pub struct Runs {
    conf: Array<MapData, u64>,
    /// The link of the iterator program, opened once per walk.
    iter: OwnedFd,
    /// Inode of the recorder's own network namespace (walked without
    /// changing namespace).
    self_netns: u64,
    lost_seen: u64,
    track: Tracker,
}

/// The kernel runs as the recorder tracks them: the process facts of each
/// open run (read when it began) and what the last snapshot already wrote
/// of each.
#[derive(Debug, Default)]
pub struct Tracker {
    /// The snapshot epoch the program compares (a run never spans two).
    epoch: u64,
    /// (key, first call) -> facts of the process when the run began.
    who: HashMap<(u64, i64), Who>,
    /// pid -> the facts last given for a run of it: for a run a snapshot
    /// writes before the record of its beginning was read.
    by_pid: HashMap<u32, Who>,
    /// key -> (first, bytes, calls, last) of the run a snapshot wrote
    /// while it was still open.
    flushed: HashMap<u64, (i64, u64, u64, i64)>,
    /// key -> (netns, first call) of each run begun and not yet written
    /// whole: what a snapshot may have to read.
    open: HashMap<u64, (u32, i64)>,
}

/// A `use` line of a run of `key`.
#[allow(clippy::too_many_arguments)]
fn run_line(
    ids: &SkIds,
    key: u64,
    family: u8,
    owner: u64,
    first: i64,
    last: i64,
    calls: u64,
    bytes: u64,
    who: Option<&Who>,
) -> SockUseRecord {
    let dir = dir_of(key);
    let source = match dir {
        UseDir::Send => SRC_SEND,
        UseDir::Recv => SRC_RECV,
    };
    let mut rec = SockUseRecord::run(
        source,
        ids.id(key & !1),
        dir,
        "tcp",
        family,
        (owner >> 32) as u32,
        owner as u32,
        first,
        last,
        calls,
        bytes,
    );
    if let Some(w) = who {
        rec.start_time = w.start_time;
        rec.comm = w.comm.clone();
    }
    rec
}

impl Runs {
    /// A run of `pid` began at `time` on a socket of `netns`; `who` is its
    /// process now.
    pub fn begin(&mut self, key: u64, netns: u32, time: i64, pid: u32, who: Who) {
        self.track.begin(key, netns, time, pid, who);
    }

    /// A run the program ended (see [`Tracker::ended`]).
    pub fn ended(
        &mut self,
        ids: &SkIds,
        key: u64,
        family: u8,
        old: (u64, i64, i64, u64, u64),
        now: impl FnOnce(u32) -> Who,
        out: &mut Vec<SockUseRecord>,
    ) {
        self.track.ended(ids, key, family, old, now, out);
    }

    /// A snapshot: the runs still open that went quiet (or all of them,
    /// with `all`, at the last snapshot) are written as they stand, and
    /// the program starts new ones at their next call. `ns_pids` names
    /// processes in each network namespace, to walk its sockets from.
    /// Returns the records the program lost (ring full, no storage) since
    /// the last call, and the namespaces it could not walk, with why.
    pub fn flush(
        &mut self,
        ids: &SkIds,
        ns_pids: &BTreeMap<u64, Vec<u32>>,
        all: bool,
        out: &mut Vec<SockUseRecord>,
    ) -> (u64, Vec<String>) {
        self.track.epoch += 1;
        let _ = self.conf.set(CONF_EPOCH, self.track.epoch, 0);
        let now = crate::ksys::process::clock_ns(libc::CLOCK_MONOTONIC).unwrap_or(0);
        let mut failed = Vec::new();
        for netns in self.track.quiet(now, all) {
            match self.walk(netns, ns_pids) {
                Ok(values) => self.track.flush(ids, netns, values.into_iter(), out),
                Err(e) => {
                    // Said once: those runs are written when they end.
                    self.track.forget(netns);
                    failed.push(format!("network namespace {netns}: {e}"));
                }
            }
        }
        let lost = [CONF_LOST_RING, CONF_LOST_MAP]
            .iter()
            .map(|i| self.conf.get(i, 0).unwrap_or(0))
            .sum::<u64>();
        let new = lost.saturating_sub(self.lost_seen);
        self.lost_seen = lost;
        (new, failed)
    }

    /// The runs of every TCP socket of `netns`: one walk of the iterator,
    /// opened from that namespace (from a short-lived thread that enters
    /// it, unless it is the recorder's own).
    fn walk(
        &self,
        netns: u32,
        ns_pids: &BTreeMap<u64, Vec<u32>>,
    ) -> std::io::Result<Vec<(u64, RunValue)>> {
        let netns = u64::from(netns);
        let reader = if netns == self.self_netns {
            ksys::bpf::iter_open(self.iter.as_fd())?
        } else {
            let pids = ns_pids.get(&netns).map(Vec::as_slice).unwrap_or(&[]);
            let mut last = std::io::Error::other("no process of it is known");
            let mut found = None;
            for &pid in pids {
                match self.open_in(pid, netns) {
                    Ok(fd) => {
                        found = Some(fd);
                        break;
                    }
                    Err(e) => last = e,
                }
            }
            found.ok_or(last)?
        };
        let mut bytes = Vec::new();
        std::fs::File::from(reader).read_to_end(&mut bytes)?;
        Ok(parse_walk(&bytes))
    }

    /// A reader of the iterator opened in the network namespace of `pid`,
    /// which must still be `netns`.
    fn open_in(&self, pid: u32, netns: u64) -> std::io::Result<OwnedFd> {
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
        if ns.metadata()?.ino() != netns {
            return Err(std::io::Error::other(format!("pid {pid} left it")));
        }
        let link = self.iter.as_fd();
        std::thread::scope(|s| {
            s.spawn(|| {
                // Only this short-lived thread changes namespace.
                ksys::netlink::enter_netns(&ns)?;
                ksys::bpf::iter_open(link)
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("namespace thread panicked")))
        })
    }
}

/// The runs of one walk: each socket's two runs (reads, sends), those
/// that had a call.
fn parse_walk(b: &[u8]) -> Vec<(u64, RunValue)> {
    let mut out = Vec::new();
    for sk in b.chunks_exact(SK_RUNS_LEN) {
        for run in sk.chunks_exact(RUN_WORDS * 8) {
            let key = u64_at(run, 0);
            if key == 0 {
                continue;
            }
            let mut v: RunValue = [0; 11];
            for (i, w) in v.iter_mut().enumerate() {
                *w = u64_at(run, 8 * (i + 1));
            }
            out.push((key, v));
        }
    }
    out
}

impl Tracker {
    /// A run of `pid` began at `time` on a socket of `netns`; `who` is
    /// its process now.
    pub fn begin(&mut self, key: u64, netns: u32, time: i64, pid: u32, who: Who) {
        if self.open.len() >= MAX_WHO {
            // Forgetting costs a quiet run's snapshot line; its end (next
            // call, close) still writes it.
            self.open.clear();
        }
        self.open.insert(key, (netns, time));
        if self.who.len() >= MAX_WHO {
            // Forgetting costs only the comm of runs open across.
            self.who.clear();
        }
        if self.by_pid.len() >= MAX_WHO {
            self.by_pid.clear();
        }
        if who.start_time.is_some() {
            self.by_pid.insert(pid, who.clone());
        }
        self.who.insert((key, time), who);
    }

    /// A run the program ended: its line, less what a snapshot already
    /// wrote of it; `now` gives the facts of a run whose start was not seen.
    pub fn ended(
        &mut self,
        ids: &SkIds,
        key: u64,
        family: u8,
        old: (u64, i64, i64, u64, u64),
        now: impl FnOnce(u32) -> Who,
        out: &mut Vec<SockUseRecord>,
    ) {
        let (owner, first, last, bytes, calls) = old;
        if self.open.get(&key).is_some_and(|o| o.1 == first) {
            self.open.remove(&key);
        }
        let who = self
            .who
            .remove(&(key, first))
            .unwrap_or_else(|| now((owner >> 32) as u32));
        let (mut first, mut bytes, mut calls) = (first, bytes, calls);
        if let Some(&(f, b, c, l)) = self.flushed.get(&key) {
            if f == first {
                self.flushed.remove(&key);
                if calls <= c {
                    return;
                }
                // The calls after the snapshot's read: their first call
                // came after the last one written.
                (first, bytes, calls) = (l.max(first), bytes.saturating_sub(b), calls - c);
            }
        }
        out.push(run_line(
            ids,
            key,
            family,
            owner,
            first,
            last,
            calls,
            bytes,
            Some(&who),
        ));
    }

    /// The network namespaces a snapshot at `now` reads: those of the
    /// runs not yet written whole that went quiet (all of them with
    /// `all`). A run still in use is cut by the program within a second
    /// and written then.
    pub fn quiet(&self, now: i64, all: bool) -> BTreeSet<u32> {
        self.open
            .values()
            .filter(|(_, first)| all || *first <= now.saturating_sub(QUIET_NS))
            .map(|(netns, _)| *netns)
            .collect()
    }

    /// The runs of `netns` are no longer waited for (its walk failed).
    pub fn forget(&mut self, netns: u32) {
        self.open.retain(|_, (ns, _)| *ns != netns);
    }

    /// A snapshot, the epoch already bumped: the runs `values` of the
    /// sockets of `netns` still open are written as they stand.
    pub fn flush(
        &mut self,
        ids: &SkIds,
        netns: u32,
        values: impl Iterator<Item = (u64, RunValue)>,
        out: &mut Vec<SockUseRecord>,
    ) {
        if self.flushed.len() >= MAX_WHO {
            self.flushed.clear();
        }
        // Runs of this namespace begun after the epoch bump stay open.
        let mut later = HashSet::new();
        let mut open: Vec<(i64, SockUseRecord)> = Vec::new();
        for (key, v) in values {
            let [_, owner, first, last, bytes, calls, base_bytes, base_calls, epoch, _, family] = v;
            let (first, last) = (ns(first), ns(last));
            let calls = calls.saturating_sub(base_calls);
            let bytes = bytes.saturating_sub(base_bytes);
            // Begun after the new epoch: the next snapshot's.
            if epoch == self.epoch {
                later.insert(key);
                continue;
            }
            if owner == 0 || calls == 0 {
                continue;
            }
            let family = if family == 6 { 6 } else { 4 };
            let (from, b0, c0) = match self.flushed.get(&key) {
                Some(&(f, b, c, l)) if f == first => (l.max(first), b, c),
                _ => (first, 0, 0),
            };
            self.flushed.insert(key, (first, bytes, calls, last));
            if calls <= c0 {
                continue;
            }
            open.push((
                from,
                run_line(
                    ids,
                    key,
                    family,
                    owner,
                    from,
                    last,
                    calls - c0,
                    bytes.saturating_sub(b0),
                    self.who
                        .get(&(key, first))
                        .or_else(|| self.by_pid.get(&((owner >> 32) as u32))),
                ),
            ));
        }
        open.sort_by_key(|(t, _)| *t);
        out.extend(open.into_iter().map(|(_, r)| r));
        // Every other run of the namespace is now written whole, or has
        // no storage left to read.
        self.open
            .retain(|key, (ns, _)| *ns != netns || later.contains(key));
    }
}

/// The inode of the initial pid namespace (`PROC_PID_INIT_INO`, fixed in
/// the kernel): `/proc/self/ns/pid` of a process outside any pid namespace
/// reads `pid:[4026531836]`, whatever /proc is mounted.
const INIT_PID_NS: u64 = 0xEFFF_FFFC;

/// The inode in a `/proc/self/ns/pid` link target (`pid:[N]`); `None`
/// when it does not parse.
fn pid_ns_inode(link: &str) -> Option<u32> {
    link.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()
}

/// The inode of the recorder's pid namespace, and whether it is another
/// than the initial one (then the program names tasks by their pids in
/// it, as the recorder's /proc and perf samples do).
pub fn own_pid_ns() -> Result<(u32, bool), String> {
    let link = std::fs::read_link("/proc/self/ns/pid")
        .map_err(|e| format!("/proc/self/ns/pid: {}", crate::sys::errno_name(&e)))?;
    let inum = pid_ns_inode(&link.to_string_lossy())
        .ok_or_else(|| format!("/proc/self/ns/pid: not a pid namespace: {link:?}"))?;
    Ok((inum, u64::from(inum) != INIT_PID_NS))
}

/// Loads and attaches the programs (tracepoint ids from `events_dir`, the
/// tracefs `events` directory). `self_pid`'s own calls are skipped.
pub fn load(events_dir: &Path, self_pid: u32) -> Result<(Kernel, Ring, Runs), String> {
    // The recorder's samples and /proc name pids in its own pid
    // namespace; the program is told which and names tasks the same way
    // (tasks outside it are not seen, as in /proc). It finds the
    // namespace's level itself: the kernel tells no task inside a pid
    // namespace where its parent is.
    let (inum, child) = own_pid_ns()?;
    let level = if child { LEVEL_UNKNOWN } else { 0 };
    // The kernel's BTF types the tracepoints' arguments and relocates
    // the few struct fields the programs read (parsed once, then dropped).
    let btf = Btf::from_sys_fs()
        .map_err(|e| format!("the kernel's BTF (/sys/kernel/btf/vmlinux): {e}"))?;
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .load(OBJECT)
        .map_err(|e| format!("loading the BPF object: {e}"))?;
    let mut conf: Array<MapData, u64> = ebpf
        .take_map("conf")
        .ok_or("no conf map")?
        .try_into()
        .map_err(|e| format!("conf map: {e}"))?;
    for (slot, value) in [
        (CONF_SELF, self_pid),
        (CONF_PIDNS_LEVEL, level),
        (CONF_PIDNS_INUM, inum),
    ] {
        conf.set(slot, u64::from(value), 0)
            .map_err(|e| format!("conf map: {e}"))?;
    }
    let ring: RingBuf<MapData> = ebpf
        .take_map("events")
        .ok_or("no events map")?
        .try_into()
        .map_err(|e| format!("ring buffer: {e}"))?;
    for (prog, tp) in BTF_PROGRAMS {
        program::<BtfTracePoint>(&mut ebpf, prog)?
            .load(tp, &btf)
            .map_err(|e| verifier_why(prog, &e))?;
    }
    let it = program::<Iter>(&mut ebpf, ITER_PROGRAM)?;
    it.load("tcp", &btf)
        .map_err(|e| verifier_why(ITER_PROGRAM, &e))?;
    let iter = ksys::bpf::iter_link(it.fd().map_err(|e| format!("{ITER_PROGRAM}: {e}"))?.as_fd())
        .map_err(|e| format!("linking {ITER_PROGRAM}: {}", crate::sys::errno_name(&e)))?;
    drop(btf);
    let (prog, group, name) = EXEC_PROGRAM;
    let id_path = events_dir.join(group).join(name).join("id");
    let id: u64 = std::fs::read_to_string(&id_path)
        .map_err(|e| format!("{}: {}", id_path.display(), crate::sys::errno_name(&e)))?
        .trim()
        .parse()
        .map_err(|_| format!("{}: not a number", id_path.display()))?;
    let p = program::<TracePoint>(&mut ebpf, prog)?;
    p.load().map_err(|e| verifier_why(prog, &e))?;
    let fd = p.fd().map_err(|e| format!("{prog}: {e}"))?;
    let hook = ksys::open_tracepoint_counter(id)
        .map_err(|e| format!("{group}:{name}: {}", crate::sys::errno_name(&e)))?;
    ksys::set_bpf(&hook, fd.as_fd())
        .map_err(|e| format!("attaching {prog}: {}", crate::sys::errno_name(&e)))?;
    ksys::enable(&hook).map_err(|e| format!("enable: {}", crate::sys::errno_name(&e)))?;
    // The exec program first: a run never spans an exec it missed.
    for (prog, _) in BTF_PROGRAMS {
        program::<BtfTracePoint>(&mut ebpf, prog)?
            .attach()
            .map_err(|e| format!("attaching {prog}: {e}"))?;
    }
    let self_netns = std::fs::metadata("/proc/self/ns/net")
        .map(|m| m.ino())
        .unwrap_or(0);
    Ok((
        Kernel {
            _ebpf: ebpf,
            _hooks: vec![hook],
        },
        Ring { ring },
        Runs {
            conf,
            iter,
            self_netns,
            lost_seen: 0,
            track: Tracker::default(),
        },
    ))
}

/// The object's program `name`, as the kind `T` it must be.
fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| format!("no program {name}"))?
        .try_into()
        .map_err(|e| format!("{name}: {e}"))
}

/// A load error, with the verifier's last lines when it refused.
fn verifier_why(prog: &str, e: &aya::programs::ProgramError) -> String {
    match e {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let tail: Vec<&str> = log.lines().rev().take(3).collect();
            format!(
                "{prog}: {}; verifier: {}",
                crate::sys::errno_name(io_error),
                tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
            )
        }
        other => format!("{prog}: {other}"),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn child_pid_namespace_from_its_link() {
        assert_eq!(pid_ns_inode("pid:[4026531836]"), Some(INIT_PID_NS as u32));
        assert_eq!(pid_ns_inode("pid:[4026532305]"), Some(4026532305));
        assert_eq!(pid_ns_inode("net:[4026531840]"), None);
        assert_eq!(pid_ns_inode("pid:[99999999999]"), None);
    }

    use super::*;

    fn rec(kind: u32, key: u64, family: u16, old: [u64; 5], owner: u64, time: u64) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&key.to_ne_bytes());
        b.extend_from_slice(&kind.to_ne_bytes());
        b.extend_from_slice(&family.to_ne_bytes());
        b.extend_from_slice(&6u16.to_ne_bytes());
        for v in old {
            b.extend_from_slice(&v.to_ne_bytes());
        }
        b.extend_from_slice(&owner.to_ne_bytes());
        b.extend_from_slice(&time.to_ne_bytes());
        b.extend_from_slice(&NS.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b
    }

    /// A network namespace inode.
    const NS: u32 = 4026531840;

    #[test]
    fn ring_records_decode() {
        let owner = (10u64 << 32) | 11;
        let r = rec(K_CUT, 0x1001, 4, [owner, 5, 9, 300, 3], 12 << 32 | 12, 20);
        assert_eq!(r.len(), REC_LEN);
        assert_eq!(
            decode(&r),
            Some(KernelRecord::Cut {
                key: 0x1001,
                family: 4,
                old: Some((owner, 5, 9, 300, 3)),
                owner: 12 << 32 | 12,
                time: 20,
                netns: NS,
            })
        );
        // The first run of a socket: nothing ended.
        let r = rec(K_CUT, 0x1000, 6, [0, 0, 0, 0, 0], owner, 1);
        assert!(matches!(
            decode(&r),
            Some(KernelRecord::Cut { old: None, .. })
        ));
        let r = rec(K_CLOSE, 0x1000, 6, [owner, 1, 2, 3, 1], 77, 3);
        assert!(matches!(
            decode(&r),
            Some(KernelRecord::Cut {
                owner: 0,
                old: Some(_),
                ..
            })
        ));
        let r = rec(K_UDP, 0x2001, 4, [0, 0, 0, 512, 1], owner, 7);
        let Some(KernelRecord::Call(u)) = decode(&r) else {
            panic!("udp call");
        };
        assert_eq!(
            (u.sk, u.dir, u.proto, u.pid, u.tid, u.bytes, u.time),
            (0x2000, UseDir::Send, 17, 10, 11, 512, 7)
        );
        assert_eq!(decode(&r[..40]), None, "short");
        assert_eq!(decode(&rec(9, 1, 4, [0; 5], 1, 1)), None, "unknown kind");
        assert_eq!(decode(&rec(K_NOTE, 1, 3, [0; 5], 1, 1)), None, "bad family");
    }

    fn who(comm: &str) -> Who {
        Who {
            start_time: Some(1),
            comm: Some(comm.into()),
        }
    }

    /// A map value: owner, first, last, cumulative bytes and calls, the
    /// run's base, its epoch.
    fn value(
        owner: u64,
        first: u64,
        last: u64,
        cum: (u64, u64),
        base: (u64, u64),
        epoch: u64,
    ) -> RunValue {
        [
            0, owner, first, last, cum.0, cum.1, base.0, base.1, epoch, 0, 4,
        ]
    }

    #[test]
    fn kernel_runs_become_use_lines_once_across_snapshots() {
        let ids = SkIds::default();
        let mut t = Tracker::default();
        let mut out = Vec::new();
        let a = (10u64 << 32) | 11;
        let b = (20u64 << 32) | 20;
        // Process 10 begins a run on send key 0x1001 at 100.
        t.begin(0x1001, NS, 100, 10, who("a"));
        // Process 20 calls at 300: the run 100..250 of 3 calls, 30 bytes ends.
        t.ended(
            &ids,
            0x1001,
            4,
            (a, 100, 250, 30, 3),
            |_| who("late"),
            &mut out,
        );
        t.begin(0x1001, NS, 300, 20, who("b"));
        assert_eq!(out.len(), 1);
        let r = &out[0];
        assert_eq!(
            (r.pid, r.tid, r.first_ns, r.last_ns, r.calls, r.bytes),
            (Some(10), Some(11), Some(100), Some(250), Some(3), Some(30))
        );
        assert_eq!(
            (r.comm.as_deref(), r.dir, r.proto.as_str()),
            (Some("a"), Some(UseDir::Send), "tcp")
        );
        assert_eq!(r.sk, ids.id(0x1000), "the id of the socket, not of the key");
        // A snapshot while process 20's run is open: 2 calls, 8 bytes so
        // far (cumulative 38 / 5 since the socket's first call).
        t.epoch += 1;
        let vals = vec![
            (0x1001, value(b, 300, 400, (38, 5), (30, 3), 0)),
            // Begun after the epoch bump: the next snapshot's.
            (0x2001, value(b, 500, 500, (1, 1), (0, 0), 1)),
            // No call since its last run ended.
            (0x3000, value(a, 50, 60, (9, 2), (9, 2), 0)),
        ];
        t.flush(&ids, NS, vals.into_iter(), &mut out);
        assert_eq!(out.len(), 2);
        let r = &out[1];
        assert_eq!(
            (
                r.pid,
                r.first_ns,
                r.last_ns,
                r.calls,
                r.bytes,
                r.comm.as_deref()
            ),
            (Some(20), Some(300), Some(400), Some(2), Some(8), Some("b"))
        );
        // The next call (epoch changed) ends that run in the kernel with
        // one more call made before it saw the new epoch: only that call
        // is written again.
        t.ended(
            &ids,
            0x1001,
            4,
            (b, 300, 410, 12, 3),
            |_| who("late"),
            &mut out,
        );
        assert_eq!(out.len(), 3);
        let r = &out[2];
        assert_eq!(
            (r.first_ns, r.last_ns, r.calls, r.bytes),
            (Some(400), Some(410), Some(1), Some(4))
        );
        // A run written whole by a snapshot is not written again.
        t.epoch += 1;
        t.begin(0x4000, NS, 700, 10, who("a"));
        t.flush(
            &ids,
            NS,
            [(0x4000, value(a, 700, 720, (5, 2), (0, 0), 1))].into_iter(),
            &mut out,
        );
        assert_eq!(out.len(), 4);
        t.ended(
            &ids,
            0x4000,
            4,
            (a, 700, 720, 5, 2),
            |_| who("late"),
            &mut out,
        );
        assert_eq!(out.len(), 4);
        // A snapshot before the record of a run's beginning was read: the
        // facts last given for its pid.
        t.epoch += 1;
        t.flush(
            &ids,
            NS,
            [(0x6001, value(b, 800, 810, (3, 1), (0, 0), 2))].into_iter(),
            &mut out,
        );
        assert_eq!(out.len(), 5);
        assert_eq!((out[4].pid, out[4].comm.as_deref()), (Some(20), Some("b")));
        out.pop();
        // A run whose beginning was not seen takes the process's facts now.
        t.ended(
            &ids,
            0x5000,
            6,
            (a, 900, 950, 7, 1),
            |_| who("late"),
            &mut out,
        );
        assert_eq!(out[4].comm.as_deref(), Some("late"));
        assert_eq!((out[4].family, out[4].dir), (Some(6), Some(UseDir::Recv)));
    }

    #[test]
    fn a_snapshot_reads_the_namespaces_of_quiet_runs_only() {
        let ids = SkIds::default();
        let mut t = Tracker::default();
        let mut out = Vec::new();
        let a = (10u64 << 32) | 10;
        let s = 1_000_000_000;
        // Two runs in two namespaces, begun at 1 s and 3 s.
        t.begin(0x1001, 7, s, 10, who("a"));
        t.begin(0x2000, 8, 3 * s, 10, who("a"));
        // At 3.2 s the first is quiet (a run in use is cut within 1 s).
        assert_eq!(t.quiet(3 * s + s / 5, false), BTreeSet::from([7]));
        assert_eq!(t.quiet(3 * s + s / 5, true), BTreeSet::from([7, 8]));
        // Namespace 7 read: its run is written and no longer pending; a
        // run begun there after the epoch bump stays open.
        t.epoch += 1;
        t.begin(0x3001, 7, 3 * s + s / 10, 10, who("a"));
        t.flush(
            &ids,
            7,
            [
                (0x1001, value(a, s as u64, s as u64 + 5, (9, 2), (0, 0), 0)),
                (
                    0x3001,
                    value(a, 3 * s as u64, 3 * s as u64, (1, 1), (0, 0), 1),
                ),
            ]
            .into_iter(),
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].calls, out[0].bytes), (Some(2), Some(9)));
        assert_eq!(t.quiet(10 * s, false), BTreeSet::from([7, 8]));
        assert!(t.open.contains_key(&0x3001) && !t.open.contains_key(&0x1001));
        // A run that ends is no longer pending either.
        t.ended(
            &ids,
            0x2000,
            4,
            (a, 3 * s, 3 * s, 4, 1),
            |_| who("a"),
            &mut out,
        );
        assert_eq!(t.quiet(10 * s, true), BTreeSet::from([7]));
        // A namespace that cannot be walked is not tried again.
        t.forget(7);
        assert!(t.quiet(10 * s, true).is_empty());
    }

    #[test]
    fn an_iterator_walk_parses_into_runs() {
        // One socket: reads never called (key 0), sends of key 0x1001.
        let mut b = vec![0u8; SK_RUNS_LEN];
        let send = &mut b[RUN_WORDS * 8..];
        for (i, w) in [0x1001u64, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 4, 77, 99]
            .iter()
            .enumerate()
        {
            send[8 * i..8 * i + 8].copy_from_slice(&w.to_ne_bytes());
        }
        b.extend_from_slice(&[1, 2, 3]); // a torn tail is ignored
        assert_eq!(
            parse_walk(&b),
            vec![(0x1001, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 4])]
        );
    }

    #[test]
    fn the_object_is_embedded() {
        // An ELF object for BPF (EM_BPF = 247), little-endian 64-bit.
        assert_eq!(&OBJECT[..4], b"\x7fELF");
        assert_eq!(u16::from_le_bytes([OBJECT[18], OBJECT[19]]), 247);
    }
}
