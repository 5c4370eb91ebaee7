//! The recorder: one snapshot per tick, change-driven, appended to tar
//! archives; the bundle's manifest and hashes around it. A recording's
//! stages, from the checks to the sealed bundle, and the values that say
//! how it ended, are in `session` ([`run`], [`Outcome`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::archive::ArchiveWriter;
use crate::batch::Batch;
use crate::bundle::{self, ErrorSummary};
use crate::capture::{Method, Rotate};
use crate::delta::{self, FdEntry, FdState, FdStatus};
use crate::events::{self, EventSources};
use crate::layout::{
    self, ByteOrder, FdWalk, HostInfo, Manifest, NetnsEntry, Privileges, ProcessRecord,
    RecordError, SnapshotKind, SnapshotMeta, SourceInfo, TableEntry, TableStored, NET_TABLES,
};
use crate::live;
use crate::procfs::{self, StatFields};
use crate::sys;

mod session;

pub use session::{
    run, Custody, EvidenceLost, Finished, Loss, Notice, NoticeSink, Outcome, Sealed, WriteStop,
};

/// Most errors listed in one snapshot's meta; the rest are summed into one.
const MAX_META_ERRORS: usize = 200;

/// Everything `record` and `once` need.
#[derive(Debug, Clone)]
pub struct Config {
    /// Output directory (created if absent, must be empty).
    pub out: PathBuf,
    /// Target time between snapshots.
    pub interval: Duration,
    /// Interface to capture on, if the recorder captures.
    pub iface: Option<String>,
    /// Capture filter (tcpdump syntax).
    pub filter: Option<String>,
    /// Which capture runs (`--capture`).
    pub capture: Method,
    /// Capture file rotation.
    pub rotate: Rotate,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Time between two heartbeat lines on a terminal (`--heartbeat`; zero:
    /// none).
    pub heartbeat: Duration,
    /// CPU budget, percent of one core.
    pub max_cpu: Option<f64>,
    /// CPU nice value (`--nice`).
    pub nice: i32,
    /// A keyframe every this many snapshots.
    pub keyframe_every: u64,
    /// A full fd walk at least this often.
    pub full_walk: Duration,
    /// Archive rotation size.
    pub archive_bytes: u64,
    /// Single snapshot (`once`).
    pub once: bool,
    /// Which evidence sources to try (`--sources`).
    pub sources: SourcesMode,
    /// Time between snapshots while tracepoints name socket owners
    /// (`--event-interval`).
    pub event_interval: Duration,
    /// Full fd walk period while tracepoints name socket owners.
    pub event_full_walk: Duration,
    /// The command line, for the manifest.
    pub argv: Vec<String>,
    /// Where to append the custody record when recording stops
    /// (`--custody-log`).
    pub custody_log: Option<PathBuf>,
    /// Always-on recording: delete the oldest capture files and archives
    /// to stay within these (`--max-size`, `--keep`); see [`crate::ring`].
    pub ring: crate::ring::Limits,
}

/// Default time between snapshots. Measured (docs/recorder.md): 250 ms saw
/// 99 % of 200 processes living 0.5 s with one TCP connection each, as
/// 100 ms did, for half the CPU; 500 ms saw 85 %.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(250);
/// Default full fd walk period.
pub const DEFAULT_FULL_WALK: Duration = Duration::from_secs(2);
/// Default keyframe period, in snapshots.
pub const DEFAULT_KEYFRAME_EVERY: u64 = 300;
/// Default archive rotation size, MiB.
pub const DEFAULT_ARCHIVE_MB: u64 = 64;
/// Default CPU nice value: yield to the server being watched.
pub const DEFAULT_NICE: i32 = 19;
/// Default time between snapshots while tracepoints name socket owners
/// (docs/recorder.md has the measurements).
pub const DEFAULT_EVENT_INTERVAL: Duration = Duration::from_secs(5);
/// Default full fd walk period while tracepoints name socket owners.
pub const DEFAULT_EVENT_FULL_WALK: Duration = Duration::from_secs(30);

impl Config {
    /// Recording into `out` with the defaults: no capture, no time limit,
    /// no heartbeat, no CPU cap, /proc polled, not a single snapshot.
    pub fn new(out: PathBuf) -> Config {
        Config {
            out,
            interval: DEFAULT_INTERVAL,
            iface: None,
            filter: None,
            capture: Method::Native,
            rotate: Rotate::None,
            duration: None,
            heartbeat: Duration::ZERO,
            max_cpu: None,
            nice: DEFAULT_NICE,
            keyframe_every: DEFAULT_KEYFRAME_EVERY,
            full_walk: DEFAULT_FULL_WALK,
            archive_bytes: DEFAULT_ARCHIVE_MB * 1024 * 1024,
            once: false,
            sources: SourcesMode::Poll,
            event_interval: DEFAULT_EVENT_INTERVAL,
            event_full_walk: DEFAULT_EVENT_FULL_WALK,
            argv: Vec::new(),
            custody_log: None,
            ring: crate::ring::Limits::default(),
        }
    }
}

/// Why recording stopped.
#[derive(Debug)]
enum Stop {
    /// Signal or duration: normal end.
    Done,
    /// ENOSPC/EDQUOT while writing.
    DiskFull(String),
    /// Another write error.
    Error(String),
}

/// What the recorder knows about a live process.
struct Known {
    stat: StatFields,
    /// 0 when ns/net was unreadable.
    netns: u64,
    /// The identity record, read when first seen.
    record: ProcessRecord,
}

/// What the recorder keeps of one table between ticks.
#[derive(Default)]
struct TableMemo {
    /// The bytes last read: an identical read is `unchanged` without parsing.
    raw: Vec<u8>,
    /// Row identities last read.
    ids: delta::IdSet,
}

/// The recorder's state between ticks.
pub struct Recorder {
    cfg: Config,
    self_pid: u32,
    self_netns: u64,
    known: HashMap<u32, Known>,
    fds: FdState,
    held: HashSet<u64>,
    unowned: HashSet<u64>,
    tables: HashMap<(u64, &'static str), TableMemo>,
    recorded: HashSet<(u32, u64)>,
    archive: Option<ArchiveWriter>,
    archive_fresh: bool,
    /// When the open archive was opened (archives rotate by time under
    /// `--keep`).
    archive_opened: Instant,
    /// The ring of `--max-size` / `--keep`, when asked: its own thread,
    /// started with the recording.
    ring: Option<crate::ring::Runner>,
    /// Where warnings met while recording go (the binary prints them).
    notice: Option<NoticeSink>,
    archive_no: u32,
    archives: Vec<String>,
    seq: u64,
    /// Snapshots committed to an archive (a snapshot cut by a write error
    /// has a seq but is not counted).
    written: u64,
    since_keyframe: u64,
    last_full_walk: Option<Instant>,
    /// When the TCP tables of every namespace were last read.
    last_tcp_read: Option<Instant>,
    errors: ErrorSummary,
    buf: Vec<u8>,
    /// The running event sources, if any could start.
    events: Option<EventSources>,
    /// Whether a tracepoint source names socket owners, so the periodic
    /// reads can stretch.
    socket_events: bool,
    /// Whether `inet_sock_set_state` reports every TCP state change, so an
    /// unchanged TCP table need not be read again.
    tcp_state_events: bool,
    /// The last snapshot's network namespaces and processes in each: where
    /// the next one enters to read the kernel's quiet runs.
    last_ns_pids: BTreeMap<u64, Vec<u32>>,
    /// The next snapshot is the last: every open run is read.
    pub(crate) closing: bool,
    /// Event evidence lost over the recording.
    event_losses: EventLosses,
    conntrack: crate::conntrack::Conntrack,
    /// Each namespace's /etc/hosts and /etc/resolv.conf.
    nsfiles: crate::nsfiles::NsFiles,
    /// The /proc tree read.
    proc: live::Proc,
}

/// Event evidence lost while recording, said in the manifest and on the
/// terminal.
#[derive(Debug, Default, Clone, Copy)]
struct EventLosses {
    kernel: u64,
    dropped: u64,
    connector: u64,
    unjoined: u64,
    packets: u64,
    unowned: u64,
    packet_errors: u64,
    /// Network namespaces whose open send/receive runs a snapshot could
    /// not walk.
    unwalked: u64,
}

/// What a tick adds to its snapshot besides the meta.
#[derive(Default)]
struct TickOut {
    /// Members in writing order (meta excluded).
    members: Vec<(String, Vec<u8>)>,
    /// Errors met, one per occurrence.
    errs: Vec<RecordError>,
}

/// Phase 1's result: the pids in /proc.
struct Scan {
    /// Every pid listed, sorted.
    pids: Vec<u32>,
    /// The same, for lookups.
    pid_set: HashSet<u32>,
    /// Pids seen for the first time (their identity is read).
    new_pids: Vec<u32>,
}

/// Phase 3's result.
#[derive(Default)]
struct NetRead {
    /// Each namespace with how each of its tables is stored.
    netns: Vec<NetnsEntry>,
    /// Inodes of rows new since the last read.
    new_inodes: Vec<u64>,
}

/// Phase 4's result.
struct FdRead {
    fd_walk: FdWalk,
    pids_walked: u64,
    /// Pids whose identity was read again (pid reuse or execve).
    reread: Vec<u32>,
}

fn rec_err(what: &str, path: Option<&str>, e: &io::Error) -> RecordError {
    RecordError {
        what: what.to_string(),
        path: path.map(str::to_string),
        error: if e.kind() == io::ErrorKind::InvalidData {
            e.to_string()
        } else {
            format!("{}: {e}", sys::errno_name(e))
        },
        count: 1,
    }
}

fn is_gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ESRCH))
}

/// A write error, sorted into disk-full or other.
fn write_stop(what: &str, e: &io::Error) -> Stop {
    let text = format!("{what}: {} ({})", e, sys::errno_name(e));
    if sys::is_disk_full(e) {
        Stop::DiskFull(text)
    } else {
        Stop::Error(text)
    }
}

impl Recorder {
    fn new(cfg: Config) -> Recorder {
        Recorder::with_proc(cfg, live::Proc::live())
    }

    /// A recorder reading the /proc tree `proc` (a fixture in tests).
    fn with_proc(cfg: Config, proc: live::Proc) -> Recorder {
        let cfg_once = cfg.once;
        let self_pid = std::process::id();
        // A fixture tree has no `self`: only its own pids' namespaces.
        let self_netns = proc.read_netns_of("self").unwrap_or(0);
        Recorder {
            cfg,
            self_pid,
            self_netns,
            known: HashMap::new(),
            fds: FdState::new(),
            held: HashSet::new(),
            unowned: HashSet::new(),
            tables: HashMap::new(),
            recorded: HashSet::new(),
            archive: None,
            archive_fresh: true,
            archive_opened: Instant::now(),
            ring: None,
            notice: None,
            archive_no: 0,
            archives: Vec::new(),
            seq: 0,
            written: 0,
            since_keyframe: 0,
            last_full_walk: None,
            last_tcp_read: None,
            errors: ErrorSummary::default(),
            buf: Vec::with_capacity(256 * 1024),
            events: None,
            socket_events: false,
            tcp_state_events: false,
            last_ns_pids: BTreeMap::new(),
            closing: false,
            event_losses: EventLosses::default(),
            conntrack: if proc.is_live() {
                crate::conntrack::Conntrack::start(!cfg_once)
            } else {
                crate::conntrack::Conntrack::off("not the live /proc")
            },
            nsfiles: crate::nsfiles::NsFiles::default(),
            proc,
        }
    }

    fn open_next_archive(&mut self) -> Result<(), Stop> {
        self.archive_no += 1;
        let name = layout::archive_name(self.archive_no);
        if let Some(r) = &self.ring {
            r.writing(Some(&name));
        }
        let w = ArchiveWriter::create(&self.cfg.out, &name)
            .map_err(|e| write_stop(&format!("creating {name}"), &e))?;
        self.archive = Some(w);
        self.archives.push(name);
        self.archive_fresh = true;
        self.archive_opened = Instant::now();
        self.recorded.clear();
        Ok(())
    }

    /// Closes the current archive with its trailer.
    fn close_archive(&mut self) -> Result<(), Stop> {
        if let Some(a) = self.archive.take() {
            let name = a.name().to_string();
            a.finish()
                .map_err(|e| write_stop(&format!("closing {name}"), &e))?;
        }
        Ok(())
    }

    /// Takes one snapshot and appends it: the phases below in order, each
    /// reading /proc under `self.proc` (a fixture tree in unit tests).
    fn tick(&mut self) -> Result<(), Stop> {
        if self.archive.is_none() {
            self.open_next_archive()?;
        }
        let keyframe = self.archive_fresh
            || self.cfg.once
            || self.since_keyframe >= self.cfg.keyframe_every.max(1);
        let seq = self.seq + 1;
        let mut t = TickOut::default();
        // Events up to now go into this snapshot, whose clocks follow them.
        let all = self.closing || self.cfg.once;
        let batch = self
            .events
            .as_ref()
            .map(|e| e.take(&self.last_ns_pids, all))
            .unwrap_or_default();
        let before = sys::read_clocks();
        let scan = self.scan_processes(&mut t.errs);
        let ns_pids = self.namespaces(&scan.pids);
        self.last_ns_pids.clone_from(&ns_pids);
        // No TCP socket changed state since the TCP tables were last read
        // (the kernel reports every change, none was lost): their rows are
        // the same sockets, so they are not read again, up to the full
        // walk's period (a TIME_WAIT row leaves without a state change).
        let tcp_quiet = self.tcp_state_events
            && batch.tcp_changes == 0
            && batch.lost == 0
            && !keyframe
            && self
                .last_tcp_read
                .is_some_and(|t| t.elapsed() < self.full_walk());
        if !tcp_quiet {
            self.last_tcp_read = Some(Instant::now());
        }
        let net = self.read_tables(seq, &ns_pids, keyframe, tcp_quiet, &mut t);
        let mut netns_entries = net.netns;
        let ct = &mut self.conntrack;
        ct.tick(
            seq,
            keyframe,
            self.self_netns,
            &ns_pids,
            &mut netns_entries,
            &mut t.members,
            &mut t.errs,
        );
        let net_done = sys::read_clocks();
        // Forks and execs of socket holders (without per-call evidence)
        // get their fds read now, so hand-offs show as holder changes.
        let mut event_pids = batch.pids.clone();
        event_pids.extend(batch.fork_pids.iter().filter(|p| {
            self.fds
                .get(p)
                .is_some_and(|e| matches!(&e.status, FdStatus::Holds(v) if !v.is_empty()))
        }));
        let walk = self.walk_fds(seq, &scan, &net.new_inodes, &event_pids, keyframe, &mut t);
        self.identities(seq, &scan, &walk.reread, &batch.procs, &mut t);
        self.event_member(seq, &batch, &mut t);
        let procs = self
            .known
            .iter()
            .map(|(&p, k)| (p, k.stat.start_time, k.netns));
        self.nsfiles
            .tick(&self.proc, seq, keyframe, procs, &mut t.members);
        let after = sys::read_clocks();
        let meta = SnapshotMeta {
            seq,
            kind: if keyframe {
                SnapshotKind::Keyframe
            } else {
                SnapshotKind::Delta
            },
            before,
            net_done,
            after,
            netns: netns_entries,
            fd_walk: walk.fd_walk,
            pids_walked: walk.pids_walked,
            pids_total: scan.pids.len() as u64,
            self_cpu_ns: sys::self_cpu_ns(),
            errors: Vec::new(),
        };
        self.append(meta, keyframe, t)
    }

    /// Phase 1, processes: new ones get their stat, namespace and identity
    /// read now, while they are alive; vanished ones are forgotten.
    fn scan_processes(&mut self, errs: &mut Vec<RecordError>) -> Scan {
        let pids = match self.proc.list_pids() {
            Ok(p) => p,
            Err(e) => {
                errs.push(rec_err("read-proc", Some(self.proc.root()), &e));
                Vec::new()
            }
        };
        let pid_set: HashSet<u32> = pids.iter().copied().collect();
        self.known.retain(|pid, _| pid_set.contains(pid));
        let mut new_pids = Vec::new();
        for &pid in &pids {
            if !self.known.contains_key(&pid) && self.learn(pid, errs) {
                new_pids.push(pid);
            }
        }
        Scan {
            pids,
            pid_set,
            new_pids,
        }
    }

    /// Phase 2, namespaces in use, each with up to four candidate pids
    /// through which its tables can be read.
    fn namespaces(&self, pids: &[u32]) -> BTreeMap<u64, Vec<u32>> {
        let mut ns_pids: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
        if self.self_netns != 0 {
            ns_pids
                .entry(self.self_netns)
                .or_default()
                .push(self.self_pid);
        }
        for &pid in pids {
            if let Some(k) = self.known.get(&pid) {
                if k.netns != 0 {
                    let v = ns_pids.entry(k.netns).or_default();
                    if v.len() < 4 && !v.contains(&pid) {
                        v.push(pid);
                    }
                }
            }
        }
        ns_pids
    }

    /// Phase 3, the /proc/net tables of every namespace: raw at keyframes
    /// and for new tables, as deltas otherwise, nothing when unchanged.
    /// With `tcp_quiet`, TCP tables already known are not read (unchanged).
    fn read_tables(
        &mut self,
        seq: u64,
        ns_pids: &BTreeMap<u64, Vec<u32>>,
        keyframe: bool,
        tcp_quiet: bool,
        t: &mut TickOut,
    ) -> NetRead {
        let mut out = NetRead::default();
        let mut seen_keys: HashSet<(u64, &'static str)> = HashSet::new();
        for (&ns, cands) in ns_pids {
            let mut cand_i = 0;
            let mut tables = Vec::with_capacity(NET_TABLES.len());
            for table in NET_TABLES {
                let key = (ns, table);
                if tcp_quiet && table.starts_with("tcp") && self.tables.contains_key(&key) {
                    seen_keys.insert(key);
                    tables.push(TableEntry {
                        table: table.to_string(),
                        stored: TableStored::Unchanged,
                    });
                    continue;
                }
                let mut read_ok = false;
                while let Some(&pid) = cands.get(cand_i) {
                    let path = self.proc.path(pid, &format!("net/{table}"));
                    match live::read_into(&path, &mut self.buf) {
                        Ok(()) => {
                            read_ok = true;
                            break;
                        }
                        Err(e) if is_gone(&e) => {
                            // Table absent on this kernel, or the pid died:
                            // only the latter warrants another reader.
                            if Path::new(&self.proc.path(pid, "net")).exists() {
                                break;
                            }
                            cand_i += 1;
                        }
                        Err(e) => {
                            t.errs.push(rec_err("read-net", Some(&path), &e));
                            break;
                        }
                    }
                }
                if !read_ok {
                    self.tables.remove(&key);
                    tables.push(TableEntry {
                        table: table.to_string(),
                        stored: TableStored::Missing,
                    });
                    continue;
                }
                seen_keys.insert(key);
                let stored = self.store_table(seq, key, keyframe, cands.get(cand_i), t, &mut out);
                tables.push(TableEntry {
                    table: table.to_string(),
                    stored,
                });
            }
            out.netns.push(NetnsEntry {
                inode: ns,
                pid: cands.get(cand_i).or(cands.first()).copied().unwrap_or(0),
                tables,
            });
        }
        // Namespaces that are gone take their tables with them.
        self.tables.retain(|k, _| seen_keys.contains(k));
        out
    }

    /// Stores the table just read into `self.buf`: how, and the inodes of
    /// rows new since the last read.
    fn store_table(
        &mut self,
        seq: u64,
        key: (u64, &'static str),
        keyframe: bool,
        reader: Option<&u32>,
        t: &mut TickOut,
        out: &mut NetRead,
    ) -> TableStored {
        let (ns, table) = key;
        // Same bytes as last tick: no parsing needed at all.
        if let (false, Some(prev)) = (keyframe, self.tables.get(&key)) {
            if prev.raw == self.buf {
                return TableStored::Unchanged;
            }
        }
        let text = String::from_utf8_lossy(&self.buf);
        let rows = procfs::table_rows(&text);
        for bad in &rows.bad {
            t.errs.push(RecordError {
                what: "parse-net".into(),
                path: Some(
                    self.proc
                        .path(reader.copied().unwrap_or(0), &format!("net/{table}")),
                ),
                error: format!("line with too few fields: {:.80}", bad.trim()),
                count: 1,
            });
        }
        let stored = match (keyframe, self.tables.get_mut(&key)) {
            (false, Some(memo)) => {
                let (d, added) = delta::update(&mut memo.ids, rows);
                out.new_inodes.extend(added);
                if d.is_empty() {
                    TableStored::Unchanged
                } else {
                    t.members
                        .push((layout::net_member(seq, ns, table, false), d.into_bytes()));
                    TableStored::Delta
                }
            }
            (_, memo) => {
                if memo.is_none() {
                    out.new_inodes
                        .extend(rows.rows.iter().map(|r| procfs::row_inode(&r.0)));
                }
                t.members.push((
                    layout::net_member(seq, ns, table, true),
                    delta::full_text(&rows).into_bytes(),
                ));
                let ids = delta::identity_set(rows);
                self.tables.entry(key).or_default().ids = ids;
                TableStored::Full
            }
        };
        drop(text);
        if let Some(memo) = self.tables.get_mut(&key) {
            memo.raw.clear();
            memo.raw.extend_from_slice(&self.buf);
        }
        stored
    }

    /// Phase 4, fd walk: new pids and pids named by events always;
    /// everyone when due, at keyframes, or (without socket events) when a
    /// socket appeared that no known process holds.
    fn walk_fds(
        &mut self,
        seq: u64,
        scan: &Scan,
        new_inodes: &[u64],
        event_pids: &BTreeSet<u32>,
        keyframe: bool,
        t: &mut TickOut,
    ) -> FdRead {
        let prev_fds = self.fds.clone();
        self.fds.retain(|pid, _| scan.pid_set.contains(pid));
        let mut pids_walked = 0u64;
        for &pid in &scan.new_pids {
            self.walk(pid, &mut t.errs);
            pids_walked += 1;
        }
        self.refresh_held();
        let unknown = new_inodes
            .iter()
            .any(|i| *i != 0 && !self.held.contains(i) && !self.unowned.contains(i));
        for &pid in event_pids {
            if scan.pid_set.contains(&pid)
                && !scan.new_pids.contains(&pid)
                && self.known.contains_key(&pid)
            {
                self.walk(pid, &mut t.errs);
                pids_walked += 1;
            }
        }
        let due = match self.last_full_walk {
            None => true,
            Some(at) => at.elapsed() >= self.full_walk(),
        };
        // With socket events the owners of new sockets are named as they
        // appear: an unknown inode waits for the periodic full walk.
        let full = keyframe || due || (unknown && !self.socket_events);
        let mut reread: Vec<u32> = Vec::new();
        if full {
            let new: HashSet<u32> = scan.new_pids.iter().copied().collect();
            for &pid in &scan.pids {
                if new.contains(&pid) || !self.known.contains_key(&pid) {
                    continue;
                }
                if self.recheck(pid, &mut t.errs) {
                    reread.push(pid);
                }
                self.walk(pid, &mut t.errs);
                pids_walked += 1;
            }
            self.last_full_walk = Some(Instant::now());
            self.refresh_held();
            let held = &self.held;
            self.unowned = self
                .tables
                .values()
                .flat_map(|m| m.ids.iter().map(|id| procfs::row_inode(id)))
                .filter(|i| *i != 0 && !held.contains(i))
                .collect();
        }
        let fds_text = if keyframe {
            delta::fds_keyframe_text(&self.fds)
        } else {
            delta::fds_delta_text(&prev_fds, &self.fds)
        };
        if keyframe || !fds_text.is_empty() {
            t.members
                .push((layout::fds_member(seq), fds_text.into_bytes()));
        }
        FdRead {
            fd_walk: if full {
                FdWalk::Full
            } else if pids_walked > 0 {
                FdWalk::Changed
            } else {
                FdWalk::None
            },
            pids_walked,
            reread,
        }
    }

    /// Phase 5, identity records: processes new to this archive, ones whose
    /// comm changed since their record (execve after fork), and the
    /// identities read by the event sources (at exec, or at a pid's first
    /// event) unless the same record is already in this archive, so
    /// processes gone before this tick are in the bundle.
    fn identities(
        &mut self,
        seq: u64,
        scan: &Scan,
        reread: &[u32],
        event_procs: &[ProcessRecord],
        t: &mut TickOut,
    ) {
        let mut procs = String::new();
        let mut emit: Vec<u32> = if self.archive_fresh {
            scan.pids.clone()
        } else {
            scan.new_pids.clone()
        };
        emit.extend(reread.iter().copied());
        for pid in emit {
            let Some(k) = self.known.get(&pid) else {
                continue;
            };
            let id = (pid, k.stat.start_time);
            if self.recorded.insert(id) || reread.contains(&pid) {
                if let Ok(line) = serde_json::to_string(&k.record) {
                    procs.push_str(&line);
                    procs.push('\n');
                }
            }
        }
        for p in event_procs {
            let id = (p.pid, p.start_time);
            // The same identity read again (only its read time differs)
            // is not repeated; an exec's record always is.
            let same = p.exec_ns.is_none()
                && self.known.get(&p.pid).is_some_and(|k| {
                    let r = &k.record;
                    k.stat.start_time == p.start_time
                        && (&r.comm, &r.exe, &r.cmdline, r.uid, r.ppid)
                            == (&p.comm, &p.exe, &p.cmdline, p.uid, p.ppid)
                        && (r.euid.is_none() || r.euid == p.euid)
                });
            if same && self.recorded.contains(&id) {
                continue;
            }
            if let Some(k) = self.known.get_mut(&p.pid) {
                if k.stat.start_time == p.start_time {
                    k.record = p.clone();
                }
            }
            self.recorded.insert(id);
            if let Ok(line) = serde_json::to_string(p) {
                procs.push_str(&line);
                procs.push('\n');
            }
        }
        if !procs.is_empty() {
            t.members
                .push((layout::procs_member(seq), procs.into_bytes()));
        }
    }

    /// The events of the batch as the snapshot's `events.jsonl`, and the
    /// evidence lost as its errors.
    fn event_member(&mut self, seq: u64, batch: &Batch, t: &mut TickOut) {
        if !batch.events.is_empty() {
            let mut text = String::with_capacity(batch.events.len() * 256);
            for e in &batch.events {
                if let Ok(line) = serde_json::to_string(e) {
                    text.push_str(&line);
                    text.push('\n');
                }
            }
            t.members
                .push((layout::events_member(seq), text.into_bytes()));
        }
        let lines = |recs: &mut dyn Iterator<Item = Result<String, serde_json::Error>>| {
            let mut text = String::new();
            for line in recs.flatten() {
                text.push_str(&line);
                text.push('\n');
            }
            text.into_bytes()
        };
        if !batch.sockuse.is_empty() {
            let text = lines(&mut batch.sockuse.iter().map(serde_json::to_string));
            t.members.push((layout::sockuse_member(seq), text));
        }
        if !batch.tasks.is_empty() {
            let text = lines(&mut batch.tasks.iter().map(serde_json::to_string));
            t.members.push((layout::tasks_member(seq), text));
        }
        self.count_losses(batch, &mut t.errs);
    }

    /// Phase 6, appends the snapshot, meta last, in one write.
    fn append(&mut self, mut meta: SnapshotMeta, keyframe: bool, t: TickOut) -> Result<(), Stop> {
        self.seq = meta.seq;
        for e in &t.errs {
            self.errors.add(e);
        }
        meta.errors = cap_errors(t.errs);
        let meta_json = serde_json::to_vec(&meta).map_err(|e| Stop::Error(e.to_string()))?;
        let mtime = u64::try_from(meta.before.realtime_ns / 1_000_000_000).unwrap_or(0);
        let Some(archive) = self.archive.as_mut() else {
            return Err(Stop::Error("no archive open".into()));
        };
        for (name, data) in &t.members {
            archive
                .append(name, data, mtime)
                .map_err(|e| write_stop("appending a snapshot", &e))?;
        }
        archive
            .append(&layout::meta_member(self.seq), &meta_json, mtime)
            .map_err(|e| write_stop("appending a snapshot", &e))?;
        archive
            .commit()
            .map_err(|e| write_stop(&format!("writing {}", archive.name()), &e))?;
        self.written += 1;
        crate::operator::snapshot_written();
        if keyframe {
            archive
                .sync()
                .map_err(|e| write_stop(&format!("fdatasync {}", archive.name()), &e))?;
            self.since_keyframe = 1;
        } else {
            self.since_keyframe += 1;
        }
        self.archive_fresh = false;
        let aged = crate::ring::archive_every(&self.cfg.ring)
            .is_some_and(|d| self.archive_opened.elapsed() >= d);
        if (archive.committed_bytes() >= self.cfg.archive_bytes || aged) && !self.cfg.once {
            self.close_archive()?;
        }
        Ok(())
    }

    /// Reads stat, namespace and identity of a pid seen for the first time.
    /// False when it vanished meanwhile.
    fn learn(&mut self, pid: u32, errs: &mut Vec<RecordError>) -> bool {
        let stat = match self.proc.read_stat(pid, &mut self.buf) {
            Ok(s) => s,
            Err(e) if is_gone(&e) => return false,
            Err(e) => {
                errs.push(rec_err("read-proc", Some(&self.proc.path(pid, "stat")), &e));
                return false;
            }
        };
        let netns = match self.proc.read_netns(pid) {
            Ok(n) => n,
            Err(e) => {
                if !is_gone(&e) {
                    errs.push(rec_err(
                        "read-proc",
                        Some(&self.proc.path(pid, "ns/net")),
                        &e,
                    ));
                }
                0
            }
        };
        let (record, perrs) = self
            .proc
            .read_process_record(pid, &stat, netns, &mut self.buf);
        for (path, e) in perrs {
            if !is_gone(&e) {
                errs.push(rec_err("read-proc", Some(&path), &e));
            }
        }
        self.known.insert(
            pid,
            Known {
                stat,
                netns,
                record,
            },
        );
        true
    }

    /// At a full walk: re-reads stat of a known pid. A changed start time
    /// (pid reuse) or comm (execve) re-reads the identity; true if so.
    fn recheck(&mut self, pid: u32, errs: &mut Vec<RecordError>) -> bool {
        let Ok(stat) = self.proc.read_stat(pid, &mut self.buf) else {
            return false;
        };
        let Some(k) = self.known.get(&pid) else {
            return false;
        };
        if k.stat == stat {
            return false;
        }
        let reused = k.stat.start_time != stat.start_time;
        self.known.remove(&pid);
        if reused {
            self.fds.remove(&pid);
        }
        self.learn(pid, errs)
    }

    /// Reads a pid's fd links into the fd state.
    fn walk(&mut self, pid: u32, errs: &mut Vec<RecordError>) {
        let Some(k) = self.known.get(&pid) else {
            return;
        };
        let start_time = k.stat.start_time;
        let netns = k.netns;
        match self.proc.read_socket_inodes(pid) {
            Ok(inodes) if inodes.is_empty() => {
                self.fds.remove(&pid);
            }
            Ok(inodes) => {
                self.fds.insert(
                    pid,
                    FdEntry {
                        start_time,
                        netns,
                        status: FdStatus::Holds(inodes),
                        memo: (),
                    },
                );
            }
            Err(e) if is_gone(&e) => {
                self.fds.remove(&pid);
            }
            Err(e) => {
                errs.push(rec_err("read-fd", Some(&self.proc.path(pid, "fd")), &e));

                self.fds.insert(
                    pid,
                    FdEntry {
                        start_time,
                        netns: 0,
                        status: FdStatus::Denied(sys::errno_name(&e)),
                        memo: (),
                    },
                );
            }
        }
    }

    /// Time between snapshots: stretched while socket events cover changes.
    fn interval(&self) -> Duration {
        if self.socket_events {
            self.cfg.event_interval
        } else {
            self.cfg.interval
        }
    }

    /// Full fd walk period: stretched while socket events cover changes.
    fn full_walk(&self) -> Duration {
        if self.socket_events {
            self.cfg.event_full_walk
        } else {
            self.cfg.full_walk
        }
    }

    /// Counts the event evidence lost since the last snapshot, into the
    /// snapshot's errors.
    fn count_losses(&mut self, b: &Batch, errs: &mut Vec<RecordError>) {
        for why in &b.walk_errors {
            errs.push(RecordError {
                what: "events".into(),
                path: None,
                error: format!(
                    "open send/receive runs not read at this snapshot (written when they end, \
                     lost if they never do): {why}"
                ),
                count: 1,
            });
        }
        let mut add = |n: u64, what: &str| {
            if n > 0 {
                errs.push(RecordError {
                    what: "events".into(),
                    path: None,
                    error: what.to_string(),
                    count: n,
                });
            }
        };
        add(
            b.lost,
            "samples dropped by the kernel (perf ring buffer full)",
        );
        add(
            b.dropped,
            "events dropped by the recorder (too many between two snapshots)",
        );
        add(
            b.connector_lost,
            "process events lost by the proc connector (ENOBUFS)",
        );
        add(b.unjoined, "TCP connects whose source port was never seen");
        add(
            b.packets_dropped,
            "packets dropped by the lookup's packet socket (queue full): their flows were not looked up",
        );
        add(
            b.packet_errors,
            "receive errors on the lookup's packet socket (its interface went down or away?): lookups may have stopped",
        );
        add(
            b.unowned,
            "sockets looked up whose process was not found (closed before its fds were read, or the search budget of 50 ms per second was spent)",
        );
        crate::operator::events_counted(
            b.events.len() as u64,
            b.lost + b.dropped + b.connector_lost,
        );
        self.event_losses.kernel += b.lost;
        self.event_losses.dropped += b.dropped;
        self.event_losses.connector += b.connector_lost;
        self.event_losses.unjoined += b.unjoined;
        self.event_losses.packets += b.packets_dropped;
        self.event_losses.unowned += b.unowned;
        self.event_losses.packet_errors += b.packet_errors;
        self.event_losses.unwalked += b.walk_errors.len() as u64;
    }

    fn refresh_held(&mut self) {
        self.held.clear();
        for e in self.fds.values() {
            if let FdStatus::Holds(v) = &e.status {
                self.held.extend(v.iter().copied());
            }
        }
    }
}

/// Keeps a snapshot's error list bounded.
fn cap_errors(mut errs: Vec<RecordError>) -> Vec<RecordError> {
    if errs.len() > MAX_META_ERRORS {
        let rest = errs.split_off(MAX_META_ERRORS - 1);
        errs.push(RecordError {
            what: "more".into(),
            path: None,
            error: "further errors of this snapshot, counted in the manifest".into(),
            count: rest.iter().map(|e| e.count).sum(),
        });
    }
    errs
}

/// `e` and its causes, `: `-separated, for a one-line message.
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// Checks that `iface` exists in the recorder's namespace. `any` is
/// tcpdump's pseudo-interface (every interface of the namespace, captured as
/// Linux cooked frames, which the analyzer decodes). An unknown name is
/// answered with the interfaces there are.
pub fn check_iface(iface: &str) -> Result<(), IfaceError> {
    if iface.is_empty() || iface.contains('/') || iface == "." || iface == ".." {
        return Err(IfaceError::BadName(iface.to_string()));
    }
    if iface == "any" || Path::new("/sys/class/net").join(iface).exists() {
        return Ok(());
    }
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    Err(IfaceError::NoSuch {
        iface: iface.to_string(),
        there: names,
    })
}

/// Why `--iface` cannot be captured on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IfaceError {
    /// Not a name an interface can have.
    #[error("--iface {0:?}: not an interface name")]
    BadName(String),
    /// No such interface in the recorder's network namespace.
    #[error(
        "--iface {iface}: no such interface in this network namespace; there are: {} \
         (or `any`: every interface, as Linux cooked frames)",
        if there.is_empty() { "none readable in /sys/class/net".to_string() } else { there.join(", ") }
    )]
    NoSuch {
        /// The name asked for.
        iface: String,
        /// The interfaces there are, sorted.
        there: Vec<String>,
    },
}

fn host_info(self_netns: u64, errors: &mut ErrorSummary) -> HostInfo {
    let u = sys::uname();
    let read = |p: &str, errors: &mut ErrorSummary| match std::fs::read_to_string(p) {
        Ok(s) => s.trim().to_string(),
        Err(e) => {
            errors.add(&rec_err("read-host", Some(p), &e));
            String::new()
        }
    };
    let boot_id = read("/proc/sys/kernel/random/boot_id", errors);
    let clocksource = read(
        "/sys/devices/system/clocksource/clocksource0/current_clocksource",
        errors,
    );
    let stat = read("/proc/stat", errors);
    let btime = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let addresses = match sys::host_addresses() {
        Ok(a) => a,
        Err(e) => {
            errors.add(&rec_err("read-host", Some("getifaddrs"), &e));
            Vec::new()
        }
    };
    HostInfo {
        hostname: u.nodename,
        kernel_release: u.release,
        kernel_version: u.version,
        arch: u.machine,
        byte_order: ByteOrder::NATIVE,
        boot_id,
        btime,
        clk_tck: sys::clk_tck(),
        clocksource,
        netns: self_netns,
        addresses,
    }
}

fn privileges() -> Privileges {
    Privileges {
        euid: sys::euid(),
        cap_eff: std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| procfs::parse_status_cap_eff(&s))
            .unwrap_or_default(),
    }
}

impl Recorder {
    /// Deletes what the ring's limits ask and records each deletion in
    /// the manifest, written again at once: the bundle always says what
    /// it no longer holds.
    fn keep_ring(&mut self, m: &mut Manifest, write: bool) -> Result<(), Stop> {
        let o = match (write, self.ring.as_ref()) {
            (_, None) => return Ok(()),
            (true, Some(r)) => r.take(),
            (false, Some(_)) => match self.ring.take() {
                Some(r) => r.finish(realtime_now()),
                None => return Ok(()),
            },
        };
        for e in o.errors {
            if e.contains("--max-size") {
                if let Some(say) = &self.notice {
                    say(Notice::Warning(e.clone()));
                }
            }
            self.errors.add(&crate::ring::error_entry(e));
        }
        if o.deleted.is_empty() {
            return Ok(());
        }
        self.archives
            .retain(|a| !o.deleted.iter().any(|d| d.name == *a));
        crate::ring::record(&mut m.deleted, o.deleted);
        m.archives = self.archives.clone();
        m.snapshots = self.written;
        m.errors = self.errors.to_vec();
        if !write {
            return Ok(());
        }
        manifest_while_recording(&self.cfg.out, m)
            .map_err(|e| write_stop("writing manifest.json", &e))
    }
}

/// Writes the manifest and reserves room for the next one.
fn manifest_while_recording(dir: &Path, m: &Manifest) -> io::Result<()> {
    bundle::write_manifest(dir, m)?;
    // Best effort; if it fails the disk is already full and the next
    // write reports it.
    let _ = bundle::reserve_manifest(dir);
    Ok(())
}

/// CLOCK_REALTIME now, ns (the ring's clock).
fn realtime_now() -> i64 {
    sys::timestamp().clocks.realtime_ns
}

/// Which evidence sources to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourcesMode {
    /// Every event source the host allows, with periodic /proc reads.
    Auto,
    /// Periodic /proc reads only (the fallback, forced).
    Poll,
    /// The capture-triggered lookup instead of the tracepoints (forced,
    /// as on a host without them), with the proc connector and the
    /// periodic /proc reads.
    Lookup,
    /// Every source of `Auto` except the send/receive tracepoints (as on a
    /// kernel before 6.3): fd walks triggered by forks and execs instead.
    NoUse,
    /// Every source of `Auto`, the send/receive calls sampled by the perf
    /// tracepoints even where the eBPF program would load.
    PerfUse,
}

impl Recorder {
    /// Starts the event sources `mode` allows; returns every source's
    /// status for the manifest, in order of preference.
    fn start_sources(&mut self, mode: SourcesMode) -> Vec<SourceInfo> {
        let mut infos = match mode {
            SourcesMode::Auto | SourcesMode::Lookup | SourcesMode::NoUse | SourcesMode::PerfUse
                if !self.cfg.once =>
            {
                let opts = events::StartOpts {
                    force_lookup: mode == SourcesMode::Lookup,
                    use_tracepoints: mode != SourcesMode::NoUse,
                    ebpf: mode != SourcesMode::PerfUse,
                };
                let (running, infos) = EventSources::start(opts, self.cfg.iface.as_deref());
                self.events = running;
                infos
            }
            _ => {
                let why = if self.cfg.once {
                    "one snapshot (once)"
                } else {
                    "event sources switched off (--sources poll)"
                };
                [
                    events::SRC_SET_STATE,
                    events::SRC_FIB,
                    events::SRC_FIB6,
                    crate::sockuse::SRC_SEND,
                    crate::sockuse::SRC_RECV,
                    crate::bpfuse::SRC_EBPF,
                    crate::sockuse::SRC_FORK,
                    crate::sockuse::SRC_EXEC,
                    crate::sockuse::SRC_EXIT,
                    events::SRC_PROC_CONNECTOR,
                    crate::sockuse::SRC_FORK_WALK,
                    crate::lookup::SRC_LOOKUP,
                ]
                .iter()
                .map(|n| SourceInfo {
                    name: n.to_string(),
                    used: false,
                    detail: Some(why.into()),
                })
                .collect()
            }
        };
        self.socket_events = self.events.is_some()
            && infos
                .iter()
                .any(|i| i.used && i.name.starts_with("tracepoint:"));
        self.tcp_state_events = self.socket_events
            && infos
                .iter()
                .any(|i| i.used && i.name == events::SRC_SET_STATE);
        let poll = if self.socket_events {
            format!(
                "/proc/net tables every {} ms{}, full fd walk every {} ms, fds of pids named by events at each snapshot (stretched: tracepoints name socket owners)",
                self.interval().as_millis(),
                if self.tcp_state_events {
                    " (TCP tables only after a TCP state change, else at the full walk)"
                } else {
                    ""
                },
                self.full_walk().as_millis()
            )
        } else {
            format!(
                "/proc/net tables every {} ms, full fd walk every {} ms",
                self.interval().as_millis(),
                self.cfg.full_walk.as_millis()
            )
        };
        infos.push(SourceInfo {
            name: events::SRC_POLL.into(),
            used: true,
            detail: Some(poll),
        });
        infos
    }
}

#[cfg(test)]
mod tests {
    //! The tick's phases on fixture /proc trees: a temporary directory laid
    //! out like /proc (stat, comm, status, cmdline, cgroup, exe, ns/net,
    //! fd links, net tables copied from `testdata/proc`).

    use super::*;
    use crate::delta::{FdStatus, RawRows};
    use crate::reader::{read_archive, State};
    use std::os::unix::fs::symlink;

    const NETNS: u64 = 4026531840;

    struct Fixture {
        dir: PathBuf,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    impl Fixture {
        fn new(tag: &str) -> Fixture {
            let dir = std::env::temp_dir().join(format!(
                "procflow-snap-fixture-{}-{tag}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("proc")).expect("fixture dir");
            Fixture { dir }
        }

        fn proc(&self) -> PathBuf {
            self.dir.join("proc")
        }

        /// A process holding `inodes`, with the committed /proc/net tables.
        fn process(&self, pid: u32, comm: &str, start: u64, inodes: &[u64]) {
            let p = self.proc().join(pid.to_string());
            let _ = std::fs::remove_dir_all(&p);
            for d in ["fd", "ns", "net"] {
                std::fs::create_dir_all(p.join(d)).expect("dirs");
            }
            let stat = format!(
                "{pid} ({comm}) S 1 {pid} {pid} 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 {start} 1000 10\n"
            );
            std::fs::write(p.join("stat"), stat).expect("stat");
            std::fs::write(p.join("comm"), format!("{comm}\n")).expect("comm");
            std::fs::write(p.join("status"), "Name:\tx\nUid:\t1000\t1000\t1000\t1000\n")
                .expect("status");
            std::fs::write(p.join("cmdline"), format!("/usr/bin/{comm}\0--flag\0"))
                .expect("cmdline");
            std::fs::write(p.join("cgroup"), "0::/system.slice/x.service\n").expect("cgroup");
            symlink(format!("/usr/bin/{comm}"), p.join("exe")).expect("exe");
            symlink(format!("net:[{NETNS}]"), p.join("ns/net")).expect("ns");
            for (i, ino) in inodes.iter().enumerate() {
                symlink(format!("socket:[{ino}]"), p.join(format!("fd/{}", i + 3))).expect("fd");
            }
            symlink("/dev/null", p.join("fd/0")).expect("fd 0");
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/proc");
            for t in ["tcp", "tcp6", "udp", "udp6"] {
                std::fs::copy(src.join(t), p.join("net").join(t)).expect("table");
            }
        }

        fn recorder(&self) -> Recorder {
            let out = self.dir.join("out");
            std::fs::create_dir_all(&out).expect("out");
            let cfg = Config {
                full_walk: Duration::from_secs(3600),
                event_interval: Duration::from_secs(2),
                event_full_walk: Duration::from_secs(3600),
                ..Config::new(out)
            };
            Recorder::with_proc(cfg, live::Proc::at(&self.proc()))
        }

        /// Every snapshot written so far, applied in order.
        fn replay(&self) -> (Vec<SnapshotMeta>, State<RawRows>, Vec<ProcessRecord>) {
            let a =
                read_archive(&self.dir.join("out").join(layout::archive_name(1))).expect("archive");
            let mut st = State::new(RawRows);
            let mut procs = Vec::new();
            let mut metas = Vec::new();
            for s in &a.snapshots {
                let ap = st.apply(s);
                assert!(ap.problems.is_empty(), "{:?}", ap.problems);
                procs.extend(ap.processes);
                metas.push(s.meta.clone());
            }
            (metas, st, procs)
        }
    }

    fn holds(st: &State<RawRows>, pid: u32) -> Vec<u64> {
        match st.fds.get(&pid).map(|e| &e.status) {
            Some(FdStatus::Holds(v)) => v.clone(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn phases_read_a_fixture_tree() {
        let fx = Fixture::new("phases");
        // 30413 is a listener in testdata/proc/tcp; 26000 a UDP socket there.
        fx.process(100, "server", 5000, &[30413]);
        fx.process(200, "client", 6000, &[]);
        let mut rec = fx.recorder();
        let mut errs = Vec::new();
        let scan = rec.scan_processes(&mut errs);
        assert_eq!(scan.pids, vec![100, 200]);
        assert_eq!(scan.new_pids, vec![100, 200]);
        assert!(errs.is_empty(), "{errs:?}");
        let ns = rec.namespaces(&scan.pids);
        assert_eq!(ns.get(&NETNS), Some(&vec![100, 200]));
        let mut t = TickOut::default();
        let net = rec.read_tables(1, &ns, true, false, &mut t);
        assert_eq!(net.netns.len(), 1);
        let stored: Vec<(String, TableStored)> = net.netns[0]
            .tables
            .iter()
            .map(|e| (e.table.clone(), e.stored))
            .collect();
        assert_eq!(stored[0], ("tcp".into(), TableStored::Full));
        assert_eq!(stored[4], ("raw".into(), TableStored::Missing));
        assert!(net.new_inodes.contains(&30413));
        // Unchanged bytes: no member, no parse.
        let mut t2 = TickOut::default();
        let net2 = rec.read_tables(2, &ns, false, false, &mut t2);
        assert!(net2.netns[0]
            .tables
            .iter()
            .all(|e| matches!(e.stored, TableStored::Unchanged | TableStored::Missing)));
        assert!(t2.members.is_empty());
        // No TCP state change reported: the TCP tables are not read again
        // (a row added behind the kernel's back is not seen), the others
        // are; once a change is reported, the row is read.
        let tcp = fx.proc().join("100/net/tcp");
        let mut text = std::fs::read_to_string(&tcp).expect("tcp");
        text.push_str("  99: 0100007F:9C40 0100007F:0277 01 00000000:00000000 00:00000000 00000000  1000        0 777002 1 0000000000000000 20 4 30 10 -1\n");
        std::fs::write(&tcp, text).expect("write");
        std::fs::write(fx.proc().join("100/net/udp"), "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n").expect("udp");
        let mut t3 = TickOut::default();
        let net3 = rec.read_tables(3, &ns, false, true, &mut t3);
        let stored: Vec<TableStored> = net3.netns[0].tables.iter().map(|e| e.stored).collect();
        assert_eq!(
            &stored[..3],
            &[
                TableStored::Unchanged,
                TableStored::Unchanged,
                TableStored::Delta
            ]
        );
        assert!(!net3.new_inodes.contains(&777002));
        let mut t4 = TickOut::default();
        let net4 = rec.read_tables(4, &ns, false, false, &mut t4);
        assert_eq!(net4.netns[0].tables[0].stored, TableStored::Delta);
        assert!(net4.new_inodes.contains(&777002));
        // A pid whose stat vanished is not learned; its error is not one.
        std::fs::remove_file(fx.proc().join("200/stat")).expect("rm");
        rec.known.remove(&200);
        let scan = rec.scan_processes(&mut errs);
        assert_eq!(scan.new_pids, Vec::<u32>::new());
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn ticks_on_a_fixture_tree_write_what_the_reader_rebuilds() {
        let fx = Fixture::new("ticks");
        fx.process(100, "server", 5000, &[30413]);
        fx.process(200, "client", 6000, &[]);
        let mut rec = fx.recorder();
        rec.tick().expect("first tick");
        let (metas, st, procs) = fx.replay();
        assert_eq!(metas[0].kind, SnapshotKind::Keyframe);
        assert_eq!(metas[0].fd_walk, FdWalk::Full);
        assert_eq!(metas[0].pids_total, 2);
        assert_eq!(holds(&st, 100), vec![30413]);
        assert!(!st.fds.contains_key(&200), "no socket, no fd line");
        let server = procs.iter().find(|p| p.pid == 100).expect("server record");
        assert_eq!(server.start_time, 5000);
        assert_eq!(server.uid, 1000);
        assert_eq!(server.exe.as_deref(), Some("/usr/bin/server"));
        assert_eq!(server.cmdline, vec!["/usr/bin/server", "--flag"]);
        assert_eq!(server.netns, NETNS);
        assert!(st
            .tables
            .get(&(NETNS, "tcp".to_string()))
            .is_some_and(|t| t.rows.keys().any(|id| id.ends_with(" 30413"))));

        // The client takes a socket no one held (a row appears in tcp):
        // without socket events the unknown inode makes the walk full.
        let tcp = fx.proc().join("200/net/tcp");
        let mut text = std::fs::read_to_string(&tcp).expect("tcp");
        text.push_str("  99: 0100007F:9C40 0100007F:0277 01 00000000:00000000 00:00000000 00000000  1000        0 777001 1 0000000000000000 20 4 30 10 -1\n");
        std::fs::write(&tcp, text).expect("write");
        symlink("socket:[777001]", fx.proc().join("200/fd/3")).expect("fd");
        // And the server exits.
        std::fs::remove_dir_all(fx.proc().join("100")).expect("rm");
        rec.tick().expect("second tick");
        let (metas, st, procs) = fx.replay();
        assert_eq!(metas.len(), 2);
        assert_eq!(metas[1].kind, SnapshotKind::Delta);
        assert_eq!(metas[1].fd_walk, FdWalk::Full);
        assert_eq!(holds(&st, 200), vec![777001]);
        assert!(!st.fds.contains_key(&100), "the server is gone");
        // The table was read through the pid still alive.
        assert_eq!(metas[1].netns[0].pid, 200);
        assert!(st
            .tables
            .get(&(NETNS, "tcp".to_string()))
            .is_some_and(|t| t.rows.keys().any(|id| id.ends_with(" 777001"))));
        // No identity is repeated within an archive.
        assert_eq!(procs.iter().filter(|p| p.pid == 200).count(), 1);
    }

    #[test]
    fn event_identities_join_the_bundle_once() {
        let fx = Fixture::new("events");
        fx.process(300, "resolver", 7000, &[]);
        let mut rec = fx.recorder();
        rec.tick().expect("tick");
        let gone = ProcessRecord {
            pid: 301,
            start_time: 7100,
            ppid: 300,
            uid: 0,
            comm: "dig".into(),
            exe: Some("/usr/bin/dig".into()),
            cmdline: vec!["dig".into()],
            netns: NETNS,
            cgroup: None,
            container_id: None,
            seen_ns: None,
            exec_ns: None,
            euid: None,
            user: None,
        };
        let scan = rec.scan_processes(&mut Vec::new());
        let mut t = TickOut::default();
        // A process gone before the tick is recorded from its exec event,
        // a known one with the same record is not repeated.
        let known = rec.known.get(&300).expect("known").record.clone();
        rec.identities(2, &scan, &[], &[gone.clone(), known], &mut t);
        let text = String::from_utf8(t.members[0].1.clone()).expect("utf-8");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("\"dig\""));
    }
}

#[cfg(test)]
mod iface_tests {
    use super::check_iface;

    #[test]
    fn iface_any_is_accepted_and_unknown_names_list_the_interfaces() {
        assert_eq!(check_iface("any"), Ok(()));
        assert!(check_iface("../etc").is_err());
        if std::path::Path::new("/sys/class/net/lo").exists() {
            assert_eq!(check_iface("lo"), Ok(()));
            let e = check_iface("pvnosuch0").unwrap_err().to_string();
            assert!(e.contains("there are: ") && e.contains("lo"), "{e}");
            assert!(e.contains("`any`"), "{e}");
        }
    }
}
