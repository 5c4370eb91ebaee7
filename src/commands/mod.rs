//! Subcommands of the `procflow` binary. Each has `run(args) -> Result<ExitCode>`:
//! `Err` is for failures that stop the command (printed once by `main`);
//! problems the command can continue past are reported as they happen and
//! reflected in the exit code.

pub mod analyze;
pub mod flows;

/// Error type of subcommands: anything displayable, with its cause chain.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Result of a subcommand: the exit code to return.
pub type Result<T> = std::result::Result<T, Error>;
