//! `FrameHeader::parse` on arbitrary bytes, against an independent reading of RFC 6455 §5.2.

use sockeye::frame::{FrameHeader, LengthOverflow, OpCode, MAX_HEADER_LEN};
use sockeye::Status;

/// The header length the first bytes announce (None: fewer than 2 bytes).
fn announced_len(data: &[u8]) -> Option<usize> {
    let b1 = *data.get(1)?;
    let ext = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    Some(2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 })
}

/// Is the length in the header encoded in its shortest form?
fn is_shortest(h: &FrameHeader, len_field: u8) -> bool {
    match len_field {
        126 => h.payload_len >= 126,
        127 => h.payload_len > 0xffff,
        _ => true,
    }
}

pub fn run(data: &[u8]) {
    let parsed = FrameHeader::parse(data);
    let Some(need) = announced_len(data) else {
        assert_eq!(parsed, Ok(Status::Partial));
        return;
    };
    let (h, n) = match parsed {
        Ok(Status::Complete(h, n)) => (h, n),
        Ok(Status::Partial) => {
            assert!(
                data.len() < need,
                "partial with {} of {need} bytes",
                data.len()
            );
            return;
        }
        Err(LengthOverflow) => {
            assert!(data.len() >= 10 && data[1] & 0x7f == 127 && data[2] & 0x80 != 0);
            return;
        }
    };
    assert!(
        n <= data.len() && n <= MAX_HEADER_LEN,
        "consumed {n} of {}",
        data.len()
    );
    assert_eq!(n, need);

    // Every bit decoded as written.
    assert_eq!(h.fin, data[0] & 0x80 != 0);
    assert_eq!(h.rsv, (data[0] >> 4) & 7);
    assert_eq!(h.opcode.as_u8(), data[0] & 0x0f);
    assert_eq!(OpCode::from_u8(h.opcode.as_u8()), h.opcode);
    assert_eq!(h.opcode.is_control(), data[0] & 0x08 != 0);
    assert_eq!(h.mask.is_some(), data[1] & 0x80 != 0);
    if let Some(key) = h.mask {
        assert_eq!(key[..], data[n - 4..n]);
    }
    assert!(h.payload_len >> 63 == 0);

    // Encoding gives the shortest form, which parses back to the same header.
    let (bytes, m) = h.encode();
    assert!(m <= n);
    assert_eq!(FrameHeader::parse(&bytes[..m]), Ok(Status::Complete(h, m)));
    if is_shortest(&h, data[1] & 0x7f) {
        assert_eq!(bytes[..m], data[..n], "re-encoding changed the bytes");
    }
    for cut in 0..m {
        assert_eq!(
            FrameHeader::parse(&bytes[..cut]),
            Ok(Status::Partial),
            "cut {cut}"
        );
    }
    // What follows the header does not change it.
    let mut longer = bytes[..m].to_vec();
    longer.extend_from_slice(&data[n..]);
    assert_eq!(FrameHeader::parse(&longer), Ok(Status::Complete(h, m)));
}
