//! Keyframes and deltas: how the recorder computes them and how a reader
//! applies them to one table or one fd listing (whole snapshots are applied
//! by the reader's `State`, in module `reader`). Both directions live here so that "delta of
//! A→B applied to A gives B" is tested in one place.

use std::collections::{BTreeMap, HashMap};

use crate::layout::{
    format_delta_line, parse_delta_line, row_identity, table_row_identity, DeltaLine, FdLine,
};
use crate::procfs::{FastSet, TableRows};

/// How a reader keeps what it applies: which tables, what a raw row
/// becomes, and what it notes beside each fd entry. The application itself
/// (which rows go, which stay) is the same for every reader; see the
/// reader's `State` (module `reader`, which builds on this one).
pub trait RowKeeper {
    /// What one table row is kept as.
    type Row;
    /// The reader's own note on each fd entry (e.g. indexes into its own
    /// tables); reset to its default whenever a line changes the entry.
    type Memo: Default;
    /// Whether rows of `table` are kept at all; a table not kept is neither
    /// parsed nor part of the state.
    fn keeps(&self, table: &str) -> bool {
        let _ = table;
        true
    }
    /// The row of one line of a full table member or of one `+` delta line:
    /// `Ok(None)` for a line that is no row (the header), `Err` saying what
    /// is wrong for a line that cannot be used.
    fn row(&self, line: &str) -> Result<Option<Self::Row>, String>;
    /// The row of one line of `table`; [`RowKeeper::row`] unless a keeper
    /// keeps tables of different kinds (the conntrack table's lines are not
    /// /proc/net rows).
    fn row_in(&self, table: &str, line: &str) -> Result<Option<Self::Row>, String> {
        let _ = table;
        self.row(line)
    }
}

/// Rows kept as the kernel printed them.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawRows;

impl RowKeeper for RawRows {
    type Row = String;
    type Memo = ();
    fn row_in(&self, table: &str, line: &str) -> Result<Option<String>, String> {
        if table != crate::conntrack::TABLE {
            return self.row(line);
        }
        match crate::conntrack::parse_line(line) {
            Ok(_) => Ok(Some(line.to_string())),
            Err(e) => Err(e.0),
        }
    }
    fn row(&self, line: &str) -> Result<Option<String>, String> {
        if row_identity(line).is_some() {
            return Ok(Some(line.to_string()));
        }
        match line.split_ascii_whitespace().next() {
            Some("sl" | "sk") => Ok(None),
            _ => Err("neither header nor row (fewer than 10 fields)".into()),
        }
    }
}

/// The rows of one /proc/net table, keyed by [`row_identity`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableState<R = String> {
    /// identity -> the row as kept, first seen with that identity.
    pub rows: HashMap<String, R>,
}

impl<R> Default for TableState<R> {
    fn default() -> Self {
        TableState {
            rows: HashMap::new(),
        }
    }
}

impl TableState {
    /// Builds the state of a freshly read table.
    pub fn from_rows(t: &TableRows<'_>) -> TableState {
        TableState {
            rows: t
                .rows
                .iter()
                .map(|(id, row)| (id.clone(), (*row).to_string()))
                .collect(),
        }
    }
}

impl<R> TableState<R> {
    /// Builds the state from the text of a full table member: rows keyed by
    /// identity, first occurrence kept (a table read while it changes can
    /// repeat a row). Returns the lines that could not be used.
    pub fn from_full_text<K: RowKeeper<Row = R>>(
        keeper: &K,
        table: &str,
        text: &str,
    ) -> (TableState<R>, Vec<ApplyProblem>) {
        let mut st = TableState::default();
        let mut problems = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            if let Err(what) = st.add(keeper, table, line) {
                push_bounded(&mut problems, ApplyProblem::unusable(i + 1, what));
            }
        }
        (st, problems)
    }

    /// Adds one raw row unless its identity is present already.
    fn add<K: RowKeeper<Row = R>>(
        &mut self,
        keeper: &K,
        table: &str,
        line: &str,
    ) -> Result<(), String> {
        let Some(row) = keeper.row_in(table, line)? else {
            return Ok(());
        };
        let id = table_row_identity(table, line).ok_or("row has no identity (too few fields)")?;
        self.rows.entry(id).or_insert(row);
        Ok(())
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
    /// The line is well-formed but does not fit the state it applies to (a
    /// removal of a row not present, `-PID START` naming another process):
    /// often the echo of an earlier unusable line, so a reader counting
    /// unusable lines need not count it again.
    pub mismatch: bool,
    /// Unusable lines past the first [`MAX_PROBLEMS_PER_MEMBER`] that this
    /// entry, the last, stands for without their details (0 otherwise): a
    /// member of junk lines costs a count, not a list.
    pub more: u64,
}

/// Problems listed with details per member; the unusable lines past them
/// are counted in the last entry ([`ApplyProblem::more`]), the mismatches
/// past them dropped (echoes of unusable lines).
pub const MAX_PROBLEMS_PER_MEMBER: usize = 100;

/// Adds `p` to `problems`, keeping at most [`MAX_PROBLEMS_PER_MEMBER`]
/// with details and counting the unusable lines past them.
pub fn push_bounded(problems: &mut Vec<ApplyProblem>, p: ApplyProblem) {
    if problems.len() < MAX_PROBLEMS_PER_MEMBER {
        problems.push(p);
        return;
    }
    if p.mismatch {
        return;
    }
    match problems.last_mut() {
        Some(last) if last.line == 0 && last.more > 0 => last.more += 1,
        _ => problems.push(ApplyProblem {
            line: 0,
            what: "more unusable lines, not listed".into(),
            mismatch: false,
            more: 1,
        }),
    }
}

impl ApplyProblem {
    fn unusable(line: usize, what: impl Into<String>) -> ApplyProblem {
        ApplyProblem {
            line,
            what: what.into(),
            mismatch: false,
            more: 0,
        }
    }

    fn mismatch(line: usize, what: String) -> ApplyProblem {
        ApplyProblem {
            line,
            what,
            mismatch: true,
            more: 0,
        }
    }
}

/// Applies a `.delta` member to a table state: `-IDENTITY` removes, `+ROW`
/// adds by identity.
pub fn apply_delta<K: RowKeeper>(
    state: &mut TableState<K::Row>,
    keeper: &K,
    table: &str,
    text: &str,
) -> Vec<ApplyProblem> {
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        match parse_delta_line(line) {
            Some(DeltaLine::Remove(id)) if !identity_well_formed(table, id) => {
                push_bounded(
                    &mut problems,
                    ApplyProblem::unusable(
                        i + 1,
                        "malformed removal: expected `-LOCAL REMOTE STATE UID INODE`",
                    ),
                );
            }
            Some(DeltaLine::Remove(id)) => {
                if state.rows.remove(id).is_none() {
                    push_bounded(
                        &mut problems,
                        ApplyProblem::mismatch(
                            i + 1,
                            format!("removal of a row not in the state: {id}"),
                        ),
                    );
                }
            }
            Some(DeltaLine::Add(row)) => {
                if let Err(what) = state.add(keeper, table, row) {
                    push_bounded(&mut problems, ApplyProblem::unusable(i + 1, what));
                }
            }
            None => push_bounded(
                &mut problems,
                ApplyProblem::unusable(i + 1, "delta line starts with neither `+` nor `-`"),
            ),
        }
    }
    problems
}

/// Whether a removal's identity has the shape [`crate::layout::row_identity`]
/// gives (`HEX:HEX HEX:HEX HEX UID INODE`); for the conntrack table, any
/// non-empty text. A malformed removal is an unusable line, counted, not
/// a row that merely was not there.
fn identity_well_formed(table: &str, id: &str) -> bool {
    if table == crate::conntrack::TABLE {
        return !id.trim().is_empty();
    }
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    let endpoint = |s: &str| s.split_once(':').is_some_and(|(a, p)| hex(a) && hex(p));
    let f: Vec<&str> = id.split_ascii_whitespace().collect();
    matches!(f.as_slice(), [l, r, st, uid, inode]
        if endpoint(l) && endpoint(r) && hex(st)
            && uid.parse::<u64>().is_ok() && inode.parse::<u64>().is_ok())
}

/// What the fd listing says about one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FdStatus {
    /// The socket inodes it holds (sorted, deduplicated, never empty in a
    /// state).
    Holds(Vec<u64>),
    /// Its fd directory could not be read; the errno name.
    Denied(String),
}

/// One process in the fd state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdEntry<M = ()> {
    /// Start time in clock ticks since boot.
    pub start_time: u64,
    /// Network namespace inode (0 when unknown, for denied entries).
    pub netns: u64,
    /// Sockets held, or why unknown.
    pub status: FdStatus,
    /// The reader's note on this entry (see [`RowKeeper::Memo`]); not part
    /// of the format.
    pub memo: M,
}

/// Which processes hold which socket inodes, keyed by pid (a pid is one
/// process at a time; its start time tells reuse apart).
pub type FdState<M = ()> = BTreeMap<u32, FdEntry<M>>;

/// Applies one fd line to `state`: `Holds` replaces the pid's entry (an
/// empty set removes it), `Gone` removes it, `Denied` marks it unknown.
/// Returns what is wrong when the line does not fit the state.
pub fn apply_fd_line<M: Default>(state: &mut FdState<M>, line: FdLine) -> Option<String> {
    match line {
        FdLine::Holds {
            pid,
            start_time,
            netns,
            mut inodes,
        } => {
            if inodes.is_empty() {
                state.remove(&pid);
            } else {
                inodes.sort_unstable();
                inodes.dedup();
                state.insert(
                    pid,
                    FdEntry {
                        start_time,
                        netns,
                        status: FdStatus::Holds(inodes),
                        memo: M::default(),
                    },
                );
            }
        }
        FdLine::Gone { pid, start_time } => match state.get(&pid) {
            Some(e) if e.start_time != start_time => {
                return Some(format!(
                    "pid {pid} started at {start_time} is gone, but the pid known is the \
                     process started at {}; kept",
                    e.start_time
                ))
            }
            _ => {
                state.remove(&pid);
            }
        },
        FdLine::Denied {
            pid,
            start_time,
            error,
        } => {
            // A denied line carries no namespace: the recorder could not
            // read the process' links, its ns/net link included.
            state.insert(
                pid,
                FdEntry {
                    start_time,
                    netns: 0,
                    status: FdStatus::Denied(error),
                    memo: M::default(),
                },
            );
        }
    }
    None
}

/// Applies an `fds` member. A keyframe's listing replaces the state; a
/// delta's lines change it line by line.
pub fn apply_fds<M: Default>(
    state: &mut FdState<M>,
    text: &str,
    keyframe: bool,
) -> Vec<ApplyProblem> {
    if keyframe {
        state.clear();
    }
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        match FdLine::parse(line) {
            Some(l) => {
                if let Some(what) = apply_fd_line(state, l) {
                    push_bounded(&mut problems, ApplyProblem::mismatch(i + 1, what));
                }
            }
            None => push_bounded(
                &mut problems,
                ApplyProblem::unusable(
                    i + 1,
                    "expected `PID START NETNS INODES`, `-PID START` or `!PID START ERROR`",
                ),
            ),
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

    /// A fixture file relative to the repository root; fails under CI
    /// when absent.
    fn fixture(rel: &str) -> Option<String> {
        let path = format!("{}/../{rel}", env!("CARGO_MANIFEST_DIR"));
        match std::fs::read_to_string(&path) {
            Ok(t) => Some(t),
            Err(e) => {
                crate::test_common::missing(&format!("{path}: {e}"));
                None
            }
        }
    }

    /// Builds a sequence of tables by removing and re-adding rows of a real
    /// table, then checks keyframe + deltas give exactly each tick's set.
    /// Returns the number of rows of the table, so callers can assert a
    /// fixture really held some.
    fn check_sequence(text: &str) -> usize {
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
                let (st, problems) = TableState::from_full_text(&RawRows, "tcp", &full);
                assert!(problems.is_empty(), "{problems:?}");
                reader = Some(st);
            } else {
                let d = diff(&recorder_prev, &cur);
                let st = reader.as_mut().unwrap();
                assert!(apply_delta(st, &RawRows, "tcp", &d).is_empty());
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
        rows.len()
    }

    #[test]
    fn delta_reconstructs_shared_fixtures() {
        let Some(root) = crate::test_common::shared_testdata() else {
            return;
        };
        let mut checked = Vec::new();
        for rel in [
            "prometheus-procfs/proc/net/tcp",
            "prometheus-procfs/proc/net/tcp6",
            "jc/net_tcp",
            "jc/net_tcp6",
            "nethogs/proc_net_tcp",
            "nethogs/proc_net_udp",
            "dissect-target/proc/net/udp6",
        ] {
            let path = root.join("proc-fixtures").join(rel);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let rows = check_sequence(&text);
            assert!(rows > 0, "{rel}: no socket rows");
            checked.push(rel);
        }
        assert_eq!(checked.len(), 7);
    }

    #[test]
    fn delta_reconstructs_local_fixtures() {
        let mut rows = 0;
        for t in ["tcp", "tcp6", "udp", "udp6", "raw", "raw6", "icmp"] {
            let Some(text) = fixture(&format!("snapshot-tool/testdata/proc/{t}")) else {
                return;
            };
            if table_rows(&text).rows.is_empty() {
                continue;
            }
            rows += check_sequence(&text);
        }
        // tcp and udp of the recording host are never empty.
        assert!(rows >= 2, "only {rows} rows in the local fixtures");
    }

    #[test]
    fn bad_delta_lines_are_reported() {
        let mut st = TableState::default();
        let p = apply_delta(
            &mut st,
            &RawRows,
            "tcp",
            "garbage\n-nothing here\n+   0: short\n",
        );
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].line, 1);
        // A malformed removal is unusable (counted as a bad line); a
        // well-formed one for a row not there is only a mismatch.
        assert!(!p[1].mismatch, "{:?}", p[1]);
        let p = apply_delta(
            &mut st,
            &RawRows,
            "tcp",
            "-0100007F:0277 00000000:0000 0A 0 21357\n",
        );
        assert_eq!(p.len(), 1);
        assert!(p[0].mismatch, "{:?}", p[0]);
    }

    #[test]
    fn fd_delta_reconstructs() {
        let e = |start, inodes: &[u64]| FdEntry {
            start_time: start,
            netns: 4026531840,
            status: FdStatus::Holds(inodes.to_vec()),
            memo: (),
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
                    memo: (),
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
