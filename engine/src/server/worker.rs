//! One event loop: accept, handshake, read into the shared buffer, dispatch, cork, write.
//!
//! mio is edge-triggered: every readable event is drained until `WouldBlock` — except that a
//! connection which keeps delivering is cut off after [`READS_PER_TURN`] reads and put on the
//! `pending` list, so one fast peer cannot starve the rest. Sockets are registered once for
//! both readable and writable; a writable edge only arrives after a write would have blocked,
//! which is exactly when the backlog needs draining.
//!
//! Connection phases:
//!
//! ```text
//!  accept ─▶ Handshake ──upgrade accepted──▶ Open ──both closes exchanged──▶ dropped
//!               │                              │ EOF / I/O error / close deadline ─▶ dropped
//!               └─HTTP answered / refused──▶ Linger ──EOF or close deadline──▶ dropped
//! ```

use std::io::{self, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener as StdListener};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use tracing::{debug, info, warn};

use super::handler::{Handler, Message, Session, SessionError, SessionState, Upgrading};
use super::out::{Backlog, Cork};
use super::timers::{Deadlines, Tag};
use super::{ServerConfig, Shared};
use crate::close::code;
use crate::connection::{Event, Failure, Read, Receiver, Role, Sender};
use crate::handshake::{self, Request, MAX_HEADERS};
use crate::Status;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
/// Reads of one connection per loop turn before others get their go.
const READS_PER_TURN: usize = 16;

struct Open<D> {
    rx: Receiver,
    state: SessionState<D>,
    /// Unconsumed bytes of an incomplete frame header or control frame (at most 139).
    stash: Vec<u8>,
    close: Option<(u16, Box<str>)>,
    close_armed: bool,
}

// Most connections are `Open`; boxing it would add an allocation each without saving memory.
#[allow(clippy::large_enum_variant)]
enum Phase<D> {
    Handshake {
        head: Vec<u8>,
    },
    Open(Open<D>),
    /// A response was written; wait for the peer to hang up after reading it.
    Linger {
        backlog: Backlog,
        shut: bool,
    },
}

struct Conn<D> {
    stream: TcpStream,
    peer: SocketAddr,
    gen: u32,
    phase: Phase<D>,
}

/// What to do with a connection after serving an event.
enum Next {
    Keep,
    Drop,
}

pub(crate) struct Worker {
    index: usize,
    poll: Poll,
    listener: Option<TcpListener>,
    config: Arc<ServerConfig>,
    shared: Arc<Shared>,
}

/// The loop's state, split from the handler so both can be borrowed at once.
struct Loop<D> {
    conns: Slab<Conn<D>>,
    buf: Box<[u8]>,
    cork: Cork,
    config: Arc<ServerConfig>,
    handshakes: Deadlines,
    closes: Deadlines,
    pending: Vec<usize>,
    next_id: u64,
    next_gen: u32,
}

impl Worker {
    pub fn new(
        index: usize,
        listener: StdListener,
        config: Arc<ServerConfig>,
        shared: Arc<Shared>,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::from_std(listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        shared
            .wakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(waker);
        Ok(Worker {
            index,
            poll,
            listener: Some(listener),
            config,
            shared,
        })
    }

    pub fn run<H: Handler>(mut self, mut handler: H) -> io::Result<()> {
        let mut lp = Loop::<H::Data> {
            conns: Slab::new(),
            buf: vec![0; self.config.read_buffer_size.max(4096)].into_boxed_slice(),
            cork: Cork::default(),
            handshakes: Deadlines::new(self.config.handshake_timeout),
            closes: Deadlines::new(self.config.close_timeout),
            config: self.config.clone(),
            pending: Vec::new(),
            next_id: (self.index as u64) << 48,
            next_gen: 0,
        };
        let mut events = Events::with_capacity(1024);
        let mut stop_at: Option<Instant> = None;
        loop {
            if self.shared.stopping.load(Ordering::SeqCst) && stop_at.is_none() {
                stop_at = Some(Instant::now() + self.config.shutdown_timeout);
                self.listener = None;
                lp.begin_shutdown(&mut handler, stop_at.unwrap_or_else(Instant::now));
            }
            if let Some(at) = stop_at {
                if lp.conns.is_empty() || Instant::now() >= at {
                    lp.abort_all(&mut handler);
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
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(&mut lp),
                    WAKER => {}
                    Token(key) => {
                        let readable =
                            event.is_readable() || event.is_read_closed() || event.is_error();
                        let writable = event.is_writable() || event.is_write_closed();
                        lp.serve(&mut handler, key, readable, writable);
                    }
                }
            }
            for key in std::mem::take(&mut lp.pending) {
                lp.serve(&mut handler, key, true, false);
            }
            lp.expire(&mut handler, Instant::now());
        }
    }

    fn accept<D>(&mut self, lp: &mut Loop<D>) {
        let Some(listener) = self.listener.as_ref() else {
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
            if lp.conns.len() >= lp.config.max_connections {
                info!(%peer, "refusing connection: at max_connections");
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
            let entry = lp.conns.vacant_entry();
            let key = entry.key();
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                Token(key),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                warn!(error = %e, "register failed");
                continue;
            }
            lp.next_gen = lp.next_gen.wrapping_add(1);
            let gen = lp.next_gen;
            entry.insert(Conn {
                stream,
                peer,
                gen,
                phase: Phase::Handshake { head: Vec::new() },
            });
            lp.handshakes.arm(Instant::now(), Tag { key, gen });
        }
    }
}

impl<D> Loop<D> {
    fn timeout(&self, stop_at: Option<Instant>) -> Option<Duration> {
        if !self.pending.is_empty() {
            return Some(Duration::ZERO);
        }
        let next = [self.handshakes.next(), self.closes.next(), stop_at]
            .into_iter()
            .flatten()
            .min()?;
        Some(next.saturating_duration_since(Instant::now()) + Duration::from_millis(1))
    }

    fn serve<H: Handler<Data = D>>(
        &mut self,
        handler: &mut H,
        key: usize,
        readable: bool,
        writable: bool,
    ) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let next = match conn.phase {
            Phase::Handshake { .. } if readable => self.read_handshake(handler, key),
            Phase::Handshake { .. } => Next::Keep,
            Phase::Open(_) => self.serve_open(handler, key, readable, writable),
            Phase::Linger { .. } => self.serve_linger(key),
        };
        if let Next::Drop = next {
            self.conns.remove(key);
        }
    }

    /// Reads what is there into `head`. `Err` when the peer hung up or the socket failed.
    fn read_into(
        stream: &mut TcpStream,
        buf: &mut [u8],
        head: &mut Vec<u8>,
        cap: usize,
    ) -> io::Result<bool> {
        loop {
            match stream.read(buf) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    head.extend_from_slice(&buf[..n]);
                    if head.len() >= cap {
                        return Ok(true);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn read_handshake<H: Handler<Data = D>>(&mut self, handler: &mut H, key: usize) -> Next {
        let conn = &mut self.conns[key];
        let Phase::Handshake { head } = &mut conn.phase else {
            return Next::Keep;
        };
        let cap = self.config.handshake.max_head_size + self.config.max_http_body;
        if let Err(e) = Self::read_into(&mut conn.stream, &mut self.buf, head, cap) {
            debug!(peer = %conn.peer, error = %e, "connection closed during handshake");
            return Next::Drop;
        }
        let head = std::mem::take(head);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let (req, n) = match handshake::parse_request(&head, &mut headers, &self.config.handshake) {
            Ok(Status::Complete(req, n)) => (req, n),
            Ok(Status::Partial) => {
                conn.phase = Phase::Handshake { head };
                return Next::Keep;
            }
            Err(e) => {
                info!(peer = %conn.peer, status = e.status(), error = %e, "bad request head");
                let mut out = Vec::new();
                handshake::write_rejection(&mut out, &e);
                return self.respond(key, &out);
            }
        };
        if req.is_websocket() {
            return self.upgrade(handler, key, &req, &head[n..]);
        }
        self.http(handler, key, &req, &head, n)
    }

    fn upgrade<H: Handler<Data = D>>(
        &mut self,
        handler: &mut H,
        key: usize,
        req: &Request<'_, '_>,
        rest: &[u8],
    ) -> Next {
        let peer = self.conns[key].peer;
        let mut out = Vec::new();
        let up = match handshake::validate_upgrade(req, &self.config.handshake) {
            Ok(up) => up,
            Err(e) => {
                info!(%peer, status = e.status(), error = %e, "websocket handshake refused");
                handshake::write_rejection(&mut out, &e);
                return self.respond(key, &out);
            }
        };
        let mut upgrading = Upgrading {
            protocol: handshake::select_protocol(&self.config.handshake.protocols, req.protocols())
                .map(String::from),
            headers: Vec::new(),
            peer: Some(peer),
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
        let extra: Vec<(&str, &str)> = upgrading
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        handshake::write_accept(&mut out, up.key, upgrading.protocol.as_deref(), &extra);
        self.cork.extend(&out);
        self.next_id += 1;
        let open = Open {
            rx: Receiver::new(Role::Server, self.config.limits.clone()),
            state: SessionState {
                id: self.next_id,
                tx: Sender::server(),
                backlog: Backlog::default(),
                protocol: upgrading.protocol.map(String::into_boxed_str),
                data,
            },
            stash: rest.to_vec(),
            close: None,
            close_armed: false,
        };
        self.conns[key].phase = Phase::Open(open);
        debug!(%peer, "websocket open");
        let Phase::Open(open) = &mut self.conns[key].phase else {
            unreachable!()
        };
        handler.on_open(&mut Session {
            state: &mut open.state,
            cork: &mut self.cork,
        });
        // Frames that arrived with the request head.
        if !open.stash.is_empty() {
            let mut early = std::mem::take(&mut open.stash);
            let n = early.len();
            Self::dispatch(handler, open, &mut self.cork, &mut early, n);
        }
        self.after_open_io(handler, key, None, false)
    }

    fn http<H: Handler<Data = D>>(
        &mut self,
        handler: &mut H,
        key: usize,
        req: &Request<'_, '_>,
        head: &[u8],
        n: usize,
    ) -> Next {
        let peer = self.conns[key].peer;
        let mut out = Vec::new();
        if req.header("transfer-encoding").is_some() {
            handshake::write_response(
                &mut out,
                501,
                &[],
                b"chunked request bodies are not supported\n",
            );
            return self.respond(key, &out);
        }
        let length = match req.content_length() {
            Ok(length) => length.unwrap_or(0),
            Err(e) => {
                handshake::write_rejection(&mut out, &e);
                return self.respond(key, &out);
            }
        };
        if length > self.config.max_http_body {
            info!(%peer, length, "request body too large");
            handshake::write_response(&mut out, 413, &[], b"request body too large\n");
            return self.respond(key, &out);
        }
        if head.len() - n < length {
            // Wait for the rest of the body (the head is parsed again then; it is small).
            self.conns[key].phase = Phase::Handshake {
                head: head.to_vec(),
            };
            return Next::Keep;
        }
        let response = handler.on_http(req, &head[n..n + length]);
        let headers: Vec<(&str, &str)> = response
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        handshake::write_response(&mut out, response.status, &headers, &response.body);
        debug!(%peer, method = req.method, target = req.target, status = response.status, "http");
        self.respond(key, &out)
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
        self.closes.arm(Instant::now(), Tag { key, gen: conn.gen });
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
        if !*shut {
            *shut = true;
            let _ = conn.stream.shutdown(Shutdown::Write);
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
        _writable: bool,
    ) -> Next {
        let mut eof = false;
        let mut failure = None;
        if readable {
            let conn = &mut self.conns[key];
            let Phase::Open(open) = &mut conn.phase else {
                return Next::Keep;
            };
            let mut reads = 0;
            loop {
                let carry = open.stash.len();
                match conn.stream.read(&mut self.buf[carry..]) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => {
                        self.buf[..carry].copy_from_slice(&open.stash);
                        open.stash.clear();
                        Self::dispatch(handler, open, &mut self.cork, &mut self.buf, carry + n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
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

    /// Runs the core over `buf[..len]`, calling the handler for each event; keeps the tail.
    fn dispatch<H: Handler<Data = D>>(
        handler: &mut H,
        open: &mut Open<D>,
        cork: &mut Cork,
        buf: &mut [u8],
        len: usize,
    ) {
        let Open {
            rx,
            state,
            stash,
            close,
            ..
        } = open;
        let data = &mut buf[..len];
        let mut pos = 0;
        loop {
            match rx.read(&mut data[pos..], &mut state.tx, cork) {
                Ok(Read { consumed, event }) => {
                    pos += consumed;
                    let Some(event) = event else {
                        if consumed == 0 {
                            break;
                        }
                        continue;
                    };
                    let mut session = Session {
                        state: &mut *state,
                        cork: &mut *cork,
                    };
                    match event {
                        Event::Text(text) => handler.on_message(&mut session, Message::Text(text)),
                        Event::Binary(bytes) => {
                            handler.on_message(&mut session, Message::Binary(bytes))
                        }
                        Event::Pong(payload) => handler.on_pong(&mut session, payload),
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
                    info!(code = error.close_code(), %error, "closing websocket: protocol error");
                    close.get_or_insert_with(|| (error.close_code(), error.to_string().into()));
                    let mut session = Session {
                        state: &mut *state,
                        cork: &mut *cork,
                    };
                    handler.on_error(&mut session, &SessionError::Protocol(error));
                }
            }
        }
        stash.extend_from_slice(&data[pos..]);
    }

    /// Flushes, then decides whether the session is over.
    fn after_open_io<H: Handler<Data = D>>(
        &mut self,
        handler: &mut H,
        key: usize,
        failure: Option<io::Error>,
        eof: bool,
    ) -> Next {
        let conn = &mut self.conns[key];
        let Phase::Open(open) = &mut conn.phase else {
            return Next::Keep;
        };
        let write_error = self
            .cork
            .flush_into(&mut conn.stream, &mut open.state.backlog)
            .err();
        if let Some(e) = failure.or(write_error) {
            debug!(peer = %conn.peer, error = %e, "socket error");
            return self.end(handler, key, Some(SessionError::Io(e)));
        }
        let open_ref = match &mut self.conns[key].phase {
            Phase::Open(open) => open,
            _ => return Next::Keep,
        };
        let closed_both = open_ref.rx.is_closed() && open_ref.state.tx.is_close_sent();
        if closed_both && open_ref.state.backlog.is_empty() {
            // Close handshake complete and our close is written: the server drops TCP first.
            return self.end(handler, key, None);
        }
        if eof {
            let error = if open_ref.rx.is_closed() {
                None
            } else {
                Some(SessionError::Dropped)
            };
            return self.end(handler, key, error);
        }
        if open_ref.state.tx.is_close_sent() && !open_ref.close_armed {
            open_ref.close_armed = true;
            let gen = self.conns[key].gen;
            self.closes.arm(Instant::now(), Tag { key, gen });
        }
        Next::Keep
    }

    /// Ends a session: `on_error` if it ended badly, then `on_close`; the socket is dropped.
    fn end<H: Handler<Data = D>>(
        &mut self,
        handler: &mut H,
        key: usize,
        error: Option<SessionError>,
    ) -> Next {
        let conn = &mut self.conns[key];
        let Phase::Open(open) = &mut conn.phase else {
            return Next::Drop;
        };
        let mut session = Session {
            state: &mut open.state,
            cork: &mut self.cork,
        };
        if let Some(error) = &error {
            if !matches!(error, SessionError::Protocol(_)) {
                debug!(peer = %conn.peer, %error, "session ended");
            }
            handler.on_error(&mut session, error);
        }
        let (c, reason) = match (&open.close, &error) {
            (Some((c, reason)), _) => (*c, reason.clone()),
            (None, _) => (code::ABNORMAL, Box::from("")),
        };
        let mut session = Session {
            state: &mut open.state,
            cork: &mut self.cork,
        };
        handler.on_close(&mut session, c, &reason);
        self.cork.discard();
        Next::Drop
    }

    fn expire<H: Handler<Data = D>>(&mut self, handler: &mut H, now: Instant) {
        while let Some(tag) = self.handshakes.pop_expired(now) {
            if let Some(conn) = self.conns.get(tag.key) {
                if conn.gen == tag.gen && matches!(conn.phase, Phase::Handshake { .. }) {
                    info!(peer = %conn.peer, "handshake timed out");
                    self.conns.remove(tag.key);
                }
            }
        }
        while let Some(tag) = self.closes.pop_expired(now) {
            let Some(conn) = self.conns.get(tag.key) else {
                continue;
            };
            if conn.gen != tag.gen {
                continue;
            }
            match conn.phase {
                Phase::Open(_) => {
                    info!(peer = %conn.peer, "close handshake timed out");
                    if let Next::Drop = self.end(handler, tag.key, Some(SessionError::CloseTimeout))
                    {
                        self.conns.remove(tag.key);
                    }
                }
                Phase::Linger { .. } => {
                    self.conns.remove(tag.key);
                }
                Phase::Handshake { .. } => {}
            }
        }
    }

    /// Stops new work: refuse handshakes in progress, send 1001 to every session.
    fn begin_shutdown<H: Handler<Data = D>>(&mut self, handler: &mut H, deadline: Instant) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let conn = &mut self.conns[key];
            let gen = conn.gen;
            match &mut conn.phase {
                Phase::Open(open) => {
                    let mut session = Session {
                        state: &mut open.state,
                        cork: &mut self.cork,
                    };
                    let _ = session.close(code::GOING_AWAY, "server shutting down");
                    if let Next::Drop = self.after_open_io(handler, key, None, false) {
                        self.conns.remove(key);
                    } else {
                        self.closes.arm_at(deadline, Tag { key, gen });
                    }
                }
                Phase::Handshake { .. } => {
                    self.conns.remove(key);
                }
                Phase::Linger { .. } => {}
            }
        }
    }

    /// At the end of a shutdown: whatever is left is dropped.
    fn abort_all<H: Handler<Data = D>>(&mut self, handler: &mut H) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            if let Phase::Open(_) = self.conns[key].phase {
                let _ = self.end(handler, key, Some(SessionError::CloseTimeout));
            }
            self.conns.remove(key);
        }
    }
}
