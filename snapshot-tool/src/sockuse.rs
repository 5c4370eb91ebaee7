//! Who sends and reads on which socket: the decoding of the
//! `sock:sock_send_length` / `sock:sock_recv_length` and
//! `sched:sched_process_fork|exec|exit` tracepoints, and the run-length
//! reduction that turns one sample per sendmsg/recvmsg into one
//! `sockuse.jsonl` line per run (docs/archive-format.md, "sockuse.jsonl").
//!
//! Everything here is pure: it works on raw tracepoint records (field
//! offsets from the tracefs `format` files) and on plain values, so the
//! reader thread in `events` only wires it to the rings.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use crate::layout::{SockUseRecord, TaskKind, TaskRecord, UseDir};
use crate::tracefmt::{Field as TpField, TpFormat};

/// Source name of the send tracepoint.
pub const SRC_SEND: &str = "tracepoint:sock:sock_send_length";
/// Source name of the receive tracepoint.
pub const SRC_RECV: &str = "tracepoint:sock:sock_recv_length";
/// Source name of the process-creation tracepoint.
pub const SRC_FORK: &str = "tracepoint:sched:sched_process_fork";
/// Source name of the exec tracepoint.
pub const SRC_EXEC: &str = "tracepoint:sched:sched_process_exec";
/// Source name of the process-exit tracepoint.
pub const SRC_EXIT: &str = "tracepoint:sched:sched_process_exit";
/// Source of a `sock` binding made from a UDP route lookup and the send
/// that followed it on the same thread.
pub const SRC_UDP_ROUTE: &str = "udp-send-route";
/// The fallback without use tracepoints: fd walks triggered by forks and
/// execs of processes holding sockets.
pub const SRC_FORK_WALK: &str = "fd-walk-on-fork-exec";

/// The kernel-side filter of the use tracepoints: IPv4 and IPv6 sockets,
/// calls that moved at least one byte.
pub const USE_FILTER: &str = "(family == 2 || family == 10) && ret > 0";

/// A run is cut when it has lasted longer than this (ns).
pub const FLUSH_NS: i64 = 1_000_000_000;
/// Most runs open at once; beyond, every open run is written out (the
/// lines stay correct, only shorter).
const MAX_OPEN_RUNS: usize = 200_000;
/// Most sockets whose last binding is remembered for de-duplication.
const MAX_BOUND: usize = 262_144;
/// A UDP send pairs with the thread's route lookup at most this long
/// after it (ns): both run inside the same sendmsg.
const ROUTE_PAIR_NS: i64 = 5_000_000;

/// trace_entry flags of interrupt context (hard IRQ, soft IRQ, NMI).
const IRQ_FLAGS: u64 = 0x08 | 0x10 | 0x40;
/// MSG_PEEK: a read that leaves the bytes in the socket.
const MSG_PEEK: u64 = 2;

/// Decoder of `sock:sock_send_length` or `sock:sock_recv_length`.
#[derive(Debug, Clone)]
pub struct LenDecoder {
    /// Tracepoint id.
    pub id: u64,
    /// Which of the two.
    pub dir: UseDir,
    flags: TpField,
    sk: TpField,
    family: TpField,
    protocol: TpField,
    ret: TpField,
    msg_flags: TpField,
}

/// One decoded send or receive call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UseSample {
    /// Kernel socket address (never written out as such).
    pub sk: u64,
    /// Send or receive.
    pub dir: UseDir,
    /// 6 (TCP) or 17 (UDP).
    pub proto: u8,
    /// 4 or 6.
    pub family: u8,
    /// Thread group of the caller.
    pub pid: u32,
    /// Thread of the caller.
    pub tid: u32,
    /// CLOCK_MONOTONIC ns.
    pub time: i64,
    /// Bytes moved.
    pub bytes: u64,
}

impl LenDecoder {
    /// Builds the decoder from the tracepoint's format.
    pub fn new(f: &TpFormat, dir: UseDir) -> Result<LenDecoder, String> {
        Ok(LenDecoder {
            id: f.id,
            dir,
            flags: f.need("common_flags")?,
            sk: f.need("sk")?,
            family: f.need("family")?,
            protocol: f.need("protocol")?,
            ret: f.need("ret")?,
            msg_flags: f.need("flags")?,
        })
    }

    /// Decodes one record; `None` for a call the run reduction does not
    /// count (another family or protocol, nothing moved, a peek, interrupt
    /// context, a short record).
    pub fn decode(&self, raw: &[u8], pid: u32, tid: u32, time: i64) -> Option<UseSample> {
        if self.flags.uint(raw)? & IRQ_FLAGS != 0 || pid == 0 {
            return None;
        }
        let family = match self.family.uint(raw)? {
            2 => 4,
            10 => 6,
            _ => return None,
        };
        let proto = match self.protocol.uint(raw)? {
            6 => 6,
            17 => 17,
            _ => return None,
        };
        let ret = self.ret.uint(raw)? as u32 as i32;
        if ret <= 0 {
            return None;
        }
        if self.dir == UseDir::Recv && self.msg_flags.uint(raw)? & MSG_PEEK != 0 {
            return None;
        }
        Some(UseSample {
            sk: self.sk.uint(raw)?,
            dir: self.dir,
            proto,
            family,
            pid,
            tid,
            time,
            bytes: ret as u64,
        })
    }
}

/// Decoders of the three scheduler tracepoints (any may be missing).
#[derive(Debug, Clone, Default)]
pub struct SchedDecoder {
    /// `sched_process_fork`: id, parent_pid, child_pid.
    pub fork: Option<(u64, TpField, TpField)>,
    /// `sched_process_exec`: id, filename (`__data_loc`), pid, old_pid.
    pub exec: Option<(u64, TpField, TpField, TpField)>,
    /// `sched_process_exit`: id and `group_dead` when the kernel has it.
    pub exit: Option<(u64, Option<TpField>)>,
    /// The tracepoints' own pid fields are in another pid namespace than
    /// the samples' (the recorder runs in a pid namespace of its own):
    /// only the samples' pids are used.
    pub foreign: bool,
}

/// One decoded scheduler event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchedEvent {
    /// A task was created: the parent's thread group and the child's tid.
    Fork {
        /// Thread group of the parent (the sampled task).
        parent: u32,
        /// Thread id of the new task.
        child: u32,
    },
    /// A successful exec.
    Exec {
        /// Thread group after the exec.
        pid: u32,
        /// Pid before it; `None` when a thread other than the group's
        /// leader exec'd and its pid cannot be given in the recorder's
        /// pid namespace.
        old_pid: Option<u32>,
        /// The file name as the tracepoint gives it.
        filename: String,
    },
    /// A task exited; `last` when its thread group is dead with it.
    Exit {
        /// Whether the whole thread group is gone.
        last: bool,
    },
}

impl SchedDecoder {
    /// Builds the fork decoder from its format.
    pub fn set_fork(&mut self, f: &TpFormat) -> Result<(), String> {
        self.fork = Some((f.id, f.need("parent_pid")?, f.need("child_pid")?));
        Ok(())
    }

    /// Builds the exec decoder from its format.
    pub fn set_exec(&mut self, f: &TpFormat) -> Result<(), String> {
        self.exec = Some((
            f.id,
            f.need("filename")?,
            f.need("pid")?,
            f.need("old_pid")?,
        ));
        Ok(())
    }

    /// Builds the exit decoder from its format.
    pub fn set_exit(&mut self, f: &TpFormat) -> Result<(), String> {
        f.need("pid")?;
        self.exit = Some((f.id, f.need("group_dead").ok()));
        Ok(())
    }

    /// Decodes one record of type `ty` sampled in task (`pid`, `tid`).
    pub fn decode(&self, ty: u64, raw: &[u8], pid: u32, tid: u32) -> Option<SchedEvent> {
        if let Some((_, parent, child)) = self.fork.as_ref().filter(|f| f.0 == ty) {
            let _ = parent.uint(raw)?;
            return Some(SchedEvent::Fork {
                parent: pid,
                child: child.uint(raw)? as u32,
            });
        }
        if let Some((_, filename, p, old)) = self.exec.as_ref().filter(|f| f.0 == ty) {
            let (p, old) = (p.uint(raw)? as u32, old.uint(raw)? as u32);
            // After an exec the task leads its group: the sample's pid is
            // its pid in the recorder's namespace.
            let (pid, old_pid) = match (self.foreign, p == old) {
                (false, _) => (p, Some(old)),
                (true, true) => (pid, Some(pid)),
                (true, false) => (pid, None),
            };
            return Some(SchedEvent::Exec {
                pid,
                old_pid,
                filename: data_loc_str(filename, raw)?,
            });
        }
        if let Some((_, group_dead)) = self.exit.as_ref().filter(|f| f.0 == ty) {
            let last = match group_dead {
                Some(g) => g.uint(raw)? != 0,
                None => pid == tid,
            };
            return Some(SchedEvent::Exit { last });
        }
        None
    }
}

/// A `__data_loc char[]` field: its 32-bit value holds the string's offset
/// (low 16 bits) and length (high 16 bits) inside the record. Cut at the
/// first NUL, lossy UTF-8, at most 4096 bytes.
fn data_loc_str(f: &TpField, raw: &[u8]) -> Option<String> {
    let v = f.uint(raw)?;
    let off = (v & 0xffff) as usize;
    let len = ((v >> 16) & 0xffff) as usize;
    let b = raw.get(off..off.checked_add(len)?)?;
    let b = b.split(|&c| c == 0).next().unwrap_or(b);
    let b = &b[..b.len().min(4096)];
    Some(String::from_utf8_lossy(b).into_owned())
}

/// A task record from a decoded scheduler event; `None` for what is not
/// written (a thread's exit that leaves its group alive).
pub fn task_record(e: &SchedEvent, mono_ns: i64, pid: u32, tid: u32) -> Option<TaskRecord> {
    let mut r = TaskRecord {
        kind: TaskKind::Exit,
        source: String::new(),
        mono_ns,
        pid,
        tid,
        parent_pid: None,
        child_pid: None,
        filename: None,
        old_pid: None,
    };
    match e {
        SchedEvent::Fork { parent, child } => {
            r.kind = TaskKind::Fork;
            r.source = SRC_FORK.into();
            r.parent_pid = Some(*parent);
            r.child_pid = Some(*child);
        }
        SchedEvent::Exec {
            pid: p,
            old_pid,
            filename,
        } => {
            r.kind = TaskKind::Exec;
            r.source = SRC_EXEC.into();
            r.pid = *p;
            r.filename = Some(filename.clone());
            r.old_pid = *old_pid;
        }
        SchedEvent::Exit { last } => {
            if !last {
                return None;
            }
            r.source = SRC_EXIT.into();
        }
    }
    Some(r)
}

/// The opaque socket ids: a keyed permutation of the kernel address (a
/// four-round Feistel network whose round function is SipHash with a
/// random key per recording), so no kernel address reaches the bundle and
/// two live sockets, which have two addresses, never share an id.
#[derive(Debug, Clone, Default)]
pub struct SkIds {
    key: RandomState,
}

impl SkIds {
    /// Rounds of the Feistel network (four make a pseudo-random permutation).
    const ROUNDS: u32 = 4;

    fn round(&self, i: u32, half: u32) -> u32 {
        self.key.hash_one((i, half)) as u32
    }

    /// The permuted value of `sk`: a bijection of u64.
    fn permute(&self, sk: u64) -> u64 {
        let (mut l, mut r) = ((sk >> 32) as u32, sk as u32);
        for i in 0..Self::ROUNDS {
            (l, r) = (r, l ^ self.round(i, r));
        }
        (u64::from(l) << 32) | u64::from(r)
    }

    /// The 16-hex-digit id of `sk`.
    pub fn id(&self, sk: u64) -> String {
        format!("{:016x}", self.permute(sk))
    }
}

/// Process facts a run carries (read when the pid was first seen).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Who {
    /// Field 22 of /proc/PID/stat.
    pub start_time: Option<u64>,
    /// comm.
    pub comm: Option<String>,
}

/// One open run.
#[derive(Debug, Clone)]
struct Run {
    rec: SockUseRecord,
    first_ns: i64,
}

/// The open runs, keyed by (socket, direction), and when each socket was
/// last bound anew.
#[derive(Debug, Default)]
pub struct Runs {
    open: HashMap<(u64, bool), Run>,
    /// Time of the last `sock` line written per socket (another tuple, or
    /// CLOSE): a freed socket's address can come back for a new socket, so
    /// a run never spans such a line.
    bound: HashMap<u64, i64>,
}

impl Runs {
    /// A `sock` line of `sk` at `mono_ns` was written: a later call on
    /// `sk` starts a new run.
    pub fn bound(&mut self, sk: u64, mono_ns: i64) {
        if self.bound.len() >= MAX_BOUND {
            // Forgetting costs only the cut of a run open across a reuse.
            self.bound.retain(|k, _| {
                self.open.contains_key(&(*k, true)) || self.open.contains_key(&(*k, false))
            });
        }
        let t = self.bound.entry(sk).or_insert(mono_ns);
        *t = (*t).max(mono_ns);
    }

    /// Adds one call; a run it ends (another process, older than the
    /// flush period, begun before the process's last exec at `exec_ns`,
    /// or before the socket's last binding) is pushed to `out`. `who` gives the facts of a new run.
    pub fn add(
        &mut self,
        u: &UseSample,
        exec_ns: Option<i64>,
        ids: &SkIds,
        out: &mut Vec<SockUseRecord>,
        who: impl FnOnce() -> Who,
    ) {
        let key = (u.sk, u.dir == UseDir::Send);
        if let Some(r) = self.open.get_mut(&key) {
            let across = |x: Option<i64>| x.is_some_and(|x| r.first_ns < x && x <= u.time);
            if r.rec.pid == Some(u.pid)
                && !across(exec_ns)
                && !across(self.bound.get(&u.sk).copied())
                && u.time.saturating_sub(r.first_ns) <= FLUSH_NS
            {
                r.rec.last_ns = Some(r.rec.last_ns.unwrap_or(u.time).max(u.time));
                r.rec.calls = Some(r.rec.calls.unwrap_or(0) + 1);
                r.rec.bytes = Some(r.rec.bytes.unwrap_or(0).saturating_add(u.bytes));
                return;
            }
            if let Some(done) = self.open.remove(&key) {
                out.push(done.rec);
            }
        }
        if self.open.len() >= MAX_OPEN_RUNS {
            self.flush(out);
        }
        let source = match u.dir {
            UseDir::Send => SRC_SEND,
            UseDir::Recv => SRC_RECV,
        };
        let proto = if u.proto == 6 { "tcp" } else { "udp" };
        let mut rec = SockUseRecord::run(
            source,
            ids.id(u.sk),
            u.dir,
            proto,
            u.family,
            u.pid,
            u.tid,
            u.time,
            u.time,
            1,
            u.bytes,
        );
        let who = who();
        rec.start_time = who.start_time;
        rec.comm = who.comm.clone();
        self.open.insert(
            key,
            Run {
                rec,
                first_ns: u.time,
            },
        );
    }

    /// Ends every open run (a snapshot boundary), oldest first.
    pub fn flush(&mut self, out: &mut Vec<SockUseRecord>) {
        let mut runs: Vec<Run> = self.open.drain().map(|(_, r)| r).collect();
        runs.sort_by_key(|r| r.first_ns);
        out.extend(runs.into_iter().map(|r| r.rec));
    }

    /// Whether no run is open.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

/// Class of a TCP state for the one-line-per-(sk, tuple, class) rule: a
/// socket's tuple is written once while it is open (whatever state it is
/// first seen complete in) and once at CLOSE, so a connection costs two
/// lines per end.
pub fn state_class(state: u64) -> u8 {
    if state == 7 {
        5
    } else {
        1
    }
}

/// TCP state name as docs/archive-format.md spells it.
pub fn state_name(state: u64) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

/// A tuple: local (ip, port), remote.
pub type Tuple = (std::net::IpAddr, u16, Option<(std::net::IpAddr, u16)>);

/// The last binding written per socket, to write each (sk, tuple, class)
/// once; and the last UDP route lookup per thread, to pair with its send.
/// The samples are read ring by ring (one ring per CPU), not in time order:
/// a thread that moved to another CPU between its route lookup and its send
/// can have its send read first, so the last unpaired UDP send per thread
/// waits for a route lookup made before it.
#[derive(Debug, Default)]
pub struct Bindings {
    last: HashMap<u64, (Tuple, u8)>,
    routes: HashMap<u32, (i64, Tuple)>,
    sends: HashMap<u32, (i64, u64)>,
}

impl Bindings {
    /// Whether a binding of `sk` to `tuple` in `class` is new (and
    /// remembers it); a CLOSE forgets the socket after its line.
    pub fn fresh(&mut self, sk: u64, tuple: &Tuple, class: u8) -> bool {
        if self
            .last
            .get(&sk)
            .is_some_and(|(t, c)| t == tuple && *c == class)
        {
            return false;
        }
        if class == 5 {
            self.last.remove(&sk);
            return true;
        }
        if self.last.len() >= MAX_BOUND {
            // Forgetting only costs a repeated line.
            self.last.clear();
        }
        self.last.insert(sk, (*tuple, class));
        true
    }

    /// A UDP route lookup of thread `tid`: the (socket, time) of the
    /// thread's send already read that it came just before (both consumed),
    /// else remembered for the thread's next send.
    pub fn route(&mut self, tid: u32, time: i64, tuple: Tuple) -> Option<(u64, i64)> {
        if let Some(&(sent, sk)) = self.sends.get(&tid) {
            if time <= sent && sent - time <= ROUTE_PAIR_NS {
                self.sends.remove(&tid);
                return Some((sk, sent));
            }
        }
        if self.routes.len() >= MAX_BOUND {
            self.routes.clear();
        }
        self.routes.insert(tid, (time, tuple));
        None
    }

    /// The binding a UDP send implies: the thread's last route lookup, if
    /// it came just before; consumed once. Without one, the send waits for
    /// a route lookup read later (see [`Bindings::route`]).
    pub fn udp_send(&mut self, u: &UseSample) -> Option<Tuple> {
        if u.dir != UseDir::Send || u.proto != 17 {
            return None;
        }
        match self.routes.remove(&u.tid) {
            Some((t, tuple)) if t <= u.time && u.time - t <= ROUTE_PAIR_NS => Some(tuple),
            other => {
                if let Some((t, tuple)) = other.filter(|(t, _)| *t > u.time) {
                    // A later lookup, read first: it is for a later send.
                    self.routes.insert(u.tid, (t, tuple));
                }
                if self.sends.len() >= MAX_BOUND {
                    self.sends.clear();
                }
                self.sends.insert(u.tid, (u.time, u.sk));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::SockUseKind;
    use crate::tracefmt::parse_format;

    const SEND_FORMAT: &str = include_str!("../testdata/tracefs/sock_send_length.format");
    const EXEC_FORMAT: &str = include_str!("../testdata/tracefs/sched_process_exec.format");
    const EXIT_FORMAT: &str = include_str!("../testdata/tracefs/sched_process_exit.format");
    const FORK_FORMAT: &str = include_str!("../testdata/tracefs/sched_process_fork.format");

    fn len_raw(sk: u64, family: u16, proto: u16, ret: i32, flags: i32) -> Vec<u8> {
        let mut r = vec![0u8; 28];
        r[8..16].copy_from_slice(&sk.to_ne_bytes());
        r[16..18].copy_from_slice(&family.to_ne_bytes());
        r[18..20].copy_from_slice(&proto.to_ne_bytes());
        r[20..24].copy_from_slice(&ret.to_ne_bytes());
        r[24..28].copy_from_slice(&flags.to_ne_bytes());
        r
    }

    #[test]
    fn send_and_recv_records_decode_and_skip_what_moved_nothing() {
        let f = parse_format(SEND_FORMAT).unwrap();
        let send = LenDecoder::new(&f, UseDir::Send).unwrap();
        let recv = LenDecoder::new(&f, UseDir::Recv).unwrap();
        let u = send.decode(&len_raw(0xffff_8880_1234_5678, 10, 17, 512, 0), 7, 8, 99);
        assert_eq!(
            u,
            Some(UseSample {
                sk: 0xffff_8880_1234_5678,
                dir: UseDir::Send,
                proto: 17,
                family: 6,
                pid: 7,
                tid: 8,
                time: 99,
                bytes: 512
            })
        );
        assert!(
            send.decode(&len_raw(1, 1, 0, 5, 0), 7, 8, 0).is_none(),
            "unix"
        );
        assert!(
            send.decode(&len_raw(1, 2, 6, -11, 0), 7, 8, 0).is_none(),
            "EAGAIN"
        );
        assert!(send.decode(&len_raw(1, 2, 6, 0, 0), 7, 8, 0).is_none());
        assert!(
            send.decode(&len_raw(1, 2, 262, 9, 0), 7, 8, 0).is_none(),
            "mptcp"
        );
        assert!(
            recv.decode(&len_raw(1, 2, 6, 9, 2), 7, 8, 0).is_none(),
            "peek"
        );
        assert!(send.decode(&len_raw(1, 2, 6, 9, 2), 7, 8, 0).is_some());
        let mut irq = len_raw(1, 2, 6, 9, 0);
        irq[2] = 0x10;
        assert!(send.decode(&irq, 7, 8, 0).is_none());
        assert!(send
            .decode(&len_raw(1, 2, 6, 9, 0)[..20], 7, 8, 0)
            .is_none());
    }

    fn use_at(sk: u64, pid: u32, time: i64, bytes: u64) -> UseSample {
        UseSample {
            sk,
            dir: UseDir::Send,
            proto: 6,
            family: 4,
            pid,
            tid: pid,
            time,
            bytes,
        }
    }

    #[test]
    fn runs_are_cut_at_owner_change_flush_period_and_boundary() {
        let ids = SkIds::default();
        let mut runs = Runs::default();
        let mut out = Vec::new();
        let who = Who {
            start_time: Some(5),
            comm: Some("a".into()),
        };
        runs.add(&use_at(1, 10, 0, 100), None, &ids, &mut out, || who.clone());
        runs.add(&use_at(1, 10, 10, 100), None, &ids, &mut out, || {
            who.clone()
        });
        runs.add(&use_at(2, 10, 20, 7), None, &ids, &mut out, || who.clone());
        assert!(out.is_empty());
        // Another process on socket 1 ends the first run.
        runs.add(&use_at(1, 11, 30, 50), None, &ids, &mut out, Who::default);
        assert_eq!(out.len(), 1);
        let r = &out[0];
        assert_eq!(r.kind, SockUseKind::Use);
        assert_eq!((r.pid, r.calls, r.bytes), (Some(10), Some(2), Some(200)));
        assert_eq!((r.first_ns, r.last_ns), (Some(0), Some(10)));
        assert_eq!(r.comm.as_deref(), Some("a"));
        assert_eq!(r.sk, ids.id(1));
        assert_eq!(r.sk.len(), 16);
        assert_ne!(r.sk, format!("{:016x}", 1), "the id is not the address");
        // Past the flush period the same process starts a new run.
        runs.add(
            &use_at(2, 10, 20 + FLUSH_NS + 1, 7),
            None,
            &ids,
            &mut out,
            || who.clone(),
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].bytes, Some(7));
        // An exec of the process between two calls cuts the run; a call
        // from before the exec (read late from another CPU) does not.
        runs.add(
            &use_at(3, 12, 100, 1),
            Some(150),
            &ids,
            &mut out,
            Who::default,
        );
        runs.add(
            &use_at(3, 12, 120, 1),
            Some(150),
            &ids,
            &mut out,
            Who::default,
        );
        assert_eq!(out.len(), 2);
        runs.add(
            &use_at(3, 12, 160, 1),
            Some(150),
            &ids,
            &mut out,
            Who::default,
        );
        assert_eq!(out.len(), 3);
        assert_eq!((out[2].pid, out[2].calls), (Some(12), Some(2)));
        out.clear();
        runs.flush(&mut out);
        assert!(runs.is_empty());
        let pids: Vec<_> = out.iter().map(|r| (r.pid, r.first_ns)).collect();
        assert_eq!(
            pids,
            [
                (Some(11), Some(30)),
                (Some(12), Some(160)),
                (Some(10), Some(20 + FLUSH_NS + 1))
            ]
        );
    }

    #[test]
    fn socket_ids_are_a_keyed_permutation() {
        let ids = SkIds::default();
        // Undoing the Feistel rounds gives the address back: the map is a
        // bijection, so two live sockets never share an id.
        let invert = |v: u64| {
            let (mut l, mut r) = ((v >> 32) as u32, v as u32);
            for i in (0..SkIds::ROUNDS).rev() {
                (l, r) = (r ^ ids.round(i, l), l);
            }
            (u64::from(l) << 32) | u64::from(r)
        };
        let mut seen = std::collections::HashSet::new();
        // Slab neighbours: addresses of sockets differ in a few low bits.
        for k in 0..20_000u64 {
            let sk = 0xffff_8880_1234_0000 + k * 64;
            let id = ids.permute(sk);
            assert_eq!(invert(id), sk);
            assert!(seen.insert(id), "two addresses, one id");
            assert_eq!(ids.id(sk), format!("{id:016x}"));
        }
        assert_ne!(ids.id(1), SkIds::default().id(1), "keyed per recording");
    }

    #[test]
    fn a_run_never_spans_a_new_binding_of_its_socket() {
        let ids = SkIds::default();
        let mut runs = Runs::default();
        let mut out = Vec::new();
        // One process, one socket address: a connection, its CLOSE at 50,
        // a new connection at the same address bound at 60.
        runs.add(&use_at(1, 10, 0, 100), None, &ids, &mut out, Who::default);
        runs.add(&use_at(1, 10, 40, 100), None, &ids, &mut out, Who::default);
        runs.bound(1, 50);
        runs.bound(1, 60);
        // A call read late from another CPU, from before the CLOSE, stays.
        runs.add(&use_at(1, 10, 45, 1), None, &ids, &mut out, Who::default);
        assert!(out.is_empty());
        runs.add(&use_at(1, 10, 70, 7), None, &ids, &mut out, Who::default);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].bytes, out[0].last_ns), (Some(201), Some(45)));
        runs.add(&use_at(1, 10, 80, 7), None, &ids, &mut out, Who::default);
        runs.flush(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!((out[1].first_ns, out[1].bytes), (Some(70), Some(14)));
        // An older binding time does not move the cut back.
        runs.bound(1, 55);
        runs.add(&use_at(1, 10, 90, 1), None, &ids, &mut out, Who::default);
        runs.add(&use_at(1, 10, 95, 1), None, &ids, &mut out, Who::default);
        runs.flush(&mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(out[2].calls, Some(2));
    }

    #[test]
    fn bindings_are_written_once_per_tuple_and_class_and_udp_pairs_on_the_thread() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let t: Tuple = (ip("10.0.0.1"), 4000, Some((ip("10.0.0.2"), 80)));
        let mut b = Bindings::default();
        assert!(b.fresh(1, &t, state_class(3)), "SYN_RECV");
        assert!(
            !b.fresh(1, &t, state_class(1)),
            "ESTABLISHED: same tuple, open"
        );
        assert!(!b.fresh(1, &t, state_class(8)), "CLOSE_WAIT");
        let other: Tuple = (ip("10.0.0.1"), 4001, Some((ip("10.0.0.2"), 80)));
        assert!(b.fresh(1, &other, state_class(1)), "a new tuple is written");
        assert!(b.fresh(1, &other, state_class(7)));
        assert!(b.fresh(1, &other, state_class(1)), "forgotten after CLOSE");
        let u = UseSample {
            proto: 17,
            ..use_at(9, 3, 1_000, 10)
        };
        b.route(3, 900, t);
        assert_eq!(b.udp_send(&UseSample { tid: 4, ..u }), None, "other thread");
        assert_eq!(b.udp_send(&u), Some(t));
        assert_eq!(b.udp_send(&u), None, "consumed");
        b.route(3, 1_000 - ROUTE_PAIR_NS - 1, t);
        assert_eq!(b.udp_send(&u), None, "too old");
        assert_eq!(b.route(3, 900, t), Some((u.sk, 1_000)), "the send waited");
        b.route(3, 900, t);
        assert_eq!(b.udp_send(&UseSample { proto: 6, ..u }), None, "tcp");
    }

    #[test]
    fn a_udp_send_read_before_its_route_lookup_is_still_bound() {
        // The thread moved to another CPU between its route lookup and its
        // send, whose ring was read first.
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let t: Tuple = (ip("10.0.0.1"), 4000, Some((ip("10.0.0.2"), 53)));
        let mut b = Bindings::default();
        let u = UseSample {
            proto: 17,
            ..use_at(9, 3, 1_000, 10)
        };
        assert_eq!(b.udp_send(&u), None);
        assert_eq!(b.route(4, 990, t), None, "another thread's lookup");
        assert_eq!(b.route(3, 1_001, t), None, "a lookup after the send");
        assert_eq!(b.route(3, 990, t), Some((u.sk, 1_000)));
        assert_eq!(b.route(3, 990, t), None, "paired once");
        // A later lookup read before an earlier send stays for its own send.
        let mut b = Bindings::default();
        assert_eq!(b.route(3, 2_000, t), None);
        assert_eq!(b.udp_send(&u), None);
        let later = UseSample { time: 2_010, ..u };
        assert_eq!(b.udp_send(&later), Some(t));
    }

    #[test]
    fn sched_records_decode() {
        let mut d = SchedDecoder::default();
        d.set_fork(&parse_format(FORK_FORMAT).unwrap()).unwrap();
        d.set_exec(&parse_format(EXEC_FORMAT).unwrap()).unwrap();
        d.set_exit(&parse_format(EXIT_FORMAT).unwrap()).unwrap();
        let (fork_id, exec_id, exit_id) = (
            d.fork.as_ref().unwrap().0,
            d.exec.as_ref().unwrap().0,
            d.exit.as_ref().unwrap().0,
        );
        assert_eq!(d.decode(1, &[0u8; 40], 1, 1), None, "another tracepoint");
        // fork: parent_pid at 12, child_pid at 20.
        let mut raw = vec![0u8; 24];
        raw[12..16].copy_from_slice(&100i32.to_ne_bytes());
        raw[20..24].copy_from_slice(&123i32.to_ne_bytes());
        let e = d.decode(fork_id, &raw, 100, 101).unwrap();
        assert_eq!(
            e,
            SchedEvent::Fork {
                parent: 100,
                child: 123
            }
        );
        let t = task_record(&e, 5, 100, 101).unwrap();
        assert_eq!(
            (t.kind, t.child_pid, t.parent_pid),
            (TaskKind::Fork, Some(123), Some(100))
        );
        // exec: filename __data_loc at 8 -> string at 20, pid 12, old_pid 16.
        let mut raw = vec![0u8; 20];
        let name = b"/usr/bin/head\0";
        let loc = 20u32 | ((name.len() as u32) << 16);
        raw[8..12].copy_from_slice(&loc.to_ne_bytes());
        raw[12..16].copy_from_slice(&55i32.to_ne_bytes());
        raw[16..20].copy_from_slice(&56i32.to_ne_bytes());
        raw.extend_from_slice(name);
        let e = d.decode(exec_id, &raw, 55, 55).unwrap();
        let t = task_record(&e, 6, 55, 55).unwrap();
        assert_eq!(t.filename.as_deref(), Some("/usr/bin/head"));
        assert_eq!((t.pid, t.old_pid), (55, Some(56)));
        // Fields of the initial pid namespace, samples of the recorder's:
        // the sample's pid; the old one only when it is the same task.
        let mut ns = d.clone();
        ns.foreign = true;
        let e = ns.decode(exec_id, &raw, 7, 7).unwrap();
        let t = task_record(&e, 6, 7, 7).unwrap();
        assert_eq!((t.pid, t.old_pid), (7, None));
        raw[16..20].copy_from_slice(&55i32.to_ne_bytes());
        let e = ns.decode(exec_id, &raw, 7, 7).unwrap();
        let t = task_record(&e, 6, 7, 7).unwrap();
        assert_eq!((t.pid, t.old_pid), (7, Some(7)));
        raw[16..20].copy_from_slice(&56i32.to_ne_bytes());
        // A data_loc pointing past the record is refused, not a panic.
        raw[8..12].copy_from_slice(&(200u32 | (5 << 16)).to_ne_bytes());
        assert_eq!(d.decode(exec_id, &raw, 55, 55), None);
        // exit: group_dead at 32.
        let mut raw = vec![0u8; 33];
        assert_eq!(
            d.decode(exit_id, &raw, 7, 8),
            Some(SchedEvent::Exit { last: false })
        );
        assert!(task_record(&SchedEvent::Exit { last: false }, 1, 7, 8).is_none());
        raw[32] = 1;
        let t = task_record(&d.decode(exit_id, &raw, 7, 8).unwrap(), 1, 7, 8).unwrap();
        assert_eq!((t.kind, t.pid), (TaskKind::Exit, 7));
    }
}
