//! One test per attack on the evidence (issue: "evidence that holds up"):
//! each changes a copy of the sample bundle (or the report directory) the
//! way an attacker or an accident would, runs `procflow verify` /
//! `procflow analyze` / `procflow flows`, and asserts the exact outcome:
//! exit code, the warning text, the bundle unchanged (hashes before and
//! after), no file written outside `--out`.
//!
//! Tests that need root (bind mounts, a small tmpfs) run in a private
//! mount namespace (`unshare -m`) and print `SKIPPED: <reason>` otherwise.

// Test setup calls libc::geteuid.
#![allow(unsafe_code)]

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::Digest;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn procflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_procflow"))
}

const SAMPLE_CAPTURE: &str = "capture-20261128T165616Z.pcap";

/// The sample bundle these attacks start from: the periodic-reads one kept
/// as a compatibility fixture, whose counts (85 snapshots) and capture name
/// the checks below name.
const SAMPLE: &str = "testdata/compat/sample-bundle-v1-poll";

/// A fresh scratch directory holding a copy of the sample bundle in
/// `bundle/`.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pe-attack-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("bundle")).unwrap();
    for e in std::fs::read_dir(root().join(SAMPLE)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), d.join("bundle").join(e.file_name())).unwrap();
    }
    d
}

fn sha_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every entry under `dir` (recursively, links not followed) with the hash
/// of its content or its link target.
fn tree(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let e = e.unwrap();
            let p = e.path();
            let ft = e.file_type().unwrap();
            let rel = p.strip_prefix(dir).unwrap().to_path_buf();
            if ft.is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                out.insert(rel, format!("link:{}", t.display()));
            } else if ft.is_dir() {
                out.insert(rel, "dir".into());
                stack.push(p);
            } else {
                out.insert(rel, sha_hex(&std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out
}

/// Rewrites `SHA256SUMS` over every regular file, as the recorder does.
fn resum(bundle: &Path) {
    let mut text = String::new();
    for (name, h) in tree(bundle) {
        if name != Path::new("SHA256SUMS") && !h.starts_with("link:") && h != "dir" {
            text.push_str(&format!("{h}  {}\n", name.display()));
        }
    }
    std::fs::write(bundle.join("SHA256SUMS"), text).unwrap();
}

/// A JSON file the run wrote (summary.json, a manifest).
fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn run(cmd: &mut Command) -> (Option<i32>, String, String) {
    let o: Output = cmd.output().unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn verify(bundle: &Path) -> (Option<i32>, String, String) {
    run(procflow().arg("verify").arg(bundle))
}

fn analyze(bundle: &Path, out: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    run(procflow()
        .arg("analyze")
        .arg(bundle)
        .arg("--out")
        .arg(out)
        .args(["--quiet", "--threads", "2"])
        .args(extra))
}

/// Asserts the run changed nothing but `out` inside `dir`: the bundle is
/// as it was, and no other file appeared.
fn assert_only_out_changed(dir: &Path, before: &BTreeMap<PathBuf, String>, out: &str) {
    let after: BTreeMap<PathBuf, String> = tree(dir)
        .into_iter()
        .filter(|(p, _)| !p.starts_with(out))
        .collect();
    let before: BTreeMap<PathBuf, String> = before
        .iter()
        .filter(|(p, _)| !p.starts_with(out))
        .map(|(p, h)| (p.clone(), h.clone()))
        .collect();
    assert_eq!(before, after, "files outside {out} changed");
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn skip(why: &str) {
    common::missing(why);
}

#[test]
fn intact_sample_bundle_verifies() {
    let d = scratch("intact");
    let (code, out, _) = verify(&d.join("bundle"));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(": intact: every check holds"), "{out}");
    let (code, out, _) = run(procflow().arg("verify").arg("--json").arg(d.join("bundle")));
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["status"].as_array().unwrap().len(), 4);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn tampered_capture() {
    let d = scratch("tampered");
    let b = d.join("bundle");
    let mut cap = std::fs::read(b.join(SAMPLE_CAPTURE)).unwrap();
    cap[5000] ^= 0x01;
    std::fs::write(b.join(SAMPLE_CAPTURE), &cap).unwrap();
    let before = tree(&d);
    let (code, out, _) = verify(&b);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "integrity FAIL        hash-mismatch: {SAMPLE_CAPTURE}: SHA-256"
        )),
        "{out}"
    );
    assert!(
        out.contains("NOT INTACT: 1 finding(s) (integrity)"),
        "{out}"
    );
    let (code, out, err) = analyze(&b, &d.join("out"), &[]);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("procflow: evidence status: WARNING: some checks failed"),
        "{err}"
    );
    assert!(
        err.contains(&format!("hash-mismatch: {SAMPLE_CAPTURE}: SHA-256")),
        "{err}"
    );
    // The block is on stderr with the warnings, the result line on stdout,
    // and the reports are written.
    assert!(out.contains("procflow analyze:"), "{out}");
    assert!(!err.contains("procflow analyze:"), "{err}");
    let summary: serde_json::Value = json(&d.join("out/summary.json"));
    assert_eq!(summary["evidence"]["ok"], false);
    assert_eq!(summary["evidence"]["findings"][0]["check"], "hash-mismatch");
    assert_only_out_changed(&d, &before, "out");
    // --strict: refused, nothing written.
    let (code, _, err) = analyze(&b, &d.join("strict"), &["--strict"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("--strict was given; no report written"),
        "{err}"
    );
    assert!(!d.join("strict").exists());
    assert_only_out_changed(&d, &before, "out");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn deleted_capture() {
    let d = scratch("deleted");
    let b = d.join("bundle");
    // The capture analysed from elsewhere, its place in the bundle empty:
    // every remaining hash matches.
    std::fs::rename(b.join(SAMPLE_CAPTURE), d.join("elsewhere.pcap")).unwrap();
    let before = tree(&d);
    let (code, out, _) = verify(&b);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "file-missing: {SAMPLE_CAPTURE} is named in the manifest and listed in SHA256SUMS but absent from the bundle"
        )),
        "{out}"
    );
    let pcap = d.join("elsewhere.pcap");
    let (code, _, err) = analyze(&b, &d.join("out"), &["--pcap", pcap.to_str().unwrap()]);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains(&format!("file-missing: {SAMPLE_CAPTURE}")),
        "{err}"
    );
    assert_only_out_changed(&d, &before, "out");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn missing_sha256sums() {
    let d = scratch("nosums");
    let b = d.join("bundle");
    std::fs::remove_file(b.join("SHA256SUMS")).unwrap();
    let before = tree(&d);
    let (code, out, _) = verify(&b);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(
            "sha256sums-missing: SHA256SUMS is missing: no file of the bundle can be checked"
        ),
        "{out}"
    );
    let (code, _, err) = analyze(&b, &d.join("out"), &[]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("sha256sums-missing"), "{err}");
    assert_only_out_changed(&d, &before, "out");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn garbage_sha256sums() {
    let d = scratch("garbagesums");
    let b = d.join("bundle");
    std::fs::write(
        b.join("SHA256SUMS"),
        "not a hash line\n0123  manifest.json\n\u{1b}[2J\n",
    )
    .unwrap();
    let (code, out, _) = verify(&b);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("sha256sums-malformed: SHA256SUMS line 1: the hash is not 64 hex digits"),
        "{out}"
    );
    assert!(
        out.contains("sha256sums-malformed: SHA256SUMS line 2: the hash is not 64 hex digits"),
        "{out}"
    );
    assert!(
        out.contains("sha256sums-malformed: SHA256SUMS line 3: expected `HEX  NAME`"),
        "{out}"
    );
    assert!(out.contains("sha256sums-empty"), "{out}");
    assert!(
        out.contains(&format!(
            "not-listed: {SAMPLE_CAPTURE} is in the bundle but not listed in SHA256SUMS"
        )),
        "{out}"
    );
    assert!(!out.contains('\u{1b}'), "{out}");
    let _ = std::fs::remove_dir_all(&d);
}

/// The bundle a SIGKILLed recorder leaves: status `recording`, no
/// SHA256SUMS, the archive without its trailer.
#[test]
fn killed_recorder() {
    let d = scratch("killed");
    let b = d.join("bundle");
    let m = std::fs::read_to_string(b.join("manifest.json")).unwrap();
    let m = m.replace("\"status\": \"complete\"", "\"status\": \"recording\"");
    assert!(m.contains("\"recording\""));
    std::fs::write(b.join("manifest.json"), m).unwrap();
    std::fs::remove_file(b.join("SHA256SUMS")).unwrap();
    let tar = b.join("snapshots-000001.tar");
    let bytes = std::fs::read(&tar).unwrap();
    let mut end = bytes.len();
    while end >= 512 && bytes[end - 512..end].iter().all(|&x| x == 0) {
        end -= 512;
    }
    std::fs::write(&tar, &bytes[..end]).unwrap();
    let before = tree(&d);
    let (code, out, _) = verify(&b);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("recorder  FAIL        recorder-status: recorder status is \"recording\", not \"complete\": the recorder did not stop cleanly"),
        "{out}"
    );
    assert!(
        out.contains("archive-not-closed: snapshots-000001.tar has no tar trailer"),
        "{out}"
    );
    let (code, _, err) = analyze(&b, &d.join("out"), &[]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("recorder-status"), "{err}");
    assert!(d.join("out/summary.json").exists());
    assert_only_out_changed(&d, &before, "out");
    let _ = std::fs::remove_dir_all(&d);
}

/// Event samples the recorder lost (perf ring full, conntrack ENOBUFS):
/// summed in the manifest's `errors`, said by verify and analyze.
#[test]
fn recorder_lost_events() {
    let d = scratch("lostevents");
    let b = d.join("bundle");
    let m = std::fs::read_to_string(b.join("manifest.json")).unwrap();
    let m = m.replace(
        "\"errors\": []",
        "\"errors\": [{\"what\": \"events\", \"path\": null, \"error\": \"samples dropped by the kernel (perf ring buffer full)\", \"count\": 716}]",
    );
    assert!(m.contains("716"));
    std::fs::write(b.join("manifest.json"), m).unwrap();
    resum(&b);
    let (code, out, _) = verify(&b);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("recorder-lost-events: the recorder lost evidence (events): 716 samples dropped by the kernel (perf ring buffer full)"),
        "{out}"
    );
    let (code, _, err) = analyze(&b, &d.join("out"), &[]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("recorder-lost-events"), "{err}");
    let summary: serde_json::Value = json(&d.join("out/summary.json"));
    assert_eq!(summary["evidence"]["ok"], false);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn capture_drops() {
    let d = scratch("drops");
    let b = d.join("bundle");
    std::fs::write(
        b.join("tcpdump.log"),
        "tcpdump: listening on pfs1, link-type EN10MB (Ethernet)\n1422 packets captured\n925000 packets received by filter\n755695 packets dropped by kernel\n",
    )
    .unwrap();
    resum(&b);
    let before = tree(&d);
    let (code, out, _) = verify(&b);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("capture   FAIL        capture-drops: tcpdump reports 755695 packets dropped by kernel of 925000 received by filter (81.7 %): the capture misses traffic"),
        "{out}"
    );
    let (code, _, err) = analyze(&b, &d.join("out"), &[]);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("capture-drops: tcpdump reports 755695 packets dropped by kernel"),
        "{err}"
    );
    let summary: serde_json::Value = json(&d.join("out/summary.json"));
    assert_eq!(
        summary["evidence"]["capture_counters"]["dropped_by_kernel"],
        755695
    );
    assert_only_out_changed(&d, &before, "out");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn non_root_recording() {
    let d = scratch("nonroot");
    let b = d.join("bundle");
    let mut m: serde_json::Value = json(&b.join("manifest.json"));
    m["privileges"]["euid"] = 1000.into();
    m["errors"] = serde_json::json!([{
        "what": "read-fd", "path": "/proc/*/fd",
        "error": "EACCES: Permission denied (os error 13)", "count": 560
    }]);
    std::fs::write(
        b.join("manifest.json"),
        serde_json::to_vec_pretty(&m).unwrap(),
    )
    .unwrap();
    resum(&b);
    let (code, out, _) = verify(&b);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("not-root: the recorder ran as uid 1000, not root"),
        "{out}"
    );
    assert!(
        out.contains("unreadable-fds: 560 fd directory read(s) failed"),
        "{out}"
    );
    let (code, _, err) = analyze(&b, &d.join("out"), &[]);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("procflow:   fds       failed      2 finding(s)"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn symlinked_report_files() {
    let d = scratch("symlinks");
    let b = d.join("bundle");
    let out = d.join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::create_dir(d.join("etc")).unwrap();
    std::os::unix::fs::symlink(b.join("manifest.json"), out.join("summary.json")).unwrap();
    std::os::unix::fs::symlink(d.join("etc/passwd"), out.join("connections.csv")).unwrap();
    let before = tree(&d);
    // Without --force: refused, nothing written anywhere.
    let (code, _, err) = analyze(&b, &out, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("already holds connections.csv, summary.json"),
        "{err}"
    );
    assert_eq!(tree(&d), before);
    // With --force: the links are replaced, never followed.
    let (code, _, err) = analyze(&b, &out, &["--force"]);
    assert_eq!(code, Some(0), "{err}");
    assert_only_out_changed(&d, &before, "out");
    assert!(!d.join("etc/passwd").exists());
    for f in ["summary.json", "connections.csv"] {
        let m = std::fs::symlink_metadata(out.join(f)).unwrap();
        assert!(m.file_type().is_file(), "{f} is still a link");
    }
    // No private directory left behind.
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 5);
    // flows --out into the bundle, and over a file without --force.
    let (code, _, err) = run(procflow()
        .arg("flows")
        .arg(b.join(SAMPLE_CAPTURE))
        .arg("--out")
        .arg(b.join("x.csv")));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("holds a procflow bundle manifest"), "{err}");
    std::fs::write(d.join("flows.csv"), "old").unwrap();
    let (code, _, err) = run(procflow()
        .arg("flows")
        .arg(b.join(SAMPLE_CAPTURE))
        .arg("--out")
        .arg(d.join("flows.csv")));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("exists; pass --force to overwrite it"),
        "{err}"
    );
    assert_eq!(std::fs::read(d.join("flows.csv")).unwrap(), b"old");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn bind_mounted_out() {
    if !is_root() {
        return skip("bind mounts need root");
    }
    let d = scratch("bind");
    let b = d.join("bundle");
    std::fs::create_dir(d.join("mnt")).unwrap();
    let before = tree(&b);
    let script = format!(
        "mount --bind '{b}' '{m}' && exec '{bin}' analyze '{b}' --out '{m}/report' --quiet",
        b = b.display(),
        m = d.join("mnt").display(),
        bin = env!("CARGO_BIN_EXE_procflow")
    );
    let o = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output();
    let Ok(o) = o else {
        return skip("unshare is not available");
    };
    let err = String::from_utf8_lossy(&o.stderr);
    if err.contains("unshare failed") || err.contains("mount:") {
        return skip(&format!("cannot make a private mount namespace: {err}"));
    }
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("is inside the bundle"), "{err}");
    assert_eq!(tree(&b), before);
    assert!(!b.join("report").exists());
    let _ = std::fs::remove_dir_all(&d);
}

/// A bundle whose process records, an archive member name and a /proc
/// line carry formula starts and terminal escape sequences.
fn hostile_bundle(d: &Path) -> PathBuf {
    let b = d.join("bundle");
    let tar_path = b.join("snapshots-000001.tar");
    let evil_comm = "=HYPERLINK(\\\"http://evil\\\")\\u001b]0;pwned\\u0007\\u001b[2J";
    let mut ar = tar::Archive::new(std::fs::File::open(&tar_path).unwrap());
    let mut out = tar::Builder::new(Vec::new());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        if name.ends_with("procs.jsonl") {
            let text = String::from_utf8(data).unwrap();
            let text = text
                .replace("\"comm\":\"python3\"", &format!("\"comm\":\"{evil_comm}\""))
                .replace(
                    "\"cmdline\":[\"/root/.pyenv/versions/3.11.7/bin/python3\"",
                    "\"cmdline\":[\"+cmd|' /C calc'!A0\\u001b[31m\"",
                )
                .replace(
                    "\"exe\":\"/root/.pyenv/versions/3.11.7/bin/python3.11\"",
                    "\"exe\":\"@SUM(1+1)\\r\"",
                );
            data = text.into_bytes();
        }
        if name == "snap/00000002/fds" {
            data.extend_from_slice(b"\x1b]0;fdline\x07 garbage\n");
        }
        let mut h = e.header().clone();
        h.set_size(data.len() as u64);
        h.set_cksum();
        out.append_data(&mut h, &name, data.as_slice()).unwrap();
    }
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    h.set_cksum();
    out.append_data(&mut h, "snap/\u{1b}]0;member\u{7}\u{1b}[2J", &b"x"[..])
        .unwrap();
    std::fs::write(&tar_path, out.into_inner().unwrap()).unwrap();
    resum(&b);
    b
}

fn assert_no_raw_controls(what: &str, s: &str) {
    for c in ['\u{1b}', '\u{7}', '\r'] {
        assert!(!s.contains(c), "{what} holds a raw {c:?}: {s}");
    }
}

#[test]
fn formula_cells() {
    let d = scratch("formula");
    let b = hostile_bundle(&d);
    let (code, _, err) = analyze(&b, &d.join("out"), &[]);
    assert_eq!(code, Some(0), "{err}");
    let csv = std::fs::read_to_string(d.join("out/connections.csv")).unwrap();
    assert!(
        csv.contains("'=HYPERLINK(\"\"http://evil\"\")\\x1b]0;pwned\\x07\\x1b[2J"),
        "{csv}"
    );
    assert!(csv.contains(",'@SUM(1+1)\\x0d,"), "{csv}");
    // The command line is shell-quoted: it begins with a quote already.
    assert!(
        csv.contains(",'+cmd|'\\'' /C calc'\\''!A0\\x1b[31m' "),
        "{csv}"
    );
    let procs = std::fs::read_to_string(d.join("out/processes.csv")).unwrap();
    assert!(procs.contains("'=HYPERLINK("), "{procs}");
    for (name, text) in [("connections.csv", &csv), ("processes.csv", &procs)] {
        assert_no_raw_controls(name, text);
        for line in text.lines() {
            for cell in line.split(',') {
                let cell = cell.trim_start_matches('"');
                assert!(
                    !cell.starts_with(['=', '+', '@', '\t']),
                    "{name}: formula cell {cell:?}"
                );
            }
        }
    }
    // JSONL keeps the exact value (JSON escapes it).
    let jsonl = std::fs::read_to_string(d.join("out/connections.jsonl")).unwrap();
    let first: serde_json::Value = jsonl
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v.get("process.name").is_some())
        .unwrap();
    assert_eq!(
        first["process.name"],
        "=HYPERLINK(\"http://evil\")\u{1b}]0;pwned\u{7}\u{1b}[2J"
    );
    // --csv-raw: the bytes as recorded.
    let (code, _, err) = analyze(&b, &d.join("raw"), &["--csv-raw"]);
    assert_eq!(code, Some(0), "{err}");
    let raw = std::fs::read_to_string(d.join("raw/connections.csv")).unwrap();
    assert!(
        raw.contains(",\"=HYPERLINK(\"\"http://evil\"\")\u{1b}]0;pwned\u{7}\u{1b}[2J\","),
        "{raw}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn escape_sequences_in_every_printed_field() {
    let d = scratch("escapes");
    let b = hostile_bundle(&d);
    // A file name with escapes, not listed anywhere.
    std::fs::copy(
        b.join(SAMPLE_CAPTURE),
        b.join("capture-\u{1b}]0;name\u{7}.pcap"),
    )
    .unwrap();
    let (code, out, err) = analyze(&b, &d.join("out"), &[]);
    assert_eq!(code, Some(3), "{err}");
    assert_no_raw_controls("analyze stderr", &err);
    assert_no_raw_controls("analyze stdout", &out);
    assert!(
        err.contains("snap/\\x1b]0;member\\x07\\x1b[2J is not part of the bundle format"),
        "{err}"
    );
    assert!(
        err.contains("not-listed: capture-\\x1b]0;name\\x07.pcap"),
        "{err}"
    );
    // The summary table prints process names too.
    let (code, out, err) = run(procflow()
        .arg("analyze")
        .arg(&b)
        .arg("--out")
        .arg(d.join("out2")));
    assert_eq!(code, Some(3), "{err}");
    assert_no_raw_controls("analyze summary", &err);
    assert_no_raw_controls("analyze summary stdout", &out);
    assert!(err.contains("\\x1b"), "{err}");
    // A file name that is not UTF-8 at all.
    {
        use std::os::unix::ffi::OsStrExt;
        let n = std::ffi::OsStr::from_bytes(b"capture-\xff\x1b[2J.pcap");
        std::fs::write(b.join(n), b"x").unwrap();
    }
    let (code, out, err) = verify(&b);
    assert_eq!(code, Some(1));
    assert!(
        out.contains("not-listed: capture-\\xff\\x1b[2J.pcap"),
        "{out}"
    );
    assert_no_raw_controls("verify", &out);
    assert_no_raw_controls("verify stderr", &err);
    let (_, out, err) = run(procflow()
        .arg("flows")
        .arg(b.join("capture-\u{1b}]0;name\u{7}.pcap"))
        .arg("--out")
        .arg(d.join("f.csv")));
    assert_no_raw_controls("flows", &(out + &err));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn dev_zero_is_refused_quickly() {
    let t = Instant::now();
    let (code, _, err) = run(procflow().args(["flows", "/dev/zero", "--out", "/dev/null"]));
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(
            "/dev/zero: offset 0: cannot open: not a capture: a stream beginning with 00 00 00 00"
        ),
        "{err}"
    );
    // A pipe holding a capture works like the file.
    let cap = root().join(SAMPLE).join(SAMPLE_CAPTURE);
    let mut child = procflow()
        .args(["flows", "/dev/stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let bytes = std::fs::read(&cap).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&bytes);
    });
    let piped = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert_eq!(piped.status.code(), Some(0));
    let (_, from_file, _) = run(procflow().arg("flows").arg(&cap));
    assert_eq!(String::from_utf8_lossy(&piped.stdout), from_file);
}

#[test]
fn sparse_tar() {
    let d = scratch("sparse");
    let b = d.join("bundle");
    // GNU tar writes a sparse member that claims 6 GB in a few KB.
    let src = d.join("src/snap/00000099");
    std::fs::create_dir_all(&src).unwrap();
    let f = std::fs::File::create(src.join("fds")).unwrap();
    f.set_len(6 << 30).unwrap();
    drop(f);
    let sparse = d.join("sparse.tar");
    let st = Command::new("tar")
        .arg("-S")
        .arg("-cf")
        .arg(&sparse)
        .arg("-C")
        .arg(d.join("src"))
        .arg("snap/00000099/fds")
        .status();
    let Ok(st) = st else {
        return skip("GNU tar is not available");
    };
    assert!(st.success());
    assert!(std::fs::metadata(&sparse).unwrap().len() < 1 << 20);
    // Append its member (without its trailer) to the bundle's archive.
    let tar_path = b.join("snapshots-000001.tar");
    let mut bytes = std::fs::read(&tar_path).unwrap();
    while bytes.len() >= 512 && bytes[bytes.len() - 512..].iter().all(|&x| x == 0) {
        bytes.truncate(bytes.len() - 512);
    }
    bytes.extend_from_slice(&std::fs::read(&sparse).unwrap());
    std::fs::write(&tar_path, &bytes).unwrap();
    resum(&b);
    // At most 1 GB of address space: reading the member would abort.
    let script = format!(
        "ulimit -v 1048576; exec '{}' analyze '{}' --out '{}' --quiet --threads 2",
        env!("CARGO_BIN_EXE_procflow"),
        b.display(),
        d.join("out").display()
    );
    let t = Instant::now();
    let (code, out, err) = run(Command::new("sh").args(["-c", &script]));
    assert!(t.elapsed() < Duration::from_secs(20), "{err}");
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("member snap/00000099/fds at byte offset"),
        "{err}"
    );
    assert!(err.contains("not a regular file; skipped"), "{err}");
    // Every earlier snapshot kept.
    assert!(out.contains("85 snapshots"), "{out}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn truncate_during_read() {
    let d = scratch("truncate");
    // A large capture: the sample's packets repeated.
    let cap = std::fs::read(root().join(SAMPLE).join(SAMPLE_CAPTURE)).unwrap();
    let big = d.join("big.pcap");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&big).unwrap());
        f.write_all(&cap).unwrap();
        let body = &cap[24..];
        for _ in 0..400 {
            f.write_all(body).unwrap();
        }
    }
    let size = std::fs::metadata(&big).unwrap().len();
    let mut child = procflow()
        .args(["flows", "--threads", "1", "--out", "/dev/null"])
        .arg(&big)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Truncate once the file is mapped for the replay.
    let maps = format!("/proc/{}/maps", child.id());
    let name = big.to_string_lossy().into_owned();
    let t = Instant::now();
    let mut truncated = false;
    while t.elapsed() < Duration::from_secs(20) {
        if std::fs::read_to_string(&maps).is_ok_and(|m| m.contains(&name)) {
            std::thread::sleep(Duration::from_millis(5));
            std::fs::OpenOptions::new()
                .write(true)
                .open(&big)
                .unwrap()
                .set_len(size / 4)
                .unwrap();
            truncated = true;
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    // Never a SIGBUS: a clear error for the file, or (when the replay
    // was faster than the truncation) a clean run.
    assert!(
        o.status.code().is_some(),
        "killed by a signal: {:?} {err}",
        o.status
    );
    if !truncated {
        // A race lost, not a missing facility: the check did not run.
        eprintln!("SKIPPED: the replay finished before the file could be truncated");
        return;
    }
    match o.status.code() {
        Some(1) => assert!(
            err.contains("the file changed while being read: reading failed at byte offset"),
            "{err}"
        ),
        Some(0) => eprintln!("the truncation came after the last read: {err}"),
        c => panic!("exit {c:?}: {err}"),
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn disk_full_report_dir() {
    if !is_root() {
        return skip("mounting a small tmpfs needs root");
    }
    let d = scratch("diskfull");
    let b = d.join("bundle");
    let mnt = d.join("small");
    std::fs::create_dir(&mnt).unwrap();
    let before = tree(&b);
    // 64 KB: room for a few report files, not for all.
    let script = format!(
        "mount -t tmpfs -o size=64k tmpfs '{m}' && \
         '{bin}' analyze '{b}' --out '{m}/r' --quiet --threads 2; echo \"exit=$?\"; \
         ls -A '{m}'; ls -A '{m}/r' 2>/dev/null | sed 's/^/r: /'",
        m = mnt.display(),
        b = b.display(),
        bin = env!("CARGO_BIN_EXE_procflow")
    );
    let Ok(o) = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
    else {
        return skip("unshare is not available");
    };
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    if err.contains("unshare failed") || err.contains("mount:") {
        return skip(&format!("cannot mount a tmpfs: {err}"));
    }
    assert!(out.contains("exit=2"), "{out}{err}");
    assert!(err.contains("No space left on device"), "{err}");
    // Nothing that looks like a report: no report directory at all.
    assert!(!out.contains("r: "), "{out}");
    assert!(!out.lines().any(|l| l == "r"), "{out}");
    assert_eq!(tree(&b), before);
    let _ = std::fs::remove_dir_all(&d);
}

// Regression tests of the smaller items: each names what used to go
// unsaid.

#[test]
fn fifo_symlink_and_directory_captures_are_named() {
    let d = scratch("nonregular");
    let b = d.join("bundle");
    let fifo = std::ffi::CString::new(b.join("capture-fifo.pcap").to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    std::os::unix::fs::symlink(b.join(SAMPLE_CAPTURE), b.join("capture-link.pcap")).unwrap();
    std::fs::create_dir(b.join("capture-dir.pcap")).unwrap();
    let (code, out, _) = verify(&b);
    assert_eq!(code, Some(1), "{out}");
    for kind in [
        "capture-fifo.pcap is a FIFO",
        "capture-link.pcap is a symbolic link",
        "capture-dir.pcap is a directory",
    ] {
        assert!(
            out.contains(&format!(
                "not-a-regular-file: {kind}; it is not read as part of the bundle"
            )),
            "{out}"
        );
    }
    // The FIFO is never opened (it would block).
    let t = Instant::now();
    let (code, _, err) = analyze(&b, &d.join("out"), &[]);
    assert!(t.elapsed() < Duration::from_secs(30));
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("not-a-regular-file: capture-fifo.pcap is a FIFO"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn clk_tck_zero_is_said_and_leaves_start_times_empty() {
    let d = scratch("clktck");
    let b = d.join("bundle");
    let mut m: serde_json::Value = json(&b.join("manifest.json"));
    m["host"]["clk_tck"] = 0.into();
    std::fs::write(
        b.join("manifest.json"),
        serde_json::to_vec_pretty(&m).unwrap(),
    )
    .unwrap();
    resum(&b);
    let (code, _, err) = analyze(&b, &d.join("out"), &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("host.clk_tck is 0: process start times"),
        "{err}"
    );
    let mut r = csv::Reader::from_path(d.join("out/connections.csv")).unwrap();
    let h = r.headers().unwrap().clone();
    let start = h.iter().position(|c| c == "process_start").unwrap();
    let pid = h.iter().position(|c| c == "pid").unwrap();
    let mut owned = 0;
    for rec in r.records() {
        let rec = rec.unwrap();
        if !rec[pid].is_empty() {
            owned += 1;
            assert_eq!(&rec[start], "", "{rec:?}");
        }
    }
    assert!(owned > 0);
    let _ = std::fs::remove_dir_all(&d);
}

/// Rewrites the sample archive through `edit(name, data) -> Option<data>`
/// (`None` drops the member); keeps the trailer.
fn rewrite_archive(b: &Path, mut edit: impl FnMut(&str, Vec<u8>) -> Option<Vec<u8>>) {
    let tar_path = b.join("snapshots-000001.tar");
    let mut ar = tar::Archive::new(std::fs::File::open(&tar_path).unwrap());
    let mut out = tar::Builder::new(Vec::new());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        let Some(data) = edit(&name, data) else {
            continue;
        };
        let mut h = e.header().clone();
        h.set_size(data.len() as u64);
        h.set_cksum();
        out.append_data(&mut h, &name, data.as_slice()).unwrap();
    }
    std::fs::write(&tar_path, out.into_inner().unwrap()).unwrap();
}

#[test]
fn owner_without_process_record_is_said() {
    let d = scratch("norecord");
    let b = d.join("bundle");
    rewrite_archive(&b, |name, data| {
        if !name.ends_with("procs.jsonl") {
            return Some(data);
        }
        let text = String::from_utf8(data).unwrap();
        let kept: String = text
            .lines()
            .filter(|l| !l.starts_with("{\"pid\":65,"))
            .map(|l| format!("{l}\n"))
            .collect();
        Some(kept.into_bytes())
    });
    resum(&b);
    let (code, _, err) = analyze(&b, &d.join("out"), &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("1 owner pid(s) have no process record in the bundle (no comm, exe or command line): 65"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn duplicate_archive_makes_one_warning() {
    let d = scratch("duplicate");
    let b = d.join("bundle");
    std::fs::copy(
        b.join("snapshots-000001.tar"),
        b.join("snapshots-000002.tar"),
    )
    .unwrap();
    let (code, _, err) = analyze(&b, &d.join("out"), &[]);
    assert_eq!(code, Some(3), "{err}");
    let warnings: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("snapshots-000002.tar:") && l.starts_with("procflow: warning"))
        .collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0]
            .contains("85 snapshots (1 to 85) do not come after snapshot 85 already applied"),
        "{err}"
    );
    // The copy is not in the manifest nor in SHA256SUMS.
    assert!(
        err.contains("not-in-manifest: snapshots-000002.tar"),
        "{err}"
    );
    assert!(err.contains("not-listed: snapshots-000002.tar"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

/// Offsets of the header and the data end of every member.
fn members(tar_path: &Path) -> Vec<(String, u64, u64)> {
    let mut ar = tar::Archive::new(std::fs::File::open(tar_path).unwrap());
    ar.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            (
                name,
                e.raw_header_position(),
                e.raw_file_position() + e.size(),
            )
        })
        .collect()
}

#[test]
fn tar_cut_inside_the_last_members_padding() {
    let d = scratch("padding");
    let b = d.join("bundle");
    let tar_path = b.join("snapshots-000001.tar");
    let m = members(&tar_path);
    let (_, _, data_end) = m.last().unwrap().clone();
    assert!(data_end % 512 != 0, "the last member fills its block");
    let bytes = std::fs::read(&tar_path).unwrap();
    std::fs::write(&tar_path, &bytes[..data_end as usize + 1]).unwrap();
    let (code, out, _) = verify(&b);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("archive-cut: snapshots-000001.tar is cut at byte offset"),
        "{out}"
    );
    assert!(
        out.contains("ends inside the padding of its last member"),
        "{out}"
    );
    let (code, out, err) = analyze(&b, &d.join("out"), &[]);
    assert_eq!(code, Some(3), "{err}");
    // Its data is whole: every snapshot is read.
    assert!(out.contains("85 snapshots"), "{out}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn one_bad_header_mid_archive_keeps_later_snapshots() {
    let d = scratch("badheader");
    let b = d.join("bundle");
    let tar_path = b.join("snapshots-000001.tar");
    let m = members(&tar_path);
    let (name, at, _) = m
        .iter()
        .find(|(n, _, _)| n.starts_with("snap/00000040/"))
        .unwrap()
        .clone();
    let mut bytes = std::fs::read(&tar_path).unwrap();
    bytes[at as usize + 3] ^= 0x20;
    std::fs::write(&tar_path, &bytes).unwrap();
    resum(&b);
    let (code, out, err) = analyze(&b, &d.join("out"), &[]);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains(&format!(
            "snapshots-000001.tar: damaged at byte offset {at}"
        )),
        "{name}: {err}"
    );
    // Snapshot 40 is lost, the 45 after it are kept.
    assert!(out.contains("84 snapshots"), "{out}");
    let summary: serde_json::Value = json(&d.join("out/summary.json"));
    assert_eq!(summary["time_ranges"]["last_snapshot_seq"], 85);
    let _ = std::fs::remove_dir_all(&d);
}

/// A real recorder killed with SIGKILL: `verify` says so.
#[test]
fn killed_recorder_for_real() {
    let snap = Path::new(env!("CARGO_BIN_EXE_procflow")).with_file_name("procflow-snap");
    if !snap.exists() {
        return skip("procflow-snap is not built (cargo test --workspace builds it)");
    }
    let d = std::env::temp_dir().join(format!("pe-attack-{}-realkill", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let b = d.join("bundle");
    let mut child = Command::new(&snap)
        .args(["record", "--interval", "100ms", "--out"])
        .arg(&b)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while std::fs::metadata(b.join("snapshots-000001.tar")).map_or(true, |m| m.len() < 4096) {
        assert!(t.elapsed() < Duration::from_secs(20), "no snapshot written");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    let (code, out, _) = verify(&b);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("recorder-status: recorder status is \"recording\""),
        "{out}"
    );
    assert!(out.contains("sha256sums-missing"), "{out}");
    assert!(
        out.contains("archive-not-closed: snapshots-000001.tar")
            || out.contains("archive-cut: snapshots-000001.tar"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

/// File names need not be UTF-8 on the recorded host: they are read, named
/// with their bytes visible on the terminal, and written lossily to JSON
/// (this panicked in the JSON run report).
#[test]
fn non_utf8_file_names_do_not_panic() {
    use std::os::unix::ffi::OsStrExt;
    let d = scratch("nonutf8");
    let b = d.join("bundle");
    let odd = std::ffi::OsStr::from_bytes(b"capture-\xff\xfe.pcap");
    std::fs::rename(b.join(SAMPLE_CAPTURE), b.join(odd)).unwrap();
    let (code, out, err) = analyze(&b, &d.join("out"), &[]);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("not-listed: capture-\\xff\\xfe.pcap is in the bundle"),
        "{err}"
    );
    assert!(out.contains("85 snapshots"), "{out}");
    let summary: serde_json::Value = json(&d.join("out/summary.json"));
    assert_eq!(
        summary["diagnostics"]["capture"]["files"][0]["packets"],
        1422
    );
    let (code, _, err) = run(procflow()
        .arg("flows")
        .arg(b.join(odd))
        .arg("--json")
        .arg(d.join("f.json"))
        .arg("--out")
        .arg(d.join("f.csv")));
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = json(&d.join("f.json"));
    assert!(v["files"][0]["path"].as_str().unwrap().contains('\u{fffd}'));
    let _ = std::fs::remove_dir_all(&d);
}

/// Bundle files that are links to devices or FIFOs are never read: a
/// manifest linked to /dev/zero is refused at once, an archive that is a
/// FIFO is skipped with a warning (it would block).
#[test]
fn device_and_fifo_bundle_files_are_not_read() {
    let d = scratch("devices");
    let b = d.join("bundle");
    std::fs::rename(b.join("manifest.json"), d.join("manifest.json")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", b.join("manifest.json")).unwrap();
    let t = Instant::now();
    let (code, _, err) = analyze(&b, &d.join("out"), &[]);
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not a regular file"), "{err}");
    let (code, _, err) = verify(&b);
    assert_eq!(code, Some(2), "{err}");
    std::fs::remove_file(b.join("manifest.json")).unwrap();
    std::fs::rename(d.join("manifest.json"), b.join("manifest.json")).unwrap();
    // The archive the manifest names, replaced by a FIFO.
    let tar = b.join("snapshots-000001.tar");
    std::fs::rename(&tar, d.join("saved.tar")).unwrap();
    let fifo = std::ffi::CString::new(tar.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let t = Instant::now();
    let (code, _, err) = analyze(&b, &d.join("out2"), &[]);
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("snapshots-000001.tar: not a regular file (a link, FIFO or device); not read"),
        "{err}"
    );
    assert!(err.contains("no complete snapshot"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

/// The bundle digest `procflow verify` prints (`sha256:HEX`).
fn printed_digest(out: &str) -> String {
    let at = out.find("bundle digest: sha256:").expect("a digest line") + 22;
    out[at..at + 64].to_string()
}

/// A capture cut short (as a disk filling up leaves it) with SHA256SUMS
/// written again over it: the hashes match, the capture's content does
/// not hold, and the check fails on it, not merely warns.
#[test]
fn custody_cut_capture_with_rehashed_sums_fails() {
    let d = scratch("cutcap");
    let b = d.join("bundle");
    let cap = std::fs::read(b.join(SAMPLE_CAPTURE)).unwrap();
    // Cut in the middle of a record.
    let cut = cap.len() / 2 + 7;
    std::fs::write(b.join(SAMPLE_CAPTURE), &cap[..cut]).unwrap();
    resum(&b);
    let (code, out, _) = verify(&b);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "integrity FAIL        capture-cut: {SAMPLE_CAPTURE} is damaged at byte offset"
        )),
        "{out}"
    );
    assert!(out.contains("(truncated-record)"), "{out}");
    let (code, _, err) = analyze(&b, &d.join("out"), &[]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("capture-cut:"), "{err}");
    let summary = json(&d.join("out/summary.json"));
    assert_eq!(summary["evidence"]["ok"], false);
    // A bad tar (a byte of a header changed) with sums written again: a
    // failed check too.
    let d2 = scratch("badtar");
    let b2 = d2.join("bundle");
    let tar_path = b2.join("snapshots-000001.tar");
    let mut bytes = std::fs::read(&tar_path).unwrap();
    let (_, at, _) = members(&tar_path)[5].clone();
    bytes[at as usize + 100] ^= 0x55;
    std::fs::write(&tar_path, &bytes).unwrap();
    resum(&b2);
    let (code, out, _) = verify(&b2);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("integrity FAIL        archive-cut"), "{out}");
    let _ = std::fs::remove_dir_all(&d);
    let _ = std::fs::remove_dir_all(&d2);
}

/// A forged bundle: addresses rewritten in the capture, the manifest
/// edited, SHA256SUMS computed again. Every hash matches; only the digest
/// noted at collection tells, and `--expect` fails on it.
#[test]
fn custody_expect_catches_a_forged_bundle() {
    let d = scratch("forged");
    let b = d.join("bundle");
    let (code, out, _) = verify(&b);
    assert_eq!(code, Some(0), "{out}");
    let noted = printed_digest(&out);
    // The digest is SHA-256 of SHA256SUMS.
    assert_eq!(
        noted,
        sha_hex(&std::fs::read(b.join("SHA256SUMS")).unwrap())
    );
    let (code, out, _) = run(procflow()
        .arg("verify")
        .arg("--expect")
        .arg(format!("sha256:{noted}"))
        .arg(&b));
    assert_eq!(code, Some(0), "{out}");
    // Forge: rewrite 10.203.0.2 as 10.203.0.9 in the capture (checksums
    // are not checked by anyone), edit the manifest, resum.
    let mut cap = std::fs::read(b.join(SAMPLE_CAPTURE)).unwrap();
    let from = [10u8, 203, 0, 2];
    let mut n = 0;
    for i in 0..cap.len().saturating_sub(4) {
        if cap[i..i + 4] == from {
            cap[i + 3] = 9;
            n += 1;
        }
    }
    assert!(n > 0, "the sample talks to 10.203.0.2");
    std::fs::write(b.join(SAMPLE_CAPTURE), &cap).unwrap();
    let m = std::fs::read_to_string(b.join("manifest.json")).unwrap();
    std::fs::write(
        b.join("manifest.json"),
        m.replace("\"complete\"", "\"complete\" "),
    )
    .unwrap();
    resum(&b);
    let (code, out, _) = verify(&b);
    assert_eq!(code, Some(0), "without --expect the forgery holds: {out}");
    assert_ne!(printed_digest(&out), noted);
    let (code, out, _) = run(procflow().arg("verify").arg("--expect").arg(&noted).arg(&b));
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "integrity FAIL        digest-mismatch: bundle digest {} is not the digest noted at collection, {noted}",
            printed_digest(&out)
        )),
        "{out}"
    );
    let (code, out, _) = run(procflow()
        .arg("verify")
        .arg("--json")
        .arg("--expect")
        .arg(&noted)
        .arg(&b));
    assert_eq!(code, Some(1), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["findings"][0]["check"], "digest-mismatch");
    assert_eq!(v["expected_digest"], noted.as_str());
    assert_ne!(v["digest"], noted.as_str());
    // A digest that is not one is a usage error.
    let (code, _, err) = run(procflow().arg("verify").arg("--expect").arg("abc").arg(&b));
    assert_eq!(code, Some(2), "{err}");
    // analyze prints the digest in its evidence block and records it.
    let now = printed_digest(&verify(&b).1);
    let (_, _, err) = analyze(&b, &d.join("out"), &[]);
    assert!(
        err.contains(&format!("procflow:   bundle digest: sha256:{now}")),
        "{err}"
    );
    let summary = json(&d.join("out/summary.json"));
    assert_eq!(
        summary["evidence"]["digest"],
        sha_hex(&std::fs::read(b.join("SHA256SUMS")).unwrap()).as_str()
    );
    let _ = std::fs::remove_dir_all(&d);
}

/// `verify --json` prints a JSON result also when the manifest cannot be
/// parsed: exit 2, `ok: false`, the error, and the digest.
#[test]
fn verify_json_on_unparseable_manifest() {
    let d = scratch("badmanifest");
    let b = d.join("bundle");
    std::fs::write(
        b.join("manifest.json"),
        b"{\"format\": \"procflow-bundle\", oops",
    )
    .unwrap();
    let (code, out, err) = run(procflow().arg("verify").arg("--json").arg(&b));
    assert_eq!(code, Some(2), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON on stdout");
    assert_eq!(v["ok"], false);
    assert!(
        v["error"].as_str().unwrap().contains("manifest.json"),
        "{out}"
    );
    assert_eq!(
        v["digest"],
        sha_hex(&std::fs::read(b.join("SHA256SUMS")).unwrap()).as_str()
    );
    assert!(err.contains("procflow: error:"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

/// The recorder binary next to `procflow`, or a skip (`cargo test
/// --workspace` builds it; under CI its absence fails).
fn snap_bin() -> Option<PathBuf> {
    let snap = Path::new(env!("CARGO_BIN_EXE_procflow")).with_file_name("procflow-snap");
    if snap.exists() {
        return Some(snap);
    }
    assert!(
        std::env::var("CI").is_err(),
        "procflow-snap is not built next to procflow"
    );
    skip("procflow-snap is not built (cargo test --workspace builds it)");
    None
}

/// Starts `procflow-snap record` into `b` with `extra` and waits for its
/// first snapshot.
fn start_recorder(snap: &Path, b: &Path, extra: &[&str]) -> std::process::Child {
    let child = Command::new(snap)
        .args([
            "record",
            "--interval",
            "100ms",
            "--sources",
            "poll",
            "--out",
        ])
        .arg(b)
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while std::fs::metadata(b.join("snapshots-000001.tar")).map_or(true, |m| m.len() < 4096) {
        assert!(t.elapsed() < Duration::from_secs(20), "no snapshot written");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    child
}

fn signal(child: &std::process::Child, sig: i32) {
    // SAFETY: kill(2) on the pid of a child not yet waited for.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

/// A real recording with `--custody-log`: the last line names the digest,
/// the log holds it with host, time, version and out dir, and `verify
/// --expect` with it holds.
#[test]
fn custody_log_of_a_real_recording() {
    let Some(snap) = snap_bin() else { return };
    let d = std::env::temp_dir().join(format!("pe-attack-{}-custodylog", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let b = d.join("bundle");
    let log = d.join("custody.log");
    let child = start_recorder(&snap, &b, &["--custody-log", log.to_str().unwrap()]);
    signal(&child, libc::SIGINT);
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let last = err.lines().last().unwrap();
    let digest = sha_hex(&std::fs::read(b.join("SHA256SUMS")).unwrap());
    assert!(
        last.starts_with(&format!("procflow-snap: bundle digest: sha256:{digest}")),
        "{err}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(v["digest"], format!("sha256:{digest}").as_str());
    assert_eq!(v["status"], "complete");
    assert_eq!(v["out"], b.to_str().unwrap());
    assert_eq!(v["tool"], "procflow-snap");
    assert!(!v["host"].as_str().unwrap().is_empty());
    assert!(v["time"].as_str().unwrap().ends_with('Z'));
    let (code, out, _) = run(procflow()
        .arg("verify")
        .arg("--expect")
        .arg(&digest)
        .arg(&b));
    assert_eq!(code, Some(0), "{out}");
    let _ = std::fs::remove_dir_all(&d);
}

/// Two signals (a forced stop) still end with a final line saying what
/// was kept, and exit 130. (SIGINT then SIGTERM, which the recorder counts
/// alike: two SIGINTs sent at once would merge into one pending signal.)
#[test]
fn forced_stop_prints_a_final_line() {
    let Some(snap) = snap_bin() else { return };
    let d = std::env::temp_dir().join(format!("pe-attack-{}-forced", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let b = d.join("bundle");
    let log = d.join("custody.log");
    let child = start_recorder(&snap, &b, &["--custody-log", log.to_str().unwrap()]);
    signal(&child, libc::SIGINT);
    signal(&child, libc::SIGTERM);
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with("procflow-snap: killed: forced stop (second signal):")
            && last.contains("no bundle digest"),
        "{err}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(v["status"], "killed");
    assert_eq!(v["digest"], serde_json::Value::Null);
    let _ = std::fs::remove_dir_all(&d);
}

/// report.html allows its one script by hash, not `'unsafe-inline'`: a
/// script a bundle smuggled into the page would not run.
#[test]
fn report_csp_allows_the_script_by_hash_only() {
    use base64::Engine;
    let d = scratch("csp");
    let (code, _, err) = analyze(&d.join("bundle"), &d.join("out"), &[]);
    assert!(matches!(code, Some(0 | 3)), "{err}");
    let html = std::fs::read_to_string(d.join("out/report.html")).unwrap();
    let at = html.find("Content-Security-Policy\" content=\"").unwrap() + 34;
    let csp = &html[at..at + html[at..].find('"').unwrap()];
    let script_src = csp
        .split(';')
        .map(str::trim)
        .find(|p| p.starts_with("script-src"))
        .unwrap();
    assert!(!script_src.contains("unsafe-inline"), "{csp}");
    // The hash is of the executable script's text.
    let open = "<script>";
    let start = html.find(open).unwrap() + open.len();
    let end = start + html[start..].find("</script>").unwrap();
    let hash = base64::engine::general_purpose::STANDARD
        .encode(sha2::Sha256::digest(&html.as_bytes()[start..end]));
    assert_eq!(script_src, format!("script-src 'sha256-{hash}'"), "{csp}");
    assert_eq!(html.matches(open).count(), 1, "one executable script");
    let _ = std::fs::remove_dir_all(&d);
}

/// Invisible Unicode in process names and paths: line and paragraph
/// separators (U+2028/2029), zero-width characters and tag characters are
/// escaped in CSV cells and on the terminal, like control characters.
#[test]
fn invisible_unicode_is_escaped_in_csv_and_on_the_terminal() {
    let d = scratch("invisible");
    let b = d.join("bundle");
    // JSON escapes in the member text: the archive holds the raw chars.
    let comm = "py\\u2028th\\u200bon\\udb40\\udc41";
    rewrite_archive(&b, |name, data| {
        if !name.ends_with("procs.jsonl") {
            return Some(data);
        }
        let text = String::from_utf8(data).unwrap();
        Some(
            text.replace("\"comm\":\"python3\"", &format!("\"comm\":\"{comm}\""))
                .replace(
                    "\"exe\":\"/root/.pyenv/versions/3.11.7/bin/python3.11\"",
                    "\"exe\":\"/usr/bin/\\u2029\\ufeffpython\"",
                )
                .into_bytes(),
        )
    });
    resum(&b);
    let o = procflow()
        .arg("analyze")
        .arg(&b)
        .arg("--out")
        .arg(d.join("out"))
        .args(["--threads", "2"])
        .output()
        .unwrap();
    let term = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let raw = ['\u{2028}', '\u{2029}', '\u{200b}', '\u{feff}', '\u{e0041}'];
    let check = |what: &str, s: &str| {
        for c in raw {
            assert!(!s.contains(c), "{what} holds a raw U+{:04X}", c as u32);
        }
    };
    check("the terminal", &term);
    // The summary table shortens the name; the exe column is whole.
    assert!(term.contains("py\\u{2028}th\\u{"), "{term}");
    assert!(term.contains("/usr/bin/\\u{2029}\\u{feff}python"), "{term}");
    for f in ["connections.csv", "processes.csv"] {
        let text = std::fs::read_to_string(d.join("out").join(f)).unwrap();
        check(f, &text);
        assert!(text.contains("py\\u{2028}th\\u{200b}on\\u{e0041}"), "{f}");
    }
    let text = std::fs::read_to_string(d.join("out/processes.csv")).unwrap();
    assert!(text.contains("/usr/bin/\\u{2029}\\u{feff}python"), "{text}");
    // JSON keeps the exact text.
    let jsonl = std::fs::read_to_string(d.join("out/connections.jsonl")).unwrap();
    assert!(
        jsonl.contains("py\u{2028}th\u{200b}on\u{e0041}"),
        "exact in JSON"
    );
    let _ = std::fs::remove_dir_all(&d);
}

/// Damage that used to end "all checks hold" with exit 0 now fails the
/// evidence check (exit 3 from analyze, 1 from verify where it can see
/// it): snapshots skipped for a bad meta.json or an out-of-order seq, a
/// realtime clock step of 292 years, drop counters that are no number.
#[test]
fn damage_that_exited_0_fails_the_evidence_check() {
    // A meta.json that is not JSON: the snapshot is skipped.
    let d = scratch("badmeta");
    let b = d.join("bundle");
    rewrite_archive(&b, |name, data| {
        Some(if name == "snap/00000010/meta.json" {
            b"{oops".to_vec()
        } else {
            data
        })
    });
    resum(&b);
    let (code, _, err) = analyze(&b, &d.join("out"), &[]);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("snapshots-skipped: 1 complete snapshot(s) could not be applied"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&d);

    // Out of order: snapshot 20's meta says seq 5.
    let d = scratch("order");
    let b = d.join("bundle");
    rewrite_archive(&b, |name, data| {
        if name != "snap/00000020/meta.json" {
            return Some(data);
        }
        let mut v: serde_json::Value = serde_json::from_slice(&data).unwrap();
        v["seq"] = 5.into();
        Some(serde_json::to_vec(&v).unwrap())
    });
    resum(&b);
    let (code, _, err) = analyze(&b, &d.join("out"), &[]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("snapshots-skipped:"), "{err}");
    let _ = std::fs::remove_dir_all(&d);

    // A realtime clock step of 292 years between two snapshots.
    let d = scratch("clockstep");
    let b = d.join("bundle");
    rewrite_archive(&b, |name, data| {
        let seq: u64 = match name
            .strip_prefix("snap/")
            .and_then(|r| r.strip_suffix("/meta.json"))
        {
            Some(n) => n.parse().unwrap(),
            None => return Some(data),
        };
        if seq != 50 {
            return Some(data);
        }
        // One snapshot 292 years back (and the next one back again).
        let mut v: serde_json::Value = serde_json::from_slice(&data).unwrap();
        for k in ["before", "after"] {
            let r = v[k]["realtime_ns"].as_i64().unwrap();
            v[k]["realtime_ns"] = (r - 9_200_000_000_000_000_000).into();
        }
        Some(serde_json::to_vec(&v).unwrap())
    });
    resum(&b);
    let (code, _, err) = analyze(&b, &d.join("out"), &[]);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("clock-step: the realtime clock stepped by"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&d);

    // Drop counters that are no number: unknown, not zero.
    let d = scratch("counters");
    let b = d.join("bundle");
    let log = std::fs::read_to_string(b.join("tcpdump.log")).unwrap();
    std::fs::write(
        b.join("tcpdump.log"),
        log.replace(
            "0 packets dropped by kernel",
            "-5 packets dropped by kernel",
        ),
    )
    .unwrap();
    resum(&b);
    let (code, out, _) = verify(&b);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("capture-counters-unreadable: 1 counter line(s) of tcpdump.log hold no count, first line 4"),
        "{out}"
    );
    let (code, _, err) = analyze(&b, &d.join("out"), &[]);
    assert_eq!(code, Some(3), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

/// Two damaged tar headers (of the first member and of snapshot 40's):
/// each is skipped with the snapshot it belongs to and reading resumes
/// after it, as docs/archive-format.md says; the second is not taken for
/// the end of the archive.
#[test]
fn two_bad_tar_headers_keep_the_rest() {
    let d = scratch("twoheaders");
    let b = d.join("bundle");
    let tar_path = b.join("snapshots-000001.tar");
    let m = members(&tar_path);
    let first = m[0].1;
    let (_, at40, _) = m
        .iter()
        .find(|(n, _, _)| n.starts_with("snap/00000040/"))
        .unwrap()
        .clone();
    let mut bytes = std::fs::read(&tar_path).unwrap();
    bytes[first as usize + 3] ^= 0x20;
    bytes[at40 as usize + 3] ^= 0x20;
    std::fs::write(&tar_path, &bytes).unwrap();
    resum(&b);
    let (code, out, err) = analyze(&b, &d.join("out"), &[]);
    assert_eq!(code, Some(3), "{err}");
    // Snapshots 1 and 40 are lost, the 83 others kept (the closing line,
    // on standard output).
    assert!(out.contains("83 snapshots"), "{out}\n{err}");
    assert!(
        err.contains(&format!("damaged at byte offset {first}")),
        "{err}"
    );
    let summary: serde_json::Value = json(&d.join("out/summary.json"));
    assert_eq!(summary["time_ranges"]["last_snapshot_seq"], 85);
    let (code, out, _) = verify(&b);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("2 damaged part(s) skipped"), "{out}");
    let _ = std::fs::remove_dir_all(&d);
}

/// Runs `cmd` and returns (exit code, stderr, peak RSS in bytes), the RSS
/// of that child alone (wait4, which also reaps it).
#[allow(clippy::zombie_processes)]
fn run_measured(cmd: &mut Command) -> (Option<i32>, String, u64) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on the pid of a child not yet waited for.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut ru) };
    assert!(pid > 0, "wait4 failed");
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    (code, err, u64::try_from(ru.ru_maxrss).unwrap_or(0) * 1024)
}

/// 20 MB of unusable lines in a member (fds, procs.jsonl, a table): they
/// are counted with the first ones kept, and the analysis stays within
/// 256 MB of memory (it took 2.2 GB for the fds case).
#[test]
fn junk_lines_are_counted_in_bounded_memory() {
    const LIMIT: u64 = 256 << 20;
    for member in ["snap/00000001/fds", "snap/00000001/procs.jsonl"] {
        let d = scratch(&format!("junk-{}", member.replace('/', "-")));
        let b = d.join("bundle");
        let junk = b"x\n".repeat(10 << 20);
        rewrite_archive(&b, |name, mut data| {
            if name == member {
                data.extend_from_slice(&junk);
            }
            Some(data)
        });
        resum(&b);
        let (code, err, rss) = run_measured(
            procflow()
                .arg("analyze")
                .arg(&b)
                .arg("--out")
                .arg(d.join("out"))
                .args(["--quiet", "--threads", "2"]),
        );
        eprintln!(
            "{member}: 20 MB of junk lines, analyze peak RSS {} MB",
            rss >> 20
        );
        assert!(matches!(code, Some(0 | 3)), "{err}");
        assert!(rss <= LIMIT, "{member}: {} MB", rss >> 20);
        // Every junk line counted.
        let summary = json(&d.join("out/summary.json"));
        let text = summary.to_string();
        assert!(text.contains("10485"), "bad lines not counted: {err}");
        // `procflow sockets` reads the same member within bounds too.
        let (code, err, rss) = run_measured(procflow().arg("sockets").arg(&b));
        eprintln!("{member}: sockets peak RSS {} MB", rss >> 20);
        assert!(matches!(code, Some(0 | 1 | 3)), "{err}");
        assert!(rss <= LIMIT, "sockets {member}: {} MB", rss >> 20);
        let _ = std::fs::remove_dir_all(&d);
    }
}

/// A 1 MB command line (Linux allows about 2 MB) on the two processes that
/// own 90 of the re-recorded sample's flows: each report row repeats at
/// most 4 KB of it with the SHA-256 of the whole line, and `processes.csv`
/// holds it whole once per process, so the reports stay near the
/// bundle's size (they were 303 MB for a 4 MB bundle).
#[test]
fn long_command_lines_are_stored_once() {
    let d = std::env::temp_dir().join(format!("pe-attack-{}-cmdline", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    let b = d.join("bundle");
    std::fs::create_dir_all(&b).unwrap();
    for e in std::fs::read_dir(root().join("testdata/sample-bundle")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), b.join(e.file_name())).unwrap();
    }
    let arg = "A".repeat(1 << 20);
    let long = vec!["python3".to_string(), "-c".to_string(), arg.clone()];
    let whole = format!("python3 -c {arg}");
    let mut records = 0;
    rewrite_archive(&b, |name, data| {
        if !name.ends_with("procs.jsonl") {
            return Some(data);
        }
        let mut text = String::new();
        for line in String::from_utf8(data).unwrap().lines() {
            let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
            if matches!(v["pid"].as_u64(), Some(127 | 131)) {
                v["cmdline"] = serde_json::json!(long);
                records += 1;
            }
            text.push_str(&v.to_string());
            text.push('\n');
        }
        Some(text.into_bytes())
    });
    assert!(records >= 2, "the sample's processes 127 and 131 are gone");
    resum(&b);
    let bundle_size: u64 = std::fs::read_dir(&b)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let out = d.join("out");
    let (code, _, err) = analyze(&b, &out, &[]);
    assert_eq!(code, Some(0), "{err}");
    let reports: u64 = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    eprintln!(
        "bundle {} KB, reports {} KB",
        bundle_size >> 10,
        reports >> 10
    );
    assert!(reports < 10 << 20, "reports of {reports} bytes");

    let sha = sha_hex(whole.as_bytes());
    // connections.csv: the cut line and the hash of the whole one.
    let mut rows = 0;
    let mut csv = csv::Reader::from_path(out.join("connections.csv")).unwrap();
    let head = csv.headers().unwrap().clone();
    let col = |n: &str| head.iter().position(|h| h == n).unwrap();
    let (pid, cmdline, hash) = (col("pid"), col("cmdline"), col("cmdline_sha256"));
    for r in csv.records() {
        let r = r.unwrap();
        if matches!(&r[pid], "127" | "131") {
            rows += 1;
            assert!(r[cmdline].len() <= 4096 + 3, "{}", r[cmdline].len());
            assert!(r[cmdline].starts_with("python3 -c AAAA") && r[cmdline].ends_with('…'));
            assert_eq!(&r[hash], sha);
        } else {
            assert_eq!(&r[hash], "", "a whole line has no hash");
        }
    }
    assert!(rows >= 50, "{rows} rows of the two processes");
    // connections.jsonl: the same, with the number of arguments.
    let jsonl = std::fs::read_to_string(out.join("connections.jsonl")).unwrap();
    let cut: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| matches!(v["process.pid"].as_u64(), Some(127 | 131)))
        .collect();
    assert_eq!(cut.len(), rows);
    for v in &cut {
        assert_eq!(v["procflow.command_line_sha256"], sha.as_str());
        assert_eq!(v["process.args_count"], 3);
        assert!(v["process.command_line"].as_str().unwrap().len() <= 4096 + 3);
    }
    // processes.csv: the whole line, once per process, matching the hash.
    let mut csv = csv::Reader::from_path(out.join("processes.csv")).unwrap();
    let head = csv.headers().unwrap().clone();
    let col = |n: &str| head.iter().position(|h| h == n).unwrap();
    let (pid, cmdline) = (col("pid"), col("cmdline"));
    let mut whole_rows = 0;
    for r in csv.records() {
        let r = r.unwrap();
        if matches!(&r[pid], "127" | "131") {
            whole_rows += 1;
            assert_eq!(sha_hex(r[cmdline].as_bytes()), sha);
        }
    }
    assert_eq!(whole_rows, 2);
    let _ = std::fs::remove_dir_all(&d);
}

/// Starts `procflow flows /dev/stdin` with `stdin` as its input.
fn flows_from(stdin: Stdio) -> std::process::Child {
    procflow()
        .args(["flows", "/dev/stdin", "--threads", "2"])
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// An I/O error in the middle of a capture read as a stream (standard
/// input a pseudo-terminal whose other side hung up: `read` fails with
/// EIO, no root needed) keeps
/// the packets before it, as a copy cut at the same byte does, and says
/// where reading failed (it was "0 flows").
#[test]
fn io_error_mid_stream_keeps_the_readable_start() {
    use std::os::fd::{FromRawFd, OwnedFd};
    let cap = std::fs::read(root().join(SAMPLE).join(SAMPLE_CAPTURE)).unwrap();
    let cut = 500_000;
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty with valid out-pointers and no name, termios or size.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if r != 0 {
        skip("no pseudo-terminal could be opened (openpty)");
        return;
    }
    // SAFETY: two descriptors openpty just returned, owned from here on;
    // raw mode on the terminal side passes bytes through unchanged, and
    // close-on-exec keeps the terminal side out of the child.
    let (master, slave) = unsafe {
        for fd in [master, slave] {
            let mut t: libc::termios = std::mem::zeroed();
            assert_eq!(libc::tcgetattr(fd, &mut t), 0);
            libc::cfmakeraw(&mut t);
            assert_eq!(libc::tcsetattr(fd, libc::TCSANOW, &t), 0);
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
        (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave))
    };
    let child = flows_from(Stdio::from(master));
    let head = cap[..cut].to_vec();
    let writer = std::thread::spawn(move || {
        let mut t = std::fs::File::from(slave);
        t.write_all(&head).unwrap();
        // Hang up: the reader gets what is buffered, then EIO.
        drop(t);
    });
    let o = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    let d = scratch("eio");
    let cut_copy = d.join("cut.pcap");
    std::fs::write(&cut_copy, &cap[..cut]).unwrap();
    let (_, from_copy, _) = run(procflow().arg("flows").arg(&cut_copy));
    let flows = String::from_utf8_lossy(&o.stdout);
    assert!(from_copy.lines().count() > 10, "{from_copy}");
    assert_eq!(flows, from_copy, "{err}");
    assert!(
        err.contains(&format!(
            "the stream ended at byte offset {cut}: reading failed:"
        )),
        "{err}"
    );
    assert_ne!(o.status.code(), Some(0), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

/// `flows` reading an endless pipe stops at once on SIGTERM: the stream is
/// copied only a bounded way ahead of the reader and what was read is
/// given back, so the process holds no gigabytes of copy for the kernel to
/// free on its way out (it took 0.25 s after one second of input, 0.5 s
/// after three, growing with the time).
#[test]
fn endless_pipe_stops_promptly_on_sigterm() {
    let cap = std::fs::read(root().join(SAMPLE).join(SAMPLE_CAPTURE)).unwrap();
    let mut child = flows_from(Stdio::piped());
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let body = cap[24..].repeat(8);
        if stdin.write_all(&cap).is_err() {
            return;
        }
        while stdin.write_all(&body).is_ok() {}
    });
    // Two seconds of input (gigabytes), watching the copy's disk use.
    let mut most_blocks = 0u64;
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
        let Ok(fds) = std::fs::read_dir(format!("/proc/{}/fd", child.id())) else {
            continue;
        };
        for fd in fds.flatten() {
            let deleted = std::fs::read_link(fd.path())
                .is_ok_and(|l| l.to_string_lossy().ends_with("(deleted)"));
            if let (true, Ok(m)) = (deleted, std::fs::metadata(fd.path())) {
                most_blocks = most_blocks.max(std::os::unix::fs::MetadataExt::blocks(&m));
            }
        }
    }
    let t = Instant::now();
    signal(&child, libc::SIGTERM);
    let status = child.wait().unwrap();
    let took = t.elapsed();
    writer.join().unwrap();
    eprintln!(
        "stream copy at most {} MB on disk; exit {:.3} s after SIGTERM",
        (most_blocks * 512) >> 20,
        took.as_secs_f64()
    );
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGTERM)
    );
    assert!(most_blocks > 0, "no copy of the stream seen");
    assert!(most_blocks * 512 <= 256 << 20, "{} blocks", most_blocks);
    assert!(took < Duration::from_millis(200), "{took:?}");
}
