//! The `procflow-snap` command line: parses arguments and runs the
//! recorder of the `procflow_snap` library.

mod cli;

use clap::{CommandFactory, Parser};

/// `procflow-snap completions SHELL` and `procflow-snap man DIR`: shell
/// completions and man pages from the command line's own definition, kept
/// out of the recording command line (and out of `into_config`).
fn docs(argv: &[std::ffi::OsString]) -> Option<i32> {
    let what = argv.get(1)?.to_str()?;
    let arg = argv.get(2).and_then(|a| a.to_str());
    match (what, arg) {
        ("completions", Some(shell)) => {
            let Ok(shell) = shell.parse::<clap_complete::Shell>() else {
                eprintln!(
                    "procflow-snap: error: unknown shell {shell:?} (bash, zsh, fish, elvish, powershell)"
                );
                return Some(2);
            };
            let mut cmd = cli::Cli::command();
            // Into memory first: a closed pipe is an exit status, not a panic.
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "procflow-snap", &mut buf);
            use std::io::Write;
            Some(i32::from(std::io::stdout().write_all(&buf).is_err()))
        }
        ("man", Some(dir)) => {
            let r = std::fs::create_dir_all(dir)
                .and_then(|()| clap_mangen::generate_to(cli::Cli::command(), dir));
            match r {
                Ok(()) => Some(0),
                Err(e) => {
                    eprintln!("procflow-snap: error: cannot write man pages into {dir}: {e}");
                    Some(1)
                }
            }
        }
        ("completions" | "man", None) => {
            eprintln!("usage: procflow-snap completions SHELL | procflow-snap man DIR");
            Some(2)
        }
        _ => None,
    }
}

fn main() {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(code) = docs(&argv) {
        std::process::exit(code);
    }
    let cfg = cli::Cli::parse_from(&argv).into_config(&argv);
    std::process::exit(procflow_snap::record::run(cfg));
}
