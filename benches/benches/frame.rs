//! Frame header parse and encode, in each length form, masked (client to server) and not.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use sockeye::frame::FrameHeader;
use sockeye::Status;
use sockeye_benches::fixtures::frame_header;
use std::hint::black_box;

mod common;

/// Payload lengths that need the 7-bit, 16-bit and 64-bit length forms.
const LENGTHS: [(&str, u64); 3] = [("7bit", 100), ("16bit", 1000), ("64bit", 100_000)];

fn cases() -> impl Iterator<Item = (String, FrameHeader)> {
    LENGTHS.into_iter().flat_map(|(name, len)| {
        [false, true].into_iter().map(move |masked| {
            let label = format!("{name}/{}", if masked { "masked" } else { "unmasked" });
            (label, frame_header(len, masked))
        })
    })
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame/parse");
    for (label, header) in cases() {
        let (bytes, n) = header.encode();
        // As the connection sees it: the header followed by payload bytes.
        let mut input = bytes[..n].to_vec();
        input.resize(n + 64, 0xa5);
        group.bench_with_input(BenchmarkId::from_parameter(label), &input, |b, input| {
            b.iter(|| match FrameHeader::parse(black_box(input)) {
                Ok(Status::Complete(h, used)) => (h, used),
                other => panic!("{other:?}"),
            })
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame/encode");
    for (label, header) in cases() {
        group.bench_with_input(BenchmarkId::from_parameter(label), &header, |b, header| {
            b.iter(|| black_box(header).encode())
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::quick();
    targets = parse, encode
}
criterion_main!(benches);
