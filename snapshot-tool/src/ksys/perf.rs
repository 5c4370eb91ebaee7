//! `perf_event_open` on tracepoints and the perf ring buffers they write
//! into (an mmap the kernel writes concurrently).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, Ordering};

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

/// perf_event_open(2) of `attr` for every process on `cpu`, in no group,
/// closed on exec.
fn perf_event_open(attr: &PerfEventAttr, cpu: u32) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a fully initialized perf_event_attr whose `size`
    // says how much of it the kernel may read; the other arguments are
    // integers (pid -1 = every process, group -1 = none).
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr as *const PerfEventAttr,
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
    perf_event_open(&attr, cpu)
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
    perf_event_open(&attr, 0)
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
