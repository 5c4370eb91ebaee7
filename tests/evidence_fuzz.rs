//! Fuzz-style robustness of the real binary on stable Rust: the sample
//! bundle and its capture, mutated at random (bit flips, cuts, inserted
//! blocks, broken manifests and checksum lists), run through `procflow
//! analyze`, `verify` and `flows`. Every run must end by itself within 10 s
//! with a documented exit code (0-3, never a panic or a signal), and no run
//! may use more than 256 MB of memory.
//!
//! The mutations are drawn from a fixed seed (`PROCFLOW_FUZZ_SEED` to
//! change it; it is printed on failure), and the whole test stops drawing
//! new cases after `PROCFLOW_FUZZ_SECONDS` (default 30) so CI time stays
//! bounded on any machine.

// getrusage for the children's peak memory.
#![allow(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CAPTURE: &str = "capture-20261128T165616Z.pcap";
const ARCHIVE: &str = "snapshots-000001.tar";
const PER_RUN: Duration = Duration::from_secs(10);
const MAX_RSS_KB: i64 = 256 * 1024;

/// xorshift64*: small, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// The sample bundle of periodic reads kept as a fixture: its capture and
/// archive names are the constants above.
fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/compat/sample-bundle-v1-poll")
}

fn copy_sample(to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(sample()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// One random change to `bytes`; returns what it did.
fn mutate_bytes(rng: &mut Rng, bytes: &mut Vec<u8>) -> String {
    let len = bytes.len().max(1);
    match rng.below(6) {
        0 => {
            let n = 1 + rng.below(16);
            for _ in 0..n {
                let i = rng.below(bytes.len());
                if let Some(b) = bytes.get_mut(i) {
                    *b ^= 1 << rng.below(8);
                }
            }
            format!("{n} bit flips")
        }
        1 => {
            let at = rng.below(len);
            bytes.truncate(at);
            format!("cut at {at}")
        }
        2 => {
            let at = rng.below(len) / 512 * 512;
            let block: Vec<u8> = (0..512).map(|_| rng.next() as u8).collect();
            let at = at.min(bytes.len());
            bytes.splice(at..at, block);
            format!("random block inserted at {at}")
        }
        3 => {
            // A length-like field set huge: 4 bytes of 0xff somewhere.
            let i = rng.below(len.saturating_sub(4));
            for b in bytes.iter_mut().skip(i).take(4) {
                *b = 0xff;
            }
            format!("0xffffffff at {i}")
        }
        4 => {
            let i = rng.below(len);
            let n = 1 + rng.below(4096);
            let end = (i + n).min(bytes.len());
            if i < end {
                bytes.drain(i..end);
            }
            format!("{n} bytes removed at {i}")
        }
        _ => {
            let i = rng.below(len);
            let n = rng.below(2048);
            let end = (i + n).min(bytes.len());
            for b in bytes.iter_mut().take(end).skip(i) {
                *b = 0;
            }
            format!("{n} bytes zeroed at {i}")
        }
    }
}

/// One random change to the bundle in `dir`; returns what it did.
fn mutate_bundle(rng: &mut Rng, dir: &Path) -> String {
    match rng.below(6) {
        5 => {
            // A capture name of random bytes (no `/`, no NUL): not UTF-8,
            // escape sequences, newlines.
            use std::os::unix::ffi::OsStrExt;
            let mut name = b"capture-".to_vec();
            for _ in 0..1 + rng.below(12) {
                let b = (rng.next() % 255) as u8 + 1;
                name.push(if b == b'/' { b'_' } else { b });
            }
            let name = std::ffi::OsStr::from_bytes(&name).to_os_string();
            if dir.join(CAPTURE).exists() {
                let _ = std::fs::rename(dir.join(CAPTURE), dir.join(&name));
            }
            format!("capture renamed to {name:?}")
        }
        0 | 1 => {
            let mut b = std::fs::read(dir.join(ARCHIVE)).unwrap();
            let what = mutate_bytes(rng, &mut b);
            std::fs::write(dir.join(ARCHIVE), b).unwrap();
            format!("archive: {what}")
        }
        2 => {
            let Ok(mut b) = std::fs::read(dir.join(CAPTURE)) else {
                return "capture already renamed".into();
            };
            let what = mutate_bytes(rng, &mut b);
            std::fs::write(dir.join(CAPTURE), b).unwrap();
            format!("capture: {what}")
        }
        3 => {
            let text = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
            let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let what = match rng.below(6) {
                0 => {
                    v["host"]["clk_tck"] = 0.into();
                    "clk_tck 0"
                }
                1 => {
                    v["status"] = "\u{1b}[2Jkilled".into();
                    "status with escapes"
                }
                2 => {
                    v["archives"] =
                        serde_json::json!(["../../../etc/passwd", "snapshots-999999.tar"]);
                    "archives outside the bundle"
                }
                3 => {
                    v["host"]["byte_order"] = "middle".into();
                    "byte order"
                }
                4 => {
                    v["capture_files"] = serde_json::json!([]);
                    "no capture files named"
                }
                _ => {
                    v["host"]["btime"] = i64::MAX.into();
                    "btime i64::MAX"
                }
            };
            std::fs::write(dir.join("manifest.json"), v.to_string()).unwrap();
            format!("manifest: {what}")
        }
        _ => {
            let mut b = std::fs::read(dir.join("SHA256SUMS")).unwrap();
            let what = mutate_bytes(rng, &mut b);
            std::fs::write(dir.join("SHA256SUMS"), b).unwrap();
            format!("SHA256SUMS: {what}")
        }
    }
}

/// Runs the binary with `args`; fails unless it ends within [`PER_RUN`]
/// with a documented exit code and without a panic message.
fn run_bounded(args: &[&std::ffi::OsStr], case: &str) {
    let t = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_procflow"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t.elapsed() > PER_RUN {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{case}: {args:?} still running after {PER_RUN:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let err = reader.join().unwrap();
    assert!(
        matches!(status.code(), Some(0..=3)),
        "{case}: {args:?} ended with {status:?}:\n{err}"
    );
    assert!(
        !err.contains("panicked"),
        "{case}: {args:?} panicked:\n{err}"
    );
}

fn max_child_rss_kb() -> i64 {
    // SAFETY: getrusage fills the struct it is given.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut u);
        u.ru_maxrss
    }
}

#[test]
fn mutated_bundles_and_captures_never_crash_or_run_away() {
    let seed: u64 = std::env::var("PROCFLOW_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x005e_ed0f_e1d3);
    let budget = Duration::from_secs(
        std::env::var("PROCFLOW_FUZZ_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(30),
    );
    let mut rng = Rng(seed | 1);
    let base = std::env::temp_dir().join(format!("pe-fuzz-{}", std::process::id()));
    let t0 = Instant::now();
    let mut cases = 0;
    while t0.elapsed() < budget {
        cases += 1;
        let dir = base.join("bundle");
        copy_sample(&dir);
        let mut what = Vec::new();
        for _ in 0..1 + rng.below(3) {
            what.push(mutate_bundle(&mut rng, &dir));
        }
        let case = format!("seed {seed} case {cases}: {}", what.join("; "));
        let out = base.join(format!("out{cases}"));
        run_bounded(
            &[
                "analyze".as_ref(),
                dir.as_os_str(),
                "--out".as_ref(),
                out.as_os_str(),
                "--quiet".as_ref(),
                "--threads".as_ref(),
                "2".as_ref(),
            ],
            &case,
        );
        run_bounded(&["verify".as_ref(), dir.as_os_str()], &case);
        run_bounded(
            &[
                "flows".as_ref(),
                dir.join(CAPTURE).as_os_str(),
                "--out".as_ref(),
                "/dev/null".as_ref(),
            ],
            &case,
        );
        let _ = std::fs::remove_dir_all(&out);
        let rss = max_child_rss_kb();
        assert!(
            rss < MAX_RSS_KB,
            "{case}: a run used {rss} kB of memory (limit {MAX_RSS_KB} kB)"
        );
    }
    eprintln!(
        "{cases} mutated bundles in {:?}, largest run {} kB (seed {seed})",
        t0.elapsed(),
        max_child_rss_kb()
    );
    assert!(cases >= 5, "only {cases} cases in {budget:?}");
    let _ = std::fs::remove_dir_all(&base);
}
