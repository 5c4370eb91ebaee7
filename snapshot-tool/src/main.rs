//! The `procflow-snap` command line: parses arguments and runs the
//! recorder of the `procflow_snap` library, or writes its shell
//! completions and man pages. The recorder returns what happened; this
//! binary says it on the terminal and chooses the exit status.

mod cli;

use clap::{CommandFactory, Parser};
use procflow_snap::layout::{self, RecorderStatus, SourceInfo};
use procflow_snap::record::{Finished, Notice, Outcome, Sealed, WriteStop};

/// Exit status: recording stopped as asked.
const EXIT_OK: i32 = 0;
/// Exit status: bad usage or a check before recording failed.
const EXIT_USAGE: i32 = 2;
/// Exit status: the disk filled up, or evidence was lost; everything
/// written is kept.
const EXIT_DISK_FULL: i32 = 3;
/// Exit status: another error stopped the recording.
const EXIT_ERROR: i32 = 1;
/// Exit status: a second signal forced the exit.
const EXIT_KILLED: i32 = 130;

fn main() {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let code = match cli::Cli::parse_from(&argv).into_run(&argv) {
        cli::Run::Record(cfg) => {
            match procflow_snap::record::run(*cfg, std::sync::Arc::new(say_notice)) {
                Outcome::Refused(why) => {
                    eprintln!("procflow-snap: {why}");
                    EXIT_USAGE
                }
                Outcome::Recorded(f) => {
                    say_finished(&f);
                    exit_status(&f)
                }
            }
        }
        cli::Run::Completions(shell) => {
            let mut cmd = cli::Cli::command();
            // Into memory first: a closed pipe is an exit status, not a panic.
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "procflow-snap", &mut buf);
            use std::io::Write;
            i32::from(std::io::stdout().write_all(&buf).is_err())
        }
        cli::Run::Man(dir) => {
            let r = std::fs::create_dir_all(&dir)
                .and_then(|()| clap_mangen::generate_to(cli::Cli::command(), &dir));
            match r {
                Ok(()) => {
                    eprintln!("procflow-snap: man pages written to {}", dir.display());
                    0
                }
                Err(e) => {
                    eprintln!(
                        "procflow-snap: error: cannot write man pages into {}: {e}",
                        dir.display()
                    );
                    1
                }
            }
        }
    };
    std::process::exit(code);
}

/// Says a notice of the running recorder.
fn say_notice(n: Notice) {
    match n {
        Notice::Sources(s) => eprintln!("procflow-snap: {}", sources_line(&s)),
        Notice::Recording {
            out,
            interval,
            capture,
        } => eprintln!(
            "procflow-snap: recording into {} every {} ms{}; Ctrl-C to stop",
            out.display(),
            interval.as_millis(),
            capture.map_or(String::new(), |(method, iface)| format!(
                ", {method} capture on {iface}"
            ))
        ),
        Notice::Warning(w) => eprintln!("procflow-snap: warning: {w}"),
        Notice::CaptureFailed(msg) => eprintln!("procflow-snap: {msg}"),
        Notice::Heartbeat(line) => eprintln!("{line}"),
    }
}

/// The one start line naming the sources in use and why not the others.
fn sources_line(s: &[SourceInfo]) -> String {
    let used: Vec<&str> = s
        .iter()
        .filter(|i| i.used)
        .map(|i| i.name.as_str())
        .collect();
    let not: Vec<String> = s
        .iter()
        .filter(|i| !i.used)
        .map(|i| format!("{} ({})", i.name, i.detail.as_deref().unwrap_or("?")))
        .collect();
    let mut line = format!("sources: {}", used.join(", "));
    if !not.is_empty() {
        line.push_str("; not used: ");
        line.push_str(&not.join("; "));
    }
    line
}

/// Says how the recording ended: why it stopped, what was written, the
/// evidence lost, and last the bundle digest a responder notes.
fn say_finished(f: &Finished) {
    match &f.stopped_by {
        Some(WriteStop::DiskFull(msg)) => eprintln!(
            "procflow-snap: disk full, recording stopped: {msg}; everything written before is kept"
        ),
        Some(WriteStop::Error(msg)) => {
            eprintln!("procflow-snap: recording stopped by an error: {msg}")
        }
        None => {}
    }
    if let Some(msg) = &f.close_error {
        eprintln!("procflow-snap: {msg}");
    }
    let say_lost = || {
        if !f.lost.is_empty() {
            eprintln!("procflow-snap: {}", f.lost);
        }
    };
    let (digest, sums_written) = match &f.sealed {
        Sealed::ManifestFailed { path, error } => {
            say_lost();
            eprintln!(
                "procflow-snap: {}: cannot write the final manifest: {error}",
                path.display()
            );
            return;
        }
        Sealed::Forced => {
            say_lost();
            eprintln!(
                "procflow-snap: {}: forced stop (second signal): {} snapshot(s) in {} archive(s), \
                 {} capture file(s); {} written, {} NOT written, no bundle digest",
                f.status,
                f.snapshots,
                f.archives,
                f.capture_files,
                layout::MANIFEST_FILE,
                layout::SHA256SUMS_FILE
            );
            return;
        }
        Sealed::NoSums { path, error } => {
            eprintln!("procflow-snap: {}: cannot write: {error}", path.display());
            (None, false)
        }
        Sealed::Digest(d) => (Some(d), true),
    };
    // Say only what was written, and what evidence was lost.
    eprintln!(
        "procflow-snap: {}: {} snapshot(s) in {} archive(s), {} capture file(s){}; {}{}",
        f.status,
        f.snapshots,
        f.archives,
        f.capture_files,
        if f.deleted == 0 {
            String::new()
        } else {
            format!(
                " ({} older file(s) deleted as --max-size/--keep asked, listed in the manifest)",
                f.deleted
            )
        },
        if sums_written {
            format!(
                "{} and {} written",
                layout::MANIFEST_FILE,
                layout::SHA256SUMS_FILE
            )
        } else {
            format!(
                "{} written, {} NOT written",
                layout::MANIFEST_FILE,
                layout::SHA256SUMS_FILE
            )
        },
        if f.lost.is_empty() {
            String::new()
        } else {
            format!("; {}", f.lost)
        }
    );
    if let Some(c) = &f.custody {
        if let Some(e) = &c.error {
            eprintln!(
                "procflow-snap: {}: cannot append the custody record: {e}",
                c.path.display()
            );
        }
    }
    // The last line: what a responder notes at collection.
    match digest {
        Some(d) => eprintln!(
            "procflow-snap: bundle digest: sha256:{d} (note it: `procflow verify --expect` \
             checks the bundle against it){}",
            f.custody.as_ref().map_or(String::new(), |c| format!(
                "; appended to {}",
                c.path.display()
            ))
        ),
        None => eprintln!(
            "procflow-snap: no bundle digest: {} was not written",
            layout::SHA256SUMS_FILE
        ),
    }
}

/// The exit status of a recording: 0 when complete with nothing lost; 3
/// for a full disk or evidence lost; 1 for another error; 130 when forced.
fn exit_status(f: &Finished) -> i32 {
    let mut code = match &f.stopped_by {
        None => EXIT_OK,
        Some(WriteStop::DiskFull(_)) => EXIT_DISK_FULL,
        Some(WriteStop::Error(_)) => EXIT_ERROR,
    };
    if f.status == RecorderStatus::Killed {
        code = EXIT_KILLED;
    }
    if f.close_error.is_some() {
        code = EXIT_ERROR;
    }
    if f.capture_lost && code == EXIT_OK {
        // Packets the capture should hold are missing.
        code = EXIT_DISK_FULL;
    }
    match &f.sealed {
        Sealed::ManifestFailed { error, .. } => {
            if code == EXIT_OK {
                code = if procflow_snap::sys::is_disk_full(error) {
                    EXIT_DISK_FULL
                } else {
                    EXIT_ERROR
                };
            }
            return code;
        }
        Sealed::Forced => return EXIT_KILLED,
        Sealed::NoSums { .. } if code == EXIT_OK => code = EXIT_ERROR,
        _ => {}
    }
    if f.custody.as_ref().is_some_and(|c| c.error.is_some()) && code == EXIT_OK {
        code = EXIT_ERROR;
    }
    code
}
