//! The connection-tracking table of every recorded namespace, archived
//! change-driven like the socket tables, so that the analyzer can follow
//! traffic through NAT (masquerade, published ports) to the container
//! socket that carried it.
//!
//! Each tick dumps the table of every namespace through ctnetlink (a
//! socket per namespace, opened once from a thread that entered the
//! namespace of its representative pid) between the `before` and
//! `net_done` clocks, like the /proc/net tables, and stores it as the
//! table `conntrack` of that namespace: full in keyframes, delta lines
//! otherwise, `unchanged` when no identity changed (the identity leaves out
//! the timeout). A background thread follows the NEW and DESTROY events of
//! every namespace, so that a mapping created and destroyed between two
//! ticks is kept too (member `conntrack.events`, with the monotonic time
//! the event was handled).
//!
//! A host without connection tracking (module not loaded) costs nothing:
//! nothing is opened; the recorder's line of sources at start and
//! `Manifest.sources` say why.

use std::collections::{hash_map, BTreeMap, HashMap, HashSet};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use procflow_format::conntrack::{row_identity, Entry, Event, TABLE};
use procflow_format::layout::{self, NetnsEntry, RecordError, SourceInfo, TableEntry, TableStored};

use crate::netlink::{self, Message, Socket};
use crate::sys;

/// Name of this source in `Manifest.sources`.
pub const SOURCE: &str = "conntrack";

/// Events kept per namespace between two ticks; more are counted as lost.
const MAX_EVENTS_PER_TICK: usize = 200_000;

/// What the event thread hands to the tick.
#[derive(Default)]
struct Pending {
    by_ns: HashMap<u64, Vec<Event>>,
    /// Events dropped: kernel buffer overrun (ENOBUFS) or over the bound.
    lost: u64,
}

enum Cmd {
    Add(u64, Socket),
    Remove(u64),
}

/// The background thread following NEW/DESTROY events.
struct Events {
    pending: Arc<Mutex<Pending>>,
    tx: Sender<Cmd>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    subscribed: HashSet<u64>,
}

impl Events {
    fn start() -> Events {
        let pending = Arc::new(Mutex::new(Pending::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = channel();
        let (p, s) = (Arc::clone(&pending), Arc::clone(&stop));
        let handle = std::thread::Builder::new()
            .name("conntrack-events".into())
            .spawn(move || event_loop(rx, p, s))
            .ok();
        Events {
            pending,
            tx,
            stop,
            handle,
            subscribed: HashSet::new(),
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn event_loop(rx: Receiver<Cmd>, pending: Arc<Mutex<Pending>>, stop: Arc<AtomicBool>) {
    let mut socks: BTreeMap<u64, Socket> = BTreeMap::new();
    let mut buf = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        while let Ok(cmd) = rx.try_recv() {
            match cmd {
                Cmd::Add(ns, s) => {
                    socks.insert(ns, s);
                }
                Cmd::Remove(ns) => {
                    socks.remove(&ns);
                }
            }
        }
        let list: Vec<(u64, libc::c_int)> = socks.iter().map(|(n, s)| (*n, s.raw_fd())).collect();
        let fds: Vec<libc::c_int> = list.iter().map(|x| x.1).collect();
        let Ok(ready) = netlink::poll_readable(&fds, 100) else {
            std::thread::sleep(std::time::Duration::from_millis(100));
            continue;
        };
        for i in ready {
            let Some(&(ns, _)) = list.get(i) else {
                continue;
            };
            let Some(s) = socks.get(&ns) else { continue };
            // Drain what is queued; the time is that of handling.
            loop {
                match s.recv(&mut buf) {
                    Ok(n) => {
                        let mono_ns = sys::read_clocks().monotonic_ns;
                        let mut got = Vec::new();
                        let _ = netlink::parse_messages(&buf[..n], None, |m| {
                            if let Message::Entry(kind, entry) = m {
                                got.push(Event {
                                    mono_ns,
                                    kind,
                                    entry,
                                });
                            }
                        });
                        if let Ok(mut p) = pending.lock() {
                            let v = p.by_ns.entry(ns).or_default();
                            let room = MAX_EVENTS_PER_TICK.saturating_sub(v.len());
                            let over = got.len().saturating_sub(room);
                            v.extend(got.into_iter().take(room));
                            p.lost += over as u64;
                        }
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        if let Ok(mut p) = pending.lock() {
                            p.lost += 1;
                        }
                    }
                    Err(_) => break,
                }
            }
        }
    }
}

/// Per namespace: the dump socket and what was stored last.
struct NsTable {
    sock: Socket,
    stored: Stored,
}

/// The identities stored last for one namespace.
#[derive(Default)]
struct Stored {
    ids: HashSet<Entry>,
    /// Whether the identities are those of the last tick (false after a
    /// failed dump: the next one is stored full).
    valid: bool,
}

/// The conntrack part of the recorder.
pub struct Conntrack {
    /// Why it is off; `None` when in use.
    off: Option<String>,
    tables: HashMap<u64, NsTable>,
    /// Namespaces whose socket could not be opened, with the error.
    failed: HashMap<u64, String>,
    events: Option<Events>,
    events_off: Option<String>,
    entries: Vec<Entry>,
    buf: Vec<u8>,
}

impl Conntrack {
    /// Probes the host: connection tracking must already be loaded (the
    /// recorder never makes the kernel load it) and the table readable
    /// over ctnetlink. `events` also subscribes to NEW/DESTROY events.
    pub fn start(events: bool) -> Conntrack {
        let mut c = Conntrack::new(None);
        if !Path::new("/proc/sys/net/netfilter/nf_conntrack_max").exists() {
            c.off = Some(
                "nf_conntrack is not loaded (no /proc/sys/net/netfilter/nf_conntrack_max): \
                 no connection tracking, no NAT to follow"
                    .into(),
            );
            return c;
        }
        match Socket::open(0, false).and_then(|mut s| {
            let r = s.dump(&mut c.buf, &mut c.entries);
            r.map(|()| s)
        }) {
            Ok(_) => {}
            Err(e) => {
                c.off = Some(format!(
                    "ctnetlink dump refused: {} {e} (needs CAP_NET_ADMIN and nf_conntrack_netlink)",
                    sys::errno_name(&e)
                ));
                return c;
            }
        }
        if events {
            match Socket::open(netlink::GROUPS_NEW_DESTROY, true) {
                Ok(_) => c.events = Some(Events::start()),
                Err(e) => {
                    c.events_off = Some(format!("events not followed: {} {e}", sys::errno_name(&e)))
                }
            }
        }
        c
    }

    /// Conntrack not recorded, for `why` (e.g. a fixture /proc tree that
    /// is not the live kernel's).
    pub fn off(why: &str) -> Conntrack {
        Conntrack::new(Some(why.to_string()))
    }

    /// Nothing read yet; `off` says why nothing will be.
    fn new(off: Option<String>) -> Conntrack {
        Conntrack {
            off,
            tables: HashMap::new(),
            failed: HashMap::new(),
            events: None,
            events_off: None,
            entries: Vec::new(),
            buf: Vec::new(),
        }
    }

    /// Whether tables are recorded.
    pub fn used(&self) -> bool {
        self.off.is_none()
    }

    /// The `Manifest.sources` entry.
    pub fn source(&self) -> SourceInfo {
        SourceInfo {
            name: SOURCE.into(),
            used: self.used(),
            detail: Some(match (&self.off, &self.events_off) {
                (Some(why), _) => why.clone(),
                (None, None) if self.events.is_some() => {
                    "ctnetlink dump per namespace each tick; NEW/DESTROY events".into()
                }
                (None, Some(why)) => format!("ctnetlink dump per namespace each tick; {why}"),
                (None, None) => "ctnetlink dump per namespace each tick".into(),
            }),
        }
    }

    /// One tick: dumps the table of every namespace of `ns_pids` (each with
    /// candidate pids to enter it through; `self_netns` is dumped directly),
    /// adds the `conntrack` table to each namespace's entry and its member
    /// (and the namespace's events since the last tick) to `members`.
    #[allow(clippy::too_many_arguments)]
    pub fn tick(
        &mut self,
        seq: u64,
        keyframe: bool,
        self_netns: u64,
        ns_pids: &BTreeMap<u64, Vec<u32>>,
        netns_entries: &mut [NetnsEntry],
        members: &mut Vec<(String, Vec<u8>)>,
        errs: &mut Vec<RecordError>,
    ) {
        if self.off.is_some() {
            return;
        }
        // Namespaces gone: their sockets close.
        self.tables.retain(|ns, _| ns_pids.contains_key(ns));
        self.failed.retain(|ns, _| ns_pids.contains_key(ns));
        if let Some(ev) = self.events.as_mut() {
            let gone: Vec<u64> = ev
                .subscribed
                .iter()
                .filter(|ns| !ns_pids.contains_key(ns))
                .copied()
                .collect();
            for ns in gone {
                ev.subscribed.remove(&ns);
                let _ = ev.tx.send(Cmd::Remove(ns));
            }
        }
        for (&ns, cands) in ns_pids {
            let Some(entry) = netns_entries.iter_mut().find(|e| e.inode == ns) else {
                continue;
            };
            let missing = TableEntry {
                table: TABLE.into(),
                stored: TableStored::Missing,
            };
            if self.failed.contains_key(&ns) {
                entry.tables.push(missing);
                continue;
            }
            let t = match self.tables.entry(ns) {
                hash_map::Entry::Occupied(o) => o.into_mut(),
                hash_map::Entry::Vacant(v) => match open_for(ns, self_netns, cands, 0, false) {
                    Ok(sock) => {
                        if let Some(ev) = self.events.as_mut() {
                            let g = netlink::GROUPS_NEW_DESTROY;
                            if let Ok(s) = open_for(ns, self_netns, cands, g, true) {
                                ev.subscribed.insert(ns);
                                let _ = ev.tx.send(Cmd::Add(ns, s));
                            }
                        }
                        v.insert(NsTable {
                            sock,
                            stored: Stored::default(),
                        })
                    }
                    Err(e) => {
                        let pid = cands.first().copied().unwrap_or(0);
                        errs.push(err(&format!("/proc/{pid}/ns/net"), &e));
                        self.failed.insert(ns, e.to_string());
                        entry.tables.push(missing);
                        continue;
                    }
                },
            };
            // An empty table is not dumped: a dump walks the hash table all
            // namespaces share, whatever this one holds.
            let dumped = match t.sock.count(&mut self.buf) {
                Ok(0) => {
                    self.entries.clear();
                    Ok(())
                }
                _ => t.sock.dump(&mut self.buf, &mut self.entries),
            };
            let stored = match dumped {
                Err(e) => {
                    errs.push(err("ctnetlink", &e));
                    t.stored.valid = false;
                    TableStored::Missing
                }
                Ok(()) => store(seq, ns, keyframe, &mut t.stored, &self.entries, members),
            };
            entry.tables.push(TableEntry {
                table: TABLE.into(),
                stored,
            });
        }
        if let Some(ev) = self.events.as_ref() {
            let taken = match ev.pending.lock() {
                Ok(mut p) => std::mem::take(&mut *p),
                Err(_) => Pending::default(),
            };
            let mut by_ns: Vec<(u64, Vec<Event>)> = taken.by_ns.into_iter().collect();
            by_ns.sort_by_key(|x| x.0);
            for (ns, evs) in by_ns {
                // Also for a namespace gone since: its last entries' end.
                if evs.is_empty() {
                    continue;
                }
                let mut text = String::new();
                for e in &evs {
                    text.push_str(&e.format());
                    text.push('\n');
                }
                members.push((layout::conntrack_events_member(seq, ns), text.into_bytes()));
            }
            if taken.lost > 0 {
                errs.push(RecordError {
                    what: "conntrack-events".into(),
                    path: None,
                    // The number goes in `count`, so the manifest sums
                    // the losses in one entry.
                    error: format!(
                        "ENOBUFS: conntrack event batches lost (kernel buffer overrun or over {MAX_EVENTS_PER_TICK} a tick)"
                    ),
                    count: taken.lost,
                });
            }
        }
    }
}

fn err(path: &str, e: &io::Error) -> RecordError {
    RecordError {
        what: "read-conntrack".into(),
        path: Some(path.into()),
        error: format!("{}: {e}", sys::errno_name(e)),
        count: 1,
    }
}

/// A socket in namespace `ns`: directly in the recorder's own, else
/// through the first candidate pid that still lives.
fn open_for(
    ns: u64,
    self_netns: u64,
    cands: &[u32],
    groups: u32,
    nonblocking: bool,
) -> io::Result<Socket> {
    if ns == self_netns {
        return Socket::open(groups, nonblocking);
    }
    let mut last = io::Error::from_raw_os_error(libc::ESRCH);
    for &pid in cands {
        match Socket::open_in(pid, groups, nonblocking) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Stores one dump: full (keyframe, or no valid previous identities), or
/// the delta against the previous identities, or unchanged.
fn store(
    seq: u64,
    ns: u64,
    keyframe: bool,
    t: &mut Stored,
    entries: &[Entry],
    members: &mut Vec<(String, Vec<u8>)>,
) -> TableStored {
    // Identities are compared as entries without their timeout: only the
    // lines that change are formatted.
    let id_of = |e: &Entry| Entry { timeout: 0, ..*e };
    let mut seen: HashSet<Entry> = HashSet::with_capacity(entries.len());
    // The table may list an entry twice while it changes: first kept.
    let cur: Vec<&Entry> = entries.iter().filter(|e| seen.insert(id_of(e))).collect();
    let lines = |pick: &mut dyn FnMut(&Entry) -> bool, prefix: &str| {
        let mut v: Vec<String> = cur
            .iter()
            .filter(|e| pick(e))
            .map(|e| format!("{prefix}{}", e.format()))
            .collect();
        v.sort_unstable();
        v
    };
    let full = keyframe || !t.valid;
    let stored = if full {
        let mut text = lines(&mut |_| true, "").join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        members.push((layout::net_member(seq, ns, TABLE, true), text.into_bytes()));
        TableStored::Full
    } else {
        let mut removed: Vec<String> = t
            .ids
            .iter()
            .filter(|id| !seen.contains(*id))
            .filter_map(|id| row_identity(&id.format()).map(|i| format!("-{i}")))
            .collect();
        removed.sort_unstable();
        removed.extend(lines(&mut |e| !t.ids.contains(&id_of(e)), "+"));
        if removed.is_empty() {
            TableStored::Unchanged
        } else {
            let mut text = removed.join("\n");
            text.push('\n');
            members.push((layout::net_member(seq, ns, TABLE, false), text.into_bytes()));
            TableStored::Delta
        }
    };
    t.ids = seen;
    t.valid = true;
    stored
}

#[cfg(test)]
mod tests {
    use super::*;
    use procflow_format::conntrack::parse_line;

    fn text(members: &[(String, Vec<u8>)]) -> Vec<(String, String)> {
        members
            .iter()
            .map(|(n, b)| (n.clone(), String::from_utf8_lossy(b).into_owned()))
            .collect()
    }

    /// Full first, then only what changed: a new countdown is no change.
    #[test]
    fn stored_change_driven() {
        let a = parse_line("tcp 10.0.0.2 1.1.1.1 5 80 1.1.1.1 9.9.9.9 80 5 0x1be 0 0 100").unwrap();
        let b = parse_line("udp 10.0.0.2 1.1.1.1 6 53 1.1.1.1 9.9.9.9 53 6 0x1be 0 0 30").unwrap();
        let mut st = Stored::default();
        let mut m = Vec::new();
        assert_eq!(
            store(1, 7, false, &mut st, &[b, a, a], &mut m),
            TableStored::Full
        );
        assert_eq!(
            text(&m),
            [(
                "snap/00000001/net/7/conntrack".to_string(),
                format!("{}\n{}\n", a.format(), b.format())
            )]
        );
        let older = Entry { timeout: 3, ..a };
        m.clear();
        assert_eq!(
            store(2, 7, false, &mut st, &[older, b], &mut m),
            TableStored::Unchanged
        );
        assert!(m.is_empty());
        let c = Entry {
            status: a.status | 0x1,
            ..a
        };
        assert_eq!(
            store(3, 7, false, &mut st, &[c], &mut m),
            TableStored::Delta
        );
        let want = format!(
            "-{}\n-{}\n+{}\n",
            row_identity(&a.format()).unwrap(),
            row_identity(&b.format()).unwrap(),
            c.format()
        );
        assert_eq!(
            text(&m),
            [("snap/00000003/net/7/conntrack.delta".to_string(), want)]
        );
        m.clear();
        assert_eq!(store(4, 7, true, &mut st, &[], &mut m), TableStored::Full);
        assert_eq!(text(&m)[0].1, "");
    }
}
