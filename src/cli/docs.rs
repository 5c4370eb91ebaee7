//! `procflow completions SHELL` and `procflow man --out DIR`: shell
//! completions and man pages generated from the command line's own
//! definition, so they never drift from it.

use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `procflow completions`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

/// Arguments of `procflow man`.
#[derive(Debug, Clone, clap::Args)]
pub struct ManArgs {
    /// Directory for the pages (`procflow.1`, `procflow-analyze.1`, ...),
    /// created if absent.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// Writes the completion script for `shell` to standard output.
pub fn completions(mut cmd: clap::Command, args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let name = cmd.get_name().to_string();
    // Into memory first: a closed pipe is an error, not a panic.
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, name, &mut buf);
    std::io::Write::write_all(&mut std::io::stdout(), &buf)
        .context("writing to standard output")?;
    Ok(ExitCode::SUCCESS)
}

/// Writes one man page per command and subcommand into `args.out`.
pub fn man(cmd: clap::Command, args: ManArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    clap_mangen::generate_to(cmd, &args.out)
        .with_context(|| format!("cannot write man pages into {}", args.out.display()))?;
    eprintln!("procflow: man pages written to {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}
