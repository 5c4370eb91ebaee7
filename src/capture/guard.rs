//! Memory maps of capture files that survive the file shrinking under them.
//!
//! Reading a mapped page past the end of a file that was truncated after
//! it was mapped (or a page the disk cannot deliver: EIO) raises SIGBUS,
//! which kills the process without a word. Replay keeps the speed of a map
//! and guards it instead: while a map is registered here, a SIGBUS whose
//! address falls inside it is answered by mapping a page of zeros over the
//! faulting page (the read then completes) and by noting the offset of the
//! first such fault. Replay checks [`Guard::fault`] after every batch and
//! drops the batch that may have read zeros, ending that file with an
//! error naming the offset. A SIGBUS anywhere else restores the default
//! action and is raised again as before.
//!
//! The handler only reads and writes atomics and calls `mmap(2)`, a plain
//! system call, so it is safe to run at any point of the interrupted
//! thread.

// A SIGBUS handler and mmap over a faulting page are unsafe by nature; allowed in this module only.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Once;

/// Most maps guarded at once (replay maps one file at a time, plus one map
/// per file while the first packets are looked up).
const SLOTS: usize = 64;

/// No fault recorded in a slot.
const NO_FAULT: usize = usize::MAX;

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicUsize = AtomicUsize::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const NONE: AtomicUsize = AtomicUsize::new(NO_FAULT);
#[allow(clippy::declare_interior_mutable_const)]
const FREE: AtomicBool = AtomicBool::new(false);

static START: [AtomicUsize; SLOTS] = [ZERO; SLOTS];
static LEN: [AtomicUsize; SLOTS] = [ZERO; SLOTS];
static FAULT: [AtomicUsize; SLOTS] = [NONE; SLOTS];
static TAKEN: [AtomicBool; SLOTS] = [FREE; SLOTS];
static PAGE: AtomicUsize = AtomicUsize::new(4096);
static INSTALL: Once = Once::new();
static INSTALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigbus(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    let page = PAGE.load(Ordering::Relaxed).max(1);
    for i in 0..SLOTS {
        let len = LEN[i].load(Ordering::Acquire);
        let start = START[i].load(Ordering::Acquire);
        if len == 0 || addr < start || addr >= start.saturating_add(len) {
            continue;
        }
        let at = addr & !(page - 1);
        // SAFETY: `at` is a page inside a read-only mapping this process
        // made and still holds (the slot is unregistered before the map is
        // dropped); replacing it by anonymous zero pages changes only what
        // reads of it return.
        let r = unsafe {
            libc::mmap(
                at as *mut libc::c_void,
                page,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if r != libc::MAP_FAILED {
            let off = addr - start;
            let _ = FAULT[i].fetch_min(off, Ordering::AcqRel);
            return;
        }
    }
    // Not one of ours: the default action, raised again when the faulting
    // instruction runs again.
    // SAFETY: signal(2) with SIG_DFL is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGBUS, libc::SIG_DFL);
    }
}

fn install() -> bool {
    INSTALL.call_once(|| {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if page > 0 {
            PAGE.store(page as usize, Ordering::Relaxed);
        }
        // SAFETY: a zeroed sigaction with a handler of the SA_SIGINFO
        // signature and an empty mask is valid; the previous action is not
        // needed (SIGBUS outside our maps falls back to the default).
        let ok = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigbus as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut()) == 0
        };
        INSTALLED.store(ok, Ordering::Release);
    });
    INSTALLED.load(Ordering::Acquire)
}

/// A registered map; unregisters on drop (drop it before the map).
#[derive(Debug)]
pub struct Guard {
    slot: usize,
}

impl Guard {
    /// Guards `len` bytes of mapped memory at `ptr`. `None` when no handler
    /// could be installed or every slot is taken (the map is then read
    /// unguarded, as before).
    pub fn register(ptr: *const u8, len: usize) -> Option<Guard> {
        if len == 0 || !install() {
            return None;
        }
        for slot in 0..SLOTS {
            if TAKEN[slot]
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                FAULT[slot].store(NO_FAULT, Ordering::Release);
                START[slot].store(ptr as usize, Ordering::Release);
                LEN[slot].store(len, Ordering::Release);
                return Some(Guard { slot });
            }
        }
        None
    }

    /// Offset in the map of the first read that faulted (the file shrank
    /// under the map, or the device failed to deliver the page).
    pub fn fault(&self) -> Option<usize> {
        let f = FAULT[self.slot].load(Ordering::Acquire);
        (f != NO_FAULT).then_some(f)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        LEN[self.slot].store(0, Ordering::Release);
        START[self.slot].store(0, Ordering::Release);
        TAKEN[self.slot].store(false, Ordering::Release);
    }
}
