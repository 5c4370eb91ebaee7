//! The TLS ClientHello: found at the start of a client's byte stream (TLS
//! records over TCP) or in QUIC CRYPTO data (a bare handshake message), and
//! reduced to what names and JA4 need.

/// Result of parsing bytes that may hold more than they show yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parse<T> {
    /// Parsed.
    Done(T),
    /// The bytes so far are a valid beginning: more are needed.
    NeedMore,
    /// Not this protocol, or malformed.
    No,
}

/// Longest ClientHello handshake message read (bytes of body).
pub const MAX_HELLO: usize = 16 * 1024;

/// What a ClientHello says, as far as names and JA4 go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// `legacy_version` of the hello.
    pub version: u16,
    /// Cipher suites in order (GREASE included).
    pub ciphers: Vec<u16>,
    /// Extension types in order (GREASE included).
    pub extensions: Vec<u16>,
    /// The first `host_name` of the server_name extension, raw bytes.
    pub sni: Option<Vec<u8>>,
    /// The first ALPN protocol name, raw bytes.
    pub alpn_first: Option<Vec<u8>>,
    /// signature_algorithms in order.
    pub sig_algs: Vec<u16>,
    /// supported_versions in order.
    pub supported_versions: Vec<u16>,
}

/// Whether `v` is a GREASE value (RFC 8701): `0x?a?a` with equal bytes.
pub fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && (v >> 8) == (v & 0xff)
}

/// A bounds-checked reader over a byte slice.
pub(crate) struct Rd<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Rd<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        Rd { b, pos: 0 }
    }
    pub(crate) fn u8(&mut self) -> Option<u8> {
        let v = *self.b.get(self.pos)?;
        self.pos += 1;
        Some(v)
    }
    pub(crate) fn u16(&mut self) -> Option<u16> {
        let s = self.take(2)?;
        Some(u16::from_be_bytes([s[0], s[1]]))
    }
    pub(crate) fn u24(&mut self) -> Option<usize> {
        let s = self.take(3)?;
        Some((usize::from(s[0]) << 16) | (usize::from(s[1]) << 8) | usize::from(s[2]))
    }
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.b.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.b.get(self.pos..).unwrap_or(&[])
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.b.len()
    }
}

/// Parses TLS records from the start of `stream` (a client's TCP bytes):
/// the handshake fragments of consecutive handshake records are joined
/// until a whole ClientHello is there.
pub fn parse_records(stream: &[u8]) -> Parse<ClientHello> {
    // A handshake record, TLS 1.0..1.3 record versions (SSL 3.0 too).
    match stream {
        [] | [0x16] | [0x16, 0x03] => return Parse::NeedMore,
        [0x16, 0x03, v, ..] if *v <= 0x04 => {}
        _ => return Parse::No,
    }
    let mut hs: Vec<u8> = Vec::new();
    let mut r = Rd::new(stream);
    loop {
        if r.is_empty() {
            return Parse::NeedMore;
        }
        let Some(ty) = r.u8() else {
            return Parse::NeedMore;
        };
        if ty != 0x16 {
            return Parse::No;
        }
        let (Some(_ver), Some(len)) = (r.u16(), r.u16()) else {
            return Parse::NeedMore;
        };
        let len = usize::from(len);
        if len == 0 || len > 18 * 1024 {
            return Parse::No;
        }
        let avail = r.rest();
        let frag = &avail[..avail.len().min(len)];
        hs.extend_from_slice(frag);
        match parse_handshake(&hs) {
            Parse::NeedMore if frag.len() == len => {
                r.take(len);
                if hs.len() > MAX_HELLO + 4 {
                    return Parse::No;
                }
            }
            other => return other,
        }
    }
}

/// Parses one handshake message that must be a ClientHello (type 1) from
/// the start of `hs`.
pub fn parse_handshake(hs: &[u8]) -> Parse<ClientHello> {
    let mut r = Rd::new(hs);
    match r.u8() {
        None => return Parse::NeedMore,
        Some(1) => {}
        Some(_) => return Parse::No,
    }
    let Some(len) = r.u24() else {
        return Parse::NeedMore;
    };
    if !(38..=MAX_HELLO).contains(&len) {
        return Parse::No;
    }
    let Some(body) = r.take(len) else {
        return Parse::NeedMore;
    };
    match client_hello(body) {
        Some(ch) => Parse::Done(ch),
        None => Parse::No,
    }
}

fn client_hello(body: &[u8]) -> Option<ClientHello> {
    let mut r = Rd::new(body);
    let mut ch = ClientHello {
        version: r.u16()?,
        ..ClientHello::default()
    };
    r.take(32)?; // random
    let sid = r.u8()?;
    r.take(usize::from(sid))?;
    let cs_len = usize::from(r.u16()?);
    if cs_len % 2 != 0 {
        return None;
    }
    let mut cs = Rd::new(r.take(cs_len)?);
    while let Some(c) = cs.u16() {
        ch.ciphers.push(c);
    }
    let comp = r.u8()?;
    r.take(usize::from(comp))?;
    if r.is_empty() {
        return Some(ch); // no extensions (SSL 3.0 style)
    }
    let ext_len = usize::from(r.u16()?);
    let mut ex = Rd::new(r.take(ext_len)?);
    while !ex.is_empty() {
        let ty = ex.u16()?;
        let len = usize::from(ex.u16()?);
        let data = ex.take(len)?;
        ch.extensions.push(ty);
        let mut d = Rd::new(data);
        match ty {
            0x0000 if ch.sni.is_none() => {
                let list = usize::from(d.u16()?);
                let mut l = Rd::new(d.take(list)?);
                while !l.is_empty() {
                    let nt = l.u8()?;
                    let n = usize::from(l.u16()?);
                    let name = l.take(n)?;
                    if nt == 0 && ch.sni.is_none() {
                        ch.sni = Some(name.to_vec());
                    }
                }
            }
            0x0010 if ch.alpn_first.is_none() => {
                let list = usize::from(d.u16()?);
                let mut l = Rd::new(d.take(list)?);
                if !l.is_empty() {
                    let n = usize::from(l.u8()?);
                    ch.alpn_first = Some(l.take(n)?.to_vec());
                }
            }
            0x000d if ch.sig_algs.is_empty() => {
                let list = usize::from(d.u16()?);
                let mut l = Rd::new(d.take(list)?);
                while let Some(s) = l.u16() {
                    ch.sig_algs.push(s);
                }
            }
            0x002b if ch.supported_versions.is_empty() => {
                let list = usize::from(d.u8()?);
                let mut l = Rd::new(d.take(list)?);
                while let Some(s) = l.u16() {
                    ch.supported_versions.push(s);
                }
            }
            _ => {}
        }
    }
    Some(ch)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A ClientHello handshake message with these extensions
    /// (type, data).
    pub(crate) fn hello(ciphers: &[u16], exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![0x03, 0x03];
        body.extend([7u8; 32]);
        body.push(0);
        body.extend(((ciphers.len() * 2) as u16).to_be_bytes());
        for c in ciphers {
            body.extend(c.to_be_bytes());
        }
        body.extend([1, 0]);
        let mut e = Vec::new();
        for (t, d) in exts {
            e.extend(t.to_be_bytes());
            e.extend((d.len() as u16).to_be_bytes());
            e.extend(d);
        }
        body.extend((e.len() as u16).to_be_bytes());
        body.extend(e);
        let mut hs = vec![1];
        hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend(body);
        hs
    }

    pub(crate) fn sni_ext(name: &str) -> (u16, Vec<u8>) {
        let mut d = ((name.len() + 3) as u16).to_be_bytes().to_vec();
        d.push(0);
        d.extend((name.len() as u16).to_be_bytes());
        d.extend(name.as_bytes());
        (0, d)
    }

    fn records(hs: &[u8], split: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in hs.chunks(split) {
            out.extend([0x16, 0x03, 0x01]);
            out.extend((chunk.len() as u16).to_be_bytes());
            out.extend(chunk);
        }
        out
    }

    #[test]
    fn sni_in_one_record_and_split_over_records_and_bytes() {
        let hs = hello(&[0x1301, 0x0a0a], &[sni_ext("example.org")]);
        for split in [hs.len(), 20, 7] {
            let stream = records(&hs, split);
            let Parse::Done(ch) = parse_records(&stream) else {
                panic!("split {split}")
            };
            assert_eq!(ch.sni.as_deref(), Some(&b"example.org"[..]));
            assert_eq!(ch.ciphers, vec![0x1301, 0x0a0a]);
            for cut in [1, 5, stream.len() / 2, stream.len() - 1] {
                assert_eq!(parse_records(&stream[..cut]), Parse::NeedMore, "cut {cut}");
            }
        }
        assert_eq!(parse_records(b"GET / HTTP/1.1\r\n"), Parse::No);
    }

    #[test]
    fn hostile_lengths_are_refused() {
        let hs = hello(&[0x1301], &[sni_ext("a.b")]);
        let mut bad = hs.clone();
        // The extension list claims more than the body holds.
        let n = bad.len();
        bad[n - 14] = 0xff;
        assert!(!matches!(parse_handshake(&bad), Parse::Done(_)));
        assert_eq!(parse_handshake(&[1, 0xff, 0xff, 0xff]), Parse::No);
        assert!(is_grease(0x0a0a) && is_grease(0xfafa) && !is_grease(0x0a1a));
    }
}
