//! `processes.csv`: one row per process (pid + start time) that owns at
//! least one flow, then one row per unattribution reason, so that the
//! byte and packet columns add up to the whole capture.

use std::io::{self, Write};

use std::borrow::Cow;

use serde::Serialize;

use super::{
    csv_text, rfc3339_ns, shell_join, write_csv_rows, ProcessRow, ReportInput, ReportWriter,
};

/// One line of `processes.csv`: the field names are the column names, in
/// order (`docs/report-schema.md`); `None` is an empty field.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProcessCsvRow<'a> {
    pub(crate) pid: Option<u32>,
    pub(crate) process_start: &'a str,
    pub(crate) ppid: Option<u32>,
    pub(crate) uid: Option<u32>,
    pub(crate) comm: String,
    pub(crate) exe: Option<Cow<'a, str>>,
    pub(crate) cmdline: Option<String>,
    pub(crate) connections: u64,
    pub(crate) packets_in: u64,
    pub(crate) packets_out: u64,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) first_seen: String,
    pub(crate) last_seen: String,
    pub(crate) process_start_ticks: Option<u64>,
    pub(crate) entity_id: &'a str,
    pub(crate) ip_bytes_in: u64,
    pub(crate) ip_bytes_out: u64,
    pub(crate) container_id: Option<Cow<'a, str>>,
    pub(crate) ja4: String,
}

impl ProcessCsvRow<'_> {
    /// The row with its text from the bundle made safe for spreadsheets
    /// ([`super::csv_text`]), unless `raw`.
    pub fn neutralised(mut self, raw: bool) -> Self {
        if !raw {
            self.comm = csv_text(Cow::Owned(self.comm)).into_owned();
            self.exe = self.exe.map(|c| csv_text(c));
            self.cmdline = self.cmdline.map(|c| csv_text(Cow::Owned(c)).into_owned());
            self.container_id = self.container_id.map(|c| csv_text(c));
        }
        self
    }
}

impl ProcessRow {
    /// The line of `processes.csv`.
    pub fn csv_row(&self) -> ProcessCsvRow<'_> {
        let p = self.process.as_ref();
        let [pin, pout, bin, bout, ipin, ipout] = self.counters;
        ProcessCsvRow {
            pid: self.owner.map(|o| o.pid),
            process_start: &self.process_start,
            ppid: p.map(|p| p.ppid),
            uid: p.map(|p| p.uid),
            comm: match self.owner {
                Some(_) => p
                    .map(|p| p.comm.clone())
                    .or_else(|| self.event_comm.clone())
                    .unwrap_or_default(),
                None => self.method.name(),
            },
            exe: p.and_then(|p| p.exe.as_deref()).map(Cow::Borrowed),
            cmdline: p.map(|p| shell_join(&p.cmdline)),
            connections: self.connections,
            packets_in: pin,
            packets_out: pout,
            bytes_in: bin,
            bytes_out: bout,
            first_seen: rfc3339_ns(self.first_seen_ns),
            last_seen: rfc3339_ns(self.last_seen_ns),
            process_start_ticks: self.owner.map(|o| o.start_time),
            entity_id: &self.entity_id,
            ip_bytes_in: ipin,
            ip_bytes_out: ipout,
            container_id: p.and_then(|p| p.container_id.as_deref()).map(Cow::Borrowed),
            ja4: self.ja4.join(";"),
        }
    }
}

/// Writer of `processes.csv`.
pub struct ProcessesCsv<'a>(pub &'a ReportInput<'a>);

impl ReportWriter for ProcessesCsv<'_> {
    fn file_name(&self) -> &'static str {
        "processes.csv"
    }

    fn write(&self, out: &mut dyn Write) -> io::Result<()> {
        let rows = self.0.process_rows();
        let raw = self.0.csv_raw;
        write_csv_rows(out, rows.iter().map(|r| r.csv_row().neutralised(raw)))
    }
}
