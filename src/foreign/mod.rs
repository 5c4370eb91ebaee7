//! Evidence other tools collected: a capture taken from the network joined
//! with a UAC live-response collection and Linux audit logs
//! (`procflow correlate`, `docs/foreign-evidence.md`).
//!
//! - [`uac`]: a UAC output archive or folder read into the socket → pid join
//!   at the collection instant, with process identities.
//! - [`audit`]: audit logs (raw or `ausearch -i`) assembled into socket
//!   events (`connect`, `accept`, `bind`) with their process identity.
//! - [`join`]: the clock offsets and the attribution of every flow.
//! - [`run`]: the pipeline and the reports.
//!
//! Every byte of these inputs may have been written by an attacker on the
//! host: reads are capped, names are never used as paths, text is kept
//! exact in memory and escaped at the sinks.

pub mod audit;
pub mod join;
pub mod run;
pub mod uac;

use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};

/// What an evidence path holds, recognised by content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A UAC output archive (`.tar.gz` or `.tar`).
    UacArchive {
        /// Whether gzip-compressed.
        gzip: bool,
    },
    /// An extracted UAC output folder.
    UacFolder,
    /// UAC's acquisition log (`uac-HOST-OS-DATE.log` beside the archive).
    UacAcquisitionLog,
    /// An audit log: raw `audit.log` lines, or `ausearch -i` output.
    AuditLog {
        /// Whether gzip-compressed (a rotated log compressed by logrotate).
        gzip: bool,
    },
    /// A folder of other evidence files (e.g. `/var/log/audit`).
    Folder,
    /// A procflow bundle.
    Bundle,
}

/// Why an evidence path cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// The path cannot be opened or read.
    #[error("{}: cannot read", crate::hostile::term_path(path))]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The content is none of the known kinds.
    #[error(
        "{}: not a UAC collection (a .tar.gz/.tar archive or folder with live_response/), \
         an audit log (lines `type=... msg=audit(...)`, raw or ausearch -i) nor a procflow \
         bundle; {what}",
        crate::hostile::term_path(path)
    )]
    Unknown {
        /// The path.
        path: PathBuf,
        /// What was found instead.
        what: String,
    },
    /// A procflow bundle was given as evidence.
    #[error(
        "{}: a procflow bundle; analyze it with `procflow analyze {} --pcap CAPTURE`, which \
         uses its own snapshots and events",
        crate::hostile::term_path(path),
        crate::hostile::term_path(path)
    )]
    Bundle {
        /// The bundle.
        path: PathBuf,
    },
    /// A UAC archive holds nothing usable.
    #[error("{}: {what}", crate::hostile::term_path(path))]
    Unusable {
        /// The path.
        path: PathBuf,
        /// What is missing.
        what: String,
    },
}

/// Bytes looked at to recognise a file.
const SNIFF: usize = 64 * 1024;

/// Recognises an evidence path by content.
pub fn detect(path: &Path) -> Result<Kind, EvidenceError> {
    let rd = |source| EvidenceError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(rd)?;
    if meta.is_dir() {
        let m = path.join(procflow_format::layout::MANIFEST_FILE);
        if std::fs::symlink_metadata(&m).is_ok_and(|x| x.is_file()) {
            let head = crate::hostile::read_small_file(&m, 1 << 20).unwrap_or_default();
            if String::from_utf8_lossy(&head).contains(procflow_format::layout::FORMAT_NAME) {
                return Ok(Kind::Bundle);
            }
        }
        let is_dir = |n: &str| std::fs::symlink_metadata(path.join(n)).is_ok_and(|x| x.is_dir());
        if is_dir("live_response") {
            return Ok(Kind::UacFolder);
        }
        return Ok(Kind::Folder);
    }
    if !meta.is_file() {
        return Err(EvidenceError::Unknown {
            path: path.to_path_buf(),
            what: "not a regular file or folder".into(),
        });
    }
    let mut head = Vec::new();
    std::fs::File::open(path)
        .map_err(rd)?
        .take(SNIFF as u64)
        .read_to_end(&mut head)
        .map_err(rd)?;
    let gzip = head.starts_with(&[0x1f, 0x8b]);
    let body = if gzip {
        let mut out = Vec::new();
        let mut dec = flate2::read::MultiGzDecoder::new(
            std::fs::File::open(path).map_err(rd)?.take(16 << 20),
        )
        .take(SNIFF as u64);
        // A cut archive still shows its first members.
        let _ = dec.read_to_end(&mut out);
        out
    } else {
        head
    };
    if is_tar(&body) {
        return Ok(Kind::UacArchive { gzip });
    }
    let text = String::from_utf8_lossy(&body);
    if text.starts_with("Created by UAC") || text.contains("[Acquisition Information]") {
        return Ok(Kind::UacAcquisitionLog);
    }
    if looks_like_audit(&text) {
        return Ok(Kind::AuditLog { gzip });
    }
    let first = text.lines().next().unwrap_or("");
    Err(EvidenceError::Unknown {
        path: path.to_path_buf(),
        what: if body.is_empty() {
            "the file is empty".into()
        } else {
            format!(
                "it begins with {:?}",
                crate::hostile::term(&first.chars().take(60).collect::<String>())
            )
        },
    })
}

/// A POSIX tar header: `ustar` magic at offset 257.
fn is_tar(b: &[u8]) -> bool {
    b.len() >= 512 && b.get(257..262) == Some(b"ustar")
}

/// Audit text: a line starting `type=WORD msg=audit(` or `node=... type=`.
fn looks_like_audit(text: &str) -> bool {
    text.lines().take(200).any(|l| {
        let l = l.trim_start();
        (l.starts_with("type=") || l.starts_with("node=")) && l.contains(" msg=audit(")
    })
}

/// Reads one line of at most `cap` bytes (without the newline) into `buf`;
/// the rest of a longer line is consumed and dropped. Returns `None` at the
/// end, else whether the line was cut.
pub fn read_capped_line<R: BufRead>(
    r: &mut R,
    buf: &mut Vec<u8>,
    cap: usize,
) -> io::Result<Option<bool>> {
    buf.clear();
    let mut cut = false;
    let mut any = false;
    loop {
        let chunk = match r.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(if any { Some(cut) } else { None });
        }
        any = true;
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        let room = cap.saturating_sub(buf.len());
        if take > room {
            cut = true;
        }
        buf.extend_from_slice(&chunk[..take.min(room)]);
        r.consume(if done { take + 1 } else { take });
        if done {
            return Ok(Some(cut));
        }
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Hinnant's
/// `days_from_civil`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Seconds since the epoch of a UTC civil time; `None` when out of range.
pub fn epoch_secs(y: i64, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Option<i64> {
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    if !(1970..=2200).contains(&y) {
        return None;
    }
    Some(
        days_from_civil(y, mo, d) * 86_400
            + i64::from(h) * 3600
            + i64::from(mi) * 60
            + i64::from(s),
    )
}

/// Month number of an English three-letter abbreviation.
pub fn month_number(m: &str) -> Option<u32> {
    const M: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let m = m.get(..3)?.to_ascii_lowercase();
    M.iter().position(|x| *x == m).map(|i| i as u32 + 1)
}

/// Parses `HH:MM:SS` into its three numbers.
pub fn hms(s: &str) -> Option<(u32, u32, u32)> {
    let mut it = s.split(':');
    let h = it.next()?.parse().ok()?;
    let m = it.next()?.parse().ok()?;
    let sec = it.next()?.parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    Some((h, m, sec))
}

/// A `+HHMM` / `-HHMM` zone offset in seconds.
pub fn zone_secs(z: &str) -> Option<i64> {
    let (sign, digits) = match z.as_bytes().first()? {
        b'+' => (1, &z[1..]),
        b'-' => (-1, &z[1..]),
        _ => return None,
    };
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let h: i64 = digits[..2].parse().ok()?;
    let m: i64 = digits[2..].parse().ok()?;
    Some(sign * (h * 3600 + m * 60))
}

/// `Sat Dec  5 19:38:31 2026` or `Sat Dec 05 19:38:52 2026 +0000`
/// (ps lstart, date, UAC's acquisition log) as seconds since the epoch;
/// without a zone, `default_zone` seconds east of UTC.
pub fn parse_ctime(s: &str, default_zone: i64) -> Option<i64> {
    let f: Vec<&str> = s.split_whitespace().collect();
    // [Weekday] Mon Day HH:MM:SS [TZNAME] Year [+HHMM]
    let start = usize::from(f.first().is_some_and(|w| month_number(w).is_none()));
    let mon = month_number(f.get(start)?)?;
    let day: u32 = f.get(start + 1)?.parse().ok()?;
    let (h, mi, sec) = hms(f.get(start + 2)?)?;
    let mut i = start + 3;
    let mut zone = None;
    let year: i64 = loop {
        let w = f.get(i)?;
        if let Ok(y) = w.parse::<i64>() {
            break y;
        }
        if *w == "UTC" || *w == "GMT" {
            zone = Some(0);
        }
        i += 1;
        if i > start + 5 {
            return None;
        }
    };
    if let Some(z) = f.get(i + 1).and_then(|z| zone_secs(z)) {
        zone = Some(z);
    }
    Some(epoch_secs(year, mon, day, h, mi, sec)? - zone.unwrap_or(default_zone))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        let s = epoch_secs(2026, 12, 5, 19, 38, 52).unwrap();
        assert_eq!(
            procflow_format::time::rfc3339_ns(s * 1_000_000_000),
            "2026-12-05T19:38:52.000000000Z"
        );
        assert_eq!(parse_ctime("Sat Dec  5 19:38:52 2026", 0), Some(s));
        assert_eq!(parse_ctime("Sat Dec 05 19:38:52 2026 +0000", 3600), Some(s));
        assert_eq!(parse_ctime("Sat Dec  5 19:38:52 UTC 2026", 3600), Some(s));
        assert_eq!(parse_ctime("Sat Dec 05 20:38:52 2026 +0100", 0), Some(s));
        assert_eq!(parse_ctime("junk", 0), None);
    }

    #[test]
    fn capped_lines() {
        let data = b"short\nlooooooong\n\nlast";
        let mut r = io::BufReader::with_capacity(3, &data[..]);
        let mut b = Vec::new();
        assert_eq!(read_capped_line(&mut r, &mut b, 5).unwrap(), Some(false));
        assert_eq!(b, b"short");
        assert_eq!(read_capped_line(&mut r, &mut b, 5).unwrap(), Some(true));
        assert_eq!(b, b"loooo");
        assert_eq!(read_capped_line(&mut r, &mut b, 5).unwrap(), Some(false));
        assert_eq!(b, b"");
        assert_eq!(read_capped_line(&mut r, &mut b, 5).unwrap(), Some(false));
        assert_eq!(b, b"last");
        assert_eq!(read_capped_line(&mut r, &mut b, 5).unwrap(), None);
    }
}
