//! What the operator is told (worded here, printed by the binary): the
//! warnings at start (not root, fd
//! directories that cannot be read), the heartbeat line while recording
//! on a terminal, and tcpdump's own counters for the manifest.

use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::capture::{capture_counters, CAPTURE_LOST, CAPTURE_NATIVE, CAPTURE_PACKETS};
use crate::layout::CAPTURE_PREFIX;

/// Snapshots committed so far; the record loop bumps it, the heartbeat
/// reads it.
pub static SNAPSHOTS: AtomicU64 = AtomicU64::new(0);

/// Owner events written into the archives so far (for the heartbeat).
pub static EVENTS: AtomicU64 = AtomicU64::new(0);

/// Event evidence lost so far: kernel samples dropped, events the recorder
/// dropped, proc connector losses (for the heartbeat).
pub static EVENTS_LOST: AtomicU64 = AtomicU64::new(0);

/// Notes one more snapshot committed to an archive.
pub fn snapshot_written() {
    SNAPSHOTS.fetch_add(1, Ordering::Relaxed);
}

/// Notes `written` events archived and `lost` events lost.
pub fn events_counted(written: u64, lost: u64) {
    EVENTS.fetch_add(written, Ordering::Relaxed);
    EVENTS_LOST.fetch_add(lost, Ordering::Relaxed);
}

/// Fd directories of other processes this recorder cannot read, out of
/// those it tried (every pid in /proc but itself).
pub fn unreadable_fd_dirs(proc_root: &Path) -> (u64, u64) {
    let me = std::process::id().to_string();
    let (mut denied, mut tried) = (0u64, 0u64);
    let Ok(rd) = std::fs::read_dir(proc_root) else {
        return (0, 0);
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(n) = name.to_str() else { continue };
        if n == me || !n.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        match std::fs::read_dir(e.path().join("fd")) {
            Ok(_) => tried += 1,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                tried += 1;
                denied += 1;
            }
            // The process exited meanwhile.
            Err(_) => {}
        }
    }
    (denied, tried)
}

/// The warnings printed when recording starts: not root, fd directories
/// that cannot be read (their sockets will have no owner in the bundle).
pub fn startup_warnings(euid: u32, proc_root: &Path) -> Vec<String> {
    let mut w = Vec::new();
    if euid != 0 {
        w.push(format!(
            "not running as root (euid {euid}): sockets of other users' processes will have \
             no owner in the bundle"
        ));
    }
    let (denied, tried) = unreadable_fd_dirs(proc_root);
    if denied > 0 {
        w.push(format!(
            "{denied} of {tried} processes' fd directories cannot be read (EACCES): their \
             sockets will be recorded without owner"
        ));
    }
    w
}

/// The heartbeat thread: one line every `every` on standard error while
/// recording, when standard error is a terminal.
#[derive(Debug)]
pub struct Heartbeat {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Human-readable byte count.
fn bytes_text(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / f64::from(1u32 << 30)),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20)),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// The heartbeat line: elapsed time, snapshots and bytes written, the
/// capture's packets and drops (tcpdump's counters, when it printed them),
/// and the events archived and lost (when event sources are in use). The
/// sources themselves are printed once, at start.
pub fn heartbeat_line(
    out: &Path,
    elapsed: Duration,
    events: bool,
    native: Option<(u64, u64)>,
) -> String {
    let (mut capture, mut archives, mut captured) = (0u64, 0u64, false);
    if let Ok(rd) = std::fs::read_dir(out) {
        for e in rd.flatten() {
            let n = e.file_name();
            let n = n.to_string_lossy();
            let len = e.metadata().map(|m| m.len()).unwrap_or(0);
            if n.starts_with(CAPTURE_PREFIX) {
                capture += len;
                captured = true;
            } else if crate::layout::parse_archive_name(&n).is_some() {
                archives += len;
            }
        }
    }
    let mut line = format!(
        "procflow-snap: {}s: {} snapshots ({})",
        elapsed.as_secs(),
        SNAPSHOTS.load(Ordering::Relaxed),
        bytes_text(archives),
    );
    match (native, capture_counters(out)) {
        (Some((packets, lost)), _) => line.push_str(&format!(
            "; packets {packets} captured, {lost} lost ({})",
            bytes_text(capture)
        )),
        (None, Some(c)) => line.push_str(&format!(
            "; packets {} captured, {} dropped by kernel ({})",
            c.captured,
            c.dropped_by_kernel,
            bytes_text(capture)
        )),
        (None, None) if captured => line.push_str(&format!(
            "; capture {} (packet counters not yet printed by tcpdump)",
            bytes_text(capture)
        )),
        (None, None) => {}
    }
    if events {
        line.push_str(&format!(
            "; events {} archived, {} lost",
            EVENTS.load(Ordering::Relaxed),
            EVENTS_LOST.load(Ordering::Relaxed)
        ));
    }
    line
}

impl Heartbeat {
    /// Starts the heartbeat when standard error is a terminal (`None`
    /// otherwise: logs and pipes get only the start and end lines). With a
    /// tcpdump pid, tcpdump is asked for its counters (SIGUSR1, which it
    /// answers on Linux by printing them to its log) before each line.
    /// Each line goes to `say` (the binary prints it).
    pub fn start(
        out: PathBuf,
        every: Duration,
        tcpdump: Option<u32>,
        events: bool,
        say: Box<dyn Fn(String) + Send>,
    ) -> Option<Heartbeat> {
        if !io::stderr().is_terminal() || every.is_zero() {
            return None;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let t0 = Instant::now();
        let thread = std::thread::Builder::new()
            .name("heartbeat".into())
            .spawn(move || {
                let mut next = t0 + every;
                loop {
                    while Instant::now() < next {
                        if flag.load(Ordering::Relaxed) {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    next += every;
                    if let Some(pid) = tcpdump {
                        let _ = crate::sys::send_signal(pid, libc::SIGUSR1);
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    let native = CAPTURE_NATIVE.load(Ordering::Relaxed).then(|| {
                        (
                            CAPTURE_PACKETS.load(Ordering::Relaxed),
                            CAPTURE_LOST.load(Ordering::Relaxed),
                        )
                    });
                    say(heartbeat_line(&out, t0.elapsed(), events, native));
                }
            })
            .ok()?;
        Some(Heartbeat {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::TCPDUMP_LOG_FILE;

    #[test]
    fn counters_from_the_log() {
        let d = std::env::temp_dir().join(format!("procflow-tdlog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join(TCPDUMP_LOG_FILE),
            "tcpdump: listening\n10 packets captured\n12 packets received by filter\n2 packets dropped by kernel\n",
        )
        .unwrap();
        let c = capture_counters(&d).unwrap();
        assert_eq!(
            (c.captured, c.received_by_filter, c.dropped_by_kernel),
            (10, 12, 2)
        );
        let line = heartbeat_line(&d, Duration::from_secs(5), false, None);
        assert!(
            line.contains("packets 10 captured, 2 dropped by kernel"),
            "{line}"
        );
        // The recorder's own capture: its counters, not tcpdump's log.
        let line = heartbeat_line(&d, Duration::from_secs(5), false, Some((30, 4)));
        assert!(line.contains("packets 30 captured, 4 lost"), "{line}");
        assert!(!line.contains("dropped by kernel"), "{line}");
        assert!(
            !line.contains("events") && !line.contains("sources"),
            "{line}"
        );
        events_counted(7, 1);
        let line = heartbeat_line(&d, Duration::from_secs(5), true, None);
        assert!(line.contains("events "), "{line}");
        assert!(
            line.contains(" archived, ") && line.contains(" lost"),
            "{line}"
        );
        assert_eq!(line.matches("procflow-snap").count(), 1, "{line}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
