//! The `procflow-snap` command line.

use procflow_snap::cli::{self, Command};
use procflow_snap::record;

fn main() {
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let code = match cli::parse(argv.get(1..).unwrap_or_default(), argv.clone()) {
        Ok(Command::Help) => {
            print!("{}", cli::usage());
            0
        }
        Ok(Command::Version) => {
            println!("procflow-snap {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Ok(Command::Run(cfg)) => record::run(cfg),
        Err(e) => {
            eprintln!("procflow-snap: {e}");
            record::EXIT_USAGE
        }
    };
    std::process::exit(code);
}
