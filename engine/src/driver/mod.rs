//! What the server's and the client's event loops share to drive the sans-IO core over
//! sockets: the messages handlers see ([`Message`]), what became of a send ([`SendStatus`]),
//! outgoing bytes with the one rule for owed drains ([`out`]), and deadlines ([`timers`]).
//!
//! # The backpressure contract
//!
//! * A send is checked against the connection's cap (`max_backpressure`) before anything is
//!   copied. [`SendStatus::Written`]: nothing was waiting for the socket. [`SendStatus::Queued`]:
//!   accepted, behind bytes the socket has not taken. [`SendStatus::Dropped`]: refused, it
//!   would have taken the queue over the cap.
//! * A connection that was told `Queued` or `Dropped` gets **exactly one** `on_drain` once its
//!   queue is empty again, however its bytes went out (a writable edge, a flush at the end of a
//!   callback, an early flush of a full cork, a large payload written through, a flush after
//!   `on_drain` itself, after cross-thread sends or timers). A producer that pauses on `Queued`
//!   and resumes in `on_drain` therefore always finishes. Sends made in `on_drain` that are
//!   `Queued` again owe the next one.
//! * While a server session's queue is over half its cap, the loop stops reading from it
//!   (pings, whose pongs would queue, included) and resumes once the queue is down to a
//!   quarter: a peer that sends without reading costs at most the cap plus one read buffer,
//!   and an echo of one read's worth still fits under the cap.

pub mod out;
pub mod timers;
pub(crate) mod transport;

pub use out::{Backlog, Cork};
pub use timers::{Clock, Deadlines, Tag};

/// A data message, borrowed from the loop's buffer (or the connection's reassembly buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
}

/// What a send did with the message (uWebSockets' SUCCESS / BACKPRESSURE / DROPPED).
///
/// Failures of the protocol (sending after our close) are the `Err` of the `Result` these come
/// in; these three are all outcomes of a valid call, and only `Dropped` means the peer will not
/// get the message. See the module docs for the drain that `Queued` and `Dropped` are owed.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendStatus {
    /// Nothing was waiting for the socket: the message has been written, or is corked and
    /// written when the callback (or the loop turn) ends.
    Written,
    /// Accepted, but queued behind bytes the socket has not taken (backpressure). It goes out
    /// as the peer reads; a producer should pause until `on_drain`, which is owed from now.
    Queued,
    /// Not sent: it would have taken the connection's queued bytes over its cap. `on_drain` is
    /// owed from now (with the server's `Overflow::Close` the close handshake has also begun).
    Dropped,
}
