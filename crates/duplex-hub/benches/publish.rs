//! What a publish costs, in memory (no backplane), with one topic in
//! existence and with 100,000 others that each retain a message: a publish
//! touches only its own topic, so both should cost the same.
//!
//! `cargo bench -p duplex-hub --bench publish`

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use duplex_hub::{Hub, HubConfig};
use duplex_ws::Message;

fn publish(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("publish");
    for others in [0usize, 100_000] {
        let hub = Hub::new(HubConfig::default().max_topics(others + 10));
        runtime.block_on(async {
            for i in 0..others {
                hub.publish(&format!("idle-{i}"), Message::text("x"))
                    .await
                    .unwrap();
            }
        });
        let message = Message::text("{\"price\":101.25}");
        group.bench_with_input(
            BenchmarkId::new("topics in existence", others + 1),
            &others,
            |b, _| {
                b.iter(|| {
                    runtime
                        .block_on(hub.publish("news", message.clone()))
                        .unwrap()
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, publish);
criterion_main!(benches);
