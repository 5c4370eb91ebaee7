//! Shared by the integration tests (and by `snapshot-tool/tests`, which
//! includes this file by path): what a test does when the fixture or the
//! facility it needs is missing.
//!
//! Under `CI=true` (`.ci/run` installs everything and runs as root) a
//! missing fixture or facility is a failure, so nothing passes there
//! without having been tested; elsewhere the test prints
//! `SKIPPED: <why>` and returns.

#![allow(dead_code)]

/// Whether the tests run in CI (`CI` set to `true` or `1`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// A test cannot run: `why` names what is missing. Panics under CI; prints
/// `SKIPPED: why` elsewhere (the caller then returns).
pub fn missing(why: &str) {
    assert!(
        !in_ci(),
        "CI=true but this test cannot run: {why} (CI must provide it)"
    );
    eprintln!("SKIPPED: {why}");
}

/// The shared third-party test data (`../shared/testdata` next to the
/// repository), or `None` after [`missing`] said so.
pub fn shared_testdata() -> Option<std::path::PathBuf> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // From the root package or from snapshot-tool/.
    for d in [
        p.join("../shared/testdata"),
        p.join("../../shared/testdata"),
    ] {
        if d.is_dir() {
            return Some(d);
        }
    }
    missing("../shared/testdata (third-party captures and /proc fixtures) is not present");
    None
}

/// The `procflow-snap` binary beside `procflow` (the binary under test),
/// built first. Cargo only exposes the binaries of the package under test
/// to its integration tests, so the recorder is found in the same target
/// directory; `cargo build -p procflow-snap` with the same profile makes
/// sure it is there and current (a no-op when it is).
pub fn procflow_snap(procflow: &std::path::Path) -> std::path::PathBuf {
    let dir = procflow.parent().expect("procflow binary has a directory");
    let snap = dir.join(format!("procflow-snap{}", std::env::consts::EXE_SUFFIX));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--quiet", "-p", "procflow-snap"]);
    match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(profile) => {
            cmd.args(["--profile", profile]);
        }
        None => {}
    }
    // Build into the directory procflow came from, wherever the target dir is.
    if let Some(target_dir) = dir.parent() {
        if target_dir.file_name().is_some() {
            cmd.env("CARGO_TARGET_DIR", target_dir);
        }
    }
    let status = cmd
        .status()
        .expect("cannot run cargo to build procflow-snap");
    assert!(status.success(), "cargo build -p procflow-snap failed");
    assert!(
        snap.is_file(),
        "{} missing after building it",
        snap.display()
    );
    snap
}
