//! Each namespace's `/etc/hosts` and `/etc/resolv.conf` as the recorder
//! archived them (`nsfiles.jsonl` and `nsfiles/NETNS-MNTNS/NAME`,
//! docs/archive-format.md), parsed as the hostile text they are: the
//! names a host resolves without DNS on the wire (the `hosts-file` remote
//! name source, docs/names.md) and the resolvers its programs ask.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use procflow_format::layout::{Member, NsFileRecord};
use procflow_format::reader::Snapshot;
use serde::Serialize;

use super::SnapshotDiagnostics;

/// Longest line of a hosts or resolv.conf file read; longer ones are bad.
const MAX_LINE: usize = 4096;
/// Names kept per hosts line (glibc reads them all; 64 is far past use).
const MAX_NAMES_PER_LINE: usize = 64;
/// Addresses kept per hosts file.
const MAX_HOSTS_ENTRIES: usize = 100_000;
/// Nameservers and search domains kept per resolv.conf (glibc uses 3 and 6).
const MAX_RESOLV_ITEMS: usize = 16;
/// Longest name kept (a DNS name is at most 253 characters).
const MAX_NAME: usize = 255;

/// A parsed hosts file: the canonical name (first name of the first line)
/// of each address, as `getent hosts ADDR` answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostsFile {
    /// Address -> its first name.
    pub by_ip: HashMap<IpAddr, String>,
    /// Lines with an address and at least one name.
    pub entries: u64,
    /// Lines that are neither blank, a comment, nor `ADDRESS NAME...`.
    pub bad_lines: u64,
    /// Entries not kept past the bound on addresses (100,000).
    pub dropped: u64,
}

/// A parsed resolv.conf.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ResolvConf {
    /// `nameserver` addresses, in order (glibc asks the first three).
    pub nameservers: Vec<IpAddr>,
    /// `search` (or `domain`) list, the last one given.
    pub search: Vec<String>,
    /// Lines that are neither blank, a comment, nor a known keyword with a
    /// usable value.
    pub bad_lines: u64,
}

/// A name from a hosts or resolv.conf file: printable ASCII without
/// separators, at most 255 bytes; `None` otherwise.
fn name_ok(n: &[u8]) -> Option<String> {
    (!n.is_empty()
        && n.len() <= MAX_NAME
        && n.iter()
            .all(|&b| b.is_ascii_graphic() && !matches!(b, b'\\' | b'"' | b',' | b';')))
    .then(|| String::from_utf8_lossy(n).into_owned())
}

/// An address as hosts and resolv.conf write it (`fe80::1%eth0` allowed:
/// the zone is dropped).
fn addr(tok: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(tok).ok()?;
    let s = s.split_once('%').map_or(s, |x| x.0);
    s.parse().ok()
}

/// Lines of a file without comments (`#` or `;` to the end), split into
/// tokens; `Err(())` for a line too long.
fn lines(data: &[u8]) -> impl Iterator<Item = Result<Vec<&[u8]>, ()>> {
    data.split(|&b| b == b'\n').map(|l| {
        if l.len() > MAX_LINE {
            return Err(());
        }
        let l = l.split(|&b| b == b'#' || b == b';').next().unwrap_or(&[]);
        Ok(l.split(|b| b.is_ascii_whitespace())
            .filter(|t| !t.is_empty())
            .collect())
    })
}

/// Parses a hosts file (hostile: bounded, bad lines counted).
pub fn parse_hosts(data: &[u8]) -> HostsFile {
    let mut h = HostsFile::default();
    for line in lines(data) {
        let Ok(toks) = line else {
            h.bad_lines += 1;
            continue;
        };
        let Some((first, names)) = toks.split_first() else {
            continue;
        };
        let Some(ip) = addr(first) else {
            h.bad_lines += 1;
            continue;
        };
        let names: Vec<String> = names
            .iter()
            .take(MAX_NAMES_PER_LINE)
            .filter_map(|n| name_ok(n))
            .collect();
        let Some(canonical) = names.into_iter().next() else {
            h.bad_lines += 1;
            continue;
        };
        h.entries += 1;
        if h.by_ip.len() >= MAX_HOSTS_ENTRIES && !h.by_ip.contains_key(&ip) {
            h.dropped += 1;
            continue;
        }
        h.by_ip.entry(ip).or_insert(canonical);
    }
    h
}

/// Parses a resolv.conf (hostile: bounded, bad lines counted). Unknown
/// keywords count as bad lines (glibc ignores them).
pub fn parse_resolv(data: &[u8]) -> ResolvConf {
    let mut r = ResolvConf::default();
    for line in lines(data) {
        let Ok(toks) = line else {
            r.bad_lines += 1;
            continue;
        };
        let Some((kw, rest)) = toks.split_first() else {
            continue;
        };
        match *kw {
            b"nameserver" => match rest.first().and_then(|a| addr(a)) {
                Some(ip) if rest.len() == 1 => {
                    if r.nameservers.len() < MAX_RESOLV_ITEMS {
                        r.nameservers.push(ip);
                    }
                }
                _ => r.bad_lines += 1,
            },
            b"search" | b"domain" => {
                let names: Vec<String> = rest.iter().filter_map(|n| name_ok(n)).collect();
                if names.is_empty() || names.len() != rest.len() {
                    r.bad_lines += 1;
                }
                if !names.is_empty() {
                    r.search = names.into_iter().take(MAX_RESOLV_ITEMS).collect();
                }
            }
            b"options" | b"sortlist" => {}
            _ => r.bad_lines += 1,
        }
    }
    r
}

/// One archived version of a file.
#[derive(Debug, Clone)]
pub struct Version<T> {
    /// The snapshot that archived it (realtime ns of its start).
    pub t_ns: i64,
    /// Its modification time, when recorded.
    pub mtime_ns: Option<i64>,
    /// It was longer than what the recorder kept.
    pub truncated: bool,
    /// Parsed; `None` when the recorder could not read it (`error`).
    pub file: Option<Arc<T>>,
    /// Why it was not read (`missing`, `ELOOP: ...`).
    pub error: Option<String>,
}

/// Counters of the namespace files (summary.json `namespace_files`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NsFileStats {
    /// (network, mount) namespace pairs with a file recorded.
    pub pairs: u64,
    /// Versions of hosts files read.
    pub hosts_versions: u64,
    /// Versions of resolv.conf files read.
    pub resolv_versions: u64,
    /// Bad lines in hosts files (each version counted once).
    pub hosts_bad_lines: u64,
    /// Bad lines in resolv.conf files.
    pub resolv_bad_lines: u64,
    /// Files archived only in part (longer than the recorder's bound).
    pub truncated: u64,
    /// Files the recorder could not read, other than missing ones
    /// (a symbolic link leading out of the root, not a regular file,
    /// EACCES).
    pub unreadable: u64,
    /// `file` lines whose bytes are not in the snapshot.
    pub missing_members: u64,
}

/// What the files said, per (network, mount) namespace pair.
type Versions<T> = BTreeMap<(u64, u64), Vec<Version<T>>>;

/// Reads namespace files snapshot by snapshot.
#[derive(Debug, Default)]
pub struct NsFilesBuilder {
    hosts: Versions<HostsFile>,
    resolv: Versions<ResolvConf>,
    last_bytes: HashMap<(u64, u64, bool), Vec<u8>>,
    mntns_of: HashMap<(u32, u64), u64>,
    stats: NsFileStats,
}

impl NsFilesBuilder {
    /// Takes the namespace files of one applied snapshot.
    pub fn apply(&mut self, archive: &str, snap: &Snapshot, diag: &mut SnapshotDiagnostics) {
        let t_ns = snap.meta.before.realtime_ns;
        for (name, m, data) in &snap.members {
            if !matches!(m, Member::NsFiles { .. }) {
                continue;
            }
            for (n, line) in String::from_utf8_lossy(data).lines().enumerate() {
                if line.is_empty() {
                    continue;
                }
                match serde_json::from_str::<NsFileRecord>(line) {
                    Ok(r) => self.record(t_ns, snap, r),
                    Err(e) => {
                        diag.bad_line(archive, name, n + 1, format!("namespace file record: {e}"))
                    }
                }
            }
        }
    }

    fn record(&mut self, t_ns: i64, snap: &Snapshot, r: NsFileRecord) {
        let (netns, mntns, name, mtime_ns, stored, truncated, error) = match r {
            NsFileRecord::Process {
                pid,
                start_time,
                mntns,
                ..
            } => {
                self.mntns_of.insert((pid, start_time), mntns);
                return;
            }
            NsFileRecord::File {
                netns,
                mntns,
                name,
                mtime_ns,
                stored,
                truncated,
                error,
                ..
            } => (netns, mntns, name, mtime_ns, stored, truncated, error),
        };
        let hosts = match name.as_str() {
            "hosts" => true,
            "resolv.conf" => false,
            _ => return,
        };
        let bytes: Option<&[u8]> = if stored > 0 {
            let found = snap.members.iter().find(|(_, m, _)| {
                matches!(m, Member::NsFile { netns: a, mntns: b, name: c, .. }
                    if *a == netns && *b == mntns && *c == name)
            });
            match found {
                Some((_, _, d)) => Some(d),
                None => {
                    self.stats.missing_members += 1;
                    return;
                }
            }
        } else {
            None
        };
        if error.as_deref().is_some_and(|e| e != "missing") {
            self.stats.unreadable += 1;
        }
        if truncated {
            self.stats.truncated += 1;
        }
        let key = (netns, mntns, hosts);
        // A keyframe stores the same bytes again: one version.
        let same = match (bytes, self.last_bytes.get(&key)) {
            (Some(b), Some(prev)) => b == prev.as_slice(),
            (None, Some(prev)) => prev.is_empty() && error.is_some(),
            _ => false,
        };
        let have = if hosts {
            self.hosts.contains_key(&(netns, mntns))
        } else {
            self.resolv.contains_key(&(netns, mntns))
        };
        if same && have {
            return;
        }
        self.last_bytes
            .insert(key, bytes.map(<[u8]>::to_vec).unwrap_or_default());
        let bytes = bytes.unwrap_or_default();
        let ok = error.is_none();
        if hosts {
            let file = ok.then(|| {
                let h = parse_hosts(bytes);
                self.stats.hosts_bad_lines += h.bad_lines;
                self.stats.hosts_versions += 1;
                Arc::new(h)
            });
            self.hosts.entry((netns, mntns)).or_default().push(Version {
                t_ns,
                mtime_ns,
                truncated,
                file,
                error,
            });
        } else {
            let file = ok.then(|| {
                let r = parse_resolv(bytes);
                self.stats.resolv_bad_lines += r.bad_lines;
                self.stats.resolv_versions += 1;
                Arc::new(r)
            });
            self.resolv
                .entry((netns, mntns))
                .or_default()
                .push(Version {
                    t_ns,
                    mtime_ns,
                    truncated,
                    file,
                    error,
                });
        }
    }

    /// The index.
    pub fn finish(mut self) -> NsFiles {
        let pairs: BTreeSet<(u64, u64)> = self
            .hosts
            .keys()
            .chain(self.resolv.keys())
            .copied()
            .collect();
        self.stats.pairs = pairs.len() as u64;
        NsFiles {
            hosts: self.hosts,
            resolv: self.resolv,
            mntns_of: self.mntns_of,
            stats: self.stats,
        }
    }
}

/// The namespace files of a bundle.
#[derive(Debug, Clone, Default)]
pub struct NsFiles {
    /// Hosts files by (netns, mntns), versions in time order.
    pub hosts: Versions<HostsFile>,
    /// resolv.conf files by (netns, mntns), versions in time order.
    pub resolv: Versions<ResolvConf>,
    /// Mount namespace of each process recorded, by (pid, start time).
    pub mntns_of: HashMap<(u32, u64), u64>,
    /// Counters.
    pub stats: NsFileStats,
}

/// The version in force at `t_ns`: the latest archived at or before it,
/// else the first (the file was there when recording began).
fn at<T>(v: &[Version<T>], t_ns: i64) -> Option<&Version<T>> {
    let i = v.partition_point(|x| x.t_ns <= t_ns);
    v.get(i.saturating_sub(1))
}

/// One namespace pair's resolvers (summary.json `namespace_files.resolvers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PairResolvers {
    /// Network namespace inode.
    pub netns: u64,
    /// Mount namespace inode.
    pub mntns: u64,
    /// The latest resolv.conf's nameservers.
    pub nameservers: Vec<IpAddr>,
    /// Its search list.
    pub search: Vec<String>,
    /// Why it could not be read, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Hosts entries of the latest hosts file.
    pub hosts_entries: u64,
}

impl NsFiles {
    /// Whether the bundle holds no namespace file.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.resolv.is_empty()
    }

    /// The name the hosts file of network namespace `netns` gives `ip` at
    /// `t_ns`: the file of the owner's mount namespace when `owner` (pid,
    /// start time) is known there; else the only hosts file of `netns`, or
    /// the name all its hosts files agree on.
    pub fn hosts_name(
        &self,
        netns: u64,
        owner: Option<(u32, u64)>,
        ip: IpAddr,
        t_ns: i64,
    ) -> Option<&str> {
        let name_in = |k: &(u64, u64)| {
            self.hosts
                .get(k)
                .and_then(|v| at(v, t_ns))
                .and_then(|v| v.file.as_ref())
                .and_then(|f| f.by_ip.get(&ip))
                .map(String::as_str)
        };
        if let Some(m) = owner.and_then(|o| self.mntns_of.get(&o)) {
            if self.hosts.contains_key(&(netns, *m)) {
                return name_in(&(netns, *m));
            }
        }
        let mut found: Option<&str> = None;
        for k in self.hosts.keys().filter(|k| k.0 == netns) {
            match (found, name_in(k)) {
                (_, None) => return None,
                (None, n) => found = n,
                (Some(a), Some(b)) if a != b => return None,
                _ => {}
            }
        }
        found
    }

    /// Every pair's latest resolvers.
    pub fn resolvers(&self) -> Vec<PairResolvers> {
        let keys: BTreeSet<(u64, u64)> = self
            .hosts
            .keys()
            .chain(self.resolv.keys())
            .copied()
            .collect();
        keys.into_iter()
            .map(|k| {
                let r = self.resolv.get(&k).and_then(|v| v.last());
                let f = r.and_then(|r| r.file.as_deref());
                PairResolvers {
                    netns: k.0,
                    mntns: k.1,
                    nameservers: f.map(|f| f.nameservers.clone()).unwrap_or_default(),
                    search: f.map(|f| f.search.clone()).unwrap_or_default(),
                    error: r.and_then(|r| r.error.clone()),
                    hosts_entries: self
                        .hosts
                        .get(&k)
                        .and_then(|v| v.last())
                        .and_then(|v| v.file.as_ref())
                        .map_or(0, |f| f.by_ip.len() as u64),
                }
            })
            .collect()
    }

    /// Whether any resolv.conf of `netns`, in any version, names `server`;
    /// `None` when no resolv.conf of it was read, or one names a loopback
    /// resolver (a local cache or stub such as systemd-resolved or
    /// dnsmasq, which asks servers of its own configuration).
    pub fn names_resolver(&self, netns: u64, server: IpAddr) -> Option<bool> {
        let mut read = false;
        let mut named = false;
        for v in self
            .resolv
            .iter()
            .filter(|(k, _)| k.0 == netns)
            .flat_map(|(_, v)| v)
        {
            let Some(f) = &v.file else { continue };
            read = true;
            if f.nameservers.iter().any(|n| n.is_loopback()) {
                return None;
            }
            named |= f.nameservers.contains(&server);
        }
        read.then_some(named)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_canonical_name_and_hostile_lines() {
        let mut text = b"# comment\n127.0.0.1\tlocalhost loopback\n\n::1 ip6-localhost\n".to_vec();
        text.extend_from_slice(b"10.1.2.3 web.lab web # trailing\n");
        text.extend_from_slice(b"10.1.2.3 second.lab\n");
        text.extend_from_slice(b"fe80::1%eth0 linklocal\n");
        text.extend_from_slice(b"not-an-address name\n");
        text.extend_from_slice(b"10.9.9.9\n");
        text.extend_from_slice(b"10.9.9.8 bad\x1b[31mname\n");
        text.extend_from_slice(b"10.9.9.7 \xff\xfe\n");
        text.extend(std::iter::repeat_n(b'a', MAX_LINE + 1));
        text.extend_from_slice(b"\n10.0.0.0\0 nul\n");
        let h = parse_hosts(&text);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            h.by_ip.get(&ip("10.1.2.3")).map(String::as_str),
            Some("web.lab")
        );
        assert_eq!(
            h.by_ip.get(&ip("127.0.0.1")).map(String::as_str),
            Some("localhost")
        );
        assert_eq!(
            h.by_ip.get(&ip("fe80::1")).map(String::as_str),
            Some("linklocal")
        );
        assert_eq!(h.entries, 5);
        // not-an-address, no name, escape byte, non-ASCII, too long, NUL.
        assert_eq!(h.bad_lines, 6, "{h:?}");
        assert!(h
            .by_ip
            .values()
            .all(|n| n.bytes().all(|b| b.is_ascii_graphic())));
    }

    #[test]
    fn hosts_bounded() {
        let mut text = Vec::new();
        for i in 0..(MAX_HOSTS_ENTRIES as u32 + 10) {
            text.extend_from_slice(
                format!("{} h{i}\n", std::net::Ipv4Addr::from(0x0a00_0000 + i)).as_bytes(),
            );
        }
        let h = parse_hosts(&text);
        assert_eq!(h.by_ip.len(), MAX_HOSTS_ENTRIES);
        assert_eq!(h.dropped, 10);
    }

    #[test]
    fn resolv_conf_and_hostile_lines() {
        let text = b"# generated\nnameserver 192.0.2.53\nnameserver 2001:db8::53 \n\
            search lab.example corp.example\noptions ndots:2 edns0\n\
            nameserver\nnameserver 1.2.3.4 5.6.7.8\nnameserver evil\n\
            frobnicate yes\n; semicolon comment\nsearch bad\x07name\n";
        let r = parse_resolv(text);
        assert_eq!(
            r.nameservers,
            vec![
                "192.0.2.53".parse::<IpAddr>().unwrap(),
                "2001:db8::53".parse().unwrap()
            ]
        );
        assert_eq!(r.search, vec!["lab.example", "corp.example"]);
        assert_eq!(r.bad_lines, 5, "{r:?}");
        let many: Vec<u8> = (0..100)
            .flat_map(|i| format!("nameserver 10.0.0.{i}\n").into_bytes())
            .collect();
        assert_eq!(parse_resolv(&many).nameservers.len(), MAX_RESOLV_ITEMS);
        assert_eq!(
            parse_resolv(b"\xff\xff\n\0\0\0"),
            ResolvConf {
                bad_lines: 2,
                ..Default::default()
            }
        );
    }

    #[test]
    fn lookup_by_owner_pair_single_pair_or_agreement() {
        let v = |t: i64, text: &[u8]| Version {
            t_ns: t,
            mtime_ns: None,
            truncated: false,
            file: Some(Arc::new(parse_hosts(text))),
            error: None,
        };
        let mut nf = NsFiles::default();
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        nf.hosts.insert(
            (1, 10),
            vec![v(100, b"10.1.2.3 old.lab\n"), v(200, b"10.1.2.3 new.lab\n")],
        );
        assert_eq!(nf.hosts_name(1, None, ip, 50), Some("old.lab"));
        assert_eq!(nf.hosts_name(1, None, ip, 150), Some("old.lab"));
        assert_eq!(nf.hosts_name(1, None, ip, 250), Some("new.lab"));
        assert_eq!(nf.hosts_name(2, None, ip, 250), None);
        // A second mount namespace in netns 1 that disagrees: only the
        // owner's pair names the address.
        nf.hosts
            .insert((1, 11), vec![v(100, b"10.1.2.3 other.lab\n")]);
        assert_eq!(nf.hosts_name(1, None, ip, 250), None);
        nf.mntns_of.insert((7, 70), 11);
        assert_eq!(nf.hosts_name(1, Some((7, 70)), ip, 250), Some("other.lab"));
        assert_eq!(nf.hosts_name(1, Some((8, 80)), ip, 250), None);
    }
}
