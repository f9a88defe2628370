//! The relay's routing: which upstream subscription serves which local ones, which connection
//! carries what, the sessions waiting for a subscription to be confirmed, and what a RECEIPT,
//! a MESSAGE or a lost connection means for the node.
//!
//! Tables are keyed by destination (shared topic subscriptions, one per target), by user (one
//! upstream subscription per user with `/user` subscriptions here) and by (session,
//! subscription id) for queues; `routes` maps an upstream subscription id back to its entry.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tracing::{debug, info, warn};

use super::upstream::{receipt_number, Upstream, Waiter};
use super::{Delivery, Dialect, Downstream, RelayConfig, Shared};
use crate::broker::{AckMode, RelayMode, RelayOp, SessionId, USER_DESTINATION_HEADER};
use crate::stomp::{Command, Frame};

/// Operations a session may have waiting (while its subscriptions are confirmed) before it
/// is refused.
const MAX_HELD: usize = 4096;

/// Headers of an upstream MESSAGE that are not handed on (the node writes its own).
const UPSTREAM_ONLY: [&str; 7] = [
    "subscription",
    "message-id",
    "destination",
    "ack",
    "content-length",
    // RabbitMQ hands a SEND's `receipt` (the relay's) on to its MESSAGEs.
    "receipt",
    USER_DESTINATION_HEADER,
];

/// An upstream subscription shared by every local subscription of one topic (or by every
/// `/user` subscription of one user).
#[derive(Debug)]
struct SharedSub {
    upstream_id: String,
    conn: usize,
    destination: String,
    count: usize,
    confirmed: bool,
    /// Clients' receipts to answer once confirmed.
    receipts: Vec<(SessionId, String)>,
    /// Sessions whose later frames wait for the confirmation.
    waiting: Vec<SessionId>,
}

#[derive(Debug)]
struct QueueSub {
    upstream_id: String,
    conn: usize,
    destination: String,
    ack: AckMode,
    confirmed: bool,
    receipt: Option<String>,
    waiting: bool,
}

#[derive(Clone, Debug)]
enum Route {
    Topic(String),
    User(String),
    Queue(SessionId, String),
}

#[derive(Debug, Default)]
struct SessionState {
    /// Subscriptions not yet confirmed upstream.
    barrier: usize,
    held: VecDeque<RelayOp>,
    /// Transactions open upstream.
    transactions: HashSet<String>,
    /// Told an ERROR: its frames are dropped until it is closed.
    failed: bool,
}

pub(super) struct Router {
    /// The pool (the first `pool`), then consumer connections of sessions (see
    /// [`Router::consumer_conn`]).
    pub conns: Vec<Upstream>,
    pub pool: usize,
    /// A session's consumer connection: its queue subscriptions that acknowledge live there.
    consumers: HashMap<SessionId, usize>,
    /// Retired consumer connections' slots, for reuse.
    free: Vec<usize>,
    /// Consumer connections to close once their session's queue subscriptions on the pool
    /// are confirmed gone (or at their deadline): see [`Router::retire`].
    parting: Vec<Parting>,
    /// Per session, the UNSUBSCRIBEs of its pool queue subscriptions not yet confirmed.
    withdrawing: HashMap<SessionId, usize>,
    pub config: RelayConfig,
    shared: Arc<Shared>,
    downstream: Arc<dyn Downstream>,
    user_topics: RelayMode,
    topics: HashMap<String, SharedSub>,
    users: HashMap<String, SharedSub>,
    queues: HashMap<(SessionId, String), QueueSub>,
    routes: HashMap<String, Route>,
    sessions: HashMap<SessionId, SessionState>,
    next_id: u64,
    available: bool,
    /// Deliveries read and not yet handed to the node, with (connection, ack id) of those
    /// that a gone subscription must give back.
    batch: Vec<Delivery>,
    acks: Vec<Option<(usize, String)>>,
}

/// A consumer connection waiting to be closed.
#[derive(Debug)]
struct Parting {
    conn: usize,
    session: SessionId,
    deadline: Instant,
}

/// FNV-1a: a stable spread of destinations over connections.
fn spread(key: &str, n: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % n as u64) as usize
}

/// The destination as the external broker spells a subscription pattern (segments split on
/// `/` and `.`; `*` one, `**` any number).
pub(super) fn upstream_pattern(dialect: Dialect, target: &str) -> String {
    match dialect {
        Dialect::Sockeye => target.to_owned(),
        Dialect::RabbitMq | Dialect::ActiveMq => {
            let many = if dialect == Dialect::RabbitMq {
                "#"
            } else {
                ">"
            };
            let mut out = String::with_capacity(target.len());
            let mut rest = target;
            while !rest.is_empty() {
                let end = rest.find(['/', '.']).unwrap_or(rest.len());
                let seg = &rest[..end];
                out.push_str(if seg == "**" { many } else { seg });
                if end < rest.len() {
                    out.push_str(&rest[end..end + 1]);
                    rest = &rest[end + 1..];
                } else {
                    rest = "";
                }
            }
            out
        }
    }
}

/// Upstream, a subscription that acknowledges does so message by message: a cumulative
/// (`client`) ACK on a shared connection would settle other sessions' messages too (RabbitMQ's
/// `multiple` covers the whole channel). The broker keeps `client`'s meaning for its client.
fn ack_mode(ack: AckMode) -> &'static str {
    match ack {
        AckMode::Auto => "auto",
        AckMode::Client | AckMode::ClientIndividual => "client-individual",
    }
}

/// Headers a client's SEND may not carry upstream: the relay's own (`receipt`,
/// `transaction`), what the external broker sets or refuses (`message-id`, `user-id`, which
/// closes a RabbitMQ connection when it is not the relay's login, and the MESSAGE-only ones),
/// and RabbitMQ's queue arguments (a SEND declaring a queue with other arguments than it has
/// closes the connection).
const NOT_FORWARDED: [&str; 27] = [
    "receipt",
    "transaction",
    "message-id",
    "user-id",
    "subscription",
    "ack",
    "redelivered",
    "content-length",
    "destination",
    "x-max-length",
    "x-max-length-bytes",
    "x-message-ttl",
    "x-expires",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-dead-letter-strategy",
    "x-max-priority",
    "x-queue-mode",
    "x-queue-type",
    "x-queue-master-locator",
    "x-queue-leader-locator",
    "x-overflow",
    "x-single-active-consumer",
    "x-delivery-limit",
    "x-max-age",
    "x-initial-cluster-size",
    "x-quorum-initial-group-size",
];

/// A destination as the external broker names it. RabbitMQ refuses a `/` inside a topic or
/// queue name: it is written `%2F` (and comes back so, see [`from_upstream`]).
pub(super) fn upstream_destination(dialect: Dialect, destination: &str) -> String {
    if dialect != Dialect::RabbitMq {
        return destination.to_owned();
    }
    for prefix in ["/topic/", "/queue/"] {
        if let Some(rest) = destination.strip_prefix(prefix) {
            return format!("{prefix}{}", rest.replace('/', "%2F"));
        }
    }
    destination.to_owned()
}

/// A MESSAGE's `destination` as the node names it: RabbitMQ percent-encodes it (`%2F`, `%25`,
/// and every byte outside ASCII).
pub(super) fn from_upstream(dialect: Dialect, destination: &str) -> String {
    if dialect != Dialect::RabbitMq || !destination.contains('%') {
        return destination.to_owned();
    }
    let bytes = destination.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%')
            .then(|| destination.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The upstream subscription for a local target, or why the external broker cannot match it
/// (RabbitMQ matches words separated by `.`, so a pattern with `/` between its segments would
/// silently match nothing).
pub(super) fn upstream_subscription(dialect: Dialect, target: &str) -> Result<String, String> {
    if dialect == Dialect::RabbitMq && crate::broker::destination::is_pattern(target) {
        let rest = ["/topic/", "/queue/"]
            .iter()
            .find_map(|p| target.strip_prefix(p))
            .unwrap_or(target);
        if rest.contains('/') {
            return Err(format!(
                "the external broker matches patterns on '.'-separated words: {target} cannot be relayed"
            ));
        }
    }
    Ok(upstream_destination(
        dialect,
        &upstream_pattern(dialect, target),
    ))
}

impl Router {
    pub fn new(
        config: RelayConfig,
        shared: Arc<Shared>,
        downstream: Arc<dyn Downstream>,
        now: Instant,
    ) -> Self {
        let pool = config.pool.max(1);
        let user_topics = RelayMode {
            user_topic: config.user_topic.clone(),
        };
        Router {
            conns: (0..pool).map(|_| Upstream::new(now)).collect(),
            pool,
            consumers: HashMap::new(),
            parting: Vec::new(),
            withdrawing: HashMap::new(),
            free: Vec::new(),
            config,
            shared,
            downstream,
            user_topics,
            topics: HashMap::new(),
            users: HashMap::new(),
            queues: HashMap::new(),
            routes: HashMap::new(),
            sessions: HashMap::new(),
            next_id: 0,
            available: false,
            batch: Vec::new(),
            acks: Vec::new(),
        }
    }

    fn conn_of(&self, session: SessionId) -> usize {
        (session % self.pool as u64) as usize
    }

    fn fresh_id(&mut self, kind: char) -> String {
        self.next_id += 1;
        format!("{kind}{}", self.next_id)
    }

    fn count_subscriptions(&self) {
        self.shared.subscriptions.store(
            self.topics.len() + self.users.len() + self.queues.len(),
            Ordering::Relaxed,
        );
    }

    // ---- operations from the node ----

    pub fn op(&mut self, op: RelayOp) {
        match op {
            RelayOp::Subscribe {
                session,
                target,
                receipt,
            } => match upstream_subscription(self.config.dialect, &target) {
                Ok(destination) => {
                    self.subscribe_shared(false, target, destination, session, receipt)
                }
                Err(why) => {
                    info!(session, %why, "relay: subscription refused");
                    self.fail(
                        session,
                        "destination not supported",
                        &why,
                        receipt.as_deref(),
                    );
                }
            },
            RelayOp::Unsubscribe { target } => self.unsubscribe_shared(false, &target),
            RelayOp::SubscribeUser {
                session,
                user,
                receipt,
            } => {
                let destination = self.user_topics.user_destination(&user);
                self.subscribe_shared(true, user, destination, session, receipt);
            }
            RelayOp::UnsubscribeUser { user } => self.unsubscribe_shared(true, &user),
            RelayOp::SubscribeQueue {
                session,
                id,
                destination,
                ack,
                receipt,
            } => {
                let upstream = upstream_destination(self.config.dialect, &destination);
                self.subscribe_queue(session, id, upstream, ack, receipt)
            }
            RelayOp::Closed { session } => self.closed(session),
            op => {
                let session = match &op {
                    RelayOp::Send { session, .. } | RelayOp::SendToUser { session, .. } => *session,
                    RelayOp::Ack { session, .. }
                    | RelayOp::UnsubscribeQueue { session, .. }
                    | RelayOp::Begin { session, .. }
                    | RelayOp::Commit { session, .. }
                    | RelayOp::Abort { session, .. } => Some(*session),
                    _ => None,
                };
                if let Some(s) = session {
                    let state = self.sessions.entry(s).or_default();
                    if state.failed {
                        return;
                    }
                    if state.barrier > 0 || !state.held.is_empty() {
                        if state.held.len() >= MAX_HELD {
                            state.failed = true;
                            warn!(
                                session = s,
                                "relay: too many frames waiting for a subscription to be confirmed"
                            );
                            self.downstream.error(
                                s,
                                "too many frames waiting",
                                "the external broker has not confirmed this session's subscriptions yet",
                                None,
                            );
                            return;
                        }
                        state.held.push_back(op);
                        return;
                    }
                }
                self.execute(op);
            }
        }
    }

    /// Refuses a session's frame: ERROR (with its receipt), then the session is closed.
    fn fail(&mut self, session: SessionId, message: &str, detail: &str, receipt: Option<&str>) {
        let state = self.sessions.entry(session).or_default();
        if state.failed {
            return;
        }
        state.failed = true;
        state.held.clear();
        self.downstream.error(session, message, detail, receipt);
    }

    /// Whether connection `conn` can take a SEND now; refuses it otherwise.
    fn can_send(&mut self, conn: usize, session: Option<SessionId>, receipt: Option<&str>) -> bool {
        let reason = if !self.conns[conn].is_up() {
            Some((
                "broker unavailable",
                "the external broker cannot be reached; the message was not sent",
            ))
        } else if self.conns[conn].buffered() > self.config.max_buffered {
            Some((
                "broker backlog full",
                "the external broker is not taking messages as fast as they come; the message was not sent",
            ))
        } else {
            None
        };
        let Some((message, detail)) = reason else {
            return true;
        };
        self.shared.refused.fetch_add(1, Ordering::Relaxed);
        match session {
            Some(s) => {
                info!(session = s, reason = message, "relay: SEND refused");
                self.fail(s, message, detail, receipt);
            }
            None => warn!(
                reason = message,
                "relay: the application's message was not sent"
            ),
        }
        false
    }

    fn execute(&mut self, op: RelayOp) {
        match op {
            RelayOp::Send {
                session,
                destination,
                headers,
                body,
                receipt,
                transaction,
            } => {
                let conn =
                    session.map_or_else(|| spread(&destination, self.pool), |s| self.conn_of(s));
                let tx = transaction.map(|t| self.transaction_id(session.unwrap_or(0), &t));
                self.forward_send(
                    conn,
                    session,
                    &destination,
                    &headers,
                    None,
                    &body,
                    receipt,
                    tx,
                );
            }
            RelayOp::SendToUser {
                session,
                user,
                destination,
                headers,
                body,
                receipt,
            } => {
                let upstream = self.user_topics.user_destination(&user);
                let conn =
                    session.map_or_else(|| spread(&upstream, self.pool), |s| self.conn_of(s));
                self.forward_send(
                    conn,
                    session,
                    &upstream,
                    &headers,
                    Some(&destination),
                    &body,
                    receipt,
                    None,
                );
            }
            RelayOp::Ack {
                session,
                id,
                ack,
                nack,
                transaction,
            } => {
                let Some(q) = self.queues.get(&(session, id)) else {
                    return;
                };
                let conn = q.conn;
                let Some((generation, ack)) = ack.split_once(':') else {
                    return;
                };
                if !self.conns[conn].is_up()
                    || generation.parse::<u64>().ok() != Some(self.conns[conn].generation)
                {
                    // Delivered over a connection since lost: the broker redelivers it.
                    debug!(
                        session,
                        "relay: ACK of a message from a lost connection ignored"
                    );
                    return;
                }
                let tx = transaction.map(|t| self.transaction_id(session, &t));
                let mut headers = vec![("id", ack)];
                if let Some(tx) = &tx {
                    headers.push(("transaction", tx));
                }
                let command = if nack { Command::Nack } else { Command::Ack };
                self.conns[conn].frame(command, headers, b"");
            }
            RelayOp::UnsubscribeQueue { session, id } => {
                if let Some(q) = self.queues.remove(&(session, id)) {
                    self.routes.remove(&q.upstream_id);
                    if q.waiting {
                        self.release(session);
                    }
                    let last_on_it = !self.queues.values().any(|o| o.conn == q.conn);
                    if q.conn >= self.pool && last_on_it {
                        // Closing the consumer connection gives back what it holds.
                        self.retire(session, q.conn);
                    } else if self.conns[q.conn].is_up() {
                        let mut headers = vec![("id", q.upstream_id.clone())];
                        if q.conn < self.pool {
                            // Confirmed, so that a consumer connection of the session is
                            // closed only once this subscription cannot take its messages.
                            let r = self.conns[q.conn].receipt(Waiter::Withdraw { session });
                            headers.push(("receipt", r));
                            *self.withdrawing.entry(session).or_default() += 1;
                        }
                        self.conns[q.conn].frame(
                            Command::Unsubscribe,
                            headers.iter().map(|(n, v)| (*n, v.as_str())),
                            b"",
                        );
                    }
                    self.count_subscriptions();
                }
            }
            RelayOp::Begin {
                session,
                transaction,
                receipt,
            } => self.op_transaction(Command::Begin, session, transaction, receipt),
            RelayOp::Commit {
                session,
                transaction,
                receipt,
            } => self.op_transaction(Command::Commit, session, transaction, receipt),
            RelayOp::Abort {
                session,
                transaction,
                receipt,
            } => self.op_transaction(Command::Abort, session, transaction, receipt),
            _ => {}
        }
    }

    fn transaction_id(&self, session: SessionId, tx: &str) -> String {
        format!("s{session}.{tx}")
    }

    #[allow(clippy::too_many_arguments)]
    fn forward_send(
        &mut self,
        conn: usize,
        session: Option<SessionId>,
        destination: &str,
        headers: &[(String, String)],
        user_destination: Option<&str>,
        body: &Bytes,
        receipt: Option<String>,
        transaction: Option<String>,
    ) {
        if !self.can_send(conn, session, receipt.as_deref()) {
            return;
        }
        let r = self.conns[conn].receipt(Waiter::Send { session, receipt });
        let destination = upstream_destination(self.config.dialect, destination);
        let mut list: Vec<(&str, &str)> = Vec::with_capacity(headers.len() + 4);
        list.push(("destination", &destination));
        list.extend(
            headers
                .iter()
                .filter(|(n, _)| !NOT_FORWARDED.contains(&n.as_str()))
                .map(|(n, v)| (n.as_str(), v.as_str())),
        );
        if let Some(d) = user_destination {
            list.push((USER_DESTINATION_HEADER, d));
        }
        if let Some(tx) = &transaction {
            list.push(("transaction", tx));
        }
        list.push(("receipt", &r));
        if self.conns[conn].frame(Command::Send, list, body) > 0 {
            self.shared.sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn op_transaction(
        &mut self,
        command: Command,
        session: SessionId,
        tx: String,
        receipt: Option<String>,
    ) {
        let conn = self.conn_of(session);
        if !self.conns[conn].is_up() {
            self.fail(
                session,
                "broker unavailable",
                "the external broker cannot be reached; the transaction cannot go on",
                receipt.as_deref(),
            );
            return;
        }
        let state = self.sessions.entry(session).or_default();
        match command {
            Command::Begin => {
                state.transactions.insert(tx.clone());
            }
            _ => {
                state.transactions.remove(&tx);
            }
        }
        let id = self.transaction_id(session, &tx);
        // ACKs in the transaction go to the session's consumer connection: it has the
        // transaction too (not atomic across the two connections).
        if let Some(&consumer) = self.consumers.get(&session) {
            if self.conns[consumer].is_up() {
                self.conns[consumer].frame(command, [("transaction", id.as_str())], b"");
            }
        }
        let r = self.conns[conn].receipt(Waiter::Transaction { session, receipt });
        self.conns[conn].frame(
            command,
            [("transaction", id.as_str()), ("receipt", &r)],
            b"",
        );
    }
}

// ---- subscriptions ----
impl Router {
    fn table(&mut self, user: bool) -> &mut HashMap<String, SharedSub> {
        if user {
            &mut self.users
        } else {
            &mut self.topics
        }
    }

    /// One more local subscription to `key` (a topic target, or a user): the first one makes
    /// the upstream subscription; until it is confirmed, the session's later frames wait.
    fn subscribe_shared(
        &mut self,
        user: bool,
        key: String,
        destination: String,
        session: SessionId,
        receipt: Option<String>,
    ) {
        if !self.table(user).contains_key(&key) {
            let upstream_id = self.fresh_id(if user { 'u' } else { 't' });
            let conn = spread(&destination, self.pool);
            let route = if user {
                Route::User(key.clone())
            } else {
                Route::Topic(key.clone())
            };
            self.routes.insert(upstream_id.clone(), route);
            let sub = SharedSub {
                upstream_id,
                conn,
                destination,
                count: 0,
                confirmed: false,
                receipts: Vec::new(),
                waiting: Vec::new(),
            };
            if self.conns[conn].is_up() {
                Self::write_subscribe(
                    &mut self.conns[conn],
                    &sub.upstream_id,
                    &sub.destination,
                    AckMode::Auto,
                    0,
                );
            }
            self.table(user).insert(key.clone(), sub);
            self.count_subscriptions();
        }
        let Some(sub) = self.table(user).get_mut(&key) else {
            return;
        };
        sub.count += 1;
        if sub.confirmed {
            if let Some(r) = receipt {
                self.downstream.receipt(session, &r);
            }
            return;
        }
        if let Some(r) = receipt {
            sub.receipts.push((session, r));
        }
        sub.waiting.push(session);
        self.sessions.entry(session).or_default().barrier += 1;
    }

    fn unsubscribe_shared(&mut self, user: bool, key: &str) {
        let Some(sub) = self.table(user).get_mut(key) else {
            return;
        };
        sub.count = sub.count.saturating_sub(1);
        if sub.count > 0 {
            return;
        }
        let Some(sub) = self.table(user).remove(key) else {
            return;
        };
        self.routes.remove(&sub.upstream_id);
        if self.conns[sub.conn].is_up() {
            self.conns[sub.conn].frame(
                Command::Unsubscribe,
                [("id", sub.upstream_id.as_str())],
                b"",
            );
        }
        // Whoever waited for it waits no more.
        for (s, r) in sub.receipts {
            self.downstream.receipt(s, &r);
        }
        for s in sub.waiting {
            self.release(s);
        }
        self.count_subscriptions();
    }

    fn subscribe_queue(
        &mut self,
        session: SessionId,
        id: String,
        destination: String,
        ack: AckMode,
        receipt: Option<String>,
    ) {
        let upstream_id = self.fresh_id('q');
        let conn = match ack {
            AckMode::Auto => self.conn_of(session),
            _ => self.consumer_conn(session),
        };
        self.routes
            .insert(upstream_id.clone(), Route::Queue(session, id.clone()));
        if self.conns[conn].is_up() {
            let prefetch = if ack == AckMode::Auto {
                0
            } else {
                self.config.prefetch
            };
            Self::write_subscribe(
                &mut self.conns[conn],
                &upstream_id,
                &destination,
                ack,
                prefetch,
            );
        }
        self.sessions.entry(session).or_default().barrier += 1;
        let old = self.queues.insert(
            (session, id),
            QueueSub {
                upstream_id,
                conn,
                destination,
                ack,
                confirmed: false,
                receipt,
                waiting: true,
            },
        );
        if let Some(old) = old {
            // The broker refuses duplicate ids; a stale entry is dropped all the same.
            self.routes.remove(&old.upstream_id);
        }
        self.count_subscriptions();
    }

    fn write_subscribe(
        conn: &mut Upstream,
        upstream_id: &str,
        destination: &str,
        ack: AckMode,
        prefetch: usize,
    ) {
        let r = conn.receipt(Waiter::Subscribe {
            upstream_id: upstream_id.to_owned(),
        });
        let prefetch = prefetch.to_string();
        let mut headers = vec![
            ("destination", destination),
            ("id", upstream_id),
            ("ack", ack_mode(ack)),
            ("receipt", r.as_str()),
        ];
        if ack != AckMode::Auto {
            headers.push(("prefetch-count", prefetch.as_str()));
        }
        conn.frame(Command::Subscribe, headers, b"");
    }

    /// One of the session's subscriptions is confirmed (or gone): when none is left
    /// unconfirmed, what it held goes out, in order.
    fn release(&mut self, session: SessionId) {
        let Some(state) = self.sessions.get_mut(&session) else {
            return;
        };
        state.barrier = state.barrier.saturating_sub(1);
        while self
            .sessions
            .get(&session)
            .is_some_and(|s| s.barrier == 0 && !s.failed)
        {
            let Some(op) = self
                .sessions
                .get_mut(&session)
                .and_then(|s| s.held.pop_front())
            else {
                break;
            };
            self.execute(op);
        }
    }

    /// The upstream subscription `upstream_id` is in place.
    fn confirm(&mut self, upstream_id: &str) {
        match self.routes.get(upstream_id).cloned() {
            Some(Route::Topic(key)) | Some(Route::User(key)) => {
                let user = matches!(self.routes.get(upstream_id), Some(Route::User(_)));
                let Some(sub) = self.table(user).get_mut(&key) else {
                    return;
                };
                sub.confirmed = true;
                let receipts = std::mem::take(&mut sub.receipts);
                let waiting = std::mem::take(&mut sub.waiting);
                for (s, r) in receipts {
                    self.downstream.receipt(s, &r);
                }
                for s in waiting {
                    self.release(s);
                }
            }
            Some(Route::Queue(session, id)) => {
                let Some(q) = self.queues.get_mut(&(session, id)) else {
                    return;
                };
                q.confirmed = true;
                let receipt = q.receipt.take();
                let waiting = std::mem::replace(&mut q.waiting, false);
                if let Some(r) = receipt {
                    self.downstream.receipt(session, &r);
                }
                if waiting {
                    self.release(session);
                }
            }
            None => {}
        }
    }

    /// The session is gone: what it held goes out, what it left open upstream is aborted.
    fn closed(&mut self, session: SessionId) {
        let Some(mut state) = self.sessions.remove(&session) else {
            return;
        };
        if !state.failed {
            for op in state.held.drain(..) {
                self.execute(op);
            }
        }
        let conn = self.conn_of(session);
        if self.conns[conn].is_up() {
            for tx in &state.transactions {
                let id = self.transaction_id(session, tx);
                self.conns[conn].frame(Command::Abort, [("transaction", id.as_str())], b"");
            }
        }
        if let Some(&consumer) = self.consumers.get(&session) {
            self.retire(session, consumer);
        }
    }

    /// The session's consumer connection, made on first use. A subscription that
    /// acknowledges is not put on the shared pool: RabbitMQ forgets a subscription's
    /// unacknowledged messages at UNSUBSCRIBE (they stay stuck until the connection closes,
    /// and a NACK before it races with their redelivery to the same subscription), so they
    /// live on a connection that is closed when the session needs it no more.
    fn consumer_conn(&mut self, session: SessionId) -> usize {
        if let Some(&c) = self.consumers.get(&session) {
            return c;
        }
        let now = Instant::now();
        let c = match self.free.pop() {
            Some(c) => {
                self.conns[c] = Upstream::new(now);
                c
            }
            None => {
                self.conns.push(Upstream::new(now));
                self.conns.len() - 1
            }
        };
        self.consumers.insert(session, c);
        c
    }

    /// A session's consumer connection is needed no more: it is to be closed, which gives
    /// what it holds unacknowledged back to the queues. Not at once: the broker may hand a
    /// message given back to another subscription of the same session on the pool, and if
    /// that one is being withdrawn too (the session is closing) and the broker sees the
    /// close before the UNSUBSCRIBE (each connection is served on its own), the message is
    /// delivered to a subscription nobody reads and lost (an `auto` one is acknowledged as
    /// it is sent). So the connection parts once every UNSUBSCRIBE of the session's pool
    /// queue subscriptions is confirmed, or at `withdraw_timeout` ([`Router::part`]).
    fn retire(&mut self, session: SessionId, conn: usize) {
        self.consumers.remove(&session);
        let stale: Vec<(SessionId, String)> = self
            .queues
            .iter()
            .filter(|(_, q)| q.conn == conn)
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            if let Some(q) = self.queues.remove(&key) {
                self.routes.remove(&q.upstream_id);
            }
        }
        self.parting.push(Parting {
            conn,
            session,
            deadline: Instant::now() + self.config.withdraw_timeout,
        });
    }

    /// Marks for closing the parting consumer connections whose session has no withdrawal
    /// left unconfirmed, or whose deadline has come (the loop closes them). Called once the
    /// operations of a turn are taken: a closing session's withdrawals come in one batch.
    pub fn part(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.parting.len() {
            let p = &self.parting[i];
            let waiting = self.withdrawing.get(&p.session).copied().unwrap_or(0);
            if waiting > 0 && now < p.deadline {
                i += 1;
                continue;
            }
            if waiting > 0 {
                warn!(
                    session = p.session,
                    unconfirmed = waiting,
                    "relay: the broker did not confirm a closing session's UNSUBSCRIBEs in time; its consumer connection is closed anyway"
                );
                self.withdrawing.remove(&p.session);
            }
            let p = self.parting.swap_remove(i);
            self.conns[p.conn].retire = true;
        }
    }

    /// When the next parting connection must go at the latest.
    pub fn parting_deadline(&self) -> Option<Instant> {
        self.parting.iter().map(|p| p.deadline).min()
    }

    /// One of a session's pool UNSUBSCRIBEs is confirmed (or moot: its connection is gone).
    fn withdrawn(&mut self, session: SessionId) {
        if let Some(n) = self.withdrawing.get_mut(&session) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.withdrawing.remove(&session);
            }
        }
    }

    /// The loop closed a retired connection: its slot is free.
    pub fn retired(&mut self, conn: usize) {
        self.conns[conn].retire = false;
        self.conns[conn].phase = super::upstream::Phase::Retired;
        self.conns[conn].waiters.clear();
        self.free.push(conn);
    }
}

// ---- what comes from upstream ----
impl Router {
    /// A frame from connection `conn` (after CONNECTED).
    pub fn frame(&mut self, conn: usize, frame: &Frame<'_>) -> Result<(), String> {
        match frame.command {
            Command::Message => {
                self.shared.received.fetch_add(1, Ordering::Relaxed);
                self.message(conn, frame);
                Ok(())
            }
            Command::Receipt => {
                if let Some(n) = frame.header("receipt-id").and_then(receipt_number) {
                    if let Some(waiter) = self.conns[conn].waiters.remove(&n) {
                        self.settled(waiter);
                    }
                }
                Ok(())
            }
            Command::Error => {
                // Most ERRORs are about one frame and leave the connection open (RabbitMQ
                // closes it itself when they do not: the end of the stream follows).
                let message = frame.header("message").unwrap_or("").to_owned();
                let detail = String::from_utf8_lossy(frame.body).trim().to_owned();
                warn!(conn, message = %message, detail = %detail, "relay: ERROR from the external broker");
                if let Some(n) = frame.header("receipt-id").and_then(receipt_number) {
                    if let Some(waiter) = self.conns[conn].waiters.remove(&n) {
                        self.refused(waiter, &message, &detail);
                    }
                }
                Ok(())
            }
            other => Err(format!("unexpected {other} from the broker")),
        }
    }

    fn message(&mut self, conn: usize, frame: &Frame<'_>) {
        let Some(sub) = frame.header("subscription") else {
            return;
        };
        let destination = from_upstream(
            self.config.dialect,
            frame.header("destination").unwrap_or(""),
        );
        let headers: Vec<(String, String)> = frame
            .headers
            .iter()
            .filter(|h| !UPSTREAM_ONLY.contains(&&*h.name))
            // RabbitMQ marks every message; only a redelivery is news.
            .filter(|h| !(h.name == "redelivered" && h.value == "false"))
            .map(|h| (h.name.to_string(), h.value.to_string()))
            .collect();
        let body = Bytes::copy_from_slice(frame.body);
        let ack = frame.header("ack").map(str::to_owned);
        let delivery = match self.routes.get(sub) {
            Some(Route::Topic(target)) => Delivery::Topic {
                target: target.clone(),
                destination,
                headers,
                body,
            },
            Some(Route::User(user)) => {
                let Some(inner) = frame.header(USER_DESTINATION_HEADER) else {
                    return;
                };
                Delivery::User {
                    user: user.clone(),
                    destination: inner.to_owned(),
                    headers,
                    body,
                }
            }
            Some(Route::Queue(session, id)) => {
                let generation = self.conns[conn].generation;
                Delivery::Queue {
                    session: *session,
                    id: id.clone(),
                    destination,
                    headers,
                    body,
                    ack: ack.as_ref().map(|a| format!("{generation}:{a}")),
                }
            }
            None => {
                // A subscription withdrawn while its messages were on the way. Its
                // unacknowledged ones cannot be settled any more (RabbitMQ forgets a
                // subscription's deliveries at UNSUBSCRIBE): they go back to the queue when
                // this connection closes. Counted and logged, not lost in silence.
                if ack.is_some() {
                    self.shared.orphaned.fetch_add(1, Ordering::Relaxed);
                    warn!(conn, subscription = sub, "relay: a queue message reached a withdrawn subscription; the broker redelivers it when this connection closes");
                }
                return;
            }
        };
        let give_back = match &delivery {
            Delivery::Queue { .. } => ack.map(|a| (conn, a)),
            _ => None,
        };
        self.batch.push(delivery);
        self.acks.push(give_back);
    }

    /// Hands what was read to the node; gives back queue messages nobody here wants now (the
    /// subscription is still open upstream: its withdrawal is on the way after this).
    pub fn deliver(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        let acks = std::mem::take(&mut self.acks);
        for i in self.downstream.deliver(batch) {
            if let Some(Some((conn, ack))) = acks.get(i) {
                if self.conns[*conn].is_up() {
                    self.conns[*conn].frame(Command::Nack, [("id", ack.as_str())], b"");
                }
            }
        }
    }

    fn settled(&mut self, waiter: Waiter) {
        match waiter {
            Waiter::Send { session, receipt } => {
                self.shared.confirmed.fetch_add(1, Ordering::Relaxed);
                if let (Some(s), Some(r)) = (session, receipt) {
                    self.downstream.receipt(s, &r);
                }
            }
            Waiter::Subscribe { upstream_id } => self.confirm(&upstream_id),
            Waiter::Withdraw { session } => self.withdrawn(session),
            Waiter::Transaction {
                session,
                receipt: Some(r),
            } => self.downstream.receipt(session, &r),
            Waiter::Transaction { receipt: None, .. } => {}
        }
    }

    /// The broker refused what `waiter` stands for (an ERROR with its receipt).
    fn refused(&mut self, waiter: Waiter, message: &str, detail: &str) {
        match waiter {
            Waiter::Send {
                session: Some(s),
                receipt,
            }
            | Waiter::Transaction {
                session: s,
                receipt,
            } => self.fail(s, message, detail, receipt.as_deref()),
            Waiter::Send { session: None, .. } => {
                warn!(
                    message,
                    "relay: the broker refused the application's message"
                )
            }
            Waiter::Subscribe { upstream_id } => {
                // Everyone waiting for it is told; the subscription is dropped.
                let sessions: Vec<(SessionId, Option<String>)> =
                    match self.routes.remove(&upstream_id) {
                        Some(Route::Topic(key)) => self
                            .topics
                            .remove(&key)
                            .map(|s| Self::waiters_of(&s))
                            .unwrap_or_default(),
                        Some(Route::User(key)) => self
                            .users
                            .remove(&key)
                            .map(|s| Self::waiters_of(&s))
                            .unwrap_or_default(),
                        Some(Route::Queue(session, id)) => self
                            .queues
                            .remove(&(session, id))
                            .map(|q| vec![(session, q.receipt)])
                            .unwrap_or_default(),
                        None => Vec::new(),
                    };
                for (s, r) in sessions {
                    self.fail(s, message, detail, r.as_deref());
                }
                self.count_subscriptions();
            }
            // An ERROR for an UNSUBSCRIBE: the subscription is not there to take anything.
            Waiter::Withdraw { session } => self.withdrawn(session),
        }
    }

    fn waiters_of(sub: &SharedSub) -> Vec<(SessionId, Option<String>)> {
        let mut all: Vec<(SessionId, Option<String>)> =
            sub.waiting.iter().map(|&s| (s, None)).collect();
        for (s, r) in &sub.receipts {
            if let Some(slot) = all.iter_mut().find(|(w, r0)| w == s && r0.is_none()) {
                slot.1 = Some(r.clone());
            }
        }
        all
    }
}

// ---- connections coming and going ----
impl Router {
    /// CONNECTED on `conn`: subscriptions it carries are made again.
    pub fn connected(&mut self, conn: usize) {
        let c = &mut self.conns[conn];
        c.generation += 1;
        c.failures = 0;
        self.shared.connects.fetch_add(1, Ordering::Relaxed);
        let prefetch = self.config.prefetch;
        for sub in self.topics.values().chain(self.users.values()) {
            if sub.conn == conn {
                Self::write_subscribe(
                    &mut self.conns[conn],
                    &sub.upstream_id,
                    &sub.destination,
                    AckMode::Auto,
                    0,
                );
            }
        }
        for q in self.queues.values() {
            if q.conn == conn {
                let p = if q.ack == AckMode::Auto { 0 } else { prefetch };
                Self::write_subscribe(
                    &mut self.conns[conn],
                    &q.upstream_id,
                    &q.destination,
                    q.ack,
                    p,
                );
            }
        }
        self.update_availability();
    }

    /// `conn` was lost (`retry_at`: the next attempt): SENDs it had not confirmed are told to
    /// their sessions, transactions on it are over, its subscriptions wait to be made again,
    /// and sessions waiting for them go on.
    pub fn lost(&mut self, conn: usize, reason: &str, retry_at: Instant) {
        let was_up = self.conns[conn].is_up();
        let waiters = self.conns[conn].reset(retry_at);
        if was_up {
            self.shared.disconnects.fetch_add(1, Ordering::Relaxed);
            warn!(
                conn,
                reason, "relay: connection to the external broker lost"
            );
        } else {
            debug!(conn, reason, "relay: connection attempt failed");
        }
        let mut told: HashSet<SessionId> = HashSet::new();
        let mut own = 0u64;
        let mut waiters: Vec<(u64, Waiter)> = waiters.into_iter().collect();
        waiters.sort_unstable_by_key(|(n, _)| *n);
        for (_, waiter) in waiters {
            match waiter {
                Waiter::Send { session, receipt } => {
                    self.shared.unconfirmed.fetch_add(1, Ordering::Relaxed);
                    match session {
                        Some(s) if told.insert(s) => self.fail(
                            s,
                            "broker connection lost",
                            "the connection to the external broker was lost before it confirmed a message of this session; it may not have been delivered",
                            receipt.as_deref(),
                        ),
                        Some(_) => {}
                        None => own += 1,
                    }
                }
                Waiter::Transaction { session, receipt } => {
                    if told.insert(session) {
                        self.fail(
                            session,
                            "broker connection lost",
                            "the connection to the external broker was lost during a transaction",
                            receipt.as_deref(),
                        );
                    }
                }
                Waiter::Subscribe { .. } => {}
                // The subscription went with the connection.
                Waiter::Withdraw { session } => self.withdrawn(session),
            }
        }
        if own > 0 {
            warn!(
                conn,
                messages = own,
                "relay: the application's messages were not confirmed before the connection was lost; they may not have been delivered"
            );
        }
        // Open transactions lived on the connection.
        let pool = self.pool as u64;
        let in_tx: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(s, st)| (**s % pool) as usize == conn && !st.transactions.is_empty())
            .map(|(s, _)| *s)
            .collect();
        for s in in_tx {
            if let Some(st) = self.sessions.get_mut(&s) {
                st.transactions.clear();
            }
            if told.insert(s) {
                self.fail(
                    s,
                    "broker connection lost",
                    "the connection to the external broker was lost during a transaction",
                    None,
                );
            }
        }
        // Subscriptions on it wait to be made again; nobody waits for them meanwhile.
        let mut release = Vec::new();
        for sub in self.topics.values_mut().chain(self.users.values_mut()) {
            if sub.conn == conn {
                sub.confirmed = false;
                release.append(&mut sub.waiting);
            }
        }
        let mut forget = Vec::new();
        for ((s, id), q) in self.queues.iter_mut() {
            if q.conn == conn {
                q.confirmed = false;
                if std::mem::replace(&mut q.waiting, false) {
                    release.push(*s);
                }
                forget.push((*s, id.clone()));
            }
        }
        for (s, id) in forget {
            self.downstream.forget_unacked(s, &id);
        }
        for s in release {
            self.release(s);
        }
        self.update_availability();
    }

    fn update_availability(&mut self) {
        let up = self.conns[..self.pool].iter().filter(|c| c.is_up()).count();
        self.shared.connected.store(up, Ordering::Relaxed);
        let available = up == self.pool;
        if available != self.available {
            self.available = available;
            self.shared.available.store(available, Ordering::Release);
            if available {
                info!(url = %self.config.display_url(), connections = up, "relay: external broker available");
            } else {
                warn!(url = %self.config.display_url(), connections = up, "relay: external broker unavailable");
            }
            self.downstream.availability(available);
        }
    }

    /// Bytes not yet written, all connections.
    pub fn buffered(&self) -> usize {
        self.conns.iter().map(Upstream::buffered).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_in_each_dialect() {
        assert_eq!(
            upstream_pattern(Dialect::RabbitMq, "/topic/rooms.**"),
            "/topic/rooms.#"
        );
        assert_eq!(
            upstream_pattern(Dialect::RabbitMq, "/topic/rooms.*"),
            "/topic/rooms.*"
        );
        assert_eq!(
            upstream_pattern(Dialect::ActiveMq, "/topic/a.**"),
            "/topic/a.>"
        );
        assert_eq!(
            upstream_pattern(Dialect::Sockeye, "/topic/a.**"),
            "/topic/a.**"
        );
        // `**` only as a whole segment.
        assert_eq!(
            upstream_pattern(Dialect::RabbitMq, "/topic/a**b.c"),
            "/topic/a**b.c"
        );
    }

    #[test]
    fn rabbitmq_names_slashes_and_reads_percent_encoding() {
        let r = Dialect::RabbitMq;
        assert_eq!(upstream_destination(r, "/topic/a/b.c"), "/topic/a%2Fb.c");
        assert_eq!(upstream_destination(r, "/queue/jobs"), "/queue/jobs");
        assert_eq!(
            upstream_destination(Dialect::Sockeye, "/topic/a/b"),
            "/topic/a/b"
        );
        assert_eq!(from_upstream(r, "/topic/a%2Fb"), "/topic/a/b");
        assert_eq!(
            from_upstream(r, "/topic/caf%C3%A9 100%25"),
            "/topic/café 100%"
        );
        assert_eq!(from_upstream(r, "/topic/bad%zz"), "/topic/bad%zz");
        assert_eq!(
            from_upstream(Dialect::Sockeye, "/topic/a%2Fb"),
            "/topic/a%2Fb"
        );
        assert_eq!(
            upstream_subscription(r, "/topic/rooms.**"),
            Ok("/topic/rooms.#".into())
        );
        assert!(upstream_subscription(r, "/topic/rooms/*").is_err());
        assert_eq!(
            upstream_subscription(r, "/topic/a/b"),
            Ok("/topic/a%2Fb".into())
        );
        assert_eq!(
            upstream_subscription(Dialect::Sockeye, "/topic/rooms/*"),
            Ok("/topic/rooms/*".into())
        );
    }

    #[test]
    fn spread_is_stable_and_in_range() {
        for n in 1..8 {
            let a = spread("/topic/rooms.1", n);
            assert!(a < n);
            assert_eq!(a, spread("/topic/rooms.1", n));
        }
    }
}
