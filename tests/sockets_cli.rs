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
    // A pid without --at: its sockets over the whole recording (one
    // snapshot here).
    assert!(
        text.starts_with(&format!("# pid {me} over the whole recording")),
        "{text}"
    );
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

/// The sample bundle's pid 95 connected to the server (10.203.0.2:5001)
/// from port 57614 at 01:27:43.519 and was gone by 01:27:43.87: between
/// snapshot 1 (01:27:42.6) and snapshot 2 (01:27:47.7), so no snapshot
/// holds it. Only the events and the socket-use records saw it.
#[test]
fn sockets_known_only_from_events_between_snapshots() {
    let b = "testdata/sample-bundle";
    let o = procflow(&["sockets", b, "--at", "2026-12-06T01:27:43.7Z", "--csv"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    let header = text.lines().next().unwrap();
    assert!(header.ends_with(",source,first_seen,last_seen"), "{header}");
    let row = text
        .lines()
        .find(|l| l.contains(",10.203.0.1,57614,10.203.0.2,5001,"))
        .unwrap_or_else(|| panic!("pid 95's connection missing at 01:27:43.7:\n{text}"));
    assert!(row.contains(",95,python3,events+sockuse,"), "{row}");
    assert!(row.starts_with("1,2026-12-06T01:27:42.6"), "{row}");
    // Snapshot 1's own rows are still there, said to be the snapshot's.
    assert!(
        text.contains(",tcp,LISTEN,0.0.0.0,5001,") && text.contains(",snapshot,"),
        "{text}"
    );
    // Closed by 01:27:44.0: not open then.
    let later = procflow(&["sockets", b, "--at", "2026-12-06T01:27:44.0Z", "--csv"]);
    let later = String::from_utf8(later.stdout).unwrap();
    assert!(!later.contains(",10.203.0.1,57614,"), "{later}");
    // Before it connected: not yet.
    let before = procflow(&["sockets", b, "--at", "2026-12-06T01:27:43.4Z", "--csv"]);
    let before = String::from_utf8(before.stdout).unwrap();
    assert!(!before.contains(",10.203.0.1,57614,"), "{before}");

    // The whole recording of pid 95: that socket, with its times.
    let o = procflow(&["sockets", b, "--pid", "95", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let socks = v["sockets"].as_array().unwrap();
    assert_eq!(socks.len(), 1, "{v:#}");
    let s = &socks[0];
    assert_eq!(s["local"], "10.203.0.1:57614");
    assert_eq!(s["remote"], "10.203.0.2:5001");
    assert_eq!(s["source"], "events+sockuse");
    assert_eq!(s["owners"][0]["pid"], 95);
    // 2026-12-06T01:27:43.5 .. 43.9 (the socket's first and last event or
    // call, 43.519 and 43.870).
    let (first, last) = (
        s["first_ns"].as_i64().unwrap(),
        s["last_ns"].as_i64().unwrap(),
    );
    assert!(
        (1_796_520_463_510_000_000..=1_796_520_463_520_000_000).contains(&first),
        "{first}"
    );
    assert!(
        (1_796_520_463_860_000_000..=1_796_520_463_900_000_000).contains(&last),
        "{last}"
    );
    let t = procflow(&["sockets", b, "--pid", "95"]);
    let t = String::from_utf8(t.stdout).unwrap();
    assert!(t.starts_with("# pid 95 over the whole recording"), "{t}");
    assert!(
        t.contains("First seen") && t.contains("2026-12-06T01:27:43.5"),
        "{t}"
    );
    // A pid holding sockets in snapshots too: the server, with its
    // listener seen in the snapshots and its accepted connections seen
    // by events only.
    let s = procflow(&["sockets", b, "--pid", "57", "--csv"]);
    let s = String::from_utf8(s.stdout).unwrap();
    assert!(s.contains(",tcp,LISTEN,0.0.0.0,5001,"), "{s}");
    assert!(s.contains(",10.203.0.2,5001,10.203.0.1,57614,"), "{s}");

    // A pid the recording does not know: said, not just "0 socket(s)".
    let o = procflow(&["sockets", b, "--pid", "99999"]);
    assert!(o.status.success());
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        out.contains("0 socket(s): pid 99999 is not in the recording"),
        "{out}"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("pid 99999 is not in the recording"));
    // A recorded pid without sockets.
    let o = procflow(&["sockets", b, "--pid", "1"]);
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.contains("0 socket(s): pid 1 ("), "{out}");
}

/// The sample bundle with hostile lines added to snapshot 2's events:
/// an escape sequence as comm, lines that are not events, impossible
/// addresses. Rows stay escaped and bounded; bad lines do not stop it.
#[test]
fn sockets_from_hostile_events() {
    let dir = scratch("hostile");
    let bundle = dir.join("b");
    std::fs::create_dir_all(&bundle).unwrap();
    let src = root().join("testdata/sample-bundle");
    for f in ["manifest.json", "capture-20261206T012742Z.pcapng"] {
        std::fs::copy(src.join(f), bundle.join(f)).unwrap();
    }
    let hostile = [
        // 01:27:43.124 and 43.324 (snapshot 1 was taken at mono
        // 18804.813 s, 01:27:42.637).
        r#"{"source":"tracepoint:sock:inet_sock_set_state","kind":"connect","mono_ns":18805300000000,"pid":4242,"tid":4242,"start_time":1,"comm":"\u001b[31mevil\u0007","netns":4026532371,"proto":"tcp","local_ip":"10.203.0.1","local_port":41000,"remote_ip":"10.203.0.2","remote_port":5001}"#,
        r#"{"source":"tracepoint:sock:inet_sock_set_state","kind":"close","mono_ns":18805500000000,"pid":4242,"tid":4242,"start_time":1,"comm":"\u001b[31mevil\u0007","netns":4026532371,"proto":"tcp","local_ip":"10.203.0.1","local_port":41000,"remote_ip":"10.203.0.2","remote_port":5001}"#,
        "not json at all \u{1b}[2J",
        r#"{"kind":"connect"}"#,
        r#"{"source":"x","kind":"connect","mono_ns":18805300000000,"pid":4243,"tid":4243,"comm":"a","proto":"tcp","local_ip":"999.1.1.1","local_port":70000,"remote_ip":"10.203.0.2","remote_port":5001}"#,
        r#"{"source":"x","kind":"teleport","mono_ns":-9223372036854775808,"pid":4244,"tid":4244,"comm":"b","proto":"sctp","local_ip":"10.203.0.1","local_port":1,"remote_ip":"10.203.0.2","remote_port":2}"#,
    ]
    .join("\n");
    let mut a = tar::Archive::new(std::fs::File::open(src.join("snapshots-000001.tar")).unwrap());
    let mut b =
        tar::Builder::new(std::fs::File::create(bundle.join("snapshots-000001.tar")).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        if name == "snap/00000002/events.jsonl" {
            data.extend_from_slice(hostile.as_bytes());
            data.push(b'\n');
        }
        let mut h = e.header().clone();
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append_data(&mut h, &name, data.as_slice()).unwrap();
    }
    b.finish().unwrap();
    drop(b);
    let bs = bundle.to_str().unwrap();
    let o = procflow(&["sockets", bs, "--at", "2026-12-06T01:27:43.2Z"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "raw escapes in {text:?}"
    );
    let row = text
        .lines()
        .find(|l| l.contains("10.203.0.1:41000"))
        .unwrap_or_else(|| panic!("the hostile connection is a row:\n{text}"));
    assert!(row.contains("pid=4242") && row.contains("events"), "{row}");
    assert!(
        !text.contains("999.1.1.1") && !text.contains("sctp"),
        "{text}"
    );
    let o = procflow(&["sockets", bs, "--at", "2026-12-06T01:27:43.4Z"]);
    assert!(!String::from_utf8(o.stdout)
        .unwrap()
        .contains("10.203.0.1:41000"));
    let o = procflow(&["sockets", bs, "--pid", "4242", "--csv"]);
    assert!(o.status.success());
    let csv = String::from_utf8(o.stdout).unwrap();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(!csv.contains('\u{1b}'), "{csv:?}");
    assert!(csv.contains(",events,2026-12-06T01:27:43.1"), "{csv}");
    let _ = std::fs::remove_dir_all(&dir);
}
