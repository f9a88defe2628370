//! Clients driven by an event loop: one thread, one mio poll, thousands of connections (the
//! load generator runs on this).
//!
//! The message API is the server's: messages arrive as a [`Message`] borrowed from the loop's
//! read buffer, and callbacks get a [`ClientConn`] whose `send` takes a [`Message`] (so an
//! echo is `conn.send(message)`) and answers with a [`SendStatus`].
//!
//! ```text
//!  connect() ──▶ Connecting ──TCP up──▶ Handshake ──101 checked──▶ Open ──closes + EOF──▶ gone
//!  (non-blocking,    │                      │                        │     on_close (after
//!   optional source  └─refused / timeout────┴─bad answer / timeout   │     on_error if it
//!   address)            on_error only, no on_open / on_close         └──▶  ended badly)
//! ```
//!
//! A loop turn ([`EventLoop::turn`]): write what was sent between turns, poll, read each ready
//! connection into the loop's one read buffer and run the sans-IO core over it (`on_open`,
//! `on_message`, `on_pong` fire here), call `on_tick` when due, expire deadlines (handshake,
//! close), then flush every connection that has something to send. Sends are corked: whatever
//! a connection sends during a turn goes out once, in one vectored write after what its socket
//! refused earlier (see [`output`]).
//!
//! Readiness: mio is edge-triggered, so a ready socket is read until `WouldBlock`, at most
//! [`READS_PER_TURN`] times per turn (then it is served again next turn, so a fast stream
//! cannot starve the others). On Linux a read that fills less than the room it was given also
//! ends the reading: epoll signals again for any byte that arrives after it, and the
//! `WouldBlock` read it saves is a third of the system calls of a small echo. When the event
//! says the peer hung up, the socket is read to the end regardless.
//!
//! The client waits for the server to close TCP after the close handshake (RFC 6455 §7.1.1),
//! up to [`LoopConfig::close_timeout`].

use std::fmt;
use std::io::{self, Read as _};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Registry, Token};
use slab::Slab;
use socket2::{Domain, Protocol, Socket, Type};

use super::{io_error, os_random, ClientConfig, ClientError, WsUrl};
use crate::close::code;
use crate::connection::{Connection, DataKind, Event, Failure, MaskKeys, Read, Sender};
use crate::error::{ProtocolError, SendError};
use crate::handshake::client::{make_key, parse_response, write_request, RequestParts};
use crate::server::timers::{Deadlines, Tag};
use crate::server::{Message, SendStatus};
use crate::Status;

mod output;
#[cfg(test)]
mod tests;

use output::Output;

/// Reads of one connection per loop turn before the others get their go.
pub const READS_PER_TURN: usize = 16;

/// Whether a read that leaves room in the buffer proves the socket drained (see module docs).
const SHORT_READ_DRAINS: bool = cfg!(target_os = "linux");

/// Names a connection of one loop: its slot and the slot's generation, so an id kept after
/// the connection ended never reaches a later one in the same slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientId {
    key: usize,
    gen: u32,
}

impl ClientId {
    fn tag(self) -> Tag {
        Tag {
            key: self.key,
            gen: self.gen,
        }
    }

    fn from_tag(tag: Tag) -> Self {
        ClientId {
            key: tag.key,
            gen: tag.gen,
        }
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.key, self.gen)
    }
}

/// Where to connect: the server's address, what goes into the request line and `Host`, and the
/// local address to connect from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    /// The `Host` header.
    pub host: String,
    /// Path and query, starting with `/`.
    pub path: String,
    /// Source address (port chosen by the kernel); `None` lets the kernel pick. Binding
    /// loopback clients to many addresses of 127.0.0.0/8 gives each its own range of ports.
    pub local: Option<IpAddr>,
}

impl Target {
    /// `addr`, path `/`, no source address.
    pub fn new(addr: SocketAddr) -> Self {
        Target {
            addr,
            host: addr.to_string(),
            path: "/".into(),
            local: None,
        }
    }

    /// A `ws://` URL, resolved now (a blocking look-up; the first address is taken).
    pub fn from_url(url: &str) -> Result<Self, ClientError> {
        let url = WsUrl::parse(url).map_err(ClientError::Url)?;
        let addr = (url.host.as_str(), url.port)
            .to_socket_addrs()
            .map_err(ClientError::Io)?
            .next()
            .ok_or(ClientError::Io(io::ErrorKind::NotFound.into()))?;
        Ok(Target {
            addr,
            host: url.host_header(),
            path: url.target,
            local: None,
        })
    }

    /// The same target, connected to from `local`.
    pub fn from_local(&self, local: IpAddr) -> Self {
        Target {
            local: Some(local),
            ..self.clone()
        }
    }
}

/// Settings of a client event loop, each default with its reason.
#[derive(Clone, Debug)]
pub struct LoopConfig {
    /// Limits, offered sub-protocols, extra headers, `handshake_timeout` (which bounds connect
    /// and handshake together) and the largest response head, as for the blocking client.
    pub client: ClientConfig,
    /// Time allowed, once our close is out (or the server's arrived), for the close handshake
    /// to finish and the server to close TCP. Default 5 s, the server's own default.
    pub close_timeout: Duration,
    /// Size of the loop's one read buffer. Default 256 KiB, as the server: large messages
    /// arrive in few reads, and it is one buffer per loop, not per connection.
    pub read_buffer_size: usize,
    /// Most bytes one connection may hold unsent; a send beyond it is dropped
    /// ([`SendStatus::Dropped`]), except when nothing is waiting. Default 16 MiB: a load
    /// generator keeping 16 messages of 1 MiB in flight never hits it, and a server that stops
    /// reading costs the client no more.
    pub max_backpressure: usize,
    /// Interval of [`ClientHandler::on_tick`], `None` for none. Default `None`.
    pub tick: Option<Duration>,
}

impl Default for LoopConfig {
    fn default() -> Self {
        LoopConfig {
            client: ClientConfig::default(),
            close_timeout: Duration::from_secs(5),
            read_buffer_size: 256 << 10,
            max_backpressure: 16 << 20,
            tick: None,
        }
    }
}

/// The callbacks of a client loop. For each connection, in order: `on_open`, any number of
/// `on_message` and `on_pong`, then exactly one `on_close` (after `on_error` when it ended
/// badly). A connection that never opened gets `on_error` alone.
pub trait ClientHandler {
    /// Per-connection data, given to [`EventLoop::connect`].
    type Data;

    /// The handshake succeeded; sends made here go out this turn.
    fn on_open(&mut self, _conn: &mut ClientConn<'_, Self::Data>) {}

    fn on_message(&mut self, conn: &mut ClientConn<'_, Self::Data>, message: Message<'_>);

    /// A pong arrived (pings from the server are answered automatically).
    fn on_pong(&mut self, _conn: &mut ClientConn<'_, Self::Data>, _payload: &[u8]) {}

    /// The connection failed: connecting, the handshake, the protocol, the socket, a deadline.
    fn on_error(&mut self, _id: ClientId, _data: &mut Self::Data, _error: &ClientError) {}

    /// An open connection is over: `code` is the server's close code (1005 if its close had
    /// none), the one we sent when we failed the connection, or 1006 when TCP dropped first.
    fn on_close(&mut self, _id: ClientId, _data: &mut Self::Data, _code: u16, _reason: &str) {}

    /// Called every [`LoopConfig::tick`]: the hook for timers, pacing and stopping.
    fn on_tick(&mut self, _lp: &mut Control<'_, Self::Data>) {}
}

/// An open connection as a callback (or the owner of the loop, between turns) sees it.
pub struct ClientConn<'a, D> {
    id: ClientId,
    tx: &'a mut Sender,
    out: &'a mut Output,
    data: &'a mut D,
    protocol: Option<&'a str>,
    max_backpressure: usize,
}

impl<D> fmt::Debug for ClientConn<'_, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConn").field("id", &self.id).finish()
    }
}

impl<D> ClientConn<'_, D> {
    pub fn id(&self) -> ClientId {
        self.id
    }

    pub fn data(&self) -> &D {
        self.data
    }

    pub fn data_mut(&mut self) -> &mut D {
        self.data
    }

    /// The sub-protocol the server chose.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol
    }

    /// Bytes sent that the socket has not taken yet (corked this turn plus queued).
    pub fn buffered_amount(&self) -> usize {
        self.out.len()
    }

    /// Sends a message (masked with a fresh key); see [`SendStatus`]. `Written` means corked
    /// with nothing queued before it: it goes out at the end of this turn. (The server's
    /// shared payloads have no client counterpart: every client frame is masked with its own
    /// key, so each is a copy anyway.)
    pub fn send(&mut self, message: Message<'_>) -> Result<SendStatus, SendError> {
        match message {
            Message::Text(text) => self.send_data(DataKind::Text, text.as_bytes()),
            Message::Binary(bytes) => self.send_data(DataKind::Binary, bytes),
        }
    }

    fn send_data(&mut self, kind: DataKind, payload: &[u8]) -> Result<SendStatus, SendError> {
        self.tx.check_data()?;
        let waiting = self.out.len();
        if waiting > 0 && waiting + payload.len() > self.max_backpressure {
            return Ok(SendStatus::Dropped);
        }
        self.tx.send(kind, payload, self.out)?;
        Ok(if self.out.queued() == 0 {
            SendStatus::Written
        } else {
            SendStatus::Queued
        })
    }

    /// Sends a text message. `Ok` when written, queued or dropped: use [`ClientConn::send`] to
    /// tell which.
    pub fn send_text(&mut self, text: &str) -> Result<(), SendError> {
        self.send(Message::Text(text)).map(drop)
    }

    /// Sends a binary message; see [`ClientConn::send_text`].
    pub fn send_binary(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        self.send(Message::Binary(bytes)).map(drop)
    }

    /// Sends one fragment of a message (`fin` on the last); not subject to the cap.
    pub fn send_fragment(
        &mut self,
        kind: DataKind,
        payload: &[u8],
        fin: bool,
    ) -> Result<(), SendError> {
        self.tx.send_fragment(kind, payload, fin, self.out)
    }

    pub fn ping(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.tx.ping(payload, self.out)
    }

    /// Starts the close handshake; `on_close` follows when the server has answered and closed
    /// TCP (or at the close deadline).
    pub fn close(&mut self, code: u16, reason: &str) -> Result<(), SendError> {
        self.tx.close(code, reason, self.out)
    }

    pub fn is_closing(&self) -> bool {
        self.tx.is_close_sent()
    }
}

/// An open connection's protocol state.
#[derive(Debug)]
struct Open {
    conn: Connection,
    /// Unconsumed bytes of an incomplete frame header or control frame (at most 139).
    stash: Vec<u8>,
    protocol: Option<Box<str>>,
    /// What `on_close` reports, once known: the server's close, or ours when we failed.
    close: Option<(u16, Box<str>)>,
    /// The server broke the protocol (our close with its code is out).
    failure: Option<ProtocolError>,
    close_armed: bool,
}

// Most slots are `Open`; boxing it would add an allocation each without saving memory.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Phase {
    /// The non-blocking connect is under way; the request waits in the cork.
    Connecting {
        key: [u8; 24],
    },
    /// The request is (being) written; the response head is gathered in `head`.
    Handshake {
        key: [u8; 24],
        head: Vec<u8>,
    },
    Open(Open),
}

#[derive(Debug)]
struct Slot<D> {
    stream: TcpStream,
    gen: u32,
    phase: Phase,
    out: Output,
    /// Listed in `Core::dirty` for this turn's flush.
    dirty: bool,
    data: D,
}

/// What to do with a connection after serving it.
enum Next {
    Keep,
    /// Over without error (close handshake done and TCP closed).
    Done,
    Fail(ClientError),
}

/// How an event found a socket.
#[derive(Clone, Copy)]
struct Ready {
    readable: bool,
    /// The peer hung up or the socket failed: read to the end.
    hup: bool,
}

/// The loop's state apart from the poll: what callbacks may act on through [`Control`].
#[derive(Debug)]
struct Core<D> {
    registry: Registry,
    slots: Slab<Slot<D>>,
    /// Connections to flush at the end of the turn.
    dirty: Vec<ClientId>,
    /// Connections cut off at `READS_PER_TURN`, to be read again next turn.
    pending: Vec<ClientId>,
    buf: Box<[u8]>,
    config: LoopConfig,
    handshakes: Deadlines,
    closes: Deadlines,
    next_gen: u32,
    now: Instant,
    next_tick: Option<Instant>,
    stopped: bool,
    request: Vec<u8>,
}

/// What `on_tick` may do with the loop: connect, reach connections, stop.
pub struct Control<'a, D> {
    core: &'a mut Core<D>,
}

impl<D> fmt::Debug for Control<'_, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Control")
            .field("connections", &self.core.slots.len())
            .finish()
    }
}

impl<D> Control<'_, D> {
    /// When the current turn started.
    pub fn now(&self) -> Instant {
        self.core.now
    }

    /// See [`EventLoop::connect`].
    pub fn connect(&mut self, target: &Target, data: D) -> io::Result<ClientId> {
        self.core.connect(target, data)
    }

    /// See [`EventLoop::conn`].
    pub fn conn(&mut self, id: ClientId) -> Option<ClientConn<'_, D>> {
        self.core.conn(id)
    }

    /// See [`EventLoop::each_open`].
    pub fn each_open(&mut self, f: impl FnMut(&mut ClientConn<'_, D>)) {
        self.core.each_open(f)
    }

    /// Connections in any phase.
    pub fn len(&self) -> usize {
        self.core.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.core.slots.is_empty()
    }

    /// Makes the current [`EventLoop::run`] return after this turn.
    pub fn stop(&mut self) {
        self.core.stopped = true;
    }
}

/// A single-threaded loop owning many client connections.
pub struct EventLoop<D> {
    poll: Poll,
    events: Events,
    core: Core<D>,
}

impl<D> fmt::Debug for EventLoop<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventLoop")
            .field("connections", &self.core.slots.len())
            .finish()
    }
}

impl<D> EventLoop<D> {
    pub fn new(config: LoopConfig) -> io::Result<Self> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let now = Instant::now();
        Ok(EventLoop {
            poll,
            events: Events::with_capacity(1024),
            core: Core {
                registry,
                slots: Slab::new(),
                dirty: Vec::new(),
                pending: Vec::new(),
                buf: vec![0; config.read_buffer_size.max(4096)].into_boxed_slice(),
                handshakes: Deadlines::new(config.client.handshake_timeout),
                closes: Deadlines::new(config.close_timeout),
                next_gen: 0,
                now,
                next_tick: config.tick.map(|t| now + t),
                stopped: false,
                request: Vec::new(),
                config,
            },
        })
    }

    /// Starts connecting to `target` (non-blocking; the socket is bound to `target.local`
    /// first when given). Errors here are immediate ones (no file descriptors, source address
    /// unusable); a refusal or timeout comes later, through `on_error`.
    pub fn connect(&mut self, target: &Target, data: D) -> io::Result<ClientId> {
        self.core.connect(target, data)
    }

    /// An open connection, to send from outside callbacks (written at the next turn).
    pub fn conn(&mut self, id: ClientId) -> Option<ClientConn<'_, D>> {
        self.core.conn(id)
    }

    /// Calls `f` on every open connection (to close them all, say).
    pub fn each_open(&mut self, f: impl FnMut(&mut ClientConn<'_, D>)) {
        self.core.each_open(f)
    }

    /// Connections in any phase.
    pub fn len(&self) -> usize {
        self.core.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.core.slots.is_empty()
    }

    /// One turn (see the module docs), waiting at most `timeout` for readiness.
    pub fn turn<H>(&mut self, handler: &mut H, timeout: Option<Duration>) -> io::Result<()>
    where
        H: ClientHandler<Data = D>,
    {
        self.core.flush_dirty(handler);
        let timeout = self.core.timeout(timeout);
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        self.core.now = Instant::now();
        for event in self.events.iter() {
            let hup = event.is_read_closed() || event.is_error();
            let ready = Ready {
                readable: event.is_readable() || hup,
                hup,
            };
            self.core.serve(handler, event.token().0, ready);
        }
        for id in std::mem::take(&mut self.core.pending) {
            if self.core.get(id).is_some() {
                let ready = Ready {
                    readable: true,
                    hup: false,
                };
                self.core.serve(handler, id.key, ready);
            }
        }
        self.core.tick(handler);
        self.core.expire(handler);
        self.core.flush_dirty(handler);
        Ok(())
    }

    /// Runs turns until [`Control::stop`] is called, or until no connection is left when no
    /// tick is configured (with a tick, `on_tick` may still connect).
    pub fn run<H: ClientHandler<Data = D>>(&mut self, handler: &mut H) -> io::Result<()> {
        self.run_while(handler, None)
    }

    /// [`EventLoop::run`], returning at `deadline` at the latest.
    pub fn run_until<H>(&mut self, handler: &mut H, deadline: Instant) -> io::Result<()>
    where
        H: ClientHandler<Data = D>,
    {
        self.run_while(handler, Some(deadline))
    }

    fn run_while<H>(&mut self, handler: &mut H, deadline: Option<Instant>) -> io::Result<()>
    where
        H: ClientHandler<Data = D>,
    {
        let result = loop {
            if self.core.stopped || (self.core.slots.is_empty() && self.core.config.tick.is_none())
            {
                break Ok(());
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                break Ok(());
            }
            if let Err(e) = self.turn(handler, left) {
                break Err(e);
            }
        };
        // Flush what the last callbacks sent, so it is not held until the next run.
        self.core.flush_dirty(handler);
        self.core.stopped = false;
        result
    }
}

/// Was this `connect` error the normal "in progress" of a non-blocking socket?
fn in_progress(e: &io::Error) -> bool {
    /// EINPROGRESS on Linux (`io::ErrorKind::InProgress` is not stable yet).
    #[cfg(target_os = "linux")]
    const EINPROGRESS: i32 = 115;
    #[cfg(not(target_os = "linux"))]
    const EINPROGRESS: i32 = 36;
    e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(EINPROGRESS)
}

impl<D> Core<D> {
    fn get(&self, id: ClientId) -> Option<&Slot<D>> {
        self.slots.get(id.key).filter(|s| s.gen == id.gen)
    }

    fn id(&self, key: usize) -> Option<ClientId> {
        self.slots.get(key).map(|s| ClientId { key, gen: s.gen })
    }

    fn connect(&mut self, target: &Target, data: D) -> io::Result<ClientId> {
        let socket = Socket::new(
            Domain::for_address(target.addr),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        socket.set_nonblocking(true)?;
        socket.set_nodelay(true)?;
        if let Some(local) = target.local {
            socket.bind(&SocketAddr::new(local, 0).into())?;
        }
        match socket.connect(&target.addr.into()) {
            Ok(()) => {}
            Err(e) if in_progress(&e) => {}
            Err(e) => return Err(e),
        }
        let mut stream = TcpStream::from_std(socket.into());
        let entry = self.slots.vacant_entry();
        let key = entry.key();
        self.registry.register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.next_gen = self.next_gen.wrapping_add(1);
        let id = ClientId {
            key,
            gen: self.next_gen,
        };
        let mut nonce = [0u8; 16];
        os_random(&mut nonce);
        let ws_key = make_key(nonce);
        let client = &self.config.client;
        let parts = RequestParts {
            host: &target.host,
            target: &target.path,
            origin: client.origin.as_deref(),
            protocols: &client.protocols,
            headers: &client.headers,
        };
        self.request.clear();
        write_request(&mut self.request, &parts, &ws_key);
        let mut out = Output::default();
        out.extend(&self.request);
        entry.insert(Slot {
            stream,
            gen: id.gen,
            phase: Phase::Connecting { key: ws_key },
            out,
            dirty: false,
            data,
        });
        self.handshakes.arm(Instant::now(), id.tag());
        Ok(id)
    }

    /// Lists the slot for this turn's flush.
    fn mark(dirty: &mut Vec<ClientId>, slot: &mut Slot<D>, id: ClientId) {
        if !slot.dirty {
            slot.dirty = true;
            dirty.push(id);
        }
    }

    fn conn(&mut self, id: ClientId) -> Option<ClientConn<'_, D>> {
        let slot = self.slots.get_mut(id.key).filter(|s| s.gen == id.gen)?;
        if !matches!(slot.phase, Phase::Open(_)) {
            return None;
        }
        Self::mark(&mut self.dirty, slot, id);
        let max_backpressure = self.config.max_backpressure;
        let Slot {
            phase: Phase::Open(open),
            out,
            data,
            ..
        } = slot
        else {
            return None;
        };
        Some(ClientConn {
            id,
            tx: &mut open.conn.tx,
            out,
            data,
            protocol: open.protocol.as_deref(),
            max_backpressure,
        })
    }

    fn each_open(&mut self, mut f: impl FnMut(&mut ClientConn<'_, D>)) {
        let max_backpressure = self.config.max_backpressure;
        for (key, slot) in self.slots.iter_mut() {
            let id = ClientId { key, gen: slot.gen };
            if !matches!(slot.phase, Phase::Open(_)) {
                continue;
            }
            Self::mark(&mut self.dirty, slot, id);
            let Slot {
                phase: Phase::Open(open),
                out,
                data,
                ..
            } = slot
            else {
                continue;
            };
            f(&mut ClientConn {
                id,
                tx: &mut open.conn.tx,
                out,
                data,
                protocol: open.protocol.as_deref(),
                max_backpressure,
            });
        }
    }

    fn timeout(&self, limit: Option<Duration>) -> Option<Duration> {
        if !self.pending.is_empty() {
            return Some(Duration::ZERO);
        }
        let next = [self.handshakes.next(), self.closes.next(), self.next_tick]
            .into_iter()
            .flatten()
            .min()
            .map(|at| at.saturating_duration_since(Instant::now()));
        match (next, limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn serve<H: ClientHandler<Data = D>>(&mut self, handler: &mut H, key: usize, ready: Ready) {
        let Some(id) = self.id(key) else {
            return;
        };
        let next = match self.slots[key].phase {
            Phase::Connecting { .. } => self.connected(handler, id, ready),
            Phase::Handshake { .. } if ready.readable => self.read_handshake(handler, id, ready),
            Phase::Handshake { .. } => Next::Keep,
            Phase::Open(_) => {
                let slot = &mut self.slots[key];
                if slot.out.queued() > 0 {
                    // Possibly writable again: try the backlog at the end of the turn.
                    Self::mark(&mut self.dirty, slot, id);
                }
                if ready.readable {
                    self.read_open(handler, id, ready)
                } else {
                    Next::Keep
                }
            }
        };
        self.settle(handler, id, next);
    }

    fn settle<H: ClientHandler<Data = D>>(&mut self, handler: &mut H, id: ClientId, next: Next) {
        match next {
            Next::Keep => {}
            Next::Done => self.end(handler, id, None),
            Next::Fail(error) => self.end(handler, id, Some(error)),
        }
    }

    /// A connecting socket got an event: find out whether the connect succeeded (mio's rule:
    /// `take_error`, then `peer_addr`; `NotConnected` means the event was spurious).
    fn connected<H: ClientHandler<Data = D>>(
        &mut self,
        handler: &mut H,
        id: ClientId,
        ready: Ready,
    ) -> Next {
        let slot = &mut self.slots[id.key];
        match slot.stream.take_error() {
            Ok(None) => {}
            Ok(Some(e)) | Err(e) => return Next::Fail(io_error(e)),
        }
        match slot.stream.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Next::Keep,
            Err(e) => return Next::Fail(io_error(e)),
        }
        let Phase::Connecting { key } = slot.phase else {
            return Next::Keep;
        };
        slot.phase = Phase::Handshake {
            key,
            head: Vec::new(),
        };
        Self::mark(&mut self.dirty, slot, id);
        if ready.readable {
            return self.read_handshake(handler, id, ready);
        }
        Next::Keep
    }

    /// Gathers the response head; on a valid 101 the connection opens.
    fn read_handshake<H: ClientHandler<Data = D>>(
        &mut self,
        handler: &mut H,
        id: ClientId,
        ready: Ready,
    ) -> Next {
        let max_head = self.config.client.max_head_size;
        let slot = &mut self.slots[id.key];
        let Phase::Handshake { key, head } = &mut slot.phase else {
            return Next::Keep;
        };
        let mut drained = false;
        let mut eof = false;
        while head.len() < max_head {
            match slot.stream.read(&mut self.buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    head.extend_from_slice(&self.buf[..n]);
                    if SHORT_READ_DRAINS && !ready.hup && n < self.buf.len() {
                        drained = true;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Next::Fail(io_error(e)),
            }
        }
        let protocols = &self.config.client.protocols;
        let (accepted, n) = match parse_response(head, key, protocols, max_head) {
            Ok(Status::Complete(accepted, n)) => (accepted, n),
            Ok(Status::Partial) if eof => return Next::Fail(ClientError::Dropped),
            Ok(Status::Partial) => return Next::Keep,
            Err(e) => return Next::Fail(ClientError::Handshake(e)),
        };
        let stash = head[n..].to_vec();
        let conn = Connection::client(self.config.client.limits.clone(), MaskKeys::new(os_random));
        slot.phase = Phase::Open(Open {
            conn,
            stash: Vec::new(),
            protocol: accepted.protocol.map(String::into_boxed_str),
            close: None,
            failure: None,
            close_armed: false,
        });
        Self::mark(&mut self.dirty, slot, id);
        let max_backpressure = self.config.max_backpressure;
        let Slot {
            phase: Phase::Open(open),
            out,
            data,
            ..
        } = slot
        else {
            unreachable!("just opened")
        };
        handler.on_open(&mut ClientConn {
            id,
            tx: &mut open.conn.tx,
            out,
            data,
            protocol: open.protocol.as_deref(),
            max_backpressure,
        });
        if !stash.is_empty() {
            // Frames that came with the head.
            let mut early = stash;
            dispatch(handler, id, open, out, data, &mut early, max_backpressure);
        }
        match (eof, drained) {
            // The server hung up right after its answer (and whatever frames came with it).
            (true, _) if open.conn.rx.is_closed() || open.failure.is_some() => Next::Done,
            (true, _) => Next::Fail(ClientError::Dropped),
            (false, true) => Next::Keep,
            (false, false) => self.read_open(handler, id, ready),
        }
    }

    /// Reads an open connection and runs the core over what arrived.
    fn read_open<H: ClientHandler<Data = D>>(
        &mut self,
        handler: &mut H,
        id: ClientId,
        ready: Ready,
    ) -> Next {
        let max_backpressure = self.config.max_backpressure;
        let slot = &mut self.slots[id.key];
        Self::mark(&mut self.dirty, slot, id);
        let Slot {
            stream,
            phase: Phase::Open(open),
            out,
            data,
            ..
        } = slot
        else {
            return Next::Keep;
        };
        let mut reads = 0;
        loop {
            let carry = open.stash.len();
            let room = self.buf.len() - carry;
            match stream.read(&mut self.buf[carry..]) {
                Ok(0) if open.conn.rx.is_closed() || open.failure.is_some() => return Next::Done,
                Ok(0) => return Next::Fail(ClientError::Dropped),
                Ok(n) => {
                    self.buf[..carry].copy_from_slice(&open.stash);
                    open.stash.clear();
                    let data_len = carry + n;
                    let buf = &mut self.buf[..data_len];
                    dispatch(handler, id, open, out, data, buf, max_backpressure);
                    if SHORT_READ_DRAINS && !ready.hup && n < room {
                        return Next::Keep;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // After the server's close, a reset is just how some servers hang up.
                Err(_) if open.conn.rx.is_closed() => return Next::Done,
                Err(e) => return Next::Fail(io_error(e)),
            }
            reads += 1;
            if reads == READS_PER_TURN {
                self.pending.push(id);
                return Next::Keep;
            }
        }
    }

    fn tick<H: ClientHandler<Data = D>>(&mut self, handler: &mut H) {
        let (Some(every), Some(at)) = (self.config.tick, self.next_tick) else {
            return;
        };
        if self.now < at {
            return;
        }
        self.next_tick = Some(self.now + every);
        handler.on_tick(&mut Control { core: self });
    }

    fn expire<H: ClientHandler<Data = D>>(&mut self, handler: &mut H) {
        while let Some(tag) = self.handshakes.pop_expired(self.now) {
            let id = ClientId::from_tag(tag);
            let opening = self
                .get(id)
                .is_some_and(|s| !matches!(s.phase, Phase::Open(_)));
            if opening {
                self.end(handler, id, Some(ClientError::Timeout));
            }
        }
        while let Some(tag) = self.closes.pop_expired(self.now) {
            let id = ClientId::from_tag(tag);
            let Some(Phase::Open(open)) = self.get(id).map(|s| &s.phase) else {
                continue;
            };
            let next = if open.conn.is_closed() {
                // Both closes exchanged; the server just did not hang up in time.
                Next::Done
            } else {
                Next::Fail(ClientError::Timeout)
            };
            self.settle(handler, id, next);
        }
    }

    /// Writes what each listed connection has corked (after its backlog).
    fn flush_dirty<H: ClientHandler<Data = D>>(&mut self, handler: &mut H) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for id in dirty.drain(..) {
            let Some(slot) = self.slots.get_mut(id.key).filter(|s| s.gen == id.gen) else {
                continue;
            };
            slot.dirty = false;
            if matches!(slot.phase, Phase::Connecting { .. }) {
                continue;
            }
            let written = slot.out.flush(&mut slot.stream);
            let next = match (written, &mut slot.phase) {
                (Err(_), Phase::Open(open)) if open.conn.rx.is_closed() => Next::Done,
                (Err(e), _) => Next::Fail(io_error(e)),
                (Ok(()), Phase::Open(open)) => {
                    let closing = open.conn.tx.is_close_sent() || open.conn.rx.is_closed();
                    if closing && !open.close_armed {
                        open.close_armed = true;
                        self.closes.arm(self.now, id.tag());
                    }
                    Next::Keep
                }
                (Ok(()), _) => Next::Keep,
            };
            self.settle(handler, id, next);
        }
        // Keep the allocation; callbacks above do not list connections.
        dirty.append(&mut self.dirty);
        self.dirty = dirty;
    }

    /// Drops a connection and reports its end.
    fn end<H: ClientHandler<Data = D>>(
        &mut self,
        handler: &mut H,
        id: ClientId,
        error: Option<ClientError>,
    ) {
        if self.get(id).is_none() {
            return;
        }
        let Slot {
            phase, mut data, ..
        } = self.slots.remove(id.key);
        let Phase::Open(open) = phase else {
            if let Some(e) = &error {
                handler.on_error(id, &mut data, e);
            }
            return;
        };
        // A protocol failure is the cause of whatever ended the connection after it.
        let error = open.failure.map(ClientError::Protocol).or(error);
        if let Some(e) = &error {
            handler.on_error(id, &mut data, e);
        }
        let (code, reason) = open
            .close
            .unwrap_or_else(|| (code::ABNORMAL, Box::from("")));
        handler.on_close(id, &mut data, code, &reason);
    }
}

/// Runs the core over `buf`, calling the handler for each event; keeps the unconsumed tail.
fn dispatch<H: ClientHandler>(
    handler: &mut H,
    id: ClientId,
    open: &mut Open,
    out: &mut Output,
    data: &mut H::Data,
    buf: &mut [u8],
    max_backpressure: usize,
) {
    let Open {
        conn: Connection { rx, tx },
        stash,
        protocol,
        close,
        failure,
        ..
    } = open;
    let mut pos = 0;
    loop {
        match rx.read(&mut buf[pos..], tx, out) {
            Ok(Read { consumed, event }) => {
                pos += consumed;
                let Some(event) = event else {
                    if consumed == 0 {
                        break;
                    }
                    continue;
                };
                let mut conn = ClientConn {
                    id,
                    tx: &mut *tx,
                    out: &mut *out,
                    data: &mut *data,
                    protocol: protocol.as_deref(),
                    max_backpressure,
                };
                match event {
                    Event::Text(text) => handler.on_message(&mut conn, Message::Text(text)),
                    Event::Binary(bytes) => handler.on_message(&mut conn, Message::Binary(bytes)),
                    Event::Pong(payload) => handler.on_pong(&mut conn, payload),
                    Event::Ping(_) => {}
                    Event::Close(frame) => {
                        let (c, reason) =
                            frame.map_or((code::NO_STATUS, ""), |f| (f.code, f.reason));
                        close.get_or_insert_with(|| (c, reason.into()));
                    }
                }
            }
            Err(Failure { error, consumed }) => {
                pos += consumed;
                close.get_or_insert_with(|| (error.close_code(), error.to_string().into()));
                failure.get_or_insert(error);
            }
        }
    }
    stash.extend_from_slice(&buf[pos..]);
}
