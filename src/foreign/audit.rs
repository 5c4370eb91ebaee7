//! Linux audit logs (`audit.log`, rotated files, `ausearch -i` output)
//! assembled into socket events: `connect`, `accept`/`accept4`, `bind`,
//! each with the process that made the call.
//!
//! A log is read line by line, each line capped ([`LINE_CAP`]); records are
//! joined by their `msg=audit(TIME:SERIAL)` stamp, with at most
//! [`OPEN_CAP`] events open at once (the oldest is closed first). Memory is
//! bounded by the events kept, each bounded ([`PROCTITLE_CAP`]).

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use super::EvidenceError;

/// Longest line kept (the rest of a longer line is dropped and counted).
pub const LINE_CAP: usize = 64 * 1024;
/// Events assembled at once.
pub const OPEN_CAP: usize = 4096;
/// Longest command line kept from a PROCTITLE record, in bytes.
pub const PROCTITLE_CAP: usize = 4096;
/// Largest decompressed size read from a compressed log.
const GZ_CAP: u64 = 16 << 30;

/// The socket call an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Call {
    /// `connect(2)`.
    Connect,
    /// `accept(2)` or `accept4(2)`.
    Accept,
    /// `bind(2)`.
    Bind,
}

/// One assembled socket event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// The record's time, ns since the epoch, on the audited host's clock.
    pub t_ns: i64,
    /// The record's serial.
    pub serial: u64,
    /// Which call.
    pub call: Call,
    /// Whether the call succeeded.
    pub success: bool,
    /// Its return value (negative errno on failure), when read.
    pub exit: Option<i64>,
    /// For connect: whether a connection was started (success, or a failure
    /// after the SYN was sent); for the others: success.
    pub started: bool,
    /// Process id.
    pub pid: u32,
    /// Parent pid.
    pub ppid: Option<u32>,
    /// Real uid.
    pub uid: Option<u32>,
    /// Login uid (`auid`; `None` when unset).
    pub auid: Option<u32>,
    /// Login session (`ses`; `None` when unset).
    pub ses: Option<u32>,
    /// comm at the call.
    pub comm: Option<String>,
    /// exe at the call.
    pub exe: Option<String>,
    /// Command line from PROCTITLE, split at NUL.
    pub proctitle: Vec<String>,
    /// The IPv4/IPv6 address of the SOCKADDR record: for connect and
    /// accept the peer's, for bind the local one.
    pub addr: SocketAddr,
}

/// What could not be used, counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct AuditProblems {
    /// Lines read.
    pub lines: u64,
    /// Lines that are not audit records.
    pub bad_lines: u64,
    /// First bad lines, with file and line number.
    pub bad_line_details: Vec<String>,
    /// Lines longer than the cap (their rest dropped).
    pub long_lines: u64,
    /// Socket calls whose SOCKADDR record is missing or unreadable.
    pub without_sockaddr: u64,
    /// Socket calls on other families (unix, netlink): not network flows.
    pub other_family: u64,
    /// Connects that failed before sending anything (ENETUNREACH, EACCES,
    /// EISCONN...), and failed accepts and binds.
    pub failed: u64,
    /// Events closed early because too many were open at once.
    pub evicted: u64,
    /// Records of other calls (the log's rules may audit more).
    pub other_syscalls: u64,
    /// `ausearch -i` lines: their times are local times, read as UTC.
    pub interpreted_lines: u64,
}

/// An audit log (one or several files), parsed.
#[derive(Debug, Clone, Default)]
pub struct AuditLog {
    /// Files read.
    pub paths: Vec<PathBuf>,
    /// Socket events, by time.
    pub events: Vec<AuditEvent>,
    /// What could not be used.
    pub problems: AuditProblems,
    /// First and last record time, ns (audit clock).
    pub range: Option<(i64, i64)>,
}

#[derive(Debug, Default)]
struct Partial {
    t_ns: i64,
    serial: u64,
    syscall: Option<HashMap<String, String>>,
    sockaddr: Option<Option<SocketAddr>>,
    sockaddr_family: Option<String>,
    proctitle: Vec<String>,
}

/// Reads audit log files (each raw, `ausearch -i` output, or gzip of one)
/// into one log.
pub fn read(files: &[(PathBuf, bool)]) -> Result<AuditLog, EvidenceError> {
    let mut log = AuditLog::default();
    let mut open: HashMap<(i64, u64), Partial> = HashMap::new();
    let mut order: VecDeque<(i64, u64)> = VecDeque::new();
    for (path, gzip) in files {
        let f = std::fs::File::open(path).map_err(|source| EvidenceError::Read {
            path: path.clone(),
            source,
        })?;
        let mut r: Box<dyn BufRead> = if *gzip {
            Box::new(BufReader::new(
                flate2::read::MultiGzDecoder::new(BufReader::new(f)).take(GZ_CAP),
            ))
        } else {
            Box::new(BufReader::with_capacity(1 << 16, f))
        };
        let name = path.display().to_string();
        let mut buf = Vec::with_capacity(1024);
        let mut n = 0u64;
        loop {
            let cut = match super::read_capped_line(&mut r, &mut buf, LINE_CAP) {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    push_bad(&mut log.problems, &name, n + 1, &format!("read error: {e}"));
                    break;
                }
            };
            n += 1;
            log.problems.lines += 1;
            if cut {
                log.problems.long_lines += 1;
            }
            let line = String::from_utf8_lossy(&buf);
            let line = line.trim_end_matches('\r');
            if line.is_empty() || line == "----" {
                continue;
            }
            let Some(rec) = record(line) else {
                push_bad(&mut log.problems, &name, n, "not an audit record");
                continue;
            };
            if rec.interpreted {
                log.problems.interpreted_lines += 1;
            }
            log.range = Some(match log.range {
                Some((a, b)) => (a.min(rec.t_ns), b.max(rec.t_ns)),
                None => (rec.t_ns, rec.t_ns),
            });
            let key = (rec.t_ns, rec.serial);
            if !open.contains_key(&key) {
                if open.len() >= OPEN_CAP {
                    if let Some(old) = order.pop_front() {
                        if let Some(p) = open.remove(&old) {
                            log.problems.evicted += 1;
                            finish(p, &mut log);
                        }
                    }
                }
                order.push_back(key);
                open.insert(
                    key,
                    Partial {
                        t_ns: rec.t_ns,
                        serial: rec.serial,
                        ..Partial::default()
                    },
                );
            }
            let Some(p) = open.get_mut(&key) else {
                continue;
            };
            match rec.kind {
                "SYSCALL" => p.syscall = Some(fields(rec.body, rec.interpreted)),
                "SOCKADDR" => {
                    let (a, fam) = sockaddr(rec.body, rec.interpreted);
                    p.sockaddr = Some(a);
                    p.sockaddr_family = fam;
                }
                "PROCTITLE" => p.proctitle = proctitle(rec.body, rec.interpreted),
                "EOE" => {
                    if let Some(p) = open.remove(&key) {
                        finish(p, &mut log);
                    }
                }
                _ => {}
            }
        }
        log.paths.push(path.clone());
    }
    // Events still open at the end, in the order they began.
    for k in order {
        if let Some(p) = open.remove(&k) {
            finish(p, &mut log);
        }
    }
    log.events.sort_by_key(|e| (e.t_ns, e.serial));
    Ok(log)
}

fn push_bad(p: &mut AuditProblems, file: &str, line: u64, why: &str) {
    p.bad_lines += 1;
    if p.bad_line_details.len() < 50 {
        p.bad_line_details
            .push(format!("{file} line {line}: {why}"));
    }
}

struct Record<'a> {
    kind: &'a str,
    t_ns: i64,
    serial: u64,
    body: &'a str,
    interpreted: bool,
}

/// `[node=N ]type=KIND msg=audit(STAMP:SERIAL): BODY` (raw) or
/// `type=KIND msg=audit(MM/DD/YYYY HH:MM:SS.mmm:SERIAL) : BODY` (ausearch -i).
fn record(line: &str) -> Option<Record<'_>> {
    let l = line.trim_start();
    let l = match l.strip_prefix("node=") {
        Some(r) => r.split_once(' ')?.1,
        None => l,
    };
    let l = l.strip_prefix("type=")?;
    let (kind, rest) = l.split_once(' ')?;
    let rest = rest.strip_prefix("msg=audit(")?;
    let close = rest.find(')')?;
    let stamp = &rest[..close];
    let body = rest[close + 1..].trim_start_matches([' ', ':']);
    let (time, serial) = stamp.rsplit_once(':')?;
    let serial: u64 = serial.parse().ok()?;
    let (t_ns, interpreted) = if time.contains('/') {
        (interpreted_time(time)?, true)
    } else {
        (raw_time(time)?, false)
    };
    Some(Record {
        kind,
        t_ns,
        serial,
        body,
        interpreted,
    })
}

/// `1796499512.287` → ns.
fn raw_time(s: &str) -> Option<i64> {
    let (sec, frac) = s.split_once('.').unwrap_or((s, "0"));
    let sec: i64 = sec.parse().ok()?;
    if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_ns: i64 = format!("{frac:0<9}").parse().ok()?;
    sec.checked_mul(1_000_000_000)?.checked_add(frac_ns)
}

/// `12/05/2026 19:38:33.318` (or a two-digit year) → ns, read as UTC.
fn interpreted_time(s: &str) -> Option<i64> {
    let (date, time) = s.split_once(' ')?;
    let mut d = date.split('/');
    let mo: u32 = d.next()?.parse().ok()?;
    let day: u32 = d.next()?.parse().ok()?;
    let mut y: i64 = d.next()?.parse().ok()?;
    if y < 100 {
        y += 2000;
    }
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let (h, mi, sec) = super::hms(hms)?;
    let secs = super::epoch_secs(y, mo, day, h, mi, sec)?;
    raw_time(&format!("{secs}.{frac}"))
}

/// Whether `s` is an even number of hex digits (a hex-encoded value).
fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.len().is_multiple_of(2) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn unhex(s: &str) -> Vec<u8> {
    s.as_bytes()
        .chunks(2)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .filter_map(|c| u8::from_str_radix(c, 16).ok())
        .collect()
}

/// The `key=value` fields of a record body (the raw part before the
/// enriched `\x1d` separator, whose interpreted names are kept as
/// `ENRICHED:KEY`). Values: quotes removed, hex decoded for the fields the
/// kernel hex-encodes (raw logs only), text cut at 4 KiB.
fn fields(body: &str, interpreted: bool) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let (raw, enriched) = body.split_once('\x1d').unwrap_or((body, ""));
    for tok in raw.split(' ') {
        let Some((k, v)) = tok.split_once('=') else {
            continue;
        };
        if out.len() > 128 {
            break;
        }
        let v = if let Some(q) = v.strip_prefix('"') {
            q.strip_suffix('"').unwrap_or(q).to_string()
        } else if !interpreted && matches!(k, "comm" | "exe") && is_hex(v) {
            String::from_utf8_lossy(&unhex(v)).into_owned()
        } else {
            v.to_string()
        };
        out.insert(k.to_string(), cut(v, 4096));
    }
    for tok in enriched.split(' ') {
        if let Some((k, v)) = tok.split_once('=') {
            if out.len() > 160 {
                break;
            }
            out.insert(
                format!("ENRICHED:{k}"),
                cut(v.trim_matches('"').to_string(), 256),
            );
        }
    }
    out
}

fn cut(mut s: String, n: usize) -> String {
    if s.len() > n {
        let mut i = n;
        while !s.is_char_boundary(i) {
            i -= 1;
        }
        s.truncate(i);
    }
    s
}

/// A SOCKADDR body: the IPv4/IPv6 address, and the family name when it is
/// another family.
fn sockaddr(body: &str, interpreted: bool) -> (Option<SocketAddr>, Option<String>) {
    let f = fields(body, interpreted);
    if let Some(h) = f.get("saddr").filter(|h| is_hex(h)) {
        let b = unhex(h);
        let fam_le = b.get(..2).map(|x| u16::from_le_bytes([x[0], x[1]]));
        let fam_be = b.get(..2).map(|x| u16::from_be_bytes([x[0], x[1]]));
        let port = b.get(2..4).map(|x| u16::from_be_bytes([x[0], x[1]]));
        let fam = match (fam_le, fam_be) {
            (Some(2), _) | (_, Some(2)) => 2,
            (Some(10), _) | (_, Some(10)) => 10,
            (Some(x), _) => x,
            _ => return (None, Some("empty".into())),
        };
        return match (fam, port) {
            (2, Some(p)) => match b.get(4..8) {
                Some(a) => (
                    Some(SocketAddr::new(
                        IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])),
                        p,
                    )),
                    None,
                ),
                None => (None, Some("inet (short)".into())),
            },
            (10, Some(p)) => match b.get(8..24).and_then(|a| <[u8; 16]>::try_from(a).ok()) {
                Some(a) => (
                    Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), p)),
                    None,
                ),
                None => (None, Some("inet6 (short)".into())),
            },
            (1, _) => (None, Some("local".into())),
            (16, _) => (None, Some("netlink".into())),
            (x, _) => (None, Some(format!("family {x}"))),
        };
    }
    // ausearch -i: saddr={ saddr_fam=inet laddr=198.18.0.2 lport=9001 }
    let fam = f
        .get("saddr_fam")
        .or_else(|| f.get("fam"))
        .cloned()
        .unwrap_or_default();
    if fam == "inet" || fam == "inet6" {
        let ip = f.get("laddr").and_then(|a| a.parse::<IpAddr>().ok());
        let port = f.get("lport").and_then(|p| p.parse::<u16>().ok());
        if let (Some(ip), Some(port)) = (ip, port) {
            return (Some(SocketAddr::new(ip, port)), None);
        }
        return (None, Some(format!("{fam} (unreadable)")));
    }
    (
        None,
        Some(if fam.is_empty() {
            "unreadable".into()
        } else {
            fam
        }),
    )
}

/// A PROCTITLE body: hex of NUL-separated arguments (raw), quoted text, or
/// the interpreted text (ausearch -i, arguments joined by blanks).
fn proctitle(body: &str, interpreted: bool) -> Vec<String> {
    let v = body
        .split_once("proctitle=")
        .map(|(_, v)| v)
        .unwrap_or("")
        .split('\x1d')
        .next()
        .unwrap_or("");
    let bytes: Vec<u8> = if interpreted {
        v.as_bytes().to_vec()
    } else if let Some(q) = v.strip_prefix('"') {
        q.strip_suffix('"').unwrap_or(q).as_bytes().to_vec()
    } else {
        // A cut line can leave an odd count: decode the whole pairs.
        let h = v.split(' ').next().unwrap_or("");
        let h = &h[..h.len() - h.len() % 2];
        if !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Vec::new();
        }
        unhex(&h[..h.len().min(PROCTITLE_CAP * 2)])
    };
    let bytes = &bytes[..bytes.len().min(PROCTITLE_CAP)];
    let sep = if interpreted { b' ' } else { 0u8 };
    let mut args: Vec<String> = bytes
        .split(|&b| b == sep)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    while args.last().is_some_and(String::is_empty) {
        args.pop();
    }
    args
}

/// The call of a SYSCALL record: from the enriched or interpreted name,
/// else from the architecture's number.
fn call_of(f: &HashMap<String, String>) -> Option<Option<Call>> {
    let name = f.get("ENRICHED:SYSCALL").cloned().or_else(|| {
        f.get("syscall")
            .filter(|s| !s.bytes().all(|b| b.is_ascii_digit()))
            .cloned()
    });
    let by_name = |n: &str| match n {
        "connect" => Some(Call::Connect),
        "accept" | "accept4" => Some(Call::Accept),
        "bind" => Some(Call::Bind),
        _ => None,
    };
    if let Some(n) = name {
        return Some(by_name(&n));
    }
    let nr: u32 = f.get("syscall")?.parse().ok()?;
    let arch = f.get("arch").map(String::as_str).unwrap_or("");
    Some(match (arch, nr) {
        ("c000003e", 42) => Some(Call::Connect),
        ("c000003e", 43 | 288) => Some(Call::Accept),
        ("c000003e", 49) => Some(Call::Bind),
        ("c00000b7" | "c00000f3", 203) => Some(Call::Connect),
        ("c00000b7" | "c00000f3", 202 | 242) => Some(Call::Accept),
        ("c00000b7" | "c00000f3", 200) => Some(Call::Bind),
        ("40000003", 362) => Some(Call::Connect),
        ("40000003", 364) => Some(Call::Accept),
        ("40000003", 361) => Some(Call::Bind),
        _ => None,
    })
}

/// `exit=-115`, `exit=EINPROGRESS(Operation now in progress)`, `exit=3`.
fn exit_value(s: &str) -> Option<i64> {
    if let Ok(v) = s.parse() {
        return Some(v);
    }
    let name = s.split('(').next().unwrap_or("");
    Some(match name {
        "EINTR" => -4,
        "EAGAIN" => -11,
        "EACCES" => -13,
        "EPERM" => -1,
        "EBADF" => -9,
        "EADDRNOTAVAIL" => -99,
        "ENETUNREACH" => -101,
        "ECONNRESET" => -104,
        "EISCONN" => -106,
        "ETIMEDOUT" => -110,
        "ECONNREFUSED" => -111,
        "EHOSTUNREACH" => -113,
        "EALREADY" => -114,
        "EINPROGRESS" => -115,
        _ => return None,
    })
}

/// Failures of connect(2) after which the SYN was sent: the connection
/// was started (EINPROGRESS: non-blocking; EINTR: it goes on; the others
/// came back from the peer or the network).
pub fn connect_started(success: bool, exit: Option<i64>) -> bool {
    success || matches!(exit, Some(-115 | -4 | -111 | -110 | -113 | -104))
}

/// `unknown(1500)` (interpreted), `1500`, `4294967295` / `unset` → None.
fn id(s: Option<&String>) -> Option<u32> {
    let s = s?;
    let digits = match s.split_once('(') {
        Some((_, r)) => r.trim_end_matches(')'),
        None => s.as_str(),
    };
    digits.parse::<u32>().ok().filter(|&v| v != u32::MAX)
}

fn finish(p: Partial, log: &mut AuditLog) {
    let Some(f) = p.syscall else { return };
    let call = match call_of(&f) {
        Some(Some(c)) => c,
        _ => {
            log.problems.other_syscalls += 1;
            return;
        }
    };
    let success = f.get("success").is_some_and(|s| s == "yes");
    let exit = f.get("exit").and_then(|e| exit_value(e));
    let started = match call {
        Call::Connect => connect_started(success, exit),
        _ => success,
    };
    if !started {
        // A failed accept returns no address; a failed connect or bind
        // sent nothing.
        log.problems.failed += 1;
        return;
    }
    let Some(sa) = p.sockaddr else {
        log.problems.without_sockaddr += 1;
        return;
    };
    let Some(addr) = sa else {
        if p.sockaddr_family
            .as_deref()
            .is_some_and(|x| x.contains("unreadable") || x.contains("short") || x == "empty")
        {
            log.problems.without_sockaddr += 1;
        } else {
            log.problems.other_family += 1;
        }
        return;
    };
    let Some(pid) = f.get("pid").and_then(|x| x.parse().ok()) else {
        log.problems.without_sockaddr += 1;
        return;
    };
    log.events.push(AuditEvent {
        t_ns: p.t_ns,
        serial: p.serial,
        call,
        success,
        exit,
        started,
        pid,
        ppid: f.get("ppid").and_then(|x| x.parse().ok()),
        uid: id(f.get("uid")),
        auid: id(f.get("auid")),
        ses: id(f.get("ses")),
        comm: f.get("comm").filter(|c| *c != "(null)").cloned(),
        exe: f.get("exe").filter(|c| *c != "(null)").cloned(),
        proctitle: p.proctitle,
        addr: SocketAddr::new(addr.ip().to_canonical(), addr.port()),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> AuditLog {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        std::fs::write(&p, text).unwrap();
        read(&[(p, false)]).unwrap()
    }

    #[test]
    fn raw_connect_event() {
        let log = parse_text(
            "type=SYSCALL msg=audit(1796499513.318:7650): arch=c000003e syscall=42 success=no exit=-115 a0=3 items=0 ppid=14126 pid=14954 auid=1500 uid=0 ses=11 comm=\"python3\" exe=\"/usr/bin/python3.11\" key=\"netev\"\x1dARCH=x86_64 SYSCALL=connect AUID=\"unknown(1500)\"\n\
             type=SOCKADDR msg=audit(1796499513.318:7650): saddr=02002329C6120002000000000000000000\x1dSADDR={ saddr_fam=inet laddr=198.18.0.2 lport=9001 }\n\
             type=PROCTITLE msg=audit(1796499513.318:7650): proctitle=2F7573722F62696E2F707974686F6E33002D63\n",
        );
        assert_eq!(log.events.len(), 1);
        let e = &log.events[0];
        assert_eq!(e.call, Call::Connect);
        assert!(e.started && !e.success);
        assert_eq!(e.addr, "198.18.0.2:9001".parse().unwrap());
        assert_eq!(e.proctitle, vec!["/usr/bin/python3", "-c"]);
        assert_eq!((e.pid, e.auid, e.ses), (14954, Some(1500), Some(11)));
        assert_eq!(e.t_ns, 1_796_499_513_318_000_000);
    }

    #[test]
    fn interpreted_accept_and_refused_failures() {
        let log = parse_text(
            "----\n\
             type=PROCTITLE msg=audit(12/05/2026 19:38:38.287:7671) : proctitle=/usr/bin/python3 srv.py\n\
             type=SOCKADDR msg=audit(12/05/2026 19:38:38.287:7671) : saddr={ saddr_fam=inet6 laddr=2001:db8::2 lport=47182 }\n\
             type=SYSCALL msg=audit(12/05/2026 19:38:38.287:7671) : arch=x86_64 syscall=accept4 success=yes exit=4 ppid=1 pid=14883 auid=unknown(1500) uid=root ses=11 comm=python3 exe=/usr/bin/python3.11 key=netev\n\
             ----\n\
             type=SOCKADDR msg=audit(12/05/2026 19:38:39.000:7672) : saddr={ saddr_fam=inet laddr=10.0.0.1 lport=80 }\n\
             type=SYSCALL msg=audit(12/05/2026 19:38:39.000:7672) : arch=x86_64 syscall=connect success=no exit=ENETUNREACH(Network is unreachable) pid=5 auid=unset ses=unset\n",
        );
        assert_eq!(log.events.len(), 1);
        let e = &log.events[0];
        assert_eq!(e.call, Call::Accept);
        assert_eq!(e.addr, "[2001:db8::2]:47182".parse().unwrap());
        assert_eq!(e.proctitle, vec!["/usr/bin/python3", "srv.py"]);
        assert_eq!(e.auid, Some(1500));
        assert_eq!(log.problems.failed, 1);
        assert!(log.problems.interpreted_lines > 0);
    }

    #[test]
    fn hostile_lines_are_bounded() {
        let mut t = String::new();
        t.push_str("junk junk junk\n");
        t.push_str("type=PROCTITLE msg=audit(1.000:1): proctitle=");
        t.push_str(&"41".repeat(600_000));
        t.push('\n');
        t.push_str("type=SYSCALL msg=audit(1.000:1): arch=c000003e syscall=42 success=yes exit=0 pid=7 comm=\"x\"\n");
        t.push_str("type=SOCKADDR msg=audit(1.000:1): saddr=0200005001020304\n");
        let log = parse_text(&t);
        assert_eq!(log.events.len(), 1);
        assert_eq!(log.events[0].proctitle[0].len(), PROCTITLE_CAP);
        assert_eq!(log.problems.long_lines, 1);
        assert_eq!(log.problems.bad_lines, 1);
        assert_eq!(log.events[0].addr, "1.2.3.4:80".parse().unwrap());
    }
}
