//! Netlink sockets: opened and bound, in the calling thread's network
//! namespace or another one, and the request/answer exchange. The messages
//! themselves are built and read by safe code (`nlmsg`).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::sock::setsockopt;
use crate::nlmsg::{NlWriter, NLMSG_DONE};

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

const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;

/// Opens a netlink connector socket subscribed to process events.
pub fn proc_connector() -> io::Result<OwnedFd> {
    let fd = netlink_socket(
        libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        libc::NETLINK_CONNECTOR,
        CN_IDX_PROC,
    )?;
    // A bigger receive buffer rides out bursts of fork/exit.
    let size: libc::c_int = 4 << 20;
    let _ = setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &size);
    // nlmsghdr (16) + cn_msg (20: idx, val, seq, ack, len, flags) + op (4).
    let mut msg = NlWriter::new(NLMSG_DONE, 0, 0, std::process::id());
    msg.put(&CN_IDX_PROC.to_ne_bytes())
        .put(&CN_VAL_PROC.to_ne_bytes())
        .put(&0u32.to_ne_bytes())
        .put(&0u32.to_ne_bytes())
        .put(&4u16.to_ne_bytes())
        .put(&0u16.to_ne_bytes())
        .put(&PROC_CN_MCAST_LISTEN.to_ne_bytes());
    let msg = msg.finish();
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

/// Sends `msg` on a netlink socket to the kernel and receives one answer
/// datagram into `buf` (blocking); the answer's length.
pub fn netlink_request(fd: &OwnedFd, msg: &[u8], buf: &mut [u8]) -> io::Result<usize> {
    send(fd, msg)?;
    recv_blocking(fd, buf)
}

/// Sends one datagram.
pub fn send(fd: &OwnedFd, msg: &[u8]) -> io::Result<()> {
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
    Ok(())
}

/// Receives one datagram into `buf` (waiting, up to the socket's receive
/// timeout); its length.
pub fn recv_blocking(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
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
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Moves the calling thread into the network namespace of `ns` (an open
/// `/proc/PID/ns/net`). Only that thread changes namespace.
pub fn enter_netns(ns: &File) -> io::Result<()> {
    // SAFETY: `ns` is an open namespace file borrowed for the call; setns
    // affects only the calling thread.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
