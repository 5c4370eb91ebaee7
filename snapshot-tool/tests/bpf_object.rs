//! The committed eBPF object is what its source compiles to: rebuilt with
//! clang by `snapshot-tool/bpf/build.sh` and compared byte for byte.
//! Without clang the test says SKIPPED (and fails under `CI=true`).

use std::path::Path;
use std::process::Command;

#[test]
fn committed_bpf_object_matches_its_source() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("bpf");
    let clang = Command::new("clang").arg("--version").output();
    let strip = Command::new("llvm-strip").arg("--version").output();
    if !clang.is_ok_and(|o| o.status.success()) || !strip.is_ok_and(|o| o.status.success()) {
        let why = "clang or llvm-strip not installed (Debian: clang llvm)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("required under CI=true: {why}");
        }
        eprintln!("SKIPPED: {why}");
        return;
    }
    let out = std::env::temp_dir().join(format!("procflow-bpf-{}.o", std::process::id()));
    let st = Command::new(dir.join("build.sh"))
        .arg(&out)
        .status()
        .expect("run build.sh");
    assert!(st.success(), "build.sh failed");
    let built = std::fs::read(&out).expect("built object");
    let _ = std::fs::remove_file(&out);
    let committed = std::fs::read(dir.join("sockuse.bpf.o")).expect("committed object");
    assert!(
        built == committed,
        "snapshot-tool/bpf/sockuse.bpf.o is not what sockuse.bpf.c compiles to \
         ({} bytes built, {} committed): run snapshot-tool/bpf/build.sh and commit \
         the object (it was built with Debian's clang 14)",
        built.len(),
        committed.len()
    );
}
