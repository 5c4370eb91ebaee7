//! The recorder's contact with the live system beyond plain file reads:
//! clocks, uname, interface addresses, priorities, CPU time, signals.
//!
//! `unsafe` appears only here, each time around one libc call whose
//! arguments are owned locals; the reason is written at each block.

// The libc calls of the recorder live here (see above); unsafe is allowed in this module only.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::layout::{ClockReading, HostAddress, TimeStamp};

fn clock_ns(id: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec owned by this frame.
    let rc = unsafe { libc::clock_gettime(id, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec)
}

/// Reads CLOCK_REALTIME, CLOCK_MONOTONIC and CLOCK_BOOTTIME, in that order.
pub fn read_clocks() -> ClockReading {
    ClockReading {
        realtime_ns: clock_ns(libc::CLOCK_REALTIME),
        monotonic_ns: clock_ns(libc::CLOCK_MONOTONIC),
        boottime_ns: clock_ns(libc::CLOCK_BOOTTIME),
    }
}

/// The clocks now, with their RFC 3339 form.
pub fn timestamp() -> TimeStamp {
    let clocks = read_clocks();
    TimeStamp {
        utc: procflow_format::time::rfc3339_ns(clocks.realtime_ns),
        clocks,
    }
}

/// uname(2) fields: nodename, release, version, machine.
pub struct Uname {
    /// Host name (no name service involved).
    pub nodename: String,
    /// Kernel release.
    pub release: String,
    /// Kernel version string.
    pub version: String,
    /// Machine (architecture).
    pub machine: String,
}

fn field(chars: &[libc::c_char]) -> String {
    let bytes: Vec<u8> = chars
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Calls uname(2).
pub fn uname() -> Uname {
    // SAFETY: utsname is plain old data; zeroed is a valid value and uname
    // only writes into the struct we own.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: see above; `u` is a valid writable utsname.
    let rc = unsafe { libc::uname(&mut u) };
    if rc != 0 {
        return Uname {
            nodename: String::new(),
            release: String::new(),
            version: String::new(),
            machine: String::new(),
        };
    }
    Uname {
        nodename: field(&u.nodename),
        release: field(&u.release),
        version: field(&u.version),
        machine: field(&u.machine),
    }
}

/// Effective uid.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

/// sysconf(_SC_CLK_TCK).
pub fn clk_tck() -> u64 {
    // SAFETY: sysconf takes a constant and returns a value.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 {
        v as u64
    } else {
        100
    }
}

/// Addresses of the interfaces of the caller's network namespace.
pub fn host_addresses() -> Result<Vec<HostAddress>, std::io::Error> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list pointer into `head`; on success the
    // list is walked read-only below and freed exactly once.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a non-null node of the list getifaddrs returned,
        // valid until freeifaddrs; its fields are read, never kept.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: ifa_addr is non-null and points at a sockaddr whose
        // sa_family tells its real type; we cast only to that type.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        let ip = match family {
            libc::AF_INET => {
                // SAFETY: family AF_INET means a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)).to_string()
            }
            libc::AF_INET6 => {
                // SAFETY: family AF_INET6 means a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                Ipv6Addr::from(sin6.sin6_addr.s6_addr).to_string()
            }
            _ => continue,
        };
        out.push(HostAddress { iface: name, ip });
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// Sets the caller's CPU priority to `nice` (19 by default) and its I/O
/// class to idle (at nice 19) or the lowest best-effort level, so the
/// recorder yields to the server it is watching. Returns the errors met (the
/// recorder goes on at the priority it had).
pub fn lower_priority(nice: i32) -> Vec<String> {
    let mut errs = Vec::new();
    // SAFETY: setpriority takes plain integers; 0 = the calling process.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
        errs.push(format!("setpriority: {}", std::io::Error::last_os_error()));
    }
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    const IOPRIO_CLASS_BE: libc::c_long = 2;
    const IOPRIO_CLASS_IDLE: libc::c_long = 3;
    const IOPRIO_CLASS_SHIFT: libc::c_long = 13;
    // Idle I/O goes with the lowest CPU priority; an operator who raised the
    // CPU priority to keep up with a busy host gets the lowest best-effort
    // I/O level instead, so writes are not starved either.
    let ioprio = if nice >= 19 {
        IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT
    } else {
        (IOPRIO_CLASS_BE << IOPRIO_CLASS_SHIFT) | 7
    };
    // SAFETY: ioprio_set takes plain integers; who = 0 is the caller.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0 as libc::c_long,
            ioprio,
        )
    };
    if rc != 0 {
        errs.push(format!("ioprio_set: {}", std::io::Error::last_os_error()));
    }
    errs
}

/// CPU time (user + system) used by the calling process so far, ns.
pub fn self_cpu_ns() -> u64 {
    // SAFETY: rusage is plain old data; getrusage writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid writable rusage owned by this frame.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0;
    }
    let tv = |t: libc::timeval| (t.tv_sec as u64) * 1_000_000_000 + (t.tv_usec as u64) * 1_000;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Number of SIGINT/SIGTERM received since [`install_signal_handlers`].
static SIGNALS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_signal(_sig: libc::c_int) {
    // Only an atomic add: async-signal-safe.
    SIGNALS.fetch_add(1, Ordering::SeqCst);
}

/// Counts SIGINT and SIGTERM instead of dying on them; the main loop polls
/// [`signals`]. SIGPIPE is ignored so a closed pipe is an error, not death.
pub fn install_signal_handlers() -> Result<(), std::io::Error> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: sigaction is plain old data; zeroed is valid (empty mask,
        // no flags). The handler only touches an atomic.
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        // SAFETY: `sa` is fully initialized; the old action is not needed.
        if unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    // SAFETY: setting a signal to SIG_IGN has no memory effects.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    Ok(())
}

/// How many stop signals have arrived.
pub fn signals() -> usize {
    SIGNALS.load(Ordering::SeqCst)
}

/// Sends `sig` to `pid`.
pub fn send_signal(pid: u32, sig: libc::c_int) -> Result<(), std::io::Error> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: kill takes plain integers.
    if unsafe { libc::kill(pid, sig) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The errno name (`EACCES`) of an I/O error, or its kind when it has no
/// errno.
pub fn errno_name(e: &std::io::Error) -> String {
    let Some(code) = e.raw_os_error() else {
        return format!("{:?}", e.kind());
    };
    let name = match code {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EACCES => "EACCES",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::EDQUOT => "EDQUOT",
        libc::EROFS => "EROFS",
        libc::ENOTDIR => "ENOTDIR",
        libc::EMFILE => "EMFILE",
        libc::ENFILE => "ENFILE",
        libc::ENOMEM => "ENOMEM",
        _ => return format!("errno {code}"),
    };
    name.to_string()
}

/// Whether an error means the disk (or quota) is full.
pub fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_move_forward() {
        let a = read_clocks();
        let b = read_clocks();
        assert!(a.realtime_ns > 1_600_000_000_000_000_000);
        assert!(b.monotonic_ns >= a.monotonic_ns);
        assert!(b.boottime_ns >= a.boottime_ns);
    }
}
