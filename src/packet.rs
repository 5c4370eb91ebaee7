//! The packet-level types shared by decoding and flow aggregation: address
//! family, protocol numbers, TCP flag bits, ICMP identity and pairing, and
//! the decoded [`IpPacket`]. A leaf: it imports nothing from the crate, so
//! `decode` -> `packet` and `flow` -> {`packet`, `decode`} form no cycle.

/// IP address family of a packet or flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// `ipv4` / `ipv6`, as written in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
}

/// IANA protocol numbers the analyzer names.
pub mod ipproto {
    /// ICMP for IPv4.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMP for IPv6.
    pub const ICMPV6: u8 = 58;
    /// SCTP.
    pub const SCTP: u8 = 132;
}

/// ICMP identity of a packet or flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IcmpKey {
    /// ICMP type.
    pub icmp_type: u8,
    /// ICMP code.
    pub code: u8,
    /// Echo identifier (0 for types without one).
    pub id: u16,
}

/// TCP flag bits.
pub mod tcpflag {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// URG.
    pub const URG: u8 = 0x20;
    /// ECE.
    pub const ECE: u8 = 0x40;
    /// CWR.
    pub const CWR: u8 = 0x80;
}

/// Fragment position of an IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frag {
    /// Not fragmented (IPv6 atomic fragments included).
    None,
    /// First fragment (offset 0, more fragments): carries the ports.
    First(u32),
    /// A later fragment: no transport header; identified by the IP id.
    Later(u32),
}

/// One decoded IP packet, reduced to what flow aggregation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpPacket {
    /// Address family.
    pub family: Family,
    /// Transport protocol number (after IPv6 extension headers).
    pub proto: u8,
    /// Source address; IPv4 uses the first 4 bytes.
    pub src: [u8; 16],
    /// Destination address; IPv4 uses the first 4 bytes.
    pub dst: [u8; 16],
    /// Source port (TCP, UDP, SCTP), else 0.
    pub sport: u16,
    /// Destination port (TCP, UDP, SCTP), else 0.
    pub dport: u16,
    /// TCP flag byte (CWR..FIN), 0 for other protocols.
    pub tcp_flags: u8,
    /// TCP sequence number, 0 for other protocols or a header cut short.
    pub tcp_seq: u32,
    /// TCP acknowledgment number, as `tcp_seq`.
    pub tcp_ack: u32,
    /// TCP payload length as the IP header states it (IP length minus the
    /// IP and TCP headers), 0 for other protocols.
    pub tcp_payload: u32,
    /// ICMP/ICMPv6 type, code and echo identifier.
    pub icmp: Option<IcmpKey>,
    /// Length from the IP header on, as the IP header states it (IPv4 total
    /// length, IPv6 40 + payload length); Ethernet padding is not included.
    pub ip_len: u32,
    /// Fragment position.
    pub frag: Frag,
}

impl IpPacket {
    /// Whether this protocol carries ports in the flow key.
    pub fn has_ports(&self) -> bool {
        proto_has_ports(self.proto)
    }
}

/// Protocols whose flows are keyed by ports (the ones Community ID hashes
/// with ports).
pub fn proto_has_ports(proto: u8) -> bool {
    matches!(proto, ipproto::TCP | ipproto::UDP | ipproto::SCTP)
}

/// ICMP types that come in request/reply pairs (the Community ID spec's
/// table): both directions of an exchange form one flow, keyed by the
/// request type.
pub(crate) fn icmp_counterpart(v6: bool, ty: u8) -> Option<u8> {
    let pairs: &[(u8, u8)] = if v6 {
        &[
            (128, 129),
            (133, 134),
            (135, 136),
            (130, 131),
            (139, 140),
            (144, 145),
        ]
    } else {
        &[(8, 0), (13, 14), (15, 16), (17, 18), (10, 9)]
    };
    pairs.iter().find_map(|&(req, rep)| match ty {
        t if t == req => Some(rep),
        t if t == rep => Some(req),
        _ => None,
    })
}
