//! Bundle-level files: the manifest (replaced atomically) and SHA256SUMS,
//! plus the error summary that goes into the manifest.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use procflow_format::hash::sha256_reader;

use crate::layout::{Manifest, RecordError, MANIFEST_FILE, SHA256SUMS_FILE};

/// Suffix of files being written before their rename.
pub const TMP_SUFFIX: &str = ".tmp";

/// Writes `dir/name` atomically: temporary file, fsync, rename, fsync dir.
pub fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let res = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(name))?;
        sync_dir(dir)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// fsync of a directory, so renames and new files in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Bytes kept allocated for the next manifest while recording.
pub const MANIFEST_RESERVE: usize = 256 * 1024;

/// Writes the manifest atomically (temporary file, fsync, rename, fsync
/// dir), then allocates the temporary file of the next write in advance:
/// overwriting blocks already allocated needs no free space, so the final
/// manifest (status `disk-full`) can still be written when the disk is
/// full. While recording, `manifest.json.tmp` is that zero-filled reserve.
pub fn write_manifest(dir: &Path, m: &Manifest) -> io::Result<()> {
    let mut text = serde_json::to_vec_pretty(m).map_err(io::Error::other)?;
    text.push(b'\n');
    let tmp = dir.join(format!("{MANIFEST_FILE}{TMP_SUFFIX}"));
    let res = (|| {
        // No truncation: the reserve's blocks are reused in place.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&tmp)?;
        f.write_all(&text)?;
        f.set_len(text.len() as u64)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(MANIFEST_FILE))?;
        sync_dir(dir)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return res;
    }
    Ok(())
}

/// Allocates the reserve for the next manifest write (see
/// [`write_manifest`]). Best effort: without it the final manifest may not
/// fit on a full disk.
pub fn reserve_manifest(dir: &Path) -> io::Result<()> {
    let tmp = dir.join(format!("{MANIFEST_FILE}{TMP_SUFFIX}"));
    let mut f = File::create(&tmp)?;
    f.write_all(&vec![0u8; MANIFEST_RESERVE])?;
    f.sync_all()
}

/// Writes `SHA256SUMS` (`sha256sum -c` format: `HEX  NAME`) for every
/// regular file in `dir` except itself and temporary files, in name order.
/// Returns the bundle digest (SHA-256 of what was written, hex).
pub fn write_sha256sums(dir: &Path, abort: &dyn Fn() -> bool) -> io::Result<String> {
    let mut names: Vec<String> = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if !e.file_type()?.is_file() {
            continue;
        }
        let n = e.file_name().to_string_lossy().into_owned();
        if n == SHA256SUMS_FILE || n.ends_with(TMP_SUFFIX) {
            continue;
        }
        names.push(n);
    }
    names.sort();
    let mut out = String::new();
    for n in &names {
        let (h, _) = sha256_reader(File::open(dir.join(n))?, abort)?;
        out.push_str(&format!("{h}  {n}\n"));
    }
    write_atomic(dir, SHA256SUMS_FILE, out.as_bytes())?;
    Ok(procflow_format::hash::bundle_digest(out.as_bytes()))
}

/// Errors summarized by (what, path family, error): `/proc/1234/fd`
/// becomes `/proc/*/fd`, so a thousand denied pids make one line.
#[derive(Debug, Default, Clone)]
pub struct ErrorSummary {
    map: BTreeMap<(String, Option<String>, String), u64>,
}

/// Replaces every run of digits in a path by `*`.
pub fn path_family(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_digits = false;
    for c in path.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('*');
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
    out
}

impl ErrorSummary {
    /// Counts errors.
    pub fn add(&mut self, e: &RecordError) {
        let key = (
            e.what.clone(),
            e.path.as_deref().map(path_family),
            e.error.clone(),
        );
        *self.map.entry(key).or_insert(0) += e.count;
    }

    /// How many errors of kind `what` were counted.
    pub fn total(&self, what: &str) -> u64 {
        self.map
            .iter()
            .filter(|((w, _, _), _)| w == what)
            .map(|(_, n)| *n)
            .sum()
    }

    /// The summary as manifest entries.
    pub fn to_vec(&self) -> Vec<RecordError> {
        self.map
            .iter()
            .map(|((what, path, error), count)| RecordError {
                what: what.clone(),
                path: path.clone(),
                error: error.clone(),
                count: *count,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families() {
        assert_eq!(path_family("/proc/1234/fd"), "/proc/*/fd");
        assert_eq!(path_family("/proc/1/net/tcp6"), "/proc/*/net/tcp*");
        let mut s = ErrorSummary::default();
        for pid in [1, 2, 3] {
            s.add(&RecordError {
                what: "read-fd".into(),
                path: Some(format!("/proc/{pid}/fd")),
                error: "EACCES".into(),
                count: 1,
            });
        }
        let v = s.to_vec();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].count, 3);
    }
}
