//! Outgoing bytes: the cork, each connection's backlog, the send path and the owed-drain rule.
//!
//! Everything a connection sends while the loop works on it (replies written by the protocol
//! core, the handler's sends) goes into a [`Cork`] and is written with one vectored write when
//! the loop is done with that connection — so everything answered to one read goes out in one
//! syscall. The server shares one cork between all its connections (a connection that keeps up
//! owns no write buffer at all); the client keeps one per connection, since its sends may come
//! between turns. What the socket does not take moves into the connection's [`Backlog`], which
//! is written before anything newer.
//!
//! The backlog also keeps the books of the drain rule (see the [module docs](super)): a send
//! answered `Queued` or `Dropped` owes one drain, paid by [`flush_and_drain`] as soon as the
//! backlog is empty after a flush, wherever that flush happens.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use bytes::Bytes;

use super::SendStatus;
use crate::connection::Sink;
use crate::frame::apply_mask;

/// Corked bytes beyond which a send writes to the socket at once instead of at the end of the
/// callback. 64 KiB: large enough that small messages still share one syscall, small enough
/// that a big burst is not staged twice.
pub const CORK_LIMIT: usize = 64 << 10;

/// A borrowed payload at least this large is written straight from the caller's buffer (with
/// whatever is corked before it, in one vectored write) instead of being copied into the cork:
/// 16 KiB, where the copy starts to cost more than the extra syscall it saves.
pub const WRITE_THROUGH: usize = 16 << 10;

/// Drains paid to one connection in one go before the loop serves the others (a producer
/// whose peer keeps up would otherwise hold the loop); the rest is paid in the next turn.
pub const DRAIN_ROUNDS: usize = 16;

/// Most slices handed to one `writev`.
const MAX_IOV: usize = 64;

/// The loop's shared staging area for the connection it is serving.
#[derive(Debug, Default)]
pub struct Cork {
    buf: Vec<u8>,
    /// Shared payloads, each to be written after `buf[..at]`.
    shared: Vec<(usize, Bytes)>,
    /// Total length of `shared`.
    shared_len: usize,
    /// Where frames (messages) start, as offsets into what is corked: what is not started
    /// when a session is let go can be dropped whole (see [`Backlog::discard_unstarted`]).
    starts: Vec<usize>,
    /// A write error met by an early flush, reported by the next `flush_into`.
    error: Option<io::Error>,
}

impl Sink for Cork {
    fn frame(&mut self, head: &[u8], payload: &[u8], mask: Option<[u8; 4]>) {
        self.mark();
        self.buf.extend_from_slice(head);
        let start = self.buf.len();
        self.buf.extend_from_slice(payload);
        if let Some(key) = mask {
            apply_mask(&mut self.buf[start..], key, 0);
        }
    }
}

impl Cork {
    /// Appends bytes that continue what is corked (an HTTP head, a frame's parts).
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Records that a frame starts here.
    pub fn mark(&mut self) {
        self.starts.push(self.len());
    }

    /// Queues a frame: `head` followed by a payload shared with other connections (not
    /// copied).
    pub fn frame_shared(&mut self, head: &[u8], payload: Bytes) {
        self.mark();
        self.buf.extend_from_slice(head);
        self.push_shared(payload);
    }

    /// Appends a shared payload that continues what is corked.
    fn push_shared(&mut self, payload: Bytes) {
        self.shared_len += payload.len();
        self.shared.push((self.buf.len(), payload));
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty() && self.shared.is_empty()
    }

    pub fn len(&self) -> usize {
        self.buf.len() + self.shared_len
    }

    /// Flushes in the middle of a callback (the cork grew large): like `flush_into`, but an
    /// error is kept for the `flush_into` that ends the callback.
    pub fn flush_early<W: Write>(&mut self, w: &mut W, backlog: &mut Backlog) {
        if self.error.is_none() {
            if let Err(e) = self.flush_into(w, backlog) {
                self.error = Some(e);
            }
        }
    }

    /// Calls `f` on each piece in order.
    fn for_each_piece<'a>(&'a self, mut f: impl FnMut(&'a [u8])) {
        let mut last = 0;
        for (at, payload) in &self.shared {
            f(&self.buf[last..*at]);
            f(payload);
            last = *at;
        }
        f(&self.buf[last..]);
    }

    /// Writes the corked bytes (after the backlog, if any) and moves what the socket did not
    /// take into `backlog`. Leaves the cork empty.
    pub fn flush_into<W: Write>(&mut self, w: &mut W, backlog: &mut Backlog) -> io::Result<()> {
        if let Some(e) = self.error.take() {
            self.clear();
            return Err(e);
        }
        if self.is_empty() {
            return backlog.flush(w);
        }
        if !backlog.is_empty() {
            self.spill(backlog, 0);
            return backlog.flush(w);
        }
        let mut done = 0;
        if let Err(e) = self.write_pieces(w, &[], &mut done) {
            self.clear();
            return Err(e);
        }
        self.spill(backlog, done);
        Ok(())
    }

    /// Writes the corked pieces and then `extra`, from byte `done` on, until everything is
    /// written or the socket would block; `done` counts what was written.
    fn write_pieces<'a, W: Write>(
        &'a self,
        w: &mut W,
        extra: &[&'a [u8]],
        done: &mut usize,
    ) -> io::Result<()> {
        let total = self.len() + extra.iter().map(|p| p.len()).sum::<usize>();
        while *done < total {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut count = 0;
            let mut skip = *done;
            let mut add = |piece: &'a [u8]| {
                if count == MAX_IOV || piece.is_empty() {
                    return;
                }
                if skip >= piece.len() {
                    skip -= piece.len();
                    return;
                }
                iov[count] = IoSlice::new(&piece[skip..]);
                skip = 0;
                count += 1;
            };
            self.for_each_piece(&mut add);
            for piece in extra {
                add(piece);
            }
            match w.write_vectored(&iov[..count]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => *done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes the cork and then a frame whose payload the caller lends (`head`, `payload`)
    /// in one vectored write, so a large payload is not copied into the cork first. What the
    /// socket does not take goes to the backlog (only that part is copied). Falls back to
    /// corking when bytes are already queued.
    pub fn write_through<W: Write>(
        &mut self,
        w: &mut W,
        backlog: &mut Backlog,
        head: &[u8],
        payload: &[u8],
    ) {
        if self.error.is_some() || !backlog.is_empty() {
            self.mark();
            self.buf.extend_from_slice(head);
            self.buf.extend_from_slice(payload);
            return;
        }
        let corked = self.len();
        let mut done = 0;
        if let Err(e) = self.write_pieces(w, &[head, payload], &mut done) {
            self.clear();
            self.error = Some(e);
            return;
        }
        self.spill(backlog, done.min(corked));
        if done <= corked {
            backlog.mark_end();
        }
        let skip = done.saturating_sub(corked);
        let skip = backlog.push_tail(head, skip);
        backlog.push_tail(payload, skip);
    }

    /// Moves everything after the first `skip` bytes into the backlog, with the starts of the
    /// frames that are not started yet.
    fn spill(&mut self, backlog: &mut Backlog, mut skip: usize) {
        let end = backlog.end();
        for &at in self
            .starts
            .iter()
            .filter(|&&at| at >= skip && at < self.len())
        {
            backlog.mark_at(end + (at - skip) as u64);
        }
        let mut last = 0;
        let shared = std::mem::take(&mut self.shared);
        self.shared_len = 0;
        for (at, payload) in shared {
            skip = backlog.push_tail(&self.buf[last..at], skip);
            skip = backlog.push_shared(payload, skip);
            last = at;
        }
        backlog.push_tail(&self.buf[last..], skip);
        self.clear();
    }

    /// Throws away what was corked (for a connection that is being dropped).
    pub fn discard(&mut self) {
        self.error = None;
        self.clear();
    }

    /// Throws away the frames corked so far, keeping what came before the first of them (an
    /// HTTP head): for a session let go, whose unsent messages will never be read.
    pub fn discard_frames(&mut self) {
        if let Some(&first) = self.starts.first() {
            self.truncate(first);
        }
        self.starts.clear();
    }

    /// Keeps the first `keep` bytes of what is corked.
    fn truncate(&mut self, keep: usize) {
        let mut seen = 0; // bytes of the corked stream before `last`'s shared piece
        let mut last = 0; // where in `buf` the previous shared piece sat
        let mut kept = Vec::new();
        for (at, mut payload) in std::mem::take(&mut self.shared) {
            let plain = at - last;
            if seen + plain >= keep {
                break;
            }
            seen += plain;
            last = at;
            if seen + payload.len() >= keep {
                payload.truncate(keep - seen);
                seen = keep;
                kept.push((at, payload));
                break;
            }
            seen += payload.len();
            kept.push((at, payload));
        }
        self.buf.truncate(last + (keep - seen));
        self.shared_len = kept.iter().map(|(_, p)| p.len()).sum();
        self.shared = kept;
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.shared.clear();
        self.shared_len = 0;
        self.starts.clear();
        if self.buf.capacity() > 1 << 20 {
            self.buf = Vec::new();
        }
    }
}

/// A connection's unsent bytes, oldest first, and whether it is owed a drain. An idle
/// connection's backlog holds no allocation: the queue is boxed, and made when bytes wait.
#[derive(Debug, Default)]
pub struct Backlog {
    queue: Option<Box<Queue>>,
    /// A send was answered `Queued` or `Dropped` and no drain has been paid since.
    drain_owed: bool,
    /// Sends answered `Dropped` since the loop last took the count (to report them).
    dropped: u32,
}

/// The bytes of a non-empty backlog.
#[derive(Debug, Default)]
struct Queue {
    chunks: VecDeque<Bytes>,
    len: usize,
    /// Position of the first byte in the connection's output since this queue was made.
    base: u64,
    /// Positions where frames that are not started yet begin, ascending.
    starts: VecDeque<u64>,
}

impl Backlog {
    /// The status of a send just accepted (corked or queued): `Written` while nothing waits for
    /// the socket, else `Queued`, which owes a drain.
    pub fn accepted(&mut self) -> SendStatus {
        if self.is_empty() {
            SendStatus::Written
        } else {
            self.drain_owed = true;
            SendStatus::Queued
        }
    }

    /// The status of a send refused at the cap: `Dropped`, which owes a drain.
    pub fn refused(&mut self) -> SendStatus {
        self.drain_owed = true;
        self.dropped = self.dropped.saturating_add(1);
        SendStatus::Dropped
    }

    /// Owes a drain without a send (the loop told the application the queue is long).
    pub fn owe_drain(&mut self) {
        self.drain_owed = true;
    }

    /// Whether a drain is owed (whatever is queued).
    pub fn owes_drain(&self) -> bool {
        self.drain_owed
    }

    /// Settles the drain owed (the caller pays it).
    pub fn settle_drain(&mut self) {
        self.drain_owed = false;
    }

    /// Sends refused since the last call.
    pub fn take_dropped(&mut self) -> u32 {
        std::mem::take(&mut self.dropped)
    }

    /// True when a drain is owed and nothing is queued: it must be paid now (no writable edge
    /// will come for an empty backlog).
    pub fn drain_due(&self) -> bool {
        self.drain_owed && self.is_empty()
    }

    /// Takes a due drain: true (and the debt is settled) when [`Backlog::drain_due`].
    pub fn take_drain(&mut self) -> bool {
        let due = self.drain_due();
        if due {
            self.drain_owed = false;
        }
        due
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_none()
    }

    /// Bytes waiting for the socket.
    pub fn len(&self) -> usize {
        self.queue.as_ref().map_or(0, |q| q.len)
    }

    /// The position just after the last byte queued.
    fn end(&self) -> u64 {
        self.queue.as_ref().map_or(0, |q| q.base + q.len as u64)
    }

    /// Records that a frame starts at `at` (at or after the end).
    fn mark_at(&mut self, at: u64) {
        self.queue
            .get_or_insert_with(Box::default)
            .starts
            .push_back(at);
    }

    /// Records that the next byte queued starts a frame.
    fn mark_end(&mut self) {
        let end = self.end();
        self.mark_at(end);
    }

    /// Appends `bytes` minus its first `skip`; returns what is left of `skip`.
    fn push_tail(&mut self, bytes: &[u8], skip: usize) -> usize {
        if skip >= bytes.len() {
            return skip - bytes.len();
        }
        self.push(Bytes::copy_from_slice(&bytes[skip..]));
        0
    }

    fn push_shared(&mut self, mut bytes: Bytes, skip: usize) -> usize {
        if skip >= bytes.len() {
            return skip - bytes.len();
        }
        let _ = bytes.split_to(skip);
        self.push(bytes);
        0
    }

    fn push(&mut self, bytes: Bytes) {
        let queue = self.queue.get_or_insert_with(Box::default);
        queue.len += bytes.len();
        queue.chunks.push_back(bytes);
    }

    /// Writes until the backlog is empty or the socket would block.
    pub fn flush<W: Write>(&mut self, w: &mut W) -> io::Result<()> {
        while let Some(queue) = self.queue.as_mut() {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut count = 0;
            for (slot, chunk) in iov.iter_mut().zip(&queue.chunks) {
                *slot = IoSlice::new(chunk);
                count += 1;
            }
            let n = match w.write_vectored(&iov[..count]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            };
            self.advance(n);
        }
        Ok(())
    }

    fn advance(&mut self, mut n: usize) {
        let Some(queue) = self.queue.as_mut() else {
            return;
        };
        queue.len -= n;
        queue.base += n as u64;
        while queue.starts.front().is_some_and(|&at| at < queue.base) {
            queue.starts.pop_front();
        }
        while n > 0 {
            let front = queue.chunks.front_mut().expect("advance within length");
            if n >= front.len() {
                n -= front.len();
                queue.chunks.pop_front();
            } else {
                let _ = front.split_to(n);
                n = 0;
            }
        }
        if queue.len == 0 {
            self.queue = None;
        }
    }

    /// Drops every queued frame the socket has not started on, keeping the rest of a frame
    /// it took part of (cutting that would corrupt the stream): for a session let go, so that
    /// its last words come right after what the peer already has, and its queue is freed.
    /// Returns the bytes dropped.
    pub fn discard_unstarted(&mut self) -> usize {
        let Some(queue) = self.queue.as_mut() else {
            return 0;
        };
        let Some(&cut) = queue.starts.front() else {
            return 0; // all of it is the rest of a started frame (or not frames at all)
        };
        let mut keep = (cut - queue.base) as usize;
        let dropped = queue.len - keep;
        queue.len = keep;
        queue.starts.clear();
        let mut kept = VecDeque::new();
        while keep > 0 {
            let Some(mut chunk) = queue.chunks.pop_front() else {
                break;
            };
            chunk.truncate(keep);
            keep -= chunk.len();
            kept.push_back(chunk);
        }
        queue.chunks = kept;
        if queue.len == 0 {
            self.queue = None;
        }
        dropped
    }
}

/// A payload to frame: borrowed (copied into the cork) or shared (referenced, never copied).
#[derive(Debug)]
pub enum Payload<'a> {
    Copied(&'a [u8]),
    Shared(Bytes),
    /// A small copied prefix followed by a shared rest (a STOMP MESSAGE: per-subscriber head,
    /// shared body).
    Parts(&'a [u8], Bytes),
}

impl Payload<'_> {
    pub fn len(&self) -> usize {
        match self {
            Payload::Copied(p) => p.len(),
            Payload::Shared(p) => p.len(),
            Payload::Parts(a, b) => a.len() + b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The send path: queues one frame (`head`, already encoded, then `payload`) for a connection
/// whose unsent bytes are `backlog` plus what is in `cork`, checked against `cap` first.
///
/// A frame that would take the connection over `cap` is refused (`Dropped`) unless nothing is
/// waiting at all (so one message larger than the cap still reaches a reader that keeps up).
/// Large borrowed payloads are written through; once the cork holds [`CORK_LIMIT`] bytes it
/// is flushed at once. Write errors are kept in the cork for the next [`Cork::flush_into`].
pub fn queue_frame<W: Write>(
    cork: &mut Cork,
    w: &mut W,
    backlog: &mut Backlog,
    cap: usize,
    head: &[u8],
    payload: Payload<'_>,
) -> SendStatus {
    let queued = backlog.len() + cork.len();
    if queued > 0 && queued + head.len() + payload.len() > cap {
        return backlog.refused();
    }
    match payload {
        Payload::Copied(p) if p.len() >= WRITE_THROUGH => cork.write_through(w, backlog, head, p),
        Payload::Copied(p) => cork.frame(head, p, None),
        Payload::Shared(p) => cork.frame_shared(head, p),
        Payload::Parts(prefix, p) => {
            cork.mark();
            cork.extend(head);
            cork.extend(prefix);
            cork.push_shared(p);
        }
    }
    if cork.len() >= CORK_LIMIT {
        cork.flush_early(w, backlog);
    }
    backlog.accepted()
}

/// A connection's output as the drain rule sees it: the loop implements this over its
/// connection and handler.
pub trait Drains {
    /// Writes what is corked after the backlog; what the socket refuses joins the backlog.
    fn flush(&mut self) -> io::Result<()>;
    fn backlog(&self) -> &Backlog;
    fn backlog_mut(&mut self) -> &mut Backlog;
    /// Calls the handler's `on_drain`.
    fn on_drain(&mut self);
}

/// The owed-drain rule, the one place it is applied: flushes, then pays every drain that is
/// due (calling `on_drain` and flushing what it sent) for at most [`DRAIN_ROUNDS`] rounds.
/// Returns true when a drain is still due, so that the loop comes back to this connection in
/// its next turn (an empty backlog gets no writable edge to remind it).
pub fn flush_and_drain(c: &mut impl Drains) -> io::Result<bool> {
    c.flush()?;
    for _ in 0..DRAIN_ROUNDS {
        if !c.backlog_mut().take_drain() {
            return Ok(false);
        }
        c.on_drain();
        c.flush()?;
    }
    Ok(c.backlog().drain_due())
}

#[cfg(test)]
mod drain_tests;

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes at most `room` bytes in all, then would block.
    struct Tight {
        got: Vec<u8>,
        room: usize,
    }

    impl Write for Tight {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.room - n);
                self.got.extend_from_slice(&b[..take]);
                n += take;
                if n == self.room {
                    break;
                }
            }
            self.room -= n;
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Letting a session go keeps exactly the frame the socket is in the middle of: at every
    /// point a socket can stop, over every kind of payload, and whether the frames were still
    /// corked or already queued.
    #[test]
    fn discarding_keeps_the_started_frame_and_drops_the_rest() {
        let big: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
        // (head, payload, how): 0 copied, 1 shared, 2 parts, 3 written through.
        let frames: Vec<(Vec<u8>, Vec<u8>, u8)> = vec![
            (b"H1".to_vec(), b"one".to_vec(), 0),
            (b"H2".to_vec(), b"two-shared".to_vec(), 1),
            (b"H3".to_vec(), b"three-parts".to_vec(), 2),
            (b"H4".to_vec(), big.clone(), 3),
            (b"H5".to_vec(), b"five".to_vec(), 0),
        ];
        let mut stream = b"HTTP head;".to_vec();
        let mut ends = Vec::new();
        for (h, p, _) in &frames {
            stream.extend_from_slice(h);
            stream.extend_from_slice(p);
            ends.push(stream.len());
        }
        for room in (0..stream.len() + 2).step_by(7).chain([10, 11, 12, 15, 16]) {
            let mut cork = Cork::default();
            let mut backlog = Backlog::default();
            let mut w = Tight {
                got: Vec::new(),
                room,
            };
            cork.extend(b"HTTP head;");
            for (h, p, how) in &frames {
                let payload = match how {
                    0 => Payload::Copied(p),
                    1 => Payload::Shared(Bytes::from(p.clone())),
                    2 => Payload::Parts(&p[..3], Bytes::copy_from_slice(&p[3..])),
                    _ => Payload::Copied(p),
                };
                let _ = queue_frame(&mut cork, &mut w, &mut backlog, usize::MAX, h, payload);
            }
            cork.flush_into(&mut w, &mut backlog).unwrap();
            let written = w.got.len();
            backlog.discard_unstarted();
            w.room = usize::MAX;
            backlog.flush(&mut w).unwrap();
            // What comes out: everything written, then the rest of the frame it stopped in.
            let want = if written <= 10 {
                10.max(written)
            } else {
                let end = ends
                    .iter()
                    .copied()
                    .find(|&e| e >= written)
                    .unwrap_or(written);
                // A frame that had not started (the socket stopped right at its start) goes.
                let start = std::iter::once(10).chain(ends.iter().copied());
                if start.clone().any(|s| s == written) {
                    written
                } else {
                    end
                }
            };
            assert_eq!(w.got.len(), want, "room {room}, {written} written");
            assert_eq!(w.got, stream[..want], "room {room}");
        }
        // Frames still in the cork go too, the HTTP head before them stays.
        let mut cork = Cork::default();
        cork.extend(b"HTTP head;");
        cork.frame(b"H1", b"one", None);
        cork.frame_shared(b"H2", Bytes::from_static(b"two"));
        cork.discard_frames();
        assert_eq!(cork.len(), 10);
        let mut sink = Vec::new();
        let mut backlog = Backlog::default();
        cork.flush_into(&mut sink, &mut backlog).unwrap();
        assert_eq!(sink, b"HTTP head;");
    }

    /// Everything corked, shared and written through comes out in order, whatever the socket
    /// takes at first.
    #[test]
    fn write_through_keeps_order_at_every_partial_write() {
        let payload: Vec<u8> = (0..40_000u32).map(|i| (i * 7) as u8).collect();
        let mut expected = b"corked".to_vec();
        expected.extend_from_slice(b"HEADshared");
        expected.extend_from_slice(b"hd");
        expected.extend_from_slice(&payload);
        for room in [
            0,
            1,
            5,
            6,
            9,
            16,
            17,
            18,
            1000,
            40_017,
            expected.len(),
            expected.len() + 10,
        ] {
            let mut cork = Cork::default();
            cork.extend(b"corked");
            cork.frame_shared(b"HEAD", Bytes::from_static(b"shared"));
            let mut backlog = Backlog::default();
            let mut w = Tight {
                got: Vec::new(),
                room,
            };
            cork.write_through(&mut w, &mut backlog, b"hd", &payload);
            assert!(cork.is_empty());
            assert_eq!(w.got.len() + backlog.len(), expected.len(), "room {room}");
            w.room = usize::MAX;
            backlog.flush(&mut w).unwrap();
            assert_eq!(w.got, expected, "room {room}");
        }
    }
}
