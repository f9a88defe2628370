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
//!
//! A reader's loop:
//!
//! ```
//! use sockeye_chat::stomp::{parse, Command, Limits, Status, Version};
//!
//! let mut buf = Vec::new();
//! let mut frames = Vec::new();
//! for chunk in [&b"\nSEND\ndestination:/a\n\nhi"[..], b"\0\nRECE", b"IPT\nreceipt-id:1\n\n\0"] {
//!     buf.extend_from_slice(chunk); // bytes from the socket
//!     loop {
//!         match parse(&buf, &Limits::default(), Some(Version::V1_2)) {
//!             Ok(Status::Complete(frame, used)) => {
//!                 frames.push((frame.command, frame.header("destination").map(str::to_owned)));
//!                 buf.drain(..used);
//!             }
//!             Ok(Status::HeartBeat(used)) => {
//!                 buf.drain(..used); // the peer is alive
//!             }
//!             Ok(Status::Partial) => break, // read more
//!             Err(e) => panic!("send ERROR with message:{e}, then close"),
//!         }
//!     }
//! }
//! assert_eq!(frames, [(Command::Send, Some("/a".to_owned())), (Command::Receipt, None)]);
//! ```
//!
//! Fan-out of one `MESSAGE` to many subscribers:
//!
//! ```
//! use bytes::BytesMut;
//! use sockeye_chat::stomp::{encode_message_head, EncodeOptions, MessageTail, Version};
//!
//! let opts = EncodeOptions::new(Some(Version::V1_2)).with_content_length(true);
//! let tail = MessageTail::encode([("destination", "/topic/room")], b"hello", opts)?;
//! let mut heads = BytesMut::new();
//! for (sub, id) in [("0", "m-1"), ("7", "m-1")] {
//!     encode_message_head(&tail, sub, id, None, &mut heads)?;
//!     let head = heads.split().freeze();
//!     let shared = tail.bytes().clone(); // no copy of the body
//!     // socket.write_vectored(&[IoSlice::new(&head), IoSlice::new(&shared)])
//!     # let _ = (head, shared);
//! }
//! # Ok::<(), sockeye_chat::stomp::EncodeError>(())
//! ```

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

/// A `heart-beat` value, `"cx,cy"` in milliseconds (STOMP 1.1+): the CONNECT header and the
/// `--heart-beat` flag alike.
pub fn parse_heart_beat(value: &str) -> Option<(u64, u64)> {
    let (a, b) = value.split_once(',')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}
