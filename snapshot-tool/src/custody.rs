//! The custody log (`--custody-log FILE`): one JSON line appended per
//! recording when it stops, with the bundle digest (SHA-256 of
//! `SHA256SUMS`), the host, the time, the tool version and the output
//! directory. Kept apart from the bundle (typically on other media), it
//! lets a responder show later that the bundle is the one collected:
//! `procflow verify --expect DIGEST`.
//!
//! The file is opened (created if absent, append only) before recording
//! starts, so a path that cannot be written stops the recorder before it
//! writes anything; the line is written with one `write` and fsynced.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// The custody log, open for appending.
#[derive(Debug)]
pub struct CustodyLog {
    path: PathBuf,
    file: File,
}

/// One line of the custody log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CustodyRecord {
    /// When the recording stopped, RFC 3339 UTC.
    pub time: String,
    /// The host's name (uname).
    pub host: String,
    /// The host's boot id.
    pub boot_id: String,
    /// `procflow-snap`.
    pub tool: String,
    /// Its version.
    pub version: String,
    /// The bundle directory, as given.
    pub out: String,
    /// The recorder's final status (`complete`, `killed`...).
    pub status: String,
    /// `sha256:HEX` of `SHA256SUMS`; `None` when it was not written
    /// (forced stop, write error).
    pub digest: Option<String>,
}

/// Why the custody log cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CustodyError {
    /// It lies inside the bundle directory: it would be part of what it
    /// vouches for.
    #[error(
        "{}: the custody log must not be inside the output directory {} (put it on other media)",
        log.display(),
        out.display()
    )]
    InsideOut {
        /// The log.
        log: PathBuf,
        /// The output directory.
        out: PathBuf,
    },
    /// It cannot be opened for appending.
    #[error("{}: cannot open the custody log for appending", path.display())]
    Open {
        /// The log.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// The absolute, lexically normalised form of `p` (no file system access:
/// the output directory may not exist yet).
fn absolute(p: &Path) -> PathBuf {
    let base = if p.is_absolute() {
        PathBuf::new()
    } else {
        std::env::current_dir().unwrap_or_default()
    };
    let mut out = PathBuf::new();
    for c in base.join(p).components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

impl CustodyLog {
    /// Opens `path` for appending (created 0600 if absent), refusing a
    /// path inside `out`.
    pub fn open(path: &Path, out: &Path) -> Result<CustodyLog, CustodyError> {
        let abs_log = absolute(path);
        let abs_out = absolute(out);
        let real_out = std::fs::canonicalize(out).unwrap_or(abs_out.clone());
        let real_log = path
            .parent()
            .and_then(|d| {
                std::fs::canonicalize(if d.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    d
                })
                .ok()
            })
            .map(|d| d.join(path.file_name().unwrap_or_default()))
            .unwrap_or(abs_log.clone());
        if abs_log.starts_with(&abs_out) || real_log.starts_with(&real_out) {
            return Err(CustodyError::InsideOut {
                log: path.to_path_buf(),
                out: out.to_path_buf(),
            });
        }
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| CustodyError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(CustodyLog {
            path: path.to_path_buf(),
            file,
        })
    }

    /// The log's path as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `r` as one JSON line, with one write, then fsyncs.
    pub fn append(&mut self, r: &CustodyRecord) -> io::Result<()> {
        let mut line = serde_json::to_vec(r).map_err(io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_lines_and_refuses_the_bundle_dir() {
        let d = std::env::temp_dir().join(format!("pf-custody-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("out")).unwrap();
        let e = CustodyLog::open(&d.join("out/custody.log"), &d.join("out")).unwrap_err();
        assert!(matches!(e, CustodyError::InsideOut { .. }), "{e}");
        let e = CustodyLog::open(&d.join("out/../out/x"), &d.join("out")).unwrap_err();
        assert!(matches!(e, CustodyError::InsideOut { .. }), "{e}");
        let log = d.join("custody.log");
        let r = CustodyRecord {
            time: "2026-12-05T20:00:00Z".into(),
            host: "h\n1".into(),
            boot_id: "b".into(),
            tool: "procflow-snap".into(),
            version: "0.1.0".into(),
            out: "/x".into(),
            status: "complete".into(),
            digest: Some(format!("sha256:{}", "a".repeat(64))),
        };
        for _ in 0..2 {
            CustodyLog::open(&log, &d.join("out"))
                .unwrap()
                .append(&r)
                .unwrap();
        }
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(v["host"], "h\n1");
        let _ = std::fs::remove_dir_all(&d);
    }
}
