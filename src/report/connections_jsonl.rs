//! `connections.jsonl`: the rows of `connections.csv` as one JSON object per
//! line with Elastic Common Schema names (flat dotted keys), plus the
//! `message` / `datetime` / `timestamp_desc` trio Timesketch imports.
//!
//! `source` is the initiator (flow end `a`), `destination` the responder,
//! as in ECS; `network.direction` says which of them is the host.

use std::io::{self, Write};

use serde_json::{json, Map, Value};

use super::{
    confidence, row_args, row_cmdline, row_text, ConnectionRow, ReportInput, ReportWriter,
    ROW_TEXT_MAX,
};
use crate::flow::proto_name;

/// Writer of `connections.jsonl`.
pub struct ConnectionsJsonl<'a>(pub &'a ReportInput<'a>);

fn ecs_direction(r: &ConnectionRow) -> &'static str {
    match (r.attribution.both_local, r.attribution.local_is_a) {
        (true, _) => "internal",
        (false, Some(true)) => "outbound",
        (false, Some(false)) => "inbound",
        (false, None) => "external",
    }
}

/// The JSON object of one row.
pub fn row_object(input: &ReportInput<'_>, r: &ConnectionRow) -> Map<String, Value> {
    let f = &r.flow;
    let a = &r.attribution;
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        if !v.is_null() && v != json!("") {
            m.insert(k.to_string(), v);
        }
    };
    let text = |s: &str| row_text(s, ROW_TEXT_MAX).into_owned();
    let who = match (a.owner, &r.process, &r.event_comm) {
        (Some(o), Some(p), _) => format!("{}[{}]", text(&p.comm), o.pid),
        (Some(o), None, Some(c)) => format!("{}[{}]", text(c), o.pid),
        (Some(o), None, None) => format!("pid {}", o.pid),
        (None, _, _) => "no process".to_string(),
    };
    let ep = |ip: std::net::IpAddr, port: Option<u16>| match port {
        Some(p) if ip.is_ipv6() => format!("[{ip}]:{p}"),
        Some(p) => format!("{ip}:{p}"),
        None => ip.to_string(),
    };
    put(
        "message",
        json!(format!(
            "{} {} -> {} by {} ({}), {} bytes",
            proto_name(f.proto),
            ep(f.a_ip, f.a_port),
            ep(f.b_ip, f.b_port),
            who,
            a.method.name(),
            f.bytes_ab + f.bytes_ba
        )),
    );
    put("datetime", json!(super::rfc3339_ns(f.first_seen_ns)));
    put("timestamp_desc", json!("Flow first seen"));
    put("event.start", json!(super::rfc3339_ns(f.first_seen_ns)));
    put("event.end", json!(super::rfc3339_ns(f.last_seen_ns)));
    put(
        "event.duration",
        json!(f.last_seen_ns.saturating_sub(f.first_seen_ns)),
    );
    put("source.ip", json!(f.a_ip.to_string()));
    put("source.port", json!(f.a_port));
    put("source.packets", json!(f.packets_ab));
    put("source.bytes", json!(f.bytes_ab));
    put("destination.ip", json!(f.b_ip.to_string()));
    put("destination.port", json!(f.b_port));
    put("destination.packets", json!(f.packets_ba));
    put("destination.bytes", json!(f.bytes_ba));
    put("network.transport", json!(proto_name(f.proto)));
    put("network.type", json!(f.family.as_str()));
    put("network.iana_number", json!(f.proto.to_string()));
    put("network.direction", json!(ecs_direction(r)));
    put("network.bytes", json!(f.bytes_ab + f.bytes_ba));
    put("network.packets", json!(f.packets_ab + f.packets_ba));
    put("network.community_id", json!(r.community_id));
    if let Some(o) = a.owner {
        put("process.pid", json!(o.pid));
        put("process.start", json!(r.process_start));
        put("process.entity_id", json!(r.entity_id));
        if let Some(p) = &r.process {
            put("process.ppid", json!(p.ppid));
            put("process.parent.pid", json!(p.ppid));
            put("process.name", json!(text(&p.comm)));
            put("process.executable", json!(p.exe.as_deref().map(text)));
            // A long command line is cut (docs/report-schema.md): the
            // hash and the count of arguments say so.
            let (line, sha256) = row_cmdline(&p.cmdline);
            put("process.command_line", json!(line));
            let (args, cut) = row_args(&p.cmdline);
            put("process.args", json!(args));
            if cut {
                put("process.args_count", json!(p.cmdline.len()));
            }
            put("procflow.command_line_sha256", json!(sha256));
            put("user.id", json!(p.uid.to_string()));
            put("container.id", json!(p.container_id.as_deref().map(text)));
        } else if let Some(c) = &r.event_comm {
            put("process.name", json!(text(c)));
        }
    }
    put("host.name", json!(input.manifest.host.hostname));
    put("host.os.kernel", json!(input.manifest.host.kernel_release));
    put("host.boot.id", json!(input.manifest.host.boot_id));
    put("procflow.flow_id", json!(f.id));
    put("procflow.method", json!(a.method.name()));
    put("procflow.confidence", json!(confidence(a)));
    put("procflow.time_gap_ms", json!(r.time_gap_ms()));
    put("procflow.shared_with", json!(r.shared_with()));
    put("procflow.netns", json!(r.netns()));
    put("procflow.inode", json!(a.socket.map(|s| s.inode)));
    put("procflow.socket_state", json!(r.socket_state()));
    put("procflow.direction", json!(r.direction()));
    put("procflow.note", json!(super::notes_text(a)));
    put("procflow.parent_flow_id", json!(a.parent_flow_id));
    if let Some(n) = &r.name {
        // ECS: the name belongs to the end it names.
        let end = if r.local_is_a {
            "destination"
        } else {
            "source"
        };
        if !n.name.is_empty() {
            put(&format!("{end}.domain"), json!(n.name));
        }
        put("tls.client.server_name", json!(n.server_name));
        put("tls.client.ja4", json!(n.ja4));
        put("procflow.remote_name", json!(n.name));
        put(
            "procflow.remote_name_source",
            json!(n.source.map(|s| s.as_str())),
        );
        put("procflow.remote_name_other", json!(n.other));
        put("procflow.resolved_by.pid", json!(n.resolved_by_pid));
        put(
            "procflow.resolved_by.name",
            json!(n.resolved_by_comm.as_deref().map(text)),
        );
        put(
            "procflow.resolved_at",
            json!(n.dns.map(|(_, t)| super::rfc3339_ns(t))),
        );
    }
    if let Some(n) = a.nat.as_deref() {
        put("procflow.nat", json!(n.kind.as_str()));
        put("procflow.nat_local.ip", json!(n.local.ip().to_string()));
        put("procflow.nat_local.port", json!(n.local.port()));
        put("procflow.nat_remote.ip", json!(n.remote.ip().to_string()));
        put("procflow.nat_remote.port", json!(n.remote.port()));
    }
    if let Some(p) = &a.peer {
        // Both ends local: the process at the other end.
        put("procflow.peer.method", json!(p.method.name()));
        put(
            "procflow.peer.confidence",
            json!(p.confidence().map(|c| c.as_str())),
        );
        if let Some(o) = p.owner {
            put("procflow.peer.process.pid", json!(o.pid));
            put("procflow.peer.process.start_ticks", json!(o.start_time));
        }
        if let Some(pp) = &r.peer_process {
            put("procflow.peer.process.name", json!(text(&pp.comm)));
            let (line, sha256) = row_cmdline(&pp.cmdline);
            put("procflow.peer.process.command_line", json!(line));
            put("procflow.peer.process.command_line_sha256", json!(sha256));
        }
        let [pin, pout, bin, bout, _, _] = r.peer_counters();
        put("procflow.peer.packets_in", json!(pin));
        put("procflow.peer.packets_out", json!(pout));
        put("procflow.peer.bytes_in", json!(bin));
        put("procflow.peer.bytes_out", json!(bout));
    }
    m
}

impl ReportWriter for ConnectionsJsonl<'_> {
    fn file_name(&self) -> &'static str {
        "connections.jsonl"
    }

    fn write(&self, out: &mut dyn Write) -> io::Result<()> {
        // Each line is serialized whole, then written once: serde writes
        // many small pieces, each a call through `dyn Write`.
        let mut line = Vec::new();
        for r in &self.0.rows {
            line.clear();
            let obj = Value::Object(row_object(self.0, r));
            serde_json::to_writer(&mut line, &obj)?;
            line.push(b'\n');
            out.write_all(&line)?;
        }
        Ok(())
    }
}
