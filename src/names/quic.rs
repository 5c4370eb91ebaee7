//! QUIC v1 Initial packets: the client's CRYPTO data, decrypted with the
//! Initial keys every observer can derive from the destination connection
//! ID (RFC 9001 §5.2), header protection removed (§5.4), the payload opened
//! with AES-128-GCM (§5.3).

use aes::cipher::{BlockCipherEncrypt, KeyInit};
use aes::Aes128;
use aes_gcm::aead::{Aead, Payload};
use aes_gcm::Aes128Gcm;
use hkdf::Hkdf;
use sha2::Sha256;

use super::tls::Rd;

/// The QUIC v1 Initial salt (RFC 9001 §5.2).
const INITIAL_SALT_V1: [u8; 20] = [
    0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad,
    0xcc, 0xbb, 0x7f, 0x0a,
];

/// The client's Initial packet protection keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// AEAD key.
    pub key: [u8; 16],
    /// AEAD IV.
    pub iv: [u8; 12],
    /// Header protection key.
    pub hp: [u8; 16],
}

/// HKDF-Expand-Label (RFC 8446 §7.1) with an empty context.
fn expand_label(secret: &[u8], label: &str, out: &mut [u8]) -> Option<()> {
    let hk = Hkdf::<Sha256>::from_prk(secret).ok()?;
    let full = format!("tls13 {label}");
    let mut info = Vec::with_capacity(4 + full.len());
    info.extend((out.len() as u16).to_be_bytes());
    info.push(full.len() as u8);
    info.extend(full.as_bytes());
    info.push(0);
    hk.expand(&info, out).ok()
}

/// The client's Initial keys for destination connection ID `dcid`.
pub fn client_keys(dcid: &[u8]) -> Option<Keys> {
    let (initial, _) = Hkdf::<Sha256>::extract(Some(&INITIAL_SALT_V1), dcid);
    let mut client = [0u8; 32];
    expand_label(&initial, "client in", &mut client)?;
    let mut k = Keys {
        key: [0; 16],
        iv: [0; 12],
        hp: [0; 16],
    };
    expand_label(&client, "quic key", &mut k.key)?;
    expand_label(&client, "quic iv", &mut k.iv)?;
    expand_label(&client, "quic hp", &mut k.hp)?;
    Some(k)
}

fn varint(r: &mut Rd<'_>) -> Option<u64> {
    let first = r.u8()?;
    let len = 1usize << (first >> 6);
    let mut v = u64::from(first & 0x3f);
    for _ in 1..len {
        v = (v << 8) | u64::from(r.u8()?);
    }
    Some(v)
}

/// One CRYPTO frame's data and its offset in the stream.
pub type Crypto = (u64, Vec<u8>);

/// The destination connection ID of the first long-header v1 Initial
/// packet in a datagram.
pub fn initial_dcid(datagram: &[u8]) -> Option<Vec<u8>> {
    let mut r = Rd::new(datagram);
    let b0 = r.u8()?;
    if b0 & 0xc0 != 0xc0 || (b0 >> 4) & 3 != 0 || r.take(4)? != [0, 0, 0, 1] {
        return None;
    }
    let n = usize::from(r.u8()?);
    if n > 20 {
        return None;
    }
    Some(r.take(n)?.to_vec())
}

/// Decrypts the v1 Initial packets of one client datagram (coalesced
/// packets included) with the keys of `dcid` and returns their CRYPTO
/// frames. Packets that are not v1 Initials or do not decrypt are skipped.
pub fn crypto_frames(datagram: &[u8], keys: &Keys) -> Vec<Crypto> {
    let mut out = Vec::new();
    let mut rest = datagram;
    // Each coalesced packet advances `rest` by at least its header.
    for _ in 0..8 {
        let Some((consumed, frames)) = one_packet(rest, keys) else {
            break;
        };
        out.extend(frames);
        rest = rest.get(consumed..).unwrap_or(&[]);
        if rest.is_empty() {
            break;
        }
    }
    out
}

/// One long-header packet from the start of `p`: bytes it spans, and its
/// CRYPTO frames when it is a v1 Initial that decrypts.
fn one_packet(p: &[u8], keys: &Keys) -> Option<(usize, Vec<Crypto>)> {
    let mut r = Rd::new(p);
    let b0 = r.u8()?;
    if b0 & 0x80 == 0 {
        return None; // short header: the rest of the datagram
    }
    let version = r.take(4)?;
    let dl = usize::from(r.u8()?);
    r.take(dl)?;
    let sl = usize::from(r.u8()?);
    r.take(sl)?;
    let initial = version == [0, 0, 0, 1] && (b0 >> 4) & 3 == 0;
    if version == [0, 0, 0, 1] && (b0 >> 4) & 3 == 0 {
        let tl = varint(&mut r)?;
        r.take(usize::try_from(tl).ok()?)?;
    } else if version != [0, 0, 0, 1] || (b0 >> 4) & 3 == 3 {
        return None; // another version, or a Retry: no length field
    }
    let len = usize::try_from(varint(&mut r)?).ok()?;
    let pn_off = p.len() - r.rest().len();
    let end = pn_off.checked_add(len)?;
    let packet = p.get(..end)?;
    if !initial {
        return Some((end, Vec::new()));
    }
    let frames = decrypt(packet, pn_off, keys).map(|pl| frames(&pl));
    Some((end, frames.unwrap_or_default()))
}

/// Removes header protection and opens the payload of the Initial packet
/// `packet` whose packet number starts at `pn_off`.
fn decrypt(packet: &[u8], pn_off: usize, keys: &Keys) -> Option<Vec<u8>> {
    let sample = packet.get(pn_off + 4..pn_off + 20)?;
    let hp = Aes128::new_from_slice(&keys.hp).ok()?;
    let mut mask = aes::Block::default();
    mask.copy_from_slice(sample);
    hp.encrypt_block(&mut mask);
    let b0 = packet[0] ^ (mask[0] & 0x0f);
    let pn_len = usize::from(b0 & 3) + 1;
    let mut header = packet.get(..pn_off + pn_len)?.to_vec();
    header[0] = b0;
    let mut pn: u64 = 0;
    for i in 0..pn_len {
        header[pn_off + i] ^= mask[1 + i];
        pn = (pn << 8) | u64::from(header[pn_off + i]);
    }
    let mut nonce = keys.iv;
    for (i, b) in pn.to_be_bytes().iter().enumerate() {
        nonce[4 + i] ^= b;
    }
    let aead = Aes128Gcm::new_from_slice(&keys.key).ok()?;
    let ct = packet.get(pn_off + pn_len..)?;
    aead.decrypt(
        &nonce.into(),
        Payload {
            msg: ct,
            aad: &header,
        },
    )
    .ok()
}

/// The CRYPTO frames of a decrypted Initial payload; stops at the first
/// frame type an Initial may not carry.
fn frames(pl: &[u8]) -> Vec<Crypto> {
    let mut out = Vec::new();
    let mut r = Rd::new(pl);
    while !r.is_empty() {
        let Some(ty) = varint(&mut r) else { break };
        match ty {
            0x00 | 0x01 => {} // PADDING, PING
            0x02 | 0x03 => {
                // ACK: largest, delay, range count, first range, ranges.
                let parsed = (|| {
                    varint(&mut r)?;
                    varint(&mut r)?;
                    let n = varint(&mut r)?;
                    varint(&mut r)?;
                    for _ in 0..n.min(1024) {
                        varint(&mut r)?;
                        varint(&mut r)?;
                    }
                    if ty == 0x03 {
                        for _ in 0..3 {
                            varint(&mut r)?;
                        }
                    }
                    Some(())
                })();
                if parsed.is_none() {
                    break;
                }
            }
            0x06 => {
                let (Some(off), Some(len)) = (varint(&mut r), varint(&mut r)) else {
                    break;
                };
                let Some(data) = usize::try_from(len).ok().and_then(|l| r.take(l)) else {
                    break;
                };
                out.push((off, data.to_vec()));
            }
            _ => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 9001 Appendix A.1: keys from DCID 0x8394c8f03e515708.
    #[test]
    fn rfc9001_a1_client_keys() {
        let k = client_keys(&unhex("8394c8f03e515708")).unwrap();
        assert_eq!(k.key.to_vec(), unhex("1f369613dd76d5467730efcbe3b1a22d"));
        assert_eq!(k.iv.to_vec(), unhex("fa044b2f42a3fd3b46fb255c"));
        assert_eq!(k.hp.to_vec(), unhex("9f50449e04a0e810283a1e9933adedd2"));
    }

    /// RFC 9001 Appendix A.2: the client Initial, protected, decrypts to
    /// its CRYPTO frame (a ClientHello naming example.com).
    #[test]
    fn rfc9001_a2_client_initial() {
        // The unprotected payload: CRYPTO frame, then PADDING to 1162 bytes.
        let crypto = unhex(
            "060040f1010000ed0303ebf8fa56f12939b9584a3896472ec40bb863cfd3e868
             04fe3a47f06a2b69484c00000413011302010000c000000010000e00000b6578
             616d706c652e636f6dff01000100000a00080006001d00170018001000070005
             04616c706e000500050100000000003300260024001d00209370b2c9caa47fba
             baf4559fedba753de171fa71f50f1ce15d43e994ec74d748002b000302030400
             0d0010000e0403050306030203080408050806002d00020101001c0002400100
             3900320408ffffffffffffffff05048000ffff07048000ffff08011001048000
             75300901100f088394c8f03e51570806048000ffff",
        );
        let mut payload = crypto.clone();
        payload.resize(1162, 0);
        let header = unhex("c300000001088394c8f03e5157080000449e00000002");
        let keys = client_keys(&unhex("8394c8f03e515708")).unwrap();
        // Protect as the RFC does, then check that reading it back works.
        let aead = Aes128Gcm::new_from_slice(&keys.key).unwrap();
        let mut nonce = keys.iv;
        nonce[11] ^= 2;
        let ct = aead
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: &payload,
                    aad: &header,
                },
            )
            .unwrap();
        let mut packet = header.clone();
        packet.extend(&ct);
        let pn_off = header.len() - 4;
        let hp = Aes128::new_from_slice(&keys.hp).unwrap();
        let mut mask = aes::Block::default();
        mask.copy_from_slice(&packet[pn_off + 4..pn_off + 20]);
        hp.encrypt_block(&mut mask);
        // RFC 9001 A.2's sample and mask.
        assert_eq!(
            packet[pn_off + 4..pn_off + 20].to_vec(),
            unhex("d1b1c98dd7689fb8ec11d242b123dc9b")
        );
        assert_eq!(mask[..5].to_vec(), unhex("437b9aec36"));
        packet[0] ^= mask[0] & 0x0f;
        for i in 0..4 {
            packet[pn_off + i] ^= mask[1 + i];
        }
        // The protected packet starts as the RFC prints it.
        assert_eq!(
            packet[..24].to_vec(),
            unhex("c000000001088394c8f03e5157080000449e7b9aec34d1b1")
        );
        assert_eq!(initial_dcid(&packet), Some(unhex("8394c8f03e515708")));
        let frames = crypto_frames(&packet, &keys);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].0, 0);
        let Some(ch) = (match super::super::tls::parse_handshake(&frames[0].1) {
            super::super::tls::Parse::Done(ch) => Some(ch),
            _ => None,
        }) else {
            panic!("no ClientHello")
        };
        assert_eq!(ch.sni.as_deref(), Some(&b"example.com"[..]));
        // Damaged: no frames, no panic.
        let mut bad = packet.clone();
        bad[40] ^= 1;
        assert!(crypto_frames(&bad, &keys).is_empty());
        for cut in [0, 5, 20, 100] {
            assert!(crypto_frames(&packet[..cut], &keys).is_empty());
        }
    }
}
