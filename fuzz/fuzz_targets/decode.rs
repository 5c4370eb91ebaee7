//! The frame decoder alone: the first two bytes choose the link type, the
//! rest is the frame. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use procflow::decode::decode;

fuzz_target!(|data: &[u8]| {
    if let [a, b, frame @ ..] = data {
        let link = u16::from_le_bytes([*a, *b]) % 300;
        let _ = decode(link, frame, frame.len() as u32);
    }
});
