//! One worker's topic subscriptions and the messages published to them, sans-IO.
//!
//! With the embedded broker each worker owns the topic subscriptions of its own sessions in a
//! [`TopicTable`] (see `crate::server::shard`): a publish is matched against every worker's
//! table by that worker, from one [`Published`] shared by all of them — the body is copied
//! once, the part of the frame every subscriber shares is encoded once per STOMP version in
//! use by each worker (its own copy: a buffer shared by every worker would have its reference
//! count bounced between their cores at every delivery), and each subscriber gets only its own
//! head. No table is shared between threads, so nothing here locks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::destination;
use super::AckMode;
use crate::stomp::{encode_message_head, EncodeOptions, MessageTail, Version};

/// Message ids are numbered process-wide; each thread takes a block at a time so that
/// numbering costs one shared atomic per [`ID_BLOCK`] messages, not one per message.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
const ID_BLOCK: u64 = 1024;

thread_local! {
    static IDS: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

/// A new `message-id` (`m<n>`), unique in the process.
pub fn next_message_id() -> String {
    let n = IDS.with(|ids| {
        let (mut next, mut end) = ids.get();
        if next == end {
            next = NEXT_ID.fetch_add(ID_BLOCK, Ordering::Relaxed);
            end = next + ID_BLOCK;
        }
        ids.set((next + 1, end));
        next
    });
    format!("m{n}")
}

/// A message published to a topic, shared by every worker that delivers it.
#[derive(Debug)]
pub struct Published {
    /// The destination as subscribers see it.
    pub destination: String,
    /// The message's own headers (the SEND's, less those about the SEND itself).
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Whether the frame is UTF-8 (a text WebSocket message) or not.
    pub utf8: bool,
    pub message_id: String,
}

/// Two are equal when they are the same message (same id) with the same content.
impl PartialEq for Published {
    fn eq(&self, other: &Self) -> bool {
        self.message_id == other.message_id
            && self.destination == other.destination
            && self.headers == other.headers
            && self.body == other.body
    }
}

impl Eq for Published {}

impl Published {
    pub fn new(destination: String, headers: Vec<(String, String)>, body: Bytes) -> Self {
        let utf8 = std::str::from_utf8(&body).is_ok();
        Published {
            destination,
            headers,
            body,
            utf8,
            message_id: next_message_id(),
        }
    }

    /// The part of the frame every subscriber of `version` shares (`None`: it cannot be
    /// encoded, such as a header too long; nobody of that version gets the message).
    pub fn tail(&self, version: Version) -> Option<MessageTail> {
        {
            {
                let mut headers: Vec<(&str, String)> = vec![(
                    "destination",
                    super::replies::sanitize(&self.destination, Some(version)),
                )];
                headers.extend(
                    self.headers
                        .iter()
                        .map(|(n, v)| (n.as_str(), super::replies::sanitize(v, Some(version)))),
                );
                let opts = EncodeOptions::new(Some(version)).with_content_length(true);
                MessageTail::encode(
                    headers.iter().map(|(n, v)| (*n, v.as_str())),
                    &self.body,
                    opts,
                )
                .ok()
            }
        }
    }
}

/// One topic subscription of a session of this worker.
#[derive(Debug)]
pub struct TopicSub<R> {
    pub session: u64,
    /// Where its messages go (the transport's handle on the session).
    pub to: R,
    pub id: Box<str>,
    /// The destination or pattern it matches (one string for every subscriber of a
    /// destination: the table's key).
    pub target: Arc<str>,
    pub version: Version,
    pub ack: AckMode,
}

/// A worker's topic subscriptions: exact destinations by name (fan-out in O(subscribers)),
/// patterns matched one by one.
#[derive(Debug)]
pub struct TopicTable<R> {
    subs: slab::Slab<TopicSub<R>>,
    exact: HashMap<Arc<str>, Vec<usize>>,
    patterns: Vec<usize>,
    heads: BytesMut,
}

impl<R> Default for TopicTable<R> {
    fn default() -> Self {
        TopicTable {
            subs: slab::Slab::new(),
            exact: HashMap::new(),
            patterns: Vec::new(),
            heads: BytesMut::new(),
        }
    }
}

impl<R> TopicTable<R> {
    pub fn len(&self) -> usize {
        self.subs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// Destinations with subscribers (exact names and patterns).
    pub fn destination_count(&self) -> usize {
        self.exact.len() + self.patterns.len()
    }

    pub fn get(&self, key: usize) -> Option<&TopicSub<R>> {
        self.subs.get(key)
    }

    /// Adds a subscription; returns its key (for [`TopicTable::remove`]).
    pub fn insert(&mut self, mut sub: TopicSub<R>) -> usize {
        if destination::is_pattern(&sub.target) {
            let key = self.subs.insert(sub);
            self.patterns.push(key);
            return key;
        }
        if let Some((shared, _)) = self.exact.get_key_value(&*sub.target) {
            sub.target = shared.clone();
        }
        let target = sub.target.clone();
        let key = self.subs.insert(sub);
        self.exact.entry(target).or_default().push(key);
        key
    }

    pub fn remove(&mut self, key: usize) -> Option<TopicSub<R>> {
        let sub = self.subs.try_remove(key)?;
        if let Some(list) = self.exact.get_mut(&sub.target) {
            list.retain(|&k| k != key);
            if list.is_empty() {
                self.exact.remove(&sub.target);
            }
        } else {
            self.patterns.retain(|&k| k != key);
        }
        Some(sub)
    }

    /// Keys of the subscriptions `destination` reaches, exact ones first.
    pub fn matching<'a>(&'a self, destination: &'a str) -> impl Iterator<Item = usize> + 'a {
        let exact = self.exact.get(destination).into_iter().flatten().copied();
        let patterns = self
            .patterns
            .iter()
            .copied()
            .filter(move |&k| destination::matches(&self.subs[k].target, destination));
        exact.chain(patterns)
    }

    /// Calls `deliver` for each subscription `message` reaches whose session `to` accepts,
    /// with its own head and the shared tail.
    pub fn deliver(
        &mut self,
        message: &Published,
        to: impl Fn(u64) -> bool,
        mut deliver: impl FnMut(&TopicSub<R>, Bytes, Bytes),
    ) -> usize {
        let keys: Vec<usize> = self
            .matching(&message.destination)
            .filter(|&k| to(self.subs[k].session))
            .collect();
        let mut delivered = 0;
        // This worker's own encoding of the shared part, per version (see the module doc).
        let mut tails: [Option<Option<MessageTail>>; 3] = [None, None, None];
        for key in keys {
            let sub = &self.subs[key];
            let slot = &mut tails[sub.version as usize];
            let Some(tail) = slot.get_or_insert_with(|| message.tail(sub.version)) else {
                continue;
            };
            // Topic messages are never tracked: an ACK of one is accepted and ignored.
            let ack_id;
            let ack = match (sub.ack, sub.version) {
                (AckMode::Auto, _) | (_, Version::V1_0 | Version::V1_1) => None,
                _ => {
                    ack_id = format!("{}-t{key}", message.message_id);
                    Some(ack_id.as_str())
                }
            };
            if encode_message_head(tail, &sub.id, &message.message_id, ack, &mut self.heads)
                .is_err()
            {
                continue;
            }
            let head = self.heads.split().freeze();
            deliver(sub, head, tail.bytes().clone());
            delivered += 1;
        }
        delivered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(session: u64, id: &str, target: &str, version: Version) -> TopicSub<u64> {
        TopicSub {
            session,
            to: session,
            id: id.into(),
            target: target.into(),
            version,
            ack: AckMode::Auto,
        }
    }

    fn frames(table: &mut TopicTable<u64>, m: &Published, only: Option<u64>) -> Vec<(u64, String)> {
        let mut got = Vec::new();
        table.deliver(
            m,
            |s| only.is_none_or(|o| o == s),
            |s, head, tail| {
                let mut whole = head.to_vec();
                whole.extend_from_slice(&tail);
                got.push((s.to, String::from_utf8(whole).unwrap()));
            },
        );
        got.sort();
        got
    }

    #[test]
    fn exact_and_pattern_subscribers_each_get_their_own_head_and_the_shared_body() {
        let mut table = TopicTable::default();
        table.insert(sub(1, "a", "/topic/x", Version::V1_2));
        table.insert(sub(2, "b", "/topic/*", Version::V1_1));
        let k3 = table.insert(sub(3, "c", "/topic/y", Version::V1_2));
        let m = Published::new(
            "/topic/x".into(),
            vec![("k".into(), "v".into())],
            "hi".into(),
        );
        let got = frames(&mut table, &m, None);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].1.starts_with("MESSAGE\n"));
        assert!(got[0].1.contains("subscription:a\n") && got[0].1.contains("k:v\n"));
        assert!(got[1].1.contains("subscription:b\n"));
        assert!(got.iter().all(|(_, f)| f.ends_with("\n\nhi\0")));
        assert!(got
            .iter()
            .all(|(_, f)| f.contains(&format!("message-id:{}\n", m.message_id))));
        assert_eq!(frames(&mut table, &m, Some(2)).len(), 1, "only session 2's");
        assert_eq!(table.destination_count(), 3);
        assert!(table.remove(k3).is_some());
        assert!(table.remove(k3).is_none(), "removed once");
        assert_eq!(table.destination_count(), 2);
    }

    #[test]
    fn message_ids_are_unique_across_threads() {
        let mut all: Vec<String> = (0..4)
            .map(|_| {
                std::thread::spawn(|| (0..3000).map(|_| next_message_id()).collect::<Vec<_>>())
            })
            .flat_map(|t| t.join().expect("id thread"))
            .collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
    }
}
