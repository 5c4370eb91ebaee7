//! The bytes of one capture file: memory-mapped, the map guarded against
//! the file shrinking under it ([`super::guard`]).
//!
//! A regular file is mapped read-only. Anything else (a pipe, `<(zcat
//! x.pcap.gz)`, a character device) is read as a stream: its first four
//! bytes must be a pcap or pcapng magic number, checked before anything
//! else is read, so `/dev/zero` or a random device is refused at once; the
//! rest is copied to an unnamed temporary file, which is then mapped like a
//! regular capture (memory stays bounded, and nobody else can truncate it).
//!
//! Replay reads a stream as it comes ([`Source::open_streaming`]): the copy
//! runs at most [`STREAM_AHEAD`] bytes ahead of the reader, and what has
//! been read is given back to the file system ([`Source::release`]), so an
//! endless pipe uses bounded disk and a stop signal ends the process at
//! once (freeing a copy of gigabytes took the kernel most of a second). A
//! read error on the stream ends it where it failed: the bytes before are
//! kept and the error is said ([`Source::stream_error`]).

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
        /// The stream being copied into `file`, when the input is one.
        stream: Option<Box<Stream>>,
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

/// How far a stream is copied ahead of the replay's position: a batch of
/// records (2 MiB) and room for the longest record or block read from a
/// stream (a pcapng block longer than about 62 MiB is read as cut, where a
/// file would hold it; no capture tool writes blocks near that size).
pub const STREAM_AHEAD: u64 = 64 << 20;

/// A stream (pipe, device) copied into the mapped temporary file as the
/// replay needs it.
pub struct Stream {
    input: File,
    /// Bytes copied so far (the copy's length).
    copied: u64,
    /// The input ended (end of file, or the read error below).
    done: bool,
    /// Offset and text of the read (or copy) error that ended the stream.
    error: Option<(u64, String)>,
    /// Bytes at the start of the copy given back to the file system.
    released: std::cell::Cell<u64>,
}

impl Stream {
    /// Copies from the input into `copy` until `limit` bytes are copied or
    /// the input ends; an error ends the stream where it happened.
    fn copy_until(&mut self, copy: &File, limit: u64) {
        let mut buf = vec![0u8; 1 << 20];
        let mut out = copy;
        while !self.done && self.copied < limit {
            match self.input.read(&mut buf) {
                Ok(0) => self.done = true,
                Ok(n) => match out.write_all(&buf[..n]) {
                    Ok(()) => self.copied += n as u64,
                    Err(e) => self.fail(format!("cannot copy it to a temporary file: {e}")),
                },
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.fail(format!("reading failed: {e}")),
            }
        }
    }

    fn fail(&mut self, what: String) {
        self.error = Some((self.copied, what));
        self.done = true;
    }
}

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
    /// capture magic number first, then copied whole to a temporary file
    /// that is mapped (a read error is an error).
    pub fn open(path: &Path) -> io::Result<Source> {
        let mut s = Source::open_streaming(path)?;
        s.fill(u64::MAX);
        match s.stream_error() {
            Some((at, what)) => Err(io::Error::other(format!("offset {at}: {what}"))),
            None => Ok(s),
        }
    }

    /// Opens `path` like [`Source::open`], but a stream is copied only
    /// [`STREAM_AHEAD`] bytes ahead: the reader asks for more with
    /// [`Source::fill`] and gives back what it has read with
    /// [`Source::release`].
    /// `/dev/stdin` is the process's standard input itself, not opened
    /// again (which fails for a socket and gives a new terminal for a
    /// pseudo-terminal).
    pub fn open_streaming(path: &Path) -> io::Result<Source> {
        let mut file = if path == Path::new("/dev/stdin") {
            use std::os::fd::AsFd;
            File::from(io::stdin().as_fd().try_clone_to_owned()?)
        } else {
            File::open(path)?
        };
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
        let mut stream = Box::new(Stream {
            input: file,
            copied: head.len() as u64,
            done: false,
            error: None,
            released: std::cell::Cell::new(0),
        });
        stream.copy_until(&copy, STREAM_AHEAD);
        let mut s = Source::mapped(copy)?;
        if let Source::Mapped { stream: st, .. } = &mut s {
            *st = Some(stream);
        }
        Ok(s)
    }

    fn mapped(file: File) -> io::Result<Source> {
        let map = map(&file)?;
        let guard = Guard::register(map.as_ptr(), map.len());
        Ok(Source::Mapped {
            guard,
            map,
            file,
            stream: None,
        })
    }

    /// Whether the bytes end before offset `upto` and a stream could give
    /// more: the caller then detaches its readers and calls
    /// [`Source::fill`].
    pub fn wants(&self, upto: u64) -> bool {
        match self {
            Source::Mapped {
                stream: Some(s), ..
            } => !s.done && s.copied < upto,
            _ => false,
        }
    }

    /// A stream: copies it until [`STREAM_AHEAD`] bytes past `upto` are
    /// there (or it ends), then maps the longer copy. Nothing else.
    pub fn fill(&mut self, upto: u64) {
        let Source::Mapped {
            stream: Some(s),
            file,
            ..
        } = self
        else {
            return;
        };
        let before = s.copied;
        s.copy_until(file, upto.saturating_add(STREAM_AHEAD));
        if s.copied != before {
            self.remap();
        }
    }

    /// A stream: gives the copy's bytes before `offset` back to the file
    /// system (they read as zeros from then on), so an endless stream uses
    /// bounded disk. The caller reads nothing before `offset` any more.
    pub fn release(&self, offset: u64) {
        if let Source::Mapped {
            stream: Some(s),
            file,
            ..
        } = self
        {
            let (from, to) = (s.released.get(), offset.min(s.copied) & !0xfff);
            if to > from && punch_hole(file, from, to - from).is_ok() {
                s.released.set(to);
            }
        }
    }

    /// A stream that ended on an error: the offset where it failed (the
    /// bytes before it are read) and what failed.
    pub fn stream_error(&self) -> Option<(u64, &str)> {
        match self {
            Source::Mapped {
                stream: Some(s), ..
            } => s.error.as_ref().map(|(at, e)| (*at, e.as_str())),
            _ => None,
        }
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
            ..
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
        let Source::Mapped {
            guard, map, file, ..
        } = self
        else {
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

// Giving a stream copy's read bytes back; unsafe is allowed for this
// function only.
#[allow(unsafe_code)]
fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(off), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(io::Error::other("offset out of range"));
    };
    // SAFETY: fallocate(2) on an open descriptor of a file this process
    // created; it takes no pointer, and punching a hole with KEEP_SIZE only
    // turns bytes of the file into zeros, which the map then reads (nothing
    // reads them any more).
    let r = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off,
            len,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
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
