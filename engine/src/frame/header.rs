//! Frame header parsing and encoding (RFC 6455 §5.2), in the httparse push style.
//!
//! Parsing only decodes the bits; what is allowed (reserved bits, opcodes, masking per role,
//! control-frame rules) is judged by the connection, which knows the role and the limits.

use crate::Status;

/// A frame opcode. Reserved values are kept so the connection can name them in its error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
    /// 0x3–0x7 (data) or 0xB–0xF (control): reserved by RFC 6455.
    Reserved(u8),
}

impl OpCode {
    pub fn from_u8(value: u8) -> OpCode {
        match value & 0x0f {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xa => OpCode::Pong,
            other => OpCode::Reserved(other),
        }
    }

    pub fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xa,
            OpCode::Reserved(v) => v & 0x0f,
        }
    }

    /// Control frames have the high bit of the opcode set (§5.5).
    pub fn is_control(self) -> bool {
        self.as_u8() & 0x08 != 0
    }
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    /// RSV1..RSV3 as the low three bits.
    pub rsv: u8,
    pub opcode: OpCode,
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
}

/// The longest header: 2 bytes, 8 bytes of extended length, 4 bytes of mask key.
pub const MAX_HEADER_LEN: usize = 14;

/// The only header that cannot be decoded: a 64-bit length with its most significant bit set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LengthOverflow;

impl FrameHeader {
    /// Decodes a header from the start of `buf`.
    ///
    /// `Complete(header, consumed)` never consumes more than `buf.len()` nor more than
    /// [`MAX_HEADER_LEN`]; `Partial` means more bytes are needed.
    pub fn parse(buf: &[u8]) -> Result<Status<FrameHeader>, LengthOverflow> {
        let (b0, b1) = match buf {
            [b0, b1, ..] => (*b0, *b1),
            _ => return Ok(Status::Partial),
        };
        let masked = b1 & 0x80 != 0;
        let (payload_len, mut pos) = match b1 & 0x7f {
            126 => match buf.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(Status::Partial),
            },
            127 => match buf.get(2..10) {
                Some(b) => {
                    let mut len = [0u8; 8];
                    len.copy_from_slice(b);
                    let len = u64::from_be_bytes(len);
                    // §5.2: "the most significant bit MUST be 0".
                    if len >> 63 != 0 {
                        return Err(LengthOverflow);
                    }
                    (len, 10)
                }
                None => return Ok(Status::Partial),
            },
            short => (u64::from(short), 2),
        };
        let mask = if masked {
            match buf.get(pos..pos + 4) {
                Some(k) => {
                    pos += 4;
                    Some([k[0], k[1], k[2], k[3]])
                }
                None => return Ok(Status::Partial),
            }
        } else {
            None
        };
        let header = FrameHeader {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 0x07,
            opcode: OpCode::from_u8(b0),
            mask,
            payload_len,
        };
        Ok(Status::Complete(header, pos))
    }

    /// Encodes this header with the shortest length form. Returns the bytes and their count.
    pub fn encode(&self) -> ([u8; MAX_HEADER_LEN], usize) {
        let mut out = [0u8; MAX_HEADER_LEN];
        out[0] = (u8::from(self.fin) << 7) | ((self.rsv & 0x07) << 4) | self.opcode.as_u8();
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut pos = 2;
        if self.payload_len < 126 {
            out[1] = mask_bit | self.payload_len as u8;
        } else if let Ok(len) = u16::try_from(self.payload_len) {
            out[1] = mask_bit | 126;
            out[2..4].copy_from_slice(&len.to_be_bytes());
            pos = 4;
        } else {
            out[1] = mask_bit | 127;
            out[2..10].copy_from_slice(&self.payload_len.to_be_bytes());
            pos = 10;
        }
        if let Some(key) = self.mask {
            out[pos..pos + 4].copy_from_slice(&key);
            pos += 4;
        }
        (out, pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(opcode: OpCode, len: u64, mask: Option<[u8; 4]>) -> FrameHeader {
        FrameHeader {
            fin: true,
            rsv: 0,
            opcode,
            mask,
            payload_len: len,
        }
    }

    #[test]
    fn every_length_form_round_trips() {
        for len in [
            0u64,
            1,
            125,
            126,
            127,
            65_535,
            65_536,
            1 << 32,
            (1 << 63) - 1,
        ] {
            for mask in [None, Some([9, 8, 7, 6])] {
                let h = header(OpCode::Binary, len, mask);
                let (bytes, n) = h.encode();
                let expected_n = match len {
                    0..=125 => 2,
                    126..=65_535 => 4,
                    _ => 10,
                } + if mask.is_some() { 4 } else { 0 };
                assert_eq!(n, expected_n, "len {len}");
                assert_eq!(FrameHeader::parse(&bytes[..n]), Ok(Status::Complete(h, n)));
                for cut in 0..n {
                    assert_eq!(
                        FrameHeader::parse(&bytes[..cut]),
                        Ok(Status::Partial),
                        "cut {cut}"
                    );
                }
            }
        }
    }

    #[test]
    fn top_bit_of_64_bit_length_is_an_error() {
        let mut bytes = vec![0x82, 127];
        bytes.extend_from_slice(&(1u64 << 63).to_be_bytes());
        assert_eq!(FrameHeader::parse(&bytes), Err(LengthOverflow));
    }

    #[test]
    fn bits_are_decoded() {
        // RFC 6455 §5.7: a single-frame masked text message "Hello".
        let bytes = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let Ok(Status::Complete(h, n)) = FrameHeader::parse(&bytes) else {
            panic!()
        };
        assert_eq!(n, 6);
        assert_eq!(h, header(OpCode::Text, 5, Some([0x37, 0xfa, 0x21, 0x3d])));
        let Ok(Status::Complete(h, _)) = FrameHeader::parse(&[0x7b, 0x00]) else {
            panic!()
        };
        assert!(!h.fin);
        assert_eq!(h.rsv, 0b111);
        assert_eq!(h.opcode, OpCode::Reserved(0xb));
        assert!(h.opcode.is_control());
    }
}
