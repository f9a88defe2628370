//! The sans-IO WebSocket connection: bytes in, events and frames out (RFC 6455 §5–§7).
//!
//! A [`Connection`] is a [`Receiver`] and a [`Sender`]. The driver (the mio loop, a test, another
//! runtime) calls [`Receiver::read`] with whatever bytes it has; each call consumes a prefix of
//! them and returns at most one [`Event`]. Payloads are unmasked in place and handed out as
//! slices of the caller's buffer when a whole message sits in it, so the common case copies
//! nothing. Only two things are kept between calls: a data frame whose payload is still arriving
//! (its bytes are appended to the message being assembled) and, by the caller, the few unconsumed
//! bytes of an incomplete frame header or control frame (at most 14 + 125 bytes).
//!
//! The replies the protocol requires — pong for ping, the close echo, the close frame that
//! answers a violation — are written by `read` into the caller's [`Sink`], so the driver only
//! moves bytes. Sending is split off into the [`Sender`] so that a handler can answer a message
//! while it still borrows the message's payload.
//!
//! Driver contract: call `read` until it returns `consumed == 0` with no event, keep the
//! unconsumed tail and put it in front of the next bytes read.

use crate::close::{self, CloseFrame};
use crate::config::Limits;
use crate::deflate::codec::TRAILER;
use crate::deflate::{Compressor, InflateError, Inflater, Params, Pool};
use crate::error::{ProtocolError, SendError};
use crate::frame::{apply_mask, FrameHeader, OpCode};
use crate::utf8::Utf8Validator;
use crate::Status;

/// Which end of the connection this is. Clients mask what they send; servers must not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
}

/// Where frames are written. `payload` is masked with `mask` on the way in when it is given.
pub trait Sink {
    fn frame(&mut self, head: &[u8], payload: &[u8], mask: Option<[u8; 4]>);
}

impl Sink for Vec<u8> {
    fn frame(&mut self, head: &[u8], payload: &[u8], mask: Option<[u8; 4]>) {
        self.extend_from_slice(head);
        let start = self.len();
        self.extend_from_slice(payload);
        if let Some(key) = mask {
            apply_mask(&mut self[start..], key, 0);
        }
    }
}

/// What arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
    /// Already answered with a pong.
    Ping(&'a [u8]),
    Pong(&'a [u8]),
    /// The peer's close frame (`None`: it carried no code). Already echoed if we had not sent
    /// a close first. Nothing is read after it.
    Close(Option<CloseFrame<'a>>),
}

/// The result of one [`Receiver::read`] call.
#[derive(Debug, PartialEq, Eq)]
pub struct Read<'a> {
    /// Bytes of the input used up; the rest must be passed again.
    pub consumed: usize,
    pub event: Option<Event<'a>>,
}

/// A protocol violation: a close frame with its code is already in the sink.
#[derive(Debug, PartialEq, Eq)]
pub struct Failure {
    pub error: ProtocolError,
    /// Bytes of the input used up before the violation was detected.
    pub consumed: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RxState {
    Open,
    /// After a violation: frames are skipped without validation, looking only for the peer's
    /// close (so the server can drop TCP as soon as the close handshake completes). `skip` is
    /// what is left of the frame that was being read.
    Draining {
        skip: u64,
    },
    /// The peer's close arrived (or the stream cannot be followed): everything is discarded.
    Closed,
}

/// A data frame whose payload is still arriving.
#[derive(Debug)]
struct InFrame {
    fin: bool,
    mask: Option<[u8; 4]>,
    mask_pos: usize,
    remaining: u64,
}

/// A message being assembled from fragments or from a frame split across reads.
#[derive(Debug)]
struct InMessage {
    text: bool,
    buf: Vec<u8>,
    fragments: usize,
    utf8: Utf8Validator,
    frame: Option<InFrame>,
    /// Every fragment arrived: lent out as an event until the next `read`.
    complete: bool,
    /// RSV1 on its first frame: `buf` holds the inflated bytes (RFC 7692).
    compressed: bool,
}

/// RSV1 in [`FrameHeader::rsv`]: "per-message compressed" under permessage-deflate.
const RSV1: u8 = 0b100;

/// What a step of the read loop found, for the part that must be built after the loop.
enum Found<'a> {
    NeedMore,
    Event(Event<'a>),
    Assembled,
}

/// The receiving half: parses, validates and reassembles.
#[derive(Debug)]
pub struct Receiver {
    role: Role,
    limits: Limits,
    state: RxState,
    /// The message being assembled, boxed so that an idle connection carries one pointer.
    /// Once `complete` it is the message lent out by the previous `read`, freed by the next.
    msg: Option<Box<InMessage>>,
    /// permessage-deflate, once negotiated: how the peer compresses.
    deflate: Option<Params>,
    /// The inflater while one is held: during a compressed message, and between messages
    /// only with context takeover (without it, it is the pool's again). Boxed: an idle
    /// connection carries one pointer.
    inflater: Option<Box<Inflater>>,
}

/// Makes room for `extra` more bytes, doubling as a `Vec` would but never past `max` (the
/// message limit, which the caller has already checked the message against), so that a
/// message of the largest allowed size never holds twice that.
fn grow(buf: &mut Vec<u8>, extra: usize, max: usize) {
    let need = buf.len() + extra;
    if need > buf.capacity() {
        let target = (buf.capacity() * 2).min(max).max(need);
        buf.reserve_exact(target - buf.len());
    }
}

/// Inflates a piece of a compressed message's payload into its buffer (the trailer too at its
/// `end`), validating text as it is made, and gives a pooled inflater back at the end.
fn inflate(
    peer: Params,
    slot: &mut Option<Box<Inflater>>,
    msg: &mut InMessage,
    chunk: &[u8],
    end: bool,
    max: usize,
    pool: &mut Pool,
) -> Result<(), ProtocolError> {
    let inflater = slot.get_or_insert_with(|| match peer.no_context_takeover {
        true => pool.take_inflater(),
        // A window of 8 from a zlib-style compressor may really be 9: 9 inflates both.
        false => Box::new(Inflater::new(peer.max_window_bits.max(9))),
    });
    let before = msg.buf.len();
    let mut result = inflater.inflate(chunk, &mut msg.buf, max);
    if end && result.is_ok() {
        result = inflater.inflate(&TRAILER, &mut msg.buf, max);
    }
    // What was made before a failure is checked first: the first fault in the message's bytes
    // is the one reported, however the payload was split into reads (one read can carry both
    // text that is not UTF-8 and, further on, bad compressed data or the bytes over the limit).
    if msg.text && msg.utf8.feed(&msg.buf[before..]).is_err() {
        return Err(ProtocolError::InvalidUtf8);
    }
    match result {
        Ok(()) => {}
        Err(InflateError::TooBig) => {
            msg.buf = Vec::new();
            return Err(ProtocolError::MessageTooLarge {
                len: max as u64 + 1,
                max,
            });
        }
        Err(InflateError::Data) => return Err(ProtocolError::BadCompressedData),
    }
    if end && (peer.no_context_takeover || inflater.ended()) {
        if let Some(inflater) = slot.take() {
            if peer.no_context_takeover {
                pool.give_inflater(inflater);
            }
        }
    }
    Ok(())
}

/// Splits the first `n` bytes off `rest`, advancing it.
fn take<'a>(rest: &mut &'a mut [u8], n: usize) -> &'a mut [u8] {
    let (head, tail) = std::mem::take(rest).split_at_mut(n);
    *rest = tail;
    head
}

impl Receiver {
    pub fn new(role: Role, limits: Limits) -> Self {
        Receiver {
            role,
            limits,
            state: RxState::Open,
            msg: None,
            deflate: None,
            inflater: None,
        }
    }

    /// Accepts messages compressed as `peer` agreed to compress them (permessage-deflate):
    /// RSV1 on a data message's first frame.
    pub fn enable_deflate(&mut self, peer: Params) {
        self.deflate = Some(peer);
    }

    /// Whether permessage-deflate is on.
    pub fn deflates(&self) -> bool {
        self.deflate.is_some()
    }

    /// Bytes held for decompression between messages (an inflater of its own, with context
    /// takeover): the estimate in [`crate::deflate`]'s table.
    pub fn inflate_memory(&self) -> usize {
        self.inflater
            .as_ref()
            .map_or(0, |i| (1 << i.window_bits()) + (19 << 10))
    }

    /// True once the peer's close frame arrived (or reading was abandoned).
    pub fn is_closed(&self) -> bool {
        self.state == RxState::Closed
    }

    /// True after a protocol violation, until the peer's close arrives.
    pub fn is_failed(&self) -> bool {
        matches!(self.state, RxState::Draining { .. })
    }

    /// Bytes held for a message in progress (the per-connection memory beyond the struct).
    pub fn buffered(&self) -> usize {
        self.msg.as_ref().map_or(0, |m| m.buf.capacity())
    }

    /// The length of the frame at the start of `input` when waiting for all of it lets
    /// [`read`](Self::read) lend the message out of `input` without a copy: an uncompressed
    /// binary message in one frame, masked as the role wants and within the limits, no message
    /// in progress, not all in `input` yet. `None` when reading now is as good, or needed:
    /// text is validated as it arrives so that a bad byte fails fast, and anything the header
    /// already breaks is reported by `read`. A driver that can hold that many bytes may read
    /// until it has them before it calls `read`.
    pub fn whole_frame_len(&self, input: &[u8]) -> Option<usize> {
        if self.state != RxState::Open || self.msg.as_ref().is_some_and(|m| !m.complete) {
            return None;
        }
        let Ok(Status::Complete(h, hlen)) = FrameHeader::parse(input) else {
            return None;
        };
        let plain = h.opcode == OpCode::Binary && h.fin && h.rsv == 0;
        let masked_as_wanted = h.mask.is_some() == (self.role == Role::Server);
        let within = h.payload_len <= self.limits.max_frame_size as u64
            && h.payload_len <= self.limits.max_message_size as u64;
        if !(plain && masked_as_wanted && within) {
            return None;
        }
        let total = hlen + h.payload_len as usize;
        (input.len() < total).then_some(total)
    }

    /// Consumes a prefix of `input` and returns at most one event. See the module docs.
    /// Compressed messages inflate with a throwaway [`Pool`]; drivers that keep one use
    /// [`Receiver::read_with`].
    pub fn read<'a, S: Sink>(
        &'a mut self,
        input: &'a mut [u8],
        tx: &mut Sender,
        out: &mut S,
    ) -> Result<Read<'a>, Failure> {
        self.read_with(input, tx, out, &mut Pool::default())
    }

    /// [`Receiver::read`], borrowing inflaters from (and giving them back to) `pool`.
    pub fn read_with<'a, S: Sink>(
        &'a mut self,
        input: &'a mut [u8],
        tx: &mut Sender,
        out: &mut S,
        pool: &mut Pool,
    ) -> Result<Read<'a>, Failure> {
        if self.msg.as_ref().is_some_and(|m| m.complete) {
            self.msg = None;
        }
        let mut rest = input;
        let mut consumed = 0;
        let found = match self.state {
            RxState::Closed => {
                return Ok(Read {
                    consumed: rest.len(),
                    event: None,
                });
            }
            RxState::Draining { skip } => self.drain(&mut rest, &mut consumed, skip),
            RxState::Open => match self.advance(&mut rest, &mut consumed, tx, out, pool) {
                Ok(found) => found,
                Err((error, skip)) => {
                    self.fail(error, skip, tx, out);
                    return Err(Failure { error, consumed });
                }
            },
        };
        let event = match found {
            Found::NeedMore => None,
            Found::Event(e) => Some(e),
            Found::Assembled => Some(self.assembled()),
        };
        Ok(Read { consumed, event })
    }

    fn assembled(&self) -> Event<'_> {
        let Some(msg) = self.msg.as_deref() else {
            unreachable!("an assembled message is kept until the next read")
        };
        if msg.text {
            // Validated piece by piece as it arrived; this pass only recovers the `&str`.
            match simdutf8::basic::from_utf8(&msg.buf) {
                Ok(text) => Event::Text(text),
                Err(_) => unreachable!("text message was validated incrementally"),
            }
        } else {
            Event::Binary(&msg.buf)
        }
    }

    /// Switches to draining after a violation and queues the close frame that answers it.
    fn fail(
        &mut self,
        error: ProtocolError,
        skip: Option<u64>,
        tx: &mut Sender,
        out: &mut impl Sink,
    ) {
        self.msg = None;
        // Mid-message, or past bad data: nothing of the inflater is worth keeping.
        self.inflater = None;
        self.state = match skip {
            Some(skip) => RxState::Draining { skip },
            None => RxState::Closed,
        };
        let _ = tx.close(error.close_code(), &error.to_string(), out);
    }

    /// The normal path. Errors carry how much of the current frame is left to skip (`None`
    /// when the stream can no longer be followed).
    fn advance<'a>(
        &mut self,
        rest: &mut &'a mut [u8],
        consumed: &mut usize,
        tx: &mut Sender,
        out: &mut impl Sink,
        pool: &mut Pool,
    ) -> Result<Found<'a>, (ProtocolError, Option<u64>)> {
        loop {
            if let Some(found) = self.continue_frame(rest, consumed, pool)? {
                return Ok(found);
            }
            if self.msg.as_ref().is_some_and(|m| m.frame.is_some()) {
                return Ok(Found::NeedMore);
            }
            let (h, hlen) = match FrameHeader::parse(rest) {
                Ok(Status::Complete(h, n)) => (h, n),
                Ok(Status::Partial) => return Ok(Found::NeedMore),
                Err(_) => return Err((ProtocolError::LengthOverflow, None)),
            };
            // After a (bad) close frame from the peer nothing else is coming: stop reading.
            let skip = (h.opcode != OpCode::Close).then_some(h.payload_len);
            self.check_header(&h).map_err(|e| {
                *consumed += hlen;
                (e, skip)
            })?;
            if h.opcode.is_control() {
                // Control frames are at most 131 bytes: wait until the whole frame is here.
                let total = hlen + h.payload_len as usize;
                if rest.len() < total {
                    return Ok(Found::NeedMore);
                }
                let frame = take(rest, total);
                *consumed += total;
                let payload = &mut frame[hlen..];
                if let Some(key) = h.mask {
                    apply_mask(payload, key, 0);
                }
                // A bad close frame still ends the peer's side: nothing follows it, so there
                // is no close reply to wait for.
                let skip = (h.opcode != OpCode::Close).then_some(0);
                return self
                    .control(h.opcode, payload, tx, out)
                    .map(Found::Event)
                    .map_err(|e| (e, skip));
            }
            self.check_data_limits(&h).map_err(|e| {
                *consumed += hlen;
                (e, skip)
            })?;
            let len = h.payload_len as usize; // fits: checked against max_frame_size
            let text = h.opcode == OpCode::Text;
            let compressed = h.rsv & RSV1 != 0;
            if self.msg.is_none() && h.fin && !compressed && rest.len() - hlen >= len {
                // The whole message is in the caller's buffer: unmask in place, lend it out.
                let frame = take(rest, hlen + len);
                *consumed += hlen + len;
                let payload = &mut frame[hlen..];
                if let Some(key) = h.mask {
                    apply_mask(payload, key, 0);
                }
                let payload: &'a [u8] = payload;
                if !text {
                    return Ok(Found::Event(Event::Binary(payload)));
                }
                return match simdutf8::basic::from_utf8(payload) {
                    Ok(s) => Ok(Found::Event(Event::Text(s))),
                    Err(_) => Err((ProtocolError::InvalidUtf8, Some(0))),
                };
            }
            take(rest, hlen);
            *consumed += hlen;
            let msg = self.msg.get_or_insert_with(|| {
                Box::new(InMessage {
                    text,
                    buf: Vec::new(),
                    fragments: 0,
                    utf8: Utf8Validator::new(),
                    frame: None,
                    complete: false,
                    compressed,
                })
            });
            msg.fragments += 1;
            if !msg.compressed {
                // Reserve only what has arrived: a header alone must not claim the whole
                // length. (Inflated bytes make their own room as they come.)
                grow(
                    &mut msg.buf,
                    len.min(rest.len()),
                    self.limits.max_message_size,
                );
            }
            msg.frame = Some(InFrame {
                fin: h.fin,
                mask: h.mask,
                mask_pos: 0,
                remaining: h.payload_len,
            });
        }
    }

    /// Feeds available payload to the data frame in progress. `Some` when the caller must
    /// return (a message completed); `None` to go on parsing headers.
    fn continue_frame<'a>(
        &mut self,
        rest: &mut &'a mut [u8],
        consumed: &mut usize,
        pool: &mut Pool,
    ) -> Result<Option<Found<'a>>, (ProtocolError, Option<u64>)> {
        let Some(msg) = self.msg.as_mut() else {
            return Ok(None);
        };
        let Some(frame) = msg.frame.as_mut() else {
            return Ok(None);
        };
        let n = frame.remaining.min(rest.len() as u64) as usize;
        let chunk = take(rest, n);
        *consumed += n;
        if let Some(key) = frame.mask {
            frame.mask_pos = apply_mask(chunk, key, frame.mask_pos);
        }
        frame.remaining -= n as u64;
        let remaining = frame.remaining;
        let fin = frame.fin;
        let max = self.limits.max_message_size;
        if msg.compressed {
            let peer = self
                .deflate
                .expect("compressed messages only pass the header check with deflate on");
            let end = remaining == 0 && fin;
            inflate(peer, &mut self.inflater, msg, chunk, end, max, pool)
                .map_err(|e| (e, Some(remaining)))?;
        } else {
            if msg.text && msg.utf8.feed(chunk).is_err() {
                return Err((ProtocolError::InvalidUtf8, Some(remaining)));
            }
            grow(&mut msg.buf, n, max);
            msg.buf.extend_from_slice(chunk);
        }
        if remaining > 0 {
            return Ok(None);
        }
        msg.frame = None;
        if !fin {
            return Ok(None);
        }
        if msg.text && msg.utf8.finish().is_err() {
            return Err((ProtocolError::InvalidUtf8, Some(0)));
        }
        msg.complete = true;
        Ok(Some(Found::Assembled))
    }

    /// Rules every frame header must meet (§5.2, §5.5, §5.1).
    fn check_header(&self, h: &FrameHeader) -> Result<(), ProtocolError> {
        // RFC 7692 §6: with permessage-deflate, RSV1 marks a compressed data message on its
        // first frame; never on control frames (§6.1).
        let allowed = match (self.deflate.is_some(), h.opcode) {
            (true, OpCode::Text | OpCode::Binary) => RSV1,
            _ => 0,
        };
        if h.rsv & !allowed != 0 {
            if h.opcode == OpCode::Continuation && h.rsv == RSV1 && self.deflate.is_some() {
                return Err(ProtocolError::CompressedContinuation);
            }
            return Err(ProtocolError::ReservedBits(h.rsv));
        }
        if let OpCode::Reserved(op) = h.opcode {
            return Err(ProtocolError::ReservedOpcode(op));
        }
        match (self.role, h.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedFrame),
            (Role::Client, true) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        if h.opcode.is_control() {
            if h.payload_len > 125 {
                return Err(ProtocolError::ControlFrameTooLong(h.payload_len));
            }
            if !h.fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
        }
        Ok(())
    }

    /// Sequencing and size rules for data frames, checked before any memory is reserved.
    fn check_data_limits(&self, h: &FrameHeader) -> Result<(), ProtocolError> {
        match (h.opcode, &self.msg) {
            (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Text | OpCode::Binary, Some(_)) => {
                return Err(ProtocolError::ExpectedContinuation)
            }
            _ => {}
        }
        let max = self.limits.max_frame_size;
        if h.payload_len > max as u64 {
            return Err(ProtocolError::FrameTooLarge {
                len: h.payload_len,
                max,
            });
        }
        let (so_far, fragments) = self
            .msg
            .as_ref()
            .map_or((0, 0), |m| (m.buf.len(), m.fragments));
        let compressed = match &self.msg {
            Some(m) => m.compressed,
            None => h.rsv & RSV1 != 0,
        };
        let total = so_far as u64 + h.payload_len;
        let max = self.limits.max_message_size;
        // A compressed message is held to the limit by what it inflates to, as it inflates.
        if total > max as u64 && !compressed {
            return Err(ProtocolError::MessageTooLarge { len: total, max });
        }
        if fragments >= self.limits.max_fragments {
            return Err(ProtocolError::TooManyFragments {
                max: self.limits.max_fragments,
            });
        }
        Ok(())
    }

    fn control<'a>(
        &mut self,
        opcode: OpCode,
        payload: &'a [u8],
        tx: &mut Sender,
        out: &mut impl Sink,
    ) -> Result<Event<'a>, ProtocolError> {
        match opcode {
            OpCode::Ping => {
                // §5.5.2: answer with a pong carrying the same payload, unless we are closing.
                if !tx.close_sent {
                    tx.control(OpCode::Pong, payload, out);
                }
                Ok(Event::Ping(payload))
            }
            OpCode::Pong => Ok(Event::Pong(payload)),
            _ => {
                let frame = close::parse_payload(payload)?;
                // §5.5.1: echo the close unless we sent ours first; then nothing more is read.
                if !tx.close_sent {
                    match frame {
                        Some(f) => tx.control(OpCode::Close, &f.code.to_be_bytes(), out),
                        None => tx.control(OpCode::Close, &[], out),
                    }
                    tx.close_sent = true;
                }
                self.msg = None;
                self.inflater = None;
                self.state = RxState::Closed;
                Ok(Event::Close(frame))
            }
        }
    }

    /// After a violation: skip frames until the peer's close shows up.
    fn drain<'a>(
        &mut self,
        rest: &mut &'a mut [u8],
        consumed: &mut usize,
        mut skip: u64,
    ) -> Found<'a> {
        loop {
            let n = skip.min(rest.len() as u64) as usize;
            take(rest, n);
            *consumed += n;
            skip -= n as u64;
            self.state = RxState::Draining { skip };
            if skip > 0 {
                return Found::NeedMore;
            }
            let (h, hlen) = match FrameHeader::parse(rest) {
                Ok(Status::Complete(h, n)) => (h, n),
                Ok(Status::Partial) => return Found::NeedMore,
                Err(_) => {
                    self.state = RxState::Closed;
                    *consumed += rest.len();
                    return Found::NeedMore;
                }
            };
            if h.opcode != OpCode::Close || h.payload_len > 125 {
                take(rest, hlen);
                *consumed += hlen;
                skip = h.payload_len;
                continue;
            }
            let total = hlen + h.payload_len as usize;
            if rest.len() < total {
                return Found::NeedMore;
            }
            let frame = take(rest, total);
            *consumed += total;
            let payload = &mut frame[hlen..];
            if let Some(key) = h.mask {
                apply_mask(payload, key, 0);
            }
            self.state = RxState::Closed;
            let payload: &'a [u8] = payload;
            return Found::Event(Event::Close(close::parse_payload(payload).ok().flatten()));
        }
    }
}

/// Source of masking keys for the client role: a pool refilled in batches by `fill`, so that
/// the operating system's randomness is asked once per 64 frames rather than once per frame.
pub struct MaskKeys {
    pool: [u8; 256],
    pos: usize,
    fill: fn(&mut [u8]),
}

impl std::fmt::Debug for MaskKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MaskKeys")
    }
}

impl MaskKeys {
    pub fn new(fill: fn(&mut [u8])) -> Self {
        MaskKeys {
            pool: [0; 256],
            pos: 256,
            fill,
        }
    }

    pub fn next_key(&mut self) -> [u8; 4] {
        if self.pos + 4 > self.pool.len() {
            (self.fill)(&mut self.pool);
            self.pos = 0;
        }
        let k = &self.pool[self.pos..self.pos + 4];
        self.pos += 4;
        [k[0], k[1], k[2], k[3]]
    }
}

/// The sending half: frames messages, masks in the client role, tracks the close handshake.
#[derive(Debug)]
pub struct Sender {
    role: Role,
    close_sent: bool,
    /// Opcode of a fragmented message being sent, if any.
    fragmenting: bool,
    /// Boxed: servers never mask, and an idle server connection should not carry the pool.
    keys: Option<Box<MaskKeys>>,
    /// permessage-deflate, once negotiated: how we compress.
    deflate: Option<Params>,
    /// Ours alone, with context takeover (made with the first compressed message). Boxed: an
    /// idle connection carries one pointer.
    compressor: Option<Box<Compressor>>,
}

/// Kinds of data message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataKind {
    Text,
    Binary,
}

impl Sender {
    /// The server role: frames go out unmasked.
    pub fn server() -> Self {
        Sender {
            role: Role::Server,
            close_sent: false,
            fragmenting: false,
            keys: None,
            deflate: None,
            compressor: None,
        }
    }

    /// The client role: every frame is masked with a key from `keys`.
    pub fn client(keys: MaskKeys) -> Self {
        Sender {
            role: Role::Client,
            close_sent: false,
            fragmenting: false,
            keys: Some(Box::new(keys)),
            deflate: None,
            compressor: None,
        }
    }

    /// Compresses whole messages as `own` says (permessage-deflate): with context takeover
    /// in a compressor of this connection's own, otherwise in the [`Pool`]'s shared one. The
    /// pool's settings (its [`DeflateConfig`](crate::deflate::DeflateConfig)) say from what
    /// size on, at what level and memory level.
    pub fn enable_deflate(&mut self, own: Params) {
        self.deflate = Some(own);
    }

    /// How this side compresses, when permessage-deflate is on.
    pub fn deflate_params(&self) -> Option<Params> {
        self.deflate
    }

    /// Whether a whole message of `len` bytes goes out compressed under `pool`'s settings.
    pub fn compresses(&self, len: usize, pool: &Pool) -> bool {
        self.deflate.is_some() && pool.worth_compressing(len)
    }

    /// Bytes held for compression between messages (a compressor of its own, with context
    /// takeover): the estimate in [`crate::deflate`]'s table.
    pub fn deflate_memory(&self) -> usize {
        self.compressor.as_ref().map_or(0, |c| c.memory())
    }

    /// Appends the compressed form of the message made of `parts` (the payload of a frame
    /// with RSV1) to `out`.
    pub fn compress(&mut self, parts: &[&[u8]], pool: &mut Pool, out: &mut Vec<u8>) {
        let Some(own) = self.deflate else {
            for part in parts {
                out.extend_from_slice(part);
            }
            return;
        };
        let window = own.max_window_bits;
        if own.no_context_takeover {
            pool.compress(window, parts, out);
        } else {
            self.compressor
                .get_or_insert_with(|| Box::new(pool.new_compressor(window)))
                .compress(parts, out);
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// True once our close frame is out (or queued).
    pub fn is_close_sent(&self) -> bool {
        self.close_sent
    }

    fn mask(&mut self) -> Option<[u8; 4]> {
        self.keys.as_mut().map(|k| k.next_key())
    }

    /// Encodes a frame header for a payload of `len` bytes (the server's zero-copy path: the
    /// caller sends the header and then the payload bytes it already holds).
    pub fn header(
        &mut self,
        opcode: OpCode,
        fin: bool,
        len: usize,
    ) -> ([u8; 14], usize, Option<[u8; 4]>) {
        self.header_rsv(opcode, fin, len, 0)
    }

    /// The header of a whole compressed message (RSV1 set) of `len` payload bytes.
    pub fn compressed_header(
        &mut self,
        opcode: OpCode,
        len: usize,
    ) -> ([u8; 14], usize, Option<[u8; 4]>) {
        self.header_rsv(opcode, true, len, RSV1)
    }

    fn header_rsv(
        &mut self,
        opcode: OpCode,
        fin: bool,
        len: usize,
        rsv: u8,
    ) -> ([u8; 14], usize, Option<[u8; 4]>) {
        let mask = self.mask();
        let (bytes, n) = FrameHeader {
            fin,
            rsv,
            opcode,
            mask,
            payload_len: len as u64,
        }
        .encode();
        (bytes, n, mask)
    }

    fn frame(&mut self, opcode: OpCode, fin: bool, payload: &[u8], out: &mut impl Sink) {
        let (head, n, mask) = self.header(opcode, fin, payload.len());
        out.frame(&head[..n], payload, mask);
    }

    fn control(&mut self, opcode: OpCode, payload: &[u8], out: &mut impl Sink) {
        self.frame(opcode, true, payload, out);
    }

    /// Checks that a data frame may be sent now, for callers that frame it themselves.
    pub fn check_data(&self) -> Result<(), SendError> {
        if self.close_sent {
            return Err(SendError::Closed);
        }
        if self.fragmenting {
            return Err(SendError::FragmentOrder);
        }
        Ok(())
    }

    /// Sends a whole message as one frame (compressed when permessage-deflate is on and it
    /// is long enough; a throwaway [`Pool`] serves a compressor without context takeover,
    /// drivers that keep one use [`Sender::send_with`]).
    pub fn send(
        &mut self,
        kind: DataKind,
        payload: &[u8],
        out: &mut impl Sink,
    ) -> Result<(), SendError> {
        self.send_with(kind, payload, out, &mut Pool::default())
    }

    /// [`Sender::send`] with the driver's pool.
    pub fn send_with(
        &mut self,
        kind: DataKind,
        payload: &[u8],
        out: &mut impl Sink,
        pool: &mut Pool,
    ) -> Result<(), SendError> {
        self.check_data()?;
        let opcode = match kind {
            DataKind::Text => OpCode::Text,
            DataKind::Binary => OpCode::Binary,
        };
        if !self.compresses(payload.len(), pool) {
            self.frame(opcode, true, payload, out);
            return Ok(());
        }
        let mut buf = pool.take_buf();
        self.compress(&[payload], pool, &mut buf);
        let (head, n, mask) = self.compressed_header(opcode, buf.len());
        out.frame(&head[..n], &buf, mask);
        pool.give_buf(buf);
        Ok(())
    }

    /// Sends one fragment: the first names the kind, the rest are continuations; `fin` ends it.
    pub fn send_fragment(
        &mut self,
        kind: DataKind,
        payload: &[u8],
        fin: bool,
        out: &mut impl Sink,
    ) -> Result<(), SendError> {
        if self.close_sent {
            return Err(SendError::Closed);
        }
        let opcode = match (self.fragmenting, kind) {
            (true, _) => OpCode::Continuation,
            (false, DataKind::Text) => OpCode::Text,
            (false, DataKind::Binary) => OpCode::Binary,
        };
        self.frame(opcode, fin, payload, out);
        self.fragmenting = !fin;
        Ok(())
    }

    pub fn ping(&mut self, payload: &[u8], out: &mut impl Sink) -> Result<(), SendError> {
        self.check_control(payload)?;
        self.control(OpCode::Ping, payload, out);
        Ok(())
    }

    pub fn pong(&mut self, payload: &[u8], out: &mut impl Sink) -> Result<(), SendError> {
        self.check_control(payload)?;
        self.control(OpCode::Pong, payload, out);
        Ok(())
    }

    fn check_control(&self, payload: &[u8]) -> Result<(), SendError> {
        if self.close_sent {
            return Err(SendError::Closed);
        }
        if payload.len() > 125 {
            return Err(SendError::ControlFrameTooLong);
        }
        Ok(())
    }

    /// Records that the stream is ending without writing a close frame (for drivers that carry
    /// something other than WebSocket frames, or end the connection some other way).
    pub fn mark_closed(&mut self) {
        self.close_sent = true;
    }

    /// Starts (or answers) the close handshake. The reason is cut to fit a control frame.
    pub fn close(&mut self, code: u16, reason: &str, out: &mut impl Sink) -> Result<(), SendError> {
        if self.close_sent {
            return Err(SendError::Closed);
        }
        if !close::is_valid_code(code) {
            return Err(SendError::InvalidCloseCode(code));
        }
        let reason = close::truncate_reason(reason);
        let mut payload = [0u8; 125];
        payload[..2].copy_from_slice(&code.to_be_bytes());
        payload[2..2 + reason.len()].copy_from_slice(reason.as_bytes());
        self.control(OpCode::Close, &payload[..2 + reason.len()], out);
        self.close_sent = true;
        Ok(())
    }
}

/// A receiver and a sender together, for drivers that do not need to split them.
#[derive(Debug)]
pub struct Connection {
    pub rx: Receiver,
    pub tx: Sender,
}

impl Connection {
    pub fn server(limits: Limits) -> Self {
        Connection {
            rx: Receiver::new(Role::Server, limits),
            tx: Sender::server(),
        }
    }

    pub fn client(limits: Limits, keys: MaskKeys) -> Self {
        Connection {
            rx: Receiver::new(Role::Client, limits),
            tx: Sender::client(keys),
        }
    }

    /// True when both closes have been exchanged (or reading was abandoned after ours).
    pub fn is_closed(&self) -> bool {
        self.rx.is_closed() && self.tx.is_close_sent()
    }
}
