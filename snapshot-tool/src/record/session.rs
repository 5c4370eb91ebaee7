//! A recording from start to end, in named stages: `prepare` checks
//! and claims `--out`, `start_capture` starts the packet capture,
//! `begin` the recorder and its first manifest, `record_loop` ticks, and
//! `finish` seals the bundle. Each returns what happened as a value; the
//! binary says it on the terminal and maps it to an exit status. While
//! recording, what the operator must know at once goes to a [`Notice`]
//! callback.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    check_iface, host_info, manifest_while_recording, privileges, realtime_now, with_causes,
    write_stop, Config, Recorder, Stop,
};
use crate::bundle::{self, ErrorSummary};
use crate::capture::{self, Method, Rotate, Running};
use crate::custody::{CustodyLog, CustodyRecord};
use crate::events;
use crate::layout::{
    self, CaptureInfo, Manifest, RecordError, RecordOptions, RecorderStatus, SourceInfo, TimeStamp,
    ToolInfo,
};
use crate::sys;

/// What the operator is told while recording (the binary prints it).
#[derive(Debug, Clone)]
pub enum Notice {
    /// The event sources in use, and why not the others (at start).
    Sources(Vec<SourceInfo>),
    /// Recording runs (at start, not with `--once`).
    Recording {
        /// The bundle directory.
        out: PathBuf,
        /// The snapshot interval.
        interval: Duration,
        /// The capture's method and interface, when there is one.
        capture: Option<(String, String)>,
    },
    /// A warning at start (not root, fd directories that cannot be read).
    Warning(String),
    /// tcpdump said it failed; recording goes on without it (in the
    /// manifest's errors too).
    CaptureFailed(String),
    /// The heartbeat line, every `--heartbeat` while recording when
    /// standard error is a terminal (from the heartbeat thread).
    Heartbeat(String),
}

/// Where the recorder sends its [`Notice`]s; shared with the heartbeat
/// thread.
pub type NoticeSink = Arc<dyn Fn(Notice) + Send + Sync>;

/// How a recording ended: refused before it began, or recorded.
#[derive(Debug)]
pub enum Outcome {
    /// A check before recording failed (bad `--out`, interface, custody
    /// log, capture that did not start...): nothing is left behind. The
    /// reason, in words.
    Refused(String),
    /// A recording was made, completely or not.
    Recorded(Box<Finished>),
}

/// Why the record loop stopped early, when it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteStop {
    /// ENOSPC/EDQUOT while writing; everything written before is kept.
    DiskFull(String),
    /// Another write error.
    Error(String),
}

/// How the bundle was left.
#[derive(Debug)]
pub enum Sealed {
    /// The final manifest could not be written (nothing after it was
    /// tried).
    ManifestFailed {
        /// manifest.json.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// A second signal forced the end: manifest written (status `killed`),
    /// no SHA256SUMS, no digest.
    Forced,
    /// SHA256SUMS written: the bundle digest (hex SHA-256 of SHA256SUMS).
    Digest(String),
    /// SHA256SUMS could not be written: no digest.
    NoSums {
        /// SHA256SUMS.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
}

/// One kind of evidence lost over a recording: how many, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loss {
    /// How many.
    pub count: u64,
    /// What, in words (`event(s) dropped by the recorder`).
    pub what: &'static str,
}

/// The evidence lost over a recording (empty: none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvidenceLost(pub Vec<Loss>);

impl EvidenceLost {
    /// Whether nothing was lost.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Display for EvidenceLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|l| format!("{} {}", l.count, l.what))
            .collect();
        write!(
            f,
            "EVIDENCE LOST: {} (see manifest errors and capture.counters)",
            parts.join(", ")
        )
    }
}

/// The custody log's part of the end.
#[derive(Debug)]
pub struct Custody {
    /// The log.
    pub path: PathBuf,
    /// Why the record could not be appended, when it could not.
    pub error: Option<io::Error>,
}

/// What a recording left, and what went wrong at its end.
#[derive(Debug)]
pub struct Finished {
    /// Why the record loop stopped early (`None`: signal, duration or
    /// `--once`, as asked).
    pub stopped_by: Option<WriteStop>,
    /// The archive could not be closed cleanly (it is kept, read up to its
    /// last complete snapshot).
    pub close_error: Option<String>,
    /// The status in the final manifest.
    pub status: RecorderStatus,
    /// Snapshots written.
    pub snapshots: u64,
    /// Archives written.
    pub archives: usize,
    /// Capture files in the bundle.
    pub capture_files: usize,
    /// Files deleted as `--max-size`/`--keep` asked.
    pub deleted: usize,
    /// Evidence lost over the recording.
    pub lost: EvidenceLost,
    /// Packets are missing from the capture (dropped or not written).
    pub capture_lost: bool,
    /// How the bundle was sealed.
    pub sealed: Sealed,
    /// The custody record, when `--custody-log` was given and the bundle
    /// sealed or forced.
    pub custody: Option<Custody>,
}

/// `--out` checked, created and locked; what recording needs beside.
struct Prepared {
    cfg: Config,
    tcpdump: Option<PathBuf>,
    custody: Option<CustodyLog>,
    /// Whether `--out` was created here (removed again if the capture
    /// does not start).
    created: bool,
    /// The lock on `--out`, held until the end.
    _lock: File,
}

/// Records as `cfg` says: every stage in turn; `notice` hears what the
/// operator must know while it runs.
pub fn run(cfg: Config, notice: NoticeSink) -> Outcome {
    let prepared = match prepare(cfg) {
        Ok(p) => p,
        Err(why) => return Outcome::Refused(why),
    };
    let started = sys::timestamp();
    let cap = match start_capture(&prepared, &started) {
        Ok(c) => c,
        Err(why) => return Outcome::Refused(why),
    };
    let Prepared {
        cfg,
        custody,
        _lock,
        ..
    } = prepared;
    let (mut rec, mut manifest) = begin(cfg, started, cap.as_ref());
    rec.notice = Some(Arc::clone(&notice));
    let mut cap = cap;
    let stop = match manifest_while_recording(&rec.cfg.out, &manifest) {
        Ok(()) => {
            if !rec.cfg.once {
                notice(Notice::Sources(manifest.sources.clone()));
                // One line so the operator knows it runs and how to stop it.
                notice(Notice::Recording {
                    out: rec.cfg.out.clone(),
                    interval: rec.interval(),
                    capture: cap.as_ref().map(|c| {
                        (
                            c.info().method.as_deref().unwrap_or("tcpdump").to_string(),
                            c.info().iface.clone(),
                        )
                    }),
                });
            }
            for w in crate::operator::startup_warnings(manifest.privileges.euid, Path::new("/proc"))
            {
                notice(Notice::Warning(w));
            }
            let _heartbeat = (!rec.cfg.once)
                .then(|| {
                    crate::operator::Heartbeat::start(
                        rec.cfg.out.clone(),
                        rec.cfg.heartbeat,
                        cap.as_ref().and_then(Running::tcpdump_pid),
                        manifest
                            .sources
                            .iter()
                            .any(|s| s.used && s.name != events::SRC_POLL),
                        {
                            let n = Arc::clone(&notice);
                            Box::new(move |line| n(Notice::Heartbeat(line)))
                        },
                    )
                })
                .flatten();
            record_loop(&mut rec, &mut manifest, &mut cap, &*notice)
        }
        Err(e) => write_stop("writing manifest.json", &e),
    };
    Outcome::Recorded(Box::new(finish(rec, manifest, cap, stop, custody)))
}

/// Checks everything that can be checked before recording, then creates
/// and locks `--out`: nothing is created before all checks pass.
fn prepare(mut cfg: Config) -> Result<Prepared, String> {
    if cfg.ring.is_set() && !cfg.once {
        // A ring deletes whole files: both kinds must rotate well within
        // the limits.
        cfg.archive_bytes = crate::ring::archive_bytes(&cfg.ring, cfg.archive_bytes);
        if cfg.rotate == Rotate::None {
            cfg.rotate = match (cfg.ring.max_bytes, cfg.ring.keep) {
                (Some(m), _) => Rotate::Megabytes((m / crate::ring::SHARE / 1_000_000).max(1)),
                (None, Some(k)) => Rotate::Seconds((k.as_secs() / crate::ring::SHARE).max(1)),
                (None, None) => Rotate::None,
            };
        }
    }
    crate::outdir::check_out_dir(&cfg.out).map_err(|e| with_causes(&e))?;
    let tcpdump = match &cfg.iface {
        Some(iface) => {
            check_iface(iface).map_err(|e| e.to_string())?;
            match capture::find_tcpdump() {
                _ if cfg.capture == Method::Native => None,
                Some(p) => Some(p),
                None => {
                    return Err(
                        "--iface needs tcpdump, which is not in PATH, /usr/sbin or /sbin".into(),
                    )
                }
            }
        }
        None => None,
    };
    let custody = match &cfg.custody_log {
        Some(p) => Some(CustodyLog::open(p, &cfg.out).map_err(|e| with_causes(&e))?),
        None => None,
    };
    sys::install_signal_handlers().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let created = !cfg.out.exists();
    std::fs::create_dir_all(&cfg.out)
        .map_err(|e| format!("{}: cannot create: {e}", cfg.out.display()))?;
    // Held until the end: a second recorder on the same --out stops here.
    let lock = crate::outdir::lock_out_dir(&cfg.out).map_err(|e| with_causes(&e))?;
    Ok(Prepared {
        cfg,
        tcpdump,
        custody,
        created,
        _lock: lock,
    })
}

/// Starts the capture (before the first snapshot, so that it covers it),
/// when `--iface` asks for one. On failure nothing is left behind.
fn start_capture(p: &Prepared, started: &TimeStamp) -> Result<Option<Running>, String> {
    let cfg = &p.cfg;
    let Some(iface) = &cfg.iface else {
        return Ok(None);
    };
    let start_secs = started.clocks.realtime_ns.div_euclid(1_000_000_000);
    let started = match &p.tcpdump {
        Some(tcpdump) => capture::start(
            tcpdump,
            &cfg.out,
            iface,
            cfg.filter.as_deref(),
            cfg.rotate,
            start_secs,
            Duration::from_secs(10),
        )
        .map(Running::Tcpdump)
        .map_err(|e| with_causes(&e)),
        None => capture::start_native(
            &cfg.out,
            iface,
            cfg.filter.as_deref(),
            cfg.rotate,
            start_secs,
        )
        .map_err(|e| with_causes(&e)),
    };
    started.map(Some).map_err(|e| {
        // Leave nothing behind: the recording never started.
        for f in capture::capture_files(&cfg.out) {
            let _ = std::fs::remove_file(cfg.out.join(f));
        }
        let _ = std::fs::remove_file(cfg.out.join(layout::TCPDUMP_LOG_FILE));
        if p.created {
            let _ = std::fs::remove_dir(&cfg.out);
        }
        format!("capture on {iface} failed to start: {e}")
    })
}

/// The recorder, its event sources started, and the first manifest.
fn begin(cfg: Config, started: TimeStamp, cap: Option<&Running>) -> (Recorder, Manifest) {
    let mut rec = Recorder::new(cfg.clone());
    if cfg.ring.is_set() && !cfg.once {
        rec.ring = Some(crate::ring::Runner::start(
            &cfg.out,
            crate::ring::Ring::new(cfg.ring),
            realtime_now,
        ));
    }
    let mut sources = rec.start_sources(cfg.sources);
    // Before proc-poll, the last: the connection-tracking table and events.
    sources.insert(sources.len().saturating_sub(1), rec.conntrack.source());
    let mut errors = ErrorSummary::default();
    let host = host_info(rec.self_netns, &mut errors);
    for e in sys::lower_priority(cfg.nice) {
        errors.add(&RecordError {
            what: "priority".into(),
            path: None,
            error: e,
            count: 1,
        });
    }
    rec.errors = errors;
    let manifest = Manifest {
        format: layout::FORMAT_NAME.into(),
        format_version: layout::FORMAT_VERSION,
        tool: ToolInfo {
            name: "procflow-snap".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            argv: cfg.argv.clone(),
        },
        host,
        privileges: privileges(),
        options: RecordOptions {
            interval_ms: u64::try_from(rec.interval().as_millis()).unwrap_or(u64::MAX),
            keyframe_every: cfg.keyframe_every,
            full_walk_ms: u64::try_from(rec.full_walk().as_millis()).unwrap_or(u64::MAX),
            max_cpu_percent: cfg.max_cpu,
            archive_max_bytes: cfg.archive_bytes,
            nice: Some(cfg.nice),
            max_size_bytes: cfg.ring.max_bytes,
            keep_ms: cfg
                .ring
                .keep
                .map(|k| u64::try_from(k.as_millis()).unwrap_or(u64::MAX)),
        },
        capture: cap.map(|c| c.info().clone()),
        started,
        ended: None,
        status: RecorderStatus::Recording,
        archives: vec![layout::archive_name(1)],
        capture_files: Vec::new(),
        snapshots: 0,
        errors: rec.errors.to_vec(),
        sources,
        deleted: Vec::new(),
    };
    (rec, manifest)
}

/// Ticks until a signal, the duration, or a write error.
fn record_loop(
    rec: &mut Recorder,
    manifest: &mut Manifest,
    cap: &mut Option<Running>,
    notice: &dyn Fn(Notice),
) -> Stop {
    let t0 = Instant::now();
    let deadline = rec.cfg.duration.map(|d| t0 + d);
    let mut capture_reported = false;
    loop {
        let tick_start = Instant::now();
        let cpu0 = sys::self_cpu_ns();
        let n_archives = rec.archives.len();
        if let Err(stop) = rec.tick() {
            return stop;
        }
        if rec.cfg.once {
            return Stop::Done;
        }
        if rec.archives.len() != n_archives {
            // Rotation (the next archive is opened by the next tick, so no
            // archive is ever empty): the manifest names every archive as
            // soon as it holds a snapshot.
            manifest.archives = rec.archives.clone();
            manifest.snapshots = rec.written;
            if let Err(e) = manifest_while_recording(&rec.cfg.out, manifest) {
                return write_stop("writing manifest.json", &e);
            }
        }
        if let Err(stop) = rec.keep_ring(manifest, true) {
            return stop;
        }
        if let Some(c) = cap.as_mut() {
            if !capture_reported {
                if let Some((msg, disk_full)) = c.failed() {
                    capture_reported = true;
                    if matches!(c, Running::Native { .. }) {
                        // The capture can no longer write: stop, keeping
                        // what is written, with the loss stated.
                        let msg = format!("capture file: {msg}");
                        return if disk_full {
                            Stop::DiskFull(msg)
                        } else {
                            Stop::Error(msg)
                        };
                    }
                    notice(Notice::CaptureFailed(msg.clone()));
                    rec.errors.add(&RecordError {
                        what: "capture".into(),
                        path: None,
                        error: msg,
                        count: 1,
                    });
                }
            }
        }
        let work = tick_start.elapsed();
        let mut wait = rec.interval().saturating_sub(work);
        if let Some(pct) = rec.cfg.max_cpu.filter(|p| *p > 0.0) {
            // Stretch the period so that cpu / period stays under the budget.
            let cpu = Duration::from_nanos(sys::self_cpu_ns().saturating_sub(cpu0));
            let period = cpu.mul_f64(100.0 / pct);
            wait = wait.max(period.saturating_sub(work));
        }
        let wake = Instant::now() + wait;
        loop {
            let now = Instant::now();
            if sys::signals() > 0 || deadline.is_some_and(|d| now >= d) {
                // Events seen since the last snapshot go into a last one.
                if rec.events.is_some() && sys::signals() < 2 {
                    rec.closing = true;
                    if let Err(stop) = rec.tick() {
                        return stop;
                    }
                }
                return Stop::Done;
            }
            if now >= wake {
                break;
            }
            let mut nap = (wake - now).min(Duration::from_millis(50));
            if let Some(d) = deadline {
                nap = nap.min(d.saturating_duration_since(now));
            }
            std::thread::sleep(nap);
        }
    }
}

/// Stops the capture, closes the archive, writes the final manifest and
/// hashes, and appends the custody record. A second signal cuts this short
/// with status `killed`.
fn finish(
    mut rec: Recorder,
    mut m: Manifest,
    mut cap: Option<Running>,
    stop: Stop,
    mut custody: Option<CustodyLog>,
) -> Finished {
    if let Some(mut ev) = rec.events.take() {
        ev.stop();
    }
    let second = || sys::signals() >= 2;
    let stopped_by = match &stop {
        Stop::Done => None,
        Stop::DiskFull(msg) => Some(WriteStop::DiskFull(msg.clone())),
        Stop::Error(msg) => Some(WriteStop::Error(msg.clone())),
    };
    let mut status = match &stop {
        Stop::Done => RecorderStatus::Complete,
        Stop::DiskFull(_) => RecorderStatus::DiskFull,
        Stop::Error(_) => RecorderStatus::Error,
    };
    match &stop {
        Stop::DiskFull(msg) | Stop::Error(msg) => rec.errors.add(&RecordError {
            what: "write".into(),
            path: None,
            error: msg.clone(),
            count: 1,
        }),
        Stop::Done => {}
    }
    let cap_info = cap
        .as_mut()
        .map(|c| c.stop(&rec.cfg.out, Duration::from_secs(5), &second));
    if second() {
        status = RecorderStatus::Killed;
    }
    let mut close_error = None;
    match &stop {
        Stop::Done if !second() => {
            if let Err(Stop::DiskFull(msg) | Stop::Error(msg)) = rec.close_archive() {
                rec.errors.add(&RecordError {
                    what: "write".into(),
                    path: None,
                    error: msg.clone(),
                    count: 1,
                });
                close_error = Some(msg);
                status = RecorderStatus::Error;
            }
        }
        // After a failed write, or when forced: no trailer, the archive is
        // read up to its last complete snapshot.
        _ => {
            if let Some(mut a) = rec.archive.take() {
                if !matches!(stop, Stop::DiskFull(_)) {
                    let _ = a.sync();
                }
                a.abandon();
            }
        }
    }
    if !second() {
        // The capture wrote on while it drained: the limits hold for the
        // bundle as it is left.
        let _ = rec.keep_ring(&mut m, false);
    }
    m.capture = cap_info;
    m.capture_files = capture::capture_files(&rec.cfg.out);
    let lost = evidence_lost(
        &rec.event_losses,
        rec.errors.total("conntrack-events"),
        m.capture.as_ref(),
    );
    let capture_lost = capture_lost(m.capture.as_ref());
    if !second() {
        // tcpdump closes its files without fsync.
        for f in m
            .capture_files
            .iter()
            .map(String::as_str)
            .chain([layout::TCPDUMP_LOG_FILE])
        {
            if let Ok(file) = std::fs::File::open(rec.cfg.out.join(f)) {
                let _ = file.sync_all();
            }
        }
    }
    m.archives = rec.archives.clone();
    m.snapshots = rec.written;
    m.ended = Some(sys::timestamp());
    m.status = status.clone();
    m.errors = rec.errors.to_vec();
    let out = rec.cfg.out.clone();
    let sealed = if let Err(error) = bundle::write_manifest(&out, &m) {
        Sealed::ManifestFailed {
            path: out.join(layout::MANIFEST_FILE),
            error,
        }
    } else if status == RecorderStatus::Killed {
        Sealed::Forced
    } else {
        match bundle::write_sha256sums(&out, &second) {
            Ok(digest) => Sealed::Digest(digest),
            Err(_) if second() => {
                m.status = RecorderStatus::Killed;
                let _ = bundle::write_manifest(&out, &m);
                Sealed::Forced
            }
            Err(error) => Sealed::NoSums {
                path: out.join(layout::SHA256SUMS_FILE),
                error,
            },
        }
    };
    if matches!(sealed, Sealed::Digest(_) | Sealed::NoSums { .. }) {
        let _ = bundle::sync_dir(&out);
    }
    let custody = match (&sealed, custody.as_mut()) {
        (Sealed::ManifestFailed { .. }, _) | (_, None) => None,
        (Sealed::Forced, Some(log)) => {
            // Said in the log; an error here has no line of its own.
            let _ = log.append(&custody_record(&m, &out, None));
            None
        }
        (Sealed::Digest(_) | Sealed::NoSums { .. }, Some(log)) => {
            let digest = match &sealed {
                Sealed::Digest(d) => Some(d.as_str()),
                _ => None,
            };
            Some(Custody {
                path: log.path().to_path_buf(),
                error: log.append(&custody_record(&m, &out, digest)).err(),
            })
        }
    };
    Finished {
        stopped_by,
        close_error,
        status: m.status.clone(),
        snapshots: m.snapshots,
        archives: m.archives.len(),
        capture_files: m.capture_files.len(),
        deleted: m.deleted.len(),
        lost,
        capture_lost,
        sealed,
        custody,
    }
}

/// Whether packets are missing from the capture: dropped by the kernel
/// (the recorder's ring or tcpdump's) or lost writing.
fn capture_lost(c: Option<&CaptureInfo>) -> bool {
    let Some(c) = c else { return false };
    if let Some(n) = &c.native {
        return n.lost() > 0 || n.ring_freezes > 0 || n.write_errors > 0;
    }
    c.counters
        .as_ref()
        .is_some_and(|k| k.dropped_by_kernel > 0 || k.dropped_by_interface.unwrap_or(0) > 0)
}

/// The custody record of the recording `m` describes.
fn custody_record(m: &Manifest, out: &Path, digest: Option<&str>) -> CustodyRecord {
    let now = sys::timestamp().clocks.realtime_ns;
    CustodyRecord {
        time: procflow_format::time::rfc3339_ns(now),
        host: m.host.hostname.clone(),
        boot_id: m.host.boot_id.clone(),
        tool: m.tool.name.clone(),
        version: m.tool.version.clone(),
        out: out.to_string_lossy().into_owned(),
        status: m.status.as_str().to_string(),
        digest: digest.map(|d| format!("sha256:{d}")),
    }
}

/// The evidence lost over the recording: event losses, conntrack event
/// batches lost, the capture's drops and write losses.
fn evidence_lost(
    l: &super::EventLosses,
    conntrack: u64,
    capture: Option<&CaptureInfo>,
) -> EvidenceLost {
    let mut parts = Vec::new();
    let mut say = |count: u64, what: &'static str| {
        if count > 0 {
            parts.push(Loss { count, what });
        }
    };
    say(l.kernel, "event sample(s) dropped by the kernel");
    say(l.dropped, "event(s) dropped by the recorder");
    say(l.connector, "process event(s) lost by the proc connector");
    say(
        l.unjoined,
        "TCP connect(s) whose source port was never seen",
    );
    say(l.packets, "packet(s) dropped by the lookup's packet socket");
    say(l.unowned, "looked-up socket(s) whose process was not found");
    say(
        l.packet_errors,
        "receive error(s) on the lookup's packet socket",
    );
    say(
        l.unwalked,
        "network namespace(s) whose open send/receive runs could not be read",
    );
    say(conntrack, "conntrack event batch(es) lost");
    match capture.map(|c| (&c.native, &c.counters)) {
        Some((Some(n), _)) => {
            say(
                n.kernel_drops,
                "packet(s) dropped by the kernel (capture ring full)",
            );
            say(n.ring_freezes, "capture ring overrun(s)");
            say(
                n.packets_lost_writing,
                "captured packet(s) not written (write failed)",
            );
            say(n.write_errors, "capture write failure(s)");
        }
        Some((None, Some(c))) => {
            say(c.dropped_by_kernel, "packet(s) dropped by kernel (tcpdump)");
            say(
                c.dropped_by_interface.unwrap_or(0),
                "packet(s) dropped by interface (tcpdump)",
            );
        }
        _ => {}
    }
    EvidenceLost(parts)
}

#[cfg(test)]
mod tests {
    use super::super::EventLosses;
    use super::*;

    #[test]
    fn evidence_lost_names_every_loss_and_nothing_else() {
        assert!(evidence_lost(&EventLosses::default(), 0, None).is_empty());
        let l = EventLosses {
            unjoined: 2,
            packets: 3,
            unwalked: 1,
            ..EventLosses::default()
        };
        let mut c = layout::CaptureInfo {
            method: None,
            tcpdump_path: "/usr/bin/tcpdump".into(),
            tcpdump_version: String::new(),
            argv: Vec::new(),
            iface: "eth0".into(),
            filter: None,
            exit: None,
            counters: Some(layout::CaptureCounters {
                dropped_by_kernel: 7,
                ..Default::default()
            }),
            native: None,
        };
        assert!(capture_lost(Some(&c)));
        let text = evidence_lost(&l, 4, Some(&c)).to_string();
        assert!(text.starts_with("EVIDENCE LOST: "), "{text}");
        for part in [
            "2 TCP connect(s)",
            "3 packet(s) dropped by the lookup",
            "4 conntrack event batch(es)",
            "1 network namespace(s) whose open send/receive runs could not be read",
            "7 packet(s) dropped by kernel (tcpdump)",
        ] {
            assert!(text.contains(part), "{part} missing in {text}");
        }
        assert!(!text.contains("by interface"), "{text}");
        // The recorder's own capture: its counters, not tcpdump's.
        c.native = Some(layout::NativeCounters {
            packets_lost_writing: 5,
            write_errors: 1,
            ..Default::default()
        });
        let text = evidence_lost(&EventLosses::default(), 0, Some(&c)).to_string();
        assert!(
            text.contains("5 captured packet(s) not written (write failed)")
                && text.contains("1 capture write failure(s)")
                && !text.contains("tcpdump"),
            "{text}"
        );
        assert!(capture_lost(Some(&c)));
        c.native = Some(layout::NativeCounters::default());
        assert!(!capture_lost(Some(&c)));
    }
}
