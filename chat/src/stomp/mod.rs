//! STOMP 1.0/1.1/1.2 frame codec: a pure push parser and encoder, no I/O.
//!
//! * [`parse`] takes the bytes read so far and returns one frame
//!   ([`Status::Complete`]), one heart-beat EOL ([`Status::HeartBeat`]) or
//!   [`Status::Partial`], borrowing headers and body from the buffer. It
//!   enforces [`Limits`] even on incomplete frames and fails with a
//!   [`StompError`] whose `Display` is fit for an `ERROR` frame's `message`.
//! * [`encode`] appends a frame to a `Vec<u8>` or `BytesMut`;
//!   [`MessageTail`] and [`encode_message_head`] split a `MESSAGE` frame so a
//!   broker encodes the shared part once and only a few header lines per
//!   subscriber.
//!
//! Header escaping follows the negotiated [`Version`] (`None` before
//! negotiation): none in 1.0, `\n \c \\` in 1.1, `\r \n \c \\` in 1.2, and
//! none for `CONNECT`, `STOMP` and `CONNECTED` frames.

mod command;
mod encode;
mod error;
mod escape;
mod frame;
mod parse;
#[cfg(test)]
mod testutil;
#[cfg(test)]
mod vectors;

pub use command::{Command, Version};
pub use encode::{
    encode, encode_message_head, EncodeBuf, EncodeOptions, MessageTail, PER_SUBSCRIBER_HEADERS,
};
pub use error::{EncodeError, StompError};
pub use frame::{Frame, Header, Status};
pub use parse::{parse, Limits};
