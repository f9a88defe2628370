//! Soak test of the drain contract on real sockets: a producer that sends until `Queued` and
//! resumes only in `on_drain` (the pattern the handler docs recommend) feeds a reader that reads
//! in random pieces with random pauses, while another thread posts to the same session through
//! its handle. Every round must deliver every message, in order, and finish; a stall fails at
//! the bound with what was missing.
//!
//! Rounds: `SOCKEYE_SOAK_ROUNDS` (default 3, about a second); CI runs many more. Each round's
//! seed is printed on failure, and `SOCKEYE_SOAK_SEED` replays one.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::sync::mpsc::{self, Sender};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use sockeye::handshake::Request;
use sockeye::server::Outgoing;
use sockeye::server::{
    Handler, Message, Rejection, SendStatus, ServerConfig, Session, SessionHandle, Upgrading,
};
use sockeye::DataKind;

/// A small deterministic generator (xorshift64*), so that a failing round can be replayed.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Message `i` of the feed seeded `seed`: a tag, the sequence number, filler. Sizes mix small
/// messages, borrowed payloads written through (16 KiB and up) and ones over the cork limit.
fn feed_message(seed: u64, i: u32) -> Vec<u8> {
    let mut rng = Rng(seed ^ (u64::from(i) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let len = match rng.below(10) {
        0..=2 => 16_384 + rng.below(8_000),
        3 | 4 => 65_536 + rng.below(40_000),
        _ => 5 + rng.below(300),
    } as usize;
    let mut m = vec![b'F'];
    m.extend_from_slice(&i.to_be_bytes());
    m.resize(len.max(5), i as u8);
    m
}

const MESSAGES: u32 = 300;
const SIDE: u32 = 200;

/// The feed's state in a session.
struct Feed {
    seed: u64,
    next: u32,
    queued: usize,
    drains: usize,
}

struct Producer {
    opened: Sender<SessionHandle>,
    /// (times a send was `Queued`, drains) once a feed is all sent.
    done: Sender<(usize, usize)>,
}

impl Producer {
    fn pump(&self, session: &mut Session<'_, Feed>) {
        if session.data().next == MESSAGES {
            return;
        }
        while session.data().next < MESSAGES {
            let m = feed_message(session.data().seed, session.data().next);
            // Odd messages go as shared payloads (corked by reference), even ones borrowed
            // (copied, or written through when large).
            let status = match session.data().next % 2 {
                0 => session.send(Message::Binary(&m)),
                _ => session.send(Outgoing::Shared(DataKind::Binary, Bytes::from(m))),
            }
            .expect("send");
            assert_ne!(status, SendStatus::Dropped, "the cap is large enough");
            session.data_mut().next += 1;
            if status == SendStatus::Queued {
                session.data_mut().queued += 1;
                if session.data().next < MESSAGES {
                    return;
                }
            }
        }
        let _ = self
            .done
            .send((session.data().queued, session.data().drains));
    }
}

impl Handler for Producer {
    type Data = Feed;

    fn on_upgrade(
        &mut self,
        req: &Request<'_, '_>,
        _up: &mut Upgrading,
    ) -> Result<Feed, Rejection> {
        let seed = req
            .path()
            .strip_prefix("/soak/")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Rejection::new(404, "want /soak/<seed>"))?;
        Ok(Feed {
            seed,
            next: 0,
            queued: 0,
            drains: 0,
        })
    }

    fn on_open(&mut self, session: &mut Session<'_, Feed>) {
        let _ = self.opened.send(session.handle());
        self.pump(session);
    }

    fn on_message(&mut self, _session: &mut Session<'_, Feed>, _message: Message<'_>) {}

    fn on_drain(&mut self, session: &mut Session<'_, Feed>) {
        session.data_mut().drains += 1;
        self.pump(session);
    }
}

/// Reads frames in random pieces with random pauses until every feed and side message came;
/// checks their order.
fn read_all(stream: &mut TcpStream, seed: u64, mode: usize) {
    let mut rng = Rng(seed.rotate_left(17) | 1);
    let mut buf = Vec::new();
    let mut piece = vec![0u8; 64 << 10];
    let (mut feed, mut side) = (0u32, 0u32);
    let until = Instant::now() + Duration::from_secs(30);
    while feed < MESSAGES || side < SIDE {
        assert!(
            Instant::now() < until,
            "round {seed}: stalled at feed message {feed} of {MESSAGES}, side message {side} of \
             {SIDE}"
        );
        let want = 1 + rng.below(piece.len() as u64) as usize;
        let n = match stream.read(&mut piece[..want]) {
            Ok(0) => panic!("round {seed}: the server closed at feed {feed}, side {side}"),
            Ok(n) => n,
            Err(e) => panic!("round {seed}: no bytes at feed {feed}, side {side}: {e}"),
        };
        buf.extend_from_slice(&piece[..n]);
        while let Some((payload, used)) = parse_frame(&buf) {
            let tag = payload[0];
            let i = u32::from_be_bytes([payload[1], payload[2], payload[3], payload[4]]);
            match tag {
                b'F' => {
                    assert_eq!(i, feed, "round {seed}: feed out of order");
                    assert_eq!(payload, feed_message(seed, i), "round {seed}: feed {i}");
                    feed += 1;
                }
                b'S' => {
                    assert_eq!(i, side, "round {seed}: side messages out of order");
                    side += 1;
                }
                other => panic!("round {seed}: unexpected tag {other}"),
            }
            buf.drain(..used);
        }
        // Rounds read in turn flat out (a drain then often finds the backlog gone at once),
        // with pauses now and then, and in bursts.
        let pause = match mode {
            0 => false,
            1 => rng.below(3) == 0,
            _ => rng.below(40) == 0,
        };
        if pause {
            thread::sleep(Duration::from_micros(rng.below(3000)));
        }
    }
}

/// A connection whose receive buffer is small, so that the server's sends back up quickly.
fn slow_reader(addr: std::net::SocketAddr) -> TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(16 << 10).expect("SO_RCVBUF");
    socket
        .connect_timeout(&addr.into(), IO_TIMEOUT)
        .expect("connect");
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream
}

/// An unmasked server frame at the front of `buf`: its payload and the bytes it took.
fn parse_frame(buf: &[u8]) -> Option<(&[u8], usize)> {
    if buf.len() < 2 {
        return None;
    }
    let (len, head) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b) as usize, 10)
        }
        126 | 127 => return None,
        n => (usize::from(n), 2),
    };
    assert_eq!(buf[0], 0x82, "a final binary frame");
    (buf.len() >= head + len).then(|| (&buf[head..head + len], head + len))
}

fn rounds() -> Vec<u64> {
    if let Some(seed) = std::env::var("SOCKEYE_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![seed];
    }
    let n: u64 = std::env::var("SOCKEYE_SOAK_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    (0..n).map(|i| base.wrapping_add(i * 7919) | 1).collect()
}

#[test]
fn a_paced_producer_always_finishes_against_a_randomly_paced_reader() {
    let (opened_tx, opened) = mpsc::channel();
    let (done_tx, done) = mpsc::channel();
    let senders = Mutex::new((opened_tx, done_tx));
    let server = TestServer::start(
        ServerConfig {
            max_backpressure: 256 << 20,
            ping_interval: None,
            ..test_config()
        },
        move || {
            let (opened, done) = &*senders.lock().unwrap();
            Producer {
                opened: opened.clone(),
                done: done.clone(),
            }
        },
    );
    let started = Instant::now();
    let seeds = rounds();
    let (mut queued, mut drains) = (0, 0);
    for (round, &seed) in seeds.iter().enumerate() {
        let mut stream = slow_reader(server.addr());
        std::io::Write::write_all(
            &mut stream,
            upgrade_request(&format!("/soak/{seed}"), &[]).as_bytes(),
        )
        .expect("send upgrade");
        let response = read_head(&mut stream);
        assert_eq!(response.status, 101, "round {seed}: {response:?}");
        let handle: SessionHandle = recv(&opened, "the session opening");
        // Another thread posts to the same session meanwhile.
        let side = spawn_bounded(move || {
            for i in 0..SIDE {
                let mut m = vec![b'S'];
                m.extend_from_slice(&i.to_be_bytes());
                handle.send_binary(&m).expect("post a side message");
                if i % 16 == 0 {
                    thread::yield_now();
                }
            }
        });
        // The first round pauses often, so that even a short run sees backpressure.
        read_all(&mut stream, seed, (round + 1) % 3);
        side.join(IO_TIMEOUT, "the side thread's posts");
        let (q, d) = recv(&done, "the producer's report that its feed was all sent");
        assert!(d <= q, "round {seed}: {d} drains for {q} Queued sends");
        queued += q;
        drains += d;
    }
    println!(
        "soak: {} rounds of {MESSAGES} paced + {SIDE} posted messages in {:?}; the producer \
         was told Queued {queued} times and drained {drains} times",
        seeds.len(),
        started.elapsed()
    );
    assert!(queued > 0, "the reader never held the producer back");
    server.finish();
}
