//! A driver that obeys the `Receiver::read` contract (connection.rs): call `read` until it
//! returns `consumed == 0` with no event, keep the unconsumed tail and put it in front of the
//! next bytes. Every call is checked against the connection's invariants; what came out (the
//! events and every byte written to the sink) is kept so that two runs can be compared.

use std::sync::OnceLock;

use sockeye::close::code;
use sockeye::frame::{OpCode, MAX_HEADER_LEN};
use sockeye::{Connection, Limits, Read, Receiver, Role, Sender};

use crate::wire::{decode_frames, Record, WireFrame};

/// The most unconsumed bytes the contract lets the caller hold: an incomplete header, or an
/// incomplete control frame (RFC 6455 §5.5: at most 125 bytes of payload).
pub const MAX_TAIL: usize = MAX_HEADER_LEN + 125;

/// Memory a receiver may hold beyond `max_message_size`: `Vec`'s smallest allocation and change.
pub const MEMORY_SLACK: usize = 64;

/// The most `Receiver::buffered` may report: the message limit plus [`MEMORY_SLACK`].
///
/// With `SOCKEYE_FUZZ_LOOSE_MEMORY` set, twice the limit instead: the bound that amortised
/// `Vec` growth gives, for fuzzing the rest while an overshoot of the strict bound is known
/// (see fuzz/regressions/README.md).
pub fn memory_bound(limits: &Limits) -> usize {
    static LOOSE: OnceLock<bool> = OnceLock::new();
    let loose = *LOOSE.get_or_init(|| std::env::var_os("SOCKEYE_FUZZ_LOOSE_MEMORY").is_some());
    let factor = if loose { 2 } else { 1 };
    factor * limits.max_message_size + MEMORY_SLACK
}

/// Limits small enough that a fuzz input can reach each of them.
pub fn small_limits() -> Limits {
    Limits {
        max_frame_size: 4096,
        max_message_size: 16384,
        max_fragments: 64,
    }
}

/// Even smaller limits, so that short inputs hit the message and fragment limits too.
pub fn tiny_limits() -> Limits {
    Limits {
        max_frame_size: 125,
        max_message_size: 512,
        max_fragments: 8,
    }
}

/// What a run produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transcript {
    pub records: Vec<Record>,
    pub output: Vec<u8>,
}

pub struct Driver {
    rx: Receiver,
    tx: Sender,
    limits: Limits,
    pending: Vec<u8>,
    output: Vec<u8>,
    records: Vec<Record>,
    failed: bool,
    closed: bool,
}

impl Driver {
    pub fn new(conn: Connection, limits: Limits) -> Self {
        Driver {
            rx: conn.rx,
            tx: conn.tx,
            limits,
            pending: Vec::new(),
            output: Vec::new(),
            records: Vec::new(),
            failed: false,
            closed: false,
        }
    }

    /// A connection of `role` with `limits` and mask keys from `seed`.
    pub fn with_role(role: Role, limits: Limits, seed: u64) -> Self {
        let conn = match role {
            Role::Server => Connection::server(limits.clone()),
            Role::Client => Connection::client(limits.clone(), crate::keys::mask_keys(seed)),
        };
        Driver::new(conn, limits)
    }

    /// Lets the application send (into the same output as the connection's own replies).
    pub fn send<R>(&mut self, f: impl FnOnce(&mut Sender, &mut Vec<u8>) -> R) -> R {
        f(&mut self.tx, &mut self.output)
    }

    fn masked_output(&self) -> bool {
        self.tx.role() == Role::Client
    }

    /// Delivers the next bytes from the peer.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        let mut pos = 0;
        let mut calls = 0usize;
        loop {
            calls += 1;
            // Every call that is not the last consumes a frame header at least.
            assert!(calls <= self.pending.len() + 2, "read makes no progress");
            let out_before = self.output.len();
            let close_sent = self.tx.is_close_sent();
            let input = &mut self.pending[pos..];
            let input_len = input.len();
            let result = self.rx.read(input, &mut self.tx, &mut self.output);
            let (consumed, record) = match result {
                Ok(Read { consumed, event }) => (consumed, event.as_ref().map(Record::from_event)),
                Err(failure) => (failure.consumed, Some(Record::Failure(failure.error))),
            };
            assert!(consumed <= input_len, "consumed {consumed} of {input_len}");
            pos += consumed;
            let written = decode_frames(&self.output[out_before..], self.masked_output());
            let done = consumed == 0 && record.is_none();
            if let Some(record) = record {
                self.check_record(&record, close_sent, written);
                self.records.push(record);
            } else {
                assert!(
                    written.is_empty(),
                    "frames written without an event: {written:?}"
                );
            }
            self.check_memory();
            if done {
                break;
            }
        }
        self.pending.drain(..pos);
        assert!(
            self.pending.len() <= MAX_TAIL,
            "the contract makes the caller hold {} bytes",
            self.pending.len()
        );
    }

    /// The invariants of one event (or failure) and of the frames written with it.
    fn check_record(&mut self, record: &Record, close_sent: bool, written: Vec<WireFrame>) {
        assert!(!self.closed, "{record:?} after the peer's close");
        let reply = |frame: WireFrame| if close_sent { vec![] } else { vec![frame] };
        match record {
            Record::Failure(error) => {
                assert!(!self.failed, "a second failure: {error:?}");
                self.failed = true;
                let expected = error.close_code();
                assert!(
                    [
                        code::PROTOCOL_ERROR,
                        code::INVALID_PAYLOAD,
                        code::MESSAGE_TOO_BIG
                    ]
                    .contains(&expected),
                    "{error:?} answered with {expected}"
                );
                if close_sent {
                    assert!(written.is_empty(), "close after our close: {written:?}");
                } else {
                    assert_eq!(written.len(), 1, "{error:?} answered with {written:?}");
                    let close = &written[0];
                    assert_eq!(close.opcode, OpCode::Close);
                    assert_eq!(close.close_code(), Some(expected));
                    assert!(std::str::from_utf8(&close.payload[2..]).is_ok());
                }
                assert!(self.tx.is_close_sent());
                assert!(self.rx.is_failed() || self.rx.is_closed());
            }
            Record::Close(frame) => {
                self.closed = true;
                assert!(self.rx.is_closed());
                assert!(self.tx.is_close_sent());
                if let Some((code, reason)) = frame {
                    assert!(sockeye::close::is_valid_code(*code), "close code {code}");
                    assert!(reason.len() <= 123);
                }
                let echo = frame
                    .as_ref()
                    .map_or(vec![], |(c, _)| c.to_be_bytes().to_vec());
                assert_eq!(written, reply(WireFrame::new(OpCode::Close, &echo)));
            }
            data => {
                assert!(!self.failed, "{data:?} after a failure");
                match data {
                    Record::Ping(p) => assert_eq!(written, reply(WireFrame::new(OpCode::Pong, p))),
                    _ => assert!(written.is_empty(), "{data:?} wrote {written:?}"),
                }
                match data {
                    Record::Text(t) => assert!(t.len() <= self.limits.max_message_size),
                    Record::Binary(b) => assert!(b.len() <= self.limits.max_message_size),
                    Record::Ping(p) | Record::Pong(p) => assert!(p.len() <= 125),
                    _ => {}
                }
            }
        }
    }

    fn check_memory(&self) {
        let held = self.rx.buffered();
        let bound = memory_bound(&self.limits);
        assert!(held <= bound, "receiver holds {held} bytes (limit {bound})");
    }

    /// Delivers every piece, then hands back what the run produced.
    pub fn run<'a>(mut self, pieces: impl IntoIterator<Item = &'a [u8]>) -> Transcript {
        for piece in pieces {
            self.feed(piece);
        }
        self.finish()
    }

    pub fn finish(self) -> Transcript {
        Transcript {
            records: self.records,
            output: self.output,
        }
    }
}
