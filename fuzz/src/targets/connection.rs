//! The receiving state machine on arbitrary bytes, delivered whole and in pieces the input
//! chooses, through a driver that checks the invariants on every call (see [`crate::driver`]).
//!
//! Input: a flags byte (bit 0: the application sends a close before reading; bit 1: tiny
//! limits instead of small ones), a length-prefixed run of piece sizes, then the peer's bytes.

use sockeye::close::code;
use sockeye::Role;

use crate::driver::{small_limits, tiny_limits, Driver, Transcript};
use crate::input::{chunks, Cursor};

fn transcript<'a>(
    role: Role,
    flags: u8,
    seed: u64,
    pieces: impl IntoIterator<Item = &'a [u8]>,
) -> Transcript {
    let limits = if flags & 2 == 0 {
        small_limits()
    } else {
        tiny_limits()
    };
    let mut driver = Driver::with_role(role, limits, seed);
    if flags & 1 != 0 {
        driver
            .send(|tx, out| tx.close(code::GOING_AWAY, "bye", out))
            .expect("first close");
    }
    driver.run(pieces)
}

pub fn run(role: Role, data: &[u8]) {
    let mut input = Cursor::new(data);
    let flags = input.u8();
    let sizes = input.take_prefixed(15);
    let bytes = input.rest();
    let seed = u64::from(flags);
    let whole = transcript(role, flags, seed, [bytes]);
    let pieces = transcript(role, flags, seed, chunks(sizes, bytes));
    assert_eq!(whole, pieces, "delivery in pieces changed the outcome");
}
