//! Payload masking in place: the word-at-a-time `apply_mask` against the byte-at-a-time
//! `apply_mask_bytewise` reference, as throughput, so their ratio shows in one run.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sockeye::frame::{apply_mask, apply_mask_bytewise};
use std::hint::black_box;

mod common;

const SIZES: [(&str, usize); 4] = [
    ("16B", 16),
    ("1KiB", 1 << 10),
    ("64KiB", 64 << 10),
    ("1MiB", 1 << 20),
];

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn mask(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask");
    for (label, size) in SIZES {
        let mut buf: Vec<u8> = (0..size).map(|i| (i * 7 + 3) as u8).collect();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("apply_mask", label), |b| {
            // Masking twice restores the input, so repeating in place stays well defined.
            b.iter(|| apply_mask(black_box(&mut buf), black_box(KEY), 0))
        });
        group.bench_function(BenchmarkId::new("bytewise", label), |b| {
            b.iter(|| apply_mask_bytewise(black_box(&mut buf), black_box(KEY), 0))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::quick();
    targets = mask
}
criterion_main!(benches);
