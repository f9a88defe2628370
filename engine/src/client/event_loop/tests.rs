//! The client loop against the engine's own server (echo handler on 127.0.0.1:0) and against
//! small fake servers for the failure paths. Every run is bounded by a deadline and fails naming
//! what it waited for; servers are shut down with a bounded wait.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::*;
use crate::client::ClientError;
use crate::handshake::{accept_key, Request};
use crate::server::{
    Handler, Message, Rejection, RunningServer, SendStatus, Server, ServerConfig, Session,
    Upgrading,
};

/// Echoes everything; `bye` makes it close with 4000, `peer?` answers the client's address.
struct Echo;

impl Handler for Echo {
    type Data = Option<SocketAddr>;

    fn on_upgrade(
        &mut self,
        _req: &Request<'_, '_>,
        up: &mut Upgrading,
    ) -> Result<Self::Data, Rejection> {
        Ok(up.peer)
    }

    fn on_message(&mut self, session: &mut Session<'_, Self::Data>, message: Message<'_>) {
        match message {
            Message::Text("bye") => {
                let _ = session.close(4000, "bye");
            }
            Message::Text("peer?") => {
                let ip = session
                    .data()
                    .map(|a| a.ip().to_string())
                    .unwrap_or_default();
                let _ = session.send_text(&ip);
            }
            m => {
                let _ = session.send(m);
            }
        }
    }
}

fn echo_server() -> RunningServer {
    let config = ServerConfig {
        workers: 1,
        ping_interval: None,
        max_backpressure: 64 << 20,
        ..ServerConfig::default()
    };
    Server::bind("127.0.0.1:0".parse().unwrap(), config)
        .unwrap()
        .spawn(|| Echo)
        .unwrap()
}

/// Shuts the server down on a helper thread and waits at most 15 s for it (its shutdown
/// deadline is 5 s).
fn stop(server: RunningServer) {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(server.shutdown());
    });
    rx.recv_timeout(Duration::from_secs(15))
        .expect("RunningServer::shutdown returned within 15 s")
        .expect("workers ended cleanly");
}

/// Turns until `done` holds, for at most 10 s; `what` names the awaited state for the failure.
fn drive<H: ClientHandler>(
    lp: &mut EventLoop<H::Data>,
    h: &mut H,
    what: &str,
    done: impl Fn(&H) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(h) {
        assert!(
            Instant::now() < deadline,
            "timed out after 10 s waiting for {what}"
        );
        lp.turn(h, Some(Duration::from_millis(50))).unwrap();
    }
}

/// Closes every connection with 1000 and waits for the close handshakes to finish.
fn close_all(lp: &mut EventLoop<()>, h: &mut Log) {
    let before = h.closes.len();
    let mut open = 0;
    lp.each_open(|c| {
        c.close(1000, "bye").unwrap();
        open += 1;
    });
    drive(lp, h, "every close handshake", |h| {
        h.closes.len() == before + open
    });
    assert!(h.closes[before..].iter().all(|(code, _)| *code == 1000));
    assert!(lp.is_empty());
}

/// What a connection saw, for the assertions.
#[derive(Debug, Default)]
struct Log {
    opened: usize,
    texts: Vec<String>,
    binaries: Vec<Vec<u8>>,
    errors: Vec<String>,
    closes: Vec<(u16, String)>,
    pongs: usize,
    ticks: usize,
}

impl ClientHandler for Log {
    type Data = ();

    fn on_open(&mut self, _conn: &mut ClientConn<'_, ()>) {
        self.opened += 1;
    }

    fn on_message(&mut self, _conn: &mut ClientConn<'_, ()>, message: Message<'_>) {
        match message {
            Message::Text(t) => self.texts.push(t.into()),
            Message::Binary(b) => self.binaries.push(b.into()),
        }
    }

    fn on_pong(&mut self, _conn: &mut ClientConn<'_, ()>, _payload: &[u8]) {
        self.pongs += 1;
    }

    fn on_error(&mut self, _id: ClientId, _data: &mut (), error: &ClientError) {
        self.errors.push(format!("{error:?}"));
    }

    fn on_close(&mut self, _id: ClientId, _data: &mut (), code: u16, reason: &str) {
        self.closes.push((code, reason.into()));
    }

    fn on_tick(&mut self, lp: &mut Control<'_, ()>) {
        self.ticks += 1;
        if self.ticks == 3 {
            lp.stop();
        }
    }
}

/// The payload of message `seq` of connection `conn`: sizes cross every length form.
fn payload(conn: usize, seq: usize) -> Vec<u8> {
    const SIZES: [usize; 8] = [0, 1, 125, 126, 1000, 65_535, 65_536, 200_000];
    let len = SIZES[(conn + seq) % SIZES.len()];
    (0..len)
        .map(|i| b'a' + ((i + conn * 7 + seq) % 26) as u8)
        .collect()
}

const MESSAGES: usize = 12;

/// Each connection sends its messages at open, alternating text and binary, and checks the
/// echoes byte for byte and in order, then closes.
#[derive(Default)]
struct Checker {
    opened: usize,
    matched: usize,
    errors: Vec<String>,
    closes: Vec<u16>,
}

struct PerConn {
    index: usize,
    next: usize,
}

impl ClientHandler for Checker {
    type Data = PerConn;

    fn on_open(&mut self, conn: &mut ClientConn<'_, PerConn>) {
        self.opened += 1;
        let index = conn.data().index;
        for seq in 0..MESSAGES {
            let p = payload(index, seq);
            let status = if seq % 2 == 0 {
                conn.send(Message::Text(std::str::from_utf8(&p).unwrap()))
            } else {
                conn.send(Message::Binary(&p))
            };
            assert_ne!(status, Ok(SendStatus::Dropped));
        }
    }

    fn on_message(&mut self, conn: &mut ClientConn<'_, PerConn>, message: Message<'_>) {
        let PerConn { index, next } = *conn.data();
        let expected = payload(index, next);
        let ok = match message {
            Message::Text(t) => next % 2 == 0 && t.as_bytes() == expected,
            Message::Binary(b) => next % 2 == 1 && b == expected,
        };
        assert!(ok, "connection {index}: message {next} differs");
        self.matched += 1;
        conn.data_mut().next += 1;
        if next + 1 == MESSAGES {
            conn.close(1000, "done").unwrap();
        }
    }

    fn on_error(&mut self, _id: ClientId, _data: &mut PerConn, error: &ClientError) {
        self.errors.push(format!("{error:?}"));
    }

    fn on_close(&mut self, _id: ClientId, _data: &mut PerConn, code: u16, _reason: &str) {
        self.closes.push(code);
    }
}

#[test]
fn many_connections_echo_every_size_in_order_and_close() {
    let server = echo_server();
    let target = Target::new(server.local_addr());
    let mut lp = EventLoop::new(LoopConfig::default()).unwrap();
    let mut h = Checker::default();
    const CONNS: usize = 40;
    for index in 0..CONNS {
        lp.connect(&target, PerConn { index, next: 0 }).unwrap();
    }
    drive(&mut lp, &mut h, "every connection to close or fail", |h| {
        h.closes.len() + h.errors.len() == CONNS
    });
    assert!(h.errors.is_empty(), "{:?}", h.errors);
    assert_eq!(h.opened, CONNS);
    assert_eq!(h.matched, CONNS * MESSAGES);
    assert_eq!(h.closes, vec![1000; CONNS]);
    assert!(lp.is_empty());
    stop(server);
}

#[test]
fn a_message_larger_than_the_socket_buffers_goes_through_the_backlog() {
    let server = echo_server();
    let mut lp = EventLoop::new(LoopConfig::default()).unwrap();
    let mut h = Log::default();
    let id = lp.connect(&Target::new(server.local_addr()), ()).unwrap();
    drive(&mut lp, &mut h, "the open", |h| h.opened == 1);
    let big: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
    let mut conn = lp.conn(id).unwrap();
    // Over the cork limit, so written at once: the socket takes what it can, the rest queues.
    assert_eq!(conn.send(Message::Binary(&big)), Ok(SendStatus::Queued));
    assert!(conn.buffered_amount() < big.len() + 14);
    drive(&mut lp, &mut h, "the 8 MiB echo", |h| h.binaries.len() == 1);
    assert!(h.binaries[0] == big);
    close_all(&mut lp, &mut h);
    stop(server);
}

/// A producer that sends until `Queued` and resumes only in `on_drain`, counting echoes.
#[derive(Default)]
struct Paced {
    sent: usize,
    echoed: usize,
    queued: usize,
    drains: usize,
}

const PACED_MESSAGES: usize = 400;

impl Paced {
    fn pump(&mut self, conn: &mut ClientConn<'_, ()>) {
        let chunk = vec![0x3c; 128 << 10];
        while self.sent < PACED_MESSAGES {
            let status = conn.send(Message::Binary(&chunk)).unwrap();
            assert_ne!(status, SendStatus::Dropped, "under the 16 MiB cap");
            self.sent += 1;
            if status == SendStatus::Queued {
                self.queued += 1;
                return;
            }
        }
    }
}

impl ClientHandler for Paced {
    type Data = ();

    fn on_open(&mut self, conn: &mut ClientConn<'_, ()>) {
        self.pump(conn);
    }

    fn on_message(&mut self, _conn: &mut ClientConn<'_, ()>, _message: Message<'_>) {
        self.echoed += 1;
    }

    fn on_drain(&mut self, conn: &mut ClientConn<'_, ()>) {
        self.drains += 1;
        self.pump(conn);
    }
}

#[test]
fn a_producer_pausing_on_queued_resumes_in_on_drain_and_finishes() {
    let server = echo_server();
    let mut lp = EventLoop::new(LoopConfig::default()).unwrap();
    let mut h = Paced::default();
    lp.connect(&Target::new(server.local_addr()), ()).unwrap();
    drive(&mut lp, &mut h, "every message sent and echoed", |h| {
        h.echoed == PACED_MESSAGES
    });
    assert!(h.queued > 0, "50 MiB went out without backpressure");
    assert_eq!(h.drains, h.queued, "one drain per pause");
    lp.each_open(|c| c.close(1000, "bye").unwrap());
    lp.run_until(&mut h, Instant::now() + Duration::from_secs(10))
        .unwrap();
    assert!(lp.is_empty(), "the close handshake finished within 10 s");
    stop(server);
}

#[test]
fn connections_bind_the_source_address_they_are_given() {
    let server = echo_server();
    let mut lp = EventLoop::new(LoopConfig::default()).unwrap();
    let mut h = Log::default();
    let target = Target::new(server.local_addr());
    let ids: Vec<ClientId> = (2..5)
        .map(|last| {
            let local = IpAddr::from([127, 0, 0, last]);
            lp.connect(&target.from_local(local), ()).unwrap()
        })
        .collect();
    drive(&mut lp, &mut h, "three opens", |h| h.opened == 3);
    for id in &ids {
        lp.conn(*id).unwrap().send_text("peer?").unwrap();
    }
    drive(&mut lp, &mut h, "three peer addresses", |h| {
        h.texts.len() == 3
    });
    h.texts.sort();
    assert_eq!(h.texts, ["127.0.0.2", "127.0.0.3", "127.0.0.4"]);
    close_all(&mut lp, &mut h);
    stop(server);
}

#[test]
fn sends_from_outside_callbacks_pings_and_the_server_close_arrive() {
    let server = echo_server();
    let mut lp = EventLoop::new(LoopConfig::default()).unwrap();
    let mut h = Log::default();
    let id = lp.connect(&Target::new(server.local_addr()), ()).unwrap();
    assert!(lp.conn(id).is_none(), "not open yet");
    drive(&mut lp, &mut h, "the open", |h| h.opened == 1);
    let mut conn = lp.conn(id).unwrap();
    conn.send_text("one").unwrap();
    conn.send_text("two").unwrap();
    conn.ping(b"p").unwrap();
    drive(&mut lp, &mut h, "two echoes and a pong", |h| {
        h.texts.len() == 2 && h.pongs == 1
    });
    assert_eq!(h.texts, ["one", "two"]);
    lp.conn(id).unwrap().send_text("bye").unwrap();
    drive(&mut lp, &mut h, "the server's close 4000", |h| {
        !h.closes.is_empty()
    });
    assert_eq!(h.closes, [(4000, "bye".to_string())]);
    assert!(h.errors.is_empty(), "{:?}", h.errors);
    assert!(
        lp.conn(id).is_none(),
        "ids of ended connections reach nothing"
    );
    stop(server);
}

#[test]
fn a_refused_connect_is_reported_without_open_or_close() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut lp = EventLoop::new(LoopConfig::default()).unwrap();
    let mut h = Log::default();
    lp.connect(&Target::new(addr), ()).unwrap();
    drive(&mut lp, &mut h, "the refused connect's error", |h| {
        !h.errors.is_empty()
    });
    assert!(h.errors[0].starts_with("Refused"), "{:?}", h.errors);
    assert_eq!((h.opened, h.closes.len()), (0, 0));
    assert!(lp.is_empty());
}

#[test]
fn a_silent_server_hits_the_handshake_timeout() {
    // Listening but never accepting: the kernel completes TCP, nobody answers the request.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = LoopConfig::default();
    config.client.handshake_timeout = Duration::from_millis(200);
    let mut lp = EventLoop::new(config).unwrap();
    let mut h = Log::default();
    lp.connect(&Target::new(listener.local_addr().unwrap()), ())
        .unwrap();
    drive(&mut lp, &mut h, "the handshake timeout", |h| {
        !h.errors.is_empty()
    });
    assert_eq!(h.errors, ["Timeout"]);
    assert!(lp.is_empty());
}

/// A one-shot fake server: reads the request head, answers with `respond(key)`. Its thread is
/// never joined (the test's waits are `drive`'s, bounded); its reads and writes are bounded too,
/// so it cannot outlive a failed test by long once the client connected.
fn fake_server(respond: fn(&str) -> Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut byte).unwrap();
            assert_eq!(n, 1);
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let key = head
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap_or("");
        stream.write_all(&respond(key)).unwrap();
        // Hang up at once: the client must still read everything written before.
    });
    addr
}

#[test]
fn a_refused_upgrade_is_a_handshake_error() {
    let addr = fake_server(|_| b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec());
    let mut lp = EventLoop::new(LoopConfig::default()).unwrap();
    let mut h = Log::default();
    lp.connect(&Target::new(addr), ()).unwrap();
    drive(&mut lp, &mut h, "the handshake error", |h| {
        !h.errors.is_empty()
    });
    assert_eq!(h.errors, ["Handshake(Status(404))"]);
    assert_eq!((h.opened, h.closes.len()), (0, 0));
}

#[test]
fn a_masked_frame_from_the_server_fails_the_connection_with_1002() {
    let addr = fake_server(|key| {
        let accept = accept_key(key.as_bytes());
        let mut out = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ".to_vec();
        out.extend_from_slice(&accept);
        out.extend_from_slice(b"\r\n\r\n");
        // In the same write as the head: a masked text frame "x".
        out.extend_from_slice(&[0x81, 0x81, 0, 0, 0, 0, b'x']);
        out
    });
    let mut lp = EventLoop::new(LoopConfig::default()).unwrap();
    let mut h = Log::default();
    lp.connect(&Target::new(addr), ()).unwrap();
    drive(&mut lp, &mut h, "the 1002 close", |h| !h.closes.is_empty());
    assert_eq!(h.opened, 1);
    assert_eq!(h.errors, ["Protocol(MaskedFrame)"]);
    assert_eq!(h.closes[0].0, 1002);
    assert!(h.texts.is_empty());
}

#[test]
fn on_tick_runs_on_its_interval_and_can_stop_the_loop() {
    let config = LoopConfig {
        tick: Some(Duration::from_millis(5)),
        ..LoopConfig::default()
    };
    let mut lp = EventLoop::<()>::new(config).unwrap();
    let mut h = Log::default();
    let started = Instant::now();
    lp.run_until(&mut h, started + Duration::from_secs(10))
        .unwrap();
    assert_eq!(h.ticks, 3);
    assert!(started.elapsed() >= Duration::from_millis(15));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn targets_come_from_ws_urls() {
    let t = Target::from_url("ws://127.0.0.1:9001/chat?x=1").unwrap();
    assert_eq!(t.addr, "127.0.0.1:9001".parse().unwrap());
    assert_eq!(
        (t.host.as_str(), t.path.as_str()),
        ("127.0.0.1:9001", "/chat?x=1")
    );
    assert!(!t.secure);
    assert_eq!(t.server_name(), "127.0.0.1");
    // wss:// needs feature `tls` (tests/tls.rs drives it).
    let wss = Target::from_url("wss://127.0.0.1/");
    if cfg!(feature = "tls") {
        let t = wss.unwrap();
        assert!(t.secure);
        assert_eq!((t.addr.port(), t.host.as_str()), (443, "127.0.0.1"));
    } else {
        assert!(matches!(wss, Err(ClientError::Url(_))));
    }
    let t = Target::from_url("ws://[::1]:9001/").unwrap();
    assert_eq!(t.server_name(), "::1");
}

#[test]
fn a_waker_ends_a_turn_waiting_for_readiness() {
    let mut lp = EventLoop::<()>::new(LoopConfig::default()).unwrap();
    let waker = lp.waker().unwrap();
    // Every call hands out the same waker (a poll has at most one).
    let again = lp.waker().unwrap();
    let (tx, rx) = mpsc::channel();
    let thread = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        waker.wake().unwrap();
        tx.send(()).unwrap();
    });
    let mut h = Log::default();
    let started = Instant::now();
    lp.turn(&mut h, Some(Duration::from_secs(20))).unwrap();
    let waited = started.elapsed();
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the waking thread to report its wake");
    thread.join().expect("the waking thread to finish");
    assert!(
        waited < Duration::from_secs(10),
        "the turn waited {waited:?}: the wake did not end it"
    );
    assert!(
        h.opened == 0 && h.errors.is_empty() && h.closes.is_empty(),
        "a wake is no connection's event"
    );
    // A wake before the turn makes the next one return at once.
    again.wake().unwrap();
    let started = Instant::now();
    lp.turn(&mut h, Some(Duration::from_secs(20))).unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
}
