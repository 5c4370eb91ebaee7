//! Always-on recording (`--max-size`, `--keep`): the bundle as a ring of
//! capture files and snapshot archives, the oldest deleted first.
//!
//! Both kinds of file rotate (capture files by size or time, archives by
//! size, and by time under `--keep`); each archive begins with a keyframe,
//! so the archives that remain read on their own. At every tick the ring
//! lists the bundle directory: while it is larger than 7/8 of `--max-size`
//! (room for the files being written to grow until the next tick), the
//! finished file that ended first is deleted, together with every other
//! finished file (of either kind) that ended no later, so packets and the
//! snapshots that attribute them leave together; under `--keep`, every
//! finished file that ended longer ago than the duration is deleted. The
//! files being written (the open archive, the newest capture file) are
//! never deleted, so a cap smaller than they are is exceeded, and said.
//!
//! Each deletion is recorded first: name, kind, time range, size and
//! SHA-256 go into the manifest's `deleted` list ([`DeletedFile`]), so the
//! bundle says what it no longer holds.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::layout::{parse_archive_name, DeletedFile, CAPTURE_PREFIX};

/// What the ring keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// The bundle directory stays under this many bytes (`--max-size`).
    pub max_bytes: Option<u64>,
    /// Finished files older than this are deleted (`--keep`).
    pub keep: Option<Duration>,
}

impl Limits {
    /// Whether any limit is set.
    pub fn is_set(&self) -> bool {
        self.max_bytes.is_some() || self.keep.is_some()
    }
}

/// The ring's state: when each file was first seen.
#[derive(Debug, Default)]
pub struct Ring {
    limits: Limits,
    first_seen: HashMap<String, i64>,
    /// Whether the cap could not be met because only files being written
    /// were left (said once).
    pub over_cap_said: bool,
}

/// One file of the bundle directory as the ring sees it.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    kind: &'static str,
    bytes: u64,
    last_ns: i64,
}

fn ns(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The capture files in `names`, in the order the capture wrote them
/// (name length, then name: `x.pcap`, `x.pcap1`, ..., `x.pcap10`).
fn capture_order(names: &mut [String]) {
    names.sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
}

/// What [`Ring::enforce`] did.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// Files deleted, oldest first.
    pub deleted: Vec<DeletedFile>,
    /// Errors met (a file that could not be hashed or deleted stays).
    pub errors: Vec<String>,
    /// Bytes in the directory afterwards.
    pub bytes: u64,
}

impl Ring {
    /// A ring keeping `limits`.
    pub fn new(limits: Limits) -> Ring {
        Ring {
            limits,
            ..Ring::default()
        }
    }

    /// Lists `dir` and deletes what the limits ask; `writing` names the
    /// archive being written (never deleted, nor is the newest capture
    /// file). `now_ns` is CLOCK_REALTIME.
    pub fn enforce(&mut self, dir: &Path, writing: Option<&str>, now_ns: i64) -> Outcome {
        let mut out = Outcome::default();
        let mut total: u64 = 0;
        let mut entries: Vec<Entry> = Vec::new();
        let mut captures: Vec<String> = Vec::new();
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) => {
                out.errors.push(format!("listing {}: {e}", dir.display()));
                return out;
            }
        };
        for e in rd.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            total = total.saturating_add(meta.len());
            let name = e.file_name().to_string_lossy().into_owned();
            let kind = if name.starts_with(CAPTURE_PREFIX) {
                captures.push(name.clone());
                "capture"
            } else if parse_archive_name(&name).is_some() {
                "archive"
            } else {
                continue;
            };
            self.first_seen.entry(name.clone()).or_insert(now_ns);
            entries.push(Entry {
                name,
                kind,
                bytes: meta.len(),
                last_ns: meta.modified().map(ns).unwrap_or(now_ns),
            });
        }
        capture_order(&mut captures);
        let newest_capture = captures.last().cloned();
        let mut done: Vec<Entry> = entries
            .into_iter()
            .filter(|e| {
                Some(e.name.as_str()) != writing && Some(&e.name) != newest_capture.as_ref()
            })
            .collect();
        // Oldest first: by end, then by name (archives and rotated captures
        // are numbered in order).
        done.sort_by(|a, b| (a.last_ns, &a.name).cmp(&(b.last_ns, &b.name)));
        let mut doomed: Vec<(Entry, &'static str)> = Vec::new();
        if let Some(keep) = self.limits.keep {
            let keep_ns = i64::try_from(keep.as_nanos()).unwrap_or(i64::MAX);
            let cutoff = now_ns.saturating_sub(keep_ns);
            while done.first().is_some_and(|e| e.last_ns < cutoff) {
                let e = done.remove(0);
                total = total.saturating_sub(e.bytes);
                doomed.push((e, "keep"));
            }
        }
        if let Some(max) = self.limits.max_bytes {
            // Down to 7/8 of the cap: the files being written grow until
            // the next tick without passing it.
            let target = max - max / SHARE;
            while total > target && !done.is_empty() {
                let until = done[0].last_ns;
                while done.first().is_some_and(|e| e.last_ns <= until) {
                    let e = done.remove(0);
                    total = total.saturating_sub(e.bytes);
                    doomed.push((e, "max-size"));
                }
            }
            if total > max && !self.over_cap_said {
                self.over_cap_said = true;
                out.errors.push(format!(
                    "the bundle holds {total} bytes, more than --max-size {max}, in the files \
                     being written alone: rotate capture files and archives more often"
                ));
            }
        }
        for (e, reason) in doomed {
            let path = dir.join(&e.name);
            let sha256 = match procflow_format::hash::sha256_file(&path) {
                Ok((h, _)) => h,
                Err(err) => {
                    out.errors
                        .push(format!("hashing {} before deletion: {err}", e.name));
                    total = total.saturating_add(e.bytes);
                    continue;
                }
            };
            if let Err(err) = std::fs::remove_file(&path) {
                out.errors.push(format!("deleting {}: {err}", e.name));
                total = total.saturating_add(e.bytes);
                continue;
            }
            let first_ns = self.first_seen.remove(&e.name).unwrap_or(e.last_ns);
            out.deleted.push(DeletedFile {
                name: e.name,
                kind: e.kind.to_string(),
                first_ns: first_ns.min(e.last_ns),
                last_ns: e.last_ns,
                bytes: e.bytes,
                sha256,
                deleted_ns: now_ns,
                reason: reason.to_string(),
                files: 1,
                through: None,
            });
        }
        if !out.deleted.is_empty() {
            if let Err(e) = crate::bundle::sync_dir(dir) {
                out.errors.push(format!("fsync {}: {e}", dir.display()));
            }
        }
        out.bytes = total;
        out
    }
}

/// What the ring thread shares with the recorder.
#[derive(Debug, Default)]
struct Shared {
    /// The archive being written (set before it is created).
    writing: Option<String>,
    /// Deletions not yet in the manifest.
    outcome: Outcome,
    /// The ring, handed back when the thread stops.
    ring: Option<Ring>,
}

/// The ring run on its own thread, every [`PERIOD`]: a tick of the
/// recorder can take seconds on a starved host (it runs at nice 19), and
/// the capture keeps writing meanwhile. The recorder tells it which
/// archive it writes and takes its deletions into the manifest after each
/// tick ([`Runner::take`]).
#[derive(Debug)]
pub struct Runner {
    shared: std::sync::Arc<std::sync::Mutex<Shared>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    dir: std::path::PathBuf,
}

/// Time between two looks of the ring thread at the bundle.
pub const PERIOD: Duration = Duration::from_millis(200);

impl Runner {
    /// Starts the ring thread on `dir`; `now` reads CLOCK_REALTIME in ns.
    pub fn start(dir: &Path, ring: Ring, now: fn() -> i64) -> Runner {
        use std::sync::atomic::Ordering;
        let shared = std::sync::Arc::new(std::sync::Mutex::new(Shared {
            ring: Some(ring),
            ..Shared::default()
        }));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let shared = shared.clone();
            let stop = stop.clone();
            let dir = dir.to_path_buf();
            std::thread::Builder::new()
                .name("ring".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        Runner::once(&shared, &dir, now());
                        std::thread::sleep(PERIOD);
                    }
                })
                .ok()
        };
        Runner {
            shared,
            stop,
            thread,
            dir: dir.to_path_buf(),
        }
    }

    fn once(shared: &std::sync::Mutex<Shared>, dir: &Path, now_ns: i64) {
        let Ok(mut g) = shared.lock() else { return };
        let writing = g.writing.clone();
        let Some(mut ring) = g.ring.take() else {
            return;
        };
        drop(g);
        let o = ring.enforce(dir, writing.as_deref(), now_ns);
        if let Ok(mut g) = shared.lock() {
            g.ring = Some(ring);
            g.outcome.deleted.extend(o.deleted);
            g.outcome.errors.extend(o.errors);
            g.outcome.bytes = o.bytes;
        }
    }

    /// Names the archive about to be created (before it exists), or none.
    /// Waits while the ring is looking, so a new archive is never taken
    /// for a finished one.
    pub fn writing(&self, name: Option<&str>) {
        if let Ok(mut g) = self.shared.lock() {
            g.writing = name.map(str::to_string);
        }
        // A look in progress holds the ring, not the lock: wait for it
        // (bounded: a look that never ends must not stop the recording).
        let t0 = std::time::Instant::now();
        while t0.elapsed() < Duration::from_secs(10)
            && self
                .shared
                .lock()
                .map(|g| g.ring.is_none())
                .unwrap_or(false)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The deletions and errors since the last call.
    pub fn take(&self) -> Outcome {
        self.shared
            .lock()
            .map(|mut g| std::mem::take(&mut g.outcome))
            .unwrap_or_default()
    }

    /// Stops the thread, takes one last look (`writing`: none, everything
    /// is finished but the newest capture file) and returns what is not
    /// yet in the manifest.
    pub fn finish(mut self, now_ns: i64) -> Outcome {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Ok(mut g) = self.shared.lock() {
            g.writing = None;
        }
        Runner::once(&self.shared, &self.dir, now_ns);
        self.take()
    }
}

/// Most entries of the manifest's `deleted` list: past it the two oldest
/// are folded into one (see [`DeletedFile::files`]), so an always-on
/// recording's manifest stays small (about 400 bytes an entry).
pub const MAX_LISTED: usize = 500;

/// Appends `new` to the manifest's list `list`, folding the oldest
/// entries once it holds [`MAX_LISTED`].
pub fn record(list: &mut Vec<DeletedFile>, new: Vec<DeletedFile>) {
    list.extend(new);
    while list.len() > MAX_LISTED {
        let b = list.remove(1);
        let a = &mut list[0];
        let line =
            |e: &DeletedFile| format!("{}  {}\n", e.sha256, e.through.as_ref().unwrap_or(&e.name));
        a.sha256 = procflow_format::hash::sha256_hex(format!("{}{}", line(a), line(&b)).as_bytes());
        a.files = a.files.saturating_add(b.files);
        a.bytes = a.bytes.saturating_add(b.bytes);
        a.first_ns = a.first_ns.min(b.first_ns);
        a.last_ns = a.last_ns.max(b.last_ns);
        a.deleted_ns = a.deleted_ns.max(b.deleted_ns);
        if a.kind != b.kind {
            a.kind = "capture+archive".into();
        }
        if a.reason != b.reason && !a.reason.contains(&b.reason) {
            a.reason = format!("{}+{}", a.reason, b.reason);
        }
        a.through = Some(b.through.unwrap_or(b.name));
    }
}

/// How often the files of a ring rotate: an eighth of the limit, so the
/// bundle stays within it give or take one file of each kind.
pub const SHARE: u64 = 8;

/// Archive size for a ring under `max_bytes` (at most `archive_bytes`).
pub fn archive_bytes(limits: &Limits, archive_bytes: u64) -> u64 {
    match limits.max_bytes {
        Some(m) => archive_bytes.min((m / SHARE).max(64 * 1024)),
        None => archive_bytes,
    }
}

/// How long an archive stays open under `--keep`.
pub fn archive_every(limits: &Limits) -> Option<Duration> {
    limits
        .keep
        .map(|k| (k / SHARE as u32).max(Duration::from_secs(1)))
}

/// An error while deleting, as a manifest error entry.
pub fn error_entry(text: String) -> crate::layout::RecordError {
    crate::layout::RecordError {
        what: "ring".into(),
        path: None,
        error: text,
        count: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, name: &str, bytes: usize, age_s: u64) {
        let p = dir.join(name);
        std::fs::write(&p, vec![b'x'; bytes]).unwrap();
        let t = SystemTime::now() - Duration::from_secs(age_s);
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    #[test]
    fn deletes_oldest_together_and_never_the_open_files() {
        let d = std::env::temp_dir().join(format!("pf-ring-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        touch(&d, "snapshots-000001.tar", 1000, 50);
        touch(&d, "capture-x.pcap", 1000, 45);
        touch(&d, "snapshots-000002.tar", 1000, 30);
        touch(&d, "capture-x.pcap1", 1000, 20);
        touch(&d, "snapshots-000003.tar", 1000, 0);
        touch(&d, "capture-x.pcap2", 1000, 0);
        touch(&d, "manifest.json", 100, 0);
        let now = ns(SystemTime::now());
        let mut r = Ring::new(Limits {
            max_bytes: Some(5000),
            keep: None,
        });
        let o = r.enforce(&d, Some("snapshots-000003.tar"), now);
        let names: Vec<&str> = o.deleted.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["snapshots-000001.tar", "capture-x.pcap"]);
        assert_eq!(o.bytes, 4100);
        assert!(o.errors.is_empty(), "{:?}", o.errors);
        assert_eq!(o.deleted[0].sha256.len(), 64);
        assert_eq!(o.deleted[0].reason, "max-size");
        // Only the open files left: the cap cannot be met, and it is said.
        let mut r = Ring::new(Limits {
            max_bytes: Some(10),
            keep: None,
        });
        let o = r.enforce(&d, Some("snapshots-000003.tar"), now);
        assert_eq!(o.deleted.len(), 2);
        assert!(d.join("snapshots-000003.tar").exists());
        assert!(d.join("capture-x.pcap2").exists());
        assert_eq!(o.errors.len(), 1, "{:?}", o.errors);
        // --keep: what ended longer ago goes.
        touch(&d, "snapshots-000004.tar", 10, 100);
        let mut r = Ring::new(Limits {
            max_bytes: None,
            keep: Some(Duration::from_secs(60)),
        });
        let o = r.enforce(&d, Some("snapshots-000005.tar"), now);
        let names: Vec<&str> = o.deleted.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["snapshots-000004.tar"]);
        assert_eq!(o.deleted[0].reason, "keep");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_list_stays_bounded() {
        let e = |i: i64| DeletedFile {
            name: format!("capture-x.pcap{i}"),
            kind: "capture".into(),
            first_ns: i,
            last_ns: i + 1,
            bytes: 10,
            sha256: "a".repeat(64),
            deleted_ns: i + 2,
            reason: "max-size".into(),
            files: 1,
            through: None,
        };
        let mut list = Vec::new();
        for i in 0..2000 {
            record(&mut list, vec![e(i)]);
        }
        assert_eq!(list.len(), MAX_LISTED);
        assert_eq!(list.iter().map(|e| e.files).sum::<u64>(), 2000);
        assert_eq!(list.iter().map(|e| e.bytes).sum::<u64>(), 20000);
        assert_eq!(list[0].name, "capture-x.pcap0");
        assert_eq!(list[0].through.as_deref(), Some("capture-x.pcap1500"));
        assert_eq!((list[0].first_ns, list[0].last_ns), (0, 1501));
        assert_eq!(list[1].name, "capture-x.pcap1501");
    }
}
