//! The recorder's one kernel-facing module: every system call that the
//! standard library does not offer, on the one syscall crate (`libc`).
//!
//! - [`perf`]: `perf_event_open` on tracepoints and their ring buffers;
//! - [`bpf`]: whole-map reads of the eBPF program's hash map;
//! - [`netlink`]: netlink sockets (proc connector, sock_diag, ctnetlink),
//!   in this or another network namespace;
//! - [`packet`]: `AF_PACKET` sockets, the capture's `TPACKET_V3` ring,
//!   interface names and indexes;
//! - [`sock`]: socket options, poll, one datagram received;
//! - [`process`]: clocks, uname, ids, priorities, CPU time, signals,
//!   interface addresses, a child's death signal;
//! - [`fs`]: the tracefs mount and access checks.
//!
//! `unsafe` is needed here because these are raw system calls on memory the
//! kernel reads or writes (the perf and packet rings are mmaps the kernel
//! writes into concurrently) and C structures. It is allowed in this module
//! only (the crate root denies it elsewhere), and every block says why it
//! holds. Everything handed out is safe Rust: owned fds, byte slices,
//! plain values. What the kernel wrote is decoded by safe code on bytes
//! (`events`, `sockuse`, `lookup`, `conntrack`, `capture`), and netlink
//! messages are built and read by `nlmsg`.

pub mod bpf;
pub mod fs;
pub mod netlink;
pub mod packet;
pub mod perf;
pub mod process;
pub mod sock;

pub use fs::{mount_tracefs, umount};
pub use netlink::{netlink_request, netlink_socket, proc_connector};
pub use packet::{if_index, packet_drops, packet_socket, recv_packet, SockFilter};
pub use perf::{
    enable, open_tracepoint, open_tracepoint_counter, set_bpf, set_filter, set_output, PerfRing,
};
pub use sock::{poll_readable, recv};
