//! The bundle layout: the one description of what `procflow-snap` writes and
//! `procflow` reads. Both sides use these types and helpers, so the format is
//! written down once (prose version: `docs/archive-format.md`).
//!
//! Everything here is pure: no file system, no clock. The recorder fills these
//! types from the live system; the analyzer deserializes them from a bundle.

use serde::{Deserialize, Serialize};

pub use crate::procnet::ByteOrder;

/// How a recording ended ([`Manifest::status`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecorderStatus {
    /// Still recording, or stopped before the final manifest was written
    /// (SIGKILL, power cut).
    Recording,
    /// Stopped as asked; everything written.
    Complete,
    /// The disk or quota filled up; everything written before is kept.
    DiskFull,
    /// Another write error stopped the recording.
    Error,
    /// A second signal forced the recorder out before it finished.
    Killed,
    /// A status this build does not know (a newer recorder, or a forged
    /// manifest), kept as written.
    #[serde(untagged)]
    Other(String),
}

impl RecorderStatus {
    /// The status as written in the manifest.
    pub fn as_str(&self) -> &str {
        match self {
            RecorderStatus::Recording => "recording",
            RecorderStatus::Complete => "complete",
            RecorderStatus::DiskFull => "disk-full",
            RecorderStatus::Error => "error",
            RecorderStatus::Killed => "killed",
            RecorderStatus::Other(s) => s,
        }
    }
}

impl std::fmt::Display for RecorderStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Value of [`Manifest::format`].
pub const FORMAT_NAME: &str = "procflow-bundle";
/// Version of the bundle format described in `docs/archive-format.md`.
/// Bumped on any change a reader of the previous version would misread.
pub const FORMAT_VERSION: u32 = 1;

/// File name of the manifest inside the bundle directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// File name of the hash list written when recording stops.
pub const SHA256SUMS_FILE: &str = "SHA256SUMS";
/// File name where tcpdump's own standard error is kept.
pub const TCPDUMP_LOG_FILE: &str = "tcpdump.log";
/// Prefix of capture files written by the recorder's tcpdump.
pub const CAPTURE_PREFIX: &str = "capture-";

/// The /proc/net tables archived for every network namespace, in the order
/// they are read. A table missing on a kernel (no IPv6, no ping sockets) is
/// recorded as missing in [`NetnsEntry::tables`], not as an error.
pub const NET_TABLES: [&str; 8] = ["tcp", "tcp6", "udp", "udp6", "raw", "raw6", "icmp", "icmp6"];

/// Whether `table` is a table name a namespace may list: one of
/// [`NET_TABLES`] or the conntrack table
/// ([`crate::conntrack::TABLE`], stored like them).
pub fn is_table(table: &str) -> bool {
    NET_TABLES.contains(&table) || table == crate::conntrack::TABLE
}

/// Member holding the conntrack events of one namespace handled since the
/// previous snapshot (see [`crate::conntrack::Event`]).
pub fn conntrack_events_member(seq: u64, netns: u64) -> String {
    format!(
        "{}/net/{netns}/{}.events",
        snapshot_dir(seq),
        crate::conntrack::TABLE
    )
}

/// Name of the `n`-th snapshot archive (`n` counts from 1).
pub fn archive_name(n: u32) -> String {
    format!("snapshots-{n:06}.tar")
}

/// Parses an archive name back to its number; `None` for any other file.
pub fn parse_archive_name(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("snapshots-")?.strip_suffix(".tar")?;
    if digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()
    } else {
        None
    }
}

/// Directory of snapshot `seq` inside a tar: `snap/00000042`.
pub fn snapshot_dir(seq: u64) -> String {
    format!("snap/{seq:08}")
}

/// Member holding a raw /proc/net table (`full = true`) or its delta.
pub fn net_member(seq: u64, netns: u64, table: &str, full: bool) -> String {
    let suffix = if full { "" } else { ".delta" };
    format!("{}/net/{netns}/{table}{suffix}", snapshot_dir(seq))
}

/// Member holding the socket-inode listing (see [`FdLine`]).
pub fn fds_member(seq: u64) -> String {
    format!("{}/fds", snapshot_dir(seq))
}

/// Member holding one JSON [`ProcessRecord`] per line.
pub fn procs_member(seq: u64) -> String {
    format!("{}/procs.jsonl", snapshot_dir(seq))
}

/// Member holding one JSON [`EventRecord`] per line: what the recorder's
/// event sources saw between the previous snapshot and this one.
pub fn events_member(seq: u64) -> String {
    format!("{}/events.jsonl", snapshot_dir(seq))
}

/// Member holding one JSON [`SockUseRecord`] per line: which process sent
/// or read on which socket, and which socket is which tuple, between the
/// previous snapshot and this one.
pub fn sockuse_member(seq: u64) -> String {
    format!("{}/sockuse.jsonl", snapshot_dir(seq))
}

/// Member holding one JSON [`TaskRecord`] per line: process forks, execs
/// and exits between the previous snapshot and this one.
pub fn tasks_member(seq: u64) -> String {
    format!("{}/tasks.jsonl", snapshot_dir(seq))
}

/// Member holding one JSON [`NsFileRecord`] per line: which files of
/// `/etc` (hosts, resolv.conf) each (network, mount) namespace pair saw,
/// and which process is in which pair.
pub fn nsfiles_member(seq: u64) -> String {
    format!("{}/nsfiles.jsonl", snapshot_dir(seq))
}

/// Files of `/etc` the recorder archives per (network, mount) namespace
/// pair ([`nsfile_member`]).
pub const NS_FILES: [&str; 2] = ["hosts", "resolv.conf"];

/// Member holding the bytes of `/etc/NAME` (one of [`NS_FILES`]) as the
/// processes of network namespace `netns` and mount namespace `mntns` saw
/// it.
pub fn nsfile_member(seq: u64, netns: u64, mntns: u64, name: &str) -> String {
    format!("{}/nsfiles/{netns}-{mntns}/{name}", snapshot_dir(seq))
}

/// Member holding the [`SnapshotMeta`]. It is always the last member of its
/// snapshot: a snapshot whose `meta.json` is absent or cut is incomplete.
pub fn meta_member(seq: u64) -> String {
    format!("{}/meta.json", snapshot_dir(seq))
}

/// What a tar member of a bundle is, parsed from its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Member {
    /// A /proc/net table of one namespace, raw (`full`) or as a delta.
    Net {
        /// Snapshot sequence number.
        seq: u64,
        /// Network namespace inode.
        netns: u64,
        /// Table name, one of [`NET_TABLES`] or `conntrack`.
        table: String,
        /// Raw kernel text (`true`) or a delta against the previous snapshot.
        full: bool,
    },
    /// The fd listing of a snapshot.
    Fds {
        /// Snapshot sequence number.
        seq: u64,
    },
    /// Processes first seen in a snapshot.
    Procs {
        /// Snapshot sequence number.
        seq: u64,
    },
    /// Conntrack events of one namespace since the previous snapshot
    /// ([`crate::conntrack::Event`] lines).
    ConntrackEvents {
        /// Snapshot sequence number.
        seq: u64,
        /// Network namespace inode.
        netns: u64,
    },
    /// Socket events seen since the previous snapshot ([`EventRecord`]).
    Events {
        /// Snapshot sequence number.
        seq: u64,
    },
    /// Per-socket send and receive runs and socket bindings since the
    /// previous snapshot ([`SockUseRecord`]).
    SockUse {
        /// Snapshot sequence number.
        seq: u64,
    },
    /// Process lifecycle records since the previous snapshot
    /// ([`TaskRecord`]).
    Tasks {
        /// Snapshot sequence number.
        seq: u64,
    },
    /// Records about the archived `/etc` files of each namespace pair
    /// ([`NsFileRecord`]).
    NsFiles {
        /// Snapshot sequence number.
        seq: u64,
    },
    /// The bytes of one archived `/etc` file ([`nsfile_member`]).
    NsFile {
        /// Snapshot sequence number.
        seq: u64,
        /// Network namespace inode.
        netns: u64,
        /// Mount namespace inode.
        mntns: u64,
        /// One of [`NS_FILES`].
        name: String,
    },
    /// The snapshot's metadata, its last member.
    Meta {
        /// Snapshot sequence number.
        seq: u64,
    },
}

/// Parses a tar member name; `None` for a name this format does not define.
pub fn parse_member(name: &str) -> Option<Member> {
    let rest = name.strip_prefix("snap/")?;
    let (seq_s, rest) = rest.split_once('/')?;
    if seq_s.len() < 8 || !seq_s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seq: u64 = seq_s.parse().ok()?;
    match rest {
        "fds" => Some(Member::Fds { seq }),
        "procs.jsonl" => Some(Member::Procs { seq }),
        "events.jsonl" => Some(Member::Events { seq }),
        "sockuse.jsonl" => Some(Member::SockUse { seq }),
        "tasks.jsonl" => Some(Member::Tasks { seq }),
        "meta.json" => Some(Member::Meta { seq }),
        "nsfiles.jsonl" => Some(Member::NsFiles { seq }),
        _ if rest.starts_with("nsfiles/") => {
            let (pair, name) = rest.strip_prefix("nsfiles/")?.split_once('/')?;
            let (netns, mntns) = pair.split_once('-')?;
            let name = NS_FILES.iter().find(|n| **n == name)?;
            Some(Member::NsFile {
                seq,
                netns: netns.parse().ok()?,
                mntns: mntns.parse().ok()?,
                name: name.to_string(),
            })
        }
        _ => {
            let rest = rest.strip_prefix("net/")?;
            let (ns, table) = rest.split_once('/')?;
            let netns: u64 = ns.parse().ok()?;
            if table.strip_suffix(".events") == Some(crate::conntrack::TABLE) {
                return Some(Member::ConntrackEvents { seq, netns });
            }
            let (table, full) = match table.strip_suffix(".delta") {
                Some(t) => (t, false),
                None => (table, true),
            };
            if !is_table(table) {
                return None;
            }
            Some(Member::Net {
                seq,
                netns,
                table: table.to_string(),
                full,
            })
        }
    }
}

/// A point in time as the recorder read it from the kernel's clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockReading {
    /// CLOCK_REALTIME, nanoseconds since the Unix epoch (what pcap timestamps use).
    pub realtime_ns: i64,
    /// CLOCK_MONOTONIC, nanoseconds; never stepped, stops during suspend.
    pub monotonic_ns: i64,
    /// CLOCK_BOOTTIME, nanoseconds since boot; like monotonic but counts suspend.
    pub boottime_ns: i64,
}

/// The bundle's `manifest.json`. Written when recording starts with
/// `status = "recording"`, then replaced (write to a temporary file, fsync,
/// rename) when it stops. A bundle whose manifest still says `recording` was
/// not stopped cleanly; its archives are still readable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// The recorder that wrote the bundle.
    pub tool: ToolInfo,
    /// Facts about the suspect host, read once at start.
    pub host: HostInfo,
    /// Who the recorder ran as.
    pub privileges: Privileges,
    /// The recording options in force.
    pub options: RecordOptions,
    /// The packet capture run by the recorder; `None` when the analyst ran
    /// their own.
    pub capture: Option<CaptureInfo>,
    /// Clocks read when recording started.
    pub started: TimeStamp,
    /// Clocks read when recording stopped; `None` while recording.
    pub ended: Option<TimeStamp>,
    /// `recording`, `complete`, `disk-full`, `error` or `killed` (second signal).
    pub status: RecorderStatus,
    /// Snapshot archives in order (names only, relative to the bundle).
    pub archives: Vec<String>,
    /// Capture files in order (names only), filled when recording stops.
    pub capture_files: Vec<String>,
    /// Number of snapshots written, filled when recording stops.
    pub snapshots: u64,
    /// Every error met while recording, summarized (per-snapshot details are
    /// in each snapshot's `meta.json`).
    pub errors: Vec<RecordError>,
    /// The evidence sources the recorder tried, in the order it prefers
    /// them, each with whether it was used and why not. Empty in bundles
    /// written before sources were recorded (periodic /proc reads only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceInfo>,
    /// Files the recorder deleted while recording, oldest first, as
    /// `--max-size` / `--keep` asked (a ring): what the bundle no longer
    /// holds. Absent when nothing was deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted: Vec<DeletedFile>,
}

/// A capture file or snapshot archive the recorder deleted while
/// recording, to stay within `--max-size` or `--keep`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedFile {
    /// Its name in the bundle.
    pub name: String,
    /// `capture` or `archive`.
    pub kind: String,
    /// When the recorder first saw the file, CLOCK_REALTIME ns (about when
    /// it was created).
    pub first_ns: i64,
    /// Its last modification, CLOCK_REALTIME ns (about its last packet or
    /// snapshot).
    pub last_ns: i64,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its SHA-256 (lowercase hex), computed just before deletion.
    pub sha256: String,
    /// When it was deleted, CLOCK_REALTIME ns.
    pub deleted_ns: i64,
    /// Which limit deleted it: `max-size` or `keep`.
    pub reason: String,
    /// How many files the entry stands for: 1, or more once the oldest
    /// entries were folded together to keep the list bounded (then `name`
    /// is the first of them, `through` the last, the time range and size
    /// cover them all, and `sha256` is the SHA-256 of their `sha256sum`
    /// lines, `HEX  NAME\n`, oldest first, folded in the same way).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub files: u64,
    /// The last file folded into this entry (see `files`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub through: Option<String>,
}

fn one() -> u64 {
    1
}

fn is_one(n: &u64) -> bool {
    *n == 1
}

/// One evidence source of the recorder and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// Source name, e.g. `proc-poll`, `tracepoint:sock:inet_sock_set_state`,
    /// `sock-diag`, `proc-connector`, `conntrack` (docs/archive-format.md
    /// lists them).
    pub name: String,
    /// Whether it was used.
    pub used: bool,
    /// Why it was not used (the errno or the missing facility), or a short
    /// note on how it was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// One socket event seen by an event source of the recorder, written to the
/// `events.jsonl` member of the next snapshot. It says that process `pid`
/// (thread `tid`) owned a socket with these endpoints at `mono_ns`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// The source that saw it (a [`SourceInfo::name`]), e.g.
    /// `tracepoint:sock:inet_sock_set_state`.
    pub source: String,
    /// What happened: `connect` (TCP active open), `listen`, `send` (UDP
    /// datagram), `close`, `lookup` (a socket looked up when its first
    /// packet was seen); docs/archive-format.md lists them.
    pub kind: String,
    /// CLOCK_MONOTONIC of the event, ns (convert with the snapshots'
    /// [`ClockReading`]s).
    pub mono_ns: i64,
    /// Process (thread group) id.
    pub pid: u32,
    /// Thread id.
    #[serde(default)]
    pub tid: u32,
    /// Field 22 of /proc/PID/stat, read when the event was handled;
    /// `None` when the process was already gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<u64>,
    /// /proc/PID/comm (or the kernel's task comm of the event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// Network namespace inode of the process, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<u64>,
    /// `tcp` or `udp`.
    pub proto: String,
    /// Local address, IPv4 dotted or IPv6 RFC 5952.
    pub local_ip: String,
    /// Local port.
    pub local_port: u16,
    /// Remote address; `None` for an unconnected socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_ip: Option<String>,
    /// Remote port; `None` for an unconnected socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_port: Option<u16>,
    /// Socket inode, when the source knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inode: Option<u64>,
}

/// Kind of a [`SockUseRecord`]: a run of calls, or a socket's tuple.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SockUseKind {
    /// A run of send or receive calls by one process on one socket.
    Use,
    /// A binding of a socket id to a tuple.
    Sock,
    /// A kind this build does not know (a newer recorder), kept as written;
    /// readers skip such lines.
    #[serde(untagged)]
    Other(String),
}

/// Direction of a [`SockUseKind::Use`] run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UseDir {
    /// sendmsg and friends: bytes the process wrote to the socket.
    Send,
    /// recvmsg and friends: bytes the process read from the socket.
    Recv,
}

/// One line of `sockuse.jsonl` (docs/archive-format.md, "sockuse.jsonl").
///
/// A `use` line is a run of calls of one process on one socket in one
/// direction; a `sock` line binds a socket id to its tuple from `mono_ns`
/// on. Fields that do not apply to a kind are absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SockUseRecord {
    /// `use` or `sock`.
    pub kind: SockUseKind,
    /// The source that saw it, e.g. `tracepoint:sock:sock_send_length`,
    /// `tracepoint:sock:inet_sock_set_state` or `udp-send-route`.
    pub source: String,
    /// Opaque socket id: 16 lowercase hex digits, a keyed hash (random key
    /// per recording) of the kernel's socket address. Unique among live
    /// sockets; may come back for a later socket once the first is freed.
    pub sk: String,
    /// `use`: `send` or `recv`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<UseDir>,
    /// `tcp` or `udp`.
    pub proto: String,
    /// `use`: address family, 4 or 6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<u8>,
    /// `use`: thread group id of the calling task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// `use`: thread id of the run's first call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<u32>,
    /// `use`: field 22 of /proc/PID/stat when the process was first seen;
    /// absent when it was already gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<u64>,
    /// `use`: comm of the process when first seen; absent likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// `use`: CLOCK_MONOTONIC ns of the run's first call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_ns: Option<i64>,
    /// `use`: CLOCK_MONOTONIC ns of the run's last call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ns: Option<i64>,
    /// `use`: number of calls with a positive return.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls: Option<u64>,
    /// `use`: sum of their return values (bytes really sent or read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// `sock`: CLOCK_MONOTONIC ns when the binding was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mono_ns: Option<i64>,
    /// `sock`: local address, as in [`EventRecord::local_ip`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_ip: Option<String>,
    /// `sock`: local port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_port: Option<u16>,
    /// `sock`: remote address; absent for a listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_ip: Option<String>,
    /// `sock`: remote port; absent for a listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_port: Option<u16>,
    /// `sock`: TCP state name after the change (`SYN_SENT`,
    /// `ESTABLISHED`, `CLOSE`...), when the source is a state change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

impl SockUseRecord {
    /// A `use` run with the fields every run has; the caller fills the
    /// optional process fields.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        source: &str,
        sk: String,
        dir: UseDir,
        proto: &str,
        family: u8,
        pid: u32,
        tid: u32,
        first_ns: i64,
        last_ns: i64,
        calls: u64,
        bytes: u64,
    ) -> SockUseRecord {
        SockUseRecord {
            kind: SockUseKind::Use,
            source: source.to_string(),
            sk,
            dir: Some(dir),
            proto: proto.to_string(),
            family: Some(family),
            pid: Some(pid),
            tid: Some(tid),
            start_time: None,
            comm: None,
            first_ns: Some(first_ns),
            last_ns: Some(last_ns),
            calls: Some(calls),
            bytes: Some(bytes),
            mono_ns: None,
            local_ip: None,
            local_port: None,
            remote_ip: None,
            remote_port: None,
            state: None,
        }
    }

    /// A `sock` binding of `sk` to a tuple at `mono_ns`.
    #[allow(clippy::too_many_arguments)]
    pub fn binding(
        source: &str,
        sk: String,
        mono_ns: i64,
        proto: &str,
        local: (String, u16),
        remote: Option<(String, u16)>,
        state: Option<&str>,
    ) -> SockUseRecord {
        let (remote_ip, remote_port) = match remote {
            Some((ip, port)) => (Some(ip), Some(port)),
            None => (None, None),
        };
        SockUseRecord {
            kind: SockUseKind::Sock,
            source: source.to_string(),
            sk,
            dir: None,
            proto: proto.to_string(),
            family: None,
            pid: None,
            tid: None,
            start_time: None,
            comm: None,
            first_ns: None,
            last_ns: None,
            calls: None,
            bytes: None,
            mono_ns: Some(mono_ns),
            local_ip: Some(local.0),
            local_port: Some(local.1),
            remote_ip,
            remote_port,
            state: state.map(str::to_string),
        }
    }
}

/// Kind of a [`TaskRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    /// A new process (not a new thread).
    Fork,
    /// A successful execve.
    Exec,
    /// A thread-group leader exited.
    Exit,
    /// A kind this build does not know, kept as written; readers skip it.
    #[serde(untagged)]
    Other(String),
}

/// One line of `tasks.jsonl`: a process fork, exec or exit seen by the
/// scheduler tracepoints (which work in every network namespace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// `fork`, `exec` or `exit`.
    pub kind: TaskKind,
    /// The source, e.g. `tracepoint:sched:sched_process_exec`.
    pub source: String,
    /// CLOCK_MONOTONIC ns of the tracepoint hit (exact).
    pub mono_ns: i64,
    /// Thread group id of the task (fork: the parent's).
    pub pid: u32,
    /// Thread id of the task.
    #[serde(default)]
    pub tid: u32,
    /// fork: thread group id of the parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_pid: Option<u32>,
    /// fork: thread group id of the child (= its tid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_pid: Option<u32>,
    /// exec: the file name as the tracepoint gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// exec: the pid before the exec (differs from `pid` when a
    /// non-leader thread exec'd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_pid: Option<u32>,
}

/// One line of `nsfiles.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum NsFileRecord {
    /// `/etc/NAME` of a (network, mount) namespace pair: archived in
    /// [`nsfile_member`] of the same snapshot (`stored` bytes), or why not.
    File {
        /// Network namespace inode.
        netns: u64,
        /// Mount namespace inode.
        mntns: u64,
        /// One of [`NS_FILES`].
        name: String,
        /// The process it was read through (`/proc/PID/root/etc/NAME`).
        pid: u32,
        /// Size in bytes (fstat), when opened.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u64>,
        /// Modification time, CLOCK_REALTIME ns, when opened.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mtime_ns: Option<i64>,
        /// Bytes archived (at most [`NS_FILE_MAX`]); 0 when not read.
        #[serde(default)]
        stored: u64,
        /// The file was longer than what was archived.
        #[serde(default)]
        truncated: bool,
        /// Why it was not archived: `missing` (no such file), or the
        /// error (`ELOOP: ...` for a symbolic link leading out of the
        /// process's root, `not a regular file`, `EACCES: ...`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A process and its namespace pair, when first seen, when its pair
    /// changed, and at keyframes.
    Process {
        /// Process id.
        pid: u32,
        /// Its start time (clock ticks since boot).
        start_time: u64,
        /// Network namespace inode.
        netns: u64,
        /// Mount namespace inode.
        mntns: u64,
    },
}

/// Most bytes of one `/etc` file archived per namespace pair.
pub const NS_FILE_MAX: u64 = 1 << 20;

/// A clock reading with its human form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimeStamp {
    /// RFC 3339 UTC with nanoseconds, for people.
    pub utc: String,
    /// The raw readings.
    pub clocks: ClockReading,
}

/// The recorder's identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolInfo {
    /// `procflow-snap`.
    pub name: String,
    /// Cargo package version.
    pub version: String,
    /// The full command line it was started with.
    pub argv: Vec<String>,
}

/// Host facts needed to read the archives correctly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    /// From uname(2), no name service involved.
    pub hostname: String,
    /// uname release, e.g. `6.1.0-18-amd64`.
    pub kernel_release: String,
    /// uname version string.
    pub kernel_version: String,
    /// uname machine, e.g. `x86_64`.
    pub arch: String,
    /// `little` or `big`: how /proc/net hex addresses must be read.
    pub byte_order: ByteOrder,
    /// /proc/sys/kernel/random/boot_id.
    pub boot_id: String,
    /// `btime` from /proc/stat: boot time, seconds since the epoch.
    pub btime: i64,
    /// sysconf(_SC_CLK_TCK): unit of process start times.
    pub clk_tck: u64,
    /// /sys/devices/system/clocksource/clocksource0/current_clocksource.
    pub clocksource: String,
    /// Network namespace inode of the recorder itself.
    pub netns: u64,
    /// Addresses configured on the recorder's namespace interfaces
    /// (getifaddrs), as `name address` strings' address part.
    pub addresses: Vec<HostAddress>,
}

/// One address of one interface of the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostAddress {
    /// Interface name.
    pub iface: String,
    /// The address, in its standard text form.
    pub ip: String,
}

/// The recorder's privileges, which decide what it could read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Privileges {
    /// Effective uid.
    pub euid: u32,
    /// `CapEff` from /proc/self/status, hex as the kernel prints it.
    pub cap_eff: String,
}

/// Options the recording ran with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordOptions {
    /// Target time between snapshots, milliseconds.
    pub interval_ms: u64,
    /// A keyframe is written every this many snapshots (and first in every archive).
    pub keyframe_every: u64,
    /// A full fd walk happens at least every this many milliseconds.
    pub full_walk_ms: u64,
    /// CPU budget in percent of one core, if set.
    pub max_cpu_percent: Option<f64>,
    /// Archive rotation size in bytes.
    pub archive_max_bytes: u64,
    /// Nice value the recorder ran at (19 unless `--nice` said otherwise);
    /// absent in bundles written before the option existed.
    #[serde(default)]
    pub nice: Option<i32>,
    /// `--max-size`: the bundle is kept under this many bytes by deleting
    /// its oldest capture files and archives ([`Manifest::deleted`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size_bytes: Option<u64>,
    /// `--keep`: capture files and archives older than this many
    /// milliseconds are deleted ([`Manifest::deleted`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_ms: Option<u64>,
}

/// How the recorder captured packets: itself (`method` `af-packet`) or
/// by running tcpdump (`method` `tcpdump`, or absent in bundles written
/// before the recorder captured itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptureInfo {
    /// `af-packet` (the recorder's own capture) or `tcpdump`; absent in
    /// older bundles, which all used tcpdump.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Path of the tcpdump binary used (tcpdump only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tcpdump_path: String,
    /// First line of `tcpdump --version` (tcpdump only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tcpdump_version: String,
    /// Full argument vector tcpdump was started with (tcpdump only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub argv: Vec<String>,
    /// Interface captured on.
    pub iface: String,
    /// BPF filter, if any.
    pub filter: Option<String>,
    /// How the capture ended, as text, filled when recording stops
    /// (tcpdump's exit status, or the recorder's first capture write error).
    pub exit: Option<String>,
    /// Packet counters for the whole capture, every rotated file included:
    /// tcpdump's own as it printed them when it stopped, or the recorder's
    /// (`captured` = packets the recorder took from the kernel, which the
    /// files must hold); absent when tcpdump did not print them (killed)
    /// and in bundles written before the field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counters: Option<CaptureCounters>,
    /// The recorder's own capture counters (method `af-packet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native: Option<NativeCounters>,
}

/// The counters of the recorder's own capture, for the whole recording.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NativeCounters {
    /// Packets taken from the kernel's ring (outgoing copies on loopback,
    /// which are seen twice, not counted).
    pub packets_received: u64,
    /// Packets written to the capture files.
    pub packets_written: u64,
    /// Bytes written to the capture files.
    pub bytes_written: u64,
    /// Packets the filter accepted, as the kernel counts them
    /// (`PACKET_STATISTICS` `tp_packets`, drops included).
    pub kernel_received: u64,
    /// Packets the kernel dropped because the ring was full
    /// (`tp_drops`).
    pub kernel_drops: u64,
    /// Times the ring was full (`tp_freeze_q_cnt`).
    pub ring_freezes: u64,
    /// Ring blocks the kernel marked as handed over after a loss
    /// (`TP_STATUS_LOSING`).
    pub losing_blocks: u64,
    /// Failed writes to the capture files.
    pub write_errors: u64,
    /// Packets received but not written because a write failed.
    pub packets_lost_writing: u64,
}

impl NativeCounters {
    /// Packets that are not in the capture files: dropped by the kernel or
    /// lost writing.
    pub fn lost(&self) -> u64 {
        self.kernel_drops + self.packets_lost_writing
    }
}

/// The counters tcpdump prints when it stops.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureCounters {
    /// `N packets captured`: written to the capture files.
    pub captured: u64,
    /// `N packets received by filter`.
    pub received_by_filter: u64,
    /// `N packets dropped by kernel`: lost before tcpdump could read them.
    pub dropped_by_kernel: u64,
    /// `N packets dropped by interface`, when the platform reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped_by_interface: Option<u64>,
}

impl CaptureCounters {
    /// The counters in tcpdump's standard error (`tcpdump.log`): the lines
    /// `N packets captured`, `N packets received by filter`, `N packets
    /// dropped by kernel`, `N packets dropped by interface`. tcpdump prints
    /// them when it stops, and also on SIGUSR1 while it runs; the last of
    /// each is what counts. `None` when the text holds none of them.
    pub fn from_tcpdump_log(text: &str) -> Option<CaptureCounters> {
        let mut c = CaptureCounters::default();
        let mut any = false;
        for line in text.lines() {
            let Some((num, rest)) = line.trim().split_once(' ') else {
                continue;
            };
            let Ok(v) = num.parse::<u64>() else { continue };
            match rest
                .trim_start_matches("packets ")
                .trim_start_matches("packet ")
            {
                "captured" => c.captured = v,
                "received by filter" => c.received_by_filter = v,
                "dropped by kernel" => c.dropped_by_kernel = v,
                "dropped by interface" => c.dropped_by_interface = Some(v),
                _ => continue,
            }
            any = true;
        }
        any.then_some(c)
    }
}

/// An error met while recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordError {
    /// What was being done: `read-net`, `read-fd`, `read-proc`, `write`, `capture`...
    pub what: String,
    /// The path involved, if any.
    pub path: Option<String>,
    /// The error text (errno name and message).
    pub error: String,
    /// How many times it happened (errors are summarized per kind and path
    /// family in the manifest; counted once per occurrence in `meta.json`).
    pub count: u64,
}

/// `meta.json` of one snapshot, the last member written for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// Sequence number, from 1, increasing by one across archives.
    pub seq: u64,
    /// `keyframe` (every table raw, fd listing full) or `delta`.
    pub kind: SnapshotKind,
    /// Clocks read before the /proc/net tables were read.
    pub before: ClockReading,
    /// Clocks read after the tables, before the fd walk.
    pub net_done: ClockReading,
    /// Clocks read after the fd walk and process reads.
    pub after: ClockReading,
    /// Each network namespace in use at this tick.
    pub netns: Vec<NetnsEntry>,
    /// Which fd directories were walked.
    pub fd_walk: FdWalk,
    /// Number of pids whose fd directory was read.
    pub pids_walked: u64,
    /// Number of pids in /proc at this tick.
    pub pids_total: u64,
    /// The recorder's own CPU time so far (user + system), nanoseconds.
    pub self_cpu_ns: u64,
    /// Errors met in this snapshot (EACCES on a pid's fds, vanished pids...).
    pub errors: Vec<RecordError>,
}

/// Keyframe or delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    /// Self-contained: raw tables and the full fd listing.
    Keyframe,
    /// Changes against the previous snapshot.
    Delta,
}

/// Which processes had their fd directory read in a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FdWalk {
    /// Every pid: the listing is complete for this instant. This includes
    /// the walk of all pids made when a socket inode appeared that no known
    /// pid held.
    Full,
    /// Only pids new since the previous snapshot.
    Changed,
    /// No fd was read (nothing changed).
    None,
}

/// One network namespace at one snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetnsEntry {
    /// Inode of /proc/PID/ns/net.
    pub inode: u64,
    /// The pid through which its tables were read.
    pub pid: u32,
    /// For each of [`NET_TABLES`]: how it is stored in this snapshot.
    pub tables: Vec<TableEntry>,
}

/// How one table of one namespace is stored in one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    /// Table name, one of [`NET_TABLES`].
    pub table: String,
    /// `full`: raw member; `delta`: `.delta` member; `unchanged`: no member,
    /// same rows as the previous snapshot; `missing`: not present on this
    /// kernel or unreadable (see errors).
    pub stored: TableStored,
}

/// Storage of one table in one snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableStored {
    /// Raw kernel text.
    Full,
    /// Delta against the previous snapshot.
    Delta,
    /// Identical identities to the previous snapshot: no member written.
    Unchanged,
    /// Not present or unreadable.
    Missing,
}

/// A process, recorded the first time a snapshot archive sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// Process id.
    pub pid: u32,
    /// Field 22 of /proc/PID/stat: start time in clock ticks since boot.
    /// (pid, start_time, boot id) identifies a process across pid reuse.
    pub start_time: u64,
    /// Parent pid (field 4 of stat).
    pub ppid: u32,
    /// Real uid (first `Uid:` value of /proc/PID/status).
    pub uid: u32,
    /// /proc/PID/comm without the newline.
    pub comm: String,
    /// readlink /proc/PID/exe; `None` when unreadable (kernel threads, EACCES).
    pub exe: Option<String>,
    /// /proc/PID/cmdline split at NUL bytes (lossy UTF-8).
    pub cmdline: Vec<String>,
    /// Inode of /proc/PID/ns/net.
    pub netns: u64,
    /// First line of /proc/PID/cgroup.
    pub cgroup: Option<String>,
    /// Container id (64 hex digits) found in the cgroup path, if any.
    pub container_id: Option<String>,
    /// CLOCK_MONOTONIC ns when this identity was read (for a title proven
    /// at a fork, the fork's time); absent in bundles written before it
    /// was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_ns: Option<i64>,
    /// CLOCK_MONOTONIC ns of the exec this identity follows (from
    /// `tasks.jsonl`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_ns: Option<i64>,
    /// Effective uid (second `Uid:` value of /proc/PID/status), when read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub euid: Option<u32>,
    /// Name of `uid` in the host's /etc/passwd, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Identity of a /proc/net table row: the fields that say *which* socket a
/// row is (local address, remote address, state, uid, inode), as opposed to
/// the queue and timer fields that change every tick. Deltas add and remove
/// rows by this key. Returns `None` for the header or a line with too few
/// fields. Works for tcp, udp, raw and icmp tables of both families.
pub fn row_identity(line: &str) -> Option<String> {
    let mut f = line.split_ascii_whitespace();
    let sl = f.next()?;
    if !sl.ends_with(':') {
        return None; // header (`sl`/`sk`) or garbage
    }
    let local = f.next()?;
    let remote = f.next()?;
    let st = f.next()?;
    let _queues = f.next()?;
    let _timer = f.next()?;
    let _retr = f.next()?;
    let uid = f.next()?;
    let _timeout = f.next()?;
    let inode = f.next()?;
    Some(format!("{local} {remote} {st} {uid} {inode}"))
}

/// Identity of a row of `table`: [`row_identity`] for the /proc/net
/// tables, [`crate::conntrack::row_identity`] for the conntrack table.
pub fn table_row_identity(table: &str, line: &str) -> Option<String> {
    if table == crate::conntrack::TABLE {
        crate::conntrack::row_identity(line)
    } else {
        row_identity(line)
    }
}

/// One line of a `.delta` table member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaLine<'a> {
    /// `+` followed by a raw row, added since the previous snapshot.
    Add(&'a str),
    /// `-` followed by the [`row_identity`] of a row that disappeared.
    Remove(&'a str),
}

/// Formats a delta line.
pub fn format_delta_line(d: &DeltaLine<'_>) -> String {
    match d {
        DeltaLine::Add(row) => format!("+{row}"),
        DeltaLine::Remove(id) => format!("-{id}"),
    }
}

/// Parses one delta line; `None` for anything else.
pub fn parse_delta_line(line: &str) -> Option<DeltaLine<'_>> {
    if let Some(r) = line.strip_prefix('+') {
        Some(DeltaLine::Add(r))
    } else {
        line.strip_prefix('-').map(DeltaLine::Remove)
    }
}

/// One line of the `fds` member.
///
/// In a keyframe the member lists every pid holding at least one socket,
/// and every pid whose fds could not be read. In a delta it lists only
/// changes: a `Holds` line replaces the pid's whole set, `Gone` says the pid
/// exited or holds no socket any more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FdLine {
    /// `PID START NETNS INODE,INODE,...`: the socket inodes the process holds.
    Holds {
        /// Process id.
        pid: u32,
        /// Start time (clock ticks since boot).
        start_time: u64,
        /// Network namespace inode of the process.
        netns: u64,
        /// Socket inodes from its `socket:[N]` fd links, sorted, deduplicated.
        inodes: Vec<u64>,
    },
    /// `-PID START`: no longer holds sockets (or exited).
    Gone {
        /// Process id.
        pid: u32,
        /// Start time (clock ticks since boot).
        start_time: u64,
    },
    /// `!PID START ERROR`: the fd directory could not be read (e.g. EACCES),
    /// so the process' sockets are unknown, not absent.
    Denied {
        /// Process id.
        pid: u32,
        /// Start time, 0 if stat was unreadable too.
        start_time: u64,
        /// Errno name, e.g. `EACCES`.
        error: String,
    },
}

impl FdLine {
    /// Formats the line (without newline).
    pub fn format(&self) -> String {
        match self {
            FdLine::Holds {
                pid,
                start_time,
                netns,
                inodes,
            } => {
                let list: Vec<String> = inodes.iter().map(|i| i.to_string()).collect();
                format!("{pid} {start_time} {netns} {}", list.join(","))
            }
            FdLine::Gone { pid, start_time } => format!("-{pid} {start_time}"),
            FdLine::Denied {
                pid,
                start_time,
                error,
            } => format!("!{pid} {start_time} {error}"),
        }
    }

    /// Parses one line; `None` when it is not of this form.
    pub fn parse(line: &str) -> Option<FdLine> {
        if let Some(rest) = line.strip_prefix('-') {
            let mut f = rest.split(' ');
            let pid = f.next()?.parse().ok()?;
            let start_time = f.next()?.parse().ok()?;
            if f.next().is_some() {
                return None;
            }
            return Some(FdLine::Gone { pid, start_time });
        }
        if let Some(rest) = line.strip_prefix('!') {
            let mut f = rest.splitn(3, ' ');
            let pid = f.next()?.parse().ok()?;
            let start_time = f.next()?.parse().ok()?;
            let error = f.next()?.to_string();
            return Some(FdLine::Denied {
                pid,
                start_time,
                error,
            });
        }
        let mut f = line.split(' ');
        let pid = f.next()?.parse().ok()?;
        let start_time = f.next()?.parse().ok()?;
        let netns = f.next()?.parse().ok()?;
        let list = f.next()?;
        if f.next().is_some() {
            return None;
        }
        let mut inodes = Vec::new();
        if !list.is_empty() {
            for s in list.split(',') {
                inodes.push(s.parse().ok()?);
            }
        }
        Some(FdLine::Holds {
            pid,
            start_time,
            netns,
            inodes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorder_status_round_trips_and_keeps_unknown_values() {
        for (v, text) in [
            (RecorderStatus::Recording, "recording"),
            (RecorderStatus::Complete, "complete"),
            (RecorderStatus::DiskFull, "disk-full"),
            (RecorderStatus::Error, "error"),
            (RecorderStatus::Killed, "killed"),
        ] {
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<RecorderStatus>(&json).unwrap(), v);
            assert_eq!(v.as_str(), text);
        }
        let odd: RecorderStatus = serde_json::from_str("\"paused\"").unwrap();
        assert_eq!(odd, RecorderStatus::Other("paused".into()));
        assert_eq!(serde_json::to_string(&odd).unwrap(), "\"paused\"");
        assert!(serde_json::from_str::<RecorderStatus>("3").is_err());
    }

    #[test]
    fn byte_order_is_little_or_big() {
        assert_eq!(serde_json::to_string(&ByteOrder::Big).unwrap(), "\"big\"");
        assert_eq!(
            serde_json::from_str::<ByteOrder>("\"little\"").unwrap(),
            ByteOrder::Little
        );
        assert!(serde_json::from_str::<ByteOrder>("\"middle\"").is_err());
    }

    #[test]
    fn member_names_round_trip() {
        assert_eq!(
            parse_member(&net_member(42, 4026531840, "tcp6", false)),
            Some(Member::Net {
                seq: 42,
                netns: 4026531840,
                table: "tcp6".into(),
                full: false
            })
        );
        assert_eq!(parse_member(&fds_member(7)), Some(Member::Fds { seq: 7 }));
        assert_eq!(
            parse_member(&procs_member(7)),
            Some(Member::Procs { seq: 7 })
        );
        assert_eq!(
            parse_member(&meta_member(123456789)),
            Some(Member::Meta { seq: 123456789 })
        );
        assert_eq!(
            parse_member(&sockuse_member(7)),
            Some(Member::SockUse { seq: 7 })
        );
        assert_eq!(
            parse_member(&tasks_member(7)),
            Some(Member::Tasks { seq: 7 })
        );
        assert_eq!(
            parse_member(&nsfiles_member(7)),
            Some(Member::NsFiles { seq: 7 })
        );
        assert_eq!(
            parse_member(&nsfile_member(7, 11, 12, "resolv.conf")),
            Some(Member::NsFile {
                seq: 7,
                netns: 11,
                mntns: 12,
                name: "resolv.conf".into()
            })
        );
        assert_eq!(parse_member("snap/00000001/nsfiles/1-2/passwd"), None);
        assert_eq!(parse_member("snap/00000001/nsfiles/1/hosts"), None);
        assert_eq!(parse_member("snap/00000001/nsfiles/1-x/hosts"), None);
        assert_eq!(parse_member("snap/00000001/net/1/bogus"), None);
        assert_eq!(
            parse_member(&net_member(3, 9, "conntrack", false)),
            Some(Member::Net {
                seq: 3,
                netns: 9,
                table: "conntrack".into(),
                full: false
            })
        );
        assert_eq!(
            parse_member(&conntrack_events_member(3, 9)),
            Some(Member::ConntrackEvents { seq: 3, netns: 9 })
        );
        assert_eq!(parse_member("snap/00000001/net/1/tcp.events"), None);
        assert_eq!(parse_member("snap/1/fds"), None);
        assert_eq!(parse_archive_name(&archive_name(3)), Some(3));
        assert_eq!(parse_archive_name("snapshots-3.tar"), None);
    }

    #[test]
    fn sockuse_records_write_only_their_kinds_fields() {
        let run = SockUseRecord::run(
            "tracepoint:sock:sock_recv_length",
            "0123456789abcdef".into(),
            UseDir::Recv,
            "udp",
            6,
            7,
            8,
            100,
            150,
            2,
            60,
        );
        let json = serde_json::to_string(&run).unwrap();
        assert!(json.starts_with(r#"{"kind":"use","#), "{json}");
        assert!(json.contains(r#""dir":"recv""#) && !json.contains("local_ip"));
        assert_eq!(serde_json::from_str::<SockUseRecord>(&json).unwrap(), run);
        let bind = SockUseRecord::binding(
            "udp-send-route",
            "0123456789abcdef".into(),
            99,
            "udp",
            ("10.0.0.1".into(), 5353),
            None,
            None,
        );
        let json = serde_json::to_string(&bind).unwrap();
        assert!(!json.contains("remote") && !json.contains("dir") && !json.contains("state"));
        assert_eq!(serde_json::from_str::<SockUseRecord>(&json).unwrap(), bind);
        let t = TaskRecord {
            kind: TaskKind::Exec,
            source: "tracepoint:sched:sched_process_exec".into(),
            mono_ns: 5,
            pid: 3,
            tid: 3,
            parent_pid: None,
            child_pid: None,
            filename: Some("/bin/sh".into()),
            old_pid: Some(3),
        };
        let json = serde_json::to_string(&t).unwrap();
        assert!(!json.contains("child_pid"));
        assert_eq!(serde_json::from_str::<TaskRecord>(&json).unwrap(), t);
    }

    #[test]
    fn process_records_without_the_new_fields_still_read() {
        let old = r#"{"pid":1,"start_time":2,"ppid":0,"uid":0,"comm":"init","exe":null,"cmdline":[],"netns":3,"cgroup":null,"container_id":null}"#;
        let p: ProcessRecord = serde_json::from_str(old).unwrap();
        assert_eq!(
            (p.seen_ns, p.exec_ns, p.euid, &p.user),
            (None, None, None, &None)
        );
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, old, "absent new fields are not written");
    }

    #[test]
    fn row_identity_skips_header_and_volatile_fields() {
        // Linux 6.1 (Debian 12) /proc/net/tcp.
        let header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";
        let row = "   0: 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 21357 1 0000000000000000 100 0 0 10 0";
        let busier = "   5: 0100007F:0277 00000000:0000 0A 00000003:00000000 01:0000001F 00000000     0        0 21357 1 0000000000000000 100 0 0 10 0";
        assert_eq!(row_identity(header), None);
        assert_eq!(
            row_identity(row).unwrap(),
            "0100007F:0277 00000000:0000 0A 0 21357"
        );
        assert_eq!(row_identity(row), row_identity(busier));
        assert_eq!(row_identity("   0: 0100007F:0277"), None);
    }

    #[test]
    fn fd_lines_round_trip() {
        for l in [
            FdLine::Holds {
                pid: 1,
                start_time: 5,
                netns: 4026531840,
                inodes: vec![10, 20],
            },
            FdLine::Holds {
                pid: 2,
                start_time: 5,
                netns: 4026531840,
                inodes: vec![],
            },
            FdLine::Gone {
                pid: 3,
                start_time: 9,
            },
            FdLine::Denied {
                pid: 4,
                start_time: 0,
                error: "EACCES".into(),
            },
        ] {
            assert_eq!(FdLine::parse(&l.format()), Some(l));
        }
        assert_eq!(FdLine::parse("x 1 2 3"), None);
        assert_eq!(FdLine::parse("1 2 3 4,x"), None);
    }

    #[test]
    fn delta_lines_round_trip() {
        let a = DeltaLine::Add("   0: 0100007F:0277 00000000:0000 0A");
        assert_eq!(parse_delta_line(&format_delta_line(&a)), Some(a));
        let r = DeltaLine::Remove("0100007F:0277 00000000:0000 0A 0 21357");
        assert_eq!(parse_delta_line(&format_delta_line(&r)), Some(r));
        assert_eq!(parse_delta_line("garbage"), None);
    }
}
