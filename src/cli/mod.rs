//! Subcommands of the `procflow` binary. Each has `run(args) ->
//! anyhow::Result<ExitCode>`: `Err` is for failures that stop the command
//! (printed once by `main`, with its causes); problems the command can
//! continue past are printed as they happen and reflected in the exit code.

pub mod analyze;
pub mod bars;
pub mod carve;
pub mod correlate;
pub mod docs;
pub mod flows;
pub mod sockets;
pub mod verify;

/// Parses a duration option (`250ms`, `30s`, `10m`, `1h`, bare seconds)
/// into nanoseconds.
pub fn duration_ns(s: &str) -> Result<i64, procflow_format::duration::DurationError> {
    let d = procflow_format::duration::parse_duration(s)?;
    // At most 10^18 ns by the grammar, so it fits.
    Ok(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
