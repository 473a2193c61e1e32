//! Masking (RFC 6455 §5.3): the dispatching fast path (AVX-512 or AVX2 where
//! the CPU has it) against the word loop it falls back to and the scalar
//! reference, at the sizes of a chat message, a typical payload, the 16 KiB
//! and 1 MiB messages of the echo benchmark, and a frame that misses L2.
//! `offset` 1 and a buffer that starts one byte past an alignment boundary
//! time the unaligned head and the rotated key too.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use duplex_proto::apply_mask;
use duplex_proto::bench_internals::{apply_mask_scalar, apply_mask_words};
use std::hint::black_box;

fn masking(c: &mut Criterion) {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut group = c.benchmark_group("mask");
    for size in [16usize, 1024, 16 << 10, 64 << 10, 1 << 20] {
        // One byte past the allocation's (16-byte or better) alignment.
        let mut storage = vec![0x5au8; size + 1];
        let buf = &mut storage[1..];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("fast", size), &size, |b, _| {
            b.iter(|| apply_mask(black_box(&mut *buf), black_box(key), 1));
        });
        group.bench_with_input(BenchmarkId::new("words", size), &size, |b, _| {
            b.iter(|| apply_mask_words(black_box(&mut *buf), black_box(key), 1));
        });
        if size <= 64 << 10 {
            group.bench_with_input(BenchmarkId::new("scalar", size), &size, |b, _| {
                b.iter(|| apply_mask_scalar(black_box(&mut *buf), black_box(key), 1));
            });
        }
    }
    group.finish();
}

criterion_group!(benches, masking);
criterion_main!(benches);
