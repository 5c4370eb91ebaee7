//! The `procflow-snap` command line (clap): turned into a
//! [`record::Config`](procflow_snap::record::Config) for the library.
//! Durations use the one grammar of `procflow_format::duration`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use procflow_format::duration::parse_duration;
use procflow_snap::capture::{Method, Rotate};
use procflow_snap::record::{
    Config, SourcesMode, DEFAULT_ARCHIVE_MB, DEFAULT_EVENT_FULL_WALK, DEFAULT_EVENT_INTERVAL,
    DEFAULT_FULL_WALK, DEFAULT_INTERVAL, DEFAULT_KEYFRAME_EVERY, DEFAULT_NICE,
};

/// `--sources`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Sources {
    /// Every event source the host allows, periodic /proc reads as the
    /// completeness check
    Auto,
    /// Periodic /proc reads only
    Poll,
    /// The capture-triggered socket lookup instead of the tracepoints (as
    /// on a host without them), with the proc connector and the periodic
    /// /proc reads
    Lookup,
    /// Like `auto` without the per-call send/receive tracepoints (as on a
    /// kernel before 6.3): forks and execs of socket holders trigger fd
    /// walks instead
    TracepointsNoUse,
    /// Like `auto`, the send/receive calls sampled by the perf tracepoints
    /// instead of reduced to runs in the kernel by the eBPF program
    TracepointsPerfUse,
}

const AFTER_HELP: &str = "\
DUR is a number with a unit: 500ms, 2s, 5m, 1h (a bare number is seconds).

Exit status:
  0 stopped as asked; 1 error while recording; 2 bad usage or failed
  pre-check (nothing written); 3 disk full (everything written is kept)
  or packets missing from the capture (the last line says EVIDENCE LOST);
  130 forced by a second signal.

Shell completions and man pages: procflow-snap completions SHELL,
procflow-snap man --out DIR.";

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "procflow-snap",
    version,
    about = "Record /proc socket state (and a packet capture) on a suspect host",
    after_help = AFTER_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Snapshot /proc every interval until SIGINT/SIGTERM or --duration
    #[command(after_help = AFTER_HELP)]
    Record(Box<RecordArgs>),
    /// One full snapshot, manifest and SHA256SUMS (triage)
    Once(OnceArgs),
    /// Print the shell completion script for SHELL (install:
    /// `procflow-snap completions bash > /etc/bash_completion.d/procflow-snap`)
    Completions(CompletionsArgs),
    /// Write the man pages (install: `procflow-snap man --out
    /// /usr/local/share/man/man1`)
    Man(ManArgs),
}

#[derive(Debug, Args)]
struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell
    #[arg(value_name = "SHELL")]
    shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
struct ManArgs {
    /// Directory for the pages (`procflow-snap.1`, `procflow-snap-record.1`,
    /// ...), created if absent
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Run {
    /// Record (or take one snapshot) with this configuration.
    Record(Box<Config>),
    /// Print the completion script for this shell.
    Completions(clap_complete::Shell),
    /// Write the man pages into this directory.
    Man(PathBuf),
}

#[derive(Debug, Args)]
struct OnceArgs {
    /// Bundle directory: created if absent, must be empty
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Append the bundle digest (SHA-256 of SHA256SUMS), host, time, tool
    /// version and --out to FILE when done (keep it on other media)
    #[arg(long, value_name = "FILE")]
    custody_log: Option<PathBuf>,
}

/// `--capture`: who captures packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CaptureHow {
    /// The recorder itself (AF_PACKET)
    Native,
    /// tcpdump, run beside the recorder
    Tcpdump,
}

#[derive(Debug, Args)]
struct RecordArgs {
    /// Bundle directory: created if absent, must be empty
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Append the bundle digest (SHA-256 of SHA256SUMS), host, time, tool
    /// version and --out to FILE when recording stops (keep it on other
    /// media)
    #[arg(long, value_name = "FILE")]
    custody_log: Option<PathBuf>,
    /// Time between snapshots [default: 250ms; while tracepoints name
    /// socket owners: --event-interval]
    #[arg(long, value_name = "DUR", value_parser = interval)]
    interval: Option<Duration>,
    /// Also capture packets on IFACE (or `any`), into DIR
    #[arg(long, value_name = "IFACE")]
    iface: Option<String>,
    /// Capture filter, in tcpdump's syntax (the common subset: host, net,
    /// port, portrange, protocols, vlan, less, greater, and/or/not)
    #[arg(long, value_name = "BPF", requires = "iface")]
    filter: Option<String>,
    /// Who captures: the recorder itself (`native`: AF_PACKET, nothing
    /// needed on the host) or tcpdump run beside it (`tcpdump`)
    #[arg(long, value_name = "HOW", requires = "iface", value_enum, default_value_t = CaptureHow::Native)]
    capture: CaptureHow,
    /// New capture file every N seconds (a duration of whole seconds; 0: no rotation)
    #[arg(long, value_name = "N", requires = "iface", value_parser = whole_seconds)]
    rotate_seconds: Option<u64>,
    /// New capture file every N MB (10^6 bytes; 0: no rotation)
    #[arg(
        long,
        value_name = "N",
        requires = "iface",
        conflicts_with = "rotate_seconds"
    )]
    rotate_mb: Option<u64>,
    /// Stop after DUR
    #[arg(long, value_name = "DUR", value_parser = duration)]
    duration: Option<Duration>,
    /// Always-on recording: keep the bundle under SIZE (e.g. 500MB, 2GB,
    /// 1GiB; a bare number is bytes) by deleting its oldest capture files
    /// and archives, together; each deletion is listed in the manifest
    #[arg(long, value_name = "SIZE", value_parser = size)]
    max_size: Option<u64>,
    /// Always-on recording: delete capture files and archives that ended
    /// more than DUR ago; each deletion is listed in the manifest
    #[arg(long, value_name = "DUR", value_parser = duration)]
    keep: Option<Duration>,
    /// On a terminal, print a status line (snapshots, bytes, packets
    /// captured and dropped, events archived and lost) every DUR; 0 turns
    /// it off
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = duration)]
    heartbeat: Duration,
    /// Stretch the interval to keep own CPU under PERCENT of a core
    #[arg(long, value_name = "PERCENT", value_parser = percent)]
    max_cpu: Option<f64>,
    /// CPU nice value, -20..19; 19 also puts the recorder in the idle I/O
    /// class. On a saturated host nice 19 can delay snapshots by seconds:
    /// lower it (and bound the cost with --max-cpu) to see short-lived
    /// sockets
    #[arg(long, value_name = "N", default_value_t = DEFAULT_NICE,
          value_parser = clap::value_parser!(i32).range(-20..=19), allow_negative_numbers = true)]
    nice: i32,
    /// Full snapshot every N snapshots
    #[arg(long, value_name = "N", default_value_t = DEFAULT_KEYFRAME_EVERY,
          value_parser = clap::value_parser!(u64).range(1..))]
    keyframe_every: u64,
    /// Read every process' fds at least every DUR [default: 2s; while
    /// tracepoints name socket owners: 30s]
    #[arg(long, value_name = "DUR", value_parser = duration)]
    full_walk: Option<Duration>,
    /// Start a new snapshot archive after N MiB
    #[arg(long, value_name = "N", default_value_t = DEFAULT_ARCHIVE_MB,
          value_parser = clap::value_parser!(u64).range(1..))]
    archive_mb: u64,
    /// Evidence sources: `auto` adds kernel events (TCP state-change,
    /// route-lookup, per-call send/receive and process fork/exec/exit
    /// tracepoints; the proc connector where the exec tracepoint is
    /// missing) where the host allows them, and the capture-triggered
    /// socket lookup where the TCP tracepoint is not available;
    /// `tracepoints-no-use` leaves the send/receive tracepoints off;
    /// `tracepoints-perf-use` samples them with perf instead of the eBPF
    /// program that reduces them to runs in the kernel;
    /// `lookup` forces that lookup instead of the tracepoints; `poll` uses
    /// the periodic /proc reads alone
    #[arg(long, value_name = "MODE", value_enum, default_value_t = Sources::Auto)]
    sources: Sources,
    /// Time between snapshots while tracepoints name socket owners as they
    /// appear (the periodic reads are then the completeness check)
    /// [default: --interval if given, else 5s]
    #[arg(long, value_name = "DUR", value_parser = interval)]
    event_interval: Option<Duration>,
}

fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

fn interval(s: &str) -> Result<Duration, String> {
    let d = duration(s)?;
    if d < Duration::from_millis(10) {
        return Err("at least 10ms".into());
    }
    Ok(d)
}

/// Seconds for tcpdump `-G`: a duration of whole seconds (a bare number is
/// seconds, as before durations were accepted here).
fn whole_seconds(s: &str) -> Result<u64, String> {
    let d = duration(s)?;
    if d.subsec_nanos() != 0 {
        return Err(format!("{s:?}: tcpdump rotates on whole seconds"));
    }
    Ok(d.as_secs())
}

/// A size: a number with an optional unit, kB/MB/GB/TB (powers of 1000)
/// or KiB/MiB/GiB/TiB (powers of 1024); a bare number is bytes.
fn size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(format!("{s:?}: expected a size such as 500MB, 2GB or 1GiB")),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a size such as 500MB, 2GB or 1GiB"))?;
    let bytes = n * mult as f64;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("{s:?}: out of range"));
    }
    Ok(bytes as u64)
}

fn percent(s: &str) -> Result<f64, String> {
    s.parse()
        .ok()
        .filter(|p: &f64| p.is_finite() && *p > 0.0 && *p <= 100.0)
        .ok_or_else(|| format!("{s:?}: expected a percentage in (0, 100]"))
}

impl Cli {
    /// What to run; for a recording, the recorder's configuration, with
    /// `argv`, the whole command line, kept in the manifest.
    pub fn into_run(self, argv: &[OsString]) -> Run {
        let argv = argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        Run::Record(Box::new(match self.command {
            Command::Completions(a) => return Run::Completions(a.shell),
            Command::Man(a) => return Run::Man(a.out),
            Command::Once(a) => Config {
                once: true,
                argv,
                custody_log: a.custody_log,
                ..Config::new(a.out)
            },
            Command::Record(a) => Config {
                out: a.out,
                interval: a.interval.unwrap_or(DEFAULT_INTERVAL),
                iface: a.iface,
                filter: a.filter,
                capture: match a.capture {
                    CaptureHow::Native => Method::Native,
                    CaptureHow::Tcpdump => Method::Tcpdump,
                },
                rotate: match (a.rotate_seconds, a.rotate_mb) {
                    (Some(s), _) if s > 0 => Rotate::Seconds(s),
                    (_, Some(m)) if m > 0 => Rotate::Megabytes(m),
                    _ => Rotate::None,
                },
                duration: a.duration,
                heartbeat: a.heartbeat,
                max_cpu: a.max_cpu,
                nice: a.nice,
                keyframe_every: a.keyframe_every,
                full_walk: a.full_walk.unwrap_or(DEFAULT_FULL_WALK),
                event_full_walk: a.full_walk.unwrap_or(DEFAULT_EVENT_FULL_WALK),
                archive_bytes: a.archive_mb.saturating_mul(1024 * 1024),
                once: false,
                sources: match a.sources {
                    Sources::Auto => SourcesMode::Auto,
                    Sources::Poll => SourcesMode::Poll,
                    Sources::Lookup => SourcesMode::Lookup,
                    Sources::TracepointsNoUse => SourcesMode::NoUse,
                    Sources::TracepointsPerfUse => SourcesMode::PerfUse,
                },
                event_interval: a
                    .event_interval
                    .or(a.interval)
                    .unwrap_or(DEFAULT_EVENT_INTERVAL),
                argv,
                custody_log: a.custody_log,
                ring: procflow_snap::ring::Limits {
                    max_bytes: a.max_size,
                    keep: a.keep,
                },
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;
    use std::os::unix::ffi::OsStringExt;

    fn p(args: &[&str]) -> Result<Config, clap::Error> {
        let mut v: Vec<OsString> = vec!["procflow-snap".into()];
        v.extend(args.iter().map(OsString::from));
        Cli::try_parse_from(&v).map(|c| match c.into_run(&v) {
            Run::Record(c) => *c,
            other => panic!("not a recording: {other:?}"),
        })
    }

    /// `record --out x` with `args` (split on white space).
    fn rec(args: &str) -> Result<Config, clap::Error> {
        let mut v = vec!["record", "--out", "x"];
        v.extend(args.split_whitespace());
        p(&v)
    }

    fn err(args: &[&str]) -> String {
        p(args).expect_err("an error").to_string()
    }

    #[test]
    fn flags() {
        let c = p(&[
            "record",
            "--out",
            "/tmp/x",
            "--interval=250ms",
            "--iface",
            "lo",
            "--filter",
            "tcp port 80",
            "--rotate-mb",
            "100",
            "--max-cpu",
            "5",
            "--nice",
            "0",
        ])
        .expect("a record command");
        assert_eq!(c.interval, Duration::from_millis(250));
        assert_eq!(c.rotate, Rotate::Megabytes(100));
        assert_eq!(c.filter.as_deref(), Some("tcp port 80"));
        assert_eq!(c.max_cpu, Some(5.0));
        assert_eq!(c.nice, 0);
        assert!(!c.once);
        assert_eq!(c.argv.len(), 15);
        let c = p(&["record", "--out", "x"]).expect("a record command");
        assert_eq!(c.nice, DEFAULT_NICE);
        assert_eq!(c.interval, Duration::from_millis(250));
        assert_eq!(c.full_walk, Duration::from_secs(2));
        assert_eq!(c.keyframe_every, 300);
        assert_eq!(c.archive_bytes, 64 << 20);
        assert_eq!(c.rotate, Rotate::None);
        assert_eq!(c.sources, SourcesMode::Auto);
        assert_eq!(c.event_interval, Duration::from_secs(5));
        assert_eq!(c.event_full_walk, Duration::from_secs(30));
        let c = rec("--interval 100ms --full-walk 1s").expect("explicit periods");
        assert_eq!(c.event_interval, Duration::from_millis(100));
        assert_eq!(c.event_full_walk, Duration::from_secs(1));

        let c = rec("--sources poll --event-interval 1s").expect("sources");
        assert_eq!(c.sources, SourcesMode::Poll);
        assert_eq!(c.event_interval, Duration::from_secs(1));
        let c = rec("--sources tracepoints-no-use").expect("sources");
        assert_eq!(c.sources, SourcesMode::NoUse);
        let c = rec("--sources tracepoints-perf-use").expect("sources");
        assert_eq!(c.sources, SourcesMode::PerfUse);
        assert!(err(&["record", "--out", "x", "--sources", "bpf"]).contains("poll"));

        let c = p(&["record", "--out", "x", "--nice", "-5"]).expect("negative nice");
        assert_eq!(c.nice, -5);
        let c = p(&["once", "--out", "x"]).expect("a once command");
        assert!(c.once);
        assert_eq!(c.interval, Duration::from_millis(250));
        assert!(err(&["record", "--out", "x", "--nice", "20"]).contains("-20..=19"));
        assert!(err(&["record"]).contains("--out"));
        assert!(err(&["record", "--out", "x", "--bogus"]).contains("--bogus"));
        assert!(err(&["record", "--out", "x", "--filter", "tcp"]).contains("--iface"));
        assert!(err(&["once", "--out", "x", "--interval", "1s"]).contains("--interval"));
        assert!(err(&["record", "--out", "x", "--interval", "1ms"]).contains("10ms"));
        assert!(p(&["record", "--out", "x", "--keyframe-every", "0"]).is_err());
        assert!(p(&["record", "--out", "x", "--archive-mb", "0"]).is_err());
        assert!(p(&["record", "--out", "x", "--max-cpu", "101"]).is_err());
        assert!(rec("--iface lo --rotate-mb 1 --rotate-seconds 1").is_err());
        // The recorder captures itself unless tcpdump is asked for.
        assert_eq!(rec("--iface lo").expect("iface").capture, Method::Native);
        let c = rec("--iface lo --capture tcpdump").expect("tcpdump");
        assert_eq!(c.capture, Method::Tcpdump);
        assert!(rec("--iface lo --capture pcap").is_err());
        assert!(rec("--capture tcpdump").is_err(), "--capture needs --iface");
        assert_eq!(
            p(&["--version"]).unwrap_err().kind(),
            ErrorKind::DisplayVersion
        );
        for help in [&["--help"][..], &["-h"], &["help"], &["record", "--help"]] {
            assert_eq!(p(help).unwrap_err().kind(), ErrorKind::DisplayHelp);
        }
    }

    #[test]
    fn ring_limits() {
        let c = rec("--max-size 20MB --keep 10m").expect("ring");
        assert_eq!(c.ring.max_bytes, Some(20_000_000));
        assert_eq!(c.ring.keep, Some(Duration::from_secs(600)));
        assert_eq!(
            rec("--max-size 1GiB").unwrap().ring.max_bytes,
            Some(1 << 30)
        );
        assert_eq!(rec("--max-size 1.5kB").unwrap().ring.max_bytes, Some(1500));
        assert_eq!(rec("--max-size 4096").unwrap().ring.max_bytes, Some(4096));
        for bad in [
            "--max-size 0",
            "--max-size 5parsecs",
            "--max-size -1",
            "--keep x",
        ] {
            assert!(rec(bad).is_err(), "{bad}");
        }
        assert!(!rec("").unwrap().ring.is_set());
    }

    #[test]
    fn durations_share_one_grammar() {
        let c = rec("--duration 10m --full-walk 1.5s --interval 1 --iface lo --rotate-seconds 1h")
            .expect("durations");
        assert_eq!(c.duration, Some(Duration::from_secs(600)));
        assert_eq!(c.full_walk, Duration::from_millis(1500));
        assert_eq!(c.interval, Duration::from_secs(1));
        assert_eq!(c.rotate, Rotate::Seconds(3600));
        let c = rec("--iface lo --rotate-seconds 30").expect("bare seconds");
        assert_eq!(c.rotate, Rotate::Seconds(30));
        assert!(rec("--iface lo --rotate-seconds 1.5s").is_err());
        assert!(p(&["record", "--out", "x", "--duration", "5 parsecs"]).is_err());
    }

    #[test]
    fn non_utf8_out_is_kept() {
        let raw = OsString::from_vec(b"/tmp/case-\xff".to_vec());
        let v: Vec<OsString> = vec![
            "procflow-snap".into(),
            "once".into(),
            "--out".into(),
            raw.clone(),
        ];
        let Run::Record(c) = Cli::try_parse_from(&v).expect("parses").into_run(&v) else {
            panic!("a recording");
        };
        assert_eq!(c.out.as_os_str(), raw.as_os_str());
    }

    fn run(args: &[&str]) -> Result<Run, clap::Error> {
        let mut v: Vec<OsString> = vec!["procflow-snap".into()];
        v.extend(args.iter().map(OsString::from));
        Cli::try_parse_from(&v).map(|c| c.into_run(&v))
    }

    /// `man` takes `--out DIR` as `procflow man` does; `--help` is help,
    /// never a directory name.
    #[test]
    fn man_and_completions_share_the_analyzer_syntax() {
        match run(&["man", "--out", "/tmp/m"]).expect("man --out") {
            Run::Man(d) => assert_eq!(d, PathBuf::from("/tmp/m")),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            run(&["man", "--help"]).unwrap_err().kind(),
            ErrorKind::DisplayHelp
        );
        assert!(run(&["man"]).is_err());
        assert!(run(&["man", "dir"]).is_err());
        assert!(run(&["man", "--out"]).is_err());
        assert!(matches!(
            run(&["completions", "bash"]).expect("completions"),
            Run::Completions(clap_complete::Shell::Bash)
        ));
        assert!(run(&["completions", "--help"]).is_err());
        assert!(run(&["completions", "tcsh"]).is_err());
    }
}
