//! Topic subscriptions per worker: each worker thread owns the topic subscriptions of its own
//! sessions ([`TopicTable`]), and a publish reaches every worker as one task.
//!
//! * SUBSCRIBE / UNSUBSCRIBE to a topic: the broker checks the frame (under its lock, once per
//!   subscription) and answers [`Action::TopicSubscribe`] / [`Action::TopicUnsubscribe`],
//!   which the session's own worker applies to its table: no other thread ever touches it.
//! * A publish ([`Action::Publish`], one [`Published`] behind an `Arc`) is posted as one task
//!   to every worker that has topic subscriptions ([`Workers::post`]); each matches it against
//!   its own table and writes to its sessions directly ([`TaskOut`]). The session that
//!   published gets its own copies the same way, and its replies after a publish (the
//!   RECEIPT) are queued behind them: a MESSAGE to itself still comes before the RECEIPT of
//!   the SEND, and nothing it receives overtakes what others published before.
//! * Order: a task travels through the worker's inbox like any post, so what one session
//!   publishes reaches every subscriber in the order it was sent.
//! * Backpressure: posting passes the inbox's gate (a publisher feeding a worker that is
//!   behind pauses); a subscriber over its cap meets the slow-consumer policy on its own
//!   worker (`on_overflow`); a task refused by a full inbox is replaced by a small
//!   [`ShardTask::Lost`] that applies the policy to every subscriber that missed it: never
//!   lost silently. The throttle policy is not served here: it needs the publisher to pass
//!   every subscriber's gate as it publishes, so under it the broker keeps every
//!   subscription (see `Hub::new`).
//!
//! What remains shared on this path: one atomic load per worker per publish (does it have
//! topic subscriptions at all?), the inbox mutex of each worker posted to (held for a push),
//! and the `Arc` count of the message.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use sockeye::server::{PostError, SessionHandle, TaskOut, Workers};
use sockeye::DataKind;
use tracing::{debug, warn};

use super::metrics::{self, Counter};
use super::Hub;
use crate::broker::topics::{Published, TopicSub, TopicTable};
use crate::broker::{AckMode, BrokerEvent, SessionId};
use crate::stomp::Version;

thread_local! {
    /// The table of the worker running on this thread (each worker thread serves one hub).
    static SHARD: RefCell<TopicTable<SessionHandle>> = RefCell::default();
}

/// What a worker is asked to do with its table.
pub(super) enum ShardTask {
    /// Deliver to the matching subscriptions.
    Publish { message: Arc<Published> },
    /// A publish to `destination` could not be posted here: the subscribers missed it.
    Lost { destination: String },
}

/// The workers, and how many topic subscriptions each holds.
pub(super) struct Shards {
    workers: Workers,
    counts: Box<[AtomicUsize]>,
}

impl Shards {
    pub(super) fn new(workers: Workers) -> Self {
        let counts = (0..workers.len()).map(|_| AtomicUsize::new(0)).collect();
        Shards { workers, counts }
    }

    /// Topic subscriptions on every worker.
    pub(super) fn subscriptions(&self) -> usize {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

fn kind_of(message: &Published) -> DataKind {
    if message.utf8 {
        DataKind::Text
    } else {
        DataKind::Binary
    }
}

impl Hub {
    /// Adds a topic subscription of `to` (a session of this worker) to this worker's table;
    /// its key there, for the session's link to keep.
    pub(super) fn topic_subscribe(
        &self,
        to: SessionId,
        id: String,
        target: String,
        version: Version,
        ack: AckMode,
    ) -> Option<u32> {
        let handle = self
            .peers
            .read()
            .ok()
            .and_then(|p| p.get(&to).map(|p| p.handle.clone()))?;
        let key = SHARD.with(|table| {
            table.borrow_mut().insert(TopicSub {
                session: to,
                to: handle,
                id: id.into(),
                target: target.into(),
                version,
                ack,
            })
        });
        self.count_topics(1, true);
        u32::try_from(key).ok()
    }

    /// Where among a session's topic subscription `keys` the one with `id` is.
    pub(super) fn find_topic(&self, keys: &[u32], id: &str) -> Option<usize> {
        SHARD.with(|table| {
            let table = table.borrow();
            keys.iter()
                .position(|&k| table.get(k as usize).is_some_and(|s| &*s.id == id))
        })
    }

    /// Takes the topic subscription `key` out of this worker's table: the event to report.
    pub(super) fn topic_unsubscribe(&self, key: u32, user: Option<String>) -> Option<BrokerEvent> {
        let removed = SHARD.with(|table| table.borrow_mut().remove(key as usize))?;
        self.count_topics(1, false);
        Some(BrokerEvent::Unsubscribed {
            session: removed.session,
            user,
            destination: removed.target.to_string(),
            id: removed.id.into(),
        })
    }

    fn count_topics(&self, n: usize, up: bool) {
        let (Some(shards), Some(index)) = (self.shards.get(), Workers::current()) else {
            return;
        };
        if let Some(count) = shards.counts.get(index) {
            match up {
                true => count.fetch_add(n, Ordering::Relaxed),
                false => count.fetch_sub(n, Ordering::Relaxed),
            };
        }
    }

    /// Delivers a topic message: one task to every worker with topic subscriptions, the
    /// publisher's own worker included. The publisher's own copies travel that way too, so
    /// that every subscriber, the publisher among them, gets messages in the order the
    /// workers' inboxes took them (a copy written at once would overtake what other sessions
    /// published earlier and is still in the inbox); the caller queues the publisher's reply
    /// (its RECEIPT) behind them (see `Hub::execute`).
    pub(super) fn publish_topic(&self, message: Arc<Published>) {
        let Some(shards) = self.shards.get() else {
            return;
        };
        let cost = message.body.len() + message.destination.len();
        for (index, count) in shards.counts.iter().enumerate() {
            if count.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let task = ShardTask::Publish {
                message: message.clone(),
            };
            match shards.workers.post(index, Box::new(task), cost) {
                Ok(()) => {}
                Err(PostError::Full) => {
                    warn!(
                        worker = index,
                        destination = %message.destination,
                        "a publish could not be queued for a worker (its inbox is full): \
                         its subscribers are told"
                    );
                    let lost = ShardTask::Lost {
                        destination: message.destination.clone(),
                    };
                    let _ = shards.workers.post_control(index, Box::new(lost));
                }
                Err(PostError::Stopped) => debug!(worker = index, "not posted: stopped"),
            }
        }
    }

    /// A task posted to this worker (on its thread).
    pub(super) fn run_task(&self, task: ShardTask, out: &mut TaskOut<'_>) {
        match task {
            ShardTask::Publish { message } => SHARD.with(|table| {
                let kind = kind_of(&message);
                table.borrow_mut().deliver(
                    &message,
                    |_| true,
                    |sub, head, tail| {
                        metrics::bump(Counter::FramesOut);
                        metrics::bump(Counter::Deliveries);
                        metrics::add(Counter::BytesOut, (head.len() + tail.len()) as u64);
                        let _ = out.send_parts(&sub.to, kind, head, tail, true);
                    },
                );
            }),
            ShardTask::Lost { destination } => {
                let missed: Vec<SessionId> = SHARD.with(|table| {
                    let table = table.borrow();
                    let mut ids: Vec<SessionId> = table
                        .matching(&destination)
                        .filter_map(|k| table.get(k).map(|s| s.session))
                        .collect();
                    ids.sort_unstable();
                    ids.dedup();
                    ids
                });
                let Ok(peers) = self.peers.read() else { return };
                for id in missed {
                    if let Some(peer) = peers.get(&id) {
                        self.lost(id, peer);
                    }
                }
            }
        }
    }
}
