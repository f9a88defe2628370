//! Read-side backpressure on real sockets: a peer that sends without reading (pings, echoes,
//! a plain stream) is no longer read once its queue is over the cap, so the server's memory
//! stays bounded while other sessions keep going; reading resumes when the peer reads; and
//! gates pause a session whose messages feed something closed (a full inbox, an
//! application's gate) until it opens, losing nothing.
//!
//! The tests take one lock so that the memory figures are not measured against each other.
//! Every wait is bounded (socket timeouts, `recv_timeout`, deadlines).

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use sockeye::client::OwnedEvent;
use sockeye::handshake::Request;
use sockeye::server::{
    Gate, Handler, Message, PostError, Rejection, Server, ServerConfig, Session, SessionHandle,
    Upgrading,
};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const CAP: usize = 1 << 20;
const READ_BUFFER: usize = 256 << 10;

/// Resident memory of this process, from /proc (Linux), in bytes.
fn rss() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// Echoes messages (WebSocket) and upper-cases streams.
struct Echo;

impl Handler for Echo {
    type Data = ();

    fn on_upgrade(&mut self, _req: &Request<'_, '_>, _up: &mut Upgrading) -> Result<(), Rejection> {
        Ok(())
    }

    fn on_stream_open(&mut self, _peer: std::net::SocketAddr) -> Option<()> {
        Some(())
    }

    fn on_stream_data(&mut self, session: &mut Session<'_, ()>, bytes: &[u8]) -> usize {
        let _ = session.send_binary(&bytes.to_ascii_uppercase());
        bytes.len()
    }

    fn on_message(&mut self, session: &mut Session<'_, ()>, message: Message<'_>) {
        let _ = session.send(message);
    }
}

fn config() -> ServerConfig {
    ServerConfig {
        max_backpressure: CAP,
        read_buffer_size: READ_BUFFER,
        ping_interval: None,
        ..test_config()
    }
}

/// Writes `chunk` over and over until `total` bytes are out or a write times out (the server
/// stopped reading and the socket buffers filled). Returns the bytes written.
fn write_until_blocked(stream: &mut TcpStream, chunk: &[u8], total: usize) -> usize {
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .expect("write timeout");
    let mut written = 0;
    while written < total {
        let at = written % chunk.len();
        let end = chunk.len().min(at + (total - written));
        match stream.write(&chunk[at..end]) {
            Ok(0) => panic!("the server closed the flooded connection"),
            Ok(n) => written += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("flooding: {e}"),
        }
    }
    written
}

/// Echoes `count` messages on a fresh session and returns how long that took.
fn echo_round(url: &str, count: usize) -> Duration {
    let mut other = client(url);
    let start = Instant::now();
    for i in 0..count {
        echo_text(&mut other, &format!("other {i}"));
    }
    let took = start.elapsed();
    close_client(&mut other);
    took
}

#[test]
fn unread_pings_cost_at_most_the_cap_plus_a_read_buffer() {
    let _serial = serial();
    let server = TestServer::start(config(), || Echo);
    let url = server.url("/");
    let alone = echo_round(&url, 200);
    // 200 MiB of pings with 125-byte payloads, masked, and never a read.
    const FLOOD: usize = 200 << 20;
    let ping = client_frame(PING, &[0x2a; 125]);
    let chunk: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 8000)
        .collect();
    let mut flooder = open_raw(server.addr());
    let before = rss();
    let sent = write_until_blocked(&mut flooder, &chunk, FLOOD);
    let after = rss();
    let stats = server.stats();
    let during = echo_round(&url, 200);
    let growth = after.zip(before).map(|(a, b)| a.saturating_sub(b));
    println!(
        "unread pings: {:.1} MiB taken of {:.0} MiB offered before the server stopped reading; \
         peak queue {} bytes (cap {CAP} + read buffer {READ_BUFFER}); {} read pauses; RSS \
         growth {:.2} MiB; 200 echoes on another session: {:?} before, {:?} during",
        mib(sent),
        mib(FLOOD),
        stats.peak_queued,
        stats.read_pauses,
        growth.map_or(f64::NAN, mib),
        alone,
        during
    );
    assert!(
        sent < FLOOD,
        "the server kept reading pings it could not answer"
    );
    assert!(stats.read_pauses >= 1, "{stats:?}");
    assert!(
        stats.peak_queued <= CAP + READ_BUFFER,
        "queued {} bytes, over the cap plus a read buffer",
        stats.peak_queued
    );
    if let Some(growth) = growth {
        // The queue, its read buffer's worth of pongs, and slack for the allocator.
        assert!(
            growth <= CAP + READ_BUFFER + (1 << 20),
            "RSS grew by {:.1} MiB",
            mib(growth)
        );
    }
    assert!(
        during < alone * 20 + Duration::from_secs(1),
        "the flood slowed another session from {alone:?} to {during:?}"
    );

    // The flooder starts reading: every ping it completed is answered, and the session works.
    let mut reader = flooder.try_clone().expect("clone");
    reader
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("read timeout");
    let pings = sent.div_ceil(ping.len());
    let pongs = spawn_bounded(move || {
        let mut pongs = 0usize;
        // One pong per ping, then the echo: anything more is a failure, not a longer wait.
        for _ in 0..=pings {
            let frame = read_frame(&mut reader);
            match frame.opcode {
                PONG => pongs += 1,
                TEXT => return (pongs, frame.payload),
                other => panic!("unexpected opcode {other} while reading pongs"),
            }
        }
        panic!("more than {pings} pongs before the echo");
    });
    flooder
        .set_write_timeout(Some(IO_TIMEOUT))
        .expect("write timeout");
    // Finish the ping the flood stopped in, then say done.
    let partial = sent % ping.len();
    if partial > 0 {
        flooder
            .write_all(&ping[partial..])
            .expect("finish the last ping");
    }
    flooder
        .write_all(&client_frame(TEXT, b"done"))
        .expect("send done");
    let (count, text) = pongs.join(IO_TIMEOUT * 4, "reading every pong, then the echo");
    assert_eq!(text, b"done");
    assert_eq!(count, pings, "one pong per ping");
    let _ = flooder.shutdown(Shutdown::Both);
    server.finish();
}

#[test]
fn an_unread_stream_is_not_read_past_the_cap_and_resumes_when_its_peer_reads() {
    let _serial = serial();
    let mut bound = Server::bind("127.0.0.1:0".parse().unwrap(), config()).expect("bind");
    let stream_addr = bound
        .bind_stream("127.0.0.1:0".parse().unwrap())
        .expect("bind stream");
    let running = bound.spawn(|| Echo).expect("spawn");
    const FLOOD: usize = 64 << 20;
    let chunk: Vec<u8> = (0..1_000_000).map(|i| b"abcdefghij"[i % 10]).collect();
    let mut peer = connect(stream_addr);
    let sent = write_until_blocked(&mut peer, &chunk, FLOOD);
    let stats = running.stats();
    println!(
        "unread stream: {:.1} MiB taken of {:.0} MiB offered; peak queue {} bytes; {} read pauses",
        mib(sent),
        mib(FLOOD),
        stats.peak_queued,
        stats.read_pauses
    );
    assert!(
        sent < FLOOD,
        "the server kept reading a stream it could not answer"
    );
    assert!(stats.read_pauses >= 1, "{stats:?}");
    assert!(stats.peak_queued <= CAP + READ_BUFFER, "{stats:?}");

    // Now read: everything sent comes back upper-cased, in order.
    let mut reader = peer.try_clone().expect("clone");
    let echoed = spawn_bounded(move || {
        let mut got = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        while got < sent {
            match reader.read(&mut buf) {
                Ok(0) => panic!("the stream closed after {got} of {sent} bytes"),
                Ok(n) => {
                    for (i, b) in buf[..n].iter().enumerate() {
                        assert_eq!(*b, b"ABCDEFGHIJ"[(got + i) % 10], "byte {}", got + i);
                    }
                    got += n;
                }
                Err(e) => panic!("reading the echo after {got} of {sent} bytes: {e}"),
            }
        }
        got
    });
    assert_eq!(
        echoed.join(IO_TIMEOUT * 4, "reading the stream's echo"),
        sent
    );
    drop(peer);
    bounded_shutdown(running, Duration::from_secs(10)).expect("clean shutdown");
}

/// `close` and `open` work a shared gate; any other text passes it and is reported.
struct Gated {
    gate: Arc<Gate>,
    seen: Sender<String>,
}

impl Handler for Gated {
    type Data = ();

    fn on_upgrade(&mut self, _req: &Request<'_, '_>, _up: &mut Upgrading) -> Result<(), Rejection> {
        Ok(())
    }

    fn on_message(&mut self, _session: &mut Session<'_, ()>, message: Message<'_>) {
        let Message::Text(text) = message else { return };
        match text {
            "close" => self.gate.close(),
            "open" => self.gate.open(),
            _ => self.gate.pass(),
        }
        let _ = self.seen.send(text.to_owned());
    }
}

#[test]
fn a_session_that_passes_a_closed_gate_waits_for_it_and_loses_nothing() {
    let _serial = serial();
    let gate = Gate::new();
    let (seen_tx, seen) = mpsc::channel();
    let seen_tx = Mutex::new(seen_tx);
    let handler_gate = gate.clone();
    let server = TestServer::start(config(), move || Gated {
        gate: handler_gate.clone(),
        seen: seen_tx.lock().unwrap().clone(),
    });
    let mut producer = client(&server.url("/"));
    let mut keeper = client(&server.url("/"));
    keeper.send_text("close").expect("send close");
    assert_eq!(recv(&seen, "the gate closing"), "close");
    // All three arrive in one read: the first passes the closed gate, the rest must wait.
    let mut batch = Vec::new();
    for m in ["m1", "m2", "m3"] {
        sockeye::Sender::client(sockeye::connection::MaskKeys::new(|b| b.fill(7)))
            .send(sockeye::DataKind::Text, m.as_bytes(), &mut batch)
            .expect("encode");
    }
    producer_write(&mut producer, &batch);
    assert_eq!(recv(&seen, "the first message"), "m1");
    let deadline = Instant::now() + IO_TIMEOUT;
    while server.stats().gate_pauses == 0 {
        assert!(Instant::now() < deadline, "the producer never paused");
        thread::sleep(Duration::from_millis(5));
    }
    keeper.send_text("open").expect("send open");
    let order: Vec<String> = (0..3)
        .map(|_| recv(&seen, "the messages after the gate opened"))
        .collect();
    assert_eq!(
        order,
        ["open", "m2", "m3"],
        "held messages waited for the gate"
    );
    close_client(&mut producer);
    close_client(&mut keeper);
    server.finish();
}

fn producer_write(client: &mut sockeye::client::Client, bytes: &[u8]) {
    let mut stream = client.stream().try_clone().expect("clone");
    stream.write_all(bytes).expect("write a batch of frames");
}

/// Each text `n` from the producer posts eight 2 KiB messages to the sink (another session,
/// through its handle); counts refused posts.
struct Fanout {
    sink: Arc<Mutex<Option<SessionHandle>>>,
    refused: Sender<PostError>,
}

impl Handler for Fanout {
    type Data = ();

    fn on_upgrade(&mut self, req: &Request<'_, '_>, _up: &mut Upgrading) -> Result<(), Rejection> {
        let _ = req;
        Ok(())
    }

    fn on_open(&mut self, session: &mut Session<'_, ()>) {
        let mut sink = self.sink.lock().unwrap();
        if sink.is_none() {
            *sink = Some(session.handle());
        }
    }

    fn on_message(&mut self, _session: &mut Session<'_, ()>, message: Message<'_>) {
        let Message::Text(text) = message else { return };
        let Some(sink) = self.sink.lock().unwrap().clone() else {
            return;
        };
        for part in 0..8 {
            let mut body = format!("{text}.{part}.").into_bytes();
            body.resize(2048, b'.');
            if let Err(e) = sink.send_binary(&body) {
                let _ = self.refused.send(e);
            }
        }
    }
}

#[test]
fn a_fan_out_into_a_full_inbox_pauses_the_publisher_instead_of_failing_posts() {
    let _serial = serial();
    const MESSAGES: usize = 2000;
    let sink = Arc::new(Mutex::new(None));
    let (refused_tx, refused) = mpsc::channel();
    let refused_tx = Mutex::new(refused_tx);
    let server_sink = sink.clone();
    let server = TestServer::start(
        ServerConfig {
            // 16 KiB per message fanned out, gate at 16 KiB, refusals at 64 KiB.
            max_inbox_bytes: 64 << 10,
            max_backpressure: 64 << 20,
            ..config()
        },
        move || Fanout {
            sink: server_sink.clone(),
            refused: refused_tx.lock().unwrap().clone(),
        },
    );
    let mut receiver = client(&server.url("/"));
    let deadline = Instant::now() + IO_TIMEOUT;
    while sink.lock().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the sink session never opened");
        thread::sleep(Duration::from_millis(1));
    }
    let reading = spawn_bounded(move || {
        for n in 0..MESSAGES {
            for part in 0..8 {
                match read_event(&mut receiver, "a fanned-out message") {
                    OwnedEvent::Binary(body) => {
                        let want = format!("{n}.{part}.");
                        assert!(body.starts_with(want.as_bytes()), "expected {want}");
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        receiver
    });
    // The producer writes all its messages at once: the loop reads them in a few big reads.
    let mut producer = client(&server.url("/"));
    let mut batch = Vec::new();
    let mut tx = sockeye::Sender::client(sockeye::connection::MaskKeys::new(|b| b.fill(3)));
    for n in 0..MESSAGES {
        tx.send(
            sockeye::DataKind::Text,
            n.to_string().as_bytes(),
            &mut batch,
        )
        .expect("encode");
    }
    producer_write(&mut producer, &batch);
    let mut receiver = reading.join(IO_TIMEOUT * 4, "the sink reading every message in order");
    let stats = server.stats();
    println!(
        "fan-out into a 64 KiB inbox: {MESSAGES} x 8 x 2 KiB delivered; publisher paused {} \
         times",
        stats.gate_pauses
    );
    assert!(refused.try_recv().is_err(), "a post was refused");
    assert!(stats.gate_pauses >= 1, "{stats:?}");
    close_client(&mut producer);
    close_client(&mut receiver);
    server.finish();
}
