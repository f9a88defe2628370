//! The inflate path of permessage-deflate (RFC 7692): compressed messages through a
//! server-role `Receiver` with deflate on, whole and in input-chosen pieces. Checks: identical
//! events and output whatever the chunking; memory within the message limit, inflated bytes
//! included (the driver checks `buffered` after every call); no panic on any bytes; and
//! messages that were validly compressed come back as they were.
//!
//! Input: a flags byte (bit 0: context takeover both ways; bit 1: tiny limits instead of
//! small), a length-prefixed run of delivery piece sizes, then messages until the input runs
//! out: an op byte (bit 0: the payload is compressed here, else its bytes are taken as the
//! compressed payload as they are; bit 1: text; bits 2–3: fragments minus one; bit 4: no RSV1,
//! an uncompressed message), a u16 length and that many bytes.

use sockeye::deflate::{Compressor, Negotiated};
use sockeye::frame::{FrameHeader, OpCode};
use sockeye::{Connection, Limits};

use crate::driver::{small_limits, tiny_limits, Driver};
use crate::input::{chunks, Cursor};
use crate::wire::{encode_frame, Record};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn connection(n: Negotiated, limits: &Limits) -> Connection {
    let mut conn = Connection::server(limits.clone());
    conn.rx.enable_deflate(n.client());
    conn.tx.enable_deflate(n.server());
    conn
}

/// The frames of one message: `payload` cut into `fragments` pieces, RSV1 on the first when
/// `compressed`.
fn frames(wire: &mut Vec<u8>, text: bool, compressed: bool, payload: &[u8], fragments: usize) {
    let size = payload.len().div_ceil(fragments).max(1);
    let mut pieces: Vec<&[u8]> = payload.chunks(size).collect();
    if pieces.is_empty() {
        pieces.push(&[]);
    }
    let last = pieces.len() - 1;
    for (i, piece) in pieces.into_iter().enumerate() {
        let opcode = match (i, text) {
            (0, true) => OpCode::Text,
            (0, false) => OpCode::Binary,
            _ => OpCode::Continuation,
        };
        let header = FrameHeader {
            fin: i == last,
            rsv: if i == 0 && compressed { 0b100 } else { 0 },
            opcode,
            mask: Some(KEY),
            payload_len: piece.len() as u64,
        };
        encode_frame(wire, &header, piece);
    }
}

pub fn run(data: &[u8]) {
    let mut input = Cursor::new(data);
    let flags = input.u8();
    let takeover = flags & 1 != 0;
    let limits = if flags & 2 != 0 {
        tiny_limits()
    } else {
        small_limits()
    };
    let sizes = input.take_prefixed(32);
    let n = Negotiated {
        server_no_context_takeover: !takeover,
        client_no_context_takeover: !takeover,
        server_max_window_bits: None,
        client_max_window_bits: None,
    };
    // The peer's compressor, for the messages compressed here.
    let mut peer = Compressor::new(6, 15, 8);
    let mut wire = Vec::new();
    let mut expected = Some(Vec::new());
    let mut messages = 0;
    while !input.is_empty() && messages < 64 {
        messages += 1;
        let op = input.u8();
        let len = usize::from(input.u16()) % (limits.max_message_size + 1024);
        let bytes = input.take(len);
        let text = op & 2 != 0;
        let fragments = usize::from((op >> 2) & 3) + 1;
        let plain = op & 16 != 0;
        let message = if text {
            String::from_utf8_lossy(bytes).into_owned().into_bytes()
        } else {
            bytes.to_vec()
        };
        let on_wire = if plain {
            message.clone()
        } else if op & 1 != 0 {
            let mut packed = Vec::new();
            peer.compress(&[&message], &mut packed);
            if !takeover {
                peer.reset();
            }
            packed
        } else {
            // Arbitrary bytes: whatever they inflate to (or fail with) is not predicted here.
            frames(&mut wire, text, true, bytes, fragments);
            expected = None;
            continue;
        };
        frames(&mut wire, text, !plain, &on_wire, fragments);
        let fits = message.len() <= limits.max_message_size
            && fragments <= limits.max_fragments
            && on_wire.len().div_ceil(fragments) <= limits.max_frame_size;
        let Some(list) = expected.as_mut() else {
            continue;
        };
        if !fits {
            // A limit ends the stream here; what came before must still be right.
            list.push(None);
            break;
        }
        list.push(Some(match text {
            true => Record::Text(String::from_utf8(message).expect("lossy")),
            false => Record::Binary(message),
        }));
    }
    let whole = Driver::new(connection(n, &limits), limits.clone()).run([&wire[..]]);
    let pieces = chunks(sizes, &wire);
    let chunked = Driver::new(connection(n, &limits), limits.clone()).run(pieces);
    assert_eq!(whole, chunked, "the result depends on the chunking");
    if let Some(list) = expected {
        for (i, want) in list.iter().enumerate() {
            match want {
                Some(record) => assert_eq!(whole.records.get(i), Some(record), "message {i}"),
                // Over a limit: the stream fails there.
                None => assert!(
                    matches!(whole.records.get(i), Some(Record::Failure(_)) | None),
                    "message {i} over a limit: {:?}",
                    whole.records.get(i)
                ),
            }
        }
    }
}
