//! Integration tests of the sans-IO RFC 6455 core, through the public API only.
//!
//! Every scenario is a byte stream of client frames run through [`Driver`], a copy of what a
//! real server loop does (call `read` until it returns `consumed == 0` with no event, keep the
//! unconsumed tail and put it in front of the next bytes). [`check`] runs the stream in many
//! chunkings — whole, split in two at every byte position, one byte at a time and a few
//! pseudo-random ones from a fixed-seed xorshift — and asserts that the recorded events, the
//! bytes written to the sink, the unconsumed tail and the final state are identical for all of
//! them. The per-rule tests then decode the server's output and assert the exact close code.
//!
//! Protocol vectors kept as text files in `tests/vectors/` (format in `vectors/README.md`) go
//! through the same driver.

use std::fmt::Write as _;
use std::path::Path;

use sockeye::connection::MaskKeys;
use sockeye::deflate::{DeflateConfig, Negotiated, Pool};
use sockeye::frame::OpCode;
use sockeye::{
    Connection, DataKind, Event, Limits, ProtocolError, Read, Receiver, Role, SendError, Sender,
};

// ---------------------------------------------------------------------------------------------
// Client frames
// ---------------------------------------------------------------------------------------------

const CONT: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xa;

/// The mask key of RFC 6455 §5.7, used unless a test asks for another.
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// How a frame encodes its payload length.
#[derive(Clone, Copy, Debug)]
enum Len {
    /// The shortest form, as RFC 6455 §5.2 requires.
    Minimal,
    /// The 16-bit extended form whatever the length.
    U16,
    /// The 64-bit extended form whatever the length.
    U64,
    /// The 64-bit form carrying this value, whatever the payload actually is.
    Declared(u64),
}

/// A frame as a client builds it: masked with [`KEY`] unless told otherwise.
#[derive(Clone, Debug)]
struct Frame {
    fin: bool,
    /// RSV1..RSV3 as bits 2..0 (RSV1 = 4).
    rsv: u8,
    opcode: u8,
    payload: Vec<u8>,
    mask: Option<[u8; 4]>,
    len: Len,
}

impl Frame {
    fn new(opcode: u8, payload: impl AsRef<[u8]>) -> Frame {
        Frame {
            fin: true,
            rsv: 0,
            opcode,
            payload: payload.as_ref().to_vec(),
            mask: Some(KEY),
            len: Len::Minimal,
        }
    }

    fn fin(mut self, fin: bool) -> Frame {
        self.fin = fin;
        self
    }

    fn rsv(mut self, rsv: u8) -> Frame {
        self.rsv = rsv;
        self
    }

    fn mask(mut self, mask: Option<[u8; 4]>) -> Frame {
        self.mask = mask;
        self
    }

    fn len(mut self, len: Len) -> Frame {
        self.len = len;
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = vec![(u8::from(self.fin) << 7) | ((self.rsv & 7) << 4) | (self.opcode & 0xf)];
        let m = if self.mask.is_some() { 0x80 } else { 0 };
        let n = self.payload.len() as u64;
        match self.len {
            Len::Minimal if n < 126 => out.push(m | n as u8),
            Len::Minimal if n <= 0xffff => {
                out.push(m | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            Len::U16 => {
                assert!(n <= 0xffff, "payload too long for a 16-bit length");
                out.push(m | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            Len::Minimal | Len::U64 => {
                out.push(m | 127);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Len::Declared(d) => {
                out.push(m | 127);
                out.extend_from_slice(&d.to_be_bytes());
            }
        }
        match self.mask {
            Some(key) => {
                out.extend_from_slice(&key);
                out.extend(self.payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
            }
            None => out.extend_from_slice(&self.payload),
        }
        out
    }
}

fn text(payload: impl AsRef<[u8]>) -> Frame {
    Frame::new(TEXT, payload)
}

fn binary(payload: impl AsRef<[u8]>) -> Frame {
    Frame::new(BINARY, payload)
}

fn cont(fin: bool, payload: impl AsRef<[u8]>) -> Frame {
    Frame::new(CONT, payload).fin(fin)
}

fn ping(payload: impl AsRef<[u8]>) -> Frame {
    Frame::new(PING, payload)
}

fn pong(payload: impl AsRef<[u8]>) -> Frame {
    Frame::new(PONG, payload)
}

fn close(code: u16, reason: impl AsRef<[u8]>) -> Frame {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_ref());
    Frame::new(CLOSE, p)
}

fn stream(frames: &[Frame]) -> Vec<u8> {
    frames.iter().flat_map(Frame::bytes).collect()
}

// ---------------------------------------------------------------------------------------------
// Output frames
// ---------------------------------------------------------------------------------------------

/// A frame the connection wrote, unmasked.
#[derive(Clone, Debug, PartialEq, Eq)]
struct OutFrame {
    fin: bool,
    rsv: u8,
    opcode: u8,
    masked: bool,
    payload: Vec<u8>,
}

impl OutFrame {
    fn close_code(&self) -> Option<u16> {
        assert_eq!(self.opcode, CLOSE, "not a close frame: {self:?}");
        match self.payload[..] {
            [] => None,
            [hi, lo, ..] => Some(u16::from_be_bytes([hi, lo])),
            [_] => panic!("close frame with a 1-byte payload"),
        }
    }

    fn close_reason(&self) -> &str {
        std::str::from_utf8(&self.payload[2..]).expect("close reason is UTF-8")
    }
}

/// Decodes a sequence of whole frames; panics on trailing garbage.
fn decode(mut bytes: &[u8]) -> Vec<OutFrame> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        assert!(bytes.len() >= 2, "truncated output header");
        let (b0, b1) = (bytes[0], bytes[1]);
        let masked = b1 & 0x80 != 0;
        let (len, mut pos) = match b1 & 0x7f {
            126 => (u64::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&bytes[2..10]);
                (u64::from_be_bytes(b), 10)
            }
            n => (u64::from(n), 2),
        };
        // The sender must use the shortest length form (§5.2).
        match pos {
            4 => assert!(len >= 126, "non-minimal 16-bit length {len}"),
            10 => assert!(len > 0xffff, "non-minimal 64-bit length {len}"),
            _ => {}
        }
        let key = if masked {
            let k = [bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]];
            pos += 4;
            Some(k)
        } else {
            None
        };
        let len = len as usize;
        assert!(bytes.len() >= pos + len, "truncated output payload");
        let mut payload = bytes[pos..pos + len].to_vec();
        if let Some(k) = key {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= k[i % 4];
            }
        }
        let frame = OutFrame {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 7,
            opcode: b0 & 0xf,
            masked,
            payload,
        };
        if frame.opcode & 8 != 0 {
            assert!(frame.fin && frame.payload.len() <= 125, "bad control frame");
        }
        frames.push(frame);
        bytes = &bytes[pos + len..];
    }
    frames
}

// ---------------------------------------------------------------------------------------------
// The driver
// ---------------------------------------------------------------------------------------------

/// An owned copy of an [`Event`], or of a [`sockeye::connection::Failure`].
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ev {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
    Error(ProtocolError),
}

fn own(event: Event<'_>) -> Ev {
    match event {
        Event::Text(s) => Ev::Text(s.to_owned()),
        Event::Binary(b) => Ev::Binary(b.to_vec()),
        Event::Ping(b) => Ev::Ping(b.to_vec()),
        Event::Pong(b) => Ev::Pong(b.to_vec()),
        Event::Close(f) => Ev::Close(f.map(|f| (f.code, f.reason.to_owned()))),
    }
}

/// The deterministic key source of every client-role connection in these tests.
fn fill_keys(pool: &mut [u8]) {
    for (i, b) in pool.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37).wrapping_add(11);
    }
}

/// How the connection under test is made.
#[derive(Clone, Debug)]
struct Setup {
    role: Role,
    limits: Limits,
    /// Send our close (code, reason) before any input arrives.
    close_first: Option<(u16, &'static str)>,
    /// permessage-deflate as agreed (RFC 7692).
    deflate: Option<Negotiated>,
}

impl Setup {
    fn server() -> Setup {
        Setup {
            role: Role::Server,
            limits: Limits::default(),
            close_first: None,
            deflate: None,
        }
    }

    fn client() -> Setup {
        Setup {
            role: Role::Client,
            ..Setup::server()
        }
    }

    fn limits(mut self, limits: Limits) -> Setup {
        self.limits = limits;
        self
    }

    fn close_first(mut self, code: u16, reason: &'static str) -> Setup {
        self.close_first = Some((code, reason));
        self
    }

    fn connect(&self, out: &mut Vec<u8>) -> Connection {
        let mut conn = match self.role {
            Role::Server => Connection::server(self.limits.clone()),
            Role::Client => Connection::client(self.limits.clone(), MaskKeys::new(fill_keys)),
        };
        if let Some(n) = self.deflate {
            let (own, peer) = match self.role {
                Role::Server => (n.server(), n.client()),
                Role::Client => (n.client(), n.server()),
            };
            conn.rx.enable_deflate(peer);
            conn.tx.enable_deflate(own);
        }
        if let Some((code, reason)) = self.close_first {
            conn.tx.close(code, reason, out).expect("close");
        }
        conn
    }
}

/// What one run of a stream produced.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    role: Role,
    events: Vec<Ev>,
    output: Vec<u8>,
    /// Input left unconsumed at the end (an incomplete header or control frame).
    tail: Vec<u8>,
    rx_closed: bool,
    rx_failed: bool,
    close_sent: bool,
}

impl Run {
    /// The output frames, checked to be masked exactly when we are the client.
    fn frames(&self) -> Vec<OutFrame> {
        let frames = decode(&self.output);
        for f in &frames {
            assert_eq!(f.masked, self.role == Role::Client, "masking of {f:?}");
            assert_eq!(f.rsv, 0);
        }
        frames
    }

    /// The output is exactly one close frame, with this code.
    fn assert_only_close(&self, code: u16) {
        let frames = self.frames();
        assert_eq!(frames.len(), 1, "expected one close frame, got {frames:?}");
        assert_eq!(frames[0].close_code(), Some(code), "{frames:?}");
        frames[0].close_reason();
    }

    fn assert_no_output(&self) {
        assert_eq!(self.frames(), vec![]);
    }

    /// The run failed with `error` (its only event unless more are listed) and sent its code.
    fn assert_failed(&self, error: ProtocolError, code: u16) {
        assert_eq!(error.close_code(), code);
        assert_eq!(self.events, vec![Ev::Error(error)]);
        self.assert_only_close(code);
        assert!(self.close_sent);
        assert!(self.rx_failed || self.rx_closed);
    }
}

/// A server loop: owns the connection, the unconsumed tail and what came out.
struct Driver {
    role: Role,
    conn: Connection,
    tail: Vec<u8>,
    events: Vec<Ev>,
    output: Vec<u8>,
    max_buffered: usize,
}

impl Driver {
    fn new(setup: &Setup) -> Driver {
        let mut output = Vec::new();
        let conn = setup.connect(&mut output);
        Driver {
            role: setup.role,
            conn,
            tail: Vec::new(),
            events: Vec::new(),
            output,
            max_buffered: 0,
        }
    }

    /// Hands `chunk` (after the kept tail) to the connection, as the contract says.
    fn feed(&mut self, chunk: &[u8]) {
        let mut buf = std::mem::take(&mut self.tail);
        buf.extend_from_slice(chunk);
        let mut pos = 0;
        let mut calls = 0;
        loop {
            calls += 1;
            assert!(calls <= 2 * buf.len() + 8, "read loop does not end");
            let available = buf.len() - pos;
            let conn = &mut self.conn;
            match conn
                .rx
                .read(&mut buf[pos..], &mut conn.tx, &mut self.output)
            {
                Ok(Read { consumed, event }) => {
                    assert!(consumed <= available, "consumed {consumed} of {available}");
                    pos += consumed;
                    match event {
                        Some(event) => self.events.push(own(event)),
                        None if consumed == 0 => break,
                        None => {}
                    }
                }
                Err(failure) => {
                    assert!(failure.consumed <= available);
                    pos += failure.consumed;
                    self.events.push(Ev::Error(failure.error));
                }
            }
            self.max_buffered = self.max_buffered.max(self.conn.rx.buffered());
        }
        buf.drain(..pos);
        self.tail = buf;
    }

    fn finish(self) -> Run {
        Run {
            role: self.role,
            events: self.events,
            output: self.output,
            tail: self.tail,
            rx_closed: self.conn.rx.is_closed(),
            rx_failed: self.conn.rx.is_failed(),
            close_sent: self.conn.tx.is_close_sent(),
        }
    }
}

/// Runs `input` cut at the given (ascending) positions.
fn run_cuts(setup: &Setup, input: &[u8], cuts: &[usize]) -> Run {
    let mut d = Driver::new(setup);
    let mut last = 0;
    for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
        d.feed(&input[last..cut]);
        last = cut;
    }
    d.finish()
}

/// A fixed-seed xorshift64 generator for reproducible chunkings.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

fn random_cuts(len: usize, seed: u64, max_chunk: usize) -> Vec<usize> {
    let mut rng = XorShift(seed);
    let mut cuts = Vec::new();
    let mut at = 0;
    loop {
        at += 1 + (rng.next() % max_chunk as u64) as usize;
        if at >= len {
            return cuts;
        }
        cuts.push(at);
    }
}

/// Streams up to this length are split in two at every position; longer ones (the 64 KiB
/// payload cases) at every position of their first and last `SPLIT_EDGE` bytes, around every
/// frame boundary given to [`check_boundaries`] and at a prime stride in between (which walks
/// through every mask phase, word alignment and position in the UTF-8 test pattern). A run of
/// a 128 KiB stream takes milliseconds in a debug build; every position would take minutes.
const SPLIT_ALL: usize = 20_000;
const SPLIT_EDGE: usize = 256;
const SPLIT_STRIDE: usize = 251;

fn split_positions(len: usize) -> Vec<usize> {
    if len <= SPLIT_ALL {
        return (0..=len).collect();
    }
    let mut at: Vec<usize> = (0..SPLIT_EDGE)
        .chain(len - SPLIT_EDGE..=len)
        .chain((SPLIT_EDGE..len - SPLIT_EDGE).step_by(SPLIT_STRIDE))
        .collect();
    at.sort_unstable();
    at.dedup();
    at
}

fn describe(run: &Run) -> String {
    let mut s = String::new();
    for e in &run.events {
        let e = format!("{e:?}");
        let cut: String = e.chars().take(80).collect();
        let _ = write!(s, "{cut}{} ", if cut.len() < e.len() { "…" } else { "" });
    }
    let _ = write!(
        s,
        "| output {} bytes {:02x?}… | tail {} | closed {} failed {} close_sent {}",
        run.output.len(),
        &run.output[..run.output.len().min(16)],
        run.tail.len(),
        run.rx_closed,
        run.rx_failed,
        run.close_sent
    );
    s
}

/// Runs `input` in every chunking, asserts they all agree, and returns the result.
fn check(setup: &Setup, input: &[u8]) -> Run {
    check_boundaries(setup, input, &[])
}

/// [`check`], also splitting at every position within 32 bytes of each of `boundaries` when
/// the stream is too long to split everywhere.
fn check_boundaries(setup: &Setup, input: &[u8], boundaries: &[usize]) -> Run {
    let whole = run_cuts(setup, input, &[]);
    let compare = |name: &dyn Fn() -> String, cuts: &[usize]| {
        let run = run_cuts(setup, input, cuts);
        if run != whole {
            panic!(
                "chunking {} differs:\n  whole: {}\n  split: {}",
                name(),
                describe(&whole),
                describe(&run)
            );
        }
    };
    let mut splits = split_positions(input.len());
    if input.len() > SPLIT_ALL {
        for &b in boundaries {
            splits.extend(b.saturating_sub(32)..(b + 32).min(input.len()));
        }
        splits.sort_unstable();
        splits.dedup();
    }
    for p in splits {
        compare(&|| format!("split at {p}"), &[p]);
    }
    let bytes: Vec<usize> = (1..input.len()).collect();
    compare(&|| "1-byte".to_owned(), &bytes);
    for (seed, max) in [(0x9e37_79b9_7f4a_7c15, 3), (42, 7), (7, 19), (1234, 150)] {
        let max = max.min(input.len().max(1));
        compare(
            &|| format!("xorshift seed {seed}"),
            &random_cuts(input.len(), seed, max),
        );
    }
    whole
}

fn server(frames: &[Frame]) -> Run {
    check(&Setup::server(), &stream(frames))
}

fn limits(max_frame_size: usize, max_message_size: usize, max_fragments: usize) -> Limits {
    Limits {
        max_frame_size,
        max_message_size,
        max_fragments,
    }
}

// ---------------------------------------------------------------------------------------------
// Payload lengths
// ---------------------------------------------------------------------------------------------

/// Valid UTF-8 of exactly `len` bytes with 1- to 4-byte code points all through it.
fn utf8_of_len(len: usize) -> String {
    let mut s = String::with_capacity(len);
    let pattern = ['a', 'é', '€', '𝄞', 'z'];
    for c in pattern.iter().cycle() {
        if s.len() + c.len_utf8() > len {
            break;
        }
        s.push(*c);
    }
    while s.len() < len {
        s.push('.');
    }
    s
}

fn bytes_of_len(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

/// A text and a binary message of `len` bytes, then a ping: all delivered intact, in order.
fn length_form(len: usize) {
    let t = utf8_of_len(len);
    let b = bytes_of_len(len);
    let frames = [text(&t), binary(&b), ping("after")];
    let input = stream(&frames);
    let header = match len {
        0..=125 => 6,
        126..=65_535 => 8,
        _ => 14,
    };
    assert_eq!(input.len(), 2 * (header + len) + 6 + 5);
    let run = check_boundaries(&Setup::server(), &input, &[header + len]);
    assert_eq!(
        run.events,
        vec![Ev::Text(t), Ev::Binary(b), Ev::Ping(b"after".to_vec())]
    );
    let frames = run.frames();
    assert_eq!(frames.len(), 1);
    assert_eq!(
        (frames[0].opcode, &frames[0].payload[..]),
        (PONG, &b"after"[..])
    );
    assert!(run.tail.is_empty() && !run.rx_closed && !run.rx_failed);
}

#[test]
fn length_0() {
    length_form(0);
}

#[test]
fn length_125_short_form() {
    length_form(125);
}

#[test]
fn length_126_16_bit_form() {
    length_form(126);
}

#[test]
fn length_65535_16_bit_form() {
    length_form(65_535);
}

#[test]
fn length_65536_64_bit_form() {
    length_form(65_536);
}

#[test]
fn non_minimal_length_encodings_are_decoded() {
    // RFC 6455 §5.2 asks senders for the shortest form; like most implementations the core
    // accepts longer ones and must still read the right number of bytes.
    let run = server(&[
        text("Hello").len(Len::U16),
        binary([1, 2, 3]).len(Len::U64),
        ping("p").len(Len::U16),
    ]);
    assert_eq!(
        run.events,
        vec![
            Ev::Text("Hello".into()),
            Ev::Binary(vec![1, 2, 3]),
            Ev::Ping(b"p".to_vec())
        ]
    );
}

#[test]
fn zero_mask_key_and_other_keys() {
    for key in [[0, 0, 0, 0], [0xff; 4], [1, 2, 3, 4]] {
        let run = server(&[text("masked with another key").mask(Some(key))]);
        assert_eq!(run.events, vec![Ev::Text("masked with another key".into())]);
    }
}

// ---------------------------------------------------------------------------------------------
// Header rules
// ---------------------------------------------------------------------------------------------

#[test]
fn reserved_bits_fail_with_1002() {
    for rsv in [4, 2, 1, 7] {
        for frame in [text("x"), binary(""), ping("p"), close(1000, "")] {
            let run = server(&[frame.rsv(rsv)]);
            run.assert_failed(ProtocolError::ReservedBits(rsv), 1002);
        }
    }
}

#[test]
fn reserved_opcodes_fail_with_1002() {
    for op in (0x3..=0x7).chain(0xb..=0xf) {
        for payload in [&b""[..], b"abc"] {
            let run = server(&[Frame::new(op, payload)]);
            run.assert_failed(ProtocolError::ReservedOpcode(op), 1002);
        }
    }
}

#[test]
fn control_frame_of_126_bytes_fails_with_1002() {
    for op in [PING, PONG, CLOSE] {
        let mut payload = vec![b'a'; 126];
        payload[..2].copy_from_slice(&1000u16.to_be_bytes());
        let run = server(&[Frame::new(op, &payload)]);
        run.assert_failed(ProtocolError::ControlFrameTooLong(126), 1002);
        // The same in the 64-bit form.
        let run = server(&[Frame::new(op, &payload).len(Len::U64)]);
        run.assert_failed(ProtocolError::ControlFrameTooLong(126), 1002);
    }
    // 125 is the largest control payload.
    let run = server(&[ping([7; 125])]);
    assert_eq!(run.events, vec![Ev::Ping(vec![7; 125])]);
}

#[test]
fn fragmented_control_frames_fail_with_1002() {
    for frame in [ping("p"), pong(""), close(1000, "")] {
        let run = server(&[frame.fin(false)]);
        run.assert_failed(ProtocolError::FragmentedControlFrame, 1002);
    }
    // Also in the middle of a fragmented message.
    let run = server(&[text("a").fin(false), ping("p").fin(false), cont(true, "b")]);
    run.assert_failed(ProtocolError::FragmentedControlFrame, 1002);
}

#[test]
fn unmasked_client_frame_fails_with_1002() {
    for frame in [
        text("Hello"),
        binary(""),
        ping("p"),
        close(1000, ""),
        cont(true, ""),
    ] {
        let run = server(&[frame.mask(None)]);
        run.assert_failed(ProtocolError::UnmaskedFrame, 1002);
    }
    // A masked first fragment does not excuse an unmasked continuation.
    let run = server(&[text("a").fin(false), cont(true, "b").mask(None)]);
    run.assert_failed(ProtocolError::UnmaskedFrame, 1002);
}

#[test]
fn masked_server_frame_fails_with_1002_in_client_role() {
    for frame in [text("Hello"), ping("p"), close(1000, "")] {
        let run = check(&Setup::client(), &frame.bytes());
        run.assert_failed(ProtocolError::MaskedFrame, 1002);
        // Our close frame is masked, with the first key of the pool.
        assert_eq!(&run.output[2..6], &[11, 48, 85, 122]);
    }
    // Unmasked server frames are what a client expects.
    let run = check(
        &Setup::client(),
        &stream(&[text("Hello").mask(None), ping("p").mask(None)]),
    );
    assert_eq!(
        run.events,
        vec![Ev::Text("Hello".into()), Ev::Ping(b"p".to_vec())]
    );
    let frames = run.frames();
    assert_eq!(frames.len(), 1);
    assert_eq!(
        (frames[0].opcode, &frames[0].payload[..]),
        (PONG, &b"p"[..])
    );
}

#[test]
fn length_with_top_bit_fails_with_1002_and_stops_reading() {
    for len in [1u64 << 63, u64::MAX] {
        let input = stream(&[
            text("").len(Len::Declared(len)),
            text("after"),
            close(1000, ""),
        ]);
        let run = check(&Setup::server(), &input);
        run.assert_failed(ProtocolError::LengthOverflow, 1002);
        // The stream cannot be followed any more: nothing after it is looked at.
        assert!(run.rx_closed && run.tail.is_empty());
    }
    // The largest legal length is only too large for the limits.
    let run = check(
        &Setup::server(),
        &text("").len(Len::Declared((1 << 63) - 1)).bytes(),
    );
    run.assert_failed(
        ProtocolError::FrameTooLarge {
            len: (1 << 63) - 1,
            max: Limits::default().max_frame_size,
        },
        1009,
    );
}

// ---------------------------------------------------------------------------------------------
// Fragmentation and limits
// ---------------------------------------------------------------------------------------------

#[test]
fn fragmented_text_with_interleaved_pings() {
    let run = server(&[
        text("Hel").fin(false),
        ping("p1"),
        cont(false, "lo, "),
        ping(""),
        cont(true, "world"),
        binary("next"),
    ]);
    assert_eq!(
        run.events,
        vec![
            Ev::Ping(b"p1".to_vec()),
            Ev::Ping(vec![]),
            Ev::Text("Hello, world".into()),
            Ev::Binary(b"next".to_vec()),
        ]
    );
    let frames = run.frames();
    let pongs: Vec<(u8, &[u8])> = frames.iter().map(|f| (f.opcode, &f.payload[..])).collect();
    assert_eq!(pongs, vec![(PONG, &b"p1"[..]), (PONG, &b""[..])]);
}

#[test]
fn fragmented_binary_and_empty_fragments() {
    let run = server(&[
        binary("").fin(false),
        cont(false, [1, 2]),
        cont(false, ""),
        cont(true, [3]),
        text("").fin(false),
        cont(true, ""),
    ]);
    assert_eq!(
        run.events,
        vec![Ev::Binary(vec![1, 2, 3]), Ev::Text(String::new())]
    );
    run.assert_no_output();
}

#[test]
fn continuation_without_start_fails_with_1002() {
    for fin in [true, false] {
        let run = server(&[cont(fin, "x")]);
        run.assert_failed(ProtocolError::UnexpectedContinuation, 1002);
    }
    // Also right after a complete fragmented message.
    let run = server(&[text("a").fin(false), cont(true, "b"), cont(true, "c")]);
    assert_eq!(
        run.events,
        vec![
            Ev::Text("ab".into()),
            Ev::Error(ProtocolError::UnexpectedContinuation)
        ]
    );
    run.assert_only_close(1002);
}

#[test]
fn new_data_frame_during_fragmented_message_fails_with_1002() {
    for second in [text("b"), binary("b"), text("b").fin(false)] {
        let run = server(&[text("a").fin(false), second]);
        run.assert_failed(ProtocolError::ExpectedContinuation, 1002);
    }
    let run = server(&[binary("a").fin(false), ping(""), text("b")]);
    assert_eq!(
        run.events,
        vec![
            Ev::Ping(vec![]),
            Ev::Error(ProtocolError::ExpectedContinuation)
        ]
    );
    let frames = run.frames();
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0].opcode, PONG);
    assert_eq!(frames[1].close_code(), Some(1002));
}

#[test]
fn empty_fragments_count_toward_max_fragments() {
    let setup = Setup::server().limits(limits(1000, 1000, 4));
    // Exactly four fragments, all empty: accepted.
    let ok = [
        text("").fin(false),
        cont(false, ""),
        cont(false, ""),
        cont(true, ""),
    ];
    let run = check(&setup, &stream(&ok));
    assert_eq!(run.events, vec![Ev::Text(String::new())]);
    // A fifth one is answered with 1009 as soon as its header arrives.
    let too_many = [
        text("").fin(false),
        cont(false, ""),
        cont(false, ""),
        cont(false, ""),
        cont(false, ""),
    ];
    let run = check(&setup, &stream(&too_many));
    run.assert_failed(ProtocolError::TooManyFragments { max: 4 }, 1009);
}

#[test]
fn frame_over_max_frame_size_fails_with_1009() {
    let setup = Setup::server().limits(limits(1000, 1 << 20, 16));
    let run = check(&setup, &binary(vec![0; 1000]).bytes());
    assert_eq!(run.events, vec![Ev::Binary(vec![0; 1000])]);
    for frame in [binary(vec![0; 1001]), text("a".repeat(1001))] {
        let run = check(&setup, &frame.bytes());
        run.assert_failed(
            ProtocolError::FrameTooLarge {
                len: 1001,
                max: 1000,
            },
            1009,
        );
    }
    // A continuation over the limit too.
    let run = check(
        &setup,
        &stream(&[binary("a").fin(false), cont(true, vec![0; 1001])]),
    );
    run.assert_failed(
        ProtocolError::FrameTooLarge {
            len: 1001,
            max: 1000,
        },
        1009,
    );
}

#[test]
fn huge_header_alone_reserves_no_memory() {
    // Over the limit: refused on the header, nothing reserved.
    let setup = Setup::server().limits(limits(1000, 1000, 16));
    let header = binary("").len(Len::Declared(1 << 40)).bytes();
    let run = check(&setup, &header);
    run.assert_failed(
        ProtocolError::FrameTooLarge {
            len: 1 << 40,
            max: 1000,
        },
        1009,
    );
    let mut d = Driver::new(&setup);
    d.feed(&header);
    assert_eq!(d.max_buffered, 0);

    // Within the (default, 16 MiB) limit: only what has arrived is held, not the declared length.
    let big = Limits::default().max_frame_size as u64;
    for frame in [binary(""), text(""), binary("").fin(false)] {
        let header = frame.len(Len::Declared(big)).bytes();
        let mut d = Driver::new(&Setup::server());
        d.feed(&header);
        assert_eq!(d.conn.rx.buffered(), 0, "header alone");
        // Payload bytes that unmask to ASCII, in two pieces.
        let masked: Vec<u8> = (0..104).map(|i| b'a' ^ KEY[i % 4]).collect();
        d.feed(&masked[..4]);
        d.feed(&masked[4..]);
        assert!(d.max_buffered <= 1024, "buffered {}", d.max_buffered);
        assert!(d.events.is_empty() && d.output.is_empty() && d.tail.is_empty());
    }
}

#[test]
fn message_over_max_message_size_fails_with_1009() {
    let setup = Setup::server().limits(limits(100, 10, 16));
    let run = check(
        &setup,
        &stream(&[text("123456").fin(false), cont(true, "7890")]),
    );
    assert_eq!(run.events, vec![Ev::Text("1234567890".into())]);
    let run = check(
        &setup,
        &stream(&[text("123456").fin(false), cont(true, "78901")]),
    );
    run.assert_failed(ProtocolError::MessageTooLarge { len: 11, max: 10 }, 1009);
    let run = check(
        &setup,
        &stream(&[
            binary("1234").fin(false),
            cont(false, "5678"),
            cont(false, "90"),
            cont(true, "1"),
        ]),
    );
    run.assert_failed(ProtocolError::MessageTooLarge { len: 11, max: 10 }, 1009);
    // A single frame over the message limit (but within the frame limit) too.
    let run = check(&setup, &binary([0; 11]).bytes());
    run.assert_failed(ProtocolError::MessageTooLarge { len: 11, max: 10 }, 1009);
}

// ---------------------------------------------------------------------------------------------
// UTF-8
// ---------------------------------------------------------------------------------------------

#[test]
fn multibyte_code_points_split_across_fragments() {
    let run = server(&[
        text(b"\xe2").fin(false),
        cont(false, b"\x82"),
        cont(true, b"\xac"),
        text(b"x\xf0\x9d").fin(false),
        ping("between"),
        cont(false, b""),
        cont(false, b"\x84"),
        cont(true, b"\x9e\xc3"),
    ]);
    // The last message ends in a truncated code point.
    assert_eq!(
        run.events,
        vec![
            Ev::Text("€".into()),
            Ev::Ping(b"between".to_vec()),
            Ev::Error(ProtocolError::InvalidUtf8)
        ]
    );
    let run = server(&[
        text(b"x\xf0\x9d").fin(false),
        cont(false, b"\x84"),
        cont(true, b"\x9e\xc3\xa9"),
    ]);
    assert_eq!(run.events, vec![Ev::Text("x𝄞é".into())]);
}

const INVALID_UTF8: &[&[u8]] = &[
    b"\xc0\xaf",                                                       // overlong '/'
    b"\x80",                                                           // lone continuation byte
    b"ab\xff",                                                         // never valid
    b"\xed\xa0\x80",                                                   // surrogate
    b"\xf4\x90\x80\x80",                                               // above U+10FFFF
    b"\xe0\x80\x80",                                                   // overlong
    b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited", // Autobahn 6.4.x
];

#[test]
fn invalid_utf8_text_fails_with_1007() {
    for bad in INVALID_UTF8 {
        let run = server(&[text(bad)]);
        run.assert_failed(ProtocolError::InvalidUtf8, 1007);
        let run = server(&[text("ok").fin(false), cont(true, bad)]);
        run.assert_failed(ProtocolError::InvalidUtf8, 1007);
    }
    // Binary messages are not validated.
    for bad in INVALID_UTF8 {
        let run = server(&[binary(bad)]);
        assert_eq!(run.events, vec![Ev::Binary(bad.to_vec())]);
    }
}

#[test]
fn truncated_code_point_at_message_end_fails_with_1007() {
    for frames in [
        vec![text(b"ab\xe2\x82")],
        vec![text(b"ab\xe2").fin(false), cont(true, b"\x82")],
        vec![text(b"\xf0\x9f\x98").fin(false), cont(true, b"")],
    ] {
        let run = server(&frames);
        run.assert_failed(ProtocolError::InvalidUtf8, 1007);
    }
}

/// Feeds `first`, expects the failure there (before `rest`), then checks `rest` changes nothing.
fn fails_before_rest(first: &[u8], rest: &[u8]) {
    let mut conn = Connection::server(Limits::default());
    let mut out = Vec::new();
    let mut buf = first.to_vec();
    let mut consumed = 0;
    let failure = loop {
        match conn.rx.read(&mut buf[consumed..], &mut conn.tx, &mut out) {
            Ok(Read { consumed: 0, event }) => panic!("no failure yet, event {event:?}"),
            Ok(Read { consumed: n, event }) => {
                assert!(event.is_none(), "{event:?}");
                consumed += n;
            }
            Err(failure) => break failure,
        }
    };
    assert_eq!(failure.error, ProtocolError::InvalidUtf8);
    assert!(consumed + failure.consumed <= first.len());
    let frames = decode(&out);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].close_code(), Some(1007));
    // The rest of the frame is skipped without another word.
    let mut d = Driver {
        role: Role::Server,
        conn,
        tail: buf[consumed + failure.consumed..].to_vec(),
        events: Vec::new(),
        output: Vec::new(),
        max_buffered: 0,
    };
    d.feed(rest);
    d.feed(&close(1000, "").bytes());
    assert_eq!(d.events, vec![Ev::Close(Some((1000, String::new())))]);
    assert!(d.output.is_empty());
}

#[test]
fn invalid_utf8_fails_fast_mid_frame() {
    // A single text frame: header and the first half of the payload, which holds the bad byte.
    let mut payload = b"hello ".to_vec();
    payload.push(0xff);
    payload.extend_from_slice(&[b'a'; 100]);
    let frame = text(&payload).bytes();
    let half = 6 + 8 + 20;
    fails_before_rest(&frame[..half], &frame[half..]);

    // The second fragment of a message: the failure comes before that fragment (and the
    // message) is complete.
    let mut input = text("first fragment ").fin(false).bytes();
    let second = cont(false, [&b"ab"[..], b"\xc0", &[b'z'; 50]].concat()).bytes();
    let split = input.len() + 2 + 4 + 3;
    input.extend_from_slice(&second);
    input.extend_from_slice(&cont(true, "end").bytes());
    fails_before_rest(&input[..split], &input[split..]);

    // A sequence that can no longer become valid fails on its second byte, before it is whole.
    let frame = text(b"ok\xf4\x90\x80\x80 and more").bytes();
    fails_before_rest(&frame[..6 + 4], &frame[6 + 4..]);
    let frame = text(b"ok\xed\xa0\x80 and more").bytes();
    fails_before_rest(&frame[..6 + 4], &frame[6 + 4..]);
}

// ---------------------------------------------------------------------------------------------
// Ping and pong
// ---------------------------------------------------------------------------------------------

#[test]
fn ping_is_answered_with_identical_pong() {
    for payload in [vec![], b"x".to_vec(), bytes_of_len(125)] {
        let run = server(&[ping(&payload)]);
        assert_eq!(run.events, vec![Ev::Ping(payload.clone())]);
        let frames = run.frames();
        assert_eq!(
            frames,
            vec![OutFrame {
                fin: true,
                rsv: 0,
                opcode: PONG,
                masked: false,
                payload: payload.clone()
            }]
        );
    }
    // Several pings, several pongs, in order.
    let run = server(&[ping("1"), ping("2"), ping("3")]);
    let payloads: Vec<Vec<u8>> = run.frames().into_iter().map(|f| f.payload).collect();
    assert_eq!(payloads, vec![b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]);
}

#[test]
fn unsolicited_pong_is_an_event_without_output() {
    for payload in [vec![], bytes_of_len(125)] {
        let run = server(&[pong(&payload)]);
        assert_eq!(run.events, vec![Ev::Pong(payload)]);
        run.assert_no_output();
        assert!(!run.close_sent && !run.rx_closed);
    }
}

// ---------------------------------------------------------------------------------------------
// Close
// ---------------------------------------------------------------------------------------------

#[test]
fn empty_close_is_echoed_empty() {
    let run = server(&[Frame::new(CLOSE, b"")]);
    assert_eq!(run.events, vec![Ev::Close(None)]);
    let frames = run.frames();
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].opcode, CLOSE);
    assert_eq!(frames[0].close_code(), None);
    assert!(run.rx_closed && run.close_sent && !run.rx_failed);
}

#[test]
fn one_byte_close_payload_fails_with_1002() {
    let run = server(&[Frame::new(CLOSE, [0x03])]);
    run.assert_failed(ProtocolError::CloseFrameTooShort, 1002);
}

#[test]
fn valid_close_codes_are_echoed() {
    let codes = (1000..=1003)
        .chain(1007..=1014)
        .chain([3000, 3999, 4000, 4999]);
    for code in codes {
        for reason in ["", "bye", "ünïcødé"] {
            let run = server(&[close(code, reason)]);
            assert_eq!(run.events, vec![Ev::Close(Some((code, reason.into())))]);
            run.assert_only_close(code);
            assert!(run.rx_closed && run.close_sent);
        }
    }
}

#[test]
fn invalid_close_codes_fail_with_1002() {
    for code in [
        0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        let run = server(&[close(code, "")]);
        run.assert_failed(ProtocolError::InvalidCloseCode(code), 1002);
    }
}

#[test]
fn invalid_close_reason_fails_with_1007() {
    for bad in INVALID_UTF8 {
        let run = server(&[close(1000, bad)]);
        run.assert_failed(ProtocolError::InvalidCloseReason, 1007);
    }
    // A reason cut in the middle of a code point is invalid too.
    let run = server(&[close(1000, b"caf\xc3")]);
    run.assert_failed(ProtocolError::InvalidCloseReason, 1007);
}

#[test]
fn nothing_is_read_after_close() {
    let run = server(&[
        close(1000, "bye"),
        text("late"),
        ping("late"),
        Frame::new(0x3, "reserved"),
        text("").mask(None),
    ]);
    assert_eq!(run.events, vec![Ev::Close(Some((1000, "bye".into())))]);
    run.assert_only_close(1000);
    assert!(run.rx_closed && run.tail.is_empty());
    // Also when the close ends a fragmented message in progress.
    let run = server(&[text("half").fin(false), close(1001, ""), cont(true, "rest")]);
    assert_eq!(run.events, vec![Ev::Close(Some((1001, String::new())))]);
    run.assert_only_close(1001);
}

#[test]
fn close_after_ours_is_not_echoed() {
    let setup = Setup::server().close_first(1001, "going away");
    for peer in [close(1000, ""), Frame::new(CLOSE, "")] {
        let run = check(&setup, &peer.bytes());
        assert_eq!(run.events.len(), 1);
        assert!(matches!(run.events[0], Ev::Close(_)));
        // Only our own close is in the output.
        let frames = run.frames();
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].close_code(), Some(1001));
        assert_eq!(frames[0].close_reason(), "going away");
        assert!(run.rx_closed && run.close_sent);
    }
    // Data and pings still arrive while the peer has not answered; pings are not answered.
    let run = check(
        &setup,
        &stream(&[text("in flight"), ping("p"), close(1000, "")]),
    );
    assert_eq!(
        run.events,
        vec![
            Ev::Text("in flight".into()),
            Ev::Ping(b"p".to_vec()),
            Ev::Close(Some((1000, String::new())))
        ]
    );
    assert_eq!(run.frames().len(), 1);
    // A violation after our close sends no second close.
    let run = check(&setup, &stream(&[text("").rsv(4), close(1000, "")]));
    assert_eq!(
        run.events,
        vec![
            Ev::Error(ProtocolError::ReservedBits(4)),
            Ev::Close(Some((1000, String::new())))
        ]
    );
    assert_eq!(run.frames().len(), 1);
    assert_eq!(run.frames()[0].close_code(), Some(1001));

    let mut out = Vec::new();
    let mut conn = setup.connect(&mut out);
    let mut buf = close(1000, "").bytes();
    let read = conn.rx.read(&mut buf, &mut conn.tx, &mut out).unwrap();
    assert!(matches!(read.event, Some(Event::Close(_))));
    assert!(conn.rx.is_closed() && conn.is_closed());
    assert_eq!(decode(&out).len(), 1);
}

// ---------------------------------------------------------------------------------------------
// After a protocol error
// ---------------------------------------------------------------------------------------------

#[test]
fn after_protocol_error_only_the_peer_close_is_recognised() {
    let after = [
        text("ignored"),
        binary([1, 2, 3]),
        ping("not answered"),
        text("frag").fin(false),
        cont(true, "ment"),
        cont(true, "unexpected"),
        Frame::new(0x3, "reserved"),
        // Too long to be a close frame: skipped like any other frame.
        Frame::new(CLOSE, vec![0x03; 126]),
    ];
    let violations: Vec<(Vec<Frame>, ProtocolError)> = vec![
        (
            vec![Frame::new(0x3, "payload")],
            ProtocolError::ReservedOpcode(3),
        ),
        (vec![text("x").mask(None)], ProtocolError::UnmaskedFrame),
        (vec![cont(true, "x")], ProtocolError::UnexpectedContinuation),
        (vec![text(b"a\xffbcdefgh")], ProtocolError::InvalidUtf8),
        (
            vec![text("ab").fin(false), cont(true, b"\xffcdefgh")],
            ProtocolError::InvalidUtf8,
        ),
        (
            vec![ping(vec![0; 126])],
            ProtocolError::ControlFrameTooLong(126),
        ),
        // The oversized payload looks like close frames: it must be skipped, not parsed.
        (
            vec![binary([0x88, 0x80, 0, 0, 0, 0].repeat(200))],
            ProtocolError::FrameTooLarge {
                len: 1200,
                max: 1000,
            },
        ),
    ];
    let setup = Setup::server().limits(limits(1000, 1000, 16));
    for (bad, error) in violations {
        for peer_close in [close(1000, "ok"), Frame::new(CLOSE, ""), close(1005, "")] {
            let mut frames = bad.clone();
            frames.extend(after.iter().cloned());
            frames.push(peer_close.clone());
            frames.push(text("after close"));
            let run = check(&setup, &stream(&frames));
            // The close is recognised whatever it holds (a bad one is reported as `None`).
            let seen = match &peer_close.payload[..] {
                [0x03, 0xe8, ..] => Some((1000, "ok".to_owned())),
                _ => None,
            };
            assert_eq!(
                run.events,
                vec![Ev::Error(error), Ev::Close(seen)],
                "{error:?}"
            );
            run.assert_only_close(error.close_code());
            assert!(run.rx_closed && !run.rx_failed && run.tail.is_empty());
        }
        // Without the peer's close the receiver stays failed and silent.
        let mut frames = bad.clone();
        frames.extend(after.iter().cloned());
        let run = check(&setup, &stream(&frames));
        assert_eq!(run.events, vec![Ev::Error(error)]);
        run.assert_only_close(error.close_code());
        assert!(run.rx_failed && !run.rx_closed);
    }
}

#[test]
fn bad_close_frame_ends_reading() {
    // A malformed close frame is still the peer's last frame: the receiver is closed at once
    // rather than waiting for another close, and what follows is not looked at.
    let bad: Vec<(Frame, ProtocolError)> = vec![
        (close(1005, ""), ProtocolError::InvalidCloseCode(1005)),
        (Frame::new(CLOSE, [0x03]), ProtocolError::CloseFrameTooShort),
        (close(1000, b"\xff"), ProtocolError::InvalidCloseReason),
        (close(1000, "").rsv(4), ProtocolError::ReservedBits(4)),
        (
            close(1000, "").fin(false),
            ProtocolError::FragmentedControlFrame,
        ),
        (close(1000, "").mask(None), ProtocolError::UnmaskedFrame),
        (
            Frame::new(CLOSE, vec![0x03; 126]),
            ProtocolError::ControlFrameTooLong(126),
        ),
    ];
    for (frame, error) in bad {
        let run = server(&[frame, text("after"), ping("after"), close(1000, "")]);
        run.assert_failed(error, error.close_code());
        assert!(
            run.rx_closed && !run.rx_failed && run.tail.is_empty(),
            "{error:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Zero copy
// ---------------------------------------------------------------------------------------------

fn inside(range: &std::ops::Range<*const u8>, slice: &[u8]) -> bool {
    let r = slice.as_ptr_range();
    range.start <= r.start && r.end <= range.end
}

#[test]
fn whole_message_is_lent_from_the_input_buffer() {
    let mut out = Vec::new();
    let mut conn = Connection::server(Limits::default());
    let mut buf = stream(&[text("zero copy text"), binary(bytes_of_len(300))]);
    let range = buf.as_ptr_range();
    let first = match conn.rx.read(&mut buf, &mut conn.tx, &mut out) {
        Ok(Read {
            consumed,
            event: Some(Event::Text(s)),
        }) => {
            assert_eq!(s, "zero copy text");
            assert!(inside(&range, s.as_bytes()), "text payload was copied");
            consumed
        }
        other => panic!("{other:?}"),
    };
    match conn.rx.read(&mut buf[first..], &mut conn.tx, &mut out) {
        Ok(Read {
            event: Some(Event::Binary(b)),
            ..
        }) => {
            assert_eq!(b, &bytes_of_len(300)[..]);
            assert!(inside(&range, b), "binary payload was copied");
        }
        other => panic!("{other:?}"),
    }
    // A ping's payload is lent too.
    let mut buf = ping("lent").bytes();
    let range = buf.as_ptr_range();
    match conn.rx.read(&mut buf, &mut conn.tx, &mut out) {
        Ok(Read {
            event: Some(Event::Ping(p)),
            ..
        }) => assert!(inside(&range, p)),
        other => panic!("{other:?}"),
    }
    assert_eq!(conn.rx.buffered(), 0);
}

// ---------------------------------------------------------------------------------------------
// Sender
// ---------------------------------------------------------------------------------------------

#[test]
fn send_after_close_is_refused() {
    let mut out = Vec::new();
    let mut tx = Sender::server();
    tx.close(1000, "done", &mut out).unwrap();
    assert!(tx.is_close_sent());
    assert_eq!(
        tx.send(DataKind::Text, b"x", &mut out),
        Err(SendError::Closed)
    );
    assert_eq!(
        tx.send_fragment(DataKind::Binary, b"x", true, &mut out),
        Err(SendError::Closed)
    );
    assert_eq!(tx.ping(b"", &mut out), Err(SendError::Closed));
    assert_eq!(tx.pong(b"", &mut out), Err(SendError::Closed));
    assert_eq!(tx.close(1000, "", &mut out), Err(SendError::Closed));
    assert_eq!(tx.check_data(), Err(SendError::Closed));
    let frames = decode(&out);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].close_code(), Some(1000));
    assert_eq!(frames[0].close_reason(), "done");
}

#[test]
fn control_payload_over_125_is_refused() {
    let mut out = Vec::new();
    let mut tx = Sender::server();
    assert_eq!(
        tx.ping(&[0; 126], &mut out),
        Err(SendError::ControlFrameTooLong)
    );
    assert_eq!(
        tx.pong(&[0; 126], &mut out),
        Err(SendError::ControlFrameTooLong)
    );
    assert!(out.is_empty());
    tx.ping(&[1; 125], &mut out).unwrap();
    tx.pong(&[2; 125], &mut out).unwrap();
    let frames = decode(&out);
    assert_eq!(
        frames.iter().map(|f| f.opcode).collect::<Vec<_>>(),
        vec![PING, PONG]
    );
    assert_eq!(frames[1].payload, vec![2; 125]);
    // A long close reason is cut on a character boundary to fit.
    let mut out = Vec::new();
    tx.close(4000, &"é".repeat(100), &mut out).unwrap();
    let frames = decode(&out);
    assert_eq!(frames[0].payload.len(), 124);
    assert_eq!(frames[0].close_reason(), "é".repeat(61));
}

#[test]
fn invalid_close_code_is_refused() {
    let mut out = Vec::new();
    let mut tx = Sender::server();
    for code in [0, 999, 1004, 1005, 1006, 1015, 2999, 5000] {
        assert_eq!(
            tx.close(code, "", &mut out),
            Err(SendError::InvalidCloseCode(code))
        );
    }
    assert!(out.is_empty() && !tx.is_close_sent());
    tx.close(1000, "", &mut out).unwrap();
    assert_eq!(decode(&out)[0].close_code(), Some(1000));
}

#[test]
fn client_frames_are_masked_and_decode_back() {
    let mut out = Vec::new();
    let mut tx = Sender::client(MaskKeys::new(fill_keys));
    assert_eq!(tx.role(), Role::Client);
    let big = bytes_of_len(70_000);
    tx.send(DataKind::Text, "héllo".as_bytes(), &mut out)
        .unwrap();
    tx.send(DataKind::Binary, &big, &mut out).unwrap();
    tx.ping(b"ping", &mut out).unwrap();
    tx.send(DataKind::Binary, b"", &mut out).unwrap();
    tx.close(1000, "bye", &mut out).unwrap();
    let frames = decode(&out);
    let got: Vec<(u8, bool, &[u8])> = frames
        .iter()
        .map(|f| (f.opcode, f.masked, &f.payload[..]))
        .collect();
    assert_eq!(
        got,
        vec![
            (TEXT, true, "héllo".as_bytes()),
            (BINARY, true, &big[..]),
            (PING, true, &b"ping"[..]),
            (BINARY, true, &b""[..]),
            (CLOSE, true, &b"\x03\xe8bye"[..]),
        ]
    );
    // The bytes on the wire are not the payload: the mask was applied.
    assert_ne!(&out[6..6 + 6], "héllo".as_bytes());
    // And a server reads them back.
    let run = check(&Setup::server(), &out);
    assert_eq!(
        run.events,
        vec![
            Ev::Text("héllo".into()),
            Ev::Binary(big),
            Ev::Ping(b"ping".to_vec()),
            Ev::Binary(vec![]),
            Ev::Close(Some((1000, "bye".into()))),
        ]
    );
}

#[test]
fn every_key_of_the_pool_is_used_in_turn() {
    let mut out = Vec::new();
    let mut tx = Sender::client(MaskKeys::new(fill_keys));
    for _ in 0..70 {
        tx.ping(b"", &mut out).unwrap();
    }
    let mut pool = [0u8; 256];
    fill_keys(&mut pool);
    for (i, frame) in out.chunks(6).enumerate() {
        let at = (i * 4) % 256;
        assert_eq!(frame[..2], [0x89, 0x80]);
        assert_eq!(frame[2..], pool[at..at + 4], "frame {i}");
    }
}

#[test]
fn fragmented_send_uses_continuation_opcodes() {
    for (kind, first) in [(DataKind::Text, TEXT), (DataKind::Binary, BINARY)] {
        let mut out = Vec::new();
        let mut tx = Sender::client(MaskKeys::new(fill_keys));
        tx.send_fragment(kind, b"ab", false, &mut out).unwrap();
        assert_eq!(tx.check_data(), Err(SendError::FragmentOrder));
        assert_eq!(
            tx.send(DataKind::Text, b"x", &mut out),
            Err(SendError::FragmentOrder)
        );
        // Control frames may be interleaved.
        tx.ping(b"p", &mut out).unwrap();
        tx.send_fragment(kind, b"", false, &mut out).unwrap();
        tx.send_fragment(kind, b"cd", true, &mut out).unwrap();
        assert_eq!(tx.check_data(), Ok(()));
        tx.send(kind, b"next", &mut out).unwrap();
        let frames = decode(&out);
        let got: Vec<(u8, bool, &[u8])> = frames
            .iter()
            .map(|f| (f.opcode, f.fin, &f.payload[..]))
            .collect();
        assert_eq!(
            got,
            vec![
                (first, false, &b"ab"[..]),
                (PING, true, &b"p"[..]),
                (CONT, false, &b""[..]),
                (CONT, true, &b"cd"[..]),
                (first, true, &b"next"[..]),
            ]
        );
        // A server reassembles them.
        let run = check(&Setup::server(), &out);
        let msg = |s: &str| match kind {
            DataKind::Text => Ev::Text(s.into()),
            DataKind::Binary => Ev::Binary(s.as_bytes().to_vec()),
        };
        assert_eq!(
            run.events,
            vec![Ev::Ping(b"p".to_vec()), msg("abcd"), msg("next")]
        );
    }
}

#[test]
fn header_for_zero_copy_sending() {
    let mut tx = Sender::server();
    let (head, n, mask) = tx.header(OpCode::Binary, true, 65_536);
    assert_eq!(mask, None);
    assert_eq!(&head[..n], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    let (head, n, _) = tx.header(OpCode::Text, false, 126);
    assert_eq!(&head[..n], &[0x01, 126, 0, 126]);
    let mut tx = Sender::client(MaskKeys::new(fill_keys));
    let (head, n, mask) = tx.header(OpCode::Text, true, 5);
    assert_eq!(mask, Some([11, 48, 85, 122]));
    assert_eq!(&head[..n], &[0x81, 0x85, 11, 48, 85, 122]);
}

// ---------------------------------------------------------------------------------------------
// Client and server talking
// ---------------------------------------------------------------------------------------------

#[test]
fn client_and_server_close_handshake() {
    // The client sends a message, a ping and its close; the server's answers go back.
    let mut c_out = Vec::new();
    let mut client = Connection::client(Limits::default(), MaskKeys::new(fill_keys));
    client.tx.send(DataKind::Text, b"hi", &mut c_out).unwrap();
    client.tx.ping(b"?", &mut c_out).unwrap();
    client.tx.close(1000, "done", &mut c_out).unwrap();

    let s = check(&Setup::server(), &c_out);
    assert_eq!(
        s.events,
        vec![
            Ev::Text("hi".into()),
            Ev::Ping(b"?".to_vec()),
            Ev::Close(Some((1000, "done".into())))
        ]
    );
    assert!(s.rx_closed && s.close_sent);

    let mut d = Driver {
        role: Role::Client,
        conn: client,
        tail: Vec::new(),
        events: Vec::new(),
        output: Vec::new(),
        max_buffered: 0,
    };
    d.feed(&s.output);
    assert_eq!(
        d.events,
        vec![
            Ev::Pong(b"?".to_vec()),
            Ev::Close(Some((1000, String::new())))
        ]
    );
    // The client had sent its close first: nothing is echoed.
    assert!(d.output.is_empty());
    assert!(d.conn.is_closed());
}

#[test]
fn receiver_alone_in_client_role() {
    // A `Receiver` can be driven with a separate `Sender`, e.g. after splitting a connection.
    let mut rx = Receiver::new(Role::Client, Limits::default());
    let mut tx = Sender::client(MaskKeys::new(fill_keys));
    let mut out = Vec::new();
    let mut buf = Frame::new(CLOSE, "").mask(None).bytes();
    let read = rx.read(&mut buf, &mut tx, &mut out).unwrap();
    assert_eq!(read.consumed, 2);
    assert_eq!(read.event, Some(Event::Close(None)));
    let frames = decode(&out);
    assert_eq!(frames.len(), 1);
    assert!(frames[0].masked && frames[0].payload.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Protocol vectors
// ---------------------------------------------------------------------------------------------

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len() % 2 == 0, "odd number of hex digits in {s:?}");
    digits
        .chunks(2)
        .map(|d| u8::from_str_radix(std::str::from_utf8(d).unwrap(), 16).expect("hex digit"))
        .collect()
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The canonical line of an event in a vector file.
fn render(e: &Ev) -> String {
    match e {
        Ev::Text(s) => format!("text {s:?}"),
        Ev::Binary(b) => format!("binary {}", to_hex(b)),
        Ev::Ping(b) => format!("ping {}", to_hex(b)),
        Ev::Pong(b) => format!("pong {}", to_hex(b)),
        Ev::Close(None) => "close".to_owned(),
        Ev::Close(Some((code, reason))) => format!("close {code} {reason:?}"),
        Ev::Error(e) => format!("error {e:?}"),
    }
    .trim_end()
    .to_owned()
}

fn opcode_name(op: u8) -> String {
    match op {
        CONT => "continuation".into(),
        TEXT => "text".into(),
        BINARY => "binary".into(),
        CLOSE => "close".into(),
        PING => "ping".into(),
        PONG => "pong".into(),
        other => format!("{other:#x}"),
    }
}

fn run_vector(path: &Path) {
    let name = path.display();
    let source = std::fs::read_to_string(path).unwrap();
    let mut setup = Setup::server();
    let mut input = Vec::new();
    let mut events = Vec::new();
    let mut out = Vec::new();
    let mut state = None;
    for (n, line) in source.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("{name}:{}: no `key:`", n + 1));
        let value = value.trim();
        match key {
            "role" => {
                setup.role = match value {
                    "server" => Role::Server,
                    "client" => Role::Client,
                    other => panic!("{name}: unknown role {other}"),
                }
            }
            "limits" => {
                for pair in value.split_whitespace() {
                    let (k, v) = pair.split_once('=').expect("limit=value");
                    let v: usize = v.parse().expect("limit value");
                    match k {
                        "max_frame_size" => setup.limits.max_frame_size = v,
                        "max_message_size" => setup.limits.max_message_size = v,
                        "max_fragments" => setup.limits.max_fragments = v,
                        other => panic!("{name}: unknown limit {other}"),
                    }
                }
            }
            "deflate" => {
                let takeover = match value {
                    "on" => false,
                    "takeover" => true,
                    other => panic!("{name}: unknown deflate setting {other}"),
                };
                setup.deflate = Some(Negotiated {
                    server_no_context_takeover: !takeover,
                    client_no_context_takeover: !takeover,
                    server_max_window_bits: None,
                    client_max_window_bits: None,
                });
            }
            "input" => input.extend(hex(value)),
            "event" => events.push(value.to_owned()),
            "out" => out.push(value.to_owned()),
            "state" => state = Some(value.to_owned()),
            other => panic!("{name}:{}: unknown key {other}", n + 1),
        }
    }
    assert!(!input.is_empty(), "{name}: no input");
    let run = check(&setup, &input);
    let got: Vec<String> = run.events.iter().map(render).collect();
    assert_eq!(got, events, "{name}: events");
    let frames = run.frames();
    assert_eq!(frames.len(), out.len(), "{name}: output {frames:?}");
    for (frame, want) in frames.iter().zip(&out) {
        let (what, arg) = want.split_once(' ').unwrap_or((want, ""));
        if what == "close-code" {
            let code: u16 = arg.parse().expect("close code");
            assert_eq!(frame.close_code(), Some(code), "{name}");
        } else {
            let got = format!("{} {}", opcode_name(frame.opcode), to_hex(&frame.payload));
            assert_eq!(got.trim_end(), want, "{name}: output frame");
        }
    }
    if let Some(state) = state {
        let got = match (run.rx_closed, run.rx_failed) {
            (true, _) => "closed",
            (false, true) => "failed",
            (false, false) => "open",
        };
        assert_eq!(got, state, "{name}: state");
    }
}

#[test]
fn protocol_vectors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "vec"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "vectors missing in {}", dir.display());
    for file in &files {
        run_vector(file);
    }
}

/// Regression (fuzz/regressions/connection_server-buffer-doubling): five 100-byte fragments of
/// a message within a 512-byte limit must not make the receiver hold more than the limit (Vec's
/// doubling took the capacity to 800).
#[test]
fn reassembly_never_holds_more_than_the_message_limit() {
    let limits = limits(125, 512, 8);
    let mut frames = vec![binary([7u8; 100]).fin(false)];
    for i in 0..4 {
        frames.push(cont(i == 3, [7u8; 100]));
    }
    let input = stream(&frames);
    let mut rx = sockeye::Receiver::new(Role::Server, limits);
    let mut tx = sockeye::Sender::server();
    let mut out = Vec::new();
    let mut peak = 0;
    // Feed frame by frame so the buffer grows step by step, as over a socket.
    let mut fed = Vec::new();
    for frame in &frames {
        fed.extend_from_slice(&frame.bytes());
        loop {
            let read = rx
                .read(&mut fed, &mut tx, &mut out)
                .expect("within every limit");
            let consumed = read.consumed;
            let done = read.event.is_some();
            fed.drain(..consumed);
            peak = peak.max(rx.buffered());
            if consumed == 0 || done {
                break;
            }
        }
    }
    assert!(!input.is_empty());
    assert!(
        peak <= 512,
        "receiver held {peak} bytes for a 500-byte message (limit 512)"
    );
}

// ---------------------------------------------------------------------------------------------
// permessage-deflate between two connections
// ---------------------------------------------------------------------------------------------

/// A client and a server that agreed on `n`, each sending a run of messages the other
/// inflates (with and without context takeover), with one pool per side as a driver keeps.
fn deflate_pair(n: Negotiated, config: &DeflateConfig) {
    let mut client = Connection::client(Limits::default(), MaskKeys::new(fill_keys));
    let mut server = Connection::server(Limits::default());
    client.rx.enable_deflate(n.server());
    client.tx.enable_deflate(n.client());
    server.rx.enable_deflate(n.client());
    server.tx.enable_deflate(n.server());
    let (mut client_pool, mut server_pool) = (Pool::new(config), Pool::new(config));
    let messages: Vec<String> = (0..40)
        .map(|i| {
            let word = ["alpha", "beta", "gamma", "δέλτα"][i % 4];
            format!("{{\"n\":{i},\"text\":\"{}\"}}", word.repeat(i * 37 % 300))
        })
        .collect();
    let mut wire = Vec::new();
    for m in &messages {
        client
            .tx
            .send_with(DataKind::Text, m.as_bytes(), &mut wire, &mut client_pool)
            .unwrap();
    }
    let plain: usize = messages.iter().map(|m| m.len()).sum();
    assert!(wire.len() < plain / 2, "{} bytes for {plain}", wire.len());
    let mut got = Vec::new();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < wire.len() {
        let read = server
            .rx
            .read_with(&mut wire[pos..], &mut server.tx, &mut out, &mut server_pool)
            .expect("valid compressed stream");
        pos += read.consumed;
        match read.event {
            Some(Event::Text(t)) => got.push(t.to_owned()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, messages);
    // And back: the server compresses, the client inflates.
    let mut wire = Vec::new();
    for m in &messages {
        server
            .tx
            .send_with(DataKind::Binary, m.as_bytes(), &mut wire, &mut server_pool)
            .unwrap();
    }
    let mut pos = 0;
    let mut back = Vec::new();
    while pos < wire.len() {
        let read = client
            .rx
            .read_with(&mut wire[pos..], &mut client.tx, &mut out, &mut client_pool)
            .expect("valid compressed stream");
        pos += read.consumed;
        match read.event {
            Some(Event::Binary(b)) => back.push(String::from_utf8(b.to_vec()).unwrap()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(back, messages);
    assert!(out.is_empty(), "nothing to answer");
    // Without takeover nothing stays with the connection between messages.
    if n.server_no_context_takeover {
        assert_eq!(server.tx.deflate_memory(), 0);
        assert_eq!(client.rx.inflate_memory(), 0);
    } else {
        assert!(server.tx.deflate_memory() > 100_000);
    }
    if n.client_no_context_takeover {
        assert_eq!(server.rx.inflate_memory(), 0);
    } else {
        assert!(server.rx.inflate_memory() > 30_000);
    }
}

#[test]
fn deflate_round_trips_with_and_without_context_takeover() {
    for (server_nct, client_nct, server_bits, client_bits) in [
        (true, true, None, None),
        (false, false, None, None),
        (true, false, Some(9), None),
        (false, true, Some(10), Some(9)),
    ] {
        let n = Negotiated {
            server_no_context_takeover: server_nct,
            client_no_context_takeover: client_nct,
            server_max_window_bits: server_bits,
            client_max_window_bits: client_bits,
        };
        deflate_pair(n, &DeflateConfig::default());
    }
}

/// A small frame that inflates to far more than the limit fails with 1009 while the receiver
/// holds no more than the limit.
#[test]
fn a_deflate_bomb_is_refused_within_the_limit() {
    let zeros = vec![0u8; 64 << 20];
    let mut client = Connection::client(Limits::default(), MaskKeys::new(fill_keys));
    let on = Negotiated {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        server_max_window_bits: None,
        client_max_window_bits: None,
    };
    client.tx.enable_deflate(on.client());
    let mut wire = Vec::new();
    client.tx.send(DataKind::Binary, &zeros, &mut wire).unwrap();
    assert!(wire.len() < 100_000, "{} bytes on the wire", wire.len());
    let limit = 1 << 20;
    let mut server = Connection::server(limits(16 << 20, limit, 16));
    server.rx.enable_deflate(on.client());
    let mut out = Vec::new();
    let mut peak = 0;
    let mut failure = None;
    for chunk in wire.chunks_mut(4096) {
        match server.rx.read(chunk, &mut server.tx, &mut out) {
            Ok(_) => peak = peak.max(server.rx.buffered()),
            Err(f) => {
                failure = Some(f.error);
                break;
            }
        }
    }
    assert!(
        matches!(failure, Some(ProtocolError::MessageTooLarge { .. })),
        "{failure:?}"
    );
    assert!(
        peak <= limit,
        "held {peak} bytes against a limit of {limit}"
    );
    assert_eq!(server.rx.buffered(), 0);
}

/// A compressed text message whose inflated bytes are not UTF-8 and whose compressed data turns
/// bad further on: the first fault in the message's bytes (the UTF-8) is the one reported, 1007,
/// whether the payload arrives in one read or byte by byte (found by the inflate fuzz target:
/// whole, the bad data was reported first, 1002).
#[test]
fn the_first_fault_of_a_compressed_message_wins_however_it_is_split() {
    let mut payload = Vec::new();
    sockeye::deflate::Compressor::new(6, 15, 8).compress(&[b"ok \xff then more"], &mut payload);
    payload.extend_from_slice(&[0xff, 0xff, 0xff]); // a block of the reserved type
    let setup = Setup {
        deflate: Some(Negotiated {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: None,
            client_max_window_bits: None,
        }),
        ..Setup::server()
    };
    let run = check(&setup, &stream(&[text(&payload).rsv(4)]));
    let closed = describe(&run);
    // 1007 (0x03ef) on the wire.
    assert!(
        closed.starts_with("Error(InvalidUtf8) | output 33 bytes [88, 1f, 03, ef,"),
        "{closed}"
    );
}

// ---------------------------------------------------------------------------------------------
// whole_frame_len: when a driver may wait for a whole frame to get it lent out
// ---------------------------------------------------------------------------------------------

#[test]
fn a_partial_single_frame_binary_message_is_worth_waiting_for() {
    let rx = Receiver::new(Role::Server, Limits::default());
    let bytes = stream(&[binary(vec![5u8; 1000])]);
    let total = bytes.len();
    // From a complete header on, until the last byte is here.
    for have in [4 + 4, 100, total - 1] {
        assert_eq!(
            rx.whole_frame_len(&bytes[..have]),
            Some(total),
            "{have} bytes"
        );
    }
    assert_eq!(rx.whole_frame_len(&bytes), None, "all here: read now");
    assert_eq!(rx.whole_frame_len(&bytes[..3]), None, "header incomplete");
}

#[test]
fn nothing_else_is_waited_for_whole() {
    let rx = Receiver::new(Role::Server, Limits::default());
    let partial = |frames: &[Frame]| {
        let bytes = stream(frames);
        rx.whole_frame_len(&bytes[..bytes.len() - 1])
    };
    assert_eq!(partial(&[text("fails fast if bad")]), None, "text");
    assert_eq!(partial(&[binary("ab").fin(false)]), None, "not FIN");
    assert_eq!(
        partial(&[binary("xy").rsv(4)]),
        None,
        "compressed or reserved bits"
    );
    assert_eq!(
        partial(&[binary("x").mask(None)]),
        None,
        "unmasked from a client"
    );
    assert_eq!(partial(&[ping("p")]), None, "control");
    let small = Receiver::new(Role::Server, limits(10, 10, 4));
    let big = stream(&[binary(vec![0u8; 11])]);
    assert_eq!(
        small.whole_frame_len(&big[..big.len() - 1]),
        None,
        "over the limit"
    );
}
