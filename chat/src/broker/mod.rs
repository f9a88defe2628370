//! The in-memory STOMP broker, sans-IO: frames from sessions in, [`Action`]s out.
//!
//! The equivalent of Spring's simple broker plus its user-destination and application-prefix
//! handling. The transport (WebSocket or TCP, see [`crate::server`]) parses frames, hands each
//! to [`Broker::handle`] and carries out the actions: frames to send to a session (a `MESSAGE`
//! is a small per-subscriber head plus a tail shared by every subscriber), sessions to close,
//! application messages for the `/app` handlers, and lifecycle events. Nothing here blocks,
//! reads a clock or touches a socket; fan-out never mutates the subscription table.
//!
//! Delivery rules:
//! * `/topic/...`: every matching subscription gets every message.
//! * `/queue/...`: each message goes to one matching subscription, round-robin; while nobody
//!   subscribes, messages wait in a bounded queue.
//! * `/user/queue/x` subscribed by a session of user U receives what is sent to U on
//!   `/queue/x`, on all of U's sessions and nobody else's.
//! * Ack modes `auto`, `client` (cumulative) and `client-individual`: queue messages stay
//!   pending until acknowledged; a NACK, or the session going away, redelivers them to another
//!   subscriber.
//! * SEND and ACK inside `BEGIN`…`COMMIT` take effect at `COMMIT`; `ABORT` or a disconnect
//!   discards them.
//!
//! The [`Broker`]'s methods are spread over submodules by concern; this file holds the types,
//! the accessors and the dispatch ([`Broker::handle`], [`Broker::closed`]):
//! * `connect`: CONNECT, authentication, session limits and the SEND rate.
//! * `routing`: SEND, publish, subscription matching, fan-out, SUBSCRIBE, UNSUBSCRIBE.
//! * [`queues`]: queue destinations in locked shards of their own (round-robin, held
//!   messages, unacknowledged ones, redelivery), which a transport may call without the lock
//!   it keeps the broker under.
//! * [`users`]: users' destination subscriptions in locked shards of their own, by user name
//!   and by session (a transport may send to them without the lock it keeps the broker under).
//! * `acks`: ACK and NACK (settled by [`queues`]; relayed ones by the external broker).
//! * `transactions`: BEGIN, COMMIT, ABORT and the frames a transaction holds.
//! * `replies`: the broker's own ERROR, RECEIPT and CONNECTED frames.
//! * `relayed`: relay mode (an external broker does the routing); `destination`, `limits` and
//!   `permissions`: destination names, rate and census counters, and the permission rules.
//! * [`topics`]: a worker's own table of topic subscriptions and the shared published message,
//!   for transports that keep clients' topic subscriptions per worker
//!   ([`BrokerConfig::shard_topics`], what the chat server does with the embedded broker):
//!   the broker then checks a topic SUBSCRIBE and hands it over, and a publish to a topic
//!   becomes one [`Action::Publish`] that every worker delivers from its own table.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;

use crate::stomp::{Command, Frame, StompError, Version};

mod acks;
mod connect;
pub mod destination;
pub mod limits;
pub mod permissions;
pub mod queues;
mod relayed;
mod replies;
mod routing;
pub mod topics;

pub(crate) use replies::{error_frame_in, receipt_frame_in};
pub(crate) use routing::{check_room, check_send, check_subscribe, message_headers, split_user};
pub(crate) use transactions::{Transactions, TxOp};

pub(crate) mod transactions;
pub mod users;

use destination::{Kind, Prefixes};
use limits::{Bucket, Census, SendRate};
use permissions::Permissions;
pub use relayed::{RelayMode, RelayOp, USER_DESTINATION_HEADER};

/// Identifies a transport connection (assigned by the transport, unique per broker).
pub type SessionId = u64;

/// One STOMP frame to send: `head`, then `tail` if any (a `MESSAGE`'s shared part).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutFrame {
    pub head: Bytes,
    pub tail: Option<Bytes>,
    /// Whether the frame is valid UTF-8 (sent as a text WebSocket message) or not (binary).
    pub utf8: bool,
    /// Subject to the transport's per-session cap (a subscriber that does not keep up loses
    /// it, and is told). False for what must not be lost and is bounded otherwise: replies to
    /// the session's own frames (CONNECTED, RECEIPT, ERROR: the transport stops reading a
    /// session that does not read its replies) and queue messages awaiting an ACK (bounded by
    /// the unacknowledged limit per subscription).
    pub bounded: bool,
}

impl OutFrame {
    /// A reply to the session's own frame: whole, and never dropped.
    fn reply(bytes: Vec<u8>) -> Self {
        let utf8 = std::str::from_utf8(&bytes).is_ok();
        OutFrame {
            head: Bytes::from(bytes),
            tail: None,
            utf8,
            bounded: false,
        }
    }

    pub fn len(&self) -> usize {
        self.head.len() + self.tail.as_ref().map_or(0, Bytes::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole frame in one buffer (tests, and transports that cannot write vectored).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = self.head.to_vec();
        if let Some(t) = &self.tail {
            v.extend_from_slice(t);
        }
        v
    }
}

/// A SEND to an application destination, for the application's handlers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppMessage {
    pub session: SessionId,
    pub user: Option<String>,
    /// The destination with the application prefix removed (`/app/chat.send` → `/chat.send`).
    pub destination: String,
    /// Headers as sent, in order.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// Lifecycle events, as Spring's `SessionConnectedEvent` and friends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BrokerEvent {
    Connected {
        session: SessionId,
        user: Option<String>,
    },
    Subscribed {
        session: SessionId,
        user: Option<String>,
        destination: String,
        id: String,
    },
    Unsubscribed {
        session: SessionId,
        user: Option<String>,
        destination: String,
        id: String,
    },
    Disconnected {
        session: SessionId,
        user: Option<String>,
        attributes: HashMap<String, String>,
    },
    /// Relay mode: the external broker became reachable (every connection of the relay up)
    /// or not (see [`crate::relay`]).
    Relay { available: bool },
}

/// Why the broker closes a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The client's DISCONNECT: a normal close.
    Disconnect,
    /// After the ERROR frame queued just before (STOMP: the server MUST close): its `message`.
    Error(String),
}

/// What the transport must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Send {
        to: SessionId,
        frame: OutFrame,
    },
    /// Close the connection (after sending what was queued before this action), for the
    /// reason `ending` says.
    Close {
        to: SessionId,
        ending: Ending,
    },
    /// Heart-beats agreed at CONNECT, in milliseconds (0: none): send an EOL at least every
    /// `send_every`, and consider the peer dead after `expect_every` (plus tolerance) of silence.
    HeartBeat {
        to: SessionId,
        send_every: u64,
        expect_every: u64,
    },
    App(AppMessage),
    Event(BrokerEvent),
    /// For the relay to the external broker (relay mode only).
    Relay(RelayOp),
    /// A message for the topic subscriptions the transport keeps per worker
    /// ([`BrokerConfig::shard_topics`]): every worker matches it against its own table.
    Publish(Arc<topics::Published>),
    /// A topic subscription for the transport's per-worker table (`shard_topics`): the
    /// broker checked it and keeps only its id.
    TopicSubscribe {
        to: SessionId,
        id: String,
        target: String,
        version: Version,
        ack: AckMode,
    },
    /// Carry out `actions` (for session `to`) only after `delay_ms`, reading nothing more from
    /// `to` meanwhile: a refused CONNECT from an address that keeps failing is answered late,
    /// so that guessing passcodes is slow (see [`AuthRefusal::delay_ms`]).
    Later {
        to: SessionId,
        delay_ms: u64,
        actions: Vec<Action>,
    },
}

impl Action {
    /// Whether this action ends `session` (now or later): nothing it sends after is read.
    pub fn ends(&self, session: SessionId) -> bool {
        match self {
            Action::Close { to, .. } | Action::Later { to, .. } => *to == session,
            _ => false,
        }
    }
}

/// Decides who may connect: `Ok(user)` (`None`: anonymous), or why not. It may be slow (a
/// password hash): the server calls it outside the broker lock (see
/// [`Broker::needs_authentication`]); shared so that it can.
pub type Authenticator =
    Arc<dyn Fn(&ConnectRequest<'_>) -> Result<Option<String>, AuthRefusal> + Send + Sync>;

/// What the [`Authenticator`] decided about one CONNECT.
pub type Verdict = Result<Option<String>, AuthRefusal>;

/// A CONNECT's credentials, owned, for checking outside the broker lock.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub login: Option<String>,
    pub passcode: Option<String>,
    pub host: Option<String>,
    pub session: SessionId,
    pub peer: Option<IpAddr>,
}

impl Credentials {
    pub fn request(&self) -> ConnectRequest<'_> {
        ConnectRequest {
            login: self.login.as_deref(),
            passcode: self.passcode.as_deref(),
            host: self.host.as_deref(),
            session: self.session,
            peer: self.peer,
        }
    }
}

/// What a CONNECT carried, for the [`Authenticator`].
#[derive(Debug)]
pub struct ConnectRequest<'a> {
    pub login: Option<&'a str>,
    pub passcode: Option<&'a str>,
    pub host: Option<&'a str>,
    pub session: SessionId,
    /// The address the session came from, when the transport said (see [`Broker::opened`]).
    pub peer: Option<IpAddr>,
}

/// A refused CONNECT: the reason (after `not authorized: ` in the ERROR) and how long to wait
/// before answering (0: at once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthRefusal {
    pub reason: String,
    pub delay_ms: u64,
}

impl From<String> for AuthRefusal {
    fn from(reason: String) -> Self {
        AuthRefusal {
            reason,
            delay_ms: 0,
        }
    }
}

impl From<&str> for AuthRefusal {
    fn from(reason: &str) -> Self {
        AuthRefusal::from(reason.to_owned())
    }
}

/// Broker settings.
pub struct BrokerConfig {
    pub prefixes: Prefixes,
    /// Versions spoken, for `accept-version` negotiation.
    pub versions: Vec<Version>,
    /// The server's heart-beat offer (cx, cy) in ms: it can send every `.0`, wants to receive
    /// every `.1`. Default (10 s, 10 s), as Spring's default task-scheduler-backed broker.
    pub heart_beat: (u64, u64),
    /// Messages held per queue while no subscriber can take them (none, or all at their
    /// unacknowledged limit). Default 1,000; past it the oldest is dropped, counted
    /// ([`Broker::held_dropped`]) and warned of once each time the queue fills up.
    pub max_held_per_queue: usize,
    /// Unacknowledged queue messages per subscription before it is skipped (like a prefetch
    /// count). Default 1,000.
    pub max_unacked: usize,
    /// Subscriptions per session. Default 1,000.
    pub max_subscriptions: usize,
    /// Of those, subscriptions to a queue pattern (`/queue/jobs.*`) of the embedded broker:
    /// each has a part in every one of the queues' 64 shards (about 8 KB), so they have a
    /// limit of their own. Default 16.
    pub max_queue_patterns: usize,
    /// Open transactions per session and frames per transaction. Default 16 and 1,000.
    pub max_transactions: usize,
    pub max_transaction_frames: usize,
    /// The `server` header of CONNECTED.
    pub server_name: String,
    pub authenticator: Option<Authenticator>,
    /// Relay mode: topics, queues and users' destinations live in an external broker (see
    /// [`relayed`]). `None` (the default): this broker is the broker.
    pub relay: Option<RelayMode>,
    /// Destination patterns only the application publishes to (a client's SEND there gets an
    /// ERROR): what other code trusts as the application's own words, such as the chat's
    /// room topics and its cluster topic. Default none.
    pub app_only: Vec<String>,
    /// Who may SEND and SUBSCRIBE where (see [`permissions`]). Default: no rules, all allowed.
    pub permissions: Permissions,
    /// SENDs per session (a token bucket, see [`limits`]); over it, ERROR and close. Default
    /// none (the chat server sets one). Needs the transport's clock ([`Broker::set_now`]).
    pub max_send_rate: Option<SendRate>,
    /// Connected sessions one user may hold (the next CONNECT gets ERROR). Default none.
    pub max_sessions_per_user: Option<usize>,
    /// Connected sessions from one address (as [`Broker::opened`] said). Default none.
    pub max_sessions_per_address: Option<usize>,
    /// Topic subscriptions of clients' sessions are kept by the transport, per worker, not
    /// here: a SUBSCRIBE to a topic is checked and answered [`Action::TopicSubscribe`], a
    /// publish to a topic gives [`Action::Publish`] (plus MESSAGEs for the application's own
    /// subscriptions, which stay here). The transport then owns those subscriptions: it
    /// refuses a duplicate id before the broker sees the SUBSCRIBE, handles their
    /// UNSUBSCRIBE and their end at close, and tells the broker how many a session holds
    /// ([`Broker::set_topic_subscriptions`]) for the per-session limit. Off by default (and
    /// in relay mode): the broker delivers to every subscription itself.
    pub shard_topics: bool,
}

impl fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("prefixes", &self.prefixes)
            .field("versions", &self.versions)
            .finish()
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            prefixes: Prefixes::default(),
            versions: Version::ALL.to_vec(),
            heart_beat: (10_000, 10_000),
            max_held_per_queue: 1000,
            max_unacked: 1000,
            max_subscriptions: 1000,
            max_queue_patterns: 16,
            max_transactions: 16,
            max_transaction_frames: 1000,
            server_name: format!("sockeye/{}", env!("CARGO_PKG_VERSION")),
            authenticator: None,
            relay: None,
            app_only: Vec::new(),
            permissions: Permissions::default(),
            max_send_rate: None,
            max_sessions_per_user: None,
            max_sessions_per_address: None,
            shard_topics: false,
        }
    }
}

/// A subscription's `ack` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckMode {
    Auto,
    Client,
    ClientIndividual,
}

/// A message as stored for queues (held, pending acknowledgement or inside a transaction).
#[derive(Clone, Debug)]
pub(crate) struct Stored {
    /// The destination as the subscriber sees it.
    pub(crate) destination: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Bytes,
}

#[derive(Debug)]
struct Pending {
    message_id: String,
    ack_id: String,
    /// The external broker's ack id (relay mode).
    upstream: Option<String>,
}

#[derive(Debug)]
struct Subscription {
    session: SessionId,
    id: String,
    /// The destination (pattern) the client asked for, as it asked.
    requested: String,
    /// What it matches in the broker's namespace (`/user/queue/x` → `/queue/x` for a user).
    target: String,
    user: Option<String>,
    is_user: bool,
    ack: AckMode,
    /// Queue messages delivered and not yet acknowledged, in delivery order (ACKs mostly
    /// settle the oldest).
    pending: VecDeque<Pending>,
    /// Announced to the relay (relay mode).
    relayed: bool,
    /// Where it is kept for delivery when not in this broker's own tables: a queue (or queue
    /// pattern) subscription of the embedded broker in [`queues`] (which track its messages;
    /// its `pending` stays empty), a users' destination subscription in [`users`].
    kept: Option<Kept>,
}

/// See [`Subscription::kept`].
#[derive(Debug)]
pub(crate) enum Kept {
    Queue(queues::QueueSub),
    User(users::UserSub),
}

/// A client's subscription to a queue or to one of its user's destinations, kept by its
/// transport (with the parts in the queues' or users' shards) rather than by the broker: the
/// server does so for the embedded broker (see `crate::server::router`).
#[derive(Debug)]
pub(crate) struct KeptSub {
    pub(crate) id: String,
    /// The destination as the client asked for it (for the Unsubscribed event).
    pub(crate) requested: String,
    pub(crate) kept: Kept,
}

impl Subscription {
    /// Takes out what an ACK or NACK of its pending message at `index` settles: that one, or
    /// under `client` every one up to it (cumulative).
    fn settle(&mut self, index: usize) -> Vec<Pending> {
        match self.ack {
            AckMode::Client => self.pending.drain(..=index).collect(),
            _ => self.pending.remove(index).into_iter().collect(),
        }
    }
}

#[derive(Debug)]
struct SessionState {
    version: Option<Version>,
    user: Option<String>,
    subscriptions: Vec<usize>,
    /// Topic subscriptions the transport keeps for it ([`BrokerConfig::shard_topics`]).
    topic_subscriptions: u32,
    /// Open transactions (see [`transactions`]).
    transactions: transactions::Transactions,
    /// The application's attributes: most sessions have none, so boxed once used (a box is
    /// 8 bytes where an empty map is 48).
    #[allow(
        clippy::box_collection,
        reason = "8 bytes inline instead of an empty map's 48"
    )]
    attributes: Option<Box<HashMap<String, String>>>,
    /// SENDs allowed (with [`BrokerConfig::max_send_rate`]).
    sends: Option<Bucket>,
    /// The address it came from (what the per-address limit counted it under).
    address: Option<IpAddr>,
    /// The application's own session ([`Broker::connect_trusted`]): no rules, no limits.
    trusted: bool,
}

/// The broker.
pub struct Broker {
    config: BrokerConfig,
    /// Boxed: the table's buckets stay small (an idle connection's cost is mostly tables like
    /// this one, whose empty buckets are all touched).
    sessions: HashMap<SessionId, Box<SessionState>>,
    subs: slab::Slab<Subscription>,
    /// Exact (non-wildcard) targets → subscriptions, for O(subscribers) fan-out.
    exact: HashMap<String, Vec<usize>>,
    /// Wildcard subscriptions, matched one by one.
    patterns: Vec<usize>,
    /// Queue destinations, in shards of their own (the server reaches them without this
    /// broker's lock for a SEND, an ACK or a NACK).
    queues: Arc<queues::Queues>,
    /// Users' destination subscriptions, by user and by session, in shards of their own: a
    /// send to a user costs that user's subscriptions and no lock of this broker's.
    users: Arc<users::Users>,
    /// The frame being handled handed its receipt to the relay (relay mode).
    receipt_taken: bool,
    /// Where each transport session not connected yet came from, as the transport said (a
    /// connected one's is in its [`SessionState`]).
    addresses: HashMap<SessionId, IpAddr>,
    /// Connected sessions per user and per address.
    per_user: Census<String>,
    per_address: Census<IpAddr>,
    /// The transport's clock, in ms (see [`Broker::set_now`]).
    now_ms: u64,
    /// The session whose CONNECT is being handled as trusted, if any.
    trusting: Option<SessionId>,
    /// Verdicts on CONNECTs reached outside the lock, each taken by the CONNECT it was for.
    verdicts: HashMap<SessionId, Verdict>,
}

impl fmt::Debug for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broker")
            .field("sessions", &self.sessions.len())
            .field("subscriptions", &self.subs.len())
            .finish()
    }
}

/// An ERROR to send before closing.
#[derive(Debug)]
struct Refusal {
    message: String,
    detail: String,
}

fn refuse(message: impl Into<String>) -> Refusal {
    Refusal {
        message: message.into(),
        detail: String::new(),
    }
}

impl Broker {
    pub fn new(config: BrokerConfig) -> Self {
        Broker {
            sessions: HashMap::new(),
            subs: slab::Slab::new(),
            exact: HashMap::new(),
            patterns: Vec::new(),
            users: Arc::default(),
            queues: Arc::new(queues::Queues::new(
                config.max_held_per_queue,
                config.max_unacked,
            )),
            receipt_taken: false,
            addresses: HashMap::new(),
            per_user: Census::default(),
            per_address: Census::default(),
            now_ms: 0,
            trusting: None,
            verdicts: HashMap::new(),
            config,
        }
    }

    /// The queue destinations, for a transport that handles queue SENDs and ACKs outside
    /// the lock it keeps the broker under.
    pub fn queues(&self) -> &Arc<queues::Queues> {
        &self.queues
    }

    /// The users' destination subscriptions, for a transport that sends to users outside
    /// the lock it keeps the broker under.
    pub fn users(&self) -> &Arc<users::Users> {
        &self.users
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// Sessions that completed CONNECT.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Queue messages held now for want of a subscriber that can take them.
    pub fn held_count(&self) -> usize {
        self.queues.held_count()
    }

    /// Held queue messages dropped (the oldest of a full queue) since the start.
    pub fn held_dropped(&self) -> u64 {
        self.queues.held_dropped()
    }

    /// Subscriptions of every session.
    pub fn subscription_count(&self) -> usize {
        self.subs.len()
    }

    /// Destinations with subscribers (exact names and patterns) or held messages.
    pub fn destination_count(&self) -> usize {
        self.exact.len() + self.patterns.len() + self.queues.destination_count()
    }

    /// The negotiated version of a session (for the transport's parser).
    pub fn version(&self, session: SessionId) -> Option<Version> {
        self.sessions.get(&session).and_then(|s| s.version)
    }

    pub fn user(&self, session: SessionId) -> Option<&str> {
        self.sessions.get(&session).and_then(|s| s.user.as_deref())
    }

    /// Sets an attribute on a session (reported back in [`BrokerEvent::Disconnected`]).
    pub fn set_attribute(&mut self, session: SessionId, key: &str, value: &str) {
        if let Some(s) = self.sessions.get_mut(&session) {
            let attributes = s.attributes.get_or_insert_with(Box::default);
            attributes.insert(key.into(), value.into());
        }
    }

    pub fn attribute(&self, session: SessionId, key: &str) -> Option<&str> {
        self.sessions
            .get(&session)
            .and_then(|s| s.attributes.as_ref()?.get(key))
            .map(String::as_str)
    }

    /// A transport session opened from `peer` (before its CONNECT): the address the
    /// authenticator and the per-address limits see. Forgotten at [`Broker::closed`].
    pub fn opened(&mut self, session: SessionId, peer: IpAddr) {
        self.addresses.insert(session, peer);
    }

    /// The time, in ms from any fixed start, for the SEND rate: the transport sets it before
    /// handing over frames (the broker reads no clock).
    pub fn set_now(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
    }

    /// How many topic subscriptions the transport keeps for `session`
    /// ([`BrokerConfig::shard_topics`]), counted against `max_subscriptions`.
    pub fn set_topic_subscriptions(&mut self, session: SessionId, count: usize) {
        if let Some(s) = self.sessions.get_mut(&session) {
            s.topic_subscriptions = count.try_into().unwrap_or(u32::MAX);
        }
    }

    /// The address `session` came from, if the transport said.
    pub fn address(&self, session: SessionId) -> Option<IpAddr> {
        match self.sessions.get(&session) {
            Some(state) => state.address,
            None => self.addresses.get(&session).copied(),
        }
    }

    /// A frame arrived from `session`.
    pub fn handle(&mut self, session: SessionId, frame: &Frame<'_>, out: &mut Vec<Action>) {
        let receipt = frame.header("receipt").map(str::to_owned);
        self.receipt_taken = false;
        let result = match (frame.command, self.sessions.contains_key(&session)) {
            (Command::Connect | Command::Stomp, false) => {
                let trusted = self.trusting.take() == Some(session);
                self.connect(session, frame, trusted, out)
            }
            (Command::Connect | Command::Stomp, true) => Err(refuse("already connected")),
            (_, false) => Err(refuse(format!("{} before CONNECT", frame.command))),
            (Command::Send, true) => self.send(session, frame, out),
            (Command::Subscribe, true) => self.subscribe(session, frame, out),
            (Command::Unsubscribe, true) => self.unsubscribe(session, frame, out),
            (Command::Ack | Command::Nack, true) => self.ack(session, frame, out),
            (Command::Begin, true) => self
                .begin(session, frame)
                .map(|()| self.relay_transaction(session, frame, out)),
            (Command::Commit, true) => self
                .commit(session, frame, out)
                .map(|()| self.relay_transaction(session, frame, out)),
            (Command::Abort, true) => self
                .abort(session, frame)
                .map(|()| self.relay_transaction(session, frame, out)),
            (Command::Disconnect, true) => {
                if let Some(r) = &receipt {
                    self.receipt(session, r, out);
                }
                out.push(Action::Close {
                    to: session,
                    ending: Ending::Disconnect,
                });
                return;
            }
            (other, true) => Err(refuse(format!("{other} is a server frame"))),
        };
        match result {
            Ok(()) => {
                if let Some(r) = receipt.as_deref().filter(|_| !self.receipt_taken) {
                    self.receipt(session, r, out);
                }
            }
            Err(refusal) => self.error(session, refusal, receipt.as_deref(), out),
        }
    }

    /// The transport could not parse what the session sent.
    pub fn parse_error(&mut self, session: SessionId, error: &StompError, out: &mut Vec<Action>) {
        self.error(session, refuse(error.to_string()), None, out);
    }

    /// The transport connection is gone (DISCONNECT, ERROR, close, drop): subscriptions go,
    /// open transactions are discarded, unacknowledged queue messages are redelivered.
    pub fn closed(&mut self, session: SessionId, out: &mut Vec<Action>) {
        self.addresses.remove(&session);
        self.verdicts.remove(&session);
        let Some(state) = self.sessions.get(&session) else {
            return;
        };
        // Detach every subscription first: a message one of them left unacknowledged must
        // not be handed to another subscription of the session that is going away.
        let mut queue_subs = Vec::new();
        for key in state.subscriptions.clone() {
            queue_subs.extend(self.detach_subscription(key, out));
        }
        if let Some(state) = self.sessions.remove(&session) {
            if let Some(u) = &state.user {
                self.per_user.remove(u);
            }
            if let Some(ip) = &state.address {
                self.per_address.remove(ip);
            }
            out.push(Action::Event(BrokerEvent::Disconnected {
                session,
                user: state.user,
                attributes: state.attributes.map(|a| *a).unwrap_or_default(),
            }));
        }
        self.queues.remove(session, &queue_subs, out);
        if self.config.relay.is_some() {
            out.push(Action::Relay(RelayOp::Closed { session }));
        }
    }
}

#[cfg(test)]
mod tests;
