//! Messages encoded by one `Sender` and decoded by the other role's `Receiver` come back as
//! they were sent.
//!
//! Input: a flags byte (bit 0: server to client instead of client to server; bit 1: end with a
//! close), the mask-key seed (8 bytes), a length-prefixed run of delivery piece sizes, then
//! operations until the input runs out. Each operation byte picks a whole message (with bit 3,
//! at most twice, one over 64 KiB repeating a short pattern), a fragmented one (with pings between fragments when the input says so), a ping or a pong;
//! lengths, fragment sizes and payloads follow it. Text payloads are made valid with
//! `String::from_utf8_lossy`, then cut into fragments anywhere, inside code points too.

use sockeye::connection::{DataKind, Sender};
use sockeye::{Limits, Role};

use crate::driver::Driver;
use crate::input::{chunks, Cursor};
use crate::keys::mask_keys;
use crate::wire::Record;

/// Codes an application may send, and a reason long enough to be cut.
const CLOSE_CODES: [u16; 8] = [1000, 1001, 1003, 1008, 1011, 1013, 3000, 4999];

/// Large enough that no message the input can describe is refused.
fn limits() -> Limits {
    Limits {
        max_frame_size: 1 << 20,
        max_message_size: 1 << 20,
        max_fragments: 1 << 12,
    }
}

fn payload(input: &mut Cursor<'_>, text: bool, max: usize) -> Vec<u8> {
    let len = usize::from(input.u16()) % (max + 1);
    let bytes = input.take(len);
    if text {
        String::from_utf8_lossy(bytes).into_owned().into_bytes()
    } else {
        bytes.to_vec()
    }
}

fn record(kind: DataKind, payload: &[u8]) -> Record {
    match kind {
        DataKind::Text => Record::Text(String::from_utf8(payload.to_vec()).expect("lossy")),
        DataKind::Binary => Record::Binary(payload.to_vec()),
    }
}

/// Sends what the input describes; returns the events the receiver should report.
fn send_all(input: &mut Cursor<'_>, tx: &mut Sender, wire: &mut Vec<u8>) -> Vec<Record> {
    let mut expected = Vec::new();
    let mut large = 0;
    while !input.is_empty() && expected.len() < 256 {
        let op = input.u8();
        let kind = if op & 4 != 0 {
            DataKind::Text
        } else {
            DataKind::Binary
        };
        match op & 3 {
            0 if op & 8 != 0 && large < 2 => {
                // Past 65,535 bytes: the 64-bit length form, read back in many pieces.
                large += 1;
                let seed = payload(input, kind == DataKind::Text, 64);
                let seed = if seed.is_empty() { vec![b'x'] } else { seed };
                let len = 0x1_0000 + usize::from(input.u16());
                let p: Vec<u8> = seed.iter().copied().cycle().take(len).collect();
                let p = match kind {
                    DataKind::Text => String::from_utf8_lossy(&p).into_owned().into_bytes(),
                    DataKind::Binary => p,
                };
                tx.send(kind, &p, wire).expect("send");
                expected.push(record(kind, &p));
            }
            0 => {
                let p = payload(input, kind == DataKind::Text, 4096);
                tx.send(kind, &p, wire).expect("send");
                expected.push(record(kind, &p));
            }
            1 => {
                let p = payload(input, kind == DataKind::Text, 4096);
                let fragments = 1 + usize::from(op >> 3);
                let mut rest = &p[..];
                for i in 0..fragments {
                    let last = i + 1 == fragments;
                    let size = input.u8();
                    let n = if last {
                        rest.len()
                    } else {
                        usize::from(size & 0x7f).min(rest.len())
                    };
                    let (piece, tail) = rest.split_at(n);
                    rest = tail;
                    tx.send_fragment(kind, piece, last, wire).expect("fragment");
                    if size & 0x80 != 0 && !last {
                        // Control frames may come between the fragments of a message (§5.4).
                        tx.ping(&[size], wire).expect("ping");
                        expected.push(Record::Ping(vec![size]));
                    }
                }
                expected.push(record(kind, &p));
            }
            2 => {
                let p = payload(input, false, 125);
                tx.ping(&p, wire).expect("ping");
                expected.push(Record::Ping(p));
            }
            _ => {
                let p = payload(input, false, 125);
                tx.pong(&p, wire).expect("pong");
                expected.push(Record::Pong(p));
            }
        }
    }
    expected
}

pub fn run(data: &[u8]) {
    let mut input = Cursor::new(data);
    let flags = input.u8();
    let seed = input.u64();
    let sizes = input.take_prefixed(15);
    let (mut tx, receiver) = if flags & 1 == 0 {
        (Sender::client(mask_keys(seed)), Role::Server)
    } else {
        (Sender::server(), Role::Client)
    };
    let close = (flags & 2 != 0).then(|| {
        let code = CLOSE_CODES[usize::from(input.u8()) % CLOSE_CODES.len()];
        let reason = String::from_utf8_lossy(input.take_prefixed(255)).into_owned();
        (code, reason)
    });

    let mut wire = Vec::new();
    let mut expected = send_all(&mut input, &mut tx, &mut wire);
    if let Some((code, reason)) = close {
        tx.close(code, &reason, &mut wire).expect("close");
        let cut = sockeye::close::truncate_reason(&reason);
        assert!(reason.starts_with(cut) && cut.len() <= 123);
        expected.push(Record::Close(Some((code, cut.to_owned()))));
    }

    // The receiver's own mask keys (for its pongs and close echo) use another seed.
    let driver = Driver::with_role(receiver, limits(), !seed);
    let got = driver.run(chunks(sizes, &wire));
    assert_eq!(
        got.records, expected,
        "decoded differently from what was sent"
    );
}
