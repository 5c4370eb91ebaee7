//! What the event sources accumulate between two snapshots ([`Batch`],
//! bounded), and the per-pid cache ([`Pids`]) through which a source reads
//! the identity of each process it names. Shared by the event reader
//! (`events`) and the capture-triggered lookup (`lookup`).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::layout::{EventRecord, ProcessRecord, SockUseRecord, TaskRecord};
use crate::live;
use crate::sockuse::Runs;

/// Most events kept between two snapshots; beyond, they are counted as
/// dropped (and said so in the manifest).
pub(crate) const MAX_PENDING_EVENTS: usize = 200_000;
/// Most process identities kept between two snapshots.
pub(crate) const MAX_PENDING_PROCS: usize = 50_000;
/// Connects whose source port is not known yet, at most.
pub(crate) const MAX_PENDING_CONNECTS: usize = 65_536;

/// Most `sockuse.jsonl` and `tasks.jsonl` lines kept between two
/// snapshots; beyond, they are counted as dropped.
pub(crate) const MAX_PENDING_USES: usize = 400_000;

/// How often a process's title is checked at its calls follows how long it
/// has kept it: a title set a moment ago (a forked server's child, sshd's
/// session) may change again soon, one kept for a minute rarely does. The
/// command line (one small read: setproctitle shows there) is read again
/// at a call once `age / TITLE_BACKOFF` has passed since the last read,
/// within [`TITLE_CHECK_MIN`, `TITLE_CHECK_MAX`], and the status (comm and
/// uids: a rename, a privilege drop; a larger read) once `age /
/// STATUS_BACKOFF` has, within [`TITLE_REREAD_MIN`, `TITLE_REREAD_MAX`];
/// the whole identity is read only when one of them changed. A busy server
/// that keeps its title thus costs a few small reads a second in all, not
/// a few per process.
const TITLE_BACKOFF: u32 = 8;
/// See [`TITLE_BACKOFF`].
const STATUS_BACKOFF: u32 = 4;
/// Least time between two command-line reads of one process.
const TITLE_CHECK_MIN: Duration = Duration::from_millis(10);
/// Most time between two command-line reads of a calling process.
const TITLE_CHECK_MAX: Duration = Duration::from_secs(5);
/// Least and most time between two status reads of a calling process.
const TITLE_REREAD_MIN: Duration = Duration::from_secs(5);
const TITLE_REREAD_MAX: Duration = Duration::from_secs(60);
/// While a title is younger than this, a call after a pause of the process
/// ([`TITLE_GAP_NS`]) or on a socket new to it is checked too, at most
/// every [`TITLE_CHECK_MIN`]: a title changes between bursts of I/O (sshd's
/// session sets it while it starts the command, then relays).
const TITLE_YOUNG: Duration = Duration::from_secs(1);
/// A pause of a process's calls this long (ns) makes its next call worth a
/// check while its title is young.
pub(crate) const TITLE_GAP_NS: i64 = 2_000_000;

/// What the recorder knows of a pid named by an event.
#[derive(Debug, Clone)]
pub(crate) struct PidInfo {
    pub(crate) start_time: u64,
    pub(crate) netns: Option<u64>,
    pub(crate) comm: String,
    pub(crate) exited: Option<Instant>,
    /// When the status (comm, uids) was last read, and the title the
    /// process had at the last whole read (comm, cmdline, uid, euid).
    read_at: Instant,
    title: (String, Vec<String>, u32, Option<u32>),
    /// When the command line alone was last read.
    checked_at: Instant,
    /// When the title was first read or last seen changed.
    titled_at: Instant,
    /// The `Name:` and `Uid:` lines of the status at the last read of it
    /// (empty: not read yet).
    status_key: Vec<u8>,
    /// CLOCK_MONOTONIC ns of the latest call seen (as far as checked).
    last_call_ns: i64,
    /// An identity read at the process's fork, written at its first call
    /// or event (a forked child that never execs has no other record, and
    /// may be gone, or a zombie without command line, by its first call).
    pending: Option<Box<ProcessRecord>>,
}

impl PidInfo {
    /// `rec`, read at `now`, is the process's title from now on.
    fn titled(&mut self, rec: &ProcessRecord, now: Instant) {
        self.title = (rec.comm.clone(), rec.cmdline.clone(), rec.uid, rec.euid);
        self.comm = rec.comm.clone();
        self.read_at = now;
        self.checked_at = now;
        self.titled_at = now;
    }
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
    /// TCP state changes the kernel reported (any socket).
    pub tcp_changes: u64,
    /// Sockets looked up whose holder was not found (closed before its
    /// process' fds were read).
    pub unowned: u64,
    /// Packets the lookup's packet socket dropped (its queue was full):
    /// their flows were not looked up.
    pub packets_dropped: u64,
    /// Receive errors on the lookup's packet socket (ENETDOWN when its
    /// interface went down or away): lookups may have stopped.
    pub packet_errors: u64,
    /// Network namespaces whose quiet runs the snapshot could not read
    /// (each with why): those runs are written only when they end.
    pub walk_errors: Vec<String>,
}

/// The per-pid facts cache, and the identities read for it.
pub(crate) struct Pids {
    pub(crate) map: HashMap<u32, PidInfo>,
    buf: Vec<u8>,
    /// uid -> name from the host's /etc/passwd, read once.
    users: HashMap<u32, String>,
    /// Time of each pid's last exec (also when its identity could not be
    /// read): runs are cut there.
    pub(crate) execs: HashMap<u32, i64>,
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

/// Whether a calling process's command line is due for a check: its title
/// is `age` old, it was last checked `since` ago, and this call is on a
/// socket new to it or follows a pause (`prompt`).
fn cmdline_due(age: Duration, since: Duration, prompt: bool) -> bool {
    since >= (age / TITLE_BACKOFF).clamp(TITLE_CHECK_MIN, TITLE_CHECK_MAX)
        || (prompt && age < TITLE_YOUNG && since >= TITLE_CHECK_MIN)
}

/// Whether a calling process's status (comm, uids) is due for a read: its
/// title is `age` old, its status was last read `since` ago.
fn status_due(age: Duration, since: Duration) -> bool {
    since >= (age / STATUS_BACKOFF).clamp(TITLE_REREAD_MIN, TITLE_REREAD_MAX)
}

/// The lines of a /proc/PID/status that name the process's comm and uids:
/// what a rename or a privilege drop changes.
fn status_key(status: &[u8]) -> Vec<u8> {
    let mut key = Vec::new();
    for l in status.split(|&b| b == b'\n') {
        if l.starts_with(b"Name:") || l.starts_with(b"Uid:") {
            key.extend_from_slice(l);
            key.push(b'\n');
        }
    }
    key
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
    pub(crate) fn new_pair(&mut self, pid: u32, sk: u64) -> bool {
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
    pub(crate) fn learn(
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
        // A title first seen now is as old as the process when no exec
        // (or fork: a fresh start time) is known to have set it since: a
        // server running for an hour is checked at its backoff's bound at
        // once, not after the recorder has watched it for minutes.
        let titled_at = if exec_ns.is_some() {
            now
        } else {
            let boot_ns = crate::ksys::process::clock_ns(libc::CLOCK_BOOTTIME).unwrap_or(0);
            let started_ns = stat
                .start_time
                .saturating_mul(1_000_000_000 / crate::sys::clk_tck().max(1));
            let age = Duration::from_nanos((boot_ns.max(0) as u64).saturating_sub(started_ns));
            now.checked_sub(age).unwrap_or(now)
        };
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
                titled_at,
                status_key: Vec::new(),
                last_call_ns: i64::MIN,
                pending,
            },
        );
        self.map.get(&pid)
    }

    /// At a call by `pid` at `call_ns` (the first on its socket when
    /// `new_pair`): writes an identity kept since its fork; reads its
    /// command line again when due (see [`TITLE_BACKOFF`]; on a new pair or
    /// after a pause of its calls as well while its title is young), and
    /// its whole identity when that changed or is due; records the
    /// identity anew if comm, cmdline or uids changed (setproctitle,
    /// privilege drop).
    pub(crate) fn refresh(&mut self, pid: u32, new_pair: bool, call_ns: i64, batch: &mut Batch) {
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
        let age = now.duration_since(i.titled_at);
        if status_due(age, now.duration_since(i.read_at)) {
            i.read_at = now;
            if live::read_into(&format!("/proc/{pid}/status"), &mut self.buf).is_err() {
                return;
            }
            // The first status read is compared through a whole read
            // too: the process may have changed since it was learnt.
            let key = status_key(&self.buf);
            if key != i.status_key {
                i.status_key = key;
                return self.reread(pid, now, batch);
            }
        }
        if !cmdline_due(
            age,
            now.duration_since(i.checked_at),
            new_pair || after_pause,
        ) {
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
        self.reread(pid, now, batch);
    }

    /// Reads the whole identity of `pid` again after its comm, uids or
    /// command line changed, and records it if its title did.
    fn reread(&mut self, pid: u32, now: Instant, batch: &mut Batch) {
        let Some(i) = self.map.get_mut(&pid) else {
            return;
        };
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
        i.titled(&rec, now);
        rec.user = self.users.get(&rec.uid).cloned();
        Self::push(batch, rec);
    }

    /// At the first call or event of a process read at its fork: its
    /// identity read now (a forked child often changes uid or title before
    /// its first call: sshd's session), or, when it is gone or a zombie,
    /// the one read at the fork. False if there was none pending.
    pub(crate) fn settle(&mut self, pid: u32, batch: &mut Batch) -> bool {
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
            i.titled(&rec, Instant::now());
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
    pub(crate) fn retitled_at_fork(
        &mut self,
        parent: u32,
        child: u32,
        fork_ns: i64,
        batch: &mut Batch,
    ) {
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
            p.titled(&rec, Instant::now());
        }
        Self::push(batch, rec);
    }

    /// A child that exited before its identity was read at its fork (a
    /// zombie shows no exe nor command line) was still its parent's
    /// program: it takes those from the parent, read now.
    pub(crate) fn inherit(&mut self, child: u32, parent: u32) {
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

/// Appends `sockuse` lines to the batch within its bound.
pub(crate) fn push_bounded(b: &mut Batch, lines: Vec<SockUseRecord>) {
    let room = MAX_PENDING_USES.saturating_sub(b.sockuse.len());
    b.dropped += lines.len().saturating_sub(room) as u64;
    b.sockuse.extend(lines.into_iter().take(room));
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
    into.tcp_changes += std::mem::take(&mut from.tcp_changes);
    into.unowned += std::mem::take(&mut from.unowned);
    into.packets_dropped += std::mem::take(&mut from.packets_dropped);
    into.packet_errors += std::mem::take(&mut from.packet_errors);
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const S: Duration = Duration::from_secs(1);

    #[test]
    fn young_titles_are_checked_promptly_old_ones_back_off() {
        // Set a moment ago (sshd's session, a forked server's child): a
        // new socket or a pause makes the next call a check, 10 ms apart.
        assert!(cmdline_due(200 * MS, 10 * MS, true));
        assert!(!cmdline_due(200 * MS, 9 * MS, true));
        assert!(!cmdline_due(200 * MS, 20 * MS, false));
        assert!(cmdline_due(200 * MS, 25 * MS, false));
        // Kept for 16 s: every 2 s, pauses or not.
        assert!(!cmdline_due(16 * S, S, true));
        assert!(cmdline_due(16 * S, 2 * S, false));
        // Kept for an hour: every 5 s at the most.
        assert!(!cmdline_due(3600 * S, 4 * S, true));
        assert!(cmdline_due(3600 * S, 5 * S, false));
    }

    #[test]
    fn status_reads_back_off_between_5_and_60_s() {
        assert!(!status_due(MS, 4 * S));
        assert!(status_due(MS, 5 * S));
        assert!(!status_due(100 * S, 24 * S));
        assert!(status_due(100 * S, 25 * S));
        assert!(!status_due(3600 * S, 59 * S));
        assert!(status_due(3600 * S, 60 * S));
    }

    #[test]
    fn status_key_is_the_name_and_uid_lines() {
        let a = b"Name:\tsshd\nUmask:\t0022\nState:\tS\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nVmRSS:\t100 kB\n";
        let b = b"Name:\tsshd\nUmask:\t0022\nState:\tR\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nVmRSS:\t900 kB\n";
        let c = b"Name:\tsshd\nUmask:\t0022\nState:\tR\nUid:\t1000\t1000\t1000\t1000\nGid:\t0\t0\t0\t0\n";
        assert_eq!(status_key(a), b"Name:\tsshd\nUid:\t0\t0\t0\t0\n".to_vec());
        assert_eq!(
            status_key(a),
            status_key(b),
            "state and memory do not count"
        );
        assert_ne!(status_key(a), status_key(c), "a privilege drop does");
    }
}
