//! `processes.csv`: one row per process (pid + start time) that owns at
//! least one flow, then one row per unattribution reason, so that the
//! byte and packet columns add up to the whole capture.

use std::io::{self, Write};

use super::{rfc3339_ns, shell_join, ReportInput, ReportWriter};

/// The columns of `processes.csv`, in order.
pub const PROCESS_COLUMNS: [&str; 19] = [
    "pid",
    "process_start",
    "ppid",
    "uid",
    "comm",
    "exe",
    "cmdline",
    "connections",
    "packets_in",
    "packets_out",
    "bytes_in",
    "bytes_out",
    "first_seen",
    "last_seen",
    "process_start_ticks",
    "entity_id",
    "ip_bytes_in",
    "ip_bytes_out",
    "container_id",
];

/// Writer of `processes.csv`.
pub struct ProcessesCsv<'a>(pub &'a ReportInput<'a>);

impl ReportWriter for ProcessesCsv<'_> {
    fn file_name(&self) -> &'static str {
        "processes.csv"
    }

    fn write(&self, out: &mut dyn Write) -> io::Result<()> {
        let mut w = csv::Writer::from_writer(out);
        w.write_record(PROCESS_COLUMNS)?;
        for r in self.0.process_rows() {
            let p = r.process.as_ref();
            let opt = |v: Option<String>| v.unwrap_or_default();
            let [pin, pout, bin, bout, ipin, ipout] = r.counters;
            let comm = match r.owner {
                Some(_) => opt(p.map(|p| p.comm.clone())),
                None => r.method.name(),
            };
            w.write_record([
                opt(r.owner.map(|o| o.pid.to_string())),
                r.process_start.clone(),
                opt(p.map(|p| p.ppid.to_string())),
                opt(p.map(|p| p.uid.to_string())),
                comm,
                opt(p.and_then(|p| p.exe.clone())),
                opt(p.map(|p| shell_join(&p.cmdline))),
                r.connections.to_string(),
                pin.to_string(),
                pout.to_string(),
                bin.to_string(),
                bout.to_string(),
                rfc3339_ns(r.first_seen_ns),
                rfc3339_ns(r.last_seen_ns),
                opt(r.owner.map(|o| o.start_time.to_string())),
                r.entity_id.clone(),
                ipin.to_string(),
                ipout.to_string(),
                opt(p.and_then(|p| p.container_id.clone())),
            ])?;
        }
        w.flush()
    }
}
