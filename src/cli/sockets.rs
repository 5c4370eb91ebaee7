//! `procflow sockets BUNDLE [--at TIME] [--pid N] [--csv | --json]`: the
//! sockets the recorder saw at one moment, like `ss -tanp`, the ones only
//! its events saw included; or one process's sockets over the whole
//! recording.

use anyhow::{anyhow, Context};
use procflow::hostile::{csv_cell, term, term_path};
use procflow::snapshot::archive::Bundle;
use procflow::sockets::{
    no_sockets_hint, pick_snapshot, sockets_at_time, sockets_of_pid, users_text, SocketRow,
};
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
    /// The sockets open at this time: those of the last snapshot taken at
    /// or before it, and those the recorder's events (connect, accept,
    /// listen, close, sends) saw open then that the snapshot does not
    /// hold. RFC 3339 UTC (`2026-11-28T16:56:18Z`, fractions allowed) or
    /// seconds since the epoch. Default: the last snapshot (or, with
    /// `--pid`, the whole recording).
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Only the sockets this pid held or used. Without `--at`: its sockets
    /// over the whole recording, with when each was first and last seen.
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
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    // With a pid and no time: the whole recording.
    if let (Some(pid), None) = (args.pid, at) {
        let rows = sockets_of_pid(&tl, pid);
        let range = match (tl.snapshots.first(), tl.snapshots.last()) {
            (Some(a), Some(b)) => format!(
                "{} .. {}",
                rfc3339_ns(a.before.realtime_ns),
                rfc3339_ns(b.after.realtime_ns)
            ),
            _ => "no snapshot".into(),
        };
        let hint = rows.is_empty().then(|| no_sockets_hint(&tl, pid));
        if let Some(h) = &hint {
            eprintln!("procflow: {h}");
        }
        if args.json {
            let v = serde_json::json!({
                "bundle": args.bundle.display().to_string(),
                "pid": pid,
                "recording": range,
                "sockets": rows,
                "note": hint,
            });
            serde_json::to_writer_pretty(&mut out, &v)?;
            writeln!(out)?;
        } else if args.csv {
            write_csv(&mut out, &rows, None)?;
        } else {
            writeln!(
                out,
                "# pid {pid} over the whole recording ({range}) in {}; {} socket(s){}",
                term_path(&args.bundle),
                rows.len(),
                hint.map(|h| format!(": {h}")).unwrap_or_default()
            )?;
            write_table(&mut out, &rows, true)?;
        }
        out.flush().context("writing to standard output")?;
        return Ok(ExitCode::SUCCESS);
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
    let at_ns = at.unwrap_or(snap.before.realtime_ns);
    let rows = sockets_at_time(&tl, snap, at_ns, args.pid);
    let when = rfc3339_ns(snap.before.realtime_ns);
    let from_events = rows.iter().filter(|r| r.source != "snapshot").count();
    if args.json {
        let v = serde_json::json!({
            "bundle": args.bundle.display().to_string(),
            "snapshot": { "seq": snap.seq, "time": when, "time_ns": snap.before.realtime_ns },
            "at": rfc3339_ns(at_ns),
            "at_ns": at_ns,
            "sockets": rows,
        });
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
    } else if args.csv {
        write_csv(&mut out, &rows, Some((snap.seq, &when)))?;
    } else {
        writeln!(
            out,
            "# snapshot {} at {} ({} of {} in {}){}; {} socket(s), {} of them known from events only",
            snap.seq,
            when,
            tl.snapshots
                .iter()
                .position(|s| s.seq == snap.seq)
                .map_or(0, |i| i + 1),
            tl.snapshots.len(),
            term_path(&args.bundle),
            at.map(|t| format!(" and events up to {}", rfc3339_ns(t)))
                .unwrap_or_default(),
            rows.len(),
            from_events
        )?;
        write_table(&mut out, &rows, false)?;
    }
    out.flush().context("writing to standard output")?;
    Ok(ExitCode::SUCCESS)
}

fn write_csv(
    out: &mut impl Write,
    rows: &[SocketRow],
    snap: Option<(u64, &str)>,
) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_writer(out);
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
        "source",
        "first_seen",
        "last_seen",
    ])?;
    for r in rows {
        let pids: Vec<String> = r.owners.iter().map(|o| o.pid.to_string()).collect();
        let comms: Vec<String> = r
            .owners
            .iter()
            .map(|o| csv_cell(&o.comm, false).into_owned())
            .collect();
        w.write_record([
            snap.map(|s| s.0.to_string()).unwrap_or_default(),
            snap.map(|s| s.1.to_string()).unwrap_or_default(),
            r.netid.to_string(),
            r.state.to_string(),
            r.local.ip().to_string(),
            r.local.port().to_string(),
            r.remote.ip().to_string(),
            r.remote.port().to_string(),
            r.netns.to_string(),
            r.inode.to_string(),
            r.uid.map(|u| u.to_string()).unwrap_or_default(),
            pids.join(";"),
            comms.join(";"),
            r.source.clone(),
            rfc3339_ns(r.first_ns),
            rfc3339_ns(r.last_ns),
        ])?;
    }
    w.flush()?;
    Ok(())
}

fn write_table(out: &mut impl Write, rows: &[SocketRow], times: bool) -> anyhow::Result<()> {
    let span = |r: &SocketRow| {
        if times {
            format!(
                " {:<30} {:<30}",
                rfc3339_ns(r.first_ns),
                rfc3339_ns(r.last_ns)
            )
        } else {
            String::new()
        }
    };
    writeln!(
        out,
        "{:<5} {:<12} {:<46} {:<46} {:>10} {:>8} {:>6} {:<24}{}  Process",
        "Netid",
        "State",
        "Local Address:Port",
        "Peer Address:Port",
        "Netns",
        "Inode",
        "Uid",
        "Source",
        if times {
            format!(" {:<30} {:<30}", "First seen", "Last seen")
        } else {
            String::new()
        }
    )?;
    for r in rows {
        writeln!(
            out,
            "{:<5} {:<12} {:<46} {:<46} {:>10} {:>8} {:>6} {:<24}{}  {}",
            r.netid,
            r.state,
            r.local.to_string(),
            r.remote.to_string(),
            r.netns,
            r.inode,
            r.uid.map_or("-".to_string(), |u| u.to_string()),
            r.source,
            span(r),
            users_text(&r.owners)
        )?;
    }
    Ok(())
}
