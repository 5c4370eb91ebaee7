//! Reads of the live /proc: pid listing, process identity, fd walks,
//! /proc/net tables. Everything that can fail returns the I/O error so the
//! caller can count it; nothing here decides policy.

use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;

use crate::layout::ProcessRecord;
use crate::procfs::{
    container_id, first_cgroup_line, parse_ns_link, parse_socket_link, parse_stat,
    parse_status_uid, split_cmdline, StatFields,
};

/// Reads a whole file into `buf` (cleared first). The read loops until EOF:
/// seq_file hands out at most about a page per read(2), so one call is not
/// enough; `buf` keeps its capacity between calls so a big table is read
/// without regrowing it every tick.
pub fn read_into(path: &str, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    let mut f = std::fs::File::open(path)?;
    // Plain reads until end of file: `read_to_end` would first ask the
    // size (fstat) and position (lseek), two system calls per file that a
    // /proc file answers with 0 anyway. A /proc file hands out at most a
    // page per read, so a window of that order is zeroed each time.
    const WINDOW: usize = 16 * 1024;
    loop {
        let at = buf.len();
        buf.resize(at + WINDOW, 0);
        match f.read(&mut buf[at..]) {
            Ok(0) => {
                buf.truncate(at);
                return Ok(());
            }
            Ok(n) => buf.truncate(at + n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => buf.truncate(at),
            Err(e) => {
                buf.truncate(at);
                return Err(e);
            }
        }
    }
}

/// A /proc tree: the live one, or a fixture copy of one for tests. Paths
/// in errors are named under its root.
#[derive(Debug, Clone)]
pub struct Proc {
    root: String,
}

impl Default for Proc {
    fn default() -> Self {
        Proc::live()
    }
}

impl Proc {
    /// The live /proc.
    pub fn live() -> Proc {
        Proc {
            root: "/proc".into(),
        }
    }

    /// A /proc tree at `root`.
    pub fn at(root: &std::path::Path) -> Proc {
        Proc {
            root: root.to_string_lossy().trim_end_matches('/').to_string(),
        }
    }

    /// The root directory.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// `ROOT/PID/rest`.
    pub fn path(&self, pid: u32, rest: &str) -> String {
        format!("{}/{pid}/{rest}", self.root)
    }

    /// Pids (thread group leaders) listed in the root, sorted.
    pub fn list_pids(&self) -> io::Result<Vec<u32>> {
        let mut pids = Vec::with_capacity(512);
        for e in std::fs::read_dir(&self.root)? {
            let Ok(e) = e else { continue };
            let name = e.file_name();
            let b = name.as_bytes();
            if !b.is_empty() && b.iter().all(u8::is_ascii_digit) {
                if let Some(pid) = std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()) {
                    pids.push(pid);
                }
            }
        }
        pids.sort_unstable();
        Ok(pids)
    }

    /// Reads and parses PID/stat.
    pub fn read_stat(&self, pid: u32, buf: &mut Vec<u8>) -> io::Result<StatFields> {
        let p = self.path(pid, "stat");
        read_into(&p, buf)?;
        parse_stat(&String::from_utf8_lossy(buf)).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{p}: expected `pid (comm) state ppid ...` with 22+ fields"),
            )
        })
    }

    /// Whether this is the live /proc.
    pub fn is_live(&self) -> bool {
        self.root == "/proc"
    }

    /// The network namespace inode of a process (readlink PID/ns/net).
    pub fn read_netns(&self, pid: u32) -> io::Result<u64> {
        self.read_netns_of(&pid.to_string())
    }

    /// [`Proc::read_netns`] of `pid` given as text (`self` too).
    pub fn read_netns_of(&self, pid: &str) -> io::Result<u64> {
        let p = format!("{}/{pid}/ns/net", self.root);
        let target = std::fs::read_link(&p)?;
        parse_ns_link(target.as_os_str().as_bytes(), "net").ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{p}: expected a `net:[N]` link target"),
            )
        })
    }

    /// The socket inodes a process holds (sorted, deduplicated), from its
    /// fd links. An fd closed during the walk is skipped.
    pub fn read_socket_inodes(&self, pid: u32) -> io::Result<Vec<u64>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(self.path(pid, "fd"))? {
            let Ok(e) = e else { continue };
            if let Ok(target) = std::fs::read_link(e.path()) {
                if let Some(ino) = parse_socket_link(target.as_os_str().as_bytes()) {
                    out.push(ino);
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// [`read_process_record`] under this root.
    pub fn read_process_record(
        &self,
        pid: u32,
        stat: &StatFields,
        netns: u64,
        buf: &mut Vec<u8>,
    ) -> (ProcessRecord, Vec<(String, io::Error)>) {
        process_record(self, pid, stat, netns, buf)
    }
}

/// Pids (thread group leaders) listed in /proc, sorted.
pub fn list_pids() -> io::Result<Vec<u32>> {
    Proc::live().list_pids()
}

/// Reads and parses /proc/PID/stat.
pub fn read_stat(pid: u32, buf: &mut Vec<u8>) -> io::Result<StatFields> {
    Proc::live().read_stat(pid, buf)
}

/// The network namespace inode of a process (readlink /proc/PID/ns/net);
/// `pid` may be `self`.
pub fn read_netns(pid: &str) -> io::Result<u64> {
    Proc::live().read_netns_of(pid)
}

/// The socket inodes a process holds (sorted, deduplicated), from its fd
/// links. An fd closed during the walk is skipped.
pub fn read_socket_inodes(pid: u32) -> io::Result<Vec<u64>> {
    Proc::live().read_socket_inodes(pid)
}

/// Reads the identity of a process. `stat` is its already-read stat line;
/// fields that cannot be read are left empty (`exe: None` for kernel
/// threads and EACCES). Returns the errors met, as (path, error).
pub fn read_process_record(
    pid: u32,
    stat: &StatFields,
    netns: u64,
    buf: &mut Vec<u8>,
) -> (ProcessRecord, Vec<(String, io::Error)>) {
    process_record(&Proc::live(), pid, stat, netns, buf)
}

fn process_record(
    proc_: &Proc,
    pid: u32,
    stat: &StatFields,
    netns: u64,
    buf: &mut Vec<u8>,
) -> (ProcessRecord, Vec<(String, io::Error)>) {
    let mut errs = Vec::new();
    let mut rec = ProcessRecord {
        pid,
        start_time: stat.start_time,
        ppid: stat.ppid,
        uid: 0,
        comm: stat.comm.clone(),
        exe: None,
        cmdline: Vec::new(),
        netns,
        cgroup: None,
        container_id: None,
        seen_ns: None,
        exec_ns: None,
        euid: None,
        user: None,
    };
    let p = proc_.path(pid, "status");
    match read_into(&p, buf) {
        Ok(()) => match parse_status_uid(&String::from_utf8_lossy(buf)) {
            Some(u) => {
                rec.uid = u;
                rec.euid = parse_status_euid(&String::from_utf8_lossy(buf));
            }
            None => errs.push((
                p,
                io::Error::new(io::ErrorKind::InvalidData, "no `Uid:` line"),
            )),
        },
        Err(e) => errs.push((p, e)),
    }
    let p = proc_.path(pid, "comm");
    match read_into(&p, buf) {
        Ok(()) => {
            let s = String::from_utf8_lossy(buf);
            rec.comm = s.strip_suffix('\n').unwrap_or(&s).to_string();
        }
        Err(e) => errs.push((p, e)),
    }
    let p = proc_.path(pid, "exe");
    match std::fs::read_link(&p) {
        Ok(t) => rec.exe = Some(t.to_string_lossy().into_owned()),
        // Kernel threads have no exe: ENOENT is their normal answer.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => errs.push((p, e)),
    }
    let p = proc_.path(pid, "cmdline");
    match read_into(&p, buf) {
        Ok(()) => rec.cmdline = split_cmdline(buf),
        Err(e) => errs.push((p, e)),
    }
    let p = proc_.path(pid, "cgroup");
    match read_into(&p, buf) {
        Ok(()) => {
            rec.cgroup = first_cgroup_line(&String::from_utf8_lossy(buf));
            rec.container_id = rec.cgroup.as_deref().and_then(container_id);
        }
        Err(e) => errs.push((p, e)),
    }
    if proc_.is_live() {
        rec.seen_ns = Some(crate::sys::read_clocks().monotonic_ns);
    }
    (rec, errs)
}

/// The effective uid: second value of the `Uid:` line of /proc/PID/status.
fn parse_status_euid(text: &str) -> Option<u32> {
    text.lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_ascii_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}
