//! The `procflow` command line: parses arguments, runs the library's
//! pipelines and speaks to the terminal.

mod cli;

use clap::{CommandFactory, Parser, Subcommand};
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
    Flows(cli::flows::Args),
    /// Attribute every flow of a bundle's captures to the process that owned
    /// its socket (reports: connections.csv, connections.jsonl,
    /// processes.csv, summary.json).
    Analyze(cli::analyze::Args),
    /// Attribute a capture taken on the network with evidence other tools
    /// collected on the host: a UAC collection, audit logs (no bundle
    /// needed).
    Correlate(cli::correlate::Args),
    /// Write the packets of one process (or of chosen flows) into their own
    /// pcapng, each annotated with its owner.
    Carve(cli::carve::Args),
    /// The sockets the recorder saw at one moment (default: the last
    /// snapshot), like `ss -tanp`, those only its events saw included; or
    /// one pid's sockets over the whole recording (`--pid` without
    /// `--at`); any bundle, also `procflow-snap once`.
    Sockets(cli::sockets::Args),
    /// Print the shell completion script for SHELL (install:
    /// `procflow completions bash > /etc/bash_completion.d/procflow`).
    Completions(cli::docs::CompletionsArgs),
    /// Write the man pages (install: `procflow man --out
    /// /usr/local/share/man/man1`).
    Man(cli::docs::ManArgs),
    /// Check a bundle's evidence: SHA256SUMS complete and matching, every
    /// file present, archives whole, recorder status complete, no capture
    /// drops, no unreadable fds. Exit 0 only when all of it holds.
    Verify(cli::verify::Args),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Flows(args) => cli::flows::run(args),
        Command::Analyze(args) => cli::analyze::run(args),
        Command::Carve(args) => cli::carve::run(args),
        Command::Correlate(args) => cli::correlate::run(args),
        Command::Sockets(args) => cli::sockets::run(args),
        Command::Completions(args) => cli::docs::completions(Cli::command(), args),
        Command::Man(args) => cli::docs::man(Cli::command(), args),
        Command::Verify(args) => cli::verify::run(args),
    };
    result.unwrap_or_else(|e| {
        // Errors name bundle files: escaped for the terminal.
        eprintln!(
            "procflow: error: {}",
            procflow::hostile::term(&format!("{e:#}"))
        );
        ExitCode::from(2)
    })
}
