//! The STOMP broker relay: topics, queues and users' destinations handed to an external broker
//! (RabbitMQ, ActiveMQ, or another Sockeye) over a small pool of multiplexed STOMP 1.2
//! connections, so that several nodes serve one set of destinations.
//!
//! Unlike Spring's relay, which opens one upstream connection per client, a node keeps
//! [`RelayConfig::pool`] connections whatever its number of clients:
//!
//! * local subscribers of one topic share one upstream subscription per node, and a message
//!   from upstream is fanned out by the node's own broker (one upstream delivery per node);
//! * a queue subscription is an upstream subscription of its own, so competing consumers,
//!   ACK and NACK keep the external broker's semantics (ack ids are mapped, and carry the
//!   connection's generation so that an ACK never reaches a connection that did not deliver
//!   the message). One that acknowledges lives on a consumer connection of its session,
//!   closed when the session's last such subscription goes: that is what returns its
//!   unacknowledged messages to the queue, in order (RabbitMQ forgets a subscription's
//!   deliveries at UNSUBSCRIBE, and a NACK first races with their redelivery to the same
//!   subscription). A session's other acknowledging subscriptions keep what a withdrawn one
//!   left unacknowledged until then;
//! * a session's SENDs, ACKs and transactions all go over one connection (its session id picks
//!   it), so they keep their order; the application's own publishes go over the connection of
//!   their destination, the same as the destination's subscription, so a message published
//!   right after a first subscription still reaches it;
//! * until an upstream subscription of a session is confirmed (every upstream SUBSCRIBE asks
//!   for a RECEIPT), the session's later frames wait: a client that subscribes and then sends
//!   to the same topic sees its own message, as with a local broker;
//! * every forwarded SEND asks for a RECEIPT: a client's receipt is answered after the
//!   external broker's, and when a connection is lost, a client whose SENDs were not yet
//!   confirmed gets an ERROR saying so (never a silent drop), as does one that sends while the
//!   broker is unreachable;
//! * heart-beats both ways (10 s by default); a lost connection comes back with capped,
//!   jittered exponential backoff, and its subscriptions with it, without clients doing
//!   anything; availability changes are logged and reach the application as
//!   [`BrokerEvent::Relay`](crate::broker::BrokerEvent::Relay).
//!
//! The broker side of this (what is relayed, and what comes back) is
//! [`crate::broker::RelayOp`] and the broker's `deliver_*` methods; the relay itself runs on a
//! thread of its own with a mio loop ([`run`]), talks to the node through [`Downstream`], and
//! is sized for many clients: its routing tables are per destination, not per client.
//!
//! Backpressure: when the connections hold more than [`RelayConfig::high_water`] bytes not yet
//! written, the relay's [`Gate`] closes and sessions that publish through it stop being read
//! until it opens again (below a quarter of that). Past [`RelayConfig::max_buffered`] a
//! SEND is refused with an ERROR.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use sockeye::server::Gate;

use crate::broker::{RelayOp, SessionId};

mod route;
mod run;
mod upstream;
mod url;

pub use url::UrlError;

/// How the external broker spells subscription wildcards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// RabbitMQ: `*` one word, `#` any number, words separated by `.`.
    RabbitMq,
    /// ActiveMQ: `*` one element, `>` the rest, elements separated by `.`.
    ActiveMq,
    /// Sockeye's own broker: `*` and `**`, segments separated by `.` or `/`.
    Sockeye,
}

/// Where and how to reach the external broker.
#[derive(Clone, PartialEq, Eq)]
pub struct RelayConfig {
    pub host: String,
    pub port: u16,
    pub login: String,
    pub passcode: String,
    /// The `host` header of CONNECT (RabbitMQ's virtual host). Default `/`.
    pub vhost: String,
    /// Upstream connections per node. Default 4.
    pub pool: usize,
    /// Heart-beats offered upstream, in ms (send, receive). Default (10 s, 10 s).
    pub heart_beat: (u64, u64),
    /// Backoff between connection attempts: doubles from `reconnect_min` up to
    /// `reconnect_max`, each wait jittered down by up to half. Defaults 100 ms and 5 s.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// Time to connect and be CONNECTED. Default 5 s.
    pub connect_timeout: Duration,
    /// Unwritten bytes (all connections) above which publishers are paused. Default 4 MiB.
    pub high_water: usize,
    /// Unwritten bytes per connection above which a SEND is refused. Default 64 MiB.
    pub max_buffered: usize,
    /// Largest frame body accepted from upstream. Default 16 MiB.
    pub max_body: usize,
    /// `prefetch-count` of queue subscriptions that acknowledge. Default 1,000.
    pub prefetch: usize,
    pub dialect: Dialect,
    /// The topic under which each user has a topic of its own, for `/user` destinations
    /// across nodes (see [`RelayMode`](crate::broker::RelayMode)). Default
    /// `/topic/sockeye-user`.
    pub user_topic: String,
    /// How long a closing session's consumer connection waits for the broker to confirm
    /// that the session's other queue subscriptions are gone before it is closed anyway
    /// (see `relay/route.rs`, `Router::retire`). Default 10 s.
    pub withdraw_timeout: Duration,
}

impl fmt::Debug for RelayConfig {
    /// Without the passcode.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayConfig")
            .field("url", &self.display_url())
            .field("pool", &self.pool)
            .field("dialect", &self.dialect)
            .finish()
    }
}

impl RelayConfig {
    /// The defaults for a broker at `host:port`, as guest/guest on vhost `/`.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        RelayConfig {
            host: host.into(),
            port,
            login: "guest".into(),
            passcode: "guest".into(),
            vhost: "/".into(),
            pool: 4,
            heart_beat: (10_000, 10_000),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            high_water: 4 << 20,
            max_buffered: 64 << 20,
            max_body: 16 << 20,
            prefetch: 1000,
            withdraw_timeout: Duration::from_secs(10),
            dialect: Dialect::RabbitMq,
            user_topic: crate::broker::RelayMode::default().user_topic,
        }
    }

    /// `stomp://LOGIN:PASSCODE@HOST:PORT/VHOST` (see [`url`]).
    pub fn from_url(url: &str) -> Result<Self, UrlError> {
        url::parse(url)
    }

    /// The URL with the passcode masked, for logs.
    pub fn display_url(&self) -> String {
        url::display(self)
    }
}

/// What the relay needs from the node: its broker and its sessions. Called on the relay's
/// thread.
pub trait Downstream: Send + Sync + 'static {
    /// Messages from upstream, in order. Returns the indexes of queue deliveries whose
    /// subscription is gone (the relay gives them back upstream).
    fn deliver(&self, batch: Vec<Delivery>) -> Vec<usize>;
    /// A RECEIPT for `session`.
    fn receipt(&self, session: SessionId, receipt: &str);
    /// An ERROR for `session`, which is then closed.
    fn error(&self, session: SessionId, message: &str, detail: &str, receipt: Option<&str>);
    /// The connection of queue subscription `id` of `session` was lost: its unacknowledged
    /// messages are the external broker's again.
    fn forget_unacked(&self, session: SessionId, id: &str);
    /// The external broker became reachable (every connection up) or not.
    fn availability(&self, available: bool);
}

/// A message from upstream, for the node's broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// For every local subscription of topic (or pattern) `target`.
    Topic {
        target: String,
        destination: String,
        headers: Vec<(String, String)>,
        body: Bytes,
    },
    /// For the sessions of `user` subscribed to `/user{destination}`.
    User {
        user: String,
        destination: String,
        headers: Vec<(String, String)>,
        body: Bytes,
    },
    /// For queue subscription `id` of `session`; `ack` to settle it upstream.
    Queue {
        session: SessionId,
        id: String,
        destination: String,
        headers: Vec<(String, String)>,
        body: Bytes,
        ack: Option<String>,
    },
}

/// The relay's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Connections up now.
    pub connected: usize,
    /// Connections made (reconnections included).
    pub connects: u64,
    /// Connections lost.
    pub disconnects: u64,
    /// SENDs forwarded, and confirmed by the external broker's RECEIPT.
    pub sent: u64,
    pub confirmed: u64,
    /// SENDs refused (broker unreachable, backlog full), and unconfirmed when a connection was
    /// lost: each told to its session with an ERROR, or logged for the application's own.
    pub refused: u64,
    pub unconfirmed: u64,
    /// Messages received from upstream.
    pub received: u64,
    /// Queue messages that reached a subscription already withdrawn: the external broker
    /// redelivers them when the connection closes.
    pub orphaned: u64,
    /// Upstream subscriptions now (topics, users, queues).
    pub subscriptions: usize,
    /// Bytes not yet written upstream.
    pub buffered: usize,
}

/// Counters shared between the relay thread and its handle.
#[derive(Debug, Default)]
struct Shared {
    available: AtomicBool,
    connected: AtomicUsize,
    connects: AtomicU64,
    disconnects: AtomicU64,
    sent: AtomicU64,
    confirmed: AtomicU64,
    refused: AtomicU64,
    unconfirmed: AtomicU64,
    received: AtomicU64,
    orphaned: AtomicU64,
    subscriptions: AtomicUsize,
    buffered: AtomicUsize,
    stop: AtomicBool,
}

/// The handle of a running relay.
pub struct Relay {
    /// Operations in batches: what one call of the broker produced is taken as a whole
    /// (a closing session's withdrawals and its `Closed` are seen together).
    ops: mpsc::Sender<Vec<RelayOp>>,
    waker: Arc<mio::Waker>,
    gate: Arc<Gate>,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    config: RelayConfig,
}

impl fmt::Debug for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Relay")
            .field("config", &self.config)
            .field("available", &self.is_available())
            .finish()
    }
}

impl Relay {
    /// Starts the relay's thread; it connects at once. `downstream` is told what comes back.
    pub fn start(config: RelayConfig, downstream: Arc<dyn Downstream>) -> std::io::Result<Relay> {
        let (tx, rx) = mpsc::channel();
        let poll = mio::Poll::new()?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), run::WAKER)?);
        let gate = Gate::new();
        let shared = Arc::new(Shared::default());
        let thread = run::spawn(
            poll,
            rx,
            config.clone(),
            downstream,
            gate.clone(),
            shared.clone(),
        )?;
        Ok(Relay {
            ops: tx,
            waker,
            gate,
            shared,
            thread: Mutex::new(Some(thread)),
            config,
        })
    }

    /// Hands operations to the relay thread (in order) and wakes it.
    pub fn submit(&self, ops: impl IntoIterator<Item = RelayOp>) {
        let batch: Vec<RelayOp> = ops.into_iter().collect();
        if batch.is_empty() || self.ops.send(batch).is_err() {
            return;
        }
        let _ = self.waker.wake();
    }

    /// Closed while the relay holds too much unwritten: publishers pass it.
    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    /// Every connection is up.
    pub fn is_available(&self) -> bool {
        self.shared.available.load(Ordering::Acquire)
    }

    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    pub fn stats(&self) -> RelayStats {
        let s = &self.shared;
        RelayStats {
            connected: s.connected.load(Ordering::Relaxed),
            connects: s.connects.load(Ordering::Relaxed),
            disconnects: s.disconnects.load(Ordering::Relaxed),
            sent: s.sent.load(Ordering::Relaxed),
            confirmed: s.confirmed.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            unconfirmed: s.unconfirmed.load(Ordering::Relaxed),
            received: s.received.load(Ordering::Relaxed),
            orphaned: s.orphaned.load(Ordering::Relaxed),
            subscriptions: s.subscriptions.load(Ordering::Relaxed),
            buffered: s.buffered.load(Ordering::Relaxed),
        }
    }

    /// Stops the thread (connections are closed with DISCONNECT) and waits for it.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}
