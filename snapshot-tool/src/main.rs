//! The `procflow-snap` command line: parses arguments and runs the
//! recorder of the `procflow_snap` library.

mod cli;

use clap::Parser;

fn main() {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cfg = cli::Cli::parse_from(&argv).into_config(&argv);
    std::process::exit(procflow_snap::record::run(cfg));
}
