//! Inputs for the micro-benchmarks: deterministic, realistic, and checked by the tests below.

use sockeye::frame::{FrameHeader, OpCode};
use sockeye::handshake::{
    parse_request, select_protocol, validate_upgrade, write_accept, HandshakeConfig,
    HandshakeError, Origins, MAX_HEADERS,
};
use sockeye::Status;
use sockeye_chat::stomp::{self, Command, EncodeOptions, Version};

/// A data frame header with a payload of `len` bytes, masked (as a client sends) or not.
pub fn frame_header(len: u64, masked: bool) -> FrameHeader {
    FrameHeader {
        fin: true,
        rsv: 0,
        opcode: OpCode::Binary,
        mask: masked.then_some([0x37, 0xfa, 0x21, 0x3d]),
        payload_len: len,
    }
}

/// `len` bytes of English-like ASCII text.
pub fn ascii_text(len: usize) -> String {
    const WORDS: &str = "The quick brown fox jumps over the lazy dog; sockeye salmon swim \
        upstream to spawn, 1,234 km from the sea. {\"type\":\"chat\",\"room\":\"lobby\"} ";
    fill(len, WORDS)
}

/// `len` bytes of text that is mostly 2-, 3- and 4-byte UTF-8 sequences (Greek, Cyrillic, CJK,
/// emoji) with some ASCII between them.
pub fn multibyte_text(len: usize) -> String {
    const MIXED: &str = "κόσμε Привет, мир! 日本語のテキストです。 🦀🐟🌊 Ελληνικά 中文 한국어 ";
    fill(len, MIXED)
}

/// Repeats `pattern` up to `len` bytes, cut at a character boundary and padded with spaces.
fn fill(len: usize, pattern: &str) -> String {
    let mut text = String::with_capacity(len);
    'outer: loop {
        for c in pattern.chars() {
            if text.len() + c.len_utf8() > len {
                break 'outer;
            }
            text.push(c);
        }
    }
    while text.len() < len {
        text.push(' ');
    }
    text
}

/// The opening handshake of a current desktop Chrome, with cookies and a STOMP sub-protocol
/// offer: what a browser chat client really sends (about 750 bytes).
pub const BROWSER_REQUEST: &[u8] = b"GET /ws?room=lobby&v=3 HTTP/1.1\r\n\
Host: chat.example.com\r\n\
Connection: Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Origin: https://chat.example.com\r\n\
Sec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-GB,en-US;q=0.9,en;q=0.8,de;q=0.7\r\n\
Cookie: session=eyJ1aWQiOjQyLCJleHAiOjE3MTkwMDAwMDB9.c2lnbmF0dXJlLWhlcmU; theme=dark; _ga=GA1.1.123456789.1718000000; consent=analytics%3Dno%26ads%3Dno\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
Sec-WebSocket-Protocol: v12.stomp, v11.stomp, v10.stomp\r\n\
\r\n";

/// A server configuration that checks the origin and speaks STOMP 1.2, as the chat server would.
pub fn handshake_config() -> HandshakeConfig {
    HandshakeConfig {
        allowed_origins: Origins::List(vec![
            "https://example.com".into(),
            "https://chat.example.com".into(),
        ]),
        protocols: vec!["v12.stomp".into()],
        ..HandshakeConfig::default()
    }
}

/// The server side of the opening handshake: parses `request`, judges it, picks the
/// sub-protocol and appends the 101 response to `out`. `Ok(Some(head_len))` when answered,
/// `Ok(None)` when the head is incomplete.
pub fn answer_handshake(
    request: &[u8],
    config: &HandshakeConfig,
    out: &mut Vec<u8>,
) -> Result<Option<usize>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let (req, head_len) = match parse_request(request, &mut headers, config)? {
        Status::Complete(req, n) => (req, n),
        Status::Partial => return Ok(None),
    };
    let upgrade = validate_upgrade(&req, config)?;
    let protocol = select_protocol(&config.protocols, req.protocols());
    write_accept(out, upgrade.key, protocol, &[]);
    Ok(Some(head_len))
}

/// The STOMP version the STOMP fixtures are encoded for.
pub const STOMP_VERSION: Option<Version> = Some(Version::V1_2);

/// The headers of a chat client's `SEND` frame (`content-length` is added by the encoder).
pub const STOMP_SEND_HEADERS: [(&str, &str); 4] = [
    ("destination", "/topic/room.lobby"),
    ("content-type", "application/json;charset=utf-8"),
    ("receipt", "r-1042"),
    ("x-client-msg-id", "7f3c2a9e-5b1d-4e8f-9a6c-2d4b8e1f0a37"),
];

/// A 100-byte JSON chat message body.
pub fn stomp_body() -> Vec<u8> {
    let mut body =
        br#"{"from":"alice","text":"Has anyone seen the sockeye run this year? Up at the falls"#
            .to_vec();
    body.resize(98, b'.');
    body.extend_from_slice(b"\"}");
    body
}

/// Options for the fixtures: STOMP 1.2 with `content-length`.
pub fn stomp_options() -> EncodeOptions {
    EncodeOptions::new(STOMP_VERSION).with_content_length(true)
}

/// The wire bytes of a `SEND` frame: 5 headers (with `content-length`) and a 100-byte body.
pub fn stomp_send_frame() -> Vec<u8> {
    let mut out = Vec::new();
    stomp::encode(
        Command::Send,
        STOMP_SEND_HEADERS,
        &stomp_body(),
        stomp_options(),
        &mut out,
    )
    .expect("the fixture encodes");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sockeye_chat::stomp::{encode_message_head, parse, Limits, MessageTail};

    #[test]
    fn texts_have_the_requested_length_and_kind() {
        for len in [0, 1, 7, 1000, 64 << 10] {
            let ascii = ascii_text(len);
            assert_eq!(ascii.len(), len);
            assert!(ascii.is_ascii());
            let mixed = multibyte_text(len);
            assert_eq!(mixed.len(), len);
        }
        let mixed = multibyte_text(64 << 10);
        let ascii_bytes = mixed.bytes().filter(u8::is_ascii).count();
        assert!(ascii_bytes * 4 < mixed.len(), "{ascii_bytes} ASCII bytes");
        assert!(mixed.chars().any(|c| c.len_utf8() == 4));
    }

    #[test]
    fn headers_encode_in_each_length_form() {
        for (len, masked, expected) in [
            (100, false, 2),
            (100, true, 6),
            (1000, false, 4),
            (1000, true, 8),
            (100_000, false, 10),
            (100_000, true, 14),
        ] {
            let h = frame_header(len, masked);
            let (bytes, n) = h.encode();
            assert_eq!(n, expected);
            assert_eq!(FrameHeader::parse(&bytes[..n]), Ok(Status::Complete(h, n)));
        }
    }

    #[test]
    fn browser_request_is_accepted_with_stomp() {
        let config = handshake_config();
        let mut out = Vec::new();
        assert_eq!(
            answer_handshake(BROWSER_REQUEST, &config, &mut out),
            Ok(Some(BROWSER_REQUEST.len()))
        );
        let response = String::from_utf8(out).unwrap();
        assert!(response.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        // RFC 6455 §1.3's sample key and its accept value.
        assert!(response.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(response.contains("Sec-WebSocket-Protocol: v12.stomp\r\n"));
        assert!(response.ends_with("\r\n\r\n"));
        let mut out = Vec::new();
        assert_eq!(
            answer_handshake(&BROWSER_REQUEST[..100], &config, &mut out),
            Ok(None)
        );
    }

    #[test]
    fn stomp_send_frame_parses_back() {
        let bytes = stomp_send_frame();
        let Ok(stomp::Status::Complete(frame, n)) = parse(&bytes, &Limits::DEFAULT, STOMP_VERSION)
        else {
            panic!("fixture does not parse");
        };
        assert_eq!(n, bytes.len());
        assert_eq!(frame.command, Command::Send);
        assert_eq!(frame.headers.len(), 5);
        assert_eq!(frame.body.len(), 100);
        assert_eq!(frame.body, stomp_body());
        assert_eq!(frame.header("content-length"), Some("100"));
        assert_eq!(frame.header("destination"), Some("/topic/room.lobby"));
    }

    #[test]
    fn message_head_and_tail_make_a_frame() {
        let tail = MessageTail::encode(
            [
                ("destination", "/topic/room.lobby"),
                ("content-type", "text/plain"),
            ],
            &stomp_body(),
            stomp_options(),
        )
        .unwrap();
        let mut bytes = Vec::new();
        encode_message_head(&tail, "sub-0", "m-1", None, &mut bytes).unwrap();
        bytes.extend_from_slice(tail.bytes());
        let Ok(stomp::Status::Complete(frame, _)) = parse(&bytes, &Limits::DEFAULT, STOMP_VERSION)
        else {
            panic!("head + tail does not parse");
        };
        assert_eq!(frame.command, Command::Message);
        assert_eq!(frame.header("subscription"), Some("sub-0"));
        assert_eq!(frame.body, stomp_body());
    }
}
