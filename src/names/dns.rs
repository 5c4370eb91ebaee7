//! DNS responses: the question name, its CNAME chain and the A/AAAA
//! addresses it resolved to. Names are decompressed with loop protection;
//! every count and length is bounded.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::tls::Rd;

/// Longest name kept (RFC 1035: 255 bytes on the wire).
const MAX_NAME: usize = 255;
/// Most compression pointers followed in one name.
const MAX_HOPS: usize = 64;
/// Most resource records read from one message.
const MAX_RECORDS: usize = 256;
/// Most answers kept from one message.
pub const MAX_ANSWERS: usize = 64;
/// Longest CNAME chain followed.
const MAX_CHAIN: usize = 16;

/// What one response says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Transaction id.
    pub id: u16,
    /// The question name, lower-case and escaped.
    pub question: String,
    /// The CNAME chain from the question (the question first), when the
    /// answers hold one.
    pub chain: Vec<String>,
    /// Addresses of the chain's A/AAAA records, with their TTL in seconds.
    pub addrs: Vec<(IpAddr, u32)>,
}

/// The transaction id and whether `msg` is a query (QR bit clear).
pub fn header(msg: &[u8]) -> Option<(u16, bool)> {
    let id = u16::from_be_bytes([*msg.first()?, *msg.get(1)?]);
    Some((id, msg.get(2)? & 0x80 == 0))
}

/// A name as text: lower-case, bytes outside `[a-z0-9-_*]` escaped as
/// `\xHH`, labels joined with `.`.
fn push_label(out: &mut String, label: &[u8]) {
    if !out.is_empty() {
        out.push('.');
    }
    for &b in label {
        let c = b.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'*' {
            out.push(c as char);
        } else {
            out.push_str(&format!("\\x{c:02x}"));
        }
    }
}

/// Reads a (possibly compressed) name at `pos` of `msg`; returns it and the
/// position after it in the record (not after any pointer target).
fn name(msg: &[u8], mut pos: usize) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut wire = 0usize;
    let mut after = None;
    let mut hops = 0;
    loop {
        let len = *msg.get(pos)?;
        match len & 0xc0 {
            0x00 => {
                if len == 0 {
                    return Some((out, after.unwrap_or(pos + 1)));
                }
                let l = usize::from(len);
                let label = msg.get(pos + 1..pos + 1 + l)?;
                wire += l + 1;
                if wire > MAX_NAME {
                    return None;
                }
                push_label(&mut out, label);
                pos += 1 + l;
            }
            0xc0 => {
                let target = usize::from(u16::from_be_bytes([len, *msg.get(pos + 1)?]) & 0x3fff);
                hops += 1;
                // A pointer must point backwards: loops are impossible then,
                // the hop count bounds the rest.
                if hops > MAX_HOPS || target >= pos {
                    return None;
                }
                after.get_or_insert(pos + 2);
                pos = target;
            }
            _ => return None,
        }
    }
}

/// Parses a DNS response message (not a query). `None` when it is not a
/// response or is malformed before its answers.
pub fn parse_response(msg: &[u8]) -> Option<Response> {
    let mut r = Rd::new(msg);
    let id = r.u16()?;
    let flags = r.u16()?;
    if flags & 0x8000 == 0 || (flags >> 11) & 0xf != 0 {
        return None; // a query, or not a standard query's response
    }
    let qd = r.u16()?;
    let an = r.u16()?;
    if qd > 1 {
        return None;
    }
    r.take(4)?; // NS and AR counts: not read
                // Multicast DNS announcements carry no question: the owner of their
                // first address record stands for it.
    let (mut question, mut pos) = if qd == 1 {
        let (q, next) = name(msg, 12)?;
        (q, next.checked_add(4)?) // QTYPE, QCLASS
    } else {
        (String::new(), 12)
    };
    msg.get(..pos)?;
    let mut cnames: Vec<(String, String)> = Vec::new();
    let mut addrs: Vec<(String, IpAddr, u32)> = Vec::new();
    for _ in 0..usize::from(an).min(MAX_RECORDS) {
        let Some((owner, p)) = name(msg, pos) else {
            break;
        };
        let Some(fixed) = msg.get(p..p + 10) else {
            break;
        };
        let ty = u16::from_be_bytes([fixed[0], fixed[1]]);
        let class = u16::from_be_bytes([fixed[2], fixed[3]]);
        let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
        let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let rd_at = p + 10;
        let Some(rdata) = msg.get(rd_at..rd_at + rdlen) else {
            break;
        };
        pos = rd_at + rdlen;
        // mDNS uses the top bit of the class as the cache-flush flag.
        let class = class & 0x7fff;
        // RFC 2181: a TTL with the top bit set is taken as 0.
        let ttl = if ttl > i32::MAX as u32 { 0 } else { ttl };
        if class != 1 {
            continue;
        }
        match (ty, rdlen) {
            (1, 4) => addrs.push((
                owner,
                IpAddr::V4(Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3])),
                ttl,
            )),
            (28, 16) => {
                let mut a = [0u8; 16];
                a.copy_from_slice(rdata);
                addrs.push((owner, IpAddr::V6(Ipv6Addr::from(a)), ttl));
            }
            (5, _) => {
                if let Some((target, _)) = name(msg, rd_at) {
                    cnames.push((owner, target));
                }
            }
            _ => {}
        }
    }
    if qd == 0 {
        question = addrs.first().map(|a| a.0.clone()).unwrap_or_default();
    }
    let mut chain = vec![question.clone()];
    while chain.len() <= MAX_CHAIN {
        let last = chain.last().cloned().unwrap_or_default();
        match cnames.iter().find(|(o, _)| *o == last) {
            Some((_, t)) if !chain.contains(t) => chain.push(t.clone()),
            _ => break,
        }
    }
    let addrs: Vec<(IpAddr, u32)> = addrs
        .into_iter()
        .filter(|(o, _, _)| chain.contains(o))
        .map(|(_, a, t)| (a, t))
        .take(MAX_ANSWERS)
        .collect();
    if chain.len() == 1 {
        chain.clear();
    }
    Some(Response {
        id,
        question,
        chain,
        addrs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qname(n: &str) -> Vec<u8> {
        let mut v = Vec::new();
        for l in n.split('.') {
            v.push(l.len() as u8);
            v.extend(l.as_bytes());
        }
        v.push(0);
        v
    }

    /// www.Example.com CNAME edge.cdn.net (compressed), A 192.0.2.7.
    fn response() -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 3, 0, 0, 0, 0];
        m.extend(qname("www.Example.com"));
        m.extend([0, 1, 0, 1]);
        // CNAME, owner = pointer to the question (offset 12).
        m.extend([0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60]);
        let target = qname("edge.cdn.net");
        let target_at = m.len() + 2;
        m.extend((target.len() as u16).to_be_bytes());
        m.extend(&target);
        // A for the CNAME target, by pointer.
        m.extend([
            0xc0,
            target_at as u8,
            0,
            1,
            0,
            1,
            0,
            0,
            1,
            0,
            0,
            4,
            192,
            0,
            2,
            7,
        ]);
        // An A record of an unrelated owner: not an answer to the question.
        m.extend(qname("other.org"));
        m.extend([0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 198, 51, 100, 1]);
        m
    }

    #[test]
    fn cname_chain_and_compression() {
        let r = parse_response(&response()).unwrap();
        assert_eq!(r.id, 0x1234);
        assert_eq!(r.question, "www.example.com");
        assert_eq!(r.chain, vec!["www.example.com", "edge.cdn.net"]);
        assert_eq!(r.addrs, vec![("192.0.2.7".parse().unwrap(), 256)]);
    }

    #[test]
    fn queries_loops_and_cuts_give_nothing_or_less() {
        let mut q = response();
        q[2] = 0x01; // QR clear: a query
        assert!(parse_response(&q).is_none());
        // A pointer to itself (forward/self pointers are refused).
        let mut l = vec![
            0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1,
        ];
        assert!(parse_response(&l).is_none());
        l[13] = 14;
        assert!(parse_response(&l).is_none());
        let full = response();
        for cut in 0..full.len() {
            let _ = parse_response(&full[..cut]);
        }
        // Escaping: a label with a dot and a control byte.
        let mut m = vec![
            0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'a', b'.', 7, 0, 0, 1, 0, 1,
        ];
        assert_eq!(parse_response(&m).unwrap().question, "a\\x2e\\x07");
        m[12] = 0x40; // reserved label type
        assert!(parse_response(&m).is_none());
    }
}
