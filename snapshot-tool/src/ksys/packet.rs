//! `AF_PACKET` sockets: the capture-triggered lookup's small socket, and
//! the capture's `TPACKET_V3` receive ring; interface names and indexes.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{fence, Ordering};

use super::sock::setsockopt;

/// One classic BPF instruction (`struct sock_filter`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockFilter {
    /// Operation.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// Operand.
    pub k: u32,
}

/// Opens an `AF_PACKET`/`SOCK_DGRAM` socket (packets from their network
/// header) on interface `ifindex` (0: every interface of the calling
/// thread's namespace), with `filter` attached in the kernel before the
/// socket is bound, so that nothing unfiltered is ever queued. Reads time
/// out after 100 ms so that the reader can check for a stop.
pub fn packet_socket(ifindex: u32, filter: &[SockFilter]) -> io::Result<OwnedFd> {
    // Protocol 0: receives nothing until bound below.
    // SAFETY: socket(2) with integer arguments.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let prog = libc::sock_fprog {
        len: u16::try_from(filter.len())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // `prog` points into `filter`, alive for the call; the kernel copies it.
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog)?;
    let size: libc::c_int = 4 << 20;
    let _ = setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &size)
        .or_else(|_| setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &size));
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)?;
    // SAFETY: sockaddr_ll is plain old data; zeroed then filled.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sa.sll_ifindex = i32::try_from(ifindex).unwrap_or(0);
    // SAFETY: `sa` is a valid sockaddr_ll of the size passed.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_ll).cast::<libc::sockaddr>(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Receives one packet into `buf` (at most its length: the rest of a
/// longer packet is cut); `Ok(None)` on timeout. The second value is the
/// packet's `skb->protocol` (the ethertype, host order).
pub fn recv_packet(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<Option<(usize, u16)>> {
    // SAFETY: sockaddr_ll is plain old data; the kernel fills it.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: `buf` is valid for writes of its length, `sa` of `len`.
    let n = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast::<libc::c_void>(),
            buf.len(),
            libc::MSG_TRUNC,
            (&mut sa as *mut libc::sockaddr_ll).cast::<libc::sockaddr>(),
            &mut len,
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some((
        (n as usize).min(buf.len()),
        u16::from_be(sa.sll_protocol),
    )))
}

/// The index of interface `name` in the calling thread's namespace.
pub fn if_index(name: &str) -> io::Result<u32> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a NUL-terminated string owned by this frame.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(i)
}

/// The packets a packet socket's queue dropped since the last call
/// (`PACKET_STATISTICS`, which the kernel resets when read).
pub fn packet_drops(fd: &OwnedFd) -> io::Result<u32> {
    let mut st = libc::tpacket_stats {
        tp_packets: 0,
        tp_drops: 0,
    };
    let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: `st` is a tpacket_stats owned by this frame, `len` its size.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&mut st as *mut libc::tpacket_stats).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.tp_drops)
}

/// The name of interface `index`, `None` when there is none.
pub fn if_name(index: i32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index as libc::c_uint, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success buf holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// A system call of [`RxRing::open`] that failed: which step, and why.
#[derive(Debug)]
pub struct StepError {
    /// The step (`socket(AF_PACKET)`, `PACKET_RX_RING`, `bind to eth0`...).
    pub what: String,
    /// The error the kernel gave.
    pub source: io::Error,
}

impl StepError {
    fn last(what: impl Into<String>) -> StepError {
        StepError {
            what: what.into(),
            source: io::Error::last_os_error(),
        }
    }
}

/// The shape of a `TPACKET_V3` receive ring.
#[derive(Debug, Clone, Copy)]
pub struct RingShape {
    /// Bytes of each block.
    pub block_bytes: u32,
    /// Number of blocks.
    pub blocks: u32,
    /// A block is handed over when full or after this many ms.
    pub retire_ms: u32,
}

/// An `AF_PACKET` socket with its `TPACKET_V3` receive ring mapped: blocks
/// the kernel hands over, read in place and given back.
pub struct RxRing {
    fd: OwnedFd,
    base: *mut u8,
    len: usize,
    shape: RingShape,
}

// SAFETY: the mapping is owned by the ring and used by one thread at a
// time (the ring is moved into the capture thread).
unsafe impl Send for RxRing {}

impl Drop for RxRing {
    fn drop(&mut self) {
        // SAFETY: base/len are the mapping made in `open`, unmapped once,
        // before the socket (a field) is closed.
        unsafe {
            libc::munmap(self.base.cast(), self.len);
        }
    }
}

impl RxRing {
    /// Opens the socket (`cooked`: `SOCK_DGRAM`, link header stripped;
    /// else `SOCK_RAW`), attaches `filter`, maps a ring of `shape` and
    /// binds to interface `index` (0: every interface), in that order: the
    /// socket receives nothing until the filter is in place.
    /// `ignore_outgoing` asks the kernel not to show packets going out
    /// (refused by kernels before 4.20, which is not an error).
    pub fn open(
        iface: &str,
        index: i32,
        cooked: bool,
        filter: &[SockFilter],
        shape: RingShape,
        ignore_outgoing: bool,
    ) -> Result<RxRing, StepError> {
        let ty = if cooked {
            libc::SOCK_DGRAM
        } else {
            libc::SOCK_RAW
        };
        // SAFETY: plain socket(2); protocol 0: no packet until bind.
        let raw = unsafe { libc::socket(libc::AF_PACKET, ty | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(StepError::last("socket(AF_PACKET)"));
        }
        // SAFETY: raw is a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        fn step(what: &'static str) -> impl Fn(io::Error) -> StepError {
            move |source| StepError {
                what: what.to_string(),
                source,
            }
        }
        let fprog = libc::sock_fprog {
            len: u16::try_from(filter.len())
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
                .map_err(step("SO_ATTACH_FILTER"))?,
            filter: filter.as_ptr() as *mut libc::sock_filter,
        };
        // `fprog` points into `filter`, alive for the call; the kernel copies it.
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)
            .map_err(step("SO_ATTACH_FILTER"))?;
        let v3: libc::c_int = libc::tpacket_versions::TPACKET_V3 as libc::c_int;
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_VERSION, &v3)
            .map_err(step("PACKET_VERSION TPACKET_V3"))?;
        let req = libc::tpacket_req3 {
            tp_block_size: shape.block_bytes,
            tp_block_nr: shape.blocks,
            tp_frame_size: 2048,
            tp_frame_nr: shape.block_bytes / 2048 * shape.blocks,
            tp_retire_blk_tov: shape.retire_ms,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)
            .map_err(step("PACKET_RX_RING"))?;
        if ignore_outgoing {
            let one: libc::c_int = 1;
            let _ = setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &one);
        }
        let len = shape.block_bytes as usize * shape.blocks as usize;
        // SAFETY: maps the ring the kernel just allocated for this socket.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(StepError::last("mmap of the receive ring"));
        }
        let ring = RxRing {
            fd,
            base: base.cast(),
            len,
            shape,
        };
        // SAFETY: zero is a valid sockaddr_ll.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = index;
        // SAFETY: sll is a live sockaddr_ll of the size given.
        let rc = unsafe {
            libc::bind(
                ring.fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(StepError::last(format!("bind to {iface}")));
        }
        Ok(ring)
    }

    /// The socket, for poll(2).
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// The status word of block `i` (`i` < the number of blocks).
    fn status(&self, i: u32) -> *mut u32 {
        let i = i % self.shape.blocks;
        // SAFETY: i < blocks, so the offset stays inside the mapping; the
        // status word is at byte 8 of the block descriptor, aligned.
        unsafe {
            self.base
                .add(i as usize * self.shape.block_bytes as usize + 8)
                .cast::<u32>()
        }
    }

    /// Block `i` when the kernel has handed it to user space.
    pub fn user_block(&self, i: u32) -> Option<&[u8]> {
        // SAFETY: aligned word inside the mapping; volatile because the
        // kernel writes it.
        let st = unsafe { std::ptr::read_volatile(self.status(i)) };
        if st & libc::TP_STATUS_USER == 0 {
            return None;
        }
        fence(Ordering::Acquire);
        let i = i % self.shape.blocks;
        // SAFETY: the kernel does not touch a block it handed over until it
        // is given back (`release`, which takes `&mut self` and so cannot
        // run while the slice is borrowed), so reading it as bytes is sound.
        Some(unsafe {
            std::slice::from_raw_parts(
                self.base.add(i as usize * self.shape.block_bytes as usize),
                self.shape.block_bytes as usize,
            )
        })
    }

    /// Gives block `i` back to the kernel.
    pub fn release(&mut self, i: u32) {
        fence(Ordering::Release);
        // SAFETY: aligned status word inside the mapping.
        unsafe { std::ptr::write_volatile(self.status(i), libc::TP_STATUS_KERNEL) };
    }

    /// The socket's `PACKET_STATISTICS` since the last read (the kernel
    /// resets them on each read): packets (drops included), drops, freezes.
    pub fn stats(&self) -> Option<(u64, u64, u64)> {
        // SAFETY: zero is a valid tpacket_stats_v3.
        let mut st: libc::tpacket_stats_v3 = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
        // SAFETY: st and len are live and sized as told.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats_v3).cast(),
                &mut len,
            )
        };
        (rc == 0).then(|| {
            (
                u64::from(st.tp_packets),
                u64::from(st.tp_drops),
                u64::from(st.tp_freeze_q_cnt),
            )
        })
    }
}
