//! SHA-256 of files and lower-case hex, as the bundle's `SHA256SUMS` and
//! the analyzer's `summary.json` write them.

use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// The bundle digest: hex SHA-256 of the bytes of `SHA256SUMS`, which
/// names and hashes every file of the bundle. The recorder prints it (and
/// appends it to its custody log) when it stops; `procflow verify
/// --expect` compares it.
pub fn bundle_digest(sha256sums: &[u8]) -> String {
    sha256_hex(sha256sums)
}

/// Hex SHA-256 of bytes in memory.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Hex SHA-256 and length of everything `r` yields. `abort` is polled
/// before every megabyte; when it says so the read stops with
/// [`io::ErrorKind::Interrupted`] (a second signal must not wait for a large
/// capture to be hashed).
pub fn sha256_reader<R: Read>(mut r: R, abort: &dyn Fn() -> bool) -> io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        if abort() {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
        }
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(buf.get(..n).unwrap_or_default());
        len += n as u64;
    }
    Ok((hex(&h.finalize()), len))
}

/// Hex SHA-256 and size of a file.
pub fn sha256_file(path: &Path) -> io::Result<(String, u64)> {
    sha256_reader(std::fs::File::open(path)?, &|| false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        let (h, n) = sha256_reader(&b"abc"[..], &|| false).unwrap();
        assert_eq!(
            h,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(n, 3);
        let (h, n) = sha256_reader(&b""[..], &|| false).unwrap();
        assert_eq!(
            h,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(n, 0);
    }

    #[test]
    fn abort_stops_the_read() {
        let e = sha256_reader(&b"abc"[..], &|| true).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Interrupted);
    }

    #[test]
    fn hashes_a_file_of_several_buffers() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let data: Vec<u8> = (0..(3 << 20) + 17).map(|i| (i % 251) as u8).collect();
        std::fs::write(f.path(), &data).unwrap();
        let (h, n) = sha256_file(f.path()).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(h, hex(&Sha256::digest(&data)));
    }
}
