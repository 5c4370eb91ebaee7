//! Netlink messages, built and read: one writer ([`NlWriter`]) and one
//! reader ([`NlReader`], with [`attrs`] for the attributes inside a
//! message) for every netlink protocol the recorder speaks: sock_diag (the
//! capture-triggered lookup), ctnetlink (`netlink`) and the proc connector
//! (`events`). Pure code over bytes; the sockets are in `ksys`.
//!
//! The kernel is the only peer, but a reader never trusts a length: a
//! message that claims more than the datagram holds, or less than its own
//! header, ends the reading and is reported by [`NlReader::bad`].

/// `struct nlmsghdr` length.
pub const HEADER_LEN: usize = 16;
/// Message type: an error or acknowledgement (payload: a negative errno).
pub const NLMSG_ERROR: u16 = 2;
/// Message type: end of a dump.
pub const NLMSG_DONE: u16 = 3;
/// Flag: a request.
pub const NLM_F_REQUEST: u16 = 0x1;
/// Flags: a dump (`NLM_F_ROOT | NLM_F_MATCH`).
pub const NLM_F_DUMP: u16 = 0x300;

/// Netlink's 4-byte alignment.
pub fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Builds one netlink message: the header, then the payload appended with
/// [`NlWriter::put`]; [`NlWriter::finish`] writes the length.
#[derive(Debug, Clone)]
pub struct NlWriter {
    buf: Vec<u8>,
}

impl NlWriter {
    /// A message of type `ty` with `flags`, sequence number `seq` and
    /// sender port `pid` (0 for the kernel to fill in).
    pub fn new(ty: u16, flags: u16, seq: u32, pid: u32) -> NlWriter {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&pid.to_ne_bytes());
        NlWriter { buf }
    }

    /// Appends payload bytes.
    pub fn put(&mut self, bytes: &[u8]) -> &mut NlWriter {
        self.buf.extend_from_slice(bytes);
        self
    }

    /// The message, its length written in the header.
    pub fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// One message of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NlMsg<'a> {
    /// Message type.
    pub ty: u16,
    /// Flags.
    pub flags: u16,
    /// Sequence number.
    pub seq: u32,
    /// Sender port.
    pub pid: u32,
    /// What follows the header, up to the message's length.
    pub body: &'a [u8],
}

impl NlMsg<'_> {
    /// The errno of an `NLMSG_ERROR` message (positive; 0 for an
    /// acknowledgement, and for a body too short to say).
    pub fn errno(&self) -> i32 {
        self.body
            .get(0..4)
            .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
            .saturating_neg()
    }
}

/// Reads the messages of one datagram in order.
#[derive(Debug, Clone)]
pub struct NlReader<'a> {
    buf: &'a [u8],
    off: usize,
    bad: Option<(usize, usize)>,
}

impl<'a> NlReader<'a> {
    /// A reader over the datagram `buf`.
    pub fn new(buf: &'a [u8]) -> NlReader<'a> {
        NlReader {
            buf,
            off: 0,
            bad: None,
        }
    }

    /// The offset and claimed length of a message that did not fit (its
    /// length below a header, or past the datagram's end), which ended the
    /// reading; `None` when the reading ended at the datagram's end (a
    /// tail shorter than a header is ignored).
    pub fn bad(&self) -> Option<(usize, usize)> {
        self.bad
    }
}

impl<'a> Iterator for NlReader<'a> {
    type Item = NlMsg<'a>;

    fn next(&mut self) -> Option<NlMsg<'a>> {
        if self.bad.is_some() {
            return None;
        }
        let off = self.off;
        let h = self.buf.get(off..off.checked_add(HEADER_LEN)?)?;
        let u16_at = |o: usize| u16::from_ne_bytes([h[o], h[o + 1]]);
        let u32_at = |o: usize| u32::from_ne_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
        let len = u32_at(0) as usize;
        let Some(body) = (len >= HEADER_LEN)
            .then(|| self.buf.get(off + HEADER_LEN..off.checked_add(len)?))
            .flatten()
        else {
            self.bad = Some((off, len));
            return None;
        };
        self.off = off.saturating_add(align4(len));
        Some(NlMsg {
            ty: u16_at(4),
            flags: u16_at(6),
            seq: u32_at(8),
            pid: u32_at(12),
            body,
        })
    }
}

/// Iterates the attributes (`struct nlattr`) of `b` as (type without the
/// nested and byte-order flags, payload); stops at the first that does not
/// fit.
pub fn attrs(b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut off = 0usize;
    std::iter::from_fn(move || {
        if off + 4 > b.len() {
            return None;
        }
        let len = u16::from_ne_bytes([b[off], b[off + 1]]) as usize;
        let ty = u16::from_ne_bytes([b[off + 2], b[off + 3]]) & 0x3fff;
        if len < 4 || off + len > b.len() {
            return None;
        }
        let payload = &b[off + 4..off + len];
        off += align4(len);
        Some((ty, payload))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_messages_read_back() {
        let mut w = NlWriter::new(20, NLM_F_REQUEST, 7, 0);
        w.put(&[1, 2, 3]);
        let a = w.finish();
        assert_eq!(a.len(), 19);
        let b = NlWriter::new(NLMSG_DONE, 0, 8, 42).finish();
        let mut buf = a.clone();
        buf.push(0); // padding to 4
        buf.extend_from_slice(&b);
        let mut r = NlReader::new(&buf);
        let m = r.next().unwrap();
        assert_eq!(
            (m.ty, m.flags, m.seq, m.pid, m.body),
            (20, 1, 7, 0, &[1u8, 2, 3][..])
        );
        let m = r.next().unwrap();
        assert_eq!((m.ty, m.seq, m.pid, m.body.len()), (NLMSG_DONE, 8, 42, 0));
        assert!(r.next().is_none());
        assert_eq!(r.bad(), None);
    }

    #[test]
    fn lengths_that_do_not_fit_end_the_reading() {
        // Claims 64 bytes, holds 20.
        let mut w = NlWriter::new(NLMSG_ERROR, 0, 1, 0);
        w.put(&(-2i32).to_ne_bytes());
        let mut m = w.finish();
        assert_eq!(NlReader::new(&m).next().unwrap().errno(), 2);
        m[0..4].copy_from_slice(&64u32.to_ne_bytes());
        let mut r = NlReader::new(&m);
        assert!(r.next().is_none());
        assert_eq!(r.bad(), Some((0, 64)));
        // Below a header.
        m[0..4].copy_from_slice(&4u32.to_ne_bytes());
        let mut r = NlReader::new(&m);
        assert!(r.next().is_none());
        assert_eq!(r.bad(), Some((0, 4)));
        // A tail shorter than a header: the end, not an error.
        let mut r = NlReader::new(&m[..10]);
        assert!(r.next().is_none());
        assert_eq!(r.bad(), None);
        // u32::MAX does not overflow.
        m[0..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(NlReader::new(&m).next().is_none());
    }

    #[test]
    fn attributes_stop_at_the_first_that_does_not_fit() {
        let b = [8u8, 0, 0x01, 0x80, 1, 2, 3, 4, 9, 0, 2, 0, 5];
        let got: Vec<_> = attrs(&b).collect();
        assert_eq!(got, [(1, &[1u8, 2, 3, 4][..])]);
    }
}
