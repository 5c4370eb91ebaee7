//! Names for remote endpoints, read from the capture itself: DNS answers,
//! the TLS and QUIC ClientHello's server name, the HTTP/1.x `Host:` header
//! and `CONNECT` target, and the JA4 fingerprint of each ClientHello.
//! Design and precedence: `docs/names.md`.
//!
//! Replay hands a [`Collector`] only the packets that can carry these: a
//! packet with payload among the first [`FIRST_PACKETS`] of its direction,
//! or to or from port 53. The collector keeps state only for flows whose
//! ClientHello, request or CRYPTO data is incomplete, bounded in all.

pub mod dns;
pub mod http;
pub mod ja4;
pub mod quic;
pub mod tls;

use std::collections::HashMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::flow::Flow;
use crate::packet::{ipproto, tcpflag, IpPacket};
use tls::{ClientHello, Parse};

/// Packets of each direction of a flow looked at for a ClientHello or a
/// request (port 53 is looked at throughout).
pub const FIRST_PACKETS: u64 = 12;
/// Bytes buffered for one incomplete ClientHello, request or CRYPTO stream.
const MAX_STREAM: usize = 16 * 1024;
/// Bytes buffered for all flows together.
const MAX_BUFFERED: usize = 64 << 20;
/// DNS answers kept in all.
const MAX_ANSWERS: usize = 1_000_000;
/// DNS queries remembered in all (for the query time).
const MAX_QUERIES: usize = 1_000_000;
/// Largest DNS-over-TCP reassembly buffer of one flow.
const MAX_DNS_TCP: usize = 64 * 1024 + 2;
/// Time past its TTL an answer still names its address.
pub const GRACE_NS: i64 = 300_000_000_000;
/// Longest name written to a report.
const MAX_NAME: usize = 255;

/// Where a flow's remote name comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The TLS ClientHello's server_name.
    TlsSni,
    /// The QUIC Initial's ClientHello server_name.
    QuicSni,
    /// The HTTP/1.x proxy `CONNECT` target.
    HttpConnect,
    /// The HTTP/1.x `Host:` header.
    HttpHost,
    /// A DNS answer for the address.
    Dns,
    /// The hosts file of the namespace the flow's socket lives in, as the
    /// recorder archived it.
    HostsFile,
}

impl Source {
    /// The name as written in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::TlsSni => "tls-sni",
            Source::QuicSni => "quic-sni",
            Source::HttpConnect => "http-connect",
            Source::HttpHost => "http-host",
            Source::Dns => "dns",
            Source::HostsFile => "hosts-file",
        }
    }
}

/// A name from the capture, made safe: lower-case is not forced (SNI and
/// Host are case-insensitive but reported as sent), bytes outside
/// printable ASCII are escaped as `\xHH`, at most 255 bytes.
pub fn clean_name(raw: &[u8]) -> String {
    let mut s = String::new();
    for &b in raw.iter().take(MAX_NAME) {
        if b.is_ascii_graphic() && b != b'\\' && b != b'"' && b != b',' && b != b';' {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

/// What the client side of one flow said about the server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evidence {
    /// TLS server_name (over TCP).
    pub tls_sni: Option<String>,
    /// QUIC ClientHello server_name.
    pub quic_sni: Option<String>,
    /// `CONNECT` target.
    pub http_connect: Option<String>,
    /// `Host:` header.
    pub http_host: Option<String>,
    /// JA4 of the ClientHello.
    pub ja4: Option<String>,
    tls_done: bool,
    http_done: bool,
    connect_done: bool,
}

/// One DNS answer: `addr` is `question`'s (through `chain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The answered address.
    pub addr: IpAddr,
    /// When the response was seen, ns.
    pub ts_ns: i64,
    /// TTL, seconds.
    pub ttl: u32,
    /// The question name.
    pub question: String,
    /// The CNAME chain from the question, when there was one.
    pub chain: Vec<String>,
    /// The DNS flow's id (after [`Collector::finish`]; its state index
    /// before).
    pub dns_flow: u64,
    /// When the query was sent, when it was seen.
    pub query_ns: Option<i64>,
}

impl Answer {
    /// Whether the answer still names its address at `t_ns`.
    pub fn valid_at(&self, t_ns: i64) -> bool {
        t_ns >= self.ts_ns
            && t_ns
                <= self
                    .ts_ns
                    .saturating_add(i64::from(self.ttl) * 1_000_000_000)
                    .saturating_add(GRACE_NS)
    }

    /// Whether `name` is the question or on its CNAME chain
    /// (case-insensitive, trailing dot ignored).
    pub fn names(&self, name: &str) -> bool {
        let n = name.trim_end_matches('.');
        self.question.eq_ignore_ascii_case(n)
            || self.chain.iter().any(|c| c.eq_ignore_ascii_case(n))
    }
}

/// Counters of name extraction (summary.json `names`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// DNS responses parsed.
    pub dns_responses: u64,
    /// A/AAAA answers kept.
    pub dns_answers: u64,
    /// Answers not kept: past the bound on answers.
    pub dns_answers_dropped: u64,
    /// ClientHellos parsed over TCP.
    pub tls_client_hellos: u64,
    /// ClientHellos parsed from QUIC Initials.
    pub quic_client_hellos: u64,
    /// HTTP requests read.
    pub http_requests: u64,
    /// Flows whose incomplete ClientHello or request was not buffered
    /// because the bound on buffered bytes was reached.
    pub unbuffered: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tls,
    Http,
}

/// Segments by offset from the first byte of what they hold.
type Segments = Vec<(u32, Vec<u8>)>;

/// A QUIC flow's Initial keys, the DCID they came from, CRYPTO frames.
type QuicPending = (quic::Keys, Vec<u8>, Vec<(u64, Vec<u8>)>);

/// An incomplete ClientHello or request: its kind, the sequence number of
/// its first byte, its segments.
#[derive(Debug, Default)]
struct Pending {
    tcp: Option<(Kind, u32, Segments)>,
    quic: Option<QuicPending>,
    dns_tcp: Option<DnsTcp>,
    bytes: usize,
}

#[derive(Debug, Default)]
struct DnsTcp {
    next: Option<u32>,
    buf: Vec<u8>,
    early: Vec<(u32, Vec<u8>)>,
}

/// Collects name evidence from the packets replay hands it.
#[derive(Debug, Default)]
pub struct Collector {
    evidence: HashMap<u32, Evidence>,
    pending: HashMap<u32, Pending>,
    answers: Vec<Answer>,
    queries: HashMap<(u32, u16), i64>,
    buffered: usize,
    stats: Stats,
}

/// Everything name extraction found, by flow id.
#[derive(Debug, Clone, Default)]
pub struct Names {
    /// Client-side evidence by flow id.
    pub evidence: HashMap<u64, Evidence>,
    /// DNS answers sorted by (address, time).
    pub answers: Vec<Answer>,
    /// Counters.
    pub stats: Stats,
}

/// Whether a packet is one the collector wants: cheap, called for every
/// packet with payload.
#[inline]
pub fn wanted(p: &IpPacket, nth_in_direction: u64) -> bool {
    nth_in_direction <= FIRST_PACKETS || is_dns_port(p.sport) || is_dns_port(p.dport)
}

/// DNS (53) and multicast DNS (5353).
#[inline]
fn is_dns_port(port: u16) -> bool {
    port == 53 || port == 5353
}

fn assemble(segs: &mut [(u32, Vec<u8>)]) -> Vec<u8> {
    segs.sort_by_key(|s| s.0);
    let mut out: Vec<u8> = Vec::new();
    for (off, d) in segs.iter() {
        let off = *off as usize;
        if off > out.len() {
            break;
        }
        let skip = out.len() - off;
        if skip < d.len() {
            out.extend_from_slice(&d[skip..]);
        }
    }
    out
}

impl Collector {
    /// An empty collector.
    pub fn new() -> Self {
        Collector::default()
    }

    /// One packet of flow state `flow` (the aggregation's index) with
    /// `payload`, sent by the initiator when `from_a`.
    pub fn observe(
        &mut self,
        flow: u32,
        ts_ns: i64,
        from_a: bool,
        p: &IpPacket,
        payload: &[u8],
        nth: u64,
    ) {
        let dns = is_dns_port(p.sport) || is_dns_port(p.dport);
        match p.proto {
            ipproto::UDP if dns => self.dns_udp(flow, ts_ns, p, payload),
            ipproto::TCP if dns => self.dns_tcp(flow, ts_ns, p, payload),
            ipproto::UDP if from_a && nth <= FIRST_PACKETS => self.quic(flow, payload),
            ipproto::TCP if from_a && nth <= FIRST_PACKETS => self.tcp_client(flow, p, payload),
            _ => {}
        }
    }

    fn answer(&mut self, flow: u32, ts_ns: i64, r: dns::Response) {
        self.stats.dns_responses += 1;
        let query_ns = self.queries.get(&(flow, r.id)).copied();
        for (addr, ttl) in r.addrs {
            if self.answers.len() >= MAX_ANSWERS {
                self.stats.dns_answers_dropped += 1;
                continue;
            }
            self.stats.dns_answers += 1;
            self.answers.push(Answer {
                addr,
                ts_ns,
                ttl,
                question: r.question.clone(),
                chain: r.chain.clone(),
                dns_flow: u64::from(flow),
                query_ns,
            });
        }
    }

    fn query(&mut self, flow: u32, ts_ns: i64, id: u16) {
        if self.queries.len() < MAX_QUERIES {
            self.queries.entry((flow, id)).or_insert(ts_ns);
        }
    }

    fn dns_udp(&mut self, flow: u32, ts_ns: i64, p: &IpPacket, msg: &[u8]) {
        match dns::header(msg) {
            Some((id, true)) if is_dns_port(p.dport) => self.query(flow, ts_ns, id),
            Some((_, false)) if is_dns_port(p.sport) => {
                if let Some(r) = dns::parse_response(msg) {
                    self.answer(flow, ts_ns, r);
                }
            }
            _ => {}
        }
    }

    fn dns_tcp(&mut self, flow: u32, ts_ns: i64, p: &IpPacket, seg: &[u8]) {
        if p.dport == 53 {
            // A query: its id, when the segment starts a message.
            if let Some((id, true)) = seg.get(2..).and_then(dns::header) {
                self.query(flow, ts_ns, id);
            }
            return;
        }
        if p.sport != 53 {
            return;
        }
        let seq = if p.tcp_flags & tcpflag::SYN != 0 {
            p.tcp_seq.wrapping_add(1)
        } else {
            p.tcp_seq
        };
        let full = self.buffered >= MAX_BUFFERED;
        let pend = self.pending.entry(flow).or_default();
        let st = pend.dns_tcp.get_or_insert_with(DnsTcp::default);
        let next = *st.next.get_or_insert(seq);
        let rel = seq.wrapping_sub(next) as i32;
        let before = st.buf.len() + st.early.iter().map(|e| e.1.len()).sum::<usize>();
        if rel < 0 {
            // Retransmitted or overlapping: the part past `next`.
            let skip = rel.unsigned_abs() as usize;
            if skip < seg.len() {
                st.buf.extend_from_slice(&seg[skip..]);
                st.next = Some(next.wrapping_add((seg.len() - skip) as u32));
            }
        } else if rel == 0 {
            st.buf.extend_from_slice(seg);
            st.next = Some(next.wrapping_add(seg.len() as u32));
        } else if st.early.len() < 16 && !full {
            st.early.push((seq, seg.to_vec()));
        }
        // Segments that arrived early and now fit.
        loop {
            let n = st.next.unwrap_or(0);
            let Some(i) = st
                .early
                .iter()
                .position(|e| e.0.wrapping_sub(n) as i32 <= 0)
            else {
                break;
            };
            let (s, d) = st.early.swap_remove(i);
            let skip = n.wrapping_sub(s) as usize;
            if skip < d.len() {
                st.buf.extend_from_slice(&d[skip..]);
                st.next = Some(n.wrapping_add((d.len() - skip) as u32));
            }
        }
        let mut msgs = Vec::new();
        while let Some(len) = st
            .buf
            .get(..2)
            .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
        {
            let Some(m) = st.buf.get(2..2 + len) else {
                break;
            };
            msgs.push(m.to_vec());
            st.buf.drain(..2 + len);
        }
        if st.buf.len() > MAX_DNS_TCP {
            st.buf.clear();
            st.early.clear();
        }
        let after = st.buf.len() + st.early.iter().map(|e| e.1.len()).sum::<usize>();
        pend.bytes = pend.bytes + after - before.min(pend.bytes + after);
        self.buffered = self.buffered + after - before.min(self.buffered + after);
        for m in msgs {
            if let Some(r) = dns::parse_response(&m) {
                self.answer(flow, ts_ns, r);
            }
        }
    }

    fn hello(&mut self, flow: u32, ch: &ClientHello, quic: bool) {
        let e = self.evidence.entry(flow).or_default();
        e.tls_done = true;
        let sni = ch.sni.as_deref().map(clean_name);
        if quic {
            self.stats.quic_client_hellos += 1;
            e.quic_sni = sni;
        } else {
            self.stats.tls_client_hellos += 1;
            e.tls_sni = sni;
        }
        e.ja4 = Some(ja4::ja4(ch, quic));
    }

    fn request(&mut self, flow: u32, r: http::Request) {
        self.stats.http_requests += 1;
        let e = self.evidence.entry(flow).or_default();
        match r {
            http::Request::Connect(t) => {
                e.connect_done = true;
                e.http_connect = Some(clean_name(&t));
            }
            http::Request::Host(h) => {
                e.http_done = true;
                e.http_host = Some(clean_name(&h));
            }
            http::Request::NoHost => e.http_done = true,
        }
    }

    fn drop_pending_tcp(&mut self, flow: u32) {
        if let Some(p) = self.pending.get_mut(&flow) {
            if let Some((_, _, segs)) = p.tcp.take() {
                let n: usize = segs.iter().map(|s| s.1.len()).sum();
                p.bytes -= n.min(p.bytes);
                self.buffered -= n.min(self.buffered);
            }
            if p.tcp.is_none() && p.quic.is_none() && p.dns_tcp.is_none() {
                self.pending.remove(&flow);
            }
        }
    }

    fn tcp_client(&mut self, flow: u32, p: &IpPacket, seg: &[u8]) {
        let seq = if p.tcp_flags & tcpflag::SYN != 0 {
            p.tcp_seq.wrapping_add(1)
        } else {
            p.tcp_seq
        };
        // A segment of an incomplete ClientHello or request.
        if let Some((kind, start, segs)) = self.pending.get_mut(&flow).and_then(|x| x.tcp.as_mut())
        {
            let (kind, off) = (*kind, seq.wrapping_sub(*start));
            let held: usize = segs.iter().map(|s| s.1.len()).sum();
            if (off as usize) < MAX_STREAM && held + seg.len() <= MAX_STREAM && segs.len() < 32 {
                segs.push((off, seg.to_vec()));
                self.buffered += seg.len();
                let bytes = assemble(segs);
                match self.parse(kind, &bytes) {
                    Some(true) => {
                        self.finish_parse(flow, kind, &bytes);
                        self.drop_pending_tcp(flow);
                    }
                    Some(false) => self.drop_pending_tcp(flow),
                    None => {}
                }
                return;
            }
            self.drop_pending_tcp(flow);
            return;
        }
        let done = self.evidence.get(&flow);
        let kind = match seg.first() {
            Some(0x16) if !done.is_some_and(|e| e.tls_done) => Kind::Tls,
            Some(b'A'..=b'Z') if !done.is_some_and(|e| e.http_done) => Kind::Http,
            _ => return,
        };
        match self.parse(kind, seg) {
            Some(true) => self.finish_parse(flow, kind, seg),
            Some(false) => {}
            None => {
                if self.buffered + seg.len() > MAX_BUFFERED {
                    self.stats.unbuffered += 1;
                    return;
                }
                self.buffered += seg.len();
                let pend = self.pending.entry(flow).or_default();
                pend.bytes += seg.len();
                pend.tcp = Some((kind, seq, vec![(0, seg.to_vec())]));
            }
        }
    }

    /// `Some(true)`: parsed; `Some(false)`: not this; `None`: need more.
    fn parse(&self, kind: Kind, bytes: &[u8]) -> Option<bool> {
        match kind {
            Kind::Tls => matches_parse(&tls::parse_records(bytes)),
            Kind::Http => matches_parse(&http::parse(bytes)),
        }
    }

    fn finish_parse(&mut self, flow: u32, kind: Kind, bytes: &[u8]) {
        match kind {
            Kind::Tls => {
                if let Parse::Done(ch) = tls::parse_records(bytes) {
                    self.hello(flow, &ch, false);
                }
            }
            Kind::Http => {
                if let Parse::Done(r) = http::parse(bytes) {
                    // A Host after a CONNECT (a request inside the tunnel)
                    // is kept beside it; a second CONNECT is not.
                    let skip = matches!(r, http::Request::Connect(_))
                        && self.evidence.get(&flow).is_some_and(|e| e.connect_done);
                    if !skip {
                        self.request(flow, r);
                    }
                }
            }
        }
    }

    fn quic(&mut self, flow: u32, dgram: &[u8]) {
        if self.evidence.get(&flow).is_some_and(|e| e.tls_done) {
            return;
        }
        let Some(dcid) = quic::initial_dcid(dgram) else {
            return;
        };
        let have = self
            .pending
            .get(&flow)
            .and_then(|p| p.quic.as_ref())
            .is_some();
        if !have {
            let Some(keys) = quic::client_keys(&dcid) else {
                return;
            };
            self.pending.entry(flow).or_default().quic = Some((keys, dcid.clone(), Vec::new()));
        }
        let Some(pend) = self.pending.get_mut(&flow) else {
            return;
        };
        let Some((keys, first_dcid, frames)) = pend.quic.as_mut() else {
            return;
        };
        let mut got = quic::crypto_frames(dgram, keys);
        if got.is_empty() && dcid != *first_dcid {
            // After a Retry the client derives new keys from the new DCID.
            if let Some(k) = quic::client_keys(&dcid) {
                got = quic::crypto_frames(dgram, &k);
                if !got.is_empty() {
                    *keys = k;
                    *first_dcid = dcid;
                }
            }
        }
        let mut added = 0;
        for (off, data) in got {
            let held: usize = frames.iter().map(|f| f.1.len()).sum();
            if off as usize + data.len() <= MAX_STREAM && held + data.len() <= MAX_STREAM * 2 {
                added += data.len();
                frames.push((off, data));
            }
        }
        pend.bytes += added;
        self.buffered += added;
        let mut segs: Vec<(u32, Vec<u8>)> =
            frames.iter().map(|(o, d)| (*o as u32, d.clone())).collect();
        let stream = assemble(&mut segs);
        match tls::parse_handshake(&stream) {
            Parse::NeedMore => {}
            Parse::Done(ch) => {
                self.hello(flow, &ch, true);
                self.drop_pending_quic(flow);
            }
            Parse::No => {
                self.evidence.entry(flow).or_default().tls_done = true;
                self.drop_pending_quic(flow);
            }
        }
    }

    fn drop_pending_quic(&mut self, flow: u32) {
        if let Some(p) = self.pending.get_mut(&flow) {
            if let Some((_, _, frames)) = p.quic.take() {
                let n: usize = frames.iter().map(|s| s.1.len()).sum();
                p.bytes -= n.min(p.bytes);
                self.buffered -= n.min(self.buffered);
            }
            if p.tcp.is_none() && p.quic.is_none() && p.dns_tcp.is_none() {
                self.pending.remove(&flow);
            }
        }
    }

    /// Ends collection: `id_of[state]` is the id of the flow of each
    /// aggregation state, `flows` the flows by id (1-based, in order), for
    /// the first packet time of DNS flows whose query was not seen.
    pub fn finish(self, id_of: &[u64], flows: &[Flow]) -> Names {
        let id = |s: u64| id_of.get(s as usize).copied().unwrap_or(0);
        let evidence = self
            .evidence
            .into_iter()
            .filter(|(_, e)| {
                e.tls_sni.is_some()
                    || e.quic_sni.is_some()
                    || e.http_connect.is_some()
                    || e.http_host.is_some()
                    || e.ja4.is_some()
            })
            .map(|(s, e)| (id(u64::from(s)), e))
            .collect();
        let mut answers = self.answers;
        for a in &mut answers {
            a.dns_flow = id(a.dns_flow);
            if a.query_ns.is_none() {
                a.query_ns = a
                    .dns_flow
                    .checked_sub(1)
                    .and_then(|i| flows.get(i as usize))
                    .map(|f| f.first_seen_ns);
            }
        }
        answers.sort_by_key(|a| (a.addr, a.ts_ns));
        Names {
            evidence,
            answers,
            stats: self.stats,
        }
    }
}

fn matches_parse<T>(p: &Parse<T>) -> Option<bool> {
    match p {
        Parse::Done(_) => Some(true),
        Parse::No => Some(false),
        Parse::NeedMore => None,
    }
}

/// The remote name of one report row, with where it came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowName {
    /// The name.
    pub name: String,
    /// Its source.
    pub source: Option<Source>,
    /// Other sources' names that disagree: `source:name`, `;`-joined.
    pub other: String,
    /// The DNS answer's flow and query time, when one joined.
    pub dns: Option<(u64, i64)>,
    /// JA4 of the flow's ClientHello.
    pub ja4: Option<String>,
    /// TLS server_name (TCP or QUIC), for ECS `tls.client.server_name`.
    pub server_name: Option<String>,
    /// Pid that sent the DNS query, when its flow is attributed.
    pub resolved_by_pid: Option<u32>,
    /// That process's comm.
    pub resolved_by_comm: Option<String>,
}

impl Names {
    /// The latest answer for `addr` seen before `t_ns` that is still valid.
    pub fn dns_for(&self, addr: IpAddr, t_ns: i64) -> Option<&Answer> {
        let end = self
            .answers
            .partition_point(|a| (a.addr, a.ts_ns) <= (addr, t_ns));
        self.answers[..end]
            .iter()
            .rev()
            .take(64)
            .take_while(|a| a.addr == addr)
            .find(|a| a.valid_at(t_ns))
    }

    /// The name of a flow whose remote end is `b` (the responder) when
    /// `remote_is_b`, else `a`: the client's evidence names only the
    /// responder. `evidence_id` is the flow's id before any split.
    pub fn name_for(&self, flow: &Flow, evidence_id: u64, remote_is_b: bool) -> Option<FlowName> {
        let ev = self.evidence.get(&evidence_id);
        let remote = if remote_is_b { flow.b_ip } else { flow.a_ip };
        let answer = self.dns_for(remote, flow.first_seen_ns);
        let mut cands: Vec<(Source, &str)> = Vec::new();
        if let (Some(e), true) = (ev, remote_is_b) {
            for (s, v) in [
                (Source::TlsSni, &e.tls_sni),
                (Source::QuicSni, &e.quic_sni),
                (Source::HttpConnect, &e.http_connect),
                (Source::HttpHost, &e.http_host),
            ] {
                if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                    cands.push((s, v));
                }
            }
        }
        if let Some(a) = answer {
            cands.push((Source::Dns, &a.question));
        }
        let ja4 = ev.and_then(|e| e.ja4.clone());
        if cands.is_empty() && ja4.is_none() {
            return None;
        }
        let (name, source) = cands
            .first()
            .map(|(s, n)| (n.to_string(), Some(*s)))
            .unwrap_or_default();
        // A DNS answer that names something else than the client asked
        // for: both kept.
        let host_of = |n: &str| -> String {
            match n.rsplit_once(':') {
                Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h.to_string(),
                _ => n.to_string(),
            }
        };
        let mut other = Vec::new();
        if let (Some(a), Some(s)) = (answer, source) {
            if s != Source::Dns && s != Source::HttpConnect && !a.names(&host_of(&name)) {
                other.push(format!("dns:{}", a.question));
            }
        }
        // The client's own sources disagreeing (SNI against Host).
        for (s, n) in cands.iter().skip(1) {
            if matches!(s, Source::TlsSni | Source::QuicSni | Source::HttpHost)
                && !host_of(n).eq_ignore_ascii_case(&host_of(&name))
                && source != Some(Source::HttpConnect)
            {
                other.push(format!("{}:{n}", s.as_str()));
            }
        }
        Some(FlowName {
            name,
            source,
            other: other.join(";"),
            dns: answer.map(|a| (a.dns_flow, a.query_ns.unwrap_or(a.ts_ns))),
            ja4,
            server_name: ev.and_then(|e| e.tls_sni.clone().or_else(|| e.quic_sni.clone())),
            resolved_by_pid: None,
            resolved_by_comm: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{Family, Frag};

    fn pkt(proto: u8, sport: u16, dport: u16, seq: u32) -> IpPacket {
        IpPacket {
            family: Family::V4,
            proto,
            src: [0; 16],
            dst: [0; 16],
            sport,
            dport,
            tcp_flags: tcpflag::ACK,
            icmp: None,
            ip_len: 0,
            frag: Frag::None,
            payload_off: 0,
            payload_len: 0,
            tcp_seq: seq,
            tcp_ack: 0,
            tcp_payload: 0,
        }
    }

    #[test]
    fn client_hello_split_over_segments_out_of_order() {
        let hs = tls::tests::hello(&[0x1301], &[tls::tests::sni_ext("split.example")]);
        let mut rec = vec![0x16, 3, 1];
        rec.extend((hs.len() as u16).to_be_bytes());
        rec.extend(&hs);
        let (x, rest) = rec.split_at(10);
        let (y, z) = rest.split_at(20);
        let mut c = Collector::new();
        let t = ipproto::TCP;
        c.observe(0, 1, true, &pkt(t, 40000, 443, 1000), x, 3);
        c.observe(0, 2, true, &pkt(t, 40000, 443, 1030), z, 4);
        assert!(!c.evidence.contains_key(&0));
        c.observe(0, 3, true, &pkt(t, 40000, 443, 1010), y, 5);
        let e = c.evidence.get(&0).unwrap();
        assert_eq!(e.tls_sni.as_deref(), Some("split.example"));
        assert!(e.ja4.as_deref().unwrap().starts_with("t12d0101"));
        assert!(c.pending.is_empty() && c.buffered == 0);
    }

    #[test]
    fn connect_then_host_and_conflict_with_dns() {
        let mut c = Collector::new();
        let t = ipproto::TCP;
        c.observe(
            1,
            10,
            true,
            &pkt(t, 4000, 3128, 1),
            b"CONNECT site.example:80 HTTP/1.1\r\n\r\n",
            3,
        );
        c.observe(
            1,
            11,
            true,
            &pkt(t, 4000, 3128, 40),
            b"GET / HTTP/1.1\r\nHost: site.example\r\n\r\n",
            4,
        );
        let e = c.evidence.get(&1).unwrap().clone();
        assert_eq!(e.http_connect.as_deref(), Some("site.example:80"));
        assert_eq!(e.http_host.as_deref(), Some("site.example"));
        let names = Names {
            evidence: [(7u64, e)].into_iter().collect(),
            answers: vec![Answer {
                addr: "192.0.2.1".parse().unwrap(),
                ts_ns: 5,
                ttl: 0,
                question: "proxy.example".into(),
                chain: vec![],
                dns_flow: 3,
                query_ns: Some(4),
            }],
            stats: Stats::default(),
        };
        let mut f = Flow::new(
            t,
            Family::V4,
            ("10.0.0.1".parse().unwrap(), Some(4000)),
            ("192.0.2.1".parse().unwrap(), Some(3128)),
            None,
            10,
        );
        let n = names.name_for(&f, 7, true).unwrap();
        assert_eq!(
            (n.name.as_str(), n.source),
            ("site.example:80", Some(Source::HttpConnect))
        );
        assert_eq!(n.dns, Some((3, 4)));
        assert_eq!(n.other, "");
        // Past TTL + grace the answer no longer names the address.
        f.first_seen_ns = 5 + GRACE_NS + 1;
        assert!(names.name_for(&f, 8, true).is_none());
    }
}

/// Most distinct JA4 values listed for one process.
pub const MAX_JA4_PER_PROCESS: usize = 16;

/// What naming the rows found (summary.json `names`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RowStats {
    /// Rows with a remote name, by source.
    pub named: std::collections::BTreeMap<&'static str, u64>,
    /// Rows with a JA4.
    pub ja4: u64,
    /// Rows whose sources disagree (`remote_name_other`).
    pub conflicts: u64,
    /// The first of them: (flow id, name, other).
    pub first_conflict: Option<(u64, String, String)>,
    /// Rows whose name came from a DNS answer sent to a known process.
    pub resolved_by_known_process: u64,
    /// DNS flows whose answers came from a server that no resolv.conf of
    /// the asking namespace names (only where resolv.conf was recorded and
    /// names no loopback resolver).
    #[serde(skip_serializing_if = "is_zero")]
    pub dns_servers_not_in_resolv_conf: u64,
    /// The first of them: (flow id, server, network namespace).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_unlisted_dns_server: Option<(u64, IpAddr, u64)>,
    /// The extraction counters.
    #[serde(flatten)]
    pub extraction: Stats,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The network namespace a row's socket lives in: the matched socket's,
/// the event's, the namespace whose addresses led to the evidence, the
/// owner's, else the capture's.
pub fn row_netns(r: &crate::report::ConnectionRow, capture_netns: u64) -> u64 {
    r.attribution
        .socket
        .map(|s| s.netns)
        .or(r.event_netns)
        .or(r.attribution.netns_hint)
        .or(r.process.as_ref().map(|p| p.netns).filter(|&n| n != 0))
        .unwrap_or(capture_netns)
}

/// Names every row: its remote name (the client's evidence names the
/// responder only; the namespace's hosts file where nothing in the capture
/// names it), the resolving process from the DNS flow's own attribution,
/// and the counters. `capture_netns` is the recorder's namespace.
pub fn annotate_rows(
    rows: &mut [crate::report::ConnectionRow],
    names: &Names,
    nsfiles: &crate::snapshot::nsfiles::NsFiles,
    capture_netns: u64,
) -> RowStats {
    let mut st = RowStats {
        extraction: names.stats.clone(),
        ..RowStats::default()
    };
    for r in rows.iter_mut() {
        let id = r.attribution.parent_flow_id.unwrap_or(r.flow.id);
        r.name = names.name_for(&r.flow, id, r.local_is_a).map(Box::new);
        if nsfiles.is_empty() || r.name.as_ref().is_some_and(|n| n.source.is_some()) {
            continue;
        }
        let owner = r.attribution.owner.map(|o| (o.pid, o.start_time));
        let ns = row_netns(r, capture_netns);
        if let Some(h) = nsfiles.hosts_name(ns, owner, r.remote().0, r.flow.first_seen_ns) {
            let n = r.name.get_or_insert_with(Box::default);
            n.name = h.to_string();
            n.source = Some(Source::HostsFile);
        }
    }
    // DNS flows answered by a server the asking namespace's resolv.conf
    // does not name.
    if !nsfiles.resolv.is_empty() {
        let dns_flows: std::collections::HashSet<u64> =
            names.answers.iter().map(|a| a.dns_flow).collect();
        for r in rows.iter() {
            let id = r.attribution.parent_flow_id.unwrap_or(r.flow.id);
            let (server, port) = r.remote();
            if port != Some(53) || !dns_flows.contains(&id) {
                continue;
            }
            let ns = row_netns(r, capture_netns);
            if nsfiles.names_resolver(ns, server) == Some(false) {
                st.dns_servers_not_in_resolv_conf += 1;
                st.first_unlisted_dns_server.get_or_insert((id, server, ns));
            }
        }
    }
    // The process that sent each DNS flow's query: its owner at the
    // query time (a cut flow: the part holding that time).
    let mut resolver: HashMap<u64, (u32, String)> = HashMap::new();
    let wanted: std::collections::HashMap<u64, i64> = rows
        .iter()
        .filter_map(|r| r.name.as_ref().and_then(|n| n.dns))
        .collect();
    for r in rows.iter() {
        let id = r.attribution.parent_flow_id.unwrap_or(r.flow.id);
        let Some(&t) = wanted.get(&id) else {
            continue;
        };
        let Some(o) = r.attribution.owner else {
            continue;
        };
        let covers = r.flow.first_seen_ns <= t && t <= r.flow.last_seen_ns;
        if covers || !resolver.contains_key(&id) {
            let comm = r
                .process
                .as_ref()
                .map(|p| p.comm.clone())
                .or_else(|| r.event_comm.clone())
                .unwrap_or_default();
            resolver.insert(id, (o.pid, comm));
        }
    }
    for r in rows.iter_mut() {
        let Some(n) = r.name.as_mut() else {
            continue;
        };
        if let Some((pid, comm)) = n.dns.and_then(|(d, _)| resolver.get(&d)) {
            n.resolved_by_pid = Some(*pid);
            n.resolved_by_comm = Some(comm.clone());
            st.resolved_by_known_process += 1;
        }
        if let Some(s) = n.source {
            *st.named.entry(s.as_str()).or_default() += 1;
        }
        if n.ja4.is_some() {
            st.ja4 += 1;
        }
        if !n.other.is_empty() {
            st.conflicts += 1;
            st.first_conflict
                .get_or_insert_with(|| (r.flow.id, n.name.clone(), n.other.clone()));
        }
    }
    st
}
