//! Masking (RFC 6455 §5.3): the word-at-a-time fast path against the scalar
//! reference, at the sizes of a chat message, a typical payload and a large
//! frame.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use duplex_proto::apply_mask;
use duplex_proto::bench_internals::apply_mask_scalar;
use std::hint::black_box;

fn masking(c: &mut Criterion) {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut group = c.benchmark_group("mask");
    for size in [16usize, 1024, 64 << 10] {
        let mut buf = vec![0x5au8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("fast", size), &size, |b, _| {
            b.iter(|| apply_mask(black_box(&mut buf), black_box(key), 0));
        });
        group.bench_with_input(BenchmarkId::new("scalar", size), &size, |b, _| {
            b.iter(|| apply_mask_scalar(black_box(&mut buf), black_box(key), 0));
        });
    }
    group.finish();
}

criterion_group!(benches, masking);
criterion_main!(benches);
