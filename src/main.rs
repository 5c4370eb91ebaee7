//! The `procflow` command line: parses arguments and hands each subcommand
//! to `procflow::commands`.

use clap::{Parser, Subcommand};
use procflow::commands;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "procflow",
    version,
    about = "Which process sent that traffic? Offline, from a capture and /proc snapshots."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Aggregate captures into flows (one CSV row per conversation).
    Flows(commands::flows::Args),
    /// Attribute every flow of a bundle's captures to the process that owned
    /// its socket (reports: connections.csv, connections.jsonl,
    /// processes.csv, summary.json).
    Analyze(commands::analyze::Args),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Flows(args) => commands::flows::run(args),
        Command::Analyze(args) => commands::analyze::run(args),
    };
    result.unwrap_or_else(|e| {
        eprintln!("procflow: error: {e}");
        ExitCode::from(2)
    })
}
