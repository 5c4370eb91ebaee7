//! tcpdump filter syntax compiled to classic BPF, for `SO_ATTACH_FILTER`
//! on the recorder's packet socket.
//!
//! The common subset of pcap-filter(7): `host`, `src host`, `dst host`
//! (IPv4 and IPv6), `net A/len`, `net A mask M`, `port`, `src port`,
//! `dst port`, `portrange A-B`, the protocols `ip ip6 arp tcp udp sctp
//! icmp icmp6`, `proto N` (`ip proto N`, `ip6 proto N`), `vlan [ID]`,
//! `less N`, `greater N`, `and or not ! && ||` and parentheses. As in
//! libpcap, `and` and `or` bind equally, left to right, and an operand
//! that is a bare address or number after `and`/`or` repeats the previous
//! primitive's qualifiers (`host a or b`). Anything else is an error that
//! names the token.
//!
//! The layer-3 protocol is read from the kernel's `skb->protocol`
//! (`SKF_AD_PROTOCOL`), and a VLAN tag from the skb's metadata (the kernel
//! takes tags out of received frames before packet sockets see them), so
//! one program serves Ethernet captures (network header at 14) and cooked
//! ones (at 0).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u16,
    /// Jump offset when true.
    pub jt: u8,
    /// Jump offset when false.
    pub jf: u8,
    /// Constant.
    pub k: u32,
}

/// Where the network header starts in what the filter sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Ethernet frames (`SOCK_RAW` on Ethernet or loopback): at 14.
    Ethernet,
    /// Cooked capture (`SOCK_DGRAM`): the link header is stripped, at 0.
    Cooked,
}

impl Link {
    fn l3(self) -> u32 {
        match self {
            Link::Ethernet => 14,
            Link::Cooked => 0,
        }
    }
}

/// Why a filter cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A token the compiler does not know or does not expect there.
    #[error("filter: {what} at `{token}` (token {index}); supported: host, src/dst host, net A/len, net A mask M, port, src/dst port, portrange A-B, ip ip6 arp tcp udp sctp icmp icmp6, proto N, vlan [ID], less N, greater N, and/or/not, parentheses")]
    Unsupported {
        /// The token.
        token: String,
        /// Its position, from 1.
        index: usize,
        /// What is wrong.
        what: String,
    },
    /// The text ends where more was expected.
    #[error("filter: unexpected end, {0}")]
    End(String),
    /// The program is too large for classic BPF jumps.
    #[error("filter: too large for a classic BPF program")]
    TooLarge,
}

// Opcodes (linux/filter.h, linux/bpf_common.h).
const LD: u16 = 0x00;
const LDX: u16 = 0x01;
const ALU: u16 = 0x04;
const JMP: u16 = 0x05;
const RET: u16 = 0x06;
const W: u16 = 0x00;
const H: u16 = 0x08;
const B: u16 = 0x10;
const ABS: u16 = 0x20;
const IND: u16 = 0x40;
const LEN: u16 = 0x80;
const MSH: u16 = 0xa0;
const AND: u16 = 0x50;
const JA: u16 = 0x00;
const JEQ: u16 = 0x10;
const JGT: u16 = 0x20;
const JGE: u16 = 0x30;
const JSET: u16 = 0x40;
const K: u16 = 0x00;
/// `SKF_AD_OFF`: ancillary loads start here.
const AD: u32 = 0xffff_f000;
const AD_PROTOCOL: u32 = AD;
const AD_VLAN_TAG: u32 = AD + 44;
const AD_VLAN_TAG_PRESENT: u32 = AD + 48;

const ETH_IP: u32 = 0x0800;
const ETH_IP6: u32 = 0x86dd;
const ETH_ARP: u32 = 0x0806;
const ETH_RARP: u32 = 0x8035;

/// What a test loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    /// `skb->protocol`.
    Proto,
    VlanPresent,
    VlanTag,
    /// Packet length.
    Len,
    /// `size` bytes at `off` from the network header.
    Net(u16, u32),
    /// `size` bytes at `off` from the end of the IPv4 header.
    AfterIp4(u16, u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Gt,
    Ge,
    Set,
}

/// A condition over one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cond {
    And(Vec<Cond>),
    Or(Vec<Cond>),
    Not(Box<Cond>),
    Test(Load, Option<u32>, Op, u32),
}

fn eq(l: Load, k: u32) -> Cond {
    Cond::Test(l, None, Op::Eq, k)
}
fn proto(ethertype: u32) -> Cond {
    eq(Load::Proto, ethertype)
}
fn and(v: Vec<Cond>) -> Cond {
    Cond::And(v)
}
fn or(v: Vec<Cond>) -> Cond {
    Cond::Or(v)
}

/// Protocol qualifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Ip,
    Ip6,
    Arp,
    Tcp,
    Udp,
    Sctp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Src,
    Dst,
    Either,
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Host,
    Net,
    Port,
    Portrange,
}

/// The qualifiers of the last primitive, for `host a or b`.
#[derive(Debug, Clone, Copy)]
struct Quals {
    proto: Option<Proto>,
    dir: Dir,
    kind: Kind,
}

struct Parser<'a> {
    toks: Vec<&'a str>,
    pos: usize,
    last: Option<Quals>,
}

fn tokenize(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'(' || c == b')' {
            out.push(&s[i..i + 1]);
            i += 1;
        } else if (c == b'&' || c == b'|') && b.get(i + 1) == Some(&c) {
            out.push(&s[i..i + 2]);
            i += 2;
        } else if c == b'!' {
            out.push(&s[i..i + 1]);
            i += 1;
        } else {
            let st = i;
            while i < b.len()
                && !b[i].is_ascii_whitespace()
                && !matches!(b[i], b'(' | b')' | b'!')
                && !((b[i] == b'&' || b[i] == b'|') && b.get(i + 1) == Some(&b[i]))
            {
                // Step over a whole UTF-8 character.
                i += s[i..].chars().next().map_or(1, char::len_utf8);
            }
            out.push(&s[st..i]);
        }
    }
    out
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&'a str> {
        self.toks.get(self.pos).copied()
    }
    fn next(&mut self) -> Option<&'a str> {
        let t = self.peek();
        if t.is_some() {
            self.pos += 1;
        }
        t
    }
    fn err(&self, what: &str) -> FilterError {
        match self.toks.get(self.pos) {
            Some(t) => FilterError::Unsupported {
                token: t.chars().take(64).collect(),
                index: self.pos + 1,
                what: what.to_string(),
            },
            None => FilterError::End(what.to_string()),
        }
    }
    fn err_prev(&self, what: &str) -> FilterError {
        FilterError::Unsupported {
            token: self.toks[self.pos - 1].chars().take(64).collect(),
            index: self.pos,
            what: what.to_string(),
        }
    }

    fn expr(&mut self, depth: usize) -> Result<Cond, FilterError> {
        if depth > 64 {
            return Err(self.err("nested too deeply"));
        }
        let mut left = self.term(depth)?;
        loop {
            match self.peek() {
                Some("and" | "&&") => {
                    self.pos += 1;
                    let right = self.term_or_repeat(depth)?;
                    left = and(vec![left, right]);
                }
                Some("or" | "||") => {
                    self.pos += 1;
                    let right = self.term_or_repeat(depth)?;
                    left = or(vec![left, right]);
                }
                _ => return Ok(left),
            }
        }
    }

    /// After `and`/`or`: a bare address or number repeats the previous
    /// primitive's qualifiers.
    fn term_or_repeat(&mut self, depth: usize) -> Result<Cond, FilterError> {
        if let (Some(t), Some(q)) = (self.peek(), self.last) {
            if !is_keyword(t) && t != "(" && t != "!" {
                self.pos += 1;
                return self.value(q, t);
            }
        }
        self.term(depth)
    }

    fn term(&mut self, depth: usize) -> Result<Cond, FilterError> {
        match self.peek() {
            Some("not" | "!") => {
                self.pos += 1;
                Ok(Cond::Not(Box::new(self.term(depth + 1)?)))
            }
            Some("(") => {
                self.pos += 1;
                let e = self.expr(depth + 1)?;
                match self.next() {
                    Some(")") => Ok(e),
                    _ => {
                        self.pos = self.pos.saturating_sub(1);
                        Err(self.err("expected `)`"))
                    }
                }
            }
            Some(_) => self.primitive(),
            None => Err(self.err("expected a primitive")),
        }
    }

    fn number(&mut self, what: &str) -> Result<u32, FilterError> {
        match self.next() {
            Some(t) => parse_num(t).ok_or_else(|| self.err_prev(what)),
            None => Err(self.err(what)),
        }
    }

    fn primitive(&mut self) -> Result<Cond, FilterError> {
        let Some(t) = self.next() else {
            return Err(self.err("expected a primitive"));
        };
        match t {
            "less" => {
                let n = self.number("expected a length")?;
                return Ok(Cond::Not(Box::new(Cond::Test(Load::Len, None, Op::Gt, n))));
            }
            "greater" => {
                let n = self.number("expected a length")?;
                return Ok(Cond::Test(Load::Len, None, Op::Ge, n));
            }
            "vlan" => {
                let present = eq(Load::VlanPresent, 1);
                if let Some(n) = self.peek().and_then(parse_num) {
                    self.pos += 1;
                    if n > 0xfff {
                        return Err(self.err_prev("VLAN id above 4095"));
                    }
                    return Ok(and(vec![
                        present,
                        Cond::Test(Load::VlanTag, Some(0xfff), Op::Eq, n),
                    ]));
                }
                return Ok(present);
            }
            "icmp" => return Ok(ip4_proto(1)),
            "icmp6" => return Ok(ip6_proto(58)),
            "proto" => {
                let n = self.number("expected a protocol number")?;
                return Ok(or(vec![ip4_proto(n), ip6_proto(n)]));
            }
            _ => {}
        }
        // [proto] [dir] [kind] value
        self.pos -= 1;
        let mut q = Quals {
            proto: None,
            dir: Dir::Either,
            kind: Kind::Host,
        };
        let mut any = false;
        let p = match self.peek() {
            Some("ip") => Some(Proto::Ip),
            Some("ip6") => Some(Proto::Ip6),
            Some("arp") => Some(Proto::Arp),
            Some("tcp") => Some(Proto::Tcp),
            Some("udp") => Some(Proto::Udp),
            Some("sctp") => Some(Proto::Sctp),
            _ => None,
        };
        if let Some(p) = p {
            self.pos += 1;
            q.proto = Some(p);
            any = true;
            if self.peek() == Some("proto") {
                self.pos += 1;
                let n = self.number("expected a protocol number")?;
                return match p {
                    Proto::Ip => Ok(ip4_proto(n)),
                    Proto::Ip6 => Ok(ip6_proto(n)),
                    _ => Err(self.err_prev("`proto` after a transport protocol")),
                };
            }
        }
        let d = match self.peek() {
            Some("src") => Some(Dir::Src),
            Some("dst") => Some(Dir::Dst),
            _ => None,
        };
        if let Some(d) = d {
            self.pos += 1;
            q.dir = d;
            any = true;
            // `src or dst`, `src and dst`
            if let (Some(op @ ("or" | "and")), Some(other @ ("src" | "dst"))) =
                (self.peek(), self.toks.get(self.pos + 1).copied())
            {
                if other != self.toks[self.pos - 1] {
                    self.pos += 2;
                    q.dir = if op == "or" { Dir::Either } else { Dir::Both };
                }
            }
        }
        let k = match self.peek() {
            Some("host") => Some(Kind::Host),
            Some("net") => Some(Kind::Net),
            Some("port") => Some(Kind::Port),
            Some("portrange") => Some(Kind::Portrange),
            _ => None,
        };
        if let Some(k) = k {
            self.pos += 1;
            q.kind = k;
            any = true;
        }
        match self.peek() {
            Some(v) if !is_keyword(v) && v != "(" && v != ")" && v != "!" => {
                if !any && !looks_like_value(v) {
                    return Err(self.err("unknown primitive"));
                }
                self.pos += 1;
                self.last = Some(q);
                self.value(q, v)
            }
            _ if k.is_none() && d.is_none() => match p {
                // A protocol alone.
                Some(Proto::Ip) => Ok(proto(ETH_IP)),
                Some(Proto::Ip6) => Ok(proto(ETH_IP6)),
                Some(Proto::Arp) => Ok(proto(ETH_ARP)),
                Some(Proto::Tcp) => Ok(transport(6)),
                Some(Proto::Udp) => Ok(transport(17)),
                Some(Proto::Sctp) => Ok(transport(132)),
                None => Err(self.err("unknown primitive")),
            },
            _ => Err(self.err("expected an address, network or port")),
        }
    }

    /// The value of a `[proto] [dir] kind` primitive.
    fn value(&mut self, q: Quals, v: &str) -> Result<Cond, FilterError> {
        match q.kind {
            Kind::Host => {
                if matches!(q.proto, Some(Proto::Tcp | Proto::Udp | Proto::Sctp)) {
                    return Err(self.err_prev("`host` after a transport protocol"));
                }
                let a: IpAddr = v.parse().map_err(|_| {
                    self.err_prev("not a numeric IPv4 or IPv6 address (names are not resolved)")
                })?;
                match a {
                    IpAddr::V4(a) => self.net4(q, a, u32::MAX),
                    IpAddr::V6(a) => self.net6(q, a, 128),
                }
            }
            Kind::Net => {
                if matches!(q.proto, Some(Proto::Tcp | Proto::Udp | Proto::Sctp)) {
                    return Err(self.err_prev("`net` after a transport protocol"));
                }
                if let Some((a, len)) = v.split_once('/') {
                    let len: u32 = len
                        .parse()
                        .map_err(|_| self.err_prev("bad prefix length"))?;
                    match a.parse::<IpAddr>() {
                        Ok(IpAddr::V4(a)) if len <= 32 => {
                            let m = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                            if u32::from(a) & !m != 0 {
                                return Err(self.err_prev("non-network bits set in the address"));
                            }
                            self.net4(q, a, m)
                        }
                        Ok(IpAddr::V6(a)) if len <= 128 => self.net6(q, a, len),
                        _ => Err(self.err_prev("not a network A/len")),
                    }
                } else if self.peek() == Some("mask") {
                    self.pos += 1;
                    let a: Ipv4Addr = v
                        .parse()
                        .map_err(|_| self.err_prev("not an IPv4 network"))?;
                    let m: Ipv4Addr = match self.next() {
                        Some(m) => m.parse().map_err(|_| self.err_prev("not an IPv4 mask"))?,
                        None => return Err(self.err("expected a mask")),
                    };
                    let (a, m) = (u32::from(a), u32::from(m));
                    if a & !m != 0 {
                        return Err(self.err_prev("non-network bits set in the address"));
                    }
                    self.net4(q, Ipv4Addr::from(a), m)
                } else {
                    // A bare IPv4 address: as many leading octets as given.
                    let parts: Vec<&str> = v.split('.').collect();
                    let octets: Option<Vec<u8>> = parts.iter().map(|p| p.parse().ok()).collect();
                    match octets {
                        Some(o) if (1..=4).contains(&o.len()) => {
                            let mut a = [0u8; 4];
                            a[..o.len()].copy_from_slice(&o);
                            let bits = 8 * o.len() as u32;
                            let m = if bits == 32 {
                                u32::MAX
                            } else {
                                !(u32::MAX >> bits)
                            };
                            self.net4(q, Ipv4Addr::from(a), m)
                        }
                        _ => Err(self.err_prev("not a network")),
                    }
                }
            }
            Kind::Port | Kind::Portrange => {
                let (lo, hi) = if q.kind == Kind::Port {
                    let n = parse_num(v).filter(|n| *n <= 65535).ok_or_else(|| {
                        self.err_prev("not a port number (names are not resolved)")
                    })?;
                    (n, n)
                } else {
                    let (a, b) = v
                        .split_once('-')
                        .ok_or_else(|| self.err_prev("expected a port range A-B"))?;
                    match (parse_num(a), parse_num(b)) {
                        (Some(a), Some(b)) if a <= 65535 && b <= 65535 => (a.min(b), a.max(b)),
                        _ => return Err(self.err_prev("not a port range A-B")),
                    }
                };
                let protos: &[u32] = match q.proto {
                    Some(Proto::Tcp) => &[6],
                    Some(Proto::Udp) => &[17],
                    Some(Proto::Sctp) => &[132],
                    None | Some(Proto::Ip | Proto::Ip6) => &[6, 17, 132],
                    Some(Proto::Arp) => return Err(self.err_prev("`port` after arp")),
                };
                let mut v = Vec::new();
                if q.proto != Some(Proto::Ip6) {
                    v.push(port4(protos, q.dir, lo, hi));
                }
                if q.proto != Some(Proto::Ip) {
                    v.push(port6(protos, q.dir, lo, hi));
                }
                Ok(or(v))
            }
        }
    }

    /// IPv4 address under mask, in IP (and, unqualified, ARP and RARP).
    fn net4(&self, q: Quals, a: Ipv4Addr, m: u32) -> Result<Cond, FilterError> {
        let a = u32::from(a);
        let test =
            |off: u32| Cond::Test(Load::Net(W, off), (m != u32::MAX).then_some(m), Op::Eq, a);
        let dirs = |s: u32, d: u32| match q.dir {
            Dir::Src => test(s),
            Dir::Dst => test(d),
            Dir::Either => or(vec![test(s), test(d)]),
            Dir::Both => and(vec![test(s), test(d)]),
        };
        let ip = and(vec![proto(ETH_IP), dirs(12, 16)]);
        let arp = |t| and(vec![proto(t), dirs(14, 24)]);
        Ok(match q.proto {
            Some(Proto::Ip) => ip,
            Some(Proto::Arp) => arp(ETH_ARP),
            None => or(vec![ip, arp(ETH_ARP), arp(ETH_RARP)]),
            _ => return Err(self.err_prev("an IPv4 address with this protocol")),
        })
    }

    /// IPv6 address, first `len` bits.
    fn net6(&self, q: Quals, a: Ipv6Addr, len: u32) -> Result<Cond, FilterError> {
        if matches!(q.proto, Some(Proto::Ip | Proto::Arp)) {
            return Err(self.err_prev("an IPv6 address with this protocol"));
        }
        let words: Vec<u32> = a
            .octets()
            .chunks(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let test = |base: u32| {
            let mut v = Vec::new();
            for (i, w) in words.iter().enumerate() {
                let bits = len.saturating_sub(32 * i as u32).min(32);
                if bits == 0 {
                    break;
                }
                let m = if bits == 32 {
                    u32::MAX
                } else {
                    !(u32::MAX >> bits)
                };
                v.push(Cond::Test(
                    Load::Net(W, base + 4 * i as u32),
                    (m != u32::MAX).then_some(m),
                    Op::Eq,
                    w & m,
                ));
            }
            and(v)
        };
        let d = match q.dir {
            Dir::Src => test(8),
            Dir::Dst => test(24),
            Dir::Either => or(vec![test(8), test(24)]),
            Dir::Both => and(vec![test(8), test(24)]),
        };
        Ok(and(vec![proto(ETH_IP6), d]))
    }
}

fn is_keyword(t: &str) -> bool {
    matches!(
        t,
        "and"
            | "or"
            | "not"
            | "&&"
            | "||"
            | "host"
            | "net"
            | "port"
            | "portrange"
            | "src"
            | "dst"
            | "ip"
            | "ip6"
            | "arp"
            | "tcp"
            | "udp"
            | "sctp"
            | "icmp"
            | "icmp6"
            | "proto"
            | "vlan"
            | "less"
            | "greater"
            | "mask"
    )
}

fn looks_like_value(t: &str) -> bool {
    t.parse::<IpAddr>().is_ok()
}

fn parse_num(t: &str) -> Option<u32> {
    if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u32::from_str_radix(h, 16).ok()
    } else {
        t.parse().ok()
    }
}

/// IPv4 with protocol `n`.
fn ip4_proto(n: u32) -> Cond {
    and(vec![proto(ETH_IP), eq(Load::Net(B, 9), n & 0xff)])
}

/// IPv6 with next header `n` (also behind a fragment header, as libpcap).
fn ip6_proto(n: u32) -> Cond {
    and(vec![
        proto(ETH_IP6),
        or(vec![
            eq(Load::Net(B, 6), n & 0xff),
            and(vec![
                eq(Load::Net(B, 6), 44),
                eq(Load::Net(B, 40), n & 0xff),
            ]),
        ]),
    ])
}

fn transport(n: u32) -> Cond {
    or(vec![ip6_proto(n), ip4_proto(n)])
}

fn in_range(l: Load, lo: u32, hi: u32) -> Cond {
    if lo == hi {
        eq(l, lo)
    } else {
        and(vec![
            Cond::Test(l, None, Op::Ge, lo),
            Cond::Not(Box::new(Cond::Test(l, None, Op::Gt, hi))),
        ])
    }
}

fn ports(dir: Dir, lo: u32, hi: u32, at: impl Fn(u32) -> Load) -> Cond {
    let s = in_range(at(0), lo, hi);
    let d = in_range(at(2), lo, hi);
    match dir {
        Dir::Src => s,
        Dir::Dst => d,
        Dir::Either => or(vec![s, d]),
        Dir::Both => and(vec![s, d]),
    }
}

fn port4(protos: &[u32], dir: Dir, lo: u32, hi: u32) -> Cond {
    and(vec![
        proto(ETH_IP),
        or(protos.iter().map(|p| eq(Load::Net(B, 9), *p)).collect()),
        // Not a later fragment (no ports there).
        Cond::Not(Box::new(Cond::Test(Load::Net(H, 6), None, Op::Set, 0x1fff))),
        ports(dir, lo, hi, |o| Load::AfterIp4(H, o)),
    ])
}

fn port6(protos: &[u32], dir: Dir, lo: u32, hi: u32) -> Cond {
    and(vec![
        proto(ETH_IP6),
        or(protos.iter().map(|p| eq(Load::Net(B, 6), *p)).collect()),
        ports(dir, lo, hi, |o| Load::Net(H, 40 + o)),
    ])
}

/// An instruction whose jumps name labels.
enum Item {
    Insn(u16, u32),
    Cond(u16, u32, usize, usize),
    Ja(usize),
    Label(usize),
}

struct Gen {
    items: Vec<Item>,
    labels: usize,
    l3: u32,
}

impl Gen {
    fn label(&mut self) -> usize {
        self.labels += 1;
        self.labels - 1
    }

    fn load(&mut self, l: Load) {
        let i = match l {
            Load::Proto => Item::Insn(LD | H | ABS, AD_PROTOCOL),
            Load::VlanPresent => Item::Insn(LD | W | ABS, AD_VLAN_TAG_PRESENT),
            Load::VlanTag => Item::Insn(LD | W | ABS, AD_VLAN_TAG),
            Load::Len => Item::Insn(LD | W | LEN, 0),
            Load::Net(size, off) => Item::Insn(LD | size | ABS, self.l3 + off),
            Load::AfterIp4(size, off) => {
                self.items.push(Item::Insn(LDX | B | MSH, self.l3));
                Item::Insn(LD | size | IND, self.l3 + off)
            }
        };
        self.items.push(i);
    }

    fn cond(&mut self, c: &Cond, t: usize, f: usize) {
        match c {
            Cond::Test(l, mask, op, k) => {
                self.load(*l);
                if let Some(m) = mask {
                    self.items.push(Item::Insn(ALU | AND | K, *m));
                }
                let code = JMP
                    | K
                    | match op {
                        Op::Eq => JEQ,
                        Op::Gt => JGT,
                        Op::Ge => JGE,
                        Op::Set => JSET,
                    };
                self.items.push(Item::Cond(code, *k, t, f));
            }
            Cond::Not(c) => self.cond(c, f, t),
            Cond::And(v) | Cond::Or(v) => {
                let is_and = matches!(c, Cond::And(_));
                let Some((last, first)) = v.split_last() else {
                    self.items.push(Item::Ja(if is_and { t } else { f }));
                    return;
                };
                for c in first {
                    let next = self.label();
                    if is_and {
                        self.cond(c, next, f);
                    } else {
                        self.cond(c, t, next);
                    }
                    self.items.push(Item::Label(next));
                }
                self.cond(last, t, f);
            }
        }
    }
}

/// The program that keeps every packet, whole.
pub fn accept_all(snaplen: u32) -> Vec<Insn> {
    vec![Insn {
        code: RET | K,
        jt: 0,
        jf: 0,
        k: snaplen,
    }]
}

/// Compiles `expr` (tcpdump syntax) for `link`; kept packets are cut at
/// `snaplen` bytes.
pub fn compile(expr: &str, link: Link, snaplen: u32) -> Result<Vec<Insn>, FilterError> {
    let toks = tokenize(expr);
    if toks.is_empty() {
        return Ok(accept_all(snaplen));
    }
    let mut p = Parser {
        toks,
        pos: 0,
        last: None,
    };
    let c = p.expr(0)?;
    if p.pos < p.toks.len() {
        return Err(p.err("expected `and`, `or` or the end"));
    }
    let mut g = Gen {
        items: Vec::new(),
        labels: 2,
        l3: link.l3(),
    };
    g.cond(&c, 0, 1);
    g.items.push(Item::Label(0));
    g.items.push(Item::Insn(RET | K, snaplen));
    g.items.push(Item::Label(1));
    g.items.push(Item::Insn(RET | K, 0));
    // Positions of labels.
    let mut at = vec![0usize; g.labels];
    let mut n = 0usize;
    for i in &g.items {
        match i {
            Item::Label(l) => at[*l] = n,
            _ => n += 1,
        }
    }
    if n > 4096 {
        return Err(FilterError::TooLarge);
    }
    let mut out = Vec::with_capacity(n);
    for i in &g.items {
        let pc = out.len();
        let rel = |l: usize| at[l].checked_sub(pc + 1);
        match i {
            Item::Label(_) => continue,
            Item::Insn(code, k) => out.push(Insn {
                code: *code,
                jt: 0,
                jf: 0,
                k: *k,
            }),
            Item::Ja(l) => out.push(Insn {
                code: JMP | JA,
                jt: 0,
                jf: 0,
                k: rel(*l).ok_or(FilterError::TooLarge)? as u32,
            }),
            Item::Cond(code, k, t, f) => {
                let jt = rel(*t).and_then(|d| u8::try_from(d).ok());
                let jf = rel(*f).and_then(|d| u8::try_from(d).ok());
                let (Some(jt), Some(jf)) = (jt, jf) else {
                    return Err(FilterError::TooLarge);
                };
                out.push(Insn {
                    code: *code,
                    jt,
                    jf,
                    k: *k,
                });
            }
        }
    }
    Ok(out)
}

/// A packet as the kernel's filter sees it, for [`run`].
#[derive(Debug, Clone)]
pub struct Frame<'a> {
    /// The bytes the filter reads (link header included for Ethernet).
    pub data: &'a [u8],
    /// `skb->protocol` (host order).
    pub protocol: u16,
    /// The VLAN tag taken out of the frame, if any.
    pub vlan: Option<u16>,
}

/// Runs a classic BPF program over a frame as the kernel does; returns
/// the number of bytes to keep (0: drop). Out-of-range loads drop the
/// packet, as in the kernel.
pub fn run(prog: &[Insn], f: &Frame<'_>) -> u32 {
    let (mut a, mut x) = (0u32, 0u32);
    let mut pc = 0usize;
    let load = |off: u32, size: u16| -> Option<u32> {
        if off >= AD {
            return match off {
                AD_PROTOCOL => Some(u32::from(f.protocol)),
                AD_VLAN_TAG => Some(u32::from(f.vlan.unwrap_or(0))),
                AD_VLAN_TAG_PRESENT => Some(u32::from(f.vlan.is_some())),
                _ => None,
            };
        }
        let o = off as usize;
        let n = match size {
            W => 4,
            H => 2,
            _ => 1,
        };
        let b = f.data.get(o..o.checked_add(n)?)?;
        Some(b.iter().fold(0u32, |acc, v| (acc << 8) | u32::from(*v)))
    };
    while let Some(i) = prog.get(pc) {
        pc += 1;
        let class = i.code & 0x07;
        let size = i.code & 0x18;
        let mode = i.code & 0xe0;
        match class {
            LD => {
                a = match mode {
                    ABS => match load(i.k, size) {
                        Some(v) => v,
                        None => return 0,
                    },
                    IND => match load(x.wrapping_add(i.k), size) {
                        Some(v) => v,
                        None => return 0,
                    },
                    LEN => f.data.len() as u32,
                    _ => i.k,
                }
            }
            LDX => {
                x = match mode {
                    MSH => match load(i.k, B) {
                        Some(v) => 4 * (v & 0xf),
                        None => return 0,
                    },
                    _ => i.k,
                }
            }
            ALU if i.code & 0xf0 == AND => a &= i.k,
            JMP => {
                let taken = match i.code & 0xf0 {
                    JA => {
                        pc += i.k as usize;
                        continue;
                    }
                    JEQ => a == i.k,
                    JGT => a > i.k,
                    JGE => a >= i.k,
                    JSET => a & i.k != 0,
                    _ => return 0,
                };
                pc += usize::from(if taken { i.jt } else { i.jf });
            }
            RET => return i.k,
            _ => return 0,
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth(ethertype: u16, l3: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(l3);
        f
    }

    fn ip4(proto: u8, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, proto, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&[0u8; 16]);
        p
    }

    fn keeps(filter: &str, data: &[u8], protocol: u16, vlan: Option<u16>) -> bool {
        let prog = compile(filter, Link::Ethernet, 262144).unwrap();
        run(
            &prog,
            &Frame {
                data,
                protocol,
                vlan,
            },
        ) > 0
    }

    #[test]
    fn primitives_and_combinations() {
        let tcp = eth(0x800, &ip4(6, [10, 0, 0, 1], [10, 0, 0, 2], 40000, 80));
        let udp = eth(0x800, &ip4(17, [10, 0, 0, 1], [192, 168, 1, 9], 5353, 53));
        let k = |f: &str, d: &[u8]| keeps(f, d, 0x800, None);
        assert!(k("tcp port 80", &tcp));
        assert!(!k("udp port 80", &tcp));
        assert!(k("dst port 80", &tcp));
        assert!(!k("src port 80", &tcp));
        assert!(k("host 10.0.0.2", &tcp));
        assert!(k("src host 10.0.0.1 and dst net 10.0.0.0/8", &tcp));
        assert!(k("net 192.168.0.0 mask 255.255.0.0", &udp));
        assert!(k("net 192.168", &udp));
        assert!(!k("net 192.168.0.0/16 and tcp", &udp));
        assert!(k("portrange 50-60", &udp));
        assert!(!k("portrange 1-52", &udp));
        assert!(k("not tcp", &udp));
        assert!(k("! tcp && (udp || icmp)", &udp));
        assert!(k("host 10.9.9.9 or 10.0.0.2", &tcp));
        assert!(!k("ip6", &tcp));
        assert!(k("less 100", &tcp) && !k("greater 100", &tcp));
        assert!(k("proto 17", &udp) && k("ip proto 17", &udp));
        // Left to right, `and` and `or` alike.
        assert!(!k("udp or tcp and port 443", &tcp));
        let tagged = eth(0x800, &ip4(6, [1, 1, 1, 1], [2, 2, 2, 2], 1, 2));
        assert!(keeps("vlan 100 and tcp", &tagged, 0x800, Some(100)));
        assert!(!keeps("vlan 101", &tagged, 0x800, Some(100)));
        assert!(!keeps("vlan", &tagged, 0x800, None));
    }

    #[test]
    fn ipv6_hosts_and_ports() {
        let mut p = vec![0x60, 0, 0, 0, 0, 20, 6, 64];
        p.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&443u16.to_be_bytes());
        p.extend_from_slice(&50000u16.to_be_bytes());
        p.extend_from_slice(&[0u8; 16]);
        let f = eth(0x86dd, &p);
        let k = |e: &str| keeps(e, &f, 0x86dd, None);
        assert!(k("ip6 host 2001:db8::2"));
        assert!(k("src host 2001:db8::1 and tcp src port 443"));
        assert!(k("net 2001:db8::/32"));
        assert!(!k("net 2001:db9::/32"));
        assert!(!k("ip and port 443"));
        assert!(k("tcp"));
        // Cooked: the same at offset 0.
        let prog = compile("tcp port 443", Link::Cooked, 100).unwrap();
        let fr = Frame {
            data: &p,
            protocol: 0x86dd,
            vlan: None,
        };
        assert_eq!(run(&prog, &fr), 100);
    }

    #[test]
    fn errors_name_the_token() {
        for (f, tok) in [
            ("tcp port http", "http"),
            ("ether host 00:11:22:33:44:55", "ether"),
            ("host example.com", "example.com"),
            ("tcp[13] & 2 != 0", "tcp[13]"),
            ("port 80 xor port 81", "xor"),
            ("(tcp", ""),
            ("portrange 5", "5"),
        ] {
            let e = compile(f, Link::Ethernet, 1).unwrap_err().to_string();
            assert!(
                e.contains(&format!("`{tok}`")) || tok.is_empty(),
                "{f}: {e}"
            );
        }
        assert!(compile("", Link::Ethernet, 9).unwrap() == accept_all(9));
    }

    /// Classic pcap files of the shared test data: the packets the compiled
    /// program keeps are the packets tcpdump keeps. Frames with a VLAN tag
    /// are left out (offline libpcap filters see the tag in the frame, the
    /// kernel takes it out first).
    #[test]
    fn same_packets_as_tcpdump_on_the_shared_captures() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/pcaps");
        let tcpdump = crate::capture::find_tcpdump();
        let (Some(tcpdump), true) = (tcpdump, dir.is_dir()) else {
            assert!(!ci, "tcpdump or {} missing under CI", dir.display());
            eprintln!("SKIPPED: tcpdump or the shared test captures are missing");
            return;
        };
        let filters = [
            "tcp",
            "udp",
            "icmp or icmp6",
            "ip6",
            "arp",
            "tcp port 80",
            "port 53 or port 443",
            "udp and not port 53",
            "dst port 80",
            "src portrange 1024-65535",
            "host 192.168.1.1",
            "net 10.0.0.0/8",
            "ip and net 172.16.0.0 mask 255.240.0.0",
            "ip6 and (tcp or udp)",
            "greater 200",
            "less 60",
            "not (tcp or udp)",
            "proto 17",
        ];
        let mut compared = 0;
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
            .collect();
        names.sort();
        for path in names {
            let Some(frames) = read_ethernet_pcap(&path) else {
                continue;
            };
            if frames.is_empty() || frames.iter().any(|f| has_vlan(f)) {
                continue;
            }
            for filt in filters {
                let prog = compile(filt, Link::Ethernet, 262144).unwrap();
                let ours = frames
                    .iter()
                    .filter(|d| {
                        let protocol = if d.len() >= 14 {
                            u16::from_be_bytes([d[12], d[13]])
                        } else {
                            0
                        };
                        run(
                            &prog,
                            &Frame {
                                data: d,
                                protocol,
                                vlan: None,
                            },
                        ) > 0
                    })
                    .count();
                let out = std::process::Command::new(&tcpdump)
                    .arg("-r")
                    .arg(&path)
                    .arg("--count")
                    .arg(filt)
                    .output()
                    .unwrap();
                if !out.status.success() {
                    // A file tcpdump cannot read (malformed on purpose).
                    break;
                }
                let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&out.stderr));
                let theirs: usize = text
                    .lines()
                    .rev()
                    .find_map(|l| l.strip_suffix(" packets").or(l.strip_suffix(" packet")))
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or_else(|| panic!("{}: {filt}: tcpdump said {text:?}", path.display()));
                assert_eq!(ours, theirs, "{}: `{filt}`", path.display());
                compared += 1;
            }
        }
        assert!(compared >= 100, "only {compared} comparisons");
    }

    fn has_vlan(f: &[u8]) -> bool {
        f.len() >= 14 && matches!(u16::from_be_bytes([f[12], f[13]]), 0x8100 | 0x88a8 | 0x9100)
    }

    /// The frames of a classic pcap file with Ethernet link type; `None`
    /// for anything else.
    fn read_ethernet_pcap(p: &std::path::Path) -> Option<Vec<Vec<u8>>> {
        let b = std::fs::read(p).ok()?;
        let magic = b.get(..4)?;
        let le = match magic {
            [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
            [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
            _ => return None,
        };
        let u32_at = |o: usize| -> Option<u32> {
            let s: [u8; 4] = b.get(o..o + 4)?.try_into().ok()?;
            Some(if le {
                u32::from_le_bytes(s)
            } else {
                u32::from_be_bytes(s)
            })
        };
        if u32_at(20)? & 0xffff != 1 {
            return None;
        }
        let mut out = Vec::new();
        let mut o = 24;
        while o + 16 <= b.len() {
            let incl = u32_at(o + 8)? as usize;
            let orig = u32_at(o + 12)? as usize;
            let d = b.get(o + 16..o + 16 + incl)?;
            if incl != orig {
                // A cut frame: the kernel's length differs; leave the file out.
                return None;
            }
            out.push(d.to_vec());
            o += 16 + incl;
        }
        Some(out)
    }
}
