//! A whole in-memory exchange through the sans-IO core: the client sends a batch of messages,
//! the server reads them in 256 KiB reads and echoes each, the client reads the echoes.
//! Reported as messages per second (each message counted once, there and back).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sockeye::DataKind;
use sockeye_benches::exchange::Exchange;
use std::hint::black_box;

mod common;

/// Name, kind, payload size and messages per batch (about 1 MiB or 1,000 messages a batch).
const CASES: [(&str, DataKind, usize, usize); 3] = [
    ("text-16B", DataKind::Text, 16, 1000),
    ("binary-1KiB", DataKind::Binary, 1 << 10, 1000),
    ("binary-64KiB", DataKind::Binary, 64 << 10, 16),
];

fn exchange(c: &mut Criterion) {
    let mut group = c.benchmark_group("exchange");
    for (name, kind, size, count) in CASES {
        let payload: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
        let mut ex = Exchange::new();
        group.throughput(Throughput::Elements(count as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let echoed = ex.round(kind, black_box(&payload), count);
                assert_eq!(echoed.messages, count);
                echoed
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::quick();
    targets = exchange
}
criterion_main!(benches);
