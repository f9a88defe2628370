//! The application's side of the server: the [`Handler`] callbacks and the [`Session`] they
//! act on, in the style of uWebSockets' `WebSocketBehavior` and Spring's `WebSocketHandler`.

use std::fmt;
use std::net::SocketAddr;

pub use super::session::Session;
use crate::error::ProtocolError;
use crate::handshake::Request;

pub use crate::driver::Message;

/// Why a session ended badly, for [`Handler::on_error`].
#[derive(Debug)]
pub enum SessionError {
    /// The peer broke the protocol; the close code has been sent.
    Protocol(ProtocolError),
    /// The socket failed.
    Io(std::io::Error),
    /// The peer went away without a close frame.
    Dropped,
    /// The peer did not finish the close handshake in time.
    CloseTimeout,
    /// No pong (nor anything else) arrived within `pong_timeout` of an automatic ping: the
    /// peer is presumed gone (a half-open TCP connection) and the socket was dropped.
    PongTimeout,
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Protocol(e) => write!(f, "protocol error: {e}"),
            SessionError::Io(e) => write!(f, "i/o error: {e}"),
            SessionError::Dropped => f.write_str("connection dropped without a close frame"),
            SessionError::CloseTimeout => f.write_str("close handshake timed out"),
            SessionError::PongTimeout => f.write_str("no pong in time: peer presumed gone"),
        }
    }
}

/// What the upgrade hook may change before accepting.
#[derive(Debug, Default)]
pub struct Upgrading {
    /// The sub-protocol to confirm: pre-set to the first of the server's protocols the client
    /// offered; the hook may pick another of the client's or none.
    pub protocol: Option<String>,
    /// Extra response headers.
    pub headers: Vec<(String, String)>,
    pub peer: Option<SocketAddr>,
    /// For a session of a SockJS service: the service's prefix and the transport that opens it
    /// (`/websocket` under the prefix is a plain WebSocket, with no transport). `None` for a
    /// WebSocket outside SockJS.
    pub sockjs: Option<(String, Option<crate::sockjs::Transport>)>,
    /// permessage-deflate as it will be answered, when [`ServerConfig::deflate`] is set and
    /// the client offered something the server can honour (see [`crate::deflate`]); the hook
    /// may set it to `None` to leave this session uncompressed.
    ///
    /// [`ServerConfig::deflate`]: super::ServerConfig::deflate
    pub deflate: Option<crate::deflate::Negotiated>,
}

/// A refusal from the upgrade hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub reason: String,
}

impl Rejection {
    pub fn new(status: u16, reason: impl Into<String>) -> Self {
        Rejection {
            status,
            reason: reason.into(),
        }
    }
}

/// A plain HTTP response for a request that is not an upgrade.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        HttpResponse {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.into(),
        }
    }

    pub fn text(status: u16, body: &str) -> Self {
        HttpResponse::new(status, "text/plain; charset=utf-8", body)
    }

    pub fn not_found() -> Self {
        HttpResponse::text(404, "not found\n")
    }
}

/// The callbacks of a server. One instance runs on each worker thread; every call for a given
/// connection happens on the same thread, in order: `on_upgrade`, `on_open`, any number of
/// `on_message`, `on_pong` and `on_drain`, then exactly one `on_close` (after `on_error` when
/// the session ended badly).
pub trait Handler: 'static {
    /// Per-connection data, made by `on_upgrade` and kept next to the protocol state.
    type Data: 'static;

    /// Decides on a WebSocket upgrade after the request passed the protocol's checks (the
    /// equivalent of Spring's `HandshakeInterceptor`): accept with the connection's data, or
    /// refuse with a status.
    fn on_upgrade(
        &mut self,
        req: &Request<'_, '_>,
        upgrading: &mut Upgrading,
    ) -> Result<Self::Data, Rejection>;

    /// Answers a request that is not an upgrade (the connection closes after the response).
    fn on_http(&mut self, _req: &Request<'_, '_>, _body: &[u8]) -> HttpResponse {
        HttpResponse::not_found()
    }

    /// [`Handler::on_http`] with the client's address (if known), for handlers that limit or log per
    /// client; the default ignores it and calls `on_http`.
    fn on_http_from(
        &mut self,
        _peer: Option<std::net::SocketAddr>,
        req: &Request<'_, '_>,
        body: &[u8],
    ) -> HttpResponse {
        self.on_http(req, body)
    }

    /// A connection arrived on a stream listener ([`Server::bind_stream`]): accept it with its
    /// data, or refuse it (`None`: the socket is closed).
    ///
    /// [`Server::bind_stream`]: super::Server::bind_stream
    fn on_stream_open(&mut self, _peer: std::net::SocketAddr) -> Option<Self::Data> {
        None
    }

    /// Bytes from a stream connection, as they arrived (no framing), and returns how many of
    /// them it used. The session's sends write their payloads as they are; `close` ends the
    /// stream once what was sent is written.
    ///
    /// Bytes not used are kept by the loop and offered again, first, with the next ones (so a
    /// parser may leave an incomplete frame to the loop). A handler that feeds other sessions
    /// should stop after the unit of work during which [`Session::is_read_paused`] became true
    /// and return what it used: the rest is offered again when reading resumes, and nothing of
    /// a paused stream is read meanwhile.
    fn on_stream_data(&mut self, _session: &mut Session<'_, Self::Data>, bytes: &[u8]) -> usize {
        bytes.len()
    }

    fn on_open(&mut self, _session: &mut Session<'_, Self::Data>) {}

    fn on_message(&mut self, session: &mut Session<'_, Self::Data>, message: Message<'_>);

    fn on_pong(&mut self, _session: &mut Session<'_, Self::Data>, _payload: &[u8]) {}

    /// The session's queue is empty again after a send was answered
    /// [`SendStatus::Queued`](super::SendStatus::Queued) or
    /// [`SendStatus::Dropped`](super::SendStatus::Dropped): a producer that paused can send
    /// more. Owed exactly once per such episode, whatever wrote the bytes (a writable edge, the
    /// flush after a callback, cross-thread sends, timers, or this callback's own sends, which
    /// owe the next one if they are `Queued` again). See [`crate::driver`] for the contract.
    fn on_drain(&mut self, _session: &mut Session<'_, Self::Data>) {}

    /// The session's queue went over half of `max_backpressure`: its peer is not keeping up
    /// with what is sent to it (through [`Session`] or its handles). Called once; `on_drain`
    /// follows when the queue is empty again. The place to stop feeding it, or to hold back
    /// those who do (a [`Gate`](super::Gate)).
    fn on_backpressure(&mut self, _session: &mut Session<'_, Self::Data>) {}

    /// `dropped` messages to this session were refused at `max_backpressure` since the last
    /// call (by sends in callbacks or through handles; with [`Overflow::Close`](super::Overflow)
    /// its close has begun). Called after the callback or the batch of cross-thread sends that
    /// dropped them, so that no drop goes unnoticed: a handler may log it, or let the session
    /// go with [`Session::end_with`].
    fn on_overflow(&mut self, _session: &mut Session<'_, Self::Data>, _dropped: u32) {}

    /// A [`Task`](super::Task) posted to this worker through [`Workers::post`](super::Workers::post),
    /// on this worker's thread, in order with the other commands the poster sent here. Sends
    /// through `out` to this worker's sessions are applied with them, without another post.
    /// The default drops it.
    fn on_task(&mut self, _task: super::Task, _out: &mut super::TaskOut<'_>) {}

    /// Called before `on_close` when the session ends because of an error.
    fn on_error(&mut self, _session: &mut Session<'_, Self::Data>, _error: &SessionError) {}

    /// The session is over: `code` is the peer's close code (1005 if its close had none), the
    /// code we sent when we failed the connection, or 1006 when TCP dropped without a close.
    fn on_close(&mut self, _session: &mut Session<'_, Self::Data>, _code: u16, _reason: &str) {}
}
