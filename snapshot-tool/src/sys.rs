//! The recorder's contact with the live system beyond plain file reads:
//! clocks, uname, interface addresses, priorities, CPU time, signals, as
//! the recorder uses them. The system calls themselves are in `ksys`.

use crate::ksys::process;
use crate::layout::{ClockReading, HostAddress, TimeStamp};

/// Reads CLOCK_REALTIME, CLOCK_MONOTONIC and CLOCK_BOOTTIME, in that order.
pub fn read_clocks() -> ClockReading {
    ClockReading {
        realtime_ns: process::clock_ns(libc::CLOCK_REALTIME).unwrap_or(0),
        monotonic_ns: process::clock_ns(libc::CLOCK_MONOTONIC).unwrap_or(0),
        boottime_ns: process::clock_ns(libc::CLOCK_BOOTTIME).unwrap_or(0),
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

/// uname(2).
pub fn uname() -> Uname {
    let [nodename, release, version, machine] = process::uname();
    Uname {
        nodename,
        release,
        version,
        machine,
    }
}

/// Effective uid.
pub fn euid() -> u32 {
    process::euid()
}

/// sysconf(_SC_CLK_TCK), 100 when unknown.
pub fn clk_tck() -> u64 {
    match process::clk_tck() {
        0 => 100,
        v => v,
    }
}

/// Addresses of the interfaces of the caller's network namespace.
pub fn host_addresses() -> Result<Vec<HostAddress>, std::io::Error> {
    Ok(process::interface_addresses()?
        .into_iter()
        .map(|(iface, ip)| HostAddress {
            iface,
            ip: ip.to_string(),
        })
        .collect())
}

/// Sets the caller's CPU priority to `nice` (19 by default) and its I/O
/// class to idle (at nice 19) or the lowest best-effort level, so the
/// recorder yields to the server it is watching. Returns the errors met (the
/// recorder goes on at the priority it had).
pub fn lower_priority(nice: i32) -> Vec<String> {
    let mut errs = Vec::new();
    if let Err(e) = process::set_thread_nice(nice) {
        errs.push(format!("setpriority: {e}"));
    }
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
    if let Err(e) = process::set_ioprio(ioprio) {
        errs.push(format!("ioprio_set: {e}"));
    }
    errs
}

/// CPU time (user + system) used by the calling process so far, ns.
pub fn self_cpu_ns() -> u64 {
    process::self_cpu_ns()
}

/// Counts SIGINT and SIGTERM instead of dying on them; the main loop polls
/// [`signals`]. SIGPIPE is ignored so a closed pipe is an error, not death.
pub fn install_signal_handlers() -> Result<(), std::io::Error> {
    process::count_stop_signals()
}

/// How many stop signals have arrived.
pub fn signals() -> usize {
    process::stop_signals()
}

/// Sends `sig` to `pid`.
pub fn send_signal(pid: u32, sig: libc::c_int) -> Result<(), std::io::Error> {
    process::kill(pid, sig)
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
