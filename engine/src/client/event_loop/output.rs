//! One client connection's outgoing bytes: the cork its sends go into and the backlog of what
//! the socket did not take.
//!
//! Sends append framed, masked bytes to the cork. Once per loop turn the loop calls
//! [`Output::flush`]: one vectored write of backlog then cork, repeated until the socket would
//! block; what is left becomes the backlog (the cork's buffer is swapped in, not copied, when
//! nothing older was waiting). Both buffers keep their capacity, so a connection that keeps up
//! allocates nothing per message.

use std::io::{self, IoSlice, Write};

use crate::connection::Sink;
use crate::frame::apply_mask;

/// Capacity beyond which an emptied buffer is freed rather than kept for reuse.
const KEEP_CAPACITY: usize = 1 << 20;

#[derive(Debug, Default)]
pub(super) struct Output {
    cork: Vec<u8>,
    backlog: Vec<u8>,
    /// `backlog[..sent]` is already written.
    sent: usize,
}

impl Sink for Output {
    fn frame(&mut self, head: &[u8], payload: &[u8], mask: Option<[u8; 4]>) {
        self.cork.extend_from_slice(head);
        let start = self.cork.len();
        self.cork.extend_from_slice(payload);
        if let Some(key) = mask {
            apply_mask(&mut self.cork[start..], key, 0);
        }
    }
}

impl Output {
    /// Bytes the socket refused earlier, still waiting.
    pub fn queued(&self) -> usize {
        self.backlog.len() - self.sent
    }

    /// Everything not yet written: the backlog and the cork.
    pub fn len(&self) -> usize {
        self.queued() + self.cork.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends raw bytes (the handshake request) to the cork.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.cork.extend_from_slice(bytes);
    }

    /// Writes backlog then cork until done or the socket would block; keeps the rest.
    pub fn flush<W: Write>(&mut self, w: &mut W) -> io::Result<()> {
        while !self.is_empty() {
            let iov = [
                IoSlice::new(&self.backlog[self.sent..]),
                IoSlice::new(&self.cork),
            ];
            match w.write_vectored(&iov) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.advance(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        self.settle();
        Ok(())
    }

    /// Marks `n` bytes written, oldest first.
    fn advance(&mut self, n: usize) {
        let queued = self.queued();
        if n < queued {
            self.sent += n;
            return;
        }
        // The backlog is out; the cork's unwritten part becomes the backlog.
        std::mem::swap(&mut self.backlog, &mut self.cork);
        self.cork.clear();
        self.sent = n - queued;
    }

    /// After a flush: the cork's leftovers move behind the backlog; empty buffers are reset.
    fn settle(&mut self) {
        if !self.cork.is_empty() {
            if self.queued() == 0 {
                std::mem::swap(&mut self.backlog, &mut self.cork);
                self.sent = 0;
            } else {
                if self.sent > self.backlog.len() / 2 {
                    self.backlog.drain(..self.sent);
                    self.sent = 0;
                }
                self.backlog.extend_from_slice(&self.cork);
            }
            self.cork.clear();
        }
        if self.queued() == 0 {
            self.backlog.clear();
            self.sent = 0;
        }
        for buf in [&mut self.cork, &mut self.backlog] {
            if buf.is_empty() && buf.capacity() > KEEP_CAPACITY {
                *buf = Vec::new();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes at most `room` bytes per flush round, then would block.
    struct Trickle {
        got: Vec<u8>,
        room: usize,
        left: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.left == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.left).min(7);
            self.got.extend_from_slice(&buf[..n]);
            self.left -= n;
            Ok(n)
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let mut total = 0;
            for buf in bufs {
                match self.write(buf) {
                    Ok(n) => {
                        total += n;
                        if n < buf.len() {
                            break;
                        }
                    }
                    Err(e) if total == 0 => return Err(e),
                    Err(_) => break,
                }
            }
            Ok(total)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_keep_order_across_flushes() {
        for room in [1, 5, 13, 64, 1000] {
            let mut out = Output::default();
            let mut sock = Trickle {
                got: Vec::new(),
                room,
                left: room,
            };
            let mut expected = Vec::new();
            for round in 0..50u8 {
                let chunk: Vec<u8> = (0..usize::from(round % 17) + 1)
                    .map(|i| round ^ i as u8)
                    .collect();
                out.extend(&chunk);
                expected.extend_from_slice(&chunk);
                out.flush(&mut sock).unwrap();
                assert_eq!(out.len() + sock.got.len(), expected.len());
                sock.left = sock.room;
            }
            while !out.is_empty() {
                out.flush(&mut sock).unwrap();
                sock.left = sock.room;
            }
            assert_eq!(sock.got, expected, "room {room}");
        }
    }

    #[test]
    fn frames_are_masked_into_the_cork() {
        let mut out = Output::default();
        out.frame(&[0x81, 0x83], b"abc", Some([1, 2, 3, 4]));
        let mut sink = Vec::new();
        out.flush(&mut sink).unwrap();
        assert_eq!(sink, [0x81, 0x83, b'a' ^ 1, b'b' ^ 2, b'c' ^ 3]);
        assert!(out.is_empty());
    }
}
