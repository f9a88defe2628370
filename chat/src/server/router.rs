//! Frames of one session on their way to the broker: all but the control plane go around it.
//!
//! With topic subscriptions kept per worker ([`BrokerConfig::shard_topics`]) a SEND to a
//! topic or an application destination is checked here against the session's [`Ticket`]
//! (its version, its user, its SEND allowance, kept by its link since CONNECT) and the
//! broker's fixed rules (prefixes, application-only destinations, permissions, copied at
//! start), and becomes an [`Action::Publish`] or an [`Action::App`]
//! without the broker mutex. So does a SEND to a queue, handed to the queues' shard for it, a
//! SEND to a user (the users' shard for the name; see [`crate::broker::users`]), and an ACK
//! or NACK outside a transaction (its id names the shard; see [`crate::broker::queues`]). A
//! SUBSCRIBE and UNSUBSCRIBE are handled here too (a topic's in the worker's own table, a
//! queue's or users' destination's in their shards, listed in the session's [`Ticket`]), and
//! transactions, kept in the ticket. Everything else — CONNECT, DISCONNECT, and any frame
//! before CONNECTED — takes the lock, once per batch of such frames. So does a topic SEND
//! while the application has subscriptions of its own (they live in the broker).
//!
//! [`BrokerConfig::shard_topics`]: crate::broker::BrokerConfig::shard_topics

use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};

use bytes::Bytes;

use super::Hub;
use crate::broker::destination::{self, Kind};
use crate::broker::limits::Bucket;
use crate::broker::topics::Published;
use crate::broker::transactions::named;
use crate::broker::{
    check_room, check_send, check_subscribe, error_frame_in, message_headers, receipt_frame_in,
    split_user, Action, AppMessage, Broker, BrokerEvent, Credentials, Ending, Kept, KeptSub,
    SessionId, Stored, TxOp,
};
use crate::link::{Sink, Ticket};
use crate::stomp::{Command, Frame, StompError, Version};

/// A [`Sink`] for one feed of one session: the broker, locked only when a frame needs it.
pub(super) struct Router<'a> {
    hub: &'a Hub,
    broker: Option<MutexGuard<'a, Broker>>,
    ticket: &'a mut Option<Ticket>,
    /// The session's topic subscriptions: their keys in this worker's table.
    topics: &'a mut Vec<u32>,
    now_ms: u64,
}

impl<'a> Router<'a> {
    pub(super) fn new(
        hub: &'a Hub,
        ticket: &'a mut Option<Ticket>,
        topics: &'a mut Vec<u32>,
        now_ms: u64,
    ) -> Self {
        Router {
            hub,
            broker: None,
            ticket,
            topics,
            now_ms,
        }
    }

    /// The subscription id a SUBSCRIBE or UNSUBSCRIBE names (1.0 may name the destination
    /// instead).
    fn subscription_id<'f>(&self, frame: &'f Frame<'_>) -> Option<&'f str> {
        match (frame.header("id"), self.ticket.as_ref().map(|t| t.version)) {
            (Some(id), _) => Some(id),
            (None, Some(Version::V1_0)) => frame.header("destination"),
            (None, _) => None,
        }
    }

    /// A SUBSCRIBE, checked here with the broker's rules and kept without the broker: a
    /// topic's in this worker's table, a queue's and a users' destination's in their shards
    /// (listed in the session's [`Ticket`] for UNSUBSCRIBE and the close). Held queue messages
    /// it can take are delivered at once, after its Subscribed event.
    fn subscribe(&mut self, session: SessionId, frame: &Frame<'_>, out: &mut Vec<Action>) {
        let hub = self.hub;
        let Some(ticket) = self.ticket.as_ref() else {
            return self.broker().handle(session, frame, out);
        };
        let (version, receipt) = (ticket.version, frame.header("receipt"));
        let rules = &hub.send_rules;
        let user = ticket.user.as_deref();
        let asked = match check_subscribe(
            &rules.prefixes,
            &rules.permissions,
            version,
            Some(user),
            frame,
        ) {
            Ok(asked) => asked,
            Err(message) => return error(version, session, message, receipt, out),
        };
        let kept = ticket.kept.as_deref().map_or(&[][..], Vec::as_slice);
        let duplicate = hub.find_topic(self.topics, &asked.id).is_some()
            || kept.iter().any(|k| k.id == asked.id);
        if duplicate {
            let message = format!("duplicate subscription id {}", asked.id);
            return error(version, session, message, receipt, out);
        }
        let queue_patterns = kept
            .iter()
            .filter(|k| matches!(k.kept, Kept::Queue(_)) && destination::is_pattern(&k.requested))
            .count();
        if let Err(message) = check_room(
            &asked,
            self.topics.len() + kept.len(),
            queue_patterns,
            rules.max_subscriptions,
            rules.max_queue_patterns,
        ) {
            return error(version, session, message, receipt, out);
        }
        let user = ticket.user.as_deref().map(str::to_owned);
        out.push(Action::Event(BrokerEvent::Subscribed {
            session,
            user: user.clone(),
            destination: asked.requested.to_owned(),
            id: asked.id.clone(),
        }));
        let kept = match (asked.kind, asked.is_user) {
            (Kind::Topic, false) => {
                let (id, target) = (asked.id.clone(), asked.target.clone());
                let key = hub.topic_subscribe(session, id, target, version, asked.ack);
                self.topics.extend(key);
                None
            }
            (_, true) => Some(Kept::User(hub.users.subscribe(
                session,
                user.as_deref(),
                &asked.id,
                &asked.target,
                asked.ack,
                version,
            ))),
            (_, false) => Some(Kept::Queue(hub.queues.subscribe(
                session,
                &asked.id,
                &asked.target,
                asked.ack,
                version,
                out,
            ))),
        };
        if let (Some(kept), Some(ticket)) = (kept, self.ticket.as_mut()) {
            hub.kept_subscriptions.fetch_add(1, Ordering::Relaxed);
            ticket.kept.get_or_insert_with(Box::default).push(KeptSub {
                id: asked.id,
                requested: asked.requested.to_owned(),
                kept,
            });
        }
        reply_receipt(version, session, receipt, out);
    }

    /// An UNSUBSCRIBE of one of the session's subscriptions kept here (a topic's in this
    /// worker's table, a queue's or a users' destination's in the ticket), handled here;
    /// `false` for the broker to handle (and refuse: it holds none of the session's).
    fn unsubscribe(
        &mut self,
        session: SessionId,
        frame: &Frame<'_>,
        out: &mut Vec<Action>,
    ) -> bool {
        let hub = self.hub;
        let Some(id) = self.subscription_id(frame) else {
            return false;
        };
        let Some(ticket) = self.ticket.as_mut() else {
            return false;
        };
        let user = ticket.user.as_deref().map(str::to_owned);
        if let Some(index) = hub.find_topic(self.topics, id) {
            let key = self.topics.swap_remove(index);
            if let Some(event) = hub.topic_unsubscribe(key, user) {
                out.push(Action::Event(event));
            }
        } else {
            let Some(list) = ticket.kept.as_mut() else {
                return false;
            };
            let Some(index) = list.iter().position(|k| k.id == id) else {
                return false;
            };
            let gone = list.swap_remove(index);
            if list.is_empty() {
                ticket.kept = None;
            }
            hub.drop_kept(session, user, vec![gone], out);
        }
        reply_receipt(ticket.version, session, frame.header("receipt"), out);
        true
    }

    fn broker(&mut self) -> &mut Broker {
        let now = self.now_ms;
        let hub = self.hub;
        self.broker.get_or_insert_with(|| {
            let mut broker = hub.broker();
            broker.set_now(now);
            broker
        })
    }

    /// Lets go of the broker (before work that must not hold it).
    fn release(&mut self) {
        self.broker = None;
    }

    /// A SEND handled here, or `false` for the broker to handle.
    fn send(&mut self, session: SessionId, frame: &Frame<'_>, out: &mut Vec<Action>) -> bool {
        let hub = self.hub;
        let Some(ticket) = self.ticket.as_mut() else {
            return false;
        };
        let receipt = frame.header("receipt");
        if let (Some(rate), Some(bucket)) = (hub.send_rate, ticket.sends.as_mut()) {
            if !bucket.take(rate, self.now_ms) {
                let message = format!(
                    "SEND rate over {} a second (bursts of {})",
                    rate.per_second, rate.burst
                );
                error(ticket.version, session, message, receipt, out);
                return true;
            }
        }
        if !hub.sharded {
            return false;
        }
        let Some(destination) = frame.header("destination") else {
            return false;
        };
        let rules = &hub.send_rules;
        let user = Some(ticket.user.as_deref());
        let kind = match check_send(
            &rules.prefixes,
            &rules.app_only,
            &rules.permissions,
            user,
            destination,
        ) {
            Ok(kind) => kind,
            Err(message) => {
                error(ticket.version, session, message, receipt, out);
                return true;
            }
        };
        let stored = Stored {
            destination: destination.to_owned(),
            headers: message_headers(frame),
            body: Bytes::copy_from_slice(frame.body),
        };
        let version = ticket.version;
        if let Some(tx) = frame.header("transaction") {
            let limit = rules.max_transaction_frames;
            match ticket.transactions.add(tx, TxOp::Send(stored), limit) {
                Ok(()) => reply_receipt(version, session, receipt, out),
                Err(message) => error(version, session, message, receipt, out),
            }
            return true;
        }
        self.deliver(session, kind, stored, out);
        reply_receipt(version, session, receipt, out);
        true
    }

    /// A checked SEND of `kind` (at once, or at its transaction's COMMIT): to the workers'
    /// topic tables, the queue's shard, the user's shard or the application; a topic SEND
    /// while the application holds topic subscriptions of its own through the broker, where
    /// those live.
    fn deliver(&mut self, session: SessionId, kind: Kind, stored: Stored, out: &mut Vec<Action>) {
        let hub = self.hub;
        let rules = &hub.send_rules;
        match kind {
            Kind::Queue => hub.queues.send(stored, out),
            Kind::User => {
                // check_send refused any other shape of users' destination.
                if let Some((name, dest)) = split_user(&rules.prefixes, &stored.destination) {
                    let shown = format!("{}{dest}", rules.prefixes.user);
                    hub.users
                        .send_to_user(name, &dest, &shown, stored.headers, stored.body, out);
                }
            }
            Kind::App => {
                let destination = rules
                    .prefixes
                    .strip_app(&stored.destination)
                    .unwrap_or(&stored.destination)
                    .to_owned();
                let user = self
                    .ticket
                    .as_ref()
                    .and_then(|t| t.user.as_deref())
                    .map(str::to_owned);
                out.push(Action::App(AppMessage {
                    session,
                    user,
                    destination,
                    headers: stored.headers,
                    body: stored.body,
                }));
            }
            Kind::Topic if hub.internal_topic_subs.load(Ordering::Relaxed) == 0 => {
                out.push(Action::Publish(Arc::new(Published::new(
                    stored.destination,
                    stored.headers,
                    stored.body,
                ))))
            }
            Kind::Topic => {
                self.broker()
                    .publish(&stored.destination, stored.headers, stored.body, out);
            }
        }
    }
}

impl Router<'_> {
    /// An ACK or NACK outside a transaction, handled here; `false` for the broker to handle
    /// (inside a transaction, or without the header that names the message, which gets the
    /// broker's ERROR). A queue message's id names its shard and part (see
    /// [`crate::broker::queues`]): only that shard is locked. A topic message's
    /// (`{message-id}-t{key}`) is never tracked, and an unknown one is ignored, as the broker
    /// does.
    fn ack(&mut self, session: SessionId, frame: &Frame<'_>, out: &mut Vec<Action>) -> bool {
        let hub = self.hub;
        let Some(ticket) = self.ticket.as_ref() else {
            return false;
        };
        if !hub.sharded {
            return false;
        }
        let id = match ticket.version {
            Version::V1_2 => frame.header("id"),
            _ => frame.header("message-id"),
        };
        let Some(id) = id else {
            return false;
        };
        let (nack, receipt) = (frame.command == Command::Nack, frame.header("receipt"));
        let version = ticket.version;
        if let Some(tx) = frame.header("transaction") {
            let op = TxOp::Ack {
                id: id.to_owned(),
                nack,
            };
            let limit = hub.send_rules.max_transaction_frames;
            let Some(ticket) = self.ticket.as_mut() else {
                return false;
            };
            if let Err(message) = ticket.transactions.add(tx, op, limit) {
                error(version, session, message, receipt, out);
                return true;
            }
        } else {
            hub.queues.settle(session, id, nack, out);
        }
        reply_receipt(version, session, receipt, out);
        true
    }

    /// BEGIN, COMMIT or ABORT, handled here with the session's own transactions (kept in its
    /// [`Ticket`]); `false` for the broker to handle. A COMMIT carries out what the
    /// transaction held, in order, as the frames would have been outside it.
    fn transaction(
        &mut self,
        session: SessionId,
        frame: &Frame<'_>,
        out: &mut Vec<Action>,
    ) -> bool {
        let hub = self.hub;
        if !hub.sharded {
            return false;
        }
        let Some(ticket) = self.ticket.as_mut() else {
            return false;
        };
        let (version, receipt) = (ticket.version, frame.header("receipt"));
        let result = named(frame).and_then(|tx| match frame.command {
            Command::Begin => ticket
                .transactions
                .begin(tx, hub.send_rules.max_transactions)
                .map(|()| Vec::new()),
            _ => ticket.transactions.take(tx),
        });
        let ops = match result {
            Ok(ops) => ops,
            Err(message) => {
                error(version, session, message, receipt, out);
                return true;
            }
        };
        if frame.command == Command::Commit {
            for op in ops {
                self.carry_out(session, op, out);
            }
        }
        reply_receipt(version, session, receipt, out);
        true
    }

    /// One frame a committed transaction held.
    fn carry_out(&mut self, session: SessionId, op: TxOp, out: &mut Vec<Action>) {
        match op {
            TxOp::Ack { id, nack } => {
                self.hub.queues.settle(session, &id, nack, out);
            }
            TxOp::Send(stored) => {
                let prefixes = &self.hub.send_rules.prefixes;
                let kind = prefixes.kind(&stored.destination).unwrap_or(Kind::Topic);
                self.deliver(session, kind, stored, out);
            }
        }
    }
}

/// The RECEIPT a frame asked for, if it did.
fn reply_receipt(
    version: Version,
    session: SessionId,
    receipt: Option<&str>,
    out: &mut Vec<Action>,
) {
    if let Some(frame) = receipt.and_then(|r| receipt_frame_in(Some(version), r)) {
        out.push(Action::Send { to: session, frame });
    }
}

/// ERROR, then close (the broker's way, for a frame refused here).
fn error(
    version: Version,
    session: SessionId,
    message: String,
    receipt: Option<&str>,
    out: &mut Vec<Action>,
) {
    if let Some(frame) = error_frame_in(Some(version), &message, "", receipt) {
        out.push(Action::Send { to: session, frame });
    }
    out.push(Action::Close {
        to: session,
        ending: Ending::Error(message),
    });
}

impl Sink for Router<'_> {
    fn version(&self, _session: SessionId) -> Option<Version> {
        self.ticket.as_ref().map(|t| t.version)
    }

    fn needs_authentication(
        &mut self,
        session: SessionId,
        frame: &Frame<'_>,
    ) -> Option<Credentials> {
        if self.ticket.is_some() || !matches!(frame.command, Command::Connect | Command::Stomp) {
            return None;
        }
        self.broker().needs_authentication(session, frame)
    }

    fn handle(&mut self, session: SessionId, frame: &Frame<'_>, out: &mut Vec<Action>) {
        let around = match frame.command {
            Command::Send => self.send(session, frame, out),
            Command::Ack | Command::Nack => self.ack(session, frame, out),
            Command::Begin | Command::Commit | Command::Abort => {
                self.transaction(session, frame, out)
            }
            _ => false,
        };
        if around {
            // Others may take the broker while this session publishes.
            self.release();
            return;
        }
        if self.hub.sharded && self.ticket.is_some() {
            match frame.command {
                Command::Subscribe => return self.subscribe(session, frame, out),
                Command::Unsubscribe if self.unsubscribe(session, frame, out) => return,
                _ => {}
            }
        }
        let connecting = self.ticket.is_none();
        let hub = self.hub;
        let now = self.now_ms;
        let broker = self.broker();
        broker.handle(session, frame, out);
        if connecting {
            if let Some(version) = broker.version(session) {
                let user = broker.user(session).map(Arc::from);
                *self.ticket = Some(Ticket {
                    version,
                    user,
                    sends: hub.send_rate.map(|rate| Bucket::full(rate, now)),
                    kept: None,
                    transactions: Default::default(),
                });
            }
        }
    }

    fn parse_error(&mut self, session: SessionId, error: &StompError, out: &mut Vec<Action>) {
        self.broker().parse_error(session, error, out)
    }
}
