//! The bytes of one capture file: memory-mapped, the map guarded against
//! the file shrinking under it ([`super::guard`]).
//!
//! A regular file is mapped read-only. Anything else (a pipe, `<(zcat
//! x.pcap.gz)`, a character device) is read as a stream: its first four
//! bytes must be a pcap or pcapng magic number, checked before anything
//! else is read, so `/dev/zero` or a random device is refused at once; the
//! rest is copied to an unnamed temporary file, which is then mapped like a
//! regular capture (memory stays bounded, and nobody else can truncate it).

use memmap2::{Advice, Mmap};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::guard::Guard;

/// A capture file's contents.
pub enum Source {
    /// Read-only memory map of a regular file (or of the temporary copy of
    /// a stream), with its guard and the file. The guard is declared first
    /// so that it is dropped (unregistered) before the map.
    Mapped {
        /// Guard of the map, when one could be registered.
        guard: Option<Guard>,
        /// The map.
        map: Mmap,
        /// The mapped file.
        file: File,
    },
    /// Contents in memory: empty inputs and bytes given by the caller.
    Owned(Vec<u8>),
}

/// The magic numbers a capture may begin with: classic pcap (micro- and
/// nanosecond, both byte orders, and the Kuznetzov variant) and pcapng's
/// section header block type.
pub const CAPTURE_MAGICS: [[u8; 4]; 7] = [
    [0xd4, 0xc3, 0xb2, 0xa1],
    [0xa1, 0xb2, 0xc3, 0xd4],
    [0x4d, 0x3c, 0xb2, 0xa1],
    [0xa1, 0xb2, 0x3c, 0x4d],
    [0x34, 0xcd, 0xb2, 0xa1],
    [0xa1, 0xb2, 0xcd, 0x34],
    [0x0a, 0x0d, 0x0d, 0x0a],
];

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// An unnamed file in the temporary directory (`O_TMPFILE`), or a named one
/// removed at once where the file system cannot make unnamed ones.
fn anonymous_file() -> io::Result<File> {
    let dir = std::env::temp_dir();
    let unnamed = OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(&dir);
    if let Ok(f) = unnamed {
        return Ok(f);
    }
    for n in 0..1000u32 {
        let p = dir.join(format!(".procflow-stream-{}-{n}", std::process::id()));
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&p)
        {
            Ok(f) => {
                let _ = std::fs::remove_file(&p);
                return Ok(f);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("no temporary file could be created"))
}

impl Source {
    /// Opens `path`: a regular file is mapped; a stream is checked for a
    /// capture magic number first, then copied to a temporary file that is
    /// mapped.
    pub fn open(path: &Path) -> io::Result<Source> {
        let mut file = File::open(path)?;
        let meta = file.metadata()?;
        if meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "is a directory",
            ));
        }
        if meta.is_file() {
            if meta.len() == 0 {
                return Ok(Source::Owned(Vec::new()));
            }
            return Source::mapped(file);
        }
        // A stream: the magic number first, so that an endless input that
        // is no capture is refused before anything more is read.
        let mut magic = [0u8; 4];
        let got = read_up_to(&mut file, &mut magic)?;
        if got == 0 {
            return Ok(Source::Owned(Vec::new()));
        }
        let head = magic.get(..got).unwrap_or(&[]);
        if got < 4 || !CAPTURE_MAGICS.iter().any(|m| m == head) {
            let hex: Vec<String> = head.iter().map(|b| format!("{b:02x}")).collect();
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "not a capture: a stream beginning with {} (expected a pcap or pcapng \
                     magic number: a1b2c3d4, a1b23c4d, 0a0d0d0a in either byte order)",
                    hex.join(" ")
                ),
            ));
        }
        let mut copy = anonymous_file()?;
        copy.write_all(head)?;
        io::copy(&mut file, &mut copy)?;
        copy.flush()?;
        Source::mapped(copy)
    }

    fn mapped(file: File) -> io::Result<Source> {
        let map = map(&file)?;
        let guard = Guard::register(map.as_ptr(), map.len());
        Ok(Source::Mapped { guard, map, file })
    }

    /// Maps the file afresh, so the pages of the previous map that were
    /// already read stop counting in this process' memory (they stay in the
    /// page cache). Keeps resident memory bounded whatever the file size.
    /// The bytes are the same; on failure, or when the old map has faulted
    /// (its fault must stay visible), the old map is kept.
    pub fn remap(&mut self) {
        if let Source::Mapped {
            guard,
            map: m,
            file,
        } = self
        {
            if guard.as_ref().is_some_and(|g| g.fault().is_some()) {
                return;
            }
            if let Ok(fresh) = map(file) {
                // Unregister the old map before it is unmapped.
                *guard = None;
                *m = fresh;
                *guard = Guard::register(m.as_ptr(), m.len());
            }
        }
    }

    /// Whether [`Source::remap`] does anything.
    pub fn is_mapped(&self) -> bool {
        matches!(self, Source::Mapped { .. })
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Source::Mapped { map, .. } => map,
            Source::Owned(v) => v,
        }
    }

    /// When the mapped bytes can no longer be trusted: the offset of the
    /// first read that failed (the file shrank, or the device could not
    /// deliver the page), or the file's current size when it is now shorter
    /// than the map. `None` while every byte read was the file's.
    pub fn failed_at(&self) -> Option<(u64, Option<u64>)> {
        let Source::Mapped { guard, map, file } = self else {
            return None;
        };
        let now = file.metadata().ok().map(|m| m.len());
        let fault = guard.as_ref().and_then(Guard::fault).map(|f| f as u64);
        let shrank = now.filter(|&n| n < map.len() as u64);
        match (fault, shrank) {
            (Some(f), _) => Some((f, now)),
            (None, Some(n)) => Some((n, now)),
            (None, None) => None,
        }
    }
}

// The analyzer's one memory map; unsafe is allowed for this function only.
#[allow(unsafe_code)]
fn map(file: &File) -> io::Result<Mmap> {
    // SAFETY: the map is read-only and no `&mut` to the mapped bytes ever
    // exists; every read of them is bounds-checked against the map's
    // length. A file truncated by another process while mapped would raise
    // SIGBUS: the map is registered with `super::guard`, which answers such
    // a fault with zero pages and records it, and replay drops what was
    // read after it (`Source::failed_at`).
    let map = unsafe { Mmap::map(file) }?;
    // Records are read front to back: ask for read-ahead.
    let _ = map.advise(Advice::Sequential);
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_zero_is_refused_at_once() {
        let e = Source::open(Path::new("/dev/zero")).err().unwrap();
        assert!(e.to_string().contains("not a capture"), "{e}");
        assert!(e.to_string().contains("00 00 00 00"), "{e}");
    }

    #[test]
    fn truncation_under_the_map_is_caught() {
        let p = std::env::temp_dir().join(format!("procflow-guard-{}", std::process::id()));
        let len = 1 << 20;
        std::fs::write(&p, vec![7u8; len]).unwrap();
        let src = Source::open(&p).unwrap();
        assert!(src.failed_at().is_none());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(4096)
            .unwrap();
        // Reading the page past the new end would have been SIGBUS.
        let b = src.bytes();
        let tail: u64 = b[len - 4096..].iter().map(|&x| u64::from(x)).sum();
        assert_eq!(tail, 0);
        assert_eq!(b[0], 7);
        let (at, now) = src.failed_at().unwrap();
        assert!(at >= 4096, "{at}");
        assert_eq!(now, Some(4096));
        drop(src);
        let _ = std::fs::remove_file(&p);
    }
}
