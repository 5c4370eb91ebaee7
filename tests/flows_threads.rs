//! The flows CSV is byte-identical whatever the thread count, on fixtures and
//! on a generated multi-MB capture that spans many decode batches; a capture
//! rotated into several files, given in any order, gives the same flows as
//! the single file.

use procflow::capture::{replay, ReplayOptions};
use procflow::flows::write_csv;
use std::path::{Path, PathBuf};

fn csv(paths: &[PathBuf], threads: usize) -> Vec<u8> {
    let r = replay(
        paths,
        &ReplayOptions {
            threads: Some(threads),
            ..ReplayOptions::default()
        },
    )
    .unwrap();
    let mut out = Vec::new();
    write_csv(&mut out, &r.flows).unwrap();
    out
}

/// A packet of the generated capture: timestamp (us) and Ethernet frame.
type Pkt = (u64, Vec<u8>);

fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, id: u16, frag: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + payload.len()) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(&frag.to_be_bytes());
    f.extend_from_slice(&[64, proto, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(payload);
    f
}

fn tcp(sp: u16, dp: u16, flags: u8, len: usize) -> Vec<u8> {
    let mut t = Vec::with_capacity(20 + len);
    t.extend_from_slice(&sp.to_be_bytes());
    t.extend_from_slice(&dp.to_be_bytes());
    t.extend_from_slice(&[0; 8]);
    t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.resize(20 + len, 0xAB);
    t
}

fn udp(sp: u16, dp: u16, len: usize) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + len);
    u.extend_from_slice(&sp.to_be_bytes());
    u.extend_from_slice(&dp.to_be_bytes());
    u.extend_from_slice(&((8 + len) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.resize(8 + len, 0xCD);
    u
}

/// Builds interleaved conversations: TCP connections (some reusing their
/// 4-tuple after FIN), UDP exchanges, ICMP echoes, fragmented UDP and ARP.
/// Returns the packets in time order and the number of flows expected.
fn generate() -> (Vec<Pkt>, usize) {
    let mut rng = fastrand::Rng::with_seed(7);
    let mut convs: Vec<Vec<Vec<u8>>> = Vec::new();
    let (c, s) = ([10, 1, 0, 1], [10, 2, 0, 1]);
    let mut flows = 0;
    for i in 0..3000u16 {
        let sp = 20_000 + i;
        let mut v = Vec::new();
        let reuse = i % 10 == 0;
        for _ in 0..if reuse { 2 } else { 1 } {
            v.push(ipv4(c, s, 6, 0, 0, &tcp(sp, 80, 0x02, 0)));
            v.push(ipv4(s, c, 6, 0, 0, &tcp(80, sp, 0x12, 0)));
            for _ in 0..rng.u64(..30) {
                v.push(ipv4(
                    s,
                    c,
                    6,
                    0,
                    0,
                    &tcp(80, sp, 0x10, rng.u64(..1400) as usize),
                ));
                v.push(ipv4(c, s, 6, 0, 0, &tcp(sp, 80, 0x10, 0)));
            }
            v.push(ipv4(c, s, 6, 0, 0, &tcp(sp, 80, 0x11, 0)));
            v.push(ipv4(s, c, 6, 0, 0, &tcp(80, sp, 0x11, 0)));
            v.push(ipv4(c, s, 6, 0, 0, &tcp(sp, 80, 0x10, 0)));
            flows += 1;
        }
        convs.push(v);
    }
    for i in 0..2000u16 {
        let mut v = Vec::new();
        for _ in 0..1 + rng.u64(..4) {
            v.push(ipv4(c, s, 17, 0, 0, &udp(40_000 + i, 53, 40)));
            v.push(ipv4(s, c, 17, 0, 0, &udp(53, 40_000 + i, 120)));
        }
        convs.push(v);
        flows += 1;
    }
    for i in 0..200u16 {
        let mut echo = vec![8, 0, 0, 0];
        echo.extend_from_slice(&i.to_be_bytes());
        echo.extend_from_slice(&[0, 1]);
        let mut reply = echo.clone();
        reply[0] = 0;
        convs.push(vec![
            ipv4(c, s, 1, 0, 0, &echo),
            ipv4(s, c, 1, 0, 0, &reply),
        ]);
        flows += 1;
    }
    for i in 0..300u16 {
        // A UDP datagram in two fragments; the second sometimes first.
        let first = ipv4(
            c,
            s,
            17,
            1000 + i,
            0x2000,
            &udp(50_000 + i, 9999, 1472)[..1480],
        );
        let second = ipv4(c, s, 17, 1000 + i, 185, &[0xEE; 8]);
        convs.push(if i % 3 == 0 {
            vec![second, first]
        } else {
            vec![first, second]
        });
        flows += 1;
    }
    let mut arp = vec![0xFF; 12];
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.resize(42, 0);
    convs.push(vec![arp; 500]);
    // Interleave: repeatedly take the next packet of a random open
    // conversation.
    let mut cursors: Vec<(usize, usize)> = (0..convs.len()).map(|i| (i, 0)).collect();
    let mut out = Vec::new();
    let mut ts = 1_700_000_000_000_000u64;
    while !cursors.is_empty() {
        let k = rng.u64(..cursors.len().min(64) as u64) as usize;
        let (ci, pos) = cursors[k];
        out.push((ts, convs[ci][pos].clone()));
        ts += 1 + rng.u64(..500);
        if pos + 1 == convs[ci].len() {
            cursors.remove(k);
        } else {
            cursors[k].1 += 1;
        }
    }
    (out, flows)
}

fn write_pcap(path: &Path, pkts: &[Pkt]) {
    let mut f = Vec::new();
    f.extend_from_slice(&0xA1B2_C3D4u32.to_le_bytes());
    f.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    f.extend_from_slice(&65535u32.to_le_bytes());
    f.extend_from_slice(&1u32.to_le_bytes());
    for (ts, p) in pkts {
        f.extend_from_slice(&((ts / 1_000_000) as u32).to_le_bytes());
        f.extend_from_slice(&((ts % 1_000_000) as u32).to_le_bytes());
        f.extend_from_slice(&(p.len() as u32).to_le_bytes());
        f.extend_from_slice(&(p.len() as u32).to_le_bytes());
        f.extend_from_slice(p);
    }
    std::fs::write(path, f).unwrap();
}

#[test]
fn generated_capture_same_output_for_any_thread_count_and_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (pkts, want_flows) = generate();
    assert!(
        pkts.len() > 100_000,
        "{} packets: too few to span batches",
        pkts.len()
    );
    let whole = dir.join("whole.pcap");
    write_pcap(&whole, &pkts);
    assert!(std::fs::metadata(&whole).unwrap().len() > 5_000_000);
    let one = csv(std::slice::from_ref(&whole), 1);
    assert_eq!(one.iter().filter(|&&b| b == b'\n').count(), want_flows + 1);
    for t in [2, 8] {
        assert!(
            csv(std::slice::from_ref(&whole), t) == one,
            "threads {t} differ from 1"
        );
    }
    // Remapping the file every 100 kB (as every 64 MB on large captures)
    // changes nothing either.
    let opts = ReplayOptions {
        threads: Some(2),
        remap_every: 100_000,
        ..ReplayOptions::default()
    };
    let mut remapped = Vec::new();
    write_csv(
        &mut remapped,
        &replay(std::slice::from_ref(&whole), &opts).unwrap().flows,
    )
    .unwrap();
    assert!(remapped == one, "remapping changed the output");
    // Rotated like tcpdump -C, given out of order.
    let third = pkts.len() / 3;
    let parts: Vec<PathBuf> = (0..3).map(|i| dir.join(format!("rot{i}.pcap"))).collect();
    write_pcap(&parts[0], &pkts[..third]);
    write_pcap(&parts[1], &pkts[third..2 * third]);
    write_pcap(&parts[2], &pkts[2 * third..]);
    let shuffled = vec![parts[2].clone(), parts[0].clone(), parts[1].clone()];
    assert!(
        csv(&shuffled, 2) == one,
        "rotated files differ from the single file"
    );
    let r = replay(&shuffled, &ReplayOptions::default()).unwrap();
    let order: Vec<&Path> = r.files.iter().map(|f| f.path.as_path()).collect();
    assert_eq!(
        order,
        [parts[0].as_path(), parts[1].as_path(), parts[2].as_path()]
    );
    assert_eq!(r.non_ip[0].packets, 500);
    assert_eq!(r.undecodable, 0);
}

#[test]
fn fixtures_same_output_for_any_thread_count() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = Vec::new();
    for dir in [
        root.join("testdata/pcaps"),
        root.join("../shared/testdata/pcaps"),
    ] {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        paths.extend(
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng")),
        );
    }
    paths.sort();
    assert!(paths.len() >= 20);
    for p in &paths {
        let one = csv(std::slice::from_ref(p), 1);
        for t in [2, 8] {
            assert!(
                csv(std::slice::from_ref(p), t) == one,
                "{}: threads {t} differ",
                p.display()
            );
        }
    }
    // All of them at once.
    let one = csv(&paths, 1);
    assert!(csv(&paths, 8) == one);
}
