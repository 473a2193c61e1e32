//! Payload masking (RFC 6455 §5.3).
//!
//! Masking XORs the payload with a 4-byte key, cycling the key. It is applied
//! to every byte a client sends, so it sits on the hot path of every client
//! frame and of every frame a server reads. The fast path works eight bytes
//! at a time on `u64` words, which LLVM turns into SIMD where the target has
//! it; a scalar loop handles the unaligned head and tail.

/// XORs `buf` with the masking `key`, as if `buf` started at byte `offset`
/// of the frame payload.
///
/// The offset lets a payload that arrives in several reads be unmasked piece
/// by piece: the key index of byte `i` of the payload is `i % 4`.
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    // No AVX2 variant: compiled for AVX2 this loop measured no faster at
    // 1 KiB and 64 KiB (the XOR keeps up with the cache), so no `unsafe`.
    mask_words(buf, rotate(key, offset));
}

/// The fast path: eight bytes at a time on `u64` words (which LLVM
/// turns into SIMD where the target has it), a byte loop for the tail.
/// `key` is already rotated to the start of `buf`.
#[inline(always)]
fn mask_words(buf: &mut [u8], key: [u8; 4]) {
    let word = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(32);
    for chunk in &mut chunks {
        for lane in chunk.chunks_exact_mut(8) {
            let v = u64::from_ne_bytes(lane.try_into().expect("lane is 8 bytes")) ^ word;
            lane.copy_from_slice(&v.to_ne_bytes());
        }
    }
    // The tail starts at a multiple of 32, so the key is still aligned.
    let tail = chunks.into_remainder();
    let mut words = tail.chunks_exact_mut(8);
    for lane in &mut words {
        let v = u64::from_ne_bytes(lane.try_into().expect("lane is 8 bytes")) ^ word;
        lane.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in words.into_remainder().iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

/// The reference implementation, one byte at a time; the fast path must
/// agree with it. Only the tests and the benches use it.
#[cfg(any(test, feature = "bench-internals"))]
#[cfg_attr(not(feature = "bench-internals"), allow(unreachable_pub))]
pub fn apply_mask_scalar(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(i + offset) & 3];
    }
}

/// The key as seen from byte `offset` of the payload: `key[(i + offset) % 4]`
/// at index `i`. (A `u32` rotation: the slice `rotate_left` is a call to a
/// general algorithm, which showed in profiles of small messages.)
#[inline(always)]
fn rotate(key: [u8; 4], offset: usize) -> [u8; 4] {
    let shift = 8 * (offset & 3) as u32;
    u32::from_le_bytes(key).rotate_right(shift).to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc_example_hello() {
        // RFC 6455 §5.7: "Hello" masked with 37 fa 21 3d.
        let mut buf = *b"Hello";
        apply_mask(&mut buf, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(buf, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }

    #[test]
    fn masking_twice_is_identity() {
        let original: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mut buf = original.clone();
        apply_mask(&mut buf, [1, 2, 3, 4], 0);
        assert_ne!(buf, original);
        apply_mask(&mut buf, [1, 2, 3, 4], 0);
        assert_eq!(buf, original);
    }

    proptest! {
        #[test]
        fn fast_path_matches_scalar(data in proptest::collection::vec(any::<u8>(), 0..300),
                                    key in any::<[u8; 4]>(), offset in 0usize..8) {
            let mut fast = data.clone();
            let mut slow = data;
            apply_mask(&mut fast, key, offset);
            apply_mask_scalar(&mut slow, key, offset);
            prop_assert_eq!(fast, slow);
        }

        #[test]
        fn large_buffers_match_scalar(len in 0usize..3000, key in any::<[u8; 4]>(),
                                      offset in 0usize..4, seed in any::<u8>()) {
            // Every length through several 32-byte blocks, each offset.
            let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
            let mut fast = data.clone();
            let mut slow = data;
            apply_mask(&mut fast, key, offset);
            apply_mask_scalar(&mut slow, key, offset);
            prop_assert_eq!(fast, slow);
        }

        #[test]
        fn split_unmasking_matches_whole(data in proptest::collection::vec(any::<u8>(), 0..200),
                                         key in any::<[u8; 4]>(), split in 0usize..200) {
            let split = split.min(data.len());
            let mut whole = data.clone();
            apply_mask(&mut whole, key, 0);
            let mut parts = data;
            let (a, b) = parts.split_at_mut(split);
            apply_mask(a, key, 0);
            apply_mask(b, key, split);
            prop_assert_eq!(whole, parts);
        }
    }
}
