//! A capture's own process annotations as evidence: ptcpdump writes, on
//! every packet, a comment naming the process (`PID: 1234\nCmd: ...`);
//! replay collects them per flow ([`crate::capture::FlowAnnotation`]), and
//! here they are checked against the attribution from the snapshots.
//!
//! - Same pid as the snapshots' owner: the flow's method becomes
//!   `capture-annotation`, confidence `high` (two independent sources
//!   agree); the matched socket is kept.
//! - The snapshots found no owner: the annotated pid is the owner when the
//!   recorder saw a process of that pid started before the flow ended
//!   (`capture-annotation`, confidence `medium`).
//! - A different owner: the snapshots' attribution stays, and the
//!   disagreement is reported (a warning, `summary.json`).

use serde::Serialize;

use crate::attribute::{Attribution, Method, ProcKey};
use crate::capture::FlowAnnotation;
use crate::flow::Flow;
use crate::report::process_start_ns;
use crate::snapshot::timeline::Timeline;
use procflow_format::layout::Manifest;

/// One flow whose annotation and snapshots name different processes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disagreement {
    /// The report row's flow id.
    pub flow_id: u64,
    /// The pid the capture names.
    pub annotated_pid: u32,
    /// Its command, as annotated (unescaped).
    pub annotated_cmd: String,
    /// The pid the snapshots name.
    pub snapshot_pid: u32,
}

/// What the annotations did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AnnotationCheck {
    /// Report rows whose packets carry annotations.
    pub flows: usize,
    /// Rows where the annotation and the snapshots name the same pid.
    pub agree: usize,
    /// Rows attributed from the annotation alone.
    pub from_annotation: usize,
    /// Rows whose annotated pid the recorder never saw (left as they were).
    pub unknown_process: usize,
    /// Rows where the two disagree (the snapshots' owner is kept).
    pub disagree: Vec<Disagreement>,
}

/// Applies the annotations to the attributions (rows `i` of `flows` and
/// `atts` go together; a part of a flow cut between owners takes its
/// parent's annotation).
pub fn apply(
    tl: &Timeline,
    manifest: &Manifest,
    annotations: &[FlowAnnotation],
    flows: &[Flow],
    atts: &mut [Attribution],
) -> AnnotationCheck {
    let mut check = AnnotationCheck::default();
    if annotations.is_empty() {
        return check;
    }
    let by_flow: std::collections::HashMap<u64, &FlowAnnotation> =
        annotations.iter().map(|a| (a.flow_id, a)).collect();
    for (f, a) in flows.iter().zip(atts.iter_mut()) {
        let Some(ann) = by_flow
            .get(&f.id)
            .or_else(|| a.parent_flow_id.and_then(|p| by_flow.get(&p)))
        else {
            continue;
        };
        check.flows += 1;
        match a.owner {
            Some(o) if o.pid == ann.pid => {
                a.method = Method::CaptureAnnotation;
                // The capture's per-packet names are more than holder
                // evidence.
                a.notes
                    .retain(|n| !matches!(n, crate::attribute::Note::HolderOnly { .. }));
                check.agree += 1;
            }
            Some(o) => check.disagree.push(Disagreement {
                flow_id: f.id,
                annotated_pid: ann.pid,
                annotated_cmd: ann.cmd.clone(),
                snapshot_pid: o.pid,
            }),
            None => {
                // The youngest process of that pid started before the flow
                // ended.
                let start = tl
                    .processes
                    .keys()
                    .filter(|(pid, st)| {
                        *pid == ann.pid && process_start_ns(manifest, *st) <= f.last_seen_ns
                    })
                    .map(|(_, st)| *st)
                    .max();
                match start {
                    Some(start_time) => {
                        a.owner = Some(ProcKey {
                            pid: ann.pid,
                            start_time,
                        });
                        a.method = Method::CaptureAnnotation;
                        a.socket = None;
                        check.from_annotation += 1;
                    }
                    None => check.unknown_process += 1,
                }
            }
        }
    }
    check
}
