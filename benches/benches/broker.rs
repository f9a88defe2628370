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

/// Queue SEND, delivery and ACK from `threads` threads at once, each with its own producer,
/// consumer and queue, through one broker: every frame under the broker's mutex (what the
/// server did before the queues had shards of their own), or straight to the queue's shard
/// (`Broker::queues`, what the server's router does now). Only the second should scale with
/// threads: compare each variant's time per message at 2 threads with its own at 1.
fn threads(c: &mut Criterion) {
    use std::sync::{Arc, Mutex};

    let mut group = c.benchmark_group("broker-threads");
    group.throughput(Throughput::Elements(1));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for threads in [1, 2, 4].into_iter().filter(|&t| t == 1 || t <= cores) {
        for shards in [false, true] {
            let mut broker = Broker::new(BrokerConfig {
                max_send_rate: None,
                ..BrokerConfig::default()
            });
            let mut out = Vec::new();
            for t in 0..threads as u64 {
                let (consumer, producer) = (100 + 2 * t, 101 + 2 * t);
                for s in [consumer, producer] {
                    handle(
                        &mut broker,
                        s,
                        "CONNECT\naccept-version:1.2\nhost:x\n\n",
                        &mut out,
                    );
                }
                let subscribe =
                    format!("SUBSCRIBE\nid:q\ndestination:/queue/t{t}\nack:client-individual\n\n");
                handle(&mut broker, consumer, &subscribe, &mut out);
            }
            let queues = Arc::clone(broker.queues());
            let broker = Mutex::new(broker);
            let name = format!(
                "{}/{threads}-threads",
                if shards {
                    "queue-shards"
                } else {
                    "broker-lock"
                }
            );
            group.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    on_threads(
                        threads,
                        iters,
                        |t| {
                            let t = t as u64;
                            let destination = format!("/queue/t{t}");
                            let send = format!("SEND\ndestination:{destination}\n\nhello\0");
                            let ids = (100 + 2 * t, 101 + 2 * t);
                            (ids, destination, send, Vec::new(), VecDeque::new())
                        },
                        |((consumer, producer), destination, send, out, acks)| {
                            let (consumer, producer) = (*consumer, *producer);
                            out.clear();
                            let Ok(Status::Complete(frame, _)) =
                                parse(send.as_bytes(), &Limits::default(), Some(Version::V1_2))
                            else {
                                unreachable!()
                            };
                            if shards {
                                let body = frame.body.to_vec();
                                queues.publish(destination, Vec::new(), body, out);
                            } else {
                                let mut broker = broker.lock().unwrap();
                                broker.handle(producer, &frame, out);
                            }
                            acks_of_session(out, consumer, acks);
                            let ack = acks.pop_front().expect("the message delivered");
                            if shards {
                                queues.settle(consumer, &ack, false, out);
                            } else {
                                let text = format!("ACK\nid:{ack}\n\n\0");
                                let Ok(Status::Complete(frame, _)) =
                                    parse(text.as_bytes(), &Limits::default(), Some(Version::V1_2))
                                else {
                                    unreachable!()
                                };
                                broker.lock().unwrap().handle(consumer, &frame, out);
                            }
                            black_box(&out);
                        },
                    )
                })
            });
            assert_eq!(queues.unacked_count(), 0, "every message acknowledged");
        }
    }
    group.finish();
}

/// Runs `step` on `threads` threads started together, each `iters / threads` times (rounded
/// up) on its own state from `prepare` (made before the clock starts), and returns the time
/// `iters` steps took: the slowest thread's, scaled to `iters`.
fn on_threads<S: Send>(
    threads: usize,
    iters: u64,
    prepare: impl Fn(usize) -> S + Sync,
    step: impl Fn(&mut S) + Sync,
) -> std::time::Duration {
    use std::sync::Barrier;
    use std::time::{Duration, Instant};

    let each = iters.div_ceil(threads as u64);
    let start = Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (prepare, step, start) = (&prepare, &step, &start);
                scope.spawn(move || {
                    let mut state = prepare(t);
                    start.wait();
                    let began = Instant::now();
                    for _ in 0..each {
                        step(&mut state);
                    }
                    began.elapsed()
                })
            })
            .collect();
        start.wait();
        let longest = workers
            .into_iter()
            .map(|w| w.join().expect("bench thread"))
            .max()
            .unwrap_or(Duration::ZERO);
        longest.mul_f64(iters as f64 / (each * threads as u64) as f64)
    })
}

/// The `ack` header of every MESSAGE to `session`, in order.
fn acks_of_session(out: &[Action], session: SessionId, into: &mut VecDeque<String>) {
    for action in out {
        let Action::Send { to, frame } = action else {
            continue;
        };
        if *to != session {
            continue;
        }
        let head = String::from_utf8_lossy(&frame.head);
        if let Some(rest) = head.split("\nack:").nth(1) {
            into.push_back(rest.split('\n').next().unwrap_or("").to_owned());
        }
    }
}

/// Chat messages (a TALK in the session's own room) from `threads` threads at once, each in
/// its own room: through one mutex around the whole chat (what the chat application did
/// before its rooms had shards), or through the mutex of the room's shard (`Chat::split`, what
/// it does now). The domain's work alone (read the JSON, check the member, number, keep and
/// encode the message); the server publishes under the same lock, which only lengthens what
/// one lock serialises. Compare each variant at 2 threads with itself at 1.
fn chat_threads(c: &mut Criterion) {
    use std::sync::Mutex;

    use bytes::Bytes;
    use sockeye_chat::broker::AppMessage;
    use sockeye_chat::rooms::{shard_of, Chat, ChatConfig};

    const SHARDS: usize = 64;
    let message = |session: SessionId, destination: &str, body: String| AppMessage {
        session,
        user: None,
        destination: destination.into(),
        headers: Vec::new(),
        body: Bytes::from(body),
    };
    let mut group = c.benchmark_group("chat-threads");
    group.throughput(Throughput::Elements(1));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for threads in [1, 2, 4].into_iter().filter(|&t| t == 1 || t <= cores) {
        for sharded in [false, true] {
            let mut chat = Chat::new(ChatConfig::default());
            // One room per thread, each in a shard of its own.
            let mut rooms: Vec<String> = Vec::new();
            let mut used = std::collections::HashSet::new();
            let mut n = 0;
            while rooms.len() < threads {
                let (room, _) = chat.create_room(&format!("room {n}"), 1).expect("a room");
                n += 1;
                if used.insert(shard_of(&room.id, SHARDS)) {
                    rooms.push(room.id);
                }
            }
            for (t, room) in rooms.iter().enumerate() {
                let join =
                    format!("{{\"roomId\":\"{room}\",\"type\":\"JOIN\",\"sender\":\"u{t}\"}}");
                chat.handle_app(&message(t as SessionId, "/chat.join", join), 2);
            }
            let shards: Vec<Mutex<Chat>> = chat
                .split(if sharded { SHARDS } else { 1 })
                .into_iter()
                .map(Mutex::new)
                .collect();
            let name = format!(
                "{}/{threads}-threads",
                if sharded { "room-shards" } else { "one-lock" }
            );
            group.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    on_threads(
                        threads,
                        iters,
                        |t| {
                            let room = &rooms[t];
                            let body = format!(
                                "{{\"roomId\":\"{room}\",\"type\":\"TALK\",\"message\":\"hello\"}}"
                            );
                            let shard = &shards[shard_of(room, shards.len())];
                            (shard, message(t as SessionId, "/chat.send", body), 3)
                        },
                        |(shard, talk, now)| {
                            *now += 1;
                            let effects = shard.lock().unwrap().handle_app(talk, *now);
                            assert_eq!(effects.len(), 2, "a persist and a publish");
                            black_box(effects);
                        },
                    )
                })
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::quick();
    targets = broker, threads, chat_threads
}
criterion_main!(benches);
