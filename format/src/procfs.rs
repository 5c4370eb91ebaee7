//! Pure parsers for the few /proc texts the recorder must understand to be
//! change-driven. They take text, never touch the file system, and never
//! panic: a line they cannot read gives `None` and is counted by the caller.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};

use crate::layout::row_identity;

/// FNV-1a, seeded per process: hashing tens of thousands of row identities
/// every tick is the recorder's main user-space cost, and SipHash was about
/// three times slower for these short keys. The seed keeps an adversary who
/// chooses socket addresses from predicting collisions.
#[derive(Clone, Copy)]
pub struct SeededFnv(u64);

impl Default for SeededFnv {
    fn default() -> SeededFnv {
        static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        SeededFnv(
            *SEED.get_or_init(|| {
                std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64)
            }),
        )
    }
}

/// The hasher built by [`SeededFnv`].
pub struct FnvHasher(u64);

impl Hasher for FnvHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl BuildHasher for SeededFnv {
    type Hasher = FnvHasher;
    fn build_hasher(&self) -> FnvHasher {
        FnvHasher(0xcbf2_9ce4_8422_2325 ^ self.0)
    }
}

/// A hash set with the fast seeded hasher.
pub type FastSet<T> = HashSet<T, SeededFnv>;

/// Fields of /proc/PID/stat the recorder needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatFields {
    /// The command name between the first `(` and the last `)`.
    pub comm: String,
    /// Field 4, parent pid.
    pub ppid: u32,
    /// Field 22, start time in clock ticks since boot.
    pub start_time: u64,
}

/// Parses /proc/PID/stat. The command name may contain spaces and
/// parentheses (`(sd-pam)`, `a) b (c`), so fields are counted after the
/// *last* `)` of the line, where field 3 (state) starts.
pub fn parse_stat(text: &str) -> Option<StatFields> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    if close < open {
        return None;
    }
    let comm = text.get(open + 1..close)?.to_string();
    let mut rest = text.get(close + 1..)?.split_ascii_whitespace();
    // rest[0] is field 3 (state); field N is rest[N - 3].
    let _state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    let start_time = rest.nth(22 - 5)?.parse().ok()?;
    Some(StatFields {
        comm,
        ppid,
        start_time,
    })
}

/// The real uid: first value of the `Uid:` line of /proc/PID/status.
pub fn parse_status_uid(text: &str) -> Option<u32> {
    text.lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_ascii_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// `CapEff` of /proc/PID/status, as the kernel prints it (hex).
pub fn parse_status_cap_eff(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| v.trim().to_string())
}

/// The inode in a `socket:[N]` fd link target; `None` for any other target
/// (files, pipes, `anon_inode:[eventpoll]`, `net:[N]`...).
pub fn parse_socket_link(target: &[u8]) -> Option<u64> {
    let digits = target.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    parse_decimal(digits)
}

/// The inode in a namespace link target such as `net:[4026531840]`.
pub fn parse_ns_link(target: &[u8], kind: &str) -> Option<u64> {
    let digits = target
        .strip_prefix(kind.as_bytes())?
        .strip_prefix(b":[")?
        .strip_suffix(b"]")?;
    parse_decimal(digits)
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The first line of /proc/PID/cgroup, without the newline.
pub fn first_cgroup_line(text: &str) -> Option<String> {
    text.lines()
        .next()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
}

/// A container id in a cgroup path: the last run of exactly 64 hex digits
/// bounded by non-hex characters, as runtimes name them:
/// `/system.slice/docker-<id>.scope`, `/docker/<id>`,
/// `/kubepods/.../cri-containerd-<id>.scope`, `crio-<id>`, `libpod-<id>`.
pub fn container_id(cgroup: &str) -> Option<String> {
    let b = cgroup.as_bytes();
    let mut found = None;
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_hexdigit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_hexdigit() {
                i += 1;
            }
            if i - start == 64 {
                found = cgroup.get(start..i).map(str::to_ascii_lowercase);
            }
        } else {
            i += 1;
        }
    }
    found
}

/// /proc/PID/cmdline split at NUL bytes (lossy UTF-8). Trailing NULs make
/// no empty last arguments: a process that rewrote its title in place
/// (setproctitle, as sshd does) leaves the rest of its old argument area
/// zeroed, and the kernel returns all of it. Empty arguments between two
/// others are kept.
pub fn split_cmdline(raw: &[u8]) -> Vec<String> {
    let end = raw.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let raw = &raw[..end];
    if raw.is_empty() {
        return Vec::new();
    }
    raw.split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// A /proc/net table split into its header, its rows (one per identity, in
/// the order first read) and the lines that are neither.
#[derive(Debug, Default)]
pub struct TableRows<'a> {
    /// The header line (`  sl  local_address ...`), if present.
    pub header: Option<&'a str>,
    /// `(identity, raw row)` in file order, duplicates removed.
    pub rows: Vec<(String, &'a str)>,
    /// Rows dropped because an earlier row had the same identity (the kernel
    /// can repeat a row when a table is read in several chunks).
    pub duplicates: usize,
    /// Non-empty lines that are neither the header nor a row.
    pub bad: Vec<&'a str>,
}

/// Splits raw table text into header, unique rows and unreadable lines.
pub fn table_rows(text: &str) -> TableRows<'_> {
    let mut out = TableRows::default();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        match row_identity(line) {
            Some(id) => out.rows.push((id, line)),
            None => {
                let first = line.split_ascii_whitespace().next().unwrap_or("");
                if out.header.is_none() && (first == "sl" || first == "sk") {
                    out.header = Some(line);
                } else {
                    out.bad.push(line);
                }
            }
        }
    }
    // Duplicates are rare; find them without copying every identity.
    let mut seen: FastSet<&str> =
        FastSet::with_capacity_and_hasher(out.rows.len(), SeededFnv::default());
    let mut dup = vec![false; out.rows.len()];
    for (i, (id, _)) in out.rows.iter().enumerate() {
        if !seen.insert(id.as_str()) {
            if let Some(d) = dup.get_mut(i) {
                *d = true;
            }
        }
    }
    drop(seen);
    let before = out.rows.len();
    let mut i = 0;
    out.rows.retain(|_| {
        let keep = !dup.get(i).copied().unwrap_or(false);
        i += 1;
        keep
    });
    out.duplicates = before - out.rows.len();
    out
}

/// The inode of a table row (field 10), 0 when absent or unreadable.
pub fn row_inode(identity: &str) -> u64 {
    identity
        .rsplit(' ')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_and_parens_in_comm() {
        // Debian 12, a process renamed to contain ") (" and spaces.
        let line = "4242 (we) ird (name) S 1 4242 4242 0 -1 4194560 112 0 0 0 0 0 0 0 20 0 1 0 987654 5259264 321 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.comm, "we) ird (name");
        assert_eq!(s.ppid, 1);
        assert_eq!(s.start_time, 987654);
        // A real kernel thread line from this machine's /proc/2/stat shape.
        let kthread = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 3 0 0 18446744073709551615 0 0 0 0 0 0 0 2147483647 0 0 0 0 0 1 0 0 0 0 0 0 0 0 0 0 0 0 0";
        let k = parse_stat(kthread).unwrap();
        assert_eq!((k.ppid, k.start_time), (0, 3));
        assert_eq!(parse_stat("12 (x S 1"), None);
        assert_eq!(parse_stat("12 x) S 1 2"), None);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn status_fields() {
        let st = "Name:\tbash\nUmask:\t0022\nUid:\t1000\t1001\t1001\t1001\nGid:\t100\t100\t100\t100\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_status_uid(st), Some(1000));
        assert_eq!(
            parse_status_cap_eff(st).as_deref(),
            Some("000001ffffffffff")
        );
        assert_eq!(parse_status_uid("Name: x\n"), None);
    }

    #[test]
    fn fd_links() {
        assert_eq!(parse_socket_link(b"socket:[21357]"), Some(21357));
        assert_eq!(parse_socket_link(b"socket:[]"), None);
        assert_eq!(parse_socket_link(b"socket:[12a]"), None);
        assert_eq!(parse_socket_link(b"pipe:[21357]"), None);
        assert_eq!(parse_socket_link(b"anon_inode:[eventpoll]"), None);
        assert_eq!(parse_socket_link(b"/dev/null"), None);
        assert_eq!(parse_socket_link(b"socket:[99999999999999999999999]"), None);
        assert_eq!(parse_ns_link(b"net:[4026531840]", "net"), Some(4026531840));
        assert_eq!(parse_ns_link(b"mnt:[4026531840]", "net"), None);
    }

    /// A file of ../shared/testdata/proc-fixtures, or `None` (said on
    /// stderr) when that corpus is absent.
    fn fixture(name: &str) -> Option<String> {
        let path = format!(
            "{}/../../shared/testdata/proc-fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path);
        if text.is_err() {
            crate::test_common::missing(&format!("{path} not present"));
        }
        text.ok()
    }

    #[test]
    fn fd_links_from_shared_fixtures() {
        // fd_listings.tsv: readlink targets transcribed from other projects'
        // fixtures; every `socket:[N]` target must give N, nothing else must.
        let Some(text) = fixture("fd_listings.tsv") else {
            return;
        };
        let mut sockets = 0;
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split('\t').collect();
            let Some(target) = cols.get(3) else { continue };
            let got = parse_socket_link(target.as_bytes());
            if let Some(digits) = target
                .strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
            {
                assert_eq!(got, digits.parse().ok(), "{line}");
                sockets += 1;
            } else {
                assert_eq!(got, None, "{line}");
            }
        }
        assert!(sockets > 0, "fixture lists no socket links");
    }

    #[test]
    fn container_ids() {
        let id = "3f2a9c0d1e4b5a6978c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6";
        assert_eq!(
            container_id(&format!("0::/system.slice/docker-{id}.scope")).as_deref(),
            Some(id)
        );
        assert_eq!(
            container_id(&format!("12:pids:/docker/{id}")).as_deref(),
            Some(id)
        );
        assert_eq!(
            container_id(&format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-{id}.scope"
            ))
            .as_deref(),
            Some(id)
        );
        assert_eq!(
            container_id("0::/user.slice/user-1000.slice/session-3.scope"),
            None
        );
        // 63 and 65 hex digits are not container ids.
        assert_eq!(container_id(&format!("0::/docker/{}", &id[1..])), None);
        assert_eq!(container_id(&format!("0::/docker/{id}a")), None);
        assert_eq!(container_id(""), None);
    }

    #[test]
    fn cmdline_split() {
        assert_eq!(
            split_cmdline(b"python3\0-c\0print(1)\0"),
            ["python3", "-c", "print(1)"]
        );
        assert_eq!(split_cmdline(b""), Vec::<String>::new());
        assert_eq!(split_cmdline(b"a\0\0b\0"), ["a", "", "b"]);
        // sshd's title over its zeroed argument area.
        assert_eq!(split_cmdline(b"sshd: u@notty\0\0\0\0\0"), ["sshd: u@notty"]);
        assert_eq!(split_cmdline(b"a\0\0b\0\0\0"), ["a", "", "b"]);
        assert_eq!(split_cmdline(b"\0\0\0"), Vec::<String>::new());
        assert_eq!(split_cmdline(b"\xff\0"), ["\u{fffd}"]);
    }

    #[test]
    fn duplicated_rows_are_dropped() {
        // weaveworks/scope (Apache-2.0) fixture: the same row printed twice.
        let Some(text) = fixture("weaveworks-scope/procspy_tcp_duplicates.txt") else {
            return;
        };
        let t = table_rows(&text);
        assert!(t.header.is_some());
        assert!(t.duplicates >= 1);
        let ids: std::collections::HashSet<_> = t.rows.iter().map(|r| &r.0).collect();
        assert_eq!(ids.len(), t.rows.len());
        assert_eq!(row_inode(&t.rows[0].0), 5107);
    }
}
