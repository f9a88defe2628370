//! Users' destinations (`/user/queue/x` subscribed by a session of user U receives what is sent
//! to U on `/queue/x`), in [`SHARDS`] locked shards: a subscription is listed under its user's
//! name in that name's shard, and under its session in the session's shard, so a SEND to
//! `/user/{name}/...` (or the application's `convertAndSendToUser`) locks the name's shard and
//! a reply to one session (`@SendToUser`, which anonymous sessions get too) the session's;
//! neither takes the broker's lock (see `crate::server::router`).
//!
//! A users' destination message goes to every matching subscription of the user (it is not a
//! queue: no round-robin, nothing held, nothing awaiting an ACK; an ACK of one, which names
//! no queue, is ignored). Never two shard locks at once: the frames are made after the shard
//! is let go, from the subscriptions it listed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::queues::message_frame;
use super::topics::next_message_id;
use super::{destination, AckMode, Action, SessionId, Stored};
use crate::stomp::Version;

/// Shards of each index (by user, by session).
pub const SHARDS: usize = 64;

/// The users' destination subscriptions of one broker.
pub struct Users {
    shards: Box<[Mutex<Shard>]>,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Shard {
    by_user: HashMap<Arc<str>, Vec<Arc<Entry>>>,
    by_session: HashMap<SessionId, Vec<Arc<Entry>>>,
}

#[derive(Debug)]
struct Entry {
    session: SessionId,
    user: Option<Arc<str>>,
    id: String,
    /// What it matches, without the users' prefix (`/queue/x`, or a pattern).
    target: String,
    ack: AckMode,
    version: Version,
}

/// A session's subscription to one of its user's destinations, as the broker keeps it.
#[derive(Debug)]
pub(crate) struct UserSub(Arc<Entry>);

fn shard_of_name(name: &str) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h % SHARDS as u64) as usize
}

fn shard_of_session(session: SessionId) -> usize {
    // A multiplicative hash: consecutive ids (each worker numbers its own) spread out.
    (session.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize % SHARDS
}

impl Default for Users {
    fn default() -> Self {
        Users {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl Users {
    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        self.shards[shard].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A subscription of `session` (of `user`, if it has one) to `/user{target}`.
    pub(crate) fn subscribe(
        &self,
        session: SessionId,
        user: Option<&str>,
        id: &str,
        target: &str,
        ack: AckMode,
        version: Version,
    ) -> UserSub {
        let user: Option<Arc<str>> = user.map(Arc::from);
        let entry = Arc::new(Entry {
            session,
            user: user.clone(),
            id: id.to_owned(),
            target: target.to_owned(),
            ack,
            version,
        });
        if let Some(user) = user {
            let mut shard = self.lock(shard_of_name(&user));
            shard
                .by_user
                .entry(user)
                .or_default()
                .push(Arc::clone(&entry));
        }
        let mut shard = self.lock(shard_of_session(session));
        shard
            .by_session
            .entry(session)
            .or_default()
            .push(Arc::clone(&entry));
        UserSub(entry)
    }

    /// Ends a subscription (UNSUBSCRIBE, or its session's close).
    pub(crate) fn remove(&self, sub: &UserSub) {
        let entry = &sub.0;
        if let Some(user) = &entry.user {
            let mut shard = self.lock(shard_of_name(user));
            if let Some(list) = shard.by_user.get_mut(user) {
                list.retain(|e| !Arc::ptr_eq(e, entry));
                if list.is_empty() {
                    shard.by_user.remove(user);
                }
            }
        }
        let mut shard = self.lock(shard_of_session(entry.session));
        if let Some(list) = shard.by_session.get_mut(&entry.session) {
            list.retain(|e| !Arc::ptr_eq(e, entry));
            if list.is_empty() {
                shard.by_session.remove(&entry.session);
            }
        }
    }

    /// Subscriptions listed under `user` (all its sessions).
    pub fn count_for_user(&self, user: &str) -> usize {
        self.lock(shard_of_name(user))
            .by_user
            .get(user)
            .map_or(0, Vec::len)
    }

    /// Sends to every session of `user` subscribed to `/user{destination}`, shown to them as
    /// `shown` (the users' prefix and `destination`).
    pub(crate) fn send_to_user(
        &self,
        user: &str,
        destination: &str,
        shown: &str,
        headers: Vec<(String, String)>,
        body: Bytes,
        out: &mut Vec<Action>,
    ) {
        let targets = matching(
            self.lock(shard_of_name(user)).by_user.get(user),
            destination,
        );
        deliver(&targets, shown, headers, body, out);
    }

    /// Sends to the subscriptions of one session to `/user{destination}` (the reply to a
    /// sender, anonymous or not).
    pub(crate) fn send_to_session(
        &self,
        session: SessionId,
        destination: &str,
        shown: &str,
        headers: Vec<(String, String)>,
        body: Bytes,
        out: &mut Vec<Action>,
    ) {
        let shard = self.lock(shard_of_session(session));
        let targets = matching(shard.by_session.get(&session), destination);
        drop(shard);
        deliver(&targets, shown, headers, body, out);
    }
}

/// The subscriptions in `list` that match `destination`, in the order they were made.
fn matching(list: Option<&Vec<Arc<Entry>>>, destination: &str) -> Vec<Arc<Entry>> {
    list.into_iter()
        .flatten()
        .filter(|e| destination::matches(&e.target, destination))
        .cloned()
        .collect()
}

/// One MESSAGE per subscription in `targets`, in the order they were made. The message id
/// (`{n}-u`, also the ack id of a subscription that acknowledges) names no queue: its ACK
/// settles nothing.
fn deliver(
    targets: &[Arc<Entry>],
    shown: &str,
    headers: Vec<(String, String)>,
    body: Bytes,
    out: &mut Vec<Action>,
) {
    if targets.is_empty() {
        return;
    }
    let stored = Stored {
        destination: shown.to_owned(),
        headers,
        body,
    };
    let id = format!("{}-u", next_message_id());
    for e in targets {
        if let Some(frame) = message_frame(&stored, e.version, &e.id, &id, e.ack, false) {
            out.push(Action::Send {
                to: e.session,
                frame,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to(out: &[Action]) -> Vec<SessionId> {
        out.iter()
            .filter_map(|a| match a {
                Action::Send { to, .. } => Some(*to),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn by_user_and_by_session_follow_subscribe_and_remove() {
        let users = Users::default();
        let v = Version::V1_2;
        let a1 = users.subscribe(1, Some("ann"), "r", "/queue/replies", AckMode::Auto, v);
        let a2 = users.subscribe(2, Some("ann"), "r", "/queue/*", AckMode::Client, v);
        let anon = users.subscribe(3, None, "r", "/queue/replies", AckMode::Auto, v);
        let mut out = Vec::new();
        let send = |users: &Users, out: &mut Vec<Action>| {
            users.send_to_user(
                "ann",
                "/queue/replies",
                "/user/queue/replies",
                vec![],
                Bytes::new(),
                out,
            )
        };
        send(&users, &mut out);
        assert_eq!(to(&out), [1, 2], "both of ann's sessions, in order");
        out.clear();
        users.send_to_session(
            3,
            "/queue/replies",
            "/user/queue/replies",
            vec![],
            Bytes::new(),
            &mut out,
        );
        assert_eq!(to(&out), [3], "an anonymous session's own");
        out.clear();
        users.send_to_user(
            "ann",
            "/queue/other.x",
            "/user/queue/other.x",
            vec![],
            Bytes::new(),
            &mut out,
        );
        assert!(out.is_empty(), "/queue/* matches one segment only");
        users.remove(&a1);
        users.remove(&a2);
        users.remove(&anon);
        assert_eq!(users.count_for_user("ann"), 0);
        send(&users, &mut out);
        users.send_to_session(
            3,
            "/queue/replies",
            "/user/queue/replies",
            vec![],
            Bytes::new(),
            &mut out,
        );
        assert!(out.is_empty());
        assert!(users.shards.iter().all(|s| {
            let s = s.lock().unwrap();
            s.by_user.is_empty() && s.by_session.is_empty()
        }));
    }
}
