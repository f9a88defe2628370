//! Incremental UTF-8 validation of a 64 KiB text message, whole and in pieces, with
//! `std::str::from_utf8` on the whole text as the baseline in the same group.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sockeye::utf8::{Utf8Error, Utf8Validator};
use sockeye_benches::fixtures::{ascii_text, multibyte_text};
use std::hint::black_box;

mod common;

const LEN: usize = 64 << 10;

fn validate_in_pieces(text: &[u8], piece: usize) -> Result<(), Utf8Error> {
    let mut v = Utf8Validator::new();
    for chunk in text.chunks(piece) {
        v.feed(chunk)?;
    }
    v.finish()
}

fn utf8(c: &mut Criterion) {
    for (name, text) in [
        ("ascii", ascii_text(LEN)),
        ("multibyte", multibyte_text(LEN)),
    ] {
        let text = text.as_bytes();
        let mut group = c.benchmark_group(format!("utf8/{name}-64KiB"));
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function("std::str::from_utf8", |b| {
            b.iter(|| std::str::from_utf8(black_box(text)).is_ok())
        });
        group.bench_function("validator/whole", |b| {
            b.iter(|| validate_in_pieces(black_box(text), text.len()).is_ok())
        });
        group.bench_function("validator/1KiB-pieces", |b| {
            b.iter(|| validate_in_pieces(black_box(text), 1 << 10).is_ok())
        });
        group.bench_function("validator/7B-pieces", |b| {
            b.iter(|| validate_in_pieces(black_box(text), 7).is_ok())
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = common::quick();
    targets = utf8
}
criterion_main!(benches);
