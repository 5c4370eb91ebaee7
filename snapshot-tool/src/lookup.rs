//! `capture-lookup`: the portable source of socket owners, for hosts where
//! the tracepoints are not available (or when `--sources lookup` forces it).
//!
//! A packet socket on the capture interface (or every interface of the
//! recorder's namespace) carries a classic BPF filter, run in the kernel,
//! that passes only TCP segments with SYN set (SYN and SYN-ACK) and UDP
//! datagrams, cut to their headers. For each tuple not seen recently a
//! reader thread asks the kernel at once for that one socket
//! (`NETLINK_SOCK_DIAG`, `inet_diag_req_v2` with the exact tuple, both
//! orientations: the packet may be sent or received), which gives the
//! socket's inode and uid; the pid holding the inode is then searched in
//! the fds of the pids that owned the last sockets found, else in those of
//! the socket uid's processes (bounded). Each socket found is written as a
//! `lookup` event with its inode.
//!
//! Decoding (filter, packet headers, netlink messages) is pure code here;
//! the system calls are in [`crate::ksys`].

use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::batch::{merge, Batch, Pids};
use crate::ksys::{self, SockFilter};
use crate::layout::EventRecord;
use crate::live;
use crate::nlmsg::{NlReader, NlWriter, NLMSG_ERROR, NLM_F_REQUEST};

/// Source name of the capture-triggered lookup.
pub const SRC_LOOKUP: &str = "capture-lookup";

/// Bytes kept of each packet: an IPv6 header and a TCP header with options.
pub const SNAPLEN: u32 = 128;
/// Tuples remembered so that one flow triggers one lookup.
const RECENT_TUPLES: usize = 16_384;
/// Pids that owned the last sockets found, searched first.
const RECENT_OWNERS: usize = 8;
/// Most processes whose fds one lookup reads.
const MAX_PIDS_PER_LOOKUP: usize = 512;
/// Time the fd searches may take per second (5 % of a core); past it,
/// sockets are counted as not searched until the next second.
const SEARCH_BUDGET: Duration = Duration::from_millis(50);

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;

/// The kernel filter: IPv4 or IPv6 (no extension headers), not a later
/// fragment; TCP with SYN set, or UDP. Accepted packets are cut to
/// [`SNAPLEN`] bytes. The packet socket is `SOCK_DGRAM`: offset 0 is the
/// network header.
pub fn filter() -> Vec<SockFilter> {
    const LD_H_ABS: u16 = 0x28;
    const LD_B_ABS: u16 = 0x30;
    const LD_B_IND: u16 = 0x50;
    const LDX_MSH: u16 = 0xb1;
    const JEQ: u16 = 0x15;
    const JSET: u16 = 0x45;
    const RET: u16 = 0x06;
    // SKF_AD_OFF + SKF_AD_PROTOCOL: the packet's ethertype.
    const AD_PROTOCOL: u32 = 0xffff_f000;
    let i = |code, jt, jf, k| SockFilter { code, jt, jf, k };
    vec![
        /* 0 */ i(LD_H_ABS, 0, 0, AD_PROTOCOL),
        /* 1 */ i(JEQ, 1, 0, u32::from(ETH_P_IP)), // -> 3
        /* 2 */ i(JEQ, 8, 14, u32::from(ETH_P_IPV6)), // -> 11, else drop
        /* 3 */ i(LD_H_ABS, 0, 0, 6), // flags + fragment offset
        /* 4 */ i(JSET, 12, 0, 0x1fff), // a later fragment: drop
        /* 5 */ i(LD_B_ABS, 0, 0, 9), // protocol
        /* 6 */ i(JEQ, 9, 0, 17), // UDP: accept
        /* 7 */ i(JEQ, 0, 9, 6), // not TCP: drop
        /* 8 */ i(LDX_MSH, 0, 0, 0), // X = IPv4 header length
        /* 9 */ i(LD_B_IND, 0, 0, 13), // TCP flags
        /* 10 */ i(JSET, 5, 6, 0x02), // SYN: accept, else drop
        /* 11 */ i(LD_B_ABS, 0, 0, 6), // IPv6 next header
        /* 12 */ i(JEQ, 3, 0, 17), // UDP: accept
        /* 13 */ i(JEQ, 0, 3, 6), // not TCP: drop
        /* 14 */ i(LD_B_ABS, 0, 0, 40 + 13), // TCP flags
        /* 15 */ i(JSET, 0, 1, 0x02), // SYN: accept, else drop
        /* 16 */ i(RET, 0, 0, SNAPLEN),
        /* 17 */ i(RET, 0, 0, 0),
    ]
}

/// The tuple of one packet as sent: protocol (6 or 17), source, destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    /// IP protocol number.
    pub proto: u8,
    /// Sender's address and port.
    pub src: (IpAddr, u16),
    /// Receiver's address and port.
    pub dst: (IpAddr, u16),
}

impl Tuple {
    /// The same flow whichever direction: the smaller end first.
    fn canonical(self) -> Tuple {
        if self.src <= self.dst {
            self
        } else {
            Tuple {
                proto: self.proto,
                src: self.dst,
                dst: self.src,
            }
        }
    }
}

/// Reads the tuple of a TCP or UDP packet starting at its network header;
/// `ethertype` says IPv4 or IPv6. `None` for anything else or a cut header.
pub fn parse_packet(ethertype: u16, b: &[u8]) -> Option<Tuple> {
    let (proto, src, dst, l4) = match ethertype {
        ETH_P_IP => {
            let ihl = usize::from(b.first()? & 0x0f) * 4;
            if ihl < 20 {
                return None;
            }
            let src: [u8; 4] = b.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = b.get(16..20)?.try_into().ok()?;
            (
                *b.get(9)?,
                IpAddr::V4(Ipv4Addr::from(src)),
                IpAddr::V4(Ipv4Addr::from(dst)),
                b.get(ihl..)?,
            )
        }
        ETH_P_IPV6 => {
            let src: [u8; 16] = b.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = b.get(24..40)?.try_into().ok()?;
            (
                *b.get(6)?,
                IpAddr::V6(Ipv6Addr::from(src)),
                IpAddr::V6(Ipv6Addr::from(dst)),
                b.get(40..)?,
            )
        }
        _ => return None,
    };
    if proto != 6 && proto != 17 {
        return None;
    }
    let sport = u16::from_be_bytes(l4.get(0..2)?.try_into().ok()?);
    let dport = u16::from_be_bytes(l4.get(2..4)?.try_into().ok()?);
    Some(Tuple {
        proto,
        src: (src, sport),
        dst: (dst, dport),
    })
}

fn ip_words(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v) => {
            let mut w = [0u8; 16];
            w[..4].copy_from_slice(&v.octets());
            w
        }
        IpAddr::V6(v) => v.octets(),
    }
}

/// A `SOCK_DIAG_BY_FAMILY` request for the one socket of `proto` whose
/// `inet_diag_sockid` has source `a` and destination `b` (nlmsghdr +
/// `inet_diag_req_v2`, 72 bytes).
pub fn diag_request(seq: u32, proto: u8, a: (IpAddr, u16), b: (IpAddr, u16)) -> Vec<u8> {
    let mut m = NlWriter::new(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, seq, 0);
    let family = if a.0.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    m.put(&[family as u8, proto, 0, 0]) // idiag_ext, pad
        .put(&u32::MAX.to_ne_bytes()) // every state
        .put(&a.1.to_be_bytes())
        .put(&b.1.to_be_bytes())
        .put(&ip_words(a.0))
        .put(&ip_words(b.0))
        .put(&0u32.to_ne_bytes()) // any interface
        .put(&u32::MAX.to_ne_bytes()) // INET_DIAG_NOCOOKIE
        .put(&u32::MAX.to_ne_bytes());
    m.finish()
}

/// What a sock_diag answer says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiagAnswer {
    /// The socket: its owner uid, its inode (0 for a socket no file holds
    /// yet or any more, e.g. a connection request or TIME_WAIT).
    Found {
        /// `inet_diag_msg.idiag_uid`.
        uid: u32,
        /// `inet_diag_msg.idiag_inode`.
        inode: u64,
    },
    /// An error (positive errno; ENOENT: no such socket).
    Error(i32),
}

/// Reads the first answer of sequence `seq` in `b`; `None` if there is none.
pub fn parse_diag_answer(b: &[u8], seq: u32) -> Option<DiagAnswer> {
    for m in NlReader::new(b) {
        if m.seq != seq {
            continue;
        }
        if m.ty == NLMSG_ERROR {
            let e = i32::from_ne_bytes(m.body.get(0..4)?.try_into().ok()?);
            return Some(DiagAnswer::Error(e.saturating_neg()));
        }
        if m.ty == SOCK_DIAG_BY_FAMILY {
            let uid = u32::from_ne_bytes(m.body.get(64..68)?.try_into().ok()?);
            let inode = u32::from_ne_bytes(m.body.get(68..72)?.try_into().ok()?);
            return Some(DiagAnswer::Found {
                uid,
                inode: u64::from(inode),
            });
        }
    }
    None
}

/// A bounded set of recently seen keys: the oldest goes first.
struct Recent<T> {
    set: HashSet<T>,
    order: VecDeque<T>,
    cap: usize,
}

impl<T: std::hash::Hash + Eq + Copy> Recent<T> {
    fn new(cap: usize) -> Recent<T> {
        Recent {
            set: HashSet::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    /// Whether `k` is new (then remembered).
    fn insert(&mut self, k: T) -> bool {
        if !self.set.insert(k) {
            return false;
        }
        self.order.push_back(k);
        if self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

/// Whether `pid` holds socket `inode`: its fd links, read until found.
fn holds(pid: u32, inode: u64) -> bool {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    dir.flatten().any(|e| {
        std::fs::read_link(e.path()).is_ok_and(|t| {
            crate::procfs::parse_socket_link(t.as_os_str().as_encoded_bytes()) == Some(inode)
        })
    })
}

/// Counters of the lookup source over the recording.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    /// Socket found but no process holding it (closed meanwhile), or not
    /// searched (budget spent).
    no_pid: u64,
}

/// The reader: packet socket, sock_diag socket, and what it remembers.
struct Looker {
    pkt: OwnedFd,
    diag: OwnedFd,
    seq: u32,
    tuples: Recent<Tuple>,
    inodes: Recent<u64>,
    owners: VecDeque<u32>,
    pids: Pids,
    counts: Counts,
    self_pid: u32,
    /// Start of the current budget second, and the search time spent in it.
    budget: (Instant, Duration),
}

impl Looker {
    /// The uid and inode of the socket of `proto` with local end `a` and
    /// remote end `b` (or, TCP, the listener of `a`); `None` when there is
    /// none or no file holds it.
    fn ask(
        &mut self,
        proto: u8,
        a: (IpAddr, u16),
        b: (IpAddr, u16),
        buf: &mut [u8],
    ) -> Option<(u32, u64)> {
        self.seq = self.seq.wrapping_add(1);
        // The kernel looks a UDP socket up by (remote, local): the
        // `inet_diag_sockid` ends are swapped for it (udp_dump_one).
        let req = if proto == 17 {
            diag_request(self.seq, proto, b, a)
        } else {
            diag_request(self.seq, proto, a, b)
        };
        let n = ksys::netlink_request(&self.diag, &req, buf).ok()?;
        match parse_diag_answer(&buf[..n.min(buf.len())], self.seq)? {
            DiagAnswer::Found { uid, inode } if inode != 0 => Some((uid, inode)),
            _ => None,
        }
    }

    /// The pid holding socket `inode`: the last owners first, then the
    /// processes of `uid`, newest pid first (a process that opens fresh
    /// sockets is more often a recent one), at most
    /// [`MAX_PIDS_PER_LOOKUP`] and within [`SEARCH_BUDGET`]; each fd
    /// directory is read until the socket.
    fn owner(&mut self, inode: u64, uid: u32) -> Option<u32> {
        if self.budget.0.elapsed() >= Duration::from_secs(1) {
            self.budget = (Instant::now(), Duration::ZERO);
        }
        if self.budget.1 >= SEARCH_BUDGET {
            return None;
        }
        let t0 = Instant::now();
        let found = match self.owners.iter().find(|&&p| holds(p, inode)) {
            Some(&pid) => Some(pid),
            None => self.search(inode, uid),
        };
        self.budget.1 += t0.elapsed();
        found
    }

    /// The part of [`Looker::owner`] beyond the last owners.
    fn search(&mut self, inode: u64, uid: u32) -> Option<u32> {
        let mut pids = live::list_pids().ok()?;
        pids.sort_unstable_by(|a, b| b.cmp(a));
        let mut n = 0usize;
        for pid in pids {
            if pid == self.self_pid || self.owners.contains(&pid) {
                continue;
            }
            let Ok(md) = std::fs::metadata(format!("/proc/{pid}")) else {
                continue;
            };
            if md.uid() != uid {
                continue;
            }
            n += 1;
            if n > MAX_PIDS_PER_LOOKUP {
                return None;
            }
            if holds(pid, inode) {
                return Some(pid);
            }
        }
        None
    }

    fn remember_owner(&mut self, pid: u32) {
        self.owners.retain(|&p| p != pid);
        self.owners.push_front(pid);
        self.owners.truncate(RECENT_OWNERS);
    }

    /// Handles one packet's tuple: looks both ends up, writes what it finds.
    fn handle(&mut self, t: Tuple, local: &mut Batch, buf: &mut [u8]) {
        if !self.tuples.insert(t.canonical()) {
            return;
        }
        let mono_ns = crate::sys::read_clocks().monotonic_ns;
        for (l, r) in [(t.src, t.dst), (t.dst, t.src)] {
            let Some((uid, inode)) = self.ask(t.proto, l, r, buf) else {
                continue;
            };
            if !self.inodes.insert(inode) {
                continue;
            }
            let Some(pid) = self.owner(inode, uid) else {
                self.counts.no_pid += 1;
                continue;
            };
            self.remember_owner(pid);
            let info = self.pids.get(pid, local);
            local.pids.insert(pid);
            local.events.push(EventRecord {
                source: SRC_LOOKUP.into(),
                kind: "lookup".into(),
                mono_ns,
                pid,
                tid: pid,
                start_time: info.as_ref().map(|i| i.start_time),
                comm: info.as_ref().map(|i| i.comm.clone()),
                netns: info.as_ref().and_then(|i| i.netns),
                proto: if t.proto == 6 { "tcp" } else { "udp" }.into(),
                local_ip: l.0.to_string(),
                local_port: l.1,
                remote_ip: Some(r.0.to_string()),
                remote_port: Some(r.1),
                inode: Some(inode),
            });
        }
    }
}

/// Opens the packet and sock_diag sockets on `iface` (`None` or `any`:
/// every interface); the detail for the manifest, or why not.
pub fn start(
    iface: Option<&str>,
    batch: Arc<Mutex<Batch>>,
    stop: Arc<AtomicBool>,
) -> Result<(std::thread::JoinHandle<()>, String), String> {
    let (ifindex, on) = match iface {
        None | Some("any") => (0, "every interface".to_string()),
        Some(name) => (
            ksys::if_index(name)
                .map_err(|e| format!("interface {name}: {}", crate::sys::errno_name(&e)))?,
            name.to_string(),
        ),
    };
    let pkt = ksys::packet_socket(ifindex, &filter()).map_err(|e| {
        format!(
            "packet socket: {} (CAP_NET_RAW needed)",
            crate::sys::errno_name(&e)
        )
    })?;
    let diag = ksys::netlink_socket(libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, NETLINK_SOCK_DIAG, 0)
        .map_err(|e| format!("sock_diag: {}", crate::sys::errno_name(&e)))?;
    let mut looker = Looker {
        pkt,
        diag,
        seq: 0,
        tuples: Recent::new(RECENT_TUPLES),
        inodes: Recent::new(RECENT_TUPLES),
        owners: VecDeque::new(),
        pids: Pids::new(),
        counts: Counts::default(),
        self_pid: std::process::id(),
        budget: (Instant::now(), Duration::ZERO),
    };
    let t = std::thread::Builder::new()
        .name("lookup".into())
        .spawn(move || {
            // A lookup races with the socket's close: this thread (only
            // it: Linux applies the priority to the calling thread) runs
            // at nice 0 when allowed, whatever the recorder's --nice. Its
            // work is bounded by the number of new flows.
            let _ = ksys::process::set_thread_nice(0);
            let mut pkt = vec![0u8; SNAPLEN as usize];
            let mut nl = vec![0u8; 8192];
            let mut local = Batch::default();
            while !stop.load(Ordering::SeqCst) {
                // Reads time out every 100 ms: the stop flag is seen.
                loop {
                    match ksys::recv_packet(&looker.pkt, &mut pkt) {
                        Ok(Some((n, ethertype))) => {
                            if let Some(t) = parse_packet(ethertype, &pkt[..n]) {
                                looker.handle(t, &mut local, &mut nl);
                            }
                            if local.events.len() >= 64 {
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(_) => {
                            // Said in the snapshot's errors; no busy loop
                            // on an error that repeats.
                            local.packet_errors += 1;
                            std::thread::sleep(Duration::from_millis(100));
                            break;
                        }
                    }
                }
                local.unowned += std::mem::take(&mut looker.counts.no_pid);
                local.packets_dropped += u64::from(ksys::packet_drops(&looker.pkt).unwrap_or(0));
                if !local.events.is_empty()
                    || local.unowned + local.packets_dropped + local.packet_errors > 0
                {
                    if let Ok(mut b) = batch.lock() {
                        merge(&mut b, &mut local);
                    }
                }
            }
        })
        .map_err(|e| format!("cannot start the lookup thread: {e}"))?;
    Ok((
        t,
        format!("kernel-filtered packet socket on {on} (TCP SYN, UDP), sock_diag lookup of each new tuple"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_parse_and_cut_headers_never_panic() {
        let mut v4 = vec![
            0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 127, 0, 0, 1, 10, 0, 0, 2,
        ];
        v4.extend_from_slice(&[0xc3, 0x50, 0, 80, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02]);
        let t = parse_packet(ETH_P_IP, &v4).unwrap();
        assert_eq!(t.proto, 6);
        assert_eq!(t.src, ("127.0.0.1".parse().unwrap(), 50000));
        assert_eq!(t.dst, ("10.0.0.2".parse().unwrap(), 80));
        assert_eq!(t.canonical().src.1, 80);
        let mut v6 = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
        v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0, 53, 0x30, 0x39, 0, 8, 0, 0]);
        let t = parse_packet(ETH_P_IPV6, &v6).unwrap();
        assert_eq!((t.proto, t.src.1, t.dst.1), (17, 53, 12345));
        assert_eq!(t.dst.0.to_string(), "fd00::2");
        for cut in 0..v4.len() {
            assert!(parse_packet(ETH_P_IP, &v4[..cut]).is_none() || cut >= 24);
        }
        for cut in 0..v6.len() {
            let _ = parse_packet(ETH_P_IPV6, &v6[..cut]);
        }
        assert!(parse_packet(0x0806, &v4).is_none());
    }

    #[test]
    fn diag_request_and_answers() {
        let a = ("127.0.0.1".parse().unwrap(), 40000);
        let b = ("127.0.0.2".parse().unwrap(), 53);
        let r = diag_request(7, 17, a, b);
        assert_eq!(r.len(), 72);
        assert_eq!(&r[16..18], &[libc::AF_INET as u8, 17]);
        assert_eq!(&r[24..26], &40000u16.to_be_bytes());
        assert_eq!(&r[28..32], &[127, 0, 0, 1]);
        assert_eq!(&r[44..48], &[127, 0, 0, 2]);
        // An answer: nlmsghdr + inet_diag_msg with uid 1000, inode 4242.
        let mut ans = Vec::new();
        ans.extend_from_slice(&(16u32 + 72).to_ne_bytes());
        ans.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        ans.extend_from_slice(&[0, 0]);
        ans.extend_from_slice(&7u32.to_ne_bytes());
        ans.extend_from_slice(&[0; 4]);
        let mut body = vec![0u8; 72];
        body[64..68].copy_from_slice(&1000u32.to_ne_bytes());
        body[68..72].copy_from_slice(&4242u32.to_ne_bytes());
        ans.extend_from_slice(&body);
        assert_eq!(
            parse_diag_answer(&ans, 7),
            Some(DiagAnswer::Found {
                uid: 1000,
                inode: 4242
            })
        );
        assert_eq!(parse_diag_answer(&ans, 8), None);
        let mut err = Vec::new();
        err.extend_from_slice(&20u32.to_ne_bytes());
        err.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err.extend_from_slice(&[0, 0]);
        err.extend_from_slice(&7u32.to_ne_bytes());
        err.extend_from_slice(&[0; 4]);
        err.extend_from_slice(&(-libc::ENOENT).to_ne_bytes());
        assert_eq!(
            parse_diag_answer(&err, 7),
            Some(DiagAnswer::Error(libc::ENOENT))
        );
        for cut in 0..ans.len() {
            let _ = parse_diag_answer(&ans[..cut], 7);
        }
    }

    #[test]
    fn filter_jumps_stay_inside_the_program() {
        let f = filter();
        for (i, ins) in f.iter().enumerate() {
            if ins.code & 0x07 == 0x05 {
                assert!(i + 1 + usize::from(ins.jt) < f.len(), "jt of {i}");
                assert!(i + 1 + usize::from(ins.jf) < f.len(), "jf of {i}");
            }
        }
        assert_eq!(f.last().map(|i| i.k), Some(0));
        assert_eq!(f[f.len() - 2].k, SNAPLEN);
    }

    #[test]
    fn recent_tuples_are_bounded() {
        let mut r = Recent::new(2);
        assert!(r.insert(1));
        assert!(!r.insert(1));
        assert!(r.insert(2));
        assert!(r.insert(3));
        assert!(r.insert(1));
        assert_eq!(r.set.len(), 2);
    }
}
