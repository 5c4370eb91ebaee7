//! ctnetlink: the kernel's connection-tracking table over netlink
//! (`NETLINK_NETFILTER`, subsystem `NFNL_SUBSYS_CTNETLINK`), dumped with
//! `IPCTNL_MSG_CT_GET` + `NLM_F_DUMP` and followed through the
//! `NFNLGRP_CONNTRACK_NEW` / `_DESTROY` multicast groups.
//!
//! The socket calls are in `ksys`. Message parsing ([`parse_messages`])
//! is pure code over bytes, tested on its own.

use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};

use procflow_format::conntrack::{Entry, EventKind, Tuple, L4};

use crate::ksys;
use crate::nlmsg::{attrs, NlReader, NlWriter, NLMSG_DONE, NLMSG_ERROR, NLM_F_DUMP, NLM_F_REQUEST};

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const IPCTNL_MSG_CT_GET_STATS: u16 = 5;
const CTA_STATS_GLOBAL_ENTRIES: u16 = 1;
/// Multicast group bits: `1 << (NFNLGRP_CONNTRACK_NEW - 1)` and
/// `1 << (NFNLGRP_CONNTRACK_DESTROY - 1)`.
pub const GROUPS_NEW_DESTROY: u32 = 0x1 | 0x4;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_STATUS: u16 = 3;
const CTA_TIMEOUT: u16 = 7;
const CTA_MARK: u16 = 8;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_PROTO_ICMP_ID: u16 = 4;
const CTA_PROTO_ICMP_TYPE: u16 = 5;
const CTA_PROTO_ICMP_CODE: u16 = 6;
const CTA_PROTO_ICMPV6_ID: u16 = 7;
const CTA_PROTO_ICMPV6_TYPE: u16 = 8;
const CTA_PROTO_ICMPV6_CODE: u16 = 9;

/// An open `NETLINK_NETFILTER` socket, bound in the namespace it was
/// opened in (it stays there whatever thread uses it later).
#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    /// Opens and binds a socket in the calling thread's network namespace;
    /// `groups` subscribes to multicast groups (0 for a dump socket).
    pub fn open(groups: u32, nonblocking: bool) -> io::Result<Socket> {
        let mut ty = libc::SOCK_RAW | libc::SOCK_CLOEXEC;
        if nonblocking {
            ty |= libc::SOCK_NONBLOCK;
        }
        let fd = ksys::netlink_socket(ty, NETLINK_NETFILTER, groups)?;
        let s = Socket { fd, seq: 0 };
        // Event bursts (thousands of connections a second) need room; a
        // refusal only means the default size.
        let size: libc::c_int = if groups != 0 { 8 << 20 } else { 1 << 20 };
        ksys::sock::set_rcvbuf(&s.fd, size);
        if !nonblocking {
            // A dump never waits more than 2 s for the kernel's answer.
            let _ = ksys::sock::set_recv_timeout(&s.fd, 2);
        }
        Ok(s)
    }

    /// Opens a socket inside the network namespace of `pid`: from a
    /// short-lived thread that `setns`es there first (the socket keeps that
    /// namespace; the recorder's own threads never change namespace).
    pub fn open_in(pid: u32, groups: u32, nonblocking: bool) -> io::Result<Socket> {
        let ns = File::open(format!("/proc/{pid}/ns/net"))?;
        std::thread::spawn(move || {
            // Only this short-lived thread changes namespace.
            ksys::netlink::enter_netns(&ns)?;
            Socket::open(groups, nonblocking)
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
    }

    /// The raw descriptor, for poll(2).
    pub fn raw_fd(&self) -> libc::c_int {
        self.fd.as_raw_fd()
    }

    /// Sends a ctnetlink request of type `msg` with `flags`, no attributes.
    fn request(&mut self, msg: u16, flags: u16) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let ty = (NFNL_SUBSYS_CTNETLINK << 8) | msg;
        let mut req = NlWriter::new(ty, NLM_F_REQUEST | flags, self.seq, 0);
        // nfgenmsg: family AF_UNSPEC (every family), version 0, res_id 0.
        req.put(&[0; 4]);
        let req = req.finish();
        ksys::netlink::send(&self.fd, &req)
    }

    /// The number of entries of the namespace's table
    /// (`IPCTNL_MSG_CT_GET_STATS`): cheap, where a dump walks the whole
    /// hash table, which all namespaces share, even for an empty one.
    pub fn count(&mut self, buf: &mut Vec<u8>) -> io::Result<u32> {
        self.request(IPCTNL_MSG_CT_GET_STATS, 0)?;
        loop {
            let k = self.recv(buf)?;
            let mut found = None;
            let errno = parse_messages(&buf[..k], Some(self.seq), |m| {
                if let Message::Stats(n) = m {
                    found = Some(n);
                }
            })?;
            if errno != 0 {
                return Err(io::Error::from_raw_os_error(errno));
            }
            if let Some(n) = found {
                return Ok(n);
            }
        }
    }

    /// Dumps the whole table into `out` (cleared first). `buf` is reused
    /// between calls.
    pub fn dump(&mut self, buf: &mut Vec<u8>, out: &mut Vec<Entry>) -> io::Result<()> {
        out.clear();
        self.request(IPCTNL_MSG_CT_GET, NLM_F_DUMP)?;
        loop {
            let k = self.recv(buf)?;
            let mut done = false;
            parse_messages(&buf[..k], Some(self.seq), |m| match m {
                Message::Entry(_, e) => out.push(e),
                Message::Stats(_) => {}
                Message::Done => done = true,
                Message::Error(errno) => {
                    done = true;
                    if errno != 0 {
                        out.clear();
                    }
                }
            })
            .and_then(|errno| {
                if errno != 0 {
                    Err(io::Error::from_raw_os_error(errno))
                } else {
                    Ok(())
                }
            })?;
            if done {
                return Ok(());
            }
        }
    }

    /// One recv(2) into `buf` (grown to 64 KiB); the byte count.
    pub fn recv(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        buf.resize(64 * 1024, 0);
        ksys::netlink::recv_blocking(&self.fd, buf)
    }
}

/// Waits until one of the fds is readable (one copy, in `ksys`).
pub use crate::ksys::poll_readable;

/// One netlink message of a ctnetlink answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A conntrack entry: from a dump (`New`), or an event.
    Entry(EventKind, Entry),
    /// End of a dump.
    Done,
    /// An error (positive errno) or an acknowledgement (0).
    Error(i32),
    /// The namespace's number of entries (answer to a stats request).
    Stats(u32),
}

/// Parses the netlink messages in `bytes`, passing each one to `on`;
/// messages of another sequence number (when `seq` is given) and of other
/// types are skipped, entries that cannot be read are skipped too. Returns
/// the errno of an error message (0 if none).
pub fn parse_messages(
    bytes: &[u8],
    seq: Option<u32>,
    mut on: impl FnMut(Message),
) -> io::Result<i32> {
    let mut errno = 0;
    let mut msgs = NlReader::new(bytes);
    for m in msgs.by_ref() {
        let (ty, body) = (m.ty, m.body);
        if seq.is_some_and(|s| s != m.seq) {
            continue;
        }
        match ty {
            NLMSG_DONE => on(Message::Done),
            NLMSG_ERROR => {
                let e = m.errno();
                if e != 0 {
                    errno = e;
                }
                on(Message::Error(e));
            }
            t if t >> 8 == NFNL_SUBSYS_CTNETLINK => {
                let kind = match t & 0xff {
                    IPCTNL_MSG_CT_NEW => EventKind::New,
                    IPCTNL_MSG_CT_DELETE => EventKind::Destroy,
                    IPCTNL_MSG_CT_GET_STATS => {
                        let n = attrs(body.get(4..).unwrap_or(&[]))
                            .find(|(ty, _)| *ty == CTA_STATS_GLOBAL_ENTRIES)
                            .and_then(|(_, p)| be32(p));
                        if let Some(n) = n {
                            on(Message::Stats(n));
                        }
                        continue;
                    }
                    _ => continue,
                };
                if let Some(e) = body.get(4..).and_then(parse_entry) {
                    on(Message::Entry(kind, e));
                }
            }
            _ => {}
        }
    }
    if let Some((off, len)) = msgs.bad() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("ctnetlink: message length {len} at byte {off} does not fit"),
        ));
    }
    Ok(errno)
}

fn be16(b: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(0..2)?.try_into().ok()?))
}

fn be32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(0..4)?.try_into().ok()?))
}

fn parse_tuple(b: &[u8]) -> Option<(u8, Tuple)> {
    let (mut src, mut dst) = (None, None);
    let mut proto = None;
    let (mut sport, mut dport) = (None, None);
    let (mut id, mut kind, mut code) = (None, None, None);
    for (ty, p) in attrs(b) {
        match ty {
            CTA_TUPLE_IP => {
                for (t, a) in attrs(p) {
                    let ip = match t {
                        CTA_IP_V4_SRC | CTA_IP_V4_DST => {
                            IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(a.get(0..4)?).ok()?))
                        }
                        CTA_IP_V6_SRC | CTA_IP_V6_DST => {
                            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(a.get(0..16)?).ok()?))
                        }
                        _ => continue,
                    };
                    if matches!(t, CTA_IP_V4_SRC | CTA_IP_V6_SRC) {
                        src = Some(ip);
                    } else {
                        dst = Some(ip);
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (t, a) in attrs(p) {
                    match t {
                        CTA_PROTO_NUM => proto = a.first().copied(),
                        CTA_PROTO_SRC_PORT => sport = be16(a),
                        CTA_PROTO_DST_PORT => dport = be16(a),
                        CTA_PROTO_ICMP_ID | CTA_PROTO_ICMPV6_ID => id = be16(a),
                        CTA_PROTO_ICMP_TYPE | CTA_PROTO_ICMPV6_TYPE => kind = a.first().copied(),
                        CTA_PROTO_ICMP_CODE | CTA_PROTO_ICMPV6_CODE => code = a.first().copied(),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let l4 = match (sport, dport, id) {
        (Some(src), Some(dst), _) => L4::Ports { src, dst },
        (_, _, Some(id)) => L4::Icmp {
            id,
            kind: kind.unwrap_or(0),
            code: code.unwrap_or(0),
        },
        _ => L4::None,
    };
    Some((
        proto?,
        Tuple {
            src: src?,
            dst: dst?,
            l4,
        },
    ))
}

/// Reads one entry from the attributes of a ctnetlink message (after its
/// 4-byte `nfgenmsg`); `None` when a tuple is missing.
pub fn parse_entry(b: &[u8]) -> Option<Entry> {
    let (mut orig, mut reply) = (None, None);
    let (mut status, mut zone, mut mark, mut timeout) = (0, 0, 0, 0);
    for (ty, p) in attrs(b) {
        match ty {
            CTA_TUPLE_ORIG => orig = parse_tuple(p),
            CTA_TUPLE_REPLY => reply = parse_tuple(p),
            CTA_STATUS => status = be32(p).unwrap_or(0),
            CTA_TIMEOUT => timeout = be32(p).unwrap_or(0),
            CTA_MARK => mark = be32(p).unwrap_or(0),
            CTA_ZONE => zone = be16(p).unwrap_or(0),
            _ => {}
        }
    }
    let (proto, orig) = orig?;
    let (_, reply) = reply?;
    Some(Entry {
        proto,
        orig,
        reply,
        status,
        zone,
        mark,
        timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((payload.len() + 4) as u16).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(payload);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    fn nested(ty: u16, parts: &[Vec<u8>]) -> Vec<u8> {
        attr(ty | 0x8000, &parts.concat())
    }

    fn tuple(ty: u16, src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16) -> Vec<u8> {
        nested(
            ty,
            &[
                nested(
                    CTA_TUPLE_IP,
                    &[attr(CTA_IP_V4_SRC, &src), attr(CTA_IP_V4_DST, &dst)],
                ),
                nested(
                    CTA_TUPLE_PROTO,
                    &[
                        attr(CTA_PROTO_NUM, &[6]),
                        attr(CTA_PROTO_SRC_PORT, &sp.to_be_bytes()),
                        attr(CTA_PROTO_DST_PORT, &dp.to_be_bytes()),
                    ],
                ),
            ],
        )
    }

    fn message(ty: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(&2u16.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(body);
        v
    }

    /// A message as the kernel builds it for a masqueraded connection.
    #[test]
    fn masquerade_entry_and_done() {
        let mut body = vec![2, 0, 0, 0];
        body.extend(tuple(
            CTA_TUPLE_ORIG,
            [10, 77, 0, 2],
            [198, 18, 0, 2],
            58036,
            9001,
        ));
        body.extend(tuple(
            CTA_TUPLE_REPLY,
            [198, 18, 0, 2],
            [198, 18, 0, 1],
            9001,
            40000,
        ));
        body.extend(attr(CTA_STATUS | 0x4000, &0x19eu32.to_be_bytes()));
        body.extend(attr(CTA_TIMEOUT, &431999u32.to_be_bytes()));
        body.extend(attr(CTA_MARK, &7u32.to_be_bytes()));
        let mut bytes = message(0x100, 5, &body);
        bytes.extend(message(0x100, 4, &body)); // another dump: skipped
        bytes.extend(message(NLMSG_DONE, 5, &[0, 0, 0, 0]));
        let mut got = Vec::new();
        assert_eq!(parse_messages(&bytes, Some(5), |m| got.push(m)).unwrap(), 0);
        assert_eq!(got.len(), 2);
        let Message::Entry(EventKind::New, e) = &got[0] else {
            panic!("{got:?}")
        };
        assert_eq!(
            e.format(),
            "tcp 10.77.0.2 198.18.0.2 58036 9001 198.18.0.2 198.18.0.1 9001 40000 0x19e 0 7 431999"
        );
        assert_eq!(got[1], Message::Done);
        // A destroy event; an error; truncated bytes never panic.
        let ev = message(0x102, 0, &body);
        let mut kinds = Vec::new();
        parse_messages(&ev, None, |m| kinds.push(m)).unwrap();
        assert!(matches!(kinds[0], Message::Entry(EventKind::Destroy, _)));
        let err = message(NLMSG_ERROR, 1, &(-1i32).to_ne_bytes());
        assert_eq!(parse_messages(&err, Some(1), |_| {}).unwrap(), 1);
        for cut in 0..bytes.len() {
            let _ = parse_messages(&bytes[..cut], Some(5), |_| {});
            let _ = parse_entry(&body[..cut.min(body.len())]);
        }
    }
}
