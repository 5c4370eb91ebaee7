//! Attribution: each flow joined to the socket that carried it and to the
//! process that held that socket at the time. Per flow; a flow whose
//! socket changed owner during its lifetime is split first (the `split` module,
//! which builds on this one).
//!
//! The rules are data: [`RULES`] lists them in the order tried, each a
//! [`Rule`] whose evidence, name, description and confidence are defined
//! beside it. The first rule that yields an owner is reported as the
//! flow's [`Method`] (for traffic between two local sockets, both ends are
//! tried within each tier of rules, the initiator first):
//!
//! 1. the recorder's per-send and per-read runs on the socket bound to the
//!    flow's tuple (`event-use`, module `uses`), which also place each
//!    packet with the process that sent or read its bytes (module `split`);
//!    recorder events with the flow's endpoints (`event-connect`,
//!    `event-accept`, `lookup-on-syn`, `event-send`, `event-close`), taken in
//!    the owning process' context;
//! 2. `exact`, `exact-v4mapped`: a snapshot socket with the flow's 4-tuple;
//! 3. `event-nat`, `exact-nat`, `listen-nat`, `udp-bound-nat`: no socket holds the wire
//!    tuple; it is translated through the conntrack entry valid at the
//!    flow's time (masquerade, published port) and the translated tuple is
//!    looked up in whichever namespace holds it (module `nat`);
//! 4. `listen`, `listen-wildcard`: a TCP LISTEN socket on the local port;
//! 5. `udp-bound`, `udp-bound-wildcard`: an unconnected UDP socket on it.
//!
//! Within a rule the evidence closest in time to the flow's lifetime wins:
//! overlap first (largest overlap), then the smallest gap, never more than
//! `max_gap`. A socket found without an owner (inode 0, no holder, or
//! holders unreadable) does not stop the search; when no later rule finds an
//! owner the flow is `unattributed:no-owner` or `unattributed:owner-unreadable`.
//! Remarks are returned as [`Note`]s; the report words them.

mod nat;
pub(crate) mod uses;

pub use nat::NatMatch;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use crate::flow::{ipproto, Family, Flow};
use crate::snapshot::procnet::{is_v4_mapped, STATE_LISTEN};
use crate::snapshot::timeline::{EventKind, Run, SockEvent, Socket, Timeline, Transport};

/// Default `--max-gap`: 30 s.
///
/// Long enough to cover several recorder intervals (default 100 ms, more
/// under load or `--max-cpu`) and the
/// time between a socket's last sighting and its last packets; shorter than
/// Linux's TIME_WAIT (60 s), during which the initiator cannot reuse the
/// same 4-tuple, so an exact match within the bound is the same connection.
pub const DEFAULT_MAX_GAP_NS: i64 = 30_000_000_000;

/// Why a flow has no owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// No socket matching the flow was seen within the time bound.
    NoSocket,
    /// A matching socket was seen, but with inode 0 (TIME_WAIT, open
    /// request, orphan) or held by no known process.
    NoOwner,
    /// A matching socket was seen with no known holder while some process'
    /// fd directory could not be read (permission): the owner is hidden.
    OwnerUnreadable,
    /// Neither TCP nor UDP (ICMP, GRE, ...): /proc/net/{tcp,udp} cannot own it.
    NotTcpUdp,
    /// The flow lies entirely outside the snapshots' time range and no
    /// socket was found within the bound.
    OutsideRecording,
    /// Neither endpoint is an address of the host or of a recorded namespace.
    NotLocal,
    /// Foreign evidence: neither endpoint is an address of the host the
    /// evidence was collected on (a sensor's capture holds many hosts).
    NotThisHost,
    /// Foreign evidence: the flow was not alive at a collection instant,
    /// no audit record names its endpoints, no listener its port.
    OutsideEvidence,
}

impl Reason {
    /// Every reason, in report order.
    pub const ALL: [Reason; 8] = [
        Reason::NoSocket,
        Reason::NoOwner,
        Reason::OwnerUnreadable,
        Reason::NotTcpUdp,
        Reason::OutsideRecording,
        Reason::NotLocal,
        Reason::NotThisHost,
        Reason::OutsideEvidence,
    ];

    /// Name as written after `unattributed:`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoSocket => "no-socket",
            Reason::NoOwner => "no-owner",
            Reason::OwnerUnreadable => "owner-unreadable",
            Reason::NotTcpUdp => "not-tcp-udp",
            Reason::OutsideRecording => "outside-recording",
            Reason::NotLocal => "not-local",
            Reason::NotThisHost => "not-this-host",
            Reason::OutsideEvidence => "outside-evidence",
        }
    }
}

/// A rule of the join: one kind of evidence that can name a flow's owner.
/// The rules are tried in the order of [`RULES`]; the first that finds an
/// owner is reported as the flow's `method` ([`Rule::name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// Send or receive calls on the socket bound to the flow's tuple, in
    /// the calling process' context: who sent or read the bytes.
    EventUse,
    /// A TCP connect event of the flow's 4-tuple, in the connecting
    /// process' context.
    EventConnect,
    /// An accept event of the flow's 4-tuple.
    EventAccept,
    /// A socket lookup made when the flow's first packet was seen.
    LookupOnSyn,
    /// A send event (UDP datagram) of the flow's 4-tuple, in the sending
    /// process' context.
    EventSend,
    /// A close event of the flow's 4-tuple.
    EventClose,
    /// Socket with the flow's 4-tuple.
    Exact,
    /// 4-tuple through an IPv4-mapped IPv6 socket.
    ExactV4Mapped,
    /// TCP LISTEN socket on the local address and port.
    Listen,
    /// TCP LISTEN socket on the wildcard address and the local port.
    ListenWildcard,
    /// Unconnected UDP socket bound to the local address and port.
    UdpBound,
    /// Unconnected UDP socket bound to the wildcard address and local port.
    UdpBoundWildcard,
    /// No socket holds the wire tuple; a socket event of the tuple it is
    /// translated to by the conntrack entry of the flow's time.
    EventNat,
    /// No socket holds the wire tuple; a snapshot socket with the tuple it
    /// is translated to by the conntrack entry of the flow's time.
    ExactNat,
    /// As `ExactNat`, a TCP LISTEN socket on the translated local port.
    ListenNat,
    /// As `ExactNat`, an unconnected UDP socket bound to the translated
    /// local port.
    BoundNat,
    /// Foreign evidence (`procflow correlate`): a UAC collection's socket
    /// table row with the flow's tuple, held by a pid's fd listing.
    UacFd,
    /// Foreign: a UAC LISTEN socket on the flow's local port, held by a pid.
    UacListen,
    /// Foreign: a UAC unconnected UDP socket on the flow's local port.
    UacUdpBound,
    /// Foreign: `ss -anp` / `netstat -anp` / `lsof -i` output names a pid
    /// for the flow's tuple (or its listener).
    UacSs,
    /// Foreign: an audited `connect` to the flow's remote address.
    AuditConnect,
    /// Foreign: an audited `accept`/`accept4` returning the flow's peer.
    AuditAccept,
    /// Foreign: an audited `bind` of the flow's local port.
    AuditBind,
}

/// Where a rule looks for its evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Evidence {
    /// Send and receive runs of the socket bound to the flow's tuple.
    Use,
    /// Socket events of this kind with the flow's endpoints.
    Event(EventKind),
    /// Snapshot sockets with the flow's 4-tuple (`mapped`: held as
    /// `::ffff:a.b.c.d`).
    Tuple { mapped: bool },
    /// Snapshot TCP LISTEN sockets on the local port.
    Listener { wildcard: bool },
    /// Snapshot unconnected UDP sockets on the local port.
    Bound { wildcard: bool },
    /// The wire tuple translated through a conntrack entry, then looked up
    /// as the rule's inner evidence (events, 4-tuple or listener).
    Nat(NatVia),
    /// Evidence collected by other tools (module `foreign`), never looked
    /// up in a bundle's timeline.
    Foreign,
}

/// What a NAT rule looks up once the tuple is translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NatVia {
    Event,
    Tuple,
    Listener,
    Bound,
}

/// The rules in the order they are tried, in tiers. Within a tier, both
/// ends of a flow between two local sockets are tried (the initiator
/// first) before the next tier: the initiator's socket found through a
/// wildcard address beats the responder's found through its specific
/// address. Events come first: they were taken in the owning process'
/// context when the packets were sent, while an fd listing is a sighting
/// between two snapshots. A new rule is a [`Rule`] variant, its row here
/// and its evidence in `Rule::evidence`.
pub const RULES: &[&[Rule]] = &[
    &[
        Rule::EventUse,
        Rule::EventConnect,
        Rule::EventAccept,
        Rule::LookupOnSyn,
        Rule::EventSend,
        Rule::EventClose,
    ],
    &[Rule::Exact, Rule::ExactV4Mapped],
    &[
        Rule::EventNat,
        Rule::ExactNat,
        Rule::ListenNat,
        Rule::BoundNat,
    ],
    &[Rule::Listen, Rule::ListenWildcard],
    &[Rule::UdpBound, Rule::UdpBoundWildcard],
];

/// The rules of foreign evidence (`procflow correlate`, module
/// `foreign`), in the order that breaks ties between candidates of
/// equal confidence. They are not tried on a bundle's timeline.
pub const FOREIGN_RULES: &[Rule] = &[
    Rule::UacFd,
    Rule::AuditAccept,
    Rule::AuditConnect,
    Rule::UacListen,
    Rule::UacUdpBound,
    Rule::UacSs,
    Rule::AuditBind,
];

/// How much to trust an attribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Confidence {
    /// Weak evidence (wildcard sockets, large gaps).
    Low,
    /// Good evidence with a caveat (a gap of a few seconds, a shared socket).
    Medium,
    /// The owner was seen with the flow's own socket during the flow.
    High,
}

impl Confidence {
    /// `low`, `medium` or `high`.
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::Low => "low",
            Confidence::Medium => "medium",
            Confidence::High => "high",
        }
    }
}

/// One second: an event this close to a flow is of that flow.
const EVENT_NEAR_NS: i64 = 1_000_000_000;
/// Five seconds: an exact socket sighting this close is still `medium`.
const SIGHTING_NEAR_NS: i64 = 5_000_000_000;

impl Rule {
    /// Every rule, in the order tried.
    pub fn all() -> impl Iterator<Item = Rule> {
        RULES
            .iter()
            .flat_map(|t| t.iter().copied())
            .chain(FOREIGN_RULES.iter().copied())
    }

    /// The `method` column value.
    pub fn name(self) -> &'static str {
        match self {
            Rule::EventUse => "event-use",
            Rule::EventConnect => "event-connect",
            Rule::EventAccept => "event-accept",
            Rule::LookupOnSyn => "lookup-on-syn",
            Rule::EventSend => "event-send",
            Rule::EventClose => "event-close",
            Rule::Exact => "exact",
            Rule::ExactV4Mapped => "exact-v4mapped",
            Rule::Listen => "listen",
            Rule::ListenWildcard => "listen-wildcard",
            Rule::UdpBound => "udp-bound",
            Rule::UdpBoundWildcard => "udp-bound-wildcard",
            Rule::EventNat => "event-nat",
            Rule::ExactNat => "exact-nat",
            Rule::ListenNat => "listen-nat",
            Rule::BoundNat => "udp-bound-nat",
            Rule::UacFd => "uac-fd",
            Rule::UacListen => "uac-listen",
            Rule::UacUdpBound => "uac-udp-bound",
            Rule::UacSs => "uac-ss",
            Rule::AuditConnect => "audit-connect",
            Rule::AuditAccept => "audit-accept",
            Rule::AuditBind => "audit-bind",
        }
    }

    fn evidence(self) -> Evidence {
        match self {
            Rule::EventUse => Evidence::Use,
            Rule::EventConnect => Evidence::Event(EventKind::Connect),
            Rule::EventAccept => Evidence::Event(EventKind::Accept),
            Rule::LookupOnSyn => Evidence::Event(EventKind::Lookup),
            Rule::EventSend => Evidence::Event(EventKind::Send),
            Rule::EventClose => Evidence::Event(EventKind::Close),
            Rule::Exact => Evidence::Tuple { mapped: false },
            Rule::ExactV4Mapped => Evidence::Tuple { mapped: true },
            Rule::Listen => Evidence::Listener { wildcard: false },
            Rule::ListenWildcard => Evidence::Listener { wildcard: true },
            Rule::UdpBound => Evidence::Bound { wildcard: false },
            Rule::UdpBoundWildcard => Evidence::Bound { wildcard: true },
            Rule::EventNat => Evidence::Nat(NatVia::Event),
            Rule::ExactNat => Evidence::Nat(NatVia::Tuple),
            Rule::ListenNat => Evidence::Nat(NatVia::Listener),
            Rule::BoundNat => Evidence::Nat(NatVia::Bound),
            Rule::UacFd
            | Rule::UacListen
            | Rule::UacUdpBound
            | Rule::UacSs
            | Rule::AuditConnect
            | Rule::AuditAccept
            | Rule::AuditBind => Evidence::Foreign,
        }
    }

    /// Whether the rule's evidence is a recorder event (a socket event or
    /// a run of send or receive calls).
    pub fn is_event(self) -> bool {
        matches!(self.evidence(), Evidence::Event(_) | Evidence::Use)
    }

    /// Confidence of an owner found by this rule at `gap_ns` from the flow.
    ///
    /// Events of the flow's own endpoints: `high` within 1 s, `medium`
    /// within 5 s, else `low` (a close event alone is at most `medium`: the
    /// closing process may have inherited the socket). Exact 4-tuple:
    /// `high` seen during the flow, `medium` within 5 s. A specific-address
    /// listener or bound socket seen during the flow: `medium`. Wildcards
    /// and larger gaps: `low`.
    pub fn confidence(self, gap_ns: i64) -> Confidence {
        let near = gap_ns <= SIGHTING_NEAR_NS;
        // Foreign evidence: a one-instant collection proves only flows
        // alive at its instant; an audit record is one call, stamped at
        // its entry (docs/foreign-evidence.md).
        match self {
            Rule::UacFd if gap_ns == 0 => return Confidence::High,
            Rule::UacListen | Rule::UacUdpBound | Rule::UacSs if gap_ns == 0 => {
                return Confidence::Medium
            }
            Rule::AuditConnect | Rule::AuditAccept if gap_ns <= EVENT_NEAR_NS => {
                return Confidence::High
            }
            Rule::AuditConnect if near => return Confidence::Medium,
            Rule::AuditAccept if gap_ns <= DEFAULT_MAX_GAP_NS => return Confidence::Medium,
            _ if self.evidence() == Evidence::Foreign => return Confidence::Low,
            _ => {}
        }
        match self.evidence() {
            Evidence::Use => Confidence::High,
            Evidence::Event(EventKind::Close) if near => Confidence::Medium,
            Evidence::Event(_) if gap_ns <= EVENT_NEAR_NS => Confidence::High,
            Evidence::Nat(NatVia::Event) if gap_ns <= EVENT_NEAR_NS => Confidence::High,
            Evidence::Tuple { .. } | Evidence::Nat(NatVia::Tuple) if gap_ns == 0 => {
                Confidence::High
            }
            Evidence::Event(_)
            | Evidence::Tuple { .. }
            | Evidence::Nat(NatVia::Event | NatVia::Tuple)
                if near =>
            {
                Confidence::Medium
            }
            Evidence::Listener { wildcard: false }
            | Evidence::Bound { wildcard: false }
            | Evidence::Nat(NatVia::Listener | NatVia::Bound)
                if gap_ns == 0 =>
            {
                Confidence::Medium
            }
            _ => Confidence::Low,
        }
    }

    /// One-sentence description (also written into summary.json).
    pub fn doc(self) -> &'static str {
        match self {
            Rule::EventUse => "send or receive calls on the socket bound to the flow's local and remote address and port, taken in the calling process' context: each packet goes to the process whose calls sent or read its bytes (TCP: by sequence number from the SYN; else by time)",
            Rule::EventConnect => "a TCP connect event of the flow's local and remote address and port, taken in the connecting process' context (tracepoint), nearest in time to the flow",
            Rule::EventAccept => "an accept event of the flow's local and remote address and port, naming the accepting process",
            Rule::LookupOnSyn => "the flow's socket looked up (sock_diag, then the fds of candidate processes) when its first packet was seen",
            Rule::EventSend => "a datagram send event of the flow's local port and remote address and port, taken in the sending process' context",
            Rule::EventClose => "only a close event of the flow's local and remote address and port names the process",
            Rule::Exact => "a socket with the flow's local and remote address and port, seen closest in time to the flow",
            Rule::ExactV4Mapped => "as exact, held by a dual-stack IPv6 socket as ::ffff:a.b.c.d while the packets are IPv4",
            Rule::Listen => "no connected socket seen; a TCP LISTEN socket on the flow's local address and port (server side of an accepted connection)",
            Rule::ListenWildcard => "as listen, the listener bound to 0.0.0.0 or ::",
            Rule::UdpBound => "no connected socket seen; an unconnected UDP socket bound to the flow's local address and port",
            Rule::UdpBoundWildcard => "as udp-bound, the socket bound to 0.0.0.0 or ::",
            Rule::EventNat => "no socket holds the wire tuple; translated through the conntrack entry of the flow's time (masquerade, published port), a socket event of the translated tuple names the process",
            Rule::ExactNat => "no socket holds the wire tuple; translated through the conntrack entry of the flow's time (masquerade, published port), a socket with the translated tuple, in the namespace that holds it (a container's)",
            Rule::ListenNat => "as exact-nat, a TCP LISTEN socket on the translated local address and port (a container's server behind a published port)",
            Rule::BoundNat => "as exact-nat, an unconnected UDP socket bound to the translated local address and port (a container's UDP service or client behind NAT)",
            Rule::UacFd => "a UAC collection's socket table row with the flow's tuple, its inode held by the pid's fd listing: high when the flow was alive at the collection instant, else low (one instant says nothing before or after it)",
            Rule::UacListen => "a UAC collection's TCP LISTEN socket on the flow's local port, held by the pid: the listener accepted the inbound connection (medium at the collection instant, else low)",
            Rule::UacUdpBound => "a UAC collection's unconnected UDP socket on the flow's local port, held by the pid (medium at the collection instant, else low)",
            Rule::UacSs => "no fd listing names the socket; ss -anp, netstat -anp or lsof -i output of a UAC collection names the pid for the flow's tuple or listener (medium at the collection instant, else low)",
            Rule::AuditConnect => "an audited connect() by the pid to the flow's remote address and port; the record has no local port, so the flow is the one whose first packet to that address is nearest the call (clock offset applied), one flow per call, and calls to one address keep their order",
            Rule::AuditAccept => "an audited accept()/accept4() by the pid that returned the flow's peer address and port, nearest the flow's first packet (stamped at the call's entry: a blocking accept waits)",
            Rule::AuditBind => "an audited bind() by the pid of the flow's local port, the latest before the flow (low: the record says neither TCP nor UDP, nor when the socket closed)",
        }
    }
}

/// The rule that attributed a flow, or why none did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Method {
    /// Attributed by this rule.
    Rule(Rule),
    /// Attributed by the capture's own process annotations (ptcpdump's
    /// per-packet `PID:` comments), checked against the snapshots.
    CaptureAnnotation,
    /// No owner.
    Unattributed(Reason),
}

impl Method {
    /// Every method, in rule order then reasons.
    pub fn all() -> Vec<Method> {
        let mut v: Vec<Method> = Rule::all().map(Method::Rule).collect();
        v.push(Method::CaptureAnnotation);
        v.extend(Reason::ALL.iter().map(|r| Method::Unattributed(*r)));
        v
    }

    /// The `method` column value.
    pub fn name(self) -> String {
        match self {
            Method::Rule(r) => r.name().into(),
            Method::CaptureAnnotation => "capture-annotation".into(),
            Method::Unattributed(r) => format!("unattributed:{}", r.as_str()),
        }
    }

    /// One-sentence description (also written into summary.json).
    pub fn doc(self) -> &'static str {
        match self {
            Method::Rule(r) => r.doc(),
            Method::CaptureAnnotation => "the capture's own per-packet process annotations (ptcpdump's PID comments) name the owner: high confidence when a snapshot socket of the flow is held by the same process, medium when the snapshots saw no owner",
            Method::Unattributed(Reason::NoSocket) => "no matching socket was seen within --max-gap of the flow",
            Method::Unattributed(Reason::NoOwner) => "a matching socket was seen but with inode 0 (TIME_WAIT, open request, orphan) or no process holding it",
            Method::Unattributed(Reason::OwnerUnreadable) => "a matching socket was seen without a known holder while some process' fd directory was unreadable (permission)",
            Method::Unattributed(Reason::NotTcpUdp) => "not TCP or UDP (ICMP and others): no socket table can own it",
            Method::Unattributed(Reason::OutsideRecording) => "the flow lies entirely outside the snapshots' time range",
            Method::Unattributed(Reason::NotLocal) => "neither endpoint is an address of the host or of a recorded namespace",
            Method::Unattributed(Reason::NotThisHost) => "neither endpoint is an address of the host the evidence was collected on (procflow correlate)",
            Method::Unattributed(Reason::OutsideEvidence) => "not alive at the collection instant, no audit record of its endpoints, no listener on its port (procflow correlate)",
        }
    }

    /// Whether an owner was found.
    pub fn is_attributed(self) -> bool {
        !matches!(self, Method::Unattributed(_))
    }
}

/// A remark on an attribution, worded by the report layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// The socket was held by this many processes around the flow's time.
    Shared(usize),
    /// Events of the flow's endpoints name this many processes during the
    /// flow, which could not be told apart in time.
    EventOwners(usize),
    /// An IPv4-mapped socket matched by a rule other than `exact-v4mapped`.
    V4MappedSocket,
    /// The socket is in a namespace other than the capture's.
    OtherNamespace,
    /// The flow's tuple was translated through a conntrack entry to the
    /// socket's (a `*-nat` rule).
    Nat(NatMatch),
    /// Both ends are local; attributed to the initiator's socket (`true`)
    /// or the responder's.
    BothLocal {
        /// Whether the initiator's.
        initiator: bool,
    },
    /// An earlier rule found a socket with this inode but no owner.
    OwnerlessSocket {
        /// Its inode (0: an exact row without inode, e.g. TIME_WAIT).
        inode: u64,
        /// Why it had no owner.
        reason: Reason,
    },
    /// The bundle holds no socket event: a socket that lived only between
    /// two snapshots could not be seen with its owner.
    NoEvents,
    /// The owner changed program (execve) while it was recorded, last at
    /// this realtime (ns): its record is that of the program it became.
    ExecChanged {
        /// When the new program was first recorded.
        t_ns: i64,
    },
    /// No send or read call names the owner: only who held, opened or
    /// closed the socket (`bundle_has_uses`: the bundle holds per-send
    /// evidence, just none for this flow).
    HolderOnly {
        /// Whether the bundle has any send or receive run.
        bundle_has_uses: bool,
    },
    /// Send and receive calls on the flow's socket name this many
    /// processes, and the flow could not be cut between them.
    UseOwners(usize),
    /// This many processes (the owner included) sent or read on the
    /// socket at the same time as the owner; the row holds only the
    /// owner's bytes.
    Interleaved(usize),
    /// Foreign evidence: the audit record's login uid and session.
    AuditSession {
        /// `auid` (`None`: unset).
        auid: Option<u32>,
        /// `ses` (`None`: unset).
        ses: Option<u32>,
    },
    /// Foreign evidence: another source names another pid for this flow
    /// (the owner is the stronger evidence's).
    OtherEvidence {
        /// The other pid.
        pid: u32,
        /// The other source's method.
        rule: Rule,
    },
    /// This row is part `part` (1-based) of `parts` of a flow whose socket
    /// changed owner during its lifetime.
    SplitPart {
        /// Part number, from 1.
        part: usize,
        /// Number of parts.
        parts: usize,
    },
}

/// A process identity: pid and start time (clock ticks since boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProcKey {
    /// Process id.
    pub pid: u32,
    /// Field 22 of /proc/PID/stat.
    pub start_time: u64,
}

/// The socket a flow was matched to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketMatch {
    /// Index into [`Timeline::sockets`].
    pub index: usize,
    /// Its namespace.
    pub netns: u64,
    /// Its inode (0 when it had none).
    pub inode: u64,
    /// Its state at the end of the matching run.
    pub state: u8,
    /// tcp or udp.
    pub transport: Transport,
    /// ns between the flow's lifetime and the run; 0 when they overlap.
    pub gap_ns: i64,
}

/// The result of attributing one flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribution {
    /// Which endpoint is the host's: `Some(true)` = a (the initiator),
    /// `Some(false)` = b, `None` = neither (the report then puts `a` in the
    /// local columns).
    pub local_is_a: Option<bool>,
    /// Both endpoints are local (loopback or host-to-itself traffic).
    pub both_local: bool,
    /// The rule that matched, or the reason none did.
    pub method: Method,
    /// The socket used (also for `no-owner` and `owner-unreadable`); for an
    /// event rule, the flow's exact socket when one was seen.
    pub socket: Option<SocketMatch>,
    /// The event used by an event rule.
    pub event: Option<EventMatch>,
    /// Primary owner.
    pub owner: Option<ProcKey>,
    /// Every process holding the socket around the flow's time, by start
    /// time, when there is more than one (the owner included).
    pub shared_with: Vec<ProcKey>,
    /// Remarks for the `note` column (worded by the report).
    pub notes: Vec<Note>,
    /// When this row is a part of a flow split at a change of owner: the
    /// id of that flow (as `procflow flows` numbers it).
    pub parent_flow_id: Option<u64>,
    /// For a NAT rule: the translation used (socket tuple, kind, entry).
    /// Boxed: few flows have one, and an attribution is kept per flow.
    pub nat: Option<Box<NatMatch>>,
    /// When send or receive calls named the owner.
    pub uses: Option<UseMatch>,
    /// When to read the owner's identity (program, command line): the
    /// time of its sends or reads in this row (realtime ns); `None`: the
    /// flow's first packet.
    pub ident_ns: Option<i64>,
    /// Both ends local: the process at the other end.
    pub peer: Option<Box<PeerEnd>>,
    /// The namespace whose addresses led to the evidence, when neither a
    /// socket nor the event names one (its process was gone before its
    /// namespace was read).
    pub netns_hint: Option<u64>,
}

/// What the per-send and per-read runs said about an attribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UseMatch {
    /// Processes with runs on the socket during the flow (or the part).
    pub owners: usize,
    /// The row is a part holding exactly the bytes its owner sent or read.
    pub placed: bool,
    /// First send or read call of the owner on the socket (realtime ns).
    pub since_ns: i64,
}

/// The process at the other end of traffic between two local sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerEnd {
    /// The rule that found it, or why none did.
    pub method: Method,
    /// Its owner.
    pub owner: Option<ProcKey>,
    /// Per-send evidence, when it named the owner.
    pub uses: Option<UseMatch>,
    /// When to read the owner's identity (realtime ns).
    pub ident_ns: Option<i64>,
    /// Every process with runs (or holdings) at that end, when several.
    pub shared_with: Vec<ProcKey>,
}

impl PeerEnd {
    /// Confidence of the peer's owner, as for the row's
    /// ([`Attribution::confidence`]).
    pub fn confidence(&self) -> Option<Confidence> {
        let Method::Rule(rule) = self.method else {
            return None;
        };
        Some(match self.uses {
            Some(u) if u.owners <= 1 || u.placed => Confidence::High,
            Some(_) => Confidence::Medium,
            None => rule.confidence(0).min(Confidence::Medium),
        })
    }
}

/// The event a flow was matched to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventMatch {
    /// Index into [`Timeline::events`].
    pub index: usize,
    /// ns between the event and the flow's lifetime; 0 inside it.
    pub gap_ns: i64,
}

impl Attribution {
    /// ns between the evidence used and the flow's lifetime.
    pub fn gap_ns(&self) -> Option<i64> {
        let g = match (self.event, self.socket) {
            (Some(e), _) => e.gap_ns,
            (None, Some(s)) => s.gap_ns,
            _ => return None,
        };
        // Through NAT the mapping must have been seen too.
        Some(self.nat.as_deref().map_or(g, |n| g.max(n.gap_ns)))
    }

    /// How much to trust the owner. Send or receive calls naming the
    /// owner: `high` (`medium` when they name several processes and the
    /// flow could not be cut between them). Any other evidence says who
    /// held or opened the socket, not who sent through it: the rule's
    /// confidence at its gap ([`Rule::confidence`]), at most `medium`.
    /// The capture's own per-packet annotations are per-packet evidence
    /// too. `None` when unattributed.
    pub fn confidence(&self) -> Option<Confidence> {
        if self.method == Method::CaptureAnnotation {
            return Some(if self.socket.is_some() {
                Confidence::High
            } else {
                Confidence::Medium
            });
        }
        let Method::Rule(rule) = self.method else {
            return None;
        };
        if let Some(u) = self.uses {
            return Some(if u.owners <= 1 || u.placed {
                Confidence::High
            } else {
                Confidence::Medium
            });
        }
        Some(rule.confidence(self.gap_ns()?).min(Confidence::Medium))
    }
}

/// Facts about the recording host.
#[derive(Debug, Clone, Default)]
pub struct HostContext {
    /// Namespace the capture was taken in (the recorder's, `host.netns`).
    pub capture_netns: u64,
    /// The host's interface addresses (canonical form).
    pub addresses: HashSet<IpAddr>,
}

impl HostContext {
    /// Whether `ip` is the host's: an interface address, a loopback address,
    /// or the local address of a socket recorded in the capture namespace.
    pub fn is_local(&self, tl: &Timeline, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_loopback()
            || self.addresses.contains(&ip)
            || tl.netns_has_addr(self.capture_netns, ip)
    }
}

/// Attribution options.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Largest distance in time between a flow and a socket sighting.
    pub max_gap_ns: i64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_gap_ns: DEFAULT_MAX_GAP_NS,
        }
    }
}

/// One way to read a flow: which end is local, and where to look.
struct Orientation {
    local_is_a: bool,
    netns: Vec<u64>,
}

/// Which namespaces may hold the socket of local address `ip`: the capture
/// namespace first (when the address is the host's), then any other
/// namespace that has a socket on that address. Loopback addresses exist in
/// every namespace but a capture only sees its own namespace's loopback, so
/// they never lead to another namespace.
fn namespaces_for(tl: &Timeline, ctx: &HostContext, ip: IpAddr, host_local: bool) -> Vec<u64> {
    let mut v = Vec::new();
    if host_local {
        v.push(ctx.capture_netns);
    }
    if !ip.to_canonical().is_loopback() {
        for &ns in tl.netns_list() {
            if ns != ctx.capture_netns && tl.netns_has_addr(ns, ip) {
                v.push(ns);
            }
        }
    }
    v
}

fn orientations(tl: &Timeline, ctx: &HostContext, f: &Flow) -> Vec<Orientation> {
    let a_local = ctx.is_local(tl, f.a_ip);
    let b_local = ctx.is_local(tl, f.b_ip);
    let mut out = Vec::new();
    for (is_a, ip, local) in [(true, f.a_ip, a_local), (false, f.b_ip, b_local)] {
        if local {
            out.push(Orientation {
                local_is_a: is_a,
                netns: namespaces_for(tl, ctx, ip, true),
            });
        }
    }
    if out.is_empty() {
        // Traffic between other namespaces seen from the capture point
        // (bridge, veth): usable only through the namespace that owns the
        // address.
        for (is_a, ip) in [(true, f.a_ip), (false, f.b_ip)] {
            let ns = namespaces_for(tl, ctx, ip, false);
            if !ns.is_empty() {
                out.push(Orientation {
                    local_is_a: is_a,
                    netns: ns,
                });
            }
        }
    }
    out
}

/// Whether socket `s` (in namespace `ns`) is snapshot evidence of kind `ev`
/// for a flow whose local end is `local`.
fn socket_accepts(ev: Evidence, s: &Socket, ns: u64, local: SocketAddr) -> bool {
    if s.key.netns != ns {
        return false;
    }
    let sip = s.key.local.ip();
    let flow_v4 = local.is_ipv4();
    let same_addr = sip.to_canonical() == local.ip().to_canonical();
    // 0.0.0.0 accepts IPv4 only; `::` accepts both (a dual-stack socket,
    // unless IPV6_V6ONLY, which /proc does not show).
    let wildcard_addr = sip.is_unspecified() && (flow_v4 || sip.is_ipv6());
    let listening = || s.runs.iter().any(|r| r.state == STATE_LISTEN);
    match ev {
        Evidence::Tuple { mapped: false } => !is_v4_mapped(sip) && s.key.local.is_ipv4() == flow_v4,
        Evidence::Tuple { mapped: true } => is_v4_mapped(sip),
        Evidence::Listener { wildcard } => {
            s.key.transport == Transport::Tcp
                && if wildcard { wildcard_addr } else { same_addr }
                && listening()
        }
        Evidence::Bound { wildcard } => {
            s.key.transport == Transport::Udp && if wildcard { wildcard_addr } else { same_addr }
        }
        Evidence::Use | Evidence::Event(_) | Evidence::Nat(_) | Evidence::Foreign => false,
    }
}

/// Whether event `e` is of a socket with local end `local` in namespace
/// `ns` (its endpoints already match by port and remote).
fn event_fits(e: &SockEvent, ns: u64, local: SocketAddr) -> bool {
    e.netns.is_none_or(|n| n == ns)
        && (e.local.ip().is_unspecified() || e.local.ip() == local.ip().to_canonical())
}

/// Distance in ns from instant `t` to `[t0, t1]`; 0 inside.
fn point_gap(t: i64, t0: i64, t1: i64) -> i64 {
    if t < t0 {
        t0.saturating_sub(t)
    } else {
        t.saturating_sub(t1).max(0)
    }
}

/// Events this close to a flow's lifetime count as during it (a connect
/// comes just before the SYN is captured, a close just after the FIN).
const EVENT_SLACK_NS: i64 = 10_000_000;

/// The run of `s` nearest to `[t0, t1]`: largest overlap, then smallest
/// gap. A run whose socket cannot have existed at any time of `[t0, t1]`
/// (a snapshot between them showed the tuple without it:
/// [`Timeline::possible_life`]) is no candidate: its socket was created
/// after the flow, or closed before it.
fn nearest_run<'s>(tl: &Timeline, s: &'s Socket, t0: i64, t1: i64) -> Option<&'s Run> {
    s.runs
        .iter()
        .filter(|r| {
            let (birth, death) = tl.possible_life(r);
            t1 >= birth && t0 <= death
        })
        .min_by_key(|r| (r.gap(t0, t1), std::cmp::Reverse(r.overlap(t0, t1))))
}

/// Who owned the socket, as far as the fd listings tell.
enum Ownership {
    Owned(ProcKey, Vec<ProcKey>),
    NoHolder,
    Unreadable,
}

fn ownership(tl: &Timeline, s: &Socket, run: &Run, t0: i64, t1: i64, max_gap: i64) -> Ownership {
    if s.key.inode == 0 {
        return Ownership::NoHolder;
    }
    // A holding counts when it overlaps the socket's matching run or lies
    // within the bound of the flow itself.
    let near = |r: &Run| r.gap(t0, t1) <= max_gap || r.gap(run.start_ns, run.end_ns) == 0;
    let mut found: Vec<(ProcKey, i64, i64)> = Vec::new();
    for h in tl
        .holders
        .get(&s.key.inode)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let runs: Vec<&Run> = h.runs.iter().filter(|r| near(r)).collect();
        if runs.is_empty() {
            continue;
        }
        let overlap = runs.iter().map(|r| r.overlap(t0, t1)).max().unwrap_or(0);
        let gap = runs.iter().map(|r| r.gap(t0, t1)).min().unwrap_or(i64::MAX);
        found.push((
            ProcKey {
                pid: h.pid,
                start_time: h.start_time,
            },
            overlap,
            gap,
        ));
    }
    // Primary: the holder that overlaps the flow most, then the nearest;
    // ties go to the most recently started process: a socket shared through
    // fork or socket activation is typically used by the child (nginx
    // worker, systemd-activated service), not by the parent that made it.
    let primary = found
        .iter()
        .min_by_key(|(k, overlap, gap)| {
            (
                std::cmp::Reverse(*overlap),
                *gap,
                std::cmp::Reverse(k.start_time),
                k.pid,
            )
        })
        .map(|x| x.0);
    if let Some(p) = primary {
        let mut all: Vec<ProcKey> = found.iter().map(|x| x.0).collect();
        all.sort_by_key(|k| (k.start_time, k.pid));
        if all.len() < 2 {
            all.clear();
        }
        return Ownership::Owned(p, all);
    }
    // A process whose fd directory was unreadable may hold it: one in the
    // socket's namespace, or one whose namespace is unknown (0: without
    // privileges /proc/PID/ns/net is as unreadable as the fds).
    let hidden = tl.denied.iter().any(|d| {
        let same_ns = tl
            .processes
            .get(&(d.pid, d.start_time))
            .is_none_or(|p| p.netns == s.key.netns || p.netns == 0);
        same_ns && d.runs.iter().any(&near)
    });
    if hidden {
        Ownership::Unreadable
    } else {
        Ownership::NoHolder
    }
}

/// Where to look: the flow's transport, lifetime and one orientation's
/// endpoints in one namespace.
#[derive(Clone, Copy)]
struct Query {
    transport: Transport,
    t0: i64,
    t1: i64,
    local: SocketAddr,
    remote: SocketAddr,
    ns: u64,
    max_gap: i64,
}

/// What one rule found.
enum Found {
    /// An owner.
    Owned {
        owner: ProcKey,
        shared: Vec<ProcKey>,
        socket: Option<SocketMatch>,
        event: Option<EventMatch>,
        event_owners: usize,
        uses: Option<UseMatch>,
    },
    /// A socket without a known owner.
    Ownerless(SocketMatch, Reason),
}

/// The snapshot socket nearest in time accepted as evidence `ev`.
fn nearest_socket<'t>(
    tl: &'t Timeline,
    ev: Evidence,
    q: &Query,
) -> Option<(usize, &'t Socket, &'t Run)> {
    let cands: &[usize] = match ev {
        Evidence::Tuple { .. } => tl.exact(q.transport, q.local, q.remote),
        _ => tl.bound(q.transport, q.local.port()),
    };
    cands
        .iter()
        .filter_map(|&i| tl.sockets.get(i).map(|s| (i, s)))
        .filter(|(_, s)| socket_accepts(ev, s, q.ns, q.local))
        .filter_map(|(i, s)| nearest_run(tl, s, q.t0, q.t1).map(|r| (i, s, r)))
        .filter(|(_, _, r)| r.gap(q.t0, q.t1) <= q.max_gap)
        .min_by_key(|(i, _, r)| {
            (
                r.gap(q.t0, q.t1),
                std::cmp::Reverse(r.overlap(q.t0, q.t1)),
                *i,
            )
        })
}

fn socket_match(index: usize, s: &Socket, run: &Run, q: &Query) -> SocketMatch {
    SocketMatch {
        index,
        netns: s.key.netns,
        inode: s.key.inode,
        state: run.state,
        transport: q.transport,
        gap_ns: run.gap(q.t0, q.t1),
    }
}

/// Applies one rule.
fn try_rule(tl: &Timeline, rule: Rule, q: &Query) -> Option<Found> {
    match rule.evidence() {
        Evidence::Use => {
            let end = uses::end_use(tl, q.transport, q.local, q.remote, q.t0, q.t1)?;
            let owners = end.owners();
            let (owner, _) = *owners.first()?;
            let mut shared: Vec<ProcKey> = owners.iter().map(|o| o.0).collect();
            shared.sort_by_key(|k| (k.start_time, k.pid));
            if shared.len() < 2 {
                shared.clear();
            }
            let socket = [false, true].into_iter().find_map(|mapped| {
                nearest_socket(tl, Evidence::Tuple { mapped }, q)
                    .map(|(i, s, r)| socket_match(i, s, r, q))
            });
            Some(Found::Owned {
                owner,
                shared,
                socket,
                event: None,
                event_owners: 0,
                uses: Some(UseMatch {
                    owners: owners.len(),
                    placed: false,
                    since_ns: end.first_call(owner).unwrap_or(q.t0),
                }),
            })
        }
        Evidence::Event(kind) => {
            let evs = tl.events_for(q.transport, q.local.port(), q.remote);
            let fits = |i: &usize| tl.events.get(*i).filter(|e| event_fits(e, q.ns, q.local));
            let (index, gap_ns) = evs
                .iter()
                .filter_map(|i| fits(i).filter(|e| e.kind == kind).map(|e| (*i, e)))
                .map(|(i, e)| (i, point_gap(e.t_ns, q.t0, q.t1)))
                .filter(|&(_, g)| g <= q.max_gap)
                .min_by_key(|&(i, g)| (g, i))?;
            let e = tl.events.get(index)?;
            let owner = ProcKey {
                pid: e.pid,
                start_time: e.start_time,
            };
            // Every process with an event of this socket during the flow.
            let mut during: Vec<ProcKey> = evs
                .iter()
                .filter_map(fits)
                .filter(|e| point_gap(e.t_ns, q.t0, q.t1) <= EVENT_SLACK_NS)
                .map(|e| ProcKey {
                    pid: e.pid,
                    start_time: e.start_time,
                })
                .chain(std::iter::once(owner))
                .collect();
            during.sort_by_key(|k| (k.start_time, k.pid));
            during.dedup();
            let event_owners = during.len();
            if during.len() < 2 {
                during.clear();
            }
            // The flow's own socket, when a snapshot saw it: its inode and
            // state are evidence too.
            let socket = [false, true].into_iter().find_map(|mapped| {
                nearest_socket(tl, Evidence::Tuple { mapped }, q)
                    .map(|(i, s, r)| socket_match(i, s, r, q))
            });
            Some(Found::Owned {
                owner,
                shared: during,
                socket,
                event: Some(EventMatch { index, gap_ns }),
                event_owners,
                uses: None,
            })
        }
        ev => {
            let (index, s, run) = nearest_socket(tl, ev, q)?;
            let m = socket_match(index, s, run, q);
            Some(match ownership(tl, s, run, q.t0, q.t1, q.max_gap) {
                Ownership::Owned(owner, shared) => Found::Owned {
                    owner,
                    shared,
                    socket: Some(m),
                    event: None,
                    event_owners: 0,
                    uses: None,
                },
                Ownership::NoHolder => Found::Ownerless(m, Reason::NoOwner),
                Ownership::Unreadable => Found::Ownerless(m, Reason::OwnerUnreadable),
            })
        }
    }
}

/// Whether a rule can own a flow of this transport.
fn rule_applies(rule: Rule, transport: Transport) -> bool {
    rule_evidence_applies(rule.evidence(), transport)
}

/// Whether evidence of this kind can own a flow of this transport.
fn rule_evidence_applies(ev: Evidence, transport: Transport) -> bool {
    match ev {
        Evidence::Listener { .. } | Evidence::Nat(NatVia::Listener) => transport == Transport::Tcp,
        Evidence::Bound { .. } | Evidence::Nat(NatVia::Bound) => transport == Transport::Udp,
        Evidence::Use | Evidence::Event(_) | Evidence::Tuple { .. } | Evidence::Nat(_) => true,
        Evidence::Foreign => false,
    }
}

/// Attributes one flow. When both ends are local, the process at the
/// other end is attributed too ([`Attribution::peer`]).
pub fn attribute(tl: &Timeline, ctx: &HostContext, opts: &Options, f: &Flow) -> Attribution {
    let mut out = attribute_end(tl, ctx, opts, f, None);
    if let (true, Some(local_is_a)) = (out.both_local, out.local_is_a) {
        if out.method.is_attributed() {
            let p = attribute_end(tl, ctx, opts, f, Some(!local_is_a));
            out.peer = Some(Box::new(PeerEnd {
                method: p.method,
                owner: p.owner,
                uses: p.uses,
                ident_ns: p.ident_ns,
                shared_with: p.shared_with,
            }));
        }
    }
    out
}

/// Attributes one end of a flow: `only` = `Some(true)` the `a` end,
/// `Some(false)` the `b` end, `None` whichever the rules find first.
pub(crate) fn attribute_end(
    tl: &Timeline,
    ctx: &HostContext,
    opts: &Options,
    f: &Flow,
    only: Option<bool>,
) -> Attribution {
    let (t0, t1) = (f.first_seen_ns, f.last_seen_ns.max(f.first_seen_ns));
    let mut orients = orientations(tl, ctx, f);
    let both = orients.len() == 2
        && orients
            .iter()
            .all(|o| o.netns.first() == Some(&ctx.capture_netns));
    if let Some(a) = only {
        orients.retain(|o| o.local_is_a == a);
    }
    let mut out = Attribution {
        local_is_a: orients.first().map(|o| o.local_is_a),
        both_local: both,
        method: Method::Unattributed(Reason::NoSocket),
        socket: None,
        event: None,
        owner: None,
        shared_with: Vec::new(),
        notes: Vec::new(),
        parent_flow_id: None,
        nat: None,
        uses: None,
        ident_ns: None,
        peer: None,
        netns_hint: None,
    };
    let transport = match f.proto {
        ipproto::TCP => Transport::Tcp,
        ipproto::UDP => Transport::Udp,
        _ => {
            out.method = Method::Unattributed(Reason::NotTcpUdp);
            return out;
        }
    };
    if orients.is_empty() {
        out.method = Method::Unattributed(Reason::NotLocal);
        return out;
    }
    let (Some(a_port), Some(b_port)) = (f.a_port, f.b_port) else {
        return out;
    };
    let a = SocketAddr::new(f.a_ip, a_port);
    let b = SocketAddr::new(f.b_ip, b_port);
    // First socket found without an owner, kept in case no rule finds one.
    let mut ownerless: Option<(SocketMatch, Reason, bool)> = None;
    for tier in RULES {
        for o in &orients {
            let (local, remote) = if o.local_is_a { (a, b) } else { (b, a) };
            for &rule in tier.iter().filter(|r| rule_applies(**r, transport)) {
                // A NAT rule finds the namespace of the translated tuple
                // itself (`nat::try_nat` does not read `q.ns`): once per
                // orientation, not again for each of its namespaces.
                let nat_rule = matches!(rule.evidence(), Evidence::Nat(_));
                let nss = if nat_rule {
                    o.netns.get(..1).unwrap_or_default()
                } else {
                    &o.netns[..]
                };
                for &ns in nss {
                    let q = Query {
                        transport,
                        t0,
                        t1,
                        local,
                        remote,
                        ns,
                        max_gap: opts.max_gap_ns,
                    };
                    let (found, nat) = match rule.evidence() {
                        Evidence::Nat(_) => match nat::try_nat(tl, ctx, rule, &q) {
                            Some((f, m)) => (Some(f), Some(m)),
                            None => (None, None),
                        },
                        _ => (try_rule(tl, rule, &q), None),
                    };
                    match found {
                        None => {}
                        Some(Found::Owned {
                            owner,
                            shared,
                            socket,
                            event,
                            event_owners,
                            uses,
                        }) => {
                            out.method = Method::Rule(rule);
                            out.uses = uses;
                            out.ident_ns = uses.map(|u| u.since_ns);
                            out.nat = nat.map(Box::new);
                            if let Some(m) = nat {
                                out.notes.push(Note::Nat(m));
                            }
                            out.local_is_a = Some(o.local_is_a);
                            out.socket = socket;
                            out.event = event;
                            out.owner = Some(owner);
                            if let Some(u) = uses.filter(|u| u.owners >= 2) {
                                out.notes.push(Note::UseOwners(u.owners));
                            } else if event_owners >= 2 {
                                out.notes.push(Note::EventOwners(event_owners));
                            } else if !shared.is_empty() {
                                out.notes.push(Note::Shared(shared.len()));
                            }
                            out.shared_with = shared;
                            let mapped = socket.is_some_and(|m| {
                                tl.sockets
                                    .get(m.index)
                                    .is_some_and(|s| is_v4_mapped(s.key.local.ip()))
                            });
                            if mapped && rule != Rule::ExactV4Mapped {
                                out.notes.push(Note::V4MappedSocket);
                            }
                            // Only a namespace the addresses prove: the one
                            // namespace using the translated address, or one
                            // other than the capture's (tried first by default).
                            // A process proven to send or read on the socket
                            // made it in its own namespace: that one, when the
                            // addresses allow it (overlapping container
                            // networks put an address in several).
                            let owner_ns = uses
                                .and_then(|u| {
                                    tl.identity_at(owner.pid, owner.start_time, u.since_ns)
                                })
                                .map(|p| p.netns)
                                .filter(|&n| n != 0);
                            let hint = match nat {
                                Some(m) => {
                                    let v: Vec<u64> = tl
                                        .netns_list()
                                        .iter()
                                        .copied()
                                        .filter(|&n| tl.netns_has_addr(n, m.local.ip()))
                                        .collect();
                                    match (owner_ns.filter(|n| v.contains(n)), v.as_slice()) {
                                        (Some(n), _) | (None, &[n]) => Some(n),
                                        _ => None,
                                    }
                                }
                                None => {
                                    let n = owner_ns.filter(|n| o.netns.contains(n)).unwrap_or(ns);
                                    Some(n).filter(|&n| n != ctx.capture_netns)
                                }
                            };
                            out.netns_hint = hint.filter(|&n| n != nat::UNKNOWN_NETNS);
                            let used_ns = socket.map(|m| m.netns).or(out.netns_hint);
                            if used_ns.unwrap_or(ns) != ctx.capture_netns {
                                out.notes.push(Note::OtherNamespace);
                            }
                            if out.both_local {
                                out.notes.push(Note::BothLocal {
                                    initiator: o.local_is_a,
                                });
                            }
                            if let Some((om, r, _)) = &ownerless {
                                out.notes.push(Note::OwnerlessSocket {
                                    inode: om.inode,
                                    reason: *r,
                                });
                            }
                            if uses.is_none() {
                                out.notes.push(Note::HolderOnly {
                                    bundle_has_uses: !tl.uses.is_empty(),
                                });
                            }
                            if let Some(c) = tl
                                .exec_changes
                                .get(&(owner.pid, owner.start_time))
                                .and_then(|v| v.last())
                                .filter(|_| {
                                    !tl.identities.contains_key(&(owner.pid, owner.start_time))
                                })
                            {
                                out.notes.push(Note::ExecChanged { t_ns: c.t_ns });
                            }
                            return out;
                        }
                        Some(Found::Ownerless(m, reason)) => {
                            // Keep the first ownerless socket, except that a
                            // hidden owner beats an exact row without inode.
                            let replace = match &ownerless {
                                None => true,
                                Some(x) => {
                                    reason == Reason::OwnerUnreadable
                                        && x.1 == Reason::NoOwner
                                        && x.0.inode == 0
                                }
                            };
                            if replace {
                                ownerless = Some((m, reason, o.local_is_a));
                            }
                        }
                    }
                }
            }
        }
    }
    if tl.events.is_empty() {
        out.notes.push(Note::NoEvents);
    }
    if let Some((m, reason, local_is_a)) = ownerless {
        out.method = Method::Unattributed(reason);
        out.socket = Some(m);
        out.local_is_a = Some(local_is_a);
        return out;
    }
    if let Some((s0, s1)) = tl.time_range() {
        if t1 < s0 || t0 > s1 {
            out.method = Method::Unattributed(Reason::OutsideRecording);
        }
    }
    out
}

/// An owner of a flow's socket and the first and last instant it was seen
/// owning it during the flow; or (`owner: None`) a stretch of the flow
/// when no socket seen could have carried it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnerSpan {
    /// The owner; `None` for a stretch outside every matching socket's
    /// possible life ([`Timeline::possible_life`]).
    pub owner: Option<ProcKey>,
    /// First evidence, realtime ns.
    pub first_ns: i64,
    /// Last evidence, realtime ns.
    pub last_ns: i64,
}

/// The owners of flow `f`'s socket during its lifetime, one after the
/// other: from the events of its endpoints when there are any, else from
/// the snapshot sockets the attributing rule (and the exact tuple) accept,
/// each run seen during the flow with its holder at that time. With
/// snapshot evidence, the stretches of the flow where none of those sockets
/// can have existed (created later, closed earlier) are spans without
/// owner. Empty when there are fewer than two spans or when two overlap in
/// time (they cannot be told apart by time: the flow stays whole).
pub fn owner_spans(tl: &Timeline, ctx: &HostContext, f: &Flow, a: &Attribution) -> Vec<OwnerSpan> {
    let (Some(local_is_a), Some(a_port), Some(b_port)) = (a.local_is_a, f.a_port, f.b_port) else {
        return Vec::new();
    };
    let transport = match f.proto {
        ipproto::TCP => Transport::Tcp,
        ipproto::UDP => Transport::Udp,
        _ => return Vec::new(),
    };
    let (t0, t1) = (f.first_seen_ns, f.last_seen_ns.max(f.first_seen_ns));
    let fa = SocketAddr::new(f.a_ip, a_port);
    let fb = SocketAddr::new(f.b_ip, b_port);
    let (local, remote) = if local_is_a { (fa, fb) } else { (fb, fa) };
    let event_ns = a
        .event
        .and_then(|e| tl.events.get(e.index))
        .and_then(|e| e.netns);
    let ns = a
        .socket
        .map(|s| s.netns)
        .or(event_ns)
        .unwrap_or(ctx.capture_netns);
    // (owner, first, last, birth, death)
    let mut seen: Vec<(ProcKey, i64, i64, i64, i64)> = tl
        .events_for(transport, local.port(), remote)
        .iter()
        .filter_map(|&i| tl.events.get(i))
        .filter(|e| event_fits(e, ns, local) && point_gap(e.t_ns, t0, t1) <= EVENT_SLACK_NS)
        .map(|e| {
            let k = ProcKey {
                pid: e.pid,
                start_time: e.start_time,
            };
            (k, e.t_ns, e.t_ns, i64::MIN, i64::MAX)
        })
        .collect();
    let from_snapshots = seen.is_empty();
    if from_snapshots {
        let mut kinds = vec![
            Evidence::Tuple { mapped: false },
            Evidence::Tuple { mapped: true },
        ];
        if let Method::Rule(r) = a.method {
            if !kinds.contains(&r.evidence()) && !r.is_event() {
                kinds.push(r.evidence());
            }
        }
        for ev in kinds {
            if !rule_evidence_applies(ev, transport) {
                continue;
            }
            let cands: &[usize] = match ev {
                Evidence::Tuple { .. } => tl.exact(transport, local, remote),
                _ => tl.bound(transport, local.port()),
            };
            for s in cands.iter().filter_map(|&i| tl.sockets.get(i)) {
                if !socket_accepts(ev, s, ns, local) {
                    continue;
                }
                for run in s.runs.iter().filter(|r| r.gap(t0, t1) == 0) {
                    if let Ownership::Owned(p, _) =
                        ownership(tl, s, run, run.start_ns, run.end_ns, 0)
                    {
                        let (birth, death) = tl.possible_life(run);
                        seen.push((p, run.start_ns.max(t0), run.end_ns.min(t1), birth, death));
                    }
                }
            }
        }
    }
    // Evidence in time order; consecutive evidence of one owner is one
    // span. An owner that comes back after another (A, B, A) has a span
    // for each stretch: merged per owner, A's span would cover B's and
    // the flow would stay one row of two owners.
    seen.sort_by_key(|&(k, x, y, _, _)| (x, y, k));
    let mut owners: Vec<(OwnerSpan, i64, i64)> = Vec::new();
    for (k, x, y, birth, death) in seen {
        match owners.last_mut() {
            Some((s, b, d)) if s.owner == Some(k) => {
                s.last_ns = s.last_ns.max(y);
                *b = (*b).min(birth);
                *d = (*d).max(death);
            }
            _ => owners.push((
                OwnerSpan {
                    owner: Some(k),
                    first_ns: x,
                    last_ns: y,
                },
                birth,
                death,
            )),
        }
    }
    let mut spans: Vec<OwnerSpan> = Vec::new();
    if from_snapshots {
        // Stretches no socket seen could have carried: before the first
        // owner's socket existed, between two owners' sockets, after the
        // last one was gone.
        let gap = |first_ns: i64, last_ns: i64| OwnerSpan {
            owner: None,
            first_ns,
            last_ns,
        };
        let mut prev_death: Option<i64> = None;
        for (span, birth, death) in &owners {
            match prev_death {
                None if t0 < *birth => spans.push(gap(t0, *birth)),
                Some(d) if d < *birth => spans.push(gap(d, *birth)),
                _ => {}
            }
            spans.push(*span);
            prev_death = Some(prev_death.map_or(*death, |d| d.max(*death)));
        }
        if let Some(d) = prev_death.filter(|&d| d < t1) {
            spans.push(gap(d, t1));
        }
    } else {
        spans = owners.into_iter().map(|(s, _, _)| s).collect();
    }
    if spans.len() < 2 || spans.iter().all(|s| s.owner.is_none()) {
        return Vec::new();
    }
    let disjoint = spans.windows(2).all(|w| match w {
        [x, y] => x.last_ns < y.first_ns,
        _ => true,
    });
    if disjoint {
        spans
    } else {
        Vec::new()
    }
}

/// Attributes every flow, in parallel; the result is in flow order.
pub fn attribute_all(
    tl: &Timeline,
    ctx: &HostContext,
    opts: &Options,
    flows: &[Flow],
) -> Vec<Attribution> {
    use rayon::prelude::*;
    flows
        .par_iter()
        .map(|f| attribute(tl, ctx, opts, f))
        .collect()
}

/// Family of an address as the flow type names it.
pub fn family_of(ip: IpAddr) -> Family {
    if ip.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::IcmpKey;
    use crate::snapshot::timeline::tests::{build, clock, row4, table, Snap};
    use procflow_format::layout::{ProcessRecord, SnapshotKind, TableStored};

    const NS: u64 = 4026531840;
    const NS2: u64 = 4026532500;
    const K: SnapshotKind = SnapshotKind::Keyframe;
    const FULL: TableStored = TableStored::Full;

    fn ctx() -> HostContext {
        HostContext {
            capture_netns: NS,
            addresses: ["10.0.0.1".parse().unwrap()].into_iter().collect(),
        }
    }

    fn flow(proto: u8, a: &str, b: &str, t0_ms: i64, t1_ms: i64) -> Flow {
        let a: SocketAddr = a.parse().unwrap();
        let b: SocketAddr = b.parse().unwrap();
        Flow {
            id: 1,
            proto,
            family: family_of(a.ip()),
            a_ip: a.ip(),
            a_port: Some(a.port()),
            b_ip: b.ip(),
            b_port: Some(b.port()),
            icmp: None,
            first_seen_ns: clock(t0_ms).realtime_ns,
            last_seen_ns: clock(t1_ms).realtime_ns,
            packets_ab: 1,
            packets_ba: 1,
            bytes_ab: 100,
            bytes_ba: 100,
            ip_bytes_ab: 86,
            ip_bytes_ba: 86,
            tcp_flags_ab: 0,
            tcp_flags_ba: 0,
        }
    }

    /// A TCP flow between two `ip:port` strings from `t0` to `t1` ms (shared with the NAT tests).
    pub(super) fn tcp(a: &str, b: &str, t0: i64, t1: i64) -> Flow {
        flow(ipproto::TCP, a, b, t0, t1)
    }

    /// Two keyframes at 0 s and 1 s with the same tables and fds.
    fn two(tables: &[(u64, &'static str, Vec<String>)], fds: &[&str]) -> Timeline {
        let mk = |seq, ms| {
            let mut s = Snap::new(seq, ms, K).fds(fds);
            for (ns, t, rows) in tables {
                s = s.table(*ns, t, FULL, table(rows));
            }
            s
        };
        let (tl, d) = build(&[mk(1, 0), mk(2, 1000)]);
        assert_eq!(d.bad_lines, 0, "{d:?}");
        tl
    }

    fn run(tl: &Timeline, f: &Flow) -> Attribution {
        attribute(tl, &ctx(), &Options::default(), f)
    }

    fn pid(a: &Attribution) -> Option<u32> {
        a.owner.map(|o| o.pid)
    }

    #[test]
    fn exact_and_time_bound() {
        let tl = two(
            &[(
                NS,
                "tcp",
                vec![row4("10.0.0.1:40000", "93.184.216.34:443", 1, 100)],
            )],
            &["10 500 4026531840 3,100"],
        );
        let a = run(&tl, &tcp("10.0.0.1:40000", "93.184.216.34:443", 200, 800));
        assert_eq!(a.method, Method::Rule(Rule::Exact));
        assert_eq!(pid(&a), Some(10));
        assert_eq!(a.local_is_a, Some(true));
        assert_eq!(a.socket.unwrap().gap_ns, 0);
        assert_eq!(a.socket.unwrap().inode, 100);
        // Same tuple seen from the other side: the server's reply flow.
        let a = run(&tl, &tcp("93.184.216.34:443", "10.0.0.1:40000", 200, 800));
        assert_eq!(
            (a.method, a.local_is_a),
            (Method::Rule(Rule::Exact), Some(false))
        );
        // 5 s after the last sighting: still within the bound.
        let a = run(&tl, &tcp("10.0.0.1:40000", "93.184.216.34:443", 6020, 7000));
        assert_eq!(a.method, Method::Rule(Rule::Exact));
        assert_eq!(a.socket.unwrap().gap_ns, 5_000_000_000);
        // 40 s after: outside the bound, and outside the recording.
        let a = run(
            &tl,
            &tcp("10.0.0.1:40000", "93.184.216.34:443", 41020, 42000),
        );
        assert_eq!(a.method, Method::Unattributed(Reason::OutsideRecording));
        let tight = Options {
            max_gap_ns: 1_000_000_000,
        };
        let a = attribute(
            &tl,
            &ctx(),
            &tight,
            &tcp("10.0.0.1:40000", "93.184.216.34:443", 6020, 7000),
        );
        assert_eq!(a.method, Method::Unattributed(Reason::OutsideRecording));
    }

    #[test]
    fn exact_v4mapped() {
        let tl = two(
            &[(
                NS,
                "tcp6",
                vec![row4(
                    "[::ffff:10.0.0.1]:8080",
                    "[::ffff:10.0.0.9]:5000",
                    1,
                    7,
                )],
            )],
            &["20 900 4026531840 7"],
        );
        let a = run(&tl, &tcp("10.0.0.9:5000", "10.0.0.1:8080", 0, 500));
        assert_eq!(a.method, Method::Rule(Rule::ExactV4Mapped));
        assert_eq!(pid(&a), Some(20));
        assert_eq!(a.local_is_a, Some(false));
    }

    #[test]
    fn listen_specific_mapped_and_wildcard() {
        let tl = two(
            &[
                (
                    NS,
                    "tcp",
                    vec![
                        row4("10.0.0.1:8080", "0.0.0.0:0", 0x0A, 30),
                        row4("0.0.0.0:22", "0.0.0.0:0", 0x0A, 31),
                    ],
                ),
                (
                    NS,
                    "tcp6",
                    vec![
                        row4("[::ffff:10.0.0.1]:9090", "[::]:0", 0x0A, 32),
                        row4("[::]:443", "[::]:0", 0x0A, 33),
                    ],
                ),
            ],
            &[
                "30 1 4026531840 30",
                "31 1 4026531840 31",
                "32 1 4026531840 32",
                "33 1 4026531840 33",
            ],
        );
        let a = run(&tl, &tcp("10.0.0.9:5555", "10.0.0.1:8080", 0, 500));
        assert_eq!(
            (a.method, pid(&a), a.local_is_a),
            (Method::Rule(Rule::Listen), Some(30), Some(false))
        );
        let a = run(&tl, &tcp("10.0.0.9:5555", "10.0.0.1:22", 0, 500));
        assert_eq!(
            (a.method, pid(&a)),
            (Method::Rule(Rule::ListenWildcard), Some(31))
        );
        let a = run(&tl, &tcp("10.0.0.9:5555", "10.0.0.1:9090", 0, 500));
        assert_eq!((a.method, pid(&a)), (Method::Rule(Rule::Listen), Some(32)));
        assert!(a.notes.contains(&Note::V4MappedSocket));
        // `::` accepts IPv4 too (dual stack).
        let a = run(&tl, &tcp("10.0.0.9:5555", "10.0.0.1:443", 0, 500));
        assert_eq!(
            (a.method, pid(&a)),
            (Method::Rule(Rule::ListenWildcard), Some(33))
        );
        // 0.0.0.0 does not accept IPv6.
        let v6 = Snap::new(1, 0, K)
            .table(
                NS,
                "tcp",
                FULL,
                table(&[row4("0.0.0.0:22", "0.0.0.0:0", 0x0A, 31)]),
            )
            .fds(&["31 1 4026531840 31"]);
        let (tl6, _) = build(&[v6]);
        let c = HostContext {
            capture_netns: NS,
            addresses: ["fd00::1".parse().unwrap()].into_iter().collect(),
        };
        let a = attribute(
            &tl6,
            &c,
            &Options::default(),
            &tcp("[fd00::9]:5555", "[fd00::1]:22", 0, 10),
        );
        assert_eq!(a.method, Method::Unattributed(Reason::NoSocket));
        // A LISTEN socket does not own UDP.
        let a = run(
            &tl,
            &flow(ipproto::UDP, "10.0.0.9:5555", "10.0.0.1:8080", 0, 500),
        );
        assert_eq!(a.method, Method::Unattributed(Reason::NoSocket));
    }

    #[test]
    fn udp_bound_specific_and_wildcard() {
        let tl = two(
            &[(
                NS,
                "udp",
                vec![
                    row4("10.0.0.1:53", "0.0.0.0:0", 0x07, 40),
                    row4("0.0.0.0:5353", "0.0.0.0:0", 0x07, 41),
                    row4("10.0.0.1:41000", "9.9.9.9:53", 0x01, 42),
                ],
            )],
            &[
                "40 1 4026531840 40",
                "41 2 4026531840 41",
                "42 3 4026531840 42",
            ],
        );
        let a = run(
            &tl,
            &flow(ipproto::UDP, "10.0.0.9:3333", "10.0.0.1:53", 0, 500),
        );
        assert_eq!(
            (a.method, pid(&a)),
            (Method::Rule(Rule::UdpBound), Some(40))
        );
        let a = run(
            &tl,
            &flow(ipproto::UDP, "224.0.0.251:5353", "10.0.0.1:5353", 0, 500),
        );
        assert_eq!(
            (a.method, pid(&a)),
            (Method::Rule(Rule::UdpBoundWildcard), Some(41))
        );
        // A connected UDP socket is an exact match.
        let a = run(
            &tl,
            &flow(ipproto::UDP, "10.0.0.1:41000", "9.9.9.9:53", 0, 500),
        );
        assert_eq!((a.method, pid(&a)), (Method::Rule(Rule::Exact), Some(42)));
    }

    #[test]
    fn every_unattribution_reason() {
        let tl = two(
            &[(
                NS,
                "tcp",
                vec![
                    row4("10.0.0.1:40000", "10.0.0.2:80", 0x06, 0),
                    row4("10.0.0.1:40001", "10.0.0.2:80", 0x01, 555),
                    row4("10.0.0.1:40002", "10.0.0.2:80", 0x01, 556),
                ],
            )],
            &["!300 77 EACCES"],
        );
        // TIME_WAIT row: inode 0.
        let a = run(&tl, &tcp("10.0.0.1:40000", "10.0.0.2:80", 0, 500));
        assert_eq!(a.method, Method::Unattributed(Reason::NoOwner));
        assert_eq!(a.socket.unwrap().inode, 0);
        // Holder hidden by EACCES.
        let a = run(&tl, &tcp("10.0.0.1:40001", "10.0.0.2:80", 0, 500));
        assert_eq!(a.method, Method::Unattributed(Reason::OwnerUnreadable));
        let a = run(&tl, &tcp("10.0.0.1:40009", "10.0.0.2:80", 0, 500));
        assert_eq!(a.method, Method::Unattributed(Reason::NoSocket));
        let mut icmp = flow(ipproto::ICMP, "10.0.0.1:0", "10.0.0.2:0", 0, 500);
        icmp.a_port = None;
        icmp.b_port = None;
        icmp.icmp = Some(IcmpKey {
            icmp_type: 8,
            code: 0,
            id: 1,
        });
        assert_eq!(
            run(&tl, &icmp).method,
            Method::Unattributed(Reason::NotTcpUdp)
        );
        assert_eq!(run(&tl, &icmp).local_is_a, Some(true));
        let a = run(
            &tl,
            &tcp("10.0.0.1:40001", "10.0.0.2:80", -3_600_000, -3_500_000),
        );
        assert_eq!(a.method, Method::Unattributed(Reason::OutsideRecording));
        let a = run(&tl, &tcp("8.8.8.8:1000", "1.1.1.1:80", 0, 500));
        assert_eq!(
            (a.method, a.local_is_a),
            (Method::Unattributed(Reason::NotLocal), None)
        );
        // Without the denied pid, the same socket has no owner.
        let tl2 = two(
            &[(
                NS,
                "tcp",
                vec![row4("10.0.0.1:40001", "10.0.0.2:80", 1, 555)],
            )],
            &[],
        );
        let a = run(&tl2, &tcp("10.0.0.1:40001", "10.0.0.2:80", 0, 500));
        assert_eq!(a.method, Method::Unattributed(Reason::NoOwner));
    }

    #[test]
    fn port_reuse_by_two_pids_gives_two_owners() {
        let r1 = row4("10.0.0.1:40000", "10.0.0.2:80", 1, 1001);
        let r2 = row4("10.0.0.1:40000", "10.0.0.2:80", 1, 1002);
        let snaps = vec![
            Snap::new(1, 0, K)
                .table(NS, "tcp", FULL, table(std::slice::from_ref(&r1)))
                .fds(&["10 100 4026531840 1001"]),
            Snap::new(2, 1000, K)
                .table(NS, "tcp", FULL, table(&[r1]))
                .fds(&["10 100 4026531840 1001"]),
            Snap::new(3, 40000, K)
                .table(NS, "tcp", FULL, table(std::slice::from_ref(&r2)))
                .fds(&["11 4000 4026531840 1002"]),
            Snap::new(4, 41000, K)
                .table(NS, "tcp", FULL, table(&[r2]))
                .fds(&["11 4000 4026531840 1002"]),
        ];
        let (tl, _) = build(&snaps);
        let a = run(&tl, &tcp("10.0.0.1:40000", "10.0.0.2:80", 100, 900));
        assert_eq!((pid(&a), a.socket.unwrap().inode), (Some(10), 1001));
        let b = run(&tl, &tcp("10.0.0.1:40000", "10.0.0.2:80", 40100, 40900));
        assert_eq!((pid(&b), b.socket.unwrap().inode), (Some(11), 1002));
        // Between the two, nearest in time wins: 3 s after the first one.
        let c = run(&tl, &tcp("10.0.0.1:40000", "10.0.0.2:80", 4000, 4020));
        assert_eq!(pid(&c), Some(10));
        assert_eq!(c.socket.unwrap().gap_ns, 2_980_000_000);
    }

    #[test]
    fn shared_socket_names_all_holders_and_the_youngest_as_owner() {
        let tl = two(
            &[(NS, "tcp", vec![row4("0.0.0.0:22", "0.0.0.0:0", 0x0A, 1337)])],
            &["1 5 4026531840 1337", "1337 900 4026531840 1337"],
        );
        let a = run(&tl, &tcp("10.0.0.9:5555", "10.0.0.1:22", 0, 500));
        assert_eq!(pid(&a), Some(1337));
        assert!(a.notes.contains(&Note::Shared(2)));
        assert_eq!(
            a.shared_with,
            vec![
                ProcKey {
                    pid: 1,
                    start_time: 5
                },
                ProcKey {
                    pid: 1337,
                    start_time: 900
                }
            ]
        );
    }

    #[test]
    fn capture_namespace_is_preferred_over_the_mirror_image() {
        let tl = two(
            &[
                (
                    NS,
                    "tcp",
                    vec![row4("10.0.0.1:40000", "10.0.0.2:80", 1, 50)],
                ),
                (
                    NS2,
                    "tcp",
                    vec![
                        row4("10.0.0.2:80", "10.0.0.1:40000", 1, 60),
                        row4("10.0.0.2:80", "0.0.0.0:0", 0x0A, 61),
                        row4("10.0.0.2:80", "10.0.0.3:40000", 1, 62),
                    ],
                ),
            ],
            &["10 1 4026531840 50", "20 2 4026532500 60,61,62"],
        );
        let a = run(&tl, &tcp("10.0.0.1:40000", "10.0.0.2:80", 0, 500));
        assert_eq!(
            (pid(&a), a.socket.unwrap().netns, a.local_is_a),
            (Some(10), NS, Some(true))
        );
        // Our side's socket unseen: the peer namespace's listener must not
        // be taken for ours.
        let a = run(&tl, &tcp("10.0.0.1:40001", "10.0.0.2:80", 0, 500));
        assert_eq!(a.method, Method::Unattributed(Reason::NoSocket));
        // Traffic between two other addresses, one of them the peer
        // namespace's: attributed there, and said so.
        let a = run(&tl, &tcp("10.0.0.3:40000", "10.0.0.2:80", 0, 500));
        assert_eq!(
            (a.method, pid(&a), a.socket.unwrap().netns),
            (Method::Rule(Rule::Exact), Some(20), NS2)
        );
        assert_eq!(a.local_is_a, Some(false));
        assert!(a.notes.contains(&Note::OtherNamespace));
    }

    #[test]
    fn loopback_prefers_the_initiator_socket() {
        let tl = two(
            &[(
                NS,
                "tcp",
                vec![
                    row4("127.0.0.1:50000", "127.0.0.1:8000", 1, 70),
                    row4("127.0.0.1:8000", "127.0.0.1:50000", 1, 71),
                    row4("127.0.0.1:8000", "0.0.0.0:0", 0x0A, 72),
                ],
            )],
            &["10 1 4026531840 70", "20 2 4026531840 71,72"],
        );
        let a = run(&tl, &tcp("127.0.0.1:50000", "127.0.0.1:8000", 0, 500));
        assert_eq!(
            (a.method, pid(&a), a.local_is_a, a.both_local),
            (Method::Rule(Rule::Exact), Some(10), Some(true), true)
        );
        assert!(a.notes.contains(&Note::BothLocal { initiator: true }));
        // Unconnected UDP on loopback: the sender's wildcard-bound socket
        // is preferred over the receiver's specific one.
        let tlu = two(
            &[(
                NS,
                "udp",
                vec![
                    row4("0.0.0.0:32790", "0.0.0.0:0", 0x07, 80),
                    row4("127.0.0.1:19999", "0.0.0.0:0", 0x07, 81),
                ],
            )],
            &["10 1 4026531840 80", "20 2 4026531840 81"],
        );
        let a = run(
            &tlu,
            &flow(ipproto::UDP, "127.0.0.1:32790", "127.0.0.1:19999", 0, 500),
        );
        assert_eq!(
            (a.method, pid(&a), a.local_is_a),
            (Method::Rule(Rule::UdpBoundWildcard), Some(10), Some(true))
        );
        // The client gone unseen: the server's accepted socket owns it.
        let a = run(&tl, &tcp("127.0.0.1:50001", "127.0.0.1:8000", 0, 500));
        assert_eq!(
            (a.method, pid(&a), a.local_is_a),
            (Method::Rule(Rule::Listen), Some(20), Some(false))
        );
    }

    /// A connection seen only as a TIME_WAIT row (inode 0) between two
    /// snapshots: without events it has no owner, and says why; with the
    /// connect event it is the connecting process', with high confidence.
    #[test]
    fn connect_event_owns_a_connection_seen_only_in_time_wait() {
        use crate::snapshot::timeline::tests::ev;
        let tw = row4("10.0.0.1:40000", "10.0.0.2:80", 0x06, 0);
        let mk = |events: bool| {
            let s1 = Snap::new(1, 0, K)
                .table(NS, "tcp", FULL, table(&[]))
                .fds(&["10 500 4026531840 3"]);
            let mut s2 = Snap::new(2, 1000, K)
                .table(NS, "tcp", FULL, table(std::slice::from_ref(&tw)))
                .fds(&["10 500 4026531840 3"]);
            if events {
                s2 = s2.events(&[
                    ev(
                        "connect",
                        300,
                        10,
                        Some(500),
                        "10.0.0.1:40000",
                        "10.0.0.2:80",
                    ),
                    ev("close", 420, 10, Some(500), "10.0.0.1:40000", "10.0.0.2:80"),
                ]);
            }
            build(&[s1, s2]).0
        };
        let f = tcp("10.0.0.1:40000", "10.0.0.2:80", 300, 400);
        let a = run(&mk(false), &f);
        assert_eq!(a.method, Method::Unattributed(Reason::NoOwner));
        assert!(a.notes.contains(&Note::NoEvents));
        let tl = mk(true);
        let a = run(&tl, &f);
        assert_eq!(a.method, Method::Rule(Rule::EventConnect));
        assert_eq!(pid(&a), Some(10));
        assert_eq!(a.confidence(), Some(Confidence::Medium));
        // The TIME_WAIT row is still shown as the flow's socket.
        assert_eq!(a.socket.map(|s| s.inode), Some(0));
        assert_eq!(a.event.map(|e| e.gap_ns), Some(0));
        // The server's side of the same connection (another orientation,
        // unseen) is not taken for ours.
        let a = run(&tl, &tcp("10.0.0.1:40001", "10.0.0.2:80", 300, 400));
        assert!(!a.method.is_attributed());
        // Far from the flow: beyond --max-gap, not used.
        let a = run(&tl, &tcp("10.0.0.1:40000", "10.0.0.2:80", 50_000, 50_100));
        assert_ne!(a.method, Method::Rule(Rule::EventConnect));
    }

    /// Two processes with events on one tuple during one flow (not split:
    /// that is the `split` module's work): the nearest one owns it, both are named, confidence is at most medium.
    #[test]
    fn events_of_two_processes_during_a_flow_are_named() {
        use crate::snapshot::timeline::tests::ev;
        let mut e1 = ev("send", 100, 20, Some(1), "10.0.0.1:5000", "10.0.0.9:53");
        let mut e2 = ev("send", 400, 21, Some(2), "10.0.0.1:5000", "10.0.0.9:53");
        e1.proto = "udp".into();
        e2.proto = "udp".into();
        let (tl, _) = build(&[Snap::new(1, 0, K), Snap::new(2, 1000, K).events(&[e1, e2])]);
        let a = run(
            &tl,
            &flow(ipproto::UDP, "10.0.0.1:5000", "10.0.0.9:53", 50, 500),
        );
        // Both inside the flow: the first one.
        assert_eq!(
            (a.method, pid(&a)),
            (Method::Rule(Rule::EventSend), Some(20))
        );
        assert_eq!(a.shared_with.len(), 2);
        assert_eq!(a.confidence(), Some(Confidence::Medium));
        assert!(a.notes.contains(&Note::EventOwners(2)));
    }

    /// An owner that comes back after another (A, then B, then A again on
    /// one tuple during one flow) has one span per stretch, so the flow is
    /// cut in three: no row mixes A's and B's packets.
    #[test]
    fn an_owner_coming_back_after_another_has_a_span_per_stretch() {
        use crate::snapshot::timeline::tests::ev;
        let evs: Vec<_> = [(100, 20), (150, 20), (400, 21), (700, 20)]
            .iter()
            .map(|&(ms, p)| {
                let mut e = ev("send", ms, p, Some(1), "10.0.0.1:5000", "10.0.0.9:53");
                e.proto = "udp".into();
                e
            })
            .collect();
        let (tl, _) = build(&[Snap::new(1, 0, K), Snap::new(2, 1000, K).events(&evs)]);
        let f = flow(ipproto::UDP, "10.0.0.1:5000", "10.0.0.9:53", 50, 750);
        let a = run(&tl, &f);
        let spans = owner_spans(&tl, &ctx(), &f, &a);
        let pids: Vec<Option<u32>> = spans.iter().map(|s| s.owner.map(|o| o.pid)).collect();
        assert_eq!(pids, [Some(20), Some(21), Some(20)]);
        assert_eq!(spans[0].last_ns, clock(150).realtime_ns);
        assert_eq!(spans[2].first_ns, clock(700).realtime_ns);
    }

    /// Recorded without privileges: other users' fd directories and
    /// namespace links are unreadable (netns 0 in their records); a socket
    /// nobody visible holds is `owner-unreadable`, not `no-owner`.
    #[test]
    fn unprivileged_bundle_says_owner_unreadable() {
        // Two keyframes: a socket whose only candidate owner (pid 300) has
        // an unreadable fd directory and the namespace record `who`.
        let run_with = |who: ProcessRecord| {
            let s = |seq, ms| {
                Snap::new(seq, ms, K)
                    .table(
                        NS,
                        "tcp",
                        FULL,
                        table(&[row4("10.0.0.1:40001", "10.0.0.2:80", 1, 555)]),
                    )
                    .fds(&["!300 77 EACCES"])
                    .procs(std::slice::from_ref(&who))
            };
            let (tl, _) = build(&[s(1, 0), s(2, 1000)]);
            run(&tl, &tcp("10.0.0.1:40001", "10.0.0.2:80", 0, 500))
        };
        let a = run_with(crate::snapshot::timeline::tests::rec_ns(300, 77, 0));
        assert_eq!(a.method, Method::Unattributed(Reason::OwnerUnreadable));
        // A denied process known to live in another namespace cannot hide it.
        let a = run_with(crate::snapshot::timeline::tests::rec_ns(300, 77, NS2));
        assert_eq!(a.method, Method::Unattributed(Reason::NoOwner));
    }

    /// A process that changed program while recorded: the row says when.
    #[test]
    fn exec_change_of_the_owner_is_noted() {
        use crate::snapshot::timeline::tests::rec_ns;
        let before = ProcessRecord {
            comm: "sh".into(),
            exe: Some("/bin/sh".into()),
            cmdline: vec!["sh".into()],
            ..rec_ns(10, 500, NS)
        };
        let after = ProcessRecord {
            comm: "curl".into(),
            exe: Some("/usr/bin/curl".into()),
            cmdline: vec!["curl".into()],
            ..rec_ns(10, 500, NS)
        };
        let r = row4("10.0.0.1:40000", "10.0.0.2:80", 1, 100);
        let s = |seq, ms, p: &ProcessRecord| {
            Snap::new(seq, ms, K)
                .table(NS, "tcp", FULL, table(std::slice::from_ref(&r)))
                .fds(&["10 500 4026531840 100"])
                .procs(std::slice::from_ref(p))
        };
        let (tl, _) = build(&[s(1, 0, &before), s(2, 1000, &after)]);
        let a = run(&tl, &tcp("10.0.0.1:40000", "10.0.0.2:80", 0, 500));
        assert_eq!(pid(&a), Some(10));
        assert!(a.notes.contains(&Note::ExecChanged {
            t_ns: clock(1000).realtime_ns
        }));
    }

    /// The rule table: names are unique, every rule has a description, and
    /// the order puts events first.
    #[test]
    fn rule_table() {
        let all: Vec<Rule> = Rule::all().collect();
        let mut names: Vec<&str> = all.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len());
        assert!(all.iter().all(|r| !r.doc().is_empty()));
        assert_eq!(all.first(), Some(&Rule::EventUse));
        // Every rule, the capture's own annotations, every reason.
        assert_eq!(Method::all().len(), all.len() + 1 + Reason::ALL.len());
    }
}

/// The join on third-party fixtures: /proc/net tables and the fd links of
/// the projects they come from (read from ../shared/testdata, never copied).
#[cfg(test)]
mod fixture_tests {
    use super::*;
    use crate::snapshot::timeline::tests::{build, Snap};
    use procflow_format::layout::{SnapshotKind, TableStored};
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::PathBuf;

    const NS: u64 = 4026531840;

    fn dir() -> Option<PathBuf> {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/proc-fixtures");
        if p.is_dir() {
            Some(p)
        } else {
            eprintln!("SKIPPED: ../shared/testdata/proc-fixtures is absent");
            None
        }
    }

    /// fd_listings.tsv as `PID START NETNS INODES` lines per fixture set.
    fn fd_lines(dir: &std::path::Path, set: &str) -> Vec<String> {
        let text = std::fs::read_to_string(dir.join("fd_listings.tsv")).unwrap();
        let mut by_pid: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
        for line in text.lines().skip(1) {
            let c: Vec<&str> = line.split('\t').collect();
            if c[0] != set {
                continue;
            }
            let pid: u32 = c[1].parse().unwrap();
            let inodes = by_pid.entry(pid).or_default();
            if let Some(n) = c[3]
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
            {
                inodes.insert(n.parse().unwrap());
            }
        }
        by_pid
            .into_iter()
            .filter(|(_, i)| !i.is_empty())
            .map(|(pid, inodes)| {
                let list: Vec<String> = inodes.iter().map(|i| i.to_string()).collect();
                format!("{pid} {} {NS} {}", pid * 10, list.join(","))
            })
            .collect()
    }

    /// Every expected_sockets.tsv row with `expected_pids`: the socket is in
    /// the timeline and its holders are exactly those pids.
    #[test]
    fn expected_owners_of_fixture_sockets() {
        let Some(dir) = dir() else { return };
        let sets = [
            (
                "dissect-target",
                "dissect-target/proc/net/",
                &["tcp", "tcp6", "udp", "udp6"][..],
            ),
            (
                "weaveworks-scope",
                "weaveworks-scope/",
                &["mockfs_proc_1_net_tcp.txt"][..],
            ),
        ];
        let expected = std::fs::read_to_string(dir.join("expected_sockets.tsv")).unwrap();
        let mut checked = 0;
        for (set, prefix, files) in sets {
            let fds = fd_lines(&dir, set);
            let refs: Vec<&str> = fds.iter().map(String::as_str).collect();
            let mut snap = Snap::new(1, 0, SnapshotKind::Keyframe).fds(&refs);
            for f in files {
                let table: &'static str = match *f {
                    "tcp" | "mockfs_proc_1_net_tcp.txt" => "tcp",
                    "tcp6" => "tcp6",
                    "udp" => "udp",
                    _ => "udp6",
                };
                let text = std::fs::read_to_string(dir.join(format!("{prefix}{f}"))).unwrap();
                snap = snap.table(NS, table, TableStored::Full, text);
            }
            let (tl, d) = build(&[snap]);
            assert_eq!(d.bad_lines, 0, "{set}: {d:?}");
            for line in expected.lines().filter(|l| !l.starts_with('#')).skip(1) {
                let c: Vec<&str> = line.split('\t').collect();
                if !c[0].starts_with(prefix) || c[10].is_empty() {
                    continue;
                }
                let local: SocketAddr =
                    SocketAddr::new(c[3].parse().unwrap(), c[4].parse().unwrap());
                let remote: SocketAddr =
                    SocketAddr::new(c[5].parse().unwrap(), c[6].parse().unwrap());
                let sock = tl
                    .sockets
                    .iter()
                    .find(|s| s.key.local == local && s.key.remote == remote)
                    .unwrap_or_else(|| panic!("{line}: socket not in timeline"));
                let got: BTreeSet<u32> =
                    tl.holders[&sock.key.inode].iter().map(|h| h.pid).collect();
                let want: BTreeSet<u32> = c[10].split(';').map(|p| p.parse().unwrap()).collect();
                assert_eq!(got, want, "{line}");
                checked += 1;
            }
        }
        assert!(checked >= 8, "only {checked} rows");
    }

    /// dissect.target's sshd-style listener shared by pid 1 and pid 1337, and
    /// its ESTABLISHED row with inode 0: a connection to port 22 goes to the
    /// younger holder and names both; the inode-0 tuple has no owner, so the
    /// listener owns it.
    #[test]
    fn dissect_target_join() {
        let Some(dir) = dir() else { return };
        let fds = fd_lines(&dir, "dissect-target");
        let refs: Vec<&str> = fds.iter().map(String::as_str).collect();
        let tcp = std::fs::read_to_string(dir.join("dissect-target/proc/net/tcp")).unwrap();
        let snap = Snap::new(1, 0, SnapshotKind::Keyframe).fds(&refs).table(
            NS,
            "tcp",
            TableStored::Full,
            tcp,
        );
        let (tl, _) = build(&[snap]);
        let ctx = HostContext {
            capture_netns: NS,
            addresses: ["172.16.64.136".parse().unwrap()].into_iter().collect(),
        };
        let t = crate::snapshot::timeline::tests::clock(5).realtime_ns;
        let mk = |a: &str, b: &str| Flow {
            id: 1,
            proto: ipproto::TCP,
            family: Family::V4,
            a_ip: a.parse::<SocketAddr>().unwrap().ip(),
            a_port: Some(a.parse::<SocketAddr>().unwrap().port()),
            b_ip: b.parse::<SocketAddr>().unwrap().ip(),
            b_port: Some(b.parse::<SocketAddr>().unwrap().port()),
            icmp: None,
            first_seen_ns: t,
            last_seen_ns: t,
            packets_ab: 1,
            packets_ba: 0,
            bytes_ab: 60,
            bytes_ba: 0,
            ip_bytes_ab: 46,
            ip_bytes_ba: 0,
            tcp_flags_ab: 2,
            tcp_flags_ba: 0,
        };
        let a = attribute(
            &tl,
            &ctx,
            &Options::default(),
            &mk("172.16.64.1:49442", "172.16.64.136:22"),
        );
        assert_eq!(a.method, Method::Rule(Rule::ListenWildcard));
        assert_eq!(a.owner.map(|o| o.pid), Some(1337));
        assert_eq!(
            a.shared_with.iter().map(|k| k.pid).collect::<Vec<_>>(),
            vec![1, 1337]
        );
        assert!(
            a.notes
                .iter()
                .any(|n| matches!(n, Note::OwnerlessSocket { .. })),
            "{:?}",
            a.notes
        );
    }
}
