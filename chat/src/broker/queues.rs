//! Queue destinations (`/queue/...`) of the embedded broker, in [`SHARDS`] locked shards: the
//! subscriptions to a queue, its round-robin turn, the messages it holds for want of a
//! subscriber and those delivered and not yet acknowledged all live in the shard its name
//! hashes to, so a SEND to a queue, its delivery and its ACK or NACK lock that one shard, not
//! the broker (see `crate::server::router`, which calls in here without the broker's lock).
//!
//! * A subscription to one queue has one *part*, in that queue's shard; a pattern
//!   (`/queue/jobs.*`) has a part in every shard. Parts of one subscription share their
//!   unacknowledged count (the per-subscription limit holds over all of them) and a delivery
//!   sequence (a cumulative `client` ACK settles, in every shard, what was delivered before the
//!   message it names).
//! * A queue message's id names where it is pending: `{n}-q{shard}.{part}`, used as both its
//!   `message-id` and its `ack` header, so an ACK or NACK (1.2 by `id`, 1.0 and 1.1 by
//!   `message-id`) goes straight to its shard and part, and only the session the part belongs
//!   to can settle it.
//! * Never two shard locks at once: work that spans shards (a pattern subscription, a session
//!   closing, a cumulative ACK of a pattern subscription) takes them one after the other. A
//!   caller may hold the broker's lock while it calls in here, never the other way round.
//!
//! Sessions' subscription lists (for UNSUBSCRIBE, duplicate ids and closing) stay with the
//! broker; this module keeps what a SEND and an ACK need.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::BytesMut;

use super::routing::message_tail;
use super::topics::next_message_id;
use super::{destination, AckMode, Action, OutFrame, SessionId, Stored};
use crate::stomp::{encode_message_head, Version};

/// Shards of the queue table: enough that sessions working different queues rarely meet on
/// one lock; a pattern subscription costs a part in each.
pub const SHARDS: usize = 64;

/// The queues of one broker.
pub struct Queues {
    shards: Box<[Mutex<Shard>]>,
    max_held: usize,
    max_unacked: usize,
    /// Messages held in every shard, and those dropped from full queues since the start.
    held: AtomicUsize,
    dropped: AtomicU64,
}

impl std::fmt::Debug for Queues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queues")
            .field("held", &self.held_count())
            .finish()
    }
}

/// A session's subscription to a queue or queue pattern: where its parts are.
#[derive(Debug)]
pub(crate) struct QueueSub {
    parts: Box<[(u16, u32)]>,
}

#[derive(Default)]
struct Shard {
    parts: slab::Slab<Part>,
    /// Queue name → parts subscribed to exactly it, and that queue's round-robin turn.
    exact: HashMap<String, Subscribers>,
    /// Parts of pattern subscriptions (every one has a part in every shard).
    patterns: Vec<usize>,
    /// The turn for queues only patterns match (so that the table of turns does not grow
    /// with every queue name sent to).
    pattern_turn: usize,
    held: HashMap<String, VecDeque<Stored>>,
    /// Queues that dropped a held message since they were last empty (warned of once).
    overflowing: HashSet<String>,
}

#[derive(Default)]
struct Subscribers {
    parts: Vec<usize>,
    turn: usize,
}

struct Part {
    session: SessionId,
    id: Arc<str>,
    target: Arc<str>,
    ack: AckMode,
    version: Version,
    pending: VecDeque<Unacked>,
    shared: Arc<Shared>,
}

/// What the parts of one subscription share.
#[derive(Default)]
struct Shared {
    /// Messages delivered and not yet settled, over all parts.
    unacked: AtomicUsize,
    /// The next delivery's number (for a cumulative ACK over parts).
    seq: AtomicU64,
    /// Every part, for a pattern subscription (set once they are all in place).
    parts: OnceLock<Box<[(u16, u32)]>>,
}

/// A queue message delivered and awaiting its ACK.
struct Unacked {
    id: String,
    seq: u64,
    /// Its queue is `message.destination`.
    message: Stored,
}

/// The shard of `queue` (FNV-1a: fixed from run to run, so a fuzz case replays the same).
fn shard_of(queue: &str) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in queue.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h % SHARDS as u64) as usize
}

/// The shard and part a queue message's id names (`{n}-q{shard}.{part}`).
fn locate(id: &str) -> Option<(usize, usize)> {
    let (_, place) = id.rsplit_once("-q")?;
    let (shard, part) = place.split_once('.')?;
    let shard: usize = shard.parse().ok()?;
    (shard < SHARDS).then_some((shard, part.parse().ok()?))
}

/// One MESSAGE frame for one subscriber, `id` its `message-id` and (when the subscription
/// acknowledges, in 1.2) its `ack`. `tracked`: the message awaits that ACK.
pub(super) fn message_frame(
    stored: &Stored,
    version: Version,
    subscription: &str,
    id: &str,
    ack: AckMode,
    tracked: bool,
) -> Option<OutFrame> {
    let tail = message_tail(stored, version)?;
    let ack_header = match (ack, version) {
        (AckMode::Auto, _) | (_, Version::V1_0 | Version::V1_1) => None,
        _ => Some(id),
    };
    let mut head = BytesMut::new();
    encode_message_head(&tail, subscription, id, ack_header, &mut head).ok()?;
    Some(OutFrame {
        head: head.freeze(),
        tail: Some(tail.bytes().clone()),
        utf8: std::str::from_utf8(&stored.body).is_ok(),
        // A message awaiting an ACK is never dropped: the unacknowledged limit bounds it,
        // and dropping it would leave it pending for ever.
        bounded: !tracked || ack == AckMode::Auto,
    })
}

impl Queues {
    /// `max_held`: messages a queue holds while nobody can take them (past it the oldest is
    /// dropped and counted); `max_unacked`: unacknowledged messages per subscription before
    /// it is skipped.
    pub fn new(max_held: usize, max_unacked: usize) -> Self {
        Queues {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            max_held,
            max_unacked,
            held: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        self.shards[shard].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Messages held now for want of a subscriber that can take them.
    pub fn held_count(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Held messages dropped (the oldest of a full queue) since the start.
    pub fn held_dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Queues with subscribers or held messages, plus queue patterns subscribed (locks every
    /// shard in turn: for metrics).
    pub fn destination_count(&self) -> usize {
        (0..SHARDS)
            .map(|s| {
                let shard = self.lock(s);
                let patterns = if s == 0 { shard.patterns.len() } else { 0 };
                let held_only = shard
                    .held
                    .keys()
                    .filter(|q| !shard.exact.contains_key(*q))
                    .count();
                shard.exact.len() + held_only + patterns
            })
            .sum()
    }

    /// Messages delivered and awaiting an ACK, over every subscription (locks every shard
    /// in turn).
    pub fn unacked_count(&self) -> usize {
        (0..SHARDS)
            .map(|s| {
                self.lock(s)
                    .parts
                    .iter()
                    .map(|(_, p)| p.pending.len())
                    .sum::<usize>()
            })
            .sum()
    }

    /// A subscription of `session` to `target` (a queue or a queue pattern); held messages
    /// it can take are delivered at once.
    pub(crate) fn subscribe(
        &self,
        session: SessionId,
        id: &str,
        target: &str,
        ack: AckMode,
        version: Version,
        out: &mut Vec<Action>,
    ) -> QueueSub {
        let shared = Arc::new(Shared::default());
        let (id, target): (Arc<str>, Arc<str>) = (id.into(), target.into());
        let part = || Part {
            session,
            id: Arc::clone(&id),
            target: Arc::clone(&target),
            ack,
            version,
            pending: VecDeque::new(),
            shared: Arc::clone(&shared),
        };
        if !destination::is_pattern(&target) {
            let s = shard_of(&target);
            let mut shard = self.lock(s);
            let key = shard.parts.insert(part());
            let subscribers = shard.exact.entry(target.to_string()).or_default();
            subscribers.parts.push(key);
            self.drain(&mut shard, s, key, out);
            return QueueSub {
                parts: Box::new([(s as u16, key as u32)]),
            };
        }
        let mut parts = Vec::with_capacity(SHARDS);
        for s in 0..SHARDS {
            let mut shard = self.lock(s);
            let key = shard.parts.insert(part());
            shard.patterns.push(key);
            parts.push((s as u16, key as u32));
            self.drain(&mut shard, s, key, out);
        }
        let parts: Box<[(u16, u32)]> = parts.into();
        let _ = shared.parts.set(parts.clone());
        QueueSub { parts }
    }

    /// Ends subscriptions of `session` (an UNSUBSCRIBE, or all of them at close). Their
    /// unacknowledged messages go back to their queues once every part in that shard is gone
    /// (so none reaches another of these subscriptions).
    pub(crate) fn remove(&self, session: SessionId, subs: &[QueueSub], out: &mut Vec<Action>) {
        let mut by_shard: BTreeMap<u16, Vec<u32>> = BTreeMap::new();
        for &(s, key) in subs.iter().flat_map(|sub| sub.parts.iter()) {
            by_shard.entry(s).or_default().push(key);
        }
        for (s, keys) in by_shard {
            let s = usize::from(s);
            let mut shard = self.lock(s);
            let mut back = Vec::new();
            for key in keys {
                let key = key as usize;
                if shard.parts.get(key).is_none_or(|p| p.session != session) {
                    continue;
                }
                let part = shard.parts.remove(key);
                if destination::is_pattern(&part.target) {
                    shard.patterns.retain(|&k| k != key);
                } else if let Some(subscribers) = shard.exact.get_mut(&*part.target) {
                    subscribers.parts.retain(|&k| k != key);
                    if subscribers.parts.is_empty() {
                        shard.exact.remove(&*part.target);
                    }
                }
                part.shared
                    .unacked
                    .fetch_sub(part.pending.len(), Ordering::Relaxed);
                back.extend(part.pending);
            }
            for unacked in back {
                self.redeliver(&mut shard, s, unacked, None, out);
            }
        }
    }

    /// A SEND (or the application's publish) to the queue `stored.destination`: to one
    /// subscriber that can take it, round-robin, or held.
    pub(crate) fn send(&self, stored: Stored, out: &mut Vec<Action>) {
        let s = shard_of(&stored.destination);
        let mut shard = self.lock(s);
        match self.pick(&mut shard, &stored.destination, None) {
            Some(key) => self.deliver(&mut shard, s, key, stored, out),
            None => self.hold(&mut shard, stored),
        }
    }

    /// A SEND to a queue, for a transport or a benchmark outside this crate: a message to the
    /// queue `destination` (checked by the caller), without the broker's lock.
    pub fn publish(
        &self,
        destination: &str,
        headers: Vec<(String, String)>,
        body: impl Into<bytes::Bytes>,
        out: &mut Vec<Action>,
    ) {
        let stored = Stored {
            destination: destination.to_owned(),
            headers,
            body: body.into(),
        };
        self.send(stored, out);
    }

    /// An ACK or NACK by `session` of the queue message `id` (and, for a `client`
    /// subscription, of every one delivered to it before). Whether `id` named a message
    /// awaiting its ACK; an unknown or settled one is ignored by the caller.
    pub fn settle(&self, session: SessionId, id: &str, nack: bool, out: &mut Vec<Action>) -> bool {
        let Some((s, key)) = locate(id) else {
            return false;
        };
        let (last, shared, cumulative) = {
            let mut shard = self.lock(s);
            let Some(part) = shard.parts.get_mut(key).filter(|p| p.session == session) else {
                return false;
            };
            let Some(index) = part.pending.iter().position(|u| u.id == id) else {
                return false;
            };
            let settled: Vec<Unacked> = match part.ack {
                AckMode::Client => part.pending.drain(..=index).collect(),
                _ => part.pending.remove(index).into_iter().collect(),
            };
            part.shared
                .unacked
                .fetch_sub(settled.len(), Ordering::Relaxed);
            let last = settled.last().map_or(0, |u| u.seq);
            let cumulative = part.ack == AckMode::Client;
            // Other parts matter to a cumulative ACK, and to an ACK only while something is
            // held somewhere (the room it made may let that flow).
            let shared = (cumulative || (!nack && self.held_count() > 0))
                .then(|| Arc::clone(&part.shared))
                .filter(|sh| sh.parts.get().is_some());
            self.settled(&mut shard, s, key, settled, nack, out);
            (last, shared, cumulative)
        };
        // A pattern subscription: a cumulative ACK reaches what its other parts were given
        // before, and room freed anywhere lets held messages flow in every shard.
        let Some(shared) = shared else {
            return true;
        };
        for &(t, k) in shared.parts.get().into_iter().flatten() {
            let (t, k) = (usize::from(t), k as usize);
            if (t, k) == (s, key) {
                continue;
            }
            let mut shard = self.lock(t);
            let Some(part) = shard
                .parts
                .get_mut(k)
                .filter(|p| Arc::ptr_eq(&p.shared, &shared))
            else {
                continue;
            };
            let before = if cumulative {
                part.pending.iter().take_while(|u| u.seq < last).count()
            } else {
                0
            };
            let settled: Vec<Unacked> = part.pending.drain(..before).collect();
            part.shared
                .unacked
                .fetch_sub(settled.len(), Ordering::Relaxed);
            if settled.is_empty() && shard.held.is_empty() {
                continue;
            }
            self.settled(&mut shard, t, k, settled, nack, out);
        }
        true
    }

    /// After messages of part `key` were settled: a NACK gives them back (to another
    /// subscriber if there is one); an ACK made room, so held messages may flow again.
    fn settled(
        &self,
        shard: &mut Shard,
        s: usize,
        key: usize,
        settled: Vec<Unacked>,
        nack: bool,
        out: &mut Vec<Action>,
    ) {
        if nack {
            for unacked in settled {
                self.redeliver(shard, s, unacked, Some(key), out);
            }
        }
        self.drain(shard, s, key, out);
    }

    /// The parts subscribed to `queue` in this shard, in the order they were made.
    fn matching(shard: &Shard, queue: &str) -> Vec<usize> {
        let mut found: Vec<usize> = shard
            .exact
            .get(queue)
            .map(|s| s.parts.clone())
            .unwrap_or_default();
        found.extend(
            shard
                .patterns
                .iter()
                .copied()
                .filter(|&k| destination::matches(&shard.parts[k].target, queue)),
        );
        found.sort_unstable();
        found
    }

    /// Round-robin over the parts subscribed to `queue`, skipping those whose subscription is
    /// at its unacknowledged limit, and `exclude`.
    fn pick(&self, shard: &mut Shard, queue: &str, exclude: Option<usize>) -> Option<usize> {
        let eligible: Vec<usize> = Self::matching(shard, queue)
            .into_iter()
            .filter(|&k| {
                Some(k) != exclude
                    && shard.parts[k].shared.unacked.load(Ordering::Relaxed) < self.max_unacked
            })
            .collect();
        if eligible.is_empty() {
            return None;
        }
        let turn = match shard.exact.get_mut(queue) {
            Some(subscribers) => &mut subscribers.turn,
            None => &mut shard.pattern_turn,
        };
        let pick = eligible[*turn % eligible.len()];
        *turn = turn.wrapping_add(1);
        Some(pick)
    }

    /// Sends `stored` to part `key`; tracked until acknowledged unless its mode is `auto`.
    fn deliver(
        &self,
        shard: &mut Shard,
        s: usize,
        key: usize,
        stored: Stored,
        out: &mut Vec<Action>,
    ) {
        let part = &mut shard.parts[key];
        let id = format!("{}-q{s}.{key}", next_message_id());
        let Some(frame) = message_frame(&stored, part.version, &part.id, &id, part.ack, true)
        else {
            return;
        };
        out.push(Action::Send {
            to: part.session,
            frame,
        });
        if part.ack != AckMode::Auto {
            let seq = part.shared.seq.fetch_add(1, Ordering::Relaxed);
            part.shared.unacked.fetch_add(1, Ordering::Relaxed);
            part.pending.push_back(Unacked {
                id,
                seq,
                message: stored,
            });
        }
    }

    fn hold(&self, shard: &mut Shard, stored: Stored) {
        let held = shard.held.entry(stored.destination.clone()).or_default();
        held.push_back(stored);
        self.held.fetch_add(1, Ordering::Relaxed);
        if held.len() <= self.max_held {
            return;
        }
        let Some(dropped) = held.pop_front() else {
            return;
        };
        self.held.fetch_sub(1, Ordering::Relaxed);
        self.dropped.fetch_add(1, Ordering::Relaxed);
        let queue = dropped.destination;
        if !shard.overflowing.contains(&queue) {
            tracing::warn!(
                queue = %queue,
                max_held = self.max_held,
                "queue full: no subscriber can take its messages; the oldest held ones are dropped (counted in sockeye_broker_queue_dropped_total) until it drains"
            );
            shard.overflowing.insert(queue);
        }
    }

    /// Gives a message back to its queue: another subscriber than `exclude` if one can take
    /// it, else `exclude` again (as a requeue would), else held.
    fn redeliver(
        &self,
        shard: &mut Shard,
        s: usize,
        unacked: Unacked,
        exclude: Option<usize>,
        out: &mut Vec<Action>,
    ) {
        let mut message = unacked.message;
        if !message.headers.iter().any(|(n, _)| n == "redelivered") {
            message.headers.push(("redelivered".into(), "true".into()));
        }
        let again = exclude.filter(|&k| shard.parts.contains(k));
        match self.pick(shard, &message.destination, exclude).or(again) {
            Some(key) => self.deliver(shard, s, key, message, out),
            None => self.hold(shard, message),
        }
    }

    /// Gives held messages of the queues part `key` matches (in this shard) to subscribers
    /// that can take them, now that it can take more.
    fn drain(&self, shard: &mut Shard, s: usize, key: usize, out: &mut Vec<Action>) {
        if shard.held.is_empty() {
            return;
        }
        let Some(target) = shard.parts.get(key).map(|p| Arc::clone(&p.target)) else {
            return;
        };
        let queues: Vec<String> = if destination::is_pattern(&target) {
            shard
                .held
                .keys()
                .filter(|q| destination::matches(&target, q))
                .cloned()
                .collect()
        } else if shard.held.contains_key(&*target) {
            vec![target.to_string()]
        } else {
            Vec::new()
        };
        for queue in queues {
            while let Some(k) = self.pick(shard, &queue, None) {
                let Some(stored) = shard.held.get_mut(&queue).and_then(VecDeque::pop_front) else {
                    break;
                };
                self.held.fetch_sub(1, Ordering::Relaxed);
                self.deliver(shard, s, k, stored, out);
                if shard.held.get(&queue).is_some_and(VecDeque::is_empty) {
                    break;
                }
            }
            if shard.held.get(&queue).is_some_and(VecDeque::is_empty) {
                shard.held.remove(&queue);
                shard.overflowing.remove(&queue);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_their_shard_and_part() {
        assert_eq!(locate("m17-q3.42"), Some((3, 42)));
        assert_eq!(locate("m-q1-q63.0"), Some((63, 0)));
        assert_eq!(locate("m17-q64.0"), None, "no such shard");
        assert_eq!(locate("m17-t4"), None, "a topic message's id");
        assert_eq!(locate("m17-q3"), None);
        assert_eq!(locate("m17-q3.x"), None);
        assert!(shard_of("/queue/a") < SHARDS);
        assert_eq!(shard_of("/queue/a"), shard_of("/queue/a"));
    }

    fn stored(queue: &str, body: &'static str) -> Stored {
        Stored {
            destination: queue.into(),
            headers: Vec::new(),
            body: bytes::Bytes::from_static(body.as_bytes()),
        }
    }

    fn ids(out: &[Action]) -> Vec<String> {
        out.iter()
            .filter_map(|a| match a {
                Action::Send { frame, .. } => {
                    let text = String::from_utf8(frame.to_vec()).unwrap();
                    let line = text.lines().find(|l| l.starts_with("message-id:"))?;
                    Some(line["message-id:".len()..].to_owned())
                }
                _ => None,
            })
            .collect()
    }

    /// Two queues in different shards and one pattern subscription over both: a cumulative
    /// ACK of the later message settles the earlier one in the other shard too.
    #[test]
    fn a_cumulative_ack_of_a_pattern_subscription_reaches_every_shard() {
        let (a, b) = ("/queue/jobs.a", "/queue/jobs.c");
        assert_ne!(
            shard_of(a),
            shard_of(b),
            "pick two queues in different shards"
        );
        let queues = Queues::new(10, 10);
        let mut out = Vec::new();
        let sub = queues.subscribe(
            1,
            "s",
            "/queue/jobs.*",
            AckMode::Client,
            Version::V1_2,
            &mut out,
        );
        queues.send(stored(a, "1"), &mut out);
        queues.send(stored(b, "2"), &mut out);
        queues.send(stored(a, "3"), &mut out);
        let given = ids(&out);
        assert_eq!(given.len(), 3);
        assert_eq!(queues.unacked_count(), 3);
        out.clear();
        // Another session cannot settle them.
        assert!(!queues.settle(2, &given[1], false, &mut out));
        assert!(queues.settle(1, &given[1], false, &mut out));
        assert_eq!(queues.unacked_count(), 1, "1 and 2 settled, 3 not");
        assert!(
            !queues.settle(1, &given[0], false, &mut out),
            "already settled"
        );
        assert!(queues.settle(1, &given[2], false, &mut out));
        assert_eq!(queues.unacked_count(), 0);
        queues.remove(1, &[sub], &mut out);
        assert_eq!(queues.destination_count(), 0);
    }

    /// The unacknowledged limit holds over all parts of a pattern subscription; an ACK in
    /// one shard lets a message held in another flow.
    #[test]
    fn the_unacked_limit_spans_shards() {
        let (a, b) = ("/queue/jobs.a", "/queue/jobs.c");
        let queues = Queues::new(10, 1);
        let mut out = Vec::new();
        let _sub = queues.subscribe(
            1,
            "s",
            "/queue/jobs.*",
            AckMode::ClientIndividual,
            Version::V1_2,
            &mut out,
        );
        queues.send(stored(a, "1"), &mut out);
        queues.send(stored(b, "2"), &mut out);
        let given = ids(&out);
        assert_eq!((given.len(), queues.held_count()), (1, 1));
        out.clear();
        assert!(queues.settle(1, &given[0], false, &mut out));
        assert_eq!(
            (ids(&out).len(), queues.held_count()),
            (1, 0),
            "2 flows once 1 is settled"
        );
    }

    /// A NACK gives the message to the queue's other subscriber, marked redelivered; closing
    /// that one gives it back to the first.
    #[test]
    fn a_nack_redelivers_within_the_shard() {
        let queues = Queues::new(10, 10);
        let mut out = Vec::new();
        let first = queues.subscribe(
            1,
            "x",
            "/queue/a",
            AckMode::ClientIndividual,
            Version::V1_2,
            &mut out,
        );
        let second = queues.subscribe(
            2,
            "y",
            "/queue/a",
            AckMode::ClientIndividual,
            Version::V1_2,
            &mut out,
        );
        queues.send(stored("/queue/a", "m"), &mut out);
        let to = |out: &[Action]| match out.last() {
            Some(Action::Send { to, .. }) => *to,
            other => panic!("no MESSAGE: {other:?}"),
        };
        let (owner, other, other_sub) = if to(&out) == 1 {
            (1, 2, second)
        } else {
            (2, 1, first)
        };
        let id = ids(&out).pop().unwrap();
        out.clear();
        assert!(queues.settle(owner, &id, true, &mut out));
        assert_eq!(to(&out), other);
        assert!(String::from_utf8(match &out[0] {
            Action::Send { frame, .. } => frame.to_vec(),
            _ => unreachable!(),
        })
        .unwrap()
        .contains("redelivered:true"));
        out.clear();
        queues.remove(other, &[other_sub], &mut out);
        assert_eq!(to(&out), owner);
    }
}
