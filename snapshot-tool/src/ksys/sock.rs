//! Socket calls shared by the netlink and packet sockets: options,
//! polling, receiving one datagram.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

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

/// Sets an integer or struct socket option; `what` names it in the error.
pub(super) fn setsockopt<T>(
    fd: &OwnedFd,
    level: libc::c_int,
    opt: libc::c_int,
    v: &T,
) -> io::Result<()> {
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

/// Asks for a receive buffer of `bytes`: beyond the system's limit when
/// allowed (`SO_RCVBUFFORCE`), else within it. False when both are refused
/// (the socket keeps its default size).
pub fn set_rcvbuf(fd: &OwnedFd, bytes: libc::c_int) -> bool {
    [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF]
        .into_iter()
        .any(|opt| setsockopt(fd, libc::SOL_SOCKET, opt, &bytes).is_ok())
}

/// Makes a blocking receive give up after `secs` seconds.
pub fn set_recv_timeout(fd: &OwnedFd, secs: libc::time_t) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: secs,
        tv_usec: 0,
    };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)
}
