//! UTF-8 validation of text payloads (RFC 6455 §8.1): a whole message at
//! once, and the same message fed in pieces that split code points, as it
//! arrives from the network.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use duplex_proto::bench_internals::Utf8Validator;
use std::hint::black_box;

fn validation(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8");
    let inputs = [
        ("ascii", "hello, world ".repeat(5000)),
        ("mixed", "κόσμε €𝄞 hello ".repeat(2000)),
    ];
    for (name, text) in &inputs {
        let bytes = text.as_bytes();
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(BenchmarkId::new("whole", name), bytes, |b, bytes| {
            b.iter(|| {
                let mut v = Utf8Validator::new();
                v.feed(black_box(bytes)).unwrap();
                v.finish().unwrap();
            });
        });
        // 1000-byte pieces: most boundaries of the mixed text fall inside a
        // code point, so the carry-over path is exercised.
        group.bench_with_input(BenchmarkId::new("pieces", name), bytes, |b, bytes| {
            b.iter(|| {
                let mut v = Utf8Validator::new();
                for piece in black_box(bytes).chunks(1000) {
                    v.feed(piece).unwrap();
                }
                v.finish().unwrap();
            });
        });
    }
    group.finish();
}

criterion_group!(benches, validation);
criterion_main!(benches);
