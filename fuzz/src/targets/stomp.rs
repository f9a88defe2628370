//! The STOMP parser (`sockeye_chat::stomp::parse`) fed in pieces the input chooses, the way the
//! broker's `Link` feeds it.
//!
//! Checked: no panic; every `Complete`/`HeartBeat` consumes at least one byte and no more than
//! the buffer; a buffer left `Partial` never exceeds the limits (the parser must refuse a frame
//! that can no longer fit rather than wait forever); the same outcomes whatever the chunking;
//! and every parsed frame that the encoder accepts parses back to the same frame.

use sockeye_chat::stomp::{parse, EncodeOptions, Frame, Limits, Status, Version};

use crate::input::{chunks, Cursor};

/// An owned outcome, to compare runs.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Frame(String, Vec<(String, String)>, Vec<u8>),
    HeartBeat,
    Error(String),
}

fn owned(frame: &Frame<'_>) -> Outcome {
    Outcome::Frame(
        frame.command.as_str().to_owned(),
        frame
            .headers
            .iter()
            .map(|h| (h.name.to_string(), h.value.to_string()))
            .collect(),
        frame.body.to_vec(),
    )
}

/// Headers as the encoder writes them back: `content-length` is its own business.
fn comparable(outcome: &Outcome) -> Outcome {
    match outcome {
        Outcome::Frame(c, h, b) => Outcome::Frame(
            c.clone(),
            h.iter()
                .filter(|(n, _)| n != "content-length")
                .cloned()
                .collect(),
            b.clone(),
        ),
        other => panic!("not a frame: {other:?}"),
    }
}

/// Encodes a parsed frame and parses it again: the same frame must come back.
fn round_trip(frame: &Frame<'_>, version: Option<Version>, limits: &Limits) {
    let mut bytes = Vec::new();
    let opts = EncodeOptions::new(version).with_content_length(true);
    if frame.encode(opts, &mut bytes).is_err() {
        return; // not every parsed frame is encodable in every version (e.g. CR in 1.1)
    }
    // The encoder adds its own content-length line and may escape (longer lines).
    let roomy = Limits {
        max_headers: limits.max_headers + 1,
        max_head: limits.max_head * 2 + 64,
        max_header_line: limits.max_header_line * 2 + 64,
        ..*limits
    };
    match parse(&bytes, &roomy, version) {
        Ok(Status::Complete(again, used)) => {
            assert_eq!(used, bytes.len(), "re-encoded frame parsed short");
            assert_eq!(
                comparable(&owned(&again)),
                comparable(&owned(frame)),
                "round trip changed the frame"
            );
        }
        other => panic!("re-encoded frame did not parse: {other:?}\n{bytes:?}"),
    }
}

fn drive(pieces: &[&[u8]], version: Option<Version>, limits: &Limits) -> Vec<Outcome> {
    let mut buf: Vec<u8> = Vec::new();
    let mut outcomes = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match parse(&buf, limits, version) {
                Ok(Status::Complete(frame, used)) => {
                    assert!(
                        used > 0 && used <= buf.len(),
                        "consumed {used} of {}",
                        buf.len()
                    );
                    round_trip(&frame, version, limits);
                    outcomes.push(owned(&frame));
                    buf.drain(..used);
                }
                Ok(Status::HeartBeat(used)) => {
                    assert!(used > 0 && used <= buf.len() && used <= 2);
                    outcomes.push(Outcome::HeartBeat);
                    buf.drain(..used);
                }
                Ok(Status::Partial) => {
                    let bound = limits.max_head + limits.max_body + 16;
                    assert!(
                        buf.len() <= bound,
                        "partial buffer of {} bytes beyond the limits ({bound})",
                        buf.len()
                    );
                    break;
                }
                Err(e) => {
                    outcomes.push(Outcome::Error(e.to_string()));
                    return outcomes;
                }
            }
        }
    }
    outcomes
}

pub fn run(data: &[u8]) {
    let mut input = Cursor::new(data);
    let flags = input.u8();
    let version = match flags & 3 {
        0 => None,
        1 => Some(Version::V1_0),
        2 => Some(Version::V1_1),
        _ => Some(Version::V1_2),
    };
    let limits = if flags & 4 != 0 {
        Limits {
            max_headers: 4,
            max_header_line: 64,
            max_head: 256,
            max_body: 128,
        }
    } else {
        Limits::default()
    };
    let sizes = input.take_prefixed(15);
    let bytes = input.rest();
    let whole = drive(&[bytes], version, &limits);
    let pieces = chunks(sizes, bytes);
    assert_eq!(
        drive(&pieces, version, &limits),
        whole,
        "chunking changed the outcome"
    );
}
