//! Drives the real `procflow-snap` binary against the live /proc and reads
//! its bundles back with the format's own reader.

// Test setup calls libc::geteuid and libc::kill.
#![allow(unsafe_code)]

#[path = "../../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use procflow_format::delta::FdStatus;
use procflow_format::layout::{self, Manifest, SnapshotKind};
use procflow_format::reader::{read_archive, read_archive_from, ArchiveEnd, Replay, Snapshot};

const BIN: &str = env!("CARGO_BIN_EXE_procflow-snap");

/// A fresh path under the temp dir (not created), removed on drop.
struct TempPath(PathBuf);

impl TempPath {
    fn new(tag: &str) -> TempPath {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "procflow-snap-test-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        TempPath(p)
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn manifest(dir: &Path) -> Manifest {
    let text = std::fs::read(dir.join(layout::MANIFEST_FILE)).expect("manifest.json");
    serde_json::from_slice(&text).expect("manifest.json parses as layout::Manifest")
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the recorder wrote its first snapshot.
fn wait_first_snapshot(dir: &Path) {
    wait_for("the first snapshot", Duration::from_secs(20), || {
        std::fs::metadata(dir.join(layout::archive_name(1)))
            .map(|m| m.len() > 0)
            .unwrap_or(false)
    });
}

/// A recorder process, killed if the test fails before it exits.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start(args: &[&str]) -> Running {
    Running(Some(
        Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start procflow-snap"),
    ))
}

fn signal(child: &Running, sig: libc::c_int) {
    let id = child.0.as_ref().map(|c| c.id()).expect("running");
    let pid = libc::pid_t::try_from(id).expect("pid fits");
    // SAFETY: kill with plain integers.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

fn wait_exit(mut running: Running, timeout: Duration) -> (i32, String) {
    let mut child = running.0.take().expect("running");
    let t = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            return (st.code().unwrap_or(-1), err);
        }
        if t.elapsed() > timeout {
            let _ = child.kill();
            panic!("procflow-snap did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every complete snapshot of every archive of a bundle, in order.
fn all_snapshots(dir: &Path) -> Vec<Snapshot> {
    let mut out = Vec::new();
    for n in 1.. {
        let p = dir.join(layout::archive_name(n));
        if !p.exists() {
            break;
        }
        let a = read_archive(&p).expect("archive readable");
        out.extend(a.snapshots);
    }
    out
}

/// Not a test: the test binary doubles as the socket-holding child of
/// `records_live_sockets_and_their_owner`, which runs it with `--ignored`
/// and PROCFLOW_SNAP_TEST_CHILD set; it opens loopback sockets, prints
/// their ports, holds them, closes them, and lingers. Ignored, so a plain
/// test run lists it as ignored rather than as a passing test.
#[test]
#[ignore = "helper process of records_live_sockets_and_their_owner, not a test"]
fn child_socket_holder() {
    let hold_ms = std::env::var("PROCFLOW_SNAP_TEST_CHILD")
        .expect("run by records_live_sockets_and_their_owner with PROCFLOW_SNAP_TEST_CHILD");
    let hold = Duration::from_millis(hold_ms.parse().unwrap_or(1500));
    let l = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    let c = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
    let (s, _) = l.accept().expect("accept");
    let u = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    println!(
        "PORTS {} {} {}",
        l.local_addr().expect("addr").port(),
        c.local_addr().expect("addr").port(),
        u.local_addr().expect("addr").port()
    );
    std::thread::sleep(hold);
    drop((l, c, s, u));
    println!("CLOSED");
    std::thread::sleep(Duration::from_millis(1200));
}

fn local_port(identity: &str) -> Option<u16> {
    let local = identity.split(' ').next()?;
    u16::from_str_radix(local.rsplit(':').next()?, 16).ok()
}

#[test]
fn records_live_sockets_and_their_owner() {
    let out = TempPath::new("live");
    let out_s = out.0.to_str().expect("utf-8 path");
    let rec = start(&[
        "record",
        "--out",
        out_s,
        "--interval",
        "100ms",
        "--full-walk",
        "500ms",
    ]);
    wait_first_snapshot(&out.0);
    let mut child = Command::new(std::env::current_exe().expect("test exe"))
        .args([
            "--exact",
            "child_socket_holder",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PROCFLOW_SNAP_TEST_CHILD", "1500")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start child");
    let child_pid = child.id();
    let stdout = child.stdout.take().expect("stdout");
    let mut ports: Vec<u16> = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("child stdout");
        if let Some((_, rest)) = line.split_once("PORTS ") {
            ports = rest.split(' ').filter_map(|p| p.parse().ok()).collect();
        }
    }
    child.wait().expect("child exit");
    assert_eq!(ports.len(), 3, "child printed its ports");
    std::thread::sleep(Duration::from_millis(300));
    signal(&rec, libc::SIGINT);
    let (code, err) = wait_exit(rec, Duration::from_secs(20));
    assert_eq!(code, 0, "stderr: {err}");

    let snaps = all_snapshots(&out.0);
    assert!(snaps.len() >= 3, "only {} snapshots", snaps.len());
    let (listen_port, client_port, udp_port) = (ports[0], ports[1], ports[2]);
    let mut replay = Replay::default();
    let (mut tcp_owned, mut udp_owned, mut client_owned, mut gone_after) =
        (false, false, false, false);
    for s in &snaps {
        replay.apply(s);
        let owned_by_child = |table: &str, port: u16| {
            let Some(FdStatus::Holds(inodes)) = replay.state.fds.get(&child_pid).map(|e| &e.status)
            else {
                return false;
            };
            replay.state.tables.iter().any(|((_, t), st)| {
                t == table
                    && st.rows.keys().any(|id| {
                        local_port(id) == Some(port)
                            && inodes.contains(&procflow_snap::procfs::row_inode(id))
                    })
            })
        };
        tcp_owned |= owned_by_child("tcp", listen_port);
        client_owned |= owned_by_child("tcp", client_port);
        udp_owned |= owned_by_child("udp", udp_port);
        let listed = replay.state.tables.iter().any(|((_, t), st)| {
            t == "tcp" && st.rows.keys().any(|id| local_port(id) == Some(listen_port))
        });
        if tcp_owned && !listed {
            gone_after = true;
        }
    }
    assert!(replay.problems.is_empty(), "{:?}", replay.problems);
    assert!(
        tcp_owned,
        "listener :{listen_port} held by pid {child_pid} never seen"
    );
    assert!(
        client_owned,
        "client :{client_port} held by pid {child_pid} never seen"
    );
    assert!(
        udp_owned,
        "udp :{udp_port} held by pid {child_pid} never seen"
    );
    assert!(gone_after, "the closed listener never disappeared");
    assert!(
        replay
            .procs
            .iter()
            .any(|p| p.pid == child_pid && p.start_time > 0 && p.exe.is_some()),
        "no process record for the child"
    );
    // Deltas really are deltas: most snapshots store unchanged tables.
    assert!(snaps.iter().any(|s| s.meta.kind == SnapshotKind::Delta));
    assert_eq!(snaps[0].meta.kind, SnapshotKind::Keyframe);
}

#[test]
fn sigkill_leaves_every_complete_snapshot_readable() {
    let out = TempPath::new("kill");
    let out_s = out.0.to_str().expect("utf-8 path");
    let rec = start(&[
        "record",
        "--out",
        out_s,
        "--interval",
        "20ms",
        "--keyframe-every",
        "7",
    ]);
    wait_first_snapshot(&out.0);
    let path = out.0.join(layout::archive_name(1));
    wait_for("10 snapshots", Duration::from_secs(60), || {
        read_archive(&path).is_ok_and(|a| a.snapshots.len() >= 10)
    });
    signal(&rec, libc::SIGKILL);
    let (code, _) = wait_exit(rec, Duration::from_secs(10));
    assert_eq!(code, -1, "killed by a signal");
    assert_eq!(manifest(&out.0).status.as_str(), "recording");

    let bytes = std::fs::read(&path).expect("archive");
    let full = read_archive(&path).expect("read");
    assert_ne!(full.end, ArchiveEnd::Trailer, "no trailer after SIGKILL");
    let n = full.snapshots.len();
    assert!(n >= 10, "only {n} snapshots");
    for (i, s) in full.snapshots.iter().enumerate() {
        assert_eq!(s.meta.seq, i as u64 + 1);
    }
    let mut replay = Replay::default();
    for s in &full.snapshots {
        replay.apply(s);
    }
    assert!(replay.problems.is_empty(), "{:?}", replay.problems);

    // Cut the archive at many offsets, inside headers, inside data and on
    // block boundaries: the reader returns exactly the snapshots whose
    // meta.json lies wholly before the cut, and flags the rest.
    let meta_ends: Vec<usize> = {
        let mut ends = Vec::new();
        let mut ar = tar::Archive::new(&bytes[..]);
        for e in ar.entries().expect("entries") {
            let e = e.expect("entry");
            if e.path().expect("path").ends_with("meta.json") {
                let end = e.raw_file_position() as usize + e.size() as usize;
                ends.push(end);
            }
        }
        ends
    };
    assert_eq!(meta_ends.len(), n);
    let step = (bytes.len() / 300).max(1);
    for cut in (0..bytes.len())
        .step_by(step)
        .chain([bytes.len() - 1, 512, 513])
    {
        let got = read_archive_from(&bytes[..cut]).expect("read cut archive");
        let want = meta_ends.iter().filter(|&&e| e <= cut).count();
        assert_eq!(got.snapshots.len(), want, "cut at {cut}");
        for (i, s) in got.snapshots.iter().enumerate() {
            assert_eq!(s.meta.seq, i as u64 + 1, "cut at {cut}");
        }
        let at_snapshot_end = meta_ends.iter().any(|&e| e.div_ceil(512) * 512 == cut) || cut == 0;
        if !at_snapshot_end {
            assert!(
                !got.incomplete.is_empty() || matches!(got.end, ArchiveEnd::Cut { .. }),
                "cut at {cut} inside a snapshot was not flagged"
            );
        }
    }
}

#[test]
fn sigint_writes_final_manifest_and_checksums() {
    let out = TempPath::new("int");
    let out_s = out.0.to_str().expect("utf-8 path");
    let rec = start(&["record", "--out", out_s, "--interval", "50ms"]);
    wait_first_snapshot(&out.0);
    assert_eq!(manifest(&out.0).status.as_str(), "recording");
    std::thread::sleep(Duration::from_millis(400));
    signal(&rec, libc::SIGINT);
    let (code, err) = wait_exit(rec, Duration::from_secs(20));
    assert_eq!(code, 0, "stderr: {err}");
    let m = manifest(&out.0);
    assert_eq!(m.status.as_str(), "complete");
    assert!(m.ended.is_some());
    assert!(m.snapshots >= 2);
    assert_eq!(m.archives, vec![layout::archive_name(1)]);
    assert_eq!(m.format, layout::FORMAT_NAME);
    assert!(!m.host.boot_id.is_empty() && m.host.btime > 0 && m.host.clk_tck > 0);
    let a = read_archive(&out.0.join(layout::archive_name(1))).expect("read");
    assert_eq!(a.end, ArchiveEnd::Trailer);
    assert!(a.incomplete.is_empty());
    assert_eq!(a.snapshots.len() as u64, m.snapshots);
    let sums = std::fs::read_to_string(out.0.join(layout::SHA256SUMS_FILE)).expect("sums");
    assert!(sums.contains("  manifest.json\n") && sums.contains("  snapshots-000001.tar\n"));
    let check = Command::new("sha256sum")
        .args(["-c", "--strict", layout::SHA256SUMS_FILE])
        .current_dir(&out.0)
        .output();
    match check {
        Ok(o) => assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout)),
        Err(e) => common::missing(&format!("sha256sum -c: {e}")),
    }
}

#[test]
fn once_writes_one_keyframe() {
    let out = TempPath::new("once");
    let o = Command::new(BIN)
        .args(["once", "--out", out.0.to_str().expect("utf-8")])
        .output()
        .expect("run");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let m = manifest(&out.0);
    assert_eq!((m.status.as_str(), m.snapshots), ("complete", 1));
    let a = read_archive(&out.0.join(layout::archive_name(1))).expect("read");
    assert_eq!(a.snapshots.len(), 1);
    let s = &a.snapshots[0];
    assert_eq!(s.meta.kind, SnapshotKind::Keyframe);
    assert_eq!(s.meta.fd_walk, layout::FdWalk::Full);
    assert!(!s.meta.netns.is_empty());
    // Every live process has its record, this test's own included.
    let mut r = Replay::default();
    r.apply(s);
    assert!(r.procs.iter().any(|p| p.pid == std::process::id()));
    assert!(out.0.join(layout::SHA256SUMS_FILE).exists());
}

fn tcpdump_running_for(dir: &Path) -> bool {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| {
                    let c = String::from_utf8_lossy(&c);
                    c.contains("tcpdump") && c.contains(&needle)
                })
                .unwrap_or(false)
        })
}

#[test]
fn iface_capture_runs_and_stops_tcpdump() {
    // SAFETY: geteuid has no arguments.
    if unsafe { libc::geteuid() } != 0 {
        common::missing("capture test needs root");
        return;
    }
    if procflow_snap::capture::find_tcpdump().is_none() {
        common::missing("capture test needs tcpdump");
        return;
    }
    let out = TempPath::new("cap");
    let out_s = out.0.to_str().expect("utf-8 path");
    let rec = start(&[
        "record",
        "--out",
        out_s,
        "--capture",
        "tcpdump",
        "--iface",
        "lo",
        "--interval",
        "100ms",
    ]);
    wait_first_snapshot(&out.0);
    assert!(tcpdump_running_for(&out.0), "tcpdump runs while recording");
    // Some loopback traffic for the capture.
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let c = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
    drop((c, l.accept()));
    std::thread::sleep(Duration::from_millis(300));
    signal(&rec, libc::SIGINT);
    let (code, err) = wait_exit(rec, Duration::from_secs(20));
    assert_eq!(code, 0, "stderr: {err}");
    assert!(!tcpdump_running_for(&out.0), "tcpdump still running");
    let m = manifest(&out.0);
    let cap = m.capture.expect("capture info");
    assert_eq!(cap.iface, "lo");
    assert!(
        cap.exit
            .as_deref()
            .is_some_and(|e| e.contains("exit status: 0")),
        "{:?}",
        cap.exit
    );
    assert_eq!(m.capture_files.len(), 1);
    let name = &m.capture_files[0];
    assert!(
        name.starts_with(layout::CAPTURE_PREFIX) && name.ends_with("Z.pcap"),
        "{name}"
    );
    let pcap = std::fs::read(out.0.join(name)).expect("capture file");
    let log = std::fs::read_to_string(out.0.join(layout::TCPDUMP_LOG_FILE)).expect("log");
    assert!(
        pcap.len() > 24,
        "capture holds no packets; tcpdump said: {log}"
    );
    let magic = u32::from_le_bytes([pcap[0], pcap[1], pcap[2], pcap[3]]);
    let magic_be = u32::from_be_bytes([pcap[0], pcap[1], pcap[2], pcap[3]]);
    assert!(
        magic == 0xa1b2_3c4d || magic_be == 0xa1b2_3c4d,
        "nanosecond pcap magic, got {magic:08x}"
    );
    assert!(log.contains("listening on lo"), "{log}");
    // tcpdump's own counters, in the manifest.
    let counters = cap.counters.expect("tcpdump's counters in the manifest");
    assert!(counters.captured >= 1, "{counters:?}; tcpdump said: {log}");
    assert_eq!(counters.dropped_by_kernel, 0, "{counters:?}");
    assert!(
        err.contains("manifest.json and SHA256SUMS written"),
        "{err}"
    );
    let sums = std::fs::read_to_string(out.0.join(layout::SHA256SUMS_FILE)).expect("sums");
    assert!(sums.contains(name.as_str()));
}

#[test]
fn pre_check_errors_write_nothing() {
    // Non-empty output directory.
    let out = TempPath::new("nonempty");
    std::fs::create_dir_all(&out.0).expect("mkdir");
    std::fs::write(out.0.join("evidence.txt"), b"keep me").expect("write");
    let o = Command::new(BIN)
        .args([
            "record",
            "--out",
            out.0.to_str().expect("utf-8"),
            "--duration",
            "1s",
        ])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not empty"), "{err}");
    let names: Vec<_> = std::fs::read_dir(&out.0).expect("ls").flatten().collect();
    assert_eq!(names.len(), 1);

    // An interface that does not exist.
    let out = TempPath::new("noiface");
    let o = Command::new(BIN)
        .args([
            "record",
            "--out",
            out.0.to_str().expect("utf-8"),
            "--iface",
            "nosuchif0",
        ])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("nosuchif0") && err.contains("no such interface"),
        "{err}"
    );
    assert!(!out.0.exists(), "nothing created");

    // An output path below a regular file.
    let file = TempPath::new("file");
    std::fs::write(&file.0, b"x").expect("write");
    let o = Command::new(BIN)
        .args(["once", "--out", file.0.join("sub").to_str().expect("utf-8")])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr)
        .to_lowercase()
        .contains("not a directory"));

    // Usage errors.
    let o = Command::new(BIN).args(["record"]).output().expect("run");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--out"));
    let o = Command::new(BIN).arg("--version").output().expect("run");
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("procflow-snap "));
}

/// A small tmpfs mounted for one test, unmounted on drop.
struct SmallFs(TempPath);

impl SmallFs {
    fn mount(size: &str) -> Option<SmallFs> {
        let p = TempPath::new("full");
        std::fs::create_dir_all(&p.0).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&p.0)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then_some(SmallFs(p))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0 .0).status();
    }
}

#[test]
fn disk_full_stops_cleanly_and_keeps_what_was_written() {
    // SAFETY: geteuid has no arguments.
    if unsafe { libc::geteuid() } != 0 {
        common::missing("disk-full test needs root (tmpfs mount)");
        return;
    }
    // Room for the manifest reserve and a few keyframes of this host.
    let probe = TempPath::new("probe");
    let o = Command::new(BIN)
        .args(["once", "--out", probe.0.to_str().expect("utf-8")])
        .output()
        .expect("run once");
    assert_eq!(o.status.code(), Some(0));
    let keyframe = std::fs::metadata(probe.0.join(layout::archive_name(1)))
        .expect("archive")
        .len();
    let size = 512 * 1024 + 4 * keyframe;
    let Some(fs) = SmallFs::mount(&format!("{}k", size / 1024)) else {
        common::missing("disk-full test could not mount a tmpfs");
        return;
    };
    let dir = fs.0 .0.clone();
    let rec = start(&[
        "record",
        "--out",
        dir.to_str().expect("utf-8"),
        "--interval",
        "10ms",
        "--keyframe-every",
        "1",
        "--duration",
        "60s",
    ]);
    let (code, err) = wait_exit(rec, Duration::from_secs(70));
    assert_eq!(code, 3, "stderr: {err}");
    assert!(err.contains("disk full"), "{err}");
    let m = manifest(&dir);
    assert_eq!(m.status.as_str(), "disk-full");
    assert!(m.ended.is_some());
    assert!(
        m.errors.iter().any(|e| e.error.contains("ENOSPC")),
        "{:?}",
        m.errors
    );
    let mut total = 0;
    for name in &m.archives {
        let a = read_archive(&dir.join(name)).expect("read");
        let mut r = Replay::default();
        for s in &a.snapshots {
            r.apply(s);
        }
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        total += a.snapshots.len() as u64;
    }
    assert!(total >= 1, "no snapshot kept");
    // The snapshot cut by the full disk is not counted.
    assert_eq!(m.snapshots, total);
}

#[test]
fn archives_rotate_and_each_stands_alone() {
    let out = TempPath::new("rotate");
    let out_s = out.0.to_str().expect("utf-8 path");
    let rec = start(&[
        "record",
        "--out",
        out_s,
        "--interval",
        "10ms",
        "--keyframe-every",
        "1",
        "--archive-mb",
        "1",
    ]);
    let third = out.0.join(layout::archive_name(3));
    wait_for("a third archive", Duration::from_secs(120), || {
        third.exists()
    });
    signal(&rec, libc::SIGINT);
    let (code, err) = wait_exit(rec, Duration::from_secs(20));
    assert_eq!(code, 0, "stderr: {err}");
    let m = manifest(&out.0);
    assert!(m.archives.len() >= 3, "{:?}", m.archives);
    let mut next_seq = 1;
    let mut total = 0;
    for name in &m.archives {
        let a = read_archive(&out.0.join(name)).expect("read");
        assert_eq!(a.end, ArchiveEnd::Trailer, "{name} closed with a trailer");
        let first = a.snapshots.first().expect("snapshots");
        assert_eq!(
            first.meta.kind,
            SnapshotKind::Keyframe,
            "{name} starts with a keyframe"
        );
        assert_eq!(
            first.meta.seq, next_seq,
            "{name}: seq continues across archives"
        );
        next_seq += a.snapshots.len() as u64;
        total += a.snapshots.len() as u64;
        // Each archive alone names every process alive at its start, pid 1
        // included, and replays without problems.
        let mut r = Replay::default();
        for s in &a.snapshots {
            r.apply(s);
        }
        assert!(r.problems.is_empty(), "{name}: {:?}", r.problems);
        assert!(
            r.procs.iter().any(|p| p.pid == 1),
            "{name}: no record of pid 1"
        );
    }
    assert_eq!(total, m.snapshots);
}

/// Whether the recorder can be run as uid 65534 through setpriv (root and
/// setpriv present); says `SKIPPED` with the reason when not.
fn can_run_as_nobody() -> bool {
    // SAFETY: geteuid has no arguments.
    if unsafe { libc::geteuid() } != 0 {
        common::missing("needs root to run the recorder as uid 65534 (setpriv)");
        return false;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        common::missing("setpriv (util-linux) not installed");
        return false;
    }
    true
}

#[test]
fn unreadable_fds_are_recorded_as_denied() {
    if !can_run_as_nobody() {
        return;
    }
    let parent = TempPath::new("denied");
    std::fs::create_dir_all(&parent.0).expect("mkdir");
    let out = parent.0.join("bundle");
    std::fs::create_dir_all(&out).expect("mkdir");
    let chown = Command::new("chown")
        .args(["65534:65534"])
        .arg(&out)
        .status()
        .expect("chown");
    assert!(chown.success());
    // The bundle directory must be reachable by uid 65534.
    std::fs::set_permissions(
        &parent.0,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let o = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            BIN,
            "once",
            "--out",
        ])
        .arg(&out)
        .output()
        .expect("run");
    if o.status.code() == Some(2) && String::from_utf8_lossy(&o.stderr).contains("writable") {
        eprintln!("SKIPPED: temp dir not usable by uid 65534");
        return;
    }
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("procflow-snap: warning: not running as root (euid 65534)"),
        "{err}"
    );
    assert!(
        err.contains("processes' fd directories cannot be read (EACCES)"),
        "{err}"
    );
    let m = manifest(&out);
    assert_eq!(m.privileges.euid, 65534);
    let a = read_archive(&out.join(layout::archive_name(1))).expect("read");
    let mut r = Replay::default();
    r.apply(&a.snapshots[0]);
    // pid 1 runs as root: its fds are unknown, not absent.
    match r.state.fds.get(&1).map(|e| &e.status) {
        Some(FdStatus::Denied(errno)) => assert!(errno == "EACCES" || errno == "EPERM"),
        other => panic!("pid 1 should be denied, got {other:?}"),
    }
    assert!(m
        .errors
        .iter()
        .any(|e| e.what == "read-fd" && e.path.as_deref() == Some("/proc/*/fd")));
}

#[test]
fn every_network_namespace_in_use_is_read() {
    // SAFETY: geteuid has no arguments.
    if unsafe { libc::geteuid() } != 0 {
        common::missing("needs root for unshare --net");
        return;
    }
    // An anonymous namespace, gone when its only process exits.
    let Ok(mut ns_proc) = Command::new("unshare")
        .args(["--net", "sleep", "20"])
        .spawn()
    else {
        common::missing("needs unshare (util-linux)");
        return;
    };
    let pid = ns_proc.id();
    let own_ns = std::fs::read_link("/proc/self/ns/net").expect("own netns");
    wait_for("the new namespace", Duration::from_secs(10), || {
        std::fs::read_link(format!("/proc/{pid}/ns/net")).is_ok_and(|l| l != own_ns)
    });
    let out = TempPath::new("netns");
    let o = Command::new(BIN)
        .args(["once", "--out", out.0.to_str().expect("utf-8")])
        .output()
        .expect("run");
    let _ = ns_proc.kill();
    let _ = ns_proc.wait();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let a = read_archive(&out.0.join(layout::archive_name(1))).expect("read");
    let meta = &a.snapshots[0].meta;
    let m = manifest(&out.0);
    let other = meta
        .netns
        .iter()
        .find(|n| n.pid == pid)
        .unwrap_or_else(|| panic!("namespace of pid {pid} not read: {:?}", meta.netns));
    assert_ne!(other.inode, m.host.netns);
    assert!(meta.netns.iter().any(|n| n.inode == m.host.netns));
    let tcp = other
        .tables
        .iter()
        .find(|t| t.table == "tcp")
        .expect("tcp entry");
    assert_eq!(tcp.stored, layout::TableStored::Full);
    assert!(a.snapshots[0]
        .members
        .iter()
        .any(|(name, _, _)| { *name == layout::net_member(1, other.inode, "tcp", true) }));
}

#[test]
fn second_signal_forces_exit_with_status_killed() {
    // SAFETY: geteuid has no arguments.
    if unsafe { libc::geteuid() } != 0 || procflow_snap::capture::find_tcpdump().is_none() {
        common::missing("needs root and tcpdump (the capture drain is the window)");
        return;
    }
    let out = TempPath::new("twice");
    let out_s = out.0.to_str().expect("utf-8 path");
    let rec = start(&[
        "record",
        "--out",
        out_s,
        "--capture",
        "tcpdump",
        "--iface",
        "lo",
        "--interval",
        "50ms",
    ]);
    wait_first_snapshot(&out.0);
    signal(&rec, libc::SIGINT);
    // The recorder now lets tcpdump drain for over a second: interrupt that.
    std::thread::sleep(Duration::from_millis(300));
    signal(&rec, libc::SIGTERM);
    let t = Instant::now();
    let (code, err) = wait_exit(rec, Duration::from_secs(20));
    assert_eq!(code, 130, "stderr: {err}");
    assert!(t.elapsed() < Duration::from_secs(3), "exit was not prompt");
    let m = manifest(&out.0);
    assert_eq!(m.status.as_str(), "killed");
    assert!(m.ended.is_some());
    assert!(!out.0.join(layout::SHA256SUMS_FILE).exists());
    assert!(!tcpdump_running_for(&out.0), "tcpdump still running");
    let a = read_archive(&out.0.join(layout::archive_name(1))).expect("read");
    assert!(!a.snapshots.is_empty());
    assert_eq!(a.snapshots.len() as u64, m.snapshots);
}

/// Process start time (field 22 of /proc/PID/stat), read while it lives.
fn start_time_of(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// Runs a python3 client to its end: its pid, its start time (read while
/// it runs) and its standard output, trimmed. Panics if it fails.
fn run_python(code: &str) -> (u32, Option<u64>, String) {
    let child = Command::new("python3")
        .arg("-c")
        .arg(code)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let pid = child.id();
    let start = start_time_of(pid);
    let o = child.wait_with_output().expect("client");
    assert!(o.status.success());
    (
        pid,
        start,
        String::from_utf8_lossy(&o.stdout).trim().to_string(),
    )
}

/// Every event and process record of a bundle, through the format's reader.
fn events_and_procs(dir: &Path) -> (Vec<layout::EventRecord>, Vec<layout::ProcessRecord>) {
    let mut state = procflow_format::reader::State::new(procflow_format::delta::RawRows);
    let (mut events, mut procs) = (Vec::new(), Vec::new());
    for s in all_snapshots(dir) {
        let a = state.apply(&s);
        assert!(a.problems.is_empty(), "problems: {:?}", a.problems);
        events.extend(a.events);
        procs.extend(a.processes);
    }
    (events, procs)
}

/// A TCP connection from a process that exits within ~50 ms, and a UDP
/// query from a fresh socket to a local responder, are both in
/// events.jsonl with pid, start time and tuple; `--sources poll` records
/// no event and says why in the manifest.
#[test]
fn events_name_short_lived_owners() {
    // SAFETY: geteuid has no arguments.
    if unsafe { libc::geteuid() } != 0 {
        common::missing("event sources need root (perf_event_open, proc connector)");
        return;
    }
    let Ok(py) = Command::new("python3").arg("-c").arg("pass").status() else {
        common::missing("event test needs python3 for its short-lived clients");
        return;
    };
    assert!(py.success());
    let out = TempPath::new("events");
    let out_s = out.0.to_str().expect("utf-8 temp path");
    let rec = start(&["record", "--out", out_s, "--event-interval", "500ms"]);
    wait_first_snapshot(&out.0);
    let m = manifest(&out.0);
    let set_state = m
        .sources
        .iter()
        .find(|s| s.name == "tracepoint:sock:inet_sock_set_state")
        .expect("the source is listed");
    let fib = m
        .sources
        .iter()
        .find(|s| s.name == "tracepoint:fib:fib_table_lookup")
        .expect("the source is listed");
    if !set_state.used || !fib.used {
        common::missing(&format!(
            "tracepoints unavailable here: {:?} / {:?}",
            set_state.detail, fib.detail
        ));
        return;
    }
    assert!(m.sources.iter().any(|s| s.name == "proc-poll" && s.used));

    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let tcp_port = listener.local_addr().expect("addr").port();
    let responder = UdpSocket::bind("127.0.0.1:0").expect("udp bind");
    let udp_port = responder.local_addr().expect("addr").port();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let echo = std::thread::spawn(move || {
        responder
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let mut buf = [0u8; 512];
        while !stop2.load(Ordering::SeqCst) {
            if let Ok((n, from)) = responder.recv_from(&mut buf) {
                let _ = responder.send_to(&buf[..n], from);
            }
        }
    });
    let accepter = std::thread::spawn(move || {
        let _ = listener.accept();
    });
    // Each child does its one exchange and exits at once.
    let run = |code: String| run_python(&code);
    let (tcp_pid, tcp_start, tcp_sport) = run(format!(
        "import socket\ns=socket.create_connection(('127.0.0.1',{tcp_port}))\nprint(s.getsockname()[1])\ns.close()"
    ));
    let (udp_pid, udp_start, udp_sport) = run(format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(2)\n\
         s.sendto(b'q',('127.0.0.1',{udp_port}))\ns.recvfrom(512)\nprint(s.getsockname()[1])\ns.close()"
    ));
    accepter.join().expect("accept");
    std::thread::sleep(Duration::from_millis(700));
    signal(&rec, libc::SIGTERM);
    let (code, err) = wait_exit(rec, Duration::from_secs(30));
    stop.store(true, Ordering::SeqCst);
    echo.join().expect("echo");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        err.lines().filter(|l| l.contains("sources:")).count(),
        1,
        "{err}"
    );

    let (events, procs) = events_and_procs(&out.0);
    let tcp = events
        .iter()
        .find(|e| e.kind == "connect" && e.pid == tcp_pid)
        .unwrap_or_else(|| panic!("no connect event of pid {tcp_pid} in {events:#?}"));
    assert_eq!(tcp.proto, "tcp");
    assert_eq!(tcp.remote_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(tcp.remote_port, Some(tcp_port));
    assert_eq!(tcp.local_port.to_string(), tcp_sport);
    assert!(tcp_start.is_some() && tcp.start_time == tcp_start);
    let udp = events
        .iter()
        .find(|e| e.kind == "send" && e.pid == udp_pid)
        .unwrap_or_else(|| panic!("no send event of pid {udp_pid} in {events:#?}"));
    assert_eq!(udp.proto, "udp");
    assert_eq!(udp.remote_port, Some(udp_port));
    assert_eq!(udp.local_port.to_string(), udp_sport);
    assert!(udp_start.is_some() && udp.start_time == udp_start);
    // Both short-lived processes have their identity in the bundle.
    for (pid, st) in [(tcp_pid, tcp_start), (udp_pid, udp_start)] {
        assert!(
            procs
                .iter()
                .any(|p| p.pid == pid && Some(p.start_time) == st),
            "no identity of pid {pid}"
        );
    }

    // Forced fallback: no event, and the manifest says why.
    let out = TempPath::new("poll");
    let out_s = out.0.to_str().expect("utf-8 temp path");
    let o = Command::new(BIN)
        .args([
            "record",
            "--out",
            out_s,
            "--sources",
            "poll",
            "--duration",
            "1s",
        ])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(0));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("not used: tracepoint:sock:inet_sock_set_state (event sources switched off"),
        "{err}"
    );
    let m = manifest(&out.0);
    for s in &m.sources {
        if s.name.starts_with("tracepoint:") || s.name == "proc-connector" {
            assert!(!s.used, "{s:?}");
        }
    }
    assert!(m.sources.iter().any(|s| s.name == "proc-poll" && s.used));
    assert!(events_and_procs(&out.0).0.is_empty());
    assert_eq!(m.options.interval_ms, 250);
}

#[test]
fn two_recorders_at_once() {
    // Both started together on one empty --out: exactly one records, the
    // other stops before writing anything and says why.
    let out = TempPath::new("two");
    std::fs::create_dir_all(&out.0).expect("mkdir");
    let out_s = out.0.to_str().expect("utf-8 path");
    let args = ["record", "--out", out_s, "--interval", "100ms"];
    let a = start(&args);
    let b = start(&args);
    std::thread::sleep(Duration::from_millis(1500));
    for r in [&a, &b] {
        if r.0.as_ref().is_some_and(|c| c.id() > 0) {
            let id = r.0.as_ref().map(|c| c.id()).unwrap_or(0);
            // SAFETY: kill with plain integers; a recorder that already
            // exited is simply not found.
            unsafe {
                libc::kill(libc::pid_t::try_from(id).unwrap_or(0), libc::SIGINT);
            }
        }
    }
    let (ca, ea) = wait_exit(a, Duration::from_secs(20));
    let (cb, eb) = wait_exit(b, Duration::from_secs(20));
    let mut results = [(ca, ea), (cb, eb)];
    results.sort_by_key(|r| r.0);
    let (won, lost) = (&results[0], &results[1]);
    assert_eq!(won.0, 0, "winner: {}", won.1);
    assert!(
        won.1.contains("manifest.json and SHA256SUMS written"),
        "{}",
        won.1
    );
    assert_eq!(lost.0, 2, "loser: {}", lost.1);
    assert!(
        lost.1
            .contains("another procflow-snap is recording into this directory")
            || lost.1.contains("output directory is not empty"),
        "{}",
        lost.1
    );
    assert!(!lost.1.contains("SHA256SUMS written"), "{}", lost.1);
    let m = manifest(&out.0);
    assert_eq!(m.status.as_str(), "complete");
}

#[test]
fn heartbeat_on_a_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        common::missing("needs script (util-linux) for a terminal");
        return;
    }
    let out = TempPath::new("heartbeat");
    let cmd = format!(
        "'{BIN}' record --out '{}' --interval 100ms --heartbeat 1s --duration 3s",
        out.0.display()
    );
    let o = Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("run script");
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{text}");
    let beats: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("s: ") && l.contains(" snapshots ("))
        .collect();
    assert!(beats.len() >= 2, "no heartbeat on the terminal: {text}");
    for b in &beats {
        // The counters, each once; the source list only in the start line.
        assert!(!b.contains("sources"), "{b}");
        assert_eq!(b.matches("snapshots").count(), 1, "{b}");
        assert!(b.matches("events ").count() <= 1, "{b}");
    }
    // With event sources in use (as root, where the host allows them) the
    // events archived and lost are counted.
    let used = text
        .lines()
        .find_map(|l| l.split_once("procflow-snap: sources: "))
        .map(|(_, rest)| rest.split(';').next().unwrap_or("").to_string())
        .unwrap_or_default();
    let events = used.split(", ").any(|s| !s.is_empty() && s != "proc-poll");
    for b in &beats {
        assert_eq!(b.contains(" archived, "), events, "sources {used:?}: {b}");
    }
    // Not on a pipe: the same run without a terminal has none.
    let out2 = TempPath::new("heartbeat-pipe");
    let o = Command::new(BIN)
        .args(["record", "--out"])
        .arg(&out2.0)
        .args([
            "--interval",
            "100ms",
            "--heartbeat",
            "1s",
            "--duration",
            "2s",
        ])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains(" snapshots ("), "{err}");
}

/// Without the privileges for the event sources (run as uid 65534 through
/// setpriv), the recorder says in one line which sources it uses and why
/// not the others, records the same in the manifest, and keeps recording.
#[test]
fn unprivileged_sources_are_named_and_recording_goes_on() {
    if !can_run_as_nobody() {
        return;
    }
    let dir = TempPath::new("nobody");
    std::fs::create_dir_all(&dir.0).expect("dir");
    // The binary and the bundle must be reachable by uid 65534.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let bin = dir.0.join("procflow-snap");
    std::fs::copy(BIN, &bin).expect("copy binary");
    let out = dir.0.join("bundle");
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(["record", "--out"])
        .arg(&out)
        .args(["--duration", "1s"])
        .output()
        .expect("setpriv");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains(" sources: ")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    let m = manifest(&out);
    assert_eq!(m.status.as_str(), "complete");
    assert!(m.snapshots >= 1);
    let tp = m
        .sources
        .iter()
        .find(|s| s.name == "tracepoint:sock:inet_sock_set_state")
        .expect("listed");
    assert!(!tp.used, "{tp:?}");
    let why = tp.detail.as_deref().expect("a reason");
    assert!(
        lines[0].contains(&format!("tracepoint:sock:inet_sock_set_state ({why})")),
        "{err}"
    );
    assert!(m.sources.iter().any(|s| s.name == "proc-poll" && s.used));
    // Periodic reads only: the fallback interval.
    assert_eq!(m.options.interval_ms, 250);
}

/// `--sources lookup` (the capture-triggered lookup, forced as on a host
/// without tracepoints): one long-lived process makes short sequential TCP
/// connections (held 50 ms) and fresh-socket UDP queries (answered in
/// 20 ms) to local servers, IPv4 and IPv6; most of them have a `lookup` event with that
/// pid, its start time, the tuple and the socket inode. A lookup races
/// with the socket's close, so not all: docs/recorder.md has the
/// measurements, also for sockets living less than a millisecond.
#[test]
fn capture_lookup_names_the_owner_of_new_flows() {
    // SAFETY: geteuid has no arguments.
    if unsafe { libc::geteuid() } != 0 {
        common::missing("the lookup source needs root (packet socket)");
        return;
    }
    if !Command::new("python3")
        .arg("-c")
        .arg("pass")
        .status()
        .is_ok_and(|s| s.success())
    {
        common::missing("lookup test needs python3 for its client");
        return;
    }
    let out = TempPath::new("lookup");
    let out_s = out.0.to_str().expect("utf-8 temp path");
    let rec = start(&[
        "record",
        "--out",
        out_s,
        "--sources",
        "lookup",
        "--iface",
        "lo",
    ]);
    wait_first_snapshot(&out.0);
    let m = manifest(&out.0);
    let lookup = m
        .sources
        .iter()
        .find(|s| s.name == "capture-lookup")
        .expect("the source is listed");
    assert!(lookup.used, "{lookup:?}");
    for s in m
        .sources
        .iter()
        .filter(|s| s.name.starts_with("tracepoint:"))
    {
        assert!(!s.used, "{s:?}");
    }

    // IPv4 then IPv6, from the same process: (host, connections, queries).
    let mut rounds = vec![("127.0.0.1", 30usize)];
    if TcpListener::bind("[::1]:0").is_ok() {
        rounds.push(("::1", 10));
    } else {
        common::missing("the IPv6 round of the lookup test (no ::1 here)");
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut servers = Vec::new();
    let mut ports = Vec::new();
    for &(host, n) in &rounds {
        let listener = TcpListener::bind((host, 0)).expect("listen");
        let responder = UdpSocket::bind((host, 0)).expect("udp bind");
        ports.push((
            listener.local_addr().expect("addr").port(),
            responder.local_addr().expect("addr").port(),
        ));
        let stop2 = stop.clone();
        servers.push(std::thread::spawn(move || {
            responder
                .set_read_timeout(Some(Duration::from_millis(100)))
                .expect("timeout");
            let mut buf = [0u8; 512];
            while !stop2.load(Ordering::SeqCst) {
                if let Ok((n, from)) = responder.recv_from(&mut buf) {
                    // A resolver answers in milliseconds, not microseconds.
                    std::thread::sleep(Duration::from_millis(20));
                    let _ = responder.send_to(&buf[..n], from);
                }
            }
        }));
        servers.push(std::thread::spawn(move || {
            for _ in 0..n {
                if let Ok((mut s, _)) = listener.accept() {
                    let mut b = [0u8; 1];
                    let _ = std::io::Read::read(&mut s, &mut b);
                    let _ = std::io::Write::write_all(&mut s, b"y");
                }
            }
        }));
    }
    let mut code = String::from("import socket, time\n");
    for ((host, n), (tcp_port, udp_port)) in rounds.iter().zip(&ports) {
        let fam = if host.contains(':') {
            "AF_INET6"
        } else {
            "AF_INET"
        };
        code.push_str(&format!(
            "for i in range({n}):\n\
             \x20   s=socket.create_connection(('{host}',{tcp_port}))\n\
             \x20   print('tcp {host}', s.getsockname()[1], flush=True)\n\
             \x20   s.sendall(b'x'); s.recv(1); time.sleep(0.05); s.close(); time.sleep(0.03)\n\
             for i in range({n}):\n\
             \x20   s=socket.socket(socket.{fam},socket.SOCK_DGRAM); s.settimeout(2)\n\
             \x20   s.sendto(b'q',('{host}',{udp_port})); s.recvfrom(512)\n\
             \x20   print('udp {host}', s.getsockname()[1], flush=True)\n\
             \x20   s.close(); time.sleep(0.03)\n"
        ));
    }
    let (pid, start_time, stdout) = run_python(&code);
    std::thread::sleep(Duration::from_millis(500));
    signal(&rec, libc::SIGTERM);
    let (code, err) = wait_exit(rec, Duration::from_secs(30));
    stop.store(true, Ordering::SeqCst);
    for t in servers {
        t.join().expect("server");
    }
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("sources: ") && err.contains("capture-lookup"),
        "{err}"
    );

    let (events, _) = events_and_procs(&out.0);
    for ((host, n), (tcp_port, udp_port)) in rounds.iter().zip(&ports) {
        for (proto, server) in [("tcp", *tcp_port), ("udp", *udp_port)] {
            let prefix = format!("{proto} {host} ");
            let lines: Vec<u16> = stdout
                .lines()
                .filter_map(|l| l.strip_prefix(&prefix)?.parse().ok())
                .collect();
            assert_eq!(lines.len(), *n, "{stdout}");
            let found = lines
                .iter()
                .filter(|&&port| {
                    events.iter().any(|e| {
                        e.kind == "lookup"
                            && e.source == "capture-lookup"
                            && e.pid == pid
                            && e.proto == proto
                            && e.local_port == port
                            && e.remote_port == Some(server)
                            && e.remote_ip.as_deref() == Some(*host)
                            && e.inode.is_some_and(|i| i != 0)
                            && e.start_time.is_some()
                            && e.start_time == start_time
                    })
                })
                .count();
            eprintln!("lookup events of the client: {proto} {host}: {found}/{n}");
            // Measured: all of them in each of 7 runs (IPv4) and 3 (IPv6)
            // on the shared 2-core machine (load 2 to 3); a lookup that loses the race with
            // close(2) is not written, hence the margin.
            assert!(
                found * 10 >= n * 8,
                "{proto} {host}: {found}/{n}: {events:#?}"
            );
        }
    }
}

/// Prints `SKIPPED: why` and returns true, except under CI (`CI=true`),
/// where a missing facility fails the test.
fn skip(why: &str) -> bool {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("required under CI=true: {why}");
    }
    eprintln!("SKIPPED: {why}");
    true
}

/// Every sockuse, task and process record of a bundle.
/// Python: one process connects to itself over loopback and sends and
/// reads 300 000 bytes each way (an echo thread on the accepted end);
/// returns once both are done, the connection still open.
const ECHO_BOTH_WAYS: &str = "import os, socket, threading
ls = socket.socket(); ls.bind(('127.0.0.1', 0)); ls.listen(1)
c = socket.create_connection(ls.getsockname()); s, _ = ls.accept()
def echo():
    n = 0
    while n < 300000:
        d = s.recv(65536); n += len(d); s.sendall(d)
t = threading.Thread(target=echo); t.start()
c.sendall(b'q' * 300000)
n = 0
while n < 300000:
    n += len(c.recv(65536))
t.join()";

/// The manifest's `ebpf-use` source.
fn ebpf_source(m: &Manifest) -> &layout::SourceInfo {
    m.sources
        .iter()
        .find(|s| s.name == "ebpf-use")
        .expect("ebpf-use listed")
}

/// Says SKIPPED (fails under CI) for an eBPF program that did not load.
fn skip_unloaded(e: &layout::SourceInfo) {
    skip(&format!(
        "the eBPF program does not load here: {:?}",
        e.detail
    ));
}

/// Bytes sent and read by `pid` in the TCP runs of `uses`.
fn tcp_bytes(uses: &[layout::SockUseRecord], pid: u32) -> (u64, u64) {
    let (mut sent, mut read) = (0, 0);
    for u in uses
        .iter()
        .filter(|u| u.kind == layout::SockUseKind::Use && u.pid == Some(pid) && u.proto == "tcp")
    {
        match u.dir {
            Some(layout::UseDir::Send) => sent += u.bytes.unwrap_or(0),
            Some(layout::UseDir::Recv) => read += u.bytes.unwrap_or(0),
            None => {}
        }
    }
    (sent, read)
}

fn uses_tasks_procs(
    dir: &Path,
) -> (
    Vec<layout::SockUseRecord>,
    Vec<layout::TaskRecord>,
    Vec<layout::ProcessRecord>,
) {
    let mut state = procflow_format::reader::State::new(procflow_format::delta::RawRows);
    let (mut uses, mut tasks, mut procs) = (Vec::new(), Vec::new(), Vec::new());
    for s in all_snapshots(dir) {
        let a = state.apply(&s);
        assert!(a.problems.is_empty(), "problems: {:?}", a.problems);
        uses.extend(a.sockuse);
        tasks.extend(a.tasks);
        procs.extend(a.processes);
    }
    (uses, tasks, procs)
}

/// The send runs of the client socket whose local port is `port` (towards
/// `server`): the socket id from its bindings, the runs of that id between
/// its first binding and its CLOSE (an id may come back later for another
/// socket), in file order.
fn client_send_runs(
    uses: &[layout::SockUseRecord],
    port: u16,
    server: u16,
) -> Vec<layout::SockUseRecord> {
    use layout::SockUseKind;
    let binds: Vec<&layout::SockUseRecord> = uses
        .iter()
        .filter(|u| {
            u.kind == SockUseKind::Sock
                && u.proto == "tcp"
                && u.local_port == Some(port)
                && u.remote_port == Some(server)
        })
        .collect();
    let first = binds
        .first()
        .unwrap_or_else(|| panic!("no binding of local port {port}"));
    let sk = first.sk.clone();
    let from = binds.iter().filter_map(|b| b.mono_ns).min().unwrap_or(0);
    let to = binds
        .iter()
        .filter(|b| b.state.as_deref() == Some("CLOSE"))
        .filter_map(|b| b.mono_ns)
        .max()
        .unwrap_or(i64::MAX);
    uses.iter()
        .filter(|u| {
            u.kind == SockUseKind::Use
                && u.sk == sk
                && u.dir == Some(layout::UseDir::Send)
                && u.first_ns.is_some_and(|t| t >= from && t <= to)
        })
        .cloned()
        .collect()
}

/// Bytes per pid of a list of runs.
fn bytes_by_pid(runs: &[layout::SockUseRecord]) -> std::collections::BTreeMap<u32, u64> {
    let mut m = std::collections::BTreeMap::new();
    for r in runs {
        *m.entry(r.pid.unwrap_or(0)).or_insert(0) += r.bytes.unwrap_or(0);
    }
    m
}

/// The program a client execs after connecting: it writes 200 000 bytes
/// to its standard output, the inherited socket.
const EXEC_SENDER: &str =
    "import os, time\ntime.sleep(0.1)\nd = b'z' * 200000\nwhile d:\n    d = d[os.write(1, d):]\n";

/// A socket handed to another process (fork, then the parent closes; fd
/// passing with SCM_RIGHTS; exec of another program keeping the fd) gets
/// `use` runs naming each process for exactly the bytes it sent, and the
/// exec is in `tasks.jsonl` with the new program's identity read at once.
#[test]
fn use_runs_name_the_sender_across_hand_offs() {
    hand_off_runs(&[], true);
}

/// The same through the perf tracepoints (`--sources
/// tracepoints-perf-use`): the same runs, sampled call by call.
#[test]
fn use_runs_name_the_sender_across_hand_offs_with_perf_tracepoints() {
    hand_off_runs(&["--sources", "tracepoints-perf-use"], false);
}

/// The hand-off checks, recorded with `extra` options; `ebpf`: whether
/// the runs must come from the eBPF program (`ebpf-use`) or from the perf
/// tracepoints.
fn hand_off_runs(extra: &[&str], ebpf: bool) {
    // SAFETY: geteuid has no arguments.
    if unsafe { libc::geteuid() } != 0 {
        skip("per-call tracepoints need root (perf_event_open, tracefs)");
        return;
    }
    if Command::new("python3")
        .arg("-c")
        .arg("pass")
        .status()
        .is_err()
    {
        skip("the hand-off programs are python3 scripts");
        return;
    }
    let out = TempPath::new("handoff");
    let out_s = out.0.to_str().expect("utf-8 temp path");
    let mut args = vec!["record", "--out", out_s, "--event-interval", "500ms"];
    args.extend_from_slice(extra);
    let rec = start(&args);
    wait_first_snapshot(&out.0);
    let m = manifest(&out.0);
    for name in [
        "tracepoint:sock:sock_send_length",
        "tracepoint:sched:sched_process_exec",
    ] {
        let s = m.sources.iter().find(|s| s.name == name).expect("listed");
        if !s.used {
            skip(&format!("{name} unavailable here: {:?}", s.detail));
            return;
        }
    }
    let e = ebpf_source(&m);
    if ebpf && !e.used {
        skip_unloaded(e);
        return;
    }
    assert_eq!(e.used, ebpf, "{e:?}");
    // A sink reading every connection to its end.
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let server = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for c in listener.incoming() {
            let Ok(mut c) = c else { break };
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c, &mut std::io::sink());
            });
        }
    });
    let numbers = |s: &str| -> Vec<u32> {
        s.split_whitespace()
            .map(|w| w.parse().expect("number"))
            .collect()
    };
    let (_, _, fork_out) = run_python(&format!(
        "import os, socket, time\n\
         s = socket.create_connection(('127.0.0.1', {server}))\n\
         s.sendall(b'a' * 100000)\n\
         pid = os.fork()\n\
         if pid == 0:\n\
         \x20   time.sleep(0.05)\n\
         \x20   s.sendall(b'b' * 200000)\n\
         \x20   s.close()\n\
         \x20   os._exit(0)\n\
         port = s.getsockname()[1]\n\
         s.close()\n\
         os.waitpid(pid, 0)\n\
         print(port, os.getpid(), pid)\n"
    ));
    let (_, _, pass_out) = run_python(&format!(
        "import os, socket\n\
         a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)\n\
         w = os.fork()\n\
         if w == 0:\n\
         \x20   a.close()\n\
         \x20   msg, fds, flags, addr = socket.recv_fds(b, 16, 1)\n\
         \x20   c = socket.socket(fileno=fds[0])\n\
         \x20   c.sendall(b'w' * 200000)\n\
         \x20   c.close()\n\
         \x20   os._exit(0)\n\
         b.close()\n\
         s = socket.create_connection(('127.0.0.1', {server}))\n\
         port = s.getsockname()[1]\n\
         s.sendall(b'k' * 50000)\n\
         socket.send_fds(a, [b'x'], [s.fileno()])\n\
         s.close()\n\
         os.waitpid(w, 0)\n\
         print(port, os.getpid(), w)\n"
    ));
    let (exec_pid, _, exec_out) = run_python(&format!(
        "import os, socket, time\n\
         s = socket.create_connection(('127.0.0.1', {server}))\n\
         print(s.getsockname()[1], flush=True)\n\
         s.sendall(b'p' * 10000)\n\
         time.sleep(0.05)\n\
         os.dup2(s.fileno(), 1)\n\
         os.execvp('python3', ['python3', '-c', {EXEC_SENDER:?}])\n"
    ));
    std::thread::sleep(Duration::from_millis(700));
    signal(&rec, libc::SIGTERM);
    let (code, err) = wait_exit(rec, Duration::from_secs(30));
    assert_eq!(code, 0, "{err}");
    let (uses, tasks, procs) = uses_tasks_procs(&out.0);

    let f = numbers(&fork_out);
    let runs = client_send_runs(&uses, f[0] as u16, server);
    let want = [(f[1], 100_000), (f[2], 200_000)].into_iter().collect();
    assert_eq!(bytes_by_pid(&runs), want, "fork hand-off: {runs:#?}");

    let p = numbers(&pass_out);
    let runs = client_send_runs(&uses, p[0] as u16, server);
    let want = [(p[1], 50_000), (p[2], 200_000)].into_iter().collect();
    assert_eq!(bytes_by_pid(&runs), want, "SCM_RIGHTS hand-off: {runs:#?}");

    let port: u16 = exec_out.trim().parse().expect("port");
    let runs = client_send_runs(&uses, port, server);
    // The last exec of the client: the program exec'd after the connect
    // (python3's own start comes first, through wrappers on some hosts).
    let exec = tasks
        .iter()
        .rev()
        .find(|t| t.kind == layout::TaskKind::Exec && t.pid == exec_pid)
        .unwrap_or_else(|| panic!("no exec by {exec_pid} in tasks.jsonl"));

    let (before, after): (Vec<_>, Vec<_>) = runs
        .iter()
        .cloned()
        .partition(|r| r.last_ns.is_some_and(|t| t < exec.mono_ns));
    assert!(
        after
            .iter()
            .all(|r| r.first_ns.is_some_and(|t| t >= exec.mono_ns)),
        "a run spans the exec: {runs:#?}"
    );
    let want = [(exec_pid, 10_000)].into_iter().collect();
    assert_eq!(bytes_by_pid(&before), want, "before the exec: {runs:#?}");
    let want = [(exec_pid, 200_000)].into_iter().collect();
    assert_eq!(bytes_by_pid(&after), want, "after the exec: {runs:#?}");
    let new = procs
        .iter()
        .find(|p| p.pid == exec_pid && p.exec_ns == Some(exec.mono_ns))
        .unwrap_or_else(|| panic!("no identity read at the exec of {exec_pid}"));
    assert_eq!(new.cmdline[1..], ["-c", EXEC_SENDER], "{new:?}");
}

/// `--sources tracepoints-no-use` leaves the per-call tracepoints off and
/// says so; forks and execs are still recorded and trigger fd walks of
/// socket holders instead (`fd-walk-on-fork-exec`).
#[test]
fn without_use_tracepoints_fork_exec_walks_are_used() {
    // SAFETY: geteuid has no arguments.
    if unsafe { libc::geteuid() } != 0 {
        skip("the tracepoints need root");
        return;
    }
    let out = TempPath::new("nouse");
    let out_s = out.0.to_str().expect("utf-8 temp path");
    let rec = start(&[
        "record",
        "--out",
        out_s,
        "--sources",
        "tracepoints-no-use",
        "--event-interval",
        "300ms",
    ]);
    wait_first_snapshot(&out.0);
    let m = manifest(&out.0);
    let source = |name: &str| {
        m.sources
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("{name} not listed: {:?}", m.sources))
            .clone()
    };
    let fork = source("tracepoint:sched:sched_process_fork");
    if !fork.used {
        skip(&format!("sched tracepoints unavailable: {:?}", fork.detail));
        return;
    }
    for name in [
        "tracepoint:sock:sock_send_length",
        "tracepoint:sock:sock_recv_length",
    ] {
        let s = source(name);
        assert!(!s.used, "{s:?}");
        assert!(s
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("tracepoints-no-use")));
    }
    assert!(source("fd-walk-on-fork-exec").used);
    let (pid, _, _) = run_python("import socket\ns = socket.socket()\nprint(1)");
    std::thread::sleep(Duration::from_millis(700));
    signal(&rec, libc::SIGTERM);
    let (code, err) = wait_exit(rec, Duration::from_secs(30));
    assert_eq!(code, 0, "{err}");
    let (uses, tasks, _) = uses_tasks_procs(&out.0);
    assert!(uses.is_empty(), "{uses:?}");
    assert!(tasks
        .iter()
        .any(|t| t.kind == layout::TaskKind::Exec && t.pid == pid));
}

/// Processes living 10-60 ms, started inside a network namespace while the
/// recorder runs in that namespace (where the proc connector is refused),
/// get their identity from the exec tracepoint: at least 19 of 20.
#[test]
fn short_processes_in_a_network_namespace_are_identified() {
    // SAFETY: geteuid has no arguments.
    if unsafe { libc::geteuid() } != 0 {
        skip("needs root for unshare --net and the tracepoints");
        return;
    }
    let have = |t: &str| {
        Command::new(t)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    if !have("unshare") || !have("nsenter") {
        skip("needs unshare and nsenter (util-linux)");
        return;
    }
    let out = TempPath::new("nsexec");
    let out_s = out.0.to_str().expect("utf-8 temp path");
    let rec = Running(Some(
        Command::new("unshare")
            .args(["--net", "--", BIN, "record", "--out", out_s])
            .args(["--event-interval", "500ms"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("unshare"),
    ));
    wait_first_snapshot(&out.0);
    let m = manifest(&out.0);
    assert_ne!(
        m.host.netns,
        std::fs::metadata("/proc/self/ns/net")
            .map_or(0, |md| { std::os::unix::fs::MetadataExt::ino(&md) }),
        "the recorder runs in its own namespace"
    );
    let exec = m
        .sources
        .iter()
        .find(|s| s.name == "tracepoint:sched:sched_process_exec")
        .expect("listed");
    if !exec.used {
        skip(&format!("exec tracepoint unavailable: {:?}", exec.detail));
        return;
    }
    let rec_pid = rec.0.as_ref().map(|c| c.id()).expect("running");
    let ns = format!("--net=/proc/{rec_pid}/ns/net");
    let mut started = Vec::new();
    for i in 0..20u32 {
        let secs = format!("0.0{}", 1 + (i * 7) % 6);
        let c = Command::new("nsenter")
            .args([ns.as_str(), "--", "sleep", secs.as_str()])
            .status()
            .expect("nsenter");
        assert!(c.success());
        started.push(secs);
    }
    // The pids: nsenter execs sleep, so each process is one pid whose
    // last exec is sleep's; find them by their command lines in the
    // tasks and identities written.
    std::thread::sleep(Duration::from_millis(700));
    signal(&rec, libc::SIGTERM);
    let (code, err) = wait_exit(rec, Duration::from_secs(30));
    assert_eq!(code, 0, "{err}");
    let (_, tasks, procs) = uses_tasks_procs(&out.0);
    let sleeps: Vec<&layout::TaskRecord> = tasks
        .iter()
        .filter(|t| {
            t.kind == layout::TaskKind::Exec
                && t.filename.as_deref().is_some_and(|f| f.ends_with("/sleep"))
        })
        .collect();
    assert!(
        sleeps.len() >= 20,
        "{} sleep execs in tasks.jsonl",
        sleeps.len()
    );
    let mut named = 0;
    for secs in &started {
        let hit = procs.iter().any(|p| {
            p.comm == "sleep"
                && p.exe.as_deref().is_some_and(|e| e.ends_with("/sleep"))
                && p.cmdline == ["sleep", secs.as_str()]
                && p.exec_ns.is_some()
        });
        named += usize::from(hit);
    }
    // Several runs share a duration: count distinct identities instead.
    let ids: std::collections::BTreeSet<(u32, u64)> = procs
        .iter()
        .filter(|p| {
            p.comm == "sleep"
                && p.exe.as_deref().is_some_and(|e| e.ends_with("/sleep"))
                && p.cmdline.first().map(String::as_str) == Some("sleep")
                && p.exec_ns.is_some()
                && sleeps.iter().any(|t| t.pid == p.pid)
        })
        .map(|p| (p.pid, p.start_time))
        .collect();
    eprintln!("{} of 20 short processes identified", ids.len().min(20));
    assert_eq!(named, 20, "every duration has an identity");
    assert!(
        ids.len() >= 19,
        "only {} of 20 processes have comm, exe and cmdline: execs {sleeps:#?}, identities {:#?}",
        ids.len(),
        procs
            .iter()
            .filter(|p| sleeps.iter().any(|t| t.pid == p.pid))
            .collect::<Vec<_>>()
    );
}

/// A sender that retitles itself while it sends (it zeroes its argument
/// area and writes the title at its start, as setproctitle does; its comm
/// stays) gets an identity record with the new title a few reader rounds
/// after, not a second later, without the zeroed rest as empty arguments;
/// its forked child, which never execs and exits as soon as it has sent,
/// has an identity record with the command line (read at the fork).
#[test]
fn titles_are_read_while_sending_and_forked_children_are_named() {
    // SAFETY: geteuid has no arguments.
    if unsafe { libc::geteuid() } != 0 {
        skip("per-call tracepoints need root (perf_event_open, tracefs)");
        return;
    }
    if Command::new("python3")
        .arg("-c")
        .arg("import ctypes")
        .status()
        .is_err()
    {
        skip("the retitling sender is a python3 script");
        return;
    }
    let out = TempPath::new("retitle");
    let out_s = out.0.to_str().expect("utf-8 temp path");
    let rec = start(&["record", "--out", out_s, "--event-interval", "500ms"]);
    wait_first_snapshot(&out.0);
    let m = manifest(&out.0);
    for name in [
        "tracepoint:sock:sock_send_length",
        "tracepoint:sched:sched_process_fork",
    ] {
        let s = m.sources.iter().find(|s| s.name == name).expect("listed");
        if !s.used {
            skip(&format!("{name} unavailable here: {:?}", s.detail));
            return;
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let server = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for c in listener.incoming() {
            let Ok(mut c) = c else { break };
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c, &mut std::io::sink());
            });
        }
    });
    let (parent, _, o) = run_python(&format!(
        "import ctypes, os, socket, time\n\
         f = open('/proc/self/stat').read().rsplit(')', 1)[1].split()\n\
         a0, a1 = int(f[45]), int(f[46])\n\
         s = socket.create_connection(('127.0.0.1', {server}))\n\
         s.sendall(b'a' * 100000)\n\
         time.sleep(0.1)\n\
         ctypes.memset(a0, 0, a1 - a0)\n\
         ctypes.memmove(a0, b'retitled-sender', 15)\n\
         t = time.clock_gettime_ns(time.CLOCK_MONOTONIC)\n\
         for i in range(60):\n\
         \x20   s.sendall(b'b' * 10000)\n\
         \x20   time.sleep(0.005)\n\
         pid = os.fork()\n\
         if pid == 0:\n\
         \x20   s.sendall(b'c' * 50000)\n\
         \x20   os._exit(0)\n\
         time.sleep(0.5)\n\
         os.waitpid(pid, 0)\n\
         print(t, pid)\n"
    ));
    let v: Vec<i64> = o
        .split_whitespace()
        .map(|w| w.parse().expect("number"))
        .collect();
    let (retitled, child) = (v[0], v[1] as u32);
    std::thread::sleep(Duration::from_millis(700));
    signal(&rec, libc::SIGTERM);
    let (code, err) = wait_exit(rec, Duration::from_secs(30));
    assert_eq!(code, 0, "{err}");
    let (_, _, procs) = uses_tasks_procs(&out.0);
    let ours: Vec<_> = procs
        .iter()
        .filter(|p| p.pid == parent || p.pid == child)
        .collect();
    assert!(
        ours.iter()
            .all(|p| p.cmdline.last().is_none_or(|a| !a.is_empty())),
        "trailing empty arguments: {ours:#?}"
    );
    let title = ["retitled-sender"];
    let new = ours
        .iter()
        .filter(|p| p.pid == parent && p.cmdline == title)
        .filter_map(|p| p.seen_ns)
        .min()
        .unwrap_or_else(|| panic!("no record of the new title: {ours:#?}"));
    // It was sending every 5 ms for 300 ms after the change; the title is
    // checked every 50 ms of calls.
    assert!(
        new >= retitled && new - retitled < 300_000_000,
        "new title read {} ms after the change: {ours:#?}",
        (new - retitled) / 1_000_000
    );
    assert!(
        ours.iter()
            .any(|p| p.pid == child && p.cmdline == title && p.exe.is_some()),
        "no identity of the forked child {child}: {ours:#?}"
    );
}

/// A process in another network namespace that sent and read on a TCP
/// connection and then holds it open, quiet: the program has no later call
/// or close to end those runs, so the recorder (in its own namespace)
/// reads them with the socket iterator from inside that namespace at the
/// snapshots after they went quiet, and every byte is written once.
#[test]
fn quiet_runs_in_another_namespace_are_read_from_it() {
    // SAFETY: geteuid has no arguments.
    if unsafe { libc::geteuid() } != 0 {
        skip("needs root for unshare --net and the eBPF program");
        return;
    }
    let out = TempPath::new("quietns");
    let out_s = out.0.to_str().expect("utf-8 temp path");
    let rec = start(&["record", "--out", out_s, "--event-interval", "500ms"]);
    wait_first_snapshot(&out.0);
    let m = manifest(&out.0);
    let e = ebpf_source(&m);
    if !e.used {
        skip_unloaded(e);
        return;
    }
    // Both ends in one process: 300 000 bytes each way, then 4 s quiet
    // with the connection open.
    let code = format!(
        "import os, time\nos.system('ip link set lo up')\n{ECHO_BOTH_WAYS}\n\
         print('ready', os.getpid(), flush=True)\ntime.sleep(4)"
    );
    let mut child = Command::new("unshare")
        .args(["--net", "--", "python3", "-c", &code])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("unshare python3");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    let pid: u32 = line
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"));
    // Quiet for 1.5 s and a snapshot after: the runs are read then; the
    // process still holds the connection when the recording stops.
    std::thread::sleep(Duration::from_millis(2500));
    signal(&rec, libc::SIGTERM);
    let (code, err) = wait_exit(rec, Duration::from_secs(30));
    let _ = child.wait();
    assert_eq!(code, 0, "{err}");
    let m = manifest(&out.0);
    assert!(
        !m.errors
            .iter()
            .any(|e| e.error.contains("runs not read at this snapshot")),
        "{:?}",
        m.errors
    );
    let (uses, _, _) = uses_tasks_procs(&out.0);
    assert_eq!(
        tcp_bytes(&uses, pid),
        (600_000, 600_000),
        "runs of pid {pid}"
    );
}

/// A recorder in a pid namespace of its own (`unshare --pid --fork
/// --mount-proc`, as in a container without the host's pids) keeps the
/// eBPF program and names tasks by the pids it sees: a process beside it
/// that sends and reads 300 000 bytes each way has exactly those bytes in
/// its runs, under its pid in that namespace, and its exec is in
/// tasks.jsonl under the same pid; a host process sending at the same
/// time, outside the namespace, is in no run.
#[test]
fn runs_name_the_pids_of_the_recorders_own_pid_namespace() {
    // SAFETY: geteuid has no arguments.
    if unsafe { libc::geteuid() } != 0 {
        skip("needs root for unshare --pid and the eBPF program");
        return;
    }
    let out = TempPath::new("pidns");
    let out_s = out.0.to_str().expect("utf-8 temp path");
    let first = layout::archive_name(1);
    // Inside: the recorder, then (once its first snapshot is written) a
    // python3 echo over loopback, then the recorder is stopped.
    let code = format!("{ECHO_BOTH_WAYS}\nprint('inside', os.getpid(), flush=True)");
    let script = format!(
        "{BIN} record --out {out_s} --event-interval 500ms 2>{out_s}.err & r=$!\n\
         i=0; while [ ! -s {out_s}/{first} ] && [ $i -lt 1000 ]; do sleep 0.02; i=$((i+1)); done\n\
         echo started\n\
         python3 -c \"$1\"\n\
         sleep 2; kill -TERM $r; wait $r; echo recorder $?\n"
    );
    let mut inside = Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "--mount-proc",
            "--",
            "sh",
            "-c",
            &script,
            "sh",
            &code,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("unshare --pid --fork --mount-proc");
    let mut lines = BufReader::new(inside.stdout.take().expect("stdout")).lines();
    let mut next = || lines.next().and_then(|l| l.ok()).unwrap_or_default();
    let started = next();
    assert_eq!(started, "started", "the recorder inside did not start");
    // Outside, at the same time: a host process sends and reads too.
    let (host_pid, _, _) = run_python(
        "import socket\n\
         ls = socket.socket(); ls.bind(('127.0.0.1', 0)); ls.listen(1)\n\
         c = socket.create_connection(ls.getsockname()); s, _ = ls.accept()\n\
         c.sendall(b'h' * 200000); c.close()\n\
         n = 0\n\
         while True:\n\
         \x20   d = s.recv(65536)\n\
         \x20   if not d: break\n\
         \x20   n += len(d)\n",
    );
    let pid_line = next();
    let pid: u32 = pid_line
        .strip_prefix("inside ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {pid_line:?}"));
    let status = next();
    let _ = inside.wait();
    let err = std::fs::read_to_string(format!("{out_s}.err")).unwrap_or_default();
    let _ = std::fs::remove_file(format!("{out_s}.err"));
    assert_eq!(status, "recorder 0", "{err}");
    let m = manifest(&out.0);
    let e = ebpf_source(&m);
    if !e.used {
        skip_unloaded(e);
        return;
    }
    assert!(
        e.detail
            .as_deref()
            .unwrap_or("")
            .contains("own pid namespace (pid:["),
        "{:?}",
        e.detail
    );
    let (uses, tasks, _) = uses_tasks_procs(&out.0);
    for u in uses
        .iter()
        .filter(|u| u.kind == layout::SockUseKind::Use && u.proto == "tcp")
    {
        assert_ne!(u.pid, Some(host_pid), "a host process's run: {u:?}");
        assert_eq!(u.pid, Some(pid), "a run of another pid: {u:?}");
    }
    assert_eq!(
        tcp_bytes(&uses, pid),
        (600_000, 600_000),
        "runs of pid {pid}"
    );
    assert!(
        tasks
            .iter()
            .any(|t| t.kind == layout::TaskKind::Exec && t.pid == pid),
        "no exec of pid {pid} in tasks.jsonl"
    );
    // The host process's exec, seen by the tracepoint, has no pid here.
    assert!(
        tasks.iter().all(|t| t.pid != 0 && t.pid != host_pid),
        "a task line of a process outside the namespace: {:?}",
        tasks.iter().find(|t| t.pid == 0 || t.pid == host_pid)
    );
}
