//! The warnings of `analyze`: problems that do not prevent a result (a bad
//! packet, a cut archive, a clock step, an owner without a process
//! record...). Each is one [`Warning`] carrying its data and worded once,
//! by [`Warning::message`]; the terminal (`procflow: warning: ...`),
//! report.html's evidence block and `summary.json`'s `warnings` array all
//! show that same sentence, with [`Warning::kind`] naming it in
//! `summary.json`.
//!
//! Strings from the bundle or the capture (paths, member names, process
//! names, remote names) are escaped in the message by
//! [`crate::hostile::term`]: a message is safe for a terminal as it is.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::{json, Value};

use crate::capture::Problem;
use crate::hostile::{term, visible};
use crate::snapshot::{BadLine, CutArchive};

/// Disagreements between the capture's annotations and the snapshots
/// warned about one by one; the rest are counted in one more warning.
pub const MAX_ANNOTATION_WARNINGS: usize = 20;

/// Owner pids without a process record named in their warning.
const MAX_NAMELESS_SHOWN: usize = 10;

/// Characters of a message kept in report.html and `summary.json` (a
/// longer one is cut there, with a trailing `…`); the terminal shows it
/// whole.
pub const MAX_REPORT_MESSAGE: usize = 1024;

/// One warning of `analyze`, with its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// A bad packet, a damaged record or an unreadable capture file (the
    /// first few of each file).
    CaptureProblem(Problem),
    /// All capture problems counted per kind (names as in
    /// `diagnostics.capture.problem_counts`).
    CaptureProblemCounts(BTreeMap<String, u64>),
    /// An archive read only up to its last complete snapshot.
    ArchiveCut(CutArchive),
    /// A warning of the snapshot reader, already one sentence
    /// (`diagnostics.warnings`): a delta without base, a missing member...
    Snapshot(String),
    /// Unusable /proc or listing lines: how many, and the first.
    BadLines {
        /// How many.
        count: u64,
        /// The first one.
        first: Option<BadLine>,
    },
    /// The captures hold no IP flow.
    NoIpFlow,
    /// Socket events of a kind, protocol or address the analyzer cannot
    /// use, skipped.
    UnusableEvents(u64),
    /// The realtime clock stepped by 100 ms or more between two snapshots.
    ClockStep {
        /// The step, ns (negative: backwards).
        step_ns: i64,
        /// The snapshot after the step.
        seq: u64,
    },
    /// A flow whose capture annotation names another pid than the
    /// snapshots (one of the first [`MAX_ANNOTATION_WARNINGS`]).
    AnnotationDisagrees {
        /// The flow.
        flow_id: u64,
        /// The pid its annotations name.
        annotated_pid: u32,
        /// That pid's command, as annotated (unescaped).
        annotated_cmd: String,
        /// The owner the snapshots give it.
        snapshot_pid: u32,
    },
    /// How many more flows than [`MAX_ANNOTATION_WARNINGS`] have such a
    /// disagreement.
    MoreAnnotationDisagreements(usize),
    /// Rows whose remote name sources disagree.
    NameConflicts {
        /// How many rows.
        flows: u64,
        /// The first: its flow id.
        flow_id: u64,
        /// The first: the name kept in `remote_name`.
        name: String,
        /// The first: the other name.
        other: String,
    },
    /// DNS flows answered by a server that no recorded resolv.conf of the
    /// asking namespace names.
    UnlistedDnsServer {
        /// How many flows.
        flows: u64,
        /// The first: its flow id.
        flow_id: u64,
        /// The first: the server.
        server: IpAddr,
        /// The first: the asking network namespace (inode).
        netns: u64,
    },
    /// The manifest says `host.clk_tck` is 0.
    ClkTckZero,
    /// Owner pids (sorted, distinct) named by an fd listing but without a
    /// process record.
    OwnersWithoutProcess(Vec<u32>),
}

impl Warning {
    /// Stable name of the warning's kind, as in `summary.json`.
    pub fn kind(&self) -> &'static str {
        match self {
            Warning::CaptureProblem(_) => "capture-problem",
            Warning::CaptureProblemCounts(_) => "capture-problem-counts",
            Warning::ArchiveCut(_) => "archive-cut",
            Warning::Snapshot(_) => "snapshot",
            Warning::BadLines { .. } => "proc-bad-lines",
            Warning::NoIpFlow => "no-ip-flow",
            Warning::UnusableEvents(_) => "unusable-events",
            Warning::ClockStep { .. } => "clock-step",
            Warning::AnnotationDisagrees { .. } => "annotation-disagrees",
            Warning::MoreAnnotationDisagreements(_) => "annotation-disagrees-more",
            Warning::NameConflicts { .. } => "name-conflict",
            Warning::UnlistedDnsServer { .. } => "unlisted-dns-server",
            Warning::ClkTckZero => "clk-tck-zero",
            Warning::OwnersWithoutProcess(_) => "owner-without-process",
        }
    }

    /// The warning in one sentence, strings from the bundle escaped.
    pub fn message(&self) -> String {
        match self {
            Warning::CaptureProblem(p) => term(&p.to_string()).into_owned(),
            Warning::CaptureProblemCounts(counts) => {
                let kinds: Vec<String> = counts
                    .iter()
                    .map(|(k, n)| format!("{} {n}", term(k)))
                    .collect();
                format!("capture problems: {}", kinds.join(", "))
            }
            Warning::ArchiveCut(c) => format!(
                "{}: archive cut at byte offset {} of {} ({}); read up to {}",
                term(&c.archive),
                c.offset,
                c.size,
                term(&c.reason),
                c.last_complete_seq
                    .map_or("no complete snapshot".to_string(), |s| format!(
                        "snapshot {s}"
                    ))
            ),
            Warning::Snapshot(s) => term(s).into_owned(),
            Warning::BadLines { count, first } => format!(
                "{count} unusable /proc or listing line(s){}",
                first.as_ref().map_or(String::new(), |b| format!(
                    ", first: {} {} line {}: {}",
                    term(&b.archive),
                    term(&b.member),
                    b.line,
                    term(&b.reason)
                ))
            ),
            Warning::NoIpFlow => "the captures hold no IP flow".to_string(),
            Warning::UnusableEvents(n) => format!(
                "{n} socket event(s) of a kind, protocol or address this analyzer cannot use \
                 were skipped"
            ),
            Warning::ClockStep { step_ns, seq } => format!(
                "the realtime clock stepped by {:.3} s before snapshot {seq}; \
                 times near it may be off by that much",
                *step_ns as f64 / 1e9
            ),
            Warning::AnnotationDisagrees {
                flow_id,
                annotated_pid,
                annotated_cmd,
                snapshot_pid,
            } => format!(
                "flow {flow_id}: the capture's annotation names pid {annotated_pid} ({}), the \
                 snapshots pid {snapshot_pid}; the snapshots' owner is kept",
                term(annotated_cmd)
            ),
            Warning::MoreAnnotationDisagreements(n) => format!(
                "{n} more flows where the capture's annotation and the snapshots disagree \
                 (summary.json)"
            ),
            Warning::NameConflicts {
                flows,
                flow_id,
                name,
                other,
            } => format!(
                "{flows} flow(s) whose remote name sources disagree (first: flow {flow_id}, {} \
                 but {}); both are kept in remote_name and remote_name_other",
                term(name),
                term(other)
            ),
            Warning::UnlistedDnsServer {
                flows,
                flow_id,
                server,
                netns,
            } => format!(
                "{flows} DNS flow(s) got answers from a server that no recorded resolv.conf of \
                 the asking namespace names (first: flow {flow_id}, server {server}, namespace \
                 {netns}): a program with its own resolver, or a hijacked resolution"
            ),
            Warning::ClkTckZero => "the manifest says host.clk_tck is 0: process start times \
                                    (clock ticks) cannot be turned into times; process_start \
                                    is left empty"
                .to_string(),
            Warning::OwnersWithoutProcess(pids) => {
                let shown: Vec<String> = pids
                    .iter()
                    .take(MAX_NAMELESS_SHOWN)
                    .map(u32::to_string)
                    .collect();
                format!(
                    "{} owner pid(s) have no process record in the bundle (no comm, exe or \
                     command line): {}{}",
                    pids.len(),
                    shown.join(", "),
                    if pids.len() > MAX_NAMELESS_SHOWN {
                        ", ..."
                    } else {
                        ""
                    }
                )
            }
        }
    }

    /// The message as report.html and `summary.json` show it: cut to
    /// [`MAX_REPORT_MESSAGE`] characters and a trailing `…`.
    pub fn report_message(&self) -> String {
        visible(&self.message(), MAX_REPORT_MESSAGE)
    }

    /// The `summary.json` entry: `{ "kind": ..., "message": ... }`.
    pub fn to_json(&self) -> Value {
        json!({ "kind": self.kind(), "message": self.report_message() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_strings_are_escaped() {
        let w = Warning::NameConflicts {
            flows: 1,
            flow_id: 7,
            name: "a\x1b[31m.example".into(),
            other: "b\u{202e}.example".into(),
        };
        let m = w.message();
        assert!(!m.contains('\x1b') && !m.contains('\u{202e}'), "{m}");
        assert!(m.contains("\\x1b") && m.contains("\\u{202e}"), "{m}");
        let s = Warning::Snapshot("member\nx\u{2028}y".into()).message();
        assert!(!s.contains('\n') && !s.contains('\u{2028}'), "{s}");
    }

    #[test]
    fn report_message_is_bounded() {
        let w = Warning::Snapshot("x".repeat(10_000));
        assert!(w.message().chars().count() == 10_000);
        assert_eq!(w.report_message().chars().count(), MAX_REPORT_MESSAGE + 1);
        assert!(w.report_message().ends_with('…'));
        assert_eq!(w.to_json()["kind"], "snapshot");
    }

    #[test]
    fn owners_without_process_shows_ten() {
        let w = Warning::OwnersWithoutProcess((1..=12).collect());
        assert_eq!(
            w.message(),
            "12 owner pid(s) have no process record in the bundle (no comm, exe or command \
             line): 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, ..."
        );
    }
}
