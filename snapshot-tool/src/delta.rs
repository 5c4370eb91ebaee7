//! Keyframes and deltas: how the recorder computes them and how a reader
//! applies them. Both directions live here so that "delta of A→B applied to
//! A gives B" is tested in one place.

use std::collections::{BTreeMap, HashMap};

use crate::layout::{format_delta_line, parse_delta_line, row_identity, DeltaLine, FdLine};
use crate::procfs::{FastSet, TableRows};

/// The rows of one /proc/net table, keyed by [`row_identity`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableState {
    /// The header line of the last full read.
    pub header: Option<String>,
    /// identity -> raw row as first seen with that identity.
    pub rows: HashMap<String, String>,
}

impl TableState {
    /// Builds the state of a freshly read table.
    pub fn from_rows(t: &TableRows<'_>) -> TableState {
        TableState {
            header: t.header.map(str::to_string),
            rows: t
                .rows
                .iter()
                .map(|(id, row)| (id.clone(), (*row).to_string()))
                .collect(),
        }
    }

    /// Builds the state from the text of a full table member.
    pub fn from_full_text(text: &str) -> TableState {
        TableState::from_rows(&crate::procfs::table_rows(text))
    }

    /// The set of identities, sorted (for comparisons in tests and readers).
    pub fn identities(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.rows.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }
}

/// The text of a full table member: the header, then each unique row once,
/// in the order the kernel printed them. Lines are the kernel's own bytes.
pub fn full_text(t: &TableRows<'_>) -> String {
    let mut out = String::new();
    if let Some(h) = t.header {
        out.push_str(h);
        out.push('\n');
    }
    for (_, row) in &t.rows {
        out.push_str(row);
        out.push('\n');
    }
    out
}

/// The row identities the recorder keeps of a table between ticks.
pub type IdSet = FastSet<String>;

/// The identities of a table just read, moved out of its rows.
pub fn identity_set(t: TableRows<'_>) -> IdSet {
    t.rows.into_iter().map(|(id, _)| id).collect()
}

/// Compares a table just read with the identities `prev` of the previous
/// read, updates `prev` to the new identities and returns the delta text
/// (`-identity` lines for rows gone, sorted, then `+row` lines for rows new,
/// in kernel order; empty when nothing changed) and the inodes of the new
/// rows. Costs one set lookup per row when nothing changed.
pub fn update(prev: &mut IdSet, cur: TableRows<'_>) -> (String, Vec<u64>) {
    let mut found = 0usize;
    let mut adds = String::new();
    let mut new_inodes = Vec::new();
    let mut is_new = vec![false; cur.rows.len()];
    for (i, (id, row)) in cur.rows.iter().enumerate() {
        if prev.contains(id) {
            found += 1;
        } else {
            adds.push_str(&format_delta_line(&DeltaLine::Add(row)));
            adds.push('\n');
            new_inodes.push(crate::procfs::row_inode(id));
            if let Some(f) = is_new.get_mut(i) {
                *f = true;
            }
        }
    }
    let mut out = String::new();
    if found < prev.len() {
        let cur_ids: FastSet<&str> = cur.rows.iter().map(|(id, _)| id.as_str()).collect();
        let mut removed: Vec<String> = prev
            .iter()
            .filter(|id| !cur_ids.contains(id.as_str()))
            .cloned()
            .collect();
        removed.sort_unstable();
        for id in removed {
            out.push_str(&format_delta_line(&DeltaLine::Remove(&id)));
            out.push('\n');
            prev.remove(&id);
        }
    }
    out.push_str(&adds);
    for ((id, _), new) in cur.rows.into_iter().zip(is_new) {
        if new {
            prev.insert(id);
        }
    }
    (out, new_inodes)
}

/// The delta from the identities `prev` to the table just read (see
/// [`update`]), leaving `prev` as it is.
pub fn diff(prev: &IdSet, cur: &TableRows<'_>) -> String {
    let mut p = prev.clone();
    let cur = TableRows {
        header: cur.header,
        rows: cur.rows.clone(),
        duplicates: cur.duplicates,
        bad: cur.bad.clone(),
    };
    update(&mut p, cur).0
}

/// A problem met while applying a member; the reader counts it and goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyProblem {
    /// 1-based line number in the member.
    pub line: usize,
    /// What was wrong.
    pub what: String,
}

/// Applies a `.delta` member to a table state.
pub fn apply_delta(state: &mut TableState, text: &str) -> Vec<ApplyProblem> {
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        match parse_delta_line(line) {
            Some(DeltaLine::Remove(id)) => {
                if state.rows.remove(id).is_none() {
                    problems.push(ApplyProblem {
                        line: i + 1,
                        what: format!("removal of a row not in the state: {id}"),
                    });
                }
            }
            Some(DeltaLine::Add(row)) => match row_identity(row) {
                Some(id) => {
                    state.rows.insert(id, row.to_string());
                }
                None => problems.push(ApplyProblem {
                    line: i + 1,
                    what: "added row has no identity (too few fields)".into(),
                }),
            },
            None => problems.push(ApplyProblem {
                line: i + 1,
                what: "expected a line starting with '+' or '-'".into(),
            }),
        }
    }
    problems
}

/// What the fd listing says about one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FdStatus {
    /// The socket inodes it holds (never empty in a state).
    Holds(Vec<u64>),
    /// Its fd directory could not be read; the errno name.
    Denied(String),
}

/// One process in the fd state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdEntry {
    /// Start time in clock ticks since boot.
    pub start_time: u64,
    /// Network namespace inode (0 when unknown, for denied entries).
    pub netns: u64,
    /// Sockets held, or why unknown.
    pub status: FdStatus,
}

/// Which processes hold which socket inodes, keyed by pid.
pub type FdState = BTreeMap<u32, FdEntry>;

/// Converts one fd line to a state change on `state`.
pub fn apply_fd_line(state: &mut FdState, line: &FdLine) {
    match line {
        FdLine::Holds {
            pid,
            start_time,
            netns,
            inodes,
        } => {
            if inodes.is_empty() {
                state.remove(pid);
            } else {
                state.insert(
                    *pid,
                    FdEntry {
                        start_time: *start_time,
                        netns: *netns,
                        status: FdStatus::Holds(inodes.clone()),
                    },
                );
            }
        }
        FdLine::Gone { pid, .. } => {
            state.remove(pid);
        }
        FdLine::Denied {
            pid,
            start_time,
            error,
        } => {
            // A denied line carries no namespace: the recorder could not
            // read the process' links, its ns/net link included.
            state.insert(
                *pid,
                FdEntry {
                    start_time: *start_time,
                    netns: 0,
                    status: FdStatus::Denied(error.clone()),
                },
            );
        }
    }
}

/// Applies an `fds` member. A keyframe's listing replaces the state; a
/// delta's lines change it line by line.
pub fn apply_fds(state: &mut FdState, text: &str, keyframe: bool) -> Vec<ApplyProblem> {
    if keyframe {
        state.clear();
    }
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        match FdLine::parse(line) {
            Some(l) => apply_fd_line(state, &l),
            None => problems.push(ApplyProblem {
                line: i + 1,
                what: "expected `PID START NETNS INODES`, `-PID START` or `!PID START ERRNO`"
                    .into(),
            }),
        }
    }
    problems
}

/// The fd line describing `entry` for `pid` (as in a keyframe).
pub fn entry_line(pid: u32, e: &FdEntry) -> FdLine {
    match &e.status {
        FdStatus::Holds(inodes) => FdLine::Holds {
            pid,
            start_time: e.start_time,
            netns: e.netns,
            inodes: inodes.clone(),
        },
        FdStatus::Denied(err) => FdLine::Denied {
            pid,
            start_time: e.start_time,
            error: err.clone(),
        },
    }
}

/// The full listing of a state, one line per pid in pid order.
pub fn fds_keyframe_text(state: &FdState) -> String {
    let mut out = String::new();
    for (pid, e) in state {
        out.push_str(&entry_line(*pid, e).format());
        out.push('\n');
    }
    out
}

/// The delta lines turning `prev` into `cur`: `Gone` for pids no longer
/// present (or whose start time changed: pid reuse, the old process is gone
/// before the new one's line), then a line for every entry that differs.
pub fn fds_delta_text(prev: &FdState, cur: &FdState) -> String {
    let mut out = String::new();
    for (pid, old) in prev {
        let gone = match cur.get(pid) {
            None => true,
            Some(new) => new.start_time != old.start_time,
        };
        if gone {
            out.push_str(
                &FdLine::Gone {
                    pid: *pid,
                    start_time: old.start_time,
                }
                .format(),
            );
            out.push('\n');
        }
    }
    for (pid, new) in cur {
        if prev.get(pid) != Some(new) {
            out.push_str(&entry_line(*pid, new).format());
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procfs::table_rows;

    fn fixture(rel: &str) -> Option<String> {
        let path = format!("{}/{rel}", env!("CARGO_MANIFEST_DIR"));
        match std::fs::read_to_string(&path) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("SKIPPED: {path}: {e}");
                None
            }
        }
    }

    /// Builds a sequence of tables by removing and re-adding rows of a real
    /// table, then checks keyframe + deltas give exactly each tick's set.
    fn check_sequence(text: &str) {
        let base = table_rows(text);
        let header = base.header.unwrap_or("  sl  local_address");
        let rows: Vec<&str> = base.rows.iter().map(|r| r.1).collect();
        assert!(!rows.is_empty());
        // Ticks: all rows; every other row; the first half; none; all again
        // with the volatile queue fields changed (identity unchanged).
        let mut ticks: Vec<Vec<String>> = vec![
            rows.iter().map(|s| s.to_string()).collect(),
            rows.iter().step_by(2).map(|s| s.to_string()).collect(),
            rows[..rows.len() / 2]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            vec![],
        ];
        ticks.push(
            rows.iter()
                .map(|r| r.replacen("00000000:00000000", "00000001:00000002", 1))
                .collect(),
        );
        let mut recorder_prev = IdSet::default();
        let mut reader: Option<TableState> = None;
        for (i, tick) in ticks.iter().enumerate() {
            let text = format!("{header}\n{}\n", tick.join("\n"));
            let cur = table_rows(&text);
            if i == 0 {
                let full = full_text(&cur);
                reader = Some(TableState::from_full_text(&full));
            } else {
                let d = diff(&recorder_prev, &cur);
                let st = reader.as_mut().unwrap();
                assert!(apply_delta(st, &d).is_empty());
            }
            let want = TableState::from_rows(&cur).identities().join("\n");
            recorder_prev = identity_set(cur);
            assert_eq!(
                reader.as_ref().unwrap().identities().join("\n"),
                want,
                "tick {i}"
            );
        }
        // The last tick changed only volatile fields: its delta is empty.
        let again = ticks[4].join("\n");
        assert_eq!(
            diff(&identity_set(table_rows(&again)), &table_rows(&again)),
            ""
        );
    }

    #[test]
    fn delta_reconstructs_shared_fixtures() {
        for rel in [
            "../../shared/testdata/proc-fixtures/prometheus-procfs/proc/net/tcp",
            "../../shared/testdata/proc-fixtures/prometheus-procfs/proc/net/tcp6",
            "../../shared/testdata/proc-fixtures/jc/net_tcp",
            "../../shared/testdata/proc-fixtures/jc/net_tcp6",
            "../../shared/testdata/proc-fixtures/nethogs/proc_net_tcp",
            "../../shared/testdata/proc-fixtures/nethogs/proc_net_udp",
            "../../shared/testdata/proc-fixtures/dissect-target/proc/net/udp6",
        ] {
            if let Some(t) = fixture(rel) {
                check_sequence(&t);
            }
        }
    }

    #[test]
    fn delta_reconstructs_local_fixtures() {
        for t in ["tcp", "tcp6", "udp", "udp6", "raw", "raw6", "icmp"] {
            if let Some(text) = fixture(&format!("testdata/proc/{t}")) {
                if table_rows(&text).rows.is_empty() {
                    continue;
                }
                check_sequence(&text);
            }
        }
    }

    #[test]
    fn bad_delta_lines_are_reported() {
        let mut st = TableState::default();
        let p = apply_delta(&mut st, "garbage\n-nothing here\n+   0: short\n");
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].line, 1);
    }

    #[test]
    fn fd_delta_reconstructs() {
        let e = |start, inodes: &[u64]| FdEntry {
            start_time: start,
            netns: 4026531840,
            status: FdStatus::Holds(inodes.to_vec()),
        };
        let s0: FdState = [(10, e(5, &[1, 2])), (11, e(6, &[3]))].into();
        let s1: FdState = [
            (10, e(5, &[1, 2, 4])),
            (
                12,
                FdEntry {
                    start_time: 7,
                    netns: 0,
                    status: FdStatus::Denied("EACCES".into()),
                },
            ),
        ]
        .into();
        // pid 10 reused by another process, 12 became readable.
        let s2: FdState = [(10, e(99, &[8])), (12, e(7, &[9]))].into();
        let mut reader = FdState::new();
        assert!(apply_fds(&mut reader, &fds_keyframe_text(&s0), true).is_empty());
        assert_eq!(reader, s0);
        for (prev, cur) in [(&s0, &s1), (&s1, &s2), (&s2, &FdState::new())] {
            let d = fds_delta_text(prev, cur);
            assert!(apply_fds(&mut reader, &d, false).is_empty());
            assert_eq!(&reader, cur);
        }
        assert_eq!(fds_delta_text(&s2, &s2), "");
        assert!(fds_delta_text(&s1, &s2).starts_with("-10 5\n"));
    }
}
