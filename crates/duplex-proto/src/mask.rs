//! Payload masking (RFC 6455 §5.3).
//!
//! Masking XORs the payload with a 4-byte key, cycling the key. It is applied
//! to every byte a client sends, so it sits on the hot path of every client
//! frame and of every frame a server reads: at 16 KiB it was most of the
//! server's own instructions per echoed message. On x86-64 a payload of
//! `SIMD_MIN` bytes or more goes through AVX-512 or AVX2, whichever the CPU
//! has (detected at run time; std caches the answer); everything else, and
//! every other target, through eight bytes at a time on `u64` words, which
//! LLVM turns into SSE2 where the target has it. A byte loop handles tails.

/// Payloads shorter than this skip the SIMD dispatch: the word loop is done
/// with them before a vector pays for its head and tail (a 20-byte chat
/// message must not pay for the feature check either).
const SIMD_MIN: usize = 128;

/// XORs `buf` with the masking `key`, as if `buf` started at byte `offset`
/// of the frame payload.
///
/// The offset lets a payload that arrives in several reads be unmasked piece
/// by piece: the key index of byte `i` of the payload is `i % 4`.
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let key = rotate(key, offset);
    #[cfg(target_arch = "x86_64")]
    if buf.len() >= SIMD_MIN {
        return x86::mask_large(buf, key);
    }
    mask_words(buf, key);
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

/// The vector paths. Each splits the buffer into an unaligned head, a run
/// of aligned vectors and a tail; the head and the tail go through
/// [`mask_words`], and the vectors use the key rotated past the head (the
/// run is a multiple of 4 bytes long, so the tail needs no further turn).
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{mask_words, rotate};
    use std::arch::x86_64::{
        __m256i, __m512i, _mm256_set1_epi32, _mm256_xor_si256, _mm512_set1_epi32, _mm512_xor_si512,
    };

    /// The best path this CPU has. Out of line, so that what a small
    /// payload's unmasking inlines into (the frame parser) stays small.
    #[inline(never)]
    pub(super) fn mask_large(buf: &mut [u8], key: [u8; 4]) {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, the one feature the function
            // is compiled for.
            return unsafe { mask_avx512(buf, key) };
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, the one feature the function is
            // compiled for.
            return unsafe { mask_avx2(buf, key) };
        }
        mask_words(buf, key);
    }

    /// Masks 32 bytes at a time with AVX2.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn mask_avx2(buf: &mut [u8], key: [u8; 4]) {
        // SAFETY: every bit pattern is a valid `__m256i` and a valid `u8`,
        // so viewing the aligned middle of the bytes as vectors (and
        // writing through that view) cannot produce an invalid value.
        let (head, vectors, tail) = unsafe { buf.align_to_mut::<__m256i>() };
        mask_words(head, key);
        let key = rotate(key, head.len());
        let k = _mm256_set1_epi32(i32::from_ne_bytes(key));
        // Four vectors a turn: the loop's own increment and branch would
        // otherwise cost as much as the XOR and the store.
        let mut quads = vectors.chunks_exact_mut(4);
        for q in &mut quads {
            q[0] = _mm256_xor_si256(q[0], k);
            q[1] = _mm256_xor_si256(q[1], k);
            q[2] = _mm256_xor_si256(q[2], k);
            q[3] = _mm256_xor_si256(q[3], k);
        }
        for v in quads.into_remainder() {
            *v = _mm256_xor_si256(*v, k);
        }
        mask_words(tail, key);
    }

    /// Masks 64 bytes at a time with AVX-512F.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn mask_avx512(buf: &mut [u8], key: [u8; 4]) {
        // SAFETY: as in `mask_avx2`: any bits are a valid `__m512i` and
        // valid bytes.
        let (head, vectors, tail) = unsafe { buf.align_to_mut::<__m512i>() };
        mask_words(head, key);
        let key = rotate(key, head.len());
        let k = _mm512_set1_epi32(i32::from_ne_bytes(key));
        // Four vectors a turn: the loop's own increment and branch would
        // otherwise cost as much as the XOR and the store.
        let mut quads = vectors.chunks_exact_mut(4);
        for q in &mut quads {
            q[0] = _mm512_xor_si512(q[0], k);
            q[1] = _mm512_xor_si512(q[1], k);
            q[2] = _mm512_xor_si512(q[2], k);
            q[3] = _mm512_xor_si512(q[3], k);
        }
        for v in quads.into_remainder() {
            *v = _mm512_xor_si512(*v, k);
        }
        mask_words(tail, key);
    }
}

/// The word loop alone, without the SIMD dispatch: what [`apply_mask`] was
/// before it had vector paths, for the benches to compare against.
#[cfg(feature = "bench-internals")]
pub fn apply_mask_words(buf: &mut [u8], key: [u8; 4], offset: usize) {
    mask_words(buf, rotate(key, offset));
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

    /// A masking path under test, by name.
    type Path = (&'static str, Box<dyn Fn(&mut [u8])>);

    /// Masks `data[start..]` with every path this CPU can run, whichever
    /// the dispatch would pick, and checks each against the reference.
    fn check_every_path(data: &[u8], start: usize, key: [u8; 4], offset: usize) {
        let mut expected = data.to_vec();
        apply_mask_scalar(&mut expected[start..], key, offset);
        let mut paths: Vec<Path> = vec![
            ("dispatch", Box::new(move |b| apply_mask(b, key, offset))),
            (
                "words",
                Box::new(move |b| mask_words(b, rotate(key, offset))),
            ),
        ];
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2.
                let f = move |b: &mut [u8]| unsafe { x86::mask_avx2(b, rotate(key, offset)) };
                paths.push(("avx2", Box::new(f)));
            }
            if std::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F.
                let f = move |b: &mut [u8]| unsafe { x86::mask_avx512(b, rotate(key, offset)) };
                paths.push(("avx512", Box::new(f)));
            }
        }
        for (name, f) in paths {
            let mut got = data.to_vec();
            f(&mut got[start..]);
            assert_eq!(
                got,
                expected,
                "{name}: len {} start {start} offset {offset}",
                data.len()
            );
        }
    }

    #[test]
    fn every_path_at_every_alignment_and_offset() {
        // Lengths around the dispatch threshold and the vector widths, every
        // start within a cache line, every key offset: each head, run and
        // tail shape the vector paths can cut.
        // Under Miri (slow), fewer lengths and starts, still every shape.
        let data: Vec<u8> = (0..700u32).map(|i| (i * 7 + 3) as u8).collect();
        let (lens, starts): (&[usize], usize) = if cfg!(miri) {
            (&[0, 3, 127, 128, 200], 8)
        } else {
            (
                &[
                    0, 1, 3, 31, 32, 63, 64, 65, 127, 128, 129, 191, 255, 256, 257, 300, 600,
                ],
                64,
            )
        };
        for &len in lens {
            for start in 0..starts {
                for offset in 0..5 {
                    check_every_path(
                        &data[..start + len],
                        start,
                        [0x37, 0xfa, 0x21, 0x3d],
                        offset,
                    );
                }
            }
        }
    }

    proptest! {
        #[test]
        fn every_path_matches_scalar(data in proptest::collection::vec(any::<u8>(), 0..5000),
                                     start in 0usize..64, key in any::<[u8; 4]>(),
                                     offset in any::<usize>()) {
            let start = start.min(data.len());
            check_every_path(&data, start, key, offset);
        }

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
