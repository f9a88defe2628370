//! The STOMP codec: parse and encode a chat client's SEND frame (5 headers, 100-byte body), and
//! the broker's MESSAGE fan-out (the shared tail once, a small head per subscriber).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sockeye_benches::fixtures::{
    stomp_body, stomp_options, stomp_send_frame, STOMP_SEND_HEADERS, STOMP_VERSION,
};
use sockeye_chat::stomp::{
    encode, encode_message_head, parse, Command, Limits, MessageTail, Status,
};
use std::hint::black_box;

mod common;

const SUBSCRIBERS: usize = 100;

fn stomp(c: &mut Criterion) {
    let frame = stomp_send_frame();
    let body = stomp_body();
    let opts = stomp_options();
    let limits = Limits::DEFAULT;
    let mut group = c.benchmark_group("stomp");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse/SEND", |b| {
        b.iter(|| match parse(black_box(&frame), &limits, STOMP_VERSION) {
            Ok(Status::Complete(f, n)) => (f.headers.len(), f.body.len(), n),
            other => panic!("{other:?}"),
        })
    });
    let mut out = Vec::with_capacity(512);
    group.bench_function("encode/SEND", |b| {
        b.iter(|| {
            out.clear();
            encode(
                Command::Send,
                black_box(STOMP_SEND_HEADERS),
                black_box(&body),
                opts,
                &mut out,
            )
            .expect("encodes");
        })
    });
    // The broker turns the SEND into a MESSAGE: the shared part is encoded once...
    let shared = [
        ("destination", "/topic/room.lobby"),
        ("content-type", "application/json;charset=utf-8"),
        ("x-client-msg-id", "7f3c2a9e-5b1d-4e8f-9a6c-2d4b8e1f0a37"),
    ];
    group.bench_function("message_tail", |b| {
        b.iter(|| MessageTail::encode(black_box(shared), black_box(&body), opts).expect("encodes"))
    });
    // ...and each subscriber gets its own head in front of a clone of the shared bytes.
    let tail = MessageTail::encode(shared, &body, opts).expect("encodes");
    group.bench_function("message_head", |b| {
        b.iter(|| {
            out.clear();
            encode_message_head(
                &tail,
                black_box("sub-17"),
                black_box("m-1042"),
                None,
                &mut out,
            )
            .expect("encodes");
        })
    });
    let ids: Vec<String> = (0..SUBSCRIBERS).map(|i| format!("sub-{i}")).collect();
    let mut heads = Vec::with_capacity(SUBSCRIBERS * 64);
    let mut tails = Vec::with_capacity(SUBSCRIBERS);
    group.throughput(Throughput::Elements(SUBSCRIBERS as u64));
    group.bench_function("fan-out/100-subscribers", |b| {
        b.iter(|| {
            heads.clear();
            tails.clear();
            for id in &ids {
                encode_message_head(&tail, id, "m-1042", Some("a-1042"), &mut heads)
                    .expect("encodes");
                tails.push(tail.bytes().clone());
            }
            black_box((&heads, &tails));
        })
    });
    // As the server's topic tables do: each head split off a `BytesMut` and frozen, kept
    // (queued to its subscriber) until the fan-out is over.
    let mut carved = bytes::BytesMut::new();
    let mut frozen = Vec::with_capacity(SUBSCRIBERS);
    group.bench_function("fan-out/100-subscribers/split-heads", |b| {
        b.iter(|| {
            frozen.clear();
            for id in &ids {
                encode_message_head(&tail, id, "m-1042", Some("a-1042"), &mut carved)
                    .expect("encodes");
                frozen.push((carved.split().freeze(), tail.bytes().clone()));
            }
            black_box(&frozen);
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::quick();
    targets = stomp
}
criterion_main!(benches);
