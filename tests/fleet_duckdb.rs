//! The fleet recipe (docs/fleet.md): the reports of several bundles loaded
//! into DuckDB by `scripts/fleet-duckdb.py`, with timestamps as
//! nanosecond timestamps and ports as integers, and the top processes across
//! hosts in one query. Needs the `duckdb` Python package (installed by
//! `.ci/run`); says SKIPPED without it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn have_duckdb() -> bool {
    Command::new("python3")
        .args(["-c", "import duckdb"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn analyze(out: &Path) {
    let o = Command::new(env!("CARGO_BIN_EXE_procflow"))
        .current_dir(root())
        .args([
            "analyze",
            "testdata/sample-bundle",
            "--quiet",
            "--no-hash",
            "--out",
        ])
        .arg(out)
        .output()
        .unwrap();
    // 3: done, but the evidence has findings (the sample bundle's recorder
    // lost event samples, which analyze says aloud).
    assert!(
        matches!(o.status.code(), Some(0 | 3)),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn fleet_reports_load_into_duckdb_with_types() {
    if !have_duckdb() {
        common::missing("the duckdb Python package is not installed (pip install duckdb)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("procflow-fleet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let hosts: Vec<PathBuf> = ["host-a", "host-b"].iter().map(|h| dir.join(h)).collect();
    for h in &hosts {
        analyze(h);
    }
    let db = dir.join("fleet.duckdb");
    let o = Command::new("python3")
        .arg(root().join("scripts/fleet-duckdb.py"))
        .args(["--top", "3", "--db"])
        .arg(&db)
        .args(&hosts)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let top = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = top.lines().collect();
    assert_eq!(lines.len(), 4, "{top}");
    // The busiest process of processes.csv (its first row), on both hosts.
    let procs = std::fs::read_to_string(hosts[0].join("processes.csv")).unwrap();
    let first: Vec<&str> = procs.lines().nth(1).unwrap().split(',').collect();
    let (pid, bytes_in, bytes_out) = (first[0], first[10], first[11]);
    let total = bytes_in.parse::<u64>().unwrap() + bytes_out.parse::<u64>().unwrap();
    for (line, host) in lines[1..3].iter().zip(["host-a", "host-b"]) {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(
            (f[1], f[2], f[8]),
            (host, pid, total.to_string().as_str()),
            "{line}"
        );
    }
    // Types and values, checked from the database file.
    let check = r#"
import duckdb, sys
con = duckdb.connect(sys.argv[1], read_only=True)
types = dict((r[0], r[1]) for r in con.execute("DESCRIBE connections").fetchall())
assert types["first_seen"] == "TIMESTAMP_NS", types["first_seen"]
assert types["local_port"] == "INTEGER" and types["remote_port"] == "INTEGER", types
assert types["bytes_out"] == "BIGINT" and types["pid"] == "INTEGER", types
n = con.execute("SELECT count(*), count(DISTINCT report) FROM connections").fetchone()
print(n[0], n[1])
# Nanoseconds survive: the text of the CSV and the timestamp agree.
row = con.execute("SELECT flow_id, epoch_ns(first_seen) FROM connections WHERE report = 'host-a' ORDER BY flow_id LIMIT 1").fetchone()
print(row[0], row[1])
"#;
    let o = Command::new("python3")
        .args(["-c", check])
        .arg(&db)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8(o.stdout).unwrap();
    let mut it = out.lines();
    let flows = std::fs::read_to_string(hosts[0].join("connections.csv"))
        .unwrap()
        .lines()
        .count()
        - 1;
    assert_eq!(it.next().unwrap(), format!("{} 2", 2 * flows));
    let first_row = std::fs::read_to_string(hosts[0].join("connections.csv")).unwrap();
    let first_seen = first_row
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .nth(7)
        .unwrap()
        .to_string();
    let frac = first_seen.rsplit('.').next().unwrap().trim_end_matches('Z');
    let (flow, ns) = it.next().unwrap().split_once(' ').unwrap();
    assert_eq!(flow, "1");
    assert!(ns.ends_with(frac), "{ns} vs {first_seen}");
    let _ = std::fs::remove_dir_all(&dir);
}
