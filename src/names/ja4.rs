//! JA4, the TLS client fingerprint (FoxIO, BSD 3-Clause specification):
//! `{t|q}{version}{d|i}{ciphers:02}{extensions:02}{alpn}_{hash of sorted
//! ciphers}_{hash of sorted extensions and signature algorithms}`.

use super::tls::{is_grease, ClientHello};
use sha2::{Digest, Sha256};

fn version_code(v: u16) -> &'static str {
    match v {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0002 => "s2",
        0xfeff => "d1",
        0xfefd => "d2",
        0xfefc => "d3",
        _ => "00",
    }
}

/// The first 12 hex digits of SHA-256 of `s`, or twelve zeros when `s` is
/// empty.
fn hash12(s: &str) -> String {
    if s.is_empty() {
        return "000000000000".into();
    }
    let d = Sha256::digest(s.as_bytes());
    d.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

fn hex_list(v: &[u16]) -> String {
    v.iter()
        .map(|x| format!("{x:04x}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn alpn_code(alpn: Option<&[u8]>) -> String {
    let Some(a) = alpn.filter(|a| !a.is_empty()) else {
        return "00".into();
    };
    let (first, last) = (a[0], a[a.len() - 1]);
    if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric() {
        format!("{}{}", first as char, last as char)
    } else {
        // Not alphanumeric: the first and last characters of the hex of
        // the whole value.
        let h = format!("{first:02x}");
        let t = format!("{last:02x}");
        format!("{}{}", &h[..1], &t[1..])
    }
}

/// JA4 of a ClientHello seen over TCP (`quic` false) or QUIC.
pub fn ja4(ch: &ClientHello, quic: bool) -> String {
    let version = ch
        .supported_versions
        .iter()
        .copied()
        .filter(|v| !is_grease(*v))
        .max()
        .unwrap_or(ch.version);
    let mut ciphers: Vec<u16> = ch
        .ciphers
        .iter()
        .copied()
        .filter(|c| !is_grease(*c))
        .collect();
    let exts: Vec<u16> = ch
        .extensions
        .iter()
        .copied()
        .filter(|e| !is_grease(*e))
        .collect();
    let a = format!(
        "{}{}{}{:02}{:02}{}",
        if quic { 'q' } else { 't' },
        version_code(version),
        if ch.extensions.contains(&0x0000) {
            'd'
        } else {
            'i'
        },
        ciphers.len().min(99),
        exts.len().min(99),
        alpn_code(ch.alpn_first.as_deref())
    );
    ciphers.sort_unstable();
    let b = hash12(&hex_list(&ciphers));
    let mut sorted: Vec<u16> = exts
        .into_iter()
        .filter(|e| *e != 0x0000 && *e != 0x0010)
        .collect();
    sorted.sort_unstable();
    let sigs: Vec<u16> = ch.sig_algs.to_vec();
    let c_in = if sorted.is_empty() {
        String::new()
    } else if sigs.is_empty() {
        hex_list(&sorted)
    } else {
        format!("{}_{}", hex_list(&sorted), hex_list(&sigs))
    };
    format!("{a}_{b}_{}", hash12(&c_in))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_codes() {
        assert_eq!(alpn_code(Some(b"h2")), "h2");
        assert_eq!(alpn_code(Some(b"http/1.1")), "h1");
        assert_eq!(alpn_code(None), "00");
        assert_eq!(alpn_code(Some(&[0xab, 0x01, 0xcd])), "ad");
    }

    #[test]
    fn spec_example_shape() {
        let ch = ClientHello {
            version: 0x0303,
            ciphers: vec![0x0a0a, 0x1301, 0x1302],
            extensions: vec![0x0a0a, 0x0000, 0x0010, 0x002b, 0x000d],
            sni: Some(b"x".to_vec()),
            alpn_first: Some(b"h2".to_vec()),
            sig_algs: vec![0x0403, 0x0804],
            supported_versions: vec![0x1a1a, 0x0304, 0x0303],
        };
        let j = ja4(&ch, false);
        assert!(j.starts_with("t13d0204h2_"), "{j}");
        assert_eq!(&j[11..23], &hash12("1301,1302")[..]);
        assert_eq!(&j[24..], &hash12("000d,002b_0403,0804")[..]);
        assert!(ja4(&ch, true).starts_with('q'));
    }
}
