//! The broker in relay mode: `/topic`, `/queue` and cross-node `/user` destinations belong to
//! an external broker, reached through the relay (see [`crate::relay`]); `/app` stays here.
//!
//! The broker stays sans-IO. In relay mode it keeps its sessions, its local subscriptions and
//! their fan-out as before, but what would have crossed the broker now leaves as a
//! [`RelayOp`] in [`Action::Relay`]:
//!
//! * a SEND to a topic or queue is forwarded, never delivered here directly: it comes back
//!   from upstream if anyone on this node subscribes, so a message is delivered once;
//! * every local topic subscription is announced ([`RelayOp::Subscribe`]) and withdrawn
//!   ([`RelayOp::Unsubscribe`]); the relay counts them and holds one upstream subscription
//!   per target and node, whose messages come back through [`Broker::deliver_topic`] to every
//!   local subscription of that target;
//! * a queue subscription is its own upstream subscription (competing consumers and ACK/NACK
//!   keep the external broker's semantics): its messages come back through
//!   [`Broker::deliver_queue`], an ACK or NACK of one is forwarded with the upstream ack id,
//!   and what is unacknowledged when it goes returns to its queue when the relay closes the
//!   session's consumer connection;
//! * `/user/...` subscriptions of a named user join the user's upstream topic; messages for a
//!   user travel there and come back through [`Broker::deliver_user`];
//! * transactions are forwarded too (BEGIN, COMMIT, ABORT, and the SENDs and ACKs in them), as
//!   are receipts: a receipt for a relayed frame is the relay's to give, after the external
//!   broker's own.

use bytes::Bytes;

use super::{destination, AckMode, Action, Broker, Kind, Refusal, SessionId, Stored};
use crate::stomp::Frame;

/// Relay-mode settings of the broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayMode {
    /// The upstream topic, one per user, that carries messages for a user's sessions on every
    /// node: `{user_topic}.{encoded user}`. Default `/topic/sockeye-user`.
    pub user_topic: String,
}

impl Default for RelayMode {
    fn default() -> Self {
        RelayMode {
            user_topic: "/topic/sockeye-user".into(),
        }
    }
}

impl RelayMode {
    /// The upstream topic of `user`: bytes other than ASCII letters, digits, `-` and `_` are
    /// written `~XX` (hex), so that any user name is one word of a topic routing key.
    pub fn user_destination(&self, user: &str) -> String {
        let mut out = String::with_capacity(self.user_topic.len() + 1 + user.len());
        out.push_str(&self.user_topic);
        out.push('.');
        for b in user.bytes() {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                out.push(b as char);
            } else {
                out.push_str(&format!("~{b:02X}"));
            }
        }
        out
    }
}

/// The header a message for a user carries upstream: the destination under `/user` it is for
/// (`/queue/replies`).
pub const USER_DESTINATION_HEADER: &str = "x-sockeye-user-destination";

/// What the relay must do for the broker (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelayOp {
    /// Forward a SEND. `session` is `None` for the application's own publishes. `receipt` is
    /// the client's: answer it after the external broker's.
    Send {
        session: Option<SessionId>,
        destination: String,
        headers: Vec<(String, String)>,
        body: Bytes,
        receipt: Option<String>,
        transaction: Option<String>,
    },
    /// A message for every session of `user` subscribed to `/user{destination}`, on any node.
    SendToUser {
        session: Option<SessionId>,
        user: String,
        destination: String,
        headers: Vec<(String, String)>,
        body: Bytes,
        receipt: Option<String>,
    },
    /// A local subscription to the topic (or pattern) `target` now exists.
    Subscribe {
        session: SessionId,
        target: String,
        receipt: Option<String>,
    },
    /// One local subscription to `target` went away.
    Unsubscribe {
        target: String,
    },
    /// A `/user/...` subscription of a named user now exists.
    SubscribeUser {
        session: SessionId,
        user: String,
        receipt: Option<String>,
    },
    UnsubscribeUser {
        user: String,
    },
    /// A queue subscription, upstream as it is here.
    SubscribeQueue {
        session: SessionId,
        /// The client's subscription id.
        id: String,
        destination: String,
        ack: AckMode,
        receipt: Option<String>,
    },
    UnsubscribeQueue {
        session: SessionId,
        id: String,
    },
    /// Settle an upstream message (`ack` is the upstream ack id).
    Ack {
        session: SessionId,
        id: String,
        ack: String,
        nack: bool,
        transaction: Option<String>,
    },
    Begin {
        session: SessionId,
        transaction: String,
        receipt: Option<String>,
    },
    Commit {
        session: SessionId,
        transaction: String,
        receipt: Option<String>,
    },
    Abort {
        session: SessionId,
        transaction: String,
        receipt: Option<String>,
    },
    /// The session is gone (after its unsubscriptions): abort what it left open upstream and
    /// forget its receipts.
    Closed {
        session: SessionId,
    },
}

impl Broker {
    pub fn relay_mode(&self) -> Option<&RelayMode> {
        self.config.relay.as_ref()
    }

    /// Takes the receipt of the frame being handled for the relay to answer.
    fn take_receipt(&mut self, frame: &Frame<'_>) -> Option<String> {
        self.receipt_taken = true;
        frame.header("receipt").map(str::to_owned)
    }

    /// A SEND in relay mode: forwarded unless it is for the application (`Ok(false)`: the
    /// caller handles it as usual).
    pub(super) fn relay_send(
        &mut self,
        session: SessionId,
        frame: &Frame<'_>,
        kind: Kind,
        stored: &Stored,
        out: &mut Vec<Action>,
    ) -> Result<bool, Refusal> {
        if kind == Kind::App {
            return Ok(false);
        }
        let transaction = frame.header("transaction").map(str::to_owned);
        if let Some(tx) = &transaction {
            // The transaction must be open here too (BEGIN was forwarded and recorded).
            if !self.has_transaction(session, tx) {
                return Err(super::refuse(format!("unknown transaction {tx}")));
            }
        }
        let receipt = self.take_receipt(frame);
        let op = match kind {
            Kind::User => {
                let (user, destination) = self.split_user_send(&stored.destination)?;
                if transaction.is_some() {
                    return Err(super::refuse(
                        "a SEND to a user destination cannot be part of a transaction",
                    ));
                }
                RelayOp::SendToUser {
                    session: Some(session),
                    user,
                    destination,
                    headers: stored.headers.clone(),
                    body: stored.body.clone(),
                    receipt,
                }
            }
            _ => RelayOp::Send {
                session: Some(session),
                destination: stored.destination.clone(),
                headers: stored.headers.clone(),
                body: stored.body.clone(),
                receipt,
                transaction,
            },
        };
        out.push(Action::Relay(op));
        Ok(true)
    }

    /// `/user/{name}/queue/x` → (`name`, `/queue/x`).
    fn split_user_send(&self, destination: &str) -> Result<(String, String), Refusal> {
        super::routing::split_user(&self.config.prefixes, destination)
            .map(|(name, dest)| (name.to_owned(), dest))
            .ok_or_else(|| {
                super::refuse(format!(
                    "invalid user destination {destination} (want /user/NAME/...)"
                ))
            })
    }

    /// The application's publish in relay mode (topic, queue or user destination).
    pub(super) fn relay_publish(&mut self, stored: Stored, out: &mut Vec<Action>) {
        match self.config.prefixes.kind(&stored.destination) {
            Some(Kind::Topic | Kind::Queue) => out.push(Action::Relay(RelayOp::Send {
                session: None,
                destination: stored.destination,
                headers: stored.headers,
                body: stored.body,
                receipt: None,
                transaction: None,
            })),
            Some(Kind::User) => match self.split_user_send(&stored.destination) {
                Ok((user, destination)) => out.push(Action::Relay(RelayOp::SendToUser {
                    session: None,
                    user,
                    destination,
                    headers: stored.headers,
                    body: stored.body,
                    receipt: None,
                })),
                Err(r) => {
                    tracing::warn!(reason = %r.message, "publish to a user destination not sent")
                }
            },
            Some(Kind::App) | None => {}
        }
    }

    /// A new local subscription `key` in relay mode: announce it upstream.
    pub(super) fn relay_subscribe(
        &mut self,
        key: usize,
        kind: Kind,
        frame: &Frame<'_>,
        out: &mut Vec<Action>,
    ) {
        let sub = &self.subs[key];
        let (session, is_user, user, target, id, ack) = (
            sub.session,
            sub.is_user,
            sub.user.clone(),
            sub.target.clone(),
            sub.id.clone(),
            sub.ack,
        );
        let op = if is_user {
            // Anonymous sessions' user destinations are only ever this node's (replies to the
            // session itself).
            let Some(user) = user else { return };
            RelayOp::SubscribeUser {
                session,
                user,
                receipt: self.take_receipt(frame),
            }
        } else if kind == Kind::Queue {
            RelayOp::SubscribeQueue {
                session,
                id,
                destination: target,
                ack,
                receipt: self.take_receipt(frame),
            }
        } else {
            RelayOp::Subscribe {
                session,
                target,
                receipt: self.take_receipt(frame),
            }
        };
        self.subs[key].relayed = true;
        out.push(Action::Relay(op));
    }

    /// A relayed subscription goes: the relay hears of it.
    pub(super) fn relay_unsubscribe(&mut self, sub: &super::Subscription, out: &mut Vec<Action>) {
        if sub.is_user {
            if let Some(user) = &sub.user {
                out.push(Action::Relay(RelayOp::UnsubscribeUser {
                    user: user.clone(),
                }));
            }
            return;
        }
        let queue = self.config.prefixes.kind(&sub.target) == Some(Kind::Queue);
        if !queue {
            out.push(Action::Relay(RelayOp::Unsubscribe {
                target: sub.target.clone(),
            }));
            return;
        }
        // What it holds unacknowledged goes back to the queue when the relay closes the
        // session's consumer connection (see `crate::relay`): a NACK here would race with
        // the broker's redelivery to this very subscription, and give the messages back out
        // of order.
        out.push(Action::Relay(RelayOp::UnsubscribeQueue {
            session: sub.session,
            id: sub.id.clone(),
        }));
    }

    /// An ACK or NACK of a relayed message: settle it here and forward it. `Ok(false)` when
    /// `id` is not a relayed message (the caller settles it locally).
    pub(super) fn relay_ack(
        &mut self,
        session: SessionId,
        id: &str,
        nack: bool,
        transaction: Option<&str>,
        out: &mut Vec<Action>,
    ) -> Result<bool, Refusal> {
        let Some((key, index)) = self.find_pending(session, id, true) else {
            return Ok(false);
        };
        if let Some(tx) = transaction {
            if !self.has_transaction(session, tx) {
                return Err(super::refuse(format!("unknown transaction {tx}")));
            }
        }
        let sub = &mut self.subs[key];
        // `client` is cumulative here; upstream every message is settled on its own (see
        // `relay_unsubscribe`).
        let settled = sub.settle(index);
        for upstream in settled.into_iter().filter_map(|p| p.upstream) {
            out.push(Action::Relay(RelayOp::Ack {
                session,
                id: sub.id.clone(),
                ack: upstream,
                nack,
                transaction: transaction.map(str::to_owned),
            }));
        }
        Ok(true)
    }

    /// BEGIN, COMMIT or ABORT in relay mode: forwarded (the local part of the transaction,
    /// SENDs to the application, is kept here as always).
    pub(super) fn relay_transaction(
        &mut self,
        session: SessionId,
        frame: &Frame<'_>,
        out: &mut Vec<Action>,
    ) {
        if self.config.relay.is_none() {
            return;
        }
        let Some(transaction) = frame.header("transaction").map(str::to_owned) else {
            return;
        };
        let receipt = self.take_receipt(frame);
        let op = match frame.command {
            crate::stomp::Command::Begin => RelayOp::Begin {
                session,
                transaction,
                receipt,
            },
            crate::stomp::Command::Commit => RelayOp::Commit {
                session,
                transaction,
                receipt,
            },
            _ => RelayOp::Abort {
                session,
                transaction,
                receipt,
            },
        };
        out.push(Action::Relay(op));
    }

    /// A message from upstream for the shared subscription to `target`: to every local
    /// subscription of that target (not re-matched: the external broker matched it).
    pub fn deliver_topic(
        &mut self,
        target: &str,
        destination: &str,
        headers: Vec<(String, String)>,
        body: Bytes,
        out: &mut Vec<Action>,
    ) {
        let targets: Vec<usize> = if destination::is_pattern(target) {
            self.patterns
                .iter()
                .copied()
                .filter(|&k| self.subs[k].target == target && !self.subs[k].is_user)
                .collect()
        } else {
            self.exact
                .get(target)
                .map(|list| {
                    list.iter()
                        .copied()
                        .filter(|&k| !self.subs[k].is_user)
                        .collect()
                })
                .unwrap_or_default()
        };
        let stored = Stored {
            destination: destination.to_owned(),
            headers,
            body,
        };
        self.fan_out(&targets, &stored, false, out);
    }

    /// A message from upstream for `user`'s sessions here subscribed to `/user{destination}`.
    pub fn deliver_user(
        &mut self,
        user: &str,
        destination: &str,
        headers: Vec<(String, String)>,
        body: Bytes,
        out: &mut Vec<Action>,
    ) {
        self.publish_to_user_here(user, destination, headers, body, out);
    }

    /// A message from upstream for the queue subscription `id` of `session`; `ack` is the
    /// upstream ack id when the subscription acknowledges. `false` when that subscription is
    /// gone (the relay gives the message back).
    #[allow(clippy::too_many_arguments)]
    pub fn deliver_queue(
        &mut self,
        session: SessionId,
        id: &str,
        destination: &str,
        headers: Vec<(String, String)>,
        body: Bytes,
        ack: Option<String>,
        out: &mut Vec<Action>,
    ) -> bool {
        let Some(key) = self.subscription_key(session, id) else {
            return false;
        };
        let stored = Stored {
            destination: destination.to_owned(),
            headers,
            body,
        };
        let before = self.subs[key].pending.len();
        self.fan_out(&[key], &stored, true, out);
        if self.subs[key].pending.len() > before {
            if let Some(p) = self.subs[key].pending.back_mut() {
                p.upstream = ack;
            }
        }
        true
    }

    /// The upstream connection of queue subscription `id` was lost: the external broker gives
    /// its unacknowledged messages to someone else, so they are forgotten here (a later ACK
    /// of one is ignored).
    pub fn forget_unacked(&mut self, session: SessionId, id: &str) {
        if let Some(key) = self.subscription_key(session, id) {
            self.subs[key].pending.clear();
        }
    }

    fn subscription_key(&self, session: SessionId, id: &str) -> Option<usize> {
        self.sessions
            .get(&session)?
            .subscriptions
            .iter()
            .copied()
            .find(|&k| self.subs[k].id == id)
    }

    /// A RECEIPT for `session` (the relay answers receipts of relayed frames).
    pub fn relay_receipt(&mut self, session: SessionId, id: &str, out: &mut Vec<Action>) {
        self.receipt(session, id, out);
    }
}
