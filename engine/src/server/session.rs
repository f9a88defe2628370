//! A session as a handler sees it: sends with backpressure, the per-session cap and its policy.
//!
//! Sends made during a callback are corked: they go into the loop's shared [`Cork`] and out in
//! one vectored write when the callback returns (or earlier, once the cork holds
//! [`CORK_LIMIT`](crate::driver::out::CORK_LIMIT) bytes, so a callback that sends a lot streams it instead of buffering it).
//! What the socket does not take waits in the session's [`Backlog`]. Every send is checked
//! against [`ServerConfig::max_backpressure`](super::ServerConfig::max_backpressure) before
//! anything is copied, so a peer that stops reading costs at most the cap.

use std::cell::{OnceCell, RefCell};
use std::sync::Arc;

use bytes::Bytes;

use super::gate::Flow;
use super::inbox::{Inbox, SessionHandle};
use super::{Counters, Overflow, ServerConfig, Shared};
use crate::connection::{DataKind, Sender};
use crate::deflate::codec::{stored_blocks, MAX_STORED};
use crate::deflate::Pool;
use crate::driver::out::{queue_frame, Backlog, Cork, Payload};
use crate::driver::transport::Transport;
pub use crate::driver::SendStatus;
use crate::driver::{Message, Tag};
use crate::error::SendError;
use crate::frame::OpCode;
use crate::sockjs::frame::Messages;

/// What carries a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A WebSocket: messages are frames.
    WebSocket,
    /// A plain byte stream from a stream listener: payloads go as they are.
    Stream,
    /// A WebSocket carrying SockJS frames (`o`, `a[...]`, `h`, `c[...]`).
    SockJsWebSocket,
    /// A SockJS session over HTTP requests: messages wait for a receiving request.
    SockJs,
}

/// The per-connection state that outlives callbacks.
#[derive(Debug)]
pub(crate) struct SessionState<D> {
    pub id: u64,
    pub tx: Sender,
    pub backlog: Backlog,
    pub protocol: Option<Box<str>>,
    /// The code and reason `on_close` reports, once known (the peer's close, or ours when we
    /// failed the connection).
    /// Boxed: it is set once, at the end, and an open session should not carry its room.
    pub close: Option<Box<(u16, Box<str>)>>,
    /// What carries the session, and so how its messages are framed.
    pub kind: Kind,
    /// What handles post to it, made with the first handle.
    pub flow: OnceCell<Arc<Flow>>,
    pub data: D,
}

/// What every session of one worker shares.
#[derive(Debug)]
pub(crate) struct Env {
    /// The worker's index.
    pub index: usize,
    pub config: Arc<ServerConfig>,
    pub inbox: Arc<Inbox>,
    pub shared: Arc<Shared>,
    /// permessage-deflate's shared compressors, lent inflaters and compress-once cache.
    pub deflate: RefCell<Pool>,
}

impl Env {
    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }
}

/// Where a session's bytes go: the loop's cork, then its socket; or, for a SockJS session
/// over HTTP, its queue of messages for the next receiving request.
pub(crate) struct Out<'a> {
    pub cork: &'a mut Cork,
    pub wire: Wire<'a>,
    pub env: &'a Env,
    pub tag: Tag,
}

/// A session's way out.
pub(crate) enum Wire<'a> {
    Socket(&'a mut Transport),
    SockJs(&'a mut SockOut),
}

/// A SockJS session's messages waiting for a receiving request.
#[derive(Debug, Default)]
pub(crate) struct SockOut {
    pub messages: Messages,
    /// A receiving request is attached and keeping up: what is sent now goes out when the
    /// callback ends.
    pub receiving: bool,
}

impl Out<'_> {
    pub fn reborrow(&mut self) -> Out<'_> {
        Out {
            cork: self.cork,
            wire: match &mut self.wire {
                Wire::Socket(s) => Wire::Socket(s),
                Wire::SockJs(s) => Wire::SockJs(s),
            },
            env: self.env,
            tag: self.tag,
        }
    }

    /// The socket of a session that has one (every session but a SockJS one over HTTP).
    pub fn socket(&mut self) -> &mut Transport {
        match &mut self.wire {
            Wire::Socket(s) => s,
            Wire::SockJs(_) => unreachable!("only sessions with a socket are read and flushed"),
        }
    }
}

/// A message to send: borrowed (copied once, into the loop's cork) or shared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outgoing<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
    /// A payload several sessions share; never copied. A `Text` payload must be UTF-8.
    Shared(DataKind, Bytes),
    /// One message made of a prefix (copied) and a shared rest (not copied). A `Text` message
    /// must be UTF-8 as a whole.
    Parts(DataKind, &'a [u8], Bytes),
}

impl<'a> From<Message<'a>> for Outgoing<'a> {
    fn from(message: Message<'a>) -> Self {
        match message {
            Message::Text(text) => Outgoing::Text(text),
            Message::Binary(bytes) => Outgoing::Binary(bytes),
        }
    }
}

impl<'a> From<&'a str> for Outgoing<'a> {
    fn from(text: &'a str) -> Self {
        Outgoing::Text(text)
    }
}

impl<'a> From<&'a [u8]> for Outgoing<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        Outgoing::Binary(bytes)
    }
}

/// The opcode of a whole data message.
pub(crate) fn data_opcode(kind: DataKind) -> OpCode {
    match kind {
        DataKind::Text => OpCode::Text,
        DataKind::Binary => OpCode::Binary,
    }
}

/// A connection as a handler sees it during a callback.
pub struct Session<'a, D> {
    pub(crate) state: &'a mut SessionState<D>,
    pub(crate) out: Out<'a>,
}

impl<D> Session<'_, D> {
    /// Unique within the server.
    pub fn id(&self) -> u64 {
        self.state.id
    }

    /// Every worker of the server, for posting [`Task`](super::Task)s.
    pub fn workers(&self) -> super::Workers {
        let count = self.out.env.shared.workers.get().map_or(1, Vec::len);
        super::Workers::new(self.out.env.shared.clone(), count)
    }

    /// The index of the worker this session lives on.
    pub fn worker_index(&self) -> usize {
        self.out.env.index
    }

    pub fn data(&self) -> &D {
        &self.state.data
    }

    pub fn data_mut(&mut self) -> &mut D {
        &mut self.state.data
    }

    /// True for a plain byte stream from a stream listener (no WebSocket framing).
    pub fn is_stream(&self) -> bool {
        self.state.kind == Kind::Stream
    }

    /// True for a SockJS session (over a WebSocket or HTTP): it carries text messages only.
    pub fn is_sockjs(&self) -> bool {
        matches!(self.state.kind, Kind::SockJs | Kind::SockJsWebSocket)
    }

    /// The negotiated sub-protocol.
    pub fn protocol(&self) -> Option<&str> {
        self.state.protocol.as_deref()
    }

    /// Bytes sent to this session that the socket has not taken yet (queued, plus corked in
    /// this callback). Never more than `max_backpressure`, save for one message sent while
    /// nothing was queued.
    pub fn buffered_amount(&self) -> usize {
        match &self.out.wire {
            Wire::Socket(_) => self.state.backlog.len() + self.out.cork.len(),
            Wire::SockJs(sock) => sock.messages.len(),
        }
    }

    /// A handle for sending to this session from any thread (see [`SessionHandle`]).
    pub fn handle(&self) -> SessionHandle {
        let (id, cap) = (self.state.id, self.out.env.config.max_backpressure);
        let flow = self.state.flow.get_or_init(|| Flow::new(id, cap)).clone();
        SessionHandle::new(self.out.env.inbox.clone(), self.out.tag, flow)
    }

    /// Sends a message and says what became of it: written, queued behind backpressure, or
    /// dropped at the session's cap (see [`SendStatus`]). Takes a [`Message`] (so an echo is
    /// `session.send(message)`), a `&str`, a `&[u8]`, or a shared payload.
    pub fn send<'m>(&mut self, message: impl Into<Outgoing<'m>>) -> Result<SendStatus, SendError> {
        let cap = self.out.env.config.max_backpressure;
        self.send_capped(message.into(), cap)
    }

    /// Sends a message whatever the session's cap: `Written` or `Queued`, never `Dropped`.
    /// For messages that must not be lost and are bounded some other way: replies to what the
    /// peer sent (the loop stops reading a session over half its cap, so replies cannot pile
    /// up), or messages under a window the application enforces (a broker's limit of
    /// unacknowledged messages per subscription).
    pub fn send_unbounded<'m>(
        &mut self,
        message: impl Into<Outgoing<'m>>,
    ) -> Result<SendStatus, SendError> {
        self.send_capped(message.into(), usize::MAX)
    }

    /// The last words to a session that is being let go: drops what is queued for it and not
    /// started yet (the rest of a frame the socket is in the middle of still goes), sends
    /// `message` whatever the cap, then starts the close handshake with `code` and `reason` (a
    /// stream is closed once it is written). For telling a slow consumer why it is cut off:
    /// the message comes right after what its peer already has, not behind a full queue.
    pub fn end_with<'m>(
        &mut self,
        message: impl Into<Outgoing<'m>>,
        code: u16,
        reason: &str,
    ) -> Result<(), SendError> {
        self.state.tx.check_data()?;
        self.discard_unsent();
        let _written_or_queued = self.send_unbounded(message)?;
        self.close(code, reason)
    }

    /// Drops what is queued and not started (see [`Session::end_with`]).
    fn discard_unsent(&mut self) {
        match &mut self.out.wire {
            Wire::Socket(_) => {
                self.out.cork.discard_frames();
                self.state.backlog.discard_unstarted();
            }
            Wire::SockJs(sock) => sock.messages = Messages::default(),
        }
    }

    fn send_capped(&mut self, message: Outgoing<'_>, cap: usize) -> Result<SendStatus, SendError> {
        let (opcode, payload) = match message {
            Outgoing::Text(text) => (OpCode::Text, Payload::Copied(text.as_bytes())),
            Outgoing::Binary(bytes) => (OpCode::Binary, Payload::Copied(bytes)),
            Outgoing::Shared(kind, bytes) => (data_opcode(kind), Payload::Shared(bytes)),
            Outgoing::Parts(kind, prefix, rest) => {
                (data_opcode(kind), Payload::Parts(prefix, rest))
            }
        };
        self.state.tx.check_data()?;
        match self.state.kind {
            Kind::Stream => self.send_encoded(&[], payload, cap),
            Kind::WebSocket if self.compresses(payload.len()) => {
                self.send_deflated(opcode, payload, cap)
            }
            Kind::WebSocket => {
                let (head, n, mask) = self.state.tx.header(opcode, true, payload.len());
                debug_assert!(mask.is_none(), "server frames are not masked");
                self.send_encoded(&head[..n], payload, cap)
            }
            Kind::SockJsWebSocket | Kind::SockJs => {
                if opcode != OpCode::Text {
                    return Err(SendError::NotText);
                }
                let text = payload_text(&payload)?;
                self.send_sockjs(&text, cap)
            }
        }
    }

    /// A SockJS message: a frame of its own on the WebSocket transport, or queued for the next
    /// receiving request.
    fn send_sockjs(&mut self, text: &str, cap: usize) -> Result<SendStatus, SendError> {
        let backlog = &mut self.state.backlog;
        let Wire::SockJs(sock) = &mut self.out.wire else {
            let mut frame = Messages::default();
            frame.push(text);
            let frame = frame.take_frame();
            let (head, n, _) = self.state.tx.header(OpCode::Text, true, frame.len());
            return self.send_encoded(&head[..n], Payload::Copied(&frame), cap);
        };
        let waiting = sock.messages.len();
        if waiting > 0 && waiting + text.len() > cap {
            let status = backlog.refused();
            self.overflow();
            return Ok(status);
        }
        sock.messages.push(text);
        Ok(if sock.receiving && waiting == 0 {
            SendStatus::Written
        } else {
            backlog.owe_drain();
            SendStatus::Queued
        })
    }

    /// Sends a text message. `Ok` when it was written, queued or dropped at the cap: use
    /// [`Session::send`] to tell which.
    pub fn send_text(&mut self, text: &str) -> Result<(), SendError> {
        self.send(text).map(drop)
    }

    /// Sends a binary message; see [`Session::send_text`].
    pub fn send_binary(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        self.send(bytes).map(drop)
    }

    /// Sends a payload shared with other sessions without copying it; see
    /// [`Session::send_text`]. A `Text` payload must be UTF-8.
    pub fn send_shared(&mut self, kind: DataKind, payload: Bytes) -> Result<(), SendError> {
        self.send(Outgoing::Shared(kind, payload)).map(drop)
    }

    /// [`Session::end_with`] for what another thread prepared.
    pub(crate) fn end_prepared(
        &mut self,
        head: &[u8],
        payload: Payload<'_>,
        code: u16,
        reason: &str,
    ) -> Result<(), SendError> {
        self.state.tx.check_data()?;
        self.discard_unsent();
        let _written_or_queued = self.send_prepared(head, payload, false)?;
        self.close(code, reason)
    }

    /// Sends what another thread prepared: a WebSocket header encoded once (dropped for a
    /// stream session) and the payload, under the cap when `bounded`.
    pub(crate) fn send_prepared(
        &mut self,
        head: &[u8],
        payload: Payload<'_>,
        bounded: bool,
    ) -> Result<SendStatus, SendError> {
        let cap = match bounded {
            true => self.out.env.config.max_backpressure,
            false => usize::MAX,
        };
        match self.state.kind {
            Kind::WebSocket if self.compresses(payload.len()) => {
                let opcode = OpCode::from_u8(head.first().copied().unwrap_or(0));
                self.state.tx.check_data()?;
                self.send_deflated(opcode, payload, cap)
            }
            Kind::WebSocket => self.send_encoded(head, payload, cap),
            Kind::Stream => self.send_encoded(&[], payload, cap),
            Kind::SockJsWebSocket | Kind::SockJs => {
                // A text frame's opcode is 1 in the low bits of the header's first byte.
                if head.first().map(|b| b & 0x0f) != Some(1) {
                    return Err(SendError::NotText);
                }
                self.state.tx.check_data()?;
                let text = payload_text(&payload)?;
                self.send_sockjs(&text, cap)
            }
        }
    }

    /// Whether a whole message of `len` bytes goes out compressed.
    fn compresses(&self, len: usize) -> bool {
        self.state.tx.deflate_params().is_some()
            && self
                .state
                .tx
                .compresses(len, &self.out.env.deflate.borrow())
    }

    /// Sends a whole message compressed (permessage-deflate). Without context takeover a
    /// shared payload is compressed once per worker and turn for all its recipients (the
    /// pool's cache); a copied prefix before it (a STOMP MESSAGE's own head) goes in front as
    /// stored blocks, so nothing is compressed per recipient.
    fn send_deflated(
        &mut self,
        opcode: OpCode,
        payload: Payload<'_>,
        cap: usize,
    ) -> Result<SendStatus, SendError> {
        let env = self.out.env;
        let Some(own) = self.state.tx.deflate_params() else {
            unreachable!("only sessions with deflate compress")
        };
        if own.no_context_takeover {
            let shared = match &payload {
                Payload::Shared(body) => Some((&[][..], body)),
                Payload::Parts(prefix, body) if prefix.len() <= MAX_STORED => Some((*prefix, body)),
                _ => None,
            };
            if let Some((prefix, body)) = shared {
                let packed = env
                    .deflate
                    .borrow_mut()
                    .compress_shared(body, own.max_window_bits);
                if prefix.is_empty() {
                    let (head, n, _) = self.state.tx.compressed_header(opcode, packed.len());
                    return self.send_encoded(&head[..n], Payload::Shared(packed), cap);
                }
                let mut stored = Vec::with_capacity(prefix.len() + 5);
                stored_blocks(prefix, &mut stored);
                let len = stored.len() + packed.len();
                let (head, n, _) = self.state.tx.compressed_header(opcode, len);
                return self.send_encoded(&head[..n], Payload::Parts(&stored, packed), cap);
            }
        }
        let mut buf = {
            let mut pool = env.deflate.borrow_mut();
            let mut buf = pool.take_buf();
            match &payload {
                Payload::Copied(p) => self.state.tx.compress(&[p], &mut pool, &mut buf),
                Payload::Shared(p) => self.state.tx.compress(&[p], &mut pool, &mut buf),
                Payload::Parts(a, b) => self.state.tx.compress(&[a, b], &mut pool, &mut buf),
            }
            buf
        };
        let (head, n, _) = self.state.tx.compressed_header(opcode, buf.len());
        let status = self.send_encoded(&head[..n], Payload::Copied(&buf), cap);
        buf.clear();
        env.deflate.borrow_mut().give_buf(buf);
        status
    }

    /// Sends a frame whose header is already encoded (a broadcast encodes it once for all).
    fn send_encoded(
        &mut self,
        head: &[u8],
        payload: Payload<'_>,
        cap: usize,
    ) -> Result<SendStatus, SendError> {
        self.state.tx.check_data()?;
        let Out { cork, wire, .. } = &mut self.out;
        let Wire::Socket(stream) = wire else {
            unreachable!("framed sends go to sessions with a socket")
        };
        let status = queue_frame(cork, stream, &mut self.state.backlog, cap, head, payload);
        match status {
            SendStatus::Dropped => self.overflow(),
            _ => self
                .out
                .env
                .counters()
                .note_queued(self.state.backlog.len()),
        }
        Ok(status)
    }

    /// A send was refused at the cap: count the drop and apply the policy.
    fn overflow(&mut self) {
        let counters = self.out.env.counters();
        Counters::bump(&counters.dropped_messages);
        if let Overflow::Close(code) = self.out.env.config.overflow {
            const REASON: &str = "send queue full";
            if self.state.tx.close(code, REASON, self.out.cork).is_ok() {
                self.state
                    .close
                    .get_or_insert_with(|| Box::new((code, REASON.into())));
                Counters::bump(&counters.overflow_closes);
            }
        }
    }

    /// Sends a ping (not subject to the cap: control frames are at most 127 bytes).
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), SendError> {
        match self.state.kind {
            Kind::WebSocket | Kind::SockJsWebSocket => self.state.tx.ping(payload, self.out.cork),
            // Nothing to ping with on a plain stream; SockJS has heart-beats of its own.
            Kind::Stream | Kind::SockJs => Ok(()),
        }
    }

    /// Starts the close handshake; the connection ends when the peer answers (or at the close
    /// deadline). A SockJS session sends its client `c[code,"reason"]` first.
    pub fn close(&mut self, code: u16, reason: &str) -> Result<(), SendError> {
        match self.state.kind {
            Kind::WebSocket => self.state.tx.close(code, reason, self.out.cork),
            Kind::SockJsWebSocket => {
                if self.state.tx.is_close_sent() {
                    return Err(SendError::Closed);
                }
                let frame = crate::sockjs::frame::close(code, reason);
                let (head, n, _) = self.state.tx.header(OpCode::Text, true, frame.len());
                crate::connection::Sink::frame(self.out.cork, &head[..n], &frame, None);
                // The WebSocket close carries the application's code when it may.
                let ws_code = if crate::close::is_valid_code(code) {
                    code
                } else {
                    1000
                };
                self.state.tx.close(ws_code, reason, self.out.cork)
            }
            Kind::Stream | Kind::SockJs => {
                if self.state.tx.is_close_sent() {
                    return Err(SendError::Closed);
                }
                self.state.tx.mark_closed();
                self.state
                    .close
                    .get_or_insert_with(|| Box::new((code, reason.into())));
                Ok(())
            }
        }
    }

    pub fn is_closing(&self) -> bool {
        self.state.tx.is_close_sent()
    }

    /// True when the loop stops reading from this session after the current callback: its
    /// queue is over half of `max_backpressure`, or it fed a closed [`Gate`](super::Gate) (a full
    /// inbox of another loop, say). Between messages the loop checks this itself; a stream
    /// handler that works through many frames of one read checks it after each and returns
    /// what it used (see [`Handler::on_stream_data`](super::Handler::on_stream_data)).
    pub fn is_read_paused(&self) -> bool {
        self.buffered_amount() > self.out.env.config.max_backpressure / 2
            || super::gate::passed_closed()
    }
}

/// The text of a SockJS message (which carries strings only).
fn payload_text(payload: &Payload<'_>) -> Result<String, SendError> {
    let bytes = match payload {
        Payload::Copied(p) => p.to_vec(),
        Payload::Shared(p) => p.to_vec(),
        Payload::Parts(a, b) => [*a, &b[..]].concat(),
    };
    String::from_utf8(bytes).map_err(|_| SendError::NotText)
}
