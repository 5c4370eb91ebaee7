//! Parsing of /proc/net/{tcp,tcp6,udp,udp6,raw,raw6,icmp,icmp6} text.
//!
//! Pure functions over `&str`: no file system. The byte order of the host
//! that produced the text is an input, because the kernel prints each 32-bit
//! address word with `%08X` of the network-order word read in host order
//! (`0100007F` is 127.0.0.1 on a little-endian host, `7F000001` on a
//! big-endian one). IPv6 addresses are four such words, parsed word by word.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Byte order of the host whose /proc text is parsed (`host.byte_order` in
/// the bundle manifest: `little` or `big`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ByteOrder {
    /// x86, arm64 and most hosts.
    Little,
    /// s390x, some ppc64 and mips hosts.
    Big,
}

impl ByteOrder {
    /// The byte order of the machine running this code.
    pub const NATIVE: ByteOrder = if cfg!(target_endian = "big") {
        ByteOrder::Big
    } else {
        ByteOrder::Little
    };

    /// Parses the manifest's `little` / `big`.
    pub fn from_manifest(s: &str) -> Option<ByteOrder> {
        match s {
            "little" => Some(ByteOrder::Little),
            "big" => Some(ByteOrder::Big),
            _ => None,
        }
    }

    /// Network-order bytes of one printed 32-bit word.
    fn word_bytes(self, word: u32) -> [u8; 4] {
        match self {
            // The word was read from memory in host order, so its in-memory
            // bytes (the network-order address bytes) are the host-order
            // bytes of the printed value.
            ByteOrder::Little => word.to_le_bytes(),
            ByteOrder::Big => word.to_be_bytes(),
        }
    }
}

/// Why a /proc/net line could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowError {
    /// The line has fewer than the 10 fields up to `inode`.
    TooFewFields(usize),
    /// The `sl` field does not end with `:`.
    BadSlot,
    /// An `address:port` field is malformed (what, which field).
    BadAddress(String),
    /// The state is not a hex byte.
    BadState(String),
    /// The uid is not a decimal number.
    BadUid(String),
    /// The inode is not a decimal number.
    BadInode(String),
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RowError::TooFewFields(n) => {
                write!(f, "{n} fields, expected at least 10 (sl .. inode)")
            }
            RowError::BadSlot => write!(f, "first field is not `N:`"),
            RowError::BadAddress(s) => write!(f, "bad address:port {s}"),
            RowError::BadState(s) => write!(f, "bad state {s:?}, expected 2 hex digits"),
            RowError::BadUid(s) => write!(f, "bad uid {s:?}"),
            RowError::BadInode(s) => write!(f, "bad inode {s:?}"),
        }
    }
}

/// One parsed socket row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcNetRow {
    /// Local address and port (for raw sockets the port is the protocol).
    pub local: SocketAddr,
    /// Remote address and port (all zero when unconnected).
    pub remote: SocketAddr,
    /// Kernel socket state (`01` ESTABLISHED .. `0A` LISTEN, `07` CLOSE for
    /// unconnected UDP).
    pub state: u8,
    /// Owning uid of the socket.
    pub uid: u32,
    /// Socket inode; 0 for TIME_WAIT, open requests and orphans.
    pub inode: u64,
}

/// Name of a TCP state as in `include/net/tcp_states.h`.
pub fn tcp_state_name(state: u8) -> &'static str {
    match state {
        0x01 => "ESTABLISHED",
        0x02 => "SYN_SENT",
        0x03 => "SYN_RECV",
        0x04 => "FIN_WAIT1",
        0x05 => "FIN_WAIT2",
        0x06 => "TIME_WAIT",
        0x07 => "CLOSE",
        0x08 => "CLOSE_WAIT",
        0x09 => "LAST_ACK",
        0x0A => "LISTEN",
        0x0B => "CLOSING",
        0x0C => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

/// TCP LISTEN state.
pub const STATE_LISTEN: u8 = 0x0A;
/// TCP TIME_WAIT state.
pub const STATE_TIME_WAIT: u8 = 0x06;
/// CLOSE: what an unconnected UDP socket shows.
pub const STATE_CLOSE: u8 = 0x07;

/// Parses one hex `ADDR:PORT` field. The address is 8 hex digits (IPv4) or
/// 32 (IPv6, four words); the port is 1 to 4 hex digits.
pub fn parse_endpoint(field: &str, order: ByteOrder) -> Result<SocketAddr, RowError> {
    let bad = || RowError::BadAddress(field.to_string());
    let (addr, port) = field.split_once(':').ok_or_else(bad)?;
    if port.is_empty() || port.len() > 4 || !port.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let port = u16::from_str_radix(port, 16).map_err(|_| bad())?;
    if !addr.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let word = |i: usize| -> Result<[u8; 4], RowError> {
        let s = addr.get(i * 8..i * 8 + 8).ok_or_else(bad)?;
        let w = u32::from_str_radix(s, 16).map_err(|_| bad())?;
        Ok(order.word_bytes(w))
    };
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return Err(bad()),
    };
    Ok(SocketAddr::new(ip, port))
}

/// Whether a line is a table header (`sl ...` in tcp/udp, `sk ...` in some
/// kernels' raw/icmp tables).
pub fn is_header(line: &str) -> bool {
    matches!(line.split_ascii_whitespace().next(), Some("sl" | "sk"))
}

/// Parses one row. Returns `Ok(None)` for a header or blank line. Works for
/// every table: the fields up to `inode` have the same layout in all of
/// them; udp's extra `ref pointer drops` columns and timewait rows' shorter
/// tails are ignored.
pub fn parse_row(line: &str, order: ByteOrder) -> Result<Option<ProcNetRow>, RowError> {
    if line.trim().is_empty() || is_header(line) {
        return Ok(None);
    }
    let f: Vec<&str> = line.split_ascii_whitespace().take(10).collect();
    let [sl, local_s, remote_s, st, _queues, _timer, _retr, uid, _timeout, inode] = f[..] else {
        return Err(RowError::TooFewFields(f.len()));
    };
    if !sl.ends_with(':') {
        return Err(RowError::BadSlot);
    }
    let local = parse_endpoint(local_s, order)?;
    let remote = parse_endpoint(remote_s, order)?;
    if local.is_ipv4() != remote.is_ipv4() {
        return Err(RowError::BadAddress(format!(
            "{local_s} and {remote_s} differ in family"
        )));
    }
    if st.len() != 2 {
        return Err(RowError::BadState(st.to_string()));
    }
    let state = u8::from_str_radix(st, 16).map_err(|_| RowError::BadState(st.to_string()))?;
    let uid = uid.parse().map_err(|_| RowError::BadUid(uid.to_string()))?;
    let inode = inode
        .parse()
        .map_err(|_| RowError::BadInode(inode.to_string()))?;
    Ok(Some(ProcNetRow {
        local,
        remote,
        state,
        uid,
        inode,
    }))
}

/// A whole table parsed: rows with their 1-based line numbers, and the lines
/// that could not be parsed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ParsedTable {
    /// Good rows, in file order, exact duplicates removed.
    pub rows: Vec<(usize, ProcNetRow)>,
    /// Bad lines: line number and reason.
    pub errors: Vec<(usize, RowError)>,
}

/// Parses a whole table text. Exact duplicate rows (a table read in several
/// chunks can repeat a row) are kept once.
pub fn parse_table(text: &str, order: ByteOrder) -> ParsedTable {
    let mut out = ParsedTable::default();
    let mut seen = std::collections::HashSet::new();
    for (i, line) in text.lines().enumerate() {
        match parse_row(line, order) {
            Ok(Some(row)) => {
                if seen.insert(row) {
                    out.rows.push((i + 1, row));
                }
            }
            Ok(None) => {}
            Err(e) => out.errors.push((i + 1, e)),
        }
    }
    out
}

/// Whether an address is IPv4-mapped IPv6.
pub fn is_v4_mapped(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const LE: ByteOrder = ByteOrder::Little;

    /// The third-party /proc fixtures next to the repository
    /// (`../shared/testdata/proc-fixtures`); fails under CI when absent.
    fn fixtures() -> Option<PathBuf> {
        let p = crate::test_common::shared_testdata()?.join("proc-fixtures");
        if p.is_dir() {
            Some(p)
        } else {
            crate::test_common::missing(&format!("{} is absent", p.display()));
            None
        }
    }

    #[test]
    fn loopback_both_families_and_byte_orders() {
        for (text, order, want) in [
            ("0100007F:0016", LE, "127.0.0.1:22"),
            ("7F000001:0016", ByteOrder::Big, "127.0.0.1:22"),
            ("00000000000000000000000001000000:0277", LE, "[::1]:631"),
            (
                "00000000000000000000000000000001:0277",
                ByteOrder::Big,
                "[::1]:631",
            ),
        ] {
            let want: SocketAddr = want.parse().unwrap();
            assert_eq!(parse_endpoint(text, order).unwrap(), want, "{text}");
        }
        let mapped = parse_endpoint("0000000000000000FFFF00000100007F:9E49", LE).unwrap();
        assert!(is_v4_mapped(mapped.ip()));
        assert_eq!(
            mapped.ip().to_canonical(),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
    }

    /// Every vector of address_vectors.tsv (little-endian host), including
    /// the inputs that must be rejected.
    #[test]
    fn address_vectors_fixture() {
        let Some(dir) = fixtures() else { return };
        let text = std::fs::read_to_string(dir.join("address_vectors.tsv")).unwrap();
        let mut checked = 0;
        for line in text.lines().filter(|l| !l.starts_with('#')).skip(1) {
            let c: Vec<&str> = line.split('\t').collect();
            let (hex, family, ip, port) = (c[0], c[1], c[2], c[3]);
            let got = parse_endpoint(hex, LE);
            if ip == "ERROR" {
                assert!(got.is_err(), "{hex} must be rejected, got {got:?}");
            } else {
                let got = got.unwrap_or_else(|e| panic!("{hex}: {e}"));
                assert_eq!(got.ip(), ip.parse::<IpAddr>().unwrap(), "{hex}");
                assert_eq!(got.port().to_string(), port, "{hex}");
                assert_eq!(got.is_ipv4(), family == "4", "{hex}");
            }
            checked += 1;
        }
        assert!(checked >= 17, "only {checked} vectors");
    }

    /// Every row of expected_sockets.tsv: the parser's view of that line of
    /// that fixture agrees on every asserted column.
    #[test]
    fn expected_sockets_fixture() {
        let Some(dir) = fixtures() else { return };
        let text = std::fs::read_to_string(dir.join("expected_sockets.tsv")).unwrap();
        let mut checked = 0;
        for line in text.lines().filter(|l| !l.starts_with('#')).skip(1) {
            let c: Vec<&str> = line.split('\t').collect();
            let (file, line_no) = (c[0], c[1].parse::<usize>().unwrap());
            let body = std::fs::read_to_string(dir.join(file)).unwrap();
            let raw = body.lines().nth(line_no - 1).unwrap();
            let parsed = parse_row(raw, LE);
            if c[3].is_empty() {
                // Lines the source projects reject or only half-parse.
                if file.ends_with("udp_broken") {
                    assert!(parsed.is_err(), "{file}:{line_no} must be rejected");
                } else if file.ends_with("tcp_nonsense.txt") {
                    // Truncated before uid and inode: not usable for the
                    // join, so counted as malformed, but its address decodes.
                    assert_eq!(parsed, Err(RowError::TooFewFields(5)));
                }
                continue;
            }
            let row = match parsed {
                Ok(Some(r)) => r,
                Ok(None) => panic!("{file}:{line_no} taken for a header"),
                Err(e) if file.ends_with("tcp_nonsense.txt") => {
                    assert_eq!(e, RowError::TooFewFields(5));
                    let f: Vec<&str> = raw.split_ascii_whitespace().collect();
                    let local = parse_endpoint(f[1], LE).unwrap();
                    assert_eq!(local.ip().to_string(), c[3]);
                    assert_eq!(local.port().to_string(), c[4]);
                    checked += 1;
                    continue;
                }
                Err(e) => panic!("{file}:{line_no}: {e}"),
            };
            assert_eq!(
                row.local.ip(),
                c[3].parse::<IpAddr>().unwrap(),
                "{file}:{line_no}"
            );
            assert_eq!(row.local.port().to_string(), c[4], "{file}:{line_no}");
            assert_eq!(
                row.remote.ip(),
                c[5].parse::<IpAddr>().unwrap(),
                "{file}:{line_no}"
            );
            assert_eq!(row.remote.port().to_string(), c[6], "{file}:{line_no}");
            if !c[7].is_empty() {
                assert_eq!(format!("{:02X}", row.state), c[7], "{file}:{line_no}");
            }
            if !c[8].is_empty() {
                assert_eq!(row.uid.to_string(), c[8], "{file}:{line_no}");
            }
            if !c[9].is_empty() {
                assert_eq!(row.inode.to_string(), c[9], "{file}:{line_no}");
            }
            checked += 1;
        }
        assert!(checked >= 60, "only {checked} rows checked");
    }

    #[test]
    fn whole_fixture_tables() {
        let Some(dir) = fixtures() else { return };
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        // Duplicate rows are kept once.
        let t = parse_table(&read("weaveworks-scope/procspy_tcp_duplicates.txt"), LE);
        assert_eq!(t.rows.len(), 1);
        assert!(t.errors.is_empty());
        // Broken lines are reported with their line numbers, good ones kept.
        let t = parse_table(&read("weaveworks-scope/procspy_tcp_nonsense.txt"), LE);
        assert!(t.rows.is_empty());
        assert_eq!(t.errors.iter().map(|e| e.0).collect::<Vec<_>>(), vec![2, 3]);
        // Unindented header ending in a literal `\n`, no final newline,
        // ESTABLISHED row with inode 0.
        let t = parse_table(&read("dissect-target/proc/net/tcp"), LE);
        assert_eq!(t.rows.len(), 3);
        assert_eq!(t.rows[2].1.inode, 0);
        assert_eq!(t.rows[2].1.state, 0x01);
        // udp's extra columns; connected DHCP client socket.
        let t = parse_table(&read("dissect-target/proc/net/udp"), LE);
        assert_eq!(t.rows.len(), 3);
        assert_eq!(t.rows[0].1.remote, "172.16.64.254:67".parse().unwrap());
        assert_eq!(t.rows[1].1.uid, 110);
        // jc: two concatenated dumps with timewait short lines.
        let t = parse_table(&read("jc/net_tcp"), LE);
        assert!(t.errors.is_empty(), "{:?}", t.errors);
        assert_eq!(t.rows.len(), 27);
        let t = parse_table(&read("nethogs/proc_net_udp"), LE);
        assert!(t.errors.is_empty(), "{:?}", t.errors);
        assert!(!t.rows.is_empty());
        let t = parse_table(&read("nethogs/proc_net_tcp"), LE);
        assert!(t.errors.is_empty(), "{:?}", t.errors);
        let t = parse_table(&read("prometheus-procfs/proc/net/udp_broken"), LE);
        assert_eq!(t.errors.len(), 1);
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for l in [
            "0: zz:1 00000000:0000 01 0 0 0 0 0 1",
            "0: 0100007F:0016 00000000000000000000000000000000:0000 01 0 0 0 0 0 1",
            "0: 0100007F:0016 00000000:0000 1 0 0 0 0 0 1",
            "0: 0100007F:0016 00000000:0000 01 0 0 0 x 0 1",
            "0: 0100007F:0016 00000000:0000 01 0 0 0 0 0 -1",
            "0 0100007F:0016 00000000:0000 01 0 0 0 0 0 1",
            "0: 0100007F:00160 00000000:0000 01 0 0 0 0 0 1",
            "0: é00007F:0016 00000000:0000 01 0 0 0 0 0 1",
        ] {
            assert!(parse_row(l, LE).is_err(), "{l}");
        }
    }
}
