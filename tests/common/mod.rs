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
