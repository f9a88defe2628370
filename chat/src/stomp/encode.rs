//! The encoder: whole frames into a caller's buffer, and `MESSAGE` fan-out over one shared, pre-encoded tail.
//!
//! Frames are written with `\n` line endings (valid in every version) and
//! headers escaped as the frame's command and version require (see
//! [`parse`](super::parse)). The `content-length` header belongs to the
//! encoder: one supplied by the caller is dropped, and the real one is written
//! when [`EncodeOptions::content_length`] asks for it.
//!
//! For the broker's fan-out, a `MESSAGE` frame is split in two: a
//! [`MessageTail`] holding the headers every subscriber shares plus the body
//! and NUL, encoded once (per protocol version) into a [`Bytes`], and a small
//! per-subscriber head from [`encode_message_head`]. Sending a message is
//! then writing the head and a clone of the tail's `Bytes` (a reference-count
//! bump, no copy), e.g. as one vectored write.

use bytes::{Bytes, BytesMut};
use memchr::memchr;

use super::escape::{check_encodable, put_escaped, Escaping};
use super::{Command, EncodeError, Frame, Version};

/// A growable byte buffer the encoder can append to and roll back.
pub trait EncodeBuf {
    /// Bytes written so far.
    fn len(&self) -> usize;
    /// Whether nothing is written.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Drops everything after the first `len` bytes.
    fn truncate(&mut self, len: usize);
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]);
    /// Makes room for `additional` more bytes (a hint: `put` grows the buffer anyway).
    fn reserve(&mut self, _additional: usize) {}
}

impl EncodeBuf for Vec<u8> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn truncate(&mut self, len: usize) {
        Vec::truncate(self, len);
    }
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    fn reserve(&mut self, additional: usize) {
        Vec::reserve(self, additional);
    }
}

impl EncodeBuf for BytesMut {
    fn len(&self) -> usize {
        BytesMut::len(self)
    }
    fn truncate(&mut self, len: usize) {
        BytesMut::truncate(self, len);
    }
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    fn reserve(&mut self, additional: usize) {
        BytesMut::reserve(self, additional);
    }
}

/// How to encode a frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncodeOptions {
    /// The negotiated version, `None` before negotiation. Decides escaping
    /// exactly as for [`parse`](super::parse).
    pub version: Option<Version>,
    /// Write a `content-length` header for the body (even an empty one).
    /// Without it a body containing NUL is an [`EncodeError::NulInBody`].
    pub content_length: bool,
}

impl EncodeOptions {
    /// Options for `version`, without `content-length`.
    pub const fn new(version: Option<Version>) -> Self {
        EncodeOptions {
            version,
            content_length: false,
        }
    }

    /// The same options with `content_length` set.
    pub const fn with_content_length(self, content_length: bool) -> Self {
        EncodeOptions {
            content_length,
            ..self
        }
    }
}

/// The header names [`encode_message_head`] writes per subscriber;
/// [`MessageTail::encode`] drops them from the shared headers.
pub const PER_SUBSCRIBER_HEADERS: [&str; 3] = ["subscription", "message-id", "ack"];

/// Appends one whole frame to `out`.
///
/// Headers are written in the given order after the command line; a
/// `content-length` among them is dropped (see [`EncodeOptions::content_length`]).
/// On error nothing is appended.
pub fn encode<B, I, N, V>(
    command: Command,
    headers: I,
    body: &[u8],
    opts: EncodeOptions,
    out: &mut B,
) -> Result<(), EncodeError>
where
    B: EncodeBuf + ?Sized,
    I: IntoIterator<Item = (N, V)>,
    N: AsRef<str>,
    V: AsRef<str>,
{
    check_body(body, opts)?;
    let esc = Escaping::for_frame(command, opts.version);
    let mark = out.len();
    out.put(command.as_str().as_bytes());
    out.put(b"\n");
    if let Err(e) = put_headers(headers, &[], esc, out) {
        out.truncate(mark);
        return Err(e);
    }
    put_body(body, opts, out);
    Ok(())
}

impl Frame<'_> {
    /// Appends this frame to `out`; see [`encode`].
    pub fn encode<B: EncodeBuf + ?Sized>(
        &self,
        opts: EncodeOptions,
        out: &mut B,
    ) -> Result<(), EncodeError> {
        encode(
            self.command,
            self.headers.iter().map(|h| (&*h.name, &*h.value)),
            self.body,
            opts,
            out,
        )
    }
}

/// The part of a `MESSAGE` frame that every subscriber receives unchanged:
/// the shared header lines, the blank line, the body and the NUL.
///
/// Escaping differs between versions, so a broker serving mixed versions
/// keeps one tail per version in use (at most three).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageTail {
    bytes: Bytes,
    version: Option<Version>,
}

impl MessageTail {
    /// Encodes the shared headers (`destination`, `content-type`, user
    /// headers…) and body. The [`PER_SUBSCRIBER_HEADERS`] and
    /// `content-length` are dropped from `headers`; `content-length` is
    /// written per `opts`.
    pub fn encode<I, N, V>(
        headers: I,
        body: &[u8],
        opts: EncodeOptions,
    ) -> Result<Self, EncodeError>
    where
        I: IntoIterator<Item = (N, V)>,
        N: AsRef<str>,
        V: AsRef<str>,
    {
        check_body(body, opts)?;
        let esc = Escaping::for_frame(Command::Message, opts.version);
        let mut out = Vec::with_capacity(body.len() + 128);
        put_headers(headers, &PER_SUBSCRIBER_HEADERS, esc, &mut out)?;
        put_body(body, opts, &mut out);
        Ok(MessageTail {
            bytes: Bytes::from(out),
            version: opts.version,
        })
    }

    /// The encoded tail. Clone it (cheaply) for each subscriber.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The version this tail was encoded for.
    pub fn version(&self) -> Option<Version> {
        self.version
    }
}

/// Appends the per-subscriber start of a `MESSAGE` frame for `tail`: the
/// command line and the `subscription`, `message-id` and (if given) `ack`
/// headers, escaped for the tail's version. Followed by `tail.bytes()` it is a
/// complete frame. On error nothing is appended.
pub fn encode_message_head<B: EncodeBuf + ?Sized>(
    tail: &MessageTail,
    subscription: &str,
    message_id: &str,
    ack: Option<&str>,
    out: &mut B,
) -> Result<(), EncodeError> {
    let esc = Escaping::for_frame(Command::Message, tail.version);
    let mark = out.len();
    // Room for the whole head at once (unless escapes lengthen it): a fan-out carves one
    // head per subscriber out of a `BytesMut` that `split` leaves empty, and growing it
    // header by header cost several reallocations per delivery.
    let values = subscription.len() + message_id.len() + ack.map_or(0, |a| a.len() + 5);
    out.reserve(40 + values);
    out.put(b"MESSAGE\n");
    let [sub, id, ack_name] = PER_SUBSCRIBER_HEADERS;
    let headers = [
        (sub, Some(subscription)),
        (id, Some(message_id)),
        (ack_name, ack),
    ];
    let result = put_headers(
        headers.iter().filter_map(|&(n, v)| Some((n, v?))),
        &[],
        esc,
        out,
    );
    if result.is_err() {
        out.truncate(mark);
    }
    result
}

fn check_body(body: &[u8], opts: EncodeOptions) -> Result<(), EncodeError> {
    if !opts.content_length && memchr(0, body).is_some() {
        return Err(EncodeError::NulInBody);
    }
    Ok(())
}

/// Writes header lines, skipping `content-length` and the names in `skip`.
/// May leave a partial write behind on error: callers roll back.
fn put_headers<B, I, N, V>(
    headers: I,
    skip: &[&str],
    esc: Escaping,
    out: &mut B,
) -> Result<(), EncodeError>
where
    B: EncodeBuf + ?Sized,
    I: IntoIterator<Item = (N, V)>,
    N: AsRef<str>,
    V: AsRef<str>,
{
    for (name, value) in headers {
        let (name, value) = (name.as_ref(), value.as_ref());
        if name == "content-length" || skip.contains(&name) {
            continue;
        }
        check_encodable(name, esc, true)?;
        check_encodable(value, esc, false)?;
        put_escaped(name, esc, out);
        out.put(b":");
        put_escaped(value, esc, out);
        out.put(b"\n");
    }
    Ok(())
}

/// Writes the optional `content-length` line, the blank line, body and NUL.
fn put_body<B: EncodeBuf + ?Sized>(body: &[u8], opts: EncodeOptions, out: &mut B) {
    if opts.content_length {
        out.put(b"content-length:");
        put_decimal(body.len(), out);
        out.put(b"\n");
    }
    out.put(b"\n");
    out.put(body);
    out.put(b"\0");
}

fn put_decimal<B: EncodeBuf + ?Sized>(mut n: usize, out: &mut B) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stomp::testutil::Rng;
    use crate::stomp::{parse, Header, Limits, Status};

    const V12: Option<Version> = Some(Version::V1_2);

    fn parsed(bytes: &[u8], version: Option<Version>) -> Frame<'_> {
        match parse(bytes, &Limits::DEFAULT, version) {
            Ok(Status::Complete(f, n)) => {
                assert_eq!(n, bytes.len());
                f
            }
            other => panic!("{other:?} for {:?}", bytes.escape_ascii().to_string()),
        }
    }

    #[test]
    fn plain_frame() {
        let mut out = Vec::new();
        encode(
            Command::Send,
            [("destination", "/queue/a"), ("content-type", "text/plain")],
            b"hi",
            EncodeOptions::new(V12),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            out,
            b"SEND\ndestination:/queue/a\ncontent-type:text/plain\n\nhi\0"
        );
    }

    #[test]
    fn content_length_is_owned_by_the_encoder() {
        let mut out = Vec::new();
        let opts = EncodeOptions::new(V12).with_content_length(true);
        encode(
            Command::Message,
            [("content-length", "99"), ("a", "b")],
            b"x\0y",
            opts,
            &mut out,
        )
        .unwrap();
        assert_eq!(out, b"MESSAGE\na:b\ncontent-length:3\n\nx\0y\0");
        out.clear();
        encode(
            Command::Receipt,
            [("content-length", "5")],
            b"",
            EncodeOptions::new(V12),
            &mut out,
        )
        .unwrap();
        assert_eq!(out, b"RECEIPT\n\n\0");
        out.clear();
        encode(Command::Send, [("a", "b")], b"", opts, &mut out).unwrap();
        assert_eq!(out, b"SEND\na:b\ncontent-length:0\n\n\0");
    }

    #[test]
    fn escaping_per_version_and_command() {
        let mut out = Vec::new();
        let h = [("a:b", "c\nd\\e")];
        encode(Command::Send, h, b"", EncodeOptions::new(V12), &mut out).unwrap();
        assert_eq!(out, b"SEND\na\\cb:c\\nd\\\\e\n\n\0");
        out.clear();
        encode(
            Command::Error,
            [("message", "x\r")],
            b"",
            EncodeOptions::new(V12),
            &mut out,
        )
        .unwrap();
        assert_eq!(out, b"ERROR\nmessage:x\\r\n\n\0");
        out.clear();
        // CONNECTED is never escaped, so a backslash goes out as is and a
        // newline cannot go out at all.
        let opts = EncodeOptions::new(V12);
        encode(
            Command::Connected,
            [("server", "a\\b:c")],
            b"",
            opts,
            &mut out,
        )
        .unwrap();
        assert_eq!(out, b"CONNECTED\nserver:a\\b:c\n\n\0");
        assert_eq!(
            encode(
                Command::Connected,
                [("server", "a\nb")],
                b"",
                opts,
                &mut out
            ),
            Err(EncodeError::UnencodableHeader)
        );
        out.clear();
        let v10 = EncodeOptions::new(Some(Version::V1_0));
        encode(Command::Message, [("k", "a:b\\n")], b"", v10, &mut out).unwrap();
        assert_eq!(out, b"MESSAGE\nk:a:b\\n\n\n\0");
    }

    #[test]
    fn errors_leave_the_buffer_untouched() {
        for opts in [EncodeOptions::new(V12), EncodeOptions::new(None)] {
            let mut out = b"previous".to_vec();
            type Case<'a> = (&'a [(&'a str, &'a str)], &'a [u8], EncodeError);
            let cases: [Case<'_>; 4] = [
                (&[("ok", "1"), ("", "v")], b"", EncodeError::EmptyHeaderName),
                (
                    &[("ok", "1"), ("a", "\0")],
                    b"",
                    EncodeError::UnencodableHeader,
                ),
                (
                    &[("ok", "1"), ("a", "\r")],
                    b"",
                    EncodeError::UnencodableHeader,
                ),
                (&[("ok", "1")], b"a\0b", EncodeError::NulInBody),
            ];
            for (headers, body, want) in cases {
                if opts.version == V12 && headers[1..] == [("a", "\r")] {
                    continue; // 1.2 escapes CR
                }
                let got = encode(Command::Send, headers.iter().copied(), body, opts, &mut out);
                assert_eq!(got, Err(want));
                assert_eq!(out, b"previous");
            }
            let mut bm = BytesMut::from(&b"previous"[..]);
            let tail = MessageTail::encode([("d", "x")], b"", opts).unwrap();
            assert_eq!(
                encode_message_head(&tail, "s", "\0", None, &mut bm),
                Err(EncodeError::UnencodableHeader)
            );
            assert_eq!(&bm[..], b"previous");
        }
    }

    #[test]
    fn decimal() {
        for n in [0, 7, 10, 99, 1234567890, usize::MAX] {
            let mut out = Vec::new();
            put_decimal(n, &mut out);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn fan_out_shares_the_tail() {
        let opts = EncodeOptions::new(V12).with_content_length(true);
        let tail = MessageTail::encode(
            [
                ("destination", "/topic/chat:room"),
                ("message-id", "from-the-client"),
                ("content-type", "text/plain"),
                ("subscription", "dropped"),
                ("content-length", "1"),
                ("x-custom", "a\nb"),
            ],
            b"hello\0world",
            opts,
        )
        .unwrap();
        assert_eq!(tail.version(), V12);
        assert_eq!(
            &tail.bytes()[..],
            b"destination:/topic/chat\\croom\ncontent-type:text/plain\nx-custom:a\\nb\ncontent-length:11\n\nhello\0world\0"
        );

        let mut heads = BytesMut::new();
        let mut frames = Vec::new();
        for (sub, id, ack) in [("0", "m-1", None), ("sub:1", "m-2", Some("ack-2"))] {
            encode_message_head(&tail, sub, id, ack, &mut heads).unwrap();
            let head = heads.split().freeze();
            let shared = tail.bytes().clone();
            assert_eq!(
                shared.as_ptr(),
                tail.bytes().as_ptr(),
                "tail is shared, not copied"
            );
            frames.push((head, shared, sub, id, ack));
        }
        for (head, shared, sub, id, ack) in &frames {
            let whole = [&head[..], &shared[..]].concat();
            let f = parsed(&whole, V12);
            assert_eq!(f.command, Command::Message);
            assert_eq!(f.header("subscription"), Some(*sub));
            assert_eq!(f.header("message-id"), Some(*id));
            assert_eq!(f.header("ack"), *ack);
            assert_eq!(f.header("destination"), Some("/topic/chat:room"));
            assert_eq!(f.header("x-custom"), Some("a\nb"));
            assert_eq!(f.header_all("message-id").count(), 1);
            assert_eq!(f.content_length(), Some(11));
            assert_eq!(f.body, b"hello\0world");
        }
        assert_eq!(
            &frames[0].0[..],
            b"MESSAGE\nsubscription:0\nmessage-id:m-1\n"
        );
        assert_eq!(
            &frames[1].0[..],
            b"MESSAGE\nsubscription:sub\\c1\nmessage-id:m-2\nack:ack-2\n"
        );
    }

    #[test]
    fn fan_out_for_stomp_1_0() {
        let opts = EncodeOptions::new(Some(Version::V1_0));
        let tail = MessageTail::encode([("destination", "/a:b")], b"x", opts).unwrap();
        let mut head = Vec::new();
        encode_message_head(&tail, "s:1", "7", None, &mut head).unwrap();
        assert_eq!(head, b"MESSAGE\nsubscription:s:1\nmessage-id:7\n");
        let whole = [&head[..], &tail.bytes()[..]].concat();
        let f = parsed(&whole, Some(Version::V1_0));
        assert_eq!(f.header("subscription"), Some("s:1"));
        assert_eq!(f.header("destination"), Some("/a:b"));
        assert_eq!(f.body, b"x");
        assert_eq!(
            MessageTail::encode([("a", "x\ny")], b"", opts),
            Err(EncodeError::UnencodableHeader)
        );
    }

    /// Random header text over the octets that matter to escaping.
    fn random_text(rng: &mut Rng, name: bool) -> String {
        const PARTS: [&str; 12] = [
            "a", "Z", "-", ":", "\\", "\n", "\r", "\\n", "\\c", "é", " ", "0",
        ];
        let mut s = String::new();
        for _ in 0..rng.below(6) + usize::from(name) {
            s.push_str(PARTS[rng.below(PARTS.len())]);
        }
        s
    }

    #[test]
    fn encode_then_parse_round_trips() {
        let mut rng = Rng::new(42);
        let mut encodable = 0;
        for _ in 0..20_000 {
            let command = Command::ALL[rng.below(Command::ALL.len())];
            let version = [None, Some(Version::V1_0), Some(Version::V1_1), V12][rng.below(4)];
            let headers: Vec<(String, String)> = (0..rng.below(4))
                .map(|_| (random_text(&mut rng, true), random_text(&mut rng, false)))
                .filter(|(n, _)| n != "content-length")
                .collect();
            let body: Vec<u8> = (0..rng.below(5))
                .map(|_| [b'a', 0, b'\n'][rng.below(3)])
                .collect();
            let opts = EncodeOptions::new(version).with_content_length(rng.below(2) == 0);
            let mut out = Vec::new();
            match encode(
                command,
                headers.iter().map(|(n, v)| (n, v)),
                &body,
                opts,
                &mut out,
            ) {
                Ok(()) => {
                    encodable += 1;
                    let f = parsed(&out, version);
                    assert_eq!(f.command, command);
                    let mut want: Vec<Header<'_>> = headers
                        .iter()
                        .map(|(n, v)| Header::new(n.as_str(), v.as_str()))
                        .collect();
                    if opts.content_length {
                        want.push(Header::new("content-length", body.len().to_string()));
                    }
                    assert_eq!(f.headers, want, "{:?}", out.escape_ascii().to_string());
                    assert_eq!(f.body, body);
                }
                Err(e) => {
                    assert!(out.is_empty());
                    // Whatever was refused really cannot be carried.
                    match e {
                        EncodeError::NulInBody => assert!(body.contains(&0)),
                        EncodeError::EmptyHeaderName => {
                            unreachable!("names are never empty here")
                        }
                        EncodeError::UnencodableHeader => {
                            let esc = Escaping::for_frame(command, version);
                            assert!(headers.iter().any(|(n, v)| {
                                check_encodable(n, esc, true).is_err()
                                    || check_encodable(v, esc, false).is_err()
                            }));
                        }
                    }
                }
            }
        }
        assert!(encodable > 5_000, "only {encodable} encodable cases");
    }

    /// A quick sanity run, not a benchmark: one message to many subscribers,
    /// every frame parsed back. Prints timings with `--nocapture`.
    #[test]
    fn quick_fan_out_sanity() {
        let subscribers = 10_000;
        let body = vec![b'x'; 4096];
        let opts = EncodeOptions::new(V12).with_content_length(true);
        let started = std::time::Instant::now();
        let tail = MessageTail::encode(
            [
                ("destination", "/topic/room"),
                ("content-type", "text/plain"),
            ],
            &body,
            opts,
        )
        .unwrap();
        let mut heads = BytesMut::with_capacity(64 * subscribers);
        let mut frames = Vec::with_capacity(subscribers);
        for i in 0..subscribers {
            let sub = i.to_string();
            encode_message_head(&tail, &sub, "m-1", Some(&sub), &mut heads).unwrap();
            frames.push((heads.split().freeze(), tail.bytes().clone()));
        }
        let encoded = started.elapsed();
        assert!(frames
            .iter()
            .all(|(_, t)| t.as_ptr() == tail.bytes().as_ptr()));

        let started = std::time::Instant::now();
        let mut wire = Vec::new();
        for (i, (head, shared)) in frames.iter().enumerate() {
            wire.clear();
            wire.extend_from_slice(head);
            wire.extend_from_slice(shared);
            let f = parsed(&wire, V12);
            assert_eq!(f.header("subscription"), Some(&*i.to_string()));
            assert_eq!(f.body.len(), body.len());
        }
        eprintln!(
            "{subscribers} x {} B MESSAGE: heads encoded in {encoded:?}, frames parsed in {:?}",
            body.len(),
            started.elapsed()
        );
    }
}
