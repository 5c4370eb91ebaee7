//! `connections.csv`: one row per flow.

use std::io::{self, Write};

use super::{write_csv_rows, ReportInput, ReportWriter};

/// Writer of `connections.csv`.
pub struct ConnectionsCsv<'a>(pub &'a ReportInput<'a>);

impl ReportWriter for ConnectionsCsv<'_> {
    fn file_name(&self) -> &'static str {
        "connections.csv"
    }

    fn write(&self, out: &mut dyn Write) -> io::Result<()> {
        let raw = self.0.csv_raw;
        write_csv_rows(
            out,
            self.0.rows.iter().map(|r| r.csv_row().neutralised(raw)),
        )
    }
}
