//! The server: a hand-rolled mio event loop per worker thread.
//!
//! Each worker owns a listener bound to the same address with `SO_REUSEPORT` (the kernel
//! spreads connections across them), a slab of connections, one read buffer, one cork buffer,
//! its timers and an inbox for sends from other threads. Connections never move between
//! workers. See `worker/mod.rs` for the loop itself, [`handler`] for the application's callbacks,
//! [`Session`] for sending with backpressure, [`SessionHandle`] for sending from anywhere and
//! [`task`] for state kept per worker and reached from anywhere (one post per worker).

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::close::code;
use crate::config::Limits;
use crate::handshake::HandshakeConfig;

pub mod gate;
pub mod handler;
mod inbox;
mod session;
#[cfg(unix)]
mod signals;
pub mod task;
mod worker;

pub use gate::Gate;
pub use handler::{Handler, HttpResponse, Message, Rejection, SessionError, Upgrading};
pub use inbox::{broadcast, PostError, SessionHandle};
pub use session::{Outgoing, SendStatus, Session};
#[cfg(all(unix, feature = "tls"))]
pub use signals::reload_tls_on_sighup;
#[cfg(unix)]
pub use signals::shutdown_on_signals;
pub use task::{Task, TaskOut, Workers};

/// What happens to a message that would push a session's queued bytes over
/// [`ServerConfig::max_backpressure`]. Either way the message is dropped and the sender sees
/// [`SendStatus::Dropped`], so a peer that stops reading never costs more than the cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// Drop the message; the session stays open (uWebSockets' default). For feeds where a
    /// slow reader may skip updates.
    Drop,
    /// Drop the message and start the close handshake with this code: typically
    /// [`code::POLICY_VIOLATION`] (1008) or [`code::TRY_AGAIN_LATER`] (1013). For streams
    /// where a gap is worse than a reconnect. If the peer does not answer (it is not reading),
    /// the close deadline drops TCP. A code that may not be sent (1005, 1006, ...) makes this
    /// behave as `Drop`.
    Close(u16),
}

impl Overflow {
    /// Close with 1008 (policy violation).
    pub const CLOSE_POLICY: Overflow = Overflow::Close(code::POLICY_VIOLATION);
    /// Close with 1013 (try again later).
    pub const CLOSE_TRY_AGAIN: Overflow = Overflow::Close(code::TRY_AGAIN_LATER);
}

/// Server settings, each default with its reason.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub limits: Limits,
    pub handshake: HandshakeConfig,
    /// Time allowed from accept to a complete request head (and body). Default 10 s: enough
    /// for a slow mobile client, short enough that a slowloris holds a slot only briefly.
    pub handshake_timeout: Duration,
    /// Time allowed for the peer to answer our close frame, or to finish reading an HTTP
    /// response, before TCP is dropped. Default 5 s.
    pub close_timeout: Duration,
    /// Size of each worker's shared read buffer. Default 256 KiB: large messages arrive in few
    /// reads, and it is one buffer per thread, not per connection.
    pub read_buffer_size: usize,
    /// Worker threads (event loops). Default: the number of available cores.
    pub workers: usize,
    /// Open connections (all workers together, handshakes and sessions alike) beyond which new
    /// ones are answered 503 and closed before any upgrade. Default 100,000: within the usual
    /// open-files limit of a tuned host.
    pub max_connections: usize,
    /// Largest body of a plain HTTP request. Default 64 KiB.
    pub max_http_body: usize,
    /// How long a graceful shutdown waits for close handshakes. Default 5 s.
    pub shutdown_timeout: Duration,
    /// Most bytes queued for one session that its socket has not taken yet. A send that would
    /// go over it is dropped (see [`Overflow`]), except that a message is always accepted when
    /// nothing is queued (so one message larger than the cap can still be sent to a reader
    /// that keeps up). Default 1 MiB: room for bursts, while 1,000 stalled readers cost at
    /// most about 1 GiB of queues.
    ///
    /// It also bounds what a peer can make the server queue by sending: while more than half
    /// of this is queued, the loop stops reading from the session (automatic pongs and the
    /// close echo would queue too) and resumes once the queue is down to a quarter; the peer's
    /// TCP window then fills and it must wait. A peer that sends without ever reading so costs
    /// at most this plus one `read_buffer_size` of replies (and an echo of what one read
    /// brought still fits under the cap, so nothing is dropped for it); its automatic ping
    /// goes unanswered, so it is dropped at `pong_timeout`. See [`crate::driver`] for the
    /// whole contract.
    pub max_backpressure: usize,
    /// What to do when a send would exceed `max_backpressure`. Default [`Overflow::Drop`].
    pub overflow: Overflow,
    /// Interval of automatic pings, `None` for none. Default 30 s: under the idle timeouts of
    /// common proxies and NATs (60 s and up), so a ping also keeps the path open.
    pub ping_interval: Option<Duration>,
    /// Time after an automatic ping within which something (the pong, or any other bytes) must
    /// arrive; otherwise the peer is presumed gone and TCP is dropped (1006, half-open
    /// detection). A vanished peer is so detected within `ping_interval + pong_timeout`.
    /// Clamped to `ping_interval`. Default 10 s.
    pub pong_timeout: Duration,
    /// Closes (1001) a session from which nothing at all has arrived for this long, `None` for
    /// no limit. Pongs count, so with automatic pings it only closes peers that stopped
    /// answering. Checked lazily: the close comes between one and two timeouts after the last
    /// byte. Default `None`.
    pub idle_timeout: Option<Duration>,
    /// Most bytes of messages other threads may have posted to one worker through
    /// [`SessionHandle`]s that the loop has not taken yet; a post beyond it fails with
    /// [`PostError::Full`]. The loop takes the whole inbox every turn, so this is reached only
    /// if producers outrun the loop itself. Above a quarter of it the inbox's [`Gate`] closes:
    /// sessions whose messages posted to it (a publisher fanning out) stop being read until the
    /// loop has taken it. Default 64 MiB.
    pub max_inbox_bytes: usize,
    /// SockJS services (see [`crate::sockjs`]): requests under each one's prefix speak the
    /// SockJS protocol, and its sessions reach the handler like WebSocket ones (with
    /// [`Upgrading::sockjs`] set). Default none.
    pub sockjs: Vec<crate::sockjs::Service>,
    /// TLS on the main listener (https and wss): every connection there starts with a TLS
    /// handshake, which `handshake_timeout` covers along with the request head. Default
    /// `None` (plain TCP, or TLS ended by a proxy in front).
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::ServerTls>,
    /// TLS on the [stream listener](Server::bind_stream) (STOMP over TLS, say); typically
    /// [`ServerTls::with_alpn`](crate::tls::ServerTls::with_alpn) with no protocols. Its TLS
    /// handshake must finish within `handshake_timeout` too. Default `None`.
    #[cfg(feature = "tls")]
    pub stream_tls: Option<crate::tls::ServerTls>,
    /// permessage-deflate (RFC 7692), `None` for off. With it, WebSocket sessions whose client
    /// offers the extension compress the messages they send (those of at least
    /// [`DeflateConfig::min_size`] bytes) and inflate what they receive, within
    /// `limits.max_message_size`. The memory each session holds depends on context takeover:
    /// without it (the default [`DeflateConfig`]) a worker's sessions share one compressor per
    /// window size and borrow an inflater per message, so an idle session holds nothing
    /// more; with it each session has a compressor (about 312 KiB resident at window 15 and
    /// memory level 8) and an inflater (19 to 51 KiB) of its own, made when first needed:
    /// about 332 KiB per session measured. See
    /// [`crate::deflate`] for the table. A payload shared by many sessions without context
    /// takeover ([`Outgoing::Shared`], [`broadcast`], handles' `send_shared` / `send_parts`)
    /// is compressed once per worker and loop turn, not once per recipient. Default `None`.
    ///
    /// [`DeflateConfig::min_size`]: crate::deflate::DeflateConfig::min_size
    /// [`DeflateConfig`]: crate::deflate::DeflateConfig
    pub deflate: Option<crate::deflate::DeflateConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            limits: Limits::default(),
            handshake: HandshakeConfig::default(),
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            read_buffer_size: 256 << 10,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_connections: 100_000,
            max_http_body: 64 << 10,
            shutdown_timeout: Duration::from_secs(5),
            max_backpressure: 1 << 20,
            overflow: Overflow::Drop,
            ping_interval: Some(Duration::from_secs(30)),
            pong_timeout: Duration::from_secs(10),
            idle_timeout: None,
            max_inbox_bytes: 64 << 20,
            sockjs: Vec::new(),
            #[cfg(feature = "tls")]
            tls: None,
            #[cfg(feature = "tls")]
            stream_tls: None,
            deflate: None,
        }
    }
}

/// Counters of a running server, over all its workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Open TCP connections: handshakes, sessions and answered HTTP requests still lingering.
    pub connections: usize,
    /// Connections answered 503 because `max_connections` were open.
    pub refused: u64,
    /// Messages dropped because a session was at `max_backpressure`.
    pub dropped_messages: u64,
    /// Sessions closed because they overflowed: by [`Overflow::Close`], or by the application
    /// in [`Handler::on_overflow`] (a slow consumer let go).
    pub overflow_closes: u64,
    /// Sessions dropped because no pong came in time.
    pub pong_timeouts: u64,
    /// The most bytes one session had queued (not taken by its socket), since the start.
    pub peak_queued: usize,
    /// Times a session stopped being read because its own queue was over half of
    /// `max_backpressure`.
    pub read_pauses: u64,
    /// Times a session stopped being read because something it feeds was closed (a
    /// [`Gate`]: a full inbox, or the application's own).
    pub gate_pauses: u64,
    /// Connections handed to the worker that owns their SockJS session.
    pub handed_over: u64,
    /// SockJS sessions over HTTP alive now (closed ones included until they are forgotten).
    pub sockjs_sessions: usize,
    /// Messages compressed by the workers' shared compressors (sessions without context
    /// takeover), counted at the end of each loop turn.
    pub deflate_compressed: u64,
    /// Sends of a shared payload that reused the form compressed for an earlier recipient
    /// (compress once for many), counted at the end of each loop turn.
    pub deflate_reused: u64,
}

/// The atomics behind [`ServerStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub connections: AtomicUsize,
    pub refused: AtomicU64,
    pub dropped_messages: AtomicU64,
    pub overflow_closes: AtomicU64,
    pub pong_timeouts: AtomicU64,
    pub peak_queued: AtomicUsize,
    pub read_pauses: AtomicU64,
    pub gate_pauses: AtomicU64,
    pub handed_over: AtomicU64,
    pub sockjs_sessions: AtomicUsize,
    pub deflate_compressed: AtomicU64,
    pub deflate_reused: AtomicU64,
}

impl Counters {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a session's queue length if it is a new peak.
    pub fn note_queued(&self, len: usize) {
        if len > self.peak_queued.load(Ordering::Relaxed) {
            self.peak_queued.fetch_max(len, Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> ServerStats {
        ServerStats {
            connections: self.connections.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            dropped_messages: self.dropped_messages.load(Ordering::Relaxed),
            overflow_closes: self.overflow_closes.load(Ordering::Relaxed),
            pong_timeouts: self.pong_timeouts.load(Ordering::Relaxed),
            peak_queued: self.peak_queued.load(Ordering::Relaxed),
            read_pauses: self.read_pauses.load(Ordering::Relaxed),
            gate_pauses: self.gate_pauses.load(Ordering::Relaxed),
            handed_over: self.handed_over.load(Ordering::Relaxed),
            sockjs_sessions: self.sockjs_sessions.load(Ordering::Relaxed),
            deflate_compressed: self.deflate_compressed.load(Ordering::Relaxed),
            deflate_reused: self.deflate_reused.load(Ordering::Relaxed),
        }
    }
}

/// State shared by a server's workers and its handles.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub stopping: AtomicBool,
    pub wakers: Mutex<Vec<Arc<mio::Waker>>>,
    pub counters: Counters,
    /// Each worker's inbox, by worker index (for handing a connection to another worker).
    pub inboxes: Mutex<Vec<Arc<inbox::Inbox>>>,
    /// The same inboxes, set once every worker exists (before any runs), for tasks.
    pub workers: std::sync::OnceLock<Vec<Arc<inbox::Inbox>>>,
    /// Which worker owns each live SockJS session (`prefix/session-id`): requests for it that
    /// land elsewhere are handed over.
    pub sockjs_owners: Mutex<std::collections::HashMap<Box<str>, usize>>,
}

/// Stops a running server from any thread: stop accepting, close every session with 1001,
/// wait for the close handshakes up to the shutdown timeout.
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    shared: Arc<Shared>,
}

impl ShutdownHandle {
    /// The server's counters now (as [`RunningServer::stats`], from any thread).
    pub fn stats(&self) -> ServerStats {
        self.shared.counters.snapshot()
    }

    pub fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        for waker in self
            .shared
            .wakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = waker.wake();
        }
    }
}

/// A bound server, not yet running.
#[derive(Debug)]
pub struct Server {
    listeners: Vec<StdListener>,
    /// Listeners for plain byte streams (see [`Server::bind_stream`]), one per worker.
    stream_listeners: Vec<StdListener>,
    local_addr: SocketAddr,
    config: Arc<ServerConfig>,
    shared: Arc<Shared>,
}

/// Fails with `AddrInUse` when something already listens on `addr`. The workers' listeners
/// share their port through `SO_REUSEPORT`, which would just as well let a second server
/// process (same user) join it and take half the connections: a probe bound without the option
/// refuses that. Port 0 needs no check.
fn ensure_free(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    probe.set_reuse_address(true)?;
    probe.bind(&addr.into())
}

fn listener(addr: SocketAddr) -> io::Result<StdListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

impl Server {
    /// Binds one listener per worker to `addr` (port 0 picks one port for all of them).
    pub fn bind(addr: SocketAddr, config: ServerConfig) -> io::Result<Server> {
        ensure_free(addr)?;
        let first = listener(addr)?;
        let local_addr = first.local_addr()?;
        let mut listeners = vec![first];
        for _ in 1..config.workers.max(1) {
            listeners.push(listener(local_addr)?);
        }
        Ok(Server {
            listeners,
            stream_listeners: Vec::new(),
            local_addr,
            config: Arc::new(config),
            shared: Arc::default(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Also listens on `addr` for plain byte streams, served by the same workers: a
    /// connection there skips HTTP and WebSocket entirely and goes to
    /// [`Handler::on_stream_open`] / [`Handler::on_stream_data`], and its session's sends
    /// write payloads as they are (no framing). For protocols such as STOMP over TCP that
    /// share a server with WebSocket. Returns the bound address.
    pub fn bind_stream(&mut self, addr: SocketAddr) -> io::Result<SocketAddr> {
        ensure_free(addr)?;
        let first = listener(addr)?;
        let bound = first.local_addr()?;
        let mut listeners = vec![first];
        for _ in 1..self.listeners.len() {
            listeners.push(listener(bound)?);
        }
        self.stream_listeners = listeners;
        Ok(bound)
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            shared: self.shared.clone(),
        }
    }

    /// The workers, for posting [`Task`]s to their handlers (before the server runs, posts
    /// are refused).
    pub fn workers(&self) -> Workers {
        Workers::new(self.shared.clone(), self.listeners.len())
    }

    /// Starts the workers in background threads; `factory` makes each worker's handler.
    pub fn spawn<H, F>(self, factory: F) -> io::Result<RunningServer>
    where
        H: Handler,
        F: Fn() -> H + Send + Sync + 'static,
    {
        let factory = Arc::new(factory);
        let mut threads = Vec::new();
        let mut stream_listeners = self.stream_listeners.into_iter();
        let mut workers = Vec::new();
        for (index, std_listener) in self.listeners.into_iter().enumerate() {
            workers.push(worker::Worker::new(
                index,
                std_listener,
                stream_listeners.next(),
                self.config.clone(),
                self.shared.clone(),
            )?);
        }
        // Every inbox exists before any worker runs: a task posted from a handler finds them all.
        let inboxes = self
            .shared
            .inboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let _ = self.shared.workers.set(inboxes);
        for worker in workers {
            let index = worker.index();
            let factory = factory.clone();
            let thread = std::thread::Builder::new()
                .name(format!("sockeye-{index}"))
                .spawn(move || worker.run(factory()))?;
            threads.push(thread);
        }
        Ok(RunningServer {
            threads,
            handle: ShutdownHandle {
                shared: self.shared,
            },
            local_addr: self.local_addr,
        })
    }

    /// Runs the workers until a shutdown completes.
    pub fn run<H, F>(self, factory: F) -> io::Result<()>
    where
        H: Handler,
        F: Fn() -> H + Send + Sync + 'static,
    {
        self.spawn(factory)?.join()
    }
}

/// A server whose workers are running.
#[derive(Debug)]
pub struct RunningServer {
    threads: Vec<JoinHandle<io::Result<()>>>,
    handle: ShutdownHandle,
    local_addr: SocketAddr,
}

impl RunningServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.handle.clone()
    }

    /// Waits for every worker to stop.
    pub fn join(self) -> io::Result<()> {
        let mut result = Ok(());
        for thread in self.threads {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(_) => result = Err(io::Error::other("worker thread panicked")),
            }
        }
        result
    }

    /// The server's counters now.
    pub fn stats(&self) -> ServerStats {
        self.handle.shared.counters.snapshot()
    }

    /// The workers, for posting [`Task`]s to their handlers.
    pub fn workers(&self) -> Workers {
        Workers::new(self.handle.shared.clone(), self.threads.len())
    }

    /// Graceful shutdown, then waits for the workers.
    pub fn shutdown(self) -> io::Result<()> {
        self.handle.shutdown();
        self.join()
    }
}
