//! The in-memory broker's queue path (through `Broker::handle`, which locks the queue's shard;
//! the server reaches the same shard without the broker's lock): one message SENT to
//! a queue, delivered to a `client-individual` subscriber and ACKed, with the subscriber
//! holding 1,000 unacknowledged messages (its limit) — the steady state of a consumer that
//! acknowledges as it goes. Two shapes: the ACK names the subscription's oldest message; and
//! the same on the session's second subscription while its first holds 1,000 of its own.

use std::collections::VecDeque;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sockeye_chat::broker::{Action, Broker, BrokerConfig, SessionId};
use sockeye_chat::stomp::{parse, Limits, Status, Version};

mod common;

const CONSUMER: SessionId = 1;
const PRODUCER: SessionId = 2;
const UNACKED: usize = 1000;

fn handle(broker: &mut Broker, session: SessionId, text: &str, out: &mut Vec<Action>) {
    let bytes = format!("{text}\0").into_bytes();
    let Ok(Status::Complete(frame, _)) = parse(&bytes, &Limits::default(), Some(Version::V1_2))
    else {
        panic!("bad frame {text:?}");
    };
    broker.handle(session, &frame, out);
}

/// The `ack` header of every MESSAGE to the consumer on subscription `sub`, in order.
fn acks_of(out: &[Action], sub: &str, into: &mut VecDeque<String>) {
    let wanted = format!("\nsubscription:{sub}\n");
    for action in out {
        let Action::Send {
            to: CONSUMER,
            frame,
        } = action
        else {
            continue;
        };
        let head = String::from_utf8_lossy(&frame.head);
        if !head.contains(&wanted) {
            continue;
        }
        if let Some(rest) = head.split("\nack:").nth(1) {
            into.push_back(rest.split('\n').next().unwrap_or("").to_owned());
        }
    }
}

/// A broker whose consumer holds `UNACKED` messages on `/queue/q` (subscription `q`), and as
/// many on `/queue/other` (subscription `other`, never acknowledged) when `second`.
fn setup(second: bool) -> (Broker, VecDeque<String>) {
    let mut broker = Broker::new(BrokerConfig {
        max_unacked: UNACKED,
        max_send_rate: None,
        ..BrokerConfig::default()
    });
    let mut out = Vec::new();
    for s in [CONSUMER, PRODUCER] {
        handle(
            &mut broker,
            s,
            "CONNECT\naccept-version:1.2\nhost:x\n\n",
            &mut out,
        );
    }
    if second {
        handle(
            &mut broker,
            CONSUMER,
            "SUBSCRIBE\nid:other\ndestination:/queue/other\nack:client-individual\n\n",
            &mut out,
        );
        for i in 0..UNACKED {
            handle(
                &mut broker,
                PRODUCER,
                &format!("SEND\ndestination:/queue/other\n\n{i}"),
                &mut out,
            );
        }
    }
    handle(
        &mut broker,
        CONSUMER,
        "SUBSCRIBE\nid:q\ndestination:/queue/q\nack:client-individual\n\n",
        &mut out,
    );
    out.clear();
    let mut acks = VecDeque::new();
    for i in 0..UNACKED {
        handle(
            &mut broker,
            PRODUCER,
            &format!("SEND\ndestination:/queue/q\n\n{i}"),
            &mut out,
        );
    }
    acks_of(&out, "q", &mut acks);
    assert_eq!(acks.len(), UNACKED);
    (broker, acks)
}

fn broker(c: &mut Criterion) {
    let mut group = c.benchmark_group("broker");
    group.throughput(Throughput::Elements(1));
    for (name, second) in [
        ("queue/send-deliver-ack-1000-unacked", false),
        ("queue/send-deliver-ack-second-subscription", true),
    ] {
        let (mut broker, mut acks) = setup(second);
        let mut out = Vec::new();
        let send = "SEND\ndestination:/queue/q\n\nhello".to_owned();
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                let ack = acks.pop_front().expect("an unacknowledged message");
                handle(
                    &mut broker,
                    CONSUMER,
                    &format!("ACK\nid:{ack}\n\n"),
                    &mut out,
                );
                handle(&mut broker, PRODUCER, &send, &mut out);
                acks_of(&out, "q", &mut acks);
                black_box(&out);
            })
        });
        assert_eq!(acks.len(), UNACKED, "{name}: one delivered per ACK");
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::quick();
    targets = broker
}
criterion_main!(benches);
