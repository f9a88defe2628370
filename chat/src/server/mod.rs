//! The STOMP server on the engine: STOMP over WebSocket (sub-protocols `v12.stomp`,
//! `v11.stomp`, `v10.stomp`, or none) and STOMP over plain TCP, both on the same Sockeye event
//! loops, sharing one [`Broker`].
//!
//! * [`Hub`] owns the broker, the table of live sessions (their cross-thread handles) and the
//!   [`Application`] behind `/app` destinations, and carries out the broker's [`Action`]s: a
//!   frame for the session being served goes straight into its cork; a frame for any other
//!   session is posted through its handle (the per-subscriber head and the shared body travel
//!   as two `Bytes`, so a fan-out never copies the body).
//! * [`StompHandler`] is the engine [`Handler`](sockeye::server::Handler): one per worker, all sharing the hub.
//! * [`heartbeat`] sends EOL heart-beats at the negotiated rate and closes peers that fall
//!   silent beyond theirs.
//!
//! The hub's methods are spread over submodules: `peers` (the table of live sessions and
//! posting frames to them), `execute` (carrying out the broker's actions, deferred ones
//! included, and the application's messages and events) and `handler` ([`StompServer`],
//! [`StompHandler`] and [`AsLink`], re-exported here).
//!
//! Where threads meet (the embedded broker; see [`shard`] and [`router`]):
//! * No lock per SEND to a topic or `/app` destination, nor per delivery: the session's link
//!   checks it against its [`Ticket`](crate::link::Ticket) and the broker's fixed rules, and
//!   the message is posted once to each worker holding topic subscriptions, which delivers it
//!   from its own table. Per worker per publish: one atomic load (any topic subscriptions
//!   there?) and, for each worker posted to, its inbox mutex for one push. An `/app` message
//!   is the application's: the chat ([`crate::app`]) locks the shard of the message's room
//!   only.
//! * No broker lock for a SUBSCRIBE or UNSUBSCRIBE either: the session's worker checks it
//!   with the broker's rules and keeps it, a topic's in its own table, a queue's or a users'
//!   destination's in the shards below, listed in the session's `Ticket` (duplicate ids and
//!   the per-session limit are checked against both lists).
//! * No lock of the broker's for a SEND to a queue, nor for an ACK or NACK outside a
//!   transaction: queues live in [`queues`](crate::broker::queues)' 64 shards, each with its
//!   own lock (a queue's subscribers, round-robin turn, held and unacknowledged messages), and
//!   a queue message's id names its shard and part, so a SEND or an ACK locks one shard. A
//!   topic message's ACK (never tracked) locks nothing.
//! * No lock of the broker's for a SEND to a user (`/user/{name}/...`) or the application's
//!   sends to a user or to one session: users' destination subscriptions live in
//!   [`users`](crate::broker::users)' shards, listed by user name and by session, so such a
//!   send locks the name's (or the session's) shard.
//! * No lock for a transaction: BEGIN, the SENDs and ACKs it holds, COMMIT and ABORT are kept
//!   by the session's link (its `Ticket`, on its own worker); a COMMIT carries out what it
//!   held by the paths above.
//! * The broker mutex remains for the control plane, which needs the session table: CONNECT
//!   (the per-user and per-address limits, the authenticator's verdict), DISCONNECT and the
//!   close, and the application's session attributes. Frames that need it in one batch are
//!   handled under one lock (a CONNECT and the frames after it see the negotiated version).
//!   So does a topic SEND while the application holds subscriptions of its own (they live in
//!   the broker). Lock order: the broker, then one queue or users' shard; never the other way
//!   round, never two shards at once.
//! * The live-session table (`peers`, a read-write lock) is read per session per feed (the
//!   liveness stamp) and per frame posted through it (replies and queue messages to other
//!   sessions), not per topic delivery.
//! * In relay mode, and under the throttle policy, the broker keeps every subscription and
//!   delivers as before (per subscriber, through the handles).
//!
//! A subscriber that falls behind is handled by the [`slow`] consumer policy (told and let go,
//! dropped and counted, or its publishers held back), never silently; a publisher whose
//! fan-out fills a worker's inbox stops being read until the inbox is taken (the engine's
//! gates).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::Instant;

use bytes::Bytes;
use sockeye::handshake::Request;
use sockeye::server::{HttpResponse, Session};
use tracing::debug;

use crate::broker::destination::Kind;
use crate::broker::queues::Queues;
use crate::broker::topics::Published;
use crate::broker::users::Users;
use crate::broker::{
    Action, AppMessage, Broker, BrokerConfig, BrokerEvent, RelayMode, SessionId, Stored,
};
use crate::link::Batch;
use crate::relay::{Relay, RelayConfig};
use crate::stomp::Limits;

mod execute;
mod handler;
pub mod heartbeat;
mod internal;
pub mod metrics;
mod ops;
pub mod origin;
mod peers;
mod relayed;
mod router;
mod shard;
pub mod slow;

pub use handler::{AsLink, StompHandler, StompServer};
pub use internal::{Delivered, Listener, SubscribeError};
pub use origin::OriginPolicy;
use peers::Peer;
pub use slow::{SlowConsumer, SlowStats};

/// The sub-protocols offered for STOMP over WebSocket, preferred first.
pub const SUB_PROTOCOLS: [&str; 3] = ["v12.stomp", "v11.stomp", "v10.stomp"];

/// The application behind `/app` destinations (Spring's `@MessageMapping` controllers) and
/// the broker's lifecycle events. Called on worker threads, outside the broker lock.
pub trait Application: Send + Sync + 'static {
    /// A SEND to an application destination.
    fn on_app_message(&self, message: &AppMessage, messaging: &Messaging);

    /// Connected, subscribed, unsubscribed, disconnected.
    fn on_event(&self, _event: &BrokerEvent, _messaging: &Messaging) {}

    /// A plain HTTP request on the WebSocket port.
    fn on_http(
        &self,
        _req: &Request<'_, '_>,
        _body: &[u8],
        _messaging: &Messaging,
    ) -> HttpResponse {
        HttpResponse::not_found()
    }

    /// [`Application::on_http`] with the client's address (if known); the default ignores it.
    fn on_http_from(
        &self,
        _peer: Option<std::net::IpAddr>,
        req: &Request<'_, '_>,
        body: &[u8],
        messaging: &Messaging,
    ) -> HttpResponse {
        self.on_http(req, body, messaging)
    }

    /// Whether the application can do its work (`GET /readyz`); the reason when not.
    fn readiness(&self) -> Result<(), String> {
        Ok(())
    }

    /// The application's own metrics, added to `GET /metrics`.
    fn metrics(&self, _out: &mut metrics::Exposition) {}
}

/// Lets the caller keep a handle on the application the hub owns.
impl<T: Application> Application for Arc<T> {
    fn on_app_message(&self, message: &AppMessage, messaging: &Messaging) {
        (**self).on_app_message(message, messaging)
    }

    fn on_event(&self, event: &BrokerEvent, messaging: &Messaging) {
        (**self).on_event(event, messaging)
    }

    fn on_http(&self, req: &Request<'_, '_>, body: &[u8], messaging: &Messaging) -> HttpResponse {
        (**self).on_http(req, body, messaging)
    }

    fn on_http_from(
        &self,
        peer: Option<std::net::IpAddr>,
        req: &Request<'_, '_>,
        body: &[u8],
        messaging: &Messaging,
    ) -> HttpResponse {
        (**self).on_http_from(peer, req, body, messaging)
    }

    fn readiness(&self) -> Result<(), String> {
        (**self).readiness()
    }

    fn metrics(&self, out: &mut metrics::Exposition) {
        (**self).metrics(out)
    }
}

/// An application that routes nothing (a bare broker).
#[derive(Debug, Default)]
pub struct NoApplication;

impl Application for NoApplication {
    fn on_app_message(&self, message: &AppMessage, _messaging: &Messaging) {
        debug!(destination = %message.destination, "no application handler");
    }
}

/// STOMP server settings.
#[derive(Debug)]
pub struct StompConfig {
    pub broker: BrokerConfig,
    /// Frame limits (header count and length, body size).
    pub limits: Limits,
    /// The path STOMP over WebSocket is served on.
    pub ws_path: String,
    /// The prefix STOMP over SockJS is served under (`None` for none): the same sessions over
    /// HTTP streaming and polling, for clients whose WebSocket upgrade is blocked.
    pub sockjs_path: Option<String>,
    /// What happens to a session that does not read as fast as it is sent to (see [`slow`]).
    pub slow_consumer: SlowConsumer,
    /// Hand topics, queues and users' destinations to an external broker (see
    /// [`crate::relay`]); `None` (the default) keeps the embedded broker.
    pub relay: Option<RelayConfig>,
    /// Which web pages may open sessions (see [`origin`]); same-origin by default.
    pub origins: OriginPolicy,
}

impl Default for StompConfig {
    fn default() -> Self {
        StompConfig {
            broker: BrokerConfig::default(),
            limits: Limits::default(),
            ws_path: "/ws".into(),
            sockjs_path: Some("/sockjs".into()),
            slow_consumer: SlowConsumer::default(),
            relay: None,
            origins: OriginPolicy::default(),
        }
    }
}

/// The shared state of a STOMP server.
pub struct Hub {
    broker: Mutex<Broker>,
    peers: RwLock<HashMap<SessionId, Peer>>,
    app: Box<dyn Application>,
    limits: Limits,
    ws_path: String,
    origins: OriginPolicy,
    started: Instant,
    stopping: AtomicBool,
    slow: SlowConsumer,
    slow_counters: slow::Counters,
    /// The relay to the external broker (relay mode), started after the hub.
    relay: OnceLock<Relay>,
    relay_config: Option<RelayConfig>,
    /// The application's own subscriptions (see [`internal`]).
    internal: RwLock<HashMap<SessionId, Listener>>,
    /// Deferred actions ([`Action::Later`]) with when they are due (ms since `started`), run
    /// by the heart-beat thread's tick.
    later: Mutex<Vec<(u64, Vec<Action>)>>,
    /// The engine's counters, once the server is bound ([`Hub::set_engine`]).
    engine: OnceLock<sockeye::server::ShutdownHandle>,
    /// Clients' topic subscriptions are kept per worker (the embedded broker; see [`shard`]).
    sharded: bool,
    /// The workers and their topic subscription counts (known from the first session on).
    shards: OnceLock<shard::Shards>,
    /// The SEND rate, checked by each session's link (sharded: the broker does not see
    /// every SEND).
    send_rate: Option<crate::broker::limits::SendRate>,
    /// The broker's fixed rules for SEND, for the path around it (see [`router`]).
    send_rules: SendRules,
    /// The application's own subscriptions: while there are any, topic SENDs go through the
    /// broker, where they live.
    internal_topic_subs: std::sync::atomic::AtomicUsize,
    /// The broker's queues (their own shard locks): a SEND to a queue, an ACK and a NACK go
    /// here without the broker's lock (sharded only; see [`router`]).
    queues: Arc<Queues>,
    /// The broker's users' destination subscriptions (their own shard locks): a SEND to a
    /// user and the application's sends to users and sessions go here without the broker's
    /// lock (when no external broker does the routing: `local_users`).
    users: Arc<Users>,
    local_users: bool,
    /// Subscriptions to queues and users' destinations kept in sessions' tickets (for the
    /// subscription count).
    kept_subscriptions: std::sync::atomic::AtomicUsize,
}

/// The broker's rules a SEND is checked against, copied at start (they never change).
#[derive(Debug)]
struct SendRules {
    prefixes: crate::broker::destination::Prefixes,
    app_only: Vec<String>,
    permissions: crate::broker::permissions::Permissions,
    max_subscriptions: usize,
    max_queue_patterns: usize,
    max_transactions: usize,
    max_transaction_frames: usize,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("ws_path", &self.ws_path)
            .finish()
    }
}

/// Publishing from the application, or from any thread (Spring's `SimpMessagingTemplate`).
#[derive(Clone, Debug)]
pub struct Messaging {
    hub: Arc<Hub>,
}

impl Messaging {
    /// `convertAndSend`: to a broker destination (`/topic/...`, `/queue/...`).
    pub fn publish(
        &self,
        destination: &str,
        headers: Vec<(String, String)>,
        body: impl Into<Bytes>,
    ) {
        let hub = &self.hub;
        let mut actions = Vec::new();
        let kind = hub.send_rules.prefixes.kind(destination);
        let topic = kind == Some(Kind::Topic);
        if hub.sharded && topic && hub.internal_topic_subs.load(Ordering::Relaxed) == 0 {
            // Nobody in the broker to hear it: straight to the workers, no lock.
            let message = Published::new(destination.to_owned(), headers, body.into());
            actions.push(Action::Publish(Arc::new(message)));
        } else if hub.sharded && kind == Some(Kind::Queue) {
            // Its shard's lock, not the broker's.
            let stored = Stored {
                destination: destination.to_owned(),
                headers,
                body: body.into(),
            };
            hub.queues.send(stored, &mut actions);
        } else {
            hub.broker()
                .publish(destination, headers, body.into(), &mut actions);
        }
        hub.execute(actions, None);
    }

    /// `convertAndSendToUser`: to every session of `user` subscribed to `/user{destination}`.
    pub fn publish_to_user(
        &self,
        user: &str,
        destination: &str,
        headers: Vec<(String, String)>,
        body: impl Into<Bytes>,
    ) {
        let hub = &self.hub;
        let mut actions = Vec::new();
        if hub.local_users {
            // The user's shard, not the broker.
            let shown = format!("{}{destination}", hub.send_rules.prefixes.user);
            hub.users.send_to_user(
                user,
                destination,
                &shown,
                headers,
                body.into(),
                &mut actions,
            );
        } else {
            hub.broker()
                .publish_to_user(user, destination, headers, body.into(), &mut actions);
        }
        hub.execute(actions, None);
    }

    /// The reply to one session (`@SendToUser` to the sender), on `/user{destination}`: the
    /// session's shard of the users' destinations, not the broker.
    pub fn publish_to_session(
        &self,
        session: SessionId,
        destination: &str,
        headers: Vec<(String, String)>,
        body: impl Into<Bytes>,
    ) {
        let hub = &self.hub;
        let mut actions = Vec::new();
        let shown = format!("{}{destination}", hub.send_rules.prefixes.user);
        hub.users.send_to_session(
            session,
            destination,
            &shown,
            headers,
            body.into(),
            &mut actions,
        );
        hub.execute(actions, None);
    }

    /// Delivers to this node's own subscribers of `destination` alone (an exact topic; in
    /// relay mode not through the external broker): what they missed while this node could
    /// not hear the others.
    pub fn deliver_local(
        &self,
        destination: &str,
        headers: Vec<(String, String)>,
        body: impl Into<Bytes>,
    ) {
        let mut actions = Vec::new();
        let body = body.into();
        if self.hub.sharded {
            let message = Published::new(destination.to_owned(), headers.clone(), body.clone());
            actions.push(Action::Publish(Arc::new(message)));
        }
        self.hub
            .broker()
            .deliver_topic(destination, destination, headers, body, &mut actions);
        self.hub.execute(actions, None);
    }

    /// Runs `f` with the broker locked (for reading session attributes and the like).
    pub fn with_broker<R>(&self, f: impl FnOnce(&mut Broker) -> R) -> R {
        f(&mut self.hub.broker())
    }

    /// Milliseconds since the Unix epoch (for timestamps the application adds).
    pub fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

impl Hub {
    /// The hub; in relay mode ([`StompConfig::relay`]) the relay is started too.
    pub fn new(mut config: StompConfig, app: Box<dyn Application>) -> std::io::Result<Arc<Hub>> {
        if config.relay.is_some() && config.broker.relay.is_none() {
            config.broker.relay = Some(RelayMode::default());
        }
        let relay_config = config.relay.take();
        // Throttling needs the publisher to pass each subscriber's gate as it publishes (a
        // hold sent back from another worker arrives too late to keep the subscriber under
        // its cap): under that policy the broker keeps every subscription, as before.
        let throttled = matches!(config.slow_consumer, SlowConsumer::Throttle { .. });
        let sharded = config.broker.relay.is_none() && !throttled;
        config.broker.shard_topics = sharded;
        let send_rate = match sharded {
            true => config.broker.max_send_rate.take(),
            false => None,
        };
        let send_rules = SendRules {
            prefixes: config.broker.prefixes.clone(),
            app_only: config.broker.app_only.clone(),
            permissions: config.broker.permissions.clone(),
            max_subscriptions: config.broker.max_subscriptions,
            max_queue_patterns: config.broker.max_queue_patterns,
            max_transactions: config.broker.max_transactions,
            max_transaction_frames: config.broker.max_transaction_frames,
        };
        let local_users = config.broker.relay.is_none();
        let broker = Broker::new(config.broker);
        let queues = Arc::clone(broker.queues());
        let users = Arc::clone(broker.users());
        let hub = Arc::new(Hub {
            broker: Mutex::new(broker),
            peers: RwLock::default(),
            app,
            limits: config.limits,
            ws_path: config.ws_path,
            origins: config.origins,
            started: Instant::now(),
            stopping: AtomicBool::new(false),
            slow: config.slow_consumer,
            slow_counters: slow::Counters::default(),
            relay: OnceLock::new(),
            relay_config,
            internal: RwLock::default(),
            later: Mutex::default(),
            engine: OnceLock::new(),
            sharded,
            shards: OnceLock::new(),
            send_rate,
            send_rules,
            internal_topic_subs: Default::default(),
            queues,
            users,
            local_users,
            kept_subscriptions: Default::default(),
        });
        hub.start_relay()?;
        Ok(hub)
    }

    /// Subscriptions of every session: those the broker holds and clients' topic
    /// subscriptions held by the workers.
    pub fn subscription_count(&self) -> usize {
        self.broker().subscription_count()
            + self.shards.get().map_or(0, |s| s.subscriptions())
            + self.kept_subscriptions.load(Ordering::Relaxed)
    }

    /// Ends subscriptions to queues and users' destinations a session's ticket kept (an
    /// UNSUBSCRIBE, or all of them at its close): their Unsubscribed events, then their
    /// parts out of the shards; unacknowledged queue messages go back to their queues once
    /// every one of them is gone (so none reaches another of them).
    fn drop_kept(
        &self,
        session: SessionId,
        user: Option<String>,
        gone: Vec<crate::broker::KeptSub>,
        out: &mut Vec<Action>,
    ) {
        self.kept_subscriptions
            .fetch_sub(gone.len(), Ordering::Relaxed);
        let mut queues = Vec::new();
        for sub in gone {
            out.push(Action::Event(BrokerEvent::Unsubscribed {
                session,
                user: user.clone(),
                destination: sub.requested,
                id: sub.id,
            }));
            match sub.kept {
                crate::broker::Kept::Queue(queue) => queues.push(queue),
                crate::broker::Kept::User(entry) => self.users.remove(&entry),
            }
        }
        self.queues.remove(session, &queues, out);
    }

    pub fn messaging(self: &Arc<Self>) -> Messaging {
        Messaging { hub: self.clone() }
    }

    fn broker(&self) -> MutexGuard<'_, Broker> {
        // The broker's state stays consistent across a panic in a handler: keep serving.
        self.broker.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Stops the heart-beat thread and the relay.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(relay) = self.relay.get() {
            relay.stop();
        }
    }

    /// Bytes from a session: parse, hand to the broker, carry out what it says. At most a
    /// batch (frames, bytes) is handled per broker lock; between batches the session's read pause
    /// is checked (its queue over the cap, or a fan-out into a full inbox): if it is paused,
    /// the bytes not yet used are left to the transport. Returns the bytes used.
    fn feed<D: AsLink>(
        self: &Arc<Self>,
        session: &mut Session<'_, D>,
        bytes: &[u8],
        batch: Batch,
    ) -> usize {
        let id = session.id();
        self.touch(id, &mut session.data_mut().link().touched);
        let mut used = 0;
        loop {
            let mut actions = Vec::new();
            let fed = {
                let link = session.data_mut().link();
                let (ticket, topics) = link.session_state();
                let (mut ticket, mut topics) = (ticket.take(), std::mem::take(topics));
                let mut router =
                    router::Router::new(self, &mut ticket, &mut topics, self.elapsed_ms());
                let fed = link.feed_some(
                    id,
                    &bytes[used..],
                    &mut router,
                    &self.limits,
                    &mut actions,
                    batch,
                );
                drop(router);
                let (t, k) = link.session_state();
                (*t, *k) = (ticket, topics);
                fed
            };
            used += fed.used;
            self.execute(actions, Some(session));
            if fed.authenticate {
                // A CONNECT to judge: the authenticator (argon2, tens of ms) runs with the
                // broker unlocked, then the CONNECT is offered again with its verdict.
                if let Some(credentials) = session.data_mut().link().take_credentials() {
                    let auth = self.broker().authenticator();
                    let verdict = auth.map_or(Ok(None), |auth| auth(&credentials.request()));
                    self.broker().authenticated(id, verdict);
                }
                continue;
            }
            if used >= bytes.len() || session.is_read_paused() {
                return used;
            }
        }
    }

    /// Gives the hub the engine's handle, for its counters in `GET /metrics`.
    pub fn set_engine(&self, handle: sockeye::server::ShutdownHandle) {
        let _ = self.engine.set(handle);
    }

    /// The transport is gone: tell the broker (redeliveries, Disconnected event).
    fn closed(self: &Arc<Self>, id: SessionId, link: &mut crate::link::Link) {
        if let Ok(mut peers) = self.peers.write() {
            peers.remove(&id);
        }
        // Its topic subscriptions, in this worker's table, and those its ticket kept go first
        // (as the broker reports a session's subscriptions before its disconnection).
        let (ticket, topics) = link.session_state();
        let user = ticket
            .as_ref()
            .and_then(|t| t.user.as_deref().map(str::to_owned));
        let mut actions: Vec<Action> = std::mem::take(topics)
            .into_iter()
            .filter_map(|key| self.topic_unsubscribe(key, user.clone()))
            .map(Action::Event)
            .collect();
        if let Some(kept) = ticket.as_mut().and_then(|t| t.kept.take()) {
            self.drop_kept(id, user, *kept, &mut actions);
        }
        self.broker().closed(id, &mut actions);
        self.execute(actions, None);
    }
}
