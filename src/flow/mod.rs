//! Flows: what replaying a capture produces, and what attribution consumes.
//!
//! A flow is one conversation between two endpoints under one protocol,
//! split when the key is reused (see `docs/architecture.md`). Endpoint `a` is
//! the one that started it: the sender of the first SYN without ACK for TCP,
//! else the sender of its first packet.
//!
//! [`FlowTable`] folds decoded packets into flows (module `aggregate`);
//! [`community_id`] names a flow as Zeek, Suricata and Wireshark do.

mod aggregate;
mod community;

use std::net::IpAddr;

pub use crate::packet::{ipproto, tcpflag, Family, IcmpKey};
pub use aggregate::{
    FlowTable, OrphanFragment, PacketFlow, PacketMark, PacketOrigin, Slot, SplitRules,
};
pub use community::community_id;

/// Name of an IP protocol as written in reports: `tcp`, `udp`, `icmp`,
/// `icmpv6`, else the decimal protocol number.
pub fn proto_name(proto: u8) -> String {
    match proto {
        ipproto::TCP => "tcp".into(),
        ipproto::UDP => "udp".into(),
        ipproto::ICMP => "icmp".into(),
        ipproto::ICMPV6 => "icmpv6".into(),
        n => n.to_string(),
    }
}

/// One aggregated flow. Timestamps are nanoseconds since the Unix epoch (UTC),
/// byte counts are original frame lengths from the capture record header
/// (`orig_len`), `ip_bytes_*` count from the start of the IP header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// Position in the report: flows are numbered from 1 in order of
    /// (first_seen, key), so the id is the same whatever the thread count.
    pub id: u64,
    /// IP protocol number (see [`ipproto`]).
    pub proto: u8,
    /// Address family.
    pub family: Family,
    /// Initiator address.
    pub a_ip: IpAddr,
    /// Initiator port; `None` for protocols without ports.
    pub a_port: Option<u16>,
    /// Responder address.
    pub b_ip: IpAddr,
    /// Responder port; `None` for protocols without ports.
    pub b_port: Option<u16>,
    /// ICMP/ICMPv6 only: type, code and identifier of the flow's first packet.
    pub icmp: Option<IcmpKey>,
    /// Timestamp of the first packet, ns since the epoch.
    pub first_seen_ns: i64,
    /// Timestamp of the last packet, ns since the epoch.
    pub last_seen_ns: i64,
    /// Packets from a to b.
    pub packets_ab: u64,
    /// Packets from b to a.
    pub packets_ba: u64,
    /// Frame bytes (orig_len) from a to b.
    pub bytes_ab: u64,
    /// Frame bytes (orig_len) from b to a.
    pub bytes_ba: u64,
    /// Bytes from the IP header on, a to b (Zeek's `orig_ip_bytes`).
    pub ip_bytes_ab: u64,
    /// Bytes from the IP header on, b to a (Zeek's `resp_ip_bytes`).
    pub ip_bytes_ba: u64,
    /// TCP flags seen from a (OR of the flag bytes).
    pub tcp_flags_ab: u8,
    /// TCP flags seen from b.
    pub tcp_flags_ba: u8,
}

impl Flow {
    /// A flow from `a` (the initiator) to `b` whose first packet, not yet
    /// counted, was seen at `ts_ns`; id 0 until flows are numbered.
    pub fn new(
        proto: u8,
        family: Family,
        a: (IpAddr, Option<u16>),
        b: (IpAddr, Option<u16>),
        icmp: Option<IcmpKey>,
        ts_ns: i64,
    ) -> Flow {
        Flow {
            id: 0,
            proto,
            family,
            a_ip: a.0,
            a_port: a.1,
            b_ip: b.0,
            b_port: b.1,
            icmp,
            first_seen_ns: ts_ns,
            last_seen_ns: ts_ns,
            packets_ab: 0,
            packets_ba: 0,
            bytes_ab: 0,
            bytes_ba: 0,
            ip_bytes_ab: 0,
            ip_bytes_ba: 0,
            tcp_flags_ab: 0,
            tcp_flags_ba: 0,
        }
    }

    /// The six counters as (packets, bytes, IP bytes), each pair in the
    /// order (towards the local end, from it): `a` to `b` first unless
    /// `local_is_a`, in which case `b` to `a` first.
    pub fn counters(&self, local_is_a: bool) -> [u64; 6] {
        let (p, b, i) = (
            (self.packets_ab, self.packets_ba),
            (self.bytes_ab, self.bytes_ba),
            (self.ip_bytes_ab, self.ip_bytes_ba),
        );
        if local_is_a {
            [p.1, p.0, b.1, b.0, i.1, i.0]
        } else {
            [p.0, p.1, b.0, b.1, i.0, i.1]
        }
    }

    /// The same conversation (id, protocol, endpoints, ICMP identity) with
    /// nothing counted yet, first seen at `ts_ns`.
    pub fn cleared(&self, ts_ns: i64) -> Flow {
        Flow {
            id: self.id,
            ..Flow::new(
                self.proto,
                self.family,
                (self.a_ip, self.a_port),
                (self.b_ip, self.b_port),
                self.icmp,
                ts_ns,
            )
        }
    }
}

/// TCP flags as letters in a fixed order, `S A F R P U E C` (SYN, ACK, FIN,
/// RST, PSH, URG, ECE, CWR): a full handshake and close reads `SAF`.
pub fn tcp_flags_text(flags: u8) -> String {
    use tcpflag::*;
    [
        (SYN, 'S'),
        (ACK, 'A'),
        (FIN, 'F'),
        (RST, 'R'),
        (PSH, 'P'),
        (URG, 'U'),
        (ECE, 'E'),
        (CWR, 'C'),
    ]
    .iter()
    .filter(|(bit, _)| flags & bit != 0)
    .map(|(_, c)| *c)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_text() {
        assert_eq!(
            tcp_flags_text(tcpflag::SYN | tcpflag::ACK | tcpflag::FIN),
            "SAF"
        );
        assert_eq!(tcp_flags_text(0), "");
        assert_eq!(tcp_flags_text(0xFF), "SAFRPUEC");
    }
}
