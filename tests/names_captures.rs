//! Names and JA4 read from real captures written by other projects
//! (`testdata/pcaps/`), checked against what tshark shows in them
//! (`testdata/pcaps/names.tsv`: ClientHellos, TLS and QUIC server names,
//! HTTP hosts and CONNECTs, DNS responses and CNAMEs per file) and against
//! Arkime's expected JA4 values (`testdata/pcaps/ja4.tsv`, from Arkime's
//! `tests/*.test`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use procflow::capture::{replay, ReplayOptions};
use procflow::flow::Flow;
use procflow::names::Names;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/pcaps")
}

fn names_of(file: &str) -> (Vec<Flow>, Names) {
    let path = dir().join(file);
    assert!(path.exists(), "{} is missing", path.display());
    let r = replay(
        &[path],
        &ReplayOptions {
            names: true,
            threads: Some(1),
            ..ReplayOptions::default()
        },
    )
    .unwrap();
    assert!(r.files[0].error.is_none(), "{file}: {:?}", r.files[0].error);
    assert_eq!(r.undecodable, 0, "{file}: undecodable packets");
    (r.flows, r.names.unwrap())
}

fn set(field: &str) -> BTreeSet<String> {
    field
        .split(',')
        .filter(|v| *v != "-" && !v.is_empty())
        .map(|v| v.to_ascii_lowercase())
        .collect()
}

#[test]
fn names_match_tshark_on_every_capture() {
    let tsv = std::fs::read_to_string(dir().join("names.tsv")).unwrap();
    let mut lines = tsv.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let (mut tls, mut quic, mut hosts, mut connects, mut dns) = (0, 0, 0, 0, 0);
    let mut files = 0;
    for line in lines {
        let row: BTreeMap<&str, &str> = header.iter().copied().zip(line.split('\t')).collect();
        let file = row["file"];
        let n = |k: &str| row[k].parse::<u64>().unwrap();
        let (_, names) = names_of(file);
        files += 1;
        let ev: Vec<_> = names.evidence.values().collect();
        let got = |f: &dyn Fn(&procflow::names::Evidence) -> Option<String>| -> Vec<String> {
            ev.iter()
                .filter_map(|e| f(e))
                .map(|v| v.to_ascii_lowercase())
                .collect()
        };
        // TLS over TCP: every ClientHello, and the server names of those
        // that carry one.
        let sni = got(&|e| e.tls_sni.clone());
        assert_eq!(
            names.stats.tls_client_hellos,
            n("clienthello_tcp"),
            "{file}"
        );
        assert_eq!(sni.len() as u64, n("sni_tcp"), "{file}: TLS SNI count");
        assert_eq!(
            sni.iter().cloned().collect::<BTreeSet<_>>(),
            set(row["sni_tcp_values"]),
            "{file}"
        );
        tls += sni.len();
        // QUIC: v1 Initials (tshark also reads the v2 capture, this
        // analyzer does not: docs/names.md).
        let qsni = got(&|e| e.quic_sni.clone());
        if !file.contains("quicv2") {
            assert_eq!(
                names.stats.quic_client_hellos,
                n("clienthello_quic"),
                "{file}"
            );
        }
        assert_eq!(qsni.len() as u64, n("sni_quic"), "{file}: QUIC SNI count");
        assert_eq!(
            qsni.iter().cloned().collect::<BTreeSet<_>>(),
            set(row["sni_quic_values"]),
            "{file}"
        );
        quic += qsni.len();
        // HTTP: tshark counts every request, this reads the first of each
        // flow; the names must be the same. A CONNECT's Host header is its
        // target.
        let connect = got(&|e| e.http_connect.clone());
        assert_eq!(connect.len() as u64, n("http_connect"), "{file}: CONNECTs");
        connects += connect.len();
        let host = got(&|e| e.http_host.clone());
        let theirs: BTreeSet<String> = set(row["http_host_values"])
            .into_iter()
            .filter(|h| !connect.contains(h))
            .collect();
        assert_eq!(
            host.iter().cloned().collect::<BTreeSet<_>>(),
            theirs,
            "{file}: hosts"
        );
        hosts += host.len();
        // DNS: every response, and the CNAME targets of their chains.
        assert_eq!(names.stats.dns_responses, n("dns_responses"), "{file}");
        dns += names.stats.dns_responses;
        let chains: BTreeSet<String> = names
            .answers
            .iter()
            .flat_map(|a| a.chain.iter().skip(1).cloned())
            .collect();
        for c in set(row["dns_cname_values"]) {
            // A CNAME chain whose addresses were not in the answer leaves
            // no A/AAAA answer to carry it.
            if !chains.contains(&c) {
                assert!(
                    !names.answers.iter().any(|a| a.question == c),
                    "{file}: CNAME {c} missing"
                );
            }
        }
    }
    assert!(files >= 30, "names.tsv lists {files} captures");
    println!(
        "{files} captures: {tls} TLS server names, {quic} QUIC server names, {hosts} HTTP hosts, \
         {connects} CONNECTs, {dns} DNS responses, all as tshark reads them"
    );
}

#[test]
fn ja4_matches_arkime() {
    let tsv = std::fs::read_to_string(dir().join("ja4.tsv")).unwrap();
    let mut checked = 0;
    for line in tsv.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        let (flows, names) = names_of(f[0]);
        let ip: std::net::IpAddr = f[1].parse().unwrap();
        let port: u16 = f[2].parse().unwrap();
        let flow = flows
            .iter()
            .find(|fl| fl.a_ip == ip && fl.a_port == Some(port))
            .unwrap_or_else(|| panic!("{line}: no such flow"));
        let ja4 = names.evidence.get(&flow.id).and_then(|e| e.ja4.clone());
        assert_eq!(ja4.as_deref(), Some(f[3]), "{}", f[0]);
        checked += 1;
    }
    assert_eq!(checked, 10);
    println!("{checked} JA4 values equal Arkime's");
}
