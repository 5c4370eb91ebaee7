//! The recorder's contact with the live system beyond plain file reads:
//! clocks, uname, interface addresses, priorities, CPU time, signals.
//!
//! Clocks, uname, euid, clock ticks and CPU priority go through rustix;
//! interface addresses, CPU time and kill through nix. What neither offers
//! safely is by hand, each block with its reason: ioprio_set(2) (wrapped
//! by neither) and the counting signal handler (see
//! [`install_signal_handlers`]). `unsafe` appears only there.

// The libc calls of the recorder live here (see above); unsafe is allowed in this module only.
#![allow(unsafe_code)]

use rustix::time::{clock_gettime, clock_gettime_dynamic, ClockId, DynamicClockId};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::layout::{ClockReading, HostAddress, TimeStamp};

fn timespec_ns(ts: rustix::time::Timespec) -> i64 {
    ts.tv_sec
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec)
}

/// Reads CLOCK_REALTIME, CLOCK_MONOTONIC and CLOCK_BOOTTIME, in that order.
pub fn read_clocks() -> ClockReading {
    ClockReading {
        realtime_ns: timespec_ns(clock_gettime(ClockId::Realtime)),
        monotonic_ns: timespec_ns(clock_gettime(ClockId::Monotonic)),
        boottime_ns: clock_gettime_dynamic(DynamicClockId::Boottime).map_or(0, timespec_ns),
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

/// uname(2), through rustix.
pub fn uname() -> Uname {
    let u = rustix::system::uname();
    let field = |c: &std::ffi::CStr| c.to_string_lossy().into_owned();
    Uname {
        nodename: field(u.nodename()),
        release: field(u.release()),
        version: field(u.version()),
        machine: field(u.machine()),
    }
}

/// Effective uid.
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// sysconf(_SC_CLK_TCK).
pub fn clk_tck() -> u64 {
    match rustix::param::clock_ticks_per_second() {
        0 => 100,
        v => v,
    }
}

/// Addresses of the interfaces of the caller's network namespace.
pub fn host_addresses() -> Result<Vec<HostAddress>, std::io::Error> {
    let mut out = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs()? {
        let Some(addr) = ifa.address else { continue };
        let ip = if let Some(sin) = addr.as_sockaddr_in() {
            sin.ip().to_string()
        } else if let Some(sin6) = addr.as_sockaddr_in6() {
            sin6.ip().to_string()
        } else {
            continue;
        };
        out.push(HostAddress {
            iface: ifa.interface_name,
            ip,
        });
    }
    Ok(out)
}

/// Sets the caller's CPU priority to `nice` (19 by default) and its I/O
/// class to idle (at nice 19) or the lowest best-effort level, so the
/// recorder yields to the server it is watching. Returns the errors met (the
/// recorder goes on at the priority it had).
pub fn lower_priority(nice: i32) -> Vec<String> {
    let mut errs = Vec::new();
    if let Err(e) = rustix::process::setpriority_process(None, nice) {
        errs.push(format!("setpriority: {}", std::io::Error::from(e)));
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
    // Neither rustix nor nix wraps ioprio_set(2): the raw system call.
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
    use nix::sys::resource::{getrusage, UsageWho};
    let Ok(ru) = getrusage(UsageWho::RUSAGE_SELF) else {
        return 0;
    };
    let tv = |t: nix::sys::time::TimeVal| {
        (t.tv_sec() as u64) * 1_000_000_000 + (t.tv_usec() as u64) * 1_000
    };
    tv(ru.user_time()) + tv(ru.system_time())
}

/// Number of SIGINT/SIGTERM received since [`install_signal_handlers`].
static SIGNALS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_signal(_sig: libc::c_int) {
    // Only an atomic add: async-signal-safe.
    SIGNALS.fetch_add(1, Ordering::SeqCst);
}

/// Counts SIGINT and SIGTERM instead of dying on them; the main loop polls
/// [`signals`]. SIGPIPE is ignored so a closed pipe is an error, not death.
///
/// Kept by hand: the second signal must be counted by the handler itself
/// (the main thread may be blocked in fsync or in tcpdump's drain when it
/// comes). signal-hook's safe API only sets a flag (which cannot count to
/// two) or wakes a thread over a pipe (which coalesces signals that arrive
/// together); its counting handler, `low_level::register`, is `unsafe`
/// just like the one `sigaction` below.
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
    let sig = nix::sys::signal::Signal::try_from(sig)?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)?;
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
