//! `connections.csv`: one row per flow.

use std::io::{self, Write};

use super::{ReportInput, ReportWriter, CONNECTION_COLUMNS};

/// Writer of `connections.csv`.
pub struct ConnectionsCsv<'a>(pub &'a ReportInput<'a>);

impl ReportWriter for ConnectionsCsv<'_> {
    fn file_name(&self) -> &'static str {
        "connections.csv"
    }

    fn write(&self, out: &mut dyn Write) -> io::Result<()> {
        let mut w = csv::Writer::from_writer(out);
        w.write_record(CONNECTION_COLUMNS)?;
        for r in &self.0.rows {
            w.write_record(r.fields())?;
        }
        w.flush()
    }
}
