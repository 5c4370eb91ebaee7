//! `bpf(2)` calls that the eBPF loader does not offer: an iterator's link,
//! and its readers opened from the calling thread (whose network namespace
//! is the one a socket iterator walks).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_ITER_CREATE: libc::c_long = 33;
/// `BPF_TRACE_ITER`, the attach type of iterator programs.
const BPF_TRACE_ITER: u32 = 28;

/// The `link_create` member of `union bpf_attr`, as an iterator uses it
/// (no `iter_info`: the iterator walks no map).
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    iter_info: u64,
    iter_info_len: u32,
    pad: u32,
}

/// The `iter_create` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct IterCreateAttr {
    link_fd: u32,
    flags: u32,
}

/// `bpf(cmd, attr)`: a new descriptor, or the kernel's error.
fn bpf_fd<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a fully initialized member of union bpf_attr for
    // `cmd`, its size passed; it outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(r).map_err(|_| io::Error::other("bpf: fd out of range"))?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Links the loaded iterator program `prog` (`BPF_LINK_CREATE`, attach
/// type `BPF_TRACE_ITER`): the link [`iter_open`] opens readers of.
pub fn iter_link(prog: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_TRACE_ITER,
        ..Default::default()
    };
    bpf_fd(BPF_LINK_CREATE, &mut attr)
}

/// A new reader of the iterator `link` (`BPF_ITER_CREATE`): read to its
/// end, it gives one walk. A socket iterator walks the network namespace
/// of the thread that calls this.
pub fn iter_open(link: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut attr = IterCreateAttr {
        link_fd: link.as_raw_fd() as u32,
        flags: 0,
    };
    bpf_fd(BPF_ITER_CREATE, &mut attr)
}
