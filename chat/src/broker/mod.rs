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

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::stomp::{
    encode, encode_message_head, Command, EncodeOptions, Frame, MessageTail, StompError, Version,
};

pub mod destination;
pub mod limits;
pub mod permissions;
mod relayed;

use destination::{Kind, Prefixes};
use limits::{Bucket, Census, SendRate};
use permissions::{Permissions, Verb};
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
    /// Messages held per queue while nobody subscribes. Default 1,000; the oldest is dropped.
    pub max_held_per_queue: usize,
    /// Unacknowledged queue messages per subscription before it is skipped (like a prefetch
    /// count). Default 1,000.
    pub max_unacked: usize,
    /// Subscriptions per session. Default 1,000.
    pub max_subscriptions: usize,
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
struct Stored {
    /// The destination as the subscriber sees it.
    destination: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

#[derive(Debug)]
struct Pending {
    message_id: String,
    ack_id: String,
    /// The queue it came from (for redelivery).
    queue: String,
    message: Stored,
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
    pending: Vec<Pending>,
    /// Announced to the relay (relay mode).
    relayed: bool,
}

/// A queued frame inside a transaction.
#[derive(Debug)]
enum TxOp {
    Send(Stored, String),
    Ack { id: String, nack: bool },
}

#[derive(Debug)]
struct SessionState {
    version: Option<Version>,
    user: Option<String>,
    subscriptions: Vec<usize>,
    transactions: HashMap<String, Vec<TxOp>>,
    attributes: HashMap<String, String>,
    /// SENDs allowed (with [`BrokerConfig::max_send_rate`]).
    sends: Option<Bucket>,
    /// The address it was counted under (sessions per address).
    address: Option<IpAddr>,
    /// The application's own session ([`Broker::connect_trusted`]): no rules, no limits.
    trusted: bool,
}

/// The broker.
pub struct Broker {
    config: BrokerConfig,
    sessions: HashMap<SessionId, SessionState>,
    subs: slab::Slab<Subscription>,
    /// Exact (non-wildcard) targets → subscriptions, for O(subscribers) fan-out.
    exact: HashMap<String, Vec<usize>>,
    /// Wildcard subscriptions, matched one by one.
    patterns: Vec<usize>,
    held: HashMap<String, VecDeque<Stored>>,
    round_robin: HashMap<String, usize>,
    next_message: u64,
    /// The frame being handled handed its receipt to the relay (relay mode).
    receipt_taken: bool,
    /// Where each open transport session came from (connected or not), as the transport said.
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

/// Headers a SEND carries that are about the SEND itself, not the message.
const SEND_ONLY_HEADERS: [&str; 4] = ["transaction", "receipt", "content-length", "destination"];

impl Broker {
    pub fn new(config: BrokerConfig) -> Self {
        Broker {
            config,
            sessions: HashMap::new(),
            subs: slab::Slab::new(),
            exact: HashMap::new(),
            patterns: Vec::new(),
            held: HashMap::new(),
            round_robin: HashMap::new(),
            next_message: 0,
            receipt_taken: false,
            addresses: HashMap::new(),
            per_user: Census::default(),
            per_address: Census::default(),
            now_ms: 0,
            trusting: None,
            verdicts: HashMap::new(),
        }
    }

    /// The credentials of `frame` when it is a CONNECT from `session` that the authenticator
    /// has yet to judge. The server then stops handing this session's frames to the broker,
    /// calls [`authenticator`](Self::authenticator) with the broker unlocked (a password hash
    /// costs tens of milliseconds: under the lock every other session would wait),
    /// gives the verdict to [`authenticated`](Self::authenticated) and offers the CONNECT again.
    /// `None`: handle the frame now.
    pub fn needs_authentication(
        &self,
        session: SessionId,
        frame: &Frame<'_>,
    ) -> Option<Credentials> {
        let connect = matches!(frame.command, Command::Connect | Command::Stomp);
        if !connect
            || self.config.authenticator.is_none()
            || self.sessions.contains_key(&session)
            || self.verdicts.contains_key(&session)
        {
            return None;
        }
        Some(Credentials {
            login: frame.header("login").map(str::to_owned),
            passcode: frame.header("passcode").map(str::to_owned),
            host: frame.header("host").map(str::to_owned),
            session,
            peer: self.address(session),
        })
    }

    /// The authenticator, to call outside the lock.
    pub fn authenticator(&self) -> Option<Authenticator> {
        self.config.authenticator.clone()
    }

    /// The verdict on `session`'s pending CONNECT, reached outside the lock.
    pub fn authenticated(&mut self, session: SessionId, verdict: Verdict) {
        self.verdicts.insert(session, verdict);
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// Sessions that completed CONNECT.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Subscriptions of every session.
    pub fn subscription_count(&self) -> usize {
        self.subs.len()
    }

    /// Destinations with subscribers (exact names and patterns) or held messages.
    pub fn destination_count(&self) -> usize {
        self.exact.len() + self.patterns.len() + self.held.len()
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
            s.attributes.insert(key.into(), value.into());
        }
    }

    pub fn attribute(&self, session: SessionId, key: &str) -> Option<&str> {
        self.sessions
            .get(&session)
            .and_then(|s| s.attributes.get(key))
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

    /// The address `session` came from, if the transport said.
    pub fn address(&self, session: SessionId) -> Option<IpAddr> {
        self.addresses.get(&session).copied()
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

    /// Sends ERROR (with `message`, and `receipt-id` when the frame asked for a receipt) and
    /// closes: after an ERROR the spec says the server MUST close the connection.
    fn error(
        &mut self,
        session: SessionId,
        refusal: Refusal,
        receipt: Option<&str>,
        out: &mut Vec<Action>,
    ) {
        if let Some(frame) = self.error_frame(session, &refusal.message, &refusal.detail, receipt) {
            out.push(Action::Send { to: session, frame });
        }
        out.push(Action::Close {
            to: session,
            ending: Ending::Error(refusal.message),
        });
    }

    /// An ERROR frame for `session` in its version: `message` as the header, `detail` as the
    /// body (for the transport's own errors, such as a slow consumer being let go).
    pub fn error_frame(
        &self,
        session: SessionId,
        message: &str,
        detail: &str,
        receipt: Option<&str>,
    ) -> Option<OutFrame> {
        let version = self.version(session);
        let mut headers: Vec<(&str, &str)> =
            vec![("message", message), ("content-type", "text/plain")];
        if let Some(r) = receipt {
            headers.push(("receipt-id", r));
        }
        let mut bytes = Vec::new();
        let opts = EncodeOptions::new(version).with_content_length(true);
        let sanitized: Vec<(&str, String)> = headers
            .iter()
            .map(|(n, v)| (*n, sanitize(v, version)))
            .collect();
        encode(
            Command::Error,
            sanitized.iter().map(|(n, v)| (*n, v.as_str())),
            detail.as_bytes(),
            opts,
            &mut bytes,
        )
        .ok()?;
        Some(OutFrame::reply(bytes))
    }

    fn receipt(&mut self, session: SessionId, id: &str, out: &mut Vec<Action>) {
        let version = self.version(session);
        let mut bytes = Vec::new();
        let id = sanitize(id, version);
        if encode(
            Command::Receipt,
            [("receipt-id", id.as_str())],
            b"",
            EncodeOptions::new(version),
            &mut bytes,
        )
        .is_ok()
        {
            out.push(Action::Send {
                to: session,
                frame: OutFrame::reply(bytes),
            });
        }
    }

    /// A CONNECT of the application's own (its internal subscriptions): no authenticator, and
    /// the session is exempt from the permission rules and limits, which are for clients.
    pub fn connect_trusted(
        &mut self,
        session: SessionId,
        frame: &Frame<'_>,
        out: &mut Vec<Action>,
    ) {
        self.trusting = Some(session);
        self.handle(session, frame, out);
        self.trusting = None;
    }

    fn connect(
        &mut self,
        session: SessionId,
        frame: &Frame<'_>,
        trusted: bool,
        out: &mut Vec<Action>,
    ) -> Result<(), Refusal> {
        let version = Version::negotiate(frame.header("accept-version"), &self.config.versions)
            .ok_or_else(|| Refusal {
                message: "no supported version".into(),
                detail: format!(
                    "supported versions: {}",
                    join_versions(&self.config.versions)
                ),
            })?;
        let request = ConnectRequest {
            login: frame.header("login"),
            passcode: frame.header("passcode"),
            host: frame.header("host"),
            session,
            peer: self.address(session),
        };
        let user = match &self.config.authenticator {
            _ if trusted => None,
            Some(auth) => match self
                .verdicts
                .remove(&session)
                .unwrap_or_else(|| auth(&request))
            {
                Ok(user) => user,
                Err(AuthRefusal { reason, delay_ms }) if delay_ms > 0 => {
                    let mut actions = Vec::new();
                    let refusal = refuse(format!("not authorized: {reason}"));
                    self.error(session, refusal, frame.header("receipt"), &mut actions);
                    out.push(Action::Later {
                        to: session,
                        delay_ms,
                        actions,
                    });
                    self.receipt_taken = true;
                    return Ok(());
                }
                Err(AuthRefusal { reason, .. }) => {
                    return Err(refuse(format!("not authorized: {reason}")))
                }
            },
            None => None,
        };
        if !trusted {
            self.check_session_limits(user.as_deref(), request.peer)?;
        }
        let (send_every, expect_every) = match frame.header("heart-beat") {
            None => (0, 0),
            Some(value) => {
                let (cx, cy) = crate::stomp::parse_heart_beat(value)
                    .ok_or_else(|| refuse("invalid heart-beat header"))?;
                let (sx, sy) = self.config.heart_beat;
                // STOMP 1.2 "Heart-beating": 0 on either side means none in that direction.
                let send = if sx == 0 || cy == 0 { 0 } else { sx.max(cy) };
                let expect = if cx == 0 || sy == 0 { 0 } else { cx.max(sy) };
                (send, expect)
            }
        };
        let address = self.address(session);
        if let Some(u) = &user {
            self.per_user.add(u.clone());
        }
        if let Some(ip) = address {
            self.per_address.add(ip);
        }
        self.sessions.insert(
            session,
            SessionState {
                version: Some(version),
                user: user.clone(),
                subscriptions: Vec::new(),
                transactions: HashMap::new(),
                attributes: HashMap::new(),
                sends: (!trusted)
                    .then_some(self.config.max_send_rate)
                    .flatten()
                    .map(|r| Bucket::full(r, self.now_ms)),
                address,
                trusted,
            },
        );
        let heart_beat = format!("{send_every},{expect_every}");
        let session_name = format!("s{session}");
        let mut headers = vec![
            ("version", version.as_str().to_string()),
            ("heart-beat", heart_beat),
            ("server", self.config.server_name.clone()),
            ("session", session_name),
        ];
        if let Some(u) = &user {
            headers.push(("user-name", u.clone()));
        }
        let mut bytes = Vec::new();
        let clean: Vec<(&str, String)> = headers
            .iter()
            .map(|(n, v)| (*n, v.replace(['\r', '\n', ':'], "")))
            .collect();
        encode(
            Command::Connected,
            clean.iter().map(|(n, v)| (*n, v.as_str())),
            b"",
            EncodeOptions::new(Some(version)),
            &mut bytes,
        )
        .map_err(|e| refuse(format!("cannot encode CONNECTED: {e}")))?;
        out.push(Action::Send {
            to: session,
            frame: OutFrame::reply(bytes),
        });
        out.push(Action::HeartBeat {
            to: session,
            send_every,
            expect_every,
        });
        out.push(Action::Event(BrokerEvent::Connected { session, user }));
        Ok(())
    }

    /// Sessions per user and per address, at CONNECT.
    fn check_session_limits(
        &self,
        user: Option<&str>,
        peer: Option<IpAddr>,
    ) -> Result<(), Refusal> {
        if let (Some(max), Some(user)) = (self.config.max_sessions_per_user, user) {
            if self.per_user.count(&user.to_owned()) >= max {
                return Err(refuse(format!(
                    "too many sessions of user {user} (at most {max})"
                )));
            }
        }
        if let (Some(max), Some(ip)) = (self.config.max_sessions_per_address, peer) {
            if self.per_address.count(&ip) >= max {
                return Err(refuse(format!(
                    "too many sessions from {ip} (at most {max})"
                )));
            }
        }
        Ok(())
    }

    fn is_trusted(&self, session: SessionId) -> bool {
        self.sessions.get(&session).is_some_and(|s| s.trusted)
    }

    /// Takes a token of the session's SEND rate, or refuses.
    fn check_send_rate(&mut self, session: SessionId) -> Result<(), Refusal> {
        let (Some(rate), now) = (self.config.max_send_rate, self.now_ms) else {
            return Ok(());
        };
        let bucket = self
            .sessions
            .get_mut(&session)
            .and_then(|s| s.sends.as_mut());
        match bucket.is_none_or(|b| b.take(rate, now)) {
            true => Ok(()),
            false => Err(refuse(format!(
                "SEND rate over {} a second (bursts of {})",
                rate.per_second, rate.burst
            ))),
        }
    }

    fn send(
        &mut self,
        session: SessionId,
        frame: &Frame<'_>,
        out: &mut Vec<Action>,
    ) -> Result<(), Refusal> {
        self.check_send_rate(session)?;
        let destination = frame
            .header("destination")
            .ok_or_else(|| refuse("SEND without destination"))?;
        let kind = self
            .config
            .prefixes
            .kind(destination)
            .ok_or_else(|| refuse(format!("unknown destination {destination}")))?;
        if destination::is_pattern(destination) {
            return Err(refuse(format!("cannot send to a pattern: {destination}")));
        }
        if self
            .config
            .app_only
            .iter()
            .any(|p| destination::matches(p, destination))
        {
            return Err(refuse(format!(
                "{destination} is the application's (clients cannot send to it)"
            )));
        }
        if !self.is_trusted(session) {
            self.config
                .permissions
                .check(self.user(session), Verb::Send, destination)
                .map_err(|denied| refuse(denied.to_string()))?;
        }
        let headers: Vec<(String, String)> = frame
            .headers
            .iter()
            .filter(|h| !SEND_ONLY_HEADERS.contains(&&*h.name))
            .map(|h| (h.name.to_string(), h.value.to_string()))
            .collect();
        let stored = Stored {
            destination: destination.to_owned(),
            headers,
            body: Bytes::copy_from_slice(frame.body),
        };
        if self.config.relay.is_some() && self.relay_send(session, frame, kind, &stored, out)? {
            return Ok(());
        }
        if let Some(tx) = frame.header("transaction") {
            let limit = self.config.max_transaction_frames;
            let ops = self.transaction(session, tx)?;
            if ops.len() >= limit {
                return Err(refuse(format!(
                    "transaction {tx} has more than {limit} frames"
                )));
            }
            ops.push(TxOp::Send(stored, destination.to_owned()));
            return Ok(());
        }
        self.deliver_send(session, kind, stored, out);
        Ok(())
    }

    fn transaction(&mut self, session: SessionId, tx: &str) -> Result<&mut Vec<TxOp>, Refusal> {
        self.sessions
            .get_mut(&session)
            .and_then(|s| s.transactions.get_mut(tx))
            .ok_or_else(|| refuse(format!("unknown transaction {tx}")))
    }

    fn deliver_send(
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
                // SEND to /user/{name}/queue/x delivers to that user's /user/queue/x subscribers.
                let rest = self
                    .config
                    .prefixes
                    .strip_user(&stored.destination)
                    .unwrap_or("");
                if let Some((name, dest)) = rest[1..].split_once('/') {
                    let (name, dest) = (name.to_owned(), format!("/{dest}"));
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
    fn publish_to_user_here(
        &mut self,
        user: &str,
        destination: &str,
        headers: Vec<(String, String)>,
        body: Bytes,
        out: &mut Vec<Action>,
    ) {
        let targets: Vec<usize> = self
            .subs
            .iter()
            .filter(|(_, s)| {
                s.is_user
                    && s.user.as_deref() == Some(user)
                    && destination::matches(&s.target, destination)
            })
            .map(|(k, _)| k)
            .collect();
        let shown = format!("{}{}", self.config.prefixes.user, destination);
        let stored = Stored {
            destination: shown,
            headers,
            body,
        };
        self.fan_out(&targets, &stored, None, out);
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
        let targets: Vec<usize> = self
            .subs
            .iter()
            .filter(|(_, s)| {
                s.is_user && s.session == session && destination::matches(&s.target, destination)
            })
            .map(|(k, _)| k)
            .collect();
        let shown = format!("{}{}", self.config.prefixes.user, destination);
        self.fan_out(
            &targets,
            &Stored {
                destination: shown,
                headers,
                body,
            },
            None,
            out,
        );
    }

    fn matching(&self, destination: &str, kind: Kind) -> Vec<usize> {
        let mut found: Vec<usize> = self.exact.get(destination).cloned().unwrap_or_default();
        found.extend(
            self.patterns
                .iter()
                .copied()
                .filter(|&k| destination::matches(&self.subs[k].target, destination)),
        );
        found.retain(|&k| !self.subs[k].is_user);
        if kind == Kind::Queue {
            found.sort_unstable();
        }
        found
    }

    fn publish_stored(&mut self, stored: Stored, out: &mut Vec<Action>) {
        let kind = self
            .config
            .prefixes
            .kind(&stored.destination)
            .unwrap_or(Kind::Topic);
        let targets = self.matching(&stored.destination, kind);
        if kind == Kind::Topic {
            self.fan_out(&targets, &stored, None, out);
            return;
        }
        let queue = stored.destination.clone();
        match self.pick_queue_subscriber(&queue, &targets, None) {
            Some(k) => self.fan_out(&[k], &stored, Some(&queue), out),
            None => self.hold(queue, stored),
        }
    }

    fn hold(&mut self, queue: String, stored: Stored) {
        let held = self.held.entry(queue).or_default();
        if held.len() >= self.config.max_held_per_queue {
            held.pop_front();
        }
        held.push_back(stored);
    }

    /// Round-robin over `targets` (sorted), skipping subscriptions at their unacked limit and
    /// `exclude`.
    fn pick_queue_subscriber(
        &mut self,
        queue: &str,
        targets: &[usize],
        exclude: Option<usize>,
    ) -> Option<usize> {
        let eligible: Vec<usize> = targets
            .iter()
            .copied()
            .filter(|&k| Some(k) != exclude && self.subs[k].pending.len() < self.config.max_unacked)
            .collect();
        if eligible.is_empty() {
            return None;
        }
        let turn = self.round_robin.entry(queue.to_owned()).or_insert(0);
        let pick = eligible[*turn % eligible.len()];
        *turn = turn.wrapping_add(1);
        Some(pick)
    }

    /// Delivers one message to the subscriptions `targets`: the shared part is encoded once
    /// per version in use, each subscriber gets only its own head. `queue` names the queue
    /// for messages that must be tracked until acknowledged.
    fn fan_out(
        &mut self,
        targets: &[usize],
        stored: &Stored,
        queue: Option<&str>,
        out: &mut Vec<Action>,
    ) {
        if targets.is_empty() {
            return;
        }
        let utf8 = std::str::from_utf8(&stored.body).is_ok();
        let mut tails: [Option<MessageTail>; 3] = [None, None, None];
        let mut heads = BytesMut::new();
        self.next_message += 1;
        let message_id = format!("m{}", self.next_message);
        for &key in targets {
            let (session, version, ack_mode, sub_id, shown) = {
                let sub = &self.subs[key];
                let version = self
                    .sessions
                    .get(&sub.session)
                    .and_then(|s| s.version)
                    .unwrap_or(Version::V1_2);
                let shown = stored.destination.clone();
                (sub.session, version, sub.ack, sub.id.clone(), shown)
            };
            let slot = version as usize;
            if tails[slot].is_none() {
                let mut headers: Vec<(&str, String)> =
                    vec![("destination", sanitize(&shown, Some(version)))];
                headers.extend(
                    stored
                        .headers
                        .iter()
                        .map(|(n, v)| (n.as_str(), sanitize(v, Some(version)))),
                );
                let opts = EncodeOptions::new(Some(version)).with_content_length(true);
                match MessageTail::encode(
                    headers.iter().map(|(n, v)| (*n, v.as_str())),
                    &stored.body,
                    opts,
                ) {
                    Ok(t) => tails[slot] = Some(t),
                    Err(_) => continue,
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
            let acked = queue.is_some() && ack_mode != AckMode::Auto;
            out.push(Action::Send {
                to: session,
                frame: OutFrame {
                    head,
                    tail: Some(tail.bytes().clone()),
                    utf8,
                    bounded: !acked,
                },
            });
            if let (Some(queue), AckMode::Client | AckMode::ClientIndividual) = (queue, ack_mode) {
                self.subs[key].pending.push(Pending {
                    message_id: message_id.clone(),
                    ack_id,
                    queue: queue.to_owned(),
                    message: stored.clone(),
                    upstream: None,
                });
            }
        }
    }

    fn subscribe(
        &mut self,
        session: SessionId,
        frame: &Frame<'_>,
        out: &mut Vec<Action>,
    ) -> Result<(), Refusal> {
        let requested = frame
            .header("destination")
            .ok_or_else(|| refuse("SUBSCRIBE without destination"))?;
        let state = self
            .sessions
            .get(&session)
            .ok_or_else(|| refuse("not connected"))?;
        let version = state.version.unwrap_or(Version::V1_2);
        let id = match frame.header("id") {
            Some(id) => id.to_owned(),
            None if version == Version::V1_0 => requested.to_owned(),
            None => return Err(refuse("SUBSCRIBE without id")),
        };
        if state.subscriptions.iter().any(|&k| self.subs[k].id == id) {
            return Err(refuse(format!("duplicate subscription id {id}")));
        }
        if state.subscriptions.len() >= self.config.max_subscriptions {
            return Err(refuse(format!(
                "more than {} subscriptions",
                self.config.max_subscriptions
            )));
        }
        let ack = match frame.header("ack").unwrap_or("auto") {
            "auto" => AckMode::Auto,
            "client" => AckMode::Client,
            "client-individual" => AckMode::ClientIndividual,
            other => return Err(refuse(format!("invalid ack mode {other}"))),
        };
        let stars = requested.split(['/', '.']).filter(|s| *s == "**").count();
        if stars > 2 || requested.split(['/', '.']).count() > 32 || requested.len() > 1024 {
            return Err(refuse(format!(
                "destination pattern too complex: {requested}"
            )));
        }
        let (target, is_user, kind) = match self.config.prefixes.kind(requested) {
            Some(Kind::User) => {
                let inner = self
                    .config
                    .prefixes
                    .strip_user(requested)
                    .ok_or_else(|| refuse(format!("invalid user destination {requested}")))?;
                if self.config.prefixes.kind(inner).is_none() {
                    // `/user/{name}/...`: a destination to SEND to, never to read from.
                    return Err(refuse(format!(
                        "cannot subscribe to {requested} (another user's destinations are \
                         theirs; subscribe to {}/queue/... for your own)",
                        self.config.prefixes.user
                    )));
                }
                (
                    inner.to_owned(),
                    true,
                    self.config.prefixes.kind(inner).unwrap_or(Kind::Queue),
                )
            }
            Some(Kind::App) => {
                return Err(refuse(format!(
                    "cannot subscribe to application destination {requested}"
                )))
            }
            Some(kind) => (requested.to_owned(), false, kind),
            None => return Err(refuse(format!("unknown destination {requested}"))),
        };
        if !state.trusted {
            self.config
                .permissions
                .check(state.user.as_deref(), Verb::Subscribe, requested)
                .map_err(|denied| refuse(denied.to_string()))?;
        }
        let user = state.user.clone();
        let key = self.subs.insert(Subscription {
            session,
            id: id.clone(),
            requested: requested.to_owned(),
            target: target.clone(),
            user: user.clone(),
            is_user,
            ack,
            pending: Vec::new(),
            relayed: false,
        });
        if destination::is_pattern(&target) {
            self.patterns.push(key);
        } else {
            self.exact.entry(target.clone()).or_default().push(key);
        }
        if let Some(s) = self.sessions.get_mut(&session) {
            s.subscriptions.push(key);
        }
        out.push(Action::Event(BrokerEvent::Subscribed {
            session,
            user,
            destination: requested.to_owned(),
            id,
        }));
        if self.config.relay.is_some() {
            self.relay_subscribe(key, kind, frame, out);
        } else if kind == Kind::Queue && !is_user {
            self.drain_held(out);
        }
        Ok(())
    }

    /// Gives held queue messages to subscribers that can take them.
    fn drain_held(&mut self, out: &mut Vec<Action>) {
        let queues: Vec<String> = self.held.keys().cloned().collect();
        for queue in queues {
            loop {
                let targets = self.matching(&queue, Kind::Queue);
                let Some(k) = self.pick_queue_subscriber(&queue, &targets, None) else {
                    break;
                };
                let Some(stored) = self.held.get_mut(&queue).and_then(VecDeque::pop_front) else {
                    break;
                };
                self.fan_out(&[k], &stored, Some(&queue), out);
            }
            if self.held.get(&queue).is_some_and(VecDeque::is_empty) {
                self.held.remove(&queue);
            }
        }
    }

    fn unsubscribe(
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
    fn remove_subscription(&mut self, key: usize, out: &mut Vec<Action>) {
        for pending in self.detach_subscription(key, out) {
            self.redeliver(pending, None, out);
        }
    }

    /// Takes a subscription out of every index and returns its unacknowledged messages (for
    /// the caller to redeliver once everything that must go is gone).
    fn detach_subscription(&mut self, key: usize, out: &mut Vec<Action>) -> Vec<Pending> {
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
            return Vec::new();
        }
        sub.pending
    }

    /// Gives a message back to its queue: another subscriber if there is one, else held.
    fn redeliver(&mut self, pending: Pending, exclude: Option<usize>, out: &mut Vec<Action>) {
        let targets = self.matching(&pending.queue, Kind::Queue);
        let mut message = pending.message;
        if !message.headers.iter().any(|(n, _)| n == "redelivered") {
            message.headers.push(("redelivered".into(), "true".into()));
        }
        match self
            .pick_queue_subscriber(&pending.queue, &targets, exclude)
            .or_else(|| {
                // Nobody else: the same subscriber may take it again (as a requeue would).
                exclude.filter(|k| self.subs.contains(*k))
            }) {
            Some(k) => self.fan_out(&[k], &message, Some(&pending.queue), out),
            None => self.hold(pending.queue, message),
        }
    }

    fn ack(
        &mut self,
        session: SessionId,
        frame: &Frame<'_>,
        out: &mut Vec<Action>,
    ) -> Result<(), Refusal> {
        let nack = frame.command == Command::Nack;
        let version = self.version(session).unwrap_or(Version::V1_2);
        let id = match version {
            Version::V1_2 => frame.header("id"),
            _ => frame.header("message-id"),
        }
        .ok_or_else(|| {
            refuse(format!(
                "{} without {}",
                frame.command,
                if version == Version::V1_2 {
                    "id"
                } else {
                    "message-id"
                }
            ))
        })?
        .to_owned();
        if self.config.relay.is_some()
            && self.relay_ack(session, &id, nack, frame.header("transaction"), out)?
        {
            return Ok(());
        }
        if let Some(tx) = frame.header("transaction") {
            let limit = self.config.max_transaction_frames;
            let ops = self.transaction(session, tx)?;
            if ops.len() >= limit {
                return Err(refuse(format!(
                    "transaction {tx} has more than {limit} frames"
                )));
            }
            ops.push(TxOp::Ack { id, nack });
            return Ok(());
        }
        self.apply_ack(session, &id, nack, out);
        Ok(())
    }

    /// Settles pending messages. Unknown ids are ignored (the message may have been
    /// settled already, or was a topic message, which is never tracked).
    fn apply_ack(&mut self, session: SessionId, id: &str, nack: bool, out: &mut Vec<Action>) {
        let Some(state) = self.sessions.get(&session) else {
            return;
        };
        let found = state.subscriptions.iter().copied().find_map(|k| {
            self.subs[k]
                .pending
                .iter()
                .position(|p| p.ack_id == id || p.message_id == id)
                .map(|i| (k, i))
        });
        let Some((key, index)) = found else { return };
        let settled: Vec<Pending> = match self.subs[key].ack {
            AckMode::Client => self.subs[key].pending.drain(..=index).collect(),
            _ => vec![self.subs[key].pending.remove(index)],
        };
        if nack {
            for pending in settled {
                self.redeliver(pending, Some(key), out);
            }
        } else {
            // Room freed: held messages may flow again.
            self.drain_held(out);
        }
    }

    fn begin(&mut self, session: SessionId, frame: &Frame<'_>) -> Result<(), Refusal> {
        let tx = frame
            .header("transaction")
            .ok_or_else(|| refuse("BEGIN without transaction"))?;
        let limit = self.config.max_transactions;
        let state = self
            .sessions
            .get_mut(&session)
            .ok_or_else(|| refuse("not connected"))?;
        if state.transactions.contains_key(tx) {
            return Err(refuse(format!("transaction {tx} already started")));
        }
        if state.transactions.len() >= limit {
            return Err(refuse(format!("more than {limit} open transactions")));
        }
        state.transactions.insert(tx.to_owned(), Vec::new());
        Ok(())
    }

    fn take_transaction(
        &mut self,
        session: SessionId,
        frame: &Frame<'_>,
    ) -> Result<Vec<TxOp>, Refusal> {
        let tx = frame
            .header("transaction")
            .ok_or_else(|| refuse(format!("{} without transaction", frame.command)))?;
        self.sessions
            .get_mut(&session)
            .and_then(|s| s.transactions.remove(tx))
            .ok_or_else(|| refuse(format!("unknown transaction {tx}")))
    }

    fn commit(
        &mut self,
        session: SessionId,
        frame: &Frame<'_>,
        out: &mut Vec<Action>,
    ) -> Result<(), Refusal> {
        for op in self.take_transaction(session, frame)? {
            match op {
                TxOp::Send(stored, destination) => {
                    let kind = self
                        .config
                        .prefixes
                        .kind(&destination)
                        .unwrap_or(Kind::Topic);
                    self.deliver_send(session, kind, stored, out);
                }
                TxOp::Ack { id, nack } => self.apply_ack(session, &id, nack, out),
            }
        }
        Ok(())
    }

    fn abort(&mut self, session: SessionId, frame: &Frame<'_>) -> Result<(), Refusal> {
        self.take_transaction(session, frame).map(drop)
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
        let mut pending = Vec::new();
        for key in state.subscriptions.clone() {
            pending.extend(self.detach_subscription(key, out));
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
                attributes: state.attributes,
            }));
        }
        for p in pending {
            self.redeliver(p, None, out);
        }
        if self.config.relay.is_some() {
            out.push(Action::Relay(RelayOp::Closed { session }));
        }
    }
}

fn join_versions(versions: &[Version]) -> String {
    versions
        .iter()
        .map(|v| v.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Header values the encoder could not escape in this version lose the offending characters
/// (1.0 has no escapes at all).
fn sanitize(value: &str, version: Option<Version>) -> String {
    match version {
        Some(Version::V1_2) => value.to_owned(),
        Some(Version::V1_1) => value.replace('\r', ""),
        _ => value.replace(['\r', '\n'], " "),
    }
}

#[cfg(test)]
mod tests;
