//! The README's sample output is what `procflow analyze` prints: every line
//! of the README block (but `...`, which stands for lines left out) is a
//! line of the real run's standard output, in the same order. Regenerate
//! the block from a real run when the output changes on purpose.

use std::path::Path;
use std::process::Command;

/// The fenced block of the README that follows the analyze command.
fn readme_block() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme
        .find("```\n211 flows")
        .or_else(|| {
            readme
                .match_indices("```\n")
                .map(|(i, _)| i)
                .find(|&i| readme[i + 4..].split(' ').nth(1) == Some("flows,"))
        })
        .expect("the README has a sample output block")
        + 4;
    let end = start + readme[start..].find("```").expect("the block ends");
    readme[start..end].lines().map(str::to_string).collect()
}

#[test]
fn readme_sample_output_is_what_analyze_prints() {
    let out = tempfile::Builder::new()
        .prefix("procflow-readme-")
        .tempdir()
        .unwrap();
    let report = out.path().join("procflow-report");
    let o = Command::new(env!("CARGO_BIN_EXE_procflow"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["analyze", "testdata/sample-bundle", "--force", "--out"])
        .arg(&report)
        .output()
        .unwrap();
    // The sample's evidence holds: exit 0.
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let stdout = String::from_utf8(o.stdout)
        .unwrap()
        .replace(report.to_str().unwrap(), "/tmp/procflow-report");
    let actual: Vec<&str> = stdout.lines().map(str::trim_end).collect();
    let block = readme_block();
    assert!(block.len() > 10, "README block too short: {block:?}");
    // Each README line matches the next actual line, or (after `...`) a
    // later one.
    let mut at = 0;
    let mut skipping = false;
    for want in &block {
        let want = want.trim_end();
        if want.trim() == "..." {
            skipping = true;
            continue;
        }
        let found = if skipping {
            actual[at..].iter().position(|l| *l == want).map(|p| at + p)
        } else {
            (actual.get(at) == Some(&want)).then_some(at)
        };
        let Some(i) = found else {
            panic!(
                "README line not in the output at line {}:\n  README: {want:?}\n  actual: {:?}\n\
                 (regenerate the README block from a real run)\nwhole output:\n{stdout}",
                at + 1,
                actual.get(at)
            );
        };
        at = i + 1;
        skipping = false;
    }
    assert_eq!(
        at,
        actual.len(),
        "the README block stops before the output ends"
    );
}
