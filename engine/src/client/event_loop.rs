//! Clients driven by an event loop: one thread, one mio poll, thousands of connections (the
//! load generator runs on this).
//!
//! The message API is the server's: messages arrive as a [`Message`] borrowed from the loop's
//! read buffer, and callbacks get a [`ClientConn`] whose `send` takes a [`Message`] (so an
//! echo is `conn.send(message)`) and answers with a
//! [`SendStatus`](crate::server::SendStatus).
//!
//! ```no_run
//! use sockeye::client::{ClientConn, ClientHandler, EventLoop, LoopConfig, Target};
//! use sockeye::server::Message;
//!
//! struct Hello;
//!
//! impl ClientHandler for Hello {
//!     type Data = ();
//!
//!     fn on_open(&mut self, conn: &mut ClientConn<'_, ()>) {
//!         let _ = conn.send_text("hello");
//!     }
//!
//!     fn on_message(&mut self, conn: &mut ClientConn<'_, ()>, message: Message<'_>) {
//!         println!("{message:?}");
//!         let _ = conn.close(1000, "bye");
//!     }
//! }
//!
//! let target = Target::from_url("ws://127.0.0.1:9001/")?;
//! let mut lp = EventLoop::new(LoopConfig::default())?;
//! for _ in 0..1000 {
//!     lp.connect(&target, ())?;
//! }
//! lp.run(&mut Hello)?; // returns once every connection has ended
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
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
//! refused earlier (see `output.rs`).
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
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token, Waker};

use super::{ClientConfig, ClientError, UrlError, WsUrl};
use crate::driver::{Message, Tag};

mod conn;
mod state;
#[cfg(test)]
mod tests;

pub use conn::ClientConn;
use state::{Core, Ready};

/// Reads of one connection per loop turn before the others get their go.
pub const READS_PER_TURN: usize = 16;

/// The poll token of the loop's waker: no connection's slot ever has it.
const WAKE: Token = Token(usize::MAX);

/// Ends a loop's wait from another thread (see [`EventLoop::waker`]). Cheap to clone.
#[derive(Clone)]
pub struct LoopWaker(Arc<Waker>);

impl fmt::Debug for LoopWaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LoopWaker")
    }
}

impl LoopWaker {
    /// Makes the loop's current poll return (or its next one, at once), so the thread
    /// running the loop gets to look at whatever was shared with it.
    pub fn wake(&self) -> io::Result<()> {
        self.0.wake()
    }
}

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
    /// `wss://`: TLS (feature `tls`), the server's certificate checked against `host` (less
    /// its port) with [`ClientConfig::tls`](crate::client::ClientConfig)'s roots.
    pub secure: bool,
}

impl Target {
    /// `addr`, path `/`, no source address.
    pub fn new(addr: SocketAddr) -> Self {
        Target {
            addr,
            host: addr.to_string(),
            path: "/".into(),
            local: None,
            secure: false,
        }
    }

    /// A `ws://` URL, resolved now (a blocking look-up; the first address is taken).
    pub fn from_url(url: &str) -> Result<Self, ClientError> {
        let url = WsUrl::parse(url).map_err(ClientError::Url)?;
        if url.secure && cfg!(not(feature = "tls")) {
            return Err(ClientError::Url(UrlError::Scheme("wss".into())));
        }
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
            secure: url.secure,
        })
    }

    /// The same target, connected to from `local`.
    pub fn from_local(&self, local: IpAddr) -> Self {
        Target {
            local: Some(local),
            ..self.clone()
        }
    }

    /// The server's name for TLS: `host` without its port (and an IPv6 literal's brackets).
    pub fn server_name(&self) -> &str {
        let host = self.host.as_str();
        if let Some(rest) = host.strip_prefix('[') {
            return rest.split(']').next().unwrap_or(rest);
        }
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
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
    /// ([`SendStatus::Dropped`](crate::server::SendStatus::Dropped)), except when nothing is
    /// waiting. Default 16 MiB: a load generator keeping 16 messages of 1 MiB in flight never
    /// hits it, and a server that stops reading costs the client no more.
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

    /// The connection's queue is empty again after a send was answered
    /// [`SendStatus::Queued`](crate::driver::SendStatus::Queued) or `Dropped`: a producer that
    /// paused can send more. Owed once per such episode, whatever wrote the bytes (see
    /// [`crate::driver`]).
    fn on_drain(&mut self, _conn: &mut ClientConn<'_, Self::Data>) {}

    /// The connection failed: connecting, the handshake, the protocol, the socket, a deadline.
    fn on_error(&mut self, _id: ClientId, _data: &mut Self::Data, _error: &ClientError) {}

    /// An open connection is over: `code` is the server's close code (1005 if its close had
    /// none), the one we sent when we failed the connection, or 1006 when TCP dropped first.
    fn on_close(&mut self, _id: ClientId, _data: &mut Self::Data, _code: u16, _reason: &str) {}

    /// Called every [`LoopConfig::tick`]: the hook for timers, pacing and stopping.
    fn on_tick(&mut self, _lp: &mut Control<'_, Self::Data>) {}
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
    /// Made on first use: a poll has at most one waker.
    waker: Option<LoopWaker>,
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
        Ok(EventLoop {
            poll,
            events: Events::with_capacity(1024),
            core: Core::new(config, registry),
            waker: None,
        })
    }

    /// A waker for this loop, for threads that hand it work (a [`EventLoop::turn`] waiting
    /// for readiness returns when it is woken). Every call returns the same one.
    pub fn waker(&mut self) -> io::Result<LoopWaker> {
        if let Some(w) = &self.waker {
            return Ok(w.clone());
        }
        let w = LoopWaker(Arc::new(Waker::new(self.poll.registry(), WAKE)?));
        self.waker = Some(w.clone());
        Ok(w)
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
            if event.token() == WAKE {
                continue;
            }
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
