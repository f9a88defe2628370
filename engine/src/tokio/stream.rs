//! [`WebSocketStream`]: the core's [`Receiver`] and [`Sender`] over an async byte stream, with
//! the read buffer, the output buffer and its cap.
//!
//! Two rules order [`WebSocketStream::poll_next`]. Output over the cap is written before
//! anything more is decoded, and nothing is read while it stays over: pongs and close echoes the
//! core queues while reading are output like any other, so a peer that sends and never reads
//! stalls its own stream instead of growing ours. Output under the cap is written just before
//! the stream would wait for the socket: replies [`fed`](WebSocketStream::feed) while a batch
//! of buffered messages is handed out go out in one write.
//!
//! Output is the frames in `out`, preceded by `queued`: sealed pieces written with vectored
//! I/O. A server's large uncompressed payload handed in as [`Bytes`] (an echo of a message
//! the stream handed out, say) is queued as it is, behind its header, instead of being copied.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::{CloseReason, Config, Error, Message, Utf8Bytes};
use crate::close::code;
use crate::connection::{DataKind, Event, MaskKeys, Read, Receiver, Role, Sender};
use crate::deflate::{Negotiated, Pool};
use crate::error::ProtocolError;
use crate::frame::OpCode;

/// Payloads at least this long, sent by a server from [`Bytes`] without compression, are
/// written from the caller's buffer rather than copied into the output: under it a copy costs
/// less than the extra piece of a vectored write.
const ZERO_COPY_MIN: usize = 16 << 10;

/// A binary message in one frame up to this long that is not all read yet is waited for whole
/// (its room reserved), so that it is handed out of the read buffer without a copy. Longer ones
/// are assembled by the core as they arrive; a header alone never reserves more than this.
const HOLD_MAX: usize = 256 << 10;

/// At most this many pieces per vectored write.
const MAX_SLICES: usize = 16;

/// Pending output under this many bytes is copied out when a large payload is queued behind
/// it, so `out` keeps its allocation; more is handed over as it is.
const SEAL_COPY_MAX: usize = 4 << 10;

/// A WebSocket over `S`. Read with [`next`](Self::next), write with [`send`](Self::send);
/// both take `&mut self`, so one task drives the connection (a split into halves is not
/// there yet).
#[derive(Debug)]
pub struct WebSocketStream<S> {
    io: S,
    rx: Receiver,
    tx: Sender,
    pool: Pool,
    /// Received bytes the core has not consumed yet.
    inbuf: BytesMut,
    /// Output that goes before `out`: sealed frame bytes and large payloads, in order.
    queued: VecDeque<Bytes>,
    /// Bytes in `queued`.
    queued_len: usize,
    /// Frames to write after `queued`: `out[written..]` is still to go.
    out: Vec<u8>,
    written: usize,
    config: Config,
    protocol: Option<String>,
    /// The stream reached its end.
    eof: bool,
    /// `None` was returned: the connection is over.
    done: bool,
    /// A violation to report once the close frame that answers it is written.
    failed: Option<ProtocolError>,
}

/// An event located for handing out once the core's borrow of the buffers ends.
enum Found {
    /// A whole message at `inbuf[off..off + len]`.
    InBuf {
        text: bool,
        off: usize,
        len: usize,
    },
    Owned(Message),
}

/// Where `slice` starts within the buffer spanning `base..base + len`, if it lies inside it.
fn offset_in(slice: &[u8], base: usize, len: usize) -> Option<usize> {
    let start = slice.as_ptr() as usize;
    (start >= base && start + slice.len() <= base + len).then(|| start - base)
}

fn locate(event: Event<'_>, base: usize, len: usize) -> Found {
    let data = |text: bool, bytes: &[u8]| match offset_in(bytes, base, len) {
        Some(off) => Found::InBuf {
            text,
            off,
            len: bytes.len(),
        },
        None => {
            let copy = Bytes::copy_from_slice(bytes);
            Found::Owned(match text {
                true => Message::Text(Utf8Bytes(copy)),
                false => Message::Binary(copy),
            })
        }
    };
    match event {
        Event::Text(t) => data(true, t.as_bytes()),
        Event::Binary(b) => data(false, b),
        Event::Ping(p) => Found::Owned(Message::Ping(Bytes::copy_from_slice(p))),
        Event::Pong(p) => Found::Owned(Message::Pong(Bytes::copy_from_slice(p))),
        Event::Close(f) => Found::Owned(Message::Close(f.map(|f| CloseReason {
            code: f.code,
            reason: f.reason.to_owned(),
        }))),
    }
}

/// Fills `buf` from the operating system's randomness (masking keys, the handshake nonce).
pub(super) fn os_random(buf: &mut [u8]) {
    if let Err(e) = getrandom::fill(buf) {
        // No entropy source means no safe masking keys: nothing sensible can go on.
        panic!("operating system randomness unavailable: {e}");
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocketStream<S> {
    /// Wraps a stream that has already been upgraded (by hyper, axum or a handshake of your
    /// own): its next bytes are WebSocket frames.
    pub fn from_upgraded(io: S, role: Role, config: Config) -> Self {
        Self::from_parts(io, role, config, BytesMut::new(), None, None)
    }

    /// [`from_upgraded`](Self::from_upgraded) for a handshake of your own that agreed on
    /// permessage-deflate (`deflate`, as the server's answer states it).
    pub fn from_upgraded_with_deflate(
        io: S,
        role: Role,
        config: Config,
        deflate: Negotiated,
    ) -> Self {
        Self::from_parts(io, role, config, BytesMut::new(), None, Some(deflate))
    }

    /// `inbuf`: bytes read past the handshake, already frames.
    pub(super) fn from_parts(
        io: S,
        role: Role,
        config: Config,
        inbuf: BytesMut,
        protocol: Option<String>,
        deflate: Option<Negotiated>,
    ) -> Self {
        let mut tx = match role {
            Role::Server => Sender::server(),
            Role::Client => Sender::client(MaskKeys::new(os_random)),
        };
        let mut rx = Receiver::new(role, config.limits.clone());
        if let Some(n) = deflate {
            let (ours, theirs) = match role {
                Role::Server => (n.server(), n.client()),
                Role::Client => (n.client(), n.server()),
            };
            tx.enable_deflate(ours);
            rx.enable_deflate(theirs);
        }
        let pool = match &config.deflate {
            Some(d) => Pool::new(d),
            None => Pool::default(),
        };
        WebSocketStream {
            io,
            rx,
            tx,
            pool,
            inbuf,
            queued: VecDeque::new(),
            queued_len: 0,
            out: Vec::new(),
            written: 0,
            config,
            protocol,
            eof: false,
            done: false,
            failed: None,
        }
    }

    /// The sub-protocol the handshake agreed on.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// Whether permessage-deflate was agreed.
    pub fn deflates(&self) -> bool {
        self.rx.deflates()
    }

    /// Output bytes not yet taken by the socket.
    pub fn write_buffered(&self) -> usize {
        self.queued_len + self.out.len() - self.written
    }

    /// Bytes held for reading: received but not consumed, and a message in assembly.
    pub fn read_buffered(&self) -> usize {
        self.inbuf.capacity() + self.rx.buffered()
    }

    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The next message, control frames included (pings are already answered). `None` once
    /// the connection is over: both close frames exchanged and our output written, or the
    /// stream ended. `Some(Err(Error::Protocol(_)))` comes once our close frame answering the
    /// violation is written; keep calling it to finish the close handshake (or drop the
    /// stream). Cancel-safe.
    ///
    /// Nothing here reads a clock. After a violation in the middle of a frame the core skips
    /// the rest of that frame before it looks for the peer's close, and a peer that never sends
    /// the rest leaves `next` waiting: bound the close handshake with `tokio::time::timeout`
    /// (`examples/tokio_echo.rs` does).
    pub async fn next(&mut self) -> Option<Result<Message, Error>> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    /// [`next`](Self::next) as a poll function.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, Error>>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            let cap = self.config.write_buffer_cap;
            if self.write_buffered() > cap {
                if let Err(e) = ready!(self.poll_write_out(cx, cap)) {
                    self.done = true;
                    return Poll::Ready(Some(Err(Error::Io(e))));
                }
            }
            if let Some(error) = self.failed {
                if let Err(e) = ready!(self.poll_write_out(cx, 0)) {
                    self.done = true;
                    return Poll::Ready(Some(Err(Error::Io(e))));
                }
                self.failed = None;
                return Poll::Ready(Some(Err(Error::Protocol(error))));
            }
            if let Some(message) = self.decode() {
                return Poll::Ready(Some(Ok(message)));
            }
            if self.failed.is_some() {
                continue;
            }
            if self.rx.is_closed() || self.eof {
                let result = ready!(self.poll_finish(cx));
                self.done = true;
                return Poll::Ready(result.err().map(|e| Err(Error::Io(e))));
            }
            // About to wait for the socket: what is queued goes out first, in one write for
            // everything fed while the buffered messages were handed out.
            if let Err(e) = ready!(self.poll_write_out(cx, cap)) {
                self.done = true;
                return Poll::Ready(Some(Err(Error::Io(e))));
            }
            if let Err(e) = ready!(self.poll_read_more(cx)) {
                self.done = true;
                return Poll::Ready(Some(Err(Error::Io(e))));
            }
            if self.eof && !self.rx.is_closed() {
                return Poll::Ready(Some(Err(Error::Dropped)));
            }
        }
    }

    /// Runs the core over the buffered bytes until it has an event or needs more (or finds a
    /// violation, kept in `failed`).
    fn decode(&mut self) -> Option<Message> {
        loop {
            if let Some(total) = self.rx.whole_frame_len(&self.inbuf) {
                if total <= HOLD_MAX {
                    // Read the rest first: then the core lends the message out of `inbuf`
                    // instead of assembling a copy.
                    self.inbuf.reserve(total - self.inbuf.len());
                    return None;
                }
            }
            let base = self.inbuf.as_ptr() as usize;
            let len = self.inbuf.len();
            let read =
                self.rx
                    .read_with(&mut self.inbuf, &mut self.tx, &mut self.out, &mut self.pool);
            let (consumed, found) = match read {
                Ok(Read { consumed, event }) => (consumed, event.map(|e| locate(e, base, len))),
                Err(failure) => {
                    self.inbuf.advance(failure.consumed);
                    self.failed = Some(failure.error);
                    return None;
                }
            };
            match found {
                Some(Found::InBuf { text, off, len }) => {
                    let frame = self.inbuf.split_to(consumed).freeze();
                    let payload = frame.slice(off..off + len);
                    return Some(match text {
                        true => Message::Text(Utf8Bytes(payload)),
                        false => Message::Binary(payload),
                    });
                }
                Some(Found::Owned(message)) => {
                    self.inbuf.advance(consumed);
                    return Some(message);
                }
                None if consumed == 0 => return None,
                None => self.inbuf.advance(consumed),
            }
        }
    }

    /// Reads once into the spare room of `inbuf`; sets `eof` at the end of the stream.
    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let chunk = self.config.read_chunk;
        if self.inbuf.is_empty() && self.inbuf.capacity() < chunk {
            // All read bytes are consumed and reads have moved into the chunk: once no message
            // handed out still shares the allocation, read into its start again (memory still
            // in cache) instead of walking on through it. Asking for more than the spare room
            // moves the empty buffer to the front when it can, and never allocates. (A buffer
            // still at its front has a whole chunk of room: nothing to ask.)
            let _ = self.inbuf.try_reclaim(self.inbuf.capacity() + 1);
        }
        if self.inbuf.capacity() - self.inbuf.len() < chunk / 4 {
            self.inbuf.reserve(chunk);
        }
        let read = self.io.read_buf(&mut self.inbuf);
        let n = ready!(std::pin::pin!(read).poll(cx))?;
        self.eof = n == 0;
        Poll::Ready(Ok(()))
    }

    /// Writes output until at most `cap` bytes are left (all of it, and a flush, for 0).
    fn poll_write_out(&mut self, cx: &mut Context<'_>, cap: usize) -> Poll<io::Result<()>> {
        while self.write_buffered() > 0 {
            let result = if self.queued.is_empty() {
                Pin::new(&mut self.io).poll_write(cx, &self.out[self.written..])
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let mut n = 0;
                for piece in self.queued.iter().take(MAX_SLICES - 1) {
                    slices[n] = IoSlice::new(piece);
                    n += 1;
                }
                if self.queued.len() < MAX_SLICES && self.written < self.out.len() {
                    slices[n] = IoSlice::new(&self.out[self.written..]);
                    n += 1;
                }
                Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..n])
            };
            match result {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.advance(n),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending if self.write_buffered() > cap => return Poll::Pending,
                Poll::Pending => return Poll::Ready(Ok(())),
            }
        }
        self.out.clear();
        self.written = 0;
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Pending if cap > 0 => Poll::Ready(Ok(())),
            other => other,
        }
    }

    /// Marks `n` written bytes as gone: queued pieces first, then `out`.
    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            match self.queued.front_mut() {
                Some(piece) => {
                    let k = n.min(piece.len());
                    piece.advance(k);
                    self.queued_len -= k;
                    n -= k;
                    if piece.is_empty() {
                        self.queued.pop_front();
                    }
                }
                None => {
                    self.written += n;
                    n = 0;
                }
            }
        }
    }

    /// Moves what `out` still holds to the end of `queued`, so that a piece queued next goes
    /// after it.
    fn seal(&mut self) {
        let pending = self.out.len() - self.written;
        if pending > 0 {
            let piece = if pending <= SEAL_COPY_MAX {
                let piece = Bytes::copy_from_slice(&self.out[self.written..]);
                self.out.clear();
                piece
            } else {
                Bytes::from(std::mem::take(&mut self.out)).slice(self.written..)
            };
            self.queued_len += piece.len();
            self.queued.push_back(piece);
        } else {
            self.out.clear();
        }
        self.written = 0;
    }

    /// Writes everything and ends our side of the stream.
    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_out(cx, 0))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    /// Queues `message` once the output is under the cap, without waiting for it to go out:
    /// [`next`](Self::next) writes it before it waits for the socket, [`flush`](Self::flush)
    /// at once. An echo that feeds each reply and calls `next` writes once per batch read.
    pub async fn feed(&mut self, message: Message) -> Result<(), Error> {
        match &message {
            Message::Text(t) => self.feed_bytes(DataKind::Text, t.as_bytes_shared()).await,
            Message::Binary(b) => self.feed_bytes(DataKind::Binary, b).await,
            Message::Ping(p) => self.feed_with(|tx, out| tx.ping(p, out)).await,
            Message::Pong(p) => self.feed_with(|tx, out| tx.pong(p, out)).await,
            Message::Close(None) => {
                self.feed_with(|tx, out| tx.close(code::NORMAL, "", out))
                    .await
            }
            Message::Close(Some(c)) => {
                self.feed_with(|tx, out| tx.close(c.code, &c.reason, out))
                    .await
            }
        }
    }

    /// Queues a text or binary message from a borrowed payload (copied once, into the
    /// output buffer).
    pub async fn feed_data(&mut self, kind: DataKind, payload: &[u8]) -> Result<(), Error> {
        self.under_cap().await?;
        // Compressed when permessage-deflate is on and the message is long enough.
        self.tx
            .send_with(kind, payload, &mut self.out, &mut self.pool)?;
        Ok(())
    }

    /// Queues a text or binary message held in `Bytes`: a server's large uncompressed payload
    /// goes out from it without a copy.
    async fn feed_bytes(&mut self, kind: DataKind, payload: &Bytes) -> Result<(), Error> {
        let len = payload.len();
        if len < ZERO_COPY_MIN
            || self.tx.role() != Role::Server
            || self.tx.compresses(len, &self.pool)
        {
            return self.feed_data(kind, payload).await;
        }
        self.under_cap().await?;
        self.tx.check_data()?;
        let opcode = match kind {
            DataKind::Text => OpCode::Text,
            DataKind::Binary => OpCode::Binary,
        };
        let (head, n, _) = self.tx.header(opcode, true, len);
        self.out.extend_from_slice(&head[..n]);
        self.seal();
        self.queued_len += len;
        self.queued.push_back(payload.clone());
        Ok(())
    }

    async fn feed_with(
        &mut self,
        frame: impl FnOnce(&mut Sender, &mut Vec<u8>) -> Result<(), crate::error::SendError>,
    ) -> Result<(), Error> {
        self.under_cap().await?;
        frame(&mut self.tx, &mut self.out)?;
        Ok(())
    }

    /// Waits until the output is under the cap. Under it nothing is written here: `next` or
    /// `flush` writes the batch at once.
    async fn under_cap(&mut self) -> Result<(), Error> {
        let cap = self.config.write_buffer_cap;
        if self.write_buffered() > cap {
            poll_fn(|cx| self.poll_write_out(cx, cap)).await?;
        }
        Ok(())
    }

    /// Writes all queued output (and flushes the stream).
    pub async fn flush(&mut self) -> Result<(), Error> {
        poll_fn(|cx| self.poll_write_out(cx, 0)).await?;
        Ok(())
    }

    /// Sends `message` and waits until it is written.
    pub async fn send(&mut self, message: Message) -> Result<(), Error> {
        self.feed(message).await?;
        self.flush().await
    }

    /// Sends text from a `&str` and waits until it is written.
    pub async fn send_text(&mut self, text: &str) -> Result<(), Error> {
        self.feed_data(DataKind::Text, text.as_bytes()).await?;
        self.flush().await
    }

    /// Sends binary data from a slice and waits until it is written.
    pub async fn send_binary(&mut self, data: &[u8]) -> Result<(), Error> {
        self.feed_data(DataKind::Binary, data).await?;
        self.flush().await
    }

    /// Starts the close handshake: sends our close frame and waits until it is written. Then
    /// call [`next`](Self::next) until it returns `None` (the peer's close arrived or the
    /// stream ended); nothing here times out, so bound that with `tokio::time::timeout`.
    pub async fn close(&mut self, code: u16, reason: &str) -> Result<(), Error> {
        self.feed_with(|tx, out| tx.close(code, reason, out))
            .await?;
        self.flush().await
    }

    /// True when both close frames have been exchanged.
    pub fn is_closed(&self) -> bool {
        self.rx.is_closed() && self.tx.is_close_sent()
    }

    /// The stream back, with any bytes read but not consumed.
    pub fn into_inner(self) -> (S, BytesMut) {
        (self.io, self.inbuf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> WebSocketStream<tokio::io::DuplexStream> {
        let (io, _peer) = tokio::io::duplex(64);
        WebSocketStream::from_upgraded(io, Role::Server, Config::default())
    }

    /// Masked client frames for `parts` of one binary message (one part: a whole frame).
    fn frames(parts: &[&[u8]]) -> BytesMut {
        let mut tx = Sender::client(MaskKeys::new(|b| b.fill(0x3c)));
        let mut out = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let fin = i + 1 == parts.len();
            let sent = tx.send_fragment(DataKind::Binary, part, fin, &mut out);
            assert_eq!(sent, Ok(()));
        }
        BytesMut::from(&out[..])
    }

    fn within(bytes: &[u8], range: std::ops::Range<usize>) -> bool {
        range.contains(&(bytes.as_ptr() as usize))
    }

    #[test]
    fn a_whole_message_in_the_read_buffer_is_handed_out_without_a_copy() {
        let mut ws = server();
        ws.inbuf = frames(&[b"zero copy"]);
        let base = ws.inbuf.as_ptr() as usize;
        let range = base..base + ws.inbuf.len();
        match ws.decode() {
            Some(Message::Binary(b)) => {
                assert_eq!(&b[..], b"zero copy");
                assert!(within(&b, range), "the payload was copied");
            }
            other => panic!("expected the message, got {other:?}"),
        }
        assert!(ws.inbuf.is_empty());
    }

    #[test]
    fn a_large_binary_frame_read_in_parts_is_waited_for_and_handed_out_without_a_copy() {
        let mut ws = server();
        let payload: Vec<u8> = (0..100_000).map(|i| i as u8).collect();
        let all = frames(&[&payload]);
        // The first read brings the header and a part: room for the rest is reserved and
        // the core is not asked yet.
        ws.inbuf = BytesMut::from(&all[..1000]);
        assert_eq!(ws.decode(), None);
        assert!(ws.inbuf.capacity() >= all.len());
        assert_eq!(ws.rx.buffered(), 0, "the core started assembling a copy");
        ws.inbuf.extend_from_slice(&all[1000..]);
        let base = ws.inbuf.as_ptr() as usize;
        let range = base..base + ws.inbuf.len();
        match ws.decode() {
            Some(Message::Binary(b)) => {
                assert_eq!(&b[..], &payload[..]);
                assert!(within(&b, range), "the payload was copied");
            }
            other => panic!("expected the message, got {other:?}"),
        }
    }

    #[test]
    fn a_fragmented_message_is_assembled_and_copied_out_once() {
        let mut ws = server();
        ws.inbuf = frames(&[b"two ", b"parts"]);
        let base = ws.inbuf.as_ptr() as usize;
        let range = base..base + ws.inbuf.len();
        match ws.decode() {
            Some(Message::Binary(b)) => {
                assert_eq!(&b[..], b"two parts");
                assert!(!within(&b, range));
            }
            other => panic!("expected the message, got {other:?}"),
        }
    }

    #[test]
    fn a_violation_is_kept_until_its_close_frame_is_written() {
        let mut ws = server();
        let mut out = Vec::new();
        let sent = Sender::server().send(DataKind::Text, b"unmasked", &mut out);
        assert_eq!(sent, Ok(()));
        ws.inbuf = BytesMut::from(&out[..]);
        assert_eq!(ws.decode(), None);
        assert_eq!(ws.failed, Some(ProtocolError::UnmaskedFrame));
        // The close frame (1002) waits in the output: 2 bytes of header, then the code.
        assert_eq!(&ws.out[2..4], &1002u16.to_be_bytes());
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime")
    }

    #[test]
    fn reads_go_to_the_start_of_the_read_buffer_once_its_messages_are_dropped() {
        rt().block_on(async {
            let (server_io, mut client_io) = tokio::io::duplex(1 << 16);
            let mut ws = WebSocketStream::from_upgraded(server_io, Role::Server, Config::default());
            let mut start = None;
            for i in 0..200u32 {
                let frame = frames(&[&i.to_be_bytes().repeat(16)]);
                tokio::io::AsyncWriteExt::write_all(&mut client_io, &frame)
                    .await
                    .expect("write to the duplex pipe");
                let next = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next());
                match next.await.expect("timed out waiting for a message") {
                    Some(Ok(Message::Binary(b))) => {
                        assert_eq!(&b[..4], &i.to_be_bytes());
                        let at = b.as_ptr() as usize;
                        // Each message is read where the first one was: 200 of them would
                        // walk 14 KB into the 64 KiB chunk without the reclaim.
                        assert_eq!(
                            *start.get_or_insert(at),
                            at,
                            "message {i} was read further on"
                        );
                    }
                    other => panic!("expected message {i}, got {other:?}"),
                }
            }
        });
    }

    #[test]
    fn a_large_payload_is_queued_as_it_is_behind_its_header() {
        rt().block_on(async {
            let mut ws = server();
            ws.feed(Message::text("small")).await.expect("feed");
            let big = Bytes::from(vec![7u8; ZERO_COPY_MIN]);
            ws.feed(Message::Binary(big.clone())).await.expect("feed");
            // The small frame and the big one's header were sealed ahead of the payload,
            // which is the caller's own buffer.
            assert_eq!(ws.queued.len(), 2);
            assert_eq!(
                ws.queued[1].as_ptr(),
                big.as_ptr(),
                "the payload was copied"
            );
            assert_eq!(ws.write_buffered(), 7 + 4 + ZERO_COPY_MIN);
            // Under the threshold, and for clients (which mask), payloads are copied.
            let small = Bytes::from(vec![1u8; ZERO_COPY_MIN - 1]);
            ws.feed(Message::Binary(small)).await.expect("feed");
            assert_eq!(ws.queued.len(), 2);
        });
    }

    #[test]
    fn queued_pieces_and_frames_arrive_whole_and_in_order_through_partial_writes() {
        rt().block_on(async {
            // A 1 KiB pipe: every write is partial, and pieces are split at odd places.
            let (server_io, client_io) = tokio::io::duplex(1024);
            let mut ws = WebSocketStream::from_upgraded(server_io, Role::Server, Config::default());
            let mut client =
                WebSocketStream::from_upgraded(client_io, Role::Client, Config::default());
            let big =
                |seed: u8| Bytes::from((0..100_000).map(|i| (i as u8) ^ seed).collect::<Vec<_>>());
            let sent = vec![
                Message::text("first"),
                Message::Binary(big(1)),
                Message::Binary(big(2)),
                Message::text("between"),
                Message::Binary(big(3)),
                Message::text("last"),
            ];
            let expected = sent.clone();
            let writer = async move {
                for message in sent {
                    ws.feed(message).await.expect("feed");
                }
                ws.flush().await.expect("flush");
                ws
            };
            let reader = async {
                let mut got = Vec::new();
                while got.len() < expected.len() {
                    match client.next().await {
                        Some(Ok(message)) => got.push(message),
                        other => panic!("expected a message, got {other:?}"),
                    }
                }
                got
            };
            let writer = tokio::spawn(writer);
            let both = async { (reader.await, writer.await.expect("writer task")) };
            let (got, ws) = tokio::time::timeout(std::time::Duration::from_secs(10), both)
                .await
                .expect("timed out waiting for the six messages through a 1 KiB pipe");
            assert_eq!(got, expected);
            assert_eq!(ws.write_buffered(), 0);
            assert!(ws.queued.is_empty());
        });
    }
}
