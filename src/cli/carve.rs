//! `procflow carve REPORT_DIR_OR_BUNDLE (--pid N [--start T] | --comm NAME |
//! --flow ID...) --out FILE.pcapng`: the command line of [`procflow::carve`].

use procflow::carve::{run_carve, CarveConfig, Criteria};
use procflow::hostile::term_path;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `procflow carve`.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).multiple(true).args(["pid", "comm", "flow"])))]
pub struct Args {
    /// A report directory written by `procflow analyze` (run carve from the
    /// directory analyze ran in, so the capture paths it recorded resolve),
    /// or a bundle (analyzed first, into a temporary directory).
    #[arg(value_name = "REPORT_DIR_OR_BUNDLE")]
    pub source: PathBuf,
    /// The packets of the flows this pid owns.
    #[arg(long, value_name = "N")]
    pub pid: Option<u32>,
    /// With --pid: only the process of that pid started at T
    /// (`process_start_ticks` or the RFC 3339 `process_start` of the report),
    /// when the pid was reused.
    #[arg(long, value_name = "T", requires = "pid")]
    pub start: Option<String>,
    /// The packets of the flows owned by processes of this name (`comm`).
    #[arg(long, value_name = "NAME")]
    pub comm: Option<String>,
    /// The packets of these flows (`flow_id` of connections.csv); repeat.
    #[arg(long, value_name = "ID")]
    pub flow: Vec<u64>,
    /// The pcapng to write.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Overwrite FILE if it exists.
    #[arg(long)]
    pub force: bool,
    /// Worker threads (default: all cores).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
}

/// Runs `procflow carve`: exit 0 when the packets written are as many as
/// the report counts for the flows, 1 otherwise.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cfg = CarveConfig {
        source: args.source,
        criteria: Criteria {
            pid: args.pid,
            start: args.start,
            comm: args.comm,
            flows: args.flow,
        },
        out: args.out,
        force: args.force,
        threads: args.threads.map(usize::from),
    };
    let o = run_carve(&cfg)?;
    eprintln!(
        "procflow carve: {} flow(s), {} packets ({} bytes) written to {}",
        o.flows,
        o.written.packets,
        o.written.bytes,
        term_path(&cfg.out)
    );
    if o.written.packets != o.expected_packets {
        eprintln!(
            "procflow: warning: the report counts {} packets for these flows, {} were written",
            o.expected_packets, o.written.packets
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
