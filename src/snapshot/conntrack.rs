//! The connection-tracking side of the timeline: every conntrack entry of
//! every recorded namespace, with the times it was seen (snapshots) or
//! created and destroyed (events), and an index from each of its two
//! directions to the entry. The NAT rule of the join
//! (the attribution's `nat` module, above this one) translates a flow's wire tuple
//! through it.
//!
//! The table is applied by the format's reader (`conntrack` is a table of
//! each namespace, stored full, as a delta or unchanged) in a state of its
//! own, beside the socket tables; events are read from the
//! `conntrack.events` members.

use std::collections::HashMap;
use std::net::SocketAddr;

use procflow_format::conntrack::{self, Entry, Event, EventKind, Tuple, TABLE};
use procflow_format::delta::RowKeeper;
use procflow_format::layout::Member;
use procflow_format::reader::{ProblemKind, Snapshot, State};

use super::timeline::{see, Run};
use super::SnapshotDiagnostics;

/// Rows of the conntrack table, parsed.
#[derive(Debug, Clone, Copy)]
struct CtRows;

impl RowKeeper for CtRows {
    type Row = Entry;
    type Memo = ();
    fn keeps(&self, table: &str) -> bool {
        table == TABLE
    }
    fn row(&self, line: &str) -> Result<Option<Entry>, String> {
        conntrack::parse_line(line).map(Some).map_err(|e| e.0)
    }
}

/// Which entry a record is: namespace, protocol, both tuples, zone (status
/// and mark may change during its life).
type Key = (u64, u8, Tuple, Tuple, u16);

/// One conntrack entry and when it existed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtRecord {
    /// Namespace whose table holds it.
    pub netns: u64,
    /// The entry as last seen (status bits of all sightings or-ed).
    pub entry: Entry,
    /// When it was seen, in time order: snapshot runs, widened by its
    /// creation and destruction events.
    pub runs: Vec<Run>,
}

/// Builds the conntrack timeline snapshot by snapshot.
#[derive(Debug)]
pub struct CtBuilder {
    state: State<CtRows>,
    records: Vec<CtRecord>,
    index: HashMap<Key, usize>,
    /// Per record: events (time, kind), applied at the end.
    events: Vec<(usize, i64, EventKind)>,
}

impl Default for CtBuilder {
    fn default() -> Self {
        CtBuilder {
            state: State::new(CtRows),
            records: Vec::new(),
            index: HashMap::new(),
            events: Vec::new(),
        }
    }
}

fn key(netns: u64, e: &Entry) -> Key {
    (netns, e.proto, e.orig, e.reply, e.zone)
}

impl CtBuilder {
    fn record(&mut self, netns: u64, e: &Entry) -> usize {
        let k = key(netns, e);
        let records = &mut self.records;
        let i = *self.index.entry(k).or_insert_with(|| {
            records.push(CtRecord {
                netns,
                entry: *e,
                runs: Vec::new(),
            });
            records.len() - 1
        });
        if let Some(r) = self.records.get_mut(i) {
            r.entry.status |= e.status;
            r.entry.mark = e.mark;
        }
        i
    }

    /// Applies one complete snapshot (already applied to the socket state,
    /// read from `archive`).
    pub fn apply(&mut self, archive: &str, snap: &Snapshot, diag: &mut SnapshotDiagnostics) {
        for p in self.state.apply_tables_only(snap) {
            match p.kind {
                ProblemKind::BadLine(_) if p.more > 0 => {
                    diag.bad_lines = diag.bad_lines.saturating_add(p.more);
                }
                ProblemKind::BadLine(reason) => diag.bad_line(archive, &p.member, p.line, reason),
                ProblemKind::Mismatch(_) => {}
                other => diag.warn(format!("{archive}: {}: {other:?}", p.member)),
            }
        }
        let meta = &snap.meta;
        let (seq, t0, t1) = (meta.seq, meta.before.realtime_ns, meta.after.realtime_ns);
        let present: Vec<(u64, Entry)> = self
            .state
            .tables
            .iter()
            .flat_map(|((ns, _), st)| st.rows.values().map(move |e| (*ns, *e)))
            .collect();
        for (ns, e) in present {
            let i = self.record(ns, &e);
            if let Some(r) = self.records.get_mut(i) {
                see(&mut r.runs, seq, t0, t1, 0);
            }
        }
        let offset = meta
            .before
            .realtime_ns
            .saturating_sub(meta.before.monotonic_ns);
        for (name, m, data) in &snap.members {
            let Member::ConntrackEvents { netns, .. } = m else {
                continue;
            };
            for (n, line) in String::from_utf8_lossy(data).lines().enumerate() {
                if line.is_empty() {
                    continue;
                }
                match Event::parse(line) {
                    Ok(ev) => {
                        let i = self.record(*netns, &ev.entry);
                        self.events
                            .push((i, ev.mono_ns.saturating_add(offset), ev.kind));
                    }
                    Err(e) => diag.bad_line(archive, name, n + 1, e.0),
                }
            }
        }
    }

    /// Finishes: events widen the runs (a creation opens the entry's life,
    /// a destruction closes it: while an entry exists its tuples are its
    /// own), then the direction index is built.
    pub fn finish(mut self) -> CtTimeline {
        self.events
            .sort_unstable_by_key(|&(i, t, k)| (i, t, k == EventKind::New));
        for &(i, t, kind) in &self.events {
            let Some(r) = self.records.get_mut(i) else {
                continue;
            };
            widen(&mut r.runs, t, kind);
        }
        let mut records = self.records;
        records.sort_by(|a, b| {
            (
                a.netns,
                a.entry.proto,
                a.entry.orig,
                a.entry.reply,
                a.entry.zone,
            )
                .cmp(&(
                    b.netns,
                    b.entry.proto,
                    b.entry.orig,
                    b.entry.reply,
                    b.entry.zone,
                ))
        });
        let mut by_pair: HashMap<(u8, SocketAddr, SocketAddr), Vec<usize>> = HashMap::new();
        for (i, r) in records.iter().enumerate() {
            for t in [&r.entry.orig, &r.entry.reply] {
                if let Some(k) = pair(r.entry.proto, t) {
                    let v = by_pair.entry(k).or_default();
                    if !v.contains(&i) {
                        v.push(i);
                    }
                }
            }
        }
        CtTimeline { records, by_pair }
    }
}

/// The unordered endpoint pair of one direction (canonical addresses).
fn pair(proto: u8, t: &Tuple) -> Option<(u8, SocketAddr, SocketAddr)> {
    let s = t.src_sock()?;
    let d = t.dst_sock()?;
    let s = SocketAddr::new(s.ip().to_canonical(), s.port());
    let d = SocketAddr::new(d.ip().to_canonical(), d.port());
    Some(if s <= d { (proto, s, d) } else { (proto, d, s) })
}

/// An event at `t`: a creation starts the first run that begins after it
/// (or is a run of its own), a destruction ends the last run that begins
/// before it (or is a run of its own).
fn widen(runs: &mut Vec<Run>, t: i64, kind: EventKind) {
    let point = Run {
        start_ns: t,
        end_ns: t,
        first_seq: 0,
        last_seq: 0,
        state: 0,
    };
    match kind {
        EventKind::New => match runs.iter_mut().find(|r| r.end_ns >= t) {
            Some(r) => r.start_ns = r.start_ns.min(t),
            None => runs.push(point),
        },
        EventKind::Destroy => match runs.iter_mut().rev().find(|r| r.start_ns <= t) {
            Some(r) => r.end_ns = r.end_ns.max(t),
            None => runs.insert(0, point),
        },
    }
    runs.sort_by_key(|r| (r.start_ns, r.end_ns));
}

/// Every conntrack entry seen, with an index by direction.
#[derive(Debug, Clone, Default)]
pub struct CtTimeline {
    /// Entries, sorted by (namespace, protocol, tuples, zone).
    pub records: Vec<CtRecord>,
    by_pair: HashMap<(u8, SocketAddr, SocketAddr), Vec<usize>>,
}

impl CtTimeline {
    /// Entries one of whose directions has these two endpoints (either
    /// order), indexes into [`CtTimeline::records`].
    pub fn with_pair(&self, proto: u8, a: SocketAddr, b: SocketAddr) -> &[usize] {
        let a = SocketAddr::new(a.ip().to_canonical(), a.port());
        let b = SocketAddr::new(b.ip().to_canonical(), b.port());
        let k = if a <= b { (proto, a, b) } else { (proto, b, a) };
        self.by_pair.get(&k).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether any entry was recorded.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::timeline::tests::{build, Snap};
    use procflow_format::layout::{SnapshotKind, TableStored};

    const NS: u64 = 4026531840;
    const MASQ: &str =
        "tcp 10.77.0.2 198.18.0.2 58036 9001 198.18.0.2 198.18.0.1 9001 58036 0x19e 0 0 431999";

    /// Bad lines and bad events are counted with their member and line,
    /// the good ones kept; a delta removes by identity.
    #[test]
    fn tables_events_and_bad_lines() {
        let later = MASQ.replace(" 431999", " 5");
        let snaps = [
            Snap::new(1, 0, SnapshotKind::Keyframe).table(
                NS,
                "conntrack",
                TableStored::Full,
                format!("{MASQ}\ntcp 1.2.3.4 \u{1b}[31m\n"),
            ),
            Snap::new(2, 1000, SnapshotKind::Delta).table(
                NS,
                "conntrack",
                TableStored::Unchanged,
                String::new(),
            ),
            Snap::new(3, 2000, SnapshotKind::Delta).table(
                NS,
                "conntrack",
                TableStored::Delta,
                format!("-{}\n", conntrack::row_identity(&later).unwrap()),
            ),
        ];
        let (tl, d) = build(&snaps);
        assert_eq!(d.bad_lines, 1, "{d:?}");
        assert_eq!(d.bad_line_details[0].line, 2);
        assert_eq!(tl.conntrack.records.len(), 1);
        let r = &tl.conntrack.records[0];
        assert_eq!(
            (r.runs.len(), r.runs[0].first_seq, r.runs[0].last_seq),
            (1, 1, 2)
        );
        let a = "198.18.0.1:58036".parse().unwrap();
        let b = "198.18.0.2:9001".parse().unwrap();
        assert_eq!(tl.conntrack.with_pair(6, b, a), &[0]);
        assert!(tl.conntrack.with_pair(17, a, b).is_empty());
    }

    fn run(a: i64, b: i64) -> Run {
        Run {
            start_ns: a,
            end_ns: b,
            first_seq: 1,
            last_seq: 1,
            state: 0,
        }
    }

    #[test]
    fn events_widen_runs() {
        let mut r = vec![run(100, 200)];
        widen(&mut r, 50, EventKind::New);
        widen(&mut r, 300, EventKind::Destroy);
        assert_eq!((r[0].start_ns, r[0].end_ns), (50, 300));
        // An entry seen only through its events.
        let mut r = Vec::new();
        widen(&mut r, 10, EventKind::New);
        widen(&mut r, 20, EventKind::Destroy);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].start_ns, r[0].end_ns), (10, 20));
    }
}
