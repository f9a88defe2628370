//! The loop's state apart from the poll: the connections in their phases, the deadlines, the
//! read buffer, and how each event, tick and flush is served.

use std::io::{self, Read as _};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use slab::Slab;
use socket2::{Domain, Protocol, Socket, Type};

use super::conn::{dispatch, ClientConn, Env, Output};
use super::{ClientHandler, ClientId, Control, LoopConfig, Target, READS_PER_TURN};
use crate::client::{io_error, os_random, ClientError};
use crate::close::code;
use crate::connection::{Connection, MaskKeys};
use crate::deflate::Pool;
use crate::driver::out::{flush_and_drain, Backlog, Drains};
use crate::driver::transport::Transport;
use crate::driver::Deadlines;
use crate::error::ProtocolError;
use crate::handshake::client::{make_key, parse_response_with, write_request, RequestParts};
use crate::Status;

/// Whether a read that leaves room in the buffer proves the socket drained (see the module
/// docs of [`super`]).
const SHORT_READ_DRAINS: bool = cfg!(target_os = "linux");

/// An open connection's protocol state.
#[derive(Debug)]
pub(super) struct Open {
    pub(super) conn: Connection,
    /// Unconsumed bytes of an incomplete frame header or control frame (at most 139).
    pub(super) stash: Vec<u8>,
    pub(super) protocol: Option<Box<str>>,
    /// What `on_close` reports, once known: the server's close, or ours when we failed.
    pub(super) close: Option<(u16, Box<str>)>,
    /// The server broke the protocol (our close with its code is out).
    pub(super) failure: Option<ProtocolError>,
    pub(super) close_armed: bool,
}

// Most slots are `Open`; boxing it would add an allocation each without saving memory.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(super) enum Phase {
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
pub(super) struct Slot<D> {
    stream: Transport,
    gen: u32,
    phase: Phase,
    out: Output,
    /// Listed in `Core::dirty` for this turn's flush.
    dirty: bool,
    data: D,
}

/// An open connection and the handler, as the drain rule sees them.
struct Draining<'a, H: ClientHandler> {
    handler: &'a mut H,
    id: ClientId,
    stream: &'a mut Transport,
    open: &'a mut Open,
    out: &'a mut Output,
    data: &'a mut H::Data,
    env: Env,
    pool: &'a mut Pool,
}

impl<H: ClientHandler> Drains for Draining<'_, H> {
    fn flush(&mut self) -> io::Result<()> {
        self.out.cork.flush_into(self.stream, &mut self.out.backlog)
    }

    fn backlog(&self) -> &Backlog {
        &self.out.backlog
    }

    fn backlog_mut(&mut self) -> &mut Backlog {
        &mut self.out.backlog
    }

    fn on_drain(&mut self) {
        self.handler.on_drain(&mut ClientConn {
            id: self.id,
            stream: self.stream,
            tx: &mut self.open.conn.tx,
            out: self.out,
            data: self.data,
            protocol: self.open.protocol.as_deref(),
            env: self.env,
            pool: self.pool,
        });
    }
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
pub(super) struct Ready {
    pub(super) readable: bool,
    /// The peer hung up or the socket failed: read to the end.
    pub(super) hup: bool,
}

/// The loop's state apart from the poll: what callbacks may act on through [`Control`].
#[derive(Debug)]
pub(super) struct Core<D> {
    pub(super) registry: Registry,
    pub(super) slots: Slab<Slot<D>>,
    /// Connections to flush at the end of the turn.
    pub(super) dirty: Vec<ClientId>,
    /// Connections cut off at `READS_PER_TURN`, to be read again next turn.
    pub(super) pending: Vec<ClientId>,
    pub(super) buf: Box<[u8]>,
    pub(super) config: LoopConfig,
    pub(super) handshakes: Deadlines,
    pub(super) closes: Deadlines,
    pub(super) next_gen: u32,
    pub(super) now: Instant,
    pub(super) next_tick: Option<Instant>,
    pub(super) stopped: bool,
    pub(super) request: Vec<u8>,
    /// permessage-deflate's shared compressors and lent inflaters.
    pub(super) pool: Pool,
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
    pub(super) fn new(config: LoopConfig, registry: Registry) -> Self {
        let now = Instant::now();
        Core {
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
            pool: match &config.client.deflate {
                Some(d) => Pool::new(d),
                None => Pool::default(),
            },
            config,
        }
    }

    pub(super) fn get(&self, id: ClientId) -> Option<&Slot<D>> {
        self.slots.get(id.key).filter(|s| s.gen == id.gen)
    }

    fn id(&self, key: usize) -> Option<ClientId> {
        self.slots.get(key).map(|s| ClientId { key, gen: s.gen })
    }

    pub(super) fn connect(&mut self, target: &Target, data: D) -> io::Result<ClientId> {
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
        let mut stream = self.secure(target, TcpStream::from_std(socket.into()))?;
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
            deflate: client.deflate.as_ref(),
        };
        self.request.clear();
        write_request(&mut self.request, &parts, &ws_key);
        let mut out = Output::default();
        out.cork.extend(&self.request);
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

    fn env(&self) -> Env {
        Env {
            max_backpressure: self.config.max_backpressure,
            now: self.now,
        }
    }

    /// Lists the slot for this turn's flush.
    fn mark(dirty: &mut Vec<ClientId>, slot: &mut Slot<D>, id: ClientId) {
        if !slot.dirty {
            slot.dirty = true;
            dirty.push(id);
        }
    }

    pub(super) fn conn(&mut self, id: ClientId) -> Option<ClientConn<'_, D>> {
        let env = self.env();
        let slot = self.slots.get_mut(id.key).filter(|s| s.gen == id.gen)?;
        if !matches!(slot.phase, Phase::Open(_)) {
            return None;
        }
        Self::mark(&mut self.dirty, slot, id);
        let Slot {
            stream,
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
            stream,
            tx: &mut open.conn.tx,
            out,
            data,
            protocol: open.protocol.as_deref(),
            env,
            pool: &mut self.pool,
        })
    }

    pub(super) fn each_open(&mut self, mut f: impl FnMut(&mut ClientConn<'_, D>)) {
        let env = self.env();
        for (key, slot) in self.slots.iter_mut() {
            let id = ClientId { key, gen: slot.gen };
            if !matches!(slot.phase, Phase::Open(_)) {
                continue;
            }
            Self::mark(&mut self.dirty, slot, id);
            let Slot {
                stream,
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
                stream,
                tx: &mut open.conn.tx,
                out,
                data,
                protocol: open.protocol.as_deref(),
                env,
                pool: &mut self.pool,
            });
        }
    }

    pub(super) fn timeout(&self, limit: Option<Duration>) -> Option<Duration> {
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

    /// The stream `target` asks for: TLS over `tcp` for a `wss://` target (feature `tls`).
    fn secure(&self, target: &Target, tcp: TcpStream) -> io::Result<Transport> {
        if !target.secure {
            return Ok(Transport::Plain(tcp));
        }
        #[cfg(feature = "tls")]
        {
            let invalid = |e: crate::tls::TlsError| io::Error::new(io::ErrorKind::InvalidInput, e);
            let tls = match &self.config.client.tls {
                Some(tls) => tls.clone(),
                None => crate::tls::ClientTls::platform_shared().map_err(invalid)?,
            };
            let session = tls.connect(target.server_name()).map_err(invalid)?;
            Ok(Transport::Tls(Box::new(
                crate::tls::stream::TlsStream::new(tcp, session),
            )))
        }
        #[cfg(not(feature = "tls"))]
        {
            drop(tcp);
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "wss:// needs the engine's feature `tls`",
            ))
        }
    }

    pub(super) fn serve<H: ClientHandler<Data = D>>(
        &mut self,
        handler: &mut H,
        key: usize,
        ready: Ready,
    ) {
        let Some(id) = self.id(key) else {
            return;
        };
        // TLS records refused by the socket earlier: this event may be the room they await.
        if !matches!(self.slots[key].phase, Phase::Connecting { .. }) {
            if let Err(e) = self.slots[key].stream.flush_pending() {
                return self.settle(handler, id, Next::Fail(io_error(e)));
            }
        }
        let next = match self.slots[key].phase {
            Phase::Connecting { .. } => self.connected(handler, id, ready),
            Phase::Handshake { .. } if ready.readable => self.read_handshake(handler, id, ready),
            Phase::Handshake { .. } => Next::Keep,
            Phase::Open(_) => {
                let slot = &mut self.slots[key];
                if !slot.out.backlog.is_empty() {
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
        match slot.stream.tcp().take_error() {
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
        let env = self.env();
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
        let deflate = self.config.client.deflate.as_ref();
        let (accepted, n) = match parse_response_with(head, key, protocols, deflate, max_head) {
            Ok(Status::Complete(accepted, n)) => (accepted, n),
            Ok(Status::Partial) if eof => return Next::Fail(ClientError::Dropped),
            Ok(Status::Partial) => return Next::Keep,
            Err(e) => return Next::Fail(ClientError::Handshake(e)),
        };
        let stash = head[n..].to_vec();
        let mut conn =
            Connection::client(self.config.client.limits.clone(), MaskKeys::new(os_random));
        if let (Some(_), Some(n)) = (deflate, accepted.deflate) {
            conn.rx.enable_deflate(n.server());
            conn.tx.enable_deflate(n.client());
        }
        slot.phase = Phase::Open(Open {
            conn,
            stash: Vec::new(),
            protocol: accepted.protocol.map(String::into_boxed_str),
            close: None,
            failure: None,
            close_armed: false,
        });
        Self::mark(&mut self.dirty, slot, id);
        let Slot {
            stream,
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
            stream: &mut *stream,
            tx: &mut open.conn.tx,
            out,
            data,
            protocol: open.protocol.as_deref(),
            env,
            pool: &mut self.pool,
        });
        if !stash.is_empty() {
            // Frames that came with the head.
            let mut early = stash;
            dispatch(
                handler,
                id,
                stream,
                open,
                out,
                data,
                &mut early,
                env,
                &mut self.pool,
            );
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
        let env = self.env();
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
                    dispatch(
                        handler,
                        id,
                        stream,
                        open,
                        out,
                        data,
                        buf,
                        env,
                        &mut self.pool,
                    );
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

    pub(super) fn tick<H: ClientHandler<Data = D>>(&mut self, handler: &mut H) {
        let (Some(every), Some(at)) = (self.config.tick, self.next_tick) else {
            return;
        };
        if self.now < at {
            return;
        }
        self.next_tick = Some(self.now + every);
        handler.on_tick(&mut Control { core: self });
    }

    pub(super) fn expire<H: ClientHandler<Data = D>>(&mut self, handler: &mut H) {
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
    pub(super) fn flush_dirty<H: ClientHandler<Data = D>>(&mut self, handler: &mut H) {
        let env = self.env();
        let mut dirty = std::mem::take(&mut self.dirty);
        for id in dirty.drain(..) {
            let Some(slot) = self.slots.get_mut(id.key).filter(|s| s.gen == id.gen) else {
                continue;
            };
            slot.dirty = false;
            let Slot {
                stream,
                phase,
                out,
                data,
                ..
            } = slot;
            let written = match phase {
                Phase::Connecting { .. } => continue,
                Phase::Handshake { .. } => out.cork.flush_into(stream, &mut out.backlog),
                Phase::Open(open) => {
                    let mut conn = Draining {
                        handler: &mut *handler,
                        id,
                        stream,
                        open,
                        out,
                        data,
                        env,
                        pool: &mut self.pool,
                    };
                    flush_and_drain(&mut conn).map(|again| {
                        if again {
                            // A drain is still due: paid at the start of the next turn.
                            Self::mark(&mut self.dirty, slot, id);
                        }
                    })
                }
            };
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
        // Keep the allocation, with what must be flushed again next turn.
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
            phase,
            mut data,
            mut stream,
            ..
        } = self.slots.remove(id.key);
        stream.close();
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
