//! The `procflow-snap` command line: parses arguments and runs the
//! recorder of the `procflow_snap` library, or writes its shell
//! completions and man pages.

mod cli;

use clap::{CommandFactory, Parser};

fn main() {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let code = match cli::Cli::parse_from(&argv).into_run(&argv) {
        cli::Run::Record(cfg) => procflow_snap::record::run(*cfg),
        cli::Run::Completions(shell) => {
            let mut cmd = cli::Cli::command();
            // Into memory first: a closed pipe is an exit status, not a panic.
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "procflow-snap", &mut buf);
            use std::io::Write;
            i32::from(std::io::stdout().write_all(&buf).is_err())
        }
        cli::Run::Man(dir) => {
            let r = std::fs::create_dir_all(&dir)
                .and_then(|()| clap_mangen::generate_to(cli::Cli::command(), &dir));
            match r {
                Ok(()) => {
                    eprintln!("procflow-snap: man pages written to {}", dir.display());
                    0
                }
                Err(e) => {
                    eprintln!(
                        "procflow-snap: error: cannot write man pages into {}: {e}",
                        dir.display()
                    );
                    1
                }
            }
        }
    };
    std::process::exit(code);
}
