//! Shell completions and man pages of both binaries, generated from their
//! command-line definitions.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

/// The `procflow-snap` binary of this build ([`common::procflow_snap`]).
fn procflow_snap() -> PathBuf {
    common::procflow_snap(Path::new(env!("CARGO_BIN_EXE_procflow")))
}

/// Completions for every shell, then `man --out DIR` (one syntax for both
/// binaries), then `man --help` and a bare `man --out`: help on stdout and
/// a usage error, and no directory named `--help` or `--out` written.
fn check(bin: &Path, name: &str, subcommands: &[&str]) {
    for shell in ["bash", "zsh", "fish"] {
        let o = Command::new(bin)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(o.status.success(), "{name} completions {shell}");
        let text = String::from_utf8(o.stdout).unwrap();
        for s in subcommands {
            assert!(text.contains(s), "{name} {shell} completion lacks {s}");
        }
        if shell == "bash" && Command::new("bash").arg("--version").output().is_ok() {
            let f = std::env::temp_dir()
                .join(format!("procflow-compl-{}-{name}.bash", std::process::id()));
            std::fs::write(&f, &text).unwrap();
            let ok = Command::new("bash")
                .arg("-n")
                .arg(&f)
                .status()
                .unwrap()
                .success();
            let _ = std::fs::remove_file(&f);
            assert!(ok, "{name}: bash completion does not parse");
        }
    }
    let dir = std::env::temp_dir().join(format!("procflow-man-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let o = Command::new(bin)
        .args(["man", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for page in
        std::iter::once(name.to_string()).chain(subcommands.iter().map(|s| format!("{name}-{s}")))
    {
        let p = dir.join(format!("{page}.1"));
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(text.contains(".TH"), "{} is not a man page", p.display());
    }
    let _ = std::fs::remove_dir_all(&dir);

    let cwd = std::env::temp_dir().join(format!("procflow-mancwd-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&cwd).unwrap();
    let help = Command::new(bin)
        .args(["man", "--help"])
        .current_dir(&cwd)
        .output()
        .unwrap();
    assert!(help.status.success(), "{name} man --help: {help:?}");
    assert!(
        String::from_utf8_lossy(&help.stdout).contains("--out <DIR>"),
        "{name} man --help printed no help: {help:?}"
    );
    let bare = Command::new(bin)
        .args(["man", "--out"])
        .current_dir(&cwd)
        .output()
        .unwrap();
    assert_eq!(bare.status.code(), Some(2), "{name} man --out: {bare:?}");
    let left: Vec<_> = std::fs::read_dir(&cwd).unwrap().collect();
    assert!(
        left.is_empty(),
        "{name} man wrote into {}: {left:?}",
        cwd.display()
    );
    let _ = std::fs::remove_dir_all(&cwd);
}

#[test]
fn procflow_completions_and_man_pages() {
    check(
        Path::new(env!("CARGO_BIN_EXE_procflow")),
        "procflow",
        &["flows", "analyze", "carve", "sockets"],
    );
}

#[test]
fn procflow_snap_completions_and_man_pages() {
    check(&procflow_snap(), "procflow-snap", &["record", "once"]);
}
