//! `procflow flows CAPTURE... [--out FILE.csv] [--threads N] [--json FILE] [--force]`:
//! one CSV row per flow, for every protocol at once (the columns are
//! specified in `docs/flows-csv.md`).

use anyhow::Context;
use procflow::flow::SplitRules;
use procflow::flows::{self, FlowsConfig};
use procflow::hostile::{term, term_path};
use procflow::outdir::SafeFile;
use std::fs::File;
use std::io::{self, BufWriter};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `procflow flows`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Capture files (pcap or pcapng), e.g. tcpdump's rotated files; they are
    /// merged in order of their first packet.
    #[arg(required = true, value_name = "CAPTURE")]
    pub captures: Vec<PathBuf>,
    /// Where to write the flows CSV; `-` or absent: standard output.
    #[arg(long, short, value_name = "FILE.csv")]
    pub out: Option<PathBuf>,
    /// Worker threads (default: all cores). The output is the same for any
    /// value.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    /// Also write a JSON run report (files, problems, non-IP frames) here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Start a new flow when a key has been idle this long, e.g. `10m`,
    /// `90s` (a bare number is seconds).
    #[arg(long, value_name = "DUR", default_value = "10m", value_parser = super::duration_ns)]
    pub idle_gap: i64,
    /// Start a new flow when a TCP key that saw FIN or RST has been idle this
    /// long, e.g. `2m` (a bare number is seconds).
    #[arg(long, value_name = "DUR", default_value = "2m", value_parser = super::duration_ns)]
    pub closed_tcp_gap: i64,
    /// Overwrite `--out` / `--json` files that exist.
    #[arg(long)]
    pub force: bool,
}

/// Opens an output file safely (never into a bundle, never over an input,
/// an existing file only with `--force`, written beside and renamed into
/// place when complete).
fn safe_output(
    p: &std::path::Path,
    what: &str,
    inputs: &[PathBuf],
    force: bool,
) -> anyhow::Result<(SafeFile, File)> {
    // A bundle is recognised by its manifest in any ancestor of `p`.
    let mut sf = SafeFile::create(p, what, inputs, &[], force)?;
    let f = sf
        .take()
        .ok_or_else(|| anyhow::anyhow!("cannot open {what}"))?;
    Ok((sf, f))
}

/// Flushes a buffered output and moves it into place.
fn finish_output(sf: SafeFile, w: BufWriter<File>) -> anyhow::Result<()> {
    let f = w
        .into_inner()
        .map_err(|e| anyhow::Error::new(e.into_error()))?;
    Ok(sf.commit(f)?)
}

/// Runs `procflow flows`: exit 0, or 1 when some file could not be read at
/// all (the flows of the others are still written).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cfg = FlowsConfig {
        captures: args.captures,
        threads: args.threads.map(usize::from),
        split: SplitRules {
            idle_gap_ns: args.idle_gap,
            closed_tcp_gap_ns: args.closed_tcp_gap,
        },
        progress: super::bars::terminal_progress(),
    };
    // Open the outputs first: a bad --out path should fail before the work.
    let to_stdout = args.out.as_ref().is_none_or(|p| p.as_os_str() == "-");
    let out_file = match &args.out {
        Some(p) if !to_stdout => Some(safe_output(p, "--out", &cfg.captures, args.force)?),
        _ => None,
    };
    let json_file = match &args.json {
        Some(p) => Some(safe_output(p, "--json", &cfg.captures, args.force)?),
        None => None,
    };
    let replay = flows::replay_flows(&cfg)?;
    for p in &replay.problems {
        // Problems name the capture files: escaped for the terminal.
        eprintln!("procflow: {}", term(&p.to_string()));
    }
    let written = match out_file {
        Some((sf, f)) => {
            let mut w = BufWriter::with_capacity(1 << 16, f);
            flows::write_csv(&mut w, &replay.flows)
                .map_err(anyhow::Error::new)
                .and_then(|()| finish_output(sf, w))
        }
        None => match flows::write_csv(
            BufWriter::with_capacity(1 << 16, io::stdout().lock()),
            &replay.flows,
        ) {
            Ok(()) => Ok(()),
            // A closed pipe (`| head`) is the reader's choice, not an error.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            Err(e) => Err(anyhow::Error::new(e)),
        },
    };
    written.context("cannot write flows")?;
    if let (Some((sf, f)), Some(p)) = (json_file, &args.json) {
        let mut w = BufWriter::new(f);
        flows::write_report_json(&mut w, &replay)
            .map_err(anyhow::Error::new)
            .and_then(|()| finish_output(sf, w))
            .with_context(|| format!("cannot write --json {}", term_path(p)))?;
    }
    eprintln!("{}", flows::summary(&replay));
    Ok(if replay.any_file_unreadable() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
