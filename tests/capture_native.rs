//! The recorder's own packet capture, end to end: the static binary built
//! as the README says records on a host without tcpdump or libpcap (a
//! mount namespace where both are hidden) and `procflow analyze`
//! attributes the traffic; a disk that fills during the capture ends with
//! `EVIDENCE LOST`, exit 3, and `procflow verify` failing on the packets
//! missing.
//!
//! Both need root (mount namespace, tmpfs, packet socket): under `CI=true`
//! a missing facility fails the test; elsewhere it says `SKIPPED`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PROCFLOW: &str = env!("CARGO_BIN_EXE_procflow");

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `SKIPPED: why` outside CI (returns true); a failure under CI.
fn skip(why: &str) -> bool {
    assert!(!in_ci(), "CI=true but: {why}");
    eprintln!("SKIPPED: {why}");
    true
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A fresh directory under the temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("procflow-capture-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills the child if the test fails before it exits.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_exit(g: &mut Guard, timeout: Duration) -> (i32, String) {
    let mut c = g.0.take().expect("running");
    let t = Instant::now();
    loop {
        if let Some(st) = c.try_wait().expect("wait") {
            let mut err = String::new();
            if let Some(mut e) = c.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return (st.code().unwrap_or(-1), err);
        }
        if t.elapsed() > timeout {
            let _ = c.kill();
            panic!("procflow-snap did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn has_capture_file(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("capture-"))
    })
}

/// The static recorder, built as the README says (once per test run).
fn static_recorder() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "procflow-snap",
            "--target",
            "x86_64-unknown-linux-gnu",
        ])
        .status()
        .expect("run cargo");
    assert!(status.success(), "static build of procflow-snap failed");
    target.join("x86_64-unknown-linux-gnu/release/procflow-snap")
}

/// A loopback TCP server on an ephemeral port that answers each
/// connection with `reply` bytes, 64 KiB at a time with `pace` between
/// them; returns the port.
fn server(reply: usize, pace: Duration, stop: Arc<AtomicBool>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    l.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let buf = vec![0x5au8; 64 * 1024];
        while !stop.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((mut c, _)) => {
                    let _ = c.set_nonblocking(false);
                    let mut req = [0u8; 64];
                    let _ = c.read(&mut req);
                    let mut left = reply;
                    while left > 0 && !stop.load(Ordering::Relaxed) {
                        let n = left.min(buf.len());
                        if c.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        left -= n;
                        std::thread::sleep(pace);
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    port
}

fn fetch(port: u16) -> usize {
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("send");
    let mut got = 0;
    let mut buf = [0u8; 65536];
    while let Ok(n) = c.read(&mut buf) {
        if n == 0 {
            break;
        }
        got += n;
    }
    got
}

/// Files of the host that would let the recorder run tcpdump or load
/// libpcap.
fn tcpdump_and_libpcap() -> Vec<PathBuf> {
    let mut v = Vec::new();
    for d in [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
    ] {
        let p = Path::new(d).join("tcpdump");
        if p.is_file() {
            v.push(p);
        }
    }
    for d in [
        "/usr/lib/x86_64-linux-gnu",
        "/lib/x86_64-linux-gnu",
        "/usr/lib",
        "/usr/local/lib",
    ] {
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with("libpcap.so") {
                    v.push(e.path());
                }
            }
        }
    }
    v.sort();
    v.dedup();
    v
}

#[test]
fn static_recorder_captures_where_tcpdump_and_libpcap_are_hidden() {
    if !is_root() {
        skip("needs root (mount namespace, packet socket)");
        return;
    }
    if !have("unshare") {
        skip("needs unshare (util-linux)");
        return;
    }
    let snap = static_recorder();
    let work = TempDir::new("hidden");
    let out = work.0.join("bundle");
    let empty = work.0.join("empty");
    std::fs::write(&empty, b"").expect("empty file");
    let hide: Vec<String> = tcpdump_and_libpcap()
        .iter()
        .map(|p| format!("mount --bind {} {}", empty.display(), p.display()))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let port = server(200_000, Duration::ZERO, Arc::clone(&stop));
    // In the namespace: hide them, prove they are gone, then record.
    let script = format!(
        "set -e; {hide}; if tcpdump --version >/dev/null 2>&1; then echo 'tcpdump still runs' >&2; exit 97; fi; \
         if ls /usr/lib/x86_64-linux-gnu/libpcap.so* >/dev/null 2>&1 && [ -s \"$(ls /usr/lib/x86_64-linux-gnu/libpcap.so* | head -1)\" ]; then echo 'libpcap still there' >&2; exit 98; fi; \
         exec {snap} record --out {out} --iface lo --interval 100ms --duration 5s --filter 'tcp port {port}'",
        hide = if hide.is_empty() { "true".to_string() } else { hide.join("; ") },
        snap = snap.display(),
        out = out.display(),
    );
    let mut rec = Guard(Some(
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("unshare"),
    ));
    wait_for("the capture file", Duration::from_secs(20), || {
        has_capture_file(&out)
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut got = 0;
    for _ in 0..3 {
        got += fetch(port);
    }
    assert_eq!(got, 600_000);
    let (code, err) = wait_exit(&mut rec, Duration::from_secs(30));
    stop.store(true, Ordering::Relaxed);
    assert_eq!(code, 0, "recorder stderr: {err}");
    assert!(err.contains("af-packet capture on lo"), "{err}");
    assert!(!err.contains("EVIDENCE LOST"), "{err}");
    let manifest = std::fs::read_to_string(out.join("manifest.json")).expect("manifest");
    assert!(manifest.contains("\"method\": \"af-packet\""), "{manifest}");
    // The analyzer attributes the traffic to this test process.
    let report = work.0.join("report");
    let o = Command::new(PROCFLOW)
        .arg("analyze")
        .arg(&out)
        .arg("--out")
        .arg(&report)
        .output()
        .expect("procflow analyze");
    assert!(
        o.status.success(),
        "analyze: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let csv = std::fs::read_to_string(report.join("connections.csv")).expect("connections.csv");
    let me = std::process::id().to_string();
    let rows: Vec<&str> = csv
        .lines()
        .filter(|l| l.contains(&format!(":{port},")) || l.contains(&format!(",{port},")))
        .collect();
    assert!(rows.len() >= 3, "flows of port {port}: {rows:?}\n{csv}");
    assert!(
        rows.iter()
            .all(|r| r.split(',').any(|cell| cell == me.as_str())),
        "not every flow of port {port} is attributed to pid {me}: {rows:?}"
    );
    let v = Command::new(PROCFLOW)
        .arg("verify")
        .arg(&out)
        .output()
        .expect("procflow verify");
    assert!(
        v.status.success(),
        "verify: {}",
        String::from_utf8_lossy(&v.stdout)
    );
}

#[test]
fn disk_full_during_capture_is_evidence_lost() {
    if !is_root() {
        skip("needs root (tmpfs mount, packet socket)");
        return;
    }
    let snap = static_recorder();
    let work = TempDir::new("full");
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=6m", "tmpfs"])
        .arg(&work.0)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip("could not mount a tmpfs");
        return;
    }
    let out = work.0.join("bundle");
    let stop = Arc::new(AtomicBool::new(false));
    let port = server(4 << 20, Duration::from_millis(20), Arc::clone(&stop));
    let mut rec = Guard(Some(
        Command::new(&snap)
            .arg("record")
            .arg("--out")
            .arg(&out)
            .args([
                "--iface",
                "lo",
                "--interval",
                "100ms",
                "--duration",
                "60s",
                "--filter",
            ])
            .arg(format!("tcp port {port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start procflow-snap"),
    ));
    wait_for("the first snapshot", Duration::from_secs(20), || {
        has_capture_file(&out)
            && std::fs::metadata(out.join("snapshots-000001.tar")).is_ok_and(|m| m.len() > 0)
    });
    std::thread::sleep(Duration::from_millis(600));
    // Traffic until the recorder stops on the full disk.
    let t = Instant::now();
    let code_err = loop {
        let _ = fetch(port);
        if let Some(c) = rec.0.as_mut() {
            if c.try_wait().expect("wait").is_some() {
                break wait_exit(&mut rec, Duration::from_secs(5));
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the disk never filled"
        );
    };
    stop.store(true, Ordering::Relaxed);
    let (code, err) = code_err;
    assert_eq!(code, 3, "stderr: {err}");
    assert!(err.contains("disk full"), "{err}");
    // The final status line; the bundle digest line follows it.
    let last = err
        .lines()
        .rev()
        .find(|l| !l.contains("bundle digest"))
        .unwrap_or("");
    assert!(
        err.lines().last().unwrap_or("").contains("bundle digest"),
        "{err}"
    );
    assert!(last.contains("EVIDENCE LOST"), "last line: {last}\n{err}");
    assert!(last.contains("not written (write failed)"), "{last}");
    // What was written is readable, and verify states the shortfall.
    let v = Command::new(PROCFLOW)
        .arg("verify")
        .arg(&out)
        .output()
        .expect("procflow verify");
    let text = String::from_utf8_lossy(&v.stdout);
    assert_eq!(v.status.code(), Some(1), "{text}");
    assert!(text.contains("capture-packets-missing"), "{text}");
    eprintln!("recorder: {last}\nverify:\n{text}");
    assert!(!text.contains("capture-unreadable"), "{text}");
    let f = Command::new(PROCFLOW)
        .arg("analyze")
        .arg(&out)
        .arg("--out")
        .arg(std::env::temp_dir().join(format!("procflow-capture-{}-fullrep", std::process::id())))
        .arg("--force")
        .output()
        .expect("procflow analyze");
    let _ = std::fs::remove_dir_all(
        std::env::temp_dir().join(format!("procflow-capture-{}-fullrep", std::process::id())),
    );
    let aerr = String::from_utf8_lossy(&f.stderr);
    assert_eq!(f.status.code(), Some(3), "{aerr}");
    assert!(aerr.contains("capture-packets-missing"), "{aerr}");
}

/// Namespaces and veth pair of one test, deleted on drop.
struct Netns {
    a: String,
    b: String,
}

impl Netns {
    fn new() -> Option<Netns> {
        let id = std::process::id();
        let n = Netns {
            a: format!("pfcn-a-{id}"),
            b: format!("pfcn-b-{id}"),
        };
        let (va, vb) = (format!("pfcna{id}"), format!("pfcnb{id}"));
        let o = id % 250 + 1;
        let steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), n.a.clone()],
            vec!["netns".into(), "add".into(), n.b.clone()],
            [
                "link", "add", &va, "netns", &n.a, "type", "veth", "peer", "name", &vb, "netns",
                &n.b,
            ]
            .map(String::from)
            .to_vec(),
            [
                "-n",
                &n.a,
                "addr",
                "add",
                &format!("10.217.{o}.1/24"),
                "dev",
                &va,
            ]
            .map(String::from)
            .to_vec(),
            [
                "-n",
                &n.b,
                "addr",
                "add",
                &format!("10.217.{o}.2/24"),
                "dev",
                &vb,
            ]
            .map(String::from)
            .to_vec(),
            ["-n", &n.a, "link", "set", &va, "up"]
                .map(String::from)
                .to_vec(),
            ["-n", &n.b, "link", "set", &vb, "up"]
                .map(String::from)
                .to_vec(),
            ["-n", &n.b, "link", "set", "lo", "up"]
                .map(String::from)
                .to_vec(),
        ];
        for s in steps {
            if !Command::new("ip")
                .args(&s)
                .status()
                .is_ok_and(|st| st.success())
            {
                return None;
            }
        }
        Some(n)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.a]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.b]).status();
    }
}

/// The blocks of a pcapng file: (type, body without the 8-byte header and
/// trailing length).
fn pcapng_blocks(b: &[u8]) -> Vec<(u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 12 <= b.len() {
        let kind = u32::from_le_bytes(b[at..at + 4].try_into().expect("4"));
        let len = u32::from_le_bytes(b[at + 4..at + 8].try_into().expect("4")) as usize;
        assert!(len >= 12 && at + len <= b.len(), "cut block at {at}");
        out.push((kind, b[at + 8..at + len - 4].to_vec()));
        at += len;
    }
    assert_eq!(at, b.len(), "trailing bytes");
    out
}

/// Options of a block body from `from`: (code, value).
fn options(body: &[u8], from: usize) -> Vec<(u16, Vec<u8>)> {
    let mut v = Vec::new();
    let mut at = from;
    while at + 4 <= body.len() {
        let code = u16::from_le_bytes([body[at], body[at + 1]]);
        let len = usize::from(u16::from_le_bytes([body[at + 2], body[at + 3]]));
        if code == 0 {
            break;
        }
        v.push((code, body[at + 4..at + 4 + len].to_vec()));
        at += 4 + len + (4 - len % 4) % 4;
    }
    v
}

#[test]
fn veth_capture_has_names_directions_and_statistics() {
    if !is_root() {
        skip("needs root (network namespaces, packet socket)");
        return;
    }
    if !have("ip") || !have("python3") {
        skip("needs iproute2 and python3");
        return;
    }
    let snap = static_recorder();
    let Some(ns) = Netns::new() else {
        skip("cannot create network namespaces");
        return;
    };
    let id = std::process::id();
    let o = id % 250 + 1;
    let (a_ip, b_ip) = (format!("10.217.{o}.1"), format!("10.217.{o}.2"));
    let work = TempDir::new("veth");
    let out = work.0.join("bundle");
    let mut server = Guard(Some(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.b,
                "python3",
                "-m",
                "http.server",
                "8080",
                "--bind",
                &b_ip,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("server"),
    ));
    let mut rec = Guard(Some(
        Command::new("ip")
            .args(["netns", "exec", &ns.a])
            .arg(&snap)
            .arg("record")
            .arg("--out")
            .arg(&out)
            .args(["--iface", &format!("pfcna{id}"), "--duration", "4s"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("recorder"),
    ));
    wait_for("the capture file", Duration::from_secs(20), || {
        has_capture_file(&out)
    });
    std::thread::sleep(Duration::from_millis(500));
    let client = Command::new("ip")
        .args(["netns", "exec", &ns.a, "python3", "-c"])
        .arg(format!(
            "import urllib.request as u\nfor i in range(5): u.urlopen('http://{b_ip}:8080/').read()"
        ))
        .status()
        .expect("client");
    assert!(client.success());
    let (code, err) = wait_exit(&mut rec, Duration::from_secs(30));
    if let Some(c) = server.0.as_mut() {
        let _ = c.kill();
    }
    assert_eq!(code, 0, "{err}");
    let name = std::fs::read_dir(&out)
        .expect("bundle")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("capture-") && n.ends_with(".pcapng"))
        .expect("a .pcapng capture file");
    let blocks = pcapng_blocks(&std::fs::read(out.join(&name)).expect("read"));
    // The interface: Ethernet, named, nanosecond timestamps.
    let idb = blocks.iter().find(|(k, _)| *k == 1).expect("an IDB");
    assert_eq!(u16::from_le_bytes([idb.1[0], idb.1[1]]), 1);
    let opts = options(&idb.1, 8);
    assert!(
        opts.contains(&(2, format!("pfcna{id}").into_bytes())),
        "{opts:?}"
    );
    assert!(opts.contains(&(9, vec![9])), "{opts:?}");
    // Direction of each IPv4 packet from its source address.
    let (mut out_n, mut in_n) = (0, 0);
    for (_, body) in blocks.iter().filter(|(k, _)| *k == 6) {
        let caplen = u32::from_le_bytes(body[12..16].try_into().expect("4")) as usize;
        let frame = &body[20..20 + caplen];
        let flags = options(body, 20 + caplen + (4 - caplen % 4) % 4)
            .iter()
            .find(|(c, _)| *c == 2)
            .map(|(_, v)| u32::from_le_bytes(v[..4].try_into().expect("4")))
            .expect("epb_flags on every packet");
        if frame.len() < 34 || frame[12..14] != [8, 0] {
            continue;
        }
        let src = std::net::Ipv4Addr::new(frame[26], frame[27], frame[28], frame[29]).to_string();
        if src == a_ip {
            assert_eq!(flags & 3, 2, "packet from {src} not outbound");
            out_n += 1;
        } else if src == b_ip {
            assert_eq!(flags & 3, 1, "packet from {src} not inbound");
            in_n += 1;
        }
    }
    assert!(
        out_n >= 10 && in_n >= 10,
        "outbound {out_n}, inbound {in_n}"
    );
    // Statistics at the end: start and end times, the kernel's counts.
    let isb = blocks.last().expect("blocks");
    assert_eq!(isb.0, 5, "the file ends with an ISB");
    let codes: Vec<u16> = options(&isb.1, 12).iter().map(|(c, _)| *c).collect();
    for c in [2, 3, 4, 5, 8] {
        assert!(codes.contains(&c), "ISB option {c} missing: {codes:?}");
    }
}

/// Copies a directory's regular files (flat).
fn copy_flat(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir").flatten() {
        if e.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
        }
    }
}

/// Rewrites SHA256SUMS for the files it lists, as someone covering a cut
/// would.
fn rehash(dir: &Path) {
    use sha2::{Digest, Sha256};
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).expect("sums");
    let mut out = String::new();
    for line in sums.lines() {
        let name = line.split_once("  ").map_or("", |(_, n)| n);
        let h = Sha256::digest(std::fs::read(dir.join(name)).expect("listed file"));
        let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
        out.push_str(&format!("{hex}  {name}\n"));
    }
    std::fs::write(dir.join("SHA256SUMS"), out).expect("write sums");
}

#[test]
fn a_cut_capture_fails_verify_even_with_sums_rehashed() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/sample-bundle");
    let work = TempDir::new("cut");
    let b = work.0.join("bundle");
    copy_flat(&sample, &b);
    let cap = std::fs::read_dir(&b)
        .expect("bundle")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("capture-"))
        })
        .expect("the sample bundle has a capture file");
    let len = std::fs::metadata(&cap).expect("capture").len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&cap)
        .expect("open");
    f.set_len(len / 2).expect("cut");
    drop(f);
    rehash(&b);
    let v = Command::new(PROCFLOW)
        .arg("verify")
        .arg(&b)
        .output()
        .expect("procflow verify");
    let text = String::from_utf8_lossy(&v.stdout);
    assert_eq!(v.status.code(), Some(1), "{text}");
    assert!(
        text.contains("capture-packets-missing") && text.contains("packets are missing"),
        "{text}"
    );
    // The integrity checks themselves hold: only the count tells.
    assert!(!text.contains("hash-mismatch"), "{text}");
}
