//! Connection-tracking entries: the canonical text line the recorder writes
//! for each entry of a namespace's conntrack table (member
//! `snap/SEQ/net/NETNS/conntrack`), and its pure parser.
//!
//! One entry per line, fields separated by one space:
//!
//! ```text
//! PROTO OSRC ODST OSPORT ODPORT RSRC RDST RSPORT RDPORT STATUS ZONE MARK TIMEOUT
//! tcp 10.77.0.2 198.18.0.2 58036 9001 198.18.0.2 198.18.0.1 9001 58036 0x1be 0 0 431999
//! ```
//!
//! - `PROTO`: `tcp`, `udp`, `udplite`, `sctp`, `dccp`, `icmp`, `icmpv6`,
//!   `gre`, else the IP protocol number in decimal.
//! - `OSRC ODST OSPORT ODPORT`: the original direction (as the initiator
//!   sent it); `RSRC RDST RSPORT RDPORT`: the reply direction (as the
//!   responder sends it, translated addresses included). Addresses are IPv4
//!   dotted or IPv6 RFC 5952. Ports are decimal; for `icmp` / `icmpv6` the
//!   source field is the ICMP id and the destination field `TYPE/CODE`; for
//!   protocols without ports both fields are `-`.
//! - `STATUS`: the kernel's `IPS_*` bits, hex with `0x` (`IPS_SRC_NAT`
//!   0x10: the source was translated, masquerade; `IPS_DST_NAT` 0x20: the
//!   destination was translated, a published port).
//! - `ZONE`, `MARK`: decimal. `TIMEOUT`: seconds left, decimal.
//!
//! The row identity ([`row_identity`]) is the line without `TIMEOUT`: the
//! fields that say which mapping an entry is (status and mark included: a
//! change of them is a removal and an addition in a delta).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Name of the conntrack table among a namespace's tables
/// (a key of `NetnsEntry::tables` in module `layout`, which builds on
/// this one).
pub const TABLE: &str = "conntrack";

/// `IPS_SEEN_REPLY`: packets were seen in both directions.
pub const IPS_SEEN_REPLY: u32 = 1 << 1;
/// `IPS_ASSURED`: the entry will not be dropped early.
pub const IPS_ASSURED: u32 = 1 << 2;
/// `IPS_CONFIRMED`: the entry is in the table.
pub const IPS_CONFIRMED: u32 = 1 << 3;
/// `IPS_SRC_NAT`: the source is translated (SNAT, masquerade).
pub const IPS_SRC_NAT: u32 = 1 << 4;
/// `IPS_DST_NAT`: the destination is translated (DNAT, published port).
pub const IPS_DST_NAT: u32 = 1 << 5;

/// The transport part of one direction of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum L4 {
    /// Source and destination ports (tcp, udp, udplite, sctp, dccp).
    Ports {
        /// Source port.
        src: u16,
        /// Destination port.
        dst: u16,
    },
    /// ICMP or ICMPv6: identifier, type and code.
    Icmp {
        /// Echo identifier.
        id: u16,
        /// ICMP type.
        kind: u8,
        /// ICMP code.
        code: u8,
    },
    /// A protocol without ports (`-` `-`).
    None,
}

/// One direction of a conntrack entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Ports or ICMP identity.
    pub l4: L4,
}

impl Tuple {
    /// Source as a socket address (`None` without ports).
    pub fn src_sock(&self) -> Option<SocketAddr> {
        match self.l4 {
            L4::Ports { src, .. } => Some(SocketAddr::new(self.src, src)),
            _ => None,
        }
    }

    /// Destination as a socket address (`None` without ports).
    pub fn dst_sock(&self) -> Option<SocketAddr> {
        match self.l4 {
            L4::Ports { dst, .. } => Some(SocketAddr::new(self.dst, dst)),
            _ => None,
        }
    }
}

/// One conntrack entry as archived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Entry {
    /// IP protocol number of the tracked connection.
    pub proto: u8,
    /// Original direction (as the initiator sent it).
    pub orig: Tuple,
    /// Reply direction (as the responder sends it).
    pub reply: Tuple,
    /// `IPS_*` status bits.
    pub status: u32,
    /// Conntrack zone.
    pub zone: u16,
    /// Connection mark.
    pub mark: u32,
    /// Seconds left before the entry expires.
    pub timeout: u32,
}

/// What address translation an entry shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NatKind {
    /// Source translated (masquerade, SNAT).
    Snat,
    /// Destination translated (published port, DNAT).
    Dnat,
    /// Both.
    Both,
}

impl NatKind {
    /// `snat`, `dnat` or `both`.
    pub fn as_str(self) -> &'static str {
        match self {
            NatKind::Snat => "snat",
            NatKind::Dnat => "dnat",
            NatKind::Both => "both",
        }
    }
}

impl Entry {
    /// The translation this entry shows: from the status bits, else from
    /// the tuples (the reply is not the mirror of the original).
    pub fn nat(&self) -> Option<NatKind> {
        let mut snat = self.status & IPS_SRC_NAT != 0;
        let mut dnat = self.status & IPS_DST_NAT != 0;
        if !snat && !dnat {
            // Without the bits, compare the tuples: the reply's destination
            // is the original source unless the source was translated.
            let (o, r) = (&self.orig, &self.reply);
            snat = o.src != r.dst || src_port(o) != dst_port(r);
            dnat = o.dst != r.src || dst_port(o) != src_port(r);
        }
        match (snat, dnat) {
            (true, true) => Some(NatKind::Both),
            (true, false) => Some(NatKind::Snat),
            (false, true) => Some(NatKind::Dnat),
            (false, false) => None,
        }
    }

    /// The canonical line (without newline).
    pub fn format(&self) -> String {
        format!(
            "{} {} {} 0x{:x} {} {} {}",
            proto_name(self.proto),
            tuple_text(&self.orig),
            tuple_text(&self.reply),
            self.status,
            self.zone,
            self.mark,
            self.timeout
        )
    }
}

fn src_port(t: &Tuple) -> Option<u16> {
    match t.l4 {
        L4::Ports { src, .. } => Some(src),
        L4::Icmp { id, .. } => Some(id),
        L4::None => None,
    }
}

fn dst_port(t: &Tuple) -> Option<u16> {
    match t.l4 {
        L4::Ports { dst, .. } => Some(dst),
        L4::Icmp { id, .. } => Some(id),
        L4::None => None,
    }
}

fn tuple_text(t: &Tuple) -> String {
    let (s, d) = match t.l4 {
        L4::Ports { src, dst } => (src.to_string(), dst.to_string()),
        L4::Icmp { id, kind, code } => (id.to_string(), format!("{kind}/{code}")),
        L4::None => ("-".into(), "-".into()),
    };
    format!("{} {} {s} {d}", t.src, t.dst)
}

/// The `PROTO` field for an IP protocol number.
pub fn proto_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        33 => "dccp".into(),
        47 => "gre".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        136 => "udplite".into(),
        n => n.to_string(),
    }
}

fn proto_number(s: &str) -> Option<u8> {
    Some(match s {
        "icmp" => 1,
        "tcp" => 6,
        "udp" => 17,
        "dccp" => 33,
        "gre" => 47,
        "icmpv6" => 58,
        "sctp" => 132,
        "udplite" => 136,
        n if n.bytes().all(|b| b.is_ascii_digit()) => n.parse().ok()?,
        _ => return None,
    })
}

/// Why a line is not a conntrack entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadEntry(pub String);

impl fmt::Display for BadEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadEntry {}

/// Number of fields of a line.
pub const FIELDS: usize = 13;

/// Parses one canonical line.
pub fn parse_line(line: &str) -> Result<Entry, BadEntry> {
    let f: Vec<&str> = line.split(' ').collect();
    if f.len() != FIELDS {
        return Err(BadEntry(format!(
            "conntrack entry: expected {FIELDS} space-separated fields \
             (PROTO OSRC ODST OSPORT ODPORT RSRC RDST RSPORT RDPORT STATUS ZONE MARK TIMEOUT), \
             found {}",
            f.len()
        )));
    }
    let proto = proto_number(f[0])
        .ok_or_else(|| BadEntry(format!("conntrack entry: unknown protocol {:.20?}", f[0])))?;
    let orig = parse_tuple(proto, &f[1..5])?;
    let reply = parse_tuple(proto, &f[5..9])?;
    if orig.src.is_ipv4() != orig.dst.is_ipv4() || orig.src.is_ipv4() != reply.src.is_ipv4() {
        return Err(BadEntry(
            "conntrack entry: addresses of two families".into(),
        ));
    }
    let status = f[9]
        .strip_prefix("0x")
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .ok_or_else(|| {
            BadEntry(format!(
                "conntrack entry: status {:.20?} is not 0xHEX",
                f[9]
            ))
        })?;
    let num = |s: &str, what: &str| {
        s.parse::<u32>()
            .map_err(|_| BadEntry(format!("conntrack entry: {what} {s:.20?} is not a number")))
    };
    let zone = u16::try_from(num(f[10], "zone")?)
        .map_err(|_| BadEntry("conntrack entry: zone above 65535".into()))?;
    Ok(Entry {
        proto,
        orig,
        reply,
        status,
        zone,
        mark: num(f[11], "mark")?,
        timeout: num(f[12], "timeout")?,
    })
}

fn parse_tuple(proto: u8, f: &[&str]) -> Result<Tuple, BadEntry> {
    let ip = |s: &str| {
        s.parse::<IpAddr>()
            .map_err(|_| BadEntry(format!("conntrack entry: {s:.50?} is not an address")))
    };
    let port = |s: &str| {
        s.parse::<u16>()
            .map_err(|_| BadEntry(format!("conntrack entry: {s:.20?} is not a port")))
    };
    let (src, dst) = (ip(f[0])?, ip(f[1])?);
    let l4 = match (proto, f[2], f[3]) {
        (_, "-", "-") => L4::None,
        (1 | 58, id, tc) => {
            let (t, c) = tc.split_once('/').ok_or_else(|| {
                BadEntry(format!("conntrack entry: ICMP {tc:.20?} is not TYPE/CODE"))
            })?;
            let byte = |s: &str| {
                s.parse::<u8>()
                    .map_err(|_| BadEntry(format!("conntrack entry: ICMP {s:.20?} is not a byte")))
            };
            L4::Icmp {
                id: port(id)?,
                kind: byte(t)?,
                code: byte(c)?,
            }
        }
        (_, s, d) => L4::Ports {
            src: port(s)?,
            dst: port(d)?,
        },
    };
    Ok(Tuple { src, dst, l4 })
}

/// The identity of a line: everything but the trailing `TIMEOUT`; `None`
/// when the line does not have the entry's field count.
pub fn row_identity(line: &str) -> Option<String> {
    if line.split(' ').count() != FIELDS {
        return None;
    }
    line.rsplit_once(' ').map(|(id, _)| id.to_string())
}

/// What a conntrack event says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The entry was created (`NFNLGRP_CONNTRACK_NEW`).
    New,
    /// The entry was destroyed (`NFNLGRP_CONNTRACK_DESTROY`).
    Destroy,
}

/// One line of a `conntrack.events` member:
/// `MONO_NS new|destroy ENTRY`, where `MONO_NS` is CLOCK_MONOTONIC when
/// the recorder handled the event and `ENTRY` the entry's canonical line
/// (a destroyed entry's timeout is 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Event {
    /// CLOCK_MONOTONIC when the event was handled, ns.
    pub mono_ns: i64,
    /// New or destroyed.
    pub kind: EventKind,
    /// The entry.
    pub entry: Entry,
}

impl Event {
    /// The line (without newline).
    pub fn format(&self) -> String {
        let k = match self.kind {
            EventKind::New => "new",
            EventKind::Destroy => "destroy",
        };
        format!("{} {k} {}", self.mono_ns, self.entry.format())
    }

    /// Parses one event line.
    pub fn parse(line: &str) -> Result<Event, BadEntry> {
        let mut it = line.splitn(3, ' ');
        let (Some(t), Some(k), Some(rest)) = (it.next(), it.next(), it.next()) else {
            return Err(BadEntry(
                "conntrack event: expected `MONO_NS new|destroy ENTRY`".into(),
            ));
        };
        let mono_ns = t
            .parse()
            .map_err(|_| BadEntry(format!("conntrack event: time {t:.20?} is not a number")))?;
        let kind = match k {
            "new" => EventKind::New,
            "destroy" => EventKind::Destroy,
            _ => {
                return Err(BadEntry(format!(
                    "conntrack event: {k:.20?} is neither new nor destroy"
                )))
            }
        };
        Ok(Event {
            mono_ns,
            kind,
            entry: parse_line(rest)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(src: &str, dst: &str, l4: L4) -> Tuple {
        Tuple {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            l4,
        }
    }

    fn masq() -> Entry {
        Entry {
            proto: 6,
            orig: tuple(
                "10.77.0.2",
                "198.18.0.2",
                L4::Ports {
                    src: 58036,
                    dst: 9001,
                },
            ),
            reply: tuple(
                "198.18.0.2",
                "198.18.0.1",
                L4::Ports {
                    src: 9001,
                    dst: 58036,
                },
            ),
            status: 0x19e,
            zone: 0,
            mark: 0,
            timeout: 431999,
        }
    }

    #[test]
    fn lines_round_trip() {
        let e = masq();
        let line = e.format();
        assert_eq!(
            line,
            "tcp 10.77.0.2 198.18.0.2 58036 9001 198.18.0.2 198.18.0.1 9001 58036 0x19e 0 0 431999"
        );
        assert_eq!(parse_line(&line), Ok(e));
        assert_eq!(e.nat(), Some(NatKind::Snat));
        let icmp = Entry {
            proto: 58,
            orig: tuple(
                "fd00::2",
                "2001:db8::1",
                L4::Icmp {
                    id: 7,
                    kind: 128,
                    code: 0,
                },
            ),
            reply: tuple(
                "2001:db8::1",
                "fd00::2",
                L4::Icmp {
                    id: 7,
                    kind: 129,
                    code: 0,
                },
            ),
            status: 0,
            zone: 3,
            mark: 9,
            timeout: 29,
        };
        let line = icmp.format();
        assert_eq!(
            line,
            "icmpv6 fd00::2 2001:db8::1 7 128/0 2001:db8::1 fd00::2 7 129/0 0x0 3 9 29"
        );
        assert_eq!(parse_line(&line), Ok(icmp));
        assert_eq!(icmp.nat(), None);
        let gre = "gre 10.0.0.1 10.0.0.2 - - 10.0.0.2 10.0.0.1 - - 0x8 0 0 5";
        assert_eq!(parse_line(gre).unwrap().format(), gre);
    }

    #[test]
    fn nat_kind_from_bits_or_tuples() {
        let mut e = masq();
        e.status = IPS_DST_NAT;
        assert_eq!(e.nat(), Some(NatKind::Dnat));
        e.status = IPS_DST_NAT | IPS_SRC_NAT;
        assert_eq!(e.nat(), Some(NatKind::Both));
        // No bits: the tuples tell (reply destination is not the source).
        e.status = IPS_CONFIRMED;
        assert_eq!(e.nat(), Some(NatKind::Snat));
    }

    #[test]
    fn identity_leaves_out_the_timeout() {
        let a = masq();
        let mut b = a;
        b.timeout = 5;
        assert_eq!(row_identity(&a.format()), row_identity(&b.format()));
        b.status |= IPS_DST_NAT;
        assert_ne!(row_identity(&a.format()), row_identity(&b.format()));
        assert_eq!(row_identity("tcp 1 2"), None);
    }

    #[test]
    fn events_round_trip() {
        let ev = Event {
            mono_ns: 123456789,
            kind: EventKind::Destroy,
            entry: masq(),
        };
        assert_eq!(Event::parse(&ev.format()), Ok(ev));
        assert!(Event::parse("12 gone tcp").is_err());
        assert!(Event::parse("x new tcp").is_err());
    }

    #[test]
    fn bad_lines_say_why() {
        for (line, want) in [
            ("", "fields"),
            (
                "xyz 1.1.1.1 2.2.2.2 1 2 2.2.2.2 1.1.1.1 2 1 0x0 0 0 1",
                "protocol",
            ),
            (
                "tcp 1.1.1 2.2.2.2 1 2 2.2.2.2 1.1.1.1 2 1 0x0 0 0 1",
                "address",
            ),
            (
                "tcp 1.1.1.1 2.2.2.2 1 70000 2.2.2.2 1.1.1.1 2 1 0x0 0 0 1",
                "port",
            ),
            (
                "tcp 1.1.1.1 2.2.2.2 1 2 2.2.2.2 1.1.1.1 2 1 19 0 0 1",
                "status",
            ),
            (
                "tcp 1.1.1.1 2.2.2.2 1 2 2.2.2.2 1.1.1.1 2 1 0x0 70000 0 1",
                "zone",
            ),
            (
                "tcp 1.1.1.1 ::1 1 2 2.2.2.2 1.1.1.1 2 1 0x0 0 0 1",
                "families",
            ),
            (
                "icmp 1.1.1.1 2.2.2.2 1 8 2.2.2.2 1.1.1.1 1 0/0 0x0 0 0 1",
                "TYPE/CODE",
            ),
        ] {
            let e = parse_line(line).unwrap_err();
            assert!(e.0.contains(want), "{line}: {e}");
        }
    }
}
