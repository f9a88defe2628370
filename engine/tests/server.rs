//! The server over real sockets: one test per rule, each asserting the exact HTTP status or
//! close code on the wire, and that bad input never harms the server or other connections.
//!
//! Servers listen on `127.0.0.1:0` with one worker (so "other connections" share the event loop
//! of the misbehaving one). Raw `TcpStream`s are used where the bytes matter, the blocking
//! `Client` where only messages do. Every wait is bounded (see `common`: socket timeouts, the
//! client's `io_timeout`, `recv_timeout` on handler reports) and fails naming what it waited
//! for, and every test ends with a graceful shutdown that must report clean workers: a panic in
//! the loop fails the test.

mod common;

use std::io::Write;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use sockeye::client::{ClientConfig, ClientError, OwnedEvent};
use sockeye::handshake::client::ResponseError;
use sockeye::handshake::{Origins, Request};
use sockeye::server::{
    Handler, HttpResponse, Message, Rejection, ServerConfig, Session, SessionError, Upgrading,
};
use sockeye::SendError;

// ---------------------------------------------------------------------------------------------
// A probe handler: echoes, and reports every callback
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
enum Note {
    Upgrade,
    Open {
        protocol: Option<String>,
    },
    Error(String),
    Close {
        code: u16,
        reason: String,
    },
    Http,
    Pong(Vec<u8>),
    /// What a send after `Session::close` returned.
    SendAfterClose(Result<(), SendError>),
}

struct Probe {
    notes: mpsc::Sender<Note>,
}

impl Handler for Probe {
    type Data = ();

    fn on_upgrade(&mut self, _req: &Request<'_, '_>, _up: &mut Upgrading) -> Result<(), Rejection> {
        let _ = self.notes.send(Note::Upgrade);
        Ok(())
    }

    fn on_http(&mut self, _req: &Request<'_, '_>, _body: &[u8]) -> HttpResponse {
        let _ = self.notes.send(Note::Http);
        HttpResponse::not_found()
    }

    fn on_open(&mut self, session: &mut Session<'_, ()>) {
        let protocol = session.protocol().map(String::from);
        let _ = self.notes.send(Note::Open { protocol });
    }

    fn on_message(&mut self, session: &mut Session<'_, ()>, message: Message<'_>) {
        let _ = match message {
            Message::Text("close me") => {
                let closed = session.close(4000, "as requested");
                assert_eq!(closed, Ok(()));
                assert!(session.is_closing());
                let after = session.send_text("too late");
                let _ = self.notes.send(Note::SendAfterClose(after));
                Ok(())
            }
            Message::Text("ping me") => session.ping(b"from the server"),
            Message::Text(text) => session.send_text(text),
            Message::Binary(bytes) => session.send_binary(bytes),
        };
    }

    fn on_pong(&mut self, _session: &mut Session<'_, ()>, payload: &[u8]) {
        let _ = self.notes.send(Note::Pong(payload.to_vec()));
    }

    fn on_error(&mut self, _session: &mut Session<'_, ()>, error: &SessionError) {
        let _ = self.notes.send(Note::Error(format!("{error:?}")));
    }

    fn on_close(&mut self, _session: &mut Session<'_, ()>, code: u16, reason: &str) {
        let _ = self.notes.send(Note::Close {
            code,
            reason: reason.into(),
        });
    }
}

fn probe(config: ServerConfig) -> (TestServer, mpsc::Receiver<Note>) {
    let (tx, rx) = mpsc::channel();
    let server = TestServer::start(config, move || Probe { notes: tx.clone() });
    (server, rx)
}

/// The code `on_close` reported next.
fn closed_with(notes: &mpsc::Receiver<Note>) -> (u16, String) {
    recv_matching(notes, "an on_close report", |n| match n {
        Note::Close { code, reason } => Some((*code, reason.clone())),
        _ => None,
    })
}

/// After `finish`: no session was closed twice.
fn assert_no_more_closes(notes: &mpsc::Receiver<Note>) {
    for note in notes.try_iter() {
        assert!(
            !matches!(note, Note::Close { .. }),
            "on_close called again: {note:?}"
        );
    }
}

fn assert_no_callbacks(notes: &mpsc::Receiver<Note>) {
    if let Ok(note) = notes.try_recv() {
        panic!("no handler callback expected, got {note:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Opening handshake
// ---------------------------------------------------------------------------------------------

/// A request from a start line and header lines.
fn request(start: &str, headers: &[&str]) -> String {
    let mut req = format!("{start}\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req
}

const HOST: &str = "Host: 127.0.0.1";
const UPGRADE: &str = "Upgrade: websocket";
const CONNECTION: &str = "Connection: Upgrade";
const VERSION: &str = "Sec-WebSocket-Version: 13";
const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==";

/// Sends `req` to a fresh probe server and returns the response, which must end the connection
/// and must not have reached the handler.
fn refused(config: ServerConfig, req: &[u8]) -> Response {
    let (server, notes) = probe(config);
    let response = http_exchange(server.addr(), req);
    assert_eq!(response.header("connection"), Some("close"), "{response:?}");
    assert_no_callbacks(&notes);
    server.finish();
    response
}

#[test]
fn valid_upgrade_gets_101_with_the_rfc_accept_key() {
    let (server, notes) = probe(test_config());
    let mut stream = connect(server.addr());
    stream
        .write_all(
            request(
                "GET /chat HTTP/1.1",
                &[HOST, UPGRADE, CONNECTION, KEY, VERSION],
            )
            .as_bytes(),
        )
        .unwrap();
    let response = read_head(&mut stream);
    assert_eq!(response.status, 101);
    assert_eq!(
        response.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert!(response
        .header("upgrade")
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket")));
    assert!(response
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("upgrade")));
    assert_eq!(response.header("sec-websocket-protocol"), None);
    assert_eq!(response.header("sec-websocket-extensions"), None);
    // It is a working WebSocket: a masked text comes back unmasked.
    stream.write_all(&client_frame(TEXT, b"hello")).unwrap();
    let frame = read_frame(&mut stream);
    assert_eq!(
        frame,
        WireFrame {
            fin: true,
            rsv: 0,
            opcode: TEXT,
            masked: false,
            payload: b"hello".to_vec()
        }
    );
    assert!(matches!(
        recv(&notes, "the on_upgrade report"),
        Note::Upgrade
    ));
    assert!(matches!(
        recv(&notes, "the on_open report"),
        Note::Open { protocol: None }
    ));
    drop(stream);
    server.finish();
}

#[test]
fn wrong_version_gets_426_naming_version_13() {
    for version in ["Sec-WebSocket-Version: 8", "Sec-WebSocket-Version: 14"] {
        let req = request("GET / HTTP/1.1", &[HOST, UPGRADE, CONNECTION, KEY, version]);
        let response = refused(test_config(), req.as_bytes());
        assert_eq!(response.status, 426, "{version}");
        assert_eq!(response.header("sec-websocket-version"), Some("13"));
    }
}

#[test]
fn missing_version_gets_426() {
    let req = request("GET / HTTP/1.1", &[HOST, UPGRADE, CONNECTION, KEY]);
    let response = refused(test_config(), req.as_bytes());
    assert_eq!(response.status, 426);
    assert_eq!(response.header("sec-websocket-version"), Some("13"));
}

#[test]
fn bad_key_gets_400() {
    for key in [
        "Sec-WebSocket-Key: not base64!",
        // 15 bytes, base64-encoded
        "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA",
        // 17 bytes
        "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAA=",
        "Sec-WebSocket-Key: ",
    ] {
        let req = request("GET / HTTP/1.1", &[HOST, UPGRADE, CONNECTION, key, VERSION]);
        let response = refused(test_config(), req.as_bytes());
        assert_eq!(response.status, 400, "{key}");
    }
}

#[test]
fn two_keys_get_400() {
    let other = "Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==";
    let req = request(
        "GET / HTTP/1.1",
        &[HOST, UPGRADE, CONNECTION, KEY, other, VERSION],
    );
    assert_eq!(refused(test_config(), req.as_bytes()).status, 400);
}

#[test]
fn missing_key_gets_400() {
    let req = request("GET / HTTP/1.1", &[HOST, UPGRADE, CONNECTION, VERSION]);
    assert_eq!(refused(test_config(), req.as_bytes()).status, 400);
}

#[test]
fn missing_host_gets_400() {
    let req = request("GET / HTTP/1.1", &[UPGRADE, CONNECTION, KEY, VERSION]);
    assert_eq!(refused(test_config(), req.as_bytes()).status, 400);
    let req = request(
        "GET / HTTP/1.1",
        &["Host:", UPGRADE, CONNECTION, KEY, VERSION],
    );
    assert_eq!(refused(test_config(), req.as_bytes()).status, 400);
}

#[test]
fn post_upgrade_gets_400() {
    let req = request(
        "POST / HTTP/1.1",
        &[HOST, UPGRADE, CONNECTION, KEY, VERSION],
    );
    assert_eq!(refused(test_config(), req.as_bytes()).status, 400);
}

#[test]
fn http_1_0_upgrade_gets_400() {
    let req = request("GET / HTTP/1.0", &[HOST, UPGRADE, CONNECTION, KEY, VERSION]);
    assert_eq!(refused(test_config(), req.as_bytes()).status, 400);
}

#[test]
fn missing_connection_upgrade_gets_400() {
    let req = request(
        "GET / HTTP/1.1",
        &[HOST, UPGRADE, "Connection: keep-alive", KEY, VERSION],
    );
    assert_eq!(refused(test_config(), req.as_bytes()).status, 400);
}

fn origin_config() -> ServerConfig {
    let mut config = test_config();
    config.handshake.allowed_origins = Origins::List(vec!["https://chat.example.com".into()]);
    config
}

#[test]
fn disallowed_origin_gets_403() {
    let req = request(
        "GET / HTTP/1.1",
        &[
            HOST,
            UPGRADE,
            CONNECTION,
            KEY,
            VERSION,
            "Origin: https://evil.example.com",
        ],
    );
    assert_eq!(refused(origin_config(), req.as_bytes()).status, 403);
}

#[test]
fn allowed_origin_and_no_origin_are_accepted() {
    let (server, _notes) = probe(origin_config());
    for origin in [
        Some("Origin: https://chat.example.com"),
        Some("Origin: HTTPS://Chat.Example.COM"),
        None,
    ] {
        let mut stream = connect(server.addr());
        let extra: Vec<&str> = origin.into_iter().collect();
        stream
            .write_all(upgrade_request("/", &extra).as_bytes())
            .unwrap();
        assert_eq!(read_head(&mut stream).status, 101, "{origin:?}");
    }
    server.finish();
}

#[test]
fn head_over_max_head_size_gets_431() {
    let mut config = test_config();
    config.handshake.max_head_size = 1024;
    let cookie = format!("Cookie: {}", "c".repeat(2000));
    // Complete but too large.
    let req = request(
        "GET / HTTP/1.1",
        &[HOST, UPGRADE, CONNECTION, KEY, VERSION, &cookie],
    );
    assert_eq!(refused(config.clone(), req.as_bytes()).status, 431);
    // Still going, with no end in sight.
    let partial = format!("GET / HTTP/1.1\r\n{HOST}\r\n{cookie}");
    assert_eq!(refused(config, partial.as_bytes()).status, 431);
}

#[test]
fn head_over_default_max_head_size_gets_431() {
    let cookie = format!("Cookie: {}", "c".repeat(9 << 10));
    let req = request(
        "GET / HTTP/1.1",
        &[HOST, UPGRADE, CONNECTION, KEY, VERSION, &cookie],
    );
    assert_eq!(refused(test_config(), req.as_bytes()).status, 431);
}

#[test]
fn too_many_headers_gets_431() {
    let lines: Vec<String> = (0..60).map(|i| format!("X-Filler-{i}: {i}")).collect();
    let mut headers = vec![HOST, UPGRADE, CONNECTION, KEY, VERSION];
    headers.extend(lines.iter().map(String::as_str));
    let req = request("GET / HTTP/1.1", &headers);
    assert_eq!(refused(test_config(), req.as_bytes()).status, 431);
}

#[test]
fn garbage_bytes_get_400() {
    // The start of a TLS ClientHello: what a `wss://` client sends to a plain port.
    let tls = [
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0x8a, 0x17,
    ];
    assert_eq!(refused(test_config(), &tls).status, 400);
    let mut junk = pattern(300);
    junk.extend_from_slice(b"\r\n\r\n");
    assert_eq!(refused(test_config(), &junk).status, 400);
    let bad_line = b"GET / HTTP/1.1\r\nHost 127.0.0.1\r\n\r\n";
    assert_eq!(refused(test_config(), bad_line).status, 400);
}

#[test]
fn request_in_one_byte_writes_is_parsed_incrementally() {
    let (server, _notes) = probe(test_config());
    let mut stream = connect(server.addr());
    for byte in upgrade_request("/", &[]).bytes() {
        stream.write_all(&[byte]).unwrap();
    }
    let response = read_head(&mut stream);
    assert_eq!(response.status, 101);
    assert_eq!(response.header("sec-websocket-accept"), Some(RFC_ACCEPT));
    // And a frame in one-byte writes too.
    for byte in client_frame(TEXT, b"one byte at a time") {
        stream.write_all(&[byte]).unwrap();
    }
    assert_eq!(read_frame(&mut stream).payload, b"one byte at a time");
    drop(stream);
    server.finish();
}

#[test]
fn frames_sent_with_the_request_are_not_lost() {
    let (server, _notes) = probe(test_config());
    let mut stream = connect(server.addr());
    let mut bytes = upgrade_request("/", &[]).into_bytes();
    bytes.extend(client_frame(TEXT, b"early"));
    bytes.extend(client_frame(BINARY, &[1, 2, 3]));
    stream.write_all(&bytes).unwrap();
    assert_eq!(read_head(&mut stream).status, 101);
    assert_eq!(read_frame(&mut stream).payload, b"early");
    assert_eq!(read_frame(&mut stream).payload, [1, 2, 3]);
    drop(stream);
    // A whole session in one write: request, message, close.
    let mut stream = connect(server.addr());
    let mut bytes = upgrade_request("/", &[]).into_bytes();
    bytes.extend(client_frame(TEXT, b"hello and goodbye"));
    bytes.extend(client_close(1000, ""));
    stream.write_all(&bytes).unwrap();
    assert_eq!(read_head(&mut stream).status, 101);
    assert_eq!(read_frame(&mut stream).payload, b"hello and goodbye");
    assert_eq!(read_frame(&mut stream).close_code(), Some(1000));
    assert!(expect_eof(&mut stream).is_empty());
    server.finish();
}

#[test]
fn browser_style_headers_are_accepted() {
    // Firefox: "Connection: keep-alive, Upgrade"; others vary the case.
    let (server, _notes) = probe(test_config());
    let req = request(
        "GET /socket HTTP/1.1",
        &[
            "host: 127.0.0.1:80",
            "upgrade: WebSocket",
            "connection: keep-alive, Upgrade",
            "sec-websocket-key:   dGhlIHNhbXBsZSBub25jZQ==  ",
            "sec-websocket-version: 13",
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
            "User-Agent: Mozilla/5.0",
        ],
    );
    let mut stream = connect(server.addr());
    stream.write_all(req.as_bytes()).unwrap();
    let response = read_head(&mut stream);
    assert_eq!(response.status, 101);
    assert_eq!(response.header("sec-websocket-accept"), Some(RFC_ACCEPT));
    // No extension is negotiated.
    assert_eq!(response.header("sec-websocket-extensions"), None);
    drop(stream);
    server.finish();
}

#[test]
fn over_max_connections_gets_503() {
    let mut config = test_config();
    config.max_connections = 1;
    let (server, _notes) = probe(config);
    let mut first = client(&server.url("/"));
    echo_text(&mut first, "in");
    let mut second = connect(server.addr());
    let response = read_response_to_eof(&mut second);
    assert_eq!(response.status, 503);
    assert!(response.header("retry-after").is_some());
    // The first connection is unaffected.
    echo_text(&mut first, "still in");
    close_client(&mut first);
    server.finish();
}

// ---------------------------------------------------------------------------------------------
// Sub-protocols
// ---------------------------------------------------------------------------------------------

fn stomp_config() -> ServerConfig {
    let mut config = test_config();
    config.handshake.protocols = vec!["v12.stomp".into(), "v11.stomp".into(), "v10.stomp".into()];
    config
}

#[test]
fn subprotocol_is_the_servers_preference_among_the_offered() {
    let (server, notes) = probe(stomp_config());
    // Raw: the header on the wire.
    let mut stream = connect(server.addr());
    stream
        .write_all(
            upgrade_request("/", &["Sec-WebSocket-Protocol: v10.stomp, v11.stomp"]).as_bytes(),
        )
        .unwrap();
    let response = read_head(&mut stream);
    assert_eq!(response.status, 101);
    assert_eq!(response.header("sec-websocket-protocol"), Some("v11.stomp"));
    let protocol = recv_matching(&notes, "an on_open report", |n| match n {
        Note::Open { protocol } => Some(protocol.clone()),
        _ => None,
    });
    assert_eq!(
        protocol.as_deref(),
        Some("v11.stomp"),
        "Session::protocol()"
    );
    drop(stream);
    // The client sees the same.
    let config = ClientConfig {
        protocols: vec!["v10.stomp".into(), "v11.stomp".into()],
        ..client_config()
    };
    let mut client = client_with(&server.url("/"), &config);
    assert_eq!(client.protocol(), Some("v11.stomp"));
    let protocol = recv_matching(&notes, "an on_open report", |n| match n {
        Note::Open { protocol } => Some(protocol.clone()),
        _ => None,
    });
    assert_eq!(protocol.as_deref(), Some("v11.stomp"));
    close_client(&mut client);
    server.finish();
}

#[test]
fn no_offered_subprotocol_is_accepted_without_the_header() {
    let (server, notes) = probe(stomp_config());
    for extra in [&[][..], &["Sec-WebSocket-Protocol: mqtt"][..]] {
        let mut stream = connect(server.addr());
        stream
            .write_all(upgrade_request("/", extra).as_bytes())
            .unwrap();
        let response = read_head(&mut stream);
        assert_eq!(response.status, 101, "{extra:?}");
        assert_eq!(response.header("sec-websocket-protocol"), None, "{extra:?}");
        let protocol = recv_matching(&notes, "an on_open report", |n| match n {
            Note::Open { protocol } => Some(protocol.clone()),
            _ => None,
        });
        assert_eq!(protocol, None);
    }
    server.finish();
}

// ---------------------------------------------------------------------------------------------
// The upgrade hook
// ---------------------------------------------------------------------------------------------

/// Per-connection data made by the hook.
struct Visitor {
    user: String,
    path: String,
    agent: String,
}

/// Lets in `?token=<user>` except `mallory`; replies to every message with what it knows.
struct Gate;

impl Handler for Gate {
    type Data = Visitor;

    fn on_upgrade(
        &mut self,
        req: &Request<'_, '_>,
        up: &mut Upgrading,
    ) -> Result<Visitor, Rejection> {
        let token = req
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")));
        match token {
            None => Err(Rejection::new(401, "token required")),
            Some("mallory") => Err(Rejection::new(403, "banned")),
            Some(user) => {
                up.headers.push(("X-Welcome".into(), user.into()));
                Ok(Visitor {
                    user: user.into(),
                    path: req.path().into(),
                    agent: req.header_str("x-agent").unwrap_or("-").into(),
                })
            }
        }
    }

    fn on_message(&mut self, session: &mut Session<'_, Visitor>, _message: Message<'_>) {
        let v = session.data();
        let reply = format!("{} {} {}", v.user, v.path, v.agent);
        let _ = session.send_text(&reply);
    }
}

#[test]
fn hook_sees_path_query_and_headers_and_attaches_data() {
    let server = TestServer::start(test_config(), || Gate);
    let config = |agent: &str| ClientConfig {
        headers: vec![("X-Agent".into(), agent.into())],
        ..client_config()
    };
    let mut alice = client_with(&server.url("/rooms/42?x=1&token=alice"), &config("probe/1"));
    let mut bob = client_with(&server.url("/lobby?token=bob"), &config("probe/2"));
    for _ in 0..2 {
        alice.send_text("who am I").unwrap();
        bob.send_text("who am I").unwrap();
        assert_eq!(
            read_event(&mut alice, "alice's reply"),
            OwnedEvent::Text("alice /rooms/42 probe/1".into())
        );
        assert_eq!(
            read_event(&mut bob, "bob's reply"),
            OwnedEvent::Text("bob /lobby probe/2".into())
        );
    }
    close_client(&mut alice);
    close_client(&mut bob);
    // The extra response header set by the hook.
    let mut stream = connect(server.addr());
    stream
        .write_all(upgrade_request("/?token=carol", &[]).as_bytes())
        .unwrap();
    let response = read_head(&mut stream);
    assert_eq!(response.status, 101);
    assert_eq!(response.header("x-welcome"), Some("carol"));
    drop(stream);
    server.finish();
}

#[test]
fn hook_rejection_status_reaches_the_client() {
    let server = TestServer::start(test_config(), || Gate);
    match sockeye::client::Client::connect_with(&server.url("/rooms/42"), &client_config()) {
        Err(ClientError::Handshake(ResponseError::Status(401))) => {}
        other => panic!("expected a 401, got {other:?}"),
    }
    match sockeye::client::Client::connect_with(&server.url("/?token=mallory"), &client_config()) {
        Err(ClientError::Handshake(ResponseError::Status(403))) => {}
        other => panic!("expected a 403, got {other:?}"),
    }
    // On the wire: the status, the reason as the body, and the connection closes.
    let response = http_exchange(server.addr(), upgrade_request("/rooms/42", &[]).as_bytes());
    assert_eq!(response.status, 401);
    assert_eq!(response.body, b"token required\n");
    assert_eq!(response.header("connection"), Some("close"));
    server.finish();
}

// ---------------------------------------------------------------------------------------------
// Plain HTTP
// ---------------------------------------------------------------------------------------------

struct Web {
    calls: mpsc::Sender<(String, Vec<u8>)>,
}

impl Handler for Web {
    type Data = ();

    fn on_upgrade(&mut self, _req: &Request<'_, '_>, _up: &mut Upgrading) -> Result<(), Rejection> {
        Ok(())
    }

    fn on_http(&mut self, req: &Request<'_, '_>, body: &[u8]) -> HttpResponse {
        let _ = self
            .calls
            .send((format!("{} {}", req.method, req.target), body.to_vec()));
        match (req.method, req.path()) {
            ("GET", "/status") => {
                HttpResponse::text(200, &format!("up {}", req.query().unwrap_or("")))
            }
            ("POST", "/echo") => {
                let mut response = HttpResponse::new(201, "application/octet-stream", body);
                response
                    .headers
                    .push(("X-Length".into(), body.len().to_string()));
                response
            }
            _ => HttpResponse::not_found(),
        }
    }

    fn on_message(&mut self, _session: &mut Session<'_, ()>, _message: Message<'_>) {}
}

fn web(config: ServerConfig) -> (TestServer, mpsc::Receiver<(String, Vec<u8>)>) {
    let (tx, rx) = mpsc::channel();
    let server = TestServer::start(config, move || Web { calls: tx.clone() });
    (server, rx)
}

#[test]
fn http_get_is_answered_and_the_connection_closed() {
    let (server, calls) = web(test_config());
    let response = http_exchange(
        server.addr(),
        request("GET /status?verbose=1 HTTP/1.1", &[HOST]).as_bytes(),
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"up verbose=1");
    assert_eq!(response.header("connection"), Some("close"));
    assert_eq!(
        recv(&calls, "the on_http call"),
        ("GET /status?verbose=1".into(), Vec::new())
    );
    let response = http_exchange(
        server.addr(),
        request("GET /nowhere HTTP/1.1", &[HOST]).as_bytes(),
    );
    assert_eq!(response.status, 404);
    server.finish();
}

#[test]
fn http_post_body_arriving_later_is_delivered_whole() {
    let (server, calls) = web(test_config());
    let mut stream = connect(server.addr());
    let body = b"hello, body in pieces";
    let head = request(
        "POST /echo HTTP/1.1",
        &[
            HOST,
            "Connection: close",
            &format!("Content-Length: {}", body.len()),
        ],
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body[..5]).unwrap();
    stream.write_all(&body[5..]).unwrap();
    let response = read_response_to_eof(&mut stream);
    assert_eq!(response.status, 201);
    assert_eq!(response.body, body);
    assert_eq!(response.header("x-length"), Some("21"));
    assert_eq!(
        recv(&calls, "the on_http call"),
        ("POST /echo".into(), body.to_vec())
    );
    drop(stream);
    server.finish();
}

#[test]
fn http_body_over_max_http_body_gets_413() {
    let mut config = test_config();
    config.max_http_body = 1024;
    let (server, calls) = web(config);
    let req = request("POST /echo HTTP/1.1", &[HOST, "Content-Length: 4096"]);
    let response = http_exchange(server.addr(), req.as_bytes());
    assert_eq!(response.status, 413);
    assert_eq!(response.header("connection"), Some("close"));
    assert!(calls.try_recv().is_err(), "on_http must not be called");
    // At the limit is fine.
    let mut req = request("POST /echo HTTP/1.1", &[HOST, "Content-Length: 1024"]).into_bytes();
    req.extend(pattern(1024));
    let response = http_exchange(server.addr(), &req);
    assert_eq!(response.status, 201);
    assert_eq!(response.body, pattern(1024));
    server.finish();
}

#[test]
fn http_bad_content_length_gets_400_and_bad_chunked_bodies_too() {
    let (server, calls) = web(test_config());
    let req = request("POST /echo HTTP/1.1", &[HOST, "Content-Length: 12abc"]);
    assert_eq!(http_exchange(server.addr(), req.as_bytes()).status, 400);
    let req = request(
        "POST /echo HTTP/1.1",
        &[HOST, "Content-Length: 3", "Content-Length: 4"],
    );
    assert_eq!(http_exchange(server.addr(), req.as_bytes()).status, 400);
    let mut req = request("POST /echo HTTP/1.1", &[HOST, "Transfer-Encoding: chunked"]);
    req.push_str("zz\r\nhello\r\n0\r\n\r\n");
    assert_eq!(http_exchange(server.addr(), req.as_bytes()).status, 400);
    let req = request("POST /echo HTTP/1.1", &[HOST, "Transfer-Encoding: gzip"]);
    assert_eq!(http_exchange(server.addr(), req.as_bytes()).status, 400);
    assert!(calls.try_recv().is_err(), "on_http must not be called");
    server.finish();
}

#[test]
fn http_chunked_bodies_arrive_whole_within_the_limit() {
    let (server, calls) = web(ServerConfig {
        max_http_body: 64,
        ..test_config()
    });
    let mut stream = connect(server.addr());
    let head = request(
        "POST /echo HTTP/1.1",
        &[HOST, "Connection: close", "Transfer-Encoding: chunked"],
    );
    stream.write_all(head.as_bytes()).unwrap();
    // Chunks in pieces, a chunk extension, a trailer.
    for piece in [
        "5;ext=1\r\nhel",
        "lo\r\n7\r\n, body!\r",
        "\n0\r\nX-Trailer: 1\r\n\r\n",
    ] {
        stream.write_all(piece.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let response = read_response_to_eof(&mut stream);
    assert_eq!(response.status, 201);
    assert_eq!(response.body, b"hello, body!");
    assert_eq!(
        recv(&calls, "the on_http call"),
        ("POST /echo".into(), b"hello, body!".to_vec())
    );
    let mut req = request("POST /echo HTTP/1.1", &[HOST, "Transfer-Encoding: chunked"]);
    req.push_str(&format!("41\r\n{}\r\n0\r\n\r\n", "x".repeat(65)));
    assert_eq!(http_exchange(server.addr(), req.as_bytes()).status, 413);
    server.finish();
}

// ---------------------------------------------------------------------------------------------
// Frame rules: the exact close code, and on_close sees it
// ---------------------------------------------------------------------------------------------

/// Opens a session on a probe server, sends `bytes`, and returns the close code the server
/// answered with after checking that `on_close` reported the same code.
fn violation(config: ServerConfig, bytes: &[u8]) -> u16 {
    let (server, notes) = probe(config);
    let mut stream = open_raw(server.addr());
    stream.write_all(bytes).unwrap();
    let code = expect_close_code(&mut stream);
    let error = recv_matching(&notes, "an on_error report", |n| match n {
        Note::Error(e) => Some(e.clone()),
        _ => None,
    });
    assert!(error.starts_with("Protocol("), "on_error: {error}");
    let (reported, _) = closed_with(&notes);
    assert_eq!(reported, code, "on_close reports the code sent");
    server.finish();
    assert_no_more_closes(&notes);
    code
}

fn small_message_config() -> ServerConfig {
    let mut config = test_config();
    config.limits.max_message_size = 1000;
    config.limits.max_frame_size = 4000;
    config
}

#[test]
fn unmasked_frame_gets_1002() {
    assert_eq!(
        violation(test_config(), &encode_frame(true, 0, TEXT, b"hi", None)),
        1002
    );
}

#[test]
fn reserved_data_opcode_gets_1002() {
    assert_eq!(violation(test_config(), &client_frame(0x3, b"")), 1002);
}

#[test]
fn reserved_control_opcode_gets_1002() {
    assert_eq!(violation(test_config(), &client_frame(0xb, b"x")), 1002);
}

#[test]
fn rsv_bits_get_1002() {
    for rsv in [4, 2, 1] {
        let frame = encode_frame(true, rsv, TEXT, b"hi", Some(MASK));
        assert_eq!(violation(test_config(), &frame), 1002, "rsv {rsv:03b}");
    }
}

#[test]
fn invalid_utf8_text_gets_1007() {
    assert_eq!(
        violation(test_config(), &client_frame(TEXT, b"ok \xff\xfe")),
        1007
    );
}

#[test]
fn invalid_utf8_across_fragments_gets_1007() {
    // "€" is e2 82 ac; the second fragment breaks it.
    let mut bytes = encode_frame(false, 0, TEXT, b"price: \xe2\x82", Some(MASK));
    bytes.extend(encode_frame(true, 0, CONT, b"\x41", Some(MASK)));
    assert_eq!(violation(test_config(), &bytes), 1007);
}

#[test]
fn truncated_utf8_at_message_end_gets_1007() {
    let mut bytes = encode_frame(false, 0, TEXT, b"ok", Some(MASK));
    bytes.extend(encode_frame(true, 0, CONT, b"\xe2\x82", Some(MASK)));
    assert_eq!(violation(test_config(), &bytes), 1007);
}

#[test]
fn message_over_max_message_size_gets_1009() {
    // Two fragments of 600 bytes each: every frame is within max_frame_size, the message not.
    let mut bytes = encode_frame(false, 0, BINARY, &[7; 600], Some(MASK));
    bytes.extend(encode_frame(true, 0, CONT, &[7; 600], Some(MASK)));
    assert_eq!(violation(small_message_config(), &bytes), 1009);
}

#[test]
fn frame_over_max_frame_size_gets_1009() {
    let mut config = test_config();
    config.limits.max_frame_size = 1000;
    assert_eq!(violation(config, &client_frame(BINARY, &[1; 1001])), 1009);
}

#[test]
fn announced_length_over_the_limit_gets_1009_before_the_payload() {
    // Only the header of a 17 MiB frame is sent: the verdict must not wait for the payload.
    // (Our close could only be recognised after the 17 MiB the header announced, so we hang up
    // instead of answering.)
    let (server, notes) = probe(test_config());
    let mut stream = open_raw(server.addr());
    let mut head = vec![0x82, 0x80 | 127];
    head.extend_from_slice(&(17u64 << 20).to_be_bytes());
    head.extend_from_slice(&MASK);
    stream.write_all(&head).unwrap();
    assert_eq!(read_close(&mut stream).close_code(), Some(1009));
    drop(stream);
    assert_eq!(closed_with(&notes).0, 1009);
    server.finish();
}

#[test]
fn close_with_invalid_code_gets_1002() {
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
        assert_eq!(
            violation(test_config(), &client_close(code, "")),
            1002,
            "code {code}"
        );
    }
}

#[test]
fn close_with_one_byte_payload_gets_1002() {
    assert_eq!(
        violation(test_config(), &client_frame(CLOSE, &[0x03])),
        1002
    );
}

#[test]
fn close_with_invalid_utf8_reason_gets_1007() {
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye \xc3\x28");
    assert_eq!(
        violation(test_config(), &client_frame(CLOSE, &payload)),
        1007
    );
}

#[test]
fn control_frame_over_125_bytes_gets_1002() {
    assert_eq!(
        violation(test_config(), &client_frame(PING, &[0; 126])),
        1002
    );
}

#[test]
fn fragmented_control_frame_gets_1002() {
    let frame = encode_frame(false, 0, PING, b"x", Some(MASK));
    assert_eq!(violation(test_config(), &frame), 1002);
}

#[test]
fn continuation_without_a_message_gets_1002() {
    assert_eq!(violation(test_config(), &client_frame(CONT, b"x")), 1002);
}

#[test]
fn new_message_inside_a_fragmented_one_gets_1002() {
    let mut bytes = encode_frame(false, 0, TEXT, b"a", Some(MASK));
    bytes.extend(client_frame(TEXT, b"b"));
    assert_eq!(violation(test_config(), &bytes), 1002);
}

#[test]
fn length_with_top_bit_set_gets_1002() {
    let mut head = vec![0x82, 0x80 | 127];
    head.extend_from_slice(&(1u64 << 63).to_be_bytes());
    head.extend_from_slice(&MASK);
    assert_eq!(violation(test_config(), &head), 1002);
}

#[test]
fn too_many_fragments_gets_1009() {
    let mut config = test_config();
    config.limits.max_fragments = 4;
    let mut bytes = encode_frame(false, 0, BINARY, b"1", Some(MASK));
    for _ in 0..4 {
        bytes.extend(encode_frame(false, 0, CONT, b"1", Some(MASK)));
    }
    assert_eq!(violation(config, &bytes), 1009);
}

#[test]
fn frames_after_a_violation_are_ignored_until_the_close() {
    let (server, notes) = probe(test_config());
    let mut stream = open_raw(server.addr());
    let mut bytes = encode_frame(true, 0, TEXT, b"unmasked", None);
    // None of these may be answered or delivered.
    bytes.extend(client_frame(TEXT, b"after"));
    bytes.extend(client_frame(PING, b"after"));
    stream.write_all(&bytes).unwrap();
    let close = read_frame(&mut stream);
    assert_eq!(close.close_code(), Some(1002));
    stream.write_all(&client_close(1002, "")).unwrap();
    assert!(expect_eof(&mut stream).is_empty());
    assert_eq!(closed_with(&notes).0, 1002);
    server.finish();
}

#[test]
fn normal_close_is_echoed_and_tcp_closed_promptly() {
    let mut config = test_config();
    // Long enough that waiting for a deadline instead of closing would fail the timing check.
    config.close_timeout = Duration::from_secs(10);
    let (server, notes) = probe(config);
    let mut stream = open_raw(server.addr());
    stream.write_all(&client_close(1000, "bye")).unwrap();
    let started = Instant::now();
    let echo = read_frame(&mut stream);
    assert_eq!(echo.opcode, CLOSE);
    assert!(!echo.masked);
    assert_eq!(echo.close_code(), Some(1000));
    assert!(expect_eof(&mut stream).is_empty());
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "server took {took:?} to close TCP"
    );
    assert_eq!(closed_with(&notes), (1000, "bye".to_string()));
    server.finish();
}

#[test]
fn close_without_code_is_echoed_empty_and_reported_as_1005() {
    let (server, notes) = probe(test_config());
    let mut stream = open_raw(server.addr());
    stream.write_all(&client_frame(CLOSE, b"")).unwrap();
    let echo = read_frame(&mut stream);
    assert_eq!(echo.close_code(), None);
    assert!(expect_eof(&mut stream).is_empty());
    assert_eq!(closed_with(&notes).0, 1005);
    server.finish();
}

#[test]
fn application_close_code_is_echoed() {
    let (server, notes) = probe(test_config());
    let mut stream = open_raw(server.addr());
    stream.write_all(&client_close(4321, "app")).unwrap();
    assert_eq!(read_frame(&mut stream).close_code(), Some(4321));
    assert!(expect_eof(&mut stream).is_empty());
    assert_eq!(closed_with(&notes), (4321, "app".to_string()));
    server.finish();
}

#[test]
fn ping_is_answered_with_the_same_payload() {
    let (server, _notes) = probe(test_config());
    let mut stream = open_raw(server.addr());
    stream
        .write_all(&client_frame(PING, b"are you there"))
        .unwrap();
    let pong = read_frame(&mut stream);
    assert_eq!((pong.opcode, pong.masked), (PONG, false));
    assert_eq!(pong.payload, b"are you there");
    drop(stream);
    server.finish();
}

#[test]
fn server_ping_reaches_the_client_and_its_pong_reaches_on_pong() {
    let (server, notes) = probe(test_config());
    let mut stream = open_raw(server.addr());
    stream.write_all(&client_frame(TEXT, b"ping me")).unwrap();
    let ping = read_frame(&mut stream);
    assert_eq!((ping.opcode, ping.masked), (PING, false));
    assert_eq!(ping.payload, b"from the server");
    stream
        .write_all(&client_frame(PONG, &ping.payload))
        .unwrap();
    let pong = recv_matching(&notes, "an on_pong report", |n| match n {
        Note::Pong(p) => Some(p.clone()),
        _ => None,
    });
    assert_eq!(pong, b"from the server");
    drop(stream);
    server.finish();
}

#[test]
fn dropped_tcp_reports_1006() {
    let (server, notes) = probe(test_config());
    let mut stream = open_raw(server.addr());
    stream.write_all(&client_frame(TEXT, b"hi")).unwrap();
    assert_eq!(read_frame(&mut stream).payload, b"hi");
    drop(stream);
    let error = recv_matching(&notes, "an on_error report", |n| match n {
        Note::Error(e) => Some(e.clone()),
        _ => None,
    });
    assert_eq!(error, "Dropped");
    assert_eq!(closed_with(&notes).0, 1006);
    server.finish();
    assert_no_more_closes(&notes);
}

#[test]
fn dropped_tcp_mid_message_reports_1006() {
    let (server, notes) = probe(test_config());
    let mut stream = open_raw(server.addr());
    // The header of a 1 MiB frame and 10 bytes of it.
    let frame = client_frame(BINARY, &pattern(1 << 20));
    stream.write_all(&frame[..24]).unwrap();
    drop(stream);
    assert_eq!(closed_with(&notes).0, 1006);
    server.finish();
}

// ---------------------------------------------------------------------------------------------
// Isolation, large messages, deadlines, shutdown
// ---------------------------------------------------------------------------------------------

#[test]
fn garbage_on_one_connection_does_not_disturb_another() {
    let (server, notes) = probe(test_config());
    let mut good = client(&server.url("/"));
    echo_text(&mut good, "before");

    // A session that sends noise after the handshake.
    let mut noisy = open_raw(server.addr());
    echo_text(&mut good, "during");
    let mut noise = vec![0x81, 0x05]; // unmasked: the first violation
    noise.extend(pattern(4096));
    noisy.write_all(&noise).unwrap();
    echo_text(&mut good, "after noise");
    assert_eq!(read_close(&mut noisy).close_code(), Some(1002));
    drop(noisy);

    // A connection that sends noise instead of a request.
    let response = http_exchange(server.addr(), &pattern(512));
    assert_eq!(response.status, 400);
    echo_text(&mut good, "after bad request");

    // One that vanishes in the middle of a large frame.
    let mut vanishing = open_raw(server.addr());
    let frame = client_frame(BINARY, &pattern(256 << 10));
    vanishing.write_all(&frame[..100 << 10]).unwrap();
    good.send_binary(&pattern(70_000)).unwrap();
    drop(vanishing);
    assert_eq!(
        read_event(&mut good, "the echo of the 70,000-byte message"),
        OwnedEvent::Binary(pattern(70_000))
    );

    // One that breaks a rule in the middle of a fragmented message.
    let mut rude = open_raw(server.addr());
    let mut bytes = encode_frame(false, 0, TEXT, b"half", Some(MASK));
    bytes.extend(client_frame(0x7, b""));
    rude.write_all(&bytes).unwrap();
    assert_eq!(expect_close_code(&mut rude), 1002);

    for i in 0..20 {
        echo_text(&mut good, &format!("message {i}"));
    }
    close_client(&mut good);
    assert!(
        std::iter::from_fn(|| notes.try_recv().ok())
            .all(|n| !matches!(n, Note::Error(ref e) if e.starts_with("Io"))),
        "no I/O errors expected"
    );
    server.finish();
}

#[test]
fn sixteen_mib_binary_message_echoes_intact() {
    let (server, _notes) = probe(test_config());
    let mut client = client(&server.url("/"));
    let payload = pattern(16 << 20);
    client.send_binary(&payload).unwrap();
    match read_event(&mut client, "the echo of the 16 MiB message") {
        OwnedEvent::Binary(got) => {
            assert_eq!(got.len(), payload.len());
            assert!(got == payload, "16 MiB echo differs");
        }
        other => panic!(
            "expected a binary echo, got {:?}",
            std::mem::discriminant(&other)
        ),
    }
    close_client(&mut client);
    server.finish();
}

#[test]
fn half_a_request_is_cut_off_at_the_handshake_deadline() {
    let mut config = test_config();
    config.handshake_timeout = Duration::from_millis(200);
    let (server, notes) = probe(config);
    let started = Instant::now();
    let mut stream = connect(server.addr());
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
        .unwrap();
    let extra = expect_eof(&mut stream);
    let took = started.elapsed();
    assert!(extra.is_empty(), "no response expected, got {extra:?}");
    assert!(
        took >= Duration::from_millis(150),
        "cut off too early: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "cut off too late: {took:?}");
    assert_no_callbacks(&notes);
    server.finish();
}

#[test]
fn handshake_deadline_does_not_apply_after_the_upgrade() {
    let mut config = test_config();
    config.handshake_timeout = Duration::from_millis(200);
    let (server, _notes) = probe(config);
    let mut stream = open_raw(server.addr());
    // Well past the deadline, the session is still there: a read times out instead of EOF.
    stream
        .set_read_timeout(Some(Duration::from_millis(600)))
        .unwrap();
    let mut byte = [0u8; 1];
    match std::io::Read::read(&mut stream, &mut byte) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("an open session must stay open, got {other:?}"),
    }
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
        .write_all(&client_frame(TEXT, b"still here"))
        .unwrap();
    assert_eq!(read_frame(&mut stream).payload, b"still here");
    drop(stream);
    server.finish();
}

#[test]
fn graceful_shutdown_sends_1001_to_every_session() {
    let mut config = test_config();
    config.shutdown_timeout = Duration::from_secs(4);
    let (server, notes) = probe(config);
    let addr = server.addr();
    let url = server.url("/");
    let mut clients: Vec<_> = (0..3).map(|_| client(&url)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        echo_text(c, &format!("client {i}"));
    }
    // A connection still in its handshake is simply dropped.
    let mut pending = connect(server.addr());
    pending.write_all(b"GET / HTTP/1.1\r\n").unwrap();

    let running = server.take();
    let started = Instant::now();
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(running.shutdown());
    });
    for c in &mut clients {
        match read_event(c, "the server's close 1001 at shutdown") {
            OwnedEvent::Close(Some((1001, _))) => {}
            other => panic!("expected close 1001, got {other:?}"),
        }
        // The client echoed the close; the server then drops TCP.
        expect_dropped(c, "after the shutdown's close handshake");
    }
    assert!(expect_eof(&mut pending).is_empty());
    let result = done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("shutdown returns");
    result.expect("workers ended cleanly");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "shutdown waited for its deadline ({took:?}) although every client answered"
    );
    for _ in 0..3 {
        assert_eq!(closed_with(&notes).0, 1001);
    }
    assert_no_more_closes(&notes);
    // Nothing listens any more.
    assert!(std::net::TcpStream::connect_timeout(&addr, IO_TIMEOUT).is_err());
}

#[test]
fn several_workers_serve_and_shut_down_together() {
    let mut config = test_config();
    config.workers = 4;
    let (server, notes) = probe(config);
    let url = server.url("/");
    let mut clients: Vec<_> = (0..16).map(|_| client(&url)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        echo_text(c, &format!("client {i}"));
    }
    let running = server.take();
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(running.shutdown());
    });
    for c in &mut clients {
        match read_event(c, "the server's close 1001 at shutdown") {
            OwnedEvent::Close(Some((1001, _))) => {}
            other => panic!("expected close 1001, got {other:?}"),
        }
        expect_dropped(c, "after the shutdown's close handshake");
    }
    done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("shutdown returns")
        .expect("workers ended cleanly");
    for _ in 0..16 {
        assert_eq!(closed_with(&notes).0, 1001);
    }
    assert_no_more_closes(&notes);
}

#[test]
fn shutdown_with_an_unresponsive_session_returns_at_the_deadline() {
    let mut config = test_config();
    config.shutdown_timeout = Duration::from_millis(300);
    let (server, notes) = probe(config);
    // A raw session that never answers the server's close.
    let mut silent = open_raw(server.addr());
    let running = server.take();
    let started = Instant::now();
    bounded_shutdown(running, Duration::from_secs(10)).expect("workers ended cleanly");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    assert_eq!(read_frame(&mut silent).close_code(), Some(1001));
    assert!(expect_eof(&mut silent).is_empty());
    // The peer never sent a close frame: abnormal closure.
    assert_eq!(
        closed_with(&notes).0,
        1006,
        "on_close after a shutdown without an answer"
    );
}

// ---------------------------------------------------------------------------------------------
// Close handshakes the server starts, half-closes, batching and buffer boundaries
// ---------------------------------------------------------------------------------------------

#[test]
fn server_initiated_close_completes_when_the_client_answers() {
    let (server, notes) = probe(test_config());
    let mut client = client(&server.url("/"));
    client.send_text("close me").unwrap();
    match read_event(&mut client, "the server's close 4000") {
        OwnedEvent::Close(Some((4000, reason))) => assert_eq!(reason, "as requested"),
        other => panic!("expected close 4000, got {other:?}"),
    }
    // `read` echoed the close; the server now drops TCP.
    expect_dropped(&mut client, "after the server-initiated close handshake");
    let after = recv_matching(
        &notes,
        "the result of the send after Session::close",
        |n| match n {
            Note::SendAfterClose(r) => Some(*r),
            _ => None,
        },
    );
    assert_eq!(after, Err(SendError::Closed));
    assert_eq!(closed_with(&notes).0, 4000);
    server.finish();
}

#[test]
fn server_initiated_close_without_answer_drops_at_the_close_deadline() {
    let mut config = test_config();
    config.close_timeout = Duration::from_millis(300);
    let (server, notes) = probe(config);
    let mut stream = open_raw(server.addr());
    stream.write_all(&client_frame(TEXT, b"close me")).unwrap();
    let started = Instant::now();
    assert_eq!(read_frame(&mut stream).close_code(), Some(4000));
    // We never answer.
    assert!(expect_eof(&mut stream).is_empty());
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "dropped after {took:?}");
    let error = recv_matching(&notes, "an on_error report", |n| match n {
        Note::Error(e) => Some(e.clone()),
        _ => None,
    });
    assert_eq!(error, "CloseTimeout");
    assert_eq!(
        closed_with(&notes).0,
        1006,
        "no close frame came from the peer"
    );
    server.finish();
}

#[test]
fn violation_without_answer_drops_at_the_close_deadline() {
    let mut config = test_config();
    config.close_timeout = Duration::from_millis(300);
    let (server, notes) = probe(config);
    let mut stream = open_raw(server.addr());
    stream.write_all(&client_frame(0x3, b"")).unwrap();
    let started = Instant::now();
    assert_eq!(read_frame(&mut stream).close_code(), Some(1002));
    assert!(expect_eof(&mut stream).is_empty());
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        closed_with(&notes).0,
        1002,
        "on_close reports the code sent"
    );
    server.finish();
}

#[test]
fn http_keeps_the_connection_for_the_next_request_pipelined_or_not() {
    let (server, calls) = web(test_config());
    let mut stream = connect(server.addr());
    // Two requests in one write (pipelined), then a third that asks to close.
    let mut two = request("GET /status?n=1 HTTP/1.1", &[HOST]);
    two.push_str(&request("GET /status?n=2 HTTP/1.1", &[HOST]));
    stream.write_all(two.as_bytes()).unwrap();
    for n in ["1", "2"] {
        let response = read_head(&mut stream);
        assert_eq!(response.status, 200);
        assert_eq!(response.header("connection"), Some("keep-alive"));
        let len: usize = response
            .header("content-length")
            .and_then(|l| l.parse().ok())
            .expect("a length, so the connection can go on");
        let mut body = vec![0; len];
        read_exact_or_fail(&mut stream, &mut body, "the body of a kept-alive response");
        assert_eq!(body, format!("up n={n}").as_bytes());
        assert_eq!(
            recv(&calls, "the on_http call").0,
            format!("GET /status?n={n}")
        );
    }
    stream
        .write_all(request("GET /status?n=3 HTTP/1.1", &[HOST, "Connection: close"]).as_bytes())
        .unwrap();
    let response = read_response_to_eof(&mut stream);
    assert_eq!(response.header("connection"), Some("close"));
    assert_eq!(response.body, b"up n=3");
    server.finish();
}

#[test]
fn http_request_followed_by_half_close_is_answered() {
    let (server, calls) = web(test_config());
    let mut stream = connect(server.addr());
    stream
        .write_all(request("GET /status HTTP/1.1", &[HOST]).as_bytes())
        .unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let response = read_response_to_eof(&mut stream);
    assert_eq!(response.status, 200);
    assert_eq!(recv(&calls, "the on_http call").0, "GET /status");
    server.finish();
}

#[test]
fn rejected_request_followed_by_half_close_is_answered() {
    let (server, _notes) = probe(test_config());
    let mut stream = connect(server.addr());
    let req = request(
        "GET / HTTP/1.1",
        &[HOST, UPGRADE, CONNECTION, KEY, "Sec-WebSocket-Version: 7"],
    );
    stream.write_all(req.as_bytes()).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_response_to_eof(&mut stream).status, 426);
    server.finish();
}

#[test]
fn message_then_close_then_half_close_are_all_served() {
    let (server, notes) = probe(test_config());
    let mut stream = open_raw(server.addr());
    let mut bytes = client_frame(TEXT, b"last words");
    bytes.extend(client_close(1000, ""));
    stream.write_all(&bytes).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_frame(&mut stream).payload, b"last words");
    assert_eq!(read_frame(&mut stream).close_code(), Some(1000));
    assert!(expect_eof(&mut stream).is_empty());
    assert_eq!(closed_with(&notes).0, 1000);
    server.finish();
}

#[test]
fn many_frames_in_one_write_are_echoed_in_order() {
    let (server, _notes) = probe(test_config());
    let mut stream = open_raw(server.addr());
    let mut bytes = Vec::new();
    for i in 0..200u32 {
        bytes.extend(client_frame(TEXT, format!("m{i}").as_bytes()));
        if i % 50 == 0 {
            bytes.extend(client_frame(PING, &i.to_be_bytes()));
        }
    }
    stream.write_all(&bytes).unwrap();
    for i in 0..200u32 {
        let frame = read_frame(&mut stream);
        assert_eq!(
            (frame.opcode, frame.payload),
            (TEXT, format!("m{i}").into_bytes())
        );
        if i % 50 == 0 {
            let pong = read_frame(&mut stream);
            assert_eq!(
                (pong.opcode, pong.payload),
                (PONG, i.to_be_bytes().to_vec())
            );
        }
    }
    drop(stream);
    server.finish();
}

#[test]
fn ping_between_fragments_is_answered_before_the_message() {
    let (server, _notes) = probe(test_config());
    let mut stream = open_raw(server.addr());
    let mut bytes = encode_frame(false, 0, TEXT, b"frag", Some(MASK));
    bytes.extend(client_frame(PING, b"p"));
    bytes.extend(encode_frame(false, 0, CONT, b"men", Some(MASK)));
    bytes.extend(client_frame(PONG, b"unsolicited"));
    bytes.extend(encode_frame(true, 0, CONT, b"ted", Some(MASK)));
    stream.write_all(&bytes).unwrap();
    let pong = read_frame(&mut stream);
    assert_eq!((pong.opcode, pong.payload.as_slice()), (PONG, &b"p"[..]));
    let echo = read_frame(&mut stream);
    assert_eq!(
        (echo.opcode, echo.fin, echo.payload.as_slice()),
        (TEXT, true, &b"fragmented"[..])
    );
    drop(stream);
    server.finish();
}

#[test]
fn small_read_buffer_splits_frames_anywhere_without_loss() {
    let mut config = test_config();
    config.read_buffer_size = 4096;
    let (server, _notes) = probe(config);
    let mut stream = open_raw(server.addr());
    // A large single frame, then a fragmented message whose headers and interleaved control
    // frames land across read boundaries.
    let big = pattern(300_000);
    let mut bytes = client_frame(BINARY, &big);
    let text = text_of(50_000);
    let mut expected_pongs = 0;
    for (i, piece) in text.as_bytes().chunks(997).enumerate() {
        let first = i == 0;
        let last = (i + 1) * 997 >= text.len();
        bytes.extend(encode_frame(
            last,
            0,
            if first { TEXT } else { CONT },
            piece,
            Some(MASK),
        ));
        if i % 7 == 3 {
            bytes.extend(client_frame(PING, &[i as u8; 125]));
            expected_pongs += 1;
        }
    }
    stream.write_all(&bytes).unwrap();
    let echo = read_frame(&mut stream);
    assert_eq!(echo.opcode, BINARY);
    assert!(echo.payload == big, "large frame differs");
    let mut pongs = 0;
    loop {
        let frame = read_frame(&mut stream);
        if frame.opcode == PONG {
            assert_eq!(frame.payload.len(), 125);
            pongs += 1;
            // Bounds the loop: no more pongs than pings can come before the text.
            assert!(
                pongs <= expected_pongs,
                "{pongs} pongs for {expected_pongs} pings"
            );
            continue;
        }
        assert_eq!(frame.opcode, TEXT);
        assert!(frame.payload == text.as_bytes(), "fragmented text differs");
        break;
    }
    assert_eq!(pongs, expected_pongs);
    drop(stream);
    server.finish();
}

#[test]
fn request_with_a_large_frame_in_the_same_write_is_served() {
    // The request head and a large frame arrive together: more than the handshake phase reads
    // (it stops at max_head_size + max_http_body = 72 KiB), all of it already in the socket.
    for (read_buffer_size, len) in [(256 << 10, 600 << 10), (4096, 200 << 10)] {
        let mut config = test_config();
        config.read_buffer_size = read_buffer_size;
        let (server, _notes) = probe(config);
        let mut stream = connect(server.addr());
        let payload = pattern(len);
        let mut bytes = upgrade_request("/", &[]).into_bytes();
        bytes.extend(client_frame(BINARY, &payload));
        stream.write_all(&bytes).unwrap();
        assert_eq!(read_head(&mut stream).status, 101);
        let echo = read_frame(&mut stream);
        assert!(echo.payload == payload, "echo differs");
        drop(stream);
        server.finish();
    }
}
