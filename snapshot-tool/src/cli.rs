//! Command-line parsing, by hand: the recorder ships as one small static
//! binary and its grammar is a handful of `--flag VALUE` pairs.

use std::path::PathBuf;
use std::time::Duration;

use crate::capture::Rotate;
use crate::record::Config;

/// Default time between snapshots. Measured (docs/recorder.md): 250 ms saw
/// 99 % of 200 processes living 0.5 s with one TCP connection each, as
/// 100 ms did, for half the CPU; 500 ms saw 85 %.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(250);
/// Default full fd walk period.
pub const DEFAULT_FULL_WALK: Duration = Duration::from_secs(2);
/// Default keyframe period, in snapshots.
pub const DEFAULT_KEYFRAME_EVERY: u64 = 300;
/// Default archive rotation size, MiB.
pub const DEFAULT_ARCHIVE_MB: u64 = 64;
/// Default CPU nice value: yield to the server being watched.
pub const DEFAULT_NICE: i32 = 19;

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// `record` or `once`.
    Run(Config),
    /// `--help`.
    Help,
    /// `--version`.
    Version,
}

/// The help text.
pub fn usage() -> String {
    format!(
        "procflow-snap {ver}: record /proc socket state (and a packet capture) on a suspect host

USAGE:
    procflow-snap record --out DIR [OPTIONS]
    procflow-snap once --out DIR
    procflow-snap --help | --version

COMMANDS:
    record    Snapshot /proc every interval until SIGINT/SIGTERM or --duration
    once      One full snapshot, manifest and SHA256SUMS (triage)

OPTIONS (record):
    --out DIR              Bundle directory: created if absent, must be empty
    --interval DUR         Time between snapshots [default: {int}]
    --iface IFACE          Also capture on IFACE with tcpdump, into DIR
    --filter BPF           tcpdump filter expression (with --iface)
    --rotate-seconds N     New capture file every N seconds (with --iface)
    --rotate-mb N          New capture file every N MB (10^6 bytes; with --iface)
    --duration DUR         Stop after DUR
    --max-cpu PERCENT      Stretch the interval to keep own CPU under PERCENT of a core
    --nice N               CPU nice value, -20..19 [default: {nice}]; 19 also puts
                           the recorder in the idle I/O class. On a saturated
                           host nice 19 can delay snapshots by seconds: lower it
                           (and bound the cost with --max-cpu) to see short-lived
                           sockets
    --keyframe-every N     Full snapshot every N snapshots [default: {kf}]
    --full-walk DUR        Read every process' fds at least every DUR [default: {fw}]
    --archive-mb N         Start a new snapshot archive after N MiB [default: {amb}]

DUR is a number with a unit: 500ms, 2s, 5m, 1h (a bare number is seconds).

EXIT STATUS:
    0 stopped as asked; 1 error while recording; 2 bad usage or failed
    pre-check (nothing written); 3 disk full (everything written is kept);
    130 forced by a second signal.
",
        ver = env!("CARGO_PKG_VERSION"),
        int = fmt_dur(DEFAULT_INTERVAL),
        kf = DEFAULT_KEYFRAME_EVERY,
        fw = fmt_dur(DEFAULT_FULL_WALK),
        amb = DEFAULT_ARCHIVE_MB,
        nice = DEFAULT_NICE,
    )
}

fn fmt_dur(d: Duration) -> String {
    if d.subsec_millis() != 0 || d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs())
    }
}

/// Parses `500ms`, `2s`, `5m`, `1h`, `1.5s` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.parse().ok()?;
    if !v.is_finite() || v < 0.0 {
        return None;
    }
    Duration::try_from_secs_f64(v * mult).ok()
}

/// Parses the arguments (without the program name). `argv` is the full
/// command line, kept for the manifest.
pub fn parse(args: &[String], argv: Vec<String>) -> Result<Command, String> {
    let mut it = args.iter();
    let cmd = match it.next().map(String::as_str) {
        None => return Err("a command is needed: record or once (see --help)".into()),
        Some("--help" | "-h" | "help") => return Ok(Command::Help),
        Some("--version" | "-V") => return Ok(Command::Version),
        Some(c @ ("record" | "once")) => c,
        Some(other) => {
            return Err(format!(
                "unknown command {other:?}: expected record or once (see --help)"
            ))
        }
    };
    let once = cmd == "once";
    let mut out: Option<PathBuf> = None;
    let mut cfg = Config {
        out: PathBuf::new(),
        interval: DEFAULT_INTERVAL,
        iface: None,
        filter: None,
        rotate: Rotate::None,
        duration: None,
        max_cpu: None,
        nice: DEFAULT_NICE,
        keyframe_every: DEFAULT_KEYFRAME_EVERY,
        full_walk: DEFAULT_FULL_WALK,
        archive_bytes: DEFAULT_ARCHIVE_MB * 1024 * 1024,
        once,
        argv,
    };
    let mut rotate_s: Option<u64> = None;
    let mut rotate_mb: Option<u64> = None;
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Ok(Command::Help);
        }
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (flag.as_str(), None),
        };
        let allowed_once = name == "--out";
        if once && !allowed_once {
            return Err(format!("once takes only --out, not {name}"));
        }
        let mut value = || -> Result<String, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value")),
            }
        };
        let dur = |v: String| {
            parse_duration(&v)
                .ok_or_else(|| format!("{name} {v:?}: expected a duration like 500ms, 2s, 5m"))
        };
        let num = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{name} {v:?}: expected a whole number"))
        };
        match name {
            "--out" => out = Some(PathBuf::from(value()?)),
            "--interval" => {
                cfg.interval = dur(value()?)?;
                if cfg.interval < Duration::from_millis(10) {
                    return Err("--interval: at least 10ms".into());
                }
            }
            "--iface" => cfg.iface = Some(value()?),
            "--filter" => cfg.filter = Some(value()?),
            "--rotate-seconds" => rotate_s = Some(num(value()?)?).filter(|n| *n > 0),
            "--rotate-mb" => rotate_mb = Some(num(value()?)?).filter(|n| *n > 0),
            "--duration" => cfg.duration = Some(dur(value()?)?),
            "--max-cpu" => {
                let v = value()?;
                let p: f64 = v
                    .parse()
                    .ok()
                    .filter(|p: &f64| p.is_finite() && *p > 0.0 && *p <= 100.0)
                    .ok_or_else(|| format!("--max-cpu {v:?}: expected a percentage in (0, 100]"))?;
                cfg.max_cpu = Some(p);
            }
            "--nice" => {
                let v = value()?;
                cfg.nice = v
                    .parse()
                    .ok()
                    .filter(|n: &i32| (-20..=19).contains(n))
                    .ok_or_else(|| {
                        format!("--nice {v:?}: expected a whole number from -20 to 19")
                    })?;
            }
            "--keyframe-every" => {
                cfg.keyframe_every = num(value()?)?;
                if cfg.keyframe_every == 0 {
                    return Err("--keyframe-every: at least 1".into());
                }
            }
            "--full-walk" => cfg.full_walk = dur(value()?)?,
            "--archive-mb" => {
                let n = num(value()?)?;
                if n == 0 {
                    return Err("--archive-mb: at least 1".into());
                }
                cfg.archive_bytes = n.saturating_mul(1024 * 1024);
            }
            other => return Err(format!("unknown option {other:?} (see --help)")),
        }
    }
    cfg.out = out.ok_or("--out DIR is required: the recorder writes nowhere else")?;
    if cfg.iface.is_none() && (cfg.filter.is_some() || rotate_s.is_some() || rotate_mb.is_some()) {
        return Err("--filter, --rotate-seconds and --rotate-mb need --iface".into());
    }
    cfg.rotate = match (rotate_s, rotate_mb) {
        (Some(_), Some(_)) => {
            return Err("--rotate-seconds and --rotate-mb exclude each other".into())
        }
        (Some(s), None) => Rotate::Seconds(s),
        (None, Some(m)) => Rotate::Megabytes(m),
        (None, None) => Rotate::None,
    };
    Ok(Command::Run(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command, String> {
        let v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse(&v, v.clone())
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration("abc"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn flags() {
        let Ok(Command::Run(c)) = p(&[
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
        ]) else {
            panic!("expected a record command");
        };
        assert_eq!(c.interval, Duration::from_millis(250));
        assert_eq!(c.rotate, Rotate::Megabytes(100));
        assert_eq!(c.filter.as_deref(), Some("tcp port 80"));
        assert_eq!(c.max_cpu, Some(5.0));
        assert_eq!(c.nice, 0);
        let Ok(Command::Run(c)) = p(&["record", "--out", "x"]) else {
            panic!("expected a record command");
        };
        assert_eq!(c.nice, DEFAULT_NICE);
        assert!(p(&["record", "--out", "x", "--nice", "20"])
            .unwrap_err()
            .contains("-20 to 19"));
        assert!(p(&["record"]).unwrap_err().contains("--out"));
        assert!(p(&["record", "--out", "x", "--bogus"])
            .unwrap_err()
            .contains("--bogus"));
        assert!(p(&["record", "--out", "x", "--filter", "tcp"]).is_err());
        assert!(p(&["once", "--out", "x", "--interval", "1s"]).is_err());
        assert!(p(&["record", "--out", "x", "--interval", "1ms"]).is_err());
        assert!(matches!(p(&["--version"]), Ok(Command::Version)));
        assert!(matches!(p(&["record", "--help"]), Ok(Command::Help)));
    }
}
