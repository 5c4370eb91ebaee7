//! The bytes of one capture file: memory-mapped when possible.

use memmap2::{Advice, Mmap};
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// A capture file's contents.
pub enum Source {
    /// Read-only memory map of a regular file.
    Mapped(Mmap),
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
            // SAFETY: the map is read-only and procflow only reads finished
            // capture files: a file truncated by another process while mapped
            // would raise SIGBUS, which is why live captures must be copied
            // or rotated first (documented in docs/architecture.md). No
            // `&mut` to the mapped bytes ever exists.
            let map = unsafe { Mmap::map(&file) };
            if let Ok(map) = map {
                // Records are read front to back: ask for read-ahead.
                let _ = map.advise(Advice::Sequential);
                return Ok(Source::Mapped(map));
            }
        }
        let mut v = Vec::new();
        file.read_to_end(&mut v)?;
        Ok(Source::Owned(v))
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Source::Mapped(m) => m,
            Source::Owned(v) => v,
        }
    }
}
