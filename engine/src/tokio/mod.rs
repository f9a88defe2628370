//! The tokio adapter (feature `tokio`): the sans-IO core driven over any
//! `AsyncRead + AsyncWrite`.
//!
//! This module owns the public face of the adapter: its settings ([`Config`]), the owned
//! [`Message`] it hands out and takes, and its [`Error`]. The stream itself is in `stream.rs`,
//! the opening handshakes (server accept, client connect) in `handshake.rs`.
//!
//! What the adapter adds to the core, and nothing more:
//!
//! * **Reading**: bytes are read into one `BytesMut`; a message that sits whole in it is handed
//!   out as a [`Bytes`] slice of that buffer (unmasked in place, no copy). Fragmented messages,
//!   and messages split across reads, are assembled by the core and copied out once.
//! * **Replies**: pongs and the close echo are written by the core into the output buffer; the
//!   adapter writes them out while the application reads.
//! * **Backpressure**: output waiting for the socket is capped ([`Config::write_buffer_cap`]).
//!   Over the cap, sends await and [`WebSocketStream::next`] stops reading until the peer takes
//!   some, so a peer that floods pings and never reads cannot grow memory.
//! * **No clocks**: nothing here waits on a timer. A close handshake is complete when
//!   [`WebSocketStream::next`] returns `None`; bound it with `tokio::time::timeout` if the peer
//!   may never answer.
//!
//! * **permessage-deflate** when [`Config::deflate`] is set (off by default).
//!
//! Not yet: splitting into a reader and a writer half, and a `futures::Stream`/`Sink`
//! implementation.

mod handshake;
mod stream;

use std::fmt;
use std::io;

use bytes::Bytes;

use crate::config::Limits;
use crate::deflate::DeflateConfig;
use crate::error::{ProtocolError, SendError};
use crate::handshake::client::ResponseError;
use crate::handshake::{HandshakeConfig, HandshakeError};

pub use stream::WebSocketStream;

/// Settings of a tokio WebSocket stream, each default with its reason.
#[derive(Clone, Debug)]
pub struct Config {
    /// What the core enforces on what arrives.
    pub limits: Limits,
    /// Head size and header limits, allowed origins and sub-protocols. A server picks among
    /// `protocols`; a client offers them.
    pub handshake: HandshakeConfig,
    /// Bytes of output not yet taken by the socket over which sends await and reading pauses.
    /// Default 128 KiB: a few socket buffers' worth, so a slow reader costs at most that.
    pub write_buffer_cap: usize,
    /// Room asked of the socket per read. Default 64 KiB: large messages arrive in few reads,
    /// and many small ones in one.
    pub read_chunk: usize,
    /// permessage-deflate (RFC 7692): what a server accepts of an offer, what a client offers.
    /// Default `None`: off, as it costs CPU and memory per connection.
    pub deflate: Option<DeflateConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            limits: Limits::default(),
            handshake: HandshakeConfig::default(),
            write_buffer_cap: 128 << 10,
            read_chunk: 64 << 10,
            deflate: None,
        }
    }
}

/// Text known to be UTF-8: made from a `str` or checked by the core on the way in.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// The text. It was validated when made; this check (simdutf8, many GB/s) only recovers a
    /// `&str` without `unsafe`.
    pub fn as_str(&self) -> &str {
        simdutf8::basic::from_utf8(&self.0).unwrap_or_default()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// The bytes, shared (no copy).
    pub(crate) fn as_bytes_shared(&self) -> &Bytes {
        &self.0
    }
}

impl From<String> for Utf8Bytes {
    fn from(s: String) -> Self {
        Utf8Bytes(Bytes::from(s.into_bytes()))
    }
}

impl From<&'static str> for Utf8Bytes {
    fn from(s: &'static str) -> Self {
        Utf8Bytes(Bytes::from_static(s.as_bytes()))
    }
}

/// A close frame's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseReason {
    pub code: u16,
    pub reason: String,
}

/// A message or control frame, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Text(Utf8Bytes),
    Binary(Bytes),
    /// Received: already answered with a pong. Sent: a ping of at most 125 bytes.
    Ping(Bytes),
    Pong(Bytes),
    /// Received: the peer's close (already echoed unless ours went first). Sent: starts the
    /// close handshake (`None` sends 1000 with no reason).
    Close(Option<CloseReason>),
}

impl Message {
    pub fn text(s: impl Into<String>) -> Self {
        Message::Text(Utf8Bytes::from(s.into()))
    }

    pub fn binary(b: impl Into<Bytes>) -> Self {
        Message::Binary(b.into())
    }

    /// The text of a text message.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Message::Text(t) => Some(t.as_str()),
            _ => None,
        }
    }

    /// Whether this is a text or binary message (not a control frame).
    pub fn is_data(&self) -> bool {
        matches!(self, Message::Text(_) | Message::Binary(_))
    }
}

/// Why an operation on a tokio WebSocket stream failed.
#[derive(Debug)]
pub enum Error {
    /// The socket failed.
    Io(io::Error),
    /// Server: the request was not a valid opening handshake; the HTTP refusal was sent.
    Handshake(HandshakeError),
    /// Client: the server's answer does not open a WebSocket.
    Response(ResponseError),
    /// The peer broke the protocol; our close frame with the matching code is queued, and
    /// reading goes on until the peer's close (or the end of the stream).
    Protocol(ProtocolError),
    /// The message cannot be sent now (e.g. after our close).
    Send(SendError),
    /// The stream ended without a close frame.
    Dropped,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "i/o error: {e}"),
            Error::Handshake(e) => write!(f, "handshake refused: {e}"),
            Error::Response(e) => write!(f, "{e}"),
            Error::Protocol(e) => write!(f, "protocol error: {e}"),
            Error::Send(e) => write!(f, "cannot send: {e}"),
            Error::Dropped => f.write_str("connection dropped without a close frame"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Handshake(e) => Some(e),
            Error::Response(e) => Some(e),
            Error::Protocol(e) => Some(e),
            Error::Send(e) => Some(e),
            Error::Dropped => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<SendError> for Error {
    fn from(e: SendError) -> Self {
        Error::Send(e)
    }
}
