//! No input makes replay panic, and every packet read is accounted for
//! exactly once (in a flow, as non-IP, or as undecodable with a problem):
//! every fixture cut at many lengths, with bytes flipped, and random data
//! behind valid headers.

use procflow::capture::{replay_bytes, Replay, ReplayOptions};
use std::path::{Path, PathBuf};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*: deterministic, so a failure is reproducible.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut v = Vec::new();
    for dir in [
        root.join("testdata/pcaps"),
        root.join("../shared/testdata/pcaps"),
    ] {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            if n.ends_with(".pcap") || n.ends_with(".pcapng") || n.ends_with(".bin") {
                v.push(p);
            }
        }
    }
    v.sort();
    v
}

fn check(name: &str, bytes: &[u8]) -> Replay {
    // Name extraction on: damaged ClientHellos, Initials and DNS messages
    // must not panic either.
    let opts = ReplayOptions {
        threads: Some(2),
        names: true,
        ..ReplayOptions::default()
    };
    let r = replay_bytes(Path::new(name), bytes, &opts);
    let packets: u64 = r.files.iter().map(|f| f.packets).sum();
    let in_flows: u64 = r.flows.iter().map(|f| f.packets_ab + f.packets_ba).sum();
    let non_ip: u64 = r.non_ip.iter().map(|n| n.packets).sum();
    assert_eq!(
        packets,
        in_flows + non_ip + r.undecodable,
        "{name} ({} bytes): packets not accounted for",
        bytes.len()
    );
    for (i, f) in r.flows.iter().enumerate() {
        assert_eq!(f.id, i as u64 + 1);
        assert!(f.first_seen_ns <= f.last_seen_ns);
    }
    r
}

#[test]
fn every_fixture_cut_at_many_lengths() {
    let files = fixtures();
    assert!(files.len() >= 20, "fixtures missing");
    for p in files {
        let data = std::fs::read(&p).unwrap();
        let name = p.display().to_string();
        let full = check(&name, &data);
        // Small files: every length; large ones: 400 spread cuts.
        let step = (data.len() / 400).max(1);
        let mut n = 0;
        while n < data.len() {
            let r = check(&name, &data[..n]);
            if full.files[0].error.is_none() && n >= 24 {
                // A cut file is still readable, with no more packets.
                assert!(
                    r.files[0].packets <= full.files[0].packets,
                    "{name} cut at {n}"
                );
            }
            n += step;
        }
    }
}

#[test]
fn flipped_bytes_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for p in fixtures() {
        let data = std::fs::read(&p).unwrap();
        if data.is_empty() || data.len() > 200_000 {
            continue;
        }
        for _ in 0..60 {
            let mut d = data.clone();
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(d.len());
                d[i] = rng.next() as u8;
            }
            check(&p.display().to_string(), &d);
        }
    }
}

#[test]
fn random_bytes_behind_valid_headers() {
    let mut rng = Rng(42);
    let mut headers: Vec<Vec<u8>> = Vec::new();
    for (magic, lt) in [
        (0xA1B2_C3D4u32, 1u32),
        (0xA1B2_3C4D, 113),
        (0xA1B2_C3D4, 276),
        (0xA1B2_C3D4, 0),
        (0xA1B2_C3D4, 101),
    ] {
        let mut h = Vec::new();
        h.extend_from_slice(&magic.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&[0; 8]);
        h.extend_from_slice(&65535u32.to_le_bytes());
        h.extend_from_slice(&lt.to_le_bytes());
        headers.push(h);
    }
    // pcapng: SHB + IDB (Ethernet).
    let mut ng = Vec::new();
    ng.extend_from_slice(&0x0A0D_0D0Au32.to_le_bytes());
    ng.extend_from_slice(&28u32.to_le_bytes());
    ng.extend_from_slice(&0x1A2B_3C4Du32.to_le_bytes());
    ng.extend_from_slice(&1u16.to_le_bytes());
    ng.extend_from_slice(&0u16.to_le_bytes());
    ng.extend_from_slice(&u64::MAX.to_le_bytes());
    ng.extend_from_slice(&28u32.to_le_bytes());
    ng.extend_from_slice(&1u32.to_le_bytes());
    ng.extend_from_slice(&20u32.to_le_bytes());
    ng.extend_from_slice(&1u16.to_le_bytes());
    ng.extend_from_slice(&0u16.to_le_bytes());
    ng.extend_from_slice(&0u32.to_le_bytes());
    ng.extend_from_slice(&20u32.to_le_bytes());
    headers.push(ng);
    for h in &headers {
        for _ in 0..300 {
            let mut d = h.clone();
            let n = rng.below(600);
            // Mostly small numbers, so record lengths are often plausible.
            d.extend((0..n).map(|_| {
                if rng.below(3) == 0 {
                    rng.next() as u8
                } else {
                    rng.below(24) as u8
                }
            }));
            check("random", &d);
        }
    }
    for _ in 0..300 {
        let n = rng.below(300);
        let d: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        check("random", &d);
    }
}
