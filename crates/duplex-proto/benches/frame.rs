//! Frame headers (RFC 6455 §5.2) parsed and encoded in each length form, and
//! a whole `Connection` parsing a buffer of 1000 small masked frames, the
//! server's work per read under load (header, unmask, UTF-8, event).

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use duplex_proto::{
    Connection, Event, FrameHeader, Limits, MAX_HEADER_LEN, OpCode, Role, apply_mask,
};
use std::hint::black_box;

fn headers(c: &mut Criterion) {
    let mut group = c.benchmark_group("header");
    for len in [20usize, 1024, 1 << 20] {
        let header = FrameHeader::new(OpCode::Binary, len, Some([1, 2, 3, 4]));
        let mut wire = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut wire);
        group.bench_with_input(BenchmarkId::new("parse", len), &wire[..n], |b, wire| {
            b.iter(|| FrameHeader::parse(black_box(wire)).unwrap());
        });
        group.bench_with_input(BenchmarkId::new("encode", len), &header, |b, header| {
            b.iter(|| {
                let mut out = [0u8; MAX_HEADER_LEN];
                black_box(header).encode(&mut out)
            });
        });
    }
    group.finish();
}

/// `count` masked client frames of `size` bytes, back to back.
fn client_frames(count: usize, size: usize, text: bool) -> Vec<u8> {
    let opcode = if text { OpCode::Text } else { OpCode::Binary };
    let mut out = Vec::new();
    for i in 0..count {
        let key = (i as u32).wrapping_mul(0x9e37_79b9).to_ne_bytes();
        FrameHeader::new(opcode, size, Some(key)).write(&mut out);
        let start = out.len();
        out.extend((0..size).map(|j| b'a' + (j % 26) as u8));
        apply_mask(&mut out[start..], key, 0);
    }
    out
}

fn connection(c: &mut Criterion) {
    let mut group = c.benchmark_group("connection");
    for (name, size, text) in [("binary_20B", 20, false), ("text_20B", 20, true)] {
        let bytes = client_frames(1000, size, text);
        group.throughput(Throughput::Elements(1000));
        group.bench_with_input(BenchmarkId::new("parse_1000", name), &bytes, |b, bytes| {
            let mut server = Connection::new(Role::Server, Limits::default());
            b.iter(|| {
                server.receive_data(black_box(bytes));
                let mut n = 0;
                while let Some(event) = server.next_event() {
                    if let Ok(Event::Message(m)) = event {
                        n += m.len();
                    }
                }
                assert_eq!(n, 1000 * size);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, headers, connection);
criterion_main!(benches);
