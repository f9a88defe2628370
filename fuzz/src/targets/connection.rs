//! The receiving state machine on arbitrary bytes, delivered whole and in pieces the input
//! chooses, through a driver that checks the invariants on every call (see [`crate::driver`]).
//!
//! Input: a flags byte, a length-prefixed run of piece sizes, then the peer's bytes. Flags:
//! bit 0, the application sends a close before reading; bit 1, tiny limits instead of small
//! ones; bit 2, the rest is not raw bytes but frame descriptions (see [`frames`]) encoded here
//! with consistent lengths and masks, so that long and many-fragment messages are reachable
//! by byte-level mutation.

use sockeye::close::code;
use sockeye::frame::{FrameHeader, OpCode};
use sockeye::Role;

use crate::driver::{small_limits, tiny_limits, Driver, Transcript};
use crate::input::{chunks, Cursor};
use crate::wire::encode_frame;

/// Most bytes [`frames`] generates, so that an execution stays fast.
const MAX_GENERATED: usize = 1 << 16;

/// Encodes frame descriptions until the input runs out. Each is a control byte, then:
/// with bit 6 set, a length byte and that many raw bytes copied as they are; otherwise the
/// first header byte (FIN, RSV, opcode: any value), a 16-bit payload length, payload bytes
/// (repeated to the length when fewer are left), and — masked as the peer of `role` should
/// (the other way round with bit 7 set) — a 4-byte key.
pub fn frames(input: &mut Cursor<'_>, role: Role) -> Vec<u8> {
    let mut out = Vec::new();
    while !input.is_empty() && out.len() < MAX_GENERATED {
        let control = input.u8();
        if control & 0x40 != 0 {
            let n = usize::from(input.u8());
            out.extend_from_slice(input.take(n));
            continue;
        }
        let b0 = input.u8();
        let len = usize::from(input.u16()).min(MAX_GENERATED - out.len());
        let taken = input.take(len);
        let payload: Vec<u8> = if taken.is_empty() {
            vec![0; len]
        } else {
            taken.iter().copied().cycle().take(len).collect()
        };
        let masked = (role == Role::Server) != (control & 0x80 != 0);
        let key = masked.then(|| input.array::<4>());
        let header = FrameHeader {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 7,
            opcode: OpCode::from_u8(b0),
            mask: key,
            payload_len: len as u64,
        };
        encode_frame(&mut out, &header, &payload);
    }
    out
}

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
    let generated;
    let bytes = if flags & 4 != 0 {
        generated = frames(&mut input, role);
        &generated[..]
    } else {
        input.rest()
    };
    let seed = u64::from(flags);
    let whole = transcript(role, flags, seed, [bytes]);
    let pieces = transcript(role, flags, seed, chunks(sizes, bytes));
    assert_eq!(whole, pieces, "delivery in pieces changed the outcome");
}
