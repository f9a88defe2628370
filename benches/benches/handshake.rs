//! The server side of the opening handshake for a realistic browser request: the whole answer
//! (parse, validate, pick the sub-protocol, write the 101 with its SHA-1 accept key) and each
//! step alone.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sockeye::handshake::{accept_key, parse_request, validate_upgrade, write_accept, MAX_HEADERS};
use sockeye::Status;
use sockeye_benches::fixtures::{answer_handshake, handshake_config, BROWSER_REQUEST};
use std::hint::black_box;

mod common;

const KEY: &[u8] = b"dGhlIHNhbXBsZSBub25jZQ==";

fn handshake(c: &mut Criterion) {
    let config = handshake_config();
    let mut group = c.benchmark_group("handshake");
    group.throughput(Throughput::Elements(1));
    let mut out = Vec::with_capacity(512);
    group.bench_function("answer", |b| {
        b.iter(|| {
            out.clear();
            answer_handshake(black_box(BROWSER_REQUEST), &config, &mut out)
                .expect("the request is accepted")
        })
    });
    group.bench_function("parse_request", |b| {
        b.iter(|| {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            match parse_request(black_box(BROWSER_REQUEST), &mut headers, &config) {
                Ok(Status::Complete(req, n)) => (req.headers.len(), n),
                other => panic!("{other:?}"),
            }
        })
    });
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let Ok(Status::Complete(request, _)) = parse_request(BROWSER_REQUEST, &mut headers, &config)
    else {
        panic!("the request parses");
    };
    group.bench_function("validate_upgrade", |b| {
        b.iter(|| validate_upgrade(black_box(&request), &config).expect("valid"))
    });
    group.bench_function("accept_key", |b| b.iter(|| accept_key(black_box(KEY))));
    group.bench_function("write_accept", |b| {
        b.iter(|| {
            out.clear();
            write_accept(&mut out, black_box(KEY), Some("v12.stomp"), &[]);
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::quick();
    targets = handshake
}
criterion_main!(benches);
