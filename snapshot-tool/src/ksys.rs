//! The kernel interfaces of the event sources: `perf_event_open` ring
//! buffers for tracepoints, the netlink proc connector, `poll`, and the
//! tracefs mount.
//!
//! `unsafe` is needed here because these are raw system calls on memory the
//! kernel shares with us (the perf ring buffer is an mmap the kernel writes
//! into concurrently) and C structures sent over netlink. It is confined to
//! this module: everything it hands out is safe Rust (owned fds, byte
//! slices copied out of the ring), and the decoding of what the kernel wrote
//! is done on plain bytes in `events`.

// The unsafe of the event sources lives here (see above), and only here.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{fence, Ordering};

/// Mounts tracefs at `dir` (which must exist).
pub fn mount_tracefs(dir: &Path) -> io::Result<()> {
    let target = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let src = c"nodev";
    let fstype = c"tracefs";
    // SAFETY: all pointers are NUL-terminated strings owned by this frame;
    // no mount data is passed.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Detaches the mount at `dir`.
pub fn umount(dir: &Path) -> io::Result<()> {
    let target = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `target` is a NUL-terminated path owned by this frame.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `struct perf_event_attr` as of PERF_ATTR_SIZE_VER8 (136 bytes).
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    type_: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_watermark: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
    branch_sample_type: u64,
    sample_regs_user: u64,
    sample_stack_user: u32,
    clockid: i32,
    sample_regs_intr: u64,
    aux_watermark: u32,
    sample_max_stack: u16,
    reserved_2: u16,
    aux_sample_size: u32,
    aux_action: u32,
    sig_data: u64,
    config3: u64,
}

const PERF_TYPE_TRACEPOINT: u32 = 2;
/// Sample fields requested, in the order the kernel writes them.
pub const PERF_SAMPLE_TID: u64 = 1 << 1;
/// See [`PERF_SAMPLE_TID`].
pub const PERF_SAMPLE_TIME: u64 = 1 << 2;
/// See [`PERF_SAMPLE_TID`].
pub const PERF_SAMPLE_CPU: u64 = 1 << 7;
/// See [`PERF_SAMPLE_TID`].
pub const PERF_SAMPLE_RAW: u64 = 1 << 10;
const FLAG_DISABLED: u64 = 1 << 0;
const FLAG_WATERMARK: u64 = 1 << 14;
const FLAG_USE_CLOCKID: u64 = 1 << 25;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
const PERF_EVENT_IOC_SET_OUTPUT: libc::c_ulong = 0x2405;

/// Opens tracepoint `id` on `cpu` for all processes, disabled, sampling
/// every hit with TID, TIME (CLOCK_MONOTONIC), CPU and RAW.
pub fn open_tracepoint(id: u64, cpu: u32, watermark: u32) -> io::Result<OwnedFd> {
    let attr = PerfEventAttr {
        type_: PERF_TYPE_TRACEPOINT,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: id,
        sample_period: 1,
        sample_type: PERF_SAMPLE_TID | PERF_SAMPLE_TIME | PERF_SAMPLE_CPU | PERF_SAMPLE_RAW,
        flags: FLAG_DISABLED | FLAG_WATERMARK | FLAG_USE_CLOCKID,
        wakeup_watermark: watermark,
        clockid: libc::CLOCK_MONOTONIC,
        ..PerfEventAttr::default()
    };
    // SAFETY: `attr` is a fully initialized perf_event_attr whose `size`
    // says how much of it the kernel may read; the other arguments are
    // integers (pid -1 = every process, group -1 = none).
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            -1 as libc::pid_t,
            cpu as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Opens tracepoint `id` as a counting event (no samples, no ring) on CPU
/// 0 for all processes, disabled: the hook a BPF program is attached to
/// with [`set_bpf`] (the program then runs on every CPU).
pub fn open_tracepoint_counter(id: u64) -> io::Result<OwnedFd> {
    let attr = PerfEventAttr {
        type_: PERF_TYPE_TRACEPOINT,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: id,
        flags: FLAG_DISABLED,
        ..PerfEventAttr::default()
    };
    // SAFETY: as in `open_tracepoint`: a fully initialized attr, integer
    // arguments (pid -1 = every process, CPU 0, group -1 = none).
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            -1 as libc::pid_t,
            0 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Attaches the loaded BPF program `prog` to the tracepoint event `fd`.
pub fn set_bpf(fd: &OwnedFd, prog: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;
    // SAFETY: ioctl on an fd we own with an integer argument (the
    // program's fd, borrowed for the call).
    if unsafe { libc::ioctl(fd.as_raw_fd(), PERF_EVENT_IOC_SET_BPF, prog.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends the samples of `fd` into the ring buffer of `ring_fd` (same CPU).
pub fn set_output(fd: &OwnedFd, ring_fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: ioctl on an fd we own with an integer argument.
    if unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            PERF_EVENT_IOC_SET_OUTPUT,
            ring_fd.as_raw_fd(),
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets a tracepoint filter (ftrace filter syntax, e.g. `proto == 17`) so
/// the kernel drops non-matching hits before they reach the ring.
pub fn set_filter(fd: &OwnedFd, filter: &str) -> io::Result<()> {
    const PERF_EVENT_IOC_SET_FILTER: libc::c_ulong = 0x4008_2406;
    let c = CString::new(filter).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: ioctl on an fd we own with a NUL-terminated string that
    // outlives the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), PERF_EVENT_IOC_SET_FILTER, c.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Enables a perf event.
pub fn enable(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: ioctl on an fd we own, no argument.
    if unsafe { libc::ioctl(fd.as_raw_fd(), PERF_EVENT_IOC_ENABLE, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Offsets in `struct perf_event_mmap_page`.
const DATA_HEAD: usize = 1024;
const DATA_TAIL: usize = 1032;

/// A perf ring buffer: one metadata page then 2^n data pages.
pub struct PerfRing {
    fd: OwnedFd,
    base: *mut u8,
    map_len: usize,
    data_len: usize,
    page: usize,
}

// SAFETY: the mapping is only touched through &mut self, by one thread.
unsafe impl Send for PerfRing {}

impl PerfRing {
    /// Maps `pages` (a power of two) data pages of `fd`'s ring.
    pub fn map(fd: OwnedFd, pages: usize) -> io::Result<PerfRing> {
        // SAFETY: sysconf takes a constant.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .ok()
            .filter(|p| *p > 0)
            .unwrap_or(4096);
        let map_len = page * (pages + 1);
        // SAFETY: a fresh shared mapping of the perf fd, as the perf ABI
        // prescribes; the result is checked for MAP_FAILED.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(PerfRing {
            fd,
            base: base.cast::<u8>(),
            map_len,
            data_len: page * pages,
            page,
        })
    }

    /// The ring's fd (for poll, enable, set_output).
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Copies every complete record out of the ring (each record: its
    /// 8-byte header then its body) and hands it to `f`, then frees the
    /// space. Records that wrap around the end are reassembled in `tmp`.
    /// Returns whether a corrupt or torn record made it skip the rest of
    /// what the ring held (records lost, to be said).
    pub fn drain(&mut self, tmp: &mut Vec<u8>, mut f: impl FnMut(&[u8])) -> bool {
        let mut skipped = false;
        // SAFETY: DATA_HEAD/DATA_TAIL are 8-aligned u64 fields of the
        // metadata page, inside the mapping; the kernel writes data_head,
        // we write data_tail, both accessed as volatile with fences as the
        // perf ABI requires.
        let head = unsafe { std::ptr::read_volatile(self.base.add(DATA_HEAD).cast::<u64>()) };
        fence(Ordering::Acquire);
        // SAFETY: as above.
        let mut tail = unsafe { std::ptr::read_volatile(self.base.add(DATA_TAIL).cast::<u64>()) };
        // SAFETY: the data area starts one page after the metadata page and
        // is data_len bytes long, all inside the mapping.
        let data = unsafe { std::slice::from_raw_parts(self.base.add(self.page), self.data_len) };
        let n = self.data_len as u64;
        while tail < head {
            let at = (tail % n) as usize;
            let mut hdr = [0u8; 8];
            for (i, b) in hdr.iter_mut().enumerate() {
                *b = data[(at + i) % self.data_len];
            }
            let size = u16::from_ne_bytes([hdr[6], hdr[7]]) as u64;
            if size < 8 || tail + size > head {
                // Corrupt or torn: drop everything up to head.
                tail = head;
                skipped = true;
                break;
            }
            let size = size as usize;
            if at + size <= self.data_len {
                f(&data[at..at + size]);
            } else {
                tmp.clear();
                let first = self.data_len - at;
                tmp.extend_from_slice(&data[at..]);
                tmp.extend_from_slice(&data[..size - first]);
                f(tmp);
            }
            tail += size as u64;
        }
        fence(Ordering::Release);
        // SAFETY: see the read of DATA_TAIL above.
        unsafe { std::ptr::write_volatile(self.base.add(DATA_TAIL).cast::<u64>(), tail) };
        skipped
    }
}

impl Drop for PerfRing {
    fn drop(&mut self) {
        // SAFETY: `base`/`map_len` are exactly what mmap returned; unmapped once.
        unsafe { libc::munmap(self.base.cast::<libc::c_void>(), self.map_len) };
    }
}

/// Waits until one of `fds` is readable or `timeout_ms` passed; returns
/// the indexes of the readable ones.
pub fn poll_readable(fds: &[RawFd], timeout_ms: i32) -> io::Result<Vec<usize>> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `p` is a valid array of pollfd of the given length.
    let rc = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINTR) {
            return Ok(Vec::new());
        }
        return Err(e);
    }
    Ok(p.iter()
        .enumerate()
        .filter(|(_, x)| x.revents != 0)
        .map(|(i, _)| i)
        .collect())
}

const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const NLMSG_DONE: u16 = 3;

/// Opens a netlink connector socket subscribed to process events.
pub fn proc_connector() -> io::Result<OwnedFd> {
    let fd = netlink_socket(
        libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        libc::NETLINK_CONNECTOR,
        CN_IDX_PROC,
    )?;
    // A bigger receive buffer rides out bursts of fork/exit.
    let size: libc::c_int = 4 << 20;
    // SAFETY: setsockopt with a pointer to an int owned by this frame.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast::<libc::c_void>(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    // nlmsghdr (16) + cn_msg (20) + op (4).
    let mut msg = Vec::with_capacity(40);
    msg.extend_from_slice(&40u32.to_ne_bytes());
    msg.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
    msg.extend_from_slice(&0u16.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&std::process::id().to_ne_bytes());
    msg.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
    msg.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&4u16.to_ne_bytes());
    msg.extend_from_slice(&0u16.to_ne_bytes());
    msg.extend_from_slice(&PROC_CN_MCAST_LISTEN.to_ne_bytes());
    // SAFETY: sockaddr_nl zeroed = the kernel (pid 0).
    let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `msg` and `to` are valid for the lengths passed.
    let rc = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            msg.as_ptr().cast::<libc::c_void>(),
            msg.len(),
            0,
            (&to as *const libc::sockaddr_nl).cast::<libc::sockaddr>(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Receives one datagram (non-blocking); `Ok(None)` when none is waiting.
pub fn recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    // SAFETY: `buf` is valid for writes of its length.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast::<libc::c_void>(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(n as usize))
}

/// Opens a netlink socket of `protocol` (`ty` is `SOCK_RAW` or
/// `SOCK_DGRAM`, flags included) and binds it to the multicast `groups`
/// (0 for a request socket) in the calling thread's network namespace.
pub fn netlink_socket(ty: libc::c_int, protocol: libc::c_int, groups: u32) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with integer arguments.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, ty, protocol) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_nl is plain old data; zeroed then filled.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    sa.nl_groups = groups;
    // SAFETY: `sa` is a valid sockaddr_nl of the size passed.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_nl).cast::<libc::sockaddr>(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Sets an integer or struct socket option; `what` names it in the error.
fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, opt: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` is a valid value of the size passed, owned by the caller.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (v as *const T).cast::<libc::c_void>(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

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

/// Sends `msg` on a netlink socket to the kernel and receives one answer
/// datagram into `buf` (blocking); the answer's length.
pub fn netlink_request(fd: &OwnedFd, msg: &[u8], buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `msg` is valid for reads of its length.
    let n = unsafe {
        libc::send(
            fd.as_raw_fd(),
            msg.as_ptr().cast::<libc::c_void>(),
            msg.len(),
            0,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `buf` is valid for writes of its length.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast::<libc::c_void>(),
            buf.len(),
            0,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A ring over an anonymous mapping laid out like a perf one: a
    /// metadata page, then one data page.
    fn ring() -> PerfRing {
        let page = 4096;
        // SAFETY: a fresh anonymous private mapping; the ring owns it and
        // its Drop unmaps it once.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                2 * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        PerfRing {
            fd: OwnedFd::from(std::fs::File::open("/dev/null").expect("/dev/null")),
            base: base.cast(),
            map_len: 2 * page,
            data_len: page,
            page,
        }
    }

    /// Writes `bytes` at data offset `at` and sets data_head to `head`.
    fn put(r: &mut PerfRing, at: usize, bytes: &[u8], head: u64) {
        // SAFETY: `at + bytes.len()` stays inside the data page of the
        // mapping, and data_head is the u64 at DATA_HEAD of its first page.
        unsafe {
            let data = std::slice::from_raw_parts_mut(r.base.add(r.page), r.data_len);
            data[at..at + bytes.len()].copy_from_slice(bytes);
            std::ptr::write_volatile(r.base.add(DATA_HEAD).cast::<u64>(), head);
        }
    }

    fn record(size: u16) -> Vec<u8> {
        let mut v = vec![0u8; usize::from(size)];
        v[0] = 9; // PERF_RECORD_SAMPLE
        v[6..8].copy_from_slice(&size.to_ne_bytes());
        v
    }

    #[test]
    fn drain_hands_out_records_and_says_a_torn_one() {
        let mut r = ring();
        let mut tmp = Vec::new();
        put(&mut r, 0, &[record(16), record(24)].concat(), 40);
        let mut sizes = Vec::new();
        assert!(!r.drain(&mut tmp, |rec| sizes.push(rec.len())));
        assert_eq!(sizes, [16, 24]);
        // A record claiming more than the ring holds: the rest is skipped,
        // and said.
        put(&mut r, 40, &record(64)[..8], 48);
        let mut n = 0;
        assert!(r.drain(&mut tmp, |_| n += 1));
        assert_eq!(n, 0);
        assert!(!r.drain(&mut tmp, |_| n += 1), "the tail moved to head");
    }
}
