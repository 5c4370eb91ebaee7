//! A UAC (Unix-like Artifacts Collector) collection: its output archive
//! (`.tar.gz`, `.tar`) or extracted folder, read into the socket → process
//! join at the collection instant.
//!
//! Only the members the join uses are read (socket tables, fd listings,
//! `ss`/`netstat`/`lsof` output, process identity files, `ps` output,
//! `ip addr`, `uac.log`), each capped; member names are matched as text and
//! never used as paths, so `../` names and links lead nowhere.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::snapshot::procnet::{parse_table, ByteOrder};
use crate::snapshot::timeline::Transport;

use super::EvidenceError;

/// Largest member read (larger ones are cut there and said).
pub const MEMBER_CAP: usize = 4 << 20;
/// Largest `uac.log` read.
pub const LOG_CAP: usize = 32 << 20;
/// All members read together, at most.
pub const TOTAL_CAP: usize = 256 << 20;
/// Largest decompressed archive walked (a gzip bomb ends there).
pub const ARCHIVE_CAP: u64 = 16 << 30;
/// Folder entries looked at, at most.
const FOLDER_ENTRIES_CAP: usize = 2_000_000;

/// One member read.
#[derive(Debug, Clone)]
struct Member {
    /// Name from `live_response/` on (or `uac.log`).
    rel: String,
    data: Vec<u8>,
    /// Modification time, seconds since the epoch.
    mtime: Option<i64>,
    cut: bool,
}

/// A socket row of the collection's /proc/net tables, or one only an
/// `ss`/`netstat`/`lsof` line showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UacSocket {
    /// tcp or udp.
    pub transport: Transport,
    /// Local endpoint.
    pub local: SocketAddr,
    /// Remote endpoint (unspecified when unconnected).
    pub remote: SocketAddr,
    /// Kernel state number.
    pub state: u8,
    /// Owning uid.
    pub uid: u32,
    /// Inode (0: none, or not known).
    pub inode: u64,
}

/// A pid named for a tuple by `ss -anp`, `netstat -anp` or `lsof -i`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedOwner {
    /// tcp or udp.
    pub transport: Transport,
    /// Local endpoint (the address may be unspecified).
    pub local: SocketAddr,
    /// Remote endpoint (unspecified when none).
    pub remote: SocketAddr,
    /// Process id.
    pub pid: u32,
    /// Name as listed.
    pub name: String,
    /// Which listing: `ss`, `netstat` or `lsof`.
    pub tool: &'static str,
    /// Inode when the listing gave one (lsof, netstat -e).
    pub inode: Option<u64>,
}

/// A tuple `ss` listed without a process: transport, local, remote, state
/// name as printed.
pub type ListedTuple = (Transport, SocketAddr, SocketAddr, String);

/// What the collection says about one process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UacProcess {
    /// Process id.
    pub pid: u32,
    /// Field 22 of `stat.txt`.
    pub start_ticks: Option<u64>,
    /// Start time from `ps -o lstart`, seconds since the epoch (host clock).
    pub start_secs: Option<i64>,
    /// Parent pid.
    pub ppid: Option<u32>,
    /// Real uid.
    pub uid: Option<u32>,
    /// `comm.txt`, else the stat's comm, else the listing's name.
    pub comm: Option<String>,
    /// `cmdline.txt`, else the `ps` command line (split at blanks).
    pub cmdline: Vec<String>,
    /// Whether `cmdline` came from `ps` (split at blanks: approximate).
    pub cmdline_from_ps: bool,
    /// Exe link from `running_processes_full_paths.txt`.
    pub exe: Option<String>,
    /// When its fd listing was taken, seconds (host clock).
    pub fd_time: Option<i64>,
    /// Whether it had an fd listing.
    pub has_fd: bool,
}

/// Counts of what could not be used.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct UacProblems {
    /// Lines of tables and listings that could not be read.
    pub bad_lines: u64,
    /// First bad lines: member, line number, reason.
    pub bad_line_details: Vec<String>,
    /// Per-pid files missing, by file name (`cmdline.txt`: 5).
    pub missing_per_pid: BTreeMap<String, u64>,
    /// Pids with an fd listing but some identity file missing.
    pub pids_incomplete: u64,
    /// fd lines dropped: their fd number appeared twice in one listing,
    /// or the link was not a plain `socket:[N]` target.
    pub fd_lines_dropped: u64,
    /// Member names with `..` or an absolute path (never used as paths).
    pub suspicious_names: u64,
    /// Links and other non-regular members skipped.
    pub links_skipped: u64,
    /// Members cut at the size cap.
    pub members_cut: u64,
    /// The archive ended early (cut, damaged): where and why.
    pub archive_cut: Option<String>,
}

/// A UAC collection, parsed.
#[derive(Debug, Clone, Default)]
pub struct UacCollection {
    /// The path given.
    pub path: PathBuf,
    /// Host name.
    pub hostname: Option<String>,
    /// When the socket tables were read: first and last second (host clock).
    pub tables_at: Option<(i64, i64)>,
    /// When the ss/netstat/lsof listings were taken (host clock).
    pub listings_at: Option<(i64, i64)>,
    /// Acquisition start and end (host clock), seconds.
    pub acquisition: Option<(i64, i64)>,
    /// Where the times came from (`uac.log`, `archive member times`).
    pub time_source: &'static str,
    /// Socket rows.
    pub sockets: Vec<UacSocket>,
    /// Per socket inode, the (pid, fd) holding it by the fd listings.
    pub holders: HashMap<u64, Vec<(u32, u32)>>,
    /// Owners named by ss/netstat/lsof.
    pub listed: Vec<ListedOwner>,
    /// Tuples `ss` listed without a process (TIME-WAIT, orphans): state
    /// name as printed.
    pub listed_tuples: Vec<ListedTuple>,
    /// Processes by pid.
    pub processes: BTreeMap<u32, UacProcess>,
    /// The host's addresses (`ip addr`, `ifconfig`).
    pub addresses: BTreeSet<IpAddr>,
    /// What could not be used.
    pub problems: UacProblems,
    /// Whether any fd listing was found.
    pub has_fd_listings: bool,
    /// Whether socket tables were found.
    pub has_tables: bool,
}

/// The part of a member name the join knows: from `live_response/` on, or
/// `uac.log`; `None` for anything else or a name with `..`.
fn relative_name(raw: &str, problems: &mut UacProblems) -> Option<String> {
    let parts: Vec<&str> = raw
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.contains(&"..") || raw.starts_with('/') {
        problems.suspicious_names += 1;
        if parts.contains(&"..") {
            return None;
        }
    }
    if let Some(i) = parts.iter().position(|p| *p == "live_response") {
        return Some(parts[i..].join("/"));
    }
    match parts.as_slice() {
        [n] | [_, n] if *n == "uac.log" => Some("uac.log".into()),
        _ => None,
    }
}

/// Whether the join reads this member.
fn wanted(rel: &str) -> bool {
    if rel == "uac.log" {
        return true;
    }
    let Some(r) = rel.strip_prefix("live_response/") else {
        return false;
    };
    if let Some(p) = r.strip_prefix("process/proc/") {
        let mut it = p.split('/');
        let pid_ok = it
            .next()
            .is_some_and(|x| x.bytes().all(|b| b.is_ascii_digit()));
        let file = it.next();
        return pid_ok
            && it.next().is_none()
            && matches!(
                file,
                Some("fd.txt" | "comm.txt" | "stat.txt" | "status.txt" | "cmdline.txt")
            );
    }
    matches!(
        r,
        "network/proc_net_tcp.txt"
            | "network/proc_net_tcp6.txt"
            | "network/proc_net_udp.txt"
            | "network/proc_net_udp6.txt"
            | "network/ss_-anp.txt"
            | "network/ss_-tanp.txt"
            | "network/ss_-uanp.txt"
            | "network/netstat_-anp.txt"
            | "network/lsof_-nPli.txt"
            | "network/ip_addr_show.txt"
            | "network/ifconfig_-a.txt"
            | "network/hostname.txt"
            | "process/ps_-axo_pid_user_lstart_args.txt"
            | "process/ps_auxwww.txt"
            | "process/ps_-ef.txt"
            | "process/running_processes_full_paths.txt"
    )
}

fn cap_for(rel: &str) -> usize {
    if rel == "uac.log" {
        LOG_CAP
    } else {
        MEMBER_CAP
    }
}

/// Reads the wanted members of a UAC archive.
fn read_archive(path: &Path, gzip: bool) -> Result<(Vec<Member>, UacProblems), EvidenceError> {
    let f = std::fs::File::open(path).map_err(|source| EvidenceError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let input: Box<dyn Read> = if gzip {
        Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(f)).take(ARCHIVE_CAP))
    } else {
        Box::new(std::io::BufReader::new(f).take(ARCHIVE_CAP))
    };
    let mut ar = tar::Archive::new(input);
    let mut members = Vec::new();
    let mut problems = UacProblems::default();
    let mut total = 0usize;
    let entries = ar.entries().map_err(|source| EvidenceError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    for e in entries {
        let mut e = match e {
            Ok(e) => e,
            Err(err) => {
                problems.archive_cut = Some(format!("the archive ends early: {err}"));
                break;
            }
        };
        let raw = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let Some(rel) = relative_name(&raw, &mut problems) else {
            continue;
        };
        if !wanted(&rel) {
            continue;
        }
        let kind = e.header().entry_type();
        if !kind.is_file() {
            problems.links_skipped += 1;
            continue;
        }
        let mtime = e.header().mtime().ok().and_then(|m| i64::try_from(m).ok());
        let cap = cap_for(&rel).min(TOTAL_CAP.saturating_sub(total));
        let mut data = Vec::new();
        if let Err(err) = (&mut e).take(cap as u64).read_to_end(&mut data) {
            problems.archive_cut = Some(format!(
                "the archive ends early in member {}: {err}",
                crate::hostile::term(&raw)
            ));
            members.push(Member {
                rel,
                data,
                mtime,
                cut: true,
            });
            break;
        }
        let cut = e.size() > data.len() as u64;
        if cut {
            problems.members_cut += 1;
        }
        total += data.len();
        members.push(Member {
            rel,
            data,
            mtime,
            cut,
        });
    }
    Ok((members, problems))
}

/// Reads the wanted files of an extracted UAC folder; links are not
/// followed, nothing outside `root` is read.
fn read_folder(root: &Path) -> Result<(Vec<Member>, UacProblems), EvidenceError> {
    let mut members = Vec::new();
    let mut problems = UacProblems::default();
    let mut total = 0usize;
    let mut stack: Vec<(PathBuf, String, usize)> = vec![(root.to_path_buf(), String::new(), 0)];
    let mut seen = 0usize;
    while let Some((dir, prefix, depth)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for ent in rd.flatten() {
            seen += 1;
            if seen > FOLDER_ENTRIES_CAP {
                break;
            }
            let name = ent.file_name().to_string_lossy().into_owned();
            let rel_raw = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            let Ok(meta) = std::fs::symlink_metadata(ent.path()) else {
                continue;
            };
            if meta.is_dir() {
                // Only the folders a UAC output has.
                if depth < 6 {
                    stack.push((ent.path(), rel_raw, depth + 1));
                }
                continue;
            }
            let Some(rel) = relative_name(&rel_raw, &mut problems) else {
                continue;
            };
            if !wanted(&rel) {
                continue;
            }
            if !meta.is_file() {
                problems.links_skipped += 1;
                continue;
            }
            let cap = cap_for(&rel).min(TOTAL_CAP.saturating_sub(total));
            let mut data = Vec::new();
            let Ok(f) = std::fs::File::open(ent.path()) else {
                continue;
            };
            let _ = f.take(cap as u64).read_to_end(&mut data);
            let cut = meta.len() > data.len() as u64;
            if cut {
                problems.members_cut += 1;
            }
            total += data.len();
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .and_then(|d| i64::try_from(d.as_secs()).ok());
            members.push(Member {
                rel,
                data,
                mtime,
                cut,
            });
        }
    }
    members.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok((members, problems))
}

/// Reads and parses a UAC archive (`gzip`: compressed) or folder.
pub fn read(path: &Path, archive: Option<bool>) -> Result<UacCollection, EvidenceError> {
    let (members, problems) = match archive {
        Some(gzip) => read_archive(path, gzip)?,
        None => read_folder(path)?,
    };
    if !members.iter().any(|m| m.rel.starts_with("live_response/")) {
        return Err(EvidenceError::Unusable {
            path: path.to_path_buf(),
            what: match &problems.archive_cut {
                Some(c) => format!("no live_response/ member before the archive ends ({c})"),
                None => "a tar archive without live_response/ members: not a UAC collection".into(),
            },
        });
    }
    Ok(parse(path, members, problems))
}

/// Appends a bad line, keeping the first 50 with details.
fn bad(p: &mut UacProblems, member: &str, line: usize, why: &str) {
    p.bad_lines += 1;
    if p.bad_line_details.len() < 50 {
        p.bad_line_details
            .push(format!("{member} line {line}: {why}"));
    }
}

/// A `uac.log` line: (seconds, zone, level, message).
fn log_line(l: &str) -> Option<(i64, i64, &str, &str)> {
    // 2026-12-05 19:38:53 +0000 CMD cat /proc/net/tcp
    let date = l.get(..10)?;
    let time = l.get(11..19)?;
    let rest = l.get(20..)?;
    let (zone, rest) = rest.split_once(' ')?;
    let (level, msg) = rest.split_once(' ').unwrap_or((rest, ""));
    let mut d = date.split('-');
    let y: i64 = d.next()?.parse().ok()?;
    let mo: u32 = d.next()?.parse().ok()?;
    let day: u32 = d.next()?.parse().ok()?;
    let (h, mi, s) = super::hms(time)?;
    let z = super::zone_secs(zone)?;
    Some((super::epoch_secs(y, mo, day, h, mi, s)? - z, z, level, msg))
}

/// `ls -la /proc/"PID"/fd` (with or without quotes) → PID.
fn fd_command_pid(cmd: &str) -> Option<u32> {
    let r = cmd.strip_prefix("ls -la /proc/")?;
    let r = r.strip_suffix("/fd")?;
    r.trim_matches('"').parse().ok()
}

fn widen(r: &mut Option<(i64, i64)>, t: i64) {
    *r = Some(match *r {
        Some((a, b)) => (a.min(t), b.max(t)),
        None => (t, t),
    });
}

fn parse(path: &Path, members: Vec<Member>, mut problems: UacProblems) -> UacCollection {
    let mut c = UacCollection {
        path: path.to_path_buf(),
        ..UacCollection::default()
    };
    let mut order = ByteOrder::Little;
    let mut zone = 0i64;
    let mut fd_times: HashMap<u32, i64> = HashMap::new();
    let mut have_log = false;
    if let Some(log) = members.iter().find(|m| m.rel == "uac.log") {
        let text = String::from_utf8_lossy(&log.data);
        for l in text.lines() {
            let Some((t, z, level, msg)) = log_line(l) else {
                continue;
            };
            have_log = true;
            zone = z;
            widen(&mut c.acquisition, t);
            if level == "INF" {
                if let Some(a) = msg.strip_prefix("System architecture: ") {
                    let a = a.trim();
                    if matches!(
                        a,
                        "s390x" | "ppc64" | "ppc" | "mips" | "mips64" | "sparc64" | "sparc"
                    ) {
                        order = ByteOrder::Big;
                    }
                }
                if let Some(h) = msg.strip_prefix("Hostname: ") {
                    c.hostname = Some(h.trim().chars().take(255).collect());
                }
            }
            if level != "CMD" {
                continue;
            }
            if matches!(
                msg,
                "cat /proc/net/tcp"
                    | "cat /proc/net/tcp6"
                    | "cat /proc/net/udp"
                    | "cat /proc/net/udp6"
            ) {
                widen(&mut c.tables_at, t);
            } else if msg.starts_with("ss -anp")
                || msg.starts_with("netstat -anp")
                || msg.starts_with("lsof -nPli")
                || msg.starts_with("ss -tanp")
                || msg.starts_with("ss -uanp")
            {
                widen(&mut c.listings_at, t);
            } else if let Some(pid) = fd_command_pid(msg) {
                fd_times.entry(pid).or_insert(t);
            }
        }
    }
    c.time_source = if have_log {
        "uac.log"
    } else {
        "archive member times"
    };
    let text = |m: &Member| String::from_utf8_lossy(&m.data).into_owned();
    for m in &members {
        let Some(r) = m.rel.strip_prefix("live_response/") else {
            continue;
        };
        match r {
            "network/proc_net_tcp.txt"
            | "network/proc_net_tcp6.txt"
            | "network/proc_net_udp.txt"
            | "network/proc_net_udp6.txt" => {
                c.has_tables = true;
                if !have_log {
                    if let Some(t) = m.mtime {
                        widen(&mut c.tables_at, t);
                    }
                }
                let transport = if r.contains("tcp") {
                    Transport::Tcp
                } else {
                    Transport::Udp
                };
                let t = parse_table(&text(m), order);
                for (line, why) in &t.errors {
                    bad(&mut problems, &m.rel, *line, &why.to_string());
                }
                for (_, row) in t.rows {
                    c.sockets.push(UacSocket {
                        transport,
                        local: row.local,
                        remote: row.remote,
                        state: row.state,
                        uid: row.uid,
                        inode: row.inode,
                    });
                }
            }
            "network/ss_-anp.txt" | "network/ss_-tanp.txt" | "network/ss_-uanp.txt" => {
                if !have_log {
                    if let Some(t) = m.mtime {
                        widen(&mut c.listings_at, t);
                    }
                }
                let default = match r {
                    "network/ss_-tanp.txt" => Some(Transport::Tcp),
                    "network/ss_-uanp.txt" => Some(Transport::Udp),
                    _ => None,
                };
                parse_ss(
                    &text(m),
                    default,
                    &m.rel,
                    (&mut c.listed, &mut c.listed_tuples),
                    &mut problems,
                );
            }
            "network/netstat_-anp.txt" => {
                if !have_log {
                    if let Some(t) = m.mtime {
                        widen(&mut c.listings_at, t);
                    }
                }
                parse_netstat(&text(m), &m.rel, &mut c.listed, &mut problems);
            }
            "network/lsof_-nPli.txt" => {
                parse_lsof(&text(m), &mut c.listed);
            }
            "network/ip_addr_show.txt" | "network/ifconfig_-a.txt" => {
                for l in text(m).lines() {
                    let mut f = l.split_whitespace();
                    if let (Some("inet" | "inet6"), Some(a)) = (f.next(), f.next()) {
                        let a = a.split(['/', '%']).next().unwrap_or("");
                        if let Ok(ip) = a.parse::<IpAddr>() {
                            c.addresses.insert(ip.to_canonical());
                        }
                    }
                }
            }
            "network/hostname.txt" => {
                let h = text(m);
                if c.hostname.is_none() {
                    c.hostname = Some(h.trim().chars().take(255).collect());
                }
            }
            "process/ps_-axo_pid_user_lstart_args.txt" => {
                for l in text(m).lines().skip(1) {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    let Some(pid) = f.first().and_then(|p| p.parse::<u32>().ok()) else {
                        continue;
                    };
                    let p = proc_entry(&mut c.processes, pid);
                    if f.len() >= 7 {
                        p.start_secs = super::parse_ctime(&f[2..7].join(" "), zone);
                        if p.cmdline.is_empty() && f.len() > 7 {
                            p.cmdline = f[7..].iter().map(|s| s.to_string()).collect();
                            p.cmdline_from_ps = true;
                        }
                    }
                }
            }
            "process/ps_-ef.txt" => {
                for l in text(m).lines().skip(1) {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    if let (Some(pid), Some(ppid)) = (
                        f.get(1).and_then(|p| p.parse::<u32>().ok()),
                        f.get(2).and_then(|p| p.parse::<u32>().ok()),
                    ) {
                        proc_entry(&mut c.processes, pid).ppid.get_or_insert(ppid);
                    }
                }
            }
            "process/running_processes_full_paths.txt" => {
                // `lrwxrwxrwx 1 root root 0 Dec  5 19:38 /proc/14883/exe -> /usr/bin/python3.11`
                for l in text(m).lines() {
                    let Some((left, target)) = l.split_once(" -> ") else {
                        continue;
                    };
                    let Some(pid) = left
                        .rsplit_once("/proc/")
                        .and_then(|(_, r)| r.strip_suffix("/exe"))
                        .and_then(|p| p.parse::<u32>().ok())
                    else {
                        continue;
                    };
                    proc_entry(&mut c.processes, pid).exe = Some(target.to_string());
                }
            }
            _ => {}
        }
    }
    // Per-pid files.
    let mut per_pid: BTreeMap<u32, BTreeMap<&str, &Member>> = BTreeMap::new();
    for m in &members {
        if let Some(p) = m.rel.strip_prefix("live_response/process/proc/") {
            if let Some((pid, file)) = p.split_once('/') {
                if let Ok(pid) = pid.parse::<u32>() {
                    per_pid.entry(pid).or_default().insert(file, m);
                }
            }
        }
    }
    for (pid, files) in &per_pid {
        let p = proc_entry(&mut c.processes, *pid);
        if let Some(m) = files.get("fd.txt") {
            c.has_fd_listings = true;
            p.has_fd = true;
            p.fd_time = fd_times.get(pid).copied().or(m.mtime);
            parse_fd(&text(m), *pid, &m.rel, &mut c.holders, &mut problems);
        }
        if let Some(m) = files.get("comm.txt") {
            let s = text(m);
            let s = s.strip_suffix('\n').unwrap_or(&s);
            if !s.is_empty() {
                p.comm = Some(s.chars().take(64).collect());
            }
        }
        if let Some(m) = files.get("stat.txt") {
            let s = text(m);
            // comm may hold spaces and parentheses: fields after the last ')'.
            if let Some((head, rest)) = s.rsplit_once(')') {
                let f: Vec<&str> = rest.split_whitespace().collect();
                p.ppid = f.get(1).and_then(|x| x.parse().ok()).or(p.ppid);
                p.start_ticks = f.get(19).and_then(|x| x.parse().ok());
                if p.comm.is_none() {
                    p.comm = head
                        .split_once('(')
                        .map(|(_, c)| c.chars().take(64).collect());
                }
            }
        }
        if let Some(m) = files.get("status.txt") {
            for l in text(m).lines() {
                if let Some(v) = l.strip_prefix("Uid:") {
                    p.uid = v.split_whitespace().next().and_then(|x| x.parse().ok());
                } else if let Some(v) = l.strip_prefix("PPid:") {
                    p.ppid = v.trim().parse().ok().or(p.ppid);
                }
            }
        }
        if let Some(m) = files.get("cmdline.txt") {
            // As the kernel gives it (NUL-separated) or as UAC writes it
            // (one argument a line).
            let sep = if m.data.contains(&0) { '\0' } else { '\n' };
            let args: Vec<String> = String::from_utf8_lossy(&m.data)
                .split(sep)
                .map(str::to_string)
                .collect();
            let mut args = args;
            while args.last().is_some_and(String::is_empty) {
                args.pop();
            }
            if !args.is_empty() {
                p.cmdline = args;
                p.cmdline_from_ps = false;
            }
        }
        if files.contains_key("fd.txt") {
            let mut incomplete = false;
            for f in ["comm.txt", "stat.txt", "status.txt", "cmdline.txt"] {
                if !files.contains_key(f) || files.get(f).is_some_and(|m| m.cut) {
                    *problems.missing_per_pid.entry(f.to_string()).or_default() += 1;
                    incomplete = true;
                }
            }
            if incomplete {
                problems.pids_incomplete += 1;
            }
        }
    }
    // Names from the listings for processes without comm.
    for l in &c.listed {
        let p = proc_entry(&mut c.processes, l.pid);
        if p.comm.is_none() && !l.name.is_empty() {
            p.comm = Some(l.name.clone());
        }
    }
    // Local addresses of the tables are the host's too.
    for s in &c.sockets {
        let ip = s.local.ip().to_canonical();
        if !ip.is_unspecified() {
            c.addresses.insert(ip);
        }
    }
    c.problems = problems;
    c
}

fn proc_entry(m: &mut BTreeMap<u32, UacProcess>, pid: u32) -> &mut UacProcess {
    m.entry(pid).or_insert_with(|| UacProcess {
        pid,
        ..UacProcess::default()
    })
}

/// `ls -la /proc/PID/fd`: `lrwx------ 1 root root 64 Dec  5 19:38 3 -> socket:[975829]`.
/// Only a link line whose fd is a number and whose whole target is
/// `socket:[DIGITS]` counts; an fd number listed twice (a file name with a
/// newline can forge a line) drops both.
fn parse_fd(
    text: &str,
    pid: u32,
    member: &str,
    holders: &mut HashMap<u64, Vec<(u32, u32)>>,
    problems: &mut UacProblems,
) {
    let mut fds: BTreeMap<u32, Option<u64>> = BTreeMap::new();
    let mut dup: BTreeSet<u32> = BTreeSet::new();
    for (i, l) in text.lines().enumerate() {
        if !l.starts_with('l') {
            continue;
        }
        let Some((left, target)) = l.split_once(" -> ") else {
            bad(problems, member, i + 1, "a link line without ` -> `");
            continue;
        };
        let Some(fd) = left.rsplit(' ').next().and_then(|x| x.parse::<u32>().ok()) else {
            // `.`/`..` are directories; anything else is not an fd.
            continue;
        };
        let inode = target
            .strip_prefix("socket:[")
            .and_then(|r| r.strip_suffix(']'))
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse::<u64>().ok());
        if target.contains("socket:[") && inode.is_none() {
            problems.fd_lines_dropped += 1;
            bad(
                problems,
                member,
                i + 1,
                "a socket link with more than `socket:[N]` (forged?)",
            );
        }
        if fds.insert(fd, inode).is_some() {
            dup.insert(fd);
        }
    }
    for (fd, inode) in fds {
        if dup.contains(&fd) {
            problems.fd_lines_dropped += 1;
            bad(
                problems,
                member,
                0,
                &format!("fd {fd} listed more than once (forged?); dropped"),
            );
            continue;
        }
        if let Some(inode) = inode {
            holders.entry(inode).or_default().push((pid, fd));
        }
    }
}

/// `198.18.0.1:8080`, `[2001:db8::1]:50176`, `*:8080`, `0.0.0.0:*`,
/// `[::ffff:1.2.3.4]:80`, `fe80::1%eth0:22` (ss), `:::22` (netstat).
fn endpoint(s: &str, v6_hint: bool) -> Option<SocketAddr> {
    let (addr, port) = s.rsplit_once(':')?;
    let port: u16 = if port == "*" { 0 } else { port.parse().ok()? };
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    let addr = addr.split('%').next().unwrap_or(addr);
    let ip: IpAddr = if addr == "*" || addr.is_empty() || addr == "::" {
        if v6_hint || addr == "::" {
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
        }
    } else {
        addr.parse().ok()?
    };
    Some(SocketAddr::new(ip, port))
}

/// `users:(("python3",pid=15053,fd=3),("x",pid=2,fd=4))` → (name, pid).
fn ss_users(s: &str) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find("((").or_else(|| rest.find(",(")) {
        rest = &rest[i + 2..];
        let Some(q) = rest.strip_prefix('"') else {
            continue;
        };
        let Some(end) = q.find("\",pid=") else {
            break;
        };
        let name = q[..end].to_string();
        let after = &q[end + 6..];
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(pid) = digits.parse() {
            out.push((name, pid));
        }
        rest = after;
    }
    out
}

fn parse_ss(
    text: &str,
    default: Option<Transport>,
    member: &str,
    (out, tuples): (&mut Vec<ListedOwner>, &mut Vec<ListedTuple>),
    problems: &mut UacProblems,
) {
    for (i, l) in text.lines().enumerate() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (transport, k) = match (f.first().copied(), default) {
            (Some("tcp"), _) => (Transport::Tcp, 1),
            (Some("udp"), _) => (Transport::Udp, 1),
            (Some("Netid" | "State"), _) | (None, _) => continue,
            (Some(_), Some(t)) if f.len() >= 5 && !f[0].contains(':') => (t, 0),
            _ => continue,
        };
        // State Recv-Q Send-Q Local Peer [Process]
        let (Some(local), Some(remote)) = (f.get(k + 3), f.get(k + 4)) else {
            bad(problems, member, i + 1, "too few fields");
            continue;
        };
        let v6 = local.starts_with('[') || local.matches(':').count() > 1;
        let (Some(local), Some(remote)) = (endpoint(local, v6), endpoint(remote, v6)) else {
            bad(problems, member, i + 1, "an address that cannot be read");
            continue;
        };
        let users = f.get(k + 5..).map(|x| x.join(" ")).unwrap_or_default();
        let owners = ss_users(&users);
        if owners.is_empty() && tuples.len() < 1_000_000 {
            let state = f.get(k).map_or("", |s| *s);
            tuples.push((transport, local, remote, state.chars().take(16).collect()));
        }
        for (name, pid) in owners {
            out.push(ListedOwner {
                transport,
                local,
                remote,
                pid,
                name: name.chars().take(64).collect(),
                tool: "ss",
                inode: None,
            });
        }
    }
}

fn parse_netstat(text: &str, member: &str, out: &mut Vec<ListedOwner>, problems: &mut UacProblems) {
    for (i, l) in text.lines().enumerate() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let transport = match f.first().copied() {
            Some("tcp" | "tcp6") => Transport::Tcp,
            Some("udp" | "udp6") => Transport::Udp,
            _ => continue,
        };
        let v6 = f[0].ends_with('6');
        let (Some(local), Some(remote)) = (f.get(3), f.get(4)) else {
            bad(problems, member, i + 1, "too few fields");
            continue;
        };
        let (Some(local), Some(remote)) = (endpoint(local, v6), endpoint(remote, v6)) else {
            bad(problems, member, i + 1, "an address that cannot be read");
            continue;
        };
        let Some(owner) = f.last() else { continue };
        let Some((pid, name)) = owner.split_once('/') else {
            continue;
        };
        let Ok(pid) = pid.parse() else { continue };
        out.push(ListedOwner {
            transport,
            local,
            remote,
            pid,
            name: name.chars().take(64).collect(),
            tool: "netstat",
            inode: None,
        });
    }
}

fn parse_lsof(text: &str, out: &mut Vec<ListedOwner>) {
    // COMMAND PID USER FD TYPE DEVICE SIZE/OFF NODE NAME
    for l in text.lines().skip(1) {
        let f: Vec<&str> = l.split_whitespace().collect();
        let Some(node) = f.iter().position(|x| *x == "TCP" || *x == "UDP") else {
            continue;
        };
        if node < 6 {
            continue;
        }
        let transport = if f[node] == "TCP" {
            Transport::Tcp
        } else {
            Transport::Udp
        };
        let (Ok(pid), Some(name)) = (f[1].parse::<u32>(), f.get(node + 1)) else {
            continue;
        };
        let v6 = f[4] == "IPv6";
        let (l, r) = name.split_once("->").unwrap_or((name, "*:*"));
        let (Some(local), Some(remote)) = (endpoint(l, v6), endpoint(r, v6)) else {
            continue;
        };
        out.push(ListedOwner {
            transport,
            local,
            remote,
            pid,
            name: f[0].chars().take(64).collect(),
            tool: "lsof",
            inode: f[5].parse().ok(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names() {
        let mut p = UacProblems::default();
        assert_eq!(
            relative_name("./live_response/network/ss_-anp.txt", &mut p).as_deref(),
            Some("live_response/network/ss_-anp.txt")
        );
        assert_eq!(relative_name("../../etc/live_response/x", &mut p), None);
        assert_eq!(p.suspicious_names, 1);
        assert!(wanted("live_response/process/proc/12/fd.txt"));
        assert!(!wanted("live_response/process/proc/12/environ.txt"));
        assert!(!wanted("live_response/process/proc/1x/fd.txt"));
    }

    #[test]
    fn fd_listing_rejects_forged_lines() {
        let text = "total 0\n\
            lrwx------ 1 root root 64 Dec  5 19:38 3 -> socket:[975829]\n\
            l-wx------ 1 root root 64 Dec  5 19:38 1 -> /tmp/a -> socket:[111]\n\
            lrwx------ 1 root root 64 Dec  5 19:38 4 -> socket:[222]\n\
            lrwx------ 1 root root 64 Dec  5 19:38 4 -> socket:[333]\n\
            lrwx------ 1 root root 64 Dec  5 19:38 5 -> socket:[444] x\n";
        let mut h = HashMap::new();
        let mut p = UacProblems::default();
        parse_fd(text, 7, "fd.txt", &mut h, &mut p);
        assert_eq!(h.get(&975829), Some(&vec![(7, 3)]));
        assert!(!h.contains_key(&111) && !h.contains_key(&222) && !h.contains_key(&333));
        assert!(!h.contains_key(&444));
        assert!(p.fd_lines_dropped >= 2);
    }

    #[test]
    fn ss_and_netstat_lines() {
        let mut out = Vec::new();
        let mut p = UacProblems::default();
        parse_ss(
            "Netid State Recv-Q Send-Q Local Address:Port Peer Address:Port Process\n\
             udp   ESTAB     0      0         198.18.0.1:45120    198.18.0.2:9003  users:((\"python3\",pid=15053,fd=3))\n\
             tcp   LISTEN    0      16           0.0.0.0:8080        0.0.0.0:*     users:((\"python3\",pid=14883,fd=3),(\"x y\",pid=9,fd=1))\n\
             tcp   ESTAB     0      0      [2001:db8::1]:50176 [2001:db8::2]:9001  users:((\"python3\",pid=15488,fd=3))\n",
            None,
            "ss",
            (&mut out, &mut Vec::new()),
            &mut p,
        );
        assert_eq!(out.len(), 4);
        assert_eq!(out[0].pid, 15053);
        assert_eq!(out[0].transport, Transport::Udp);
        assert_eq!(out[2].pid, 9);
        assert_eq!(out[3].local, "[2001:db8::1]:50176".parse().unwrap());
        let mut out = Vec::new();
        parse_netstat(
            "tcp        0      0 198.18.0.1:47316        198.18.0.2:9001         ESTABLISHED 14954/python3\n\
             tcp6       0      0 :::22                   :::*                    LISTEN      1/init\n",
            "netstat",
            &mut out,
            &mut p,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].local, "[::]:22".parse().unwrap());
    }
}
