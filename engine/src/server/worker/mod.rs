//! One event loop: accept, handshake, read into the shared buffer, dispatch, cork, write.
//!
//! mio is edge-triggered: every readable event is drained until `WouldBlock` — except that a
//! connection which keeps delivering is cut off after [`READS_PER_TURN`] reads and put on the
//! `pending` list, so one fast peer cannot starve the rest. Sockets are registered once for
//! both readable and writable; a writable edge only arrives after a write would have blocked,
//! which is exactly when the backlog needs draining (and `on_drain` is due).
//!
//! A loop turn: poll, serve the events, serve the `pending` connections, apply the commands
//! other threads posted to the inbox, then fire the timers that are due.
//!
//! Connection phases:
//!
//! ```text
//!  accept ─▶ Handshake ──upgrade accepted──▶ Open ──both closes exchanged──▶ dropped
//!               │                              │ EOF / I/O error / close deadline ─▶ dropped
//!               └─HTTP answered / refused──▶ Linger ──EOF or close deadline──▶ dropped
//! ```

use std::cell::OnceCell;
use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use tracing::{debug, info, warn};

mod commands;
mod deadlines;
mod shutdown;
mod sockjs;

use super::gate;
use super::handler::{Handler, Message, SessionError, Upgrading};
use super::inbox::{Command, Inbox};
use super::session::{Env, Kind, Out, Session, SessionState, Wire};
use super::{Counters, ServerConfig, Shared};
use crate::close::code;
use crate::connection::{Event, Failure, Read, Receiver, Role, Sender};
use crate::driver::out::{flush_and_drain, Backlog, Cork, Drains};
use crate::driver::transport::Transport;
use crate::driver::{Clock, Deadlines, Tag};
use crate::handshake::{self, Request, MAX_HEADERS};
use crate::Status;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
const STREAM_LISTENER: Token = Token(usize::MAX - 3);
/// Reads of one connection per loop turn before others get their go.
const READS_PER_TURN: usize = 16;

struct Open<D> {
    rx: Receiver,
    state: SessionState<D>,
    /// Unconsumed bytes of an incomplete frame header or control frame (at most 139).
    stash: Vec<u8>,
    /// [`Clock`] tick of the last read that returned bytes (for the idle timeout).
    last_rx: u32,
    close_armed: bool,
    /// An automatic ping is out and nothing has arrived since.
    awaiting_pong: bool,
    /// Reading is paused: the session's own queue went over half of `max_backpressure` (until
    /// it is down to a quarter).
    paused_output: bool,
    /// Reading is paused: the session fed a closed [`Gate`](super::Gate) (until it opens).
    paused_gate: bool,
    /// `stash` holds input kept back by a pause (not just an incomplete frame): it is fed
    /// again, alone, before anything new is read.
    held_input: bool,
    /// The queue went over half the cap and `on_backpressure` was called; cleared by the
    /// `on_drain` that follows.
    congested: bool,
}

impl<D> Open<D> {
    fn paused(&self) -> bool {
        self.paused_output || self.paused_gate
    }
}

// Most connections are `Open`; boxing it would add an allocation each without saving memory.
#[allow(clippy::large_enum_variant)]
enum Phase<D> {
    /// Reading a request head (and body): the first of a connection, or the next on a
    /// kept-alive one (`since`: clock tick it started waiting, for the timeout).
    Handshake {
        head: Vec<u8>,
        since: u32,
    },
    /// A SockJS receiving request: its response stays open for its session's frames.
    Receiving(Box<sockjs::Receiving>),
    Open(Open<D>),
    /// A response was written; wait for the peer to hang up after reading it.
    Linger {
        backlog: Backlog,
        shut: bool,
    },
}

struct Conn<D> {
    stream: Transport,
    gen: u32,
    phase: Phase<D>,
}

/// A connection's peer address, looked up only when a log line needs it (keeping it in
/// every connection would cost 32 bytes each).
struct Peer(Option<SocketAddr>);

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => write!(f, "{addr}"),
            None => f.write_str("?"),
        }
    }
}

impl<D> Conn<D> {
    fn peer(&self) -> Peer {
        Peer(self.stream.peer_addr().ok())
    }
}

/// The open session in `conn` and where its bytes go (a free function, so that the caller can
/// borrow the loop's other fields at the same time).
fn open_parts<'a, D>(
    conn: &'a mut Conn<D>,
    key: usize,
    cork: &'a mut Cork,
    env: &'a Env,
) -> Option<(&'a mut Open<D>, Out<'a>)> {
    let Phase::Open(open) = &mut conn.phase else {
        return None;
    };
    let tag = Tag { key, gen: conn.gen };
    let out = Out {
        cork,
        wire: Wire::Socket(&mut conn.stream),
        env,
        tag,
    };
    Some((open, out))
}

/// An open session and the handler, as the drain rule sees them.
struct Draining<'a, H: Handler> {
    handler: &'a mut H,
    open: &'a mut Open<H::Data>,
    out: Out<'a>,
}

impl<H: Handler> Drains for Draining<'_, H> {
    fn flush(&mut self) -> io::Result<()> {
        let backlog = &mut self.open.state.backlog;
        let queued = backlog.len();
        let before = queued + self.out.cork.len();
        let Out { cork, wire, .. } = &mut self.out;
        let Wire::Socket(stream) = wire else {
            return Ok(());
        };
        cork.flush_into(stream, backlog)?;
        if queued > 0 && backlog.len() < before {
            // The socket took bytes it had refused: the peer's TCP acknowledges, so the peer
            // is alive, whatever an automatic ping awaits.
            self.open.awaiting_pong = false;
        }
        Ok(())
    }

    fn backlog(&self) -> &Backlog {
        &self.open.state.backlog
    }

    fn backlog_mut(&mut self) -> &mut Backlog {
        &mut self.open.state.backlog
    }

    fn on_drain(&mut self) {
        self.open.congested = false;
        self.handler.on_drain(&mut Session {
            state: &mut self.open.state,
            out: self.out.reborrow(),
        });
    }
}

/// What to do with a connection after serving an event.
enum Next {
    Keep,
    Drop,
    /// Handed to another worker: its slot is already free here.
    Handed,
}

pub(crate) struct Worker {
    index: usize,
    poll: Poll,
    listener: Option<TcpListener>,
    stream_listener: Option<TcpListener>,
    config: Arc<ServerConfig>,
    shared: Arc<Shared>,
    inbox: Arc<Inbox>,
}

/// The loop's deadlines, one FIFO queue per kind.
struct Timers {
    handshakes: Deadlines,
    closes: Deadlines,
    pings: Deadlines,
    pongs: Deadlines,
    idles: Deadlines,
    /// SockJS heart-beat frames on the WebSocket transport (the shortest service interval).
    sockjs_beats: Deadlines,
}

impl Timers {
    fn new(config: &ServerConfig) -> Self {
        let pong = config.ping_interval.map(|i| config.pong_timeout.min(i));
        Timers {
            handshakes: Deadlines::new(config.handshake_timeout),
            closes: Deadlines::new(config.close_timeout),
            pings: Deadlines::maybe(config.ping_interval),
            pongs: Deadlines::maybe(pong),
            idles: Deadlines::maybe(config.idle_timeout),
            sockjs_beats: Deadlines::maybe(config.sockjs.iter().map(|s| s.heartbeat).min()),
        }
    }

    fn next(&self) -> Option<Instant> {
        [
            self.handshakes.next(),
            self.closes.next(),
            self.pings.next(),
            self.pongs.next(),
            self.idles.next(),
            self.sockjs_beats.next(),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// The loop's state, split from the handler so both can be borrowed at once.
struct Loop<D> {
    conns: Slab<Conn<D>>,
    /// SockJS services and their sessions.
    sockjs: sockjs::SockJs<D>,
    /// To register connections handed over by other workers.
    registry: mio::Registry,
    buf: Box<[u8]>,
    cork: Cork,
    env: Env,
    timers: Timers,
    clock: Clock,
    /// When the current turn started.
    now: Instant,
    pending: Vec<usize>,
    /// The inbox's commands being applied (kept to reuse the allocation).
    commands: Vec<Command>,
    /// (recipient, command index) in the order they are applied (reused likewise).
    command_order: Vec<(Tag, usize)>,
    next_id: u64,
    next_gen: u32,
}

impl Worker {
    pub fn new(
        index: usize,
        listener: StdListener,
        stream_listener: Option<StdListener>,
        config: Arc<ServerConfig>,
        shared: Arc<Shared>,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::from_std(listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let stream_listener = match stream_listener {
            Some(l) => {
                let mut l = TcpListener::from_std(l);
                poll.registry()
                    .register(&mut l, STREAM_LISTENER, Interest::READABLE)?;
                Some(l)
            }
            None => None,
        };
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let inbox = Arc::new(Inbox::new(waker.clone(), config.max_inbox_bytes));
        shared
            .wakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(waker);
        {
            let mut inboxes = shared.inboxes.lock().unwrap_or_else(|e| e.into_inner());
            if inboxes.len() <= index {
                inboxes.resize(index + 1, inbox.clone());
            }
            inboxes[index] = inbox.clone();
        }
        Ok(Worker {
            index,
            poll,
            listener: Some(listener),
            stream_listener,
            config,
            shared,
            inbox,
        })
    }

    pub fn index(&self) -> usize {
        self.index
    }

    pub fn run<H: Handler>(mut self, mut handler: H) -> io::Result<()> {
        gate::enlist();
        super::task::enlist(self.index);
        super::inbox::enlist(&self.inbox);
        let now = Instant::now();
        let mut lp = Loop::<H::Data> {
            conns: Slab::new(),
            sockjs: sockjs::SockJs::new(&self.config.sockjs),
            registry: self.poll.registry().try_clone()?,
            buf: vec![0; self.config.read_buffer_size.max(4096)].into_boxed_slice(),
            cork: Cork::default(),
            env: Env {
                index: self.index,
                config: self.config.clone(),
                inbox: self.inbox.clone(),
                shared: self.shared.clone(),
                deflate: std::cell::RefCell::new(match &self.config.deflate {
                    Some(d) => crate::deflate::Pool::new(d),
                    None => crate::deflate::Pool::default(),
                }),
            },
            timers: Timers::new(&self.config),
            clock: Clock::new(now),
            now,
            pending: Vec::new(),
            commands: Vec::new(),
            command_order: Vec::new(),
            next_id: (self.index as u64) << 48,
            next_gen: 0,
        };
        let result = self.turns(&mut lp, &mut handler);
        self.inbox.stop();
        // Whatever is still open (shutdown deadline passed, or poll failed) ends here.
        lp.abort_all(&mut handler);
        result
    }

    fn turns<H: Handler>(&mut self, lp: &mut Loop<H::Data>, handler: &mut H) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut stop_at: Option<Instant> = None;
        loop {
            if stop_at.is_none() && self.shared.stopping.load(Ordering::SeqCst) {
                lp.now = Instant::now();
                let at = lp.now + self.config.shutdown_timeout;
                stop_at = Some(at);
                self.listener = None;
                self.stream_listener = None;
                lp.begin_shutdown(handler, at);
            }
            if let Some(at) = stop_at {
                if lp.conns.is_empty() || Instant::now() >= at {
                    return Ok(());
                }
            }
            let timeout = lp.timeout(stop_at);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            lp.now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(lp, handler, false),
                    STREAM_LISTENER => self.accept(lp, handler, true),
                    WAKER => {}
                    Token(key) => {
                        // Writable needs no flag: every event ends with a flush of the backlog.
                        let hup = event.is_read_closed() || event.is_error();
                        let readable = event.is_readable() || hup;
                        lp.serve(handler, key, readable, hup);
                    }
                }
            }
            let mut pending = std::mem::take(&mut lp.pending);
            // A connection may have been listed more than once (cut off, resumed, owed a drain).
            pending.sort_unstable();
            pending.dedup();
            for key in pending {
                // No fresh edge to rely on: read until the socket says it is empty.
                lp.serve(handler, key, true, true);
            }
            lp.run_commands(handler);
            lp.expire(handler);
            lp.end_turn();
        }
    }

    fn accept<H: Handler>(&mut self, lp: &mut Loop<H::Data>, handler: &mut H, stream_kind: bool) {
        let listener = if stream_kind {
            self.stream_listener.as_ref()
        } else {
            self.listener.as_ref()
        };
        let Some(listener) = listener else {
            return;
        };
        loop {
            let (mut stream, peer) = match listener.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: log and try again on the next event rather than spin.
                    warn!(error = %e, "accept failed");
                    return;
                }
            };
            let _ = stream.set_nodelay(true);
            let is_stream = stream_kind;
            if !lp.admit() {
                info!(%peer, "refusing connection: at max_connections");
                if is_stream {
                    continue;
                }
                let mut out = Vec::new();
                handshake::write_response(
                    &mut out,
                    503,
                    &[("Retry-After", "1")],
                    b"server is full\n",
                );
                let _ = stream.write(&out);
                continue;
            }
            let Some(mut stream) = self.wrap(stream, is_stream, peer) else {
                lp.release();
                continue;
            };
            let entry = lp.conns.vacant_entry();
            let key = entry.key();
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                Token(key),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                warn!(error = %e, "register failed");
                lp.release();
                continue;
            }
            lp.next_gen = lp.next_gen.wrapping_add(1);
            let gen = lp.next_gen;
            if is_stream {
                let Some(data) = handler.on_stream_open(peer) else {
                    debug!(%peer, "stream connection refused by the application");
                    lp.release();
                    continue;
                };
                lp.next_id += 1;
                let open = Open {
                    rx: Receiver::new(Role::Server, lp.env.config.limits.clone()),
                    state: SessionState {
                        id: lp.next_id,
                        tx: Sender::server(),
                        backlog: Backlog::default(),
                        protocol: None,
                        close: None,
                        kind: Kind::Stream,
                        flow: OnceCell::new(),
                        data,
                    },
                    stash: Vec::new(),
                    last_rx: lp.clock.tick(lp.now),
                    close_armed: false,
                    awaiting_pong: false,
                    paused_output: false,
                    paused_gate: false,
                    held_input: false,
                    congested: false,
                };
                entry.insert(Conn {
                    stream,
                    gen,
                    phase: Phase::Open(open),
                });
                lp.timers.idles.arm(lp.now, Tag { key, gen });
                if lp.conns[key].stream.is_tls() {
                    // The TLS handshake must finish within the handshake deadline.
                    lp.timers.handshakes.arm(lp.now, Tag { key, gen });
                }
                lp.open_stream(handler, key);
                continue;
            }
            entry.insert(Conn {
                stream,
                gen,
                phase: Phase::Handshake {
                    head: Vec::new(),
                    since: lp.clock.tick(lp.now),
                },
            });
            lp.timers.handshakes.arm(lp.now, Tag { key, gen });
        }
    }
}

impl Worker {
    /// The accepted socket as this listener speaks it: plain, or TLS where configured.
    fn wrap(
        &self,
        stream: mio::net::TcpStream,
        is_stream: bool,
        peer: SocketAddr,
    ) -> Option<Transport> {
        #[cfg(feature = "tls")]
        {
            let tls = match is_stream {
                true => self.config.stream_tls.as_ref(),
                false => self.config.tls.as_ref(),
            };
            if let Some(tls) = tls {
                return match tls.accept() {
                    Ok(session) => Some(Transport::Tls(Box::new(
                        crate::tls::stream::TlsStream::new(stream, session),
                    ))),
                    Err(e) => {
                        warn!(%peer, error = %e, "TLS session could not be made");
                        None
                    }
                };
            }
        }
        let _ = (is_stream, peer);
        Some(Transport::Plain(stream))
    }
}

impl<D> Loop<D> {
    fn counters(&self) -> &Counters {
        self.env.counters()
    }

    /// Lets go of what the turn's fan-outs compressed, and counts it.
    fn end_turn(&mut self) {
        let mut pool = self.env.deflate.borrow_mut();
        pool.end_turn();
        let stats = pool.take_stats();
        let counters = self.env.counters();
        if stats.compressed > 0 {
            counters
                .deflate_compressed
                .fetch_add(stats.compressed, Ordering::Relaxed);
        }
        if stats.reused > 0 {
            counters
                .deflate_reused
                .fetch_add(stats.reused, Ordering::Relaxed);
        }
    }

    /// Counts a new connection against `max_connections` (over all workers); false if full.
    fn admit(&self) -> bool {
        let counters = self.counters();
        let open = counters.connections.fetch_add(1, Ordering::Relaxed);
        if open < self.env.config.max_connections {
            return true;
        }
        counters.connections.fetch_sub(1, Ordering::Relaxed);
        Counters::bump(&counters.refused);
        false
    }

    fn release(&self) {
        self.counters().connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Drops a connection (closing its socket, after it stops counting: a peer that sees the
    /// hang-up sees the count without it).
    fn remove(&mut self, key: usize) {
        if let Some(mut conn) = self.conns.try_remove(key) {
            self.release();
            conn.stream.close();
            drop(conn);
        }
    }

    /// The slot `tag` names still holds that connection and it is a WebSocket session.
    fn is_open(&self, tag: Tag) -> bool {
        self.conns
            .get(tag.key)
            .is_some_and(|c| c.gen == tag.gen && matches!(c.phase, Phase::Open(_)))
    }

    fn timeout(&self, stop_at: Option<Instant>) -> Option<Duration> {
        // What this loop posted to itself woke nobody: take it before sleeping.
        if !self.pending.is_empty() || self.env.inbox.has_commands() {
            return Some(Duration::ZERO);
        }
        let next = [self.timers.next(), self.sockjs.next_deadline(), stop_at]
            .into_iter()
            .flatten()
            .min()?;
        Some(next.saturating_duration_since(Instant::now()) + Duration::from_millis(1))
    }

    /// Serves one connection. `hup`: the event says the peer hung up (or there was no event),
    /// so a short read does not prove the socket drained.
    fn serve<H: Handler<Data = D>>(
        &mut self,
        handler: &mut H,
        key: usize,
        readable: bool,
        hup: bool,
    ) {
        if !self.flush_pending(handler, key) {
            return;
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let next = match conn.phase {
            Phase::Handshake { .. } if readable => self.read_handshake(handler, key),
            Phase::Handshake { .. } => Next::Keep,
            Phase::Open(_) => self.serve_open(handler, key, readable, hup),
            Phase::Linger { .. } => self.serve_linger(key),
            Phase::Receiving(_) => self.serve_receiving(handler, key, readable),
        };
        if let Next::Drop = next {
            self.remove(key);
        }
    }

    /// Writes the TLS records the socket refused earlier (this event may be the room they
    /// waited for; nothing to do for plain TCP). False if the connection failed and is gone.
    fn flush_pending<H: Handler<Data = D>>(&mut self, handler: &mut H, key: usize) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        let Err(e) = conn.stream.flush_pending() else {
            return true;
        };
        debug!(peer = %conn.peer(), error = %e, "socket error");
        match conn.phase {
            // Its own write fails next and ends it the SockJS way.
            Phase::Receiving(_) => return true,
            Phase::Open(_) => {
                let _ = self.end(handler, key, Some(SessionError::Io(e)));
            }
            _ => {}
        }
        self.remove(key);
        false
    }

    /// Reads what is there into `head`. `Err` when the peer hung up or the socket failed.
    /// Reads what is there into `head`, up to `cap`. `Ok(true)` when the peer has half-closed
    /// (what arrived before its FIN still deserves an answer).
    fn read_into(
        stream: &mut Transport,
        buf: &mut [u8],
        head: &mut Vec<u8>,
        cap: usize,
    ) -> io::Result<bool> {
        loop {
            match stream.read(buf) {
                Ok(0) => return Ok(true),
                Ok(n) => {
                    head.extend_from_slice(&buf[..n]);
                    if head.len() >= cap {
                        return Ok(false);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn read_handshake<H: Handler<Data = D>>(&mut self, handler: &mut H, key: usize) -> Next {
        let cap = self.env.config.handshake.max_head_size + self.max_body_any();
        let conn = &mut self.conns[key];
        let Phase::Handshake { head, since } = &mut conn.phase else {
            return Next::Keep;
        };
        let since = *since;
        let eof = match Self::read_into(&mut conn.stream, &mut self.buf, head, cap) {
            Ok(eof) => eof,
            Err(e) => {
                match Transport::tls_failure(&e) {
                    Some((what, detail)) => {
                        info!(peer = %conn.peer(), error = %detail, "TLS handshake failed: {what}");
                    }
                    None => {
                        debug!(peer = %conn.peer(), error = %e, "connection failed during handshake");
                    }
                }
                return Next::Drop;
            }
        };
        let head = std::mem::take(head);
        if head.is_empty() && eof {
            return Next::Drop; // a kept-alive connection closed between requests
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let (req, n) =
            match handshake::parse_request(&head, &mut headers, &self.env.config.handshake) {
                Ok(Status::Complete(req, n)) => (req, n),
                Ok(Status::Partial) if eof => {
                    debug!(peer = %conn.peer(), "connection closed during handshake");
                    return Next::Drop;
                }
                Ok(Status::Partial) => {
                    conn.phase = Phase::Handshake { head, since };
                    return Next::Keep;
                }
                Err(e) => {
                    info!(peer = %conn.peer(), status = e.status(), error = %e, "bad request head");
                    let mut out = Vec::new();
                    handshake::write_rejection(&mut out, &e);
                    return self.respond(key, &out);
                }
            };
        let route = self.sockjs.route(req.path());
        if req.is_websocket() && route.is_none() {
            return self.upgrade(handler, key, &req, &head[n..]);
        }
        // A request with a body: complete first (and within the limits: a SockJS service's
        // sends carry batches of messages, and have a limit of their own).
        let max = match &route {
            Some((service, _)) => self.sockjs.max_send(*service),
            None => self.env.config.max_http_body,
        };
        let (body, used) = match self.request_body(key, &req, &head, n, since, max) {
            Ok(Some(body)) => body,
            Ok(None) => return Next::Keep,
            Err(next) => return next,
        };
        let body = &body[..];
        let rest = &head[n + used..];
        // A peer that half-closed gets its answer, and then the connection ends.
        let keep_alive = req.keeps_alive() && !eof;
        match route {
            Some((service, route)) => self.sockjs_request(
                handler, key, service, route, &req, &head, body, rest, keep_alive,
            ),
            None => self.http(handler, key, &req, body, rest, keep_alive),
        }
    }

    /// The largest request body any request may carry (plain HTTP or SockJS).
    fn max_body_any(&self) -> usize {
        self.env
            .config
            .max_http_body
            .max(self.sockjs.max_send_any())
    }

    /// A request's body once all of it is in `head` (`Ok(None)` while it is still arriving),
    /// with the bytes it took after the head; `Err` with what to do when it is refused. Bodies
    /// come with a `Content-Length` or chunked, up to `max`.
    fn request_body(
        &mut self,
        key: usize,
        req: &Request<'_, '_>,
        head: &[u8],
        n: usize,
        since: u32,
        max: usize,
    ) -> Result<Option<(Vec<u8>, usize)>, Next> {
        let mut out = Vec::new();
        let body = if req.has_token("transfer-encoding", "chunked") {
            handshake::decode_chunked(&head[n..], max)
        } else if req.header("transfer-encoding").is_some() {
            Err(handshake::HandshakeError::Malformed(
                "unsupported Transfer-Encoding",
            ))
        } else {
            match req.content_length() {
                Ok(length) => {
                    let length = length.unwrap_or(0);
                    if length > max {
                        Err(handshake::HandshakeError::BodyTooLarge)
                    } else if head.len() - n < length {
                        Ok(None)
                    } else {
                        Ok(Some((head[n..n + length].to_vec(), length)))
                    }
                }
                Err(e) => Err(e),
            }
        };
        match body {
            Ok(Some(body)) => Ok(Some(body)),
            Ok(None) => {
                // Wait for the rest of the body (the head is parsed again then; it is small).
                self.conns[key].phase = Phase::Handshake {
                    head: head.to_vec(),
                    since,
                };
                Ok(None)
            }
            Err(e) => {
                // The peer's address costs a system call: asked for only on this path.
                info!(peer = %self.conns[key].peer(), error = %e, "request body refused");
                handshake::write_rejection(&mut out, &e);
                Err(self.respond(key, &out))
            }
        }
    }

    fn upgrade<H: Handler<Data = D>>(
        &mut self,
        handler: &mut H,
        key: usize,
        req: &Request<'_, '_>,
        rest: &[u8],
    ) -> Next {
        self.upgrade_as(handler, key, req, rest, None, Kind::WebSocket)
    }

    /// Opens a WebSocket session of `kind` (a SockJS one sends its open frame first).
    fn upgrade_as<H: Handler<Data = D>>(
        &mut self,
        handler: &mut H,
        key: usize,
        req: &Request<'_, '_>,
        rest: &[u8],
        sockjs: Option<(String, Option<crate::sockjs::Transport>)>,
        kind: Kind,
    ) -> Next {
        let peer = self.conns[key].peer();
        let mut out = Vec::new();
        let up = match handshake::validate_upgrade(req, &self.env.config.handshake) {
            Ok(up) => up,
            Err(e) => {
                info!(%peer, status = e.status(), error = %e, "websocket handshake refused");
                handshake::write_rejection(&mut out, &e);
                return self.respond(key, &out);
            }
        };
        let mut upgrading = Upgrading {
            protocol: handshake::select_protocol(
                &self.env.config.handshake.protocols,
                req.protocols(),
            )
            .map(String::from),
            headers: Vec::new(),
            peer: peer.0,
            sockjs,
            deflate: match (&self.env.config.deflate, kind) {
                (Some(config), Kind::WebSocket) => crate::deflate::negotiate::accept(
                    req.headers_named("sec-websocket-extensions"),
                    config,
                ),
                _ => None,
            },
        };
        let data = match handler.on_upgrade(req, &mut upgrading) {
            Ok(data) => data,
            Err(rejection) => {
                info!(%peer, status = rejection.status, reason = %rejection.reason, "upgrade refused by the application");
                let body = format!("{}\n", rejection.reason);
                handshake::write_response(
                    &mut out,
                    rejection.status,
                    &[("Content-Type", "text/plain; charset=utf-8")],
                    body.as_bytes(),
                );
                return self.respond(key, &out);
            }
        };
        let extensions = upgrading.deflate.map(|n| n.header_value());
        let mut extra: Vec<(&str, &str)> = upgrading
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        if let Some(value) = &extensions {
            extra.push(("Sec-WebSocket-Extensions", value));
        }
        handshake::write_accept(&mut out, up.key, upgrading.protocol.as_deref(), &extra);
        self.cork.extend(&out);
        self.next_id += 1;
        let gen = self.conns[key].gen;
        let open = Open {
            rx: Receiver::new(Role::Server, self.env.config.limits.clone()),
            state: SessionState {
                id: self.next_id,
                tx: Sender::server(),
                backlog: Backlog::default(),
                protocol: upgrading.protocol.map(String::into_boxed_str),
                close: None,
                kind,
                flow: OnceCell::new(),
                data,
            },
            stash: rest.to_vec(),
            last_rx: self.clock.tick(self.now),
            close_armed: false,
            awaiting_pong: false,
            paused_output: false,
            paused_gate: false,
            held_input: false,
            congested: false,
        };
        self.conns[key].phase = Phase::Open(open);
        if let (Some(n), Phase::Open(open)) = (upgrading.deflate, &mut self.conns[key].phase) {
            open.rx.enable_deflate(n.client());
            open.state.tx.enable_deflate(n.server());
        }
        debug!(%peer, "websocket open");
        let tag = Tag { key, gen };
        self.timers.pings.arm(self.now, tag);
        self.timers.idles.arm(self.now, tag);
        let Some((open, mut out)) =
            open_parts(&mut self.conns[key], key, &mut self.cork, &self.env)
        else {
            unreachable!("just opened")
        };
        if kind == Kind::SockJsWebSocket {
            let (head, n, _) = open.state.tx.header(crate::frame::OpCode::Text, true, 1);
            crate::connection::Sink::frame(out.cork, &head[..n], crate::sockjs::frame::OPEN, None);
            self.timers.sockjs_beats.arm(self.now, tag);
        }
        handler.on_open(&mut Session {
            state: &mut open.state,
            out: out.reborrow(),
        });
        // Frames that arrived with the request head.
        if !open.stash.is_empty() {
            let mut early = std::mem::take(&mut open.stash);
            let n = early.len();
            Self::dispatch(handler, open, &mut out, &mut early, n);
        }
        self.after_open_io(handler, key, None, false)
    }

    /// A plain HTTP request, complete with its `body`: the handler answers; the connection is
    /// kept for the next request when the client wants it.
    fn http<H: Handler<Data = D>>(
        &mut self,
        handler: &mut H,
        key: usize,
        req: &Request<'_, '_>,
        body: &[u8],
        rest: &[u8],
        keep_alive: bool,
    ) -> Next {
        let peer = self.conns[key].peer();
        let response = handler.on_http_from(peer.0, req, body);
        let headers: Vec<(&str, &str)> = response
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let mut out = Vec::new();
        handshake::write_response_with(
            &mut out,
            response.status,
            &headers,
            &response.body,
            keep_alive,
        );
        debug!(%peer, method = req.method, target = req.target, status = response.status, "http");
        self.answer(key, &out, keep_alive, rest)
    }

    /// Writes a whole response; the connection then waits for its next request (`rest` is
    /// what already came of it) if `keep_alive` and the socket took everything, else lingers
    /// until the peer hangs up.
    fn answer(&mut self, key: usize, bytes: &[u8], keep_alive: bool, rest: &[u8]) -> Next {
        if !keep_alive {
            return self.respond(key, bytes);
        }
        let conn = &mut self.conns[key];
        let mut backlog = Backlog::default();
        self.cork.extend(bytes);
        if self
            .cork
            .flush_into(&mut conn.stream, &mut backlog)
            .is_err()
        {
            return Next::Drop;
        }
        if !backlog.is_empty() {
            conn.phase = Phase::Linger {
                backlog,
                shut: false,
            };
            self.timers.closes.arm(self.now, Tag { key, gen: conn.gen });
            return self.serve_linger(key);
        }
        self.keep_alive(key, rest.to_vec());
        Next::Keep
    }

    /// The connection waits for its next request, `head` holding what already came of it.
    fn keep_alive(&mut self, key: usize, head: Vec<u8>) {
        let conn = &mut self.conns[key];
        let pipelined = !head.is_empty();
        conn.phase = Phase::Handshake {
            head,
            since: self.clock.tick(self.now),
        };
        self.timers
            .handshakes
            .arm(self.now, Tag { key, gen: conn.gen });
        if pipelined {
            self.pending.push(key);
        }
    }

    /// Writes a final HTTP response and lingers until the peer hangs up.
    fn respond(&mut self, key: usize, bytes: &[u8]) -> Next {
        let conn = &mut self.conns[key];
        let mut backlog = Backlog::default();
        self.cork.extend(bytes);
        if self
            .cork
            .flush_into(&mut conn.stream, &mut backlog)
            .is_err()
        {
            return Next::Drop;
        }
        conn.phase = Phase::Linger {
            backlog,
            shut: false,
        };
        self.timers.closes.arm(self.now, Tag { key, gen: conn.gen });
        self.serve_linger(key)
    }

    fn serve_linger(&mut self, key: usize) -> Next {
        let conn = &mut self.conns[key];
        let Phase::Linger { backlog, shut } = &mut conn.phase else {
            return Next::Keep;
        };
        if backlog.flush(&mut conn.stream).is_err() {
            return Next::Drop;
        }
        if !backlog.is_empty() {
            return Next::Keep;
        }
        if conn.stream.wants_write() {
            return Next::Keep;
        }
        if !*shut {
            *shut = true;
            conn.stream.shutdown_write();
        }
        // Discard whatever the peer still sends until it hangs up.
        loop {
            match conn.stream.read(&mut self.buf) {
                Ok(0) => return Next::Drop,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Next::Drop,
            }
        }
    }

    fn serve_open<H: Handler<Data = D>>(
        &mut self,
        handler: &mut H,
        key: usize,
        readable: bool,
        hup: bool,
    ) -> Next {
        let tick = self.clock.tick(self.now);
        let mut eof = false;
        let mut failure = None;
        {
            let Some((open, mut out)) =
                open_parts(&mut self.conns[key], key, &mut self.cork, &self.env)
            else {
                return Next::Keep;
            };
            let mut reads = 0;
            while readable && failure.is_none() && !open.paused() {
                if open.held_input {
                    // Input kept back by a pause goes first, before anything new is read.
                    open.held_input = false;
                    let mut held = std::mem::take(&mut open.stash);
                    let n = held.len();
                    Self::feed(handler, open, &mut out, &mut held, n);
                    continue;
                }
                let carry = open.stash.len();
                if carry == self.buf.len() {
                    // Only a stream handler that uses nothing of a full buffer gets here.
                    failure = Some(io::Error::other(
                        "the stream handler used none of a full read buffer",
                    ));
                    break;
                }
                let drained = match out.socket().read(&mut self.buf[carry..]) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => {
                        // On Linux an edge-triggered socket that filled less than the buffer
                        // is empty: anything arriving later raises a new edge. Stopping here
                        // saves the read that would only return EAGAIN (one syscall per
                        // message at depth 1).
                        let drained =
                            cfg!(target_os = "linux") && !hup && carry + n < self.buf.len();
                        open.last_rx = tick;
                        open.awaiting_pong = false;
                        self.buf[..carry].copy_from_slice(&open.stash);
                        open.stash.clear();
                        Self::feed(handler, open, &mut out, &mut self.buf, carry + n);
                        drained
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                };
                if drained {
                    break;
                }
                reads += 1;
                if reads == READS_PER_TURN {
                    self.pending.push(key);
                    break;
                }
            }
        }
        self.after_open_io(handler, key, failure, eof)
    }

    /// Calls `on_open` for a new stream connection and writes what it sent.
    fn open_stream<H: Handler<Data = D>>(&mut self, handler: &mut H, key: usize) {
        if let Some((open, out)) = open_parts(&mut self.conns[key], key, &mut self.cork, &self.env)
        {
            handler.on_open(&mut Session {
                state: &mut open.state,
                out,
            });
        }
        self.settle(handler, key);
    }

    /// Hands `buf[..len]` to the session: a stream's bytes to `on_stream_data`, a WebSocket's
    /// to the core and its events to the handler. Stops early if reading must pause; what is
    /// left (or unused) is kept in the stash.
    fn feed<H: Handler<Data = D>>(
        handler: &mut H,
        open: &mut Open<D>,
        out: &mut Out<'_>,
        buf: &mut [u8],
        len: usize,
    ) {
        // Gates passed by other work (commands, timers) must not pause this session.
        gate::forget();
        if open.state.kind != Kind::Stream {
            return Self::dispatch(handler, open, out, buf, len);
        }
        let used = if open.state.tx.is_close_sent() {
            len
        } else {
            let used = handler.on_stream_data(
                &mut Session {
                    state: &mut open.state,
                    out: out.reborrow(),
                },
                &buf[..len],
            );
            Self::must_pause(open, out);
            used.min(len)
        };
        open.stash.extend_from_slice(&buf[used..len]);
        open.held_input = used < len && open.paused();
    }

    /// Decides, between messages, whether reading must pause: the session's queue is over half
    /// its cap (so that what one more read makes it send still fits under the cap), or it fed
    /// a closed gate.
    fn must_pause(open: &mut Open<D>, out: &Out<'_>) -> bool {
        let counters = out.env.counters();
        if !open.paused_output
            && open.state.backlog.len() + out.cork.len() > out.env.config.max_backpressure / 2
        {
            open.paused_output = true;
            Counters::bump(&counters.read_pauses);
        }
        if gate::passed_closed() && gate::hold(&out.env.inbox, out.tag) && !open.paused_gate {
            open.paused_gate = true;
            Counters::bump(&counters.gate_pauses);
        }
        open.paused()
    }

    /// Runs the core over `buf[..len]`, calling the handler for each event; keeps the tail
    /// (all of what is left when reading must pause).
    fn dispatch<H: Handler<Data = D>>(
        handler: &mut H,
        open: &mut Open<D>,
        out: &mut Out<'_>,
        buf: &mut [u8],
        len: usize,
    ) {
        let data = &mut buf[..len];
        let mut pos = 0;
        loop {
            let Open {
                rx, state, stash, ..
            } = &mut *open;
            let result = {
                let mut pool = out.env.deflate.borrow_mut();
                rx.read_with(&mut data[pos..], &mut state.tx, out.cork, &mut pool)
            };
            match result {
                Ok(Read { consumed, event }) => {
                    pos += consumed;
                    let Some(event) = event else {
                        if consumed == 0 {
                            stash.extend_from_slice(&data[pos..]);
                            return;
                        }
                        continue;
                    };
                    let mut session = Session {
                        state: &mut *state,
                        out: out.reborrow(),
                    };
                    match event {
                        Event::Text(text) if session.state.kind == Kind::SockJsWebSocket => {
                            Self::sockjs_messages(handler, &mut session, text)
                        }
                        Event::Binary(_) if session.state.kind == Kind::SockJsWebSocket => {
                            let _ = session.close(1002, "SockJS carries text messages only");
                        }
                        Event::Text(text) => handler.on_message(&mut session, Message::Text(text)),
                        Event::Binary(bytes) => {
                            handler.on_message(&mut session, Message::Binary(bytes))
                        }
                        Event::Pong(payload) => handler.on_pong(&mut session, payload),
                        Event::Ping(_) => {}
                        Event::Close(frame) => {
                            let (c, reason) =
                                frame.map_or((code::NO_STATUS, ""), |f| (f.code, f.reason));
                            state
                                .close
                                .get_or_insert_with(|| Box::new((c, reason.into())));
                        }
                    }
                }
                Err(Failure { error, consumed }) => {
                    pos += consumed;
                    info!(code = error.close_code(), %error, "closing websocket: protocol error");
                    state.close.get_or_insert_with(|| {
                        Box::new((error.close_code(), error.to_string().into()))
                    });
                    let mut session = Session {
                        state: &mut *state,
                        out: out.reborrow(),
                    };
                    handler.on_error(&mut session, &SessionError::Protocol(error));
                }
            }
            if Self::must_pause(open, out) {
                open.stash.extend_from_slice(&data[pos..]);
                open.held_input = pos < len;
                return;
            }
        }
    }

    /// A text message on a SockJS WebSocket: a JSON array of messages (or one string), each
    /// handed to the handler; an empty one is ignored, a broken one ends the session.
    fn sockjs_messages<H: Handler<Data = D>>(
        handler: &mut H,
        session: &mut Session<'_, D>,
        text: &str,
    ) {
        match crate::sockjs::json::parse_messages(text.as_bytes(), true) {
            Ok(messages) => {
                for m in &messages {
                    if session.is_closing() {
                        break;
                    }
                    handler.on_message(session, Message::Text(m));
                }
            }
            Err(crate::sockjs::json::PayloadError::Empty) => {}
            Err(e) => {
                info!(error = %e, "closing SockJS websocket: broken payload");
                let _ = session.close(1002, &e.to_string());
            }
        }
    }

    /// Flushes, then decides whether the session is over.
    fn after_open_io<H: Handler<Data = D>>(
        &mut self,
        handler: &mut H,
        key: usize,
        failure: Option<io::Error>,
        eof: bool,
    ) -> Next {
        let write_error = self.flush_session(handler, key).err();
        let conn = &mut self.conns[key];
        let Phase::Open(open) = &mut conn.phase else {
            return Next::Keep;
        };
        if let Some(e) = failure.or(write_error) {
            match Transport::tls_failure(&e) {
                Some((what, detail)) => {
                    info!(peer = %conn.peer(), error = %detail, "TLS failed: {what}")
                }
                None => debug!(peer = %conn.peer(), error = %e, "socket error"),
            }
            return self.end(handler, key, Some(SessionError::Io(e)));
        }
        // A stream has no close handshake: once our side is closing and written, it is over.
        let closed_both = (open.state.kind == Kind::Stream || open.rx.is_closed())
            && open.state.tx.is_close_sent();
        if closed_both && open.state.backlog.is_empty() && !conn.stream.wants_write() {
            // Close handshake complete and our close is written: the server drops TCP first.
            return self.end(handler, key, None);
        }
        if eof {
            let ended = open.rx.is_closed() || open.state.kind == Kind::Stream;
            let error = (!ended).then_some(SessionError::Dropped);
            return self.end(handler, key, error);
        }
        if open.state.tx.is_close_sent() && !open.close_armed {
            open.close_armed = true;
            self.timers.closes.arm(self.now, Tag { key, gen: conn.gen });
        }
        Next::Keep
    }

    /// After work on a session: reports drops (`on_overflow`), writes the cork after the
    /// backlog and pays the drains that are due (see [`flush_and_drain`]), reports a queue
    /// grown over half the cap (`on_backpressure`), and resumes reading once the queue is down
    /// to a quarter. A session still owed a drain is served again next turn.
    fn flush_session<H: Handler<Data = D>>(
        &mut self,
        handler: &mut H,
        key: usize,
    ) -> io::Result<()> {
        let Some((open, mut out)) =
            open_parts(&mut self.conns[key], key, &mut self.cork, &self.env)
        else {
            return Ok(());
        };
        let cap = out.env.config.max_backpressure;
        let dropped = open.state.backlog.take_dropped();
        if dropped > 0 {
            let closing = open.state.tx.is_close_sent();
            handler.on_overflow(
                &mut Session {
                    state: &mut open.state,
                    out: out.reborrow(),
                },
                dropped,
            );
            if !closing && open.state.tx.is_close_sent() {
                // The application let the session go for it (a slow consumer).
                Counters::bump(&out.env.counters().overflow_closes);
            }
        }
        let mut session = Draining { handler, open, out };
        let mut again = flush_and_drain(&mut session)?;
        if !session.open.congested && session.backlog().len() > cap / 2 {
            session.open.congested = true;
            session.backlog_mut().owe_drain();
            session.handler.on_backpressure(&mut Session {
                state: &mut session.open.state,
                out: session.out.reborrow(),
            });
            again = flush_and_drain(&mut session)?;
        }
        let Draining { open, out, .. } = session;
        out.env.counters().note_queued(open.state.backlog.len());
        if let Some(flow) = open.state.flow.get() {
            match open.state.tx.is_close_sent() {
                // Closing: it takes no more messages, so nobody waits for it.
                true => flow.end(),
                false => flow.settled(open.state.backlog.len()),
            }
        }
        let mut read = false;
        if open.paused_output && open.state.backlog.len() <= cap / 4 {
            open.paused_output = false;
            read = !open.paused_gate;
        }
        if again || read {
            self.pending.push(key);
        }
        Ok(())
    }

    /// A producer on another thread found that what this session feeds is behind: stop
    /// reading it until `gate` opens (nothing if it is open already).
    fn hold_gate(&mut self, tag: Tag, gate: &Arc<gate::Gate>) {
        if !self.is_open(tag) {
            return;
        }
        if let Phase::Open(open) = &mut self.conns[tag.key].phase {
            if !open.paused_gate && gate.wait(&self.env.inbox, tag) {
                open.paused_gate = true;
                Counters::bump(&self.env.counters().gate_pauses);
            }
        }
    }

    /// A gate the session waited for opened: read it again (unless its own queue still holds
    /// it back).
    fn resume_gate(&mut self, tag: Tag) {
        if !self.is_open(tag) {
            return;
        }
        if let Phase::Open(open) = &mut self.conns[tag.key].phase {
            open.paused_gate = false;
            if !open.paused_output {
                self.pending.push(tag.key);
            }
        }
    }

    /// Flushes a session after work done outside a read (commands, timers); drops it if over.
    fn settle<H: Handler<Data = D>>(&mut self, handler: &mut H, key: usize) {
        if !self.conns.contains(key) {
            return;
        }
        if let Next::Drop = self.after_open_io(handler, key, None, false) {
            self.remove(key);
        }
    }

    /// Ends a session: `on_error` if it ended badly, then `on_close`; the socket is dropped.
    fn end<H: Handler<Data = D>>(
        &mut self,
        handler: &mut H,
        key: usize,
        error: Option<SessionError>,
    ) -> Next {
        let peer = self.conns[key].peer();
        let Some((open, mut out)) =
            open_parts(&mut self.conns[key], key, &mut self.cork, &self.env)
        else {
            return Next::Drop;
        };
        if let Some(error) = &error {
            if !matches!(error, SessionError::Protocol(_)) {
                debug!(%peer, %error, "session ended");
            }
            handler.on_error(
                &mut Session {
                    state: &mut open.state,
                    out: out.reborrow(),
                },
                error,
            );
        }
        if let Some(flow) = open.state.flow.get() {
            flow.end();
        }
        let (c, reason) = match open.state.close.as_deref() {
            Some((c, reason)) => (*c, reason.clone()),
            None => (code::ABNORMAL, Box::from("")),
        };
        handler.on_close(
            &mut Session {
                state: &mut open.state,
                out,
            },
            c,
            &reason,
        );
        self.cork.discard();
        Next::Drop
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    /// An idle connection costs its slab slot and nothing else (no buffers are held), so this
    /// size is the per-connection memory the benchmarks' 256-byte target is about.
    #[test]
    fn an_idle_connection_stays_small() {
        use std::mem::size_of;
        assert!(
            size_of::<Conn<()>>() <= 232,
            "Conn<()> is {} bytes",
            size_of::<Conn<()>>()
        );
        assert!(
            size_of::<Receiver>() <= 64,
            "Receiver is {} bytes",
            size_of::<Receiver>()
        );
    }
}
