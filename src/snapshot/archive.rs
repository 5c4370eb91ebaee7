//! Reading a bundle: the manifest, then every snapshot archive in order,
//! snapshot by snapshot.
//!
//! The tar archives are read by the format's own reader
//! (`procflow_format::reader`): a snapshot is applied only once its
//! `meta.json` (always its last member) has been read whole. An archive that
//! ends inside a snapshot (recorder killed, disk full) is therefore read up
//! to its last complete snapshot and reported here as cut, with the archive
//! name and the byte offset where the incomplete part starts.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use procflow_format::layout::{
    parse_archive_name, Manifest, CAPTURE_PREFIX, FORMAT_NAME, FORMAT_VERSION, MANIFEST_FILE,
};
use procflow_format::reader::{read_snapshots, ArchiveEnd, ArchiveEvent, WhyIncomplete};

use super::procnet::ByteOrder;
use super::timeline::TimelineBuilder;
use super::{CutArchive, SnapshotDiagnostics};

/// A bundle that cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A file could not be opened or read.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The path given is missing or is a file, not a bundle directory.
    #[error("{}: {detail}", path.display())]
    NotABundle {
        /// The path as given.
        path: PathBuf,
        /// What it is and what to do instead.
        detail: String,
    },
    /// The manifest is not valid JSON of the expected shape.
    #[error("{}: not a procflow bundle manifest: {detail}", path.display())]
    Manifest {
        /// The manifest path.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The manifest is of a format version this build cannot read.
    #[error(
        "{}: bundle format_version {found} is not supported; this procflow reads \
         format_version {FORMAT_VERSION} (use the procflow release that matches \
         the recorder)",
        path.display()
    )]
    UnsupportedVersion {
        /// The manifest path.
        path: PathBuf,
        /// The version found.
        found: u32,
    },
}

/// An opened bundle directory.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The bundle directory.
    pub dir: PathBuf,
    /// Path of its manifest.
    pub manifest_path: PathBuf,
    /// The parsed manifest.
    pub manifest: Manifest,
    /// Byte order for the /proc text.
    pub byte_order: ByteOrder,
    /// Snapshot archives in order (manifest list and directory listing).
    pub archives: Vec<PathBuf>,
    /// Capture files found in the bundle (`capture-*`, `*.pcap`, `*.pcapng`),
    /// sorted by name.
    pub captures: Vec<PathBuf>,
}

impl Bundle {
    /// Opens a bundle: reads and checks the manifest, lists archives and
    /// captures.
    pub fn open(dir: &Path) -> Result<Bundle, BundleError> {
        let manifest_path = dir.join(MANIFEST_FILE);
        match std::fs::metadata(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BundleError::NotABundle {
                    path: dir.to_path_buf(),
                    detail: "no such file or directory; give the bundle directory \
                             `procflow-snap record --out` (or `once --out`) wrote"
                        .into(),
                });
            }
            Ok(m) if m.is_file() => {
                return Err(BundleError::NotABundle {
                    path: dir.to_path_buf(),
                    detail: "is a file, not a bundle directory; for a capture alone use \
                             `procflow flows FILE`, or give it with `--pcap FILE` next to \
                             the bundle it was recorded with"
                        .into(),
                });
            }
            _ => {}
        }
        let text = crate::hostile::read_small_file(&manifest_path, crate::hostile::SMALL_FILE_CAP)
            .and_then(|b| {
                String::from_utf8(b).map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
                })
            })
            .map_err(|source| {
                if source.kind() == std::io::ErrorKind::NotFound && dir.is_dir() {
                    // The usual mistake: a capture folder or a report folder
                    // given where a bundle was meant.
                    BundleError::Manifest {
                        path: manifest_path.clone(),
                        detail: format!(
                            "{} has no {MANIFEST_FILE}; give the directory `procflow-snap record \
                         --out` wrote (captures alone go through `procflow flows`)",
                            dir.display()
                        ),
                    }
                } else {
                    BundleError::Io {
                        path: manifest_path.clone(),
                        source,
                    }
                }
            })?;
        // Look at format and version first so an unknown version is named as
        // such rather than as a field mismatch.
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| BundleError::Manifest {
                path: manifest_path.clone(),
                detail: e.to_string(),
            })?;
        if value.get("format").and_then(|v| v.as_str()) != Some(FORMAT_NAME) {
            return Err(BundleError::Manifest {
                path: manifest_path,
                detail: format!("`format` is not \"{FORMAT_NAME}\""),
            });
        }
        match value.get("format_version").and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(FORMAT_VERSION) => {}
            Some(v) => {
                return Err(BundleError::UnsupportedVersion {
                    path: manifest_path,
                    found: u32::try_from(v).unwrap_or(u32::MAX),
                })
            }
            None => {
                return Err(BundleError::Manifest {
                    path: manifest_path,
                    detail: "`format_version` is missing or not a number".into(),
                })
            }
        }
        // The byte order is named by itself, as the one field a reader
        // cannot guess.
        let order = value.get("host").and_then(|h| h.get("byte_order"));
        if let Some(o) = order.filter(|o| o.as_str().and_then(ByteOrder::from_manifest).is_none()) {
            return Err(BundleError::Manifest {
                path: manifest_path,
                detail: format!("host.byte_order is {o}, expected \"little\" or \"big\""),
            });
        }
        let manifest: Manifest =
            serde_json::from_value(value).map_err(|e| BundleError::Manifest {
                path: manifest_path.clone(),
                detail: e.to_string(),
            })?;
        let byte_order = manifest.host.byte_order;
        let listing = std::fs::read_dir(dir).map_err(|source| BundleError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        // (lossy text to classify, the name itself to open: a name that is
        // not UTF-8 is still the file's).
        let mut names: Vec<(String, std::ffi::OsString)> = Vec::new();
        for e in listing {
            let e = e.map_err(|source| BundleError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
            if e.file_type().map(|t| t.is_file()).unwrap_or(false) {
                let raw = e.file_name();
                names.push((raw.to_string_lossy().into_owned(), raw));
            }
        }
        names.sort();
        // The manifest lists archives only once recording stopped; a killed
        // recorder leaves them in the directory only. Use both.
        let mut numbered: Vec<(u32, String)> = names
            .iter()
            .map(|(n, _)| n)
            .chain(manifest.archives.iter())
            .filter_map(|n| parse_archive_name(n).map(|k| (k, n.clone())))
            .collect();
        numbered.sort();
        numbered.dedup();
        let archives = numbered.into_iter().map(|(_, n)| dir.join(n)).collect();
        let captures = names
            .iter()
            .filter(|(n, _)| {
                n.starts_with(CAPTURE_PREFIX) || n.ends_with(".pcap") || n.ends_with(".pcapng")
            })
            .map(|(_, raw)| dir.join(raw))
            .collect();
        Ok(Bundle {
            dir: dir.to_path_buf(),
            manifest_path,
            manifest,
            byte_order,
            archives,
            captures,
        })
    }

    /// Reads every archive into `builder`, in order. An archive listed in
    /// the manifest but absent is a warning; an archive that cannot be
    /// opened is an error.
    pub fn read_snapshots(
        &self,
        builder: &mut TimelineBuilder,
        diag: &mut SnapshotDiagnostics,
    ) -> Result<(), BundleError> {
        for path in &self.archives {
            if !path.exists() {
                diag.warn(format!(
                    "{}: listed in the manifest but absent; its snapshots are missing",
                    path.display()
                ));
                continue;
            }
            if !std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file()) {
                diag.warn(format!(
                    "{}: not a regular file (a link, FIFO or device); not read",
                    path.display()
                ));
                continue;
            }
            let file = File::open(path).map_err(|source| BundleError::Io {
                path: path.clone(),
                source,
            })?;
            let size = file.metadata().map(|m| m.len()).unwrap_or(0);
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            read_archive(BufReader::new(file), &name, size, builder, diag).map_err(|source| {
                BundleError::Io {
                    path: path.clone(),
                    source,
                }
            })?;
        }
        Ok(())
    }
}

/// Reads one tar archive from `reader` through the format's reader
/// ([`procflow_format::reader::read_snapshots`]), applying each complete
/// snapshot to `builder` as soon as it is read. Returns an error only when
/// the reader fails before anything could be read as tar; a cut or corrupt
/// tail is recorded in `diag` (with `size`, the archive's size) and ends the
/// archive.
pub fn read_archive<R: Read>(
    reader: R,
    name: &str,
    size: u64,
    builder: &mut TimelineBuilder,
    diag: &mut SnapshotDiagnostics,
) -> std::io::Result<()> {
    let summary = read_snapshots(reader, |event| match event {
        ArchiveEvent::Snapshot(s) => builder.apply(name, &s, diag),
        ArchiveEvent::UnknownMember { name: member, .. } => diag.warn(format!(
            "{name}: member {member} is not part of the bundle format; ignored"
        )),
        ArchiveEvent::BadMember {
            name: member,
            offset,
            what,
        } => diag.warn(format!(
            "{name}: member {member} at byte offset {offset}: {what}"
        )),
        ArchiveEvent::Damaged {
            offset,
            resumed_at,
            what,
        } => diag.warn(format!(
            "{name}: damaged at byte offset {offset} ({what}); bytes up to {resumed_at} \
             skipped with the snapshots they touch, reading resumed at the next valid member"
        )),
        ArchiveEvent::Incomplete(i) => match i.why {
            WhyIncomplete::NextSnapshotBegan { next_seq } => {
                let text = format!(
                    "{name}: snapshot {} at byte offset {} has no meta.json before \
                     snapshot {next_seq} starts; skipped",
                    i.seq, i.offset
                );
                diag.skipped(|| text.clone());
                diag.warn(text);
            }
            WhyIncomplete::MetaSeqMismatch { member, says } => {
                let text = format!("{name}: {member} says seq {says}; snapshot skipped");
                diag.skipped(|| text.clone());
                diag.warn(text);
            }
            WhyIncomplete::MetaInvalid {
                member,
                line,
                error,
            } => {
                diag.bad_line(name, &member, line, format!("meta.json: {error}"));
                let text = format!(
                    "{name}: {member} is not a valid snapshot meta ({error}); \
                     snapshot {} skipped",
                    i.seq
                );
                diag.skipped(|| text.clone());
                diag.warn(text);
            }
            // Reported once, as the archive's cut or damage.
            WhyIncomplete::ArchiveEnds | WhyIncomplete::Damaged { .. } => {}
        },
    })?;
    diag.flush_out_of_order();
    for d in &summary.damaged {
        diag.damaged_archives.push(CutArchive {
            archive: name.to_string(),
            offset: d.offset,
            size,
            last_complete_seq: summary.last_complete_seq,
            reason: format!("{}; reading resumed at byte {}", d.what, d.resumed_at),
        });
    }
    match summary.end {
        ArchiveEnd::Cut { offset, what } => diag.cut_archives.push(CutArchive {
            archive: name.to_string(),
            offset,
            size,
            last_complete_seq: summary.last_complete_seq,
            reason: what,
        }),
        ArchiveEnd::CleanCut => diag.unclosed_archives.push(name.to_string()),
        ArchiveEnd::Trailer => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::timeline::tests::{row4, table, Snap};
    use procflow_format::layout::{SnapshotKind, TableStored};

    /// A tar of three snapshots, as the recorder writes them.
    fn archive() -> (Vec<u8>, Vec<u64>) {
        let ns = 4026531840;
        let r = row4("10.0.0.1:40000", "10.0.0.2:80", 1, 100);
        let snaps = [
            Snap::new(1, 0, SnapshotKind::Keyframe)
                .table(
                    ns,
                    "tcp",
                    TableStored::Full,
                    table(std::slice::from_ref(&r)),
                )
                .fds(&["10 500 4026531840 100"]),
            Snap::new(2, 1000, SnapshotKind::Delta).table(
                ns,
                "tcp",
                TableStored::Unchanged,
                String::new(),
            ),
            Snap::new(3, 2000, SnapshotKind::Delta).table(
                ns,
                "tcp",
                TableStored::Delta,
                format!("-{}\n", row_identity_of(&r)),
            ),
        ];
        let mut b = tar::Builder::new(Vec::new());
        // Offset just past each snapshot's meta.json data (its padding to
        // 512 bytes is not needed to read it).
        let mut ends = Vec::new();
        for s in &snaps {
            let mut members = s.members();
            members.push((
                procflow_format::layout::meta_member(s.seq),
                serde_json::to_string(&s.meta()).unwrap(),
            ));
            let mut pad = 0;
            for (name, text) in members {
                let mut h = tar::Header::new_gnu();
                h.set_size(text.len() as u64);
                h.set_mode(0o644);
                h.set_cksum();
                b.append_data(&mut h, name, text.as_bytes()).unwrap();
                pad = (512 - text.len() as u64 % 512) % 512;
            }
            ends.push(b.get_ref().len() as u64 - pad);
        }
        (b.into_inner().unwrap(), ends)
    }

    fn row_identity_of(r: &str) -> String {
        procflow_format::layout::row_identity(r).unwrap()
    }

    fn read(bytes: &[u8]) -> (Option<u64>, SnapshotDiagnostics) {
        let mut b = TimelineBuilder::new(ByteOrder::Little);
        let mut d = SnapshotDiagnostics::default();
        read_archive(
            bytes,
            "snapshots-000001.tar",
            bytes.len() as u64,
            &mut b,
            &mut d,
        )
        .unwrap();
        (b.last_seq(), d)
    }

    #[test]
    fn whole_archive_reads_clean() {
        let (bytes, _) = archive();
        let (last, d) = read(&bytes);
        assert_eq!(last, Some(3));
        assert!(d.cut_archives.is_empty() && d.warnings.is_empty(), "{d:?}");
    }

    /// Cut at every byte: never a panic, always the snapshots complete
    /// before the cut, and a cut reported unless the cut falls exactly
    /// between two snapshots.
    #[test]
    fn cut_at_every_offset() {
        let (bytes, ends) = archive();
        for len in 0..bytes.len() {
            let (last, d) = read(&bytes[..len]);
            let complete = ends.iter().filter(|&&e| e <= len as u64).count() as u64;
            assert_eq!(last.unwrap_or(0), complete, "cut at {len}");
            // Right after a snapshot's padding nothing is cut; neither is
            // anything in the end-of-archive zero blocks.
            let last_padded = ends.last().map_or(0, |e| e.div_ceil(512) * 512);
            let at_boundary = len == 0
                || len as u64 >= last_padded
                || ends.iter().any(|&e| e.div_ceil(512) * 512 == len as u64);
            if !at_boundary {
                let c = d.cut_archives.first().unwrap_or_else(|| {
                    panic!(
                        "cut at {len} not reported; ends {ends:?}, size {}",
                        bytes.len()
                    )
                });
                assert!(c.offset <= len as u64, "cut at {len}: offset {}", c.offset);
                assert_eq!(c.last_complete_seq, last);
            }
        }
    }

    /// Corrupt bytes anywhere: never a panic.
    #[test]
    fn corrupt_bytes_never_panic() {
        let (bytes, _) = archive();
        for i in (0..bytes.len()).step_by(7) {
            let mut b = bytes.clone();
            b[i] ^= 0xA5;
            let _ = read(&b);
        }
    }
}
