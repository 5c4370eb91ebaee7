//! End-to-end: remote names read from a live recording.
//!
//! Lab (network namespaces named with `pnn` and the test's pid): a client
//! side `pnnhID` and a peer `pnnpID` joined by a veth pair (10.99.0.1 and
//! 10.99.0.2/24, and 10.99.0.3 on the peer too). The peer runs a small DNS server (every `*.names.test`
//! name resolves to it), an HTTP server, a TLS server with a self-signed
//! certificate and an HTTP proxy that answers `CONNECT`. `ip netns exec`
//! gives the client side its own resolv.conf and hosts file
//! (`/etc/netns/pnnhID/`, made and removed by the test): the resolver is
//! the peer, and `files.names.test` is 10.99.0.3, which no DNS answer
//! names.
//!
//! `procflow-snap record` runs on the client side while, there:
//! - `curl http://web.names.test:8080/` (name from the `Host:` header),
//! - `curl -k https://tls.names.test:8443/` (the ClientHello's SNI),
//! - `curl -p -x http://proxy.names.test:3128 http://inner.names.test:8080/`
//!   (the `CONNECT` target),
//! - a python client connecting to `raw.names.test:9000` and sending bytes
//!   that name nothing (the DNS answer names it),
//! - `curl -H 'Host:' http://files.names.test:8080/`: resolved from the
//!   hosts file, a request without `Host:`, so only the archived hosts
//!   file names it (`hosts-file`),
//! - a python client asking 10.99.0.3 directly (its own resolver, which
//!   the namespace's resolv.conf does not name: a finding),
//!
//! `procflow analyze` must give each of these flows the right
//! `remote_name` and `remote_name_source`, and the flows named by DNS the
//! process that sent the query (`resolved_by_pid` = the flow's own pid,
//! each program resolving its own names).
//!
//! Needs root, `ip`, `tcpdump`, `curl`, `openssl` and python3; elsewhere
//! it prints a SKIPPED line (and fails under `CI=true`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

/// The peer's servers.
const PEER: &str = r#"
import socket, ssl, struct, sys, threading, http.server, socketserver
ip = sys.argv[1]
cert, key = sys.argv[2], sys.argv[3]

def dns(bind):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((bind, 53))
    while True:
        q, addr = s.recvfrom(512)
        if len(q) < 12:
            continue
        i, labels = 12, []
        while i < len(q) and q[i]:
            labels.append(q[i+1:i+1+q[i]].decode("ascii", "replace"))
            i += 1 + q[i]
        qtype = struct.unpack("!H", q[i+1:i+3])[0]
        question = q[12:i+5]
        name = ".".join(labels).lower()
        answers = b""
        count = 0
        if qtype == 1 and name.endswith("names.test"):
            answers = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(ip)
            count = 1
        rcode = 0 if name.endswith("names.test") else 3
        hdr = q[:2] + struct.pack("!HHHHH", 0x8180 | rcode, 1, count, 0, 0)
        s.sendto(hdr + question + answers, addr)

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello " + (self.headers.get("Host") or "").encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

def web():
    S(("0.0.0.0", 8080), H).serve_forever()

def tls():
    srv = S(("0.0.0.0", 8443), H)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.serve_forever()

def pipe(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    for x in (a, b):
        try:
            x.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

def proxy_client(c):
    head = b""
    while b"\r\n\r\n" not in head and len(head) < 8192:
        d = c.recv(4096)
        if not d:
            return
        head += d
    line = head.split(b"\r\n")[0].split()
    if len(line) < 2 or line[0] != b"CONNECT":
        c.sendall(b"HTTP/1.1 405 only CONNECT\r\n\r\n")
        c.close()
        return
    port = int(line[1].rsplit(b":", 1)[1])
    up = socket.create_connection(("127.0.0.1", port))
    c.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
    threading.Thread(target=pipe, args=(up, c), daemon=True).start()
    pipe(c, up)

def proxy():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 3128))
    s.listen(16)
    while True:
        c, _ = s.accept()
        threading.Thread(target=proxy_client, args=(c,), daemon=True).start()

def sink():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 9000))
    s.listen(16)
    while True:
        c, _ = s.accept()
        while c.recv(65536):
            pass
        c.close()

for f in (web, tls, proxy, sink):
    threading.Thread(target=f, daemon=True).start()
# One server per address, each answering from its own.
for a in (ip, "10.99.0.3"):
    threading.Thread(target=dns, args=(a,), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"#;

/// A DNS client of its own: asks `own.names.test` of the server given.
const OWN_RESOLVER: &str = r#"
import socket, struct, sys
q = struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(l)]) + l.encode() for l in "own.names.test".split(".")) + b"\0"
q += struct.pack("!HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.sendto(q, (sys.argv[1], 53))
print(len(s.recv(512)), flush=True)
"#;

/// A client that resolves a name and sends bytes naming nothing.
const RAW_CLIENT: &str = r#"
import os, socket, sys
s = socket.create_connection((sys.argv[1], 9000))
s.sendall(b"\x00\x01 nothing to name here " * 64)
s.shutdown(socket.SHUT_WR)
s.recv(10)
print(os.getpid(), s.getsockname()[1], flush=True)
"#;

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn skip_reason() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root".into());
    }
    for c in ["ip", "tcpdump", "curl", "openssl", "python3", "ethtool"] {
        if !have(c) {
            return Some(format!("{c} not installed"));
        }
    }
    None
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The lab; namespaces, /etc/netns files and children removed on drop.
struct Lab {
    id: u32,
    children: Vec<Child>,
}

impl Lab {
    fn host(&self) -> String {
        format!("pnnh{}", self.id)
    }
    fn peer(&self) -> String {
        format!("pnnp{}", self.id)
    }
    fn etc(&self) -> PathBuf {
        PathBuf::from("/etc/netns").join(self.host())
    }

    fn build(id: u32) -> Lab {
        let lab = Lab {
            id,
            children: Vec::new(),
        };
        let (h, p) = (lab.host(), lab.peer());
        for n in [&h, &p] {
            sh(&["ip", "netns", "add", n]);
            sh(&["ip", "-n", n, "link", "set", "lo", "up"]);
        }
        // The veth is created inside the client namespace: its names
        // cannot clash with another test's.
        sh(&[
            "ip", "-n", &h, "link", "add", "vh", "type", "veth", "peer", "name", "vp", "netns", &p,
        ]);
        sh(&["ip", "-n", &h, "addr", "add", "10.99.0.1/24", "dev", "vh"]);
        sh(&["ip", "-n", &p, "addr", "add", "10.99.0.2/24", "dev", "vp"]);
        sh(&["ip", "-n", &p, "addr", "add", "10.99.0.3/24", "dev", "vp"]);
        for (n, dev) in [(&h, "vh"), (&p, "vp")] {
            sh(&["ip", "-n", n, "link", "set", dev, "up"]);
            let _ = Command::new("ip")
                .args(["netns", "exec", n, "ethtool", "-K", dev])
                .args(["tso", "off", "gso", "off", "gro", "off"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        std::fs::create_dir_all(lab.etc()).expect("/etc/netns");
        std::fs::write(
            lab.etc().join("resolv.conf"),
            "nameserver 10.99.0.2\noptions attempts:2 timeout:2\n",
        )
        .expect("resolv.conf");
        std::fs::write(
            lab.etc().join("hosts"),
            "127.0.0.1 localhost\n10.99.0.3 files.names.test files\n",
        )
        .expect("hosts");
        lab
    }

    fn spawn(&mut self, ns: &str, args: &[&str]) -> u32 {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Waits for `pid` to exit successfully; its standard output.
    fn wait(&mut self, pid: u32) -> String {
        let i = self
            .children
            .iter()
            .position(|c| c.id() == pid)
            .expect("a child");
        let out = self.children.remove(i).wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{pid} failed: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in [self.host(), self.peer()] {
            let _ = Command::new("ip")
                .args(["netns", "del", &n])
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(self.etc());
    }
}

/// The `procflow-snap` binary of this build ([`common::procflow_snap`]).
fn procflow_snap() -> PathBuf {
    common::procflow_snap(Path::new(env!("CARGO_BIN_EXE_procflow")))
}

type Row = BTreeMap<String, String>;

fn read_rows(path: &Path) -> Vec<Row> {
    let mut r = csv::Reader::from_path(path).expect("connections.csv");
    let header = r.headers().expect("header").clone();
    r.records()
        .map(|rec| {
            let rec = rec.expect("record");
            header
                .iter()
                .zip(rec.iter())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

#[test]
fn live_names_from_dns_sni_host_and_connect() {
    if let Some(why) = skip_reason() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "names end-to-end test cannot run under CI=true: {why}"
        );
        eprintln!("SKIPPED: names end-to-end test needs root, ip, tcpdump, curl, openssl, ethtool and python3 ({why})");
        return;
    }
    let id = std::process::id();
    let work = std::env::temp_dir().join(format!("pnn-names-e2e-{id}"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work dir");
    let w = |f: &str| work.join(f).to_str().expect("path").to_string();
    std::fs::write(work.join("peer.py"), PEER).expect("peer.py");
    std::fs::write(work.join("raw.py"), RAW_CLIENT).expect("raw.py");
    std::fs::write(work.join("own.py"), OWN_RESOLVER).expect("own.py");
    sh(&[
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &w("key.pem"),
        "-out",
        &w("cert.pem"),
        "-subj",
        "/CN=tls.names.test",
        "-days",
        "2",
    ]);
    let mut lab = Lab::build(id);
    let (h, p) = (lab.host(), lab.peer());
    let peer = lab.spawn(
        &p,
        &[
            "python3",
            &w("peer.py"),
            "10.99.0.2",
            &w("cert.pem"),
            &w("key.pem"),
        ],
    );
    let bundle = work.join("bundle");
    let snap = procflow_snap();
    let recorder = lab.spawn(
        &h,
        &[
            snap.to_str().expect("path"),
            "record",
            "--out",
            bundle.to_str().expect("path"),
            "--iface",
            "vh",
            "--interval",
            "100ms",
        ],
    );
    let t0 = Instant::now();
    while !bundle.join("snapshots-000001.tar").exists() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1000));
    let _ = peer;

    let curl = |lab: &mut Lab, args: &[&str]| -> (u32, String) {
        let mut v = vec!["curl", "-sS", "--max-time", "10", "--noproxy", "*"];
        v.extend_from_slice(args);
        let pid = lab.spawn(&h, &v);
        (pid, lab.wait(pid))
    };
    let (web_pid, web) = curl(&mut lab, &["http://web.names.test:8080/"]);
    assert!(web.contains("hello web.names.test"), "{web}");
    let (tls_pid, tls) = curl(&mut lab, &["-k", "https://tls.names.test:8443/"]);
    assert!(tls.contains("hello tls.names.test"), "{tls}");
    let mut v = vec![
        "curl",
        "-sS",
        "--max-time",
        "10",
        "-p",
        "-x",
        "http://proxy.names.test:3128",
    ];
    v.push("http://inner.names.test:8080/");
    let px = lab.spawn(&h, &v);
    let inner = lab.wait(px);
    assert!(inner.contains("hello inner.names.test"), "{inner}");
    let raw = lab.spawn(&h, &["python3", &w("raw.py"), "raw.names.test"]);
    let raw_out = lab.wait(raw);
    // Resolved from the hosts file; the request carries no Host header.
    let (files_pid, files) = curl(&mut lab, &["-H", "Host:", "http://files.names.test:8080/"]);
    assert!(files.starts_with("hello"), "{files}");
    let own = lab.spawn(&h, &["python3", &w("own.py"), "10.99.0.3"]);
    lab.wait(own);
    std::thread::sleep(Duration::from_millis(800));
    let _ = Command::new("kill")
        .args(["-INT", &recorder.to_string()])
        .status();
    lab.wait(recorder);

    let report = work.join("report");
    let out = Command::new(env!("CARGO_BIN_EXE_procflow"))
        .args([
            "analyze",
            bundle.to_str().expect("path"),
            "--out",
            report.to_str().expect("path"),
        ])
        .output()
        .expect("procflow analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        report.join("connections.csv").exists(),
        "analyze wrote nothing: {stderr}"
    );
    let rows = read_rows(&report.join("connections.csv"));
    let tcp_to = |port: &str, pid: u32| -> Vec<&Row> {
        rows.iter()
            .filter(|r| {
                r["proto"] == "tcp" && r["remote_port"] == port && r["pid"] == pid.to_string()
            })
            .collect()
    };
    let show = |rs: &[&Row]| -> String {
        rs.iter()
            .map(|r| {
                format!(
                    "flow {} {}:{} pid {} name {:?} source {:?} resolved_by {:?} ja4 {:?}",
                    r["flow_id"],
                    r["remote_ip"],
                    r["remote_port"],
                    r["pid"],
                    r["remote_name"],
                    r["remote_name_source"],
                    r["resolved_by_pid"],
                    r["ja4"]
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let all: Vec<&Row> = rows.iter().collect();
    let context = format!("rows:\n{}\nanalyze stderr:\n{stderr}", show(&all));
    let one = |port: &str, pid: u32, name: &str, source: &str| {
        let rs = tcp_to(port, pid);
        assert_eq!(
            rs.len(),
            1,
            "one flow to port {port} by pid {pid}\n{context}"
        );
        let r = rs[0];
        assert_eq!(
            (r["remote_name"].as_str(), r["remote_name_source"].as_str()),
            (name, source),
            "{context}"
        );
        r
    };
    one("8080", web_pid, "web.names.test", "http-host");
    let t = one("8443", tls_pid, "tls.names.test", "tls-sni");
    assert!(t["ja4"].starts_with("t13d"), "curl's JA4: {context}");
    one("3128", px, "inner.names.test:8080", "http-connect");
    let mut it = raw_out.split_whitespace();
    let raw_pid: u32 = it
        .next()
        .and_then(|x| x.parse().ok())
        .expect("raw client pid");
    let r = one("9000", raw_pid, "raw.names.test", "dns");
    // The name was asked for by the program that then connected.
    assert_eq!(r["resolved_by_pid"], raw_pid.to_string(), "{context}");
    assert!(!r["resolved_at"].is_empty(), "{context}");
    // So did each curl (their flows are named by their own evidence,
    // the DNS answer agrees).
    for (port, pid) in [("8080", web_pid), ("8443", tls_pid), ("3128", px)] {
        let r = tcp_to(port, pid)[0];
        assert_eq!(
            r["resolved_by_pid"],
            pid.to_string(),
            "port {port}: {context}"
        );
        assert_eq!(r["remote_name_other"], "", "port {port}: {context}");
    }
    // Nothing in the capture names 10.99.0.3: the namespace's hosts file,
    // as the recorder archived it, does.
    let f = one("8080", files_pid, "files.names.test", "hosts-file");
    assert_eq!(f["remote_ip"], "10.99.0.3", "{context}");
    assert_eq!(f["resolved_by_pid"], "", "{context}");
    // The archived files are in the bundle.
    let mut archived = String::new();
    for e in std::fs::read_dir(&bundle).expect("bundle") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "tar") {
            let l = Command::new("tar")
                .arg("-tf")
                .arg(&p)
                .output()
                .expect("tar");
            archived.push_str(&String::from_utf8_lossy(&l.stdout));
        }
    }
    let hosts_members: Vec<&str> = archived
        .lines()
        .filter(|l| l.contains("/nsfiles/") && l.ends_with("/hosts"))
        .collect();
    assert!(archived.lines().any(|l| l.ends_with("/resolv.conf")));
    assert!(archived.lines().any(|l| l.ends_with("/nsfiles.jsonl")));
    let content = Command::new("tar")
        .arg("-xOf")
        .arg(bundle.join("snapshots-000001.tar"))
        .args(&hosts_members)
        .output()
        .expect("tar -xO");
    assert!(
        String::from_utf8_lossy(&content.stdout).contains("10.99.0.3 files.names.test"),
        "no archived hosts file names files.names.test: {hosts_members:?}"
    );
    // Each namespace's resolvers in summary.json; the client namespace's
    // is the peer, and the answer 10.99.0.3 gave is a finding.
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(report.join("summary.json")).expect("summary.json"),
    )
    .expect("summary json");
    let pairs = summary["namespace_files"]["pairs"]
        .as_array()
        .expect("namespace_files.pairs");
    assert!(
        pairs.iter().any(
            |p| p["nameservers"] == serde_json::json!(["10.99.0.2"]) && p["hosts_entries"] == 2
        ),
        "{pairs:?}"
    );
    let names = &summary["diagnostics"]["capture"]["names"];
    assert_eq!(
        names["named"]["hosts-file"].as_u64().map(|n| n >= 1),
        Some(true),
        "{names}"
    );
    assert_eq!(names["dns_servers_not_in_resolv_conf"], 1, "{names}");
    assert_eq!(
        names["first_unlisted_dns_server"][1], "10.99.0.3",
        "{names}"
    );
    assert!(
        stderr.contains("no recorded resolv.conf of the asking namespace names"),
        "{stderr}"
    );
    // The DNS flows themselves are the curls' and python's.
    let jsonl = std::fs::read_to_string(report.join("connections.jsonl")).expect("jsonl");
    assert!(jsonl.contains("\"destination.domain\":\"tls.names.test\""));
    assert!(jsonl.contains("\"tls.client.server_name\":\"tls.names.test\""));
    let _ = std::fs::remove_dir_all(&work);
}
