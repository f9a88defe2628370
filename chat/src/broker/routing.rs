//! Routing: SEND and publish to topics, queues (handed to [`super::queues`]), users and
//! sessions, subscription matching, fan-out of MESSAGE frames, SUBSCRIBE and UNSUBSCRIBE.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::destination::{self, Kind, Prefixes};
use super::permissions::Permissions;
use super::permissions::Verb;
use super::replies::sanitize;
use super::topics::Published;
use super::{
    refuse, AckMode, Action, AppMessage, Broker, BrokerEvent, Kept, OutFrame, Pending, Refusal,
    RelayOp, SessionId, Stored, Subscription, TxOp,
};
use crate::stomp::{encode_message_head, EncodeOptions, Frame, MessageTail, Version};

/// Headers a SEND carries that are about the SEND itself, not the message.
const SEND_ONLY_HEADERS: [&str; 4] = ["transaction", "receipt", "content-length", "destination"];

impl Broker {
    pub(super) fn send(
        &mut self,
        session: SessionId,
        frame: &Frame<'_>,
        out: &mut Vec<Action>,
    ) -> Result<(), Refusal> {
        self.check_send_rate(session)?;
        let destination = frame
            .header("destination")
            .ok_or_else(|| refuse("SEND without destination"))?;
        let user = (!self.is_trusted(session)).then(|| self.user(session));
        let config = &self.config;
        let kind = check_send(
            &config.prefixes,
            &config.app_only,
            &config.permissions,
            user,
            destination,
        )
        .map_err(refuse)?;
        let headers = message_headers(frame);
        let stored = Stored {
            destination: destination.to_owned(),
            headers,
            body: Bytes::copy_from_slice(frame.body),
        };
        if self.config.relay.is_some() && self.relay_send(session, frame, kind, &stored, out)? {
            return Ok(());
        }
        if let Some(tx) = frame.header("transaction") {
            return self.add_to_transaction(session, tx, TxOp::Send(stored));
        }
        self.deliver_send(session, kind, stored, out);
        Ok(())
    }

    pub(super) fn deliver_send(
        &mut self,
        session: SessionId,
        kind: Kind,
        stored: Stored,
        out: &mut Vec<Action>,
    ) {
        match kind {
            Kind::App => {
                let user = self.user(session).map(str::to_owned);
                let destination = self
                    .config
                    .prefixes
                    .strip_app(&stored.destination)
                    .unwrap_or(&stored.destination)
                    .to_owned();
                out.push(Action::App(AppMessage {
                    session,
                    user,
                    destination,
                    headers: stored.headers,
                    body: stored.body,
                }));
            }
            Kind::User => {
                // SEND to /user/{name}/queue/x delivers to that user's /user/queue/x subscribers
                // (`check_send` refused any other shape).
                if let Some((name, dest)) = split_user(&self.config.prefixes, &stored.destination) {
                    let name = name.to_owned();
                    self.publish_to_user_here(&name, &dest, stored.headers, stored.body, out);
                }
            }
            Kind::Topic | Kind::Queue => self.publish_stored(stored, out),
        }
    }

    /// Publishes to a broker destination (the `SimpMessagingTemplate.convertAndSend`
    /// equivalent). Application destinations are not routed back to the application.
    pub fn publish(
        &mut self,
        destination: &str,
        headers: Vec<(String, String)>,
        body: Bytes,
        out: &mut Vec<Action>,
    ) {
        let stored = Stored {
            destination: destination.to_owned(),
            headers,
            body,
        };
        if self.config.relay.is_some() {
            self.relay_publish(stored, out);
            return;
        }
        match self.config.prefixes.kind(destination) {
            Some(Kind::Topic | Kind::Queue) => self.publish_stored(stored, out),
            Some(Kind::User) => self.deliver_send(0, Kind::User, stored, out),
            Some(Kind::App) | None => {}
        }
    }

    /// Sends to every session of `user` subscribed to `/user{destination}` (the
    /// `convertAndSendToUser` equivalent). `destination` is e.g. `/queue/replies`.
    pub fn publish_to_user(
        &mut self,
        user: &str,
        destination: &str,
        headers: Vec<(String, String)>,
        body: Bytes,
        out: &mut Vec<Action>,
    ) {
        if self.config.relay.is_some() {
            // Every node with a session of the user hears it through the user's topic.
            out.push(Action::Relay(RelayOp::SendToUser {
                session: None,
                user: user.to_owned(),
                destination: destination.to_owned(),
                headers,
                body,
                receipt: None,
            }));
            return;
        }
        self.publish_to_user_here(user, destination, headers, body, out);
    }

    /// [`Broker::publish_to_user`] for this node's sessions only.
    pub(super) fn publish_to_user_here(
        &mut self,
        user: &str,
        destination: &str,
        headers: Vec<(String, String)>,
        body: Bytes,
        out: &mut Vec<Action>,
    ) {
        let shown = format!("{}{}", self.config.prefixes.user, destination);
        self.users
            .send_to_user(user, destination, &shown, headers, body, out);
    }

    /// Sends to the sessions subscribed to `/user{destination}` of one session (the
    /// `@SendToUser` reply to the sender, which works for anonymous sessions too).
    pub fn publish_to_session(
        &mut self,
        session: SessionId,
        destination: &str,
        headers: Vec<(String, String)>,
        body: Bytes,
        out: &mut Vec<Action>,
    ) {
        let shown = format!("{}{}", self.config.prefixes.user, destination);
        self.users
            .send_to_session(session, destination, &shown, headers, body, out);
    }

    /// The subscriptions kept here that match `destination` (a topic's, or a queue's in relay
    /// mode), in the order they were made.
    pub(super) fn matching(&self, destination: &str) -> Vec<usize> {
        let mut found: Vec<usize> = self.exact.get(destination).cloned().unwrap_or_default();
        found.extend(
            self.patterns
                .iter()
                .copied()
                .filter(|&k| destination::matches(&self.subs[k].target, destination)),
        );
        found.retain(|&k| !self.subs[k].is_user);
        found
    }

    pub(super) fn publish_stored(&mut self, stored: Stored, out: &mut Vec<Action>) {
        let kind = self
            .config
            .prefixes
            .kind(&stored.destination)
            .unwrap_or(Kind::Topic);
        if kind == Kind::Queue {
            self.queues.send(stored, out);
            return;
        }
        let targets = self.matching(&stored.destination);
        // The application's own subscriptions (and every one, unless the transport keeps
        // clients' topic subscriptions per worker).
        self.fan_out(&targets, &stored, false, out);
        if self.config.shard_topics && self.config.relay.is_none() {
            out.push(Action::Publish(Arc::new(Published::new(
                stored.destination,
                stored.headers,
                stored.body,
            ))));
        }
    }

    /// Delivers one message to the subscriptions `targets`: the shared part is encoded once
    /// per version in use, each subscriber gets only its own head. `tracked`: relayed queue
    /// messages, kept until acknowledged (to translate the ACK for the external broker).
    pub(super) fn fan_out(
        &mut self,
        targets: &[usize],
        stored: &Stored,
        tracked: bool,
        out: &mut Vec<Action>,
    ) {
        if targets.is_empty() {
            return;
        }
        let utf8 = std::str::from_utf8(&stored.body).is_ok();
        let mut tails: [Option<MessageTail>; 3] = [None, None, None];
        let mut heads = BytesMut::new();
        let message_id = super::topics::next_message_id();
        for &key in targets {
            let (session, version, ack_mode, sub_id) = {
                let sub = &self.subs[key];
                let version = self
                    .sessions
                    .get(&sub.session)
                    .and_then(|s| s.version)
                    .unwrap_or(Version::V1_2);
                (sub.session, version, sub.ack, sub.id.clone())
            };
            let slot = version as usize;
            if tails[slot].is_none() {
                match message_tail(stored, version) {
                    Some(t) => tails[slot] = Some(t),
                    None => continue,
                }
            }
            let Some(tail) = &tails[slot] else { continue };
            let ack_id = format!("{message_id}-{key}");
            let ack_header = match (ack_mode, version) {
                (AckMode::Auto, _) | (_, Version::V1_0 | Version::V1_1) => None,
                _ => Some(ack_id.as_str()),
            };
            if encode_message_head(tail, &sub_id, &message_id, ack_header, &mut heads).is_err() {
                continue;
            }
            let head = heads.split().freeze();
            // A queue message awaiting an ACK is never dropped: the unacknowledged limit per
            // subscription bounds it, and dropping it would leave it pending forever.
            let acked = tracked && ack_mode != AckMode::Auto;
            out.push(Action::Send {
                to: session,
                frame: OutFrame {
                    head,
                    tail: Some(tail.bytes().clone()),
                    utf8,
                    bounded: !acked,
                },
            });
            if acked {
                self.subs[key].pending.push_back(Pending {
                    message_id: message_id.clone(),
                    ack_id,
                    upstream: None,
                });
            }
        }
    }

    pub(super) fn subscribe(
        &mut self,
        session: SessionId,
        frame: &Frame<'_>,
        out: &mut Vec<Action>,
    ) -> Result<(), Refusal> {
        let state = self
            .sessions
            .get(&session)
            .ok_or_else(|| refuse("not connected"))?;
        let version = state.version.unwrap_or(Version::V1_2);
        let user = (!state.trusted).then_some(state.user.as_deref());
        let config = &self.config;
        let asked = check_subscribe(&config.prefixes, &config.permissions, version, user, frame)
            .map_err(refuse)?;
        if state
            .subscriptions
            .iter()
            .any(|&k| self.subs[k].id == asked.id)
        {
            return Err(refuse(format!("duplicate subscription id {}", asked.id)));
        }
        let held = state.subscriptions.len() + state.topic_subscriptions as usize;
        let queue_patterns = state
            .subscriptions
            .iter()
            .filter(|&&k| {
                let sub = &self.subs[k];
                matches!(sub.kept, Some(Kept::Queue(_))) && destination::is_pattern(&sub.target)
            })
            .count();
        check_room(
            &asked,
            held,
            queue_patterns,
            config.max_subscriptions,
            config.max_queue_patterns,
        )
        .map_err(refuse)?;
        let Asked {
            requested,
            id,
            ack,
            target,
            is_user,
            kind,
        } = asked;
        let user = state.user.clone();
        if self.shards_topic(kind, is_user, state.trusted) {
            if let Some(s) = self.sessions.get_mut(&session) {
                s.topic_subscriptions += 1;
            }
            out.push(Action::Event(BrokerEvent::Subscribed {
                session,
                user,
                destination: requested.to_owned(),
                id: id.clone(),
            }));
            out.push(Action::TopicSubscribe {
                to: session,
                id,
                target,
                version,
                ack,
            });
            return Ok(());
        }
        let queued = kind == Kind::Queue && !is_user && self.config.relay.is_none();
        let key = self.subs.insert(Subscription {
            session,
            id: id.clone(),
            requested: requested.to_owned(),
            target: target.clone(),
            user: user.clone(),
            is_user,
            ack,
            pending: VecDeque::new(),
            relayed: false,
            kept: None,
        });
        if queued || is_user {
            // Kept in the queues' or the users' shards; listed here for UNSUBSCRIBE, the close
            // (and the relay).
        } else if destination::is_pattern(&target) {
            self.patterns.push(key);
        } else {
            self.exact.entry(target.clone()).or_default().push(key);
        }
        if let Some(s) = self.sessions.get_mut(&session) {
            s.subscriptions.push(key);
        }
        if is_user {
            let kept = self
                .users
                .subscribe(session, user.as_deref(), &id, &target, ack, version);
            self.subs[key].kept = Some(Kept::User(kept));
        }
        out.push(Action::Event(BrokerEvent::Subscribed {
            session,
            user,
            destination: requested.to_owned(),
            id: id.clone(),
        }));
        if self.config.relay.is_some() {
            self.relay_subscribe(key, kind, frame, out);
        } else if queued {
            let queue = self
                .queues
                .subscribe(session, &id, &target, ack, version, out);
            self.subs[key].kept = Some(Kept::Queue(queue));
        }
        Ok(())
    }

    /// Whether `session` holds a subscription `id` here.
    pub fn has_subscription(&self, session: SessionId, id: &str) -> bool {
        self.sessions
            .get(&session)
            .is_some_and(|s| s.subscriptions.iter().any(|&k| self.subs[k].id == id))
    }

    /// Whether a subscription of this kind is the transport's to keep
    /// ([`BrokerConfig::shard_topics`]): clients' plain topic subscriptions.
    fn shards_topic(&self, kind: Kind, is_user: bool, trusted: bool) -> bool {
        self.config.shard_topics
            && self.config.relay.is_none()
            && kind == Kind::Topic
            && !is_user
            && !trusted
    }

    pub(super) fn unsubscribe(
        &mut self,
        session: SessionId,
        frame: &Frame<'_>,
        out: &mut Vec<Action>,
    ) -> Result<(), Refusal> {
        let version = self.version(session).unwrap_or(Version::V1_2);
        let id = match (frame.header("id"), version) {
            (Some(id), _) => id,
            (None, Version::V1_0) => frame
                .header("destination")
                .ok_or_else(|| refuse("UNSUBSCRIBE without id"))?,
            (None, _) => return Err(refuse("UNSUBSCRIBE without id")),
        };
        let key = self
            .sessions
            .get(&session)
            .and_then(|s| {
                s.subscriptions
                    .iter()
                    .copied()
                    .find(|&k| self.subs[k].id == id)
            })
            .ok_or_else(|| refuse(format!("no subscription with id {id}")))?;
        self.remove_subscription(key, out);
        Ok(())
    }

    /// Removes a subscription; its unacknowledged queue messages go to someone else.
    pub(super) fn remove_subscription(&mut self, key: usize, out: &mut Vec<Action>) {
        let session = self.subs[key].session;
        if let Some(queue) = self.detach_subscription(key, out) {
            self.queues.remove(session, &[queue], out);
        }
    }

    /// Takes a subscription out of every index here and returns its parts among the queues
    /// (for the caller to remove once everything of the session that must go is gone, so
    /// that its unacknowledged messages reach none of them).
    pub(super) fn detach_subscription(
        &mut self,
        key: usize,
        out: &mut Vec<Action>,
    ) -> Option<super::queues::QueueSub> {
        let sub = self.subs.remove(key);
        if let Some(list) = self.exact.get_mut(&sub.target) {
            list.retain(|&k| k != key);
            if list.is_empty() {
                self.exact.remove(&sub.target);
            }
        }
        self.patterns.retain(|&k| k != key);
        if let Some(s) = self.sessions.get_mut(&sub.session) {
            s.subscriptions.retain(|&k| k != key);
        }
        out.push(Action::Event(BrokerEvent::Unsubscribed {
            session: sub.session,
            user: sub.user.clone(),
            destination: sub.requested.clone(),
            id: sub.id.clone(),
        }));
        if sub.relayed {
            // Its unacknowledged messages are the external broker's to redeliver.
            self.relay_unsubscribe(&sub, out);
        }
        match sub.kept {
            Some(Kept::Queue(queue)) => Some(queue),
            Some(Kept::User(user)) => {
                self.users.remove(&user);
                None
            }
            None => None,
        }
    }
}

/// The part of a MESSAGE every subscriber of one version shares: the destination, the
/// message's headers (escaped for `version`) and the body.
pub(super) fn message_tail(stored: &Stored, version: Version) -> Option<MessageTail> {
    let mut headers: Vec<(&str, String)> =
        vec![("destination", sanitize(&stored.destination, Some(version)))];
    headers.extend(
        stored
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), sanitize(v, Some(version)))),
    );
    let opts = EncodeOptions::new(Some(version)).with_content_length(true);
    MessageTail::encode(
        headers.iter().map(|(n, v)| (*n, v.as_str())),
        &stored.body,
        opts,
    )
    .ok()
}

/// Whether a client may SEND to `destination`, and what kind of destination it is; the reason
/// (an ERROR's message) when not. `user`: the sender's login (`None` inside: a trusted
/// session, which no rule binds). The same checks on the broker's path and on the server's
/// path without the broker lock (see `crate::server::router`).
pub(crate) fn check_send(
    prefixes: &Prefixes,
    app_only: &[String],
    permissions: &Permissions,
    user: Option<Option<&str>>,
    destination: &str,
) -> Result<Kind, String> {
    let kind = prefixes
        .kind(destination)
        .ok_or_else(|| format!("unknown destination {destination}"))?;
    if destination::is_pattern(destination) {
        return Err(format!("cannot send to a pattern: {destination}"));
    }
    if kind == Kind::User && split_user(prefixes, destination).is_none() {
        return Err(format!(
            "invalid user destination {destination} (want {}/NAME/...)",
            prefixes.user
        ));
    }
    if app_only
        .iter()
        .any(|p| destination::matches(p, destination))
    {
        return Err(format!(
            "{destination} is the application's (clients cannot send to it)"
        ));
    }
    if let Some(user) = user {
        permissions
            .check(user, Verb::Send, destination)
            .map_err(|denied| denied.to_string())?;
    }
    Ok(kind)
}

/// A SEND to `/user/{name}/{rest}`: the user's name and `/{rest}` (what their sessions
/// subscribed to as `/user/{rest}`); `None` for any other shape.
pub(crate) fn split_user<'d>(
    prefixes: &Prefixes,
    destination: &'d str,
) -> Option<(&'d str, String)> {
    let rest = prefixes.strip_user(destination)?;
    let (name, dest) = rest.get(1..)?.split_once('/')?;
    (!name.is_empty() && !dest.is_empty()).then(|| (name, format!("/{dest}")))
}

/// A SEND's headers as the message carries them (less those about the SEND itself).
pub(crate) fn message_headers(frame: &Frame<'_>) -> Vec<(String, String)> {
    frame
        .headers
        .iter()
        .filter(|h| !SEND_ONLY_HEADERS.contains(&&*h.name))
        .map(|h| (h.name.to_string(), h.value.to_string()))
        .collect()
}

/// A SUBSCRIBE, checked against the fixed rules (not against the session's other
/// subscriptions): what it asks for.
#[derive(Debug)]
pub(crate) struct Asked<'f> {
    /// The destination (pattern) as the client wrote it.
    pub requested: &'f str,
    pub id: String,
    pub ack: AckMode,
    /// What it matches in the broker's namespace (`/user/queue/x` → `/queue/x`).
    pub target: String,
    pub is_user: bool,
    pub kind: Kind,
}

impl Asked<'_> {
    /// A subscription to a queue pattern (`/queue/jobs.*`, not a user's): a part in every one
    /// of the queues' shards.
    pub fn is_queue_pattern(&self) -> bool {
        self.kind == Kind::Queue && !self.is_user && destination::is_pattern(&self.target)
    }
}

/// Refuses a subscription past its session's limits: it holds `held` subscriptions in all,
/// `queue_patterns` of them to queue patterns (which have a limit of their own: see
/// [`BrokerConfig::max_queue_patterns`](super::BrokerConfig::max_queue_patterns)). The same
/// check on the broker's path and on the server's (see `crate::server::router`).
pub(crate) fn check_room(
    asked: &Asked<'_>,
    held: usize,
    queue_patterns: usize,
    max_subscriptions: usize,
    max_queue_patterns: usize,
) -> Result<(), String> {
    if held >= max_subscriptions {
        return Err(format!("more than {max_subscriptions} subscriptions"));
    }
    if asked.is_queue_pattern() && queue_patterns >= max_queue_patterns {
        return Err(format!(
            "more than {max_queue_patterns} queue pattern subscriptions"
        ));
    }
    Ok(())
}

/// Checks a SUBSCRIBE from a session of `version` against the prefixes and, for a client
/// (`user`: its login; `None`: a trusted session), the permission rules; the ERROR's message
/// when refused. The same checks on the broker's path and on the server's path without the
/// broker lock (see `crate::server::router`).
pub(crate) fn check_subscribe<'f>(
    prefixes: &Prefixes,
    permissions: &Permissions,
    version: Version,
    user: Option<Option<&str>>,
    frame: &'f Frame<'_>,
) -> Result<Asked<'f>, String> {
    let requested = frame
        .header("destination")
        .ok_or("SUBSCRIBE without destination")?;
    let id = match frame.header("id") {
        Some(id) => id.to_owned(),
        None if version == Version::V1_0 => requested.to_owned(),
        None => return Err("SUBSCRIBE without id".into()),
    };
    let ack = match frame.header("ack").unwrap_or("auto") {
        "auto" => AckMode::Auto,
        "client" => AckMode::Client,
        "client-individual" => AckMode::ClientIndividual,
        other => return Err(format!("invalid ack mode {other}")),
    };
    let stars = requested.split(['/', '.']).filter(|s| *s == "**").count();
    if stars > 2 || requested.split(['/', '.']).count() > 32 || requested.len() > 1024 {
        return Err(format!("destination pattern too complex: {requested}"));
    }
    let (target, is_user, kind) = match prefixes.kind(requested) {
        Some(Kind::User) => {
            let inner = prefixes
                .strip_user(requested)
                .ok_or_else(|| format!("invalid user destination {requested}"))?;
            let Some(kind) = prefixes.kind(inner) else {
                // `/user/{name}/...`: a destination to SEND to, never to read from.
                return Err(format!(
                    "cannot subscribe to {requested} (another user's destinations are \
                     theirs; subscribe to {}/queue/... for your own)",
                    prefixes.user
                ));
            };
            (inner.to_owned(), true, kind)
        }
        Some(Kind::App) => {
            return Err(format!(
                "cannot subscribe to application destination {requested}"
            ))
        }
        Some(kind) => (requested.to_owned(), false, kind),
        None => return Err(format!("unknown destination {requested}")),
    };
    if let Some(user) = user {
        permissions
            .check(user, Verb::Subscribe, requested)
            .map_err(|denied| denied.to_string())?;
    }
    Ok(Asked {
        requested,
        id,
        ack,
        target,
        is_user,
        kind,
    })
}
