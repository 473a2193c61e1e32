//! The frame header decoder (RFC 6455 §5.2) on arbitrary bytes.
//!
//! Checks: `FrameHeader::parse` never panics; a decoded header fits in the
//! input; every shorter prefix asks for more; trailing bytes change nothing;
//! when the input used the shortest length form (the only one `encode`
//! writes, §5.2) the header's `len()` is what was read and it re-encodes to
//! the same bytes, and otherwise it re-encodes to a shorter header that
//! decodes the same; every error is a 1002. Then the payload that follows, masked
//! with the header's key, is unmasked as the byte-at-a-time rule of §5.3
//! says, from any offset.

#![no_main]

use duplex_proto::{CloseCode, FrameHeader, MAX_HEADER_LEN, apply_mask};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (header, n) = match FrameHeader::parse(data) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => {
            // Only a short buffer can be incomplete.
            assert!(
                data.len() < MAX_HEADER_LEN,
                "{} bytes incomplete",
                data.len()
            );
            return;
        }
        Err(e) => {
            assert_eq!(e.close_code(), CloseCode::PROTOCOL_ERROR, "{e}");
            return;
        }
    };
    assert!(n <= data.len() && n <= MAX_HEADER_LEN);
    for k in 0..n {
        assert_eq!(
            FrameHeader::parse(&data[..k]),
            Ok(None),
            "prefix {k} of {n}"
        );
    }
    assert_eq!(FrameHeader::parse(&data[..n]), Ok(Some((header, n))));

    let mut encoded = [0u8; MAX_HEADER_LEN];
    let m = header.encode(&mut encoded);
    assert_eq!(m, header.len());
    let shortest = match data[1] & 0x7f {
        126 => header.payload_len >= 126,
        127 => header.payload_len > 0xffff,
        _ => true,
    };
    if shortest {
        assert_eq!(n, header.len());
        assert_eq!(
            &encoded[..m],
            &data[..n],
            "a canonical header re-encodes as it was"
        );
    } else {
        assert!(m < n);
        assert_eq!(FrameHeader::parse(&encoded[..m]), Ok(Some((header, m))));
    }

    // §5.3: byte i of the payload is XORed with key[i % 4], wherever the
    // unmasking starts.
    if let Some(key) = header.mask {
        let payload = &data[n..];
        let offset = usize::from(data[0]);
        let mut fast = payload.to_vec();
        apply_mask(&mut fast, key, offset);
        let reference: Vec<u8> = payload
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[(i + offset) % 4])
            .collect();
        assert_eq!(fast, reference);
        apply_mask(&mut fast, key, offset);
        assert_eq!(fast, payload);
    }
});
