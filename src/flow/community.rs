//! Community ID v1 (corelight/community-id-spec).

use std::net::IpAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha1::{Digest, Sha1};

use super::Flow;
use crate::packet::{icmp_counterpart, ipproto, Family};

/// Community ID v1 of a flow (corelight/community-id-spec), e.g.
/// `1:wCb3OG7yAFWelaUydu0D+125CLM=`, as Zeek, Suricata, Arkime, Elastic and
/// Wireshark compute it for the same conversation. ICMP type/code stand in
/// for ports, paired types (echo request/reply...) hash the same both ways.
pub fn community_id(flow: &Flow, seed: u16) -> String {
    let addr = |ip: &IpAddr| -> Vec<u8> {
        match ip {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        }
    };
    let (mut s, mut d) = (addr(&flow.a_ip), addr(&flow.b_ip));
    let v6 = flow.family == Family::V6;
    let (mut sp, mut dp, one_way, ports) = match (flow.proto, flow.icmp) {
        (ipproto::ICMP | ipproto::ICMPV6, Some(k)) => match icmp_counterpart(v6, k.icmp_type) {
            Some(other) => (u16::from(k.icmp_type), u16::from(other), false, true),
            None => (u16::from(k.icmp_type), u16::from(k.code), true, true),
        },
        _ => match (flow.a_port, flow.b_port) {
            (Some(a), Some(b)) => (a, b, false, true),
            _ => (0, 0, false, false),
        },
    };
    if !one_way && (&s, sp) > (&d, dp) {
        std::mem::swap(&mut s, &mut d);
        std::mem::swap(&mut sp, &mut dp);
    }
    let mut input = Vec::with_capacity(40);
    input.extend_from_slice(&seed.to_be_bytes());
    input.extend_from_slice(&s);
    input.extend_from_slice(&d);
    input.push(flow.proto);
    input.push(0);
    if ports {
        input.extend_from_slice(&sp.to_be_bytes());
        input.extend_from_slice(&dp.to_be_bytes());
    }
    format!("1:{}", STANDARD.encode(Sha1::digest(&input)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_flow(a: &str, ap: u16, b: &str, bp: u16) -> Flow {
        let a_ip: IpAddr = a.parse().unwrap();
        let family = if a_ip.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        };
        let b = (b.parse().unwrap(), Some(bp));
        Flow::new(ipproto::TCP, family, (a_ip, Some(ap)), b, None, 0)
    }

    #[test]
    fn community_id_spec_vectors() {
        let f = tcp_flow("1.2.3.4", 1122, "5.6.7.8", 3344);
        assert_eq!(community_id(&f, 0), "1:wCb3OG7yAFWelaUydu0D+125CLM=");
        assert_eq!(community_id(&f, 1), "1:HhA1B+6CoLbiKPEs5nhNYN4XWfk=");
        // Direction does not matter.
        let r = tcp_flow("5.6.7.8", 3344, "1.2.3.4", 1122);
        assert_eq!(community_id(&r, 0), "1:wCb3OG7yAFWelaUydu0D+125CLM=");
    }

    #[test]
    fn community_id_matches_suricata_ipv6() {
        // suricata-verify tests/community-id-ipv6 (eve.json expectations);
        // that test runs Suricata with `community-id-seed: 7`.
        let client = "2600:1f13:f8:d400:3a6:303c:e011:18eb";
        for (port, server, id) in [
            (
                60202,
                "2607:f8b0:400a:800::200e",
                "1:ptJhMvufAbB5nLDNW77cB800wFM=",
            ),
            (
                33892,
                "2001:4860:4860::8888",
                "1:PGf+a0eBbs1OhuPtJmsF0Sm51v4=",
            ),
        ] {
            assert_eq!(community_id(&tcp_flow(client, port, server, 443), 7), id);
        }
    }
}
