//! Each namespace's `/etc/hosts` and `/etc/resolv.conf`, as its processes
//! see them: the names a host resolves without DNS on the wire, and the
//! resolvers it asks.
//!
//! A file is read through `/proc/PID/root/etc/NAME`, which follows the
//! process's mount namespace and root: `ip netns exec NAME` bind-mounts
//! `/etc/netns/NAME/{hosts,resolv.conf}` there, and a container has its
//! own. Processes of one network namespace can differ (containers sharing
//! a network namespace, `--network host`), so files are kept per (network
//! namespace, mount namespace) pair.
//!
//! The files are the suspect's: a process may have made `etc/hosts` a
//! symbolic link to `/root/.ssh/id_rsa` (absolute, meant to be resolved in
//! the recorder's root), a FIFO that never ends, or a 10 GB file. So:
//! - the path is opened with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`
//!   from the process's root directory: symbolic links and `..` resolve
//!   inside that root, never in the recorder's (`/etc/resolv.conf ->
//!   ../run/systemd/resolve/stub-resolv.conf` is followed, inside);
//! - without openat2 (Linux before 5.6) `etc` and the file are opened with
//!   `O_NOFOLLOW`: a symbolic link is not followed and recorded as such;
//! - only a regular file is read (`O_NONBLOCK` at open, then fstat), at
//!   most [`NS_FILE_MAX`] bytes, the cut recorded.
//!
//! Cost: per snapshot, two opens and fstats per namespace pair; a file is
//! read only when its (device, inode, size, mtime, ctime) changed, and at
//! keyframes (so every archive holds them). A process's mount namespace is
//! read once (`readlink /proc/PID/ns/mnt`), again when its network
//! namespace changed, and at keyframes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};

use procflow_format::layout::{self, NsFileRecord, NS_FILES, NS_FILE_MAX};
use procflow_format::procfs::parse_ns_link;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

use crate::ksys;
use crate::live::Proc;

/// Pids per namespace pair through which its files are read.
const CANDIDATES: usize = 4;

/// What was archived of one file, to tell a change.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// (device, inode, size, mtime ns, ctime ns).
    File(u64, u64, u64, i64, i64),
    /// Absent, or unreadable: the error.
    NotRead(String),
}

/// The recorder's memory of namespace files between snapshots.
#[derive(Debug, Default)]
pub struct NsFiles {
    /// pid -> (start time, network namespace, mount namespace).
    procs: HashMap<u32, (u64, u64, u64)>,
    /// (netns, mntns, file) -> what was last archived.
    seen: HashMap<(u64, u64, &'static str), Seen>,
}

impl NsFiles {
    /// One snapshot: `procs` are the live processes as (pid, start time,
    /// network namespace); the members (`nsfiles.jsonl` and the files that
    /// changed) are appended to `members`.
    pub fn tick(
        &mut self,
        proc: &Proc,
        seq: u64,
        keyframe: bool,
        procs: impl Iterator<Item = (u32, u64, u64)>,
        members: &mut Vec<(String, Vec<u8>)>,
    ) {
        let start = members.len();
        let mut lines: Vec<NsFileRecord> = Vec::new();
        let mut live: HashSet<u32> = HashSet::new();
        let mut pairs: BTreeMap<(u64, u64), Vec<u32>> = BTreeMap::new();
        for (pid, start_time, netns) in procs {
            if netns == 0 {
                continue;
            }
            live.insert(pid);
            let known = self
                .procs
                .get(&pid)
                .filter(|k| k.0 == start_time && k.1 == netns && !keyframe);
            let mntns = match known {
                Some(k) => k.2,
                None => {
                    let Some(m) = read_mntns(proc, pid) else {
                        self.procs.remove(&pid);
                        continue;
                    };
                    let changed = self.procs.insert(pid, (start_time, netns, m))
                        != Some((start_time, netns, m));
                    if changed || keyframe {
                        lines.push(NsFileRecord::Process {
                            pid,
                            start_time,
                            netns,
                            mntns: m,
                        });
                    }
                    m
                }
            };
            let c = pairs.entry((netns, mntns)).or_default();
            if c.len() < CANDIDATES {
                c.push(pid);
            }
        }
        self.procs.retain(|p, _| live.contains(p));
        self.seen.retain(|k, _| pairs.contains_key(&(k.0, k.1)));
        for (&(netns, mntns), pids) in &pairs {
            for name in NS_FILES {
                self.file(
                    proc,
                    seq,
                    keyframe,
                    (netns, mntns),
                    pids,
                    name,
                    &mut lines,
                    members,
                );
            }
        }
        if lines.is_empty() {
            return;
        }
        let mut text = Vec::new();
        for l in &lines {
            if let Ok(mut j) = serde_json::to_vec(l) {
                text.append(&mut j);
                text.push(b'\n');
            }
        }
        // The jsonl first: a reader meets the records before the bytes.
        members.insert(start, (layout::nsfiles_member(seq), text));
    }

    #[allow(clippy::too_many_arguments)]
    fn file(
        &mut self,
        proc: &Proc,
        seq: u64,
        keyframe: bool,
        (netns, mntns): (u64, u64),
        pids: &[u32],
        name: &'static str,
        lines: &mut Vec<NsFileRecord>,
        members: &mut Vec<(String, Vec<u8>)>,
    ) {
        let mut last = None;
        for &pid in pids {
            match open_in_root(proc, pid, name) {
                Err(e) if e.kind() == io::ErrorKind::NotFound && !root_exists(proc, pid) => {
                    // The process is gone: another one of the pair.
                    continue;
                }
                r => {
                    last = Some((pid, r));
                    break;
                }
            }
        }
        let Some((pid, opened)) = last else {
            return;
        };
        let key = (netns, mntns, name);
        let record = |size, mtime_ns, stored, truncated, error| NsFileRecord::File {
            netns,
            mntns,
            name: name.to_string(),
            pid,
            size,
            mtime_ns,
            stored,
            truncated,
            error,
        };
        let (file, st) = match opened.and_then(|f| {
            let f = std::fs::File::from(f);
            let st = f.metadata()?;
            Ok((f, st))
        }) {
            Ok(x) => x,
            Err(e) => {
                let why = if e.kind() == io::ErrorKind::NotFound {
                    "missing".to_string()
                } else {
                    crate::sys::errno_name(&e).to_string() + ": " + &e.to_string()
                };
                let seen = Seen::NotRead(why.clone());
                if keyframe || self.seen.get(&key) != Some(&seen) {
                    lines.push(record(None, None, 0, false, Some(why)));
                    self.seen.insert(key, seen);
                }
                return;
            }
        };
        let mtime_ns = st.mtime().saturating_mul(1_000_000_000) + st.mtime_nsec();
        let ctime_ns = st.ctime().saturating_mul(1_000_000_000) + st.ctime_nsec();
        let size = st.size();
        if !st.file_type().is_file() {
            let seen = Seen::NotRead("not a regular file".into());
            if keyframe || self.seen.get(&key) != Some(&seen) {
                lines.push(record(
                    None,
                    Some(mtime_ns),
                    0,
                    false,
                    Some("not a regular file".into()),
                ));
                self.seen.insert(key, seen);
            }
            return;
        }
        let seen = Seen::File(st.dev(), st.ino(), size, mtime_ns, ctime_ns);
        if !keyframe && self.seen.get(&key) == Some(&seen) {
            return;
        }
        let mut data = Vec::with_capacity(size.min(NS_FILE_MAX) as usize);
        let mut f = file;
        let read = f.by_ref().take(NS_FILE_MAX + 1).read_to_end(&mut data);
        if let Err(e) = read {
            let why = crate::sys::errno_name(&e).to_string() + ": " + &e.to_string();
            lines.push(record(
                Some(size),
                Some(mtime_ns),
                0,
                false,
                Some(why.clone()),
            ));
            self.seen.insert(key, Seen::NotRead(why));
            return;
        }
        let truncated = data.len() as u64 > NS_FILE_MAX;
        data.truncate(NS_FILE_MAX as usize);
        lines.push(record(
            Some(size),
            Some(mtime_ns),
            data.len() as u64,
            truncated,
            None,
        ));
        if !data.is_empty() {
            members.push((layout::nsfile_member(seq, netns, mntns, name), data));
        }
        self.seen.insert(key, seen);
    }
}

/// The mount namespace of a process; `None` when unreadable (gone,
/// EACCES, a fixture tree without it).
fn read_mntns(proc: &Proc, pid: u32) -> Option<u64> {
    let target = std::fs::read_link(proc.path(pid, "ns/mnt")).ok()?;
    parse_ns_link(
        std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str()),
        "mnt",
    )
}

fn root_exists(proc: &Proc, pid: u32) -> bool {
    std::path::Path::new(&proc.path(pid, "ns")).exists()
}

/// Opens `etc/NAME` inside the root of `pid`, never leaving that root (see
/// the module's documentation).
fn open_in_root(proc: &Proc, pid: u32, name: &str) -> io::Result<OwnedFd> {
    let root: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(proc.path(pid, "root"))?
        .into();
    if let Some(f) = ksys::fs::open_in_root(root.as_fd(), &format!("etc/{name}"))? {
        return Ok(f);
    }
    // No openat2: no symbolic link is followed at all.
    let etc = ksys::fs::open_at_nofollow(root.as_fd(), "etc", true)?;
    ksys::fs::open_at_nofollow(etc.as_fd(), name, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use procflow_format::layout::parse_member;

    fn records(members: &[(String, Vec<u8>)]) -> Vec<NsFileRecord> {
        members
            .iter()
            .filter(|m| m.0.ends_with("nsfiles.jsonl"))
            .flat_map(|m| {
                String::from_utf8_lossy(&m.1)
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The recorder's own root: its hosts file read once, then not again
    /// until a keyframe; the jsonl comes before the file bytes.
    #[test]
    fn own_namespace_read_once_then_at_keyframes() {
        let proc = Proc::live();
        let me = std::process::id();
        let netns = proc.read_netns(me).unwrap();
        let mut nf = NsFiles::default();
        let mut members = Vec::new();
        nf.tick(&proc, 1, true, [(me, 1, netns)].into_iter(), &mut members);
        let recs = records(&members);
        assert!(matches!(recs[0], NsFileRecord::Process { pid, .. } if pid == me));
        let files: Vec<_> = recs
            .iter()
            .filter(|r| matches!(r, NsFileRecord::File { .. }))
            .collect();
        assert_eq!(files.len(), 2, "{recs:?}");
        assert!(members[0].0.ends_with("nsfiles.jsonl"));
        for m in &members[1..] {
            assert!(matches!(
                parse_member(&m.0),
                Some(layout::Member::NsFile { .. })
            ));
            assert!(m.1.len() as u64 <= NS_FILE_MAX);
        }
        let mut again = Vec::new();
        nf.tick(&proc, 2, false, [(me, 1, netns)].into_iter(), &mut again);
        assert!(again.is_empty(), "unchanged files are not archived again");
        let mut key = Vec::new();
        nf.tick(&proc, 3, true, [(me, 1, netns)].into_iter(), &mut key);
        assert_eq!(records(&key).len(), recs.len());
    }

    /// A hostile root: an absolute symbolic link, a FIFO and a file past
    /// the bound. Needs a live /proc whose `root` this test can fake: a
    /// fixture tree whose PID/root is a directory the test made.
    #[test]
    fn hostile_roots_stay_inside_and_bounded() {
        let dir = std::env::temp_dir().join(format!("procflow-nsfiles-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let root = |pid: u32| dir.join(format!("{pid}/root/etc"));
        for pid in [10, 11, 12] {
            std::fs::create_dir_all(root(pid)).unwrap();
            std::fs::create_dir_all(dir.join(format!("{pid}/ns"))).unwrap();
        }
        // 10: hosts points at a file of the recorder's root (absolute) and
        // resolv.conf climbs out with `..`: both resolve inside the root,
        // where there is nothing.
        let secret = dir.join("secret");
        std::fs::write(&secret, "SECRET").unwrap();
        std::os::unix::fs::symlink(&secret, root(10).join("hosts")).unwrap();
        std::os::unix::fs::symlink("../../../../secret", root(10).join("resolv.conf")).unwrap();
        // 11: a FIFO that would block a plain read forever.
        ksys::fs::mkfifo(&root(11).join("hosts")).unwrap();
        // 12: a hosts file over the bound, and a relative link inside.
        let big = vec![b'#'; NS_FILE_MAX as usize + 100];
        std::fs::write(root(12).join("hosts"), &big).unwrap();
        std::fs::write(root(12).join("real.conf"), "nameserver 192.0.2.53\n").unwrap();
        std::os::unix::fs::symlink("real.conf", root(12).join("resolv.conf")).unwrap();
        let proc = Proc::at(&dir);
        let mut nf = NsFiles::default();
        let mut members = Vec::new();
        // No ns/mnt in the fixture: the pair is read through `file` directly.
        let mut lines = Vec::new();
        for (i, pid) in [10u32, 11, 12].into_iter().enumerate() {
            for name in NS_FILES {
                nf.file(
                    &proc,
                    1,
                    true,
                    (1, i as u64),
                    &[pid],
                    name,
                    &mut lines,
                    &mut members,
                );
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        let find = |mntns: u64, n: &str| {
            lines
                .iter()
                .find(|r| matches!(r, NsFileRecord::File { mntns: m, name, .. } if *m == mntns && name == n))
                .cloned()
                .unwrap()
        };
        for m in &members {
            assert!(!m.1.starts_with(b"SECRET"), "{} read outside the root", m.0);
        }
        let NsFileRecord::File { error, stored, .. } = find(0, "hosts") else {
            unreachable!()
        };
        assert_eq!((error.as_deref(), stored), (Some("missing"), 0));
        let NsFileRecord::File { error, .. } = find(1, "hosts") else {
            unreachable!()
        };
        assert_eq!(error.as_deref(), Some("not a regular file"));
        let NsFileRecord::File {
            stored,
            truncated,
            size,
            ..
        } = find(2, "hosts")
        else {
            unreachable!()
        };
        assert_eq!(
            (stored, truncated, size),
            (NS_FILE_MAX, true, Some(NS_FILE_MAX + 100))
        );
        let NsFileRecord::File { stored, error, .. } = find(2, "resolv.conf") else {
            unreachable!()
        };
        assert_eq!((stored, error), (22, None));
    }
}
