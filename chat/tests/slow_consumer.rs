//! Slow consumers on real sockets, under each policy: a subscriber that does not read while a
//! publisher floods its topic is told and let go (`disconnect`), loses what does not fit,
//! counted (`drop`), or holds its publishers up until it catches up or its time is up
//! (`throttle`). A fast subscriber beside it always gets everything, in order, and queue
//! messages awaiting an ACK are never dropped.
//!
//! STOMP over TCP, one worker, the default 1 MiB cap, and slow subscribers with a small
//! receive buffer so that they fall behind within a few megabytes; the fast subscriber reads
//! raw bytes in a tight loop and parses them afterwards, so that it keeps up. Every wait is bounded: socket
//! timeouts, `recv_timeout`, deadlines.

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::shutdown;
use socket2::{Domain, Socket, Type};
use sockeye::server::ServerConfig;
use sockeye_chat::server::{NoApplication, SlowConsumer, StompConfig, StompServer};

const TIMEOUT: Duration = Duration::from_secs(10);
const CAP: usize = 1 << 20;
const BODY: usize = 1000;

fn start(policy: SlowConsumer) -> StompServer {
    let config = ServerConfig {
        workers: 1,
        max_backpressure: CAP,
        ping_interval: None,
        shutdown_timeout: Duration::from_secs(2),
        ..ServerConfig::default()
    };
    let mut stomp = StompConfig::default();
    stomp.broker.heart_beat = (0, 0);
    stomp.slow_consumer = policy;
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    StompServer::start(any, Some(any), config, stomp, Box::new(NoApplication))
        .expect("server starts")
}

/// A STOMP 1.2 client over TCP, frames split at NUL (the tests' bodies hold none).
struct Stomp {
    s: TcpStream,
    buf: Vec<u8>,
}

/// What ended a read of frames.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Eof,
    Quiet,
}

impl Stomp {
    /// Connects; `rcvbuf` shrinks the socket's receive buffer first (a slow reader).
    fn connect(server: &StompServer, rcvbuf: Option<usize>) -> Stomp {
        let addr = server.tcp_addr().expect("TCP listener");
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        if let Some(size) = rcvbuf {
            socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
        }
        socket
            .connect_timeout(&addr.into(), TIMEOUT)
            .expect("connect");
        let s: TcpStream = socket.into();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.set_write_timeout(Some(TIMEOUT)).unwrap();
        let mut c = Stomp { s, buf: Vec::new() };
        c.send("CONNECT\naccept-version:1.2\nhost:localhost\n\n");
        let connected = c.frame("CONNECTED");
        assert!(connected.starts_with("CONNECTED\n"), "{connected}");
        c
    }

    /// Sends a frame (the NUL is added).
    fn send(&mut self, frame: &str) {
        self.s
            .write_all(format!("{frame}\0").as_bytes())
            .expect("write a frame");
    }

    fn subscribe(&mut self, destination: &str, ack: &str) {
        self.send(&format!(
            "SUBSCRIBE\nid:0\ndestination:{destination}\nack:{ack}\nreceipt:sub\n\n"
        ));
        let receipt = self.frame("the RECEIPT for SUBSCRIBE");
        assert!(
            receipt.starts_with("RECEIPT\nreceipt-id:sub\n"),
            "{receipt}"
        );
    }

    /// The next frame, within the read timeout; `what` names it for the failure.
    fn frame(&mut self, what: &str) -> String {
        match self.next() {
            Ok(Some(frame)) => frame,
            Ok(None) => panic!("the server closed the connection before {what}"),
            Err(e) => panic!("no {what} within {TIMEOUT:?}: {e}"),
        }
    }

    /// The next frame (heart-beat EOLs skipped); `None` at EOF.
    fn next(&mut self) -> io::Result<Option<String>> {
        loop {
            let start = self.buf.iter().position(|b| *b != b'\n' && *b != b'\r');
            self.buf.drain(..start.unwrap_or(self.buf.len()));
            if let Some(end) = self.buf.iter().position(|b| *b == 0) {
                let frame = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..=end);
                return Ok(Some(frame));
            }
            let mut chunk = [0u8; 16 << 10];
            match self.s.read(&mut chunk) {
                Ok(0) => return Ok(None),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    /// `count` frames read as fast as the socket gives them (parsed once all are in).
    fn frames_fast(&mut self, count: usize, what: &str) -> Vec<String> {
        let mut nuls = self.buf.iter().filter(|b| **b == 0).count();
        let mut chunk = vec![0u8; 256 << 10];
        while nuls < count {
            match self.s.read(&mut chunk) {
                Ok(0) => panic!("the server closed the connection before {what}"),
                Ok(n) => {
                    nuls += memchr::memchr_iter(0, &chunk[..n]).count();
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                Err(e) => panic!("no {what} within {TIMEOUT:?}: {e}"),
            }
        }
        (0..count).map(|_| self.frame(what)).collect()
    }

    /// Every frame until EOF, or until nothing has come for `quiet`.
    fn drain(&mut self, quiet: Duration) -> (Vec<String>, End) {
        self.s.set_read_timeout(Some(quiet)).unwrap();
        let mut frames = Vec::new();
        let until = Instant::now() + TIMEOUT * 3;
        let end = loop {
            assert!(
                Instant::now() < until,
                "frames kept coming for {:?}",
                TIMEOUT * 3
            );
            match self.next() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break End::Eof,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break End::Quiet
                }
                Err(e) => panic!("reading: {e}"),
            }
        };
        self.s.set_read_timeout(Some(TIMEOUT)).unwrap();
        (frames, end)
    }
}

/// The sequence number in a MESSAGE's body.
fn seq(frame: &str) -> usize {
    assert!(
        frame.starts_with("MESSAGE\n"),
        "not a MESSAGE: {frame:.200}"
    );
    let body = frame.split("\n\n").nth(1).expect("a body");
    body[4..12].parse().expect("a sequence number")
}

fn body(i: usize) -> String {
    let mut b = format!("seq:{i:08}:");
    b.extend(std::iter::repeat_n('.', BODY - b.len()));
    b
}

/// Publishes `count` messages to `destination` from its own connection and thread, paced, the
/// last with a receipt that it waits for; returns when that came.
fn publish(server: &StompServer, destination: &str, count: usize) -> thread::JoinHandle<()> {
    publish_range(server, destination, 0..count)
}

/// [`publish`] of the messages numbered `range`.
fn publish_range(
    server: &StompServer,
    destination: &str,
    range: std::ops::Range<usize>,
) -> thread::JoinHandle<()> {
    let mut p = Stomp::connect(server, None);
    let destination = destination.to_owned();
    // Held-up publishers may wait on a stuck subscriber for its whole limit.
    p.s.set_write_timeout(Some(TIMEOUT * 3)).unwrap();
    p.s.set_read_timeout(Some(TIMEOUT * 3)).unwrap();
    thread::spawn(move || {
        let last = range.end - 1;
        for i in range {
            let receipt = if i == last { "receipt:done\n" } else { "" };
            p.send(&format!(
                "SEND\ndestination:{destination}\n{receipt}\n{}",
                body(i)
            ));
            // At most about 5 MB/s: a subscriber that reads keeps up even on a busy machine
            // (its kernel buffers hold a second of it), one that does not read still falls
            // behind within a second.
            if i % 10 == 9 {
                thread::sleep(Duration::from_millis(2));
            }
        }
        let done = p.frame("the RECEIPT of the last SEND");
        assert!(done.starts_with("RECEIPT\nreceipt-id:done"), "{done}");
    })
}

/// A subscriber that reads everything: checks `count` messages arrive in order.
fn fast_subscriber(
    server: &StompServer,
    destination: &str,
    count: usize,
) -> thread::JoinHandle<()> {
    let mut f = Stomp::connect(server, None);
    f.subscribe(destination, "auto");
    thread::spawn(move || {
        let frames = f.frames_fast(count, "the MESSAGEs for the fast subscriber");
        for (i, m) in frames.iter().enumerate() {
            assert_eq!(seq(m), i, "the fast subscriber got every message in order");
        }
    })
}

/// Checks that `frames` are MESSAGEs numbered from 0 without a gap; returns how many.
fn contiguous(frames: &[String]) -> usize {
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(seq(f), i, "message {i} of {}", frames.len());
    }
    frames.len()
}

fn join(handle: thread::JoinHandle<()>, what: &str) {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(handle.join());
    });
    match rx.recv_timeout(TIMEOUT * 4) {
        Ok(Ok(())) => {}
        Ok(Err(_)) => panic!("{what} failed (see its panic above)"),
        Err(_) => panic!("{what} did not finish within {:?}", TIMEOUT * 4),
    }
}

const FLOOD: usize = 8000;

#[test]
fn disconnect_tells_the_slow_subscriber_and_lets_it_go_while_the_fast_one_gets_everything() {
    let server = start(SlowConsumer::Disconnect);
    let mut slow = Stomp::connect(&server, Some(4096));
    slow.subscribe("/topic/flood", "auto");
    let fast = fast_subscriber(&server, "/topic/flood", FLOOD);
    join(publish(&server, "/topic/flood", FLOOD), "the publisher");
    join(fast, "the fast subscriber");
    let (frames, end) = slow.drain(Duration::from_secs(2));
    let error = frames.last().expect("frames for the slow subscriber");
    assert!(
        error.starts_with("ERROR\n") && error.contains("message:slow consumer"),
        "the last frame tells why: {error:.300}"
    );
    assert!(error.contains("could not be queued"), "{error}");
    let got = contiguous(&frames[..frames.len() - 1]);
    assert_eq!(end, End::Eof, "and the connection is closed");
    assert!(got < FLOOD, "the slow subscriber did fall behind");
    let stats = server.hub().slow_stats();
    assert_eq!(stats.disconnects, 1, "{stats:?}");
    assert!(server.engine_stats().overflow_closes >= 1);
    println!("disconnect: the slow subscriber got {got} of {FLOOD}, then ERROR; {stats:?}");
    shutdown(server);
}

#[test]
fn a_subscriber_let_go_while_asleep_finds_its_error_when_it_wakes() {
    // Its queue is dropped at once (only a frame already started goes on), so the ERROR waits
    // right behind what its kernel buffers hold. It must wake within the close deadline
    // (5 s): after that the connection is dropped, and what is left of the ERROR with it.
    let server = start(SlowConsumer::Disconnect);
    let mut slow = Stomp::connect(&server, Some(4096));
    slow.subscribe("/topic/flood", "auto");
    join(publish(&server, "/topic/flood", FLOOD), "the publisher");
    let deadline = Instant::now() + TIMEOUT;
    while server.hub().slow_stats().disconnects == 0 {
        assert!(
            Instant::now() < deadline,
            "the slow subscriber was never let go"
        );
        thread::sleep(Duration::from_millis(10));
    }
    thread::sleep(Duration::from_millis(1500));
    let (frames, end) = slow.drain(Duration::from_secs(2));
    let error = frames.last().expect("frames for the slow subscriber");
    assert!(
        error.contains("message:slow consumer"),
        "told when it woke: {error:.300}"
    );
    let got = contiguous(&frames[..frames.len() - 1]);
    assert_eq!(end, End::Eof);
    println!("asleep when let go: got {got} of {FLOOD} in order, then ERROR");
    shutdown(server);
}

#[test]
fn drop_counts_what_the_slow_subscriber_missed_and_keeps_it_connected() {
    let server = start(SlowConsumer::Drop);
    let mut slow = Stomp::connect(&server, Some(4096));
    slow.subscribe("/topic/flood", "auto");
    let fast = fast_subscriber(&server, "/topic/flood", FLOOD + 1);
    join(publish(&server, "/topic/flood", FLOOD), "the publisher");
    let (frames, end) = slow.drain(Duration::from_secs(1));
    assert_eq!(end, End::Quiet, "still connected");
    let seqs: Vec<usize> = frames.iter().map(|f| seq(f)).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order, with gaps");
    let stats = server.hub().slow_stats();
    assert_eq!(stats.disconnects, 0, "{stats:?}");
    assert_eq!(
        stats.dropped as usize,
        FLOOD - seqs.len(),
        "every missed message is counted"
    );
    assert!(stats.dropped > 0);
    // Caught up: the next message arrives.
    join(
        publish_range(&server, "/topic/flood", FLOOD..FLOOD + 1),
        "the second publisher",
    );
    join(fast, "the fast subscriber");
    assert_eq!(seq(&slow.frame("the message after catching up")), FLOOD);
    println!(
        "drop: the slow subscriber got {} of {FLOOD}; {stats:?}",
        seqs.len()
    );
    shutdown(server);
}

#[test]
fn throttle_holds_the_publisher_until_a_slow_reader_catches_up_and_loses_nothing() {
    let server = start(SlowConsumer::Throttle {
        limit: Duration::from_secs(10),
    });
    let mut slow = Stomp::connect(&server, Some(4096));
    slow.subscribe("/topic/flood", "auto");
    // Reads slowly: two messages a millisecond at most, about 2 MB/s.
    let reader = thread::spawn(move || {
        let mut got = 0;
        while got < FLOOD {
            let m = slow.frame("a MESSAGE for the slow reader");
            assert_eq!(seq(&m), got, "the slow reader got every message in order");
            got += 1;
            if got % 2 == 0 {
                thread::sleep(Duration::from_millis(1));
            }
        }
    });
    let fast = fast_subscriber(&server, "/topic/flood", FLOOD);
    join(publish(&server, "/topic/flood", FLOOD), "the publisher");
    join(reader, "the slow reader");
    join(fast, "the fast subscriber");
    let stats = server.hub().slow_stats();
    let engine = server.engine_stats();
    println!(
        "throttle: {stats:?}; publisher paused {} times",
        engine.gate_pauses
    );
    assert_eq!(stats.disconnects, 0, "{stats:?}");
    assert!(
        engine.gate_pauses >= 1,
        "the publisher was held up: {engine:?}"
    );
    shutdown(server);
}

#[test]
fn throttle_lets_a_stuck_subscriber_go_after_its_limit_and_the_publisher_goes_on() {
    let server = start(SlowConsumer::Throttle {
        limit: Duration::from_secs(1),
    });
    let mut stuck = Stomp::connect(&server, Some(4096));
    stuck.subscribe("/topic/flood", "auto");
    let fast = fast_subscriber(&server, "/topic/flood", FLOOD);
    let started = Instant::now();
    join(publish(&server, "/topic/flood", FLOOD), "the publisher");
    let took = started.elapsed();
    join(fast, "the fast subscriber");
    let (frames, end) = stuck.drain(Duration::from_secs(2));
    let stats = server.hub().slow_stats();
    let engine = server.engine_stats();
    println!(
        "throttle, stuck: publisher done in {took:?}; {} frames, {end:?}; {stats:?}; {engine:?}",
        frames.len()
    );
    let error = frames.last().expect("frames for the stuck subscriber");
    assert!(error.contains("message:slow consumer"), "{error:.300}");
    assert!(error.contains("held up"), "{error}");
    contiguous(&frames[..frames.len() - 1]);
    assert_eq!(end, End::Eof);
    assert_eq!((stats.stuck, stats.disconnects), (1, 1), "{stats:?}");
    assert!(
        took >= Duration::from_secs(1),
        "the publisher was held up for the limit ({took:?})"
    );
    shutdown(server);
}

#[test]
fn queue_messages_awaiting_an_ack_are_never_dropped() {
    let server = start(SlowConsumer::Drop);
    let mut slow = Stomp::connect(&server, Some(4096));
    slow.subscribe("/queue/jobs", "client-individual");
    // 1,000 go to the subscriber (its unacknowledged limit), the rest wait in the queue.
    join(publish(&server, "/queue/jobs", 1500), "the publisher");
    let mut acks = Vec::new();
    for i in 0..1000 {
        let m = slow.frame("a queue MESSAGE");
        assert_eq!(seq(&m), i, "queue messages in order, none dropped");
        let ack = m
            .lines()
            .find_map(|l| l.strip_prefix("ack:"))
            .expect("an ack header")
            .to_owned();
        acks.push(ack);
    }
    assert_eq!(server.hub().slow_stats().dropped, 0);
    for ack in acks {
        slow.send(&format!("ACK\nid:{ack}\n\n"));
    }
    for i in 1000..1500 {
        assert_eq!(seq(&slow.frame("a queue MESSAGE after the ACKs")), i);
    }
    shutdown(server);
}
