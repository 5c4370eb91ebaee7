//! The head of an HTTP/1.x request at the start of a client's stream: the
//! `CONNECT` target or the `Host:` header.

use super::tls::Parse;

/// Longest request head read.
pub const MAX_HEAD: usize = 8 * 1024;

/// What the request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `CONNECT host:port`: the target as written (port included).
    Connect(Vec<u8>),
    /// The `Host:` header's host (port removed).
    Host(Vec<u8>),
    /// A request without a Host header (HTTP/1.0).
    NoHost,
}

const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"HEAD ",
    b"PUT ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];

/// Parses the request head at the start of `stream`.
pub fn parse(stream: &[u8]) -> Parse<Request> {
    let start = &stream[..stream.len().min(8)];
    if !METHODS
        .iter()
        .any(|m| m.starts_with(start) || start.starts_with(m))
    {
        return Parse::No;
    }
    let Some(end) = find(stream, b"\r\n\r\n").or_else(|| find(stream, b"\n\n")) else {
        return if stream.len() >= MAX_HEAD {
            Parse::No
        } else {
            Parse::NeedMore
        };
    };
    let head = &stream[..end.min(MAX_HEAD)];
    let mut lines = head.split(|&b| b == b'\n').map(trim_cr);
    let request = lines.next().unwrap_or_default();
    let mut parts = request.split(|&b| b == b' ').filter(|p| !p.is_empty());
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    // The version is the last word (some clients put more between).
    if !parts.next_back().is_some_and(|v| v.starts_with(b"HTTP/1.")) {
        return Parse::No;
    }
    if method == b"CONNECT" {
        return Parse::Done(Request::Connect(target.to_vec()));
    }
    for l in lines {
        let Some(colon) = l.iter().position(|&b| b == b':') else {
            continue;
        };
        if l[..colon].eq_ignore_ascii_case(b"host") {
            let v = trim(&l[colon + 1..]);
            return Parse::Done(Request::Host(strip_port(v).to_vec()));
        }
    }
    Parse::Done(Request::NoHost)
}

fn trim_cr(l: &[u8]) -> &[u8] {
    l.strip_suffix(b"\r").unwrap_or(l)
}

fn trim(v: &[u8]) -> &[u8] {
    let s = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let e = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(s, |e| e + 1);
    &v[s..e.max(s)]
}

/// `host:port` -> `host`; `[v6]:port` -> `v6`; a bare IPv6 address stays.
fn strip_port(v: &[u8]) -> &[u8] {
    if let Some(rest) = v.strip_prefix(b"[") {
        let e = rest.iter().position(|&b| b == b']').unwrap_or(rest.len());
        return &rest[..e];
    }
    match v.iter().filter(|&&b| b == b':').count() {
        1 => &v[..v.iter().position(|&b| b == b':').unwrap_or(v.len())],
        _ => v,
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_connect_and_partial() {
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nUser-Agent: x\r\nhOsT:  example.org:8080 \r\n\r\n"),
            Parse::Done(Request::Host(b"example.org".to_vec()))
        );
        assert_eq!(
            parse(b"CONNECT files.example:443 HTTP/1.1\r\nHost: files.example:443\r\n\r\n"),
            Parse::Done(Request::Connect(b"files.example:443".to_vec()))
        );
        assert_eq!(
            parse(b"CONNECT mail.example:25 / HTTP/1.0\r\n\r\n"),
            Parse::Done(Request::Connect(b"mail.example:25".to_vec()))
        );
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHo"), Parse::NeedMore);
        assert_eq!(parse(b"GE"), Parse::NeedMore);
        assert_eq!(parse(b"\x16\x03\x01"), Parse::No);
        assert_eq!(
            parse(b"GET / HTTP/1.0\r\n\r\n"),
            Parse::Done(Request::NoHost)
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"),
            Parse::Done(Request::Host(b"::1".to_vec()))
        );
        assert_eq!(parse(&[b'G'; 9000]), Parse::No);
    }
}
