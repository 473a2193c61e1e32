//! Fan-out with permessage-deflate: one message sent to 100 server
//! connections, each compressing it for itself (context takeover, the
//! default; and without it, the compressor built anew for each message) or
//! all sharing one compression through a `Broadcast`.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use duplex_proto::extensions::{Deflate, DeflateParams};
use duplex_proto::{Broadcast, Connection, Limits, Message, Role};
use std::hint::black_box;

const SUBSCRIBERS: usize = 100;

fn connections(no_context_takeover: bool) -> Vec<Connection> {
    let params = DeflateParams {
        server_no_context_takeover: no_context_takeover,
        ..DeflateParams::default()
    };
    (0..SUBSCRIBERS)
        .map(|_| {
            Connection::new(Role::Server, Limits::default()).with_deflate(Some(Deflate::new(
                Role::Server,
                params,
                6,
                0,
            )))
        })
        .collect()
}

/// A JSON-ish price update of about `size` bytes.
fn update(size: usize) -> Message {
    let mut s = String::from("[");
    let mut i = 0u32;
    while s.len() < size {
        s.push_str(&format!(
            "{{\"symbol\":\"S{}\",\"bid\":{}.{:02},\"ask\":{}.{:02}}},",
            i % 500,
            100 + i * 7 % 50,
            i * 13 % 100,
            101 + i * 7 % 50,
            i * 17 % 100
        ));
        i += 1;
    }
    s.truncate(size);
    Message::text(s)
}

/// Writes out (drops) everything queued, as a socket would take it.
fn drain(conn: &mut Connection) {
    let n = conn.pending_output_len();
    conn.advance_output(n);
}

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("fan-out to 100");
    for size in [1024usize, 16 << 10] {
        let message = update(size);
        group.throughput(Throughput::Elements(SUBSCRIBERS as u64));
        for (name, no_context_takeover) in [
            ("each, context takeover", false),
            ("each, no context takeover", true),
        ] {
            let mut conns = connections(no_context_takeover);
            group.bench_with_input(BenchmarkId::new(name, size), &message, |b, message| {
                b.iter(|| {
                    for conn in &mut conns {
                        conn.send(black_box(message)).unwrap();
                        drain(conn);
                    }
                });
            });
        }
        let mut conns = connections(true);
        group.bench_with_input(
            BenchmarkId::new("one Broadcast", size),
            &message,
            |b, message| {
                b.iter(|| {
                    let broadcast = Broadcast::new(black_box(message).clone());
                    for conn in &mut conns {
                        conn.send_broadcast(&broadcast).unwrap();
                        drain(conn);
                    }
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, fan_out);
criterion_main!(benches);
