//! The recorder's own packet capture: an `AF_PACKET` socket with a
//! `TPACKET_V3` receive ring, a classic BPF filter compiled from tcpdump
//! syntax ([`super::filter`]), pcapng files ([`super::pcapng`]) with
//! nanosecond timestamps and each packet's direction, and every loss
//! counted (docs/recorder.md, "The packet capture").

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::filter::{self, Insn, Link};
use super::pcapng::{self, Stats, Writer};
use super::Rotate;
use crate::ksys::packet::{self as kpacket, RingShape, RxRing, SockFilter};
use crate::layout::{CaptureCounters, NativeCounters, CAPTURE_PREFIX};

/// Bytes kept of each packet (tcpdump's default).
pub const SNAPLEN: u32 = 262_144;
/// Ring block size.
const BLOCK_BYTES: u32 = 1 << 20;
/// Ring blocks.
const BLOCKS: u32 = 64;
/// A block is handed over when full or after this many ms.
const RETIRE_MS: u32 = 100;

const ARPHRD_ETHER: u16 = 1;
const ARPHRD_LOOPBACK: u16 = 772;

/// Why the capture could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The filter does not compile.
    #[error(transparent)]
    Filter(#[from] filter::FilterError),
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// Which step.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Counters shared between the capture thread and the recorder.
#[derive(Debug, Default, Clone)]
struct Shared {
    c: NativeCounters,
    /// The first write error, and whether it was a full disk.
    failure: Option<(String, bool)>,
    files: Vec<String>,
}

/// A running capture.
#[derive(Debug)]
pub struct NativeCapture {
    stop: Arc<AtomicBool>,
    shared: Arc<Mutex<Shared>>,
    thread: Option<JoinHandle<()>>,
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    b.get(o..o + 2)
        .map_or(0, |s| u16::from_ne_bytes([s[0], s[1]]))
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4)
        .map_or(0, |s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
}

fn if_name(index: i32) -> String {
    kpacket::if_name(index).unwrap_or_else(|| format!("ifindex{index}"))
}

/// The link type of a named interface (`/sys/class/net/IFACE/type`).
fn arphrd(iface: &str) -> Option<u16> {
    std::fs::read_to_string(Path::new("/sys/class/net").join(iface).join("type"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn arphrd_of_index(index: i32) -> Option<u16> {
    arphrd(&if_name(index))
}

fn ifindex(iface: &str) -> Result<i32, StartError> {
    let i = kpacket::if_index(iface).map_err(|source| StartError::Sys {
        what: if source.raw_os_error().is_none() {
            format!("interface {iface:?}")
        } else {
            format!("interface {iface}")
        },
        source,
    })?;
    Ok(i as i32)
}

/// How packets are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Ethernet frames as they are (`SOCK_RAW`).
    Ethernet,
    /// Link header stripped, written as Linux cooked frames.
    Cooked,
}

/// Opens the socket, attaches the filter, maps the ring and binds: the
/// socket receives nothing until the filter is in place.
fn open(iface: &str, prog: &[Insn], mode: Mode, index: i32) -> Result<RxRing, StartError> {
    let filt: Vec<SockFilter> = prog
        .iter()
        .map(|i| SockFilter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let shape = RingShape {
        block_bytes: BLOCK_BYTES,
        blocks: BLOCKS,
        retire_ms: RETIRE_MS,
    };
    // Loopback shows every packet twice, going out and coming in: keep the
    // copy coming in (as libpcap does), so the kernel's counters count each
    // packet once. Kernels before 4.20 lack the option; the outgoing copies
    // are then skipped when read.
    let ignore_outgoing = index > 0 && arphrd_of_index(index) == Some(ARPHRD_LOOPBACK);
    RxRing::open(
        iface,
        index,
        mode == Mode::Cooked,
        &filt,
        shape,
        ignore_outgoing,
    )
    .map_err(|e| StartError::Sys {
        what: e.what,
        source: e.source,
    })
}

/// The files of a capture and the interfaces described in the current one.
struct Files {
    dir: PathBuf,
    rotate: Rotate,
    first_name: String,
    next_suffix: u64,
    w: Option<Writer>,
    opened: Instant,
    opened_ns: i64,
    /// ifindex to interface id in the current file.
    ifaces: Vec<(i32, u32)>,
    iface: String,
    mode: Mode,
    index: i32,
}

fn now_ns() -> i64 {
    crate::sys::timestamp().clocks.realtime_ns
}

impl Files {
    fn open_next(&mut self) -> std::io::Result<()> {
        let ns = now_ns();
        let name = match self.rotate {
            Rotate::Megabytes(_) if self.next_suffix > 0 => {
                format!("{}{}", self.first_name, self.next_suffix)
            }
            Rotate::Megabytes(_) => self.first_name.clone(),
            _ => format!(
                "{CAPTURE_PREFIX}{}.pcapng",
                procflow_format::time::compact_utc(ns.div_euclid(1_000_000_000))
            ),
        };
        self.next_suffix += 1;
        let mut w = Writer::create(&self.dir.join(&name))?;
        self.ifaces.clear();
        match self.mode {
            Mode::Ethernet => {
                w.interface(pcapng::LINK_ETHERNET, SNAPLEN, &self.iface);
                self.ifaces.push((self.index, 0));
            }
            Mode::Cooked if self.index == 0 => {
                // The socket itself: carries its statistics only.
                w.interface(pcapng::LINK_SLL, SNAPLEN, "any");
            }
            Mode::Cooked => {
                w.interface(pcapng::LINK_SLL, SNAPLEN, &self.iface);
                self.ifaces.push((self.index, 0));
            }
        }
        self.w = Some(w);
        self.opened = Instant::now();
        self.opened_ns = ns;
        Ok(())
    }

    /// The interface id of `ifindex` in the current file, described on
    /// first use.
    fn iface_id(&mut self, ifindex: i32) -> u32 {
        if let Some((_, id)) = self.ifaces.iter().find(|(i, _)| *i == ifindex) {
            return *id;
        }
        let id = self.ifaces.len() as u32 + u32::from(self.index == 0);
        if let Some(w) = self.w.as_mut() {
            w.interface(pcapng::LINK_SLL, SNAPLEN, &if_name(ifindex));
        }
        self.ifaces.push((ifindex, id));
        id
    }

    fn due(&self) -> bool {
        let Some(w) = &self.w else { return false };
        match self.rotate {
            Rotate::None => false,
            Rotate::Seconds(n) => self.opened.elapsed() >= Duration::from_secs(n.max(1)),
            Rotate::Megabytes(n) => w.size() >= n.saturating_mul(1_000_000),
        }
    }

    /// Statistics blocks for every interface of the current file.
    fn statistics(&mut self, c: &NativeCounters) {
        let end_ns = now_ns();
        let start_ns = self.opened_ns;
        let counts = Some((c.kernel_received, c.kernel_drops, c.packets_received));
        let ids: Vec<u32> = self.ifaces.iter().map(|(_, id)| *id).collect();
        let Some(w) = self.w.as_mut() else { return };
        if self.index == 0 {
            w.statistics(
                0,
                &Stats {
                    start_ns,
                    end_ns,
                    counts,
                },
            );
        }
        for id in ids {
            let counts = if id == 0 { counts } else { None };
            w.statistics(
                id,
                &Stats {
                    start_ns,
                    end_ns,
                    counts,
                },
            );
        }
    }
}

/// Starts the capture on `iface` (a name or `any`) into `dir`.
pub fn start(
    dir: &Path,
    iface: &str,
    filter_text: Option<&str>,
    rotate: Rotate,
    start_secs: i64,
) -> Result<NativeCapture, StartError> {
    let (mode, index) = if iface == "any" {
        (Mode::Cooked, 0)
    } else {
        let index = ifindex(iface)?;
        match arphrd(iface) {
            Some(ARPHRD_ETHER | ARPHRD_LOOPBACK) => (Mode::Ethernet, index),
            _ => (Mode::Cooked, index),
        }
    };
    let link = match mode {
        Mode::Ethernet => Link::Ethernet,
        Mode::Cooked => Link::Cooked,
    };
    let prog = filter::compile(filter_text.unwrap_or(""), link, SNAPLEN)?;
    let ring = open(iface, &prog, mode, index)?;
    let mut files = Files {
        dir: dir.to_path_buf(),
        rotate,
        first_name: format!(
            "{CAPTURE_PREFIX}{}.pcapng",
            procflow_format::time::compact_utc(start_secs)
        ),
        next_suffix: 0,
        w: None,
        opened: Instant::now(),
        opened_ns: 0,
        ifaces: Vec::new(),
        iface: iface.to_string(),
        mode,
        index,
    };
    files.open_next().map_err(|source| StartError::Sys {
        what: format!("{}: cannot create", dir.display()),
        source,
    })?;
    let shared = Arc::new(Mutex::new(Shared::default()));
    if let Some(w) = &files.w {
        if let Ok(mut s) = shared.lock() {
            s.files.push(
                w.path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (stop2, shared2) = (Arc::clone(&stop), Arc::clone(&shared));
    let thread = std::thread::Builder::new()
        .name("capture".into())
        .spawn(move || run(ring, files, &stop2, &shared2))
        .map_err(|source| StartError::Sys {
            what: "capture thread".into(),
            source,
        })?;
    Ok(NativeCapture {
        stop,
        shared,
        thread: Some(thread),
    })
}

/// The capture thread's state.
struct Loop<'a> {
    files: Files,
    c: NativeCounters,
    failed: bool,
    shared: &'a Mutex<Shared>,
}

impl Loop<'_> {
    fn fail(&mut self, what: &str, e: &std::io::Error, lost: u64) {
        self.c.write_errors += 1;
        self.c.packets_lost_writing += lost;
        if !self.failed {
            self.failed = true;
            let msg = format!("{what}: {e}");
            if let Ok(mut s) = self.shared.lock() {
                s.failure = Some((msg, crate::sys::is_disk_full(e)));
            }
        }
    }

    fn flush(&mut self) {
        if self.failed {
            return;
        }
        if let Some(w) = self.files.w.as_mut() {
            if let Err(f) = w.flush() {
                let p = w.path.display().to_string();
                self.fail(&p, &f.error, f.packets_lost);
            }
        }
        self.sync_counters();
    }

    fn sync_counters(&mut self) {
        let written: u64 = self.files.w.as_ref().map_or(0, |w| w.packets);
        super::capture_progress(self.c.packets_received, self.c.lost());
        if let Ok(mut s) = self.shared.lock() {
            s.c = self.c.clone();
            s.c.packets_written += written;
        }
    }

    /// Closes the current file: statistics, flush, fsync.
    fn close(&mut self) {
        self.files.statistics(&self.c);
        let Some(mut w) = self.files.w.take() else {
            return;
        };
        if self.failed {
            self.c.packets_lost_writing += w.discard();
        } else if let Err(f) = w.finish() {
            let path = w.path.display().to_string();
            self.fail(&path, &f.error, f.packets_lost);
        }
        self.c.packets_written += w.packets;
        self.c.bytes_written += w.committed;
    }

    fn rotate(&mut self) {
        self.close();
        if self.failed {
            return;
        }
        match self.files.open_next() {
            Ok(()) => {
                if let (Some(w), Ok(mut s)) = (&self.files.w, self.shared.lock()) {
                    s.files.push(
                        w.path
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                    );
                }
            }
            Err(e) => {
                let d = self.files.dir.display().to_string();
                self.fail(&format!("{d}: new capture file"), &e, 0);
            }
        }
    }

    /// Writes the packets of one block.
    fn block(&mut self, b: &[u8]) {
        if u32_at(b, 8) & libc::TP_STATUS_LOSING != 0 {
            self.c.losing_blocks += 1;
        }
        let n = u32_at(b, 12);
        let mut off = u32_at(b, 16) as usize;
        for _ in 0..n {
            let Some(h) = b.get(off..off + 48) else { break };
            let next = u32_at(h, 0) as usize;
            let (sec, nsec) = (u32_at(h, 4), u32_at(h, 8));
            let (snap, len, status) = (u32_at(h, 12), u32_at(h, 16), u32_at(h, 20));
            let mac = usize::from(u16_at(h, 24));
            let tci = u32_at(h, 32) as u16;
            let tpid = u16_at(h, 36);
            let sll = b.get(off + 48..off + 48 + 20).unwrap_or(&[]);
            let ifindex = u32_at(sll, 4) as i32;
            let hatype = u16_at(sll, 8);
            let pkttype = sll.get(10).copied().unwrap_or(0);
            let data = b.get(off + mac..off + mac + snap as usize).unwrap_or(&[]);
            let skip = pkttype == libc::PACKET_OUTGOING && hatype == ARPHRD_LOOPBACK;
            if !skip {
                self.c.packets_received += 1;
                if self.failed {
                    self.c.packets_lost_writing += 1;
                } else {
                    self.packet(
                        sec, nsec, len, status, tci, tpid, sll, ifindex, pkttype, data,
                    );
                }
            }
            if next == 0 {
                break;
            }
            off += next;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn packet(
        &mut self,
        sec: u32,
        nsec: u32,
        len: u32,
        status: u32,
        tci: u16,
        tpid: u16,
        sll: &[u8],
        ifindex: i32,
        pkttype: u8,
        data: &[u8],
    ) {
        let ts = i64::from(sec) * 1_000_000_000 + i64::from(nsec);
        let dir = if pkttype == libc::PACKET_OUTGOING {
            pcapng::FLAG_OUTBOUND
        } else {
            pcapng::FLAG_INBOUND
        };
        let reception: u32 = match pkttype {
            libc::PACKET_HOST => 1,
            libc::PACKET_MULTICAST => 2,
            libc::PACKET_BROADCAST => 3,
            libc::PACKET_OTHERHOST => 4,
            _ => 0,
        };
        let flags = dir | (reception << 2);
        let mode = self.files.mode;
        let id = if mode == Mode::Cooked && self.files.index == 0 {
            self.files.iface_id(ifindex)
        } else {
            0
        };
        let Some(w) = self.files.w.as_mut() else {
            return;
        };
        match mode {
            Mode::Ethernet if status & libc::TP_STATUS_VLAN_VALID != 0 && data.len() >= 12 => {
                let tpid = if status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                    tpid
                } else {
                    0x8100
                };
                let mut tag = [0u8; 4];
                tag[..2].copy_from_slice(&tpid.to_be_bytes());
                tag[2..].copy_from_slice(&tci.to_be_bytes());
                w.packet(id, ts, &[&data[..12], &tag, &data[12..]], len + 4, flags);
            }
            Mode::Ethernet => w.packet(id, ts, &[data], len, flags),
            Mode::Cooked => {
                // struct sll_header: packet type, ARPHRD, address length,
                // address (8 bytes), protocol (as the kernel gave it).
                let mut head = [0u8; 16];
                head[..2].copy_from_slice(&u16::from(pkttype).to_be_bytes());
                head[2..4].copy_from_slice(&u16_at(sll, 8).to_be_bytes());
                let halen = sll.get(11).copied().unwrap_or(0).min(8);
                head[4..6].copy_from_slice(&u16::from(halen).to_be_bytes());
                if let Some(a) = sll.get(12..12 + usize::from(halen)) {
                    head[6..6 + a.len()].copy_from_slice(a);
                }
                if let Some(p) = sll.get(2..4) {
                    head[14..16].copy_from_slice(p);
                }
                w.packet(id, ts, &[&head, data], len + 16, flags);
            }
        }
        if w.buffer_full() {
            self.flush();
        }
        if !self.failed && self.files.due() {
            self.rotate();
        }
    }

    fn stats(&mut self, ring: &RxRing) {
        if let Some((p, d, f)) = ring.stats() {
            self.c.kernel_received += p;
            self.c.kernel_drops += d;
            self.c.ring_freezes += f;
        }
    }
}

fn run(mut ring: RxRing, files: Files, stop: &AtomicBool, shared: &Mutex<Shared>) {
    let mut l = Loop {
        files,
        c: NativeCounters::default(),
        failed: false,
        shared,
    };
    let mut cur = 0u32;
    let mut last_flush = Instant::now();
    let mut stop_at: Option<Instant> = None;
    loop {
        // Woken by a block handed over, or after 50 ms.
        let _ = crate::ksys::poll_readable(&[ring.fd().as_raw_fd()], 50);
        while let Some(b) = ring.user_block(cur) {
            l.block(b);
            ring.release(cur);
            cur = (cur + 1) % BLOCKS;
        }
        if last_flush.elapsed() >= Duration::from_secs(1) {
            last_flush = Instant::now();
            l.stats(&ring);
            l.flush();
            if !l.failed && l.files.due() {
                l.rotate();
            }
        }
        if stop.load(Ordering::Relaxed) {
            // Wait for the kernel to hand over the block it is filling
            // (at the latest after its retire timeout).
            let at = *stop_at.get_or_insert_with(|| {
                Instant::now() + Duration::from_millis(u64::from(RETIRE_MS) * 3)
            });
            if Instant::now() >= at {
                break;
            }
        }
    }
    while let Some(b) = ring.user_block(cur) {
        l.block(b);
        ring.release(cur);
        cur = (cur + 1) % BLOCKS;
    }
    l.stats(&ring);
    l.close();
    l.sync_counters_final();
    drop(ring);
}

impl Loop<'_> {
    fn sync_counters_final(&mut self) {
        if let Ok(mut s) = self.shared.lock() {
            s.c = self.c.clone();
        }
    }
}

impl NativeCapture {
    /// The first write error, and whether the disk was full.
    pub fn failure(&self) -> Option<(String, bool)> {
        self.shared.lock().ok().and_then(|s| s.failure.clone())
    }

    /// Stops the capture: the packets the kernel holds are written, the
    /// last file gets its statistics and is synced. Returns the counters
    /// for the manifest.
    pub fn stop(&mut self) -> (CaptureCounters, NativeCounters) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let s = self.shared.lock().map(|s| s.clone()).unwrap_or_default();
        let c = s.c;
        (
            CaptureCounters {
                captured: c.packets_received,
                received_by_filter: c.kernel_received,
                dropped_by_kernel: c.kernel_drops,
                dropped_by_interface: None,
            },
            c,
        )
    }
}
