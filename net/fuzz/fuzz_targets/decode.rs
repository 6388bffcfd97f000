//! The frame decoder on arbitrary bytes: it must never panic, never read
//! past what it was given, and whatever it accepts must re-encode to exactly
//! the bytes it consumed (one encoding per frame, so no field is silently
//! ignored).
//!
//! The first input byte picks a mode: odd means "fix the first frame's header
//! CRC before decoding", so the fuzzer explores the heads behind the CRC
//! instead of stopping at it; even feeds the bytes as they are.
//!
//! ```text
//! RUSTC_BOOTSTRAP=1 cargo fuzz run decode            # from net/, until stopped
//! RUSTC_BOOTSTRAP=1 cargo fuzz run decode -- -max_total_time=60
//! ```
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringraft_net::frame::{self, CONTROL_FRAME_BYTES_MAX, FRAME_HEADER_BYTES, Kind};

const FRAME_BYTES_MAX: usize = 1 << 16;

/// Rewrites the header CRC of the frame at the start of `bytes`, if its kind
/// is known and its head is all there.
fn fix_crc(bytes: &mut [u8]) {
    let Some(kind) = bytes.get(5).and_then(|&b| Kind::from_byte(b)) else {
        return;
    };
    let head_end = FRAME_HEADER_BYTES + kind.head_bytes();
    if bytes.len() < head_end {
        return;
    }
    let crc = crc32c::crc32c_append(
        crc32c::crc32c(&bytes[..12]),
        &bytes[FRAME_HEADER_BYTES..head_end],
    );
    bytes[12..16].copy_from_slice(&crc.to_le_bytes());
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let mut owned = input.to_vec();
    if mode & 1 == 1 {
        fix_crc(&mut owned);
    }
    let mut rest = &owned[..];
    while let Ok(Some((decoded, used))) = frame::decode(rest, FRAME_BYTES_MAX) {
        assert!(used <= rest.len() && used >= FRAME_HEADER_BYTES);
        let mut again = vec![0u8; CONTROL_FRAME_BYTES_MAX + decoded.payload.len()];
        let size = frame::encode_with_payload(&mut again, &decoded.message, decoded.payload);
        assert_eq!(&again[..size], &rest[..used], "re-encoding differs");
        rest = &rest[used..];
    }
    // The header-first path the transport uses must agree with decode.
    if let Some(raw) = owned.first_chunk::<FRAME_HEADER_BYTES>() {
        if let Ok(header) = frame::decode_header(raw, FRAME_BYTES_MAX) {
            if let Some(head_frame) = owned.get(..header.head_frame_bytes()) {
                let _ = frame::decode_head(&header, head_frame);
            }
        }
    }
});
