//! `bpf(2)` map reads that the eBPF loader does not offer: a whole hash
//! map in a few calls (`BPF_MAP_LOOKUP_BATCH`, Linux 5.6) instead of two
//! calls per entry (next key, then lookup).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Entries asked for per call.
const CHUNK: usize = 4096;

/// Reads every entry of the hash map `map` whose keys are one `u64` and
/// whose values are `N` `u64`s, appending them to `out`. Entries added or
/// removed while it reads may or may not be seen, as with any walk.
/// Fails with the kernel's error (EINVAL or ENOTSUPP before Linux 5.6; the
/// caller then walks key by key).
pub fn hash_lookup_all<const N: usize>(
    map: BorrowedFd<'_>,
    out: &mut Vec<(u64, [u64; N])>,
) -> io::Result<()> {
    let mut chunk = CHUNK;
    let mut keys = vec![0u64; chunk];
    let mut values = vec![[0u64; N]; chunk];
    // The hash map's batch token is its bucket index (a u32); room for a
    // u64 in case a map kind uses a wider one.
    let mut token_in = 0u64;
    let mut token_out = 0u64;
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &mut token_in as *mut u64 as u64
            },
            out_batch: &mut token_out as *mut u64 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: map.as_raw_fd() as u32,
            ..Default::default()
        };
        // SAFETY: `attr` is a fully initialized bpf_attr batch member and
        // its size is passed; `keys` and `values` have room for `count`
        // entries of the map's key (8 bytes) and value (N * 8 bytes)
        // sizes, and the tokens for 8 bytes each; all outlive the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                std::mem::size_of::<BatchAttr>() as libc::c_uint,
            )
        };
        let err = (r < 0).then(io::Error::last_os_error);
        let got = (attr.count as usize).min(chunk);
        match err.as_ref().and_then(io::Error::raw_os_error) {
            None | Some(libc::ENOENT) => {
                out.extend(
                    keys[..got]
                        .iter()
                        .copied()
                        .zip(values[..got].iter().copied()),
                );
                if err.is_some() {
                    return Ok(()); // ENOENT: no more buckets
                }
                first = false;
                token_in = token_out;
            }
            Some(libc::ENOSPC) if chunk < (1 << 20) => {
                // One bucket holds more entries than asked for: ask again
                // from the same place with more room.
                chunk *= 4;
                keys.resize(chunk, 0);
                values.resize(chunk, [0u64; N]);
            }
            _ => return Err(err.unwrap_or_else(|| io::Error::other("bpf batch"))),
        }
    }
}
