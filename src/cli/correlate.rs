//! `procflow correlate --capture FILE... --evidence PATH... --out REPORT_DIR`:
//! a capture taken from the network joined with a UAC collection and audit
//! logs of the host ([`procflow::foreign`], `docs/foreign-evidence.md`).

use anyhow::Context;
use procflow::foreign::run::{run_correlate, CorrelateConfig};
use procflow::hostile::term;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `procflow correlate`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Capture files (pcap or pcapng) taken on the network: a sensor, a SPAN
    /// port, a firewall. Several: the rotated parts of one capture.
    #[arg(long = "capture", value_name = "FILE", required = true, num_args = 1..)]
    pub capture: Vec<PathBuf>,
    /// Evidence of the host, recognised by content: a UAC output archive
    /// (.tar.gz) or extracted folder, an audit log (raw audit.log, rotated
    /// files, ausearch -i output), or a folder of them. Repeat for several;
    /// they are merged into one timeline.
    #[arg(long = "evidence", value_name = "PATH", required = true, num_args = 1..)]
    pub evidence: Vec<PathBuf>,
    /// Directory for the reports (created if absent).
    #[arg(long, value_name = "REPORT_DIR")]
    pub out: PathBuf,
    /// An address of the host, besides those the evidence names (UAC's ip
    /// addr output and socket tables). Flows with no end on the host are
    /// `unattributed:not-this-host`.
    #[arg(long = "host-ip", value_name = "IP")]
    pub host_ip: Vec<IpAddr>,
    /// The clock offset of a source (`uac` or `audit`), added to its times:
    /// `audit=-90s`, `uac=+1.5s`. Without it, each offset is estimated from
    /// the capture and printed.
    #[arg(long = "clock-offset", value_name = "SOURCE=DUR", value_parser = parse_offset)]
    pub clock_offset: Vec<(String, i64)>,
    /// Largest time between an audited connect and its flow's first packet.
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = super::duration_ns)]
    pub max_gap: i64,
    /// Worker threads (default: all cores).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    /// Overwrite report files already in REPORT_DIR.
    #[arg(long)]
    pub force: bool,
    /// Do not hash the inputs.
    #[arg(long)]
    pub no_hash: bool,
    /// Print only warnings and the one-line result.
    #[arg(long, short)]
    pub quiet: bool,
    /// Write CSV text cells exactly as found (no formula prefix, no
    /// escaping); never open such a file in a spreadsheet.
    #[arg(long)]
    pub csv_raw: bool,
}

/// `SOURCE=[+-]DUR`.
fn parse_offset(s: &str) -> Result<(String, i64), String> {
    let (src, d) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected SOURCE=DUR, e.g. audit=-90s"))?;
    let numbered_uac = src
        .strip_prefix("uac")
        .is_some_and(|n| n.parse::<u32>().is_ok());
    if !(matches!(src, "uac" | "audit") || numbered_uac) {
        return Err(format!("{src:?}: the source is `uac` (or uacN) or `audit`"));
    }
    let (sign, d) = match d.as_bytes().first() {
        Some(b'-') => (-1, &d[1..]),
        Some(b'+') => (1, &d[1..]),
        _ => (1, d),
    };
    let ns = super::duration_ns(d).map_err(|e| e.to_string())?;
    Ok((src.to_string(), sign * ns))
}

/// Exit status when evidence is damaged (reports still written).
pub const EXIT_EVIDENCE: u8 = 3;

/// Runs `procflow correlate`: exit 0; 3 when evidence is damaged (cut
/// archive, forged or unreadable lines); 1 when a capture file could not
/// be read at all.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let offsets: BTreeMap<String, i64> = args.clock_offset.iter().cloned().collect();
    let cfg = CorrelateConfig {
        captures: args.capture,
        evidence: args.evidence,
        out: args.out,
        host_ips: args.host_ip,
        offsets,
        max_gap_ns: args.max_gap,
        threads: args.threads.map(usize::from),
        force: args.force,
        hash: !args.no_hash,
        csv_raw: args.csv_raw,
        progress: super::bars::terminal_progress(),
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.threads.unwrap_or(0))
        .build()
        .context("cannot start worker threads")?;
    let argv: Vec<String> = std::env::args().collect();
    let mut warn = |w: &str| eprintln!("procflow: warning: {}", term(w));
    let o = pool.install(|| run_correlate(&cfg, &argv, &mut warn))?;
    for c in &o.clocks {
        eprintln!("procflow correlate: {}", term(c));
    }
    for c in &o.coverage {
        eprintln!("procflow correlate: {}", term(c));
    }
    if !args.quiet {
        eprint!("\n{}\n", o.terminal_summary);
    }
    if !o.evidence_damaged.is_empty() {
        eprintln!(
            "procflow correlate: EVIDENCE DAMAGED: {} problem(s) (above; summary.json foreign and evidence)",
            o.evidence_damaged.len()
        );
    }
    eprintln!(
        "procflow correlate: {} flows; {} of {} bytes ({:.1}%) attributed; reports in {} (open report.html)",
        o.flows,
        o.attributed_bytes,
        o.bytes,
        if o.bytes == 0 { 100.0 } else { o.attributed_bytes as f64 * 100.0 / o.bytes as f64 },
        procflow::hostile::term_path(&cfg.out)
    );
    Ok(if !o.evidence_damaged.is_empty() {
        ExitCode::from(EXIT_EVIDENCE)
    } else if o.capture_unreadable {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
