//! The DEFLATE side of permessage-deflate (RFC 7692 §7.2) over byte slices: a [`Compressor`]
//! that turns a message into the payload of a compressed frame, an [`Inflater`] that turns such
//! payloads back into the message under a size limit, and the stored block that lets a
//! per-recipient prefix precede a payload compressed once for many.
//!
//! The backend is `zlib-rs`, a port of zlib to Rust (the one `flate2` uses as its pure-Rust
//! zlib backend), used directly because it exposes what `flate2` does not: the memory level
//! of a compressor. No C, and no `unsafe` in this crate.

use std::fmt;

use zlib_rs::{DeflateConfig, DeflateFlush, InflateFlush, Method, Strategy};

/// What a sync flush ends with, and what RFC 7692 §7.2.1 strips from each compressed message
/// (and §7.2.2 has the receiver append again).
pub const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The largest data a stored block carries (RFC 1951 §3.2.4: LEN is 16 bits).
pub const MAX_STORED: usize = 0xffff;

/// Output grows in steps of at least this much.
const MIN_STEP: usize = 1024;

/// A raw DEFLATE compressor, ending each message with a sync flush.
pub struct Compressor {
    z: zlib_rs::Deflate,
    window_bits: u8,
    mem_level: u8,
}

impl fmt::Debug for Compressor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compressor")
            .field("window_bits", &self.window_bits)
            .finish()
    }
}

impl Compressor {
    /// `level` 0–9, `window_bits` 9–15 (zlib cannot make a window of 8), `mem_level` 1–9;
    /// values outside are clamped.
    pub fn new(level: u8, window_bits: u8, mem_level: u8) -> Self {
        let window_bits = window_bits.clamp(9, 15);
        let mem_level = mem_level.clamp(1, 9);
        let config = DeflateConfig {
            level: i32::from(level.min(9)),
            method: Method::Deflated,
            // Negative: raw DEFLATE, no zlib header or checksum.
            window_bits: -i32::from(window_bits),
            mem_level: i32::from(mem_level),
            strategy: Strategy::Default,
        };
        Compressor {
            z: zlib_rs::Deflate::new_with_config(config),
            window_bits,
            mem_level,
        }
    }

    pub fn window_bits(&self) -> u8 {
        self.window_bits
    }

    /// What zlib-rs allocates for it: 2^(w+2) bytes of window and chains, a 128 KiB hash table,
    /// 7 × 2^(m+6) bytes of output and symbol buffers, and some KiB of state (see the table
    /// in [`crate::deflate`] for how much of it is resident).
    pub fn memory(&self) -> usize {
        (1 << (self.window_bits + 2)) + (128 << 10) + (7 << (self.mem_level + 6)) + (6 << 10)
    }

    /// Forgets everything compressed so far (no context takeover).
    pub fn reset(&mut self) {
        self.z.reset();
    }

    /// Appends to `out` the compressed form of the message made of `parts`, ending with a sync
    /// flush whose trailing `00 00 ff ff` is removed (RFC 7692 §7.2.1). With context takeover
    /// the next message may refer back to this one; call [`Compressor::reset`] between messages
    /// otherwise.
    pub fn compress(&mut self, parts: &[&[u8]], out: &mut Vec<u8>) {
        for part in parts {
            self.run(part, out, DeflateFlush::NoFlush);
        }
        self.run(&[], out, DeflateFlush::SyncFlush);
        if out.ends_with(&TRAILER) {
            out.truncate(out.len() - TRAILER.len());
        }
    }

    fn run(&mut self, mut input: &[u8], out: &mut Vec<u8>, flush: DeflateFlush) {
        loop {
            let start = out.len();
            let room = (input.len() + input.len() / 8 + 64).max(MIN_STEP);
            out.resize(start + room, 0);
            let (in0, out0) = (self.z.total_in(), self.z.total_out());
            let result = self.z.compress(input, &mut out[start..], flush);
            let used = (self.z.total_in() - in0) as usize;
            let made = (self.z.total_out() - out0) as usize;
            out.truncate(start + made);
            input = &input[used..];
            // A stream error cannot happen with a valid configuration and fresh buffers; treat
            // it as done rather than loop.
            if result.is_err() || (made < room && input.is_empty()) {
                return;
            }
        }
    }
}

/// Why a compressed message could not be inflated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InflateError {
    /// Not valid DEFLATE data.
    Data,
    /// It inflates to more than the limit (nothing beyond the limit was kept).
    TooBig,
}

impl fmt::Display for InflateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InflateError::Data => f.write_str("invalid DEFLATE data"),
            InflateError::TooBig => f.write_str("inflates past the message limit"),
        }
    }
}

impl std::error::Error for InflateError {}

/// A raw DEFLATE decompressor.
pub struct Inflater {
    z: zlib_rs::Inflate,
    window_bits: u8,
    /// A final block went by: whatever follows in this message is ignored, and the inflater
    /// must be reset before the next one.
    ended: bool,
}

impl fmt::Debug for Inflater {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inflater")
            .field("window_bits", &self.window_bits)
            .finish()
    }
}

impl Inflater {
    /// `window_bits` 8–15 (clamped): the largest window the peer may use.
    pub fn new(window_bits: u8) -> Self {
        let window_bits = window_bits.clamp(8, 15);
        Inflater {
            z: zlib_rs::Inflate::new(false, window_bits),
            window_bits,
            ended: false,
        }
    }

    pub fn window_bits(&self) -> u8 {
        self.window_bits
    }

    /// Forgets the window (no context takeover). Only for inflaters of window 15: a reset
    /// brings the backend back to its default window.
    pub fn reset(&mut self) {
        debug_assert_eq!(self.window_bits, 15, "reset restores the default window");
        self.z.reset(false);
        self.ended = false;
    }

    /// True once a final block was inflated: reset before the next message.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Inflates `input` (any piece of a message's compressed payload, or the [`TRAILER`] at its
    /// end) and appends the result to `out`, which never grows past `max` bytes: when more
    /// output would follow, [`InflateError::TooBig`] (what was made up to the limit stays).
    pub fn inflate(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        max: usize,
    ) -> Result<(), InflateError> {
        while !self.ended {
            let start = out.len();
            if start >= max {
                // At the limit: one byte more of output proves the message too big.
                let mut probe = [0u8; 1];
                let (used, made, result) = self.step(input, &mut probe);
                input = &input[used..];
                if made > 0 {
                    return Err(InflateError::TooBig);
                }
                self.settle(result)?;
                if used == 0 || input.is_empty() {
                    return Ok(());
                }
                continue;
            }
            let step = (input.len() * 4).max(start).max(MIN_STEP);
            let room = step.min(max - start);
            if out.capacity() < start + room {
                // Doubling as a `Vec` would, but never past the limit.
                let target = (out.capacity() * 2).max(start + room).min(max);
                out.reserve_exact(target - start);
            }
            out.resize(start + room, 0);
            let (used, made, result) = self.step(input, &mut out[start..]);
            out.truncate(start + made);
            input = &input[used..];
            self.settle(result)?;
            if made < room || (used == 0 && made == 0) {
                // Output to spare: everything that can be made from this input is out.
                return Ok(());
            }
        }
        Ok(())
    }

    /// One call of the backend: bytes used, bytes made, and its status.
    fn step(
        &mut self,
        input: &[u8],
        output: &mut [u8],
    ) -> (usize, usize, Result<zlib_rs::Status, zlib_rs::InflateError>) {
        let (in0, out0) = (self.z.total_in(), self.z.total_out());
        let result = self.z.decompress(input, output, InflateFlush::SyncFlush);
        let used = (self.z.total_in() - in0) as usize;
        let made = (self.z.total_out() - out0) as usize;
        (used, made, result)
    }

    fn settle(
        &mut self,
        result: Result<zlib_rs::Status, zlib_rs::InflateError>,
    ) -> Result<(), InflateError> {
        match result {
            Ok(zlib_rs::Status::StreamEnd) => {
                self.ended = true;
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(_) => Err(InflateError::Data),
        }
    }
}

/// Appends `data` as stored (uncompressed) DEFLATE blocks, none final: what lets bytes of
/// one recipient's own go in front of a payload compressed once for all (RFC 1951 §3.2.4).
/// The output must be at a byte boundary, as it is at the start of a message and after a sync
/// flush.
pub fn stored_blocks(data: &[u8], out: &mut Vec<u8>) {
    for chunk in data.chunks(MAX_STORED) {
        let len = chunk.len() as u16;
        out.push(0x00); // BFINAL 0, BTYPE 00, then padding to the byte boundary
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inflate_all(payloads: &[&[u8]], window: u8) -> Vec<u8> {
        let mut inf = Inflater::new(window);
        let mut out = Vec::new();
        for p in payloads {
            inf.inflate(p, &mut out, usize::MAX).unwrap();
        }
        inf.inflate(&TRAILER, &mut out, usize::MAX).unwrap();
        out
    }

    /// RFC 7692 §7.2.3.1: "Hello" compressed alone is `f2 48 cd c9 c9 07 00`.
    #[test]
    fn rfc_hello() {
        let mut c = Compressor::new(6, 15, 8);
        let mut out = Vec::new();
        c.compress(&[b"Hello"], &mut out);
        assert_eq!(out, [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
        assert_eq!(inflate_all(&[&out], 15), b"Hello");
    }

    /// RFC 7692 §7.2.3.2: with context takeover a second "Hello" refers back to the first.
    #[test]
    fn rfc_hello_twice_with_takeover() {
        let mut c = Compressor::new(6, 15, 8);
        let mut first = Vec::new();
        c.compress(&[b"Hello"], &mut first);
        let mut second = Vec::new();
        c.compress(&[b"Hello"], &mut second);
        assert_eq!(second, [0xf2, 0x00, 0x11, 0x00, 0x00]);
        let mut inf = Inflater::new(15);
        let mut out = Vec::new();
        inf.inflate(&first, &mut out, 100).unwrap();
        inf.inflate(&TRAILER, &mut out, 100).unwrap();
        inf.inflate(&second, &mut out, 100).unwrap();
        inf.inflate(&TRAILER, &mut out, 100).unwrap();
        assert_eq!(out, b"HelloHello");
        // Without takeover the second message is the first again.
        c.reset();
        let mut again = Vec::new();
        c.compress(&[b"Hello"], &mut again);
        assert_eq!(again, first);
    }

    /// RFC 7692 §7.2.3.3 and §7.2.3.5: a stored block, and a final block, both inflate.
    #[test]
    fn rfc_stored_and_final_blocks() {
        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        assert_eq!(inflate_all(&[&stored], 15), b"Hello");
        let mut ours = Vec::new();
        stored_blocks(b"Hello", &mut ours);
        assert_eq!(ours, stored[..10]);
        let final_block = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        let mut inf = Inflater::new(15);
        let mut out = Vec::new();
        inf.inflate(&final_block, &mut out, 100).unwrap();
        inf.inflate(&TRAILER, &mut out, 100).unwrap();
        assert_eq!(out, b"Hello");
        assert!(inf.ended());
    }

    /// A prefix in stored blocks followed by a payload compressed alone is one valid message.
    #[test]
    fn stored_prefix_then_shared_payload() {
        let body = b"{\"type\":\"TALK\",\"message\":\"hello hello hello\"}".repeat(20);
        let mut shared = Vec::new();
        Compressor::new(6, 15, 8).compress(&[&body], &mut shared);
        let prefix = b"MESSAGE\nsubscription:sub-7\nmessage-id:42\n\n".repeat(2000);
        let mut message = Vec::new();
        stored_blocks(&prefix, &mut message);
        message.extend_from_slice(&shared);
        let mut want = prefix.clone();
        want.extend_from_slice(&body);
        assert_eq!(inflate_all(&[&message], 15), want);
    }

    #[test]
    fn inflating_stops_at_the_limit() {
        let zeros = vec![0u8; 1 << 20];
        let mut packed = Vec::new();
        Compressor::new(9, 15, 8).compress(&[&zeros], &mut packed);
        assert!(packed.len() < 2000, "{}", packed.len());
        let mut inf = Inflater::new(15);
        let mut out = Vec::new();
        assert_eq!(
            inf.inflate(&packed, &mut out, 1000),
            Err(InflateError::TooBig)
        );
        assert_eq!(out.len(), 1000);
        assert!(out.capacity() <= 1000, "{}", out.capacity());
        // Exactly at the limit is fine.
        let mut inf = Inflater::new(15);
        let mut out = Vec::new();
        inf.inflate(&packed, &mut out, 1 << 20).unwrap();
        inf.inflate(&TRAILER, &mut out, 1 << 20).unwrap();
        assert_eq!(out, zeros);
    }

    #[test]
    fn bad_data_is_an_error() {
        let mut inf = Inflater::new(15);
        let mut out = Vec::new();
        // BTYPE 11 is reserved.
        assert_eq!(
            inf.inflate(&[0xff, 0xff, 0xff], &mut out, 100),
            Err(InflateError::Data)
        );
    }

    #[test]
    fn every_window_round_trips_in_pieces() {
        let text: Vec<u8> = (0..200_000u32)
            .map(|i| b"abcdefghij klmnop"[(i * 7 % 17) as usize] ^ (i / 4096) as u8)
            .collect();
        for window in 9..=15 {
            let mut c = Compressor::new(6, window, 8);
            let mut packed = Vec::new();
            c.compress(&[&text[..1000], &text[1000..]], &mut packed);
            let pieces: Vec<&[u8]> = packed.chunks(777).collect();
            assert_eq!(inflate_all(&pieces, window), text, "window {window}");
        }
    }
}
