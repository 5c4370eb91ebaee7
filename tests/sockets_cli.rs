//! `procflow sockets` on a `procflow-snap once` triage bundle (no capture)
//! and on the sample bundle; and the errors for paths that are not bundles.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("procflow-sockets-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The `procflow-snap` binary of this build ([`common::procflow_snap`]).
fn procflow_snap() -> PathBuf {
    common::procflow_snap(Path::new(env!("CARGO_BIN_EXE_procflow")))
}

fn procflow(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_procflow"))
        .current_dir(root())
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn sockets_of_a_once_bundle() {
    // A listener and a connection of this test process, seen by the recorder.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (_server, _) = listener.accept().unwrap();
    let dir = scratch("once");
    let bundle = dir.join("b");
    let o = Command::new(procflow_snap())
        .args(["once", "--out"])
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pid = std::process::id();
    let me = pid.to_string();
    let b = bundle.to_str().unwrap();
    let o = procflow(&["sockets", b, "--pid", &me, "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let socks = v["sockets"].as_array().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let client_local = client.local_addr().unwrap().to_string();
    let find = |state: &str, local: &str| {
        socks
            .iter()
            .find(|s| s["state"] == state && s["local"] == local)
            .unwrap_or_else(|| panic!("no {state} {local} in {v:#}"))
    };
    let l = find("LISTEN", &listen);
    assert_eq!(l["owners"][0]["pid"], pid);
    let c = find("ESTABLISHED", &client_local);
    assert_eq!(c["remote"], listen);
    // Every row is held by this pid.
    assert!(socks.iter().all(|s| s["owners"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["pid"] == pid)));
    // The table and the CSV say the same.
    let t = procflow(&["sockets", b, "--pid", &me]);
    let text = String::from_utf8(t.stdout).unwrap();
    assert!(text.starts_with("# snapshot "), "{text}");
    assert!(text.contains(&format!("pid={me}")));
    assert_eq!(text.lines().count(), socks.len() + 2);
    let c = procflow(&["sockets", b, "--pid", &me, "--csv"]);
    assert_eq!(
        String::from_utf8(c.stdout).unwrap().lines().count(),
        socks.len() + 1
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sockets_at_a_time_of_the_sample_bundle() {
    let o = procflow(&[
        "sockets",
        "testdata/compat/sample-bundle-v1-poll",
        "--at",
        "2026-11-28T16:56:18Z",
        "--csv",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    // The last snapshot taken before 16:56:18: the server's listener is there.
    assert!(
        text.lines()
            .skip(1)
            .all(|l| l.contains(",2026-11-28T16:56:17.")),
        "{text}"
    );
    assert!(text.contains(",tcp,LISTEN,0.0.0.0,6000,"), "{text}");
    let o = procflow(&[
        "sockets",
        "testdata/compat/sample-bundle-v1-poll",
        "--at",
        "2001-01-01T00:00:00Z",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("before the first snapshot"));
}

#[test]
fn paths_that_are_not_bundles_are_named() {
    let pcap = "testdata/compat/sample-bundle-v1-poll/capture-20261128T165616Z.pcap";
    let dir = scratch("errors");
    let out = dir.join("r");
    let o = procflow(&["analyze", pcap, "--out", out.to_str().unwrap()]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        e.contains("is a file, not a bundle directory")
            && e.contains("procflow flows")
            && e.contains("--pcap"),
        "{e}"
    );
    let o = procflow(&["analyze", "no/such/bundle", "--out", out.to_str().unwrap()]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("no/such/bundle: no such file or directory"),
        "{e}"
    );
    let file = dir.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let o = procflow(&[
        "analyze",
        "testdata/sample-bundle",
        "--out",
        file.to_str().unwrap(),
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("is a file; --out names the directory"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
