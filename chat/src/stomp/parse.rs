//! The push parser: [`parse`] one frame or heart-beat off the front of a buffer, within [`Limits`].
//!
//! The parser keeps no state between calls. A caller appends what it reads to
//! a buffer, calls [`parse`] on the whole buffer, drops the consumed bytes on
//! [`Status::Complete`] or [`Status::HeartBeat`], and reads more on
//! [`Status::Partial`].
//!
//! The result depends only on the buffer's bytes, never on how they arrived:
//! a prefix of a stream is either reported [`Status::Partial`] or gives the
//! same outcome as the whole stream. In particular every limit is checked on
//! incomplete frames as well, so [`Status::Partial`] is never returned for a
//! buffer that can no longer become a valid frame within the limits; when
//! several problems exist, the one that shows up earliest in the byte stream
//! is reported.

use memchr::memchr;

use super::escape::{unescape, Escaping};
use super::frame::parse_content_length;
use super::{Command, Frame, Header, Status, StompError, Version};

/// Size limits for one frame. Exceeding one is a [`StompError`] naming it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most header lines in one frame (repeats count). Default 64.
    pub max_headers: usize,
    /// Longest header line in bytes, before unescaping, without its `\n` or
    /// `\r\n`. Default 8 KiB. (The command line is limited separately to the
    /// longest command name, see [`Command::MAX_LEN`].)
    pub max_header_line: usize,
    /// Largest frame head in bytes: the command line, header lines and blank
    /// line, line endings included (heart-beats before the frame are not).
    /// Default 32 KiB.
    pub max_head: usize,
    /// Largest body in bytes, whether declared by `content-length` or found by
    /// looking for the NUL. Default 1 MiB.
    pub max_body: usize,
}

impl Limits {
    /// The defaults, as a constant.
    pub const DEFAULT: Limits = Limits {
        max_headers: 64,
        max_header_line: 8 * 1024,
        max_head: 32 * 1024,
        max_body: 1024 * 1024,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// Parses one frame, or one heart-beat EOL, from the start of `buf`.
///
/// `version` is the negotiated protocol version, `None` before negotiation.
/// It decides header escaping: none for `None` and 1.0, `\n \c \\` for 1.1,
/// `\r \n \c \\` for 1.2, and never any for `CONNECT`, `STOMP` and
/// `CONNECTED` frames. Lines may end in `\n` or `\r\n` in every version (a
/// `\r` before the `\n` is never part of a header value).
///
/// A header's value is everything after the first colon of its line. The body
/// is exactly `content-length` bytes followed by a NUL when the first
/// `content-length` header is present, and otherwise runs up to the first NUL.
pub fn parse<'a>(
    buf: &'a [u8],
    limits: &Limits,
    version: Option<Version>,
) -> Result<Status<Frame<'a>>, StompError> {
    match buf {
        [] | [b'\r'] => return Ok(Status::Partial),
        [b'\n', ..] => return Ok(Status::HeartBeat(1)),
        [b'\r', b'\n', ..] => return Ok(Status::HeartBeat(2)),
        _ => {}
    }

    let Some(line) = scan_line(buf, 0, Command::MAX_LEN, StompError::UnknownCommand, limits)?
    else {
        return Ok(Status::Partial);
    };
    let command = buf
        .get(..line.end)
        .and_then(Command::from_bytes)
        .ok_or(StompError::UnknownCommand)?;
    let esc = Escaping::for_frame(command, version);

    let mut headers: Vec<Header<'a>> = Vec::new();
    let mut pos = line.next;
    loop {
        let Some(line) = scan_line(
            buf,
            pos,
            limits.max_header_line,
            StompError::HeaderLineTooLong {
                limit: limits.max_header_line,
            },
            limits,
        )?
        else {
            return Ok(Status::Partial);
        };
        let text = buf.get(pos..line.end).unwrap_or_default();
        pos = line.next;
        if text.is_empty() {
            break;
        }
        if headers.len() >= limits.max_headers {
            return Err(StompError::TooManyHeaders {
                limit: limits.max_headers,
            });
        }
        headers.push(parse_header(text, esc)?);
    }

    let body_start = pos;
    let content_length = match headers.iter().find(|h| h.name == "content-length") {
        Some(h) => {
            Some(parse_content_length(&h.value).map_err(|()| StompError::InvalidContentLength)?)
        }
        None => None,
    };
    let too_large = StompError::BodyTooLarge {
        limit: limits.max_body,
    };
    let (body, consumed) = match content_length {
        Some(len) => {
            if len > limits.max_body {
                return Err(too_large);
            }
            let nul_at = body_start.checked_add(len).ok_or(too_large)?;
            match buf.get(nul_at) {
                None => return Ok(Status::Partial),
                Some(0) => (buf.get(body_start..nul_at).unwrap_or_default(), nul_at + 1),
                Some(_) => return Err(StompError::BodyNotTerminated),
            }
        }
        None => {
            // A NUL further than `max_body` bytes in is too far anyway.
            let window_end = buf
                .len()
                .min(body_start.saturating_add(limits.max_body).saturating_add(1));
            let window = buf.get(body_start..window_end).unwrap_or_default();
            match memchr(0, window) {
                Some(i) => (&window[..i], body_start + i + 1),
                None if window.len() > limits.max_body => return Err(too_large),
                None => return Ok(Status::Partial),
            }
        }
    };
    Ok(Status::Complete(
        Frame {
            command,
            headers,
            body,
        },
        consumed,
    ))
}

/// Where a complete line's content ends (before `\r\n` or `\n`) and where
/// the next line starts.
struct Line {
    end: usize,
    next: usize,
}

/// Finds the line starting at `start`, checking the problems that can be seen
/// before the line is complete: a NUL, more than `max_len` content bytes
/// (reported as `too_long`), and the head growing past `limits.max_head`.
///
/// `Ok(None)` means the line is incomplete and fine so far. When several
/// problems are present, the one whose evidence comes first in the buffer is
/// returned, so the answer for a prefix never contradicts the answer for the
/// whole stream.
fn scan_line(
    buf: &[u8],
    start: usize,
    max_len: usize,
    too_long: StompError,
    limits: &Limits,
) -> Result<Option<Line>, StompError> {
    let max_head = limits.max_head;
    // Bytes at or past index `max_head + 1` cannot matter: by then the head
    // limit is exceeded, and any other problem there would be seen later.
    let window_end = buf.len().min(max_head.saturating_add(1));
    let window = buf.get(start..window_end).unwrap_or_default();
    let lf = memchr(b'\n', window);
    let seg = &window[..lf.unwrap_or(window.len())];
    // A trailing `\r` of an incomplete line may be the start of its `\r\n`.
    let content_len = seg.len() - usize::from(seg.last() == Some(&b'\r'));

    // (offset of the first byte proving the problem, problem); ties go to the
    // first noted.
    let mut first: Option<(usize, StompError)> = None;
    let mut note = |at: usize, err: StompError| match first {
        Some((seen, _)) if seen <= at => {}
        _ => first = Some((at, err)),
    };
    if let Some(i) = memchr(0, seg) {
        note(start + i, StompError::NulInHead);
    }
    if content_len > max_len {
        // Byte `max_len` is one too many, unless it is the `\r` of the line
        // ending: then the byte after it (not a `\n`) is the proof.
        let at = if seg.get(max_len) == Some(&b'\r') {
            max_len + 1
        } else {
            max_len
        };
        note(start + at, too_long);
    }
    let line_bytes_end = start + seg.len() + usize::from(lf.is_some());
    if line_bytes_end > max_head {
        note(max_head, StompError::HeadTooLarge { limit: max_head });
    }
    if let Some((_, err)) = first {
        return Err(err);
    }
    Ok(lf.map(|i| Line {
        end: start + content_len,
        next: start + i + 1,
    }))
}

/// Splits a complete, non-empty header line at its first colon and decodes it.
fn parse_header(line: &[u8], esc: Escaping) -> Result<Header<'_>, StompError> {
    let colon = memchr(b':', line).ok_or(StompError::MissingColon)?;
    if colon == 0 {
        return Err(StompError::EmptyHeaderName);
    }
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    let name = std::str::from_utf8(name).map_err(|_| StompError::InvalidUtf8)?;
    let value = std::str::from_utf8(value).map_err(|_| StompError::InvalidUtf8)?;
    Ok(Header {
        name: unescape(name, esc)?,
        value: unescape(value, esc)?,
    })
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::stomp::testutil::{assert_split_invariant, drive_whole, Event, Rng};

    const V12: Option<Version> = Some(Version::V1_2);

    fn one(input: &[u8], version: Option<Version>) -> (Frame<'_>, usize) {
        match parse(input, &Limits::DEFAULT, version) {
            Ok(Status::Complete(f, n)) => (f, n),
            other => panic!("{other:?}"),
        }
    }

    fn err(input: &[u8], limits: &Limits, version: Option<Version>) -> StompError {
        match parse(input, limits, version) {
            Err(e) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn simple_send() {
        let input = b"SEND\ndestination:/queue/a\ncontent-type:text/plain\n\nhello\0rest";
        let (f, n) = one(input, V12);
        assert_eq!(n, input.len() - 4);
        assert_eq!(f.command, Command::Send);
        assert_eq!(f.header("destination"), Some("/queue/a"));
        assert_eq!(f.header("content-type"), Some("text/plain"));
        assert_eq!(f.headers.len(), 2);
        assert_eq!(f.body, b"hello");
        assert_eq!(f.content_length(), None);
    }

    #[test]
    fn headers_and_body_borrow() {
        let input = b"SEND\ndestination:/queue/a\n\nhello\0";
        let (f, _) = one(input, V12);
        assert!(matches!(f.headers[0].name, Cow::Borrowed(_)));
        assert!(matches!(f.headers[0].value, Cow::Borrowed(_)));
        assert_eq!(f.body.as_ptr(), input[27..].as_ptr());
        let (f, _) = one(b"SEND\nd:a\\cb\n\n\0", V12);
        assert!(matches!(f.headers[0].value, Cow::Owned(_)));
        assert_eq!(f.header("d"), Some("a:b"));
    }

    #[test]
    fn crlf_line_endings() {
        let (f, n) = one(
            b"MESSAGE\r\nsubscription:0\r\nmessage-id:7\r\n\r\nhi\0",
            V12,
        );
        assert_eq!(n, 44);
        assert_eq!(f.command, Command::Message);
        assert_eq!(f.header("subscription"), Some("0"));
        assert_eq!(f.header("message-id"), Some("7"));
        assert_eq!(f.body, b"hi");
    }

    #[test]
    fn value_is_everything_after_first_colon() {
        let (f, _) = one(
            b"SEND\ndestination:/a:b::c\nempty:\n\n\0",
            Some(Version::V1_0),
        );
        assert_eq!(f.header("destination"), Some("/a:b::c"));
        assert_eq!(f.header("empty"), Some(""));
    }

    #[test]
    fn heart_beats() {
        let l = Limits::DEFAULT;
        assert_eq!(parse(b"", &l, None), Ok(Status::Partial));
        assert_eq!(parse(b"\r", &l, None), Ok(Status::Partial));
        assert_eq!(parse(b"\n", &l, None), Ok(Status::HeartBeat(1)));
        assert_eq!(parse(b"\n\n", &l, None), Ok(Status::HeartBeat(1)));
        assert_eq!(parse(b"\r\nSEND", &l, None), Ok(Status::HeartBeat(2)));
        assert_eq!(err(b"\rSEND\n", &l, None), StompError::UnknownCommand);
    }

    #[test]
    fn every_command_parses() {
        for c in Command::ALL {
            let input = format!("{c}\n\n\0");
            let (f, n) = one(input.as_bytes(), V12);
            assert_eq!((f.command, n), (c, input.len()));
        }
    }

    #[test]
    fn unknown_commands() {
        let l = Limits::DEFAULT;
        for input in [
            &b"send\n\n\0"[..],
            b"SEND \n\n\0",
            b"FOO\n",
            b"GET / HTTP/1.1\r\n",
            b"UNSUBSCRIBEX",
            b":\n",
        ] {
            assert_eq!(err(input, &l, V12), StompError::UnknownCommand, "{input:?}");
        }
        // Could still become `UNSUBSCRIBE\r\n`.
        assert_eq!(parse(b"UNSUBSCRIBE\r", &l, V12), Ok(Status::Partial));
        assert_eq!(parse(b"XXXXXXXXXXX\r", &l, V12), Ok(Status::Partial));
        assert_eq!(err(b"XXXXXXXXXXX\rX", &l, V12), StompError::UnknownCommand);
    }

    #[test]
    fn escapes_by_version() {
        let input = b"MESSAGE\nkey\\cx:a\\nb\\\\c\n\n\0";
        let (f, _) = one(input, V12);
        assert_eq!(f.header("key:x"), Some("a\nb\\c"));
        let (f, _) = one(input, Some(Version::V1_1));
        assert_eq!(f.header("key:x"), Some("a\nb\\c"));
        for v in [None, Some(Version::V1_0)] {
            let (f, _) = one(input, v);
            assert_eq!(f.header("key\\cx"), Some("a\\nb\\\\c"));
        }
        let cr = b"ERROR\nmessage:a\\rb\n\n\0";
        assert_eq!(one(cr, V12).0.header("message"), Some("a\rb"));
        let l = Limits::DEFAULT;
        assert_eq!(err(cr, &l, Some(Version::V1_1)), StompError::InvalidEscape);
        assert_eq!(
            err(b"SEND\na:\\t\n\n\0", &l, V12),
            StompError::InvalidEscape
        );
        assert_eq!(
            err(b"SEND\na:x\\\n\n\0", &l, V12),
            StompError::InvalidEscape
        );
    }

    #[test]
    fn connect_frames_are_never_unescaped() {
        for c in ["CONNECT", "STOMP", "CONNECTED"] {
            let input = format!("{c}\nlogin:a\\cb\\t\n\n\0");
            for v in [None, Some(Version::V1_1), V12] {
                let (f, _) = one(input.as_bytes(), v);
                assert_eq!(f.header("login"), Some("a\\cb\\t"));
            }
        }
    }

    #[test]
    fn repeated_headers_keep_order_first_wins() {
        let (f, _) = one(b"MESSAGE\nfoo:World\nfoo:Hello\n\n\0", V12);
        assert_eq!(f.header("foo"), Some("World"));
        assert_eq!(f.header_all("foo").collect::<Vec<_>>(), ["World", "Hello"]);
    }

    #[test]
    fn content_length_body_with_nuls() {
        let (f, n) = one(b"SEND\ncontent-length:5\n\na\0b\0c\0\n", V12);
        assert_eq!(f.body, b"a\0b\0c");
        assert_eq!(n, 29);
        assert_eq!(f.content_length(), Some(5));
        let (f, _) = one(b"SEND\ncontent-length:0\n\n\0", V12);
        assert_eq!(f.body, b"");
        // First content-length wins.
        let (f, _) = one(b"SEND\ncontent-length:1\ncontent-length:x\n\nA\0", V12);
        assert_eq!(f.body, b"A");
    }

    #[test]
    fn content_length_errors() {
        let l = Limits::DEFAULT;
        for bad in ["", "-1", " 1", "1 ", "abc", "99999999999999999999999999"] {
            let input = format!("SEND\ncontent-length:{bad}\n\n\0");
            assert_eq!(
                err(input.as_bytes(), &l, V12),
                StompError::InvalidContentLength,
                "{bad:?}"
            );
        }
        assert_eq!(
            err(b"SEND\ncontent-length:2\n\nabc\0", &l, V12),
            StompError::BodyNotTerminated
        );
        // Too large is reported before the body arrives.
        let input = format!("SEND\ncontent-length:{}\n\n", l.max_body + 1);
        assert_eq!(
            err(input.as_bytes(), &l, V12),
            StompError::BodyTooLarge { limit: l.max_body }
        );
        // usize::MAX with an unlimited body: no overflow.
        let huge = Limits {
            max_body: usize::MAX,
            ..l
        };
        let input = format!("SEND\ncontent-length:{}\n\nabc", usize::MAX);
        assert_eq!(
            err(input.as_bytes(), &huge, V12),
            StompError::BodyTooLarge { limit: usize::MAX }
        );
        let input = format!("SEND\ncontent-length:{}\n\nabc", usize::MAX - 100);
        assert_eq!(parse(input.as_bytes(), &huge, V12), Ok(Status::Partial));
    }

    #[test]
    fn malformed_headers() {
        let l = Limits::DEFAULT;
        assert_eq!(
            err(b"SEND\nnocolon\n\n\0", &l, V12),
            StompError::MissingColon
        );
        assert_eq!(err(b"SEND\n:v\n\n\0", &l, V12), StompError::EmptyHeaderName);
        assert_eq!(err(b"SEND\na:\xff\n\n\0", &l, V12), StompError::InvalidUtf8);
        assert_eq!(
            err(b"SEND\n\xc3:v\n\n\0", &l, None),
            StompError::InvalidUtf8
        );
        // Missing blank line: the NUL is caught without waiting for more.
        assert_eq!(err(b"DISCONNECT\n\0", &l, V12), StompError::NulInHead);
        assert_eq!(err(b"SEND\na:b\0", &l, V12), StompError::NulInHead);
        assert_eq!(err(b"\0", &l, V12), StompError::NulInHead);
    }

    #[test]
    fn limits_on_complete_frames() {
        let l = Limits {
            max_headers: 2,
            max_header_line: 5,
            max_head: 30,
            max_body: 3,
        };
        assert!(parse(b"SEND\na:1\nb:2\n\nabc\0", &l, V12).is_ok());
        assert_eq!(
            err(b"SEND\na:1\nb:2\nc:3\n\n\0", &l, V12),
            StompError::TooManyHeaders { limit: 2 }
        );
        assert!(parse(b"SEND\na:123\r\n\n\0", &l, V12).is_ok());
        assert_eq!(
            err(b"SEND\na:1234\n\n\0", &l, V12),
            StompError::HeaderLineTooLong { limit: 5 }
        );
        assert_eq!(
            err(
                b"SEND\na:111\nb:111\nc:111\nd:111\ne:1",
                &Limits {
                    max_headers: 9,
                    ..l
                },
                V12
            ),
            StompError::HeadTooLarge { limit: 30 }
        );
        assert_eq!(
            err(b"SEND\n\nabcd\0", &l, V12),
            StompError::BodyTooLarge { limit: 3 }
        );
        // Head of exactly max_head bytes is fine.
        let exact = Limits {
            max_head: 10,
            max_body: 0,
            ..l
        };
        assert!(parse(b"SEND\na:1\n\n\0", &exact, V12).is_ok());
        assert_eq!(
            err(b"SEND\na:12\n\n\0", &exact, V12),
            StompError::HeadTooLarge { limit: 10 }
        );
    }

    #[test]
    fn limits_on_partial_frames() {
        let l = Limits {
            max_headers: 2,
            max_header_line: 5,
            max_head: 20,
            max_body: 3,
        };
        // Line too long before its end arrives.
        assert_eq!(
            err(b"SEND\nabcdef", &l, V12),
            StompError::HeaderLineTooLong { limit: 5 }
        );
        assert_eq!(parse(b"SEND\nabcde\r", &l, V12), Ok(Status::Partial));
        // Head too large before the blank line arrives.
        assert_eq!(
            err(
                b"SEND\na:1\nb:2\nc:3\nd:4\ne",
                &Limits {
                    max_headers: 9,
                    ..l
                },
                V12
            ),
            StompError::HeadTooLarge { limit: 20 }
        );
        // Body too large before its NUL arrives.
        assert_eq!(
            err(b"SEND\n\nabcd", &l, V12),
            StompError::BodyTooLarge { limit: 3 }
        );
        assert_eq!(parse(b"SEND\n\nabc", &l, V12), Ok(Status::Partial));
    }

    #[test]
    fn huge_buffers_are_not_scanned_past_the_limits() {
        let l = Limits::DEFAULT;
        let mut input = b"SEND\n\n".to_vec();
        input.resize(input.len() + 4 * l.max_body, b'x');
        assert_eq!(
            err(&input, &l, V12),
            StompError::BodyTooLarge { limit: l.max_body }
        );
        let mut input = b"SEND\na:".to_vec();
        input.resize(4 * l.max_head, b'x');
        assert_eq!(
            err(&input, &l, V12),
            StompError::HeaderLineTooLong {
                limit: l.max_header_line
            }
        );
    }

    #[test]
    fn zero_limits_do_not_panic() {
        let zero = Limits {
            max_headers: 0,
            max_header_line: 0,
            max_head: 0,
            max_body: 0,
        };
        assert_eq!(
            err(b"SEND\n\n\0", &zero, V12),
            StompError::HeadTooLarge { limit: 0 }
        );
        assert_eq!(parse(b"\n", &zero, V12), Ok(Status::HeartBeat(1)));
    }

    #[test]
    fn stream_of_frames_and_heart_beats() {
        let input = b"\nSEND\ndestination:/a\n\nx\0\r\n\nRECEIPT\nreceipt-id:1\n\n\0\nMESS";
        let events = drive_whole(input, &Limits::DEFAULT, V12);
        let kinds: Vec<String> = events.iter().map(Event::kind).collect();
        assert_eq!(
            kinds,
            [
                "heartbeat 1",
                "frame SEND",
                "heartbeat 2",
                "heartbeat 1",
                "frame RECEIPT",
                "heartbeat 1",
                "partial 4"
            ]
        );
        assert_split_invariant(input, &Limits::DEFAULT, V12);
    }

    /// Tight limits so the random inputs hit every limit often.
    const TIGHT: Limits = Limits {
        max_headers: 3,
        max_header_line: 12,
        max_head: 40,
        max_body: 10,
    };

    #[test]
    fn random_inputs_never_panic_and_split_invariantly() {
        let alphabet: &[u8] =
            b"\0\0\r\n\n\n:::\\\\cnrtSENDUBCRIPTMAGEOKXAvx-\xc3\xa9\xff0123456789";
        let mut pieces: Vec<&[u8]> = vec![
            b"SEND\n",
            b"MESSAGE\r\n",
            b"CONNECT\n",
            b"content-length:",
            b"content-length:3\n",
            b"\n\n",
            b"a:b\n",
            b"x\\c:y\\n\n",
            b"\0",
        ];
        pieces.extend(alphabet.chunks(1));
        let mut rng = Rng::new(0x5eed_5707);
        for _ in 0..3000 {
            let mut input = Vec::new();
            for _ in 0..rng.below(30) {
                input.extend_from_slice(pieces[rng.below(pieces.len())]);
            }
            for version in [None, Some(Version::V1_0), Some(Version::V1_1), V12] {
                for limits in [&TIGHT, &Limits::DEFAULT] {
                    assert_split_invariant(&input, limits, version);
                }
            }
        }
    }
}
