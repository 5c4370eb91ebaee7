//! Mounts (tracefs for the event sources) and access checks on paths.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

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

/// Whether the caller may create files in directory `dir` (access(2) with
/// `W_OK | X_OK`, which std does not offer).
pub fn access_writable(dir: &Path) -> io::Result<()> {
    let c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid NUL-terminated path owned by this frame.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Flags for a file of a suspect's tree opened to be read: never blocks
/// (a FIFO), never becomes the controlling terminal, closed on exec.
const READ_FLAGS: libc::c_int =
    libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;

fn c_name(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Opens `rel` below the directory `dir` to read it, resolved with `dir` as
/// its root: `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, so
/// symbolic links (absolute ones too) and `..` never leave `dir`.
/// `Ok(None)` when the kernel has no openat2 (before Linux 5.6).
pub fn open_in_root(dir: BorrowedFd<'_>, rel: &str) -> io::Result<Option<OwnedFd>> {
    let path = c_name(rel)?;
    /// `struct open_how` of openat2(2) (libc's is non-exhaustive).
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags: READ_FLAGS as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: `dir` is an open descriptor borrowed for the call, `path` a
    // NUL-terminated string and `how` an initialised `open_how` whose size
    // is passed; the kernel copies both and keeps no pointer.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOSYS) => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: the kernel just returned this descriptor, owned by no one else.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }))
}

/// Opens `name` in the directory `dir` without following a symbolic link
/// at its end (`O_NOFOLLOW`): as a directory handle (`O_PATH |
/// O_DIRECTORY`) when `directory`, else to read it.
pub fn open_at_nofollow(dir: BorrowedFd<'_>, name: &str, directory: bool) -> io::Result<OwnedFd> {
    let path = c_name(name)?;
    let flags = if directory {
        libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC
    } else {
        READ_FLAGS | libc::O_NOFOLLOW
    };
    // SAFETY: `dir` is an open descriptor borrowed for the call and `path`
    // a NUL-terminated string owned by this frame.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), path.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes a FIFO at `path` (tests of readers that must not block on one).
#[cfg(test)]
pub fn mkfifo(path: &Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid NUL-terminated path owned by this frame.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
