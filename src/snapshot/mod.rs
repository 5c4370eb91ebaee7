//! The snapshot side of the join: reading a `procflow-snap` bundle, parsing
//! the archived /proc/net text, and building the socket timeline.
//!
//! - [`procnet`]: /proc/net table text to rows (pure, byte order as input).
//! - [`archive`]: the bundle directory and its manifest; its tar archives
//!   are read snapshot by snapshot by the format's own reader
//!   (`procflow_format::reader`), tolerating an archive cut mid-snapshot.
//! - [`timeline`]: the state reconstructed snapshot by snapshot (applied by
//!   `procflow_format::reader::State`) and folded into time intervals per
//!   socket and per (inode, process).
//! - [`uses`]: who sent and read on which socket, and which socket id
//!   held which tuple when (`sockuse.jsonl`).
//! - [`nsfiles`]: each namespace's `/etc/hosts` and `/etc/resolv.conf`.
//! - [`conntrack`]: the conntrack entries of every namespace and when they
//!   existed, indexed by direction, for flows seen after NAT.

pub mod archive;
pub mod conntrack;
pub mod nsfiles;
pub use procflow_format::procnet;
pub mod timeline;
pub mod uses;

use serde::Serialize;

/// At most this many bad lines are kept with their details; all are counted.
pub const MAX_BAD_LINE_DETAILS: usize = 200;

/// Warnings kept in [`SnapshotDiagnostics::warnings`]; the ones after are
/// counted in one last sentence (a hostile archive can hold a million
/// unknown members, each a warning on the terminal and in the reports).
pub const MAX_WARNINGS: usize = 200;

/// One /proc or listing line that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadLine {
    /// Archive file name.
    pub archive: String,
    /// Tar member name.
    pub member: String,
    /// 1-based line number inside the member.
    pub line: usize,
    /// What was wrong.
    pub reason: String,
}

/// An archive that ended before its last snapshot was complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CutArchive {
    /// Archive file name.
    pub archive: String,
    /// Byte offset where the unreadable or incomplete part starts.
    pub offset: u64,
    /// Size of the archive file.
    pub size: u64,
    /// Last complete snapshot read from it, if any.
    pub last_complete_seq: Option<u64>,
    /// What was found at the offset.
    pub reason: String,
}

/// Everything odd met while reading snapshots; never fatal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SnapshotDiagnostics {
    /// Number of unusable lines in tables, deltas, fd listings and process
    /// records.
    pub bad_lines: u64,
    /// The first [`MAX_BAD_LINE_DETAILS`] of them.
    pub bad_line_details: Vec<BadLine>,
    /// Archives read only up to their last complete snapshot.
    pub cut_archives: Vec<CutArchive>,
    /// Other warnings, one sentence each.
    pub warnings: Vec<String>,
    /// Damaged parts of archives skipped (reading resumed after each);
    /// `offset` is where the damage starts.
    pub damaged_archives: Vec<CutArchive>,
    /// Archives that end without their tar trailer at a snapshot boundary
    /// (the recorder never closed them).
    pub unclosed_archives: Vec<String>,
    /// A run of snapshots skipped as out of order, not yet reported:
    /// (archive, first seq, last seq, count, last seq applied). One
    /// duplicated archive makes one warning, not one per snapshot.
    #[serde(skip)]
    pub out_of_order: Option<(String, u64, u64, u64, u64)>,
    /// Warnings beyond [`MAX_WARNINGS`], counted in the last one.
    #[serde(skip)]
    pub warnings_not_kept: u64,
    /// Complete snapshots not applied: a `meta.json` that is invalid or
    /// names another seq, a snapshot without `meta.json`, out of order.
    /// Content damage: the evidence checks fail on it.
    #[serde(skip)]
    pub skipped_snapshots: u64,
    /// The first skipped snapshot, in words.
    #[serde(skip)]
    pub first_skipped: Option<String>,
}

impl SnapshotDiagnostics {
    /// Counts a bad line and keeps its details while there is room.
    pub fn bad_line(&mut self, archive: &str, member: &str, line: usize, reason: String) {
        self.bad_lines += 1;
        if self.bad_line_details.len() < MAX_BAD_LINE_DETAILS {
            self.bad_line_details.push(BadLine {
                archive: archive.to_string(),
                member: member.to_string(),
                line,
                reason,
            });
        }
    }

    /// Records a warning.
    pub fn warn(&mut self, text: String) {
        self.flush_out_of_order();
        self.push_warning(text);
    }

    /// Keeps a warning while there is room, else counts it in the last
    /// sentence.
    fn push_warning(&mut self, text: String) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(text);
            return;
        }
        self.warnings_not_kept += 1;
        let more = format!(
            "{} more snapshot warning(s) not shown",
            self.warnings_not_kept
        );
        if self.warnings_not_kept == 1 {
            self.warnings.push(more);
        } else if let Some(last) = self.warnings.last_mut() {
            *last = more;
        }
    }

    /// Counts a snapshot not applied, keeping the first reason.
    pub fn skipped(&mut self, what: impl FnOnce() -> String) {
        self.skipped_snapshots += 1;
        if self.first_skipped.is_none() {
            self.first_skipped = Some(what());
        }
    }

    /// Notes a snapshot of `archive` skipped because it does not come after
    /// `last`, the last one applied; consecutive ones make one warning.
    pub fn out_of_order(&mut self, archive: &str, seq: u64, last: u64) {
        self.skipped(|| format!("{archive}: snapshot {seq} comes after snapshot {last}"));
        if let Some((a, _, to, n, _)) = &mut self.out_of_order {
            if a == archive {
                *to = seq;
                *n += 1;
                return;
            }
        }
        self.flush_out_of_order();
        self.out_of_order = Some((archive.to_string(), seq, seq, 1, last));
    }

    /// Turns the pending run of out-of-order snapshots into one warning.
    pub fn flush_out_of_order(&mut self) {
        if let Some((archive, from, to, n, last)) = self.out_of_order.take() {
            self.push_warning(if n == 1 {
                format!("{archive}: snapshot {from} comes after snapshot {last}; skipped")
            } else {
                format!(
                    "{archive}: {n} snapshots ({from} to {to}) do not come after snapshot \
                     {last} already applied (a duplicated or misplaced archive?); skipped"
                )
            });
        }
    }
}

#[cfg(test)]
mod diag_tests {
    use super::*;

    /// A flood of warnings keeps the first ones and counts the rest in one
    /// last sentence.
    #[test]
    fn warnings_are_bounded() {
        let mut d = SnapshotDiagnostics::default();
        for i in 0..MAX_WARNINGS + 1000 {
            d.warn(format!("w{i}"));
        }
        assert_eq!(d.warnings.len(), MAX_WARNINGS + 1);
        assert_eq!(d.warnings[0], "w0");
        assert_eq!(
            d.warnings.last().map(String::as_str),
            Some("1000 more snapshot warning(s) not shown")
        );
    }
}
