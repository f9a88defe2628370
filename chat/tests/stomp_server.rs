//! The STOMP server on real sockets: WebSocket and TCP clients on one broker, several workers.
//!
//! Every wait is bounded and fails naming what it waited for: WebSocket clients get
//! `ClientConfig::io_timeout`, TCP sockets read and write timeouts, loops that skip heart-beats
//! a deadline, and the server's shutdown runs on a thread waited for with `recv_timeout`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::shutdown;
use sockeye::client::{Client, ClientConfig, ClientError, OwnedEvent};
use sockeye::server::ServerConfig;
use sockeye_chat::server::{NoApplication, StompConfig, StompServer};

const TIMEOUT: Duration = Duration::from_secs(5);

fn start(workers: usize, heart_beat: (u64, u64)) -> StompServer {
    let config = ServerConfig {
        workers,
        shutdown_timeout: Duration::from_secs(2),
        ..ServerConfig::default()
    };
    let mut stomp = StompConfig::default();
    stomp.broker.heart_beat = heart_beat;
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    StompServer::start(any, Some(any), config, stomp, Box::new(NoApplication))
        .expect("server starts")
}

fn ws(server: &StompServer) -> Client {
    let config = ClientConfig {
        protocols: vec!["v12.stomp".into()],
        handshake_timeout: TIMEOUT,
        io_timeout: Some(TIMEOUT),
        ..ClientConfig::default()
    };
    let client =
        Client::connect_with(&format!("ws://{}/ws", server.ws_addr()), &config).expect("connect");
    assert_eq!(client.protocol(), Some("v12.stomp"));
    client
}

/// The next event (bounded by the client's `io_timeout`); fails naming `what` it waited for.
fn read_event(client: &mut Client, what: &str) -> OwnedEvent {
    match client.read() {
        Ok(event) => event,
        Err(ClientError::Timeout) => panic!("no {what} within {TIMEOUT:?}"),
        Err(e) => panic!("reading {what}: {e}"),
    }
}

/// The next STOMP frame over WebSocket (skipping heart-beat EOLs), and whether it came as text;
/// `what` names it for the failure.
fn next_frame(client: &mut Client, what: &str) -> (String, bool) {
    let until = Instant::now() + TIMEOUT;
    loop {
        assert!(
            Instant::now() < until,
            "no {what} within {TIMEOUT:?} (only heart-beats came)"
        );
        match read_event(client, what) {
            OwnedEvent::Text(t) if t.trim().is_empty() => continue,
            OwnedEvent::Text(t) => return (t, true),
            OwnedEvent::Binary(b) => return (String::from_utf8_lossy(&b).into_owned(), false),
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn connect_ws(server: &StompServer) -> Client {
    let mut c = ws(server);
    c.send_text("CONNECT\naccept-version:1.2\nhost:localhost\n\n\0")
        .unwrap();
    let (frame, _) = next_frame(&mut c, "CONNECTED");
    assert!(frame.starts_with("CONNECTED\nversion:1.2\n"), "{frame}");
    c
}

fn subscribe(c: &mut Client, id: &str, destination: &str) {
    c.send_text(&format!(
        "SUBSCRIBE\nid:{id}\ndestination:{destination}\nreceipt:r-{id}\n\n\0"
    ))
    .unwrap();
    let (frame, _) = next_frame(c, &format!("the RECEIPT for SUBSCRIBE {id}"));
    assert!(
        frame.starts_with(&format!("RECEIPT\nreceipt-id:r-{id}\n")),
        "{frame}"
    );
}

fn tcp(server: &StompServer) -> TcpStream {
    let s = TcpStream::connect_timeout(&server.tcp_addr().unwrap(), TIMEOUT).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    s
}

/// Reads from a TCP STOMP connection until `needle` has arrived (within `TIMEOUT`).
fn read_until(s: &mut TcpStream, needle: &str) -> String {
    let until = Instant::now() + TIMEOUT;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(needle) {
        assert!(
            Instant::now() < until,
            "no {needle:?} within {TIMEOUT:?}; got {:?}",
            String::from_utf8_lossy(&got)
        );
        let n = s.read(&mut buf).unwrap_or_else(|e| {
            panic!(
                "waiting for {needle:?}: {e}; got {:?}",
                String::from_utf8_lossy(&got)
            )
        });
        assert!(
            n > 0,
            "EOF before {needle:?}; got {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn websocket_and_tcp_clients_share_topics_across_workers() {
    let server = start(2, (10_000, 10_000));
    let mut subs: Vec<Client> = (0..6).map(|_| connect_ws(&server)).collect();
    for (i, c) in subs.iter_mut().enumerate() {
        subscribe(c, &format!("s{i}"), "/topic/news");
    }
    let mut publisher = tcp(&server);
    publisher
        .write_all(b"CONNECT\naccept-version:1.2\n\n\0")
        .unwrap();
    read_until(&mut publisher, "CONNECTED");
    for n in 0..20 {
        publisher
            .write_all(
                format!("SEND\ndestination:/topic/news\ncontent-type:text/plain\n\nitem {n}\0")
                    .as_bytes(),
            )
            .unwrap();
    }
    for (i, c) in subs.iter_mut().enumerate() {
        for n in 0..20 {
            let (frame, text) = next_frame(c, &format!("item {n} at subscriber {i}"));
            assert!(text);
            assert!(frame.starts_with("MESSAGE\n"), "{frame}");
            assert!(frame.contains(&format!("subscription:s{i}\n")));
            assert!(
                frame.ends_with(&format!("\n\nitem {n}\0")),
                "in order: {frame}"
            );
        }
    }
    shutdown(server);
}

#[test]
fn a_body_that_is_not_utf8_goes_out_as_a_binary_message() {
    let server = start(1, (10_000, 10_000));
    let mut sub = connect_ws(&server);
    subscribe(&mut sub, "b", "/topic/bin");
    let mut publisher = tcp(&server);
    publisher
        .write_all(b"CONNECT\naccept-version:1.2\n\n\0")
        .unwrap();
    read_until(&mut publisher, "CONNECTED");
    publisher
        .write_all(b"SEND\ndestination:/topic/bin\ncontent-length:3\n\n\xff\x00\xfe\0")
        .unwrap();
    publisher
        .write_all(b"SEND\ndestination:/topic/bin\n\nplain\0")
        .unwrap();
    let (_, text) = next_frame(&mut sub, "the MESSAGE with the binary body");
    assert!(!text, "invalid UTF-8 body: binary WebSocket message");
    let (frame, text) = next_frame(&mut sub, "the MESSAGE with the text body");
    assert!(text && frame.ends_with("plain\0"));
    shutdown(server);
}

#[test]
fn an_error_closes_only_the_offender() {
    let server = start(1, (10_000, 10_000));
    let mut good = connect_ws(&server);
    subscribe(&mut good, "g", "/topic/t");
    let mut bad = connect_ws(&server);
    bad.send_text("SEND\n\nno destination\0").unwrap();
    let (frame, _) = next_frame(&mut bad, "the ERROR for SEND without destination");
    assert!(
        frame.starts_with("ERROR\n") && frame.contains("message:SEND without destination\n"),
        "{frame}"
    );
    // Then the WebSocket closes with 1002.
    let until = Instant::now() + TIMEOUT;
    loop {
        assert!(
            Instant::now() < until,
            "no close after the ERROR within {TIMEOUT:?}"
        );
        match bad.read() {
            Ok(OwnedEvent::Close(Some((code, _)))) => {
                assert_eq!(code, 1002);
                break;
            }
            Ok(OwnedEvent::Text(t)) if t.trim().is_empty() => {}
            other => panic!("expected the close after the ERROR, got {other:?}"),
        }
    }
    let mut tcp_bad = tcp(&server);
    tcp_bad
        .write_all(b"CONNECT\naccept-version:1.2\n\n\0BOGUS\n\n\0")
        .unwrap();
    let got = read_until(&mut tcp_bad, "message:unknown command");
    assert!(got.contains("ERROR\n"));
    // Up to the close (bounded by the read timeout); what arrives is not checked.
    let mut rest = Vec::new();
    let _ = tcp_bad.read_to_end(&mut rest);
    // A users' destination with no user in it (this once panicked the worker, which served
    // `good` too).
    for destination in ["/user", "/user/ann", "/user//queue/a"] {
        let mut tcp_bad = tcp(&server);
        let frames =
            format!("CONNECT\naccept-version:1.2\n\n\0SEND\ndestination:{destination}\n\nx\0");
        tcp_bad.write_all(frames.as_bytes()).unwrap();
        let got = read_until(&mut tcp_bad, "message:invalid user destination");
        assert!(
            got.contains(&format!("invalid user destination {destination} ")),
            "{got}"
        );
        let _ = tcp_bad.read_to_end(&mut rest);
    }
    // The good client still works.
    good.send_text("SEND\ndestination:/topic/t\n\nstill here\0")
        .unwrap();
    let (frame, _) = next_frame(&mut good, "the message after the offenders left");
    assert!(frame.ends_with("still here\0"));
    shutdown(server);
}

#[test]
fn silent_clients_are_dropped_after_the_heart_beat_period_and_tolerance() {
    // Server offers (200, 200): a client offering 200,200 must send every 200 ms.
    let server = start(1, (200, 200));
    let mut c = ws(&server);
    c.send_text("CONNECT\naccept-version:1.2\nheart-beat:200,200\n\n\0")
        .unwrap();
    let (frame, _) = next_frame(&mut c, "CONNECTED");
    assert!(frame.contains("heart-beat:200,200\n"), "{frame}");
    let started = Instant::now();
    let mut beats = 0;
    let code = loop {
        assert!(
            started.elapsed() < TIMEOUT,
            "the silent client was not dropped within {TIMEOUT:?} ({beats} beats came)"
        );
        match c.read() {
            Ok(OwnedEvent::Text(t)) if t == "\n" => beats += 1,
            Ok(OwnedEvent::Close(frame)) => break frame.map(|(code, _)| code),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(ClientError::Dropped) => break None,
            Err(e) => panic!("waiting for the heart-beat close: {e}"),
        }
    };
    let waited = started.elapsed();
    assert!(beats >= 2, "server heart-beats arrive ({beats})");
    assert_eq!(code, Some(1002));
    // Period 200 ms + tolerance 1 s, checked every 250 ms.
    assert!(
        waited >= Duration::from_millis(1200) && waited < Duration::from_millis(2500),
        "{waited:?}"
    );
    shutdown(server);
}

#[test]
fn a_client_that_beats_stays_connected() {
    let server = start(1, (200, 200));
    let mut c = ws(&server);
    c.send_text("CONNECT\naccept-version:1.2\nheart-beat:200,200\n\n\0")
        .unwrap();
    next_frame(&mut c, "CONNECTED");
    subscribe(&mut c, "x", "/topic/x");
    c.stream()
        .set_read_timeout(Some(Duration::from_millis(150)))
        .unwrap();
    let until = Instant::now() + Duration::from_millis(2000);
    while Instant::now() < until {
        c.send_text("\n").unwrap();
        match c.read() {
            Ok(OwnedEvent::Text(_)) | Err(ClientError::Timeout) => {}
            other => panic!("connection should stay up: {other:?}"),
        }
    }
    c.stream().set_read_timeout(Some(TIMEOUT)).unwrap();
    c.send_text("SEND\ndestination:/topic/x\n\nalive\0")
        .unwrap();
    let (frame, _) = next_frame(&mut c, "the message after the beating");
    assert!(frame.ends_with("alive\0"));
    shutdown(server);
}
