//! `procflow verify BUNDLE [--json]`: the evidence checks of
//! [`procflow::verify`] on a bundle, one line per finding and a one-line
//! verdict; exit 0 only when every check holds.

use anyhow::Context;
use procflow::hostile::{term, term_path};
use procflow::snapshot::archive::Bundle;
use procflow::verify::{self, Known};
use procflow_format::hash::bundle_digest;
use procflow_format::layout::SHA256SUMS_FILE;
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
    /// The bundle digest noted when the bundle was collected (printed by
    /// `procflow-snap` when it stopped, and in its custody log): any other
    /// digest is a finding. `sha256:` prefix optional.
    #[arg(long, value_name = "DIGEST", value_parser = digest_arg)]
    pub expect: Option<String>,
}

/// `--expect`: 64 hex digits, optionally after `sha256:`.
fn digest_arg(s: &str) -> Result<String, String> {
    let h = s.trim();
    let h = h.strip_prefix("sha256:").unwrap_or(h);
    if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(h.to_ascii_lowercase())
    } else {
        Err("expected a bundle digest: 64 hex digits, optionally after `sha256:`".into())
    }
}

/// Exit status when some check does not hold.
pub const EXIT_FINDINGS: u8 = 1;
/// Exit status when the directory is not a readable bundle (no manifest,
/// or one that cannot be parsed).
pub const EXIT_NOT_A_BUNDLE: u8 = 2;

/// Runs `procflow verify`: exit 0 when every check holds, 1 when some does
/// not, 2 when the directory is not a readable bundle.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let bundle = match Bundle::open(&args.bundle) {
        Ok(b) => b,
        Err(e) if args.json => {
            // Machines get a result on standard output whatever happened:
            // the error, and the digest when SHA256SUMS can be read.
            let digest = procflow::hostile::read_small_file(
                &args.bundle.join(SHA256SUMS_FILE),
                procflow::hostile::SMALL_FILE_CAP,
            )
            .ok()
            .map(|b| bundle_digest(&b));
            let error = format!("{e:#}");
            let v = serde_json::json!({
                "bundle": args.bundle.to_string_lossy(),
                "ok": false,
                "verdict": format!("NOT A READABLE BUNDLE: {error}"),
                "error": error,
                "digest": digest,
                "status": [],
                "findings": [],
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&v).context("cannot format the result")?
            );
            eprintln!("procflow: error: {}", term(&error));
            return Ok(ExitCode::from(EXIT_NOT_A_BUNDLE));
        }
        Err(e) => return Err(e.into()),
    };
    let known = Known {
        expect: args.expect.clone(),
        ..Known::default()
    };
    let mut ev = verify::check(&bundle.dir, &bundle.manifest, &known);
    // The packets in the capture files, against the capture's own count.
    let (in_files, unreadable) = verify::count_capture_packets(&bundle.captures);
    for f in unreadable {
        ev.add(f);
    }
    if let Some(f) =
        verify::packet_shortfall(&bundle.manifest, ev.capture_counters.as_ref(), in_files)
    {
        ev.add(f);
    }
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
            "digest": ev.digest,
            "expected_digest": args.expect,
            "deleted": ev.deleted,
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
        if let Some(d) = &ev.deleted {
            println!("{}", d.line());
        }
        println!("{}", ev.digest_line());
        println!("{}: {verdict}", term_path(&args.bundle));
    }
    Ok(if ev.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FINDINGS)
    })
}
