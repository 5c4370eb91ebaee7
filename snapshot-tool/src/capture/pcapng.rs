//! The pcapng writer of the built-in capture: whole blocks into a buffer,
//! the buffer into the file, every write checked. When a write fails, the
//! file is cut back to its last complete block and the packets that did
//! not reach it are counted.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// `LINKTYPE_ETHERNET`.
pub const LINK_ETHERNET: u16 = 1;
/// `LINKTYPE_LINUX_SLL` (Linux cooked capture v1).
pub const LINK_SLL: u16 = 113;

/// pcapng block types.
const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 1;
const ISB: u32 = 5;
const EPB: u32 = 6;

/// `epb_flags` direction bits (pcapng spec: 01 inbound, 10 outbound).
pub const FLAG_INBOUND: u32 = 1;
/// Outbound.
pub const FLAG_OUTBOUND: u32 = 2;

/// Statistics of one interface for an interface statistics block.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    /// First time covered, ns since the epoch.
    pub start_ns: i64,
    /// Last time covered, ns since the epoch.
    pub end_ns: i64,
    /// `isb_ifrecv`, `isb_ifdrop`, `isb_usrdeliv`; absent on interfaces
    /// that do not carry the socket's counters.
    pub counts: Option<(u64, u64, u64)>,
}

/// A write that failed: what, and how many packets it lost.
#[derive(Debug)]
pub struct WriteFailure {
    /// The error.
    pub error: io::Error,
    /// Packets in the buffer that did not reach the file.
    pub packets_lost: u64,
}

/// One pcapng file being written.
#[derive(Debug)]
pub struct Writer {
    file: File,
    /// Its path.
    pub path: PathBuf,
    buf: Vec<u8>,
    /// Bytes in the file (all whole blocks).
    pub committed: u64,
    /// Packets in the file.
    pub packets: u64,
    packets_in_buf: u64,
}

fn pad4(n: usize) -> usize {
    (4 - n % 4) % 4
}

fn opt(b: &mut Vec<u8>, code: u16, val: &[u8]) {
    b.extend_from_slice(&code.to_le_bytes());
    b.extend_from_slice(&(val.len() as u16).to_le_bytes());
    b.extend_from_slice(val);
    b.extend(std::iter::repeat_n(0u8, pad4(val.len())));
}

fn ts_words(ns: i64) -> [u8; 8] {
    let t = u64::try_from(ns).unwrap_or(0);
    let mut o = [0u8; 8];
    o[..4].copy_from_slice(&((t >> 32) as u32).to_le_bytes());
    o[4..].copy_from_slice(&(t as u32).to_le_bytes());
    o
}

/// Starts a block of `kind` at the end of `b`; returns where it starts.
fn begin(b: &mut Vec<u8>, kind: u32) -> usize {
    let at = b.len();
    b.extend_from_slice(&kind.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    at
}

/// Ends the block begun at `at`: trailing length, length in the header.
fn end(b: &mut Vec<u8>, at: usize) {
    let len = (b.len() - at + 4) as u32;
    b.extend_from_slice(&len.to_le_bytes());
    b[at + 4..at + 8].copy_from_slice(&len.to_le_bytes());
}

impl Writer {
    /// Creates `path` (it must not exist) and writes the section header.
    pub fn create(path: &Path) -> io::Result<Writer> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)?;
        let mut w = Writer {
            file,
            path: path.to_path_buf(),
            buf: Vec::with_capacity(BUF_BYTES + 70_000),
            committed: 0,
            packets: 0,
            packets_in_buf: 0,
        };
        let at = begin(&mut w.buf, SHB);
        w.buf.extend_from_slice(&0x1A2B_3C4Du32.to_le_bytes());
        w.buf.extend_from_slice(&1u16.to_le_bytes());
        w.buf.extend_from_slice(&0u16.to_le_bytes());
        w.buf.extend_from_slice(&(-1i64).to_le_bytes());
        let app = concat!("procflow-snap ", env!("CARGO_PKG_VERSION"));
        opt(&mut w.buf, 4, app.as_bytes());
        opt(&mut w.buf, 0, &[]);
        end(&mut w.buf, at);
        Ok(w)
    }

    /// Bytes in the file and in the buffer.
    pub fn size(&self) -> u64 {
        self.committed + self.buf.len() as u64
    }

    /// Whether the buffer is due to be written.
    pub fn buffer_full(&self) -> bool {
        self.buf.len() >= BUF_BYTES
    }

    /// An interface description block: link type, snap length, name,
    /// nanosecond timestamps.
    pub fn interface(&mut self, link: u16, snaplen: u32, name: &str) {
        let b = &mut self.buf;
        let at = begin(b, IDB);
        b.extend_from_slice(&link.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&snaplen.to_le_bytes());
        opt(b, 2, name.as_bytes());
        opt(b, 9, &[9]);
        opt(b, 0, &[]);
        end(b, at);
    }

    /// An enhanced packet block. `head` is written before `data` (a cooked
    /// header or a re-inserted VLAN tag), both counted in the captured
    /// length; `orig_len` is the length on the wire.
    pub fn packet(&mut self, iface: u32, ts_ns: i64, parts: &[&[u8]], orig_len: u32, flags: u32) {
        let b = &mut self.buf;
        let at = begin(b, EPB);
        let cap: usize = parts.iter().map(|p| p.len()).sum();
        b.extend_from_slice(&iface.to_le_bytes());
        b.extend_from_slice(&ts_words(ts_ns));
        b.extend_from_slice(&(cap as u32).to_le_bytes());
        b.extend_from_slice(&orig_len.max(cap as u32).to_le_bytes());
        for p in parts {
            b.extend_from_slice(p);
        }
        b.extend(std::iter::repeat_n(0u8, pad4(cap)));
        opt(b, 2, &flags.to_le_bytes());
        opt(b, 0, &[]);
        end(b, at);
        self.packets_in_buf += 1;
    }

    /// An interface statistics block.
    pub fn statistics(&mut self, iface: u32, s: &Stats) {
        let b = &mut self.buf;
        let at = begin(b, ISB);
        b.extend_from_slice(&iface.to_le_bytes());
        b.extend_from_slice(&ts_words(s.end_ns));
        opt(b, 2, &ts_words(s.start_ns));
        opt(b, 3, &ts_words(s.end_ns));
        if let Some((recv, drop, deliv)) = s.counts {
            opt(b, 4, &recv.to_le_bytes());
            opt(b, 5, &drop.to_le_bytes());
            opt(b, 8, &deliv.to_le_bytes());
        }
        opt(b, 0, &[]);
        end(b, at);
    }

    /// Writes the buffer to the file. On failure the file is cut back to
    /// its last complete block (when the file system allows it) and the
    /// packets that are not in the file are counted; the buffer is emptied
    /// either way.
    pub fn flush(&mut self) -> Result<(), WriteFailure> {
        let mut done = 0usize;
        let result = loop {
            if done == self.buf.len() {
                break Ok(());
            }
            match self.file.write(&self.buf[done..]) {
                Ok(0) => break Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        match result {
            Ok(()) => {
                self.committed += self.buf.len() as u64;
                self.packets += self.packets_in_buf;
                self.buf.clear();
                self.packets_in_buf = 0;
                Ok(())
            }
            Err(error) => {
                // Whole blocks within what reached the file.
                let (mut at, mut whole, mut pkts) = (0usize, 0usize, 0u64);
                while at + 8 <= self.buf.len() {
                    let kind =
                        u32::from_le_bytes(self.buf[at..at + 4].try_into().unwrap_or([0; 4]));
                    let len =
                        u32::from_le_bytes(self.buf[at + 4..at + 8].try_into().unwrap_or([0; 4]))
                            as usize;
                    if len < 12 || at + len > done {
                        break;
                    }
                    at += len;
                    whole = at;
                    if kind == EPB {
                        pkts += 1;
                    }
                }
                let keep = self.committed + whole as u64;
                if whole < done {
                    // A cut block left behind would still be detected by
                    // readers; cutting it off keeps the file whole.
                    let _ = self.file.set_len(keep);
                }
                self.committed = keep;
                self.packets += pkts;
                let lost = self.packets_in_buf - pkts;
                self.buf.clear();
                self.packets_in_buf = 0;
                Err(WriteFailure {
                    error,
                    packets_lost: lost,
                })
            }
        }
    }

    /// Drops what is buffered (after a failure nothing more is written);
    /// returns the packets dropped.
    pub fn discard(&mut self) -> u64 {
        let n = self.packets_in_buf;
        self.buf.clear();
        self.packets_in_buf = 0;
        n
    }

    /// Flushes and syncs the file to disk.
    pub fn finish(&mut self) -> Result<(), WriteFailure> {
        self.flush()?;
        self.file.sync_all().map_err(|error| WriteFailure {
            error,
            packets_lost: 0,
        })
    }
}

/// Bytes buffered before a write.
pub const BUF_BYTES: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_whole_and_lengths_agree() {
        let d = std::env::temp_dir().join(format!("procflow-pcapng-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("a.pcapng");
        let mut w = Writer::create(&p).unwrap();
        w.interface(LINK_ETHERNET, 262144, "eth0");
        w.packet(
            0,
            1_700_000_000_123_456_789,
            &[&[1, 2, 3], &[4, 5]],
            60,
            FLAG_OUTBOUND,
        );
        w.statistics(
            0,
            &Stats {
                start_ns: 1,
                end_ns: 2,
                counts: Some((3, 4, 5)),
            },
        );
        w.finish().unwrap();
        assert_eq!(w.packets, 1);
        let b = std::fs::read(&p).unwrap();
        let mut at = 0;
        let mut kinds = Vec::new();
        while at < b.len() {
            let kind = u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
            let len = u32::from_le_bytes(b[at + 4..at + 8].try_into().unwrap()) as usize;
            assert_eq!(len % 4, 0);
            let tail = u32::from_le_bytes(b[at + len - 4..at + len].try_into().unwrap()) as usize;
            assert_eq!(len, tail);
            kinds.push(kind);
            at += len;
        }
        assert_eq!(kinds, vec![SHB, IDB, EPB, ISB]);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A write that fails (`/dev/full` answers every write with ENOSPC)
    /// counts every buffered packet as lost and reports the error.
    #[test]
    fn a_failed_write_counts_the_packets_lost() {
        let Ok(file) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
            eprintln!("SKIPPED: no /dev/full");
            return;
        };
        let mut w = Writer {
            file,
            path: PathBuf::from("/dev/full"),
            buf: Vec::new(),
            committed: 0,
            packets: 0,
            packets_in_buf: 0,
        };
        w.interface(LINK_ETHERNET, 65535, "lo");
        for i in 0..3 {
            w.packet(0, i, &[&[0u8; 60]], 60, FLAG_INBOUND);
        }
        let f = w.flush().unwrap_err();
        assert_eq!(f.packets_lost, 3);
        assert_eq!(f.error.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!((w.packets, w.committed, w.size()), (0, 0, 0));
        // The next packets go to a fresh buffer: counted once each.
        w.packet(0, 9, &[&[0u8; 60]], 60, FLAG_OUTBOUND);
        assert_eq!(w.discard(), 1);
    }
}
