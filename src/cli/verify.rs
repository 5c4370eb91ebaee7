//! `procflow verify BUNDLE [--json]`: the evidence checks of
//! [`procflow::verify`] on a bundle, one line per finding and a one-line
//! verdict; exit 0 only when every check holds.

use anyhow::Context;
use procflow::hostile::{term, term_path};
use procflow::snapshot::archive::Bundle;
use procflow::verify::{self, Known};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `procflow verify`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Bundle directory written by `procflow-snap record`.
    #[arg(value_name = "BUNDLE")]
    pub bundle: PathBuf,
    /// Print one JSON object (verdict, status per area, findings) on
    /// standard output instead of lines.
    #[arg(long)]
    pub json: bool,
}

/// Exit status when some check does not hold.
pub const EXIT_FINDINGS: u8 = 1;

/// Runs `procflow verify`: exit 0 when every check holds, 1 when some does
/// not, 2 when the directory is not a readable bundle.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let bundle = Bundle::open(&args.bundle)?;
    let ev = verify::check(&bundle.dir, &bundle.manifest, &Known::default());
    let verdict = if ev.ok {
        "intact: every check holds".to_string()
    } else {
        let areas = ev.failed_areas();
        format!(
            "NOT INTACT: {} finding(s) ({})",
            ev.findings.len(),
            areas.join(", ")
        )
    };
    if args.json {
        let v = serde_json::json!({
            "bundle": args.bundle.to_string_lossy(),
            "ok": ev.ok,
            "verdict": verdict,
            "status": ev.status,
            "findings": ev.findings,
            "capture_counters": ev.capture_counters,
            "unreadable_fd_dirs": ev.unreadable_fd_dirs,
            "files": ev.hashes,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&v).context("cannot format the result")?
        );
    } else {
        for s in &ev.status {
            if s.state != "failed" {
                println!("{:<9} {:<11} {}", s.area.name(), s.state, term(&s.detail));
            }
        }
        for f in &ev.findings {
            println!("{:<9} FAIL        {}", f.area.name(), term(&f.message()));
        }
        println!("{}: {verdict}", term_path(&args.bundle));
    }
    Ok(if ev.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FINDINGS)
    })
}
