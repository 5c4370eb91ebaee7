//! `procflow correlate` on the shared UAC + auditd dataset
//! (../shared/testdata/foreign/uac-auditd-1, made with UAC 3.3.0 and
//! auditd 3.0.9, with its ground truth), on copies of it whose host clock
//! runs 90 s ahead, and on hostile variants of its evidence.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

fn dataset() -> Option<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/foreign/uac-auditd-1");
    if d.join("truth.jsonl").is_file() {
        Some(d)
    } else {
        eprintln!("SKIPPED: ../shared/testdata/foreign/uac-auditd-1 not present");
        None
    }
}

const ARCHIVE: &str = "uac/uac-vm-linux-20261205193852.tar.gz";

/// Runs `procflow correlate`; (exit code, stderr).
fn correlate(d: &Path, evidence: &[PathBuf], out: &Path, extra: &[&str]) -> (i32, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_procflow"));
    c.arg("correlate")
        .arg("--capture")
        .arg(d.join("capture.pcap"))
        .arg("--out")
        .arg(out)
        .arg("--quiet")
        .arg("--force");
    for e in evidence {
        c.arg("--evidence").arg(e);
    }
    c.args(extra);
    let o = c.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    (o.status.code().unwrap_or(-1), err)
}

/// One truth row of expected_flows.tsv.
struct Expected {
    pid: String,
    uac: String,
    auditd_ok: bool,
}

fn expected(d: &Path) -> BTreeMap<(String, String, String), Expected> {
    let text = std::fs::read_to_string(d.join("expected_flows.tsv")).unwrap();
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let col = |n: &str| head.iter().position(|h| *h == n).unwrap();
    let (p, l, r, pid, uac, aok) = (
        col("proto"),
        col("local"),
        col("remote"),
        col("pid"),
        col("uac"),
        col("auditd_ok"),
    );
    lines
        .map(|line| {
            let c: Vec<&str> = line.split('\t').collect();
            (
                (c[p].to_string(), c[l].to_string(), c[r].to_string()),
                Expected {
                    pid: c[pid].to_string(),
                    uac: c[uac].to_string(),
                    auditd_ok: c[aok] == "True",
                },
            )
        })
        .collect()
}

/// What a report got right and wrong against the truth.
#[derive(Debug, Default)]
struct Score {
    /// Bytes given to a process that did not own the flow.
    wrong_bytes: u64,
    wrong: Vec<String>,
    /// Flows alive at the collection instant (their own socket in the
    /// snapshot) not given to their process by uac-fd.
    uac_alive_missed: Vec<String>,
    /// Flows auditd recorded not given to their process.
    audit_missed: Vec<String>,
    /// Per truth pid: (bytes right, bytes).
    per_pid: BTreeMap<String, (u64, u64)>,
    /// Unattributed rows without a reason.
    unattributed_without_reason: usize,
    methods: BTreeMap<String, usize>,
}

fn endpoint(ip: &str, port: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

fn score(d: &Path, out: &Path, want_uac: bool, want_audit: bool) -> Score {
    let truth = expected(d);
    let mut rd = csv::Reader::from_path(out.join("connections.csv")).unwrap();
    let head = rd.headers().unwrap().clone();
    let col = |n: &str| head.iter().position(|h| h == n).unwrap();
    let mut s = Score::default();
    for row in rd.records() {
        let row = row.unwrap();
        let key = (
            row[col("proto")].to_string(),
            endpoint(&row[col("local_ip")], &row[col("local_port")]),
            endpoint(&row[col("remote_ip")], &row[col("remote_port")]),
        );
        let bytes: u64 = row[col("bytes_in")].parse::<u64>().unwrap()
            + row[col("bytes_out")].parse::<u64>().unwrap();
        let pid = &row[col("pid")];
        let method = row[col("method")].to_string();
        *s.methods.entry(method.clone()).or_default() += 1;
        let t = truth.get(&key);
        let tpid = t.map_or("", |t| t.pid.as_str());
        let e = s.per_pid.entry(tpid.to_string()).or_default();
        e.1 += bytes;
        if pid.is_empty() {
            if !method.starts_with("unattributed:") || method.len() <= "unattributed:".len() {
                s.unattributed_without_reason += 1;
            }
        } else if pid == tpid {
            e.0 += bytes;
        } else {
            s.wrong_bytes += bytes;
            s.wrong
                .push(format!("{key:?}: pid {pid}, truth {tpid:?}, {method}"));
        }
        if let Some(t) = t {
            if want_uac && t.uac == "socket" && !(pid == t.pid && method == "uac-fd") {
                s.uac_alive_missed.push(format!("{key:?}: {pid} {method}"));
            }
            let audit_method = method.starts_with("audit-") || (want_uac && method == "uac-fd");
            if want_audit && t.auditd_ok && !(pid == t.pid && audit_method) {
                s.audit_missed.push(format!("{key:?}: {pid} {method}"));
            }
        }
    }
    s
}

fn assert_properties(s: &Score, what: &str) {
    assert_eq!(
        s.wrong_bytes, 0,
        "{what}: bytes to a wrong process: {:#?}",
        s.wrong
    );
    assert!(
        s.uac_alive_missed.is_empty(),
        "{what}: alive at the UAC instant, not uac-fd: {:#?}",
        s.uac_alive_missed
    );
    assert!(
        s.audit_missed.is_empty(),
        "{what}: recorded by auditd, not attributed: {:#?}",
        s.audit_missed
    );
    assert_eq!(s.unattributed_without_reason, 0, "{what}");
}

fn scratch(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("procflow-correlate-{tag}-"))
        .tempdir()
        .unwrap()
}

#[test]
fn dataset_is_attributed_by_each_source_and_both() {
    let Some(d) = dataset() else { return };
    let tmp = scratch("dataset");
    // UAC alone: the flows alive at the collection instant, by uac-fd.
    let out = tmp.path().join("uac");
    let (code, err) = correlate(&d, &[d.join("uac")], &out, &[]);
    assert_eq!(code, 0, "{err}");
    let s = score(&d, &out, true, false);
    assert_properties(&s, "uac alone");
    assert!(
        err.contains("lack identity files"),
        "missing per-pid files are said: {err}"
    );
    // auditd alone: every recorded connection.
    let out = tmp.path().join("audit");
    let (code, err) = correlate(
        &d,
        &[d.join("audit.log")],
        &out,
        &["--host-ip", "198.18.0.1", "--host-ip", "2001:db8::1"],
    );
    assert_eq!(code, 0, "{err}");
    let s = score(&d, &out, false, true);
    assert_properties(&s, "audit alone");
    assert!(err.contains("audit clock: +0.0"), "{err}");
    // Both, merged: every TCP/UDP byte to its process.
    let out = tmp.path().join("both");
    let (code, err) = correlate(&d, &[d.join("uac"), d.join("audit.log")], &out, &[]);
    assert_eq!(code, 0, "{err}");
    let s = score(&d, &out, true, true);
    assert_properties(&s, "both");
    for (pid, (right, all)) in &s.per_pid {
        if !pid.is_empty() {
            assert_eq!(right, all, "pid {pid}: {right} of {all} bytes");
        }
    }
    eprintln!(
        "per pid (right, all bytes): {:?}; methods {:?}",
        s.per_pid, s.methods
    );
    // Each input hashed; the sources said.
    let sum: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let files = sum["inputs"]["files"].as_array().unwrap();
    assert!(files.iter().any(|f| f["role"] == "evidence"
        && f["path"].as_str().unwrap().ends_with(".tar.gz")
        && f["sha256"] == "19b9e40f7723352cc70efa268bc576f48318531f3d81b03500ae0b7648730585"));
    assert!(files.iter().any(|f| f["role"] == "evidence"
        && f["sha256"] == "65b2cdbd7d2c7901fb5cec3ee98be19a609557f4ce81ff185547b56d880c9f65"));
    let sources = sum["foreign"]["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 2);
}

/// `Sat Dec  5 19:38:31 2026` for seconds since the epoch.
fn ctime(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let rfc = procflow::time::rfc3339_ns(secs * 1_000_000_000);
    let mo: usize = rfc[5..7].parse().unwrap();
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][mo - 1];
    let day: u32 = rfc[8..10].parse().unwrap();
    format!("{wd} {mon} {day:>2} {} {}", &rfc[11..19], &rfc[..4])
}

/// Edits one archive member: (name, data) to new data, `None` drops it.
type EditMember = dyn Fn(&str, Vec<u8>) -> Option<Vec<u8>>;

/// The UAC archive's members, each passed through `edit(name, data)`
/// (`None` drops it), written again as .tar.gz; `mtime_shift` added to
/// every member time.
fn rewrite_archive(
    src: &Path,
    dst: &Path,
    mtime_shift: u64,
    extra: &[(tar::Header, Vec<u8>)],
    edit: &EditMember,
) {
    let f = std::fs::File::open(src).unwrap();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let out = std::fs::File::create(dst).unwrap();
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        out,
        flate2::Compression::fast(),
    ));
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        let Some(data) = edit(&name, data) else {
            continue;
        };
        let mut h = e.header().clone();
        h.set_mtime(h.mtime().unwrap() + mtime_shift);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data.as_slice()).unwrap();
    }
    for (h, data) in extra {
        b.append(h, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap();
}

#[test]
fn host_clock_ninety_seconds_ahead_is_estimated_and_joined() {
    let Some(d) = dataset() else { return };
    let tmp = scratch("clock");
    const SHIFT: i64 = 90;
    // audit.log: every record stamped 90 s later.
    let text = std::fs::read_to_string(d.join("audit.log")).unwrap();
    let mut shifted = String::new();
    for line in text.lines() {
        let (a, b) = line.split_once("msg=audit(").unwrap();
        let (secs, rest) = b.split_once('.').unwrap();
        let secs: i64 = secs.parse().unwrap();
        shifted.push_str(&format!("{a}msg=audit({}.{rest}\n", secs + SHIFT));
    }
    let audit = tmp.path().join("audit.log");
    std::fs::write(&audit, shifted).unwrap();
    // UAC: uac.log, ps start times and member times 90 s later.
    let uac = tmp.path().join("uac-shifted.tar.gz");
    rewrite_archive(&d.join(ARCHIVE), &uac, SHIFT as u64, &[], &|name, data| {
        let text = String::from_utf8_lossy(&data).into_owned();
        if name == "uac.log" {
            let mut out = String::new();
            for l in text.lines() {
                let t = (|| {
                    let y: i64 = l.get(0..4)?.parse().ok()?;
                    let mo: u32 = l.get(5..7)?.parse().ok()?;
                    let dd: u32 = l.get(8..10)?.parse().ok()?;
                    let (h, mi, s) = procflow::foreign::hms(l.get(11..19)?)?;
                    procflow::foreign::epoch_secs(y, mo, dd, h, mi, s)
                })();
                match t {
                    Some(t) => {
                        let rfc = procflow::time::rfc3339_ns((t + SHIFT) * 1_000_000_000);
                        out.push_str(&format!("{} {}{}\n", &rfc[..10], &rfc[11..19], &l[19..]));
                    }
                    None => {
                        out.push_str(l);
                        out.push('\n');
                    }
                }
            }
            return Some(out.into_bytes());
        }
        if name.ends_with("ps_-axo_pid_user_lstart_args.txt") {
            let mut out = String::new();
            for (i, l) in text.lines().enumerate() {
                let f: Vec<&str> = l.split_whitespace().collect();
                if i == 0 || f.len() < 7 {
                    out.push_str(l);
                } else {
                    let t = procflow::foreign::parse_ctime(&f[2..7].join(" "), 0).unwrap();
                    out.push_str(&format!(
                        "{} {} {} {}",
                        f[0],
                        f[1],
                        ctime(t + SHIFT),
                        f[7..].join(" ")
                    ));
                }
                out.push('\n');
            }
            return Some(out.into_bytes());
        }
        Some(data)
    });
    let out = tmp.path().join("report");
    let (code, err) = correlate(&d, &[uac, audit], &out, &[]);
    assert_eq!(code, 0, "{err}");
    let offset = |src: &str| -> f64 {
        let l = err
            .lines()
            .find(|l| l.contains(&format!("{src} clock: ")))
            .unwrap_or_else(|| panic!("{err}"));
        l.split(&format!("{src} clock: "))
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let a = offset("audit");
    assert!((a + 90.0).abs() < 0.05, "audit offset {a}: {err}");
    let u = offset("uac");
    assert!((u + 90.0).abs() < 7.0, "uac offset {u}: {err}");
    assert!(err.contains("estimated"), "{err}");
    let s = score(&d, &out, true, true);
    assert_properties(&s, "clock 90 s ahead");
    // Given instead of estimated: the same result.
    let out2 = tmp.path().join("given");
    let (code, err) = correlate(
        &d,
        &[
            tmp.path().join("uac-shifted.tar.gz"),
            tmp.path().join("audit.log"),
        ],
        &out2,
        &["--clock-offset", "audit=-90s", "--clock-offset", "uac=-90s"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("given with --clock-offset"), "{err}");
    assert_properties(&score(&d, &out2, true, true), "clock given");
}

#[test]
fn cut_archive_is_read_up_to_the_cut_and_said() {
    let Some(d) = dataset() else { return };
    let tmp = scratch("cut");
    let bytes = std::fs::read(d.join(ARCHIVE)).unwrap();
    let cut = tmp.path().join("cut.tar.gz");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let out = tmp.path().join("r");
    let (code, err) = correlate(&d, &[cut, d.join("audit.log")], &out, &[]);
    assert_eq!(code, 3, "a cut archive is evidence damage: {err}");
    assert!(err.contains("ends early"), "{err}");
    let s = score(&d, &out, false, true);
    assert_eq!(s.wrong_bytes, 0, "{:#?}", s.wrong);
    // Cut before any live_response member: a clear error.
    let tiny = tmp.path().join("tiny.tar.gz");
    std::fs::write(&tiny, &bytes[..200]).unwrap();
    let (code, err) = correlate(&d, &[tiny], &tmp.path().join("r2"), &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("tiny.tar.gz"), "{err}");
}

#[test]
fn forged_fd_lines_and_traversal_names_are_not_believed() {
    let Some(d) = dataset() else { return };
    let tmp = scratch("forged");
    let raw_header = |name: &[u8], kind: tar::EntryType, size: u64, link: Option<&[u8]>| {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        if let Some(l) = link {
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l);
        }
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(1_796_499_533);
        h.set_cksum();
        h
    };
    // A socket table claiming charlie's tuple for inode 1, outside the tree.
    let evil_table = b"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 010012C6:B8FE 020012C6:2329 01 00000000:00000000 00:00000000 00000000     0        0 1 1 0 20 0 0 10 -1\n".to_vec();
    let extra = vec![
        (
            raw_header(
                b"../../../tmp/procflow-evil/live_response/network/proc_net_tcp.txt",
                tar::EntryType::Regular,
                evil_table.len() as u64,
                None,
            ),
            evil_table,
        ),
        (
            raw_header(
                b"live_response/process/proc/14954/stat.txt",
                tar::EntryType::Symlink,
                0,
                Some(b"/etc/passwd"),
            ),
            Vec::new(),
        ),
    ];
    let archive = tmp.path().join("forged.tar.gz");
    rewrite_archive(&d.join(ARCHIVE), &archive, 0, &extra, &|name, data| {
        if name.ends_with("proc/14954/fd.txt") {
            // alpha claims charlie's socket: through a file name holding
            // ` -> socket:[N]`, and through a newline forging a line with
            // an fd number alpha already uses.
            let mut t = String::from_utf8(data).unwrap();
            t.push_str("l-wx------ 1 root root 64 Dec  5 19:38 9 -> /tmp/x -> socket:[979419]\n");
            t.push_str("lrwx------ 1 root root 64 Dec  5 19:38 3 -> socket:[979419]\n");
            return Some(t.into_bytes());
        }
        Some(data)
    });
    let out = tmp.path().join("r");
    let (code, err) = correlate(&d, &[archive.clone(), d.join("audit.log")], &out, &[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("fd listing line(s) dropped"), "{err}");
    assert!(err.contains("member name(s) with `..`"), "{err}");
    assert!(!Path::new("/tmp/procflow-evil").exists());
    let s = score(&d, &out, false, true);
    assert_eq!(s.wrong_bytes, 0, "{:#?}", s.wrong);
    // Charlie's flow stays charlie's, by its own fd listing.
    let text = std::fs::read_to_string(out.join("connections.csv")).unwrap();
    let charlie = text.lines().find(|l| l.contains(",47358,")).unwrap();
    assert!(
        charlie.contains(",15201,") && charlie.contains("uac-fd"),
        "{charlie}"
    );
    let sum: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let p = &sum["foreign"]["uac"][0]["problems"];
    assert!(p["links_skipped"].as_u64().unwrap() >= 1, "{p}");
    assert!(p["suspicious_names"].as_u64().unwrap() >= 1, "{p}");
}

#[test]
fn junk_audit_lines_keep_memory_bounded() {
    let Some(d) = dataset() else { return };
    let tmp = scratch("junk");
    let log = tmp.path().join("audit.log");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&log).unwrap());
        f.write_all(&std::fs::read(d.join("audit.log")).unwrap())
            .unwrap();
        let line = format!("type=SYSCALL msg=audit(junk {}\n", "x".repeat(1000));
        for _ in 0..(100 << 20) / line.len() {
            f.write_all(line.as_bytes()).unwrap();
        }
        // A proctitle of 1 MB, then 20 MB without a newline.
        f.write_all(b"type=PROCTITLE msg=audit(1796499600.000:99999): proctitle=")
            .unwrap();
        f.write_all("41".repeat(1 << 19).as_bytes()).unwrap();
        f.write_all(b"\n").unwrap();
        f.write_all(&vec![b'y'; 20 << 20]).unwrap();
    }
    let out = tmp.path().join("r");
    let mut c = Command::new(env!("CARGO_BIN_EXE_procflow"));
    c.args(["correlate", "--quiet", "--capture"])
        .arg(d.join("capture.pcap"))
        .arg("--evidence")
        .arg(d.join("uac"))
        .arg("--evidence")
        .arg(&log)
        .arg("--out")
        .arg(&out);
    // Peak resident set (VmHWM), read while it runs.
    let child = c
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status_path = format!("/proc/{}/status", child.id());
    let watcher = std::thread::spawn(move || {
        let mut peak_kb = 0u64;
        while let Ok(s) = std::fs::read_to_string(&status_path) {
            if let Some(v) = s.lines().find_map(|l| l.strip_prefix("VmHWM:")) {
                peak_kb = peak_kb.max(v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0));
            }
            if s.lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        peak_kb
    });
    let o = child.wait_with_output().unwrap();
    let peak_kb = watcher.join().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("not audit records"), "{err}");
    assert!(err.contains("longer than"), "{err}");
    assert!(peak_kb > 0, "no memory reading");
    assert!(
        peak_kb < 96 * 1024,
        "peak RSS {peak_kb} KiB reading 120 MB of junk"
    );
    let s = score(&d, &out, true, true);
    assert_properties(&s, "junk audit lines");
}

#[test]
fn unknown_evidence_and_bundles_are_clear_errors() {
    let Some(d) = dataset() else { return };
    let tmp = scratch("unknown");
    let junk = tmp.path().join("notes.txt");
    std::fs::write(&junk, "hello\n").unwrap();
    let (code, err) = correlate(&d, &[junk], &tmp.path().join("r"), &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("notes.txt") && err.contains("not a UAC collection"),
        "{err}"
    );
    let bundle = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/sample-bundle");
    let (code, err) = correlate(&d, &[bundle], &tmp.path().join("r3"), &[]);
    assert_eq!(code, 2);
    assert!(err.contains("procflow analyze"), "{err}");
}

#[test]
fn without_fd_listings_the_listings_name_the_owners() {
    let Some(d) = dataset() else { return };
    let tmp = scratch("nofd");
    let archive = tmp.path().join("nofd.tar.gz");
    rewrite_archive(&d.join(ARCHIVE), &archive, 0, &[], &|name, data| {
        (!name.ends_with("/fd.txt")).then_some(data)
    });
    let out = tmp.path().join("r");
    let (code, err) = correlate(&d, &[archive], &out, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("no fd listings"), "{err}");
    let s = score(&d, &out, false, false);
    assert_eq!(s.wrong_bytes, 0, "{:#?}", s.wrong);
    // The six sockets with a pid in ss/netstat/lsof: uac-ss, medium.
    let text = std::fs::read_to_string(out.join("connections.csv")).unwrap();
    let ss = text
        .lines()
        .filter(|l| l.contains(",uac-ss,") && l.contains(",medium,"))
        .count();
    assert_eq!(ss, 6, "{text}");
}
