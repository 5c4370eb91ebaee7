//! The bundle format's one reader: snapshot archives read back member by
//! member (also archives cut by SIGKILL or a full disk), and snapshots
//! applied in order to rebuild the socket tables and fd listing at each
//! tick. The recorder's tests and the analyzer both read through it.
//!
//! Two layers, both pure code over [`Read`] and the [`crate::layout`] types:
//! - [`read_snapshots`] streams the complete snapshots of one archive to a
//!   callback, one at a time (only the snapshot being read is held), and
//!   says how and where the archive ended; [`read_archive`] collects them.
//! - [`State`] applies snapshots: a keyframe replaces everything, a delta
//!   changes tables by row identity and fd entries line by line. What a row
//!   is kept as is the caller's choice ([`RowKeeper`]); [`Replay`] keeps the
//!   raw text and collects everything.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::Path;

use crate::delta::{apply_delta, apply_fds, FdState, FdStatus, RawRows, RowKeeper, TableState};
use crate::layout::{
    fds_member, meta_member, net_member, parse_member, EventRecord, Member, ProcessRecord,
    SnapshotKind, SnapshotMeta, SockUseRecord, TableStored, TaskRecord,
};

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
    /// EOF or garbage inside a member, or the archive ends inside a
    /// snapshot: the last snapshot is incomplete.
    Cut {
        /// Byte offset where the incomplete part starts: the first member of
        /// the snapshot that is cut, or the member that could not be read.
        /// Never past the bytes the archive has.
        offset: u64,
        /// What was wrong.
        what: String,
    },
}

/// Why a snapshot's members were read but not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WhyIncomplete {
    /// The members of the next snapshot began before its `meta.json`.
    NextSnapshotBegan {
        /// Sequence number of that next snapshot.
        next_seq: u64,
    },
    /// Its `meta.json` says another sequence number than its name.
    MetaSeqMismatch {
        /// The `meta.json` member name.
        member: String,
        /// The `seq` inside it.
        says: u64,
    },
    /// Its `meta.json` is not a valid [`SnapshotMeta`].
    MetaInvalid {
        /// The `meta.json` member name.
        member: String,
        /// 1-based line of the JSON error.
        line: usize,
        /// The JSON error.
        error: String,
    },
    /// The archive ends (or is cut, see [`ArchiveEnd::Cut`]) before its
    /// `meta.json`.
    ArchiveEnds,
    /// A damaged tar header inside it (see [`ArchiveEvent::Damaged`]).
    Damaged {
        /// Byte offset of the damaged part.
        offset: u64,
        /// Byte offset where reading resumed.
        resumed_at: u64,
    },
}

/// A snapshot whose `meta.json` never came whole; none of it is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncompleteSnapshot {
    /// Sequence number from its member names.
    pub seq: u64,
    /// Byte offset of the header of its first member.
    pub offset: u64,
    /// Names of its members read whole, `meta.json` excluded.
    pub members: Vec<String>,
    /// Why it is incomplete.
    pub why: WhyIncomplete,
}

/// What [`read_snapshots`] meets, in archive order.
#[derive(Debug, Clone)]
pub enum ArchiveEvent {
    /// A complete snapshot.
    Snapshot(Snapshot),
    /// Members of a snapshot that is not complete.
    Incomplete(IncompleteSnapshot),
    /// A member whose name the format does not define; skipped.
    UnknownMember {
        /// Its name.
        name: String,
        /// Byte offset of its header.
        offset: u64,
    },
    /// A member that is not a regular file (link, directory, sparse file)
    /// or claims more than [`MAX_MEMBER_BYTES`]; skipped unread. Its
    /// snapshot then misses that member.
    BadMember {
        /// Its name.
        name: String,
        /// Byte offset of its header.
        offset: u64,
        /// What is wrong with it.
        what: String,
    },
    /// A damaged header: the bytes from `offset` to `resumed_at` were
    /// skipped and reading resumed at the next valid tar header.
    Damaged {
        /// Byte offset of the damaged part.
        offset: u64,
        /// Byte offset of the header reading resumed at.
        resumed_at: u64,
        /// What was wrong.
        what: String,
    },
}

/// A damaged part of an archive skipped by [`read_snapshots`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedSpan {
    /// Byte offset of the damaged part.
    pub offset: u64,
    /// Byte offset of the header reading resumed at.
    pub resumed_at: u64,
    /// What was wrong.
    pub what: String,
}

/// How one archive was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSummary {
    /// How it ended.
    pub end: ArchiveEnd,
    /// Number of complete snapshots passed on.
    pub snapshots: u64,
    /// Sequence number of the last of them.
    pub last_complete_seq: Option<u64>,
    /// Bytes consumed from the reader.
    pub bytes_read: u64,
    /// Damaged parts skipped (reading resumed after each).
    pub damaged: Vec<DamagedSpan>,
}

/// Counts what the tar reader consumes, so offsets can be checked against
/// the bytes that really exist.
struct Counting<R> {
    inner: R,
    n: u64,
}

/// A reader that yields `prefix` (from `pos`) before `inner`: the header
/// block found by resynchronisation, then the rest of the archive.
struct Prefixed<R> {
    prefix: Vec<u8>,
    pos: usize,
    inner: R,
}

impl<R: Read> Read for Prefixed<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let rest = self.prefix.get(self.pos..).unwrap_or(&[]);
        if rest.is_empty() {
            return self.inner.read(buf);
        }
        let k = rest.len().min(buf.len());
        buf[..k].copy_from_slice(&rest[..k]);
        self.pos += k;
        Ok(k)
    }
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n = self.n.saturating_add(k as u64);
        Ok(k)
    }
}

/// Members collected for the snapshot being read.
struct Pending {
    seq: u64,
    offset: u64,
    members: Vec<(String, Member, Vec<u8>)>,
}

impl Pending {
    fn incomplete(self, why: WhyIncomplete) -> ArchiveEvent {
        ArchiveEvent::Incomplete(IncompleteSnapshot {
            seq: self.seq,
            offset: self.offset,
            members: self.members.into_iter().map(|m| m.0).collect(),
            why,
        })
    }
}

fn member_seq(m: &Member) -> u64 {
    match m {
        Member::Net { seq, .. }
        | Member::Fds { seq }
        | Member::Procs { seq }
        | Member::Events { seq }
        | Member::SockUse { seq }
        | Member::Tasks { seq }
        | Member::ConntrackEvents { seq, .. }
        | Member::NsFiles { seq }
        | Member::NsFile { seq, .. }
        | Member::Meta { seq } => *seq,
    }
}

/// Largest member data [`read_snapshots`] reads into memory. A snapshot
/// member is raw /proc text (a table of 100 000 sockets is about 15 MB);
/// a member claiming more is refused with an event, its data skipped, so a
/// hostile header cannot make the reader allocate gigabytes.
pub const MAX_MEMBER_BYTES: u64 = 256 << 20;

/// How one run of the tar reader over (part of) an archive stopped.
enum SegmentEnd {
    /// Zero block or end of input at a member boundary.
    Clean,
    /// A header that is not a valid tar header, at this offset.
    BadHeader(u64, String),
    /// A member cut short or unreadable: the archive ends here.
    Cut(u64, String),
}

/// State of [`read_snapshots`] across the tar reader's runs.
struct Walk<'f, F: FnMut(ArchiveEvent)> {
    on: &'f mut F,
    snapshots: u64,
    last_complete_seq: Option<u64>,
    pending: Option<Pending>,
    /// Members of this sequence number are dropped (their snapshot was
    /// damaged).
    skip_seq: Option<u64>,
    /// Set after a damaged header: the snapshot of the next member read
    /// may have lost the damaged member, so it is dropped too.
    skip_next_seq: bool,
    /// Offset just past the last member read whole.
    good_end: u64,
}

impl<F: FnMut(ArchiveEvent)> Walk<'_, F> {
    /// Reads members of `ar` (whose first byte is at archive offset
    /// `base`) until it stops.
    fn segment<R: Read>(&mut self, ar: &mut tar::Archive<R>, base: u64) -> SegmentEnd {
        let entries = match ar.entries() {
            Ok(e) => e,
            Err(e) => return SegmentEnd::BadHeader(base, e.to_string()),
        };
        for entry in entries {
            let mut entry = match entry {
                Ok(e) => e,
                Err(e) => return SegmentEnd::BadHeader(self.good_end, e.to_string()),
            };
            let header_pos = base.saturating_add(entry.raw_header_position());
            let data_pos = base.saturating_add(entry.raw_file_position());
            let size = entry.size();
            let name = match entry.path() {
                Ok(p) => p.to_string_lossy().into_owned(),
                Err(e) => return SegmentEnd::Cut(header_pos, format!("bad member name: {e}")),
            };
            let end_of_data = data_pos.saturating_add(size.div_ceil(512).saturating_mul(512));
            let kind = entry.header().entry_type();
            if !(kind.is_file() || kind.is_contiguous()) {
                // Links, directories, sparse files, devices: the recorder
                // writes regular members only, and the data of these is not
                // what their header says.
                (self.on)(ArchiveEvent::BadMember {
                    name,
                    offset: header_pos,
                    what: format!(
                        "tar member of type {:?} (byte {:?}), not a regular file; skipped",
                        kind,
                        char::from(kind.as_byte())
                    ),
                });
                self.good_end = end_of_data;
                continue;
            }
            if size > MAX_MEMBER_BYTES {
                (self.on)(ArchiveEvent::BadMember {
                    name,
                    offset: header_pos,
                    what: format!(
                        "claims {size} bytes, more than any snapshot member may hold \
                         ({MAX_MEMBER_BYTES}); skipped"
                    ),
                });
                self.good_end = end_of_data;
                continue;
            }
            let mut data = Vec::with_capacity(usize::try_from(size.min(1 << 20)).unwrap_or(0));
            if let Err(e) = entry.read_to_end(&mut data) {
                return SegmentEnd::Cut(header_pos, format!("{name}: {e}"));
            }
            // The tar crate returns a short member at EOF without an error.
            if data.len() as u64 != size {
                return SegmentEnd::Cut(
                    header_pos,
                    format!("{name}: {} of {size} bytes present", data.len()),
                );
            }
            self.good_end = end_of_data;
            self.member(name, header_pos, data);
        }
        SegmentEnd::Clean
    }

    fn member(&mut self, name: String, header_pos: u64, data: Vec<u8>) {
        let Some(member) = parse_member(&name) else {
            (self.on)(ArchiveEvent::UnknownMember {
                name,
                offset: header_pos,
            });
            return;
        };
        let seq = member_seq(&member);
        if std::mem::take(&mut self.skip_next_seq) {
            // Its snapshot may have lost the damaged member.
            self.skip_seq = Some(seq);
        }
        if self.skip_seq == Some(seq) {
            return;
        }
        self.skip_seq = None;
        if let Some(p) = self.pending.take_if(|p| p.seq != seq) {
            (self.on)(p.incomplete(WhyIncomplete::NextSnapshotBegan { next_seq: seq }));
        }
        let p = self.pending.get_or_insert_with(|| Pending {
            seq,
            offset: header_pos,
            members: Vec::new(),
        });
        if !matches!(member, Member::Meta { .. }) {
            p.members.push((name, member, data));
            return;
        }
        let Some(p) = self.pending.take() else { return };
        match serde_json::from_slice::<SnapshotMeta>(&data) {
            Ok(meta) if meta.seq == seq => {
                self.snapshots += 1;
                self.last_complete_seq = Some(seq);
                (self.on)(ArchiveEvent::Snapshot(Snapshot {
                    meta,
                    members: p.members,
                }));
            }
            Ok(meta) => (self.on)(p.incomplete(WhyIncomplete::MetaSeqMismatch {
                member: name,
                says: meta.seq,
            })),
            Err(e) => (self.on)(p.incomplete(WhyIncomplete::MetaInvalid {
                member: name,
                line: e.line(),
                error: e.to_string(),
            })),
        }
    }
}

/// Whether a 512-byte block is a tar header: its checksum holds and it has
/// a name. Used to find the next member after a damaged header.
fn is_header_block(b: &[u8; 512]) -> bool {
    if b[0] == 0 {
        return false;
    }
    let field = &b[148..156];
    let digits: String = field
        .iter()
        .take_while(|&&c| c != 0 && c != b' ')
        .skip_while(|&&c| c == b' ')
        .map(|&c| char::from(c))
        .collect();
    let Ok(want) = u32::from_str_radix(digits.trim(), 8) else {
        return false;
    };
    let sum: u32 = b
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(c)
            }
        })
        .sum();
    sum == want
}

/// Reads whole blocks from `r` until one is a tar header; returns it and
/// how many bytes were consumed before it, or `None` at end of input.
fn find_header<R: Read>(r: &mut R) -> Option<([u8; 512], u64)> {
    let mut skipped = 0u64;
    let mut block = [0u8; 512];
    loop {
        let mut got = 0;
        while got < 512 {
            match r.read(&mut block[got..]) {
                Ok(0) => return None,
                Ok(k) => got += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        if is_header_block(&block) {
            return Some((block, skipped));
        }
        skipped += 512;
    }
}

/// Reads one archive, passing each complete snapshot to `on` as soon as its
/// `meta.json` has been read whole, so memory holds one snapshot at a time.
/// Fails only when the reader fails before anything could be read as tar;
/// a cut tail ends the archive and is described in the summary. A damaged
/// header in the middle does not: the snapshot it belongs to is dropped
/// ([`ArchiveEvent::Damaged`]) and reading resumes at the next valid tar
/// header, so later snapshots are kept. Members that are not regular files
/// or that claim more than [`MAX_MEMBER_BYTES`] are skipped with an
/// [`ArchiveEvent::BadMember`], never read into memory.
pub fn read_snapshots<R: Read>(
    reader: R,
    mut on: impl FnMut(ArchiveEvent),
) -> std::io::Result<ArchiveSummary> {
    let mut walk = Walk {
        on: &mut on,
        snapshots: 0,
        last_complete_seq: None,
        pending: None,
        skip_seq: None,
        skip_next_seq: false,
        good_end: 0,
    };
    let mut ar = tar::Archive::new(Counting {
        inner: reader,
        n: 0,
    });
    let mut base = 0u64;
    let mut cut: Option<(u64, String)> = None;
    let mut damaged = Vec::new();
    let end = walk.segment(&mut ar, base);
    let mut counting = ar.into_inner();
    match end {
        SegmentEnd::Clean => {}
        SegmentEnd::Cut(offset, what) => cut = Some((offset, what)),
        SegmentEnd::BadHeader(offset, what) => {
            let consumed = base.saturating_add(counting.n);
            if consumed < walk.good_end && walk.pending.is_none() {
                // End of file inside the padding after the last member's
                // data (the tar reader says it as a failed skip).
                cut = Some((
                    consumed,
                    "archive ends inside the padding of its last member; its data is complete"
                        .into(),
                ));
                return Ok(finish_at(walk, counting, cut, damaged));
            }
            // Every damaged header is skipped in turn: reading resumes at
            // the next valid header each time. Each round consumes at least
            // one block, so the file bounds their number.
            let mut src = Prefixed {
                prefix: Vec::new(),
                pos: 0,
                inner: &mut counting.inner,
            };
            let (mut offset, mut what, mut consumed) = (offset, what, consumed);
            loop {
                let Some((block, skipped)) = find_header(&mut src) else {
                    cut = Some((offset, format!("unreadable tar header: {what}")));
                    return Ok(finish(walk, consumed, cut, damaged, false));
                };
                let resume = consumed.saturating_add(skipped);
                damaged.push(DamagedSpan {
                    offset,
                    resumed_at: resume,
                    what: format!("unreadable tar header: {what}"),
                });
                walk.skip_next_seq = true;
                if let Some(p) = walk.pending.take() {
                    walk.skip_seq = Some(p.seq);
                    (walk.on)(p.incomplete(WhyIncomplete::Damaged {
                        offset,
                        resumed_at: resume,
                    }));
                }
                (walk.on)(ArchiveEvent::Damaged {
                    offset,
                    resumed_at: resume,
                    what: format!("unreadable tar header: {what}"),
                });
                walk.good_end = resume;
                base = resume;
                src.prefix = block.to_vec();
                src.pos = 0;
                // The rest is read through a fresh tar reader; what it
                // consumes is counted from `base`.
                let mut inner_ar = tar::Archive::new(Counting {
                    inner: &mut src,
                    n: 0,
                });
                let end = walk.segment(&mut inner_ar, base);
                consumed = base.saturating_add(inner_ar.into_inner().n);
                match end {
                    SegmentEnd::Clean => {
                        let trailer = trailer_present(&mut src);
                        return Ok(finish(walk, consumed, cut, damaged, trailer));
                    }
                    SegmentEnd::Cut(o, w) => {
                        cut = Some((o, w));
                        return Ok(finish(walk, consumed, cut, damaged, false));
                    }
                    SegmentEnd::BadHeader(o, w) => {
                        if consumed < walk.good_end && walk.pending.is_none() {
                            cut = Some((
                                consumed,
                                "archive ends inside the padding of its last member; its \
                                 data is complete"
                                    .into(),
                            ));
                            return Ok(finish(walk, consumed, cut, damaged, false));
                        }
                        offset = o;
                        what = w;
                    }
                }
            }
        }
    }

    Ok(finish_at(walk, counting, cut, damaged))
}

/// [`finish`] for a reader stopped by the first tar run: the trailer is
/// looked for only after a clean stop at a member boundary.
fn finish_at<R: Read, F: FnMut(ArchiveEvent)>(
    walk: Walk<'_, F>,
    mut counting: Counting<R>,
    cut: Option<(u64, String)>,
    damaged: Vec<DamagedSpan>,
) -> ArchiveSummary {
    let consumed = counting.n;
    let trailer = cut.is_none()
        && walk.pending.is_none()
        && consumed >= walk.good_end
        && trailer_present(&mut counting);
    finish(walk, consumed, cut, damaged, trailer)
}

fn finish<F: FnMut(ArchiveEvent)>(
    walk: Walk<'_, F>,
    consumed: u64,
    mut cut: Option<(u64, String)>,
    damaged: Vec<DamagedSpan>,
    trailer: bool,
) -> ArchiveSummary {
    let Walk {
        on,
        snapshots,
        last_complete_seq,
        pending,
        good_end,
        ..
    } = walk;
    if cut.is_none() {
        if let Some(p) = &pending {
            cut = Some((
                p.offset,
                format!(
                    "snapshot {} has no meta.json (archive ends inside it)",
                    p.seq
                ),
            ));
        } else if consumed < good_end {
            // The last member's data is whole but its padding to 512 bytes
            // is cut: nothing is lost, the file was still truncated.
            cut = Some((
                consumed,
                "archive ends inside the padding of its last member; its data is complete".into(),
            ));
        }
    }
    let end = match cut {
        Some((offset, what)) => ArchiveEnd::Cut {
            // The incomplete part starts where the cut snapshot did.
            offset: pending
                .as_ref()
                .map_or(offset, |p| p.offset.min(offset))
                .min(consumed),
            what,
        },
        None if trailer => ArchiveEnd::Trailer,
        None => ArchiveEnd::CleanCut,
    };
    if let Some(p) = pending {
        on(p.incomplete(WhyIncomplete::ArchiveEnds));
    }
    ArchiveSummary {
        end,
        snapshots,
        last_complete_seq,
        bytes_read: consumed,
        damaged,
    }
}

/// After the tar reader stopped cleanly, whether a zero block was what
/// ended it (the tar crate stops at a zero header or at EOF alike).
fn trailer_present<R: Read>(r: R) -> bool {
    // The crate consumed the first zero block if there was one; whatever
    // follows is the rest of the trailer. At a clean EOF nothing is left.
    let mut rest = Vec::new();
    let _ = r.take(1 << 20).read_to_end(&mut rest);
    !rest.is_empty() && rest.iter().all(|&b| b == 0)
}

/// Everything read from one archive.
#[derive(Debug, Clone)]
pub struct ArchiveRead {
    /// Complete snapshots in archive order.
    pub snapshots: Vec<Snapshot>,
    /// Snapshots whose `meta.json` never came whole; they are not applied.
    pub incomplete: Vec<IncompleteSnapshot>,
    /// How the archive ended.
    pub end: ArchiveEnd,
    /// Members whose names this format does not define (ignored).
    pub unknown_members: Vec<String>,
    /// Members skipped unread (not regular files, or too large): name and
    /// why.
    pub bad_members: Vec<(String, String)>,
    /// Damaged parts skipped.
    pub damaged: Vec<DamagedSpan>,
}

/// Reads an archive file whole (see [`read_snapshots`] to stream it).
pub fn read_archive(path: &Path) -> std::io::Result<ArchiveRead> {
    let f = std::fs::File::open(path)?;
    read_archive_from(std::io::BufReader::new(f))
}

/// Reads an archive from any reader, keeping every snapshot.
pub fn read_archive_from<R: Read>(r: R) -> std::io::Result<ArchiveRead> {
    let mut snapshots = Vec::new();
    let mut incomplete = Vec::new();
    let mut unknown_members = Vec::new();
    let mut bad_members = Vec::new();
    let summary = read_snapshots(r, |ev| match ev {
        ArchiveEvent::Snapshot(s) => snapshots.push(s),
        ArchiveEvent::Incomplete(i) => incomplete.push(i),
        ArchiveEvent::UnknownMember { name, .. } => unknown_members.push(name),
        ArchiveEvent::BadMember { name, what, .. } => bad_members.push((name, what)),
        ArchiveEvent::Damaged { .. } => {}
    })?;
    Ok(ArchiveRead {
        snapshots,
        incomplete,
        end: summary.end,
        unknown_members,
        bad_members,
        damaged: summary.damaged,
    })
}

/// What is wrong in a snapshot being applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProblemKind {
    /// A line of a table, delta, fd listing or process record that cannot
    /// be used; skipped.
    BadLine(String),
    /// A well-formed line that does not fit the state (see
    /// `delta::ApplyProblem::mismatch`).
    Mismatch(String),
    /// The snapshot does not come after the last one applied; skipped.
    OutOfOrder {
        /// Sequence number of the last snapshot applied.
        last: u64,
    },
    /// The first snapshot applied is a delta: applied to an empty state.
    DeltaFirst,
    /// `meta.json` lists a table as `full` or `delta` but its member is
    /// absent: the table has no known rows.
    TableAbsent {
        /// Namespace inode.
        netns: u64,
        /// Table name.
        table: String,
        /// How it is listed.
        stored: TableStored,
    },
    /// A `delta` or `unchanged` table with no previous rows: a delta is
    /// applied to an empty table.
    NoBase {
        /// Namespace inode.
        netns: u64,
        /// Table name.
        table: String,
        /// How it is listed.
        stored: TableStored,
    },
    /// A keyframe lists a table as `delta` or `unchanged` (a keyframe is
    /// meant to stand alone); applied to the previous rows all the same.
    NotSelfContained {
        /// Namespace inode.
        netns: u64,
        /// Table name.
        table: String,
        /// How it is listed.
        stored: TableStored,
    },
    /// A keyframe without `fds` member: no process is known to hold a
    /// socket at that time.
    KeyframeWithoutFds,
}

/// Parses member `name`, one JSON `T` a line (blank lines skipped), into
/// `records`; a line that is not one is a problem naming `what`.
fn json_lines<T: serde::de::DeserializeOwned>(
    name: &str,
    data: &[u8],
    what: &str,
    records: &mut Vec<T>,
    problems: &mut Vec<Problem>,
) {
    let mut listed = 0usize;
    let mut more = 0u64;
    for (i, line) in String::from_utf8_lossy(data).lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<T>(line) {
            Ok(r) => records.push(r),
            Err(_) if listed >= crate::delta::MAX_PROBLEMS_PER_MEMBER => more += 1,
            Err(e) => {
                listed += 1;
                problems.push(Problem {
                    member: name.to_string(),
                    line: i + 1,
                    kind: ProblemKind::BadLine(format!("{what}: {e}")),
                    more: 0,
                });
            }
        }
    }
    if more > 0 {
        problems.push(Problem {
            member: name.to_string(),
            line: 0,
            kind: ProblemKind::BadLine(format!("{what}: more unusable lines, not listed")),
            more,
        });
    }
}

/// A problem met while applying a snapshot; never fatal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The member concerned (the name it has or would have).
    pub member: String,
    /// 1-based line in the member, 0 when not about a line.
    pub line: usize,
    /// What is wrong.
    pub kind: ProblemKind,
    /// Unusable lines of the member past the ones listed, counted without
    /// details (0 but in the last entry of a member with many).
    pub more: u64,
}

/// What applying one snapshot gave, besides the new state.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// Whether the snapshot was applied (false: out of order, skipped).
    pub applied: bool,
    /// Its process records, in member order.
    pub processes: Vec<ProcessRecord>,
    /// Its socket events, in member order.
    pub events: Vec<EventRecord>,
    /// Its socket use runs and socket bindings (`sockuse.jsonl`), in
    /// member order; empty for snapshots written without them.
    pub sockuse: Vec<SockUseRecord>,
    /// Its process lifecycle records (`tasks.jsonl`), in member order;
    /// empty for snapshots written without them.
    pub tasks: Vec<TaskRecord>,
    /// Its problems, tables first, then fds, then process records.
    pub problems: Vec<Problem>,
}

/// The tables and fd listing rebuilt by applying snapshots in order.
pub struct State<K: RowKeeper> {
    /// Decides which tables are kept and what a row is kept as.
    pub keeper: K,
    /// Table state per (netns inode, table name).
    pub tables: BTreeMap<(u64, String), TableState<K::Row>>,
    /// Which pid holds which socket inodes.
    pub fds: FdState<K::Memo>,
    /// Sequence number of the last snapshot applied.
    pub last_seq: Option<u64>,
}

impl<K: RowKeeper> fmt::Debug for State<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State")
            .field("tables", &self.tables.len())
            .field("fds", &self.fds.len())
            .field("last_seq", &self.last_seq)
            .finish()
    }
}

impl<K: RowKeeper> State<K> {
    /// An empty state.
    pub fn new(keeper: K) -> State<K> {
        State {
            keeper,
            tables: BTreeMap::new(),
            fds: FdState::new(),
            last_seq: None,
        }
    }

    /// Applies one complete snapshot on top of the current state.
    pub fn apply(&mut self, s: &Snapshot) -> Applied {
        let seq = s.meta.seq;
        let mut out = Applied::default();
        let problem = |member: String, line, kind| Problem {
            member,
            line,
            kind,
            more: 0,
        };
        if let Some(last) = self.last_seq.filter(|&l| seq <= l) {
            let p = problem(meta_member(seq), 0, ProblemKind::OutOfOrder { last });
            out.problems.push(p);
            return out;
        }
        let keyframe = s.meta.kind == SnapshotKind::Keyframe;
        if !keyframe && self.last_seq.is_none() {
            let p = problem(meta_member(seq), 0, ProblemKind::DeltaFirst);
            out.problems.push(p);
        }
        self.apply_tables(s, keyframe, &mut out.problems);
        match s.members.iter().find(|m| matches!(m.1, Member::Fds { .. })) {
            Some((name, _, data)) => {
                let text = String::from_utf8_lossy(data);
                for p in apply_fds(&mut self.fds, &text, keyframe) {
                    let more = p.more;
                    let kind = line_kind(p.mismatch, p.what);
                    out.problems.push(Problem {
                        more,
                        ..problem(name.clone(), p.line, kind)
                    });
                }
            }
            None if keyframe => {
                self.fds.clear();
                let p = problem(fds_member(seq), 0, ProblemKind::KeyframeWithoutFds);
                out.problems.push(p);
            }
            None => {}
        }
        let member = |want: fn(&Member) -> bool| s.members.iter().find(|m| want(&m.1));
        if let Some((name, _, data)) = member(|m| matches!(m, Member::Procs { .. })) {
            json_lines(
                name,
                data,
                "process record",
                &mut out.processes,
                &mut out.problems,
            );
        }
        if let Some((name, _, data)) = member(|m| matches!(m, Member::Events { .. })) {
            json_lines(
                name,
                data,
                "event record",
                &mut out.events,
                &mut out.problems,
            );
        }
        if let Some((name, _, data)) = member(|m| matches!(m, Member::SockUse { .. })) {
            json_lines(
                name,
                data,
                "socket use record",
                &mut out.sockuse,
                &mut out.problems,
            );
        }
        if let Some((name, _, data)) = member(|m| matches!(m, Member::Tasks { .. })) {
            json_lines(name, data, "task record", &mut out.tasks, &mut out.problems);
        }
        self.last_seq = Some(seq);
        out.applied = true;
        out
    }

    /// Applies only the tables of one complete snapshot (for a reader that
    /// keeps a second state for tables of another kind, e.g. the conntrack
    /// table beside the socket tables); the fd listing is left alone.
    pub fn apply_tables_only(&mut self, s: &Snapshot) -> Vec<Problem> {
        let mut problems = Vec::new();
        let keyframe = s.meta.kind == SnapshotKind::Keyframe;
        self.apply_tables(s, keyframe, &mut problems);
        problems
    }

    /// Full replaces, delta changes by identity, unchanged keeps, missing
    /// clears; a table not listed any more is gone.
    fn apply_tables(&mut self, s: &Snapshot, keyframe: bool, problems: &mut Vec<Problem>) {
        let seq = s.meta.seq;
        let mut next = BTreeMap::new();
        for ns in &s.meta.netns {
            for t in &ns.tables {
                if !self.keeper.keeps(&t.table) {
                    continue;
                }
                let key = (ns.inode, t.table.clone());
                let full = t.stored != TableStored::Delta;
                let name = net_member(seq, ns.inode, &t.table, full);
                let mut problem_more = |line, kind, more| {
                    problems.push(Problem {
                        member: name.clone(),
                        line,
                        kind,
                        more,
                    })
                };
                let mut problem = |line, kind| problem_more(line, kind, 0);
                let (netns, table, stored) = (ns.inode, t.table.clone(), t.stored);
                if keyframe && matches!(stored, TableStored::Delta | TableStored::Unchanged) {
                    let kind = ProblemKind::NotSelfContained {
                        netns,
                        table: table.clone(),
                        stored,
                    };
                    problem(0, kind);
                }
                let base = self.tables.remove(&key);
                if base.is_none() && matches!(stored, TableStored::Delta | TableStored::Unchanged) {
                    let kind = ProblemKind::NoBase {
                        netns,
                        table: table.clone(),
                        stored,
                    };
                    problem(0, kind);
                }
                if matches!(stored, TableStored::Missing) {
                    continue;
                }
                if stored == TableStored::Unchanged {
                    if let Some(base) = base {
                        next.insert(key, base);
                    }
                    continue;
                }
                let member = s.members.iter().find(|(_, m, _)| {
                    matches!(m, Member::Net { netns: n, table: tb, full: f, .. }
                        if *n == ns.inode && *tb == t.table && *f == full)
                });
                let Some((_, _, data)) = member else {
                    problem(
                        0,
                        ProblemKind::TableAbsent {
                            netns,
                            table,
                            stored,
                        },
                    );
                    continue;
                };
                let text = String::from_utf8_lossy(data);
                let (st, line_problems) = if full {
                    TableState::from_full_text(&self.keeper, &t.table, &text)
                } else {
                    let mut st = base.unwrap_or_default();
                    let p = apply_delta(&mut st, &self.keeper, &t.table, &text);
                    (st, p)
                };
                for p in line_problems {
                    problem_more(p.line, line_kind(p.mismatch, p.what), p.more);
                }
                next.insert(key, st);
            }
        }
        self.tables = next;
    }
}

fn line_kind(mismatch: bool, what: String) -> ProblemKind {
    if mismatch {
        ProblemKind::Mismatch(what)
    } else {
        ProblemKind::BadLine(what)
    }
}

/// The state with rows kept raw, every process record and every problem
/// collected: for looking at whole archives (tests, tools).
#[derive(Debug)]
pub struct Replay {
    /// The rebuilt state.
    pub state: State<RawRows>,
    /// Every process record seen so far.
    pub procs: Vec<ProcessRecord>,
    /// Problems met while applying.
    pub problems: Vec<Problem>,
}

impl Default for Replay {
    fn default() -> Self {
        Replay {
            state: State::new(RawRows),
            procs: Vec::new(),
            problems: Vec::new(),
        }
    }
}

impl Replay {
    /// Applies one snapshot on top of the current state.
    pub fn apply(&mut self, s: &Snapshot) {
        let a = self.state.apply(s);
        self.procs.extend(a.processes);
        self.problems.extend(a.problems);
    }

    /// All socket inodes currently held by `pid`.
    pub fn inodes_of(&self, pid: u32) -> Vec<u64> {
        match self.state.fds.get(&pid).map(|e| &e.status) {
            Some(FdStatus::Holds(v)) => v.clone(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta::FdEntry;
    use crate::layout::{procs_member, ClockReading, FdWalk, NetnsEntry, TableEntry};

    const NS: u64 = 4026531840;
    const HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";

    fn row(port: u16, inode: u64) -> String {
        format!("   0: 0100007F:{port:04X} 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 {inode} 1 0000000000000000 100 0 0 10 0")
    }

    fn meta(seq: u64, kind: SnapshotKind, tables: &[(&str, TableStored)]) -> SnapshotMeta {
        let c = ClockReading {
            realtime_ns: seq as i64,
            monotonic_ns: seq as i64,
            boottime_ns: seq as i64,
        };
        SnapshotMeta {
            seq,
            kind,
            before: c,
            net_done: c,
            after: c,
            netns: vec![NetnsEntry {
                inode: NS,
                pid: 1,
                tables: tables
                    .iter()
                    .map(|(t, stored)| TableEntry {
                        table: t.to_string(),
                        stored: *stored,
                    })
                    .collect(),
            }],
            fd_walk: FdWalk::Full,
            pids_walked: 0,
            pids_total: 0,
            self_cpu_ns: 0,
            errors: Vec::new(),
        }
    }

    /// A snapshot from its meta and `(member name, text)` pairs.
    fn snap(meta: SnapshotMeta, members: &[(String, String)]) -> Snapshot {
        Snapshot {
            meta,
            members: members
                .iter()
                .map(|(n, t)| (n.clone(), parse_member(n).unwrap(), t.clone().into_bytes()))
                .collect(),
        }
    }

    fn kinds(problems: &[Problem]) -> Vec<&ProblemKind> {
        problems.iter().map(|p| &p.kind).collect()
    }

    #[test]
    fn tables_and_fds_follow_keyframes_and_deltas() {
        use SnapshotKind::{Delta, Keyframe};
        use TableStored::{Full, Missing, Unchanged};
        let (a, b, c) = (row(80, 100), row(81, 101), row(82, 102));
        let mut r = Replay::default();
        r.apply(&snap(
            meta(1, Keyframe, &[("tcp", Full), ("udp", Full), ("raw", Full)]),
            &[
                (
                    net_member(1, NS, "tcp", true),
                    format!("{HEADER}\n{a}\n{b}\n{a}\n"),
                ),
                (net_member(1, NS, "udp", true), format!("{HEADER}\n{c}\n")),
                (net_member(1, NS, "raw", true), format!("{HEADER}\n")),
                (
                    fds_member(1),
                    "10 5 1 100\n11 6 1 101\n!12 7 EACCES\n".into(),
                ),
            ],
        ));
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let ids = |r: &Replay, t: &str| {
            let st = r.state.tables.get(&(NS, t.to_string()));
            st.map(|s| s.identities().join(";"))
        };
        let id = |row: &str| crate::layout::row_identity(row).unwrap();
        assert_eq!(ids(&r, "tcp"), Some(format!("{};{}", id(&a), id(&b))));
        // b goes, c comes; udp unchanged; raw missing; tcp6 never listed.
        r.apply(&snap(
            meta(
                2,
                Delta,
                &[
                    ("tcp", TableStored::Delta),
                    ("udp", Unchanged),
                    ("raw", Missing),
                ],
            ),
            &[
                (
                    net_member(2, NS, "tcp", false),
                    format!("-{}\n+{c}\n", id(&b)),
                ),
                (fds_member(2), "-11 6\n!10 5 EPERM\n13 8 1 102,102\n".into()),
            ],
        ));
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(ids(&r, "tcp"), Some(format!("{};{}", id(&a), id(&c))));
        assert_eq!(ids(&r, "udp"), Some(id(&c)));
        assert_eq!(ids(&r, "raw"), None);
        assert_eq!(r.inodes_of(13), vec![102]);
        assert_eq!(r.inodes_of(11), Vec::<u64>::new());
        assert!(matches!(&r.state.fds[&10].status, FdStatus::Denied(e) if e == "EPERM"));
        assert!(matches!(&r.state.fds[&12].status, FdStatus::Denied(e) if e == "EACCES"));
        // Out of order: skipped, state untouched.
        r.apply(&snap(meta(2, Keyframe, &[]), &[]));
        assert_eq!(kinds(&r.problems), [&ProblemKind::OutOfOrder { last: 2 }]);
        assert!(ids(&r, "tcp").is_some());
        // A delta whose members are absent, a gone line for another
        // process, a bad fd line and a bad process record.
        r.problems.clear();
        r.apply(&snap(
            meta(3, Delta, &[("tcp", TableStored::Delta), ("udp", Full)]),
            &[
                (fds_member(3), "-13 9\nbogus\n".into()),
                (procs_member(3), "{not json\n".into()),
            ],
        ));
        let absent = |table: &str, stored| ProblemKind::TableAbsent {
            netns: NS,
            table: table.into(),
            stored,
        };
        assert_eq!(
            kinds(&r.problems)[..2],
            [&absent("tcp", TableStored::Delta), &absent("udp", Full)]
        );
        assert!(matches!(r.problems[2].kind, ProblemKind::Mismatch(_)));
        assert_eq!(
            (r.problems[3].member.as_str(), r.problems[3].line),
            ("snap/00000003/fds", 2)
        );
        assert_eq!(r.problems[4].member, procs_member(3));
        assert_eq!(r.problems.len(), 5);
        assert!(r.state.tables.is_empty());
        assert_eq!(r.inodes_of(13), vec![102], "pid 13 is not the one gone");
        // A keyframe without fds clears them; unchanged without base.
        r.problems.clear();
        r.apply(&snap(meta(4, Keyframe, &[("tcp", Unchanged)]), &[]));
        assert_eq!(r.problems.len(), 3, "{:?}", r.problems);
        assert!(r.state.fds.is_empty());
    }

    /// `sockuse.jsonl` and `tasks.jsonl` are read into the snapshot's
    /// records; a snapshot without them (older bundles) reads as before,
    /// a bad line is a problem naming its member and line, and unknown
    /// kinds are kept for the reader to skip.
    #[test]
    fn sockuse_and_tasks_members_are_read_and_optional() {
        use crate::layout::{sockuse_member, tasks_member, SockUseKind, TaskKind, UseDir};
        let m = |seq| meta(seq, SnapshotKind::Keyframe, &[]);
        let mut st = State::new(RawRows);
        let old = st.apply(&snap(m(1), &[(fds_member(1), String::new())]));
        assert!(old.applied && old.sockuse.is_empty() && old.tasks.is_empty());
        assert!(old.problems.is_empty(), "{:?}", old.problems);
        let uses = concat!(
            r#"{"kind":"use","source":"tracepoint:sock:sock_send_length","sk":"00112233aabbccdd","dir":"send","proto":"tcp","family":4,"pid":10,"tid":11,"start_time":500,"comm":"curl","first_ns":100,"last_ns":200,"calls":3,"bytes":4096}"#,
            "\n",
            r#"{"kind":"sock","source":"tracepoint:sock:inet_sock_set_state","sk":"00112233aabbccdd","mono_ns":90,"proto":"tcp","local_ip":"10.0.0.1","local_port":40000,"remote_ip":"10.0.0.2","remote_port":80,"state":"SYN_SENT","future":1}"#,
            "\n\n",
            r#"{"kind":"splice","source":"x","sk":"0000000000000001","proto":"tcp"}"#,
            "\n",
            "{\"kind\":\"use\"}\n",
        );
        let tasks = concat!(
            r#"{"kind":"fork","source":"tracepoint:sched:sched_process_fork","mono_ns":5,"pid":10,"tid":10,"parent_pid":10,"child_pid":12}"#,
            "\n",
            r#"{"kind":"exec","source":"tracepoint:sched:sched_process_exec","mono_ns":6,"pid":12,"tid":12,"filename":"/usr/bin/head","old_pid":12}"#,
            "\n",
            r#"{"kind":"exit","source":"tracepoint:sched:sched_process_exit","mono_ns":7,"pid":12}"#,
            "\n",
        );
        let a = st.apply(&snap(
            m(2),
            &[
                (fds_member(2), String::new()),
                (sockuse_member(2), uses.into()),
                (tasks_member(2), tasks.into()),
            ],
        ));
        assert_eq!(a.sockuse.len(), 3);
        let u = &a.sockuse[0];
        assert_eq!(u.kind, SockUseKind::Use);
        assert_eq!(u.dir, Some(UseDir::Send));
        assert_eq!((u.pid, u.bytes, u.calls), (Some(10), Some(4096), Some(3)));
        let b = &a.sockuse[1];
        assert_eq!(b.kind, SockUseKind::Sock);
        assert_eq!(b.remote_port, Some(80));
        assert_eq!(b.state.as_deref(), Some("SYN_SENT"));
        assert_eq!(a.sockuse[2].kind, SockUseKind::Other("splice".into()));
        assert_eq!(a.problems.len(), 1, "{:?}", a.problems);
        assert_eq!(
            (a.problems[0].member.as_str(), a.problems[0].line),
            ("snap/00000002/sockuse.jsonl", 5)
        );
        let kinds: Vec<_> = a.tasks.iter().map(|t| t.kind.clone()).collect();
        assert_eq!(kinds, [TaskKind::Fork, TaskKind::Exec, TaskKind::Exit]);
        assert_eq!(a.tasks[0].child_pid, Some(12));
        assert_eq!(a.tasks[1].filename.as_deref(), Some("/usr/bin/head"));
        assert_eq!(a.tasks[2].tid, 0);
    }

    /// The conntrack table is applied like the others, with its own row
    /// identity (the line without its timeout).
    #[test]
    fn conntrack_table_full_and_delta() {
        use crate::conntrack::TABLE;
        let a = "tcp 10.77.0.2 198.18.0.2 5000 9001 198.18.0.2 198.18.0.1 9001 5000 0x19e 0 0 100";
        let a2 = "tcp 10.77.0.2 198.18.0.2 5000 9001 198.18.0.2 198.18.0.1 9001 5000 0x19e 0 0 90";
        let b = "udp 10.77.0.2 198.18.0.2 5001 53 198.18.0.2 198.18.0.1 53 5001 0x1be 0 0 30";
        let mut r = Replay::default();
        r.apply(&snap(
            meta(1, SnapshotKind::Keyframe, &[(TABLE, TableStored::Full)]),
            &[
                (net_member(1, NS, TABLE, true), format!("{a}\n{a2}\nbad\n")),
                (fds_member(1), String::new()),
            ],
        ));
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert_eq!(r.problems[0].line, 3);
        let id = |l: &str| crate::conntrack::row_identity(l).unwrap();
        r.apply(&snap(
            meta(2, SnapshotKind::Delta, &[(TABLE, TableStored::Delta)]),
            &[(
                net_member(2, NS, TABLE, false),
                format!("-{}\n+{b}\n", id(a)),
            )],
        ));
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        let st = &r.state.tables[&(NS, TABLE.to_string())];
        assert_eq!(st.identities(), vec![id(b).as_str()]);
        let only = State::new(RawRows).apply_tables_only(&snap(
            meta(3, SnapshotKind::Keyframe, &[(TABLE, TableStored::Full)]),
            &[(net_member(3, NS, TABLE, true), format!("{b}\n"))],
        ));
        assert!(only.is_empty());
    }

    /// A reader's memo on an fd entry lives until a line changes the entry.
    #[test]
    fn fd_memo_resets_when_the_entry_changes() {
        struct Memo;
        impl RowKeeper for Memo {
            type Row = ();
            type Memo = u32;
            fn row(&self, _: &str) -> Result<Option<()>, String> {
                Ok(None)
            }
        }
        let mut st = State::new(Memo);
        let k = snap(
            meta(1, SnapshotKind::Keyframe, &[]),
            &[(fds_member(1), "10 5 1 100\n11 6 1 101\n".into())],
        );
        assert!(st.apply(&k).problems.is_empty());
        for e in st.fds.values_mut() {
            e.memo = 7;
        }
        let d = snap(
            meta(2, SnapshotKind::Delta, &[]),
            &[(fds_member(2), "10 5 1 100,102\n".into())],
        );
        assert!(st.apply(&d).problems.is_empty());
        let memo = |pid| st.fds.get(&pid).map(|e: &FdEntry<u32>| e.memo);
        assert_eq!((memo(10), memo(11)), (Some(0), Some(7)));
    }

    /// Three snapshots, an unknown member between the first two; the offset
    /// just past each `meta.json`'s data.
    fn archive(trailer: bool) -> (Vec<u8>, Vec<u64>) {
        let mut b = tar::Builder::new(Vec::new());
        let mut ends = Vec::new();
        let add = |b: &mut tar::Builder<Vec<u8>>, name: &str, text: &str| {
            let mut h = tar::Header::new_gnu();
            h.set_size(text.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, text.as_bytes()).unwrap();
        };
        for seq in 1..=3 {
            let kind = if seq == 1 {
                SnapshotKind::Keyframe
            } else {
                SnapshotKind::Delta
            };
            add(&mut b, &fds_member(seq), &format!("10 5 1 {seq}\n"));
            let m = serde_json::to_string(&meta(seq, kind, &[])).unwrap();
            add(&mut b, &meta_member(seq), &m);
            let pad = (512 - m.len() as u64 % 512) % 512;
            ends.push(b.get_ref().len() as u64 - pad);
            if seq == 1 {
                add(&mut b, "notes.txt", "hello");
            }
        }
        let bytes = if trailer {
            b.into_inner().unwrap()
        } else {
            b.get_ref().clone()
        };
        (bytes, ends)
    }

    fn events(bytes: &[u8]) -> (Vec<ArchiveEvent>, ArchiveSummary) {
        let mut ev = Vec::new();
        let s = read_snapshots(bytes, |e| ev.push(e)).unwrap();
        (ev, s)
    }

    #[test]
    fn whole_archives_stream_in_order() {
        let (bytes, _) = archive(true);
        let (ev, s) = events(&bytes);
        assert_eq!(s.end, ArchiveEnd::Trailer);
        assert_eq!((s.snapshots, s.last_complete_seq), (3, Some(3)));
        assert!(matches!(&ev[1], ArchiveEvent::UnknownMember { name, .. } if name == "notes.txt"));
        assert_eq!(ev.len(), 4);
        let (bytes, _) = archive(false);
        let (_, s) = events(&bytes);
        assert_eq!(s.end, ArchiveEnd::CleanCut);
        assert_eq!(s.bytes_read, bytes.len() as u64);
    }

    /// Cut at every byte: exactly the snapshots whose `meta.json` lies
    /// before the cut, and a cut named at an offset within the bytes present
    /// unless the cut falls between two snapshots.
    #[test]
    fn cut_at_every_offset() {
        let (bytes, ends) = archive(false);
        for len in 0..bytes.len() {
            let (ev, s) = events(&bytes[..len]);
            let want = ends.iter().filter(|&&e| e <= len as u64).count() as u64;
            assert_eq!(s.snapshots, want, "cut at {len}");
            let complete = ev
                .iter()
                .filter(|e| matches!(e, ArchiveEvent::Snapshot(_)))
                .count() as u64;
            assert_eq!(complete, want, "cut at {len}");
            match &s.end {
                ArchiveEnd::Cut { offset, .. } => {
                    assert!(*offset <= len as u64, "cut at {len}: offset {offset}");
                    // Never inside a complete snapshot.
                    let last_end = want
                        .checked_sub(1)
                        .and_then(|i| ends.get(i as usize))
                        .copied()
                        .unwrap_or(0);
                    assert!(*offset >= last_end.min(len as u64), "cut at {len}");
                }
                end => {
                    let boundary = len % 512 == 0;
                    assert!(boundary, "cut at {len} not reported: {end:?}");
                    assert!(!ev.iter().any(|e| matches!(e, ArchiveEvent::Incomplete(_))));
                }
            }
        }
    }

    #[test]
    fn meta_without_its_snapshot_or_with_another_seq_is_incomplete() {
        let mut b = tar::Builder::new(Vec::new());
        let members = [
            (fds_member(1), "10 5 1 1\n".to_string()),
            (fds_member(2), "10 5 1 1\n".to_string()),
            (
                meta_member(2),
                serde_json::to_string(&meta(9, SnapshotKind::Keyframe, &[])).unwrap(),
            ),
            (meta_member(3), "{".to_string()),
        ];
        for (name, text) in &members {
            let mut h = tar::Header::new_gnu();
            h.set_size(text.len() as u64);
            h.set_cksum();
            b.append_data(&mut h, name, text.as_bytes()).unwrap();
        }
        let bytes = b.into_inner().unwrap();
        let (ev, s) = events(&bytes);
        assert_eq!((s.snapshots, s.end), (0, ArchiveEnd::Trailer));
        let why: Vec<&WhyIncomplete> = ev
            .iter()
            .filter_map(|e| match e {
                ArchiveEvent::Incomplete(i) => Some(&i.why),
                _ => None,
            })
            .collect();
        assert_eq!(why.len(), 3);
        assert_eq!(why[0], &WhyIncomplete::NextSnapshotBegan { next_seq: 2 });
        assert!(matches!(
            why[1],
            WhyIncomplete::MetaSeqMismatch { says: 9, .. }
        ));
        assert!(matches!(why[2], WhyIncomplete::MetaInvalid { line: 1, .. }));
    }

    /// One damaged header in the middle drops only its snapshot: the
    /// reader resumes at the next header and keeps the later ones.
    #[test]
    fn damaged_header_mid_archive_keeps_later_snapshots() {
        let (mut bytes, ends) = archive(true);
        // The first header after snapshot 1 (and its padding) belongs to
        // the unknown member; the one after it to snapshot 2.
        let s1_end = ends[0].div_ceil(512) * 512;
        let s2_first = s1_end + 1024; // notes.txt header + one data block
        bytes[s2_first as usize + 100] ^= 0x55;
        let (ev, s) = events(&bytes);
        assert_eq!(s.end, ArchiveEnd::Trailer, "{ev:?}");
        let seqs: Vec<u64> = ev
            .iter()
            .filter_map(|e| match e {
                ArchiveEvent::Snapshot(s) => Some(s.meta.seq),
                _ => None,
            })
            .collect();
        assert_eq!(seqs, vec![1, 3]);
        assert_eq!(s.damaged.len(), 1);
        assert_eq!(s.damaged[0].offset, s2_first);
        assert!(ev
            .iter()
            .any(|e| matches!(e, ArchiveEvent::Damaged { offset, .. } if *offset == s2_first)));
    }

    /// Links and sparse members are skipped unread and said; a member
    /// claiming gigabytes is never allocated.
    #[test]
    fn non_regular_and_huge_members_are_skipped() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, fds_member(1), "/etc/shadow").unwrap();
        let m = serde_json::to_string(&meta(1, SnapshotKind::Keyframe, &[])).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(m.len() as u64);
        h.set_cksum();
        b.append_data(&mut h, meta_member(1), m.as_bytes()).unwrap();
        let mut bytes = b.into_inner().unwrap();
        let (ev, s) = events(&bytes);
        assert_eq!(s.snapshots, 1);
        assert!(ev.iter().any(|e| matches!(e,
            ArchiveEvent::BadMember { what, .. } if what.contains("not a regular file"))));
        // Claim 6 GB in the first header (size field in octal).
        let mut hdr = [0u8; 512];
        hdr.copy_from_slice(&bytes[..512]);
        let mut t = tar::Header::from_byte_slice(&hdr).clone();
        t.set_entry_type(tar::EntryType::Regular);
        t.set_size(6 << 30);
        t.set_cksum();
        bytes[..512].copy_from_slice(t.as_bytes());
        let (ev, s) = events(&bytes);
        assert!(
            matches!(s.end, ArchiveEnd::Cut { .. } | ArchiveEnd::CleanCut),
            "{s:?}"
        );
        assert!(ev.iter().any(|e| matches!(e,
            ArchiveEvent::BadMember { what, .. } if what.contains("claims"))));
    }
}
