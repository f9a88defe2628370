//! The blocking client over real sockets: messages of every length class through a Sockeye echo
//! server, each handshake failure as its own error, and the client's side of the protocol
//! against tiny fake servers that send exactly the bytes a test needs.
//!
//! Every wait is bounded: socket timeouts on both ends (the blocking client's through
//! `ClientConfig::io_timeout`), and fake servers report through a channel read with a timeout
//! (see `common`). A wait that runs out fails naming what it waited for.

mod common;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use sockeye::client::{Client, ClientConfig, ClientError, OwnedEvent, UrlError};
use sockeye::handshake::client::ResponseError;
use sockeye::handshake::Request;
use sockeye::server::{Handler, Message, Rejection, Session, Upgrading};
use sockeye::{DataKind, ProtocolError};

// ---------------------------------------------------------------------------------------------
// Against a Sockeye echo server
// ---------------------------------------------------------------------------------------------

/// Echoes every message whole; refuses upgrades to `/forbidden` with 403.
struct Echo;

impl Handler for Echo {
    type Data = ();

    fn on_upgrade(&mut self, req: &Request<'_, '_>, _up: &mut Upgrading) -> Result<(), Rejection> {
        if req.path() == "/forbidden" {
            return Err(Rejection::new(403, "go away"));
        }
        Ok(())
    }

    fn on_message(&mut self, session: &mut Session<'_, ()>, message: Message<'_>) {
        let _ = match message {
            Message::Text(text) => session.send_text(text),
            Message::Binary(bytes) => session.send_binary(bytes),
        };
    }
}

fn echo_server() -> TestServer {
    TestServer::start(test_config(), || Echo)
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    Whole,
    /// In three fragments cut at uneven places (inside UTF-8 characters for text).
    Fragmented,
}

/// Three pieces covering `bytes`, the cuts at about a third and two thirds (plus one).
fn three_pieces(bytes: &[u8]) -> [&[u8]; 3] {
    let n = bytes.len();
    let a = n / 3;
    let b = (2 * n / 3 + 1).min(n);
    [&bytes[..a], &bytes[a..b], &bytes[b..]]
}

fn send(client: &mut Client, kind: DataKind, bytes: &[u8], mode: Mode) {
    match (mode, kind) {
        (Mode::Whole, DataKind::Text) => {
            let text = std::str::from_utf8(bytes).expect("text payload");
            client.send_text(text).expect("send text");
        }
        (Mode::Whole, DataKind::Binary) => client.send_binary(bytes).expect("send binary"),
        (Mode::Fragmented, _) => {
            let pieces = three_pieces(bytes);
            for (i, piece) in pieces.iter().enumerate() {
                client
                    .send_fragment(kind, piece, i == pieces.len() - 1)
                    .expect("send fragment");
            }
        }
    }
}

/// One message of `len` bytes through the echo server and back, byte-identical.
fn round_trip(kind: DataKind, mode: Mode, len: usize) {
    let server = echo_server();
    // A debug build reassembles and checks a whole multi-MiB message before the first byte of
    // its echo leaves; on a loaded machine that took more than the usual 5 s (16 MiB, text,
    // fragmented). Reads of big messages get longer; every wait is still bounded.
    let config = ClientConfig {
        io_timeout: Some(if len >= 1 << 20 {
            Duration::from_secs(60)
        } else {
            IO_TIMEOUT
        }),
        ..client_config()
    };
    let mut client = client_with(&server.url("/"), &config);
    let payload = match kind {
        DataKind::Text => text_of(len).into_bytes(),
        DataKind::Binary => pattern(len),
    };
    assert_eq!(payload.len(), len);
    send(&mut client, kind, &payload, mode);
    let what = format!("the echo of the {kind:?} {mode:?} {len}-byte message");
    // A debug build on a loaded machine has taken over 30 s for the 16 MiB round trip: the
    // server's keep-alive ping may come first.
    let got = match (kind, read_data(&mut client, &what)) {
        (DataKind::Text, OwnedEvent::Text(text)) => text.into_bytes(),
        (DataKind::Binary, OwnedEvent::Binary(bytes)) => bytes,
        (_, other) => panic!(
            "expected a {kind:?} echo, got {:?}",
            std::mem::discriminant(&other)
        ),
    };
    assert_eq!(got.len(), len, "{kind:?} {mode:?} {len}: length");
    assert!(got == payload, "{kind:?} {mode:?} {len}: content differs");
    // The connection is still in step: a small message after the big one, then a clean close.
    echo_text(&mut client, "next");
    close_client(&mut client);
    server.finish();
}

macro_rules! round_trips {
    ($($name:ident: $kind:ident $mode:ident $len:expr;)*) => {$(
        #[test]
        fn $name() {
            round_trip(DataKind::$kind, Mode::$mode, $len);
        }
    )*};
}

round_trips! {
    text_0_whole: Text Whole 0;
    text_0_fragmented: Text Fragmented 0;
    text_125_whole: Text Whole 125;
    text_125_fragmented: Text Fragmented 125;
    text_126_whole: Text Whole 126;
    text_126_fragmented: Text Fragmented 126;
    text_65535_whole: Text Whole 65_535;
    text_65535_fragmented: Text Fragmented 65_535;
    text_65536_whole: Text Whole 65_536;
    text_65536_fragmented: Text Fragmented 65_536;
    text_16mib_whole: Text Whole 16 << 20;
    text_16mib_fragmented: Text Fragmented 16 << 20;
    binary_0_whole: Binary Whole 0;
    binary_0_fragmented: Binary Fragmented 0;
    binary_125_whole: Binary Whole 125;
    binary_125_fragmented: Binary Fragmented 125;
    binary_126_whole: Binary Whole 126;
    binary_126_fragmented: Binary Fragmented 126;
    binary_65535_whole: Binary Whole 65_535;
    binary_65535_fragmented: Binary Fragmented 65_535;
    binary_65536_whole: Binary Whole 65_536;
    binary_65536_fragmented: Binary Fragmented 65_536;
    binary_16mib_whole: Binary Whole 16 << 20;
    binary_16mib_fragmented: Binary Fragmented 16 << 20;
}

#[test]
fn many_messages_of_mixed_sizes_on_one_connection() {
    let server = echo_server();
    let mut client = client(&server.url("/"));
    let sizes = [0, 1, 125, 126, 127, 65_535, 65_536, 65_537, 300_000];
    for (i, &len) in sizes.iter().cycle().take(30).enumerate() {
        let kind = if i % 2 == 0 {
            DataKind::Binary
        } else {
            DataKind::Text
        };
        let mode = if i % 3 == 0 {
            Mode::Fragmented
        } else {
            Mode::Whole
        };
        let payload = match kind {
            DataKind::Text => text_of(len).into_bytes(),
            DataKind::Binary => pattern(len),
        };
        send(&mut client, kind, &payload, mode);
        let got = match read_event(&mut client, &format!("the echo of message {i}")) {
            OwnedEvent::Text(t) => t.into_bytes(),
            OwnedEvent::Binary(b) => b,
            other => panic!("unexpected {other:?}"),
        };
        assert!(
            got == payload,
            "message {i} ({kind:?} {mode:?} {len} B) differs"
        );
    }
    close_client(&mut client);
    server.finish();
}

#[test]
fn ping_is_answered_by_the_server() {
    let server = echo_server();
    let mut client = client(&server.url("/"));
    client.ping(b"hello?").unwrap();
    assert_eq!(
        read_event(&mut client, "the pong to our ping"),
        OwnedEvent::Pong(b"hello?".to_vec())
    );
    close_client(&mut client);
    assert!(client.is_closed());
    server.finish();
}

#[test]
fn sending_after_close_is_refused() {
    let server = echo_server();
    let mut client = client(&server.url("/"));
    client.close(1000, "").unwrap();
    assert!(matches!(
        client.send_text("late"),
        Err(ClientError::Send(sockeye::SendError::Closed))
    ));
    match read_event(&mut client, "the echo of our close") {
        OwnedEvent::Close(Some((1000, _))) => {}
        other => panic!("expected the close echoed with 1000, got {other:?}"),
    }
    expect_dropped(&mut client, "after the close handshake");
    server.finish();
}

// ---------------------------------------------------------------------------------------------
// Handshake failures: each its own error
// ---------------------------------------------------------------------------------------------

/// Connects to a fake server that answers `response(key)` to the request and then waits for the
/// client to hang up; returns the client's error.
fn against(
    response: impl FnOnce(&str) -> String + Send + 'static,
    config: &ClientConfig,
) -> ClientError {
    let (addr, fake) = fake_server(move |mut stream: TcpStream, key| {
        stream
            .write_all(response(&key).as_bytes())
            .expect("fake server: answer");
        drain_until_eof(&mut stream);
    });
    let result = Client::connect_with(&format!("ws://{addr}/"), config);
    let error = match result {
        Ok(client) => panic!("expected the handshake to fail, got {client:?}"),
        Err(e) => e,
    };
    fake.join();
    error
}

/// Bounded handshake, bounded reads and writes (see `common::client_config`).
fn default_config() -> ClientConfig {
    client_config()
}

#[test]
fn rejection_status_is_reported_with_its_code() {
    let server = echo_server();
    match Client::connect_with(&server.url("/forbidden"), &default_config()) {
        Err(ClientError::Handshake(ResponseError::Status(403))) => {}
        other => panic!("expected Status(403), got {other:?}"),
    }
    server.finish();
    for status in [200, 404, 500] {
        let error = against(
            move |_| format!("HTTP/1.1 {status} Whatever\r\nContent-Length: 0\r\n\r\n"),
            &default_config(),
        );
        assert!(
            matches!(error, ClientError::Handshake(ResponseError::Status(s)) if s == status),
            "{status}: {error:?}"
        );
    }
}

#[test]
fn wrong_accept_key_is_bad_accept() {
    // The RFC example's accept value is (with overwhelming probability) not our key's.
    let error = against(
        |_| {
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {RFC_ACCEPT}\r\n\r\n"
            )
        },
        &default_config(),
    );
    assert!(
        matches!(error, ClientError::Handshake(ResponseError::BadAccept)),
        "{error:?}"
    );
}

#[test]
fn missing_accept_key_is_bad_accept() {
    let error = against(
        |_| {
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                .into()
        },
        &default_config(),
    );
    assert!(
        matches!(error, ClientError::Handshake(ResponseError::BadAccept)),
        "{error:?}"
    );
}

#[test]
fn unoffered_subprotocol_is_refused() {
    let offered = ClientConfig {
        protocols: vec!["v10.stomp".into(), "v11.stomp".into()],
        ..default_config()
    };
    let error = against(
        |key| switching_protocols(key, &["Sec-WebSocket-Protocol: v12.stomp"]),
        &offered,
    );
    match error {
        ClientError::Handshake(ResponseError::UnofferedProtocol(p)) => assert_eq!(p, "v12.stomp"),
        other => panic!("expected UnofferedProtocol, got {other:?}"),
    }
    // Nothing offered, something chosen.
    let error = against(
        |key| switching_protocols(key, &["Sec-WebSocket-Protocol: chat"]),
        &default_config(),
    );
    assert!(
        matches!(error, ClientError::Handshake(ResponseError::UnofferedProtocol(ref p)) if p == "chat"),
        "{error:?}"
    );
}

#[test]
fn offered_subprotocol_chosen_by_a_fake_server_is_accepted() {
    let (addr, fake) = fake_server(|mut stream: TcpStream, key| {
        stream
            .write_all(switching_protocols(&key, &["Sec-WebSocket-Protocol: v11.stomp"]).as_bytes())
            .unwrap();
        drain_until_eof(&mut stream);
    });
    let config = ClientConfig {
        protocols: vec!["v10.stomp".into(), "v11.stomp".into()],
        ..default_config()
    };
    let client = client_with(&format!("ws://{addr}/"), &config);
    assert_eq!(client.protocol(), Some("v11.stomp"));
    drop(client);
    fake.join();
}

#[test]
fn unrequested_extension_is_refused() {
    let error = against(
        |key| switching_protocols(key, &["Sec-WebSocket-Extensions: permessage-deflate"]),
        &default_config(),
    );
    match error {
        ClientError::Handshake(ResponseError::UnrequestedExtension(e)) => {
            assert_eq!(e, "permessage-deflate")
        }
        other => panic!("expected UnrequestedExtension, got {other:?}"),
    }
}

#[test]
fn missing_upgrade_headers_are_refused() {
    let error = against(
        |key| {
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\n\r\n",
                accept_for(key)
            )
        },
        &default_config(),
    );
    assert!(
        matches!(error, ClientError::Handshake(ResponseError::MissingUpgrade)),
        "{error:?}"
    );
    let error = against(
        |key| {
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Sec-WebSocket-Accept: {}\r\n\r\n",
                accept_for(key)
            )
        },
        &default_config(),
    );
    assert!(
        matches!(
            error,
            ClientError::Handshake(ResponseError::MissingConnectionUpgrade)
        ),
        "{error:?}"
    );
}

#[test]
fn malformed_and_oversized_responses_are_refused() {
    let error = against(|_| "SSH-2.0-OpenSSH_9.6\r\n\r\n".into(), &default_config());
    assert!(
        matches!(error, ClientError::Handshake(ResponseError::Malformed(_))),
        "{error:?}"
    );
    let small = ClientConfig {
        max_head_size: 1024,
        ..default_config()
    };
    let error = against(
        |key| switching_protocols(key, &[&format!("X-Padding: {}", "p".repeat(2000))]),
        &small,
    );
    assert!(
        matches!(error, ClientError::Handshake(ResponseError::HeadTooLarge)),
        "{error:?}"
    );
}

#[test]
fn server_hanging_up_before_answering_is_dropped() {
    let (addr, fake) = fake_server(|stream: TcpStream, _key| drop(stream));
    let result = Client::connect_with(&format!("ws://{addr}/"), &default_config());
    assert!(matches!(result, Err(ClientError::Dropped)), "{result:?}");
    fake.join();
}

#[test]
fn silent_server_is_a_timeout() {
    // The kernel completes the TCP handshake from the listen queue; nobody ever answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ClientConfig {
        handshake_timeout: Duration::from_millis(300),
        ..ClientConfig::default()
    };
    let started = Instant::now();
    let result = Client::connect_with(&format!("ws://{addr}/"), &config);
    let took = started.elapsed();
    assert!(matches!(result, Err(ClientError::Timeout)), "{result:?}");
    assert!(
        took >= Duration::from_millis(250),
        "gave up too early: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "gave up too late: {took:?}");
    drop(listener);
}

#[test]
fn closed_port_is_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let result = Client::connect_with(&format!("ws://{addr}/"), &default_config());
    assert!(matches!(result, Err(ClientError::Refused(_))), "{result:?}");
}

#[test]
fn bad_urls_are_url_errors() {
    let cases = [
        ("http://127.0.0.1:1/", UrlError::Scheme("http".into())),
        // With feature `tls` a wss:// URL is spoken (tests/tls.rs).
        #[cfg(not(feature = "tls"))]
        ("wss://127.0.0.1:1/", UrlError::Scheme("wss".into())),
        ("127.0.0.1:1", UrlError::Scheme("127.0.0.1:1".into())),
        ("ws:///path", UrlError::MissingHost),
        ("ws://127.0.0.1:99999/", UrlError::BadPort("99999".into())),
        ("ws://127.0.0.1:port/", UrlError::BadPort("port".into())),
    ];
    for (url, expected) in cases {
        match Client::connect(url) {
            Err(ClientError::Url(e)) => assert_eq!(e, expected, "{url}"),
            other => panic!("{url}: expected a URL error, got {other:?}"),
        }
    }
}

#[test]
fn request_carries_target_host_origin_protocols_and_headers() {
    let (addr, fake) = fake_server(|mut stream: TcpStream, key| {
        stream
            .write_all(switching_protocols(&key, &[]).as_bytes())
            .unwrap();
        drain_until_eof(&mut stream);
        key
    });
    // The fake server only hands over the key; check the rest through a Sockeye server's hook
    // below. Here: the key is 16 random bytes in base64.
    let client = client(&format!("ws://{addr}/"));
    drop(client);
    let key = fake.join();
    assert_eq!(key.len(), 24, "{key}");
    assert!(key.ends_with("=="), "{key}");

    struct Inspect(std::sync::mpsc::Sender<String>);
    impl Handler for Inspect {
        type Data = ();
        fn on_upgrade(
            &mut self,
            req: &Request<'_, '_>,
            _up: &mut Upgrading,
        ) -> Result<(), Rejection> {
            let _ = self.0.send(format!(
                "{} {} host={} origin={} protocols={} x={}",
                req.method,
                req.target,
                req.header_str("host").unwrap_or("-"),
                req.header_str("origin").unwrap_or("-"),
                req.protocols().collect::<Vec<_>>().join("|"),
                req.header_str("x-test").unwrap_or("-"),
            ));
            Ok(())
        }
        fn on_message(&mut self, _s: &mut Session<'_, ()>, _m: Message<'_>) {}
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let server = TestServer::start(test_config(), move || Inspect(tx.clone()));
    let config = ClientConfig {
        origin: Some("https://app.example".into()),
        protocols: vec!["a".into(), "b".into()],
        headers: vec![("X-Test".into(), "yes".into())],
        ..default_config()
    };
    let mut client = client_with(&server.url("/path?q=1#frag"), &config);
    assert_eq!(
        recv(&rx, "the upgrade request as on_upgrade saw it"),
        format!(
            "GET /path?q=1 host={} origin=https://app.example protocols=a|b x=yes",
            server.addr()
        )
    );
    close_client(&mut client);
    server.finish();
}

// ---------------------------------------------------------------------------------------------
// The client's side of the protocol, against fake servers
// ---------------------------------------------------------------------------------------------

/// A fake server that completes the handshake, then runs `then` on the open stream.
fn fake_session<T: Send + 'static>(
    then: impl FnOnce(&mut TcpStream) -> T + Send + 'static,
) -> (Client, Fake<T>) {
    let (addr, fake) = fake_server(move |mut stream: TcpStream, key| {
        stream
            .write_all(switching_protocols(&key, &[]).as_bytes())
            .expect("fake server: 101");
        then(&mut stream)
    });
    (client(&format!("ws://{addr}/")), fake)
}

/// A server frame (unmasked).
fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    encode_frame(true, 0, opcode, payload, None)
}

#[test]
fn masked_server_frame_is_a_protocol_error_answered_with_1002() {
    let (mut client, fake) = fake_session(|stream| {
        stream
            .write_all(&encode_frame(true, 0, TEXT, b"masked!", Some(MASK)))
            .unwrap();
        let close = read_frame(stream);
        drain_until_eof(stream);
        close
    });
    match client.read() {
        Err(ClientError::Protocol(ProtocolError::MaskedFrame)) => {}
        other => panic!("expected MaskedFrame for the server's masked frame, got {other:?}"),
    }
    drop(client);
    let close = fake.join();
    assert_eq!(close.opcode, CLOSE);
    assert!(close.masked, "client frames are masked");
    assert_eq!(close.close_code(), Some(1002));
}

#[test]
fn invalid_utf8_from_the_server_is_answered_with_1007() {
    let (mut client, fake) = fake_session(|stream| {
        stream.write_all(&server_frame(TEXT, b"\xc0\xaf")).unwrap();
        let close = read_frame(stream);
        drain_until_eof(stream);
        close
    });
    match client.read() {
        Err(ClientError::Protocol(ProtocolError::InvalidUtf8)) => {}
        other => panic!("expected InvalidUtf8 for the server's bad text, got {other:?}"),
    }
    drop(client);
    let close = fake.join();
    assert!(close.masked);
    assert_eq!(close.close_code(), Some(1007));
}

#[test]
fn reserved_bits_from_the_server_are_answered_with_1002() {
    let (mut client, fake) = fake_session(|stream| {
        stream
            .write_all(&encode_frame(true, 4, BINARY, b"deflated?", None))
            .unwrap();
        let close = read_frame(stream);
        drain_until_eof(stream);
        close
    });
    match client.read() {
        Err(ClientError::Protocol(ProtocolError::ReservedBits(4))) => {}
        other => panic!("expected ReservedBits(4) for the server's RSV1 frame, got {other:?}"),
    }
    drop(client);
    assert_eq!(fake.join().close_code(), Some(1002));
}

#[test]
fn ping_from_the_server_is_answered_with_a_masked_pong() {
    let (mut client, fake) = fake_session(|stream| {
        stream
            .write_all(&server_frame(PING, b"still there?"))
            .unwrap();
        let pong = read_frame(stream);
        stream.write_all(&server_frame(PING, b"")).unwrap();
        let empty = read_frame(stream);
        drain_until_eof(stream);
        (pong, empty)
    });
    assert_eq!(
        read_event(&mut client, "the server's first ping"),
        OwnedEvent::Ping(b"still there?".to_vec())
    );
    assert_eq!(
        read_event(&mut client, "the server's empty ping"),
        OwnedEvent::Ping(Vec::new())
    );
    drop(client);
    let (pong, empty) = fake.join();
    assert_eq!(
        (pong.opcode, pong.masked, pong.fin, pong.payload.as_slice()),
        (PONG, true, true, &b"still there?"[..])
    );
    assert_eq!(
        (empty.opcode, empty.masked, empty.payload.len()),
        (PONG, true, 0)
    );
}

#[test]
fn close_from_the_server_is_echoed_and_the_client_waits_for_tcp_close() {
    let (mut client, fake) = fake_session(|stream| {
        let mut payload = 1001u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"restarting");
        stream.write_all(&server_frame(CLOSE, &payload)).unwrap();
        let echo = read_frame(stream);
        // The server closes TCP first (RFC 6455 §7.1.1).
        echo
    });
    assert_eq!(
        read_event(&mut client, "the server's close"),
        OwnedEvent::Close(Some((1001, "restarting".into())))
    );
    assert!(client.is_closed());
    let echo = fake.join();
    assert!(echo.masked);
    assert_eq!(echo.close_code(), Some(1001));
    expect_dropped(&mut client, "after the client echoed the server's close");
}

#[test]
fn frames_in_the_same_segment_as_the_101_are_delivered() {
    let (addr, fake) = fake_server(|mut stream: TcpStream, key| {
        let mut bytes = switching_protocols(&key, &[]).into_bytes();
        bytes.extend(server_frame(TEXT, b"welcome"));
        bytes.extend(encode_frame(false, 0, BINARY, b"\x01\x02", None));
        bytes.extend(encode_frame(true, 0, CONT, b"\x03", None));
        stream.write_all(&bytes).unwrap();
        drain_until_eof(&mut stream);
    });
    let mut client = client(&format!("ws://{addr}/"));
    assert_eq!(
        read_event(&mut client, "the text frame sent with the 101"),
        OwnedEvent::Text("welcome".into())
    );
    assert_eq!(
        read_event(
            &mut client,
            "the fragmented binary message sent with the 101"
        ),
        OwnedEvent::Binary(vec![1, 2, 3])
    );
    drop(client);
    fake.join();
}

#[test]
fn every_client_frame_is_masked() {
    let (mut client, fake) = fake_session(|stream| {
        let frames: Vec<WireFrame> = (0..4).map(|_| read_frame(stream)).collect();
        drain_until_eof(stream);
        frames
    });
    client.send_text("text").unwrap();
    client.send_binary(&[1, 2, 3]).unwrap();
    client.ping(b"p").unwrap();
    client.close(1000, "bye").unwrap();
    drop(client);
    let frames = fake.join();
    assert!(frames.iter().all(|f| f.masked), "{frames:?}");
    let kinds: Vec<u8> = frames.iter().map(|f| f.opcode).collect();
    assert_eq!(kinds, [TEXT, BINARY, PING, CLOSE]);
    assert_eq!(frames[0].payload, b"text");
    assert_eq!(frames[3].payload, b"\x03\xe8bye");
}
