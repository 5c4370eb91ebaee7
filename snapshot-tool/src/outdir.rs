//! The output directory: checked at start (absent, or an empty writable
//! directory), then locked for the whole recording, so that two recorders
//! never write one bundle.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Why the output directory cannot take a bundle. The message names the
/// directory; an I/O failure is the source.
#[derive(Debug, thiserror::Error)]
pub enum OutDirError {
    /// Absent, and its parent is not a directory.
    #[error(
        "{}: output directory cannot be created: {} is not a directory",
        dir.display(),
        parent.display()
    )]
    ParentNotDir {
        /// The output directory.
        dir: PathBuf,
        /// Its parent.
        parent: PathBuf,
    },
    /// Absent, and its parent is not writable.
    #[error("{}: output directory cannot be created in {}", dir.display(), parent.display())]
    ParentNotWritable {
        /// The output directory.
        dir: PathBuf,
        /// Its parent.
        parent: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Cannot be looked at.
    #[error("{}", dir.display())]
    Unreadable {
        /// The output directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file stands there.
    #[error("{}: exists and is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// Cannot be listed.
    #[error("{}: cannot list", dir.display())]
    CannotList {
        /// The output directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Holds something already.
    #[error(
        "{}: output directory is not empty (a bundle is never written over another)",
        .0.display()
    )]
    NotEmpty(PathBuf),
    /// Not writable.
    #[error("{}: not writable", dir.display())]
    NotWritable {
        /// The output directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Cannot be opened to be locked.
    #[error("{}: cannot open", dir.display())]
    CannotOpen {
        /// The output directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Another recorder holds its lock.
    #[error("{}: another procflow-snap is recording into this directory", .0.display())]
    Busy(PathBuf),
    /// Cannot be locked.
    #[error("{}: cannot lock", dir.display())]
    CannotLock {
        /// The output directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Checks the output directory: absent (will be created), or an empty
/// writable directory.
pub fn check_out_dir(dir: &Path) -> Result<(), OutDirError> {
    let at = || dir.to_path_buf();
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let parent = dir
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !parent.is_dir() {
                return Err(OutDirError::ParentNotDir {
                    dir: at(),
                    parent: parent.to_path_buf(),
                });
            }
            writable(parent).map_err(|source| OutDirError::ParentNotWritable {
                dir: at(),
                parent: parent.to_path_buf(),
                source,
            })
        }
        Err(source) => Err(OutDirError::Unreadable { dir: at(), source }),
        Ok(m) if !m.is_dir() => Err(OutDirError::NotADirectory(at())),
        Ok(_) => {
            let mut rd = std::fs::read_dir(dir)
                .map_err(|source| OutDirError::CannotList { dir: at(), source })?;
            if rd.next().is_some() {
                return Err(OutDirError::NotEmpty(at()));
            }
            writable(dir).map_err(|source| OutDirError::NotWritable { dir: at(), source })
        }
    }
}

/// Whether files can be created in `dir` (access(2) `W_OK | X_OK`).
fn writable(dir: &Path) -> io::Result<()> {
    crate::ksys::fs::access_writable(dir)
}

/// Takes an exclusive lock (`flock`) on the output directory, held as long
/// as the returned file is open. A second recorder started on the same
/// `--out` fails here instead of both passing the empty-directory check;
/// the directory is checked again, empty, once the lock is held.
pub fn lock_out_dir(dir: &Path) -> Result<File, OutDirError> {
    let at = || dir.to_path_buf();
    let f = File::open(dir).map_err(|source| OutDirError::CannotOpen { dir: at(), source })?;
    // std's try_lock is flock(LOCK_EX | LOCK_NB) on Linux.
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Err(OutDirError::Busy(at())),
        Err(std::fs::TryLockError::Error(source)) => {
            return Err(OutDirError::CannotLock { dir: at(), source })
        }
    }
    let mut rd =
        std::fs::read_dir(dir).map_err(|source| OutDirError::CannotList { dir: at(), source })?;
    if rd.next().is_some() {
        return Err(OutDirError::NotEmpty(at()));
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused() {
        let d = std::env::temp_dir().join(format!("procflow-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let first = lock_out_dir(&d).unwrap();
        let e = lock_out_dir(&d).unwrap_err();
        assert!(matches!(e, OutDirError::Busy(_)), "{e}");
        assert!(e.to_string().contains("another procflow-snap"), "{e}");
        drop(first);
        std::fs::write(d.join("x"), "").unwrap();
        let e = lock_out_dir(&d).unwrap_err();
        assert!(e.to_string().contains("not empty"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
