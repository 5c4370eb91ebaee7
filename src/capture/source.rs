//! The bytes of one capture file: memory-mapped when possible.

use memmap2::{Advice, Mmap};
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// A capture file's contents.
pub enum Source {
    /// Read-only memory map of a regular file, and the file.
    Mapped(Mmap, File),
    /// Contents read into memory: empty files, pipes and other files that
    /// cannot be mapped.
    Owned(Vec<u8>),
}

impl Source {
    /// Opens `path`, mapping it when it is a non-empty regular file.
    pub fn open(path: &Path) -> io::Result<Source> {
        let mut file = File::open(path)?;
        let meta = file.metadata()?;
        if meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "is a directory",
            ));
        }
        if meta.is_file() && meta.len() > 0 {
            if let Ok(map) = map(&file) {
                return Ok(Source::Mapped(map, file));
            }
        }
        let mut v = Vec::new();
        file.read_to_end(&mut v)?;
        Ok(Source::Owned(v))
    }

    /// Maps the file afresh, so the pages of the previous map that were
    /// already read stop counting in this process' memory (they stay in the
    /// page cache). Keeps resident memory bounded whatever the file size.
    /// The bytes are the same; on failure the old map is kept.
    pub fn remap(&mut self) {
        if let Source::Mapped(m, file) = self {
            if let Ok(fresh) = map(file) {
                *m = fresh;
            }
        }
    }

    /// Whether [`Source::remap`] does anything.
    pub fn is_mapped(&self) -> bool {
        matches!(self, Source::Mapped(..))
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Source::Mapped(m, _) => m,
            Source::Owned(v) => v,
        }
    }
}

fn map(file: &File) -> io::Result<Mmap> {
    // SAFETY: the map is read-only and procflow only reads finished capture
    // files: a file truncated by another process while mapped would raise
    // SIGBUS, which is why live captures must be copied or rotated first
    // (docs/architecture.md). No `&mut` to the mapped bytes ever exists, and
    // every read of them is bounds-checked against the map's length.
    let map = unsafe { Mmap::map(file) }?;
    // Records are read front to back: ask for read-ahead.
    let _ = map.advise(Advice::Sequential);
    Ok(map)
}
