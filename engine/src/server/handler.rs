//! The application's side of the server: the [`Handler`] callbacks and the [`Session`] they
//! act on, in the style of uWebSockets' `WebSocketBehavior` and Spring's `WebSocketHandler`.

use std::fmt;
use std::net::SocketAddr;

use bytes::Bytes;

use super::out::{Backlog, Cork};
use crate::connection::{DataKind, Sender};
use crate::error::{ProtocolError, SendError};
use crate::frame::OpCode;
use crate::handshake::Request;

/// A data message, borrowed from the loop's buffer (or the connection's reassembly buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
}

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
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Protocol(e) => write!(f, "protocol error: {e}"),
            SessionError::Io(e) => write!(f, "i/o error: {e}"),
            SessionError::Dropped => f.write_str("connection dropped without a close frame"),
            SessionError::CloseTimeout => f.write_str("close handshake timed out"),
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
/// `on_message`, then exactly one `on_close` (after `on_error` when the session ended badly).
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

    fn on_open(&mut self, _session: &mut Session<'_, Self::Data>) {}

    fn on_message(&mut self, session: &mut Session<'_, Self::Data>, message: Message<'_>);

    fn on_pong(&mut self, _session: &mut Session<'_, Self::Data>, _payload: &[u8]) {}

    /// Called before `on_close` when the session ends because of an error.
    fn on_error(&mut self, _session: &mut Session<'_, Self::Data>, _error: &SessionError) {}

    /// The session is over: `code` is the peer's close code (1005 if its close had none), the
    /// code we sent when we failed the connection, or 1006 when TCP dropped without a close.
    fn on_close(&mut self, _session: &mut Session<'_, Self::Data>, _code: u16, _reason: &str) {}
}

/// The per-connection state that outlives callbacks.
#[derive(Debug)]
pub(crate) struct SessionState<D> {
    pub id: u64,
    pub tx: Sender,
    pub backlog: Backlog,
    pub protocol: Option<Box<str>>,
    pub data: D,
}

/// A connection as a handler sees it during a callback: sends are corked and written together
/// when the callback returns.
pub struct Session<'a, D> {
    pub(crate) state: &'a mut SessionState<D>,
    pub(crate) cork: &'a mut Cork,
}

impl<D> Session<'_, D> {
    /// Unique within the server.
    pub fn id(&self) -> u64 {
        self.state.id
    }

    pub fn data(&self) -> &D {
        &self.state.data
    }

    pub fn data_mut(&mut self) -> &mut D {
        &mut self.state.data
    }

    /// The negotiated sub-protocol.
    pub fn protocol(&self) -> Option<&str> {
        self.state.protocol.as_deref()
    }

    /// Bytes queued for this connection that the socket has not taken yet.
    pub fn buffered_amount(&self) -> usize {
        self.state.backlog.len() + self.cork.len()
    }

    pub fn send_text(&mut self, text: &str) -> Result<(), SendError> {
        self.state
            .tx
            .send(DataKind::Text, text.as_bytes(), self.cork)
    }

    pub fn send_binary(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        self.state.tx.send(DataKind::Binary, bytes, self.cork)
    }

    /// Sends a payload shared with other sessions without copying it.
    pub fn send_shared(&mut self, kind: DataKind, payload: Bytes) -> Result<(), SendError> {
        self.state.tx.check_data()?;
        let opcode = match kind {
            DataKind::Text => OpCode::Text,
            DataKind::Binary => OpCode::Binary,
        };
        let (head, n, mask) = self.state.tx.header(opcode, true, payload.len());
        debug_assert!(mask.is_none(), "server frames are not masked");
        self.cork.frame_shared(&head[..n], payload);
        Ok(())
    }

    pub fn ping(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.state.tx.ping(payload, self.cork)
    }

    /// Starts the close handshake; the connection ends when the peer answers (or at the close
    /// deadline).
    pub fn close(&mut self, code: u16, reason: &str) -> Result<(), SendError> {
        self.state.tx.close(code, reason, self.cork)
    }

    pub fn is_closing(&self) -> bool {
        self.state.tx.is_close_sent()
    }
}
