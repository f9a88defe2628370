//! permessage-deflate (RFC 7692), sans-IO: negotiation ([`negotiate`]), the codec over byte
//! slices ([`codec`]), and the [`Pool`] a driver keeps per thread so that sessions without
//! context takeover hold no compression state between messages.
//!
//! How a connection uses it: after the handshake agreed on [`Negotiated`] parameters, the
//! driver calls [`Receiver::enable_deflate`](crate::Receiver::enable_deflate) and
//! [`Sender::enable_deflate`](crate::Sender::enable_deflate). The receiver then inflates
//! messages whose first frame has RSV1 set, counting the inflated bytes against
//! `max_message_size` as they are made (a small frame that would inflate to gigabytes fails
//! with 1009 before the memory is taken); the sender compresses whole messages of at least
//! [`DeflateConfig::min_size`] bytes and sets RSV1 on their frame. Control frames and
//! fragmented sends are never compressed.
//!
//! # Memory
//!
//! | side | with context takeover | without |
//! | --- | --- | --- |
//! | sending | a compressor of its own, made with the first compressed message. zlib-rs allocates 2^(w+2) bytes of window and chains, a 128 KiB hash table whatever the memory level, and 7 × 2^(m+6) bytes of output and symbol buffers, plus its state (w = window bits, m = memory level; 15 and 8: about 370 KiB allocated, of which about 312 KiB are resident from the moment it is made, measured) | nothing: the pool's shared compressor (one per window size per thread), reset after each message |
//! | receiving | an inflater of its own: about 19 KiB of state, and 2^w bytes of window, resident as messages fill it (15: 19 KiB after a short message, 51 KiB at most) | nothing between messages: an inflater is borrowed from the pool for each message and given back, reset, at its end |
//!
//! Measured (benches/DEFLATE.md, `benches/scripts/deflate.sh`, shapes `idle` and `takeover`):
//! 15,000 idle server connections that negotiated deflate without context takeover take 246
//! bytes each (as without deflate); 5,000 with context takeover both ways, each after one 1 KiB
//! message each way, take 339,821 bytes each (332 KiB: the compressor's 312 KiB and the inflater's
//! 20 KiB).
//!
//! A message being received holds its inflated bytes until the next read, as uncompressed
//! messages assembled from fragments do.

pub mod codec;
pub mod negotiate;
mod pool;

pub use codec::{Compressor, InflateError, Inflater};
pub use pool::{Pool, PoolStats};

/// What one side agreed to do when compressing (its own messages, or the peer's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Each message is compressed alone (the compressor is reset between messages).
    pub no_context_takeover: bool,
    /// The largest LZ77 window used, 8–15.
    pub max_window_bits: u8,
}

/// Agreed parameters, as the server's answer states them (`None`: the parameter was absent,
/// that is, a window of 15).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub server_no_context_takeover: bool,
    pub client_no_context_takeover: bool,
    pub server_max_window_bits: Option<u8>,
    pub client_max_window_bits: Option<u8>,
}

impl Negotiated {
    /// How the server compresses.
    pub fn server(&self) -> Params {
        Params {
            no_context_takeover: self.server_no_context_takeover,
            max_window_bits: self.server_max_window_bits.unwrap_or(15),
        }
    }

    /// How the client compresses.
    pub fn client(&self) -> Params {
        Params {
            no_context_takeover: self.client_no_context_takeover,
            max_window_bits: self.client_max_window_bits.unwrap_or(15),
        }
    }
}

/// Settings of permessage-deflate, for either role. Parameters take the RFC's names: for a
/// server they are what it answers (whatever the client offered, within what RFC 7692 allows
/// a server to impose); for a client, what it offers and asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeflateConfig {
    /// The server compresses each message alone. A server answers with it always when set
    /// (and whenever the client asks): its sessions then share one compressor per worker and
    /// hold none of their own. A client asks for it. Default `true`: an idle connection costs
    /// nothing, and chat-sized messages gain little from the previous message's window.
    pub server_no_context_takeover: bool,
    /// The client compresses each message alone. A server answers with it always when set
    /// (and whenever the client hints it), so it needs no inflate window between messages; a
    /// client offers it as a promise. Default `true`.
    pub client_no_context_takeover: bool,
    /// The server's window, 9–15: a server compresses with it (or the smaller one a client asks
    /// for) and says so when under 15; a client asks for it when under 15. Default 15.
    pub server_max_window_bits: u8,
    /// The client's window, 9–15: a server asks the client for it when under 15 and the client
    /// offered the parameter; a client compresses with it (or what the server asks). Default 15.
    pub client_max_window_bits: u8,
    /// Memory level (1–9) of compressors: 7 × 2^(m+6) bytes of output and symbol buffers (zlib-rs
    /// keeps its hash table at 128 KiB whatever the level). Default 8, zlib's.
    pub mem_level: u8,
    /// Compression level, 0–9. Default 6, zlib's.
    pub level: u8,
    /// Messages shorter than this are sent uncompressed (RFC 7692 lets each message choose):
    /// below it the DEFLATE framing costs about what it saves. Default 64 bytes.
    pub min_size: usize,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
            mem_level: 8,
            level: 6,
            min_size: 64,
        }
    }
}

impl DeflateConfig {
    /// Context takeover both ways: better ratios for streams of similar messages, at the
    /// memory cost in the module docs' table.
    pub fn with_context_takeover() -> Self {
        DeflateConfig {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            ..DeflateConfig::default()
        }
    }
}
