//! Finding STOMP frames in what a connection received, fast enough for hundreds of thousands
//! of MESSAGE frames a second on one core: only the frame's bounds, whether it is a MESSAGE
//! and where its body is are worked out here (no header list is built); the rare other frames
//! go through the codec's `parse`.

use memchr::memchr;

/// Longest frame head accepted (command line, header lines, blank line).
const MAX_HEAD: usize = 64 << 10;
/// Largest body accepted.
const MAX_BODY: usize = 16 << 20;

#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// A whole frame: `start` is where its command begins (after heart-beat EOLs), `body` the
    /// body's range, `used` the bytes through its NUL; all relative to the scanned slice.
    Frame {
        message: bool,
        start: usize,
        body: (usize, usize),
        used: usize,
    },
    /// Only heart-beats, or the start of a frame: read more.
    Partial,
    Bad(&'static str),
}

/// Finds the frame at the start of `buf` (heart-beat EOLs before it are skipped).
pub fn scan(buf: &[u8]) -> Scan {
    let mut start = 0;
    loop {
        match buf.get(start..) {
            Some([b'\n', ..]) => start += 1,
            Some([b'\r', b'\n', ..]) => start += 2,
            Some([] | [b'\r']) | None => return Scan::Partial,
            Some(_) => break,
        }
    }
    let mut pos = start;
    let mut command: Option<&[u8]> = None;
    let mut length: Option<usize> = None;
    let body_start = loop {
        let Some(nl) = memchr(b'\n', &buf[pos..]) else {
            return if buf.len() - start > MAX_HEAD {
                Scan::Bad("frame head too long")
            } else {
                Scan::Partial
            };
        };
        let mut line = &buf[pos..pos + nl];
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        pos += nl + 1;
        if pos - start > MAX_HEAD {
            return Scan::Bad("frame head too long");
        }
        if command.is_none() {
            command = Some(line);
        } else if line.is_empty() {
            break pos;
        } else if length.is_none() {
            if let Some(v) = line.strip_prefix(b"content-length:") {
                match decimal(v) {
                    Some(n) => length = Some(n),
                    None => return Scan::Bad("bad content-length"),
                }
            }
        }
    };
    let body_end = match length {
        Some(len) => {
            if len > MAX_BODY {
                return Scan::Bad("body too large");
            }
            match buf.get(body_start + len) {
                None => return Scan::Partial,
                Some(0) => body_start + len,
                Some(_) => return Scan::Bad("body not terminated by NUL"),
            }
        }
        None => match memchr(0, &buf[body_start..]) {
            Some(n) => body_start + n,
            None if buf.len() - body_start > MAX_BODY => return Scan::Bad("body too large"),
            None => return Scan::Partial,
        },
    };
    Scan::Frame {
        message: command == Some(b"MESSAGE"),
        start,
        body: (body_start, body_end),
        used: body_end + 1,
    }
}

fn decimal(v: &[u8]) -> Option<usize> {
    if v.is_empty() || v.len() > 12 {
        return None;
    }
    v.iter().try_fold(0usize, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + usize::from(b - b'0'))
    })
}

/// Sixteen lowercase hex digits.
pub fn hex16(v: &[u8]) -> Option<u64> {
    if v.len() != 16 {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        Some(n << 4 | u64::from(d))
    })
}

/// Writes `n` as sixteen lowercase hex digits.
pub fn put_hex16(out: &mut [u8], n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in out.iter_mut().take(16).enumerate() {
        *b = DIGITS[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_with_and_without_content_length() {
        let buf = b"\n\r\nMESSAGE\r\nsubscription:0\ncontent-length:3\n\nab\0\0RECEIPT\n";
        let Scan::Frame {
            message,
            start,
            body,
            used,
        } = scan(buf)
        else {
            panic!("{:?}", scan(buf));
        };
        assert!(message);
        assert_eq!(start, 3);
        assert_eq!(&buf[body.0..body.1], b"ab\0");
        assert_eq!(buf[used - 1], 0);
        assert_eq!(scan(&buf[used..]), Scan::Partial);
        let buf = b"RECEIPT\nreceipt-id:7\n\n\0MESSAGE";
        let Scan::Frame {
            message,
            body,
            used,
            ..
        } = scan(buf)
        else {
            panic!();
        };
        assert!(!message);
        assert_eq!(body.0, body.1);
        assert_eq!(&buf[used..], b"MESSAGE");
    }

    #[test]
    fn every_prefix_is_partial() {
        let buf = b"MESSAGE\ndestination:/topic/a\ncontent-length:5\n\nhello\0";
        for n in 0..buf.len() {
            assert_eq!(scan(&buf[..n]), Scan::Partial, "{n}");
        }
        assert!(matches!(scan(buf), Scan::Frame { used, .. } if used == buf.len()));
    }

    #[test]
    fn bad_frames() {
        assert_eq!(
            scan(b"MESSAGE\ncontent-length:x\n\n\0"),
            Scan::Bad("bad content-length")
        );
        assert_eq!(
            scan(b"MESSAGE\ncontent-length:1\n\nab\0"),
            Scan::Bad("body not terminated by NUL")
        );
    }

    #[test]
    fn hex_round_trip() {
        let mut b = [0u8; 16];
        for n in [0, 1, 0xdead_beef, u64::MAX] {
            put_hex16(&mut b, n);
            assert_eq!(hex16(&b), Some(n));
        }
        assert_eq!(hex16(b"000000000000000g"), None);
        assert_eq!(hex16(b"00"), None);
    }
}
