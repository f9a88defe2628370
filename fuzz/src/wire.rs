//! What a connection produced, in owned form: the frames it wrote and the events it returned.

use sockeye::frame::{apply_mask_bytewise, FrameHeader, OpCode};
use sockeye::{Event, ProtocolError, Status};

/// A frame as written by a `Sender`, unmasked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireFrame {
    pub fin: bool,
    pub opcode: OpCode,
    pub payload: Vec<u8>,
}

impl WireFrame {
    pub fn new(opcode: OpCode, payload: &[u8]) -> Self {
        WireFrame {
            fin: true,
            opcode,
            payload: payload.to_vec(),
        }
    }

    /// The code of a close frame, if it carries one.
    pub fn close_code(&self) -> Option<u16> {
        match (self.opcode, self.payload.as_slice()) {
            (OpCode::Close, [hi, lo, ..]) => Some(u16::from_be_bytes([*hi, *lo])),
            _ => None,
        }
    }
}

/// Decodes the frames a `Sender` wrote. Panics unless `bytes` is a sequence of complete frames
/// with the reserved bits clear, in shortest length form, masked exactly when `masked` (the
/// client role), with control frames unfragmented and at most 125 bytes.
pub fn decode_frames(mut bytes: &[u8], masked: bool) -> Vec<WireFrame> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let (h, n) = match FrameHeader::parse(bytes) {
            Ok(Status::Complete(h, n)) => (h, n),
            other => panic!("sender wrote an incomplete or invalid header: {other:?}"),
        };
        assert_eq!(h.rsv, 0, "sender set reserved bits");
        assert_eq!(h.mask.is_some(), masked, "masking does not match the role");
        assert_eq!(h.encode().1, n, "header not in shortest form");
        assert!(
            !matches!(h.opcode, OpCode::Reserved(_)),
            "reserved opcode sent"
        );
        if h.opcode.is_control() {
            assert!(h.fin && h.payload_len <= 125, "bad control frame {h:?}");
        }
        let len = usize::try_from(h.payload_len).expect("length fits");
        let end = n.checked_add(len).expect("length fits");
        assert!(end <= bytes.len(), "sender wrote a truncated payload");
        let mut payload = bytes[n..end].to_vec();
        if let Some(key) = h.mask {
            apply_mask_bytewise(&mut payload, key, 0);
        }
        frames.push(WireFrame {
            fin: h.fin,
            opcode: h.opcode,
            payload,
        });
        bytes = &bytes[end..];
    }
    frames
}

/// An owned copy of an [`Event`], or the error of a failed `read`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
    Failure(ProtocolError),
}

impl Record {
    pub fn from_event(event: &Event<'_>) -> Self {
        match *event {
            Event::Text(t) => Record::Text(t.to_owned()),
            Event::Binary(b) => Record::Binary(b.to_vec()),
            Event::Ping(p) => Record::Ping(p.to_vec()),
            Event::Pong(p) => Record::Pong(p.to_vec()),
            Event::Close(f) => Record::Close(f.map(|f| (f.code, f.reason.to_owned()))),
        }
    }
}

/// Appends a frame with `header` (its length is taken as given) and `payload`, masked with the
/// header's key if it has one.
pub fn encode_frame(out: &mut Vec<u8>, header: &FrameHeader, payload: &[u8]) {
    let (head, n) = header.encode();
    out.extend_from_slice(&head[..n]);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = header.mask {
        apply_mask_bytewise(&mut out[start..], key, 0);
    }
}
