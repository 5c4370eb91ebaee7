//! The packet capture of `record --iface`: the recorder's own
//! ([`native`]: an `AF_PACKET` ring, filters compiled by [`filter`],
//! pcapng written by [`pcapng`]), or tcpdump run beside it
//! (`--capture tcpdump`): start it, wait until it listens, keep its stderr
//! in `tcpdump.log`, stop it cleanly. [`Running`] is either.

pub mod filter;
pub mod native;
pub mod pcapng;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::layout::{CaptureCounters, CaptureInfo, CAPTURE_PREFIX, TCPDUMP_LOG_FILE};

/// Packets the recorder's own capture took so far (for the heartbeat).
pub static CAPTURE_PACKETS: AtomicU64 = AtomicU64::new(0);

/// Packets the recorder's own capture lost so far: dropped by the kernel or
/// not written (for the heartbeat).
pub static CAPTURE_LOST: AtomicU64 = AtomicU64::new(0);

/// Whether the recorder's own capture runs (its counters above are then the
/// heartbeat's; tcpdump's come from its log).
pub static CAPTURE_NATIVE: AtomicBool = AtomicBool::new(false);

/// The recorder's own capture's counters so far, for the heartbeat.
pub fn capture_progress(packets: u64, lost: u64) {
    CAPTURE_PACKETS.store(packets, Ordering::Relaxed);
    CAPTURE_LOST.store(lost, Ordering::Relaxed);
    CAPTURE_NATIVE.store(true, Ordering::Relaxed);
}

/// tcpdump's counters as it printed them in `tcpdump.log` (the last of
/// each), for the manifest.
pub fn capture_counters(out: &Path) -> Option<CaptureCounters> {
    let text = std::fs::read(out.join(TCPDUMP_LOG_FILE)).ok()?;
    CaptureCounters::from_tcpdump_log(&String::from_utf8_lossy(&text))
}

/// How capture files rotate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotate {
    /// One file for the whole recording.
    None,
    /// A new file every N seconds (tcpdump `-G`).
    Seconds(u64),
    /// A new file every N million bytes (tcpdump `-C`).
    Megabytes(u64),
}

/// Looks for tcpdump in PATH, then in the usual sbin directories (root's
/// PATH on some systems lacks them).
pub fn find_tcpdump() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    for d in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin"] {
        dirs.push(PathBuf::from(d));
    }
    dirs.into_iter()
        .map(|d| d.join("tcpdump"))
        .find(|p| p.is_file())
}

/// First line of `tcpdump --version`.
pub fn tcpdump_version(path: &Path) -> String {
    match Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) => {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        }
        Err(e) => format!("unknown ({e})"),
    }
}

/// The tcpdump argument vector (without the program name).
pub fn tcpdump_args(
    dir: &Path,
    iface: &str,
    filter: Option<&str>,
    rotate: Rotate,
    start_secs: i64,
    as_root: bool,
) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "-i".into(),
        iface.into(),
        "-n".into(),
        "-s".into(),
        "0".into(),
        "-U".into(),
        "--time-stamp-precision=nano".into(),
    ];
    if as_root {
        // Debian's tcpdump drops to user `tcpdump`, which cannot create
        // rotated files in a root-owned directory.
        a.push("-Z".into());
        a.push("root".into());
    }
    let name = match rotate {
        // strftime names, expanded by tcpdump in UTC (TZ=UTC is set).
        Rotate::Seconds(n) => {
            a.push("-G".into());
            a.push(n.to_string());
            format!("{CAPTURE_PREFIX}%Y%m%dT%H%M%SZ.pcap")
        }
        // -C appends 1, 2, ... to the name of each following file.
        Rotate::Megabytes(n) => {
            a.push("-C".into());
            a.push(n.to_string());
            format!(
                "{CAPTURE_PREFIX}{}.pcap",
                procflow_format::time::compact_utc(start_secs)
            )
        }
        Rotate::None => format!(
            "{CAPTURE_PREFIX}{}.pcap",
            procflow_format::time::compact_utc(start_secs)
        ),
    };
    a.push("-w".into());
    a.push(dir.join(name).to_string_lossy().into_owned());
    if let Some(f) = filter {
        a.push("--".into());
        a.push(f.into());
    }
    a
}

/// How long tcpdump is left running after the last snapshot. libpcap's
/// TPACKET_V3 ring hands packets to tcpdump a block at a time, a block being
/// retired at the latest after tcpdump's 1 s buffer timeout; on SIGINT
/// tcpdump exits without draining the current block, so packets of the last
/// second would be lost (measured: "12 packets received by filter, 0
/// captured" for a stop 0.3 s after the traffic).
pub const DRAIN: Duration = Duration::from_millis(1300);

/// A running tcpdump.
#[derive(Debug)]
pub struct Capture {
    child: Child,
    log_thread: Option<std::thread::JoinHandle<()>>,
    /// What is written to the manifest.
    pub info: CaptureInfo,
}

/// Why tcpdump could not be started; tcpdump's own words where it said any.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Its log file cannot be created.
    #[error("{}: cannot create", path.display())]
    CreateLog {
        /// The log file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The tcpdump binary cannot be run.
    #[error("{}: cannot start", path.display())]
    Spawn {
        /// The tcpdump binary.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The child came without the stderr pipe asked for.
    #[error("tcpdump: no stderr pipe")]
    NoStderr,
    /// It did not say `listening on` in time.
    #[error("tcpdump did not report `listening on` within {secs} s; it said: {said}")]
    NotListening {
        /// The time it had, seconds.
        secs: u64,
        /// What it printed, trimmed.
        said: String,
    },
    /// It exited before listening.
    #[error("tcpdump exited ({status}): {said}")]
    Exited {
        /// Its exit status as text.
        status: String,
        /// What it printed, trimmed.
        said: String,
    },
}

/// Starts tcpdump and waits (up to `timeout`) for it to print
/// `listening on`. On failure the error holds tcpdump's own words.
pub fn start(
    tcpdump: &Path,
    dir: &Path,
    iface: &str,
    filter: Option<&str>,
    rotate: Rotate,
    start_secs: i64,
    timeout: Duration,
) -> Result<Capture, StartError> {
    let as_root = crate::sys::euid() == 0;
    let args = tcpdump_args(dir, iface, filter, rotate, start_secs, as_root);
    let version = tcpdump_version(tcpdump);
    let log_path = dir.join(TCPDUMP_LOG_FILE);
    let mut log = std::fs::File::create(&log_path).map_err(|source| StartError::CreateLog {
        path: log_path.clone(),
        source,
    })?;
    let mut cmd = Command::new(tcpdump);
    cmd.args(&args)
        .env("TZ", "UTC")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Own process group: a Ctrl-C at the terminal reaches only the
        // recorder, which then stops tcpdump after its last snapshot.
        .process_group(0);
    // If the recorder dies (even by SIGKILL), the kernel sends tcpdump
    // SIGINT, so it flushes and exits instead of capturing forever.
    crate::ksys::process::parent_death_signal(&mut cmd, libc::SIGINT);
    let mut child = cmd.spawn().map_err(|source| StartError::Spawn {
        path: tcpdump.to_path_buf(),
        source,
    })?;
    let Some(stderr) = child.stderr.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(StartError::NoStderr);
    };
    let (tx, rx) = mpsc::channel::<String>();
    let log_thread = std::thread::spawn(move || {
        let mut r = BufReader::new(stderr);
        let mut line = Vec::new();
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let _ = log.write_all(&line);
                    let _ = log.flush();
                    let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
                }
            }
        }
        let _ = log.sync_all();
    });
    let deadline = Instant::now() + timeout;
    let mut said = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = log_thread.join();
            return Err(StartError::NotListening {
                secs: timeout.as_secs(),
                said: said.trim().to_string(),
            });
        }
        match rx.recv_timeout(left.min(Duration::from_millis(100))) {
            Ok(l) => {
                if l.contains("listening on") {
                    break;
                }
                said.push_str(&l);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                let _ = log_thread.join();
                return Err(StartError::Exited {
                    status,
                    said: said.trim().to_string(),
                });
            }
        }
    }
    let mut argv = vec![tcpdump.to_string_lossy().into_owned()];
    argv.extend(args);
    Ok(Capture {
        child,
        log_thread: Some(log_thread),
        info: CaptureInfo {
            method: Some("tcpdump".into()),
            native: None,
            tcpdump_path: tcpdump.to_string_lossy().into_owned(),
            tcpdump_version: version,
            argv,
            iface: iface.to_string(),
            filter: filter.map(str::to_string),
            exit: None,
            counters: None,
        },
    })
}

impl Capture {
    /// Whether tcpdump has exited on its own; its status if so.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(s)) => Some(s.to_string()),
            _ => None,
        }
    }

    /// Process id of tcpdump.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops tcpdump: first waits [`DRAIN`] so packets already captured
    /// reach the file, then SIGINT (it flushes and closes its file), up to
    /// `grace` to exit, then SIGKILL. `abort` is polled while waiting; when
    /// it returns true the waits are cut short. Returns the exit status as
    /// text, also stored in `info.exit`.
    pub fn stop(&mut self, grace: Duration, abort: &dyn Fn() -> bool) -> String {
        let drain_until = Instant::now() + DRAIN;
        while Instant::now() < drain_until && !abort() {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = match self.child.try_wait() {
            Ok(Some(s)) => format!("{s} (exited before stop)"),
            _ => {
                let _ = crate::sys::send_signal(self.child.id(), libc::SIGINT);
                let deadline = Instant::now() + grace;
                loop {
                    match self.child.try_wait() {
                        Ok(Some(s)) => break s.to_string(),
                        Ok(None) if Instant::now() < deadline && !abort() => {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        _ => {
                            let _ = self.child.kill();
                            break match self.child.wait() {
                                Ok(s) => format!("{s} (SIGKILL after no exit on SIGINT)"),
                                Err(e) => format!("unknown ({e})"),
                            };
                        }
                    }
                }
            }
        };
        if let Some(t) = self.log_thread.take() {
            let _ = t.join();
        }
        self.info.exit = Some(status.clone());
        status
    }
}

/// Which capture `--iface` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The recorder's own (`AF_PACKET`); needs nothing on the host.
    Native,
    /// tcpdump run beside the recorder (the fallback, asked for).
    Tcpdump,
}

/// A running capture of either kind.
#[derive(Debug)]
pub enum Running {
    /// The recorder's own.
    Native {
        /// The capture.
        cap: native::NativeCapture,
        /// What goes into the manifest.
        info: CaptureInfo,
    },
    /// tcpdump.
    Tcpdump(Capture),
}

impl Running {
    /// What the manifest says of it so far.
    pub fn info(&self) -> &CaptureInfo {
        match self {
            Running::Native { info, .. } => info,
            Running::Tcpdump(c) => &c.info,
        }
    }

    /// tcpdump's pid (for its counters on SIGUSR1).
    pub fn tcpdump_pid(&self) -> Option<u32> {
        match self {
            Running::Native { .. } => None,
            Running::Tcpdump(c) => Some(c.pid()),
        }
    }

    /// Why the capture stopped on its own, if it did; `true` when the disk
    /// is full.
    pub fn failed(&mut self) -> Option<(String, bool)> {
        match self {
            Running::Native { cap, .. } => cap.failure(),
            Running::Tcpdump(c) => c
                .exited()
                .map(|s| (format!("tcpdump exited during the recording: {s}"), false)),
        }
    }

    /// Stops it and returns the final manifest entry (counters filled).
    pub fn stop(&mut self, out: &Path, grace: Duration, abort: &dyn Fn() -> bool) -> CaptureInfo {
        match self {
            Running::Native { cap, info } => {
                let (counters, native) = cap.stop();
                info.counters = Some(counters);
                info.native = Some(native);
                info.exit = Some(match cap.failure() {
                    Some((e, _)) => format!("stopped writing: {e}"),
                    None => "stopped".into(),
                });
                info.clone()
            }
            Running::Tcpdump(c) => {
                c.stop(grace, abort);
                let mut info = c.info.clone();
                info.counters = capture_counters(out);
                info
            }
        }
    }
}

/// Starts the recorder's own capture.
pub fn start_native(
    dir: &Path,
    iface: &str,
    filter: Option<&str>,
    rotate: Rotate,
    start_secs: i64,
) -> Result<Running, native::StartError> {
    let cap = native::start(dir, iface, filter, rotate, start_secs)?;
    Ok(Running::Native {
        cap,
        info: CaptureInfo {
            method: Some("af-packet".into()),
            tcpdump_path: String::new(),
            tcpdump_version: String::new(),
            argv: Vec::new(),
            iface: iface.to_string(),
            filter: filter.map(str::to_string),
            exit: None,
            counters: None,
            native: None,
        },
    })
}

/// Capture files in `dir`, in name order (tcpdump's names sort by time;
/// `-C` suffixes sort after the first file).
pub fn capture_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(CAPTURE_PREFIX))
                .collect()
        })
        .unwrap_or_default();
    v.sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
    v
}
