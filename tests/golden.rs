//! Golden outputs: `procflow flows` on every committed capture and
//! `procflow analyze` on the sample bundle must produce exactly the bytes in
//! `testdata/golden/`. Any change of output is a deliberate change of that
//! folder, made with `scripts/update-golden.sh` and reviewed in the diff.
//! Each run's exit status is part of its output: it must be the one in
//! `testdata/golden/exit-codes.tsv`.

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("procflow-golden-")
        .tempdir()
        .unwrap()
}

/// The exit status recorded for `name` in `testdata/golden/exit-codes.tsv`.
fn expected_exit(name: &str) -> i32 {
    let path = root().join("testdata/golden/exit-codes.tsv");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter_map(|l| l.split_once('\t'))
        .find(|(n, _)| *n == name)
        .and_then(|(_, c)| c.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no exit status for {name} in {}: run scripts/update-golden.sh",
                path.display()
            )
        })
}

fn assert_same(expected: &Path, actual: &Path) {
    let want = std::fs::read(expected).unwrap_or_else(|e| panic!("{}: {e}", expected.display()));
    let got = std::fs::read(actual).unwrap_or_else(|e| panic!("{}: {e}", actual.display()));
    if want != got {
        let w = String::from_utf8_lossy(&want);
        let g = String::from_utf8_lossy(&got);
        let line = w
            .lines()
            .zip(g.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(w.lines().count().min(g.lines().count()));
        panic!(
            "{} differs from {} at line {}:\n  golden: {:?}\n  actual: {:?}\n(regenerate with scripts/update-golden.sh if the change is intended)",
            actual.display(),
            expected.display(),
            line + 1,
            w.lines().nth(line),
            g.lines().nth(line)
        );
    }
}

#[test]
fn flows_outputs_match_golden() {
    let tmp = scratch();
    let dir = tmp.path();
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("testdata/pcaps")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.ends_with(".pcap") || name.ends_with(".pcapng")) {
            continue;
        }
        let csv = dir.join(format!("{name}.csv"));
        let json = dir.join(format!("{name}.json"));
        let status = Command::new(env!("CARGO_BIN_EXE_procflow"))
            .current_dir(root())
            .arg("flows")
            .arg(Path::new("testdata/pcaps").join(&name))
            .args(["--threads", "2", "--out"])
            .arg(&csv)
            .arg("--json")
            .arg(&json)
            .output()
            .unwrap();
        let golden = root().join("testdata/golden/flows");
        let want_csv = golden.join(format!("{name}.csv"));
        assert!(
            want_csv.exists(),
            "no golden output for {name}: run scripts/update-golden.sh"
        );
        assert_same(&want_csv, &csv);
        assert_same(&golden.join(format!("{name}.json")), &json);
        assert_eq!(
            status.status.code(),
            Some(expected_exit(&name)),
            "procflow flows {name}: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} captures checked");
}

#[test]
fn analyze_sample_bundle_matches_golden() {
    let tmp = scratch();
    let dir = tmp.path();
    let out = dir.join("r");
    let status = Command::new(env!("CARGO_BIN_EXE_procflow"))
        .current_dir(root())
        .args([
            "analyze",
            "testdata/sample-bundle",
            "--threads",
            "2",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        out.join("summary.json").exists(),
        "analyze wrote no summary: {status:?}"
    );
    assert_eq!(
        status.status.code(),
        Some(expected_exit("analyze:sample-bundle")),
        "procflow analyze: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let golden = root().join("testdata/golden/analyze");
    let mut checked = 0;
    for entry in std::fs::read_dir(&golden).unwrap() {
        let name = entry.unwrap().file_name();
        assert_same(&golden.join(&name), &out.join(&name));
        checked += 1;
    }
    assert!(checked >= 4);
}
