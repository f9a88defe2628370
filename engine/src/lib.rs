//! Sockeye: a WebSocket engine.
//!
//! Two layers in one crate:
//!
//! * **The sans-IO core** (always built): the opening handshake ([`handshake`]), the frame codec
//!   ([`frame`]), incremental UTF-8 validation ([`utf8`]), the close handshake ([`close`]) and
//!   the connection state machine ([`connection`]). Pure functions and state machines over byte
//!   slices: no sockets, no clocks, no threads. Other servers embed this layer alone; build with
//!   `default-features = false` to get only it.
//! * **The event loop** (feature `io`, on by default): a server built directly on mio
//!   ([`server`]), with a handler API in the style of uWebSockets, and a blocking client
//!   ([`client`]).
//! * **The tokio adapter** (feature `tokio`, off by default): a WebSocket stream over any
//!   `AsyncRead + AsyncWrite` ([`tokio`](mod@tokio)).

pub mod close;
pub mod config;
pub mod connection;
pub mod deflate;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod sockjs;
pub mod utf8;

#[cfg(feature = "io")]
pub mod client;
#[cfg(feature = "io")]
pub mod driver;
#[cfg(feature = "io")]
pub mod server;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(feature = "tokio")]
pub mod tokio;

pub use close::CloseFrame;
pub use config::Limits;
pub use connection::{Connection, DataKind, Event, Read, Receiver, Role, Sender, Sink};
pub use error::{ProtocolError, SendError};

/// The result of a push parser: a value and the bytes it used, or a request for more input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status<T> {
    Complete(T, usize),
    Partial,
}
