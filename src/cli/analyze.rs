//! `procflow analyze BUNDLE [--pcap FILE...] --out REPORT_DIR [--threads N]
//! [--max-gap DUR] [--force] [--no-hash] [--quiet]`: the command line of
//! [`procflow::analyze`]. The answer (the summary and one closing line) goes
//! to standard output, so it can be paged or saved; warnings, progress and
//! the evidence status go to standard error.

use anyhow::Context;
use procflow::analyze::{run_analysis, AnalyzeConfig, AnalyzeError};
use procflow::hostile::term;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `procflow analyze`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Bundle directory written by `procflow-snap record`; its capture files
    /// (`capture-*`, `*.pcap`, `*.pcapng`) are replayed.
    #[arg(value_name = "BUNDLE")]
    pub bundle: PathBuf,
    /// More capture files recorded separately (same host and time).
    #[arg(long = "pcap", value_name = "FILE")]
    pub pcap: Vec<PathBuf>,
    /// Directory for the reports (created if absent).
    #[arg(long, value_name = "REPORT_DIR")]
    pub out: PathBuf,
    /// Worker threads (default: all cores). The reports are the same for any
    /// value.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    /// Largest time between a flow and a sighting of its socket (or of the
    /// socket's holder), e.g. `30s`, `500ms`, `2m`.
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = super::duration_ns)]
    pub max_gap: i64,
    /// Overwrite report files already in REPORT_DIR.
    #[arg(long)]
    pub force: bool,
    /// Do not hash the inputs (nor check them against the bundle's
    /// SHA256SUMS). Hashing is the slowest step on large captures; skip it
    /// only for quick re-runs on inputs already verified. `summary.json` then
    /// says `"sha256": null` and `"recorded_hash": "not-checked"`.
    #[arg(long)]
    pub no_hash: bool,
    /// Print only warnings and the one-line result (on standard output),
    /// not the summary of top processes and endpoints (for scripts).
    #[arg(long, short)]
    pub quiet: bool,
    /// Also write every replayed packet, unchanged, to this pcapng file,
    /// each annotated with its owner (a comment in ptcpdump's `PID:` /
    /// `Cmd:` / `Args:` layout plus method and confidence, and the pcapng
    /// process-id option) or the reason it has none. Opens in Wireshark.
    #[arg(long, value_name = "FILE")]
    pub pcapng: Option<PathBuf>,
    /// Refuse to write reports when an evidence check fails (hash mismatch,
    /// missing file, recorder not `complete`, capture drops, unreadable
    /// fds); exit 3 without reports.
    #[arg(long)]
    pub strict: bool,
    /// Write CSV text cells exactly as recorded: no `'` before a cell that
    /// a spreadsheet would take for a formula, no escaping of control
    /// characters (for pipelines; never open such a file in a spreadsheet).
    #[arg(long)]
    pub csv_raw: bool,
}

/// Exit status when an evidence check failed (reports written, or refused
/// with `--strict`).
pub const EXIT_EVIDENCE: u8 = 3;

/// Runs `procflow analyze`: exit 0; 3 when an evidence check failed (the
/// reports are still written, unless `--strict`); else 1 when some capture
/// file could not be read at all (the reports cover the others).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cfg = AnalyzeConfig {
        bundle: args.bundle,
        pcaps: args.pcap,
        out: args.out,
        threads: args.threads.map(usize::from),
        max_gap_ns: args.max_gap,
        force: args.force,
        hash: !args.no_hash,
        pcapng: args.pcapng,
        progress: super::bars::terminal_progress(),
        strict: args.strict,
        csv_raw: args.csv_raw,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.threads.unwrap_or(0))
        .build()
        .context("cannot start worker threads")?;
    // Warnings quote the bundle (file and member names, /proc lines):
    // escaped for the terminal.
    let mut warn = |w: &str| eprintln!("procflow: warning: {}", term(w));
    let o = match pool.install(|| run_analysis(&cfg, &mut warn)) {
        Ok(o) => o,
        Err(AnalyzeError::EvidenceRefused { failed, evidence }) => {
            for line in evidence.status_block() {
                eprintln!("{line}");
            }
            eprintln!(
                "procflow: error: {failed} evidence check(s) failed and --strict was given; \
                 no report written"
            );
            return Ok(ExitCode::from(EXIT_EVIDENCE));
        }
        Err(e) => return Err(e.into()),
    };
    // The answer on standard output, written once: a closed pipe (`| head`)
    // is the reader's choice, not an error.
    let mut answer = String::new();
    if !args.quiet {
        answer.push_str(&o.terminal_summary);
        answer.push('\n');
    }
    if let (Some(p), Some(s)) = (&cfg.pcapng, &o.pcapng) {
        answer += &format!(
            "procflow analyze: {} packets ({} with an owner) written to {}\n",
            s.packets,
            s.attributed,
            procflow::hostile::term_path(p)
        );
    }
    for line in o.evidence.status_block() {
        eprintln!("{line}");
    }
    answer += &format!(
        "procflow analyze: {} flows, {} snapshots, {} sockets; {} of {} bytes ({:.1}%) attributed; reports in {} (open report.html)\n",
        o.flows,
        o.snapshots,
        o.sockets,
        o.attributed_bytes,
        o.bytes,
        if o.bytes == 0 { 100.0 } else { o.attributed_bytes as f64 * 100.0 / o.bytes as f64 },
        procflow::hostile::term_path(&cfg.out)
    );
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        match out.write_all(answer.as_bytes()).and_then(|()| out.flush()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                return Err(anyhow::Error::new(e).context("writing to standard output"))
            }
            _ => {}
        }
    }
    Ok(if !o.evidence.ok {
        ExitCode::from(EXIT_EVIDENCE)
    } else if o.capture_unreadable {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
