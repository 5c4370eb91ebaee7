//! ptcpdump's own captures (testdata/ptcpdump/, MIT): every packet's
//! process comment is read, each flow gets the process ptcpdump names for
//! its packets, with as many annotated packets as ptcpdump prints lines.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// ptcpdump's default output: `TIME IFACE comm.pid In|Out ...` per packet.
fn expected(name: &str) -> BTreeMap<u32, (String, u64)> {
    let text =
        std::fs::read_to_string(root().join(format!("testdata/ptcpdump/{name}.out.txt"))).unwrap();
    let mut m: BTreeMap<u32, (String, u64)> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let proc_field = line.split_whitespace().nth(2).unwrap();
        let (comm, pid) = proc_field.rsplit_once('.').unwrap();
        let e = m
            .entry(pid.parse().unwrap())
            .or_insert_with(|| (comm.to_string(), 0));
        e.1 += 1;
    }
    m
}

#[test]
fn ptcpdump_process_comments_are_read_per_flow() {
    let dir = std::env::temp_dir().join(format!("procflow-ptcpdump-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut checked = 0;
    for name in [
        "ptcpdump_curl-thread.pcapng",
        "ptcpdump_curl-user.pcapng",
        "ptcpdump_dns.pcapng",
        "ptcpdump_tcp.pcapng",
    ] {
        let json = dir.join(format!("{name}.json"));
        let o = Command::new(env!("CARGO_BIN_EXE_procflow"))
            .current_dir(root())
            .arg("flows")
            .arg(format!("testdata/ptcpdump/{name}"))
            .arg("--out")
            .arg(dir.join(format!("{name}.csv")))
            .arg("--json")
            .arg(&json)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        let anns = v["process_annotations"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: {v:#}"));
        // Per pid: annotated packets and the command's file name.
        let mut got: BTreeMap<u32, (String, u64)> = BTreeMap::new();
        for a in anns {
            assert!(
                a["other_pids"].as_array().unwrap().is_empty(),
                "{name}: {a}"
            );
            let cmd = a["cmd"].as_str().unwrap();
            let e = got
                .entry(a["pid"].as_u64().unwrap() as u32)
                .or_insert_with(|| (cmd.rsplit('/').next().unwrap().to_string(), 0));
            e.1 += a["packets"].as_u64().unwrap();
        }
        let want = expected(name);
        assert_eq!(got, want, "{name}");
        // Every packet of the capture is annotated.
        let packets: u64 = want.values().map(|x| x.1).sum();
        assert_eq!(v["packets"], packets, "{name}");
        checked += 1;
    }
    assert_eq!(checked, 4);
    let _ = std::fs::remove_dir_all(&dir);
}
