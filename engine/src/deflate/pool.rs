//! The per-thread [`Pool`]: the shared compressors of sessions without context takeover, the
//! inflaters lent to their messages, and compress-once for payloads shared by many sessions.

use std::collections::VecDeque;

use bytes::Bytes;

use super::codec::{Compressor, Inflater};
use super::DeflateConfig;

/// Spare inflaters kept (each 19 to 51 KiB); more are dropped when given back.
const SPARE_INFLATERS: usize = 4;
/// Shared payloads whose compressed form is remembered until [`Pool::end_turn`].
const CACHED: usize = 16;

/// Counts of what a pool did, for tests and statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Messages compressed by the pool's shared compressors.
    pub compressed: u64,
    /// Sends of a shared payload that reused its compressed form (compress once for many).
    pub reused: u64,
}

#[derive(Debug)]
struct Cached {
    source: Bytes,
    window_bits: u8,
    compressed: Bytes,
}

/// What the sessions of one thread (an event loop's worker) share for permessage-deflate.
/// Nothing in it is state of a session: a session without context takeover borrows from it for
/// one message at a time, so an idle session holds no compression memory.
#[derive(Debug)]
pub struct Pool {
    level: u8,
    mem_level: u8,
    min_size: usize,
    /// Boxed as connections hold them: one moves between a connection and the pool as is.
    #[allow(clippy::vec_box)]
    inflaters: Vec<Box<Inflater>>,
    /// One per window size in use, reset after each message.
    compressors: Vec<Compressor>,
    /// Compressed forms of shared payloads; the source is held so that its address cannot be
    /// reused by another payload while the entry lives.
    cache: VecDeque<Cached>,
    /// Scratch space for compressed messages, lent by [`Pool::take_buf`].
    buf: Vec<u8>,
    stats: PoolStats,
}

impl Default for Pool {
    fn default() -> Self {
        Pool::new(&DeflateConfig::default())
    }
}

impl Pool {
    /// A pool for `config`'s compression level, memory level and smallest message compressed.
    pub fn new(config: &DeflateConfig) -> Self {
        Pool {
            level: config.level,
            mem_level: config.mem_level,
            min_size: config.min_size,
            inflaters: Vec::new(),
            compressors: Vec::new(),
            cache: VecDeque::new(),
            buf: Vec::new(),
            stats: PoolStats::default(),
        }
    }

    pub fn stats(&self) -> PoolStats {
        self.stats
    }

    /// The counts since the last call.
    pub fn take_stats(&mut self) -> PoolStats {
        std::mem::take(&mut self.stats)
    }

    /// Whether a message of `len` bytes is worth compressing (`min_size` and up).
    pub fn worth_compressing(&self, len: usize) -> bool {
        len >= self.min_size
    }

    /// A compressor of a connection's own (context takeover), with the pool's settings.
    pub fn new_compressor(&self, window_bits: u8) -> Compressor {
        Compressor::new(self.level, window_bits, self.mem_level)
    }

    /// An inflater for one message (window 15, which inflates any window).
    pub fn take_inflater(&mut self) -> Box<Inflater> {
        self.inflaters
            .pop()
            .unwrap_or_else(|| Box::new(Inflater::new(15)))
    }

    /// Gives back an inflater taken with [`Pool::take_inflater`] once its message is over.
    pub fn give_inflater(&mut self, mut inflater: Box<Inflater>) {
        if self.inflaters.len() < SPARE_INFLATERS && inflater.window_bits() == 15 {
            inflater.reset();
            self.inflaters.push(inflater);
        }
    }

    /// Compresses one message alone with the shared compressor for `window_bits`, appending
    /// to `out`.
    pub fn compress(&mut self, window_bits: u8, parts: &[&[u8]], out: &mut Vec<u8>) {
        let window_bits = window_bits.clamp(9, 15);
        let index = match self
            .compressors
            .iter()
            .position(|c| c.window_bits() == window_bits)
        {
            Some(i) => i,
            None => {
                let c = Compressor::new(self.level, window_bits, self.mem_level);
                self.compressors.push(c);
                self.compressors.len() - 1
            }
        };
        let compressor = &mut self.compressors[index];
        compressor.compress(parts, out);
        compressor.reset();
        self.stats.compressed += 1;
    }

    /// The compressed form of a payload shared by many sessions, made once per window size
    /// until [`Pool::end_turn`]: the per-recipient work of a fan-out is then a lookup.
    pub fn compress_shared(&mut self, payload: &Bytes, window_bits: u8) -> Bytes {
        let hit = self.cache.iter().find(|c| {
            c.window_bits == window_bits
                && c.source.as_ptr() == payload.as_ptr()
                && c.source.len() == payload.len()
        });
        if let Some(hit) = hit {
            self.stats.reused += 1;
            return hit.compressed.clone();
        }
        let mut out = Vec::with_capacity(payload.len() / 2 + 64);
        self.compress(window_bits, &[payload], &mut out);
        let compressed = Bytes::from(out);
        if self.cache.len() == CACHED {
            self.cache.pop_front();
        }
        self.cache.push_back(Cached {
            source: payload.clone(),
            window_bits,
            compressed: compressed.clone(),
        });
        compressed
    }

    /// Forgets the compressed forms of shared payloads (the driver calls it once per loop
    /// turn, so that no payload is kept alive longer than its fan-out).
    pub fn end_turn(&mut self) {
        self.cache.clear();
    }

    /// An empty buffer to compress into (give it back with [`Pool::give_buf`]).
    pub fn take_buf(&mut self) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf
    }

    pub fn give_buf(&mut self, buf: Vec<u8>) {
        // A buffer grown by one huge message is not kept.
        if buf.capacity() <= 1 << 20 {
            self.buf = buf;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deflate::codec::TRAILER;

    #[test]
    fn a_shared_payload_is_compressed_once_per_window_and_turn() {
        let mut pool = Pool::default();
        let payload = Bytes::from(b"{\"message\":\"hello, hello, hello\"}".repeat(10));
        let a = pool.compress_shared(&payload, 15);
        let b = pool.compress_shared(&payload, 15);
        let c = pool.compress_shared(&payload, 9);
        assert_eq!(a, b);
        assert_eq!(a.as_ptr(), b.as_ptr(), "the same bytes, not a copy");
        assert_eq!(
            pool.stats(),
            PoolStats {
                compressed: 2,
                reused: 1
            }
        );
        // An equal payload elsewhere is another payload.
        let other = Bytes::from(payload.to_vec());
        let _ = pool.compress_shared(&other, 15);
        assert_eq!(pool.stats().compressed, 3);
        pool.end_turn();
        let _ = pool.compress_shared(&payload, 15);
        assert_eq!(pool.stats().compressed, 4);
        for packed in [a, c] {
            let mut inf = pool.take_inflater();
            let mut out = Vec::new();
            inf.inflate(&packed, &mut out, 1 << 20).unwrap();
            inf.inflate(&TRAILER, &mut out, 1 << 20).unwrap();
            assert_eq!(out, payload);
            pool.give_inflater(inf);
        }
    }
}
