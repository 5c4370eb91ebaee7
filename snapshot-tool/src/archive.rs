//! Appending snapshots to a tar archive so that a cut at any byte leaves
//! every earlier snapshot readable.
//!
//! A snapshot's members are assembled in memory and written with one
//! `write_all` when the snapshot is committed, so a SIGKILL or a full disk
//! can only cut the snapshot being written. The tar trailer (two zero
//! blocks) is written only by [`ArchiveWriter::finish`]: readers treat EOF at
//! a header boundary as the end of the archive.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// A `Write` that buffers in memory until [`SnapshotBuffer::commit`].
pub struct SnapshotBuffer {
    file: File,
    pending: Vec<u8>,
    committed: u64,
}

impl Write for SnapshotBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SnapshotBuffer {
    /// Writes the pending bytes to the file. On error the pending bytes are
    /// dropped (part of them may be on disk: the snapshot is then cut, which
    /// readers detect because its `meta.json` is missing or short).
    pub fn commit(&mut self) -> io::Result<()> {
        let r = self.file.write_all(&self.pending);
        if r.is_ok() {
            self.committed += self.pending.len() as u64;
        }
        self.pending.clear();
        r
    }
}

/// One snapshot archive being written.
pub struct ArchiveWriter {
    builder: tar::Builder<SnapshotBuffer>,
    name: String,
    finished: bool,
}

impl ArchiveWriter {
    /// Creates `dir/name`; fails if it exists.
    pub fn create(dir: &Path, name: &str) -> io::Result<ArchiveWriter> {
        let path = dir.join(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let builder = tar::Builder::new(SnapshotBuffer {
            file,
            pending: Vec::with_capacity(64 * 1024),
            committed: 0,
        });
        Ok(ArchiveWriter {
            builder,
            name: name.to_string(),
            finished: false,
        })
    }

    /// The archive's file name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes committed to the file so far.
    pub fn committed_bytes(&self) -> u64 {
        self.builder.get_ref().committed
    }

    /// Adds a member (mode 0644, the given mtime) to the pending snapshot.
    pub fn append(&mut self, member: &str, data: &[u8], mtime: u64) -> io::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime);
        h.set_size(data.len() as u64);
        self.builder.append_data(&mut h, member, data)
    }

    /// Writes the pending snapshot to the file.
    pub fn commit(&mut self) -> io::Result<()> {
        self.builder.get_mut().commit()
    }

    /// fdatasync: what is committed survives a power cut.
    pub fn sync(&mut self) -> io::Result<()> {
        self.builder.get_ref().file.sync_data()
    }

    /// Writes the tar trailer, commits and syncs. After a disk-full error do
    /// not call this: the archive stays valid without its trailer.
    pub fn finish(mut self) -> io::Result<()> {
        self.builder.finish()?;
        self.finished = true;
        self.commit()?;
        self.sync()
    }

    /// Drops the writer without writing a trailer (disk full, or a forced
    /// exit). Pending bytes are discarded.
    pub fn abandon(mut self) {
        // tar::Builder writes its trailer on drop; here it lands in the
        // in-memory buffer, which is discarded with it, never on disk.
        self.builder.get_mut().pending.clear();
        self.finished = true;
    }
}

impl Drop for ArchiveWriter {
    fn drop(&mut self) {
        if !self.finished {
            // Nothing pending reaches the disk from here: the builder's own
            // drop only appends its trailer to the memory buffer.
            self.builder.get_mut().pending.clear();
        }
    }
}
