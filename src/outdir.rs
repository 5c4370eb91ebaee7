//! Writing reports safely: never into a bundle, never through a planted
//! symbolic link, never half.
//!
//! - A report location is refused when it resolves into a bundle: every
//!   ancestor of the resolved path (itself included) is compared by device
//!   and inode with the bundle directories given, so a symbolic link or a
//!   bind mount of the bundle does not pass, and any ancestor holding a
//!   procflow `manifest.json` is a bundle too.
//! - Files are written into a fresh private directory (mode 0700, created
//!   exclusively) inside the report directory, each opened with
//!   `O_CREAT | O_EXCL | O_NOFOLLOW`, so nothing already there (a symbolic
//!   link to the bundle or to `/etc`) is ever opened for writing.
//! - Only when every file is complete and synced are they renamed into
//!   place, the last one (`summary.json`) last, after the previous one was
//!   removed: `rename(2)` replaces a directory entry, it never follows a
//!   link. If anything fails before, the private directory is removed and
//!   the report directory holds exactly what it held before.
//!
//! The private directory lives inside the report directory rather than
//! beside it so that the final renames never cross a file system (a report
//! directory may be a mount point of its own).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::hostile::term_path;

/// Device and inode of a directory or file.
type DevIno = (u64, u64);

fn dev_ino(p: &Path) -> Option<DevIno> {
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

/// `p` made absolute, with symbolic links and `..` resolved as far as it
/// exists; the rest (not yet created) appended.
pub fn resolve(p: &Path) -> Option<PathBuf> {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(p)
    };
    let mut rest = Vec::new();
    let mut cur = abs.as_path();
    loop {
        if let Ok(c) = cur.canonicalize() {
            return Some(rest.iter().rev().fold(c, |acc, part| acc.join(part)));
        }
        rest.push(cur.file_name()?.to_os_string());
        cur = cur.parent()?;
    }
}

/// Whether `dir` holds a procflow bundle manifest.
fn holds_bundle_manifest(dir: &Path) -> bool {
    let m = dir.join(procflow_format::layout::MANIFEST_FILE);
    let Ok(f) = File::open(&m) else { return false };
    // The format name sits near the start; a few KB are enough to tell.
    let mut head = Vec::new();
    let _ = io::Read::read_to_end(&mut io::Read::take(f, 64 << 10), &mut head);
    let text = String::from_utf8_lossy(&head);
    text.contains(procflow_format::layout::FORMAT_NAME)
}

/// Why an output location cannot be used or written. Messages name the
/// path (escaped for the terminal); an I/O failure is the source.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The target lies in one of the bundles given.
    #[error(
        "{} is inside the bundle {} (same directory as {}); the bundle is \
         evidence and is never written to",
        term_path(target),
        term_path(bundle),
        term_path(dir)
    )]
    InsideBundle {
        /// Where output was to go.
        target: PathBuf,
        /// The bundle it lies in.
        bundle: PathBuf,
        /// The directory found to be the bundle.
        dir: PathBuf,
    },
    /// The target lies in a directory holding a bundle manifest.
    #[error(
        "{} is inside {}, which holds a procflow bundle manifest; a bundle is \
         evidence and is never written to",
        term_path(target),
        term_path(dir)
    )]
    InsideManifestDir {
        /// Where output was to go.
        target: PathBuf,
        /// The directory holding the manifest.
        dir: PathBuf,
    },
    /// `--out` names a file, not a directory.
    #[error(
        "--out {} is a file; --out names the directory the reports go into \
         (created if absent)",
        term_path(.0)
    )]
    OutIsFile(PathBuf),
    /// `--out` cannot be created.
    #[error("cannot create --out {}", term_path(out))]
    CreateOut {
        /// The report directory.
        out: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A directory stands where a report file goes.
    #[error("{} is a directory; a report file goes there", term_path(.0))]
    ReportIsDir(PathBuf),
    /// Report files are already there and `force` was not given.
    #[error(
        "{} already holds {}; choose another --out or pass --force to overwrite",
        term_path(out),
        names.join(", ")
    )]
    ReportsExist {
        /// The report directory.
        out: PathBuf,
        /// The report files found there.
        names: Vec<String>,
    },
    /// The private directory cannot be created.
    #[error("cannot create a private directory in --out {}", term_path(out))]
    PrivateDir {
        /// The report directory.
        out: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A finished report file cannot be renamed into place.
    #[error("cannot move {} into place", term_path(path))]
    MoveIntoPlace {
        /// Its final path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// An output file (`what`, e.g. `pcapng output`) lies in a bundle.
    #[error("{what}: {inner}")]
    FileInBundle {
        /// What the file is.
        what: String,
        /// Where it lies.
        inner: Box<OutputError>,
    },
    /// An output file is one of the inputs.
    #[error(
        "{what} {} is one of the inputs; refusing to overwrite it",
        term_path(path)
    )]
    IsInput {
        /// What the file is.
        what: String,
        /// Its path.
        path: PathBuf,
    },
    /// An output file is a directory.
    #[error("{what} {} is a directory", term_path(path))]
    IsDir {
        /// What the file is.
        what: String,
        /// Its path.
        path: PathBuf,
    },
    /// An output file exists and `force` was not given.
    #[error("{what} {} exists; pass --force to overwrite it", term_path(path))]
    Exists {
        /// What the file is.
        what: String,
        /// Its path.
        path: PathBuf,
    },
    /// A device or FIFO output cannot be opened.
    #[error("cannot open {what} {}", term_path(path))]
    Open {
        /// What the file is.
        what: String,
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The temporary file beside an output cannot be created.
    #[error("cannot create {what} {}", term_path(path))]
    Create {
        /// What the file is.
        what: String,
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// An output file cannot be synced or renamed into place.
    #[error("cannot write {}", term_path(path))]
    Write {
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Refuses `target` (a path that exists, or will be created) when it lies
/// in one of `bundles` or in any directory holding a bundle manifest:
/// every existing ancestor of its resolved path, itself included, is
/// compared by device and inode, so symbolic links and bind mounts of a
/// bundle are recognised.
pub fn refuse_inside_bundle(target: &Path, bundles: &[&Path]) -> Result<(), OutputError> {
    let protected: Vec<(DevIno, &Path)> = bundles
        .iter()
        .filter_map(|b| dev_ino(b).map(|d| (d, *b)))
        .collect();
    let Some(resolved) = resolve(target) else {
        return Ok(());
    };
    let mut cur: Option<&Path> = Some(resolved.as_path());
    while let Some(dir) = cur {
        if let Some(di) = dev_ino(dir) {
            if let Some((_, b)) = protected.iter().find(|(d, _)| *d == di) {
                return Err(OutputError::InsideBundle {
                    target: target.to_path_buf(),
                    bundle: b.to_path_buf(),
                    dir: dir.to_path_buf(),
                });
            }
            if std::fs::metadata(dir).map(|m| m.is_dir()).unwrap_or(false)
                && holds_bundle_manifest(dir)
            {
                return Err(OutputError::InsideManifestDir {
                    target: target.to_path_buf(),
                    dir: dir.to_path_buf(),
                });
            }
        }
        cur = dir.parent();
    }
    Ok(())
}

/// Opens `path` for writing only if nothing exists there: `O_CREAT |
/// O_EXCL | O_NOFOLLOW`, mode 0644.
pub fn create_exclusive(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// A fresh private directory `parent/PREFIX-PID-N` (mode 0700), created
/// exclusively so that nothing planted beforehand is reused.
fn private_dir(parent: &Path, prefix: &str) -> io::Result<PathBuf> {
    let pid = std::process::id();
    let mut last = None;
    for n in 0..1000u32 {
        let p = parent.join(format!("{prefix}-{pid}-{n}"));
        match std::fs::DirBuilder::new().mode(0o700).create(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free name")))
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// A report directory being written: files go to a private directory and
/// are renamed into place by [`ReportDir::commit`]; dropped without commit,
/// everything written is removed.
#[derive(Debug)]
pub struct ReportDir {
    out: PathBuf,
    tmp: PathBuf,
    created_out: bool,
    names: Vec<String>,
    bundles: Vec<PathBuf>,
    committed: bool,
}

/// Name prefix of the private directory inside a report directory.
pub const PARTIAL_PREFIX: &str = ".procflow-partial";

impl ReportDir {
    /// Prepares `out` for the report files `names` (the last is written and
    /// renamed last): refuses a location inside one of `bundles`, creates
    /// `out` if absent, refuses report files already there unless `force`
    /// (and a directory in the place of one in any case), and creates the
    /// private directory.
    pub fn prepare(
        out: &Path,
        bundles: &[&Path],
        names: &[&str],
        force: bool,
    ) -> Result<ReportDir, OutputError> {
        refuse_inside_bundle(out, bundles)?;
        if std::fs::metadata(out).is_ok_and(|m| !m.is_dir()) {
            return Err(OutputError::OutIsFile(out.to_path_buf()));
        }
        let existed = std::fs::symlink_metadata(out).is_ok();
        std::fs::create_dir_all(out).map_err(|source| OutputError::CreateOut {
            out: out.to_path_buf(),
            source,
        })?;
        let mut me = ReportDir {
            out: out.to_path_buf(),
            tmp: PathBuf::new(),
            created_out: !existed,
            names: Vec::new(),
            bundles: bundles.iter().map(|b| b.to_path_buf()).collect(),
            committed: false,
        };
        // Again now that it exists: a link or mount resolved for real.
        refuse_inside_bundle(out, bundles)?;
        let mut existing = Vec::new();
        for n in names {
            if let Ok(m) = std::fs::symlink_metadata(out.join(n)) {
                if m.is_dir() {
                    return Err(OutputError::ReportIsDir(out.join(n)));
                }
                existing.push(n.to_string());
            }
        }
        if !force && !existing.is_empty() {
            return Err(OutputError::ReportsExist {
                out: out.to_path_buf(),
                names: existing,
            });
        }
        me.tmp = private_dir(out, PARTIAL_PREFIX).map_err(|source| OutputError::PrivateDir {
            out: out.to_path_buf(),
            source,
        })?;
        Ok(me)
    }

    /// The final report directory.
    pub fn path(&self) -> &Path {
        &self.out
    }

    /// Creates report file `name` in the private directory.
    pub fn create(&mut self, name: &str) -> io::Result<File> {
        let f = create_exclusive(&self.tmp.join(name))?;
        self.names.push(name.to_string());
        Ok(f)
    }

    /// Renames every file into place, the last created last (the one that
    /// was there before is removed first, so no old complete-looking file
    /// survives a failure between the renames), then removes the private
    /// directory.
    pub fn commit(mut self) -> Result<(), OutputError> {
        let bundles: Vec<&Path> = self.bundles.iter().map(PathBuf::as_path).collect();
        refuse_inside_bundle(&self.out, &bundles)?;
        let err = |n: &str, source| OutputError::MoveIntoPlace {
            path: self.out.join(n),
            source,
        };
        if let Some(last) = self.names.last() {
            match std::fs::remove_file(self.out.join(last)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(err(last, e)),
            }
        }
        for n in &self.names {
            std::fs::rename(self.tmp.join(n), self.out.join(n)).map_err(|e| err(n, e))?;
        }
        sync_dir(&self.out);
        let _ = std::fs::remove_dir(&self.tmp);
        self.committed = true;
        Ok(())
    }
}

impl Drop for ReportDir {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
        if self.created_out {
            // Only if still empty: never remove what someone else put there.
            let _ = std::fs::remove_dir(&self.out);
        }
    }
}

/// One output file written safely: refused inside a bundle or over one of
/// the inputs, refused when it exists unless `force`, written to a fresh
/// file beside it and renamed over it when complete.
#[derive(Debug)]
pub struct SafeFile {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
    committed: bool,
}

impl SafeFile {
    /// Prepares `path` for writing. `inputs` are files that must not be
    /// overwritten (compared by device and inode); `bundles` directories
    /// that must not be written into.
    pub fn create(
        path: &Path,
        what: &str,
        inputs: &[PathBuf],
        bundles: &[&Path],
        force: bool,
    ) -> Result<SafeFile, OutputError> {
        refuse_inside_bundle(path, bundles).map_err(|e| OutputError::FileInBundle {
            what: what.to_string(),
            inner: Box::new(e),
        })?;
        if let Some(di) = dev_ino(path) {
            if inputs.iter().any(|i| dev_ino(i) == Some(di)) {
                return Err(OutputError::IsInput {
                    what: what.to_string(),
                    path: path.to_path_buf(),
                });
            }
        }
        // A device or a FIFO (`/dev/null`, `/dev/stdout`, a named pipe) is
        // written to as it is: there is nothing to replace, and renaming
        // over it would remove it.
        if let Ok(m) = std::fs::metadata(path) {
            use std::os::unix::fs::FileTypeExt;
            let t = m.file_type();
            if t.is_char_device() || t.is_fifo() || t.is_socket() || t.is_block_device() {
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|source| OutputError::Open {
                        what: what.to_string(),
                        path: path.to_path_buf(),
                        source,
                    })?;
                return Ok(SafeFile {
                    path: path.to_path_buf(),
                    tmp: PathBuf::new(),
                    file: Some(file),
                    committed: false,
                });
            }
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => {
                return Err(OutputError::IsDir {
                    what: what.to_string(),
                    path: path.to_path_buf(),
                });
            }
            Ok(_) if !force => {
                return Err(OutputError::Exists {
                    what: what.to_string(),
                    path: path.to_path_buf(),
                });
            }
            _ => {}
        }
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let base = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "out".into());
        let pid = std::process::id();
        let mut n = 0u32;
        let (tmp, file) = loop {
            let tmp = parent.join(format!(".{base}.procflow-partial-{pid}-{n}"));
            match create_exclusive(&tmp) {
                Ok(f) => break (tmp, f),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(source) => {
                    return Err(OutputError::Create {
                        what: what.to_string(),
                        path: path.to_path_buf(),
                        source,
                    })
                }
            }
        };
        Ok(SafeFile {
            path: path.to_path_buf(),
            tmp,
            file: Some(file),
            committed: false,
        })
    }

    /// Takes the open file (in its temporary place) out, to hand it to a
    /// writer; give it back with [`SafeFile::commit`]. `None` the second
    /// time.
    pub fn take(&mut self) -> Option<File> {
        self.file.take()
    }

    /// Syncs `file` and renames the temporary file over the final path.
    pub fn commit(mut self, file: File) -> Result<(), OutputError> {
        let e = |source| OutputError::Write {
            path: self.path.clone(),
            source,
        };
        if self.tmp.as_os_str().is_empty() {
            // Written in place (a device or a FIFO).
            self.committed = true;
            return Ok(());
        }
        file.sync_all().map_err(e)?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path).map_err(e)?;
        if let Some(p) = self.path.parent() {
            sync_dir(if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            });
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for SafeFile {
    fn drop(&mut self) {
        if !self.committed && !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("procflow-outdir-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn bundle(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join("manifest.json"),
            "{\"format\": \"procflow-bundle\"}",
        )
        .unwrap();
    }

    #[test]
    fn planted_symlink_is_replaced_not_followed() {
        let d = scratch("symlink");
        let b = d.join("bundle");
        bundle(&b);
        let out = d.join("out");
        std::fs::create_dir(&out).unwrap();
        std::os::unix::fs::symlink(b.join("manifest.json"), out.join("b.txt")).unwrap();
        let before = std::fs::read(b.join("manifest.json")).unwrap();
        let mut r = ReportDir::prepare(&out, &[&b], &["a.txt", "b.txt"], true).unwrap();
        for n in ["a.txt", "b.txt"] {
            let mut f = r.create(n).unwrap();
            f.write_all(n.as_bytes()).unwrap();
        }
        r.commit().unwrap();
        assert_eq!(std::fs::read(b.join("manifest.json")).unwrap(), before);
        assert_eq!(std::fs::read(out.join("b.txt")).unwrap(), b"b.txt");
        assert!(!std::fs::symlink_metadata(out.join("b.txt"))
            .unwrap()
            .file_type()
            .is_symlink());
        let left: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
        assert_eq!(left.len(), 2, "private directory left behind");
    }

    #[test]
    fn inside_bundle_refused_through_symlink() {
        let d = scratch("inside");
        let b = d.join("bundle");
        bundle(&b);
        std::os::unix::fs::symlink(&b, d.join("alias")).unwrap();
        let e = ReportDir::prepare(&d.join("alias/r"), &[&b], &["x"], false).unwrap_err();
        assert!(matches!(e, OutputError::InsideBundle { .. }), "{e}");
        assert!(e.to_string().contains("inside"), "{e}");
        assert!(!b.join("r").exists());
        // Not named as the bundle, but holding a manifest: refused too.
        let e = ReportDir::prepare(&d.join("alias"), &[], &["x"], false).unwrap_err();
        assert!(e.to_string().contains("bundle manifest"), "{e}");
    }

    #[test]
    fn dropped_without_commit_leaves_nothing() {
        let d = scratch("drop");
        let out = d.join("new");
        {
            let mut r = ReportDir::prepare(&out, &[], &["a"], false).unwrap();
            r.create("a").unwrap().write_all(b"half").unwrap();
        }
        assert!(!out.exists());
    }

    #[test]
    fn existing_files_need_force() {
        let d = scratch("force");
        std::fs::write(d.join("a"), "old").unwrap();
        let e = ReportDir::prepare(&d, &[], &["a"], false).unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        let e = SafeFile::create(&d.join("a"), "--out", &[], &[], false).unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        let mut s = SafeFile::create(&d.join("a"), "--out", &[], &[], true).unwrap();
        let mut f = s.take().unwrap();
        f.write_all(b"new").unwrap();
        s.commit(f).unwrap();
        assert_eq!(std::fs::read(d.join("a")).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
    }
}
