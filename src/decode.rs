//! Packet decoding: link layer -> IP -> transport, into a small `Copy` record.
//!
//! The decoder never allocates and never panics: every read is bounds-checked
//! and a packet that cannot be decoded yields a [`DecodeError`] that says
//! which layer was short or wrong. Byte counts are not decided here; the
//! caller keeps `orig_len` from the capture record header.
//!
//! Headers are read with etherparse's slices (Ethernet II, VLAN tags, Linux
//! cooked v1, the lax IPv4/IPv6 slices with their extension headers and
//! fragment information, TCP, UDP, ICMP, ICMPv6). What etherparse does not
//! read is read by hand, each marked where it happens: Linux cooked v2, BSD
//! loopback, MPLS, SCTP, IPv6 extension headers it does not walk, jumbogram
//! lengths, and transport headers a snaplen cut short of etherparse's
//! minimum that still hold the ports.

use crate::packet::{ipproto, Family, Frag, IcmpKey, IpPacket};
use etherparse::err::{ipv4, ipv6, ipv6_exts, linux_sll, LenError};
use etherparse::{
    Ethernet2Header, Ethernet2Slice, Icmpv4Slice, Icmpv6Slice, IpNumber, Ipv6ExtensionSlice,
    LaxIpv4Slice, LaxIpv6Slice, LinuxSllHeader, LinuxSllProtocolType, LinuxSllSlice,
    SingleVlanHeader, SingleVlanSlice, TcpHeaderSlice, UdpHeaderSlice,
};
use std::fmt;

/// Link-layer header types (tcpdump.org LINKTYPE_* values) the decoder reads.
pub mod linktype {
    /// BSD loopback: 4-byte address family in the writer's byte order.
    pub const NULL: u16 = 0;
    /// Ethernet II / 802.3.
    pub const ETHERNET: u16 = 1;
    /// Raw IP as some old BSDs numbered it.
    pub const RAW_12: u16 = 12;
    /// Raw IP as OpenBSD numbered it.
    pub const RAW_14: u16 = 14;
    /// Raw IP, version from the first nibble.
    pub const RAW: u16 = 101;
    /// OpenBSD loopback: 4-byte address family in network byte order.
    pub const LOOP: u16 = 108;
    /// Linux cooked capture v1 (16-byte header).
    pub const LINUX_SLL: u16 = 113;
    /// Raw IPv4 only.
    pub const IPV4: u16 = 228;
    /// Raw IPv6 only.
    pub const IPV6: u16 = 229;
    /// Linux cooked capture v2 (20-byte header), what `tcpdump -i any` writes.
    pub const LINUX_SLL2: u16 = 276;

    /// Whether the decoder understands link type `lt`.
    pub fn is_supported(lt: u16) -> bool {
        matches!(
            lt,
            NULL | ETHERNET | RAW_12 | RAW_14 | RAW | LOOP | LINUX_SLL | IPV4 | IPV6 | LINUX_SLL2
        )
    }
}

/// Ethertypes the decoder acts on.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// IPv6.
    pub const IPV6: u16 = 0x86DD;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// 802.1Q VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad service tag (QinQ outer tag).
    pub const QINQ: u16 = 0x88A8;
    /// Pre-standard QinQ outer tag.
    pub const QINQ_OLD: u16 = 0x9100;
    /// MPLS unicast.
    pub const MPLS: u16 = 0x8847;
    /// MPLS multicast.
    pub const MPLS_MC: u16 = 0x8848;
    /// Reported for 802.3 frames whose type field is a length (LLC/SNAP,
    /// STP...): they carry no ethertype.
    pub const LLC: u16 = 0x0000;
}

/// What a frame turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// An IP packet.
    Ip(IpPacket),
    /// A frame that is not IP, by ethertype ([`ethertype::LLC`] for 802.3
    /// length-field frames).
    NonIp(u16),
    /// A frame that could not be decoded.
    Error(DecodeError),
}

/// Why a frame could not be decoded. `Copy`, so it travels in per-packet
/// records; turned into text only when reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The capture's link type is not one the decoder reads.
    UnsupportedLinkType(u16),
    /// A header ended before `need` bytes; `have` were captured from `at`.
    Truncated {
        /// Which header.
        layer: Layer,
        /// Offset in the frame where the header starts.
        at: u32,
        /// Bytes the header needs.
        need: u32,
        /// Bytes captured from `at`.
        have: u32,
    },
    /// The IP version nibble does not fit the link type or ethertype.
    IpVersion {
        /// Version the link layer announced (4 or 6), 0 for "any".
        expected: u8,
        /// Version found in the packet.
        found: u8,
    },
    /// IPv4 header length below 20 or total length below the header length.
    BadIpv4Header {
        /// Header length in bytes (IHL * 4).
        ihl: u32,
        /// Total length field.
        total_len: u32,
    },
    /// A BSD loopback address family the decoder does not know.
    LoopbackFamily(u32),
    /// An MPLS label stack with no bottom-of-stack label.
    MplsNoBottom,
}

/// Protocol layers named in [`DecodeError::Truncated`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// Link-layer header.
    Link,
    /// VLAN tag.
    Vlan,
    /// MPLS label.
    Mpls,
    /// IPv4 header.
    Ipv4,
    /// IPv6 fixed header.
    Ipv6,
    /// IPv6 extension header.
    Ipv6Ext,
    /// TCP header (ports or flags).
    Tcp,
    /// UDP header.
    Udp,
    /// SCTP common header.
    Sctp,
    /// ICMP header.
    Icmp,
    /// ICMPv6 header.
    Icmpv6,
}

impl Layer {
    fn name(self) -> &'static str {
        match self {
            Layer::Link => "link-layer header",
            Layer::Vlan => "VLAN tag",
            Layer::Mpls => "MPLS label",
            Layer::Ipv4 => "IPv4 header",
            Layer::Ipv6 => "IPv6 header",
            Layer::Ipv6Ext => "IPv6 extension header",
            Layer::Tcp => "TCP header",
            Layer::Udp => "UDP header",
            Layer::Sctp => "SCTP header",
            Layer::Icmp => "ICMP header",
            Layer::Icmpv6 => "ICMPv6 header",
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DecodeError::UnsupportedLinkType(lt) => write!(f, "unsupported link type {lt}"),
            DecodeError::Truncated {
                layer,
                at,
                need,
                have,
            } => write!(
                f,
                "{} at frame offset {at} needs {need} bytes, {have} captured",
                layer.name()
            ),
            DecodeError::IpVersion { expected: 0, found } => {
                write!(f, "IP version {found} where 4 or 6 was expected")
            }
            DecodeError::IpVersion { expected, found } => {
                write!(
                    f,
                    "link layer announces IPv{expected}, packet has IP version {found}"
                )
            }
            DecodeError::BadIpv4Header { ihl, total_len } => write!(
                f,
                "IPv4 header length {ihl} / total length {total_len} impossible"
            ),
            DecodeError::LoopbackFamily(af) => write!(f, "unknown loopback address family {af}"),
            DecodeError::MplsNoBottom => write!(f, "MPLS label stack without bottom of stack"),
        }
    }
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    let s = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn truncated(layer: Layer, at: usize, need: usize, frame: &[u8]) -> DecodeError {
    DecodeError::Truncated {
        layer,
        at: at as u32,
        need: need as u32,
        have: frame.len().saturating_sub(at) as u32,
    }
}

/// An etherparse length error for a header that starts at frame offset
/// `at` (etherparse counts from where it was asked to start).
fn len_error(layer: Layer, at: usize, e: &LenError) -> DecodeError {
    DecodeError::Truncated {
        layer,
        at: (at + e.layer_start_offset) as u32,
        need: e.required_len as u32,
        have: e.len as u32,
    }
}

/// Decodes one captured frame of link type `link` whose original length was
/// `orig_len` (used only for IPv6 jumbograms, whose length is not in the
/// fixed header).
pub fn decode(link: u16, frame: &[u8], orig_len: u32) -> Decoded {
    match link {
        linktype::ETHERNET => ethernet(frame, orig_len),
        linktype::RAW | linktype::RAW_12 | linktype::RAW_14 => ip_any(frame, 0, orig_len),
        linktype::IPV4 => ip_expect(frame, 0, 4, orig_len),
        linktype::IPV6 => ip_expect(frame, 0, 6, orig_len),
        linktype::NULL | linktype::LOOP => loopback(link, frame, orig_len),
        linktype::LINUX_SLL => linux_sll(frame, orig_len),
        // etherparse reads cooked v1 headers only: the v2 header (protocol
        // first, 20 bytes) is read here.
        linktype::LINUX_SLL2 => match (u16_at(frame, 0), frame.len() >= 20) {
            (Some(proto), true) => by_ethertype(proto, frame, 20, orig_len),
            _ => Decoded::Error(truncated(Layer::Link, 0, 20, frame)),
        },
        other => Decoded::Error(DecodeError::UnsupportedLinkType(other)),
    }
}

fn ethernet(frame: &[u8], orig_len: u32) -> Decoded {
    match Ethernet2Slice::from_slice_without_fcs(frame) {
        Ok(eth) => by_ethertype(eth.ether_type().0, frame, Ethernet2Header::LEN, orig_len),
        Err(_) => Decoded::Error(truncated(Layer::Link, 0, 14, frame)),
    }
}

fn linux_sll(frame: &[u8], orig_len: u32) -> Decoded {
    match LinuxSllSlice::from_slice(frame) {
        Ok(sll) => {
            // Protocol values that are not ethertypes (802.2 LLC, CAN,
            // netlink...) are counted under their raw value, as before.
            let proto = match sll.protocol_type() {
                LinuxSllProtocolType::EtherType(et) => et.0,
                _ => u16_at(frame, 14).unwrap_or(0),
            };
            by_ethertype(proto, frame, LinuxSllHeader::LEN, orig_len)
        }
        // etherparse rejects packet types and ARPHRD/protocol pairs it does
        // not know; the protocol field is still where it always is.
        Err(linux_sll::HeaderSliceError::Content(_)) => match u16_at(frame, 14) {
            Some(proto) => by_ethertype(proto, frame, 16, orig_len),
            None => Decoded::Error(truncated(Layer::Link, 0, 16, frame)),
        },
        Err(linux_sll::HeaderSliceError::Len(_)) => {
            Decoded::Error(truncated(Layer::Link, 0, 16, frame))
        }
    }
}

/// Dispatches on an ethertype found at the end of a link header, stripping
/// any number of VLAN tags (etherparse's sliced packets stop after three)
/// and MPLS labels first.
fn by_ethertype(mut ty: u16, frame: &[u8], mut off: usize, orig_len: u32) -> Decoded {
    loop {
        match ty {
            ethertype::VLAN | ethertype::QINQ | ethertype::QINQ_OLD => {
                match SingleVlanSlice::from_slice(frame.get(off..).unwrap_or(&[])) {
                    Ok(tag) => ty = tag.ether_type().0,
                    Err(_) => return Decoded::Error(truncated(Layer::Vlan, off, 4, frame)),
                }
                off += SingleVlanHeader::LEN;
            }
            ethertype::IPV4 => return ip_expect(frame, off, 4, orig_len),
            ethertype::IPV6 => return ip_expect(frame, off, 6, orig_len),
            ethertype::MPLS | ethertype::MPLS_MC => return mpls(frame, off, orig_len),
            t if t < 0x0600 => return Decoded::NonIp(ethertype::LLC),
            t => return Decoded::NonIp(t),
        }
    }
}

/// MPLS: pop labels to the bottom of the stack, then guess the payload from
/// the first nibble as tcpdump and Wireshark do (4 = IPv4, 6 = IPv6; anything
/// else, e.g. an Ethernet pseudowire control word, is counted as non-IP).
/// Read by hand: etherparse 0.21 has no MPLS support.
fn mpls(frame: &[u8], mut off: usize, orig_len: u32) -> Decoded {
    for _ in 0..16 {
        let Some(label) = u32_at(frame, off) else {
            return Decoded::Error(truncated(Layer::Mpls, off, 4, frame));
        };
        off += 4;
        if label & 0x100 != 0 {
            return match frame.get(off).map(|b| b >> 4) {
                Some(4) => ip_expect(frame, off, 4, orig_len),
                Some(6) => ip_expect(frame, off, 6, orig_len),
                _ => Decoded::NonIp(ethertype::MPLS),
            };
        }
    }
    Decoded::Error(DecodeError::MplsNoBottom)
}

/// BSD NULL/LOOP headers, read by hand: etherparse does not know them.
fn loopback(link: u16, frame: &[u8], orig_len: u32) -> Decoded {
    let Some(raw) = frame.get(0..4) else {
        return Decoded::Error(truncated(Layer::Link, 0, 4, frame));
    };
    let be = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
    // NULL stores the family in the *writer's* host order, which need not be
    // the file's byte order: a family is a small number, so the order whose
    // value is small is the right one.
    let af = if link == linktype::NULL && be > 0xFFFF {
        be.swap_bytes()
    } else {
        be
    };
    match af {
        2 => ip_expect(frame, 4, 4, orig_len),
        // AF_INET6 is 10 on Linux, 24 on NetBSD/OpenBSD, 28 on FreeBSD,
        // 30 on macOS.
        10 | 24 | 28 | 30 => ip_expect(frame, 4, 6, orig_len),
        other => Decoded::Error(DecodeError::LoopbackFamily(other)),
    }
}

fn ip_any(frame: &[u8], off: usize, orig_len: u32) -> Decoded {
    match frame.get(off).map(|b| b >> 4) {
        Some(4) => ip_expect(frame, off, 4, orig_len),
        Some(6) => ip_expect(frame, off, 6, orig_len),
        Some(v) => Decoded::Error(DecodeError::IpVersion {
            expected: 0,
            found: v,
        }),
        None => Decoded::Error(truncated(Layer::Ipv4, off, 20, frame)),
    }
}

fn ip_expect(frame: &[u8], off: usize, version: u8, orig_len: u32) -> Decoded {
    let found = match frame.get(off) {
        Some(b) => b >> 4,
        None => {
            let layer = if version == 4 {
                Layer::Ipv4
            } else {
                Layer::Ipv6
            };
            let need = if version == 4 { 20 } else { 40 };
            return Decoded::Error(truncated(layer, off, need, frame));
        }
    };
    if found != version {
        return Decoded::Error(DecodeError::IpVersion {
            expected: version,
            found,
        });
    }
    let r = if version == 4 {
        ipv4(frame, off)
    } else {
        ipv6(frame, off, orig_len)
    };
    match r {
        Ok(p) => Decoded::Ip(p),
        Err(e) => Decoded::Error(e),
    }
}

fn ipv4(frame: &[u8], off: usize) -> Result<IpPacket, DecodeError> {
    let s = frame.get(off..).unwrap_or(&[]);
    // An error on an IPv4 authentication header only concerns what follows
    // it, which replay does not read (the flow is keyed on protocol 51).
    let (ip, _) = LaxIpv4Slice::from_slice(s).map_err(|e| match e {
        ipv4::HeaderSliceError::Len(l) => len_error(Layer::Ipv4, off, &l),
        ipv4::HeaderSliceError::Content(ipv4::HeaderError::HeaderLengthSmallerThanHeader {
            ihl,
        }) => DecodeError::BadIpv4Header {
            ihl: u32::from(ihl) * 4,
            total_len: u32::from(u16_at(s, 2).unwrap_or(0)),
        },
        ipv4::HeaderSliceError::Content(ipv4::HeaderError::UnexpectedVersion {
            version_number,
        }) => DecodeError::IpVersion {
            expected: 4,
            found: version_number,
        },
    })?;
    let h = ip.header();
    let ihl = usize::from(h.ihl()) * 4;
    let total_len = usize::from(h.total_len());
    // etherparse falls back to the captured length when the total length is
    // below the header length; replay reports it, except a total length of
    // 0, which is what captures of TSO-offloaded segments show (the captured
    // length is taken then, as etherparse does).
    if total_len != 0 && total_len < ihl {
        return Err(DecodeError::BadIpv4Header {
            ihl: ihl as u32,
            total_len: total_len as u32,
        });
    }
    let ip_len = if total_len == 0 { s.len() } else { total_len };
    let id = u32::from(h.identification());
    let frag = match (h.fragments_offset().value(), h.more_fragments()) {
        (0, false) => Frag::None,
        (0, true) => Frag::First(id),
        _ => Frag::Later(id),
    };
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src[..4].copy_from_slice(&h.source());
    dst[..4].copy_from_slice(&h.destination());
    let mut p = IpPacket {
        family: Family::V4,
        // The header's protocol, not the one after an authentication
        // header (which etherparse steps over): AH flows stay protocol 51.
        proto: h.protocol().0,
        src,
        dst,
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        tcp_seq: 0,
        tcp_ack: 0,
        tcp_payload: 0,
        icmp: None,
        ip_len: ip_len as u32,
        frag,
    };
    if !matches!(frag, Frag::Later(_)) {
        // Bounded by the total length: Ethernet padding after the datagram
        // is not transport data.
        let end = s.len().min(ip_len.max(ihl));
        let t = s.get(ihl..end).unwrap_or(&[]);
        transport(&mut p, t, off + ihl, ip_len.saturating_sub(ihl))?;
    }
    Ok(p)
}

fn ipv6(frame: &[u8], off: usize, orig_len: u32) -> Result<IpPacket, DecodeError> {
    let s = frame.get(off..).unwrap_or(&[]);
    let (ip, ext_err) = LaxIpv6Slice::from_slice(s).map_err(|e| match e {
        ipv6::HeaderSliceError::Len(l) => len_error(Layer::Ipv6, off, &l),
        ipv6::HeaderSliceError::Content(ipv6::HeaderError::UnexpectedVersion {
            version_number,
        }) => DecodeError::IpVersion {
            expected: 6,
            found: version_number,
        },
    })?;
    let h = ip.header();
    let payload_len = usize::from(h.payload_length());
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&h.source());
    dst.copy_from_slice(&h.destination());
    // Payload length 0 with a Hop-by-Hop header is a jumbogram (BIG TCP):
    // the true length is only in the record's original length (etherparse
    // takes the captured bytes, which a snaplen may have cut).
    let ip_len = if payload_len == 0 && h.next_header() == IpNumber::IPV6_HEADER_HOP_BY_HOP {
        (orig_len as usize).saturating_sub(off).max(40)
    } else {
        40 + payload_len
    };
    let end = s.len().min(ip_len);
    let exts = ip.extensions();
    let mut pos = 40 + exts.slice().len();
    let mut next = ip.payload().ip_number.0;
    let mut frag = Frag::None;
    // Iterate only over the bytes etherparse checked. Its iterator trusts
    // the next-header chain: when the lax walk stopped on an error (e.g. a
    // Hop-by-Hop header not first), one more `next()` reads past the
    // checked bytes unchecked, which crashed on a damaged capture.
    let mut iter = exts.clone().into_iter();
    let mut walked = 0;
    while walked < exts.slice().len() {
        let Some(ext) = iter.next() else { break };
        walked += match &ext {
            Ipv6ExtensionSlice::HopByHop(x)
            | Ipv6ExtensionSlice::Routing(x)
            | Ipv6ExtensionSlice::DestinationOptions(x) => x.slice().len(),
            Ipv6ExtensionSlice::Fragment(f) => f.slice().len(),
            Ipv6ExtensionSlice::Authentication(a) => a.slice().len(),
        };
        if let Ipv6ExtensionSlice::Fragment(f) = ext {
            let id = f.identification();
            frag = match (f.fragment_offset().value(), f.more_fragments()) {
                (0, false) => Frag::None, // atomic fragment
                (0, true) => Frag::First(id),
                _ => Frag::Later(id),
            };
            if matches!(frag, Frag::Later(_)) {
                // A later fragment holds no headers after the fragment
                // header: what etherparse walked past it is payload.
                next = f.next_header().0;
                break;
            }
        }
    }
    if !matches!(frag, Frag::Later(_)) {
        if let Some((ipv6_exts::HeaderSliceError::Len(l), _)) = &ext_err {
            return Err(len_error(Layer::Ipv6Ext, off, l));
        }
        // etherparse stops at extension headers it does not walk (Mobility,
        // HIP, Shim6, a Hop-by-Hop header not first): walked here.
        let (n, p, f) = walk_ext_by_hand(s, pos, next, frag)
            .map_err(|(at, need)| truncated(Layer::Ipv6Ext, off + at, need, frame))?;
        next = n;
        pos = p;
        frag = f;
    }
    let mut p = IpPacket {
        family: Family::V6,
        proto: next,
        src,
        dst,
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        tcp_seq: 0,
        tcp_ack: 0,
        tcp_payload: 0,
        icmp: None,
        ip_len: ip_len as u32,
        frag,
    };
    if !matches!(frag, Frag::Later(_)) {
        let t = s.get(pos..end.max(pos)).unwrap_or(&[]);
        transport(&mut p, t, off + pos, ip_len.saturating_sub(pos))?;
    }
    Ok(p)
}

/// Walks IPv6 extension headers from `pos` in `s` (the packet from its IPv6
/// header on) to the transport header: returns the transport protocol, its
/// offset and the fragment position; `Err((offset, need))` when a header is
/// past the captured bytes. Terminates: every header advances `pos` by at
/// least 8 bytes or ends the walk.
fn walk_ext_by_hand(
    s: &[u8],
    mut pos: usize,
    mut next: u8,
    mut frag: Frag,
) -> Result<(u8, usize, Frag), (usize, usize)> {
    loop {
        match next {
            // Hop-by-Hop, Routing, Destination Options, Mobility, HIP, Shim6.
            0 | 43 | 60 | 135 | 139 | 140 => {
                let Some(e) = s.get(pos..pos + 2) else {
                    return Err((pos, 8));
                };
                next = e[0];
                pos += (usize::from(e[1]) + 1) * 8;
            }
            // Authentication Header: length in 4-byte units minus 2.
            51 => {
                let Some(e) = s.get(pos..pos + 2) else {
                    return Err((pos, 8));
                };
                next = e[0];
                pos += (usize::from(e[1]) + 2) * 4;
            }
            44 => {
                let Some(e) = s.get(pos..pos + 8) else {
                    return Err((pos, 8));
                };
                next = e[0];
                let off_m = u16::from_be_bytes([e[2], e[3]]);
                let id = u32::from_be_bytes([e[4], e[5], e[6], e[7]]);
                pos += 8;
                frag = match (off_m >> 3, off_m & 1 != 0) {
                    (0, false) => Frag::None,
                    (0, true) => Frag::First(id),
                    _ => Frag::Later(id),
                };
                if matches!(frag, Frag::Later(_)) {
                    break;
                }
            }
            _ => break,
        }
    }
    Ok((next, pos, frag))
}

/// Fills ports, flags and ICMP identity from the transport header `t`, which
/// starts at frame offset `at` (for error messages). etherparse's header
/// slices need the whole header; a snaplen cut inside one still leaves the
/// ports (and the ICMP type) readable, so those are then read by hand.
/// `claimed` is the transport length the IP header states (for the TCP
/// payload length: the capture may hold less).
fn transport(p: &mut IpPacket, t: &[u8], at: usize, claimed: usize) -> Result<(), DecodeError> {
    let short = |layer, need| DecodeError::Truncated {
        layer,
        at: at as u32,
        need,
        have: t.len() as u32,
    };
    match p.proto {
        ipproto::TCP => {
            if let Ok(tcp) = TcpHeaderSlice::from_slice(t) {
                p.sport = tcp.source_port();
                p.dport = tcp.destination_port();
                p.tcp_flags = [
                    tcp.cwr(),
                    tcp.ece(),
                    tcp.urg(),
                    tcp.ack(),
                    tcp.psh(),
                    tcp.rst(),
                    tcp.syn(),
                    tcp.fin(),
                ]
                .iter()
                .fold(0, |acc, &b| (acc << 1) | u8::from(b));
                p.tcp_seq = tcp.sequence_number();
                p.tcp_ack = tcp.acknowledgment_number();
                let hdr = usize::from(tcp.data_offset()) * 4;
                p.tcp_payload = u32::try_from(claimed.saturating_sub(hdr)).unwrap_or(u32::MAX);
                return Ok(());
            }
            let (Some(s), Some(d)) = (u16_at(t, 0), u16_at(t, 2)) else {
                return Err(short(Layer::Tcp, 4));
            };
            p.sport = s;
            p.dport = d;
            // A cut between the ports and the flags still gives a usable
            // flow key; the flags are then unknown (0).
            p.tcp_flags = t.get(13).copied().unwrap_or(0);
        }
        ipproto::UDP => {
            if let Ok(udp) = UdpHeaderSlice::from_slice(t) {
                p.sport = udp.source_port();
                p.dport = udp.destination_port();
                return Ok(());
            }
            let (Some(s), Some(d)) = (u16_at(t, 0), u16_at(t, 2)) else {
                return Err(short(Layer::Udp, 4));
            };
            p.sport = s;
            p.dport = d;
        }
        // SCTP's common header, by hand: etherparse does not parse SCTP.
        ipproto::SCTP => {
            let (Some(s), Some(d)) = (u16_at(t, 0), u16_at(t, 2)) else {
                return Err(short(Layer::Sctp, 4));
            };
            p.sport = s;
            p.dport = d;
        }
        ipproto::ICMP | ipproto::ICMPV6 => {
            let v4 = p.proto == ipproto::ICMP;
            let layer = if v4 { Layer::Icmp } else { Layer::Icmpv6 };
            let full = if v4 {
                Icmpv4Slice::from_slice(t).map(|i| (i.type_u8(), i.code_u8()))
            } else {
                Icmpv6Slice::from_slice(t).map(|i| (i.type_u8(), i.code_u8()))
            };
            let (ty, code) = match full {
                Ok(tc) => tc,
                Err(_) => match (t.first(), t.get(1)) {
                    (Some(&ty), Some(&code)) => (ty, code),
                    _ => return Err(short(layer, 4)),
                },
            };
            let echo_like = if v4 {
                matches!(ty, 0 | 8 | 13 | 14 | 15 | 16 | 17 | 18)
            } else {
                matches!(ty, 128 | 129)
            };
            let id = if echo_like {
                u16_at(t, 4).ok_or_else(|| short(layer, 8))?
            } else {
                0
            };
            p.icmp = Some(IcmpKey {
                icmp_type: ty,
                code,
                id,
            });
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_udp() -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 28, 0x12, 0x34, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        p.extend_from_slice(&[0x30, 0x39, 0, 53, 0, 8, 0, 0]);
        p
    }

    #[test]
    fn raw_ipv4_udp() {
        let Decoded::Ip(p) = decode(linktype::RAW, &v4_udp(), 28) else {
            panic!()
        };
        assert_eq!((p.proto, p.sport, p.dport, p.ip_len), (17, 12345, 53, 28));
        assert_eq!(&p.src[..4], &[10, 0, 0, 1]);
        assert_eq!(p.frag, Frag::None);
    }

    #[test]
    fn ethernet_with_qinq_tags() {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x88, 0xA8, 0, 1, 0x81, 0x00, 0, 2, 0x08, 0x00]);
        f.extend_from_slice(&v4_udp());
        f.extend_from_slice(&[0u8; 10]); // padding must not count
        let Decoded::Ip(p) = decode(linktype::ETHERNET, &f, f.len() as u32) else {
            panic!()
        };
        assert_eq!((p.dport, p.ip_len), (53, 28));
    }

    #[test]
    fn every_cut_of_a_frame_is_an_error_not_a_panic() {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x81, 0x00, 0, 1, 0x08, 0x00]);
        f.extend_from_slice(&v4_udp());
        for n in 0..f.len() {
            for lt in [0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 999] {
                let _ = decode(lt, &f[..n], n as u32);
            }
        }
        assert!(matches!(
            decode(linktype::ETHERNET, &f[..40], 40),
            Decoded::Error(DecodeError::Truncated {
                layer: Layer::Udp,
                ..
            })
        ));
    }

    #[test]
    fn ipv4_fragments() {
        let mut p = v4_udp();
        p[6] = 0x20; // MF, offset 0
        assert!(matches!(
            decode(linktype::RAW, &p, 28),
            Decoded::Ip(IpPacket {
                frag: Frag::First(0x1234),
                dport: 53,
                ..
            })
        ));
        p[6] = 0x00;
        p[7] = 0x03; // offset 24 bytes
        assert!(matches!(
            decode(linktype::RAW, &p, 28),
            Decoded::Ip(IpPacket {
                frag: Frag::Later(0x1234),
                dport: 0,
                ..
            })
        ));
    }

    #[test]
    fn link_type_ipv4_rejects_ipv6() {
        let mut p = vec![0x60u8; 1];
        p.extend_from_slice(&[0u8; 39]);
        assert_eq!(
            decode(linktype::IPV4, &p, 40),
            Decoded::Error(DecodeError::IpVersion {
                expected: 4,
                found: 6
            })
        );
    }

    #[test]
    fn null_family_in_either_byte_order() {
        for hdr in [[2u8, 0, 0, 0], [0, 0, 0, 2]] {
            let mut f = hdr.to_vec();
            f.extend_from_slice(&v4_udp());
            assert!(matches!(decode(linktype::NULL, &f, 32), Decoded::Ip(_)));
        }
    }

    fn v6_hdr(next: u8, payload_len: u16) -> Vec<u8> {
        let mut h = vec![0x60, 0, 0, 0];
        h.extend_from_slice(&payload_len.to_be_bytes());
        h.extend_from_slice(&[next, 64]);
        h.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        h.extend_from_slice(&[0; 11]);
        h.push(1);
        h.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        h.extend_from_slice(&[0; 11]);
        h.push(2);
        h
    }

    #[test]
    fn openbsd_loop_is_network_order() {
        let mut f = vec![0, 0, 0, 2];
        f.extend_from_slice(&v4_udp());
        assert!(matches!(decode(linktype::LOOP, &f, 32), Decoded::Ip(_)));
        let mut f = vec![0, 0, 0, 24];
        f.extend_from_slice(&v6_hdr(59, 0));
        assert!(matches!(
            decode(linktype::LOOP, &f, 44),
            Decoded::Ip(IpPacket {
                family: Family::V6,
                proto: 59,
                ..
            })
        ));
        assert_eq!(
            decode(linktype::LOOP, &[0, 0, 0, 99, 0x45], 5),
            Decoded::Error(DecodeError::LoopbackFamily(99))
        );
    }

    #[test]
    fn sll_and_sll2_non_ip_protocols() {
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&[0x08, 0x06]);
        sll.extend_from_slice(&[0; 28]);
        assert_eq!(
            decode(linktype::LINUX_SLL, &sll, 44),
            Decoded::NonIp(ethertype::ARP)
        );
        let mut sll2 = vec![0x86, 0xDD];
        sll2.extend_from_slice(&[0; 18]);
        sll2.extend_from_slice(&v6_hdr(17, 8));
        sll2.extend_from_slice(&[0, 1, 0, 2, 0, 8, 0, 0]);
        assert!(matches!(
            decode(linktype::LINUX_SLL2, &sll2, 68),
            Decoded::Ip(IpPacket {
                sport: 1,
                dport: 2,
                ip_len: 48,
                ..
            })
        ));
    }

    #[test]
    fn mpls_over_vlan() {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x81, 0x00, 0, 5, 0x88, 0x47]);
        f.extend_from_slice(&[0, 0, 0x10, 64]); // label, not bottom
        f.extend_from_slice(&[0, 0, 0x21, 64]); // bottom of stack
        f.extend_from_slice(&v4_udp());
        assert!(matches!(
            decode(linktype::ETHERNET, &f, f.len() as u32),
            Decoded::Ip(IpPacket { dport: 53, .. })
        ));
    }

    /// Decodes a raw IP packet, captured whole, that must decode to one.
    fn raw_ip(p: &[u8]) -> IpPacket {
        match decode(linktype::RAW, p, p.len() as u32) {
            Decoded::Ip(d) => d,
            other => panic!("not an IP packet: {other:?}"),
        }
    }

    #[test]
    fn ipv6_extension_headers_and_fragments() {
        // Hop-by-hop -> destination options -> fragment (first) -> UDP.
        let mut p = v6_hdr(0, 32);
        p.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&[44, 0, 0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&[17, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef]);
        p.extend_from_slice(&[0x12, 0x34, 0, 53, 0, 8, 0, 0]);
        let d = raw_ip(&p);
        assert_eq!(
            (d.proto, d.sport, d.dport, d.frag),
            (17, 0x1234, 53, Frag::First(0xdead_beef))
        );
        // A later fragment has no ports.
        let mut p = v6_hdr(44, 16);
        p.extend_from_slice(&[17, 0, 0x05, 0x00, 0xde, 0xad, 0xbe, 0xef]);
        p.extend_from_slice(&[0xAA; 8]);
        let d = raw_ip(&p);
        assert_eq!(
            (d.proto, d.sport, d.frag),
            (17, 0, Frag::Later(0xdead_beef))
        );
    }

    #[test]
    fn icmp_echo_identity() {
        let mut p = vec![
            0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        p.extend_from_slice(&[8, 0, 0, 0, 0x12, 0x34, 0, 1]);
        let d = raw_ip(&p);
        assert_eq!(
            d.icmp,
            Some(IcmpKey {
                icmp_type: 8,
                code: 0,
                id: 0x1234
            })
        );
        // Destination unreachable has no identifier.
        p[20] = 3;
        p[21] = 3;
        let d = raw_ip(&p);
        assert_eq!(
            d.icmp,
            Some(IcmpKey {
                icmp_type: 3,
                code: 3,
                id: 0
            })
        );
    }

    #[test]
    fn ipv4_options_are_skipped() {
        let mut p = vec![
            0x46, 0, 0, 44, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        p.extend_from_slice(&[0x94, 0x04, 0, 0]); // router alert
        p.extend_from_slice(&[0x04, 0xd2, 0x00, 0x50, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02]);
        p.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
        let d = raw_ip(&p);
        assert_eq!((d.sport, d.dport, d.tcp_flags), (1234, 80, 0x02));
    }

    #[test]
    fn hop_by_hop_not_first_is_walked_without_crash() {
        // Hop-by-hop -> destination options -> hop-by-hop again -> UDP:
        // etherparse stops at the second hop-by-hop header (and its
        // iterator would read past what it checked); the walk goes on.
        let mut p = v6_hdr(0, 32);
        p.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&[0x12, 0x34, 0, 53, 0, 8, 0, 0]);
        let d = raw_ip(&p);
        assert_eq!(
            (d.proto, d.sport, d.dport, d.frag),
            (17, 0x1234, 53, Frag::None)
        );
    }

    #[test]
    fn ipv6_later_fragment_keeps_the_fragment_header_next_header() {
        // A later fragment whose next header names destination options: the
        // bytes after the fragment header are payload, not a header.
        let mut p = v6_hdr(44, 24);
        p.extend_from_slice(&[60, 0, 0x05, 0x00, 0, 0, 0, 7]);
        p.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&[0xAA; 8]);
        let d = raw_ip(&p);
        assert_eq!((d.proto, d.sport, d.frag), (60, 0, Frag::Later(7)));
    }
}
