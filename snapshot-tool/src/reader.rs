//! Reading snapshot archives back, including archives cut by SIGKILL or a
//! full disk, and replaying them into the socket and fd state at each tick.
//! The recorder's tests use it; it is also a reference reader of the format.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use crate::delta::{apply_delta, apply_fds, ApplyProblem, FdState, TableState};
use crate::layout::{parse_member, Member, ProcessRecord, SnapshotKind, SnapshotMeta, TableStored};

/// One complete snapshot: its meta and its other members' bytes.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The snapshot's `meta.json`.
    pub meta: SnapshotMeta,
    /// `(name, parsed name, bytes)` of every member before `meta.json`.
    pub members: Vec<(String, Member, Vec<u8>)>,
}

/// How an archive ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveEnd {
    /// The tar trailer was present: the recorder closed it.
    Trailer,
    /// EOF at a member boundary without trailer (recorder killed between
    /// snapshots, or still writing).
    CleanCut,
    /// EOF or garbage inside a member: the last snapshot is incomplete.
    Cut {
        /// Byte offset of the header of the member that is cut.
        offset: u64,
        /// What was wrong.
        what: String,
    },
}

/// Everything read from one archive.
#[derive(Debug, Clone)]
pub struct ArchiveRead {
    /// Complete snapshots in archive order.
    pub snapshots: Vec<Snapshot>,
    /// Members of a snapshot whose `meta.json` never came (cut snapshot);
    /// they are not applied.
    pub incomplete: Vec<String>,
    /// How the archive ended.
    pub end: ArchiveEnd,
    /// Members whose names this format does not define (ignored).
    pub unknown_members: Vec<String>,
}

/// Reads an archive file.
pub fn read_archive(path: &Path) -> std::io::Result<ArchiveRead> {
    let f = std::fs::File::open(path)?;
    read_archive_from(std::io::BufReader::new(f))
}

/// Reads an archive from any reader. Fails only on a read error of the
/// underlying reader before any member; cut or bad data is reported in the
/// result, never misread.
pub fn read_archive_from<R: Read>(r: R) -> std::io::Result<ArchiveRead> {
    let mut ar = tar::Archive::new(r);
    let mut out = ArchiveRead {
        snapshots: Vec::new(),
        incomplete: Vec::new(),
        end: ArchiveEnd::CleanCut,
        unknown_members: Vec::new(),
    };
    let mut pending: Vec<(String, Member, Vec<u8>)> = Vec::new();
    let mut pending_seq: Option<u64> = None;
    let entries = ar.entries()?;
    let mut last_end = 0u64;
    for entry in entries {
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) => {
                out.end = ArchiveEnd::Cut {
                    offset: last_end,
                    what: format!("unreadable member header: {e}"),
                };
                break;
            }
        };
        let offset = entry.raw_header_position();
        let name = match entry.path() {
            Ok(p) => p.to_string_lossy().into_owned(),
            Err(e) => {
                out.end = ArchiveEnd::Cut {
                    offset,
                    what: format!("bad member name: {e}"),
                };
                break;
            }
        };
        let size = entry.size();
        let mut data = Vec::with_capacity(usize::try_from(size.min(1 << 26)).unwrap_or(0));
        if let Err(e) = entry.read_to_end(&mut data) {
            out.end = ArchiveEnd::Cut {
                offset,
                what: format!("{name}: {e}"),
            };
            break;
        }
        if data.len() as u64 != size {
            out.end = ArchiveEnd::Cut {
                offset,
                what: format!("{name}: {} of {size} bytes present", data.len()),
            };
            break;
        }
        last_end = entry.raw_file_position() + size.div_ceil(512) * 512;
        let Some(member) = parse_member(&name) else {
            out.unknown_members.push(name);
            continue;
        };
        let seq = match &member {
            Member::Net { seq, .. }
            | Member::Fds { seq }
            | Member::Procs { seq }
            | Member::Meta { seq } => *seq,
        };
        if pending_seq.is_some_and(|p| p != seq) {
            // A snapshot without meta followed by another: keep it out.
            out.incomplete.extend(pending.drain(..).map(|m| m.0));
        }
        pending_seq = Some(seq);
        if let Member::Meta { .. } = member {
            match serde_json::from_slice::<SnapshotMeta>(&data) {
                Ok(meta) if meta.seq == seq => {
                    out.snapshots.push(Snapshot {
                        meta,
                        members: std::mem::take(&mut pending),
                    });
                    pending_seq = None;
                }
                Ok(meta) => {
                    out.incomplete.extend(pending.drain(..).map(|m| m.0));
                    out.incomplete
                        .push(format!("{name} (says seq {}, expected {seq})", meta.seq));
                    pending_seq = None;
                }
                Err(e) => {
                    out.incomplete.extend(pending.drain(..).map(|m| m.0));
                    out.incomplete.push(format!("{name} (invalid JSON: {e})"));
                    pending_seq = None;
                }
            }
        } else {
            pending.push((name, member, data));
        }
    }
    if matches!(out.end, ArchiveEnd::CleanCut) && trailer_present(ar.into_inner()) {
        out.end = ArchiveEnd::Trailer;
    }
    out.incomplete.extend(pending.into_iter().map(|m| m.0));
    Ok(out)
}

/// After `entries()` returned `None`, whether a zero block was what ended
/// it (the tar crate stops at a zero header or at EOF alike).
fn trailer_present<R: Read>(r: R) -> bool {
    // The crate consumed the first zero block if there was one; whatever
    // follows is the rest of the trailer. At a clean EOF nothing is left.
    let mut rest = Vec::new();
    let _ = r.take(1 << 20).read_to_end(&mut rest);
    !rest.is_empty() && rest.iter().all(|&b| b == 0)
}

/// The reconstructed state after applying snapshots in order.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    /// Table state per (netns inode, table name).
    pub tables: BTreeMap<(u64, String), TableState>,
    /// Which pid holds which socket inodes.
    pub fds: FdState,
    /// Every process record seen so far.
    pub procs: Vec<ProcessRecord>,
    /// Problems met while applying (member name + problem).
    pub problems: Vec<(String, ApplyProblem)>,
}

impl Replay {
    /// Applies one snapshot on top of the current state.
    pub fn apply(&mut self, s: &Snapshot) {
        let keyframe = s.meta.kind == SnapshotKind::Keyframe;
        let mut next: BTreeMap<(u64, String), TableState> = BTreeMap::new();
        for ns in &s.meta.netns {
            for t in &ns.tables {
                let key = (ns.inode, t.table.clone());
                let full = t.stored == TableStored::Full;
                let member = s.members.iter().find(|(_, m, _)| {
                    matches!(m, Member::Net { netns, table, full: f, .. }
                        if *netns == ns.inode && *table == t.table && *f == full)
                });
                let text = member.map(|m| String::from_utf8_lossy(&m.2).into_owned());
                let name = format!("snap/{:08}/net/{}/{}", s.meta.seq, ns.inode, t.table);
                match t.stored {
                    TableStored::Full => match text {
                        Some(text) => {
                            next.insert(key, TableState::from_full_text(&text));
                        }
                        None => self.problem(&name, "table marked full but member absent"),
                    },
                    TableStored::Delta if !keyframe => {
                        let (Some(text), Some(mut st)) = (text, self.tables.remove(&key)) else {
                            self.problem(&name, "delta without member or previous state");
                            continue;
                        };
                        for p in apply_delta(&mut st, &text) {
                            self.problems.push((format!("{name}.delta"), p));
                        }
                        next.insert(key, st);
                    }
                    TableStored::Unchanged if !keyframe => match self.tables.remove(&key) {
                        Some(st) => {
                            next.insert(key, st);
                        }
                        None => self.problem(&name, "unchanged without previous state"),
                    },
                    TableStored::Missing => {}
                    _ => self.problem(&name, "delta or unchanged table in a keyframe"),
                }
            }
        }
        self.tables = next;
        let fds = s
            .members
            .iter()
            .find(|(_, m, _)| matches!(m, Member::Fds { .. }));
        match fds {
            Some((name, _, data)) => {
                let text = String::from_utf8_lossy(data);
                for p in apply_fds(&mut self.fds, &text, keyframe) {
                    self.problems.push((name.clone(), p));
                }
            }
            None if keyframe => self.fds.clear(),
            None => {}
        }
        if let Some((name, _, data)) = s
            .members
            .iter()
            .find(|(_, m, _)| matches!(m, Member::Procs { .. }))
        {
            for (i, line) in String::from_utf8_lossy(data).lines().enumerate() {
                match serde_json::from_str::<ProcessRecord>(line) {
                    Ok(p) => self.procs.push(p),
                    Err(e) => self.problems.push((
                        name.clone(),
                        ApplyProblem {
                            line: i + 1,
                            what: format!("invalid process record: {e}"),
                        },
                    )),
                }
            }
        }
    }

    fn problem(&mut self, member: &str, what: &str) {
        self.problems.push((
            member.to_string(),
            ApplyProblem {
                line: 0,
                what: what.to_string(),
            },
        ));
    }

    /// All socket inodes currently held by `pid`.
    pub fn inodes_of(&self, pid: u32) -> Vec<u64> {
        match self.fds.get(&pid).map(|e| &e.status) {
            Some(crate::delta::FdStatus::Holds(v)) => v.clone(),
            _ => Vec::new(),
        }
    }
}
