//! The STOMP server on the engine: STOMP over WebSocket (sub-protocols `v12.stomp`,
//! `v11.stomp`, `v10.stomp`, or none) and STOMP over plain TCP, both on the same Sockeye event
//! loops, sharing one [`Broker`].
//!
//! * [`Hub`] owns the broker, the table of live sessions (their cross-thread handles) and the
//!   [`Application`] behind `/app` destinations, and carries out the broker's [`Action`]s: a
//!   frame for the session being served goes straight into its cork; a frame for any other
//!   session is posted through its handle (the per-subscriber head and the shared body travel
//!   as two `Bytes`, so a fan-out never copies the body).
//! * [`StompHandler`] is the engine [`Handler`]: one per worker, all sharing the hub.
//! * [`heartbeat`] sends EOL heart-beats at the negotiated rate and closes peers that fall
//!   silent beyond theirs.
//!
//! The broker is a plain mutex: frames of one batch are handled under one lock (so a CONNECT
//! and the frames after it in the same message see the negotiated version), delivery happens
//! after it is released. Fan-out never mutates subscriptions. A subscriber that falls behind is
//! handled by the [`slow`] consumer policy (told and let go, dropped and counted, or its
//! publishers held back), never silently; a publisher whose fan-out fills a worker's inbox stops
//! being read until the inbox is taken (the engine's gates).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::Instant;

use bytes::Bytes;
use sockeye::handshake::Request;
use sockeye::server::{
    Handler, HttpResponse, Message, Outgoing, PostError, Rejection, Session, SessionHandle,
    Upgrading,
};
use sockeye::DataKind;
use tracing::{debug, info, warn};

use crate::broker::{
    Action, AppMessage, Broker, BrokerConfig, BrokerEvent, Ending, OutFrame, RelayMode, SessionId,
};
use crate::link::{Batch, Link};
use crate::relay::{Relay, RelayConfig};
use crate::stomp::Limits;

pub mod heartbeat;
mod internal;
pub mod metrics;
mod ops;
pub mod origin;
mod relayed;
pub mod slow;

pub use internal::{Delivered, Listener, SubscribeError};
use metrics::Counter;
pub use origin::OriginPolicy;
pub use slow::{SlowConsumer, SlowStats};

/// Frames (at most) and input bytes (about) of a STOMP-over-TCP read handled per broker lock,
/// between checks of the session's read pause: small enough that a publisher whose fan-out
/// fills an inbox, or reaches a subscriber that is behind, stops within a few kilobytes per
/// subscriber; large enough that the lock is not taken per frame.
const STREAM_BATCH: Batch = Batch {
    frames: 64,
    bytes: 16 << 10,
};

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

/// A live session as the hub knows it.
#[derive(Debug)]
struct Peer {
    handle: SessionHandle,
    /// Milliseconds since the hub started, of the last bytes received.
    last_in: AtomicU64,
    /// Negotiated heart-beats in ms (0: none).
    send_every: AtomicU64,
    expect_every: AtomicU64,
    /// Messages dropped since it fell behind (drop policy).
    dropping: AtomicU64,
    /// Already let go as a slow consumer (from afar: the close takes a moment to apply).
    let_go: AtomicBool,
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
        let mut actions = Vec::new();
        self.hub
            .broker()
            .publish(destination, headers, body.into(), &mut actions);
        self.hub.execute(actions, None);
    }

    /// `convertAndSendToUser`: to every session of `user` subscribed to `/user{destination}`.
    pub fn publish_to_user(
        &self,
        user: &str,
        destination: &str,
        headers: Vec<(String, String)>,
        body: impl Into<Bytes>,
    ) {
        let mut actions = Vec::new();
        self.hub
            .broker()
            .publish_to_user(user, destination, headers, body.into(), &mut actions);
        self.hub.execute(actions, None);
    }

    /// The reply to one session (`@SendToUser` to the sender), on `/user{destination}`.
    pub fn publish_to_session(
        &self,
        session: SessionId,
        destination: &str,
        headers: Vec<(String, String)>,
        body: impl Into<Bytes>,
    ) {
        let mut actions = Vec::new();
        self.hub.broker().publish_to_session(
            session,
            destination,
            headers,
            body.into(),
            &mut actions,
        );
        self.hub.execute(actions, None);
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
        self.hub.broker().deliver_topic(
            destination,
            destination,
            headers,
            body.into(),
            &mut actions,
        );
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
        let hub = Arc::new(Hub {
            broker: Mutex::new(Broker::new(config.broker)),
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
        });
        hub.start_relay()?;
        Ok(hub)
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

    /// Live sessions (WebSocket and TCP).
    pub fn session_count(&self) -> usize {
        self.peers.read().map_or(0, |p| p.len())
    }

    /// Stops the heart-beat thread and the relay.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(relay) = self.relay.get() {
            relay.stop();
        }
    }

    fn register(&self, id: SessionId, handle: SessionHandle) {
        let peer = Peer {
            handle,
            last_in: AtomicU64::new(self.elapsed_ms()),
            send_every: AtomicU64::new(0),
            expect_every: AtomicU64::new(0),
            dropping: AtomicU64::new(0),
            let_go: AtomicBool::new(false),
        };
        if let Ok(mut peers) = self.peers.write() {
            peers.insert(id, peer);
        }
    }

    fn touch(&self, id: SessionId) {
        if let Some(peer) = self.peers.read().ok().as_ref().and_then(|p| p.get(&id)) {
            peer.last_in.store(self.elapsed_ms(), Ordering::Relaxed);
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
        self.touch(id);
        let mut used = 0;
        loop {
            let mut actions = Vec::new();
            let fed = {
                let mut broker = self.broker();
                broker.set_now(self.elapsed_ms());
                session.data_mut().link().feed_some(
                    id,
                    &bytes[used..],
                    &mut broker,
                    &self.limits,
                    &mut actions,
                    batch,
                )
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

    /// One line per session closed after an ERROR: why, to whom (session, user, address).
    fn log_error(&self, to: SessionId, error: &str) {
        let kind = metrics::error_kind(error);
        metrics::bump(kind);
        if kind == Counter::ErrorAuth {
            metrics::bump(Counter::RefusedAuth);
        } else if error.starts_with("too many sessions") {
            metrics::bump(Counter::RefusedSessionLimit);
        }
        let (user, peer) = {
            let broker = self.broker();
            (broker.user(to).map(str::to_owned), broker.address(to))
        };
        info!(
            session = to,
            user = user.as_deref().unwrap_or(""),
            peer = %peer.map(|p| p.to_string()).unwrap_or_default(),
            %error,
            "STOMP ERROR sent; closing"
        );
    }

    /// Gives the hub the engine's handle, for its counters in `GET /metrics`.
    pub fn set_engine(&self, handle: sockeye::server::ShutdownHandle) {
        let _ = self.engine.set(handle);
    }

    /// Carries out the deferred actions that are due (called on the heart-beat tick).
    fn run_due(self: &Arc<Self>) {
        let now = self.elapsed_ms();
        let due: Vec<Vec<Action>> = match self.later.lock() {
            Ok(mut later) if !later.is_empty() => {
                let (due, keep) = std::mem::take(&mut *later)
                    .into_iter()
                    .partition(|(at, _)| *at <= now);
                *later = keep;
                due.into_iter().map(|(_, actions)| actions).collect()
            }
            _ => return,
        };
        for actions in due {
            self.execute(actions, None);
        }
    }

    /// The transport is gone: tell the broker (redeliveries, Disconnected event).
    fn closed(self: &Arc<Self>, id: SessionId) {
        if let Ok(mut peers) = self.peers.write() {
            peers.remove(&id);
        }
        let mut actions = Vec::new();
        self.broker().closed(id, &mut actions);
        self.execute(actions, None);
    }

    /// Carries out the broker's actions, then runs the application for what it must see.
    fn execute(
        self: &Arc<Self>,
        actions: Vec<Action>,
        mut current: Option<&mut dyn CurrentSession>,
    ) {
        let mut app_messages = Vec::new();
        let mut events = Vec::new();
        let mut relayed = Vec::new();
        for action in actions {
            match action {
                Action::Relay(op) => relayed.push(op),
                Action::Send { to, frame } => {
                    count_out(&frame);
                    match current.as_deref_mut() {
                        Some(s) if s.session_id() == to => s.send_frame(&frame),
                        _ => {
                            if !self.deliver_internal(to, &frame) {
                                self.post(to, &frame)
                            }
                        }
                    }
                }
                Action::Close { to, ending } => {
                    let (code, reason) = match &ending {
                        Ending::Error(error) => {
                            self.log_error(to, error);
                            (1002, "STOMP error")
                        }
                        Ending::Disconnect => (1000, "disconnected"),
                    };
                    match current.as_deref_mut() {
                        Some(s) if s.session_id() == to => s.close_with(code, reason),
                        _ => {
                            if let Some(peer) =
                                self.peers.read().ok().as_ref().and_then(|p| p.get(&to))
                            {
                                let _ = peer.handle.close(code, reason);
                            }
                        }
                    }
                }
                Action::HeartBeat {
                    to,
                    send_every,
                    expect_every,
                } => {
                    if let Some(peer) = self.peers.read().ok().as_ref().and_then(|p| p.get(&to)) {
                        peer.send_every.store(send_every, Ordering::Relaxed);
                        peer.expect_every.store(expect_every, Ordering::Relaxed);
                    }
                }
                Action::Later {
                    to,
                    delay_ms,
                    actions,
                } => {
                    debug!(session = to, delay_ms, "answer deferred");
                    let due = self.elapsed_ms() + delay_ms;
                    if let Ok(mut later) = self.later.lock() {
                        later.push((due, actions));
                    }
                }
                Action::App(message) => app_messages.push(message),
                Action::Event(event) => {
                    if let BrokerEvent::Connected { session, user } = &event {
                        let peer = self.broker().address(*session);
                        info!(
                            session,
                            user = user.as_deref().unwrap_or(""),
                            peer = %peer.map(|p| p.to_string()).unwrap_or_default(),
                            "STOMP session connected"
                        );
                    }
                    events.push(event)
                }
            }
        }
        if !relayed.is_empty() {
            self.relay_ops(relayed, current.is_some());
        }
        if app_messages.is_empty() && events.is_empty() {
            return;
        }
        let messaging = self.messaging();
        for message in &app_messages {
            self.app.on_app_message(message, &messaging);
        }
        for event in &events {
            self.app.on_event(event, &messaging);
        }
    }

    /// Sends a frame to a session through its handle (any worker). Under the throttle policy
    /// the session being served (a publisher) then passes the recipient's gate: if the
    /// recipient is behind, the publisher stops being read after this message.
    fn post(&self, to: SessionId, frame: &OutFrame) {
        let Ok(peers) = self.peers.read() else { return };
        let Some(peer) = peers.get(&to) else { return };
        let kind = if frame.utf8 {
            DataKind::Text
        } else {
            DataKind::Binary
        };
        let (prefix, body) = match &frame.tail {
            Some(tail) => (frame.head.clone(), tail.clone()),
            None => (Bytes::new(), frame.head.clone()),
        };
        let posted = match frame.bounded {
            true => peer.handle.send_parts(kind, prefix, body),
            false => peer.handle.send_parts_unbounded(kind, prefix, body),
        };
        match posted {
            Ok(()) => {}
            Err(PostError::Full) => self.lost(to, peer),
            Err(PostError::Stopped) => debug!(session = to, "not posted: the worker stopped"),
        }
        if let SlowConsumer::Throttle { .. } = self.slow {
            peer.handle.gate().pass();
        }
    }
}

/// Counts a frame sent (by its command).
fn count_out(frame: &OutFrame) {
    metrics::bump(Counter::FramesOut);
    metrics::add(Counter::BytesOut, frame.len() as u64);
    if frame.head.starts_with(b"MESSAGE\n") {
        metrics::bump(Counter::Deliveries);
        if memchr::memmem::find(&frame.head, b"\nredelivered:true\n").is_some() {
            metrics::bump(Counter::Redeliveries);
        }
    } else if frame.head.starts_with(b"RECEIPT\n") {
        metrics::bump(Counter::Receipts);
    }
}

/// The session being served, when the hub acts inside its callback (object-safe over the
/// handler's data type).
trait CurrentSession {
    fn session_id(&self) -> SessionId;
    fn send_frame(&mut self, frame: &OutFrame);
    fn close_with(&mut self, code: u16, reason: &str);
}

impl<D> CurrentSession for Session<'_, D> {
    fn session_id(&self) -> SessionId {
        self.id()
    }

    fn send_frame(&mut self, frame: &OutFrame) {
        let kind = if frame.utf8 {
            DataKind::Text
        } else {
            DataKind::Binary
        };
        let outgoing = match &frame.tail {
            Some(tail) => Outgoing::Parts(kind, &frame.head, tail.clone()),
            None => Outgoing::Shared(kind, frame.head.clone()),
        };
        let sent = match frame.bounded {
            true => self.send(outgoing),
            false => self.send_unbounded(outgoing),
        };
        if let Err(sockeye::SendError::NotText) = sent {
            tracing::warn!(
                session = self.id(),
                "a frame with a binary body to a SockJS session (text only) is not sent"
            );
        }
    }

    fn close_with(&mut self, code: u16, reason: &str) {
        let _ = self.close(code, reason);
    }
}

/// A running STOMP server: the engine's workers, the hub and its heart-beat thread.
#[derive(Debug)]
pub struct StompServer {
    running: sockeye::server::RunningServer,
    hub: Arc<Hub>,
    beats: Option<std::thread::JoinHandle<()>>,
    ws_addr: SocketAddr,
    tcp_addr: Option<SocketAddr>,
}

impl StompServer {
    /// Binds `ws` (HTTP and STOMP over WebSocket) and, if given, `tcp` (STOMP over TCP), and
    /// starts serving. The server's sub-protocol list is set to [`SUB_PROTOCOLS`].
    pub fn start(
        ws: SocketAddr,
        tcp: Option<SocketAddr>,
        mut config: sockeye::server::ServerConfig,
        stomp: StompConfig,
        app: Box<dyn Application>,
    ) -> std::io::Result<StompServer> {
        config.handshake.protocols = SUB_PROTOCOLS.iter().map(|p| p.to_string()).collect();
        if let Some(prefix) = &stomp.sockjs_path {
            config.sockjs.push(sockeye::sockjs::Service::new(prefix));
        }
        let hub = Hub::new(stomp, app)?;
        let mut server = sockeye::server::Server::bind(ws, config)?;
        hub.set_engine(server.shutdown_handle());
        let ws_addr = server.local_addr();
        let tcp_addr = match tcp {
            Some(addr) => Some(server.bind_stream(addr)?),
            None => None,
        };
        let beats = heartbeat::spawn(&hub)?;
        let handler_hub = hub.clone();
        let running = server.spawn(move || StompHandler::new(handler_hub.clone()))?;
        Ok(StompServer {
            running,
            hub,
            beats: Some(beats),
            ws_addr,
            tcp_addr,
        })
    }

    pub fn ws_addr(&self) -> SocketAddr {
        self.ws_addr
    }

    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    pub fn shutdown_handle(&self) -> sockeye::server::ShutdownHandle {
        self.running.shutdown_handle()
    }

    /// The engine's counters (connections, drops, pauses).
    pub fn engine_stats(&self) -> sockeye::server::ServerStats {
        self.running.stats()
    }

    /// Waits until the engine stops (a shutdown through the handle, or a signal).
    pub fn join(mut self) -> std::io::Result<()> {
        let result = self.running.join();
        self.hub.stop();
        if let Some(beats) = self.beats.take() {
            let _ = beats.join();
        }
        result
    }

    /// Graceful shutdown, then waits.
    pub fn shutdown(self) -> std::io::Result<()> {
        self.running.shutdown_handle().shutdown();
        self.join()
    }
}

/// Per-connection data that carries a [`Link`].
pub trait AsLink {
    fn link(&mut self) -> &mut Link;
}

impl AsLink for Link {
    fn link(&mut self) -> &mut Link {
        self
    }
}

/// How a session reached the server (the label of its metrics).
enum Transport {
    Ws,
    Sockjs,
    Tcp,
}

fn transport<D>(session: &Session<'_, D>) -> Transport {
    if session.is_stream() {
        Transport::Tcp
    } else if session.is_sockjs() {
        Transport::Sockjs
    } else {
        Transport::Ws
    }
}

/// The engine handler of a STOMP server: one per worker.
#[derive(Clone, Debug)]
pub struct StompHandler {
    hub: Arc<Hub>,
}

impl StompHandler {
    pub fn new(hub: Arc<Hub>) -> Self {
        StompHandler { hub }
    }
}

impl Handler for StompHandler {
    type Data = Link;

    fn on_upgrade(
        &mut self,
        req: &Request<'_, '_>,
        upgrading: &mut Upgrading,
    ) -> Result<Link, Rejection> {
        if let Err(refused) = self
            .hub
            .origins
            .check(req.header_str("origin"), req.header_str("host"))
        {
            let peer = upgrading.peer.map(|p| p.to_string()).unwrap_or_default();
            metrics::bump(Counter::RefusedOrigin);
            warn!(%peer, origin = %refused.origin, host = %refused.host, path = req.path(), "session refused: origin not allowed (same-origin only unless --allowed-origins lists it)");
            return Err(Rejection::new(403, refused.to_string()));
        }
        let from = upgrading.peer.map(|p| p.ip());
        // The engine routes only the SockJS service's own URLs here.
        if upgrading.sockjs.is_some() {
            return Ok(Link::from_peer(from));
        }
        if req.path() != self.hub.ws_path {
            metrics::bump(Counter::RefusedPath);
            return Err(Rejection::new(
                404,
                format!("no WebSocket endpoint at {}", req.path()),
            ));
        }
        // The sub-protocol was chosen from the server's list; a client offering none is welcome.
        Ok(Link::from_peer(from))
    }

    fn on_http(&mut self, req: &Request<'_, '_>, body: &[u8]) -> HttpResponse {
        self.on_http_from(None, req, body)
    }

    fn on_http_from(
        &mut self,
        peer: Option<SocketAddr>,
        req: &Request<'_, '_>,
        body: &[u8],
    ) -> HttpResponse {
        if req.path() == self.hub.ws_path {
            return HttpResponse::text(426, "this endpoint speaks STOMP over WebSocket\n");
        }
        if let Some(response) = ops::answer(&self.hub, req) {
            return response;
        }
        let peer = peer.map(|p| p.ip());
        self.hub
            .app
            .on_http_from(peer, req, body, &self.hub.messaging())
    }

    fn on_stream_open(&mut self, peer: SocketAddr) -> Option<Link> {
        debug!(%peer, "STOMP over TCP connection");
        Some(Link::from_peer(Some(peer.ip())))
    }

    fn on_open(&mut self, session: &mut Session<'_, Link>) {
        if let Some(ip) = session.data().peer() {
            self.hub.broker().opened(session.id(), ip);
        }
        self.hub.register(session.id(), session.handle());
        metrics::bump(match transport(session) {
            Transport::Ws => Counter::AcceptedWs,
            Transport::Sockjs => Counter::AcceptedSockjs,
            Transport::Tcp => Counter::AcceptedTcp,
        });
    }

    fn on_message(&mut self, session: &mut Session<'_, Link>, message: Message<'_>) {
        let bytes = match message {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(bytes) => bytes,
        };
        let (messages, in_bytes) = match transport(session) {
            Transport::Sockjs => (Counter::MessagesInSockjs, Counter::BytesInSockjs),
            _ => (Counter::MessagesInWs, Counter::BytesInWs),
        };
        metrics::bump(messages);
        metrics::add(in_bytes, bytes.len() as u64);
        // A WebSocket message is handled whole: the engine pauses between messages.
        self.hub.feed(session, bytes, Batch::ALL);
    }

    fn on_stream_data(&mut self, session: &mut Session<'_, Link>, bytes: &[u8]) -> usize {
        let used = self.hub.feed(session, bytes, STREAM_BATCH);
        metrics::bump(Counter::MessagesInTcp);
        metrics::add(Counter::BytesInTcp, used as u64);
        used
    }

    fn on_drain(&mut self, session: &mut Session<'_, Link>) {
        self.hub.drained(session);
    }

    fn on_backpressure(&mut self, session: &mut Session<'_, Link>) {
        self.hub.congested(session);
    }

    fn on_overflow(&mut self, session: &mut Session<'_, Link>, dropped: u32) {
        self.hub.overflowed(session, dropped);
    }

    fn on_close(&mut self, session: &mut Session<'_, Link>, code: u16, reason: &str) {
        let (connected, user) = {
            let broker = self.hub.broker();
            let id = session.id();
            (
                broker.version(id).is_some(),
                broker.user(id).map(str::to_owned),
            )
        };
        if connected {
            // Connected sessions only: a refused or unfinished one was logged as such.
            let peer = session.data().peer();
            info!(
                session = session.id(),
                user = user.as_deref().unwrap_or(""),
                peer = %peer.map(|p| p.to_string()).unwrap_or_default(),
                code,
                reason,
                "STOMP session closed"
            );
        } else {
            debug!(session = session.id(), code, reason, "STOMP session closed");
        }
        metrics::bump(match transport(session) {
            Transport::Ws => Counter::ClosedWs,
            Transport::Sockjs => Counter::ClosedSockjs,
            Transport::Tcp => Counter::ClosedTcp,
        });
        self.hub.closed(session.id());
    }
}
