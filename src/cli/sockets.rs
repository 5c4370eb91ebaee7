//! `procflow sockets BUNDLE [--at TIME] [--pid N] [--csv | --json]`: the
//! sockets the recorder saw at one snapshot, like `ss -tanp`.

use anyhow::{anyhow, Context};
use procflow::hostile::{csv_cell, term, term_path};
use procflow::snapshot::archive::Bundle;
use procflow::sockets::{pick_snapshot, sockets_at, users_text};
use procflow::time::rfc3339_ns;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `procflow sockets`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Any bundle: from `procflow-snap record` (with or without capture) or
    /// `procflow-snap once`.
    #[arg(value_name = "BUNDLE")]
    pub bundle: PathBuf,
    /// Show the last snapshot taken at or before this time: RFC 3339 UTC
    /// (`2026-11-28T16:56:18Z`, fractions allowed) or seconds since the
    /// epoch. Default: the last snapshot.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Only the sockets this pid held.
    #[arg(long, value_name = "N")]
    pub pid: Option<u32>,
    /// CSV on standard output (cells made safe for spreadsheets).
    #[arg(long, conflicts_with = "json")]
    pub csv: bool,
    /// JSON on standard output (values exact).
    #[arg(long)]
    pub json: bool,
}

fn parse_time(s: &str) -> Option<i64> {
    if let Ok(secs) = s.parse::<f64>() {
        return (secs.is_finite() && secs.abs() < 9e9).then_some((secs * 1e9) as i64);
    }
    procflow::carve::parse_rfc3339_ns(s)
}

/// Runs `procflow sockets`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let at = match &args.at {
        Some(s) => Some(parse_time(s).ok_or_else(|| {
            anyhow!(
                "--at {}: not a time (RFC 3339 UTC such as 2026-11-28T16:56:18Z, or seconds since the epoch)",
                term(s)
            )
        })?),
        None => None,
    };
    let bundle = Bundle::open(&args.bundle)?;
    let (tl, diag) = procflow::analyze::read_timeline(&bundle)?;
    for w in &diag.warnings {
        eprintln!("procflow: warning: {}", term(&w.to_string()));
    }
    let Some(snap) = pick_snapshot(&tl, at) else {
        return Err(match (tl.snapshots.first(), at) {
            (Some(first), Some(_)) => anyhow!(
                "--at is before the first snapshot of {} ({})",
                term_path(&args.bundle),
                rfc3339_ns(first.before.realtime_ns)
            ),
            _ => anyhow!(
                "{}: no complete snapshot in the bundle",
                term_path(&args.bundle)
            ),
        });
    };
    let rows = sockets_at(&tl, snap.seq, args.pid);
    let when = rfc3339_ns(snap.before.realtime_ns);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if args.json {
        let v = serde_json::json!({
            "bundle": args.bundle.display().to_string(),
            "snapshot": { "seq": snap.seq, "time": when, "time_ns": snap.before.realtime_ns },
            "sockets": rows,
        });
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
    } else if args.csv {
        let mut w = csv::Writer::from_writer(&mut out);
        w.write_record([
            "snapshot_seq",
            "snapshot_time",
            "netid",
            "state",
            "local_ip",
            "local_port",
            "remote_ip",
            "remote_port",
            "netns",
            "inode",
            "uid",
            "pids",
            "comms",
        ])?;
        for r in &rows {
            let pids: Vec<String> = r.owners.iter().map(|o| o.pid.to_string()).collect();
            let comms: Vec<String> = r
                .owners
                .iter()
                .map(|o| csv_cell(&o.comm, false).into_owned())
                .collect();
            w.write_record([
                snap.seq.to_string(),
                when.clone(),
                r.netid.to_string(),
                r.state.to_string(),
                r.local.ip().to_string(),
                r.local.port().to_string(),
                r.remote.ip().to_string(),
                r.remote.port().to_string(),
                r.netns.to_string(),
                r.inode.to_string(),
                r.uid.to_string(),
                pids.join(";"),
                comms.join(";"),
            ])?;
        }
        w.flush()?;
    } else {
        writeln!(
            out,
            "# snapshot {} at {} ({} of {} in {}); {} socket(s)",
            snap.seq,
            when,
            tl.snapshots
                .iter()
                .position(|s| s.seq == snap.seq)
                .map_or(0, |i| i + 1),
            tl.snapshots.len(),
            term_path(&args.bundle),
            rows.len()
        )?;
        writeln!(
            out,
            "{:<5} {:<12} {:<46} {:<46} {:>10} {:>8} {:>6}  Process",
            "Netid", "State", "Local Address:Port", "Peer Address:Port", "Netns", "Inode", "Uid"
        )?;
        for r in &rows {
            writeln!(
                out,
                "{:<5} {:<12} {:<46} {:<46} {:>10} {:>8} {:>6}  {}",
                r.netid,
                r.state,
                r.local.to_string(),
                r.remote.to_string(),
                r.netns,
                r.inode,
                r.uid,
                users_text(&r.owners)
            )?;
        }
    }
    out.flush().context("writing to standard output")?;
    Ok(ExitCode::SUCCESS)
}
